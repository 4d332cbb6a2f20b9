"""API views of formation: runs, steps (without samples), a step's curve, DCIR and aging
readings, features, grades, grading rule sets, tray loading, the cycler file upload, and
the live state of cycler channels with their alarm episodes.

Reads list or show. The upload runs the same :func:`formation.imports.cycler_file_import`
as ``manage.py formation_import``: each cell of the file applied once, refused cells kept
as dead letters, the file refused whole (and kept) when it cannot be read or was imported
before.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from genealogy.api.views import ERRORS
from qms.api.pagination import OldestFirstCursorPagination
from qms.api.parsers import PayloadTooLarge
from qms.exceptions import InvalidInput, NotFound
from qms.files.api import upload_max_bytes

from .. import queries
from ..imports import CyclerFileAlreadyImported, CyclerFileRefused, cycler_file_import
from ..models import ChannelStatus, CyclerAlarm
from . import filters, serializers


def channel_status_list() -> QuerySet[ChannelStatus]:
    """Channels with their cabinet and cell, ``in_alarm`` annotated and the active alarms
    prefetched as ``open_alarms``."""
    open_alarms = CyclerAlarm.objects.filter(cleared_at__isnull=True)
    return (
        ChannelStatus.objects.select_related("equipment__station__line__site", "unit")
        .annotate(in_alarm=Exists(open_alarms.filter(channel_status=OuterRef("pk"))))
        .prefetch_related(
            Prefetch(
                "alarms", queryset=open_alarms.order_by("raised_at", "id"), to_attr="open_alarms"
            )
        )
        .order_by("equipment__code", "channel")
    )


def cycler_alarm_list() -> QuerySet[CyclerAlarm]:
    """Alarm episodes with their channel, cabinet and cell, newest first."""
    return CyclerAlarm.objects.select_related("channel_status__equipment", "unit").order_by(
        "-raised_at", "-id"
    )


class _ReadOnly(viewsets.ReadOnlyModelViewSet):
    lookup_value_regex = "[0-9]+"


@extend_schema_view(
    list=extend_schema(
        summary="Formation runs, one per cell and source (newest first)",
        description="Where (cabinet, channel, tray position, and whether the tray's loading "
        "record confirmed it), when, the protocol, and the source: a cycler file (name, "
        "SHA-256) or a cycler's envelope stream (run id), with its current sign convention.",
    ),
    retrieve=extend_schema(summary="One formation run"),
)
class RunViewSet(_ReadOnly):
    serializer_class = serializers.RunSerializer
    filterset_class = filters.RunFilterSet

    def get_queryset(self):
        return queries.run_list()


@extend_schema_view(
    list=extend_schema(
        summary="Step results (without samples; a step's curve is under curve_url)",
    ),
    retrieve=extend_schema(summary="One step's results"),
)
class StepViewSet(_ReadOnly):
    serializer_class = serializers.StepSerializer
    filterset_class = filters.StepFilterSet
    pagination_class = OldestFirstCursorPagination

    def get_queryset(self):
        return queries.step_list()


@extend_schema(
    summary="A step's curve as arrays (resampled copy, or every sample)",
    parameters=[
        OpenApiParameter("step", OpenApiTypes.INT, OpenApiParameter.PATH, description="Step id."),
        OpenApiParameter(
            "resolution",
            OpenApiTypes.STR,
            enum=["resampled", "full"],
            description="`resampled` (default): the fixed-size copy kept in the database; "
            "`full`: every sample, from file storage.",
        ),
    ],
    responses={200: serializers.CurveSerializer, 400: ERRORS[400], 404: ERRORS[404]},
)
class StepCurveView(APIView):
    def get(self, request: Request, step: int) -> Response:
        found = queries.step_get(step)
        if found is None or not hasattr(found, "curve"):
            raise NotFound(f"No curve of step {step}.", field="step")
        resolution = request.query_params.get("resolution", "resampled")
        if resolution not in ("resampled", "full"):
            raise InvalidInput("resolution is 'resampled' or 'full'.", field="resolution")
        curve = found.curve
        arrays = (
            queries.curve_arrays(curve) if resolution == "full" else queries.curve_resampled(curve)
        )
        body = {
            "step": found.pk,
            "resolution": resolution,
            "points": len(arrays["time_s"]),
            "full_points": curve.n_points,
            "sha256": curve.sha256,
            **{name: values.tolist() for name, values in arrays.items()},
        }
        return Response(body)


@extend_schema_view(
    list=extend_schema(summary="DCIR readings from pulse steps (1 s and 10 s)"),
    retrieve=extend_schema(summary="One DCIR reading"),
)
class DcirViewSet(_ReadOnly):
    serializer_class = serializers.DcirSerializer
    filterset_class = filters.DcirFilterSet

    def get_queryset(self):
        return queries.dcir_list()


@extend_schema_view(
    list=extend_schema(summary="Aging readings: OCV, ACIR, rack, temperature (newest first)"),
    retrieve=extend_schema(summary="One aging reading"),
)
class AgingViewSet(_ReadOnly):
    serializer_class = serializers.AgingSerializer
    filterset_class = filters.AgingFilterSet

    def get_queryset(self):
        return queries.aging_list()


@extend_schema_view(
    list=extend_schema(
        summary="Cells' formation features with robust z-scores within lot, channel and rack",
    ),
    retrieve=extend_schema(summary="One cell's formation features"),
)
class FeaturesViewSet(_ReadOnly):
    serializer_class = serializers.FeaturesSerializer
    filterset_class = filters.FeaturesFilterSet

    def get_queryset(self):
        return queries.features_list()


@extend_schema_view(
    list=extend_schema(
        summary="Cell grades: bin, pass/fail, K screen (newest first; the latest counts)",
    ),
    retrieve=extend_schema(summary="One grade"),
)
class GradeViewSet(_ReadOnly):
    serializer_class = serializers.GradeSerializer
    filterset_class = filters.GradeFilterSet

    def get_queryset(self):
        return queries.grade_list()


@extend_schema_view(
    list=extend_schema(summary="Grading rule sets per line (bins, K screen limits)"),
    retrieve=extend_schema(summary="One grading rule set"),
)
class RuleSetViewSet(_ReadOnly):
    serializer_class = serializers.RuleSetSerializer
    filterset_class = filters.RuleSetFilterSet
    pagination_class = OldestFirstCursorPagination

    def get_queryset(self):
        return queries.rule_set_list()


@extend_schema_view(
    list=extend_schema(summary="Tray loading records (which cell in which tray position)"),
    retrieve=extend_schema(summary="One tray loading record"),
)
class TrayLoadViewSet(_ReadOnly):
    serializer_class = serializers.TrayLoadSerializer
    filterset_class = filters.TrayLoadFilterSet

    def get_queryset(self):
        return queries.tray_load_list()


@extend_schema_view(
    list=extend_schema(summary="Cycler import profiles"),
    retrieve=extend_schema(summary="One cycler import profile"),
)
class ImportProfileViewSet(_ReadOnly):
    serializer_class = serializers.ImportProfileSerializer
    pagination_class = OldestFirstCursorPagination

    def get_queryset(self):
        return queries.profile_list()


@extend_schema_view(
    list=extend_schema(summary="Imported cycler files (newest first)"),
    retrieve=extend_schema(summary="One imported cycler file"),
)
class FileImportViewSet(_ReadOnly):
    serializer_class = serializers.FileImportSerializer
    filterset_class = filters.FileImportFilterSet

    def get_queryset(self):
        return queries.file_import_list()


@extend_schema_view(
    list=extend_schema(
        summary="Cycler channels' live state (one row per channel, latest status)",
        description="What each formation channel is doing as its cabinet last reported it "
        "(envelope kind `cycler_status`): the cell on it, state, step, voltage, current (+ "
        "charging), temperature, capacity so far, and the alarms active on it.",
    ),
    retrieve=extend_schema(summary="One channel's live state"),
)
class ChannelStatusViewSet(_ReadOnly):
    serializer_class = serializers.ChannelStatusSerializer
    filterset_class = filters.ChannelStatusFilterSet
    pagination_class = OldestFirstCursorPagination

    def get_queryset(self):
        return channel_status_list()


@extend_schema_view(
    list=extend_schema(
        summary="Cycler alarm episodes (newest first)",
        description="Raised when a channel first reports an alarm code, cleared when a later "
        "status no longer reports it. Critical ones are published to the layers above.",
    ),
    retrieve=extend_schema(summary="One cycler alarm episode"),
)
class CyclerAlarmViewSet(_ReadOnly):
    serializer_class = serializers.CyclerAlarmSerializer
    filterset_class = filters.CyclerAlarmFilterSet

    def get_queryset(self):
        return cycler_alarm_list()


@extend_schema(
    summary="Import a cycler export (cabinet CSV, Neware, Arbin, Maccor) through a profile",
    description="Each cell's run becomes one `formation_step` envelope, applied exactly once; "
    "a refused cell (a serial the plant never made, a tray position the loading record "
    "contradicts) lands in the dead-letter store with `<file>:cell <barcode>`. A file that "
    "cannot be read (missing or unknown columns, wrong units, time running backwards, NaN) "
    "is refused whole (400) and so is the same file again (409); both are kept as dead "
    "letters. Nothing is half-written.",
    request={"multipart/form-data": serializers.FileUploadInputSerializer},
    responses={
        201: serializers.FileUploadResultSerializer,
        400: OpenApiResponse(serializers.FileRefusedSerializer, description="Unreadable file."),
        403: ERRORS[403],
        404: OpenApiResponse(description="Unknown profile."),
        409: OpenApiResponse(
            serializers.FileRefusedSerializer,
            description="Imported already (same content), or the profile is inactive.",
        ),
        413: OpenApiResponse(description="File larger than the upload limit."),
    },
)
class FileUploadView(APIView):
    parser_classes = [MultiPartParser, FormParser]
    required_perms = ("formation.add_cyclerfileimport",)

    def post(self, request: Request) -> Response:
        given = serializers.FileUploadInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        upload = given.validated_data["file"]
        limit = upload_max_bytes()
        if upload.size > limit:
            raise PayloadTooLarge(
                f"{upload.name} is {upload.size} bytes; uploads take up to {limit} bytes "
                "(use manage.py formation_import for larger files)."
            )
        profile = queries.profile_get(given.validated_data["profile"])
        if profile is None:
            raise NotFound(
                f"No cycler import profile {given.validated_data['profile']!r}.", field="profile"
            )
        try:
            result = cycler_file_import(
                data=b"".join(upload.chunks()),
                name=upload.name,
                profile=profile,
                actor=request.user,
                origin="upload",
                barcode=given.validated_data.get("barcode") or None,
            )
        except (CyclerFileRefused, CyclerFileAlreadyImported) as exc:
            return Response(exc.as_dict(), status=exc.http_status)
        return Response(
            serializers.FileUploadResultSerializer(result).data, status=status.HTTP_201_CREATED
        )


__all__ = [
    "AgingViewSet",
    "ChannelStatusViewSet",
    "CyclerAlarmViewSet",
    "DcirViewSet",
    "FeaturesViewSet",
    "FileImportViewSet",
    "FileUploadView",
    "GradeViewSet",
    "ImportProfileViewSet",
    "RuleSetViewSet",
    "RunViewSet",
    "StepCurveView",
    "StepViewSet",
    "TrayLoadViewSet",
]
