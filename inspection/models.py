"""Vision inspection: governed models, camera stations, results, defects, evidence and the
coil metres they mark.

Dependency direction: inspection reads genealogy (coils, the cells that consumed their
metres) and qms (stations); it never imports spc, risk or compliance. Holds on flagged cells
are placed by compliance, which subscribes to :class:`inspection.events.VisionFlagged`.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from simple_history.models import HistoricalRecords

from genealogy.models import Unit
from qms.models import Station

from .choices import (
    Decision,
    FlagAction,
    FlagKind,
    FrameRetention,
    ModelState,
    ReviewState,
    ReviewVerdict,
    Substrate,
    Verdict,
)

__all__ = [
    "InspectionModel",
    "InspectionStation",
    "Evidence",
    "InspectionResult",
    "Defect",
    "DefectReview",
    "CoilFlag",
    "CellVisionFlag",
    "ShadowDisagreement",
]


class InspectionModel(models.Model):
    """A versioned ONNX vision model with its manifest: classes, input, pixel pitch,
    per-class thresholds, training provenance and metrics, and the file's sha256.

    Registering checks the sha256 and runs the golden set; approval is a quality engineer's;
    one model per ``name`` is active at a time. Every result names the model and threshold
    set that produced it. The file lives in the model store (``QMS_MODEL_STORE``).
    """

    name = models.SlugField(max_length=64)
    version = models.CharField(max_length=32)
    file_name = models.CharField(max_length=200, help_text="ONNX file in the model store.")
    manifest_name = models.CharField(max_length=200, help_text="Manifest JSON in the store.")
    golden_name = models.CharField(max_length=200, blank=True)
    sha256 = models.CharField(max_length=64, verbose_name="SHA-256 of the ONNX file")
    size_bytes = models.PositiveIntegerField(default=0)
    manifest = models.JSONField()
    classes = models.JSONField(help_text="Class names in output order.")
    thresholds = models.JSONField(help_text="Per-class high / low bands and the ok rule.")
    threshold_set = models.CharField(max_length=64)
    metrics = models.JSONField(default=dict, blank=True)
    golden_result = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=ModelState.choices, default=ModelState.DRAFT)
    notes = models.TextField(blank=True)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    registered_at = models.DateTimeField()
    validated_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name", "-registered_at"]
        permissions = [("approve_inspectionmodel", "Can approve and activate vision models")]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="inspection_model_version"),
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(state=ModelState.ACTIVE),
                name="inspection_one_active_model_per_name",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    def _path(self, name: str) -> Path:
        return Path(settings.QMS_MODEL_STORE) / name

    def onnx_path(self) -> Path:
        return self._path(self.file_name)

    def manifest_path(self) -> Path:
        return self._path(self.manifest_name)

    def golden_path(self) -> Path | None:
        return self._path(self.golden_name) if self.golden_name else None


#: Frames are at least this many pixels wide and high: the model reads 128 x 128 crops.
MIN_FRAME_PX = 128


class InspectionStation(models.Model):
    """A line-scan camera over one lane at a station (e.g. the cathode coater after the
    dryer), with its optics, encoder, fail-safe budget, commissioning band, defect rules,
    rollers and the model it runs. The vision worker of the station reads this at start.
    """

    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="cameras")
    camera = models.SlugField(max_length=64)
    substrate = models.CharField(max_length=16, choices=Substrate.choices)
    pixel_pitch_um = models.FloatField(default=20.0, help_text="Across and along the web, µm/px.")
    frame_width_px = models.PositiveIntegerField(
        default=4096, validators=[MinValueValidator(MIN_FRAME_PX)]
    )
    frame_height_px = models.PositiveIntegerField(
        default=1024,
        validators=[MinValueValidator(MIN_FRAME_PX)],
        help_text="Scan lines per frame.",
    )
    lane_width_mm = models.FloatField(default=300.0)
    lane_offset_mm = models.FloatField(
        default=0.0, help_text="Cross-direction position of column 0 from the lane edge, mm."
    )
    encoder_counts_per_m = models.PositiveIntegerField(default=100_000)
    max_gap_m = models.FloatField(
        default=0.5, help_text="An uninspected stretch longer than this stops the line."
    )
    latency_budget_ms = models.PositiveIntegerField(default=300)
    heartbeat_timeout_s = models.FloatField(default=2.0)
    grey_band_low = models.FloatField(default=40.0, help_text="Commissioning band: mean grey.")
    grey_band_high = models.FloatField(default=215.0)
    noise_band_high = models.FloatField(
        default=12.0, help_text="Commissioning band: highest sensor-noise grey-level sigma."
    )
    rules = models.JSONField(default=dict, blank=True, help_text="Per-class defect rules.")
    rollers = models.JSONField(
        default=list, blank=True, help_text='[{"name": "calender top roll", "circumference_mm": …}]'
    )
    model = models.ForeignKey(
        InspectionModel, on_delete=models.PROTECT, null=True, blank=True, related_name="stations"
    )
    shadow_model = models.ForeignKey(
        InspectionModel,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="shadow_stations",
        help_text="A candidate run beside the active model; disagreements are logged.",
    )
    frame_retention = models.CharField(
        max_length=8, choices=FrameRetention.choices, default=FrameRetention.DEFECTS
    )
    flat_field = models.FileField(
        upload_to="inspection/flat-fields/",
        blank=True,
        help_text="Commissioning flat field (.npz: per-column gain and offset) the worker "
        "corrects every frame with; written by `vision_frames --flat-field-out` or the "
        "camera's own commissioning.",
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["station", "camera"]
        constraints = [
            models.UniqueConstraint(fields=["station", "camera"], name="inspection_camera_unique"),
            models.CheckConstraint(
                condition=Q(pixel_pitch_um__gt=0) & Q(lane_width_mm__gt=0),
                name="inspection_camera_geometry",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.station}/{self.camera}"


class Evidence(models.Model):
    """An image kept as evidence (a defect crop or a full frame), stored once by content:
    the file name is its sha256."""

    class Kind(models.TextChoices):
        CROP = "crop", "Defect crop"
        FRAME = "frame", "Full frame"

    sha256 = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    image = models.FileField(upload_to="inspection/evidence/")
    width_px = models.PositiveIntegerField()
    height_px = models.PositiveIntegerField()
    size_bytes = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.kind} {self.sha256[:12]}"


class InspectionResult(models.Model):
    """One inspected (or uninspected) frame: which coil metres it covered, which model and
    threshold set judged it, how long it took and the verdict. Append-only."""

    camera = models.ForeignKey(InspectionStation, on_delete=models.PROTECT, related_name="results")
    coil = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="inspection_results")
    frame_id = models.BigIntegerField()
    coil_start_m = models.FloatField()
    coil_end_m = models.FloatField()
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    uninspected_reason = models.CharField(max_length=24, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    model = models.ForeignKey(
        InspectionModel, on_delete=models.PROTECT, null=True, blank=True, related_name="results"
    )
    model_version = models.CharField(max_length=32, blank=True)
    threshold_set = models.CharField(max_length=64, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    defect_count = models.PositiveIntegerField(default=0)
    stopped = models.BooleanField(default=False, help_text="The worker stopped the line.")
    stop_reason = models.CharField(max_length=300, blank=True)
    frame_image = models.ForeignKey(Evidence, on_delete=models.PROTECT, null=True, blank=True)
    acquired_at = models.DateTimeField(db_index=True)
    received_at = models.DateTimeField(auto_now_add=True)
    source_message_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["-acquired_at", "-id"]
        indexes = [models.Index(fields=["coil", "coil_start_m"], name="inspection_result_coil_m")]
        constraints = [
            models.CheckConstraint(
                condition=Q(coil_start_m__gte=0) & Q(coil_end_m__gt=F("coil_start_m")),
                name="inspection_result_range",
            )
        ]

    def __str__(self) -> str:
        return f"{self.camera} frame {self.frame_id}: {self.verdict}"


class Defect(models.Model):
    """One defect found in a frame: class and all class probabilities, where it is in the
    frame (px) and on the coil (metres along, mm across), how big, and what was decided."""

    result = models.ForeignKey(InspectionResult, on_delete=models.PROTECT, related_name="defects")
    cls = models.CharField(max_length=16, verbose_name="class")
    confidence = models.FloatField()
    probabilities = models.JSONField()
    x0_px = models.PositiveIntegerField()
    y0_px = models.PositiveIntegerField()
    x1_px = models.PositiveIntegerField()
    y1_px = models.PositiveIntegerField()
    area_px = models.PositiveIntegerField()
    area_um2 = models.FloatField(null=True, blank=True)
    equivalent_diameter_um = models.FloatField(null=True, blank=True)
    length_um = models.FloatField(null=True, blank=True)
    md_m = models.FloatField(help_text="Machine-direction position on the coil, m.")
    cd_mm = models.FloatField(help_text="Cross-direction position from the lane edge, mm.")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    rule = models.CharField(max_length=200, blank=True)
    crop = models.ForeignKey(Evidence, on_delete=models.PROTECT, null=True, blank=True)
    review_state = models.CharField(
        max_length=16, choices=ReviewState.choices, default=ReviewState.NONE, db_index=True
    )

    class Meta:
        ordering = ["result", "id"]
        indexes = [models.Index(fields=["cls", "decision"], name="inspection_defect_cls")]

    def __str__(self) -> str:
        return f"{self.cls} at {self.md_m:.3f} m / {self.cd_mm:.1f} mm"


class DefectReview(models.Model):
    """A reviewer's verdict on a defect from the review queue: kept as the label for the
    next training (the true class, or ok for a false call)."""

    defect = models.ForeignKey(Defect, on_delete=models.PROTECT, related_name="reviews")
    verdict = models.CharField(max_length=16, choices=ReviewVerdict.choices)
    label = models.CharField(max_length=16, help_text="True class, 'ok' for a false call.")
    comment = models.CharField(max_length=500, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    reviewed_at = models.DateTimeField()

    class Meta:
        ordering = ["-reviewed_at"]

    def __str__(self) -> str:
        return f"{self.defect_id}: {self.verdict} ({self.label})"


class CoilFlag(models.Model):
    """Metres ``[start_m, end_m)`` of a coil marked by vision: a defect to quarantine or
    review, or a stretch nobody inspected. Cells that consume overlapping metres (now or
    later) get a :class:`CellVisionFlag` and, where ``action`` is hold, a hold."""

    coil = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="vision_flags")
    start_m = models.FloatField()
    end_m = models.FloatField()
    kind = models.CharField(max_length=16, choices=FlagKind.choices)
    action = models.CharField(max_length=8, choices=FlagAction.choices)
    cls = models.CharField(max_length=24, blank=True, help_text="Defect class or gap reason.")
    reason = models.CharField(max_length=300)
    result = models.ForeignKey(InspectionResult, on_delete=models.PROTECT, related_name="flags")
    defect = models.ForeignKey(
        Defect, on_delete=models.PROTECT, null=True, blank=True, related_name="flags"
    )
    created_at = models.DateTimeField()
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["coil", "start_m"]
        indexes = [models.Index(fields=["coil", "start_m", "end_m"], name="inspection_flag_m")]
        constraints = [
            models.CheckConstraint(
                condition=Q(start_m__gte=0) & Q(end_m__gt=F("start_m")),
                name="inspection_flag_range",
            )
        ]

    def __str__(self) -> str:
        return f"{self.coil} [{self.start_m:g}, {self.end_m:g}) m: {self.kind}"


class CellVisionFlag(models.Model):
    """A cell that consumed metres of a flagged coil range (found by the forward trace when
    the flag is raised, or by the cell's backward trace when it consumes them later)."""

    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="vision_cell_flags")
    flag = models.ForeignKey(CoilFlag, on_delete=models.PROTECT, related_name="cells")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["unit", "flag"]
        constraints = [
            models.UniqueConstraint(fields=["unit", "flag"], name="inspection_cell_flag_unique")
        ]

    def __str__(self) -> str:
        return f"unit {self.unit_id} flag {self.flag_id}"


class ShadowDisagreement(models.Model):
    """A frame on which the shadow (candidate) model disagreed with the active one, for
    review before the candidate is promoted."""

    result = models.OneToOneField(
        InspectionResult, on_delete=models.PROTECT, related_name="shadow_disagreement"
    )
    shadow_version = models.CharField(max_length=32)
    shadow_verdict = models.CharField(max_length=16, choices=Verdict.choices)
    shadow_classes = models.JSONField(default=list)
    active_classes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"result {self.result_id}: shadow {self.shadow_version} {self.shadow_verdict}"
