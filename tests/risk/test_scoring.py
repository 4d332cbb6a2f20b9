"""Risk scoring: labels from field returns, the supervised model and its ONNX twin, the
directional outlier score, calibration, model files (checksums, refusals), reason codes,
quarantine rules and determinism."""

import json
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from formation.cellsim import field_returns, simulate_plant
from formation.features import batch_features
from risk.evaluation import auroc
from risk.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    FEATURES,
    plant_features,
    remove_group_offset,
)
from risk.scoring import (
    OUTLIER_BLOCKS,
    Calibration,
    RiskModel,
    RiskModelError,
    default_model_paths,
    export_onnx,
    feature_scale,
    field_return_labels,
    file_sha256,
    fit_calibration,
    fit_outlier,
    fit_supervised,
    onnx_vs_sklearn,
    reason_texts,
    top_fraction_rule,
    write_model_files,
)

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
DAY = 86400.0
SMALL_GBC = {"n_estimators": 40}


# --------------------------------------------------------------------------- labels


def test_labels_count_returns_inside_the_horizon_of_mature_cells_only():
    built = START.timestamp() + np.array([0, 1, 2, 3, 300]) * DAY
    as_of = START + timedelta(days=400)
    labels = field_return_labels(
        built,
        as_of=as_of,
        horizon_days=365,
        cell_returns=[
            (0, START + timedelta(days=100)),  # inside the horizon
            (1, START + timedelta(days=380)),  # reported 379 days after build: too late
            (4, START + timedelta(days=350)),  # cell 4 is too young to have a label
        ],
    )
    assert labels.mature.tolist() == [True, True, True, True, False]
    assert labels.rows.tolist() == [0, 1, 2, 3]
    assert labels.y.tolist() == [1, 0, 0, 0]
    assert labels.weight.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert labels.returned.tolist() == [True, False, False, False, False]


def test_a_pack_level_return_labels_each_cell_of_the_pack_with_one_over_its_size():
    built = np.full(6, START.timestamp())
    pack_of = np.array([0, 0, 0, 0, 1, 1])
    labels = field_return_labels(
        built,
        as_of=START + timedelta(days=500),
        cell_returns=[(5, START + timedelta(days=90))],
        pack_returns=[(0, START + timedelta(days=120))],
        pack_of=pack_of,
    )
    assert labels.rows.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 5]
    assert labels.y.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert labels.weight.tolist() == [0.75, 0.25] * 4 + [1.0, 1.0]
    assert labels.positives == pytest.approx(2.0)
    with pytest.raises(ValueError, match="pack_returns need pack_of"):
        field_return_labels(built, as_of=START, pack_returns=[(0, START)])
    with pytest.raises(ValueError, match="timezone-aware"):
        field_return_labels(built, as_of=datetime(2027, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="outside"):
        field_return_labels(built, as_of=START, cell_returns=[(9, START)])


# --------------------------------------------------------------------------- a small model


@pytest.fixture(scope="module")
def history():
    """One simulated prismatic plant with field returns two years on; no truth in labels."""
    plant = simulate_plant(4000, 71, defect_rate=0.05, start=START)
    x = plant_features(plant).values
    returns = field_returns(plant, as_of=START + timedelta(days=730), seed=5)
    labels = field_return_labels(
        plant.built_at_s, as_of=START + timedelta(days=730), cell_returns=returns
    )
    return plant, x, labels


@pytest.fixture(scope="module")
def fitted(history):
    _, x, labels = history
    first = labels.rows < 2800
    est = fit_supervised(
        x[labels.rows[first]], labels.y[first], labels.weight[first], seed=3, params=SMALL_GBC
    )
    onnx_bytes = export_onnx(est)
    outlier = fit_outlier(x[:2800], seed=3, max_cells=600)  # MCD cost grows fast with n
    later = ~first
    rows = labels.rows[later]
    cal = fit_calibration(
        est.predict_proba(x[rows])[:, 1],
        outlier.score(x[rows]),
        Calibration(1, 0, 0, 0, 1).screens(x[rows]),
        labels.y[later],
        seed=3,
    )
    return est, onnx_bytes, outlier, cal


@pytest.fixture
def model_files(tmp_path, history, fitted):
    _, x, _ = history
    est, onnx_bytes, outlier, cal = fitted
    risk = cal.risk(est.predict_proba(x)[:, 1], outlier.score(x), cal.screens(x))
    manifest, onnx = write_model_files(
        tmp_path / "models",
        version="0.0.1",
        estimator=est,
        onnx_bytes=onnx_bytes,
        outlier=outlier,
        calibration=cal,
        thresholds={"prismatic_105ah": top_fraction_rule(risk, 0.02)},
        scale=feature_scale(x[:2800]),
        training={"seed": 3},
        metrics={},
    )
    return manifest, onnx


def test_onnx_gives_the_probabilities_of_scikit_learn(history, fitted):
    _, x, _ = history
    est, onnx_bytes, _, _ = fitted
    diff = onnx_vs_sklearn(est, onnx_bytes, x)
    assert diff <= 1e-5


def test_the_supervised_model_learns_from_returns_not_from_the_truth(history, fitted):
    plant, x, _ = history
    est = fitted[0]
    p = est.predict_proba(x[2800:])[:, 1]
    cls = plant.truth.latent_class[2800:]
    shorts = (cls == "particle_short") & (plant.truth.short_onset_s[2800:] == 0)
    assert np.median(p[shorts]) > 20 * np.median(p[cls == "none"])


def test_fit_supervised_refuses_labels_without_both_classes():
    x = np.zeros((50, len(FEATURES)))
    with pytest.raises(ValueError, match="both labels"):
        fit_supervised(x, np.zeros(50), seed=1)
    with pytest.raises(ValueError, match="features must be finite"):
        bad = x.copy()
        bad[3, 2] = np.nan
        fit_supervised(bad, np.r_[np.ones(5), np.zeros(45)], seed=1)


def test_training_is_deterministic_by_seed(history):
    _, x, labels = history
    rows, y, w = x[labels.rows[:2000]], labels.y[:2000], labels.weight[:2000]
    a = export_onnx(fit_supervised(rows, y, w, seed=11, params=SMALL_GBC))
    b = export_onnx(fit_supervised(rows, y, w, seed=11, params=SMALL_GBC))
    c = export_onnx(fit_supervised(rows, y, w, seed=12, params=SMALL_GBC))
    assert a == b
    assert a != c


# --------------------------------------------------------------------------- outlier


@pytest.fixture(scope="module")
def gaussian_outlier():
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 1.0, (600, len(FEATURES)))
    return fit_outlier(x, seed=1)


def test_outlier_score_counts_only_the_harmful_direction(gaussian_outlier):
    typical = np.zeros((1, len(FEATURES)))
    high_k = typical.copy()
    high_k[0, FEATURE_INDEX["k_value_z"]] = 8.0
    low_k = typical.copy()
    low_k[0, FEATURE_INDEX["k_value_z"]] = -8.0  # self-discharges less than its lot: fine
    low_ir = typical.copy()
    low_ir[0, FEATURE_INDEX["insulation_resistance_mohm_dev"]] = -6.0
    scores = gaussian_outlier.score(np.vstack([typical, high_k, low_k, low_ir]))
    assert scores[0] == 0.0
    assert scores[2] == scores[0]
    assert scores[1] > 10.0
    assert scores[3] > 5.0
    assert [b.name for b in gaussian_outlier.blocks] == list(OUTLIER_BLOCKS)


# --------------------------------------------------------------------------- model files


def test_a_written_model_loads_and_scores_like_its_parts(model_files, history, fitted):
    manifest_path, onnx_path = model_files
    _, x, _ = history
    est, _, outlier, cal = fitted
    model = RiskModel.load(manifest_path)
    risk, p, o = model.score(x)
    assert risk.shape == p.shape == o.shape == (4000,)
    assert np.abs(p - est.predict_proba(x)[:, 1]).max() <= 1e-5
    assert np.array_equal(o, outlier.score(x))
    assert ((risk >= 0) & (risk <= 1)).all()
    assert np.abs(risk - cal.risk(p, o, cal.screens(x))).max() == 0.0
    assert model.sha256 == file_sha256(onnx_path)
    manifest = json.loads(manifest_path.read_text())
    assert [f["name"] for f in manifest["features"]] == list(FEATURE_NAMES)
    assert onnx_path.stat().st_size < 1_000_000


def test_a_tampered_model_file_is_refused(model_files, tmp_path):
    manifest_path, onnx_path = model_files
    blob = bytearray(onnx_path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    onnx_path.write_bytes(bytes(blob))
    with pytest.raises(RiskModelError) as err:
        RiskModel.load(manifest_path)
    assert err.value.code == "checksum_mismatch"
    assert "the manifest says" in err.value.message


def test_load_refuses_missing_files_foreign_features_and_unapproved_checksums(model_files):
    manifest_path, onnx_path = model_files
    with pytest.raises(RiskModelError) as err:
        RiskModel.load(manifest_path, expected_sha256="0" * 64)
    assert err.value.code == "checksum_mismatch"
    manifest = json.loads(manifest_path.read_text())
    manifest["features"][0], manifest["features"][1] = (
        manifest["features"][1],
        manifest["features"][0],
    )
    swapped = manifest_path.with_name("swapped.manifest.json")
    swapped.write_text(json.dumps(manifest))
    with pytest.raises(RiskModelError) as err:
        RiskModel.load(swapped)
    assert err.value.code == "manifest_invalid"
    manifest = json.loads(manifest_path.read_text())
    manifest["calibration"]["coef_screens"] = -1.0
    negative = manifest_path.with_name("negative.manifest.json")
    negative.write_text(json.dumps(manifest))
    with pytest.raises(RiskModelError) as err:
        RiskModel.load(negative)
    assert err.value.code == "manifest_invalid"
    moved = onnx_path.with_name("elsewhere.onnx")
    shutil.move(onnx_path, moved)
    with pytest.raises(RiskModelError) as err:
        RiskModel.load(manifest_path)
    assert err.value.code == "file_missing"
    assert RiskModel.load(manifest_path, onnx_path=moved).sha256 == file_sha256(moved)


def test_score_refuses_a_matrix_of_the_wrong_shape_or_with_nan(model_files):
    model = RiskModel.load(model_files[0])
    with pytest.raises(RiskModelError, match="bad_input"):
        model.score(np.zeros((3, len(FEATURES) - 1)))
    bad = np.zeros((3, len(FEATURES)))
    bad[1, 4] = np.inf
    with pytest.raises(RiskModelError, match="row 1"):
        model.score(bad)
    risk, p, o = model.score(np.zeros((0, len(FEATURES))))
    assert len(risk) == len(p) == len(o) == 0


# --------------------------------------------------------------------------- reasons


@pytest.fixture(scope="module")
def clean_lot():
    """One electrode lot (300 cells) of a plant without defects."""
    plant = simulate_plant(300, 13, defect_rate=0.0, start=START)
    return plant


def test_reason_codes_name_the_feature_that_is_off(model_files, clean_lot):
    plant = clean_lot
    table = batch_features(
        plant.steps, plant.aging, ocv_temp_coeff_mv_per_k=plant.product.ocv_temp_coeff_mv_per_k
    )
    # 6.5 MAD above the lot median once the aging rack's offset is taken out
    k = table.column("k_value_mv_per_day")
    kc = remove_group_offset(k, plant.rack)
    mad = 1.4826 * np.median(np.abs(kc - np.median(kc)))
    rack_offset = k[40] - kc[40]
    table.values[40, table.names.index("k_value_mv_per_day")] = (
        np.median(kc) + 6.5 * mad + rack_offset
    )
    plant.upstream.weld_resistance_uohm[90] = 24.0  # 0.9 of the way to its 25 uOhm USL
    plant.upstream.anode_burr_um[150] = 17.0  # above its 15 um USL
    x = plant_features(plant, formation=table)
    model = RiskModel.load(model_files[0])
    reasons = model.reasons(x, top=3)
    assert len(reasons) == 300
    assert reasons[40][0].startswith("K-value ")
    assert " MAD above lot median" in reasons[40][0]
    assert float(reasons[40][0].split()[1]) == pytest.approx(6.5, abs=0.3)
    assert reasons[90][0] == "weld resistance at upper spec edge (0.90 of tolerance)"
    assert reasons[150][0] == "anode slit burr above upper spec limit (1.21 of tolerance)"
    risk, _, _ = model.score(x)
    assert risk[40] > np.median(risk)


def test_a_typical_cell_gets_a_reason_saying_nothing_stands_out():
    x = np.zeros((1, len(FEATURES)))
    scale = dict.fromkeys(FEATURE_NAMES, (0.0, 1.0))
    assert reason_texts(x, scale) == [["no measurement beyond 2 robust sigmas from typical"]]
    x[0, FEATURE_INDEX["open_spc_alarms"]] = 1.0
    x[0, FEATURE_INDEX["dcir_10s_z"]] = 3.0
    assert reason_texts(x, scale, top=3) == [
        [
            "1 open SPC alarms on the cell's process window",
            "DCIR 3.0 MAD above lot median (channel offset removed)",
        ]
    ]


# --------------------------------------------------------------------------- quarantine


def test_quarantine_by_threshold_or_by_top_fraction_of_a_batch(model_files):
    model = RiskModel.load(model_files[0])
    rule = model.rule("prismatic_105ah")
    assert rule.mode == "top_fraction" and rule.top_fraction == 0.02
    risk = np.linspace(0.0, 1.0, 500)
    held = model.quarantine(risk, product="prismatic_105ah", batch=True)
    assert held.sum() == 10
    assert held[-10:].all()
    single = model.quarantine(risk, product="prismatic_105ah")
    assert single.tolist() == (risk >= rule.risk_threshold).tolist()
    with pytest.raises(RiskModelError, match="no quarantine rule for product 'cyl_21700'"):
        model.quarantine(risk, product="cyl_21700")


def test_top_fraction_rule_sets_its_threshold_at_the_cut():
    rule = top_fraction_rule(np.arange(100.0) / 100.0, 0.05)
    assert rule.risk_threshold == 0.95
    assert rule.as_dict() == {"mode": "top_fraction", "risk_threshold": 0.95, "top_fraction": 0.05}


# --------------------------------------------------------------------------- committed model


def test_the_committed_model_loads_and_ranks_a_plant_it_never_saw():
    manifest_path, onnx_path = default_model_paths()
    model = RiskModel.load(manifest_path)
    assert model.manifest["checks"]["onnx_vs_sklearn_max_abs_diff"] <= 1e-5
    assert onnx_path.stat().st_size + manifest_path.stat().st_size < 1_000_000
    assert set(model.thresholds) == {"default", "prismatic_105ah", "cyl_21700"}
    plant = simulate_plant(2000, 424242, defect_rate=0.02, start=START)
    risk, _, _ = model.score(plant_features(plant))
    bad = plant.truth.latent_class != "none"
    assert auroc(risk, bad) > 0.9
    held = model.quarantine(risk, product="prismatic_105ah", batch=True)
    assert held.sum() == 40
    assert bad[held].mean() > 0.5  # most of what a 2 % quarantine holds is defective
