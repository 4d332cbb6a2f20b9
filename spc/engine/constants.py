"""Control chart constants computed from their definitions, for any subgroup size n >= 2.

The published tables (Montgomery, *Introduction to Statistical Quality Control*, Appendix
Table VI; ASTM E2587) list these to three or four decimals for n = 2..25. Here they are
computed, not typed in, so every size has full precision and the tests compare against
the published table:

* ``d2(n)`` = E[R] / sigma for n normal values: the expected relative range,
  ``integral over x of 1 - Phi(x)^n - (1 - Phi(x))^n`` (numerical quadrature);
* ``d3(n)`` = sd[R] / sigma, from E[R^2] = 2 * double integral over x < y of
  ``1 - Phi(y)^n - (1 - Phi(x))^n + (Phi(y) - Phi(x))^n`` (Tippett 1925);
* ``c4(n)`` = E[s] / sigma = sqrt(2 / (n - 1)) * Gamma(n / 2) / Gamma((n - 1) / 2);

and from them, with L = 3:

===========  ==========================================  ==================================
constant     formula                                     used for
===========  ==========================================  ==================================
A            3 / sqrt(n)                                 X-bar limits from a known sigma
A2           3 / (d2 sqrt(n))                            X-bar limits from R-bar
A3           3 / (c4 sqrt(n))                            X-bar limits from S-bar
B3, B4       max(0, 1 -/+ 3 sqrt(1 - c4^2) / c4)         S chart limits from S-bar
B5, B6       max(0, c4 -/+ 3 sqrt(1 - c4^2))             S chart limits from a known sigma
D1, D2       max(0, d2 -/+ 3 d3)                         R chart limits from a known sigma
D3, D4       max(0, 1 -/+ 3 d3 / d2)                     R chart limits from R-bar
E2           3 / d2                                      individuals limits from MR-bar
===========  ==========================================  ==================================

``d2``, ``d3`` and ``c4`` are cached: each size is integrated once per process. The
factors are read as ``factor("A2", 5)``.
"""

from __future__ import annotations

import math
from functools import cache

from spc.engine._lazy import lazy

integrate = lazy("scipy.integrate")
special = lazy("scipy.special")


__all__ = ["FACTOR_NAMES", "MAX_TABLE_N", "MIN_N", "c4", "d2", "d3", "factor", "table"]

#: Smallest subgroup size with a range or standard deviation.
MIN_N = 2
#: Largest size in the published tables; larger sizes are computed the same way.
MAX_TABLE_N = 25
# The standard normal is negligible beyond +/-12 for every integrand below (Phi(-12) ~ 2e-33).
_BOUND = 12.0


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"subgroup size must be an int, got {n!r}")
    if n < MIN_N:
        raise ValueError(f"subgroup size must be at least {MIN_N}, got {n}")
    return n


@cache
def d2(n: int) -> float:
    """E[R] / sigma for a subgroup of n normal values."""
    _check_n(n)
    phi = special.ndtr

    def integrand(x: float) -> float:
        return 1.0 - phi(x) ** n - phi(-x) ** n

    value, _ = integrate.quad(integrand, -_BOUND, _BOUND, epsabs=1e-13, epsrel=1e-13, limit=200)
    return float(value)


@cache
def _range_second_moment(n: int) -> float:
    phi = special.ndtr

    def integrand(x: float, y: float) -> float:
        return 1.0 - phi(y) ** n - phi(-x) ** n + (phi(y) - phi(x)) ** n

    # Outer variable y, inner x < y.
    value, _ = integrate.dblquad(
        integrand, -_BOUND, _BOUND, -_BOUND, lambda y: y, epsabs=1e-11, epsrel=1e-11
    )
    return 2.0 * float(value)


@cache
def d3(n: int) -> float:
    """sd[R] / sigma for a subgroup of n normal values."""
    _check_n(n)
    return math.sqrt(_range_second_moment(n) - d2(n) ** 2)


@cache
def c4(n: int) -> float:
    """E[s] / sigma for n normal values (s with n - 1 in the denominator)."""
    _check_n(n)
    # gammaln keeps large n finite.
    return math.sqrt(2.0 / (n - 1)) * math.exp(math.lgamma(n / 2.0) - math.lgamma((n - 1) / 2.0))


_FACTORS = {
    "A": lambda n: 3.0 / math.sqrt(n),
    "A2": lambda n: 3.0 / (d2(n) * math.sqrt(n)),
    "A3": lambda n: 3.0 / (c4(n) * math.sqrt(n)),
    "B3": lambda n: max(0.0, 1.0 - 3.0 * math.sqrt(1.0 - c4(n) ** 2) / c4(n)),
    "B4": lambda n: 1.0 + 3.0 * math.sqrt(1.0 - c4(n) ** 2) / c4(n),
    "B5": lambda n: max(0.0, c4(n) - 3.0 * math.sqrt(1.0 - c4(n) ** 2)),
    "B6": lambda n: c4(n) + 3.0 * math.sqrt(1.0 - c4(n) ** 2),
    "D1": lambda n: max(0.0, d2(n) - 3.0 * d3(n)),
    "D2": lambda n: d2(n) + 3.0 * d3(n),
    "D3": lambda n: max(0.0, 1.0 - 3.0 * d3(n) / d2(n)),
    "D4": lambda n: 1.0 + 3.0 * d3(n) / d2(n),
    "E2": lambda n: 3.0 / d2(n),
}
#: Names of the chart factors, as the published tables spell them.
FACTOR_NAMES = tuple(_FACTORS)


def factor(name: str, n: int) -> float:
    """The chart factor ``name`` (A, A2, A3, B3..B6, D1..D4, E2) for subgroup size n."""
    try:
        formula = _FACTORS[name]
    except KeyError:
        raise ValueError(
            f"unknown chart factor {name!r}: known are {', '.join(FACTOR_NAMES)}"
        ) from None
    return formula(_check_n(n))


def table(n_max: int = MAX_TABLE_N) -> dict[int, dict[str, float]]:
    """All constants for n = 2..n_max, keyed by size then by the table's column name."""
    return {
        n: {"d2": d2(n), "d3": d3(n), "c4": c4(n)} | {name: factor(name, n) for name in _FACTORS}
        for n in range(MIN_N, n_max + 1)
    }
