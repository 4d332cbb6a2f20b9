"""Celery tasks of inspection: thin wrappers that take ids and call one service."""

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
def flags_for_links_task(self, *, link_ids: list[int]) -> int:
    """Flag cells that consumed vision-flagged coil metres; safe to repeat."""
    return len(services.flags_for_links(link_ids=link_ids))
