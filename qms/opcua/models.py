"""OPC UA transport configuration: the station servers Celltrace subscribes to, and which of
their nodes mean what (serial, measurements of a characteristic, result, state, the
ResultReady event, the Stop method).

A quality or controls engineer edits these in the admin (with history); ``ingest_opcua``
reads them when it starts and connects to every enabled server.
"""

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from qms.models import Characteristic, Equipment, Station

from .choices import TRIGGER_ROLES, NodeRole, UnitKind

__all__ = ["OpcUaServer", "OpcUaNodeMap"]


class OpcUaServer(models.Model):
    """An OPC UA server on the shop floor (a station PLC, a cycler rack controller) and how
    to subscribe to it.

    ``name`` is part of every message id the transport makes
    (``opcua:<name>:<station>:<result id>``), so a result read twice is recognised as a
    duplicate; renaming a server makes results it still keeps look new.
    """

    name = models.SlugField(
        max_length=40,
        unique=True,
        help_text="Short, stable name; part of every message id. Do not rename in use.",
    )
    endpoint_url = models.CharField(
        max_length=300, help_text="e.g. opc.tcp://10.20.4.31:4840 (security mode None)."
    )
    namespace_uri = models.CharField(
        max_length=300,
        blank=True,
        help_text="Namespace of the station's nodes. Unqualified names in browse paths are "
        "looked up here first.",
    )
    station = models.ForeignKey(
        Station,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="opcua_servers",
        help_text="Station of every node map that names none (one server, one station).",
    )
    enabled = models.BooleanField(default=True)
    publishing_interval_ms = models.PositiveIntegerField(
        default=250,
        validators=[MinValueValidator(10)],
        help_text="OPC UA subscription publishing interval, ms.",
    )
    # Runtime status written by the client (not history: it is not an edit).
    last_connected_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    last_error_at = models.DateTimeField(null=True, blank=True, editable=False)
    history = HistoricalRecords(
        excluded_fields=["last_connected_at", "last_error", "last_error_at"]
    )

    class Meta:
        ordering = ["name"]
        verbose_name = "OPC UA server"
        constraints = [
            models.CheckConstraint(
                condition=Q(endpoint_url__startswith="opc.tcp://"),
                name="opcuaserver_endpoint_opc_tcp",
            ),
            models.CheckConstraint(
                condition=Q(publishing_interval_ms__gte=10),
                name="opcuaserver_publishing_interval_min",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.endpoint_url})"


class OpcUaNodeMap(models.Model):
    """One node of a server and what it means: a unit serial, the measurement of a
    characteristic (with the unit the server reports it in), the OK/NOK result, the station
    state, the object that fires ResultReady events, or the Stop / Resume method.

    ``node`` is a node id (``ns=2;s=...``, ``nsu=<namespace uri>;s=...``, ``i=2253``) or a
    browse path from the root (``/Objects/Machines/FILL-01/Process/FillMass``). Values that
    travel in a ResultReady event are taken from the event field ``event_field`` (default:
    the node's browse name, ``PartId`` for the serial, ``ResultEvaluation`` for the result),
    so they belong to the same unit even when the station is faster than the network.
    """

    server = models.ForeignKey(OpcUaServer, on_delete=models.CASCADE, related_name="node_maps")
    station = models.ForeignKey(
        Station,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="opcua_node_maps",
        help_text="Blank: the server's station.",
    )
    role = models.CharField(max_length=24, choices=NodeRole.choices)
    node = models.CharField(
        max_length=500,
        blank=True,
        help_text="Node id or browse path from the root. May be blank for a measurement that "
        "only travels in the ResultReady event (then event field is required).",
    )
    group = models.SlugField(
        max_length=32,
        blank=True,
        help_text="Nodes that make up one result, e.g. one cycler channel (data-change "
        "trigger). Blank: the station handles one unit at a time.",
    )
    event_type = models.CharField(
        max_length=500,
        blank=True,
        help_text="ResultReady event notifier only: node id or browse path of the event type "
        "(e.g. /Types/EventTypes/BaseEventType/ResultReadyEventType/FillResultReadyEventType).",
    )
    event_field = models.CharField(
        max_length=64,
        blank=True,
        help_text="Field of the ResultReady event that carries this value. Blank: the node's "
        "browse name (measurements), PartId (serial), ResultEvaluation (result).",
    )
    characteristic = models.ForeignKey(
        Characteristic,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="opcua_node_maps",
        help_text="Measurements only: the control-plan row the value is measured against.",
    )
    unit = models.CharField(
        max_length=24,
        blank=True,
        help_text="Unit the server reports the value in; must equal the characteristic's unit "
        "(no conversion). Blank: the characteristic's unit. A node's EngineeringUnits are "
        "checked against it when the client connects.",
    )
    equipment = models.ForeignKey(
        Equipment,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="opcua_node_maps",
        help_text="Trigger only: the machine whose results these are (recorded on each "
        "message for station + equipment + time-window traces).",
    )
    unit_kind = models.CharField(
        max_length=16,
        choices=UnitKind.choices,
        blank=True,
        help_text="Trigger only: the kind of unit the station reports on; an unknown serial "
        "is then created on its first visit. Blank: the unit must be known already.",
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["server", "station", "group", "role", "id"]
        verbose_name = "OPC UA node map"
        constraints = [
            models.CheckConstraint(
                condition=(Q(role=NodeRole.MEASUREMENT) & Q(characteristic__isnull=False))
                | (~Q(role=NodeRole.MEASUREMENT) & Q(characteristic__isnull=True)),
                name="opcuanodemap_characteristic_iff_measurement",
            ),
            models.CheckConstraint(
                condition=~Q(node="") | (Q(role=NodeRole.MEASUREMENT) & ~Q(event_field="")),
                name="opcuanodemap_node_or_event_field",
            ),
            models.CheckConstraint(
                condition=Q(role=NodeRole.RESULT_READY_EVENT) | Q(event_type=""),
                name="opcuanodemap_event_type_only_for_events",
            ),
            models.CheckConstraint(
                condition=Q(role__in=TRIGGER_ROLES) | Q(unit_kind="", equipment__isnull=True),
                name="opcuanodemap_unit_kind_equipment_on_trigger",
            ),
            models.UniqueConstraint(
                fields=["server", "station", "group", "role", "node", "characteristic"],
                name="opcuanodemap_unique",
            ),
        ]
        indexes = [models.Index(fields=["station", "role"], name="opcuanodemap_station_role")]

    def __str__(self) -> str:
        what = self.characteristic.code if self.characteristic_id else self.get_role_display()
        return f"{self.server.name}: {self.node or self.event_field} -> {what}"

    @property
    def effective_station(self) -> Station | None:
        return self.station if self.station_id else self.server.station

    def clean(self) -> None:
        errors: dict[str, str] = {}
        station = self.station if self.station_id else None
        if station is None and self.server_id and self.server.station_id:
            station = self.server.station
        if station is None:
            errors["station"] = "Name a station here or on the server."
        if self.role == NodeRole.MEASUREMENT:
            char = self.characteristic if self.characteristic_id else None
            if char is None:
                errors["characteristic"] = "A measurement needs its characteristic."
            else:
                if station is not None and char.station_id != station.pk:
                    errors["characteristic"] = (
                        f"{char.code} belongs to station {char.station}, not {station}."
                    )
                if self.unit and self.unit != char.unit:
                    errors["unit"] = (
                        f"The server reports {self.unit!r} but {char.code} is kept in "
                        f"{char.unit!r}; Celltrace does not convert units."
                    )
            if not self.node and not self.event_field:
                errors["node"] = "Give the node, the event field, or both."
        else:
            if self.characteristic_id:
                errors["characteristic"] = "Only measurements have a characteristic."
            if not self.node:
                errors["node"] = "This role needs a node."
        if self.role == NodeRole.RESULT_READY_EVENT and not self.event_type:
            errors["event_type"] = "Name the ResultReady event type to subscribe to."
        if self.role != NodeRole.RESULT_READY_EVENT and self.event_type:
            errors["event_type"] = "Only a ResultReady event notifier has an event type."
        if self.role not in TRIGGER_ROLES and (self.unit_kind or self.equipment_id):
            errors["unit_kind"] = "Unit kind and equipment belong on the trigger of a result."
        if self.equipment_id and station is not None and self.equipment.station_id != station.pk:
            errors["equipment"] = f"{self.equipment} is not at station {station}."
        if errors:
            raise ValidationError(errors)

    @property
    def expected_unit(self) -> str:
        if self.unit:
            return self.unit
        return self.characteristic.unit if self.characteristic_id else ""
