"""Control chart constants, computed from their definitions, against the published table
(Montgomery, Introduction to SQC, Appendix Table VI; the same values as ASTM E2587)."""

import math

import pytest
from scipy import integrate, stats

from spc.engine import constants

SIZES = range(2, 26)
# Published to three decimals (c4 to four). A few D3/D4 entries of the printed table were
# derived from rounded d2 and d3 and differ from the exact value by one unit in the last
# place; the tolerance is one unit in the last place.
PUBLISHED = {
    "d2": [
        1.128, 1.693, 2.059, 2.326, 2.534, 2.704, 2.847, 2.970, 3.078, 3.173, 3.258, 3.336,
        3.407, 3.472, 3.532, 3.588, 3.640, 3.689, 3.735, 3.778, 3.819, 3.858, 3.895, 3.931,
    ],
    "d3": [
        0.853, 0.888, 0.880, 0.864, 0.848, 0.833, 0.820, 0.808, 0.797, 0.787, 0.778, 0.770,
        0.763, 0.756, 0.750, 0.744, 0.739, 0.734, 0.729, 0.724, 0.720, 0.716, 0.712, 0.708,
    ],
    "c4": [
        0.7979, 0.8862, 0.9213, 0.9400, 0.9515, 0.9594, 0.9650, 0.9693, 0.9727, 0.9754,
        0.9776, 0.9794, 0.9810, 0.9823, 0.9835, 0.9845, 0.9854, 0.9862, 0.9869, 0.9876,
        0.9882, 0.9887, 0.9892, 0.9896,
    ],
    "A2": [
        1.880, 1.023, 0.729, 0.577, 0.483, 0.419, 0.373, 0.337, 0.308, 0.285, 0.266, 0.249,
        0.235, 0.223, 0.212, 0.203, 0.194, 0.187, 0.180, 0.173, 0.167, 0.162, 0.157, 0.153,
    ],
    "A3": [
        2.659, 1.954, 1.628, 1.427, 1.287, 1.182, 1.099, 1.032, 0.975, 0.927, 0.886, 0.850,
        0.817, 0.789, 0.763, 0.739, 0.718, 0.698, 0.680, 0.663, 0.647, 0.633, 0.619, 0.606,
    ],
    "B3": [
        0, 0, 0, 0, 0.030, 0.118, 0.185, 0.239, 0.284, 0.321, 0.354, 0.382,
        0.406, 0.428, 0.448, 0.466, 0.482, 0.497, 0.510, 0.523, 0.534, 0.545, 0.555, 0.565,
    ],
    "B4": [
        3.267, 2.568, 2.266, 2.089, 1.970, 1.882, 1.815, 1.761, 1.716, 1.679, 1.646, 1.618,
        1.594, 1.572, 1.552, 1.534, 1.518, 1.503, 1.490, 1.477, 1.466, 1.455, 1.445, 1.435,
    ],
    "D3": [
        0, 0, 0, 0, 0, 0.076, 0.136, 0.184, 0.223, 0.256, 0.283, 0.307,
        0.328, 0.347, 0.363, 0.378, 0.391, 0.403, 0.415, 0.425, 0.434, 0.443, 0.451, 0.459,
    ],
    "D4": [
        3.267, 2.574, 2.282, 2.114, 2.004, 1.924, 1.864, 1.816, 1.777, 1.744, 1.717, 1.693,
        1.672, 1.653, 1.637, 1.622, 1.608, 1.597, 1.585, 1.575, 1.566, 1.557, 1.548, 1.541,
    ],
}  # fmt: skip


@pytest.mark.parametrize("column", sorted(PUBLISHED))
def test_every_published_constant_for_sizes_2_to_25(column):
    table = constants.table()
    tolerance = 1e-4 if column == "c4" else 1e-3
    for n, published in zip(SIZES, PUBLISHED[column], strict=True):
        assert table[n][column] == pytest.approx(published, abs=tolerance), (column, n)


def test_d2_and_d3_are_the_mean_and_sd_of_the_relative_range():
    # A second way: the range of n standard normal values has mean d2 and sd d3; for n = 2
    # both are known in closed form, R = |X1 - X2| with X1 - X2 ~ N(0, 2).
    assert constants.d2(2) == pytest.approx(2.0 / math.sqrt(math.pi), abs=1e-12)
    assert constants.d3(2) == pytest.approx(math.sqrt(2.0 - 4.0 / math.pi), abs=1e-9)
    # For n = 5, E[R] = E[max] - E[min] = 2 E[max], E[max] = integral of x n phi Phi^(n-1).
    expected_max, _ = integrate.quad(
        lambda x: x * 5 * stats.norm.pdf(x) * stats.norm.cdf(x) ** 4, -12, 12
    )
    assert constants.d2(5) == pytest.approx(2.0 * expected_max, abs=1e-9)


def test_c4_matches_the_gamma_formula_and_tends_to_one():
    assert constants.c4(2) == pytest.approx(math.sqrt(2.0 / math.pi), abs=1e-15)
    assert constants.c4(4) == pytest.approx(math.sqrt(2.0 / 3.0) * math.gamma(2) / math.gamma(1.5))
    assert constants.c4(10_000) == pytest.approx(1.0 - 1.0 / (4 * 10_000), abs=1e-8)


def test_factors_follow_from_d2_d3_c4():
    for n in (2, 5, 7, 25, 40):
        assert constants.factor("A2", n) == pytest.approx(3 / (constants.d2(n) * math.sqrt(n)))
        assert constants.factor("D4", n) == pytest.approx(1 + 3 * constants.d3(n) / constants.d2(n))
        assert constants.factor("B4", n) == pytest.approx(
            1 + 3 * math.sqrt(1 - constants.c4(n) ** 2) / constants.c4(n)
        )
    # Published 2.660 = 3 / 1.128 (the rounded d2); exactly 2.6587.
    assert constants.factor("E2", 2) == pytest.approx(2.660, abs=1.5e-3)
    assert constants.factor("A", 4) == 1.5
    assert constants.factor("D1", 7) == pytest.approx(0.204, abs=1e-3)
    assert constants.factor("D2", 7) == pytest.approx(5.204, abs=1e-3)


def test_sizes_below_two_and_unknown_factors_are_refused():
    with pytest.raises(ValueError, match="at least 2, got 1"):
        constants.d2(1)
    with pytest.raises(TypeError, match="must be an int"):
        constants.c4(2.5)
    with pytest.raises(ValueError, match="unknown chart factor 'A9'"):
        constants.factor("A9", 5)
