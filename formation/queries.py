"""Read-side selectors of the formation app: runs, steps, curves (full resolution from file
storage, or the resampled copy from the database), aging readings, features, grades, rule
sets, tray loading and cycler file imports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.db.models import F, QuerySet

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


# --- one cell's formation record, as its page shows it -----------------------------------------


def run_latest(unit_id: int) -> CyclerRun | None:
    """The cell's latest formation run: the one its features are computed from."""
    return run_list().filter(unit_id=unit_id).first()


def run_steps(run: CyclerRun) -> list[StepResult]:
    """The steps of a run in order, each with its curve (``step.curve``) where one is
    stored (use :func:`step_has_curve` before touching it)."""
    return list(
        StepResult.objects.filter(run=run).select_related("curve").order_by("sequence", "id")
    )


def step_has_curve(step: StepResult) -> bool:
    try:
        step.curve  # noqa: B018  (a reverse one-to-one raises when there is none)
    except StepCurve.DoesNotExist:
        return False
    return True


@dataclass(frozen=True)
class AgingFit:
    """A cell's aging OCV log as its K-value is fitted (see ``features_compute``): the
    readings after its latest formation run ended (all of them when it has no run),
    ``days`` since the first of them, the OCV as measured and as fitted (corrected to
    ``reference_c`` when the plant sets a temperature coefficient), the least-squares fit
    and the fitted OCV at day 0, so ``ocv = intercept_mv - k_mv_per_day * days``.
    ``left_out`` counts readings taken before the run ended (not part of the fit)."""

    readings: list[AgingReading]
    days: np.ndarray
    ocv_mv: np.ndarray
    ocv_fitted_mv: np.ndarray
    fit: fx.KFit
    intercept_mv: float
    temp_coeff_mv_per_k: float
    reference_c: float
    left_out: int


def aging_fit(unit_id: int) -> AgingFit | None:
    """The K-value fit of a cell's aging readings, computed as ``features_compute`` does
    (same readings, same least squares, same temperature correction); None without any
    reading after its latest run."""
    from django.conf import settings

    run = run_latest(unit_id)
    every = list(
        AgingReading.objects.filter(unit_id=unit_id)
        .select_related("station", "equipment")
        .order_by("measured_at", "id")
    )
    readings = [r for r in every if run is None or r.measured_at >= run.ended_at]
    if not readings:
        return None
    coeff = float(getattr(settings, "QMS_FORMATION_OCV_TEMP_COEFF_MV_PER_K", 0.0))
    reference_c = 25.0
    at = np.array([r.measured_at.timestamp() for r in readings], dtype=np.float64)
    days = (at - at[0]) / 86400.0
    ocv = np.array([r.ocv_mv for r in readings], dtype=np.float64)
    if coeff:
        temps = np.array(
            [np.nan if r.temperature_c is None else r.temperature_c for r in readings],
            dtype=np.float64,
        )
        fitted = ocv - coeff * (temps - reference_c)
        fit = fx.k_value(days, ocv, temperature_c=temps, ocv_temp_coeff_mv_per_k=coeff)
    else:
        fitted = ocv.copy()
        fit = fx.k_value(days, ocv)
    used = np.isfinite(days) & np.isfinite(fitted)
    intercept = math.nan
    if np.isfinite(fit.k_mv_per_day) and used.any():
        intercept = float(fitted[used].mean() + fit.k_mv_per_day * days[used].mean())
    return AgingFit(
        readings=readings,
        days=days,
        ocv_mv=ocv,
        ocv_fitted_mv=fitted,
        fit=fit,
        intercept_mv=intercept,
        temp_coeff_mv_per_k=coeff,
        reference_c=reference_c,
        left_out=len(every) - len(readings),
    )


def features_get(unit_id: int) -> CellFeatures | None:
    return features_list().filter(unit_id=unit_id).first()


#: Cells of one lot read for a lot's distribution at most (the newest formed).
LOT_CELLS_MAX = 20_000


def lot_feature_values(
    lot: str, names: Sequence[str], *, limit: int = LOT_CELLS_MAX
) -> tuple[list[int], np.ndarray]:
    """The feature values of the cells of a lot (the newest ``limit`` formed): unit ids and
    a ``(cells, len(names))`` matrix, NaN where a cell has no value."""
    rows = list(
        CellFeatures.objects.filter(lot=lot)
        .order_by(F("formed_at").desc(nulls_last=True), "-id")
        .values_list("unit_id", *names)[:limit]
    )
    values = np.array(
        [[np.nan if v is None else v for v in row[1:]] for row in rows], dtype=np.float64
    ).reshape(len(rows), len(names))
    return [row[0] for row in rows], values
