"""c charts in the product: a characteristic whose values are counts of nonconformities per
constant inspection unit (particles per 10 m of cathode coil), configured, given Phase I
limits (c-bar +- 3 sqrt(c-bar)), approved, evaluated after each batch, alarmed, drawn and
summarised without a capability study; values that are not counts refused, naming them.

Phase I runs on Montgomery's circuit-board example (26 samples of 100 boards; c-bar =
19.85, samples 6 and 20 beyond the UCL; revised c-bar = 19.67, UCL = 32.97, LCL = 6.36),
recorded as the defect counts of 26 consecutive 10 m windows of one coil.
"""

from __future__ import annotations

import html
import math
import re
from datetime import timedelta

import numpy as np
import pytest
from django.db import IntegrityError, transaction

from qms.choices import SpecialCharacteristic
from qms.exceptions import InvalidInput, Refused
from qms.models import Characteristic
from spc import queries, views
from spc.choices import ChartType, LimitsStatus
from spc.engine import Limits, RuleSet, evaluate_attribute
from spc.models import ChartCheckpoint, ChartConfig, ControlLimits, SpcAlarm
from spc.services import (
    chart_config_ensure,
    chart_config_get_or_create,
    chart_config_update,
    limits_approve,
    limits_propose,
    spc_evaluate,
)
from tests.factories import UserFactory
from tests.spc.montgomery import CIRCUIT_BOARDS

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]

CONFIG_COLUMNS = (
    "chart_type",
    "subgroup_mode",
    "subgroup_size",
    "rule_preset",
    "rules",
    "cusum_enabled",
    "ewma_enabled",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def particles(line):
    """Particles found by the cathode coater's camera in each 10 m of coil."""
    return Characteristic.objects.create(
        station=line.stations["coat-c"],
        code="cathode-particles-per-10m",
        name="Cathode coating particles per 10 m",
        unit="defects/10 m",
        nominal=0.0,
        lsl=0.0,
        measurement_method="inline line-scan vision, 100 %",
        sample_size=1,
        sample_frequency="every 10 m of coil",
        reaction_plan="Check slot die and slurry filter; hold the suspect window.",
        special_class=SpecialCharacteristic.NONE,
    )


@pytest.fixture
def counted(particles, qe):
    """The particle characteristic charted as a c chart."""
    config = chart_config_get_or_create(characteristic=particles)
    return chart_config_update(config=config, actor=qe, reason="counts of vision", chart_type="c")


@pytest.fixture
def coil(record):
    return record.coils(1, 1)[0]


def windows(record, characteristic, coil, counts, *, start):
    """Counts of consecutive 10 m windows of ``coil``, one a minute from ``start``."""
    return record(characteristic, counts, start=start, step_s=60, units=[coil] * len(counts))


@pytest.fixture
def boards(counted, record, coil, t0):
    """Montgomery's 26 circuit-board counts as the baseline windows."""
    return windows(record, counted.characteristic, coil, CIRCUIT_BOARDS, start=t0)


@pytest.fixture
def approved(boards, counted, qe, t0):
    """The revised limits (samples 6 and 20 excluded with their cause), approved."""
    end = t0 + timedelta(minutes=26)
    excluded = [
        {"measurement_id": boards[5].pk, "reason": "new inspector on the rework bench"},
        {"measurement_id": boards[19].pk, "reason": "temperature control of the wave solder"},
    ]
    draft = limits_propose(
        characteristic=counted.characteristic,
        baseline_from=t0,
        baseline_to=end,
        excluded=excluded,
        actor=qe,
    )
    return limits_approve(limits=draft, actor=qe, reason="Baseline of week 48", monitor_from=end)


def _config_row(characteristic) -> dict:
    return ChartConfig.objects.filter(characteristic=characteristic).values().get()


def poisson_cdf(k: int, mean: float) -> float:
    """P(X <= k) for a Poisson count, summed term by term."""
    term = total = math.exp(-mean)
    for i in range(1, k + 1):
        term *= mean / i
        total += term
    return total if k >= 0 else 0.0


# ---------------------------------------------------------------------- configuration


def test_switching_to_a_c_chart_plots_one_count_per_point_with_rule_1_and_no_detectors(
    particles, qe
):
    config = chart_config_get_or_create(characteristic=particles)

    chart_config_update(config=config, actor=qe, reason="defect counts", chart_type="c")

    row = _config_row(particles)
    assert tuple(row[name] for name in CONFIG_COLUMNS) == (
        "c",
        "consecutive",
        1,
        "custom",
        [1],
        False,
        False,
    )
    latest = config.history.order_by("-history_id").first()
    assert (latest.history_user, latest.history_change_reason) == (qe, "defect counts")
    assert ChartType.C.label == "c chart (nonconformities per inspection unit)"


def test_a_c_chart_keeps_the_rules_the_engineer_chooses(particles, qe):
    config = chart_config_get_or_create(characteristic=particles)

    chart_config_update(config=config, actor=qe, chart_type="c", rule_preset="western_electric")

    row = _config_row(particles)
    assert (row["rule_preset"], row["rules"]) == ("western_electric", [1, 2, 5, 6])
    assert (row["cusum_enabled"], row["ewma_enabled"]) == (False, False)


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"chart_type": "c", "subgroup_size": 5}, "subgroup_size", "one count per inspection"),
        ({"chart_type": "c", "subgroup_mode": "per_unit"}, "subgroup_mode", "takes no subgroups"),
        ({"chart_type": "c", "cusum_enabled": True}, "cusum_enabled", "CUSUM assumes normal"),
        ({"chart_type": "c", "ewma_enabled": True}, "ewma_enabled", "EWMA assumes normal"),
        ({"chart_type": "u"}, "chart_type", "use one of i_mr, xbar_r, xbar_s, c"),
    ],
)
def test_c_chart_refusals_name_the_field_and_write_nothing(particles, qe, changes, field, text):
    config = chart_config_get_or_create(characteristic=particles)
    before = _config_row(particles)

    with pytest.raises(InvalidInput) as refused:
        chart_config_update(config=config, actor=qe, **changes)

    assert refused.value.field == field
    assert text in refused.value.message
    assert _config_row(particles) == before
    assert config.history.count() == 1


def test_a_detector_is_refused_on_a_c_chart_already_configured(counted, qe):
    before = _config_row(counted.characteristic)

    with pytest.raises(InvalidInput) as refused:
        chart_config_update(config=counted, actor=qe, cusum_enabled=True)

    assert refused.value.field == "cusum_enabled"
    assert _config_row(counted.characteristic) == before


@pytest.mark.parametrize(
    ("values", "constraint"),
    [
        ({"subgroup_size": 2}, "spc_config_c_one_count_per_point"),
        ({"cusum_enabled": True}, "spc_config_c_no_detectors"),
        ({"ewma_enabled": True}, "spc_config_c_no_detectors"),
    ],
)
def test_the_database_refuses_a_c_chart_with_subgroups_or_detectors(particles, values, constraint):
    base = {
        "chart_type": "c",
        "subgroup_mode": "consecutive",
        "subgroup_size": 1,
        "cusum_enabled": False,
        "ewma_enabled": False,
    }
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        ChartConfig.objects.create(characteristic=particles, **{**base, **values})
    assert not ChartConfig.objects.filter(characteristic=particles).exists()


def test_chart_config_ensure_makes_the_c_chart_once_and_leaves_it_alone_after(particles, qe):
    made = chart_config_ensure(
        characteristic=particles, reason="vision feed", chart_type="c", rules=[1]
    )
    chart_config_update(config=made, actor=qe, reason="more rules", rules=[1, 2])

    again = chart_config_ensure(characteristic=particles, reason="vision feed", chart_type="c")

    assert again.pk == made.pk
    row = _config_row(particles)
    assert tuple(row[name] for name in CONFIG_COLUMNS) == (
        "c",
        "consecutive",
        1,
        "custom",
        [1, 2],
        False,
        False,
    )
    assert [h.history_change_reason for h in made.history.order_by("history_id")] == [
        "vision feed",
        "more rules",
    ]


def test_chart_config_ensure_refuses_an_unknown_field_and_writes_nothing(particles):
    with pytest.raises(InvalidInput) as refused:
        chart_config_ensure(characteristic=particles, reason="vision feed", colour="red")

    assert refused.value.field == "colour"
    assert not ChartConfig.objects.filter(characteristic=particles).exists()


# ------------------------------------------------------------------------ Phase I limits


def test_phase_1_on_the_circuit_boards_proposes_samples_6_and_20_then_the_revised_limits(
    boards, counted, qe, t0
):
    characteristic = counted.characteristic
    end = t0 + timedelta(minutes=26)

    first = limits_propose(
        characteristic=characteristic, baseline_from=t0, baseline_to=end, actor=qe
    )

    assert first.chart_type == "c"
    assert first.centre == pytest.approx(516 / 26, abs=1e-12)
    assert first.sigma == pytest.approx(math.sqrt(516 / 26), abs=1e-12)
    c_bar = 516 / 26
    assert (first.lcl, first.ucl) == pytest.approx(
        (c_bar - 3 * math.sqrt(c_bar), c_bar + 3 * math.sqrt(c_bar)), abs=1e-12
    )
    # Montgomery prints 6.48 and 33.22, from c-bar rounded to 19.85.
    assert (round(first.lcl, 2), first.ucl) == (6.48, pytest.approx(33.22, abs=0.01))
    assert (first.subgroup_size, first.subgroups_used, first.values_used) == (1, None, 26)
    assert [p["measurement_ids"] for p in first.proposed_exclusions] == [
        [boards[5].pk],
        [boards[19].pk],
    ]
    assert [[s["rule"] for s in p["signals"]] for p in first.proposed_exclusions] == [
        ["nelson_1"],
        ["nelson_1"],
    ]

    second = limits_propose(
        characteristic=characteristic,
        baseline_from=t0,
        baseline_to=end,
        excluded=[(boards[5].pk, "new inspector"), (boards[19].pk, "wave solder temperature")],
        actor=qe,
    )

    assert second.pk == first.pk and second.version == 1
    assert second.centre == pytest.approx(472 / 24, abs=1e-12)
    assert (round(second.lcl, 2), round(second.ucl, 2)) == (6.36, 32.97)
    assert (second.values_used, second.baseline_values, second.proposed_exclusions) == (24, 26, [])
    assert second.engine_limits["sigma_method"] == "poisson"
    assert second.engine_limits["statistics"] == [
        {"statistic": "c", "centre": second.centre, "lcl": second.lcl, "ucl": second.ucl}
    ]


@pytest.mark.parametrize(("bad", "what"), [(-1.0, "negative"), (2.5, "not a whole number")])
def test_a_baseline_value_that_is_not_a_count_is_refused_naming_it(
    counted, record, coil, qe, t0, bad, what
):
    counts = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2]
    counts[7] = bad
    rows = windows(record, counted.characteristic, coil, counts, start=t0)

    with pytest.raises(InvalidInput) as refused:
        limits_propose(
            characteristic=counted.characteristic,
            baseline_from=t0,
            baseline_to=t0 + timedelta(minutes=22),
            actor=qe,
        )

    assert refused.value.field == "baseline[7].value"
    assert f"Measurement {rows[7].pk} " in refused.value.message
    assert what in refused.value.message
    assert not ControlLimits.objects.exists()


def test_too_few_windows_are_refused_with_the_minimum(counted, record, coil, qe, t0):
    windows(record, counted.characteristic, coil, [2, 0, 1, 3, 1], start=t0)

    with pytest.raises(Refused) as refused:
        limits_propose(
            characteristic=counted.characteristic,
            baseline_from=t0,
            baseline_to=t0 + timedelta(minutes=5),
            actor=qe,
        )

    assert (refused.value.field, refused.value.code) == ("baseline", "insufficient_data")
    assert "a c chart needs at least 20 included samples; have 5" in refused.value.message
    assert not ControlLimits.objects.exists()


def test_a_baseline_without_a_defect_cannot_be_approved(counted, record, coil, qe, t0):
    windows(record, counted.characteristic, coil, [0] * 30, start=t0)
    draft = limits_propose(
        characteristic=counted.characteristic,
        baseline_from=t0,
        baseline_to=t0 + timedelta(minutes=30),
        actor=qe,
    )
    assert (draft.degenerate, draft.centre, draft.lcl, draft.ucl) == (True, 0.0, 0.0, 0.0)

    with pytest.raises(Refused) as refused:
        limits_approve(limits=draft, actor=qe, reason="zero defects")

    assert (refused.value.field, refused.value.code) == ("sigma", "no_variation")
    assert "no nonconformities (c-bar = 0)" in refused.value.message
    draft.refresh_from_db()
    assert draft.status == LimitsStatus.DRAFT


# -------------------------------------------------------------------- Phase II and alarms


def test_each_batch_is_evaluated_and_a_burst_raises_one_rule_1_alarm(
    approved, counted, record, coil, phase2_start, django_capture_on_commit_callbacks
):
    """Given the approved revised limits (UCL 32.97), when 40 windows at c-bar come in (seed
    31) and then a window with 36 particles, the evaluation after the batch raises exactly
    the engine's signal: rule 1 on the count of that window."""
    characteristic = counted.characteristic
    counts = np.random.default_rng(31).poisson(472 / 24, 41)
    counts[38] = 36
    with django_capture_on_commit_callbacks(execute=True):
        rows = windows(record, characteristic, coil, counts.tolist(), start=phase2_start)

    engine_limits = Limits.from_dict(approved.engine_limits)
    expected = evaluate_attribute(engine_limits, counts, rules=RuleSet([1])).signals
    alarms = list(SpcAlarm.objects.filter(characteristic=characteristic))
    assert [(s.rule, s.statistic, s.index) for s in expected] == [("nelson_1", "c", 38)]
    assert [(a.rule, a.statistic, a.chart_index, a.trigger_measurement_id) for a in alarms] == [
        ("nelson_1", "c", 38, rows[38].pk)
    ]
    alarm = alarms[0]
    assert (alarm.severity, alarm.direction, alarm.statistic_value) == ("major", 1, 36.0)
    assert alarm.rule_name == "Nelson 1: one point beyond the control limits"
    assert [(p["measurement_id"], p["value"], p["unit_id"]) for p in alarm.points] == [
        (rows[38].pk, 36.0, coil.pk)
    ]
    head = ChartCheckpoint.objects.get(characteristic=characteristic)
    assert head.position == 41
    assert head.state["config"]["cusum"] is None and head.state["config"]["ewma"] is None

    again = spc_evaluate(characteristic_id=characteristic.pk, since=phase2_start)
    assert (again.new_alarm_ids, again.values) == ((), 41)
    assert SpcAlarm.objects.count() == 1


def test_the_rules_chosen_for_a_c_chart_are_the_engines(
    approved, counted, qe, record, coil, phase2_start
):
    """With rule 2 chosen too, nine windows above c-bar in a row signal where the engine
    says, on the count statistic."""
    characteristic = counted.characteristic
    chart_config_update(config=counted, actor=qe, rules=[1, 2])
    counts = [18, 21, 17, 23, 22, 25, 21, 24, 20, 26, 22, 23, 17, 19]
    rows = windows(record, characteristic, coil, counts, start=phase2_start)

    spc_evaluate(characteristic_id=characteristic.pk)

    engine_limits = Limits.from_dict(approved.engine_limits)
    expected = evaluate_attribute(engine_limits, counts, rules=RuleSet([1, 2])).signals
    assert sorted({(s.rule, s.index) for s in expected}) == [
        ("nelson_2", 11),
    ]
    alarm = SpcAlarm.objects.get(characteristic=characteristic)
    assert (alarm.rule, alarm.statistic, alarm.chart_index, alarm.direction) == (
        "nelson_2",
        "c",
        11,
        1,
    )
    assert [p["measurement_id"] for p in alarm.points] == [r.pk for r in rows[3:12]]


@pytest.mark.parametrize(("bad", "what"), [(-2.0, "negative"), (0.5, "not a whole number")])
def test_a_value_that_is_not_a_count_stops_the_evaluation_naming_it(
    approved, counted, record, coil, phase2_start, bad, what
):
    characteristic = counted.characteristic
    counts = [19, 22, 40, bad, 18]
    rows = windows(record, characteristic, coil, counts, start=phase2_start)

    with pytest.raises(InvalidInput) as refused:
        spc_evaluate(characteristic_id=characteristic.pk)

    assert refused.value.field == "stream[3].value"
    assert f"Measurement {rows[3].pk} " in refused.value.message
    assert what in refused.value.message
    assert not SpcAlarm.objects.exists()
    assert not ChartCheckpoint.objects.exists()


# ------------------------------------------------------------- state, chart and the page


def test_the_state_has_no_capability_and_exact_poisson_arls(approved, counted):
    state = queries.characteristic_state(counted.characteristic)

    assert state["state"] == "in_control"
    assert state["chart_type"] == "c"
    assert state["capability"] == {
        "status": "not_applicable",
        "n": 26,
        "reason": queries.COUNTS_CAPABILITY,
    }
    arl = state["arl"]
    assert (arl["cusum"], arl["ewma"], arl["default_cusum"]) == (None, None, False)
    centre = 472 / 24
    shewhart = arl["shewhart_rule_1"]
    assert (shewhart["method"], shewhart["centre"], shewhart["lcl"], shewhart["ucl"]) == (
        "poisson",
        centre,
        approved.lcl,
        approved.ucl,
    )
    for shift, value in zip(arl["shifts_sigma"], shewhart["arl"], strict=True):
        mean = centre + shift * math.sqrt(centre)
        # UCL 32.97: 33 or more signals; LCL 6.36: 6 or fewer.
        chance = (1.0 - poisson_cdf(32, mean)) + poisson_cdf(6, mean)
        assert value == pytest.approx(1.0 / chance, rel=1e-9)
    whole = arl["whole_chart_arl0"]
    assert (whole["runs"], whole["method"]) == (200, "simulation (Poisson counts)")
    # Rule 1 alone: the simulation estimates the exact ARL, within four standard errors.
    assert abs(whole["value"] - shewhart["arl"][0]) < 4 * whole["standard_error"]


def test_without_limits_a_c_chart_has_no_arl_figures(counted):
    arl = queries.detector_arls(counted)

    assert (arl["shewhart_rule_1"], arl["whole_chart_arl0"], arl["cusum"]) == (None, None, None)


def test_chart_data_and_the_drawn_chart_plot_the_counts(
    approved, counted, record, coil, phase2_start
):
    characteristic = counted.characteristic
    counts = [19, 22, 36, 18]
    rows = windows(record, characteristic, coil, counts, start=phase2_start)
    spc_evaluate(characteristic_id=characteristic.pk)

    data = queries.chart_data(characteristic=characteristic, last=100)

    assert data["chart_type"] == "c"
    assert [(p["index"], p["measurement_ids"], p["values"]) for p in data["points"]] == [
        (i, [row.pk], {"c": float(count)})
        for i, (row, count) in enumerate(zip(rows, counts, strict=True))
    ]
    assert [(a["rule"], a["statistic"], a["first_index"]) for a in data["alarms"]] == [
        ("nelson_1", "c", 2)
    ]
    chart = views.chart_input(characteristic, data, approved, counted)
    assert (chart.values, chart.sizes, chart.dispersion, chart.cusum) == (
        [19.0, 22.0, 36.0, 18.0],
        None,
        None,
        None,
    )
    assert [(s.index, s.rule, s.statistic) for s in chart.signals] == [(2, "nelson_1", "c")]


def test_the_characteristic_page_shows_the_c_chart_and_says_capability_does_not_apply(
    approved, counted, record, coil, phase2_start, client
):
    characteristic = counted.characteristic
    windows(record, characteristic, coil, [19, 22, 36, 18], start=phase2_start)
    spc_evaluate(characteristic_id=characteristic.pk)
    client.force_login(UserFactory(username="qe-page", role="quality_engineer"))

    response = client.get(f"/spc/characteristics/{characteristic.pk}/")

    assert response.status_code == 200
    page = response.content.decode()
    title = re.search(r"<title>([^<]*)</title>", page[page.index('data-testid="chart"') :])
    assert html.unescape(title.group(1)) == (
        "cathode-particles-per-10m · Cathode coating particles per 10 m (defects/10 m): "
        "c chart, 4 points, 1 signals (N1 \N{MULTIPLICATION SIGN}1)"
    )
    status = re.search(r'data-testid="capability-status">([^<]*)<', page).group(1)
    assert html.unescape(status) == f"Not applicable: {queries.COUNTS_CAPABILITY}"
    assert "c chart (nonconformities per inspection unit)</dd>" in page
    assert 'data-detector="c chart, rule 1 only"' in page
    assert 'data-testid="counts-detectors"' in page


def test_the_page_says_why_a_chart_with_a_value_that_is_not_a_count_cannot_be_drawn(
    approved, counted, record, coil, phase2_start, client
):
    characteristic = counted.characteristic
    rows = windows(record, characteristic, coil, [19, -1, 18], start=phase2_start)
    client.force_login(UserFactory(username="qe-page", role="quality_engineer"))

    response = client.get(f"/spc/characteristics/{characteristic.pk}/")

    assert response.status_code == 200
    body = response.content.decode()
    error = re.search(r'<div class="alert alert-error" role="alert">([^<]*)</div>', body)
    assert html.unescape(error.group(1)) == (
        f"Measurement {rows[1].pk} (measured {rows[1].measured_at.isoformat()}) has the value "
        "-1, negative: a c chart counts nonconformities in one inspection unit, whole numbers "
        "of 0 or more."
    )
    assert 'data-testid="chart"' not in body
