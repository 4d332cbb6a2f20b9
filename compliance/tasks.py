"""Celery tasks of compliance: thin wrappers that take ids and call one service."""

from celery import shared_task
from django.db import OperationalError

from . import services

#: Every reaction is safe to run twice (acks late, redelivered after a worker dies) and
#: retried with backoff while the database is unreachable.
reaction_task = shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)


@reaction_task
def out_of_spec_hold_task(self, *, measurement_ids: list[int]) -> int:
    """Hold the units of these out-of-spec measurements; safe to repeat."""
    holds = services.out_of_spec_hold(measurement_ids=measurement_ids)
    return len(holds)


@reaction_task
def spc_alarm_react_task(self, *, alarm_id: int) -> list[str]:
    """React to a new SPC alarm (hold the window, stop the line); safe to repeat."""
    return [r.action for r in services.spc_alarm_react(alarm_id=alarm_id)]


@reaction_task
def spc_alarm_extend_task(self, *, alarm_id: int) -> str | None:
    """Hold what a continuing SPC alarm added to its window; safe to repeat."""
    reaction = services.spc_alarm_extend(alarm_id=alarm_id)
    return reaction.hold.number if reaction is not None else None


@reaction_task
def vision_hold_task(self, *, flag_ids: list[int], unit_ids: list[int]) -> list[str]:
    """Hold the cells made from vision-flagged coil metres; safe to repeat."""
    return [h.number for h in services.vision_hold(flag_ids=flag_ids, unit_ids=unit_ids)]


@reaction_task
def formation_hold_task(self, *, cell_ids: list[int]) -> list[str]:
    """Hold the cells the K-value screen failed; safe to repeat."""
    return [h.number for h in services.formation_hold(cell_ids=cell_ids)]


@reaction_task
def cycler_alarm_hold_task(self, *, alarm_id: int) -> str | None:
    """Hold the cell on a channel with a critical cycler alarm; safe to repeat."""
    hold = services.cycler_alarm_hold(alarm_id=alarm_id)
    return hold.number if hold is not None else None


@reaction_task
def risk_hold_task(self, *, score_ids: list[int]) -> list[str]:
    """Hold the cells scored above their quarantine threshold; safe to repeat."""
    return [h.number for h in services.risk_hold(score_ids=score_ids)]


@reaction_task
def vision_count_charts_task(self, *, characteristic_ids: list[int]) -> int:
    """Chart vision's defect-count characteristics as c charts; safe to repeat."""
    return len(services.vision_count_charts(characteristic_ids=characteristic_ids))
