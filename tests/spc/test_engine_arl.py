"""ARL of the detectors: Markov chain against published tables, Monte Carlo cross-checks,
tuning, and the default drift detector's guarantees."""

import itertools
import math

import pytest

from spc.engine import (
    DEFAULT_CUSUM,
    NELSON,
    WESTERN_ELECTRIC,
    CusumSpec,
    EwmaSpec,
    ShewhartSpec,
    arl,
    arl_convergence,
    arl_monte_carlo,
    tune_cusum_h,
    tune_ewma_l,
)
from spc.engine.arl import _cusum_two_sided_chain
from spc.engine.detectors import DEFAULT_CUSUM_H

SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
# Montgomery Table 9.3 (two-sided tabular CUSUM, k = 1/2), from Hawkins (1993).
CUSUM_H4 = (168, 74.2, 26.6, 13.3, 8.38, 4.75, 3.34, 2.62, 2.19, 1.71)
CUSUM_H5 = (465, 139, 38.0, 17.0, 10.4, 5.75, 4.01, 3.11, 2.57, 2.01)
# Lucas & Saccucci (1990), also in Montgomery section 9.2: lam = 0.10, L = 2.814.
EWMA_010 = {0.0: 500, 0.5: 31.3, 1.0: 10.3, 1.5: 6.09, 2.0: 4.36, 3.0: 2.87}


@pytest.mark.parametrize(("h", "published"), [(4.0, CUSUM_H4), (5.0, CUSUM_H5)])
def test_cusum_arl_matches_the_published_table(h, published):
    spec = CusumSpec(k=0.5, h=h)
    for shift, value in zip(SHIFTS, published, strict=True):
        # Published to three significant figures.
        assert arl(spec, shift) == pytest.approx(value, rel=6e-3), shift


def test_ewma_arl_matches_lucas_and_saccucci():
    spec = EwmaSpec(lam=0.1, L=2.814)
    for shift, value in EWMA_010.items():
        assert arl(spec, shift) == pytest.approx(value, rel=6e-3), shift


def test_shewhart_individuals_arl():
    assert arl(ShewhartSpec(), 0.0) == pytest.approx(370.4, abs=0.05)
    assert arl(ShewhartSpec(), 1.5) == pytest.approx(14.97, abs=0.01)
    assert arl(ShewhartSpec(), 1.0) == pytest.approx(43.89, abs=0.01)


def test_markov_chain_converges_as_one_over_n_squared():
    table = arl_convergence(DEFAULT_CUSUM, 0.0)

    steps = [b - a for a, b in itertools.pairwise(table["arl"])]
    assert table["states"] == [50, 100, 200, 400, 800]
    assert all(step > 0 for step in steps)  # rises towards the limit
    for previous, step in itertools.pairwise(steps):
        assert previous / step == pytest.approx(4.0, rel=0.1)  # halving w quarters the error
    assert table["change"] < 2e-5
    assert table["richardson"] == pytest.approx(370.57, abs=0.01)


def test_two_sided_chain_agrees_with_lucas_crosier_without_head_start():
    spec = CusumSpec(k=0.5, h=4.0)
    for shift in (0.0, 1.0):
        pair_chain = _cusum_two_sided_chain(spec, shift, 60)
        one_sided = arl(spec, shift, states=60)
        assert pair_chain == pytest.approx(one_sided, rel=1e-10)


@pytest.mark.parametrize(
    ("detector", "shift"),
    [
        (DEFAULT_CUSUM, 0.0),
        (DEFAULT_CUSUM, 1.5),
        (CusumSpec(k=0.75, h=3.379, head_start=1.6895), 0.0),
        (EwmaSpec(lam=0.1, L=2.814), 1.0),
        (ShewhartSpec(), 1.5),
        (CusumSpec(k=0.5, h=4.0, sides="upper"), 0.5),
    ],
)
def test_monte_carlo_agrees_with_the_markov_chain(detector, shift):
    simulated = arl_monte_carlo(detector, shift, runs=20_000, seed=11)

    expected = arl(detector, shift)
    assert simulated.censored == 0
    assert simulated.runs == 20_000
    # Standard error of a mean run length: about ARL / sqrt(runs).
    assert simulated.standard_error == pytest.approx(
        expected / math.sqrt(20_000), rel=0.15 if shift == 0.0 else 1.0
    )
    assert abs(simulated.arl - expected) < 4 * simulated.standard_error


def test_western_electric_and_nelson_rule_sets_by_simulation():
    we = arl_monte_carlo(WESTERN_ELECTRIC, 0.0, runs=2_000, seed=5)
    nelson = arl_monte_carlo(NELSON, 0.0, runs=2_000, seed=5)

    # Champ & Woodall (1987): the four Western Electric rules have ARL0 = 91.75.
    assert abs(we.arl - 91.75) < 4 * we.standard_error
    # All eight Nelson rules raise false alarms more often still.
    assert nelson.arl < we.arl


def test_default_detector_meets_its_error_rates():
    assert arl(DEFAULT_CUSUM, 0.0) >= 370.0
    assert arl(DEFAULT_CUSUM, 1.5) <= 5.5
    assert arl(DEFAULT_CUSUM, 1.5) == pytest.approx(5.18, abs=0.005)
    # Against the Shewhart individuals chart with the same false-alarm rate: three times
    # faster at 1.5 sigma.
    assert arl(ShewhartSpec(), 1.5) / arl(DEFAULT_CUSUM, 1.5) > 2.8


def test_tuning_recovers_the_published_designs():
    assert tune_cusum_h(0.5, 168.0) == pytest.approx(4.0, abs=0.01)
    assert tune_ewma_l(0.1, 500.0) == pytest.approx(2.814, abs=0.002)
    tuned = tune_cusum_h(0.75, 370.0)
    assert tuned == pytest.approx(3.339, abs=0.001)
    assert tuned <= DEFAULT_CUSUM_H < tuned + 0.002


def test_head_start_needs_a_wider_interval_for_the_same_arl0():
    tuned = tune_cusum_h(0.75, 370.0, head_start_fraction=0.5, states=40)

    assert tuned == pytest.approx(3.38, abs=0.01)
    fir = CusumSpec(k=0.75, h=3.379, head_start=3.379 / 2)
    assert arl(fir, 0.0) >= 370.0
    assert arl(fir, 1.5) < arl(DEFAULT_CUSUM, 1.5)


def test_bad_arl_requests_are_refused():
    with pytest.raises(ValueError, match="shift must be a finite number"):
        arl(DEFAULT_CUSUM, float("nan"))
    with pytest.raises(ValueError, match="runs must be at least 2"):
        arl_monte_carlo(DEFAULT_CUSUM, runs=1)
    with pytest.raises(ValueError, match="target_arl0 must exceed 1"):
        tune_cusum_h(0.5, 0.5)
    with pytest.raises(TypeError, match="no ARL for"):
        arl("cusum")  # type: ignore[arg-type]
