"""Holds and unit status: the only code that changes ``Unit.status``.

Each service locks the units it changes, writes the hold and the unit history (with the
hold number and reason as the change reason, and the acting user), and publishes its event
on commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from simple_history.utils import bulk_update_with_history

from formation.models import CellGrade, CyclerAlarm
from genealogy.choices import UnitKind, UnitStatus
from genealogy.models import Measurement, Unit
from inspection.choices import FlagAction
from inspection.models import CoilFlag
from qms import events
from qms.choices import CommandTransport, SpecialCharacteristic
from qms.exceptions import InvalidInput, NotFound, Refused
from qms.ingest.commands import station_command_send
from qms.ingest.models import CommandKind
from qms.models import Characteristic
from risk.models import RiskScore
from spc import services as spc_services
from spc.choices import AlarmStatus, ChartType
from spc.models import SpcAlarm

from .choices import AlarmDecision, HoldSource, HoldStatus
from .choices import AlarmReactionAction as ACTION
from .events import HoldPlaced, HoldReleased
from .models import AlarmReaction, Hold, HoldUnit, SpcReactionPlan

#: Reactions that hold units.
HOLD_ACTIONS = (ACTION.HOLD_WINDOW, ACTION.HOLD_EXTENSION)

Actor = AbstractBaseUser

#: Largest set of units one hold may cover (a recall of a whole lot is a campaign).
MAX_UNITS_PER_HOLD = 200_000


def _next_number(at: datetime) -> str:
    """``H-<year>-<000001>``, counting per year."""
    prefix = f"H-{at:%Y}-"
    last = (
        Hold.objects.select_for_update()
        .filter(number__startswith=prefix)
        .order_by("-number")
        .values_list("number", flat=True)
        .first()
    )
    seq = int(last.removeprefix(prefix)) + 1 if last else 1
    return f"{prefix}{seq:06d}"


def _status_reason(hold: Hold) -> str:
    return f"hold {hold.number} ({hold.get_source_display()}): {hold.reason}"[:300]


@transaction.atomic
def hold_place(
    *,
    units: Sequence[Unit],
    reason: str,
    source: str,
    actor: Actor,
    source_reference: str = "",
    at: datetime | None = None,
) -> Hold:
    """Put ``units`` on hold. Each unit's status becomes on hold and remembers the status
    it returns to on release. Scrapped and shipped units can be held too (a shipped pack in
    a recall scope), so the hold is on record against them."""
    if not reason or not reason.strip():
        raise InvalidInput("A hold needs a reason.", field="reason")
    if source not in HoldSource.values:
        raise InvalidInput(f"Unknown hold source {source!r}.", field="source")
    unit_ids = sorted({u.pk for u in units})
    if not unit_ids:
        raise InvalidInput("A hold needs at least one unit.", field="units")
    if len(unit_ids) > MAX_UNITS_PER_HOLD:
        raise InvalidInput(f"At most {MAX_UNITS_PER_HOLD} units per hold.", field="units")
    when = at or timezone.now()
    locked = list(Unit.objects.select_for_update().filter(pk__in=unit_ids).order_by("pk"))
    if len(locked) != len(unit_ids):
        raise NotFound("Some units do not exist.", field="units")
    # Units already on hold keep the status they return to when their last hold ends.
    carried = dict(
        HoldUnit.objects.filter(unit_id__in=unit_ids, hold__status=HoldStatus.OPEN)
        .order_by("hold__placed_at")
        .values_list("unit_id", "previous_status")
    )
    hold = Hold(
        reason=reason.strip(),
        source=source,
        source_reference=source_reference,
        placed_by=actor,
        placed_at=when,
    )
    hold._history_user = actor
    hold._change_reason = "placed"
    for attempt in range(5):
        hold.number = _next_number(when)
        try:
            with transaction.atomic():
                hold.save()
            break
        except IntegrityError:  # another process took this number a moment ago
            hold.pk = None
            if attempt == 4:
                raise
    HoldUnit.objects.bulk_create(
        [HoldUnit(hold=hold, unit=u, previous_status=carried.get(u.pk, u.status)) for u in locked],
        batch_size=2000,
    )
    for u in locked:
        u.status = UnitStatus.ON_HOLD
        u.status_reason = _status_reason(hold)
    bulk_update_with_history(
        locked,
        Unit,
        ["status", "status_reason"],
        batch_size=1000,
        default_user=actor,
        default_change_reason=f"{hold.number} placed: {hold.reason}"[:100],
    )
    events.publish(HoldPlaced(hold_id=hold.pk, unit_ids=tuple(unit_ids), source=source))
    return hold


@transaction.atomic
def hold_release(*, hold: Hold, actor: Actor, reason: str, at: datetime | None = None) -> Hold:
    """Release ``hold``. Each unit returns to the status it had before, unless another
    open hold still covers it (then it stays on hold with that hold's reason)."""
    if not reason or not reason.strip():
        raise InvalidInput(
            "A release needs a reason (disposition, evidence).", field="release_reason"
        )
    hold = Hold.objects.select_for_update().get(pk=hold.pk)
    if hold.status != HoldStatus.OPEN:
        raise Refused(
            f"{hold.number} was released already at {hold.released_at:%Y-%m-%d %H:%M}.",
            field="hold",
            code="already_released",
        )
    when = at or timezone.now()
    entries = {hu.unit_id: hu for hu in hold.hold_units.all()}
    locked = list(Unit.objects.select_for_update().filter(pk__in=entries).order_by("pk"))
    others: dict[int, Hold] = {}
    for hu in (
        HoldUnit.objects.filter(unit_id__in=entries, hold__status=HoldStatus.OPEN)
        .exclude(hold=hold)
        .select_related("hold")
        .order_by("hold__placed_at")
    ):
        others.setdefault(hu.unit_id, hu.hold)
    for u in locked:
        other = others.get(u.pk)
        if other is not None:
            u.status_reason = _status_reason(other)
        else:
            u.status = entries[u.pk].previous_status
            u.status_reason = f"released from {hold.number}: {reason.strip()}"[:300]
    hold.status = HoldStatus.RELEASED
    hold.released_by = actor
    hold.released_at = when
    hold.release_reason = reason.strip()
    hold._history_user = actor
    hold._change_reason = "released"
    hold.save()
    bulk_update_with_history(
        locked,
        Unit,
        ["status", "status_reason"],
        batch_size=1000,
        default_user=actor,
        default_change_reason=f"{hold.number} released: {reason.strip()}"[:100],
    )
    events.publish(HoldReleased(hold_id=hold.pk, unit_ids=tuple(sorted(entries))))
    return hold


@transaction.atomic
def unit_status_set(*, unit: Unit, status: str, actor: Actor, reason: str) -> Unit:
    """Scrap, release or ship a unit (not for holds: use :func:`hold_place`)."""
    if status not in (UnitStatus.RELEASED, UnitStatus.SCRAPPED, UnitStatus.SHIPPED):
        raise InvalidInput(f"Status {status!r} is set by holds, not directly.", field="status")
    if not reason.strip():
        raise InvalidInput("A status change needs a reason.", field="reason")
    unit = Unit.objects.select_for_update().get(pk=unit.pk)
    if unit.status == UnitStatus.ON_HOLD:
        raise Refused(
            f"{unit} is on hold ({unit.status_reason}); release the hold first.",
            field="status",
            code="unit_on_hold",
        )
    if unit.status == UnitStatus.SCRAPPED:
        raise Refused(f"{unit} is scrapped.", field="status", code="unit_scrapped")
    unit.status = status
    unit.status_reason = reason.strip()[:300]
    unit._history_user = actor
    unit._change_reason = reason.strip()[:100]
    unit.save(update_fields=["status", "status_reason"])
    return unit


#: Units that an out-of-spec measurement puts on hold at once. A coil's profile value out of
#: spec concerns a segment, not the whole coil: segments are dispositioned by the
#: inspection and SPC reactions, so coils and lots are not held here.
DISCRETE_KINDS = (UnitKind.CELL, UnitKind.MODULE, UnitKind.PACK, UnitKind.VEHICLE)

SYSTEM_USERNAME = "celltrace-rules"


def system_actor() -> Actor:
    """The account that automatic reactions act as (cannot log in), so history names it."""
    user, created = get_user_model().objects.get_or_create(
        username=SYSTEM_USERNAME,
        defaults={"first_name": "Celltrace", "last_name": "rules"},
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _fmt(value: float) -> str:
    return f"{value:.6g}"


@transaction.atomic
def out_of_spec_hold(*, measurement_ids: Sequence[int]) -> list[Hold]:
    """Hold every discrete unit with one of these out-of-spec measurements.

    One hold per characteristic, naming the values and the limits; scrapped units are left
    alone (nothing can use them anyway). The station that measured them is told when it has
    a command transport: stopped for a CC characteristic, else asked to divert the units.
    Safe to run twice: the hold of a characteristic's group of measurements is placed once
    (``source_reference``).
    """
    rows = (
        Measurement.objects.filter(
            pk__in=list(measurement_ids), in_spec=False, unit__kind__in=DISCRETE_KINDS
        )
        .exclude(unit__status=UnitStatus.SCRAPPED)
        .select_related("characteristic__station__line__site", "unit")
        .order_by("characteristic_id", "unit_id", "pk")
    )
    by_char: dict[int, list[Measurement]] = {}
    for m in rows:
        by_char.setdefault(m.characteristic_id, []).append(m)
    holds = []
    actor = None
    for measurements in by_char.values():
        char = measurements[0].characteristic
        first = measurements[0].pk
        reference = f"{char.code} measurement #{first} (+{len(measurements) - 1})"
        if Hold.objects.filter(source=HoldSource.OUT_OF_SPEC, source_reference=reference).exists():
            continue
        worst = [f"{m.unit.serial} {_fmt(m.value)} {char.unit}" for m in measurements[:5]] + (
            [f"and {len(measurements) - 5} more"] if len(measurements) > 5 else []
        )
        limits = f"LSL {_fmt(char.lsl) if char.lsl is not None else '-'}, " + (
            f"USL {_fmt(char.usl) if char.usl is not None else '-'} {char.unit}"
        )
        actor = actor or system_actor()
        hold = hold_place(
            units=[m.unit for m in measurements],
            reason=f"{char.name} out of specification ({limits}): {', '.join(worst)}",
            source=HoldSource.OUT_OF_SPEC,
            source_reference=reference,
            actor=actor,
        )
        _station_react(hold=hold, characteristic=char, units=[m.unit for m in measurements])
        holds.append(hold)
    return holds


def _station_react(*, hold: Hold, characteristic: Characteristic, units: Sequence[Unit]) -> None:
    """Tell the station that measured it: a critical characteristic (CC) out of
    specification stops the station, any other one asks it to divert the held units. A
    station without a command transport reads the interlock instead; nothing is sent."""
    station = characteristic.station
    if station.command_transport == CommandTransport.NONE:
        return
    critical = characteristic.special_class == SpecialCharacteristic.CC
    station_command_send(
        station=station,
        kind=CommandKind.LINE_STOP if critical else CommandKind.HOLD,
        reason=f"Hold {hold.number}: {hold.reason}"[:1000],
        actor=hold.placed_by,
        reference=hold.number,
        unit_serials=[u.serial for u in units],
    )


def vision_hold(*, flag_ids: Sequence[int], unit_ids: Sequence[int]) -> list[Hold]:
    """Hold the cells made from coil metres vision flagged for a hold: one hold per flag,
    naming the coil, the metres and what was found there. Scrapped cells are left alone.
    Safe to run twice: a cell already held for a flag is not held for it again."""
    flags = list(
        CoilFlag.objects.filter(pk__in=list(flag_ids), action=FlagAction.HOLD)
        .select_related("coil", "result__camera__station")
        .order_by("pk")
    )
    holds = []
    actor = None
    for flag in flags:
        reference = f"vision flag #{flag.pk}"
        already = set(
            HoldUnit.objects.filter(
                hold__source=HoldSource.VISION, hold__source_reference=reference
            ).values_list("unit_id", flat=True)
        )
        cells = list(
            Unit.objects.filter(
                pk__in=list(unit_ids), vision_cell_flags__flag=flag, kind=UnitKind.CELL
            )
            .exclude(status=UnitStatus.SCRAPPED)
            .exclude(pk__in=already)
            .order_by("pk")
        )
        if not cells:
            continue
        actor = actor or system_actor()
        holds.append(
            hold_place(
                units=cells,
                reason=(
                    f"Made from {flag.coil.serial} metres {flag.start_m:.3f} to {flag.end_m:.3f}: "
                    f"{flag.reason}"
                ),
                source=HoldSource.VISION,
                source_reference=reference,
                actor=actor,
            )
        )
    return holds


def formation_hold(*, cell_ids: Sequence[int]) -> list[Hold]:
    """Hold the cells whose latest grade failed the K-value screen (self-discharge above the
    absolute or the lot-relative limit), so module assembly refuses them. One hold per
    grading run of cells, naming each cell's K-value and the limit it broke. Scrapped cells
    are left alone. Safe to run twice: a cell already held for its latest grade is not held
    again."""
    latest: dict[int, CellGrade] = {}
    for grade in (
        CellGrade.objects.filter(unit_id__in=list(cell_ids))
        .select_related("unit")
        .order_by("unit_id", "-graded_at", "-id")
    ):
        latest.setdefault(grade.unit_id, grade)
    failed = [
        g for g in latest.values() if g.k_screen_failed and g.unit.status != UnitStatus.SCRAPPED
    ]
    if not failed:
        return []
    last_held: dict[int, datetime] = {}
    for unit_id, placed_at in HoldUnit.objects.filter(
        unit_id__in=[g.unit_id for g in failed], hold__source=HoldSource.FORMATION
    ).values_list("unit_id", "hold__placed_at"):
        last_held[unit_id] = max(placed_at, last_held.get(unit_id, placed_at))
    # Held for this grade already (a hold placed at or after it was graded).
    failed = [g for g in failed if g.unit_id not in last_held or last_held[g.unit_id] < g.graded_at]
    if not failed:
        return []
    failed.sort(key=lambda g: g.pk)

    def why(g: CellGrade) -> str:
        return f"{g.unit.serial}: {'; '.join(str(r) for r in g.reasons) or g.bin}"

    listed = [why(g) for g in failed[:5]] + (
        [f"and {len(failed) - 5} more"] if len(failed) > 5 else []
    )
    hold = hold_place(
        units=[g.unit for g in failed],
        reason=f"K-value screen failed at grading (self-discharge): {', '.join(listed)}",
        source=HoldSource.FORMATION,
        source_reference=f"grade #{failed[0].pk}"
        + (f" (+{len(failed) - 1})" if len(failed) > 1 else ""),
        actor=system_actor(),
    )
    return [hold]


def cycler_alarm_hold(*, alarm_id: int) -> Hold | None:
    """Hold the cell on a channel whose cycler raised a critical alarm (over-temperature,
    voltage out of window, contact fault): whatever the formation result says, a cell
    that overheated or lost contact in formation goes to the MRB, not to module assembly.
    Nothing is held for an empty channel or a scrapped cell. Safe to run twice: one hold
    per alarm episode."""
    alarm = (
        CyclerAlarm.objects.filter(pk=alarm_id)
        .select_related("unit", "channel_status__equipment")
        .first()
    )
    if alarm is None or alarm.unit is None or alarm.unit.status == UnitStatus.SCRAPPED:
        return None
    reference = f"cycler alarm #{alarm.pk}"
    if Hold.objects.filter(source=HoldSource.FORMATION, source_reference=reference).exists():
        return None
    where = f"{alarm.channel_status.equipment.code} channel {alarm.channel_status.channel}"
    reading = f"{alarm.voltage_v:.3f} V"
    if alarm.temperature_c is not None:
        reading += f", {alarm.temperature_c:.1f} °C"
    return hold_place(
        units=[alarm.unit],
        reason=(
            f"Critical cycler alarm {alarm.code} on {where} at "
            f"{alarm.raised_at:%Y-%m-%d %H:%M:%S} UTC ({reading}): {alarm.text or 'no text'}"
        ),
        source=HoldSource.FORMATION,
        source_reference=reference,
        actor=system_actor(),
    )


def risk_hold(*, score_ids: Sequence[int]) -> list[Hold]:
    """Hold the cells whose thermal-risk score put them above their product's quarantine
    threshold, so module assembly refuses them. One hold per model version and product
    (each product has its own threshold), naming each cell's risk, the threshold and the
    top reasons. Only a cell's latest score counts
    (a score that a newer one replaced holds nothing); scrapped cells are left alone. Safe
    to run twice: a cell already held for a score, or still on an open risk hold, is not
    held again; a cell whose risk hold was released is held again by a later score above
    the threshold (new evidence), not by the score it was released from."""
    scores = list(
        RiskScore.objects.filter(pk__in=list(score_ids), quarantined=True)
        .select_related("unit")
        .order_by("pk")
    )
    if not scores:
        return []
    newest = dict(
        RiskScore.objects.filter(unit_id__in=[s.unit_id for s in scores])
        .order_by("unit_id", "scored_at", "id")
        .values_list("unit_id", "id")
    )
    scores = [
        s
        for s in scores
        if newest.get(s.unit_id) == s.pk
        and s.unit.kind == UnitKind.CELL
        and s.unit.status != UnitStatus.SCRAPPED
    ]
    last_held: dict[int, datetime] = {}
    open_held: set[int] = set()
    for unit_id, placed_at, status in HoldUnit.objects.filter(
        unit_id__in=[s.unit_id for s in scores], hold__source=HoldSource.RISK
    ).values_list("unit_id", "hold__placed_at", "hold__status"):
        last_held[unit_id] = max(placed_at, last_held.get(unit_id, placed_at))
        if status == HoldStatus.OPEN:
            open_held.add(unit_id)
    # Held for this score already (a risk hold placed at or after it was given), or still
    # held for an earlier one.
    scores = [
        s
        for s in scores
        if s.unit_id not in open_held
        and (s.unit_id not in last_held or last_held[s.unit_id] < s.scored_at)
    ]
    holds = []
    actor = None
    by_rule: dict[tuple[str, str], list[RiskScore]] = {}
    for s in scores:  # each product has its own threshold
        by_rule.setdefault((s.model_version, s.product), []).append(s)
    for (version, _product), batch in sorted(by_rule.items()):

        def why(s: RiskScore) -> str:
            reasons = "; ".join(s.reasons[:2]) if s.reasons else "no single reason stands out"
            return f"{s.unit.serial} risk {s.risk:.4f} ({reasons})"

        listed = [why(s) for s in batch[:5]] + (
            [f"and {len(batch) - 5} more"] if len(batch) > 5 else []
        )
        rule = batch[0]
        actor = actor or system_actor()
        holds.append(
            hold_place(
                units=[s.unit for s in batch],
                reason=(
                    f"Thermal-risk score above the quarantine threshold {rule.threshold:.4f} "
                    f"({rule.threshold_mode.replace('_', ' ')}) of model {version}: "
                    + ", ".join(listed)
                ),
                source=HoldSource.RISK,
                source_reference=f"risk score #{batch[0].pk}"
                + (f" (+{len(batch) - 1})" if len(batch) > 1 else ""),
                actor=actor,
            )
        )
    return holds


def vision_count_charts(*, characteristic_ids: Sequence[int]) -> list:
    """Vision's defect-count characteristics (one per class and camera, counts per 10 m of
    coil) charted as c charts: one count per point, rule 1, no detectors. A configuration a
    quality engineer already made is left as it is; safe to run twice."""
    return [
        spc_services.chart_config_ensure(
            characteristic=characteristic,
            reason=f"c chart of {characteristic.name} (vision feed)",
            chart_type=ChartType.C,
            rules=[1],
        )
        for characteristic in Characteristic.objects.filter(pk__in=list(characteristic_ids))
        .filter(code__startswith="vision-")
        .order_by("pk")
    ]


# --- reactions to SPC alarms ------------------------------------------------------------------


def spc_reaction_plan(characteristic: Characteristic) -> SpcReactionPlan:
    """The characteristic's plan, or the default: hold and stop for CC and SC, else none."""
    plan = SpcReactionPlan.objects.filter(characteristic=characteristic).first()
    if plan is not None:
        return plan
    special = characteristic.special_class in (SpecialCharacteristic.CC, SpecialCharacteristic.SC)
    return SpcReactionPlan(characteristic=characteristic, hold_window=special, stop_line=special)


def _window_units(alarm: SpcAlarm, *, until: datetime) -> list[Unit]:
    """Every unit measured on the alarm's characteristic from the start of its pattern (the
    last values before it were in control) until ``until``; scrapped ones are left alone."""
    unit_ids = (
        Measurement.objects.filter(
            characteristic_id=alarm.characteristic_id,
            measured_at__gte=alarm.first_measured_at,
            measured_at__lte=until,
        )
        .order_by()
        .values("unit_id")
        .distinct()
    )
    return list(
        Unit.objects.filter(pk__in=unit_ids).exclude(status=UnitStatus.SCRAPPED).order_by("pk")
    )


def _alarm_text(alarm: SpcAlarm) -> str:
    char = alarm.characteristic
    return (
        f"SPC alarm {alarm.pk}: {alarm.rule_name} on {char.code} ({char.name}, "
        f"{char.get_special_class_display()}) at {char.station}"
    )


def _open_spc_holds(characteristic_id: int):
    """Open holds placed for alarms of this characteristic."""
    return Hold.objects.filter(
        status=HoldStatus.OPEN,
        alarm_reactions__alarm__characteristic_id=characteristic_id,
        alarm_reactions__action__in=HOLD_ACTIONS,
    ).distinct()


def _window_hold(
    alarm: SpcAlarm, *, text: str, actor: Actor, now: datetime
) -> tuple[Hold | None, str]:
    """Hold the alarm's suspect window. Units already held for another alarm of the same
    characteristic (several rules fire on one shift) are not held twice: the alarm is linked
    to that hold, and a new hold takes only the units not yet held."""
    window = f"{alarm.first_measured_at:%Y-%m-%d %H:%M:%S} UTC"
    units = _window_units(alarm, until=now)
    if not units:
        return None, f"no unit measured since {window} that is not scrapped"
    open_holds = list(_open_spc_holds(alarm.characteristic_id).order_by("-placed_at"))
    covered = set(HoldUnit.objects.filter(hold__in=open_holds).values_list("unit_id", flat=True))
    new_units = [u for u in units if u.pk not in covered]
    if not new_units:
        hold = open_holds[0]
        spc_services.alarm_link_hold(alarm=alarm, hold_number=hold.number, actor=actor)
        return hold, f"{len(units)} units since {window} held already by {hold.number}"
    hold = hold_place(
        units=new_units,
        reason=f"{text}: suspect window since {window}, {len(new_units)} units",
        source=HoldSource.SPC,
        source_reference=f"SPC alarm {alarm.pk}",
        actor=actor,
        at=now,
    )
    spc_services.alarm_link_hold(alarm=alarm, hold_number=hold.number, actor=actor)
    already = len(units) - len(new_units)
    more = f" ({already} more held already for earlier alarms)" if already else ""
    return hold, f"{hold.number}: {len(new_units)} units measured since {window}{more}"


def _open_line_stop(station, *, excluding: SpcAlarm) -> AlarmReaction | None:
    """A line stop sent to ``station`` for an SPC alarm that is not closed yet."""
    return (
        AlarmReaction.objects.filter(
            action=ACTION.LINE_STOP,
            command__isnull=False,
            alarm__characteristic__station=station,
        )
        .exclude(alarm=excluding)
        .exclude(alarm__status=AlarmStatus.CLOSED)
        .order_by("created_at")
        .first()
    )


@transaction.atomic
def spc_alarm_react(*, alarm_id: int) -> list[AlarmReaction]:
    """React to a new control alarm as the characteristic's plan says: hold the suspect
    window and/or stop the station; each reaction is recorded with the alarm. Safe to run
    twice: an alarm is reacted to once."""
    alarm = SpcAlarm.objects.select_for_update().get(pk=alarm_id)
    alarm = SpcAlarm.objects.select_related("characteristic__station__line__site").get(pk=alarm.pk)
    done = list(AlarmReaction.objects.filter(alarm=alarm).exclude(action=ACTION.HOLD_EXTENSION))
    if done:
        return done
    char = alarm.characteristic
    plan = spc_reaction_plan(char)
    actor = system_actor()
    text = _alarm_text(alarm)
    now = timezone.now()
    reactions: list[AlarmReaction] = []
    hold = None
    if plan.hold_window:
        hold, detail = _window_hold(alarm, text=text, actor=actor, now=now)
        reactions.append(
            AlarmReaction.objects.create(
                alarm=alarm, action=ACTION.HOLD_WINDOW, hold=hold, detail=detail
            )
        )
    if plan.stop_line:
        station = char.station
        command = None
        stopped_by = _open_line_stop(station, excluding=alarm)
        if station.command_transport == CommandTransport.NONE:
            detail = f"{station} has no command transport: it reads the interlock"
        elif stopped_by is not None:
            detail = f"{station} stopped already for SPC alarm {stopped_by.alarm_id}"
        else:
            command = station_command_send(
                station=station,
                kind=CommandKind.LINE_STOP,
                reason=f"{text}"[:1000],
                actor=actor,
                reference=hold.number if hold else f"SPC alarm {alarm.pk}",
            )
            detail = f"line stop to {station} over {station.get_command_transport_display()}"
        reactions.append(
            AlarmReaction.objects.create(
                alarm=alarm, action=ACTION.LINE_STOP, hold=hold, command=command, detail=detail
            )
        )
    if not reactions:
        reactions.append(
            AlarmReaction.objects.create(
                alarm=alarm,
                action=ACTION.ALARM_ONLY,
                detail=(
                    f"the reaction plan of {char.code} neither holds nor stops"
                    if plan.pk
                    else f"{char.code} is neither CC nor SC and has no reaction plan"
                ),
            )
        )
    return reactions


@transaction.atomic
def spc_alarm_extend(*, alarm_id: int) -> AlarmReaction | None:
    """The alarm's pattern went on: hold the units measured since its window hold was placed
    (a hold of their own, referring to the alarm). Nothing when the alarm has no window hold
    or every unit is held already for an alarm of the characteristic. Safe to run twice."""
    alarm = SpcAlarm.objects.select_for_update().get(pk=alarm_id)
    first = (
        AlarmReaction.objects.filter(alarm=alarm, action=ACTION.HOLD_WINDOW, hold__isnull=False)
        .select_related("hold")
        .first()
    )
    if first is None:
        return None
    alarm = SpcAlarm.objects.select_related("characteristic__station__line__site").get(pk=alarm.pk)
    held = set(
        HoldUnit.objects.filter(hold__in=_open_spc_holds(alarm.characteristic_id)).values_list(
            "unit_id", flat=True
        )
    )
    units = [u for u in _window_units(alarm, until=timezone.now()) if u.pk not in held]
    if not units:
        return None
    actor = system_actor()
    hold = hold_place(
        units=units,
        reason=f"{_alarm_text(alarm)}: the pattern went on, {len(units)} more units",
        source=HoldSource.SPC,
        source_reference=f"SPC alarm {alarm.pk} (continued)",
        actor=actor,
    )
    return AlarmReaction.objects.create(
        alarm=alarm,
        action=ACTION.HOLD_EXTENSION,
        hold=hold,
        detail=f"{hold.number}: {len(units)} more units",
    )


@transaction.atomic
def spc_alarm_disposition(
    *, alarm: SpcAlarm, actor: Actor, decision: str, reason: str, cause: str = ""
) -> AlarmReaction:
    """A quality engineer's decision on an SPC alarm once its cause is known. ``release``:
    the alarm's open holds are released with ``reason``, a stopped station is told to resume,
    and the alarm is closed. ``escalate``: the holds stay for the MRB, the alarm stays open
    for them. An open alarm is acknowledged on the way (``cause`` required then)."""
    if decision not in AlarmDecision.values:
        raise InvalidInput(f"Unknown decision {decision!r}.", field="decision")
    if not reason or not reason.strip():
        raise InvalidInput("A decision needs a reason (evidence, disposition).", field="reason")
    reason = reason.strip()
    alarm = SpcAlarm.objects.select_for_update().get(pk=alarm.pk)
    if alarm.status == AlarmStatus.CLOSED:
        raise Refused(f"Alarm {alarm.pk} is closed already.", field="alarm", code="closed")
    if alarm.status == AlarmStatus.OPEN:
        alarm = spc_services.alarm_acknowledge(alarm=alarm, actor=actor, cause=cause)
    alarm = SpcAlarm.objects.select_related("characteristic__station").get(pk=alarm.pk)
    if decision == AlarmDecision.ESCALATE:
        return AlarmReaction.objects.create(
            alarm=alarm, action=ACTION.ESCALATED, detail=f"{actor}: {reason}"
        )
    holds = list(
        Hold.objects.filter(
            alarm_reactions__alarm=alarm,
            alarm_reactions__action__in=HOLD_ACTIONS,
            status=HoldStatus.OPEN,
        ).distinct()
    )
    for hold in holds:
        hold_release(hold=hold, actor=actor, reason=f"SPC alarm {alarm.pk}: {reason}")
    station = alarm.characteristic.station
    stopped = AlarmReaction.objects.filter(
        alarm=alarm, action=ACTION.LINE_STOP, alarm__characteristic__station=station
    ).exists()
    command = None
    # Resume only when this alarm stopped it (or found it stopped) and no other open alarm
    # still wants it stopped.
    if stopped and (
        station.command_transport != CommandTransport.NONE
        and not AlarmReaction.objects.filter(
            action=ACTION.LINE_STOP, alarm__characteristic__station=station
        )
        .exclude(alarm=alarm)
        .exclude(alarm__status=AlarmStatus.CLOSED)
        .exists()
    ):
        command = station_command_send(
            station=station,
            kind=CommandKind.RELEASE,
            reason=f"SPC alarm {alarm.pk} released: {reason}"[:1000],
            actor=actor,
            reference=f"SPC alarm {alarm.pk}",
        )
    spc_services.alarm_close(alarm=alarm, actor=actor, comment=f"released: {reason}")
    released = ", ".join(h.number for h in holds) or "no open hold"
    return AlarmReaction.objects.create(
        alarm=alarm,
        action=ACTION.RELEASED,
        command=command,
        detail=f"{actor}: {reason} ({released}{'; station resumed' if command else ''})",
    )
