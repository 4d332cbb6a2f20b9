"""Serializers for plant topology and the control plan, and the reference fields other
apps' command serializers use to name a line, station or piece of equipment."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.fields import empty

from qms.exceptions import NotFound
from qms.models import Characteristic, Equipment, Line, Site, Station

from .filters import line_from_ref, station_from_ref


class DomainErrorSerializer(serializers.Serializer):
    """The body of a refused request (400 invalid, 404 not found, 409 refused)."""

    code = serializers.CharField(help_text="Stable machine-readable slug, e.g. segment_overlap.")
    detail = serializers.CharField(help_text="What is wrong, for a person or a station HMI.")
    field = serializers.CharField(
        required=False, help_text="The input field concerned, e.g. rows[17].value."
    )


class LineRefField(serializers.CharField):
    """A line given as id, code or ``site/code``; resolves to the :class:`Line`.

    Resolution runs after the text checks, so an unknown line is a 404 naming the field."""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "Line id, code (l1-pri) or site/code (gf1/l1-pri).")
        super().__init__(**kwargs)

    def run_validation(self, data=empty):
        value = super().run_validation(data)
        return line_from_ref(value, field=self.field_name) if value not in (None, "") else value

    def to_representation(self, value) -> str:
        return value.code if isinstance(value, Line) else str(value)


class StationRefField(serializers.CharField):
    """A station given as id, ``line/station`` or ``site/line/station``."""

    def __init__(self, **kwargs):
        kwargs.setdefault(
            "help_text", "Station id, line/station (l1-pri/fill) or site/line/station."
        )
        super().__init__(**kwargs)

    def run_validation(self, data=empty):
        value = super().run_validation(data)
        return station_from_ref(value, field=self.field_name) if value not in (None, "") else value

    def to_representation(self, value) -> str:
        return f"{value.line.code}/{value.code}" if isinstance(value, Station) else str(value)


class EquipmentRefField(serializers.IntegerField):
    """A piece of equipment given by id."""

    def run_validation(self, data=empty):
        pk = super().run_validation(data)
        if pk is None:
            return None
        equipment = Equipment.objects.select_related("station").filter(pk=pk).first()
        if equipment is None:
            raise NotFound(f"No equipment with id {pk}.", field=self.field_name)
        return equipment

    def to_representation(self, value) -> int:
        return value.pk if isinstance(value, Equipment) else int(value)


class SiteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Site
        fields = ["id", "code", "name", "country"]


class LineSerializer(serializers.ModelSerializer):
    site = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Line
        fields = [
            "id",
            "site",
            "code",
            "name",
            "cell_format",
            "identification_method",
            "serial_scheme",
            "gtin",
        ]


class StationSerializer(serializers.ModelSerializer):
    line_code = serializers.CharField(source="line.code", read_only=True)
    site_code = serializers.CharField(source="line.site.code", read_only=True)

    class Meta:
        model = Station
        fields = [
            "id",
            "line",
            "line_code",
            "site_code",
            "code",
            "name",
            "process_step",
            "sequence",
        ]


class EquipmentSerializer(serializers.ModelSerializer):
    station_code = serializers.CharField(source="station.code", read_only=True)
    line_code = serializers.CharField(source="station.line.code", read_only=True)

    class Meta:
        model = Equipment
        fields = [
            "id",
            "station",
            "station_code",
            "line_code",
            "code",
            "name",
            "manufacturer",
            "model_name",
            "serial_number",
        ]


class CharacteristicSerializer(serializers.ModelSerializer):
    """One control-plan row; ``nominal``, ``lsl`` and ``usl`` are in ``unit``."""

    station_code = serializers.CharField(source="station.code", read_only=True)
    line_code = serializers.CharField(source="station.line.code", read_only=True)
    process_step = serializers.CharField(source="station.process_step", read_only=True)

    class Meta:
        model = Characteristic
        fields = [
            "id",
            "station",
            "station_code",
            "line_code",
            "process_step",
            "code",
            "name",
            "unit",
            "nominal",
            "lsl",
            "usl",
            "measurement_method",
            "sample_size",
            "sample_frequency",
            "reaction_plan",
            "special_class",
            "is_active",
        ]
