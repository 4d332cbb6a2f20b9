"""Read-side selectors of the risk app: ready querysets for the API, admin and pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, F, OuterRef, QuerySet, Subquery

from genealogy.models import Unit

from .choices import ModelState
from .models import FieldReturn, FieldReturnLabel, RetrainRun, RiskModel, RiskScore


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


# --- pages ------------------------------------------------------------------------------------


def score_history(unit: Unit) -> QuerySet[RiskScore]:
    """Every score a cell was given, newest first."""
    return score_list().filter(unit=unit)


def _latest_score_id() -> Subquery:
    return Subquery(
        RiskScore.objects.filter(unit=OuterRef("unit"))
        .order_by("-scored_at", "-id")
        .values("pk")[:1]
    )


def quarantine_list() -> QuerySet[RiskScore]:
    """Cells whose latest score quarantined them, riskiest first, with the cell (and its
    current status) and the model."""
    return (
        score_list()
        .filter(quarantined=True)
        .annotate(latest_id=_latest_score_id())
        .filter(pk=F("latest_id"))
        .order_by("-risk", "unit__serial")
    )


@dataclass(frozen=True)
class LotScores:
    """The latest risk of each cell of a lot scored in the period, with the thresholds
    those scores were held against."""

    lot: str
    risks: list[float]
    thresholds: list[float]
    quarantined: int
    last_scored_at: datetime


def latest_scores_by_lot(*, since: datetime, max_lots: int = 12) -> tuple[list[LotScores], int]:
    """The latest score of every cell scored since ``since``, grouped by the cell's lot
    (``""`` for cells without formation features), the lots scored most recently first;
    at most ``max_lots`` lots, and how many lots there were in all."""
    per_lot: dict[str, dict] = {}
    seen: set[int] = set()
    rows = (
        RiskScore.objects.filter(scored_at__gte=since)
        .order_by("unit_id", "-scored_at", "-id")
        .values_list(
            "unit_id", "unit__formation_features__lot", "risk", "threshold", "quarantined",
            "scored_at",
        )
    )  # fmt: skip
    for unit_id, lot, risk, threshold, quarantined, at in rows.iterator(chunk_size=5000):
        if unit_id in seen:
            continue
        seen.add(unit_id)
        entry = per_lot.setdefault(
            lot or "", {"risks": [], "thresholds": set(), "quarantined": 0, "last": at}
        )
        entry["risks"].append(risk)
        entry["thresholds"].add(threshold)
        entry["quarantined"] += int(quarantined)
        entry["last"] = max(entry["last"], at)
    lots = sorted(per_lot.items(), key=lambda kv: (kv[1]["last"], kv[0]), reverse=True)
    out = [
        LotScores(
            lot=lot,
            risks=entry["risks"],
            thresholds=sorted(entry["thresholds"]),
            quarantined=entry["quarantined"],
            last_scored_at=entry["last"],
        )
        for lot, entry in lots[:max_lots]
    ]
    return out, len(per_lot)


def labels_of_cell(unit: Unit) -> QuerySet[FieldReturnLabel]:
    """The field-return labels on a cell (its own returns and its pack's), newest first."""
    return (
        FieldReturnLabel.objects.filter(unit=unit)
        .select_related("field_return", "field_return__pack")
        .order_by("-field_return__returned_on", "-id")
    )
