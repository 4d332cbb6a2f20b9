"""Celery tasks of risk: thin wrappers that take ids and call one service, and the
subscriber that scores cells once formation has graded them."""

from __future__ import annotations

import logging

from celery import shared_task
from django.contrib.auth import get_user_model
from django.db import OperationalError

from formation.events import FormationGraded
from qms.exceptions import Refused

from . import services

logger = logging.getLogger("celltrace.risk")


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def cells_score_task(self, *, cell_ids: list[int]) -> int:
    """Score cells with the active model, leaving out cells it has already scored since
    their features were computed; safe to repeat. Without an active model the cells stay
    unscored and a warning says so (no retry loop: nothing would change)."""
    try:
        return len(services.cells_score(cell_ids=cell_ids, skip_current=True))
    except Refused as exc:
        if exc.code != "no_active_model":
            raise
        logger.warning("risk: %d graded cell(s) not scored: %s", len(cell_ids), exc.message)
        return 0


@shared_task(bind=True, acks_late=True, autoretry_for=(OperationalError,), max_retries=2)
def retrain_task(self, *, requested_by_id: int | None = None) -> int:
    """Train a challenger on every label so far and compare it (weekly on beat, or on
    demand); returns the :class:`risk.models.RetrainRun` id."""
    actor = get_user_model().objects.filter(pk=requested_by_id).first() if requested_by_id else None
    return services.retrain(actor=actor).pk


def score_graded_cells(evt: FormationGraded) -> None:
    """Subscriber of :class:`formation.events.FormationGraded`: score the graded cells."""
    if evt.cell_ids:
        cells_score_task.delay(cell_ids=list(evt.cell_ids))
