"""Reading cycler exports into canonical formation records (:mod:`.records`).

A *profile* names how a file is read: the vendor layout (formation-cabinet tray CSV,
Neware BTS, Arbin MITS, Maccor), the file kind (CSV, XLSX, tab-separated text, Neware
.nda/.ndax) and the options a site sets once per cycler (time zone of naive timestamps,
encoding, delimiter, sign convention, strictness). :data:`PROFILES` holds the built-in
ones; a site's file import profile derives its own with :func:`dataclasses.replace`.

:func:`cycler_file_read` is the one entry point. It

1. loads the bytes (a path or the bytes themselves) and refuses what is not the profile's
   kind of file before decoding anything (a workbook, a binary .nda, an Arbin .res
   database given to a CSV profile);
2. finds the header row (vendor exports put title lines above it), matches each column to a
   canonical field by the vendor's documented spellings and takes the unit from the header
   (``Current(mA)``, ``Voltage [V]``, ``voltage_mv``, Maccor's ``Amps``);
3. converts whole columns at once (numpy), naming the row and column of the first value
   that is empty, NaN or not a number;
4. groups rows into cells and executed steps, checks the data points and the time order,
   signs the current (+ = charging) and derives the step results.

Nothing is returned until the whole file has passed: a bad file raises
:class:`~formation.cyclers.errors.CyclerFileError` and yields no records at all.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import operator
import os
import re
import unicodedata
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from .errors import CyclerFileError
from .records import (
    CellRun,
    CyclerFile,
    SignConvention,
    StepCurve,
    StepRecord,
    StepType,
)

AUTO = "auto"

#: Lines or worksheet rows searched for the header row (Maccor and Arbin put title and
#: metadata lines above it).
HEADER_SEARCH_ROWS = 60

#: Plausible ranges of a single cell's samples. A value outside means a unit mix-up (mV
#: read as V, Kelvin read as °C) rather than a real reading.
VOLTAGE_RANGE_V = (-0.5, 6.0)
CURRENT_LIMIT_A = 2000.0  # 320 Ah cells at 5C stay below this
TEMPERATURE_RANGE_C = (-40.0, 150.0)

#: A step's counted capacity and the integral of its current may differ by sampling, not
#: by more than this factor; 1000 (mA as A) or 3600 (A·s as Ah) is a unit error.
CAPACITY_CHECK_FACTOR = 5.0

#: A charge step is at its voltage limit within this band; its current has "fallen" (a CV
#: phase) once it is this fraction below the step's constant current.
CV_VOLTAGE_BAND_V = 0.005
CV_CURRENT_DROP = 0.10


# --- Profiles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CyclerProfile:
    """How one kind of cycler file is read.

    ``vendor``: ``cabinet``, ``neware``, ``arbin`` or ``maccor``; ``file_format``: ``csv``,
    ``txt`` (tab-separated text), ``xlsx`` or ``nda`` (Neware binary, .nda/.ndax).
    ``strict`` refuses header columns the vendor layout does not know; otherwise they are
    listed in :attr:`CyclerFile.ignored_columns`. ``sign_convention`` is a
    :class:`SignConvention` value, ``"auto"`` (decided from the file's charge and discharge
    steps, formation cabinets) or None for the vendor's documented one. ``timezone``
    (IANA) applies to timestamps without an offset. ``date_order`` (``mdy`` or ``dmy``)
    reads slash dates with the year last (``03/12/2024``). ``pulse_max_s``: a current step
    of at most this long, whose type the file does not name, is a pulse.
    ``rest_current_a``: a step whose current stays within this is a rest.
    """

    name: str
    vendor: str
    file_format: str
    strict: bool = False
    sign_convention: str | None = None
    timezone: str = "UTC"
    encoding: str = "utf-8"
    delimiter: str | None = None
    decimal_separator: str = "."
    date_order: str = "mdy"
    sheet_name: str | None = None
    pulse_max_s: float = 30.0
    rest_current_a: float = 0.005

    @property
    def source_format(self) -> str:
        return f"{self.vendor}_{self.file_format}"


PROFILES: dict[str, CyclerProfile] = {
    p.name: p
    for p in (
        CyclerProfile(
            name="cabinet_csv",
            vendor="cabinet",
            file_format="csv",
            strict=True,
            sign_convention=AUTO,
            date_order="dmy",
        ),
        CyclerProfile(name="neware_csv", vendor="neware", file_format="csv"),
        CyclerProfile(name="neware_xlsx", vendor="neware", file_format="xlsx"),
        CyclerProfile(name="neware_nda", vendor="neware", file_format="nda"),
        CyclerProfile(name="arbin_csv", vendor="arbin", file_format="csv"),
        CyclerProfile(name="arbin_xlsx", vendor="arbin", file_format="xlsx"),
        CyclerProfile(name="maccor_txt", vendor="maccor", file_format="txt"),
    )
}


# --- Vendor layouts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Alias:
    """One header spelling of a field, compared after :func:`header_key`. ``unit`` is the
    unit the name implies (Maccor ``Amps`` is A). ``with_unit`` True/False matches only a
    header with/without a unit part (Maccor ``Step`` is the step number, ``Step (Sec)`` the
    step time). ``pattern`` makes ``key`` a regular expression (numbered aux channels)."""

    key: str
    unit: str | None = None
    with_unit: bool | None = None
    pattern: bool = False
    label: str | None = None  # the spelling shown in messages

    def matches(self, key: str, unit: str | None) -> bool:
        if self.with_unit is not None and (unit is not None) != self.with_unit:
            return False
        if self.pattern:
            return re.fullmatch(self.key, key) is not None
        return key == self.key


def aliases(*names: str | Alias) -> tuple[Alias, ...]:
    """Aliases from header spellings (normalised here) or ready :class:`Alias` objects."""
    return tuple(n if isinstance(n, Alias) else Alias(header_key(n), label=n) for n in names)


@dataclass(frozen=True)
class Field:
    """A canonical column. ``kind``: ``number``, ``integer``, ``duration``, ``timestamp``
    or ``text``; ``quantity`` selects the unit table of a number (``voltage``, ``current``,
    ``capacity``, ``energy``, ``temperature``) or a duration. ``default_unit`` applies when
    neither the header nor the alias gives one."""

    name: str
    kind: str
    aliases: tuple[Alias, ...]
    required: bool = False
    quantity: str | None = None
    default_unit: str | None = None


@dataclass(frozen=True)
class VendorSpec:
    """A vendor's export layout.

    ``one_of``: groups of fields of which at least one must be present (capacity per step,
    or the pair of charge and discharge counters). ``known``: header keys (regular
    expressions) the layout has but the reader does not use; a strict profile refuses
    anything else. ``capacity_counter``: ``step`` (the cycler restarts its capacity and
    energy counters at each step) or ``cumulative`` (counters run on across steps and reset
    only at a cycle or a mode change; detected per step). ``step_kinds``: ``type`` (a step
    type column names each step), ``state`` (Maccor's C/D/R/O state per row) or ``infer``
    (from the current, Arbin). ``multi_cell``: a file holds many cells (a tray).
    """

    vendor: str
    title: str
    fields: tuple[Field, ...]
    one_of: tuple[tuple[str, ...], ...] = ()
    known: tuple[str, ...] = ()
    capacity_counter: str = "step"
    step_kinds: str = "type"
    sign_convention: SignConvention = SignConvention.CHARGE_POSITIVE
    delimiter: str = ","
    multi_cell: bool = False
    #: Metadata from the lines above the header (text files): rows of cells -> dict.
    preamble_metadata: Callable[[list[list[str]]], dict[str, str]] | None = None
    #: Worksheet holding the records, from the sheet names (None: the first).
    data_sheet: Callable[[list[str]], str | None] | None = None
    #: Metadata from the other worksheets of a workbook.
    workbook_metadata: Callable[[object, str], dict[str, str]] | None = None
    #: Metadata keys that give identity fields (``barcode``, ``channel``, ...).
    metadata_identity: dict[str, str] = field(default_factory=dict)
    #: Reads a binary export into a table (Neware .nda).
    binary_table: Callable[[bytes, str, CyclerProfile], Table] | None = None

    def field_named(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


_SPECS: dict[str, VendorSpec] = {}


def spec_register(spec: VendorSpec) -> VendorSpec:
    """Called by each vendor module at import."""
    _SPECS[spec.vendor] = spec
    return spec


def _specs() -> dict[str, VendorSpec]:
    # The vendor modules register themselves; importing them here keeps this module free
    # of an import cycle (they import the machinery below).
    from . import arbin, cabinet, maccor, neware  # noqa: F401

    return _SPECS


# --- Step type names ---------------------------------------------------------------------

#: Generic direction words (no CC/CV named): the kind is inferred from the curve.
CHARGE = "charge"

STEP_NAMES: dict[str, StepType | str] = {}
for _names, _kind in (
    (("Rest", "Static", "Standby", "Idle", "Pause", "搁置", "静置"), StepType.REST),
    (("CC Chg", "CC Charge", "CC_Chg", "恒流充电"), StepType.CC_CHARGE),
    (("CV Chg", "CV Charge", "恒压充电"), StepType.CV_CHARGE),
    (
        ("CCCV Chg", "CC-CV Chg", "CCCV Charge", "CC-CV Charge", "恒流恒压充电"),
        StepType.CCCV_CHARGE,
    ),
    (("CP Chg", "CP Charge", "CPCV Chg", "恒功率充电"), StepType.CP_CHARGE),
    (("Chg", "Charge", "充电"), CHARGE),
    (
        (
            "CC DChg",
            "CV DChg",
            "CCCV DChg",
            "CP DChg",
            "CR DChg",
            "CPCV DChg",
            "DChg",
            "Discharge",
            "CC Discharge",
            "CP Discharge",
            "CC_DChg",
            "恒流放电",
            "恒功率放电",
            "放电",
        ),
        StepType.DISCHARGE,
    ),
    (("Pulse", "DCIR", "脉冲"), StepType.PULSE),
    (("OCV", "OCV Test", "开路电压"), StepType.OCV),
):
    for _n in _names:
        STEP_NAMES[re.sub(r"[\W_]+", "", _n.casefold())] = _kind


def step_name_kind(text: str) -> StepType | str | None:
    return STEP_NAMES.get(re.sub(r"[\W_]+", "", text.casefold()))


# --- Units -------------------------------------------------------------------------------

CLOCK = "hh:mm:ss"

#: Per quantity: unit spelling (after :func:`unit_key`) -> (canonical spelling, factor).
UNITS: dict[str, dict[str, tuple[str, float]]] = {
    "voltage": {"v": ("V", 1.0), "mv": ("mV", 1e-3)},
    "current": {"a": ("A", 1.0), "ma": ("mA", 1e-3), "µa": ("µA", 1e-6), "ua": ("µA", 1e-6)},
    "capacity": {
        "ah": ("Ah", 1.0),
        "a.h": ("Ah", 1.0),
        "a·h": ("Ah", 1.0),
        "a-h": ("Ah", 1.0),
        "ahr": ("Ah", 1.0),
        "a-hr": ("Ah", 1.0),
        "mah": ("mAh", 1e-3),
        "ma.h": ("mAh", 1e-3),
        "ma·h": ("mAh", 1e-3),
        "µah": ("µAh", 1e-6),
    },
    "energy": {
        "wh": ("Wh", 1.0),
        "w.h": ("Wh", 1.0),
        "w·h": ("Wh", 1.0),
        "w-h": ("Wh", 1.0),
        "whr": ("Wh", 1.0),
        "w-hr": ("Wh", 1.0),
        "mwh": ("mWh", 1e-3),
        "mw.h": ("mWh", 1e-3),
        "mw·h": ("mWh", 1e-3),
        "kwh": ("kWh", 1e3),
    },
    "temperature": {
        "°c": ("°C", 0.0),
        "c": ("°C", 0.0),
        "degc": ("°C", 0.0),
        "oc": ("°C", 0.0),
        "deg c": ("°C", 0.0),
        "k": ("K", -273.15),
    },
    "duration": {
        "s": ("s", 1.0),
        "sec": ("s", 1.0),
        "secs": ("s", 1.0),
        "second": ("s", 1.0),
        "seconds": ("s", 1.0),
        "ms": ("ms", 1e-3),
        "min": ("min", 60.0),
        "mins": ("min", 60.0),
        "minute": ("min", 60.0),
        "minutes": ("min", 60.0),
        "h": ("h", 3600.0),
        "hr": ("h", 3600.0),
        "hrs": ("h", 3600.0),
        "hour": ("h", 3600.0),
        "hours": ("h", 3600.0),
        "h:min:s.ms": (CLOCK, 0.0),
        "h:min:s": (CLOCK, 0.0),
        "hh:mm:ss": (CLOCK, 0.0),
        "hh:mm:ss.fff": (CLOCK, 0.0),
        "h:mm:ss": (CLOCK, 0.0),
        "hh:mm:ss.ms": (CLOCK, 0.0),
    },
}

#: Trailing ``_unit`` tokens of snake_case headers (``voltage_mv``, ``temperature_c``).
_SUFFIX_UNITS = {"v", "mv", "a", "ma", "ah", "mah", "wh", "mwh", "c", "degc", "k", "s", "ms"}

_BRACKETED = re.compile(r"^(?P<name>.*?)\s*[(\[]\s*(?P<unit>[^)\]]*?)\s*[)\]]\s*(?P<rest>.*)$")


def unit_key(unit: str) -> str:
    text = unicodedata.normalize("NFKC", unit).strip().casefold()
    return text.replace("\u03bc", "µ").replace("º", "°")


def header_key(name: str) -> str:
    """A header name compared without case, spaces or punctuation: ``Chg. Cap.`` ->
    ``chgcap``, ``Data_Point`` -> ``datapoint``, ``Rec#`` -> ``rec``."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", name).casefold())


def header_split(text: str) -> tuple[str, str | None]:
    """Split a header cell into (key, unit): ``Current(mA)`` -> (``current``, ``mA``),
    ``Temperature (C)_1`` -> (``temperature1``, ``C``), ``voltage_mv`` -> (``voltage``,
    ``mv``). A header without a unit part gives (key, None)."""
    text = unicodedata.normalize("NFKC", text).strip().lstrip("\ufeff")
    m = _BRACKETED.match(text)
    if m and m.group("unit"):
        return header_key(m.group("name") + m.group("rest")), m.group("unit")
    if "_" in text and " " not in text:
        head, _, tail = text.rpartition("_")
        if head and tail.casefold() in _SUFFIX_UNITS:
            return header_key(head), tail
    return header_key(text), None


# --- Loading -------------------------------------------------------------------------------


def _load(source: str | os.PathLike | bytes, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), name or "<bytes>"
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CyclerFileError(f"{path.name}: cannot be read: {exc.strerror}.", code="io") from exc
    return data, name or path.name


def _binary_kind(data: bytes) -> str | None:
    """What a binary file is, by its first bytes; None for text."""
    if data.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            return "a damaged ZIP archive"
        if any(n.startswith("xl/") for n in names):
            return "an XLSX workbook"
        return "a ZIP archive (a Neware .ndax file?)"
    if data.startswith(b"NEWARE"):
        return "a Neware .nda binary file"
    if data[4:19] in (b"Standard Jet DB", b"Standard ACE DB"):
        return "an MS Access database (an Arbin .res file?)"
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "a legacy Excel .xls workbook"
    if data.startswith(b"%PDF"):
        return "a PDF document"
    head = data[:4096]
    if b"\x00" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "a binary file"
    return None


def _decode(data: bytes, encoding: str, name: str) -> str:
    if data.startswith(codecs.BOM_UTF8):
        data, encoding = data[len(codecs.BOM_UTF8) :], "utf-8"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"  # Excel's "Unicode text" export
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CyclerFileError(
            f"{name} is not {encoding} text: {exc.reason} at byte {exc.start} (line {line}); "
            "set the profile's encoding to the one the cycler PC exports (often gb18030 for "
            "Chinese-localised software, cp1252 for Western Windows).",
            row=line,
            code="encoding",
        ) from exc
    except LookupError as exc:
        raise CyclerFileError(
            f"Unknown encoding {encoding!r} in the profile.", field="encoding", code="invalid"
        ) from exc


# --- Tables --------------------------------------------------------------------------------


@dataclass
class Table:
    """Rows of cells under one header, with the source row number of each."""

    header: list[str]
    header_row: int
    rows: list[Sequence[object]]
    row_numbers: list[int]
    metadata: dict[str, str] = field(default_factory=dict)
    extra_identity: dict[str, str] = field(default_factory=dict)


@dataclass
class Resolved:
    """The columns of a header matched to canonical fields."""

    index: dict[str, int]
    header_text: dict[str, str]
    units: dict[str, str | None]
    ignored: list[str]
    unknown: list[str]
    missing: list[str]
    duplicate: tuple[str, str] | None = None  # (field, header text) seen twice


def resolve(header: Sequence[object], spec: VendorSpec) -> Resolved:
    """Match header cells to the spec's fields. A field takes the column of its first alias
    found (aliases are in priority order); further columns matching the same field (a
    second temperature channel) are ignored, the same spelling twice is refused."""
    parsed = []
    for i, cell in enumerate(header):
        text = "" if cell is None else str(cell).strip()
        key, unit = header_split(text) if text else ("", None)
        parsed.append((i, text, key, unit))
    index: dict[str, int] = {}
    text_of: dict[str, str] = {}
    units: dict[str, str | None] = {}
    claimed: set[int] = set()
    duplicate: tuple[str, str] | None = None
    for f in spec.fields:
        for alias in f.aliases:
            hits = [p for p in parsed if p[2] and p[0] not in claimed and alias.matches(p[2], p[3])]
            if not hits:
                continue
            i, text, _, unit = hits[0]
            if not alias.pattern and duplicate is None and any(p[1] == text for p in hits[1:]):
                duplicate = (f.name, text)
            index[f.name], text_of[f.name] = i, text
            units[f.name] = unit if unit is not None else alias.unit
            break
        else:
            continue  # the field is not in this header
        # Other columns of a field already taken (a second temperature probe) are ignored.
        for alias in f.aliases:
            claimed.update(p[0] for p in parsed if p[2] and alias.matches(p[2], p[3]))
    known = [re.compile(k) for k in spec.known]
    ignored, unknown = [], []
    for i, text, key, _ in parsed:
        if i in index.values() or not text:
            continue
        if i in claimed or any(k.fullmatch(key) for k in known):
            ignored.append(text)
        else:
            unknown.append(text)
    missing = [f.name for f in spec.fields if f.required and f.name not in index]
    for group in spec.one_of:
        if not any(g in index for g in group):
            missing.append(" or ".join(group))
    return Resolved(index, text_of, units, ignored, unknown, missing, duplicate)


def _field_label(spec: VendorSpec, name: str) -> str:
    """``voltage (e.g. 'Voltage')`` for a refusal message; groups joined by "or"."""
    labels = []
    for part in name.split(" or "):
        f = spec.field_named(part)
        if f is None:  # pragma: no cover - one_of names fields of the spec
            labels.append(part)
            continue
        shown = next((a.label or a.key for a in f.aliases if not a.pattern), part)
        labels.append(f"{part} (e.g. {shown!r})")
    return " or ".join(labels)


def _find_header(
    candidates: list[tuple[int, Sequence[object]]],
    spec: VendorSpec,
    name: str,
    profile: CyclerProfile,
    sniff: list[tuple[int, Sequence[object]]],
) -> tuple[int, Resolved]:
    """The first candidate row that has every required column, else a refusal that says
    which other layout the file looks like (from ``sniff``: the first lines split at tabs,
    commas and semicolons) or what is missing."""
    best: tuple[int, int, Resolved] | None = None
    for pos, (_, cells) in enumerate(candidates):
        if not _filled(cells):
            continue
        res = resolve(cells, spec)
        if not res.missing:
            return pos, res
        score = len(res.index)
        if best is None or score > best[0]:
            best = (score, pos, res)
    if best is None:
        raise CyclerFileError(f"{name} is empty: it has no header and no data.", code="empty")
    other = layout_guess(sniff, exclude=spec.vendor)
    if other is not None:
        _refuse_layout(other, spec, name, profile)
    score, pos, res = best
    row = candidates[pos][0]
    found = [str(c).strip() for c in candidates[pos][1] if c is not None and str(c).strip()]
    shown = ", ".join(repr(c) for c in found[:25]) + (" ..." if len(found) > 25 else "")
    wanted = "; ".join(_field_label(spec, m) for m in res.missing)
    raise CyclerFileError(
        f"{name}: required column(s) missing for a {spec.title}: {wanted}. "
        f"Best header candidate (row {row}) has: {shown}.",
        field=res.missing[0].split(" or ")[0],
        row=row,
        code="missing_column",
    )


def _filled(cells: Sequence[object]) -> bool:
    return any(c is not None and str(c).strip() for c in cells)


def layout_guess(
    rows: list[tuple[int, Sequence[object]]], *, exclude: str | None = None
) -> tuple[VendorSpec, int] | None:
    """The vendor layout whose header is among ``rows`` (and its row), if any."""
    for other in _specs().values():
        if other.vendor == exclude:
            continue
        for row, cells in rows:
            if _filled(cells) and not resolve(cells, other).missing:
                return other, row
    return None


def _refuse_layout(found: tuple[VendorSpec, int], spec: VendorSpec, name: str, profile) -> None:
    other, row = found
    names = [p.name for p in PROFILES.values() if p.vendor == other.vendor]
    raise CyclerFileError(
        f"{name} looks like a {other.title} (header at row {row}), not a {spec.title} as "
        f"profile {profile.name!r} expects; read it with {' or '.join(map(repr, names))}.",
        row=row,
        code="wrong_format",
    )


def _sniff_rows(text: str) -> list[tuple[int, list[str]]]:
    lines = text.splitlines()[:HEADER_SEARCH_ROWS]
    return [(i + 1, line.split(d)) for d in ("\t", ",", ";") for i, line in enumerate(lines)]


def _refuse_binary(kind: str, spec: VendorSpec, profile: CyclerProfile, name: str) -> None:
    wanted = {
        "an XLSX workbook": "xlsx",
        "a Neware .nda binary file": "nda",
        "a ZIP archive (a Neware .ndax file?)": "nda",
    }.get(kind)
    better = [
        p.name for p in PROFILES.values() if p.vendor == spec.vendor and p.file_format == wanted
    ]
    hint = f"; read it with {better[0]!r}" if better else ""
    expected = (
        "an XLSX workbook"
        if profile.file_format == "xlsx"
        else (f"the {profile.file_format.upper()} text")
    )
    raise CyclerFileError(
        f"{name} is {kind}, not {expected} that profile {profile.name!r} reads{hint}.",
        code="wrong_format",
    )


def csv_table(data: bytes, spec: VendorSpec, profile: CyclerProfile, name: str) -> Table:
    kind = _binary_kind(data)
    if kind:
        _refuse_binary(kind, spec, profile, name)
    if not data.strip():
        raise CyclerFileError(f"{name} is empty.", code="empty")
    text = _decode(data, profile.encoding, name)
    delimiter = profile.delimiter or spec.delimiter
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    candidates: list[tuple[int, list[str]]] = []
    # A record's row is the line it starts on (a quoted cell can span lines).
    end = 0
    try:
        for cells in reader:
            candidates.append((end + 1, cells))
            end = reader.line_num
            if len(candidates) >= HEADER_SEARCH_ROWS:
                break
        pos, _ = _find_header(candidates, spec, name, profile, _sniff_rows(text))
        header_row, header = candidates[pos]
        preamble = [cells for _, cells in candidates[:pos]]
        rows: list[Sequence[object]] = []
        numbers: list[int] = []
        for line, cells in candidates[pos + 1 :]:
            if any(c.strip() for c in cells):
                rows.append(cells)
                numbers.append(line)
        for cells in reader:
            if cells and (cells[0].strip() or (len(cells) > 1 and any(cells))):
                rows.append(cells)
                numbers.append(end + 1)
            end = reader.line_num
    except csv.Error as exc:
        raise CyclerFileError(
            f"{name}: unreadable CSV record at line {reader.line_num}: {exc}.",
            row=reader.line_num,
            code="invalid",
        ) from exc
    metadata = spec.preamble_metadata(preamble) if spec.preamble_metadata and preamble else {}
    return Table(header, header_row, rows, numbers, metadata)


def xlsx_table(data: bytes, spec: VendorSpec, profile: CyclerProfile, name: str) -> Table:
    from openpyxl import load_workbook

    kind = _binary_kind(data)
    if not data.strip():
        raise CyclerFileError(f"{name} is empty.", code="empty")
    if kind is None:
        # Text given to a workbook profile: name its layout when it is a known one.
        try:
            text = data[:65536].decode(profile.encoding, errors="replace")
        except LookupError:
            text = ""
        found = layout_guess(_sniff_rows(text))
        what = f"{found[0].title} text" if found else "text"
        raise CyclerFileError(
            f"{name} is {what}, not an XLSX workbook as profile {profile.name!r} expects.",
            code="wrong_format",
        )
    if kind != "an XLSX workbook":
        _refuse_binary(kind, spec, profile, name)
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise CyclerFileError(
            f"{name} is not a readable XLSX workbook: {exc}.", code="wrong_format"
        ) from exc
    try:
        names = list(book.sheetnames)
        sheet_name = profile.sheet_name or (spec.data_sheet(names) if spec.data_sheet else None)
        if sheet_name is None:
            sheet_name = names[0]
        if sheet_name not in names:
            raise CyclerFileError(
                f"{name} has no worksheet {sheet_name!r}; it has "
                f"{', '.join(repr(s) for s in names)}.",
                field="sheet_name",
                code="missing_column",
            )
        sheet = book[sheet_name]
        it = sheet.iter_rows(values_only=True)
        candidates: list[tuple[int, Sequence[object]]] = []
        for number, values in enumerate(it, start=1):
            candidates.append((number, values))
            if len(candidates) >= HEADER_SEARCH_ROWS:
                break
        pos, _ = _find_header(candidates, spec, f"{name} [{sheet_name}]", profile, candidates)
        header_row, header = candidates[pos]
        rows: list[Sequence[object]] = []
        numbers: list[int] = []
        for number, values in [*candidates[pos + 1 :], *enumerate(it, len(candidates) + 1)]:
            if any(v is not None and not (isinstance(v, str) and not v.strip()) for v in values):
                rows.append(values)
                numbers.append(number)
        metadata = spec.workbook_metadata(book, sheet_name) if spec.workbook_metadata else {}
    finally:
        book.close()
    return Table(
        [("" if h is None else str(h)) for h in header], header_row, rows, numbers, metadata
    )


# --- Cells to values -------------------------------------------------------------------------


def _column(table: Table, idx: int) -> list[object]:
    try:
        return [r[idx] for r in table.rows]
    except IndexError:  # a short (truncated) row: its missing cells are empty
        return [r[idx] if idx < len(r) else None for r in table.rows]


def _show(value: object) -> str:
    return (
        "empty"
        if value is None or (isinstance(value, str) and not value.strip())
        else repr(value.strip() if isinstance(value, str) else value)
    )


def _bad_number(values: list[object], rows: Sequence[int], column: str, fname: str) -> None:
    for v, row in zip(values, rows, strict=True):
        try:
            ok = not isinstance(v, bool) and v is not None and np.isfinite(float(v))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            ok = False
        if not ok:
            what = "is empty" if _show(v) == "empty" else f"has {_show(v)}, not a number"
            raise CyclerFileError(
                f"Column {column!r} {what} at row {row}.",
                field=fname,
                row=row,
                code="not_a_number",
            )


def floats(
    values: list[object], rows: Sequence[int], *, column: str, fname: str, decimal: str = "."
) -> np.ndarray:
    """A column as float64; an empty cell, NaN, infinity or text is refused by row."""
    if decimal != ".":
        values = [v.replace(decimal, ".") if isinstance(v, str) else v for v in values]
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        _bad_number(values, rows, column, fname)
        raise  # pragma: no cover - _bad_number always finds the culprit
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        _bad_number(values[i : i + 1], rows[i : i + 1], column, fname)
    return arr


def integers(values: list[object], rows: Sequence[int], *, column: str, fname: str) -> np.ndarray:
    arr = floats(values, rows, column=column, fname=fname)
    frac = arr != np.round(arr)
    if frac.any():
        i = int(np.argmax(frac))
        raise CyclerFileError(
            f"Column {column!r} has {_show(values[i])} at row {rows[i]}, not a whole number.",
            field=fname,
            row=rows[i],
            code="not_a_number",
        )
    return arr.astype(np.int64)


def scaled(arr: np.ndarray, factor: float) -> np.ndarray:
    """``arr * factor``; a milli or micro factor divides, so that 2950.3 mV is 2.9503 V and
    not 2.9503000000000004 V."""
    if factor == 1.0:
        return arr
    if factor < 1.0:
        return arr / round(1.0 / factor)
    return arr * factor


_CLOCK = re.compile(
    r"(?:(?P<d>\d+)(?:\s*d(?:ays?)?,?\s*|\.))?(?P<h>\d+):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:[.,]\d*)?)"
)


def _one_duration(v: object) -> float:
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, time):
        return v.hour * 3600 + v.minute * 60 + v.second + v.microsecond / 1e6
    if isinstance(v, str):
        m = _CLOCK.fullmatch(v.strip())
        if m:
            days = int(m["d"]) if m["d"] else 0
            seconds = float(m["s"].replace(",", "."))
            return days * 86400 + int(m["h"]) * 3600 + int(m["m"]) * 60 + seconds
    raise ValueError(v)


def _clock_vector(values: list[object]) -> np.ndarray | None:
    """Clock strings (``hh:mm:ss.fff``, or Maccor's ``0d hh:mm:ss.ff``) of a whole column
    at once; None when the column is anything else or holds a bad value (the caller then
    goes row by row to name it)."""
    if not all(isinstance(v, str) for v in values):
        return None
    colons = set(map(operator.methodcaller("count", ":"), values))
    if colons != {2}:
        return None
    text = ":".join(values)  # type: ignore[arg-type]
    width = 3
    if "d" in text:
        if set(map(operator.methodcaller("count", "d "), values)) != {1}:
            return None
        text, width = text.replace("d ", ":"), 4
    text = text.replace(",", ".")  # a decimal-comma export's fractions of a second
    flat = text.split(":")
    if len(flat) != width * len(values):
        return None
    try:
        parts = np.array(flat, dtype=np.float64).reshape(len(values), width)
    except ValueError:
        return None
    whole = parts[:, :-1]
    if (parts < 0).any() or (whole != np.round(whole)).any() or (parts[:, -2:] >= 60).any():
        return None
    weights = np.array([86400.0, 3600.0, 60.0, 1.0][-width:])
    return parts @ weights


def durations(
    values: list[object],
    rows: Sequence[int],
    *,
    column: str,
    fname: str,
    unit: str,
    decimal: str = ".",
) -> np.ndarray:
    """Seconds from a time column: numbers in ``unit`` (s, min, h), or clock strings
    (``12:03:04.5``, ``1 day, 02:03:04``, ``1d 02:03:04.00``) and XLSX time cells when the
    unit is :data:`CLOCK` or absent (a bare number is then seconds)."""
    factor = UNITS["duration"][unit_key(unit)][1] if unit != CLOCK else 0.0
    if factor:
        return scaled(floats(values, rows, column=column, fname=fname, decimal=decimal), factor)
    if values:
        fast = _clock_vector(values)
        if fast is not None:
            return fast
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = _one_duration(v)
        except ValueError:
            number = None
            if not isinstance(v, bool) and isinstance(v, int | float | str):
                try:
                    number = float(v.replace(decimal, ".") if isinstance(v, str) else v)
                except ValueError:
                    number = None
            if number is None or not np.isfinite(number):
                what = "is empty" if _show(v) == "empty" else f"has {_show(v)}"
                raise CyclerFileError(
                    f"Column {column!r} {what} at row {rows[i]}, not a duration (hh:mm:ss, "
                    "or seconds).",
                    field=fname,
                    row=rows[i],
                    code="not_a_number",
                ) from None
            out[i] = number
    return out


def texts(values: list[object]) -> list[str]:
    if all(isinstance(v, str) for v in values):
        return [v.strip() for v in values]  # type: ignore[union-attr]
    out = []
    for v in values:
        if v is None:
            out.append("")
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v).strip())
    return out


_YEAR_LAST = re.compile(
    r"(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4})[ T]+"
    r"(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?\s*(?P<p>[AaPp][Mm])?"
)


_ISO_SLASHES = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})")


def timestamp_read(value: object, *, date_order: str) -> datetime:
    """An absolute time as written: ISO-like text (``2024-03-12 08:15:02``,
    ``2024/03/12 08:15:02.123``, with or without an offset), year-last text in
    ``date_order`` (``03/12/2024 8:15:02 AM``; dotted dates are day-first) or an XLSX date
    cell. Naive unless the text carries an offset; ValueError when it is none of these."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(value)
    text = value.strip()
    if text[:4].isdigit():
        if text[4:5] == "/":
            text = _ISO_SLASHES.sub(lambda g: f"{g[1]}-{int(g[2]):02d}-{int(g[3]):02d}", text)
        return datetime.fromisoformat(text)
    m = _YEAR_LAST.fullmatch(text)
    if m is None:
        raise ValueError(text)
    a, b = int(m["a"]), int(m["b"])
    day, month = (a, b) if m["sep"] == "." or date_order == "dmy" else (b, a)
    hour = int(m["H"])
    if m["p"]:
        if not 1 <= hour <= 12:
            raise ValueError(text)
        hour = hour % 12 + (12 if m["p"].lower() == "pm" else 0)
    micro = int((m["f"] or "0")[:6].ljust(6, "0"))
    # Local wall time; the caller applies the profile's zone.
    return datetime(int(m["y"]), month, day, hour, int(m["M"]), int(m["S"] or 0), micro)  # noqa: DTZ001


_YEAR_LAST_LINES = re.compile(
    r"^[ \t]*(\d{1,2})([/.-])(\d{1,2})\2(\d{4})[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?"
    r"[ \t]*([AaPp][Mm])?[ \t]*$",
    re.MULTILINE,
)


def _timestamps_valid(values: list[str]) -> bool:
    """Whether a whole column of text timestamps reads, checked at once: ISO text through
    numpy, year-last text by one pattern over the column and range checks. False means
    "go row by row" (to accept what this misses, or to name the bad row)."""
    if values[0].strip()[:4].isdigit():
        try:
            parsed = np.array([v.strip() for v in values], dtype="datetime64[us]")
        except ValueError:
            return False
        return not np.isnat(parsed).any()  # "" and "NaT" read as NaT
    if any("\n" in v for v in values):
        return False
    found = _YEAR_LAST_LINES.findall("\n".join(values))
    if len(found) != len(values):
        return False
    cols = list(zip(*found, strict=True))
    a, b = np.array(cols[0], dtype=np.int64), np.array(cols[2], dtype=np.int64)
    hour, minute = np.array(cols[4], dtype=np.int64), np.array(cols[5], dtype=np.int64)
    second = np.array([c or "0" for c in cols[6]], dtype=np.int64)
    ampm = np.array([bool(c) for c in cols[7]])
    ok = (a >= 1) & (b >= 1) & (a <= 31) & (b <= 31) & (np.minimum(a, b) <= 12)
    ok &= (minute < 60) & (second < 60)
    ok &= np.where(ampm, (hour >= 1) & (hour <= 12), hour < 24)
    return bool(ok.all())


def timestamp_parse(value: object, *, zone: tzinfo, date_order: str) -> datetime:
    """:func:`timestamp_read` as an aware UTC datetime. A time without an offset is local
    time in ``zone``; one that does not exist there (the hour skipped when clocks go
    forward) is refused. In the hour that repeats when clocks go back the first (summer
    time) reading is taken."""
    when = timestamp_read(value, date_order=date_order)
    if when.tzinfo is None:
        local = when.replace(tzinfo=zone)
        if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != when:
            raise ValueError(f"{when:%Y-%m-%d %H:%M:%S} does not exist in {zone}")
        when = local
    return when.astimezone(UTC)


# --- Building records ------------------------------------------------------------------------

IDENTITY = ("equipment", "tray", "channel", "position", "barcode")


@dataclass
class _Step:
    cell: int
    idx: np.ndarray  # row positions in the table
    kind: StepType | str | None  # declared, CHARGE (direction only) or None (infer)
    source: str
    states: frozenset[str] = frozenset()
    prev: int | None = None  # the cell's row before this step (cumulative counters)


@dataclass(frozen=True)
class _Columns:
    """The converted columns of one table (per row, canonical units, current signed)."""

    voltage: np.ndarray
    current: np.ndarray
    temperature: np.ndarray | None
    step_time: np.ndarray | None
    test_time: np.ndarray | None
    step_index: np.ndarray
    cycle: np.ndarray | None
    capacity: tuple
    energy: tuple | None
    end_reason: list[str] | None
    has_data_point: bool


def _zone(profile: CyclerProfile, override: str | None) -> tzinfo:
    name = override or profile.timezone
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CyclerFileError(
            f"Unknown time zone {name!r} (use an IANA name such as Asia/Shanghai).",
            field="timezone",
            code="invalid",
        ) from exc


class _Reader:
    """One pass over one table; see :func:`cycler_file_read`."""

    def __init__(
        self,
        table: Table,
        res: Resolved,
        spec: VendorSpec,
        profile: CyclerProfile,
        *,
        name: str,
        zone: tzinfo,
    ):
        self.t, self.res, self.spec, self.profile = table, res, spec, profile
        self.name, self.zone = name, zone
        self.rows = np.asarray(table.row_numbers, dtype=np.int64)
        self.row_list = table.row_numbers
        self.units: dict[str, str] = {}
        self.columns: dict[str, str] = dict(res.header_text)

    # columns ---------------------------------------------------------------------------
    def has(self, fname: str) -> bool:
        return fname in self.res.index

    def raw(self, fname: str) -> list[object]:
        return _column(self.t, self.res.index[fname])

    def unit_of(self, fname: str) -> tuple[str, float]:
        f = self.spec.field_named(fname)
        if f is None or f.quantity is None:  # pragma: no cover - a layout definition error
            raise TypeError(f"{fname} is not a measured quantity of {self.spec.vendor}")
        unit = self.res.units.get(fname) or f.default_unit
        column = self.res.header_text[fname]
        table = UNITS[f.quantity]
        if unit is None:
            raise CyclerFileError(
                f"Column {column!r} has no unit; the header must say it, e.g. "
                f"'{column}({next(iter(table.values()))[0]})'.",
                field=fname,
                row=self.t.header_row,
                code="unit",
            )
        found = table.get(unit_key(unit))
        if found is None:
            allowed = ", ".join(dict.fromkeys(v[0] for v in table.values()))
            raise CyclerFileError(
                f"Column {column!r}: unknown {f.quantity} unit {unit!r}; expected one of "
                f"{allowed}.",
                field=fname,
                row=self.t.header_row,
                code="unit",
            )
        self.units[fname] = found[0]
        return found

    def number(self, fname: str) -> np.ndarray:
        canonical, factor = self.unit_of(fname)
        arr = floats(
            self.raw(fname),
            self.row_list,
            column=self.res.header_text[fname],
            fname=fname,
            decimal=self.profile.decimal_separator,
        )
        if canonical == "K":
            return arr + factor
        if canonical == "°C" or factor == 1.0:
            return arr
        return scaled(arr, factor)

    def optional_number(self, fname: str) -> np.ndarray | None:
        """An optional column that is entirely empty (an aux channel not wired) is absent."""
        if not self.has(fname):
            return None
        values = self.raw(fname)
        if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
            self.columns.pop(fname)
            self.res.ignored.append(self.res.header_text[fname])
            return None
        return self.number(fname)

    def duration(self, fname: str) -> np.ndarray:
        unit = self.res.units.get(fname)
        if unit is not None and unit_key(unit) not in UNITS["duration"]:
            raise CyclerFileError(
                f"Column {self.res.header_text[fname]!r}: unknown time unit {unit!r}; expected "
                "s, min, h or a clock format such as h:min:s.ms.",
                field=fname,
                row=self.t.header_row,
                code="unit",
            )
        canonical = UNITS["duration"][unit_key(unit)][0] if unit else CLOCK
        self.units[fname] = canonical
        return durations(
            self.raw(fname),
            self.row_list,
            column=self.res.header_text[fname],
            fname=fname,
            unit=canonical,
            decimal=self.profile.decimal_separator,
        )

    def integer(self, fname: str) -> np.ndarray:
        return integers(
            self.raw(fname), self.row_list, column=self.res.header_text[fname], fname=fname
        )

    def timestamp(self, i: int) -> datetime:
        value = self.t.rows[i][self.res.index["timestamp"]]
        try:
            return timestamp_parse(value, zone=self.zone, date_order=self.profile.date_order)
        except (ValueError, TypeError, OverflowError) as exc:
            detail = f" ({exc})" if "does not exist" in str(exc) else ""
            raise CyclerFileError(
                f"Column {self.res.header_text['timestamp']!r} has {_show(value)} at row "
                f"{self.row_list[i]}, not a date and time{detail}.",
                field="timestamp",
                row=self.row_list[i],
                code="not_a_number",
            ) from exc

    def _check_timestamps(self) -> None:
        """Every row's absolute time must read; only step boundaries are converted."""
        order = self.profile.date_order
        column = self.res.header_text["timestamp"]
        values = self.raw("timestamp")
        if values and all(isinstance(v, str) for v in values) and _timestamps_valid(values):
            return
        for i, value in enumerate(values):
            try:
                timestamp_read(value, date_order=order)
            except (ValueError, TypeError, OverflowError) as exc:
                what = "is empty" if _show(value) == "empty" else f"has {_show(value)}"
                row = self.row_list[i]
                raise CyclerFileError(
                    f"Column {column!r} {what} at row {row}, not a date and time.",
                    field="timestamp",
                    row=row,
                    code="not_a_number",
                ) from exc

    def fail(self, message: str, *, fname: str, i: int | None = None, code: str) -> None:
        row = self.row_list[i] if i is not None else None
        raise CyclerFileError(message, field=fname, row=row, code=code)

    # the read ----------------------------------------------------------------------------
    def read(self, identity: dict[str, str | None], sha: str) -> CyclerFile:
        n = len(self.t.rows)
        if n == 0:
            raise CyclerFileError(
                f"{self.name} has a header (row {self.t.header_row}) but no data rows.",
                code="empty",
            )
        spec, prof = self.spec, self.profile
        voltage = self.number("voltage")
        current_raw = self.number("current")
        self._ranges(voltage, current_raw)
        temperature = self.optional_number("temperature")
        if temperature is not None:
            self._range(temperature, "temperature", *TEMPERATURE_RANGE_C, "°C")
        step_time = self.duration("step_time") if self.has("step_time") else None
        test_time = self.duration("test_time") if self.has("test_time") else None
        if step_time is None and test_time is None:
            raise CyclerFileError(
                f"{self.name} has neither a step time nor a test time column.",
                field="step_time",
                code="missing_column",
            )
        step_index = self.integer("step_index")
        cycle = self.integer("cycle_index") if self.has("cycle_index") else None
        sequence = self.integer("step_sequence") if self.has("step_sequence") else None
        data_point = self.integer("data_point") if self.has("data_point") else None
        self._check_timestamps()
        capacity = self._counters("capacity")
        energy = self._counters("energy", optional=True)
        end_reason = texts(self.raw("end_reason")) if self.has("end_reason") else None
        kinds = texts(self.raw("step_type")) if spec.step_kinds == "type" else None
        states = (
            [s.upper() for s in texts(self.raw("state"))] if spec.step_kinds == "state" else None
        )

        cells = self._cells(identity)
        if data_point is not None:
            self._data_points(data_point)
        steps = self._steps(step_index, cycle, sequence, kinds, states, test_time)
        convention = self._convention(steps, current_raw)
        current = self._signed(steps, current_raw, states, convention)

        cols = _Columns(
            voltage=voltage,
            current=current,
            temperature=temperature,
            step_time=step_time,
            test_time=test_time,
            step_index=step_index,
            cycle=cycle,
            capacity=capacity,
            energy=energy,
            end_reason=end_reason,
            has_data_point=data_point is not None,
        )
        out_cells = []
        for c, ident in enumerate(cells):
            cell_steps = [s for s in steps if s.cell == c]
            records, prev_end = [], None
            for seq, st in enumerate(cell_steps, start=1):
                rec = self._record(seq, st, cols)
                if prev_end is not None and rec.started_at < prev_end - timedelta(seconds=1):
                    self.fail(
                        f"Time goes backwards: step {rec.step_index} (row {rec.first_row}) "
                        f"starts at {rec.started_at:%Y-%m-%d %H:%M:%S} UTC, before the "
                        f"previous step ended ({prev_end:%Y-%m-%d %H:%M:%S} UTC).",
                        fname="timestamp",
                        i=int(st.idx[0]),
                        code="time_order",
                    )
                prev_end = rec.ended_at
                records.append(rec)
            out_cells.append(CellRun(steps=tuple(records), **ident))
        if energy is None:
            self.units["energy"] = "integrated"
        return CyclerFile(
            profile=prof.name,
            source_format=prof.source_format,
            source_name=self.name,
            source_sha256=sha,
            source_sign_convention=convention,
            columns=self.columns,
            units=self.units,
            ignored_columns=tuple(self.res.ignored),
            metadata=dict(self.t.metadata),
            n_rows=n,
            cells=tuple(out_cells),
        )

    # checks ------------------------------------------------------------------------------
    def _range(self, arr: np.ndarray, fname: str, lo: float, hi: float, unit: str) -> None:
        bad = (arr < lo) | (arr > hi)
        if bad.any():
            i = int(np.argmax(bad))
            column = self.res.header_text[fname]
            self.fail(
                f"Column {column!r} gives {arr[i]:.6g} {unit} at row {self.row_list[i]}, "
                f"outside {lo:g} to {hi:g} {unit} for a cell: check the unit in the header.",
                fname=fname,
                i=i,
                code="unit",
            )

    def _ranges(self, voltage: np.ndarray, current: np.ndarray) -> None:
        self._range(voltage, "voltage", *VOLTAGE_RANGE_V, "V")
        if self.units["voltage"] == "mV" and np.abs(voltage).max() < 0.5:
            self.fail(
                f"Column {self.res.header_text['voltage']!r} never exceeds "
                f"{np.abs(voltage).max() * 1000:.4g} mV: the values look like volts.",
                fname="voltage",
                code="unit",
            )
        self._range(current, "current", -CURRENT_LIMIT_A, CURRENT_LIMIT_A, "A")

    def _counters(self, quantity: str, optional: bool = False) -> tuple | None:
        """(kind, arrays) of capacity or energy: one per-step or cumulative column, or a
        charge and a discharge column."""
        single = (
            self.optional_number(quantity)
            if optional
            else (self.number(quantity) if self.has(quantity) else None)
        )
        if single is not None:
            return ("single", single)
        c, d = f"charge_{quantity}", f"discharge_{quantity}"
        if self.has(c) and self.has(d):
            return ("pair", self.number(c), self.number(d))
        if optional:
            return None
        raise CyclerFileError(  # pragma: no cover - the header check guarantees one form
            f"{self.name} has no {quantity} column.", field=quantity, code="missing_column"
        )

    def _cells(self, identity: dict[str, str | None]) -> list[dict[str, str | None]]:
        """Identity per cell; sets ``self.cell_rows`` (row positions per cell)."""
        n = len(self.t.rows)
        cols = {k: texts(self.raw(k)) for k in IDENTITY if self.has(k)}
        meta = {k: self.t.extra_identity.get(k) for k in IDENTITY}
        for k in ("equipment", "tray"):
            if k in cols:
                values = sorted(set(cols[k]))
                if "" in values:
                    i = cols[k].index("")
                    self.fail(
                        f"Column {self.res.header_text[k]!r} is empty at row {self.row_list[i]}.",
                        fname=k,
                        i=i,
                        code="identity",
                    )
                if len(values) > 1:
                    self.fail(
                        f"{self.name} holds {k} {', '.join(values[:5])}: one file is one "
                        f"{'tray' if k == 'tray' else 'cabinet'}.",
                        fname=k,
                        code="identity",
                    )
        keys = [k for k in ("channel", "position", "barcode") if k in cols]
        if not self.spec.multi_cell:
            for k in keys:
                values = sorted(set(cols[k]))
                if len(values) > 1:
                    self.fail(
                        f"{self.name} is one channel's export but holds {k} values "
                        f"{', '.join(values[:5])}.",
                        fname=k,
                        code="identity",
                    )
        groups: dict[tuple[str, ...], list[int]] = {}
        if keys:
            for i, key in enumerate(zip(*(cols[k] for k in keys), strict=True)):
                groups.setdefault(key, []).append(i)
        else:
            groups[()] = list(range(n))
        if "barcode" in cols:
            for i, b in enumerate(cols["barcode"]):
                if not b:
                    self.fail(
                        f"Column {self.res.header_text['barcode']!r} is empty at row "
                        f"{self.row_list[i]}: every cell needs its serial.",
                        fname="barcode",
                        i=i,
                        code="identity",
                    )

            def place(key: tuple[str, ...]) -> str:
                return " ".join(
                    f"{k} {v}" for k, v in zip(keys, key, strict=True) if k != "barcode"
                )

            seen: dict[str, tuple[str, ...]] = {}
            for key in groups:
                b = key[keys.index("barcode")]
                if b in seen:
                    self.fail(
                        f"Barcode {b} is at two places in {self.name}: {place(seen[b])} and "
                        f"{place(key)}.",
                        fname="barcode",
                        code="identity",
                    )
                seen[b] = key
            slots: dict[tuple[str, ...], str] = {}
            for key in groups:
                slot = tuple(v for k, v in zip(keys, key, strict=True) if k != "barcode")
                if slot and slot in slots:
                    self.fail(
                        f"{place(key)} holds two barcodes in {self.name}: "
                        f"{slots[slot]} and {key[keys.index('barcode')]}.",
                        fname="barcode",
                        code="identity",
                    )
                if slot:
                    slots[slot] = key[keys.index("barcode")]
        self.cell_rows = [np.asarray(v, dtype=np.int64) for v in groups.values()]
        out = []
        for key, positions in groups.items():
            ident: dict[str, str | None] = {}
            for k in IDENTITY:
                in_file = (
                    key[keys.index(k)]
                    if k in keys
                    else (cols[k][positions[0]] if k in cols else meta.get(k))
                )
                given = identity.get(k)
                if given is not None and in_file and given != in_file:
                    self.fail(
                        f"{k} {given!r} was given but the file says {in_file!r}.",
                        fname=k,
                        code="identity",
                    )
                ident[k] = in_file or given or None
            if self.spec.multi_cell and not ident["tray"]:
                raise CyclerFileError(
                    f"{self.name} has no tray column: give the tray with the file (tray, "
                    "position and barcode are the genealogy key).",
                    field="tray",
                    code="identity",
                )
            if not ident["barcode"]:
                raise CyclerFileError(
                    f"{self.name} does not say which cell it is (no barcode column or header "
                    "field): give the barcode with the file.",
                    field="barcode",
                    code="identity",
                )
            out.append(ident)
        return out

    def _data_points(self, dp: np.ndarray) -> None:
        """Within each cell, data point numbers are unique and rising."""
        column = self.res.header_text["data_point"]
        for rows in self.cell_rows:
            values = dp[rows]
            order = np.argsort(values, kind="stable")
            same = np.diff(values[order]) == 0
            if same.any():
                k = int(np.argmax(same))
                a, b = sorted((int(rows[order[k]]), int(rows[order[k + 1]])))
                self.fail(
                    f"Duplicate data point: {column!r} {dp[a]} is at rows {self.row_list[a]} "
                    f"and {self.row_list[b]}.",
                    fname="data_point",
                    i=b,
                    code="duplicate",
                )
            back = np.diff(values) < 0
            if back.any():
                i = int(rows[int(np.argmax(back)) + 1])
                self.fail(
                    f"Data points out of order: {column!r} {dp[i]} at row {self.row_list[i]} "
                    "follows a higher one.",
                    fname="data_point",
                    i=i,
                    code="time_order",
                )

    def _steps(self, step_index, cycle, sequence, kinds, states, test_time) -> list[_Step]:
        steps: list[_Step] = []
        for c, rows in enumerate(self.cell_rows):
            if test_time is not None:
                back = np.diff(test_time[rows]) < 0
                if back.any():
                    i = int(rows[int(np.argmax(back)) + 1])
                    self.fail(
                        f"Test time goes backwards at row {self.row_list[i]} "
                        f"({self.res.header_text['test_time']!r}).",
                        fname="test_time",
                        i=i,
                        code="time_order",
                    )
            keys = [step_index[rows]]
            if cycle is not None:
                keys.append(cycle[rows])
            if sequence is not None:
                keys.append(sequence[rows])
            change = np.zeros(len(rows), dtype=bool)
            change[0] = True
            for k in keys:
                change[1:] |= k[1:] != k[:-1]
            starts = np.flatnonzero(change)
            ends = [*starts[1:], len(rows)]
            for s, e in zip(starts, ends, strict=True):
                st = self._step(c, rows[s:e], kinds, states)
                st.prev = int(rows[s - 1]) if s > 0 else None
                steps.append(st)
        return steps

    def _step(self, c: int, idx: np.ndarray, kinds, states) -> _Step:
        if kinds is not None:
            names = {kinds[i] for i in idx}
            first = kinds[idx[0]]
            if len(names) > 1:
                other = next(int(i) for i in idx if kinds[i] != first)
                self.fail(
                    f"Step type changes from {first!r} to {kinds[other]!r} within one step "
                    f"at row {self.row_list[other]}.",
                    fname="step_type",
                    i=other,
                    code="step_type",
                )
            kind = step_name_kind(first)
            if kind is None:
                self.fail(
                    f"Unknown step type {first!r} at row {self.row_list[int(idx[0])]} "
                    f"(column {self.res.header_text['step_type']!r}).",
                    fname="step_type",
                    i=int(idx[0]),
                    code="step_type",
                )
            return _Step(c, idx, kind, first)
        if states is not None:
            found = {states[i] for i in idx}
            unknown = found - {"C", "D", "R", "O"}
            if unknown:
                bad = next(int(i) for i in idx if states[i] in unknown)
                self.fail(
                    f"Unknown state {states[bad]!r} at row {self.row_list[bad]} (column "
                    f"{self.res.header_text['state']!r}); a state is C (charge), D "
                    "(discharge), R (rest) or O (open circuit).",
                    fname="state",
                    i=bad,
                    code="step_type",
                )
            source = "/".join(sorted(found))
            active = found & {"C", "D"}
            if active == {"C", "D"}:
                kind: StepType | str | None = StepType.PULSE
            elif active == {"C"}:
                kind = CHARGE
            elif active == {"D"}:
                kind = None  # a discharge, or a pulse if short
            elif "O" in found:
                kind = StepType.OCV
            else:
                kind = StepType.REST
            return _Step(c, idx, kind, source, frozenset(found))
        return _Step(c, idx, None, "")

    # signs -------------------------------------------------------------------------------
    def _convention(self, steps: list[_Step], current: np.ndarray) -> SignConvention:
        declared = self.profile.sign_convention or self.spec.sign_convention
        if declared != AUTO:
            try:
                return SignConvention(declared)
            except ValueError as exc:
                raise CyclerFileError(
                    f"Unknown sign convention {declared!r}; one of "
                    f"{', '.join(SignConvention)} or 'auto'.",
                    field="sign_convention",
                    code="invalid",
                ) from exc
        thr = self.profile.rest_current_a
        signs: dict[tuple[str, int], list[_Step]] = {}
        for st in steps:
            med = float(np.median(current[st.idx]))
            if abs(med) <= thr:
                continue
            if st.kind == CHARGE or (isinstance(st.kind, StepType) and st.kind.is_charge):
                signs.setdefault(("charge", int(np.sign(med))), []).append(st)
            elif st.kind == StepType.DISCHARGE:
                signs.setdefault(("discharge", int(np.sign(med))), []).append(st)
        pos_c, neg_c = ("charge", 1) in signs, ("charge", -1) in signs
        pos_d, neg_d = ("discharge", 1) in signs, ("discharge", -1) in signs
        if not neg_c and not pos_d:
            return SignConvention.CHARGE_POSITIVE
        if not neg_c and not neg_d and not (current < -thr).any():
            return SignConvention.MAGNITUDE_WITH_STATE
        if not pos_c and not neg_d:
            return SignConvention.DISCHARGE_POSITIVE
        seen = "; ".join(
            f"{direction} steps with {'+' if sign > 0 else '-'} current (first: "
            f"{group[0].source!r} at row {self.row_list[int(group[0].idx[0])]})"
            for (direction, sign), group in sorted(signs.items())
        )
        first = min((g[0] for g in signs.values()), key=lambda st: int(st.idx[0]))
        raise CyclerFileError(
            f"{self.name}: the current's sign follows no single convention: {seen}; a "
            "negative current elsewhere rules out magnitudes. Set the profile's sign "
            "convention or fix the export.",
            field="current",
            row=self.row_list[int(first.idx[0])],
            code="sign",
        )

    def _signed(self, steps, current, states, convention) -> np.ndarray:
        thr = self.profile.rest_current_a
        column = self.res.header_text["current"]
        if convention == SignConvention.CHARGE_POSITIVE:
            signed = current.copy()
        elif convention == SignConvention.DISCHARGE_POSITIVE:
            signed = -current
        else:
            negative = current < -thr
            if negative.any():
                i = int(np.argmax(negative))
                self.fail(
                    f"Column {column!r} has {current[i]:.6g} A at row {self.row_list[i]}, but "
                    f"profile {self.profile.name!r} reads current as a magnitude with the "
                    "direction from the state or step type.",
                    fname="current",
                    i=i,
                    code="sign",
                )
            signed = np.abs(current)
            if states is not None:
                sign = np.fromiter(
                    (-1.0 if s == "D" else 1.0 for s in states), np.float64, len(states)
                )
                signed *= sign
            else:
                for st in steps:
                    if st.kind == StepType.DISCHARGE:
                        signed[st.idx] *= -1.0
                    elif st.kind == StepType.PULSE:
                        self.fail(
                            f"Pulse step {st.source!r} at row {self.row_list[int(st.idx[0])]}: "
                            "a current magnitude without a state does not say its direction.",
                            fname="current",
                            i=int(st.idx[0]),
                            code="sign",
                        )
        # Declared directions must agree with the signed current.
        for st in steps:
            is_charge = st.kind == CHARGE or (isinstance(st.kind, StepType) and st.kind.is_charge)
            if not is_charge and st.kind != StepType.DISCHARGE:
                continue
            med = float(np.median(signed[st.idx]))
            wrong = med < -thr if is_charge else med > thr
            if wrong:
                self.fail(
                    f"{'Charge' if is_charge else 'Discharge'} step {st.source!r} at row "
                    f"{self.row_list[int(st.idx[0])]} has a median current of "
                    f"{float(np.median(current[st.idx])):+.6g} A in {column!r}, which does not "
                    f"fit the {convention} sign convention of profile {self.profile.name!r}.",
                    fname="current",
                    i=int(st.idx[0]),
                    code="sign",
                )
        return signed

    # one step --------------------------------------------------------------------------------
    def _moved(self, counters, idx: np.ndarray, prev: int | None, quantity: str) -> np.ndarray:
        """What moved within the step, >= 0, from per-step or cumulative counters."""
        cumulative = self.spec.capacity_counter == "cumulative"
        arrays = counters[1:]
        names = (
            [quantity]
            if counters[0] == "single"
            else [f"charge_{quantity}", f"discharge_{quantity}"]
        )
        total = np.zeros(len(idx))
        for arr, fname in zip(arrays, names, strict=True):
            seg = arr[idx]
            if not cumulative:
                total += np.abs(seg)
                continue
            # A counter that went down at the step's start was reset; else it runs on.
            base = float(arr[prev]) if prev is not None and seg[0] >= arr[prev] else 0.0
            rel = seg - base
            drop = np.diff(seg) < -1e-9 * max(1.0, float(np.abs(seg).max()))
            if drop.any():
                i = int(idx[int(np.argmax(drop)) + 1])
                self.fail(
                    f"Column {self.res.header_text[fname]!r} decreases within a step at row "
                    f"{self.row_list[i]}: a cumulative counter only rises until it resets "
                    "at a new step.",
                    fname=fname,
                    i=i,
                    code="invalid",
                )
            total += rel
        return total

    def _record(self, seq: int, st: _Step, cols: _Columns) -> StepRecord:
        voltage, current, temperature = cols.voltage, cols.current, cols.temperature
        step_time, test_time, step_index, cycle = (
            cols.step_time,
            cols.test_time,
            cols.step_index,
            cols.cycle,
        )
        capacity, energy, end_reason = cols.capacity, cols.energy, cols.end_reason
        idx = st.idx
        i0, i1 = int(idx[0]), int(idx[-1])
        if step_time is not None:
            t = step_time[idx]
            tname = "step_time"
        else:
            t = test_time[idx] - test_time[i0]
            tname = "test_time"
        back = np.diff(t) < 0
        if back.any():
            i = int(idx[int(np.argmax(back)) + 1])
            self.fail(
                f"Time goes backwards within step {step_index[i0]} at row {self.row_list[i]} "
                f"({self.res.header_text[tname]!r}: {t[int(np.argmax(back))]:g} s then "
                f"{t[int(np.argmax(back)) + 1]:g} s).",
                fname=tname,
                i=i,
                code="time_order",
            )
        if not cols.has_data_point:
            same = np.diff(t) == 0
            if same.any():
                i = int(idx[int(np.argmax(same)) + 1])
                self.fail(
                    f"Duplicate data point: step {step_index[i0]} has two samples at "
                    f"{t[int(np.argmax(same))]:g} s (rows {self.row_list[i - 1]} and "
                    f"{self.row_list[i]}).",
                    fname=tname,
                    i=i,
                    code="duplicate",
                )
        v, cur = voltage[idx], current[idx]
        temp = temperature[idx] if temperature is not None else None
        cap = self._moved(capacity, idx, st.prev, "capacity")
        duration = float(t[-1])
        kind = self._kind(st, t, v, cur, duration)
        # Energy: the cycler's counter, else integrated from the samples.
        if energy is not None:
            e_moved = self._moved(energy, idx, st.prev, "energy")
            energy_wh = float(e_moved[-1])
        else:
            energy_wh = _integral(t, np.abs(v * cur)) / 3600.0
        capacity_ah = float(cap[-1])
        self._check_capacity(st, kind, t, cur, capacity_ah, step_index[i0])
        cv_time, tail = None, None
        if isinstance(kind, StepType) and kind.is_charge:
            k = _cv_start(v, np.abs(cur))
            if kind == StepType.CV_CHARGE:
                cv_time = duration
            elif kind == StepType.CCCV_CHARGE:
                cv_time = duration - float(t[k]) if k is not None else 0.0
            else:
                cv_time = 0.0
            if kind in (StepType.CV_CHARGE, StepType.CCCV_CHARGE):
                tail = float(abs(cur[-1]))
        stamp0, stamp1 = self.timestamp(i0), self.timestamp(i1)
        started = stamp0 - timedelta(seconds=float(t[0]))
        if stamp1 < stamp0:
            self.fail(
                f"Time goes backwards within step {step_index[i0]}: row {self.row_list[i1]} is "
                f"stamped before row {self.row_list[i0]}.",
                fname="timestamp",
                i=i1,
                code="time_order",
            )
        reason = None
        if end_reason is not None:
            reason = end_reason[i1] or None
        curve = StepCurve(
            time_s=_frozen(t),
            voltage_v=_frozen(v),
            current_a=_frozen(cur),
            capacity_ah=_frozen(cap),
            temperature_c=_frozen(temp) if temp is not None else None,
            test_time_s=_frozen(test_time[idx]) if test_time is not None else None,
        )
        return StepRecord(
            sequence=seq,
            step_index=int(step_index[i0]),
            cycle_index=int(cycle[i0]) if cycle is not None else None,
            step_type=kind,
            source_step_type=st.source,
            started_at=started,
            ended_at=stamp1,
            duration_s=duration,
            capacity_ah=capacity_ah,
            energy_wh=energy_wh,
            start_voltage_v=float(v[0]),
            end_voltage_v=float(v[-1]),
            end_current_a=float(cur[-1]),
            cv_time_s=cv_time,
            tail_current_a=tail,
            temperature_start_c=float(temp[0]) if temp is not None else None,
            temperature_max_c=float(temp.max()) if temp is not None else None,
            temperature_rise_c=float(temp.max() - temp[0]) if temp is not None else None,
            end_reason=reason,
            first_row=self.row_list[i0],
            last_row=self.row_list[i1],
            curve=curve,
        )

    def _kind(self, st: _Step, t, v, cur, duration) -> StepType:
        """The declared type, else inferred: rest / discharge / charge from the current, a
        pulse when short (or both directions), CC, CV or CCCV from the charge curve."""
        if isinstance(st.kind, StepType):
            return st.kind
        thr = self.profile.rest_current_a
        short = duration <= self.profile.pulse_max_s
        if st.kind is None:
            positive, negative = bool((cur > thr).any()), bool((cur < -thr).any())
            if not (positive or negative):
                return StepType.REST
            if (positive and negative) or short:
                return StepType.PULSE
            if negative:
                return StepType.DISCHARGE
        elif st.states and short:
            return StepType.PULSE  # a short Maccor charge step
        k = _cv_start(v, np.abs(cur))
        if k is None:
            return StepType.CC_CHARGE
        return StepType.CV_CHARGE if k == 0 else StepType.CCCV_CHARGE

    def _check_capacity(self, st: _Step, kind, t, cur, capacity_ah, step_no) -> None:
        if kind in (StepType.REST, StepType.OCV) or len(t) < 3 or capacity_ah < 1e-3:
            return
        integral = _integral(t, np.abs(cur)) / 3600.0
        if integral <= 0:
            return
        ratio = integral / capacity_ah
        if 1 / CAPACITY_CHECK_FACTOR <= ratio <= CAPACITY_CHECK_FACTOR:
            return
        i = int(st.idx[0])
        cap_cols = [
            self.res.header_text[k]
            for k in ("capacity", "charge_capacity", "discharge_capacity")
            if self.has(k)
        ]
        self.fail(
            f"Step {step_no} (rows {self.row_list[i]}-{self.row_list[int(st.idx[-1])]}): the "
            f"current integrates to {integral:.6g} Ah but {' / '.join(repr(c) for c in cap_cols)} "
            f"counts {capacity_ah:.6g} Ah (a factor of {ratio:.3g}); check the units of "
            f"{self.res.header_text['current']!r} and the capacity column.",
            fname="current",
            i=i,
            code="unit",
        )


def _integral(t: np.ndarray, y: np.ndarray) -> float:
    """∫y dt from the step's start: the first sample's value is held from 0 to t[0]."""
    head = float(y[0] * t[0]) if t[0] > 0 else 0.0
    return head + float(np.trapezoid(y, t)) if len(t) > 1 else head


def _cv_start(v: np.ndarray, i_abs: np.ndarray) -> int | None:
    """Index of the first sample at the voltage limit if the current then falls (a CV
    phase), else None."""
    if len(v) < 3:
        return None
    at_limit = v >= v.max() - CV_VOLTAGE_BAND_V
    k = int(np.argmax(at_limit))
    reference = float(i_abs[: k + 1].max())
    if reference <= 0:
        return None
    threshold = (1 - CV_CURRENT_DROP) * reference
    if i_abs[-1] < threshold and i_abs[k:].min() < threshold:
        return k
    return None


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(a, dtype=np.float64)
    if out.base is not None or out is a:
        out = out.copy()
    out.setflags(write=False)
    return out


# --- Entry point -----------------------------------------------------------------------------


def profile_get(profile: str | CyclerProfile) -> CyclerProfile:
    if isinstance(profile, CyclerProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError as exc:
        raise CyclerFileError(
            f"Unknown cycler profile {profile!r}; one of {', '.join(PROFILES)}.",
            field="profile",
            code="invalid",
        ) from exc


def cycler_file_read(
    source: str | os.PathLike | bytes,
    *,
    profile: str | CyclerProfile,
    name: str | None = None,
    barcode: str | None = None,
    equipment: str | None = None,
    channel: str | None = None,
    tray: str | None = None,
    position: str | None = None,
    timezone: str | None = None,
) -> CyclerFile:
    """Read one cycler export (a path, or its bytes with an optional ``name`` for messages)
    through ``profile`` into a :class:`CyclerFile`, or raise :class:`CyclerFileError`.

    The identity arguments fill in what the file does not say (a Neware CSV has no barcode;
    the file import profile knows it from the file name or the channel map); a value that
    contradicts the file is refused. ``timezone`` overrides the profile's zone for naive
    timestamps. Nothing is written anywhere: the caller stores the result.
    """
    prof = profile_get(profile)
    spec = _specs().get(prof.vendor)
    if spec is None:
        raise CyclerFileError(
            f"Profile {prof.name!r} names unknown vendor {prof.vendor!r}; one of "
            f"{', '.join(sorted(_specs()))}.",
            field="vendor",
            code="invalid",
        )
    if prof.date_order not in ("mdy", "dmy"):
        raise CyclerFileError("date_order is 'mdy' or 'dmy'.", field="date_order", code="invalid")
    if prof.decimal_separator not in (".", ","):
        raise CyclerFileError(
            "The decimal separator is '.' or ','.", field="decimal_separator", code="invalid"
        )
    if (prof.delimiter or spec.delimiter) == prof.decimal_separator:
        raise CyclerFileError(
            f"The delimiter {prof.decimal_separator!r} is also the decimal separator; numbers "
            "would be split (decimal-comma exports use ';' or a tab).",
            field="delimiter",
            code="invalid",
        )
    zone = _zone(prof, timezone)
    data, shown = _load(source, name)
    if not data:
        raise CyclerFileError(f"{shown} is empty (0 bytes).", code="empty")
    if prof.file_format in ("csv", "txt"):
        table = csv_table(data, spec, prof, shown)
    elif prof.file_format == "xlsx":
        table = xlsx_table(data, spec, prof, shown)
    elif prof.file_format == "nda" and spec.binary_table is not None:
        table = spec.binary_table(data, shown, prof)
    else:
        raise CyclerFileError(
            f"Profile {prof.name!r}: {spec.title} files are not read as {prof.file_format!r}.",
            field="file_format",
            code="invalid",
        )
    res = resolve(table.header, spec)
    if res.duplicate:
        raise CyclerFileError(
            f"Column {res.duplicate[1]!r} appears twice in the header.",
            field=res.duplicate[0],
            row=table.header_row,
            code="duplicate",
        )
    if res.unknown:
        # Every required column found, yet another layout explains the header better (a
        # cabinet tray file that happens to carry Neware's column names): refuse it.
        for other in _specs().values():
            if other.vendor != spec.vendor:
                alt = resolve(table.header, other)
                if not alt.missing and len(alt.unknown) < len(res.unknown):
                    _refuse_layout((other, table.header_row), spec, shown, prof)
    if prof.strict and res.unknown:
        raise CyclerFileError(
            f"{shown}: column(s) {', '.join(repr(u) for u in res.unknown)} are not part of a "
            f"{spec.title}, and profile {prof.name!r} is strict.",
            row=table.header_row,
            code="unknown_column",
        )
    if not prof.strict:
        res.ignored.extend(res.unknown)
    identity = dict(table.extra_identity)
    for k, v in table.metadata.items():
        target = spec.metadata_identity.get(k)
        if target and v:
            identity.setdefault(target, v)
    table.extra_identity = identity
    given = {
        "barcode": barcode,
        "equipment": equipment,
        "channel": channel,
        "tray": tray,
        "position": position,
    }
    sha = hashlib.sha256(data).hexdigest()
    return _Reader(table, res, spec, prof, name=shown, zone=zone).read(given, sha)
