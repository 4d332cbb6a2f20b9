"""Read-side selectors of the inspection app: results, defects, the review queue, coil
flags, models, a coil's defect map and the defect Pareto."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, QuerySet

from genealogy.models import Unit

from .choices import Decision, FlagAction, ReviewState, Verdict
from .models import (
    CellVisionFlag,
    CoilFlag,
    Defect,
    InspectionModel,
    InspectionResult,
    InspectionStation,
    ShadowDisagreement,
)


def camera_list() -> QuerySet[InspectionStation]:
    return InspectionStation.objects.select_related(
        "station__line__site", "model", "shadow_model"
    ).order_by("station__line__site__code", "station__line__code", "station__code", "camera")


def result_list() -> QuerySet[InspectionResult]:
    return InspectionResult.objects.select_related(
        "camera__station__line__site", "coil", "model", "frame_image"
    ).order_by("-acquired_at", "-id")


def result_get(pk: int) -> InspectionResult | None:
    return result_list().filter(pk=pk).first()


def defect_list() -> QuerySet[Defect]:
    return Defect.objects.select_related(
        "result__camera__station__line__site", "result__coil", "crop"
    ).order_by("-result__acquired_at", "-id")


def review_queue() -> QuerySet[Defect]:
    """Defects between the confidence bands, waiting for a person's verdict, oldest first."""
    return defect_list().filter(review_state=ReviewState.PENDING).order_by("result__acquired_at")


def flag_list() -> QuerySet[CoilFlag]:
    return CoilFlag.objects.select_related(
        "coil", "result__camera__station", "defect", "acknowledged_by"
    ).annotate(cell_count=Count("cells"))


def model_list() -> QuerySet[InspectionModel]:
    return InspectionModel.objects.select_related("registered_by", "approved_by").order_by(
        "name", "-registered_at"
    )


def shadow_disagreement_list() -> QuerySet[ShadowDisagreement]:
    return ShadowDisagreement.objects.select_related(
        "result__camera__station", "result__coil"
    ).order_by("-created_at")


def cell_vision_flags(unit: Unit) -> QuerySet[CellVisionFlag]:
    return CellVisionFlag.objects.filter(unit=unit).select_related("flag__coil", "flag__defect")


@dataclass(frozen=True)
class CoilMap:
    """Everything vision knows along one coil: inspected and uninspected metres, defects
    (metres along, millimetres across) and flags."""

    coil: Unit
    inspected_m: list[tuple[float, float]]
    uninspected_m: list[tuple[float, float, str]]
    defects: list[Defect]
    flags: list[CoilFlag]
    length_m: float


def _merge(spans: list[tuple[float, float]], gap: float = 1e-6) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def coil_map(coil: Unit, *, max_defects: int = 20_000) -> CoilMap:
    results = InspectionResult.objects.filter(coil=coil).values_list(
        "coil_start_m", "coil_end_m", "verdict", "uninspected_reason"
    )
    inspected, uninspected = [], []
    for a, b, verdict, reason in results.iterator():
        if verdict == Verdict.UNINSPECTED:
            uninspected.append((a, b, reason))
        else:
            inspected.append((a, b))
    defects = list(
        Defect.objects.filter(result__coil=coil)
        .exclude(decision=Decision.IGNORE)
        .order_by("md_m")[:max_defects]
    )
    flags = list(flag_list().filter(coil=coil).order_by("start_m"))
    ends = [b for _, b in inspected] + [b for _, b, _ in uninspected]
    length = coil.length_m or (max(ends) if ends else 0.0)
    return CoilMap(
        coil=coil,
        inspected_m=_merge(inspected),
        uninspected_m=sorted(uninspected),
        defects=defects,
        flags=flags,
        length_m=float(length),
    )


def defect_pareto(defects: QuerySet[Defect] | None = None) -> list[tuple[str, int, float]]:
    """Defect classes by count, largest first, with the cumulative share (0-1); ignored
    (logged) defects and false calls are left out."""
    qs = (defects if defects is not None else Defect.objects.all()).order_by()
    counts = dict(
        qs.exclude(decision=Decision.IGNORE)
        .exclude(review_state=ReviewState.FALSE_CALL)
        .values_list("cls")
        .annotate(n=Count("id"))
        .values_list("cls", "n")
    )
    total = sum(counts.values())
    out, running = [], 0
    # Largest first; equal counts by class name, the same on every database.
    for cls, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        running += n
        out.append((cls, n, running / total))
    return out


def open_flags() -> QuerySet[CoilFlag]:
    """Flags for a hold or review nobody has acknowledged yet (the alarm list)."""
    return (
        flag_list()
        .filter(acknowledged_at__isnull=True)
        .exclude(action=FlagAction.NONE)
        .order_by("-created_at")
    )
