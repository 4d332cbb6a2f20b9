"""Serializers for units, links, station visits and measurements.

Reads use model serializers with explicit field lists. Each command has its own input
serializer (validation and look-ups only) and answers with a read serializer. Units are
referred to by serial as the station read it: a plain serial or a GS1 element string
(``(01)09521234543213(21)P126480000001``); an unknown serial is a 404 naming it and the
field, a malformed GS1 string or a wrong check digit a 400 naming the field.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from django.urls import NoReverseMatch, reverse
from django.utils.http import urlencode
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.fields import empty

from genealogy.choices import LinkKind, UnitKind, UnitStatus, VisitResult
from genealogy.models import Link, Measurement, StationVisit, Unit
from genealogy.queries import unit_find
from genealogy.serials import looks_like_gs1, parse_gs1
from genealogy.services import MeasurementInput
from qms.api.schema import NamedChoiceField
from qms.api.serializers import EquipmentRefField, LineRefField, StationRefField
from qms.exceptions import InvalidInput, NotFound
from qms.models import Equipment

#: Which unit a serial means when several kinds share it: the one a scanner at the end of
#: the line most likely read (same order as :func:`genealogy.queries.unit_find`).
KIND_PRECEDENCE = [
    UnitKind.VEHICLE,
    UnitKind.PACK,
    UnitKind.MODULE,
    UnitKind.CELL,
    UnitKind.SLIT_COIL,
    UnitKind.COIL,
    UnitKind.MIX_BATCH,
    UnitKind.MATERIAL_LOT,
]

#: Serials looked up per query when resolving a bulk request.
LOOKUP_CHUNK = 2000

#: Most rows one measurements call may carry (one transaction).
MAX_MEASUREMENT_ROWS = 20_000

#: Most serials one bulk unit creation may carry.
MAX_BULK_UNITS = 10_000

#: Most errors listed for one bulk request; the first ones are what a person fixes first.
MAX_LISTED_ERRORS = 20


# --- resolving serials ------------------------------------------------------------------


def unit_resolve(raw: str, *, field: str, kind: str | None = None) -> Unit:
    """The unit a scanned or typed serial names; errors name ``field`` and the serial."""
    if raw is None or not str(raw).strip():
        raise InvalidInput("A serial is required.", field=field, code="required")
    raw = str(raw).strip()
    try:
        unit = unit_find(raw, kind=kind)
    except InvalidInput as exc:  # malformed GS1 or wrong check digit
        exc.field = field
        raise
    if unit is None:
        what = UnitKind(kind).label.lower() if kind else "unit"
        raise NotFound(f"No {what} with serial {raw!r}.", field=field)
    return unit


def units_resolve(
    raws: Sequence[str],
    *,
    field_of: Callable[[int], str],
    kind: str | None = None,
    only: Sequence[str] = ("id", "kind", "serial", "status"),
) -> list[Unit]:
    """Resolve many serials (GS1 accepted) in a few queries; the result is aligned with
    ``raws``. The first malformed or unknown serial is reported with ``field_of(index)``."""
    serials: list[str] = []
    parsed_gs1: dict[str, str] = {}
    for i, raw in enumerate(raws):
        text = str(raw).strip() if raw is not None else ""
        if not text:
            raise InvalidInput("A serial is required.", field=field_of(i), code="required")
        if looks_like_gs1(text):
            if text not in parsed_gs1:
                parsed_gs1[text] = parse_gs1(text, field=field_of(i)).serial
            text = parsed_gs1[text]
        serials.append(text)
    wanted = sorted(set(serials))
    found: dict[str, Unit] = {}
    rank = {k: i for i, k in enumerate(KIND_PRECEDENCE)}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        qs = Unit.objects.filter(serial__in=wanted[start : start + LOOKUP_CHUNK]).only(*only)
        if kind:
            qs = qs.filter(kind=kind)
        for unit in qs:
            best = found.get(unit.serial)
            if best is None or rank[unit.kind] < rank[best.kind]:
                found[unit.serial] = unit
    out = []
    for i, serial in enumerate(serials):
        unit = found.get(serial)
        if unit is None:
            what = UnitKind(kind).label.lower() if kind else "unit"
            missing = len({s for s in serials if s not in found})
            more = f" ({missing} unknown serials in this request)" if missing > 1 else ""
            raise NotFound(f"No {what} with serial {raws[i]!r}{more}.", field=field_of(i))
        out.append(unit)
    return out


class UnitRefField(serializers.CharField):
    """A unit given by serial or GS1 element string; resolves to the :class:`Unit`."""

    def __init__(self, *, kind: str | None = None, **kwargs):
        self.kind = kind
        kwargs.setdefault("max_length", 200)
        kwargs.setdefault(
            "help_text",
            "Serial as marked, plain or as a GS1 element string, e.g. P126480000001 or "
            "(01)09521234543213(21)P126480000001.",
        )
        super().__init__(**kwargs)

    def run_validation(self, data=empty):
        # Resolve after CharField's own checks (length, blank), which apply to the text.
        value = super().run_validation(data)
        if value in (None, ""):
            return value
        return unit_resolve(value, field=self.field_name, kind=self.kind)

    def to_representation(self, value) -> str:
        return value.serial if isinstance(value, Unit) else str(value)


def flatten_list_errors(name: str, errors, *, limit: int = MAX_LISTED_ERRORS) -> dict | None:
    """Per-row errors of a list field as ``{"rows[2].value": [...]}`` (the first ``limit``),
    or None when ``errors`` are not per-row (e.g. "This list may not be empty.")."""
    if isinstance(errors, dict):
        if not all(str(k).isdigit() for k in errors):
            return None
        items = sorted(((int(k), v) for k, v in errors.items()), key=lambda kv: kv[0])
    elif isinstance(errors, list) and any(isinstance(e, dict) for e in errors):
        items = list(enumerate(errors))
    else:
        return None
    flat: dict[str, list] = {}
    for i, err in items:
        if not err:
            continue
        if isinstance(err, dict):
            for key, msgs in err.items():
                flat[f"{name}[{i}].{key}"] = msgs
        else:
            flat[f"{name}[{i}]"] = err
        if len(flat) >= limit:
            break
    return flat


# --- reads ------------------------------------------------------------------------------


class LinkedUnitSerializer(serializers.ModelSerializer):
    """The unit at the other end of a link."""

    kind = NamedChoiceField(UnitKind, read_only=True)
    status = NamedChoiceField(UnitStatus, read_only=True)

    class Meta:
        model = Unit
        fields = ["id", "kind", "serial", "status"]


class _LinkFieldsMixin(serializers.Serializer):
    kind = NamedChoiceField(LinkKind, read_only=True)
    active = serializers.SerializerMethodField(help_text="False once rework removed the link.")

    def get_active(self, obj: Link) -> bool:
        return obj.removed_at is None


LINK_FIELDS = [
    "id",
    "kind",
    "slot",
    "start_m",
    "end_m",
    "quantity",
    "quantity_unit",
    "linked_at",
    "removed_at",
    "removed_reason",
    "active",
]


class UpstreamLinkSerializer(_LinkFieldsMixin, serializers.ModelSerializer):
    """A link into the unit: ``unit`` is what it consumed or is built from.
    ``[start_m, end_m)`` is the segment in the upstream coil's metres."""

    unit = LinkedUnitSerializer(source="source", read_only=True)

    class Meta:
        model = Link
        fields = ["unit", *LINK_FIELDS]


class DownstreamLinkSerializer(_LinkFieldsMixin, serializers.ModelSerializer):
    """A link out of the unit: ``unit`` consumed it or is built from it."""

    unit = LinkedUnitSerializer(source="target", read_only=True)

    class Meta:
        model = Link
        fields = ["unit", *LINK_FIELDS]


class LinkSerializer(_LinkFieldsMixin, serializers.ModelSerializer):
    """A link as a command wrote it: ``source`` upstream, ``target`` downstream."""

    source = LinkedUnitSerializer(read_only=True)
    target = LinkedUnitSerializer(read_only=True)

    class Meta:
        model = Link
        fields = ["source", "target", *LINK_FIELDS]


class UnitSerializer(serializers.ModelSerializer):
    """A traceable unit. ``status`` is what every station interlock reads and only holds
    and dispositions change; ``status_reason`` says why (hold number and reason)."""

    kind = NamedChoiceField(UnitKind, read_only=True)
    status = NamedChoiceField(UnitStatus, read_only=True)
    line_code = serializers.CharField(source="line.code", read_only=True, default=None)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Unit
        fields = [
            "id",
            "kind",
            "serial",
            "line",
            "line_code",
            "status",
            "status_reason",
            "gtin",
            "batch_lot",
            "material",
            "supplier",
            "length_m",
            "produced_at",
            "created_at",
            "url",
        ]

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Unit) -> str:
        path = reverse("unit-detail", kwargs={"serial": obj.serial})
        path = f"{path}?{urlencode({'kind': obj.kind})}"
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class UnitDetailSerializer(UnitSerializer):
    """A unit with its links one level up and down (active and removed), capped at
    ``links_limit`` each way (the counts are exact); the full graph is in the trace."""

    upstream = UpstreamLinkSerializer(many=True, read_only=True, source="upstream_rows")
    downstream = DownstreamLinkSerializer(many=True, read_only=True, source="downstream_rows")
    upstream_count = serializers.IntegerField(read_only=True)
    downstream_count = serializers.IntegerField(read_only=True)
    related = serializers.SerializerMethodField()

    class Meta(UnitSerializer.Meta):
        fields = [
            *UnitSerializer.Meta.fields,
            "upstream_count",
            "downstream_count",
            "upstream",
            "downstream",
            "related",
        ]

    @extend_schema_field(
        inline_serializer(
            "UnitRelatedUrls",
            fields={
                "trace_backward": serializers.URLField(),
                "trace_forward": serializers.URLField(),
                "recall_scope": serializers.URLField(),
                "holds": serializers.URLField(required=False),
            },
        )
    )
    def get_related(self, obj: Unit) -> dict:
        request = self.context.get("request")

        def absolute(path: str) -> str:
            return request.build_absolute_uri(path) if request else path

        query = urlencode({"serial": obj.serial})
        out = {
            "trace_backward": absolute(f"{reverse('trace-backward')}?{query}"),
            "trace_forward": absolute(f"{reverse('trace-forward')}?{query}"),
            "recall_scope": absolute(f"{reverse('recall-scope')}?{query}"),
        }
        # Holds belong to a higher layer; link to them only where that layer is routed.
        with contextlib.suppress(NoReverseMatch):
            out["holds"] = absolute(reverse("unit-holds", kwargs={"serial": obj.serial}))
        return out


class StationVisitSerializer(serializers.ModelSerializer):
    unit = serializers.CharField(source="unit.serial", read_only=True)
    unit_kind = NamedChoiceField(UnitKind, source="unit.kind", read_only=True)
    station_code = serializers.CharField(source="station.code", read_only=True)
    result = NamedChoiceField(VisitResult, read_only=True)

    class Meta:
        model = StationVisit
        fields = [
            "id",
            "unit",
            "unit_kind",
            "station",
            "station_code",
            "equipment",
            "started_at",
            "ended_at",
            "result",
            "program",
            "operator",
            "source_message_id",
        ]


class MeasurementSerializer(serializers.ModelSerializer):
    """One measured value; ``value`` is in ``value_unit`` (the characteristic's unit)."""

    unit = serializers.CharField(source="unit.serial", read_only=True)
    unit_kind = NamedChoiceField(UnitKind, source="unit.kind", read_only=True)
    characteristic_code = serializers.CharField(source="characteristic.code", read_only=True)
    value_unit = serializers.CharField(source="characteristic.unit", read_only=True)
    station_code = serializers.CharField(source="station.code", read_only=True)

    class Meta:
        model = Measurement
        fields = [
            "id",
            "unit",
            "unit_kind",
            "characteristic",
            "characteristic_code",
            "station",
            "station_code",
            "equipment",
            "visit",
            "value",
            "value_unit",
            "in_spec",
            "measured_at",
            "position_m",
            "source_message_id",
        ]


# --- commands: input --------------------------------------------------------------------


class UnitCreateInputSerializer(serializers.Serializer):
    """One unit of any kind; coils need ``length_m``, lots usually ``material``/``supplier``."""

    kind = NamedChoiceField(UnitKind)
    serial = serializers.CharField(max_length=200, help_text="Plain serial or GS1 string.")
    line = LineRefField(required=False, allow_null=True)
    produced_at = serializers.DateTimeField(required=False)
    length_m = serializers.FloatField(required=False, allow_null=True, min_value=0)
    material = serializers.CharField(max_length=80, required=False, default="")
    supplier = serializers.CharField(max_length=80, required=False, default="")
    reason = serializers.CharField(max_length=100, required=False, default="created")


class UnitsCreateBulkInputSerializer(serializers.Serializer):
    """Many units of one (non-metred) kind, e.g. a tray of cells leaving assembly."""

    kind = NamedChoiceField(UnitKind)
    serials = serializers.ListField(
        child=serializers.CharField(max_length=200),
        allow_empty=False,
        max_length=MAX_BULK_UNITS,
        help_text="Plain serials or GS1 strings; refused as a whole if any is bad or known.",
    )
    line = LineRefField(required=False, allow_null=True)
    produced_at = serializers.DateTimeField(required=False)
    reason = serializers.CharField(max_length=100, required=False, default="created in bulk")


class UnitsCreatedSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    units = LinkedUnitSerializer(many=True)


class CoilSegmentConsumeInputSerializer(serializers.Serializer):
    """A cell used metres ``[start_m, end_m)`` of a coil or slit coil."""

    coil = UnitRefField()
    consumer = UnitRefField()
    start_m = serializers.FloatField()
    end_m = serializers.FloatField()
    linked_at = serializers.DateTimeField(required=False)
    reason = serializers.CharField(max_length=100, required=False, default="coil segment consumed")


class CoilSlitInputSerializer(serializers.Serializer):
    """A slit coil was cut from metres ``[start_m, end_m)`` of a mother coil."""

    mother = UnitRefField(kind=UnitKind.COIL)
    slit_coil = UnitRefField(kind=UnitKind.SLIT_COIL)
    start_m = serializers.FloatField()
    end_m = serializers.FloatField()
    linked_at = serializers.DateTimeField(required=False)
    reason = serializers.CharField(max_length=100, required=False, default="slit from mother coil")


class LotConsumeInputSerializer(serializers.Serializer):
    """A unit used material from a material lot or mix batch."""

    lot = UnitRefField()
    consumer = UnitRefField()
    quantity = serializers.FloatField(required=False, allow_null=True)
    quantity_unit = serializers.CharField(max_length=8, required=False, default="")
    linked_at = serializers.DateTimeField(required=False)
    reason = serializers.CharField(max_length=100, required=False, default="material consumed")


class AssembleInputSerializer(serializers.Serializer):
    """Build a part into an assembly slot: cell -> module (or pack), module -> pack,
    pack -> vehicle."""

    part = UnitRefField()
    assembly = UnitRefField()
    slot = serializers.CharField(max_length=16, required=False, default="")
    linked_at = serializers.DateTimeField(required=False)
    reason = serializers.CharField(max_length=100, required=False, default="assembled")


class CellReplaceInputSerializer(serializers.Serializer):
    """Rework: take ``removed`` out of ``assembly`` and put ``replacement`` in its slot."""

    assembly = UnitRefField()
    removed = UnitRefField()
    replacement = UnitRefField()
    reason = serializers.CharField(max_length=200)
    at = serializers.DateTimeField(required=False)


class CellReplacedSerializer(serializers.Serializer):
    removed_link = LinkSerializer()
    new_link = LinkSerializer()


class VisitRecordInputSerializer(serializers.Serializer):
    unit = UnitRefField()
    station = StationRefField()
    equipment = EquipmentRefField(required=False, allow_null=True)
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(required=False, allow_null=True)
    result = NamedChoiceField(VisitResult, default=VisitResult.OK)
    program = serializers.CharField(max_length=64, required=False, default="")
    operator = serializers.CharField(max_length=64, required=False, default="")
    source_message_id = serializers.CharField(max_length=64, required=False, default="")


class MeasurementRowSerializer(serializers.Serializer):
    """One value of a control-plan characteristic on one unit, in the characteristic's
    unit (see ``/api/v1/plant/characteristics/``)."""

    unit = serializers.CharField(max_length=200, help_text="Serial or GS1 element string.")
    characteristic = serializers.IntegerField(min_value=1, help_text="Characteristic id.")
    value = serializers.FloatField()
    measured_at = serializers.DateTimeField()
    equipment = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    visit = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    position_m = serializers.FloatField(
        required=False, allow_null=True, help_text="Machine-direction position on a coil."
    )
    source_message_id = serializers.CharField(max_length=64, required=False, default="")


class MeasurementsRecordInputSerializer(serializers.Serializer):
    """Up to 20,000 measurements, recorded in one transaction: all or none."""

    rows = MeasurementRowSerializer(many=True, allow_empty=False, max_length=MAX_MEASUREMENT_ROWS)

    def to_internal_value(self, data):
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            detail = exc.detail
            if isinstance(detail, dict) and "rows" in detail:
                flat = flatten_list_errors("rows", detail["rows"])
                if flat:
                    detail = {k: v for k, v in detail.items() if k != "rows"} | flat
            raise serializers.ValidationError(detail) from exc

    def validate(self, attrs):
        rows = attrs["rows"]
        units = units_resolve(
            [r["unit"] for r in rows],
            field_of=lambda i: f"rows[{i}].unit",
            only=("id", "kind", "serial"),
        )
        self._check_exist(rows, "equipment", Equipment.objects)
        self._check_exist(rows, "visit", StationVisit.objects)
        attrs["inputs"] = [
            MeasurementInput(
                unit_id=unit.pk,
                characteristic_id=r["characteristic"],
                value=r["value"],
                measured_at=r["measured_at"],
                equipment_id=r.get("equipment"),
                visit_id=r.get("visit"),
                position_m=r.get("position_m"),
                source_message_id=r.get("source_message_id", ""),
            )
            for r, unit in zip(rows, units, strict=True)
        ]
        attrs["serials"] = [u.serial for u in units]
        return attrs

    @staticmethod
    def _check_exist(rows: list[dict], name: str, manager) -> None:
        """Referenced equipment and visits must exist (checked in one query, not per row)."""
        ids = {r[name] for r in rows if r.get(name) is not None}
        if not ids:
            return
        known = set(manager.filter(pk__in=ids).values_list("pk", flat=True))
        for i, r in enumerate(rows):
            if r.get(name) is not None and r[name] not in known:
                raise NotFound(f"No {name} with id {r[name]}.", field=f"rows[{i}].{name}")


class OutOfSpecRowSerializer(serializers.Serializer):
    row = serializers.IntegerField(help_text="Index of the row in the request.")
    unit = serializers.CharField()
    characteristic = serializers.IntegerField()
    value = serializers.FloatField()


class MeasurementsRecordedSerializer(serializers.Serializer):
    recorded = serializers.IntegerField()
    out_of_spec = serializers.IntegerField()
    first_id = serializers.IntegerField()
    last_id = serializers.IntegerField()
    out_of_spec_rows = OutOfSpecRowSerializer(many=True, help_text="At most the first 1000.")
