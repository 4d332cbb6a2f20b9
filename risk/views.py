"""Web pages of thermal risk.

* ``/risk/cells/<serial>/``: one cell (reached from the Trace page): its line, status and
  grade; its latest formation run with the voltage curves of the charge and discharge steps
  and dQ/dV against voltage (the dQ/dV peaks its features name marked); each formation
  feature against the distribution of its lot (value, lot median, MAD, robust z now and at
  grading, a strip of the lot with the cell marked); the aging OCV log with the
  least-squares K-value line, fitted as ``formation.services.features_compute`` fits it; the
  latest risk score with its parts, baseline screens, reasons, model version, threshold and
  whether it quarantined the cell, every earlier score, and the field returns that name it.
* ``/risk/``: the latest score of each cell scored in the last ``?days=`` days (30 by
  default) as a histogram per lot with the quarantine threshold; the cells whose latest
  score quarantined them with their current status; field returns; the risk-model registry
  with each model's figures and history and the approve / activate / retire commands; the
  retraining runs with the challenger-against-active-against-baseline comparison and the
  most drifted inputs, and "retrain now".
* ``/risk/returns/new/``: the form that records a field return.

Every write goes through :mod:`risk.services` (``field_return_record``, ``model_approve``,
``model_activate``, ``model_retire``) or :func:`risk.tasks.retrain_task`, with the logged-in
user as the actor; a refusal is shown under the field it names and writes nothing. Recording
a return needs ``risk.add_fieldreturn`` (quality engineers, MRB members); the model commands
and retraining need ``risk.approve_riskmodel`` (quality engineers). Everyone else reads the
same pages without the forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import numpy as np
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from formation import features as fx
from formation import queries as formation_queries
from formation.choices import CHARGE_TYPES, StepType
from genealogy import queries as genealogy_queries
from genealogy.choices import UnitKind
from genealogy.models import Unit
from qms.exceptions import DomainError

from . import evaluation, queries, services
from . import render as draw
from .choices import ModelState, ReturnLevel
from .features import FEATURES
from .forms import DEFAULT_DAYS, FieldReturnForm, ModelCommandForm, PeriodForm
from .models import RetrainRun, RiskModel
from .scoring import MODEL_NAME

RECORD_PERMISSION = "risk.add_fieldreturn"
APPROVE_PERMISSION = services.APPROVE_PERMISSION

#: Rows shown in the risk page's lists (the count says how many exist).
QUARANTINE_SHOWN = 200
RETURNS_SHOWN = 50
RETRAIN_RUNS_SHOWN = 10
#: Lots drawn in the score distribution (those scored most recently).
LOTS_SHOWN = 12
#: Inputs listed per retraining run, most drifted first.
DRIFT_SHOWN = 8
#: A charge or discharge step's dQ/dV is drawn when it moved at least this share of the
#: run's largest step capacity (leaves out the short top-ups before the pulses).
DQDV_MIN_CAPACITY_SHARE = 0.2
#: Model commands: URL action -> (service, what the page says it did).
MODEL_COMMANDS = {
    "approve": (services.model_approve, "approved"),
    "activate": (services.model_activate, "activated"),
    "retire": (services.model_retire, "retired"),
}
#: Service fields that a form shows under another name.
FIELD_ALIASES = {"pack": "pack_serial"}

#: Formation features shown against the lot: column, label, unit, decimals.
LOT_FEATURES: tuple[tuple[str, str, str, int], ...] = (
    ("q_charge_ah", "First-charge capacity", "Ah", 3),
    ("q_discharge_ah", "Discharge capacity", "Ah", 3),
    ("ice", "Initial coulombic efficiency", "", 4),
    ("e_discharge_wh", "Discharge energy", "Wh", 1),
    ("v_mean_discharge_v", "Mean discharge voltage", "V", 4),
    ("cv_time_s", "CV time", "s", 0),
    ("cv_tail_current_a", "CV tail current", "A", 3),
    ("cv_charge_fraction", "CV share of the charge", "", 4),
    ("dcir_1s_mohm", "DCIR, 1 s pulse", "mΩ", 4),
    ("dcir_10s_mohm", "DCIR, 10 s pulse", "mΩ", 4),
    ("r_low_soc_10s_mohm", "Low-SOC resistance, 10 s", "mΩ", 4),
    ("temperature_rise_k", "Temperature rise", "K", 2),
    ("k_value_mv_per_day", "K-value", "mV/day", 4),
    ("k_value_se_mv_per_day", "K-value standard error", "mV/day", 4),
    ("ocv_end_mv", "End-of-aging OCV", "mV", 1),
    ("acir_mohm", "ACIR, last aging reading", "mΩ", 3),
    ("ica_peak1_v", "dQ/dV peak 1", "V", 4),
    ("ica_peak2_v", "dQ/dV peak 2", "V", 4),
    ("ica_peak3_v", "dQ/dV peak 3", "V", 4),
)
#: Score names of a comparison, in the order they are listed.
SCORE_ORDER = ("challenger", "active", "risk", "supervised", "outlier", "baseline")
SCORE_LABELS = {
    "challenger": "Challenger",
    "active": "Active model",
    "baseline": "Plant baseline",
    "risk": "Risk (calibrated)",
    "supervised": "Supervised part",
    "outlier": "Outlier part",
}
METRIC_SET_LABELS = {
    "holdout_field_returns": "Hold-out, field returns",
    "simulated_truth": "Simulated plants, latent defects",
}
RATES = evaluation.QUARANTINE_RATES
RATE_LABELS = [f"{r * 100:g} %" for r in RATES]


# ---------------------------------------------------------------------------- utilities


def _is_htmx(request: HttpRequest) -> bool:
    h = request.headers
    return h.get("HX-Request") == "true" and h.get("HX-History-Restore-Request") != "true"


def _form_error(form, exc: DomainError) -> str:
    """Put a service's refusal on the form: under the field it names when the form has that
    field, else at the top, naming the field. Returns what is not tied to a field."""
    name = FIELD_ALIASES.get(exc.field or "", exc.field)
    if name and name in form.fields:
        form.add_error(name, exc.message)
        return ""
    return f"{exc.field}: {exc.message}" if exc.field and exc.field != "actor" else exc.message


def _inline(svg: str) -> str:
    return mark_safe(svg)  # noqa: S308  our renderer's own markup, every text escaped


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _fmt(value: Any, decimals: int = 3) -> str:
    return f"{value:,.{decimals}f}" if _finite(value) else "—"


def _pct(value: Any, decimals: int = 1) -> str:
    return f"{value * 100:.{decimals}f} %" if _finite(value) else "—"


def trace_url(serial: str) -> str:
    return reverse("compliance:trace") + "?" + urlencode({"serial": serial})


def cell_url(serial: str) -> str:
    return reverse("risk:cell", kwargs={"serial": serial})


def _rate_key(rate: float) -> str:
    return f"{rate * 100:g}pct".replace(".", "_")


# ----------------------------------------------------------------------------- cell page


@dataclass
class FeatureRow:
    """One formation feature of a cell against its lot."""

    name: str
    label: str
    unit: str
    value: str
    median: str
    mad: str
    z: str
    z_grading: str
    n: int
    far: bool
    strip: str


@dataclass
class CurvesView:
    voltage_svg: str
    dqdv_svg: str
    full_resolution: bool
    peaks: list[tuple[str, str]]


@dataclass
class ScoredFeature:
    name: str
    label: str
    kind: str
    value: str
    notable: bool


def _cell(serial: str) -> Unit:
    try:
        unit = genealogy_queries.unit_find(serial, kind=UnitKind.CELL)
    except DomainError:
        unit = None
    if unit is None:
        raise Http404(f"No cell with serial {serial!r}.")
    return unit


def _curve_arrays(step) -> tuple[dict[str, np.ndarray], bool]:
    """A step's samples at full resolution from file storage, or the stored fixed-size
    copy when the blob cannot be read (second value False then)."""
    try:
        return formation_queries.curve_arrays(step.curve), True
    except (ValueError, OSError):
        return formation_queries.curve_resampled(step.curve), False


def _curves(steps, features) -> CurvesView:
    """Voltage against capacity of every charge and discharge step, and dQ/dV against
    voltage of the CC charges and discharges that moved most of the capacity."""
    wanted = [
        s
        for s in steps
        if (s.step_type == StepType.DISCHARGE or s.step_type in CHARGE_TYPES)
        and formation_queries.step_has_curve(s)
    ]
    largest = max((s.capacity_ah for s in wanted), default=0.0)
    voltage, dqdv = [], []
    full = True
    for s in wanted:
        arrays, got_full = _curve_arrays(s)
        full = full and got_full
        if "voltage_v" not in arrays or "capacity_ah" not in arrays:
            continue
        kind = "discharge" if s.step_type == StepType.DISCHARGE else "charge"
        label = f"{s.sequence} · {s.get_step_type_display()}" + (f" ({s.name})" if s.name else "")
        v, q = arrays["voltage_v"], arrays["capacity_ah"]
        voltage.append(draw.CurveSeries(step=s.sequence, kind=kind, label=label, x=q, y=v))
        big = largest > 0 and s.capacity_ah >= DQDV_MIN_CAPACITY_SHARE * largest
        if big and s.step_type in (StepType.DISCHARGE, StepType.CC_CHARGE) and len(v) >= 3:
            grid, ica = fx.dqdv(v, q, v_range=fx.ICA_WINDOW_V)
            dqdv.append(draw.CurveSeries(step=s.sequence, kind=kind, label=label, x=grid, y=ica))
    peaks: list[tuple[float, str]] = []
    if features is not None:
        for j in range(1, fx.ICA_PEAKS + 1):
            v = getattr(features, f"ica_peak{j}_v", None)
            if _finite(v):
                peaks.append((v, f"peak {j}"))
    return CurvesView(
        voltage_svg=_inline(
            draw.curve_chart(
                voltage,
                title="Voltage against capacity",
                x_label="Capacity moved in the step (Ah)",
                y_label="Voltage (V)",
                css="voltage-chart",
            )
        ),
        dqdv_svg=_inline(
            draw.curve_chart(
                dqdv,
                title="dQ/dV against voltage",
                x_label="Voltage (V)",
                y_label="dQ/dV (Ah/V)",
                css="dqdv-chart",
                markers=peaks,
                empty="No charge or discharge curve to differentiate.",
            )
        ),
        full_resolution=full,
        peaks=[(text, f"{v:.4f} V") for v, text in peaks],
    )


def _lot_rows(features) -> tuple[list[FeatureRow], int]:
    """Each formation feature of the cell against its lot's current distribution; the
    number of the lot's cells read."""
    names = [name for name, *_ in LOT_FEATURES]
    ids, values = formation_queries.lot_feature_values(features.lot, names)
    if features.unit_id not in ids:
        own = [[_nan(getattr(features, n)) for n in names]]
        ids = [*ids, features.unit_id]
        values = np.vstack([values, np.array(own, dtype=np.float64)])
    row = ids.index(features.unit_id)
    z = fx.robust_z(values)
    graded = (features.z_scores or {}).get("lot") or {}
    rows = []
    for j, (name, label, unit, decimals) in enumerate(LOT_FEATURES):
        column = values[:, j]
        finite = column[np.isfinite(column)]
        value = getattr(features, name)
        if len(finite):
            median = float(np.median(finite))
            mad = float(np.median(np.abs(finite - median)))
        else:
            median = mad = math.nan
        z_now = float(z[row, j])
        rows.append(
            FeatureRow(
                name=name,
                label=label,
                unit=unit,
                value=_fmt(value, decimals),
                median=_fmt(median, decimals),
                mad=_fmt(mad, decimals + 1),
                z=_fmt(z_now, 2),
                z_grading=_fmt(graded.get(name), 2),
                n=len(finite),
                far=_finite(z_now) and abs(z_now) > 3.0,
                strip=_inline(draw.strip_box(column, value, name=name)),
            )
        )
    return rows, len(ids)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _scored_features(score) -> list[ScoredFeature]:
    out = []
    for f in FEATURES:
        value = (score.features or {}).get(f.name)
        if value is None:
            continue
        notable = (f.kind == "relative" and abs(value) > 2.0) or (
            f.kind == "gauge" and abs(value) >= 0.75
        )
        if f.kind in ("count", "indicator"):
            notable = value > 0 and not f.name.endswith("_missing")
        out.append(
            ScoredFeature(
                name=f.name,
                label=f.label,
                kind=f.kind,
                value=f"{value:.0f}" if f.kind in ("count", "indicator") else f"{value:+.2f}",
                notable=notable,
            )
        )
    return out


@login_required
@require_GET
def cell_page(request: HttpRequest, serial: str) -> HttpResponse:
    """One cell: formation curves, features against its lot, aging OCV with the K-value
    fit, and its risk scores. Unknown serial (or not a cell): 404."""
    unit = _cell(serial)
    features = formation_queries.features_get(unit.pk)
    grade = formation_queries.grade_latest(unit.pk)
    run = formation_queries.run_latest(unit.pk)
    steps = formation_queries.run_steps(run) if run is not None else []
    curves = _curves(steps, features) if steps else None
    lot_rows, lot_cells = ([], 0)
    if features is not None and features.lot:
        lot_rows, lot_cells = _lot_rows(features)
    aging = formation_queries.aging_fit(unit.pk)
    aging_svg = ""
    k_differs = False
    if aging is not None:
        aging_svg = _inline(
            draw.aging_chart(
                days=aging.days,
                ocv_mv=aging.ocv_fitted_mv,
                k_mv_per_day=aging.fit.k_mv_per_day,
                se_mv_per_day=aging.fit.se_mv_per_day,
                intercept_mv=aging.intercept_mv,
                corrected=bool(aging.temp_coeff_mv_per_k),
            )
        )
        stored = features.k_value_mv_per_day if features is not None else None
        k_differs = (
            stored is not None
            and _finite(aging.fit.k_mv_per_day)
            and abs(stored - aging.fit.k_mv_per_day) > 1e-9
        )
    scores = list(queries.score_history(unit))
    latest = scores[0] if scores else None
    context = {
        "nav": "risk",
        "unit": unit,
        "trace_url": trace_url(unit.serial),
        "features": features,
        "grade": grade,
        "run": run,
        "steps": steps,
        "curves": curves,
        "lot_rows": lot_rows,
        "lot_cells": lot_cells,
        "aging": aging,
        "aging_rows": list(zip(aging.readings, aging.days.tolist(), strict=True)) if aging else [],
        "aging_svg": aging_svg,
        "k_differs": k_differs,
        "latest": latest,
        "scored_features": _scored_features(latest) if latest else [],
        "scores": scores,
        "labels": list(queries.labels_of_cell(unit)),
        "ica_window": "{:.2f} to {:.2f} V".format(*fx.ICA_WINDOW_V),
    }
    return render(request, "risk/cell.html", context)


# ----------------------------------------------------------------------------- risk page


@dataclass
class LotHistogram:
    lot: str
    cells: int
    quarantined: int
    svg: str


@dataclass
class ScoreRow:
    """One score of a comparison: cells, bad cells, AUROC, AP and per quarantine rate the
    capture and the false quarantines."""

    key: str
    label: str
    cells: str
    bad: str
    auroc: str
    ap: str
    rates: list[tuple[str, str]]


@dataclass
class ClassRow:
    """One failure mode (or the good cells) under one score."""

    mode: str
    score: str
    cells: str
    captures: list[str]
    auroc: str


@dataclass
class Comparison:
    key: str
    label: str
    what: str
    rows: list[ScoreRow]
    classes: list[ClassRow]


@dataclass
class DriftRow:
    feature: str
    psi: str
    level: str


@dataclass
class RunView:
    run: RetrainRun
    comparison: Comparison | None
    drift: list[DriftRow]
    labels: list[tuple[str, Any]]


@dataclass
class ModelRow:
    model: RiskModel
    metrics: list[Comparison]
    thresholds: list[tuple[str, str, str]]
    history: list[Any]
    run: RetrainRun | None
    actions: list[str]
    form: ModelCommandForm | None
    error: str = ""


@dataclass
class RegistryView:
    rows: list[ModelRow] = field(default_factory=list)
    error: str = ""


def _score_rows(scores: dict) -> list[ScoreRow]:
    names = [k for k in SCORE_ORDER if k in scores] + sorted(set(scores) - set(SCORE_ORDER))
    rows = []
    for key in names:
        s = scores[key]
        if not isinstance(s, dict):
            continue
        rates = [
            (
                _pct(s.get(f"capture_at_{_rate_key(r)}")),
                _fmt(s.get(f"false_quarantines_at_{_rate_key(r)}"), 0),
            )
            for r in RATES
        ]
        rows.append(
            ScoreRow(
                key=key,
                label=SCORE_LABELS.get(key, key.replace("_", " ")),
                cells=_fmt(s.get("cells"), 0),
                bad=_fmt(s.get("bad_cells"), 0),
                auroc=_fmt(s.get("auroc"), 3),
                ap=_fmt(s.get("average_precision"), 3),
                rates=rates,
            )
        )
    return rows


def _class_rows(scores: dict) -> list[ClassRow]:
    """Per failure mode, each score's capture at every rate and AUROC against the good
    cells; the good cells (``none``) last, where capture is the false quarantine rate."""
    rows = []
    names = [k for k in SCORE_ORDER if k in scores] + sorted(set(scores) - set(SCORE_ORDER))
    modes = sorted(
        {m for k in names for m in (scores[k].get("per_class") or {})},
        key=lambda m: (m == "none", m),
    )
    for mode in modes:
        for key in names:
            c = (scores[key].get("per_class") or {}).get(mode)
            if not isinstance(c, dict):
                continue
            rows.append(
                ClassRow(
                    mode="good cells (false quarantines)" if mode == "none" else mode,
                    score=SCORE_LABELS.get(key, key),
                    cells=_fmt(c.get("cells"), 0),
                    captures=[_pct(c.get(f"capture_at_{_rate_key(r)}")) for r in RATES],
                    auroc=_fmt(c.get("auroc"), 3),
                )
            )
    return rows


def _comparison(key: str, label: str, what: str, scores: Any) -> Comparison | None:
    if not isinstance(scores, dict) or not scores:
        return None
    return Comparison(
        key=key, label=label, what=what, rows=_score_rows(scores), classes=_class_rows(scores)
    )


def _metrics(model: RiskModel) -> list[Comparison]:
    out = []
    metrics = model.metrics if isinstance(model.metrics, dict) else {}
    for key in sorted(metrics, key=lambda k: (k not in METRIC_SET_LABELS, k)):
        entry = metrics[key]
        if not isinstance(entry, dict):
            continue
        found = _comparison(
            key,
            METRIC_SET_LABELS.get(key, key.replace("_", " ")),
            str(entry.get("what", "")),
            entry.get("scores"),
        )
        if found is not None:
            out.append(found)
    return out


def _thresholds(model: RiskModel) -> list[tuple[str, str, str]]:
    out = []
    rules = model.thresholds if isinstance(model.thresholds, dict) else {}
    for product in sorted(rules, key=lambda p: (p != "default", p)):
        rule = rules[product] if isinstance(rules[product], dict) else {}
        mode = str(rule.get("mode", ""))
        detail = (
            f"top {_pct(rule.get('top_fraction'), 1)}"
            if mode == "top_fraction"
            else mode.replace("_", " ")
        )
        out.append((product, f"{rule.get('risk_threshold', math.nan):.4g}", detail))
    return out


def _actions(model: RiskModel) -> list[str]:
    """The commands that apply to a model in its state (the service has the last word)."""
    if model.state == ModelState.VALIDATED:
        return ["approve", "retire"]
    if model.state == ModelState.APPROVED:
        return ["activate", "retire"]
    if model.state == ModelState.DRAFT:
        return ["retire"]
    if model.state == ModelState.RETIRED and model.approved_at is not None:
        return ["activate"]
    return []


def _registry(
    *, can_approve: bool, bound: tuple[int, ModelCommandForm, str] | None = None
) -> RegistryView:
    """Every registered model with its figures, quarantine rules, history, the retraining
    run that trained it, and its commands. A fixed number of queries."""
    models = list(queries.model_list())
    ids = [m.pk for m in models]
    history: dict[int, list[Any]] = {}
    for h in (
        RiskModel.history.filter(id__in=ids)
        .select_related("history_user")
        .order_by("history_date", "history_id")
    ):
        history.setdefault(h.id, []).append(h)
    runs = {r.challenger_id: r for r in queries.retrain_list().filter(challenger_id__in=ids)}
    view = RegistryView()
    for m in models:
        form, error = None, ""
        if can_approve:
            if bound is not None and bound[0] == m.pk:
                form, error = bound[1], bound[2]
            else:
                form = ModelCommandForm(prefix=f"model-{m.pk}")
        view.rows.append(
            ModelRow(
                model=m,
                metrics=_metrics(m),
                thresholds=_thresholds(m),
                history=history.get(m.pk, []),
                run=runs.get(m.pk),
                actions=_actions(m),
                form=form,
                error=error,
            )
        )
    return view


def _drift(run: RetrainRun) -> list[DriftRow]:
    psi = run.drift_psi if isinstance(run.drift_psi, dict) else {}
    items = sorted(((k, v) for k, v in psi.items() if _finite(v)), key=lambda kv: (-kv[1], kv[0]))[
        :DRIFT_SHOWN
    ]
    out = []
    for name, value in items:
        if value >= evaluation.PSI_MAJOR:
            level = "major"
        elif value >= evaluation.PSI_MODERATE:
            level = "moderate"
        else:
            level = "stable"
        out.append(DriftRow(feature=name, psi=f"{value:.3f}", level=level))
    return out


def _runs() -> list[RunView]:
    out = []
    for run in queries.retrain_list()[:RETRAIN_RUNS_SHOWN]:
        counts = run.label_counts if isinstance(run.label_counts, dict) else {}
        out.append(
            RunView(
                run=run,
                comparison=_comparison(
                    f"run-{run.pk}",
                    "Hold-out comparison",
                    "newest slice of the labelled history by build time; truth = a cell-level "
                    "field return within the label horizon",
                    run.comparison,
                ),
                drift=_drift(run),
                labels=[(k.replace("_", " "), v) for k, v in counts.items() if k != "as_of"],
            )
        )
    return out


def _lot_histograms(days: int) -> tuple[list[LotHistogram], int, int]:
    since = timezone.now() - timedelta(days=days)
    lots, total = queries.latest_scores_by_lot(since=since, max_lots=LOTS_SHOWN)
    out = [
        LotHistogram(
            lot=lot.lot,
            cells=len(lot.risks),
            quarantined=lot.quarantined,
            svg=_inline(
                draw.risk_histogram(
                    lot.risks, lot=lot.lot, thresholds=lot.thresholds, quarantined=lot.quarantined
                )
            ),
        )
        for lot in lots
    ]
    return out, total, sum(h.cells for h in out)


def _overview_context(request: HttpRequest, days: int) -> dict[str, Any]:
    can_approve = request.user.has_perm(APPROVE_PERMISSION)
    histograms, lot_total, scored = _lot_histograms(days)
    quarantined = list(queries.quarantine_list()[:QUARANTINE_SHOWN])
    quarantine_total = len(quarantined)
    if quarantine_total == QUARANTINE_SHOWN:
        quarantine_total = queries.quarantine_list().count()
    returns = list(queries.field_return_list()[:RETURNS_SHOWN])
    returns_total = len(returns)
    if returns_total == RETURNS_SHOWN:
        returns_total = queries.field_return_list().count()
    return {
        "nav": "risk",
        "days": days,
        "active": queries.model_active(MODEL_NAME),
        "histograms": histograms,
        "lot_total": lot_total,
        "scored": scored,
        "quarantined": quarantined,
        "quarantine_total": quarantine_total,
        "returns": returns,
        "returns_total": returns_total,
        "registry": _registry(can_approve=can_approve),
        "runs": _runs(),
        "rates": RATE_LABELS,
        "can_approve": can_approve,
        "can_record": request.user.has_perm(RECORD_PERMISSION),
    }


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    """Score distribution per lot over the last ``?days=`` days, quarantine list, field
    returns, model registry and retraining runs. A bad ``days``: 400 with the message (and
    the default period)."""
    form = PeriodForm(request.GET or None)
    status, days = 200, DEFAULT_DAYS
    if form.is_bound:
        if form.is_valid():
            days = form.cleaned_data["days"]
        else:
            status = 400
    context = {"form": form, **_overview_context(request, days)}
    return render(request, "risk/overview.html", context, status=status)


# ---------------------------------------------------------------------------- field returns


@login_required
@require_http_methods(["GET", "POST"])
def field_return_new(request: HttpRequest) -> HttpResponse:
    """Record a field return through :func:`risk.services.field_return_record`: a plain
    form post, redirected to the risk page's list with what was labelled. Without the
    permission: 403 (nothing written); an unknown serial: 404, a rule refused: 409, bad
    input: 400, each with the message under its field."""
    can_record = request.user.has_perm(RECORD_PERMISSION)
    status, error = 200, ""
    if request.method == "POST":
        form = FieldReturnForm(request.POST)
        if not can_record:
            status = 403
        elif not form.is_valid():
            status = 400
        else:
            data = form.cleaned_data
            try:
                record = services.field_return_record(
                    returned_on=data["returned_on"],
                    failure_mode=data["failure_mode"],
                    vin=data["vin"],
                    pack_serial=data["pack_serial"],
                    cell_serial=data["cell_serial"],
                    analysis=data["analysis"],
                    actor=request.user,
                )
            except DomainError as exc:
                status, error = exc.http_status, _form_error(form, exc)
            else:
                n = record.labels.count()
                if record.level == ReturnLevel.CELL:
                    what = f"cell-level, cell {record.cell.serial} labelled"
                else:
                    what = f"pack-level, the {n} cells of pack {record.pack.serial} labelled 1/{n}"
                messages.success(request, f"Field return {record.number} recorded: {what}.")
                return redirect(reverse("risk:overview") + "#returns")
    else:
        form = FieldReturnForm(initial={"returned_on": timezone.localdate()})
        if not can_record:
            status = 403
    if not can_record:
        error = (
            f"Recording field returns needs the permission {RECORD_PERMISSION} "
            "(quality engineers and MRB members)."
        )
    context = {"nav": "risk", "form": form, "error": error, "can_record": can_record}
    return render(request, "risk/return_form.html", context, status=status)


# ------------------------------------------------------------------------ model registry


@login_required
@require_POST
def model_command(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Approve, activate or retire a risk model with a reason (``model-<id>-reason``)
    through the service of that name. htmx gets the registry back (an activation retires
    the model it replaces); a plain form post is redirected to the model on the risk page.
    Without the permission: 403; a model in the wrong state: 409; no reason: 400; each with
    the message on the model's form, nothing written."""
    if action not in MODEL_COMMANDS:
        raise Http404(f"No model command {action!r}.")
    model = queries.model_list().filter(pk=pk).first()
    if model is None:
        raise Http404(f"No risk model {pk}.")
    service, done_text = MODEL_COMMANDS[action]
    can_approve = request.user.has_perm(APPROVE_PERMISSION)
    form = ModelCommandForm(request.POST, prefix=f"model-{model.pk}")
    status, error = 200, ""
    if not can_approve:
        status = 403
        error = (
            f"Approving, activating or retiring a risk model needs the permission "
            f"{APPROVE_PERMISSION} (quality engineers)."
        )
    elif not form.is_valid():
        status = 400
    else:
        try:
            service(model=model, actor=request.user, reason=form.cleaned_data["reason"])
        except DomainError as exc:
            status, error = exc.http_status, _form_error(form, exc)
    if status == 200 and not _is_htmx(request):
        messages.success(request, f"Model {model} {done_text}.")
        return redirect(reverse("risk:overview") + f"#model-{model.pk}")
    registry = _registry(
        can_approve=can_approve, bound=None if status == 200 else (model.pk, form, error)
    )
    if status != 200 and not can_approve:
        registry.error = error  # no form on the page for this user: the refusal goes on top
    if _is_htmx(request):
        context = {"registry": registry, "can_approve": can_approve, "rates": RATE_LABELS}
        return render(request, "risk/partials/registry.html", context, status=status)
    context = {"form": PeriodForm(), **_overview_context(request, DEFAULT_DAYS)}
    context["registry"] = registry
    return render(request, "risk/overview.html", context, status=status)


@login_required
@require_POST
def retrain_start(request: HttpRequest) -> HttpResponse:
    """Start a retraining now (:func:`risk.tasks.retrain_task`, enqueued once this request's
    writes are committed) and go back to the runs. Without the permission: 403, nothing
    enqueued."""
    if not request.user.has_perm(APPROVE_PERMISSION):
        context = {"form": PeriodForm(), **_overview_context(request, DEFAULT_DAYS)}
        context["retrain_error"] = (
            f"Starting a retraining needs the permission {APPROVE_PERMISSION} (quality engineers)."
        )
        return render(request, "risk/overview.html", context, status=403)
    from .tasks import retrain_task

    user_id = request.user.pk
    transaction.on_commit(lambda: retrain_task.delay(requested_by_id=user_id))
    messages.success(
        request,
        "Retraining started: a challenger is trained on every label so far and compared with "
        "the active model and the baseline. It is never activated without approval.",
    )
    return redirect(reverse("risk:overview") + "#retrain")
