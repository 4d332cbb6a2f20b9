"""Payload schemas of the envelope kinds formation owns: ``formation_step``, ``aging_ocv``
and ``tray_load`` (JSON Schema 2020-12, registered with the handlers in ``apps.py``).

``formation_step``: one or more executed steps of one cell's formation run, with their
samples. The envelope's ``unit`` is the cell, ``station`` the formation station and
``equipment`` the cabinet or cycler. ``run.id`` is the cycler's id of the run: the steps of
one run share it (a live cycler sends each step as it ends; a file import sends a cell's
whole run in one message). Samples come as JSON arrays (``arrays``) or as one packed blob
(``curve_b64``: :func:`formation.features.curve_pack`, base64, with its SHA-256); ``time_s``
counts from the step's start, ``current_a`` is signed as ``sign_convention`` says and is
stored + when charging. Step results the payload omits are derived from the samples.

``aging_ocv``: one or more readings of an OCV/ACIR scanner on an aging rack; each reading
names its cell (``unit``, or the envelope's ``unit``).

``tray_load``: the tray loader's record of which cell went into which tray position (the
envelope's ``units``, position by position in ``positions``). Runs are checked against it.

``cycler_status``: the live state of one or more channels of one cabinet (the envelope's
``equipment``) at ``reported_at``: per channel its state, step, voltage, current (signed as
``sign_convention`` says, stored + when charging), temperature, capacity so far, the cell on
it (``unit``, one of the envelope's units) and its active alarms. Ranges and units are
checked by :func:`formation.services.channel_statuses_record`, which names the field.
"""

from __future__ import annotations

from .choices import STEP_TYPE_ALIASES, SignConvention, SourceFormat, StepType
from .models import AlarmSeverity, ChannelState

#: Samples one step may carry (a 14 h CC charge sampled every second is 50,400).
MAX_SAMPLES = 500_000
#: Steps one message may carry (a formation and grading protocol has 10-40).
MAX_STEPS = 200
#: Largest packed curve accepted, base64 (a whole cell packs into about 60 kB).
MAX_CURVE_B64_CHARS = 16 * 1024 * 1024
MAX_READINGS = 10_000
#: Channels one cycler_status message may carry (a cabinet of 8 trays of 64 cells is 512).
MAX_STATUS_CHANNELS = 2048
#: Alarms one channel may report at once.
MAX_CHANNEL_ALARMS = 32

ARRAY_NAMES = ("time_s", "voltage_v", "current_a", "capacity_ah", "temperature_c")
REQUIRED_ARRAYS = ("time_s", "voltage_v", "current_a", "capacity_ah")

_number = {"type": "number"}
_nonneg = {"type": "number", "minimum": 0}
_nullable_number = {"type": ["number", "null"]}
_when = {"type": "string", "format": "date-time"}
_sha256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_array = {"type": "array", "minItems": 1, "maxItems": MAX_SAMPLES, "items": _number}

RUN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 64},
        "channel": {"type": "string", "maxLength": 64},
        "tray": {"type": "string", "maxLength": 32},
        "position": {"type": "string", "maxLength": 16},
        "protocol": {"type": "string", "maxLength": 64},
        "started_at": _when,
        "source_format": {"enum": list(SourceFormat.values)},
        "source_name": {"type": "string", "maxLength": 255},
        "source_sha256": _sha256,
        "source_sign_convention": {"enum": list(SignConvention.values)},
    },
}

STEP_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sequence", "type", "started_at"],
    "properties": {
        "sequence": {"type": "integer", "minimum": 1},
        "step_index": {"type": ["integer", "null"]},
        "cycle_index": {"type": ["integer", "null"]},
        "type": {"enum": [*StepType.values, *STEP_TYPE_ALIASES]},
        "source_type": {"type": "string", "maxLength": 32},
        "name": {"type": "string", "maxLength": 64},
        "started_at": _when,
        "ended_at": _when,
        "duration_s": _nonneg,
        "capacity_ah": _nonneg,
        "energy_wh": _nonneg,
        "start_voltage_v": _number,
        "end_voltage_v": _number,
        "end_current_a": _number,
        "cv_time_s": {"type": ["number", "null"], "minimum": 0},
        "tail_current_a": _nullable_number,
        "temperature_start_c": _nullable_number,
        "temperature_max_c": _nullable_number,
        "end_reason": {"type": "string", "maxLength": 32},
        "arrays": {
            "type": "object",
            "additionalProperties": False,
            "required": list(REQUIRED_ARRAYS),
            "properties": dict.fromkeys(ARRAY_NAMES, _array),
        },
        "curve_b64": {"type": "string", "minLength": 1, "maxLength": MAX_CURVE_B64_CHARS},
        "curve_sha256": _sha256,
    },
    "oneOf": [
        {"required": ["arrays"], "not": {"required": ["curve_b64"]}},
        {"required": ["curve_b64", "curve_sha256"], "not": {"required": ["arrays"]}},
    ],
}

FORMATION_STEP_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["run", "sign_convention", "steps"],
    "properties": {
        "run": RUN_SCHEMA,
        "sign_convention": {
            "enum": [SignConvention.CHARGE_POSITIVE.value, SignConvention.DISCHARGE_POSITIVE.value],
            "description": "How current_a is signed in this payload.",
        },
        "steps": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS, "items": STEP_SCHEMA},
    },
}

AGING_OCV_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["rack", "readings"],
    "properties": {
        "rack": {"type": "string", "minLength": 1, "maxLength": 32},
        "readings": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_READINGS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["measured_at", "ocv_mv"],
                "properties": {
                    "unit": {"type": "string", "minLength": 1, "maxLength": 200},
                    "rack_position": {"type": "string", "maxLength": 16},
                    "measured_at": _when,
                    "ocv_mv": {"type": "number", "minimum": 0, "maximum": 6000},
                    "acir_mohm": {"type": ["number", "null"], "minimum": 0, "maximum": 100_000},
                    "temperature_c": {
                        "type": ["number", "null"],
                        "minimum": -40,
                        "maximum": 150,
                    },
                },
            },
        },
    },
}

TRAY_LOAD_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["tray", "positions"],
    "properties": {
        "tray": {"type": "string", "minLength": 1, "maxLength": 32},
        "loaded_at": _when,
        "positions": {
            "type": "array",
            "minItems": 1,
            "maxItems": 10_000,
            "items": {"type": "string", "minLength": 1, "maxLength": 16},
            "description": "The tray position of each of the envelope's units, in order.",
        },
    },
}

CHANNEL_STATUS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["channel", "state", "voltage_v", "current_a"],
    "properties": {
        "channel": {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": 64},
                {"type": "integer", "minimum": 0},
            ],
            "description": "The channel as the cabinet names it ('b1/p03') or its number.",
        },
        "tray": {"type": "string", "maxLength": 32},
        "position": {"type": "string", "maxLength": 16},
        "unit": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "Serial of the cell on the channel; left out when none is loaded.",
        },
        "state": {"enum": list(ChannelState.values)},
        "step_index": {"type": ["integer", "null"], "minimum": 0},
        "step_elapsed_s": {"type": ["number", "null"], "minimum": 0},
        "voltage_v": _number,
        "current_a": _number,
        "temperature_c": _nullable_number,
        "capacity_ah": _nullable_number,
        "alarms": {
            "type": "array",
            "maxItems": MAX_CHANNEL_ALARMS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["code", "severity"],
                "properties": {
                    "code": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 32,
                        "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:/-]*$",
                    },
                    "severity": {"enum": list(AlarmSeverity.values)},
                    "text": {"type": "string", "maxLength": 200},
                },
            },
            "description": "The alarms active on the channel now (empty: none).",
        },
    },
}

CYCLER_STATUS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["sign_convention", "channels"],
    "properties": {
        "reported_at": {
            **_when,
            "description": "When the cabinet took the status (default: the envelope's sent_at).",
        },
        "sign_convention": {
            "enum": [SignConvention.CHARGE_POSITIVE.value, SignConvention.DISCHARGE_POSITIVE.value],
            "description": "How current_a is signed in this payload.",
        },
        "channels": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_STATUS_CHANNELS,
            "items": CHANNEL_STATUS_SCHEMA,
        },
    },
}
