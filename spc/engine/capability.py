"""Process capability and performance: Cp, Cpk, Pp, Ppk, Cpm with confidence intervals.

With n values, mean x, overall standard deviation s (n - 1), within sigma sigma_w
(MR-bar / d2(2) of the values in time order unless the caller gives it, e.g. R-bar / d2
from the chart's limits), specification limits LSL/USL and target T:

=========  =============================================  ======================================
index      estimate                                       confidence interval (1 - alpha)
=========  =============================================  ======================================
Cp         (USL - LSL) / (6 sigma_w)                      Cp sqrt(chi2(a/2, v) / v) ..
                                                          Cp sqrt(chi2(1 - a/2, v) / v), v = n-1
Cpu, Cpl   (USL - x) / (3 sigma_w), (x - LSL) / (3 ..)    Bissell (1990), as for Cpk
Cpk        min(Cpu, Cpl)                                  Cpk -+ z(1-a/2) sqrt(1/(9n) +
                                                          Cpk^2 / (2(n - 1)))
Pp, Ppk    as Cp, Cpk with s instead of sigma_w           as Cp, Cpk
Cpm        (USL - LSL) / (6 tau), tau^2 = sum((x_i -      Cpm sqrt(chi2(a/2, v) / v) ..,
           T)^2) / (n - 1) (Chan, Cheng & Spiring 1988)   v = n (1 + V^2)^2 / (1 + 2 V^2),
                                                          V = (x - T) / s (Boyles 1991)
=========  =============================================  ======================================

(Montgomery, *Introduction to SQC*, section 8.3.) With one specification limit only the
one-sided indices exist: only USL gives Cpu (= Cpk) and Ppu (= Ppk); Cp, Pp and Cpm are
undefined with a reason. The chi-square degrees of freedom for Cp default to n - 1; pass
``within_df`` when sigma_w comes from subgroups (about 0.9 m (n - 1) for R-bar).

Normality: Anderson-Darling on the values standardised by x and s, with the
D'Agostino & Stephens (1986, table 4.9) p-value of A*^2 = A^2 (1 + 0.75/n + 2.25/n^2);
needs at least 8 values.

Non-normal data: the percentile method of ISO 22514-2 (and ISO/TR 22514-4). Normal,
lognormal, Weibull and gamma distributions (the last three with the threshold at 0, for
positive data) are fitted by maximum likelihood; the one with the smallest Anderson-Darling
statistic against its own fitted CDF is taken, and with its 0.135 %, 50 % and 99.865 %
quantiles X_l, X_50, X_u:
``Pp = (USL - LSL) / (X_u - X_l)``, ``Ppu = (USL - X_50) / (X_u - X_50)``,
``Ppl = (X_50 - LSL) / (X_50 - X_l)``, ``Ppk = min(Ppu, Ppl)``. For a normal distribution
these equal the usual Pp and Ppk. No interval is given for them.

Too few values (< 2) give ``status="insufficient_data"``; constant data give
``status="no_variation"``: every index is undefined with the reason, never a division by
zero. Fewer than 30 values, or fewer than 100 for the performance indices, add a warning.
"""

from __future__ import annotations

import math
import warnings as warnings_module
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spc.engine import constants
from spc.engine._lazy import lazy
from spc.engine.errors import as_finite_array

special = lazy("scipy.special")
stats = lazy("scipy.stats")

__all__ = [
    "Capability",
    "CapabilityIndex",
    "Normality",
    "PercentileCapability",
    "anderson_darling",
    "capability",
    "percentile_capability",
]

MIN_VALUES = 2
MIN_NORMALITY_VALUES = 8
WARN_BELOW = 30
WARN_PERFORMANCE_BELOW = 100
#: Quantiles spanning +-3 sigma of a normal distribution (ISO 22514-2).
LOWER_QUANTILE = 0.00135
UPPER_QUANTILE = 0.99865
DISTRIBUTIONS = ("normal", "lognormal", "weibull", "gamma")


@dataclass(frozen=True, slots=True)
class CapabilityIndex:
    """One index with its interval; ``value`` is ``None`` when undefined (``reason`` says why)."""

    name: str
    value: float | None
    lower: float | None = None
    upper: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "lower": self.lower,
            "upper": self.upper,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Normality:
    """Anderson-Darling test for normality."""

    statistic: float
    adjusted: float
    p_value: float
    alpha: float

    @property
    def normal(self) -> bool:
        return self.p_value >= self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": "anderson_darling",
            "statistic": self.statistic,
            "adjusted": self.adjusted,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "normal": self.normal,
        }


@dataclass(frozen=True, slots=True)
class PercentileCapability:
    """ISO 22514-2 percentile indices from the best-fitting distribution."""

    distribution: str
    parameters: dict[str, float]
    ad_statistic: float
    candidates: dict[str, float | None]
    lower_quantile: float
    median: float
    upper_quantile: float
    indices: tuple[CapabilityIndex, ...]

    def index(self, name: str) -> CapabilityIndex:
        return _find(self.indices, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "iso_22514_2_percentile",
            "distribution": self.distribution,
            "parameters": dict(self.parameters),
            "ad_statistic": self.ad_statistic,
            "candidates": dict(self.candidates),
            "lower_quantile": self.lower_quantile,
            "median": self.median,
            "upper_quantile": self.upper_quantile,
            "indices": [index.to_dict() for index in self.indices],
        }


@dataclass(frozen=True, slots=True)
class Capability:
    """Capability study of one characteristic (see the module docstring)."""

    status: str
    n: int
    lsl: float | None
    usl: float | None
    target: float | None
    confidence: float
    mean: float | None = None
    sigma_within: float | None = None
    sigma_within_method: str | None = None
    sigma_overall: float | None = None
    indices: tuple[CapabilityIndex, ...] = ()
    normality: Normality | None = None
    nonnormal: PercentileCapability | None = None
    warnings: tuple[str, ...] = ()
    reason: str | None = None

    def index(self, name: str) -> CapabilityIndex:
        return _find(self.indices, name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "n": self.n,
            "lsl": self.lsl,
            "usl": self.usl,
            "target": self.target,
            "confidence": self.confidence,
            "mean": self.mean,
            "sigma_within": self.sigma_within,
            "sigma_within_method": self.sigma_within_method,
            "sigma_overall": self.sigma_overall,
            "indices": [index.to_dict() for index in self.indices],
            "normality": None if self.normality is None else self.normality.to_dict(),
            "nonnormal": None if self.nonnormal is None else self.nonnormal.to_dict(),
            "warnings": list(self.warnings),
            "reason": self.reason,
        }


def _find(indices: Sequence[CapabilityIndex], name: str) -> CapabilityIndex:
    for index in indices:
        if index.name == name:
            return index
    raise KeyError(f"no index {name!r}")


# ------------------------------------------------------------------------- tests


def _ad_statistic(cdf_log: np.ndarray, sf_log: np.ndarray) -> float:
    """A^2 from log F(x_(i)) and log(1 - F(x_(i))) of the sorted values."""
    n = cdf_log.size
    weights = 2.0 * np.arange(1, n + 1) - 1.0
    return float(-n - np.sum(weights * (cdf_log + sf_log[::-1])) / n)


def anderson_darling(values: Sequence[float] | np.ndarray, *, alpha: float = 0.05) -> Normality:
    """Anderson-Darling normality test with the D'Agostino & Stephens p-value."""
    array = np.sort(as_finite_array(values))
    n = array.size
    if n < MIN_NORMALITY_VALUES:
        raise ValueError(
            f"the normality test needs at least {MIN_NORMALITY_VALUES} values, got {n}"
        )
    sd = float(np.std(array, ddof=1))
    if sd == 0.0:
        raise ValueError("the normality test needs values that vary (all values are equal)")
    z = (array - float(np.mean(array))) / sd
    a2 = _ad_statistic(special.log_ndtr(z), special.log_ndtr(-z))
    adjusted = a2 * (1.0 + 0.75 / n + 2.25 / n**2)
    if adjusted >= 0.6:
        p = math.exp(1.2937 - 5.709 * adjusted + 0.0186 * adjusted**2)
    elif adjusted >= 0.34:
        p = math.exp(0.9177 - 4.279 * adjusted - 1.38 * adjusted**2)
    elif adjusted >= 0.2:
        p = 1.0 - math.exp(-8.318 + 42.796 * adjusted - 59.938 * adjusted**2)
    else:
        p = 1.0 - math.exp(-13.436 + 101.14 * adjusted - 223.73 * adjusted**2)
    return Normality(statistic=a2, adjusted=adjusted, p_value=min(max(p, 0.0), 1.0), alpha=alpha)


# ----------------------------------------------------------------------- indices


def _chi_interval(value: float, dof: float, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low = value * math.sqrt(float(stats.chi2.ppf(alpha / 2.0, dof)) / dof)
    high = value * math.sqrt(float(stats.chi2.ppf(1.0 - alpha / 2.0, dof)) / dof)
    return low, high


def _bissell_interval(value: float, n: int, confidence: float) -> tuple[float, float]:
    z = stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0)
    half = float(z) * math.sqrt(1.0 / (9.0 * n) + value**2 / (2.0 * (n - 1)))
    return value - half, value + half


def _indices(
    prefix: str,
    sigma: float | None,
    mean: float,
    lsl: float | None,
    usl: float | None,
    n: int,
    dof: float,
    confidence: float,
    method: str,
) -> list[CapabilityIndex]:
    """Cp/Cpk family (prefix ``C``) or Pp/Ppk family (prefix ``P``)."""
    spread_name, upper_name = f"{prefix}p", f"{prefix}pu"
    lower_name, k_name = f"{prefix}pl", f"{prefix}pk"
    if sigma is None or sigma <= 0.0:
        reason = f"{method} is zero: {spread_name} and {k_name} are undefined"
        return [
            CapabilityIndex(name, None, reason=reason)
            for name in (spread_name, upper_name, lower_name, k_name)
        ]
    result = []
    if lsl is not None and usl is not None:
        cp = (usl - lsl) / (6.0 * sigma)
        low, high = _chi_interval(cp, dof, confidence)
        result.append(CapabilityIndex(spread_name, cp, low, high))
    else:
        result.append(CapabilityIndex(spread_name, None, reason="needs both specification limits"))
    sided = []
    for name, limit, value in (
        (upper_name, usl, None if usl is None else (usl - mean) / (3.0 * sigma)),
        (lower_name, lsl, None if lsl is None else (mean - lsl) / (3.0 * sigma)),
    ):
        if limit is None:
            result.append(CapabilityIndex(name, None, reason="no specification limit on this side"))
            continue
        low, high = _bissell_interval(value, n, confidence)
        result.append(CapabilityIndex(name, value, low, high))
        sided.append(value)
    k_value = min(sided)
    low, high = _bissell_interval(k_value, n, confidence)
    result.append(CapabilityIndex(k_name, k_value, low, high))
    return result


def _cpm(
    array: np.ndarray,
    mean: float,
    sd: float,
    lsl: float,
    usl: float,
    target: float,
    confidence: float,
) -> CapabilityIndex:
    n = array.size
    tau = math.sqrt(math.fsum(((array - target) ** 2).tolist()) / (n - 1))
    if tau == 0.0:
        return CapabilityIndex("Cpm", None, reason="every value equals the target")
    value = (usl - lsl) / (6.0 * tau)
    ratio = (mean - target) / sd
    dof = n * (1.0 + ratio**2) ** 2 / (1.0 + 2.0 * ratio**2)
    low, high = _chi_interval(value, dof, confidence)
    return CapabilityIndex("Cpm", value, low, high)


def capability(
    values: Sequence[float] | np.ndarray,
    *,
    lsl: float | None = None,
    usl: float | None = None,
    target: float | None = None,
    sigma_within: float | None = None,
    sigma_within_method: str | None = None,
    within_df: float | None = None,
    confidence: float = 0.95,
    nonnormal: str = "auto",
    distribution: str | None = None,
) -> Capability:
    """Capability of ``values`` (in time order) against the specification limits.

    ``nonnormal``: ``auto`` adds the percentile indices when the normality test rejects,
    ``always`` always, ``never`` never; ``distribution`` forces one of
    :data:`DISTRIBUTIONS` for them.
    """
    array = as_finite_array(values)
    lsl = None if lsl is None else _finite(lsl, "lsl")
    usl = None if usl is None else _finite(usl, "usl")
    if lsl is None and usl is None:
        raise ValueError("capability needs at least one specification limit (lsl or usl)")
    if lsl is not None and usl is not None and lsl >= usl:
        raise ValueError(f"lsl ({lsl!r}) must be below usl ({usl!r})")
    if target is not None:
        target = _finite(target, "target")
        if (lsl is not None and target < lsl) or (usl is not None and target > usl):
            raise ValueError(f"target {target!r} lies outside the specification limits")
    elif lsl is not None and usl is not None:
        target = (lsl + usl) / 2.0
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be within [0.5, 1), got {confidence!r}")
    if nonnormal not in ("auto", "always", "never"):
        raise ValueError(f"nonnormal must be 'auto', 'always' or 'never', got {nonnormal!r}")
    n = array.size
    base = {"n": n, "lsl": lsl, "usl": usl, "target": target, "confidence": confidence}
    if n < MIN_VALUES:
        return Capability(
            status="insufficient_data",
            reason=f"capability needs at least {MIN_VALUES} values, got {n}",
            **base,
        )
    mean = math.fsum(array.tolist()) / n
    sd = float(np.std(array, ddof=1))
    if sigma_within is None:
        moving = np.abs(np.diff(array))
        sigma_within = math.fsum(moving.tolist()) / moving.size / constants.d2(2)
        sigma_within_method = "mr_bar/d2(span=2)"
    else:
        sigma_within = _finite(sigma_within, "sigma_within")
        if sigma_within < 0:
            raise ValueError(f"sigma_within must be >= 0, got {sigma_within!r}")
        sigma_within_method = sigma_within_method or "given"
    if sd == 0.0:
        reason = f"no variation: all {n} values equal {mean!r}, capability is undefined"
        names = ("Cp", "Cpu", "Cpl", "Cpk", "Pp", "Ppu", "Ppl", "Ppk", "Cpm")
        return Capability(
            status="no_variation",
            mean=mean,
            sigma_within=sigma_within,
            sigma_within_method=sigma_within_method,
            sigma_overall=0.0,
            indices=tuple(CapabilityIndex(name, None, reason=reason) for name in names),
            reason=reason,
            **base,
        )
    dof_within = float(within_df) if within_df is not None else float(n - 1)
    indices = _indices("C", sigma_within, mean, lsl, usl, n, dof_within, confidence, "sigma within")
    indices += _indices("P", sd, mean, lsl, usl, n, float(n - 1), confidence, "sigma overall")
    if lsl is not None and usl is not None:
        indices.append(_cpm(array, mean, sd, lsl, usl, target, confidence))
    else:
        indices.append(CapabilityIndex("Cpm", None, reason="needs both specification limits"))
    warnings = []
    if n < WARN_BELOW:
        warnings.append(
            f"only {n} values: indices are rough estimates ({WARN_BELOW} or more recommended)"
        )
    if n < WARN_PERFORMANCE_BELOW:
        ppk = _find(indices, "Ppk")
        warnings.append(
            f"fewer than {WARN_PERFORMANCE_BELOW} values: the Ppk interval is wide "
            f"({ppk.lower:.3g} to {ppk.upper:.3g})"
        )
    normality = None
    if n >= MIN_NORMALITY_VALUES:
        normality = anderson_darling(array)
        if not normality.normal:
            warnings.append(
                f"the values do not look normal (Anderson-Darling p = {normality.p_value:.3g}): "
                "the normal-theory indices are biased; use the percentile indices"
            )
    else:
        warnings.append(f"too few values for a normality test ({MIN_NORMALITY_VALUES} needed)")
    percentile = None
    wanted = nonnormal == "always" or (
        nonnormal == "auto" and normality is not None and not normality.normal
    )
    if wanted and n >= MIN_NORMALITY_VALUES:
        percentile = percentile_capability(array, lsl=lsl, usl=usl, distribution=distribution)
    return Capability(
        status="ok",
        mean=mean,
        sigma_within=sigma_within,
        sigma_within_method=sigma_within_method,
        sigma_overall=sd,
        indices=tuple(indices),
        normality=normality,
        nonnormal=percentile,
        warnings=tuple(warnings),
        **base,
    )


def _finite(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


# -------------------------------------------------------------------- non-normal


def _fit(name: str, array: np.ndarray) -> tuple[Any, dict[str, float]] | None:
    """Frozen scipy distribution fitted by maximum likelihood, or None if it cannot fit."""
    with warnings_module.catch_warnings():
        warnings_module.simplefilter("ignore")
        if name == "normal":
            loc, scale = float(np.mean(array)), float(np.std(array, ddof=1))
            return stats.norm(loc, scale), {"mean": loc, "sd": scale}
        if (array <= 0).any():
            return None
        if name == "lognormal":
            shape, _, scale = stats.lognorm.fit(array, floc=0)
            return stats.lognorm(shape, 0, scale), {"sigma_log": shape, "median": scale}
        if name == "weibull":
            shape, _, scale = stats.weibull_min.fit(array, floc=0)
            return stats.weibull_min(shape, 0, scale), {"shape": shape, "scale": scale}
        if name == "gamma":
            shape, _, scale = stats.gamma.fit(array, floc=0)
            return stats.gamma(shape, 0, scale), {"shape": shape, "scale": scale}
    raise ValueError(f"unknown distribution {name!r}: use one of {', '.join(DISTRIBUTIONS)}")


def percentile_capability(
    values: Sequence[float] | np.ndarray,
    *,
    lsl: float | None = None,
    usl: float | None = None,
    distribution: str | None = None,
) -> PercentileCapability:
    """ISO 22514-2 percentile Pp/Ppk from the best-fitting (or the given) distribution."""
    array = np.sort(as_finite_array(values))
    if array.size < MIN_NORMALITY_VALUES:
        raise ValueError(f"the percentile method needs at least {MIN_NORMALITY_VALUES} values")
    if float(np.std(array)) == 0.0:
        raise ValueError("the percentile method needs values that vary")
    names = DISTRIBUTIONS if distribution is None else (distribution,)
    fitted: dict[str, tuple[Any, dict[str, float], float]] = {}
    candidates: dict[str, float | None] = {}
    for name in names:
        fit = _fit(name, array)
        if fit is None:
            candidates[name] = None
            continue
        frozen, parameters = fit
        with np.errstate(divide="ignore"):
            statistic = _ad_statistic(frozen.logcdf(array), frozen.logsf(array))
        candidates[name] = statistic if math.isfinite(statistic) else None
        if math.isfinite(statistic):
            fitted[name] = (frozen, parameters, statistic)
    if not fitted:
        raise ValueError(
            f"{distribution!r} cannot be fitted to these values (non-positive values?)"
        )
    best = min(fitted, key=lambda name: fitted[name][2])
    frozen, parameters, statistic = fitted[best]
    low, median, high = (float(v) for v in frozen.ppf([LOWER_QUANTILE, 0.5, UPPER_QUANTILE]))
    reason = "no closed-form interval for the percentile method"
    indices = []
    if lsl is not None and usl is not None:
        indices.append(CapabilityIndex("Pp", (usl - lsl) / (high - low), reason=reason))
    else:
        indices.append(CapabilityIndex("Pp", None, reason="needs both specification limits"))
    sided = []
    for name, value in (
        ("Ppu", None if usl is None else (usl - median) / (high - median)),
        ("Ppl", None if lsl is None else (median - lsl) / (median - low)),
    ):
        if value is None:
            indices.append(
                CapabilityIndex(name, None, reason="no specification limit on this side")
            )
        else:
            indices.append(CapabilityIndex(name, value, reason=reason))
            sided.append(value)
    indices.append(CapabilityIndex("Ppk", min(sided), reason=reason))
    return PercentileCapability(
        distribution=best,
        parameters={key: float(v) for key, v in parameters.items()},
        ad_statistic=statistic,
        candidates=candidates,
        lower_quantile=low,
        median=median,
        upper_quantile=high,
        indices=tuple(indices),
    )
