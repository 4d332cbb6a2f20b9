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
opens per message, so a refusal leaves nothing behind. ``process_result`` also has a handler
for a run of messages (:func:`handle_process_results`): it checks every message before it
writes, refuses each bad one alone, and writes the rest in bulk.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime

from django.db import transaction

from qms.exceptions import DomainError, InvalidInput, NotFound, Refused
from qms.ingest.envelope import Envelope, EnvelopeError, parse_datetime
from qms.ingest.registry import UNKNOWN_UNIT
from qms.ingest.services import HandlerContext
from qms.models import Characteristic

from . import queries, services
from .choices import LinkKind, UnitKind
from .models import Link, Measurement, StationVisit, Unit
from .queries import KIND_ORDER
from .serials import normalise_lookup

#: Kinds made outside the plant's lines (bought material, vehicle bodies): created without
#: a line, so their serials are not held to a line's serial scheme.
LINELESS_KINDS = frozenset({UnitKind.MATERIAL_LOT, UnitKind.VEHICLE})

#: ``source_message_id`` on visits and measurements holds an envelope's ``message_id``
#: (128 characters at most, like :class:`qms.ingest.models.IngestMessage`).
VISIT_MESSAGE_ID_LEN = StationVisit._meta.get_field("source_message_id").max_length
MEASUREMENT_MESSAGE_ID_LEN = Measurement._meta.get_field("source_message_id").max_length


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
        raise NotFound(f"Unknown {what} {serial!r}.", field=field, code=UNKNOWN_UNIT)
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
            code=UNKNOWN_UNIT,
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


def _station_characteristics(station_id: int) -> dict[str, Characteristic]:
    rows = Characteristic.objects.filter(station_id=station_id).order_by()
    return {c.code.lower(): c for c in rows.only("id", "code", "unit", "is_active")}


def _characteristics(
    env: Envelope, measurements: list[dict], by_code: dict[str, Characteristic]
) -> list[Characteristic]:
    """The characteristic of each measurement, checked against the station and the unit."""
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


class _Units:
    """The units an ingest batch names, found with one query for the whole batch; units
    created while the batch is applied are added, so a later message finds them."""

    CHUNK = 900  # serials per query (SQLite's parameter limit)

    def __init__(self, serials: Iterable[str]) -> None:
        self._lookup: dict[str, str] = {}
        self._bad: dict[str, DomainError] = {}
        for raw in set(serials):
            try:
                self._lookup[raw] = normalise_lookup(raw)
            except DomainError as exc:
                self._bad[raw] = exc
        wanted = sorted({s for s in self._lookup.values() if s})
        self._by_serial: dict[str, list[Unit]] = defaultdict(list)
        for i in range(0, len(wanted), self.CHUNK):
            rows = Unit.objects.filter(serial__in=wanted[i : i + self.CHUNK]).order_by()
            for unit in rows.only("id", "serial", "kind", "status", "line_id"):
                self._by_serial[unit.serial].append(unit)

    def find(self, raw: str, *, field: str, kind: str | None = None) -> Unit | None:
        """As :func:`genealogy.queries.unit_find`."""
        if raw in self._bad:
            raise _relabel(self._bad[raw], field)
        serial = self._lookup.get(raw)
        if serial is None:  # a serial the batch did not announce
            return _find(raw, field=field, kind=kind)
        units = [u for u in self._by_serial.get(serial, ()) if kind is None or u.kind == kind]
        return min(units, key=lambda u: KIND_ORDER.index(u.kind)) if units else None

    def add(self, unit: Unit) -> None:
        self._by_serial[unit.serial].append(unit)


def _process_result_visits(
    env: Envelope,
    ctx: HandlerContext,
    units: _Units,
    characteristics: dict[int, dict[str, Characteristic]],
) -> list[services.VisitInput]:
    """Check one ``process_result`` envelope completely and return what it records. The
    only write is the creation of units first seen here (in a savepoint of its own)."""
    payload = env.payload
    measurements = list(payload.get("measurements") or [])
    if env.station.pk not in characteristics:
        characteristics[env.station.pk] = _station_characteristics(env.station.pk)
    chars = _characteristics(env, measurements, characteristics[env.station.pk])
    started_at = _when(payload, "started_at") or env.sent_at
    ended_at = _when(payload, "ended_at")
    if ended_at is not None and ended_at < started_at:
        raise InvalidInput("ended_at is before started_at.", field="payload.ended_at")
    measured_at = [
        _when(m, "measured_at", prefix=f"payload.measurements[{i}]") or env.sent_at
        for i, m in enumerate(measurements)
    ]
    create_kind = payload.get("unit_kind")
    found: list[Unit | None] = []
    for i, serial in enumerate(env.serials):
        unit = units.find(serial, field=_unit_field(env, i), kind=create_kind)
        if unit is None and create_kind is None:
            raise NotFound(
                f"Unknown unit {serial!r} (send 'unit_kind' to create it on its first station).",
                field=_unit_field(env, i),
                code=UNKNOWN_UNIT,
            )
        found.append(unit)
    if any(unit is None for unit in found):
        created: dict[str, Unit] = {}
        with transaction.atomic():  # all of this message's new units, or none
            for i, (serial, unit) in enumerate(zip(env.serials, found, strict=True)):
                if unit is None:
                    found[i] = created.get(serial) or _find_or_create(
                        serial,
                        env=env,
                        ctx=ctx,
                        field=_unit_field(env, i),
                        create_kind=create_kind,
                        create_kind_field="payload.unit_kind",
                        length_m=payload.get("length_m"),
                        produced_at=started_at,
                    )
                    created[serial] = found[i]
        for unit in created.values():
            units.add(unit)
    equipment_id = env.equipment.pk if env.equipment else None
    visit_message_id = env.message_id[:VISIT_MESSAGE_ID_LEN]
    measurement_message_id = env.message_id[:MEASUREMENT_MESSAGE_ID_LEN]
    return [
        services.VisitInput(
            unit_id=unit.pk,
            station_id=env.station.pk,
            started_at=started_at,
            ended_at=ended_at,
            equipment_id=equipment_id,
            result=payload["result"],
            program=payload.get("program", ""),
            operator=payload.get("operator", ""),
            source_message_id=visit_message_id,
            measurements=tuple(
                services.MeasurementInput(
                    unit_id=unit.pk,
                    characteristic_id=char.pk,
                    value=float(m["value"]),
                    measured_at=at,
                    equipment_id=equipment_id,
                    position_m=m.get("position_m"),
                    source_message_id=measurement_message_id,
                )
                for m, char, at in zip(measurements, chars, measured_at, strict=True)
            ),
        )
        for unit in found
    ]


def handle_process_results(
    items: Sequence[tuple[Envelope, HandlerContext]],
) -> list[Exception | None]:
    """A run of ``process_result`` messages of one ingest batch, in order: each message is
    checked as :func:`handle_process_result` checks it and refused alone (its error in the
    returned list, nothing of it written); the others are written together, with one
    look-up of units and characteristics and one bulk write of visits and measurements."""
    units = _Units(serial for env, _ in items for serial in env.serials)
    characteristics: dict[int, dict[str, Characteristic]] = {}
    errors: list[Exception | None] = [None] * len(items)
    visits: list[services.VisitInput] = []
    for k, (env, ctx) in enumerate(items):
        try:
            visits += _process_result_visits(env, ctx, units, characteristics)
        except (DomainError, EnvelopeError) as exc:
            errors[k] = exc
    if visits:
        services.visits_record(visits=visits, actor=items[0][1].actor)
    return errors


def handle_process_result(env: Envelope, ctx: HandlerContext) -> None:
    """A unit's pass through the envelope's station, with the values measured on it.

    ``started_at`` defaults to ``sent_at``; each measurement's ``measured_at`` too. With
    ``units`` the same visit and values are recorded for every unit (a tray, an oven batch).
    """
    (error,) = handle_process_results([(env, ctx)])
    if error is not None:
        raise error


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


#: Kinds that also have a handler for a run of messages at once (see qms.ingest.registry).
BATCH_HANDLERS: dict[str, Callable[[Sequence[tuple[Envelope, HandlerContext]]], list]] = {
    "process_result": handle_process_results,
}

HANDLERS: dict[str, Callable[[Envelope, HandlerContext], None]] = {
    "process_result": handle_process_result,
    "consumption": handle_consumption,
    "assembly": handle_assembly,
    "rework": handle_rework,
}
