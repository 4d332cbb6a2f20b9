"""Admin for plant topology, the control plan and API integrations.

Master data is edited here with history (who, when, what). Integrations are created here
or with ``manage.py integration_create``; their token is shown once, at creation.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from simple_history.admin import SimpleHistoryAdmin

from .api.authentication import integration_save_new
from .exceptions import DomainError
from .models import Characteristic, Equipment, Integration, Line, Site, Station


class ReadOnlyHistoryMixin:
    """History is shown but never reverted from the admin.

    For records whose changes must go through services (unit status, links, holds):
    reverting to an old version would bypass the rules and the reason.
    """

    def revert_disabled(self, request, obj=None) -> bool:
        return True

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if request.method == "POST":
            raise PermissionDenied("Reverting from history is disabled for this record.")
        return super().history_form_view(request, object_id, version_id, extra_context)


class AppendOnlyAdmin(admin.ModelAdmin):
    """View-only admin for append-only records (measurements, station visits)."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class LineInline(admin.TabularInline):
    model = Line
    fields = ["code", "name", "cell_format", "identification_method"]
    extra = 0
    show_change_link = True


class StationInline(admin.TabularInline):
    model = Station
    fields = ["sequence", "code", "name", "process_step"]
    extra = 0
    show_change_link = True


class EquipmentInline(admin.TabularInline):
    model = Equipment
    fields = ["code", "name", "manufacturer", "model_name", "serial_number"]
    extra = 0
    show_change_link = True


class CharacteristicInline(admin.TabularInline):
    model = Characteristic
    fields = ["code", "name", "unit", "nominal", "lsl", "usl", "special_class", "is_active"]
    extra = 0
    show_change_link = True


@admin.register(Site)
class SiteAdmin(SimpleHistoryAdmin):
    list_display = ["code", "name", "country"]
    search_fields = ["code", "name"]
    inlines = [LineInline]


@admin.register(Line)
class LineAdmin(SimpleHistoryAdmin):
    list_display = ["code", "name", "site", "cell_format", "identification_method", "gtin"]
    list_filter = ["site", "cell_format", "identification_method"]
    search_fields = ["code", "name", "gtin"]
    list_select_related = ["site"]
    inlines = [StationInline]


@admin.register(Station)
class StationAdmin(SimpleHistoryAdmin):
    list_display = ["code", "name", "line", "process_step", "sequence"]
    list_filter = ["line", "process_step"]
    search_fields = ["code", "name"]
    list_select_related = ["line", "line__site"]
    inlines = [EquipmentInline, CharacteristicInline]


@admin.register(Equipment)
class EquipmentAdmin(SimpleHistoryAdmin):
    list_display = ["code", "name", "station", "manufacturer", "model_name", "serial_number"]
    list_filter = ["station__line", "station__process_step"]
    search_fields = ["code", "name", "serial_number"]
    list_select_related = ["station", "station__line", "station__line__site"]


@admin.register(Characteristic)
class CharacteristicAdmin(SimpleHistoryAdmin):
    """Control-plan rows. Changing limits is recorded in history; measurements keep the
    ``in_spec`` they were recorded with."""

    list_display = [
        "code",
        "name",
        "station",
        "unit",
        "nominal",
        "lsl",
        "usl",
        "special_class",
        "is_active",
    ]
    list_filter = ["station__line", "station__process_step", "special_class", "is_active"]
    search_fields = ["code", "name"]
    list_select_related = ["station", "station__line", "station__line__site"]


class IntegrationAddForm(forms.ModelForm):
    class Meta:
        model = Integration
        fields = ["name", "scope"]
        help_texts = {
            "name": "The plant system, e.g. 'mes-gf1' or 'plc-gateway-l1'. Its token is shown "
            "once after saving (or use: manage.py integration_create NAME --scope read).",
        }

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if get_user_model().objects.filter(username=f"int-{name}"[:150]).exists():
            raise forms.ValidationError(f"A user named 'int-{name}' exists already.")
        return name


@admin.register(Integration)
class IntegrationAdmin(SimpleHistoryAdmin):
    """Plant systems calling the API. Only the SHA-256 of each token is stored."""

    list_display = ["name", "scope", "is_active", "key_prefix", "created_at", "last_used_at"]
    list_filter = ["scope", "is_active"]
    search_fields = ["name"]
    readonly_fields = ["user", "key_prefix", "created_at", "last_used_at"]
    fields = ["name", "scope", "is_active", "user", "key_prefix", "created_at", "last_used_at"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = IntegrationAddForm
            kwargs["fields"] = ["name", "scope"]
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["name", "scope"] if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else [*self.readonly_fields, "name"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        try:
            key = integration_save_new(obj, actor=request.user)
        except DomainError as exc:  # name taken by a user since the form was validated
            raise PermissionDenied(exc.message) from exc
        messages.warning(
            request,
            f"Token for {obj.name} (shown once, store it now): {key}",
        )
