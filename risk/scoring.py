"""Thermal-risk scoring: a supervised model, a lot-relative outlier score, one calibrated risk.

Three parts, all computed from the risk feature matrix of :mod:`risk.features`:

* **supervised**: gradient-boosted trees (scikit-learn ``GradientBoostingClassifier``)
  trained on field-return labels (:func:`field_return_labels`: a cell-level return labels
  its cell; a pack-level return labels each cell of the pack with a weight of one over the
  pack size), exported to ONNX with skl2onnx and served with onnxruntime;
* **outlier**: robust Mahalanobis distances (minimum covariance determinant) within blocks
  of features that share a mechanism (self-discharge, resistance, capacity, coat weight,
  slit burr, fill, weld, overhang, moisture, insulation). Each block's chi-square tail
  probability is kept only for the part of the distance that lies in the harmful
  direction (a low K-value is not a risk); the outlier score is ``-log10`` of the smallest
  block tail times the number of blocks (Bonferroni), so 3 means "1 in 1000 cells is this
  odd in some mechanism". It needs no labels and catches what returns have not taught yet;
* **calibration**: a logistic (Platt) combination of ``logit(supervised p)`` and the
  outlier score (capped), fitted on a later time slice than the supervised model, giving
  the risk in [0, 1] as the probability of a field return within the label horizon.

:class:`RiskModel` serves a model file set: ``thermal-risk-<version>.onnx`` plus
``.manifest.json`` (features in order, scales, outlier blocks, calibration, thresholds per
product, training provenance, metrics, the ONNX file's sha256). :meth:`RiskModel.load`
refuses a file whose sha256 differs from the manifest, a manifest that lacks what serving
needs, or a feature list other than this code's. Serving needs numpy, scipy and
onnxruntime only; training (``fit_*``, :func:`export_onnx`) imports scikit-learn and
skl2onnx when called.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from scipy.stats import chi2

from risk.baseline import BaselineRules, baseline_flags
from risk.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    FEATURES,
    RISK_FEATURE_SET_VERSION,
    SPEC_EDGE,
    RiskFeatures,
    check_finite,
    describe,
    feature_catalogue,
)

MODEL_NAME = "thermal-risk"
DEFAULT_MODEL_VERSION = "1.1.0"
MODEL_FILES_DIR = Path(__file__).resolve().parent / "model_files"
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"

#: Largest over smallest covariance eigenvalue of an outlier block (see :func:`fit_outlier`).
OUTLIER_MAX_CONDITION = 30.0

#: Feature blocks of the outlier score: each holds the features one mechanism moves.
OUTLIER_BLOCKS: Mapping[str, tuple[str, ...]] = {
    "self_discharge": ("k_value_z", "ocv_end_z", "k_value_se_z"),
    "resistance": (
        "dcir_10s_z",
        "dcir_1s_z",
        "r_low_soc_z",
        "v_mean_discharge_z",
        "cv_time_z",
        "temperature_rise_z",
    ),
    "capacity": ("q_charge_z", "q_discharge_z", "ice_z"),
    "coat_weight": (
        "cathode_loading_z",
        "anode_loading_z",
        "cathode_loading_mg_cm2_dev",
        "anode_loading_mg_cm2_dev",
    ),
    "slit_burr": ("cathode_burr_z", "anode_burr_z", "cathode_burr_um_dev", "anode_burr_um_dev"),
    "fill": ("fill_mass_g_dev",),
    "weld": ("weld_resistance_uohm_dev",),
    "overhang": ("overhang_mm_dev",),
    "moisture": ("cathode_moisture_ppm_dev", "anode_moisture_ppm_dev"),
    "insulation": ("insulation_resistance_mohm_dev",),
}

#: Distances are capped here before the tail probability (chi-square log tails underflow
#: past about 1400; such a cell is in quarantine whatever the exact figure).
_D2_CAP = 1400.0
#: Severity given to a station count (vision defect, SPC alarm, missing value) per unit.
_COUNT_SEVERITY = 4.0

DEFAULT_GBC_PARAMS: Mapping[str, Any] = {
    "n_estimators": 200,
    "max_depth": 3,
    "learning_rate": 0.05,
    "subsample": 0.5,
    "min_samples_leaf": 40,
}
#: Share of label-0 rows the supervised fit keeps (each kept one weighs 1 / share).
DEFAULT_NEGATIVE_FRACTION = 0.25
#: Outlier-score caps the calibration chooses from (by cross-validated log-loss).
CALIBRATION_CAPS: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0, 30.0)

_REQUIRED_KEYS = (
    "name",
    "version",
    "file",
    "sha256",
    "feature_set_version",
    "features",
    "input",
    "feature_scale",
    "outlier",
    "calibration",
    "thresholds",
)
_CHUNK = 1 << 20


class RiskModelError(Exception):
    """A model that must not run, or an input it cannot take.

    ``code`` is one of ``file_missing``, ``checksum_mismatch``, ``manifest_invalid`` or
    ``bad_input``; the message says what exactly.
    """

    CODES = ("file_missing", "checksum_mismatch", "manifest_invalid", "bad_input")

    def __init__(self, code: str, message: str):
        if code not in self.CODES:
            raise ValueError(f"unknown RiskModelError code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def array_sha256(*arrays: np.ndarray) -> str:
    """sha256 over arrays' dtypes, shapes and bytes: the training-data hash."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- labels


@dataclass
class TrainingLabels:
    """Training rows built from field returns.

    ``rows`` index the cell population (a cell appears twice when a pack-level return
    makes it partly positive: once with label 1 and weight 1/k, once with label 0 and
    weight 1 - 1/k, k being the pack's cells); ``y`` is 0/1, ``weight`` the sample weight;
    ``mature`` marks the cells old enough for their label to be known and ``returned``
    the cells with a cell-level return inside the horizon (per cell, for evaluation).
    """

    rows: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    mature: np.ndarray
    returned: np.ndarray

    @property
    def positives(self) -> float:
        return float(self.weight[self.y == 1].sum())


def _return_fields(item: Any) -> tuple[int, float]:
    if isinstance(item, tuple):
        key, at = item
    else:
        key, at = item.cell_index, item.reported_at
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("reported_at must be timezone-aware")
        at = at.timestamp()
    return int(key), float(at)


def field_return_labels(
    built_at_s: np.ndarray,
    *,
    as_of: datetime,
    horizon_days: float = 365.0,
    cell_returns: Iterable[Any] = (),
    pack_returns: Iterable[tuple[int, datetime]] = (),
    pack_of: np.ndarray | None = None,
) -> TrainingLabels:
    """Labels "returned from the field within ``horizon_days`` of build" as of ``as_of``.

    Only cells built at least ``horizon_days`` before ``as_of`` get a label (younger cells
    may still come back: labelling them 0 would teach the model that recent cells are
    safe). ``cell_returns``: ``FieldReturn``-like objects (``cell_index``, ``reported_at``)
    or ``(cell_index, reported_at)`` tuples; ``pack_returns``: ``(pack_id, reported_at)``
    for returns traced only to a pack, with ``pack_of`` giving each cell's pack (-1 =
    none). A return reported after the horizon of its cell does not count.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    if horizon_days <= 0:
        raise ValueError("horizon_days must be positive")
    built = np.asarray(built_at_s, dtype=np.float64)
    n = len(built)
    horizon_s = horizon_days * 86400.0
    mature = built + horizon_s <= as_of.timestamp()
    deadline = np.minimum(built + horizon_s, as_of.timestamp())
    positive = np.zeros(n, dtype=bool)
    for item in cell_returns:
        i, at = _return_fields(item)
        if not 0 <= i < n:
            raise ValueError(f"returned cell index {i} outside 0..{n - 1}")
        if at <= deadline[i]:
            positive[i] = True
    soft = np.zeros(n)
    pack_returns = list(pack_returns)
    if pack_returns:
        if pack_of is None:
            raise ValueError("pack_returns need pack_of")
        packs = np.asarray(pack_of)
        if packs.shape != (n,):
            raise ValueError(f"pack_of has shape {packs.shape}, expected ({n},)")
        for item in pack_returns:
            pack, at = _return_fields(item)
            members = np.flatnonzero((packs == pack) & mature & (at <= deadline))
            if len(members):
                soft[members] += 1.0 / len(members)
    soft = np.where(positive, 0.0, np.minimum(soft, 1.0))
    rows, ys, ws = [], [], []
    idx = np.flatnonzero(mature)
    rows.append(idx)
    ys.append(positive[idx].astype(np.int64))
    ws.append(1.0 - soft[idx])
    part = idx[soft[idx] > 0]
    rows.append(part)
    ys.append(np.ones(len(part), dtype=np.int64))
    ws.append(soft[part])
    rows_a, y_a, w_a = np.concatenate(rows), np.concatenate(ys), np.concatenate(ws)
    keep = w_a > 0
    order = np.argsort(rows_a[keep], kind="stable")
    return TrainingLabels(
        rows_a[keep][order], y_a[keep][order], w_a[keep][order], mature, positive & mature
    )


# --------------------------------------------------------------------------- supervised


def fit_supervised(
    features: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    seed: int,
    negative_fraction: float = DEFAULT_NEGATIVE_FRACTION,
    params: Mapping[str, Any] | None = None,
):
    """Fit the supervised model on labelled rows; returns the fitted estimator.

    Keeps every label-1 row and a seeded random ``negative_fraction`` of the label-0 rows,
    each kept one weighted by ``1 / negative_fraction`` (the same expected loss, a quarter
    of the time). Deterministic for a given seed.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    x = check_finite(features)
    y = np.asarray(y, dtype=np.int64)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    if y.shape != (len(x),) or w.shape != (len(x),):
        raise ValueError("y and weight must give one value per row")
    if not set(np.unique(y).tolist()) <= {0, 1} or y.sum() == 0 or (y == 0).sum() == 0:
        raise ValueError("y must hold both labels 0 and 1")
    if not 0.0 < negative_fraction <= 1.0:
        raise ValueError("negative_fraction must be within (0, 1]")
    rng = np.random.default_rng([seed, 0x5EED])
    keep = (y == 1) | (rng.random(len(y)) < negative_fraction)
    w = np.where(y == 1, w, w / negative_fraction)
    settings = {**DEFAULT_GBC_PARAMS, **(params or {})}
    model = GradientBoostingClassifier(random_state=seed, **settings)
    model.fit(x[keep], y[keep], sample_weight=w[keep])
    return model


def export_onnx(estimator, *, n_features: int = len(FEATURES)) -> bytes:
    """The fitted estimator as an ONNX graph: input ``features`` float32 ``[N, F]``, outputs
    ``label`` and ``probabilities`` float32 ``[N, 2]`` (column 1 = field return).

    Plain TreeEnsembleClassifier (ai.onnx.ml opset 3) without ZipMap, which onnxruntime
    runs as is; the trees already split on float32 values in scikit-learn, so the graph
    gives the same probabilities to float32 rounding.
    """
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        estimator,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset={"": 18, "ai.onnx.ml": 3},
        options={"zipmap": False},
    )
    onx.producer_name = "celltrace-risk"
    onx.doc_string = ""
    return onx.SerializeToString()


def onnx_session(onnx_bytes_or_path, *, intra_op_threads: int = 1) -> ort.InferenceSession:
    """One CPU onnxruntime session with all graph optimisations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(intra_op_threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    source = onnx_bytes_or_path
    if isinstance(source, Path):
        source = str(source)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_probabilities(session: ort.InferenceSession, features: np.ndarray) -> np.ndarray:
    """P(field return) per row from an ONNX session, float64 ``(n,)``."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.shape[0] == 0:
        return np.zeros(0)
    (probs,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    return probs[:, 1].astype(np.float64)


def onnx_vs_sklearn(estimator, onnx_bytes: bytes, features: np.ndarray) -> float:
    """Largest absolute difference of P(field return) between scikit-learn and the ONNX
    graph on ``features`` (float32-representable inputs are what both see)."""
    x = check_finite(features).astype(np.float32).astype(np.float64)
    p_sk = estimator.predict_proba(x)[:, 1]
    p_onnx = onnx_probabilities(onnx_session(onnx_bytes), x)
    return float(np.abs(p_sk - p_onnx).max(initial=0.0))


# --------------------------------------------------------------------------- outlier


@dataclass(frozen=True)
class OutlierBlock:
    """One mechanism's features with their robust location and precision (inverse
    covariance) from a minimum covariance determinant fit."""

    name: str
    features: tuple[str, ...]
    location: np.ndarray
    precision: np.ndarray

    @property
    def columns(self) -> np.ndarray:
        return np.array([FEATURE_INDEX[f] for f in self.features], dtype=np.intp)

    @property
    def signs(self) -> np.ndarray:
        return np.array([FEATURES[FEATURE_INDEX[f]].sign for f in self.features])

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "features": list(self.features),
            "location": [float(v) for v in self.location],
            "precision": [[float(v) for v in row] for row in self.precision],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> OutlierBlock:
        features = tuple(str(f) for f in data["features"])
        unknown = [f for f in features if f not in FEATURE_INDEX]
        if unknown:
            raise ValueError(f"unknown features {unknown}")
        loc = np.asarray(data["location"], dtype=np.float64)
        prec = np.asarray(data["precision"], dtype=np.float64)
        k = len(features)
        if loc.shape != (k,) or prec.shape != (k, k) or not np.isfinite(prec).all():
            raise ValueError(f"block {data['name']!r}: location/precision do not match")
        return cls(str(data["name"]), features, loc, prec)


@dataclass(frozen=True)
class OutlierModel:
    """The outlier score: per-block directional chi-square tails, Bonferroni over blocks."""

    blocks: tuple[OutlierBlock, ...]
    #: Largest over smallest covariance eigenvalue allowed per block (None: as fitted).
    max_condition: float | None = None

    def block_log10_tail(self, features: np.ndarray) -> np.ndarray:
        """``(n, blocks)``: log10 of each block's tail probability, counting only the share
        of the squared distance that lies in harmful directions (<= 0; 0 = typical)."""
        x = np.asarray(features, dtype=np.float64)
        out = np.empty((len(x), len(self.blocks)))
        for b, block in enumerate(self.blocks):
            d = x[:, block.columns] - block.location
            pd = d @ block.precision
            contrib = np.maximum(d * pd, 0.0)
            d2 = np.minimum((d * pd).sum(axis=1), _D2_CAP)
            signs = block.signs
            harmful = (signs == 0) | (np.sign(d) == signs)
            total = contrib.sum(axis=1)
            share = np.divide(
                (contrib * harmful).sum(axis=1), total, out=np.zeros(len(x)), where=total > 0
            )
            log10_sf = chi2.logsf(np.maximum(d2, 0.0), len(block.features)) / math.log(10.0)
            out[:, b] = share * log10_sf
        return out

    def score(self, features: np.ndarray) -> np.ndarray:
        """``-log10(min(1, blocks x smallest block tail))``: 0 for a typical cell, 3 for a
        cell as odd as 1 in 1000 in some mechanism."""
        tails = self.block_log10_tail(features)
        if not tails.shape[1]:
            return np.zeros(len(tails))
        combined = tails.min(axis=1) + math.log10(len(self.blocks))
        return np.maximum(-combined, 0.0)

    def as_dict(self) -> dict:
        return {
            "method": "minimum covariance determinant per block, directional chi-square tail",
            "combination": "-log10(min(1, n_blocks * min_block_tail))",
            "max_condition": self.max_condition,
            "blocks": [b.as_dict() for b in self.blocks],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> OutlierModel:
        cond = data.get("max_condition")
        return cls(
            tuple(OutlierBlock.from_dict(b) for b in data["blocks"]),
            None if cond is None else float(cond),
        )


def fit_outlier(
    features: np.ndarray,
    *,
    seed: int,
    max_cells: int = 30_000,
    blocks: Mapping[str, Sequence[str]] = OUTLIER_BLOCKS,
    max_condition: float = OUTLIER_MAX_CONDITION,
) -> OutlierModel:
    """Fit the outlier blocks on a seeded sample of at most ``max_cells`` cells (no labels:
    the MCD's robust fit ignores the few defective cells among them).

    Each block's covariance has its eigenvalues floored at the largest over
    ``max_condition``. Features of one mechanism are nearly collinear in a large training
    population (first-charge capacity, discharge capacity and coulombic efficiency are
    almost one identity), and the exact combination depends on each lot's median and MAD:
    in a lot of a hundred cells those carry a scale error of about 10 %, so an unfloored
    fit would call a tenth of a small lot's cells 1-in-a-million odd along a direction
    that is only the lot's estimation noise."""
    from sklearn.covariance import MinCovDet

    x = check_finite(features)
    rng = np.random.default_rng([seed, 0x0C7])
    sample = x if len(x) <= max_cells else x[np.sort(rng.choice(len(x), max_cells, False))]
    fitted = []
    for name, feats in blocks.items():
        cols = [FEATURE_INDEX[f] for f in feats]
        mcd = MinCovDet(random_state=seed).fit(sample[:, cols])
        w, v = np.linalg.eigh(mcd.covariance_)
        w = np.maximum(w, max(float(w.max()) / max_condition, 1e-6))
        precision = (v / w) @ v.T
        precision = (precision + precision.T) / 2.0
        fitted.append(OutlierBlock(name, tuple(feats), mcd.location_.copy(), precision))
    return OutlierModel(tuple(fitted), max_condition=max_condition)


# --------------------------------------------------------------------------- calibration


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    return np.log(q / (1.0 - q))


@dataclass(frozen=True)
class Calibration:
    """``risk = sigmoid(a * logit(p) + b * min(outlier, cap) + c * screens + d)``.

    ``p`` is the supervised probability, ``outlier`` the outlier score and ``screens`` the
    number of the plant's own screens the cell fails (:mod:`risk.baseline`, with the rules
    in ``screen_rules``): evidence the plant already trusts, weighed on data like the rest.
    a, b, c >= 0, so the risk never falls as evidence rises.
    """

    coef_logit: float
    coef_outlier: float
    coef_screens: float
    intercept: float
    outlier_cap: float
    screen_rules: BaselineRules = field(default_factory=BaselineRules)

    def screens(self, features: np.ndarray) -> np.ndarray:
        """How many of the plant's screens each cell fails."""
        flags, _ = baseline_flags(features, rules=self.screen_rules)
        return flags.sum(axis=1).astype(np.float64)

    def risk(
        self, supervised_p: np.ndarray, outlier_score: np.ndarray, screens: np.ndarray
    ) -> np.ndarray:
        z = (
            self.coef_logit * _logit(supervised_p)
            + self.coef_outlier * np.minimum(outlier_score, self.outlier_cap)
            + self.coef_screens * np.asarray(screens, dtype=np.float64)
            + self.intercept
        )
        return 1.0 / (1.0 + np.exp(-z))

    def as_dict(self) -> dict:
        return {
            "method": "platt: sigmoid(coef_logit * logit(p) + coef_outlier * "
            "min(outlier_score, outlier_cap) + coef_screens * failed_screens + intercept)",
            "coef_logit": self.coef_logit,
            "coef_outlier": self.coef_outlier,
            "coef_screens": self.coef_screens,
            "intercept": self.intercept,
            "outlier_cap": self.outlier_cap,
            "screen_rules": self.screen_rules.as_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Calibration:
        c = cls(
            float(data["coef_logit"]),
            float(data["coef_outlier"]),
            float(data["coef_screens"]),
            float(data["intercept"]),
            float(data["outlier_cap"]),
            BaselineRules.from_dict(data["screen_rules"]),
        )
        values = (c.coef_logit, c.coef_outlier, c.coef_screens, c.intercept, c.outlier_cap)
        if not all(math.isfinite(v) for v in values) or min(values[:3]) < 0 or c.outlier_cap <= 0:
            raise ValueError("calibration needs finite, non-negative coefficients and cap > 0")
        return c


def _fit_platt(inputs: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    coef = np.zeros(inputs.shape[1])
    active = list(range(inputs.shape[1]))
    intercept = 0.0
    while active:
        lr = LogisticRegression(C=10.0, max_iter=1000)
        lr.fit(inputs[:, active], y, sample_weight=w)
        c = lr.coef_[0]
        if (c >= 0).all():
            coef[:] = 0.0
            coef[active] = c
            intercept = float(lr.intercept_[0])
            break
        # a risk that falls as the evidence rises is noise in the labels: drop that input
        active.pop(int(np.argmin(c)))
    else:
        rate = float(np.average(y, weights=w))
        intercept = float(np.log(rate / (1.0 - rate)))
    return coef, intercept


def _weighted_log_loss(y, p, w) -> float:
    p = np.clip(p, 1e-12, 1.0 - 1e-12)
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())


def fit_calibration(
    supervised_p: np.ndarray,
    outlier_score: np.ndarray,
    screens: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None = None,
    *,
    seed: int,
    caps: Sequence[float] = CALIBRATION_CAPS,
    folds: int = 5,
    screen_rules: BaselineRules | None = None,
) -> Calibration:
    """Fit the Platt combination on a calibration slice (labelled rows: supervised p,
    outlier score and failed screens of each row's cell); the outlier cap is the one of
    ``caps`` with the lowest ``folds``-fold cross-validated log-loss (seeded folds)."""
    p = np.asarray(supervised_p, dtype=np.float64)
    o = np.asarray(outlier_score, dtype=np.float64)
    f = np.asarray(screens, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64)
    if not (p.shape == o.shape == f.shape == y.shape == w.shape) or p.ndim != 1:
        raise ValueError(
            "supervised_p, outlier_score, screens, y and weight must be 1-D of one length"
        )
    if y.sum() == 0 or (y == 0).sum() == 0:
        raise ValueError("the calibration slice needs both labels")
    rng = np.random.default_rng([seed, 0xCA1])
    fold = rng.integers(0, folds, len(y))
    best = (math.inf, caps[0])
    for cap in caps:
        inputs = np.column_stack([_logit(p), np.minimum(o, cap), f])
        loss = 0.0
        for k in range(folds):
            tr, te = fold != k, fold == k
            if y[tr].sum() == 0 or y[te].sum() == 0:
                continue
            coef, b = _fit_platt(inputs[tr], y[tr], w[tr])
            pred = 1.0 / (1.0 + np.exp(-(inputs[te] @ coef + b)))
            loss += _weighted_log_loss(y[te], pred, w[te]) * w[te].sum()
        if loss < best[0]:
            best = (loss, cap)
    cap = best[1]
    coef, b = _fit_platt(np.column_stack([_logit(p), np.minimum(o, cap), f]), y, w)
    return Calibration(
        float(coef[0]),
        float(coef[1]),
        float(coef[2]),
        b,
        float(cap),
        screen_rules or BaselineRules(),
    )


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class QuarantineRule:
    """When a product's cell is quarantined: ``mode`` ``probability`` (risk >=
    ``risk_threshold``) or ``top_fraction`` (the riskiest ``top_fraction`` of production;
    for cells scored one at a time, ``risk_threshold`` is that fraction's cut on the
    calibration and hold-out slices)."""

    mode: str
    risk_threshold: float
    top_fraction: float | None = None

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "risk_threshold": self.risk_threshold,
            "top_fraction": self.top_fraction,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> QuarantineRule:
        mode = data["mode"]
        thr = float(data["risk_threshold"])
        top = data.get("top_fraction")
        if mode not in ("probability", "top_fraction") or not 0.0 <= thr <= 1.0:
            raise ValueError(f"bad quarantine rule {dict(data)}")
        if mode == "top_fraction" and not (top is not None and 0.0 < float(top) <= 1.0):
            raise ValueError("top_fraction rule needs 0 < top_fraction <= 1")
        return cls(mode, thr, None if top is None else float(top))


def top_fraction_rule(risk: np.ndarray, top_fraction: float) -> QuarantineRule:
    """A ``top_fraction`` rule whose threshold is the cut of ``risk`` at that fraction."""
    r = np.sort(np.asarray(risk, dtype=np.float64))[::-1]
    m = max(1, math.floor(top_fraction * len(r) + 1e-9))
    return QuarantineRule("top_fraction", float(r[min(m, len(r)) - 1]), float(top_fraction))


# --------------------------------------------------------------------------- reasons


def feature_scale(features: np.ndarray) -> dict[str, tuple[float, float]]:
    """Robust centre and scale (median, 1.4826 MAD; the standard deviation where MAD is 0,
    then 1) of every feature: what reason codes rank severities by."""
    x = check_finite(features)
    out = {}
    for j, name in enumerate(FEATURE_NAMES):
        col = x[:, j]
        med = float(np.median(col))
        scale = 1.4826 * float(np.median(np.abs(col - med)))
        if not scale > 0:
            scale = float(col.std())
        if not scale > 0:
            scale = 1.0
        out[name] = (med, scale)
    return out


def severities(features: np.ndarray, scale: Mapping[str, Sequence[float]]) -> np.ndarray:
    """``(n, F)``: how far each value lies from typical in its harmful direction, in robust
    sigmas (<= 0 when it is typical or on the harmless side). Counts (vision defects, SPC
    alarms, missing values) score 4 per unit; indicators never lead a reason."""
    x = np.asarray(features, dtype=np.float64)
    out = np.zeros_like(x)
    for j, f in enumerate(FEATURES):
        if f.kind == "indicator":
            continue
        if f.kind == "count":
            out[:, j] = _COUNT_SEVERITY * x[:, j]
            continue
        med, s = scale[f.name]
        z = (x[:, j] - med) / s
        out[:, j] = np.abs(z) if f.sign == 0 else f.sign * z
    return out


def _merge_gauge_pairs(x: np.ndarray, sev: np.ndarray) -> np.ndarray:
    """One reason per gauge: a gauge with both a spec deviation and a lot-relative z gets
    the more severe of the two, worded against its spec limit when it sits at or beyond
    the spec edge in its harmful direction, against its lot otherwise."""
    sev = sev.copy()
    for f in FEATURES:
        if f.kind != "relative" or f"{f.source}_dev" not in FEATURE_INDEX:
            continue
        j_z, j_dev = FEATURE_INDEX[f.name], FEATURE_INDEX[f"{f.source}_dev"]
        dev_feature = FEATURES[j_dev]
        dev = x[:, j_dev]
        oriented = np.abs(dev) if dev_feature.sign == 0 else dev_feature.sign * dev
        at_edge = oriented >= SPEC_EDGE
        both = np.maximum(sev[:, j_z], sev[:, j_dev])
        sev[:, j_dev] = np.where(at_edge, both, -np.inf)
        sev[:, j_z] = np.where(at_edge, -np.inf, both)
    return sev


def reason_texts(
    features: np.ndarray,
    scale: Mapping[str, Sequence[float]],
    *,
    top: int = 3,
    min_severity: float = 2.0,
) -> list[list[str]]:
    """Up to ``top`` sentences per cell for the features furthest from typical in their
    harmful direction (at least ``min_severity`` robust sigmas), most severe first, one per
    gauge; a cell with none gets one sentence saying so."""
    x = np.asarray(features, dtype=np.float64)
    sev = _merge_gauge_pairs(x, severities(x, scale))
    order = np.argsort(-sev, axis=1, kind="stable")[:, :top]
    out = []
    for i in range(len(x)):
        texts = [describe(FEATURES[j], x[i, j]) for j in order[i] if sev[i, j] >= min_severity]
        if not texts:
            texts = [f"no measurement beyond {min_severity:g} robust sigmas from typical"]
        out.append(texts)
    return out


# --------------------------------------------------------------------------- serving


def _check_manifest(manifest) -> None:
    if not isinstance(manifest, dict):
        raise RiskModelError("manifest_invalid", "manifest is not a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise RiskModelError("manifest_invalid", f"manifest lacks {', '.join(missing)}")
    if manifest["feature_set_version"] != RISK_FEATURE_SET_VERSION:
        raise RiskModelError(
            "manifest_invalid",
            f"feature set {manifest['feature_set_version']!r} is not this code's "
            f"{RISK_FEATURE_SET_VERSION!r}",
        )
    try:
        names = [f["name"] for f in manifest["features"]]
    except (TypeError, KeyError) as exc:
        raise RiskModelError("manifest_invalid", f"features unreadable: {exc!r}") from exc
    if names != list(FEATURE_NAMES):
        raise RiskModelError(
            "manifest_invalid", "features differ from this code's feature list (names/order)"
        )
    sha = manifest["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64):
        raise RiskModelError("manifest_invalid", "sha256 must be 64 hex digits")
    scale = manifest["feature_scale"]
    if not isinstance(scale, dict) or set(scale) != set(FEATURE_NAMES):
        raise RiskModelError("manifest_invalid", "feature_scale must cover every feature")
    for name, pair in scale.items():
        if len(pair) != 2 or not all(math.isfinite(float(v)) for v in pair) or pair[1] <= 0:
            raise RiskModelError("manifest_invalid", f"feature_scale of {name} is not usable")


class RiskModel:
    """One loaded, checked thermal-risk model. Build with :meth:`load`.

    ``score`` gives (risk, supervised p, outlier score) per cell; ``reasons`` the top
    reason codes; ``quarantine`` applies a product's rule. Inputs are the risk feature
    matrix (:class:`RiskFeatures` or an ``(n, F)`` array in :data:`FEATURE_NAMES` order).
    """

    def __init__(
        self,
        *,
        manifest: dict,
        manifest_path: Path,
        onnx_path: Path,
        session: ort.InferenceSession,
        outlier: OutlierModel,
        calibration: Calibration,
        thresholds: dict[str, QuarantineRule],
        scale: dict[str, tuple[float, float]],
    ):
        self.manifest = manifest
        self.manifest_path = manifest_path
        self.onnx_path = onnx_path
        self.name: str = manifest["name"]
        self.version: str = manifest["version"]
        self.sha256: str = manifest["sha256"]
        self.outlier = outlier
        self.calibration = calibration
        self.thresholds = thresholds
        self.scale = scale
        self._session = session

    def __repr__(self) -> str:
        return f"<RiskModel {self.name} {self.version} {self.sha256[:12]}>"

    @classmethod
    def load(
        cls,
        manifest_path,
        *,
        onnx_path=None,
        expected_sha256: str | None = None,
        intra_op_threads: int = 1,
    ) -> RiskModel:
        """Read the manifest, check the ONNX file's sha256, open one session.

        ``onnx_path`` defaults to the manifest's ``file`` beside the manifest. The file's
        sha256 must equal the manifest's, and ``expected_sha256`` too when given (the value
        a registry approved). Raises :class:`RiskModelError` (``file_missing``,
        ``checksum_mismatch``, ``manifest_invalid``); nothing is loaded on a refusal.
        """
        manifest_path = Path(manifest_path)
        if not manifest_path.is_file():
            raise RiskModelError("file_missing", f"manifest {manifest_path} not found")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RiskModelError("manifest_invalid", f"manifest is not JSON: {exc}") from exc
        _check_manifest(manifest)
        try:
            outlier = OutlierModel.from_dict(manifest["outlier"])
            calibration = Calibration.from_dict(manifest["calibration"])
            thresholds = {
                str(k): QuarantineRule.from_dict(v) for k, v in manifest["thresholds"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RiskModelError("manifest_invalid", f"model parameters unreadable: {exc}") from exc
        scale = {k: (float(v[0]), float(v[1])) for k, v in manifest["feature_scale"].items()}
        onnx_path = Path(onnx_path) if onnx_path else manifest_path.parent / manifest["file"]
        if not onnx_path.is_file():
            raise RiskModelError("file_missing", f"model file {onnx_path} not found")
        actual = file_sha256(onnx_path)
        if actual != manifest["sha256"]:
            raise RiskModelError(
                "checksum_mismatch",
                f"{onnx_path.name} has sha256 {actual}, the manifest says {manifest['sha256']}",
            )
        if expected_sha256 is not None and actual != expected_sha256:
            raise RiskModelError(
                "checksum_mismatch",
                f"{onnx_path.name} has sha256 {actual}, expected {expected_sha256}",
            )
        try:
            session = onnx_session(onnx_path, intra_op_threads=intra_op_threads)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise RiskModelError("manifest_invalid", f"onnxruntime cannot load it: {exc}") from exc
        inputs = session.get_inputs()
        outputs = {o.name for o in session.get_outputs()}
        if (
            len(inputs) != 1
            or inputs[0].name != INPUT_NAME
            or inputs[0].type != "tensor(float)"
            or list(inputs[0].shape[1:]) != [len(FEATURES)]
            or OUTPUT_NAME not in outputs
        ):
            raise RiskModelError(
                "manifest_invalid",
                f"graph must take {INPUT_NAME} float [N, {len(FEATURES)}] and give {OUTPUT_NAME}",
            )
        return cls(
            manifest=manifest,
            manifest_path=manifest_path,
            onnx_path=onnx_path,
            session=session,
            outlier=outlier,
            calibration=calibration,
            thresholds=thresholds,
            scale=scale,
        )

    def _matrix(self, features) -> np.ndarray:
        if isinstance(features, RiskFeatures):
            if features.names != FEATURE_NAMES:
                raise RiskModelError("bad_input", "feature names differ from the model's")
            features = features.values
        try:
            return check_finite(features)
        except ValueError as exc:
            raise RiskModelError("bad_input", str(exc)) from exc

    def supervised(self, features) -> np.ndarray:
        """P(field return) of the supervised model (onnxruntime), float64 ``(n,)``."""
        return onnx_probabilities(self._session, self._matrix(features))

    def score(self, features) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(risk, supervised_p, outlier_score)`` per cell, float64 ``(n,)`` each."""
        x = self._matrix(features)
        p = onnx_probabilities(self._session, x)
        o = self.outlier.score(x)
        return self.calibration.risk(p, o, self.calibration.screens(x)), p, o

    def reasons(self, features, top: int = 3, *, min_severity: float = 2.0) -> list[list[str]]:
        """Up to ``top`` reason codes per cell in a quality engineer's words, most severe
        first (see :func:`reason_texts`)."""
        return reason_texts(self._matrix(features), self.scale, top=top, min_severity=min_severity)

    def rule(self, product: str) -> QuarantineRule:
        """The quarantine rule of ``product`` (the ``default`` rule when it has none)."""
        rule = self.thresholds.get(product) or self.thresholds.get("default")
        if rule is None:
            raise RiskModelError("bad_input", f"no quarantine rule for product {product!r}")
        return rule

    def quarantine(self, risk: np.ndarray, *, product: str, batch: bool = False) -> np.ndarray:
        """Which cells to quarantine. Cells are compared with the product's risk threshold;
        with ``batch`` and a ``top_fraction`` rule, the riskiest fraction of this batch is
        taken instead (a whole lot scored at once)."""
        r = np.asarray(risk, dtype=np.float64)
        rule = self.rule(product)
        if batch and rule.mode == "top_fraction" and len(r):
            m = max(1, math.floor(rule.top_fraction * len(r) + 1e-9))  # type: ignore[operator]
            out = np.zeros(len(r), dtype=bool)
            out[np.argsort(-r, kind="stable")[:m]] = True
            return out
        return r >= rule.risk_threshold


def library_versions() -> dict[str, str]:
    """Versions of what trains and serves a model, for the manifest."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "scipy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def write_model_files(
    directory,
    *,
    version: str,
    estimator,
    outlier: OutlierModel,
    calibration: Calibration,
    thresholds: Mapping[str, QuarantineRule],
    scale: Mapping[str, tuple[float, float]],
    training: Mapping[str, Any],
    metrics: Mapping[str, Any],
    checks: Mapping[str, Any] | None = None,
    onnx_bytes: bytes | None = None,
) -> tuple[Path, Path]:
    """Export the supervised model to ONNX and write ``thermal-risk-<version>.onnx`` and
    ``.manifest.json`` into ``directory``; returns (manifest path, ONNX path).

    The manifest carries everything serving needs besides the graph (features in order,
    feature scales, outlier blocks, calibration, quarantine rules) plus provenance
    (``training``: data hash, plants, labels; ``metrics``; ``checks`` such as the ONNX
    against scikit-learn difference; library versions) and the graph's sha256.
    ``onnx_bytes``: the graph already exported from ``estimator`` (the one calibrated and
    checked), exported here when not given.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{MODEL_NAME}-{version}"
    if onnx_bytes is None:
        onnx_bytes = export_onnx(estimator)
    onnx_path = directory / f"{stem}.onnx"
    manifest_path = directory / f"{stem}.manifest.json"
    onnx_path.write_bytes(onnx_bytes)
    importances = getattr(estimator, "feature_importances_", np.zeros(len(FEATURES)))
    manifest = {
        "name": MODEL_NAME,
        "version": version,
        "file": onnx_path.name,
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "size_bytes": len(onnx_bytes),
        "feature_set_version": RISK_FEATURE_SET_VERSION,
        "features": [
            {**f, "importance": round(float(importances[j]), 6)}
            for j, f in enumerate(feature_catalogue())
        ],
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["N", len(FEATURES)]},
        "outputs": {
            OUTPUT_NAME: {"dtype": "float32", "shape": ["N", 2], "column_1": "P(field return)"}
        },
        "supervised": {
            "estimator": type(estimator).__name__,
            "params": {
                k: v
                for k, v in estimator.get_params().items()
                if isinstance(v, (int, float, str, bool)) or v is None
            },
        },
        "feature_scale": {k: [float(v[0]), float(v[1])] for k, v in scale.items()},
        "outlier": outlier.as_dict(),
        "calibration": calibration.as_dict(),
        "thresholds": {k: v.as_dict() for k, v in thresholds.items()},
        "training": dict(training),
        "metrics": dict(metrics),
        "checks": dict(checks or {}),
        "versions": library_versions(),
    }
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    return manifest_path, onnx_path


def default_model_paths(version: str = DEFAULT_MODEL_VERSION) -> tuple[Path, Path]:
    """Manifest and ONNX file of a committed model version."""
    stem = f"{MODEL_NAME}-{version}"
    return MODEL_FILES_DIR / f"{stem}.manifest.json", MODEL_FILES_DIR / f"{stem}.onnx"


__all__ = [
    "CALIBRATION_CAPS",
    "DEFAULT_GBC_PARAMS",
    "DEFAULT_MODEL_VERSION",
    "DEFAULT_NEGATIVE_FRACTION",
    "INPUT_NAME",
    "MODEL_FILES_DIR",
    "MODEL_NAME",
    "OUTLIER_BLOCKS",
    "OUTPUT_NAME",
    "Calibration",
    "OutlierBlock",
    "OutlierModel",
    "QuarantineRule",
    "RiskModel",
    "RiskModelError",
    "TrainingLabels",
    "array_sha256",
    "default_model_paths",
    "export_onnx",
    "feature_scale",
    "field_return_labels",
    "file_sha256",
    "fit_calibration",
    "fit_outlier",
    "fit_supervised",
    "library_versions",
    "onnx_probabilities",
    "onnx_session",
    "onnx_vs_sklearn",
    "reason_texts",
    "severities",
    "top_fraction_rule",
    "write_model_files",
]
