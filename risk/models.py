"""Thermal risk: governed risk models, the score each cell was given, field returns and the
labels they put on cells, and retraining runs with their challenger comparison.

Dependency direction: risk reads genealogy (cells, packs, the coils a cell consumed),
formation (cell features), inspection (vision flags on cells), spc (alarms) and qms; it
never imports compliance. Quarantine holds are placed by compliance, which subscribes to
:class:`risk.events.CellsQuarantined`.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from genealogy.models import Unit

from .choices import FailureMode, ModelState, RetrainStatus, ReturnLevel

__all__ = ["RiskModel", "RiskScore", "FieldReturn", "FieldReturnLabel", "RetrainRun"]


class RiskModel(models.Model):
    """A versioned thermal-risk model: the ONNX graph of the supervised part and the
    manifest with everything else (features in order, outlier blocks, calibration,
    quarantine rules per product, training provenance, metrics) and the graph's sha256.

    Registering checks the sha256 and that this code can serve the manifest; approval is a
    quality engineer's (``risk.approve_riskmodel``); one model per ``name`` is active at a
    time and the one it replaced stays (retired) for rollback. Every :class:`RiskScore`
    names the model that gave it. The files live in the model store (``QMS_MODEL_STORE``).
    """

    name = models.SlugField(max_length=64)
    version = models.CharField(max_length=32)
    file_name = models.CharField(max_length=200, help_text="ONNX file in the model store.")
    manifest_name = models.CharField(max_length=200, help_text="Manifest JSON in the store.")
    sha256 = models.CharField(max_length=64, verbose_name="SHA-256 of the ONNX file")
    size_bytes = models.PositiveIntegerField(default=0)
    feature_set_version = models.CharField(max_length=16)
    manifest = models.JSONField()
    thresholds = models.JSONField(help_text="Quarantine rule per product (and 'default').")
    metrics = models.JSONField(default=dict, blank=True)
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
        verbose_name = "risk model"
        ordering = ["name", "-registered_at"]
        permissions = [("approve_riskmodel", "Can approve and activate thermal-risk models")]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="risk_model_version"),
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(state=ModelState.ACTIVE),
                name="risk_one_active_model_per_name",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"

    def onnx_path(self) -> Path:
        return Path(settings.QMS_MODEL_STORE) / self.file_name

    def manifest_path(self) -> Path:
        return Path(settings.QMS_MODEL_STORE) / self.manifest_name


class RiskScore(models.Model):
    """One thermal-risk score given to a cell: the calibrated risk in [0, 1] (probability
    of a field return within the label horizon), its two parts (the supervised model's
    probability and the outlier score in -log10 tail units), the plant baseline beside it
    (failed screens and its score), up to three reasons in a quality engineer's words, the
    feature vector it was computed from, the model and version, the product's quarantine
    rule and whether the cell was quarantined. Scoring again adds a row; the latest counts.
    Append-only, so every score stays explainable by the model that gave it.
    """

    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="risk_scores")
    model = models.ForeignKey(RiskModel, on_delete=models.PROTECT, related_name="scores")
    model_version = models.CharField(max_length=32)
    risk = models.FloatField(help_text="Calibrated P(field return within the horizon).")
    supervised_p = models.FloatField(help_text="The supervised model's P(field return).")
    outlier_score = models.FloatField(help_text="-log10 of the Bonferroni block tail.")
    baseline_score = models.FloatField(help_text="Failed plant screens + K tie-break.")
    baseline_flags = models.JSONField(default=list, blank=True, help_text="Screens failed.")
    reasons = models.JSONField(default=list, blank=True, help_text="Top reasons, words.")
    features = models.JSONField(default=dict, blank=True, help_text="Feature values scored.")
    product = models.CharField(max_length=64, blank=True)
    threshold = models.FloatField(help_text="The product's risk threshold when scored.")
    threshold_mode = models.CharField(max_length=16, help_text="probability or top_fraction")
    quarantined = models.BooleanField(default=False)
    scored_at = models.DateTimeField()
    scored_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-scored_at", "-id"]
        indexes = [
            models.Index(fields=["unit", "scored_at"], name="riskscore_unit_idx"),
            models.Index(fields=["quarantined", "scored_at"], name="riskscore_quarantine_idx"),
            models.Index(fields=["model", "scored_at"], name="riskscore_model_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(risk__gte=0) & Q(risk__lte=1), name="riskscore_risk_in_unit_range"
            )
        ]

    def __str__(self) -> str:
        return f"unit {self.unit_id}: {self.risk:.4f} ({self.model_version})"


class FieldReturn(models.Model):
    """A battery returned from the field: the vehicle (VIN), the pack, the cell when the
    analysis found it, when it came back, the failure mode and the analysis. A cell-level
    return labels its cell; a pack-level return labels the pack's cells as suspect, each
    with weight 1/n (:class:`FieldReturnLabel`). Kept with history."""

    number = models.CharField(max_length=20, unique=True, help_text="e.g. 'FR-2026-00017'.")
    vin = models.CharField(max_length=17, blank=True, verbose_name="VIN")
    pack = models.ForeignKey(
        Unit, on_delete=models.PROTECT, null=True, blank=True, related_name="pack_field_returns"
    )
    cell = models.ForeignKey(
        Unit, on_delete=models.PROTECT, null=True, blank=True, related_name="cell_field_returns"
    )
    level = models.CharField(max_length=8, choices=ReturnLevel.choices)
    returned_on = models.DateField(help_text="Date the return was reported.")
    failure_mode = models.CharField(max_length=24, choices=FailureMode.choices)
    analysis = models.TextField(blank=True)
    entered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    entered_at = models.DateTimeField()
    history = HistoricalRecords()

    class Meta:
        ordering = ["-returned_on", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(level=ReturnLevel.CELL) & Q(cell__isnull=False))
                | (Q(level=ReturnLevel.PACK) & Q(pack__isnull=False) & Q(cell__isnull=True)),
                name="fieldreturn_level_matches_unit",
            )
        ]

    def __str__(self) -> str:
        return f"{self.number} ({self.get_failure_mode_display()})"


class FieldReturnLabel(models.Model):
    """A training label a field return puts on a cell: weight 1 for the returned cell,
    1/n for each of the n cells of a returned pack. Written with the return; append-only."""

    field_return = models.ForeignKey(FieldReturn, on_delete=models.PROTECT, related_name="labels")
    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="field_return_labels")
    weight = models.FloatField()
    failure_mode = models.CharField(max_length=24, choices=FailureMode.choices)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["field_return", "unit"]
        constraints = [
            models.UniqueConstraint(fields=["field_return", "unit"], name="risk_label_once"),
            models.CheckConstraint(
                condition=Q(weight__gt=0) & Q(weight__lte=1), name="risk_label_weight_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.field_return_id}: unit {self.unit_id} x{self.weight:g}"


class RetrainRun(models.Model):
    """One retraining: the labels it had, the challenger it trained (registered as a
    validated model, never active until a quality engineer approves it), and the
    comparison on the time-ordered hold-out of challenger, active model and baseline
    (AUROC, average precision, capture and false quarantines at 1/2/5 %, per failure mode
    where known) with the input drift (PSI per feature). A run without enough labels ends
    ``too_few_labels`` and says so in ``detail``."""

    status = models.CharField(
        max_length=16, choices=RetrainStatus.choices, default=RetrainStatus.RUNNING
    )
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    active_model = models.ForeignKey(
        RiskModel, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    challenger = models.ForeignKey(
        RiskModel, on_delete=models.PROTECT, null=True, blank=True, related_name="retrain_runs"
    )
    label_counts = models.JSONField(default=dict, blank=True)
    comparison = models.JSONField(default=dict, blank=True)
    drift_psi = models.JSONField(default=dict, blank=True, verbose_name="input drift (PSI)")
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"retrain {self.pk} ({self.status})"
