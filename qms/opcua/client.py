"""OPC UA ingest client (``manage.py ingest_opcua``) and the Stop-method command sender.

For every enabled :class:`~qms.opcua.models.OpcUaServer` a :class:`StationClient` connects,
resolves the mapped nodes, and creates ONE subscription with

* an event monitored item per ResultReady notifier (``result_ready_event``): each event is
  one result, its values read from the event's fields;
* data-change monitored items for every mapped value node (serial, measurements, result,
  state): the latest values of a group, and for servers without events the trigger (a
  change of the ``result`` node, with a DataChangeFilter that also reports a rewrite of the
  same value, so OK after OK is two results).

Nothing is polled. Each result becomes a ``process_result`` envelope whose ``message_id``
is deterministic -- ``opcua:<server>:<station>:<ResultId>`` (or the source timestamp of the
result node) -- and goes to :func:`qms.ingest.services.ingest_raw` in batches, on one
database thread outside the event loop. A result read twice (initial values after a
reconnect, the event history overlapping live events) is a duplicate there, never applied
twice.

Nothing is lost while the client is away: on every (re)connect, after subscribing, it
reads the event history of each notifier from a little before the newest result already
applied (OPC UA Historical Access, ReadEventDetails) and applies what it missed, before the
live events that arrived meanwhile. A batch that cannot be committed (database away) is
retried with back-off and never dropped; if the process dies first, the history read of the
next start brings it back. Connection loss is retried with exponential back-off;
``stop`` (SIGTERM/SIGINT in the command) ends everything cleanly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import Client, ua
from asyncua.common.node import Node
from django.db import close_old_connections

from qms.ingest.envelope import build
from qms.ingest.services import Outcome, RawMessage, dead_letter_record, ingest_raw

from . import queries, services
from .choices import NodeRole
from .queries import MapConfig, ResultSource, ServerConfig

logger = logging.getLogger("celltrace.opcua")

TRANSPORT = "opcua"
#: The history is read from this long before the newest applied result (clock jitter,
#: results committed out of order within a batch).
HISTORY_MARGIN = timedelta(minutes=5)
#: Where the history is read from when nothing was applied from a station yet.
HISTORY_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
HISTORY_PAGE = 1000
#: Result Transfer's field names, used when a map names no event field.
FIELD_SERIAL, FIELD_RESULT, FIELD_RESULT_ID = "PartId", "ResultEvaluation", "ResultId"
FIELD_START, FIELD_END, FIELD_RECIPE = "StartTime", "EndTime", "ExternalRecipeId"
#: Client handles of our monitored items start here (asyncua numbers its own from 200).
HANDLE_BASE = 100_000


# --- Pure helpers (tested on their own) ---------------------------------------------------


def evaluation_of(value: Any) -> str | None:
    """OK/NOK from a ResultEvaluation (1 OK, 2 NotOK, 0 Undefined, 3 NotDecidable), a
    boolean or a text. Undefined and NotDecidable are ``nok``: such a cell is not released
    on a guess."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "ok" if value else "nok"
    if isinstance(value, int | float):
        return "ok" if int(value) == 1 else "nok"
    text = str(getattr(value, "Text", value)).strip().lower()
    if not text:
        return None
    return "ok" if text in ("ok", "1", "true", "pass", "passed", "good", "io") else "nok"


def message_id_for(server: str, station: str, result_key: str) -> str:
    """``opcua:<server>:<station>:<result key>``, printable ASCII, at most 128 characters
    (a longer key is replaced by its SHA-1, still deterministic)."""
    safe = "".join(ch if 0x21 <= ord(ch) <= 0x7E else "_" for ch in result_key)
    mid = f"{queries.message_id_prefix(server, station)}{safe}"
    if len(mid) > 128:
        digest = hashlib.sha1(result_key.encode()).hexdigest()  # noqa: S324  an id, not security
        mid = f"{queries.message_id_prefix(server, station)}sha1-{digest}"[:128]
    return mid


def timestamp_key(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def _aware(at: Any) -> datetime | None:
    if not isinstance(at, datetime):
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "Text", value) or "").strip()


@dataclass
class Snapshot:
    """The values of one result, however they arrived."""

    result_key: str
    sent_at: datetime
    serial: str
    evaluation: str | None
    values: dict[int, Any]
    started_at: datetime | None = None
    ended_at: datetime | None = None
    program: str = ""
    source_name: str = ""
    origin: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Built:
    """An envelope ready to ingest, or a reason it could not be built."""

    message_id: str
    raw: bytes
    origin: str
    error: str = ""
    error_field: str | None = None


def envelope_for(
    server: ServerConfig, source: ResultSource, snap: Snapshot, units: dict[int, str]
) -> Built:
    """The ``process_result`` envelope of a snapshot, or the reason there is none (a result
    without a serial or an evaluation cannot be applied; it goes to the dead letters)."""
    message_id = message_id_for(server.name, source.station.code, snap.result_key)
    if not snap.serial:
        return _unbuildable(message_id, snap, "The result carries no unit serial (PartId).", "unit")
    if snap.evaluation is None:
        return _unbuildable(
            message_id, snap, "The result carries no OK/NOK evaluation.", "payload.result"
        )
    measurements = []
    measured_at = (snap.ended_at or snap.sent_at).isoformat()
    for m in source.measurements:
        if m.id not in snap.values or snap.values[m.id] is None:
            what = m.event_field or m.node
            return _unbuildable(
                message_id,
                snap,
                f"The result has no value for {what} ({m.characteristic}).",
                f"payload.measurements.{m.characteristic}",
            )
        value = snap.values[m.id]
        number = _number(value)
        if number is None:
            return _unbuildable(
                message_id,
                snap,
                f"{m.characteristic}: {value!r} is not a number.",
                f"payload.measurements.{m.characteristic}",
            )
        measurements.append(
            {
                "characteristic": m.characteristic,
                "value": number,
                "unit": units.get(m.id, m.unit),
                "measured_at": measured_at,
            }
        )
    payload: dict[str, Any] = {"result": snap.evaluation, "measurements": measurements}
    if source.trigger.unit_kind:
        payload["unit_kind"] = source.trigger.unit_kind
    if snap.started_at:
        payload["started_at"] = snap.started_at.isoformat()
    if snap.ended_at:
        payload["ended_at"] = snap.ended_at.isoformat()
    if snap.program:
        payload["program"] = snap.program[:64]
    doc = build(
        kind="process_result",
        site=source.station.site,
        line=source.station.line,
        station=source.station.code,
        payload=payload,
        source=f"{server.name}/{snap.source_name}"[:120] if snap.source_name else server.name,
        message_id=message_id,
        sent_at=snap.sent_at,
        unit=snap.serial,
        equipment=source.trigger.equipment or None,
    )
    return Built(message_id, json.dumps(doc, separators=(",", ":")).encode(), snap.origin)


def _unbuildable(message_id: str, snap: Snapshot, reason: str, where: str) -> Built:
    raw = json.dumps(
        {"message_id": message_id, "sent_at": snap.sent_at.isoformat(), "fields": snap.raw},
        default=str,
        separators=(",", ":"),
    ).encode()
    return Built(message_id, raw, snap.origin, error=reason, error_field=where)


# --- Ingest: batches on one database thread -----------------------------------------------


@dataclass
class IngestStats:
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    skipped: int = 0
    batches: int = 0


class IngestWorker:
    """Collects built envelopes from every station client and applies them in batches
    (size- and time-bound) on a single database thread, outside the event loop. A batch is
    retried with back-off until it commits (the database may be away); it is never
    dropped."""

    def __init__(self, *, batch_size: int = 200, batch_wait_s: float = 0.1) -> None:
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.queue: asyncio.Queue[Built] = asyncio.Queue()
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="opcua-db")
        self.stats = IngestStats()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, message_id: str) -> bool:
        """True when this process already applied (or queued) ``message_id``: a re-read
        after a reconnect does not go to the database again."""
        if message_id in self._recent:
            self._recent.move_to_end(message_id)
            return True
        self._recent[message_id] = None
        if len(self._recent) > 50_000:
            self._recent.popitem(last=False)
        return False

    def submit(self, built: Built) -> None:
        if self.seen(built.message_id):
            with self._lock:
                self.stats.skipped += 1
            return
        self.queue.put_nowait(built)

    async def db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: _db_call(fn, *args, **kwargs))

    async def run(self, stop: asyncio.Event) -> None:
        while not (stop.is_set() and self.queue.empty()):
            batch = await self._next_batch(stop)
            if batch:
                await self._apply(batch, stop)

    async def _next_batch(self, stop: asyncio.Event) -> list[Built]:
        try:
            first = await asyncio.wait_for(self.queue.get(), timeout=0.2)
        except TimeoutError:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), timeout=remaining))
            except TimeoutError:
                break
        return batch

    async def _apply(self, batch: list[Built], stop: asyncio.Event) -> None:
        delay = 0.5
        while True:
            try:
                outcomes = await self.db(_ingest_batch, batch)
            except Exception as exc:
                if stop.is_set():
                    logger.error("stopping with %s results not applied: %s", len(batch), exc)
                    return  # read again from the event history on the next start
                logger.warning(
                    "ingest of %s results failed (%s); retry in %.1fs", len(batch), exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            break
        with self._lock:
            self.stats.batches += 1
            for outcome in outcomes:
                if outcome.status == "accepted":
                    self.stats.accepted += 1
                elif outcome.status == "duplicate":
                    self.stats.duplicate += 1
                else:
                    self.stats.rejected += 1
                    logger.warning("rejected %s: %s", outcome.message_id, outcome.reason)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.executor.submit(_close_db).result(timeout=5)
        self.executor.shutdown(wait=True)


def _db_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    close_old_connections()
    return fn(*args, **kwargs)


def _close_db() -> None:
    from django.db import connections

    connections.close_all()


def _ingest_batch(batch: list[Built]) -> list[Outcome]:
    """Apply a batch; results that could not even be built go to the dead letters."""
    good = [b for b in batch if not b.error]
    outcomes = ingest_raw(
        [RawMessage(payload=b.raw, transport=TRANSPORT, origin=b.origin) for b in good]
    )
    for b in batch:
        if b.error:
            entry = dead_letter_record(
                raw=b.raw,
                transport=TRANSPORT,
                origin=b.origin,
                reason=b.error,
                field=b.error_field,
                message_id=b.message_id,
                kind="process_result",
            )
            outcomes.append(Outcome("rejected", b.message_id, b.error, b.error_field, entry.pk))
    return outcomes


# --- Node resolution ----------------------------------------------------------------------


async def resolve_node(client: Client, spec: str, ns_index: int | None) -> Node:
    """A node from a node id (``ns=2;s=..``, ``nsu=<uri>;s=..``, ``i=85``) or a browse path
    from the root (``/Objects/Machines/FILL-01/Process/FillMass``). A path element
    ``2:Name`` is exact; a bare name matches the browse name in the server's namespace first,
    then namespace 0, then any."""
    spec = spec.strip()
    if spec.startswith("/"):
        node = client.nodes.root
        for name in (p for p in spec.split("/") if p):
            node = await _child(node, name, ns_index)
        return node
    nodeid = ua.NodeId.from_string(spec)
    uri = getattr(nodeid, "NamespaceUri", None)
    if uri:
        index = (await client.get_namespace_array()).index(uri)
        nodeid = ua.NodeId(nodeid.Identifier, index, nodeid.NodeIdType)
    return client.get_node(nodeid)


async def _child(node: Node, name: str, ns_index: int | None) -> Node:
    head, _, tail = name.partition(":")
    if tail and head.isdigit():
        return await node.get_child(ua.QualifiedName(tail, int(head)))
    found = [d for d in await node.get_children_descriptions() if d.BrowseName.Name == name]
    if not found:
        raise LookupError(f"no child {name!r} under {node.nodeid.to_string()}")
    for preferred in (ns_index, 0):
        for d in found:
            if d.BrowseName.NamespaceIndex == preferred:
                return Node(node.session, d.NodeId)
    return Node(node.session, found[0].NodeId)


# --- One server ---------------------------------------------------------------------------


@dataclass
class _Item:
    """What a data-change monitored item of ours stands for."""

    map: MapConfig
    source: ResultSource | None = None
    station: queries.StationRef | None = None


class StationClient:
    """Subscribes to one OPC UA server and turns its results into envelopes."""

    def __init__(
        self,
        config: ServerConfig,
        worker: IngestWorker,
        stop: asyncio.Event,
        *,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        timeout_s: float = 4.0,
    ) -> None:
        self.config = config
        self.worker = worker
        self.stop_event = stop
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.client: Client | None = None
        self.connections = 0
        self.states: dict[str, str] = {}
        self._lost: asyncio.Event | None = None
        self._items: dict[int, _Item] = {}
        self._values: dict[int, ua.DataValue] = {}
        self._units: dict[int, str] = {}
        self._field_names: dict[int, str] = {}
        self._event_types: dict[int, ua.NodeId] = {}
        self._event_items: dict[int, ResultSource] = {}
        self._pending: list[tuple[ResultSource, Any]] | None = None

    # -- lifecycle

    async def run(self) -> None:
        """Connect, subscribe, stay until the connection drops; again with back-off."""
        if self.config.problems:
            for problem in self.config.problems:
                logger.error("%s: %s", self.config.name, problem)
        delay = self.backoff_initial_s
        while not self.stop_event.is_set():
            try:
                await self._session()
                delay = self.backoff_initial_s
            except Exception as exc:
                logger.warning(
                    "%s (%s): %r; reconnect in %.1fs",
                    self.config.name,
                    self.config.endpoint_url,
                    exc,
                    delay,
                )
                with contextlib.suppress(Exception):
                    await self.worker.db(
                        services.opcua_server_status_set,
                        server_id=self.config.id,
                        connected=False,
                        error=f"{type(exc).__name__}: {exc}",
                    )
            if self.stop_event.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), timeout=delay)
            delay = min(delay * 2, self.backoff_max_s)

    async def _session(self) -> None:
        client = Client(self.config.endpoint_url, timeout=self.timeout_s, watchdog_intervall=1.0)
        client.application_uri = "urn:celltrace:qms:opcua-ingest"
        client.name = client.description = "Celltrace QMS ingest"
        self._lost = asyncio.Event()
        lost = self._lost

        async def on_lost(exc: Exception) -> None:
            logger.warning("%s: connection lost: %r", self.config.name, exc)
            lost.set()

        client.connection_lost_callback = on_lost
        await client.connect()
        self.client = client
        try:
            await self._subscribe(client)
            self.connections += 1
            await self.worker.db(
                services.opcua_server_status_set, server_id=self.config.id, connected=True
            )
            logger.info(
                "%s: subscribed to %s (%s result sources)",
                self.config.name,
                self.config.endpoint_url,
                len(self.config.sources),
            )
            stop_task = asyncio.ensure_future(self.stop_event.wait())
            lost_task = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({stop_task, lost_task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_task.cancel()
                lost_task.cancel()
            if lost.is_set() and not self.stop_event.is_set():
                raise ConnectionError("connection to the server lost")
        finally:
            self.client = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=self.timeout_s)

    def drop_connection(self) -> None:
        """Cut the network connection (what a cable pull does); the client reconnects."""
        if self.client is not None:
            self.client.disconnect_socket()

    # -- subscription

    async def _subscribe(self, client: Client) -> None:
        ns_index: int | None = None
        if self.config.namespace_uri:
            with contextlib.suppress(ValueError):
                ns_index = await client.get_namespace_index(self.config.namespace_uri)
        self._items, self._values, self._units, self._field_names = {}, {}, {}, {}
        self._event_types, self._event_items = {}, {}
        handle = HANDLE_BASE
        value_requests: list[ua.MonitoredItemCreateRequest] = []
        trigger_requests: list[ua.MonitoredItemCreateRequest] = []
        event_sources: list[tuple[ResultSource, Node, Node]] = []
        for source in self.config.sources:
            for m in source.value_maps:
                if not m.node:
                    continue
                node = await resolve_node(client, m.node, ns_index)
                if m.role == NodeRole.MEASUREMENT:
                    await self._check_unit(node, m)
                    if not m.event_field:
                        self._field_names[m.id] = (await node.read_browse_name()).Name
                handle += 1
                self._items[handle] = _Item(m, source)
                is_trigger = m.id == source.trigger.id
                request = _data_change_request(node, handle, timestamp_trigger=is_trigger)
                (trigger_requests if is_trigger else value_requests).append(request)
            if source.event_mode:
                notifier = await resolve_node(client, source.trigger.node, ns_index)
                etype = await resolve_node(client, source.trigger.event_type, ns_index)
                self._event_types[source.trigger.id] = etype.nodeid
                event_sources.append((source, notifier, etype))
        for station, m in self.config.states:
            node = await resolve_node(client, m.node, ns_index)
            handle += 1
            self._items[handle] = _Item(m, None, station)
            value_requests.append(_data_change_request(node, handle))

        sub = await client.create_subscription(self.config.publishing_interval_ms, self)
        self._pending = []  # live events wait until the history has been read
        if value_requests:
            _check_created(await sub.create_monitored_items(value_requests), "data change")
            # Seed the latest values before a result trigger can fire.
            nodes = [client.get_node(r.ItemToMonitor.NodeId) for r in value_requests]
            seeds = await client.read_attributes(nodes)
            for request, dv in zip(value_requests, seeds, strict=True):
                self._values[request.RequestedParameters.ClientHandle] = dv
        for source, notifier, etype in event_sources:
            handle_id = await sub.subscribe_events(notifier, etype)
            self._event_items[handle_id] = source
        if trigger_requests:
            _check_created(await sub.create_monitored_items(trigger_requests), "result trigger")
        try:
            for source, notifier, etype in event_sources:
                await self._read_history(source, notifier, etype)
        finally:
            pending, self._pending = self._pending, None
        for source, event in pending:
            self._on_event(source, event)

    async def _check_unit(self, node: Node, m: MapConfig) -> None:
        """The node's EngineeringUnits, when it has them, must be the expected unit; if not,
        its values go out with the node's unit so ingest refuses them with the reason."""
        try:
            eu_node = await node.get_child(ua.QualifiedName("EngineeringUnits", 0))
            eu = await eu_node.read_value()
        except Exception:
            return
        reported = _text(getattr(eu, "DisplayName", None))
        if reported and reported != m.unit:
            logger.error(
                "%s: %s reports %r, the control plan keeps %s in %r; its values will be refused",
                self.config.name,
                m.node,
                reported,
                m.characteristic,
                m.unit,
            )
            self._units[m.id] = reported

    async def _read_history(self, source: ResultSource, notifier: Node, etype: Node) -> None:
        """Apply the results the server kept while this client was away."""
        watermark = await self.worker.db(
            queries.opcua_watermark, server=self.config.name, station=source.station
        )
        since = (watermark - HISTORY_MARGIN) if watermark else HISTORY_EPOCH
        total = 0
        while True:
            try:
                events = await notifier.read_event_history(since, None, HISTORY_PAGE, [etype])
            except ua.UaStatusCodeError as exc:
                logger.info(
                    "%s: no event history on %s (%s)", self.config.name, source.trigger.node, exc
                )
                return
            total += sum(self._on_event(source, event) for event in events)
            if len(events) < HISTORY_PAGE:
                break
            newest = max((t for e in events if (t := _aware(e.Time))), default=since)
            if newest <= since:
                break  # a server that ignores the page size: do not read the same page again
            since = newest
        if total:
            logger.info(
                "%s: read %s results of %s from the event history",
                self.config.name,
                total,
                source.station.label,
            )

    # -- notifications (asyncua calls these; they must not block)

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        handle = data.monitored_item.ClientHandle
        item = self._items.get(handle)
        if item is None:
            return
        dv = data.monitored_item.Value
        self._values[handle] = dv
        m = item.map
        if m.role == NodeRole.STATE and item.station is not None:
            state = _text(val)
            key = f"{item.station.label}{'/' + m.group if m.group else ''}"
            if self.states.get(key) != state:
                logger.info("%s: %s is %s", self.config.name, key, state)
            self.states[key] = state
            return
        source = item.source
        if source is not None and not source.event_mode and m.id == source.trigger.id:
            # The values of the same publish (serial, measurements) may come after the result
            # in the notification; their handlers are already queued, so take the snapshot
            # once they have run.
            asyncio.get_running_loop().call_soon(self._on_result_change, source, dv)

    def event_notification(self, event: Any) -> None:
        source = self._event_items.get(getattr(event, "server_handle", None))
        if source is None:
            return
        if self._pending is not None:
            self._pending.append((source, event))
            return
        self._on_event(source, event)

    def status_change_notification(self, status: Any) -> None:
        logger.info("%s: subscription status %s", self.config.name, status)

    # -- snapshots

    def _latest(self, source: ResultSource) -> dict[int, Any]:
        values: dict[int, Any] = {}
        for handle, item in self._items.items():
            if item.source is source and handle in self._values:
                dv = self._values[handle]
                values[item.map.id] = dv.Value.Value if dv.Value is not None else None
        return values

    def _on_event(self, source: ResultSource, event: Any) -> bool:
        """Submit the result an event carries; False for another event type of the same
        notifier (a server need not apply the event filter to its history)."""
        expected = self._event_types.get(source.trigger.id)
        other_type = expected is not None and getattr(event, "EventType", expected) != expected
        if other_type and getattr(event, FIELD_RESULT_ID, None) is None:
            return False
        latest = self._latest(source)

        def pick(m: MapConfig | None, default_field: str) -> Any:
            name = (m.event_field if m else "") or default_field
            value = getattr(event, name, None) if name else None
            if value is None and m is not None:
                value = latest.get(m.id)
            return value

        values = {
            m.id: pick(m, m.event_field or self._field_names.get(m.id, ""))
            for m in source.measurements
        }
        sent_at = _aware(getattr(event, "Time", None)) or datetime.now(UTC)
        result_id = _text(getattr(event, FIELD_RESULT_ID, None))
        key = result_id if result_id and result_id != "NA" else timestamp_key(sent_at)
        raw = {
            name: getattr(event, name)
            for name in dir(event)
            if name[:1].isupper() and not callable(getattr(event, name, None))
        }
        snap = Snapshot(
            result_key=key,
            sent_at=sent_at,
            serial=_text(pick(source.serial, FIELD_SERIAL)),
            evaluation=evaluation_of(pick(source.result, FIELD_RESULT)),
            values=values,
            started_at=_aware(getattr(event, FIELD_START, None)),
            ended_at=_aware(getattr(event, FIELD_END, None)),
            program=_text(getattr(event, FIELD_RECIPE, None)),
            source_name=_text(getattr(event, "SourceName", None)),
            origin=f"{self.config.endpoint_url} {source.trigger.node}"[:300],
            raw=raw,
        )
        self._submit(source, snap)
        return True

    def _on_result_change(self, source: ResultSource, dv: ua.DataValue) -> None:
        evaluation = evaluation_of(dv.Value.Value if dv.Value is not None else None)
        if evaluation is None:
            return  # an empty result node: the station has no result yet
        at = _aware(dv.SourceTimestamp) or _aware(dv.ServerTimestamp)
        if at is None:
            logger.error(
                "%s: %s changed without a timestamp; result not taken",
                self.config.name,
                source.trigger.node,
            )
            return
        latest = self._latest(source)
        serial_map = source.serial
        snap = Snapshot(
            result_key=timestamp_key(at),
            sent_at=at,
            serial=_text(latest.get(serial_map.id)) if serial_map else "",
            evaluation=evaluation,
            values={m.id: latest.get(m.id) for m in source.measurements},
            ended_at=at,
            origin=f"{self.config.endpoint_url} {source.trigger.node}"[:300],
            raw={str(k): v for k, v in latest.items()},
        )
        self._submit(source, snap)

    def _submit(self, source: ResultSource, snap: Snapshot) -> None:
        try:
            built = envelope_for(self.config, source, snap, self._units)
        except Exception:  # a bug here must not stop the subscription
            logger.exception(
                "%s: could not build the envelope of %s", self.config.name, snap.result_key
            )
            return
        self.worker.submit(built)


def _data_change_request(
    node: Node, handle: int, *, timestamp_trigger: bool = False
) -> ua.MonitoredItemCreateRequest:
    rv = ua.ReadValueId()
    rv.NodeId = node.nodeid
    rv.AttributeId = ua.AttributeIds.Value
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = 0.0
    params.QueueSize = 10
    params.DiscardOldest = False
    if timestamp_trigger:
        # A result written again with the same value (OK after OK) is a new result.
        flt = ua.DataChangeFilter()
        flt.Trigger = ua.DataChangeTrigger.StatusValueTimestamp
        params.Filter = flt
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = rv
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request


def _check_created(results: list[Any], what: str) -> None:
    for result in results:
        if isinstance(result, ua.StatusCode):
            result.check()  # raises: the session is retried with back-off


# --- All servers --------------------------------------------------------------------------


async def run_clients(
    configs: list[ServerConfig],
    stop: asyncio.Event,
    *,
    worker: IngestWorker | None = None,
    on_start: Callable[[list[StationClient], IngestWorker], None] | None = None,
    backoff_initial_s: float = 1.0,
    backoff_max_s: float = 30.0,
) -> IngestStats:
    """Run a client per server and the ingest worker until ``stop`` is set."""
    worker = worker or IngestWorker()
    clients = [
        StationClient(
            c, worker, stop, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s
        )
        for c in configs
    ]
    if on_start is not None:
        on_start(clients, worker)
    tasks = [asyncio.create_task(c.run(), name=f"opcua-{c.config.name}") for c in clients]
    worker_task = asyncio.create_task(worker.run(stop), name="opcua-ingest")
    try:
        await stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
        await worker_task
    finally:
        for task in (*tasks, worker_task):
            task.cancel()
        worker.close()
    return worker.stats


class ClientThread:
    """``run_clients`` in a background thread with its own loop (tests, embedded demo)."""

    def __init__(self, configs: list[ServerConfig], **kwargs: Any) -> None:
        self.configs = configs
        self.kwargs = kwargs
        self.clients: list[StationClient] = []
        self.worker: IngestWorker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="opcua-client", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(self._amain())
        except BaseException as exc:
            self.error = exc
            self._started.set()

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        def started(clients: list[StationClient], worker: IngestWorker) -> None:
            self.clients, self.worker = clients, worker
            self._started.set()

        await run_clients(self.configs, self._stop, on_start=started, **self.kwargs)

    def start(self, timeout: float = 10.0) -> ClientThread:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the OPC UA client did not start")
        if self.error is not None:
            raise RuntimeError(f"the OPC UA client failed: {self.error!r}") from self.error
        return self

    @property
    def stats(self) -> IngestStats:
        if self.worker is None:
            raise RuntimeError("the OPC UA client is not started")
        return self.worker.stats

    def wait_for(self, predicate: Callable[[ClientThread], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def drop_connections(self) -> None:
        if self._loop is None:
            return
        for c in self.clients:
            self._loop.call_soon_threadsafe(c.drop_connection)

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the OPC UA client did not stop")

    def __enter__(self) -> ClientThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Commands out: the Stop method ---------------------------------------------------------


def _run_in_fresh_loop(coro_fn: Callable[[], Any], timeout: float) -> Any:
    """Run a coroutine on its own loop in its own thread (the caller may be inside a loop)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(asyncio.wait_for(coro_fn(), timeout))
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="opcua-command", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if thread.is_alive():
        raise TimeoutError(f"OPC UA call did not finish in {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


async def call_method(
    endpoint_url: str, namespace_uri: str, method: str, args: list[Any], *, timeout_s: float = 5.0
) -> str:
    """Call ``method`` (node id or browse path) on its parent object; return its node id."""
    client = Client(endpoint_url, timeout=timeout_s)
    client.application_uri = "urn:celltrace:qms:opcua-commands"
    await client.connect()
    try:
        ns_index = None
        if namespace_uri:
            with contextlib.suppress(ValueError):
                ns_index = await client.get_namespace_index(namespace_uri)
        node = await resolve_node(client, method, ns_index)
        parent = await node.get_parent()
        if parent is None:
            raise LookupError(f"{method} has no parent object to call it on")
        await parent.call_method(node, *args)
        return node.nodeid.to_string()
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


def send_command(command: Any, *, timeout_s: float = 10.0) -> str:
    """Sender of station commands over OPC UA (registered for "opcua" in apps.py).

    Line stop and hold call the station's Stop(Reason) method with the command's reason;
    release calls Resume(). Returns ``<endpoint> <method node id>``; raises when no method
    is mapped or the call fails (the command is then recorded as failed).
    """
    from qms.ingest.models import CommandKind

    role = NodeRole.RESUME_METHOD if command.kind == CommandKind.RELEASE else NodeRole.STOP_METHOD
    target = queries.opcua_method_target(station=command.station, role=role)
    if target is None:
        method = "Resume" if role == NodeRole.RESUME_METHOD else "Stop"
        raise LookupError(f"no OPC UA {method} method is mapped for station {command.station}")
    args = [] if role == NodeRole.RESUME_METHOD else [command.reason]
    node_id = _run_in_fresh_loop(
        lambda: call_method(target.endpoint_url, target.namespace_uri, target.node, args),
        timeout_s,
    )
    return f"{target.endpoint_url} {node_id}"[:300]
