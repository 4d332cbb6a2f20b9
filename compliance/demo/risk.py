"""The demo plant's thermal-risk model: the committed model, registered, approved by the
demo quality engineer and active, so every cell the demo forms and grades is scored and
the riskiest are held before module assembly. Idempotent like the rest of the demo seed."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model

from risk import services
from risk.choices import ModelState
from risk.models import RiskModel
from risk.scoring import default_model_paths

APPROVER = "quality"
REASON = (
    "Demo commissioning: model trained in-house on simulated plant history; checksum, "
    "features and hold-out metrics checked"
)


def model_seed(result) -> RiskModel | None:
    """The committed model, registered, approved and active (once). A plant that already
    runs another version of it keeps that one active."""
    manifest, onnx = default_model_paths()
    meta = json.loads(manifest.read_text(encoding="utf-8"))
    approver = get_user_model().objects.filter(username=APPROVER).first()
    if approver is None:
        return None
    model = RiskModel.objects.filter(name=meta["name"], version=meta["version"]).first()
    if model is None:
        model = services.model_register(manifest_path=manifest, onnx_path=onnx, actor=approver)
        result.count("risk models")
    if model.state == ModelState.VALIDATED:
        model = services.model_approve(model=model, actor=approver, reason=REASON)
    if (
        model.state == ModelState.APPROVED
        and not RiskModel.objects.filter(name=model.name, state=ModelState.ACTIVE).exists()
    ):
        model = services.model_activate(model=model, actor=approver, reason=REASON)
    return RiskModel.objects.filter(name=model.name, state=ModelState.ACTIVE).first()
