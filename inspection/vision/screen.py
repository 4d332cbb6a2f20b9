"""Stage 1 of the vision worker: flat-field correction and a fast screen of the full frame.

Every frame of a line-scan camera is screened here at line rate; only the candidate boxes
it proposes go to the model (stage 2). The screen is pure numpy + OpenCV and runs on one
core well above 100 Mpx/s on 4096-wide frames.

How a frame is screened (rows are scan lines along the machine direction, columns are
sensor pixels across the web):

1. **Column profile.** The median grey value of every column over a sample of the frame's
   rows. A line-scan image is built from columns: illumination fall-off, the per-column
   fixed-pattern gain, slot-die streaks, foil margins and the coating (or slit) edges all run
   along the machine direction, so the profile is the frame's background; a defect that
   covers less than half of the sampled rows does not move a median. Each row's level over
   the columns away from edges (illumination flicker, thickness bands) is removed too.
2. **Flat field folded in.** A per-column gain ``g`` turns a raw deviation ``d`` into
   ``g * d`` corrected grey levels, so comparing the raw residual with ``T / g`` per column
   is the same test as correcting the frame first and comparing with ``T``, without a
   multiply per pixel. Crops for the model are corrected explicitly.
3. **Edges.** Profile steps steeper than ``edge_step_min`` grey levels per pixel, with other
   levels either side (a scratch in the profile is a ridge, not an edge), are web edges. The
   step wanders by a pixel or two from row to row, so within ``edge_band_px`` of it the
   threshold is raised by the step a wander of ``edge_wander_px`` would cause. An edge defect
   (the coating retreating, flakes on the foil) reaches beyond that band and is caught there.
4. **Fine detectors** on the residual minus its local mean over ``background_px`` (mottle,
   sheen): blobs on the 3 x 3 mean beyond ``fine_k`` robust sigmas (pinholes, particles,
   cracks), lines along the machine direction on the sum of 8 rows of one column beyond
   ``line_k`` sigmas (scratches). Worked in strips of rows that stay in the processor's
   cache; strips spread over the frame give the noise, hence the thresholds, first.
5. **Coarse scale.** 4 x 4 block means with the local mean over ``coarse_background_px``
   removed: a block's deviation, or the step across a ridge ``ridge_px`` either side (the two
   flanks of a fold), beyond ``coarse_k`` sigmas (low-contrast wrinkles, large soft voids).
6. **Streaks.** A defect that runs through the whole frame (a scratch from a damaged
   roller) lives in the column profile itself. The profile is compared with a running
   reference kept across frames (:class:`StreakReference`); columns that left it by more than
   max(``streak_k`` sigmas, ``streak_floor``) become full-height candidates.
7. **Components.** Every detector's 4 x 4 blocks, joined with a dilation of ``merge_px``
   (the fragments of one crack are one candidate), connected components with stats; each
   box is then tightened on the fine pixels. At most ``max_candidates`` per frame, largest
   deviation first.

The frame's mean grey level and residual noise (corrected units) are measured on the way:
the worker's input-drift monitor compares them with the commissioning band.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

#: sqrt(pi / 2) x mean absolute deviation estimates sigma for normal noise.
_MEAN_ABS_TO_SIGMA = 1.2533
_COARSE = 4  # block size of the coarse scale and of the component search
_ROW_CLIP = 25  # grey levels: a row's level is a mean of residuals clipped to this
_STRIP = 64  # rows worked at a time by the fine detectors (their arrays stay in cache)
_LINE_PX = 8  # pixels summed by the line detector: 8 rows of one column
_EDGE_SIDE_PX = 8  # columns averaged either side of a step to tell an edge from a ridge
_STREAK_EDGE_PX = 24  # columns either side of an edge band the streak search leaves out


class FlatFieldError(ValueError):
    """A flat field that cannot be used (wrong shape, dead columns, unreadable file)."""


@dataclass(frozen=True)
class FlatField:
    """Per-column gain and offset of one camera, from a commissioning flat field.

    ``corrected = (raw - offset) * gain``. A uniform target imaged through the camera
    (``bright``) and, where the camera has one, a capped-lens image (``dark``) give them:
    ``offset`` = dark column mean, ``gain`` = target level / (bright column mean - offset).
    The target level defaults to the mean response of the central fifth of the columns
    (what the lens centre sees), so a corrected frame keeps the grey levels the scene has
    on the optical axis.
    """

    gain: np.ndarray
    offset: np.ndarray

    def __post_init__(self) -> None:
        gain = np.asarray(self.gain, np.float32)
        offset = np.asarray(self.offset, np.float32)
        if gain.ndim != 1 or gain.shape != offset.shape or gain.size == 0:
            raise FlatFieldError("gain and offset must be 1-D arrays of one value per column")
        if not (np.isfinite(gain).all() and np.isfinite(offset).all()):
            raise FlatFieldError("gain and offset must be finite")
        if (gain <= 0).any():
            raise FlatFieldError("every column needs a positive gain")
        object.__setattr__(self, "gain", gain)
        object.__setattr__(self, "offset", offset)

    @property
    def width(self) -> int:
        return int(self.gain.size)

    @property
    def is_identity(self) -> bool:
        return bool((self.gain == 1.0).all() and (self.offset == 0.0).all())

    @classmethod
    def identity(cls, width: int) -> FlatField:
        """No correction (a camera not yet commissioned)."""
        return cls(gain=np.ones(width, np.float32), offset=np.zeros(width, np.float32))

    @classmethod
    def from_frames(
        cls,
        bright: np.ndarray,
        *,
        dark: np.ndarray | None = None,
        target_level: float | None = None,
        min_response: float = 8.0,
    ) -> FlatField:
        """Gain and offset from images of a uniform target (rows x columns, any count of
        rows). Refuses a column whose response above the offset is below ``min_response``
        grey levels (a dead or blinded pixel cannot be corrected)."""
        bright = np.asarray(bright)
        if bright.ndim != 2 or bright.shape[0] < 1:
            raise FlatFieldError("the flat-field image must be 2-D (rows x columns)")
        mean = bright.astype(np.float64).mean(axis=0)
        if dark is None:
            offset = np.zeros_like(mean)
        else:
            dark = np.asarray(dark)
            if dark.ndim != 2 or dark.shape[1] != bright.shape[1]:
                raise FlatFieldError("the dark image must have as many columns as the flat")
            offset = dark.astype(np.float64).mean(axis=0)
        response = mean - offset
        dead = np.flatnonzero(response < min_response)
        if dead.size:
            raise FlatFieldError(
                f"{dead.size} column(s) respond less than {min_response:g} grey levels "
                f"(first: column {int(dead[0])})"
            )
        if target_level is None:
            w = response.size
            lo, hi = int(w * 0.4), max(int(w * 0.6), int(w * 0.4) + 1)
            target_level = float(response[lo:hi].mean())
        return cls(gain=(target_level / response).astype(np.float32), offset=offset)

    def apply(self, image: np.ndarray, x0: int = 0) -> np.ndarray:
        """The corrected 8-bit image of ``image`` whose first column is camera column ``x0``
        (a crop), rounded and clipped to 0..255."""
        if image.ndim != 2:
            raise FlatFieldError("flat-field correction takes a 2-D grey image")
        w = image.shape[1]
        if x0 < 0 or x0 + w > self.width:
            raise FlatFieldError(
                f"columns {x0}..{x0 + w} are outside the flat field's {self.width} columns"
            )
        if self.is_identity:
            return image
        gain = self.gain[x0 : x0 + w]
        offset = self.offset[x0 : x0 + w]
        out = (image.astype(np.float32) - offset) * gain
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def save(self, path: Path | str) -> None:
        """Keep as ``.npz`` (``gain``, ``offset``): what commissioning hands the worker."""
        with open(path, "wb") as fh:
            np.savez(fh, gain=self.gain, offset=self.offset)

    @classmethod
    def load(cls, path: Path | str) -> FlatField:
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(gain=data["gain"], offset=data["offset"])
        except (OSError, KeyError, ValueError) as exc:
            raise FlatFieldError(f"flat field {path} unreadable: {exc}") from exc


@dataclass(frozen=True)
class ScreenParams:
    """Thresholds of the screen, in robust sigmas of each detector's response on the frame
    itself, with floors in corrected grey levels."""

    #: Blobs: the 3 x 3 mean of the high-passed residual beyond max(k * sigma, floor).
    fine_k: float = 5.25
    fine_floor: float = 12.0
    #: Lines along the machine direction (scratches): the 1 x 8 mean of the same.
    line_k: float = 5.5
    line_floor: float = 8.0
    #: Coarse scale, 4 x 4 block means with the local mean removed: a block fires where
    #: its deviation, or the step across a ridge ``ridge_px`` either side of it (the two
    #: flanks of a fold), passes ``coarse_k`` sigmas (and the deviation ``coarse_floor``
    #: grey levels). A region only the coarse scale saw needs ``coarse_min_blocks`` blocks.
    coarse_k: float = 5.0
    coarse_floor: float = 5.0
    coarse_min_blocks: int = 3
    ridge_px: int = 12
    #: Side of the local mean removed (mottle, sheen), pixels.
    background_px: int = 33
    coarse_background_px: int = 64
    #: A profile step steeper than this (grey levels per pixel) is a web edge.
    edge_step_min: float = 10.0
    #: Columns either side of an edge where the threshold is raised, and by how many
    #: pixels of row-to-row edge wander (threshold += wander x step per pixel).
    edge_band_px: int = 4
    edge_wander_px: float = 3.0
    #: A column whose profile left the running reference by more than max(k * sigma, floor)
    #: grey levels is a streak through the whole frame.
    streak_k: float = 8.0
    streak_floor: float = 15.0
    #: Fragments closer than this (pixels) are one candidate.
    merge_px: int = 8
    #: Rows sampled for the column profile (a median over them).
    profile_rows: int = 64
    #: A component only the fine (or line) detector saw needs this many pixels.
    min_fine_px: int = 2
    max_candidates: int = 256

    def __post_init__(self) -> None:
        for name in ("fine_k", "line_k", "coarse_k", "streak_k", "edge_step_min"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.profile_rows < 3 or self.max_candidates < 1 or self.merge_px < 0:
            raise ValueError("profile_rows >= 3, max_candidates >= 1, merge_px >= 0")


@dataclass(frozen=True)
class Candidate:
    """A region stage 1 proposes: its box ``(x0, y0, x1, y1)`` (end exclusive, frame
    pixels), the pixels above the fine thresholds in it (``area_px``; the coarse blocks'
    pixels when only a block-level detector saw it), its centroid and the largest deviation
    seen (corrected grey levels, signed). ``source`` names the detector that made it:
    ``fine``, ``line``, ``coarse`` or ``streak``."""

    box: tuple[int, int, int, int]
    area_px: int
    centroid: tuple[float, float]
    peak: float
    source: str

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@dataclass
class ScreenResult:
    """What stage 1 found in a frame, and the frame's statistics for the drift monitor.

    ``fine_mask`` (uint8, frame size: 1 where a fine or line detector fired) and
    ``coarse_mask`` (bool, one per 4 x 4 block) let stage 2 measure a defect's pixels.
    ``truncated`` counts candidates dropped beyond ``max_candidates``.
    """

    candidates: list[Candidate]
    fine_mask: np.ndarray
    coarse_mask: np.ndarray
    mean_grey: float
    noise_sigma: float
    fine_threshold: float
    coarse_threshold: float
    edges: list[int] = field(default_factory=list)
    streak_columns: int = 0
    truncated: int = 0


class StreakReference:
    """The running column profile a frame's profile is compared with, to see a defect that
    runs through whole frames (which the frame's own profile absorbs).

    Updated after every frame with weight ``alpha``; columns flagged as a streak update at a
    tenth of it, so a persistent streak stays visible for hundreds of frames (the worker's
    continuous-length rule stops the line long before) yet a real change of the web's
    column pattern is learnt eventually. Columns near a web edge, in the frame or in the
    reference, are never compared (edges wander); a frame of another width, or whose edges
    moved by more than ``edge_shift_px``, starts the reference again.
    """

    def __init__(self, alpha: float = 0.05, edge_shift_px: int = 8):
        self.alpha = alpha
        self.edge_shift_px = edge_shift_px
        self.profile: np.ndarray | None = None
        self.near_edge: np.ndarray | None = None
        self.edges: list[int] = []
        self.frames = 0

    def reset(self) -> None:
        self.profile = None
        self.near_edge = None
        self.edges = []
        self.frames = 0

    def comparable(self, profile: np.ndarray, edges: list[int]) -> bool:
        """Whether a frame's profile can be compared with the reference."""
        return (
            self.profile is not None
            and self.profile.shape == profile.shape
            and len(edges) == len(self.edges)
            and all(
                abs(a - b) <= self.edge_shift_px for a, b in zip(edges, self.edges, strict=True)
            )
        )

    def update(
        self,
        profile: np.ndarray,
        flagged: np.ndarray | None,
        *,
        near_edge: np.ndarray | None = None,
        edges: list[int] | None = None,
    ) -> None:
        edges = list(edges or [])
        near_edge = np.zeros(profile.shape, bool) if near_edge is None else near_edge
        if not self.comparable(profile, edges):
            self.profile = profile.astype(np.float32).copy()
            self.near_edge = near_edge.copy()
            self.edges = edges
            self.frames = 1
            return
        weight = np.full(profile.shape, self.alpha, np.float32)
        if flagged is not None:
            weight[flagged] *= 0.1
        self.profile += weight * (profile - self.profile)
        self.near_edge = near_edge | self.near_edge
        self.edges = edges
        self.frames += 1


def _robust_sigma(values: np.ndarray) -> float:
    """Sigma of zero-centred values, robust to the few a defect contributes: 1.2533 x the
    mean absolute value of those within 5 median absolute deviations (a mean, so integer
    responses still give a continuous estimate)."""
    if values.size == 0:
        return 0.0
    a = np.abs(values.astype(np.float32, copy=False))
    mad = float(np.median(a))
    if mad > 0:
        a = a[a <= 5.0 * mad]
    return float(_MEAN_ABS_TO_SIGMA * a.mean()) if a.size else 0.0


def _sigma_on(response: np.ndarray, gain: np.ndarray, quiet: np.ndarray, step: int) -> float:
    """Robust sigma of a response (corrected units) on a sparse grid, away from edges."""
    ry, rx = 2 * step + 1, step
    sub = response[ry // 2 :: ry, rx // 2 :: rx] * gain[rx // 2 :: rx][None, :]
    cols = quiet[rx // 2 :: rx]
    picked = sub[:, cols] if cols.any() else sub
    return _robust_sigma(picked)


def _edge_boost(profile_c: np.ndarray, params: ScreenParams) -> tuple[np.ndarray, list[int]]:
    """Extra threshold per column near web edges (corrected grey levels) and the edge
    columns (the steepest column of each step)."""
    w = profile_c.size
    grad = np.zeros(w, np.float32)
    if w >= 3:
        grad[1:-1] = np.abs(profile_c[2:] - profile_c[:-2]) * 0.5
    # An edge is a step: the levels either side differ. A scratch or a streak in the
    # profile is a ridge with the same level either side, and is not an edge.
    k = _EDGE_SIDE_PX
    padded = np.pad(profile_c, (k + 3, k + 3), mode="edge")
    csum = np.concatenate([[0.0], np.cumsum(padded, dtype=np.float64)])
    idx = np.arange(w) + k + 3  # position of column c in ``padded``
    left = (csum[idx - 2] - csum[idx - 2 - k]) / k  # mean of c-k-1 .. c-2
    right = (csum[idx + 2 + k] - csum[idx + 2]) / k  # mean of c+2 .. c+k+1
    steep = (grad > params.edge_step_min) & (np.abs(right - left) > 3 * params.edge_step_min)
    if not steep.any():
        return np.zeros(w, np.float32), []
    band = np.ones((1, 2 * params.edge_band_px + 1), np.uint8)
    local = cv2.dilate(grad[None, :], band)[0]
    near = cv2.dilate(steep.astype(np.uint8)[None, :], band)[0] > 0
    boost = np.where(near, local * params.edge_wander_px, 0.0).astype(np.float32)
    idx = np.flatnonzero(steep)
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    return boost, [int(run[np.argmax(grad[run])]) for run in runs]


def _block_counts(mask: np.ndarray, hc: int, wc: int) -> np.ndarray:
    """How many pixels of a 0/1 uint8 mask are set in each 4 x 4 block (float32)."""
    area = mask[: hc * _COARSE, : wc * _COARSE] * np.uint8(_COARSE * _COARSE)
    return cv2.resize(area, (wc, hc), interpolation=cv2.INTER_AREA).astype(np.float32)


def screen(
    image: np.ndarray,
    *,
    flat: FlatField | None = None,
    params: ScreenParams | None = None,
    reference: StreakReference | None = None,
) -> ScreenResult:
    """Screen one 8-bit frame (rows along the machine direction) for candidate defects.

    ``flat`` corrects the camera's column response (identity when None); ``reference``
    carries the running column profile between frames of one camera (no streak search
    without it) and is updated. See the module docstring for the method.
    """
    params = params or ScreenParams()
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError("screen takes an 8-bit single-channel frame")
    h, w = image.shape
    if h < _COARSE * 4 or w < _COARSE * 4:
        raise ValueError(f"frame of {w}x{h} px is too small to screen")
    flat = flat or FlatField.identity(w)
    if flat.width != w:
        raise FlatFieldError(f"flat field has {flat.width} columns, the frame {w}")
    gain, offset = flat.gain, flat.offset

    # 1. Column profile (raw units) and its corrected form; edges.
    step = max(1, h // params.profile_rows)
    rows = np.ascontiguousarray(image[::step].T)
    mid = rows.shape[1] // 2
    part = np.partition(rows, (mid - 1, mid) if rows.shape[1] % 2 == 0 else mid, axis=1)
    if rows.shape[1] % 2:
        profile = part[:, mid].astype(np.float32)
    else:
        profile = (part[:, mid - 1].astype(np.float32) + part[:, mid]) * 0.5
    profile_c = (profile - offset) * gain
    boost_c, edges = _edge_boost(profile_c, params)
    quiet = boost_c == 0

    # 2. Row levels: each row's residual over the columns away from edges (illumination
    # flicker, thickness bands across the web), a mean of values clipped to +-_ROW_CLIP,
    # which a defect on the row barely moves.
    p16 = np.rint(profile).astype(np.int16)
    cols = np.arange(8, w, 16)
    if quiet[cols].any():
        cols = cols[quiet[cols]]
    sampled = image[:, cols].astype(np.int16) - p16[cols]
    r16 = np.rint(np.clip(sampled, -_ROW_CLIP, _ROW_CLIP).mean(axis=1)).astype(np.int16)
    mean_grey = float(profile_c.mean())

    # 3. Block means of the residual (the coarse scale), from the frame's 4 x 4 block means,
    # and the local mean they give the fine detectors.
    hc, wc = h // _COARSE, w // _COARSE
    block = cv2.resize(
        image[: hc * _COARSE, : wc * _COARSE], (wc, hc), interpolation=cv2.INTER_AREA
    ).astype(np.float32)
    block -= p16[: wc * _COARSE].reshape(wc, _COARSE).mean(axis=1)[None, :]
    block -= r16[: hc * _COARSE].reshape(hc, _COARSE).mean(axis=1)[:, None]
    kb = max(3, params.background_px // _COARSE) | 1
    local = np.rint(cv2.blur(block, (kb, kb))).astype(np.int16)
    # One row per block row, one value per column; the last block row also serves the
    # rows below the last whole block.
    local_cols = np.repeat(local, _COARSE, axis=1)
    if local_cols.shape[1] < w:
        local_cols = np.pad(local_cols, ((0, 0), (0, w - local_cols.shape[1])), mode="edge")
    kc = max(3, params.coarse_background_px // _COARSE) | 1
    coarse = block - cv2.blur(block, (kc, kc))

    # 4. Fine detectors on the residual minus its local mean (mottle, sheen): blobs on the
    # 3 x 3 mean, lines along the machine direction on the sum of 8 rows. Worked in strips
    # of rows that stay in the processor's cache; a few strips spread over the frame first
    # give the detectors' noise, hence the thresholds.
    strips = [(r0, min(h, r0 + _STRIP)) for r0 in range(0, h, _STRIP)]

    def detectors(r0: int, r1: int):
        e0, e1 = max(0, r0 - 4), min(h, r1 + 4)
        res = np.subtract(image[e0:e1], p16[None, :], dtype=np.int16)
        res -= r16[e0:e1, None]
        b0 = e0 // _COARSE
        rows = np.minimum(np.arange(e0, e1) // _COARSE, hc - 1)
        hp = res - local_cols[rows] if b0 < hc else res
        fine_e = cv2.blur(hp, (3, 3))
        pairs = hp[:-1] + hp[1:]
        quads = pairs[:-2] + pairs[2:]
        eights = quads[:-4] + quads[4:]  # eights[k]: rows e0 + k .. e0 + k + 7
        line_s = np.zeros((r1 - r0, w), np.int16)
        lo, hi = max(r0, e0 + 4), min(r1, e0 + 4 + eights.shape[0])
        if hi > lo:
            line_s[lo - r0 : hi - r0] = eights[lo - e0 - 4 : hi - e0 - 4]
        return res[r0 - e0 : r1 - e0], fine_e[r0 - e0 : r1 - e0], line_s

    sample = strips[len(strips) % 4 // 2 :: 4] if len(strips) >= 4 else strips
    cached = {r0: detectors(r0, r1) for r0, r1 in sample}
    res_s = np.concatenate([v[0] for v in cached.values()])
    fine_s = np.concatenate([v[1] for v in cached.values()])
    line_smp = np.concatenate([v[2] for v in cached.values()])
    noise_sigma = _sigma_on(res_s, gain, quiet, 3)
    sigma_fine = _sigma_on(fine_s, gain, quiet, 3)
    sigma_line = _sigma_on(line_smp, gain, quiet, 3) / _LINE_PX
    t_fine = max(params.fine_k * sigma_fine, params.fine_floor)
    t_line = max(params.line_k * sigma_line, params.line_floor)
    inv_gain = 1.0 / gain
    thr_fine = np.minimum((t_fine + boost_c) * inv_gain, 32000).astype(np.int16)
    thr_line = np.minimum((t_line + boost_c) * inv_gain * _LINE_PX, 32000).astype(np.int16)
    fine = np.empty((h, w), np.int16)
    strong = np.empty((h, w), np.uint8)
    fine_count = np.zeros((hc, wc), np.float32)
    line_count = np.zeros((hc, wc), np.float32)
    for r0, r1 in strips:
        _, fine_r, line_r = cached.pop(r0, None) or detectors(r0, r1)
        fine[r0:r1] = fine_r
        fm = (np.abs(fine_r) > thr_fine[None, :]).view(np.uint8)
        lm = (np.abs(line_r) > thr_line[None, :]).view(np.uint8)
        np.bitwise_or(fm, lm, out=strong[r0:r1])
        b0, b1 = r0 // _COARSE, min(hc, r1 // _COARSE)
        if b1 > b0:
            n_rows = (b1 - b0) * _COARSE
            fine_count[b0:b1] = _block_counts(fm[:n_rows], b1 - b0, wc)
            line_count[b0:b1] = _block_counts(lm[:n_rows], b1 - b0, wc)

    # 5. Coarse scale: block deviations and ridges (the two flanks of a fold).
    gain_c = gain[: wc * _COARSE].reshape(wc, _COARSE).mean(axis=1)
    near_edge = boost_c[: wc * _COARSE].reshape(wc, _COARSE).max(axis=1) > 0
    s_r = max(1, round(params.ridge_px / _COARSE))
    if near_edge.any():
        # The ridge compares blocks s_r apart: keep it off the edge band by that much more.
        near_edge = cv2.dilate(near_edge.view(np.uint8)[None, :], np.ones((1, 2 * s_r + 1)))[0]
        near_edge = near_edge > 0
    quiet_c = ~near_edge
    coarse_c = coarse * gain_c[None, :]
    sigma_coarse = _sigma_on(coarse_c, np.ones_like(gain_c), quiet_c, 3)
    t_coarse = max(params.coarse_k * sigma_coarse, params.coarse_floor)
    along = cv2.blur(coarse_c, (1, 5))
    across = cv2.blur(coarse_c, (5, 1))
    ridge_x = np.zeros_like(coarse_c)
    ridge_y = np.zeros_like(coarse_c)
    ridge_x[:, s_r:-s_r] = along[:, 2 * s_r :] - along[:, : -2 * s_r]
    ridge_y[s_r:-s_r, :] = across[2 * s_r :, :] - across[: -2 * s_r, :]
    ones = np.ones_like(gain_c)
    t_rx = params.coarse_k * max(_sigma_on(ridge_x, ones, quiet_c, 3), 1e-3)
    t_ry = params.coarse_k * max(_sigma_on(ridge_y, ones, quiet_c, 3), 1e-3)
    coarse_mask = (
        (np.abs(coarse_c) > t_coarse) | (np.abs(ridge_x) > t_rx) | (np.abs(ridge_y) > t_ry)
    ) & quiet_c[None, :]

    # 6. Streaks through the whole frame: the profile against the running reference, away
    # from the edges of both (a wandering edge is not a streak).
    streak = np.zeros(w, bool)
    streak_diff = np.zeros(w, np.float32)
    if reference is not None:
        away = np.ones((1, 2 * _STREAK_EDGE_PX + 1), np.uint8)
        near = cv2.dilate((~quiet).view(np.uint8)[None, :], away)[0] > 0
        if reference.comparable(profile, edges):
            usable = ~(near | reference.near_edge)
            diff = (profile - reference.profile) * gain
            diff = diff - cv2.blur(diff[None, :], (31, 1))[0]
            sigma_streak = _robust_sigma(diff[usable]) if usable.any() else 0.0
            t_streak = max(params.streak_k * sigma_streak, params.streak_floor)
            streak = (np.abs(diff) > t_streak) & usable
            streak_diff = diff
        reference.update(profile, streak, near_edge=near, edges=edges)

    # 7. Components on 4 x 4 blocks: every detector's blocks, joined by a dilation.
    fine_b = fine_count > 0
    line_b = line_count > 0
    joined = (fine_b | line_b | coarse_mask).view(np.uint8)
    r = max(0, round(params.merge_px / _COARSE))
    if r:
        joined = cv2.dilate(joined, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    candidates: list[Candidate] = []
    if n > 1:
        fine_px = np.bincount(labels[fine_b], weights=fine_count[fine_b], minlength=n)
        line_px = np.bincount(labels[line_b], weights=line_count[line_b], minlength=n)
        coarse_blocks = np.bincount(labels[coarse_mask], minlength=n)
        for i in range(1, n):
            if fine_px[i] >= params.min_fine_px:
                source = "fine"
            elif line_px[i] >= params.min_fine_px:
                source = "line"
            elif coarse_blocks[i] >= params.coarse_min_blocks:
                source = "coarse"
            else:
                continue
            bx, by, bw, bh, _area = (int(v) for v in stats[i])
            lab = labels[by : by + bh, bx : bx + bw] == i
            x0, y0 = bx * _COARSE, by * _COARSE
            x1, y1 = min(w, (bx + bw) * _COARSE), min(h, (by + bh) * _COARSE)
            inside = np.repeat(np.repeat(lab, _COARSE, 0), _COARSE, 1)[: y1 - y0, : x1 - x0]
            region = strong[y0:y1, x0:x1] & inside.view(np.uint8)
            if source == "coarse" or not region.any():
                cm = coarse_mask[by : by + bh, bx : bx + bw] & lab
                region = np.repeat(np.repeat(cm, _COARSE, 0), _COARSE, 1)[
                    : y1 - y0, : x1 - x0
                ].view(np.uint8)
            ys, xs = np.nonzero(region)
            vals = fine[y0:y1, x0:x1][ys, xs]
            j = int(np.argmax(np.abs(vals)))
            candidates.append(
                Candidate(
                    box=(
                        x0 + int(xs.min()),
                        y0 + int(ys.min()),
                        x0 + int(xs.max()) + 1,
                        y0 + int(ys.max()) + 1,
                    ),
                    area_px=int(ys.size),
                    centroid=(x0 + float(xs.mean()), y0 + float(ys.mean())),
                    peak=float(vals[j]) * float(gain[x0 + int(xs[j])]),
                    source=source,
                )
            )

    # Streak columns: one full-height candidate per run of flagged columns.
    streak_cols = np.flatnonzero(streak)
    if streak_cols.size:
        for run in np.split(streak_cols, np.flatnonzero(np.diff(streak_cols) > 2) + 1):
            x0, x1 = int(run[0]), int(run[-1]) + 1
            d = streak_diff[x0:x1]
            candidates.append(
                Candidate(
                    (x0, 0, x1, h),
                    (x1 - x0) * h,
                    ((x0 + x1) / 2.0, h / 2.0),
                    float(d[np.argmax(np.abs(d))]),
                    "streak",
                )
            )

    candidates.sort(key=lambda c: (-abs(c.peak) * np.sqrt(max(c.area_px, 1)), c.box))
    truncated = max(0, len(candidates) - params.max_candidates)
    return ScreenResult(
        candidates=candidates[: params.max_candidates],
        fine_mask=strong,
        coarse_mask=coarse_mask,
        mean_grey=mean_grey,
        noise_sigma=noise_sigma,
        fine_threshold=t_fine,
        coarse_threshold=t_coarse,
        edges=edges,
        streak_columns=int(streak_cols.size),
        truncated=truncated,
    )
