"""Ingest handlers for the digital thread: envelope kind -> :mod:`genealogy.services`.

Registered in :meth:`genealogy.apps.GenealogyConfig.ready` for the kinds

* ``process_result``: a unit's visit to a station (a :class:`StationVisit`) and the
  measurements taken during it, against the characteristics of the envelope's station;
* ``consumption``: a unit consumed coil segments ``[start_m, end_m)`` and/or material lots;
* ``assembly``: the unit went into a module slot, a pack or a vehicle (interlocked);
* ``rework``: a cell of the envelope's unit (a module or pack) was replaced.

The envelope's ``unit`` (serial or GS1 element string) must be known, unless the payload
names ``unit_kind`` (``assembly_kind`` for the assembly): then the unit is created on the
station's line the first time it is seen. Every refusal names the envelope field to fix
(``payload.measurements[3].unit``), never a service argument: the services' own field names
are translated here. A handler runs inside the savepoint :func:`qms.ingest.services.ingest_raw`
opens per message, so a refusal leaves nothing behind.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime

from qms.exceptions import DomainError, InvalidInput, NotFound, Refused
from qms.ingest.envelope import Envelope, parse_datetime
from qms.ingest.services import HandlerContext
from qms.models import Characteristic

from . import queries, services
from .choices import LinkKind, UnitKind
from .models import Link, Measurement, StationVisit, Unit

#: Kinds made outside the plant's lines (bought material, vehicle bodies): created without
#: a line, so their serials are not held to a line's serial scheme.
LINELESS_KINDS = frozenset({UnitKind.MATERIAL_LOT, UnitKind.VEHICLE})

#: ``source_message_id`` on visits and measurements holds an envelope's ``message_id``
#: (128 characters at most, like :class:`qms.ingest.models.IngestMessage`).
VISIT_MESSAGE_ID_LEN = StationVisit._meta.get_field("source_message_id").max_length
MEASUREMENT_MESSAGE_ID_LEN = Measurement._meta.get_field("source_message_id").max_length

_ROW_FIELD = re.compile(r"^rows\[(\d+)\]\.(\w+)$")


# --- field translation -----------------------------------------------------------------------


def _relabel(exc: DomainError, field: str | None) -> DomainError:
    return type(exc)(exc.message, field=field, code=exc.code)


@contextmanager
def _fields(mapping: Mapping[str | None, str] | Callable[[str | None], str]) -> Iterator[None]:
    """Re-raise a service's :class:`DomainError` with the envelope field it concerns."""
    try:
        yield
    except DomainError as exc:
        if callable(mapping):
            field = mapping(exc.field)
        else:
            field = mapping.get(exc.field, mapping.get(None, exc.field))
        raise _relabel(exc, field) from exc


def _unit_field(env: Envelope, index: int) -> str:
    return "unit" if env.unit else f"units[{index}]"


def _one_unit(env: Envelope) -> str:
    if not env.unit:
        raise InvalidInput(
            f"A {env.kind} message is about one unit: give it in 'unit', not 'units'.",
            field="units",
        )
    return env.unit


def _when(payload: dict, key: str, *, prefix: str = "payload") -> datetime | None:
    value = payload.get(key)
    if value is None:
        return None
    return parse_datetime(value, field=f"{prefix}.{key}")


# --- units --------------------------------------------------------------------------------


def _find(serial: str, *, field: str, kind: str | None = None) -> Unit | None:
    with _fields({None: field, "serial": field}):
        return queries.unit_find(serial, kind=kind)


def _require(serial: str, *, field: str, what: str = "unit") -> Unit:
    unit = _find(serial, field=field)
    if unit is None:
        raise NotFound(f"Unknown {what} {serial!r}.", field=field)
    return unit


def _find_or_create(
    serial: str,
    *,
    env: Envelope,
    ctx: HandlerContext,
    field: str,
    create_kind: str | None,
    create_kind_field: str,
    length_m: float | None = None,
    produced_at: datetime | None = None,
    what: str = "unit",
) -> Unit:
    """The unit with ``serial``; created on the station's line when ``create_kind`` is given
    and no unit of that kind carries the serial yet."""
    unit = _find(serial, field=field, kind=create_kind)
    if unit is not None:
        return unit
    if create_kind is None:
        raise NotFound(
            f"Unknown {what} {serial!r} (send '{create_kind_field.rpartition('.')[2]}' to "
            f"create it on its first station).",
            field=field,
        )
    with _fields(
        {
            "serial": field,
            "kind": create_kind_field,
            "length_m": "payload.length_m",
            None: field,
        }
    ):
        return services.unit_create(
            kind=create_kind,
            serial=serial,
            line=None if create_kind in LINELESS_KINDS else env.line,
            length_m=length_m,
            produced_at=produced_at or env.sent_at,
            actor=ctx.actor,
            reason=f"first seen at {env.station} ({env.message_id})",
        )


# --- process_result ---------------------------------------------------------------------------


def _characteristics(env: Envelope, measurements: list[dict]) -> list[Characteristic]:
    """The characteristic of each measurement, checked against the station and the unit."""
    rows = Characteristic.objects.filter(station=env.station).order_by()
    by_code = {c.code.lower(): c for c in rows.only("id", "code", "unit", "is_active")}
    out = []
    for i, m in enumerate(measurements):
        where = f"payload.measurements[{i}]"
        code = str(m["characteristic"])
        char = by_code.get(code.strip().lower())
        if char is None:
            known = ", ".join(sorted(by_code)[:12]) or "none"
            raise NotFound(
                f"Unknown characteristic {code!r} at station {env.station} "
                f"(its characteristics: {known}).",
                field=f"{where}.characteristic",
            )
        if not char.is_active:
            raise Refused(
                f"Characteristic {char.code!r} at station {env.station} is inactive.",
                field=f"{where}.characteristic",
                code="inactive",
            )
        given = str(m["unit"]).strip()
        if given != char.unit:
            raise InvalidInput(
                f"{given} given, characteristic {char.code} in {char.unit}.",
                field=f"{where}.unit",
                code="wrong_unit",
            )
        value = m["value"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{value!r} is not a number.", field=f"{where}.value")
        if not math.isfinite(value):
            raise InvalidInput(f"{value} is not a finite number.", field=f"{where}.value")
        out.append(char)
    return out


def _measurement_field(field: str | None) -> str:
    match = _ROW_FIELD.match(field or "")
    if match is None:
        return "payload.measurements"
    name = {"characteristic": "characteristic", "measured_at": "measured_at"}.get(
        match[2], match[2]
    )
    return f"payload.measurements[{match[1]}].{name}"


def handle_process_result(env: Envelope, ctx: HandlerContext) -> None:
    """A unit's pass through the envelope's station, with the values measured on it.

    ``started_at`` defaults to ``sent_at``; each measurement's ``measured_at`` too. With
    ``units`` the same visit and values are recorded for every unit (a tray, an oven batch).
    """
    payload = env.payload
    measurements = list(payload.get("measurements") or [])
    chars = _characteristics(env, measurements)
    started_at = _when(payload, "started_at") or env.sent_at
    ended_at = _when(payload, "ended_at")
    measured_at = [
        _when(m, "measured_at", prefix=f"payload.measurements[{i}]") or env.sent_at
        for i, m in enumerate(measurements)
    ]
    units = [
        _find_or_create(
            serial,
            env=env,
            ctx=ctx,
            field=_unit_field(env, i),
            create_kind=payload.get("unit_kind"),
            create_kind_field="payload.unit_kind",
            length_m=payload.get("length_m"),
            produced_at=started_at,
        )
        for i, serial in enumerate(env.serials)
    ]
    rows: list[services.MeasurementInput] = []
    for unit in units:
        with _fields(
            {"result": "payload.result", "ended_at": "payload.ended_at", "equipment": "equipment"}
        ):
            visit = services.visit_record(
                unit=unit,
                station=env.station,
                equipment=env.equipment,
                started_at=started_at,
                ended_at=ended_at,
                result=payload["result"],
                program=payload.get("program", ""),
                operator=payload.get("operator", ""),
                source_message_id=env.message_id[:VISIT_MESSAGE_ID_LEN],
                actor=ctx.actor,
            )
        rows += [
            services.MeasurementInput(
                unit_id=unit.pk,
                characteristic_id=char.pk,
                value=float(m["value"]),
                measured_at=at,
                equipment_id=env.equipment.pk if env.equipment else None,
                visit_id=visit.pk,
                position_m=m.get("position_m"),
                source_message_id=env.message_id[:MEASUREMENT_MESSAGE_ID_LEN],
            )
            for m, char, at in zip(measurements, chars, measured_at, strict=True)
        ]
    if rows:
        with _fields(_measurement_field):
            services.measurements_record(rows=rows, actor=ctx.actor)


# --- consumption ------------------------------------------------------------------------------


def handle_consumption(env: Envelope, ctx: HandlerContext) -> None:
    """The envelope's unit consumed coil segments and/or material lots (one link each)."""
    payload = env.payload
    serial = _one_unit(env)
    segments = list(payload.get("segments") or [])
    lots = list(payload.get("lots") or [])
    coils = [
        _require(s["coil"], field=f"payload.segments[{i}].coil", what="coil")
        for i, s in enumerate(segments)
    ]
    lot_units = [
        _require(lot["lot"], field=f"payload.lots[{i}].lot", what="lot")
        for i, lot in enumerate(lots)
    ]
    consumer = _find_or_create(
        serial,
        env=env,
        ctx=ctx,
        field="unit",
        create_kind=payload.get("unit_kind"),
        create_kind_field="payload.unit_kind",
        length_m=payload.get("length_m"),
    )
    for i, (segment, coil) in enumerate(zip(segments, coils, strict=True)):
        where = f"payload.segments[{i}]"
        with _fields(
            {
                "coil": f"{where}.coil",
                "start_m": f"{where}.start_m",
                "end_m": f"{where}.end_m",
                "consumer": "unit",
                "target": "unit",
                None: where,
            }
        ):
            services.coil_segment_consume(
                coil=coil,
                consumer=consumer,
                start_m=float(segment["start_m"]),
                end_m=float(segment["end_m"]),
                linked_at=env.sent_at,
                actor=ctx.actor,
                reason=f"consumed at {env.station}",
            )
    for i, (lot, lot_unit) in enumerate(zip(lots, lot_units, strict=True)):
        where = f"payload.lots[{i}]"
        with _fields(
            {
                "lot": f"{where}.lot",
                "quantity": f"{where}.quantity",
                "consumer": "unit",
                "target": "unit",
                None: where,
            }
        ):
            services.lot_consume(
                lot=lot_unit,
                consumer=consumer,
                quantity=lot.get("quantity"),
                quantity_unit=lot.get("quantity_unit", ""),
                linked_at=env.sent_at,
                actor=ctx.actor,
                reason=f"consumed at {env.station}",
            )


# --- assembly and rework -----------------------------------------------------------------


def handle_assembly(env: Envelope, ctx: HandlerContext) -> None:
    """The envelope's unit (cell, module, pack) went into ``payload.assembly`` at
    ``payload.slot``. Refused while either is on hold or scrapped, naming the hold."""
    payload = env.payload
    part = _require(_one_unit(env), field="unit")
    assembly = _find_or_create(
        payload["assembly"],
        env=env,
        ctx=ctx,
        field="payload.assembly",
        create_kind=payload.get("assembly_kind"),
        create_kind_field="payload.assembly_kind",
        what="assembly",
    )
    with _fields(
        {
            "part": "unit",
            "assembly": "payload.assembly",
            "slot": "payload.slot",
            "target": "payload.assembly",
            None: "payload.assembly",
        }
    ):
        services.unit_assemble(
            part=part,
            assembly=assembly,
            slot=payload.get("slot", ""),
            linked_at=env.sent_at,
            actor=ctx.actor,
            reason=f"assembled at {env.station}",
        )


def handle_rework(env: Envelope, ctx: HandlerContext) -> None:
    """In the envelope's unit (a module or pack), ``payload.removed`` was taken out and
    ``payload.replacement`` put into its slot; the old link is closed, never deleted."""
    payload = env.payload
    assembly = _require(_one_unit(env), field="unit")
    removed = _require(payload["removed"], field="payload.removed")
    replacement = _require(payload["replacement"], field="payload.replacement")
    current = (
        Link.objects.filter(
            source=removed, target=assembly, kind=LinkKind.ASSEMBLED, removed_at__isnull=True
        )
        .only("linked_at")
        .first()
    )
    if current is not None and env.sent_at < current.linked_at:
        raise Refused(
            f"{removed} went into {assembly} at {current.linked_at.isoformat()}, after this "
            f"rework message was sent ({env.sent_at.isoformat()}).",
            field="sent_at",
            code="before_assembly",
        )
    with _fields(
        {
            "assembly": "unit",
            "removed": "payload.removed",
            "reason": "payload.reason",
            "part": "payload.replacement",
            "target": "payload.replacement",
            "slot": "payload.replacement",
            None: "payload.replacement",
        }
    ):
        services.cell_replace(
            assembly=assembly,
            removed=removed,
            replacement=replacement,
            reason=payload["reason"],
            at=env.sent_at,
            actor=ctx.actor,
        )


HANDLERS: dict[str, Callable[[Envelope, HandlerContext], None]] = {
    "process_result": handle_process_result,
    "consumption": handle_consumption,
    "assembly": handle_assembly,
    "rework": handle_rework,
}
