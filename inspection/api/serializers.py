"""Serializers of the inspection API: reads with explicit fields, one input serializer per
command."""

from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from ..choices import ReviewVerdict
from ..models import (
    CoilFlag,
    Defect,
    DefectReview,
    InspectionModel,
    InspectionResult,
    InspectionStation,
)
from ..schema import DEFECT_CLASSES


def evidence_url(evidence) -> str | None:
    if evidence is None:
        return None
    return reverse("inspection-api:evidence", kwargs={"sha256": evidence.sha256})


class CameraSerializer(serializers.ModelSerializer):
    station = serializers.CharField(source="station.__str__", read_only=True)
    model = serializers.CharField(source="model.__str__", read_only=True, default=None)
    shadow_model = serializers.CharField(source="shadow_model.__str__", default=None)

    class Meta:
        model = InspectionStation
        fields = [
            "id",
            "station",
            "camera",
            "substrate",
            "pixel_pitch_um",
            "frame_width_px",
            "frame_height_px",
            "lane_width_mm",
            "lane_offset_mm",
            "encoder_counts_per_m",
            "max_gap_m",
            "latency_budget_ms",
            "heartbeat_timeout_s",
            "grey_band_low",
            "grey_band_high",
            "noise_band_high",
            "rules",
            "rollers",
            "model",
            "shadow_model",
            "frame_retention",
        ]


class DefectSerializer(serializers.ModelSerializer):
    result = serializers.PrimaryKeyRelatedField(read_only=True)
    coil = serializers.CharField(source="result.coil.serial", read_only=True)
    station = serializers.CharField(source="result.camera.station.__str__", read_only=True)
    model_version = serializers.CharField(source="result.model_version", read_only=True)
    threshold_set = serializers.CharField(source="result.threshold_set", read_only=True)
    acquired_at = serializers.DateTimeField(source="result.acquired_at", read_only=True)
    bbox_px = serializers.SerializerMethodField()
    crop_url = serializers.SerializerMethodField()
    crop_sha256 = serializers.CharField(source="crop.sha256", default=None, read_only=True)

    class Meta:
        model = Defect
        fields = [
            "id",
            "result",
            "coil",
            "station",
            "acquired_at",
            "cls",
            "confidence",
            "probabilities",
            "bbox_px",
            "area_px",
            "area_um2",
            "equivalent_diameter_um",
            "length_um",
            "md_m",
            "cd_mm",
            "decision",
            "rule",
            "review_state",
            "model_version",
            "threshold_set",
            "crop_url",
            "crop_sha256",
        ]

    def get_bbox_px(self, obj: Defect) -> list[int]:
        return [obj.x0_px, obj.y0_px, obj.x1_px, obj.y1_px]

    def get_crop_url(self, obj: Defect) -> str | None:
        return evidence_url(obj.crop)


class ResultSerializer(serializers.ModelSerializer):
    station = serializers.CharField(source="camera.station.__str__", read_only=True)
    camera = serializers.CharField(source="camera.camera", read_only=True)
    coil = serializers.CharField(source="coil.serial", read_only=True)
    model = serializers.CharField(source="model.name", default=None, read_only=True)
    frame_url = serializers.SerializerMethodField()

    class Meta:
        model = InspectionResult
        fields = [
            "id",
            "station",
            "camera",
            "coil",
            "frame_id",
            "coil_start_m",
            "coil_end_m",
            "verdict",
            "uninspected_reason",
            "detail",
            "model",
            "model_version",
            "threshold_set",
            "duration_ms",
            "defect_count",
            "stopped",
            "stop_reason",
            "acquired_at",
            "received_at",
            "source_message_id",
            "frame_url",
        ]

    def get_frame_url(self, obj: InspectionResult) -> str | None:
        return evidence_url(obj.frame_image)


class ResultDetailSerializer(ResultSerializer):
    defects = DefectSerializer(many=True, read_only=True)

    class Meta(ResultSerializer.Meta):
        fields = [*ResultSerializer.Meta.fields, "defects"]


class DefectReviewSerializer(serializers.ModelSerializer):
    reviewed_by = serializers.CharField(source="reviewed_by.username", read_only=True)

    class Meta:
        model = DefectReview
        fields = ["id", "defect", "verdict", "label", "comment", "reviewed_by", "reviewed_at"]


class DefectReviewInputSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=ReviewVerdict.choices)
    label = serializers.ChoiceField(
        choices=list(DEFECT_CLASSES),
        required=False,
        help_text="The true class, with verdict reclassify.",
    )
    comment = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class FlagSerializer(serializers.ModelSerializer):
    coil = serializers.CharField(source="coil.serial", read_only=True)
    cell_count = serializers.IntegerField(read_only=True)
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", default=None, read_only=True
    )

    class Meta:
        model = CoilFlag
        fields = [
            "id",
            "coil",
            "start_m",
            "end_m",
            "kind",
            "action",
            "cls",
            "reason",
            "result",
            "defect",
            "cell_count",
            "created_at",
            "acknowledged_by",
            "acknowledged_at",
        ]


class FlagAcknowledgeInputSerializer(serializers.Serializer):
    comment = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class VisionModelSerializer(serializers.ModelSerializer):
    registered_by = serializers.CharField(source="registered_by.username", read_only=True)
    approved_by = serializers.CharField(source="approved_by.username", default=None)

    class Meta:
        model = InspectionModel
        fields = [
            "id",
            "name",
            "version",
            "state",
            "sha256",
            "size_bytes",
            "classes",
            "thresholds",
            "threshold_set",
            "metrics",
            "golden_result",
            "notes",
            "registered_by",
            "registered_at",
            "validated_at",
            "approved_by",
            "approved_at",
            "activated_at",
            "retired_at",
        ]


class ModelRegisterInputSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The ONNX file.")
    manifest = serializers.FileField(help_text="The manifest JSON written by the training.")
    golden = serializers.FileField(help_text="The golden set (.npz) written by the training.")
    notes = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class VisionModelDecisionSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)
