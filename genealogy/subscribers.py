"""Genealogy's reactions to its own events (registered in ``apps.py``).

Each subscriber only enqueues a task; the task does the work and is safe to run twice.
"""

from .events import VisitsRecorded

#: Visit ids per task message: one ingest batch is one task, a bulk import a few.
VISITS_PER_TASK = 2000


def update_unit_progress(evt: VisitsRecorded) -> None:
    from .tasks import unit_progress_update_task

    ids = list(evt.visit_ids)
    for i in range(0, len(ids), VISITS_PER_TASK):
        unit_progress_update_task.delay(visit_ids=ids[i : i + VISITS_PER_TASK])
