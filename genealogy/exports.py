"""Recall-scope downloads: CSV (streamed) and XLSX (openpyxl, write-only).

Both carry the same three parts: what was asked (input, time of the genealogy), the
comparison of the scope at each genealogy level (segment vs whole coil vs lot) with the
reduction factor, and the lists of vehicles (VINs), packs, modules and cells. The lists come
straight from a database cursor, so a 50,000-cell scope never sits in memory as objects.
"""

from __future__ import annotations

import csv
import re
import tempfile
from collections.abc import Iterator
from datetime import datetime

from django.utils import timezone
from openpyxl import Workbook

from .queries import RECALL_KINDS, RecallScope

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

LEVEL_HEADER = ["level", "description", "vehicles", "packs", "modules", "cells", "factor"]
UNIT_HEADER = ["kind", "serial", "status"]


def _when(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "current genealogy"


def summary_rows(scope: RecallScope, *, generated_at: datetime) -> list[list]:
    """Input and comparison rows shared by CSV and XLSX."""
    rows: list[list] = [
        ["Celltrace recall scope"],
        ["input", scope.description],
        ["level", scope.level],
        ["genealogy as of", _when(scope.as_of)],
        ["generated at", generated_at.isoformat()],
        ["reduction factor", scope.reduction_factor if scope.reduction_factor else ""],
        [],
        LEVEL_HEADER,
    ]
    for lv in scope.levels:
        rows.append(
            [
                lv.level,
                lv.description,
                *[lv.counts[name] for name, _k in RECALL_KINDS],
                lv.factor if lv.factor is not None else "",
            ]
        )
    return rows


def filename(scope: RecallScope, extension: str, *, generated_at: datetime) -> str:
    """``recall-scope-<input>-<UTC time>.<ext>`` with only safe characters."""
    what = scope.input.get("serial") or scope.input.get("station") or "scope"
    if scope.input.get("start_m") is not None:
        what += f"-{scope.input['start_m']:g}-{scope.input['end_m']:g}m"
    what = re.sub(r"[^A-Za-z0-9.-]+", "-", str(what)).strip("-")
    return f"recall-scope-{what}-{generated_at:%Y%m%dT%H%M%SZ}.{extension}"


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a generator."""

    def write(self, value: str) -> str:
        return value


def recall_scope_csv(scope: RecallScope, *, generated_at: datetime | None = None) -> Iterator[str]:
    """CSV lines: summary, a blank line, then ``kind, serial, status`` for every vehicle,
    pack, module and cell (in that order, by serial), streamed from a cursor."""
    generated_at = generated_at or timezone.now()
    writer = csv.writer(_Echo())
    for row in summary_rows(scope, generated_at=generated_at):
        yield writer.writerow(row)
    yield writer.writerow([])
    yield writer.writerow(UNIT_HEADER)
    for unit in scope.iter_units():
        yield writer.writerow([unit.kind, unit.serial, unit.status])


def recall_scope_xlsx(scope: RecallScope, *, generated_at: datetime | None = None):
    """An XLSX workbook (sheet "Summary", then one sheet per kind) in a temporary file,
    rewound, for a streamed file response. Write-only mode keeps memory flat."""
    generated_at = generated_at or timezone.now()
    wb = Workbook(write_only=True)
    summary = wb.create_sheet("Summary")
    for row in summary_rows(scope, generated_at=generated_at):
        summary.append(row)
    sheets = {}
    for name, kind in RECALL_KINDS:
        sheet = wb.create_sheet(name.capitalize())
        sheet.append(["VIN" if kind == "vehicle" else "serial", "status"])
        sheets[kind] = sheet
    for unit in scope.iter_units():
        sheets[unit.kind].append([unit.serial, unit.status])
    out = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 - returned
    wb.save(out)
    out.seek(0)
    return out
