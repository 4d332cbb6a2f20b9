"""Web pages of SPC: the plant overview, a characteristic's page and chart downloads.

* ``/spc/``: every active characteristic with its state (out of spec, alarm, no limits,
  insufficient data, in control), the time of its last value, its open alarms and Cpk;
  filtered by line, station and state, sorted by any column on the server. The states are
  the ones :func:`spc.queries.characteristic_state` gives, computed for all characteristics
  with a fixed number of queries (:func:`characteristic_overview`).
* ``/spc/characteristics/<id>/``: the control chart of the last 100, 500 or 2,000 values
  (SVG drawn on the server, refreshed every 10 s by htmx: the poll answers 204 when nothing
  that the chart shows has changed), the limits in force with who approved them, when and
  why, a draft with its approval form, the capability summary with its histogram, the
  detectors with their ARLs, and the alarms (open first) with an acknowledgement form.
* ``chart.svg``, ``chart.png``, ``chart.pdf``: the same chart for reports and audit packs.

Every write goes through :mod:`spc.services` (``alarm_acknowledge``, ``limits_approve``)
with the logged-in user as the actor; a refusal is shown on the form under the field it
names and writes nothing. Acknowledging needs ``spc.change_spcalarm`` (quality engineers,
MRB members), approving ``spc.approve_controllimits`` (quality engineers); auditors and
operators read the same pages without the forms.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Count, Max, OuterRef, Subquery, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.safestring import mark_safe
from django.utils.text import slugify
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from genealogy.models import Measurement
from qms.exceptions import DomainError
from qms.models import Characteristic

from . import queries, services
from .choices import AlarmSeverity, AlarmStatus, ChartType, LimitsStatus
from .forms import (
    DEFAULT_SORT,
    DEFAULT_WINDOW,
    SORT_COLUMNS,
    STATE_CHOICES,
    AlarmAcknowledgeForm,
    ChartWindowForm,
    LimitsApproveForm,
    OverviewForm,
)
from .models import ChartCheckpoint, ChartConfig, ControlLimits, SpcAlarm
from .render import ChartSignal, ControlChartData, CusumData, HistogramData, rule_label
from .render import capability_histogram as draw_histogram
from .render import control_chart as draw_chart

ACKNOWLEDGE_PERMISSION = "spc.change_spcalarm"
APPROVE_PERMISSION = services.APPROVE_PERMISSION

STATE_LABELS = dict(STATE_CHOICES)
#: Worst first: the overview's default order.
STATE_RANK = {state: rank for rank, (state, _) in enumerate(STATE_CHOICES)}
#: Open alarms listed on a characteristic's page; acknowledged and closed ones after them.
OPEN_ALARMS_SHOWN = 50
DECIDED_ALARMS_SHOWN = 20
#: Limits versions listed in the page's history table.
LIMITS_VERSIONS_SHOWN = 10
#: Chart sizes in CSS pixels (the PNG has exactly these pixels); a CUSUM panel adds height.
CHART_WIDTH_PX = 1200
CHART_HEIGHT_PX = 500
CHART_HEIGHT_CUSUM_PX = 640
HISTOGRAM_HEIGHT_PX = 420
#: Seconds between two refreshes of the chart on the page (htmx polling).
CHART_REFRESH_S = 10
#: Seconds between two refreshes of the overview table.
OVERVIEW_REFRESH_S = 30
CONTENT_TYPES = {"svg": "image/svg+xml", "png": "image/png", "pdf": "application/pdf"}
SEVERITY_ORDER = {AlarmSeverity.CRITICAL: 0, AlarmSeverity.MAJOR: 1}


# ------------------------------------------------------------------------------ helpers


def _is_htmx(request: HttpRequest) -> bool:
    h = request.headers
    return h.get("HX-Request") == "true" and h.get("HX-History-Restore-Request") != "true"


def _station_path(characteristic: Characteristic) -> str:
    station = characteristic.station
    return f"{station.line.site.code}/{station.line.code}/{station.code}"


def _characteristic(pk: int) -> Characteristic:
    found = Characteristic.objects.select_related("station__line__site").filter(pk=pk).first()
    if found is None:
        raise Http404(f"No characteristic {pk}.")
    return found


def _form_error(form, exc: DomainError) -> None:
    """Put a service's refusal on the form: under the field it names when the form has
    that field, else at the top of the form, naming the field."""
    if exc.field and exc.field in form.fields:
        form.add_error(exc.field, exc.message)
    elif exc.field:
        form.add_error(None, f"{exc.field}: {exc.message}")
    else:
        form.add_error(None, exc.message)


def _index(study: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    if not study:
        return None
    return next((i for i in study.get("indices") or [] if i["name"] == name), None)


def _cpk(study: dict[str, Any]) -> tuple[float | None, str]:
    """Cpk of a capability study, or why there is none."""
    if study.get("status") != "ok":
        return None, study.get("reason") or study.get("status", "")
    index = _index(study, "Cpk")
    if index is None or index.get("value") is None:
        return None, (index or {}).get("reason") or "not defined"
    return float(index["value"]), ""


def _window(data) -> ChartWindowForm:
    """The chart window asked for (``?last=``), the default when none is given."""
    return ChartWindowForm({"last": data.get("last") or str(DEFAULT_WINDOW)})


def _decimals(scale: float | None) -> int:
    """Decimals that show a value to about a hundredth of ``scale`` (a sigma)."""
    if scale is None or not math.isfinite(scale) or scale <= 0:
        return 4
    return max(0, min(8, 2 - math.floor(math.log10(scale))))


def _num(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def _arl(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"


# ----------------------------------------------------------------------------- overview


@dataclass
class OverviewRow:
    """One characteristic on the overview."""

    id: int
    site: str
    line: str
    line_id: int
    station: str
    station_id: int
    station_sequence: int
    code: str
    name: str
    unit: str
    special_class: str
    state: str
    state_label: str
    last_measured_at: datetime | None
    open_alarms: int
    cpk: float | None
    cpk_note: str
    url: str


def _config_of(characteristic: Characteristic) -> ChartConfig:
    try:
        return characteristic.chart_config
    except ObjectDoesNotExist:
        return ChartConfig(characteristic=characteristic)


def characteristic_overview(
    characteristics: list[Characteristic],
) -> list[OverviewRow]:
    """The overview rows of these characteristics (from :func:`overview_characteristics`):
    two more queries whatever their number (approved limits, latest values), and a
    capability study of each one's latest values with the within sigma of its limits."""
    ids = [c.pk for c in characteristics]
    approved = {
        limits.characteristic_id: limits
        for limits in ControlLimits.objects.filter(
            characteristic_id__in=ids, status=LimitsStatus.APPROVED
        )
    }
    recent = queries.overview_recent_values(characteristics)
    rows = []
    for c in characteristics:
        config = _config_of(c)
        limits = approved.get(c.pk)
        if limits is not None and limits.chart_type != config.chart_type:
            limits = None  # limits of another chart do not apply (as limits_in_force)
        values = recent[c.pk]
        state = queries.state_decide(
            config, limits, [ok for _, ok in values], open_alarms=c.open_alarm_count
        )
        study = queries.capability_study(
            c, [v for v, _ in reversed(values)], limits, chart_type=config.chart_type
        )
        cpk, note = _cpk(study)
        station = c.station
        rows.append(
            OverviewRow(
                id=c.pk,
                site=station.line.site.code,
                line=station.line.code,
                line_id=station.line_id,
                station=station.code,
                station_id=station.pk,
                station_sequence=station.sequence,
                code=c.code,
                name=c.name,
                unit=c.unit,
                special_class=c.special_class if c.special_class in ("cc", "sc") else "",
                state=state,
                state_label=STATE_LABELS[state],
                last_measured_at=c.last_measured_at,
                open_alarms=c.open_alarm_count,
                cpk=cpk,
                cpk_note=note,
                url=reverse("spc:characteristic", args=[c.pk]),
            )
        )
    return rows


_SORT_KEYS = {
    "site": lambda r: r.site,
    "line": lambda r: (r.site, r.line),
    "station": lambda r: (r.site, r.line, r.station_sequence, r.station),
    "code": lambda r: r.code,
    "name": lambda r: r.name.casefold(),
    "unit": lambda r: r.unit,
    "class": lambda r: {"cc": 0, "sc": 1}.get(r.special_class, 2),
    "state": lambda r: STATE_RANK[r.state],
    "last": lambda r: r.last_measured_at,
    "alarms": lambda r: r.open_alarms,
    "cpk": lambda r: r.cpk,
}


def overview_sort(rows: list[OverviewRow], sort: str) -> list[OverviewRow]:
    """Rows by one column (``-`` for descending); rows without a value (no Cpk, never
    measured) come last either way; ties in plant order (site, line, station in process
    order, code)."""
    column = sort.removeprefix("-")
    descending = sort.startswith("-")
    key = _SORT_KEYS[column]
    rows = sorted(rows, key=lambda r: (r.site, r.line, r.station_sequence, r.station, r.code))
    present = [r for r in rows if key(r) is not None]
    missing = [r for r in rows if key(r) is None]
    return sorted(present, key=key, reverse=descending) + missing


def _sort_links(params: dict[str, str], sort: str) -> list[tuple[str, dict[str, str]]]:
    """Per column: its heading, the URL that sorts by it (ascending, or reversed when it is
    the current sort) and its ``aria-sort``."""
    out = []
    for column, text in SORT_COLUMNS.items():
        if sort == column:
            target, aria = f"-{column}", "ascending"
        elif sort == f"-{column}":
            target, aria = column, "descending"
        else:
            target, aria = column, "none"
        query = {k: v for k, v in params.items() if v} | {"sort": target}
        url = reverse("spc:overview") + "?" + urlencode(query)
        out.append((column, {"text": text, "url": url, "aria": aria}))
    return out


@login_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    """Every active characteristic's state at a glance; ``?line=&station=&state=&sort=``.
    htmx requests aimed at the table get the table only. A bad parameter answers 400 with
    the field named."""
    characteristics = queries.overview_characteristics()
    lines = sorted(
        {
            (c.station.line_id, f"{c.station.line.site.code}/{c.station.line.code}")
            for c in characteristics
        },
        key=lambda item: item[1],
    )
    stations = sorted(
        {(c.station_id, _station_path(c)) for c in characteristics}, key=lambda item: item[1]
    )
    form = OverviewForm(request.GET or None, lines=lines, stations=stations)
    status = 200
    rows: list[OverviewRow] = []
    sort = DEFAULT_SORT
    params: dict[str, str] = {}
    counts = dict.fromkeys(STATE_LABELS, 0)
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        data = form.cleaned_data if form.is_bound else {}
        sort = data.get("sort") or DEFAULT_SORT
        line_id, station_id, state = data.get("line"), data.get("station"), data.get("state")
        chosen = [
            c
            for c in characteristics
            if (line_id is None or c.station.line_id == line_id)
            and (station_id is None or c.station_id == station_id)
        ]
        rows = characteristic_overview(chosen)
        for row in rows:  # the counts cover the chosen line or station, every state
            counts[row.state] += 1
        if state:
            rows = [r for r in rows if r.state == state]
        rows = overview_sort(rows, sort)
        params = {
            "line": "" if line_id is None else str(line_id),
            "station": "" if station_id is None else str(station_id),
            "state": state or "",
        }
    query = {k: v for k, v in params.items() if v} | (
        {"sort": sort} if sort != DEFAULT_SORT else {}
    )
    context = {
        "nav": "spc",
        "form": form,
        "rows": rows,
        "total": len(characteristics),
        "counts": [(s, STATE_LABELS[s], counts[s]) for s in STATE_LABELS],
        "sort": sort,
        "columns": _sort_links(params, sort),
        "self_url": reverse("spc:overview") + ("?" + urlencode(query) if query else ""),
        "refresh_s": OVERVIEW_REFRESH_S,
        "now": datetime.now(tz=UTC),
    }
    partial = _is_htmx(request) and request.headers.get("HX-Target") == "overview-result"
    context["partial"] = partial
    template = "spc/partials/overview_result.html" if partial else "spc/overview.html"
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


# ------------------------------------------------------------------------- chart drawing


@dataclass
class ChartView:
    """A drawn chart and what the page says about it."""

    svg: str = ""
    points: int = 0
    values: int = 0
    signals: int = 0
    alarms: int = 0
    has_limits: bool = False
    first_at: datetime | None = None
    last_at: datetime | None = None
    error: str = ""


def _alarm_rule1_points(alarm_ids: list[int]) -> dict[int, list[int]]:
    """Measurement ids of the values behind rule-1 alarms on the chart statistic: each of
    them was beyond the limits, so each is marked, not only the first and last firing."""
    if not alarm_ids:
        return {}
    found = (
        queries.alarm_list()
        .filter(pk__in=alarm_ids, rule="nelson_1", statistic__in=["x", "xbar", "c"])
        .values_list("pk", "points")
    )
    return {pk: [p["measurement_id"] for p in points] for pk, points in found}


def chart_input(
    characteristic: Characteristic,
    data: dict[str, Any],
    limits: ControlLimits | None,
    config: ChartConfig,
) -> ControlChartData:
    """What :func:`spc.queries.chart_data` returned, as the renderer's input: the chart
    statistic over measurement time (a subgroup at its last value; the counts of a c
    chart), the limits in force, R or S with the subgroup sizes, the CUSUM sums against
    h, and a signal at each point
    where an alarm first and last fired (every point of a rule-1 alarm on the chart
    statistic), labelled with its rule."""
    points = data["points"]
    subgroups = limits is not None and data["chart_type"] in (ChartType.XBAR_R, ChartType.XBAR_S)
    counts = limits is not None and data["chart_type"] == ChartType.C
    main = "xbar" if subgroups else "c" if counts else "x"
    values = [p["values"][main] for p in points]
    times = [datetime.fromisoformat(p["last_measured_at"]) for p in points]
    sizes = dispersion = None
    statistics = {main, "cusum_up", "cusum_down", "ewma"}
    if limits is not None:
        if subgroups:
            spread = "r" if data["chart_type"] == ChartType.XBAR_R else "s"
            dispersion = [p["values"][spread] for p in points]
            sizes = [p["n"] for p in points]
            statistics.add(spread)
        elif not counts:
            statistics.add("mr")  # computed by the renderer from the values
    cusum = None
    if (
        limits is not None
        and points
        and all("cusum_up" in p["values"] and "cusum_down" in p["values"] for p in points)
    ):
        cusum = CusumData(
            h=config.cusum_h_sigma,
            up=[p["values"]["cusum_up"] for p in points],
            down=[p["values"]["cusum_down"] for p in points],
        )
    position = {p["index"]: i for i, p in enumerate(points)}
    by_measurement = {m: p["index"] for p in points for m in p["measurement_ids"]}
    rule1 = _alarm_rule1_points([a["id"] for a in data["alarms"] if a["rule"] == "nelson_1"])
    signals: set[tuple[int, str, str]] = set()
    for alarm in data["alarms"]:
        statistic = alarm["statistic"]
        if statistic not in statistics:
            continue
        indices = {alarm["first_index"], alarm["index"]}
        indices |= {by_measurement.get(m) for m in rule1.get(alarm["id"], [])}
        for index in indices - {None}:
            at = position.get(index)
            if at is None or (statistic == "mr" and at == 0):  # no MR at the first point
                continue
            signals.add((at, alarm["rule"], statistic))
    return ControlChartData(
        code=characteristic.code,
        name=characteristic.name,
        unit=characteristic.unit,
        values=values,
        limits=None if limits is None else limits.engine_limits,
        times=times,
        sizes=sizes,
        dispersion=dispersion,
        signals=[ChartSignal(*s) for s in sorted(signals)],
        lsl=characteristic.lsl,
        usl=characteristic.usl,
        target=characteristic.nominal,
        cusum=cusum,
    )


def _chart(characteristic: Characteristic, last: int, fmt: str) -> tuple[bytes | None, ChartView]:
    """The chart of the last ``last`` values in ``fmt``, with its summary; ``None`` bytes
    and the reason when the range cannot be charted."""
    view = ChartView()
    try:
        data = queries.chart_data(characteristic=characteristic, last=last)
    except DomainError as exc:
        view.error = exc.message
        return None, view
    config = queries.chart_config_for(characteristic)
    limits = None
    if data["limits"] is not None:
        limits = queries.limits_list().filter(pk=data["limits"]["id"]).first()
    chart = chart_input(characteristic, data, limits, config)
    height = CHART_HEIGHT_CUSUM_PX if chart.cusum is not None else CHART_HEIGHT_PX
    drawn = draw_chart(chart, fmt=fmt, width_px=CHART_WIDTH_PX, height_px=height, tz=UTC)
    points = data["points"]
    view.points = len(points)
    view.values = sum(len(p["measurement_ids"]) for p in points)
    view.signals = len(chart.signals)
    view.alarms = len(data["alarms"])
    view.has_limits = limits is not None
    if points:
        view.first_at = datetime.fromisoformat(points[0]["first_measured_at"])
        view.last_at = datetime.fromisoformat(points[-1]["last_measured_at"])
    return drawn, view


def _inline_svg(svg: bytes) -> str:
    """The drawn SVG without its XML declaration and doctype, to sit inside the page."""
    text = svg.decode("utf-8")
    return mark_safe(text[text.index("<svg ") :])  # noqa: S308  our renderer's own XML


def chart_version(characteristic: Characteristic, last: int) -> str:
    """A short fingerprint of what the chart of the last ``last`` values shows: the latest
    value, the evaluation's head checkpoint (a late value re-evaluated), the alarms (raised
    or extended), the limits in force and the configuration. One query."""
    latest = Measurement.objects.filter(characteristic=OuterRef("pk")).order_by(
        "-measured_at", "-pk"
    )
    alarms = (
        SpcAlarm.objects.filter(characteristic=OuterRef("pk")).order_by().values("characteristic")
    )
    head = ChartCheckpoint.objects.filter(characteristic=OuterRef("pk")).order_by("-pk")
    approved = ControlLimits.objects.filter(
        characteristic=OuterRef("pk"), status=LimitsStatus.APPROVED
    )
    config = ChartConfig.objects.filter(characteristic=OuterRef("pk"))
    row = (
        Characteristic.objects.filter(pk=characteristic.pk)
        .annotate(
            latest_id=Subquery(latest.values("pk")[:1]),
            head_id=Subquery(head.values("pk")[:1]),
            alarm_count=Subquery(alarms.annotate(n=Count("pk")).values("n")),
            alarm_last=Subquery(alarms.annotate(n=Max("pk")).values("n")),
            alarm_span=Subquery(alarms.annotate(n=Sum("last_chart_index")).values("n")),
            limits_id=Subquery(approved.values("pk")[:1]),
            config_at=Subquery(config.values("updated_at")[:1]),
        )
        .values_list(
            "latest_id",
            "head_id",
            "alarm_count",
            "alarm_last",
            "alarm_span",
            "limits_id",
            "config_at",
        )
        .first()
    )
    text = repr((last, row))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def download_filename(characteristic: Characteristic, last: int, view: ChartView, fmt: str) -> str:
    """``gf1-l2-cyl-fill-electrolyte-fill-mass-last500-20261127T1030Z.png``: where, what,
    which window, and the time (UTC) of the last value charted."""
    station = characteristic.station
    where = [station.line.site.code, station.line.code, station.code, characteristic.code]
    parts = [slugify(part) or "x" for part in where] + [f"last{last}"]
    if view.last_at is not None:
        parts.append(view.last_at.astimezone(UTC).strftime("%Y%m%dT%H%MZ"))
    return "-".join(parts) + f".{fmt}"


# ------------------------------------------------------------------ the characteristic page


@dataclass
class AlarmRow:
    alarm: SpcAlarm
    label: str
    form: AlarmAcknowledgeForm | None = None
    points: int = 0


@dataclass
class AlarmsView:
    """The alarm list: open alarms (with a form each for those who may acknowledge), then
    the latest acknowledged or closed ones; ``error`` is a refusal not tied to a field."""

    open: list[AlarmRow] = field(default_factory=list)
    open_total: int = 0
    decided: list[AlarmRow] = field(default_factory=list)
    decided_total: int = 0
    error: str = ""


def _alarms(
    characteristic: Characteristic,
    *,
    can_acknowledge: bool,
    bound: tuple[int, AlarmAcknowledgeForm] | None = None,
    error: str = "",
) -> AlarmsView:
    """Open alarms (critical first, then newest first), then the latest decided ones."""
    mine = queries.alarm_list().filter(characteristic=characteristic)
    opened = list(mine.filter(status=AlarmStatus.OPEN)[:OPEN_ALARMS_SHOWN])
    opened.sort(key=lambda a: (SEVERITY_ORDER.get(a.severity, 9), -a.raised_at.timestamp()))
    decided = list(mine.exclude(status=AlarmStatus.OPEN)[:DECIDED_ALARMS_SHOWN])
    counts = dict(mine.order_by().values_list("status").annotate(n=Count("pk")))
    view = AlarmsView(
        open_total=counts.get(AlarmStatus.OPEN, 0),
        decided_total=sum(n for s, n in counts.items() if s != AlarmStatus.OPEN),
        error=error,
    )
    for alarm in opened:
        form = None
        if can_acknowledge:
            form = (
                bound[1]
                if bound is not None and bound[0] == alarm.pk
                else AlarmAcknowledgeForm(prefix=f"alarm-{alarm.pk}")
            )
        view.open.append(AlarmRow(alarm, rule_label(alarm.rule), form, len(alarm.points)))
    view.decided = [AlarmRow(a, rule_label(a.rule), None, len(a.points)) for a in decided]
    return view


@dataclass
class LimitsView:
    """The limits panel: the approved version (and whether it applies to the configured
    chart), the draft with the approval form for those who may approve, the latest
    versions; ``error`` is a refusal not tied to a field."""

    config: ChartConfig
    approved: ControlLimits | None
    applies: bool
    draft: ControlLimits | None
    versions: list[ControlLimits]
    form: LimitsApproveForm | None
    error: str = ""


STATISTIC_NAMES = {"x": "X", "mr": "MR", "xbar": "X-bar", "r": "R", "s": "S", "c": "c"}


def _limits_figures(limits: ControlLimits) -> dict[str, Any]:
    """Centre line and limits of each plotted statistic, and sigma, as text to a hundredth
    of sigma."""
    decimals = _decimals(limits.sigma)
    return {
        "sigma": _num(limits.sigma, decimals + 1),
        "sigma_method": limits.engine_limits.get("sigma_method", ""),
        "rows": [
            {
                "statistic": STATISTIC_NAMES.get(item["statistic"], item["statistic"]),
                "centre": _num(item["centre"], decimals),
                "lcl": _num(item["lcl"], decimals),
                "ucl": _num(item["ucl"], decimals),
            }
            for item in limits.engine_limits.get("statistics", [])
        ],
    }


def _limits(
    characteristic: Characteristic,
    *,
    can_approve: bool,
    form: LimitsApproveForm | None = None,
    error: str = "",
) -> LimitsView:
    config = queries.chart_config_for(characteristic)
    versions = list(queries.limits_list(characteristic))
    approved = next((v for v in versions if v.status == LimitsStatus.APPROVED), None)
    draft = next((v for v in versions if v.status == LimitsStatus.DRAFT), None)
    if draft is not None and can_approve and (form is None or form.prefix != f"limits-{draft.pk}"):
        form = LimitsApproveForm(prefix=f"limits-{draft.pk}")
    for version in (approved, draft):
        if version is not None:
            version.figures = _limits_figures(version)
    return LimitsView(
        config=config,
        approved=approved,
        applies=approved is not None and approved.chart_type == config.chart_type,
        draft=draft,
        versions=versions[:LIMITS_VERSIONS_SHOWN],
        form=form if draft is not None and can_approve else None,
        error=error,
    )


def _capability(
    characteristic: Characteristic, limits_in_force: ControlLimits | None, chart_type: str
) -> tuple[dict[str, Any], str]:
    """The capability study of the latest values (as on the overview: within sigma from
    the limits in force; not applicable to the counts of a c chart) and its histogram as
    inline SVG."""
    values = list(
        Measurement.objects.filter(characteristic=characteristic)
        .order_by("-measured_at", "-pk")
        .values_list("value", flat=True)[: queries.CAPABILITY_WINDOW]
    )
    values.reverse()
    study = queries.capability_study(characteristic, values, limits_in_force, chart_type=chart_type)
    drawn = study.get("status") in ("ok", "no_variation", "insufficient_data")
    histogram = HistogramData(
        code=characteristic.code,
        name=characteristic.name,
        unit=characteristic.unit,
        values=values,
        capability=study if drawn else None,
        lsl=None if drawn else characteristic.lsl,
        usl=None if drawn else characteristic.usl,
    )
    svg = draw_histogram(
        histogram, fmt="svg", width_px=CHART_WIDTH_PX, height_px=HISTOGRAM_HEIGHT_PX
    )
    return study, _inline_svg(svg)


def _study_view(study: dict[str, Any]) -> dict[str, Any]:
    """The capability study as the panel shows it: n, mean and sigmas to a hundredth of
    sigma, the indices with their intervals, the percentile indices when computed, the
    normality verdict and the engine's warnings."""
    status = study.get("status")
    out: dict[str, Any] = {
        "status": status,
        "n": study.get("n", 0),
        "reason": study.get("reason") or "",
        "warnings": study.get("warnings") or [],
    }
    if status != "ok":
        return out
    decimals = _decimals(study.get("sigma_within") or study.get("sigma_overall"))

    def index_rows(indices: list[dict[str, Any]]) -> list[dict[str, str]]:
        shown = ("Cp", "Cpk", "Pp", "Ppk", "Cpm")
        return [
            {
                "name": i["name"],
                "value": _num(i["value"], 2),
                "lower": _num(i.get("lower"), 2),
                "upper": _num(i.get("upper"), 2),
                "reason": i.get("reason") or "",
            }
            for i in indices
            if i["name"] in shown
        ]

    normality = study.get("normality") or {}
    nonnormal = study.get("nonnormal") or {}
    out |= {
        "mean": _num(study.get("mean"), decimals),
        "sigma_within": _num(study.get("sigma_within"), decimals + 1),
        "sigma_within_method": study.get("sigma_within_method") or "",
        "sigma_overall": _num(study.get("sigma_overall"), decimals + 1),
        "confidence": round(100 * float(study.get("confidence") or 0.95)),
        "indices": index_rows(study.get("indices") or []),
        "normal": normality.get("normal"),
        "normality_p": normality.get("p_value"),
        "percentile": index_rows(nonnormal.get("indices") or []),
        "distribution": nonnormal.get("distribution") or "",
    }
    return out


def _arl_rows(arl: dict[str, Any]) -> list[dict[str, Any]]:
    """The configured detectors and the Shewhart chart with their ARLs at each shift, as
    text."""
    rows = _arl_figures(arl)
    for row in rows:
        row["arl"] = [_arl(v) for v in row["arl"]]
    return rows


def _arl_figures(arl: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    if arl.get("cusum"):
        c = arl["cusum"]
        head = f", head start {c['head_start']:g}" if c["head_start"] else ""
        rows.append(
            {"name": "CUSUM", "params": f"k {c['k']:g}, h {c['h']:g}{head}", "arl": c["arl"]}
        )
    if arl.get("ewma"):
        e = arl["ewma"]
        rows.append({"name": "EWMA", "params": f"λ {e['lambda']:g}, L {e['L']:g}", "arl": e["arl"]})
    shewhart = arl["shewhart_rule_1"]
    if shewhart is None:  # a c chart without limits: its ARLs depend on c-bar
        return rows
    if shewhart.get("method") == "poisson":
        rows.append(
            {
                "name": "c chart, rule 1 only",
                "params": f"Poisson, c̄ {shewhart['centre']:.3g}, UCL {shewhart['ucl']:.3g}",
                "arl": shewhart["arl"],
            }
        )
        return rows
    rows.append(
        {"name": "Shewhart, rule 1 only", "params": f"L {shewhart['L']:g}", "arl": shewhart["arl"]}
    )
    return rows


def _rules_text(config: ChartConfig) -> str:
    rules = queries.ruleset_for(config)
    numbers = ", ".join(str(r) for r in sorted(rules.rules))
    return f"{config.get_rule_preset_display()} ({numbers}; run of {rules.same_side_run})"


def _downloads(characteristic: Characteristic, last: int) -> list[tuple[str, str]]:
    query = urlencode({"last": last})
    return [
        (fmt.upper(), reverse("spc:chart-download", args=[characteristic.pk, fmt]) + "?" + query)
        for fmt in ("svg", "png", "pdf")
    ]


def _page_url(characteristic: Characteristic, last: int) -> str:
    url = reverse("spc:characteristic", args=[characteristic.pk])
    return url if last == DEFAULT_WINDOW else f"{url}?last={last}"


def _minimum_values(config: ChartConfig) -> int:
    if config.chart_type in (ChartType.I_MR, ChartType.C):
        return queries.MIN_BASELINE_VALUES
    return queries.MIN_BASELINE_SUBGROUPS * max(config.subgroup_size, 2)


def _chart_context(characteristic: Characteristic, last: int) -> dict[str, Any]:
    svg, chart = _chart(characteristic, last, "svg")
    if svg is not None:
        chart.svg = _inline_svg(svg)
    return {
        "last": last,
        "chart": chart,
        "chart_version": chart_version(characteristic, last),
        "refresh_s": CHART_REFRESH_S,
        "downloads": _downloads(characteristic, last),
    }


def _state_context(characteristic: Characteristic) -> dict[str, Any]:
    """Where the characteristic stands (:func:`spc.queries.characteristic_state`), for the
    page's status and the answers of the commands (swapped out of band)."""
    state = queries.characteristic_state(characteristic)
    last = state["last_measured_at"]
    return {
        "state": state,
        "state_label": STATE_LABELS[state["state"]],
        "last_at": None if last is None else datetime.fromisoformat(last),
    }


def _page_context(
    request: HttpRequest,
    characteristic: Characteristic,
    window: ChartWindowForm,
    *,
    alarms: AlarmsView | None = None,
    limits: LimitsView | None = None,
) -> dict[str, Any]:
    last = window.cleaned_data["last"] if window.is_valid() else DEFAULT_WINDOW
    can_acknowledge = request.user.has_perm(ACKNOWLEDGE_PERMISSION)
    can_approve = request.user.has_perm(APPROVE_PERMISSION)
    config = queries.chart_config_for(characteristic)
    status = _state_context(characteristic)
    state = status["state"]
    study, histogram = _capability(
        characteristic, queries.limits_in_force(characteristic, config), config.chart_type
    )
    return {
        "nav": "spc",
        "c": characteristic,
        "station_path": _station_path(characteristic),
        "config": config,
        "rules": _rules_text(config),
        **status,
        "window": window,
        **_chart_context(characteristic, last),
        "limits": limits or _limits(characteristic, can_approve=can_approve),
        "study": _study_view(study),
        "histogram": histogram,
        "arl": state["arl"],
        "arl_rows": _arl_rows(state["arl"]),
        "alarms": alarms or _alarms(characteristic, can_acknowledge=can_acknowledge),
        "can_acknowledge": can_acknowledge,
        "can_approve": can_approve,
        "min_values": _minimum_values(config),
    }


@login_required
@require_GET
def characteristic_page(request: HttpRequest, pk: int) -> HttpResponse:
    """One characteristic: chart, limits, capability, detectors and ARLs, alarms.
    ``?last=100|500|2000``; another value answers 400 with the field named (and the chart
    of the default window)."""
    characteristic = _characteristic(pk)
    window = _window(request.GET)
    status = 200 if window.is_valid() else 400
    context = _page_context(request, characteristic, window)
    return render(request, "spc/characteristic.html", context, status=status)


@login_required
@require_GET
@never_cache
def chart_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The chart panel alone, for htmx: polled every :data:`CHART_REFRESH_S` seconds with
    the fingerprint ``v`` of what is shown (204 when nothing changed), or asked for another
    window (the page's address follows it)."""
    characteristic = _characteristic(pk)
    window = _window(request.GET)
    if not window.is_valid():
        context = {"c": characteristic, "window": window, "chart": ChartView(), "last": None}
        return render(request, "spc/partials/chart_body.html", context, status=400)
    last = window.cleaned_data["last"]
    if request.GET.get("v") == chart_version(characteristic, last):
        return HttpResponse(status=204)
    context = {"c": characteristic, "window": window, **_chart_context(characteristic, last)}
    response = render(request, "spc/partials/chart_body.html", context)
    if _is_htmx(request):
        response["HX-Replace-Url"] = _page_url(characteristic, last)
    return response


@login_required
@require_GET
def chart_download(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The chart as SVG, PNG or PDF (``?last=``, as on the page), as an attachment named
    after the characteristic, the window and the time of its last value."""
    characteristic = _characteristic(pk)
    window = _window(request.GET)
    if not window.is_valid():
        message = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in window.errors.items())
        return HttpResponse(message + "\n", status=400, content_type="text/plain; charset=utf-8")
    last = window.cleaned_data["last"]
    drawn, view = _chart(characteristic, last, fmt)
    if drawn is None:
        return HttpResponse(
            f"last: {view.error}\n", status=400, content_type="text/plain; charset=utf-8"
        )
    response = HttpResponse(drawn, content_type=CONTENT_TYPES[fmt])
    name = download_filename(characteristic, last, view, fmt)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


# ----------------------------------------------------------------------------- commands


def _refusal(form, exc: DomainError) -> str:
    """Put a service's refusal on the form; return what is not tied to one of its fields
    (shown above the list, so it is seen even when the form is gone)."""
    _form_error(form, exc)
    return " ".join(form.non_field_errors())


def _command_response(
    request: HttpRequest,
    characteristic: Characteristic,
    template: str,
    context: dict[str, Any],
    status: int,
) -> HttpResponse:
    """A command's htmx answer: its panel, with the page's state swapped out of band."""
    context |= {"c": characteristic, "oob": True, **_state_context(characteristic)}
    return render(request, template, context, status=status)


@login_required
@require_POST
def alarm_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    """Acknowledge one open alarm with the cause found (``alarm-<id>-cause``,
    ``alarm-<id>-comment``). htmx gets the alarm list (and the state); a plain form post is
    redirected to the page on success. Without the permission: 403; no cause: 400; an alarm
    no longer open: 409; each with the message on the form, nothing written."""
    alarm = queries.alarm_list().filter(pk=pk).first()
    if alarm is None:
        raise Http404(f"No SPC alarm {pk}.")
    characteristic = _characteristic(alarm.characteristic_id)
    can_acknowledge = request.user.has_perm(ACKNOWLEDGE_PERMISSION)
    form = AlarmAcknowledgeForm(request.POST, prefix=f"alarm-{alarm.pk}")
    status, error = 200, ""
    if not can_acknowledge:
        status = 403
        error = (
            f"Acknowledging SPC alarms needs the permission {ACKNOWLEDGE_PERMISSION} "
            "(quality engineers and MRB members)."
        )
    elif not form.is_valid():
        status = 400
    else:
        try:
            services.alarm_acknowledge(
                alarm=alarm,
                actor=request.user,
                cause=form.cleaned_data["cause"],
                comment=form.cleaned_data["comment"],
            )
        except DomainError as exc:
            status, error = exc.http_status, _refusal(form, exc)
    if status == 200 and not _is_htmx(request):
        return redirect(_page_url(characteristic, DEFAULT_WINDOW) + "#alarms")
    alarms = _alarms(
        characteristic,
        can_acknowledge=can_acknowledge,
        bound=None if status == 200 else (alarm.pk, form),
        error=error,
    )
    if not _is_htmx(request):
        context = _page_context(request, characteristic, _window({}), alarms=alarms)
        return render(request, "spc/characteristic.html", context, status=status)
    context = {"alarms": alarms, "can_acknowledge": can_acknowledge}
    return _command_response(request, characteristic, "spc/partials/alarms.html", context, status)


@login_required
@require_POST
def limits_approve(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve a draft of control limits with the reason (``limits-<id>-reason``): it goes
    in force now, the version before is superseded, the evaluation restarts from it. htmx
    gets the limits panel (and the state; the chart is told to refresh); a plain form post
    is redirected to the page on success. Without the permission: 403; no reason: 400; a
    version that is not a draft or has no variation: 409; nothing written."""
    draft = queries.limits_list().filter(pk=pk).first()
    if draft is None:
        raise Http404(f"No control limits {pk}.")
    characteristic = _characteristic(draft.characteristic_id)
    can_approve = request.user.has_perm(APPROVE_PERMISSION)
    form = LimitsApproveForm(request.POST, prefix=f"limits-{draft.pk}")
    status, error = 200, ""
    if not can_approve:
        status = 403
        error = (
            f"Approving control limits needs the permission {APPROVE_PERMISSION} "
            "(quality engineers)."
        )
    elif not form.is_valid():
        status = 400
    else:
        try:
            services.limits_approve(
                limits=draft, actor=request.user, reason=form.cleaned_data["reason"]
            )
        except DomainError as exc:
            status, error = exc.http_status, _refusal(form, exc)
    if status == 200 and not _is_htmx(request):
        return redirect(_page_url(characteristic, DEFAULT_WINDOW) + "#limits")
    limits = _limits(
        characteristic,
        can_approve=can_approve,
        form=None if status == 200 else form,
        error=error,
    )
    if not _is_htmx(request):
        context = _page_context(request, characteristic, _window({}), limits=limits)
        return render(request, "spc/characteristic.html", context, status=status)
    context = {"limits": limits, "can_approve": can_approve}
    response = _command_response(
        request, characteristic, "spc/partials/limits.html", context, status
    )
    if status == 200:
        response["HX-Trigger"] = "spc-refresh"
    return response
