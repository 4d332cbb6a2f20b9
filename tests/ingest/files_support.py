"""Shared helpers of the file import tests: profiles on the test plant (line L1-PRI, fill
station with the check-weigher ``cw-1`` and ``electrolyte-fill-mass`` 410 g +-1 %) and cells
to import for.

The check-weigher export is the German-plant shape: ``Barcode;Timestamp;Fill mass [g];Result``,
semicolons, decimal comma, local time (Europe/Berlin). 23 Nov 2026 is winter time (UTC+1).
"""

from __future__ import annotations

from datetime import datetime

from genealogy.choices import UnitKind
from genealogy.services import units_create_bulk
from qms.files.choices import DecimalSeparator, FileFormat
from qms.files.demo import checkweigher_csv
from qms.files.models import FileImportProfile

#: Start of the early shift, local time (CET): 06:00 UTC.
SHIFT_START = datetime(2026, 11, 23, 7, 0, 0)  # noqa: DTZ001  naive local time, as exported

FILL_COLUMNS = {
    "serial": "Barcode",
    "timestamp": {
        "column": "Timestamp",
        "format": "%d.%m.%Y %H:%M:%S",
        "timezone": "Europe/Berlin",
    },
    "result": {"column": "Result", "ok": ["OK"], "nok": ["NOK"]},
    "measurements": [
        {"column": "Fill mass [g]", "characteristic": "electrolyte-fill-mass", "unit": "g"}
    ],
}


def cell_serial(n: int) -> str:
    """Prismatic cells of L1-PRI: P1 + year 26 + week 48 + a 7-digit counter."""
    return f"P12648{n:07d}"


def make_cells(plant, numbers, actor=None) -> list[str]:
    serials = [cell_serial(n) for n in numbers]
    units_create_bulk(kind=UnitKind.CELL, serials=serials, line=plant.line, actor=actor)
    return serials


def checkweigher_profile(plant, **overrides) -> FileImportProfile:
    values = {
        "name": "l1-pri check-weigher CSV",
        "file_format": FileFormat.CSV,
        "delimiter": ";",
        "encoding": "utf-8-sig",
        "decimal_separator": DecimalSeparator.COMMA,
        "station": plant.stations["fill"],
        "equipment_code": "cw-1",
        "source": "FILL-01 check-weigher",
        "columns": FILL_COLUMNS,
    }
    values.update(overrides)
    profile = FileImportProfile(**values)
    profile.full_clean()
    profile.save()
    return profile


def weigher_file(serials, masses_g, *, start: datetime = SHIFT_START, takt_s: float = 60.0):
    """The check-weigher export for the test plant's limits (405.9 .. 414.1 g)."""
    return checkweigher_csv(
        serials,
        start=start,
        takt_s=takt_s,
        nominal_g=410.0,
        lsl_g=405.9,
        usl_g=414.1,
        masses_g=masses_g,
    )
