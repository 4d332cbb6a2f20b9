"""FilterSets of the formation API (runs, steps, aging readings, features, grades, tray
loading, cycler file imports, live channel status and cycler alarms)."""

from __future__ import annotations

import django_filters

from qms.api.filters import LineRefFilter

from ..choices import RuleSetState, SourceFormat, StepType
from ..models import (
    AgingReading,
    AlarmSeverity,
    CellFeatures,
    CellGrade,
    ChannelState,
    ChannelStatus,
    CyclerAlarm,
    CyclerFileImport,
    CyclerRun,
    DcirReading,
    GradingRuleSet,
    StepResult,
    TrayLoad,
)

UNIT_HELP = "Cell serial."


class RunFilterSet(django_filters.FilterSet):
    unit = django_filters.CharFilter(field_name="unit__serial", help_text=UNIT_HELP)
    equipment = django_filters.CharFilter(
        field_name="equipment__code", help_text="Cabinet or cycler code, e.g. fc-01."
    )
    channel_key = django_filters.CharFilter(help_text="Equipment and channel, e.g. fc-01:b1/p03.")
    tray = django_filters.CharFilter()
    source_format = django_filters.MultipleChoiceFilter(choices=SourceFormat.choices)
    source_sha256 = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lt")

    class Meta:
        model = CyclerRun
        fields = [
            "unit", "equipment", "channel_key", "tray", "source_format", "source_sha256",
            "since", "until",
        ]  # fmt: skip


class StepFilterSet(django_filters.FilterSet):
    run = django_filters.NumberFilter(field_name="run_id", help_text="Run id.")
    unit = django_filters.CharFilter(field_name="run__unit__serial", help_text=UNIT_HELP)
    step_type = django_filters.MultipleChoiceFilter(choices=StepType.choices)

    class Meta:
        model = StepResult
        fields = ["run", "unit", "step_type"]


class DcirFilterSet(django_filters.FilterSet):
    unit = django_filters.CharFilter(field_name="unit__serial", help_text=UNIT_HELP)
    run = django_filters.NumberFilter(field_name="run_id")

    class Meta:
        model = DcirReading
        fields = ["unit", "run"]


class AgingFilterSet(django_filters.FilterSet):
    unit = django_filters.CharFilter(field_name="unit__serial", help_text=UNIT_HELP)
    rack = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="measured_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="measured_at", lookup_expr="lt")

    class Meta:
        model = AgingReading
        fields = ["unit", "rack", "since", "until"]


class FeaturesFilterSet(django_filters.FilterSet):
    unit = django_filters.CharFilter(field_name="unit__serial", help_text=UNIT_HELP)
    line = LineRefFilter(help_text="Line id, code or site/line.")
    lot = django_filters.CharFilter()
    channel_key = django_filters.CharFilter()
    rack = django_filters.CharFilter()
    min_k_value = django_filters.NumberFilter(field_name="k_value_mv_per_day", lookup_expr="gte")
    min_k_value_z_lot = django_filters.NumberFilter(field_name="k_value_z_lot", lookup_expr="gte")

    class Meta:
        model = CellFeatures
        fields = [
            "unit", "line", "lot", "channel_key", "rack", "min_k_value", "min_k_value_z_lot",
        ]  # fmt: skip


class GradeFilterSet(django_filters.FilterSet):
    unit = django_filters.CharFilter(field_name="unit__serial", help_text=UNIT_HELP)
    bin = django_filters.CharFilter()
    passed = django_filters.BooleanFilter()
    k_screen_failed = django_filters.BooleanFilter()
    rule_set = django_filters.NumberFilter(field_name="rule_set_id")
    since = django_filters.IsoDateTimeFilter(field_name="graded_at", lookup_expr="gte")

    class Meta:
        model = CellGrade
        fields = ["unit", "bin", "passed", "k_screen_failed", "rule_set", "since"]


class RuleSetFilterSet(django_filters.FilterSet):
    line = LineRefFilter(help_text="Line id, code or site/line.")
    state = django_filters.MultipleChoiceFilter(choices=RuleSetState.choices)

    class Meta:
        model = GradingRuleSet
        fields = ["line", "state"]


class TrayLoadFilterSet(django_filters.FilterSet):
    tray = django_filters.CharFilter()
    unit = django_filters.CharFilter(field_name="unit__serial", help_text=UNIT_HELP)

    class Meta:
        model = TrayLoad
        fields = ["tray", "unit"]


class FileImportFilterSet(django_filters.FilterSet):
    profile = django_filters.CharFilter(field_name="profile__name", help_text="Profile name.")
    sha256 = django_filters.CharFilter()
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = CyclerFileImport
        fields = ["profile", "sha256", "name"]


EQUIPMENT_HELP = "Cabinet or cycler code, e.g. fc-01."


class ChannelStatusFilterSet(django_filters.FilterSet):
    equipment = django_filters.CharFilter(field_name="equipment__code", help_text=EQUIPMENT_HELP)
    state = django_filters.MultipleChoiceFilter(choices=ChannelState.choices)
    in_alarm = django_filters.BooleanFilter(help_text="An alarm is active on the channel.")
    unit = django_filters.CharFilter(field_name="unit__serial", help_text=UNIT_HELP)
    channel_key = django_filters.CharFilter(help_text="Equipment and channel, e.g. fc-01:b1/p03.")
    tray = django_filters.CharFilter()

    class Meta:
        model = ChannelStatus
        fields = ["equipment", "state", "in_alarm", "unit", "channel_key", "tray"]


class CyclerAlarmFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(
        choices=[("open", "Open"), ("cleared", "Cleared")],
        method="filter_status",
        help_text="open: still reported; cleared: no longer reported.",
    )
    severity = django_filters.MultipleChoiceFilter(choices=AlarmSeverity.choices)
    unit = django_filters.CharFilter(field_name="unit__serial", help_text=UNIT_HELP)
    equipment = django_filters.CharFilter(
        field_name="channel_status__equipment__code", help_text=EQUIPMENT_HELP
    )
    channel_key = django_filters.CharFilter(field_name="channel_status__channel_key")
    code = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="raised_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="raised_at", lookup_expr="lt")

    class Meta:
        model = CyclerAlarm
        fields = [
            "status",
            "severity",
            "unit",
            "equipment",
            "channel_key",
            "code",
            "since",
            "until",
        ]

    def filter_status(self, queryset, name, value):
        return queryset.filter(cleared_at__isnull=value == "open")
