"""Compliance's reactions to events of lower layers (registered in ``apps.py``).

Each subscriber only enqueues a task; the task does the work and is safe to run twice.
"""

from formation.events import CyclerAlarmRaised, FormationGraded
from genealogy.events import MeasurementsRecorded
from inspection.events import CountCharacteristicsCreated, VisionFlagged
from risk.events import CellsQuarantined
from spc.events import AlarmExtended, AlarmRaised


def hold_out_of_spec_units(evt: MeasurementsRecorded) -> None:
    if not evt.out_of_spec_measurement_ids:
        return
    from .tasks import out_of_spec_hold_task

    out_of_spec_hold_task.delay(measurement_ids=list(evt.out_of_spec_measurement_ids))


def react_to_spc_alarm(evt: AlarmRaised) -> None:
    from .tasks import spc_alarm_react_task

    spc_alarm_react_task.delay(alarm_id=evt.alarm_id)


def react_to_spc_alarm_extended(evt: AlarmExtended) -> None:
    from .tasks import spc_alarm_extend_task

    spc_alarm_extend_task.delay(alarm_id=evt.alarm_id)


def hold_vision_flagged_cells(evt: VisionFlagged) -> None:
    from .tasks import vision_hold_task

    vision_hold_task.delay(flag_ids=list(evt.flag_ids), unit_ids=list(evt.unit_ids))


def hold_k_screen_failures(evt: FormationGraded) -> None:
    if not evt.k_screen_failed_ids:
        return
    from .tasks import formation_hold_task

    formation_hold_task.delay(cell_ids=list(evt.k_screen_failed_ids))


def hold_cells_with_critical_cycler_alarms(evt: CyclerAlarmRaised) -> None:
    if evt.unit_id is None:
        return
    from .tasks import cycler_alarm_hold_task

    cycler_alarm_hold_task.delay(alarm_id=evt.alarm_id)


def hold_quarantined_cells(evt: CellsQuarantined) -> None:
    if not evt.score_ids:
        return
    from .tasks import risk_hold_task

    risk_hold_task.delay(score_ids=list(evt.score_ids))


def chart_vision_counts(evt: CountCharacteristicsCreated) -> None:
    from .tasks import vision_count_charts_task

    vision_count_charts_task.delay(characteristic_ids=list(evt.characteristic_ids))
