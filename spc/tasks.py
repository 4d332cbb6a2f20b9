"""Celery tasks of spc (queue ``spc``): thin wrappers that take ids and call one service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
def spc_evaluate_task(self, *, characteristic_id: int, since: str | None = None) -> dict[str, Any]:
    """Evaluate the new values of one characteristic (from ``since``, an ISO 8601 time,
    when values may have arrived late); safe to repeat."""
    start = None if since is None else datetime.fromisoformat(since)
    outcome = services.spc_evaluate(characteristic_id=characteristic_id, since=start)
    return outcome.to_dict()
