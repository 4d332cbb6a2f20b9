"""Every write of the inspection app: the model registry, inspection results from the
vision workers, reviewers' verdicts, and the coil metres vision flags.

What happens next: a flag for a hold on metres that cells consumed publishes
:class:`inspection.events.VisionFlagged` (compliance holds those cells). Cells that consume
flagged metres later are found when genealogy publishes ``UnitsLinked``
(:func:`flags_for_links`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import shutil
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from genealogy.choices import METRED_KINDS, LinkKind, UnitKind
from genealogy.models import Link, Unit
from genealogy.queries import iter_trace_backward, iter_trace_forward
from qms import events
from qms.exceptions import InvalidInput, NotFound, Refused

from . import spc_feed
from .choices import (
    Decision,
    FlagAction,
    FlagKind,
    ModelState,
    ReviewState,
    ReviewVerdict,
    Verdict,
)
from .events import VisionFlagged
from .models import (
    CellVisionFlag,
    CoilFlag,
    Defect,
    DefectReview,
    Evidence,
    InspectionModel,
    InspectionResult,
    InspectionStation,
    ShadowDisagreement,
)
from .schema import DEFECT_CLASSES

Actor = AbstractBaseUser

APPROVE_PERMISSION = "inspection.approve_inspectionmodel"
#: A defect's position may lie this far outside its frame's metre range (the crop and the
#: component reach over the frame border; encoder rounding).
MD_TOLERANCE_M = 0.01
#: How far ahead of this server's clock a frame's acquisition time may be (camera clocks
#: drift; the same allowance as measurements have).
CLOCK_SKEW = timedelta(minutes=5)
#: Decisions that flag the defect's metres for a hold on the cells made from them.
_HOLD_DECISIONS = frozenset({Decision.QUARANTINE, Decision.STOP})


# --- model registry ---------------------------------------------------------------------------


def _manifest_read(path: Path) -> dict:
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidInput(f"No manifest at {path}.", field="manifest") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"The manifest is not JSON: {exc}.", field="manifest") from exc
    missing = [
        k
        for k in ("name", "version", "classes", "thresholds", "threshold_set", "sha256")
        if k not in manifest
    ]
    if missing:
        raise InvalidInput(f"The manifest lacks {', '.join(missing)}.", field="manifest")
    return manifest


def _load_checked(manifest_path: Path, onnx_path: Path, expected_sha256: str | None):
    """Load the model with onnxruntime, refusing a file whose sha256 does not match."""
    from .vision.model import ModelError, VisionModel

    try:
        return VisionModel.load(
            manifest_path, onnx_path=onnx_path, intra_op_threads=1, expected_sha256=expected_sha256
        )
    except ModelError as exc:
        raise InvalidInput(
            f"Model refused ({exc.code}): {exc}", field="file", code=exc.code
        ) from exc


@transaction.atomic
def model_register(
    *,
    manifest_path: Path | str,
    onnx_path: Path | str | None = None,
    golden_path: Path | str | None = None,
    actor: Actor,
    notes: str = "",
) -> InspectionModel:
    """Copy a trained model (ONNX, manifest, golden set) into the model store, check the
    file's sha256 against the manifest and run the golden set; register it as validated.

    A file that does not match its manifest, or a golden set that does not reproduce, is
    refused: nothing is registered, nothing stays in the store, the active model runs on.
    """
    from .vision.model import ModelError, golden_check

    manifest_path = Path(manifest_path)
    manifest = _manifest_read(manifest_path)
    name, version = str(manifest["name"]), str(manifest["version"])
    onnx_path = Path(onnx_path) if onnx_path else manifest_path.with_name(f"{name}-{version}.onnx")
    if golden_path is None:
        golden_file = (manifest.get("golden") or {}).get("file")
        golden_path = manifest_path.with_name(golden_file) if golden_file else None
    golden_path = Path(golden_path) if golden_path else None
    if golden_path is None or not golden_path.is_file():
        raise InvalidInput("A model needs its golden set to be registered.", field="golden")
    if InspectionModel.objects.filter(name=name, version=version).exists():
        raise Refused(f"Model {name} {version} is registered already.", field="version")

    store = Path(settings.QMS_MODEL_STORE) / name / version
    if store.exists():  # left over from a refused registration
        shutil.rmtree(store)
    store.mkdir(parents=True)
    try:
        stored_onnx = store / "model.onnx"
        stored_manifest = store / "manifest.json"
        stored_golden = store / "golden.npz"
        try:
            shutil.copyfile(onnx_path, stored_onnx)
        except FileNotFoundError as exc:
            raise InvalidInput(f"No model file at {onnx_path}.", field="file") from exc
        shutil.copyfile(manifest_path, stored_manifest)
        shutil.copyfile(golden_path, stored_golden)
        model = _load_checked(stored_manifest, stored_onnx, str(manifest["sha256"]))
        try:
            golden = golden_check(model, stored_golden)
        except ModelError as exc:
            raise InvalidInput(
                f"Golden set refused ({exc.code}): {exc}", field="golden", code=exc.code
            ) from exc
        if not golden.get("passed"):
            raise InvalidInput(
                f"The golden set does not reproduce: {json.dumps(golden)}",
                field="golden",
                code="golden_failed",
            )
        now = timezone.now()
        rel = f"{name}/{version}"
        record = InspectionModel(
            name=name,
            version=version,
            file_name=f"{rel}/model.onnx",
            manifest_name=f"{rel}/manifest.json",
            golden_name=f"{rel}/golden.npz",
            sha256=model.sha256,
            size_bytes=stored_onnx.stat().st_size,
            manifest=manifest,
            classes=list(manifest["classes"]),
            thresholds=manifest["thresholds"],
            threshold_set=str(manifest["threshold_set"]),
            metrics=manifest.get("metrics", {}),
            state=ModelState.DRAFT,
            notes=notes,
            registered_by=actor,
            registered_at=now,
        )
        record._history_user = actor
        record._change_reason = "registered"
        record.save()
        record.state = ModelState.VALIDATED
        record.validated_at = now
        record.golden_result = golden
        record._change_reason = (
            f"checksum and golden set passed ({golden.get('count')} patches, "
            f"max |Δp| {golden.get('max_abs_diff_probs', 0):.2e})"
        )
        record.save()
    except BaseException:
        shutil.rmtree(store, ignore_errors=True)
        raise
    return record


def _require_approver(actor: Actor) -> None:
    if not actor.has_perm(APPROVE_PERMISSION):
        raise Refused(
            "Only a quality engineer may approve or activate a vision model.",
            field="actor",
            code="forbidden",
        )


def _locked(model: InspectionModel) -> InspectionModel:
    return InspectionModel.objects.select_for_update().get(pk=model.pk)


def _transition(model: InspectionModel, actor: Actor, reason: str, **changes) -> InspectionModel:
    for field, value in changes.items():
        setattr(model, field, value)
    model._history_user = actor
    model._change_reason = reason[:100]
    model.save()
    return model


@transaction.atomic
def model_approve(*, model: InspectionModel, actor: Actor, reason: str) -> InspectionModel:
    """A quality engineer approves a validated model for use on the line."""
    _require_approver(actor)
    model = _locked(model)
    if model.state != ModelState.VALIDATED:
        raise Refused(
            f"Only a validated model can be approved; {model} is {model.get_state_display()}.",
            field="state",
        )
    if not reason.strip():
        raise InvalidInput("An approval needs a reason.", field="reason")
    return _transition(
        model,
        actor,
        f"approved: {reason.strip()}",
        state=ModelState.APPROVED,
        approved_by=actor,
        approved_at=timezone.now(),
    )


@transaction.atomic
def model_activate(*, model: InspectionModel, actor: Actor, reason: str) -> InspectionModel:
    """Put an approved model on the line: the model of the same name that was active is
    retired and every camera that ran it runs this one. The stored file is checked again
    first; a file that no longer matches is refused and the active model stays.

    A retired model that was approved once can be activated again (rollback).
    """
    _require_approver(actor)
    model = _locked(model)
    if model.state == ModelState.ACTIVE:
        return model
    if model.approved_at is None or model.state not in (ModelState.APPROVED, ModelState.RETIRED):
        raise Refused(f"{model} is not approved.", field="state")
    if not reason.strip():
        raise InvalidInput("An activation needs a reason.", field="reason")
    _load_checked(model.manifest_path(), model.onnx_path(), model.sha256)
    now = timezone.now()
    previous = list(
        InspectionModel.objects.select_for_update().filter(name=model.name, state=ModelState.ACTIVE)
    )
    for old in previous:
        _transition(
            old, actor, f"retired: {model} activated", state=ModelState.RETIRED, retired_at=now
        )
    _transition(
        model, actor, f"activated: {reason.strip()}", state=ModelState.ACTIVE, activated_at=now
    )
    cameras = InspectionStation.objects.filter(model__in=previous) if previous else []
    for camera in cameras:
        camera.model = model
        camera._history_user = actor
        camera._change_reason = f"runs {model} (activated)"
        camera.save(update_fields=["model"])
    return model


@transaction.atomic
def model_retire(*, model: InspectionModel, actor: Actor, reason: str) -> InspectionModel:
    """Retire a model. An active model that cameras still run cannot be retired: activate
    its replacement instead (which retires it)."""
    _require_approver(actor)
    model = _locked(model)
    if model.state == ModelState.RETIRED:
        return model
    if model.state == ModelState.ACTIVE and model.stations.exists():
        raise Refused(
            f"{model} runs on {model.stations.count()} camera(s); activate its replacement.",
            field="state",
        )
    if not reason.strip():
        raise InvalidInput("A retirement needs a reason.", field="reason")
    return _transition(
        model,
        actor,
        f"retired: {reason.strip()}",
        state=ModelState.RETIRED,
        retired_at=timezone.now(),
    )


@transaction.atomic
def camera_models_set(
    *,
    camera: InspectionStation,
    actor: Actor,
    model: InspectionModel | None = None,
    shadow_model: InspectionModel | None = None,
    reason: str,
) -> InspectionStation:
    """Choose the active model a camera runs and, optionally, a candidate in shadow mode."""
    _require_approver(actor)
    if model is not None and model.state != ModelState.ACTIVE:
        raise Refused(f"{model} is not active.", field="model")
    if shadow_model is not None and shadow_model.state not in (
        ModelState.VALIDATED,
        ModelState.APPROVED,
    ):
        raise Refused(f"{shadow_model} must be validated or approved to shadow.", field="shadow")
    camera = InspectionStation.objects.select_for_update().get(pk=camera.pk)
    if model is not None:
        camera.model = model
    camera.shadow_model = shadow_model
    camera._history_user = actor
    camera._change_reason = reason[:100]
    camera.save()
    return camera


# --- results from the vision workers --------------------------------------------------------


def _b64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("Not valid base64.", field=field) from exc


def _image_check(raw: bytes, *, sha256: str, field: str, shape: tuple[int, int] | None) -> tuple:
    """Decode an evidence PNG and check it: its sha256, 8-bit single channel, the size."""
    if len(raw) > settings.QMS_VISION_MAX_IMAGE_BYTES:
        raise InvalidInput(
            f"Image of {len(raw)} bytes is over the {settings.QMS_VISION_MAX_IMAGE_BYTES}-byte "
            "limit.",
            field=field,
            code="too_large",
        )
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise InvalidInput(
            f"Image checksum mismatch: sha256 {digest[:12]}… but the message says {sha256[:12]}….",
            field=field,
            code="checksum_mismatch",
        )
    if not raw:
        raise InvalidInput("Empty image.", field=field, code="bad_image")
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InvalidInput(
            "The image does not decode (PNG expected).", field=field, code="bad_image"
        )
    if image.dtype != np.uint8 or image.ndim != 2:
        depth = f"{image.dtype}, {image.shape[2] if image.ndim == 3 else 1} channel(s)"
        raise InvalidInput(
            f"Image must be 8-bit grayscale; got {depth}.", field=field, code="bad_image"
        )
    if image.size == 0:
        raise InvalidInput("Empty image.", field=field, code="bad_image")
    if shape is not None and image.shape != shape:
        raise InvalidInput(
            f"Image is {image.shape[1]}x{image.shape[0]} px; expected {shape[1]}x{shape[0]}.",
            field=field,
            code="bad_image",
        )
    return raw, image.shape


def _evidence(raw: bytes, sha256: str, kind: str, shape: tuple[int, int]) -> Evidence:
    found = Evidence.objects.filter(sha256=sha256).first()
    if found is not None:
        return found
    evidence = Evidence(
        sha256=sha256, kind=kind, width_px=shape[1], height_px=shape[0], size_bytes=len(raw)
    )
    evidence.image.save(f"{sha256[:2]}/{sha256}.png", ContentFile(raw), save=False)
    try:
        with transaction.atomic():
            evidence.save()
    except IntegrityError:  # stored by another worker a moment ago
        evidence.image.storage.delete(evidence.image.name)
        return Evidence.objects.get(sha256=sha256)
    return evidence


def camera_get(*, station, camera: str) -> InspectionStation:
    found = (
        InspectionStation.objects.select_related("model", "shadow_model", "station__line__site")
        .filter(station=station, camera=camera)
        .first()
    )
    if found is None:
        raise NotFound(f"Station {station} has no camera {camera!r}.", field="payload.camera")
    return found


def _model_of(camera: InspectionStation, spec: dict) -> InspectionModel:
    name, version, sha = spec["name"], spec["version"], spec["sha256"]
    model = InspectionModel.objects.filter(name=name, version=version).first()
    if model is None:
        raise NotFound(
            f"Unknown model {name} {version}: register it before results name it.",
            field="payload.model.version",
            code="unknown_model",
        )
    if model.sha256 != sha:
        raise InvalidInput(
            f"Model {name} {version} has sha256 {model.sha256[:12]}…, the result names "
            f"{sha[:12]}…: the worker runs a file that is not the registered one.",
            field="payload.model.sha256",
            code="checksum_mismatch",
        )
    # A retired model may still report frames acquired before it was replaced; a draft never
    # ran on a line.
    if model.state == ModelState.DRAFT:
        raise Refused(f"{model} is a draft.", field="payload.model.version")
    threshold_set = spec.get("threshold_set")
    if threshold_set and threshold_set != model.threshold_set:
        raise InvalidInput(
            f"Threshold set {threshold_set} is not the registered {model.threshold_set} of "
            f"{model}.",
            field="payload.model.threshold_set",
            code="unknown_threshold_set",
        )
    return model


def _defect_span_m(d: dict, pitch_um: float) -> tuple[float, float]:
    """Coil metres a defect covers: its bbox height along the machine direction, centred on
    its position (at least one scan line)."""
    y0, y1 = d["bbox_px"][1], d["bbox_px"][3]
    half = max(y1 - y0, 1) * pitch_um * 1e-6 / 2
    return max(d["md_m"] - half, 0.0), d["md_m"] + half


def _check_payload(camera: InspectionStation, payload: dict) -> None:
    start, end = payload["coil_start_m"], payload["coil_end_m"]
    if not end > start:
        raise InvalidInput(
            f"coil_end_m {end} must be greater than coil_start_m {start}.",
            field="payload.coil_end_m",
        )
    width = payload.get("width_px", camera.frame_width_px)
    height = payload.get("height_px", camera.frame_height_px)
    for i, d in enumerate(payload["defects"]):
        x0, y0, x1, y1 = d["bbox_px"]
        if not (x0 < x1 <= width and y0 < y1 <= height):
            raise InvalidInput(
                f"Box {d['bbox_px']} is not inside the {width}x{height} frame.",
                field=f"payload.defects[{i}].bbox_px",
            )
        if not (start - MD_TOLERANCE_M <= d["md_m"] <= end + MD_TOLERANCE_M):
            raise InvalidInput(
                f"Defect at {d['md_m']} m is outside the frame's [{start}, {end}) m.",
                field=f"payload.defects[{i}].md_m",
            )
        for key in ("confidence", "md_m", "cd_mm"):
            if not math.isfinite(d[key]):
                raise InvalidInput("Not a finite number.", field=f"payload.defects[{i}].{key}")


@transaction.atomic
def inspection_record(
    *,
    camera: InspectionStation,
    coil: Unit,
    payload: dict,
    message_id: str = "",
) -> InspectionResult:
    """Store one frame's result from a vision worker: the result, its defects with their
    evidence crops, the full frame by the camera's retention, a shadow disagreement, and the
    coil flags its decisions raise (mapped to cells at once when cells already consumed
    those metres).

    Everything is checked before anything is written: an unknown model version, a checksum
    that does not match, an evidence image that does not decode or has the wrong size or
    depth refuse the whole message (the ingest dead-letters it).
    """
    if coil.kind not in METRED_KINDS:
        raise InvalidInput(
            f"{coil.serial} is a {coil.get_kind_display()}, not a coil.", field="unit"
        )
    _check_payload(camera, payload)
    verdict = payload["verdict"]
    model = _model_of(camera, payload["model"])
    size = model.manifest.get("input", {}).get("shape", [None, 1, 128, 128])[-2:]
    crop_shape = (int(size[0]), int(size[1]))
    crops = []
    for i, d in enumerate(payload["defects"]):
        if "crop_png_b64" in d:
            field = f"payload.defects[{i}].crop_png_b64"
            raw = _b64(d["crop_png_b64"], field)
            crops.append(_image_check(raw, sha256=d["crop_sha256"], field=field, shape=crop_shape))
        else:
            crops.append(None)
    frame = None
    if "frame_png_b64" in payload:
        field = "payload.frame_png_b64"
        raw = _b64(payload["frame_png_b64"], field)
        height = payload.get("height_px", camera.frame_height_px)
        width = payload.get("width_px", camera.frame_width_px)
        frame = _image_check(
            raw, sha256=payload["frame_sha256"], field=field, shape=(height, width)
        )

    acquired = datetime.fromisoformat(payload["acquired_at"])
    if acquired > timezone.now() + CLOCK_SKEW:
        raise InvalidInput(
            f"Frame acquired at {payload['acquired_at']}, in the future: check the camera clock.",
            field="payload.acquired_at",
        )
    stop = payload.get("stop")
    result = InspectionResult.objects.create(
        camera=camera,
        coil=coil,
        frame_id=payload["frame_id"],
        coil_start_m=payload["coil_start_m"],
        coil_end_m=payload["coil_end_m"],
        verdict=verdict,
        uninspected_reason=payload.get("uninspected_reason", ""),
        detail=payload.get("detail", ""),
        model=model,
        model_version=model.version,
        threshold_set=payload["model"].get("threshold_set") or model.threshold_set,
        duration_ms=payload.get("duration_ms"),
        defect_count=len(payload["defects"]),
        stopped=stop is not None,
        stop_reason=(stop or {}).get("reason", "")[:300],
        frame_image=_evidence(frame[0], payload["frame_sha256"], Evidence.Kind.FRAME, frame[1])
        if frame
        else None,
        acquired_at=acquired,
        source_message_id=message_id[:128],
    )
    defects = []
    for d, crop in zip(payload["defects"], crops, strict=True):
        decision = d["decision"]
        defects.append(
            Defect(
                result=result,
                cls=d["class"],
                confidence=d["confidence"],
                probabilities=d["probabilities"],
                x0_px=d["bbox_px"][0],
                y0_px=d["bbox_px"][1],
                x1_px=d["bbox_px"][2],
                y1_px=d["bbox_px"][3],
                area_px=d["area_px"],
                area_um2=d.get("area_um2"),
                equivalent_diameter_um=d.get("equivalent_diameter_um"),
                length_um=d.get("length_um"),
                md_m=d["md_m"],
                cd_mm=d["cd_mm"],
                decision=decision,
                rule=d.get("rule", "")[:200],
                crop=_evidence(crop[0], d["crop_sha256"], Evidence.Kind.CROP, crop[1])
                if crop
                else None,
                review_state=ReviewState.PENDING
                if decision == Decision.REVIEW
                else ReviewState.NONE,
            )
        )
    Defect.objects.bulk_create(defects)
    shadow = payload.get("shadow")
    if shadow is not None:
        active_classes = sorted({d.cls for d in defects if d.decision != Decision.IGNORE})
        shadow_classes = sorted(set(shadow.get("classes", [])))
        if shadow["verdict"] != verdict or shadow_classes != active_classes:
            ShadowDisagreement.objects.create(
                result=result,
                shadow_version=shadow["version"],
                shadow_verdict=shadow["verdict"],
                shadow_classes=shadow_classes,
                active_classes=active_classes,
            )

    now = timezone.now()
    pitch = payload.get("pixel_pitch_um", camera.pixel_pitch_um)
    flags = []
    if verdict == Verdict.UNINSPECTED:
        reason = payload["uninspected_reason"]
        flags.append(
            CoilFlag(
                coil=coil,
                start_m=result.coil_start_m,
                end_m=result.coil_end_m,
                kind=FlagKind.UNINSPECTED,
                action=FlagAction.HOLD,
                cls=reason,
                reason=f"Uninspected ({reason.replace('_', ' ')}) on {camera}: "
                f"{payload.get('detail', '')}"[:300],
                result=result,
                created_at=now,
            )
        )
    for defect, d in zip(defects, payload["defects"], strict=True):
        if defect.decision in _HOLD_DECISIONS:
            action = FlagAction.HOLD
        elif defect.decision == Decision.REVIEW:
            action = FlagAction.REVIEW
        else:
            continue
        start_m, end_m = _defect_span_m(d, pitch)
        size = defect.length_um or defect.equivalent_diameter_um
        flags.append(
            CoilFlag(
                coil=coil,
                start_m=start_m,
                end_m=end_m,
                kind=FlagKind.DEFECT,
                action=action,
                cls=defect.cls,
                reason=(
                    f"{defect.cls} ({defect.confidence:.2f}"
                    + (f", {size:.0f} µm" if size else "")
                    + f") at {defect.md_m:.3f} m / {defect.cd_mm:.1f} mm on {camera}: "
                    + (defect.rule or defect.get_decision_display())
                )[:300],
                result=result,
                defect=defect,
                created_at=now,
            )
        )
    CoilFlag.objects.bulk_create(flags)
    hold_flags = [f for f in flags if f.action == FlagAction.HOLD]
    if hold_flags:
        _flags_map_forward(hold_flags)
    # Per-class defect counts of each 10 m window the frame completes feed SPC (c charts).
    spc_feed.window_counts_record(result=result)
    return result


def _cells_publish(pairs: list[tuple[int, int]]) -> list[CellVisionFlag]:
    """Write the (flag, cell) pairs not written yet and tell compliance."""
    if not pairs:
        return []
    now = timezone.now()
    existing = set(
        CellVisionFlag.objects.filter(
            flag_id__in={f for f, _ in pairs}, unit_id__in={u for _, u in pairs}
        ).values_list("flag_id", "unit_id")
    )
    new = [
        CellVisionFlag(flag_id=f, unit_id=u, created_at=now)
        for f, u in sorted(set(pairs))
        if (f, u) not in existing
    ]
    CellVisionFlag.objects.bulk_create(new, ignore_conflicts=True)
    hold = set(
        CoilFlag.objects.filter(
            pk__in={c.flag_id for c in new}, action=FlagAction.HOLD
        ).values_list("pk", flat=True)
    )
    held = [c for c in new if c.flag_id in hold]
    if held:
        events.publish(
            VisionFlagged(
                flag_ids=tuple(sorted({c.flag_id for c in held})),
                unit_ids=tuple(sorted({c.unit_id for c in held})),
            )
        )
    return new


def _flags_map_forward(flags: Sequence[CoilFlag]) -> list[CellVisionFlag]:
    """Cells that consumed the flagged metres already (forward trace of each range)."""
    pairs = []
    for flag in flags:
        for row in iter_trace_forward(flag.coil, start_m=flag.start_m, end_m=flag.end_m):
            if row.kind == UnitKind.CELL:
                pairs.append((flag.pk, row.unit_id))
    return _cells_publish(pairs)


def _overlapping_flags(coil_ids: set[int]) -> dict[int, list[CoilFlag]]:
    by_coil: dict[int, list[CoilFlag]] = {}
    for flag in CoilFlag.objects.filter(coil_id__in=coil_ids).exclude(action=FlagAction.NONE):
        by_coil.setdefault(flag.coil_id, []).append(flag)
    return by_coil


@transaction.atomic
def flags_for_links(*, link_ids: Sequence[int]) -> list[CellVisionFlag]:
    """Cells that have just consumed coil metres: flag those whose metres (on the coil
    itself or, through slitting, on its mother coil) overlap a vision flag. Safe to run
    twice."""
    links = list(
        Link.objects.filter(pk__in=list(link_ids), start_m__isnull=False, kind=LinkKind.CONSUMED)
        .filter(target__kind=UnitKind.CELL)
        .values_list("source_id", "target_id")
    )
    if not links:
        return []
    sources = {s for s, _ in links}
    # The mother coils of slit coils (one slitting level, as the plant cuts them).
    mothers = set(
        Link.objects.filter(target_id__in=sources, kind=LinkKind.SLIT).values_list(
            "source_id", flat=True
        )
    )
    by_coil = _overlapping_flags(sources | mothers)
    if not by_coil:
        return []
    pairs = []
    for cell_id in sorted({t for _, t in links}):
        cell = Unit(pk=cell_id)
        for row in iter_trace_backward(cell):
            for flag in by_coil.get(row.unit_id, ()):
                if row.start_m is None or (row.start_m < flag.end_m and flag.start_m < row.end_m):
                    pairs.append((flag.pk, cell_id))
    return _cells_publish(pairs)


# --- review -------------------------------------------------------------------------------------


@transaction.atomic
def defect_review(
    *,
    defect: Defect,
    verdict: str,
    actor: Actor,
    label: str | None = None,
    comment: str = "",
) -> DefectReview:
    """A reviewer's verdict on a defect from the review queue, kept as a training label.

    Confirm or reclassify: the defect's metres become a hold (cells made from them are held);
    false call: the flag is closed, nothing is held. A defect is reviewed once; a later
    correction is another review (the label of the latest review counts).
    """
    if verdict not in ReviewVerdict.values:
        raise InvalidInput(f"Unknown verdict {verdict!r}.", field="verdict")
    defect = Defect.objects.select_for_update().select_related("result__coil").get(pk=defect.pk)
    if verdict == ReviewVerdict.RECLASSIFY:
        if label not in DEFECT_CLASSES:
            raise InvalidInput(
                f"Reclassify needs the true class, one of {', '.join(DEFECT_CLASSES)}.",
                field="label",
            )
        if label == defect.cls:
            raise InvalidInput(f"The defect is a {label} already: confirm it.", field="label")
    elif label not in (None, "") and label != (defect.cls if verdict == "confirm" else "ok"):
        raise InvalidInput("A label is given only with reclassify.", field="label")
    final_label = {
        ReviewVerdict.CONFIRM: defect.cls,
        ReviewVerdict.RECLASSIFY: label,
        ReviewVerdict.FALSE_CALL: "ok",
    }[verdict]
    review = DefectReview.objects.create(
        defect=defect,
        verdict=verdict,
        label=final_label,
        comment=comment.strip()[:500],
        reviewed_by=actor,
        reviewed_at=timezone.now(),
    )
    defect.review_state = {
        ReviewVerdict.CONFIRM: ReviewState.CONFIRMED,
        ReviewVerdict.RECLASSIFY: ReviewState.RECLASSIFIED,
        ReviewVerdict.FALSE_CALL: ReviewState.FALSE_CALL,
    }[verdict]
    defect.save(update_fields=["review_state"])
    flags = list(CoilFlag.objects.select_for_update().filter(defect=defect))
    to_hold = []
    for flag in flags:
        new_action = FlagAction.NONE if verdict == ReviewVerdict.FALSE_CALL else FlagAction.HOLD
        if flag.action == new_action:
            continue
        flag.action = new_action
        flag.reason = (f"{flag.reason} — reviewed: {review.get_verdict_display()}")[:300]
        flag.acknowledged_by = actor
        flag.acknowledged_at = review.reviewed_at
        flag._history_user = actor
        flag._change_reason = f"review: {verdict}"
        flag.save()
        if new_action == FlagAction.HOLD:
            to_hold.append(flag)
    if not flags and verdict != ReviewVerdict.FALSE_CALL:
        # A logged or ignored defect a person found real: its metres become a hold.
        start_m, end_m = _defect_span_m(
            {
                "bbox_px": [defect.x0_px, defect.y0_px, defect.x1_px, defect.y1_px],
                "md_m": defect.md_m,
            },
            defect.result.camera.pixel_pitch_um,
        )
        flag = CoilFlag(
            coil=defect.result.coil,
            start_m=start_m,
            end_m=end_m,
            kind=FlagKind.DEFECT,
            action=FlagAction.HOLD,
            cls=final_label,
            reason=f"{final_label} at {defect.md_m:.3f} m confirmed by review",
            result=defect.result,
            defect=defect,
            created_at=review.reviewed_at,
        )
        flag._history_user = actor
        flag.save()
        to_hold.append(flag)
    if to_hold:
        _flags_map_forward(to_hold)
    return review


@transaction.atomic
def flag_acknowledge(*, flag: CoilFlag, actor: Actor, comment: str = "") -> CoilFlag:
    """A person has seen a flag (an uninspected stretch, say). The hold, if any, stays:
    it is released through compliance."""
    flag = CoilFlag.objects.select_for_update().get(pk=flag.pk)
    if flag.acknowledged_at is not None:
        return flag
    flag.acknowledged_by = actor
    flag.acknowledged_at = timezone.now()
    flag._history_user = actor
    flag._change_reason = f"acknowledged: {comment}"[:100]
    flag.save()
    return flag
