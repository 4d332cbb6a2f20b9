"""Domain events published by genealogy (delivered after commit, see ``qms.events``)."""

from datetime import datetime

from qms.events import event


@event
class MeasurementsRecorded:
    """New measurements were stored. SPC evaluates the characteristics named here."""

    characteristic_ids: tuple[int, ...]
    first_measurement_id: int
    last_measurement_id: int
    out_of_spec_measurement_ids: tuple[int, ...] = ()
    #: ``(characteristic_id, measured_at)`` of the earliest new value of each characteristic:
    #: where an evaluation in time order has to start again (values may arrive late).
    earliest_measured_at: tuple[tuple[int, datetime], ...] = ()


@event
class UnitsLinked:
    """Units were consumed into or assembled into others."""

    link_ids: tuple[int, ...]


@event
class VisitsRecorded:
    """Units passed stations: station visits were stored (one event per committed
    transaction, however many visits it recorded). Genealogy updates each unit's progress."""

    visit_ids: tuple[int, ...]
    unit_ids: tuple[int, ...]
