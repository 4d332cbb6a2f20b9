"""Writes of the OPC UA transport: the client's connection status, and the configuration
that connects Celltrace to the station simulator (``opcua_sim --configure``, tests)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from qms.choices import CommandTransport
from qms.exceptions import InvalidInput
from qms.models import Characteristic, Equipment, Station

from .choices import NodeRole, UnitKind
from .models import OpcUaNodeMap, OpcUaServer
from .simulator import NAMESPACE_URI


def opcua_server_status_set(*, server_id: int, connected: bool, error: str = "") -> None:
    """Record that the client connected (or why it could not). Runtime status, not an edit:
    no history row."""
    now = timezone.now()
    if connected:
        OpcUaServer.objects.filter(pk=server_id).update(last_connected_at=now, last_error="")
    else:
        OpcUaServer.objects.filter(pk=server_id).update(last_error=error[:2000], last_error_at=now)


@dataclass(frozen=True)
class SimStation:
    """A simulator machine and the station / characteristic / equipment it stands for."""

    station: Station
    characteristic: Characteristic
    machine: str
    equipment: Equipment | None = None


def _machine_path(machine: str) -> str:
    return f"/Objects/Machines/{machine}"


@transaction.atomic
def opcua_sim_configure(
    *,
    name: str,
    endpoint_url: str,
    actor: AbstractBaseUser,
    fill: SimStation | None = None,
    formation: SimStation | None = None,
    mode: str = "event",
    commands: bool = True,
    publishing_interval_ms: int = 100,
) -> OpcUaServer:
    """Create (or replace) the configuration of a server laid out like the simulator.

    ``mode="event"`` takes results from the ResultReady events (and reads missed ones from
    the event history); ``mode="datachange"`` takes the fill station's results from data
    changes of its Process nodes (for servers without events). With ``commands``, the
    stations' line-stop and hold commands go to the machines' Stop methods.
    """
    if mode not in ("event", "datachange"):
        raise InvalidInput(f"Unknown mode {mode!r}.", field="mode")
    if mode == "datachange" and formation is not None:
        raise InvalidInput("The formation rack reports results by event only.", field="mode")
    server, _ = OpcUaServer.objects.get_or_create(
        name=name, defaults={"endpoint_url": endpoint_url}
    )
    server.endpoint_url = endpoint_url
    server.namespace_uri = NAMESPACE_URI
    server.enabled = True
    server.publishing_interval_ms = publishing_interval_ms
    server.station = None
    server._history_user = actor
    server._change_reason = "configured for the station simulator"
    server.save()
    for old in server.node_maps.all():
        old._history_user = actor
        old._change_reason = "configured for the station simulator"
        old.delete()
    maps: list[OpcUaNodeMap] = []

    def add(station: Station, role: str, node: str = "", **kw) -> None:
        maps.append(OpcUaNodeMap(server=server, station=station, role=role, node=node, **kw))

    types = "/Types/EventTypes/BaseEventType/ResultReadyEventType/"
    if fill is not None:
        path, st = _machine_path(fill.machine), fill.station
        if mode == "event":
            add(
                st,
                NodeRole.RESULT_READY_EVENT,
                path,
                event_type=f"{types}FillResultReadyEventType",
                unit_kind=UnitKind.CELL,
                equipment=fill.equipment,
            )
        else:
            add(
                st,
                NodeRole.RESULT,
                f"{path}/Process/Result",
                unit_kind=UnitKind.CELL,
                equipment=fill.equipment,
            )
            add(st, NodeRole.SERIAL, f"{path}/Process/CurrentSerial")
        add(
            st,
            NodeRole.MEASUREMENT,
            f"{path}/Process/FillMass",
            characteristic=fill.characteristic,
            unit="g",
        )
        add(st, NodeRole.STATE, f"{path}/State")
        add(st, NodeRole.STOP_METHOD, f"{path}/Stop")
        add(st, NodeRole.RESUME_METHOD, f"{path}/Resume")
    if formation is not None:
        path, st = _machine_path(formation.machine), formation.station
        add(
            st,
            NodeRole.RESULT_READY_EVENT,
            path,
            event_type=f"{types}FormationResultReadyEventType",
            unit_kind=UnitKind.CELL,
            equipment=formation.equipment,
        )
        add(
            st,
            NodeRole.MEASUREMENT,
            event_field="ChargeCapacity",
            characteristic=formation.characteristic,
            unit="Ah",
        )
        add(st, NodeRole.STATE, f"{path}/State")
        add(st, NodeRole.STOP_METHOD, f"{path}/Stop")
        add(st, NodeRole.RESUME_METHOD, f"{path}/Resume")
    for m in maps:
        m.full_clean()
        m._history_user = actor
        m._change_reason = "configured for the station simulator"
        m.save()
    if commands:
        for sim_station in (fill, formation):
            if sim_station is None:
                continue
            station = sim_station.station
            if station.command_transport != CommandTransport.OPCUA:
                station.command_transport = CommandTransport.OPCUA
                station._history_user = actor
                station._change_reason = "commands over OPC UA (station simulator)"
                station.save(update_fields=["command_transport"])
    return server
