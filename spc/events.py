"""Domain events published by spc (delivered after commit, see ``qms.events``)."""

from datetime import datetime

from qms.events import event


@event
class AlarmRaised:
    """A new SPC alarm: a run rule or the CUSUM/EWMA detector signalled on a characteristic.

    Published once per alarm (evaluating the same values again raises nothing new; a
    pattern that goes on extends its alarm and publishes ``AlarmExtended``).
    ``measurement_ids`` and ``unit_ids`` are the values that make up the pattern and the
    units they were measured on, ``first_measured_at`` .. ``last_measured_at`` the suspect
    window. ``severity`` is ``critical`` (rule 1, CUSUM or EWMA on a CC characteristic) or
    ``major``. Higher layers react (a hold on the window, a line stop, an NCR draft) and may
    record their hold on the alarm with ``spc.services.alarm_link_hold``.
    """

    alarm_id: int
    characteristic_id: int
    station_id: int
    limits_id: int
    rule: str
    statistic: str
    severity: str
    special_class: str
    first_measured_at: datetime
    last_measured_at: datetime
    measurement_ids: tuple[int, ...] = ()
    unit_ids: tuple[int, ...] = ()


@event
class AlarmExtended:
    """A pattern went on: the same rule fired again soon after (more points beyond the
    limits, a longer run, the CUSUM again while a shift lasts), so the alarm now covers more
    values. ``measurement_ids`` and
    ``unit_ids`` are the values added, ``last_measured_at`` the new end of the window."""

    alarm_id: int
    characteristic_id: int
    last_measured_at: datetime
    measurement_ids: tuple[int, ...] = ()
    unit_ids: tuple[int, ...] = ()
