"""Choices for chart configuration, control limits and SPC alarms."""

from django.db import models


class ChartType(models.TextChoices):
    """The charts a characteristic's measured values can be plotted on (``spc.engine``).

    I-MR, X-bar-R and X-bar-S chart measured values; the c chart charts counts: each value
    is the number of nonconformities found in one constant inspection unit (the defects of
    10 m of coil, for instance), so values are whole numbers of 0 or more.
    """

    I_MR = "i_mr", "Individuals and moving range (I-MR)"
    XBAR_R = "xbar_r", "X-bar and range (X-bar-R)"
    XBAR_S = "xbar_s", "X-bar and standard deviation (X-bar-S)"
    C = "c", "c chart (nonconformities per inspection unit)"


class SubgroupMode(models.TextChoices):
    """How consecutive values form a rational subgroup."""

    CONSECUTIVE = "consecutive", "Consecutive values (n in a row)"
    TIME_WINDOW = "time_window", "Time window"
    PER_UNIT = "per_unit", "Per unit (coil, cell)"
    PER_LOT = "per_lot", "Per lot"


class RulePreset(models.TextChoices):
    NELSON = "nelson", "Nelson rules 1-8"
    WESTERN_ELECTRIC = "western_electric", "Western Electric rules (Nelson 1, 2, 5, 6; run of 8)"
    CUSTOM = "custom", "Chosen Nelson rules"


class LimitsStatus(models.TextChoices):
    DRAFT = "draft", "Draft (proposed, not in force)"
    APPROVED = "approved", "Approved (in force)"
    SUPERSEDED = "superseded", "Superseded by a later version"
    REJECTED = "rejected", "Rejected"


class AlarmRule(models.TextChoices):
    """What signalled: a Nelson rule (engine codes ``nelson_1`` .. ``nelson_8``) or a drift
    detector."""

    NELSON_1 = "nelson_1", "Nelson 1: one point beyond the control limits"
    NELSON_2 = "nelson_2", "Nelson 2: points in a row on the same side of the centre line"
    NELSON_3 = "nelson_3", "Nelson 3: six points in a row steadily increasing or decreasing"
    NELSON_4 = "nelson_4", "Nelson 4: fourteen points in a row alternating up and down"
    NELSON_5 = "nelson_5", "Nelson 5: two out of three points beyond 2 sigma on one side"
    NELSON_6 = "nelson_6", "Nelson 6: four out of five points beyond 1 sigma on one side"
    NELSON_7 = "nelson_7", "Nelson 7: fifteen points in a row within 1 sigma"
    NELSON_8 = "nelson_8", "Nelson 8: eight points in a row beyond 1 sigma on either side"
    CUSUM = "cusum", "CUSUM: sustained shift of the mean"
    EWMA = "ewma", "EWMA: drift of the mean"


class AlarmSeverity(models.TextChoices):
    """Critical: a CC characteristic beyond its limits or shifted (rule 1, CUSUM, EWMA).
    Major: everything else."""

    CRITICAL = "critical", "Critical"
    MAJOR = "major", "Major"


class AlarmStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged (cause recorded)"
    CLOSED = "closed", "Closed"
