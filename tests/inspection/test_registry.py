"""The vision model registry: a model is registered only when its file matches its manifest
and its golden set reproduces; approval and activation are a quality engineer's; a
corrupted file never replaces the active model."""

from __future__ import annotations

import json
import shutil

import pytest
from django.conf import settings

from inspection import services
from inspection.choices import ModelState
from inspection.models import InspectionModel, InspectionStation
from inspection.vision.model import default_model_paths
from qms.exceptions import InvalidInput, Refused

pytestmark = pytest.mark.django_db


def copy_model(tmp_path, *, version: str, tamper: bool = False, golden_shift: float = 0.0):
    """A copy of the committed model as another version (optionally with one byte of the
    ONNX file flipped, or a golden set whose expected outputs are off)."""
    import numpy as np

    manifest_path, onnx_path, golden_path = default_model_paths()
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = version
    folder = tmp_path / version
    folder.mkdir()
    onnx = folder / f"{manifest['name']}-{version}.onnx"
    shutil.copyfile(onnx_path, onnx)
    if tamper:
        data = bytearray(onnx.read_bytes())
        data[len(data) // 2] ^= 0x01
        onnx.write_bytes(bytes(data))
    golden = folder / "golden.npz"
    if golden_shift:
        arrays = dict(np.load(golden_path))
        key = next(k for k in arrays if "prob" in k)
        arrays[key] = arrays[key] + golden_shift
        np.savez(golden, **arrays)
    else:
        shutil.copyfile(golden_path, golden)
    from inspection.vision.model import file_sha256

    manifest["golden"] = {
        **manifest.get("golden", {}),
        "file": golden.name,
        "sha256": file_sha256(golden),
    }
    m = folder / "manifest.json"
    m.write_text(json.dumps(manifest))
    return m, onnx, golden


def test_registering_checks_the_file_and_runs_the_golden_set(quality):
    manifest, onnx, golden = default_model_paths()

    model = services.model_register(
        manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=quality
    )

    meta = json.loads(manifest.read_text())
    assert (model.name, model.version, model.state) == (
        meta["name"],
        meta["version"],
        ModelState.VALIDATED,
    )
    assert model.sha256 == meta["sha256"]
    assert model.golden_result["passed"] is True
    assert model.golden_result["count"] >= 24
    assert model.onnx_path().read_bytes() == onnx.read_bytes()
    assert model.onnx_path().is_relative_to(settings.QMS_MODEL_STORE)
    states = list(model.history.order_by("history_date").values_list("state", flat=True))
    assert states == [ModelState.DRAFT, ModelState.VALIDATED]


def test_a_corrupted_file_is_refused_and_leaves_nothing(quality, vision_model, tmp_path):
    manifest, onnx, golden = copy_model(tmp_path, version="1.1.1", tamper=True)

    with pytest.raises(InvalidInput) as exc:
        services.model_register(
            manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=quality
        )

    assert (exc.value.code, exc.value.field) == ("checksum_mismatch", "file")
    assert list(InspectionModel.objects.values_list("version", "state")) == [
        (vision_model.version, ModelState.ACTIVE)
    ]
    assert not (settings.QMS_MODEL_STORE / vision_model.name / "1.1.1").exists()


def test_a_golden_set_that_does_not_reproduce_is_refused(quality, tmp_path):
    manifest, onnx, golden = copy_model(tmp_path, version="1.1.2", golden_shift=0.05)

    with pytest.raises(InvalidInput) as exc:
        services.model_register(
            manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=quality
        )

    assert (exc.value.code, exc.value.field) == ("golden_failed", "golden")
    assert InspectionModel.objects.count() == 0


def test_a_version_is_registered_once(quality, vision_model):
    manifest, onnx, golden = default_model_paths()
    with pytest.raises(Refused) as exc:
        services.model_register(
            manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=quality
        )
    assert exc.value.field == "version"


def test_only_a_quality_engineer_approves(quality, operator):
    manifest, onnx, golden = default_model_paths()
    model = services.model_register(
        manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=quality
    )

    with pytest.raises(Refused) as exc:
        services.model_approve(model=model, actor=operator, reason="looks fine")
    assert exc.value.code == "forbidden"
    model.refresh_from_db()
    assert model.state == ModelState.VALIDATED

    approved = services.model_approve(model=model, actor=quality, reason="FAT passed")
    assert (approved.state, approved.approved_by) == (ModelState.APPROVED, quality)


def test_activating_a_new_version_retires_the_old_one_and_moves_the_cameras(
    quality, camera, tmp_path
):
    old = camera.model
    manifest, onnx, golden = copy_model(tmp_path, version="1.2.0")
    new = services.model_register(
        manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=quality
    )
    services.model_approve(model=new, actor=quality, reason="Better recall on cracks")

    services.model_activate(model=new, actor=quality, reason="Planned model change")

    old.refresh_from_db()
    new.refresh_from_db()
    camera.refresh_from_db()
    assert (old.state, new.state, camera.model) == (ModelState.RETIRED, ModelState.ACTIVE, new)

    # Rollback: the old version was approved once, so it can be activated again.
    services.model_activate(model=old, actor=quality, reason="Rollback: false calls on edges")
    old.refresh_from_db()
    new.refresh_from_db()
    camera.refresh_from_db()
    assert (old.state, new.state, camera.model) == (ModelState.ACTIVE, ModelState.RETIRED, old)


def test_a_stored_file_corrupted_later_is_not_activated(quality, camera, tmp_path):
    manifest, onnx, golden = copy_model(tmp_path, version="1.3.0")
    new = services.model_register(
        manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=quality
    )
    services.model_approve(model=new, actor=quality, reason="ok")
    data = bytearray(new.onnx_path().read_bytes())
    data[100] ^= 0xFF
    new.onnx_path().write_bytes(bytes(data))

    with pytest.raises(InvalidInput) as exc:
        services.model_activate(model=new, actor=quality, reason="go")

    assert exc.value.code == "checksum_mismatch"
    new.refresh_from_db()
    camera.refresh_from_db()
    assert new.state == ModelState.APPROVED
    assert camera.model.state == ModelState.ACTIVE and camera.model != new


def test_the_active_model_of_a_camera_cannot_be_retired(quality, camera):
    with pytest.raises(Refused) as exc:
        services.model_retire(model=camera.model, actor=quality, reason="end of life")
    assert "activate its replacement" in exc.value.message
    assert InspectionStation.objects.get().model.state == ModelState.ACTIVE
