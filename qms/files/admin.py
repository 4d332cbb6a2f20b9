"""Admin for file import profiles (edited here, with history; the mapping is validated
against the station's control plan on save) and the imported files (view only)."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from qms.admin import AppendOnlyAdmin

from .models import FileImportProfile, ImportedFile


class PrettyJSONField(forms.JSONField):
    """The column mapping shown indented, so a person can read and edit it."""

    def prepare_value(self, value):
        if isinstance(value, str):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class FileImportProfileForm(forms.ModelForm):
    columns = PrettyJSONField(
        widget=forms.Textarea(attrs={"rows": 24, "cols": 100, "style": "font-family: monospace"}),
        help_text="Column mapping: serial, timestamp (format, timezone), result (ok, nok), "
        "program, operator, equipment, measurements (column, characteristic, unit, scale), "
        "include, key, unit_kind. See the ingest guide, section Files.",
    )

    class Meta:
        model = FileImportProfile
        fields = [
            "name",
            "description",
            "is_active",
            "kind",
            "station",
            "equipment_code",
            "source",
            "file_format",
            "delimiter",
            "quotechar",
            "encoding",
            "decimal_separator",
            "thousands_separator",
            "header_row",
            "sheet_name",
            "columns",
        ]


@admin.register(FileImportProfile)
class FileImportProfileAdmin(SimpleHistoryAdmin):
    form = FileImportProfileForm
    list_display = ["name", "file_format", "station", "equipment_code", "kind", "is_active"]
    list_filter = ["file_format", "kind", "is_active", "station__line"]
    search_fields = ["name", "source", "description"]
    list_select_related = ["station__line__site"]
    autocomplete_fields = ["station"]
    fieldsets = [
        (None, {"fields": ["name", "description", "is_active"]}),
        ("Where the rows go", {"fields": ["kind", "station", "equipment_code", "source"]}),
        (
            "How the file is read",
            {
                "fields": [
                    "file_format",
                    "delimiter",
                    "quotechar",
                    "encoding",
                    "decimal_separator",
                    "thousands_separator",
                    "header_row",
                    "sheet_name",
                ]
            },
        ),
        ("Columns", {"fields": ["columns"]}),
    ]


@admin.register(ImportedFile)
class ImportedFileAdmin(AppendOnlyAdmin):
    list_display = [
        "name",
        "profile",
        "imported_at",
        "rows",
        "accepted",
        "duplicate",
        "rejected",
        "skipped",
        "imported_by",
    ]
    list_filter = ["profile", "imported_at"]
    search_fields = ["name", "sha256", "origin"]
    list_select_related = ["profile", "imported_by"]
    date_hierarchy = "imported_at"
    readonly_fields = [f.name for f in ImportedFile._meta.fields]
