"""Admin for formation: cycler import profiles and grading rule sets are edited here with
history (a rule set is put in force with the list action, through
:func:`formation.services.grading_rules_activate`); runs, steps, DCIR and aging readings,
tray loading, features, grades, file imports, live channel status and cycler alarm
episodes are view only (written by the ingest and the services). The big tables show no
full count."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.utils import timezone
from simple_history.admin import SimpleHistoryAdmin

from qms.admin import AppendOnlyAdmin, ReadOnlyHistoryMixin
from qms.exceptions import DomainError

from . import services
from .choices import RuleSetState
from .models import (
    AgingReading,
    CellFeatures,
    CellGrade,
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


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, so a person can read and edit it."""

    def prepare_value(self, value):
        if isinstance(value, str):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


@admin.register(CyclerImportProfile)
class CyclerImportProfileAdmin(SimpleHistoryAdmin):
    list_display = ["name", "cycler_profile", "station", "equipment_code", "timezone", "is_active"]
    list_filter = ["cycler_profile", "is_active", "station__line"]
    search_fields = ["name", "source", "description"]
    list_select_related = ["station__line__site"]
    autocomplete_fields = ["station"]


class RuleSetForm(forms.ModelForm):
    bins = PrettyJSONField(
        widget=forms.Textarea(attrs={"rows": 20, "cols": 90, "style": "font-family: monospace"}),
        help_text='Ordered bins: [{"code": "A", "limits": {"capacity_ah": {"min": 105.5}, '
        '"dcir_mohm": {"max": 0.85}}}, ...]. Criteria: capacity_ah, energy_wh, dcir_mohm, '
        "acir_mohm, ocv_mv, k_value_mv_per_day.",
    )

    class Meta:
        model = GradingRuleSet
        fields = [
            "line",
            "name",
            "bins",
            "reject_bin",
            "k_fail_bin",
            "k_abs_limit_mv_per_day",
            "k_lot_z_limit",
            "k_min_readings",
            "notes",
        ]


class ReasonActionForm(ActionForm):
    reason = forms.CharField(
        required=False,
        label="Reason",
        widget=forms.TextInput(attrs={"size": 50, "placeholder": "reason for the decision"}),
    )


@admin.register(GradingRuleSet)
class GradingRuleSetAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    """Drafts are edited here; a rule set in force (or retired) is read only: draft a new
    one and put it in force with the action."""

    form = RuleSetForm
    list_display = [
        "name",
        "line",
        "state",
        "k_abs_limit_mv_per_day",
        "k_lot_z_limit",
        "created_by",
        "activated_at",
    ]
    list_filter = ["state", "line"]
    search_fields = ["name", "notes"]
    list_select_related = ["line", "created_by"]
    action_form = ReasonActionForm
    actions = ["activate"]

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.state != RuleSetState.DRAFT:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        if not change:
            obj.created_by = request.user
            obj.created_at = timezone.now()
        obj._history_user = request.user
        obj._change_reason = "edited in the admin" if change else "drafted in the admin"
        super().save_model(request, obj, form, change)

    @admin.action(description="Put in force on its line (retires the one in force)")
    def activate(self, request, queryset) -> None:
        reason = request.POST.get("reason", "")
        for rule_set in queryset:
            try:
                services.grading_rules_activate(
                    rule_set=rule_set, actor=request.user, reason=reason
                )
            except DomainError as exc:
                self.message_user(request, f"{rule_set}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{rule_set} is in force on {rule_set.line}.")


class StepInline(admin.TabularInline):
    model = StepResult
    fields = [
        "sequence",
        "step_type",
        "name",
        "started_at",
        "duration_s",
        "capacity_ah",
        "energy_wh",
        "end_voltage_v",
        "end_current_a",
        "cv_time_s",
        "tail_current_a",
        "temperature_rise_k",
        "end_reason",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CyclerRun)
class CyclerRunAdmin(AppendOnlyAdmin):
    list_display = [
        "id",
        "unit",
        "equipment",
        "channel",
        "tray",
        "position",
        "started_at",
        "source_format",
        "source_name",
    ]
    list_filter = ["source_format", "station__line", "equipment"]
    search_fields = ["unit__serial", "source_sha256", "source_run_id", "tray", "channel_key"]
    list_select_related = ["unit", "equipment"]
    readonly_fields = [f.name for f in CyclerRun._meta.fields]
    date_hierarchy = "started_at"
    show_full_result_count = False
    inlines = [StepInline]


@admin.register(StepResult)
class StepResultAdmin(AppendOnlyAdmin):
    list_display = ["run", "sequence", "step_type", "started_at", "capacity_ah", "end_voltage_v"]
    list_filter = ["step_type"]
    search_fields = ["run__unit__serial"]
    list_select_related = ["run"]
    readonly_fields = [f.name for f in StepResult._meta.fields]
    show_full_result_count = False


@admin.register(DcirReading)
class DcirReadingAdmin(AppendOnlyAdmin):
    list_display = [
        "unit",
        "measured_at",
        "v_before_v",
        "pulse_current_a",
        "r_1s_mohm",
        "r_10s_mohm",
    ]
    search_fields = ["unit__serial"]
    list_select_related = ["unit"]
    readonly_fields = [f.name for f in DcirReading._meta.fields]
    show_full_result_count = False


@admin.register(AgingReading)
class AgingReadingAdmin(AppendOnlyAdmin):
    list_display = ["unit", "rack", "measured_at", "ocv_mv", "acir_mohm", "temperature_c"]
    list_filter = ["rack"]
    search_fields = ["unit__serial", "rack"]
    list_select_related = ["unit"]
    readonly_fields = [f.name for f in AgingReading._meta.fields]
    date_hierarchy = "measured_at"
    show_full_result_count = False


@admin.register(TrayLoad)
class TrayLoadAdmin(AppendOnlyAdmin):
    list_display = ["tray", "position", "unit", "loaded_at", "station"]
    search_fields = ["tray", "unit__serial"]
    list_select_related = ["unit", "station"]
    readonly_fields = [f.name for f in TrayLoad._meta.fields]
    show_full_result_count = False


@admin.register(CellFeatures)
class CellFeaturesAdmin(AppendOnlyAdmin):
    list_display = [
        "unit",
        "lot",
        "channel_key",
        "rack",
        "q_discharge_ah",
        "dcir_10s_mohm",
        "k_value_mv_per_day",
        "k_value_z_lot",
        "computed_at",
    ]
    list_filter = ["line", "feature_version"]
    search_fields = ["unit__serial", "lot", "channel_key", "rack"]
    list_select_related = ["unit"]
    readonly_fields = [f.name for f in CellFeatures._meta.fields]
    show_full_result_count = False


@admin.register(CellGrade)
class CellGradeAdmin(AppendOnlyAdmin):
    list_display = ["unit", "bin", "passed", "k_screen_failed", "rule_set", "graded_at"]
    list_filter = ["passed", "k_screen_failed", "rule_set"]
    search_fields = ["unit__serial", "bin"]
    list_select_related = ["unit", "rule_set"]
    readonly_fields = [f.name for f in CellGrade._meta.fields]
    show_full_result_count = False


@admin.register(CyclerFileImport)
class CyclerFileImportAdmin(AppendOnlyAdmin):
    list_display = [
        "name",
        "profile",
        "source_format",
        "imported_at",
        "cells",
        "accepted",
        "duplicate",
        "rejected",
        "imported_by",
    ]
    list_filter = ["profile", "source_format", "imported_at"]
    search_fields = ["name", "sha256", "origin"]
    list_select_related = ["profile", "imported_by"]
    readonly_fields = [f.name for f in CyclerFileImport._meta.fields]
    date_hierarchy = "imported_at"


@admin.register(ChannelStatus)
class ChannelStatusAdmin(AppendOnlyAdmin):
    list_display = [
        "channel_key",
        "unit",
        "state",
        "step_index",
        "voltage_v",
        "current_a",
        "temperature_c",
        "capacity_ah",
        "reported_at",
    ]
    list_filter = ["state", "equipment"]
    search_fields = ["channel_key", "unit__serial", "tray"]
    list_select_related = ["unit"]
    readonly_fields = [f.name for f in ChannelStatus._meta.fields]
    show_full_result_count = False


class AlarmOpenFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("open", "Open"), ("cleared", "Cleared")]

    def queryset(self, request, queryset):
        if self.value() in ("open", "cleared"):
            return queryset.filter(cleared_at__isnull=self.value() == "open")
        return queryset


@admin.register(CyclerAlarm)
class CyclerAlarmAdmin(AppendOnlyAdmin):
    list_display = [
        "raised_at",
        "channel_status",
        "unit",
        "code",
        "severity",
        "text",
        "temperature_c",
        "cleared_at",
    ]
    list_filter = [AlarmOpenFilter, "severity", "channel_status__equipment"]
    search_fields = ["code", "text", "unit__serial", "channel_status__channel_key"]
    list_select_related = ["channel_status", "unit"]
    readonly_fields = [f.name for f in CyclerAlarm._meta.fields]
    date_hierarchy = "raised_at"
    show_full_result_count = False
