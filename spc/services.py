"""Every write of SPC: chart configuration, control limits (propose, approve, reject),
the real-time evaluation that raises alarms, and alarm acknowledgement.

Each service runs in one transaction, checks its rules before writing, and records the
acting user and the reason in history. A refusal raises a :mod:`qms.exceptions` error naming
the field and writes nothing.

A characteristic charted as ``c`` counts nonconformities per constant inspection unit
(the vision defects of 10 m of coil): its values are whole numbers of 0 or more, each one
point of the chart against c-bar +- 3 sqrt(c-bar), without CUSUM or EWMA (they assume
normal data); a value that is not a count is refused wherever it is met, naming it.

Real-time evaluation (:func:`spc_evaluate`) runs as a Celery task after measurements
commit (``spc.subscribers``). Per characteristic it locks the chart configuration (one
evaluation at a time), restores the engine's ``Monitor`` from the checkpoint before the
earliest new value, replays the values after it, raises an alarm per out-of-control
pattern (further firings of the same rule soon after extend it; found again, not
duplicated, when the same values are evaluated twice) and writes checkpoints every
:data:`CHECKPOINT_EVERY` values plus the latest one. A value that arrives late lands
before the head: evaluation restarts from the checkpoint before it, so the subgroups and
run rules around it are evaluated again with it in place.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from simple_history.utils import bulk_create_with_history, bulk_update_with_history

from qms import events
from qms.choices import SpecialCharacteristic
from qms.exceptions import InvalidInput, NotFound, Refused
from qms.models import Characteristic
from spc.engine import (
    RULES,
    CusumSpec,
    EwmaSpec,
    Limits,
    Monitor,
    MonitorState,
    RuleSet,
    Signal,
    UnknownRuleError,
    make_subgroups,
    phase1_attribute,
    phase1_individuals,
    phase1_subgroups,
)

from . import queries
from .choices import (
    AlarmSeverity,
    AlarmStatus,
    ChartType,
    LimitsStatus,
    RulePreset,
    SubgroupMode,
)
from .events import AlarmExtended, AlarmRaised
from .models import ChartCheckpoint, ChartConfig, ControlLimits, SpcAlarm
from .queries import MIN_BASELINE_SUBGROUPS, MIN_BASELINE_VALUES, StreamRow

Actor = AbstractBaseUser

#: A checkpoint every this many values of the stream (plus the latest one).
CHECKPOINT_EVERY = 200
#: Stream rows kept in memory to name the values behind a signal (older ones are read back).
ROW_WINDOW = 4096
#: Charted subgroups whose bounds a checkpoint remembers.
RECENT_SUBGROUPS = 256
#: Most measurements listed on one alarm (the latest ones of a long CUSUM run).
MAX_ALARM_POINTS = 500
#: A firing of a rule on a statistic whose pattern begins within this many plotted points
#: after the rule's last firing goes on with that alarm; after a longer quiet spell the next
#: firing raises a new one. A lasting shift is one alarm per rule, not one per point.
ALARM_GAP = 25
#: Largest subgroup of consecutive values.
MAX_SUBGROUP_SIZE = 50
#: Rules whose signal on a CC characteristic is critical: beyond the limits, or shifted.
CRITICAL_RULES = frozenset({"nelson_1", "cusum", "ewma"})

APPROVE_PERMISSION = "spc.approve_controllimits"

#: Configuration fields a person may change, and those that change what is evaluated.
CONFIG_FIELDS = (
    "chart_type",
    "subgroup_mode",
    "subgroup_size",
    "subgroup_window_s",
    "rule_preset",
    "rules",
    "cusum_enabled",
    "cusum_k_sigma",
    "cusum_h_sigma",
    "cusum_head_start_sigma",
    "ewma_enabled",
    "ewma_lambda",
    "ewma_l",
    "enabled",
)
PRESET_RULES = {
    RulePreset.NELSON: [1, 2, 3, 4, 5, 6, 7, 8],
    RulePreset.WESTERN_ELECTRIC: [1, 2, 5, 6],
}


class NotPermitted(Refused):
    """The actor's role lacks the permission for this step."""

    code = "not_permitted"
    http_status = 403


def _stamp(obj, actor: Actor | None, reason: str) -> None:
    """Tell simple-history who made this change and why."""
    obj._history_user = actor
    obj._change_reason = reason[:100]  # simple-history keeps 100 characters


def _aware(value: Any, field_name: str) -> datetime:
    if not isinstance(value, datetime) or timezone.is_naive(value):
        raise InvalidInput(
            f"{field_name} must be a timezone-aware date and time.", field=field_name
        )
    return value


# ------------------------------------------------------------------ chart configuration


def chart_config_get_or_create(*, characteristic: Characteristic) -> ChartConfig:
    """The characteristic's chart configuration; the default one (I-MR, Nelson rules 1-8,
    the default CUSUM) is created on first use."""
    config = ChartConfig.objects.filter(characteristic=characteristic).first()
    if config is not None:
        return config
    config = ChartConfig(characteristic=characteristic)
    _stamp(config, None, "default configuration")
    try:
        with transaction.atomic():
            config.save()
    except IntegrityError:  # made by a concurrent first use a moment ago
        return ChartConfig.objects.get(characteristic=characteristic)
    return config


def _config_locked(characteristic_id: int) -> ChartConfig:
    characteristic = Characteristic.objects.filter(pk=characteristic_id).first()
    if characteristic is None:
        raise NotFound(f"No characteristic {characteristic_id}.", field="characteristic")
    chart_config_get_or_create(characteristic=characteristic)
    return (
        ChartConfig.objects.select_for_update()
        .select_related("characteristic__station")
        .get(characteristic_id=characteristic_id)
    )


def _float(values: dict[str, Any], name: str) -> float:
    value = values[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number, got {value!r}.", field=name)
    return float(value)


def _int(values: dict[str, Any], name: str) -> int | None:
    value = values[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number, got {value!r}.", field=name)
    return value


def chart_config_validate(values: Mapping[str, Any], *, changed: Iterable[str] = ()) -> dict:
    """A complete configuration checked and normalised (rules from the preset), or
    :class:`InvalidInput` naming the field. ``changed`` are the fields the caller set: rules
    set without a preset make the preset ``custom``."""
    out = dict(values)
    changed = set(changed)
    chart = out["chart_type"]
    if chart not in ChartType.values:
        raise InvalidInput(
            f"Unknown chart type {chart!r}: use one of {', '.join(ChartType.values)} "
            "(p, np and u attribute charts need counts and sample sizes, which measured "
            "values do not carry; a c chart takes counts in a constant inspection unit).",
            field="chart_type",
        )
    mode = out["subgroup_mode"]
    if mode not in SubgroupMode.values:
        raise InvalidInput(f"Unknown subgroup mode {mode!r}.", field="subgroup_mode")
    if chart in (ChartType.I_MR, ChartType.C) and "chart_type" in changed:
        # Individuals and counts: unless the caller says otherwise, subgroups of one value.
        if "subgroup_mode" not in changed:
            mode = out["subgroup_mode"] = SubgroupMode.CONSECUTIVE
        if "subgroup_size" not in changed:
            out["subgroup_size"] = 1
    if chart == ChartType.C and "chart_type" in changed:
        # Counts are not normal data: no CUSUM or EWMA, and rule 1 alone unless the caller
        # chooses rules (with a small c-bar most counts are 0, below the centre line, and
        # the run and zone rules fire on in-control data; docs/spc.md has the figures).
        for name in ("cusum_enabled", "ewma_enabled"):
            if name not in changed:
                out[name] = False
        if "rules" not in changed and "rule_preset" not in changed:
            out["rule_preset"], out["rules"] = RulePreset.CUSTOM, [1]
    size = _int(out, "subgroup_size")
    window = _int(out, "subgroup_window_s")
    if chart == ChartType.I_MR:
        if mode != SubgroupMode.CONSECUTIVE:
            raise InvalidInput(
                "An I-MR chart plots every value: subgroups need an X-bar-S chart.",
                field="subgroup_mode",
            )
        if size != 1:
            raise InvalidInput(
                "An I-MR chart plots individual values: the subgroup size is 1.",
                field="subgroup_size",
            )
    elif chart == ChartType.C:
        if mode != SubgroupMode.CONSECUTIVE:
            raise InvalidInput(
                "A c chart plots every count (one inspection unit per value): it takes no "
                "subgroups.",
                field="subgroup_mode",
            )
        if size != 1:
            raise InvalidInput(
                "A c chart plots one count per inspection unit: the subgroup size is 1.",
                field="subgroup_size",
            )
        for name, what in (("cusum_enabled", "CUSUM"), ("ewma_enabled", "EWMA")):
            if out[name] is True:
                raise InvalidInput(
                    f"The {what} assumes normal data; a c chart counts nonconformities "
                    "(Poisson): it runs without CUSUM and EWMA.",
                    field=name,
                )
    else:
        if chart == ChartType.XBAR_R and mode != SubgroupMode.CONSECUTIVE:
            raise InvalidInput(
                "An X-bar-R chart needs subgroups of one size (consecutive values); time "
                "windows, units and lots give subgroups of varying size: use X-bar-S.",
                field="subgroup_mode",
            )
        if mode == SubgroupMode.CONSECUTIVE and (
            size is None or not 2 <= size <= MAX_SUBGROUP_SIZE
        ):
            raise InvalidInput(
                f"Consecutive subgroups need a size within 2..{MAX_SUBGROUP_SIZE}.",
                field="subgroup_size",
            )
        if mode == SubgroupMode.TIME_WINDOW and (window is None or window <= 0):
            raise InvalidInput(
                "A time window needs its width in seconds (> 0).", field="subgroup_window_s"
            )
    if mode != SubgroupMode.TIME_WINDOW:
        out["subgroup_window_s"] = None
    if mode != SubgroupMode.CONSECUTIVE:
        out["subgroup_size"] = max(size or 2, 2)
    preset = out["rule_preset"]
    if preset not in RulePreset.values:
        raise InvalidInput(
            f"Unknown rule preset {preset!r}: use one of {', '.join(RulePreset.values)}.",
            field="rule_preset",
        )
    rules = out["rules"]
    if "rules" in changed and "rule_preset" not in changed:
        preset = out["rule_preset"] = RulePreset.CUSTOM
    if not isinstance(rules, list | tuple):
        raise InvalidInput("rules must be a list of Nelson rule numbers.", field="rules")
    try:
        ruleset = RuleSet(rules)
    except UnknownRuleError as exc:
        raise InvalidInput(str(exc), field="rules") from exc
    if preset != RulePreset.CUSTOM:
        expected = PRESET_RULES[preset]
        if "rules" in changed and sorted(ruleset.rules) != expected:
            raise InvalidInput(
                f"The {preset} preset is rules {expected}; choose rule_preset 'custom' to "
                "pick rules.",
                field="rules",
            )
        out["rules"] = list(expected)
    else:
        out["rules"] = sorted(ruleset.rules)
    for name in ("cusum_k_sigma", "cusum_h_sigma", "cusum_head_start_sigma"):
        out[name] = _float(out, name)
    for name in ("ewma_lambda", "ewma_l"):
        out[name] = _float(out, name)
    try:
        CusumSpec(k=out["cusum_k_sigma"], h=out["cusum_h_sigma"])
    except ValueError as exc:
        name = "cusum_k_sigma" if str(exc).startswith("k ") else "cusum_h_sigma"
        raise InvalidInput(f"CUSUM: {exc}.", field=name) from exc
    try:
        CusumSpec(
            k=out["cusum_k_sigma"],
            h=out["cusum_h_sigma"],
            head_start=out["cusum_head_start_sigma"],
        )
    except ValueError as exc:
        raise InvalidInput(f"CUSUM: {exc}.", field="cusum_head_start_sigma") from exc
    try:
        EwmaSpec(lam=out["ewma_lambda"], L=out["ewma_l"])
    except ValueError as exc:
        name = "ewma_lambda" if str(exc).startswith("lam") else "ewma_l"
        raise InvalidInput(f"EWMA: {exc}.", field=name) from exc
    for name in ("cusum_enabled", "ewma_enabled", "enabled"):
        if not isinstance(out[name], bool):
            raise InvalidInput(f"{name} must be true or false.", field=name)
    return out


@transaction.atomic
def chart_config_update(
    *, config: ChartConfig, actor: Actor, reason: str = "", **changes: Any
) -> ChartConfig:
    """Change how a characteristic is charted. Checks the whole configuration (an unknown
    run rule is refused, naming it); records who and why in history. A change to what is
    evaluated drops the characteristic's checkpoints and schedules its evaluation, so the
    stream is evaluated again from its approved limits with the new configuration (alarms
    already raised stay on record)."""
    unknown = sorted(set(changes) - set(CONFIG_FIELDS))
    if unknown:
        raise InvalidInput(f"Unknown configuration field {unknown[0]!r}.", field=unknown[0])
    config = _config_locked(config.characteristic_id)
    current = {name: getattr(config, name) for name in CONFIG_FIELDS}
    checked = chart_config_validate({**current, **changes}, changed=changes)
    changed = [name for name in CONFIG_FIELDS if checked[name] != current[name]]
    if not changed:
        return config
    for name in changed:
        setattr(config, name, checked[name])
    _stamp(config, actor, reason.strip() or f"changed {', '.join(changed)}")
    config.save()
    ChartCheckpoint.objects.filter(characteristic_id=config.characteristic_id).delete()
    _schedule_evaluation(config.characteristic_id)
    return config


def chart_config_ensure(
    *,
    characteristic: Characteristic,
    reason: str,
    actor: Actor | None = None,
    **values: Any,
) -> ChartConfig:
    """The characteristic's chart configuration: the existing one, left as it is (a person
    may have changed it since), or a new one with ``values`` on top of the defaults, checked
    as :func:`chart_config_update` checks a change (for instance ``chart_type="c"``: one
    count per point, no detectors, rule 1). For integrations that create characteristics
    (the vision feed); history records ``reason``."""
    unknown = sorted(set(values) - set(CONFIG_FIELDS))
    if unknown:
        raise InvalidInput(f"Unknown configuration field {unknown[0]!r}.", field=unknown[0])
    config = ChartConfig.objects.filter(characteristic=characteristic).first()
    if config is not None:
        return config
    blank = ChartConfig(characteristic=characteristic)
    defaults = {name: getattr(blank, name) for name in CONFIG_FIELDS}
    checked = chart_config_validate({**defaults, **values}, changed=values)
    for name in CONFIG_FIELDS:
        setattr(blank, name, checked[name])
    _stamp(blank, actor, reason)
    try:
        with transaction.atomic():
            blank.save()
    except IntegrityError:  # made by a concurrent first use a moment ago
        return ChartConfig.objects.get(characteristic=characteristic)
    return blank


def _schedule_evaluation(characteristic_id: int) -> None:
    from .tasks import spc_evaluate_task

    transaction.on_commit(
        lambda: spc_evaluate_task.delay(characteristic_id=characteristic_id), robust=True
    )


# ---------------------------------------------------------------------- control limits


def _exclusions(excluded: Iterable[Any]) -> dict[int, str]:
    """``[{"measurement_id", "reason"}]`` (or ``(id, reason)`` pairs) as id -> reason."""
    out: dict[int, str] = {}
    for i, item in enumerate(excluded):
        if isinstance(item, Mapping):
            measurement_id, reason = item.get("measurement_id"), item.get("reason")
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
            measurement_id, reason = item
        else:
            raise InvalidInput(
                "Each exclusion names a measurement_id and the reason.", field=f"excluded[{i}]"
            )
        if isinstance(measurement_id, bool) or not isinstance(measurement_id, int):
            raise InvalidInput(
                f"measurement_id must be a whole number, got {measurement_id!r}.",
                field=f"excluded[{i}].measurement_id",
            )
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidInput(
                "An excluded value needs its assignable cause.", field=f"excluded[{i}].reason"
            )
        out.setdefault(measurement_id, reason.strip())
    return out


def _signal_brief(signal: Signal) -> dict[str, Any]:
    return {"rule": signal.rule, "statistic": signal.statistic, "value": signal.value}


@transaction.atomic
def limits_propose(
    *,
    characteristic: Characteristic,
    baseline_from: datetime,
    baseline_to: datetime,
    actor: Actor,
    excluded: Iterable[Any] = (),
    note: str = "",
) -> ControlLimits:
    """Phase I: propose control limits from the values measured in ``[baseline_from,
    baseline_to)`` without the ``excluded`` ones (measurement ids with their assignable
    cause; for subgroup charts a subgroup is left out when one of its values is).

    The result is the characteristic's draft (made, or replaced while it is a draft: its
    history keeps every iteration) with the engine's limits and its proposals for further
    exclusions: the points beyond these limits. The quality engineer confirms those with an
    assignable cause and proposes again, until nothing is proposed or the rest is kept;
    then a person allowed to approves it. Too few values is refused, naming the minimum;
    a baseline without variation gives limits on the centre line (``degenerate``), which
    cannot be approved. On a c chart the values are counts (c-bar +- 3 sqrt(c-bar)); a
    value that is not one is refused, naming it.
    """
    baseline_from = _aware(baseline_from, "baseline_from")
    baseline_to = _aware(baseline_to, "baseline_to")
    if baseline_from >= baseline_to:
        raise InvalidInput("baseline_from must be before baseline_to.", field="baseline_to")
    exclusions = _exclusions(excluded)
    config = _config_locked(characteristic.pk)
    rows = list(
        queries.stream_rows(
            characteristic.pk, config.subgroup_mode, start=baseline_from, end=baseline_to
        )
    )
    positions = {row.id: i for i, row in enumerate(rows)}
    for i, measurement_id in enumerate(exclusions):
        if measurement_id not in positions:
            raise InvalidInput(
                f"Measurement {measurement_id} is not a value of {characteristic.code} in the "
                "baseline window.",
                field=f"excluded[{i}].measurement_id",
            )
    values = np.array([row.value for row in rows], dtype=np.float64)
    excluded_positions = sorted(positions[m] for m in exclusions)
    window = f"{baseline_from:%Y-%m-%d %H:%M} to {baseline_to:%Y-%m-%d %H:%M}"
    if config.chart_type == ChartType.I_MR:
        phase = phase1_individuals(
            values, excluded=excluded_positions, min_baseline=MIN_BASELINE_VALUES
        )
        members = [[row] for row in rows]
        subgroups_used = None
    elif config.chart_type == ChartType.C:
        queries.counts_check(rows, field="baseline")
        phase = phase1_attribute(
            ChartType.C, values, excluded=excluded_positions, min_baseline=MIN_BASELINE_VALUES
        )
        members = [[row] for row in rows]
        subgroups_used = None
    else:
        spec = queries.subgrouping_for(config)
        grouped = make_subgroups(
            values,
            spec=spec,
            timestamps=[row.measured_at for row in rows]
            if config.subgroup_mode == SubgroupMode.TIME_WINDOW
            else None,
            keys=[row.key for row in rows]
            if config.subgroup_mode in (SubgroupMode.PER_UNIT, SubgroupMode.PER_LOT)
            else None,
            close=True,
        )
        members = [rows[g.start : g.stop] for g in grouped.subgroups]
        left_out = set(excluded_positions)
        excluded_groups = [
            g.index for g in grouped.subgroups if any(p in left_out for p in range(g.start, g.stop))
        ]
        if len(grouped.subgroups) - len(excluded_groups) < MIN_BASELINE_SUBGROUPS:
            raise Refused(
                f"Insufficient data for control limits: a {config.chart_type} chart needs at "
                f"least {MIN_BASELINE_SUBGROUPS} included subgroups of 2 or more values; the "
                f"baseline {window} gives {len(grouped.subgroups) - len(excluded_groups)} "
                f"({len(rows)} values).",
                field="baseline",
                code="insufficient_data",
            )
        try:
            phase = phase1_subgroups(
                config.chart_type,
                grouped.arrays(values),
                excluded=excluded_groups,
                min_baseline=MIN_BASELINE_SUBGROUPS,
            )
        except ValueError as exc:
            raise InvalidInput(str(exc), field="chart_type") from exc
        subgroups_used = len(grouped.subgroups) - len(excluded_groups)
    if phase.status != "ok" or phase.limits is None:
        raise Refused(
            f"Insufficient data for control limits: {phase.reason}. The baseline {window} "
            f"holds {len(rows)} values of {characteristic.code}.",
            field="baseline",
            code="insufficient_data",
        )
    limits = phase.limits
    main = limits.statistics[0]
    proposal_signals: dict[int, list[Signal]] = {}
    for signal in phase.signals:
        if signal.index in phase.proposed_exclusions:
            proposal_signals.setdefault(signal.index, []).append(signal)
    proposed = [
        {
            "measurement_ids": [row.id for row in members[index]],
            "first_measured_at": members[index][0].measured_at.isoformat(),
            "signals": [_signal_brief(s) for s in proposal_signals.get(index, [])],
        }
        for index in phase.proposed_exclusions
    ]
    values_used = (
        limits.baseline_size
        if subgroups_used is None
        else sum(
            len(group) for index, group in enumerate(members) if index not in set(limits.excluded)
        )
    )
    draft = (
        ControlLimits.objects.select_for_update()
        .filter(characteristic=characteristic, status=LimitsStatus.DRAFT)
        .first()
    )
    if draft is None:
        latest = (
            ControlLimits.objects.filter(characteristic=characteristic)
            .order_by("-version")
            .values_list("version", flat=True)
            .first()
        )
        draft = ControlLimits(characteristic=characteristic, version=(latest or 0) + 1)
    draft.chart_type = config.chart_type
    draft.engine_limits = limits.to_dict()
    draft.centre = limits.centre
    draft.sigma = limits.sigma
    draft.lcl = main.lcl
    draft.ucl = main.ucl
    draft.subgroup_size = limits.n
    draft.degenerate = limits.degenerate
    draft.baseline_from = baseline_from
    draft.baseline_to = baseline_to
    draft.baseline_values = len(rows)
    draft.values_used = values_used
    draft.subgroups_used = subgroups_used
    draft.excluded = [{"measurement_id": m, "reason": r} for m, r in sorted(exclusions.items())]
    draft.proposed_exclusions = proposed
    draft.warnings = list(phase.warnings)
    draft.note = note.strip()
    draft.proposed_by = actor
    draft.proposed_at = timezone.now()
    _stamp(
        draft,
        actor,
        f"proposed from {values_used} values, {len(exclusions)} excluded, "
        f"{len(proposed)} more proposed",
    )
    draft.save()
    return draft


def _decide_checks(actor: Actor, reason: str) -> str:
    if not actor.has_perm(APPROVE_PERMISSION):
        raise NotPermitted(
            f"Approving or rejecting control limits needs the permission {APPROVE_PERMISSION} "
            "(quality engineers).",
            field="actor",
        )
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("A decision on control limits needs a reason.", field="reason")
    return reason.strip()


def _draft_locked(limits: ControlLimits) -> ControlLimits:
    locked = ControlLimits.objects.select_for_update().get(pk=limits.pk)
    if locked.status != LimitsStatus.DRAFT:
        raise Refused(
            f"Control limits v{locked.version} are {locked.status}, not a draft: only a draft "
            "is approved or rejected.",
            field="status",
            code="not_draft",
        )
    return locked


@transaction.atomic
def limits_approve(
    *,
    limits: ControlLimits,
    actor: Actor,
    reason: str,
    monitor_from: datetime | None = None,
) -> ControlLimits:
    """Put a draft in force: frozen from now on, evaluated against from ``monitor_from``
    (now by default; not before the end of its baseline). The version in force before is
    superseded. Needs the permission ``spc.approve_controllimits`` and a reason. The
    characteristic's checkpoints are dropped and its evaluation scheduled, so Phase II
    restarts at ``monitor_from`` against the new limits."""
    reason = _decide_checks(actor, reason)
    config = _config_locked(limits.characteristic_id)
    limits = _draft_locked(limits)
    if limits.degenerate and limits.chart_type == ChartType.C:
        raise Refused(
            "The baseline counts no nonconformities (c-bar = 0): the limits collapse onto 0 "
            "and every later nonconformity would signal. Choose a longer baseline.",
            field="sigma",
            code="no_variation",
        )
    if limits.degenerate:
        raise Refused(
            "These limits have no variation (sigma = 0): every later value off the centre "
            "would signal. Check the gauge resolution or choose another baseline.",
            field="sigma",
            code="no_variation",
        )
    if limits.chart_type != config.chart_type:
        raise Refused(
            f"These limits are for a {limits.chart_type} chart; the characteristic is now "
            f"charted as {config.chart_type}: propose limits again.",
            field="chart_type",
            code="chart_changed",
        )
    now = timezone.now()
    start = now if monitor_from is None else _aware(monitor_from, "monitor_from")
    if start < limits.baseline_to:
        raise InvalidInput(
            "Monitoring starts at or after the end of the baseline "
            f"({limits.baseline_to.isoformat()}).",
            field="monitor_from",
        )
    previous = (
        ControlLimits.objects.select_for_update()
        .filter(characteristic_id=limits.characteristic_id, status=LimitsStatus.APPROVED)
        .first()
    )
    if previous is not None:
        previous.status = LimitsStatus.SUPERSEDED
        _stamp(previous, actor, f"superseded by v{limits.version}")
        previous.save()
    limits.status = LimitsStatus.APPROVED
    limits.approved_by = actor
    limits.approved_at = now
    limits.monitor_from = start
    limits.reason = reason
    _stamp(limits, actor, f"approved: {reason}")
    limits.save()
    ChartCheckpoint.objects.filter(characteristic_id=limits.characteristic_id).delete()
    _schedule_evaluation(limits.characteristic_id)
    return limits


@transaction.atomic
def limits_reject(*, limits: ControlLimits, actor: Actor, reason: str) -> ControlLimits:
    """Reject a draft (kept on record with the reason); the next proposal is a new version."""
    reason = _decide_checks(actor, reason)
    limits = _draft_locked(limits)
    limits.status = LimitsStatus.REJECTED
    limits.reason = reason
    _stamp(limits, actor, f"rejected: {reason}")
    limits.save()
    return limits


# ------------------------------------------------------------------------------ alarms


@transaction.atomic
def alarm_acknowledge(*, alarm: SpcAlarm, actor: Actor, cause: str, comment: str = "") -> SpcAlarm:
    """Acknowledge an open alarm with the assignable cause found ('none found' is a cause)."""
    if not isinstance(cause, str) or not cause.strip():
        raise InvalidInput("Acknowledging an alarm needs the cause found.", field="cause")
    alarm = SpcAlarm.objects.select_for_update().get(pk=alarm.pk)
    if alarm.status != AlarmStatus.OPEN:
        raise Refused(
            f"Alarm {alarm.pk} is {alarm.status} already.", field="status", code="not_open"
        )
    alarm.status = AlarmStatus.ACKNOWLEDGED
    alarm.acknowledged_by = actor
    alarm.acknowledged_at = timezone.now()
    alarm.cause = cause.strip()
    alarm.comment = comment.strip()
    _stamp(alarm, actor, f"acknowledged: {alarm.cause}")
    alarm.save()
    return alarm


@transaction.atomic
def alarm_close(*, alarm: SpcAlarm, actor: Actor, comment: str = "") -> SpcAlarm:
    """Close an acknowledged alarm (the reaction is complete)."""
    alarm = SpcAlarm.objects.select_for_update().get(pk=alarm.pk)
    if alarm.status != AlarmStatus.ACKNOWLEDGED:
        raise Refused(
            f"Alarm {alarm.pk} is {alarm.status}: only an acknowledged alarm is closed.",
            field="status",
            code="not_acknowledged",
        )
    alarm.status = AlarmStatus.CLOSED
    alarm.closed_by = actor
    alarm.closed_at = timezone.now()
    if comment.strip():
        alarm.comment = f"{alarm.comment}\n{comment.strip()}".strip()
    _stamp(alarm, actor, "closed")
    alarm.save()
    return alarm


@transaction.atomic
def alarm_link_hold(*, alarm: SpcAlarm, hold_number: str, actor: Actor | None = None) -> SpcAlarm:
    """Record the hold placed for an alarm (called by compliance). Linking the same hold
    again changes nothing; another hold on a linked alarm is refused."""
    number = (hold_number or "").strip()
    if not number:
        raise InvalidInput("A hold number is required.", field="hold_number")
    alarm = SpcAlarm.objects.select_for_update().get(pk=alarm.pk)
    if alarm.hold_number == number:
        return alarm
    if alarm.hold_number:
        raise Refused(
            f"Alarm {alarm.pk} is linked to hold {alarm.hold_number} already.",
            field="hold_number",
            code="hold_linked",
        )
    alarm.hold_number = number
    _stamp(alarm, actor, f"hold {number}")
    alarm.save(update_fields=["hold_number"])
    return alarm


# ------------------------------------------------------------------ real-time evaluation


@dataclass(frozen=True)
class EvaluationOutcome:
    """What one evaluation did. ``state``: ``evaluated``, ``no_limits`` (nothing approved
    for the configured chart) or ``disabled``."""

    characteristic_id: int
    state: str
    limits_id: int | None = None
    restart_position: int = 0
    head_position: int = 0
    values: int = 0
    signals: int = 0
    new_alarm_ids: tuple[int, ...] = ()
    extended_alarm_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "characteristic_id": self.characteristic_id,
            "state": self.state,
            "limits_id": self.limits_id,
            "restart_position": self.restart_position,
            "head_position": self.head_position,
            "values": self.values,
            "signals": self.signals,
            "new_alarm_ids": list(self.new_alarm_ids),
            "extended_alarm_ids": list(self.extended_alarm_ids),
        }


class _Rows:
    """Rows of the stream by position: the latest :data:`ROW_WINDOW` in memory, older ones
    read back from the database, below the earliest row known (kept in memory, or the
    checkpoint's last row)."""

    def __init__(
        self,
        characteristic_id: int,
        mode: str,
        start: datetime,
        floor: tuple[int, datetime, int] | None,
    ) -> None:
        self.characteristic_id = characteristic_id
        self.mode = mode
        self.start = start
        self.floor = floor  # (position, measured_at, id) of a known row before the window
        self.first = 0 if floor is None else floor[0] + 1
        self.rows: list[StreamRow] = []

    def extend(self, rows: list[StreamRow]) -> None:
        self.rows.extend(rows)
        if len(self.rows) > 2 * ROW_WINDOW:
            drop = len(self.rows) - ROW_WINDOW
            last = self.rows[drop - 1]
            self.floor = (self.first + drop - 1, last.measured_at, last.id)
            del self.rows[:drop]
            self.first += drop

    def get(self, positions: list[int]) -> dict[int, StreamRow]:
        out: dict[int, StreamRow] = {}
        older = {p for p in positions if 0 <= p < self.first}
        for p in positions:
            if self.first <= p < self.first + len(self.rows):
                out[p] = self.rows[p - self.first]
        if older and self.floor is not None:
            top, at, measurement_id = self.floor
            low = min(older)
            rows = queries.stream_rows_before(
                self.characteristic_id,
                self.mode,
                start=self.start,
                through=(at, measurement_id),
                count=top - low + 1,
            )
            base = top - len(rows) + 1
            for offset, row in enumerate(rows):
                if base + offset in older:
                    out[base + offset] = row
        return out


@dataclass
class _AlarmSpec:
    """An alarm as this evaluation sees it: the firings of one rule on one statistic that
    make one pattern (an episode), keyed by the value where it first fired."""

    statistic: str
    rule: str
    trigger_id: int
    points: dict[int, dict[str, Any]]
    first: Signal | None = None  # the first firing, when it happened in this evaluation


@dataclass
class _Run:
    """One evaluation in progress."""

    characteristic: Characteristic
    config: ChartConfig
    limits: ControlLimits
    monitor: Monitor
    rows: _Rows
    subgroups: deque = field(default_factory=lambda: deque(maxlen=RECENT_SUBGROUPS))
    #: "statistic|rule" -> [chart index of its last firing, trigger measurement id]
    episodes: dict[str, list[int]] = field(default_factory=dict)
    alarms: dict[tuple[str, str, int], _AlarmSpec] = field(default_factory=dict)
    signals: int = 0


def _rule_name(signal: Signal, config: ChartConfig) -> str:
    statistic = {"mr": " on the moving range", "r": " on the range", "s": " on the std dev"}
    if signal.rule.startswith("nelson_"):
        number = int(signal.rule.removeprefix("nelson_"))
        text = RULES[number]
        if number == 2 and config.rule_preset == RulePreset.WESTERN_ELECTRIC:
            text = "eight points in a row on the same side of the centre line"
        return f"Nelson {number}: {text}{statistic.get(signal.statistic, '')}"[:120]
    way = {1: "upward", -1: "downward"}.get(signal.direction, "")
    if signal.rule == "cusum":
        return (
            f"CUSUM (k {config.cusum_k_sigma:g}, h {config.cusum_h_sigma:g}): sustained shift {way}"
        )[:120]
    return f"EWMA (lambda {config.ewma_lambda:g}, L {config.ewma_l:g}): drift {way}"[:120]


def _severity(signal: Signal, characteristic: Characteristic) -> str:
    if characteristic.special_class == SpecialCharacteristic.CC and signal.rule in CRITICAL_RULES:
        return AlarmSeverity.CRITICAL
    return AlarmSeverity.MAJOR


def _signal_positions(run: _Run, signal: Signal) -> list[tuple[int, int]]:
    """(stream position, chart index) of each value behind a signal, in stream order."""
    pairs: dict[int, int] = {}
    if run.config.chart_type in (ChartType.I_MR, ChartType.C):
        span = run.monitor.config.limits.mr_span if signal.statistic == "mr" else 1
        for index in signal.involved:
            for position in range(index - span + 1, index + 1):
                if position >= 0:
                    pairs.setdefault(position, index)
    else:
        bounds = {entry[0]: (entry[1], entry[2]) for entry in run.subgroups}
        for index in signal.involved:
            if index in bounds:
                start, stop = bounds[index]
                for position in range(start, stop):
                    pairs[position] = index
    return sorted(pairs.items())[-MAX_ALARM_POINTS:]


def _signal_seen(run: _Run, signal: Signal) -> None:
    """Add a signal to its episode: the alarm it extends, or a new one.

    It extends the alarm of the last firing of the same rule on the same statistic when its
    pattern begins at most :data:`ALARM_GAP` plotted points after that firing: points
    beyond the limits again and again, a run that keeps growing, a CUSUM that signals again
    while the shift lasts.
    """
    pairs = _signal_positions(run, signal)
    rows = run.rows.get([position for position, _ in pairs])
    present = [(position, index) for position, index in pairs if position in rows]
    if not present:
        return
    key = f"{signal.statistic}|{signal.rule}"
    episode = run.episodes.get(key)
    begins = min(signal.involved) if signal.involved else signal.index
    if episode is not None and begins <= episode[0] + ALARM_GAP:
        trigger_id, first = episode[1], None
    else:
        # The value (or subgroup) where the signal fired ends its pattern.
        trigger_id, first = rows[present[-1][0]].id, signal
    run.episodes[key] = [signal.index, trigger_id]
    spec = run.alarms.get((signal.statistic, signal.rule, trigger_id))
    if spec is None:
        spec = run.alarms[(signal.statistic, signal.rule, trigger_id)] = _AlarmSpec(
            statistic=signal.statistic, rule=signal.rule, trigger_id=trigger_id, points={}
        )
    if first is not None and spec.first is None:
        spec.first = first
    for position, index in present:
        row = rows[position]
        spec.points[row.id] = {
            "index": index,
            "measurement_id": row.id,
            "unit_id": row.unit_id,
            "value": row.value,
            "measured_at": row.measured_at.isoformat(),
        }


def _push(run: _Run, rows: list[StreamRow]) -> None:
    run.rows.extend(rows)
    result = queries.push_rows(run.monitor, run.config, rows)
    for group in result.subgroups:
        run.subgroups.append([group.index, group.start, group.stop])
    for signal in result.signals:
        run.signals += 1
        _signal_seen(run, signal)


def _checkpoint(run: _Run, position: int, last: StreamRow) -> ChartCheckpoint:
    return ChartCheckpoint(
        characteristic=run.characteristic,
        limits=run.limits,
        position=position,
        through_measured_at=last.measured_at,
        through_measurement_id=last.id,
        state=run.monitor.to_dict(),
        subgroups=[list(entry) for entry in run.subgroups],
        episodes={key: list(value) for key, value in run.episodes.items()},
    )


def _ordered_points(points: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points in stream order, the latest :data:`MAX_ALARM_POINTS`."""
    ordered = sorted(
        points,
        key=lambda p: (datetime.fromisoformat(p["measured_at"]), p["measurement_id"]),
    )
    return ordered[-MAX_ALARM_POINTS:]


def _span(alarm: SpcAlarm, points: list[dict[str, Any]]) -> None:
    """First and last value of an alarm from its points."""
    first, last = points[0], points[-1]
    alarm.points = points
    alarm.first_measurement_id = first["measurement_id"]
    alarm.first_measured_at = datetime.fromisoformat(first["measured_at"])
    alarm.last_measurement_id = last["measurement_id"]
    alarm.last_measured_at = datetime.fromisoformat(last["measured_at"])
    alarm.last_chart_index = last["index"]


@dataclass
class _Saved:
    new: list[SpcAlarm]
    extended: list[tuple[SpcAlarm, list[dict[str, Any]]]]  # with the points added


def _alarms_save(run: _Run) -> _Saved:
    """Create the alarms not raised before and extend those whose pattern went on; an
    alarm is found again by its limits, statistic, rule and trigger value."""
    if not run.alarms:
        return _Saved([], [])
    existing = {
        (a.statistic, a.rule, a.trigger_measurement_id): a
        for a in SpcAlarm.objects.filter(
            limits=run.limits, trigger_measurement_id__in={k[2] for k in run.alarms}
        )
    }
    now = timezone.now()
    new: list[SpcAlarm] = []
    extended: list[tuple[SpcAlarm, list[dict[str, Any]]]] = []
    for key, spec in run.alarms.items():
        alarm = existing.get(key)
        if alarm is not None:
            known = {p["measurement_id"]: p for p in alarm.points}
            merged = _ordered_points({**known, **spec.points}.values())
            if merged != alarm.points:
                added = [p for p in merged if p["measurement_id"] not in known]
                _span(alarm, merged)
                extended.append((alarm, added))
            continue
        signal = spec.first
        points = _ordered_points(spec.points.values())
        if signal is None:  # its start was evaluated, but the alarm is gone: raise it again
            index = points[0]["index"]
            signal = Signal(spec.rule, spec.statistic, index, (index,), 0, points[0]["value"])
        alarm = SpcAlarm(
            characteristic=run.characteristic,
            limits=run.limits,
            statistic=spec.statistic,
            rule=spec.rule,
            rule_name=_rule_name(signal, run.config),
            direction=signal.direction,
            severity=_severity(signal, run.characteristic),
            chart_index=signal.index,
            statistic_value=float(signal.value),
            trigger_measurement_id=spec.trigger_id,
            raised_at=now,
            status=AlarmStatus.OPEN,
        )
        _span(alarm, points)
        new.append(alarm)
    if new:
        new = bulk_create_with_history(
            new, SpcAlarm, batch_size=500, default_change_reason="raised by the SPC evaluation"
        )
    if extended:
        bulk_update_with_history(
            [alarm for alarm, _ in extended],
            SpcAlarm,
            [
                "points",
                "first_measurement",
                "first_measured_at",
                "last_measurement",
                "last_measured_at",
                "last_chart_index",
            ],
            batch_size=500,
            default_change_reason="pattern goes on",
        )
    return _Saved(new, extended)


@transaction.atomic
def spc_evaluate(*, characteristic_id: int, since: datetime | None = None) -> EvaluationOutcome:
    """Evaluate the values of a characteristic that are not evaluated yet, and those after
    ``since`` again (the earliest value of a batch that may have arrived late).

    Restores the latest checkpoint before ``since`` (or the latest of all), replays the
    stream after it against the approved limits, raises the alarms not raised before
    (``AlarmRaised`` on commit) and extends those whose pattern went on (``AlarmExtended``),
    and replaces the checkpoints after the restart point. Evaluating again with the same
    values changes nothing; a worker that stops mid-way leaves nothing (one transaction) and
    the next run resumes from the checkpoints.
    """
    config = _config_locked(characteristic_id)
    characteristic = config.characteristic
    if not config.enabled or not characteristic.is_active:
        return EvaluationOutcome(characteristic_id, "disabled")
    limits = queries.limits_in_force(characteristic, config)
    if limits is None:
        return EvaluationOutcome(characteristic_id, "no_limits")
    engine_limits = Limits.from_dict(limits.engine_limits)
    mconfig = queries.monitor_config(config, engine_limits)
    saved = ChartCheckpoint.objects.filter(limits=limits)
    if since is not None:
        since = _aware(since, "since")
    if since is not None and since < limits.monitor_from:
        since = None  # not part of the stream: only values not evaluated yet
    candidates = saved if since is None else saved.filter(through_measured_at__lt=since)
    checkpoint = candidates.order_by("-position").first()
    if checkpoint is not None and checkpoint.state.get("config") != mconfig.to_dict():
        # Made under another configuration (changed outside the service): start over.
        saved.delete()
        checkpoint = None
    if checkpoint is None:
        monitor = Monitor(mconfig)
        position = 0
        after = None
        floor = None
        recent: list[list[int]] = []
        episodes: dict[str, list[int]] = {}
    else:
        monitor = Monitor(mconfig, MonitorState.from_dict(checkpoint.state["state"]))
        position = checkpoint.position
        after = (checkpoint.through_measured_at, checkpoint.through_measurement_id)
        floor = (position - 1, *after)
        recent = checkpoint.subgroups
        episodes = checkpoint.episodes
    restart = position
    run = _Run(
        characteristic=characteristic,
        config=config,
        limits=limits,
        monitor=monitor,
        rows=_Rows(characteristic_id, config.subgroup_mode, limits.monitor_from, floor),
    )
    run.subgroups.extend(recent)
    run.episodes = {key: list(value) for key, value in episodes.items()}
    written: list[ChartCheckpoint] = []
    buffer: list[StreamRow] = []
    rows = queries.stream_rows(
        characteristic_id, config.subgroup_mode, start=limits.monitor_from, after=after
    )
    for row in rows:
        buffer.append(row)
        if (position + len(buffer)) % CHECKPOINT_EVERY == 0:
            _push(run, buffer)
            position += len(buffer)
            written.append(_checkpoint(run, position, buffer[-1]))
            buffer = []
    if buffer:
        _push(run, buffer)
        position += len(buffer)
        written.append(_checkpoint(run, position, buffer[-1]))
    if position > restart:
        stale = saved.filter(position__gt=restart)
        if checkpoint is not None and checkpoint.position % CHECKPOINT_EVERY:
            stale = saved.filter(position__gte=restart)  # the old head, off the grid
        stale.delete()
        ChartCheckpoint.objects.bulk_create(written, batch_size=500)
    saved_alarms = _alarms_save(run)
    for alarm in saved_alarms.new:
        _publish(alarm, characteristic)
    for alarm, added in saved_alarms.extended:
        if added:
            events.publish(
                AlarmExtended(
                    alarm_id=alarm.pk,
                    characteristic_id=characteristic.pk,
                    last_measured_at=alarm.last_measured_at,
                    measurement_ids=tuple(p["measurement_id"] for p in added),
                    unit_ids=tuple(sorted({p["unit_id"] for p in added})),
                )
            )
    return EvaluationOutcome(
        characteristic_id=characteristic_id,
        state="evaluated",
        limits_id=limits.pk,
        restart_position=restart,
        head_position=position,
        values=position - restart,
        signals=run.signals,
        new_alarm_ids=tuple(alarm.pk for alarm in saved_alarms.new),
        extended_alarm_ids=tuple(alarm.pk for alarm, _ in saved_alarms.extended),
    )


def _publish(alarm: SpcAlarm, characteristic: Characteristic) -> None:
    events.publish(
        AlarmRaised(
            alarm_id=alarm.pk,
            characteristic_id=characteristic.pk,
            station_id=characteristic.station_id,
            limits_id=alarm.limits_id,
            rule=alarm.rule,
            statistic=alarm.statistic,
            severity=alarm.severity,
            special_class=characteristic.special_class,
            first_measured_at=alarm.first_measured_at,
            last_measured_at=alarm.last_measured_at,
            measurement_ids=tuple(p["measurement_id"] for p in alarm.points),
            unit_ids=tuple(sorted({p["unit_id"] for p in alarm.points})),
        )
    )
