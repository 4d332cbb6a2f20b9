"""Serializers of the risk API: explicit field lists; commands have their own input."""

from __future__ import annotations

from rest_framework import serializers

from ..choices import FailureMode
from ..models import FieldReturn, RetrainRun, RiskModel, RiskScore


class ScoreSerializer(serializers.ModelSerializer):
    cell = serializers.CharField(source="unit.serial", read_only=True)

    class Meta:
        model = RiskScore
        fields = [
            "id",
            "cell",
            "risk",
            "supervised_p",
            "outlier_score",
            "baseline_score",
            "baseline_flags",
            "reasons",
            "model_version",
            "product",
            "threshold",
            "threshold_mode",
            "quarantined",
            "scored_at",
        ]
        read_only_fields = fields


class ScoreDetailSerializer(ScoreSerializer):
    class Meta(ScoreSerializer.Meta):
        fields = [*ScoreSerializer.Meta.fields, "features"]
        read_only_fields = fields


class FieldReturnSerializer(serializers.ModelSerializer):
    pack = serializers.CharField(source="pack.serial", default=None, read_only=True)
    cell = serializers.CharField(source="cell.serial", default=None, read_only=True)
    entered_by = serializers.CharField(source="entered_by.username", read_only=True)
    label_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = FieldReturn
        fields = [
            "id",
            "number",
            "vin",
            "pack",
            "cell",
            "level",
            "returned_on",
            "failure_mode",
            "analysis",
            "label_count",
            "entered_by",
            "entered_at",
        ]
        read_only_fields = fields


class FieldReturnInputSerializer(serializers.Serializer):
    returned_on = serializers.DateField()
    failure_mode = serializers.ChoiceField(choices=FailureMode.choices)
    vin = serializers.CharField(max_length=17, required=False, allow_blank=True, default="")
    pack_serial = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    cell_serial = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    analysis = serializers.CharField(required=False, allow_blank=True, default="")


class RiskModelSerializer(serializers.ModelSerializer):
    registered_by = serializers.CharField(source="registered_by.username", read_only=True)
    approved_by = serializers.CharField(source="approved_by.username", default=None)

    class Meta:
        model = RiskModel
        fields = [
            "id",
            "name",
            "version",
            "state",
            "sha256",
            "size_bytes",
            "feature_set_version",
            "thresholds",
            "metrics",
            "notes",
            "registered_by",
            "registered_at",
            "validated_at",
            "approved_by",
            "approved_at",
            "activated_at",
            "retired_at",
        ]
        read_only_fields = fields


class RiskModelDecisionSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


class RetrainRunSerializer(serializers.ModelSerializer):
    active_model = serializers.CharField(source="active_model.version", default=None)
    challenger = serializers.CharField(source="challenger.version", default=None)

    class Meta:
        model = RetrainRun
        fields = [
            "id",
            "status",
            "started_at",
            "finished_at",
            "active_model",
            "challenger",
            "label_counts",
            "comparison",
            "drift_psi",
            "detail",
        ]
        read_only_fields = fields
