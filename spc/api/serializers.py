"""Serializers for chart configuration, control-limit versions, chart data and alarms."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from qms.api.schema import NamedChoiceField
from spc.choices import (
    AlarmRule,
    AlarmSeverity,
    AlarmStatus,
    ChartType,
    LimitsStatus,
    RulePreset,
    SubgroupMode,
)
from spc.models import ChartConfig, ControlLimits, SpcAlarm
from spc.queries import MAX_CHART_VALUES
from spc.services import CONFIG_FIELDS


def station_path(characteristic) -> str:
    station = characteristic.station
    return f"{station.line.site.code}/{station.line.code}/{station.code}"


class ChartConfigSerializer(serializers.ModelSerializer):
    """How a characteristic is charted. ``updated_at`` is empty for the default
    configuration of a characteristic that was never configured."""

    characteristic_code = serializers.CharField(source="characteristic.code", read_only=True)
    chart_type = NamedChoiceField(ChartType)
    subgroup_mode = NamedChoiceField(SubgroupMode)
    rule_preset = NamedChoiceField(RulePreset)
    rules = serializers.ListField(child=serializers.IntegerField())

    class Meta:
        model = ChartConfig
        fields = ["characteristic", "characteristic_code", *CONFIG_FIELDS, "updated_at"]
        read_only_fields = fields


class ChartConfigUpdateSerializer(serializers.Serializer):
    """The fields to change (all optional) and why. ``rules`` without ``rule_preset``
    makes the preset ``custom``; a rule number outside 1..8 is refused."""

    chart_type = NamedChoiceField(ChartType, required=False)
    subgroup_mode = NamedChoiceField(SubgroupMode, required=False)
    subgroup_size = serializers.IntegerField(required=False, min_value=1)
    subgroup_window_s = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    rule_preset = NamedChoiceField(RulePreset, required=False)
    rules = serializers.ListField(child=serializers.IntegerField(), required=False)
    cusum_enabled = serializers.BooleanField(required=False)
    cusum_k_sigma = serializers.FloatField(required=False)
    cusum_h_sigma = serializers.FloatField(required=False)
    cusum_head_start_sigma = serializers.FloatField(required=False)
    ewma_enabled = serializers.BooleanField(required=False)
    ewma_lambda = serializers.FloatField(required=False)
    ewma_l = serializers.FloatField(required=False)
    enabled = serializers.BooleanField(required=False)
    reason = serializers.CharField(
        required=False, default="", allow_blank=True, help_text="Why (kept in history)."
    )


class LimitsHistorySerializer(serializers.Serializer):
    at = serializers.DateTimeField(source="history_date")
    by = serializers.CharField(source="history_user.username", default=None, allow_null=True)
    status = serializers.CharField()
    why = serializers.CharField(source="history_change_reason", default="", allow_null=True)


class ControlLimitsSerializer(serializers.ModelSerializer):
    """One version of a characteristic's control limits (values in its unit)."""

    status = NamedChoiceField(LimitsStatus, read_only=True)
    chart_type = NamedChoiceField(ChartType, read_only=True)
    characteristic_code = serializers.CharField(source="characteristic.code", read_only=True)
    statistics = serializers.SerializerMethodField()
    proposed_by = serializers.CharField(source="proposed_by.username", read_only=True)
    approved_by = serializers.CharField(
        source="approved_by.username", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = ControlLimits
        fields = [
            "id",
            "characteristic",
            "characteristic_code",
            "version",
            "status",
            "chart_type",
            "centre",
            "sigma",
            "lcl",
            "ucl",
            "subgroup_size",
            "degenerate",
            "statistics",
            "baseline_from",
            "baseline_to",
            "baseline_values",
            "values_used",
            "subgroups_used",
            "excluded",
            "proposed_exclusions",
            "warnings",
            "note",
            "proposed_by",
            "proposed_at",
            "approved_by",
            "approved_at",
            "monitor_from",
            "reason",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_statistics(self, obj: ControlLimits) -> list:
        """Centre line, LCL and UCL of each plotted statistic (at the limits' size)."""
        return obj.engine_limits["statistics"]


class ControlLimitsDetailSerializer(ControlLimitsSerializer):
    """A version with its history: who proposed, re-proposed, approved, superseded it, and
    why."""

    history = serializers.SerializerMethodField()

    class Meta(ControlLimitsSerializer.Meta):
        fields = [*ControlLimitsSerializer.Meta.fields, "history"]
        read_only_fields = fields

    @extend_schema_field(LimitsHistorySerializer(many=True))
    def get_history(self, obj: ControlLimits) -> list:
        rows = obj.history.select_related("history_user").order_by("history_date", "history_id")
        return LimitsHistorySerializer(rows, many=True).data


class ExclusionSerializer(serializers.Serializer):
    measurement_id = serializers.IntegerField()
    reason = serializers.CharField(help_text="The assignable cause found.")


class LimitsProposeInputSerializer(serializers.Serializer):
    """Phase I from the values measured in ``[baseline_from, baseline_to)``."""

    baseline_from = serializers.DateTimeField()
    baseline_to = serializers.DateTimeField()
    excluded = ExclusionSerializer(
        many=True,
        required=False,
        default=list,
        help_text="Values confirmed as special causes, left out of the limits.",
    )
    note = serializers.CharField(required=False, default="", allow_blank=True)


class LimitsApproveInputSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="Why these limits are put in force.")
    monitor_from = serializers.DateTimeField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Evaluate values measured from this time (default: now; not before the "
        "end of the baseline).",
    )


class LimitsRejectInputSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="Why the draft is rejected.")


class ChartQuerySerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="From (ISO 8601).")
    end = serializers.DateTimeField(required=False, help_text="Until, exclusive (ISO 8601).")
    last = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_CHART_VALUES,
        help_text="The last N values instead of a time range (default 500).",
    )


class SpcAlarmSerializer(serializers.ModelSerializer):
    """An SPC alarm with the values that make up its pattern."""

    characteristic_code = serializers.CharField(source="characteristic.code", read_only=True)
    station = serializers.SerializerMethodField()
    limits_version = serializers.IntegerField(source="limits.version", read_only=True)
    rule = NamedChoiceField(AlarmRule, read_only=True)
    severity = NamedChoiceField(AlarmSeverity, read_only=True)
    status = NamedChoiceField(AlarmStatus, read_only=True)
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.username", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = SpcAlarm
        fields = [
            "id",
            "characteristic",
            "characteristic_code",
            "station",
            "limits",
            "limits_version",
            "statistic",
            "rule",
            "rule_name",
            "direction",
            "severity",
            "chart_index",
            "statistic_value",
            "points",
            "first_measurement",
            "last_measurement",
            "first_measured_at",
            "last_measured_at",
            "raised_at",
            "status",
            "acknowledged_by",
            "acknowledged_at",
            "cause",
            "comment",
            "closed_at",
            "hold_number",
        ]
        read_only_fields = fields

    def get_station(self, obj: SpcAlarm) -> str:
        return station_path(obj.characteristic)


class AlarmAcknowledgeInputSerializer(serializers.Serializer):
    cause = serializers.CharField(help_text="Assignable cause found ('none found' is a cause).")
    comment = serializers.CharField(required=False, default="", allow_blank=True)


class AlarmCloseInputSerializer(serializers.Serializer):
    comment = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        help_text="How the reaction ended (e.g. the MRB's disposition).",
    )
