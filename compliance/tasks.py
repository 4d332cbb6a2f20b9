"""Celery tasks of compliance: thin wrappers that take ids and call one service."""

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
def out_of_spec_hold_task(self, *, measurement_ids: list[int]) -> int:
    """Hold the units of these out-of-spec measurements; safe to repeat."""
    holds = services.out_of_spec_hold(measurement_ids=measurement_ids)
    return len(holds)
