"""Choices for holds and quarantine."""

from django.db import models


class HoldSource(models.TextChoices):
    MANUAL = "manual", "Manual"
    SPC = "spc", "SPC alarm"
    VISION = "vision", "Vision inspection"
    RISK = "risk", "Thermal-risk score"
    SUPPLIER_NOTICE = "supplier_notice", "Supplier notice"
    STATION = "station", "Station request"
    OUT_OF_SPEC = "out_of_spec", "Out-of-specification measurement"


class HoldStatus(models.TextChoices):
    OPEN = "open", "Open"
    RELEASED = "released", "Released"
