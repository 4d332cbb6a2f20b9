"""Plant filters and references to plant objects as people and PLCs write them.

A line is referred to by id, by code (``l1-pri``) or by ``site/line`` (``gf1/l1-pri``); a
station by id, by ``line/station`` (``l1-pri/fill``) or by ``site/line/station``. Codes are
unique per parent only, so a short reference that matches on two sites is refused as
ambiguous rather than guessed.
"""

from __future__ import annotations

import django_filters
from django.db.models import Q

from qms.choices import ProcessStep, SpecialCharacteristic
from qms.exceptions import InvalidInput, NotFound
from qms.models import Characteristic, Equipment, Line, Station


def _prefix(path: str) -> str:
    return f"{path}__" if path else ""


def line_q(ref: str, path: str = "line") -> Q:
    """A ``Q`` selecting rows whose ``path`` is the line ``ref`` (id, code or site/code).

    ``path=""`` selects the lines themselves.
    """
    p = _prefix(path)
    ref = ref.strip()
    if ref.isdigit():
        return Q(**{f"{p}id": int(ref)})
    if "/" in ref:
        site_code, _, line_code = ref.partition("/")
        return Q(**{f"{p}site__code": site_code, f"{p}code": line_code})
    return Q(**{f"{p}code": ref})


def station_q(ref: str, path: str = "station") -> Q:
    """A ``Q`` selecting rows whose ``path`` is the station ``ref`` (id, line/station,
    site/line/station, or a bare code). ``path=""`` selects the stations themselves."""
    p = _prefix(path)
    ref = ref.strip()
    if ref.isdigit():
        return Q(**{f"{p}id": int(ref)})
    parts = ref.split("/")
    if len(parts) == 3:
        return Q(
            **{
                f"{p}line__site__code": parts[0],
                f"{p}line__code": parts[1],
                f"{p}code": parts[2],
            }
        )
    if len(parts) == 2:
        return Q(**{f"{p}line__code": parts[0], f"{p}code": parts[1]})
    return Q(**{f"{p}code": ref})


def _one(qs, ref: str, *, what: str, field: str, hint: str):
    rows = list(qs[:2])
    if not rows:
        raise NotFound(f"No {what} {ref!r}.", field=field)
    if len(rows) > 1:
        raise InvalidInput(
            f"{what.capitalize()} {ref!r} is ambiguous; use {hint}.", field=field, code="ambiguous"
        )
    return rows[0]


def _required(ref, *, what: str, field: str) -> str:
    if ref is None or not str(ref).strip():
        raise InvalidInput(f"A {what} is required.", field=field, code="required")
    return str(ref).strip()


def line_from_ref(ref: str, *, field: str = "line") -> Line:
    """The line ``ref`` names, or :class:`NotFound` / ambiguous :class:`InvalidInput`."""
    ref = _required(ref, what="line", field=field)
    qs = Line.objects.select_related("site").filter(line_q(ref, path=""))
    return _one(qs, ref, what="line", field=field, hint="site/line")


def station_from_ref(ref: str, *, field: str = "station") -> Station:
    """The station ``ref`` names, or :class:`NotFound` / ambiguous :class:`InvalidInput`."""
    ref = _required(ref, what="station", field=field)
    qs = Station.objects.select_related("line", "line__site").filter(station_q(ref, path=""))
    return _one(qs, ref, what="station", field=field, hint="site/line/station")


class LineRefFilter(django_filters.CharFilter):
    """Filter on a line given as id, code or site/code."""

    def filter(self, qs, value):
        if value in (None, ""):
            return qs
        return qs.filter(line_q(value, path=self.field_name))


class StationRefFilter(django_filters.CharFilter):
    """Filter on a station given as id, line/station or site/line/station."""

    def filter(self, qs, value):
        if value in (None, ""):
            return qs
        return qs.filter(station_q(value, path=self.field_name))


class LineFilterSet(django_filters.FilterSet):
    site = django_filters.CharFilter(field_name="site__code", help_text="Site code.")

    class Meta:
        model = Line
        fields = ["site", "cell_format", "identification_method"]


class StationFilterSet(django_filters.FilterSet):
    line = LineRefFilter(field_name="line", help_text="Line id, code or site/code.")
    process_step = django_filters.ChoiceFilter(choices=ProcessStep.choices)

    class Meta:
        model = Station
        fields = ["line", "process_step"]


class EquipmentFilterSet(django_filters.FilterSet):
    line = LineRefFilter(field_name="station__line", help_text="Line id, code or site/code.")
    station = StationRefFilter(
        field_name="station", help_text="Station id, line/station or site/line/station."
    )

    class Meta:
        model = Equipment
        fields = ["line", "station"]


class CharacteristicFilterSet(django_filters.FilterSet):
    line = LineRefFilter(field_name="station__line", help_text="Line id, code or site/code.")
    station = StationRefFilter(
        field_name="station", help_text="Station id, line/station or site/line/station."
    )
    process_step = django_filters.ChoiceFilter(
        field_name="station__process_step", choices=ProcessStep.choices
    )
    special_class = django_filters.ChoiceFilter(choices=SpecialCharacteristic.choices)

    class Meta:
        model = Characteristic
        fields = ["line", "station", "process_step", "special_class", "is_active"]
