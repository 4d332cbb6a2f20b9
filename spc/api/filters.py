"""FilterSets for SPC alarms and limit versions, shared by the API and the web list pages."""

from __future__ import annotations

import django_filters

from qms.api.filters import StationRefFilter
from spc.choices import AlarmRule, AlarmSeverity, AlarmStatus, LimitsStatus
from spc.models import ControlLimits, SpcAlarm


class AlarmFilterSet(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=AlarmStatus.choices)
    severity = django_filters.ChoiceFilter(choices=AlarmSeverity.choices)
    rule = django_filters.MultipleChoiceFilter(choices=AlarmRule.choices)
    characteristic = django_filters.NumberFilter(
        field_name="characteristic_id", help_text="Characteristic id."
    )
    station = StationRefFilter(
        field_name="characteristic__station",
        help_text="Station id, line/station or site/line/station.",
    )
    since = django_filters.IsoDateTimeFilter(
        field_name="raised_at", lookup_expr="gte", help_text="Raised at or after (ISO 8601)."
    )

    class Meta:
        model = SpcAlarm
        fields = ["status", "severity", "rule", "characteristic", "station", "since"]


class LimitsFilterSet(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=LimitsStatus.choices)

    class Meta:
        model = ControlLimits
        fields = ["status"]
