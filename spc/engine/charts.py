"""Shewhart charts: Phase I limits from a baseline, Phase II evaluation against frozen limits.

Charts and their plotted statistics:

===========  ===================  ===========================================================
chart        statistics           sigma estimate (Phase I)
===========  ===================  ===========================================================
``i_mr``     ``x``, ``mr``        MR-bar / d2(span): mean moving range of ``span`` (default 2)
``xbar_r``   ``xbar``, ``r``      R-bar / d2(n); subgroups of one size n
``xbar_s``   ``xbar``, ``s``      S-bar / c4(n) for one size n; pooled s / c4(d) with
                                  d = sum(n_i - 1) + 1 when sizes differ (``pooled``)
``p``        ``p``                p-bar = sum(d_i) / sum(n_i); sqrt(p(1-p)/n_i) per point
``np``       ``np``               p-bar as for p; centre n_i p, sqrt(n_i p(1-p)) per point
``c``        ``c``                c-bar (Poisson, one inspection unit); sqrt(c)
``u``        ``u``                u-bar = sum(c_i) / sum(n_i); sqrt(u / n_i) per point
===========  ===================  ===========================================================

Limits of each point are computed from the centre and sigma for that point's own size, with
L = ``sigma_multiple`` (3): X-bar ``centre +- L sigma / sqrt(n_i)``; R ``d2 sigma +- L d3
sigma``; S ``c4 sigma +- L sigma sqrt(1 - c4^2)``; lower limits below zero are set to zero,
p/np upper limits above 1/n_i are capped. For L = 3 and the baseline size these are exactly
the textbook ``x ± A2 R-bar``, ``D3 R-bar .. D4 R-bar``, ``B3 S-bar .. B4 S-bar``,
``x ± E2 MR-bar``, ``D4 MR-bar`` (Montgomery, chapters 6 and 7).

Phase I is iterative and the quality engineer decides: :func:`phase1_individuals`,
:func:`phase1_subgroups` and :func:`phase1_attribute` take the positions the engineer has
excluded so far, compute limits from the rest, evaluate the rest and *propose* the positions
that signal. The caller confirms (adds them to ``excluded``) and calls again, until nothing is
proposed or the engineer keeps the remaining points. Nothing is ever dropped silently.

A result with too little data is ``status="insufficient_data"`` with a reason and no limits;
a baseline without variation gives limits equal to the centre with ``degenerate=True``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from spc.engine import constants
from spc.engine.errors import as_finite_array, as_index_set
from spc.engine.rules import BEYOND_LIMITS, NELSON, RuleSet, RunState, Signal, evaluate_rules

__all__ = [
    "ChartType",
    "ControlLimits",
    "Evaluation",
    "Limits",
    "PhaseI",
    "Series",
    "evaluate_attribute",
    "evaluate_individuals",
    "evaluate_subgroups",
    "phase1_attribute",
    "phase1_individuals",
    "phase1_subgroups",
    "point_limits",
    "standard_limits",
    "standardise",
    "subgroup_statistics",
]

LIMITS_FORMAT = 1
#: Fewest baseline points (individuals) or subgroups/samples below which no limits are given.
MIN_BASELINE = 2
#: Baseline sizes below which limits come with a warning (AIAG SPC manual: 25 subgroups
#: holding 100 or more individual readings).
RECOMMENDED_SUBGROUPS = 25
RECOMMENDED_INDIVIDUALS = 100


class ChartType(StrEnum):
    I_MR = "i_mr"
    XBAR_R = "xbar_r"
    XBAR_S = "xbar_s"
    P = "p"
    NP = "np"
    C = "c"
    U = "u"

    @property
    def statistics(self) -> tuple[str, ...]:
        return _STATISTICS[self]

    @property
    def is_attribute(self) -> bool:
        return self in (ChartType.P, ChartType.NP, ChartType.C, ChartType.U)


_STATISTICS = {
    ChartType.I_MR: ("x", "mr"),
    ChartType.XBAR_R: ("xbar", "r"),
    ChartType.XBAR_S: ("xbar", "s"),
    ChartType.P: ("p",),
    ChartType.NP: ("np",),
    ChartType.C: ("c",),
    ChartType.U: ("u",),
}


@dataclass(frozen=True, slots=True)
class ControlLimits:
    """Centre line and limits of one plotted statistic at the reference size."""

    statistic: str
    centre: float
    lcl: float
    ucl: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "centre": self.centre,
            "lcl": self.lcl,
            "ucl": self.ucl,
        }


@dataclass(frozen=True, slots=True)
class Limits:
    """Frozen control limits of one chart: what Phase II and streaming evaluate against.

    ``centre`` is the process parameter: the mean for variables charts, p-bar for p and np
    charts (the np centre line is n p-bar), c-bar, u-bar. ``sigma`` is the sigma of one
    individual value for variables charts (within-subgroup or moving-range estimate, see
    ``sigma_method``), and for attribute charts the sigma of the plotted statistic at the
    reference size. ``n`` is the subgroup size (1 for individuals; ``None`` for attribute
    charts whose sample sizes vary, when ``statistics`` hold the limits at the mean size).
    ``statistics`` list the centre line and limits of each plotted statistic at size ``n``;
    points of another size get their own (:func:`point_limits`). ``baseline_size`` counts
    the points or subgroups the limits were computed from, ``excluded`` the positions the
    engineer excluded. ``degenerate`` means sigma is zero (limits on the centre line);
    ``note`` says why.
    """

    chart: ChartType
    centre: float
    sigma: float
    sigma_method: str
    n: int | None
    baseline_size: int
    statistics: tuple[ControlLimits, ...]
    excluded: tuple[int, ...] = ()
    sigma_multiple: float = 3.0
    mr_span: int = 2
    degenerate: bool = False
    note: str | None = None

    def statistic(self, name: str) -> ControlLimits:
        for item in self.statistics:
            if item.statistic == name:
                return item
        raise KeyError(f"{self.chart} has no statistic {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": LIMITS_FORMAT,
            "chart": str(self.chart),
            "centre": self.centre,
            "sigma": self.sigma,
            "sigma_method": self.sigma_method,
            "n": self.n,
            "baseline_size": self.baseline_size,
            "statistics": [item.to_dict() for item in self.statistics],
            "excluded": list(self.excluded),
            "sigma_multiple": self.sigma_multiple,
            "mr_span": self.mr_span,
            "degenerate": self.degenerate,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limits:
        if data.get("format") != LIMITS_FORMAT:
            raise ValueError(f"unknown limits format {data.get('format')!r}")
        return cls(
            chart=ChartType(data["chart"]),
            centre=float(data["centre"]),
            sigma=float(data["sigma"]),
            sigma_method=str(data["sigma_method"]),
            n=None if data["n"] is None else int(data["n"]),
            baseline_size=int(data["baseline_size"]),
            statistics=tuple(
                ControlLimits(
                    statistic=item["statistic"],
                    centre=float(item["centre"]),
                    lcl=float(item["lcl"]),
                    ucl=float(item["ucl"]),
                )
                for item in data["statistics"]
            ),
            excluded=tuple(int(i) for i in data["excluded"]),
            sigma_multiple=float(data["sigma_multiple"]),
            mr_span=int(data["mr_span"]),
            degenerate=bool(data["degenerate"]),
            note=data["note"],
        )


@dataclass(frozen=True, slots=True, eq=False)
class Series:
    """One plotted statistic: positions, values and the limits of each point."""

    statistic: str
    index: np.ndarray
    value: np.ndarray
    centre: np.ndarray
    lcl: np.ndarray
    ucl: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class Evaluation:
    """Points evaluated against frozen limits: the series and the signals, by position."""

    limits: Limits
    series: Mapping[str, Series]
    signals: tuple[Signal, ...]


@dataclass(frozen=True, slots=True, eq=False)
class PhaseI:
    """One iteration of Phase I.

    ``status`` is ``ok`` or ``insufficient_data`` (then ``limits`` is ``None`` and
    ``reason`` says what is missing). ``proposed_exclusions`` are positions, not yet
    excluded, where the proposal rules signal against these limits; the engineer confirms
    some or all of them and calls again with a larger ``excluded``. ``signals`` are all
    signals of the included points (positions in the caller's numbering).
    """

    status: str
    limits: Limits | None
    excluded: tuple[int, ...]
    proposed_exclusions: tuple[int, ...] = ()
    signals: tuple[Signal, ...] = ()
    warnings: tuple[str, ...] = ()
    reason: str | None = None
    evaluation: Evaluation | None = field(default=None, repr=False)

    @property
    def converged(self) -> bool:
        """Limits exist and nothing more is proposed for exclusion."""
        return self.status == "ok" and not self.proposed_exclusions


# --------------------------------------------------------------------------- statistics


def subgroup_statistics(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, range and standard deviation (n - 1) of one subgroup.

    Sums are exactly rounded (``math.fsum``), so a subgroup gives bit-identical statistics
    whichever way a stream was cut into chunks.
    """
    size = len(values)
    mean = math.fsum(values) / size
    spread = max(values) - min(values)
    if size < 2:
        return mean, spread, 0.0
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (size - 1))
    return mean, spread, sd


def _subgroup_arrays(
    subgroups: Sequence[Sequence[float]] | np.ndarray,
) -> tuple[list[list[float]], np.ndarray]:
    """Validated subgroups as lists of floats, with their sizes."""
    if isinstance(subgroups, np.ndarray) and subgroups.ndim == 2:
        rows = [subgroups[i] for i in range(subgroups.shape[0])]
    else:
        rows = list(subgroups)
    checked: list[list[float]] = []
    for position, row in enumerate(rows):
        array = as_finite_array(row, name=f"subgroups[{position}]")
        if array.size < 2:
            raise ValueError(
                f"subgroups[{position}] has {array.size} value(s): a subgroup needs at least 2"
            )
        checked.append(array.tolist())
    return checked, np.array([len(row) for row in checked], dtype=np.int64)


# ------------------------------------------------------------------------ point limits


def point_limits(
    limits: Limits, statistic: str, sizes: np.ndarray | None = None, count: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre, sigma, LCL and UCL of each point of ``statistic`` for the given sizes.

    ``sizes`` are subgroup or sample sizes (omitted for individuals and the c chart, then
    ``count`` points at the reference size).
    """
    if sizes is None:
        size = limits.n if limits.n is not None else 1
        sizes = np.full(count if count is not None else 1, size, dtype=np.float64)
    else:
        sizes = np.asarray(sizes, dtype=np.float64)
    chart, centre, sigma, width = limits.chart, limits.centre, limits.sigma, limits.sigma_multiple
    ones = np.ones_like(sizes)
    if statistic in ("x", "xbar"):
        spread = sigma / np.sqrt(sizes)
        mid = centre * ones
        return mid, spread, mid - width * spread, mid + width * spread
    if statistic in ("r", "mr", "s"):
        if statistic == "mr":
            span = limits.mr_span
            unique = {span}
            sizes = np.full(sizes.shape, span, dtype=np.float64)
        else:
            unique = {int(v) for v in np.unique(sizes)}
        mids, spreads = np.empty_like(sizes), np.empty_like(sizes)
        for size in unique:
            mask = sizes == size
            if statistic == "s":
                c4 = constants.c4(size)
                mids[mask], spreads[mask] = c4 * sigma, math.sqrt(1.0 - c4 * c4) * sigma
            else:
                mids[mask], spreads[mask] = constants.d2(size) * sigma, constants.d3(size) * sigma
        return mids, spreads, np.maximum(mids - width * spreads, 0.0), mids + width * spreads
    if chart is ChartType.P:
        spread = np.sqrt(centre * (1.0 - centre) / sizes)
        mid = centre * ones
        return (
            mid,
            spread,
            np.maximum(mid - width * spread, 0.0),
            np.minimum(mid + width * spread, 1.0),
        )
    if chart is ChartType.NP:
        mid = centre * sizes
        spread = np.sqrt(sizes * centre * (1.0 - centre))
        return (
            mid,
            spread,
            np.maximum(mid - width * spread, 0.0),
            np.minimum(mid + width * spread, sizes),
        )
    if chart is ChartType.C:
        mid = centre * ones
        spread = math.sqrt(centre) * ones
        return mid, spread, np.maximum(mid - width * spread, 0.0), mid + width * spread
    if chart is ChartType.U:
        mid = centre * ones
        spread = np.sqrt(centre / sizes)
        return mid, spread, np.maximum(mid - width * spread, 0.0), mid + width * spread
    raise KeyError(f"{chart} has no statistic {statistic!r}")


def standardise(values: np.ndarray, centre: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """(value - centre) / spread, the input of the zone rules.

    With a zero spread (degenerate limits) a point off the centre is +inf or -inf (beyond
    every zone) and a point on it has no zone at all: NaN, which fails every comparison, so
    it breaks every run instead of counting as "within 1 sigma" (a zero-defect p chart would
    otherwise fire rule 7 at every fifteenth sample). These values stay inside the rules.
    """
    difference = values - centre
    result = np.full_like(difference, np.nan)
    positive = spread > 0.0
    np.divide(difference, spread, out=result, where=positive)
    flat = ~positive
    result[flat & (difference > 0.0)] = np.inf
    result[flat & (difference < 0.0)] = -np.inf
    return result


def _make_limits(
    chart: ChartType,
    *,
    centre: float,
    sigma: float,
    sigma_method: str,
    n: int | None,
    reference_size: float,
    baseline_size: int,
    excluded: tuple[int, ...],
    sigma_multiple: float,
    mr_span: int = 2,
    note: str | None = None,
    centres: Mapping[str, float] | None = None,
) -> Limits:
    """Limits with their reference statistics computed at ``reference_size``."""
    if not (math.isfinite(sigma_multiple) and sigma_multiple > 0):
        raise ValueError(f"sigma_multiple must be a finite number > 0, got {sigma_multiple!r}")
    _check_span(mr_span)
    degenerate = sigma == 0.0
    draft = Limits(
        chart=chart,
        centre=centre,
        sigma=sigma,
        sigma_method=sigma_method,
        n=n,
        baseline_size=baseline_size,
        statistics=(),
        excluded=excluded,
        sigma_multiple=sigma_multiple,
        mr_span=mr_span,
        degenerate=degenerate,
        note=note,
    )
    items = []
    for name in chart.statistics:
        mid, _, low, high = point_limits(draft, name, np.array([reference_size]))
        centre_line = float(mid[0]) if centres is None or name not in centres else centres[name]
        items.append(ControlLimits(name, centre_line, float(low[0]), float(high[0])))
    return Limits(
        chart=chart,
        centre=centre,
        sigma=sigma,
        sigma_method=sigma_method,
        n=n,
        baseline_size=baseline_size,
        statistics=tuple(items),
        excluded=excluded,
        sigma_multiple=sigma_multiple,
        mr_span=mr_span,
        degenerate=degenerate,
        note=note,
    )


def _check_span(mr_span: int) -> None:
    if isinstance(mr_span, bool) or not isinstance(mr_span, int) or not 2 <= mr_span <= 25:
        raise ValueError(f"mr_span must be an int within 2..25, got {mr_span!r}")


def standard_limits(
    chart: ChartType | str,
    *,
    centre: float,
    sigma: float | None = None,
    n: int | None = None,
    sigma_multiple: float = 3.0,
    mr_span: int = 2,
) -> Limits:
    """Limits from given standards (a target and a known sigma, or p0, c0, u0), no baseline.

    For variables charts ``centre`` is the target mean and ``sigma`` the sigma of one
    value; for p/np charts ``centre`` is p0, for c c0, for u u0 (``sigma`` is derived).
    """
    chart = ChartType(chart)
    if not math.isfinite(centre):
        raise ValueError(f"centre must be a finite number, got {centre!r}")
    if chart.is_attribute:
        if centre < 0 or (chart in (ChartType.P, ChartType.NP) and centre > 1):
            raise ValueError(f"centre {centre!r} is not a valid parameter for a {chart} chart")
        if chart is ChartType.C:
            n = 1
        reference = float(n) if n is not None else 1.0
        if chart in (ChartType.P, ChartType.NP, ChartType.U) and n is None:
            raise ValueError(f"a {chart} chart needs the sample size n")
        spread = _attribute_sigma(chart, centre, reference)
        return _make_limits(
            chart,
            centre=float(centre),
            sigma=spread,
            sigma_method="given",
            n=n,
            reference_size=reference,
            baseline_size=0,
            excluded=(),
            sigma_multiple=sigma_multiple,
            note=None if spread > 0 else "the given standard has no variation",
        )
    if sigma is None or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    size = 1 if chart is ChartType.I_MR else n
    if size is None or size < (1 if chart is ChartType.I_MR else 2):
        raise ValueError(f"a {chart} chart needs the subgroup size n (at least 2)")
    return _make_limits(
        chart,
        centre=float(centre),
        sigma=float(sigma),
        sigma_method="given",
        n=size,
        reference_size=float(size),
        baseline_size=0,
        excluded=(),
        sigma_multiple=sigma_multiple,
        mr_span=mr_span,
        note=None if sigma > 0 else "the given sigma is zero",
    )


def _attribute_sigma(chart: ChartType, centre: float, size: float) -> float:
    if chart is ChartType.P:
        return math.sqrt(centre * (1.0 - centre) / size)
    if chart is ChartType.NP:
        return math.sqrt(size * centre * (1.0 - centre))
    if chart is ChartType.C:
        return math.sqrt(centre)
    return math.sqrt(centre / size)


# ---------------------------------------------------------------------- Phase II


def _signals(
    statistic: str,
    values: np.ndarray,
    mids: np.ndarray,
    spreads: np.ndarray,
    lows: np.ndarray,
    highs: np.ndarray,
    positions: np.ndarray,
    rules: RuleSet,
) -> list[Signal]:
    """Rule signals on one series, re-numbered to the caller's positions."""
    z = standardise(values, mids, spreads)
    found = evaluate_rules(
        values, z, lows, highs, ruleset=rules, state=RunState(), statistic=statistic
    )
    if not found:
        return []
    lookup = positions.tolist()
    return [
        Signal(
            rule=signal.rule,
            statistic=signal.statistic,
            index=lookup[signal.index],
            involved=tuple(lookup[i] for i in signal.involved if i >= 0),
            direction=signal.direction,
            value=signal.value,
        )
        for signal in found
    ]


def _series(statistic, positions, values, mids, lows, highs) -> Series:
    return Series(
        statistic=statistic,
        index=np.asarray(positions, dtype=np.int64),
        value=np.asarray(values, dtype=np.float64),
        centre=np.asarray(mids, dtype=np.float64),
        lcl=np.asarray(lows, dtype=np.float64),
        ucl=np.asarray(highs, dtype=np.float64),
    )


def _ordered(signals: list[Signal]) -> tuple[Signal, ...]:
    order = {
        name: rank for rank, name in enumerate(("x", "xbar", "p", "np", "c", "u", "mr", "r", "s"))
    }
    return tuple(sorted(signals, key=lambda s: (s.index, order.get(s.statistic, 99), s.rule)))


def _evaluate_individuals(
    limits: Limits,
    values: np.ndarray,
    positions: np.ndarray,
    included_mr: np.ndarray | None,
    rules: RuleSet,
    dispersion_rules: RuleSet,
) -> Evaluation:
    mids, spreads, lows, highs = point_limits(limits, "x", count=values.size)
    signals = _signals("x", values, mids, spreads, lows, highs, positions, rules)
    series = {"x": _series("x", positions, values, mids, lows, highs)}
    span = limits.mr_span
    if values.size >= span:
        windows = np.lib.stride_tricks.sliding_window_view(values, span)
        ranges = windows.max(axis=1) - windows.min(axis=1)
        mr_positions = positions[span - 1 :]
        if included_mr is not None:
            ranges, mr_positions = ranges[included_mr], mr_positions[included_mr]
        m_mid, m_spread, m_low, m_high = point_limits(limits, "mr", count=ranges.size)
        signals += _signals(
            "mr", ranges, m_mid, m_spread, m_low, m_high, mr_positions, dispersion_rules
        )
        series["mr"] = _series("mr", mr_positions, ranges, m_mid, m_low, m_high)
    return Evaluation(limits=limits, series=series, signals=_ordered(signals))


def evaluate_individuals(
    limits: Limits,
    values: Sequence[float] | np.ndarray,
    *,
    rules: RuleSet = NELSON,
    dispersion_rules: RuleSet = BEYOND_LIMITS,
    first_index: int = 0,
) -> Evaluation:
    """Phase II of an I-MR chart: ``values`` in time order against frozen ``limits``.

    The rule set applies to the individuals, ``dispersion_rules`` (rule 1) to the moving
    ranges. Positions count from ``first_index``.
    """
    if limits.chart is not ChartType.I_MR:
        raise ValueError(f"limits are for a {limits.chart} chart, not i_mr")
    array = as_finite_array(values, offset=first_index)
    positions = np.arange(first_index, first_index + array.size, dtype=np.int64)
    return _evaluate_individuals(limits, array, positions, None, rules, dispersion_rules)


def _evaluate_subgroup_stats(
    limits: Limits,
    means: np.ndarray,
    spreads_r: np.ndarray,
    sds: np.ndarray,
    sizes: np.ndarray,
    positions: np.ndarray,
    rules: RuleSet,
    dispersion_rules: RuleSet,
) -> Evaluation:
    mids, spreads, lows, highs = point_limits(limits, "xbar", sizes)
    signals = _signals("xbar", means, mids, spreads, lows, highs, positions, rules)
    series = {"xbar": _series("xbar", positions, means, mids, lows, highs)}
    name = "r" if limits.chart is ChartType.XBAR_R else "s"
    values = spreads_r if name == "r" else sds
    d_mid, d_spread, d_low, d_high = point_limits(limits, name, sizes)
    signals += _signals(name, values, d_mid, d_spread, d_low, d_high, positions, dispersion_rules)
    series[name] = _series(name, positions, values, d_mid, d_low, d_high)
    return Evaluation(limits=limits, series=series, signals=_ordered(signals))


def evaluate_subgroups(
    limits: Limits,
    subgroups: Sequence[Sequence[float]] | np.ndarray,
    *,
    rules: RuleSet = NELSON,
    dispersion_rules: RuleSet = BEYOND_LIMITS,
    first_index: int = 0,
) -> Evaluation:
    """Phase II of an X-bar-R or X-bar-S chart; each subgroup gets limits for its own size."""
    if limits.chart not in (ChartType.XBAR_R, ChartType.XBAR_S):
        raise ValueError(f"limits are for a {limits.chart} chart, not a subgroup chart")
    rows, sizes = _subgroup_arrays(subgroups)
    stats = np.array([subgroup_statistics(row) for row in rows], dtype=np.float64).reshape(-1, 3)
    positions = np.arange(first_index, first_index + len(rows), dtype=np.int64)
    return _evaluate_subgroup_stats(
        limits, stats[:, 0], stats[:, 1], stats[:, 2], sizes, positions, rules, dispersion_rules
    )


def attribute_inputs(
    chart: ChartType, counts: object, sizes: object | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Checked counts and sample sizes of an attribute chart (sizes ``None`` for c)."""
    counts_array = as_finite_array(counts, name="counts")
    if (counts_array < 0).any():
        index = int(np.flatnonzero(counts_array < 0)[0])
        raise ValueError(f"counts[{index}] is negative ({float(counts_array[index])!r})")
    if chart is ChartType.C:
        if sizes is not None:
            sizes_array = as_finite_array(sizes, name="sizes")
            if sizes_array.size and (sizes_array != sizes_array[0]).any():
                raise ValueError(
                    "a c chart counts nonconformities in a constant inspection unit; "
                    "use a u chart for samples of different sizes"
                )
        return counts_array, None
    if sizes is None:
        raise ValueError(f"a {chart} chart needs the sample sizes")
    sizes_array = as_finite_array(sizes, name="sizes")
    if sizes_array.size == 1 and counts_array.size != 1:
        sizes_array = np.full(counts_array.size, sizes_array[0])
    if sizes_array.size != counts_array.size:
        raise ValueError(
            f"counts and sizes differ in length ({counts_array.size} and {sizes_array.size})"
        )
    if (sizes_array <= 0).any():
        index = int(np.flatnonzero(sizes_array <= 0)[0])
        raise ValueError(f"sizes[{index}] must be positive, got {float(sizes_array[index])!r}")
    if chart in (ChartType.P, ChartType.NP) and (counts_array > sizes_array).any():
        index = int(np.flatnonzero(counts_array > sizes_array)[0])
        raise ValueError(
            f"counts[{index}] ({float(counts_array[index])!r}) exceeds its sample size "
            f"({float(sizes_array[index])!r})"
        )
    return counts_array, sizes_array


def attribute_values(chart: ChartType, counts: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    """The plotted statistic: proportions for p, rates for u, the counts for np and c."""
    if chart in (ChartType.P, ChartType.U):
        return counts / sizes
    return counts


def _evaluate_attribute(
    limits: Limits,
    counts: np.ndarray,
    sizes: np.ndarray | None,
    positions: np.ndarray,
    rules: RuleSet,
) -> Evaluation:
    name = limits.chart.statistics[0]
    values = attribute_values(limits.chart, counts, sizes)
    mids, spreads, lows, highs = point_limits(limits, name, sizes, count=values.size)
    signals = _signals(name, values, mids, spreads, lows, highs, positions, rules)
    series = {name: _series(name, positions, values, mids, lows, highs)}
    return Evaluation(limits=limits, series=series, signals=_ordered(signals))


def evaluate_attribute(
    limits: Limits,
    counts: Sequence[float] | np.ndarray,
    sizes: Sequence[float] | np.ndarray | None = None,
    *,
    rules: RuleSet = NELSON,
    first_index: int = 0,
) -> Evaluation:
    """Phase II of a p, np, c or u chart: counts (and sample sizes) against frozen limits."""
    if not limits.chart.is_attribute:
        raise ValueError(f"limits are for a {limits.chart} chart, not an attribute chart")
    counts_array, sizes_array = attribute_inputs(limits.chart, counts, sizes)
    positions = np.arange(first_index, first_index + counts_array.size, dtype=np.int64)
    return _evaluate_attribute(limits, counts_array, sizes_array, positions, rules)


# ------------------------------------------------------------------------ Phase I


def _insufficient(excluded: frozenset[int], reason: str) -> PhaseI:
    return PhaseI(
        status="insufficient_data", limits=None, excluded=tuple(sorted(excluded)), reason=reason
    )


def _finish(
    limits: Limits,
    evaluation: Evaluation,
    excluded: frozenset[int],
    proposal_statistics: tuple[str, ...],
    warnings: list[str],
) -> PhaseI:
    proposed = sorted(
        {s.index for s in evaluation.signals if s.statistic in proposal_statistics} - excluded
    )
    if limits.degenerate and limits.note:
        warnings.append(limits.note)
    return PhaseI(
        status="ok",
        limits=limits,
        excluded=tuple(sorted(excluded)),
        proposed_exclusions=tuple(proposed),
        signals=evaluation.signals,
        warnings=tuple(warnings),
        evaluation=evaluation,
    )


def phase1_individuals(
    values: Sequence[float] | np.ndarray,
    *,
    excluded: Sequence[int] | frozenset[int] = (),
    rules: RuleSet = BEYOND_LIMITS,
    mr_span: int = 2,
    sigma_multiple: float = 3.0,
    min_baseline: int = MIN_BASELINE,
) -> PhaseI:
    """One Phase I iteration of an I-MR chart.

    Centre = mean of the included values; sigma = MR-bar / d2(span), where a moving range
    counts only if all its values are included (excluding a point drops the ranges it is
    part of). ``rules`` (rule 1 by default) decide the proposals, on the individuals only:
    a moving range out of limits is reported in ``signals`` but involves two points, so the
    engineer chooses.
    """
    array = as_finite_array(values)
    excluded_set = as_index_set(excluded, array.size)
    _check_span(mr_span)
    keep = np.ones(array.size, dtype=bool)
    keep[list(excluded_set)] = False
    included = array[keep]
    if array.size >= mr_span:
        windows = np.lib.stride_tricks.sliding_window_view(array, mr_span)
        ranges = windows.max(axis=1) - windows.min(axis=1)
        valid = np.lib.stride_tricks.sliding_window_view(keep, mr_span).all(axis=1)
    else:
        ranges, valid = np.empty(0), np.zeros(0, dtype=bool)
    if included.size < max(min_baseline, mr_span) or not valid.any():
        return _insufficient(
            excluded_set,
            f"an I-MR chart needs at least {max(min_baseline, mr_span)} included values with "
            f"one moving range of {mr_span}; have {included.size} values and "
            f"{int(valid.sum())} moving ranges",
        )
    centre = math.fsum(included.tolist()) / included.size
    mr_bar = math.fsum(ranges[valid].tolist()) / int(valid.sum())
    sigma = mr_bar / constants.d2(mr_span)
    note = None
    if sigma == 0.0:
        note = f"no variation in the baseline: every moving range is 0 (values at {centre!r})"
    limits = _make_limits(
        ChartType.I_MR,
        centre=centre,
        sigma=sigma,
        sigma_method=f"mr_bar/d2(span={mr_span})",
        n=1,
        reference_size=1.0,
        baseline_size=int(included.size),
        excluded=tuple(sorted(excluded_set)),
        sigma_multiple=sigma_multiple,
        mr_span=mr_span,
        note=note,
        centres={"mr": mr_bar},
    )
    warnings = []
    if included.size < RECOMMENDED_INDIVIDUALS:
        warnings.append(
            f"limits from {included.size} values; {RECOMMENDED_INDIVIDUALS} or more are "
            "recommended before the limits are frozen"
        )
    positions = np.flatnonzero(keep)
    # Moving ranges of the included values in sequence count only where no excluded point
    # lies inside the window, as in the sigma estimate.
    sub_valid = None
    if included.size >= mr_span:
        sub_valid = (positions[mr_span - 1 :] - positions[: included.size - mr_span + 1]) == (
            mr_span - 1
        )
    evaluation = _evaluate_individuals(limits, included, positions, sub_valid, rules, BEYOND_LIMITS)
    return _finish(limits, evaluation, excluded_set, ("x",), warnings)


def phase1_subgroups(
    chart: ChartType | str,
    subgroups: Sequence[Sequence[float]] | np.ndarray,
    *,
    excluded: Sequence[int] | frozenset[int] = (),
    rules: RuleSet = BEYOND_LIMITS,
    sigma_method: str = "auto",
    sigma_multiple: float = 3.0,
    min_baseline: int = MIN_BASELINE,
) -> PhaseI:
    """One Phase I iteration of an X-bar-R or X-bar-S chart.

    X-bar-R needs one subgroup size n: centre = mean of the subgroup means, sigma =
    R-bar / d2(n). X-bar-S: with one size, sigma = S-bar / c4(n) (``sbar``); with sizes
    that differ, or with ``sigma_method="pooled"``, sigma = s_p / c4(d), s_p the pooled
    standard deviation and d = sum(n_i - 1) + 1, and the centre is the size-weighted mean.
    Proposals: subgroups where ``rules`` fire on X-bar, or rule 1 on R/S.
    """
    chart = ChartType(chart)
    if chart not in (ChartType.XBAR_R, ChartType.XBAR_S):
        raise ValueError(f"phase1_subgroups is for xbar_r and xbar_s charts, not {chart}")
    rows, sizes = _subgroup_arrays(subgroups)
    excluded_set = as_index_set(excluded, len(rows))
    keep = np.ones(len(rows), dtype=bool)
    keep[list(excluded_set)] = False
    count = int(keep.sum())
    if count < min_baseline:
        return _insufficient(
            excluded_set,
            f"a {chart} chart needs at least {min_baseline} included subgroups; have {count}",
        )
    stats = np.array([subgroup_statistics(row) for row in rows], dtype=np.float64).reshape(-1, 3)
    means, ranges, sds = stats[:, 0], stats[:, 1], stats[:, 2]
    kept_sizes = sizes[keep]
    one_size = bool((kept_sizes == kept_sizes[0]).all())
    centres: dict[str, float] = {}
    if chart is ChartType.XBAR_R:
        if not one_size or (sizes != sizes[0]).any():
            raise ValueError(
                "an X-bar-R chart needs one subgroup size; sizes here range from "
                f"{int(sizes.min())} to {int(sizes.max())}: use an X-bar-S chart"
            )
        if sigma_method not in ("auto", "rbar"):
            raise ValueError(f"sigma_method for xbar_r is 'rbar', got {sigma_method!r}")
        n = int(kept_sizes[0])
        centre = math.fsum(means[keep].tolist()) / count
        r_bar = math.fsum(ranges[keep].tolist()) / count
        sigma, method, reference = r_bar / constants.d2(n), "r_bar/d2", float(n)
        centres["r"] = r_bar
    else:
        if sigma_method not in ("auto", "sbar", "pooled"):
            raise ValueError(f"sigma_method for xbar_s is 'sbar' or 'pooled', got {sigma_method!r}")
        pooled = sigma_method == "pooled" or not one_size
        if sigma_method == "sbar" and not one_size:
            raise ValueError("S-bar / c4(n) needs one subgroup size: use sigma_method='pooled'")
        if pooled:
            weights = kept_sizes.astype(np.float64)
            centre = math.fsum((means[keep] * weights).tolist()) / math.fsum(weights.tolist())
            dof = int((kept_sizes - 1).sum())
            s_pooled = math.sqrt(math.fsum(((kept_sizes - 1) * sds[keep] ** 2).tolist()) / dof)
            sigma, method = s_pooled / constants.c4(dof + 1), "pooled_s/c4"
        else:
            n = int(kept_sizes[0])
            centre = math.fsum(means[keep].tolist()) / count
            s_bar = math.fsum(sds[keep].tolist()) / count
            sigma, method = s_bar / constants.c4(n), "s_bar/c4"
            centres["s"] = s_bar
        reference = float(kept_sizes[0]) if one_size else float(kept_sizes.mean())
    n_value = int(kept_sizes[0]) if one_size else None
    note = None
    if sigma == 0.0:
        note = "no variation within the baseline subgroups: every subgroup range is 0"
    limits = _make_limits(
        chart,
        centre=centre,
        sigma=sigma,
        sigma_method=method,
        n=n_value,
        reference_size=reference,
        baseline_size=count,
        excluded=tuple(sorted(excluded_set)),
        sigma_multiple=sigma_multiple,
        note=note,
        centres=centres,
    )
    warnings = []
    if count < RECOMMENDED_SUBGROUPS:
        warnings.append(
            f"limits from {count} subgroups; {RECOMMENDED_SUBGROUPS} or more are recommended "
            "before the limits are frozen"
        )
    positions = np.flatnonzero(keep)
    evaluation = _evaluate_subgroup_stats(
        limits, means[keep], ranges[keep], sds[keep], sizes[keep], positions, rules, BEYOND_LIMITS
    )
    return _finish(limits, evaluation, excluded_set, ("xbar", "r", "s"), warnings)


def phase1_attribute(
    chart: ChartType | str,
    counts: Sequence[float] | np.ndarray,
    sizes: Sequence[float] | np.ndarray | None = None,
    *,
    excluded: Sequence[int] | frozenset[int] = (),
    rules: RuleSet = BEYOND_LIMITS,
    sigma_multiple: float = 3.0,
    min_baseline: int = MIN_BASELINE,
) -> PhaseI:
    """One Phase I iteration of a p, np, c or u chart.

    p and np: p-bar = sum of nonconforming / sum inspected; c: c-bar = mean count per
    inspection unit; u: u-bar = sum of nonconformities / sum of units. Sizes may vary for
    p, np and u (each point gets its own limits). A baseline with no nonconforming units
    (p-bar = 0) gives degenerate limits: every later nonconforming unit signals.
    """
    chart = ChartType(chart)
    if not chart.is_attribute:
        raise ValueError(f"phase1_attribute is for p, np, c and u charts, not {chart}")
    counts_array, sizes_array = attribute_inputs(chart, counts, sizes)
    excluded_set = as_index_set(excluded, counts_array.size)
    keep = np.ones(counts_array.size, dtype=bool)
    keep[list(excluded_set)] = False
    count = int(keep.sum())
    if count < min_baseline:
        return _insufficient(
            excluded_set,
            f"a {chart} chart needs at least {min_baseline} included samples; have {count}",
        )
    kept_counts = counts_array[keep]
    if chart is ChartType.C:
        centre = math.fsum(kept_counts.tolist()) / count
        n_value, reference = None, 1.0
        method = "poisson"
    else:
        kept_sizes = sizes_array[keep]
        centre = math.fsum(kept_counts.tolist()) / math.fsum(kept_sizes.tolist())
        one_size = bool((kept_sizes == kept_sizes[0]).all()) and bool(
            (sizes_array == sizes_array[0]).all()
        )
        reference = float(kept_sizes[0]) if one_size else float(kept_sizes.mean())
        n_value = int(kept_sizes[0]) if one_size and float(kept_sizes[0]).is_integer() else None
        method = "binomial" if chart in (ChartType.P, ChartType.NP) else "poisson"
    spread = _attribute_sigma(chart, centre, reference)
    note = None
    if spread == 0.0:
        what = "nonconforming units" if chart in (ChartType.P, ChartType.NP) else "nonconformities"
        note = (
            f"no {what} in the baseline" if centre == 0.0 else f"only {what} in the baseline"
        ) + ": the limits collapse onto the centre line"
    limits = _make_limits(
        chart,
        centre=centre,
        sigma=spread,
        sigma_method=method,
        n=n_value if chart is not ChartType.C else 1,
        reference_size=reference,
        baseline_size=count,
        excluded=tuple(sorted(excluded_set)),
        sigma_multiple=sigma_multiple,
        note=note,
    )
    warnings = []
    if count < RECOMMENDED_SUBGROUPS:
        warnings.append(
            f"limits from {count} samples; {RECOMMENDED_SUBGROUPS} or more are recommended "
            "before the limits are frozen"
        )
    positions = np.flatnonzero(keep)
    evaluation = _evaluate_attribute(
        limits,
        kept_counts,
        None if sizes_array is None else sizes_array[keep],
        positions,
        rules,
    )
    return _finish(limits, evaluation, excluded_set, chart.statistics, warnings)
