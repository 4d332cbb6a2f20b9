"""FilterSets for risk scores, field returns and models, shared by the API and the pages."""

from __future__ import annotations

import django_filters

from ..choices import FailureMode, ModelState, ReturnLevel
from ..models import FieldReturn, RiskModel, RiskScore


class ScoreFilterSet(django_filters.FilterSet):
    cell = django_filters.CharFilter(field_name="unit__serial", help_text="Cell serial.")
    quarantined = django_filters.BooleanFilter()
    model_version = django_filters.CharFilter()
    min_risk = django_filters.NumberFilter(field_name="risk", lookup_expr="gte")
    since = django_filters.IsoDateTimeFilter(field_name="scored_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="scored_at", lookup_expr="lt")

    class Meta:
        model = RiskScore
        fields = ["cell", "quarantined", "model_version", "min_risk", "since", "until"]


class FieldReturnFilterSet(django_filters.FilterSet):
    failure_mode = django_filters.MultipleChoiceFilter(choices=FailureMode.choices)
    level = django_filters.ChoiceFilter(choices=ReturnLevel.choices)
    vin = django_filters.CharFilter(lookup_expr="iexact")
    pack = django_filters.CharFilter(field_name="pack__serial", help_text="Pack serial.")
    cell = django_filters.CharFilter(
        field_name="labels__unit__serial", help_text="A labelled cell."
    )
    since = django_filters.DateFilter(field_name="returned_on", lookup_expr="gte")
    until = django_filters.DateFilter(field_name="returned_on", lookup_expr="lt")

    class Meta:
        model = FieldReturn
        fields = ["failure_mode", "level", "vin", "pack", "cell", "since", "until"]


class ModelFilterSet(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=ModelState.choices)
    name = django_filters.CharFilter()

    class Meta:
        model = RiskModel
        fields = ["state", "name"]
