"""Admin for the OPC UA transport configuration: servers with their node maps inline, both
with history. ``ingest_opcua`` reads the configuration when it starts (restart it after an
edit)."""

from __future__ import annotations

from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .models import OpcUaNodeMap, OpcUaServer


class OpcUaNodeMapInline(admin.TabularInline):
    model = OpcUaNodeMap
    fields = [
        "station",
        "group",
        "role",
        "node",
        "event_type",
        "event_field",
        "characteristic",
        "unit",
        "equipment",
        "unit_kind",
    ]
    autocomplete_fields = ["station", "characteristic", "equipment"]
    extra = 0


@admin.register(OpcUaServer)
class OpcUaServerAdmin(SimpleHistoryAdmin):
    list_display = [
        "name",
        "endpoint_url",
        "station",
        "enabled",
        "publishing_interval_ms",
        "last_connected_at",
        "last_error_at",
    ]
    list_filter = ["enabled"]
    search_fields = ["name", "endpoint_url", "station__code"]
    readonly_fields = ["last_connected_at", "last_error", "last_error_at"]
    autocomplete_fields = ["station"]
    inlines = [OpcUaNodeMapInline]


@admin.register(OpcUaNodeMap)
class OpcUaNodeMapAdmin(SimpleHistoryAdmin):
    list_display = ["server", "station", "group", "role", "node", "event_field", "characteristic"]
    list_filter = ["role", "server"]
    search_fields = ["node", "event_field", "characteristic__code", "station__code"]
    list_select_related = ["server", "station__line", "characteristic"]
    autocomplete_fields = ["server", "station", "characteristic", "equipment"]
