"""Phase I and Phase II of the Shewhart charts, against Montgomery's worked examples."""

import json
import math

import numpy as np
import pytest

from spc.engine import (
    BEYOND_LIMITS,
    NELSON,
    ChartType,
    Limits,
    NonFiniteValueError,
    constants,
    evaluate_attribute,
    evaluate_individuals,
    evaluate_subgroups,
    phase1_attribute,
    phase1_individuals,
    phase1_subgroups,
    standard_limits,
)
from tests.spc.montgomery import (
    CIRCUIT_BOARDS,
    COMPUTERS,
    LOAN_COSTS,
    ORANGE_JUICE,
    PISTON_MEANS,
    PISTON_RANGES,
    PISTON_RINGS,
)


def test_piston_ring_data_is_typed_as_published():
    # Every sample mean and range printed beside Table 6.3.
    rings = np.array(PISTON_RINGS)
    assert np.round(rings.mean(axis=1), 3).tolist() == PISTON_MEANS
    assert np.round(rings.max(axis=1) - rings.min(axis=1), 3).tolist() == PISTON_RANGES
    assert math.fsum(PISTON_RANGES) == pytest.approx(0.581, abs=1e-12)


def test_xbar_r_phase1_piston_rings():
    result = phase1_subgroups("xbar_r", PISTON_RINGS)

    limits = result.limits
    assert result.status == "ok"
    assert result.converged
    assert result.proposed_exclusions == ()
    assert result.signals == ()
    assert limits.chart is ChartType.XBAR_R
    assert (limits.n, limits.baseline_size, limits.sigma_method) == (5, 25, "r_bar/d2")
    # Montgomery: x-double-bar = 74.001, R-bar = 0.023, UCL = 74.014, LCL = 73.988 (from
    # A2 = 0.577 and the rounded R-bar), R chart UCL = D4 R-bar = 0.049, LCL = 0.
    assert round(limits.centre, 3) == 74.001
    r_chart = limits.statistic("r")
    assert r_chart.centre == pytest.approx(0.581 / 25, abs=1e-12)
    xbar = limits.statistic("xbar")
    assert xbar.ucl == pytest.approx(74.014, abs=1e-3)
    assert xbar.lcl == pytest.approx(73.988, abs=1e-3)
    assert r_chart.ucl == pytest.approx(0.049, abs=5e-4)
    assert r_chart.lcl == 0.0
    # Exactly the textbook formulas with the exact constants.
    r_bar = 0.581 / 25
    assert xbar.ucl == pytest.approx(limits.centre + constants.factor("A2", 5) * r_bar, abs=1e-12)
    assert r_chart.ucl == pytest.approx(constants.factor("D4", 5) * r_bar, abs=1e-12)
    # sigma-hat = R-bar / d2 = 0.023 / 2.326 = 0.0099 (Montgomery, section 6.2.1).
    assert limits.sigma == pytest.approx(0.0099, abs=1e-4)
    assert result.warnings == ()


def test_xbar_s_phase1_piston_rings():
    result = phase1_subgroups("xbar_s", PISTON_RINGS)

    limits = result.limits
    assert result.converged
    assert limits.sigma_method == "s_bar/c4"
    s_bar = limits.statistic("s").centre
    # Montgomery, X-bar and S charts for the piston rings: S-bar = 0.0094, UCL = 74.014,
    # LCL = 73.988; S chart UCL = B4 S-bar = 0.0196, LCL = 0.
    assert s_bar == pytest.approx(0.0094, abs=5e-5)
    assert limits.statistic("xbar").ucl == pytest.approx(74.014, abs=1e-3)
    assert limits.statistic("xbar").lcl == pytest.approx(73.988, abs=1e-3)
    assert limits.statistic("s").ucl == pytest.approx(0.0196, abs=5e-5)
    assert limits.statistic("s").lcl == 0.0
    assert limits.statistic("xbar").ucl == pytest.approx(
        limits.centre + constants.factor("A3", 5) * s_bar, abs=1e-12
    )
    assert limits.statistic("s").ucl == pytest.approx(constants.factor("B4", 5) * s_bar, abs=1e-12)


def test_xbar_s_pools_subgroups_of_different_sizes():
    groups = [
        [10.0, 10.2, 9.9],
        [10.1, 9.8, 10.3, 10.0],
        [9.9, 10.1],
        [10.2, 10.0, 9.8, 10.1, 10.0],
    ]

    result = phase1_subgroups("xbar_s", groups)

    sizes = np.array([len(g) for g in groups])
    sds = np.array([np.std(g, ddof=1) for g in groups])
    pooled = math.sqrt(((sizes - 1) * sds**2).sum() / (sizes - 1).sum())
    assert result.limits.sigma_method == "pooled_s/c4"
    assert result.limits.n is None
    assert result.limits.sigma == pytest.approx(pooled / constants.c4(int((sizes - 1).sum()) + 1))
    assert result.limits.centre == pytest.approx(sum(sum(g) for g in groups) / sizes.sum())
    # Each subgroup is evaluated at its own size.
    xbar = result.evaluation.series["xbar"]
    assert xbar.ucl.tolist() == pytest.approx(
        (result.limits.centre + 3 * result.limits.sigma / np.sqrt(sizes)).tolist()
    )


def test_xbar_r_refuses_subgroups_of_different_sizes():
    with pytest.raises(ValueError, match="one subgroup size; sizes here range from 2 to 3"):
        phase1_subgroups("xbar_r", [[1.0, 2.0, 3.0], [1.0, 2.0]])


def test_individuals_phase1_mortgage_costs():
    result = phase1_individuals(LOAN_COSTS)

    limits = result.limits
    # Montgomery, individuals chart of the loan costs: x-bar = 300.5, MR-bar = 7.79,
    # UCL = 321.22, LCL = 279.78, MR chart UCL = D4 MR-bar = 25.45.
    assert limits.centre == 300.5
    assert limits.statistic("mr").centre == pytest.approx(148 / 19, abs=1e-12)
    assert limits.statistic("x").ucl == pytest.approx(321.22, abs=0.02)
    assert limits.statistic("x").lcl == pytest.approx(279.78, abs=0.02)
    assert limits.statistic("mr").ucl == pytest.approx(25.45, abs=0.01)
    assert limits.statistic("mr").lcl == 0.0
    assert limits.sigma == pytest.approx((148 / 19) / constants.d2(2), abs=1e-12)
    assert result.converged
    assert result.warnings == (
        "limits from 20 values; 100 or more are recommended before the limits are frozen",
    )


def test_individuals_exclusion_drops_the_moving_ranges_of_the_point():
    values = [10.0, 10.2, 9.9, 14.0, 10.1, 10.0, 9.8, 10.2, 10.1, 9.9, 10.0, 10.1]

    first = phase1_individuals(values)

    assert first.proposed_exclusions == (3,)
    assert first.limits.statistic("mr").centre == pytest.approx(
        np.abs(np.diff(values)).mean(), abs=1e-12
    )

    second = phase1_individuals(values, excluded=first.proposed_exclusions)

    kept = [v for i, v in enumerate(values) if i != 3]
    # The ranges 9.9 -> 14.0 and 14.0 -> 10.1 go; 9.9 -> 10.1 is not a moving range.
    ranges = [abs(values[i] - values[i - 1]) for i in range(1, len(values)) if i not in (3, 4)]
    assert second.limits.centre == pytest.approx(sum(kept) / len(kept), abs=1e-12)
    assert second.limits.statistic("mr").centre == pytest.approx(sum(ranges) / 9, abs=1e-12)
    assert second.limits.excluded == (3,)
    assert second.limits.baseline_size == 11
    assert second.converged
    assert second.evaluation.series["mr"].index.tolist() == [1, 2, 5, 6, 7, 8, 9, 10, 11]


def test_p_chart_phase1_iterations_orange_juice_cans():
    # Montgomery, p chart of the orange juice cans: samples 15 and 23 are beyond the trial
    # UCL and have assignable causes; with them excluded, sample 21 is beyond the revised UCL
    # but no cause is found and it is kept.
    first = phase1_attribute("p", ORANGE_JUICE, [50] * 30)

    assert first.limits.centre == pytest.approx(347 / 1500, abs=1e-12)
    assert round(first.limits.centre, 4) == 0.2313
    assert first.limits.statistic("p").ucl == pytest.approx(0.4102, abs=1e-4)
    assert first.limits.statistic("p").lcl == pytest.approx(0.0524, abs=1e-4)
    assert first.proposed_exclusions == (14, 22)
    assert [(s.index, s.direction) for s in first.signals] == [(14, 1), (22, 1)]

    second = phase1_attribute("p", ORANGE_JUICE, [50] * 30, excluded=first.proposed_exclusions)

    assert second.limits.centre == pytest.approx(301 / 1400, abs=1e-12)
    assert second.limits.statistic("p").ucl == pytest.approx(0.3893, abs=1e-4)
    assert second.limits.statistic("p").lcl == pytest.approx(0.0407, abs=1e-4)
    assert second.limits.excluded == (14, 22)
    assert second.limits.baseline_size == 28
    assert second.proposed_exclusions == (20,)
    assert not second.converged
    # The engineer declines: the limits of this iteration are the ones frozen.
    assert json.loads(json.dumps(second.limits.to_dict()))["excluded"] == [14, 22]


def test_np_chart_is_the_p_chart_times_n():
    p_result = phase1_attribute("p", ORANGE_JUICE, [50] * 30)
    np_result = phase1_attribute("np", ORANGE_JUICE, 50)

    assert np_result.limits.statistic("np").centre == pytest.approx(50 * 347 / 1500)
    assert np_result.limits.statistic("np").ucl == pytest.approx(
        50 * p_result.limits.statistic("p").ucl, abs=1e-12
    )
    assert np_result.proposed_exclusions == p_result.proposed_exclusions


def test_p_chart_with_variable_sample_sizes_gives_each_sample_its_limits():
    counts, sizes = [3, 5, 2, 8, 4], [100, 150, 80, 200, 120]

    result = phase1_attribute("p", counts, sizes)

    p_bar = 22 / 650
    expected = p_bar + 3 * np.sqrt(p_bar * (1 - p_bar) / np.array(sizes))
    series = result.evaluation.series["p"]
    assert result.limits.n is None
    assert series.value.tolist() == pytest.approx(
        [c / n for c, n in zip(counts, sizes, strict=True)]
    )
    assert series.ucl.tolist() == pytest.approx(expected.tolist(), abs=1e-15)
    assert series.lcl.tolist() == [0.0] * 5


def test_c_chart_phase1_circuit_boards():
    # Montgomery, c chart of the circuit boards: c-bar = 19.85, UCL = 33.22, LCL = 6.48;
    # samples 6 and 20 are out of control; revised c-bar = 19.67, UCL = 32.97, LCL = 6.36.
    first = phase1_attribute("c", CIRCUIT_BOARDS)

    assert first.limits.centre == pytest.approx(516 / 26, abs=1e-12)
    assert first.limits.statistic("c").ucl == pytest.approx(33.22, abs=0.01)  # from c = 19.85
    assert first.limits.statistic("c").lcl == pytest.approx(6.48, abs=0.005)
    assert first.proposed_exclusions == (5, 19)

    second = phase1_attribute("c", CIRCUIT_BOARDS, excluded=(5, 19))

    assert second.limits.centre == pytest.approx(472 / 24, abs=1e-12)
    assert second.limits.statistic("c").ucl == pytest.approx(32.97, abs=0.005)
    assert second.limits.statistic("c").lcl == pytest.approx(6.36, abs=0.005)
    assert second.converged


def test_u_chart_phase1_personal_computers():
    # Montgomery, u chart of the personal computers: u-bar = 1.93, UCL = 3.79, LCL = 0.07,
    # in control.
    result = phase1_attribute("u", COMPUTERS, [5] * 20)

    assert result.limits.centre == pytest.approx(1.93, abs=1e-12)
    assert result.limits.statistic("u").ucl == pytest.approx(3.79, abs=0.005)
    assert result.limits.statistic("u").lcl == pytest.approx(0.07, abs=0.005)
    assert result.converged


def test_c_chart_refuses_varying_inspection_units():
    with pytest.raises(ValueError, match="use a u chart"):
        phase1_attribute("c", [3, 4], [1, 2])


def test_attribute_inputs_are_checked():
    with pytest.raises(ValueError, match=r"counts\[1\] \(60.0\) exceeds its sample size \(50.0\)"):
        phase1_attribute("p", [3, 60], [50, 50])
    with pytest.raises(ValueError, match=r"counts\[0\] is negative"):
        phase1_attribute("c", [-1, 2])
    with pytest.raises(ValueError, match=r"sizes\[1\] must be positive"):
        phase1_attribute("u", [1, 2], [3, 0])
    with pytest.raises(ValueError, match="needs the sample sizes"):
        phase1_attribute("p", [1, 2])
    with pytest.raises(NonFiniteValueError, match=r"counts\[2\] is not a finite number"):
        phase1_attribute("c", [1, 2, float("nan")])


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: phase1_individuals([3.61]), "have 1 values and 0 moving ranges"),
        (
            lambda: phase1_individuals([3.61, 3.62, 3.60], excluded=[1]),
            "have 2 values and 0 moving ranges",
        ),
        (
            lambda: phase1_subgroups("xbar_r", [[1.0, 2.0]]),
            "needs at least 2 included subgroups; have 1",
        ),
        (
            lambda: phase1_attribute("p", [1, 2, 3], [50, 50, 50], excluded=[0, 1]),
            "needs at least 2 included samples; have 1",
        ),
    ],
)
def test_too_little_data_is_an_explicit_result(call, reason):
    result = call()

    assert result.status == "insufficient_data"
    assert result.limits is None
    assert reason in result.reason
    assert result.proposed_exclusions == ()
    assert not result.converged


def test_constant_baseline_gives_degenerate_limits_and_no_nan():
    result = phase1_individuals([3.6] * 30)

    limits = result.limits
    assert limits.degenerate
    assert limits.sigma == 0.0
    assert {(s.centre, s.lcl, s.ucl) for s in limits.statistics} == {
        (3.6, 3.6, 3.6),
        (0.0, 0.0, 0.0),
    }
    assert "no variation in the baseline" in limits.note
    assert limits.note in result.warnings
    assert result.proposed_exclusions == ()

    later = evaluate_individuals(limits, [3.6] * 20 + [3.61, 3.6], rules=NELSON)

    assert [(s.rule, s.statistic, s.index) for s in later.signals] == [
        ("nelson_1", "x", 20),
        ("nelson_1", "mr", 20),
        ("nelson_1", "mr", 21),
    ]
    for series in later.series.values():
        for array in (series.value, series.centre, series.lcl, series.ucl):
            assert np.isfinite(array).all()


def test_zero_defect_baseline_signals_the_first_defect_only():
    result = phase1_attribute("p", [0] * 25, [200] * 25)

    assert result.limits.degenerate
    assert result.limits.note == (
        "no nonconforming units in the baseline: the limits collapse onto the centre line"
    )
    later = evaluate_attribute(result.limits, [0] * 30 + [1] + [0] * 10, [200] * 41)

    assert [(s.rule, s.index, s.direction) for s in later.signals] == [("nelson_1", 30, 1)]


def test_non_finite_values_are_refused_naming_the_index():
    with pytest.raises(
        NonFiniteValueError, match=r"values\[2\] is not a finite number \(nan\)"
    ) as error:
        phase1_individuals([1.0, 2.0, float("nan"), 3.0])
    assert error.value.index == 2
    with pytest.raises(
        NonFiniteValueError, match=r"subgroups\[1\]\[1\] is not a finite number \(inf\)"
    ):
        phase1_subgroups("xbar_s", [[1.0, 2.0], [3.0, float("inf")]])
    limits = standard_limits("i_mr", centre=0.0, sigma=1.0)
    with pytest.raises(NonFiniteValueError, match=r"values\[104\]") as error:
        evaluate_individuals(limits, [0.0, float("-inf")], first_index=103)
    assert error.value.index == 104


def test_excluded_positions_must_exist():
    with pytest.raises(ValueError, match=r"excluded position 20 is outside 0\.\.19"):
        phase1_individuals(LOAN_COSTS, excluded=[20])
    with pytest.raises(ValueError, match="integer positions"):
        phase1_individuals(LOAN_COSTS, excluded=["3"])


def test_limits_round_trip_through_json_and_stay_frozen():
    limits = phase1_subgroups("xbar_r", PISTON_RINGS, excluded=[13]).limits

    restored = Limits.from_dict(json.loads(json.dumps(limits.to_dict())))

    assert restored == limits
    assert hash(restored) == hash(limits)
    with pytest.raises(AttributeError):
        limits.centre = 75.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown limits format"):
        Limits.from_dict({**limits.to_dict(), "format": 99})


def test_standard_limits_from_a_target_and_known_sigma():
    ocv = standard_limits("i_mr", centre=3620.0, sigma=2.0)
    xbar = standard_limits("xbar_r", centre=3620.0, sigma=2.0, n=5)
    p = standard_limits("p", centre=0.01, n=500)

    assert (ocv.statistic("x").lcl, ocv.statistic("x").ucl) == (3614.0, 3626.0)
    assert ocv.statistic("mr").ucl == pytest.approx((constants.d2(2) + 3 * constants.d3(2)) * 2.0)
    assert xbar.statistic("xbar").ucl == pytest.approx(3620.0 + 3 * 2.0 / math.sqrt(5))
    assert xbar.statistic("r").centre == pytest.approx(constants.d2(5) * 2.0)
    assert xbar.statistic("r").ucl == pytest.approx(constants.factor("D2", 5) * 2.0)
    assert p.statistic("p").ucl == pytest.approx(0.01 + 3 * math.sqrt(0.01 * 0.99 / 500))
    assert p.statistic("p").lcl == 0.0
    with pytest.raises(ValueError, match="needs the sample size n"):
        standard_limits("u", centre=1.5)
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        standard_limits("i_mr", centre=1.0, sigma=-1.0)
    with pytest.raises(ValueError, match="sigma_multiple must be a finite number > 0"):
        standard_limits("i_mr", centre=1.0, sigma=1.0, sigma_multiple=0.0)
    with pytest.raises(ValueError, match=r"mr_span must be an int within 2\.\.25"):
        phase1_individuals(LOAN_COSTS, mr_span=1)


def test_phase2_subgroups_signal_shifts_and_spread_with_their_own_sizes():
    limits = standard_limits("xbar_r", centre=74.0, sigma=0.01, n=5)

    def subgroup(mean, half_range=0.01):
        return [
            mean - half_range,
            mean - half_range / 2,
            mean,
            mean + half_range / 2,
            mean + half_range,
        ]

    groups = [
        subgroup(74.0),
        subgroup(74.02),
        subgroup(74.0, half_range=0.03),
        [74.0, 74.004, 73.996],
    ]

    result = evaluate_subgroups(limits, groups, first_index=40)

    # 74.02 is beyond 74 + 3 (0.01) / sqrt(5) = 74.0134; a range of 0.06 beyond
    # (d2 + 3 d3) sigma = 0.0492.
    assert [(s.rule, s.statistic, s.index, s.direction) for s in result.signals] == [
        ("nelson_1", "xbar", 41, 1),
        ("nelson_1", "r", 42, 1),
    ]
    xbar = result.series["xbar"]
    assert xbar.index.tolist() == [40, 41, 42, 43]
    assert xbar.ucl[3] == pytest.approx(74.0 + 3 * 0.01 / math.sqrt(3))
    assert result.series["r"].ucl[3] == pytest.approx(constants.factor("D2", 3) * 0.01)


def test_phase2_individuals_apply_rules_and_moving_range_rule_1():
    limits = standard_limits("i_mr", centre=0.0, sigma=1.0)
    values = [0.5] * 9 + [0.0, 5.0, 0.0]

    result = evaluate_individuals(limits, values, rules=NELSON, dispersion_rules=BEYOND_LIMITS)

    assert [(s.rule, s.statistic, s.index) for s in result.signals] == [
        ("nelson_2", "x", 8),
        ("nelson_1", "x", 10),
        ("nelson_1", "mr", 10),
        ("nelson_1", "mr", 11),
    ]
    assert result.signals[0].involved == tuple(range(9))
    assert result.series["mr"].index.tolist() == list(range(1, 12))


def test_evaluation_refuses_limits_of_another_chart():
    limits = standard_limits("c", centre=4.0)
    with pytest.raises(ValueError, match="limits are for a c chart, not i_mr"):
        evaluate_individuals(limits, [1.0])
    with pytest.raises(ValueError, match="not a subgroup chart"):
        evaluate_subgroups(limits, [[1.0, 2.0]])
