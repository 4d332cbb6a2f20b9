"""Every write to the digital thread.

Each service runs in one transaction, checks its rules before writing, records the acting
user (a person or an integration's user) and a reason in history, and publishes its domain
event on commit. A refusal raises a :mod:`qms.exceptions` error and writes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from simple_history.utils import bulk_create_with_history

from qms import events
from qms.db import bulk_insert, insert_rows
from qms.exceptions import InvalidInput, NotFound, Refused
from qms.models import Characteristic, Equipment, Line, Station

from . import progress, queries
from .choices import BLOCKED_STATUSES, METRED_KINDS, LinkKind, UnitKind, VisitResult
from .events import MeasurementsRecorded, UnitsLinked
from .models import Link, Measurement, StationVisit, Unit
from .serials import parse_serial

Actor = AbstractBaseUser

#: Kinds a part may be assembled into: cell -> module -> pack -> vehicle. A cell may also go
#: straight into a pack (cell-to-pack designs).
ASSEMBLY_RULES: dict[str, frozenset[str]] = {
    UnitKind.CELL: frozenset({UnitKind.MODULE, UnitKind.PACK}),
    UnitKind.MODULE: frozenset({UnitKind.PACK}),
    UnitKind.PACK: frozenset({UnitKind.VEHICLE}),
}

#: Kinds that may be consumed, and by which kinds.
CONSUMPTION_RULES: dict[str, frozenset[str]] = {
    UnitKind.MATERIAL_LOT: frozenset(
        {UnitKind.MIX_BATCH, UnitKind.COIL, UnitKind.CELL, UnitKind.MODULE, UnitKind.PACK}
    ),
    UnitKind.MIX_BATCH: frozenset({UnitKind.COIL}),
    UnitKind.COIL: frozenset({UnitKind.CELL}),
    UnitKind.SLIT_COIL: frozenset({UnitKind.CELL}),
}


def _stamp(obj, actor: Actor | None, reason: str) -> None:
    """Tell simple-history who made this change and why."""
    obj._history_user = actor
    obj._change_reason = reason[:100]  # simple-history keeps 100 characters


def _check_not_blocked(unit: Unit, *, field: str) -> None:
    """The interlock: a unit on hold or scrapped may not be used."""
    if unit.status not in BLOCKED_STATUSES:
        return
    why = unit.status_reason or "no reason recorded"
    raise Refused(
        f"{unit} is {unit.get_status_display().lower()}: {why}",
        field=field,
        code=f"unit_{unit.status}",
    )


def unit_get(*, serial: str, kind: str | None = None, field: str = "serial") -> Unit:
    """The unit with ``serial`` (GS1 strings accepted), or :class:`NotFound` naming it."""
    unit = queries.unit_find(serial, kind=kind)
    if unit is None:
        what = f"{UnitKind(kind).label.lower()} " if kind else "unit "
        raise NotFound(f"No {what}with serial {serial!r}.", field=field)
    return unit


@transaction.atomic
def unit_create(
    *,
    kind: str,
    serial: str,
    actor: Actor | None,
    line: Line | None = None,
    produced_at: datetime | None = None,
    length_m: float | None = None,
    material: str = "",
    supplier: str = "",
    reason: str = "created",
) -> Unit:
    """Create one unit from a scanned or typed serial (GS1 parsed and validated)."""
    if kind not in UnitKind.values:
        raise InvalidInput(f"Unknown unit kind {kind!r}.", field="kind")
    parsed = parse_serial(serial, line=line)
    if kind in METRED_KINDS and (length_m is None or not length_m > 0):
        raise InvalidInput("A coil needs a positive length in metres.", field="length_m")
    if Unit.objects.filter(kind=kind, serial=parsed.serial).exists():
        raise Refused(
            f"A {kind} with serial {parsed.serial!r} exists already.",
            field="serial",
            code="duplicate",
        )
    unit = Unit(
        kind=kind,
        serial=parsed.serial,
        gtin=parsed.gtin,
        batch_lot=parsed.batch_lot,
        line=line,
        produced_at=produced_at or timezone.now(),
        length_m=length_m,
        material=material,
        supplier=supplier,
    )
    _stamp(unit, actor, reason)
    unit.save()
    return unit


@transaction.atomic
def units_create_bulk(
    *,
    kind: str,
    serials: Sequence[str],
    actor: Actor | None,
    line: Line | None = None,
    produced_at: datetime | None = None,
    reason: str = "created in bulk",
) -> list[Unit]:
    """Create many units of one kind in one transaction (history rows included)."""
    if kind not in UnitKind.values:
        raise InvalidInput(f"Unknown unit kind {kind!r}.", field="kind")
    if kind in METRED_KINDS:
        raise InvalidInput("Coils are created one by one with their length.", field="kind")
    when = produced_at or timezone.now()
    units = []
    seen: set[str] = set()
    for i, raw in enumerate(serials):
        parsed = parse_serial(raw, line=line, field=f"serials[{i}]")
        if parsed.serial in seen:
            raise InvalidInput(f"Serial {parsed.serial!r} appears twice.", field=f"serials[{i}]")
        seen.add(parsed.serial)
        units.append(
            Unit(
                kind=kind,
                serial=parsed.serial,
                gtin=parsed.gtin,
                batch_lot=parsed.batch_lot,
                line=line,
                produced_at=when,
            )
        )
    existing = set(Unit.objects.filter(kind=kind, serial__in=seen).values_list("serial", flat=True))
    if existing:
        first = sorted(existing)[0]
        raise Refused(
            f"{len(existing)} serial(s) exist already, e.g. {first!r}.",
            field="serials",
            code="duplicate",
        )
    return bulk_create_with_history(
        units, Unit, batch_size=1000, default_user=actor, default_change_reason=reason[:100]
    )


def _link_save(link: Link, actor: Actor | None, reason: str) -> Link:
    _stamp(link, actor, reason)
    try:
        with transaction.atomic():
            link.save()
    except IntegrityError as exc:  # a concurrent writer took the slot or the part
        raise Refused(f"Link refused by the database: {exc}", code="conflict") from exc
    events.publish(UnitsLinked(link_ids=(link.pk,)))
    return link


def link_check_acyclic(source: Unit, target: Unit) -> None:
    """Refuse a link source -> target when target is already upstream of source."""
    if source.pk == target.pk or queries.is_upstream_of(candidate=target, unit=source):
        raise Refused(
            f"Linking {source} into {target} would make a cycle: {target} is already upstream "
            f"of {source}.",
            field="target",
            code="cycle",
        )


@transaction.atomic
def coil_segment_consume(
    *,
    coil: Unit,
    consumer: Unit,
    start_m: float,
    end_m: float,
    actor: Actor | None,
    linked_at: datetime | None = None,
    reason: str = "coil segment consumed",
) -> Link:
    """Record that ``consumer`` (a cell) used metres ``[start_m, end_m)`` of ``coil``.

    Refused when the segment lies outside the coil, overlaps a segment already consumed
    from it, the coil is on hold or scrapped (the interlock), or the link makes a cycle.
    The coil row is locked so two stations cannot consume the same metres. A consumer on
    hold is no reason to refuse: what it was made from is a fact the trace needs (the
    message may also arrive after a later station's result put it on hold).
    """
    coil = Unit.objects.select_for_update().get(pk=coil.pk)
    if coil.kind not in METRED_KINDS:
        raise InvalidInput(f"{coil} is not a coil; it has no metres.", field="coil")
    if consumer.kind not in CONSUMPTION_RULES[coil.kind]:
        raise InvalidInput(f"A {consumer.kind} cannot consume a coil.", field="consumer")
    for name, value in (("start_m", start_m), ("end_m", end_m)):
        if value is None or not math.isfinite(value):
            raise InvalidInput(f"{name} must be a finite number of metres.", field=name)
    if not 0 <= start_m < end_m:
        raise InvalidInput(
            f"Segment [{start_m:g}, {end_m:g}) m is empty or starts below 0.", field="start_m"
        )
    if end_m > coil.length_m:
        raise Refused(
            f"Segment [{start_m:g}, {end_m:g}) m lies outside coil {coil.serial} "
            f"(length {coil.length_m:g} m).",
            field="end_m",
            code="segment_outside_coil",
        )
    _check_not_blocked(coil, field="coil")
    overlap = (
        Link.objects.filter(
            source=coil,
            kind=LinkKind.CONSUMED,
            removed_at__isnull=True,
            start_m__lt=end_m,
            end_m__gt=start_m,
        )
        .select_related("target")
        .first()
    )
    if overlap is not None:
        raise Refused(
            f"Segment [{start_m:g}, {end_m:g}) m of coil {coil.serial} overlaps "
            f"[{overlap.start_m:g}, {overlap.end_m:g}) m already consumed by {overlap.target}.",
            field="start_m",
            code="segment_overlap",
        )
    link_check_acyclic(coil, consumer)
    link = Link(
        source=coil,
        target=consumer,
        kind=LinkKind.CONSUMED,
        start_m=start_m,
        end_m=end_m,
        linked_at=linked_at or timezone.now(),
    )
    return _link_save(link, actor, reason)


@transaction.atomic
def coil_slit(
    *,
    mother: Unit,
    slit_coil: Unit,
    start_m: float,
    end_m: float,
    actor: Actor | None,
    linked_at: datetime | None = None,
    reason: str = "slit from mother coil",
) -> Link:
    """Record that ``slit_coil`` was cut from metres ``[start_m, end_m)`` of ``mother``.

    Slit lanes run side by side, so lanes of one mother coil share metres; metre 0 of the
    slit coil is ``start_m`` of the mother coil, which is how a defect found at a mother
    metre resolves to slit-coil metres and from there to cells.
    """
    if mother.kind != UnitKind.COIL or slit_coil.kind != UnitKind.SLIT_COIL:
        raise InvalidInput("Slitting links a coil to a slit coil.", field="slit_coil")
    if not (math.isfinite(start_m) and math.isfinite(end_m) and 0 <= start_m < end_m):
        raise InvalidInput("The slit range must be finite and non-empty.", field="start_m")
    if end_m > mother.length_m:
        raise Refused(
            f"Range [{start_m:g}, {end_m:g}) m lies outside coil {mother.serial} "
            f"(length {mother.length_m:g} m).",
            field="end_m",
            code="segment_outside_coil",
        )
    if slit_coil.length_m is not None and slit_coil.length_m > end_m - start_m + 1e-9:
        raise InvalidInput(
            f"Slit coil {slit_coil.serial} ({slit_coil.length_m:g} m) is longer than the "
            f"range it was cut from ({end_m - start_m:g} m).",
            field="slit_coil",
        )
    _check_not_blocked(mother, field="mother")
    link_check_acyclic(mother, slit_coil)
    link = Link(
        source=mother,
        target=slit_coil,
        kind=LinkKind.SLIT,
        start_m=start_m,
        end_m=end_m,
        linked_at=linked_at or timezone.now(),
    )
    return _link_save(link, actor, reason)


@transaction.atomic
def lot_consume(
    *,
    lot: Unit,
    consumer: Unit,
    actor: Actor | None,
    quantity: float | None = None,
    quantity_unit: str = "",
    linked_at: datetime | None = None,
    reason: str = "material consumed",
) -> Link:
    """Record that ``consumer`` used material from ``lot`` (a material lot or mix batch).
    Refused when the lot is on hold or scrapped (the interlock), not when the consumer is."""
    allowed = CONSUMPTION_RULES.get(lot.kind)
    if lot.kind in METRED_KINDS or allowed is None:
        raise InvalidInput(f"{lot} is not a lot or batch.", field="lot")
    if consumer.kind not in allowed:
        raise InvalidInput(f"A {consumer.kind} cannot consume a {lot.kind}.", field="consumer")
    if quantity is not None and not (math.isfinite(quantity) and quantity > 0):
        raise InvalidInput("quantity must be a positive finite number.", field="quantity")
    _check_not_blocked(lot, field="lot")
    link_check_acyclic(lot, consumer)
    link = Link(
        source=lot,
        target=consumer,
        kind=LinkKind.CONSUMED,
        quantity=quantity,
        quantity_unit=quantity_unit,
        linked_at=linked_at or timezone.now(),
    )
    return _link_save(link, actor, reason)


@transaction.atomic
def unit_assemble(
    *,
    part: Unit,
    assembly: Unit,
    actor: Actor | None,
    slot: str = "",
    linked_at: datetime | None = None,
    reason: str = "assembled",
) -> Link:
    """Build ``part`` into ``assembly`` at ``slot``: a cell into a module slot, a module into
    a pack, a pack into a vehicle (VIN).

    Refused (the interlock) when either unit is on hold or scrapped, with the hold's
    reason; also when the part already sits in an assembly, the slot is taken, the kinds
    do not fit, or the link would make a cycle.
    """
    part, assembly = _lock_pair(part, assembly)
    allowed = ASSEMBLY_RULES.get(part.kind, frozenset())
    if assembly.kind not in allowed:
        raise InvalidInput(
            f"A {part.kind} cannot be assembled into a {assembly.kind}.", field="assembly"
        )
    _check_not_blocked(part, field="part")
    _check_not_blocked(assembly, field="assembly")
    current = (
        Link.objects.filter(source=part, kind=LinkKind.ASSEMBLED, removed_at__isnull=True)
        .select_related("target")
        .first()
    )
    if current is not None:
        raise Refused(
            f"{part} is already assembled into {current.target}.",
            field="part",
            code="already_assembled",
        )
    if slot:
        taken = (
            Link.objects.filter(
                target=assembly, slot=slot, kind=LinkKind.ASSEMBLED, removed_at__isnull=True
            )
            .select_related("source")
            .first()
        )
        if taken is not None:
            raise Refused(
                f"Slot {slot} of {assembly} holds {taken.source} already.",
                field="slot",
                code="slot_taken",
            )
    link_check_acyclic(part, assembly)
    link = Link(
        source=part,
        target=assembly,
        kind=LinkKind.ASSEMBLED,
        slot=slot,
        linked_at=linked_at or timezone.now(),
    )
    return _link_save(link, actor, reason)


def _lock_pair(a: Unit, b: Unit) -> tuple[Unit, Unit]:
    """Lock two units in id order (no deadlock between stations) and return fresh rows."""
    rows = {
        u.pk: u for u in Unit.objects.select_for_update().filter(pk__in=[a.pk, b.pk]).order_by("pk")
    }
    return rows[a.pk], rows[b.pk]


@transaction.atomic
def cell_replace(
    *,
    assembly: Unit,
    removed: Unit,
    replacement: Unit,
    actor: Actor | None,
    reason: str,
    at: datetime | None = None,
) -> tuple[Link, Link]:
    """Rework: take ``removed`` out of ``assembly`` and put ``replacement`` in its slot.

    The old link is closed (``removed_at``), never deleted; the new one takes the same
    slot. Both are in history with ``reason``.
    """
    if not reason.strip():
        raise InvalidInput("Rework needs a reason.", field="reason")
    when = at or timezone.now()
    old = (
        Link.objects.select_for_update()
        .filter(source=removed, target=assembly, kind=LinkKind.ASSEMBLED, removed_at__isnull=True)
        .first()
    )
    if old is None:
        raise Refused(f"{removed} is not in {assembly}.", field="removed", code="not_assembled")
    old.removed_at = when
    old.removed_reason = reason[:200]
    _stamp(old, actor, f"rework: {reason}")
    old.save(update_fields=["removed_at", "removed_reason"])
    new = unit_assemble(
        part=replacement,
        assembly=assembly,
        slot=old.slot,
        actor=actor,
        linked_at=when,
        reason=f"rework: {reason}",
    )
    return old, new


class MeasurementInput(NamedTuple):
    """One value to record (a named tuple: ingest makes tens of thousands a second)."""

    unit_id: int
    characteristic_id: int
    value: float
    measured_at: datetime
    equipment_id: int | None = None
    visit_id: int | None = None
    position_m: float | None = None
    source_message_id: str = ""


@transaction.atomic
def measurements_record(
    *, rows: Iterable[MeasurementInput], actor: Actor | None, batch_size: int = 2000
) -> list[Measurement]:
    """Record many measurements in one transaction (thousands per call).

    Every value must be finite, its characteristic active and its time not in the future
    (5 min tolerance); the whole call is refused otherwise, naming the row. ``in_spec`` is
    evaluated against the characteristic's limits. Publishes ``MeasurementsRecorded``.
    """
    return _measurements_write(list(rows), actor=actor, batch_size=batch_size)


#: Columns of a measurement row written by :func:`_measurements_write` without instances.
_MEASUREMENT_COLUMNS = (
    "unit_id",
    "characteristic_id",
    "station_id",
    "equipment_id",
    "visit_id",
    "value",
    "in_spec",
    "measured_at",
    "position_m",
    "source_message_id",
    "recorded_by_id",
)


def _measurements_write(
    rows: list[MeasurementInput],
    *,
    actor: Actor | None,
    known_units: set[int] | None = None,
    batch_size: int = 2000,
    instances: bool = True,
    visit_ids: Sequence[int] | None = None,
) -> list[Measurement] | list[int]:
    """:func:`measurements_record` inside the caller's transaction; ``known_units`` when
    the caller has checked the units already, ``visit_ids`` (one per row) instead of the
    rows' own. With ``instances=False`` it returns the new ids only and builds no model
    instances (the bulk ingest path)."""
    if not rows:
        return []
    chars = Characteristic.objects.order_by().in_bulk({r.characteristic_id for r in rows})
    if known_units is None:
        unit_ids = {r.unit_id for r in rows}
        known_units = set(
            Unit.objects.filter(pk__in=unit_ids).order_by().values_list("pk", flat=True)
        )
    horizon = timezone.now() + timedelta(minutes=5)
    actor_id = actor.pk if actor is not None and actor.pk else None
    objs = []
    for i, r in enumerate(rows):
        char = chars.get(r.characteristic_id)
        if char is None or not char.is_active:
            raise NotFound(
                f"Unknown or inactive characteristic id {r.characteristic_id}.",
                field=f"rows[{i}].characteristic",
            )
        if r.unit_id not in known_units:
            raise NotFound(f"Unknown unit id {r.unit_id}.", field=f"rows[{i}].unit")
        if r.value is None or not math.isfinite(r.value):
            raise InvalidInput(
                f"Value {r.value!r} is not a finite number.", field=f"rows[{i}].value"
            )
        if r.position_m is not None and not math.isfinite(r.position_m):
            raise InvalidInput("position_m must be finite.", field=f"rows[{i}].position_m")
        if timezone.is_naive(r.measured_at) or r.measured_at > horizon:
            raise InvalidInput(
                "measured_at must be timezone-aware and not in the future.",
                field=f"rows[{i}].measured_at",
            )
        objs.append(
            (
                r.unit_id,
                char.pk,
                char.station_id,
                r.equipment_id,
                r.visit_id if visit_ids is None else visit_ids[i],
                float(r.value),
                char.is_in_spec(r.value),
                r.measured_at,
                r.position_m,
                r.source_message_id,
                actor_id,
            )
        )
    if instances:
        created = bulk_insert(
            Measurement,
            [Measurement(**dict(zip(_MEASUREMENT_COLUMNS, row, strict=True))) for row in objs],
            batch_size=batch_size,
        )
        ids = [m.pk for m in created]
    else:
        created = ids = insert_rows(Measurement, _MEASUREMENT_COLUMNS, objs)
    earliest: dict[int, datetime] = {}
    for row in objs:
        char_id, at = row[1], row[7]
        if char_id not in earliest or at < earliest[char_id]:
            earliest[char_id] = at
    events.publish(
        MeasurementsRecorded(
            characteristic_ids=tuple(sorted(chars)),
            earliest_measured_at=tuple(sorted(earliest.items())),
            first_measurement_id=min(ids),
            last_measurement_id=max(ids),
            out_of_spec_measurement_ids=tuple(
                pk for pk, row in zip(ids, objs, strict=True) if not row[6]
            ),
        )
    )
    return created


@transaction.atomic
def visit_record(
    *,
    unit: Unit,
    station: Station,
    started_at: datetime,
    actor: Actor | None,
    ended_at: datetime | None = None,
    equipment: Equipment | None = None,
    result: str = VisitResult.OK,
    program: str = "",
    operator: str = "",
    source_message_id: str = "",
) -> StationVisit:
    """Record a unit's pass through a station. Publishes ``VisitsRecorded`` on commit (one
    event for all the visits of the transaction)."""
    if result not in VisitResult.values:
        raise InvalidInput(f"Unknown result {result!r}.", field="result")
    if equipment is not None and equipment.station_id != station.pk:
        raise InvalidInput(f"{equipment} is not at {station}.", field="equipment")
    if ended_at is not None and ended_at < started_at:
        raise InvalidInput("ended_at is before started_at.", field="ended_at")
    visit = StationVisit.objects.create(
        unit=unit,
        station=station,
        equipment=equipment,
        started_at=started_at,
        ended_at=ended_at,
        result=result,
        program=program,
        operator=operator,
        source_message_id=source_message_id,
    )
    progress.visit_recorded(visit)
    return visit


class VisitInput(NamedTuple):
    """One station visit to record, with the values measured during it (their
    ``visit_id`` is filled in when the visit is stored)."""

    unit_id: int
    station_id: int
    started_at: datetime
    ended_at: datetime | None = None
    equipment_id: int | None = None
    result: str = VisitResult.OK
    program: str = ""
    operator: str = ""
    source_message_id: str = ""
    measurements: tuple[MeasurementInput, ...] = ()


_VISIT_COLUMNS = (
    "unit_id",
    "station_id",
    "equipment_id",
    "started_at",
    "ended_at",
    "result",
    "program",
    "operator",
    "source_message_id",
)


@transaction.atomic
def visits_record(*, visits: Sequence[VisitInput], actor: Actor | None) -> list[int]:
    """Record many station visits and their measurements in one transaction (an ingest
    batch of hundreds of station results): the same rules as :func:`visit_record` and
    :func:`measurements_record`, checked for every visit before anything is written; the
    whole call is refused otherwise, naming ``visits[i]``. Publishes one
    ``VisitsRecorded`` and one ``MeasurementsRecorded`` on commit. Returns the new visit
    ids, in order (no model instances: this is the bulk ingest path)."""
    if not visits:
        return []
    equipment_station = dict(
        Equipment.objects.filter(pk__in={v.equipment_id for v in visits if v.equipment_id})
        .order_by()
        .values_list("pk", "station_id")
    )
    unit_ids = {v.unit_id for v in visits} | {m.unit_id for v in visits for m in v.measurements}
    known_units = set(Unit.objects.filter(pk__in=unit_ids).order_by().values_list("pk", flat=True))
    objs = []
    for i, v in enumerate(visits):
        where = f"visits[{i}]"
        if v.result not in VisitResult.values:
            raise InvalidInput(f"Unknown result {v.result!r}.", field=f"{where}.result")
        if v.unit_id not in known_units:
            raise NotFound(f"Unknown unit id {v.unit_id}.", field=f"{where}.unit")
        if v.equipment_id is not None and equipment_station.get(v.equipment_id) != v.station_id:
            raise InvalidInput(
                f"Equipment {v.equipment_id} is not at station {v.station_id}.",
                field=f"{where}.equipment",
            )
        if v.ended_at is not None and v.ended_at < v.started_at:
            raise InvalidInput("ended_at is before started_at.", field=f"{where}.ended_at")
        objs.append(
            (
                v.unit_id,
                v.station_id,
                v.equipment_id,
                v.started_at,
                v.ended_at,
                v.result,
                v.program,
                v.operator,
                v.source_message_id,
            )
        )
    visit_ids = insert_rows(StationVisit, _VISIT_COLUMNS, objs)
    progress.visits_recorded(visit_ids)
    rows = [m for v in visits for m in v.measurements]
    row_visits = [
        visit_id
        for v, visit_id in zip(visits, visit_ids, strict=True)
        for _ in range(len(v.measurements))
    ]
    if rows:
        try:
            _measurements_write(
                rows,
                actor=actor,
                known_units=known_units,
                instances=False,
                visit_ids=row_visits,
            )
        except (InvalidInput, NotFound) as exc:
            raise type(exc)(
                exc.message, field=_visit_row_field(visits, exc.field), code=exc.code
            ) from exc
    return visit_ids


def _visit_row_field(visits: Sequence[VisitInput], field: str | None) -> str | None:
    """``rows[k].value`` of the flattened measurements as ``visits[i].measurements[j].value``."""
    if not field or not field.startswith("rows["):
        return field
    index, _, rest = field[len("rows[") :].partition("]")
    k = int(index)
    for i, v in enumerate(visits):
        if k < len(v.measurements):
            return f"visits[{i}].measurements[{k}]{rest}"
        k -= len(v.measurements)
    return field
