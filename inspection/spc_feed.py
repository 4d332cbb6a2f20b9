"""Vision defect counts into SPC: per camera and defect class, the defects found in every
10 m of coil, charted on a c chart.

An inspection unit is 10 m of one coil, ``[10k, 10k + 10)`` metres, inspected whole by one
camera. When a stored frame reaches or passes the end of such a window (its ``coil_end_m``
is at or after the window end), and the camera's results cover the window completely with
inspected frames, :func:`window_counts_record` records one measurement per defect class:
the number of that class's defects in the window (decision not ``ignore``, machine-direction
position inside the window), zeros included, so each class's c chart gets one point per
window. Each value goes through ``genealogy.services.measurements_record`` on the coil
(``position_m`` = the window start, ``measured_at`` = the frame's acquisition time, the
frame's message id), which publishes ``MeasurementsRecorded``: SPC evaluates the new counts
after the ingest commits, and an alarm goes the usual way to compliance.

* A window with an uninspected metre is not counted: the fail-safe holds those metres
  already, and a count over part of the unit is not comparable with the others.
* A window is recorded once: a class's count at a coil and window start that exists is not
  written again (a repeated frame, a second call). Frames that arrive out of order (several
  ingest workers) leave a window uncovered when its last frame is stored; it is counted
  when one of the next :data:`LOOKBACK_WINDOWS` windows of the coil completes.
* Most frames (about 490 of every 10 m at 20 µm scan lines) complete no window: they cost
  no query.

The characteristics are made on first use (:func:`characteristics_ensure`): one
control-plan row per defect class at the camera's station, charted as a c chart with rule
1 (see docs/spc.md, "c charts"). Dependency direction: inspection reads genealogy and qms
only; new characteristics are announced with ``CountCharacteristicsCreated`` and compliance
has SPC chart them as c charts after the commit.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError, transaction

from genealogy.models import Measurement, Unit
from genealogy.services import MeasurementInput, measurements_record
from qms import events
from qms.choices import SpecialCharacteristic
from qms.models import Characteristic

from .choices import Decision, Verdict
from .events import CountCharacteristicsCreated
from .models import Defect, InspectionResult, InspectionStation
from .schema import DEFECT_CLASSES

__all__ = [
    "LOOKBACK_WINDOWS",
    "WINDOW_M",
    "characteristic_code",
    "characteristics_ensure",
    "window_counts_record",
]

#: Length of one inspection unit of the c charts, in metres of coil.
WINDOW_M = 10.0
#: Gaps and overlaps below this are the encoder's rounding, not uninspected coil (m).
TOLERANCE_M = 1e-4
#: Earlier windows of the coil looked at again when a window completes (late frames).
LOOKBACK_WINDOWS = 3
#: What the characteristics measure, in the control plan's words.
UNIT = "defects/10 m"
METHOD = "inline line-scan vision, 100 %"
FREQUENCY = "every 10 m of coil"
#: Longest characteristic code the control plan holds.
CODE_MAX = Characteristic._meta.get_field("code").max_length
SUFFIX = "-per-10m"


def characteristic_code(camera: str, cls: str) -> str:
    """``vision-<camera>-<cls>-per-10m``; a camera name too long for the code's 48
    characters is cut and marked with 6 hex digits of its SHA-256, so codes stay unique."""
    code = f"vision-{camera}-{cls}{SUFFIX}"
    if len(code) <= CODE_MAX:
        return code
    digest = hashlib.sha256(camera.encode()).hexdigest()[:6]
    room = CODE_MAX - len(f"vision--{digest}-{cls}{SUFFIX}")
    return f"vision-{camera[:room].rstrip('-_')}-{digest}-{cls}{SUFFIX}"


def _reaction_plan(camera: InspectionStation, cls: str) -> str:
    return (
        f"c chart alarm on {cls} defects per 10 m at {camera.camera}: the coil metres with "
        "quarantined defects are flagged by vision already. Check the line before the "
        f"camera for the source of {cls} defects (slot die, rollers, filters, web path, "
        "cleanliness), record the cause on the alarm; the quality engineer decides on the "
        "suspect window (release or MRB)."
    )


def characteristics_ensure(*, camera: InspectionStation) -> list[Characteristic]:
    """The camera's defect-count characteristics, one per class of
    :data:`inspection.schema.DEFECT_CLASSES` in that order, made on first use at the
    camera's station: code :func:`characteristic_code`, unit ``defects/10 m``, nominal 0,
    LSL 0 (a count is never below; the control plan needs one limit) and no USL, special
    class none; each with a c chart configuration (one count per point, rule 1, no
    detectors). Existing rows and configurations are left as they are (a quality engineer
    may have changed them); safe to call again and concurrently."""
    codes = {cls: characteristic_code(camera.camera, cls) for cls in DEFECT_CLASSES}
    found = {
        c.code: c
        for c in Characteristic.objects.filter(
            station_id=camera.station_id, code__in=codes.values()
        ).select_related("chart_config")
    }
    out, unconfigured = [], []
    for cls, code in codes.items():
        characteristic = found.get(code)
        if characteristic is None:
            characteristic = _characteristic_create(camera, cls, code)
        if not _has_chart_config(characteristic):
            unconfigured.append(characteristic.pk)
        out.append(characteristic)
    if unconfigured:
        # SPC sits beside inspection, not below it: the c charts are configured by whoever
        # wires the two together (compliance), after this transaction commits.
        events.publish(CountCharacteristicsCreated(characteristic_ids=tuple(unconfigured)))
    return out


def _has_chart_config(characteristic: Characteristic) -> bool:
    """Whether the characteristic has its chart configuration (read with it by
    ``select_related``; a new one has none)."""
    try:
        return characteristic.chart_config is not None
    except ObjectDoesNotExist:
        return False


def _characteristic_create(camera: InspectionStation, cls: str, code: str) -> Characteristic:
    characteristic = Characteristic(
        station_id=camera.station_id,
        code=code,
        name=f"Vision {camera.camera}: {cls} defects per 10 m",
        unit=UNIT,
        nominal=0.0,
        lsl=0.0,
        usl=None,
        measurement_method=METHOD,
        sample_size=1,
        sample_frequency=FREQUENCY,
        reaction_plan=_reaction_plan(camera, cls),
        special_class=SpecialCharacteristic.NONE,
    )
    characteristic._change_reason = f"defect counts of {camera} for SPC"
    try:
        with transaction.atomic():
            characteristic.save()
    except IntegrityError:  # made by a concurrent first use a moment ago
        return Characteristic.objects.get(station_id=camera.station_id, code=code)
    return characteristic


@dataclass(frozen=True)
class _Frame:
    """A stored result as the window check reads it."""

    id: int
    start_m: float
    end_m: float
    inspected: bool
    acquired_at: datetime
    message_id: str


def _completed(result: InspectionResult) -> list[float]:
    """Starts of the windows whose end lies in ``(coil_start_m, coil_end_m]``."""
    first = (math.floor(result.coil_start_m / WINDOW_M) + 1) * WINDOW_M
    ends = []
    while first <= result.coil_end_m:
        ends.append(first)
        first += WINDOW_M
    return [end - WINDOW_M for end in ends]


def _window_state(frames: list[_Frame], start: float) -> tuple[bool, _Frame | None]:
    """Whether the window at ``start`` is covered whole by inspected frames, and the frame
    that reaches its end (the last one of the window)."""
    end = start + WINDOW_M
    inside = [f for f in frames if f.end_m > start + TOLERANCE_M and f.start_m < end - TOLERANCE_M]
    if not inside or any(not f.inspected for f in inside):
        return False, None
    reach = start
    for frame in inside:  # ordered by start
        if frame.start_m > reach + TOLERANCE_M:
            return False, None
        reach = max(reach, frame.end_m)
    if reach < end - TOLERANCE_M:
        return False, None
    last = max(inside, key=lambda f: (f.end_m, f.acquired_at, f.id))
    return True, last


def window_counts_record(*, result: InspectionResult) -> list[int]:
    """Record the defect counts of the 10 m windows ``result`` completes (and of earlier
    windows of its coil left uncounted by frames that came late), one measurement per
    defect class and window; the new measurement ids, ``[]`` when the frame completes no
    window (no query) or nothing is left to count.

    Called for each stored result, inside the transaction that stores it. A window is
    counted when the camera's results cover it whole and none of them is uninspected.
    Characteristics that are switched off (inactive) get no values. Runs again safely:
    counts written before are not written twice.
    """
    completed = _completed(result)
    if not completed:
        return []
    camera = result.camera
    characteristics = [
        (cls, c)
        for cls, c in zip(DEFECT_CLASSES, characteristics_ensure(camera=camera), strict=True)
        if c.is_active
    ]
    if not characteristics:
        return []
    first = completed[0]
    starts = [
        first - WINDOW_M * k for k in range(LOOKBACK_WINDOWS, 0, -1) if first - WINDOW_M * k >= 0
    ] + completed
    # One count writer per coil at a time: two frames that complete windows of one coil in
    # concurrent transactions would otherwise both find a window uncounted.
    Unit.objects.select_for_update(no_key=True).filter(pk=result.coil_id).values("pk").first()
    ids = [c.pk for _, c in characteristics]
    written = set(
        Measurement.objects.filter(
            unit_id=result.coil_id, characteristic_id__in=ids, position_m__in=starts
        ).values_list("characteristic_id", "position_m")
    )
    starts = [s for s in starts if any((pk, s) not in written for pk in ids)]
    if not starts:
        return []
    low, high = starts[0], starts[-1] + WINDOW_M
    frames = [
        _Frame(pk, start_m, end_m, verdict != Verdict.UNINSPECTED, acquired_at, message_id)
        for pk, start_m, end_m, verdict, acquired_at, message_id in (
            InspectionResult.objects.filter(
                camera_id=result.camera_id,
                coil_id=result.coil_id,
                coil_start_m__lt=high,
                coil_end_m__gt=low,
            )
            .order_by("coil_start_m", "pk")
            .values_list(
                "pk", "coil_start_m", "coil_end_m", "verdict", "acquired_at", "source_message_id"
            )
        )
    ]
    counted: dict[float, _Frame] = {}
    for start in starts:
        covered, last = _window_state(frames, start)
        if covered:
            # The windows this frame completes carry its time, as the frame reports them.
            counted[start] = last if start < completed[0] else _as_frame(result)
    if not counted:
        return []
    counts = _defect_counts(result, counted)
    rows = [
        MeasurementInput(
            unit_id=result.coil_id,
            characteristic_id=c.pk,
            value=float(counts[start][cls]),
            measured_at=frame.acquired_at,
            position_m=start,
            source_message_id=frame.message_id,
        )
        for start, frame in counted.items()
        for cls, c in characteristics
        if (c.pk, start) not in written
    ]
    return [m.pk for m in measurements_record(rows=rows, actor=None)]


def _as_frame(result: InspectionResult) -> _Frame:
    return _Frame(
        result.pk,
        result.coil_start_m,
        result.coil_end_m,
        result.verdict != Verdict.UNINSPECTED,
        result.acquired_at,
        result.source_message_id,
    )


def _defect_counts(result: InspectionResult, windows: dict[float, _Frame]) -> dict[float, Counter]:
    """Defects per class in each window, by machine-direction position: those the model
    decided on (not ``ignore``), each once (a frame stored twice counts once: the first
    result of each frame id)."""
    low, high = min(windows), max(windows) + WINDOW_M
    rows = list(
        Defect.objects.filter(
            result__camera_id=result.camera_id,
            result__coil_id=result.coil_id,
            md_m__gte=low,
            md_m__lt=high,
        )
        .exclude(decision=Decision.IGNORE)
        .values_list("cls", "md_m", "result_id", "result__frame_id")
    )
    first_result: dict[int, int] = {}
    for _, _, result_id, frame_id in rows:
        first_result[frame_id] = min(result_id, first_result.get(frame_id, result_id))
    counts: dict[float, Counter] = {start: Counter() for start in windows}
    for cls, md_m, result_id, frame_id in rows:
        if first_result[frame_id] != result_id:
            continue
        start = math.floor(md_m / WINDOW_M) * WINDOW_M
        if start in counts:
            counts[start][cls] += 1
    return counts
