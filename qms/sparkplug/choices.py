"""Choices for Sparkplug B metric mappings."""

from django.db import models


class MetricRole(models.TextChoices):
    """What a device (or node) metric means for a station visit."""

    SERIAL = "serial", "Unit serial (one result per new value)"
    MEASUREMENT = "measurement", "Measurement of a characteristic"
    RESULT = "result", "Result OK / NOK"
    PROGRAM = "program", "Program / recipe"
    OPERATOR = "operator", "Operator"
    IGNORE = "ignore", "Known, not stored"


class UnitKind(models.TextChoices):
    """The ``unit_kind`` values of the envelope's process_result payload (schema enum)."""

    MATERIAL_LOT = "material_lot", "Material lot"
    MIX_BATCH = "mix_batch", "Mix (slurry) batch"
    COIL = "coil", "Electrode coil (mother roll)"
    SLIT_COIL = "slit_coil", "Slit coil"
    CELL = "cell", "Cell"
    MODULE = "module", "Module"
    PACK = "pack", "Pack"
    VEHICLE = "vehicle", "Vehicle"
