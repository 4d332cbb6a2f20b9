"""Formation and aging records: cycler runs, step results, curves, DCIR, aging readings,
per-cell features, grading rules and grades, tray loading, cycler file imports, and the
live state of cycler channels with their alarm episodes.

Scale: a 20 GWh plant of 21700 cells makes about 3 million cells a day, so about 45 million
step results and 45 million aging readings a day. Raw records are append-only and written in
bulk (``COPY`` on PostgreSQL); a curve is never one row per sample but one compressed blob
per cell and step in file storage (``MEDIA_ROOT`` through Django's storage), with a
fixed-size resampled copy in the database for charts. Live channel status is one row per
channel, overwritten in place; only alarm episodes add rows.

Dependency direction: formation reads genealogy (cells, their coils) and qms (stations,
equipment, lines); it never imports risk or compliance. Grading failures are published as
:class:`formation.events.FormationGraded`; compliance holds them.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from simple_history.models import HistoricalRecords

from genealogy.models import Unit
from qms.models import Equipment, Line, Station

from .choices import (
    CyclerProfileName,
    RuleSetState,
    SignConvention,
    SourceFormat,
    StepType,
)

__all__ = [
    "TrayLoad",
    "CyclerRun",
    "StepResult",
    "StepCurve",
    "DcirReading",
    "AgingReading",
    "CellFeatures",
    "GradingRuleSet",
    "CellGrade",
    "CyclerImportProfile",
    "CyclerFileImport",
    "ChannelStatus",
    "CyclerAlarm",
]


def position_key(position: str) -> str:
    """A tray position as compared: trimmed, and numbers without leading zeros ("05" is
    position 5), so a loader that writes ``05`` and a cycler that writes ``5`` agree."""
    text = str(position or "").strip()
    return str(int(text)) if text.isdigit() else text.upper()


class TrayLoad(models.Model):
    """The loading record: a cell put into a position of a formation tray, as the tray
    loader scans it (envelope kind ``tray_load``). A cycler run that names a tray and
    position is checked against it: the cell's latest loading before the run and the
    position's latest loading must both be this cell in this position. Append-only."""

    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="tray_loads")
    tray = models.CharField(max_length=32, help_text="Tray id as scanned, e.g. 'T0417'.")
    position = models.CharField(max_length=16, help_text="Position in the tray as labelled.")
    position_key = models.CharField(
        max_length=16, editable=False, help_text="The position as compared ('05' -> '5')."
    )
    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="+")
    equipment = models.ForeignKey(
        Equipment, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    loaded_at = models.DateTimeField()
    source_message_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["-loaded_at", "tray", "position_key"]
        constraints = [
            models.UniqueConstraint(
                fields=["tray", "position_key", "loaded_at"], name="trayload_one_cell_per_slot"
            ),
            models.UniqueConstraint(fields=["unit", "loaded_at"], name="trayload_cell_once"),
        ]

    def __str__(self) -> str:
        return f"{self.tray}/{self.position}: unit {self.unit_id}"


class CyclerRun(models.Model):
    """One cell's formation run on one cycler channel: where (station, cabinet or cycler,
    channel, tray and position), which protocol, when, and where the data came from (a
    cycler file with its name and SHA-256, or the envelopes of a cycler stream with the
    cycler's run id) with the source's current sign convention. Stored currents are always
    + when charging.

    A run is recorded once per source: the same file (SHA-256) or the same cycler run id
    again for the same cell finds this run. ``tray_load`` is the loading record that
    confirmed the tray position (empty when the run names none or the tray had no loading
    record). Append-only; ``ended_at`` follows the last step as steps stream in.
    """

    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="formation_runs")
    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="+")
    equipment = models.ForeignKey(
        Equipment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Formation cabinet or cycler.",
    )
    channel = models.CharField(
        max_length=64, blank=True, help_text="Channel as the cycler names it."
    )
    channel_key = models.CharField(
        max_length=100,
        blank=True,
        help_text="Equipment code and channel: the formation channel features are grouped by.",
    )
    tray = models.CharField(max_length=32, blank=True)
    position = models.CharField(max_length=16, blank=True, help_text="Position in the tray.")
    tray_load = models.ForeignKey(
        TrayLoad, on_delete=models.PROTECT, null=True, blank=True, related_name="runs"
    )
    protocol = models.CharField(max_length=64, blank=True, help_text="Cycler recipe.")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    source_format = models.CharField(max_length=16, choices=SourceFormat.choices)
    source_name = models.CharField(
        max_length=255, blank=True, help_text="File name, or the sending system."
    )
    source_sha256 = models.CharField(max_length=64, blank=True, verbose_name="source SHA-256")
    source_run_id = models.CharField(
        max_length=64, blank=True, help_text="The cycler's id of the run (test id)."
    )
    source_message_id = models.CharField(
        max_length=128, blank=True, help_text="The envelope that recorded the run."
    )
    source_sign_convention = models.CharField(
        max_length=24,
        choices=SignConvention.choices,
        help_text="How the source signed its current (stored currents are + charging).",
    )
    recorded_at = models.DateTimeField(auto_now_add=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["unit", "source_sha256"],
                condition=~Q(source_sha256=""),
                name="cyclerrun_once_per_file",
            ),
            models.UniqueConstraint(
                fields=["unit", "source_run_id"],
                condition=~Q(source_run_id=""),
                name="cyclerrun_once_per_run_id",
            ),
            models.CheckConstraint(
                condition=Q(ended_at__gte=F("started_at")), name="cyclerrun_ends_after_start"
            ),
        ]
        indexes = [
            models.Index(fields=["unit", "started_at"], name="cyclerrun_unit_idx"),
            models.Index(fields=["channel_key", "started_at"], name="cyclerrun_channel_idx"),
            models.Index(fields=["tray", "started_at"], name="cyclerrun_tray_idx"),
            models.Index(fields=["station", "started_at"], name="cyclerrun_station_idx"),
        ]

    def __str__(self) -> str:
        where = self.channel_key or self.channel or "?"
        return f"run {self.pk} of unit {self.unit_id} on {where} {self.started_at:%Y-%m-%d %H:%M}"


class StepResult(models.Model):
    """One executed step of a run: type, when, and the cycler's results.

    ``capacity_ah`` / ``energy_wh`` moved in the step's direction (>= 0); voltages in V,
    ``end_current_a`` signed (+ charging); ``cv_time_s`` the time at the voltage limit
    (CV and CC-CV charges); ``tail_current_a`` the current magnitude at the end of a CV
    phase; ``temperature_rise_k`` the step's highest temperature minus its first.
    ``sequence`` is the position in the run (1, 2, ...), ``step_index`` the protocol step
    number. One row per step, never per sample; written in bulk. Append-only.
    """

    run = models.ForeignKey(CyclerRun, on_delete=models.PROTECT, related_name="steps")
    sequence = models.PositiveIntegerField()
    step_index = models.IntegerField(null=True, blank=True)
    cycle_index = models.IntegerField(null=True, blank=True)
    step_type = models.CharField(max_length=16, choices=StepType.choices)
    source_step_type = models.CharField(max_length=32, blank=True)
    name = models.CharField(max_length=64, blank=True, help_text="Step name in the recipe.")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    duration_s = models.FloatField()
    capacity_ah = models.FloatField()
    energy_wh = models.FloatField()
    start_voltage_v = models.FloatField()
    end_voltage_v = models.FloatField()
    end_current_a = models.FloatField()
    cv_time_s = models.FloatField(null=True, blank=True)
    tail_current_a = models.FloatField(null=True, blank=True)
    temperature_start_c = models.FloatField(null=True, blank=True)
    temperature_max_c = models.FloatField(null=True, blank=True)
    temperature_rise_k = models.FloatField(null=True, blank=True)
    end_reason = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["run", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["run", "sequence"], name="stepresult_once_per_run"),
            models.CheckConstraint(
                condition=Q(ended_at__gte=F("started_at")), name="stepresult_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} step {self.sequence} ({self.step_type})"


class StepCurve(models.Model):
    """The samples of one step: the full-resolution curve as one compressed blob in file
    storage (:func:`formation.features.curve_pack`: time as float64, the rest float32;
    content-addressed by its SHA-256), and a fixed-size copy in the database for charts:
    ``resampled_points`` points evenly spaced from ``time_first_s`` to ``time_last_s``
    (seconds from the step's start), one packed little-endian float32 row per name in
    ``resampled_columns``."""

    step = models.OneToOneField(StepResult, on_delete=models.PROTECT, related_name="curve")
    blob = models.FileField(upload_to="formation/curves/", max_length=200)
    sha256 = models.CharField(max_length=64, verbose_name="SHA-256 of the blob")
    size_bytes = models.PositiveIntegerField()
    n_points = models.PositiveIntegerField(help_text="Samples at full resolution.")
    columns = models.CharField(max_length=200, help_text="Arrays in the blob, comma-separated.")
    time_first_s = models.FloatField()
    time_last_s = models.FloatField()
    resampled = models.BinaryField()
    resampled_points = models.PositiveSmallIntegerField()
    resampled_columns = models.CharField(max_length=200)

    class Meta:
        ordering = ["step"]

    def __str__(self) -> str:
        return f"curve of step {self.step_id} ({self.n_points} points)"


class DcirReading(models.Model):
    """The DC internal resistance of a cell from a pulse step: ΔV from the last sample
    before the pulse (``v_before_v``) to the pulse sample at 1 s and 10 s, over the pulse
    current (:func:`formation.features.dcir_mohm`). ``pulse_current_a`` is signed (+
    charging). Derived when the pulse and the step before it are both recorded.
    Append-only."""

    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="dcir_readings")
    run = models.ForeignKey(CyclerRun, on_delete=models.PROTECT, related_name="dcir_readings")
    step = models.OneToOneField(StepResult, on_delete=models.PROTECT, related_name="dcir")
    pulse_current_a = models.FloatField()
    pulse_duration_s = models.FloatField()
    v_before_v = models.FloatField()
    r_1s_mohm = models.FloatField(null=True, blank=True)
    r_10s_mohm = models.FloatField(null=True, blank=True)
    temperature_c = models.FloatField(null=True, blank=True)
    measured_at = models.DateTimeField()

    class Meta:
        ordering = ["unit", "measured_at"]
        verbose_name = "DCIR reading"
        indexes = [models.Index(fields=["unit", "measured_at"], name="dcir_unit_idx")]

    def __str__(self) -> str:
        return f"DCIR of unit {self.unit_id} at {self.measured_at:%Y-%m-%d %H:%M}"


class AgingReading(models.Model):
    """One reading of a cell on an aging rack: OCV (mV), ACIR at 1 kHz (mΩ) where the
    scanner measures it, the rack and the cell's position on it, and the rack (or cell)
    temperature (°C). Several readings over the aging period give the K-value.
    One reading per cell and time; append-only, written in bulk."""

    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="aging_readings")
    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="+")
    equipment = models.ForeignKey(
        Equipment, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    rack = models.CharField(max_length=32)
    rack_position = models.CharField(max_length=16, blank=True)
    ocv_mv = models.FloatField(verbose_name="OCV (mV)")
    acir_mohm = models.FloatField(null=True, blank=True, verbose_name="ACIR (mΩ)")
    temperature_c = models.FloatField(null=True, blank=True)
    measured_at = models.DateTimeField()
    source_message_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["unit", "measured_at"]
        constraints = [
            models.UniqueConstraint(fields=["unit", "measured_at"], name="aging_once_per_time")
        ]
        indexes = [models.Index(fields=["rack", "measured_at"], name="aging_rack_idx")]

    def __str__(self) -> str:
        return f"unit {self.unit_id} {self.ocv_mv:.1f} mV on {self.rack}"


class CellFeatures(models.Model):
    """A cell's formation and aging features (one row per cell, recomputed in place by
    ``features_compute`` and stamped with the feature set version): the scalar features of
    :data:`formation.features.FEATURE_NAMES` and the last aging ACIR, the groups the cell
    belongs to (lot, formation channel, aging rack) and each key feature's robust z-score
    within each group (``z_scores``: ``{"lot": {feature: z}, "channel": ..., "rack": ...}``;
    the K-value's within lot and rack also as columns, for the K screen and queries).

    Units as named: Ah, Wh, V, s, A, mΩ, K, mV/day, mV, Ah/V for dQ/dV peak heights.
    Derived data: no history; the grade keeps the values it was decided on.
    """

    unit = models.OneToOneField(Unit, on_delete=models.PROTECT, related_name="formation_features")
    run = models.ForeignKey(
        CyclerRun, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    line = models.ForeignKey(
        Line, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    lot = models.CharField(
        max_length=64,
        blank=True,
        help_text="The cell's GS1 batch/lot, else the electrode coil it was wound from first.",
    )
    channel_key = models.CharField(max_length=100, blank=True)
    rack = models.CharField(max_length=32, blank=True)
    formed_at = models.DateTimeField(null=True, blank=True, help_text="Start of the run.")
    aging_readings = models.PositiveSmallIntegerField(default=0)
    q_charge_ah = models.FloatField(null=True, blank=True)
    q_discharge_ah = models.FloatField(null=True, blank=True)
    ice = models.FloatField(null=True, blank=True, verbose_name="ICE")
    e_discharge_wh = models.FloatField(null=True, blank=True)
    v_mean_discharge_v = models.FloatField(null=True, blank=True)
    cv_time_s = models.FloatField(null=True, blank=True)
    cv_tail_current_a = models.FloatField(null=True, blank=True)
    cv_charge_fraction = models.FloatField(null=True, blank=True)
    dcir_1s_mohm = models.FloatField(null=True, blank=True)
    dcir_10s_mohm = models.FloatField(null=True, blank=True)
    r_low_soc_10s_mohm = models.FloatField(null=True, blank=True)
    temperature_rise_k = models.FloatField(null=True, blank=True)
    k_value_mv_per_day = models.FloatField(null=True, blank=True)
    k_value_se_mv_per_day = models.FloatField(null=True, blank=True)
    k_value_r2 = models.FloatField(null=True, blank=True)
    ocv_end_mv = models.FloatField(null=True, blank=True)
    acir_mohm = models.FloatField(null=True, blank=True, help_text="Last aging ACIR reading.")
    ica_peak1_v = models.FloatField(null=True, blank=True)
    ica_peak1_ah_per_v = models.FloatField(null=True, blank=True)
    ica_peak2_v = models.FloatField(null=True, blank=True)
    ica_peak2_ah_per_v = models.FloatField(null=True, blank=True)
    ica_peak3_v = models.FloatField(null=True, blank=True)
    ica_peak3_ah_per_v = models.FloatField(null=True, blank=True)
    k_value_z_lot = models.FloatField(null=True, blank=True)
    k_value_z_rack = models.FloatField(null=True, blank=True)
    z_scores = models.JSONField(default=dict, blank=True)
    feature_version = models.CharField(max_length=16)
    computed_at = models.DateTimeField()

    class Meta:
        verbose_name = "cell features"
        verbose_name_plural = "cell features"
        ordering = ["-computed_at", "-id"]
        indexes = [
            models.Index(fields=["lot"], name="features_lot_idx"),
            models.Index(fields=["channel_key", "formed_at"], name="features_channel_idx"),
            models.Index(fields=["rack", "formed_at"], name="features_rack_idx"),
            models.Index(fields=["line", "formed_at"], name="features_line_idx"),
        ]

    def __str__(self) -> str:
        return f"features of unit {self.unit_id} ({self.feature_version})"


class GradingRuleSet(models.Model):
    """How a line's cells are graded after aging: the K screen, then bins.

    The K screen fails a cell (bin ``k_fail_bin``) whose K-value is above
    ``k_abs_limit_mv_per_day`` or whose robust z-score within its lot is above
    ``k_lot_z_limit`` (the cell discharges itself faster than its lot). A cell that passes
    takes the first bin in ``bins`` whose limits it meets: ``[{"code": "A", "limits":
    {"capacity_ah": {"min": 105.5}, "dcir_mohm": {"max": 0.85}, ...}}, ...]`` (criteria in
    :class:`formation.choices.BinCriterion`); one that meets none gets ``reject_bin``.
    One active rule set per line; changes keep history.
    """

    line = models.ForeignKey(Line, on_delete=models.PROTECT, related_name="grading_rule_sets")
    name = models.CharField(max_length=80)
    state = models.CharField(max_length=8, choices=RuleSetState.choices, default=RuleSetState.DRAFT)
    bins = models.JSONField(default=list, help_text="Ordered bins with their limits.")
    reject_bin = models.CharField(max_length=16, default="NG", help_text="Meets no bin.")
    k_fail_bin = models.CharField(max_length=16, default="NG-K", help_text="Fails the K screen.")
    k_abs_limit_mv_per_day = models.FloatField(
        verbose_name="K absolute limit (mV/day)", help_text="Above this the cell fails."
    )
    k_lot_z_limit = models.FloatField(
        verbose_name="K lot-relative limit (robust z)",
        help_text="A K-value this many robust sigmas above its lot's median fails.",
    )
    k_min_readings = models.PositiveSmallIntegerField(
        default=3, help_text="OCV readings a K-value needs before a cell is graded."
    )
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField()
    activated_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["line", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["line", "name"], name="ruleset_name_per_line"),
            models.UniqueConstraint(
                fields=["line"],
                condition=Q(state=RuleSetState.ACTIVE),
                name="ruleset_one_active_per_line",
            ),
            models.CheckConstraint(
                condition=Q(k_abs_limit_mv_per_day__gt=0) & Q(k_lot_z_limit__gt=0),
                name="ruleset_k_limits_positive",
            ),
            models.CheckConstraint(
                condition=Q(k_min_readings__gte=2), name="ruleset_k_needs_two_readings"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_state_display()})"

    def clean(self) -> None:
        """The bins are checked as the service checks them (admin forms)."""
        from django.core.exceptions import ValidationError

        from qms.exceptions import DomainError

        from .services import bins_validate

        try:
            bins_validate(self.bins, reject_bin=self.reject_bin, k_fail_bin=self.k_fail_bin)
        except DomainError as exc:
            raise ValidationError({"bins": f"{exc.field}: {exc.message}"}) from exc


class CellGrade(models.Model):
    """A cell's grade: the bin, pass or fail, whether the K screen failed it, why
    (``reasons``), and the feature values it was decided on (``inputs``), under which rule
    set. Grading again (new features, a new rule set) adds a grade; the latest counts.
    Append-only."""

    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="formation_grades")
    rule_set = models.ForeignKey(GradingRuleSet, on_delete=models.PROTECT, related_name="grades")
    bin = models.CharField(max_length=16)
    passed = models.BooleanField()
    k_screen_failed = models.BooleanField(default=False)
    reasons = models.JSONField(default=list, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    feature_version = models.CharField(max_length=16)
    features_computed_at = models.DateTimeField()
    graded_at = models.DateTimeField()
    graded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-graded_at", "-id"]
        indexes = [
            models.Index(fields=["unit", "graded_at"], name="grade_unit_idx"),
            models.Index(fields=["rule_set", "bin"], name="grade_bin_idx"),
            models.Index(fields=["passed", "graded_at"], name="grade_passed_idx"),
        ]

    def __str__(self) -> str:
        return f"unit {self.unit_id}: {self.bin} ({'pass' if self.passed else 'fail'})"


class CyclerImportProfile(models.Model):
    """How one site's cycler exports are imported: the reading profile
    (:data:`formation.cyclers.PROFILES`) with the site's options (time zone of naive
    timestamps, sign convention, strictness), the formation station the runs belong to,
    the equipment when the file does not name it, and the sending system's name."""

    name = models.CharField(max_length=80, unique=True, help_text="e.g. 'l1-pri cabinet CSV'.")
    description = models.TextField(blank=True)
    cycler_profile = models.CharField(max_length=16, choices=CyclerProfileName.choices)
    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="+")
    equipment_code = models.CharField(
        max_length=32, blank=True, help_text="Equipment when the file names none."
    )
    timezone = models.CharField(
        max_length=64, blank=True, help_text="IANA zone of naive timestamps; blank: UTC."
    )
    sign_convention = models.CharField(
        max_length=24,
        choices=SignConvention.choices,
        blank=True,
        help_text="Blank: the vendor's documented convention (cabinets: decided per file).",
    )
    strict = models.BooleanField(
        null=True, blank=True, help_text="Refuse unknown columns; blank: the profile's default."
    )
    barcode_pattern = models.CharField(
        max_length=200,
        blank=True,
        help_text="For exports that do not name their cell (Neware CSV, Arbin CSV): a regular "
        "expression on the file name with a group named 'barcode', e.g. "
        "'^(?P<barcode>[A-Z0-9-]+)_ch'.",
    )
    source = models.CharField(max_length=120, help_text="The sending system as envelopes name it.")
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.barcode_pattern:
            try:
                pattern = re.compile(self.barcode_pattern)
            except re.error as exc:
                raise ValidationError(
                    {"barcode_pattern": f"Not a regular expression: {exc}"}
                ) from exc
            if "barcode" not in pattern.groupindex:
                raise ValidationError({"barcode_pattern": "Name a group 'barcode'."})


class CyclerFileImport(models.Model):
    """One cycler file imported through a profile, with what became of its cells.
    ``sha256`` of the content is unique: the same bytes again are refused as a duplicate.
    ``rejected`` cells are in the dead-letter store (origin ``<name>:cell <barcode>``).
    Append-only."""

    sha256 = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    origin = models.CharField(max_length=300, help_text="Directory, or upload.")
    profile = models.ForeignKey(
        CyclerImportProfile, on_delete=models.PROTECT, related_name="imports"
    )
    source_format = models.CharField(max_length=16, choices=SourceFormat.choices)
    size_bytes = models.PositiveBigIntegerField()
    rows = models.PositiveIntegerField(help_text="Data rows (records) in the file.")
    cells = models.PositiveIntegerField()
    accepted = models.PositiveIntegerField()
    duplicate = models.PositiveIntegerField()
    rejected = models.PositiveIntegerField()
    steps = models.PositiveIntegerField()
    samples = models.PositiveIntegerField()
    imported_at = models.DateTimeField()
    imported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-imported_at", "-id"]
        indexes = [models.Index(fields=["profile", "imported_at"], name="cyclerfile_profile_idx")]
        constraints = [
            models.CheckConstraint(
                condition=Q(cells=F("accepted") + F("duplicate") + F("rejected")),
                name="cyclerfile_cells_add_up",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.sha256[:12]})"


# --- live channel status and alarms ------------------------------------------------------------


class ChannelState(models.TextChoices):
    """What a cycler channel is doing as it reports it live (envelope kind
    ``cycler_status``)."""

    IDLE = "idle", "Idle"
    CC_CHARGE = "cc_charge", "CC charge"
    CV_CHARGE = "cv_charge", "CV charge"
    DISCHARGE = "discharge", "Discharge"
    REST = "rest", "Rest"
    PULSE = "pulse", "Pulse (DCIR)"
    PAUSED = "paused", "Paused"
    FAULT = "fault", "Fault"
    COMPLETE = "complete", "Protocol complete"


class AlarmSeverity(models.TextChoices):
    """How bad a cycler alarm is, as the cycler rates it. ``critical`` alarms
    (over-temperature, voltage out of window, contact fault) are published as
    :class:`formation.events.CyclerAlarmRaised`."""

    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class ChannelStatus(models.Model):
    """The latest live state of one channel of a formation cabinet or cycler: one row per
    (equipment, channel), overwritten in place as ``cycler_status`` messages stream in; a
    status older than the stored one (``reported_at``) changes nothing.

    Holds the cell on the channel (when one is loaded) with its tray and position, the
    channel's state, protocol step index and time in the step (s), voltage (V), current (A,
    + charging whatever the cycler's sign convention), temperature (°C) and the step's
    capacity so far (Ah). The active alarms are the channel's open :class:`CyclerAlarm`
    episodes. Runtime status, not a record: no history, never deleted; the samples of a
    step are stored with the step (``formation_step``), never here.
    """

    equipment = models.ForeignKey(
        Equipment, on_delete=models.PROTECT, related_name="+", help_text="Formation cabinet."
    )
    channel = models.CharField(max_length=64, help_text="Channel as the cabinet names it.")
    channel_key = models.CharField(
        max_length=100, help_text="Equipment code and channel, as runs and features name it."
    )
    tray = models.CharField(max_length=32, blank=True)
    position = models.CharField(max_length=16, blank=True, help_text="Position in the tray.")
    unit = models.ForeignKey(
        Unit,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The cell on the channel; empty when none is loaded.",
    )
    state = models.CharField(max_length=16, choices=ChannelState.choices)
    step_index = models.IntegerField(null=True, blank=True, help_text="Protocol step number.")
    step_elapsed_s = models.FloatField(null=True, blank=True, help_text="Time in the step (s).")
    voltage_v = models.FloatField(verbose_name="voltage (V)")
    current_a = models.FloatField(verbose_name="current (A)", help_text="+ when charging.")
    temperature_c = models.FloatField(null=True, blank=True, verbose_name="temperature (°C)")
    capacity_ah = models.FloatField(
        null=True, blank=True, verbose_name="capacity (Ah)", help_text="Moved in the step so far."
    )
    reported_at = models.DateTimeField(help_text="When the cabinet took this status.")
    updated_at = models.DateTimeField(help_text="When it was stored.")
    source_message_id = models.CharField(max_length=128, blank=True)

    class Meta:
        verbose_name = "channel status"
        verbose_name_plural = "channel statuses"
        ordering = ["equipment", "channel"]
        constraints = [
            models.UniqueConstraint(
                fields=["equipment", "channel"], name="channelstatus_one_per_channel"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "equipment"], name="channelstatus_state_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.channel_key} {self.state}"


class CyclerAlarm(models.Model):
    """One alarm episode on a cycler channel: raised when a ``cycler_status`` first reports
    the code on the channel (``raised_at`` is that status's time), cleared (``cleared_at``)
    by the first later status that no longer reports it. A code reported again with another
    severity, or with another cell on the channel, closes the episode and opens a new one.

    Keeps the cell on the channel, the code, severity and text as the cycler gave them, and
    the channel's state, step index, voltage (V) and temperature (°C) when it was raised.
    Rows are only added, and closed once; one open episode per channel and code.
    """

    channel_status = models.ForeignKey(
        ChannelStatus, on_delete=models.PROTECT, related_name="alarms"
    )
    unit = models.ForeignKey(
        Unit,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="cycler_alarms",
        help_text="The cell on the channel when the alarm was raised.",
    )
    code = models.CharField(max_length=32, help_text="The cycler's alarm code, e.g. 'OT-CELL'.")
    severity = models.CharField(max_length=8, choices=AlarmSeverity.choices)
    text = models.CharField(max_length=200, blank=True)
    state = models.CharField(
        max_length=16, choices=ChannelState.choices, help_text="Channel state when raised."
    )
    step_index = models.IntegerField(null=True, blank=True)
    voltage_v = models.FloatField(verbose_name="voltage when raised (V)")
    temperature_c = models.FloatField(
        null=True, blank=True, verbose_name="temperature when raised (°C)"
    )
    raised_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)
    raised_message_id = models.CharField(max_length=128, blank=True)
    cleared_message_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["-raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["channel_status", "code"],
                condition=Q(cleared_at__isnull=True),
                name="cycleralarm_one_open_per_code",
            ),
            models.CheckConstraint(
                condition=Q(cleared_at__isnull=True) | Q(cleared_at__gte=F("raised_at")),
                name="cycleralarm_clears_after_raise",
            ),
        ]
        indexes = [
            models.Index(fields=["unit", "raised_at"], name="cycleralarm_unit_idx"),
            models.Index(fields=["severity", "raised_at"], name="cycleralarm_severity_idx"),
            models.Index(fields=["channel_status", "raised_at"], name="cycleralarm_channel_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.code} ({self.severity}) on channel status {self.channel_status_id}"
