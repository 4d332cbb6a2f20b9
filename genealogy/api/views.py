"""API views for the digital thread: units, measurements, and one view per command.

Reads: units (filters, cursor pagination; detail by serial with links one level up and
down) and measurements. Commands: each view validates its own input, calls exactly one
:mod:`genealogy.services` function as the caller (a person or an integration's user) and
answers with what was written. A refused command writes nothing (the service's
transaction) and answers ``{code, detail, field}``.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from genealogy import queries, services
from genealogy.choices import UnitKind
from genealogy.models import Link, Measurement, Unit
from qms.api.parsers import BulkJSONParser
from qms.api.serializers import DomainErrorSerializer
from qms.exceptions import InvalidInput

from . import filters, serializers
from .serializers import unit_resolve

#: Links listed each way in a unit's detail; a material lot feeds tens of thousands of
#: cells, which the forward trace streams instead.
DETAIL_LINKS_LIMIT = 1000

ERRORS = {
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description="Invalid input: `{field: [messages]}` from validation, or "
        "`{code, detail, field}` (malformed GS1 string, wrong check digit, ...).",
    ),
    403: OpenApiResponse(description="Read-only token, auditor, or role without permission."),
    404: OpenApiResponse(DomainErrorSerializer, description="A referenced serial or id."),
    409: OpenApiResponse(DomainErrorSerializer, description="Refused by a business rule."),
}


def kind_param(request: Request) -> str | None:
    """The optional ``?kind=`` that disambiguates a serial shared by two kinds."""
    kind = request.query_params.get("kind") or None
    if kind is not None and kind not in UnitKind.values:
        raise InvalidInput(f"Unknown unit kind {kind!r}.", field="kind")
    return kind


@extend_schema_view(
    list=extend_schema(summary="Units (filter by kind, status, line, production time, serial)"),
    retrieve=extend_schema(
        summary="One unit by serial, with its links one level up and down",
        parameters=[
            OpenApiParameter(
                "serial",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                description="Serial or GS1 element string (URL-encoded).",
            ),
            OpenApiParameter(
                "kind",
                OpenApiTypes.STR,
                enum=UnitKind.values,
                description="Only needed when two kinds share a serial.",
            ),
        ],
        responses={200: serializers.UnitDetailSerializer, 400: ERRORS[400], 404: ERRORS[404]},
    ),
)
class UnitViewSet(viewsets.ReadOnlyModelViewSet):
    """Traceable units: lots, batches, coils, slit coils, cells, modules, packs, vehicles."""

    queryset = Unit.objects.select_related("line").order_by("-id")
    serializer_class = serializers.UnitSerializer
    filterset_class = filters.UnitFilterSet
    lookup_field = "serial"
    lookup_value_regex = "[^/]+"

    def get_serializer_class(self):
        if self.action == "retrieve":
            return serializers.UnitDetailSerializer
        return serializers.UnitSerializer

    def retrieve(self, request: Request, serial: str) -> Response:
        unit = unit_resolve(serial, field="serial", kind=kind_param(request))
        links = queries.unit_neighbours(unit, limit=DETAIL_LINKS_LIMIT)
        unit.upstream_rows, unit.upstream_count = links.upstream, links.upstream_count
        unit.downstream_rows, unit.downstream_count = links.downstream, links.downstream_count
        return Response(self.get_serializer(unit).data)


@extend_schema_view(
    list=extend_schema(summary="Measurements (filter by unit, characteristic, station, time)"),
)
class MeasurementViewSet(viewsets.ReadOnlyModelViewSet):
    """Measured values against the control plan; append-only, newest first."""

    queryset: QuerySet = Measurement.objects.select_related(
        "unit", "characteristic", "station"
    ).order_by("-id")
    serializer_class = serializers.MeasurementSerializer
    filterset_class = filters.MeasurementFilterSet


class _CommandView(APIView):
    """POST input -> one service -> the written objects (201)."""

    input_serializer_class: type
    output_serializer_class: type
    required_perms: tuple[str, ...] = ()

    def post(self, request: Request) -> Response:
        given = self.input_serializer_class(data=request.data, context={"request": request})
        given.is_valid(raise_exception=True)
        result = self.perform(given.validated_data, actor=request.user)
        out = self.output_serializer_class(result, context={"request": request})
        return Response(out.data, status=status.HTTP_201_CREATED)

    def perform(self, data: dict, *, actor):  # pragma: no cover - each command defines it
        raise NotImplementedError


def _command_schema(summary: str, request, response, description: str = ""):
    return extend_schema_view(
        post=extend_schema(
            summary=summary,
            description=description,
            request=request,
            responses={201: response, **ERRORS},
        )
    )


@_command_schema(
    "Create one unit (any kind; coils with their length)",
    serializers.UnitCreateInputSerializer,
    serializers.UnitSerializer,
)
class UnitCreateView(_CommandView):
    input_serializer_class = serializers.UnitCreateInputSerializer
    output_serializer_class = serializers.UnitSerializer
    required_perms = ("genealogy.add_unit",)

    def perform(self, data: dict, *, actor) -> Unit:
        return services.unit_create(actor=actor, **data)


@_command_schema(
    "Create many units of one kind from their serials (all or none)",
    serializers.UnitsCreateBulkInputSerializer,
    serializers.UnitsCreatedSerializer,
)
class UnitsCreateBulkView(_CommandView):
    parser_classes = [BulkJSONParser]
    input_serializer_class = serializers.UnitsCreateBulkInputSerializer
    output_serializer_class = serializers.UnitsCreatedSerializer
    required_perms = ("genealogy.add_unit",)

    def perform(self, data: dict, *, actor) -> dict:
        units = services.units_create_bulk(actor=actor, **data)
        return {"created": len(units), "units": units}


@_command_schema(
    "Record that a cell consumed metres [start_m, end_m) of a coil",
    serializers.CoilSegmentConsumeInputSerializer,
    serializers.LinkSerializer,
    "Refused (409) when the segment lies outside the coil or overlaps a segment already "
    "consumed, when the coil or the cell is on hold or scrapped, or on a cycle.",
)
class CoilSegmentConsumeView(_CommandView):
    input_serializer_class = serializers.CoilSegmentConsumeInputSerializer
    output_serializer_class = serializers.LinkSerializer
    required_perms = ("genealogy.add_link",)

    def perform(self, data: dict, *, actor) -> Link:
        return services.coil_segment_consume(actor=actor, **data)


@_command_schema(
    "Record that a slit coil was cut from metres [start_m, end_m) of a mother coil",
    serializers.CoilSlitInputSerializer,
    serializers.LinkSerializer,
)
class CoilSlitView(_CommandView):
    input_serializer_class = serializers.CoilSlitInputSerializer
    output_serializer_class = serializers.LinkSerializer
    required_perms = ("genealogy.add_link",)

    def perform(self, data: dict, *, actor) -> Link:
        return services.coil_slit(actor=actor, **data)


@_command_schema(
    "Record that a unit consumed material from a lot or mix batch",
    serializers.LotConsumeInputSerializer,
    serializers.LinkSerializer,
)
class LotConsumeView(_CommandView):
    input_serializer_class = serializers.LotConsumeInputSerializer
    output_serializer_class = serializers.LinkSerializer
    required_perms = ("genealogy.add_link",)

    def perform(self, data: dict, *, actor) -> Link:
        return services.lot_consume(actor=actor, **data)


@_command_schema(
    "Assemble a part into an assembly slot (cell -> module -> pack -> vehicle)",
    serializers.AssembleInputSerializer,
    serializers.LinkSerializer,
    "The interlock: refused (409) when the part or the assembly is on hold or scrapped, "
    "naming the hold and its reason; also when the part is already assembled, the slot is "
    "taken, or the kinds do not fit.",
)
class AssembleView(_CommandView):
    input_serializer_class = serializers.AssembleInputSerializer
    output_serializer_class = serializers.LinkSerializer
    required_perms = ("genealogy.add_link",)

    def perform(self, data: dict, *, actor) -> Link:
        return services.unit_assemble(actor=actor, **data)


@_command_schema(
    "Rework: replace a cell in a module (the old link is closed, never deleted)",
    serializers.CellReplaceInputSerializer,
    serializers.CellReplacedSerializer,
)
class CellReplaceView(_CommandView):
    input_serializer_class = serializers.CellReplaceInputSerializer
    output_serializer_class = serializers.CellReplacedSerializer
    required_perms = ("genealogy.add_link", "genealogy.change_link")

    def perform(self, data: dict, *, actor) -> dict:
        removed_link, new_link = services.cell_replace(actor=actor, **data)
        return {"removed_link": removed_link, "new_link": new_link}


@_command_schema(
    "Record measurements in bulk (up to 20,000 rows, one transaction, all or none)",
    serializers.MeasurementsRecordInputSerializer,
    serializers.MeasurementsRecordedSerializer,
    "Each row names its unit by serial and its characteristic by id; the value is in the "
    "characteristic's unit and is checked against its limits (`in_spec`). Any bad row "
    "refuses the whole call, naming it (`rows[17].value`).",
)
class MeasurementsRecordView(_CommandView):
    parser_classes = [BulkJSONParser]
    input_serializer_class = serializers.MeasurementsRecordInputSerializer
    output_serializer_class = serializers.MeasurementsRecordedSerializer
    required_perms = ("genealogy.add_measurement",)

    #: Out-of-spec rows echoed back; the rest are in the measurement list (in_spec=false).
    ECHO_LIMIT = 1000

    def perform(self, data: dict, *, actor) -> dict:
        created = services.measurements_record(rows=data["inputs"], actor=actor)
        serials = data["serials"]
        out_of_spec = [(i, m) for i, m in enumerate(created) if not m.in_spec]
        return {
            "recorded": len(created),
            "out_of_spec": len(out_of_spec),
            "first_id": min(m.pk for m in created),
            "last_id": max(m.pk for m in created),
            "out_of_spec_rows": [
                {
                    "row": i,
                    "unit": serials[i],
                    "characteristic": m.characteristic_id,
                    "value": m.value,
                }
                for i, m in out_of_spec[: self.ECHO_LIMIT]
            ],
        }


@_command_schema(
    "Record a unit's pass through a station",
    serializers.VisitRecordInputSerializer,
    serializers.StationVisitSerializer,
)
class VisitRecordView(_CommandView):
    input_serializer_class = serializers.VisitRecordInputSerializer
    output_serializer_class = serializers.StationVisitSerializer
    required_perms = ("genealogy.add_stationvisit",)

    def perform(self, data: dict, *, actor):
        return services.visit_record(actor=actor, **data)
