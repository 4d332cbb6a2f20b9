"""Serializers of the formation API: reads with explicit fields (steps never carry their
samples: the curve is its own resource), the upload's input and output, and the live
channel status with its alarm episodes."""

from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from qms.api.schema import NamedChoiceField
from qms.api.serializers import DomainErrorSerializer

from ..choices import CyclerProfileName, RuleSetState, SignConvention, SourceFormat, StepType
from ..models import (
    AgingReading,
    AlarmSeverity,
    CellFeatures,
    CellGrade,
    ChannelState,
    ChannelStatus,
    CyclerAlarm,
    CyclerFileImport,
    CyclerImportProfile,
    CyclerRun,
    DcirReading,
    GradingRuleSet,
    StepResult,
    TrayLoad,
)
from ..services import Z_FEATURES


def _station(station) -> str:
    return f"{station.line.site.code}/{station.line.code}/{station.code}"


class RunSerializer(serializers.ModelSerializer):
    """One cell's formation run: where, when, and from which source."""

    unit = serializers.CharField(source="unit.serial", read_only=True)
    station = serializers.SerializerMethodField(help_text="site/line/station")
    equipment = serializers.CharField(source="equipment.code", default=None, read_only=True)
    tray_verified = serializers.SerializerMethodField(
        help_text="The tray position was confirmed by the tray's loading record."
    )
    source_format = NamedChoiceField(SourceFormat, read_only=True)
    source_sign_convention = NamedChoiceField(SignConvention, read_only=True)
    steps_url = serializers.SerializerMethodField()

    class Meta:
        model = CyclerRun
        fields = [
            "id",
            "unit",
            "station",
            "equipment",
            "channel",
            "channel_key",
            "tray",
            "position",
            "tray_verified",
            "protocol",
            "started_at",
            "ended_at",
            "source_format",
            "source_name",
            "source_sha256",
            "source_run_id",
            "source_message_id",
            "source_sign_convention",
            "recorded_at",
            "steps_url",
        ]

    def get_station(self, obj: CyclerRun) -> str:
        return _station(obj.station)

    def get_tray_verified(self, obj: CyclerRun) -> bool:
        return obj.tray_load_id is not None

    def get_steps_url(self, obj: CyclerRun) -> str:
        return f"{reverse('formation-api:step-list')}?run={obj.pk}"


class StepSerializer(serializers.ModelSerializer):
    """One step's results, without its samples (``curve_url`` has them)."""

    unit = serializers.CharField(source="run.unit.serial", read_only=True)
    step_type = NamedChoiceField(StepType, read_only=True)
    curve_url = serializers.SerializerMethodField()

    class Meta:
        model = StepResult
        fields = [
            "id",
            "run",
            "unit",
            "sequence",
            "step_index",
            "cycle_index",
            "step_type",
            "source_step_type",
            "name",
            "started_at",
            "ended_at",
            "duration_s",
            "capacity_ah",
            "energy_wh",
            "start_voltage_v",
            "end_voltage_v",
            "end_current_a",
            "cv_time_s",
            "tail_current_a",
            "temperature_start_c",
            "temperature_max_c",
            "temperature_rise_k",
            "end_reason",
            "curve_url",
        ]

    def get_curve_url(self, obj: StepResult) -> str:
        return reverse("formation-api:step-curve", kwargs={"step": obj.pk})


class CurveSerializer(serializers.Serializer):
    """A step's samples as arrays: ``resampled`` (the fixed-size copy, evenly spaced in
    time) or ``full`` (every sample, from file storage). ``time_s`` counts from the step's
    start; currents are + charging."""

    step = serializers.IntegerField()
    resolution = serializers.ChoiceField(choices=["resampled", "full"])
    points = serializers.IntegerField()
    full_points = serializers.IntegerField(help_text="Samples at full resolution.")
    sha256 = serializers.CharField(help_text="SHA-256 of the full-resolution blob.")
    time_s = serializers.ListField(child=serializers.FloatField())
    voltage_v = serializers.ListField(child=serializers.FloatField())
    current_a = serializers.ListField(child=serializers.FloatField())
    capacity_ah = serializers.ListField(child=serializers.FloatField())
    temperature_c = serializers.ListField(
        child=serializers.FloatField(), required=False, help_text="Where the cycler measures it."
    )


class DcirSerializer(serializers.ModelSerializer):
    unit = serializers.CharField(source="unit.serial", read_only=True)

    class Meta:
        model = DcirReading
        fields = [
            "id",
            "unit",
            "run",
            "step",
            "pulse_current_a",
            "pulse_duration_s",
            "v_before_v",
            "r_1s_mohm",
            "r_10s_mohm",
            "temperature_c",
            "measured_at",
        ]


class AgingSerializer(serializers.ModelSerializer):
    unit = serializers.CharField(source="unit.serial", read_only=True)
    equipment = serializers.CharField(source="equipment.code", default=None, read_only=True)

    class Meta:
        model = AgingReading
        fields = [
            "id",
            "unit",
            "rack",
            "rack_position",
            "equipment",
            "ocv_mv",
            "acir_mohm",
            "temperature_c",
            "measured_at",
            "source_message_id",
        ]


class FeaturesSerializer(serializers.ModelSerializer):
    """A cell's formation features, the groups it is scored in, and the z-scores
    (``{"lot"|"channel"|"rack": {feature: z}}``, for the features in ``z_features``)."""

    unit = serializers.CharField(source="unit.serial", read_only=True)
    line = serializers.CharField(source="line.code", default=None, read_only=True)
    z_features = serializers.SerializerMethodField()

    class Meta:
        model = CellFeatures
        fields = [
            "id",
            "unit",
            "line",
            "run",
            "lot",
            "channel_key",
            "rack",
            "formed_at",
            "aging_readings",
            "q_charge_ah",
            "q_discharge_ah",
            "ice",
            "e_discharge_wh",
            "v_mean_discharge_v",
            "cv_time_s",
            "cv_tail_current_a",
            "cv_charge_fraction",
            "dcir_1s_mohm",
            "dcir_10s_mohm",
            "r_low_soc_10s_mohm",
            "temperature_rise_k",
            "k_value_mv_per_day",
            "k_value_se_mv_per_day",
            "k_value_r2",
            "ocv_end_mv",
            "acir_mohm",
            "ica_peak1_v",
            "ica_peak1_ah_per_v",
            "ica_peak2_v",
            "ica_peak2_ah_per_v",
            "ica_peak3_v",
            "ica_peak3_ah_per_v",
            "k_value_z_lot",
            "k_value_z_rack",
            "z_features",
            "z_scores",
            "feature_version",
            "computed_at",
        ]

    def get_z_features(self, obj) -> list[str]:
        return list(Z_FEATURES)


class GradeSerializer(serializers.ModelSerializer):
    """A cell's grade: bin, pass or fail, the K screen, why, and the values it was decided on."""

    unit = serializers.CharField(source="unit.serial", read_only=True)
    rule_set_name = serializers.CharField(source="rule_set.name", read_only=True)
    line = serializers.CharField(source="rule_set.line.code", read_only=True)

    class Meta:
        model = CellGrade
        fields = [
            "id",
            "unit",
            "line",
            "rule_set",
            "rule_set_name",
            "bin",
            "passed",
            "k_screen_failed",
            "reasons",
            "inputs",
            "feature_version",
            "features_computed_at",
            "graded_at",
        ]


class RuleSetSerializer(serializers.ModelSerializer):
    line = serializers.CharField(source="line.code", read_only=True)
    state = NamedChoiceField(RuleSetState, read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True)

    class Meta:
        model = GradingRuleSet
        fields = [
            "id",
            "line",
            "name",
            "state",
            "bins",
            "reject_bin",
            "k_fail_bin",
            "k_abs_limit_mv_per_day",
            "k_lot_z_limit",
            "k_min_readings",
            "notes",
            "created_by",
            "created_at",
            "activated_at",
        ]


class TrayLoadSerializer(serializers.ModelSerializer):
    unit = serializers.CharField(source="unit.serial", read_only=True)
    station = serializers.SerializerMethodField()

    class Meta:
        model = TrayLoad
        fields = ["id", "tray", "position", "unit", "station", "loaded_at", "source_message_id"]

    def get_station(self, obj) -> str:
        return obj.station.code


class ImportProfileSerializer(serializers.ModelSerializer):
    cycler_profile = NamedChoiceField(CyclerProfileName, read_only=True)
    station = serializers.SerializerMethodField(help_text="site/line/station")

    class Meta:
        model = CyclerImportProfile
        fields = [
            "id",
            "name",
            "description",
            "cycler_profile",
            "station",
            "equipment_code",
            "timezone",
            "sign_convention",
            "strict",
            "barcode_pattern",
            "source",
            "is_active",
        ]

    def get_station(self, obj) -> str:
        return _station(obj.station)


class FileImportSerializer(serializers.ModelSerializer):
    profile = serializers.SlugRelatedField(slug_field="name", read_only=True)
    imported_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    source_format = NamedChoiceField(SourceFormat, read_only=True)

    class Meta:
        model = CyclerFileImport
        fields = [
            "id",
            "name",
            "sha256",
            "origin",
            "profile",
            "source_format",
            "size_bytes",
            "rows",
            "cells",
            "accepted",
            "duplicate",
            "rejected",
            "steps",
            "samples",
            "imported_at",
            "imported_by",
        ]


class FileUploadInputSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The cycler export, as the cycler wrote it.")
    profile = serializers.CharField(
        max_length=80, help_text="Name of the cycler import profile, e.g. 'l1-pri cabinet CSV'."
    )
    barcode = serializers.CharField(
        max_length=200,
        required=False,
        help_text="The cell of an export that does not name it (else the profile's file-name "
        "pattern).",
    )


class CellRejectionSerializer(serializers.Serializer):
    barcode = serializers.CharField()
    field = serializers.CharField(help_text="The envelope field concerned.")
    reason = serializers.CharField()
    dead_letter_id = serializers.IntegerField(allow_null=True)


class FileUploadResultSerializer(serializers.Serializer):
    """What became of the file's cells: cells = accepted + duplicate + rejected."""

    file = FileImportSerializer(source="imported_file")
    cells = serializers.IntegerField(source="imported_file.cells")
    accepted = serializers.IntegerField(source="imported_file.accepted")
    duplicate = serializers.IntegerField(
        source="imported_file.duplicate", help_text="Recorded before; not applied again."
    )
    rejected = serializers.IntegerField(
        source="imported_file.rejected", help_text="Kept in the dead-letter store."
    )
    rejections = CellRejectionSerializer(many=True)


class FileRefusedSerializer(DomainErrorSerializer):
    """A file refused whole (unreadable, or a duplicate upload), kept as a dead letter."""

    dead_letter_id = serializers.IntegerField(allow_null=True, required=False)
    row = serializers.IntegerField(allow_null=True, required=False)
    reason = serializers.CharField(required=False, help_text="The reader's refusal code.")
    imported_file = serializers.IntegerField(
        required=False, help_text="The earlier import of the same bytes."
    )


class ChannelAlarmSerializer(serializers.ModelSerializer):
    """An alarm active on a channel (an open episode)."""

    severity = NamedChoiceField(AlarmSeverity, read_only=True)

    class Meta:
        model = CyclerAlarm
        fields = ["id", "code", "severity", "text", "raised_at"]


class ChannelStatusSerializer(serializers.ModelSerializer):
    """A cycler channel's latest live state, with the alarms active on it."""

    station = serializers.SerializerMethodField(help_text="site/line/station")
    equipment = serializers.CharField(source="equipment.code", read_only=True)
    unit = serializers.CharField(
        source="unit.serial", default=None, read_only=True, help_text="The cell on the channel."
    )
    state = NamedChoiceField(ChannelState, read_only=True)
    in_alarm = serializers.BooleanField(read_only=True, help_text="An alarm is active.")
    alarms = ChannelAlarmSerializer(source="open_alarms", many=True, read_only=True)

    class Meta:
        model = ChannelStatus
        fields = [
            "id",
            "station",
            "equipment",
            "channel",
            "channel_key",
            "tray",
            "position",
            "unit",
            "state",
            "step_index",
            "step_elapsed_s",
            "voltage_v",
            "current_a",
            "temperature_c",
            "capacity_ah",
            "reported_at",
            "updated_at",
            "source_message_id",
            "in_alarm",
            "alarms",
        ]

    def get_station(self, obj: ChannelStatus) -> str:
        return _station(obj.equipment.station)


class CyclerAlarmSerializer(serializers.ModelSerializer):
    """One alarm episode on a cycler channel: raised, and cleared once the cycler stopped
    reporting it (``cleared_at`` empty while it is active)."""

    equipment = serializers.CharField(source="channel_status.equipment.code", read_only=True)
    channel = serializers.CharField(source="channel_status.channel", read_only=True)
    channel_key = serializers.CharField(source="channel_status.channel_key", read_only=True)
    unit = serializers.CharField(
        source="unit.serial", default=None, read_only=True, help_text="The cell on the channel."
    )
    severity = NamedChoiceField(AlarmSeverity, read_only=True)
    state = NamedChoiceField(ChannelState, read_only=True, help_text="Channel state when raised.")
    is_open = serializers.SerializerMethodField(help_text="Not cleared yet.")

    class Meta:
        model = CyclerAlarm
        fields = [
            "id",
            "equipment",
            "channel",
            "channel_key",
            "unit",
            "code",
            "severity",
            "text",
            "state",
            "step_index",
            "voltage_v",
            "temperature_c",
            "raised_at",
            "cleared_at",
            "is_open",
            "raised_message_id",
            "cleared_message_id",
        ]

    def get_is_open(self, obj: CyclerAlarm) -> bool:
        return obj.cleared_at is None
