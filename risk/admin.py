"""Admin for thermal risk: the model registry (approve, activate, retire with the list
actions, through :mod:`risk.services`), field returns (entered here through
:func:`risk.services.field_return_record`, so the labels are written with them), and the
append-only scores, labels and retraining runs (view only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db import transaction
from simple_history.admin import SimpleHistoryAdmin

from qms.admin import AppendOnlyAdmin, ReadOnlyHistoryMixin
from qms.exceptions import DomainError

from . import services
from .choices import FailureMode
from .models import FieldReturn, FieldReturnLabel, RetrainRun, RiskModel, RiskScore


class ReasonActionForm(ActionForm):
    reason = forms.CharField(
        required=False,
        label="Reason",
        widget=forms.TextInput(attrs={"size": 50, "placeholder": "reason for the decision"}),
    )


@admin.register(RiskModel)
class RiskModelAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    """Registered through ``manage.py risk_model_register`` or a retraining run (checksum
    and manifest checked there); decided here with the list actions."""

    list_display = [
        "name",
        "version",
        "state",
        "feature_set_version",
        "registered_at",
        "approved_by",
        "activated_at",
    ]
    list_filter = ["state", "name"]
    readonly_fields = [f.name for f in RiskModel._meta.fields]
    action_form = ReasonActionForm
    actions = ["approve", "activate", "retire"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_decide_permission(self, request) -> bool:
        return request.user.has_perm(services.APPROVE_PERMISSION)

    def _decide(self, request, queryset, service, verb: str) -> None:
        reason = request.POST.get("reason", "").strip()
        for model in queryset.order_by("registered_at"):
            try:
                service(model=model, actor=request.user, reason=reason)
            except DomainError as exc:
                self.message_user(request, f"{model}: not {verb}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{model}: {verb}.", messages.SUCCESS)

    @admin.action(description="Approve selected validated models", permissions=["decide"])
    def approve(self, request, queryset):
        self._decide(request, queryset, services.model_approve, "approved")

    @admin.action(description="Activate selected approved models", permissions=["decide"])
    def activate(self, request, queryset):
        self._decide(request, queryset, services.model_activate, "activated")

    @admin.action(description="Retire selected models", permissions=["decide"])
    def retire(self, request, queryset):
        self._decide(request, queryset, services.model_retire, "retired")


@admin.register(RiskScore)
class RiskScoreAdmin(AppendOnlyAdmin):
    list_display = ["scored_at", "unit", "risk", "quarantined", "model_version", "product"]
    list_filter = ["quarantined", "model_version", "product"]
    list_select_related = ["unit"]
    search_fields = ["unit__serial"]
    readonly_fields = [f.name for f in RiskScore._meta.fields]


class _DryRun(Exception):
    pass


class FieldReturnAddForm(forms.ModelForm):
    """What the return desk types; the service finds the pack, the cells and the labels."""

    pack_serial = forms.CharField(max_length=64, required=False)
    cell_serial = forms.CharField(
        max_length=64, required=False, help_text="When the analysis found the cell."
    )
    failure_mode = forms.ChoiceField(choices=FailureMode.choices)

    class Meta:
        model = FieldReturn
        fields = ["vin", "pack_serial", "cell_serial", "returned_on", "failure_mode", "analysis"]

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request

    def service_args(self) -> dict:
        data = self.cleaned_data
        return {
            "returned_on": data["returned_on"],
            "failure_mode": data["failure_mode"],
            "vin": data.get("vin") or "",
            "pack_serial": data.get("pack_serial") or "",
            "cell_serial": data.get("cell_serial") or "",
            "analysis": data.get("analysis") or "",
        }

    def clean(self):
        data = super().clean()
        if self.errors or self.request is None:
            return data
        # the service's own checks, run and rolled back, so a refusal shows on the form
        try:
            with transaction.atomic():
                services.field_return_record(actor=self.request.user, **self.service_args())
                raise _DryRun
        except _DryRun:
            pass
        except DomainError as exc:
            field = exc.field if exc.field in self.fields else None
            self.add_error(field, exc.message)
        return data


class FieldReturnLabelInline(admin.TabularInline):
    model = FieldReturnLabel
    fields = ["unit", "weight", "failure_mode", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(FieldReturn)
class FieldReturnAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    list_display = ["number", "returned_on", "level", "failure_mode", "vin", "pack", "cell"]
    list_filter = ["failure_mode", "level"]
    list_select_related = ["pack", "cell"]
    search_fields = ["number", "vin", "pack__serial", "cell__serial"]
    inlines = [FieldReturnLabelInline]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        # the labels were written from these: only the analysis may be completed later
        return [f.name for f in FieldReturn._meta.fields if f.name != "analysis"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:
            return super().get_form(request, obj, **kwargs)
        kwargs["form"] = FieldReturnAddForm
        base = super().get_form(request, obj, **kwargs)

        class Form(base):
            def __init__(self, *args, **kw):
                super().__init__(*args, request=request, **kw)

        return Form

    def get_fields(self, request, obj=None):
        if obj is None:
            return list(FieldReturnAddForm.Meta.fields)
        return super().get_fields(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            obj._history_user = request.user
            obj._change_reason = "analysis updated"
            obj.save(update_fields=["analysis"])
            return
        record = services.field_return_record(actor=request.user, **form.service_args())
        obj.pk = record.pk
        obj.__dict__.update(record.__dict__)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(RetrainRun)
class RetrainRunAdmin(AppendOnlyAdmin):
    list_display = ["started_at", "status", "active_model", "challenger", "finished_at"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in RetrainRun._meta.fields]
