"""Every write of the formation app: tray loading records, cycler runs with their step
results, curves and DCIR, aging readings, per-cell features, grading rule sets and grades.

* :func:`formation_runs_record` stores runs (or further steps of runs) in bulk: each run is
  checked completely before anything is written (units, samples, sign, tray position,
  what is stored already); a refused run writes nothing and comes back as its error, the
  others are written together (curve blobs to file storage, rows with ``COPY`` on
  PostgreSQL). Recording the same source again (file SHA-256, cycler run id) adds nothing.
* :func:`aging_readings_record_many` does the same for aging readings.
* :func:`features_compute` turns a cell's latest run and its aging readings into the
  features of :mod:`formation.features` and scores each key feature within the cell's lot,
  formation channel and aging rack (robust z over the population of that group).
* :func:`cells_grade` grades cells with their line's active rule set: the K screen first,
  then bins. What happens next: :class:`formation.events.FormationGraded` after commit
  (compliance holds the failures).
* :func:`channel_statuses_record` keeps the latest live state of each cycler channel (one
  row per channel, overwritten; an older status changes nothing) and its alarm episodes
  (raised when a code first appears, cleared when a later status no longer reports it).
  What happens next: :class:`formation.events.CyclerAlarmRaised` after commit for every
  critical alarm raised.

Service errors name the field of the input concerned with the same path the envelope
payload has (``steps[2].arrays.time_s``, ``run.position``), so the ingest handlers only add
the ``payload.`` prefix.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from genealogy.choices import LinkKind, UnitKind
from genealogy.models import Link, Unit
from qms import events
from qms.db import bulk_insert
from qms.exceptions import DomainError, InvalidInput, NotFound, Refused
from qms.models import Equipment, Line, Station

from . import features as fx
from .choices import (
    BIN_FEATURES,
    CHARGE_TYPES,
    CV_TYPES,
    BinCriterion,
    RuleSetState,
    SignConvention,
    SourceFormat,
    StepType,
    step_type_normalise,
)
from .cyclers.readers import CURRENT_LIMIT_A, TEMPERATURE_RANGE_C, VOLTAGE_RANGE_V
from .events import CyclerAlarmRaised, FormationGraded, FormationRunsRecorded
from .models import (
    AgingReading,
    AlarmSeverity,
    CellFeatures,
    CellGrade,
    ChannelState,
    ChannelStatus,
    CyclerAlarm,
    CyclerRun,
    DcirReading,
    GradingRuleSet,
    StepCurve,
    StepResult,
    TrayLoad,
    position_key,
)

logger = logging.getLogger("celltrace.formation")

Actor = AbstractBaseUser

#: Clocks on the shop floor drift; beyond this a time in the future is refused.
CLOCK_SKEW = timedelta(minutes=5)
#: How long before its run a cell's tray loading is looked for.
LOAD_WINDOW = timedelta(days=30)
#: Points of the resampled copy of a curve kept in the database
#: (``QMS_FORMATION_CURVE_POINTS``).
DEFAULT_CURVE_POINTS = 64
#: Folder of curve blobs in file storage; blobs are named by their SHA-256.
CURVE_STORE = "formation/curves"
#: A step's counted capacity and the integral of its current may differ by sampling; a
#: factor beyond this is a unit error (mAh read as Ah, A·s as Ah).
CAPACITY_CHECK_FACTOR = 5.0
#: Below this median current (A) a step's current says nothing about its sign.
SIGN_CHECK_A = 1e-3
#: An OCV reading below this (mV) but above 0 is volts sent as millivolts.
OCV_VOLTS_BELOW_MV = 10.0
#: Features scored within their groups (lot, formation channel, aging rack).
Z_FEATURES: tuple[str, ...] = (
    "q_discharge_ah",
    "e_discharge_wh",
    "ice",
    "cv_time_s",
    "cv_tail_current_a",
    "dcir_1s_mohm",
    "dcir_10s_mohm",
    "r_low_soc_10s_mohm",
    "temperature_rise_k",
    "k_value_mv_per_day",
    "ica_peak1_v",
    "ica_peak2_v",
    "ica_peak3_v",
)
#: The group name in ``CellFeatures.z_scores`` and the column that holds the group key.
Z_GROUPS: tuple[tuple[str, str], ...] = (
    ("lot", "lot"),
    ("channel", "channel_key"),
    ("rack", "rack"),
)
#: Channel and rack populations: the cells formed within this window before the batch
#: (fixtures and racks drift; a lot is bounded by itself).
Z_WINDOW = timedelta(days=30)
#: Permission a person needs to put a grading rule set in force.
ACTIVATE_PERMISSION = "formation.change_gradingruleset"

_ARRAYS = ("time_s", "voltage_v", "current_a", "capacity_ah", "temperature_c")
_MEASURED = ("voltage_v", "current_a", "capacity_ah", "temperature_c")


def curve_points() -> int:
    return int(getattr(settings, "QMS_FORMATION_CURVE_POINTS", DEFAULT_CURVE_POINTS))


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


# --- tray loading ------------------------------------------------------------------------------


@transaction.atomic
def tray_load_record(
    *,
    tray: str,
    positions: Sequence[tuple[str, Unit]],
    station: Station,
    loaded_at: datetime,
    actor: Actor | None = None,
    equipment: Equipment | None = None,
    source_message_id: str = "",
) -> list[TrayLoad]:
    """Record which cell went into which position of a formation tray. Each position and
    each cell once per message; a repeat of a stored loading (same tray, position, time and
    cell) adds nothing, a loading that contradicts a stored one is refused. Errors name
    ``positions[i]`` or ``units[i]``."""
    tray = tray.strip()
    if not tray:
        raise InvalidInput("A tray loading names its tray.", field="tray")
    if loaded_at > timezone.now() + CLOCK_SKEW:
        raise InvalidInput(f"{_iso(loaded_at)} is in the future.", field="loaded_at")
    seen_pos: dict[str, int] = {}
    seen_unit: dict[int, int] = {}
    for i, (pos, unit) in enumerate(positions):
        key = position_key(pos)
        if not key:
            raise InvalidInput("A tray position is not empty.", field=f"positions[{i}]")
        if unit.kind != UnitKind.CELL:
            raise InvalidInput(
                f"{unit.serial} is a {unit.get_kind_display().lower()}, not a cell.",
                field=f"units[{i}]",
            )
        if key in seen_pos:
            raise InvalidInput(
                f"Position {pos} is given twice (also at {seen_pos[key]}).", field=f"positions[{i}]"
            )
        if unit.pk in seen_unit:
            raise InvalidInput(
                f"{unit.serial} is given twice (also at {seen_unit[unit.pk]}).", field=f"units[{i}]"
            )
        seen_pos[key], seen_unit[unit.pk] = i, i
    stored = {
        (load.position_key, load.unit_id): load
        for load in TrayLoad.objects.filter(tray=tray, loaded_at=loaded_at)
    }
    by_slot = {key: load for (key, _), load in stored.items()}
    cell_at = {
        load.unit_id: load
        for load in TrayLoad.objects.filter(
            unit_id__in=list(seen_unit), loaded_at=loaded_at
        ).exclude(tray=tray)
    }
    new = []
    for i, (pos, unit) in enumerate(positions):
        key = position_key(pos)
        if (key, unit.pk) in stored:
            continue
        if key in by_slot:
            raise Refused(
                f"Tray {tray} position {pos} was loaded with unit {by_slot[key].unit_id} at "
                f"{_iso(loaded_at)} already.",
                field=f"positions[{i}]",
                code="conflict",
            )
        if unit.pk in cell_at:
            raise Refused(
                f"{unit.serial} was loaded into tray {cell_at[unit.pk].tray} at "
                f"{_iso(loaded_at)} already.",
                field=f"units[{i}]",
                code="conflict",
            )
        new.append(
            TrayLoad(
                unit=unit,
                tray=tray,
                position=pos.strip(),
                position_key=key,
                station=station,
                equipment=equipment,
                loaded_at=loaded_at,
                source_message_id=source_message_id[:128],
            )
        )
    return list(bulk_insert(TrayLoad, new))


# --- runs: inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurveInput:
    """The samples of one step: ``time_s`` from the step's start (strictly increasing),
    volts, amperes (signed as the run's ``sign_convention`` says), the step's charge
    counter in Ah from 0, and °C where measured."""

    time_s: Sequence[float] | np.ndarray
    voltage_v: Sequence[float] | np.ndarray
    current_a: Sequence[float] | np.ndarray
    capacity_ah: Sequence[float] | np.ndarray
    temperature_c: Sequence[float] | np.ndarray | None = None
    #: The samples as the producer packed them (:func:`formation.features.curve_pack`,
    #: checked against its SHA-256), when they are exactly these arrays at storage
    #: precision: stored as they came instead of packed again.
    packed: bytes | None = None
    packed_sha256: str = ""


@dataclass(frozen=True)
class StepInput:
    """One executed step. Results left out (None) are derived from the samples: the
    duration from the times, capacity from the last counter value, energy from the
    integral of V·|I|, voltages and current from the first and last samples, temperatures
    from the temperature samples, the CV time of a CV charge from its duration."""

    sequence: int
    step_type: str
    started_at: datetime
    curve: CurveInput
    ended_at: datetime | None = None
    step_index: int | None = None
    cycle_index: int | None = None
    source_step_type: str = ""
    name: str = ""
    duration_s: float | None = None
    capacity_ah: float | None = None
    energy_wh: float | None = None
    start_voltage_v: float | None = None
    end_voltage_v: float | None = None
    end_current_a: float | None = None
    cv_time_s: float | None = None
    tail_current_a: float | None = None
    temperature_start_c: float | None = None
    temperature_max_c: float | None = None
    end_reason: str = ""


@dataclass(frozen=True)
class RunInput:
    """A cell's run (or the next steps of it) as a cycler reports it. ``source_run_id``
    (the cycler's id of the run) and ``source_sha256`` (the file) make recording it again
    add nothing. ``sign_convention`` is how the given currents are signed;
    ``source_sign_convention`` how the original source signed them (a file reader has
    already normalised the samples), kept on the run."""

    unit: Unit
    station: Station
    steps: Sequence[StepInput]
    started_at: datetime | None = None
    equipment: Equipment | None = None
    channel: str = ""
    tray: str = ""
    position: str = ""
    protocol: str = ""
    source_format: str = SourceFormat.ENVELOPE
    source_name: str = ""
    source_sha256: str = ""
    source_run_id: str = ""
    source_message_id: str = ""
    sign_convention: str = SignConvention.CHARGE_POSITIVE
    source_sign_convention: str = ""


@dataclass
class RunRecorded:
    """What :func:`formation_runs_record` did with one run: the run (``created`` when this
    call made it), the steps written now, and how many given steps were stored already."""

    run: CyclerRun
    created: bool
    steps: list[StepResult] = field(default_factory=list)
    skipped: int = 0


# --- runs: checking one run (no database) -----------------------------------------------------


@dataclass
class _Step:
    index: int
    sequence: int
    step_type: StepType
    started_at: datetime
    ended_at: datetime
    values: dict
    arrays: dict[str, np.ndarray]
    blob: bytes
    sha256: str
    resampled: bytes
    resampled_columns: tuple[str, ...]
    row: StepResult | None = None


@dataclass
class _Run:
    input: RunInput
    steps: list[_Step]
    started_at: datetime
    ended_at: datetime
    channel_key: str
    source_sign_convention: str


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _arrays_check(step: StepInput, where: str, sign: str) -> dict[str, np.ndarray]:
    """The step's samples as float64 arrays at storage precision (time float64, the others
    float32), current + charging; refused with the array's field when they are not."""
    given = {
        "time_s": step.curve.time_s,
        "voltage_v": step.curve.voltage_v,
        "current_a": step.curve.current_a,
        "capacity_ah": step.curve.capacity_ah,
    }
    if step.curve.temperature_c is not None:
        given["temperature_c"] = step.curve.temperature_c
    arrays: dict[str, np.ndarray] = {}
    for name, values in given.items():
        try:
            a = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"{name} is not an array of numbers.", field=f"{where}.arrays.{name}"
            ) from exc
        if a.ndim != 1:
            raise InvalidInput(f"{name} is not a flat array.", field=f"{where}.arrays.{name}")
        arrays[name] = a
    n = len(arrays["time_s"])
    if n == 0:
        raise InvalidInput(
            "A step's curve has at least one sample.", field=f"{where}.arrays.time_s"
        )
    for name, a in arrays.items():
        if len(a) != n:
            raise InvalidInput(
                f"{name} has {len(a)} samples, time_s has {n}.", field=f"{where}.arrays.{name}"
            )
        bad = ~np.isfinite(a)
        if bad.any():
            raise InvalidInput(
                f"{name} has {int(bad.sum())} NaN or infinite value(s), the first at sample "
                f"{_first_bad(bad)}.",
                field=f"{where}.arrays.{name}",
            )
    t = arrays["time_s"]
    if t[0] < 0:
        raise InvalidInput(
            f"time_s counts from the step's start; sample 0 is at {t[0]:g} s.",
            field=f"{where}.arrays.time_s",
        )
    back = np.diff(t) <= 0
    if back.any():
        j = _first_bad(back) + 1
        raise InvalidInput(
            f"time_s is not increasing at sample {j} ({t[j - 1]:g} s, then {t[j]:g} s).",
            field=f"{where}.arrays.time_s",
        )
    ranges = {
        "voltage_v": (VOLTAGE_RANGE_V, "V", "millivolts sent as volts?"),
        "current_a": ((-CURRENT_LIMIT_A, CURRENT_LIMIT_A), "A", "milliamperes sent as amperes?"),
        "temperature_c": (TEMPERATURE_RANGE_C, "°C", "kelvin sent as °C?"),
    }
    for name, ((lo, hi), unit, hint) in ranges.items():
        a = arrays.get(name)
        if a is None:
            continue
        out = (a < lo) | (a > hi)
        if out.any():
            j = _first_bad(out)
            raise InvalidInput(
                f"{name} {a[j]:g} {unit} at sample {j} is outside {lo:g}..{hi:g} {unit}: {hint}",
                field=f"{where}.arrays.{name}",
                code="unit",
            )
    cap = arrays["capacity_ah"]
    if (cap < 0).any():
        j = _first_bad(cap < 0)
        raise InvalidInput(
            f"capacity_ah counts the step's charge from 0; sample {j} is {cap[j]:g} Ah.",
            field=f"{where}.arrays.capacity_ah",
        )
    if sign == SignConvention.DISCHARGE_POSITIVE:
        arrays["current_a"] = -arrays["current_a"]
    if n >= 2 and cap[-1] > 1e-6:
        integral = float(np.trapezoid(np.abs(arrays["current_a"]), t)) / 3600.0
        if integral > 1e-6 and not (
            1.0 / CAPACITY_CHECK_FACTOR <= cap[-1] / integral <= CAPACITY_CHECK_FACTOR
        ):
            raise InvalidInput(
                f"capacity_ah ends at {cap[-1]:g} Ah but the current integrates to "
                f"{integral:.4g} Ah over the step: milliampere-hours sent as ampere-hours?",
                field=f"{where}.arrays.capacity_ah",
                code="unit",
            )
    for name in _MEASURED:
        if name in arrays:  # what the blob keeps, so derived values match a re-read
            arrays[name] = arrays[name].astype(np.float32).astype(np.float64)
    return arrays


def _step_check(step: StepInput, index: int, sign: str, now: datetime) -> _Step:
    where = f"steps[{index}]"
    try:
        step_type = step_type_normalise(step.step_type)
    except ValueError as exc:
        raise InvalidInput(str(exc), field=f"{where}.type") from exc
    if step.sequence < 1:
        raise InvalidInput("Step sequences count from 1.", field=f"{where}.sequence")
    arrays = _arrays_check(step, where, sign)
    t, v, i = arrays["time_s"], arrays["voltage_v"], arrays["current_a"]
    temp = arrays.get("temperature_c")
    if step_type in CHARGE_TYPES or step_type == StepType.DISCHARGE:
        median = float(np.median(i))
        wrong = median < -SIGN_CHECK_A if step_type in CHARGE_TYPES else median > SIGN_CHECK_A
        if wrong:
            raise InvalidInput(
                f"Step {step.sequence} is a {step_type.label.lower()} but its current, signed "
                f"as {sign}, has a median of {median:+.4g} A (a charge is + once normalised): "
                "the sign convention does not match the data.",
                field="sign_convention",
                code="sign",
            )
    started_at = step.started_at
    ended_at = step.ended_at or started_at + timedelta(seconds=float(t[-1]))
    if ended_at < started_at:
        raise InvalidInput(
            f"The step ends ({_iso(ended_at)}) before it starts ({_iso(started_at)}).",
            field=f"{where}.ended_at",
        )
    if ended_at > now + CLOCK_SKEW:
        raise InvalidInput(f"{_iso(ended_at)} is in the future.", field=f"{where}.ended_at")
    flip = -1.0 if sign == SignConvention.DISCHARGE_POSITIVE else 1.0
    duration = _finite(step.duration_s)
    if duration is None:
        duration = (ended_at - started_at).total_seconds()
    energy = _finite(step.energy_wh)
    if energy is None:
        energy = float(np.trapezoid(v * np.abs(i), t)) / 3600.0 if len(t) > 1 else 0.0
    cv_time = _finite(step.cv_time_s)
    if cv_time is None:
        if step_type == StepType.CV_CHARGE:
            cv_time = duration
        elif step_type in (StepType.CC_CHARGE, StepType.CP_CHARGE):
            cv_time = 0.0
    tail = _finite(step.tail_current_a)
    if tail is None and step_type in CV_TYPES:
        tail = float(abs(i[-1]))
    temp_start = _finite(step.temperature_start_c)
    temp_max = _finite(step.temperature_max_c)
    if temp is not None:
        temp_start = float(temp[0]) if temp_start is None else temp_start
        temp_max = float(temp.max()) if temp_max is None else temp_max
    end_current = _finite(step.end_current_a)
    values = {
        "sequence": int(step.sequence),
        "step_index": step.step_index,
        "cycle_index": step.cycle_index,
        "step_type": step_type.value,
        "source_step_type": (step.source_step_type or "")[:32],
        "name": (step.name or "")[:64],
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_s": float(duration),
        "capacity_ah": float(
            _finite(step.capacity_ah)
            if _finite(step.capacity_ah) is not None
            else arrays["capacity_ah"][-1]
        ),
        "energy_wh": float(energy),
        "start_voltage_v": float(
            _finite(step.start_voltage_v) if _finite(step.start_voltage_v) is not None else v[0]
        ),
        "end_voltage_v": float(
            _finite(step.end_voltage_v) if _finite(step.end_voltage_v) is not None else v[-1]
        ),
        "end_current_a": float(i[-1]) if end_current is None else flip * end_current,
        "cv_time_s": cv_time,
        "tail_current_a": None if tail is None else abs(tail),
        "temperature_start_c": temp_start,
        "temperature_max_c": temp_max,
        "temperature_rise_k": (
            temp_max - temp_start if temp_start is not None and temp_max is not None else None
        ),
        "end_reason": (step.end_reason or "")[:32],
    }
    if step.curve.packed is not None and sign == SignConvention.CHARGE_POSITIVE:
        blob, sha = step.curve.packed, step.curve.packed_sha256
    else:
        stored = {name: arrays[name] for name in _ARRAYS if name in arrays}
        try:
            blob = fx.curve_pack(stored)
        except ValueError as exc:  # the checks above leave nothing for it to refuse
            raise InvalidInput(str(exc), field=f"{where}.arrays") from exc
        sha = hashlib.sha256(blob).hexdigest()
    columns = tuple(name for name in _MEASURED if name in arrays)
    points = curve_points()
    stack = np.stack([arrays[name] for name in columns])
    if len(t) >= 2:
        _, rows = fx.resample_curve(t, stack, n=points)
    else:
        rows = np.repeat(stack, points, axis=1)
    return _Step(
        index=index,
        sequence=int(step.sequence),
        step_type=step_type,
        started_at=started_at,
        ended_at=ended_at,
        values=values,
        arrays=arrays,
        blob=blob,
        sha256=sha,
        resampled=np.ascontiguousarray(rows, dtype="<f4").tobytes(),
        resampled_columns=columns,
    )


def _run_check(run: RunInput, now: datetime) -> _Run:
    """Check one run completely without the database (that comes in :class:`_Plan`)."""
    if run.unit.kind != UnitKind.CELL:
        raise InvalidInput(
            f"{run.unit.serial} is a {run.unit.get_kind_display().lower()}, not a cell.",
            field="unit",
        )
    if run.sign_convention not in (
        SignConvention.CHARGE_POSITIVE,
        SignConvention.DISCHARGE_POSITIVE,
    ):
        raise InvalidInput(
            f"Samples are signed charge_positive or discharge_positive, not "
            f"{run.sign_convention!r}.",
            field="sign_convention",
        )
    source_sign = run.source_sign_convention or run.sign_convention
    if source_sign not in SignConvention.values:
        raise InvalidInput(
            f"Unknown sign convention {source_sign!r}.", field="run.source_sign_convention"
        )
    if run.source_format not in SourceFormat.values:
        raise InvalidInput(
            f"Unknown source format {run.source_format!r}.", field="run.source_format"
        )
    if not run.steps:
        raise InvalidInput("A run has at least one step.", field="steps")
    seen: dict[int, int] = {}
    for i, step in enumerate(run.steps):
        if step.sequence in seen:
            raise InvalidInput(
                f"Step sequence {step.sequence} is given twice "
                f"(also steps[{seen[step.sequence]}]).",
                field=f"steps[{i}].sequence",
            )
        seen[step.sequence] = i
    steps = [_step_check(step, i, run.sign_convention, now) for i, step in enumerate(run.steps)]
    first = min(s.started_at for s in steps)
    started_at = run.started_at or first
    if started_at > first:
        raise InvalidInput(
            f"The run starts at {_iso(started_at)}, after its step "
            f"{min(steps, key=lambda s: s.started_at).sequence} ({_iso(first)}).",
            field="run.started_at",
        )
    code = run.equipment.code if run.equipment is not None else ""
    channel = run.channel.strip()
    channel_key = f"{code}:{channel}" if code and channel else channel
    return _Run(
        input=run,
        steps=steps,
        started_at=started_at,
        ended_at=max(s.ended_at for s in steps),
        channel_key=channel_key[:100],
        source_sign_convention=source_sign,
    )


# --- runs: against what is stored -------------------------------------------------------------


@dataclass
class _KnownStep:
    sequence: int
    started_at: datetime
    sha256: str
    step_type: str
    end_voltage_v: float
    step_id: int | None = None
    has_dcir: bool = False
    pending: _Step | None = None


@dataclass
class _Target:
    run: CyclerRun
    created: bool
    steps: dict[int, _KnownStep]
    new_steps: list[tuple[_Step, _Run]] = field(default_factory=list)
    changed: bool = False


class _Plan:
    """What a batch of runs will write, built run by run: each run is checked against what
    is stored and what the runs before it in the batch add, and adds to the plan only when
    it passes completely."""

    def __init__(self, runs: Sequence[_Run], actor: Actor | None) -> None:
        self.actor = actor
        self.targets: dict[tuple, _Target] = {}
        self.entries: list[tuple[int, _Target, int, int]] = []
        units = {r.input.unit.pk for r in runs}
        shas = {r.input.source_sha256 for r in runs if r.input.source_sha256}
        run_ids = {r.input.source_run_id for r in runs if r.input.source_run_id}
        stored = list(
            CyclerRun.objects.filter(unit_id__in=units).filter(
                Q(source_sha256__in=shas) | Q(source_run_id__in=run_ids)
            )
        )
        by_run: dict[int, dict[int, _KnownStep]] = defaultdict(dict)
        for row in StepResult.objects.filter(run__in=stored).values(
            "id", "run_id", "sequence", "started_at", "step_type", "end_voltage_v",
            "curve__sha256", "dcir__id",
        ):  # fmt: skip
            by_run[row["run_id"]][row["sequence"]] = _KnownStep(
                sequence=row["sequence"],
                started_at=row["started_at"],
                sha256=row["curve__sha256"] or "",
                step_type=row["step_type"],
                end_voltage_v=row["end_voltage_v"],
                step_id=row["id"],
                has_dcir=row["dcir__id"] is not None,
            )
        for found in stored:
            target = _Target(run=found, created=False, steps=by_run[found.pk])
            if found.source_sha256:
                self.targets[("sha", found.unit_id, found.source_sha256)] = target
            if found.source_run_id:
                self.targets[("run", found.unit_id, found.source_run_id)] = target
        self._loads_by_unit: dict[int, list[TrayLoad]] = defaultdict(list)
        self._loads_by_slot: dict[tuple[str, str], list[TrayLoad]] = defaultdict(list)
        placed = [r for r in runs if r.input.tray.strip() or r.input.position.strip()]
        if placed:
            lo = min(r.started_at for r in placed) - LOAD_WINDOW
            hi = max(r.started_at for r in placed) + CLOCK_SKEW
            trays = {r.input.tray.strip() for r in placed if r.input.tray.strip()}
            loads = (
                TrayLoad.objects.select_related("unit")
                .filter(loaded_at__gte=lo, loaded_at__lte=hi)
                .filter(Q(unit_id__in={r.input.unit.pk for r in placed}) | Q(tray__in=trays))
                .order_by("loaded_at", "id")
            )
            for load in loads:
                self._loads_by_unit[load.unit_id].append(load)
                self._loads_by_slot[(load.tray, load.position_key)].append(load)

    @staticmethod
    def _latest(loads: list[TrayLoad], limit: datetime) -> TrayLoad | None:
        found = None
        for load in loads:
            if load.loaded_at <= limit:
                found = load
        return found

    def _tray_check(self, r: _Run) -> TrayLoad | None:
        """The loading record that confirms the run's tray and position, None when it names
        none or nothing was loaded there; refused when a loading record contradicts it."""
        run = r.input
        tray, pos = run.tray.strip(), run.position.strip()
        if not tray and not pos:
            return None
        limit = r.started_at + CLOCK_SKEW
        serial = run.unit.serial
        mine = self._latest(self._loads_by_unit.get(run.unit.pk, []), limit)
        if mine is not None:
            if tray and mine.tray != tray:
                raise Refused(
                    f"{serial} was loaded into tray {mine.tray} position {mine.position} at "
                    f"{_iso(mine.loaded_at)}, not into tray {tray}.",
                    field="run.tray",
                    code="tray_mismatch",
                )
            if pos and mine.position_key != position_key(pos):
                raise Refused(
                    f"{serial} was loaded into tray {mine.tray} position {mine.position} at "
                    f"{_iso(mine.loaded_at)}, not position {pos}.",
                    field="run.position",
                    code="tray_mismatch",
                )
        if tray and pos:
            slot = self._latest(self._loads_by_slot.get((tray, position_key(pos)), []), limit)
            if slot is not None and slot.unit_id != run.unit.pk:
                raise Refused(
                    f"Tray {tray} position {pos} was loaded with {slot.unit.serial} at "
                    f"{_iso(slot.loaded_at)}, not with {serial}.",
                    field="run.position",
                    code="tray_mismatch",
                )
            return mine
        return None

    def add(self, index: int, r: _Run) -> None:
        """Plan run ``r`` (input ``index``) or raise its refusal, changing nothing."""
        run = r.input
        keys = []
        if run.source_sha256:
            keys.append(("sha", run.unit.pk, run.source_sha256))
        if run.source_run_id:
            keys.append(("run", run.unit.pk, run.source_run_id))
        found = [self.targets[k] for k in keys if k in self.targets]
        if len({id(t) for t in found}) > 1:
            raise Refused(
                f"Run id {run.source_run_id!r} of {run.unit.serial} was recorded from another "
                "source file.",
                field="run.id",
                code="conflict",
            )
        target = found[0] if found else None
        if target is not None:
            self._same_place(target.run, r)
            tray_load = None
        else:
            tray_load = self._tray_check(r)
        known = target.steps if target is not None else {}
        new: list[_Step] = []
        skipped = 0
        for step in r.steps:
            have = known.get(step.sequence)
            if have is None:
                new.append(step)
            elif have.started_at == step.started_at and have.sha256 == step.sha256:
                skipped += 1
            else:
                raise Refused(
                    f"Step {step.sequence} of this run was recorded already with other data "
                    f"(started {_iso(have.started_at)}, curve {have.sha256[:12]}).",
                    field=f"steps[{step.index}].sequence",
                    code="conflict",
                )
        # Passed: apply to the plan.
        if target is None:
            target = _Target(
                run=CyclerRun(
                    unit=run.unit,
                    station=run.station,
                    equipment=run.equipment,
                    channel=run.channel.strip()[:64],
                    channel_key=r.channel_key,
                    tray=run.tray.strip()[:32],
                    position=run.position.strip()[:16],
                    tray_load=tray_load,
                    protocol=run.protocol[:64],
                    started_at=r.started_at,
                    ended_at=r.ended_at,
                    source_format=run.source_format,
                    source_name=run.source_name[:255],
                    source_sha256=run.source_sha256,
                    source_run_id=run.source_run_id[:64],
                    source_message_id=run.source_message_id[:128],
                    source_sign_convention=r.source_sign_convention,
                    recorded_by=self.actor,
                ),
                created=True,
                steps={},
            )
            for key in keys:
                self.targets[key] = target
        elif new:
            if r.ended_at > target.run.ended_at:
                target.run.ended_at, target.changed = r.ended_at, True
            if r.started_at < target.run.started_at:
                target.run.started_at, target.changed = r.started_at, True
        for step in new:
            target.steps[step.sequence] = _KnownStep(
                sequence=step.sequence,
                started_at=step.started_at,
                sha256=step.sha256,
                step_type=step.step_type,
                end_voltage_v=step.values["end_voltage_v"],
                pending=step,
            )
            target.new_steps.append((step, r))
        self.entries.append((index, target, len(target.new_steps) - len(new), skipped))

    @staticmethod
    def _same_place(stored: CyclerRun, r: _Run) -> None:
        run = r.input
        given = {
            "channel": run.channel.strip(),
            "tray": run.tray.strip(),
            "position": run.position.strip(),
        }
        for name, value in given.items():
            have = getattr(stored, name)
            if value and have and value != have:
                raise Refused(
                    f"This run is recorded with {name} {have!r}, not {value!r}.",
                    field=f"run.{name}",
                    code="conflict",
                )
        if run.equipment is not None and stored.equipment_id not in (None, run.equipment.pk):
            raise Refused(
                f"This run is recorded on other equipment (id {stored.equipment_id}).",
                field="equipment",
                code="conflict",
            )


def _blob_store(blob: bytes, sha: str, created: list[str]) -> str:
    """Save a curve blob under its SHA-256 (once: the same content is the same file)."""
    storage = StepCurve._meta.get_field("blob").storage
    name = f"{CURVE_STORE}/{sha[:2]}/{sha[2:4]}/{sha}.ctc"
    if storage.exists(name):
        return name
    saved = storage.save(name, ContentFile(blob))
    created.append(saved)
    return saved


def _dcir_row(
    *, unit_id: int, run: CyclerRun, step: StepResult, arrays: dict, v_before: float
) -> DcirReading | None:
    """The pulse's resistances at 1 s and 10 s (None where the pulse is shorter)."""
    t, v, i = arrays["time_s"], arrays["voltage_v"], arrays["current_a"]
    if len(t) < 2:
        return None
    span = float(t[-1] - t[0])
    r = {}
    for at_s in (1.0, 10.0):
        try:
            r[at_s] = (
                fx.dcir_mohm(t, v, i, v_before_v=v_before, at_s=at_s) if span >= at_s else None
            )
        except ValueError:
            r[at_s] = None
    if r[1.0] is None and r[10.0] is None:
        return None
    temp = arrays.get("temperature_c")
    return DcirReading(
        unit_id=unit_id,
        run=run,
        step=step,
        pulse_current_a=float(np.median(i[1:])),
        pulse_duration_s=span,
        v_before_v=float(v_before),
        r_1s_mohm=r[1.0],
        r_10s_mohm=r[10.0],
        temperature_c=None if temp is None else float(temp[0]),
        measured_at=step.started_at,
    )


def _plan_write(plan: _Plan) -> None:
    """Write the plan: new runs, run times, curve blobs, step rows, curves, DCIR."""
    from .queries import curve_arrays

    targets = list({id(t): t for _, t, _, _ in plan.entries}.values())
    bulk_insert(CyclerRun, [t.run for t in targets if t.created])
    for t in targets:
        if not t.created and t.changed:
            CyclerRun.objects.filter(pk=t.run.pk).update(
                started_at=t.run.started_at, ended_at=t.run.ended_at
            )
    created_files: list[str] = []
    try:
        rows: list[StepResult] = []
        curves: list[StepCurve] = []
        for t in targets:
            for step, _r in t.new_steps:
                row = StepResult(run=t.run, **step.values)
                rows.append(row)
                curves.append(
                    StepCurve(
                        step=row,
                        blob=_blob_store(step.blob, step.sha256, created_files),
                        sha256=step.sha256,
                        size_bytes=len(step.blob),
                        n_points=len(step.arrays["time_s"]),
                        columns=",".join(n for n in _ARRAYS if n in step.arrays),
                        time_first_s=float(step.arrays["time_s"][0]),
                        time_last_s=float(step.arrays["time_s"][-1]),
                        resampled=step.resampled,
                        resampled_points=curve_points(),
                        resampled_columns=",".join(step.resampled_columns),
                    )
                )
                step.row = row
        bulk_insert(StepResult, rows)
        for curve in curves:
            curve.step_id = curve.step.pk
        bulk_insert(StepCurve, curves)
        dcir: list[DcirReading] = []
        for t in targets:
            for seq, known in t.steps.items():
                if known.step_type != StepType.PULSE or known.has_dcir or seq - 1 not in t.steps:
                    continue
                before = t.steps[seq - 1]
                if known.pending is None and before.pending is None:
                    continue  # both stored before, and no DCIR then: nothing new to derive
                if known.pending is not None:
                    step_row, arrays = known.pending.row, known.pending.arrays
                else:
                    step_row = StepResult.objects.select_related("curve").get(pk=known.step_id)
                    arrays = curve_arrays(step_row.curve)
                reading = _dcir_row(
                    unit_id=t.run.unit_id,
                    run=t.run,
                    step=step_row,
                    arrays=arrays,
                    v_before=before.end_voltage_v,
                )
                if reading is not None:
                    dcir.append(reading)
                    known.has_dcir = True
        bulk_insert(DcirReading, dcir)
    except BaseException:
        storage = StepCurve._meta.get_field("blob").storage
        for name in created_files:
            storage.delete(name)
        raise


@transaction.atomic
def formation_runs_record(
    *, runs: Sequence[RunInput], actor: Actor | None = None
) -> list[RunRecorded | DomainError]:
    """Record cycler runs (whole, or the next steps of a streaming run): one result per
    input, in order, :class:`RunRecorded` or the :class:`DomainError` that refused it
    (nothing of a refused run is written). Identified by the source file's SHA-256 or the
    cycler's run id per cell: a step stored already (same start, same samples) is skipped,
    a different one under the same sequence refused. Publishes
    :class:`FormationRunsRecorded` after commit."""
    now = timezone.now()
    results: list[RunRecorded | DomainError | None] = [None] * len(runs)
    checked: dict[int, _Run] = {}
    for i, run in enumerate(runs):
        try:
            checked[i] = _run_check(run, now)
        except DomainError as exc:
            results[i] = exc
    plan = _Plan(list(checked.values()), actor)
    for i, r in checked.items():
        try:
            plan.add(i, r)
        except DomainError as exc:
            results[i] = exc
    _plan_write(plan)
    run_ids, unit_ids = set(), set()
    for i, target, first, skipped in plan.entries:
        mine = [s for s, _ in target.new_steps[first:]]
        results[i] = RunRecorded(
            run=target.run,
            created=target.created and first == 0,
            steps=[s.row for s in mine],
            skipped=skipped,
        )
        if mine:
            run_ids.add(target.run.pk)
            unit_ids.add(target.run.unit_id)
    if run_ids:
        events.publish(
            FormationRunsRecorded(run_ids=tuple(sorted(run_ids)), unit_ids=tuple(sorted(unit_ids)))
        )
    return results  # type: ignore[return-value]


def formation_run_record(*, run: RunInput, actor: Actor | None = None) -> RunRecorded:
    """Record one run (see :func:`formation_runs_record`), raising its refusal."""
    (result,) = formation_runs_record(runs=[run], actor=actor)
    if isinstance(result, DomainError):
        raise result
    return result


# --- aging readings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgingInput:
    """One reading of a cell on an aging rack: OCV in mV, ACIR in mΩ and temperature in °C
    where the scanner measures them."""

    unit: Unit
    station: Station
    rack: str
    ocv_mv: float
    measured_at: datetime
    equipment: Equipment | None = None
    rack_position: str = ""
    acir_mohm: float | None = None
    temperature_c: float | None = None
    source_message_id: str = ""


@dataclass
class AgingRecorded:
    """The readings one message wrote, and how many it repeated (stored already)."""

    readings: list[AgingReading] = field(default_factory=list)
    skipped: int = 0


def _same_reading(row: AgingReading | AgingInput, r: AgingInput) -> bool:
    return (
        row.ocv_mv == float(r.ocv_mv)
        and row.acir_mohm == _finite(r.acir_mohm)
        and row.temperature_c == _finite(r.temperature_c)
        and row.rack == r.rack.strip()
    )


def _reading_check(r: AgingInput, i: int, now: datetime) -> None:
    where = f"readings[{i}]"
    if r.unit.kind != UnitKind.CELL:
        raise InvalidInput(
            f"{r.unit.serial} is a {r.unit.get_kind_display().lower()}, not a cell.",
            field=f"{where}.unit",
        )
    if not r.rack.strip():
        raise InvalidInput("A reading names its aging rack.", field="rack")
    ocv = _finite(r.ocv_mv)
    if ocv is None or not 0.0 <= ocv <= 6000.0:
        raise InvalidInput(
            f"OCV {r.ocv_mv} mV is not a cell voltage (0..6000 mV).", field=f"{where}.ocv_mv"
        )
    if 0.0 < ocv < OCV_VOLTS_BELOW_MV:
        raise InvalidInput(
            f"OCV {ocv:g} mV: volts sent as millivolts?", field=f"{where}.ocv_mv", code="unit"
        )
    if r.acir_mohm is not None and (_finite(r.acir_mohm) is None or r.acir_mohm < 0):
        raise InvalidInput(f"ACIR {r.acir_mohm} is not a resistance.", field=f"{where}.acir_mohm")
    if r.temperature_c is not None:
        t = _finite(r.temperature_c)
        lo, hi = TEMPERATURE_RANGE_C
        if t is None or not lo <= t <= hi:
            raise InvalidInput(
                f"Temperature {r.temperature_c} °C is outside {lo:g}..{hi:g} °C.",
                field=f"{where}.temperature_c",
            )
    if r.measured_at > now + CLOCK_SKEW:
        raise InvalidInput(f"{_iso(r.measured_at)} is in the future.", field=f"{where}.measured_at")


@transaction.atomic
def aging_readings_record_many(
    *, batches: Sequence[Sequence[AgingInput]], actor: Actor | None = None
) -> list[AgingRecorded | DomainError]:
    """Record several messages' aging readings at once: one result per batch, in order,
    :class:`AgingRecorded` or the refusal (a batch is written whole or not at all). A
    reading stored already (same cell and time, same values) is skipped; a different value
    for the same cell and time is refused. One bulk write for all batches."""
    now = timezone.now()
    results: list[AgingRecorded | DomainError | None] = [None] * len(batches)
    everything = [r for batch in batches for r in batch]
    stored: dict[tuple[int, datetime], AgingReading] = {}
    if everything:
        lo = min(r.measured_at for r in everything)
        hi = max(r.measured_at for r in everything)
        for row in AgingReading.objects.filter(
            unit_id__in={r.unit.pk for r in everything}, measured_at__gte=lo, measured_at__lte=hi
        ):
            stored[(row.unit_id, row.measured_at)] = row
    pending: dict[tuple[int, datetime], AgingInput] = {}
    rows: list[AgingReading] = []
    owners: list[int] = []
    for k, batch in enumerate(batches):
        try:
            if not batch:
                raise InvalidInput("A message carries at least one reading.", field="readings")
            mine: dict[tuple[int, datetime], AgingInput] = {}
            skipped = 0
            for i, r in enumerate(batch):
                _reading_check(r, i, now)
                key = (r.unit.pk, r.measured_at)
                earlier = stored.get(key) or pending.get(key) or mine.get(key)
                if earlier is None:
                    mine[key] = r
                elif _same_reading(earlier, r):
                    skipped += 1
                else:
                    raise Refused(
                        f"{r.unit.serial} has a reading at {_iso(r.measured_at)} already "
                        f"({earlier.ocv_mv:g} mV on {earlier.rack}).",
                        field=f"readings[{i}].ocv_mv",
                        code="conflict",
                    )
        except DomainError as exc:
            results[k] = exc
            continue
        pending.update(mine)
        for r in mine.values():
            rows.append(
                AgingReading(
                    unit=r.unit,
                    station=r.station,
                    equipment=r.equipment,
                    rack=r.rack.strip()[:32],
                    rack_position=r.rack_position.strip()[:16],
                    ocv_mv=float(r.ocv_mv),
                    acir_mohm=_finite(r.acir_mohm),
                    temperature_c=_finite(r.temperature_c),
                    measured_at=r.measured_at,
                    source_message_id=r.source_message_id[:128],
                )
            )
            owners.append(k)
        results[k] = AgingRecorded(skipped=skipped)
    bulk_insert(AgingReading, rows)
    for row, k in zip(rows, owners, strict=True):
        results[k].readings.append(row)  # type: ignore[union-attr]
    return results  # type: ignore[return-value]


def aging_readings_record(
    *, readings: Sequence[AgingInput], actor: Actor | None = None
) -> AgingRecorded:
    """Record one message's aging readings (all or none), raising its refusal."""
    (result,) = aging_readings_record_many(batches=[readings], actor=actor)
    if isinstance(result, DomainError):
        raise result
    return result


# --- features ----------------------------------------------------------------------------------


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _formation_features(steps: list[dict], dcir: dict[int, dict]) -> dict[str, float]:
    """The step features of one run, with the meaning :func:`formation.features.cell_features`
    gives them: the formation charge is the run of charge steps from the first charge (a
    CC + CV pair, or a pre-charge + CC-CV), the capacity discharge the first discharge
    after it; of the pulses, the one from the highest voltage gives DCIR, the one from the
    lowest (when there are two or more) the low-SOC resistance."""
    f = dict.fromkeys(fx.FEATURE_NAMES, math.nan)
    types = [s["step_type"] for s in steps]
    first = next((j for j, t in enumerate(types) if t in CHARGE_TYPES), None)
    charge: list[dict] = []
    if first is not None:
        j = first
        while j < len(steps) and types[j] in CHARGE_TYPES:
            charge.append(steps[j])
            j += 1
    if charge:
        q = sum(s["capacity_ah"] for s in charge)
        f["q_charge_ah"] = q
        cv_steps = [s for s in charge if s["step_type"] in CV_TYPES]
        if cv_steps:
            times = [s["cv_time_s"] for s in cv_steps]
            f["cv_time_s"] = math.nan if None in times else float(sum(times))
            f["cv_tail_current_a"] = _nan(cv_steps[-1]["tail_current_a"])
            if all(s["step_type"] == StepType.CV_CHARGE for s in cv_steps) and q > 0:
                f["cv_charge_fraction"] = sum(s["capacity_ah"] for s in cv_steps) / q
        after = first + len(charge)
        dis = next((s for s in steps[after:] if s["step_type"] == StepType.DISCHARGE), None)
    else:
        dis = next((s for s in steps if s["step_type"] == StepType.DISCHARGE), None)
    if dis is not None:
        q, e = dis["capacity_ah"], dis["energy_wh"]
        f["q_discharge_ah"], f["e_discharge_wh"] = q, e
        f["v_mean_discharge_v"] = e / q if q > 0 else math.nan
        if f["q_charge_ah"] > 0:
            f["ice"] = q / f["q_charge_ah"]
    rises = [s["temperature_rise_k"] for s in steps if s["temperature_rise_k"] is not None]
    if rises:
        f["temperature_rise_k"] = float(max(rises))
    pulses = [
        dcir[s["id"]] for s in steps[1:] if s["step_type"] == StepType.PULSE and s["id"] in dcir
    ]
    if pulses:
        mid = max(pulses, key=lambda d: d["v_before_v"])
        f["dcir_1s_mohm"] = _nan(mid["r_1s_mohm"])
        f["dcir_10s_mohm"] = _nan(mid["r_10s_mohm"])
        if len(pulses) > 1:
            low = min(pulses, key=lambda d: d["v_before_v"])
            f["r_low_soc_10s_mohm"] = _nan(low["r_10s_mohm"])
    f["_discharge_step_id"] = dis["id"] if dis is not None else None  # type: ignore[assignment]
    return f


def _ica(f: dict, arrays: dict[str, np.ndarray]) -> None:
    grid, ica = fx.dqdv(arrays["voltage_v"], arrays["capacity_ah"], v_range=fx.ICA_WINDOW_V)
    pos, height = fx.dqdv_peaks(grid, ica)
    for j in range(fx.ICA_PEAKS):
        f[f"ica_peak{j + 1}_v"] = float(pos[j])
        f[f"ica_peak{j + 1}_ah_per_v"] = float(height[j])


def _aging_features(f: dict, readings: list[dict], coeff: float) -> None:
    at = np.array([r["measured_at"].timestamp() for r in readings], dtype=np.float64)
    ocv = np.array([r["ocv_mv"] for r in readings], dtype=np.float64)
    days = (at - at[0]) / 86400.0
    if coeff:
        temps = np.array([_nan(r["temperature_c"]) for r in readings], dtype=np.float64)
        fit = fx.k_value(days, ocv, temperature_c=temps, ocv_temp_coeff_mv_per_k=coeff)
    else:
        fit = fx.k_value(days, ocv)
    f["k_value_mv_per_day"] = fit.k_mv_per_day
    f["k_value_se_mv_per_day"] = fit.se_mv_per_day
    f["k_value_r2"] = fit.r2
    f["ocv_end_mv"] = float(ocv[-1])
    acir = [r["acir_mohm"] for r in readings if r["acir_mohm"] is not None]
    f["acir_mohm"] = float(acir[-1]) if acir else math.nan


def _lots(cells: list[Unit]) -> dict[int, str]:
    """A cell's lot: its GS1 batch/lot, else the first electrode coil recorded as wound into
    it (the winder reports the cathode first)."""
    lots = {c.pk: c.batch_lot for c in cells if c.batch_lot}
    missing = [c.pk for c in cells if not c.batch_lot]
    if missing:
        links = (
            Link.objects.filter(
                target_id__in=missing,
                kind=LinkKind.CONSUMED,
                removed_at__isnull=True,
                source__kind__in=(UnitKind.SLIT_COIL, UnitKind.COIL),
            )
            .order_by("target_id", "linked_at", "id")
            .values_list("target_id", "source__serial")
        )
        for target_id, serial in links:
            lots.setdefault(target_id, serial)
    return lots


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _z_update(batch: list[CellFeatures]) -> None:
    """Each key feature's robust z-score within the cell's lot, formation channel and aging
    rack, over the population of that group stored now (channel and rack: the cells formed
    within :data:`Z_WINDOW` before the earliest of the batch)."""
    formed = [f.formed_at for f in batch if f.formed_at is not None]
    since = min(formed) - Z_WINDOW if formed else None
    scores: dict[int, dict[str, dict[str, float | None]]] = {f.unit_id: {} for f in batch}
    for name, column in Z_GROUPS:
        keys = {getattr(f, column) for f in batch if getattr(f, column)}
        if not keys:
            continue
        qs = CellFeatures.objects.filter(**{f"{column}__in": keys})
        if column != "lot" and since is not None:
            qs = qs.filter(Q(formed_at__gte=since) | Q(formed_at__isnull=True))
        rows = list(qs.order_by().values_list("unit_id", column, *Z_FEATURES))
        values = np.array(
            [[np.nan if v is None else v for v in row[2:]] for row in rows], dtype=np.float64
        ).reshape(len(rows), len(Z_FEATURES))
        z = fx.robust_z(values, np.array([row[1] for row in rows], dtype=object))
        by_unit = {row[0]: k for k, row in enumerate(rows)}
        for f in batch:
            k = by_unit.get(f.unit_id)
            if k is None or not getattr(f, column):
                continue
            scores[f.unit_id][name] = {
                feat: (None if not math.isfinite(z[k, j]) else round(float(z[k, j]), 4))
                for j, feat in enumerate(Z_FEATURES)
            }
    k_col = Z_FEATURES.index("k_value_mv_per_day")
    for f in batch:
        f.z_scores = scores[f.unit_id]
        f.k_value_z_lot = (f.z_scores.get("lot") or {}).get(Z_FEATURES[k_col])
        f.k_value_z_rack = (f.z_scores.get("rack") or {}).get(Z_FEATURES[k_col])
    CellFeatures.objects.bulk_update(
        batch, ["z_scores", "k_value_z_lot", "k_value_z_rack"], batch_size=1000
    )


_FEATURE_COLUMNS = (*fx.FEATURE_NAMES, "acir_mohm")


@transaction.atomic
def features_compute(
    *, cell_ids: Iterable[int], curves: bool = True, now: datetime | None = None
) -> list[CellFeatures]:
    """Compute (again) the formation features of cells: from each cell's latest run (step
    results, DCIR readings and, with ``curves``, the full-resolution capacity discharge
    for the dQ/dV peaks) and its aging readings after that run (K-value by least squares,
    last OCV and ACIR). One row per cell, updated in place with the feature set version;
    then the z-scores within lot, channel and rack (see :func:`_z_update`). Cells without
    any run or reading are left out. Safe to repeat."""
    from .queries import curve_arrays

    now = now or timezone.now()
    ids = sorted(set(cell_ids))
    cells = list(
        Unit.objects.filter(pk__in=ids, kind=UnitKind.CELL).only("id", "line_id", "batch_lot")
    )
    if not cells:
        return []
    latest: dict[int, CyclerRun] = {}
    for run in CyclerRun.objects.filter(unit_id__in=[c.pk for c in cells]).order_by(
        "unit_id", "-started_at", "-id"
    ):
        latest.setdefault(run.unit_id, run)
    steps_of: dict[int, list[dict]] = defaultdict(list)
    for row in (
        StepResult.objects.filter(run_id__in=[r.pk for r in latest.values()])
        .order_by("run_id", "sequence")
        .values(
            "id", "run_id", "step_type", "capacity_ah", "energy_wh", "cv_time_s",
            "tail_current_a", "temperature_rise_k",
        )
    ):  # fmt: skip
        steps_of[row["run_id"]].append(row)
    dcir = {
        row["step_id"]: row
        for row in DcirReading.objects.filter(run_id__in=[r.pk for r in latest.values()]).values(
            "step_id", "v_before_v", "r_1s_mohm", "r_10s_mohm"
        )
    }
    readings_of: dict[int, list[dict]] = defaultdict(list)
    for row in (
        AgingReading.objects.filter(unit_id__in=[c.pk for c in cells])
        .order_by("unit_id", "measured_at", "id")
        .values("unit_id", "measured_at", "ocv_mv", "acir_mohm", "temperature_c", "rack")
    ):
        run = latest.get(row["unit_id"])
        if run is None or row["measured_at"] >= run.ended_at:
            readings_of[row["unit_id"]].append(row)
    coeff = float(getattr(settings, "QMS_FORMATION_OCV_TEMP_COEFF_MV_PER_K", 0.0))
    lots = _lots(cells)
    step_features: dict[int, dict] = {}
    for cell in cells:
        run = latest.get(cell.pk)
        if run is not None:
            step_features[cell.pk] = _formation_features(steps_of.get(run.pk, []), dcir)
    discharge_curves = {}
    if curves:
        wanted = [f["_discharge_step_id"] for f in step_features.values()]
        discharge_curves = {
            c.step_id: c
            for c in StepCurve.objects.filter(step_id__in=[w for w in wanted if w is not None])
        }
    computed: dict[int, dict] = {}
    for cell in cells:
        run = latest.get(cell.pk)
        readings = readings_of.get(cell.pk, [])
        if run is None and not readings:
            continue
        f = step_features.get(cell.pk) or _formation_features([], dcir)
        curve = discharge_curves.get(f.pop("_discharge_step_id"))
        if curve is not None:
            _ica(f, curve_arrays(curve))
        f["acir_mohm"] = math.nan
        if readings:
            _aging_features(f, readings, coeff)
        racks = Counter(r["rack"] for r in readings)
        top = max(racks.values()) if racks else 0
        computed[cell.pk] = {
            "values": f,
            "run": run,
            "line_id": cell.line_id,
            "lot": lots.get(cell.pk, "")[:64],
            "channel_key": run.channel_key if run else "",
            "rack": next((r["rack"] for r in reversed(readings) if racks[r["rack"]] == top), ""),
            "formed_at": run.started_at if run else None,
            "aging_readings": len(readings),
        }
    existing = {f.unit_id: f for f in CellFeatures.objects.filter(unit_id__in=list(computed))}
    new, changed = [], []
    for unit_id, c in computed.items():
        row = existing.get(unit_id) or CellFeatures(unit_id=unit_id)
        row.run = c["run"]
        row.line_id = c["line_id"]
        row.lot, row.channel_key, row.rack = c["lot"], c["channel_key"], c["rack"]
        row.formed_at, row.aging_readings = c["formed_at"], c["aging_readings"]
        for name in _FEATURE_COLUMNS:
            setattr(row, name, _clean(c["values"].get(name, math.nan)))
        row.feature_version = fx.FEATURE_SET_VERSION
        row.computed_at = now
        (changed if row.pk else new).append(row)
    CellFeatures.objects.bulk_create(new, batch_size=1000)
    CellFeatures.objects.bulk_update(
        changed,
        [
            "run", "line", "lot", "channel_key", "rack", "formed_at", "aging_readings",
            *_FEATURE_COLUMNS, "feature_version", "computed_at",
        ],
        batch_size=500,
    )  # fmt: skip
    batch = list(CellFeatures.objects.filter(unit_id__in=list(computed)).order_by("unit_id"))
    if batch:
        _z_update(batch)
    return batch


# --- grading -----------------------------------------------------------------------------------


def bins_validate(bins: object, *, reject_bin: str, k_fail_bin: str) -> list[dict]:
    """The bins of a rule set, checked: a list of ``{"code": str, "limits": {criterion:
    {"min": x, "max": y}}}`` with unique codes (not the reject or K-fail bin), known
    criteria (:class:`BinCriterion`), finite limits and ``min <= max``. Refusals name
    ``bins[i]...``."""
    if not isinstance(bins, list) or not bins:
        raise InvalidInput("A rule set has at least one bin.", field="bins")
    if not reject_bin.strip() or not k_fail_bin.strip():
        raise InvalidInput("The reject and K-fail bins have codes.", field="reject_bin")
    codes: dict[str, int] = {}
    out = []
    for i, b in enumerate(bins):
        where = f"bins[{i}]"
        if not isinstance(b, dict):
            raise InvalidInput("A bin is an object with a code and limits.", field=where)
        extra = set(b) - {"code", "limits", "label"}
        if extra:
            raise InvalidInput(f"Unknown key(s) {', '.join(sorted(extra))}.", field=where)
        code = b.get("code")
        if not isinstance(code, str) or not 1 <= len(code.strip()) <= 16:
            raise InvalidInput("A bin code is 1-16 characters.", field=f"{where}.code")
        code = code.strip()
        if code in codes or code in (reject_bin.strip(), k_fail_bin.strip()):
            raise InvalidInput(f"Bin code {code!r} is used twice.", field=f"{where}.code")
        codes[code] = i
        limits = b.get("limits", {})
        if not isinstance(limits, dict):
            raise InvalidInput("Limits are an object.", field=f"{where}.limits")
        clean = {}
        for criterion, bounds in limits.items():
            at = f"{where}.limits.{criterion}"
            if criterion not in BinCriterion.values:
                raise InvalidInput(
                    f"Unknown criterion {criterion!r}; one of {', '.join(BinCriterion.values)}.",
                    field=at,
                )
            if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"}:
                raise InvalidInput("Give min, max or both.", field=at)
            for side, value in bounds.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidInput(f"{side} is not a number.", field=f"{at}.{side}")
                if not math.isfinite(value):
                    raise InvalidInput(f"{side} is not finite.", field=f"{at}.{side}")
            if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
                raise InvalidInput(f"min {bounds['min']} is above max {bounds['max']}.", field=at)
            clean[criterion] = {k: float(v) for k, v in bounds.items()}
        item = {"code": code, "limits": clean}
        if b.get("label"):
            item["label"] = str(b["label"])[:80]
        out.append(item)
    return out


@transaction.atomic
def grading_rules_create(
    *,
    line: Line,
    name: str,
    bins: list[dict],
    k_abs_limit_mv_per_day: float,
    k_lot_z_limit: float,
    actor: Actor,
    reject_bin: str = "NG",
    k_fail_bin: str = "NG-K",
    k_min_readings: int = 3,
    notes: str = "",
    reason: str = "drafted",
) -> GradingRuleSet:
    """Draft a grading rule set for a line (put in force by :func:`grading_rules_activate`)."""
    if not name.strip():
        raise InvalidInput("A rule set has a name.", field="name")
    bins = bins_validate(bins, reject_bin=reject_bin, k_fail_bin=k_fail_bin)
    for value, where in ((k_abs_limit_mv_per_day, "k_abs_limit_mv_per_day"),
                         (k_lot_z_limit, "k_lot_z_limit")):  # fmt: skip
        if not math.isfinite(float(value)) or float(value) <= 0:
            raise InvalidInput(f"{where} is a positive number.", field=where)
    if k_min_readings < 2:
        raise InvalidInput("A K-value needs at least two readings.", field="k_min_readings")
    if GradingRuleSet.objects.filter(line=line, name=name.strip()).exists():
        raise Refused(f"Line {line.code} has a rule set {name.strip()!r} already.", field="name")
    rules = GradingRuleSet(
        line=line,
        name=name.strip(),
        bins=bins,
        reject_bin=reject_bin.strip(),
        k_fail_bin=k_fail_bin.strip(),
        k_abs_limit_mv_per_day=float(k_abs_limit_mv_per_day),
        k_lot_z_limit=float(k_lot_z_limit),
        k_min_readings=k_min_readings,
        notes=notes,
        created_by=actor,
        created_at=timezone.now(),
    )
    rules._history_user = actor
    rules._change_reason = reason[:100]
    rules.save()
    return rules


@transaction.atomic
def grading_rules_activate(
    *, rule_set: GradingRuleSet, actor: Actor, reason: str
) -> GradingRuleSet:
    """Put a rule set in force on its line; the one in force before is retired. Needs the
    permission to change rule sets (a quality engineer's decision) and a reason."""
    if not actor.has_perm(ACTIVATE_PERMISSION):
        raise Refused(
            "Only a quality engineer may put grading rules in force.",
            field="actor",
            code="forbidden",
        )
    if not reason.strip():
        raise InvalidInput("Putting rules in force needs a reason.", field="reason")
    rule_set = GradingRuleSet.objects.select_for_update().get(pk=rule_set.pk)
    if rule_set.state == RuleSetState.ACTIVE:
        return rule_set
    if rule_set.state == RuleSetState.RETIRED:
        raise Refused(f"{rule_set} is retired; draft a new rule set.", field="state")
    bins_validate(rule_set.bins, reject_bin=rule_set.reject_bin, k_fail_bin=rule_set.k_fail_bin)
    for old in GradingRuleSet.objects.select_for_update().filter(
        line_id=rule_set.line_id, state=RuleSetState.ACTIVE
    ):
        old.state = RuleSetState.RETIRED
        old._history_user = actor
        old._change_reason = f"retired: {rule_set.name} in force"[:100]
        old.save(update_fields=["state"])
    rule_set.state = RuleSetState.ACTIVE
    rule_set.activated_at = timezone.now()
    rule_set._history_user = actor
    rule_set._change_reason = f"in force: {reason.strip()}"[:100]
    rule_set.save(update_fields=["state", "activated_at"])
    return rule_set


@dataclass
class GradingResult:
    """What :func:`cells_grade` did: the grades (written now, or the unchanged latest one
    when nothing changed since), and the cells it could not grade yet, with why."""

    grades: list[CellGrade] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[CellGrade]:
        return [g for g in self.grades if not g.passed]


def _grade_inputs(f: CellFeatures) -> dict[str, float | None]:
    out = {c: _clean(getattr(f, col)) for c, col in BIN_FEATURES.items()}
    out["k_value_z_lot"] = _clean(f.k_value_z_lot)
    out["aging_readings"] = f.aging_readings
    return out


def _grade(f: CellFeatures, rules: GradingRuleSet) -> tuple[str, bool, bool, list[str]]:
    """(bin, passed, K screen failed, reasons) of one cell."""
    k, z = f.k_value_mv_per_day, f.k_value_z_lot
    reasons = []
    if k > rules.k_abs_limit_mv_per_day:
        reasons.append(
            f"K-value {k:.4g} mV/day above the absolute limit {rules.k_abs_limit_mv_per_day:g}"
        )
    if z is not None and z > rules.k_lot_z_limit:
        reasons.append(
            f"K-value {k:.4g} mV/day is {z:.2f} robust sigma above its lot {f.lot!r} "
            f"(limit {rules.k_lot_z_limit:g})"
        )
    if reasons:
        return rules.k_fail_bin, False, True, reasons
    values = _grade_inputs(f)
    for b in rules.bins:
        misses = []
        for criterion, bounds in b["limits"].items():
            value = values.get(criterion)
            label = BinCriterion(criterion).label
            if value is None:
                misses.append(f"{label} missing")
            elif "min" in bounds and value < bounds["min"]:
                misses.append(f"{label} {value:.5g} below {bounds['min']:g}")
            elif "max" in bounds and value > bounds["max"]:
                misses.append(f"{label} {value:.5g} above {bounds['max']:g}")
        if not misses:
            return b["code"], True, False, []
        reasons.append(f"not {b['code']}: {'; '.join(misses)}")
    return rules.reject_bin, False, False, reasons


@transaction.atomic
def cells_grade(
    *, cell_ids: Iterable[int], actor: Actor | None = None, now: datetime | None = None
) -> GradingResult:
    """Grade cells with the active rule set of their line: the K screen (absolute and
    lot-relative limit) first, then the first bin whose limits the cell meets, else the
    reject bin. A cell is graded once its features have a K-value from at least the rule
    set's readings; the others are skipped with the reason. Grading a cell again with the
    same features and rules adds nothing. Publishes :class:`FormationGraded` after commit
    for the grades written."""
    now = now or timezone.now()
    ids = sorted(set(cell_ids))
    result = GradingResult()
    feats = {
        f.unit_id: f
        for f in CellFeatures.objects.select_for_update(of=("self",)).filter(unit_id__in=ids)
    }
    rules_of = {
        r.line_id: r
        for r in GradingRuleSet.objects.filter(
            state=RuleSetState.ACTIVE, line_id__in={f.line_id for f in feats.values()}
        )
    }
    last: dict[int, CellGrade] = {}
    for g in CellGrade.objects.filter(unit_id__in=list(feats)).order_by(
        "unit_id", "-graded_at", "-id"
    ):
        last.setdefault(g.unit_id, g)
    new: list[CellGrade] = []
    for unit_id in ids:
        f = feats.get(unit_id)
        if f is None:
            result.skipped[unit_id] = "no formation features"
            continue
        rules = rules_of.get(f.line_id)
        if rules is None:
            result.skipped[unit_id] = "no grading rules in force on the cell's line"
            continue
        if f.k_value_mv_per_day is None or f.aging_readings < rules.k_min_readings:
            result.skipped[unit_id] = (
                f"no K-value yet ({f.aging_readings} aging readings, {rules.k_min_readings} needed)"
            )
            continue
        before = last.get(unit_id)
        if (
            before is not None
            and before.rule_set_id == rules.pk
            and before.features_computed_at == f.computed_at
            and before.feature_version == f.feature_version
        ):
            result.grades.append(before)
            continue
        code, passed, k_failed, reasons = _grade(f, rules)
        new.append(
            CellGrade(
                unit_id=unit_id,
                rule_set=rules,
                bin=code,
                passed=passed,
                k_screen_failed=k_failed,
                reasons=reasons,
                inputs=_grade_inputs(f),
                feature_version=f.feature_version,
                features_computed_at=f.computed_at,
                graded_at=now,
                graded_by=actor,
            )
        )
    bulk_insert(CellGrade, new)
    result.grades += new
    if new:
        events.publish(
            FormationGraded(
                grade_ids=tuple(g.pk for g in new),
                cell_ids=tuple(g.unit_id for g in new),
                failed_ids=tuple(g.unit_id for g in new if not g.passed),
                k_screen_failed_ids=tuple(g.unit_id for g in new if g.k_screen_failed),
            )
        )
    return result


def cell_lookup(serial: str) -> Unit:
    """The cell with ``serial`` (for commands and the API), or :class:`NotFound`."""
    from genealogy.queries import unit_find

    unit = unit_find(serial, kind=UnitKind.CELL)
    if unit is None:
        raise NotFound(f"No cell {serial!r}.", field="unit")
    return unit


# --- live channel status and alarms ------------------------------------------------------------

#: Above this a step's capacity so far is a unit error (mAh sent as Ah): a whole 628 Ah cell
#: three times over stays below it.
CAPACITY_LIMIT_AH = 2000.0
#: Channel states whose current is a charge: + once normalised.
_CHARGE_STATES = frozenset({ChannelState.CC_CHARGE, ChannelState.CV_CHARGE})
#: Stored channels looked up per query (SQLite's bound-parameter limit).
_CHANNEL_CHUNK = 900
_STATUS_FIELDS = (
    "unit",
    "tray",
    "position",
    "state",
    "step_index",
    "step_elapsed_s",
    "voltage_v",
    "current_a",
    "temperature_c",
    "capacity_ah",
    "reported_at",
    "updated_at",
    "source_message_id",
)


@dataclass(frozen=True)
class AlarmInput:
    """An alarm active on a channel: the cycler's code, severity (``info``, ``warning``,
    ``critical``) and text."""

    code: str
    severity: str
    text: str = ""


@dataclass(frozen=True)
class ChannelInput:
    """One channel's live state as the cabinet reports it: volts, amperes (signed as the
    status's ``sign_convention`` says), °C, the step's Ah so far, seconds in the step, and
    the alarms active now. ``unit`` is the cell on the channel, None when none is loaded."""

    channel: str
    state: str
    voltage_v: float
    current_a: float
    unit: Unit | None = None
    tray: str = ""
    position: str = ""
    step_index: int | None = None
    step_elapsed_s: float | None = None
    temperature_c: float | None = None
    capacity_ah: float | None = None
    alarms: Sequence[AlarmInput] = ()


@dataclass(frozen=True)
class StatusInput:
    """The state of some channels of one cabinet (``equipment``) at ``reported_at``."""

    equipment: Equipment
    reported_at: datetime
    channels: Sequence[ChannelInput]
    sign_convention: str = SignConvention.CHARGE_POSITIVE
    source_message_id: str = ""


@dataclass
class StatusRecorded:
    """What one status changed: the channels it updated (the rows as stored at the end of
    the call), how many channels had a status as new or newer stored already (``stale``:
    left as they were), and the alarm episodes it raised and cleared."""

    updated: list[ChannelStatus] = field(default_factory=list)
    stale: int = 0
    raised: list[CyclerAlarm] = field(default_factory=list)
    cleared: list[CyclerAlarm] = field(default_factory=list)


@dataclass
class _ChannelChecked:
    input: ChannelInput
    channel: str
    state: ChannelState
    current_a: float
    alarms: dict[str, AlarmInput]


#: A live channel status is a safety signal: a cell in thermal runaway reads hundreds of
#: degrees, and that reading must be stored and alarmed, never refused as a unit mix-up
#: (the file readers' -40..150 °C is for formation records). Thermocouples read to 1,200.
LIVE_TEMPERATURE_RANGE_C = (-40.0, 1200.0)
#: At or above this, a status without a critical alarm of the cycler's own gets one from
#: Celltrace (code ``OVER_TEMPERATURE_CODE``): formation runs at 25-45 °C, and a cell
#: past 80 °C is venting or about to.
OVER_TEMPERATURE_C = 80.0
OVER_TEMPERATURE_CODE = "QMS-OVERTEMP"


def _in_range(
    value: float | None, bounds: tuple[float, float], unit: str, hint: str, where: str
) -> float:
    """``value`` as a float, or refused naming ``where``: not finite, or outside ``bounds``
    (code ``unit``: the usual cause is a unit mix-up, which ``hint`` names)."""
    lo, hi = bounds
    number = _finite(value)
    if number is None:
        raise InvalidInput(f"{value!r} is not a measured value.", field=where)
    if not lo <= number <= hi:
        raise InvalidInput(
            f"{number:g} {unit} is outside {lo:g}..{hi:g} {unit}: {hint}", field=where, code="unit"
        )
    return number


def _channel_check(ch: ChannelInput, where: str, flip: float, sign: str) -> _ChannelChecked:
    name = str(ch.channel).strip()
    if not name or len(name) > 64:
        raise InvalidInput("A channel is named in 1 to 64 characters.", field=f"{where}.channel")
    try:
        state = ChannelState(ch.state)
    except ValueError:
        raise InvalidInput(
            f"Unknown channel state {ch.state!r}; one of {', '.join(ChannelState.values)}.",
            field=f"{where}.state",
        ) from None
    if ch.unit is not None and ch.unit.kind != UnitKind.CELL:
        raise InvalidInput(
            f"{ch.unit.serial} is a {ch.unit.get_kind_display().lower()}, not a cell.",
            field=f"{where}.unit",
        )
    _in_range(ch.voltage_v, VOLTAGE_RANGE_V, "V", "millivolts sent as volts?", f"{where}.voltage_v")
    current = flip * _in_range(
        ch.current_a,
        (-CURRENT_LIMIT_A, CURRENT_LIMIT_A),
        "A",
        "milliamperes sent as amperes?",
        f"{where}.current_a",
    )
    temperature = None
    if ch.temperature_c is not None:
        hint = "kelvin sent as °C?"
        temperature = _in_range(
            ch.temperature_c, LIVE_TEMPERATURE_RANGE_C, "°C", hint, f"{where}.temperature_c"
        )
    if ch.capacity_ah is not None:
        _in_range(
            ch.capacity_ah,
            (0.0, CAPACITY_LIMIT_AH),
            "Ah",
            "the step's capacity counts from 0 in ampere-hours (milliampere-hours sent?)",
            f"{where}.capacity_ah",
        )
    if ch.step_elapsed_s is not None:
        elapsed = _finite(ch.step_elapsed_s)
        if elapsed is None or elapsed < 0:
            raise InvalidInput(
                f"{ch.step_elapsed_s!r} s is not a time in the step.",
                field=f"{where}.step_elapsed_s",
            )
    if ch.step_index is not None and ch.step_index < 0:
        raise InvalidInput("Step indexes are not negative.", field=f"{where}.step_index")
    wrong = (state in _CHARGE_STATES and current < -SIGN_CHECK_A) or (
        state == ChannelState.DISCHARGE and current > SIGN_CHECK_A
    )
    if wrong:
        raise InvalidInput(
            f"Channel {name} is in {state.label.lower()} but its current, signed as {sign}, "
            f"is {current:+.4g} A once normalised (a charge is +): the sign convention does "
            "not match the data.",
            field="sign_convention",
            code="sign",
        )
    alarms: dict[str, AlarmInput] = {}
    for j, alarm in enumerate(ch.alarms):
        code = alarm.code.strip()
        if not code or len(code) > 32:
            raise InvalidInput(
                "An alarm code has 1 to 32 characters.", field=f"{where}.alarms[{j}].code"
            )
        if code in alarms:
            raise InvalidInput(
                f"Alarm {code} is given twice on channel {name}.",
                field=f"{where}.alarms[{j}].code",
            )
        if alarm.severity not in AlarmSeverity.values:
            raise InvalidInput(
                f"Unknown alarm severity {alarm.severity!r}; one of "
                f"{', '.join(AlarmSeverity.values)}.",
                field=f"{where}.alarms[{j}].severity",
            )
        alarms[code] = AlarmInput(code, alarm.severity, (alarm.text or "").strip()[:200])
    if (
        temperature is not None
        and temperature >= OVER_TEMPERATURE_C
        and not any(a.severity == AlarmSeverity.CRITICAL for a in alarms.values())
    ):
        # The cycler's own limit did not trip (or it reports no alarms): the plant's does.
        alarms[OVER_TEMPERATURE_CODE] = AlarmInput(
            OVER_TEMPERATURE_CODE,
            AlarmSeverity.CRITICAL,
            f"Cell temperature {temperature:.1f} °C at or above Celltrace's "
            f"{OVER_TEMPERATURE_C:g} °C limit; the cycler reported no critical alarm",
        )
    return _ChannelChecked(input=ch, channel=name, state=state, current_a=current, alarms=alarms)


def _status_check(status: StatusInput, now: datetime) -> list[_ChannelChecked]:
    """Check one status message completely without the database."""
    sign = status.sign_convention
    if sign not in (SignConvention.CHARGE_POSITIVE, SignConvention.DISCHARGE_POSITIVE):
        raise InvalidInput(
            f"Currents are signed charge_positive or discharge_positive, not {sign!r}.",
            field="sign_convention",
        )
    if status.reported_at > now + CLOCK_SKEW:
        raise InvalidInput(f"{_iso(status.reported_at)} is in the future.", field="reported_at")
    if not status.channels:
        raise InvalidInput("A status reports at least one channel.", field="channels")
    flip = -1.0 if sign == SignConvention.DISCHARGE_POSITIVE else 1.0
    out: list[_ChannelChecked] = []
    channel_at: dict[str, int] = {}
    unit_at: dict[int, int] = {}
    for i, ch in enumerate(status.channels):
        where = f"channels[{i}]"
        checked = _channel_check(ch, where, flip, sign)
        if checked.channel in channel_at:
            raise InvalidInput(
                f"Channel {checked.channel} is given twice (also channels"
                f"[{channel_at[checked.channel]}]).",
                field=f"{where}.channel",
            )
        channel_at[checked.channel] = i
        if ch.unit is not None:
            if ch.unit.pk in unit_at:
                raise InvalidInput(
                    f"{ch.unit.serial} is on channels[{unit_at[ch.unit.pk]}] too: a cell is on "
                    "one channel.",
                    field=f"{where}.unit",
                )
            unit_at[ch.unit.pk] = i
        out.append(checked)
    return out


def _channels_locked(wanted: set[tuple[int, str]]) -> dict[tuple[int, str], ChannelStatus]:
    """The stored status rows of ``(equipment id, channel)``, locked until the transaction
    ends (PostgreSQL), in id order so that two workers lock in the same order."""
    found: dict[tuple[int, str], ChannelStatus] = {}
    by_equipment: dict[int, set[str]] = defaultdict(set)
    for equipment_id, channel in wanted:
        by_equipment[equipment_id].add(channel)
    for equipment_id, channels in sorted(by_equipment.items()):
        names = sorted(channels)
        for i in range(0, len(names), _CHANNEL_CHUNK):
            rows = (
                ChannelStatus.objects.select_for_update()
                .filter(equipment_id=equipment_id, channel__in=names[i : i + _CHANNEL_CHUNK])
                .only("equipment_id", "channel", "channel_key", "reported_at")  # the rest is set
                .order_by("pk")
            )
            for row in rows:
                found[(row.equipment_id, row.channel)] = row
    return found


def _alarms_open(status_ids: list[int]) -> dict[int, dict[str, CyclerAlarm]]:
    out: dict[int, dict[str, CyclerAlarm]] = defaultdict(dict)
    for i in range(0, len(status_ids), _CHANNEL_CHUNK):
        for alarm in CyclerAlarm.objects.filter(
            channel_status_id__in=status_ids[i : i + _CHANNEL_CHUNK], cleared_at__isnull=True
        ).order_by():
            out[alarm.channel_status_id][alarm.code] = alarm
    return out


def _statuses_update(rows: Sequence[ChannelStatus]) -> None:
    """Write the status fields of stored rows in one statement: on PostgreSQL an
    ``UPDATE ... FROM unnest(<one array per column>)``, elsewhere one prepared statement
    executed per row (``bulk_update``'s ``CASE`` per row and field grows with the square of
    the batch)."""
    if not rows:
        return
    opts = ChannelStatus._meta
    qn = connection.ops.quote_name
    fields = [opts.get_field(name) for name in _STATUS_FIELDS]
    pk = opts.pk
    table = qn(opts.db_table)
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            # A batch shares a few distinct times: each is adapted for the database once.
            adapted: dict[tuple[str, datetime], object] = {}

            def prep(f, value):
                if not isinstance(value, datetime):
                    return value  # str, float, int or None: as the column takes it
                key = (f.attname, value)
                if key not in adapted:
                    adapted[key] = f.get_db_prep_save(value, connection)
                return adapted[key]

            sets = ", ".join(f"{qn(f.column)} = %s" for f in fields)
            cursor.executemany(
                f"UPDATE {table} SET {sets} WHERE {qn(pk.column)} = %s",  # noqa: S608 (names from model metadata; values bound)
                [[prep(f, getattr(r, f.attname)) for f in fields] + [r.pk] for r in rows],
            )
            return
        columns = [pk, *fields]
        arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in columns)
        names = ", ".join(qn(f.column) for f in columns)
        sets = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in fields)
        cursor.execute(
            f"UPDATE {table} AS t SET {sets} FROM unnest({arrays}) AS v ({names}) "  # noqa: S608 (names from model metadata; values bound)
            f"WHERE t.{qn(pk.column)} = v.{qn(pk.column)}",
            [[getattr(r, f.attname) for r in rows] for f in columns],
        )


@transaction.atomic
def channel_statuses_record(
    *, statuses: Sequence[StatusInput], actor: Actor | None = None
) -> list[StatusRecorded | DomainError]:
    """Record the live state of cycler channels from several status messages at once: one
    result per message, in order, :class:`StatusRecorded` or the :class:`DomainError` that
    refused it (a refused message changes nothing; every message is checked before anything
    is written).

    Per channel (equipment and channel name) the stored row is overwritten by a status
    taken later than the stored one; a status as old or older changes nothing (MQTT may
    deliver out of order). Messages are applied in the order given, as one by one. An
    alarm code a channel reports opens an episode unless one is open with the same
    severity and cell; an open episode the channel no longer reports (or reports with
    another severity, or with another cell on the channel) is cleared at the status's time.

    Written in bulk: new channels inserted, changed ones updated together
    (:func:`_statuses_update`), episodes cleared per status time, new ones inserted. Stored
    channels are locked while the batch is applied, so two workers apply a channel's
    statuses one after the other. Publishes :class:`CyclerAlarmRaised` after commit for
    every critical episode raised.
    """
    now = timezone.now()
    results: list[StatusRecorded | DomainError | None] = [None] * len(statuses)
    checked: dict[int, list[_ChannelChecked]] = {}
    for k, status in enumerate(statuses):
        try:
            checked[k] = _status_check(status, now)
        except DomainError as exc:
            results[k] = exc
    wanted = {
        (statuses[k].equipment.pk, ch.channel) for k, channels in checked.items() for ch in channels
    }
    rows = _channels_locked(wanted)
    opened = _alarms_open(sorted(row.pk for row in rows.values()))
    open_of: dict[tuple[int, str], dict[str, CyclerAlarm]] = {
        key: dict(opened.get(row.pk, {})) for key, row in rows.items()
    }
    created: dict[tuple[int, str], ChannelStatus] = {}
    changed: dict[tuple[int, str], ChannelStatus] = {}
    new_alarms: list[CyclerAlarm] = []
    clears: dict[tuple[datetime, str], list[CyclerAlarm]] = defaultdict(list)
    for k, channels in checked.items():
        status = statuses[k]
        equipment, at = status.equipment, status.reported_at
        message_id = status.source_message_id[:128]
        done = StatusRecorded()
        for ch in channels:
            key = (equipment.pk, ch.channel)
            row = rows.get(key)
            if row is not None and row.reported_at >= at:
                done.stale += 1
                continue
            if row is None:
                row = ChannelStatus(
                    equipment=equipment,
                    channel=ch.channel,
                    channel_key=f"{equipment.code}:{ch.channel}"[:100],
                )
                rows[key] = created[key] = row
            elif row.pk is not None:
                changed[key] = row
            given = ch.input
            unit_id = given.unit.pk if given.unit is not None else None
            episodes = open_of.setdefault(key, {})
            for code, alarm in list(episodes.items()):
                still = ch.alarms.get(code)
                if still is None or still.severity != alarm.severity or unit_id != alarm.unit_id:
                    alarm.cleared_at, alarm.cleared_message_id = at, message_id
                    if alarm.pk is not None:
                        clears[(at, message_id)].append(alarm)
                    done.cleared.append(alarm)
                    del episodes[code]
            for code, reported in ch.alarms.items():
                if code in episodes:
                    continue
                alarm = CyclerAlarm(
                    channel_status=row,
                    unit=given.unit,
                    code=code,
                    severity=reported.severity,
                    text=reported.text,
                    state=ch.state.value,
                    step_index=given.step_index,
                    voltage_v=float(given.voltage_v),
                    temperature_c=_finite(given.temperature_c),
                    raised_at=at,
                    raised_message_id=message_id,
                )
                episodes[code] = alarm
                new_alarms.append(alarm)
                done.raised.append(alarm)
            row.unit = given.unit
            row.tray = (given.tray or "").strip()[:32]
            row.position = (given.position or "").strip()[:16]
            row.state = ch.state.value
            row.step_index = given.step_index
            row.step_elapsed_s = _finite(given.step_elapsed_s)
            row.voltage_v = float(given.voltage_v)
            row.current_a = ch.current_a
            row.temperature_c = _finite(given.temperature_c)
            row.capacity_ah = _finite(given.capacity_ah)
            row.reported_at = at
            row.updated_at = now
            row.source_message_id = message_id
            done.updated.append(row)
        results[k] = done
    bulk_insert(ChannelStatus, list(created.values()))
    _statuses_update(list(changed.values()))
    # Closed before the new episodes go in: one open episode per channel and code.
    for (at, message_id), alarms in clears.items():
        CyclerAlarm.objects.filter(pk__in=[a.pk for a in alarms]).update(
            cleared_at=at, cleared_message_id=message_id
        )
    for alarm in new_alarms:
        alarm.channel_status = alarm.channel_status  # its id, now that the row has one
    bulk_insert(CyclerAlarm, new_alarms)
    equipment_of = {s.equipment.pk: s.equipment for s in statuses}
    for alarm in new_alarms:
        if alarm.severity != AlarmSeverity.CRITICAL:
            continue
        row = alarm.channel_status
        events.publish(
            CyclerAlarmRaised(
                alarm_id=alarm.pk,
                equipment_id=row.equipment_id,
                station_id=equipment_of[row.equipment_id].station_id,
                channel=row.channel,
                channel_key=row.channel_key,
                code=alarm.code,
                severity=alarm.severity,
                text=alarm.text,
                raised_at=alarm.raised_at,
                unit_id=alarm.unit_id,
                step_index=alarm.step_index,
                temperature_c=alarm.temperature_c,
                voltage_v=alarm.voltage_v,
            )
        )
    return results  # type: ignore[return-value]


def channel_status_record(*, status: StatusInput, actor: Actor | None = None) -> StatusRecorded:
    """Record one status message (see :func:`channel_statuses_record`), raising its
    refusal."""
    (result,) = channel_statuses_record(statuses=[status], actor=actor)
    if isinstance(result, DomainError):
        raise result
    return result
