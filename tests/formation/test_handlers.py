"""The formation envelope kinds through the ingest path: ``formation_step`` (a cycler's
steps with their samples), ``aging_ocv`` (an aging scanner's readings) and ``tray_load``
(the tray loader's record). Good messages are stored once; a bad one is refused whole into
the dead-letter store naming the field, with nothing of it written.

Data: 16 simulated 105 Ah prismatic cells (tests/formation/conftest.py), cell 0 in tray
T0001 position 1 on channel fc-01:b1/p01, cell 1 in position 2 on fc-01:b1/p02.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.utils import timezone

from formation import features as fx
from formation.choices import SignConvention, SourceFormat, StepType
from formation.models import (
    AgingReading,
    CyclerRun,
    DcirReading,
    StepCurve,
    StepResult,
    TrayLoad,
)
from formation.queries import curve_arrays, curve_resampled
from genealogy.choices import UnitKind
from genealogy.models import Unit
from qms.ingest.models import DeadLetter, DeadLetterStatus, IngestMessage
from qms.ingest.services import dead_letters_retry
from tests.formation.conftest import (
    aging_envelope,
    at,
    send,
    step_dict,
    step_envelope,
    tray_envelope,
)

pytestmark = pytest.mark.django_db


def blob_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "formation"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def assert_no_run_written() -> None:
    assert (
        CyclerRun.objects.count(),
        StepResult.objects.count(),
        StepCurve.objects.count(),
        DcirReading.objects.count(),
    ) == (0, 0, 0, 0)
    assert blob_files() == []


# --- formation_step: stored ------------------------------------------------------------------


def test_a_whole_run_is_stored_with_steps_curves_and_dcir(sim, sim_curves, cells):
    send(tray_envelope(sim, 0))

    [outcome] = send(step_envelope(sim, sim_curves, 0))

    assert outcome.status == "accepted"
    run = CyclerRun.objects.get()
    assert run.unit == cells[0]
    assert (run.station.code, run.equipment.code, run.channel, run.channel_key) == (
        "form",
        "fc-01",
        "b1/p01",
        "fc-01:b1/p01",
    )
    assert (run.tray, run.position, run.tray_load) == ("T0001", "1", TrayLoad.objects.get(
        unit=cells[0]
    ))  # fmt: skip
    assert run.protocol == "FORM-0.1C-4V2-V2"
    assert run.started_at == at(sim.formation_started_at_s[0])
    records = sim.step_records(0)
    last = records[-1]
    assert run.ended_at == at(sim.formation_started_at_s[0] + last.t_start_s + last.duration_s)
    assert (run.source_format, run.source_run_id, run.source_name) == (
        SourceFormat.ENVELOPE,
        "FC-01-R00001",
        "FC-01 cycler",
    )
    assert run.source_sign_convention == SignConvention.CHARGE_POSITIVE
    assert run.source_message_id == outcome.message_id

    steps = list(run.steps.order_by("sequence"))
    assert [s.step_type for s in steps] == [
        "cc_charge", "cv_charge", "rest", "discharge", "rest", "cc_charge", "rest", "pulse",
        "rest", "cc_charge", "rest", "pulse", "rest", "discharge", "rest",
    ]  # fmt: skip
    assert [s.name for s in steps[:4]] == ["form_cc", "form_cv", "rest_1", "cap_dis"]
    for step, rec in zip(steps, records, strict=True):
        assert step.capacity_ah == rec.capacity_ah
        assert step.energy_wh == rec.energy_wh
        assert step.end_voltage_v == rec.v_end_v
        assert step.end_current_a == rec.i_end_a
        assert step.duration_s == rec.duration_s
        assert step.temperature_rise_k == pytest.approx(rec.temperature_rise_k, abs=1e-12)
    assert steps[1].cv_time_s == records[1].duration_s  # a CV charge is all CV
    assert steps[0].cv_time_s == 0.0
    assert steps[1].tail_current_a == pytest.approx(abs(records[1].i_end_a), rel=1e-6)
    assert steps[3].end_current_a < 0  # + is charging

    discharge = steps[3].curve
    source = sim_curves[0][3]
    assert discharge.n_points == len(source.time_s)
    assert discharge.columns == "time_s,voltage_v,current_a,capacity_ah,temperature_c"
    full = curve_arrays(discharge)
    assert full["time_s"].tolist() == (source.time_s - records[3].t_start_s).tolist()
    assert full["voltage_v"].tolist() == source.voltage_v.astype(np.float32).tolist()
    small = curve_resampled(discharge)
    assert [len(v) for v in small.values()] == [64] * 5
    assert small["time_s"][0] == 0.0
    assert small["time_s"][-1] == pytest.approx(records[3].duration_s, abs=1e-6)
    assert small["voltage_v"][-1] == pytest.approx(source.voltage_v[-1], abs=1e-6)
    assert len(blob_files()) == 15
    _dcir_of_first_run(sim, sim_curves, records)


def test_the_resampled_copy_has_the_configured_size(sim, sim_curves, cells, settings):
    settings.QMS_FORMATION_CURVE_POINTS = 16

    send(step_envelope(sim, sim_curves, 0, [3]))

    curve = StepCurve.objects.get()
    small = curve_resampled(curve)
    assert (curve.resampled_points, len(bytes(curve.resampled))) == (16, 16 * 4 * 4)
    assert small["time_s"].tolist() == np.linspace(0.0, curve.time_last_s, 16).tolist()
    source = sim_curves[0][3]
    t = source.time_s - source.time_s[0]
    expected = np.interp(small["time_s"], t, source.voltage_v.astype(np.float32))
    assert small["voltage_v"] == pytest.approx(expected, abs=1e-6)


def _dcir_of_first_run(sim, sim_curves, records) -> None:
    """Cell 0's pulses give DCIR at 10 s as features.dcir_mohm gives it on the samples."""
    readings = list(DcirReading.objects.order_by("measured_at"))
    assert [r.step.sequence for r in readings] == [8, 12]
    for r, j in zip(readings, (7, 11), strict=True):
        curve = sim_curves[0][j]
        expected = fx.dcir_mohm(
            curve.time_s, curve.voltage_v, curve.current_a,
            v_before_v=records[j - 1].v_end_v, at_s=10.0,
        )  # fmt: skip
        assert r.r_10s_mohm == pytest.approx(expected, rel=1e-5)
        assert r.v_before_v == records[j - 1].v_end_v
        assert r.pulse_current_a == pytest.approx(-105.0, rel=1e-3)


def test_steps_streamed_one_message_each_make_one_run(sim, sim_curves, cells):
    docs = [
        step_envelope(sim, sim_curves, 1, [s], packed=s % 2 == 0, tray=False) for s in range(15)
    ]

    outcomes = send(*docs)

    assert [o.status for o in outcomes] == ["accepted"] * 15
    run = CyclerRun.objects.get()
    assert run.steps.count() == 15
    assert run.tray_load is None  # no tray named: nothing to confirm
    assert run.started_at == at(sim.formation_started_at_s[1])
    assert DcirReading.objects.filter(run=run).count() == 2


def test_a_pulse_before_its_rest_gets_its_dcir_when_the_rest_arrives(sim, sim_curves, cells):
    send(step_envelope(sim, sim_curves, 0, [s for s in range(15) if s != 10]))
    pulse = StepResult.objects.get(sequence=12)
    assert not DcirReading.objects.filter(step=pulse).exists()

    [outcome] = send(step_envelope(sim, sim_curves, 0, [10]))

    assert outcome.status == "accepted"
    reading = DcirReading.objects.get(step=pulse)
    assert reading.v_before_v == sim.step_records(0)[10].v_end_v
    curve = sim_curves[0][11]
    assert reading.r_1s_mohm == pytest.approx(
        fx.dcir_mohm(curve.time_s, curve.voltage_v, curve.current_a,
                     v_before_v=reading.v_before_v, at_s=1.0),
        rel=1e-5,
    )  # fmt: skip


def test_a_repeat_is_applied_once_and_a_rerun_of_the_same_steps_adds_nothing(
    sim, sim_curves, cells
):
    doc = step_envelope(sim, sim_curves, 0)
    send(doc)

    [again] = send(doc)
    same_steps = copy.deepcopy(doc)
    same_steps["message_id"] = "re-export-of-the-same-run"
    [rerun] = send(same_steps)

    assert (again.status, rerun.status) == ("duplicate", "accepted")
    assert (CyclerRun.objects.count(), StepResult.objects.count()) == (1, 15)
    assert DcirReading.objects.count() == 2
    assert len(blob_files()) == 15


def test_a_step_recorded_with_other_data_is_refused(sim, sim_curves, cells):
    send(step_envelope(sim, sim_curves, 0, [0, 1]))
    other = step_envelope(sim, sim_curves, 0, [2], message_id="other-step-1")
    other["payload"]["steps"][0]["sequence"] = 2  # claims the CV step's place

    [outcome] = send(other)

    assert outcome.status == "rejected"
    assert outcome.field == "payload.steps[0].sequence"
    assert "recorded already with other data" in outcome.reason
    assert StepResult.objects.count() == 2


def test_discharge_positive_currents_are_stored_charge_positive(sim, sim_curves, cells):
    doc = step_envelope(sim, sim_curves, 0, [0, 3], packed=False)
    doc["payload"]["sign_convention"] = "discharge_positive"
    for step in doc["payload"]["steps"]:
        step["arrays"]["current_a"] = [-i for i in step["arrays"]["current_a"]]
        step["end_current_a"] = -step["end_current_a"]

    [outcome] = send(doc)

    assert outcome.status == "accepted"
    run = CyclerRun.objects.get()
    assert run.source_sign_convention == SignConvention.DISCHARGE_POSITIVE
    charge, discharge = run.steps.order_by("sequence")
    assert charge.end_current_a == sim.step_records(0)[0].i_end_a > 0
    assert discharge.end_current_a == sim.step_records(0)[3].i_end_a < 0
    assert curve_arrays(discharge.curve)["current_a"].max() < 0


# --- formation_step: refused ------------------------------------------------------------------


def _arrays(doc: dict) -> dict:
    return doc["payload"]["steps"][0]["arrays"]


def _nan(doc):
    _arrays(doc)["voltage_v"][5] = None


def _backwards(doc):
    t = _arrays(doc)["time_s"]
    t[3], t[4] = t[4], t[3]


def _short(doc):
    _arrays(doc)["voltage_v"].pop()


def _millivolts(doc):
    a = _arrays(doc)
    a["voltage_v"] = [v * 1000 for v in a["voltage_v"]]


def _milliamp_hours(doc):
    a = _arrays(doc)
    a["capacity_ah"] = [q * 1000 for q in a["capacity_ah"]]


def _wrong_sign(doc):
    a = _arrays(doc)
    a["current_a"] = [-i for i in a["current_a"]]


def _unknown_type(doc):
    doc["payload"]["steps"][0]["type"] = "formation"


def _future(doc):
    doc["payload"]["steps"][0]["ended_at"] = (timezone.now() + timedelta(hours=2)).isoformat()


def _run_starts_late(doc):
    first = datetime.fromisoformat(doc["payload"]["steps"][0]["started_at"])
    doc["payload"]["run"]["started_at"] = (first + timedelta(hours=1)).isoformat()


def _negative_time(doc):
    _arrays(doc)["time_s"][0] = -1.0


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (_nan, "payload.steps[0].arrays.voltage_v[5]", "None is not of type"),
        (_backwards, "payload.steps[0].arrays.time_s", "not increasing at sample 4"),
        (_short, "payload.steps[0].arrays.voltage_v", "has {m} samples, time_s has {n}."),
        (_millivolts, "payload.steps[0].arrays.voltage_v", "millivolts sent as volts"),
        (_milliamp_hours, "payload.steps[0].arrays.capacity_ah", "milliampere-hours"),
        (_wrong_sign, "payload.sign_convention", "does not match the data"),
        (_unknown_type, "payload.steps[0].type", "'formation' is not one of"),
        (_future, "payload.steps[0].ended_at", "in the future"),
        (_run_starts_late, "payload.run.started_at", "after its step"),
        (_negative_time, "payload.steps[0].arrays.time_s", "sample 0 is at -1 s"),
    ],
)
def test_a_bad_step_is_refused_naming_its_field_with_nothing_written(
    sim, sim_curves, cells, change, field, reason
):
    doc = step_envelope(sim, sim_curves, 0, [0], packed=False)
    change(doc)
    n = len(sim_curves[0][0].time_s)

    [outcome] = send(doc)

    assert outcome.status == "rejected"
    assert outcome.field == field
    assert reason.format(n=n, m=n - 1) in outcome.reason, outcome.reason
    letter = DeadLetter.objects.get()
    assert (letter.kind, letter.field, letter.retry_until) == ("formation_step", field, None)
    assert not IngestMessage.objects.filter(message_id=doc["message_id"]).exists()
    assert_no_run_written()


def test_a_packed_curve_that_does_not_match_its_checksum_is_refused(sim, sim_curves, cells):
    doc = step_envelope(sim, sim_curves, 0, [0, 1])
    doc["payload"]["steps"][1]["curve_sha256"] = "0" * 64

    [outcome] = send(doc)

    assert (outcome.status, outcome.field) == ("rejected", "payload.steps[1].curve_b64")
    assert "checksum mismatch" in outcome.reason
    assert_no_run_written()


def test_an_array_error_in_a_packed_step_names_its_curve(sim, sim_curves, cells):
    doc = step_envelope(sim, sim_curves, 0, [0])
    curve = sim_curves[0][0]
    step = step_dict(sim, sim_curves, 0, 0, packed=True)
    blob = fx.curve_pack(
        {
            "time_s": curve.time_s,
            "voltage_v": curve.voltage_v * 1000,
            "current_a": curve.current_a,
            "capacity_ah": curve.capacity_ah,
        }
    )
    import base64
    import hashlib

    step["curve_b64"] = base64.b64encode(blob).decode()
    step["curve_sha256"] = hashlib.sha256(blob).hexdigest()
    doc["payload"]["steps"] = [step]

    [outcome] = send(doc)

    assert (outcome.status, outcome.field) == ("rejected", "payload.steps[0].curve_b64")
    assert "voltage_v" in outcome.reason and "millivolts" in outcome.reason
    assert_no_run_written()


def test_an_unknown_cell_waits_for_a_retry_and_goes_in_once_it_exists(
    sim, sim_curves, cells, formation_plant
):
    Unit.objects.filter(pk=cells[2].pk).update(serial="P1-RENAMED")  # the plant "never made" it

    [outcome] = send(step_envelope(sim, sim_curves, 2))

    assert (outcome.status, outcome.field) == ("rejected", "unit")
    letter = DeadLetter.objects.get()
    assert letter.retry_until is not None
    assert "Unknown cell" in letter.reason
    assert_no_run_written()

    Unit.objects.create(kind=UnitKind.CELL, serial=str(sim.serial[2]), line=formation_plant.line)
    retried = dead_letters_retry(now=timezone.now() + timedelta(seconds=30))

    assert [o.status for o in retried] == ["accepted"]
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.RESOLVED
    assert CyclerRun.objects.get().unit.serial == str(sim.serial[2])


def test_a_module_is_not_a_cell(sim, sim_curves, cells, formation_plant):
    Unit.objects.create(kind=UnitKind.MODULE, serial="M1-000001", line=formation_plant.line)

    [outcome] = send(step_envelope(sim, sim_curves, 0, [0], serial="M1-000001"))

    assert (outcome.status, outcome.field) == ("rejected", "unit")
    assert "is a module, not a cell" in outcome.reason
    assert_no_run_written()


# --- the loading record -----------------------------------------------------------------------


def test_a_position_the_loading_record_contradicts_is_refused(sim, sim_curves, cells):
    send(tray_envelope(sim, 0))
    doc = step_envelope(sim, sim_curves, 0)
    doc["payload"]["run"]["position"] = "2"

    [outcome] = send(doc)

    assert (outcome.status, outcome.field) == ("rejected", "payload.run.position")
    assert outcome.reason.startswith(f"{sim.serial[0]} was loaded into tray T0001 position 1 at"), (
        outcome.reason
    )
    assert outcome.reason.endswith("not position 2.")
    assert_no_run_written()


def test_a_tray_the_loading_record_contradicts_is_refused(sim, sim_curves, cells):
    send(tray_envelope(sim, 0))
    doc = step_envelope(sim, sim_curves, 0)
    doc["payload"]["run"]["tray"] = "T0002"

    [outcome] = send(doc)

    assert (outcome.status, outcome.field) == ("rejected", "payload.run.tray")
    assert "not into tray T0002" in outcome.reason
    assert_no_run_written()


def test_a_cell_in_a_position_loaded_with_another_cell_is_refused(sim, sim_curves, cells):
    send(tray_envelope(sim, 0, units=[str(s) for s in sim.serial[1:8]],
                       positions=[str(p) for p in range(2, 9)]))  # fmt: skip
    doc = step_envelope(sim, sim_curves, 0)
    doc["payload"]["run"]["position"] = "03"  # cell 2 sits in position 3

    [outcome] = send(doc)

    assert (outcome.status, outcome.field) == ("rejected", "payload.run.position")
    assert f"was loaded with {sim.serial[2]}" in outcome.reason
    assert_no_run_written()


def test_a_run_without_a_loading_record_is_kept_unconfirmed(sim, sim_curves, cells):
    [outcome] = send(step_envelope(sim, sim_curves, 0))

    assert outcome.status == "accepted"
    run = CyclerRun.objects.get()
    assert (run.tray, run.position, run.tray_load) == ("T0001", "1", None)


def test_a_tray_loading_with_a_position_per_unit_is_recorded_once(sim, cells):
    doc = tray_envelope(sim, 0)

    first, again = send(doc)[0], send(doc)[0]

    assert (first.status, again.status) == ("accepted", "duplicate")
    loads = list(TrayLoad.objects.order_by("position_key"))
    assert [(t.tray, t.position, t.unit.serial) for t in loads[:2]] == [
        ("T0001", "1", sim.serial[0]),
        ("T0001", "2", sim.serial[1]),
    ]
    assert len(loads) == 8


@pytest.mark.parametrize(
    ("positions", "field", "reason"),
    [
        (["1", "2"], "payload.positions", "2 positions for 8 units"),
        (["1", "2", "3", "4", "5", "6", "7", "02"], "payload.positions[7]", "given twice"),
    ],
)
def test_a_bad_tray_loading_is_refused(sim, cells, positions, field, reason):
    [outcome] = send(tray_envelope(sim, 0, positions=positions))

    assert (outcome.status, outcome.field) == ("rejected", field)
    assert reason in outcome.reason
    assert TrayLoad.objects.count() == 0


# --- aging_ocv ----------------------------------------------------------------------------------


def test_aging_readings_are_stored_once(sim, cells):
    doc = aging_envelope(sim, 0)
    log = sim.ocv_log(0)

    [outcome] = send(doc)
    again = copy.deepcopy(doc)
    again["message_id"] = "rescan-export"
    [repeat] = send(again)

    assert (outcome.status, repeat.status) == ("accepted", "accepted")
    readings = list(AgingReading.objects.order_by("measured_at"))
    assert len(readings) == 15
    assert readings[0].unit == cells[0]
    assert readings[0].rack == f"R{log.rack + 1:02d}"
    assert readings[0].ocv_mv == log.ocv_v[0] * 1e3
    assert readings[0].acir_mohm == 0.62
    assert readings[-1].temperature_c == log.rack_temperature_c[-1]
    assert readings[0].measured_at == at(log.at_s[0])
    assert (readings[0].station.code, readings[0].equipment.code) == ("aging", "ocv-1")


def test_a_rack_scan_names_each_cell(sim, cells):
    doc = aging_envelope(sim, 0, [0])
    doc.pop("unit")
    doc["units"] = [str(sim.serial[0]), str(sim.serial[1])]
    second = dict(doc["payload"]["readings"][0], unit=str(sim.serial[1]), ocv_mv=3650.5)
    doc["payload"]["readings"] = [
        dict(doc["payload"]["readings"][0], unit=str(sim.serial[0])),
        second,
    ]

    [outcome] = send(doc)

    assert outcome.status == "accepted"
    assert sorted(AgingReading.objects.values_list("unit__serial", "ocv_mv")) == [
        (str(sim.serial[0]), sim.ocv_log(0).ocv_v[0] * 1e3),
        (str(sim.serial[1]), 3650.5),
    ]


def _rack_scan(doc):
    doc.pop("unit")
    doc["units"] = [str(doc["payload"]["readings"][0].get("unit", "x"))]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (lambda d: d["payload"]["readings"][3].update(ocv_mv=3.65), "payload.readings[3].ocv_mv",
         "volts sent as millivolts"),
        (lambda d: d["payload"]["readings"][0].update(unit="P19999999999"),
         "payload.readings[0].unit", "a message about"),
        (lambda d: d["payload"]["readings"][0].update(ocv_mv=-1), "payload.readings[0].ocv_mv",
         "less than the minimum"),
        (lambda d: d["payload"]["readings"][2].update(temperature_c=300.0),
         "payload.readings[2].temperature_c", "greater than the maximum"),
        (lambda d: d["payload"]["readings"][1].update(measured_at="2999-01-01T00:00:00Z"),
         "payload.readings[1].measured_at", "in the future"),
    ],
)  # fmt: skip
def test_a_bad_aging_message_is_refused_whole(sim, cells, change, field, reason):
    doc = aging_envelope(sim, 0, range(5))
    change(doc)

    [outcome] = send(doc)

    assert (outcome.status, outcome.field) == ("rejected", field)
    assert reason in outcome.reason, outcome.reason
    assert AgingReading.objects.count() == 0


def test_an_aging_reading_of_an_unknown_cell_waits_for_a_retry(sim, cells):
    [outcome] = send(aging_envelope(sim, 0, [0], serial="P19999999999"))

    assert (outcome.status, outcome.field) == ("rejected", "unit")
    assert DeadLetter.objects.get().retry_until is not None
    assert AgingReading.objects.count() == 0


def test_a_reading_that_contradicts_a_stored_one_is_refused(sim, cells):
    send(aging_envelope(sim, 0, [0, 1]))
    changed = aging_envelope(sim, 0, [1, 2], message_id="rescan-2")
    changed["payload"]["readings"][0]["ocv_mv"] += 0.5

    [outcome] = send(changed)

    assert (outcome.status, outcome.field) == ("rejected", "payload.readings[0].ocv_mv")
    assert "has a reading at" in outcome.reason
    assert AgingReading.objects.count() == 2


def test_a_scan_of_several_units_needs_each_reading_to_name_its_cell(sim, cells):
    doc = aging_envelope(sim, 0, [0])
    doc.pop("unit")
    doc["units"] = [str(sim.serial[0]), str(sim.serial[1])]

    [outcome] = send(doc)

    assert (outcome.status, outcome.field) == ("rejected", "payload.readings[0].unit")
    assert AgingReading.objects.count() == 0


def test_a_batch_applies_the_good_messages_and_refuses_the_bad_alone(sim, sim_curves, cells):
    bad_run = step_envelope(sim, sim_curves, 1, [0], packed=False)
    _backwards(bad_run)
    bad_aging = aging_envelope(sim, 2, [0, 1])
    bad_aging["payload"]["readings"][1]["ocv_mv"] = 3.6

    outcomes = send(
        step_envelope(sim, sim_curves, 0, [0, 1]),
        bad_run,
        step_envelope(sim, sim_curves, 3, [0]),
        aging_envelope(sim, 0, [0, 1]),
        bad_aging,
        aging_envelope(sim, 1, [0]),
    )

    assert [o.status for o in outcomes] == [
        "accepted", "rejected", "accepted", "accepted", "rejected", "accepted",
    ]  # fmt: skip
    assert sorted(CyclerRun.objects.values_list("unit__serial", flat=True)) == [
        str(sim.serial[0]),
        str(sim.serial[3]),
    ]
    assert StepResult.objects.count() == 3
    assert sorted(set(AgingReading.objects.values_list("unit__serial", flat=True))) == [
        str(sim.serial[0]),
        str(sim.serial[1]),
    ]
    assert DeadLetter.objects.count() == 2


def test_the_step_types_of_both_vocabularies_are_one_set():
    from formation.choices import step_type_normalise
    from formation.cyclers import StepType as CyclerStepType

    assert {step_type_normalise(t) for t in CyclerStepType} == {
        StepType(t.value) for t in CyclerStepType
    }
    assert step_type_normalise("cc_discharge") == StepType.DISCHARGE
    assert {step_type_normalise(k) for k in ("rest", "cc_charge", "cv_charge", "pulse")} == {
        StepType.REST, StepType.CC_CHARGE, StepType.CV_CHARGE, StepType.PULSE,
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown step type 'soak'"):
        step_type_normalise("soak")


def test_a_tray_of_runs_and_their_aging_go_in_as_one_bulk_write(
    sim, sim_curves, cells, django_assert_max_num_queries
):
    """Eight cells' runs (120 steps: PostgreSQL writes them with COPY) and aging logs (120
    readings) in one ingest batch each; the query count does not grow with the cells."""
    send(tray_envelope(sim, 0))
    runs = [step_envelope(sim, sim_curves, i) for i in range(8)]
    aging = [aging_envelope(sim, i) for i in range(8)]

    with django_assert_max_num_queries(40):
        outcomes = send(*runs)
    with django_assert_max_num_queries(25):
        outcomes += send(*aging)

    assert [o.status for o in outcomes] == ["accepted"] * 16
    assert (CyclerRun.objects.count(), StepResult.objects.count()) == (8, 120)
    assert StepCurve.objects.filter(resampled_points=64).count() == 120
    assert DcirReading.objects.count() == 16
    assert AgingReading.objects.count() == 120
    assert CyclerRun.objects.filter(tray_load__isnull=False).count() == 8
    first = StepResult.objects.get(run__unit=cells[5], sequence=4)
    assert first.capacity_ah == sim.step_records(5)[3].capacity_ah
    assert curve_arrays(first.curve)["capacity_ah"][-1] == pytest.approx(
        first.capacity_ah, rel=1e-6
    )
