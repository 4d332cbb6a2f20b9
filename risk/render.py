"""Drawings of the cell and risk pages as SVG markup built by hand: formation curves (voltage
against capacity, dQ/dV against voltage), the aging OCV log with its fitted K-value line, a
feature's lot distribution with the cell marked, and the distribution of risk scores of a
lot with the quarantine threshold.

Pure functions over numbers and plain data classes: no Django models, no database. Built by
hand like ``inspection/render.py`` (lines, dots and boxes only; small markup), and every
element a page or a test reads carries ``data-`` attributes (step, kind, K-value, counts).

Invariants
----------
* Same input, same markup: no ids from counters or clocks, numbers with fixed decimals, and
  where points are thinned out for drawing, the same points every time.
* Every text is escaped.
* Colours are the Okabe-Ito palette (safe for the common colour-vision deficiencies); charge
  and discharge also differ by dash pattern, the cell's own mark by shape.
* Non-finite values are left out of a drawing, never drawn at 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

from inspection.render import nice_ticks

__all__ = [
    "CurveSeries",
    "aging_chart",
    "curve_chart",
    "risk_histogram",
    "strip_box",
    "thin",
]

BLUE = "#0072B2"
SKY = "#56B4E9"
GREEN = "#009E73"
ORANGE = "#E69F00"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
BLACK = "#000000"
GREY = "#595959"
INK = "#1d2430"
SOFT = "#4a5566"
GRID = "#e6e9ef"
FRAME = "#c3cad6"

CHARGE_COLOURS = (BLUE, SKY, GREEN, BLACK)
DISCHARGE_COLOURS = (VERMILLION, ORANGE, PURPLE, GREY)

#: Points of one curve drawn at most (the full-resolution samples are thinned to this).
MAX_POINTS = 600
#: Lot values drawn as dots in a strip at most (evenly spaced quantiles of the lot).
STRIP_DOTS = 160
#: The risk axis of the histogram: log10(risk) from this decade to 0 (risk 1).
RISK_LOG10_MIN = -5.0
RISK_BINS_PER_DECADE = 4
_FONT = 'font-family="system-ui, DejaVu Sans, sans-serif"'


def _n(value: float) -> str:
    """A coordinate: two decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels of evenly spaced ticks with as many decimals as their spacing needs (3,650.5
    and 3,651.0, not 3,650 twice)."""
    if len(ticks) < 2:
        return [f"{t:,.6g}" for t in ticks]
    step = abs(ticks[1] - ticks[0])
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9)) if 0 < step < 1 else 0
    return [f"{t:,.{decimals}f}" for t in ticks]


def thin(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS):
    """At most ``max_points`` of a curve, evenly spaced by index, first and last kept;
    non-finite points left out."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) <= max_points:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(np.int64))
    return x[idx], y[idx]


def _span(lo: float, hi: float, pad: float = 0.04) -> tuple[float, float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi <= lo:
        half = abs(lo) * 0.01 or 0.5
        return lo - half, hi + half
    d = (hi - lo) * pad
    return lo - d, hi + d


@dataclass(frozen=True)
class CurveSeries:
    """One step's curve: ``kind`` is ``charge`` or ``discharge`` (colour and dash), ``step``
    the step's sequence in its run, ``label`` what the legend says."""

    step: int
    kind: str
    label: str
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)


def _frame(
    *,
    css: str,
    title: str,
    width: int,
    height: int,
    box: tuple[float, float, float, float],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    x_label: str,
    y_label: str,
    aria: str,
    extra_attrs: str = "",
) -> list[str]:
    """The opening of a chart: svg root, title, plot frame, grid, ticks and axis labels."""
    left, top, pw, ph = box
    x0, x1 = x_range
    y0, y1 = y_range
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="{css}" role="img" '
        f'aria-label="{escape(aria)}" data-plot="{_n(left)} {_n(top)} {_n(pw)} {_n(ph)}" '
        f'data-x-range="{x0:.10g} {x1:.10g}" data-y-range="{y0:.10g} {y1:.10g}"{extra_attrs}>',
        f"<title>{escape(title)}</title>",
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(pw)}" height="{_n(ph)}" '
        f'fill="#fbfcfd" stroke="{FRAME}"/>',
    ]
    x_ticks = [t for t in nice_ticks(x0, x1, 8) if x0 <= t <= x1]
    for t, text in zip(x_ticks, _tick_labels(x_ticks), strict=True):
        x = left + (t - x0) / (x1 - x0) * pw
        out.append(
            f'<line x1="{_n(x)}" y1="{_n(top)}" x2="{_n(x)}" y2="{_n(top + ph)}" '
            f'stroke="{GRID}"/><text x="{_n(x)}" y="{_n(top + ph + 14)}" font-size="11" '
            f'{_FONT} text-anchor="middle" fill="{SOFT}">{text}</text>'
        )
    y_ticks = [t for t in nice_ticks(y0, y1, 6) if y0 <= t <= y1]
    for t, text in zip(y_ticks, _tick_labels(y_ticks), strict=True):
        y = top + ph - (t - y0) / (y1 - y0) * ph
        out.append(
            f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(left + pw)}" y2="{_n(y)}" '
            f'stroke="{GRID}"/><text x="{_n(left - 6)}" y="{_n(y + 4)}" font-size="11" '
            f'{_FONT} text-anchor="end" fill="{SOFT}">{text}</text>'
        )
    out.append(
        f'<text x="{_n(left + pw / 2)}" y="{_n(height - 6)}" font-size="12" {_FONT} '
        f'text-anchor="middle" fill="{INK}">{escape(x_label)}</text>'
        f'<text x="14" y="{_n(top + ph / 2)}" font-size="12" {_FONT} text-anchor="middle" '
        f'fill="{INK}" transform="rotate(-90 14 {_n(top + ph / 2)})">{escape(y_label)}</text>'
    )
    return out


def _empty(out: list[str], box, message: str) -> str:
    left, top, pw, ph = box
    out.append(
        f'<text x="{_n(left + pw / 2)}" y="{_n(top + ph / 2)}" font-size="13" {_FONT} '
        f'text-anchor="middle" fill="#6b7687">{escape(message)}</text></svg>'
    )
    return "".join(out)


# ------------------------------------------------------------------------ formation curves


def curve_chart(
    series: Sequence[CurveSeries],
    *,
    title: str,
    x_label: str,
    y_label: str,
    css: str,
    markers: Sequence[tuple[float, str]] = (),
    empty: str = "No curve recorded.",
    width: int = 640,
    height: int = 340,
) -> str:
    """Curves of several steps on one pair of axes: one ``<path class="curve">`` per step
    (``data-step``, ``data-kind``, ``data-points``), charge solid in blues, discharge dashed
    in reds, a legend above, and ``markers`` as dotted vertical lines at an x value with a
    label (``<line class="marker">``). Without a finite point: the frame with ``empty``."""
    left, right, bottom = 56.0, 14.0, 40.0
    drawn = [(s, *thin(s.x, s.y)) for s in series]
    drawn = [(s, x, y) for s, x, y in drawn if len(x) >= 2]
    # the legend above the plot, wrapped to the chart's width: its rows set the top margin
    places, lx, ly = [], left, 16.0
    for s, _, _ in drawn:
        width_text = 30 + 6.4 * len(s.label)
        if lx + width_text > width - right and lx > left:
            lx, ly = left, ly + 15
        places.append((lx, ly))
        lx += width_text
    top = ly + 16
    box = (left, top, width - left - right, height - top - bottom)
    xs = np.concatenate([x for _, x, _ in drawn]) if drawn else np.array([])
    ys = np.concatenate([y for _, _, y in drawn]) if drawn else np.array([])
    x_range = _span(float(xs.min()), float(xs.max()), 0.0) if len(xs) else (0.0, 1.0)
    y_range = _span(float(ys.min()), float(ys.max())) if len(ys) else (0.0, 1.0)
    aria = f"{title}: {len(drawn)} step{'s' if len(drawn) != 1 else ''}"
    out = _frame(
        css=f"chart {css}",
        title=title,
        width=width,
        height=height,
        box=box,
        x_range=x_range,
        y_range=y_range,
        x_label=x_label,
        y_label=y_label,
        aria=aria,
    )
    if not drawn:
        return _empty(out, box, empty)
    pw, ph = box[2], box[3]
    (x0, x1), (y0, y1) = x_range, y_range

    def px(v: np.ndarray) -> np.ndarray:
        return left + (v - x0) / (x1 - x0) * pw

    def py(v: np.ndarray) -> np.ndarray:
        return top + ph - (v - y0) / (y1 - y0) * ph

    counters = {"charge": 0, "discharge": 0}
    legend = []
    out.append('<g class="curves">')
    for s, x, y in drawn:
        palette = DISCHARGE_COLOURS if s.kind == "discharge" else CHARGE_COLOURS
        colour = palette[counters.get(s.kind, 0) % len(palette)]
        counters[s.kind] = counters.get(s.kind, 0) + 1
        dash = ' stroke-dasharray="6 3"' if s.kind == "discharge" else ""
        d = "M" + "L".join(f"{_n(a)} {_n(b)}" for a, b in zip(px(x), py(y), strict=True))
        out.append(
            f'<path class="curve" data-step="{s.step}" data-kind="{escape(s.kind)}" '
            f'data-points="{len(x)}" d="{d}" fill="none" stroke="{colour}" stroke-width="1.8"'
            f"{dash}><title>{escape(s.label)}</title></path>"
        )
        legend.append((s, colour, dash))
    out.append("</g>")
    for value, text in markers:
        if not (math.isfinite(value) and x0 <= value <= x1):
            continue
        x = float(px(np.array([value]))[0])
        out.append(
            f'<line class="marker" data-x="{value:.4f}" x1="{_n(x)}" y1="{_n(top)}" '
            f'x2="{_n(x)}" y2="{_n(top + ph)}" stroke="{GREY}" stroke-dasharray="2 3"/>'
            f'<text x="{_n(x + 3)}" y="{_n(top + 12)}" font-size="10" {_FONT} '
            f'fill="{SOFT}">{escape(text)}</text>'
        )
    for (s, colour, dash), (lx, ly) in zip(legend, places, strict=True):
        text = s.label
        out.append(
            f'<g class="legend" data-step="{s.step}"><line x1="{_n(lx)}" y1="{_n(ly)}" '
            f'x2="{_n(lx + 18)}" y2="{_n(ly)}" stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{_n(lx + 22)}" y="{_n(ly + 4)}" font-size="11" {_FONT} fill="{INK}">'
            f"{escape(text)}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------------ aging log


def aging_chart(
    *,
    days: np.ndarray,
    ocv_mv: np.ndarray,
    k_mv_per_day: float,
    se_mv_per_day: float,
    intercept_mv: float,
    corrected: bool = False,
    width: int = 900,
    height: int = 320,
) -> str:
    """The OCV readings (mV) against days since the first one, and the least-squares line
    of the K-value fit over the same days (``<line class="k-fit">`` with
    ``data-k-mv-per-day`` and ``data-se-mv-per-day``). ``corrected``: the readings are the
    temperature-corrected values the fit used (the axis says so). Fewer than two readings:
    the points without a line."""
    left, right, top, bottom = 64.0, 14.0, 34.0, 40.0
    box = (left, top, width - left - right, height - top - bottom)
    t = np.asarray(days, dtype=np.float64)
    y = np.asarray(ocv_mv, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(y)
    t, y = t[ok], y[ok]
    has_fit = math.isfinite(k_mv_per_day) and math.isfinite(intercept_mv) and len(t) >= 2
    lo_t, hi_t = (float(t.min()), float(t.max())) if len(t) else (0.0, 1.0)
    x_range = _span(lo_t, hi_t)
    ys = list(y)
    if has_fit:
        ys += [intercept_mv - k_mv_per_day * x_range[0], intercept_mv - k_mv_per_day * x_range[1]]
    y_range = _span(min(ys), max(ys), 0.08) if ys else (0.0, 1.0)
    se_text = f" ± {se_mv_per_day:.4f}" if math.isfinite(se_mv_per_day) else ""
    title = (
        f"OCV over the aging period, K = {k_mv_per_day:.4f}{se_text} mV/day"
        if has_fit
        else "OCV over the aging period"
    )
    attrs = ""
    if has_fit:
        attrs = f' data-k-mv-per-day="{k_mv_per_day:.6f}"'
    out = _frame(
        css="chart aging-chart",
        title=title,
        width=width,
        height=height,
        box=box,
        x_range=x_range,
        y_range=y_range,
        x_label="Days since the first aging reading",
        y_label="OCV, corrected to 25 °C (mV)" if corrected else "OCV (mV)",
        aria=f"{title}: {len(t)} readings",
        extra_attrs=attrs,
    )
    if not len(t):
        return _empty(out, box, "No aging reading.")
    pw, ph = box[2], box[3]
    (x0, x1), (y0, y1) = x_range, y_range

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return top + ph - (v - y0) / (y1 - y0) * ph

    out.append(
        f'<text x="{_n(left)}" y="20" font-size="12" font-weight="600" {_FONT} fill="{INK}">'
        f"{escape(title)}</text>"
    )
    if has_fit:
        a, b = x_range
        out.append(
            f'<line class="k-fit" data-k-mv-per-day="{k_mv_per_day:.6f}" '
            f'data-se-mv-per-day="{se_mv_per_day:.6f}" data-intercept-mv="{intercept_mv:.3f}" '
            f'x1="{_n(px(a))}" y1="{_n(py(intercept_mv - k_mv_per_day * a))}" '
            f'x2="{_n(px(b))}" y2="{_n(py(intercept_mv - k_mv_per_day * b))}" '
            f'stroke="{VERMILLION}" stroke-width="2"><title>least-squares fit: '
            f"{intercept_mv:.2f} mV - {k_mv_per_day:.4f}{se_text} mV/day * days</title></line>"
        )
    out.append('<g class="readings">')
    for a, b in zip(t, y, strict=True):
        out.append(
            f'<circle class="reading" cx="{_n(px(a))}" cy="{_n(py(b))}" r="3.5" fill="{BLUE}" '
            f'stroke="#fff" stroke-width="0.8"><title>day {a:.2f}: {b:.2f} mV</title></circle>'
        )
    out.append("</g></svg>")
    return "".join(out)


# ------------------------------------------------------------------- lot distribution strip


def strip_box(
    values: np.ndarray,
    cell_value: float | None,
    *,
    name: str,
    width: int = 260,
    height: int = 34,
) -> str:
    """A feature's distribution in a lot as a small strip: the lot's values as dots (at
    most :data:`STRIP_DOTS`, evenly spaced quantiles), a box from the first to the third
    quartile with the median, whiskers to the 5th and 95th percentiles, and the cell as a
    vermillion diamond (``<path class="cell-mark">``). Values beyond the axis are drawn at
    its edge. Without values: an empty strip."""
    v = np.asarray(values, dtype=np.float64)
    v = np.sort(v[np.isfinite(v)])
    cell = cell_value if cell_value is not None and math.isfinite(cell_value) else None
    pad_x, mid = 6.0, height / 2
    pw = width - 2 * pad_x
    attrs = f' data-feature="{escape(name)}" data-n="{len(v)}"'
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="strip" role="img" '
        f'aria-label="{escape(name)}: {len(v)} cells of the lot"{attrs}>'
    ]
    if not len(v):
        out.append(
            f'<text x="{_n(width / 2)}" y="{_n(mid + 4)}" font-size="10" {_FONT} '
            'text-anchor="middle" fill="#6b7687">no values in the lot</text></svg>'
        )
        return "".join(out)
    p5, q1, med, q3, p95 = np.percentile(v, [5, 25, 50, 75, 95])
    lo, hi = float(v[0]), float(v[-1])
    if cell is not None:
        lo, hi = min(lo, cell), max(hi, cell)
    lo, hi = _span(lo, hi, 0.03)

    def px(x: float) -> float:
        return pad_x + (min(max(x, lo), hi) - lo) / (hi - lo) * pw

    if len(v) > STRIP_DOTS:
        dots = v[np.linspace(0, len(v) - 1, STRIP_DOTS).round().astype(np.int64)]
    else:
        dots = v
    out.append('<g class="dots" fill="#8da2bb" fill-opacity="0.55">')
    for k, x in enumerate(dots):
        # a fixed jitter pattern, so the same values draw the same strip
        dy = ((k * 7919) % 11 - 5) * (height * 0.055)
        out.append(f'<circle cx="{_n(px(float(x)))}" cy="{_n(mid + dy)}" r="1.6"/>')
    out.append("</g>")
    out.append(
        f'<line class="whisker" x1="{_n(px(p5))}" y1="{_n(mid)}" x2="{_n(px(p95))}" '
        f'y2="{_n(mid)}" stroke="{SOFT}" stroke-width="1"/>'
        f'<rect class="box" x="{_n(px(q1))}" y="{_n(mid - 7)}" '
        f'width="{_n(max(px(q3) - px(q1), 1.0))}" height="14" fill="none" stroke="{SOFT}" '
        f'stroke-width="1.2"><title>lot median {med:.6g}, quartiles {q1:.6g} to {q3:.6g}, '
        f"5th to 95th percentile {p5:.6g} to {p95:.6g}</title></rect>"
        f'<line class="median" x1="{_n(px(med))}" y1="{_n(mid - 7)}" x2="{_n(px(med))}" '
        f'y2="{_n(mid + 7)}" stroke="{INK}" stroke-width="2"/>'
    )
    if cell is not None:
        x, r = px(cell), 6.0
        out.append(
            f'<path class="cell-mark" data-value="{cell:.6g}" d="M{_n(x)} {_n(mid - r)}'
            f'L{_n(x + r)} {_n(mid)}L{_n(x)} {_n(mid + r)}L{_n(x - r)} {_n(mid)}z" '
            f'fill="{VERMILLION}" stroke="#fff" stroke-width="1"><title>this cell: '
            f"{cell:.6g}</title></path>"
        )
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------- risk histogram


def risk_histogram(
    risks: Sequence[float],
    *,
    lot: str,
    thresholds: Sequence[float],
    quarantined: int,
    width: int = 420,
    height: int = 200,
) -> str:
    """The latest risk of each cell of a lot as a histogram on a log10 axis (risk spans
    decades), :data:`RISK_BINS_PER_DECADE` bins a decade from 10^:data:`RISK_LOG10_MIN`
    (lower risks in the first bin) to 1, bars at or above the lowest threshold in
    vermillion, and each threshold as a dashed line (``<line class="threshold">``)."""
    r = np.asarray(risks, dtype=np.float64)
    r = r[np.isfinite(r)]
    left, right, top, bottom = 44.0, 12.0, 30.0, 40.0
    box = (left, top, width - left - right, height - top - bottom)
    n_bins = int(-RISK_LOG10_MIN * RISK_BINS_PER_DECADE)
    logs = np.log10(np.clip(r, 10.0**RISK_LOG10_MIN, 1.0)) if len(r) else np.array([])
    idx = np.clip(((logs - RISK_LOG10_MIN) * RISK_BINS_PER_DECADE).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins) if len(r) else np.zeros(n_bins, dtype=np.int64)
    top_count = int(counts.max()) if len(r) else 1
    ticks = nice_ticks(0.0, float(max(top_count, 1)), 4, integer=True)
    y_max = max(ticks[-1], top_count * 1.08, 1.0)
    who = f"Lot {lot}" if lot else "Cells without a lot"
    title = f"{who}: {len(r)} cells, {quarantined} quarantined"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" class="risk-hist" role="img" '
        f'aria-label="{escape(title)}" data-lot="{escape(lot)}" data-cells="{len(r)}" '
        f'data-quarantined="{quarantined}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{_n(left)}" y="18" font-size="12" font-weight="600" {_FONT} fill="{INK}">'
        f"{escape(title)}</text>",
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(box[2])}" height="{_n(box[3])}" '
        f'fill="#fbfcfd" stroke="{FRAME}"/>',
    ]
    pw, ph = box[2], box[3]

    def px(log_r: float) -> float:
        return left + (log_r - RISK_LOG10_MIN) / -RISK_LOG10_MIN * pw

    def py(count: float) -> float:
        return top + ph - count / y_max * ph

    for t in ticks:
        y = py(t)
        out.append(
            f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(left + pw)}" y2="{_n(y)}" '
            f'stroke="{GRID}"/><text x="{_n(left - 5)}" y="{_n(y + 4)}" font-size="10" '
            f'{_FONT} text-anchor="end" fill="{SOFT}">{t:.0f}</text>'
        )
    for decade in range(int(RISK_LOG10_MIN), 1):
        x = px(float(decade))
        out.append(
            f'<text x="{_n(x)}" y="{_n(top + ph + 13)}" font-size="10" {_FONT} '
            f'text-anchor="middle" fill="{SOFT}">{10.0**decade:g}</text>'
        )
    cut = min(thresholds) if thresholds else math.inf
    hot_counts = (
        np.bincount(idx[r >= cut], minlength=n_bins) if len(r) else np.zeros(n_bins, np.int64)
    )
    bw = pw / n_bins
    out.append('<g class="bars">')
    for k, (c, hot) in enumerate(zip(counts.tolist(), hot_counts.tolist(), strict=True)):
        if not c:
            continue
        lo_log = RISK_LOG10_MIN + k / RISK_BINS_PER_DECADE
        hi_log = lo_log + 1 / RISK_BINS_PER_DECADE
        x, w = px(lo_log) + 0.5, max(bw - 1, 0.5)
        span = f"risk {10.0**lo_log:.2g} to {10.0**hi_log:.2g}"
        # cells at or above the (lowest) threshold stacked on top, in vermillion
        for part, base, colour, what in (
            (c - hot, 0, BLUE, "below the threshold"),
            (hot, c - hot, VERMILLION, "at or above the threshold"),
        ):
            if not part:
                continue
            y_top, y_bottom = py(base + part), py(base)
            out.append(
                f'<rect class="bar{" hot" if colour == VERMILLION else ""}" data-count="{part}" '
                f'x="{_n(x)}" y="{_n(y_top)}" width="{_n(w)}" height="{_n(y_bottom - y_top)}" '
                f'fill="{colour}" fill-opacity="0.85"><title>{part} cell{"s" if part != 1 else ""}'
                f" with {span}, {what}</title></rect>"
            )
    out.append("</g>")
    for th in thresholds:
        if not (math.isfinite(th) and th > 0):
            continue
        x = px(min(max(math.log10(th), RISK_LOG10_MIN), 0.0))
        out.append(
            f'<line class="threshold" data-threshold="{th:.6g}" x1="{_n(x)}" y1="{_n(top - 4)}" '
            f'x2="{_n(x)}" y2="{_n(top + ph)}" stroke="{VERMILLION}" stroke-width="1.5" '
            f'stroke-dasharray="4 3"><title>quarantine threshold {th:.4g}</title></line>'
        )
    out.append(
        f'<text x="{_n(left + pw / 2)}" y="{_n(height - 6)}" font-size="11" {_FONT} '
        f'text-anchor="middle" fill="{INK}">Risk (log scale); dashed: quarantine threshold</text>'
        "</svg>"
    )
    return "".join(out)
