"""Real-time evaluation of subgroup charts: consecutive cells, time windows, electrolyte lots
and coils; and a late value that lands inside a subgroup already closed."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from genealogy.choices import UnitKind
from genealogy.models import Measurement
from genealogy.services import lot_consume, unit_create
from spc import queries
from spc.engine import Limits, evaluate_stream
from spc.models import SpcAlarm
from spc.services import (
    chart_config_get_or_create,
    chart_config_update,
    limits_approve,
    limits_propose,
    spc_evaluate,
)
from tests.spc.conftest import SIGMA_AREAL, SIGMA_FILL_G, episodes, normal

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]


def _approve(char, qe, record, *, changes, values, start, step_s, units=None):
    config = chart_config_get_or_create(characteristic=char)
    chart_config_update(config=config, actor=qe, reason="subgroup chart", **changes)
    record(char, values, start=start, step_s=step_s, units=units)
    end = start + timedelta(seconds=step_s * len(values))
    draft = limits_propose(characteristic=char, baseline_from=start, baseline_to=end, actor=qe)
    return limits_approve(limits=draft, actor=qe, reason="baseline", monitor_from=end)


def _engine_keys(limits, rows, *, keys=None, timestamps=None):
    """The engine's signals on the stream, keyed like alarms (the subgroup's last value)."""
    config = queries.chart_config_for(limits.characteristic)
    mconfig = queries.monitor_config(config, Limits.from_dict(limits.engine_limits))
    result = evaluate_stream(
        mconfig, np.array([r.value for r in rows]), keys=keys, timestamps=timestamps
    )
    bounds = {g.index: g for g in result.subgroups}
    return episodes(result.signals, lambda i: rows[bounds[i].stop - 1].id)


def _alarm_keys(limits):
    return sorted(
        SpcAlarm.objects.filter(limits=limits).values_list(
            "statistic", "rule", "chart_index", "trigger_measurement_id", "last_chart_index"
        )
    )


def _lots(record, first, count, cells_per_lot):
    """Electrolyte lots, each filled into ``cells_per_lot`` new cells, in production order."""
    cells = []
    for n in range(first, first + count):
        lot = unit_create(
            kind=UnitKind.MATERIAL_LOT,
            serial=f"ELY-E12-{n:06d}",
            material="Electrolyte E12 (1.2 M LiPF6)",
            supplier="Soulbrain",
            actor=record.actor,
        )
        for cell in record.cells(cells_per_lot):
            lot_consume(lot=lot, consumer=cell, quantity=5.0, quantity_unit="g", actor=record.actor)
            cells.append(cell)
    return cells


@pytest.mark.parametrize(
    "mode",
    ["consecutive", "time_window", "per_lot"],
)
def test_subgroup_alarms_are_the_engines_signals(
    fill, qe, record, t0, phase2_start, django_capture_on_commit_callbacks, mode
):
    """Given fill-mass limits on an X-bar chart with subgroups of 5 consecutive cells, of
    10-minute windows, or of the cells of one electrolyte lot, when a stream with a 1.5 sigma
    shift in its second half arrives in batches through the event path, then the alarms are
    exactly the engine's signals on the whole stream, each on the subgroup's last value
    (continuing patterns grouped as one alarm)."""
    changes = {
        "consecutive": {"chart_type": "xbar_r", "subgroup_size": 5},
        "time_window": {
            "chart_type": "xbar_s",
            "subgroup_mode": "time_window",
            "subgroup_window_s": 600,
        },
        "per_lot": {"chart_type": "xbar_s", "subgroup_mode": "per_lot"},
    }[mode]
    size = 8 if mode == "per_lot" else 120
    baseline_units = _lots(record, 1, 12, 8) if mode == "per_lot" else None
    limits = _approve(
        fill,
        qe,
        record,
        changes=changes,
        values=normal(101, 96 if mode == "per_lot" else size * 2, 5.0, SIGMA_FILL_G),
        start=t0,
        step_s=60,
        units=baseline_units,
    )
    count = 96 if mode == "per_lot" else 240
    values = normal(102, count, 5.0, SIGMA_FILL_G)
    values[count // 2 :] += 1.5 * SIGMA_FILL_G
    units = _lots(record, 100, count // 8, 8) if mode == "per_lot" else record.cells(count)
    for b in range(0, count, 48):
        with django_capture_on_commit_callbacks(execute=True):
            record(
                fill,
                values[b : b + 48],
                start=phase2_start + timedelta(seconds=45 * b),
                step_s=45,
                units=units[b : b + 48],
            )

    rows = list(
        queries.stream_rows(
            fill.pk, changes.get("subgroup_mode", "consecutive"), start=phase2_start
        )
    )
    expected = _engine_keys(
        limits,
        rows,
        keys=[r.key for r in rows] if mode == "per_lot" else None,
        timestamps=[r.measured_at for r in rows] if mode == "time_window" else None,
    )
    assert {s for s, *_ in expected} >= {"xbar"}  # the shift is seen on X-bar
    assert _alarm_keys(limits) == expected
    if mode == "per_lot":
        assert rows[0].key == "ELY-E12-000100"


def test_a_late_value_inside_a_closed_coil_subgroup_re_evaluates_that_coil(
    line, qe, record, t0, phase2_start, django_capture_on_commit_callbacks
):
    """Cathode areal weight on X-bar-S, one subgroup per coil. Coil 15's 20 profile values
    average 2.5 sigma(X-bar) above the centre: in control. After coils 16-18 have closed
    it, the gauge's buffered value from the middle of coil 15 (+4 sigma) arrives: the coil's
    mean becomes 3.31 sigma(X-bar) above the centre for n = 21, beyond the UCL, and the
    alarm names that coil's 21 values, the late one included."""
    areal = line.chars["areal_weight"]
    coils = record.coils(1, 12)
    limits = _approve(
        areal,
        qe,
        record,
        changes={
            "chart_type": "xbar_s",
            "subgroup_mode": "per_unit",
            "rules": [1],
            "cusum_enabled": False,
        },
        values=normal(3, 240, 23.0, SIGMA_AREAL),
        start=t0,
        step_s=3,
        units=[c for c in coils for _ in range(20)],
    )
    centre, sigma = limits.centre, limits.sigma
    phase2 = record.coils(13, 6)
    values = []
    for i, _coil in enumerate(phase2):
        z = np.random.default_rng(200 + i).normal(0.0, 1.0, 20)
        z = (z - z.mean()) / z.std(ddof=1) * 0.8  # a calm coil, mean exactly on centre
        if i == 2:  # coil 15
            z += 2.5 / np.sqrt(20)  # the mean at +2.5 sigma(X-bar)
        values.extend(centre + sigma * z)
    with django_capture_on_commit_callbacks(execute=True):
        record(
            areal,
            values,
            start=phase2_start,
            step_s=3,
            units=[c for c in phase2 for _ in range(20)],
        )
    assert not SpcAlarm.objects.filter(limits=limits, statistic="xbar").exists()

    late_at = phase2_start + timedelta(seconds=3 * (40 + 10) - 1)  # between coil 15's 10th/11th
    with django_capture_on_commit_callbacks(execute=True):
        (late,) = record(areal, [centre + 4 * sigma], start=late_at, units=[phase2[2]])

    alarm = SpcAlarm.objects.get(limits=limits, statistic="xbar", rule="nelson_1")
    coil_15 = list(Measurement.objects.filter(unit=phase2[2]).order_by("measured_at", "pk"))
    assert len(coil_15) == 21
    assert [p["measurement_id"] for p in alarm.points] == [m.pk for m in coil_15]
    assert late.pk in {p["measurement_id"] for p in alarm.points}
    assert {p["index"] for p in alarm.points} == {2}  # the 3rd coil since the approval
    assert alarm.last_measurement_id == coil_15[-1].pk
    assert (alarm.direction, alarm.severity) == (1, "major")  # SC characteristic
    assert alarm.statistic_value == pytest.approx(centre + sigma * (2.5 * np.sqrt(20) + 4) / 21)
    again = spc_evaluate(characteristic_id=areal.pk, since=late_at)
    assert again.new_alarm_ids == ()
