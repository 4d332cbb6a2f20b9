"""Importing cycler exports (formation-cabinet tray CSV, Neware, Arbin, Maccor) through a
cycler import profile: the file is read whole into canonical records
(:func:`formation.cyclers.cycler_file_read`), then each cell's run becomes one
``formation_step`` envelope carrying all its steps (samples packed, base64) and is applied
exactly once through :func:`qms.ingest.services.ingest_raw`.

* A file that cannot be read (missing or unknown columns, wrong units, time running
  backwards, NaN, an empty file) is refused before anything is written; its bytes land in
  the dead-letter store with the reader's reason, field and row (:class:`CyclerFileRefused`).
* The same bytes again are refused as a duplicate upload, also kept in the dead-letter
  store (:class:`CyclerFileAlreadyImported`).
* A cell is applied whole or not at all: a serial the plant never made is refused with
  ``unknown_unit`` (dead letter, retried by the ingest for a while, replayable once the cell
  exists); a tray position that contradicts the loading record, a sign that contradicts the
  data, a run stored already with other data are refused; the other cells of the file go in.
* A cell's ``message_id`` is derived from the file's SHA-256 and the barcode, and its run id
  from the file, so an import that was interrupted can be repeated: what went in before is a
  duplicate, never applied twice.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from qms.exceptions import InvalidInput, Refused
from qms.ingest.envelope import build
from qms.ingest.models import Transport
from qms.ingest.services import (
    ACCEPTED,
    DUPLICATE,
    REJECTED,
    RawMessage,
    dead_letter_record,
    ingest_raw,
)
from qms.models import Equipment

from . import features as fx
from .cyclers import PROFILES, CellRun, CyclerFile, CyclerFileError, CyclerProfile, cycler_file_read
from .models import CyclerFileImport, CyclerImportProfile

logger = logging.getLogger("celltrace.formation")

#: Cells applied per ``ingest_raw`` call (one transaction each).
CHUNK_CELLS = 16
#: Rejected cells described in a result (all of them are in the dead-letter store).
REJECTIONS_REPORTED = 200
#: The dead-letter ``kind`` of a whole file that was refused.
FILE_KIND = "cycler_file"
#: Metadata keys vendors put the recipe under (Maccor ``Procedure``, Arbin ``Schedule``).
PROTOCOL_KEYS = ("procedure", "schedule_file_name", "schedule", "protocol", "recipe")

_NOT_MESSAGE_ID = re.compile(r"[^\x21-\x7e]")


class CyclerFileRefused(InvalidInput):
    """The file cannot become formation records; nothing of it was applied. It is kept in
    the dead-letter store (``dead_letter_id``) with the reader's reason."""

    code = "cycler_file"

    def __init__(self, error: CyclerFileError, *, name: str, dead_letter_id: int):
        where = f" (row {error.row})" if error.row is not None else ""
        text = error.message if error.message.startswith(f"{name}") else f"{name}: {error.message}"
        super().__init__(f"{text}{where}", field=error.field)
        self.reason_code = error.code
        self.row = error.row
        self.dead_letter_id = dead_letter_id

    def as_dict(self) -> dict:
        out = super().as_dict()
        out.update(reason=self.reason_code, row=self.row, dead_letter_id=self.dead_letter_id)
        return out


class CyclerFileAlreadyImported(Refused):
    """The same bytes were imported before; nothing was applied. The repeat is kept in the
    dead-letter store (``dead_letter_id``)."""

    code = "already_imported"

    def __init__(self, existing: CyclerFileImport, *, dead_letter_id: int | None):
        super().__init__(
            f"{existing.name!r} was imported already on "
            f"{existing.imported_at:%Y-%m-%d %H:%M:%S} UTC through profile "
            f"{existing.profile.name!r} (same content, SHA-256 {existing.sha256[:16]}...).",
            field="file",
        )
        self.existing = existing
        self.dead_letter_id = dead_letter_id

    def as_dict(self) -> dict:
        out = super().as_dict()
        out.update(imported_file=self.existing.pk, dead_letter_id=self.dead_letter_id)
        return out


@dataclass(frozen=True)
class CellRejection:
    """One refused cell of a file: its barcode, the envelope field concerned, why, and the
    dead-letter entry that keeps it."""

    barcode: str
    field: str
    reason: str
    dead_letter_id: int | None


@dataclass
class CyclerImportResult:
    """What :func:`cycler_file_import` did with a file."""

    imported_file: CyclerFileImport
    rejections: list[CellRejection] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        f = self.imported_file
        return {
            "cells": f.cells,
            "accepted": f.accepted,
            "duplicate": f.duplicate,
            "rejected": f.rejected,
        }


def cycler_profile_of(profile: CyclerImportProfile) -> CyclerProfile:
    """The reading profile with the site's options of ``profile``."""
    base = PROFILES[profile.cycler_profile]
    changes: dict = {}
    if profile.timezone:
        changes["timezone"] = profile.timezone
    if profile.sign_convention:
        changes["sign_convention"] = profile.sign_convention
    if profile.strict is not None:
        changes["strict"] = profile.strict
    return dataclasses.replace(base, **changes) if changes else base


def _protocol(metadata: dict[str, str]) -> str:
    keys = {re.sub(r"\W+", "_", k.strip().lower()): v for k, v in metadata.items()}
    for key in PROTOCOL_KEYS:
        if keys.get(key):
            return str(keys[key]).strip()[:64]
    return ""


def _step_payload(step) -> dict:
    curve = step.curve
    arrays = {
        "time_s": curve.time_s,
        "voltage_v": curve.voltage_v,
        "current_a": curve.current_a,
        "capacity_ah": curve.capacity_ah,
    }
    if curve.temperature_c is not None:
        arrays["temperature_c"] = curve.temperature_c
    blob = fx.curve_pack(arrays)
    out = {
        "sequence": step.sequence,
        "step_index": step.step_index,
        "cycle_index": step.cycle_index,
        "type": str(step.step_type),
        "source_type": step.source_step_type[:32],
        "started_at": step.started_at.isoformat(),
        "ended_at": step.ended_at.isoformat(),
        "duration_s": step.duration_s,
        "capacity_ah": step.capacity_ah,
        "energy_wh": step.energy_wh,
        "start_voltage_v": step.start_voltage_v,
        "end_voltage_v": step.end_voltage_v,
        "end_current_a": step.end_current_a,
        "curve_b64": base64.b64encode(blob).decode("ascii"),
        "curve_sha256": hashlib.sha256(blob).hexdigest(),
    }
    optional = {
        "cv_time_s": step.cv_time_s,
        "tail_current_a": step.tail_current_a,
        "temperature_start_c": step.temperature_start_c,
        "temperature_max_c": step.temperature_max_c,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if step.end_reason:
        out["end_reason"] = step.end_reason[:32]
    return out


def cell_envelope(
    cell: CellRun,
    *,
    file: CyclerFile,
    profile: CyclerImportProfile,
    equipment_codes: dict[str, str],
) -> dict:
    """The ``formation_step`` envelope of one cell's run in a file: all its steps, samples
    packed; message id and run id derived from the file's SHA-256 and the barcode."""
    station = profile.station
    if cell.equipment:
        equipment = equipment_codes.get(cell.equipment.strip().lower(), cell.equipment.strip())
    else:
        equipment = profile.equipment_code or None
    barcode = _NOT_MESSAGE_ID.sub("_", cell.barcode)
    run = {
        "id": f"file:{file.source_sha256[:40]}",
        "started_at": cell.started_at.isoformat(),
        "source_format": file.source_format,
        "source_name": file.source_name[:255],
        "source_sha256": file.source_sha256,
        "source_sign_convention": str(file.source_sign_convention),
    }
    for key, value in (("channel", cell.channel), ("tray", cell.tray), ("position", cell.position)):
        if value:
            run[key] = str(value).strip()
    protocol = _protocol(file.metadata)
    if protocol:
        run["protocol"] = protocol
    return build(
        kind="formation_step",
        site=station.line.site.code,
        line=station.line.code,
        station=station.code,
        equipment=equipment,
        unit=cell.barcode,
        source=profile.source,
        message_id=f"cyc-{file.source_sha256[:40]}-{barcode}"[:128],
        sent_at=cell.ended_at,
        payload={
            "run": run,
            "sign_convention": "charge_positive",
            "steps": [_step_payload(step) for step in cell.steps],
        },
    )


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def barcode_from_name(profile: CyclerImportProfile, name: str) -> str | None:
    """The cell's barcode from the file name by the profile's pattern (None without one, or
    when the name does not match: the reader then asks for it)."""
    if not profile.barcode_pattern:
        return None
    try:
        found = re.search(profile.barcode_pattern, Path(name).name)
    except re.error:
        return None
    return found.group("barcode") if found and "barcode" in found.re.groupindex else None


def cycler_file_import(
    *,
    data: bytes,
    name: str,
    profile: CyclerImportProfile,
    actor: AbstractBaseUser,
    origin: str = "upload",
    barcode: str | None = None,
    now: datetime | None = None,
) -> CyclerImportResult:
    """Import one cycler export through ``profile``; see the module docstring. ``barcode``
    names the cell of an export that does not (else the profile's file-name pattern does).
    Raises
    :class:`CyclerFileRefused` or :class:`CyclerFileAlreadyImported` (kept as dead letters)
    or a :class:`Refused` for an inactive profile (nothing kept: nothing was wrong with the
    file)."""
    sha = file_sha256(data)
    profile = CyclerImportProfile.objects.select_related("station__line__site").get(pk=profile.pk)
    if not profile.is_active:
        raise Refused(f"Import profile {profile.name!r} is inactive.", field="profile")
    existing = CyclerFileImport.objects.select_related("profile").filter(sha256=sha).first()
    if existing is not None:
        letter = dead_letter_record(
            raw=data,
            transport=Transport.FILE,
            origin=name,
            reason=f"Duplicate upload: imported already as {existing.name!r} on "
            f"{existing.imported_at:%Y-%m-%d %H:%M:%S} UTC (file import {existing.pk}).",
            field="file",
            kind=FILE_KIND,
        )
        raise CyclerFileAlreadyImported(existing, dead_letter_id=letter.pk)
    try:
        file = cycler_file_read(
            data,
            profile=cycler_profile_of(profile),
            name=name,
            barcode=barcode or barcode_from_name(profile, name),
        )
    except CyclerFileError as exc:
        where = f" (row {exc.row})" if exc.row is not None else ""
        letter = dead_letter_record(
            raw=data,
            transport=Transport.FILE,
            origin=name,
            reason=f"{exc.message}{where}",
            field=exc.field,
            kind=FILE_KIND,
        )
        raise CyclerFileRefused(exc, name=name, dead_letter_id=letter.pk) from exc
    codes = {
        code.lower(): code
        for code in Equipment.objects.filter(station=profile.station).values_list("code", flat=True)
    }
    counts: Counter = Counter()
    rejections: list[CellRejection] = []
    cells = list(file.cells)
    for lo in range(0, len(cells), CHUNK_CELLS):
        chunk = cells[lo : lo + CHUNK_CELLS]
        messages = [
            RawMessage(
                payload=json.dumps(
                    cell_envelope(cell, file=file, profile=profile, equipment_codes=codes),
                    separators=(",", ":"),
                ).encode(),
                transport=Transport.FILE,
                origin=f"{name}:cell {cell.barcode}"[:300],
                received_at=now,
            )
            for cell in chunk
        ]
        for cell, outcome in zip(chunk, ingest_raw(messages, actor=actor), strict=True):
            counts[outcome.status] += 1
            if outcome.status == REJECTED and len(rejections) < REJECTIONS_REPORTED:
                rejections.append(
                    CellRejection(
                        cell.barcode, outcome.field or "", outcome.reason, outcome.dead_letter_id
                    )
                )
    try:
        with transaction.atomic():
            imported = CyclerFileImport.objects.create(
                sha256=sha,
                name=name[:255],
                origin=origin[:300],
                profile=profile,
                source_format=file.source_format,
                size_bytes=len(data),
                rows=file.n_rows,
                cells=len(cells),
                accepted=counts[ACCEPTED],
                duplicate=counts[DUPLICATE],
                rejected=counts[REJECTED],
                steps=file.n_steps,
                samples=sum(c.n_points for c in cells),
                imported_at=timezone.now(),
                imported_by=actor,
            )
    except IntegrityError as exc:  # the same bytes imported by another process meanwhile
        existing = CyclerFileImport.objects.select_related("profile").get(sha256=sha)
        raise CyclerFileAlreadyImported(existing, dead_letter_id=None) from exc
    result = CyclerImportResult(imported, rejections)
    logger.info("imported %s through %r: %s", name, profile.name, result.counts)
    return result
