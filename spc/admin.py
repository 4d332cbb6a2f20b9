"""Admin for chart configuration, control-limit versions and SPC alarms.

Every change goes through :mod:`spc.services`: the configuration form is checked and saved
by ``chart_config_update`` (an unknown run rule is refused, naming it); limits are
read-only here (approved ones are frozen in any case) and are approved or rejected with the
list actions, the reason typed next to the action; alarms are acknowledged the same way,
with the cause. Checkpoints are shown for diagnosis only.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from simple_history.admin import SimpleHistoryAdmin

from qms.admin import AppendOnlyAdmin, ReadOnlyHistoryMixin
from qms.exceptions import DomainError

from . import services
from .models import ChartCheckpoint, ChartConfig, ControlLimits, SpcAlarm


class ChartConfigForm(forms.ModelForm):
    change_reason = forms.CharField(
        required=False,
        max_length=100,
        help_text="Why the configuration changes (kept in its history).",
    )
    rules = forms.JSONField(
        help_text="Nelson rule numbers, e.g. [1, 2, 5, 6]; set by the preset unless custom."
    )

    class Meta:
        model = ChartConfig
        fields = ["characteristic", *services.CONFIG_FIELDS]

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        values = {name: data.get(name) for name in services.CONFIG_FIELDS}
        changed = [name for name in self.changed_data if name in services.CONFIG_FIELDS]
        try:
            checked = services.chart_config_validate(values, changed=changed)
        except DomainError as exc:
            field = exc.field if exc.field in self.fields else None
            self.add_error(field, exc.message)
            return data
        data.update(checked)
        return data


@admin.register(ChartConfig)
class ChartConfigAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    form = ChartConfigForm
    list_display = [
        "characteristic",
        "chart_type",
        "subgroup_mode",
        "subgroup_size",
        "rule_preset",
        "rules",
        "cusum_enabled",
        "ewma_enabled",
        "enabled",
        "updated_at",
    ]
    list_filter = ["chart_type", "rule_preset", "enabled", "characteristic__special_class"]
    list_select_related = ["characteristic__station__line"]
    search_fields = ["characteristic__code", "characteristic__name"]
    autocomplete_fields = ["characteristic"]

    def get_readonly_fields(self, request, obj=None):
        return ["characteristic"] if obj is not None else []

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        values = {name: form.cleaned_data[name] for name in services.CONFIG_FIELDS}
        config = services.chart_config_get_or_create(characteristic=obj.characteristic)
        saved = services.chart_config_update(
            config=config,
            actor=request.user,
            reason=form.cleaned_data.get("change_reason", ""),
            **values,
        )
        obj.pk = saved.pk
        obj.refresh_from_db()


class DecisionActionForm(ActionForm):
    reason = forms.CharField(
        required=False,
        label="Reason",
        widget=forms.TextInput(attrs={"size": 50, "placeholder": "reason for the decision"}),
    )


@admin.register(ControlLimits)
class ControlLimitsAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    """Limit versions, read-only; drafts are approved or rejected with the list actions."""

    list_display = [
        "characteristic",
        "version",
        "status",
        "chart_type",
        "centre",
        "lcl",
        "ucl",
        "values_used",
        "proposed_by",
        "proposed_at",
        "approved_by",
        "approved_at",
    ]
    list_filter = ["status", "chart_type", "characteristic__station__line"]
    list_select_related = ["characteristic__station__line", "proposed_by", "approved_by"]
    search_fields = ["characteristic__code", "characteristic__name"]
    ordering = ["characteristic", "-version"]
    action_form = DecisionActionForm
    actions = ["approve", "reject"]

    def has_add_permission(self, request) -> bool:
        return False  # proposed from a baseline, through the service

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # decided with the actions; decided versions are frozen

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_decide_permission(self, request) -> bool:
        return request.user.has_perm(services.APPROVE_PERMISSION)

    def _decide(self, request, queryset, service, verb: str) -> None:
        reason = request.POST.get("reason", "").strip()
        for limits in queryset.order_by("characteristic_id", "version"):
            try:
                service(limits=limits, actor=request.user, reason=reason)
            except DomainError as exc:
                self.message_user(request, f"{limits}: not {verb}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{limits}: {verb}.", messages.SUCCESS)

    @admin.action(description="Approve selected draft limits", permissions=["decide"])
    def approve(self, request, queryset):
        self._decide(request, queryset, services.limits_approve, "approved")

    @admin.action(description="Reject selected draft limits", permissions=["decide"])
    def reject(self, request, queryset):
        self._decide(request, queryset, services.limits_reject, "rejected")


class AcknowledgeActionForm(ActionForm):
    cause = forms.CharField(
        required=False,
        label="Cause",
        widget=forms.TextInput(attrs={"size": 50, "placeholder": "assignable cause found"}),
    )


@admin.register(SpcAlarm)
class SpcAlarmAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    """SPC alarms, read-only; acknowledged with the list action and the cause."""

    list_display = [
        "id",
        "characteristic",
        "rule",
        "statistic",
        "severity",
        "status",
        "first_measured_at",
        "last_measured_at",
        "raised_at",
        "acknowledged_by",
        "hold_number",
    ]
    list_filter = [
        "status",
        "severity",
        "rule",
        "characteristic__station",
        "characteristic__special_class",
        "raised_at",
    ]
    list_select_related = ["characteristic__station__line", "acknowledged_by"]
    search_fields = ["characteristic__code", "hold_number"]
    ordering = ["-raised_at", "-id"]
    action_form = AcknowledgeActionForm
    actions = ["acknowledge"]

    def has_add_permission(self, request) -> bool:
        return False  # raised by the evaluation

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # acknowledged with the action, through the service

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_acknowledge_permission(self, request) -> bool:
        return request.user.has_perm("spc.change_spcalarm")

    @admin.action(description="Acknowledge selected alarms", permissions=["acknowledge"])
    def acknowledge(self, request, queryset):
        cause = request.POST.get("cause", "").strip()
        done = 0
        for alarm in queryset.order_by("pk"):
            try:
                services.alarm_acknowledge(alarm=alarm, actor=request.user, cause=cause)
            except DomainError as exc:
                self.message_user(
                    request, f"Alarm {alarm.pk}: not acknowledged: {exc.message}", messages.ERROR
                )
            else:
                done += 1
        if done:
            self.message_user(request, f"{done} alarm(s) acknowledged.", messages.SUCCESS)


@admin.register(ChartCheckpoint)
class ChartCheckpointAdmin(AppendOnlyAdmin):
    list_display = ["characteristic", "limits", "position", "through_measured_at", "created_at"]
    list_select_related = ["characteristic__station__line", "limits"]
    list_filter = ["characteristic__station"]
