"""Celery tasks of genealogy: thin wrappers that take ids and call one service."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import progress


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=8,
)
def unit_progress_update_task(self, *, visit_ids: list[int]) -> int:
    """Recompute the station progress of the units of these visits; safe to repeat.
    Returns the number of units updated."""
    return len(progress.unit_progress_update(visit_ids=visit_ids))
