"""Admin of ingest: dead letters (raw shown as text, replay and discard actions), applied
messages, counters and station commands, all read-only otherwise."""

import json

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from genealogy.models import Measurement
from qms.ingest.commands import station_command_send
from qms.ingest.models import (
    DeadLetter,
    DeadLetterStatus,
    IngestMessage,
    IngestStat,
    StationCommand,
)
from qms.ingest.services import ingest_raw
from qms.models import Characteristic
from tests.factories import UserFactory
from tests.ingest.line21700 import an_hour_ago, build_line_21700, cell, fill_result, raw

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:ingest_deadletter_changelist"


@pytest.fixture
def cyl(db):
    return build_line_21700()


def staff(role: str) -> Client:
    client = Client()
    client.user = UserFactory(username=f"{role}-staff", role=role, is_staff=True)
    client.force_login(client.user)
    return client


@pytest.fixture
def letters(cyl):
    """Two dead letters from the fill station: an unknown characteristic (fixable) and an
    unknown cell (not fixable by master data)."""
    t0 = an_hour_ago()
    vacuum = fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)
    vacuum["payload"]["measurements"].append(
        {"characteristic": "fill-vacuum", "value": 12.0, "unit": "kPa"}
    )
    ghost = fill_result(cell(2), message_id="FILL-01:2", sent_at=t0, unit_kind=None)
    ingest_raw([raw(vacuum, transport="mqtt"), raw(ghost, transport="mqtt")])
    return (
        DeadLetter.objects.get(message_id="FILL-01:1"),
        DeadLetter.objects.get(message_id="FILL-01:2"),
    )


def action(client: Client, name: str, entries, **extra):
    return client.post(
        reverse(CHANGELIST),
        {"action": name, "_selected_action": [e.pk for e in entries], "index": 0, **extra},
        follow=True,
    )


def texts(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_every_ingest_admin_page_renders(cyl, letters):
    ingest_raw([raw(fill_result(cell(3), message_id="FILL-01:3", sent_at=an_hour_ago()))])
    qe = UserFactory(username="qe-1", role="quality_engineer")
    station_command_send(
        station=cyl.stations["fill"], kind="line_stop", reason="Nozzle 7 leaking", actor=qe
    )
    client = Client()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    for model in (DeadLetter, IngestMessage, IngestStat, StationCommand):
        name = model._meta.model_name
        assert client.get(reverse(f"admin:ingest_{name}_changelist")).status_code == 200
        obj = model.objects.first()
        assert obj is not None, name
        page = client.get(reverse(f"admin:ingest_{name}_change", args=[obj.pk]))
        assert page.status_code == 200, name
        if hasattr(model, "history"):
            history = client.get(reverse(f"admin:ingest_{name}_history", args=[obj.pk]))
            assert history.status_code == 200, name


def test_dead_letter_page_shows_the_raw_message_as_text_read_only(letters):
    client = staff("quality_engineer")
    entry = letters[0]
    page = client.get(reverse("admin:ingest_deadletter_change", args=[entry.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "&quot;fill-vacuum&quot;" in html  # the raw JSON, escaped, as text
    assert "Unknown characteristic &#x27;fill-vacuum&#x27;" in html
    assert 'name="reason"' not in html  # no form fields: read-only
    assert client.get(reverse("admin:ingest_deadletter_add")).status_code == 403


def test_list_filters_and_search(letters):
    client = staff("quality_engineer")
    listed = client.get(reverse(CHANGELIST), {"status__exact": "open", "q": "fill-vacuum"})
    assert list(listed.context["cl"].result_list) == [letters[0]]
    by_transport = client.get(reverse(CHANGELIST), {"transport__exact": "rest"})
    assert list(by_transport.context["cl"].result_list) == []


def test_replay_after_fixing_master_data_reports_each_entry(cyl, letters):
    fixable, ghost = letters
    Characteristic.objects.create(
        station=cyl.stations["fill"],
        code="fill-vacuum",
        name="Chamber pressure at fill",
        unit="kPa",
        nominal=12.0,
        usl=15.0,
        measurement_method="Pirani gauge",
        sample_frequency="100 %",
        reaction_plan="Hold the cell; check the vacuum pump.",
    )
    client = staff("quality_engineer")

    response = action(client, "replay", [fixable, ghost])

    assert texts(response) == [
        f"#{fixable.pk} FILL-01:1: applied; resolved.",
        f"#{ghost.pk} FILL-01:2: still rejected (unit): Unknown unit 'C22648000002' "
        "(send 'unit_kind' to create it on its first station).",
    ]
    fixable.refresh_from_db()
    ghost.refresh_from_db()
    assert (fixable.status, fixable.resolved_by, fixable.resolution) == (
        DeadLetterStatus.RESOLVED,
        client.user,
        "replayed: accepted",
    )
    assert (ghost.status, ghost.attempts) == (DeadLetterStatus.OPEN, 2)
    assert Measurement.objects.filter(unit__serial=cell(1)).count() == 2

    again = action(client, "replay", [fixable])
    assert texts(again) == ["1 selected entry(ies) resolved already."]
    assert Measurement.objects.filter(unit__serial=cell(1)).count() == 2


def test_discard_needs_a_resolution(letters):
    client = staff("quality_engineer")
    _fixable, ghost = letters

    refused = action(client, "discard", [ghost])
    assert texts(refused) == [
        "Nothing discarded: type the resolution (why these are not applied) first."
    ]
    ghost.refresh_from_db()
    assert ghost.status == DeadLetterStatus.OPEN

    done = action(client, "discard", [ghost], resolution="Test cell from commissioning")
    assert texts(done) == [f"Discarded #{ghost.pk}: Test cell from commissioning"]
    ghost.refresh_from_db()
    assert (ghost.status, ghost.resolution, ghost.resolved_by) == (
        DeadLetterStatus.DISCARDED,
        "Test cell from commissioning",
        client.user,
    )
    assert ghost.history.first().history_change_reason == "discarded: Test cell from commissioning"
    assert bytes(ghost.raw) == json.dumps(json.loads(bytes(ghost.raw))).encode()  # kept


def test_operators_see_dead_letters_but_cannot_replay_or_discard(letters):
    client = staff("operator")
    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    assert page.context["action_form"] is None  # neither action is offered
    action(client, "replay", [letters[0]])
    action(client, "discard", [letters[1]], resolution="not mine to decide")
    assert list(DeadLetter.objects.order_by("id").values_list("status", "attempts")) == [
        ("open", 1),
        ("open", 1),
    ]


def test_applied_messages_are_searchable_by_id_and_serial(cyl):
    t0 = an_hour_ago()
    ingest_raw([raw(fill_result(cell(n), message_id=f"FILL-01:{n}", sent_at=t0)) for n in (1, 2)])
    client = staff("quality_engineer")
    url = reverse("admin:ingest_ingestmessage_changelist")
    by_id = client.get(url, {"q": "FILL-01:2"})
    by_serial = client.get(url, {"q": cell(1)})
    assert [m.message_id for m in by_id.context["cl"].result_list] == ["FILL-01:2"]
    assert [m.message_id for m in by_serial.context["cl"].result_list] == ["FILL-01:1"]
