"""FilterSets for inspection results, defects and flags, shared by the API and the pages."""

from __future__ import annotations

import django_filters

from qms.api.filters import StationRefFilter

from ..choices import Decision, FlagAction, FlagKind, ModelState, ReviewState, Verdict
from ..models import CoilFlag, Defect, InspectionModel, InspectionResult
from ..schema import DEFECT_CLASSES


class ResultFilterSet(django_filters.FilterSet):
    verdict = django_filters.MultipleChoiceFilter(choices=Verdict.choices)
    station = StationRefFilter(
        field_name="camera__station", help_text="Station id, line/station or site/line/station."
    )
    camera = django_filters.CharFilter(field_name="camera__camera")
    coil = django_filters.CharFilter(field_name="coil__serial", help_text="Coil serial.")
    model_version = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="acquired_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="acquired_at", lookup_expr="lt")

    class Meta:
        model = InspectionResult
        fields = ["verdict", "station", "camera", "coil", "model_version", "since", "until"]


class DefectFilterSet(django_filters.FilterSet):
    cls = django_filters.MultipleChoiceFilter(
        choices=[(c, c) for c in DEFECT_CLASSES], label="class"
    )
    decision = django_filters.MultipleChoiceFilter(choices=Decision.choices)
    review_state = django_filters.MultipleChoiceFilter(choices=ReviewState.choices)
    station = StationRefFilter(
        field_name="result__camera__station",
        help_text="Station id, line/station or site/line/station.",
    )
    coil = django_filters.CharFilter(field_name="result__coil__serial", help_text="Coil serial.")
    min_md_m = django_filters.NumberFilter(field_name="md_m", lookup_expr="gte")
    max_md_m = django_filters.NumberFilter(field_name="md_m", lookup_expr="lt")
    since = django_filters.IsoDateTimeFilter(field_name="result__acquired_at", lookup_expr="gte")

    class Meta:
        model = Defect
        fields = ["cls", "decision", "review_state", "station", "coil", "since"]


class FlagFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=FlagKind.choices)
    action = django_filters.MultipleChoiceFilter(choices=FlagAction.choices)
    coil = django_filters.CharFilter(field_name="coil__serial", help_text="Coil serial.")
    open = django_filters.BooleanFilter(
        field_name="acknowledged_at", lookup_expr="isnull", help_text="Not acknowledged yet."
    )

    class Meta:
        model = CoilFlag
        fields = ["kind", "action", "coil", "open"]


class ModelFilterSet(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=ModelState.choices)
    name = django_filters.CharFilter()

    class Meta:
        model = InspectionModel
        fields = ["state", "name"]
