"""Domain events published by formation (delivered after commit, see ``qms.events``)."""

from datetime import datetime

from qms.events import event


@event
class FormationRunsRecorded:
    """Cycler runs (or further steps of them) were stored for these cells."""

    run_ids: tuple[int, ...]
    unit_ids: tuple[int, ...]


@event
class FormationGraded:
    """Cells were graded. ``failed_ids`` did not pass (no bin, or the K screen);
    ``k_screen_failed_ids`` failed the K screen and must not reach module assembly.
    Compliance holds them."""

    grade_ids: tuple[int, ...]
    cell_ids: tuple[int, ...]
    failed_ids: tuple[int, ...] = ()
    k_screen_failed_ids: tuple[int, ...] = ()


@event
class CyclerAlarmRaised:
    """A cycler raised a critical alarm on a channel (over-temperature, voltage out of
    window, contact fault, ...): published once per alarm episode
    (:class:`formation.models.CyclerAlarm`), when it is raised. ``unit_id`` is the cell on
    the channel (None when the channel was empty), ``channel_key`` the cabinet and channel
    (``fc-01:b1/p03``), ``raised_at`` the time of the status that first reported it."""

    alarm_id: int
    equipment_id: int
    station_id: int
    channel: str
    channel_key: str
    code: str
    severity: str
    text: str
    raised_at: datetime
    unit_id: int | None = None
    step_index: int | None = None
    temperature_c: float | None = None
    voltage_v: float | None = None
