"""Read-side selectors of the risk app: ready querysets for the API, admin and pages."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from genealogy.models import Unit

from .choices import ModelState
from .models import FieldReturn, RetrainRun, RiskModel, RiskScore


def score_list() -> QuerySet[RiskScore]:
    """Every score, newest first, with its cell and model."""
    return RiskScore.objects.select_related("unit", "model").order_by("-scored_at", "-id")


def score_latest(unit: Unit) -> RiskScore | None:
    """The score that counts for a cell: its latest."""
    return score_list().filter(unit=unit).first()


def field_return_list() -> QuerySet[FieldReturn]:
    return (
        FieldReturn.objects.select_related("pack", "cell", "entered_by")
        .annotate(label_count=Count("labels"))
        .order_by("-returned_on", "-id")
    )


def model_list() -> QuerySet[RiskModel]:
    return RiskModel.objects.select_related("registered_by", "approved_by").order_by(
        "name", "-registered_at"
    )


def model_active(name: str) -> RiskModel | None:
    return model_list().filter(name=name, state=ModelState.ACTIVE).first()


def retrain_list() -> QuerySet[RetrainRun]:
    return RetrainRun.objects.select_related("active_model", "challenger", "requested_by")
