"""spc's reactions to events of lower layers (registered in ``apps.py``).

Each subscriber only enqueues a task; the task does the work and is safe to run twice.
"""

from genealogy.events import MeasurementsRecorded

from . import queries


def evaluate_new_measurements(evt: MeasurementsRecorded) -> None:
    """One evaluation per characteristic with approved limits, from its earliest new value
    (a value that arrived late makes the evaluation start before it)."""
    earliest = dict(evt.earliest_measured_at)
    if not earliest:  # an event without the times: evaluate what is new
        earliest = dict.fromkeys(evt.characteristic_ids)
    watched = queries.characteristics_with_limits(earliest)
    if not watched:
        return
    from .tasks import spc_evaluate_task

    for characteristic_id in sorted(watched):
        at = earliest[characteristic_id]
        spc_evaluate_task.delay(
            characteristic_id=characteristic_id, since=None if at is None else at.isoformat()
        )
