"""Bad input from stations: each is rejected with a reason and the field, lands in the
dead-letter store with its raw bytes, and writes nothing else. Replay after fixing the
master data applies it exactly once."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from compliance.choices import HoldSource
from compliance.services import hold_place
from genealogy.choices import LinkKind, UnitKind, UnitStatus
from genealogy.models import Link, Measurement, StationVisit, Unit
from genealogy.services import coil_segment_consume, unit_create
from qms.ingest.models import DeadLetter, DeadLetterStatus, IngestMessage, IngestStat
from qms.ingest.services import dead_letter_replay, ingest_raw
from qms.models import Characteristic
from tests.factories import UserFactory
from tests.ingest.line21700 import (
    an_hour_ago,
    build_line_21700,
    cell,
    envelope,
    fill_result,
    raw,
)

pytestmark = pytest.mark.django_db

ORIGIN = "qms/gf1/l2-cyl/fill/process_result"


@pytest.fixture
def cyl(db):
    return build_line_21700()


@pytest.fixture
def t0():
    return an_hour_ago()


@pytest.fixture
def actor(db):
    return UserFactory(username="line-lead", role="quality_engineer")


def counts() -> dict[str, int]:
    return {
        "units": Unit.objects.count(),
        "links": Link.objects.count(),
        "visits": StationVisit.objects.count(),
        "measurements": Measurement.objects.count(),
        "messages": IngestMessage.objects.count(),
    }


def reject_one(message, *, before: dict | None = None):
    """Ingest one message; it must be rejected, dead-lettered, and write nothing else."""
    before = before if before is not None else counts()
    [outcome] = ingest_raw([message])
    assert outcome.status == "rejected", outcome
    assert counts() == before
    entry = DeadLetter.objects.get(pk=outcome.dead_letter_id)
    assert bytes(entry.raw) == message.payload
    assert (entry.transport, entry.origin, entry.status, entry.attempts) == (
        message.transport,
        message.origin,
        DeadLetterStatus.OPEN,
        1,
    )
    assert (entry.reason, entry.field or None) == (outcome.reason, outcome.field)
    return outcome, entry


def test_malformed_json(cyl):
    outcome, entry = reject_one(raw(b'{"message_id": "FILL-01:1", "kind": ', origin=ORIGIN))
    assert outcome.reason == "Not valid JSON: Expecting value at line 1 column 37."
    assert (outcome.field, entry.message_id) == (None, "")


def test_schema_violation_names_the_payload_field(cyl, t0):
    doc = fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)
    del doc["payload"]["result"]
    outcome, entry = reject_one(raw(doc))
    assert (outcome.reason, outcome.field) == ("Schema: 'result' is a required property", "payload")
    assert (entry.message_id, entry.kind) == ("FILL-01:1", "process_result")


@pytest.mark.parametrize(
    ("override", "reason", "field"),
    [
        ({"site": "gf7"}, "Unknown site 'gf7'.", "site"),
        ({"line": "l9-cyl"}, "Unknown line 'l9-cyl' at site 'gf1'.", "line"),
        ({"station": "fill-02"}, "Unknown station 'fill-02' on line gf1/l2-cyl.", "station"),
        (
            {"equipment": "cw-9"},
            "Unknown equipment 'cw-9' at station gf1/l2-cyl/fill.",
            "equipment",
        ),
    ],
)
def test_unknown_master_data(cyl, t0, override, reason, field):
    doc = fill_result(cell(1), message_id="FILL-01:1", sent_at=t0) | override
    outcome, _ = reject_one(raw(doc))
    assert (outcome.reason, outcome.field) == (reason, field)


def test_unknown_characteristic_names_the_measurement(cyl, t0):
    doc = fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)
    doc["payload"]["measurements"].append(
        {"characteristic": "fill-mass-after-soak", "value": 4.98, "unit": "g"}
    )
    outcome, _ = reject_one(raw(doc))
    assert outcome.reason == (
        "Unknown characteristic 'fill-mass-after-soak' at station gf1/l2-cyl/fill "
        "(its characteristics: electrolyte-fill-mass)."
    )
    assert outcome.field == "payload.measurements[1].characteristic"


def test_wrong_unit_is_refused_not_converted(cyl, t0):
    doc = envelope(
        "process_result",
        station="coat-c",
        unit="EC2-C-000124",
        message_id="COAT-C:7",
        sent_at=t0,
        payload={
            "unit_kind": "coil",
            "length_m": 1800.0,
            "result": "ok",
            "measurements": [
                {"characteristic": "cathode-areal-weight", "value": 23.0, "unit": "mg/cm²"},
                {"characteristic": "cathode-areal-weight", "value": 0.230, "unit": "g"},
            ],
        },
    )
    outcome, _ = reject_one(raw(doc))
    assert (outcome.reason, outcome.field) == (
        "g given, characteristic cathode-areal-weight in mg/cm².",
        "payload.measurements[1].unit",
    )


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(cyl, t0, constant):
    text = json.dumps(fill_result(cell(1), message_id="FILL-01:1", sent_at=t0))
    text = text.replace('"value": 5.01', f'"value": {constant}')
    outcome, _ = reject_one(raw(text.encode(), origin=ORIGIN))
    assert outcome.reason == f"{constant} is not a number a measurement can have."


def test_future_dated_beyond_tolerance(cyl):
    soon = timezone.now().replace(microsecond=0) + timedelta(minutes=30)
    outcome, _ = reject_one(raw(fill_result(cell(1), message_id="FILL-01:1", sent_at=soon)))
    assert outcome.field == "sent_at"
    assert outcome.reason.endswith("min in the future (tolerance 5 min).")


def test_future_measurement_time_beyond_tolerance(cyl, t0):
    later = timezone.now() + timedelta(hours=2)
    doc = fill_result(cell(1), message_id="FILL-01:1", sent_at=t0, measured_at=later.isoformat())
    outcome, _ = reject_one(raw(doc))
    assert outcome.field == "payload.measurements[0].measured_at"


def test_unknown_serial_without_unit_kind(cyl, t0):
    doc = fill_result(cell(404), message_id="FILL-01:404", sent_at=t0, unit_kind=None)
    outcome, _ = reject_one(raw(doc))
    assert (outcome.reason, outcome.field) == (
        "Unknown unit 'C22648000404' (send 'unit_kind' to create it on its first station).",
        "unit",
    )


def test_serial_off_the_line_scheme_is_not_created(cyl, t0):
    outcome, _ = reject_one(raw(fill_result("C2-BAD-1", message_id="FILL-01:x", sent_at=t0)))
    assert outcome.field == "unit"
    assert outcome.reason.startswith("Serial 'C2-BAD-1' does not match line gf1/l2-cyl's scheme")


def test_coil_without_length_is_not_created(cyl, t0):
    doc = envelope(
        "process_result",
        station="coat-c",
        unit="EC2-C-000125",
        message_id="COAT-C:8",
        sent_at=t0,
        payload={"unit_kind": "coil", "result": "ok"},
    )
    outcome, _ = reject_one(raw(doc))
    assert (outcome.reason, outcome.field) == (
        "A coil needs a positive length in metres.",
        "payload.length_m",
    )


def test_coil_segment_overlap(cyl, t0, actor):
    lane = unit_create(
        kind=UnitKind.SLIT_COIL, serial="EC2-C-000123-B", line=cyl.line, length_m=1800.0,
        actor=actor,
    )  # fmt: skip
    first = unit_create(kind=UnitKind.CELL, serial=cell(1), line=cyl.line, actor=actor)
    coil_segment_consume(coil=lane, consumer=first, start_m=17.2, end_m=18.06, actor=actor)
    doc = envelope(
        "consumption",
        station="wind",
        unit=cell(2),
        message_id="WIND-01:2",
        sent_at=t0,
        payload={
            "unit_kind": "cell",
            "segments": [{"coil": "EC2-C-000123-B", "start_m": 17.9, "end_m": 18.76}],
        },
    )
    outcome, _ = reject_one(raw(doc))
    assert outcome.reason == (
        "Segment [17.9, 18.76) m of coil EC2-C-000123-B overlaps [17.2, 18.06) m already "
        "consumed by Cell C22648000001."
    )
    assert outcome.field == "payload.segments[0].start_m"


def test_assembling_a_held_cell_names_the_hold(cyl, t0, actor):
    held = unit_create(kind=UnitKind.CELL, serial=cell(3), line=cyl.line, actor=actor)
    unit_create(kind=UnitKind.MODULE, serial="MOD2-000001", line=cyl.line, actor=actor)
    hold = hold_place(
        units=[held],
        reason="Fill mass 4.91 g below LSL 4.95 g",
        source=HoldSource.OUT_OF_SPEC,
        actor=actor,
    )
    doc = envelope(
        "assembly",
        station="mod-asm",
        unit=cell(3),
        message_id="MOD-ASM:3",
        sent_at=t0,
        payload={"assembly": "MOD2-000001", "slot": "C003"},
    )
    outcome, _ = reject_one(raw(doc))
    assert outcome.reason == (
        f"Cell C22648000003 is on hold: hold {hold.number} (Out-of-specification measurement): "
        "Fill mass 4.91 g below LSL 4.95 g"
    )
    assert outcome.field == "unit"
    assert Unit.objects.get(pk=held.pk).status == UnitStatus.ON_HOLD


def test_hold_request_for_an_unknown_serial_holds_nothing(cyl, t0, actor):
    unit_create(kind=UnitKind.CELL, serial=cell(1), line=cyl.line, actor=actor)
    doc = envelope(
        "hold_request",
        station="fill",
        units=[cell(1), cell(999)],
        message_id="FILL-01:hold:2",
        sent_at=t0,
        payload={"reason": "Nozzle 7 dripped"},
    )
    outcome, _ = reject_one(raw(doc))
    assert (outcome.reason, outcome.field) == ("No unit with serial 'C22648000999'.", "units[1]")
    assert Unit.objects.get(serial=cell(1)).status == UnitStatus.IN_PROCESS


def test_unknown_kind(cyl, t0):
    doc = fill_result(cell(1), message_id="FILL-01:1", sent_at=t0) | {"kind": "teleport"}
    outcome, _ = reject_one(raw(doc))
    assert (outcome.reason, outcome.field) == ("No handler for kind 'teleport'.", "kind")


def test_a_bad_message_does_not_stop_the_batch(cyl, t0):
    good = [fill_result(cell(n), message_id=f"FILL-01:{n}", sent_at=t0) for n in (1, 2)]
    bad = fill_result(cell(3), message_id="FILL-01:3", sent_at=t0, mass_g=5.0)
    bad["payload"]["measurements"][0]["unit"] = "mg"
    outcomes = ingest_raw([raw(good[0]), raw(bad), raw(good[1])])
    assert [o.status for o in outcomes] == ["accepted", "rejected", "accepted"]
    assert sorted(Measurement.objects.values_list("unit__serial", flat=True)) == [cell(1), cell(2)]
    assert not Unit.objects.filter(serial=cell(3)).exists()
    stat = IngestStat.objects.get(transport="direct")
    assert (stat.accepted, stat.duplicate, stat.rejected) == (2, 0, 1)


def test_the_same_bad_message_again_counts_an_attempt(cyl, t0):
    doc = fill_result(cell(404), message_id="FILL-01:404", sent_at=t0, unit_kind=None)
    ingest_raw([raw(doc)])
    ingest_raw([raw(doc)])
    entry = DeadLetter.objects.get()
    assert (entry.attempts, entry.status) == (2, DeadLetterStatus.OPEN)
    assert entry.last_seen >= entry.first_seen


def test_replay_after_the_characteristic_is_created_applies_once(cyl, t0, actor):
    doc = envelope(
        "process_result",
        station="fill",
        equipment="cw-1",
        unit=cell(7),
        message_id="FILL-01:7",
        sent_at=t0,
        payload={
            "unit_kind": "cell",
            "result": "ok",
            "measurements": [
                {"characteristic": "electrolyte-fill-mass", "value": 5.01, "unit": "g"},
                {"characteristic": "fill-vacuum", "value": 12.0, "unit": "kPa"},
            ],
        },
    )
    [rejected] = ingest_raw([raw(doc)])
    assert (rejected.status, rejected.field) == (
        "rejected",
        "payload.measurements[1].characteristic",
    )
    entry = DeadLetter.objects.get()
    still = dead_letter_replay(entry=entry, actor=actor)
    entry.refresh_from_db()
    assert (still.status, entry.status, entry.attempts) == ("rejected", "open", 2)

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
    replayed = dead_letter_replay(entry=entry, actor=actor)
    again = dead_letter_replay(entry=entry, actor=actor)

    entry.refresh_from_db()
    assert (replayed.status, again.status) == ("accepted", "duplicate")
    assert (entry.status, entry.resolved_by, entry.resolution) == (
        DeadLetterStatus.RESOLVED,
        actor,
        "replayed: duplicate",
    )
    assert sorted(
        Measurement.objects.filter(unit__serial=cell(7)).values_list(
            "characteristic__code", "value"
        )
    ) == [("electrolyte-fill-mass", 5.01), ("fill-vacuum", 12.0)]
    assert IngestMessage.objects.filter(message_id="FILL-01:7").count() == 1
    assert Link.objects.filter(kind=LinkKind.CONSUMED).count() == 0
