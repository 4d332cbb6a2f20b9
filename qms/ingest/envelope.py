"""The ingest envelope: parse raw bytes, validate against the versioned JSON Schema and
the master data, and resolve site / line / station / equipment.

Validation is strict: schema, known site/line/station/equipment, finite numbers, RFC 3339
timestamps with an offset and not in the future beyond ``FUTURE_TOLERANCE``. Every failure
is an :class:`EnvelopeError` naming the field.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import fastjsonschema
from django.utils import timezone
from jsonschema import Draft202012Validator, FormatChecker

from qms.models import Equipment, Line, Site, Station

from . import registry

SCHEMA_ID = "celltrace.envelope/1"
SCHEMA_PATH = Path(__file__).parent / "schema" / "envelope-v1.schema.json"
#: Clocks on the shop floor drift; beyond this a timestamp in the future is refused.
FUTURE_TOLERANCE = timedelta(minutes=5)

logger = logging.getLogger("celltrace.ingest")


class EnvelopeError(Exception):
    """A message that cannot be applied: ``reason`` in words, ``field`` where it is."""

    def __init__(
        self,
        reason: str,
        *,
        field: str | None = None,
        message_id: str = "",
        kind: str = "",
        retriable: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.message_id = message_id
        self.kind = kind
        #: Worth trying again by itself (a unit it names may still arrive).
        self.retriable = retriable


@dataclass
class Envelope:
    """A validated envelope with its master data resolved."""

    message_id: str
    source: str
    sent_at: datetime
    kind: str
    site: Site
    line: Line
    station: Station
    equipment: Equipment | None
    unit: str | None
    units: list[str]
    payload: dict
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def serials(self) -> list[str]:
        return [self.unit] if self.unit else list(self.units)


@cache
def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(_schema(), format_checker=FormatChecker())


@cache
def _payload_validator(kind: str) -> Draft202012Validator | None:
    reg = registry.get(kind)
    if reg is not None and reg.payload_schema is not None:
        return Draft202012Validator(reg.payload_schema, format_checker=FormatChecker())
    defs = _schema()["$defs"]
    if kind not in defs:
        return None
    # The kind's schema as the root, with the shared definitions beside it: its local
    # "#/$defs/..." references then resolve without a registry look-up per item.
    return Draft202012Validator({**defs[kind], "$defs": defs}, format_checker=FormatChecker())


def _inline(node: object, defs: dict) -> object:
    """The schema with its local ``#/$defs/...`` references replaced by their targets (the
    envelope's definitions are not recursive), so the compiled validator never resolves a
    reference, let alone fetches one."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            prefix = "#/$defs/"
            if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
                raise ValueError(f"only local $defs references are supported, not {ref!r}")
            return _inline(defs[ref[len(prefix) :]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in ("$defs", "$id")}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _refuse_remote(uri: str):
    raise ValueError(f"the ingest schema may not reference {uri!r}")


def _compile(schema: dict) -> Callable[[object], object] | None:
    """The schema compiled to Python (fastjsonschema): the fast accept path. ``None`` when it
    cannot be compiled; the reference validator then does all the work."""
    try:
        return fastjsonschema.compile(
            _inline(schema, schema.get("$defs", {})),
            handlers={"http": _refuse_remote, "https": _refuse_remote, "": _refuse_remote},
            # Timestamps are parsed (and refused with their field) after the schema check.
            formats={"date-time": lambda value: True},
        )
    except Exception:
        logger.warning("ingest schema could not be compiled; validating without it")
        return None


@cache
def _fast_validator() -> Callable[[object], object] | None:
    return _compile(_schema())


@cache
def _fast_payload_validator(kind: str) -> Callable[[object], object] | None:
    reg = registry.get(kind)
    if reg is not None and reg.payload_schema is not None:
        return _compile(reg.payload_schema)
    defs = _schema()["$defs"]
    return _compile({**defs[kind], "$defs": defs}) if kind in defs else None


def _schema_error(
    fast: Callable[[object], object] | None,
    validator: Draft202012Validator,
    doc: object,
    prefix: str = "",
):
    """``None`` when ``doc`` is valid, else (field, error) from the reference validator. The
    compiled validator answers the common case; the reference validator words the error (and
    has the last word)."""
    if fast is not None:
        try:
            fast(doc)
        except fastjsonschema.JsonSchemaValueException:
            pass
        else:
            return None
    return _first_error(validator, doc, prefix)


def _path(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "envelope"


def _first_error(validator: Draft202012Validator, doc: object, prefix: str = ""):
    if validator.is_valid(doc):  # the common case: no error objects to build and sort
        return None
    errors = sorted(validator.iter_errors(doc), key=lambda e: (len(e.absolute_path), e.path))
    if not errors:
        return None
    err = errors[0]
    where = _path(err)
    return (f"{prefix}.{where}" if prefix and where != "envelope" else (prefix or where)), err


def parse_json(raw: bytes) -> dict:
    """Decode raw bytes into a JSON object; NaN and Infinity are refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"Not UTF-8 text: {exc}") from exc

    def refuse_constant(name: str):
        raise EnvelopeError(f"{name} is not a number a measurement can have.")

    def finite_float(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):  # 1e999 overflows to infinity
            raise EnvelopeError(f"{literal} is not a finite number.")
        return value

    try:
        doc = json.loads(text, parse_constant=refuse_constant, parse_float=finite_float)
    except json.JSONDecodeError as exc:
        raise EnvelopeError(
            f"Not valid JSON: {exc.msg.removesuffix(' at')} at line {exc.lineno} "
            f"column {exc.colno}."
        ) from exc
    if not isinstance(doc, dict):
        raise EnvelopeError("The envelope must be a JSON object.")
    return doc


def parse_datetime(value: str, *, field: str, now: datetime | None = None) -> datetime:
    """RFC 3339 with an offset, not in the future beyond the tolerance."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise EnvelopeError(f"{value!r} is not an RFC 3339 timestamp.", field=field) from exc
    if when.tzinfo is None:
        raise EnvelopeError(f"{value!r} has no UTC offset.", field=field)
    now = now or timezone.now()
    if when > now + FUTURE_TOLERANCE:
        raise EnvelopeError(
            f"{value} is {((when - now).total_seconds() / 60):.0f} min in the future "
            f"(tolerance {FUTURE_TOLERANCE.total_seconds() / 60:.0f} min).",
            field=field,
        )
    return when


class MasterData:
    """Site / line / station / equipment look-ups, cached for one batch."""

    def __init__(self) -> None:
        self._stations: dict[tuple[str, str, str], Station | None] = {}
        self._equipment: dict[tuple[int, str], Equipment | None] = {}

    def station(self, site: str, line: str, station: str) -> Station:
        key = (site.lower(), line.lower(), station.lower())
        if key not in self._stations:
            self._stations[key] = (
                Station.objects.select_related("line", "line__site")
                .filter(
                    line__site__code__iexact=site, line__code__iexact=line, code__iexact=station
                )
                .first()
            )
        found = self._stations[key]
        if found is None:
            if not Site.objects.filter(code__iexact=site).exists():
                raise EnvelopeError(f"Unknown site {site!r}.", field="site")
            if not Line.objects.filter(site__code__iexact=site, code__iexact=line).exists():
                raise EnvelopeError(f"Unknown line {line!r} at site {site!r}.", field="line")
            raise EnvelopeError(
                f"Unknown station {station!r} on line {site}/{line}.", field="station"
            )
        return found

    def equipment(self, station: Station, code: str) -> Equipment:
        key = (station.pk, code.lower())
        if key not in self._equipment:
            self._equipment[key] = Equipment.objects.filter(
                station=station, code__iexact=code
            ).first()
        found = self._equipment[key]
        if found is None:
            raise EnvelopeError(
                f"Unknown equipment {code!r} at station {station}.", field="equipment"
            )
        return found


def validate(doc: dict, *, master: MasterData, now: datetime | None = None) -> Envelope:
    """Validate an envelope document as :func:`parse_json` returns it (every number
    finite) and resolve its master data."""
    message_id = doc.get("message_id") if isinstance(doc.get("message_id"), str) else ""
    kind = doc.get("kind") if isinstance(doc.get("kind"), str) else ""
    try:
        found = _schema_error(_fast_validator(), _validator(), doc)
        if found:
            where, err = found
            raise EnvelopeError(f"Schema: {err.message}", field=where)
        reg = registry.get(doc["kind"])
        if reg is None:
            raise EnvelopeError(f"No handler for kind {doc['kind']!r}.", field="kind")
        payload_validator = _payload_validator(doc["kind"])
        if payload_validator is not None:
            found = _schema_error(
                _fast_payload_validator(doc["kind"]), payload_validator, doc["payload"], "payload"
            )
            if found:
                where, err = found
                raise EnvelopeError(f"Schema: {err.message}", field=where)
        sent_at = parse_datetime(doc["sent_at"], field="sent_at", now=now)
        station = master.station(doc["site"], doc["line"], doc["station"])
        equipment = master.equipment(station, doc["equipment"]) if doc.get("equipment") else None
    except EnvelopeError as exc:
        exc.message_id, exc.kind = message_id, kind
        raise
    return Envelope(
        message_id=doc["message_id"],
        source=doc["source"],
        sent_at=sent_at,
        kind=doc["kind"],
        site=station.line.site,
        line=station.line,
        station=station,
        equipment=equipment,
        unit=doc.get("unit"),
        units=list(doc.get("units") or []),
        payload=doc["payload"],
        raw=doc,
    )


def build(
    *,
    kind: str,
    site: str,
    line: str,
    station: str,
    payload: dict,
    source: str,
    message_id: str,
    sent_at: datetime,
    unit: str | None = None,
    units: list[str] | None = None,
    equipment: str | None = None,
) -> dict:
    """An envelope document, for transports and producers that build one (OPC UA,
    Sparkplug B, files, the simulator). ``message_id`` must be deterministic for the
    message (e.g. source + sequence) so a re-read is recognised as a duplicate."""
    doc = {
        "message_id": message_id,
        "schema": SCHEMA_ID,
        "source": source,
        "sent_at": sent_at.isoformat(),
        "site": site,
        "line": line,
        "station": station,
        "kind": kind,
        "payload": payload,
    }
    if equipment:
        doc["equipment"] = equipment
    if units is not None:
        doc["units"] = units
    else:
        doc["unit"] = unit
    return doc
