"""Train the initial thermal-risk model on simulated plant history and write its files.

    .venv/bin/python scripts/train_risk_model.py --out risk/model_files --version 1.1.0

History: ``--periods`` production periods ``PERIOD_DAYS`` apart from ``HISTORY_START``; in
each, both demo lines (prismatic 105 Ah, cylindrical 21700) build ``--cells`` cells
(``formation.cellsim.simulate_plant``, default 1 % latent defects). Labels are the field
returns the plant knows on ``AS_OF`` (``field_returns``), counted when reported within
``--horizon-days`` of the cell's build; ``--pack-share`` of the returns are traced only to
their pack (consecutive cells) and label each cell of the pack with weight one over the
pack size. The simulator's latent classes of these plants are never read.

The cells are cut by build time into training (75 %: supervised model, outlier blocks,
feature scales), calibration (12.5 %: Platt combination, quarantine thresholds) and
hold-out (12.5 %: field-return metrics). Separate evaluation plants, built with seeds the
history never uses, give the metrics against the simulator's ground truth. Nothing is
written unless onnxruntime reproduces scikit-learn's probabilities within
``ONNX_TOLERANCE``. Deterministic for a given ``--seed`` and sizes (about 3 minutes of
CPU at the defaults); needs scikit-learn and skl2onnx (``requirements/train.txt``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from formation.cellsim import SIMULATOR_VERSION, field_returns, simulate_plant  # noqa: E402
from formation.features import FEATURE_SET_VERSION as FORMATION_FEATURE_SET  # noqa: E402
from risk import evaluation  # noqa: E402
from risk.baseline import baseline_flags, baseline_score  # noqa: E402
from risk.features import plant_features  # noqa: E402
from risk.scoring import (  # noqa: E402
    DEFAULT_GBC_PARAMS,
    DEFAULT_MODEL_VERSION,
    DEFAULT_NEGATIVE_FRACTION,
    MODEL_FILES_DIR,
    Calibration,
    OutlierModel,
    QuarantineRule,
    TrainingLabels,
    array_sha256,
    export_onnx,
    feature_scale,
    field_return_labels,
    fit_calibration,
    fit_outlier,
    fit_supervised,
    onnx_probabilities,
    onnx_session,
    top_fraction_rule,
    write_model_files,
)

HISTORY_START = datetime(2025, 1, 6, 6, 0, tzinfo=UTC)
PERIOD_DAYS = 21
AS_OF = datetime(2026, 12, 31, tzinfo=UTC)
PRODUCTS = ("prismatic_105ah", "cyl_21700")
CELLS_PER_PACK = {"prismatic_105ah": 96, "cyl_21700": 448}
SLICES = (0.75, 0.125, 0.125)
SLICE_NAMES = ("train", "calibration", "holdout")
#: Seeds of the evaluation plants in the manifest's ground-truth metrics; the history uses
#: seeds from ``--seed`` + 100 * period + product, never these.
EVAL_SEEDS = (8101, 8102, 8103, 8104)
EVAL_START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
QUARANTINE_TOP_FRACTION = 0.02
ONNX_TOLERANCE = 1e-5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class History:
    """Simulated production history as the plant knows it: features, build times,
    products, the raw K-value (for the baseline's absolute limit) and field-return labels."""

    features: np.ndarray
    built_at_s: np.ndarray
    product: np.ndarray
    k_value_mv_per_day: np.ndarray
    labels: TrainingLabels
    plants: list[dict]
    cell_returns: int
    pack_returns: int


def _k_value(plant):
    from formation.features import batch_features

    table = batch_features(
        plant.steps, plant.aging, ocv_temp_coeff_mv_per_k=plant.product.ocv_temp_coeff_mv_per_k
    )
    return table, table.column("k_value_mv_per_day")


def simulate_history(
    *,
    periods: int,
    cells: int,
    seed: int,
    horizon_days: float,
    pack_share: float,
    as_of: datetime = AS_OF,
    products: tuple[str, ...] = PRODUCTS,
) -> History:
    """Build the history plants and their labels (see the module doc)."""
    feats, built, prod, kval, plants = [], [], [], [], []
    cell_returns: list[tuple[int, datetime]] = []
    pack_returns: list[tuple[int, datetime]] = []
    pack_of = []
    offset = 0
    pack_offset = 0
    for period in range(periods):
        start = HISTORY_START + timedelta(days=PERIOD_DAYS * period)
        for j, product in enumerate(products):
            plant_seed = seed + 100 * period + j
            plant = simulate_plant(cells, plant_seed, product=product, start=start)
            table, k = _k_value(plant)
            feats.append(plant_features(plant, formation=table).values)
            built.append(plant.built_at_s)
            prod.append(np.full(cells, product))
            kval.append(k)
            packs = np.arange(cells) // CELLS_PER_PACK[product]
            pack_of.append(packs + pack_offset)
            rng = np.random.default_rng([plant_seed, 0xBAC])
            returns = field_returns(plant, as_of=as_of, seed=plant_seed + 500_000)
            for r in returns:
                if rng.random() < pack_share:
                    pack_returns.append((int(packs[r.cell_index] + pack_offset), r.reported_at))
                else:
                    cell_returns.append((r.cell_index + offset, r.reported_at))
            plants.append(
                {
                    "product": product,
                    "seed": plant_seed,
                    "cells": cells,
                    "start": start.isoformat(),
                    "returns_known": len(returns),
                }
            )
            offset += cells
            pack_offset += int(packs.max()) + 1
            log(f"  period {period} {product}: {len(returns)} returns known")
    built_at = np.concatenate(built)
    labels = field_return_labels(
        built_at,
        as_of=as_of,
        horizon_days=horizon_days,
        cell_returns=cell_returns,
        pack_returns=pack_returns,
        pack_of=np.concatenate(pack_of),
    )
    return History(
        features=np.concatenate(feats),
        built_at_s=built_at,
        product=np.concatenate(prod),
        k_value_mv_per_day=np.concatenate(kval),
        labels=labels,
        plants=plants,
        cell_returns=len(cell_returns),
        pack_returns=len(pack_returns),
    )


@dataclass
class EvaluationSet:
    """Plants the model never saw, with the simulator's ground truth (evaluation only)."""

    features: np.ndarray
    latent_class: np.ndarray
    product: np.ndarray
    k_value_mv_per_day: np.ndarray
    plants: list[dict]


def evaluation_plants(
    seeds=EVAL_SEEDS, *, cells: int, start: datetime = EVAL_START, products=PRODUCTS
) -> EvaluationSet:
    """One plant per seed, products alternating, default defect rate."""
    feats, latent, prod, kval, plants = [], [], [], [], []
    for i, seed in enumerate(seeds):
        product = products[i % len(products)]
        plant = simulate_plant(cells, seed, product=product, start=start)
        table, k = _k_value(plant)
        feats.append(plant_features(plant, formation=table).values)
        latent.append(plant.truth.latent_class)
        prod.append(np.full(cells, product))
        kval.append(k)
        plants.append({"product": product, "seed": seed, "cells": cells})
    return EvaluationSet(
        np.concatenate(feats),
        np.concatenate(latent),
        np.concatenate(prod),
        np.concatenate(kval),
        plants,
    )


@dataclass
class Trained:
    """Everything a model file set is written from."""

    estimator: object
    onnx_bytes: bytes
    outlier: OutlierModel
    calibration: Calibration
    thresholds: dict[str, QuarantineRule]
    scale: dict[str, tuple[float, float]]
    slices: list[np.ndarray]


def train_supervised_only(history: History, *, seed: int, negative_fraction: float):
    """The supervised model alone, fitted on the training slice exactly as :func:`train`
    does (the benchmark refits it to compare with the committed graph)."""
    labels = history.labels
    train_mask = evaluation.time_split(history.built_at_s, fractions=SLICES)[0]
    in_train = train_mask[labels.rows]
    log(f"fitting supervised model on {in_train.sum()} rows ...")
    return fit_supervised(
        history.features[labels.rows[in_train]],
        labels.y[in_train],
        labels.weight[in_train],
        seed=seed,
        negative_fraction=negative_fraction,
    )


def train(history: History, *, seed: int, negative_fraction: float) -> Trained:
    """Fit the three parts on their time slices and set the quarantine thresholds."""
    x = history.features
    labels = history.labels
    train_mask, cal_mask, hold_mask = evaluation.time_split(history.built_at_s, fractions=SLICES)
    estimator = train_supervised_only(history, seed=seed, negative_fraction=negative_fraction)
    onnx_bytes = export_onnx(estimator)
    session = onnx_session(onnx_bytes)
    log("fitting outlier blocks ...")
    outlier = fit_outlier(x[train_mask], seed=seed)
    in_cal = cal_mask[labels.rows]
    rows = labels.rows[in_cal]
    log(f"calibrating on {in_cal.sum()} rows ...")
    calibration = fit_calibration(
        onnx_probabilities(session, x[rows]),
        outlier.score(x[rows]),
        baseline_flags(x[rows])[0].sum(axis=1),
        labels.y[in_cal],
        labels.weight[in_cal],
        seed=seed,
    )
    later = cal_mask | hold_mask
    risk_later = calibration.risk(
        onnx_probabilities(session, x[later]),
        outlier.score(x[later]),
        calibration.screens(x[later]),
    )
    thresholds = {"default": top_fraction_rule(risk_later, QUARANTINE_TOP_FRACTION)}
    for product in np.unique(history.product).tolist():
        sel = history.product[later] == product
        thresholds[product] = top_fraction_rule(risk_later[sel], QUARANTINE_TOP_FRACTION)
    return Trained(
        estimator=estimator,
        onnx_bytes=onnx_bytes,
        outlier=outlier,
        calibration=calibration,
        thresholds=thresholds,
        scale=feature_scale(x[train_mask]),
        slices=[train_mask, cal_mask, hold_mask],
    )


def score_all(trained: Trained, features: np.ndarray) -> dict[str, np.ndarray]:
    """Risk, supervised p and outlier score from the exported graph, as serving does."""
    p = onnx_probabilities(onnx_session(trained.onnx_bytes), features)
    o = trained.outlier.score(features)
    risk = trained.calibration.risk(p, o, trained.calibration.screens(features))
    return {"risk": risk, "supervised": p, "outlier": o}


def _rounded(obj, digits: int = 4):
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v, digits) for v in obj]
    return obj


def metrics(trained: Trained, history: History, ev: EvaluationSet | None) -> dict:
    """Hold-out metrics against field returns and, with ``ev``, against ground truth."""
    hold = trained.slices[2]
    x = history.features[hold]
    s = score_all(trained, x)
    s["baseline"] = baseline_score(x)
    truth = history.labels.returned[hold]
    out = {
        "holdout_field_returns": {
            "what": "newest 12.5 % of the history by build time; truth = cell-level field "
            "return within the label horizon",
            "scores": _rounded(evaluation.compare(s, truth)),
        }
    }
    if ev is not None:
        se = score_all(trained, ev.features)
        se["baseline"] = baseline_score(ev.features)
        bad = ev.latent_class != "none"
        out["simulated_truth"] = {
            "what": "evaluation plants with unseen seeds; truth = latent defect",
            "plants": ev.plants,
            "scores": _rounded(evaluation.compare(se, bad, latent_class=ev.latent_class)),
        }
        for product in np.unique(ev.product).tolist():
            sel = ev.product == product
            out["simulated_truth"][product] = _rounded(
                evaluation.summary(se["risk"][sel], bad[sel])
            )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=MODEL_FILES_DIR)
    ap.add_argument("--version", default=DEFAULT_MODEL_VERSION)
    ap.add_argument("--periods", type=int, default=8)
    ap.add_argument("--cells", type=int, default=20_000, help="cells per plant and period")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--horizon-days", type=float, default=365.0)
    ap.add_argument("--pack-share", type=float, default=0.1)
    ap.add_argument("--negative-fraction", type=float, default=DEFAULT_NEGATIVE_FRACTION)
    ap.add_argument("--eval-cells", type=int, default=20_000, help="0 = no ground-truth metrics")
    args = ap.parse_args(argv)
    t0 = time.process_time()
    log(f"simulating {args.periods} periods x {len(PRODUCTS)} lines x {args.cells} cells ...")
    history = simulate_history(
        periods=args.periods,
        cells=args.cells,
        seed=args.seed,
        horizon_days=args.horizon_days,
        pack_share=args.pack_share,
    )
    trained = train(history, seed=args.seed, negative_fraction=args.negative_fraction)
    ev = None
    if args.eval_cells:
        log("simulating evaluation plants ...")
        ev = evaluation_plants(cells=args.eval_cells)
    check_x = history.features[trained.slices[2]]
    if ev is not None:
        check_x = np.concatenate([check_x, ev.features])
    x32 = check_x.astype(np.float32).astype(np.float64)
    diff = float(
        np.abs(
            trained.estimator.predict_proba(x32)[:, 1]
            - onnx_probabilities(onnx_session(trained.onnx_bytes), x32)
        ).max()
    )
    log(f"ONNX against scikit-learn: max abs diff {diff:.3g} on {len(check_x)} cells")
    if diff > ONNX_TOLERANCE:
        log(f"refusing to write: difference above {ONNX_TOLERANCE}")
        return 1
    labels = history.labels
    training = {
        "as_of": AS_OF.isoformat(),
        "label": f"field return reported within {args.horizon_days:g} days of build",
        "horizon_days": args.horizon_days,
        "history": {
            "periods": args.periods,
            "period_days": PERIOD_DAYS,
            "cells_per_plant": args.cells,
            "plants": history.plants,
            "simulator_version": SIMULATOR_VERSION,
            "formation_feature_set_version": FORMATION_FEATURE_SET,
        },
        "labels": {
            "cells": len(history.built_at_s),
            "mature_cells": int(labels.mature.sum()),
            "cell_level_returns": history.cell_returns,
            "pack_level_returns": history.pack_returns,
            "pack_share": args.pack_share,
            "cells_per_pack": CELLS_PER_PACK,
            "positive_weight": round(labels.positives, 3),
        },
        "slices": {
            "fractions": {"train": SLICES[0], "calibration": SLICES[1], "holdout": SLICES[2]},
            "cells": {
                name: int(mask.sum())
                for name, mask in zip(SLICE_NAMES, trained.slices, strict=True)
            },
        },
        "negative_fraction": args.negative_fraction,
        "seed": args.seed,
        "data_sha256": array_sha256(history.features, labels.rows, labels.y, labels.weight),
        "gbc_params": dict(DEFAULT_GBC_PARAMS),
    }
    result = metrics(trained, history, ev)
    checks = {
        "onnx_vs_sklearn_max_abs_diff": diff,
        "onnx_vs_sklearn_cells": len(check_x),
        "tolerance": ONNX_TOLERANCE,
    }
    manifest_path, onnx_path = write_model_files(
        args.out,
        version=args.version,
        estimator=trained.estimator,
        onnx_bytes=trained.onnx_bytes,
        outlier=trained.outlier,
        calibration=trained.calibration,
        thresholds=trained.thresholds,
        scale=trained.scale,
        training=training,
        metrics=result,
        checks=checks,
    )
    log(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes) and {manifest_path}")
    summary = {"cpu_s": round(time.process_time() - t0, 1), **checks}
    if ev is not None:
        summary["truth"] = {
            k: {m: v[m] for m in ("auroc", "average_precision", "capture_at_2pct")}
            for k, v in result["simulated_truth"]["scores"].items()
        }
    print(json.dumps(summary))
    return 0


__all__ = [
    "AS_OF",
    "EVAL_SEEDS",
    "History",
    "evaluation_plants",
    "main",
    "metrics",
    "score_all",
    "simulate_history",
    "train",
    "train_supervised_only",
]

if __name__ == "__main__":
    raise SystemExit(main())
