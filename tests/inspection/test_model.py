"""The committed inspection model: integrity checks, input checks, the decision rule, and
regression guards on its quality (fresh shifted crops, and the figures in its manifest)."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from inspection.synthetic import CLASSES, RenderParams, dataset
from inspection.vision.model import (
    DECISION_RULE_ID,
    ModelError,
    Prediction,
    Thresholds,
    VisionModel,
    default_model_paths,
    file_sha256,
    golden_check,
)

MANIFEST, ONNX, GOLDEN = default_model_paths()
DEFECTS = CLASSES[1:]


@pytest.fixture(scope="module")
def model():
    return VisionModel.load(MANIFEST)


@pytest.fixture(scope="module")
def manifest():
    return json.loads(MANIFEST.read_text())


def _copy_model(tmp_path: Path) -> tuple[Path, Path, Path]:
    paths = []
    for src in (MANIFEST, ONNX, GOLDEN):
        dst = tmp_path / src.name
        shutil.copyfile(src, dst)
        paths.append(dst)
    return tuple(paths)


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir())}


def _probs(p_ok: float, **defects: float) -> np.ndarray:
    """A probability row: given values, the rest of the mass spread over the other classes."""
    row = np.zeros(len(CLASSES))
    row[0] = p_ok
    for cls, p in defects.items():
        row[CLASSES.index(cls)] = p
    rest = [i for i, c in enumerate(CLASSES) if c != "ok" and c not in defects]
    row[rest] = (1.0 - row.sum()) / len(rest)
    return row


# --------------------------------------------------------------------------- loading


def test_default_paths_are_the_committed_files():
    assert MANIFEST.name == "electrode-surface-1.1.0.manifest.json"
    assert ONNX.name == "electrode-surface-1.1.0.onnx"
    assert GOLDEN.name == "electrode-surface-1.1.0.golden.npz"
    assert MANIFEST.parent == ONNX.parent == GOLDEN.parent
    assert MANIFEST.parent.name == "model_files"


def test_committed_model_loads(model, manifest):
    assert model.name == "electrode-surface"
    assert model.version == "1.1.0"
    assert model.classes == CLASSES
    assert model.input_size == 128
    assert model.map_size == (16, 16)
    assert model.pixel_pitch_um == 20.0
    assert model.intra_op_threads == 1
    assert model.manifest == manifest
    assert model.thresholds.as_dict() == manifest["thresholds"]
    assert model.threshold_set == manifest["threshold_set"]


def test_sha256_of_the_file_matches_the_manifest(model, manifest):
    digest = hashlib.sha256(ONNX.read_bytes()).hexdigest()
    assert file_sha256(ONNX) == digest
    assert manifest["sha256"] == digest
    assert model.sha256 == digest
    assert manifest["golden"]["sha256"] == hashlib.sha256(GOLDEN.read_bytes()).hexdigest()


def test_file_is_small():
    assert ONNX.stat().st_size <= 2 * 1024 * 1024


def test_threshold_set_is_the_hash_of_the_canonical_thresholds(manifest):
    text = json.dumps(manifest["thresholds"], sort_keys=True, separators=(",", ":"))
    assert manifest["threshold_set"] == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert manifest["thresholds"]["rule"] == DECISION_RULE_ID
    assert set(manifest["thresholds"]["per_class"]) == set(DEFECTS)


def test_expected_sha256_is_checked_too(model):
    same = VisionModel.load(MANIFEST, expected_sha256=model.sha256)
    assert same.sha256 == model.sha256
    with pytest.raises(ModelError) as exc:
        VisionModel.load(MANIFEST, expected_sha256="0" * 64)
    assert exc.value.code == "checksum_mismatch"


def test_golden_check_passes(model, manifest):
    result = golden_check(model, GOLDEN, strict=True)
    assert result["passed"] is True
    assert result["count"] == manifest["golden"]["count"] == 40
    assert result["class_mismatches"] == 0
    assert result["tolerance"] == 1e-4
    assert 0.0 <= result["max_abs_diff_probs"] <= 1e-4
    assert 0.0 <= result["max_abs_diff_map"] <= 1e-4


def test_golden_set_covers_every_class_on_both_substrates():
    with np.load(GOLDEN) as data:
        labels = [str(x) for x in data["label"]]
        substrates = [str(x) for x in data["substrate"]]
        assert data["images"].dtype == np.uint8
        assert data["images"].shape == (40, 128, 128)
    for cls in CLASSES:
        assert labels.count(cls) == 5
        subs = {s for lab, s in zip(labels, substrates, strict=True) if lab == cls}
        assert subs == {"coating", "separator"}


# --------------------------------------------------------------------------- refusals


def test_tampered_copy_is_refused(tmp_path):
    manifest, onnx_path, _ = _copy_model(tmp_path)
    data = bytearray(onnx_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx_path.write_bytes(bytes(data))
    before = _snapshot(tmp_path)
    with pytest.raises(ModelError) as exc:
        VisionModel.load(manifest)
    assert exc.value.code == "checksum_mismatch"
    assert _snapshot(tmp_path) == before


def test_explicit_onnx_path_is_checked_against_the_manifest(tmp_path):
    other = tmp_path / "other.onnx"
    other.write_bytes(ONNX.read_bytes() + b"\0")
    with pytest.raises(ModelError) as exc:
        VisionModel.load(MANIFEST, onnx_path=other)
    assert exc.value.code == "checksum_mismatch"


def test_missing_files_are_refused(tmp_path):
    with pytest.raises(ModelError) as exc:
        VisionModel.load(tmp_path / "absent.manifest.json")
    assert exc.value.code == "file_missing"

    manifest, onnx_path, golden = _copy_model(tmp_path)
    onnx_path.unlink()
    with pytest.raises(ModelError) as exc:
        VisionModel.load(manifest)
    assert exc.value.code == "file_missing"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([manifest.name, golden.name])


def test_missing_golden_file_is_refused(model, tmp_path):
    with pytest.raises(ModelError) as exc:
        golden_check(model, tmp_path / "absent.golden.npz")
    assert exc.value.code == "file_missing"


@pytest.mark.parametrize(
    "key", ["sha256", "classes", "input", "outputs", "thresholds", "threshold_set", "version"]
)
def test_manifest_without_a_required_key_is_refused(tmp_path, key):
    manifest, _, _ = _copy_model(tmp_path)
    data = json.loads(manifest.read_text())
    del data[key]
    manifest.write_text(json.dumps(data))
    before = _snapshot(tmp_path)
    with pytest.raises(ModelError) as exc:
        VisionModel.load(manifest)
    assert exc.value.code == "manifest_invalid"
    assert key in exc.value.message
    assert _snapshot(tmp_path) == before


def test_edited_thresholds_without_a_new_set_id_are_refused(tmp_path):
    manifest, _, _ = _copy_model(tmp_path)
    data = json.loads(manifest.read_text())
    data["thresholds"]["per_class"]["crack"]["high"] = 0.5
    data["thresholds"]["per_class"]["crack"]["low"] = 0.1
    manifest.write_text(json.dumps(data))
    with pytest.raises(ModelError) as exc:
        VisionModel.load(manifest)
    assert exc.value.code == "manifest_invalid"
    assert "threshold_set" in exc.value.message


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("thresholds", "per_class", "void", "low"), 0.99),  # low above high
        (("thresholds", "ok_decision"), 0.0),
        (("thresholds", "rule"), "argmax"),
        (("classes",), ["ok", "pinhole"]),
        (("input", "dtype"), "uint8"),
        (("sha256",), "abc"),
    ],
)
def test_inconsistent_manifest_is_refused(tmp_path, path, value):
    manifest, _, _ = _copy_model(tmp_path)
    data = json.loads(manifest.read_text())
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    manifest.write_text(json.dumps(data))
    with pytest.raises(ModelError) as exc:
        VisionModel.load(manifest)
    assert exc.value.code == "manifest_invalid"


def test_manifest_that_is_not_json_is_refused(tmp_path):
    manifest, _, _ = _copy_model(tmp_path)
    manifest.write_text('{"name": "electrode-surface",')
    with pytest.raises(ModelError) as exc:
        VisionModel.load(manifest)
    assert exc.value.code == "manifest_invalid"


def test_golden_set_with_other_outputs_fails(model, tmp_path):
    manifest_path, _, golden = _copy_model(tmp_path)
    with np.load(golden) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["probs"] = arrays["probs"].copy()
    arrays["probs"][3, 0] += 2e-4
    np.savez_compressed(golden, **arrays)
    data = json.loads(manifest_path.read_text())
    # The stored checksum catches the edit first ...
    with pytest.raises(ModelError) as exc:
        golden_check(model, golden)
    assert exc.value.code == "checksum_mismatch"
    # ... and with a matching checksum the comparison itself fails.
    data["golden"]["sha256"] = file_sha256(golden)
    manifest_path.write_text(json.dumps(data))
    copy = VisionModel.load(manifest_path)
    result = golden_check(copy, golden)
    assert result["passed"] is False
    assert result["max_abs_diff_probs"] > 1e-4
    assert result["max_abs_diff_map"] <= 1e-4
    with pytest.raises(ModelError) as exc:
        golden_check(copy, golden, strict=True)
    assert exc.value.code == "golden_failed"


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    "crops",
    [
        np.zeros((2, 1, 128, 128), np.uint8),  # uint8 must be (N, 128, 128)
        np.zeros((2, 64, 64), np.uint8),
        np.zeros((128, 128), np.uint8),
        np.zeros((2, 128, 128), np.float32),  # float32 must be (N, 1, 128, 128)
        np.zeros((2, 3, 128, 128), np.float32),
        np.zeros((2, 1, 128, 128), np.float64),
        np.zeros((2, 128, 128), np.int16),
        np.full((1, 1, 128, 128), 256.0, np.float32),
        np.full((1, 1, 128, 128), np.nan, np.float32),
        [[0] * 128] * 128,
    ],
)
def test_wrong_input_is_refused(model, crops):
    with pytest.raises(ModelError) as exc:
        model.infer(crops)
    assert exc.value.code == "bad_input"


def test_uint8_and_float32_inputs_give_the_same_outputs(model):
    crops = np.random.default_rng(5).integers(0, 256, (3, 128, 128), dtype=np.uint8)
    p8, m8 = model.infer(crops)
    pf, mf = model.infer(crops.astype(np.float32)[:, None])
    assert p8.shape == (3, 8)
    assert m8.shape == (3, 16, 16)
    assert p8.dtype == m8.dtype == np.float32
    assert np.array_equal(p8, pf)
    assert np.array_equal(m8, mf)
    assert np.allclose(p8.sum(axis=1), 1.0, atol=1e-5)
    assert m8.min() >= 0.0
    assert m8.max() <= 1.0


def test_empty_batch_gives_empty_outputs(model):
    probs, maps = model.infer(np.zeros((0, 128, 128), np.uint8))
    assert probs.shape == (0, 8)
    assert maps.shape == (0, 16, 16)
    predictions, maps = model.predict(np.zeros((0, 128, 128), np.uint8))
    assert predictions == []


def test_predict_is_infer_then_decide(model):
    with np.load(GOLDEN) as data:
        images = data["images"][:8]
    probs, maps = model.infer(images)
    predictions, maps2 = model.predict(images)
    assert np.array_equal(maps, maps2)
    assert predictions == model.decide(probs)
    model.warm_up(batch=4)


# --------------------------------------------------------------------------- decision rule


@pytest.fixture
def rule():
    return Thresholds(
        classes=CLASSES,
        ok_decision=0.5,
        high=(0.75,) * 7,
        low=(0.25,) * 7,
    )


def test_rule_calls_ok_below_the_ok_threshold(rule):
    [p] = rule.decide(_probs(0.6, void=0.3)[None])
    assert p == Prediction("ok", 0.6, dict(zip(CLASSES, _probs(0.6, void=0.3), strict=True)), "log")
    assert not p.is_defect


def test_rule_bands_at_and_between_the_thresholds(rule):
    rows = np.array(
        [
            _probs(0.5, scratch=0.5),  # d == ok_decision: a defect; p >= low
            _probs(0.0, crack=0.75),  # exactly high: act
            _probs(0.1, void=0.7499),  # just below high: review
            _probs(0.2, edge=0.25),  # exactly low: review
            _probs(0.45, particle=0.2, pinhole=0.2),  # tie below low: first class, log
            _probs(0.05, wrinkle=0.95),
        ]
    )
    got = [(p.cls, round(p.confidence, 6), p.band) for p in rule.decide(rows)]
    assert got == [
        ("scratch", 0.5, "review"),
        ("crack", 0.75, "act"),
        ("void", 0.7499, "review"),
        ("edge", 0.25, "review"),
        ("pinhole", 0.2, "log"),
        ("wrinkle", 0.95, "act"),
    ]


def test_rule_uses_each_class_own_thresholds():
    rule = Thresholds(
        classes=CLASSES,
        ok_decision=0.3,
        high=(0.9, 0.6, 0.9, 0.9, 0.9, 0.9, 0.9),
        low=(0.5, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5),
    )
    rows = np.array([_probs(0.3, void=0.65), _probs(0.3, pinhole=0.65), _probs(0.3, void=0.2)])
    assert [(p.cls, p.band) for p in rule.decide(rows)] == [
        ("void", "act"),
        ("pinhole", "review"),
        ("void", "review"),
    ]
    assert [(p.cls, p.band) for p in rule.decide(np.array([_probs(0.3, pinhole=0.4)]))] == [
        ("pinhole", "log")
    ]


def test_committed_thresholds_bands(model):
    t = model.thresholds
    rows, want = [], []
    for j, cls in enumerate(t.defect_classes):
        high, low = t.high[j], t.low[j]
        rows.append(_probs(0.0, **{cls: high}))
        want.append((cls, "act"))
        if low < high:
            rows.append(_probs(0.0, **{cls: (low + high) / 2}))
            want.append((cls, "review"))
    margin = 1e-6
    rows.append(_probs(1.0 - t.ok_decision + margin, void=t.ok_decision - margin))
    want.append(("ok", "log"))
    got = [(p.cls, p.band) for p in model.decide(np.array(rows))]
    assert got == want


def test_decide_refuses_wrong_probabilities(model):
    for probs in (np.zeros((2, 7)), np.zeros(8), np.full((1, 8), np.nan), np.zeros((1, 8), int)):
        with pytest.raises(ModelError) as exc:
            model.decide(probs)
        assert exc.value.code == "bad_input"


# --------------------------------------------------------------------------- quality


def _macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    f1 = []
    for k in range(len(CLASSES)):
        tp = np.sum((truth == k) & (pred == k))
        fp = np.sum((truth != k) & (pred == k))
        fn = np.sum((truth == k) & (pred != k))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1))


def test_fresh_shifted_crops_are_classified(model, manifest):
    seed = 7_321_019
    assert seed not in manifest["training"]["seeds"].values()
    shifted = dataset(8, seed=seed, params=RenderParams().shifted())  # 16 per class
    predictions, maps = model.predict(shifted.images)
    pred = np.array([CLASSES.index(p.cls) for p in predictions])
    assert _macro_f1(shifted.labels, pred) >= 0.9
    # The defect map marks the defect's cells (compact classes: the map's 8 px cells cover
    # them well) and stays low elsewhere and on good material.
    compact = np.isin(shifted.labels, [CLASSES.index(c) for c in ("pinhole", "void", "edge")])
    cells = shifted.masks[compact].reshape(-1, 16, 8, 16, 8).any(axis=(2, 4))
    assert maps[compact][cells].mean() > 0.5
    assert maps[compact][~cells].mean() < 0.05
    assert maps[shifted.labels == 0].mean() < 0.05


@pytest.mark.parametrize("split", ["in_distribution", "heldout_shifted"])
def test_manifest_metrics_agree_with_the_confusion_matrix(manifest, split):
    m = manifest["metrics"][split]
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (8, 8)
    assert cm.sum() == m["count"] >= 3200
    assert set(cm.sum(axis=1)) == {m["count"] // 8}
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-6)
    assert m["escape_rate"] == pytest.approx(cm[1:, 0].sum() / cm[1:].sum(), abs=1e-6)
    assert m["false_alarm_rate"] == pytest.approx(cm[0, 1:].sum() / cm[0].sum(), abs=1e-6)
    recall = np.diag(cm) / cm.sum(axis=1)
    for i, cls in enumerate(CLASSES):
        assert m["per_class"][cls]["recall"] == pytest.approx(recall[i], abs=1e-6)


# Product targets: accuracy and macro F1 >= 0.95, escapes <= 3 %, false alarms <= 1 %.
# The held-out shifted set misses them (docs/inspection-model.md, "Metrics"): strict xfail,
# so a model that reaches them turns this red until the mark is removed.
@pytest.mark.parametrize(
    "split",
    [
        "in_distribution",
        pytest.param(
            "heldout_shifted",
            marks=pytest.mark.xfail(
                strict=True, reason="1.1.0 misses the targets on the shifted rendering"
            ),
        ),
    ],
)
def test_manifest_metrics_meet_the_targets(manifest, split):
    m = manifest["metrics"][split]
    assert m["accuracy"] >= 0.95
    assert m["macro_f1"] >= 0.95
    assert m["escape_rate"] <= 0.03
    assert m["false_alarm_rate"] <= 0.01


def test_heldout_metrics_do_not_fall_below_the_committed_model(manifest):
    """A retrained model must be at least about as good as 1.1.0 on the shifted set (1.1.0:
    accuracy 0.936, macro F1 0.939, escapes 7.0 %, false alarms 1.0 %; 1.0.0 had 0.917,
    0.922, 8.9 % and 1.0 %)."""
    m = manifest["metrics"]["heldout_shifted"]
    assert m["accuracy"] >= 0.93
    assert m["macro_f1"] >= 0.93
    assert m["escape_rate"] <= 0.075
    assert m["false_alarm_rate"] <= 0.0125


def test_manifest_records_provenance(manifest):
    training = manifest["training"]
    seeds = training["seeds"]
    used_before_reporting = ("train", "train_jitter", "val", "val_jitter", "val_shifted")
    assert seeds["heldout"] not in {seeds[k] for k in used_before_reporting}
    assert training["generator_version"] == "1.0.0"
    assert training["torch_version"].startswith("2.13.0")
    heldout = json.loads(json.dumps(RenderParams().shifted().as_dict()))
    assert training["render_params"]["heldout"] == heldout
    assert manifest["imaging_modes"] == {
        "coating": "reflected bright-field",
        "separator": "transmitted back-light",
    }
    assert manifest["input"]["shape"] == ["N", 1, 128, 128]
    assert manifest["outputs"]["defect_map"]["shape"] == ["N", 1, 16, 16]
