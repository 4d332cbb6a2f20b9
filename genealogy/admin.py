"""Admin for the digital thread: units with their links, links, station visits and
measurements.

Units are created by stations and the API (through the services, which parse GS1 strings
and check the rules), so the admin does not add them; ``status`` is read-only here because
only compliance services change it (holds, dispositions), and they record why. Links,
visits and measurements are append-only records: viewable, never edited or deleted.
Search takes a serial as scanned (GS1 element strings are reduced to their serial) or a
prefix ending in ``*``.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Q, QuerySet, Subquery
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from simple_history.admin import SimpleHistoryAdmin

from qms.admin import AppendOnlyAdmin, ReadOnlyHistoryMixin
from qms.exceptions import InvalidInput

from .models import Link, Measurement, StationVisit, Unit
from .serials import normalise_lookup

#: Links shown each way on a unit's page; the rest are one click away in the link list.
INLINE_LINKS_LIMIT = 100


def serial_q(term: str, *paths: str) -> Q:
    """Rows whose serial at any of ``paths`` is ``term`` (GS1 accepted), or starts with it
    when it ends in ``*``. Exact and prefix look-ups use the serial index; a contains
    search would scan the largest tables."""
    term = term.strip()
    if term.endswith("*"):
        lookup, value = "startswith", term[:-1]
    else:
        lookup = "exact"
        try:
            value = normalise_lookup(term)
        except InvalidInput:
            value = term
    q = Q()
    for path in paths:
        q |= Q(**{f"{path}__{lookup}": value})
    return q


class SerialSearchMixin:
    """``search_fields``-free search on serials (see :func:`serial_q`)."""

    serial_search_paths: tuple[str, ...] = ("serial",)
    search_help_text = "Serial as scanned (GS1 accepted), or a prefix ending in *."

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return queryset.filter(serial_q(search_term, *self.serial_search_paths)), False


def unit_admin_link(unit: Unit) -> str:
    url = reverse("admin:genealogy_unit_change", args=[unit.pk])
    return format_html(
        '<a href="{}">{} {}</a> <small>({})</small>',
        url,
        unit.get_kind_display(),
        unit.serial,
        unit.get_status_display(),
    )


class _LinkInline(admin.TabularInline):
    """Links of one unit, read-only (rework closes links through the service)."""

    model = Link
    extra = 0
    can_delete = False
    show_change_link = True
    other_end = ""  # "source" for links into the unit, "target" for links out of it
    fields = [
        "other_unit",
        "kind",
        "slot",
        "start_m",
        "end_m",
        "quantity",
        "quantity_unit",
        "linked_at",
        "removed_at",
        "removed_reason",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related(self.other_end).order_by("linked_at")

    @admin.display(description="unit")
    def other_unit(self, link: Link) -> str:
        return unit_admin_link(getattr(link, self.other_end))


class UpstreamLinkInline(_LinkInline):
    fk_name = "target"
    other_end = "source"
    verbose_name = "upstream link (consumed or built from)"
    verbose_name_plural = f"upstream links (first {INLINE_LINKS_LIMIT})"


class DownstreamLinkInline(_LinkInline):
    fk_name = "source"
    other_end = "target"
    verbose_name = "downstream link (consumed by or built into)"
    verbose_name_plural = f"downstream links (first {INLINE_LINKS_LIMIT})"


@admin.register(Unit)
class UnitAdmin(SerialSearchMixin, ReadOnlyHistoryMixin, SimpleHistoryAdmin):
    list_display = ["serial", "kind", "line", "status", "status_reason", "produced_at"]
    list_filter = ["kind", "status", "line"]
    list_select_related = ["line", "line__site"]
    show_full_result_count = False  # no COUNT(*) over millions of cells per page view
    ordering = ["-id"]
    inlines = [UpstreamLinkInline, DownstreamLinkInline]
    fields = [
        "kind",
        "serial",
        "line",
        "status",
        "status_reason",
        "gtin",
        "batch_lot",
        "material",
        "supplier",
        "length_m",
        "produced_at",
        "created_at",
        "links_summary",
    ]
    # Identity and status are fixed here: status only through compliance services.
    readonly_fields = [
        "kind",
        "serial",
        "line",
        "status",
        "status_reason",
        "gtin",
        "batch_lot",
        "length_m",
        "produced_at",
        "created_at",
        "links_summary",
    ]

    def has_add_permission(self, request) -> bool:
        return False  # units come from stations and the API, through the services

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_formset_kwargs(self, request, obj, inline, prefix):
        """Show the first links only: a material lot feeds tens of thousands of cells."""
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, _LinkInline) and obj is not None:
            first = (
                Link.objects.filter(**{inline.fk_name: obj})
                .order_by("linked_at", "id")
                .values("pk")[:INLINE_LINKS_LIMIT]
            )
            kwargs["queryset"] = kwargs["queryset"].filter(pk__in=Subquery(first))
        return kwargs

    @admin.display(description="links")
    def links_summary(self, unit: Unit) -> str:
        if unit.pk is None:
            return "-"
        changelist = reverse("admin:genealogy_link_changelist")
        up = Link.objects.filter(target=unit).count()
        down = Link.objects.filter(source=unit).count()
        return format_html(
            '<a href="{}?{}">{} upstream</a> · <a href="{}?{}">{} downstream</a>',
            changelist,
            urlencode({"target__id__exact": unit.pk}),
            up,
            changelist,
            urlencode({"source__id__exact": unit.pk}),
            down,
        )


class LinkActiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("removed", "removed (rework)")]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        if self.value() == "active":
            return queryset.filter(removed_at__isnull=True)
        if self.value() == "removed":
            return queryset.filter(removed_at__isnull=False)
        return queryset


@admin.register(Link)
class LinkAdmin(SerialSearchMixin, ReadOnlyHistoryMixin, SimpleHistoryAdmin, AppendOnlyAdmin):
    """Genealogy edges, source upstream and target downstream; view-only."""

    serial_search_paths = ("source__serial", "target__serial")
    list_display = [
        "source",
        "target",
        "kind",
        "slot",
        "start_m",
        "end_m",
        "linked_at",
        "removed_at",
    ]
    list_filter = ["kind", LinkActiveFilter]
    list_select_related = ["source", "target"]
    show_full_result_count = False
    ordering = ["-id"]

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        if lookup in ("source__id__exact", "target__id__exact"):
            return True
        return super().lookup_allowed(lookup, value, request)


@admin.register(StationVisit)
class StationVisitAdmin(SerialSearchMixin, AppendOnlyAdmin):
    serial_search_paths = ("unit__serial",)
    list_display = ["unit", "station", "equipment", "started_at", "ended_at", "result"]
    list_filter = ["result", "station__line", "station__process_step"]
    list_select_related = ["unit", "station__line__site", "equipment__station__line__site"]
    show_full_result_count = False
    ordering = ["-id"]


@admin.register(Measurement)
class MeasurementAdmin(SerialSearchMixin, AppendOnlyAdmin):
    """Measured values: append-only, so view-only here."""

    serial_search_paths = ("unit__serial",)
    list_display = [
        "unit",
        "characteristic_code",
        "value",
        "value_unit",
        "in_spec",
        "measured_at",
        "station_code",
    ]
    list_filter = ["in_spec", "station__line", "characteristic"]
    list_select_related = ["unit", "characteristic", "station"]
    show_full_result_count = False
    ordering = ["-id"]

    @admin.display(description="characteristic", ordering="characteristic__code")
    def characteristic_code(self, m: Measurement) -> str:
        return m.characteristic.code

    @admin.display(description="unit of measure")
    def value_unit(self, m: Measurement) -> str:
        return m.characteristic.unit

    @admin.display(description="station")
    def station_code(self, m: Measurement) -> str:
        return m.station.code
