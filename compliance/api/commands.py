"""Commands to stations over the API: line stop, hold, release.

``POST /api/v1/stations/<station>/commands/`` records the command and sends it over the
station's transport once the request's transaction commits
(:func:`qms.ingest.commands.station_command_send`); the answer is the recorded command with
its status (sent, or failed with the error; pending when delivery has not run yet).
``GET`` on the same path lists the station's commands, newest first.

``<station>`` is the station's id, ``line/station`` (``l2-cyl/fill``) or
``site/line/station`` (``gf1/l2-cyl/fill``).
"""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from genealogy.api.serializers import units_resolve
from genealogy.api.views import ERRORS
from qms.api.filters import station_from_ref
from qms.api.parsers import BulkJSONParser
from qms.api.schema import NamedChoiceField
from qms.ingest import queries as ingest_queries
from qms.ingest.commands import station_command_send
from qms.ingest.models import CommandKind, CommandStatus, StationCommand, Transport
from qms.models import Station

#: Most serials one hold command may name (a station's buffer, a tray, a rack).
MAX_COMMAND_UNITS = 10_000

STATION_PARAM = OpenApiParameter(
    "station",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="Station id, line/station (l2-cyl/fill) or site/line/station (gf1/l2-cyl/fill).",
)


class StationCommandInputSerializer(serializers.Serializer):
    """A command for the station: stop the line, hold units in its buffer, or resume."""

    kind = NamedChoiceField(CommandKind)
    reason = serializers.CharField(help_text="Why, as the station's HMI will show it.")
    units = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        default=list,
        max_length=MAX_COMMAND_UNITS,
        help_text="Serials (GS1 accepted) of the units concerned, for a hold.",
    )
    reference = serializers.CharField(
        max_length=120,
        required=False,
        default="",
        allow_blank=True,
        help_text="e.g. the hold number or SPC alarm this command follows.",
    )

    def validate(self, attrs):
        units = units_resolve(attrs["units"], field_of=lambda i: f"units[{i}]")
        attrs["units"] = [u.serial for u in units]
        return attrs


class StationCommandSerializer(serializers.ModelSerializer):
    """A command as recorded: what was sent where, and whether it went out."""

    station = serializers.SerializerMethodField()
    kind = NamedChoiceField(CommandKind, read_only=True)
    units = serializers.ListField(
        source="unit_serials", child=serializers.CharField(), read_only=True
    )
    transport = NamedChoiceField(Transport, read_only=True)
    status = NamedChoiceField(CommandStatus, read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", read_only=True)

    class Meta:
        model = StationCommand
        fields = [
            "id",
            "station",
            "kind",
            "reason",
            "reference",
            "units",
            "transport",
            "target",
            "payload",
            "status",
            "error",
            "requested_by",
            "requested_at",
            "sent_at",
        ]

    def get_station(self, obj: StationCommand) -> str:
        return f"{obj.station.line.site.code}/{obj.station.line.code}/{obj.station.code}"


@extend_schema_view(
    get=extend_schema(
        summary="A station's commands (line stop, hold, release), newest first",
        parameters=[STATION_PARAM],
    ),
    post=extend_schema(
        summary="Send a line-stop, hold or release command to a station",
        description="Recorded, then sent over the station's command transport (MQTT topic "
        "`qms/<site>/<line>/<station>/command` or the station's OPC UA method) when the "
        "request commits. The answer has the outcome: `sent`, or `failed` with the error "
        "(the command stays on record either way).",
        parameters=[STATION_PARAM],
        request=StationCommandInputSerializer,
        responses={201: StationCommandSerializer, **ERRORS},
    ),
)
class StationCommandView(generics.ListAPIView):
    serializer_class = StationCommandSerializer
    parser_classes = [BulkJSONParser]
    required_perms = ("ingest.add_stationcommand",)

    def station(self) -> Station:
        return station_from_ref(self.kwargs["station"], field="station")

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no station at hand
            return StationCommand.objects.none()
        return ingest_queries.station_command_list().filter(station=self.station())

    def post(self, request: Request, station: str) -> Response:
        target = self.station()
        given = StationCommandInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        with transaction.atomic():
            command = station_command_send(
                station=target,
                kind=data["kind"],
                reason=data["reason"],
                reference=data["reference"],
                unit_serials=data["units"],
                actor=request.user,
            )
        # Delivery ran on commit (when this request is the outermost transaction).
        command = ingest_queries.station_command_list().get(pk=command.pk)
        return Response(StationCommandSerializer(command).data, status=status.HTTP_201_CREATED)
