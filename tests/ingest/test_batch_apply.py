"""A run of station results applied together: the same effect and the same refusals as one
message at a time, with bulk writes (the plant-speed path of every transport)."""

import json
from datetime import timedelta

import pytest

from genealogy import handlers as genealogy_handlers
from genealogy.models import Measurement, StationVisit, Unit
from qms.db import COPY_THRESHOLD, insert_rows
from qms.ingest import registry
from qms.ingest.envelope import MasterData, _fast_validator, _validator, parse_json, validate
from qms.ingest.models import DeadLetter, IngestMessage, IngestStat
from qms.ingest.services import dead_letter_replay, ingest_raw
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


@pytest.fixture
def cyl(db):
    return build_line_21700()


@pytest.fixture
def t0():
    return an_hour_ago()


def statuses(outcomes) -> list[str]:
    return [o.status for o in outcomes]


def test_a_run_with_bad_messages_applies_the_good_ones_and_refuses_each_bad_one_alone(cyl, t0):
    """Given 40 fill results of which three are bad in different ways, when they arrive in
    one batch, then the 37 good ones are stored with one visit and one value each, and each
    bad one is a dead letter naming its own field, its message id free for a replay."""
    docs = [
        fill_result(cell(n), message_id=f"FILL-01:{n}", sent_at=t0 + timedelta(seconds=n))
        for n in range(1, 41)
    ]
    docs[4]["payload"]["measurements"][0]["unit"] = "kg"  # wrong unit
    docs[11]["payload"]["measurements"][0]["characteristic"] = "fill-volume"  # unknown
    docs[20]["payload"]["unit_kind"] = None  # unknown cell, not to be created
    del docs[20]["payload"]["unit_kind"]
    docs[20]["unit"] = cell(999)

    outcomes = ingest_raw([raw(d) for d in docs])

    assert [(i, o.status) for i, o in enumerate(outcomes) if o.status != "accepted"] == [
        (4, "rejected"),
        (11, "rejected"),
        (20, "rejected"),
    ]
    assert [(o.field, o.reason) for o in outcomes if o.status == "rejected"] == [
        ("payload.measurements[0].unit", "kg given, characteristic electrolyte-fill-mass in g."),
        (
            "payload.measurements[0].characteristic",
            "Unknown characteristic 'fill-volume' at station gf1/l2-cyl/fill "
            "(its characteristics: electrolyte-fill-mass).",
        ),
        (
            "unit",
            f"Unknown unit '{cell(999)}' (send 'unit_kind' to create it on its first station).",
        ),
    ]
    good = {cell(n) for n in range(1, 41)} - {cell(5), cell(12), cell(21)}
    assert set(Unit.objects.values_list("serial", flat=True)) == good
    assert StationVisit.objects.count() == Measurement.objects.count() == 37
    assert set(Measurement.objects.values_list("unit__serial", flat=True)) == good
    assert set(
        Measurement.objects.values_list("source_message_id", "visit__source_message_id")
    ) == {(f"FILL-01:{n}", f"FILL-01:{n}") for n in range(1, 41) if n not in (5, 12, 21)}
    assert IngestMessage.objects.count() == 37
    assert not IngestMessage.objects.filter(
        message_id__in=["FILL-01:5", "FILL-01:12", "FILL-01:21"]
    ).exists()
    assert DeadLetter.objects.count() == 3
    stat = IngestStat.objects.get(transport="direct")
    assert (stat.accepted, stat.duplicate, stat.rejected, stat.batches) == (37, 0, 3, 1)


def test_values_are_checked_against_the_limits_and_the_visit_carries_the_message(cyl, t0):
    docs = [
        fill_result(cell(1), message_id="FILL-01:1", sent_at=t0, mass_g=5.02),
        fill_result(cell(2), message_id="FILL-01:2", sent_at=t0, mass_g=5.31),  # above 5.05
    ]
    docs[1]["payload"]["result"] = "nok"
    assert statuses(ingest_raw([raw(d) for d in docs])) == ["accepted", "accepted"]
    rows = Measurement.objects.order_by("unit__serial").values_list(
        "unit__serial", "value", "in_spec", "visit__result", "visit__program", "equipment__code"
    )
    assert list(rows) == [
        (cell(1), 5.02, True, "ok", "FILL-21700-E12", "cw-1"),
        (cell(2), 5.31, False, "nok", "FILL-21700-E12", "cw-1"),
    ]


def test_a_unit_created_by_one_message_is_found_by_the_next_one_in_the_same_batch(cyl, t0):
    """The cell is created at fill (unit_kind) and measured again at the next station of the
    same batch, which does not say unit_kind: it must find the cell made a moment before."""
    first = fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)
    again = fill_result(
        cell(1), message_id="FILL-01:1-retest", sent_at=t0 + timedelta(seconds=30), unit_kind=None
    )
    outcomes = ingest_raw([raw(again), raw(first)])  # out of order on arrival
    assert statuses(outcomes) == ["accepted", "accepted"]
    assert Unit.objects.filter(serial=cell(1)).count() == 1
    assert Measurement.objects.filter(unit__serial=cell(1)).count() == 2


def test_a_tray_result_records_one_visit_per_cell(cyl, t0):
    serials = [cell(n) for n in range(1, 5)]
    doc = fill_result(serials[0], message_id="FILL-01:tray-7", sent_at=t0)
    del doc["unit"]
    doc["units"] = serials
    single = fill_result(cell(9), message_id="FILL-01:9", sent_at=t0)
    assert statuses(ingest_raw([raw(doc), raw(single)])) == ["accepted", "accepted"]
    assert StationVisit.objects.filter(source_message_id="FILL-01:tray-7").count() == 4
    assert Measurement.objects.count() == 5


def test_a_failing_batch_handler_falls_back_to_one_message_at_a_time(cyl, t0, monkeypatch):
    """A fault in the bulk path (here: the batch handler breaks) costs speed, never data."""
    reg = registry.get("process_result")

    def broken(items):
        genealogy_handlers.handle_process_results(items)  # writes, then breaks
        raise RuntimeError("bulk path failed")

    monkeypatch.setitem(
        registry._handlers,
        "process_result",
        registry.Registration(
            reg.kind, reg.handler, reg.app_label, reg.payload_schema, batch_handler=broken
        ),
    )
    docs = [fill_result(cell(n), message_id=f"FILL-01:{n}", sent_at=t0) for n in range(1, 4)]
    docs[1]["payload"]["measurements"][0]["unit"] = "kg"
    outcomes = ingest_raw([raw(d) for d in docs])
    assert statuses(outcomes) == ["accepted", "rejected", "accepted"]
    assert outcomes[1].field == "payload.measurements[0].unit"
    assert Measurement.objects.count() == StationVisit.objects.count() == 2
    assert sorted(IngestMessage.objects.values_list("message_id", flat=True)) == [
        "FILL-01:1",
        "FILL-01:3",
    ]


def test_a_refused_message_of_a_run_is_replayed_once_its_cause_is_fixed(cyl, t0):
    docs = [fill_result(cell(n), message_id=f"FILL-01:{n}", sent_at=t0) for n in range(1, 4)]
    docs[2]["payload"]["measurements"][0]["characteristic"] = "fill-mass-net"
    assert statuses(ingest_raw([raw(d) for d in docs])) == ["accepted", "accepted", "rejected"]
    fill = cyl.stations["fill"]
    fill.characteristics.create(
        code="fill-mass-net", name="Net fill mass", unit="g", nominal=5.0, lsl=4.95, usl=5.05
    )
    outcome = dead_letter_replay(entry=DeadLetter.objects.get(), actor=UserFactory())
    assert outcome.status == "accepted"
    assert Measurement.objects.filter(unit__serial=cell(3)).count() == 1


def test_a_number_too_large_for_a_double_is_refused(cyl, t0):
    text = json.dumps(fill_result(cell(1), message_id="FILL-01:1", sent_at=t0))
    text = text.replace('"value": 5.01', '"value": 1e999')
    (outcome,) = ingest_raw([raw(text.encode())])
    assert (outcome.status, outcome.reason) == ("rejected", "1e999 is not a finite number.")
    assert not Measurement.objects.exists()


# --- the compiled schema agrees with the reference validator ---------------------------------


def _variants(doc: dict) -> list[dict]:
    """Valid and invalid variants of an envelope, one change each."""
    out = [doc]

    def changed(fn):
        d = json.loads(json.dumps(doc))
        fn(d)
        out.append(d)

    changed(lambda d: d.pop("message_id"))
    changed(lambda d: d.update(message_id=""))
    changed(lambda d: d.update(message_id="has space"))
    changed(lambda d: d.update(message_id="x" * 129))
    changed(lambda d: d.update(schema="celltrace.envelope/2"))
    changed(lambda d: d.update(kind="Process-Result"))
    changed(lambda d: d.update(extra=1))
    changed(lambda d: d.update(units=["A"]))  # both unit and units
    changed(lambda d: d.pop("unit"))  # neither
    changed(lambda d: d.update(units=[]) or d.pop("unit"))
    changed(lambda d: d.update(equipment=None))
    changed(lambda d: d.update(equipment=7))
    changed(lambda d: d.update(payload=[]))
    changed(lambda d: d.update(sent_at=12))
    changed(lambda d: d.update(site="x" * 17))
    return out


def _payload_variants(payload: dict) -> list[dict]:
    out = [payload]

    def changed(fn):
        p = json.loads(json.dumps(payload))
        fn(p)
        out.append(p)

    m = "measurements"
    changed(lambda p: p.pop("result"))
    changed(lambda p: p.update(result="OK"))
    changed(lambda p: p[m][0].pop("unit"))
    changed(lambda p: p[m][0].update(value="5.0"))
    changed(lambda p: p[m][0].update(value=True))
    changed(lambda p: p[m][0].update(extra="x"))
    changed(lambda p: p[m][0].update(characteristic=""))
    changed(lambda p: p[m][0].update(position_m="12"))
    changed(lambda p: p.update(unit_kind="tray"))
    changed(lambda p: p.update(measurements={}))
    changed(lambda p: p.update(measurements=[{}]))
    return out


def test_compiled_and_reference_validators_agree_on_valid_and_invalid_envelopes(cyl, t0):
    from qms.ingest.envelope import _fast_payload_validator, _payload_validator

    doc = fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)
    fast, reference = _fast_validator(), _validator()
    verdicts = []
    for variant in _variants(doc):
        try:
            fast(variant)
            fast_ok = True
        except Exception:
            fast_ok = False
        verdicts.append(fast_ok)
        assert fast_ok == reference.is_valid(variant), variant
    assert verdicts.count(True) == 2  # the original and equipment=None
    fast_p, ref_p = _fast_payload_validator("process_result"), _payload_validator("process_result")
    for variant in _payload_variants(doc["payload"]):
        try:
            fast_p(variant)
            fast_ok = True
        except Exception:
            fast_ok = False
        assert fast_ok == ref_p.is_valid(variant), variant


def test_an_invalid_envelope_is_worded_by_the_reference_validator(cyl, t0):
    doc = fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)
    doc["payload"]["measurements"][0]["value"] = "5.0"
    with pytest.raises(Exception) as caught:
        validate(parse_json(json.dumps(doc).encode()), master=MasterData())
    assert (caught.value.field, caught.value.reason) == (
        "payload.measurements[0].value",
        "Schema: '5.0' is not of type 'number'",
    )


# --- bulk writes ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, COPY_THRESHOLD + 5])
def test_insert_rows_returns_the_ids_in_order(cyl, t0, n):
    """Below the threshold a plain INSERT, above it (PostgreSQL) sequence ids and COPY."""
    unit = Unit.objects.create(kind="cell", serial=cell(1), line=cyl.line, produced_at=t0)
    fields = ("unit_id", "station_id", "started_at", "result", "program", "operator")
    rows = [
        (unit.pk, cyl.stations["fill"].pk, t0 + timedelta(seconds=i), "ok", f"P{i}", "op-1")
        for i in range(n)
    ]
    ids = insert_rows(StationVisit, fields, rows)
    assert len(set(ids)) == n
    assert [StationVisit.objects.get(pk=pk).program for pk in ids] == [f"P{i}" for i in range(n)]


def test_a_large_run_on_the_bulk_path_lands_exactly_once(cyl, t0):
    """Enough rows to take the COPY path on PostgreSQL; sent twice, applied once."""
    docs = [
        envelope(
            "process_result",
            station="fill",
            equipment="cw-1",
            unit=cell(n),
            message_id=f"FILL-01:{n}",
            sent_at=t0 + timedelta(milliseconds=n),
            payload={
                "result": "ok",
                "unit_kind": "cell",
                "measurements": [
                    {
                        "characteristic": "electrolyte-fill-mass",
                        "value": 5.0 + (n % 7 - 3) * 0.004,
                        "unit": "g",
                    }
                ],
            },
        )
        for n in range(1, 121)
    ]
    first = ingest_raw([raw(d) for d in docs])
    again = ingest_raw([raw(d) for d in docs])
    assert statuses(first) == ["accepted"] * 120
    assert statuses(again) == ["duplicate"] * 120
    assert Measurement.objects.count() == StationVisit.objects.count() == 120
    assert IngestMessage.objects.count() == 120


def test_truncated_json_is_worded_once(cyl, t0):
    text = json.dumps(fill_result(cell(1), message_id="FILL-01:1", sent_at=t0))
    (outcome,) = ingest_raw([raw(text[:40].encode())])
    assert outcome.reason == "Not valid JSON: Unterminated string starting at line 1 column 39."
