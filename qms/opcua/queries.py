"""Read side of the OPC UA transport: the configuration as plain, immutable values the
client's event loop can use without touching the ORM, the command target of a station, and
the watermark a reconnecting client reads missed results from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from qms.ingest.models import IngestMessage, Transport
from qms.models import Station

from .choices import NodeRole
from .models import OpcUaNodeMap, OpcUaServer


@dataclass(frozen=True)
class StationRef:
    id: int
    site: str
    line: str
    code: str

    @property
    def label(self) -> str:
        return f"{self.site}/{self.line}/{self.code}"


@dataclass(frozen=True)
class MapConfig:
    """One node map, resolved: ``characteristic`` is the code, ``unit`` the unit the server
    is expected to report (the map's, or the characteristic's)."""

    id: int
    role: str
    node: str
    group: str
    event_type: str = ""
    event_field: str = ""
    characteristic: str = ""
    unit: str = ""
    equipment: str = ""
    unit_kind: str = ""


@dataclass(frozen=True)
class ResultSource:
    """What makes one result: a station (and group, e.g. a cycler channel), its trigger
    (a ResultReady event notifier, or the result node), and the nodes of its values."""

    station: StationRef
    group: str
    trigger: MapConfig
    serial: MapConfig | None
    result: MapConfig | None
    measurements: tuple[MapConfig, ...]

    @property
    def event_mode(self) -> bool:
        return self.trigger.role == NodeRole.RESULT_READY_EVENT

    @property
    def value_maps(self) -> tuple[MapConfig, ...]:
        maps = [m for m in (self.serial, self.result) if m is not None]
        return (*maps, *self.measurements)


@dataclass(frozen=True)
class ServerConfig:
    id: int
    name: str
    endpoint_url: str
    namespace_uri: str
    publishing_interval_ms: int
    sources: tuple[ResultSource, ...]
    states: tuple[tuple[StationRef, MapConfig], ...] = ()
    problems: tuple[str, ...] = ()


def _station_ref(station: Station) -> StationRef:
    return StationRef(station.pk, station.line.site.code, station.line.code, station.code)


def _map_config(m: OpcUaNodeMap) -> MapConfig:
    return MapConfig(
        id=m.pk,
        role=m.role,
        node=m.node.strip(),
        group=m.group,
        event_type=m.event_type.strip(),
        event_field=m.event_field.strip(),
        characteristic=m.characteristic.code if m.characteristic_id else "",
        unit=m.expected_unit,
        equipment=m.equipment.code if m.equipment_id else "",
        unit_kind=m.unit_kind,
    )


def server_config(server: OpcUaServer) -> ServerConfig:
    """The server's node maps grouped into result sources. Groups without a trigger, or
    with two, are reported in ``problems`` (and left out) rather than guessed at."""
    maps = list(
        server.node_maps.select_related(
            "station__line__site", "characteristic", "equipment", "server__station__line__site"
        ).order_by("id")
    )
    groups: dict[tuple[int, str], list[OpcUaNodeMap]] = {}
    stations: dict[int, Station] = {}
    states: list[tuple[StationRef, MapConfig]] = []
    problems: list[str] = []
    for m in maps:
        station = m.effective_station
        if station is None:
            problems.append(f"node map {m.pk} ({m.node}) has no station")
            continue
        stations[station.pk] = station
        if m.role == NodeRole.STATE:
            states.append((_station_ref(station), _map_config(m)))
        elif m.role in (NodeRole.STOP_METHOD, NodeRole.RESUME_METHOD):
            continue
        else:
            groups.setdefault((station.pk, m.group), []).append(m)
    sources = []
    for (station_id, group), members in groups.items():
        ref = _station_ref(stations[station_id])
        triggers = [m for m in members if m.role == NodeRole.RESULT_READY_EVENT]
        if len(triggers) > 1:
            problems.append(f"{ref.label} group {group!r}: more than one ResultReady notifier")
            continue
        results = [m for m in members if m.role == NodeRole.RESULT]
        serials = [m for m in members if m.role == NodeRole.SERIAL]
        if len(results) > 1 or len(serials) > 1:
            problems.append(f"{ref.label} group {group!r}: more than one result or serial node")
            continue
        trigger = triggers[0] if triggers else (results[0] if results else None)
        if trigger is None:
            problems.append(f"{ref.label} group {group!r}: no ResultReady notifier or result node")
            continue
        if trigger.role == NodeRole.RESULT and not serials:
            problems.append(f"{ref.label} group {group!r}: a result node needs a serial node")
            continue
        sources.append(
            ResultSource(
                station=ref,
                group=group,
                trigger=_map_config(trigger),
                serial=_map_config(serials[0]) if serials else None,
                result=_map_config(results[0]) if results else None,
                measurements=tuple(
                    _map_config(m) for m in members if m.role == NodeRole.MEASUREMENT
                ),
            )
        )
    return ServerConfig(
        id=server.pk,
        name=server.name,
        endpoint_url=server.endpoint_url,
        namespace_uri=server.namespace_uri,
        publishing_interval_ms=server.publishing_interval_ms,
        sources=tuple(sources),
        states=tuple(states),
        problems=tuple(problems),
    )


def opcua_server_configs(*, names: list[str] | None = None) -> list[ServerConfig]:
    """Every enabled server (or the named ones) with its result sources."""
    servers = OpcUaServer.objects.filter(enabled=True).select_related("station__line__site")
    if names:
        servers = servers.filter(name__in=names)
    return [server_config(s) for s in servers.order_by("name")]


@dataclass(frozen=True)
class MethodTarget:
    server: str
    endpoint_url: str
    namespace_uri: str
    node: str


def opcua_method_target(*, station: Station, role: str) -> MethodTarget | None:
    """The Stop (or Resume) method mapped for ``station`` on an enabled server."""
    maps = (
        OpcUaNodeMap.objects.filter(role=role, server__enabled=True)
        .select_related("server")
        .order_by("server__name", "id")
    )
    m = (
        maps.filter(station=station).first()
        or maps.filter(station__isnull=True, server__station=station).first()
    )
    if m is None:
        return None
    return MethodTarget(m.server.name, m.server.endpoint_url, m.server.namespace_uri, m.node)


def message_id_prefix(server: str, station: str) -> str:
    return f"opcua:{server}:{station}:"


def opcua_watermark(*, server: str, station: StationRef) -> datetime | None:
    """The newest ``sent_at`` applied from this server and station: a reconnecting client
    reads the event history from a little before it. Walks the (station, sent_at) index
    from the newest message down to the first from this server."""
    return (
        IngestMessage.objects.filter(
            station_id=station.id,
            transport=Transport.OPCUA,
            message_id__startswith=message_id_prefix(server, station.code),
        )
        .order_by("-sent_at")
        .values_list("sent_at", flat=True)
        .first()
    )
