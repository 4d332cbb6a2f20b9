"""Streaming evaluation: one :class:`Monitor` per characteristic, fed point by point or in chunks.

A monitor holds frozen :class:`~spc.engine.charts.Limits`, a rule set, optional EWMA and
CUSUM detectors and, for subgroup charts, a subgrouping; and a :class:`MonitorState` of plain
data: the run-rule counters, the detector statistics, the last values of the moving range,
the open subgroup. ``Monitor.to_dict()`` is JSON-able and ``Monitor.from_dict()`` restores it
exactly, so a worker can persist the state after every chunk and another worker can go on.

Whatever the chunking (one point at a time, chunks of any size, a stop-and-restore in the
middle), a stream gives the same series and the same signals as the whole stream evaluated
at once: the property tests in ``tests/spc`` check this.

What is plotted and checked, per chart:

* ``i_mr``: every value (``x``) against the rule set; the moving range (``mr``, from the
  ``span``-th value on) against ``dispersion_rules`` (rule 1); detectors on ``x``.
* ``xbar_r`` / ``xbar_s``: each closed subgroup with at least ``min_size`` values: its mean
  (``xbar``) against the rule set, its range or standard deviation (``r``/``s``) against
  ``dispersion_rules``; detectors on the standardised means ``(xbar - mu) / (sigma /
  sqrt(n_i))``. Short subgroups are reported, not plotted.
* ``p``, ``np``, ``c``, ``u``: every sample (``push_counts``) against the rule set; no
  detectors (they assume normal data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spc.engine.charts import (
    ChartType,
    Limits,
    attribute_inputs,
    attribute_values,
    point_limits,
    standardise,
    subgroup_statistics,
)
from spc.engine.detectors import (
    DEFAULT_CUSUM,
    CusumSpec,
    DetectorState,
    EwmaSpec,
    run_detectors,
    spec_from_dict,
)
from spc.engine.errors import NonFiniteValueError, as_finite_array
from spc.engine.rules import (
    BEYOND_LIMITS,
    NELSON,
    RuleSet,
    RunState,
    Signal,
    evaluate_point,
    evaluate_rules,
)
from spc.engine.subgroups import Subgroup, Subgrouping, labels_for, split

__all__ = ["Monitor", "MonitorConfig", "MonitorState", "StreamResult", "Trace", "evaluate_stream"]

STATE_FORMAT = 1
_RANK = {"x": 0, "xbar": 0, "p": 0, "np": 0, "c": 0, "u": 0, "mr": 1, "r": 1, "s": 1}


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """What a monitor evaluates: limits, rules, detectors and (subgroup charts) subgrouping.

    Subgroup charts default to consecutive subgroups of the limits' size. Detectors need a
    variables chart with a non-zero sigma; pass ``cusum=None`` for attribute charts.
    """

    limits: Limits
    rules: RuleSet = NELSON
    dispersion_rules: RuleSet = BEYOND_LIMITS
    ewma: EwmaSpec | None = None
    cusum: CusumSpec | None = DEFAULT_CUSUM
    subgrouping: Subgrouping | None = None

    def __post_init__(self) -> None:
        chart = self.limits.chart
        if chart in (ChartType.XBAR_R, ChartType.XBAR_S):
            if self.subgrouping is None:
                if self.limits.n is None:
                    raise ValueError(
                        "limits without one subgroup size need an explicit subgrouping"
                    )
                object.__setattr__(self, "subgrouping", Subgrouping.consecutive(self.limits.n))
            if self.subgrouping.min_size < 2:
                raise ValueError(
                    f"a {chart} chart needs subgroups of at least 2 values: set min_size >= 2"
                )
        elif self.subgrouping is not None:
            raise ValueError(f"a {chart} chart takes no subgrouping")
        if self.ewma is not None or self.cusum is not None:
            if chart.is_attribute:
                raise ValueError(
                    f"EWMA and CUSUM detectors assume normal data: pass ewma=None, cusum=None "
                    f"for a {chart} chart"
                )
            if self.limits.degenerate or self.limits.sigma <= 0.0:
                raise ValueError(
                    "the limits have sigma = 0, so EWMA and CUSUM cannot be scaled: pass "
                    "ewma=None, cusum=None or limits with variation"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "limits": self.limits.to_dict(),
            "rules": self.rules.to_dict(),
            "dispersion_rules": self.dispersion_rules.to_dict(),
            "ewma": None if self.ewma is None else self.ewma.to_dict(),
            "cusum": None if self.cusum is None else self.cusum.to_dict(),
            "subgrouping": None if self.subgrouping is None else self.subgrouping.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MonitorConfig:
        return cls(
            limits=Limits.from_dict(data["limits"]),
            rules=RuleSet.from_dict(data["rules"]),
            dispersion_rules=RuleSet.from_dict(data["dispersion_rules"]),
            ewma=None if data["ewma"] is None else spec_from_dict(data["ewma"]),
            cusum=None if data["cusum"] is None else spec_from_dict(data["cusum"]),
            subgrouping=(
                None if data["subgrouping"] is None else Subgrouping.from_dict(data["subgrouping"])
            ),
        )


@dataclass(slots=True)
class MonitorState:
    """Everything a monitor remembers between points (plain data)."""

    points: int = 0
    plotted: int = 0
    rules: RunState = field(default_factory=RunState)
    dispersion: RunState = field(default_factory=RunState)
    detectors: DetectorState = field(default_factory=DetectorState)
    tail: list[float] = field(default_factory=list)
    open_values: list[float] = field(default_factory=list)
    open_label: str | int | None = None
    last_time: float | None = None

    @classmethod
    def start(cls, config: MonitorConfig) -> MonitorState:
        state = cls(detectors=DetectorState.start(config.cusum))
        if config.limits.chart is ChartType.I_MR:
            # Moving ranges are numbered by the point that closes them.
            state.dispersion.count = config.limits.mr_span - 1
        return state

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": self.points,
            "plotted": self.plotted,
            "rules": self.rules.to_dict(),
            "dispersion": self.dispersion.to_dict(),
            "detectors": self.detectors.to_dict(),
            "tail": list(self.tail),
            "open_values": list(self.open_values),
            "open_label": self.open_label,
            "last_time": self.last_time,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MonitorState:
        return cls(
            points=int(data["points"]),
            plotted=int(data["plotted"]),
            rules=RunState.from_dict(data["rules"]),
            dispersion=RunState.from_dict(data["dispersion"]),
            detectors=DetectorState.from_dict(data["detectors"]),
            tail=[float(v) for v in data["tail"]],
            open_values=[float(v) for v in data["open_values"]],
            open_label=data["open_label"],
            last_time=None if data["last_time"] is None else float(data["last_time"]),
        )


@dataclass(frozen=True, slots=True, eq=False)
class Trace:
    """Plotted points of one statistic: their positions on the chart and their values."""

    index: np.ndarray
    value: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class StreamResult:
    """What one call produced: signals, plotted points, subgroups closed (charted, short)."""

    signals: tuple[Signal, ...] = ()
    series: Mapping[str, Trace] = field(default_factory=dict)
    subgroups: tuple[Subgroup, ...] = ()
    short: tuple[Subgroup, ...] = ()

    @classmethod
    def concat(cls, results: Sequence[StreamResult]) -> StreamResult:
        """Several consecutive results as one (what a single call would have returned)."""
        names: list[str] = []
        for result in results:
            names += [name for name in result.series if name not in names]
        series = {}
        for name in names:
            parts = [r.series[name] for r in results if name in r.series]
            series[name] = Trace(
                np.concatenate([p.index for p in parts]), np.concatenate([p.value for p in parts])
            )
        return cls(
            signals=tuple(s for r in results for s in r.signals),
            series=series,
            subgroups=tuple(g for r in results for g in r.subgroups),
            short=tuple(g for r in results for g in r.short),
        )


def _trace(start: int, values: np.ndarray) -> Trace:
    return Trace(np.arange(start, start + values.size, dtype=np.int64), values)


class Monitor:
    """Streaming evaluation of one characteristic (see the module docstring)."""

    def __init__(self, config: MonitorConfig, state: MonitorState | None = None) -> None:
        self.config = config
        self.state = state if state is not None else MonitorState.start(config)
        limits = config.limits
        if limits.chart is ChartType.I_MR:
            mid, spread, low, high = (float(v[0]) for v in point_limits(limits, "x"))
            self._x = (mid, spread, low, high)
            mid, spread, low, high = (float(v[0]) for v in point_limits(limits, "mr"))
            self._mr = (mid, spread, low, high)

    # ----------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "state": self.state.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Monitor:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown monitor state format {data.get('format')!r}")
        return cls(MonitorConfig.from_dict(data["config"]), MonitorState.from_dict(data["state"]))

    # ----------------------------------------------------------------------- input

    def push(
        self, value: float, *, key: str | int | None = None, timestamp: Any = None
    ) -> StreamResult:
        """One value (with its key or timestamp when the subgrouping needs them)."""
        if self.config.limits.chart is ChartType.I_MR:
            return self._push_one_individual(value)
        return self.push_many(
            [value],
            keys=None if key is None else [key],
            timestamps=None if timestamp is None else [timestamp],
        )

    def push_many(
        self,
        values: Sequence[float] | np.ndarray,
        *,
        keys: Sequence[Any] | np.ndarray | None = None,
        timestamps: Sequence[Any] | np.ndarray | None = None,
    ) -> StreamResult:
        """Values in time order (with keys or timestamps for those subgroupings).

        A NaN or infinite value is refused with :class:`NonFiniteValueError` naming its
        index in the stream; the state is then unchanged.
        """
        chart = self.config.limits.chart
        if chart.is_attribute:
            raise ValueError(f"a {chart} chart takes counts: use push_counts()")
        x = as_finite_array(values, offset=self.state.points)
        if chart is ChartType.I_MR:
            return self._push_individuals(x)
        return self._push_subgroup_values(x, keys, timestamps)

    def push_counts(
        self,
        counts: Sequence[float] | np.ndarray,
        sizes: Sequence[float] | np.ndarray | None = None,
    ) -> StreamResult:
        """Samples of an attribute chart: counts (and sample sizes for p, np and u)."""
        limits = self.config.limits
        if not limits.chart.is_attribute:
            raise ValueError(f"a {limits.chart} chart takes values: use push_many()")
        counts_array, sizes_array = attribute_inputs(limits.chart, counts, sizes)
        name = limits.chart.statistics[0]
        values = attribute_values(limits.chart, counts_array, sizes_array)
        mids, spreads, lows, highs = point_limits(limits, name, sizes_array, count=values.size)
        start = self.state.plotted
        signals = evaluate_rules(
            values,
            standardise(values, mids, spreads),
            lows,
            highs,
            ruleset=self.config.rules,
            state=self.state.rules,
            statistic=name,
        )
        self.state.points += values.size
        self.state.plotted += values.size
        return StreamResult(signals=tuple(signals), series={name: _trace(start, values)})

    def flush(self) -> StreamResult:
        """Close the open subgroup (end of a coil, a lot, a shift); charts it if big enough."""
        if not self.state.open_values:
            return StreamResult()
        start = self.state.points - len(self.state.open_values)
        group = (start, self.state.points, self.state.open_label, self.state.open_values)
        self.state.open_values = []
        self.state.open_label = None
        return self._evaluate_groups([group])

    # ------------------------------------------------------------------ internals

    def _push_one_individual(self, value: float) -> StreamResult:
        """The per-point path of an I-MR chart: plain floats, no numpy until the result."""
        config, state = self.config, self.state
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ValueError(f"values[{state.points}] must be a number, got {value!r}")
        x = float(value)
        if not math.isfinite(x):
            raise NonFiniteValueError("values", state.points, x)
        index = state.points
        mid, spread, low, high = self._x
        z = _standard_point(x, mid, spread)
        signals = evaluate_point(x, z, low, high, ruleset=config.rules, state=state.rules)
        series = {"x": Trace(np.array([index], dtype=np.int64), np.array([x]))}
        span = config.limits.mr_span
        tail = state.tail
        if len(tail) >= span - 1:
            window = [*tail[len(tail) - (span - 1) :], x]
            moving = abs(x - window[0]) if span == 2 else max(window) - min(window)
            m_mid, m_spread, m_low, m_high = self._mr
            signals += evaluate_point(
                moving,
                _standard_point(moving, m_mid, m_spread),
                m_low,
                m_high,
                ruleset=config.dispersion_rules,
                state=state.dispersion,
                statistic="mr",
            )
            series["mr"] = Trace(np.array([index], dtype=np.int64), np.array([moving]))
        state.tail = [*tail, x][-(span - 1) :]
        if config.ewma is not None or config.cusum is not None:
            stats, found = run_detectors(
                [z], ewma=config.ewma, cusum=config.cusum, state=state.detectors
            )
            signals += found
            for name, values in stats.items():
                series[name] = Trace(np.array([index], dtype=np.int64), values)
        state.points += 1
        state.plotted += 1
        return StreamResult(signals=_merge(signals), series=series)

    def _push_individuals(self, x: np.ndarray) -> StreamResult:
        config, state = self.config, self.state
        start = state.points
        mid, spread, low, high = self._x
        z = (
            standardise(x, np.float64(mid), np.float64(spread))
            if spread == 0.0
            else (x - mid) / spread
        )
        signals = evaluate_rules(
            x, z, low, high, ruleset=config.rules, state=state.rules, statistic="x"
        )
        series = {"x": _trace(start, x)}
        span = config.limits.mr_span
        joined = np.concatenate((np.asarray(state.tail, dtype=np.float64), x))
        if joined.size >= span:
            if span == 2:
                ranges = np.abs(np.diff(joined))
            else:
                windows = np.lib.stride_tricks.sliding_window_view(joined, span)
                ranges = windows.max(axis=1) - windows.min(axis=1)
            m_mid, m_spread, m_low, m_high = self._mr
            if config.dispersion_rules.rules == BEYOND_LIMITS.rules:
                m_z = ranges  # rule 1 alone reads the limits, not the zones
            else:
                m_z = standardise(ranges, np.float64(m_mid), np.float64(m_spread))
            signals += evaluate_rules(
                ranges,
                m_z,
                m_low,
                m_high,
                ruleset=config.dispersion_rules,
                state=state.dispersion,
                statistic="mr",
            )
            series["mr"] = _trace(start + x.size - ranges.size, ranges)
        state.tail = joined[joined.size - (span - 1) :].tolist() if span > 1 else []
        if config.ewma is not None or config.cusum is not None:
            stats, found = run_detectors(
                z, ewma=config.ewma, cusum=config.cusum, state=state.detectors
            )
            signals += found
            for name, values in stats.items():
                series[name] = _trace(start, values)
        state.points += x.size
        state.plotted += x.size
        return StreamResult(signals=_merge(signals), series=series)

    def _push_subgroup_values(self, x: np.ndarray, keys: Any, timestamps: Any) -> StreamResult:
        state, spec = self.state, self.config.subgrouping
        labels, last_time = labels_for(
            spec,
            x.size,
            keys=keys,
            timestamps=timestamps,
            previous_time=state.last_time,
            offset=state.points,
        )
        open_size = len(state.open_values)
        ends, open_start = split(spec, open_size, state.open_label, x.size, labels)
        joined = state.open_values + x.tolist()
        joined_labels = None if labels is None else [state.open_label] * open_size + labels
        first = state.points - open_size
        groups = []
        begin = 0
        for end in ends:
            label = None if joined_labels is None else joined_labels[begin]
            groups.append((first + begin, first + end, label, joined[begin:end]))
            begin = end
        state.open_values = joined[open_start:]
        state.open_label = (
            joined_labels[open_start]
            if joined_labels is not None and open_start < len(joined)
            else None
        )
        state.points += x.size
        if spec.kind == "time_window" and last_time is not None:
            state.last_time = last_time
        return self._evaluate_groups(groups)

    def _evaluate_groups(self, groups: list[tuple[int, int, Any, list[float]]]) -> StreamResult:
        config, state = self.config, self.state
        charted: list[Subgroup] = []
        short: list[Subgroup] = []
        stats = []
        for begin, end, label, values in groups:
            if end - begin >= config.subgrouping.min_size:
                charted.append(Subgroup(begin, end, label, state.plotted + len(charted)))
                stats.append(subgroup_statistics(values))
            else:
                short.append(Subgroup(begin, end, label))
        if not charted:
            return StreamResult(short=tuple(short))
        table = np.array(stats, dtype=np.float64)
        sizes = np.array([group.size for group in charted], dtype=np.float64)
        means = table[:, 0]
        start = state.plotted
        limits = config.limits
        mids, spreads, lows, highs = point_limits(limits, "xbar", sizes)
        z = standardise(means, mids, spreads)
        signals = evaluate_rules(
            means, z, lows, highs, ruleset=config.rules, state=state.rules, statistic="xbar"
        )
        name = "r" if limits.chart is ChartType.XBAR_R else "s"
        spread_values = table[:, 1] if name == "r" else table[:, 2]
        d_mid, d_spread, d_low, d_high = point_limits(limits, name, sizes)
        signals += evaluate_rules(
            spread_values,
            standardise(spread_values, d_mid, d_spread),
            d_low,
            d_high,
            ruleset=config.dispersion_rules,
            state=state.dispersion,
            statistic=name,
        )
        series = {"xbar": _trace(start, means), name: _trace(start, spread_values)}
        if config.ewma is not None or config.cusum is not None:
            found_stats, found = run_detectors(
                z, ewma=config.ewma, cusum=config.cusum, state=state.detectors
            )
            signals += found
            for stat_name, values in found_stats.items():
                series[stat_name] = _trace(start, values)
        state.plotted += len(charted)
        return StreamResult(
            signals=_merge(signals), series=series, subgroups=tuple(charted), short=tuple(short)
        )


def _standard_point(value: float, centre: float, spread: float) -> float:
    """:func:`charts.standardise` for one float."""
    if spread > 0.0:
        return (value - centre) / spread
    if value > centre:
        return math.inf
    return -math.inf if value < centre else math.nan


def _merge(signals: list[Signal]) -> tuple[Signal, ...]:
    """Signals by point, then chart statistic before dispersion before detectors."""
    if len(signals) < 2:
        return tuple(signals)
    return tuple(
        sorted(signals, key=lambda s: (s.index, _RANK.get(s.statistic, 2), s.rule, s.statistic))
    )


def evaluate_stream(
    config: MonitorConfig,
    values: Sequence[float] | np.ndarray,
    *,
    keys: Sequence[Any] | np.ndarray | None = None,
    timestamps: Sequence[Any] | np.ndarray | None = None,
    close: bool = False,
) -> StreamResult:
    """A whole stream at once from a fresh state (``close`` closes the last subgroup)."""
    monitor = Monitor(config)
    result = monitor.push_many(values, keys=keys, timestamps=timestamps)
    if close and config.limits.chart in (ChartType.XBAR_R, ChartType.XBAR_S):
        return StreamResult.concat([result, monitor.flush()])
    return result
