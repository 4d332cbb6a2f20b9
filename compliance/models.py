"""Holds (quarantine) on sets of units."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from genealogy.choices import UnitStatus
from genealogy.models import Unit

from .choices import AlarmReactionAction, HoldSource, HoldStatus

__all__ = ["Hold", "HoldUnit"]


class Hold(models.Model):
    """A quarantine placed on a set of units, with the reason and who placed it.

    Placing a hold sets each unit's status to on hold; releasing restores the status each
    unit had before (unless another open hold still covers it). Both steps are recorded in
    the unit's history with the hold number as the change reason.
    """

    number = models.CharField(max_length=20, unique=True, editable=False)
    reason = models.TextField()
    source = models.CharField(max_length=16, choices=HoldSource.choices)
    source_reference = models.CharField(
        max_length=120, blank=True, help_text="e.g. SPC alarm id, supplier notice number."
    )
    status = models.CharField(max_length=16, choices=HoldStatus.choices, default=HoldStatus.OPEN)
    placed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="holds_placed"
    )
    placed_at = models.DateTimeField()
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="holds_released",
    )
    released_at = models.DateTimeField(null=True, blank=True)
    release_reason = models.TextField(blank=True)
    units = models.ManyToManyField(Unit, through="HoldUnit", related_name="holds")
    history = HistoricalRecords()

    class Meta:
        ordering = ["-placed_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status=HoldStatus.OPEN, released_at__isnull=True)
                | Q(status=HoldStatus.RELEASED, released_at__isnull=False),
                name="hold_released_has_time",
            )
        ]
        indexes = [models.Index(fields=["status", "placed_at"], name="hold_status_time_idx")]

    def __str__(self) -> str:
        return f"{self.number} ({self.get_status_display()})"


class HoldUnit(models.Model):
    """One unit under one hold, with the status it had before and returns to on release."""

    hold = models.ForeignKey(Hold, on_delete=models.PROTECT, related_name="hold_units")
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="hold_units")
    previous_status = models.CharField(max_length=16, choices=UnitStatus.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hold", "unit"], name="holdunit_unique"),
        ]
        indexes = [models.Index(fields=["unit", "hold"], name="holdunit_unit_idx")]

    def __str__(self) -> str:
        return f"{self.hold.number}: {self.unit}"


class SpcReactionPlan(models.Model):
    """How compliance reacts to a control alarm (SPC) on one characteristic: hold the
    suspect window (every unit measured on it since the alarm's pattern began) and/or stop
    the station. Without a plan, CC and SC characteristics get both and the others none
    (the alarm alone)."""

    characteristic = models.OneToOneField(
        "qms.Characteristic", on_delete=models.PROTECT, related_name="spc_reaction_plan"
    )
    hold_window = models.BooleanField(
        default=True, help_text="Hold every unit measured on it since the pattern began."
    )
    stop_line = models.BooleanField(
        default=True, help_text="Send a line-stop command to the station."
    )
    history = HistoricalRecords()

    class Meta:
        verbose_name = "SPC reaction plan"

    def __str__(self) -> str:
        return f"reaction plan of {self.characteristic}"


class AlarmReaction(models.Model):
    """What compliance did about one SPC alarm: the hold on the suspect window, the
    line-stop command, or nothing but the alarm, recorded with the alarm that caused it."""

    alarm = models.ForeignKey("spc.SpcAlarm", on_delete=models.PROTECT, related_name="reactions")
    action = models.CharField(max_length=16, choices=AlarmReactionAction.choices)
    hold = models.ForeignKey(
        Hold, on_delete=models.PROTECT, null=True, blank=True, related_name="alarm_reactions"
    )
    command = models.ForeignKey(
        "ingest.StationCommand",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="alarm_reactions",
    )
    detail = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["alarm", "action"],
                condition=~Q(action__in=["hold_extension", "escalated"]),
                name="alarmreaction_once_per_action",
            )
        ]

    def __str__(self) -> str:
        return f"alarm {self.alarm_id}: {self.get_action_display()}"
