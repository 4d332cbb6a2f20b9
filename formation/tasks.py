"""Celery tasks of formation: thin wrappers that take ids and call one service."""

from celery import shared_task
from django.db import OperationalError

from . import services


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def features_compute_task(self, *, cell_ids: list[int]) -> int:
    """Compute (again) the formation features of these cells; safe to repeat."""
    return len(services.features_compute(cell_ids=cell_ids))


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def cells_grade_task(self, *, cell_ids: list[int]) -> int:
    """Grade these cells with their line's rules in force; safe to repeat (an unchanged
    cell keeps its grade). Returns the number of cells graded."""
    return len(services.cells_grade(cell_ids=cell_ids).grades)
