"""Choices for traceable units and links."""

from django.db import models


class UnitKind(models.TextChoices):
    MATERIAL_LOT = "material_lot", "Material lot"
    MIX_BATCH = "mix_batch", "Mix (slurry) batch"
    COIL = "coil", "Electrode coil (mother roll)"
    SLIT_COIL = "slit_coil", "Slit coil"
    CELL = "cell", "Cell"
    MODULE = "module", "Module"
    PACK = "pack", "Pack"
    VEHICLE = "vehicle", "Vehicle"


#: Kinds that carry metres: their consumption is recorded as segments [start_m, end_m).
METRED_KINDS = frozenset({UnitKind.COIL, UnitKind.SLIT_COIL})


class UnitStatus(models.TextChoices):
    IN_PROCESS = "in_process", "In process"
    ON_HOLD = "on_hold", "On hold"
    RELEASED = "released", "Released"
    SCRAPPED = "scrapped", "Scrapped"
    SHIPPED = "shipped", "Shipped"


#: A unit in one of these states may not be consumed or assembled (the interlock).
BLOCKED_STATUSES = frozenset({UnitStatus.ON_HOLD, UnitStatus.SCRAPPED})


class LinkKind(models.TextChoices):
    CONSUMED = "consumed", "Consumed (material, batch or coil segment into the child)"
    ASSEMBLED = "assembled", "Assembled (child built into parent slot)"
    SLIT = "slit", "Slit (child coil cut from the parent coil; child metre 0 = start_m)"


class VisitResult(models.TextChoices):
    OK = "ok", "OK"
    NOK = "nok", "NOK"
