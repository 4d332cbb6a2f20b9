"""The metric mappings of one Sparkplug group, loaded once into memory for the host.

The host looks a metric up on every DATA message; a dict per (edge node, device) keeps that
free of queries. The command reloads it periodically and on births, so a mapping added in
the admin takes effect without a restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .models import SparkplugMetricMap


@dataclass(frozen=True)
class MappedMetric:
    """One active mapping row, with the codes an envelope needs."""

    edge_node_id: str
    device_id: str
    metric_name: str
    role: str
    site: str
    line: str
    station: str
    station_id: int
    characteristic: str = ""
    characteristic_unit: str = ""
    unit: str = ""
    unit_kind: str = ""


class MappingIndex:
    """Mappings per (edge node, device) -> metric name."""

    def __init__(self, group_id: str, rows: Iterable[MappedMetric] = ()):
        self.group_id = group_id
        self._by_source: dict[tuple[str, str], dict[str, MappedMetric]] = {}
        for row in rows:
            self._by_source.setdefault((row.edge_node_id, row.device_id), {})[row.metric_name] = row

    def for_source(self, edge_node_id: str, device_id: str) -> dict[str, MappedMetric]:
        return self._by_source.get((edge_node_id, device_id), {})

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_source.values())

    @classmethod
    def from_db(cls, group_id: str) -> MappingIndex:
        rows = (
            SparkplugMetricMap.objects.filter(group_id=group_id, is_active=True)
            .select_related("station__line__site", "characteristic")
            .order_by("pk")
        )
        return cls(
            group_id,
            (
                MappedMetric(
                    edge_node_id=r.edge_node_id,
                    device_id=r.device_id,
                    metric_name=r.metric_name,
                    role=r.role,
                    site=r.station.line.site.code,
                    line=r.station.line.code,
                    station=r.station.code,
                    station_id=r.station_id,
                    characteristic=r.characteristic.code if r.characteristic else "",
                    characteristic_unit=r.characteristic.unit if r.characteristic else "",
                    unit=r.unit,
                    unit_kind=r.unit_kind,
                )
                for r in rows
            ),
        )
