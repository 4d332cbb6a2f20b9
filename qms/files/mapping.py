"""The column mapping of a file import profile, and how one cell of a row becomes a value.

A profile's ``columns`` is a JSON object naming the columns of the export by their header
text (example: the L2-CYL check-weigher's semicolon-separated CSV)::

    {
      "serial": "Barcode",
      "timestamp": {"column": "Timestamp", "format": "%d.%m.%Y %H:%M:%S",
                    "timezone": "Europe/Berlin"},
      "result": {"column": "Result", "ok": ["OK"], "nok": ["NOK"]},
      "program": "Recipe",
      "operator": "Operator",
      "measurements": [
        {"column": "Fill mass [g]", "characteristic": "fill-mass", "unit": "g"}
      ]
    }

* ``serial`` (required): the unit's serial or GS1 element string.
* ``timestamp`` (required): ``format`` is a ``strptime`` format or ``"iso"`` (ISO 8601, the
  default); a time without an offset is local time in ``timezone`` (IANA name, default
  ``UTC``) and is converted to UTC. XLSX date cells are taken as they are (local time).
* ``result`` (required): the OK/NOK column. A value in ``ok`` (case-insensitive) is OK; with
  a ``nok`` list a value in neither list is refused, without one everything else is NOK.
* ``program``, ``operator``, ``equipment`` (optional): columns copied into the envelope;
  ``equipment`` overrides the profile's fixed equipment code per row.
* ``measurements``: column -> characteristic code of the profile's station, ``unit`` of the
  column and an optional ``scale`` so the value lands in the characteristic's unit
  (``capacity_mah`` in mAh -> ``formation-charge-capacity`` in Ah: scale 0.001). Between
  units of :data:`UNIT_FACTORS` the scale is implied and a different one is refused; between
  other different units a scale is required. ``"required": false`` lets an empty cell mean
  "not measured".
* ``include`` (optional): ``{"column": "step_name", "values": ["CCCV_Chg"]}`` imports only
  the rows whose value is listed (a cabinet export with one row per step); other rows are
  counted as skipped.
* ``key`` (optional): further columns that tell two records of one unit at one time apart
  (e.g. ``step_no``); see :func:`qms.files.services.row_message_id`.
* ``unit_kind`` (optional): creates the unit on its first station visit when it is unknown.
"""

from __future__ import annotations

import codecs
import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator

from qms.ingest.envelope import SCHEMA_PATH
from qms.models import Characteristic, Equipment, Station

from .choices import DecimalSeparator, FileFormat, ImportKind

ISO = "iso"

#: Factor from the first unit to the second: value_in_second = value_in_first * factor.
UNIT_FACTORS: dict[tuple[str, str], Decimal] = {
    (a, b): Decimal(f)
    for a, b, f in [
        ("mg", "g", "0.001"), ("g", "mg", "1000"), ("kg", "g", "1000"), ("g", "kg", "0.001"),
        ("mAh", "Ah", "0.001"), ("Ah", "mAh", "1000"),
        ("mWh", "Wh", "0.001"), ("Wh", "mWh", "1000"), ("Wh", "kWh", "0.001"),
        ("mV", "V", "0.001"), ("V", "mV", "1000"), ("mA", "A", "0.001"), ("A", "mA", "1000"),
        ("µΩ", "mΩ", "0.001"), ("mΩ", "µΩ", "1000"), ("mΩ", "Ω", "0.001"), ("Ω", "mΩ", "1000"),
        ("kΩ", "MΩ", "0.001"), ("GΩ", "MΩ", "1000"), ("MΩ", "GΩ", "0.001"),
        ("µm", "mm", "0.001"), ("mm", "µm", "1000"),
        ("Pa·m³/s", "mbar·L/s", "10"), ("mV/h", "mV/day", "24"),
    ]
}  # fmt: skip

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class MappingError(ValueError):
    """A profile whose mapping cannot work; ``path`` says where (``measurements[1].unit``)."""

    def __init__(self, message: str, *, path: str = "columns"):
        super().__init__(message)
        self.message = message
        self.path = path


class CellError(ValueError):
    """One cell that cannot become a value; the caller names the column."""


def unit_normalize(unit: str) -> str:
    """One spelling per unit: micro sign and Greek mu, Ohm sign and Omega, 'Ohm' -> 'Ω'."""
    text = unicodedata.normalize("NFKC", unit.strip()).replace("Ohm", "Ω").replace("ohm", "Ω")
    return text.replace("\u03bc", "\u00b5")  # NFKC turns µ into Greek mu; keep the micro sign


_FACTORS = {(unit_normalize(a), unit_normalize(b)): f for (a, b), f in UNIT_FACTORS.items()}


def unit_factor(column_unit: str, target_unit: str) -> Decimal | None:
    """The implied scale between two units: 1 for the same unit, the table's factor, or None."""
    a, b = unit_normalize(column_unit), unit_normalize(target_unit)
    if a == b:
        return Decimal(1)
    return _FACTORS.get((a, b))


def _unit_kinds() -> list[str]:
    schema = json.loads(SCHEMA_PATH.read_text())
    return schema["$defs"]["process_result"]["properties"]["unit_kind"]["enum"]


_COLUMN = {"type": "string", "minLength": 1, "maxLength": 200}
_VALUES = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}

MAPPING_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["serial", "timestamp", "result"],
    "properties": {
        "serial": _COLUMN,
        "timestamp": {
            "type": "object",
            "additionalProperties": False,
            "required": ["column"],
            "properties": {
                "column": _COLUMN,
                "format": {"type": "string", "minLength": 2, "maxLength": 64},
                "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
            },
        },
        "result": {
            "type": "object",
            "additionalProperties": False,
            "required": ["column", "ok"],
            "properties": {"column": _COLUMN, "ok": _VALUES, "nok": _VALUES},
        },
        "program": _COLUMN,
        "operator": _COLUMN,
        "equipment": _COLUMN,
        "unit_kind": {"type": "string"},
        "key": {"type": "array", "maxItems": 8, "items": _COLUMN},
        "include": {
            "type": "object",
            "additionalProperties": False,
            "required": ["column", "values"],
            "properties": {"column": _COLUMN, "values": _VALUES},
        },
        "measurements": {
            "type": "array",
            "maxItems": 500,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["column", "characteristic", "unit"],
                "properties": {
                    "column": _COLUMN,
                    "characteristic": {"type": "string", "minLength": 1, "maxLength": 48},
                    "unit": {"type": "string", "minLength": 1, "maxLength": 24},
                    "scale": {"type": "number", "not": {"const": 0}},
                    "required": {"type": "boolean"},
                },
            },
        },
    },
}
_validator = Draft202012Validator(MAPPING_SCHEMA)


@dataclass(frozen=True)
class MeasurementColumn:
    """One measured column: read in ``unit``, multiplied by ``scale``, recorded in the
    characteristic's unit ``target_unit``."""

    column: str
    characteristic: str
    unit: str
    target_unit: str
    scale: Decimal
    required: bool


@dataclass(frozen=True)
class Mapping:
    """A validated column mapping (see the module docstring)."""

    serial: str
    timestamp: str
    timestamp_format: str
    timezone: tzinfo
    result: str
    ok_values: frozenset[str]
    nok_values: frozenset[str] | None
    program: str | None
    operator: str | None
    equipment: str | None
    unit_kind: str | None
    key: tuple[str, ...]
    include_column: str | None
    include_values: frozenset[str]
    measurements: tuple[MeasurementColumn, ...]

    @property
    def columns(self) -> list[str]:
        """Every column the mapping reads, each once, in mapping order."""
        names = [self.serial, self.timestamp, self.result]
        names += [c for c in (self.program, self.operator, self.equipment) if c]
        names += list(self.key)
        names += [self.include_column] if self.include_column else []
        names += [m.column for m in self.measurements]
        return list(dict.fromkeys(names))

    @property
    def characteristic_codes(self) -> tuple[str, ...]:
        return tuple(sorted(m.characteristic for m in self.measurements))


def _path(error) -> str:
    out = "columns"
    for p in error.absolute_path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def mapping_parse(columns: object, *, station: Station | None) -> Mapping:
    """Validate a profile's ``columns`` JSON against the schema and the station's control
    plan; raise :class:`MappingError` naming the place, or return the :class:`Mapping`."""
    if not isinstance(columns, dict):
        raise MappingError("The column mapping must be a JSON object.")
    errors = sorted(_validator.iter_errors(columns), key=lambda e: list(e.absolute_path))
    if errors:
        raise MappingError(errors[0].message, path=_path(errors[0]))

    ts = columns["timestamp"]
    fmt = ts.get("format", ISO)
    if fmt != ISO and "%" not in fmt:
        raise MappingError(
            f"{fmt!r} is neither 'iso' nor a strptime format such as '%d.%m.%Y %H:%M:%S'.",
            path="columns.timestamp.format",
        )
    tz_name = ts.get("timezone", "UTC")
    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise MappingError(
            f"Unknown time zone {tz_name!r} (use an IANA name such as Europe/Berlin).",
            path="columns.timestamp.timezone",
        ) from exc

    unit_kind = columns.get("unit_kind")
    if unit_kind is not None and unit_kind not in _unit_kinds():
        raise MappingError(
            f"Unknown unit kind {unit_kind!r}; one of {', '.join(_unit_kinds())}.",
            path="columns.unit_kind",
        )

    chars = {}
    if station is not None:
        chars = {c.code.lower(): c for c in Characteristic.objects.filter(station=station)}
    measured = []
    seen_chars: set[str] = set()
    for i, m in enumerate(columns.get("measurements", [])):
        where = f"columns.measurements[{i}]"
        code = m["characteristic"]
        char = chars.get(code.lower())
        if station is not None and char is None:
            raise MappingError(
                f"Station {station} has no characteristic {code!r}.", path=f"{where}.characteristic"
            )
        if char is not None and not char.is_active:
            raise MappingError(
                f"Characteristic {char} is inactive.", path=f"{where}.characteristic"
            )
        if code.lower() in seen_chars:
            raise MappingError(
                f"Characteristic {code!r} is mapped twice.", path=f"{where}.characteristic"
            )
        seen_chars.add(code.lower())
        target = char.unit if char is not None else m["unit"]
        implied = unit_factor(m["unit"], target)
        given = Decimal(str(m["scale"])) if "scale" in m else None
        if given is None and implied is None:
            raise MappingError(
                f"Column unit {m['unit']!r} differs from the unit {target!r} of {code!r}: "
                "give the scale that converts it.",
                path=f"{where}.scale",
            )
        if given is not None and implied is not None and given != implied:
            raise MappingError(
                f"A value in {m['unit']} is {implied} {target}, not {given}: "
                f"remove the scale or set it to {implied}.",
                path=f"{where}.scale",
            )
        measured.append(
            MeasurementColumn(
                column=m["column"],
                characteristic=char.code if char is not None else code,
                unit=m["unit"],
                target_unit=target,
                scale=given if given is not None else implied,
                required=m.get("required", True),
            )
        )

    equipment_column = columns.get("equipment")
    mapping = Mapping(
        serial=columns["serial"],
        timestamp=ts["column"],
        timestamp_format=fmt,
        timezone=zone,
        result=columns["result"]["column"],
        ok_values=frozenset(v.strip().casefold() for v in columns["result"]["ok"]),
        nok_values=(
            frozenset(v.strip().casefold() for v in columns["result"]["nok"])
            if "nok" in columns["result"]
            else None
        ),
        program=columns.get("program"),
        operator=columns.get("operator"),
        equipment=equipment_column,
        unit_kind=unit_kind,
        key=tuple(columns.get("key", [])),
        include_column=columns["include"]["column"] if "include" in columns else None,
        include_values=frozenset(
            v.strip().casefold() for v in columns.get("include", {}).get("values", [])
        ),
        measurements=tuple(measured),
    )
    if mapping.nok_values and mapping.ok_values & mapping.nok_values:
        raise MappingError(
            f"{sorted(mapping.ok_values & mapping.nok_values)} are listed as OK and as NOK.",
            path="columns.result",
        )
    return mapping


def profile_mapping(profile) -> Mapping:
    """Check a :class:`~qms.files.models.FileImportProfile` as a whole (format options,
    station, equipment, column mapping) and return its :class:`Mapping`."""
    if profile.file_format not in FileFormat.values:
        raise MappingError(f"Unknown format {profile.file_format!r}.", path="file_format")
    if profile.kind not in ImportKind.values:
        raise MappingError(
            f"Kind {profile.kind!r} cannot be imported from files; one of "
            f"{', '.join(ImportKind.values)}.",
            path="kind",
        )
    if profile.decimal_separator not in DecimalSeparator.values:
        raise MappingError("The decimal separator is '.' or ','.", path="decimal_separator")
    if profile.thousands_separator == profile.decimal_separator:
        raise MappingError(
            "The thousands separator cannot be the decimal separator.", path="thousands_separator"
        )
    if profile.file_format == FileFormat.CSV:
        if len(profile.delimiter) != 1 or profile.delimiter in "\r\n":
            raise MappingError("The delimiter is one character.", path="delimiter")
        if profile.delimiter in (profile.decimal_separator, profile.thousands_separator):
            raise MappingError(
                f"The delimiter {profile.delimiter!r} is also a number separator; numbers "
                "would be split.",
                path="delimiter",
            )
        if len(profile.quotechar) != 1 or profile.quotechar == profile.delimiter:
            raise MappingError(
                "The quote character is one character, not the delimiter.", path="quotechar"
            )
        try:
            codecs.lookup(profile.encoding)
        except LookupError as exc:
            raise MappingError(f"Unknown encoding {profile.encoding!r}.", path="encoding") from exc
    station = profile.station if profile.station_id else None
    if station is None:
        raise MappingError("A profile imports for one station.", path="station")
    if (
        profile.equipment_code
        and not Equipment.objects.filter(
            station=station, code__iexact=profile.equipment_code
        ).exists()
    ):
        raise MappingError(
            f"Station {station} has no equipment {profile.equipment_code!r}.",
            path="equipment_code",
        )
    return mapping_parse(profile.columns, station=station)


# --- Cells -------------------------------------------------------------------------------


def text_value(value: object) -> str:
    """A cell as text: XLSX integers (serials typed as numbers) without a trailing '.0'."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).strip()


def number_parse(value: object, *, decimal_separator: str, thousands_separator: str) -> Decimal:
    """A cell as an exact decimal number. Text uses the profile's separators; a separator
    the profile does not declare is refused rather than guessed (``5.012`` in a
    decimal-comma file could mean 5012). NaN and infinities are refused."""
    if isinstance(value, bool):
        raise CellError(f"{value!r} is not a number.")
    if isinstance(value, int | float):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if not number.is_finite():
            raise CellError(f"{value!r} is not a finite number.")
        return number
    text = text_value(value)
    if not text:
        raise CellError("the cell is empty.")
    cleaned = text.replace("\u00a0", "").replace("\u202f", "")  # (narrow) no-break spaces
    if thousands_separator:
        cleaned = cleaned.replace(thousands_separator, "")
    other = "." if decimal_separator == "," else ","
    if other in cleaned:
        raise CellError(
            f"{text!r} contains {other!r}, but the profile's decimal separator is "
            f"{decimal_separator!r}."
        )
    cleaned = cleaned.replace(decimal_separator, ".")
    if not _NUMBER.fullmatch(cleaned):
        raise CellError(f"{text!r} is not a number.")
    try:
        return Decimal(cleaned)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only numbers
        raise CellError(f"{text!r} is not a number.") from exc


def timestamp_parse(value: object, *, fmt: str, zone: tzinfo) -> datetime:
    """A cell as an aware UTC datetime. A naive time is local time in ``zone``; a local time
    that does not exist (the hour skipped when clocks go forward) is refused. In the hour
    that repeats when clocks go back, the first (summer-time) reading is taken."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        raise CellError(f"{value.isoformat()} is a date without a time of day.")
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            # A naive result is local time; the profile's zone is applied below.
            when = datetime.fromisoformat(text) if fmt == ISO else datetime.strptime(text, fmt)  # noqa: DTZ007
        except ValueError as exc:
            shown = "ISO 8601" if fmt == ISO else fmt
            raise CellError(f"{text!r} does not match the format {shown!r}.") from exc
    elif value is None or (isinstance(value, str) and not value.strip()):
        raise CellError("the cell is empty.")
    else:
        raise CellError(f"{value!r} is not a date and time.")
    if when.tzinfo is None:
        local = when.replace(tzinfo=zone)
        if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != when:
            raise CellError(
                f"{when:%Y-%m-%d %H:%M:%S} does not exist in {zone} (the clocks went "
                "forward); check the exporting clock's time zone."
            )
        when = local
    return when.astimezone(UTC)
