"""Input and output shapes of the trace and recall-scope endpoints.

Input: one query serializer for every endpoint; its errors become :class:`InvalidInput`
naming the field, so every 400 of the API has the same ``{code, detail, field}`` body.

Output: the serializers below document the JSON (OpenAPI schema). A forward trace of a
material lot has ~70,000 nodes and ~130,000 edges, far too many for per-field serializer
calls, so the data is built by the plain functions :func:`trace_data` and
:func:`recall_scope_data`; a test keeps both in step with the serializers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rest_framework import serializers

from genealogy import queries
from genealogy.choices import LinkKind, UnitKind, UnitStatus
from genealogy.models import Unit
from genealogy.services import unit_get
from qms.api.filters import station_from_ref
from qms.api.schema import NamedChoiceField
from qms.exceptions import InvalidInput, NotFound
from qms.models import Equipment, Station

# --- input ------------------------------------------------------------------------------------


class TraceQuerySerializer(serializers.Serializer):
    """Query parameters shared by the trace and recall-scope endpoints."""

    serial = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Serial of any unit (VIN, pack, module, cell, coil, lot); a GS1 element "
        "string, e.g. (01)09521234543213(21)P126480000001, is reduced to its AI 21 serial.",
    )
    start_m = serializers.FloatField(
        required=False, help_text="Start metre of a coil segment (with end_m; coils only)."
    )
    end_m = serializers.FloatField(required=False, help_text="End metre (exclusive).")
    station = serializers.CharField(
        required=False,
        max_length=120,
        help_text="Station id, 'line/station' or 'site/line/station' code (with start, end).",
    )
    equipment = serializers.CharField(
        required=False, max_length=64, help_text="Equipment id or code at the station."
    )
    start = serializers.DateTimeField(required=False, help_text="Window start (ISO 8601).")
    end = serializers.DateTimeField(required=False, help_text="Window end, exclusive.")
    as_of = serializers.DateTimeField(
        required=False, help_text="Rebuild the genealogy in force at this time (before rework)."
    )


@dataclass(frozen=True)
class TraceInput:
    """A resolved trace request: a unit (with an optional metre range) or a station window."""

    unit: Unit | None = None
    start_m: float | None = None
    end_m: float | None = None
    station: Station | None = None
    equipment: Equipment | None = None
    start: datetime | None = None
    end: datetime | None = None
    as_of: datetime | None = None

    def scope_kwargs(self) -> dict:
        return {
            "unit": self.unit,
            "start_m": self.start_m,
            "end_m": self.end_m,
            "station": self.station,
            "equipment": self.equipment,
            "start": self.start,
            "end": self.end,
            "as_of": self.as_of,
        }


def _first_error(errors: dict) -> tuple[str, str]:
    field, messages = next(iter(errors.items()))
    message = messages[0] if isinstance(messages, list) and messages else str(messages)
    return field, str(message)


def trace_input(params, *, allow_window: bool = True) -> TraceInput:
    """Validate query parameters and resolve serial, station and equipment.

    Raises :class:`InvalidInput` (400) or :class:`NotFound` (404) naming the field.
    """
    known = set(TraceQuerySerializer().fields)
    data = {k: params.get(k) for k in known if params.get(k) not in (None, "")}
    ser = TraceQuerySerializer(data=data)
    if not ser.is_valid():
        field, message = _first_error(ser.errors)
        raise InvalidInput(f"{field}: {message}", field=field)
    v = ser.validated_data
    serial, station_ref = v.get("serial"), v.get("station")
    if serial and station_ref:
        raise InvalidInput("Give a serial or a station window, not both.", field="station")
    if not serial and not (allow_window and station_ref):
        what = "serial" if not allow_window else "serial, or station with start and end"
        raise InvalidInput(f"A {what} is required.", field="serial", code="required")
    if serial:
        for name in ("equipment", "start", "end"):
            if name in v:
                raise InvalidInput(f"{name} applies to a station window.", field=name)
        return TraceInput(
            unit=unit_get(serial=serial),
            start_m=v.get("start_m"),
            end_m=v.get("end_m"),
            as_of=v.get("as_of"),
        )
    station = station_from_ref(station_ref, field="station")
    equipment = None
    if v.get("equipment"):
        equipment = queries.equipment_find(v["equipment"], station=station)
        if equipment is None:
            raise NotFound(f"No equipment {v['equipment']!r} at {station}.", field="equipment")
    for name in ("start_m", "end_m"):
        if name in v:
            raise InvalidInput("A metre range applies to a coil, not a station.", field=name)
    return TraceInput(
        station=station,
        equipment=equipment,
        start=v.get("start"),
        end=v.get("end"),
        as_of=v.get("as_of"),
    )


# --- output: documented shapes ------------------------------------------------------------------


class UnitRefSerializer(serializers.Serializer):
    unit_id = serializers.IntegerField()
    kind = NamedChoiceField(UnitKind)
    serial = serializers.CharField()
    status = NamedChoiceField(UnitStatus)


class TraceNodeSerializer(serializers.Serializer):
    unit_id = serializers.IntegerField()
    kind = NamedChoiceField(UnitKind)
    serial = serializers.CharField()
    status = NamedChoiceField(UnitStatus)
    line_id = serializers.IntegerField(allow_null=True)
    start_m = serializers.FloatField(
        allow_null=True, help_text="Coils: start of the affected range in this coil's metres."
    )
    end_m = serializers.FloatField(allow_null=True, help_text="null with start_m: whole unit.")
    depth = serializers.IntegerField(help_text="Least number of links from the root.")
    segments = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text="Coils: the exact affected [start_m, end_m) intervals, merged where adjacent.",
    )


class TraceEdgeSerializer(serializers.Serializer):
    link_id = serializers.IntegerField()
    source_id = serializers.IntegerField(help_text="Upstream unit.")
    target_id = serializers.IntegerField(help_text="Downstream unit.")
    kind = NamedChoiceField(LinkKind)
    slot = serializers.CharField(allow_blank=True)
    start_m = serializers.FloatField(allow_null=True, help_text="Consumed or slit range.")
    end_m = serializers.FloatField(allow_null=True)
    linked_at = serializers.DateTimeField()
    removed_at = serializers.DateTimeField(allow_null=True, help_text="Closed by rework.")


class StationWindowSerializer(serializers.Serializer):
    station = serializers.CharField()
    equipment = serializers.CharField(allow_null=True)
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    unit_ids = serializers.ListField(child=serializers.IntegerField())


class TraceSerializer(serializers.Serializer):
    direction = serializers.ChoiceField(choices=[queries.BACKWARD, queries.FORWARD])
    root = UnitRefSerializer(allow_null=True)
    window = StationWindowSerializer(allow_null=True)
    start_m = serializers.FloatField(allow_null=True)
    end_m = serializers.FloatField(allow_null=True)
    as_of = serializers.DateTimeField(allow_null=True)
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Nodes per kind.")
    nodes = TraceNodeSerializer(many=True)
    edges = TraceEdgeSerializer(many=True)


class ScopeCountsSerializer(serializers.Serializer):
    vehicles = serializers.IntegerField()
    packs = serializers.IntegerField()
    modules = serializers.IntegerField()
    cells = serializers.IntegerField()


class ScopeLevelSerializer(serializers.Serializer):
    level = serializers.CharField(help_text="segment, coil, mother_coil, lot, unit, ...")
    description = serializers.CharField()
    inputs = serializers.ListField(child=serializers.CharField())
    counts = ScopeCountsSerializer()
    factor = serializers.FloatField(
        allow_null=True, help_text="Cells at this level / cells at the requested level."
    )


class RecallScopeSerializer(serializers.Serializer):
    input = serializers.DictField()
    description = serializers.CharField()
    level = serializers.CharField()
    as_of = serializers.DateTimeField(allow_null=True)
    counts = ScopeCountsSerializer()
    levels = ScopeLevelSerializer(many=True)
    reduction_factor = serializers.FloatField(
        allow_null=True, help_text="Lot-level cells / requested-level cells."
    )
    vehicles = serializers.ListField(child=serializers.CharField(), help_text="VINs.")
    packs = serializers.ListField(child=serializers.CharField())
    modules = serializers.ListField(child=serializers.CharField())
    cells = serializers.ListField(child=serializers.CharField())


# --- output: builders -------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def trace_data(trace: queries.Trace) -> dict:
    """The JSON of a trace (shape: :class:`TraceSerializer`)."""
    counts: dict[str, int] = {}
    for n in trace.nodes:
        counts[n.kind] = counts.get(n.kind, 0) + 1
    segments = trace.segments
    root = trace.root
    window = trace.window
    return {
        "direction": trace.direction,
        "root": None
        if root is None
        else {
            "unit_id": root.pk,
            "kind": root.kind,
            "serial": root.serial,
            "status": root.status,
        },
        "window": None
        if window is None
        else {
            "station": str(window.station),
            "equipment": window.equipment.code if window.equipment else None,
            "start": _iso(window.start),
            "end": _iso(window.end),
            "unit_ids": trace.seed_ids,
        },
        "start_m": trace.start_m,
        "end_m": trace.end_m,
        "as_of": _iso(trace.as_of),
        "counts": counts,
        "nodes": [
            {
                "unit_id": n.unit_id,
                "kind": n.kind,
                "serial": n.serial,
                "status": n.status,
                "line_id": n.line_id,
                "start_m": n.start_m,
                "end_m": n.end_m,
                "depth": n.depth,
                "segments": [list(s) for s in segments.get(n.unit_id, ())],
            }
            for n in trace.nodes
        ],
        "edges": [
            {
                "link_id": e.link_id,
                "source_id": e.source_id,
                "target_id": e.target_id,
                "kind": e.kind,
                "slot": e.slot,
                "start_m": e.start_m,
                "end_m": e.end_m,
                "linked_at": _iso(e.linked_at),
                "removed_at": _iso(e.removed_at),
            }
            for e in trace.edges
        ],
    }


def scope_input_data(scope: queries.RecallScope) -> dict:
    return {
        k: (_iso(v) if isinstance(v, datetime) else v)
        for k, v in scope.input.items()
        if v is not None
    }


def recall_scope_data(scope: queries.RecallScope) -> dict:
    """The JSON of a recall scope with its lists (shape: :class:`RecallScopeSerializer`)."""
    data = {
        "input": scope_input_data(scope),
        "description": scope.description,
        "level": scope.level,
        "as_of": _iso(scope.as_of),
        "counts": scope.counts,
        "levels": [
            {
                "level": lv.level,
                "description": lv.description,
                "inputs": lv.inputs,
                "counts": lv.counts,
                "factor": lv.factor,
            }
            for lv in scope.levels
        ],
        "reduction_factor": scope.reduction_factor,
    }
    for name, _kind in queries.RECALL_KINDS:
        data[name] = scope.serials(name)
    return data
