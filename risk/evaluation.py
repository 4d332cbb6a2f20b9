"""How well a risk score ranks cells: the figures a quarantine gate is judged by.

Everything takes a score per cell (higher = riskier) and a truth per cell (1 = the cell is
bad: a field return on plant data, a latent defect on simulated data) and returns plain
numbers, so the same code compares a challenger with the active model and with the plant's
baseline screen (:func:`compare`), per latent defect class (:func:`per_class`), on a
time-ordered hold-out (:func:`time_split`), and watches the inputs for drift (:func:`psi`).

Quarantine at k % means the ``floor(k * n)`` highest-scoring cells (at least one). Cells
tied with the last quarantined one share the remaining places: each tied cell counts with
the fraction of the tie that fits, which is the expected result of breaking the tie at
random, so a score with many ties (a count of limit exceedances) is neither flattered nor
punished by the order the cells arrive in. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

QUARANTINE_RATES: tuple[float, ...] = (0.01, 0.02, 0.05)
PSI_BINS = 10
#: PSI below 0.1 is read as stable, 0.1-0.25 as a moderate shift, above 0.25 as a major one.
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25


def _arrays(score, truth) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64)
    t = np.asarray(truth)
    if s.ndim != 1 or t.shape != s.shape:
        raise ValueError(f"score {s.shape} and truth {t.shape} must be 1-D of one length")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s, t.astype(bool)


def auroc(score, truth) -> float:
    """Area under the ROC curve: the chance that a random bad cell scores above a random
    good one, ties counting half (Mann-Whitney U). NaN without both kinds of cells."""
    s, t = _arrays(score, truth)
    n_pos = int(t.sum())
    n_neg = len(t) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s))
    # average ranks over ties
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_s) != 0])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(score, truth) -> float:
    """Average precision (area under the precision-recall curve as a step function):
    the mean, over bad cells, of the precision at the score of that cell, tied cells
    entering together. NaN without a bad cell."""
    s, t = _arrays(score, truth)
    n_pos = int(t.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    last_of_tie = np.r_[np.diff(s_sorted) != 0, True]
    tp = np.cumsum(t_sorted)[last_of_tie]
    n = (np.flatnonzero(last_of_tie) + 1).astype(np.float64)
    precision = tp / n
    recall_step = np.diff(np.r_[0, tp]) / n_pos
    return float((precision * recall_step).sum())


def quarantine_count(n_cells: int, rate: float) -> int:
    """How many cells a quarantine of ``rate`` (0..1) of production holds: floor, >= 1."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be within (0, 1], got {rate}")
    return max(1, math.floor(rate * n_cells + 1e-9))


def quarantine_weights(score, rate: float) -> np.ndarray:
    """Per cell, how much of it is quarantined at ``rate``: 1 above the cut, 0 below, and
    for cells tied at the cut the share of the remaining places (see the module doc)."""
    s = np.asarray(score, dtype=np.float64)
    m = quarantine_count(len(s), rate)
    if m >= len(s):
        return np.ones(len(s))
    cut = np.partition(-s, m - 1)[m - 1] * -1.0
    above = s > cut
    tied = s == cut
    w = above.astype(np.float64)
    w[tied] = (m - above.sum()) / tied.sum()
    return w


@dataclass(frozen=True)
class Capture:
    """The result of quarantining ``rate`` of production by a score.

    ``quarantined`` cells held (``floor(rate * n)``), ``captured`` bad cells among them
    (expected value where the cut falls in a tie), ``capture`` = captured / bad cells,
    ``false_quarantines`` good cells held and ``false_quarantine_rate`` their share of all
    good cells.
    """

    rate: float
    quarantined: int
    captured: float
    capture: float
    false_quarantines: float
    false_quarantine_rate: float


def capture_at(score, truth, rate: float) -> Capture:
    """Quarantine the top ``rate`` of cells by ``score`` and count what is caught."""
    s, t = _arrays(score, truth)
    w = quarantine_weights(s, rate)
    n_pos = int(t.sum())
    n_neg = len(t) - n_pos
    captured = float(w[t].sum())
    false_q = float(w[~t].sum())
    return Capture(
        rate=rate,
        quarantined=quarantine_count(len(s), rate),
        captured=captured,
        capture=captured / n_pos if n_pos else math.nan,
        false_quarantines=false_q,
        false_quarantine_rate=false_q / n_neg if n_neg else math.nan,
    )


def summary(score, truth, *, rates: Sequence[float] = QUARANTINE_RATES) -> dict[str, float]:
    """AUROC, average precision, and capture and false quarantines at each rate, as a flat
    dict (``capture_at_2pct``, ``false_quarantines_at_2pct``, ...), plus the cell counts."""
    s, t = _arrays(score, truth)
    out: dict[str, float] = {
        "cells": len(s),
        "bad_cells": int(t.sum()),
        "auroc": auroc(s, t),
        "average_precision": average_precision(s, t),
    }
    for rate in rates:
        c = capture_at(s, t, rate)
        key = _rate_key(rate)
        out[f"capture_at_{key}"] = c.capture
        out[f"false_quarantines_at_{key}"] = c.false_quarantines
        out[f"false_quarantine_rate_at_{key}"] = c.false_quarantine_rate
    return out


def _rate_key(rate: float) -> str:
    pct = rate * 100.0
    return f"{pct:g}pct".replace(".", "_")


def per_class(
    score, latent_class, *, rates: Sequence[float] = QUARANTINE_RATES, good: str = "none"
) -> dict[str, dict[str, float]]:
    """Per latent defect class: how many cells, the share of them caught at each
    quarantine rate (the cut made on the whole population), and the AUROC of that class
    against the good cells. ``good`` names the class of cells without a defect; for it,
    the figures are the false quarantine rates."""
    s = np.asarray(score, dtype=np.float64)
    cls = np.asarray(latent_class).astype(str)
    if cls.shape != s.shape:
        raise ValueError("latent_class must give one class per score")
    weights = {rate: quarantine_weights(s, rate) for rate in rates}
    is_good = cls == good
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(cls.tolist())):
        sel = cls == name
        row: dict[str, float] = {"cells": int(sel.sum())}
        for rate, w in weights.items():
            row[f"capture_at_{_rate_key(rate)}"] = float(w[sel].sum() / sel.sum())
        if name != good:
            both = sel | is_good
            row["auroc"] = auroc(s[both], sel[both])
        out[name] = row
    return out


def time_split(built_at_s, *, fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> list[np.ndarray]:
    """Boolean masks that cut cells into consecutive time slices by build time: by default
    the oldest 70 % (training), the next 15 % (calibration) and the newest 15 % (hold-out).
    Cells built at the same second stay in one slice."""
    t = np.asarray(built_at_s, dtype=np.float64)
    f = np.asarray(fractions, dtype=np.float64)
    if (f <= 0).any() or abs(f.sum() - 1.0) > 1e-9:
        raise ValueError("fractions must be positive and add up to 1")
    n = len(t)
    order = np.argsort(t, kind="stable")
    cuts = np.round(np.cumsum(f)[:-1] * n).astype(np.int64)
    slot = np.empty(n, dtype=np.int64)
    slot[order] = np.searchsorted(cuts, np.arange(n), side="right")
    # a tie straddling a cut goes to the earlier slice
    _, tie = np.unique(t, return_inverse=True)
    first = np.full(tie.max() + 1 if n else 0, len(f), dtype=np.int64)
    np.minimum.at(first, tie, slot)
    slot = first[tie]
    return [slot == k for k in range(len(f))]


def psi(reference, current, *, bins: int = PSI_BINS, eps: float = 1e-4) -> float:
    """Population stability index of one feature: sum over bins of
    ``(a - e) * ln(a / e)``, with ``e`` the reference share and ``a`` the current share.

    Bin edges are the reference's deciles (fewer where values repeat, so a count or a flag
    gets one bin per value); empty bins count as ``eps``. About 0 for the same
    distribution; above 0.25 a major shift.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    cur = cur[np.isfinite(cur)]
    if not len(ref) or not len(cur):
        raise ValueError("psi needs finite values in both populations")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=len(inner) + 1)
    a = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(inner) + 1)
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(((a - e) * np.log(a / e)).sum())


def psi_table(
    reference: np.ndarray, current: np.ndarray, names: Sequence[str], *, bins: int = PSI_BINS
) -> dict[str, float]:
    """PSI of every column of two feature matrices, by feature name."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim != 2 or cur.ndim != 2 or {ref.shape[1], cur.shape[1]} != {len(names)}:
        raise ValueError("reference and current must be (n, len(names)) matrices")
    return {name: psi(ref[:, j], cur[:, j], bins=bins) for j, name in enumerate(names)}


def compare(
    scores: Mapping[str, np.ndarray],
    truth,
    *,
    latent_class=None,
    rates: Sequence[float] = QUARANTINE_RATES,
) -> dict[str, dict]:
    """The same figures for several scores of the same cells (challenger, active model,
    baseline, ...), by score name; with ``latent_class``, each entry also holds
    :func:`per_class` under ``per_class``."""
    out: dict[str, dict] = {}
    for name, s in scores.items():
        row: dict = summary(s, truth, rates=rates)
        if latent_class is not None:
            row["per_class"] = per_class(s, latent_class, rates=rates)
        out[name] = row
    return out


def comparison_table(result: Mapping[str, Mapping], *, rates=QUARANTINE_RATES) -> str:
    """A Markdown table of :func:`compare`'s result: one row per score."""
    keys = [f"capture_at_{_rate_key(r)}" for r in rates]
    head = ["score", "AUROC", "AP", *[f"capture {r * 100:g} %" for r in rates]]
    fq = f"false quarantines {rates[len(rates) // 2] * 100:g} %"
    head.append(fq)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mid = f"false_quarantines_at_{_rate_key(rates[len(rates) // 2])}"
    for name, row in result.items():
        cells = [name, f"{row['auroc']:.3f}", f"{row['average_precision']:.3f}"]
        cells += [f"{row[k]:.3f}" for k in keys]
        cells.append(f"{row[mid]:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "PSI_BINS",
    "PSI_MAJOR",
    "PSI_MODERATE",
    "QUARANTINE_RATES",
    "Capture",
    "auroc",
    "average_precision",
    "capture_at",
    "compare",
    "comparison_table",
    "per_class",
    "psi",
    "psi_table",
    "quarantine_count",
    "quarantine_weights",
    "summary",
    "time_split",
]
