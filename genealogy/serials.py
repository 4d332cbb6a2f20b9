"""Serial numbers as stations read them: GS1 element strings from a DataMatrix, or plain
serials checked against the line's serial scheme.

A GS1 string may come in machine form (``]d2`` symbology identifier optional, FNC1 as the
ASCII group separator ``\\x1d``) or in human-readable form with parentheses, e.g.
``(01)09521234543213(21)C2L0000123(10)L2611A``. AI 01 (GTIN) check digits and AI 11/17
dates are validated by ``biip``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from biip import ParseError
from biip.gs1_messages import GS1Message

from qms.exceptions import InvalidInput
from qms.models import Line

GS = "\x1d"


@dataclass(frozen=True)
class ParsedSerial:
    serial: str
    gtin: str = ""
    batch_lot: str = ""
    production_date: date | None = None


def looks_like_gs1(raw: str) -> bool:
    """True for strings that are GS1 element strings rather than plain serials."""
    return raw.startswith(("]d2", "]Q3", "(01)", "(21)", GS)) or (
        raw.startswith("01") and len(raw) > 16 and raw[2:16].isdigit()
    )


def parse_gs1(raw: str, *, field: str = "serial") -> ParsedSerial:
    """Parse a GS1 element string; AI 21 (serial) is required, AI 01 check digit verified."""
    text = raw.strip()
    try:
        if text.startswith("("):
            message = GS1Message.parse_hri(text)
        else:
            message = GS1Message.parse(text.removeprefix("]d2").removeprefix("]Q3").lstrip(GS))
    except ParseError as exc:
        raise InvalidInput(f"Malformed GS1 element string {raw!r}: {exc}", field=field) from exc

    values: dict[str, object] = {}
    for element in message.element_strings:
        if element.ai.ai == "01" and element.gtin_error:
            raise InvalidInput(
                f"GS1 AI (01) in {raw!r}: {element.gtin_error}", field=field, code="check_digit"
            )
        values[element.ai.ai] = element.date if element.ai.ai == "11" else element.value
    if "21" not in values:
        raise InvalidInput(f"GS1 string {raw!r} has no serial number (AI 21).", field=field)
    return ParsedSerial(
        serial=str(values["21"]),
        gtin=str(values.get("01", "")),
        batch_lot=str(values.get("10", "")),
        production_date=values.get("11"),  # type: ignore[arg-type]
    )


def parse_serial(raw: str, *, line: Line | None = None, field: str = "serial") -> ParsedSerial:
    """Turn what a scanner read into a serial, per the line's identification method.

    GS1 element strings (DataMatrix lines) are parsed and their check digits verified; a
    GTIN that differs from the line's is refused. The resulting serial must match the
    line's ``serial_scheme``.
    """
    if raw is None or not str(raw).strip():
        raise InvalidInput("A serial is required.", field=field, code="required")
    raw = str(raw).strip()
    if looks_like_gs1(raw):
        parsed = parse_gs1(raw, field=field)
        if line is not None and line.gtin and parsed.gtin and parsed.gtin != line.gtin:
            raise InvalidInput(
                f"GTIN {parsed.gtin} in {raw!r} is not line {line}'s GTIN {line.gtin}.",
                field=field,
                code="wrong_gtin",
            )
    else:
        # Plain serials are accepted on every line (rework stations type them) as long as
        # they match the line's scheme.
        parsed = ParsedSerial(serial=raw)
    scheme = line.serial_scheme if line is not None else ""
    if scheme and not re.fullmatch(scheme, parsed.serial):
        raise InvalidInput(
            f"Serial {parsed.serial!r} does not match line {line}'s scheme {scheme!r}.",
            field=field,
            code="serial_scheme",
        )
    return parsed


def normalise_lookup(raw: str) -> str:
    """The serial to look up for whatever was scanned or typed (GS1 string or plain)."""
    raw = (raw or "").strip()
    if looks_like_gs1(raw):
        return parse_gs1(raw).serial
    return raw
