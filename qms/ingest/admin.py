"""Admin for ingest: the dead-letter store (inspect, replay, discard), applied messages,
counters and station commands.

Everything here is read-only except the two dead-letter actions: "Replay selected" runs
each entry through :func:`qms.ingest.services.dead_letter_replay` (after the master data was
fixed) and reports every entry's outcome; "Discard selected" closes open entries with the
resolution typed next to the action. Nothing is ever deleted.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from qms.admin import AppendOnlyAdmin, ReadOnlyHistoryMixin

from .models import DeadLetter, DeadLetterStatus, IngestMessage, IngestStat, StationCommand
from .services import ACCEPTED, DUPLICATE, dead_letter_discard, dead_letter_replay

#: Characters of a raw message shown on its page (a file row is short; a bulk body is not).
RAW_SHOWN_CHARS = 64 * 1024


class DeadLetterActionForm(ActionForm):
    resolution = forms.CharField(
        required=False,
        label="Resolution",
        widget=forms.TextInput(attrs={"size": 50, "placeholder": "why discarded (discard only)"}),
    )


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    """Messages that could not be applied, with their raw bytes and the reason."""

    list_display = [
        "last_seen",
        "transport",
        "origin",
        "kind",
        "short_reason",
        "field",
        "attempts",
        "status",
    ]
    list_filter = ["status", "transport", "kind"]
    search_fields = ["message_id", "origin", "reason"]
    search_help_text = "Message id, origin (topic, node, file, client) or words of the reason."
    list_select_related = ["resolved_by"]
    ordering = ["-last_seen", "-id"]
    show_full_result_count = False
    fields = [
        "status",
        "transport",
        "origin",
        "message_id",
        "kind",
        "reason",
        "field",
        "first_seen",
        "last_seen",
        "attempts",
        "resolved_at",
        "resolved_by",
        "resolution",
        "raw_sha256",
        "raw_as_text",
    ]
    readonly_fields = fields
    action_form = DeadLetterActionForm
    actions = ["replay", "discard"]

    def get_queryset(self, request):
        # Lists do not need the raw bytes; an entry's page loads them when it shows them.
        return super().get_queryset(request).defer("raw")

    def has_add_permission(self, request) -> bool:
        return False  # entries are made by the ingest only

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # closed only through the actions

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_replay_permission(self, request) -> bool:
        return request.user.has_perm("ingest.change_deadletter")

    def has_discard_permission(self, request) -> bool:
        return request.user.has_perm("ingest.change_deadletter")

    @admin.display(description="reason")
    def short_reason(self, entry: DeadLetter) -> str:
        return entry.reason if len(entry.reason) <= 120 else f"{entry.reason[:119]}…"

    @admin.display(description="raw message (as received)")
    def raw_as_text(self, entry: DeadLetter) -> str:
        text = entry.raw_text
        more = len(text) - RAW_SHOWN_CHARS
        note = f"\n… {more} more characters" if more > 0 else ""
        return format_html(
            '<pre style="white-space: pre-wrap; max-width: 100ch">{}{}</pre>',
            text[:RAW_SHOWN_CHARS],
            note,
        )

    @admin.action(description="Replay selected", permissions=["replay"])
    def replay(self, request, queryset):
        pending = queryset.exclude(status=DeadLetterStatus.RESOLVED)
        entries = list(pending.order_by("first_seen", "id"))
        skipped = queryset.filter(status=DeadLetterStatus.RESOLVED).count()
        if skipped:
            self.message_user(
                request, f"{skipped} selected entry(ies) resolved already.", messages.INFO
            )
        for entry in entries:
            outcome = dead_letter_replay(entry=entry, actor=request.user)
            label = f"#{entry.pk} {entry.message_id or entry.origin}"
            if outcome.status == ACCEPTED:
                self.message_user(request, f"{label}: applied; resolved.", messages.SUCCESS)
            elif outcome.status == DUPLICATE:
                self.message_user(
                    request, f"{label}: had been applied already; resolved.", messages.SUCCESS
                )
            else:
                where = f" ({outcome.field})" if outcome.field else ""
                self.message_user(
                    request, f"{label}: still rejected{where}: {outcome.reason}", messages.ERROR
                )

    @admin.action(description="Discard selected", permissions=["discard"])
    def discard(self, request, queryset):
        resolution = request.POST.get("resolution", "").strip()
        if not resolution:
            self.message_user(
                request,
                "Nothing discarded: type the resolution (why these are not applied) first.",
                messages.ERROR,
            )
            return
        entries = list(queryset.filter(status=DeadLetterStatus.OPEN).order_by("id"))
        for entry in entries:
            dead_letter_discard(entry=entry, actor=request.user, resolution=resolution)
        if entries:
            ids = ", ".join(f"#{e.pk}" for e in entries)
            self.message_user(request, f"Discarded {ids}: {resolution}", messages.SUCCESS)
        else:
            self.message_user(request, "No open entry selected.", messages.WARNING)


@admin.register(IngestMessage)
class IngestMessageAdmin(AppendOnlyAdmin):
    """Every envelope applied, once (its message id is unique)."""

    list_display = [
        "message_id",
        "kind",
        "transport",
        "origin",
        "station",
        "unit_serial",
        "sent_at",
        "received_at",
        "applied_at",
    ]
    list_filter = ["kind", "transport"]
    search_fields = ["=message_id", "=unit_serial"]
    search_help_text = "Exact message id, or exact unit serial."
    list_select_related = ["station__line__site"]
    show_full_result_count = False
    ordering = ["-id"]


@admin.register(IngestStat)
class IngestStatAdmin(AppendOnlyAdmin):
    """Counters per transport and minute, as ``/metrics`` reads them."""

    list_display = [
        "minute",
        "transport",
        "accepted",
        "duplicate",
        "rejected",
        "batches",
        "lag_mean_s",
        "lag_max_s",
    ]
    list_filter = ["transport"]
    show_full_result_count = False
    ordering = ["-minute", "transport"]

    @admin.display(description="lag mean (s)")
    def lag_mean_s(self, stat: IngestStat) -> str:
        return f"{stat.lag_ms_sum / stat.accepted / 1000:.3f}" if stat.accepted else "—"

    @admin.display(description="lag max (s)")
    def lag_max_s(self, stat: IngestStat) -> str:
        return f"{stat.lag_ms_max / 1000:.3f}"


@admin.register(StationCommand)
class StationCommandAdmin(ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    """Line-stop, hold and release commands sent to stations, with what came back."""

    list_display = [
        "requested_at",
        "station",
        "kind",
        "status",
        "transport",
        "target",
        "reference",
        "requested_by",
        "sent_at",
    ]
    list_filter = ["status", "kind", "transport"]
    search_fields = ["reason", "reference"]
    list_select_related = ["station__line__site", "requested_by"]
    ordering = ["-requested_at", "-id"]

    def has_add_permission(self, request) -> bool:
        return False  # sent through compliance (API or reactions), never typed here

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
