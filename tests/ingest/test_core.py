"""The ingest core: exactly-once, ordering, dead letters and statistics, with a test kind
so these rules are shown independently of any domain handler."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from qms.exceptions import InvalidInput, Refused
from qms.ingest import registry
from qms.ingest.envelope import build
from qms.ingest.models import DeadLetter, DeadLetterStatus, IngestMessage, IngestStat
from qms.ingest.services import RawMessage, dead_letter_replay, ingest_raw
from tests.conftest import require_service
from tests.factories import UserFactory

applied: list[tuple[str, str]] = []


def _probe_handler(env, ctx):
    """Test kind ``probe``: records what it applied; refuses serials starting with 'BAD'."""
    if env.unit.startswith("BAD"):
        raise Refused(f"Probe refuses {env.unit}.", field="unit", code="probe")
    applied.append((env.message_id, env.unit))


@pytest.fixture(autouse=True)
def probe_kind():
    applied.clear()
    registry.register(
        "probe",
        _probe_handler,
        app_label="tests",
        payload_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
    )
    yield
    registry._handlers.pop("probe", None)


def raw(message_id, *, unit="P126480000001", minutes_ago=1.0, **overrides) -> RawMessage:
    doc = build(
        kind="probe",
        site="gf1",
        line="l1-pri",
        station="fill",
        payload={"n": 1},
        source="FILL-01 PLC",
        message_id=message_id,
        unit=unit,
        sent_at=timezone.now() - timedelta(minutes=minutes_ago),
    )
    doc.update(overrides)
    return RawMessage(json.dumps(doc).encode(), "mqtt", "qms/gf1/l1-pri/fill/probe")


pytestmark = pytest.mark.django_db


def test_each_message_is_applied_once_across_and_within_batches(plant):
    first = ingest_raw([raw("m-1"), raw("m-2"), raw("m-1")])
    again = ingest_raw([raw("m-2"), raw("m-3")])
    assert [o.status for o in first] == ["accepted", "accepted", "duplicate"]
    assert [o.status for o in again] == ["duplicate", "accepted"]
    assert [a[0] for a in applied] == ["m-1", "m-2", "m-3"]
    assert IngestMessage.objects.count() == 3
    stat = IngestStat.objects.get(transport="mqtt")
    assert (stat.accepted, stat.duplicate, stat.rejected, stat.batches) == (3, 2, 0, 2)


def test_batch_is_applied_in_sent_at_order_outcomes_in_input_order(plant):
    outcomes = ingest_raw(
        [raw("late", minutes_ago=1), raw("early", minutes_ago=9), raw("mid", minutes_ago=5)]
    )
    assert [o.message_id for o in outcomes] == ["late", "early", "mid"]
    assert [a[0] for a in applied] == ["early", "mid", "late"]


def test_refused_message_goes_to_dead_letters_and_the_batch_goes_on(plant):
    outcomes = ingest_raw([raw("ok-1"), raw("bad-1", unit="BAD-7"), raw("ok-2")])
    assert [o.status for o in outcomes] == ["accepted", "rejected", "accepted"]
    entry = DeadLetter.objects.get()
    assert (entry.message_id, entry.kind, entry.field) == ("bad-1", "probe", "unit")
    assert entry.reason == "Probe refuses BAD-7."
    assert json.loads(bytes(entry.raw))["unit"] == "BAD-7"
    assert not IngestMessage.objects.filter(message_id="bad-1").exists()


@pytest.mark.parametrize(
    ("payload", "field", "reason_part"),
    [
        (b"{not json", None, "Not valid JSON"),
        (b'{"value": NaN}', None, "NaN is not a number"),
        (b"\xff\xfe", None, "Not UTF-8"),
        (b"[1, 2]", None, "must be a JSON object"),
    ],
)
def test_undecodable_payloads_are_kept_raw(plant, payload, field, reason_part):
    [outcome] = ingest_raw([RawMessage(payload, "mqtt", "qms/gf1/l1-pri/fill/probe")])
    assert outcome.status == "rejected"
    entry = DeadLetter.objects.get()
    assert bytes(entry.raw) == payload
    assert reason_part in entry.reason


@pytest.mark.parametrize(
    ("overrides", "field", "reason_part"),
    [
        ({"site": "gf9"}, "site", "Unknown site 'gf9'"),
        ({"line": "l9"}, "line", "Unknown line 'l9'"),
        ({"station": "fill-99"}, "station", "Unknown station 'fill-99'"),
        ({"equipment": "cw-9"}, "equipment", "Unknown equipment 'cw-9'"),
        ({"kind": "teleport"}, "kind", "No handler for kind 'teleport'"),
        ({"schema": "celltrace.envelope/0"}, "schema", "Schema:"),
        ({"payload": {"n": "three"}}, "payload.n", "Schema:"),
        ({"sent_at": "2026-11-27 06:00"}, "sent_at", "no UTC offset"),
    ],
)
def test_envelope_errors_name_the_field(plant, overrides, field, reason_part):
    [outcome] = ingest_raw([raw("m-x", **overrides)])
    assert (outcome.status, outcome.field) == ("rejected", field)
    assert reason_part in outcome.reason
    assert DeadLetter.objects.get().field == field


def test_future_dated_beyond_tolerance_is_refused(plant):
    [ok] = ingest_raw([raw("soon", minutes_ago=-4)])
    [late] = ingest_raw([raw("future", minutes_ago=-30)])
    assert ok.status == "accepted"
    assert (late.status, late.field) == ("rejected", "sent_at")
    assert "in the future" in late.reason


def test_same_bad_bytes_again_count_as_another_attempt(plant):
    bad = raw("bad-1", unit="BAD-7")
    ingest_raw([bad])
    ingest_raw([bad])
    entry = DeadLetter.objects.get()
    assert entry.attempts == 2
    assert entry.last_seen >= entry.first_seen


def test_replay_after_the_cause_is_fixed_resolves_and_applies_once(plant):
    ingest_raw([raw("m-1", station="fill-2")])
    entry = DeadLetter.objects.get()
    assert entry.status == DeadLetterStatus.OPEN
    fill = plant.stations["fill"]
    fill.pk = None  # master data is fixed: the second fill station is configured
    fill.code, fill.sequence = "fill-2", 35
    fill.save()
    qe = UserFactory(username="qe", role="quality_engineer")
    outcome = dead_letter_replay(entry=entry, actor=qe)
    entry.refresh_from_db()
    assert outcome.status == "accepted"
    assert (entry.status, entry.resolved_by, entry.resolution) == (
        DeadLetterStatus.RESOLVED,
        qe,
        "replayed: accepted",
    )
    assert dead_letter_replay(entry=entry, actor=qe).status == "duplicate"
    assert applied == [("m-1", "P126480000001")]


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_on_one_message_apply_it_once(plant):
    require_service("PostgreSQL (DATABASE_URL)", connection.vendor == "postgresql")
    barrier = threading.Barrier(2)
    results: list[str] = []

    def worker():
        try:
            barrier.wait()
            results.append(ingest_raw([raw("race-1")])[0].status)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["accepted", "duplicate"]
    assert IngestMessage.objects.filter(message_id="race-1").count() == 1
    assert applied == [("race-1", "P126480000001")]


def test_an_entry_that_is_not_an_envelope_is_not_replayed(plant):
    ingest_raw([RawMessage(b"\x08\x96\x01", "sparkplug", "spBv1.0/l2-cyl/DDATA/fill/cw-1")])
    entry = DeadLetter.objects.get()
    qe = UserFactory(username="qe", role="quality_engineer")
    with pytest.raises(InvalidInput) as err:
        dead_letter_replay(entry=entry, actor=qe)
    assert err.value.code == "not_replayable"
    entry.refresh_from_db()
    assert (entry.status, entry.attempts) == (DeadLetterStatus.OPEN, 1)
