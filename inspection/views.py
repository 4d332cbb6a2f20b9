"""Web pages of vision inspection.

* ``/inspection/``: the cameras with the model each runs, the open flags (uninspected
  stretches, holds and reviews nobody has acknowledged) with an acknowledgement form, the
  latest results, the review queue's length, the defect Pareto of the last ``?days=`` days
  (7 by default) and the coils inspected in that period with links to their defect maps.
* ``/inspection/results/<id>/``: one frame: the image with a box and a label per defect
  (coloured by decision) when the frame was kept, else the defects' evidence crops; the
  defects with all class probabilities, size, position, decision, rule and review; the model,
  version and threshold set that judged it; the flags it raised and the cells they reach.
* ``/inspection/review/``: the review queue, oldest first, with each defect's crop and a
  verdict form (confirm, reclassify, false call) posting to ``defects/<id>/review/``.
* ``/inspection/coils/<serial>/``: a coil's defect map (SVG drawn on the server), its flags,
  its defects and their Pareto.
* ``/inspection/models/``: the model registry with metrics, golden result, who registered,
  approved and activated each version, and the approve / activate / retire commands.

Every write goes through :mod:`inspection.services` (``defect_review``, ``flag_acknowledge``,
``model_approve``, ``model_activate``, ``model_retire``) with the logged-in user as the actor;
a refusal is shown on the form under the field it names and writes nothing. Reviewing needs
``inspection.add_defectreview``, acknowledging ``inspection.change_coilflag`` (quality
engineers, MRB members), the model commands ``inspection.approve_inspectionmodel`` (quality
engineers); auditors and operators read the same pages without the forms. Commands answer an
htmx request with the part of the page they change, and a plain form post with a redirect
(or the page with the refusal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Max, Prefetch, Q, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from genealogy import queries as genealogy_queries
from genealogy.choices import METRED_KINDS, UnitKind
from genealogy.models import Unit
from qms.exceptions import DomainError

from . import queries, services
from . import render as draw
from .choices import FlagAction, FlagKind, ModelState, ReviewState, Verdict
from .forms import (
    DEFAULT_DAYS,
    DefectReviewForm,
    FlagAcknowledgeForm,
    ModelCommandForm,
    PeriodForm,
)
from .models import CellVisionFlag, CoilFlag, Defect, DefectReview, InspectionModel

REVIEW_PERMISSION = "inspection.add_defectreview"
ACKNOWLEDGE_PERMISSION = "inspection.change_coilflag"
APPROVE_PERMISSION = services.APPROVE_PERMISSION

#: Rows shown in the overview's lists and the review queue (the count says how many exist).
OPEN_FLAGS_SHOWN = 50
LATEST_RESULTS_SHOWN = 20
COILS_SHOWN = 20
QUEUE_SHOWN = 50
#: Defects listed under a coil's map (the map draws all of them).
COIL_DEFECTS_SHOWN = 500
#: Model commands: URL action -> (service, what the page says it did).
MODEL_COMMANDS = {
    "approve": (services.model_approve, "approved"),
    "activate": (services.model_activate, "activated"),
    "retire": (services.model_retire, "retired"),
}
METRIC_SETS = {
    "in_distribution": "In distribution (test set)",
    "heldout_shifted": "Held out, shifted rendering (noise, lighting, contrast, focus)",
    "validation_shifted": "Shifted validation (models compared on it)",
    "validation": "Validation (thresholds calibrated on it)",
}


# ---------------------------------------------------------------------------- utilities


def _is_htmx(request: HttpRequest) -> bool:
    h = request.headers
    return h.get("HX-Request") == "true" and h.get("HX-History-Restore-Request") != "true"


def _form_error(form, exc: DomainError) -> str:
    """Put a service's refusal on the form: under the field it names when the form has that
    field, else at the top, naming the field. Returns what is not tied to a field."""
    if exc.field and exc.field in form.fields:
        form.add_error(exc.field, exc.message)
        return ""
    return f"{exc.field}: {exc.message}" if exc.field and exc.field != "actor" else exc.message


def evidence_url(sha256: str) -> str:
    return reverse("inspection-api:evidence", kwargs={"sha256": sha256})


def trace_url(serial: str) -> str:
    return reverse("compliance:trace") + "?" + urlencode({"serial": serial})


def coil_url(serial: str) -> str:
    return reverse("inspection:coil", kwargs={"serial": serial})


def _size(defect: Defect) -> str:
    """The defect's size as the rules read it: length for line-like defects, else the
    equivalent diameter."""
    if defect.length_um:
        return f"length {defect.length_um:,.0f} µm"
    if defect.equivalent_diameter_um:
        return f"⌀ {defect.equivalent_diameter_um:,.0f} µm"
    return ""


def _probabilities(defect: Defect) -> list[tuple[str, float]]:
    """All class probabilities, largest first."""
    items = [(str(k), float(v)) for k, v in (defect.probabilities or {}).items()]
    return sorted(items, key=lambda kv: (-kv[1], kv[0]))


def _flags_with_cells(flags: QuerySet[CoilFlag]) -> list[CoilFlag]:
    """The flags with the cells each one reaches (serial order, with their status)."""
    cells = CellVisionFlag.objects.select_related("unit").order_by("unit__serial")
    flags = list(flags.prefetch_related(Prefetch("cells", queryset=cells)))
    for flag in flags:
        flag.cell_links = [(c.unit, trace_url(c.unit.serial)) for c in flag.cells.all()]
    return flags


def _pareto_rows(defects: QuerySet[Defect]) -> list[draw.ParetoRow]:
    """The Pareto of these defects; classes with the same count in name order, so the chart
    does not change between two loads (the cumulative share follows that order)."""
    # An ordered queryset would group by its ordering columns too: clear it.
    counted = sorted(queries.defect_pareto(defects.order_by()), key=lambda r: (-r[1], r[0]))
    total = sum(n for _, n, _ in counted)
    rows, running = [], 0
    for cls, n, _ in counted:
        running += n
        rows.append(draw.ParetoRow(cls, n, running / total))
    return rows


def _inline(svg: str) -> str:
    return mark_safe(svg)  # noqa: S308  our renderer's own markup, every text escaped


# ----------------------------------------------------------------------------- overview


@dataclass
class FlagRow:
    flag: CoilFlag
    form: FlagAcknowledgeForm | None


@dataclass
class FlagsView:
    """The alarm list: open flags, newest first, with a form each for those who may
    acknowledge; ``error`` is a refusal not tied to a field."""

    rows: list[FlagRow] = field(default_factory=list)
    total: int = 0
    error: str = ""


def _open_flags(
    *, can_acknowledge: bool, bound: tuple[int, FlagAcknowledgeForm] | None = None, error=""
) -> FlagsView:
    flags = list(queries.open_flags()[:OPEN_FLAGS_SHOWN])
    total = len(flags)
    if total == OPEN_FLAGS_SHOWN:
        total = queries.open_flags().count()
    view = FlagsView(total=total, error=error)
    for flag in flags:
        form = None
        if can_acknowledge:
            form = (
                bound[1]
                if bound is not None and bound[0] == flag.pk
                else FlagAcknowledgeForm(prefix=f"flag-{flag.pk}")
            )
        view.rows.append(FlagRow(flag, form))
    return view


def _coils_inspected(since) -> list[dict[str, Any]]:
    """Coils with results acquired since ``since``: frames, defects, uninspected frames and
    the latest acquisition; latest first."""
    rows = (
        queries.result_list()
        .filter(acquired_at__gte=since)
        .order_by()
        .values("coil__serial", "coil__kind")
        .annotate(
            frames=Count("id"),
            defects=Sum("defect_count"),
            uninspected=Count("id", filter=Q(verdict=Verdict.UNINSPECTED)),
            last=Max("acquired_at"),
        )
        .order_by("-last", "coil__serial")[:COILS_SHOWN]
    )
    return [row | {"url": coil_url(row["coil__serial"])} for row in rows]


def _overview_context(request: HttpRequest, days: int) -> dict[str, Any]:
    since = timezone.now() - timedelta(days=days)
    can_acknowledge = request.user.has_perm(ACKNOWLEDGE_PERMISSION)
    pareto_rows = _pareto_rows(queries.defect_list().filter(result__acquired_at__gte=since))
    return {
        "cameras": list(queries.camera_list()),
        "flags": _open_flags(can_acknowledge=can_acknowledge),
        "can_acknowledge": can_acknowledge,
        "results": list(queries.result_list()[:LATEST_RESULTS_SHOWN]),
        "queue_count": queries.review_queue().count(),
        "pareto": _inline(
            draw.pareto(pareto_rows, title=f"Defects by class, last {days} day{'s' * (days != 1)}")
        ),
        "coils": _coils_inspected(since),
        "since": since,
    }


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    """Cameras, open flags, latest results, review queue, Pareto and coils of the last
    ``?days=`` days. A bad ``days`` answers 400 with the message (and the default period)."""
    form = PeriodForm(request.GET or None)
    status = 200
    days = DEFAULT_DAYS
    if form.is_bound:
        if form.is_valid():
            days = form.cleaned_data["days"]
        else:
            status = 400
    context = {"nav": "inspection", "form": form, "days": days}
    context |= _overview_context(request, days)
    return render(request, "inspection/overview.html", context, status=status)


@login_required
@require_POST
def flag_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    """Acknowledge an open flag with a comment (``flag-<id>-comment``); the hold, if any,
    stays (it is released through compliance). htmx gets the flag list; a plain form post is
    redirected to the overview. Without the permission: 403, nothing written."""
    flag = queries.flag_list().filter(pk=pk).first()
    if flag is None:
        raise Http404(f"No coil flag {pk}.")
    can_acknowledge = request.user.has_perm(ACKNOWLEDGE_PERMISSION)
    form = FlagAcknowledgeForm(request.POST, prefix=f"flag-{flag.pk}")
    status, error = 200, ""
    if not can_acknowledge:
        status = 403
        error = (
            f"Acknowledging vision flags needs the permission {ACKNOWLEDGE_PERMISSION} "
            "(quality engineers and MRB members)."
        )
    elif not form.is_valid():
        status = 400
    else:
        try:
            services.flag_acknowledge(
                flag=flag, actor=request.user, comment=form.cleaned_data["comment"]
            )
        except DomainError as exc:
            status, error = exc.http_status, _form_error(form, exc)
    if status == 200 and not _is_htmx(request):
        messages.success(request, f"Flag #{flag.pk} on {flag.coil.serial} acknowledged.")
        return redirect(reverse("inspection:overview") + "#flags")
    flags = _open_flags(
        can_acknowledge=can_acknowledge,
        bound=None if status == 200 else (flag.pk, form),
        error=error,
    )
    if _is_htmx(request):
        context = {"flags": flags, "can_acknowledge": can_acknowledge}
        return render(request, "inspection/partials/open_flags.html", context, status=status)
    context = {"nav": "inspection", "form": PeriodForm(), "days": DEFAULT_DAYS}
    context |= _overview_context(request, DEFAULT_DAYS) | {"flags": flags}
    return render(request, "inspection/overview.html", context, status=status)


# --------------------------------------------------------------------------- result page


@dataclass
class DefectRow:
    defect: Defect
    size: str
    probabilities: list[tuple[str, float]]
    crop_url: str
    review: DefectReview | None


def _defect_rows(defects: list[Defect]) -> list[DefectRow]:
    rows = []
    for d in defects:
        reviews = list(d.reviews.all())
        rows.append(
            DefectRow(
                defect=d,
                size=_size(d),
                probabilities=_probabilities(d),
                crop_url=evidence_url(d.crop.sha256) if d.crop else "",
                review=reviews[0] if reviews else None,
            )
        )
    return rows


@login_required
@require_GET
def result_page(request: HttpRequest, pk: int) -> HttpResponse:
    """One inspected frame: image with boxes, defects, model, coil metres, flags and cells."""
    result = queries.result_get(pk)
    if result is None:
        raise Http404(f"No inspection result {pk}.")
    reviews = DefectReview.objects.select_related("reviewed_by").order_by("-reviewed_at", "-pk")
    defects = list(
        queries.defect_list()
        .filter(result=result)
        .order_by("id")
        .prefetch_related(Prefetch("reviews", queryset=reviews))
    )
    rows = _defect_rows(defects)
    frame = result.frame_image
    overlay = ""
    if frame is not None:
        boxes = [
            draw.OverlayBox(
                defect_id=d.pk,
                x0=d.x0_px,
                y0=d.y0_px,
                x1=d.x1_px,
                y1=d.y1_px,
                label=f"{d.cls} {d.confidence:.2f}",
                decision=d.decision,
            )
            for d in defects
        ]
        overlay = _inline(
            draw.frame_overlay(width_px=frame.width_px, height_px=frame.height_px, boxes=boxes)
        )
    flags = _flags_with_cells(queries.flag_list().filter(result=result).order_by("start_m"))
    model = result.model
    context = {
        "nav": "inspection",
        "r": result,
        "camera": result.camera,
        "station": result.camera.station,
        "rows": rows,
        "frame": frame,
        "frame_url": evidence_url(frame.sha256) if frame else "",
        "overlay": overlay,
        "flags": flags,
        "model": model,
        "coil_url": coil_url(result.coil.serial),
        "coil_trace_url": trace_url(result.coil.serial),
        "decision_colours": draw.DECISION_COLOURS,
    }
    return render(request, "inspection/result.html", context)


# -------------------------------------------------------------------------- review queue


@dataclass
class QueueRow:
    defect: Defect
    size: str
    probabilities: list[tuple[str, float]]
    crop_url: str
    form: DefectReviewForm | None
    error: str = ""


@dataclass
class QueueView:
    rows: list[QueueRow] = field(default_factory=list)
    total: int = 0


def _queue_row(
    defect: Defect, *, can_review: bool, form: DefectReviewForm | None = None, error=""
) -> QueueRow:
    if can_review and form is None:
        form = DefectReviewForm(prefix=f"defect-{defect.pk}")
    return QueueRow(
        defect=defect,
        size=_size(defect),
        probabilities=_probabilities(defect),
        crop_url=evidence_url(defect.crop.sha256) if defect.crop else "",
        form=form if can_review else None,
        error=error,
    )


def _queue(
    *, can_review: bool, bound: tuple[int, DefectReviewForm, str] | None = None
) -> QueueView:
    defects = list(queries.review_queue()[:QUEUE_SHOWN])
    total = len(defects)
    if total == QUEUE_SHOWN:
        total = queries.review_queue().count()
    view = QueueView(total=total)
    for d in defects:
        if bound is not None and bound[0] == d.pk:
            view.rows.append(_queue_row(d, can_review=can_review, form=bound[1], error=bound[2]))
        else:
            view.rows.append(_queue_row(d, can_review=can_review))
    return view


def _review_page(
    request: HttpRequest, queue: QueueView, can_review: bool, status: int = 200
) -> HttpResponse:
    context = {"nav": "inspection", "queue": queue, "can_review": can_review}
    return render(request, "inspection/review.html", context, status=status)


@login_required
@require_GET
def review(request: HttpRequest) -> HttpResponse:
    """The review queue, oldest first, with a verdict form per defect for reviewers."""
    can_review = request.user.has_perm(REVIEW_PERMISSION)
    return _review_page(request, _queue(can_review=can_review), can_review)


@login_required
@require_POST
def defect_review(request: HttpRequest, pk: int) -> HttpResponse:
    """A reviewer's verdict on one defect (``defect-<id>-verdict``, ``-label``,
    ``-comment``), through :func:`inspection.services.defect_review`: confirm or reclassify
    puts the defect's metres on hold (the cells made from them are held), a false call
    closes its flag. htmx gets the row back (the verdict and the held cells, or the form with
    the refusal) and the queue count; a plain form post is redirected to the queue. Without
    the permission: 403; a bad verdict or a reclassification without the true class: 400;
    nothing written."""
    defect = queries.defect_list().filter(pk=pk).first()
    if defect is None:
        raise Http404(f"No defect {pk}.")
    can_review = request.user.has_perm(REVIEW_PERMISSION)
    form = DefectReviewForm(request.POST, prefix=f"defect-{defect.pk}")
    status, error, done = 200, "", None
    if not can_review:
        status = 403
        error = (
            f"Reviewing vision defects needs the permission {REVIEW_PERMISSION} "
            "(quality engineers and MRB members)."
        )
    elif not form.is_valid():
        status = 400
    else:
        data = form.cleaned_data
        try:
            done = services.defect_review(
                defect=defect,
                verdict=data["verdict"],
                label=data["label"] or None,
                comment=data["comment"],
                actor=request.user,
            )
        except DomainError as exc:
            status, error = exc.http_status, _form_error(form, exc)
    if done is not None and not _is_htmx(request):
        messages.success(
            request,
            f"Defect #{defect.pk} ({defect.cls} at {defect.md_m:.3f} m on "
            f"{defect.result.coil.serial}): {done.get_verdict_display()}.",
        )
        return redirect(reverse("inspection:review") + "#queue")
    if not _is_htmx(request):
        queue = _queue(can_review=can_review, bound=(defect.pk, form, error))
        if not any(row.defect.pk == defect.pk for row in queue.rows):
            messages.error(request, error or f"Defect #{defect.pk}: {form.errors.as_text()}")
        return _review_page(request, queue, can_review, status=status)
    context: dict[str, Any] = {"can_review": can_review, "oob": True}
    context["queue_total"] = queries.review_queue().count()
    if done is not None:
        defect.refresh_from_db(fields=["review_state"])
        context |= {
            "defect": defect,
            "review": done,
            "flags": _flags_with_cells(queries.flag_list().filter(defect=defect)),
        }
        return render(request, "inspection/partials/reviewed_row.html", context)
    context["row"] = _queue_row(defect, can_review=can_review, form=form, error=error)
    response = render(request, "inspection/partials/queue_row.html", context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


# ------------------------------------------------------------------------------ coil map


def _coil(serial: str) -> Unit:
    for kind in (UnitKind.COIL, UnitKind.SLIT_COIL):
        found = genealogy_queries.unit_find(serial, kind=kind)
        if found is not None and found.kind in METRED_KINDS:
            return found
    raise Http404(f"No coil with serial {serial!r}.")


@login_required
@require_GET
def coil_page(request: HttpRequest, serial: str) -> HttpResponse:
    """A coil's defect map along its length, its flags, its defects and their Pareto."""
    coil = _coil(serial)
    cmap = queries.coil_map(coil)
    lanes = (
        queries.result_list()
        .filter(coil=coil)
        .order_by()
        .values_list("camera__lane_width_mm", flat=True)
        .distinct()
    )
    width_mm = max([*lanes, *(d.cd_mm for d in cmap.defects), 1.0])
    length_m = cmap.length_m if cmap.length_m > 0 else 1.0
    defects = [
        draw.MapDefect(
            defect_id=d.pk,
            md_m=d.md_m,
            cd_mm=d.cd_mm,
            cls=d.cls,
            decision=d.decision,
            confidence=d.confidence,
            pending=d.review_state == ReviewState.PENDING,
        )
        for d in cmap.defects
    ]
    uninspected = [
        draw.MapBand(a, b, f"uninspected ({reason.replace('_', ' ')}): {a:.3f} to {b:.3f} m")
        for a, b, reason in cmap.uninspected_m
    ]
    holds = [
        draw.MapBand(f.start_m, f.end_m, f"hold #{f.pk}: {f.reason}")
        for f in cmap.flags
        if f.action == FlagAction.HOLD and f.kind == FlagKind.DEFECT
    ]
    svg = draw.coil_map(
        serial=coil.serial,
        length_m=length_m,
        width_mm=width_mm,
        defects=defects,
        uninspected=uninspected,
        holds=holds,
        inspected=cmap.inspected_m,
    )
    inspected_m = sum(b - a for a, b in cmap.inspected_m)
    uninspected_m = sum(b - a for a, b, _ in cmap.uninspected_m)
    pareto_rows = _pareto_rows(queries.defect_list().filter(result__coil=coil))
    context = {
        "nav": "inspection",
        "coil": coil,
        "map": cmap,
        "map_svg": _inline(svg),
        "width_mm": width_mm,
        "inspected_m": inspected_m,
        "uninspected_m": uninspected_m,
        "defects": cmap.defects[:COIL_DEFECTS_SHOWN],
        "defect_total": len(cmap.defects),
        "pareto": _inline(draw.pareto(pareto_rows, title=f"Defects by class on {coil.serial}")),
        "trace_url": trace_url(coil.serial),
    }
    return render(request, "inspection/coil.html", context)


# ------------------------------------------------------------------------ model registry


@dataclass
class MetricSet:
    key: str
    label: str
    count: int | None
    accuracy: str
    macro_f1: str
    escape_rate: str
    false_alarm_rate: str
    confusion: list[tuple[str, list[int]]] | None


@dataclass
class ModelRow:
    model: InspectionModel
    metrics: list[MetricSet]
    classes: list[str]
    history: list[Any]
    activated_by: Any
    cameras: list[str]
    shadow_cameras: list[str]
    disagreements: int
    actions: list[str]
    form: ModelCommandForm | None
    error: str = ""


@dataclass
class RegistryView:
    """The registry's rows; ``error`` is a refusal for someone who has no form to show it on."""

    rows: list[ModelRow] = field(default_factory=list)
    error: str = ""


def _pct(value: Any) -> str:
    return f"{float(value) * 100:.2f} %" if isinstance(value, int | float) else "—"


def _fraction(value: Any) -> str:
    return f"{float(value):.4f}" if isinstance(value, int | float) else "—"


def _metric_sets(model: InspectionModel) -> list[MetricSet]:
    out = []
    metrics = model.metrics if isinstance(model.metrics, dict) else {}
    keys = [k for k in METRIC_SETS if k in metrics] + sorted(set(metrics) - set(METRIC_SETS))
    for key in keys:
        m = metrics[key]
        if not isinstance(m, dict):
            continue
        matrix = m.get("confusion_matrix")
        confusion = None
        if (
            isinstance(matrix, list)
            and len(matrix) == len(model.classes)
            and all(isinstance(r, list) and len(r) == len(model.classes) for r in matrix)
        ):
            confusion = list(zip(model.classes, matrix, strict=True))
        out.append(
            MetricSet(
                key=key,
                label=METRIC_SETS.get(key, key.replace("_", " ")),
                count=m.get("count"),
                accuracy=_pct(m.get("accuracy")),
                macro_f1=_fraction(m.get("macro_f1")),
                escape_rate=_pct(m.get("escape_rate")),
                false_alarm_rate=_pct(m.get("false_alarm_rate")),
                confusion=confusion,
            )
        )
    return out


def _actions(model: InspectionModel) -> list[str]:
    """The commands that apply to a model in its state (the service has the last word)."""
    if model.state == ModelState.VALIDATED:
        return ["approve", "retire"]
    if model.state == ModelState.APPROVED:
        return ["activate", "retire"]
    if model.state == ModelState.ACTIVE:
        return ["retire"]
    if model.state == ModelState.RETIRED and model.approved_at is not None:
        return ["activate"]
    return []


def _registry(
    *, can_approve: bool, bound: tuple[int, ModelCommandForm, str] | None = None
) -> RegistryView:
    """Every registered model with its figures, history and commands. A fixed number of
    queries whatever the number of models."""
    models = list(queries.model_list())
    ids = [m.pk for m in models]
    history: dict[int, list[Any]] = {}
    for h in (
        InspectionModel.history.filter(id__in=ids)
        .select_related("history_user")
        .order_by("history_date", "history_id")
    ):
        history.setdefault(h.id, []).append(h)
    cameras: dict[int, list[str]] = {}
    shadows: dict[int, list[str]] = {}
    for camera in queries.camera_list():
        where = f"{camera.station.code}/{camera.camera}"
        if camera.model_id:
            cameras.setdefault(camera.model_id, []).append(where)
        if camera.shadow_model_id:
            shadows.setdefault(camera.shadow_model_id, []).append(where)
    disagreements = dict(
        queries.shadow_disagreement_list()
        .order_by()
        .values_list("shadow_version")
        .annotate(n=Count("id"))
        .values_list("shadow_version", "n")
    )
    view = RegistryView()
    for m in models:
        entries = history.get(m.pk, [])
        activated = [h for h in entries if (h.history_change_reason or "").startswith("activated")]
        form, error = None, ""
        if can_approve:
            if bound is not None and bound[0] == m.pk:
                form, error = bound[1], bound[2]
            else:
                form = ModelCommandForm(prefix=f"model-{m.pk}")
        view.rows.append(
            ModelRow(
                model=m,
                metrics=_metric_sets(m),
                classes=list(m.classes),
                history=entries,
                activated_by=activated[-1].history_user if activated else None,
                cameras=cameras.get(m.pk, []),
                shadow_cameras=shadows.get(m.pk, []),
                disagreements=disagreements.get(m.version, 0),
                actions=_actions(m),
                form=form,
                error=error,
            )
        )
    return view


@login_required
@require_GET
def models_page(request: HttpRequest) -> HttpResponse:
    """The vision model registry with the commands for those who may approve."""
    can_approve = request.user.has_perm(APPROVE_PERMISSION)
    context = {
        "nav": "inspection",
        "registry": _registry(can_approve=can_approve),
        "can_approve": can_approve,
    }
    return render(request, "inspection/models.html", context)


@login_required
@require_POST
def model_command(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Approve, activate or retire a model with a reason (``model-<id>-reason``) through
    the service of that name. htmx gets the registry back (an activation retires the model
    it replaces, so more than one row changes); a plain form post is redirected to the
    registry. Without the permission: 403; a model in the wrong state: 409; no reason: 400;
    each with the message on the model's form, nothing written."""
    if action not in MODEL_COMMANDS:
        raise Http404(f"No model command {action!r}.")
    model = queries.model_list().filter(pk=pk).first()
    if model is None:
        raise Http404(f"No vision model {pk}.")
    service, done_text = MODEL_COMMANDS[action]
    can_approve = request.user.has_perm(APPROVE_PERMISSION)
    form = ModelCommandForm(request.POST, prefix=f"model-{model.pk}")
    status, error = 200, ""
    if not can_approve:
        status = 403
        error = (
            f"Approving, activating or retiring a vision model needs the permission "
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
        return redirect(reverse("inspection:models") + f"#model-{model.pk}")
    registry = _registry(
        can_approve=can_approve, bound=None if status == 200 else (model.pk, form, error)
    )
    if status != 200 and not can_approve:
        # No form on the page for this user: the refusal goes at the top of the registry.
        registry.error = error
    context = {"nav": "inspection", "registry": registry, "can_approve": can_approve}
    if _is_htmx(request):
        return render(request, "inspection/partials/registry.html", context, status=status)
    return render(request, "inspection/models.html", context, status=status)
