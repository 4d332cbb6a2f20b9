"""Station progress: where each unit is on the line (``UnitProgress``).

``visit_recorded`` is called by ``visit_record`` for each visit it stores. It publishes
one ``VisitsRecorded`` event per committed transaction, however many visits the
transaction recorded (an ingest batch of 500 station results is one event, one task), and
only for visits that were committed: a visit rolled back with its savepoint (a rejected
message) is never announced.

``unit_progress_update`` recomputes the progress rows of the units of some visits from
all of their visits. It takes no lock on units (ingest batches lock them) and still never
lets a stale computation win: the row is only overwritten by a computation that saw at
least as many visits (visits are append-only, so that computation saw a superset).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from django.db import connection, transaction
from django.utils import timezone

from qms import events

from .choices import VisitResult
from .events import VisitsRecorded
from .models import StationVisit, UnitProgress

#: Units per statement when recomputing (keeps SQL parameter counts small on SQLite).
CHUNK = 500

_pending = threading.local()


def visit_recorded(visit: StationVisit) -> None:
    """Announce ``visit`` with the others of this transaction once it commits."""
    visits_recorded([visit.pk])


def visits_recorded(visit_ids: Iterable[int]) -> None:
    """Announce these visits with the others of this transaction once it commits."""
    buffer = getattr(_pending, "visit_ids", None)
    if buffer is None:
        buffer = _pending.visit_ids = []
    buffer.extend(visit_ids)
    transaction.on_commit(_visits_flush)


def _visits_flush() -> None:
    """Publish the buffered visits in one event. Runs once per visit after the commit;
    the first run takes the whole buffer, the others find it empty."""
    ids = getattr(_pending, "visit_ids", None)
    if not ids:
        return
    _pending.visit_ids = []
    # Ids of visits whose savepoint was rolled back may sit in the buffer; the database
    # knows which ones committed.
    committed = sorted(StationVisit.objects.filter(pk__in=set(ids)).values_list("pk", "unit_id"))
    if committed:
        events.publish(
            VisitsRecorded(
                visit_ids=tuple(pk for pk, _ in committed),
                unit_ids=tuple(sorted({unit_id for _, unit_id in committed})),
            )
        )


def unit_progress_update(*, visit_ids: Iterable[int]) -> list[UnitProgress]:
    """Recompute the progress of the units of these visits; returns the rows computed.

    Safe to repeat and order-independent: the result depends only on the visits stored.
    Unknown visit ids are ignored.
    """
    visit_ids = sorted(set(visit_ids))
    unit_ids: set[int] = set()
    for i in range(0, len(visit_ids), CHUNK):
        unit_ids.update(
            StationVisit.objects.filter(pk__in=visit_ids[i : i + CHUNK]).values_list(
                "unit_id", flat=True
            )
        )
    rows: list[UnitProgress] = []
    ordered = sorted(unit_ids)
    for i in range(0, len(ordered), CHUNK):
        chunk = _compute(ordered[i : i + CHUNK])
        _upsert(chunk)
        rows.extend(chunk)
    return rows


def _compute(unit_ids: Sequence[int]) -> list[UnitProgress]:
    """Progress of these units from all of their visits (latest = greatest started_at)."""
    now = timezone.now()
    visits = (
        StationVisit.objects.filter(unit_id__in=unit_ids)
        .order_by("unit_id", "started_at", "id")
        .values_list("id", "unit_id", "station_id", "started_at", "result")
    )
    out: dict[int, UnitProgress] = {}
    latest_at_station: dict[int, dict[int, str]] = {}
    for visit_id, unit_id, station_id, started_at, result in visits.iterator(chunk_size=2000):
        row = out.get(unit_id)
        if row is None:
            row = out[unit_id] = UnitProgress(unit_id=unit_id, visits=0, updated_at=now)
            latest_at_station[unit_id] = {}
        row.visits += 1
        row.last_visit_id = visit_id
        row.last_station_id = station_id
        row.last_visit_at = started_at
        row.last_result = result
        latest_at_station[unit_id][station_id] = result
    for unit_id, row in out.items():
        row.stations_passed = sum(
            1 for r in latest_at_station[unit_id].values() if r == VisitResult.OK
        )
    return list(out.values())


_UPSERT_FIELDS = (
    "unit",
    "last_visit",
    "last_station",
    "last_visit_at",
    "last_result",
    "stations_passed",
    "visits",
    "updated_at",
)


def _upsert(rows: Sequence[UnitProgress]) -> None:
    """Insert or update rows in one statement; an existing row is only replaced by a
    computation that saw at least as many visits (the same SQL on SQLite and PostgreSQL)."""
    if not rows:
        return
    meta = UnitProgress._meta
    fields = [meta.get_field(name) for name in _UPSERT_FIELDS]
    qn = connection.ops.quote_name
    table = qn(meta.db_table)
    columns = [qn(f.column) for f in fields]
    visits = qn(meta.get_field("visits").column)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608  (names from the model)
        f"VALUES {', '.join([placeholders] * len(rows))} "
        f"ON CONFLICT ({qn(meta.pk.column)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        + f" WHERE {table}.{visits} <= excluded.{visits}"
    )
    params = [
        f.get_db_prep_save(getattr(row, f.attname), connection) for row in rows for f in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
