"""FilterSets for holds, shared by the API and the web list pages."""

from __future__ import annotations

import django_filters

from compliance.choices import HoldSource, HoldStatus
from compliance.models import Hold, HoldUnit
from genealogy.api.filters import lookup_serial


class HoldFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=HoldStatus.choices)
    source = django_filters.MultipleChoiceFilter(choices=HoldSource.choices)
    placed_after = django_filters.IsoDateTimeFilter(
        field_name="placed_at", lookup_expr="gte", help_text="Placed at or after (ISO 8601)."
    )
    placed_before = django_filters.IsoDateTimeFilter(
        field_name="placed_at", lookup_expr="lt", help_text="Placed before (ISO 8601)."
    )
    unit = django_filters.CharFilter(
        method="filter_unit", help_text="Holds covering this unit (serial or GS1 string)."
    )

    class Meta:
        model = Hold
        fields = ["status", "source", "placed_after", "placed_before", "unit"]

    def filter_unit(self, qs, name, value):
        serial = lookup_serial(value, field=name)
        return qs.filter(pk__in=HoldUnit.objects.filter(unit__serial=serial).values("hold_id"))
