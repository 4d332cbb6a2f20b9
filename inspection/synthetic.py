"""Synthetic line-scan images of electrode coating and separator film, with pixel masks.

Two substrates, each lit the way an inline station sees it:

* ``coating``: reflected bright-field on a coated electrode. Dark granular coating with
  calendering mottle and slot-die streaks along the machine direction; bare foil (bright,
  specular) beyond the coating edge.
* ``separator``: transmitted back-light through a porous film. Bright film with fibril texture
  and thickness bands; open back-light (near saturation) beyond the slit edge.

The machine direction runs down the image (rows are successive scan lines, columns are
sensor pixels across the web). The camera model adds the line-scan effects: an illumination
profile across the line, a per-column fixed-pattern gain, optical blur and sensor noise.

Everything is drawn in micrometres and converted with ``RenderParams.pixel_pitch_um``.
Output is deterministic for a given seed, ``RenderParams`` and ``GENERATOR_VERSION``. Pure
numpy + OpenCV; nothing here touches Django or a network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import cv2
import numpy as np

GENERATOR_VERSION = "1.0.0"

CLASSES: tuple[str, ...] = (
    "ok",
    "pinhole",
    "void",
    "particle",
    "scratch",
    "wrinkle",
    "edge",
    "crack",
)
SUBSTRATES: tuple[str, ...] = ("coating", "separator")

# Characteristic defect size in micrometres (diameter, or length for line-like defects).
# Pinholes of tens of µm, particles ≥ 10 µm matter but only ≥ ~60-100 µm resolve at 20 µm/px
# (3-5 px rule); coating 80-200 µm thick; burr/offset tolerances of a few hundred µm.
SIZE_RANGE_UM: dict[str, tuple[float, float]] = {
    "pinhole": (40.0, 160.0),
    "void": (400.0, 1600.0),
    "particle": (100.0, 500.0),
    "scratch": (1500.0, 5000.0),
    "wrinkle": (1500.0, 5000.0),
    "edge": (600.0, 2000.0),
    "crack": (800.0, 2400.0),
}

# Mean gray levels of the scene before the camera model (0..255 scale).
_COATING_LEVEL = 72.0
_FOIL_LEVEL = 200.0
_FILM_LEVEL = 175.0
_BACKLIGHT_LEVEL = 248.0


@dataclass(frozen=True)
class RenderParams:
    """Optics, camera and defect-appearance settings of one rendering set.

    ``contrast_range`` scales each defect's nominal contrast (1.0 = full contrast);
    ``blur_sigma_px_range`` softens each defect's outline; ``defocus_sigma_px`` blurs the
    whole image (optics). ``ok_edge_fraction`` is the share of defect-free patches that show
    a clean coating (or slit) edge, ``defect_edge_fraction`` the same for other non-edge
    classes, so an edge alone never identifies the class.
    """

    pixel_pitch_um: float = 20.0
    line_pixels: int = 4096
    noise_sigma: float = 2.5
    shot_noise_gain: float = 0.02
    gradient_strength: float = 0.12
    fpn_gain_sigma: float = 0.01
    contrast_range: tuple[float, float] = (0.6, 1.0)
    blur_sigma_px_range: tuple[float, float] = (0.3, 0.9)
    defocus_sigma_px: float = 0.0
    ok_edge_fraction: float = 0.3
    defect_edge_fraction: float = 0.15
    camera_seed: int = 4096
    name: str = "base"
    version: str = GENERATOR_VERSION

    def shifted(self) -> RenderParams:
        """The held-out rendering set: noisier, stronger gradient, lower contrast, defocused."""
        lo, hi = self.contrast_range
        return replace(
            self,
            noise_sigma=self.noise_sigma * 2.4,
            shot_noise_gain=self.shot_noise_gain * 2.0,
            gradient_strength=min(self.gradient_strength * 2.5, 0.6),
            fpn_gain_sigma=self.fpn_gain_sigma * 2.0,
            contrast_range=(lo * 0.6, hi * 0.7),
            defocus_sigma_px=max(self.defocus_sigma_px, 0.9),
            camera_seed=self.camera_seed + 1,
            name="shifted",
        )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sample:
    """One rendered patch: 8-bit image, defect mask (empty for ``ok``) and what was drawn."""

    image: np.ndarray
    mask: np.ndarray
    cls: str
    substrate: str
    meta: dict = field(default_factory=dict)


@dataclass
class FrameDefect:
    """A defect placed in a full frame: class, box (x0, y0, x1, y1, exclusive) and mask in it."""

    cls: str
    box: tuple[int, int, int, int]
    mask: np.ndarray
    meta: dict = field(default_factory=dict)


@dataclass
class Dataset:
    """Patches of every class and substrate, in substrate-major, class order."""

    images: np.ndarray  # uint8 (N, size, size)
    masks: np.ndarray  # bool (N, size, size)
    labels: np.ndarray  # int64 index into CLASSES
    substrates: np.ndarray  # int64 index into SUBSTRATES
    params: RenderParams
    seed: int


@dataclass
class _Edge:
    """A web edge running along the machine direction: x position per row, material side."""

    x: np.ndarray  # float, one per row of the field
    material_left: bool  # coating/film lies at x < edge


# --------------------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, h: int, w: int, sy: float, sx: float) -> np.ndarray:
    """Zero-mean Gaussian-correlated noise of unit std, correlation lengths ``sy`` x ``sx`` px.

    Drawn with a margin of three sigmas so border handling never shrinks the variance, and
    normalised by the kernel energy rather than the sample std, so a field much smaller than
    the correlation length keeps its (nearly constant) offset instead of being inflated.
    Long correlations are drawn on a coarse grid and resampled.
    """
    f = max(1, int(min(sy, sx) / 2))
    gy, gx = max(sy / f, 0.3), max(sx / f, 0.3)
    ky = cv2.getGaussianKernel(2 * int(3 * gy) + 1, gy)
    kx = cv2.getGaussianKernel(2 * int(3 * gx) + 1, gx)
    py, px = len(ky) // 2, len(kx) // 2
    hs, ws = -(-h // f) + 2, -(-w // f) + 2
    n = rng.standard_normal((hs + 2 * py, ws + 2 * px)).astype(np.float32)
    n = cv2.sepFilter2D(n, -1, kx, ky)[py : py + hs, px : px + ws]
    if f > 1:
        n = cv2.resize(n, (ws * f, hs * f), interpolation=cv2.INTER_CUBIC)
    norm = math.sqrt(float((ky**2).sum() * (kx**2).sum()))
    return np.ascontiguousarray(n[:h, :w]) / norm


def _coating_texture(rng, h, w, um):
    """Granular coating, calendering mottle and slot-die streaks (constant down the web)."""
    grain = _smooth_noise(rng, h, w, max(0.6, 15.0 / um), max(0.6, 15.0 / um))
    mottle = _smooth_noise(rng, h, w, 600.0 / um, 600.0 / um)
    streak_cols = _smooth_noise(rng, 1, w, 1.0, max(0.7, 40.0 / um))[0]
    streak_cols *= rng.uniform(0.5, 1.5)
    return _COATING_LEVEL + 7.0 * grain + 4.0 * mottle + 2.5 * streak_cols[None, :]


def _foil_texture(rng, h, w, um):
    """Bare current-collector foil: bright, with faint rolling marks along the web."""
    rolling = _smooth_noise(rng, 1, w, 1.0, max(0.6, 20.0 / um))[0]
    sheen = _smooth_noise(rng, h, w, 1500.0 / um, 1500.0 / um)
    return _FOIL_LEVEL + 3.0 * rolling[None, :] + 5.0 * sheen


def _film_texture(rng, h, w, um):
    """Separator under back-light: oriented fibrils and thickness bands across the web."""
    fibrils = _smooth_noise(rng, h, w, max(1.5, 120.0 / um), max(0.5, 12.0 / um))
    bands = _smooth_noise(rng, 1, w, 1.0, 800.0 / um)[0]
    md_bands = _smooth_noise(rng, h, 1, 3000.0 / um, 1.0)[:, 0]
    return _FILM_LEVEL + 5.0 * fibrils + 6.0 * bands[None, :] + 3.0 * md_bands[:, None]


def _backlight(rng, h, w, um):
    return _BACKLIGHT_LEVEL + 1.0 * _smooth_noise(rng, h, w, 4.0, 4.0)


def _material(substrate, rng, h, w, um):
    if substrate == "coating":
        return _coating_texture(rng, h, w, um)
    return _film_texture(rng, h, w, um)


def _beyond_edge(substrate, rng, h, w, um):
    if substrate == "coating":
        return _foil_texture(rng, h, w, um)
    return _backlight(rng, h, w, um)


def _make_edge(rng, h: int, x0: float, material_left: bool, um: float) -> _Edge:
    """A clean edge: straight along the web with a slow sub-pixel wander."""
    wander = _smooth_noise(rng, h, 1, max(2.0, 2000.0 / um), 1.0)[:, 0]
    return _Edge(x=x0 + rng.uniform(0.2, 0.8) * wander, material_left=material_left)


def _edge_weight(edge: _Edge, h: int, w: int, taper_px: float) -> np.ndarray:
    """1 where the material (coating or film) is, 0 beyond the edge, a short taper between."""
    xs = np.arange(w, dtype=np.float32)[None, :]
    d = edge.x[:h, None].astype(np.float32) - xs
    if not edge.material_left:
        d = -d
    return np.clip(d / taper_px + 0.5, 0.0, 1.0)


def _background(substrate, rng, h, w, um, edges: list[_Edge]) -> np.ndarray:
    scene = _material(substrate, rng, h, w, um)
    if not edges:
        return scene
    beyond = _beyond_edge(substrate, rng, h, w, um)
    weight = np.ones((h, w), np.float32)
    for edge in edges:
        weight = np.minimum(weight, _edge_weight(edge, h, w, rng.uniform(1.0, 3.0)))
    scene = weight * scene + (1.0 - weight) * beyond
    if substrate == "separator":
        # Slit edges carry a slightly thicker bead: a darker rim just inside the film.
        rim = cv2.GaussianBlur(weight * (1.0 - weight) * 4.0, (0, 0), 1.5)
        scene -= 25.0 * rim
    return scene.astype(np.float32)


# --------------------------------------------------------------------------- camera


def _camera(
    scene: np.ndarray, rng: np.random.Generator, params: RenderParams, col0: int
) -> np.ndarray:
    """Optics, illumination profile, fixed-pattern gain, sensor noise, 8-bit quantisation."""
    h, w = scene.shape
    img = scene.astype(np.float32)
    if params.defocus_sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), params.defocus_sigma_px)
    cam = np.random.default_rng(params.camera_seed)
    n = params.line_pixels
    fpn = 1.0 + params.fpn_gain_sigma * cam.standard_normal(n)
    tilt = cam.uniform(-0.3, 0.3)
    u = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    illumination = 1.0 - params.gradient_strength * (0.7 * u**2 + tilt * u)
    cols = (np.arange(w) + col0) % n
    img = img * (illumination[cols] * fpn[cols]).astype(np.float32)[None, :]
    sigma = np.sqrt(params.noise_sigma**2 + params.shot_noise_gain * np.maximum(img, 0.0))
    img = img + sigma * rng.standard_normal((h, w)).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- defects


@dataclass
class _Drawn:
    alpha: np.ndarray  # 0..1 weight of the defect's appearance
    target: np.ndarray | float  # what the pixel becomes at full weight
    mask: np.ndarray  # bool footprint
    size_um: float
    orientation_deg: float
    nominal_delta: float  # signed nominal gray-level change (before contrast scaling)


def _blob(rng, h, w, cx, cy, r, roughness, harmonics=5):
    """An irregular filled blob: radius modulated by a few random harmonics."""
    phi = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    rr = np.ones_like(phi)
    for k in range(2, 2 + harmonics):
        rr += roughness / k * rng.standard_normal() * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(1.0, 1.4)
    theta = rng.uniform(0, np.pi)
    ex, ey = r * rr * aspect**0.5 * np.cos(phi), r * rr / aspect**0.5 * np.sin(phi)
    x = cx + ex * np.cos(theta) - ey * np.sin(theta)
    y = cy + ex * np.sin(theta) + ey * np.cos(theta)
    canvas = np.zeros((h, w), np.uint8)
    pts = np.stack([x, y], axis=1) * 16
    cv2.fillPoly(canvas, [np.rint(pts).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool), math.degrees(theta)


def _soften(hard: np.ndarray, sigma: float) -> np.ndarray:
    a = hard.astype(np.float32)
    return cv2.GaussianBlur(a, (0, 0), sigma) if sigma > 0 else a


def _draw_pinhole(ctx, rng, size_um):
    h, w, um, bg = ctx["h"], ctx["w"], ctx["um"], ctx["bg"]
    r = size_um / um / 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.hypot(xx - ctx["cx"], yy - ctx["cy"])
    alpha = np.clip(r - dist + 0.5, 0.0, 1.0)
    mask = dist <= max(r, 0.75)
    # Coating: the foil shows through the hole. Separator: the back-light passes through.
    target = _FOIL_LEVEL if ctx["substrate"] == "coating" else _BACKLIGHT_LEVEL
    delta = target - float(np.mean(bg[mask])) if mask.any() else 0.0
    return _Drawn(alpha, target, mask, size_um, 0.0, delta)


def _draw_void(ctx, rng, size_um):
    h, w, um = ctx["h"], ctx["w"], ctx["um"]
    hard, theta = _blob(rng, h, w, ctx["cx"], ctx["cy"], size_um / um / 2.0, 0.45, 6)
    alpha = _soften(hard, ctx["blur"])
    if ctx["substrate"] == "coating":
        target = _foil_texture(rng, h, w, um)
        delta = _FOIL_LEVEL - _COATING_LEVEL
    else:
        # Missing ceramic layer / thin spot: more light through, not fully open.
        target = np.minimum(ctx["bg"] * 1.25, 250.0)
        delta = 0.25 * _FILM_LEVEL
    return _Drawn(alpha, target, hard, size_um, theta, delta)


def _draw_particle(ctx, rng, size_um):
    h, w, um = ctx["h"], ctx["w"], ctx["um"]
    r = size_um / um / 2.0
    hard, theta = _blob(rng, h, w, ctx["cx"], ctx["cy"], r, 0.25, 4)
    core = _soften(hard, ctx["blur"])
    halo = cv2.GaussianBlur(hard.astype(np.float32), (0, 0), max(1.0, 0.3 * r)) * 0.35
    alpha = np.maximum(core, halo)
    target = 22.0 if ctx["substrate"] == "coating" else 35.0
    base = _COATING_LEVEL if ctx["substrate"] == "coating" else _FILM_LEVEL
    return _Drawn(alpha, target, hard, size_um, theta, target - base)


def _polyline_mask(h, w, pts, thickness):
    canvas = np.zeros((h, w), np.uint8)
    cv2.polylines(canvas, [np.rint(pts).astype(np.int32)], False, 1, int(thickness), cv2.LINE_8)
    return canvas.astype(bool)


def _draw_scratch(ctx, rng, size_um):
    h, w, um = ctx["h"], ctx["w"], ctx["um"]
    length = size_um / um
    tilt = math.radians(rng.uniform(-6.0, 6.0))  # along the machine direction
    bend = rng.uniform(-1.0, 1.0) * 0.12 / max(length, 1.0)  # sag of at most 3 % of length
    t = np.linspace(-length / 2, length / 2, max(8, int(length)))
    x = ctx["cx"] + t * math.sin(tilt) + bend * t**2
    y = ctx["cy"] + t * math.cos(tilt)
    width_px = max(1, round(rng.uniform(20.0, 60.0) / um))
    hard = _polyline_mask(h, w, np.stack([x, y], 1), width_px)
    alpha = np.maximum(_soften(hard, ctx["blur"]), hard * 0.7)
    delta = 50.0 if ctx["substrate"] == "coating" else 35.0
    target = np.minimum(ctx["bg"] + delta, 252.0)
    return _Drawn(alpha, target, hard, size_um, 90.0 + math.degrees(tilt), delta)


def _draw_wrinkle(ctx, rng, size_um):
    h, w, um, bg = ctx["h"], ctx["w"], ctx["um"], ctx["bg"]
    length = size_um / um
    half_width = rng.uniform(150.0, 450.0) / um
    theta = math.radians(rng.uniform(60.0, 120.0) if rng.random() < 0.7 else rng.uniform(0, 180))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - ctx["cx"], yy - ctx["cy"]
    along = dx * math.cos(theta) + dy * math.sin(theta)
    across = -dx * math.sin(theta) + dy * math.cos(theta)
    envelope = np.clip(1.0 - (np.abs(along) / (length / 2)) ** 4, 0.0, 1.0)
    s = across / half_width
    # A fold tilts the surface: one flank catches more light, the other less.
    shading = (1.6 * s * np.exp(-(s**2)) - 0.25 * np.exp(-(s**2))) * envelope
    amp = 28.0 if ctx["substrate"] == "separator" else 22.0
    mask = (np.abs(s) <= 1.8) & (envelope > 0.15)
    target = np.clip(bg + amp * np.sign(shading), 0.0, 255.0)
    return _Drawn(np.abs(shading), target, mask, size_um, math.degrees(theta), amp)


def _draw_crack(ctx, rng, size_um):
    h, w, um = ctx["h"], ctx["w"], ctx["um"]
    length = size_um / um
    theta = rng.uniform(0, 2 * np.pi)
    step = 2.0
    n = max(4, int(length / step))
    angles = theta + np.cumsum(rng.normal(0.0, 0.25, n))
    x = ctx["cx"] + np.cumsum(step * np.cos(angles))
    y = ctx["cy"] + np.cumsum(step * np.sin(angles))
    x, y = x - (x[-1] - x[0]) / 2, y - (y[-1] - y[0]) / 2
    width_px = max(1, round(rng.uniform(20.0, 45.0) / um))
    hard = _polyline_mask(h, w, np.stack([x, y], 1), width_px)
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(n // 5, n - n // 5 + 1))
        i = min(max(i, 0), n - 1)
        m = max(3, int(n * rng.uniform(0.2, 0.45)))
        a = angles[i] + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
        ba = a + np.cumsum(rng.normal(0.0, 0.3, m))
        bx = x[i] + np.cumsum(step * np.cos(ba))
        by = y[i] + np.cumsum(step * np.sin(ba))
        hard |= _polyline_mask(h, w, np.stack([bx, by], 1), 1)
    alpha = np.maximum(_soften(hard, ctx["blur"] * 0.6), hard * 0.75)
    if ctx["substrate"] == "coating":
        target, delta = 20.0, 20.0 - _COATING_LEVEL  # shadowed fissure
    else:
        target, delta = _BACKLIGHT_LEVEL, _BACKLIGHT_LEVEL - _FILM_LEVEL  # a tear lets light pass
    return _Drawn(alpha, target, hard, size_um, math.degrees(theta), delta)


def _draw_edge(ctx, rng, size_um):
    """Ragged edge: the material retreats irregularly over a stretch, with detached flakes."""
    h, w, um, edge = ctx["h"], ctx["w"], ctx["um"], ctx["edge"]
    length = size_um / um
    depth = rng.uniform(100.0, 500.0) / um
    rows = np.arange(h, dtype=np.float32)
    envelope = np.clip(1.0 - (np.abs(rows - ctx["cy"]) / (length / 2)) ** 2, 0.0, 1.0)
    rough = np.abs(_smooth_noise(rng, h, 1, max(1.0, 60.0 / um), 1.0)[:, 0])
    retreat = depth * envelope * (0.4 + 0.6 * np.clip(rough, 0, 2.5) / 2.5)
    sign = -1.0 if edge.material_left else 1.0
    ragged = _Edge(x=edge.x + sign * retreat, material_left=edge.material_left)
    xs = np.arange(w, dtype=np.float32)[None, :]
    inside_old = (edge.x[:, None] - xs) * (1 if edge.material_left else -1) >= 0
    inside_new = (ragged.x[:, None] - xs) * (1 if edge.material_left else -1) >= 0
    lost = inside_old & ~inside_new & (retreat[:, None] > 0.5)
    # Flakes: small pieces of lifted material lying beyond the ragged edge.
    flakes = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 5))):
        fy = ctx["cy"] + rng.uniform(-0.4, 0.4) * length
        row = int(np.clip(fy, 0, h - 1))
        fx = ragged.x[row] - sign * rng.uniform(1.0, 2.5) * depth
        blob, _ = _blob(rng, h, w, fx, fy, rng.uniform(30.0, 150.0) / um, 0.5, 4)
        flakes |= blob & ~inside_old
    beyond = _beyond_edge(ctx["substrate"], rng, h, w, um)
    material = _material(ctx["substrate"], rng, h, w, um)
    target = np.where(flakes, material, beyond).astype(np.float32)
    hard = lost | flakes
    alpha = _soften(hard, ctx["blur"])
    if ctx["substrate"] == "coating":
        delta = _FOIL_LEVEL - _COATING_LEVEL
    else:
        delta = _BACKLIGHT_LEVEL - _FILM_LEVEL
    return _Drawn(alpha, target, hard, size_um, 90.0, delta)


_DRAW = {
    "pinhole": _draw_pinhole,
    "void": _draw_void,
    "particle": _draw_particle,
    "scratch": _draw_scratch,
    "wrinkle": _draw_wrinkle,
    "edge": _draw_edge,
    "crack": _draw_crack,
}


def _apply(bg, drawn: _Drawn, contrast: float) -> np.ndarray:
    weight = np.clip(contrast * drawn.alpha, 0.0, 1.0)
    return (bg + weight * (drawn.target - bg)).astype(np.float32)


# --------------------------------------------------------------------------- public API


def _check(cls: str, substrate: str) -> None:
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; expected one of {CLASSES}")
    if substrate not in SUBSTRATES:
        raise ValueError(f"unknown substrate {substrate!r}; expected one of {SUBSTRATES}")


def patch(
    cls: str,
    substrate: str,
    rng: np.random.Generator,
    params: RenderParams | None = None,
    size: int = 128,
    *,
    size_um: float | None = None,
    render_defect: bool = True,
) -> Sample:
    """Render one ``size`` x ``size`` patch of ``cls`` on ``substrate``.

    Background, defect and sensor noise draw from separate child streams of ``rng``, so
    ``render_defect=False`` with an identically seeded ``rng`` gives the same patch without
    the defect (the mask stays the defect's footprint). ``size_um`` fixes the defect size.
    """
    _check(cls, substrate)
    params = params or RenderParams()
    um = params.pixel_pitch_um
    bg_rng, defect_rng, cam_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 3))
    col0 = int(bg_rng.integers(0, max(1, params.line_pixels - size)))
    if cls == "edge":
        has_edge = True
    elif cls == "ok":
        has_edge = bg_rng.random() < params.ok_edge_fraction
    else:
        has_edge = bg_rng.random() < params.defect_edge_fraction
    edges = []
    if has_edge:
        x0 = bg_rng.uniform(0.3, 0.7) * size
        edges.append(_make_edge(bg_rng, size, x0, bool(bg_rng.random() < 0.5), um))
    bg = _background(substrate, bg_rng, size, size, um, edges)

    mask = np.zeros((size, size), bool)
    meta: dict = {
        "generator_version": GENERATOR_VERSION,
        "pixel_pitch_um": um,
        "has_edge": has_edge,
        "column_offset": col0,
    }
    scene = bg
    if cls != "ok":
        lo, hi = SIZE_RANGE_UM[cls]
        s_um = float(size_um) if size_um is not None else float(defect_rng.uniform(lo, hi))
        if cls == "edge":
            cy = defect_rng.uniform(0.35, 0.65) * size
            cx = float(edges[0].x[int(cy)])
        elif edges:
            # Defects of the material sit on the material side of the edge.
            x0, lo_x, hi_x = float(edges[0].x.mean()), 0.12 * size, 0.88 * size
            lo_x, hi_x = (
                (lo_x, x0 - 0.1 * size) if edges[0].material_left else (x0 + 0.1 * size, hi_x)
            )
            cx, cy = defect_rng.uniform(lo_x, hi_x), defect_rng.uniform(0.3, 0.7) * size
        else:
            cx, cy = defect_rng.uniform(0.3, 0.7, 2) * size
        contrast = float(defect_rng.uniform(*params.contrast_range))
        blur = float(defect_rng.uniform(*params.blur_sigma_px_range))
        ctx = {
            "h": size,
            "w": size,
            "um": um,
            "bg": bg,
            "cx": float(cx),
            "cy": float(cy),
            "blur": blur,
            "substrate": substrate,
            "edge": edges[0] if edges else None,
        }
        drawn = _DRAW[cls](ctx, defect_rng, s_um)
        if edges and cls != "edge":
            material = _edge_weight(edges[0], size, size, 1.0)
            drawn.mask = drawn.mask & (material > 0.5)
            drawn.alpha = drawn.alpha * material
        mask = drawn.mask
        if render_defect:
            scene = _apply(bg, drawn, contrast)
        meta.update(
            size_um=s_um,
            size_px=s_um / um,
            position=(float(cx), float(cy)),
            orientation_deg=float(drawn.orientation_deg % 180.0),
            contrast=contrast,
            contrast_levels=float(drawn.nominal_delta * contrast),
            blur_sigma_px=blur,
        )
    image = _camera(scene, cam_rng, params, col0)
    return Sample(image=image, mask=mask, cls=cls, substrate=substrate, meta=meta)


def dataset(
    n_per_class: int,
    seed: int,
    params: RenderParams | None = None,
    substrates: tuple[str, ...] = SUBSTRATES,
    size: int = 128,
) -> Dataset:
    """``n_per_class`` patches of every class on every substrate; sample i has its own stream."""
    params = params or RenderParams()
    n = n_per_class * len(substrates) * len(CLASSES)
    images, masks, labels, subs = dataset_slice(n_per_class, seed, params, 0, n, substrates, size)
    return Dataset(images, masks, labels, subs, params, seed)


def dataset_slice(
    n_per_class: int,
    seed: int,
    params: RenderParams,
    start: int,
    stop: int,
    substrates: tuple[str, ...] = SUBSTRATES,
    size: int = 128,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Samples ``start`` to ``stop - 1`` of :func:`dataset` with the same arguments: images,
    masks, labels and substrate indices. Every sample has its own child seed, so any split of
    the range renders the same patches (a caller may render the parts in processes)."""
    jobs = [(c, s) for s in substrates for c in CLASSES for _ in range(n_per_class)]
    seeds = np.random.SeedSequence([seed, 0x5EED]).spawn(len(jobs))
    n = stop - start
    images = np.zeros((n, size, size), np.uint8)
    masks = np.zeros((n, size, size), bool)
    labels = np.zeros(n, np.int64)
    subs = np.zeros(n, np.int64)
    for j, i in enumerate(range(start, stop)):
        (cls, sub), ss = jobs[i], seeds[i]
        sample = patch(cls, sub, np.random.default_rng(ss), params, size)
        images[j], masks[j] = sample.image, sample.mask
        labels[j], subs[j] = CLASSES.index(cls), SUBSTRATES.index(sub)
    return images, masks, labels, subs


def frame(
    width: int = 4096,
    height: int = 1024,
    seed: int = 0,
    params: RenderParams | None = None,
    defects: list | None = None,
    substrate: str = "coating",
) -> tuple[np.ndarray, list[FrameDefect]]:
    """A full line-scan frame: one lane of coating (or film) between two edges, defects placed.

    ``defects`` lists class names (placed at random) or ``(cls, x, y)`` tuples; ``None`` places
    four random defect classes. Edge defects are moved onto the nearest lane edge. Returns the
    8-bit frame and, per defect, its class, box and mask within the box.
    """
    _check("ok", substrate)
    params = params or RenderParams()
    um = params.pixel_pitch_um
    rng = np.random.default_rng([seed, 0xF4A])
    bg_rng, defect_rng, cam_rng = (np.random.default_rng(s) for s in rng.integers(0, 2**63, 3))
    margin = max(16, int(width * 0.04))
    left = _make_edge(bg_rng, height, margin + bg_rng.uniform(0, margin), False, um)
    right = _make_edge(bg_rng, height, width - margin - bg_rng.uniform(0, margin), True, um)
    scene = _background(substrate, bg_rng, height, width, um, [left, right])

    if defects is None:
        kinds = [c for c in CLASSES if c != "ok"]
        defects = [str(defect_rng.choice(kinds)) for _ in range(4)]
    placed: list[FrameDefect] = []
    win = 384
    for spec in defects:
        if isinstance(spec, str):
            cls, x, y = spec, None, None
        else:
            cls, x, y = spec
        _check(cls, substrate)
        if cls == "ok":
            continue
        if y is None:
            y = defect_rng.uniform(0.15, 0.85) * height
        if cls == "edge":
            row = int(np.clip(y, 0, height - 1))
            edge = left if x is not None and x < width / 2 else right
            if x is None:
                edge = left if defect_rng.random() < 0.5 else right
            x = float(edge.x[row])
        elif x is None:
            x = defect_rng.uniform(margin * 3, width - margin * 3)
        x0 = int(np.clip(round(x) - win // 2, 0, max(0, width - win)))
        y0 = int(np.clip(round(y) - win // 2, 0, max(0, height - win)))
        x1, y1 = min(width, x0 + win), min(height, y0 + win)
        bg = scene[y0:y1, x0:x1].copy()
        lo, hi = SIZE_RANGE_UM[cls]
        s_um = float(defect_rng.uniform(lo, hi))
        contrast = float(defect_rng.uniform(*params.contrast_range))
        blur = float(defect_rng.uniform(*params.blur_sigma_px_range))
        local_edge = None
        if cls == "edge":
            src = left if edge is left else right
            local_edge = _Edge(x=src.x[y0:y1] - x0, material_left=src.material_left)
        ctx = {
            "h": y1 - y0,
            "w": x1 - x0,
            "um": um,
            "bg": bg,
            "cx": float(x - x0),
            "cy": float(y - y0),
            "blur": blur,
            "substrate": substrate,
            "edge": local_edge,
        }
        drawn = _DRAW[cls](ctx, defect_rng, s_um)
        scene[y0:y1, x0:x1] = _apply(bg, drawn, contrast)
        ys, xs = np.nonzero(drawn.mask)
        if ys.size == 0:
            continue
        bx0, by0 = x0 + int(xs.min()), y0 + int(ys.min())
        bx1, by1 = x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1
        placed.append(
            FrameDefect(
                cls=cls,
                box=(bx0, by0, bx1, by1),
                mask=drawn.mask[by0 - y0 : by1 - y0, bx0 - x0 : bx1 - x0].copy(),
                meta={"size_um": s_um, "contrast": contrast, "position": (float(x), float(y))},
            )
        )
    image = _camera(scene, cam_rng, params, 0)
    return image, placed


def flat_field(
    level: float,
    rng: np.random.Generator,
    params: RenderParams | None = None,
    size: int = 128,
    col0: int = 0,
) -> np.ndarray:
    """A uniform target seen through the camera model: what a flat-field calibration records."""
    params = params or RenderParams()
    scene = np.full((size, size), float(level), np.float32)
    return _camera(scene, rng, params, col0)
