"""The ``inspection`` envelope kind: what a vision worker reports for one inspected frame.

A vision worker (``manage.py vision_worker``) inspects every frame of a coil and sends one
envelope per frame through the ingest path (MQTT ``qms/<site>/<line>/<station>/inspection``,
or in-process). ``unit`` is the serial of the coil under the camera; the frame covers the
machine-direction range ``[coil_start_m, coil_end_m)`` of that coil, measured by the encoder.

``verdict`` is ``ok`` (inspected, nothing found above the logging band), ``defect`` (one or
more defects, each with its decision) or ``uninspected`` (the fail-safe quarantined the range:
frame gap, encoder mismatch, backlog, lost heartbeat, model checksum failure, input drift).
An uninspected metre counts as nonconforming.

Evidence crops travel as base64 PNG with their sha256; the handler decodes and checks each
one and refuses the whole message (nothing written) if any does not match.
"""

from __future__ import annotations

from inspection.synthetic import CLASSES

#: Classes a defect may carry (``ok`` is the verdict of a clean frame, never a defect class).
DEFECT_CLASSES = tuple(c for c in CLASSES if c != "ok")
DECISIONS = ("ignore", "review", "quarantine", "stop")
VERDICTS = ("ok", "defect", "uninspected")
UNINSPECTED_REASONS = (
    "frame_gap",
    "encoder_mismatch",
    "backlog",
    "heartbeat_lost",
    "model_checksum",
    "input_drift",
    "bad_frame",
)
#: Largest evidence crop accepted, encoded (a 128 x 128 8-bit PNG is 5-20 kB).
MAX_CROP_B64_CHARS = 64 * 1024
#: Largest full frame kept as evidence, encoded (frames are kept only by retention setting).
MAX_FRAME_B64_CHARS = 8 * 1024 * 1024
MAX_DEFECTS_PER_FRAME = 200

_number = {"type": "number"}
_nonneg = {"type": "number", "minimum": 0}
_sha256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}

DEFECT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "class",
        "confidence",
        "probabilities",
        "bbox_px",
        "area_px",
        "md_m",
        "cd_mm",
        "decision",
    ],
    "properties": {
        "class": {"enum": list(DEFECT_CLASSES)},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "probabilities": {
            "type": "object",
            "additionalProperties": False,
            "required": list(CLASSES),
            "properties": {c: {"type": "number", "minimum": 0, "maximum": 1} for c in CLASSES},
        },
        "bbox_px": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
            "minItems": 4,
            "maxItems": 4,
            "description": "x0, y0, x1, y1 in frame pixels (x across the web, y along it).",
        },
        "area_px": {"type": "integer", "minimum": 0},
        "area_um2": _nonneg,
        "equivalent_diameter_um": _nonneg,
        "length_um": _nonneg,
        "md_m": {**_nonneg, "description": "Coil machine-direction position (metres)."},
        "cd_mm": {**_number, "description": "Cross-direction position from the lane edge."},
        "decision": {"enum": list(DECISIONS)},
        "rule": {"type": "string", "maxLength": 200},
        "crop_png_b64": {"type": "string", "maxLength": MAX_CROP_B64_CHARS},
        "crop_sha256": _sha256,
    },
    "dependentRequired": {"crop_png_b64": ["crop_sha256"]},
}

PAYLOAD_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "frame_id",
        "camera",
        "coil_start_m",
        "coil_end_m",
        "acquired_at",
        "model",
        "verdict",
        "defects",
    ],
    "properties": {
        "frame_id": {"type": "integer", "minimum": 0},
        "camera": {"type": "string", "minLength": 1, "maxLength": 64},
        "encoder_start": {"type": "integer", "minimum": 0},
        "encoder_end": {"type": "integer", "minimum": 0},
        "coil_start_m": _nonneg,
        "coil_end_m": _nonneg,
        "lane_width_mm": {"type": "number", "exclusiveMinimum": 0},
        "width_px": {"type": "integer", "minimum": 1},
        "height_px": {"type": "integer", "minimum": 1},
        "pixel_pitch_um": {"type": "number", "exclusiveMinimum": 0},
        "acquired_at": {"type": "string", "format": "date-time"},
        "model": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "version", "sha256"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 64},
                "version": {"type": "string", "minLength": 1, "maxLength": 32},
                "sha256": _sha256,
                "threshold_set": {"type": "string", "maxLength": 64},
            },
        },
        "duration_ms": _nonneg,
        "verdict": {"enum": list(VERDICTS)},
        "uninspected_reason": {"enum": list(UNINSPECTED_REASONS)},
        "detail": {"type": "string", "maxLength": 500},
        "stop": {
            "type": "object",
            "additionalProperties": False,
            "required": ["reason"],
            "properties": {
                "reason": {"type": "string", "minLength": 1, "maxLength": 300},
                "rule": {"type": "string", "maxLength": 200},
                "suspect_roller": {"type": "string", "maxLength": 64},
                "sent_at": {"type": "string", "format": "date-time"},
            },
        },
        "defects": {"type": "array", "maxItems": MAX_DEFECTS_PER_FRAME, "items": DEFECT_SCHEMA},
        "frame_png_b64": {"type": "string", "maxLength": MAX_FRAME_B64_CHARS},
        "frame_sha256": _sha256,
        "shadow": {
            "type": "object",
            "description": "A candidate model's verdict on the same frame (shadow mode).",
            "additionalProperties": False,
            "required": ["version", "verdict"],
            "properties": {
                "version": {"type": "string", "minLength": 1, "maxLength": 32},
                "verdict": {"enum": list(VERDICTS)},
                "classes": {"type": "array", "items": {"enum": list(DEFECT_CLASSES)}},
            },
        },
    },
    "allOf": [
        {
            "if": {"properties": {"verdict": {"const": "uninspected"}}},
            "then": {"required": ["uninspected_reason"]},
        },
        {
            "if": {"properties": {"verdict": {"const": "defect"}}},
            "then": {"properties": {"defects": {"minItems": 1}}},
        },
        {"dependentRequired": {"frame_png_b64": ["frame_sha256"]}},
    ],
}
