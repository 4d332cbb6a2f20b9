"""Importing CSV/XLSX exports through a profile: each row becomes a ``process_result``
envelope, applied exactly once through :func:`qms.ingest.services.ingest_raw`.

* A file is imported once: its SHA-256 is recorded in :class:`ImportedFile` and the same
  bytes again are refused (:class:`FileAlreadyImported`).
* Rows are read one by one (``csv`` with the profile's dialect, or ``openpyxl`` in
  read-only mode) and applied in chunks of :data:`CHUNK_ROWS`, one transaction per chunk.
* A row's ``message_id`` is derived from what the row *is* (source, station, unit, time,
  the profile's key columns), not from where it sits in the file: re-importing after a crash,
  or a second export that repeats rows (a cumulative daily file), finds them as duplicates
  and never applies them twice (:func:`row_message_id`).
* A row that cannot become an envelope (empty serial, a value that is not a number, a bad or
  future timestamp) goes to the dead-letter store with its raw bytes (the CSV line, or the
  XLSX row as JSON), origin ``<file>:row <n>`` and a reason naming the column. A row the
  envelope validation or the handler refuses lands there too, with the envelope.
* A file that cannot be read at all (wrong encoding, not a workbook, a mapped column
  missing from the header) is refused before anything is written.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from qms.exceptions import InvalidInput, Refused
from qms.ingest.envelope import FUTURE_TOLERANCE, build
from qms.ingest.models import Transport
from qms.ingest.services import (
    ACCEPTED,
    DUPLICATE,
    REJECTED,
    Outcome,
    RawMessage,
    dead_letter_record,
    ingest_raw,
)

from .choices import FileFormat
from .mapping import (
    CellError,
    Mapping,
    MappingError,
    number_parse,
    profile_mapping,
    text_value,
    timestamp_parse,
)
from .models import FileImportProfile, ImportedFile

logger = logging.getLogger("celltrace.ingest.files")

#: Rows applied per ``ingest_raw`` call (one transaction each).
CHUNK_ROWS = 1000
#: Rejected rows described in a result (all of them are in the dead-letter store).
REJECTIONS_REPORTED = 200
#: Longest unit serial or GS1 element string an envelope takes.
SERIAL_MAX = 200

SKIPPED = "skipped"


class FileAlreadyImported(Refused):
    """The same bytes were imported before; nothing was done."""

    code = "already_imported"

    def __init__(self, existing: ImportedFile):
        super().__init__(
            f"{existing.name!r} was imported already on "
            f"{existing.imported_at:%Y-%m-%d %H:%M:%S} UTC through profile "
            f"{existing.profile.name!r} (same content, SHA-256 {existing.sha256[:16]}...).",
            field="file",
        )
        self.existing = existing


@dataclass(frozen=True)
class RowRejection:
    """One rejected row: its number in the file, the column concerned, why, and the
    dead-letter entry that keeps it."""

    row: int
    column: str
    reason: str
    dead_letter_id: int | None


@dataclass
class FileImportResult:
    """What :func:`file_import` did with a file."""

    imported_file: ImportedFile
    rejections: list[RowRejection] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        f = self.imported_file
        return {
            "rows": f.rows,
            "accepted": f.accepted,
            "duplicate": f.duplicate,
            "rejected": f.rejected,
            "skipped": f.skipped,
        }


@dataclass(frozen=True)
class SourceRow:
    """One data row as read: its number in the file (CSV line, XLSX row, counted from 1),
    the cells by header, and the raw bytes kept if it is rejected."""

    number: int
    cells: dict[str, object]
    raw: bytes


class _RowError(Exception):
    def __init__(self, column: str, reason: str):
        super().__init__(reason)
        self.column = column
        self.reason = reason


# --- Reading ---------------------------------------------------------------------------------


def _header_check(header: list[str], mapping: Mapping, *, name: str, row: int) -> None:
    present = Counter(header)
    missing = [c for c in mapping.columns if c not in present]
    if missing:
        found = ", ".join(repr(h) for h in header if h) or "nothing"
        raise InvalidInput(
            f"{name}: column(s) {', '.join(repr(c) for c in missing)} of the profile are not "
            f"in the header (row {row}); found {found}.",
            field="file",
        )
    twice = [c for c in mapping.columns if present[c] > 1]
    if twice:
        raise InvalidInput(
            f"{name}: column(s) {', '.join(repr(c) for c in twice)} appear more than once in "
            f"the header (row {row}).",
            field="file",
        )


class _LineCapture:
    """Feeds lines to ``csv.reader`` and keeps the ones of the current record, so a rejected
    row can be stored exactly as it was in the file."""

    def __init__(self, lines: Iterator[str]):
        self._lines = lines
        self.buffer: list[str] = []

    def __iter__(self) -> _LineCapture:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.buffer.append(line)
        return line

    def take(self) -> str:
        text = "".join(self.buffer)
        self.buffer.clear()
        return text


def _csv_rows(data: bytes, profile: FileImportProfile, mapping: Mapping, name: str):
    try:
        text = data.decode(profile.encoding)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{name} is not {profile.encoding} text: {exc.reason} at byte {exc.start}; check "
            "the profile's encoding.",
            field="file",
        ) from exc
    capture = _LineCapture(iter(io.StringIO(text, newline="")))
    reader = csv.reader(capture, delimiter=profile.delimiter, quotechar=profile.quotechar)
    # One incremental encoder gives back each record's exact bytes (a BOM only once).
    encoder = codecs.getincrementalencoder(profile.encoding)(errors="replace")
    encoder.encode("")
    header: list[str] | None = None
    while True:
        try:
            cells = next(reader)
            error = None
        except StopIteration:
            break
        except csv.Error as exc:
            cells, error = [], exc
        first_line = reader.line_num - len(capture.buffer) + 1
        raw_text = capture.take()
        if header is None:
            if first_line >= profile.header_row:
                if error is not None:
                    raise InvalidInput(
                        f"{name}: the header row is unreadable: {error}.", field="file"
                    )
                header = [c.strip().lstrip("\ufeff") for c in cells]
                _header_check(header, mapping, name=name, row=first_line)
            continue
        raw = encoder.encode(raw_text)
        if error is not None:
            yield SourceRow(first_line, {}, raw), f"unreadable CSV record: {error}"
            continue
        if not any(c.strip() for c in cells):
            continue  # blank line
        values: dict[str, object] = {h: (cells[i] if i < len(cells) else "") for i, h in
                                     enumerate(header)}  # fmt: skip
        yield SourceRow(first_line, values, raw), None
    if header is None:
        raise InvalidInput(f"{name} has no header row {profile.header_row}.", field="file")


def _json_cell(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _xlsx_rows(data: bytes, profile: FileImportProfile, mapping: Mapping, name: str):
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise InvalidInput(f"{name} is not an XLSX workbook: {exc}.", field="file") from exc
    try:
        if profile.sheet_name:
            if profile.sheet_name not in book.sheetnames:
                raise InvalidInput(
                    f"{name} has no worksheet {profile.sheet_name!r}; it has "
                    f"{', '.join(repr(s) for s in book.sheetnames)}.",
                    field="file",
                )
            sheet = book[profile.sheet_name]
        else:
            sheet = book.worksheets[0]
        header: list[str] | None = None
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            if header is None:
                if number == profile.header_row:
                    header = [text_value(v) for v in values]
                    _header_check(header, mapping, name=name, row=number)
                continue
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                continue
            cells = {h: (values[i] if i < len(values) else None) for i, h in enumerate(header)}
            named = {(h or f"column {i + 1}"): _json_cell(v) for i, (h, v) in
                     enumerate(zip(header, values, strict=False))}  # fmt: skip
            raw = json.dumps(
                {"sheet": sheet.title, "row": number, "cells": named}, ensure_ascii=False
            ).encode()
            yield SourceRow(number, cells, raw), None
        if header is None:
            raise InvalidInput(
                f"{name}: worksheet {sheet.title!r} has no header row {profile.header_row}.",
                field="file",
            )
    finally:
        book.close()


# --- Rows to envelopes -----------------------------------------------------------------------


def row_message_id(
    *, profile: FileImportProfile, serial: str, at: datetime, equipment: str, key: list[str]
) -> str:
    """The message id of a row: a hash of the sending system, the station, the kind, the
    unit, the time and the profile's key columns. The same record in another file (or the
    same file again) gets the same id and is a duplicate; where it sits in a file does not
    matter."""
    station = profile.station
    identity = "\x1f".join(
        [
            profile.source,
            station.line.site.code.lower(),
            station.line.code.lower(),
            station.code.lower(),
            profile.kind,
            equipment.lower(),
            serial,
            at.isoformat(),
            *key,
        ]
    )
    return "file:" + hashlib.sha256(identity.encode()).hexdigest()[:40]


def _cell_text(row: SourceRow, column: str) -> str:
    return text_value(row.cells.get(column))


def _row_envelope(
    row: SourceRow, *, profile: FileImportProfile, mapping: Mapping, now: datetime
) -> dict | None:
    """The envelope of one row, ``None`` when the profile's row filter leaves it out, or
    :class:`_RowError` naming the column that cannot be read."""
    if mapping.include_column is not None:
        value = _cell_text(row, mapping.include_column).casefold()
        if value not in mapping.include_values:
            return None

    serial = _cell_text(row, mapping.serial)
    if not serial:
        raise _RowError(mapping.serial, "the serial is empty.")
    if len(serial) > SERIAL_MAX:
        raise _RowError(mapping.serial, f"the serial is longer than {SERIAL_MAX} characters.")

    raw_time = row.cells.get(mapping.timestamp)
    try:
        at = timestamp_parse(raw_time, fmt=mapping.timestamp_format, zone=mapping.timezone)
    except CellError as exc:
        raise _RowError(mapping.timestamp, str(exc)) from exc
    if at > now + FUTURE_TOLERANCE:
        minutes = (at - now).total_seconds() / 60
        raise _RowError(
            mapping.timestamp,
            f"{text_value(raw_time)!r} ({at:%Y-%m-%d %H:%M:%S} UTC, read as "
            f"{mapping.timezone}) is {minutes:,.0f} min in the future (tolerance "
            f"{FUTURE_TOLERANCE.total_seconds() / 60:.0f} min); check the exporting clock "
            "and the profile's time zone.",
        )

    result_text = _cell_text(row, mapping.result)
    folded = result_text.casefold()
    if folded in mapping.ok_values:
        result = "ok"
    elif mapping.nok_values is None or folded in mapping.nok_values:
        result = "nok"
    else:
        raise _RowError(
            mapping.result, f"{result_text!r} is neither an OK nor a NOK value of the profile."
        )

    measurements = []
    for m in mapping.measurements:
        value = row.cells.get(m.column)
        if text_value(value) == "" and not m.required:
            continue
        try:
            number = number_parse(
                value,
                decimal_separator=profile.decimal_separator,
                thousands_separator=profile.thousands_separator,
            )
        except CellError as exc:
            raise _RowError(m.column, str(exc)) from exc
        measurements.append(
            {
                "characteristic": m.characteristic,
                "value": float(number * m.scale),
                "unit": m.target_unit,
                "measured_at": at.isoformat(),
            }
        )

    equipment = profile.equipment_code
    if mapping.equipment:
        equipment = _cell_text(row, mapping.equipment) or equipment
    payload: dict = {"result": result, "measurements": measurements}
    for key, column in (("program", mapping.program), ("operator", mapping.operator)):
        if column and _cell_text(row, column):
            payload[key] = _cell_text(row, column)
    if mapping.unit_kind:
        payload["unit_kind"] = mapping.unit_kind
    station = profile.station
    return build(
        kind=profile.kind,
        site=station.line.site.code,
        line=station.line.code,
        station=station.code,
        equipment=equipment or None,
        payload=payload,
        source=profile.source,
        message_id=row_message_id(
            profile=profile,
            serial=serial,
            at=at,
            equipment=equipment,
            key=[_cell_text(row, c) for c in mapping.key],
        ),
        sent_at=at,
        unit=serial,
    )


_MEASUREMENT_FIELD = re.compile(r"payload\.measurements\[(\d+)\]")


def _column_of(outcome: Outcome, doc: dict, mapping: Mapping) -> str:
    """The column a refused envelope's field came from, for a person reading the report."""
    where = outcome.field or ""
    if where == "unit":
        return mapping.serial
    if where == "sent_at":
        return mapping.timestamp
    if where == "equipment" and mapping.equipment:
        return mapping.equipment
    if where.startswith("payload.result"):
        return mapping.result
    found = _MEASUREMENT_FIELD.match(where)
    if found:
        index = int(found.group(1))
        measured = doc["payload"]["measurements"]
        if index < len(measured):
            code = measured[index]["characteristic"]
            return next(m.column for m in mapping.measurements if m.characteristic == code)
    return where


# --- The service ---------------------------------------------------------------------------


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_import(
    *,
    data: bytes,
    name: str,
    profile: FileImportProfile,
    actor: AbstractBaseUser,
    origin: str = "upload",
) -> FileImportResult:
    """Import one file through ``profile``; see the module docstring.

    Raises :class:`FileAlreadyImported` for bytes imported before and
    :class:`~qms.exceptions.InvalidInput` for a file (or profile) that cannot be read; in
    both cases nothing was written. Bad rows never raise: they are counted as rejected and
    kept in the dead-letter store. Each chunk of rows commits on its own, so an interrupted
    import can simply be run again.
    """
    sha = file_sha256(data)
    existing = ImportedFile.objects.select_related("profile").filter(sha256=sha).first()
    if existing is not None:
        raise FileAlreadyImported(existing)
    if not profile.is_active:
        raise Refused(f"Profile {profile.name!r} is inactive.", field="profile")
    try:
        mapping = profile_mapping(profile)
    except MappingError as exc:
        raise InvalidInput(
            f"Profile {profile.name!r} cannot be used: {exc.path}: {exc.message}", field="profile"
        ) from exc
    profile = FileImportProfile.objects.select_related("station__line__site").get(pk=profile.pk)

    reader = _xlsx_rows if profile.file_format == FileFormat.XLSX else _csv_rows
    counts: Counter = Counter()
    rejections: list[RowRejection] = []
    pending: list[tuple[SourceRow, dict]] = []
    now = timezone.now()

    def reject(row: SourceRow, column: str, reason: str, dead_letter_id: int | None) -> None:
        counts[REJECTED] += 1
        if len(rejections) < REJECTIONS_REPORTED:
            rejections.append(RowRejection(row.number, column, reason, dead_letter_id))

    def flush() -> None:
        messages = [
            RawMessage(
                payload=json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(),
                transport=Transport.FILE,
                origin=f"{name}:row {row.number}",
            )
            for row, doc in pending
        ]
        for (row, doc), outcome in zip(pending, ingest_raw(messages, actor=actor), strict=True):
            if outcome.status == REJECTED:
                column = _column_of(outcome, doc, mapping)
                reject(row, column, outcome.reason, outcome.dead_letter_id)
            else:
                counts[outcome.status] += 1
        pending.clear()

    for row, unreadable in reader(data, profile, mapping, name):
        counts["rows"] += 1
        try:
            if unreadable:
                raise _RowError("", unreadable)
            doc = _row_envelope(row, profile=profile, mapping=mapping, now=now)
        except _RowError as exc:
            reason = f"Column {exc.column!r}: {exc.reason}" if exc.column else exc.reason
            entry = dead_letter_record(
                raw=row.raw,
                transport=Transport.FILE,
                origin=f"{name}:row {row.number}",
                reason=reason,
                field=exc.column or None,
                kind=profile.kind,
            )
            reject(row, exc.column, reason, entry.pk)
            continue
        if doc is None:
            counts[SKIPPED] += 1
            continue
        pending.append((row, doc))
        if len(pending) >= CHUNK_ROWS:
            flush()
    if pending:
        flush()

    try:
        with transaction.atomic():
            imported = ImportedFile.objects.create(
                sha256=sha,
                name=name[:255],
                origin=origin[:300],
                profile=profile,
                size_bytes=len(data),
                rows=counts["rows"],
                accepted=counts[ACCEPTED],
                duplicate=counts[DUPLICATE],
                rejected=counts[REJECTED],
                skipped=counts[SKIPPED],
                imported_at=timezone.now(),
                imported_by=actor,
            )
    except IntegrityError as exc:  # imported at the same time by another process
        raise FileAlreadyImported(ImportedFile.objects.get(sha256=sha)) from exc
    logger.info("imported %s through %r: %s", name, profile.name, FileImportResult(imported).counts)
    return FileImportResult(imported, rejections)
