"""Statistical process control in the product: chart configuration, versioned control
limits, the persisted state of the real-time evaluation, and SPC alarms.

* :class:`ChartConfig`: how one characteristic is charted (chart, subgrouping, run rules,
  CUSUM/EWMA detector). Created with defaults on first use.
* :class:`ControlLimits`: Phase I limits, versioned per characteristic. A draft is proposed
  from a baseline window, then approved (in force) or rejected by a quality engineer; the
  approved version is frozen, and approving the next one supersedes it.
* :class:`ChartCheckpoint`: the evaluation state (``spc.engine.Monitor``) after a given
  number of points, so evaluation resumes where it stopped and re-evaluates from an earlier
  point when a late value arrives. Derived data.
* :class:`SpcAlarm`: one out-of-control pattern of a run rule or detector (its firings
  while the pattern goes on), with the measurements involved, its acknowledgement and the
  hold that compliance placed for it.

Values, centre lines and limits are in the characteristic's unit (``Characteristic.unit``);
CUSUM and EWMA parameters are in sigma units of one plotted point.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from genealogy.models import Measurement
from qms.exceptions import Refused
from qms.models import Characteristic

from .choices import (
    AlarmRule,
    AlarmSeverity,
    AlarmStatus,
    ChartType,
    LimitsStatus,
    RulePreset,
    SubgroupMode,
)

__all__ = ["ChartConfig", "ControlLimits", "ChartCheckpoint", "SpcAlarm"]

ALL_NELSON_RULES = [1, 2, 3, 4, 5, 6, 7, 8]


def _all_nelson_rules() -> list[int]:
    return list(ALL_NELSON_RULES)


class ChartConfig(models.Model):
    """How one control-plan characteristic is charted and watched.

    ``chart_type`` and the subgrouping decide what is plotted: I-MR plots every value
    (subgroups of 1); X-bar-R needs ``subgroup_size`` consecutive values; X-bar-S also takes
    subgroups by time window (``subgroup_window_s``), by unit (a coil's profile values) or
    by lot, whose sizes vary. A c chart plots every value as a count of nonconformities in
    one inspection unit (subgroups of 1, no dispersion chart, no CUSUM or EWMA: those
    assume normal data). ``rules`` are the Nelson rule numbers applied to the chart
    statistic (the dispersion chart always uses rule 1); ``rule_preset`` names the set
    (Western Electric uses a run of 8 for rule 2). The CUSUM (k, h, head start) and the
    optional EWMA (lambda, L) are in sigma units. Changes are kept in history and restart
    the evaluation of the characteristic from its approved limits.
    """

    characteristic = models.OneToOneField(
        Characteristic, on_delete=models.PROTECT, related_name="chart_config"
    )
    chart_type = models.CharField(max_length=16, choices=ChartType.choices, default=ChartType.I_MR)
    subgroup_mode = models.CharField(
        max_length=16, choices=SubgroupMode.choices, default=SubgroupMode.CONSECUTIVE
    )
    subgroup_size = models.PositiveSmallIntegerField(
        default=1,
        help_text="Values per subgroup for consecutive subgroups; 1 for individuals (I-MR, c).",
    )
    subgroup_window_s = models.PositiveIntegerField(
        null=True, blank=True, help_text="Width of one time window in seconds (time windows)."
    )
    rule_preset = models.CharField(
        max_length=20, choices=RulePreset.choices, default=RulePreset.NELSON
    )
    rules = models.JSONField(
        default=_all_nelson_rules,
        help_text="Nelson rule numbers (1-8) applied to the chart statistic.",
    )
    cusum_enabled = models.BooleanField(default=True, verbose_name="CUSUM enabled")
    cusum_k_sigma = models.FloatField(
        default=0.75, verbose_name="CUSUM k", help_text="Reference value k in sigma units."
    )
    cusum_h_sigma = models.FloatField(
        default=3.34, verbose_name="CUSUM h", help_text="Decision interval h in sigma units."
    )
    cusum_head_start_sigma = models.FloatField(
        default=0.0,
        verbose_name="CUSUM head start",
        help_text="Fast initial response: both sums start here (sigma units; 0 = none).",
    )
    ewma_enabled = models.BooleanField(default=False, verbose_name="EWMA enabled")
    ewma_lambda = models.FloatField(default=0.2, verbose_name="EWMA lambda")
    ewma_l = models.FloatField(
        default=2.962, verbose_name="EWMA L", help_text="Limit width in asymptotic sigmas."
    )
    enabled = models.BooleanField(
        default=True, help_text="Evaluate new values of this characteristic in real time."
    )
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name = "chart configuration"
        ordering = ["characteristic"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(chart_type=ChartType.I_MR)
                | Q(subgroup_mode=SubgroupMode.CONSECUTIVE, subgroup_size=1),
                name="spc_config_imr_individuals",
            ),
            models.CheckConstraint(
                condition=Q(chart_type__in=[ChartType.I_MR, ChartType.C])
                | ~Q(subgroup_mode=SubgroupMode.CONSECUTIVE)
                | Q(subgroup_size__gte=2),
                name="spc_config_xbar_size_2",
            ),
            models.CheckConstraint(
                condition=~Q(chart_type=ChartType.C)
                | Q(subgroup_mode=SubgroupMode.CONSECUTIVE, subgroup_size=1),
                name="spc_config_c_one_count_per_point",
            ),
            models.CheckConstraint(
                condition=~Q(chart_type=ChartType.C) | Q(cusum_enabled=False, ewma_enabled=False),
                name="spc_config_c_no_detectors",
            ),
            models.CheckConstraint(
                condition=~Q(chart_type=ChartType.XBAR_R)
                | Q(subgroup_mode=SubgroupMode.CONSECUTIVE),
                name="spc_config_xbar_r_consecutive",
            ),
            models.CheckConstraint(
                condition=~Q(subgroup_mode=SubgroupMode.TIME_WINDOW)
                | Q(subgroup_window_s__isnull=False, subgroup_window_s__gt=0),
                name="spc_config_window_width",
            ),
            models.CheckConstraint(
                condition=Q(
                    cusum_k_sigma__gte=0,
                    cusum_h_sigma__gt=0,
                    cusum_head_start_sigma__gte=0,
                    cusum_head_start_sigma__lt=F("cusum_h_sigma"),
                ),
                name="spc_config_cusum_valid",
            ),
            models.CheckConstraint(
                condition=Q(ewma_lambda__gt=0, ewma_lambda__lte=1, ewma_l__gt=0),
                name="spc_config_ewma_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.characteristic} ({self.get_chart_type_display()})"


class ControlLimits(models.Model):
    """One version of a characteristic's control limits (Phase I).

    Proposed as a draft from the values measured in ``[baseline_from, baseline_to)``, with
    the values the quality engineer excluded (``excluded``: measurement ids with the
    assignable cause) and those the engine proposes to exclude next
    (``proposed_exclusions``). ``engine_limits`` is ``spc.engine.Limits.to_dict()``;
    ``centre``, ``sigma``, ``lcl`` and ``ucl`` repeat its chart statistic (X, X-bar, or the
    count c: c-bar, sqrt(c-bar) and c-bar -/+ 3 sqrt(c-bar), LCL at least 0) for lists, in the
    characteristic's unit. Approving puts the version in force from
    ``monitor_from`` (Phase II evaluates the values measured then or later) and supersedes
    the previous one; at most one version is approved at a time. A decided version
    (approved, superseded, rejected) is frozen: only approved -> superseded may change it.
    """

    characteristic = models.ForeignKey(
        Characteristic, on_delete=models.PROTECT, related_name="control_limits"
    )
    version = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=LimitsStatus.choices, default=LimitsStatus.DRAFT
    )
    chart_type = models.CharField(max_length=16, choices=ChartType.choices)
    engine_limits = models.JSONField(help_text="spc.engine Limits.to_dict(): what is evaluated.")
    centre = models.FloatField(help_text="Centre line of X (X-bar), in the characteristic's unit.")
    sigma = models.FloatField(help_text="Sigma of one value, in the characteristic's unit.")
    lcl = models.FloatField(verbose_name="LCL", help_text="Lower control limit of X (X-bar).")
    ucl = models.FloatField(verbose_name="UCL", help_text="Upper control limit of X (X-bar).")
    subgroup_size = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="n of the limits; empty when subgroup sizes vary."
    )
    degenerate = models.BooleanField(
        default=False, help_text="No variation in the baseline (sigma = 0)."
    )
    baseline_from = models.DateTimeField()
    baseline_to = models.DateTimeField()
    baseline_values = models.PositiveIntegerField(help_text="Values measured in the window.")
    values_used = models.PositiveIntegerField(help_text="Values the limits were computed from.")
    subgroups_used = models.PositiveIntegerField(
        null=True, blank=True, help_text="Subgroups the limits were computed from (X-bar)."
    )
    excluded = models.JSONField(
        default=list,
        blank=True,
        help_text='Values left out: [{"measurement_id": 1, "reason": "..."}].',
    )
    proposed_exclusions = models.JSONField(
        default=list,
        blank=True,
        help_text="Values beyond these limits that are not excluded yet (engine proposal).",
    )
    warnings = models.JSONField(default=list, blank=True)
    note = models.TextField(blank=True, help_text="The proposer's note.")
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    proposed_at = models.DateTimeField()
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    monitor_from = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Phase II evaluates the values measured at or after this time.",
    )
    reason = models.TextField(blank=True, help_text="Why the version was approved or rejected.")
    history = HistoricalRecords()

    #: Fields that never change once the version is decided.
    FROZEN_FIELDS = (
        "characteristic_id",
        "version",
        "chart_type",
        "engine_limits",
        "centre",
        "sigma",
        "lcl",
        "ucl",
        "subgroup_size",
        "degenerate",
        "baseline_from",
        "baseline_to",
        "baseline_values",
        "values_used",
        "subgroups_used",
        "excluded",
        "proposed_exclusions",
        "warnings",
        "note",
        "proposed_by_id",
        "proposed_at",
        "approved_by_id",
        "approved_at",
        "monitor_from",
        "reason",
    )

    class Meta:
        verbose_name = "control limits"
        verbose_name_plural = "control limits"
        ordering = ["characteristic", "-version"]
        permissions = [("approve_controllimits", "Can approve or reject control limits")]
        constraints = [
            models.UniqueConstraint(
                fields=["characteristic", "version"], name="spc_limits_version_unique"
            ),
            models.UniqueConstraint(
                fields=["characteristic"],
                condition=Q(status=LimitsStatus.APPROVED),
                name="spc_limits_one_approved",
            ),
            models.UniqueConstraint(
                fields=["characteristic"],
                condition=Q(status=LimitsStatus.DRAFT),
                name="spc_limits_one_draft",
            ),
            models.CheckConstraint(
                condition=Q(baseline_from__lt=F("baseline_to")),
                name="spc_limits_baseline_ordered",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=[LimitsStatus.APPROVED, LimitsStatus.SUPERSEDED])
                | Q(
                    approved_by__isnull=False,
                    approved_at__isnull=False,
                    monitor_from__isnull=False,
                ),
                name="spc_limits_approved_has_approver",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.characteristic} limits v{self.version} ({self.get_status_display()})"

    def save(self, *args, **kwargs) -> None:
        """Refuse any change to a decided version other than approved -> superseded."""
        if self.pk is not None:
            stored = (
                type(self).objects.filter(pk=self.pk).values("status", *self.FROZEN_FIELDS).first()
            )
            if stored is not None and stored["status"] != LimitsStatus.DRAFT:
                changed = [f for f in self.FROZEN_FIELDS if getattr(self, f) != stored[f]]
                moves = (stored["status"], self.status)
                allowed = self.status == stored["status"] or moves == (
                    LimitsStatus.APPROVED,
                    LimitsStatus.SUPERSEDED,
                )
                if changed or not allowed:
                    raise Refused(
                        f"Control limits v{self.version} are {stored['status']} and frozen; "
                        "propose a new version instead.",
                        field=(changed[0].removesuffix("_id") if changed else "status"),
                        code="limits_frozen",
                    )
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self.status != LimitsStatus.DRAFT:
            raise Refused(
                f"Control limits v{self.version} are {self.status} and kept on record.",
                field="status",
                code="limits_frozen",
            )
        return super().delete(*args, **kwargs)


class ChartCheckpoint(models.Model):
    """The evaluation state of a characteristic after ``position`` values of its Phase II
    stream (the values measured since ``limits.monitor_from``, in ``(measured_at, id)``
    order); the last of them is ``through_measurement``.

    ``state`` is ``spc.engine.Monitor.to_dict()`` (run-rule counters, CUSUM/EWMA sums, the
    open subgroup); ``subgroups`` the bounds ``[index, start, stop]`` of the last charted
    subgroups, to name the values behind a subgroup signal; ``episodes`` the last firing of
    each rule on each statistic (``{"x|nelson_2": [chart index, trigger measurement id]}``),
    so an alarm whose pattern goes on is extended, not raised again. One checkpoint every
    ``spc.services.CHECKPOINT_EVERY`` values plus the latest one (the head). Derived data:
    deleted when limits are approved or the chart configuration changes.
    """

    # Derived data: goes with its limits (which are never deleted once decided).
    characteristic = models.ForeignKey(Characteristic, on_delete=models.CASCADE, related_name="+")
    limits = models.ForeignKey(ControlLimits, on_delete=models.CASCADE, related_name="checkpoints")
    position = models.PositiveBigIntegerField(help_text="Values evaluated so far.")
    through_measured_at = models.DateTimeField()
    through_measurement = models.ForeignKey(Measurement, on_delete=models.PROTECT, related_name="+")
    state = models.JSONField()
    subgroups = models.JSONField(default=list, blank=True)
    episodes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["characteristic", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["limits", "position"], name="spc_checkpoint_one_per_position"
            ),
            models.CheckConstraint(condition=Q(position__gt=0), name="spc_checkpoint_position"),
        ]
        indexes = [
            models.Index(
                fields=["characteristic", "through_measured_at"], name="spc_checkpoint_time_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.characteristic_id} @ {self.position}"


class SpcAlarm(models.Model):
    """An out-of-control signal on a characteristic's chart: a Nelson rule or the
    CUSUM/EWMA detector fired on ``statistic`` (``x``, ``mr``, ``xbar``, ``r``, ``s``,
    ``cusum_up``, ``cusum_down``, ``ewma``) against ``limits``, first at plotted point
    ``chart_index`` (the value ``trigger_measurement``), last at ``last_chart_index``.

    While the pattern goes on (the same rule fires again on a pattern that begins within
    ``spc.services.ALARM_GAP`` plotted points of its last firing: points beyond the limits
    again and again, a run that keeps growing, a CUSUM that signals again while a shift
    lasts) the alarm is extended rather than raised again. ``points`` are the measurements
    that make up the pattern (``[{"index", "measurement_id", "unit_id", "value",
    "measured_at"}]``, the latest ``spc.services.MAX_ALARM_POINTS``), from
    ``first_measurement`` to ``last_measurement``. ``statistic_value`` is what first
    signalled (the value, or the CUSUM/EWMA statistic in sigma units). Severity: critical
    for rule 1, CUSUM and EWMA on a CC characteristic, major otherwise. A person
    acknowledges it with the cause; compliance records the hold it placed in
    ``hold_number``. Evaluating the same values again finds the same alarm: one per
    (limits, statistic, rule, trigger value).
    """

    characteristic = models.ForeignKey(
        Characteristic, on_delete=models.PROTECT, related_name="spc_alarms"
    )
    limits = models.ForeignKey(ControlLimits, on_delete=models.PROTECT, related_name="alarms")
    statistic = models.CharField(max_length=16)
    rule = models.CharField(max_length=16, choices=AlarmRule.choices)
    rule_name = models.CharField(max_length=120)
    direction = models.SmallIntegerField(help_text="+1 upward, -1 downward, 0 no direction.")
    severity = models.CharField(max_length=16, choices=AlarmSeverity.choices)
    chart_index = models.PositiveBigIntegerField(help_text="Plotted point where it first fired.")
    last_chart_index = models.PositiveBigIntegerField(
        help_text="Plotted point where it fired last."
    )
    statistic_value = models.FloatField()
    points = models.JSONField(default=list)
    trigger_measurement = models.ForeignKey(
        Measurement,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The value (a subgroup's last value) where the alarm first fired.",
    )
    first_measurement = models.ForeignKey(Measurement, on_delete=models.PROTECT, related_name="+")
    last_measurement = models.ForeignKey(Measurement, on_delete=models.PROTECT, related_name="+")
    first_measured_at = models.DateTimeField()
    last_measured_at = models.DateTimeField()
    raised_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=AlarmStatus.choices, default=AlarmStatus.OPEN)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    cause = models.TextField(blank=True, help_text="Assignable cause found, or 'none found'.")
    comment = models.TextField(blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    hold_number = models.CharField(
        max_length=20, blank=True, help_text="The hold compliance placed for this alarm."
    )
    history = HistoricalRecords()

    class Meta:
        verbose_name = "SPC alarm"
        ordering = ["-raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["characteristic", "limits", "statistic", "rule", "trigger_measurement"],
                name="spc_alarm_one_per_signal",
            ),
            models.CheckConstraint(
                condition=Q(status=AlarmStatus.OPEN)
                | Q(acknowledged_at__isnull=False, acknowledged_by__isnull=False),
                name="spc_alarm_acknowledged_has_who",
            ),
            models.CheckConstraint(
                condition=~Q(status=AlarmStatus.CLOSED) | Q(closed_at__isnull=False),
                name="spc_alarm_closed_has_time",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "raised_at"], name="spc_alarm_status_time_idx"),
            models.Index(
                fields=["characteristic", "last_measured_at"], name="spc_alarm_char_time_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.characteristic} {self.rule} on {self.statistic} ({self.status})"
