"""Choices of the inspection app (lowercase snake_case values)."""

from django.db import models


class ModelState(models.TextChoices):
    """Life of a vision model: registered (draft), checksum and golden set passed
    (validated), approved by a quality engineer, running on the line (active), retired."""

    DRAFT = "draft", "Draft"
    VALIDATED = "validated", "Validated (checksum and golden set passed)"
    APPROVED = "approved", "Approved by quality"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class Substrate(models.TextChoices):
    COATING = "coating", "Electrode coating (reflected bright-field)"
    SEPARATOR = "separator", "Separator film (transmitted back-light)"


class FrameRetention(models.TextChoices):
    NONE = "none", "Keep no full frames"
    DEFECTS = "defects", "Keep frames with a defect or a gap"
    ALL = "all", "Keep every frame"


class Verdict(models.TextChoices):
    OK = "ok", "OK"
    DEFECT = "defect", "Defect"
    UNINSPECTED = "uninspected", "Uninspected (counts as nonconforming)"


class Decision(models.TextChoices):
    IGNORE = "ignore", "Ignore (logged)"
    REVIEW = "review", "Human review"
    QUARANTINE = "quarantine", "Quarantine"
    STOP = "stop", "Line stop"


class ReviewState(models.TextChoices):
    NONE = "none", "Not for review"
    PENDING = "pending", "Waiting for review"
    CONFIRMED = "confirmed", "Confirmed by a reviewer"
    RECLASSIFIED = "reclassified", "Confirmed as another class"
    FALSE_CALL = "false_call", "False call (good material)"


class ReviewVerdict(models.TextChoices):
    CONFIRM = "confirm", "Confirm: the defect is real, as classified"
    RECLASSIFY = "reclassify", "Real defect of another class"
    FALSE_CALL = "false_call", "False call: good material"


class FlagKind(models.TextChoices):
    DEFECT = "defect", "Defect"
    UNINSPECTED = "uninspected", "Uninspected metres"


class FlagAction(models.TextChoices):
    HOLD = "hold", "Hold the cells made from these metres"
    REVIEW = "review", "Waiting for review"
    NONE = "none", "Flag only"
