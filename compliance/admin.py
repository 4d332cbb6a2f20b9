"""Admin for holds, and the hold actions on units.

Holds are placed and released only through :mod:`compliance.services` (which set and
restore ``Unit.status`` with history): from the unit list ("Place hold on selected units")
and the hold list ("Release selected holds"), each with the reason typed next to the action.
The hold pages themselves are read-only.

The unit admin of :mod:`genealogy.admin` is extended here (re-registered) with the hold
actions and the unit's holds, because genealogy may not depend on compliance.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import Subquery
from django.urls import reverse
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from genealogy.admin import SerialSearchMixin, UnitAdmin, serial_q, unit_admin_link
from genealogy.models import Unit
from qms.admin import AppendOnlyAdmin, ReadOnlyHistoryMixin
from qms.exceptions import DomainError

from . import services
from .choices import HoldSource, HoldStatus
from .models import AlarmReaction, Hold, HoldUnit, SpcReactionPlan

#: Units shown on a hold's page; the rest are in the held-unit list.
INLINE_UNITS_LIMIT = 200


class HoldPlaceActionForm(ActionForm):
    reason = forms.CharField(
        required=False,
        label="Reason",
        widget=forms.TextInput(attrs={"size": 50, "placeholder": "reason for hold"}),
    )
    source = forms.ChoiceField(
        choices=HoldSource.choices, initial=HoldSource.MANUAL, required=False, label="Source"
    )


class HoldReleaseActionForm(ActionForm):
    reason = forms.CharField(
        required=False,
        label="Reason",
        widget=forms.TextInput(attrs={"size": 50, "placeholder": "disposition and evidence"}),
    )


class UnitHoldInline(admin.TabularInline):
    """The holds a unit is or was under."""

    model = HoldUnit
    fk_name = "unit"
    extra = 0
    can_delete = False
    fields = ["hold_link", "hold_status", "hold_reason", "previous_status"]
    readonly_fields = fields
    verbose_name = "hold"
    verbose_name_plural = "holds"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("hold").order_by("-hold__placed_at")

    @admin.display(description="hold")
    def hold_link(self, hu: HoldUnit) -> str:
        url = reverse("admin:compliance_hold_change", args=[hu.hold_id])
        return format_html('<a href="{}">{}</a>', url, hu.hold.number)

    @admin.display(description="status")
    def hold_status(self, hu: HoldUnit) -> str:
        return hu.hold.get_status_display()

    @admin.display(description="reason")
    def hold_reason(self, hu: HoldUnit) -> str:
        return hu.hold.reason


class UnitWithHoldsAdmin(UnitAdmin):
    """The unit admin with its holds and the "place hold" action."""

    inlines = [*UnitAdmin.inlines, UnitHoldInline]
    action_form = HoldPlaceActionForm
    actions = ["place_hold"]

    def has_hold_place_permission(self, request) -> bool:
        return request.user.has_perm("compliance.add_hold")

    @admin.action(description="Place hold on selected units", permissions=["hold_place"])
    def place_hold(self, request, queryset):
        reason = request.POST.get("reason", "").strip()
        source = request.POST.get("source") or HoldSource.MANUAL
        try:
            hold = services.hold_place(
                units=list(queryset), reason=reason, source=source, actor=request.user
            )
        except DomainError as exc:
            self.message_user(request, f"No hold placed: {exc.message}", messages.ERROR)
            return None
        self.message_user(
            request,
            f"{hold.number} placed on {queryset.count()} unit(s): {hold.reason}",
            messages.SUCCESS,
        )
        return None


admin.site.unregister(Unit)
admin.site.register(Unit, UnitWithHoldsAdmin)


class HoldUnitInline(admin.TabularInline):
    model = HoldUnit
    fk_name = "hold"
    extra = 0
    can_delete = False
    fields = ["unit_link", "previous_status"]
    readonly_fields = fields
    verbose_name = "unit"
    verbose_name_plural = f"units (first {INLINE_UNITS_LIMIT})"

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("unit").order_by("id")

    @admin.display(description="unit")
    def unit_link(self, hu: HoldUnit) -> str:
        return unit_admin_link(hu.unit)


@admin.register(Hold)
class HoldAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    """Holds, read-only; released with the "Release selected holds" action."""

    list_display = [
        "number",
        "status",
        "source",
        "reason",
        "placed_by",
        "placed_at",
        "released_by",
        "released_at",
    ]
    list_filter = ["status", "source", "placed_at"]
    list_select_related = ["placed_by", "released_by"]
    search_fields = ["number"]
    search_help_text = "Hold number, or a unit serial (GS1 accepted) to find its holds."
    inlines = [HoldUnitInline]
    action_form = HoldReleaseActionForm
    actions = ["release"]
    ordering = ["-placed_at", "-id"]

    def has_add_permission(self, request) -> bool:
        return False  # placed from the unit list or the API, through the service

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # status changes only through the release action

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_release_permission(self, request) -> bool:
        return request.user.has_perm("compliance.change_hold")

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        by_unit = HoldUnit.objects.filter(serial_q(term, "unit__serial")).values("hold_id")
        return queryset.filter(number=term) | queryset.filter(pk__in=Subquery(by_unit)), False

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, HoldUnitInline) and obj is not None:
            first = HoldUnit.objects.filter(hold=obj).order_by("id").values("pk")
            kwargs["queryset"] = kwargs["queryset"].filter(
                pk__in=Subquery(first[:INLINE_UNITS_LIMIT])
            )
        return kwargs

    @admin.action(description="Release selected holds", permissions=["release"])
    def release(self, request, queryset):
        reason = request.POST.get("reason", "").strip()
        released, refused = [], []
        for hold in queryset.filter(status=HoldStatus.OPEN).order_by("id"):
            try:
                services.hold_release(hold=hold, actor=request.user, reason=reason)
            except DomainError as exc:
                refused.append(f"{hold.number}: {exc.message}")
            else:
                released.append(hold.number)
        if released:
            self.message_user(request, f"Released {', '.join(released)}.", messages.SUCCESS)
        for line in refused:
            self.message_user(request, f"Not released {line}", messages.ERROR)
        if not released and not refused:
            self.message_user(request, "No open hold selected.", messages.WARNING)


@admin.register(HoldUnit)
class HoldUnitAdmin(SerialSearchMixin, AppendOnlyAdmin):
    """Which unit is under which hold, and the status it returns to on release."""

    serial_search_paths = ("unit__serial",)
    list_display = ["hold", "unit", "previous_status"]
    list_filter = ["hold__status", "previous_status"]
    list_select_related = ["hold", "unit"]
    show_full_result_count = False
    ordering = ["-id"]


@admin.register(SpcReactionPlan)
class SpcReactionPlanAdmin(SimpleHistoryAdmin):
    """Per characteristic: whether a control alarm holds the suspect window and stops the
    station (without a plan: both for CC and SC, neither for the others)."""

    list_display = ["characteristic", "hold_window", "stop_line"]
    list_filter = ["hold_window", "stop_line", "characteristic__special_class"]
    search_fields = ["characteristic__code", "characteristic__name"]
    autocomplete_fields = ["characteristic"]


@admin.register(AlarmReaction)
class AlarmReactionAdmin(AppendOnlyAdmin):
    list_display = ["created_at", "alarm", "action", "hold", "command", "detail"]
    list_filter = ["action"]
    search_fields = ["hold__number", "detail"]
    list_select_related = ["alarm__characteristic", "hold", "command"]
