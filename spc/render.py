"""SPC charts drawn on the server: control charts and capability histograms as SVG, PNG or PDF.

Pure functions over plain data classes: no Django models, no database. The caller maps its
characteristic, stored limits (``Limits.to_dict()``), points and signals onto
:class:`ControlChartData` or :class:`HistogramData`, and gets bytes back, so one drawing
serves the characteristic page (SVG), reports (PNG) and audit packs (PDF).

What is drawn
-------------
* :func:`control_chart`: the chart statistic over sample number or measurement time, centre
  line, UCL/LCL (steps when they vary with the sample or subgroup size), LSL/USL dashed and
  labelled, every signalling point marked by its kind (shape and colour) and labelled with
  its rule (``N1``..``N8``, ``CUSUM``, ``EWMA``); a second panel for MR, R or S; optionally a
  CUSUM panel with C+ and C- against the decision interval h.
* :func:`capability_histogram`: histogram with LSL/USL/target, the normal curves of the
  overall and within sigma, and Cp/Cpk/Pp/Ppk (with their intervals) from the engine's
  capability study; too little data is drawn as a message.

Invariants
----------
* Same input, same bytes: matplotlib's settings are reset to its defaults plus the fixed
  settings below for every drawing (a global style set elsewhere changes nothing), SVG ids
  come from a salt per characteristic and no date is written into SVG or PDF.
* No pyplot: each call builds its own ``Figure`` and canvas (Agg, SVG, PDF). Matplotlib's
  settings are process-wide, so drawings are serialised by a lock; nothing else in the
  process should change matplotlib settings while a chart is drawn.
* Bad input (NaN or infinite values, naive datetimes, times going back, lengths that do not
  match) is refused with ``ValueError`` naming the field and index, before anything is drawn.
* Colours are the Okabe-Ito palette (safe for the common colour-vision deficiencies), and
  signal kinds differ by marker shape as well as colour. Sizes are in CSS pixels: a
  1200 x 500 chart is 1200 x 500 px as PNG and as SVG in a page.
"""

from __future__ import annotations

import hashlib
import io
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

import matplotlib as mpl
import matplotlib.dates as mdates
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import FigureCanvasPdf
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from spc.engine.charts import ChartType, Limits, point_limits
from spc.engine.errors import as_finite_array

__all__ = [
    "ChartSignal",
    "ControlChartData",
    "CusumData",
    "HistogramData",
    "RULE_LABELS",
    "capability_histogram",
    "control_chart",
    "rule_label",
]

FORMATS = ("svg", "png", "pdf")
#: CSS pixels per inch: figure inches = pixels / 96, so PNG pixels and SVG size in a page agree.
PX_PER_INCH = 96
DEFAULT_WIDTH_PX = 1200
DEFAULT_HEIGHT_PX = 500
#: Above this many points the in-control points are drawn as a line only (markers stay on
#: signalling points): thousands of markers neither read well nor render fast.
MARKER_LIMIT = 400
#: At most this many rule labels per panel (the latest signals); every signal keeps its marker.
LABEL_LIMIT = 60
#: Row height of the capability table beside the histogram, in points.
TABLE_ROW_PT = 17.0
# Rule labels: distance from the point, row spacing and text height, in points.
LABEL_OFFSET_PT = 7.0
LABEL_ROW_PT = 12.0
LABEL_HEIGHT_PT = 11.0
#: Spec limits farther than this many control-limit half-widths from the centre are not
#: scaled into view (the data would become a flat line): they are named at the panel edge.
SPEC_VIEW_FACTOR = 4.0

# Okabe & Ito (2008), "Color Universal Design": distinguishable with the common colour-vision
# deficiencies.
BLUE = "#0072B2"
SKY = "#56B4E9"
GREEN = "#009E73"
ORANGE = "#E69F00"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
BLACK = "#000000"
GREY = "#595959"

# Typography of the drawn text (a true minus sign, sigma).
MINUS = "\N{MINUS SIGN}"
SIGMA = "\N{GREEK SMALL LETTER SIGMA}"

#: Engine rule code -> the label drawn next to the point.
RULE_LABELS: Mapping[str, str] = {
    **{f"nelson_{number}": f"N{number}" for number in range(1, 9)},
    "cusum": "CUSUM",
    "ewma": "EWMA",
}

# Signal kinds: marker shape and colour differ, so a kind reads without colour too.
_KIND_STYLE = {
    "limit": {"marker": "D", "color": VERMILLION, "label": "beyond control limits (N1)"},
    "run": {"marker": "s", "color": ORANGE, "label": "run rule (N2\N{EN DASH}N8)"},
    "detector": {"marker": "^", "color": PURPLE, "label": "drift detector (CUSUM, EWMA)"},
}
_KIND_ORDER = ("limit", "run", "detector")
# Label text in a darker shade where the marker colour is too light on white.
_LABEL_COLOURS = {"limit": VERMILLION, "run": "#8A5A00", "detector": "#A2487F"}
_LABEL_RULES = {label: rule for rule, label in RULE_LABELS.items()}

_CHART_NAMES = {
    ChartType.I_MR: "Individuals and moving range (I-MR)",
    ChartType.XBAR_R: "X-bar and R",
    ChartType.XBAR_S: "X-bar and S",
    ChartType.P: "p chart",
    ChartType.NP: "np chart",
    ChartType.C: "c chart",
    ChartType.U: "u chart",
}
_STATISTIC_NAMES = {
    "x": "Individual value",
    "xbar": "Subgroup mean",
    "mr": "Moving range",
    "r": "Range",
    "s": "Standard deviation",
    "p": "Proportion nonconforming",
    "np": "Nonconforming units",
    "c": "Nonconformities",
    "u": "Nonconformities per unit",
}
_SHORT_NAMES = {"mr": "MR", "r": "Range", "s": "Std dev"}
_DETECTOR_STATISTICS = ("cusum_up", "cusum_down", "ewma")
_UNITLESS = frozenset({"p", "np", "c", "u"})

# Everything that shapes the output is fixed here, on top of matplotlib's own defaults.
_RC: dict[str, Any] = {
    # DejaVu ships with matplotlib; in SVG the generic family follows it for browsers
    # without it.
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.monospace": ["DejaVu Sans Mono"],
    "font.size": 11.0,
    "axes.titlesize": 13.0,
    "axes.labelsize": 11.0,
    "xtick.labelsize": 10.0,
    "ytick.labelsize": 10.0,
    "legend.fontsize": 9.5,
    "figure.titlesize": 14.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#D9D9D9",
    "grid.linewidth": 0.6,
    "svg.fonttype": "none",  # real <text>: searchable, selectable, read by screen readers
    "svg.hashsalt": "celltrace-spc",
    "pdf.fonttype": 42,  # embedded TrueType: text stays searchable in audit packs
    "path.simplify": True,
    "agg.path.chunksize": 10_000,
}
_LOCK = threading.Lock()


# ------------------------------------------------------------------------------ input


@dataclass(frozen=True, slots=True)
class ChartSignal:
    """One signal to mark: ``index`` into the chart's points (0-based), the engine's rule code
    (``nelson_1``..``nelson_8``, ``cusum``, ``ewma``) and the statistic it fired on (``x``,
    ``xbar``, ``p``.. for the main panel; ``mr``, ``r``, ``s`` for the dispersion panel;
    ``cusum_up``, ``cusum_down``, ``ewma`` for the detectors)."""

    index: int
    rule: str
    statistic: str


@dataclass(frozen=True, slots=True)
class CusumData:
    """Tabular CUSUM statistics of each point, in sigma units, with the decision interval h.

    ``up`` is C+, ``down`` is C- (as the engine reports it, >= 0); a one-sided CUSUM gives
    only one of them.
    """

    h: float
    up: Sequence[float] | None = None
    down: Sequence[float] | None = None


@dataclass(frozen=True, slots=True)
class ControlChartData:
    """What a control chart shows, in plain values.

    ``values`` are the chart statistic in time order (individual values, subgroup means,
    proportions...). ``limits`` is ``Limits.to_dict()`` (``None`` before Phase I has limits).
    ``times`` are the timezone-aware measurement times (the x axis), else the x axis is the
    sample number starting at ``first_number``. ``sizes`` are subgroup or sample sizes when
    they vary (p, np, u charts, subgroups of another size): the limits follow each point.
    ``dispersion`` is MR, R or S: R/S one per point; MR one per point from the span-th on
    (computed from ``values`` when omitted). ``signals`` index into ``values``.
    """

    code: str
    name: str
    unit: str
    values: Sequence[float]
    limits: Mapping[str, Any] | None = None
    times: Sequence[datetime] | None = None
    first_number: int = 1
    sizes: Sequence[float] | None = None
    dispersion: Sequence[float] | None = None
    signals: Sequence[ChartSignal | tuple[int, str, str]] = ()
    lsl: float | None = None
    usl: float | None = None
    target: float | None = None
    cusum: CusumData | None = None


@dataclass(frozen=True, slots=True)
class HistogramData:
    """Values of one characteristic and the engine's capability study of them.

    ``capability`` is ``Capability.to_dict()`` (or the ``Capability`` itself); the
    specification limits and target are taken from it unless given here, and must agree with
    it when given in both places.
    """

    code: str
    name: str
    unit: str
    values: Sequence[float]
    capability: Mapping[str, Any] | Any | None = None
    lsl: float | None = None
    usl: float | None = None
    target: float | None = None
    bins: int | None = None


def rule_label(rule: str) -> str:
    """``nelson_2`` -> ``N2``, ``cusum`` -> ``CUSUM``; an unknown code is refused."""
    try:
        return RULE_LABELS[rule]
    except KeyError:
        known = ", ".join(RULE_LABELS)
        raise ValueError(f"unknown rule code {rule!r}: the known codes are {known}") from None


def _kind(rule: str) -> str:
    if rule == "nelson_1":
        return "limit"
    if rule.startswith("nelson_"):
        return "run"
    return "detector"


# ------------------------------------------------------------------------- validation


@dataclass(slots=True)
class _Panel:
    """One panel's points, limits and signals, ready to draw."""

    statistic: str
    x: np.ndarray
    y: np.ndarray
    centre: np.ndarray | None = None
    lcl: np.ndarray | None = None
    ucl: np.ndarray | None = None
    signals: dict[int, list[str]] = field(default_factory=dict)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _check_size(width_px: int, height_px: int) -> None:
    for name, value in (("width_px", width_px), ("height_px", height_px)):
        if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 6000:
            raise ValueError(f"{name} must be an int within 200..6000, got {value!r}")


def _optional_number(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _spec_limits(
    lsl: float | None, usl: float | None, target: float | None
) -> tuple[float | None, float | None, float | None]:
    lsl, usl = _optional_number(lsl, "lsl"), _optional_number(usl, "usl")
    target = _optional_number(target, "target")
    if lsl is not None and usl is not None and lsl >= usl:
        raise ValueError(f"lsl ({lsl}) must be below usl ({usl})")
    return lsl, usl, target


def _times(times: Sequence[datetime], count: int) -> np.ndarray:
    """Aware datetimes in time order, as matplotlib date numbers (days, UTC)."""
    if len(times) != count:
        raise ValueError(f"times has {len(times)} entries for {count} values")
    previous = None
    for position, moment in enumerate(times):
        if not isinstance(moment, datetime):
            raise ValueError(f"times[{position}] is not a datetime ({moment!r})")
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"times[{position}] has no timezone ({moment.isoformat()})")
        if previous is not None and moment < previous:
            raise ValueError(
                f"times[{position}] ({moment.isoformat()}) is before times[{position - 1}] "
                f"({previous.isoformat()}): points must be in time order"
            )
        previous = moment
    return np.asarray(mdates.date2num(list(times)), dtype=np.float64).reshape(count)


def _signals(
    raw: Sequence[ChartSignal | tuple[int, str, str]], count: int, statistics: Sequence[str]
) -> list[ChartSignal]:
    result = []
    for position, item in enumerate(raw):
        if isinstance(item, ChartSignal):
            signal = item
        elif isinstance(item, tuple | list) and len(item) == 3:
            signal = ChartSignal(*item)
        else:
            raise ValueError(
                f"signals[{position}] must be a ChartSignal or (index, rule, statistic), "
                f"got {item!r}"
            )
        index = signal.index
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise ValueError(f"signals[{position}] index must be an int, got {index!r}")
        if not 0 <= index < count:
            raise ValueError(
                f"signals[{position}] index {index} is outside the {count} plotted points"
            )
        rule_label(signal.rule)
        if signal.statistic not in statistics:
            raise ValueError(
                f"signals[{position}] is on {signal.statistic!r}, which this chart does not "
                f"plot ({', '.join(statistics)})"
            )
        result.append(ChartSignal(int(index), signal.rule, signal.statistic))
    return result


def _limit_arrays(
    limits: Limits, statistic: str, sizes: np.ndarray | None, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centre, _spread, lcl, ucl = point_limits(limits, statistic, sizes, count)
    if centre.size == 1 and count != 1:
        centre, lcl, ucl = (np.full(count, float(a[0])) for a in (centre, lcl, ucl))
    return centre, lcl, ucl


def _prepare_chart(data: ControlChartData) -> dict[str, Any]:
    """Validate everything and compute each panel's arrays; nothing is drawn yet."""
    values = as_finite_array(data.values, "values")
    count = values.size
    limits = None if data.limits is None else Limits.from_dict(data.limits)
    lsl, usl, target = _spec_limits(data.lsl, data.usl, data.target)
    if data.times is not None:
        x = _times(data.times, count)
    else:
        first = data.first_number
        if isinstance(first, bool) or not isinstance(first, int):
            raise ValueError(f"first_number must be an int, got {first!r}")
        x = np.arange(first, first + count, dtype=np.float64)
    sizes = None
    if data.sizes is not None:
        sizes = as_finite_array(data.sizes, "sizes")
        if sizes.size != count:
            raise ValueError(f"sizes has {sizes.size} entries for {count} values")
        bad = np.flatnonzero(sizes < 1)
        if bad.size:
            raise ValueError(f"sizes[{int(bad[0])}] must be at least 1, got {sizes[bad[0]]}")
    chart = limits.chart if limits is not None else None
    if chart is not None and sizes is None and limits.n is None:
        raise ValueError(f"these {chart} limits have no single size n: give sizes")
    if sizes is not None and chart in (None, ChartType.I_MR, ChartType.C):
        raise ValueError(
            "sizes are for subgroup charts and the p, np and u charts; "
            f"this {chart or 'run'} chart plots one value per point"
        )
    if data.dispersion is not None and chart is None:
        raise ValueError("dispersion needs limits: without them the chart type is unknown")
    statistics = chart.statistics if chart is not None else ("x",)
    signals = _signals(data.signals, count, (*statistics, *_DETECTOR_STATISTICS))
    main = _Panel(statistics[0], x, values)
    if limits is not None and count:
        main.centre, main.lcl, main.ucl = _limit_arrays(limits, main.statistic, sizes, count)

    dispersion = None
    if len(statistics) > 1:
        name = statistics[1]
        span = limits.mr_span if limits is not None else 2
        if data.dispersion is None:
            if name != "mr":
                raise ValueError(
                    f"a {chart} chart needs its {name.upper()} values: give dispersion"
                )
            spread = (
                np.abs(values[span - 1 :] - values[: count - span + 1])
                if span == 2
                else np.array(
                    [np.ptp(values[i - span + 1 : i + 1]) for i in range(span - 1, count)]
                )
            )
        else:
            spread = as_finite_array(data.dispersion, "dispersion")
        expected = max(count - span + 1, 0) if name == "mr" else count
        if spread.size != expected:
            raise ValueError(
                f"dispersion has {spread.size} {name.upper()} values, expected {expected} "
                f"for {count} points"
            )
        first = count - spread.size
        dispersion = _Panel(name, x[first:], spread)
        if spread.size:
            sub_sizes = None if sizes is None else sizes[first:]
            dispersion.centre, dispersion.lcl, dispersion.ucl = _limit_arrays(
                limits, name, sub_sizes, spread.size
            )

    cusum = None
    if data.cusum is not None:
        h = _optional_number(data.cusum.h, "cusum.h")
        if h is None or h <= 0:
            raise ValueError(f"cusum.h must be a number > 0, got {data.cusum.h!r}")
        if data.cusum.up is None and data.cusum.down is None:
            raise ValueError("cusum needs up (C+), down (C-) or both")
        sides = {}
        for side in ("up", "down"):
            raw = getattr(data.cusum, side)
            if raw is None:
                continue
            array = as_finite_array(raw, f"cusum.{side}")
            if array.size != count:
                raise ValueError(f"cusum.{side} has {array.size} values for {count} points")
            sides[side] = array
        cusum = {"h": h, **sides}

    panels = {"main": main, "dispersion": dispersion}
    offsets = {"main": 0, "dispersion": 0 if dispersion is None else count - dispersion.y.size}
    cusum_signals: dict[int, list[str]] = {}
    for position, signal in enumerate(signals):
        label = rule_label(signal.rule)
        if dispersion is not None and signal.statistic == dispersion.statistic:
            where = signal.index - offsets["dispersion"]
            if where < 0:
                raise ValueError(
                    f"signals[{position}] on {signal.statistic} at index {signal.index}: the "
                    f"first {signal.statistic.upper()} value is at index {offsets['dispersion']}"
                )
            target_panel = panels["dispersion"]
        else:
            where = signal.index
            target_panel = main
            if signal.statistic in ("cusum_up", "cusum_down"):
                cusum_signals.setdefault(where, [])
                if label not in cusum_signals[where]:
                    cusum_signals[where].append(label)
        labels = target_panel.signals.setdefault(where, [])
        if label not in labels:
            labels.append(label)
    return {
        "values": values,
        "limits": limits,
        "chart": chart,
        "main": main,
        "dispersion": dispersion,
        "cusum": cusum,
        "cusum_signals": cusum_signals,
        "lsl": lsl,
        "usl": usl,
        "target": target,
        "dates": data.times is not None,
        "signal_count": len(signals),
        "rule_counts": _rule_counts(signals),
    }


def _rule_counts(signals: Sequence[ChartSignal]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for signal in signals:
        label = rule_label(signal.rule)
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: list(RULE_LABELS.values()).index(item[0])))


# --------------------------------------------------------------------------- drawing


def _decimals(scale: float) -> int:
    """Decimals that show a quantity of this scale (a sigma, a bin width) to two digits."""
    if not math.isfinite(scale) or scale <= 0:
        return 2
    return int(min(max(1 - math.floor(math.log10(scale)), 0), 6))


def _fmt(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return MINUS + text[1:] if text.startswith("-") else text


def _with_unit(text: str, unit: str) -> str:
    return f"{text} ({unit})" if unit else text


def _title(code: str, name: str, unit: str) -> str:
    title = f"{code} · {name}" if name else code
    return _with_unit(title, unit)


def _line_label(ax: Any, y: float, text: str, color: str) -> None:
    """A label in the right margin, level with its horizontal line (outside the data area)."""
    ax.annotate(
        text,
        xy=(1.0, y),
        xycoords=("axes fraction", "data"),
        xytext=(4, 0),
        textcoords="offset points",
        ha="left",
        va="center",
        fontsize=9.5,
        color=color,
        annotation_clip=False,
    )


def _draw_limits(ax: Any, panel: _Panel, decimals: int) -> None:
    if panel.centre is None or panel.y.size == 0:
        return
    constant = all(np.ptp(a) == 0.0 for a in (panel.centre, panel.lcl, panel.ucl))
    style = {"linewidth": 1.2, "zorder": 2}
    if constant:
        ax.axhline(panel.centre[0], color=GREEN, **style)
        ax.axhline(panel.ucl[0], color=VERMILLION, **style)
        if panel.lcl[0] > 0.0 or panel.statistic in ("x", "xbar"):
            ax.axhline(panel.lcl[0], color=VERMILLION, **style)
    else:
        for array, color in (
            (panel.centre, GREEN),
            (panel.ucl, VERMILLION),
            (panel.lcl, VERMILLION),
        ):
            ax.plot(panel.x, array, drawstyle="steps-mid", color=color, **style)
    # Labels give the limits of the last point; lines that coincide (limits without
    # variation) share one label.
    lines = [("UCL", float(panel.ucl[-1]), VERMILLION), ("CL", float(panel.centre[-1]), GREEN)]
    if panel.lcl[-1] > 0.0 or panel.statistic in ("x", "xbar"):
        lines.append(("LCL", float(panel.lcl[-1]), VERMILLION))
    for value in dict.fromkeys(value for _name, value, _colour in lines):
        names = [name for name, other, _colour in lines if other == value]
        colour = next(colour for _name, other, colour in lines if other == value)
        _line_label(ax, value, f"{' = '.join(names)} {_fmt(value, decimals)}", colour)


def _draw_spec(
    ax: Any, prepared: Mapping[str, Any], decimals: int, view: tuple[float, float]
) -> tuple[float, float, list[str]]:
    """LSL/USL dashed and target dotted; returns the y range to show and what is off scale."""
    low, high = view
    centre, half = (low + high) / 2.0, max((high - low) / 2.0, 1e-12)
    off_scale = []
    for key, label, style in (
        ("usl", "USL", {"color": PURPLE, "linestyle": (0, (6, 3)), "linewidth": 1.6}),
        ("lsl", "LSL", {"color": PURPLE, "linestyle": (0, (6, 3)), "linewidth": 1.6}),
        ("target", "Target", {"color": GREY, "linestyle": (0, (1, 2)), "linewidth": 1.2}),
    ):
        value = prepared[key]
        if value is None:
            continue
        text = f"{label} {_fmt(value, decimals)}"
        if abs(value - centre) > SPEC_VIEW_FACTOR * half:
            off_scale.append(f"{text} off scale ({'above' if value > centre else 'below'})")
            continue
        ax.axhline(value, zorder=1.5, **style)
        low, high = min(low, value), max(high, value)
        ax.annotate(
            text,
            xy=(0.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(4, 3 if key != "lsl" else -3),
            textcoords="offset points",
            ha="left",
            va="bottom" if key != "lsl" else "top",
            fontsize=9.5,
            color=style["color"] if key != "target" else BLACK,
            bbox={
                "boxstyle": "square,pad=0.1",
                "facecolor": "white",
                "edgecolor": "none",
                "alpha": 0.8,
            },
            zorder=6,
        )
    return low, high, off_scale


def _draw_points(ax: Any, panel: _Panel, width_px: int, rows: int) -> dict[str, int]:
    """The series, its signalling points by kind, and the rule labels; returns kinds seen."""
    many = panel.y.size > MARKER_LIMIT
    ax.plot(
        panel.x,
        panel.y,
        color=BLUE,
        linewidth=0.8 if many else 1.1,
        marker=None if many else "o",
        markersize=3.5,
        zorder=3,
    )
    if not panel.signals:
        return {}
    kinds: dict[str, list[int]] = {kind: [] for kind in _KIND_ORDER}
    for where, labels in sorted(panel.signals.items()):
        kinds[_point_kind(labels)].append(where)
    seen = {}
    for kind in _KIND_ORDER:
        if not kinds[kind]:
            continue
        style = _KIND_STYLE[kind]
        where = np.array(kinds[kind])
        ax.plot(
            panel.x[where],
            panel.y[where],
            linestyle="none",
            marker=style["marker"],
            markersize=5.5 if many else 7,
            markerfacecolor=style["color"],
            markeredgecolor=BLACK,
            markeredgewidth=0.6,
            zorder=5,
        )
        seen[kind] = where.size
    _label_signals(ax, panel, width_px, rows)
    return seen


def _label_signals(ax: Any, panel: _Panel, width_px: int, rows: int) -> None:
    """Rule labels next to the signalling points, latest first, where there is room.

    A label goes on the first of ``rows`` rows (above the point when it lies above the centre
    line, else below) where it does not overlap a label already placed; a point with no room
    keeps its marker only. Widths are estimated from the character count, which is enough
    for short labels such as "N1 N5".
    """
    span = float(panel.x[-1] - panel.x[0]) if panel.x.size > 1 else 1.0
    span = span or 1.0
    per_px = span / (width_px * 0.82)  # data units per pixel across the plotting area
    centre = panel.centre if panel.centre is not None else np.full(panel.y.size, np.median(panel.y))
    placed: dict[tuple[bool, int], list[tuple[float, float]]] = {}
    ordered = sorted(panel.signals, reverse=True)
    count = 0
    for where in ordered:
        if count >= LABEL_LIMIT:
            break
        labels = panel.signals[where]
        text = " ".join(labels)
        x, y = float(panel.x[where]), float(panel.y[where])
        half = (len(text) * 8.0 + 8.0) / 2 * per_px
        up = bool(y >= centre[where])
        row = next(
            (
                level
                for level in range(rows)
                if all(
                    abs(x - other) > half + other_half
                    for other, other_half in placed.get((up, level), ())
                )
            ),
            None,
        )
        if row is None:
            continue
        placed.setdefault((up, row), []).append((x, half))
        count += 1
        kind = _point_kind(labels)
        ax.annotate(
            text,
            xy=(x, y),
            xytext=(0, (LABEL_OFFSET_PT + LABEL_ROW_PT * row) * (1 if up else -1)),
            textcoords="offset points",
            ha="center",
            va="bottom" if up else "top",
            fontsize=9,
            fontweight="bold",
            color=_LABEL_COLOURS[kind],
            zorder=7,
        )
    if count < len(ordered):
        ax.text(
            1.0,
            1.0,
            f"rule labels on {count} of {len(ordered):,} signalling points (latest first)",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=9,
            color=GREY,
        )


def _point_kind(labels: Sequence[str]) -> str:
    """The most severe kind among the rules that fired at one point."""
    return min((_kind(_LABEL_RULES[label]) for label in labels), key=_KIND_ORDER.index)


def _view(panel: _Panel) -> tuple[float, float]:
    """The y range the spec limits are judged against: the control limits, else the data."""
    if panel.centre is not None:
        return float(np.min(panel.lcl)), float(np.max(panel.ucl))
    return float(np.min(panel.y)), float(np.max(panel.y))


def _headroom_px(rows: int) -> float:
    """Pixels above the highest point (and below the lowest) that ``rows`` label rows need."""
    if rows == 0:
        return 8.0
    points = LABEL_OFFSET_PT + LABEL_ROW_PT * (rows - 1) + LABEL_HEIGHT_PT
    return points * PX_PER_INCH / 72.0


def _set_ylim(
    ax: Any,
    panel: _Panel,
    low: float,
    high: float,
    *,
    axes_px: float,
    rows: int,
    floor: float | None = None,
) -> None:
    """Show [low, high] and every point, with room above and below for the rule labels."""
    low = min(low, float(np.min(panel.y)))
    high = max(high, float(np.max(panel.y)))
    if high <= low:
        half = max(abs(high) * 0.05, 1.0)
        low, high = low - half, high + half
    head = min(_headroom_px(rows if panel.signals else 0), axes_px * 0.3)
    pad = (high - low) * head / (axes_px - 2.0 * head)
    bottom = low - pad
    if floor is not None and low >= floor:
        # Nothing is drawn below the floor (a range, a proportion): keep a sliver under it.
        bottom = max(bottom, floor - (high - floor) * 0.04)
    ax.set_ylim(bottom, high + pad)


def _x_axis(ax: Any, dates: bool, tz: tzinfo, label: str) -> None:
    if dates:
        locator = mdates.AutoDateLocator(tz=tz, minticks=4, maxticks=10)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
        ax.set_xlabel(f"Measured at ({_tz_name(tz)})")
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(label)


def _tz_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or tz.tzname(datetime(2000, 1, 1, tzinfo=UTC)) or "UTC"


def _message(ax: Any, headline: str, detail: str | None = None) -> None:
    ax.set_axis_off()
    ax.text(
        0.5,
        0.56,
        headline,
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=15,
        fontweight="bold",
        color=BLACK,
        bbox={"boxstyle": "round,pad=0.6", "facecolor": "#F2F2F2", "edgecolor": GREY},
    )
    if detail:
        ax.text(
            0.5,
            0.36,
            detail,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=11,
            color=GREY,
            wrap=True,
        )


def _figure(width_px: int, height_px: int) -> Figure:
    return Figure(
        figsize=(width_px / PX_PER_INCH, height_px / PX_PER_INCH),
        dpi=PX_PER_INCH,
        layout="constrained",
        facecolor="white",
    )


def _output(figure: Figure, fmt: str, title: str, salt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "svg":
        mpl.rcParams["svg.hashsalt"] = salt
        FigureCanvasSVG(figure).print_svg(
            buffer, metadata={"Title": title, "Date": None, "Creator": "Celltrace SPC"}
        )
        # The title element names the chart for screen readers (role img).
        return buffer.getvalue().replace(b"<svg ", b'<svg role="img" ', 1)
    if fmt == "png":
        FigureCanvasAgg(figure).print_png(
            buffer, metadata={"Title": title, "Software": "Celltrace SPC"}
        )
        return buffer.getvalue()
    FigureCanvasPdf(figure).print_pdf(
        buffer,
        metadata={
            "Title": title,
            "Creator": "Celltrace SPC",
            "Producer": None,
            "CreationDate": None,
        },
    )
    return buffer.getvalue()


class _Settings:
    """Matplotlib's defaults plus :data:`_RC` for the duration of one drawing."""

    def __enter__(self) -> None:
        _LOCK.acquire()
        try:
            self._context = mpl.rc_context()
            self._context.__enter__()
            mpl.rcdefaults()
            mpl.rcParams.update(_RC)
        except BaseException:
            _LOCK.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self._context.__exit__(*exc)
        finally:
            _LOCK.release()


def _salt(kind: str, code: str) -> str:
    # Distinct ids per characteristic and chart kind, so several charts inlined in one page
    # never share an id; the same chart always gets the same ones.
    return hashlib.sha256(f"celltrace-spc:{kind}:{code}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- control chart


def control_chart(
    data: ControlChartData,
    *,
    fmt: str = "svg",
    width_px: int = DEFAULT_WIDTH_PX,
    height_px: int = DEFAULT_HEIGHT_PX,
    tz: tzinfo | None = None,
) -> bytes:
    """The control chart of ``data`` as SVG, PNG or PDF bytes.

    ``tz`` is the zone the time axis is shown in (UTC by default). Invalid input is refused
    with ``ValueError`` before anything is drawn; no points draws a message.
    """
    _check_format(fmt)
    _check_size(width_px, height_px)
    prepared = _prepare_chart(data)
    tz = tz or UTC
    title = _title(data.code, data.name, data.unit)
    with _Settings():
        figure = _figure(width_px, height_px)
        if prepared["values"].size == 0:
            ax = figure.add_subplot()
            figure.suptitle(_shorten(title, 70), fontweight="bold", x=0.01, ha="left")
            _message(
                ax, "No data points", "nothing was measured for this characteristic in the period"
            )
            return _output(figure, fmt, f"{title}: no data points", _salt("chart", data.code))
        _draw_chart(figure, data, prepared, tz, title, width_px, height_px)
        return _output(figure, fmt, _description(title, prepared), _salt("chart", data.code))


def _description(title: str, prepared: Mapping[str, Any]) -> str:
    chart = prepared["chart"]
    name = _CHART_NAMES[chart] if chart is not None else "Run chart"
    count = prepared["values"].size
    text = f"{title}: {name}, {count:,} points, {prepared['signal_count']:,} signals"
    if prepared["rule_counts"]:
        text += (
            " ("
            + ", ".join(
                f"{k} \N{MULTIPLICATION SIGN}{v}" for k, v in prepared["rule_counts"].items()
            )
            + ")"
        )
    return text


def _draw_chart(
    figure: Figure,
    data: ControlChartData,
    prepared: Mapping[str, Any],
    tz: tzinfo,
    title: str,
    width_px: int,
    height_px: int,
) -> None:
    main, dispersion, cusum = prepared["main"], prepared["dispersion"], prepared["cusum"]
    ratios = [3.0] + [1.4] * ((dispersion is not None) + (cusum is not None))
    axes = figure.subplots(
        len(ratios), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": ratios}
    )[:, 0]
    figure.suptitle(_shorten(title, 70), fontweight="bold", x=0.01, ha="left")
    # Height of all panels together: the figure less its title, subtitle and time axis.
    plot_px = height_px - 130.0 - 24.0 * (len(ratios) - 1)
    decimals = _decimals(_point_sigma(main))

    kinds: dict[str, int] = {}
    ax = axes[0]
    _draw_limits(ax, main, decimals)
    low, high, off_scale = _draw_spec(ax, prepared, decimals, _view(main))
    for kind, number in _draw_points(ax, main, width_px, rows=2).items():
        kinds[kind] = kinds.get(kind, 0) + number
    _set_ylim(
        ax,
        main,
        low,
        high,
        axes_px=plot_px * ratios[0] / sum(ratios),
        rows=2,
        floor=0.0 if main.statistic in _UNITLESS else None,
    )
    statistic_unit = "" if main.statistic in _UNITLESS else data.unit
    ax.set_ylabel(_with_unit(_STATISTIC_NAMES[main.statistic], statistic_unit))
    ax.set_title(" · ".join([_subtitle(prepared), *off_scale]), loc="left", fontsize=10, color=GREY)

    row = 1
    if dispersion is not None:
        ax = axes[row]
        row += 1
        if dispersion.y.size:
            _draw_limits(ax, dispersion, decimals)
            for kind, number in _draw_points(ax, dispersion, width_px, rows=1).items():
                kinds[kind] = kinds.get(kind, 0) + number
            _set_ylim(
                ax,
                dispersion,
                *_view(dispersion),
                axes_px=plot_px * ratios[1] / sum(ratios),
                rows=1,
                floor=0.0,
            )
        ax.set_ylabel(_with_unit(_SHORT_NAMES[dispersion.statistic], data.unit))
    if cusum is not None:
        _draw_cusum(axes[row], main.x, cusum, prepared["cusum_signals"])
    _x_axis(axes[-1], prepared["dates"], tz, "Subgroup" if main.statistic == "xbar" else "Sample")

    handles = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker=_KIND_STYLE[kind]["marker"],
            markersize=7,
            markerfacecolor=_KIND_STYLE[kind]["color"],
            markeredgecolor=BLACK,
            markeredgewidth=0.6,
            label=f"{_KIND_STYLE[kind]['label']}: {kinds[kind]:,}",
        )
        for kind in _KIND_ORDER
        if kind in kinds
    ]
    if handles:
        figure.legend(handles=handles, loc="outside upper right", ncols=len(handles), frameon=False)


def _point_sigma(panel: _Panel) -> float:
    """Scale of the plotted statistic, for the decimals of the limit labels."""
    if panel.centre is not None:
        width = float(np.max(panel.ucl - panel.centre))
        if width > 0:
            return width / 3.0
        # Limits without variation: the size of the centre (or of the data) sets the scale.
        return max(abs(float(panel.centre[-1])), float(np.ptp(panel.y)), 0.01)
    if panel.y.size > 1 and float(np.std(panel.y)) > 0:
        return float(np.std(panel.y))
    return max(abs(float(panel.y[0])) / 100.0, 0.01)


def _shorten(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1].rstrip() + "…"


def _subtitle(prepared: Mapping[str, Any]) -> str:
    limits: Limits | None = prepared["limits"]
    count = prepared["values"].size
    if limits is None:
        return f"Run chart · {count:,} points · no control limits yet"
    parts = [_CHART_NAMES[limits.chart], f"{count:,} points"]
    if limits.n is not None and limits.n > 1:
        parts.append(f"n = {limits.n}")
    if limits.sigma_method == "given":
        parts.append("limits from given standards")
    else:
        parts.append(
            f"limits from {limits.baseline_size:,} "
            f"{'subgroups' if limits.chart in (ChartType.XBAR_R, ChartType.XBAR_S) else 'points'}"
            f" ({limits.sigma_method})"
        )
    if limits.degenerate:
        parts.append("no variation in the baseline: limits on the centre line")
    return " · ".join(parts)


def _draw_cusum(
    ax: Any, x: np.ndarray, cusum: Mapping[str, Any], signals: Mapping[int, list[str]]
) -> None:
    """C+ upwards and C- downwards (as -C-), against +h and -h."""
    h = cusum["h"]
    ax.axhline(h, color=VERMILLION, linewidth=1.2)
    ax.axhline(0.0, color=GREY, linewidth=0.8)
    lines = []
    if "up" in cusum:
        (line,) = ax.plot(x, cusum["up"], color=BLUE, linewidth=1.0, label="C+")
        lines.append(line)
    if "down" in cusum:
        ax.axhline(-h, color=VERMILLION, linewidth=1.2)
        (line,) = ax.plot(
            x,
            -cusum["down"],
            color=ORANGE,
            linewidth=1.0,
            linestyle=(0, (4, 1.5)),
            label=f"C{MINUS}",
        )
        lines.append(line)
        _line_label(ax, -h, f"{MINUS}h = {MINUS}{h:g}", VERMILLION)
    _line_label(ax, h, f"h = {h:g}", VERMILLION)
    if signals:
        where = np.array(sorted(signals))
        up = cusum.get("up", np.zeros_like(x))[where]
        down = cusum.get("down", np.zeros_like(x))[where]
        y = np.where(up >= down, up, -down)
        ax.plot(
            x[where],
            y,
            linestyle="none",
            marker="^",
            markersize=6,
            markerfacecolor=PURPLE,
            markeredgecolor=BLACK,
            markeredgewidth=0.5,
            zorder=5,
        )
    top = max(h, *(float(np.max(cusum[s])) for s in ("up", "down") if s in cusum))
    ax.set_ylim(-top * 1.15 if "down" in cusum else -0.1 * top, top * 1.15)
    ax.set_ylabel(f"CUSUM ({SIGMA})")
    ax.legend(handles=lines, loc="upper left", frameon=False, ncols=len(lines))


# ---------------------------------------------------------------------- capability


def capability_histogram(
    data: HistogramData,
    *,
    fmt: str = "svg",
    width_px: int = DEFAULT_WIDTH_PX,
    height_px: int = DEFAULT_HEIGHT_PX,
) -> bytes:
    """Histogram of ``data.values`` with specification limits, normal curves and indices.

    A study that is not ``ok`` (too few values, no variation) or no values at all is drawn
    with a message in place of the indices; bad input is refused with ``ValueError``.
    """
    _check_format(fmt)
    _check_size(width_px, height_px)
    values = as_finite_array(data.values, "values")
    study = _study(data.capability)
    lsl, usl, target = _histogram_limits(data, study)
    if data.bins is not None and (
        isinstance(data.bins, bool) or not isinstance(data.bins, int) or not 1 <= data.bins <= 500
    ):
        raise ValueError(f"bins must be an int within 1..500, got {data.bins!r}")
    title = _title(data.code, data.name, data.unit)
    with _Settings():
        figure = _figure(width_px, height_px)
        figure.suptitle(title, fontweight="bold", x=0.01, ha="left")
        if values.size == 0:
            ax = figure.add_subplot()
            _message(ax, "Insufficient data", "no values: capability needs at least 2")
            return _output(
                figure, fmt, f"{title}: capability, insufficient data", _salt("hist", data.code)
            )
        hist_ax, text_ax = figure.subplots(1, 2, gridspec_kw={"width_ratios": [2.6, 1.0]})
        decimals = _draw_histogram(hist_ax, values, study, lsl, usl, target, data)
        _draw_indices(text_ax, values, study, decimals, data.unit)
        return _output(
            figure, fmt, _histogram_description(title, values, study), _salt("hist", data.code)
        )


def _study(raw: Any) -> Mapping[str, Any] | None:
    if raw is None:
        return None
    if hasattr(raw, "to_dict"):
        raw = raw.to_dict()
    if not isinstance(raw, Mapping) or "status" not in raw:
        raise ValueError("capability must be Capability.to_dict() (or a Capability)")
    return raw


def _histogram_limits(
    data: HistogramData, study: Mapping[str, Any] | None
) -> tuple[float | None, float | None, float | None]:
    given = {"lsl": data.lsl, "usl": data.usl, "target": data.target}
    if study is not None:
        for key, value in given.items():
            stored = study.get(key)
            if value is None:
                given[key] = stored
            elif stored is not None and float(value) != float(stored):
                raise ValueError(
                    f"{key} {value} differs from the capability study's {key} {stored}"
                )
            elif stored is None and key != "target":
                raise ValueError(f"{key} {value} was not part of the capability study")
    return _spec_limits(given["lsl"], given["usl"], given["target"])


def _draw_histogram(
    ax: Any,
    values: np.ndarray,
    study: Mapping[str, Any] | None,
    lsl: float | None,
    usl: float | None,
    target: float | None,
    data: HistogramData,
) -> int:
    """Histogram, normal curves and spec limits; returns the decimals used for the values."""
    mean = float(np.mean(values))
    overall = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    within = None
    if study is not None and study.get("status") == "ok":
        mean = float(study["mean"])
        overall = float(study["sigma_overall"])
        within = study.get("sigma_within")
    low, high = float(np.min(values)), float(np.max(values))
    spread = max(overall, within or 0.0)
    if spread > 0:
        low, high = min(low, mean - 4 * spread), max(high, mean + 4 * spread)
    for limit in (lsl, usl, target):
        if limit is not None and (spread == 0 or abs(limit - mean) < 12 * spread):
            low, high = min(low, limit), max(high, limit)
    if high <= low:
        low, high = low - max(abs(low) * 0.01, 0.5), high + max(abs(high) * 0.01, 0.5)
    data_low, data_high = float(np.min(values)), float(np.max(values))
    if data.bins is not None:
        bins = data.bins
    elif data_high > data_low:
        bins = int(np.clip(len(np.histogram_bin_edges(values, bins="auto")) - 1, 8, 60))
    else:
        bins = 1
    counts, edges, _patches = ax.hist(
        values,
        bins=bins,
        range=(data_low, data_high) if data_high > data_low else (data_low - 0.5, data_high + 0.5),
        color=SKY,
        edgecolor="white",
        linewidth=0.6,
        label="values",
        zorder=2,
    )
    width = float(edges[1] - edges[0])
    decimals = _decimals(spread if spread > 0 else width)
    grid = np.linspace(low, high, 400)
    curves = []
    if overall > 0:
        density = np.exp(-0.5 * ((grid - mean) / overall) ** 2) / (overall * math.sqrt(2 * math.pi))
        curves.append(
            ax.plot(
                grid,
                density * values.size * width,
                color=BLUE,
                linewidth=2.0,
                label=f"normal, overall s = {_fmt(overall, decimals + 1)}",
            )[0]
        )
    if within:
        density = np.exp(-0.5 * ((grid - mean) / within) ** 2) / (within * math.sqrt(2 * math.pi))
        curves.append(
            ax.plot(
                grid,
                density * values.size * width,
                color=ORANGE,
                linewidth=1.8,
                linestyle=(0, (5, 2)),
                label=f"normal, within {SIGMA} = {_fmt(float(within), decimals + 1)}",
            )[0]
        )
    top = (
        max(float(np.max(counts)), *(float(np.max(c.get_ydata())) for c in curves))
        if curves
        else float(np.max(counts))
    )
    ax.set_ylim(0, top * 1.18 if top > 0 else 1)
    ax.set_xlim(low - (high - low) * 0.03, high + (high - low) * 0.03)
    for value, label, color, style in (
        (lsl, "LSL", PURPLE, (0, (6, 3))),
        (usl, "USL", PURPLE, (0, (6, 3))),
        (target, "Target", BLACK, (0, (1, 2))),
    ):
        if value is None:
            continue
        if not low - 1e-12 <= value <= high + 1e-12:
            ax.annotate(
                f"{label} {_fmt(value, decimals)} {'→' if value > high else '←'}",
                xy=(1.0 if value > high else 0.0, 0.97),
                xycoords="axes fraction",
                ha="right" if value > high else "left",
                va="top",
                fontsize=9.5,
                color=color,
            )
            continue
        ax.axvline(value, color=color, linestyle=style, linewidth=1.6, zorder=3)
        ax.annotate(
            f"{label} {_fmt(value, decimals)}",
            xy=(value, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9.5,
            color=color,
        )
    ax.set_xlabel(_with_unit(data.name or data.code, data.unit))
    ax.set_ylabel("Count")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="x", visible=False)
    if curves:
        ax.legend(handles=curves, loc="upper left", frameon=False)
    return decimals


def _histogram_description(title: str, values: np.ndarray, study: Mapping[str, Any] | None) -> str:
    text = f"{title}: capability histogram of {values.size:,} values"
    if study is None:
        return text
    if study.get("status") != "ok":
        return f"{text}; {study.get('reason') or study.get('status')}"
    parts = []
    for index in study.get("indices", ()):
        if index["name"] in ("Cp", "Cpk", "Pp", "Ppk") and index.get("value") is not None:
            parts.append(f"{index['name']} {index['value']:.2f}")
    return f"{text}; " + ", ".join(parts) if parts else text


def _index_parts(index: Mapping[str, Any] | None) -> tuple[str, str]:
    """Estimate and interval of one index as text; an undefined index is a dash."""
    if index is None or index.get("value") is None:
        return "\N{EM DASH}", ""
    interval = ""
    if index.get("lower") is not None and index.get("upper") is not None:
        interval = f"{_fmt(index['lower'], 2)} \N{EN DASH} {_fmt(index['upper'], 2)}"
    return _fmt(index["value"], 2), interval


def _cell(ax: Any, row: float, column_pt: float, text: str, **style: Any) -> None:
    """Text in the side panel at a fixed row and column, in points from its top left corner."""
    ax.annotate(
        text,
        xy=(0.0, 1.0),
        xycoords="axes fraction",
        xytext=(column_pt, -row * TABLE_ROW_PT),
        textcoords="offset points",
        ha="left",
        va="top",
        fontsize=style.pop("fontsize", 10.5),
        annotation_clip=False,
        **style,
    )


def _draw_indices(
    ax: Any, values: np.ndarray, study: Mapping[str, Any] | None, decimals: int, unit: str
) -> None:
    """The study beside the histogram: n, mean, sigmas, the indices with their intervals."""
    ax.set_axis_off()
    if study is None:
        _cell(ax, 0, 0, f"n = {values.size:,}")
        _cell(ax, 2, 0, "Capability not computed", color=GREY)
        return
    status = study.get("status")
    if status != "ok":
        headline = "Insufficient data" if status == "insufficient_data" else "No variation"
        _message(ax, headline, _wrap(study.get("reason") or "indices are undefined", 34))
        return
    by_name = {index["name"]: index for index in study.get("indices", ())}
    suffix = f" {unit}" if unit else ""
    _cell(ax, 0, 0, f"n = {study['n']:,}    mean = {_fmt(study['mean'], decimals + 1)}{suffix}")
    sigmas = f"s overall = {_fmt(study['sigma_overall'], decimals + 1)}"
    if study.get("sigma_within") is not None:
        sigmas += f"    {SIGMA} within = {_fmt(study['sigma_within'], decimals + 1)}"
    _cell(ax, 1, 0, sigmas)
    header = {"color": GREY, "fontsize": 9.5}
    _cell(ax, 2.6, 0, "Index", **header)
    _cell(ax, 2.6, 48, "Estimate", **header)
    _cell(ax, 2.6, 112, f"{float(study.get('confidence', 0.95)):.0%} interval", **header)
    row = 3.6
    for name in ("Cp", "Cpk", "Pp", "Ppk", "Cpm"):
        if name not in by_name:
            continue
        estimate, interval = _index_parts(by_name[name])
        _cell(ax, row, 0, name, fontweight="bold")
        _cell(ax, row, 48, estimate)
        _cell(ax, row, 112, interval)
        row += 1
    normality = study.get("normality")
    if normality is not None:
        verdict = "normal" if normality["normal"] else "not normal"
        p_value = normality["p_value"]
        p_text = f"= {p_value:.3f}" if p_value >= 0.001 else "< 0.001"
        _cell(ax, row + 0.6, 0, f"Anderson-Darling p {p_text} ({verdict})")
        row += 1.6
    nonnormal = study.get("nonnormal")
    if nonnormal is not None:
        percentile = {index["name"]: index for index in nonnormal["indices"]}
        _cell(ax, row, 0, f"Percentile method ({nonnormal['distribution']}):")
        pp, _ = _index_parts(percentile.get("Pp"))
        ppk, _ = _index_parts(percentile.get("Ppk"))
        _cell(ax, row + 1, 0, "Pp", fontweight="bold")
        _cell(ax, row + 1, 48, pp)
        _cell(ax, row + 2, 0, "Ppk", fontweight="bold")
        _cell(ax, row + 2, 48, ppk)
    notes = [_wrap(text, 44) for text in study.get("warnings", ())]
    undefined = [
        f"{name}: {by_name[name]['reason']}"
        for name in ("Cp", "Pp", "Cpm")
        if name in by_name and by_name[name].get("value") is None and by_name[name].get("reason")
    ]
    notes += [_wrap(text, 44) for text in dict.fromkeys(undefined)]
    if notes:
        ax.text(
            0.0,
            0.0,
            "\n".join(notes),
            transform=ax.transAxes,
            ha="left",
            va="bottom",
            fontsize=9,
            color=_LABEL_COLOURS["run"],
        )


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return "\n".join(lines)
