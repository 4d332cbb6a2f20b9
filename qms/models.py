"""Plant topology, the control plan and API integrations."""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from simple_history.models import HistoricalRecords

from .choices import (
    CellFormat,
    CommandTransport,
    IdentificationMethod,
    IntegrationScope,
    ProcessStep,
    SpecialCharacteristic,
)

__all__ = ["Site", "Line", "Station", "Equipment", "Characteristic", "Integration"]


class Site(models.Model):
    """A plant (gigafactory) with its own lines. ``code`` is short and stable, e.g. ``GF1``."""

    code = models.SlugField(max_length=16, unique=True)
    name = models.CharField(max_length=120)
    country = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2 country code.")
    history = HistoricalRecords()

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class Line(models.Model):
    """A production line of one cell format, e.g. ``GF1 / L2-CYL`` (21700 cylindrical).

    ``serial_scheme`` is a regular expression every plain serial made on this line must
    match; lines identified by DataMatrix take GS1 element strings (AI 01 + 21, ...).
    """

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="lines")
    code = models.SlugField(max_length=32)
    name = models.CharField(max_length=120)
    cell_format = models.CharField(max_length=16, choices=CellFormat.choices)
    identification_method = models.CharField(max_length=16, choices=IdentificationMethod.choices)
    serial_scheme = models.CharField(
        max_length=200,
        help_text="Regular expression a plain serial from this line must match in full.",
    )
    gtin = models.CharField(
        max_length=14, blank=True, help_text="GTIN-14 of the cell type (GS1 AI 01), if any."
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["site__code", "code"]
        constraints = [
            models.UniqueConstraint(fields=["site", "code"], name="line_code_unique_per_site")
        ]

    def __str__(self) -> str:
        return f"{self.site.code}/{self.code}"


class Station(models.Model):
    """One process step on a line, e.g. electrolyte fill station ``FILL-01``."""

    line = models.ForeignKey(Line, on_delete=models.PROTECT, related_name="stations")
    code = models.SlugField(max_length=32)
    name = models.CharField(max_length=120)
    process_step = models.CharField(max_length=24, choices=ProcessStep.choices)
    sequence = models.PositiveIntegerField(help_text="Order of the step on the line.")
    command_transport = models.CharField(
        max_length=8,
        choices=CommandTransport.choices,
        default=CommandTransport.MQTT,
        help_text="How line-stop and hold commands reach this station.",
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["line", "sequence", "code"]
        constraints = [
            models.UniqueConstraint(fields=["line", "code"], name="station_code_unique_per_line")
        ]

    def __str__(self) -> str:
        return f"{self.line}/{self.code}"


class Equipment(models.Model):
    """A machine at a station (coater, check-weigher, cycler cabinet, laser welder, ...)."""

    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="equipment")
    code = models.SlugField(max_length=32)
    name = models.CharField(max_length=120)
    manufacturer = models.CharField(max_length=80, blank=True)
    model_name = models.CharField(max_length=80, blank=True)
    serial_number = models.CharField(max_length=80, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["station", "code"]
        verbose_name_plural = "equipment"
        constraints = [
            models.UniqueConstraint(
                fields=["station", "code"], name="equipment_code_unique_per_station"
            )
        ]

    def __str__(self) -> str:
        return f"{self.station}/{self.code}"


class Characteristic(models.Model):
    """One control-plan row: what is measured at a station, against which limits.

    Example: electrolyte fill mass at ``FILL-01``, nominal 5.00 g, LSL 4.95 g, USL 5.05 g,
    check-weigher, 100 %, special class CC. Limits are in ``unit``.
    """

    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="characteristics")
    code = models.SlugField(max_length=48)
    name = models.CharField(max_length=120)
    unit = models.CharField(max_length=24, help_text="Unit of value and limits, e.g. mg/cm², g.")
    nominal = models.FloatField()
    lsl = models.FloatField(null=True, blank=True, verbose_name="LSL")
    usl = models.FloatField(null=True, blank=True, verbose_name="USL")
    measurement_method = models.CharField(max_length=200)
    sample_size = models.PositiveIntegerField(default=1)
    sample_frequency = models.CharField(
        max_length=80, help_text="e.g. '100 %', 'every coil', '5 per shift'."
    )
    reaction_plan = models.TextField()
    special_class = models.CharField(
        max_length=4, choices=SpecialCharacteristic.choices, default=SpecialCharacteristic.NONE
    )
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["station", "code"]
        constraints = [
            models.UniqueConstraint(
                fields=["station", "code"], name="characteristic_code_unique_per_station"
            ),
            models.CheckConstraint(
                condition=Q(lsl__isnull=True) | Q(usl__isnull=True) | Q(lsl__lt=F("usl")),
                name="characteristic_lsl_below_usl",
            ),
            models.CheckConstraint(
                condition=Q(lsl__isnull=False) | Q(usl__isnull=False),
                name="characteristic_has_a_limit",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.station}/{self.code}"

    def is_in_spec(self, value: float) -> bool:
        """True when ``value`` lies within [LSL, USL] (a missing limit is open)."""
        if self.lsl is not None and value < self.lsl:
            return False
        return not (self.usl is not None and value > self.usl)


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Integration(models.Model):
    """A plant system (ERP, MES, line PLC gateway) that calls the API with a token.

    Each integration acts as its own user (in the ``integration`` group) so history rows
    name it. Only the SHA-256 of the token is stored; the token is shown once at creation.
    """

    name = models.CharField(max_length=80, unique=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="integration"
    )
    scope = models.CharField(max_length=16, choices=IntegrationScope.choices)
    key_prefix = models.CharField(max_length=8, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords(excluded_fields=["last_used_at"])

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.scope})"

    @staticmethod
    def generate_key() -> str:
        return secrets.token_urlsafe(32)

    def set_key(self, key: str) -> None:
        self.key_prefix = key[:8]
        self.key_hash = _hash_key(key)

    @classmethod
    def hash_key(cls, key: str) -> str:
        return _hash_key(key)

    @property
    def can_write(self) -> bool:
        return self.scope == IntegrationScope.READ_WRITE
