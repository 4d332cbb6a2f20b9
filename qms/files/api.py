"""REST for file import: upload an export (``POST /api/v1/files/import/``), list imported
files (``GET /api/v1/files/``) and the import profiles (``GET /api/v1/files/profiles/``).

An upload runs the same :func:`qms.files.services.file_import` as ``manage.py
ingest_files``: the file is imported once (by content hash), its rows applied exactly once,
rejected rows kept in the dead-letter store with file and row number. It acts as the caller,
so history names the uploading person or integration.
"""

from __future__ import annotations

import django_filters
from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from qms.api.pagination import OldestFirstCursorPagination
from qms.api.parsers import PayloadTooLarge
from qms.api.schema import NamedChoiceField
from qms.api.serializers import DomainErrorSerializer
from qms.exceptions import NotFound

from . import queries
from .choices import DecimalSeparator, FileFormat, ImportKind
from .models import FileImportProfile, ImportedFile
from .services import REJECTIONS_REPORTED, FileAlreadyImported, file_import

#: Largest file an upload takes (``QMS_FILE_IMPORT_MAX_BYTES``); larger exports go through
#: ``manage.py ingest_files``.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def upload_max_bytes() -> int:
    return int(getattr(settings, "QMS_FILE_IMPORT_MAX_BYTES", DEFAULT_MAX_BYTES))


# --- Serializers --------------------------------------------------------------------------------


class FileImportProfileSerializer(serializers.ModelSerializer):
    """How one kind of export is read; ``columns`` is the mapping (see the ingest guide)."""

    file_format = NamedChoiceField(FileFormat, read_only=True)
    decimal_separator = NamedChoiceField(DecimalSeparator, read_only=True)
    kind = NamedChoiceField(ImportKind, read_only=True)
    station = serializers.SerializerMethodField(help_text="site/line/station")

    class Meta:
        model = FileImportProfile
        fields = [
            "id",
            "name",
            "description",
            "file_format",
            "delimiter",
            "quotechar",
            "encoding",
            "decimal_separator",
            "thousands_separator",
            "header_row",
            "sheet_name",
            "kind",
            "station",
            "equipment_code",
            "source",
            "columns",
            "is_active",
        ]

    def get_station(self, obj: FileImportProfile) -> str:
        st = obj.station
        return f"{st.line.site.code}/{st.line.code}/{st.code}"


class ImportedFileSerializer(serializers.ModelSerializer):
    """One imported file and what became of its rows."""

    profile = serializers.SlugRelatedField(slug_field="name", read_only=True)
    imported_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ImportedFile
        fields = [
            "id",
            "name",
            "sha256",
            "origin",
            "profile",
            "size_bytes",
            "rows",
            "accepted",
            "duplicate",
            "rejected",
            "skipped",
            "imported_at",
            "imported_by",
        ]


class FileImportInputSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The CSV or XLSX export, as the equipment wrote it.")
    profile = serializers.CharField(
        max_length=80, help_text="Name of the import profile, e.g. 'l2-cyl check-weigher CSV'."
    )


class RowRejectionSerializer(serializers.Serializer):
    row = serializers.IntegerField(help_text="Line (CSV) or row (XLSX) in the file, from 1.")
    column = serializers.CharField(help_text="The column concerned, where there is one.")
    reason = serializers.CharField()
    dead_letter_id = serializers.IntegerField(
        allow_null=True, help_text="The dead-letter entry keeping the raw row."
    )


class FileImportResultSerializer(serializers.Serializer):
    """Counts per outcome; ``rows`` = accepted + duplicate + rejected + skipped."""

    file = ImportedFileSerializer(source="imported_file")
    rows = serializers.IntegerField(source="imported_file.rows")
    accepted = serializers.IntegerField(source="imported_file.accepted", help_text="Applied now.")
    duplicate = serializers.IntegerField(
        source="imported_file.duplicate",
        help_text="Applied before (an earlier file had the same record); not applied again.",
    )
    rejected = serializers.IntegerField(
        source="imported_file.rejected", help_text="Kept in the dead-letter store."
    )
    skipped = serializers.IntegerField(
        source="imported_file.skipped", help_text="Left out by the profile's row filter."
    )
    rejections = RowRejectionSerializer(
        many=True, help_text=f"The first {REJECTIONS_REPORTED} rejected rows."
    )


class AlreadyImportedSerializer(DomainErrorSerializer):
    imported_file = ImportedFileSerializer(
        required=False, help_text="The earlier import of the same bytes (when imported already)."
    )


class ImportedFileFilterSet(django_filters.FilterSet):
    profile = django_filters.CharFilter(field_name="profile__name", help_text="Profile name.")
    name = django_filters.CharFilter(field_name="name", lookup_expr="icontains")
    sha256 = django_filters.CharFilter(field_name="sha256")
    imported_after = django_filters.IsoDateTimeFilter(field_name="imported_at", lookup_expr="gte")
    imported_before = django_filters.IsoDateTimeFilter(field_name="imported_at", lookup_expr="lt")

    class Meta:
        model = ImportedFile
        fields = ["profile", "name", "sha256", "imported_after", "imported_before"]


# --- Views --------------------------------------------------------------------------------------

FORBIDDEN = OpenApiResponse(description="Read-only token, auditor, or role without permission.")


@extend_schema_view(
    post=extend_schema(
        summary="Import a CSV/XLSX export through an import profile",
        description="Each row becomes a `process_result` envelope, applied exactly once; "
        "rows that cannot be read or are refused land in the dead-letter store with "
        "`<file>:row <n>` and the column. The same bytes again are refused (409).",
        request={"multipart/form-data": FileImportInputSerializer},
        responses={
            201: FileImportResultSerializer,
            400: OpenApiResponse(
                DomainErrorSerializer,
                description="Unreadable file: wrong encoding, not a workbook, a column of "
                "the profile missing from the header.",
            ),
            403: FORBIDDEN,
            404: OpenApiResponse(DomainErrorSerializer, description="Unknown profile."),
            409: OpenApiResponse(
                AlreadyImportedSerializer,
                description="Imported already (same content), or the profile is inactive.",
            ),
            413: OpenApiResponse(description="File larger than the upload limit."),
        },
    )
)
class FileImportView(APIView):
    parser_classes = [MultiPartParser, FormParser]
    required_perms = ("files.add_importedfile",)

    def post(self, request: Request) -> Response:
        given = FileImportInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        upload = given.validated_data["file"]
        if upload.size > upload_max_bytes():
            raise PayloadTooLarge(
                f"{upload.name} is {upload.size} bytes; uploads take up to "
                f"{upload_max_bytes()} bytes (use manage.py ingest_files for larger files)."
            )
        profile = queries.profile_get(given.validated_data["profile"])
        if profile is None:
            raise NotFound(
                f"No import profile {given.validated_data['profile']!r}.", field="profile"
            )
        data = b"".join(upload.chunks())
        try:
            result = file_import(
                data=data, name=upload.name, profile=profile, actor=request.user, origin="upload"
            )
        except FileAlreadyImported as exc:
            body = {**exc.as_dict(), "imported_file": ImportedFileSerializer(exc.existing).data}
            return Response(body, status=status.HTTP_409_CONFLICT)
        return Response(FileImportResultSerializer(result).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    list=extend_schema(summary="Imported files, newest first (filter by profile, name, time)"),
    retrieve=extend_schema(summary="One imported file"),
)
class ImportedFileViewSet(viewsets.ReadOnlyModelViewSet):
    """Files imported through a profile, by upload or from a directory."""

    serializer_class = ImportedFileSerializer
    filterset_class = ImportedFileFilterSet
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        return queries.imported_file_list()


@extend_schema_view(
    list=extend_schema(summary="File import profiles"),
    retrieve=extend_schema(summary="One file import profile"),
)
class FileImportProfileViewSet(viewsets.ReadOnlyModelViewSet):
    """Import profiles: how each kind of export is read (edited in the admin, with history)."""

    serializer_class = FileImportProfileSerializer
    pagination_class = OldestFirstCursorPagination
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        return queries.profile_list()
