"""Inspection envelopes as a vision worker sends them, for the tests: a frame of the cathode
coater's camera over known coil metres, with defects carrying real evidence crops."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta

import cv2
import numpy as np
from django.utils import timezone

from inspection.synthetic import CLASSES, RenderParams, patch
from qms.ingest.envelope import build
from qms.ingest.services import RawMessage

FRAME_M = 1024 * 20e-6  # 1,024 scan lines at 20 µm


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def crop(cls: str = "particle", seed: int = 5) -> np.ndarray:
    return patch(cls, "coating", np.random.default_rng(seed), RenderParams()).image


def defect(
    *,
    md_m: float,
    cls: str = "particle",
    decision: str = "quarantine",
    confidence: float = 0.97,
    cd_mm: float = 40.0,
    image: np.ndarray | bytes | None = None,
    sha256: str | None = None,
    bbox_px: list[int] | None = None,
) -> dict:
    raw = image if isinstance(image, bytes) else png(crop(cls) if image is None else image)
    probs = dict.fromkeys(CLASSES, 0.0)
    probs[cls] = confidence
    probs["ok"] = round(1.0 - confidence, 6)
    return {
        "class": cls,
        "confidence": confidence,
        "probabilities": probs,
        "bbox_px": bbox_px or [2000, 500, 2012, 512],
        "area_px": 110,
        "area_um2": 110 * 400.0,
        "equivalent_diameter_um": 236.6,
        "md_m": md_m,
        "cd_mm": cd_mm,
        "decision": decision,
        "rule": f"{cls} >= 200 µm: quarantine",
        "crop_png_b64": base64.b64encode(raw).decode(),
        "crop_sha256": sha256 or hashlib.sha256(raw).hexdigest(),
    }


def payload(model, *, start_m: float, frame_id: int = 1, defects=(), **extra) -> dict:
    body = {
        "frame_id": frame_id,
        "camera": "cam-c1",
        "encoder_start": round(start_m * 100_000),
        "encoder_end": round((start_m + FRAME_M) * 100_000),
        "coil_start_m": start_m,
        "coil_end_m": round(start_m + FRAME_M, 6),
        "width_px": 4096,
        "height_px": 1024,
        "pixel_pitch_um": 20.0,
        "acquired_at": (timezone.now() - timedelta(seconds=2)).isoformat(),
        "model": {
            "name": model.name,
            "version": model.version,
            "sha256": model.sha256,
            "threshold_set": model.threshold_set,
        },
        "duration_ms": 41.5,
        "verdict": "defect" if defects else "ok",
        "defects": list(defects),
    }
    body.update(extra)
    return body


def envelope(body: dict, *, coil: str, message_id: str, sent_at: datetime | None = None):
    return build(
        kind="inspection",
        site="gf1",
        line="l1-pri",
        station="coat-c",
        payload=body,
        source="VIS-COAT-C cam-c1",
        message_id=message_id,
        sent_at=sent_at or timezone.now(),
        unit=coil,
    )


def raw(doc: dict) -> RawMessage:
    return RawMessage(
        payload=json.dumps(doc).encode(), transport="vision", origin="vision_worker coat-c"
    )
