"""Choices of the risk app (lowercase snake_case values)."""

from django.db import models


class ModelState(models.TextChoices):
    """Life of a thermal-risk model: registered (draft), checksum and manifest passed
    (validated), approved by a quality engineer, scoring cells (active), retired (kept for
    rollback and to explain the scores it gave)."""

    DRAFT = "draft", "Draft"
    VALIDATED = "validated", "Validated (checksum and manifest passed)"
    APPROVED = "approved", "Approved by quality"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class FailureMode(models.TextChoices):
    THERMAL_EVENT = "thermal_event", "Thermal event"
    VENTING = "venting", "Venting"
    CAPACITY_FADE = "capacity_fade", "Capacity fade"
    RESISTANCE_RISE = "resistance_rise", "Resistance rise"
    SWELLING = "swelling", "Swelling"
    OTHER = "other", "Other"


class ReturnLevel(models.TextChoices):
    """What a field return was traced to: one cell, or only its pack."""

    CELL = "cell", "Cell"
    PACK = "pack", "Pack"


class RetrainStatus(models.TextChoices):
    RUNNING = "running", "Running"
    DONE = "done", "Done (challenger registered, comparison stored)"
    TOO_FEW_LABELS = "too_few_labels", "Too few labels to train"
    FAILED = "failed", "Failed"
