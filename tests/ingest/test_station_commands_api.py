"""``/api/v1/stations/<station>/commands/``: record a line-stop / hold / release command and
send it over the station's transport; list a station's commands."""

import pytest
from rest_framework.test import APIClient

from genealogy.choices import UnitKind
from genealogy.services import unit_create
from qms.choices import CommandTransport, IntegrationScope
from qms.ingest import commands
from qms.ingest.models import StationCommand
from tests.factories import UserFactory, integration_create
from tests.ingest.line21700 import build_line_21700, cell, gs1

URL = "/api/v1/stations/{}/commands/"


@pytest.fixture
def cyl(db):
    return build_line_21700()


@pytest.fixture
def sent():
    """A test sender for MQTT that records what it was asked to send."""
    out: list[StationCommand] = []
    previous = commands._senders.get("mqtt")

    def send(command: StationCommand) -> str:
        out.append(command)
        return commands.command_topic(command.station)

    commands.register_sender("mqtt", send)
    yield out
    if previous is None:
        commands._senders.pop("mqtt", None)
    else:
        commands.register_sender("mqtt", previous)


def person(role: str) -> APIClient:
    client = APIClient()
    client.force_login(UserFactory(username=f"{role}-1", role=role))
    return client


def token(name: str, scope: str) -> APIClient:
    _integration, key = integration_create(name, scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.mark.django_db
def test_line_stop_is_recorded_and_sent_on_commit(cyl, sent, django_capture_on_commit_callbacks):
    qe = person("quality_engineer")
    with django_capture_on_commit_callbacks(execute=True):
        response = qe.post(
            URL.format("l2-cyl/fill"),
            {
                "kind": "line_stop",
                "reason": "Fill mass below LSL on 3 consecutive cells",
                "reference": "SPC-FILL-0042",
            },
            format="json",
        )

    assert response.status_code == 201, response.content
    body = response.json()
    command = StationCommand.objects.get()
    assert (body["id"], body["station"], body["kind"], body["transport"]) == (
        command.pk,
        "gf1/l2-cyl/fill",
        "line_stop",
        "mqtt",
    )
    assert (body["reason"], body["reference"], body["units"], body["requested_by"]) == (
        "Fill mass below LSL on 3 consecutive cells",
        "SPC-FILL-0042",
        [],
        "quality_engineer-1",
    )
    # Inside the test's transaction the answer is written before delivery runs.
    assert body["status"] == "pending"
    assert [c.pk for c in sent] == [command.pk]
    assert (command.status, command.target, command.error) == (
        "sent",
        "qms/gf1/l2-cyl/fill/command",
        "",
    )
    assert command.payload == {
        "command_id": command.pk,
        "kind": "line_stop",
        "reason": "Fill mass below LSL on 3 consecutive cells",
        "reference": "SPC-FILL-0042",
        "units": [],
        "requested_at": command.requested_at.isoformat(),
    }


@pytest.mark.django_db(transaction=True)
def test_the_answer_carries_the_delivery_outcome(sent):
    cyl = build_line_21700()
    actor = UserFactory(username="wind-lead")
    for n in (1, 2):
        unit_create(kind=UnitKind.CELL, serial=cell(n), line=cyl.line, actor=actor)
    mrb = token("mrb-gateway", IntegrationScope.READ_WRITE)

    response = mrb.post(
        URL.format("gf1/l2-cyl/fill"),
        {
            "kind": "hold",
            "reason": "Electrolyte lot ELY-E12-000042 under supplier notice",
            "units": [cell(1), gs1(cell(2))],
            "reference": "H-2026-000017",
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["target"], body["units"]) == (
        "sent",
        "qms/gf1/l2-cyl/fill/command",
        [cell(1), cell(2)],
    )
    assert body["sent_at"] is not None
    assert sent[0].unit_serials == [cell(1), cell(2)]


@pytest.mark.django_db(transaction=True)
def test_a_failed_delivery_is_recorded_and_answered():
    cyl = build_line_21700()
    station = cyl.stations["mod-asm"]
    station.command_transport = CommandTransport.NONE
    station.save()
    response = person("mrb_member").post(
        URL.format(station.pk),
        {"kind": "line_stop", "reason": "Busbar weld resistance out of spec"},
        format="json",
    )
    assert response.status_code == 201
    assert (response.json()["status"], response.json()["error"]) == (
        "failed",
        "RuntimeError: the station has no command transport; it reads the interlock",
    )
    assert StationCommand.objects.get().status == "failed"


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["operator", "auditor"])
def test_operators_and_auditors_may_not_send(cyl, sent, role):
    response = person(role).post(
        URL.format("l2-cyl/fill"), {"kind": "line_stop", "reason": "test"}, format="json"
    )
    assert response.status_code == 403
    assert not StationCommand.objects.exists()
    assert sent == []


@pytest.mark.django_db
def test_read_only_token_may_not_send(cyl, sent):
    response = token("erp-gf1", IntegrationScope.READ).post(
        URL.format("l2-cyl/fill"), {"kind": "line_stop", "reason": "test"}, format="json"
    )
    assert response.status_code == 403
    assert not StationCommand.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("station", "body", "status", "field"),
    [
        ("l2-cyl/fill-09", {"kind": "line_stop", "reason": "x"}, 404, "station"),
        ("l2-cyl/fill", {"kind": "explode", "reason": "x"}, 400, "kind"),
        ("l2-cyl/fill", {"kind": "line_stop", "reason": ""}, 400, "reason"),
        ("l2-cyl/fill", {"kind": "hold", "reason": "x", "units": [cell(99)]}, 404, "units[0]"),
    ],
)
def test_bad_commands_are_refused_and_nothing_recorded(cyl, sent, station, body, status, field):
    response = person("quality_engineer").post(URL.format(station), body, format="json")
    assert response.status_code == status
    answer = response.json()
    if status == 404:  # a domain error names the field
        assert answer["field"] == field
    else:  # a validation error is keyed by the field
        assert list(answer) == [field]
    assert not StationCommand.objects.exists()


@pytest.mark.django_db
def test_list_a_stations_commands_newest_first(cyl, sent):
    qe = UserFactory(username="qe-anna", role="quality_engineer")
    for reason in ("first stop", "second stop"):
        commands.station_command_send(
            station=cyl.stations["fill"], kind="line_stop", reason=reason, actor=qe
        )
    commands.station_command_send(
        station=cyl.stations["coat-c"], kind="line_stop", reason="other station", actor=qe
    )
    response = person("auditor").get(URL.format("gf1/l2-cyl/fill"))
    assert response.status_code == 200
    assert [c["reason"] for c in response.json()["results"]] == ["second stop", "first stop"]
