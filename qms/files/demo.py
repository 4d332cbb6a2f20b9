"""Import profiles for the demo plant's exports, and generators of realistic sample files.

:func:`profiles_seed` creates (once) the profiles of line L2-CYL:

* ``l2-cyl check-weigher CSV``: the fill station's Mettler Toledo check-weigher,
  ``Barcode;Timestamp;Fill mass [g];Result``, semicolon-separated with a decimal comma and
  local (Europe/Berlin) time, as German plants export.
* ``l2-cyl formation cabinet CSV``: a formation cabinet's per-channel step summary
  (``power_channel, tray_position, barcode, step_no, step_name, end_time, test_time,
  voltage_mv, current_ma, capacity_mah, energy_mwh, temperature_c, end_flag,
  stop_condition, contact_impedance``) below a three-line preamble; the CC-CV charge step
  gives the first-charge capacity, mAh scaled to Ah.
* ``l2-cyl leak tester XLSX``: the helium leak detector's workbook, leak rate in Pa·m³/s
  recorded in mbar·L/s.

The generators (:func:`checkweigher_csv`, :func:`formation_summary_csv`,
:func:`leak_test_xlsx`) write files of the same shape, for the demo and for tests.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction

from qms.models import Station

from .choices import DecimalSeparator, FileFormat, ImportKind
from .models import FileImportProfile

SEED_REASON = "demo import profiles seeded"

CHECKWEIGHER = "l2-cyl check-weigher CSV"
FORMATION = "l2-cyl formation cabinet CSV"
LEAK_TEST = "l2-cyl leak tester XLSX"

CHECKWEIGHER_HEADER = ("Barcode", "Timestamp", "Fill mass [g]", "Result")
CHECKWEIGHER_TIME_FORMAT = "%d.%m.%Y %H:%M:%S"
FORMATION_HEADER = (
    "power_channel", "tray_position", "barcode", "step_no", "step_name", "end_time",
    "test_time", "voltage_mv", "current_ma", "capacity_mah", "energy_mwh", "temperature_c",
    "end_flag", "stop_condition", "contact_impedance",
)  # fmt: skip
FORMATION_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LEAK_HEADER = ("Serial", "Date/Time", "Leak rate [Pa·m³/s]", "Result", "Operator")
LEAK_SHEET = "Results"


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    description: str
    station: str
    values: dict


def _profile_specs(line: str) -> tuple[ProfileSpec, ...]:
    return (
        ProfileSpec(
            CHECKWEIGHER,
            "Daily export of the fill station's check-weigher (Mettler Toledo XSR205): one "
            "line per cell, weight after fill minus weight before fill.",
            "fill",
            {
                "file_format": FileFormat.CSV,
                "delimiter": ";",
                "encoding": "utf-8-sig",
                "decimal_separator": DecimalSeparator.COMMA,
                "header_row": 1,
                "equipment_code": "cw-1",
                "source": "L2-CW-0588 check-weigher",
                "columns": {
                    "serial": "Barcode",
                    "timestamp": {
                        "column": "Timestamp",
                        "format": CHECKWEIGHER_TIME_FORMAT,
                        "timezone": "Europe/Berlin",
                    },
                    "result": {"column": "Result", "ok": ["OK"], "nok": ["NOK"]},
                    "measurements": [
                        {"column": "Fill mass [g]", "characteristic": "fill-mass", "unit": "g"}
                    ],
                },
            },
        ),
        ProfileSpec(
            FORMATION,
            "Per-channel step summary of formation cabinet 1 (Digatron UBT 5-256), one row "
            "per channel and step below a three-line preamble. The CC-CV charge step "
            "(0.1C to 4.2 V) gives the first-charge capacity.",
            "form",
            {
                "file_format": FileFormat.CSV,
                "delimiter": ",",
                "encoding": "utf-8",
                "decimal_separator": DecimalSeparator.POINT,
                "header_row": 4,
                "equipment_code": "fc-01",
                "source": "L2-FC-1001 formation cabinet",
                "columns": {
                    "serial": "barcode",
                    "timestamp": {
                        "column": "end_time",
                        "format": FORMATION_TIME_FORMAT,
                        "timezone": "Europe/Berlin",
                    },
                    "result": {"column": "end_flag", "ok": ["Finish"]},
                    "include": {"column": "step_name", "values": ["CCCV_Chg"]},
                    "key": ["step_no"],
                    "measurements": [
                        {
                            "column": "capacity_mah",
                            "characteristic": "formation-charge-capacity",
                            "unit": "mAh",
                            "scale": 0.001,
                        }
                    ],
                },
            },
        ),
        ProfileSpec(
            LEAK_TEST,
            "Workbook of the helium leak detector (Pfeiffer Vacuum ASM 340) after crimping; "
            "leak rate exported in Pa·m³/s (1 Pa·m³/s = 10 mbar·L/s).",
            "seal",
            {
                "file_format": FileFormat.XLSX,
                "sheet_name": LEAK_SHEET,
                "header_row": 1,
                "equipment_code": "leak-1",
                "source": "L2-HE-0045 leak detector",
                "columns": {
                    "serial": "Serial",
                    "timestamp": {"column": "Date/Time", "timezone": "Europe/Berlin"},
                    "result": {"column": "Result", "ok": ["PASS"], "nok": ["FAIL"]},
                    "operator": "Operator",
                    "measurements": [
                        {
                            "column": "Leak rate [Pa·m³/s]",
                            "characteristic": "he-leak-rate",
                            "unit": "Pa·m³/s",
                        }
                    ],
                },
            },
        ),
    )


@transaction.atomic
def profiles_seed(*, site: str = "GF1", line: str = "L2-CYL") -> list[FileImportProfile]:
    """Create the demo import profiles that are missing; existing ones (perhaps edited by a
    quality engineer) are left as they are. Returns the profiles created."""
    created = []
    for spec in _profile_specs(line):
        if FileImportProfile.objects.filter(name=spec.name).exists():
            continue
        station = Station.objects.get(
            line__site__code__iexact=site, line__code__iexact=line, code=spec.station
        )
        profile = FileImportProfile(
            name=spec.name, description=spec.description, station=station, **spec.values
        )
        profile.kind = ImportKind.PROCESS_RESULT
        profile.full_clean()
        profile._change_reason = SEED_REASON
        profile.save()
        created.append(profile)
    return created


# --- Sample files ----------------------------------------------------------------------------


def csv_bytes(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    preamble: Sequence[Sequence[str]] = (),
) -> bytes:
    """A CSV file as equipment writes it: CRLF line ends, an optional preamble."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerows(preamble)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


def _comma(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}".replace(".", ",")


def checkweigher_csv(
    serials: Sequence[str],
    *,
    start: datetime,
    takt_s: float = 12.0,
    nominal_g: float = 5.0,
    lsl_g: float = 4.95,
    usl_g: float = 5.05,
    seed: int = 0,
    masses_g: Sequence[float] | None = None,
) -> bytes:
    """The check-weigher's export for ``serials``, one every ``takt_s`` from ``start``
    (naive local time). Fill masses are normal around ``nominal_g`` with sigma a quarter of
    the tolerance unless ``masses_g`` gives them; the result is NOK outside the limits."""
    rng = random.Random(seed)  # noqa: S311  sample data, not security
    sigma = (usl_g - lsl_g) / 8
    rows = []
    for i, serial in enumerate(serials):
        mass = masses_g[i] if masses_g is not None else rng.gauss(nominal_g, sigma)
        mass = round(mass, 3)
        at = start + timedelta(seconds=takt_s * i)
        rows.append(
            (
                serial,
                at.strftime(CHECKWEIGHER_TIME_FORMAT),
                _comma(mass, 3),
                "OK" if lsl_g <= mass <= usl_g else "NOK",
            )
        )
    return csv_bytes(CHECKWEIGHER_HEADER, rows, delimiter=";", encoding="utf-8-sig")


def formation_summary_csv(
    serials: Sequence[str],
    *,
    start: datetime,
    cabinet: str = "FC-01",
    program: str = "FORM-21700-NMC811-v3",
    seed: int = 0,
    protect_channels: Iterable[int] = (),
) -> bytes:
    """A formation cabinet's per-channel step summary for one tray (channel ``i + 1`` holds
    ``serials[i]``), started together at ``start`` (naive local time): rest, CC-CV charge at
    0.1C (500 mA) to 4.2 V with a 50 mA cut-off, rest. Channels in ``protect_channels`` stop
    the charge on over-temperature (end flag ``Protect``)."""
    rng = random.Random(seed)  # noqa: S311  sample data, not security
    protect = set(protect_channels)
    preamble = [
        ["Cabinet", cabinet],
        ["Program", program],
        ["Started", start.strftime(FORMATION_TIME_FORMAT)],
    ]
    rows = []
    for i, serial in enumerate(serials):
        channel = {
            "power_channel": i + 1,
            "tray_position": f"{chr(ord('A') + i // 16)}{i % 16 + 1:02d}",  # 16 x 16 tray
            "barcode": serial,
            "contact_impedance": round(rng.uniform(6.0, 11.0), 1),
        }
        rest = {
            "current_ma": 0,
            "capacity_mah": 0.0,
            "end_flag": "Finish",
            "stop_condition": "Time",
        }
        steps = [{"step_name": "Rest", "test_time": 60, "voltage_mv": round(rng.gauss(2950, 15), 1),
                  "temperature_c": round(rng.gauss(25.0, 0.4), 1), **rest}]  # fmt: skip
        if i + 1 in protect:
            capacity = round(rng.uniform(1800.0, 2600.0), 1)
            steps.append({"step_name": "CCCV_Chg", "test_time": 60 + int(capacity / 500 * 3600),
                          "voltage_mv": round(rng.gauss(3890.0, 20.0), 1), "current_ma": 500,
                          "capacity_mah": capacity, "temperature_c": 45.6,
                          "end_flag": "Protect", "stop_condition": "T>45C"})  # fmt: skip
        else:
            capacity = round(rng.gauss(5700.0, 43.0), 1)
            charge_s = int(capacity / 500 * 3600 * 1.04)  # CC part plus the CV tail
            steps.append({"step_name": "CCCV_Chg", "test_time": 60 + charge_s,
                          "voltage_mv": 4200.0, "current_ma": 50, "capacity_mah": capacity,
                          "temperature_c": round(rng.gauss(31.0, 0.8), 1),
                          "end_flag": "Finish", "stop_condition": "I<50mA"})  # fmt: skip
            steps.append({"step_name": "Rest", "test_time": 60 + charge_s + 1800,
                          "voltage_mv": round(rng.gauss(4175.0, 3.0), 1),
                          "temperature_c": round(rng.gauss(27.0, 0.5), 1), **rest})  # fmt: skip
        for no, step in enumerate(steps, start=1):
            end = start + timedelta(seconds=step["test_time"])
            record = {
                **channel,
                **step,
                "step_no": no,
                "end_time": end.strftime(FORMATION_TIME_FORMAT),
                # mean charge voltage about 3.86 V
                "energy_mwh": round(step["capacity_mah"] * 3.86, 1),
            }
            rows.append([record[column] for column in FORMATION_HEADER])
    return csv_bytes(FORMATION_HEADER, rows, preamble=preamble)


def xlsx_bytes(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    sheet: str = "Sheet1",
    preamble: Sequence[Sequence[object]] = (),
    sheets_before: Sequence[str] = (),
    datetime_format: str = "dd.mm.yyyy hh:mm:ss",
) -> bytes:
    """A workbook as equipment software writes it: optional sheets before the data sheet,
    optional preamble rows above the header; datetime cells shown in ``datetime_format``."""
    from openpyxl import Workbook

    book = Workbook()
    first = book.active
    for title in sheets_before:
        book.create_sheet(title)
    data = book.create_sheet(sheet) if sheets_before else first
    if sheets_before:
        book.remove(first)
    data.title = sheet
    for line in preamble:
        data.append(list(line))
    data.append(list(header))
    for row in rows:
        data.append(list(row))
        for cell in data[data.max_row]:
            if isinstance(cell.value, datetime):
                cell.number_format = datetime_format
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def leak_test_xlsx(
    serials: Sequence[str],
    *,
    start: datetime,
    takt_s: float = 12.0,
    operator: str = "K. Wagner",
    seed: int = 0,
    leak_rates_pa_m3_s: Sequence[float] | None = None,
    usl_pa_m3_s: float = 1e-7,
) -> bytes:
    """The leak detector's workbook: sheet ``Results``, date/time cells in local time, leak
    rates around 1e-9 Pa·m³/s (log-normal) unless given; FAIL above ``usl_pa_m3_s``."""
    rng = random.Random(seed)  # noqa: S311  sample data, not security
    rows = []
    for i, serial in enumerate(serials):
        rate = (
            leak_rates_pa_m3_s[i]
            if leak_rates_pa_m3_s is not None
            else float(f"{rng.lognormvariate(-20.7, 0.5):.2e}")
        )
        at = start + timedelta(seconds=takt_s * i)
        rows.append([serial, at, rate, "PASS" if rate <= usl_pa_m3_s else "FAIL", operator])
    return xlsx_bytes(LEAK_HEADER, rows, sheet=LEAK_SHEET)
