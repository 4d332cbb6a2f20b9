"""API views for SPC: chart configuration, control-limit versions (propose, approve,
reject), chart data, the state of a characteristic, and alarms (list, acknowledge).

Reads list or show; each command validates its own input, calls exactly one
:mod:`spc.services` function as the caller and answers with what was written. A refused
command writes nothing and answers ``{code, detail, field}``.
"""

from __future__ import annotations

from django.db import transaction
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

from genealogy.api.views import ERRORS
from qms.exceptions import NotFound
from qms.models import Characteristic
from spc import queries, services
from spc.models import ControlLimits, SpcAlarm

from . import serializers
from .filters import AlarmFilterSet, LimitsFilterSet

CHARACTERISTIC_PARAM = OpenApiParameter(
    "characteristic", OpenApiTypes.INT, OpenApiParameter.PATH, description="Characteristic id."
)
LIMITS_PARAM = OpenApiParameter(
    "limits", OpenApiTypes.INT, OpenApiParameter.PATH, description="Control-limits version id."
)
ALARM_PARAM = OpenApiParameter(
    "alarm", OpenApiTypes.INT, OpenApiParameter.PATH, description="SPC alarm id."
)
#: Values a chart shows when the request names no range.
DEFAULT_CHART_VALUES = 500


def _characteristic(pk: int) -> Characteristic:
    found = Characteristic.objects.select_related("station__line__site").filter(pk=pk).first()
    if found is None:
        raise NotFound(f"No characteristic {pk}.", field="characteristic")
    return found


def _limits(pk: int) -> ControlLimits:
    found = queries.limits_list().filter(pk=pk).first()
    if found is None:
        raise NotFound(f"No control limits {pk}.", field="limits")
    return found


def _alarm(pk: int) -> SpcAlarm:
    found = queries.alarm_list().filter(pk=pk).first()
    if found is None:
        raise NotFound(f"No SPC alarm {pk}.", field="alarm")
    return found


@extend_schema_view(
    get=extend_schema(
        summary="A characteristic's chart configuration (the default if never configured)",
        parameters=[CHARACTERISTIC_PARAM],
        responses={200: serializers.ChartConfigSerializer, 404: ERRORS[404]},
    ),
    patch=extend_schema(
        summary="Change how a characteristic is charted (chart, subgroups, rules, detectors)",
        description="Refused with the field named: an unknown run rule, an X-bar-R chart on "
        "subgroups of varying size, a CUSUM with h <= 0, .... A change restarts the "
        "characteristic's evaluation from its approved limits.",
        parameters=[CHARACTERISTIC_PARAM],
        request=serializers.ChartConfigUpdateSerializer,
        responses={200: serializers.ChartConfigSerializer, **ERRORS},
    ),
)
class ChartConfigView(APIView):
    required_perms = ("spc.change_chartconfig",)

    def get(self, request: Request, characteristic: int) -> Response:
        config = queries.chart_config_for(_characteristic(characteristic))
        return Response(serializers.ChartConfigSerializer(config).data)

    def patch(self, request: Request, characteristic: int) -> Response:
        char = _characteristic(characteristic)
        given = serializers.ChartConfigUpdateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        changes = dict(given.validated_data)
        reason = changes.pop("reason", "")
        with transaction.atomic():  # a refused change leaves no default configuration behind
            config = services.chart_config_get_or_create(characteristic=char)
            config = services.chart_config_update(
                config=config, actor=request.user, reason=reason, **changes
            )
        return Response(serializers.ChartConfigSerializer(config).data)


@extend_schema_view(
    get=extend_schema(
        summary="A characteristic's control-limit versions, newest first (filter by status)",
        parameters=[CHARACTERISTIC_PARAM],
    )
)
class LimitsListView(generics.ListAPIView):
    serializer_class = serializers.ControlLimitsSerializer
    filterset_class = LimitsFilterSet

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ControlLimits.objects.none()
        return queries.limits_list(_characteristic(self.kwargs["characteristic"]))


@extend_schema_view(
    post=extend_schema(
        summary="Propose control limits from a baseline window (Phase I)",
        description="Makes (or replaces) the characteristic's draft: the engine's limits "
        "from the values in `[baseline_from, baseline_to)` without the `excluded` ones, "
        "and `proposed_exclusions`: the values beyond these limits, to confirm with their "
        "cause and propose again. Too few values: 409 `insufficient_data` naming the "
        "minimum.",
        parameters=[CHARACTERISTIC_PARAM],
        request=serializers.LimitsProposeInputSerializer,
        responses={201: serializers.ControlLimitsDetailSerializer, **ERRORS},
    )
)
class LimitsProposeView(APIView):
    required_perms = ("spc.add_controllimits",)

    def post(self, request: Request, characteristic: int) -> Response:
        char = _characteristic(characteristic)
        given = serializers.LimitsProposeInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        draft = services.limits_propose(
            characteristic=char, actor=request.user, **given.validated_data
        )
        out = serializers.ControlLimitsDetailSerializer(_limits(draft.pk))
        return Response(out.data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        summary="One control-limits version with its history (who, when, why)",
        parameters=[LIMITS_PARAM],
        responses={200: serializers.ControlLimitsDetailSerializer, 404: ERRORS[404]},
    )
)
class LimitsDetailView(APIView):
    def get(self, request: Request, limits: int) -> Response:
        return Response(serializers.ControlLimitsDetailSerializer(_limits(limits)).data)


@extend_schema_view(
    post=extend_schema(
        summary="Approve draft limits: in force from monitor_from, the previous version superseded",
        description="Needs the permission to approve control limits (quality engineers) and "
        "a reason. Limits without variation (sigma = 0) are refused.",
        parameters=[LIMITS_PARAM],
        request=serializers.LimitsApproveInputSerializer,
        responses={200: serializers.ControlLimitsDetailSerializer, **ERRORS},
    )
)
class LimitsApproveView(APIView):
    required_perms = ("spc.approve_controllimits",)

    def post(self, request: Request, limits: int) -> Response:
        draft = _limits(limits)
        given = serializers.LimitsApproveInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        services.limits_approve(limits=draft, actor=request.user, **given.validated_data)
        return Response(serializers.ControlLimitsDetailSerializer(_limits(limits)).data)


@extend_schema_view(
    post=extend_schema(
        summary="Reject draft limits (kept on record with the reason)",
        parameters=[LIMITS_PARAM],
        request=serializers.LimitsRejectInputSerializer,
        responses={200: serializers.ControlLimitsDetailSerializer, **ERRORS},
    )
)
class LimitsRejectView(APIView):
    required_perms = ("spc.approve_controllimits",)

    def post(self, request: Request, limits: int) -> Response:
        draft = _limits(limits)
        given = serializers.LimitsRejectInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        services.limits_reject(limits=draft, actor=request.user, **given.validated_data)
        return Response(serializers.ControlLimitsDetailSerializer(_limits(limits)).data)


@extend_schema_view(
    get=extend_schema(
        summary="Chart data: plotted points, limits in force and alarms",
        description="A time range (`start`, `end`) or the `last` N values (500 by default; "
        "at most 5000 values). Points carry their position on the chart, the measurements "
        "behind them and each statistic's value (`x`, `mr` or `xbar`, `r`/`s`, "
        "`cusum_up`, `cusum_down`, `ewma`); alarms the index of the point they fired on. "
        "Without approved limits: the raw values.",
        parameters=[CHARACTERISTIC_PARAM, serializers.ChartQuerySerializer],
        responses={200: OpenApiTypes.OBJECT, 400: ERRORS[400], 404: ERRORS[404]},
    )
)
class ChartDataView(APIView):
    def get(self, request: Request, characteristic: int) -> Response:
        char = _characteristic(characteristic)
        given = serializers.ChartQuerySerializer(data=request.query_params)
        given.is_valid(raise_exception=True)
        query = dict(given.validated_data)
        if "start" not in query and "last" not in query:
            query["last"] = DEFAULT_CHART_VALUES
        return Response(queries.chart_data(characteristic=char, **query))


@extend_schema_view(
    get=extend_schema(
        summary="Where a characteristic stands: in control, alarm, out of spec, "
        "insufficient data or no limits; capability and detector ARLs",
        parameters=[CHARACTERISTIC_PARAM],
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="`state`, `limits`, `open_alarms`, `capability` (Cp, Cpk, Pp, "
                "Ppk with intervals), `arl` (CUSUM/EWMA/Shewhart ARLs at 0, 1, 1.5 and 2 "
                "sigma, and the in-control ARL of the whole configuration).",
            ),
            404: ERRORS[404],
        },
    )
)
class CharacteristicStateView(APIView):
    def get(self, request: Request, characteristic: int) -> Response:
        return Response(queries.characteristic_state(_characteristic(characteristic)))


@extend_schema_view(
    list=extend_schema(summary="SPC alarms (filter by status, characteristic, station, since)"),
    retrieve=extend_schema(summary="One SPC alarm with the values behind it"),
)
class AlarmViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = serializers.SpcAlarmSerializer
    filterset_class = AlarmFilterSet

    def get_queryset(self):
        return queries.alarm_list()


@extend_schema_view(
    post=extend_schema(
        summary="Acknowledge an open SPC alarm with the cause found",
        parameters=[ALARM_PARAM],
        request=serializers.AlarmAcknowledgeInputSerializer,
        responses={200: serializers.SpcAlarmSerializer, **ERRORS},
    )
)
class AlarmAcknowledgeView(APIView):
    required_perms = ("spc.change_spcalarm",)

    def post(self, request: Request, alarm: int) -> Response:
        found = _alarm(alarm)
        given = serializers.AlarmAcknowledgeInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        services.alarm_acknowledge(alarm=found, actor=request.user, **given.validated_data)
        return Response(serializers.SpcAlarmSerializer(_alarm(alarm)).data)


@extend_schema_view(
    post=extend_schema(
        summary="Close an acknowledged SPC alarm (its reaction is complete)",
        description="For an alarm escalated to the MRB once the MRB has decided on its holds. "
        "An open (unacknowledged) or closed alarm is refused (409).",
        parameters=[ALARM_PARAM],
        request=serializers.AlarmCloseInputSerializer,
        responses={200: serializers.SpcAlarmSerializer, **ERRORS},
    )
)
class AlarmCloseView(APIView):
    required_perms = ("spc.change_spcalarm",)

    def post(self, request: Request, alarm: int) -> Response:
        found = _alarm(alarm)
        given = serializers.AlarmCloseInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        services.alarm_close(alarm=found, actor=request.user, **given.validated_data)
        return Response(serializers.SpcAlarmSerializer(_alarm(alarm)).data)
