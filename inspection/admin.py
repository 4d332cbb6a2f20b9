"""Admin for vision inspection: the model registry (approve, activate, retire with the list
actions, through :mod:`inspection.services`), camera configuration, and the append-only
results, defects, reviews and flags (view only: they are written by the vision workers and
the review queue)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from simple_history.admin import SimpleHistoryAdmin

from qms.admin import AppendOnlyAdmin, ReadOnlyHistoryMixin
from qms.exceptions import DomainError

from . import services
from .models import (
    CoilFlag,
    Defect,
    DefectReview,
    InspectionModel,
    InspectionResult,
    InspectionStation,
    ShadowDisagreement,
)


class ReasonActionForm(ActionForm):
    reason = forms.CharField(
        required=False,
        label="Reason",
        widget=forms.TextInput(attrs={"size": 50, "placeholder": "reason for the decision"}),
    )


@admin.register(InspectionModel)
class InspectionModelAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    """Registered through ``manage.py vision_model_register`` or the API (checksum and golden
    set checked there); decided here with the list actions."""

    list_display = [
        "name",
        "version",
        "state",
        "threshold_set",
        "size_bytes",
        "registered_at",
        "approved_by",
        "activated_at",
    ]
    list_filter = ["state", "name"]
    readonly_fields = [f.name for f in InspectionModel._meta.fields]
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


@admin.register(InspectionStation)
class InspectionStationAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    list_display = [
        "station",
        "camera",
        "substrate",
        "pixel_pitch_um",
        "lane_width_mm",
        "model",
        "shadow_model",
        "frame_retention",
    ]
    list_select_related = ["station__line__site", "model", "shadow_model"]
    # The models a camera runs change through activation (services), not this form.
    readonly_fields = ["model", "shadow_model"]


class DefectInline(admin.TabularInline):
    model = Defect
    fields = ["cls", "confidence", "md_m", "cd_mm", "area_um2", "decision", "review_state"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(InspectionResult)
class InspectionResultAdmin(AppendOnlyAdmin):
    list_display = [
        "acquired_at",
        "camera",
        "coil",
        "frame_id",
        "coil_start_m",
        "coil_end_m",
        "verdict",
        "defect_count",
        "model_version",
        "stopped",
    ]
    list_filter = ["verdict", "camera", "stopped"]
    list_select_related = ["camera__station", "coil"]
    search_fields = ["coil__serial"]
    inlines = [DefectInline]


@admin.register(Defect)
class DefectAdmin(AppendOnlyAdmin):
    list_display = ["id", "cls", "confidence", "md_m", "cd_mm", "decision", "review_state"]
    list_filter = ["cls", "decision", "review_state"]
    search_fields = ["result__coil__serial"]


@admin.register(DefectReview)
class DefectReviewAdmin(AppendOnlyAdmin):
    list_display = ["defect", "verdict", "label", "reviewed_by", "reviewed_at"]
    list_filter = ["verdict", "label"]


@admin.register(CoilFlag)
class CoilFlagAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin, AppendOnlyAdmin):
    list_display = ["coil", "start_m", "end_m", "kind", "action", "cls", "created_at"]
    list_filter = ["kind", "action", "cls"]
    search_fields = ["coil__serial"]


@admin.register(ShadowDisagreement)
class ShadowDisagreementAdmin(AppendOnlyAdmin):
    list_display = ["result", "shadow_version", "shadow_verdict", "created_at"]
