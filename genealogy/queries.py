"""Read-side selectors for the digital thread: unit look-up, trace and recall scope.

Trace queries are recursive CTEs over ``genealogy_link``; the same SQL runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from django.db import connection

from .models import Unit
from .serials import normalise_lookup

LINK = "genealogy_link"


def unit_find(serial: str, *, kind: str | None = None) -> Unit | None:
    """The unit with this serial (a GS1 string is reduced to its AI 21 serial).

    Serials are unique per kind; without ``kind`` the first match in genealogy order
    (vehicle, pack, module, cell, coil, ...) wins, which is what a scanner at a trace
    page expects.
    """
    serial = normalise_lookup(serial)
    qs = Unit.objects.select_related("line", "line__site").filter(serial=serial)
    if kind:
        qs = qs.filter(kind=kind)
    units = list(qs[:10])
    if not units:
        return None
    order = ["vehicle", "pack", "module", "cell", "slit_coil", "coil", "mix_batch", "material_lot"]
    return min(units, key=lambda u: order.index(u.kind))


def is_upstream_of(*, candidate: Unit, unit: Unit) -> bool:
    """True when ``candidate`` is (transitively) upstream of ``unit``, over active links."""
    sql = f"""
        WITH RECURSIVE up(id) AS (
            SELECT source_id FROM {LINK} WHERE target_id = %s AND removed_at IS NULL
            UNION
            SELECT l.source_id FROM {LINK} l JOIN up ON l.target_id = up.id
            WHERE l.removed_at IS NULL
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
            WHERE l.removed_at IS NULL AND up.depth < 32
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
