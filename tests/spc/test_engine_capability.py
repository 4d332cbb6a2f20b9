"""Capability indices, their intervals, normality and the non-normal percentile method."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from spc.engine import (
    NonFiniteValueError,
    anderson_darling,
    capability,
    percentile_capability,
    phase1_subgroups,
)
from tests.spc.montgomery import PISTON_RINGS

Z975 = 1.959963984540054


def test_piston_ring_capability_cp_from_r_bar():
    limits = phase1_subgroups("xbar_r", PISTON_RINGS).limits
    values = np.array(PISTON_RINGS).ravel()

    result = capability(
        values,
        lsl=73.95,
        usl=74.05,
        sigma_within=limits.sigma,
        sigma_within_method=limits.sigma_method,
        within_df=0.9 * 25 * 4,
    )

    # Montgomery section 8.3.2: Cp = (74.05 - 73.95) / (6 x 0.0099) = 1.68.
    cp = result.index("Cp")
    assert cp.value == pytest.approx(1.68, abs=0.015)
    assert cp.value == pytest.approx(0.1 / (6 * limits.sigma), rel=1e-12)
    assert result.sigma_within_method == "r_bar/d2"
    assert result.status == "ok"
    assert result.normality.normal
    assert result.nonnormal is None
    assert result.warnings == ()


def test_cp_chi_square_interval_montgomery_example():
    # Montgomery section 8.3: n = 20, Cp = 1.33 -> 0.91 <= Cp <= 1.75 (95 %); the same from
    # the tabulated chi-square quantiles 8.907 and 32.852 with 19 degrees of freedom.
    rng = np.random.default_rng(4)
    values = rng.normal(5.0, 0.025, 20)
    sigma = 0.2 / (6 * 1.33)

    result = capability(values, lsl=4.9, usl=5.1, sigma_within=sigma)

    cp = result.index("Cp")
    assert cp.value == pytest.approx(1.33, abs=1e-12)
    assert cp.lower == pytest.approx(1.33 * math.sqrt(8.907 / 19), abs=1e-3)
    assert cp.upper == pytest.approx(1.33 * math.sqrt(32.852 / 19), abs=1e-3)
    assert round(cp.lower, 2) == 0.91
    assert round(cp.upper, 2) == 1.75


def test_cpk_and_ppk_bissell_intervals_and_overall_sigma():
    fill_mass = [
        5.012, 4.987, 5.021, 4.995, 5.003, 4.978, 5.030, 5.008, 4.991, 5.015,
        5.002, 4.984, 5.026, 4.999, 5.011, 4.970, 5.019, 5.006, 4.989, 5.013,
        4.997, 5.024, 4.982, 5.009, 5.001, 4.993, 5.017, 4.986, 5.028, 5.004,
    ]  # fmt: skip
    n = len(fill_mass)
    mean = sum(fill_mass) / n
    s = float(np.std(fill_mass, ddof=1))

    result = capability(fill_mass, lsl=4.90, usl=5.10, target=5.00)

    ppk = result.index("Ppk")
    expected = min(5.10 - mean, mean - 4.90) / (3 * s)
    half = Z975 * math.sqrt(1 / (9 * n) + expected**2 / (2 * (n - 1)))
    assert ppk.value == pytest.approx(expected, rel=1e-12)
    assert (ppk.lower, ppk.upper) == pytest.approx((expected - half, expected + half), rel=1e-9)
    moving = np.abs(np.diff(fill_mass)).mean() / 1.1283791670955126
    assert result.sigma_within == pytest.approx(moving, rel=1e-12)
    assert result.index("Cpk").value == pytest.approx(
        min(5.10 - mean, mean - 4.90) / (3 * moving), rel=1e-12
    )
    assert result.index("Pp").value == pytest.approx(0.2 / (6 * s), rel=1e-12)
    # Cpm (Chan, Cheng & Spiring) with the Boyles interval.
    tau = math.sqrt(sum((v - 5.0) ** 2 for v in fill_mass) / (n - 1))
    ratio = (mean - 5.0) / s
    dof = n * (1 + ratio**2) ** 2 / (1 + 2 * ratio**2)
    cpm = result.index("Cpm")
    assert cpm.value == pytest.approx(0.2 / (6 * tau), rel=1e-12)
    assert cpm.lower == pytest.approx(cpm.value * math.sqrt(stats.chi2.ppf(0.025, dof) / dof))
    assert result.warnings == (
        f"fewer than 100 values: the Ppk interval is wide ({ppk.lower:.3g} to {ppk.upper:.3g})",
    )


def test_one_sided_specification_gives_one_sided_indices():
    rng = np.random.default_rng(8)
    insulation = rng.normal(550.0, 40.0, 150)  # MOhm, only a lower limit

    result = capability(insulation, lsl=100.0)

    assert result.index("Cp").value is None
    assert result.index("Cp").reason == "needs both specification limits"
    assert result.index("Cpu").reason == "no specification limit on this side"
    assert result.index("Cpk").value == result.index("Cpl").value
    assert result.index("Ppk").value == result.index("Ppl").value
    assert result.index("Cpm").value is None
    assert result.target is None
    assert result.index("Cpl").lower < result.index("Cpl").value < result.index("Cpl").upper


def test_anderson_darling_statistic_and_p_value():
    rng = np.random.default_rng(21)
    normal = rng.normal(3620.0, 2.0, 200)
    skewed = rng.lognormal(math.log(0.05), 0.4, 200)

    ok = anderson_darling(normal)
    bad = anderson_darling(skewed)

    assert ok.statistic == pytest.approx(
        stats.anderson(normal, method="interpolate").statistic, rel=1e-9
    )
    assert ok.adjusted == pytest.approx(ok.statistic * (1 + 0.75 / 200 + 2.25 / 200**2))
    assert ok.normal and ok.p_value > 0.05
    assert not bad.normal and bad.p_value < 0.001
    with pytest.raises(ValueError, match="at least 8 values"):
        anderson_darling([1.0, 2.0, 3.0])


def test_percentile_method_on_lognormal_self_discharge():
    # K-value (mV/day) of aged cells: lognormal, only an upper limit.
    rng = np.random.default_rng(2024)
    median, shape = 0.045, 0.3
    k_values = rng.lognormal(math.log(median), shape, 3000)

    result = capability(k_values, usl=0.10)

    assert not result.normality.normal
    assert result.nonnormal is not None
    assert result.nonnormal.distribution == "lognormal"
    truth = stats.lognorm(shape, 0, median)
    true_ppu = (0.10 - median) / (truth.ppf(0.99865) - median)
    assert result.nonnormal.index("Ppu").value == pytest.approx(true_ppu, rel=0.05)
    assert result.nonnormal.index("Ppk").value == result.nonnormal.index("Ppu").value
    assert result.nonnormal.index("Pp").value is None
    # The normal-theory Ppk overstates this process.
    assert result.index("Ppk").value > 1.1 * result.nonnormal.index("Ppk").value
    assert any("do not look normal" in w for w in result.warnings)
    assert set(result.nonnormal.candidates) == {"normal", "lognormal", "weibull", "gamma"}


def test_percentile_method_equals_normal_theory_for_a_normal_fit():
    rng = np.random.default_rng(3)
    values = rng.normal(70.0, 0.3, 500)  # cell mass, g

    result = percentile_capability(values, lsl=68.5, usl=71.5, distribution="normal")

    mean, s = values.mean(), values.std(ddof=1)
    assert result.distribution == "normal"
    assert result.index("Ppk").value == pytest.approx(
        min(71.5 - mean, mean - 68.5) / (3 * s), rel=1e-4
    )
    assert result.index("Pp").value == pytest.approx(3.0 / (6 * s), rel=1e-4)


def test_positive_only_distributions_are_skipped_for_negative_values():
    rng = np.random.default_rng(6)
    offsets = rng.normal(0.0, 0.1, 100)  # label offset, mm

    result = percentile_capability(offsets, lsl=-0.5, usl=0.5)

    assert result.distribution == "normal"
    assert result.candidates["lognormal"] is None
    assert result.candidates["gamma"] is None
    with pytest.raises(ValueError, match="cannot be fitted"):
        percentile_capability(offsets, usl=0.5, distribution="weibull")


def test_constant_data_has_undefined_capability_with_a_reason():
    result = capability([5.0] * 40, lsl=4.9, usl=5.1)

    assert result.status == "no_variation"
    assert result.reason == "no variation: all 40 values equal 5.0, capability is undefined"
    assert all(index.value is None for index in result.indices)
    assert {index.reason for index in result.indices} == {result.reason}
    json.dumps(result.to_dict(), allow_nan=False)  # nothing non-finite leaks out


def test_small_samples_are_flagged():
    one = capability([5.0], lsl=4.9, usl=5.1)
    few = capability([5.01, 4.99, 5.02, 4.98, 5.00], lsl=4.9, usl=5.1)

    assert one.status == "insufficient_data"
    assert one.reason == "capability needs at least 2 values, got 1"
    assert one.indices == ()
    assert few.status == "ok"
    assert few.normality is None
    assert few.warnings[0] == "only 5 values: indices are rough estimates (30 or more recommended)"
    assert few.warnings[-1] == "too few values for a normality test (8 needed)"
    json.dumps(few.to_dict(), allow_nan=False)


def test_bad_capability_requests_are_refused():
    with pytest.raises(ValueError, match="at least one specification limit"):
        capability([1.0, 2.0])
    with pytest.raises(ValueError, match=r"lsl \(5.0\) must be below usl \(4.0\)"):
        capability([1.0, 2.0], lsl=5.0, usl=4.0)
    with pytest.raises(ValueError, match=r"target 6\.0 lies outside"):
        capability([1.0, 2.0], lsl=0.0, usl=5.0, target=6.0)
    with pytest.raises(NonFiniteValueError, match=r"values\[1\] is not a finite number"):
        capability([1.0, float("nan")], usl=5.0)
    with pytest.raises(ValueError, match="unknown distribution 'cauchy'"):
        percentile_capability(np.arange(1.0, 20.0), usl=30.0, distribution="cauchy")
