"""API views for holds and the station interlock.

Holds are placed and released only through :func:`compliance.services.hold_place` and
:func:`compliance.services.hold_release`, which set and restore ``Unit.status`` with history.
The interlock answers a line PLC in a handful of indexed queries.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from compliance import queries, services
from compliance.models import AlarmReaction, Hold, HoldUnit
from genealogy.api.serializers import unit_resolve
from genealogy.api.views import ERRORS, kind_param
from qms.api.filters import station_from_ref
from qms.api.pagination import OldestFirstCursorPagination
from qms.api.parsers import BulkJSONParser
from qms.exceptions import NotFound
from spc.models import SpcAlarm

from . import serializers
from .filters import HoldFilterSet

NUMBER_PARAM = OpenApiParameter(
    "number",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="Hold number, e.g. H-2026-000001.",
)
SERIAL_PARAM = OpenApiParameter(
    "serial",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="Serial or GS1 element string (URL-encoded).",
)


def _hold_get(number: str) -> Hold:
    hold = queries.hold_list().filter(number=number).first()
    if hold is None:
        raise NotFound(f"No hold {number!r}.", field="number")
    return hold


@extend_schema_view(
    list=extend_schema(summary="Holds (filter by status, source, placement time, unit)"),
    retrieve=extend_schema(
        summary="One hold with its units",
        parameters=[NUMBER_PARAM],
        responses={200: serializers.HoldDetailSerializer, 404: ERRORS[404]},
    ),
)
class HoldViewSet(viewsets.ReadOnlyModelViewSet):
    """Holds (quarantine) on sets of units."""

    serializer_class = serializers.HoldSerializer
    filterset_class = HoldFilterSet
    lookup_field = "number"

    def get_queryset(self):
        return queries.hold_list()

    def get_serializer_class(self):
        if self.action == "retrieve":
            return serializers.HoldDetailSerializer
        return serializers.HoldSerializer

    def retrieve(self, request: Request, number: str) -> Response:
        return Response(self.get_serializer(_hold_get(number)).data)


@extend_schema_view(
    get=extend_schema(
        summary="Every unit under a hold, in the order they were held",
        parameters=[NUMBER_PARAM],
    )
)
class HoldUnitListView(generics.ListAPIView):
    serializer_class = serializers.HeldUnitSerializer
    pagination_class = OldestFirstCursorPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no hold at hand
            return HoldUnit.objects.none()
        hold = _hold_get(self.kwargs["number"])
        return HoldUnit.objects.filter(hold=hold).select_related("unit")


@extend_schema_view(
    post=extend_schema(
        summary="Place a hold on units (their status becomes on hold)",
        request=serializers.HoldPlaceInputSerializer,
        responses={201: serializers.HoldDetailSerializer, **ERRORS},
    )
)
class HoldPlaceView(APIView):
    parser_classes = [BulkJSONParser]
    required_perms = ("compliance.add_hold",)

    def post(self, request: Request) -> Response:
        given = serializers.HoldPlaceInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        hold = services.hold_place(actor=request.user, **given.validated_data)
        out = serializers.HoldDetailSerializer(_hold_get(hold.number), context={"request": request})
        return Response(out.data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    post=extend_schema(
        summary="Release a hold (each unit returns to its previous status)",
        description="A unit still covered by another open hold stays on hold with that "
        "hold's reason. Releasing a released hold is refused (409).",
        parameters=[NUMBER_PARAM],
        request=serializers.HoldReleaseInputSerializer,
        responses={200: serializers.HoldDetailSerializer, **ERRORS},
    )
)
class HoldReleaseView(APIView):
    required_perms = ("compliance.change_hold",)

    def post(self, request: Request, number: str) -> Response:
        hold = _hold_get(number)
        given = serializers.HoldReleaseInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        services.hold_release(hold=hold, actor=request.user, reason=given.validated_data["reason"])
        out = serializers.HoldDetailSerializer(_hold_get(number), context={"request": request})
        return Response(out.data)


@extend_schema_view(
    get=extend_schema(
        summary="A unit's open holds and hold history",
        parameters=[SERIAL_PARAM],
        responses={200: serializers.UnitHoldsSerializer, 400: ERRORS[400], 404: ERRORS[404]},
    )
)
class UnitHoldsView(APIView):
    def get(self, request: Request, serial: str) -> Response:
        unit = unit_resolve(serial, field="serial", kind=kind_param(request))
        holds = list(
            queries.hold_list()
            .filter(pk__in=HoldUnit.objects.filter(unit=unit).values("hold_id"))
            .order_by("-placed_at", "-id")
        )
        data = {
            "unit": unit,
            "open_holds": [h for h in holds if h.status == "open"],
            "holds": holds,
        }
        return Response(serializers.UnitHoldsSerializer(data, context={"request": request}).data)


@extend_schema_view(
    get=extend_schema(
        summary="Station interlock: may this unit enter this station?",
        description="For line PLCs. `allowed` is false when the unit is on hold (each open "
        "hold's number and reason), scrapped or shipped, when anything upstream of it is "
        "on hold or scrapped, or when its last visit elsewhere ended NOK.",
        parameters=[serializers.InterlockQuerySerializer],
        responses={
            200: serializers.InterlockAnswerSerializer,
            400: ERRORS[400],
            404: OpenApiResponse(
                ERRORS[404].response, description="Unknown unit serial or station."
            ),
        },
    )
)
class InterlockView(APIView):
    def get(self, request: Request) -> Response:
        given = serializers.InterlockQuerySerializer(data=request.query_params)
        given.is_valid(raise_exception=True)
        unit = unit_resolve(given.validated_data["unit"], field="unit")
        station = station_from_ref(given.validated_data["station"], field="station")
        answer = queries.interlock_check(unit=unit, station=station)
        return Response(serializers.InterlockAnswerSerializer(answer).data)


@extend_schema_view(
    post=extend_schema(
        summary="Decide on an SPC alarm: release its holds and resume, or escalate to the MRB",
        description="`release` releases the open holds the alarm's reaction placed (each unit "
        "returns to its previous status), tells a stopped station to resume and closes the "
        "alarm. `escalate` keeps the holds for the MRB. An alarm not yet acknowledged is "
        "acknowledged with `cause` (required then). A closed alarm is refused (409).",
        request=serializers.AlarmDispositionInputSerializer,
        responses={200: serializers.AlarmReactionSerializer, **ERRORS},
    )
)
class SpcAlarmDispositionView(APIView):
    required_perms = ("compliance.change_hold", "spc.change_spcalarm")

    def post(self, request: Request, alarm_id: int) -> Response:
        alarm = SpcAlarm.objects.filter(pk=alarm_id).first()
        if alarm is None:
            raise NotFound(f"No SPC alarm {alarm_id}.", field="alarm_id")
        given = serializers.AlarmDispositionInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        reaction = services.spc_alarm_disposition(
            alarm=alarm, actor=request.user, **given.validated_data
        )
        return Response(serializers.AlarmReactionSerializer(reaction).data)


@extend_schema_view(
    get=extend_schema(
        summary="What compliance did about an SPC alarm (holds, line stop, decisions)",
        responses={200: serializers.AlarmReactionSerializer(many=True), 404: ERRORS[404]},
    )
)
class SpcAlarmReactionsView(APIView):
    def get(self, request: Request, alarm_id: int) -> Response:
        if not SpcAlarm.objects.filter(pk=alarm_id).exists():
            raise NotFound(f"No SPC alarm {alarm_id}.", field="alarm_id")
        reactions = AlarmReaction.objects.filter(alarm_id=alarm_id).select_related(
            "hold", "command"
        )
        return Response(serializers.AlarmReactionSerializer(reactions, many=True).data)
