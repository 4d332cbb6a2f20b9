"""Per-cell features from formation step records, curves and the aging OCV log.

The same code serves training and scoring: :func:`cell_features` takes one cell's step
records, curves and OCV log; :func:`batch_features` takes many cells' step tables and OCV
logs as arrays (vectorised) and, optionally, their curves. Both return the features named
in :data:`FEATURE_NAMES`, versioned by :data:`FEATURE_SET_VERSION`.

Inputs are duck-typed on the shapes of ``formation.cellsim`` (``StepRecord``, ``Curve``,
``OcvLog``, ``StepTable``, ``AgingLog``), which follow the canonical formation record schema,
so records read back from the database feed the same functions.

Also here: the building blocks (least-squares K-value, pulse DCIR, dQ/dV and its peaks,
robust z-scores within groups) and the storage functions for curves (:func:`resample_curve`,
:func:`curve_pack`, :func:`curve_unpack`). Pure numpy.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
import zlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURE_SET_VERSION = "1.0.0"

#: Peaks reported from the dQ/dV of the capacity discharge, in order of voltage.
ICA_PEAKS = 3

FEATURE_NAMES: tuple[str, ...] = (
    "q_charge_ah",
    "q_discharge_ah",
    "ice",
    "e_discharge_wh",
    "v_mean_discharge_v",
    "cv_time_s",
    "cv_tail_current_a",
    "cv_charge_fraction",
    "dcir_1s_mohm",
    "dcir_10s_mohm",
    "r_low_soc_10s_mohm",
    "temperature_rise_k",
    "k_value_mv_per_day",
    "k_value_se_mv_per_day",
    "k_value_r2",
    "ocv_end_mv",
    *(f"ica_peak{j}_{what}" for j in range(1, ICA_PEAKS + 1) for what in ("v", "ah_per_v")),
)

#: Voltage window of the discharge dQ/dV (above the steep end of discharge, below the CV).
ICA_WINDOW_V = (3.30, 4.15)
ICA_STEP_V = 0.005
ICA_SMOOTH_V = 0.015

_MAD_TO_SIGMA = 1.4826
_MEAN_AD_TO_SIGMA = 1.2533  # sqrt(pi/2): mean absolute deviation of a normal to sigma


# --------------------------------------------------------------------------- K-value


@dataclass(frozen=True)
class KFit:
    """Least-squares fit of OCV against time. ``k_mv_per_day`` is the OCV drop rate
    (positive when the OCV falls), ``se_mv_per_day`` its standard error, ``r2`` the fit's
    coefficient of determination, ``n`` the readings used. Arrays when fitted in batch."""

    k_mv_per_day: Any
    se_mv_per_day: Any
    r2: Any
    n: Any


def k_value(
    t_days: np.ndarray,
    ocv_mv: np.ndarray,
    *,
    temperature_c: np.ndarray | None = None,
    ocv_temp_coeff_mv_per_k: float = 0.0,
    reference_c: float = 25.0,
) -> KFit:
    """K-value as the least-squares slope of every OCV reading over the aging period.

    Works on one log (1-D) or many (rows of 2-D arrays); NaN readings are left out of their
    row. With ``temperature_c`` and a coefficient, each reading is first corrected to
    ``reference_c``. Fewer than two readings give NaN; two give a slope without a
    standard error.
    """
    t = np.asarray(t_days, dtype=np.float64)
    y = np.asarray(ocv_mv, dtype=np.float64)
    if t.shape != y.shape:
        raise ValueError(f"t_days has shape {t.shape}, ocv_mv {y.shape}; they must match")
    if temperature_c is not None:
        temp = np.asarray(temperature_c, dtype=np.float64)
        if temp.shape != y.shape:
            raise ValueError(f"temperature_c has shape {temp.shape}, expected {y.shape}")
        y = y - ocv_temp_coeff_mv_per_k * (temp - reference_c)
    w = np.isfinite(t) & np.isfinite(y)
    t0 = np.where(w, t, 0.0)
    y0 = np.where(w, y, 0.0)
    n = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tm = t0.sum(axis=-1) / n
        ym = y0.sum(axis=-1) / n
        dt = np.where(w, t0 - tm[..., None], 0.0)
        dy = np.where(w, y0 - ym[..., None], 0.0)
        sxx = (dt * dt).sum(axis=-1)
        sxy = (dt * dy).sum(axis=-1)
        syy = (dy * dy).sum(axis=-1)
        slope = np.where((n >= 2) & (sxx > 0), sxy / sxx, np.nan)
        resid = np.where(w, dy - slope[..., None] * dt, 0.0)
        sse = (resid * resid).sum(axis=-1)
        se = np.where(n >= 3, np.sqrt(sse / (n - 2) / sxx), np.nan)
        r2 = np.where(syy > 0, 1.0 - sse / syy, np.where(np.isfinite(slope), 1.0, np.nan))
    k = -slope
    if np.ndim(k) == 0:
        return KFit(float(k), float(se), float(r2), int(n))
    return KFit(k, se, r2, n)


# --------------------------------------------------------------------------- DCIR


def dcir_mohm(
    time_s: np.ndarray,
    voltage_v: np.ndarray,
    current_a: np.ndarray,
    *,
    v_before_v: float,
    at_s: float = 10.0,
) -> float:
    """Pulse resistance ΔV/ΔI at ``at_s`` seconds into a pulse, in mΩ.

    ``v_before_v`` is the last voltage of the rest before the pulse (the cycler's reference,
    at zero current). The pulse voltage at ``at_s`` is interpolated between samples; the
    pulse current is the median over the pulse.
    """
    t = np.asarray(time_s, dtype=np.float64)
    v = np.asarray(voltage_v, dtype=np.float64)
    i = np.asarray(current_a, dtype=np.float64)
    if len(t) < 2 or len(v) != len(t) or len(i) != len(t):
        raise ValueError("a pulse needs at least two samples of time, voltage and current")
    rel = t - t[0]
    if not 0.0 < at_s <= rel[-1] + 1e-9:
        raise ValueError(f"at_s={at_s} is outside the pulse (0..{rel[-1]:.3f} s)")
    i_pulse = float(np.median(i[1:]))
    if i_pulse == 0.0:
        raise ValueError("the pulse carries no current")
    v_at = float(np.interp(at_s, rel, v))
    return (v_at - v_before_v) / i_pulse * 1e3


# --------------------------------------------------------------------------- dQ/dV


def _gaussian_kernel(sigma_bins: float) -> np.ndarray:
    half = max(1, math.ceil(3.0 * sigma_bins))
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_bins) ** 2)
    return k / k.sum()


def dqdv(
    voltage_v: np.ndarray,
    capacity_ah: np.ndarray,
    *,
    v_range: tuple[float, float] | None = None,
    step_v: float = ICA_STEP_V,
    smooth_v: float = ICA_SMOOTH_V,
) -> tuple[np.ndarray, np.ndarray]:
    """Incremental capacity |dQ/dV| on a voltage grid (Ah/V), smoothed with a Gaussian.

    The charge passed between two samples is put into the voltage bin of their mean voltage
    and divided by the bin width (a charge-weighted voltage histogram), so the result does
    not depend on how the cycler sampled (every 10 s, every 5 mV) and voltage noise only
    blurs it. Works for charge and discharge (the counter is positive in both).
    """
    v = np.asarray(voltage_v, dtype=np.float64)
    q = np.asarray(capacity_ah, dtype=np.float64)
    if v.shape != q.shape or v.ndim != 1:
        raise ValueError("voltage_v and capacity_ah must be 1-D arrays of the same length")
    if step_v <= 0 or smooth_v < 0:
        raise ValueError("step_v must be positive and smooth_v non-negative")
    lo, hi = v_range if v_range is not None else (float(np.nanmin(v)), float(np.nanmax(v)))
    n_bins = max(1, round((hi - lo) / step_v))
    centres = lo + (np.arange(n_bins) + 0.5) * step_v
    if len(v) < 2:
        return centres, np.zeros(n_bins)
    vm = 0.5 * (v[1:] + v[:-1])
    dq = np.abs(np.diff(q))
    ok = np.isfinite(vm) & np.isfinite(dq) & (vm >= lo) & (vm < hi)
    idx = ((vm[ok] - lo) / step_v).astype(np.intp)
    np.minimum(idx, n_bins - 1, out=idx)
    hist = np.bincount(idx, weights=dq[ok], minlength=n_bins) / step_v
    if smooth_v > 0:
        hist = np.convolve(hist, _gaussian_kernel(smooth_v / step_v), mode="same")
    return centres, hist


def dqdv_peaks(
    grid_v: np.ndarray,
    dqdv_ah_per_v: np.ndarray,
    *,
    n_peaks: int = ICA_PEAKS,
    min_prominence_fraction: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_peaks`` most prominent local maxima, returned in order of voltage.

    Prominence is the height above the higher of the two valleys that separate a peak from
    higher ground on either side. Peaks below ``min_prominence_fraction`` of the curve's
    maximum are ignored. Missing peaks are NaN. Positions are refined by a parabola through
    the peak bin and its neighbours.
    """
    x = np.asarray(grid_v, dtype=np.float64)
    d = np.asarray(dqdv_ah_per_v, dtype=np.float64)
    pos = np.full(n_peaks, np.nan)
    height = np.full(n_peaks, np.nan)
    if len(d) < 3 or not np.isfinite(d).any() or np.nanmax(d) <= 0:
        return pos, height
    cand = np.flatnonzero((d[1:-1] > d[:-2]) & (d[1:-1] >= d[2:])) + 1
    if not len(cand):
        return pos, height
    prom = np.empty(len(cand))
    for j, p in enumerate(cand):
        left = d[:p][::-1]
        higher = np.flatnonzero(left > d[p])
        lmin = left[: higher[0]].min() if len(higher) else left.min()
        right = d[p + 1 :]
        higher = np.flatnonzero(right > d[p])
        rmin = right[: higher[0]].min() if len(higher) else right.min()
        prom[j] = d[p] - max(lmin, rmin)
    keep = prom >= min_prominence_fraction * np.nanmax(d)
    cand, prom = cand[keep], prom[keep]
    best = np.sort(cand[np.argsort(-prom, kind="stable")[:n_peaks]])
    step = x[1] - x[0] if len(x) > 1 else 0.0
    for j, p in enumerate(best):
        a, b, c = d[p - 1], d[p], d[p + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
        pos[j] = x[p] + shift * step
        height[j] = b - 0.25 * (a - c) * shift
    return pos, height


# --------------------------------------------------------------------------- robust z


def robust_z(
    values: np.ndarray,
    groups: Sequence[Hashable] | np.ndarray | None = None,
    *,
    min_group_size: int = 8,
) -> np.ndarray:
    """Robust z-scores ``(x - median) / (1.4826 MAD)`` within each group, per column.

    ``values`` is one feature (n,) or a feature matrix (n, f); ``groups`` labels each row
    (lot, formation channel, aging rack; None = one group). NaN values get NaN and take no
    part in the statistics.

    Sensible fallbacks, column by column:

    * a group with fewer than ``min_group_size`` finite values is scored against the whole
      population (its own median would be mostly its own cell);
    * MAD = 0 (more than half the values identical) falls back to 1.2533 times the mean absolute
      deviation from the median; if that is 0 too, to the population's scale;
    * a column with no spread at all scores 0 everywhere (it carries no information).
    """
    x = np.asarray(values, dtype=np.float64)
    one_d = x.ndim == 1
    if one_d:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError("values must be a 1-D feature or a 2-D (cells x features) matrix")
    n = x.shape[0]
    if groups is None:
        codes = np.zeros(n, dtype=np.int64)
    else:
        labels = np.asarray(groups)
        if labels.shape != (n,):
            raise ValueError(f"groups has shape {labels.shape}, expected ({n},)")
        _, codes = np.unique(labels, return_inverse=True)
    centre_all, scale_all = _centre_scale(x, fallback=None)
    z = np.full(x.shape, np.nan)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for rows in np.split(order, bounds):
        block = x[rows]
        centre, scale = _centre_scale(block, fallback=scale_all)
        small = np.isfinite(block).sum(axis=0) < min_group_size
        centre = np.where(small, centre_all, centre)
        scale = np.where(small, scale_all, scale)
        with np.errstate(invalid="ignore", divide="ignore"):
            zb = (block - centre) / scale
        zb = np.where(np.isfinite(block) & (scale == 0), 0.0, zb)
        z[rows] = zb
    return z[:, 0] if one_d else z


def _centre_scale(block: np.ndarray, fallback: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    f = block.shape[1]
    centre = np.full(f, np.nan)
    scale = np.full(f, np.nan)
    finite = np.isfinite(block)
    has = finite.any(axis=0)
    if has.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            centre[has] = np.nanmedian(block[:, has], axis=0)
            dev = np.abs(block[:, has] - centre[has])
            mad = _MAD_TO_SIGMA * np.nanmedian(dev, axis=0)
            mean_ad = _MEAN_AD_TO_SIGMA * np.nanmean(dev, axis=0)
        scale[has] = np.where(mad > 0, mad, mean_ad)
    if fallback is not None:
        scale = np.where((scale > 0) | ~np.isfinite(fallback), scale, fallback)
    scale = np.where(np.isfinite(scale), scale, 0.0)
    return centre, scale


# --------------------------------------------------------------------------- curve storage


def resample_curve(t: np.ndarray, y: np.ndarray, n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-size copy of a curve: ``n`` points evenly spaced in time, linear interpolation.

    ``y`` is one array (len(t),) or several stacked (k, len(t)). ``t`` must be finite and
    strictly increasing.
    """
    tt = np.asarray(t, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    if n < 2:
        raise ValueError("n must be at least 2")
    if tt.ndim != 1 or len(tt) < 2:
        raise ValueError("t must be a 1-D array with at least two samples")
    _check_finite("t", tt)
    _check_increasing("t", tt)
    if yy.shape[-1] != len(tt) or yy.ndim > 2:
        raise ValueError(f"y has shape {yy.shape}; its last axis must have len(t)={len(tt)}")
    _check_finite("y", yy)
    grid = np.linspace(tt[0], tt[-1], n)
    if yy.ndim == 1:
        return grid, np.interp(grid, tt, yy)
    return grid, np.stack([np.interp(grid, tt, row) for row in yy])


_MAGIC = b"CTC1"
_ENCODING = "shuffle+zlib"


def _check_finite(name: str, a: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        first = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(f"array {name!r} has {int(bad.sum())} NaN/inf value(s), first at {first}")


def _check_increasing(name: str, a: np.ndarray) -> None:
    steps = np.diff(a)
    if (steps <= 0).any():
        first = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise ValueError(f"time array {name!r} is not strictly increasing (at sample {first})")


def _is_time(name: str) -> bool:
    return name == "time_s" or name.endswith("_time_s")


def curve_pack(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Pack named 1-D arrays of one length into a compact blob (zlib-compressed).

    Measurements are stored as float32 (little-endian); time arrays (``time_s`` or
    ``*_time_s``) as float64, because late in a run float32 cannot keep apart a step's last
    samples (its resolution at 40,000 s is 4 ms). Time arrays must be strictly increasing.
    Refuses NaN/inf (also values beyond float32's range), ragged lengths, non-1-D arrays and
    empty input with a ValueError naming the array. Bytes are shuffled (all first bytes,
    then all second bytes, ...) before compression: lossless, and smooth curves compress
    about twice as well.
    """
    if not arrays:
        raise ValueError("no arrays to pack")
    names = list(arrays)
    parts = []
    dtypes = []
    length = None
    for name in names:
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ValueError(f"array name {name!r} must be a non-empty string of <= 64 chars")
        a = np.asarray(arrays[name])
        if a.ndim != 1:
            raise ValueError(f"array {name!r} must be 1-D, got shape {a.shape}")
        if length is None:
            length = len(a)
        elif len(a) != length:
            raise ValueError(f"array {name!r} has {len(a)} samples, expected {length}")
        a64 = np.asarray(a, dtype=np.float64)
        _check_finite(name, a64)
        if _is_time(name):
            _check_increasing(name, a64)
            stored = a64.astype("<f8")
        else:
            with np.errstate(over="ignore"):
                stored = a64.astype("<f4")
            _check_finite(name, stored)  # values beyond float32's range
        dtypes.append(stored.dtype.str)
        width = stored.dtype.itemsize
        parts.append(stored.view(np.uint8).reshape(-1, width).T.tobytes())
    header = json.dumps(
        {"encoding": _ENCODING, "n": length, "names": names, "dtypes": dtypes},
        separators=(",", ":"),
    ).encode()
    return _MAGIC + struct.pack("<I", len(header)) + header + zlib.compress(b"".join(parts), 6)


def curve_unpack(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays packed by :func:`curve_pack`, in their original order: time arrays as
    float64, the others as float32."""
    if len(blob) < 8 or blob[:4] != _MAGIC:
        raise ValueError("not a curve blob (bad magic)")
    (hlen,) = struct.unpack("<I", blob[4:8])
    try:
        header = json.loads(blob[8 : 8 + hlen])
        names, n, dtypes = header["names"], int(header["n"]), header["dtypes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError("curve blob header is unreadable") from exc
    if header.get("encoding") != _ENCODING:
        raise ValueError(f"unsupported curve encoding {header.get('encoding')!r}")
    if len(dtypes) != len(names) or not set(dtypes) <= {"<f4", "<f8"}:
        raise ValueError("curve blob header lists unknown column types")
    try:
        payload = zlib.decompress(blob[8 + hlen :])
    except zlib.error as exc:
        raise ValueError("curve blob payload is corrupt") from exc
    widths = [np.dtype(d).itemsize for d in dtypes]
    if len(payload) != n * sum(widths):
        raise ValueError("curve blob payload has the wrong length")
    out = {}
    pos = 0
    for name, dtype, width in zip(names, dtypes, widths, strict=True):
        chunk = np.frombuffer(payload, dtype=np.uint8, count=n * width, offset=pos)
        pos += n * width
        out[name] = np.ascontiguousarray(chunk.reshape(width, n).T).view(dtype).reshape(n).copy()
    return out


# --------------------------------------------------------------------------- per cell


def _first(kinds: Sequence[str], kind: str, start: int = 0) -> int | None:
    for j in range(start, len(kinds)):
        if kinds[j] == kind:
            return j
    return None


def _layout(kinds: Sequence[str], v_before: Sequence[float]) -> dict[str, int | None]:
    """Which step is which: the first CC charge (+ the CV right after it) is the formation
    charge, the first CC discharge after it the capacity discharge; of the pulses, the one
    starting from the lowest voltage is the low-SOC pulse and the highest the DCIR pulse."""
    chg = _first(kinds, "cc_charge")
    cv = None
    if chg is not None and chg + 1 < len(kinds) and kinds[chg + 1] == "cv_charge":
        cv = chg + 1
    dis = _first(kinds, "cc_discharge", 0 if chg is None else chg + 1)
    pulses = [j for j, k in enumerate(kinds) if k == "pulse" and j > 0]
    mid = low = None
    if pulses:
        vb = np.array([v_before[j] for j in pulses], dtype=np.float64)
        known = np.isfinite(vb).any()
        mid = pulses[int(np.nanargmax(vb))] if known else pulses[-1]
        if len(pulses) > 1:
            low = pulses[int(np.nanargmin(vb))] if known else pulses[0]
    return {"charge": chg, "cv": cv, "discharge": dis, "pulse_mid": mid, "pulse_low": low}


def cell_features(
    steps: Sequence[Any],
    curves: Sequence[Any] | None = None,
    aging: Any | None = None,
    *,
    ocv_temp_coeff_mv_per_k: float = 0.0,
) -> dict[str, float]:
    """Features of one cell (see :data:`FEATURE_NAMES`); NaN where an input is missing.

    ``steps``: step records in run order; ``curves``: one curve per step (same order), for
    the pulse resistances and the dQ/dV peaks; ``aging``: the OCV log (``at_s``, ``ocv_v``,
    ``rack_temperature_c``). With curves, DCIR is recomputed from the samples at 1 s and
    10 s; without, the cycler's ``r_1s_mohm`` / ``r_10s_mohm`` are used.
    """
    f = dict.fromkeys(FEATURE_NAMES, math.nan)
    kinds = [s.kind for s in steps]
    v_before = [math.nan] + [float(s.v_end_v) for s in steps[:-1]]
    lay = _layout(kinds, v_before)
    chg, cv, dis = lay["charge"], lay["cv"], lay["discharge"]
    if chg is not None:
        q_cv = float(steps[cv].charge_ah) if cv is not None else 0.0
        f["q_charge_ah"] = float(steps[chg].charge_ah) + q_cv
        if cv is not None:
            f["cv_time_s"] = float(steps[cv].duration_s)
            f["cv_tail_current_a"] = float(steps[cv].i_end_a)
            f["cv_charge_fraction"] = q_cv / f["q_charge_ah"] if f["q_charge_ah"] > 0 else math.nan
    if dis is not None:
        q = float(steps[dis].discharge_ah)
        e = float(steps[dis].discharge_wh)
        f["q_discharge_ah"] = q
        f["e_discharge_wh"] = e
        f["v_mean_discharge_v"] = e / q if q > 0 else math.nan
        if f["q_charge_ah"] > 0:
            f["ice"] = q / f["q_charge_ah"]
    rises = [float(s.temperature_max_c) - float(s.temperature_start_c) for s in steps]
    if rises:
        f["temperature_rise_k"] = float(np.nanmax(rises))
    for key, names in (("pulse_mid", ("dcir_1s_mohm", "dcir_10s_mohm")),
                       ("pulse_low", (None, "r_low_soc_10s_mohm"))):  # fmt: skip
        j = lay[key]
        if j is None:
            continue
        for at_s, name in zip((1.0, 10.0), names, strict=True):
            if name is None:
                continue
            if curves is not None:
                c = curves[j]
                f[name] = dcir_mohm(
                    c.time_s, c.voltage_v, c.current_a,
                    v_before_v=float(curves[j - 1].voltage_v[-1]), at_s=at_s,
                )  # fmt: skip
            else:
                f[name] = float(steps[j].r_1s_mohm if at_s == 1.0 else steps[j].r_10s_mohm)
    if curves is not None and dis is not None:
        c = curves[dis]
        grid, ica = dqdv(c.voltage_v, c.capacity_ah, v_range=ICA_WINDOW_V)
        pos, height = dqdv_peaks(grid, ica)
        for j in range(ICA_PEAKS):
            f[f"ica_peak{j + 1}_v"] = float(pos[j])
            f[f"ica_peak{j + 1}_ah_per_v"] = float(height[j])
    if aging is not None:
        days = (np.asarray(aging.at_s, dtype=np.float64) - aging.at_s[0]) / 86400.0
        fit = k_value(
            days,
            np.asarray(aging.ocv_v, dtype=np.float64) * 1e3,
            temperature_c=np.asarray(aging.rack_temperature_c, dtype=np.float64),
            ocv_temp_coeff_mv_per_k=ocv_temp_coeff_mv_per_k,
        )
        f["k_value_mv_per_day"] = fit.k_mv_per_day
        f["k_value_se_mv_per_day"] = fit.se_mv_per_day
        f["k_value_r2"] = fit.r2
        f["ocv_end_mv"] = float(aging.ocv_v[-1]) * 1e3
    return f


# --------------------------------------------------------------------------- batch


@dataclass
class FeatureTable:
    """Features of many cells: ``values[i, j]`` is feature ``names[j]`` of cell ``i``."""

    names: tuple[str, ...]
    values: np.ndarray
    version: str = FEATURE_SET_VERSION

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]

    def row(self, i: int) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.values[i], strict=True)}


def batch_features(
    steps: Any,
    aging: Any | None = None,
    *,
    curves: Iterable[Sequence[Any]] | None = None,
    ocv_temp_coeff_mv_per_k: float = 0.0,
) -> FeatureTable:
    """Features of many cells at once, equal to :func:`cell_features` cell by cell.

    ``steps`` is a step table (``kinds`` plus one ``(n_cells, n_steps)`` array per record
    field), ``aging`` an OCV log table (``at_s``, ``ocv_v``, ``rack_temperature_c`` as
    ``(n_cells, n_readings)``). Scalar features are computed column-wise; ``curves`` (one
    sequence of step curves per cell, in cell order) adds the curve features cell by cell.
    """
    n = steps.duration_s.shape[0]
    out = np.full((n, len(FEATURE_NAMES)), np.nan)
    col = {name: j for j, name in enumerate(FEATURE_NAMES)}
    kinds = list(steps.kinds)
    v_end = steps.v_end_v
    med_before = [math.nan] + [float(np.nanmedian(v_end[:, j])) for j in range(len(kinds) - 1)]
    lay = _layout(kinds, med_before)
    chg, cv, dis = lay["charge"], lay["cv"], lay["discharge"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if chg is not None:
            q_cv = steps.charge_ah[:, cv] if cv is not None else np.zeros(n)
            q_ch = steps.charge_ah[:, chg] + q_cv
            out[:, col["q_charge_ah"]] = q_ch
            if cv is not None:
                out[:, col["cv_time_s"]] = steps.duration_s[:, cv]
                out[:, col["cv_tail_current_a"]] = steps.i_end_a[:, cv]
                out[:, col["cv_charge_fraction"]] = np.where(q_ch > 0, q_cv / q_ch, np.nan)
        if dis is not None:
            q = steps.discharge_ah[:, dis]
            e = steps.discharge_wh[:, dis]
            out[:, col["q_discharge_ah"]] = q
            out[:, col["e_discharge_wh"]] = e
            out[:, col["v_mean_discharge_v"]] = np.where(q > 0, e / q, np.nan)
            if chg is not None:
                out[:, col["ice"]] = np.where(q_ch > 0, q / q_ch, np.nan)
        out[:, col["temperature_rise_k"]] = np.nanmax(
            steps.temperature_max_c - steps.temperature_start_c, axis=1
        )
    if lay["pulse_mid"] is not None:
        out[:, col["dcir_1s_mohm"]] = steps.r_1s_mohm[:, lay["pulse_mid"]]
        out[:, col["dcir_10s_mohm"]] = steps.r_10s_mohm[:, lay["pulse_mid"]]
    if lay["pulse_low"] is not None:
        out[:, col["r_low_soc_10s_mohm"]] = steps.r_10s_mohm[:, lay["pulse_low"]]
    if aging is not None:
        at = np.asarray(aging.at_s, dtype=np.float64)
        days = (at - at[:, :1]) / 86400.0
        fit = k_value(
            days,
            np.asarray(aging.ocv_v, dtype=np.float64) * 1e3,
            temperature_c=np.asarray(aging.rack_temperature_c, dtype=np.float64),
            ocv_temp_coeff_mv_per_k=ocv_temp_coeff_mv_per_k,
        )
        out[:, col["k_value_mv_per_day"]] = fit.k_mv_per_day
        out[:, col["k_value_se_mv_per_day"]] = fit.se_mv_per_day
        out[:, col["k_value_r2"]] = fit.r2
        out[:, col["ocv_end_mv"]] = aging.ocv_v[:, -1] * 1e3
    if curves is not None:
        seen = 0
        for i, cell_curves in enumerate(curves):
            seen += 1
            if i >= n:
                raise ValueError(f"curves has more cells than the step table ({n})")
            if lay["pulse_mid"] is not None:
                j = lay["pulse_mid"]
                c, prev = cell_curves[j], cell_curves[j - 1]
                vb = float(prev.voltage_v[-1])
                out[i, col["dcir_1s_mohm"]] = dcir_mohm(
                    c.time_s, c.voltage_v, c.current_a, v_before_v=vb, at_s=1.0
                )
                out[i, col["dcir_10s_mohm"]] = dcir_mohm(
                    c.time_s, c.voltage_v, c.current_a, v_before_v=vb, at_s=10.0
                )
            if lay["pulse_low"] is not None:
                j = lay["pulse_low"]
                c, prev = cell_curves[j], cell_curves[j - 1]
                out[i, col["r_low_soc_10s_mohm"]] = dcir_mohm(
                    c.time_s, c.voltage_v, c.current_a,
                    v_before_v=float(prev.voltage_v[-1]), at_s=10.0,
                )  # fmt: skip
            if dis is not None:
                c = cell_curves[dis]
                grid, ica = dqdv(c.voltage_v, c.capacity_ah, v_range=ICA_WINDOW_V)
                pos, height = dqdv_peaks(grid, ica)
                for j in range(ICA_PEAKS):
                    out[i, col[f"ica_peak{j + 1}_v"]] = pos[j]
                    out[i, col[f"ica_peak{j + 1}_ah_per_v"]] = height[j]
        if seen != n:
            raise ValueError(f"curves has {seen} cells, the step table {n}")
    return FeatureTable(FEATURE_NAMES, out)


__all__ = [
    "FEATURE_NAMES",
    "FEATURE_SET_VERSION",
    "ICA_PEAKS",
    "ICA_WINDOW_V",
    "FeatureTable",
    "KFit",
    "batch_features",
    "cell_features",
    "curve_pack",
    "curve_unpack",
    "dcir_mohm",
    "dqdv",
    "dqdv_peaks",
    "k_value",
    "resample_curve",
    "robust_z",
]
