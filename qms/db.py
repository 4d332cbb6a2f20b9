"""Database helpers for the write paths that carry plant-speed volumes.

:func:`bulk_insert` inserts new rows of an append-only table and sets their primary keys.
On PostgreSQL it takes the ids from the table's own sequence in one round trip and streams
the rows with ``COPY`` (several times faster than a multi-row ``INSERT`` for thousands of
measurements); elsewhere, and for a handful of rows, it is ``bulk_create``. Either way the
rows are part of the caller's transaction, and a constraint violation raises Django's
:class:`~django.db.IntegrityError` like any other write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import connection, models
from django.utils import timezone

M = TypeVar("M", bound=models.Model)

#: Below this many rows a plain ``INSERT`` costs less than the sequence round trip + COPY.
COPY_THRESHOLD = 32

#: Field types whose Python value psycopg writes as the column expects, without Django's
#: per-value preparation (the preparation is an identity for them on PostgreSQL).
_PLAIN_TYPES = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "BigIntegerField",
        "BooleanField",
        "CharField",
        "DateTimeField",
        "FloatField",
        "ForeignKey",
        "IntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SmallIntegerField",
        "TextField",
    }
)


@cache
def _object_plan(
    model: type[models.Model],
) -> tuple[tuple[str, ...], list[Callable[[Any], Any]]]:
    """The non-key fields of ``model`` and one value getter each, for :func:`bulk_insert`."""
    names: list[str] = []
    getters: list[Callable[[Any], Any]] = []
    for f in model._meta.concrete_fields:
        if f is model._meta.pk:
            continue
        names.append(f.name)
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            getters.append(lambda obj, f=f: f.get_db_prep_save(f.pre_save(obj, True), connection))
        elif f.get_internal_type() in _PLAIN_TYPES:
            getters.append(lambda obj, name=f.attname: getattr(obj, name))
        else:
            getters.append(lambda obj, f=f: f.get_db_prep_save(getattr(obj, f.attname), connection))
    return tuple(names), getters


def bulk_insert(model: type[M], objs: Sequence[M], *, batch_size: int = 5000) -> Sequence[M]:
    """Insert ``objs`` (new, unsaved instances of ``model``) and set their primary keys
    (:func:`insert_rows` with the instances' values).

    Not for models with history (simple-history records nothing for bulk writes) and not
    for rows that need ``save()`` or signals: this is for append-only records.
    """
    if not objs:
        return objs
    if connection.vendor != "postgresql" or len(objs) < COPY_THRESHOLD:
        return model._default_manager.bulk_create(objs, batch_size=batch_size)
    names, getters = _object_plan(model)
    ids = insert_rows(model, names, [[get(obj) for get in getters] for obj in objs])
    pk = model._meta.pk
    for obj, pk_value in zip(objs, ids, strict=True):
        setattr(obj, pk.attname, pk_value)
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs


@cache
def _rows_plan(
    model: type[models.Model], fields: tuple[str, ...]
) -> tuple[str, str, tuple[models.Field, ...]]:
    """The COPY statement, the sequence look-up, and the fields not given (their model
    defaults are written, as ``bulk_create`` would)."""
    opts = model._meta
    qn = connection.ops.quote_name
    given = {opts.get_field(name).attname for name in fields}
    missing = tuple(f for f in opts.concrete_fields if f is not opts.pk and f.attname not in given)
    columns = [opts.pk.column] + [opts.get_field(name).column for name in fields]
    columns += [f.column for f in missing]
    copy_sql = f"COPY {qn(opts.db_table)} ({', '.join(qn(c) for c in columns)}) FROM STDIN"
    seq_sql = "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s) AS g"
    return copy_sql, seq_sql, missing


def _default(field: models.Field) -> Any:
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return timezone.now()
    return field.get_db_prep_save(field.get_default(), connection)


def insert_rows(
    model: type[models.Model], fields: tuple[str, ...], rows: Sequence[Sequence[Any]]
) -> list[int]:
    """Insert plain rows (one value per name in ``fields``, already in the column's Python
    type: ints, floats, str, bools, aware datetimes, None) and return their new ids, in
    order. The fastest write path: no model instances on PostgreSQL. Fields not named take
    their model default (evaluated once per call)."""
    if not rows:
        return []
    if connection.vendor != "postgresql" or len(rows) < COPY_THRESHOLD:
        objs = [model(**dict(zip(fields, row, strict=True))) for row in rows]
        model._default_manager.bulk_create(objs, batch_size=5000)
        return [obj.pk for obj in objs]
    copy_sql, seq_sql, missing = _rows_plan(model, fields)
    defaults = tuple(_default(f) for f in missing)
    with connection.cursor() as cursor:
        cursor.execute(seq_sql, [model._meta.db_table, model._meta.pk.column, len(rows)])
        ids = [row[0] for row in cursor.fetchall()]
        with connection.wrap_database_errors, cursor.copy(copy_sql) as copy:
            for pk, row in zip(ids, rows, strict=True):
                copy.write_row((pk, *row, *defaults))
    return ids
