"""Admin for Sparkplug B metric mappings (master data, with history) and the edge nodes the
host application has seen (read-only: the host writes them)."""

from __future__ import annotations

from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .models import SparkplugEdgeNode, SparkplugMetricMap


@admin.register(SparkplugMetricMap)
class SparkplugMetricMapAdmin(SimpleHistoryAdmin):
    list_display = [
        "group_id",
        "edge_node_id",
        "device_id",
        "metric_name",
        "role",
        "station",
        "characteristic",
        "unit",
        "is_active",
    ]
    list_filter = ["group_id", "role", "is_active", "station__line"]
    search_fields = ["edge_node_id", "device_id", "metric_name", "characteristic__code"]
    list_select_related = ["station__line__site", "characteristic"]
    fieldsets = [
        ("Sparkplug metric", {"fields": ["group_id", "edge_node_id", "device_id", "metric_name"]}),
        (
            "Meaning",
            {"fields": ["role", "station", "characteristic", "unit", "unit_kind", "is_active"]},
        ),
    ]


@admin.register(SparkplugEdgeNode)
class SparkplugEdgeNodeAdmin(admin.ModelAdmin):
    list_display = [
        "group_id",
        "edge_node_id",
        "online",
        "bd_seq",
        "last_birth_at",
        "last_death_at",
        "seq_gaps",
        "unknown_aliases",
        "rebirth_requests",
    ]
    list_filter = ["group_id", "online"]
    search_fields = ["edge_node_id"]
    readonly_fields = [f.name for f in SparkplugEdgeNode._meta.fields]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
