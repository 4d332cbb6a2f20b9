"""Ingest handlers of the kinds formation owns: envelope -> :mod:`formation.services`.

Registered in :meth:`formation.apps.FormationConfig.ready` with the payload schemas of
:mod:`formation.schema`:

* ``formation_step``: steps of one cell's formation run with their samples (the envelope's
  ``unit`` is the cell, ``equipment`` the cabinet or cycler);
* ``aging_ocv``: OCV/ACIR readings of cells on an aging rack;
* ``tray_load``: the tray loader's record of which cell sits in which tray position;
* ``cycler_status``: the live state and active alarms of channels of one cabinet (the
  envelope's ``equipment``); the cell on a channel is one of the envelope's units.

``formation_step``, ``aging_ocv`` and ``cycler_status`` also have handlers for a run of
messages: every message is checked as it would be alone (and refused alone, nothing of it
written), the others are written together in bulk. Every refusal names the envelope field
to fix (``payload.steps[0].arrays.time_s``, ``payload.run.position``, ``unit``). A cell the
plant never made is refused with ``unknown_unit``, so the ingest keeps the message and
retries it for a while (the cell may still be on its way through another worker).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from genealogy.choices import UnitKind
from genealogy.models import Unit
from genealogy.serials import normalise_lookup
from qms.exceptions import DomainError, InvalidInput, NotFound
from qms.ingest.envelope import Envelope, EnvelopeError, parse_datetime
from qms.ingest.registry import UNKNOWN_UNIT
from qms.ingest.services import HandlerContext

from . import features as fx
from . import services
from .schema import ARRAY_NAMES, REQUIRED_ARRAYS


def _relabel(exc: DomainError, field: str | None) -> DomainError:
    return type(exc)(exc.message, field=field, code=exc.code)


class _Cells:
    """The cells a batch of messages names, found with one query per 900 serials."""

    CHUNK = 900

    def __init__(self, serials: Iterable[str]) -> None:
        self._lookup: dict[str, str] = {}
        self._bad: dict[str, DomainError] = {}
        for raw in set(serials):
            try:
                self._lookup[raw] = normalise_lookup(raw)
            except DomainError as exc:
                self._bad[raw] = exc
        wanted = sorted({s for s in self._lookup.values() if s})
        self._units: dict[str, list[Unit]] = {}
        for i in range(0, len(wanted), self.CHUNK):
            rows = Unit.objects.filter(serial__in=wanted[i : i + self.CHUNK]).order_by()
            for unit in rows.only("id", "serial", "kind", "line_id", "batch_lot"):
                self._units.setdefault(unit.serial, []).append(unit)

    def cell(self, raw: str, *, field: str) -> Unit:
        """The cell ``raw`` names, or the refusal naming ``field``."""
        if raw in self._bad:
            raise _relabel(self._bad[raw], field)
        serial = self._lookup.get(raw)
        if serial is None:
            try:
                serial = normalise_lookup(raw)
            except DomainError as exc:
                raise _relabel(exc, field) from exc
            self._units.setdefault(serial, list(Unit.objects.filter(serial=serial)))
        found = self._units.get(serial, [])
        cell = next((u for u in found if u.kind == UnitKind.CELL), None)
        if cell is not None:
            return cell
        if found:
            raise InvalidInput(
                f"{serial} is a {found[0].get_kind_display().lower()}, not a cell.", field=field
            )
        raise NotFound(f"Unknown cell {raw!r}.", field=field, code=UNKNOWN_UNIT)


def _one_unit(env: Envelope) -> str:
    if not env.unit:
        raise InvalidInput(
            f"A {env.kind} message is about one cell: give it in 'unit', not 'units'.",
            field="units",
        )
    return env.unit


# --- formation_step ---------------------------------------------------------------------------

_ARRAYS_FIELD = re.compile(r"^steps\[(\d+)\]\.arrays(\.\w+)?$")
#: Service fields that are envelope fields, not payload fields.
_ENVELOPE_FIELDS = frozenset({"unit", "units", "equipment"})


def _payload_field(field: str | None, packed: set[int]) -> str:
    """A service error's field as the envelope field: ``payload.`` before payload paths;
    a step that came packed is named by its ``curve_b64``."""
    if not field:
        return "payload"
    if field in _ENVELOPE_FIELDS:
        return field
    m = _ARRAYS_FIELD.match(field)
    if m and int(m.group(1)) in packed:
        return f"payload.steps[{m.group(1)}].curve_b64"
    return f"payload.{field}"


def _curve_unpacked(step: dict, where: str) -> services.CurveInput:
    """The samples of a step sent as one packed blob (base64), checked against its SHA-256."""
    try:
        blob = base64.b64decode(step["curve_b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"curve_b64 is not base64: {exc}.", field=f"{where}.curve_b64") from exc
    if hashlib.sha256(blob).hexdigest() != step["curve_sha256"]:
        raise InvalidInput(
            "curve_b64 does not match curve_sha256 (checksum mismatch).",
            field=f"{where}.curve_b64",
        )
    try:
        arrays = fx.curve_unpack(blob)
    except ValueError as exc:
        raise InvalidInput(f"curve_b64: {exc}.", field=f"{where}.curve_b64") from exc
    missing = [n for n in REQUIRED_ARRAYS if n not in arrays]
    unknown = sorted(set(arrays) - set(ARRAY_NAMES))
    if missing or unknown:
        what = []
        if missing:
            what.append(f"lacks {', '.join(missing)}")
        if unknown:
            what.append(f"has unknown arrays {', '.join(unknown)}")
        raise InvalidInput(f"curve_b64 {' and '.join(what)}.", field=f"{where}.curve_b64")
    # Packed as the store packs (time float64, the rest float32): kept as it came.
    as_stored = all(
        a.dtype == (np.float64 if name == "time_s" else np.float32) for name, a in arrays.items()
    )
    return services.CurveInput(
        time_s=arrays["time_s"],
        voltage_v=arrays["voltage_v"],
        current_a=arrays["current_a"],
        capacity_ah=arrays["capacity_ah"],
        temperature_c=arrays.get("temperature_c"),
        packed=blob if as_stored else None,
        packed_sha256=step["curve_sha256"] if as_stored else "",
    )


def _step_input(step: dict, i: int) -> services.StepInput:
    where = f"payload.steps[{i}]"
    if "arrays" in step:
        a = step["arrays"]
        curve = services.CurveInput(
            time_s=np.asarray(a["time_s"], dtype=np.float64),
            voltage_v=np.asarray(a["voltage_v"], dtype=np.float64),
            current_a=np.asarray(a["current_a"], dtype=np.float64),
            capacity_ah=np.asarray(a["capacity_ah"], dtype=np.float64),
            temperature_c=(
                np.asarray(a["temperature_c"], dtype=np.float64) if "temperature_c" in a else None
            ),
        )
    else:
        curve = _curve_unpacked(step, where)
    started_at = parse_datetime(step["started_at"], field=f"{where}.started_at")
    ended_at = (
        parse_datetime(step["ended_at"], field=f"{where}.ended_at") if "ended_at" in step else None
    )
    return services.StepInput(
        sequence=step["sequence"],
        step_type=step["type"],
        started_at=started_at,
        ended_at=ended_at,
        curve=curve,
        step_index=step.get("step_index"),
        cycle_index=step.get("cycle_index"),
        source_step_type=step.get("source_type", ""),
        name=step.get("name", ""),
        duration_s=step.get("duration_s"),
        capacity_ah=step.get("capacity_ah"),
        energy_wh=step.get("energy_wh"),
        start_voltage_v=step.get("start_voltage_v"),
        end_voltage_v=step.get("end_voltage_v"),
        end_current_a=step.get("end_current_a"),
        cv_time_s=step.get("cv_time_s"),
        tail_current_a=step.get("tail_current_a"),
        temperature_start_c=step.get("temperature_start_c"),
        temperature_max_c=step.get("temperature_max_c"),
        end_reason=step.get("end_reason", ""),
    )


def _run_input(env: Envelope, cells: _Cells) -> tuple[services.RunInput, set[int]]:
    """The run an envelope reports (and which of its steps came packed)."""
    unit = cells.cell(_one_unit(env), field="unit")
    payload = env.payload
    run = payload["run"]
    steps = [_step_input(step, i) for i, step in enumerate(payload["steps"])]
    started_at = (
        parse_datetime(run["started_at"], field="payload.run.started_at")
        if "started_at" in run
        else None
    )
    packed = {i for i, step in enumerate(payload["steps"]) if "curve_b64" in step}
    return (
        services.RunInput(
            unit=unit,
            station=env.station,
            equipment=env.equipment,
            steps=steps,
            started_at=started_at,
            channel=run.get("channel", ""),
            tray=run.get("tray", ""),
            position=run.get("position", ""),
            protocol=run.get("protocol", ""),
            source_format=run.get("source_format", "envelope"),
            source_name=run.get("source_name") or env.source,
            source_sha256=run.get("source_sha256", ""),
            source_run_id=run["id"],
            source_message_id=env.message_id,
            sign_convention=payload["sign_convention"],
            source_sign_convention=run.get("source_sign_convention", ""),
        ),
        packed,
    )


def handle_formation_steps(items: Sequence[tuple[Envelope, HandlerContext]]) -> list:
    """A run of ``formation_step`` messages: each checked alone, all written together."""
    cells = _Cells(serial for env, _ in items for serial in env.serials)
    errors: list[Exception | None] = [None] * len(items)
    runs, owners, packed = [], [], []
    for k, (env, _ctx) in enumerate(items):
        try:
            run, packed_steps = _run_input(env, cells)
        except (DomainError, EnvelopeError) as exc:
            errors[k] = exc
            continue
        runs.append(run)
        owners.append(k)
        packed.append(packed_steps)
    if runs:
        results = services.formation_runs_record(runs=runs, actor=items[0][1].actor)
        for k, steps_packed, result in zip(owners, packed, results, strict=True):
            if isinstance(result, DomainError):
                errors[k] = _relabel(result, _payload_field(result.field, steps_packed))
    return errors


def handle_formation_step(env: Envelope, ctx: HandlerContext) -> None:
    """Steps of one cell's formation run with their samples."""
    (error,) = handle_formation_steps([(env, ctx)])
    if error is not None:
        raise error


# --- aging_ocv ----------------------------------------------------------------------------------


def _aging_inputs(env: Envelope, cells: _Cells) -> list[services.AgingInput]:
    payload = env.payload
    listed = {normalise_lookup(s) for s in env.units} if env.units else None
    out = []
    for i, reading in enumerate(payload["readings"]):
        where = f"payload.readings[{i}]"
        serial = reading.get("unit") or env.unit
        if not serial:
            raise InvalidInput(
                "A reading names its cell when the message lists several units.",
                field=f"{where}.unit",
            )
        if reading.get("unit") and env.unit and reading["unit"] != env.unit:
            raise InvalidInput(
                f"A reading of {reading['unit']} in a message about {env.unit}.",
                field=f"{where}.unit",
            )
        field = f"{where}.unit" if reading.get("unit") else "unit"
        if listed is not None:
            try:
                known = normalise_lookup(serial) in listed
            except DomainError as exc:
                raise _relabel(exc, field) from exc
            if not known:
                raise InvalidInput(f"{serial} is not among the message's units.", field=field)
        out.append(
            services.AgingInput(
                unit=cells.cell(serial, field=field),
                station=env.station,
                equipment=env.equipment,
                rack=payload["rack"],
                rack_position=reading.get("rack_position", ""),
                ocv_mv=reading["ocv_mv"],
                acir_mohm=reading.get("acir_mohm"),
                temperature_c=reading.get("temperature_c"),
                measured_at=parse_datetime(reading["measured_at"], field=f"{where}.measured_at"),
                source_message_id=env.message_id,
            )
        )
    return out


def _prefixed_field(field: str | None) -> str:
    """A service error's field as the envelope field (``payload.`` before payload paths)."""
    if not field:
        return "payload"
    return field if field in _ENVELOPE_FIELDS else f"payload.{field}"


def handle_aging_ocvs(items: Sequence[tuple[Envelope, HandlerContext]]) -> list:
    """A run of ``aging_ocv`` messages: each checked alone, all written together."""
    cells = _Cells(
        serial
        for env, _ in items
        for serial in [*env.serials, *(r.get("unit", "") for r in env.payload["readings"])]
        if serial
    )
    errors: list[Exception | None] = [None] * len(items)
    batches, owners = [], []
    for k, (env, _ctx) in enumerate(items):
        try:
            batches.append(_aging_inputs(env, cells))
        except (DomainError, EnvelopeError) as exc:
            errors[k] = exc
            continue
        owners.append(k)
    if batches:
        results = services.aging_readings_record_many(batches=batches, actor=items[0][1].actor)
        for k, result in zip(owners, results, strict=True):
            if isinstance(result, DomainError):
                errors[k] = _relabel(result, _prefixed_field(result.field))
    return errors


def handle_aging_ocv(env: Envelope, ctx: HandlerContext) -> None:
    """OCV/ACIR readings of cells on an aging rack."""
    (error,) = handle_aging_ocvs([(env, ctx)])
    if error is not None:
        raise error


# --- tray_load -----------------------------------------------------------------------------------


def handle_tray_load(env: Envelope, ctx: HandlerContext) -> None:
    """The envelope's units went into ``payload.positions`` of ``payload.tray`` (unit i
    into position i), at ``payload.loaded_at`` (default ``sent_at``)."""
    payload = env.payload
    serials = env.serials
    positions = payload["positions"]
    if len(positions) != len(serials):
        raise InvalidInput(
            f"{len(positions)} positions for {len(serials)} units; give one position per unit.",
            field="payload.positions",
        )
    cells = _Cells(serials)
    unit_field = (lambda i: "unit") if env.unit else (lambda i: f"units[{i}]")
    units = [cells.cell(s, field=unit_field(i)) for i, s in enumerate(serials)]
    loaded_at = (
        parse_datetime(payload["loaded_at"], field="payload.loaded_at")
        if "loaded_at" in payload
        else env.sent_at
    )

    def field_of(name: str | None) -> str:
        if not name:
            return "payload"
        m = re.match(r"^units\[(\d+)\]$", name)
        if m:
            return unit_field(int(m.group(1)))
        return f"payload.{name}"

    try:
        services.tray_load_record(
            tray=payload["tray"],
            positions=list(zip(positions, units, strict=True)),
            station=env.station,
            equipment=env.equipment,
            loaded_at=loaded_at,
            actor=ctx.actor,
            source_message_id=env.message_id,
        )
    except DomainError as exc:
        raise _relabel(exc, field_of(exc.field)) from exc


# --- cycler_status -------------------------------------------------------------------------------


def _unit_field(env: Envelope, k: int) -> str:
    return "unit" if env.unit else f"units[{k}]"


def _status_input(env: Envelope, cells: _Cells) -> services.StatusInput:
    """The status an envelope reports. A channel names its cell in ``unit``; a message of
    one channel may name it in the envelope's ``unit`` instead. Every cell named on a
    channel is one of the envelope's units, and every one of those is on a channel."""
    if env.equipment is None:
        raise InvalidInput(
            "A cycler_status message names its cabinet or cycler in 'equipment'.",
            field="equipment",
        )
    payload = env.payload
    listed: dict[str, int] = {}
    for k, serial in enumerate(env.serials):
        try:
            listed.setdefault(normalise_lookup(serial), k)
        except DomainError as exc:
            raise _relabel(exc, _unit_field(env, k)) from exc
    given = payload["channels"]
    on_channels: set[str] = set()
    channels = []
    for i, ch in enumerate(given):
        where = f"payload.channels[{i}]"
        serial, field = ch.get("unit"), f"{where}.unit"
        if serial is None and env.unit and len(given) == 1:
            serial, field = env.unit, "unit"
        unit = None
        if serial is not None:
            try:
                key = normalise_lookup(serial)
            except DomainError as exc:
                raise _relabel(exc, field) from exc
            if listed and key not in listed:
                raise InvalidInput(f"{serial} is not among the message's units.", field=field)
            on_channels.add(key)
            unit = cells.cell(serial, field=field)
        channels.append(
            services.ChannelInput(
                channel=str(ch["channel"]),
                state=ch["state"],
                voltage_v=ch["voltage_v"],
                current_a=ch["current_a"],
                unit=unit,
                tray=ch.get("tray", ""),
                position=ch.get("position", ""),
                step_index=ch.get("step_index"),
                step_elapsed_s=ch.get("step_elapsed_s"),
                temperature_c=ch.get("temperature_c"),
                capacity_ah=ch.get("capacity_ah"),
                alarms=[
                    services.AlarmInput(a["code"], a["severity"], a.get("text", ""))
                    for a in ch.get("alarms", ())
                ],
            )
        )
    for key, k in listed.items():
        if key not in on_channels:
            raise InvalidInput(
                f"{env.serials[k]} is on none of the reported channels.",
                field=_unit_field(env, k),
            )
    reported_at = (
        parse_datetime(payload["reported_at"], field="payload.reported_at")
        if "reported_at" in payload
        else env.sent_at
    )
    return services.StatusInput(
        equipment=env.equipment,
        reported_at=reported_at,
        channels=channels,
        sign_convention=payload["sign_convention"],
        source_message_id=env.message_id,
    )


def handle_cycler_statuses(items: Sequence[tuple[Envelope, HandlerContext]]) -> list:
    """A run of ``cycler_status`` messages: each checked alone, all written together."""
    cells = _Cells(
        serial
        for env, _ in items
        for serial in [*env.serials, *(ch.get("unit", "") for ch in env.payload["channels"])]
        if serial
    )
    errors: list[Exception | None] = [None] * len(items)
    inputs, owners = [], []
    for k, (env, _ctx) in enumerate(items):
        try:
            inputs.append(_status_input(env, cells))
        except (DomainError, EnvelopeError) as exc:
            errors[k] = exc
            continue
        owners.append(k)
    if inputs:
        results = services.channel_statuses_record(statuses=inputs, actor=items[0][1].actor)
        for k, result in zip(owners, results, strict=True):
            if isinstance(result, DomainError):
                errors[k] = _relabel(result, _prefixed_field(result.field))
    return errors


def handle_cycler_status(env: Envelope, ctx: HandlerContext) -> None:
    """The live state and active alarms of channels of one cabinet."""
    (error,) = handle_cycler_statuses([(env, ctx)])
    if error is not None:
        raise error


#: Kinds that also have a handler for a run of messages at once (see qms.ingest.registry).
BATCH_HANDLERS: dict[str, Callable[[Sequence[tuple[Envelope, HandlerContext]]], list]] = {
    "formation_step": handle_formation_steps,
    "aging_ocv": handle_aging_ocvs,
    "cycler_status": handle_cycler_statuses,
}

HANDLERS: dict[str, Callable[[Envelope, HandlerContext], None]] = {
    "formation_step": handle_formation_step,
    "aging_ocv": handle_aging_ocv,
    "tray_load": handle_tray_load,
    "cycler_status": handle_cycler_status,
}
