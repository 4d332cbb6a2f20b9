"""The demo plant's vision: a line-scan camera over each coater (cathode and anode, both
lines) and the committed vision model, registered, approved by the demo quality engineer
and active. Idempotent like the rest of the demo seed."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model

from inspection import services
from inspection.choices import FrameRetention, ModelState, Substrate
from inspection.models import InspectionModel, InspectionStation
from inspection.vision.model import default_model_paths
from qms.models import Station

#: One 16k-class line-scan camera per coater at 20 µm/px sees 4,096 px = 81.92 mm of the
#: web; a plant puts several across the coating width (``lane_offset_mm``). The demo shows
#: the first lane of each coater.
CAMERA = "cam-1"
ROLLERS = [
    # Rolls the coated web touches before the camera: a defect every circumference at the
    # same cross-web position names the roll (a damaged or dirty surface).
    {"name": "slot-die backing roll (Ø 300 mm)", "circumference_mm": 942.48},
    {"name": "dryer idler roll 7 (Ø 200 mm)", "circumference_mm": 628.32},
    {"name": "pull roll (Ø 250 mm)", "circumference_mm": 785.40},
]
APPROVER = "quality"


def model_seed(result) -> InspectionModel | None:
    """The committed model, registered, approved and active (once)."""
    manifest, onnx, golden = default_model_paths()
    meta = json.loads(manifest.read_text(encoding="utf-8"))
    model = InspectionModel.objects.filter(name=meta["name"], version=meta["version"]).first()
    approver = get_user_model().objects.filter(username=APPROVER).first()
    if model is None:
        model = services.model_register(
            manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=approver
        )
        result.count("vision models")
    reason = "Demo commissioning: model trained in-house on the synthetic set, golden set passed"
    if model.state == ModelState.VALIDATED:
        model = services.model_approve(model=model, actor=approver, reason=reason)
    if (
        model.state == ModelState.APPROVED
        and not InspectionModel.objects.filter(name=model.name, state=ModelState.ACTIVE).exists()
    ):
        model = services.model_activate(model=model, actor=approver, reason=reason)
    return InspectionModel.objects.filter(name=model.name, state=ModelState.ACTIVE).first()


def cameras_seed(result) -> None:
    model = model_seed(result)
    for station in Station.objects.filter(code__in=("coat-c", "coat-a")).select_related("line"):
        if InspectionStation.objects.filter(station=station, camera=CAMERA).exists():
            continue
        camera = InspectionStation(
            station=station,
            camera=CAMERA,
            substrate=Substrate.COATING,
            pixel_pitch_um=20.0,
            frame_width_px=4096,
            frame_height_px=1024,
            lane_width_mm=81.92,
            lane_offset_mm=0.0,
            encoder_counts_per_m=100_000,
            max_gap_m=0.5,
            latency_budget_ms=300,
            heartbeat_timeout_s=2.0,
            rollers=ROLLERS,
            model=model,
            frame_retention=FrameRetention.DEFECTS,
        )
        camera._change_reason = "Demo plant seed"
        camera.save()
        result.count("vision cameras")
