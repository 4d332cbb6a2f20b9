"""FilterSets for units and measurements, shared by the API and the web list pages.

Serial filters accept what a scanner reads (a GS1 element string is reduced to its AI 21
serial; a malformed one is a 400 naming the filter). Lines and stations are given as id or
code (see :mod:`qms.api.filters`).
"""

from __future__ import annotations

import django_filters

from genealogy.choices import UnitKind, UnitStatus
from genealogy.models import Measurement, Unit
from genealogy.serials import looks_like_gs1, parse_gs1
from qms.api.filters import LineRefFilter, StationRefFilter


def lookup_serial(value: str, *, field: str) -> str:
    """The serial to filter on for what was scanned or typed (GS1 reduced to AI 21)."""
    value = value.strip()
    return parse_gs1(value, field=field).serial if looks_like_gs1(value) else value


class UnitFilterSet(django_filters.FilterSet):
    kind = django_filters.MultipleChoiceFilter(choices=UnitKind.choices)
    status = django_filters.MultipleChoiceFilter(choices=UnitStatus.choices)
    line = LineRefFilter(field_name="line", help_text="Line id, code or site/code.")
    produced_after = django_filters.IsoDateTimeFilter(
        field_name="produced_at", lookup_expr="gte", help_text="Produced at or after (ISO 8601)."
    )
    produced_before = django_filters.IsoDateTimeFilter(
        field_name="produced_at", lookup_expr="lt", help_text="Produced before (ISO 8601)."
    )
    serial = django_filters.CharFilter(
        method="filter_serial", help_text="Exact serial, or a GS1 element string."
    )
    serial_prefix = django_filters.CharFilter(
        field_name="serial", lookup_expr="startswith", help_text="Serials starting with this."
    )

    class Meta:
        model = Unit
        fields = [
            "kind",
            "status",
            "line",
            "produced_after",
            "produced_before",
            "serial",
            "serial_prefix",
        ]

    def filter_serial(self, qs, name, value):
        return qs.filter(serial=lookup_serial(value, field=name))


class MeasurementFilterSet(django_filters.FilterSet):
    unit = django_filters.CharFilter(
        method="filter_unit", help_text="Unit serial, or a GS1 element string."
    )
    characteristic = django_filters.NumberFilter(
        field_name="characteristic_id", help_text="Characteristic id."
    )
    station = StationRefFilter(
        field_name="station", help_text="Station id, line/station or site/line/station."
    )
    line = LineRefFilter(field_name="station__line", help_text="Line id, code or site/code.")
    measured_after = django_filters.IsoDateTimeFilter(
        field_name="measured_at", lookup_expr="gte", help_text="Measured at or after (ISO 8601)."
    )
    measured_before = django_filters.IsoDateTimeFilter(
        field_name="measured_at", lookup_expr="lt", help_text="Measured before (ISO 8601)."
    )
    in_spec = django_filters.BooleanFilter()

    class Meta:
        model = Measurement
        fields = [
            "unit",
            "characteristic",
            "station",
            "line",
            "measured_after",
            "measured_before",
            "in_spec",
        ]

    def filter_unit(self, qs, name, value):
        return qs.filter(unit__serial=lookup_serial(value, field=name))
