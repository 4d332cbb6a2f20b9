"""Choices for holds and quarantine."""

from django.db import models


class HoldSource(models.TextChoices):
    MANUAL = "manual", "Manual"
    SPC = "spc", "SPC alarm"
    VISION = "vision", "Vision inspection"
    FORMATION = "formation", "Formation grading (K-value screen)"
    RISK = "risk", "Thermal-risk score"
    SUPPLIER_NOTICE = "supplier_notice", "Supplier notice"
    STATION = "station", "Station request"
    OUT_OF_SPEC = "out_of_spec", "Out-of-specification measurement"


class HoldStatus(models.TextChoices):
    OPEN = "open", "Open"
    RELEASED = "released", "Released"


class AlarmReactionAction(models.TextChoices):
    HOLD_WINDOW = "hold_window", "Held the suspect window"
    HOLD_EXTENSION = "hold_extension", "Held more units as the pattern went on"
    LINE_STOP = "line_stop", "Stopped the station"
    ALARM_ONLY = "alarm_only", "Alarm only (no hold, no stop configured)"
    RELEASED = "released", "Released after the cause was found (holds released, line resumed)"
    ESCALATED = "escalated", "Escalated to the MRB (holds stay)"


class AlarmDecision(models.TextChoices):
    """What a quality engineer decides once an SPC alarm's cause is known."""

    RELEASE = "release", "Release: the suspect units are fine, resume the station"
    ESCALATE = "escalate", "Escalate to the MRB: the holds stay for disposition"
