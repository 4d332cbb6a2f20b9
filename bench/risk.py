"""Thermal-risk benchmark: the committed model on plants it never saw, against ground truth.

    .venv/bin/python -m bench.risk --json

No database, no Django. Simulates ``--plants`` plants of ``--cells`` cells each (products
alternating, default 1 % latent defects) with seeds that neither the training history nor
the training script's evaluation plants use, and measures

* ``feature_cells_per_s``: curves to risk features (``batch_features`` with the cells'
  curves, then ``assemble_features``) over ``--curve-cells`` cells in chunks of 256;
  simulating the curves is not timed. ``feature_cells_per_s_records``: the same from
  step records and OCV logs only (what the model reads);
* ``score_cells_per_s``: risk features to (risk, supervised p, outlier score) for all
  cells in one batch (``RiskModel.score``), best of three;
* against the simulator's latent defects: ``auroc``, ``average_precision``,
  ``capture_at_{1,2,5}pct`` and false quarantines of the risk, beside the supervised part
  alone, the outlier score alone and the plant baseline (``baseline_*``, ``outlier_only_*``,
  ``supervised_only_*``), per defect class (``per_class``) and per product;
* ``onnx_vs_sklearn_max_abs_diff``: the supervised model refitted from the manifest's
  recipe (same history, seed and parameters) against the committed ONNX graph on these
  cells; ``onnx_rebuilt_identical`` says whether the refitted model exports to the very
  bytes committed. ``--no-refit`` skips the refit (about 3 minutes) and reports the
  training-time figure from the manifest instead;
* ``peak_rss_mb``: maximum resident set of the run.

Rates are CPU time of this process (``time.process_time``, one core; onnxruntime runs one
intra-op thread), so a machine shared with other work still gives comparable figures.

The JSON object is printed on the last line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np

from formation.cellsim import simulate_plant
from formation.features import batch_features
from risk import evaluation
from risk.baseline import baseline_score
from risk.features import GAUGE_NAMES, assemble_features, plant_features
from risk.scoring import (
    RiskModel,
    default_model_paths,
    export_onnx,
    onnx_probabilities,
    onnx_session,
)

PRODUCTS = ("prismatic_105ah", "cyl_21700")
BENCH_SEEDS = tuple(range(9101, 9121))
START = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
CURVE_CHUNK = 256


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def curve_feature_rate(plant, n_cells: int) -> tuple[float, float]:
    """Cells per second from curves (and records) to risk features, and from records and
    OCV logs alone, over the first ``n_cells`` cells of ``plant``."""
    timed = 0.0
    done = 0
    for lo in range(0, min(n_cells, plant.n_cells), CURVE_CHUNK):
        idx = np.arange(lo, min(lo + CURVE_CHUNK, n_cells, plant.n_cells))
        curves = [c for _, c in plant.iter_curves(idx, chunk=CURVE_CHUNK)]
        aging = SimpleNamespace(
            at_s=plant.aging.at_s[idx],
            ocv_v=plant.aging.ocv_v[idx],
            rack_temperature_c=plant.aging.rack_temperature_c[idx],
        )
        t = time.process_time()
        table = batch_features(
            plant.steps.take(idx),
            aging,
            curves=curves,
            ocv_temp_coeff_mv_per_k=plant.product.ocv_temp_coeff_mv_per_k,
        )
        assemble_features(
            table,
            {name: getattr(plant.upstream, name)[idx] for name in GAUGE_NAMES},
            gauges=plant.product.gauges,
            lot=plant.electrode_lot[idx],
            channel=plant.channel[idx],
            rack=plant.rack[idx],
        )
        timed += time.process_time() - t
        done += len(idx)
        del curves
    t = time.process_time()
    table = batch_features(
        plant.steps, plant.aging, ocv_temp_coeff_mv_per_k=plant.product.ocv_temp_coeff_mv_per_k
    )
    plant_features(plant, formation=table)
    records = plant.n_cells / (time.process_time() - t)
    return done / timed, records


def refit_check(model: RiskModel, features: np.ndarray) -> dict:
    """Refit the supervised model from the manifest's recipe; compare with the graph."""
    from scripts.train_risk_model import simulate_history, train_supervised_only

    t = model.manifest["training"]
    history = simulate_history(
        periods=t["history"]["periods"],
        cells=t["history"]["cells_per_plant"],
        seed=t["seed"],
        horizon_days=t["horizon_days"],
        pack_share=t["labels"]["pack_share"],
    )
    estimator = train_supervised_only(
        history, seed=t["seed"], negative_fraction=t["negative_fraction"]
    )
    x32 = features.astype(np.float32).astype(np.float64)
    p_sklearn = estimator.predict_proba(x32)[:, 1]
    p_onnx = onnx_probabilities(onnx_session(model.onnx_path), x32)
    return {
        "onnx_vs_sklearn_max_abs_diff": float(np.abs(p_sklearn - p_onnx).max()),
        "onnx_rebuilt_identical": export_onnx(estimator) == model.onnx_path.read_bytes(),
        "onnx_check_source": "refit on this run's cells",
    }


def _pick(summary: dict, prefix: str = "") -> dict:
    keys = ("auroc", "average_precision", "capture_at_1pct", "capture_at_2pct")
    keys += ("capture_at_5pct", "false_quarantines_at_2pct", "false_quarantine_rate_at_2pct")
    return {f"{prefix}{k}": round(float(summary[k]), 4) for k in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plants", type=int, default=6)
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--curve-cells", type=int, default=1024)
    parser.add_argument("--manifest", default=None, help="default: the committed model")
    parser.add_argument("--no-refit", action="store_true")
    parser.add_argument("--json", action="store_true", help="only the JSON on stdout")
    args = parser.parse_args(argv)
    if not 1 <= args.plants <= len(BENCH_SEEDS):
        parser.error(f"--plants must be within 1..{len(BENCH_SEEDS)}")
    manifest_path = args.manifest or default_model_paths()[0]
    model = RiskModel.load(manifest_path)
    log(f"model {model!r}")

    feats, latent, product, onset = [], [], [], []
    feature_rate = records_rate = None
    for i, seed in enumerate(BENCH_SEEDS[: args.plants]):
        prod = PRODUCTS[i % len(PRODUCTS)]
        log(f"simulating plant {seed} ({prod}, {args.cells} cells) ...")
        plant = simulate_plant(args.cells, seed, product=prod, start=START)
        if feature_rate is None and args.curve_cells:
            feature_rate, records_rate = curve_feature_rate(plant, args.curve_cells)
        feats.append(plant_features(plant).values)
        latent.append(plant.truth.latent_class)
        onset.append(plant.truth.short_onset_s)
        product.append(np.full(args.cells, prod))
        del plant
    x = np.concatenate(feats)
    latent_class = np.concatenate(latent)
    products = np.concatenate(product)
    short_onset_s = np.concatenate(onset)
    bad = latent_class != "none"

    best = np.inf
    for _ in range(3):
        t = time.process_time()
        risk, supervised, outlier = model.score(x)
        best = min(best, time.process_time() - t)
    baseline = baseline_score(x)
    scores = {"risk": risk, "supervised": supervised, "outlier": outlier, "baseline": baseline}
    result = evaluation.compare(scores, bad, latent_class=latent_class)

    figures: dict = {
        "model": f"{model.name}-{model.version}",
        "sha256": model.sha256,
        "plants": args.plants,
        "cells": len(x),
        "defective_cells": int(bad.sum()),
        "feature_cells_per_s": round(feature_rate, 1) if feature_rate else None,
        "feature_cells_per_s_records": round(records_rate, 1) if records_rate else None,
        "score_cells_per_s": round(len(x) / best, 1),
        "clock": "process_time",
        **_pick(result["risk"]),
        **_pick(result["baseline"], "baseline_"),
        **_pick(result["outlier"], "outlier_only_"),
        **_pick(result["supervised"], "supervised_only_"),
        "per_class": {
            name: {
                cls: {k: round(v, 4) for k, v in row.items()}
                for cls, row in result[name]["per_class"].items()
            }
            for name in scores
        },
        "per_product": {
            prod: {
                name: _pick(evaluation.summary(s[products == prod], bad[products == prod]))
                for name, s in scores.items()
            }
            for prod in PRODUCTS
        },
    }
    # particle shorts by when the short starts: from formation, during aging, in the field
    shorts = latent_class == "particle_short"
    weights = evaluation.quarantine_weights(risk, 0.02)
    stages = {
        "from_formation": shorts & (short_onset_s == 0),
        "during_aging": shorts & (short_onset_s > 0) & np.isfinite(short_onset_s),
        "dormant_until_field": shorts & ~np.isfinite(short_onset_s),
    }
    figures["particle_short_capture_at_2pct_by_onset"] = {
        name: {"cells": int(sel.sum()), "capture": round(float(weights[sel].mean()), 4)}
        for name, sel in stages.items()
        if sel.any()
    }
    if args.no_refit:
        checks = model.manifest.get("checks", {})
        figures["onnx_vs_sklearn_max_abs_diff"] = checks.get("onnx_vs_sklearn_max_abs_diff")
        figures["onnx_check_source"] = "manifest (training time)"
    else:
        log("refitting the supervised model from the manifest's recipe ...")
        figures.update(refit_check(model, x))
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if not args.json:
        log(evaluation.comparison_table(result))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
