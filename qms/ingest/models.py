"""Exactly-once bookkeeping, the dead-letter store, ingest statistics and station commands."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from qms.models import Station

__all__ = ["IngestMessage", "DeadLetter", "IngestStat", "StationCommand"]


class Transport(models.TextChoices):
    MQTT = "mqtt", "MQTT (JSON envelope)"
    SPARKPLUG = "sparkplug", "MQTT Sparkplug B"
    OPCUA = "opcua", "OPC UA"
    FILE = "file", "File import"
    REST = "rest", "REST"
    DIRECT = "direct", "Direct (in-process)"
    VISION = "vision", "Vision worker"


class IngestMessage(models.Model):
    """One envelope that was applied. ``message_id`` is unique: a repeat delivery finds it
    here and is counted as a duplicate, never applied twice. Append-only."""

    message_id = models.CharField(max_length=128, unique=True)
    kind = models.CharField(max_length=32)
    transport = models.CharField(max_length=16, choices=Transport.choices)
    origin = models.CharField(max_length=300, help_text="Topic, node id, file and row, client.")
    source = models.CharField(max_length=120, help_text="The sending system, from the envelope.")
    station = models.ForeignKey(
        Station, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    unit_serial = models.CharField(max_length=64, blank=True)
    sent_at = models.DateTimeField()
    received_at = models.DateTimeField()
    applied_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["kind", "sent_at"], name="ingestmsg_kind_sent_idx"),
            models.Index(fields=["station", "sent_at"], name="ingestmsg_station_sent_idx"),
            models.Index(fields=["unit_serial"], name="ingestmsg_unit_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.message_id}"


class DeadLetterStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved (replayed)"
    DISCARDED = "discarded", "Discarded (with reason)"


class DeadLetter(models.Model):
    """A message that could not be applied, kept with its raw bytes and the reason in words.

    Repeats of the same bytes from the same transport and origin update ``last_seen`` and
    ``attempts`` instead of adding rows. Nothing is ever deleted: a successful replay marks
    the entry resolved. A message that names a unit not there yet is retried by the ingest
    itself until ``retry_until``.
    """

    transport = models.CharField(max_length=16, choices=Transport.choices)
    origin = models.CharField(max_length=300)
    raw = models.BinaryField()
    raw_sha256 = models.CharField(max_length=64)
    message_id = models.CharField(max_length=128, blank=True)
    kind = models.CharField(max_length=32, blank=True)
    reason = models.TextField()
    field = models.CharField(max_length=120, blank=True)
    status = models.CharField(
        max_length=16, choices=DeadLetterStatus.choices, default=DeadLetterStatus.OPEN
    )
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=1)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolution = models.TextField(blank=True)
    retry_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Retried automatically until then (a unit it names may still arrive).",
    )
    history = HistoricalRecords(excluded_fields=["raw"])

    class Meta:
        ordering = ["-last_seen", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["raw_sha256", "transport", "origin"], name="deadletter_unique_raw"
            ),
            models.CheckConstraint(
                condition=Q(status=DeadLetterStatus.OPEN) | Q(resolved_at__isnull=False),
                name="deadletter_closed_has_time",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "last_seen"], name="deadletter_status_idx"),
            models.Index(fields=["transport", "status"], name="deadletter_transport_idx"),
            models.Index(fields=["message_id"], name="deadletter_msgid_idx"),
            models.Index(fields=["status", "retry_until"], name="deadletter_retry_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.transport} {self.origin}: {self.reason[:60]}"

    @property
    def raw_text(self) -> str:
        return bytes(self.raw).decode("utf-8", errors="replace")


class IngestStat(models.Model):
    """Counters per transport and minute, written once per committed batch, so every
    worker process adds to the same figures that ``/metrics`` and the status page show."""

    transport = models.CharField(max_length=16, choices=Transport.choices)
    minute = models.DateTimeField(help_text="Start of the minute (UTC).")
    accepted = models.PositiveBigIntegerField(default=0)
    duplicate = models.PositiveBigIntegerField(default=0)
    rejected = models.PositiveBigIntegerField(default=0)
    batches = models.PositiveBigIntegerField(default=0)
    lag_ms_sum = models.FloatField(default=0.0, help_text="Sum of received - sent, ms.")
    lag_ms_max = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-minute", "transport"]
        constraints = [
            models.UniqueConstraint(fields=["transport", "minute"], name="ingeststat_unique")
        ]

    def __str__(self) -> str:
        return f"{self.transport} {self.minute:%Y-%m-%d %H:%M}"


class CommandKind(models.TextChoices):
    LINE_STOP = "line_stop", "Line stop"
    HOLD = "hold", "Hold unit(s)"
    RELEASE = "release", "Release (resume)"


class CommandStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class StationCommand(models.Model):
    """A command sent to a station (line stop, hold), over the station's transport, with
    what was sent and what came back. Requested by compliance with the reason."""

    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="commands")
    kind = models.CharField(max_length=16, choices=CommandKind.choices)
    reason = models.TextField()
    reference = models.CharField(max_length=120, blank=True, help_text="e.g. hold number.")
    unit_serials = models.JSONField(default=list, blank=True)
    transport = models.CharField(max_length=16, choices=Transport.choices)
    target = models.CharField(max_length=300, help_text="Topic or node the command went to.")
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=16, choices=CommandStatus.choices, default=CommandStatus.PENDING
    )
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["station", "requested_at"], name="command_station_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} -> {self.station} ({self.status})"
