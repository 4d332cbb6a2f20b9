"""Vision drawings as SVG markup built by hand: the boxes over an inspected frame, the defect
map along a coil and the defect Pareto.

Pure functions over plain data classes: no Django models, no database. Hand-built rather than
matplotlib (as ``spc/render.py`` draws control charts) because every element here is a
rectangle, a marker or a line, the markup stays small and fast at thousands of defects, and
each element carries ``data-`` attributes (defect id, class, decision, metres) that the pages
and their tests read.

Invariants
----------
* Same input, same markup: no ids from counters or clocks, numbers written with fixed
  decimals.
* Every text is escaped; nothing a vision worker sent reaches the page as markup.
* Colours are the Okabe-Ito palette (safe for the common colour-vision deficiencies), and
  defect classes differ by marker shape as well as colour.
* Sizes are CSS pixels, except :func:`frame_overlay`, whose ``viewBox`` is the frame's own
  pixels so the boxes sit on the image at any displayed size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = [
    "CLASS_STYLE",
    "DECISION_COLOURS",
    "MapBand",
    "MapDefect",
    "OverlayBox",
    "ParetoRow",
    "coil_map",
    "frame_overlay",
    "nice_ticks",
    "pareto",
]

# Okabe & Ito (2008), "Color Universal Design".
BLUE = "#0072B2"
SKY = "#56B4E9"
GREEN = "#009E73"
ORANGE = "#E69F00"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
YELLOW = "#F0E442"
BLACK = "#000000"
GREY = "#595959"

#: Marker shape and colour of each defect class (shape alone tells them apart in print).
CLASS_STYLE: dict[str, tuple[str, str]] = {
    "pinhole": ("circle", BLUE),
    "void": ("square", SKY),
    "particle": ("diamond", VERMILLION),
    "scratch": ("triangle", GREEN),
    "wrinkle": ("triangle_down", PURPLE),
    "edge": ("plus", ORANGE),
    "crack": ("cross", BLACK),
}
_OTHER_STYLE = ("circle", GREY)

#: Box colour on the frame by decision: what happens to the metres decides the colour.
DECISION_COLOURS: dict[str, str] = {
    "ignore": "#4a5566",
    "review": ORANGE,
    "quarantine": VERMILLION,
    "stop": "#B4005A",
}

#: Marker half-size on the coil map, px.
MARKER_R = 4.5
#: Above this many defects the map's markers carry no hover title (the markup would be
#: megabytes); the table below the map lists them.
TITLE_LIMIT = 2000
#: A band or shaded stretch narrower than this is widened to it, px, so it stays visible.
MIN_BAND_PX = 2.0
_FONT = 'font-family="system-ui, DejaVu Sans, sans-serif"'


def _n(value: float) -> str:
    """A coordinate: two decimals, no trailing zeros."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def nice_ticks(lo: float, hi: float, count: int = 8, *, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten) from ``lo`` to
    ``hi`` inclusive; whole numbers only with ``integer`` (counts)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(step, 1)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _tick_label(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:g}"


def marker_path(shape: str, x: float, y: float, r: float = MARKER_R) -> str:
    """SVG path data of a marker centred on (x, y)."""
    if shape == "circle":
        return (
            f"M{_n(x - r)} {_n(y)}a{_n(r)} {_n(r)} 0 1 0 {_n(2 * r)} 0"
            f"a{_n(r)} {_n(r)} 0 1 0 {_n(-2 * r)} 0z"
        )
    if shape == "square":
        s = r * 0.85
        return f"M{_n(x - s)} {_n(y - s)}h{_n(2 * s)}v{_n(2 * s)}h{_n(-2 * s)}z"
    if shape == "diamond":
        d = r * 1.2
        return f"M{_n(x)} {_n(y - d)}L{_n(x + d)} {_n(y)}L{_n(x)} {_n(y + d)}L{_n(x - d)} {_n(y)}z"
    if shape == "triangle":
        return f"M{_n(x)} {_n(y - r)}L{_n(x + r)} {_n(y + r)}L{_n(x - r)} {_n(y + r)}z"
    if shape == "triangle_down":
        return f"M{_n(x)} {_n(y + r)}L{_n(x + r)} {_n(y - r)}L{_n(x - r)} {_n(y - r)}z"
    if shape == "plus":
        return f"M{_n(x - r)} {_n(y)}H{_n(x + r)}M{_n(x)} {_n(y - r)}V{_n(y + r)}"
    if shape == "cross":
        s = r * 0.8
        return (
            f"M{_n(x - s)} {_n(y - s)}L{_n(x + s)} {_n(y + s)}"
            f"M{_n(x - s)} {_n(y + s)}L{_n(x + s)} {_n(y - s)}"
        )
    raise ValueError(f"unknown marker shape {shape!r}")


_LINE_SHAPES = frozenset({"plus", "cross"})


def _marker(cls: str, x: float, y: float, *, hollow: bool = False) -> tuple[str, str]:
    """Path data and paint attributes of the marker of a class."""
    shape, colour = CLASS_STYLE.get(cls, _OTHER_STYLE)
    d = marker_path(shape, x, y)
    if shape in _LINE_SHAPES:
        paint = f'fill="none" stroke="{colour}" stroke-width="2"'
    elif hollow:
        paint = f'fill="#fff" stroke="{colour}" stroke-width="1.6"'
    else:
        paint = f'fill="{colour}" stroke="#fff" stroke-width="0.6"'
    return d, paint


# ------------------------------------------------------------------------ frame overlay


@dataclass(frozen=True)
class OverlayBox:
    """One defect's box on a frame, in frame pixels (``x1``/``y1`` exclusive), its label and
    the decision that colours it."""

    defect_id: int
    x0: int
    y0: int
    x1: int
    y1: int
    label: str
    decision: str


def frame_overlay(*, width_px: int, height_px: int, boxes: Sequence[OverlayBox]) -> str:
    """An ``<svg>`` to lay over the frame image: one ``<rect>`` and one ``<text>`` per box,
    in the frame's pixel coordinates (``viewBox``), so the page scales both together.

    Strokes do not scale (``vector-effect``): a 12-pixel defect in a 4,096-pixel frame is a
    few screen pixels wide and still outlined. A label sits above its box, below it when the
    box touches the top edge, and ends at the box's right edge near the frame's right side.
    """
    if width_px <= 0 or height_px <= 0:
        raise ValueError(f"frame size must be positive, got {width_px}x{height_px}")
    font = max(10.0, width_px * 0.012)
    gap = font * 0.3
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="overlay" viewBox="0 0 {width_px} '
        f'{height_px}" preserveAspectRatio="none" role="img" '
        f'aria-label="{len(boxes)} defect box{"es" if len(boxes) != 1 else ""}" '
        f'data-width-px="{width_px}" data-height-px="{height_px}">'
    ]
    for box in boxes:
        colour = DECISION_COLOURS.get(box.decision, GREY)
        w, h = max(box.x1 - box.x0, 1), max(box.y1 - box.y0, 1)
        if box.y0 - gap - font >= 0:
            ty, baseline = box.y0 - gap, "text-after-edge"
        else:
            ty, baseline = box.y1 + gap, "text-before-edge"
        if box.x0 > width_px * 0.8:
            tx, anchor = box.x1, "end"
        else:
            tx, anchor = box.x0, "start"
        parts.append(
            f'<g class="box" data-defect="{box.defect_id}" data-decision="{escape(box.decision)}">'
            f'<rect x="{box.x0}" y="{box.y0}" width="{w}" height="{h}" fill="none" '
            f'stroke="{colour}" stroke-width="2" vector-effect="non-scaling-stroke"/>'
            f'<text x="{_n(tx)}" y="{_n(ty)}" font-size="{_n(font)}" {_FONT} '
            f'font-weight="700" fill="{colour}" stroke="#fff" stroke-width="{_n(font * 0.18)}" '
            f'paint-order="stroke" text-anchor="{anchor}" dominant-baseline="{baseline}">'
            f"{escape(box.label)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------ coil map


@dataclass(frozen=True)
class MapDefect:
    """A defect on the coil map: metres along, millimetres across, class and decision;
    ``pending`` draws it hollow (waiting for a reviewer)."""

    defect_id: int
    md_m: float
    cd_mm: float
    cls: str
    decision: str
    confidence: float
    pending: bool = False


@dataclass(frozen=True)
class MapBand:
    """A stretch ``[start_m, end_m)`` of the coil with what it is (shown on hover)."""

    start_m: float
    end_m: float
    label: str


def coil_map(
    *,
    serial: str,
    length_m: float,
    width_mm: float,
    defects: Sequence[MapDefect],
    uninspected: Sequence[MapBand] = (),
    holds: Sequence[MapBand] = (),
    inspected: Sequence[tuple[float, float]] = (),
    width_px: int = 1200,
    height_px: int = 380,
) -> str:
    """The defect map of a coil as an ``<svg>``: metres along the coil on x (0 to the coil's
    length), millimetres across on y (0, the lane edge, at the bottom), one marker per defect
    (shape and colour by class; hollow while waiting for review), uninspected stretches shaded
    red over the full width, holds as hatched bands, and under the plot a coverage strip
    (inspected, uninspected, not reported). Anything beyond the axes is clipped to them.
    ``data-plot`` on the root gives the plot area (x, y, width, height in px)."""
    if not (math.isfinite(length_m) and length_m > 0):
        raise ValueError(f"length_m must be a positive number, got {length_m!r}")
    if not (math.isfinite(width_mm) and width_mm > 0):
        raise ValueError(f"width_mm must be a positive number, got {width_mm!r}")
    left, right, top, bottom = 64.0, 16.0, 40.0, 66.0
    pw, ph = width_px - left - right, height_px - top - bottom

    def x_of(m: float) -> float:
        return left + min(max(m, 0.0), length_m) / length_m * pw

    def y_of(mm: float) -> float:
        return top + ph - min(max(mm, 0.0), width_mm) / width_mm * ph

    def span(a: float, b: float) -> tuple[float, float]:
        x0, x1 = x_of(a), x_of(b)
        if x1 - x0 < MIN_BAND_PX:
            mid = (x0 + x1) / 2
            x0, x1 = max(left, mid - MIN_BAND_PX / 2), min(left + pw, mid + MIN_BAND_PX / 2)
        return x0, x1 - x0

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width_px} {height_px}" '
        f'width="{width_px}" height="{height_px}" class="coil-map" role="img" '
        f'aria-label="Defect map of {escape(serial)}: {len(defects)} defects, '
        f'{len(uninspected)} uninspected stretches, {len(holds)} holds" '
        f'data-length-m="{_n(length_m)}" data-width-mm="{_n(width_mm)}" '
        f'data-plot="{_n(left)} {_n(top)} {_n(pw)} {_n(ph)}">',
        f"<title>Defect map of {escape(serial)}</title>",
        '<defs><pattern id="hold-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#CC79A7" '
        'fill-opacity="0.18"/><line x1="0" y1="0" x2="0" y2="6" stroke="#A2487F" '
        'stroke-width="2" stroke-opacity="0.55"/></pattern></defs>',
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(pw)}" height="{_n(ph)}" fill="#fbfcfd" '
        'stroke="#c3cad6"/>',
    ]
    # Grid and axes.
    for t in nice_ticks(0.0, length_m, 10):
        x = x_of(t)
        out.append(
            f'<line x1="{_n(x)}" y1="{_n(top)}" x2="{_n(x)}" y2="{_n(top + ph)}" '
            'stroke="#e6e9ef"/>'
            f'<text x="{_n(x)}" y="{_n(top + ph + 14)}" font-size="11" {_FONT} '
            f'text-anchor="middle" fill="#4a5566">{_tick_label(t)}</text>'
        )
    for t in nice_ticks(0.0, width_mm, 5):
        y = y_of(t)
        out.append(
            f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(left + pw)}" y2="{_n(y)}" '
            'stroke="#e6e9ef"/>'
            f'<text x="{_n(left - 6)}" y="{_n(y + 4)}" font-size="11" {_FONT} '
            f'text-anchor="end" fill="#4a5566">{_tick_label(t)}</text>'
        )
    out.append(
        f'<text x="{_n(left + pw / 2)}" y="{_n(height_px - 6)}" font-size="12" {_FONT} '
        'text-anchor="middle" fill="#1d2430">Position along the coil (m)</text>'
        f'<text x="14" y="{_n(top + ph / 2)}" font-size="12" {_FONT} text-anchor="middle" '
        f'fill="#1d2430" transform="rotate(-90 14 {_n(top + ph / 2)})">Across (mm)</text>'
    )
    # Stretches: uninspected shading, hold bands.
    for band in uninspected:
        x, w = span(band.start_m, band.end_m)
        out.append(
            f'<rect class="uninspected" x="{_n(x)}" y="{_n(top)}" width="{_n(w)}" '
            f'height="{_n(ph)}" fill="#D55E00" fill-opacity="0.28" '
            f'data-start-m="{band.start_m:.3f}" data-end-m="{band.end_m:.3f}">'
            f"<title>{escape(band.label)}</title></rect>"
        )
    for band in holds:
        x, w = span(band.start_m, band.end_m)
        out.append(
            f'<rect class="hold" x="{_n(x)}" y="{_n(top)}" width="{_n(w)}" height="{_n(ph)}" '
            f'fill="url(#hold-hatch)" stroke="#A2487F" stroke-width="0.8" '
            f'data-start-m="{band.start_m:.3f}" data-end-m="{band.end_m:.3f}">'
            f"<title>{escape(band.label)}</title></rect>"
        )
    # Defects.
    titles = len(defects) <= TITLE_LIMIT
    out.append('<g class="defects">')
    for d in defects:
        path, paint = _marker(d.cls, x_of(d.md_m), y_of(d.cd_mm), hollow=d.pending)
        title = (
            f"<title>{escape(d.cls)} {d.confidence:.2f} at {d.md_m:.3f} m / {d.cd_mm:.1f} mm"
            f" ({escape(d.decision)}{', waiting for review' if d.pending else ''})</title>"
            if titles
            else ""
        )
        out.append(
            f'<path class="defect" data-defect="{d.defect_id}" data-cls="{escape(d.cls)}" '
            f'data-decision="{escape(d.decision)}" d="{path}" {paint}>{title}</path>'
        )
    out.append("</g>")
    # Coverage strip under the axis labels.
    sy, sh = top + ph + 22, 8.0
    out.append(
        f'<g class="coverage"><rect x="{_n(left)}" y="{_n(sy)}" width="{_n(pw)}" '
        f'height="{_n(sh)}" fill="#dde2ea"><title>not reported</title></rect>'
    )
    for a, b in inspected:
        x, w = span(a, b)
        out.append(
            f'<rect class="inspected" x="{_n(x)}" y="{_n(sy)}" width="{_n(w)}" '
            f'height="{_n(sh)}" fill="#009E73"/>'
        )
    for band in uninspected:
        x, w = span(band.start_m, band.end_m)
        out.append(
            f'<rect x="{_n(x)}" y="{_n(sy)}" width="{_n(w)}" height="{_n(sh)}" fill="#D55E00"/>'
        )
    out.append("</g>")
    # Legend: the classes drawn, then the stretches.
    counts: dict[str, int] = {}
    for d in defects:
        counts[d.cls] = counts.get(d.cls, 0) + 1
    x = left
    for cls in [c for c in CLASS_STYLE if c in counts] + sorted(set(counts) - set(CLASS_STYLE)):
        path, paint = _marker(cls, x + 5, 18)
        text = f"{cls} ({counts[cls]})"
        out.append(
            f'<g class="legend" data-cls="{escape(cls)}"><path d="{path}" {paint}/>'
            f'<text x="{_n(x + 14)}" y="22" font-size="12" {_FONT} fill="#1d2430">'
            f"{escape(text)}</text></g>"
        )
        x += 24 + 7.2 * len(text)
    for label, paint in (
        ("uninspected", 'fill="#D55E00" fill-opacity="0.28"'),
        ("hold", 'fill="url(#hold-hatch)" stroke="#A2487F" stroke-width="0.8"'),
    ):
        out.append(
            f'<rect x="{_n(x)}" y="12" width="12" height="12" {paint}/>'
            f'<text x="{_n(x + 16)}" y="22" font-size="12" {_FONT} fill="#1d2430">{label}</text>'
        )
        x += 28 + 7.2 * len(label)
    if not defects:
        out.append(
            f'<text x="{_n(left + pw / 2)}" y="{_n(top + ph / 2)}" font-size="13" {_FONT} '
            'text-anchor="middle" fill="#6b7687">No defect above the logging band on this '
            "coil.</text>"
        )
    out.append("</svg>")
    return "".join(out)


# -------------------------------------------------------------------------------- Pareto


@dataclass(frozen=True)
class ParetoRow:
    """One bar: a class, its count and the cumulative share up to it (0 to 1)."""

    cls: str
    count: int
    cumulative: float


def pareto(
    rows: Sequence[ParetoRow], *, title: str, width_px: int = 640, height_px: int = 300
) -> str:
    """The defect Pareto as an ``<svg>``: one bar per class, largest first, in the class's
    colour with its count on top, the cumulative share as a line on a 0-100 % axis on the
    right, and the 80 % line dashed. No rows: the frame with a message."""
    left, right, top, bottom = 48.0, 48.0, 34.0, 44.0
    pw, ph = width_px - left - right, height_px - top - bottom
    total = sum(r.count for r in rows)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width_px} {height_px}" '
        f'width="{width_px}" height="{height_px}" class="pareto" role="img" '
        f'aria-label="{escape(title)}: {total} defects in {len(rows)} classes">',
        f"<title>{escape(title)}</title>",
        f'<text x="{_n(left)}" y="20" font-size="13" font-weight="600" {_FONT} '
        f'fill="#1d2430">{escape(title)}</text>',
        f'<rect x="{_n(left)}" y="{_n(top)}" width="{_n(pw)}" height="{_n(ph)}" fill="#fbfcfd" '
        'stroke="#c3cad6"/>',
    ]
    if not rows or total == 0:
        out.append(
            f'<text x="{_n(left + pw / 2)}" y="{_n(top + ph / 2)}" font-size="13" {_FONT} '
            'text-anchor="middle" fill="#6b7687">No defects.</text></svg>'
        )
        return "".join(out)
    top_count = max(r.count for r in rows)
    ticks = nice_ticks(0.0, float(top_count), 5, integer=True)
    y_max = max(ticks[-1], top_count * 1.12)  # room for the count above the tallest bar

    def y_count(v: float) -> float:
        return top + ph - v / y_max * ph

    def y_share(v: float) -> float:
        return top + ph - v * ph

    for t in ticks:
        y = y_count(t)
        out.append(
            f'<line x1="{_n(left)}" y1="{_n(y)}" x2="{_n(left + pw)}" y2="{_n(y)}" '
            'stroke="#e6e9ef"/>'
            f'<text x="{_n(left - 6)}" y="{_n(y + 4)}" font-size="11" {_FONT} '
            f'text-anchor="end" fill="#4a5566">{_tick_label(t)}</text>'
        )
    for share in (0.0, 0.5, 1.0):
        y = y_share(share)
        out.append(
            f'<text x="{_n(left + pw + 6)}" y="{_n(y + 4)}" font-size="11" {_FONT} '
            f'fill="#4a5566">{share:.0%}</text>'
        )
    y80 = y_share(0.8)
    out.append(
        f'<line x1="{_n(left)}" y1="{_n(y80)}" x2="{_n(left + pw)}" y2="{_n(y80)}" '
        'stroke="#6b7687" stroke-dasharray="4 3"/>'
        f'<text x="{_n(left + pw + 6)}" y="{_n(y80 + 4)}" font-size="11" {_FONT} '
        'fill="#4a5566">80%</text>'
    )
    slot = pw / len(rows)
    bar = min(slot * 0.7, 80.0)
    points = []
    for i, row in enumerate(rows):
        cx = left + slot * (i + 0.5)
        y = y_count(row.count)
        colour = CLASS_STYLE.get(row.cls, _OTHER_STYLE)[1]
        out.append(
            f'<g class="bar" data-cls="{escape(row.cls)}" data-count="{row.count}" '
            f'data-cumulative="{row.cumulative:.4f}">'
            f'<rect x="{_n(cx - bar / 2)}" y="{_n(y)}" width="{_n(bar)}" '
            f'height="{_n(top + ph - y)}" fill="{colour}" fill-opacity="0.85">'
            f"<title>{escape(row.cls)}: {row.count} ({row.count / total:.1%}), "
            f"cumulative {row.cumulative:.1%}</title></rect>"
            f'<text x="{_n(cx)}" y="{_n(y - 4)}" font-size="11" {_FONT} text-anchor="middle" '
            f'fill="#1d2430">{row.count}</text>'
            f'<text x="{_n(cx)}" y="{_n(top + ph + 15)}" font-size="11" {_FONT} '
            f'text-anchor="middle" fill="#1d2430">{escape(row.cls)}</text></g>'
        )
        points.append((cx, y_share(row.cumulative)))
    line = " ".join(f"{_n(x)},{_n(y)}" for x, y in points)
    out.append(
        f'<polyline class="cumulative" points="{line}" fill="none" stroke="{BLUE}" '
        'stroke-width="2"/>'
    )
    for x, y in points:
        out.append(f'<circle cx="{_n(x)}" cy="{_n(y)}" r="3" fill="{BLUE}"/>')
    out.append(
        f'<text x="{_n(left + pw / 2)}" y="{_n(height_px - 6)}" font-size="11" {_FONT} '
        f'text-anchor="middle" fill="#4a5566">{total} defect{"s" if total != 1 else ""} '
        "(ignored and false calls left out)</text></svg>"
    )
    return "".join(out)
