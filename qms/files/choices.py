"""Choices of file import profiles."""

from django.db import models


class FileFormat(models.TextChoices):
    CSV = "csv", "CSV (delimited text)"
    XLSX = "xlsx", "XLSX (Excel workbook)"


class DecimalSeparator(models.TextChoices):
    POINT = ".", "Point (5.012)"
    COMMA = ",", "Comma (5,012), as German and most EU plants export"


class ImportKind(models.TextChoices):
    """Envelope kinds a profile can turn rows into."""

    PROCESS_RESULT = "process_result", "Process result (a unit's station visit)"
