"""Read-side selectors of the formation app: runs, steps, curves (full resolution from file
storage, or the resampled copy from the database), aging readings, features, grades, rule
sets, tray loading and cycler file imports."""

from __future__ import annotations

import numpy as np
from django.db.models import QuerySet

from . import features as fx
from .choices import RuleSetState
from .models import (
    AgingReading,
    CellFeatures,
    CellGrade,
    CyclerFileImport,
    CyclerImportProfile,
    CyclerRun,
    DcirReading,
    GradingRuleSet,
    StepCurve,
    StepResult,
    TrayLoad,
)


def run_list() -> QuerySet[CyclerRun]:
    return CyclerRun.objects.select_related(
        "unit", "station__line__site", "equipment", "tray_load"
    ).order_by("-started_at", "-id")


def run_get(pk: int) -> CyclerRun | None:
    return run_list().filter(pk=pk).first()


def step_list() -> QuerySet[StepResult]:
    """Step results without their samples (the curve is fetched on its own)."""
    return StepResult.objects.select_related("run__unit").order_by("run_id", "sequence")


def step_get(pk: int) -> StepResult | None:
    return StepResult.objects.select_related("run__unit", "curve").filter(pk=pk).first()


def curve_arrays(curve: StepCurve) -> dict[str, np.ndarray]:
    """A step's full-resolution samples, read from file storage: ``time_s`` (float64, from
    the step's start) and the measured arrays (stored as float32). A blob whose SHA-256 no
    longer matches is refused with a ValueError (storage damaged or replaced)."""
    import hashlib

    with curve.blob.open("rb") as fh:
        blob = fh.read()
    if hashlib.sha256(blob).hexdigest() != curve.sha256:
        raise ValueError(f"curve blob {curve.blob.name} does not match its SHA-256")
    return {k: v.astype(np.float64) for k, v in fx.curve_unpack(blob).items()}


def curve_resampled(curve: StepCurve) -> dict[str, np.ndarray]:
    """The fixed-size copy kept in the database: ``time_s`` evenly spaced from the first to
    the last sample, and one array per resampled column."""
    names = [c for c in curve.resampled_columns.split(",") if c]
    n = curve.resampled_points
    rows = np.frombuffer(bytes(curve.resampled), dtype="<f4").reshape(len(names), n)
    out = {"time_s": np.linspace(curve.time_first_s, curve.time_last_s, n)}
    for name, row in zip(names, rows, strict=True):
        out[name] = row.astype(np.float64)
    return out


def dcir_list() -> QuerySet[DcirReading]:
    return DcirReading.objects.select_related("unit", "step").order_by("-measured_at", "-id")


def aging_list() -> QuerySet[AgingReading]:
    return AgingReading.objects.select_related("unit", "station", "equipment").order_by(
        "-measured_at", "-id"
    )


def features_list() -> QuerySet[CellFeatures]:
    return CellFeatures.objects.select_related("unit", "line").order_by("-computed_at", "-id")


def grade_list() -> QuerySet[CellGrade]:
    return CellGrade.objects.select_related("unit", "rule_set__line").order_by("-graded_at", "-id")


def grade_latest(unit_id: int) -> CellGrade | None:
    """The grade that counts for a cell: its latest."""
    return grade_list().filter(unit_id=unit_id).first()


def rule_set_list() -> QuerySet[GradingRuleSet]:
    return GradingRuleSet.objects.select_related("line__site", "created_by").order_by(
        "line__code", "-created_at"
    )


def rule_set_active(line_id: int) -> GradingRuleSet | None:
    return rule_set_list().filter(line_id=line_id, state=RuleSetState.ACTIVE).first()


def tray_load_list() -> QuerySet[TrayLoad]:
    return TrayLoad.objects.select_related("unit", "station").order_by("-loaded_at", "-id")


def profile_list() -> QuerySet[CyclerImportProfile]:
    return CyclerImportProfile.objects.select_related("station__line__site").order_by("name")


def profile_get(name: str) -> CyclerImportProfile | None:
    return profile_list().filter(name=name).first()


def file_import_list() -> QuerySet[CyclerFileImport]:
    return CyclerFileImport.objects.select_related("profile", "imported_by").order_by(
        "-imported_at", "-id"
    )
