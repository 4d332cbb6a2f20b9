"""Read-side selectors for the digital thread: unit look-up, trace, recall scope, timeline.

Trace queries are recursive CTEs over ``genealogy_link``; the same SQL runs on SQLite and
PostgreSQL. The recursion carries ``(unit_id, lo, hi, depth)`` rows, where ``[lo, hi)`` is
the affected range in that unit's metres (NULL = the whole unit), and deduplicates them with
``UNION``. It never carries link or predecessor ids: a pack reached through 448 cells is one
row, not 448. Edges among the reached units are selected afterwards from the finished
recursion (in the same statement), by joining its rows to ``genealogy_link`` once more.

Metre ranges through the graph (``Link.source`` is upstream, ``Link.target`` downstream):

* forward from a coil segment ``[a, b)``: a consumed link whose ``[start_m, end_m)``
  overlaps it reaches its target (a cell, whole); a slit link maps the range into the slit
  coil's metres (``x - start_m``, clipped to the slit range); links without a segment pass
  the whole unit on.
* backward from a cell: the consumed link gives the slit-coil range ``[start_m, end_m)``; a
  slit link maps a slit-coil range back into mother-coil metres (``x + start_m``).

So a VIN traces down to the exact coil segments, and a 15 m defect on a mother coil
resolves to exactly the cells that used those metres.

Big answers stream: ``iter_trace_*`` and the recall lists come out of a (server-side on
PostgreSQL) cursor as tuples; no model instance is built per row.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import connection

from qms.exceptions import InvalidInput
from qms.models import Equipment, Station

from .choices import METRED_KINDS, LinkKind, UnitKind
from .models import Link, Measurement, StationVisit, Unit
from .serials import normalise_lookup

LINK = "genealogy_link"
UNIT = "genealogy_unit"
VISIT = "genealogy_stationvisit"
MEASUREMENT = "genealogy_measurement"

#: Guard against a corrupt graph: no real genealogy is deeper than ~10 links.
MAX_DEPTH = 32
#: Rows fetched per round trip when streaming.
FETCH_SIZE = 2000
#: Output precision of metres (1 µm); hides float noise from range arithmetic.
METRE_DECIMALS = 6
_EPS_M = 1e-6

#: Scanner order: without a kind, a serial resolves to the most downstream unit carrying it.
KIND_ORDER = [
    UnitKind.VEHICLE,
    UnitKind.PACK,
    UnitKind.MODULE,
    UnitKind.CELL,
    UnitKind.SLIT_COIL,
    UnitKind.COIL,
    UnitKind.MIX_BATCH,
    UnitKind.MATERIAL_LOT,
]
#: What a recall lists, widest first, keyed by the names the API and exports use.
RECALL_KINDS: tuple[tuple[str, str], ...] = (
    ("vehicles", UnitKind.VEHICLE),
    ("packs", UnitKind.PACK),
    ("modules", UnitKind.MODULE),
    ("cells", UnitKind.CELL),
)
LOT_KINDS = (UnitKind.MIX_BATCH, UnitKind.MATERIAL_LOT)


# --- look-ups -------------------------------------------------------------------------------


def unit_find(serial: str, *, kind: str | None = None) -> Unit | None:
    """The unit with this serial (a GS1 string is reduced to its AI 21 serial).

    Serials are unique per kind; without ``kind`` the first match in genealogy order
    (vehicle, pack, module, cell, coil, ...) wins, which is what a scanner at a trace
    page expects. A malformed GS1 string raises :class:`InvalidInput` naming ``serial``.
    """
    serial = normalise_lookup(serial)
    if not serial:
        return None
    qs = Unit.objects.select_related("line", "line__site").filter(serial=serial)
    if kind:
        qs = qs.filter(kind=kind)
    units = list(qs[:10])
    if not units:
        return None
    return min(units, key=lambda u: KIND_ORDER.index(u.kind))


def equipment_find(ref: str, *, station: Station) -> Equipment | None:
    """Equipment at ``station`` by id or code."""
    ref = (ref or "").strip()
    if not ref:
        return None
    qs = Equipment.objects.filter(station=station)
    return qs.filter(pk=int(ref)).first() if ref.isdigit() else qs.filter(code=ref).first()


# --- helpers: the same SQL on both databases ---------------------------------------------------


def _db_dt(value: datetime) -> object:
    """A datetime as the backend stores it (naive UTC text on SQLite, aware on PostgreSQL)."""
    return connection.ops.adapt_datetimefield_value(value)


def _py_dt(value: object) -> datetime | None:
    """A datetime read by a raw cursor (ISO text from a CAST, or a driver datetime) as an
    aware datetime; naive values are UTC, as both backends store them."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _m(value: float | None) -> float | None:
    return None if value is None else round(float(value), METRE_DECIMALS)


def _active(alias: str, as_of: datetime | None, *, joined: str | None) -> tuple[str, list]:
    """Links in force: active ones now, or those in force at ``as_of`` (rework undone).

    ``joined`` is the depth column of the row the link is joined to. ``OR depth < 0`` is
    never true; it ties the test to the join. A test on the link table alone counts as a
    filter of that table, and with ANALYZE statistics SQLite then builds a Bloom filter over
    all of genealogy_link at every recursion step (10x slower on 500,000 links).
    """
    tie = f" OR {joined} < 0" if joined else ""
    if as_of is None:
        return f"({alias}.removed_at IS NULL{tie})", []
    when = _db_dt(as_of)
    return (
        f"(({alias}.linked_at <= %s AND ({alias}.removed_at IS NULL OR {alias}.removed_at > %s))"
        f"{tie})",
        [when, when],
    )


@dataclass(frozen=True)
class _Seeds:
    """The non-recursive term of a trace: ``(unit_id, lo, hi, depth=0)`` rows."""

    sql: str
    params: tuple = ()

    @classmethod
    def unit(cls, unit_id: int, lo: float | None = None, hi: float | None = None) -> _Seeds:
        # Casts give the CTE columns one type on PostgreSQL (a bare NULL would be text).
        return cls(
            "SELECT CAST(%s AS BIGINT), CAST(%s AS DOUBLE PRECISION), "
            "CAST(%s AS DOUBLE PRECISION), 0",
            (unit_id, lo, hi),
        )

    @classmethod
    def units(cls, unit_ids: Iterable[int]) -> _Seeds:
        ids = sorted(set(unit_ids))
        if not ids:
            ids = [0]  # no unit has id 0: an empty trace
        marks = ", ".join(["%s"] * len(ids))
        return cls(
            f"SELECT u.id, CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS DOUBLE PRECISION), 0 "
            f"FROM {UNIT} u WHERE u.id IN ({marks})",
            tuple(ids),
        )

    @classmethod
    def window(
        cls, *, station_id: int, start: datetime, end: datetime, equipment_id: int | None
    ) -> _Seeds:
        """Units that started a visit at the station, or were measured there, in
        ``[start, end)`` (index range scans on station/equipment and time)."""
        v_eq = " AND v.equipment_id = %s" if equipment_id is not None else ""
        m_eq = " AND m.equipment_id = %s" if equipment_id is not None else ""
        s, e = _db_dt(start), _db_dt(end)
        v_params = [station_id, s, e] + ([equipment_id] if equipment_id is not None else [])
        m_params = [station_id, s, e] + ([equipment_id] if equipment_id is not None else [])
        sql = (
            "SELECT w.unit_id, CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS DOUBLE PRECISION), 0 "
            "FROM ("
            f"SELECT v.unit_id FROM {VISIT} v WHERE v.station_id = %s "
            f"AND v.started_at >= %s AND v.started_at < %s{v_eq} "
            "UNION "
            f"SELECT m.unit_id FROM {MEASUREMENT} m WHERE m.station_id = %s "
            f"AND m.measured_at >= %s AND m.measured_at < %s{m_eq}"
            ") w"
        )
        return cls(sql, (*v_params, *m_params))


def _forward_cte(seeds: _Seeds, as_of: datetime | None) -> tuple[str, list]:
    active, a_params = _active("l", as_of, joined="tr.depth")
    slit = LinkKind.SLIT.value
    sql = f"""
        WITH RECURSIVE tr(unit_id, lo, hi, depth) AS (
            {seeds.sql}
            UNION
            SELECT l.target_id,
                   CASE WHEN tr.lo IS NOT NULL AND l.kind = '{slit}' AND l.start_m IS NOT NULL
                        THEN (CASE WHEN tr.lo > l.start_m THEN tr.lo ELSE l.start_m END)
                             - l.start_m END,
                   CASE WHEN tr.lo IS NOT NULL AND l.kind = '{slit}' AND l.start_m IS NOT NULL
                        THEN (CASE WHEN tr.hi < l.end_m THEN tr.hi ELSE l.end_m END)
                             - l.start_m END,
                   tr.depth + 1
            FROM tr JOIN {LINK} l ON l.source_id = tr.unit_id
            WHERE {active} AND tr.depth < {MAX_DEPTH}
              AND (tr.lo IS NULL OR l.start_m IS NULL
                   OR (l.start_m < tr.hi AND l.end_m > tr.lo))
        )
    """
    return sql, [*seeds.params, *a_params]


def _backward_cte(seeds: _Seeds, as_of: datetime | None) -> tuple[str, list]:
    active, a_params = _active("l", as_of, joined="tr.depth")
    slit = LinkKind.SLIT.value
    sql = f"""
        WITH RECURSIVE tr(unit_id, lo, hi, depth) AS (
            {seeds.sql}
            UNION
            SELECT l.source_id,
                   CASE WHEN l.start_m IS NULL THEN NULL
                        WHEN l.kind = '{slit}' AND tr.lo IS NOT NULL THEN tr.lo + l.start_m
                        ELSE l.start_m END,
                   CASE WHEN l.start_m IS NULL THEN NULL
                        WHEN l.kind = '{slit}' AND tr.lo IS NOT NULL
                        THEN (CASE WHEN tr.hi + l.start_m < l.end_m
                                   THEN tr.hi + l.start_m ELSE l.end_m END)
                        ELSE l.end_m END,
                   tr.depth + 1
            FROM tr JOIN {LINK} l ON l.target_id = tr.unit_id
            WHERE {active} AND tr.depth < {MAX_DEPTH}
        )
    """
    return sql, [*seeds.params, *a_params]


def _cte(direction: str, seeds: _Seeds, as_of: datetime | None) -> tuple[str, list]:
    return (_forward_cte if direction == FORWARD else _backward_cte)(seeds, as_of)


#: PostgreSQL plans a recursive CTE from a guess of its size (10x the seed rows per step,
#: compounding), and for big guesses picks hash or merge joins that read all of
#: genealogy_link at every step, hash tables sized for millions of rows, and JIT compilation
#: that costs more than the query. A trace step is an index probe per reached unit: its cost
#: follows the answer, never the table. So trace statements are planned with nested loops,
#: sort-based grouping and no JIT (session settings, reset as soon as the statements of one
#: call are planned). The SQL itself is the same on both databases.
_PG_PLAN = (
    "SET jit = off; SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_hashagg = off"
)
_PG_RESET = "RESET jit; RESET enable_hashjoin; RESET enable_mergejoin; RESET enable_hashagg"
_planning = threading.local()


@contextmanager
def _trace_planning() -> Iterator[None]:
    """Plan the trace statements run inside with the settings above (PostgreSQL only;
    nested uses share one SET/RESET pair)."""
    if connection.vendor != "postgresql" or getattr(_planning, "active", False):
        yield
        return
    with connection.cursor() as cur:
        cur.execute(_PG_PLAN)
    _planning.active = True
    try:
        yield
    except Exception:
        _planning.active = False
        # A transaction aborted by a failed statement takes no more commands; its rollback
        # reverts the SET. Otherwise (autocommit, or a refusal raised in Python) reset.
        from psycopg import pq

        if connection.connection.info.transaction_status != pq.TransactionStatus.INERROR:
            _pg_reset()
        raise
    _planning.active = False
    _pg_reset()


def _pg_reset() -> None:
    with connection.cursor() as cur:
        cur.execute(_PG_RESET)


def _execute(cur, sql: str, params: list) -> None:
    with _trace_planning():
        cur.execute(sql, params)  # plans it (DECLARE for a server-side cursor)


def _stream(sql: str, params: Iterable) -> Iterator[tuple]:
    """Rows of a query, fetched in chunks from a server-side cursor where there is one."""
    with connection.chunked_cursor() as cur:
        _execute(cur, sql, list(params))
        while rows := cur.fetchmany(FETCH_SIZE):
            yield from rows


def _fetchall(sql: str, params: Iterable) -> list[tuple]:
    with connection.cursor() as cur:
        _execute(cur, sql, list(params))
        return cur.fetchall()


# --- trace ----------------------------------------------------------------------------------

FORWARD = "forward"
BACKWARD = "backward"


class TraceRow(NamedTuple):
    """One unit reached by a trace.

    For metred units (coil, slit coil) ``[start_m, end_m)`` is the affected range in this
    unit's own metres (the span of all affected segments); ``None`` means the whole unit.
    ``depth`` is the least number of links from the root (root = 0).
    """

    unit_id: int
    kind: str
    serial: str
    status: str
    line_id: int | None
    start_m: float | None
    end_m: float | None
    depth: int


class TraceEdge(NamedTuple):
    """One link between two units of a trace (upstream ``source`` -> downstream ``target``)."""

    link_id: int
    source_id: int
    target_id: int
    kind: str
    slot: str
    start_m: float | None
    end_m: float | None
    linked_at: datetime
    removed_at: datetime | None


@dataclass(frozen=True)
class StationWindow:
    """The input of a station-window trace: units that passed a station (and equipment)
    in ``[start, end)``."""

    station: Station
    start: datetime
    end: datetime
    equipment: Equipment | None = None

    def describe(self) -> str:
        where = f"{self.station}" + (f" / {self.equipment.code}" if self.equipment else "")
        return f"units at {where} from {self.start.isoformat()} to {self.end.isoformat()}"


@dataclass
class Trace:
    """The answer of a trace: the units reached and the links among them.

    ``root`` is the unit traced from (``None`` for a station window, see ``window`` and
    ``seed_ids``). ``segments`` gives, per metred unit with a partial range, the exact
    affected metre intervals (merged where adjacent), e.g. the 448 cell segments of a pack
    on one slit coil; ``TraceRow.start_m/end_m`` is their span.
    """

    root: Unit | None
    direction: str
    nodes: list[TraceRow]
    edges: list[TraceEdge]
    segments: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    start_m: float | None = None
    end_m: float | None = None
    as_of: datetime | None = None
    window: StationWindow | None = None
    seed_ids: list[int] = field(default_factory=list)

    def by_kind(self, kind: str) -> list[TraceRow]:
        return [n for n in self.nodes if n.kind == kind]

    def serials(self, kind: str) -> set[str]:
        return {n.serial for n in self.nodes if n.kind == kind}

    def node(self, unit_id: int) -> TraceRow | None:
        return next((n for n in self.nodes if n.unit_id == unit_id), None)


def _check_range(unit: Unit, start_m: float | None, end_m: float | None) -> None:
    """A metre range must be complete, finite, non-empty, inside a metred unit."""
    if start_m is None and end_m is None:
        return
    if start_m is None:
        raise InvalidInput("end_m was given without start_m.", field="start_m")
    if end_m is None:
        raise InvalidInput("start_m was given without end_m.", field="end_m")
    for name, value in (("start_m", start_m), ("end_m", end_m)):
        if not math.isfinite(value):
            raise InvalidInput(f"{name} must be a finite number of metres.", field=name)
    if unit.kind not in METRED_KINDS:
        raise InvalidInput(
            f"{unit} has no metres; a metre range applies to coils and slit coils.",
            field="start_m",
        )
    if start_m < 0:
        raise InvalidInput("start_m must not be negative.", field="start_m")
    if end_m <= start_m:
        raise InvalidInput(
            f"end_m ({end_m:g}) must be greater than start_m ({start_m:g}).", field="end_m"
        )
    if unit.length_m is not None and start_m >= unit.length_m:
        raise InvalidInput(
            f"start_m {start_m:g} lies beyond the end of {unit} ({unit.length_m:g} m).",
            field="start_m",
        )


def _check_window(start: datetime | None, end: datetime | None) -> None:
    if start is None:
        raise InvalidInput("A station window needs a start time.", field="start")
    if end is None:
        raise InvalidInput("A station window needs an end time.", field="end")
    if end <= start:
        raise InvalidInput("end must be later than start.", field="end")


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1] + _EPS_M:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(_m(lo), _m(hi)) for lo, hi in out]


def _node_sql(direction: str, seeds: _Seeds, as_of: datetime | None) -> tuple[str, list]:
    cte, params = _cte(direction, seeds, as_of)
    # One row per distinct (unit, range); the window gives each unit its least depth so
    # that rows of one unit stay together when ordered.
    sql = f"""{cte}
        SELECT g.unit_id, MIN(g.depth) OVER (PARTITION BY g.unit_id) AS udepth, g.lo, g.hi,
               u.kind, u.serial, u.status, u.line_id
        FROM (SELECT unit_id, lo, hi, MIN(depth) AS depth FROM tr GROUP BY unit_id, lo, hi) g
        JOIN {UNIT} u ON u.id = g.unit_id
        ORDER BY udepth, g.unit_id, g.lo
    """
    return sql, params


def _rows_to_nodes(
    rows: Iterable[tuple], segments: dict[int, list[tuple[float, float]]] | None = None
) -> Iterator[TraceRow]:
    """Fold consecutive rows of one unit (one per affected range) into one TraceRow."""
    current: list | None = None
    ranges: list[tuple[float, float]] = []
    whole = False

    def emit() -> TraceRow:
        unit_id, depth, kind, serial, status, line_id = current
        if whole or not ranges:
            return TraceRow(unit_id, kind, serial, status, line_id, None, None, depth)
        merged = _merge(ranges)
        if segments is not None:
            segments[unit_id] = merged
        return TraceRow(unit_id, kind, serial, status, line_id, merged[0][0], merged[-1][1], depth)

    for unit_id, depth, lo, hi, kind, serial, status, line_id in rows:
        if current is None or current[0] != unit_id:
            if current is not None:
                yield emit()
            current = [unit_id, depth, kind, serial, status, line_id]
            ranges, whole = [], False
        if lo is None:
            whole = True
        else:
            ranges.append((lo, hi))
    if current is not None:
        yield emit()


def _trace_sql(direction: str, seeds: _Seeds, as_of: datetime | None) -> tuple[str, list]:
    """Nodes and edges of a trace from ONE recursion, in one result set: node rows
    ``(0, depth, unit_id, lo, hi, kind, serial, status, line_id, -, -, -)`` (one per affected
    range) and edge rows ``(1, 0, link_id, start_m, end_m, kind, slot, -, source_id,
    target_id, linked_at, removed_at)``. Unordered: the caller folds and sorts them.

    Times come as text on both databases and are parsed by :func:`_py_dt`: cheaper than
    the driver's per-value time-zone conversion on a 100,000-edge answer."""
    cte, params = _cte(direction, seeds, as_of)
    active, a_params = _active("l", as_of, joined="n.depth" if direction == FORWARD else None)
    cols = (
        "l.id, l.start_m, l.end_m, l.kind, l.slot, '', l.source_id, l.target_id, "
        "CAST(l.linked_at AS TEXT), CAST(l.removed_at AS TEXT)"
    )
    if direction == FORWARD:
        # The links the recursion walked: the same join and range condition as its step. A
        # unit reached with several ranges may yield a link twice: the caller keeps one.
        edges = f"""
            SELECT 1, 0, {cols}
            FROM nodes n JOIN {LINK} l ON l.source_id = n.unit_id
            WHERE {active} AND n.depth < {MAX_DEPTH}
              AND (n.lo IS NULL OR l.start_m IS NULL OR (l.start_m < n.hi AND l.end_m > n.lo))
        """
    else:
        edges = f"""
            SELECT 1, 0, {cols}
            FROM {LINK} l
            WHERE {active}
              AND l.target_id IN (SELECT unit_id FROM nodes WHERE depth < {MAX_DEPTH})
        """
    sql = f"""{cte},
        nodes AS (SELECT unit_id, lo, hi, MIN(depth) AS depth FROM tr GROUP BY unit_id, lo, hi)
        SELECT 0, n.depth, n.unit_id, n.lo, n.hi, u.kind, u.serial, u.status, u.line_id,
               NULL, NULL, NULL
        FROM nodes n JOIN {UNIT} u ON u.id = n.unit_id
        UNION ALL
        {edges}
    """
    return sql, [*params, *a_params]


def _trace(direction: str, seeds: _Seeds, as_of: datetime | None, **extra) -> Trace:
    """Run :func:`_trace_sql` and fold its rows: one TraceRow per unit (least depth, merged
    ranges), each edge once; nodes by depth then id, edges by link id."""
    edges: dict[int, TraceEdge] = {}
    units: dict[int, list] = {}  # unit_id -> [depth, kind, serial, status, line_id, ranges]
    sql, params = _trace_sql(direction, seeds, as_of)
    for tag, depth, uid, lo, hi, kind, serial, status, line_id, target, at, gone in _stream(
        sql, params
    ):
        if tag == 1:  # an edge; see _trace_sql for the column order
            if uid not in edges:  # stored link metres: no arithmetic, nothing to round
                edges[uid] = TraceEdge(
                    uid, line_id, target, kind, serial, lo, hi, _py_dt(at), _py_dt(gone)
                )
            continue
        entry = units.get(uid)
        if entry is None:
            entry = units[uid] = [depth, kind, serial, status, line_id, []]
        elif depth < entry[0]:
            entry[0] = depth
        entry[5].append(None if lo is None else (lo, hi))
    segments: dict[int, list[tuple[float, float]]] = {}
    nodes = []
    for uid, (depth, kind, serial, status, line_id, ranges) in units.items():
        if None in ranges:
            nodes.append(TraceRow(uid, kind, serial, status, line_id, None, None, depth))
            continue
        merged = segments[uid] = _merge(ranges)
        nodes.append(
            TraceRow(uid, kind, serial, status, line_id, merged[0][0], merged[-1][1], depth)
        )
    nodes.sort(key=lambda n: (n.depth, n.unit_id))
    return Trace(
        direction=direction,
        nodes=nodes,
        edges=[edges[k] for k in sorted(edges)],
        segments=segments,
        as_of=as_of,
        **extra,
    )


def trace_backward(unit: Unit, *, as_of: datetime | None = None) -> Trace:
    """Everything upstream of ``unit``: modules and cells of a pack, the exact slit-coil
    and mother-coil segments each cell used, mix batches and material lots.

    ``as_of`` rebuilds the genealogy in force at that time (links removed by rework later
    are included, links made after it are not); default: the current genealogy.
    """
    return _trace(BACKWARD, _Seeds.unit(unit.pk), as_of, root=unit)


def trace_forward(
    unit: Unit,
    *,
    start_m: float | None = None,
    end_m: float | None = None,
    as_of: datetime | None = None,
) -> Trace:
    """Everything downstream of ``unit`` (a lot, batch, coil, cell, module, ...), or of the
    metres ``[start_m, end_m)`` of a coil or slit coil: cells, modules, packs, vehicles."""
    _check_range(unit, start_m, end_m)
    return _trace(
        FORWARD,
        _Seeds.unit(unit.pk, start_m, end_m),
        as_of,
        root=unit,
        start_m=start_m,
        end_m=end_m,
    )


def trace_forward_window(
    *,
    station: Station,
    start: datetime,
    end: datetime,
    equipment: Equipment | None = None,
    as_of: datetime | None = None,
) -> Trace:
    """Units that passed ``station`` (on ``equipment`` if given) during ``[start, end)``
    — by station visit or by a measurement taken there — and everything downstream of
    them. The units of the window are the trace's ``seed_ids`` (depth 0)."""
    _check_window(start, end)
    seeds = _Seeds.window(
        station_id=station.pk,
        start=start,
        end=end,
        equipment_id=equipment.pk if equipment else None,
    )
    trace = _trace(
        FORWARD,
        seeds,
        as_of,
        root=None,
        window=StationWindow(station=station, start=start, end=end, equipment=equipment),
    )
    trace.seed_ids = [n.unit_id for n in trace.nodes if n.depth == 0]
    return trace


def iter_trace_forward(
    unit: Unit | None = None,
    *,
    start_m: float | None = None,
    end_m: float | None = None,
    station: Station | None = None,
    equipment: Equipment | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    as_of: datetime | None = None,
) -> Iterator[TraceRow]:
    """Streaming :func:`trace_forward` / :func:`trace_forward_window`: the nodes only, as
    tuples from a server-side cursor, ordered by depth."""
    seeds = _seeds_for(
        unit=unit,
        start_m=start_m,
        end_m=end_m,
        station=station,
        equipment=equipment,
        start=start,
        end=end,
    )
    sql, params = _node_sql(FORWARD, seeds, as_of)
    return _rows_to_nodes(_stream(sql, params))


def iter_trace_backward(unit: Unit, *, as_of: datetime | None = None) -> Iterator[TraceRow]:
    """Streaming :func:`trace_backward`: the nodes only, as tuples, ordered by depth."""
    sql, params = _node_sql(BACKWARD, _Seeds.unit(unit.pk), as_of)
    return _rows_to_nodes(_stream(sql, params))


def _seeds_for(
    *,
    unit: Unit | None,
    start_m: float | None,
    end_m: float | None,
    station: Station | None,
    equipment: Equipment | None,
    start: datetime | None,
    end: datetime | None,
) -> _Seeds:
    if unit is not None:
        if station is not None:
            raise InvalidInput("Give a unit or a station window, not both.", field="station")
        _check_range(unit, start_m, end_m)
        return _Seeds.unit(unit.pk, start_m, end_m)
    if station is None:
        raise InvalidInput("Give a serial or a station window.", field="serial")
    if start_m is not None or end_m is not None:
        raise InvalidInput("A metre range applies to a coil, not a station.", field="start_m")
    _check_window(start, end)
    return _Seeds.window(
        station_id=station.pk,
        start=start,
        end=end,
        equipment_id=equipment.pk if equipment else None,
    )


# --- recall scope ---------------------------------------------------------------------------


class ScopeUnit(NamedTuple):
    """One unit in a recall list."""

    kind: str
    serial: str
    status: str
    unit_id: int


@dataclass
class ScopeLevel:
    """The scope at one level of genealogy precision (segment, coil, lot, ...).

    ``counts`` has the keys of :data:`RECALL_KINDS` (cells, modules, packs, vehicles);
    ``factor`` is how many times more cells this level holds than the requested one.
    """

    level: str
    description: str
    inputs: list[str]
    counts: dict[str, int]
    factor: float | None = None


@dataclass
class RecallScope:
    """What a recall must cover, and how much smaller it is than coarser genealogy.

    ``counts`` and ``lists`` are at the requested level; ``levels`` lists the requested
    level first, then the whole coil, its mother coil (for a slit coil) and the upstream
    mix batches and material lots (lot level). ``reduction_factor`` is lot-level cells
    over requested-level cells. Without ``with_lists``, ``lists`` is ``None`` and
    :meth:`iter_units` streams the units from a cursor.
    """

    input: dict
    description: str
    level: str
    counts: dict[str, int]
    levels: list[ScopeLevel]
    reduction_factor: float | None
    lists: dict[str, list[str]] | None
    as_of: datetime | None = None
    _seeds: _Seeds | None = field(default=None, repr=False)

    @property
    def vins(self) -> list[str]:
        return self.serials("vehicles")

    def serials(self, name: str) -> list[str]:
        """Serials of one recall kind (``vehicles``, ``packs``, ``modules``, ``cells``)."""
        if self.lists is not None:
            return self.lists[name]
        kind = dict(RECALL_KINDS)[name]
        return [u.serial for u in self.iter_units() if u.kind == kind]

    def iter_units(self) -> Iterator[ScopeUnit]:
        """Vehicles, packs, modules then cells, each by serial, streamed from a cursor."""
        return _scope_units(self._seeds, self.as_of)


def _scope_units(seeds: _Seeds, as_of: datetime | None) -> Iterator[ScopeUnit]:
    cte, params = _forward_cte(seeds, as_of)
    kinds = [k for _n, k in RECALL_KINDS]
    order = " ".join(f"WHEN '{k}' THEN {i}" for i, k in enumerate(kinds))
    marks = ", ".join(["%s"] * len(kinds))
    sql = f"""{cte}
        SELECT u.kind, u.serial, u.status, u.id
        FROM (SELECT DISTINCT unit_id FROM tr) n JOIN {UNIT} u ON u.id = n.unit_id
        WHERE u.kind IN ({marks})
        ORDER BY CASE u.kind {order} END, u.serial
    """
    for row in _stream(sql, [*params, *kinds]):
        yield ScopeUnit(*row)


def _scope_counts(seeds: _Seeds, as_of: datetime | None) -> dict[str, int]:
    cte, params = _forward_cte(seeds, as_of)
    sql = f"""{cte}
        SELECT u.kind, COUNT(*)
        FROM (SELECT DISTINCT unit_id FROM tr) n JOIN {UNIT} u ON u.id = n.unit_id
        GROUP BY u.kind
    """
    by_kind = dict(_fetchall(sql, params))
    return {name: int(by_kind.get(kind, 0)) for name, kind in RECALL_KINDS}


def _upstream_of_kinds(unit: Unit, kinds: Iterable[str], as_of: datetime | None) -> list[Unit]:
    cte, params = _backward_cte(_Seeds.unit(unit.pk), as_of)
    kinds = list(kinds)
    marks = ", ".join(["%s"] * len(kinds))
    sql = f"""{cte}
        SELECT DISTINCT tr.unit_id FROM tr JOIN {UNIT} u ON u.id = tr.unit_id
        WHERE tr.depth > 0 AND u.kind IN ({marks})
    """
    ids = [r[0] for r in _fetchall(sql, [*params, *kinds])]
    return list(Unit.objects.filter(pk__in=ids).order_by("kind", "serial"))


def _describe_unit(unit: Unit, start_m: float | None, end_m: float | None) -> str:
    text = f"{unit.get_kind_display().lower()} {unit.serial}"
    if start_m is not None:
        text += f" metres [{start_m:g}, {end_m:g})"
    return text


def recall_scope(
    *,
    unit: Unit | None = None,
    start_m: float | None = None,
    end_m: float | None = None,
    station: Station | None = None,
    equipment: Equipment | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    as_of: datetime | None = None,
    with_lists: bool = True,
    with_comparison: bool = True,
) -> RecallScope:
    """The cells, modules, packs and vehicles (VINs) a recall of this input must cover.

    Input: a unit (lot, batch, coil, a coil's metres ``[start_m, end_m)``, cell, module...)
    or a station window. For a coil input the answer also gives the scope at whole-coil
    level, at mother-coil level (slit coil input) and at lot level (everything made from
    the coil's upstream mix batches and material lots), so the reduction is visible.
    ``with_comparison=False`` skips those wider traversals (they cost far more than the
    requested scope on a big plant).
    """
    with _trace_planning():  # one SET/RESET pair for all its statements on PostgreSQL
        seeds = _seeds_for(
            unit=unit,
            start_m=start_m,
            end_m=end_m,
            station=station,
            equipment=equipment,
            start=start,
            end=end,
        )
        if unit is not None:
            level = "segment" if start_m is not None else _unit_level(unit)
            description = _describe_unit(unit, start_m, end_m)
            inputs = [unit.serial]
            info: dict = {
                "kind": str(UnitKind(unit.kind).value),
                "serial": unit.serial,
                "start_m": start_m,
                "end_m": end_m,
            }
        else:
            window = StationWindow(station=station, start=start, end=end, equipment=equipment)
            level = "station_window"
            description = window.describe()
            inputs = [str(station)]
            info = {
                "station": str(station),
                "equipment": equipment.code if equipment else None,
                "start": start,
                "end": end,
            }
        info["as_of"] = as_of

        lists: dict[str, list[str]] | None = None
        if with_lists:
            lists = {name: [] for name, _k in RECALL_KINDS}
            names = {kind: name for name, kind in RECALL_KINDS}
            for row in _scope_units(seeds, as_of):
                lists[names[row.kind]].append(row.serial)
            counts = {name: len(values) for name, values in lists.items()}
        else:
            counts = _scope_counts(seeds, as_of)

        levels = [ScopeLevel(level, description, inputs, counts, 1.0 if counts["cells"] else None)]
        if with_comparison and unit is not None:
            levels += _wider_levels(unit, ranged=start_m is not None, as_of=as_of)
        base = counts["cells"]
        for lv in levels[1:]:
            lv.factor = round(lv.counts["cells"] / base, 2) if base else None
        reduction = levels[-1].factor if len(levels) > 1 else None
        return RecallScope(
            input=info,
            description=description,
            level=level,
            counts=counts,
            levels=levels,
            reduction_factor=reduction,
            lists=lists,
            as_of=as_of,
            _seeds=seeds,
        )


def _unit_level(unit: Unit) -> str:
    if unit.kind in METRED_KINDS:
        return "coil"
    if unit.kind == UnitKind.MIX_BATCH:
        return "batch"
    if unit.kind == UnitKind.MATERIAL_LOT:
        return "lot"
    return "unit"


def _wider_levels(unit: Unit, *, ranged: bool, as_of: datetime | None) -> list[ScopeLevel]:
    """Coarser scopes of a coil (or batch) input: whole coil, mother coil, lot."""
    levels: list[ScopeLevel] = []
    if unit.kind in METRED_KINDS and ranged:
        levels.append(
            ScopeLevel(
                "coil",
                f"whole {_describe_unit(unit, None, None)}",
                [unit.serial],
                _scope_counts(_Seeds.unit(unit.pk), as_of),
            )
        )
    if unit.kind == UnitKind.SLIT_COIL:
        mothers = _upstream_of_kinds(unit, [UnitKind.COIL], as_of)
        if mothers:
            levels.append(
                ScopeLevel(
                    "mother_coil",
                    "whole mother coil " + ", ".join(m.serial for m in mothers),
                    [m.serial for m in mothers],
                    _scope_counts(_Seeds.units(m.pk for m in mothers), as_of),
                )
            )
    if unit.kind in METRED_KINDS or unit.kind == UnitKind.MIX_BATCH:
        lots = _upstream_of_kinds(unit, LOT_KINDS, as_of)
        if lots:
            levels.append(
                ScopeLevel(
                    "lot",
                    "everything made from upstream batch and lots "
                    + ", ".join(lot.serial for lot in lots),
                    [lot.serial for lot in lots],
                    _scope_counts(_Seeds.units(lot.pk for lot in lots), as_of),
                )
            )
    return levels


# --- unit detail: timeline and neighbours -----------------------------------------------------


@dataclass(frozen=True)
class TimelineMeasurement:
    """One measured value with the control-plan limits it was judged against.

    ``unit`` is the characteristic's unit of measure (mg/cm², g, mΩ, ...).
    """

    measurement_id: int
    code: str
    name: str
    unit: str
    value: float
    lsl: float | None
    usl: float | None
    nominal: float
    in_spec: bool
    position_m: float | None
    measured_at: datetime
    special_class: str
    equipment: Equipment | None


@dataclass
class TimelineEntry:
    """A station visit with its measurements, or (``visit_id`` None) the measurements
    taken at one station without a visit record."""

    station: Station
    equipment: Equipment | None
    started_at: datetime
    ended_at: datetime | None
    result: str
    program: str
    operator: str
    measurements: list[TimelineMeasurement]
    visit_id: int | None = None

    @property
    def out_of_spec(self) -> int:
        return sum(1 for m in self.measurements if not m.in_spec)


def unit_timeline(unit: Unit) -> list[TimelineEntry]:
    """The unit's station visits in time order, each with its measurements against spec
    limits; measurements recorded without a visit are grouped by station. Two queries."""
    visits = list(
        StationVisit.objects.filter(unit=unit)
        .select_related("station", "station__line", "equipment")
        .order_by("started_at", "id")
    )
    entries: dict[int, TimelineEntry] = {
        v.pk: TimelineEntry(
            station=v.station,
            equipment=v.equipment,
            started_at=v.started_at,
            ended_at=v.ended_at,
            result=v.result,
            program=v.program,
            operator=v.operator,
            measurements=[],
            visit_id=v.pk,
        )
        for v in visits
    }
    loose: dict[int, TimelineEntry] = {}
    measurements = (
        Measurement.objects.filter(unit=unit)
        .select_related("characteristic", "station", "station__line", "equipment")
        .order_by("measured_at", "id")
    )
    for m in measurements:
        c = m.characteristic
        row = TimelineMeasurement(
            measurement_id=m.pk,
            code=c.code,
            name=c.name,
            unit=c.unit,
            value=m.value,
            lsl=c.lsl,
            usl=c.usl,
            nominal=c.nominal,
            in_spec=m.in_spec,
            position_m=m.position_m,
            measured_at=m.measured_at,
            special_class=c.special_class,
            equipment=m.equipment,
        )
        entry = entries.get(m.visit_id) if m.visit_id else None
        if entry is None:
            entry = loose.get(m.station_id)
            if entry is None:
                entry = loose[m.station_id] = TimelineEntry(
                    station=m.station,
                    equipment=None,
                    started_at=m.measured_at,
                    ended_at=m.measured_at,
                    result="",
                    program="",
                    operator="",
                    measurements=[],
                )
            entry.ended_at = m.measured_at
        entry.measurements.append(row)
    out = list(entries.values()) + list(loose.values())
    out.sort(key=lambda e: (e.started_at, e.visit_id is None, e.visit_id or 0))
    return out


@dataclass(frozen=True)
class Neighbours:
    """Links one level from a unit, active and removed, oldest first, at most ``limit``
    each way (a material lot feeds tens of thousands of cells: the forward trace streams
    those), with the full counts."""

    upstream: list[Link]
    upstream_count: int
    downstream: list[Link]
    downstream_count: int


def unit_neighbours(unit: Unit, *, limit: int = 1000) -> Neighbours:
    """The unit's links one level up and down, with the unit at the other end loaded."""

    def first(qs) -> tuple[list[Link], int]:
        rows = list(qs.order_by("linked_at", "id")[: limit + 1])
        return rows[:limit], (len(rows) if len(rows) <= limit else qs.count())

    upstream, up_count = first(Link.objects.filter(target=unit).select_related("source"))
    downstream, down_count = first(Link.objects.filter(source=unit).select_related("target"))
    return Neighbours(upstream, up_count, downstream, down_count)


# --- used by services: cycle check and the interlock -----------------------------------------


def is_upstream_of(*, candidate: Unit, unit: Unit) -> bool:
    """True when ``candidate`` is (transitively) upstream of ``unit``, over active links.

    (``OR up.id < 0`` is never true: see :func:`_active` on SQLite's Bloom filter.)"""
    sql = f"""
        WITH RECURSIVE up(id) AS (
            SELECT source_id FROM {LINK} WHERE target_id = %s AND removed_at IS NULL
            UNION
            SELECT l.source_id FROM {LINK} l JOIN up ON l.target_id = up.id
            WHERE (l.removed_at IS NULL OR up.id < 0)
        )
        SELECT 1 FROM up WHERE id = %s LIMIT 1
    """
    with connection.cursor() as cur:
        cur.execute(sql, [unit.pk, candidate.pk])
        return cur.fetchone() is not None


def upstream_blocked(unit: Unit) -> list[tuple[int, str, str, str, str]]:
    """Upstream units (over active links) that are on hold or scrapped, nearest first.

    Returns ``(id, kind, serial, status, status_reason)`` rows. A hold on a material lot or a
    coil segment's coil blocks every cell made from it without listing the cells.
    """
    sql = f"""
        WITH RECURSIVE up(id, depth) AS (
            SELECT source_id, 1 FROM {LINK} WHERE target_id = %s AND removed_at IS NULL
            UNION
            SELECT l.source_id, up.depth + 1 FROM {LINK} l JOIN up ON l.target_id = up.id
            WHERE (l.removed_at IS NULL OR up.depth < 0) AND up.depth < {MAX_DEPTH}
        )
        SELECT u.id, u.kind, u.serial, u.status, u.status_reason
        FROM genealogy_unit u JOIN (SELECT id, MIN(depth) AS depth FROM up GROUP BY id) d
            ON d.id = u.id
        WHERE u.status IN ('on_hold', 'scrapped')
        ORDER BY d.depth, u.id
    """
    with connection.cursor() as cur:
        cur.execute(sql, [unit.pk])
        return [tuple(row) for row in cur.fetchall()]


def unit_materials(unit_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """``{unit id: (material, supplier)}`` for lots and batches, which trace rows do not
    carry (at most 2,000 units: what a page shows)."""
    ids = list(unit_ids)[:2000]
    if not ids:
        return {}
    rows = Unit.objects.filter(pk__in=ids).values_list("pk", "material", "supplier")
    return {pk: (material, supplier) for pk, material, supplier in rows}
