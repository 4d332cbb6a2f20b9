"""File import: mapping profiles for CSV/XLSX exports of plant equipment, and the files
imported through them (each file once, by content hash)."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from simple_history.models import HistoricalRecords

from qms.models import Station

from .choices import DecimalSeparator, FileFormat, ImportKind
from .mapping import MappingError, profile_mapping

__all__ = ["FileImportProfile", "ImportedFile"]


class FileImportProfile(models.Model):
    """How to read one kind of export (a check-weigher's daily CSV, a formation cabinet's
    per-channel summary) and turn each row into an ingest envelope for ``station``.

    ``columns`` maps the export's columns to the envelope: serial, timestamp (format and the
    time zone of naive times), OK/NOK result, program, operator, and measurement columns to
    characteristics of the station with the column's unit and a scale into the
    characteristic's unit. Its structure is documented and validated in
    :mod:`qms.files.mapping`.
    """

    name = models.CharField(
        max_length=80, unique=True, help_text="e.g. 'l2-cyl check-weigher CSV'."
    )
    description = models.TextField(blank=True)
    file_format = models.CharField(
        "format", max_length=8, choices=FileFormat.choices, default=FileFormat.CSV
    )
    delimiter = models.CharField(
        max_length=1, default=",", help_text="CSV field separator: ',' ';' or a tab."
    )
    quotechar = models.CharField(max_length=1, default='"', help_text="CSV quote character.")
    encoding = models.CharField(
        max_length=32,
        default="utf-8-sig",
        help_text="Text encoding of CSV files: utf-8-sig (UTF-8 with or without BOM), cp1252, ...",
    )
    decimal_separator = models.CharField(
        max_length=1, choices=DecimalSeparator.choices, default=DecimalSeparator.POINT
    )
    thousands_separator = models.CharField(
        max_length=1, blank=True, help_text="Digit grouping in numbers, if the export uses one."
    )
    header_row = models.PositiveIntegerField(
        default=1,
        help_text="Line (CSV) or row (XLSX) of the column headers, counted from 1; lines above "
        "it (an export's preamble) are skipped.",
    )
    sheet_name = models.CharField(
        max_length=64, blank=True, help_text="XLSX worksheet; blank for the first sheet."
    )
    kind = models.CharField(
        max_length=32, choices=ImportKind.choices, default=ImportKind.PROCESS_RESULT
    )
    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="import_profiles")
    equipment_code = models.CharField(
        max_length=32,
        blank=True,
        help_text="Equipment at the station every row comes from (unless a column names it).",
    )
    source = models.CharField(
        max_length=120, help_text="The sending system as envelopes name it, e.g. 'L2-CW-0588'."
    )
    columns = models.JSONField(
        default=dict, help_text="Column mapping (see the ingest guide, section Files)."
    )
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(header_row__gte=1),
                name="fileprofile_header_row",
                violation_error_message="The header row is counted from 1.",
            ),
            models.CheckConstraint(
                condition=Q(file_format=FileFormat.XLSX) | ~Q(delimiter=F("decimal_separator")),
                name="fileprofile_delimiter_not_decimal",
                violation_error_message="A CSV delimiter cannot be the decimal separator.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Validate the mapping against the station's control plan (admin forms)."""
        try:
            profile_mapping(self)
        except MappingError as exc:
            field = exc.path.split(".")[0].split("[")[0]
            if field not in {f.name for f in self._meta.fields}:
                field = "columns"
            raise ValidationError({field: f"{exc.path}: {exc.message}"}) from exc


class ImportedFile(models.Model):
    """One file imported through a profile, with what became of its rows. ``sha256`` of the
    content is unique: the same bytes again are refused as already imported. Append-only.

    ``rejected`` rows are in the dead-letter store with origin ``<name>:row <n>``;
    ``skipped`` rows were left out by the profile's row filter.
    """

    sha256 = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255, help_text="File name as it arrived.")
    origin = models.CharField(
        max_length=300, help_text="Directory it was picked up from, or upload."
    )
    profile = models.ForeignKey(
        FileImportProfile, on_delete=models.PROTECT, related_name="imported_files"
    )
    size_bytes = models.PositiveBigIntegerField()
    rows = models.PositiveIntegerField(help_text="Data rows below the header.")
    accepted = models.PositiveIntegerField()
    duplicate = models.PositiveIntegerField()
    rejected = models.PositiveIntegerField()
    skipped = models.PositiveIntegerField(default=0)
    imported_at = models.DateTimeField()
    imported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-imported_at", "-id"]
        indexes = [models.Index(fields=["profile", "imported_at"], name="importedfile_profile_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(rows=F("accepted") + F("duplicate") + F("rejected") + F("skipped")),
                name="importedfile_rows_add_up",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.sha256[:12]})"
