"""Formation services: per-cell features from the stored records (the same numbers
:func:`formation.features.cell_features` gives on the simulator's own records), robust
z-scores within lot, channel and rack, grading (the K screen, then bins) with its event,
grading rule sets, and the simulator feed for cells the line made."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from formation import demo, services
from formation.choices import RuleSetState
from formation.events import FormationGraded
from formation.features import FEATURE_NAMES, cell_features
from formation.models import (
    AgingReading,
    CellFeatures,
    CellGrade,
    CyclerRun,
    GradingRuleSet,
    StepResult,
    TrayLoad,
)
from genealogy.choices import UnitKind
from genealogy.models import Measurement, StationVisit, Unit
from qms.choices import SpecialCharacteristic
from qms.exceptions import InvalidInput, Refused
from qms.models import Characteristic, Line
from tests.factories import LineFactory, UserFactory
from tests.formation.conftest import aging_envelope, send, step_envelope, tray_envelope

pytestmark = pytest.mark.django_db


def grant(user, codename: str = "change_gradingruleset"):
    user.user_permissions.add(Permission.objects.get(codename=codename))
    return type(user).objects.get(pk=user.pk)  # permissions are cached per instance


@pytest.fixture
def engineer(quality):
    return grant(quality)


# --- features ----------------------------------------------------------------------------------


def test_features_from_stored_records_equal_the_simulators_own(sim, sim_curves, cells):
    send(tray_envelope(sim, 0))
    send(*[step_envelope(sim, sim_curves, i) for i in range(4)])
    send(*[aging_envelope(sim, i) for i in range(4)])

    rows = services.features_compute(cell_ids=[c.pk for c in cells[:4]])

    assert [r.unit_id for r in rows] == [c.pk for c in cells[:4]]
    for i, row in enumerate(rows):
        expected = cell_features(sim.step_records(i), sim_curves[i], sim.ocv_log(i))
        for name in FEATURE_NAMES:
            assert getattr(row, name) == pytest.approx(expected[name], rel=2e-5, abs=1e-9), name
        assert row.acir_mohm == 0.62
        assert row.aging_readings == 15
        assert row.lot == "L1260302A"
        assert row.channel_key == f"fc-01:b1/p{i + 1:02d}"
        assert row.rack == f"R{sim.ocv_log(i).rack + 1:02d}"
        assert row.run == CyclerRun.objects.get(unit=cells[i])
        assert row.feature_version == "1.0.0"
    # four cells of one lot: their z-scores within the lot centre on the lot's median
    z = sorted(r.z_scores["lot"]["q_discharge_ah"] for r in rows)
    assert z[0] < 0 < z[-1]
    assert sum(1 for v in z if v < 0) == 2


def test_features_without_curves_skip_the_dqdv_peaks_only(sim, sim_curves, cells):
    send(step_envelope(sim, sim_curves, 0))

    [row] = services.features_compute(cell_ids=[cells[0].pk], curves=False)

    expected = cell_features(sim.step_records(0), sim_curves[0])
    assert row.ica_peak1_v is None and row.ica_peak3_ah_per_v is None
    assert row.dcir_10s_mohm == pytest.approx(expected["dcir_10s_mohm"], rel=2e-5)
    assert row.ice == pytest.approx(expected["ice"], rel=1e-12)
    assert (row.k_value_mv_per_day, row.aging_readings, row.rack) == (None, 0, "")


def test_features_are_recomputed_in_place(sim, sim_curves, cells):
    send(aging_envelope(sim, 0, range(8)))
    [first] = services.features_compute(cell_ids=[cells[0].pk])
    send(aging_envelope(sim, 0, range(8, 15)))

    [again] = services.features_compute(cell_ids=[cells[0].pk])

    assert again.pk == first.pk
    assert (first.aging_readings, again.aging_readings) == (8, 15)
    assert CellFeatures.objects.count() == 1
    assert services.features_compute(cell_ids=[cells[5].pk]) == []  # nothing recorded


# --- a population with two lots, graded ---------------------------------------------------------


def _aged_cells(line, lots: dict[str, list[float]], *, days: int = 6, ocv0: float = 3650.0):
    """Cells aged on rack R01 whose OCV falls by exactly K mV/day: {lot: [K, ...]}."""
    t0 = timezone.now() - timedelta(days=days + 1)
    out = {}
    batches = []
    for lot, ks in lots.items():
        for j, k in enumerate(ks):
            unit = Unit.objects.create(
                kind=UnitKind.CELL, serial=f"P1{lot}{j:05d}", line=line, batch_lot=lot
            )
            out[unit.serial] = unit
            batches.append(
                [
                    services.AgingInput(
                        unit=unit,
                        station=line.stations.get(code="aging"),
                        rack="R01",
                        ocv_mv=ocv0 - k * d,
                        measured_at=t0 + timedelta(days=d),
                    )
                    for d in range(days)
                ]
            )
    results = services.aging_readings_record_many(batches=batches)
    assert all(isinstance(r, services.AgingRecorded) for r in results)
    return out


def _rules(line, actor, **kw):
    args = {
        "name": "grading v1",
        "bins": [
            {"code": "A", "limits": {"ocv_mv": {"min": 3600.0}, "k_value_mv_per_day": {"max": 1}}},
            {"code": "B", "limits": {"ocv_mv": {"min": 3550.0}}},
        ],
        "k_abs_limit_mv_per_day": 0.5,
        "k_lot_z_limit": 4.0,
        **kw,
    }
    rules = services.grading_rules_create(line=line, actor=actor, **args)
    return services.grading_rules_activate(rule_set=rules, actor=actor, reason="line start")


@pytest.fixture
def population(formation_plant):
    """18 cells of lot LA (K 0.080-0.088 mV/day, one at 0.40) and 18 of lot LB (K
    0.300-0.308, one at 0.60): the 0.40 cell is ordinary for the plant, not for its lot."""
    la = [0.080 + 0.002 * (j % 5) for j in range(17)] + [0.40]
    lb = [0.300 + 0.002 * (j % 5) for j in range(17)] + [0.60]
    return _aged_cells(formation_plant.line, {"LA": la, "LB": lb})


def test_z_scores_are_within_the_cells_lot(population, django_assert_max_num_queries):
    ids = [u.pk for u in population.values()]

    with django_assert_max_num_queries(16):  # 36 cells; does not grow with the cells
        services.features_compute(cell_ids=ids)

    outlier = CellFeatures.objects.get(unit__serial="P1LA00017")
    ordinary = CellFeatures.objects.get(unit__serial="P1LB00003")
    assert outlier.k_value_mv_per_day == pytest.approx(0.40, abs=1e-9)
    assert outlier.k_value_z_lot > 50  # far out in its own lot
    assert outlier.k_value_z_rack < 1.5  # unremarkable on its rack (both lots)
    assert ordinary.k_value_z_lot == pytest.approx(0.6745, abs=1e-3)
    assert ordinary.z_scores["lot"]["k_value_mv_per_day"] == ordinary.k_value_z_lot
    assert ordinary.z_scores["rack"]["k_value_mv_per_day"] == ordinary.k_value_z_rack
    assert "channel" not in ordinary.z_scores  # no formation run, no channel
    assert ordinary.z_scores["lot"]["dcir_10s_mohm"] is None


def test_grading_fails_the_k_screen_and_bins_the_rest(
    population, formation_plant, engineer, monkeypatch
):
    published = []
    monkeypatch.setattr(services.events, "publish", published.append)
    ids = [u.pk for u in population.values()]
    services.features_compute(cell_ids=ids)
    rules = _rules(formation_plant.line, engineer)

    result = services.cells_grade(cell_ids=ids, actor=engineer)

    by_serial = {g.unit.serial: g for g in result.grades}
    assert result.skipped == {}
    lot_outlier, abs_outlier = by_serial["P1LA00017"], by_serial["P1LB00017"]
    assert (lot_outlier.bin, lot_outlier.passed, lot_outlier.k_screen_failed) == (
        "NG-K", False, True,
    )  # fmt: skip
    assert "robust sigma above its lot 'LA'" in lot_outlier.reasons[0]
    assert abs_outlier.bin == "NG-K"
    assert abs_outlier.reasons[0] == "K-value 0.6 mV/day above the absolute limit 0.5"
    assert abs_outlier.inputs["k_value_mv_per_day"] == pytest.approx(0.6, abs=1e-9)
    assert {g.bin for s, g in by_serial.items() if s not in ("P1LA00017", "P1LB00017")} == {"A"}
    assert CellGrade.objects.count() == 36
    assert CellGrade.objects.filter(rule_set=rules, graded_by=engineer).count() == 36
    [event] = published
    assert isinstance(event, FormationGraded)
    assert (
        set(event.k_screen_failed_ids)
        == set(event.failed_ids)
        == {
            population["P1LA00017"].pk,
            population["P1LB00017"].pk,
        }
    )
    assert len(event.grade_ids) == 36

    again = services.cells_grade(cell_ids=ids, actor=engineer)

    assert CellGrade.objects.count() == 36  # nothing changed: the grades stand
    assert {g.pk for g in again.grades} == {g.pk for g in result.grades}
    assert len(published) == 1


def test_a_cell_outside_every_bin_gets_the_reject_bin(formation_plant, engineer):
    cells = _aged_cells(formation_plant.line, {"LC": [0.08, 0.081, 0.082]}, ocv0=3520.0)
    ids = [u.pk for u in cells.values()]
    services.features_compute(cell_ids=ids)
    _rules(formation_plant.line, engineer)

    result = services.cells_grade(cell_ids=ids)

    grade = result.grades[0]
    assert (grade.bin, grade.passed, grade.k_screen_failed) == ("NG", False, False)
    assert grade.reasons[0].startswith("not A: OCV, last aging reading (mV) 3519.6 below 3600")
    assert grade.reasons[1].startswith("not B: OCV, last aging reading (mV) 3519.6 below 3550")


def test_cells_that_cannot_be_graded_yet_are_skipped_with_the_reason(formation_plant, engineer):
    line = formation_plant.line
    aged = _aged_cells(line, {"LD": [0.08]})
    young = _aged_cells(line, {"LE": [0.08]}, days=2)
    other_line = LineFactory(code="l9-test")
    stranger = Unit.objects.create(kind=UnitKind.CELL, serial="P19999", line=other_line)
    CellFeatures.objects.create(
        unit=stranger, line=other_line, k_value_mv_per_day=0.1, aging_readings=6,
        feature_version="1.0.0", computed_at=timezone.now(),
    )  # fmt: skip
    nothing = Unit.objects.create(kind=UnitKind.CELL, serial="P18888", line=line)
    ids = [*(u.pk for u in aged.values()), *(u.pk for u in young.values())]
    services.features_compute(cell_ids=ids)
    _rules(line, engineer)

    result = services.cells_grade(cell_ids=[*ids, stranger.pk, nothing.pk])

    assert [g.unit.serial for g in result.grades] == ["P1LD00000"]
    assert result.skipped == {
        young["P1LE00000"].pk: "no K-value yet (2 aging readings, 3 needed)",
        stranger.pk: "no grading rules in force on the cell's line",
        nothing.pk: "no formation features",
    }


# --- rule sets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bins", "field", "reason"),
    [
        ([], "bins", "at least one bin"),
        ([{"code": "A", "limits": {"capacity": {"min": 1}}}], "bins[0].limits.capacity",
         "Unknown criterion"),
        ([{"code": "A", "limits": {"capacity_ah": {"min": 106, "max": 104}}}],
         "bins[0].limits.capacity_ah", "min 106 is above max 104"),
        ([{"code": "A"}, {"code": "A"}], "bins[1].code", "used twice"),
        ([{"code": "NG"}], "bins[0].code", "used twice"),
        ([{"code": "A", "limits": {"ocv_mv": {"min": "3600"}}}], "bins[0].limits.ocv_mv.min",
         "not a number"),
        ([{"code": "A", "limits": {"ocv_mv": {}}}], "bins[0].limits.ocv_mv", "Give min, max"),
        ([{"code": "A", "color": "green"}], "bins[0]", "Unknown key(s) color"),
    ],
)  # fmt: skip
def test_bad_bins_are_refused_and_no_rule_set_is_written(
    formation_plant, engineer, bins, field, reason
):
    with pytest.raises(InvalidInput) as err:
        services.grading_rules_create(
            line=formation_plant.line, name="bad", bins=bins, k_abs_limit_mv_per_day=0.2,
            k_lot_z_limit=4.0, actor=engineer,
        )  # fmt: skip

    assert err.value.field == field
    assert reason in err.value.message
    assert GradingRuleSet.objects.count() == 0


def test_putting_rules_in_force_retires_the_previous_and_keeps_history(formation_plant, engineer):
    first = _rules(formation_plant.line, engineer)
    second = services.grading_rules_create(
        line=formation_plant.line, name="grading v2", bins=[{"code": "A"}],
        k_abs_limit_mv_per_day=0.3, k_lot_z_limit=3.5, actor=engineer,
    )  # fmt: skip

    services.grading_rules_activate(rule_set=second, actor=engineer, reason="tighter K limit")

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, second.state) == (RuleSetState.RETIRED, RuleSetState.ACTIVE)
    assert [h.history_change_reason for h in second.history.order_by("history_id")] == [
        "drafted",
        "in force: tighter K limit",
    ]
    assert second.history.latest().history_user == engineer
    with pytest.raises(Refused, match="retired"):
        services.grading_rules_activate(rule_set=first, actor=engineer, reason="back")


def test_only_a_quality_decision_puts_rules_in_force(formation_plant, quality):
    operator = UserFactory(username="op-formation", role="operator")
    rules = services.grading_rules_create(
        line=formation_plant.line, name="v1", bins=[{"code": "A"}], k_abs_limit_mv_per_day=0.3,
        k_lot_z_limit=3.5, actor=quality,
    )  # fmt: skip

    with pytest.raises(Refused) as err:
        services.grading_rules_activate(rule_set=rules, actor=operator, reason="go")
    with pytest.raises(InvalidInput, match="needs a reason"):
        services.grading_rules_activate(rule_set=rules, actor=grant(quality), reason=" ")

    assert err.value.code == "forbidden"
    rules.refresh_from_db()
    assert rules.state == RuleSetState.DRAFT


# --- runs through the service -----------------------------------------------------------------


def test_a_curve_with_nan_is_refused_by_the_service_with_nothing_written(
    sim, sim_curves, cells, formation_plant
):
    curve = sim_curves[0][0]
    voltage = curve.voltage_v.copy()
    voltage[7] = math.nan
    run = services.RunInput(
        unit=cells[0],
        station=formation_plant.stations["form"],
        source_run_id="R1",
        steps=[
            services.StepInput(
                sequence=1,
                step_type="cc_charge",
                started_at=timezone.now() - timedelta(days=3),
                curve=services.CurveInput(
                    time_s=curve.time_s, voltage_v=voltage, current_a=curve.current_a,
                    capacity_ah=curve.capacity_ah,
                ),
            )
        ],
    )  # fmt: skip

    with pytest.raises(InvalidInput) as err:
        services.formation_run_record(run=run)

    assert err.value.field == "steps[0].arrays.voltage_v"
    assert err.value.message == "voltage_v has 1 NaN or infinite value(s), the first at sample 7."
    assert (CyclerRun.objects.count(), StepResult.objects.count()) == (0, 0)


def test_derived_step_results_come_from_the_samples(sim, sim_curves, cells, formation_plant):
    curve, rec = sim_curves[0][3], sim.step_records(0)[3]
    started = timezone.now() - timedelta(days=3)
    run = services.RunInput(
        unit=cells[0],
        station=formation_plant.stations["form"],
        source_run_id="R2",
        steps=[
            services.StepInput(
                sequence=1, step_type="cc_discharge", started_at=started,
                curve=services.CurveInput(
                    time_s=curve.time_s - rec.t_start_s, voltage_v=curve.voltage_v,
                    current_a=curve.current_a, capacity_ah=curve.capacity_ah,
                    temperature_c=curve.temperature_c,
                ),
            )
        ],
    )  # fmt: skip

    recorded = services.formation_run_record(run=run)

    [step] = recorded.steps
    assert recorded.created
    assert step.step_type == "discharge"
    assert step.ended_at == started + timedelta(seconds=rec.duration_s)
    assert step.duration_s == pytest.approx(rec.duration_s, abs=1e-6)
    assert step.capacity_ah == pytest.approx(rec.capacity_ah, rel=1e-6)
    assert step.energy_wh == pytest.approx(rec.energy_wh, rel=2e-3)  # trapezoid of V·|I|
    assert step.end_voltage_v == pytest.approx(rec.v_end_v, abs=1e-6)
    assert step.temperature_max_c == pytest.approx(rec.temperature_max_c, abs=1e-5)
    assert (step.cv_time_s, step.tail_current_a) == (None, None)


# --- the simulator feed ------------------------------------------------------------------------


def _char(station, code, unit, nominal, lsl, usl):
    return Characteristic.objects.create(
        station=station, code=code, name=code, unit=unit, nominal=nominal, lsl=lsl, usl=usl,
        measurement_method="test", sample_size=1, sample_frequency="100 %",
        reaction_plan="Hold.", special_class=SpecialCharacteristic.SC,
    )  # fmt: skip


@pytest.fixture
def made_cells(formation_plant):
    """Ten cells that passed the formation station 20 days ago, and the control plan of the
    aging and grading stations."""
    st = formation_plant.stations
    _char(st["grade"], "discharge-capacity", "Ah", 106.5, 103.0, 110.0)
    _char(st["grade"], "dcir", "mΩ", 0.75, 0.50, 1.00)
    _char(st["aging"], "k-value", "mV/day", 0.08, None, 0.20)
    _char(st["aging"], "ocv", "mV", 3650.0, 3620.0, 3680.0)
    t0 = timezone.now() - timedelta(days=20)
    cells = []
    for i in range(10):
        cell = Unit.objects.create(
            kind=UnitKind.CELL, serial=f"P1260{i:07d}", line=formation_plant.line,
            produced_at=t0 + timedelta(minutes=i),
        )  # fmt: skip
        StationVisit.objects.create(
            unit=cell, station=st["form"], started_at=t0 + timedelta(hours=25, minutes=i)
        )
        cells.append(cell)
    return cells


def test_the_simulator_forms_ages_and_grades_the_cells_the_line_made(
    made_cells, formation_plant, engineer
):
    report = demo.formation_simulate(
        line=formation_plant.line, seed=5, defect_rate=0.0, actor=engineer
    )

    assert (report.cells, report.waiting, report.runs, report.rejected) == (10, 0, 10, [])
    assert (report.readings, report.tray_loads, report.graded) == (150, 2, 10)
    assert sum(report.bins.values()) == 10
    assert CyclerRun.objects.count() == 10
    assert StepResult.objects.count() == 150
    assert AgingReading.objects.count() == 150
    assert TrayLoad.objects.count() == 10
    assert CyclerRun.objects.filter(tray_load__isnull=False).count() == 10
    run = CyclerRun.objects.get(unit=made_cells[3])
    assert run.started_at == StationVisit.objects.get(unit=made_cells[3]).started_at
    assert (run.equipment.code, run.channel, run.tray, run.position) == (
        "fc-01", "b1/p04", "T00001", "4",
    )  # fmt: skip
    first_reading = AgingReading.objects.filter(unit=made_cells[3]).earliest("measured_at")
    assert first_reading.measured_at >= run.ended_at + demo.TRANSFER
    assert GradingRuleSet.objects.get(state=RuleSetState.ACTIVE).name == (
        f"{formation_plant.line.code} control plan grading"
    )
    assert CellGrade.objects.count() == 10
    assert report.summary().startswith(
        f"{formation_plant.line.code}: formation and aging of 10 cells (prismatic_105ah): "
        "10 runs, 150 aging readings in"
    )

    again = demo.formation_simulate(line=formation_plant.line, seed=5, actor=engineer)

    assert (again.cells, again.runs) == (0, 0)
    assert CyclerRun.objects.count() == 10


def test_cells_still_in_aging_wait_for_a_later_call(made_cells, formation_plant, engineer):
    report = demo.formation_simulate(
        line=formation_plant.line, seed=5, actor=engineer,
        end_at=timezone.now() - timedelta(days=15),
    )  # fmt: skip

    assert (report.cells, report.waiting, report.runs) == (0, 10, 0)
    assert (CyclerRun.objects.count(), AgingReading.objects.count()) == (0, 0)


def test_without_a_quality_engineer_the_records_go_in_ungraded(made_cells, formation_plant):
    report = demo.formation_simulate(line=formation_plant.line, seed=5, actor=None)

    assert report.runs == 10
    assert report.not_graded == (
        "no grading rules in force and no quality engineer to put them in force"
    )
    assert CellFeatures.objects.count() == 10
    assert CellGrade.objects.count() == 0


def test_the_simulator_takes_a_cells_upstream_history_from_its_measurements(thread):
    plant = thread.plant
    station = plant.stations["fill"]
    chars = {
        code: _char(station, code, unit, nominal, None, nominal * 2)
        for code, unit, nominal in (
            ("fill-mass", "g", 158.0),
            ("terminal-weld-resistance", "µΩ", 15.0),
            ("cathode-moisture", "ppm", 150.0),
            ("cathode-areal-loading", "mg/cm²", 23.0),
        )
    }
    cell = thread.cell(3)  # cathode SC-260303-001-L1-R2 [12, 18) = mother metres [1512, 1518)
    now = timezone.now()

    def measure(unit, code, value, position_m=None):
        Measurement.objects.create(
            unit=unit, characteristic=chars[code], station=station, value=value, in_spec=True,
            measured_at=now, position_m=position_m,
        )  # fmt: skip

    measure(cell, "fill-mass", 160.2)
    measure(cell, "terminal-weld-resistance", 21.0)
    measure(thread["SC-260303-001-L1-R2"], "cathode-moisture", 200.0)
    measure(thread["SC-260303-001-L1-R2"], "cathode-moisture", 220.0)
    mother = thread["CC-260303-001"]
    measure(mother, "cathode-areal-loading", 22.1, position_m=1000.0)  # not this cell's metres
    measure(mother, "cathode-areal-loading", 23.31, position_m=1515.0)
    measure(mother, "cathode-areal-loading", 23.05, position_m=1525.0)

    ups = demo._upstream([cell, thread.cell(14)], "prismatic_105ah")

    assert ups[0].fill_mass_g == 160.2
    assert ups[0].weld_resistance_uohm == 21.0
    assert ups[0].cathode_moisture_ppm == 210.0
    assert ups[0].cathode_loading_mg_cm2 == 23.31
    assert ups[0].anode_loading_mg_cm2 == 14.5  # nothing measured: the nominal
    assert ups[1].fill_mass_g == 158.0
    assert ups[1].cathode_loading_mg_cm2 == 23.0
    assert (ups[0].electrode_lot, ups[1].electrode_lot) == (0, 1)


def test_a_line_without_a_simulated_product_is_left_alone(formation_plant):
    pouch = Line.objects.filter(pk=formation_plant.line.pk)
    pouch.update(cell_format="pouch")

    report = demo.formation_simulate(line=pouch.get(), seed=1)

    assert (report.cells, report.not_graded) == (0, "no simulated product for Pouch cells")


# --- tasks and the grading command -------------------------------------------------------------


@pytest.mark.usefixtures("celery_eager")
def test_the_tasks_compute_and_grade_by_cell_ids(population, formation_plant, engineer):
    from formation.tasks import cells_grade_task, features_compute_task

    ids = [u.pk for u in population.values()]
    _rules(formation_plant.line, engineer)

    assert features_compute_task.delay(cell_ids=ids).get() == 36
    assert cells_grade_task.delay(cell_ids=ids).get() == 36
    assert cells_grade_task.delay(cell_ids=ids).get() == 36  # safe to repeat
    assert CellGrade.objects.count() == 36


def test_the_grading_command_grades_what_is_not_graded(population, formation_plant, engineer):
    from io import StringIO

    from django.core.management import call_command

    _rules(formation_plant.line, engineer)
    young = _aged_cells(formation_plant.line, {"LF": [0.08]}, days=2)
    out = StringIO()

    call_command("formation_grade", stdout=out)
    call_command("formation_grade", stdout=out)

    assert out.getvalue().splitlines() == [
        "37 cells: 36 graded, 2 failed (2 on the K screen).",
        "    1 not graded: no K-value yet (2 aging readings, 3 needed)",
        "1 cells: 0 graded, 0 failed (0 on the K screen).",
        "    1 not graded: no K-value yet (2 aging readings, 3 needed)",
    ]
    assert CellGrade.objects.count() == 36
    assert not CellGrade.objects.filter(unit=young["P1LF00000"]).exists()
