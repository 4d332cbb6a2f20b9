"""Read-side selectors of SPC: configuration, limits, alarms, chart data and the state of a
characteristic for the overview and the characteristic's page.

The Phase II stream of a characteristic is the values measured at or after its approved
limits' ``monitor_from``, in ``(measured_at, id)`` order; position 0 is the first of them.
:func:`stream_rows` reads it (with the subgroup key of each value), :func:`monitor_config`
turns the chart configuration and the limits into the engine's ``MonitorConfig``; the
evaluation service and :func:`chart_data` share both, so a chart shows exactly the points
and subgroups the alarms were raised on. On a c chart every value is a count of
nonconformities (:func:`counts_check` refuses any other value, naming it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from django.db.models import Count, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, NullIf

from genealogy.choices import LinkKind, UnitKind
from genealogy.models import Link, Measurement
from qms.exceptions import InvalidInput
from qms.models import Characteristic
from spc import engine
from spc.engine import (
    DEFAULT_CUSUM,
    CusumSpec,
    EwmaSpec,
    Limits,
    Monitor,
    MonitorConfig,
    MonitorState,
    RuleSet,
    ShewhartSpec,
    Subgrouping,
)
from spc.engine._lazy import lazy

from .choices import AlarmStatus, ChartType, LimitsStatus, RulePreset, SubgroupMode
from .models import ChartCheckpoint, ChartConfig, ControlLimits, SpcAlarm

#: Fewest baseline values (I-MR) or subgroups (X-bar) from which limits are proposed.
MIN_BASELINE_VALUES = 20
MIN_BASELINE_SUBGROUPS = 10
#: Most values one chart request may cover.
MAX_CHART_VALUES = 5000
#: The latest values the state of a characteristic and its capability summary look at.
STATE_WINDOW = 100
CAPABILITY_WINDOW = 1000
#: Rows fetched per round trip when replaying a stream.
FETCH_SIZE = 2000
#: Mean shifts (sigma of the plotted statistic) at which detector ARLs are reported.
ARL_SHIFTS = (0.0, 1.0, 1.5, 2.0)

#: SciPy on first use (see spc.engine._lazy): only the c chart's ARLs need it here.
stats = lazy("scipy.stats")

RULE_PRESETS: dict[str, RuleSet] = {
    RulePreset.NELSON: engine.NELSON,
    RulePreset.WESTERN_ELECTRIC: engine.WESTERN_ELECTRIC,
}


class StreamRow(NamedTuple):
    """One value of a characteristic's stream, with its subgroup key (per unit or lot)."""

    id: int
    measured_at: datetime
    value: float
    unit_id: int
    key: str | int | None


# ------------------------------------------------------------------------ configuration


def chart_config_for(characteristic: Characteristic) -> ChartConfig:
    """The characteristic's chart configuration, or the default one (unsaved) if it has none
    yet: I-MR, Nelson rules 1-8, the default CUSUM."""
    config = ChartConfig.objects.filter(characteristic=characteristic).first()
    return config or ChartConfig(characteristic=characteristic)


def chart_config_list() -> QuerySet[ChartConfig]:
    return ChartConfig.objects.select_related("characteristic__station__line__site")


def ruleset_for(config: ChartConfig) -> RuleSet:
    """The engine rule set of a configuration (Western Electric: rule 2 with a run of 8)."""
    if config.rule_preset == RulePreset.WESTERN_ELECTRIC:
        return engine.WESTERN_ELECTRIC
    return RuleSet(config.rules)


def cusum_for(config: ChartConfig) -> CusumSpec | None:
    if not config.cusum_enabled:
        return None
    return CusumSpec(
        k=config.cusum_k_sigma, h=config.cusum_h_sigma, head_start=config.cusum_head_start_sigma
    )


def ewma_for(config: ChartConfig) -> EwmaSpec | None:
    if not config.ewma_enabled:
        return None
    return EwmaSpec(lam=config.ewma_lambda, L=config.ewma_l)


def subgrouping_for(config: ChartConfig) -> Subgrouping | None:
    if config.chart_type in (ChartType.I_MR, ChartType.C):
        return None
    if config.subgroup_mode == SubgroupMode.CONSECUTIVE:
        return Subgrouping.consecutive(config.subgroup_size)
    if config.subgroup_mode == SubgroupMode.TIME_WINDOW:
        return Subgrouping.time_window(config.subgroup_window_s)
    return Subgrouping.by_key()


def monitor_config(config: ChartConfig, limits: Limits) -> MonitorConfig:
    """The engine's view of a configuration and frozen limits. Limits without variation
    (sigma = 0) cannot scale a CUSUM or EWMA, and counts (c chart) are not normal data:
    those run without detectors."""
    flat = limits.degenerate or limits.sigma <= 0.0 or limits.chart.is_attribute
    return MonitorConfig(
        limits=limits,
        rules=ruleset_for(config),
        cusum=None if flat else cusum_for(config),
        ewma=None if flat else ewma_for(config),
        subgrouping=subgrouping_for(config),
    )


# ------------------------------------------------------------------------------- limits


def limits_list(characteristic: Characteristic | None = None) -> QuerySet[ControlLimits]:
    qs = ControlLimits.objects.select_related(
        "characteristic__station__line__site", "proposed_by", "approved_by"
    ).order_by("characteristic_id", "-version")
    if characteristic is not None:
        qs = qs.filter(characteristic=characteristic)
    return qs


def limits_in_force(
    characteristic: Characteristic, config: ChartConfig | None = None
) -> ControlLimits | None:
    """The approved limits, if they are for the configured chart (limits of another chart
    type do not apply after the chart was changed)."""
    limits = ControlLimits.objects.filter(
        characteristic=characteristic, status=LimitsStatus.APPROVED
    ).first()
    config = config or chart_config_for(characteristic)
    if limits is None or limits.chart_type != config.chart_type:
        return None
    return limits


# ------------------------------------------------------------------------------- alarms


def alarm_list() -> QuerySet[SpcAlarm]:
    return SpcAlarm.objects.select_related(
        "characteristic__station__line__site", "limits", "acknowledged_by", "closed_by"
    ).order_by("-raised_at", "-id")


# ------------------------------------------------------------------------------ streams


def _after(measured_at: datetime, measurement_id: int) -> Q:
    """Rows after ``(measured_at, id)`` in stream order."""
    return Q(measured_at__gt=measured_at) | Q(measured_at=measured_at, pk__gt=measurement_id)


def _through(measured_at: datetime, measurement_id: int) -> Q:
    """Rows at or before ``(measured_at, id)`` in stream order."""
    return Q(measured_at__lt=measured_at) | Q(measured_at=measured_at, pk__lte=measurement_id)


def stream_queryset(
    characteristic_id: int,
    mode: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    after: tuple[datetime, int] | None = None,
    through: tuple[datetime, int] | None = None,
) -> QuerySet:
    """Values of a characteristic as ``StreamRow`` tuples (unordered; callers order).

    The key is the unit for per-unit subgroups; for per-lot subgroups the unit's GS1
    batch/lot (AI 10) when it has one, else the serial of the first material lot or mix
    batch it consumed ('' when neither is recorded: such values form one run).
    """
    qs = Measurement.objects.filter(characteristic_id=characteristic_id)
    if start is not None:
        qs = qs.filter(measured_at__gte=start)
    if end is not None:
        qs = qs.filter(measured_at__lt=end)
    if after is not None:
        qs = qs.filter(_after(*after))
    if through is not None:
        qs = qs.filter(_through(*through))
    if mode == SubgroupMode.PER_UNIT:
        return qs.values_list("pk", "measured_at", "value", "unit_id", "unit_id")
    if mode == SubgroupMode.PER_LOT:
        consumed = (
            Link.objects.filter(
                target=OuterRef("unit_id"),
                kind=LinkKind.CONSUMED,
                removed_at__isnull=True,
                source__kind__in=[UnitKind.MATERIAL_LOT, UnitKind.MIX_BATCH],
            )
            .order_by("pk")
            .values("source__serial")[:1]
        )
        qs = qs.annotate(
            lot_key=Coalesce(NullIf(F("unit__batch_lot"), Value("")), Subquery(consumed), Value(""))
        )
        return qs.values_list("pk", "measured_at", "value", "unit_id", "lot_key")
    return qs.values_list("pk", "measured_at", "value", "unit_id")


def stream_rows(
    characteristic_id: int,
    mode: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    after: tuple[datetime, int] | None = None,
) -> Iterator[StreamRow]:
    """The stream in ``(measured_at, id)`` order, fetched in chunks (a server-side cursor on
    PostgreSQL)."""
    qs = stream_queryset(characteristic_id, mode, start=start, end=end, after=after)
    keyed = mode in (SubgroupMode.PER_UNIT, SubgroupMode.PER_LOT)
    for row in qs.order_by("measured_at", "pk").iterator(chunk_size=FETCH_SIZE):
        yield StreamRow(*row) if keyed else StreamRow(*row, None)


def stream_rows_before(
    characteristic_id: int,
    mode: str,
    *,
    start: datetime,
    through: tuple[datetime, int],
    count: int,
) -> list[StreamRow]:
    """The ``count`` rows of the stream up to and including ``through``, in stream order."""
    qs = stream_queryset(characteristic_id, mode, start=start, through=through)
    rows = list(qs.order_by("-measured_at", "-pk")[:count])
    rows.reverse()
    keyed = mode in (SubgroupMode.PER_UNIT, SubgroupMode.PER_LOT)
    return [StreamRow(*row) if keyed else StreamRow(*row, None) for row in rows]


def counts_check(rows: Sequence[StreamRow], *, field: str, first: int = 0) -> None:
    """Refuse the first value that is not a count of nonconformities (a whole number of 0
    or more) with :class:`InvalidInput` naming it as ``<field>[<position>].value``, the
    position counted from ``first``. A c chart plots counts only: a negative or fractional
    value there is a fault of its source, charted nowhere."""
    for offset, row in enumerate(rows):
        value = row.value
        if value >= 0 and float(value).is_integer():
            continue
        what = "negative" if value < 0 else "not a whole number"
        raise InvalidInput(
            f"Measurement {row.id} (measured {row.measured_at.isoformat()}) has the value "
            f"{value:g}, {what}: a c chart counts nonconformities in one inspection unit, "
            "whole numbers of 0 or more.",
            field=f"{field}[{first + offset}].value",
        )


def push_rows(monitor: Monitor, config: ChartConfig, rows: list[StreamRow]) -> engine.StreamResult:
    """Feed stream rows to a monitor with what its subgrouping needs (a c chart: the counts,
    checked by :func:`counts_check`)."""
    values = [row.value for row in rows]
    if config.chart_type == ChartType.I_MR:
        return monitor.push_many(values)
    if config.chart_type == ChartType.C:
        counts_check(rows, field="stream", first=monitor.state.points)
        return monitor.push_counts(values)
    if config.subgroup_mode == SubgroupMode.TIME_WINDOW:
        return monitor.push_many(values, timestamps=[row.measured_at for row in rows])
    if config.subgroup_mode in (SubgroupMode.PER_UNIT, SubgroupMode.PER_LOT):
        return monitor.push_many(values, keys=[row.key for row in rows])
    return monitor.push_many(values)


# ---------------------------------------------------------------------------- chart data


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _characteristic_brief(characteristic: Characteristic) -> dict[str, Any]:
    return {
        "id": characteristic.pk,
        "code": characteristic.code,
        "name": characteristic.name,
        "unit": characteristic.unit,
        "nominal": characteristic.nominal,
        "lsl": characteristic.lsl,
        "usl": characteristic.usl,
        "special_class": characteristic.special_class,
        "station": f"{characteristic.station.line.site.code}/"
        f"{characteristic.station.line.code}/{characteristic.station.code}",
    }


def limits_brief(limits: ControlLimits) -> dict[str, Any]:
    data = limits.engine_limits
    return {
        "id": limits.pk,
        "version": limits.version,
        "chart_type": limits.chart_type,
        "centre": limits.centre,
        "sigma": limits.sigma,
        "lcl": limits.lcl,
        "ucl": limits.ucl,
        "subgroup_size": limits.subgroup_size,
        "degenerate": limits.degenerate,
        "statistics": data["statistics"],
        "monitor_from": _iso(limits.monitor_from),
        "approved_at": _iso(limits.approved_at),
    }


def _window_start(
    characteristic: Characteristic, start: datetime | None, last: int | None
) -> datetime | None:
    """Where a chart of the last ``last`` values starts."""
    if last is None:
        return start
    at = (
        Measurement.objects.filter(characteristic=characteristic)
        .order_by("-measured_at", "-pk")
        .values_list("measured_at", flat=True)[last - 1 : last]
        .first()
    )
    return at if at is not None else start


def chart_data(
    *,
    characteristic: Characteristic,
    start: datetime | None = None,
    end: datetime | None = None,
    last: int | None = None,
) -> dict[str, Any]:
    """The plotted points of a characteristic's chart in ``[start, end)`` (or its last
    ``last`` values), with the limits in force and the alarms raised on those points.

    With approved limits the points are replayed from the checkpoint before ``start``, so
    their positions, subgroups, moving ranges and CUSUM/EWMA statistics are the ones the
    alarms were raised on. Each point: ``index`` (position on the chart), the
    ``measurement_ids`` behind it, its time span, ``values`` per statistic (``x``/``mr``,
    ``c``, or ``xbar``/``r``/``s``, ``cusum_up``, ``cusum_down``, ``ewma``) and, for
    subgroups, ``n`` and the limits for that size. Each alarm carries the ``first_index``
    and ``index`` of the points where it first and last fired. Without approved limits: the
    raw values (``x`` only).
    """
    if last is not None and not 1 <= last <= MAX_CHART_VALUES:
        raise InvalidInput(f"last must be within 1..{MAX_CHART_VALUES}.", field="last")
    if start is not None and end is not None and start >= end:
        raise InvalidInput("start must be before end.", field="end")
    config = chart_config_for(characteristic)
    limits = limits_in_force(characteristic, config)
    start = _window_start(characteristic, start, last)
    if limits is not None and start is not None and start < limits.monitor_from:
        start = limits.monitor_from
    count_qs = Measurement.objects.filter(characteristic=characteristic)
    if start is not None:
        count_qs = count_qs.filter(measured_at__gte=start)
    if limits is not None:
        count_qs = count_qs.filter(measured_at__gte=limits.monitor_from)
    if end is not None:
        count_qs = count_qs.filter(measured_at__lt=end)
    total = count_qs.count()
    if total > MAX_CHART_VALUES:
        raise InvalidInput(
            f"{total} values in the range; a chart shows at most {MAX_CHART_VALUES}: narrow "
            "the range or use last.",
            field="start",
        )
    out: dict[str, Any] = {
        "characteristic": _characteristic_brief(characteristic),
        "chart_type": config.chart_type,
        "start": _iso(start),
        "end": _iso(end),
        "limits": None,
        "points": [],
        "alarms": [],
    }
    if limits is None:
        rows = stream_rows(characteristic.pk, SubgroupMode.CONSECUTIVE, start=start, end=end)
        out["points"] = [
            {
                "index": i,
                "measurement_ids": [row.id],
                "unit_ids": [row.unit_id],
                "first_measured_at": _iso(row.measured_at),
                "last_measured_at": _iso(row.measured_at),
                "values": {"x": row.value},
            }
            for i, row in enumerate(rows)
        ]
        return out
    out["limits"] = limits_brief(limits)
    out["points"] = _replayed_points(characteristic, config, limits, start, end)
    alarms = SpcAlarm.objects.filter(limits=limits)
    if start is not None:
        alarms = alarms.filter(last_measured_at__gte=start)
    if end is not None:
        alarms = alarms.filter(last_measured_at__lt=end)
    # Placed by the values where each fired: a value that arrived late after an alarm was
    # raised moves the points after it on by one.
    where = {m: point["index"] for point in out["points"] for m in point["measurement_ids"]}
    out["alarms"] = [
        {
            "id": a.pk,
            "first_index": where.get(a.trigger_measurement_id),
            "index": where.get(a.last_measurement_id),
            "rule": a.rule,
            "rule_name": a.rule_name,
            "statistic": a.statistic,
            "severity": a.severity,
            "status": a.status,
            "last_measurement_id": a.last_measurement_id,
        }
        for a in alarms.order_by("last_measured_at", "id")
    ]
    return out


def _replayed_points(
    characteristic: Characteristic,
    config: ChartConfig,
    limits: ControlLimits,
    start: datetime | None,
    end: datetime | None,
) -> list[dict[str, Any]]:
    engine_limits = Limits.from_dict(limits.engine_limits)
    mconfig = monitor_config(config, engine_limits)
    checkpoint = None
    if start is not None:  # else the whole stream, from its first value
        checkpoint = (
            ChartCheckpoint.objects.filter(limits=limits, through_measured_at__lt=start)
            .order_by("-position")
            .first()
        )
    after = None
    position = 0
    monitor = Monitor(mconfig)
    if checkpoint is not None and checkpoint.state.get("config") == mconfig.to_dict():
        monitor = Monitor(mconfig, MonitorState.from_dict(checkpoint.state["state"]))
        after = (checkpoint.through_measured_at, checkpoint.through_measurement_id)
        position = checkpoint.position
    rows = list(
        stream_rows(
            characteristic.pk,
            config.subgroup_mode,
            start=limits.monitor_from,
            end=end,
            after=after,
        )
    )
    if not rows:
        return []
    first_shown = next(
        (i for i, row in enumerate(rows) if start is None or row.measured_at >= start), len(rows)
    )
    result = push_rows(monitor, config, rows)
    points: dict[int, dict[str, Any]] = {}
    if config.chart_type in (ChartType.I_MR, ChartType.C):
        for name, trace in result.series.items():
            for index, value in zip(trace.index.tolist(), trace.value.tolist(), strict=True):
                offset = index - position
                if offset < first_shown:
                    continue
                row = rows[offset]
                point = points.setdefault(
                    index,
                    {
                        "index": index,
                        "measurement_ids": [row.id],
                        "unit_ids": [row.unit_id],
                        "first_measured_at": _iso(row.measured_at),
                        "last_measured_at": _iso(row.measured_at),
                        "values": {},
                    },
                )
                point["values"][name] = value
        return [points[i] for i in sorted(points)]
    groups = {group.index: group for group in result.subgroups}
    dispersion = "r" if config.chart_type == ChartType.XBAR_R else "s"
    for name, trace in result.series.items():
        for index, value in zip(trace.index.tolist(), trace.value.tolist(), strict=True):
            group = groups[index]
            first, stop = group.start - position, group.stop - position
            if first < first_shown:
                continue  # begins before the chart (or before this replay)
            point = points.get(index)
            if point is None:
                members = rows[first:stop]
                size = len(members)
                sizes = np.array([size], dtype=np.float64)
                point_limits = {}
                for stat in ("xbar", dispersion):
                    mid, _, low, high = engine.point_limits(engine_limits, stat, sizes)
                    point_limits[stat] = {
                        "centre": float(mid[0]),
                        "lcl": float(low[0]),
                        "ucl": float(high[0]),
                    }
                point = points[index] = {
                    "index": index,
                    "n": size,
                    "label": group.label,
                    "measurement_ids": [row.id for row in members],
                    "unit_ids": sorted({row.unit_id for row in members}),
                    "first_measured_at": _iso(members[0].measured_at),
                    "last_measured_at": _iso(members[-1].measured_at),
                    "values": {},
                    "limits": point_limits,
                }
            point["values"][name] = value
    return [points[i] for i in sorted(points)]


# ---------------------------------------------------------------------------- the state


@lru_cache(maxsize=256)
def _detector_arl(kind: str, params: tuple[float, ...], shift: float) -> float:
    if kind == "cusum":
        spec: Any = CusumSpec(k=params[0], h=params[1], head_start=params[2])
    elif kind == "ewma":
        spec = EwmaSpec(lam=params[0], L=params[1])
    else:
        spec = ShewhartSpec(L=params[0])
    return engine.arl(spec, shift)


@lru_cache(maxsize=64)
def _stream_arl0(config_json: str, runs: int = 200, seed: int = 20261127) -> dict[str, Any]:
    """In-control ARL of a whole monitor configuration (rules on both charts and the
    detectors), by simulating standard normal values against known limits (mean 0,
    sigma 1)."""
    data = json.loads(config_json)
    rng = np.random.default_rng(seed)
    chunk, longest = 512, 20_000
    lengths = []
    censored = 0
    for _ in range(runs):
        monitor = Monitor(MonitorConfig.from_dict(data))
        first = None
        pushed = 0
        while first is None and pushed < longest:
            result = monitor.push_many(rng.standard_normal(chunk))
            pushed += chunk
            if result.signals:
                first = min(s.index for s in result.signals)
        if first is None:
            censored += 1
            first = longest
        lengths.append(first + 1)
    array = np.array(lengths, dtype=np.float64)
    return {
        "value": float(array.mean()),
        "standard_error": float(array.std(ddof=1) / math.sqrt(runs)),
        "runs": runs,
        "censored": censored,
        "method": "simulation",
    }


@lru_cache(maxsize=64)
def _count_stream_arl0(config_json: str, runs: int = 200, seed: int = 20261127) -> dict[str, Any]:
    """In-control ARL of a whole c chart configuration (its rules on the counts), by
    simulating Poisson counts at the limits' c-bar."""
    data = json.loads(config_json)
    centre = float(data["limits"]["centre"])
    rng = np.random.default_rng(seed)
    chunk, longest = 512, 20_000
    lengths = []
    censored = 0
    for _ in range(runs):
        monitor = Monitor(MonitorConfig.from_dict(data))
        first = None
        pushed = 0
        while first is None and pushed < longest:
            result = monitor.push_counts(rng.poisson(centre, chunk))
            pushed += chunk
            if result.signals:
                first = min(s.index for s in result.signals)
        if first is None:
            censored += 1
            first = longest
        lengths.append(first + 1)
    array = np.array(lengths, dtype=np.float64)
    return {
        "value": float(array.mean()),
        "standard_error": float(array.std(ddof=1) / math.sqrt(runs)),
        "runs": runs,
        "censored": censored,
        "method": "simulation (Poisson counts)",
    }


def count_chart_arl(centre: float, lcl: float, ucl: float, shift_sigma: float) -> float:
    """Exact ARL of rule 1 on a c chart when the counts are Poisson with mean c-bar + shift
    sqrt(c-bar): 1 / P(count > UCL or count < LCL); infinite when no count can signal."""
    mean = max(centre + shift_sigma * math.sqrt(centre), 0.0)
    above = float(stats.poisson.sf(math.floor(ucl), mean))  # P(count >= floor(UCL) + 1)
    below = float(stats.poisson.cdf(math.ceil(lcl) - 1, mean)) if lcl > 0 else 0.0
    chance = above + below
    return math.inf if chance <= 0.0 else 1.0 / chance


def _count_arls(config: ChartConfig, limits: ControlLimits | None) -> dict[str, Any]:
    """:func:`detector_arls` of a c chart: no CUSUM or EWMA; rule 1 exact for Poisson
    counts at the limits in force (none without limits), shifts in sqrt(c-bar); the whole
    configuration in control by simulation of Poisson counts."""
    out: dict[str, Any] = {
        "shifts_sigma": list(ARL_SHIFTS),
        "cusum": None,
        "ewma": None,
        "shewhart_rule_1": None,
        "default_cusum": False,
        "whole_chart_arl0": None,
    }
    if limits is None or limits.degenerate:
        return out
    engine_limits = Limits.from_dict(limits.engine_limits)
    main = engine_limits.statistic("c")
    out["shewhart_rule_1"] = {
        "L": engine_limits.sigma_multiple,
        "method": "poisson",
        "centre": engine_limits.centre,
        "lcl": main.lcl,
        "ucl": main.ucl,
        "arl": [count_chart_arl(engine_limits.centre, main.lcl, main.ucl, s) for s in ARL_SHIFTS],
    }
    simulated = MonitorConfig(limits=engine_limits, rules=ruleset_for(config), cusum=None)
    out["whole_chart_arl0"] = _count_stream_arl0(json.dumps(simulated.to_dict(), sort_keys=True))
    return out


def detector_arls(
    config: ChartConfig, sigma_multiple: float = 3.0, *, limits: ControlLimits | None = None
) -> dict[str, Any]:
    """ARLs of the configured detectors (Markov chain; Shewhart exact) at the shifts of
    :data:`ARL_SHIFTS`, in sigma of the plotted statistic; and, for I-MR and consecutive
    subgroups, the in-control ARL of the whole configuration by simulation: how often it
    signals somewhere when nothing changed. A c chart's figures depend on its c-bar: they
    come from the ``limits`` in force (Poisson counts; none without limits)."""
    if config.chart_type == ChartType.C:
        return _count_arls(config, limits)
    out: dict[str, Any] = {"shifts_sigma": list(ARL_SHIFTS)}
    cusum = cusum_for(config)
    ewma = ewma_for(config)
    out["cusum"] = (
        None
        if cusum is None
        else {
            "k": cusum.k,
            "h": cusum.h,
            "head_start": cusum.head_start,
            "arl": [
                _detector_arl("cusum", (cusum.k, cusum.h, cusum.head_start), s) for s in ARL_SHIFTS
            ],
        }
    )
    out["ewma"] = (
        None
        if ewma is None
        else {
            "lambda": ewma.lam,
            "L": ewma.L,
            "arl": [_detector_arl("ewma", (ewma.lam, ewma.L), s) for s in ARL_SHIFTS],
        }
    )
    out["shewhart_rule_1"] = {
        "L": sigma_multiple,
        "arl": [_detector_arl("shewhart", (sigma_multiple,), s) for s in ARL_SHIFTS],
    }
    out["default_cusum"] = cusum is not None and cusum == DEFAULT_CUSUM
    out["whole_chart_arl0"] = None
    if config.chart_type == ChartType.I_MR or config.subgroup_mode == SubgroupMode.CONSECUTIVE:
        n = 1 if config.chart_type == ChartType.I_MR else config.subgroup_size
        standard = engine.standard_limits(config.chart_type, centre=0.0, sigma=1.0, n=n)
        simulated = MonitorConfig(
            limits=standard,
            rules=ruleset_for(config),
            cusum=cusum,
            ewma=ewma,
            subgrouping=subgrouping_for(config),
        )
        out["whole_chart_arl0"] = _stream_arl0(json.dumps(simulated.to_dict(), sort_keys=True))
    return out


#: Why a c chart has no capability study.
COUNTS_CAPABILITY = (
    "capability indices (Cp, Cpk, Pp, Ppk) compare measured values with specification "
    "limits; a c chart counts nonconformities per inspection unit: c-bar (the mean count "
    "per unit) and the chart's alarms say how the process does"
)


def capability_study(
    characteristic: Characteristic,
    values: list[float],
    limits: ControlLimits | None,
    *,
    chart_type: str | None = None,
) -> dict[str, Any]:
    """Capability of these values (oldest first) against the characteristic's specification,
    with the within sigma of the limits in force when there are any. Counts charted on a c
    chart (``chart_type``) have none: ``not_applicable``, with the reason."""
    if chart_type == ChartType.C:
        return {"status": "not_applicable", "n": len(values), "reason": COUNTS_CAPABILITY}
    if len(values) < 2:
        return {"status": "insufficient_data", "n": len(values), "reason": "fewer than 2 values"}
    sigma = limits.sigma if limits is not None and limits.sigma > 0 else None
    try:
        study = engine.capability(
            values,
            lsl=characteristic.lsl,
            usl=characteristic.usl,
            target=characteristic.nominal,
            sigma_within=sigma,
            sigma_within_method=None if sigma is None else "control limits",
        )
    except ValueError as exc:  # a nominal outside the specification, for instance
        return {"status": "refused", "n": len(values), "reason": str(exc)}
    return study.to_dict()


def state_decide(
    config: ChartConfig,
    limits: ControlLimits | None,
    recent_in_spec: Sequence[bool],
    *,
    open_alarms: int,
) -> str:
    """The state of a characteristic from its latest values' ``in_spec`` (newest first), its
    open alarms and the limits in force (see :func:`characteristic_state`)."""
    minimum = (
        MIN_BASELINE_VALUES
        if config.chart_type in (ChartType.I_MR, ChartType.C)
        else MIN_BASELINE_SUBGROUPS * max(config.subgroup_size, 2)
    )
    if not all(recent_in_spec[:STATE_WINDOW]):
        return "out_of_spec"
    if open_alarms:
        return "alarm"
    if limits is not None:
        return "in_control"
    if len(recent_in_spec) < minimum:
        return "insufficient_data"
    return "no_limits"


def characteristic_state(characteristic: Characteristic) -> dict[str, Any]:
    """Where a characteristic stands, for the SPC overview and its page.

    ``state`` is the first that holds of: ``out_of_spec`` (one of the last
    :data:`STATE_WINDOW` values is outside LSL/USL), ``alarm`` (an open SPC alarm),
    ``in_control`` (approved limits, no open alarm), ``insufficient_data`` (too few values to
    propose limits), ``no_limits``. With it: the limits in force, the open alarms, a
    capability summary of the last :data:`CAPABILITY_WINDOW` values (within sigma from the
    limits when approved; ``not_applicable`` for counts on a c chart) and the ARLs of the
    configured detectors.
    """
    config = chart_config_for(characteristic)
    limits = limits_in_force(characteristic, config)
    recent = list(
        Measurement.objects.filter(characteristic=characteristic)
        .order_by("-measured_at", "-pk")
        .values_list("value", "in_spec", "measured_at")[:CAPABILITY_WINDOW]
    )
    open_alarms = SpcAlarm.objects.filter(
        characteristic=characteristic, status=AlarmStatus.OPEN
    ).count()
    state = state_decide(
        config, limits, [in_spec for _, in_spec, _ in recent], open_alarms=open_alarms
    )
    values = [value for value, _, _ in reversed(recent)]
    sigma_multiple = (
        float(limits.engine_limits.get("sigma_multiple", 3.0)) if limits is not None else 3.0
    )
    return {
        "characteristic": _characteristic_brief(characteristic),
        "state": state,
        "chart_type": config.chart_type,
        "enabled": config.enabled,
        "limits": None if limits is None else limits_brief(limits),
        "open_alarms": open_alarms,
        "last_measured_at": _iso(recent[0][2]) if recent else None,
        "capability": capability_study(
            characteristic, values, limits, chart_type=config.chart_type
        ),
        "arl": detector_arls(config, sigma_multiple, limits=limits),
    }


def characteristics_with_limits(ids: Iterable[int]) -> set[int]:
    """Of these characteristics, those with enabled evaluation and approved limits."""
    return set(
        ControlLimits.objects.filter(characteristic_id__in=list(ids), status=LimitsStatus.APPROVED)
        .exclude(characteristic__chart_config__enabled=False)
        .values_list("characteristic_id", flat=True)
    )


# --- the plant overview ------------------------------------------------------------------------

#: Characteristics per query when reading the overview's latest values.
OVERVIEW_CHUNK = 200


def overview_characteristics() -> list[Characteristic]:
    """The active characteristics with their station, line, site and chart configuration,
    and per characteristic (annotations): ``last_measured_at``, ``window_from`` (the time of
    the :data:`spc.CAPABILITY_WINDOW`-th latest value, empty when there are fewer)
    and ``open_alarm_count``. One query; each annotation reads the index on
    (characteristic, measured_at) or the alarms of one characteristic."""
    latest = Measurement.objects.filter(characteristic=OuterRef("pk")).order_by(
        "-measured_at", "-pk"
    )
    window = CAPABILITY_WINDOW
    open_alarms = (
        SpcAlarm.objects.filter(characteristic=OuterRef("pk"), status=AlarmStatus.OPEN)
        .order_by()
        .values("characteristic")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return list(
        Characteristic.objects.filter(is_active=True)
        .select_related("station__line__site", "chart_config")
        .annotate(
            last_measured_at=Subquery(latest.values("measured_at")[:1]),
            window_from=Subquery(latest.values("measured_at")[window - 1 : window]),
            open_alarm_count=Coalesce(Subquery(open_alarms, output_field=IntegerField()), Value(0)),
        )
        .order_by("station__line__site__code", "station__line__code", "station__sequence", "code")
    )


def overview_recent_values(
    characteristics: list[Characteristic],
) -> dict[int, list[tuple[float, bool]]]:
    """The latest :data:`spc.CAPABILITY_WINDOW` values of each characteristic as
    ``(value, in_spec)``, newest first (the order of
    :func:`characteristic_state`): one query per
    :data:`OVERVIEW_CHUNK` characteristics, each bounded below by its
    ``window_from`` so only the window is read (values tied at that time are cut here)."""
    out: dict[int, list[tuple[float, bool]]] = {c.pk: [] for c in characteristics}
    for i in range(0, len(characteristics), OVERVIEW_CHUNK):
        chunk = characteristics[i : i + OVERVIEW_CHUNK]
        whole = [c.pk for c in chunk if c.last_measured_at is not None and c.window_from is None]
        where = Q(characteristic_id__in=whole) if whole else Q()
        for c in chunk:
            if c.window_from is not None:
                where |= Q(characteristic_id=c.pk, measured_at__gte=c.window_from)
        if not where:
            continue
        found = (
            Measurement.objects.filter(where)
            .order_by("characteristic_id", "-measured_at", "-pk")
            .values_list("characteristic_id", "value", "in_spec")
        )
        for cid, value, in_spec in found:
            values = out[cid]
            if len(values) < CAPABILITY_WINDOW:
                values.append((value, in_spec))
    return out
