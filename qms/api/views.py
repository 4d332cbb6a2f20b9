"""Read-only API for plant topology and the control plan (``/api/v1/plant/...``).

Master data is edited in the admin, with history; integrations read it here to map their
own identifiers to Celltrace ids (characteristic ids for measurements, station ids for the
interlock).
"""

from rest_framework import viewsets

from qms.models import Characteristic, Equipment, Line, Site, Station

from . import filters, serializers
from .pagination import OldestFirstCursorPagination


class _PlantViewSet(viewsets.ReadOnlyModelViewSet):
    pagination_class = OldestFirstCursorPagination


class SiteViewSet(_PlantViewSet):
    """Plants (gigafactories)."""

    queryset = Site.objects.all()
    serializer_class = serializers.SiteSerializer


class LineViewSet(_PlantViewSet):
    """Production lines, with cell format, identification method and serial scheme."""

    queryset = Line.objects.select_related("site")
    serializer_class = serializers.LineSerializer
    filterset_class = filters.LineFilterSet


class StationViewSet(_PlantViewSet):
    """Process steps on each line."""

    queryset = Station.objects.select_related("line", "line__site")
    serializer_class = serializers.StationSerializer
    filterset_class = filters.StationFilterSet


class EquipmentViewSet(_PlantViewSet):
    """Machines at stations."""

    queryset = Equipment.objects.select_related("station", "station__line")
    serializer_class = serializers.EquipmentSerializer
    filterset_class = filters.EquipmentFilterSet


class CharacteristicViewSet(_PlantViewSet):
    """The control plan: one row per measured characteristic, with its spec limits."""

    queryset = Characteristic.objects.select_related("station", "station__line")
    serializer_class = serializers.CharacteristicSerializer
    filterset_class = filters.CharacteristicFilterSet
