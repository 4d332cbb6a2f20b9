"""Compliance's reactions to SPC alarms: a control alarm on a CC/SC characteristic holds the
suspect window (every unit measured since the pattern began) and stops the station over its
command transport; each reaction is recorded with the alarm, once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from compliance.choices import AlarmReactionAction, HoldSource, HoldStatus
from compliance.models import AlarmReaction, Hold, SpcReactionPlan
from compliance.services import spc_alarm_extend, spc_alarm_react
from genealogy.choices import UnitStatus
from genealogy.models import Measurement, Unit
from qms.choices import CommandTransport, SpecialCharacteristic
from qms.ingest.models import CommandKind, CommandStatus, StationCommand
from qms.ingest.services import ingest_raw
from spc.models import SpcAlarm
from tests.factories import UserFactory
from tests.ingest.line21700 import cell, fill_result, raw
from tests.ingest.mqtt_support import free_port
from tests.spc.conftest import SIGMA_FILL_G, normal

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]


def _shift(phase2_start, capture, *, first_cell: int = 5000) -> None:
    """40 in-control fill masses (seed 21), then 20 shifted up by 1.5 sigma (seed 22), one
    cell each, through the ingest path; alarms and reactions run after the commit."""
    before = normal(21, 40, 5.0, SIGMA_FILL_G)
    after = normal(22, 20, 5.0 + 1.5 * SIGMA_FILL_G, SIGMA_FILL_G)
    docs = [
        fill_result(
            cell(first_cell + i),
            message_id=f"FILL-01:{first_cell + i}",
            sent_at=phase2_start + timedelta(seconds=10 * i),
            mass_g=round(float(v), 5),
        )
        for i, v in enumerate([*before, *after])
    ]
    with capture(execute=True):
        assert {o.status for o in ingest_raw([raw(d) for d in docs])} == {"accepted"}


def test_a_cusum_alarm_on_a_cc_characteristic_holds_its_window_and_stops_the_station(
    approved_fill, phase2_start, django_capture_on_commit_callbacks, settings
):
    settings.MQTT_URL = f"mqtt://127.0.0.1:{free_port()}"  # the command is recorded, then fails
    fill = approved_fill.characteristic
    assert fill.special_class == SpecialCharacteristic.CC
    assert fill.station.command_transport == CommandTransport.MQTT

    _shift(phase2_start, django_capture_on_commit_callbacks)

    alarm = SpcAlarm.objects.filter(rule="cusum").order_by("chart_index").first()
    reactions = {r.action: r for r in AlarmReaction.objects.filter(alarm=alarm)}
    assert set(reactions) == {AlarmReactionAction.HOLD_WINDOW, AlarmReactionAction.LINE_STOP}
    hold = reactions[AlarmReactionAction.HOLD_WINDOW].hold
    alarm.refresh_from_db()
    assert alarm.hold_number == hold.number
    assert (hold.source, hold.status) == (HoldSource.SPC, HoldStatus.OPEN)
    assert hold.reason.startswith("SPC alarm ")
    assert "suspect window since" in hold.reason
    # The suspect window: every cell measured on fill mass since the pattern began, to now,
    # held once (run rules that fired earlier on the same shift held part of it already).
    window = set(
        Measurement.objects.filter(
            characteristic=fill, measured_at__gte=alarm.first_measured_at
        ).values_list("unit__serial", flat=True)
    )
    spc_holds = Hold.objects.filter(source=HoldSource.SPC, status=HoldStatus.OPEN)
    held = list(spc_holds.values_list("units__serial", flat=True))
    assert set(held) >= window
    assert len(held) == len(set(held))  # no cell in two SPC holds
    assert set(Unit.objects.filter(serial__in=window).values_list("status", flat=True)) == {
        UnitStatus.ON_HOLD
    }
    # Cells measured before the first alarm's pattern began are not held.
    first_alarm = SpcAlarm.objects.order_by("first_measured_at").first()
    before = Measurement.objects.filter(
        characteristic=fill,
        measured_at__gte=phase2_start,
        measured_at__lt=first_alarm.first_measured_at,
    ).values_list("unit_id", flat=True)
    assert not Unit.objects.filter(pk__in=before, status=UnitStatus.ON_HOLD).exists()

    # One line stop for the shift, however many rules fired on it.
    stop = StationCommand.objects.get(kind=CommandKind.LINE_STOP)
    assert (stop.station, stop.status) == (fill.station, CommandStatus.FAILED)  # no broker
    assert stop.reason.startswith("SPC alarm ")
    assert reactions[AlarmReactionAction.LINE_STOP].hold == hold

    # Reacting again changes nothing.
    assert {r.pk for r in spc_alarm_react(alarm_id=alarm.pk)} == {r.pk for r in reactions.values()}
    assert StationCommand.objects.filter(kind=CommandKind.LINE_STOP).count() == 1


def test_a_continuing_pattern_holds_the_units_it_added(
    approved_fill, phase2_start, django_capture_on_commit_callbacks
):
    fill = approved_fill.characteristic
    fill.station.command_transport = CommandTransport.NONE
    fill.station.save()
    _shift(phase2_start, django_capture_on_commit_callbacks)
    alarm = SpcAlarm.objects.filter(rule="cusum").order_by("chart_index").first()
    held = set(Hold.objects.get(number=alarm.hold_number).units.all())
    # More shifted cells after the reaction, still in the alarm's window
    after = normal(23, 5, 5.0 + 1.5 * SIGMA_FILL_G, SIGMA_FILL_G)
    start = phase2_start + timedelta(seconds=10 * 60)
    docs = [
        fill_result(
            cell(6000 + i),
            message_id=f"FILL-01:{6000 + i}",
            sent_at=start + timedelta(seconds=10 * i),
            mass_g=round(float(v), 5),
        )
        for i, v in enumerate(after)
    ]
    with django_capture_on_commit_callbacks(execute=True):
        ingest_raw([raw(d) for d in docs])
    spc_alarm_extend(alarm_id=alarm.pk)  # (ran already after the commit)
    new = {cell(6000 + i) for i in range(5)}
    assert not new & {u.serial for u in held}
    spc_held = list(
        Hold.objects.filter(source=HoldSource.SPC, status=HoldStatus.OPEN).values_list(
            "units__serial", flat=True
        )
    )
    assert set(spc_held) >= new  # the cells the pattern added are held
    assert len(spc_held) == len(set(spc_held))
    assert spc_alarm_extend(alarm_id=alarm.pk) is None  # nothing more to hold


def test_station_without_command_transport_reads_the_interlock_instead(
    approved_fill, phase2_start, django_capture_on_commit_callbacks
):
    station = approved_fill.characteristic.station
    station.command_transport = CommandTransport.NONE
    station.save()
    _shift(phase2_start, django_capture_on_commit_callbacks)
    alarm = SpcAlarm.objects.filter(rule="cusum").order_by("chart_index").first()
    stop = AlarmReaction.objects.get(alarm=alarm, action=AlarmReactionAction.LINE_STOP)
    assert stop.command is None
    assert stop.detail == f"{station} has no command transport: it reads the interlock"
    assert not StationCommand.objects.exists()


def test_the_reaction_plan_decides_and_a_standard_characteristic_alarms_only(
    approved_fill, phase2_start, django_capture_on_commit_callbacks
):
    fill = approved_fill.characteristic
    SpcReactionPlan.objects.create(characteristic=fill, hold_window=False, stop_line=False)
    _shift(phase2_start, django_capture_on_commit_callbacks)
    alarm = SpcAlarm.objects.filter(rule="cusum").order_by("chart_index").first()
    (only,) = AlarmReaction.objects.filter(alarm=alarm)
    assert only.action == AlarmReactionAction.ALARM_ONLY
    assert only.detail == "the reaction plan of electrolyte-fill-mass neither holds nor stops"
    assert not Hold.objects.filter(source=HoldSource.SPC).exists()
    assert not StationCommand.objects.exists()


# --- the quality engineer's decision ------------------------------------------------------------


@pytest.fixture
def client_as(db):
    def _as(role: str) -> APIClient:
        user = UserFactory(username=f"{role}-decides", role=role)
        client = APIClient()
        assert client.login(username=user.username, password="celltrace-test")
        return client

    return _as


@pytest.fixture
def alarm_with_hold(approved_fill, phase2_start, django_capture_on_commit_callbacks, settings):
    settings.MQTT_URL = f"mqtt://127.0.0.1:{free_port()}"
    _shift(phase2_start, django_capture_on_commit_callbacks)
    alarm = SpcAlarm.objects.filter(rule="cusum").order_by("chart_index").first()
    hold = Hold.objects.get(number=alarm.hold_number)
    return alarm, hold


def test_release_frees_the_window_resumes_the_station_and_closes_the_alarm(
    alarm_with_hold, client_as
):
    alarm, hold = alarm_with_hold
    url = f"/api/v1/spc/alarms/{alarm.pk}/disposition/"
    client = client_as("quality_engineer")

    response = client.post(
        url,
        {
            "decision": "release",
            "cause": "Check-weigher tare drift after the die change; re-zeroed",
            "reason": "Cells re-weighed on the reference scale: all within 4.95-5.05 g",
        },
        format="json",
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["action"] == "released"
    hold.refresh_from_db()
    assert hold.status == HoldStatus.RELEASED
    assert hold.release_reason.startswith(f"SPC alarm {alarm.pk}: Cells re-weighed")
    # Cells in no other open hold are back in process.
    others = Hold.objects.filter(status=HoldStatus.OPEN).values_list("units", flat=True)
    assert not hold.units.exclude(pk__in=others).filter(status=UnitStatus.ON_HOLD).exists()
    alarm.refresh_from_db()
    assert (alarm.status, alarm.cause) == (
        "closed",
        "Check-weigher tare drift after the die change; re-zeroed",
    )
    # The station resumes only when no other alarm of the shift still wants it stopped.
    still_open = SpcAlarm.objects.exclude(status="closed").exists()
    assert StationCommand.objects.filter(kind=CommandKind.RELEASE).exists() is not still_open
    reactions = client.get(f"/api/v1/spc/alarms/{alarm.pk}/reactions/").json()
    assert {r["action"] for r in reactions} == {"hold_window", "line_stop", "released"}
    # Deciding on a closed alarm is refused.
    again = client.post(url, {"decision": "escalate", "reason": "late"}, format="json")
    assert (again.status_code, again.json()["code"]) == (409, "closed")


def test_escalation_keeps_the_holds_for_the_mrb(alarm_with_hold, client_as):
    alarm, hold = alarm_with_hold
    client = client_as("quality_engineer")
    response = client.post(
        f"/api/v1/spc/alarms/{alarm.pk}/disposition/",
        {
            "decision": "escalate",
            "cause": "none found",
            "reason": "Shift of 1.5 sigma confirmed on the reference scale; MRB to decide",
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    hold.refresh_from_db()
    alarm.refresh_from_db()
    assert (hold.status, alarm.status, alarm.cause) == (
        HoldStatus.OPEN,
        "acknowledged",
        "none found",
    )
    assert not StationCommand.objects.filter(kind=CommandKind.RELEASE).exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"decision": "release", "cause": "tare drift"}, "reason"),
        ({"decision": "scrap", "reason": "x", "cause": "y"}, "decision"),
        ({"decision": "release", "reason": "re-weighed"}, "cause"),  # alarm still open
    ],
)
def test_a_decision_names_what_is_missing_and_changes_nothing(
    alarm_with_hold, client_as, payload, field
):
    alarm, hold = alarm_with_hold
    response = client_as("quality_engineer").post(
        f"/api/v1/spc/alarms/{alarm.pk}/disposition/", payload, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    # an input error is named by its key, a refusal of the service by "field"
    assert body.get("field", next(iter(body))) == field
    hold.refresh_from_db()
    alarm.refresh_from_db()
    assert (hold.status, alarm.status) == (HoldStatus.OPEN, "open")


def test_deciding_needs_the_rights_and_a_known_alarm(alarm_with_hold, client_as):
    alarm, _ = alarm_with_hold
    body = {"decision": "release", "reason": "re-weighed", "cause": "tare"}
    url = f"/api/v1/spc/alarms/{alarm.pk}/disposition/"
    assert client_as("operator").post(url, body, format="json").status_code == 403
    assert client_as("auditor").post(url, body, format="json").status_code == 403
    missing = client_as("mrb_member").post(
        "/api/v1/spc/alarms/999999/disposition/", body, format="json"
    )
    assert (missing.status_code, missing.json()["field"]) == (404, "alarm_id")


def test_after_the_mrb_an_escalated_alarm_is_closed_and_frees_the_station(
    alarm_with_hold, client_as
):
    alarm, _ = alarm_with_hold
    client = client_as("mrb_member")
    url = f"/api/v1/spc/alarms/{alarm.pk}/"
    early = client.post(url + "close/", {"comment": "too early"}, format="json")
    assert (early.status_code, early.json()["code"]) == (409, "not_acknowledged")
    client.post(
        url + "disposition/",
        {"decision": "escalate", "cause": "none found", "reason": "MRB to decide"},
        format="json",
    )
    closed = client.post(url + "close/", {"comment": "MRB: cells scrapped"}, format="json")
    assert closed.status_code == 200, closed.json()
    alarm.refresh_from_db()
    assert alarm.status == "closed"
    assert alarm.comment.endswith("MRB: cells scrapped")
    assert client_as("operator").post(url + "close/", {}, format="json").status_code == 403
