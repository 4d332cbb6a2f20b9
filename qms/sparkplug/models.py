"""Sparkplug B configuration (which device metric is which characteristic) and the state the
host application keeps per edge node (birth, death, rebirth requests), for people to see."""

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from qms.models import Characteristic, Station

from .choices import MetricRole, UnitKind

__all__ = ["SparkplugMetricMap", "SparkplugEdgeNode"]


class SparkplugMetricMap(models.Model):
    """Maps one Sparkplug metric of an edge node or device to a station visit.

    The metric is named as its birth certificate names it (``Fill/Mass``), under
    ``spBv1.0/<group_id>/DDATA/<edge_node_id>/<device_id>`` (``device_id`` blank for a node
    metric in NDATA). A DATA message that carries the metric of role ``serial`` becomes one
    ``process_result`` envelope for ``station``: the measurements, result, program and
    operator metrics of the same device go into it. ``unit`` is the engineering unit the
    edge node publishes a measurement in; it must equal the characteristic's unit, as values
    are never converted.
    """

    group_id = models.CharField(max_length=64, verbose_name="Sparkplug group id")
    edge_node_id = models.CharField(max_length=64, verbose_name="edge node id")
    device_id = models.CharField(
        max_length=64, blank=True, help_text="Blank for a metric of the edge node itself."
    )
    metric_name = models.CharField(
        max_length=200, help_text="Metric name as in the NBIRTH / DBIRTH, e.g. 'Fill/Mass'."
    )
    role = models.CharField(max_length=16, choices=MetricRole.choices)
    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="+")
    characteristic = models.ForeignKey(
        Characteristic,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Required for measurements; a characteristic of the station.",
    )
    unit = models.CharField(
        max_length=24,
        blank=True,
        help_text="Engineering unit of the published value (measurements): must equal the "
        "characteristic's unit; an engUnit property in the birth must match it too.",
    )
    unit_kind = models.CharField(
        max_length=16,
        choices=UnitKind.choices,
        blank=True,
        help_text="For the serial metric: the kind of unit it names (created on its first "
        "station visit when not known yet).",
    )
    is_active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        verbose_name = "Sparkplug metric mapping"
        ordering = ["group_id", "edge_node_id", "device_id", "metric_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["group_id", "edge_node_id", "device_id", "metric_name"],
                name="spb_metricmap_unique_metric",
            ),
            models.CheckConstraint(
                condition=(
                    Q(role=MetricRole.MEASUREMENT, characteristic__isnull=False) & ~Q(unit="")
                )
                | (~Q(role=MetricRole.MEASUREMENT) & Q(characteristic__isnull=True)),
                name="spb_metricmap_measurement_has_characteristic_and_unit",
            ),
            models.CheckConstraint(
                condition=Q(role=MetricRole.SERIAL) | Q(unit_kind=""),
                name="spb_metricmap_unit_kind_only_on_serial",
            ),
        ]
        indexes = [
            models.Index(fields=["group_id", "is_active"], name="spb_metricmap_group_idx"),
        ]

    def __str__(self) -> str:
        where = "/".join(p for p in (self.edge_node_id, self.device_id) if p)
        return f"{self.group_id}/{where}: {self.metric_name} -> {self.get_role_display()}"

    def clean(self) -> None:
        super().clean()
        errors = {}
        if self.characteristic_id and self.station_id:
            if self.characteristic.station_id != self.station_id:
                errors["characteristic"] = (
                    f"{self.characteristic.code} is a characteristic of "
                    f"{self.characteristic.station}, not of {self.station}."
                )
            elif self.unit and self.unit != self.characteristic.unit:
                errors["unit"] = (
                    f"{self.unit!r} is not the unit of {self.characteristic.code} "
                    f"({self.characteristic.unit!r}); values are not converted."
                )
        for name in ("group_id", "edge_node_id", "device_id"):
            value = getattr(self, name)
            if any(c in value for c in "+/#"):
                errors[name] = "Sparkplug ids cannot contain '+', '/' or '#'."
        if errors:
            raise ValidationError(errors)


class SparkplugEdgeNode(models.Model):
    """What the host application knows of one edge node: online or not, the bdSeq of its
    current session, its devices, and how often its stream had to be repaired (sequence
    gaps, unknown aliases, rebirth requests). Written on births, deaths and repairs only,
    never per data message."""

    group_id = models.CharField(max_length=64)
    edge_node_id = models.CharField(max_length=64)
    online = models.BooleanField(default=False)
    bd_seq = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Birth/death sequence of the current session."
    )
    last_birth_at = models.DateTimeField(null=True, blank=True)
    last_death_at = models.DateTimeField(null=True, blank=True)
    devices = models.JSONField(
        default=dict, blank=True, help_text="Device id -> online, birth time, metric count."
    )
    birth_metrics = models.JSONField(
        default=list, blank=True, help_text="Name, alias, datatype, device of born metrics."
    )
    seq_gaps = models.PositiveIntegerField(default=0)
    unknown_aliases = models.PositiveIntegerField(default=0)
    rebirth_requests = models.PositiveIntegerField(default=0)
    last_rebirth_request_at = models.DateTimeField(null=True, blank=True)
    last_rebirth_reason = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Sparkplug edge node"
        ordering = ["group_id", "edge_node_id"]
        constraints = [
            models.UniqueConstraint(fields=["group_id", "edge_node_id"], name="spb_edgenode_unique")
        ]

    def __str__(self) -> str:
        return f"{self.group_id}/{self.edge_node_id} ({'online' if self.online else 'offline'})"
