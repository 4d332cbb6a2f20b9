"""Web pages of compliance: the trace page.

The trace page answers "what is this unit made of, where did it go, what happened to it,
and what is on hold?" for any scanned serial. It lives in compliance because it shows open
holds (genealogy must not import compliance). The view reads through
``genealogy.queries`` (look-up, trace both ways, timeline) and ``compliance.queries``
(open holds, the station interlock); this module only shapes those answers for the
template: trees with a row budget, counts per kind, formatted limits.

The page is read-only for everyone today. ``can_act`` (false for auditors, who hold view
permissions only) is in the context so that any action added later is offered only to
those who may take it.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET

from genealogy import queries as genealogy_queries
from genealogy.choices import LinkKind, UnitKind, UnitStatus
from genealogy.models import Unit
from qms import queries as qms_queries
from qms.exceptions import DomainError, NotFound
from qms.models import Station

from . import queries
from .forms import TraceForm
from .models import Hold

#: Children of one kind shown under one parent before "... and N more".
TREE_PER_KIND = 12
#: Rows of one tree at most; a VIN's upstream of ~450 cells stays readable.
TREE_ROW_BUDGET = 400
#: Cells whose own upstream (coil segments, lots) or downstream is drawn; later cells get
#: one row each (the "Coil segments used" table still covers all of them).
TREE_CELLS_IN_DETAIL = 12
#: Above this many downstream units the tree gives way to counts and the first units of
#: each kind (a material lot feeding 50,000 cells), with the recall-scope CSV for the rest.
DOWNSTREAM_TREE_MAX_UNITS = 300
FIRST_N_PER_KIND = 25
#: Assemblies (pack, modules) whose station visits join the root's timeline.
TIMELINE_MAX_UNITS = 12
#: Measurements shown per station visit; the rest (in spec) are summarised.
TIMELINE_MAX_MEASUREMENTS = 20
#: Unit ids per open-hold query (keeps clear of bind-parameter limits).
HOLD_QUERY_CHUNK = 5000
#: Units of a trace listed per hold.
HOLD_UNITS_SHOWN = 6


KIND_ORDER = [str(k) for k in genealogy_queries.KIND_ORDER]

KIND_LABELS = {
    UnitKind.MATERIAL_LOT: ("Material lot", "material lots"),
    UnitKind.MIX_BATCH: ("Mix batch", "mix batches"),
    UnitKind.COIL: ("Coil", "coils"),
    UnitKind.SLIT_COIL: ("Slit coil", "slit coils"),
    UnitKind.CELL: ("Cell", "cells"),
    UnitKind.MODULE: ("Module", "modules"),
    UnitKind.PACK: ("Pack", "packs"),
    UnitKind.VEHICLE: ("Vehicle", "vehicles"),
}
STATUS_LABELS = dict(UnitStatus.choices)
ASSEMBLY_KINDS = (UnitKind.VEHICLE, UnitKind.PACK, UnitKind.MODULE)
INTERLOCK_KINDS = (UnitKind.CELL, UnitKind.MODULE, UnitKind.PACK)
LOT_KINDS = (UnitKind.MIX_BATCH, UnitKind.MATERIAL_LOT)
METRED = (UnitKind.COIL, UnitKind.SLIT_COIL)


def kind_label(kind: str, count: int = 1) -> str:
    singular, plural = KIND_LABELS.get(kind, (kind.replace("_", " "), kind + "s"))
    return singular if count == 1 else plural


def metres(value: float) -> str:
    """Metres to 1 mm, at least one decimal: ``1204.0``, ``1204.875``."""
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def metre_range(lo: float, hi: float) -> str:
    return f"[{metres(lo)}, {metres(hi)}) m"


def number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def trace_url(serial: str) -> str:
    return reverse("compliance:trace") + "?" + urlencode({"serial": serial})


# --- shapes for the template ------------------------------------------------------------------


@dataclass
class TreeLine:
    """One row of a rendered tree: a unit reached through one link, or a "more" note."""

    depth: int
    kind: str
    kind_label: str
    serial: str = ""
    url: str = ""
    status: str = ""
    status_label: str = ""
    segment: str = ""
    segment_role: str = ""  # "of" (upstream: metres of this coil), "uses", "cut from"
    mother: str = ""
    slot: str = ""
    meta: str = ""
    seen: bool = False
    collapsed: bool = False
    more: int = 0
    also: list[tuple[str, str]] = field(default_factory=list)  # repeated lots, folded in


@dataclass
class KindCount:
    kind: str
    count: int
    label: str


@dataclass
class KindSample:
    """The first units of one kind in a large answer."""

    kind: str
    label: str
    count: int
    rows: list
    hidden: int


@dataclass
class TreeView:
    direction: str
    counts: list[KindCount]
    total: int
    lines: list[TreeLine] = field(default_factory=list)
    truncated: bool = False
    samples: list[KindSample] = field(default_factory=list)


@dataclass
class SegmentRow:
    kind_label: str
    serial: str
    url: str
    ranges: list[str]
    hidden: int
    used_m: str


@dataclass
class MaterialRow:
    kind_label: str
    serial: str
    url: str
    material: str
    supplier: str
    status: str
    status_label: str


@dataclass
class MeasurementLine:
    name: str
    code: str
    special_class: str
    value: str
    unit: str
    lsl: str
    nominal: str
    usl: str
    position: str
    measured_at: datetime
    in_spec: bool


@dataclass
class HiddenSummary:
    name: str
    count: int
    low: str
    high: str
    unit: str


@dataclass
class TimelineRow:
    """A station visit (or the measurements taken at a station without one), of the root
    or of one of the assemblies built into it."""

    unit_kind_label: str
    unit_serial: str
    unit_url: str
    is_root: bool
    station: Station
    equipment: object
    started_at: datetime
    ended_at: datetime | None
    result: str
    program: str
    operator: str
    out_of_spec: int
    measurements: list[MeasurementLine]
    hidden: list[HiddenSummary]


@dataclass
class HoldRow:
    hold: Hold
    units: list[tuple[str, str, str]]  # (kind label, serial, url) within this trace
    more_units: int


@dataclass
class TraceResult:
    unit: Unit
    kind_label: str
    status_label: str
    upstream: TreeView
    downstream: TreeView
    segments: list[SegmentRow]
    materials: list[MaterialRow]
    timeline: list[TimelineRow]
    timeline_units: int
    holds: list[HoldRow]
    held_units: int
    interlock: queries.InterlockAnswer | None
    recall_csv_url: str


# --- building the answer ----------------------------------------------------------------------


def _sort_key(kind: str, slot: str, serial: str, start_m: float | None):
    order = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    return (order, slot, serial, start_m if start_m is not None else -1.0)


def _kind_counts(nodes: Iterable, root_id: int, *, reverse: bool) -> tuple[list[KindCount], int]:
    counts = Counter(n.kind for n in nodes if n.unit_id != root_id)
    order = list(reversed(KIND_ORDER)) if reverse else KIND_ORDER
    out = [
        KindCount(k, counts[k], kind_label(k, counts[k]).lower()) for k in order if counts.get(k)
    ]
    return out, sum(counts.values())


def _tree_lines(
    trace: genealogy_queries.Trace, details: dict[int, tuple[str, str]]
) -> tuple[list[TreeLine], bool]:
    """Flatten the trace graph into indented rows, depth-first from the root.

    The graph is a DAG (one slit coil feeds many cells of a pack): a unit's own upstream or
    downstream is expanded once, later occurrences show the link (its metres, its slot) and
    point up; a repeated lot with nothing of its own to show (no metres, no slot) is folded
    into its parent's row. Each parent lists at most ``TREE_PER_KIND`` children per kind,
    only the first ``TREE_CELLS_IN_DETAIL`` cells are expanded, and the whole tree has at
    most ``TREE_ROW_BUDGET`` rows.
    """
    backward = trace.direction == genealogy_queries.BACKWARD
    nodes = {n.unit_id: n for n in trace.nodes}
    children: dict[int, list] = defaultdict(list)
    slit_from: dict[int, list] = defaultdict(list)  # slit coil id -> its slit links
    for e in trace.edges:
        if e.kind == LinkKind.SLIT:
            slit_from[e.target_id].append(e)
        parent, child = (e.target_id, e.source_id) if backward else (e.source_id, e.target_id)
        if parent in nodes and child in nodes:
            children[parent].append((e, child))
    for kids in children.values():
        kids.sort(
            key=lambda ec: _sort_key(
                nodes[ec[1]].kind, ec[0].slot, nodes[ec[1]].serial, ec[0].start_m
            )
        )

    lines: list[TreeLine] = []
    expanded: set[int] = set()
    truncated = False
    cells_left = TREE_CELLS_IN_DETAIL

    def line_for(uid: int, edge, depth: int, repeat: bool, seen: bool) -> TreeLine:
        n = nodes[uid]
        line = TreeLine(
            depth=depth,
            kind=n.kind,
            kind_label=kind_label(n.kind),
            serial=n.serial,
            url=trace_url(n.serial),
            status=n.status,
            status_label=STATUS_LABELS.get(n.status, n.status),
            seen=seen,
        )
        if not repeat:
            material, supplier = details.get(uid, ("", ""))
            line.meta = " · ".join(x for x in (material, supplier) if x)
        if edge is None:
            return line
        line.slot = edge.slot
        if edge.start_m is not None:
            line.segment = metre_range(edge.start_m, edge.end_m)
            if backward:
                line.segment_role = "of"
                slits = slit_from.get(uid, [])
                if (
                    edge.kind == LinkKind.CONSUMED
                    and len(slits) == 1
                    and slits[0].source_id in nodes
                ):
                    s = slits[0]
                    line.mother = (
                        f"= {metre_range(s.start_m + edge.start_m, s.start_m + edge.end_m)} of "
                        f"mother coil {nodes[s.source_id].serial}"
                    )
            else:
                line.segment_role = "cut from" if edge.kind == LinkKind.SLIT else "uses"
        return line

    def visit(uid: int, edge, depth: int) -> None:
        nonlocal truncated, cells_left
        if len(lines) >= TREE_ROW_BUDGET:
            truncated = True
            return
        kids = children.get(uid, [])
        repeat = uid in expanded
        line = line_for(uid, edge, depth, repeat, seen=repeat and bool(kids))
        lines.append(line)
        if repeat:
            return
        expanded.add(uid)
        if kids and nodes[uid].kind == UnitKind.CELL and depth > 0:
            if cells_left <= 0:
                line.collapsed = True
                truncated = True
                return
            cells_left -= 1
        for kind, group in itertools.groupby(kids, key=lambda ec: nodes[ec[1]].kind):
            group = list(group)
            for e, child in group[:TREE_PER_KIND]:
                if (
                    child in expanded
                    and not children.get(child)
                    and e.start_m is None
                    and not e.slot
                ):
                    line.also.append((nodes[child].serial, trace_url(nodes[child].serial)))
                    continue
                visit(child, e, depth + 1)
            if len(group) > TREE_PER_KIND:
                truncated = True
                lines.append(
                    TreeLine(
                        depth=depth + 1,
                        kind=kind,
                        kind_label=kind_label(kind, 2),
                        more=len(group) - TREE_PER_KIND,
                    )
                )

    if trace.root is not None and trace.root.pk in nodes:
        visit(trace.root.pk, None, 0)
    return lines, truncated


def _samples(nodes: list, root_id: int, counts: list[KindCount]) -> list[KindSample]:
    """The first units of each kind (by serial) of a large answer."""
    by_kind: dict[str, list] = defaultdict(list)
    for n in nodes:
        if n.unit_id != root_id:
            by_kind[n.kind].append(n)
    out = []
    for c in counts:
        first = heapq.nsmallest(FIRST_N_PER_KIND, by_kind[c.kind], key=lambda n: n.serial)
        rows = [
            (n.serial, trace_url(n.serial), n.status, STATUS_LABELS.get(n.status, n.status))
            for n in first
        ]
        label = kind_label(c.kind, c.count)
        label = label[0].upper() + label[1:]
        out.append(KindSample(c.kind, label, c.count, rows, c.count - len(rows)))
    return out


def _tree_view(trace: genealogy_queries.Trace, details) -> TreeView:
    forward = trace.direction == genealogy_queries.FORWARD
    counts, total = _kind_counts(trace.nodes, trace.root.pk, reverse=forward)
    view = TreeView(direction=trace.direction, counts=counts, total=total)
    view.lines, view.truncated = _tree_lines(trace, details)
    return view


def _downstream(unit: Unit, details_for) -> tuple[TreeView, list]:
    """The downstream view and the units it covers.

    The units come first from the streaming trace (no link rows): a material lot feeding
    50,000 cells is answered with counts and the first units of each kind, without
    fetching its 100,000 links. Smaller answers are traced again with their links and
    drawn as a tree.
    """
    nodes = list(genealogy_queries.iter_trace_forward(unit))
    counts, total = _kind_counts(nodes, unit.pk, reverse=True)
    if total > DOWNSTREAM_TREE_MAX_UNITS:
        view = TreeView(direction=genealogy_queries.FORWARD, counts=counts, total=total)
        view.samples = _samples(nodes, unit.pk, counts)
        view.truncated = True
        return view, nodes
    forward = genealogy_queries.trace_forward(unit)
    return _tree_view(forward, details_for(forward.nodes)), forward.nodes


def _segments(trace: genealogy_queries.Trace) -> list[SegmentRow]:
    """The exact metres of every coil and slit coil the root was made from."""
    out = []
    for n in trace.nodes:
        if n.kind not in METRED or n.unit_id == trace.root.pk:
            continue
        intervals = trace.segments.get(n.unit_id)
        if intervals is None and n.start_m is not None:
            intervals = [(n.start_m, n.end_m)]
        if not intervals:
            ranges, hidden, used = ["whole coil"], 0, ""
        else:
            ranges = [metre_range(lo, hi) for lo, hi in intervals[:8]]
            hidden = max(0, len(intervals) - 8)
            used = metres(sum(hi - lo for lo, hi in intervals))
        out.append(
            SegmentRow(kind_label(n.kind), n.serial, trace_url(n.serial), ranges, hidden, used)
        )
    out.sort(key=lambda r: (r.kind_label != "Slit coil", r.serial))
    return out


def _materials(trace, details) -> list[MaterialRow]:
    rows = [
        MaterialRow(
            kind_label(n.kind),
            n.serial,
            trace_url(n.serial),
            *details.get(n.unit_id, ("", "")),
            n.status,
            STATUS_LABELS.get(n.status, n.status),
        )
        for n in trace.nodes
        if n.kind in LOT_KINDS and n.unit_id != trace.root.pk
    ]
    rows.sort(key=lambda r: (r.kind_label, r.serial))
    return rows


def _measurement_lines(ms: list) -> tuple[list[MeasurementLine], list[HiddenSummary]]:
    """All out-of-spec values, then in-spec ones up to the cap; the rest summarised."""
    if len(ms) > TIMELINE_MAX_MEASUREMENTS:
        bad = [m for m in ms if not m.in_spec]
        room = max(0, TIMELINE_MAX_MEASUREMENTS - len(bad))
        good = [m for m in ms if m.in_spec]
        shown_ids = {m.measurement_id for m in bad} | {m.measurement_id for m in good[:room]}
        shown = [m for m in ms if m.measurement_id in shown_ids]
        rest = good[room:]
    else:
        shown, rest = ms, []
    lines = [
        MeasurementLine(
            name=m.name,
            code=m.code,
            special_class=m.special_class if m.special_class in ("cc", "sc") else "",
            value=number(m.value),
            unit=m.unit,
            lsl=number(m.lsl),
            nominal=number(m.nominal),
            usl=number(m.usl),
            position=metres(m.position_m) + " m" if m.position_m is not None else "",
            measured_at=m.measured_at,
            in_spec=m.in_spec,
        )
        for m in shown
    ]
    hidden: dict[str, list] = defaultdict(list)
    for m in rest:
        hidden[m.name].append(m)
    summary = [
        HiddenSummary(
            name,
            len(vals),
            number(min(v.value for v in vals)),
            number(max(v.value for v in vals)),
            vals[0].unit,
        )
        for name, vals in hidden.items()
    ]
    return lines, summary


def _timeline(root: Unit, backward: genealogy_queries.Trace) -> tuple[list[TimelineRow], int]:
    """Station visits of the root and of the assemblies built into it (a VIN's pack and
    modules), oldest first. Cells of an assembly keep their timeline on their own page."""
    units: list[tuple[int, str, str]] = [(root.pk, root.kind, root.serial)]
    if root.kind in ASSEMBLY_KINDS:
        inner = sorted(
            (n for n in backward.nodes if n.kind in ASSEMBLY_KINDS and n.unit_id != root.pk),
            key=lambda n: (KIND_ORDER.index(n.kind), n.serial),
        )
        units += [(n.unit_id, n.kind, n.serial) for n in inner[: TIMELINE_MAX_UNITS - 1]]
    rows: list[TimelineRow] = []
    for unit_id, kind, serial in units:
        # The timeline selector filters by the unit's key; trace rows carry it, so no
        # instance is loaded for the assemblies.
        unit = root if unit_id == root.pk else Unit(pk=unit_id, kind=kind, serial=serial)
        for entry in genealogy_queries.unit_timeline(unit):
            lines, hidden = _measurement_lines(entry.measurements)
            rows.append(
                TimelineRow(
                    unit_kind_label=kind_label(kind),
                    unit_serial=serial,
                    unit_url=trace_url(serial),
                    is_root=unit_id == root.pk,
                    station=entry.station,
                    equipment=entry.equipment,
                    started_at=entry.started_at,
                    ended_at=entry.ended_at,
                    result=entry.result,
                    program=entry.program,
                    operator=entry.operator,
                    out_of_spec=entry.out_of_spec,
                    measurements=lines,
                    hidden=hidden,
                )
            )
    rows.sort(key=lambda r: r.started_at)
    return rows, len(units)


def _holds(root: Unit, node_lists: list[list]) -> tuple[list[HoldRow], int]:
    """Open holds on the root and on every unit of its trace, with the held units."""
    serial_of: dict[int, tuple[str, str]] = {root.pk: (root.kind, root.serial)}
    for nodes in node_lists:
        for n in nodes:
            serial_of.setdefault(n.unit_id, (n.kind, n.serial))
    ids = list(serial_of)
    per_unit: dict[int, list[Hold]] = {}
    for i in range(0, len(ids), HOLD_QUERY_CHUNK):
        per_unit.update(queries.holds_open_for_units(ids[i : i + HOLD_QUERY_CHUNK]))
    holds: dict[int, Hold] = {}
    held: dict[int, list[int]] = defaultdict(list)
    for unit_id, unit_holds in per_unit.items():
        for h in unit_holds:
            holds.setdefault(h.pk, h)
            held[h.pk].append(unit_id)
    rows = []
    for hold in sorted(holds.values(), key=lambda h: (h.placed_at, h.pk), reverse=True):
        members = sorted(
            held[hold.pk],
            key=lambda uid: (
                uid != root.pk,
                _sort_key(serial_of[uid][0], "", serial_of[uid][1], None),
            ),
        )
        units = [
            (kind_label(serial_of[u][0]), serial_of[u][1], trace_url(serial_of[u][1]))
            for u in members[:HOLD_UNITS_SHOWN]
        ]
        rows.append(HoldRow(hold, units, max(0, len(members) - HOLD_UNITS_SHOWN)))
    return rows, len(per_unit)


def _interlock_station(unit: Unit, timeline: list[TimelineRow]) -> Station | None:
    """Where a cell, module or pack goes next on its line: the station after its last
    visit, or the line's first station when it has not visited one yet. Coils and lots
    branch into parallel electrode streams, so "next" is not defined for them."""
    if unit.line_id is None or unit.kind not in INTERLOCK_KINDS:
        return None
    stations = list(qms_queries.station_list(line_id=unit.line_id))
    if not stations:
        return None
    own = [r for r in timeline if r.is_root and r.station.line_id == unit.line_id]
    if not own:
        return stations[0]
    last = own[-1].station
    later = [s for s in stations if s.sequence > last.sequence]
    return later[0] if later else last


def trace_result(serial: str) -> TraceResult:
    """Everything the trace page shows for one scanned serial.

    Raises :class:`NotFound` for an unknown serial and ``InvalidInput`` for a malformed
    GS1 string (both name what was scanned).
    """
    unit = genealogy_queries.unit_find(serial)
    if unit is None:
        raise NotFound(f"No unit with serial {serial!r} is known.", field="serial")
    backward = genealogy_queries.trace_backward(unit)
    details = genealogy_queries.unit_materials(
        n.unit_id for n in backward.nodes if n.kind in LOT_KINDS
    )

    def details_for(nodes: list) -> dict[int, tuple[str, str]]:
        ids = [n.unit_id for n in nodes if n.kind in LOT_KINDS and n.unit_id not in details]
        return {**details, **genealogy_queries.unit_materials(ids)}

    downstream, downstream_nodes = _downstream(unit, details_for)
    timeline, timeline_units = _timeline(unit, backward)
    holds, held_units = _holds(unit, [backward.nodes, downstream_nodes])
    station = _interlock_station(unit, timeline)
    interlock = queries.interlock_check(unit=unit, station=station) if station else None
    return TraceResult(
        unit=unit,
        kind_label=kind_label(unit.kind),
        status_label=STATUS_LABELS.get(unit.status, unit.status),
        upstream=_tree_view(backward, details),
        downstream=downstream,
        segments=_segments(backward),
        materials=_materials(backward, details),
        timeline=timeline,
        timeline_units=timeline_units,
        holds=holds,
        held_units=held_units,
        interlock=interlock,
        recall_csv_url=reverse("recall-scope")
        + "?"
        + urlencode({"serial": unit.serial, "format": "csv"}),
    )


# --- the view ---------------------------------------------------------------------------------


def _wants_partial(request: HttpRequest) -> bool:
    """An htmx request aimed at the result panel gets the panel only; a history restore
    or a plain request gets the whole page."""
    h = request.headers
    return (
        h.get("HX-Request") == "true"
        and h.get("HX-Target") == "trace-result"
        and h.get("HX-History-Restore-Request") != "true"
    )


@login_required
@require_GET
def trace(request: HttpRequest) -> HttpResponse:
    """Scan or type any serial (or a GS1 DataMatrix string) and see its digital thread.

    ``GET /trace/?serial=...`` works without JavaScript; htmx swaps only the result panel.
    Unknown serial: 404, malformed GS1 string: 400, each with a message naming it.
    """
    form = TraceForm(request.GET if "serial" in request.GET else None)
    result: TraceResult | None = None
    error: DomainError | None = None
    status = 200
    if form.is_bound:
        if form.is_valid():
            try:
                result = trace_result(form.cleaned_data["serial"])
            except DomainError as exc:
                error, status = exc, exc.http_status
        else:
            status = 400
    context = {
        "nav": "trace",
        "form": form,
        "result": result,
        "error": error,
        "can_act": request.user.has_perm("compliance.add_hold"),
        "tree_per_kind": TREE_PER_KIND,
        "cells_in_detail": TREE_CELLS_IN_DETAIL,
        "first_n": FIRST_N_PER_KIND,
    }
    partial = _wants_partial(request)
    context["partial"] = partial
    template = "compliance/partials/trace_result.html" if partial else "compliance/trace.html"
    response = render(request, template, context, status=status)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response
