"""Serializers for holds, a unit's holds, and the station interlock."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from compliance.choices import AlarmDecision, AlarmReactionAction, HoldSource, HoldStatus
from compliance.models import AlarmReaction, Hold, HoldUnit
from genealogy.api.serializers import units_resolve
from genealogy.choices import UnitKind, UnitStatus
from genealogy.models import Unit
from qms.api.schema import NamedChoiceField

#: Units listed in a hold's detail; the rest are paged at ``holds/<number>/units/``.
DETAIL_UNITS_LIMIT = 1000

#: Most serials one hold request may name.
MAX_HOLD_SERIALS = 200_000


def _absolute(context: dict, path: str) -> str:
    request = context.get("request")
    return request.build_absolute_uri(path) if request else path


class HoldBriefSerializer(serializers.ModelSerializer):
    """What a station HMI shows about a hold."""

    source = NamedChoiceField(HoldSource, read_only=True)

    class Meta:
        model = Hold
        fields = ["number", "reason", "source", "source_reference", "placed_at"]


class HoldSerializer(serializers.ModelSerializer):
    """A hold on a set of units. ``status`` open or released; ``unit_count`` units covered."""

    status = NamedChoiceField(HoldStatus, read_only=True)
    source = NamedChoiceField(HoldSource, read_only=True)
    placed_by = serializers.CharField(source="placed_by.username", read_only=True)
    released_by = serializers.CharField(
        source="released_by.username", read_only=True, default=None, allow_null=True
    )
    unit_count = serializers.IntegerField(read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Hold
        fields = [
            "number",
            "status",
            "reason",
            "source",
            "source_reference",
            "placed_by",
            "placed_at",
            "released_by",
            "released_at",
            "release_reason",
            "unit_count",
            "url",
        ]

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Hold) -> str:
        return _absolute(self.context, reverse("hold-detail", kwargs={"number": obj.number}))


class HeldUnitSerializer(serializers.ModelSerializer):
    """A unit under a hold, with the status it returns to on release."""

    kind = NamedChoiceField(UnitKind, source="unit.kind", read_only=True)
    serial = serializers.CharField(source="unit.serial", read_only=True)
    status = NamedChoiceField(UnitStatus, source="unit.status", read_only=True)
    previous_status = NamedChoiceField(UnitStatus, read_only=True)

    class Meta:
        model = HoldUnit
        fields = ["kind", "serial", "status", "previous_status"]


class HoldDetailSerializer(HoldSerializer):
    """A hold with its units (the first 1000; all of them at ``units_url``)."""

    units = serializers.SerializerMethodField()
    units_url = serializers.SerializerMethodField()

    class Meta(HoldSerializer.Meta):
        fields = [*HoldSerializer.Meta.fields, "units", "units_url"]

    @extend_schema_field(HeldUnitSerializer(many=True))
    def get_units(self, obj: Hold) -> list:
        rows = obj.hold_units.select_related("unit").order_by("id")[:DETAIL_UNITS_LIMIT]
        return HeldUnitSerializer(rows, many=True).data

    @extend_schema_field(OpenApiTypes.URI)
    def get_units_url(self, obj: Hold) -> str:
        return _absolute(self.context, reverse("hold-units", kwargs={"number": obj.number}))


class HoldPlaceInputSerializer(serializers.Serializer):
    """Put units on hold by serial (GS1 strings accepted). Units already on hold stay on
    hold and remember the status they return to when their last hold ends."""

    units = serializers.ListField(
        child=serializers.CharField(max_length=200),
        allow_empty=False,
        max_length=MAX_HOLD_SERIALS,
        help_text="Serials of the units to hold.",
    )
    kind = NamedChoiceField(
        UnitKind,
        required=False,
        help_text="Only needed when two kinds share a serial.",
    )
    reason = serializers.CharField(help_text="Why, as the station and MRB will read it.")
    source = NamedChoiceField(HoldSource, default=HoldSource.MANUAL)
    source_reference = serializers.CharField(max_length=120, required=False, default="")

    def validate(self, attrs):
        attrs["units"] = units_resolve(
            attrs["units"], field_of=lambda i: f"units[{i}]", kind=attrs.pop("kind", None)
        )
        return attrs


class HoldReleaseInputSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="Disposition and evidence for the release.")


class UnitBriefSerializer(serializers.ModelSerializer):
    kind = NamedChoiceField(UnitKind, read_only=True)
    status = NamedChoiceField(UnitStatus, read_only=True)

    class Meta:
        model = Unit
        fields = ["id", "kind", "serial", "status", "status_reason"]


class UnitHoldsSerializer(serializers.Serializer):
    """A unit's holds: those open now, and every hold it was ever under (newest first)."""

    unit = UnitBriefSerializer()
    open_holds = HoldSerializer(many=True)
    holds = HoldSerializer(many=True)


class InterlockQuerySerializer(serializers.Serializer):
    unit = serializers.CharField(
        max_length=200, help_text="Serial or GS1 element string as the station read it."
    )
    station = serializers.CharField(
        max_length=120, help_text="Station id, line/station (l1-pri/fill) or site/line/station."
    )


class InterlockStationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    code = serializers.CharField()
    line_code = serializers.CharField(source="line.code")


class InterlockUnitSerializer(serializers.Serializer):
    kind = NamedChoiceField(UnitKind)
    serial = serializers.CharField()
    status = NamedChoiceField(UnitStatus)


class InterlockAnswerSerializer(serializers.Serializer):
    """May the unit enter the station? If not, ``reasons`` say why, for the HMI."""

    allowed = serializers.BooleanField()
    reasons = serializers.ListField(child=serializers.CharField())
    holds = HoldBriefSerializer(many=True, help_text="Open holds on the unit itself.")
    unit = InterlockUnitSerializer()
    station = InterlockStationSerializer()


class AlarmDispositionInputSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=AlarmDecision.choices)
    reason = serializers.CharField(help_text="Evidence and disposition.")
    cause = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="The assignable cause found; required when the alarm is not acknowledged.",
    )


class AlarmReactionSerializer(serializers.ModelSerializer):
    action = NamedChoiceField(AlarmReactionAction, read_only=True)
    hold = serializers.SlugRelatedField(slug_field="number", read_only=True)
    command = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = AlarmReaction
        fields = ["id", "alarm", "action", "hold", "command", "detail", "created_at"]
        read_only_fields = fields
