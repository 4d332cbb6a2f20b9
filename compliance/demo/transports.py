"""Delivering the simulator's envelope stream through the real ingest paths.

A :class:`DeliveryPlan` is the stream (:mod:`compliance.demo.stream`) with the transport
faults asked for mixed in; :func:`deliver` hands it to a sink at a chosen rate:

* :class:`DirectSink`: :func:`qms.ingest.services.ingest_raw` in this process, in batches
  (transport ``direct``);
* :class:`RestSink`: ``POST /api/v1/ingest/`` of batches with an integration token; a call
  that fails on the way (connection, 5xx) is sent again as it was, which ingest answers with
  duplicates for what it had applied;
* :class:`MqttSink`: one MQTT 5 message per envelope at QoS 1 on
  ``qms/<site>/<line>/<station>/<kind>``, each held until the broker's PUBACK. When the
  broker goes away, paho reconnects with back-off and sends again what was not
  acknowledged; the sink then waits a few seconds before anything new, so the ingest
  workers subscribe first. A PUBACK saying *no matching subscribers* (Mosquitto 2.0 after a
  restart, before the workers are back, or with no worker at all) means the broker dropped
  the message: it is sent again, in stream order and before anything newer, until a worker
  takes it;
* :class:`OpcUaSink`: the results of the stations the OPC UA station simulator models (the
  electrolyte fill and the formation rack of L2-CYL) are served by an in-process simulator
  and read by the real client (:mod:`qms.opcua.client`) over ``opc.tcp`` on loopback, with
  the node maps ``opcua_sim --configure`` writes, held in memory for the run; everything
  else goes through a :class:`DirectSink`.

Faults (:func:`plan_delivery`): duplicates re-send a message already sent (same id);
out-of-order swaps neighbours that share no unit (``sent_at`` stays true); malformed sends
broken JSON or schema violations; unknown-serial sends a cell result for a serial nobody
made, without ``unit_kind``; broker-restart (MQTT only) runs a command half-way.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as mqtt
from asyncua import ua
from django.db import InterfaceError, OperationalError

from qms.ingest.services import ACCEPTED, DUPLICATE, REJECTED, RawMessage, ingest_raw
from qms.models import Characteristic
from qms.mqtt.broker import new_client, parse_url
from qms.opcua.choices import NodeRole
from qms.opcua.choices import UnitKind as OpcUaUnitKind
from qms.opcua.client import ClientThread
from qms.opcua.queries import MapConfig, ResultSource, ServerConfig, StationRef
from qms.opcua.simulator import (
    EVALUATION_NOT_OK,
    EVALUATION_OK,
    NAMESPACE_URI,
    FillProfile,
    RackProfile,
    SimConfig,
    SimulatorThread,
    StationSimulator,
)

from .stream import (
    MALFORMED_VARIANTS,
    Stream,
    StreamMessage,
    malformed_bytes,
    unknown_serial_message,
)

TRANSPORTS = ("direct", "rest", "mqtt", "opcua")
FAULTS = ("duplicates", "out-of-order", "malformed", "unknown-serial", "broker-restart")
#: What a fault named without ``=N`` amounts to.
DEFAULT_FAULT_COUNT = dict.fromkeys(FAULTS, 3) | {"broker-restart": 1}
DEFAULT_BROKER_RESTART_CMD = (
    "pkill -x mosquitto; sleep 1; mosquitto -d -c /etc/mosquitto/mosquitto.conf"
)
#: Rejections listed in the summary (all of them are in the dead-letter store).
REJECTIONS_SHOWN = 20
#: MQTT 5 PUBACK reason code: the broker had no subscriber for the topic and dropped it.
NO_MATCHING_SUBSCRIBERS = 16

#: Cell stations after winding: a result there names a cell that exists (or a misread).
_CELL_STATIONS = frozenset({"tabweld", "asm", "fill", "seal", "form", "aging", "grade"})

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class DeliveryError(RuntimeError):
    """The stream could not be delivered (the sink says what is missing)."""


# --- Faults and the delivery plan ---------------------------------------------------------


@dataclass(frozen=True)
class FaultSpec:
    """How much of one fault: ``count`` messages, or ``rate`` of the stream (at least one)."""

    name: str
    count: int | None = None
    rate: float | None = None

    def how_many(self, n_messages: int) -> int:
        if self.rate is not None:
            return max(1, round(self.rate * n_messages))
        return self.count if self.count is not None else DEFAULT_FAULT_COUNT[self.name]


def parse_faults(text: str | None) -> dict[str, FaultSpec]:
    """``duplicates=5,out-of-order=0.01,malformed,broker-restart``: a count (whole number), a
    rate (below 1) or the default per fault."""
    out: dict[str, FaultSpec] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, _, amount = part.partition("=")
        name = name.strip()
        if name not in FAULTS:
            raise ValueError(f"Unknown fault {name!r}; the faults are {', '.join(FAULTS)}.")
        if name in out:
            raise ValueError(f"Fault {name!r} is given twice.")
        amount = amount.strip()
        if not amount:
            out[name] = FaultSpec(name)
            continue
        try:
            number = float(amount)
        except ValueError:
            raise ValueError(f"{name}={amount!r}: give a count (5) or a rate (0.01).") from None
        if number.is_integer() and number >= 1:
            out[name] = FaultSpec(name, count=int(number))
        elif 0 < number < 1:
            out[name] = FaultSpec(name, rate=number)
        else:
            raise ValueError(f"{name}={amount}: a count is a whole number >= 1, a rate 0 < r < 1.")
    return out


@dataclass(frozen=True)
class Outgoing:
    """One message as a station sends it: the bytes and where they go."""

    payload: bytes
    site: str
    line: str
    station: str
    kind: str
    message_id: str
    fault: str = ""

    @classmethod
    def of(cls, message: StreamMessage, *, fault: str = "", payload: bytes | None = None):
        return cls(
            payload=message.encode() if payload is None else payload,
            site=message.site,
            line=message.line,
            station=message.station,
            kind=message.kind,
            message_id=message.message_id,
            fault=fault,
        )

    @property
    def topic(self) -> str:
        return f"qms/{self.site}/{self.line}/{self.station}/{self.kind}"

    def rest_element(self) -> object:
        """The element of a REST call: the envelope, or, for bytes that are not JSON, the
        text as a JSON string (a body must be JSON; ingest refuses the element alone)."""
        try:
            return json.loads(self.payload)
        except ValueError:
            return self.payload.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class BrokerRestart:
    """Run ``command`` at this point of the delivery (restarts the MQTT broker)."""

    command: str


@dataclass
class DeliveryPlan:
    items: list[Outgoing | BrokerRestart]
    injected: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def messages(self) -> list[Outgoing]:
        return [i for i in self.items if isinstance(i, Outgoing)]


def plan_delivery(
    stream: Stream,
    faults: Mapping[str, FaultSpec] | None = None,
    *,
    broker_restart_cmd: str = DEFAULT_BROKER_RESTART_CMD,
) -> DeliveryPlan:
    """The stream in delivery order with the faults mixed in, the same for the same stream
    and faults. Faults add messages (malformed, unknown serials, repeats) or swap two; the
    stream's own messages are all delivered."""
    faults = faults or {}
    base = list(stream.messages)
    n = len(base)
    first = base[0].message_id if base else ""
    rng = random.Random(f"{stream.seed}:faults:{first}")  # noqa: S311  simulation
    plan = DeliveryPlan(items=[])
    order = [Outgoing.of(m) for m in base]

    if "out-of-order" in faults and n > 1:
        # Neighbours that name no common unit: the later one depends on nothing the
        # earlier one does, so ingest applies both whichever comes first.
        candidates = [i for i in range(n - 1) if not base[i].serials & base[i + 1].serials]
        chosen: list[int] = []
        for i in rng.sample(candidates, len(candidates)):
            if all(abs(i - j) > 1 for j in chosen):
                chosen.append(i)
            if len(chosen) >= faults["out-of-order"].how_many(n):
                break
        for i in sorted(chosen):
            order[i], order[i + 1] = order[i + 1], order[i]
            plan.notes.append(
                f"out-of-order: {order[i].message_id} before {order[i + 1].message_id}"
            )
        plan.injected["out-of-order"] = len(chosen)

    after: dict[int, list[Outgoing]] = {}  # extra messages, sent after position i
    if "duplicates" in faults and n:
        k = min(faults["duplicates"].how_many(n), n)
        for i in sorted(rng.sample(range(n), k)):
            # Sent again a little later, as a station does after a lost acknowledgement.
            j = min(n - 1, i + rng.randrange(1, 30))
            original = order[i]
            after.setdefault(j, []).append(replace(original, fault="duplicate"))
            plan.notes.append(f"duplicate: {original.message_id}")
        plan.injected["duplicates"] = k

    templates = [
        i
        for i, m in enumerate(base)
        if m.kind == "process_result" and m.doc["payload"].get("measurements")
    ]
    if "malformed" in faults and templates:
        k = faults["malformed"].how_many(n)
        for x, i in enumerate(sorted(rng.choice(templates) for _ in range(k))):
            variant = MALFORMED_VARIANTS[x % len(MALFORMED_VARIANTS)]
            mid = f"{base[i].message_id}.malformed-{x + 1}"
            raw = malformed_bytes(base[i], variant, message_id=mid)
            broken = Outgoing.of(base[i], fault=f"malformed ({variant})", payload=raw)
            after.setdefault(i, []).append(replace(broken, message_id=mid))
            plan.notes.append(f"malformed ({variant}): {mid}")
        plan.injected["malformed"] = k

    cell_results = [i for i in templates if base[i].station in _CELL_STATIONS]
    if "unknown-serial" in faults and cell_results:
        k = faults["unknown-serial"].how_many(n)
        for x, i in enumerate(sorted(rng.choice(cell_results) for _ in range(k))):
            mid = f"{base[i].message_id}.unknown-{x + 1}"
            message = unknown_serial_message(base[i], number=x + 1, message_id=mid)
            after.setdefault(i, []).append(Outgoing.of(message, fault="unknown-serial"))
            plan.notes.append(f"unknown serial {message.doc['unit']}: {mid}")
        plan.injected["unknown-serial"] = k

    for i, item in enumerate(order):
        plan.items.append(item)
        plan.items.extend(after.get(i, ()))

    if "broker-restart" in faults:
        k = faults["broker-restart"].how_many(n)
        total = len(plan.items)
        for r in reversed(range(k)):
            plan.items.insert((r + 1) * total // (k + 1), BrokerRestart(broker_restart_cmd))
        plan.injected["broker-restart"] = k
    return plan


# --- Pacing and the delivery loop ---------------------------------------------------------


class Pacer:
    """Spaces messages at ``rate`` per second (0: as fast as the sink takes them). After a
    stall (a reconnect) it goes on at the rate instead of bursting to catch up."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate < 0:
            raise ValueError("The rate cannot be negative.")
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        if not self.rate:
            return
        now = self.clock()
        if self._next is None or now - self._next > 1.0:
            self._next = now
        elif self._next > now:
            self.sleep(self._next - now)
        self._next += 1.0 / self.rate


@dataclass
class DeliveryReport:
    """What was handed to the sink: stream messages per kind, faults, broker restarts."""

    sent: int = 0
    by_kind: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    restarts: int = 0
    elapsed_s: float = 0.0


def deliver(
    plan: DeliveryPlan,
    sink: Sink,
    *,
    rate: float = 0.0,
    log: Log = _quiet,
    progress_every_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryReport:
    """Send every item of ``plan`` through ``sink`` at ``rate`` messages per second, run
    the broker restarts where they fall, and wait until the sink has delivered everything
    (:meth:`Sink.close`). The sink is shut down in any case."""
    pacer = Pacer(rate, clock=clock, sleep=sleep)
    report = DeliveryReport(faults=Counter(plan.injected))
    total = len(plan.messages)
    started = last_log = clock()
    try:
        for item in plan.items:
            if isinstance(item, BrokerRestart):
                sink.restart_broker(item.command)
                report.restarts += 1
                continue
            pacer.wait()
            sink.send(item)
            report.sent += 1
            if not item.fault:
                report.by_kind[item.kind] += 1
            if clock() - last_log >= progress_every_s:
                last_log = clock()
                log(f"{report.sent:,} of {total:,} messages sent")
        sink.close()
    finally:
        sink.shutdown()
        report.elapsed_s = clock() - started
    return report


# --- Sinks ----------------------------------------------------------------------------------


class Sink:
    """Takes the messages of a delivery. ``outcomes`` counts what ingest answered, for the
    sinks that get an answer (direct, REST, the OPC UA client)."""

    transport = ""

    def __init__(self, *, log: Log = _quiet):
        self.log = log
        self.outcomes: Counter = Counter()
        self.rejections: list[tuple[str, str]] = []

    def send(self, item: Outgoing) -> None:
        raise NotImplementedError

    def restart_broker(self, command: str) -> None:
        raise DeliveryError(f"A broker restart needs the MQTT transport, not {self.transport}.")

    def close(self) -> None:
        """Deliver what is still held; raise :class:`DeliveryError` if that cannot be done."""

    def shutdown(self) -> None:
        """Release connections and threads (after :meth:`close`, or after a failure)."""

    def report(self) -> list[str]:
        """Lines for the summary."""
        if not self.outcomes:
            return []
        lines = [
            "Ingest answered: "
            + ", ".join(f"{self.outcomes[s]:,} {s}" for s in (ACCEPTED, DUPLICATE, REJECTED))
        ]
        shown = self.rejections[:REJECTIONS_SHOWN]
        lines += [f"    rejected {mid or '(no message id)'}: {why}" for mid, why in shown]
        if len(self.rejections) > len(shown):
            more = len(self.rejections) - len(shown)
            lines.append(f"    ... and {more:,} more (the dead letters in the admin)")
        return lines

    def _count(self, statuses: Sequence[tuple[str, str, str]]) -> None:
        for status, message_id, reason in statuses:
            self.outcomes[status] += 1
            if status == REJECTED:
                self.rejections.append((message_id, reason))


class _BatchingSink(Sink):
    """Collects messages into batches: full at ``batch_size``, or ``max_wait_s`` after its
    first message when messages come slowly (a paced stream)."""

    def __init__(
        self,
        *,
        batch_size: int = 500,
        max_wait_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        log: Log = _quiet,
    ):
        super().__init__(log=log)
        if batch_size < 1:
            raise ValueError("The batch size must be at least 1.")
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.batches = 0
        self._buffer: list[Outgoing] = []
        self._first_at = 0.0

    def send(self, item: Outgoing) -> None:
        if not self._buffer:
            self._first_at = self.clock()
        self._buffer.append(item)
        if len(self._buffer) >= self.batch_size or (
            self.clock() - self._first_at >= self.max_wait_s
        ):
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        self._count(self._apply(batch))
        self.batches += 1

    def close(self) -> None:
        self.flush()

    def _apply(self, batch: list[Outgoing]) -> list[tuple[str, str, str]]:
        raise NotImplementedError


class DirectSink(_BatchingSink):
    """:func:`ingest_raw` in this process, one transaction per batch (transport ``direct``).
    A batch that cannot be committed (the database is locked or away) is tried again: it
    was rolled back as a whole."""

    transport = "direct"

    def __init__(self, *, retries: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.retries = retries

    def _apply(self, batch: list[Outgoing]) -> list[tuple[str, str, str]]:
        messages = [
            RawMessage(payload=o.payload, transport="direct", origin=f"simulate {o.topic}")
            for o in batch
        ]
        delay = 0.2
        for attempt in range(self.retries + 1):
            try:
                outcomes = ingest_raw(messages)
            except (OperationalError, InterfaceError) as exc:
                if attempt == self.retries:
                    raise DeliveryError(f"ingest failed {attempt + 1} times: {exc}") from exc
                self.log(f"ingest of {len(batch)} messages failed ({exc}); again in {delay:g} s")
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            return [(o.status, o.message_id, o.reason) for o in outcomes]
        raise AssertionError("unreachable")


def ingest_url(url: str) -> str:
    """``--url`` as the ingest endpoint: a bare server address gets ``/api/v1/ingest/``."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http:// or https:// URL.")
    path = parts.path if parts.path not in ("", "/") else "/api/v1/ingest/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _urllib_post(url: str, body: bytes, headers: dict, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310  http(s) only
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class RestSink(_BatchingSink):
    """``POST /api/v1/ingest/`` of each batch with ``Authorization: Token <token>``. A call
    that fails on the way (no connection, a 5xx) is sent again unchanged with back-off: what
    the server had applied comes back as duplicates. A 4xx (bad token, a refused body) stops
    the delivery with the server's answer."""

    transport = "rest"

    def __init__(
        self,
        *,
        url: str,
        token: str,
        timeout_s: float = 120.0,
        retries: int = 8,
        post: Callable[[str, bytes, dict, float], tuple[int, bytes]] = _urllib_post,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.url = ingest_url(url)
        self.token = token
        self.timeout_s = timeout_s
        self.retries = retries
        self.post = post
        self.calls = 0

    def _apply(self, batch: list[Outgoing]) -> list[tuple[str, str, str]]:
        body = json.dumps(
            {"messages": [o.rest_element() for o in batch]}, separators=(",", ":")
        ).encode()
        headers = {
            "Authorization": f"Token {self.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        delay = 0.5
        for attempt in range(self.retries + 1):
            self.calls += 1
            try:
                status, raw = self.post(self.url, body, headers, self.timeout_s)
            except (OSError, urllib.error.URLError) as exc:
                status, raw = 0, str(exc).encode()
            if status == 200:
                answer = json.loads(raw)
                return [(r["status"], r["message_id"], r["reason"]) for r in answer["results"]]
            if 400 <= status < 500:
                text = raw.decode("utf-8", errors="replace")[:500]
                raise DeliveryError(f"{self.url} refused the call: HTTP {status}: {text}")
            if attempt == self.retries:
                break
            what = f"HTTP {status}" if status else raw.decode(errors="replace")
            self.log(f"POST {self.url} failed ({what}); the same call again in {delay:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise DeliveryError(f"POST {self.url} failed {self.retries + 1} times; stopped.")


@dataclass
class MqttStats:
    published: int = 0
    acknowledged: int = 0
    no_subscriber: int = 0
    connects: int = 0
    disconnects: int = 0
    restarts: list[str] = field(default_factory=list)


class MqttSink(Sink):
    """One message per envelope at QoS 1 on its station's topic, held until the broker's
    PUBACK. See the module docstring for reconnects and *no matching subscribers*.

    At most ``window`` messages are unacknowledged at a time; after every (re)connect, and
    while the broker drops messages for want of a subscriber, only one, until the broker
    takes one. ``settle_s`` after a reconnect nothing new is sent (the ingest workers
    reconnect and subscribe first). ``stall_timeout_s`` without a single acknowledgement
    ends the delivery with :class:`DeliveryError`.
    """

    transport = "mqtt"

    def __init__(
        self,
        url: str,
        *,
        client_id: str | None = None,
        window: int = 100,
        settle_s: float = 3.0,
        retry_max_s: float = 30.0,
        stall_timeout_s: float = 300.0,
        log: Log = _quiet,
    ):
        super().__init__(log=log)
        self.address = parse_url(url)
        self.window = max(1, window)
        self.settle_s = settle_s
        self.retry_max_s = retry_max_s
        self.stall_timeout_s = stall_timeout_s
        self.stats = MqttStats()
        self._cond = threading.Condition()
        self._acks: dict[int, mqtt.ReasonCode] = {}
        self._in_flight: dict[int, tuple[int, Outgoing]] = {}
        self._queue: deque[tuple[int, Outgoing]] = deque()
        self._retry: list[tuple[int, Outgoing]] = []
        self._refused: str = ""
        self._connected = False
        self._closing = False
        self._probing = True
        self._resume_at = 0.0
        self._backoff = 1.0
        self._seq = 0
        self._last_progress = time.monotonic()
        client_id = client_id or f"celltrace-sim-{socket.gethostname()}-{os.getpid()}"
        self.client = new_client(self.address, client_id=client_id)
        self.client.reconnect_delay_set(1, 30)
        self.client.max_inflight_messages_set(self.window)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        # connect_async: paho's thread connects, and retries with back-off if it cannot.
        self.client.connect_async(self.address.host, self.address.port, keepalive=10)
        self.client.loop_start()

    # paho's network thread calls these with its own locks held: they only take ours, and
    # this class never calls into paho while holding it.

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.log(f"the broker at {self.address} refused the connection: {reason_code}")
            return
        with self._cond:
            self._connected = True
            self.stats.connects += 1
            self._probing = True
            if self.stats.connects > 1:
                self._resume_at = time.monotonic() + self.settle_s
                self.log(f"reconnected to {self.address}; new messages in {self.settle_s:g} s")
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            if self._connected and not self._closing:
                self.stats.disconnects += 1
                self.log(f"lost the broker at {self.address} ({reason_code}); reconnecting")
            self._connected = False
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._acks[mid] = reason_code
            self._cond.notify_all()

    # -- the main thread

    def _reconcile(self) -> None:
        """Match PUBACKs to what is in flight (call with the lock held)."""
        for mid in [m for m in self._acks if m in self._in_flight]:
            reason = self._acks.pop(mid)
            seq, item = self._in_flight.pop(mid)
            if reason.value == NO_MATCHING_SUBSCRIBERS:
                self.stats.no_subscriber += 1
                self._retry.append((seq, item))
            elif reason.is_failure:
                self._refused = f"{item.message_id} on {item.topic}: {reason}"
            else:
                self.stats.acknowledged += 1
                self._probing = False
                self._backoff = 1.0
                self._last_progress = time.monotonic()

    def _pump(self, *, drain: bool) -> None:
        """Publish from the queue while the window allows; return when the queue is empty
        (``drain``: and every message is acknowledged)."""
        while True:
            with self._cond:
                self._reconcile()
                if self._refused:
                    raise DeliveryError(f"The broker refused {self._refused}.")
                if self._retry and not self._in_flight:
                    # Everything out has been answered: what the broker dropped goes first,
                    # in stream order, one at a time until a subscriber takes it.
                    self._retry.sort(key=lambda entry: entry[0])
                    self._queue.extendleft(reversed(self._retry))
                    self.log(
                        f"no subscriber took {len(self._retry)} messages (are the ingest "
                        f"workers running?); sending them again in {self._backoff:g} s"
                    )
                    self._retry.clear()
                    self._resume_at = max(self._resume_at, time.monotonic() + self._backoff)
                    self._backoff = min(self._backoff * 2, self.retry_max_s)
                    self._probing = True
                idle = not self._in_flight and not self._retry
                if not self._queue and (not drain or idle):
                    return
                now = time.monotonic()
                window = 1 if self._probing else self.window
                ready = (
                    self._queue
                    and self._connected
                    and now >= self._resume_at
                    and not self._retry
                    and len(self._in_flight) < window
                )
                if not ready:
                    if now - self._last_progress > self.stall_timeout_s:
                        waiting = len(self._queue) + len(self._in_flight) + len(self._retry)
                        raise DeliveryError(
                            f"No acknowledgement from {self.address} for "
                            f"{self.stall_timeout_s:g} s; {waiting} messages not delivered."
                        )
                    self._cond.wait(timeout=min(0.5, max(0.01, self._resume_at - now)))
                    continue
                seq, item = self._queue.popleft()
            info = self.client.publish(item.topic, item.payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise DeliveryError(
                    f"Cannot publish {item.message_id}: {mqtt.error_string(info.rc)}"
                )
            with self._cond:
                # Not connected (NO_CONN): paho keeps it and sends it when it reconnects.
                self._in_flight[info.mid] = (seq, item)
                self.stats.published += 1
                self._reconcile()

    def send(self, item: Outgoing) -> None:
        with self._cond:
            self._seq += 1
            self._queue.append((self._seq, item))
        self._pump(drain=False)

    def restart_broker(self, command: str) -> None:
        self.log(f"restarting the broker: {command}")
        try:
            done = subprocess.run(  # noqa: S602  the operator's own command line, run as given
                command, shell=True, capture_output=True, text=True, timeout=120, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DeliveryError(f"The broker restart command ran over 120 s: {command}") from exc
        output = (done.stdout + done.stderr).strip()
        self.stats.restarts.append(
            f"{command} (exit {done.returncode}{': ' + output[:200] if output else ''})"
        )

    def close(self) -> None:
        self._pump(drain=True)

    def shutdown(self) -> None:
        with self._cond:
            self._closing = True
        self.client.disconnect()
        self.client.loop_stop()

    def report(self) -> list[str]:
        s = self.stats
        lines = [
            f"Broker {self.address} acknowledged {s.acknowledged:,} messages "
            f"({s.no_subscriber:,} sent again after no subscriber took them; "
            f"{s.disconnects} disconnects, {s.connects} connects)."
        ]
        lines += [f"    broker restart: {r}" for r in s.restarts]
        lines.append(
            "The ingest workers apply them on their own; their outcomes are on the ingest "
            "status page (/ingest/) and in /metrics."
        )
        return lines


# --- OPC UA: the stations the OPC UA simulator models --------------------------------------


@dataclass(frozen=True)
class OpcUaStation:
    """A station whose results the OPC UA simulator serves: ``machine`` is the simulator's
    ``FILL-01`` or ``FORM-RACK-01``; the characteristic is what its result event carries."""

    machine: str
    station_id: int
    site: str
    line: str
    code: str
    characteristic: str
    unit: str
    equipment: str
    nominal: float


#: Event types of the simulator's address space.
_EVENT_TYPES = "/Types/EventTypes/BaseEventType/ResultReadyEventType/"
OPCUA_SERVER_NAME = "simulate"


def opcua_stations(*, site: str, line: str) -> dict[tuple[str, str], OpcUaStation]:
    """The electrolyte fill and formation stations of ``line`` from the master data, keyed
    by (line, station) in lower case as the stream names them."""
    wanted = {
        "fill": ("FILL-01", "fill-mass", "cw-1"),
        "form": ("FORM-RACK-01", "formation-charge-capacity", "fc-01"),
    }
    out = {}
    chars = Characteristic.objects.filter(
        station__line__site__code__iexact=site,
        station__line__code__iexact=line,
        station__code__in=list(wanted),
    ).select_related("station__line__site")
    for char in chars:
        machine, code, equipment = wanted[char.station.code]
        if char.code != code:
            continue
        st = char.station
        out[(st.line.code.lower(), st.code.lower())] = OpcUaStation(
            machine=machine,
            station_id=st.pk,
            site=st.line.site.code,
            line=st.line.code,
            code=st.code,
            characteristic=char.code,
            unit=char.unit,
            equipment=equipment,
            nominal=char.nominal,
        )
    return out


def opcua_server_config(
    endpoint: str, stations: Mapping[tuple[str, str], OpcUaStation]
) -> ServerConfig:
    """The client configuration of the simulator's two machines: what ``opcua_sim
    --configure`` writes, built in memory for the run (nothing is stored)."""
    sources = []
    for n, st in enumerate(stations.values()):
        ref = StationRef(st.station_id, st.site, st.line, st.code)
        path = f"/Objects/Machines/{st.machine}"
        fill = st.machine == "FILL-01"
        event_type = "FillResultReadyEventType" if fill else "FormationResultReadyEventType"
        trigger = MapConfig(
            id=2 * n + 1,
            role=NodeRole.RESULT_READY_EVENT,
            node=path,
            group="",
            event_type=f"{_EVENT_TYPES}{event_type}",
            equipment=st.equipment,
            unit_kind=OpcUaUnitKind.CELL,
        )
        value = MapConfig(
            id=2 * n + 2,
            role=NodeRole.MEASUREMENT,
            node=f"{path}/Process/FillMass" if fill else "",
            group="",
            event_field="" if fill else "ChargeCapacity",
            characteristic=st.characteristic,
            unit=st.unit,
        )
        sources.append(ResultSource(ref, "", trigger, None, None, (value,)))
    return ServerConfig(
        id=0,
        name=OPCUA_SERVER_NAME,
        endpoint_url=endpoint,
        namespace_uri=NAMESPACE_URI,
        publishing_interval_ms=50,
        sources=tuple(sources),
    )


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class OpcUaSink(Sink):
    """Results of the stations in ``stations`` become ResultReady events of an in-process
    OPC UA station simulator, which the real client (:class:`qms.opcua.client.ClientThread`)
    reads over ``opc.tcp`` and applies (transport ``opcua``, message id
    ``opcua:simulate:<station>:<ResultId>``). Every other message, and every malformed or
    unknown-serial one, goes through ``direct``, which is flushed before each OPC UA result
    so that a cell's messages are applied in line order."""

    transport = "opcua"

    def __init__(
        self,
        *,
        direct: DirectSink,
        stations: Mapping[tuple[str, str], OpcUaStation],
        host: str = "127.0.0.1",
        port: int | None = None,
        settle_timeout_s: float = 60.0,
        log: Log = _quiet,
    ):
        super().__init__(log=log)
        if not stations:
            raise DeliveryError("No station for the OPC UA simulator (run seed_demo first).")
        self.direct = direct
        self.stations = dict(stations)
        self.settle_timeout_s = settle_timeout_s
        self.served: Counter = Counter()
        by_machine = {st.machine: st for st in self.stations.values()}
        fill, form = by_machine.get("FILL-01"), by_machine.get("FORM-RACK-01")
        config = SimConfig(
            host=host,
            port=port or _free_port(host),
            fill=FillProfile(fill_nominal_g=fill.nominal) if fill else None,
            rack=RackProfile() if form else None,
            units=0,
            autostart=False,
        )
        self.sim_thread = SimulatorThread(config)
        self.client: ClientThread | None = None
        self.sim_thread.start()
        try:
            self.client = ClientThread(
                [opcua_server_config(config.endpoint, self.stations)],
                backoff_initial_s=0.5,
                backoff_max_s=5.0,
            ).start()
            # Results go live once the client has subscribed: the first history read would
            # skip events older than what an earlier run applied from the same stations.
            if not self.client.wait_for(
                lambda c: bool(c.clients) and c.clients[0].connections > 0, timeout=30.0
            ):
                raise DeliveryError(f"The OPC UA client did not connect to {config.endpoint}.")
        except BaseException:
            self.shutdown()
            raise
        self.endpoint = config.endpoint
        log(f"OPC UA station simulator at {config.endpoint}, read by the ingest client")

    def _served_here(self, item: Outgoing) -> tuple[OpcUaStation, dict] | None:
        """The station and the envelope when ``item`` is a result the simulator's machine
        reports: a unit's visit with the value of the machine's characteristic (not, say, a
        lot scanned in at the station, nor a deliberately broken message)."""
        if item.kind != "process_result" or item.fault not in ("", "duplicate"):
            return None
        station = self.stations.get((item.line.lower(), item.station.lower()))
        if station is None:
            return None
        doc = json.loads(item.payload)
        rows = doc["payload"].get("measurements") or ()
        if len(rows) != 1 or rows[0]["characteristic"] != station.characteristic:
            return None
        return station, doc

    def send(self, item: Outgoing) -> None:
        served = self._served_here(item)
        if served is None:
            self.direct.send(item)
            return
        station, doc = served
        self.direct.flush()
        self.sim_thread.call(lambda sim: _play(sim, station, doc))
        self.served[station.code] += 1

    def close(self) -> None:
        self.direct.close()
        played = sum(self.served.values())

        def through(client) -> bool:
            s = client.stats
            return s.accepted + s.duplicate + s.rejected + s.skipped >= played

        if not self.client.wait_for(through, timeout=self.settle_timeout_s):
            s = self.client.stats
            raise DeliveryError(
                f"The OPC UA client took {s.accepted + s.duplicate + s.rejected + s.skipped} "
                f"of {played} results in {self.settle_timeout_s:g} s."
            )

    def shutdown(self) -> None:
        if self.client is not None:
            self.client.stop()
        self.sim_thread.stop()

    def report(self) -> list[str]:
        lines = []
        if self.client is not None and self.served:
            s = self.client.stats
            stations = ", ".join(f"{code} {n:,}" for code, n in sorted(self.served.items()))
            lines.append(
                f"OPC UA ({self.endpoint}): {sum(self.served.values()):,} results served "
                f"({stations}); the client applied {s.accepted:,} accepted, {s.duplicate:,} "
                f"duplicate, {s.rejected:,} rejected, {s.skipped:,} read twice and skipped."
            )
        direct = self.direct.report()
        if direct:
            lines.append("Direct (every other message):")
            lines += [f"  {line}" for line in direct]
        return lines


async def _play(sim: StationSimulator, station: OpcUaStation, doc: dict) -> None:
    """Serve one stream result as the simulator's machine reports it: the process nodes
    (fill station) and the ResultReady event with the Result Transfer fields."""
    payload = doc["payload"]
    serial = doc["unit"]
    value = payload["measurements"][0]["value"]
    started = datetime.fromisoformat(payload["started_at"])
    ended = datetime.fromisoformat(payload["ended_at"])
    sent = datetime.fromisoformat(doc["sent_at"])
    evaluation = EVALUATION_OK if payload["result"] == "ok" else EVALUATION_NOT_OK
    if station.machine == "FILL-01":
        machine, generator = sim.fill, sim.fill.event
        # The check-weigher's two weighings: a dry 21700 weighs about 12.8 x the fill mass.
        rng = random.Random(doc["message_id"])  # noqa: S311  simulation
        dry = station.nominal * 12.8
        before = round(rng.gauss(dry, dry * 0.002), 3)
        after = round(before + value, 3)
        machine.sequence += 1
        result_id = f"{machine.name}.{serial}"
        s, d = ua.VariantType.String, ua.VariantType.Double
        await machine.write({"Process.CurrentSerial": (serial, s)}, started)
        await machine.write(
            {
                "Process.WeightBefore": (before, d),
                "Process.WeightAfter": (after, d),
                "Process.FillMass": (value, d),
                "Process.ResultId": (result_id, s),
                "Process.ResultEvaluation": (evaluation, ua.VariantType.Int32),
                "Process.Result": ("OK" if evaluation == EVALUATION_OK else "NOK", s),
                "Process.SequenceNumber": (machine.sequence, ua.VariantType.UInt32),
            },
            ended,
        )
        ev = generator.event
        ev.WeightBefore, ev.WeightAfter, ev.FillMass = before, after, value
    else:
        machine, generator = sim.rack, sim.rack.result_event
        machine.sequence += 1
        channel = f"CH{(machine.sequence - 1) % len(machine.channels) + 1:02d}"
        result_id = f"{machine.name}.{channel}.{serial}"
        ev = generator.event
        ev.Channel, ev.ChargeCapacity = channel, value
        ev.EndVoltage = 4.17
        ev.MaxTemperature = machine.profile.temperature_c + 1.5
    ev.ResultId, ev.PartId, ev.ResultEvaluation = result_id, serial, evaluation
    ev.SequenceNumber, ev.ExternalRecipeId = machine.sequence, payload.get("program", "")
    ev.StartTime, ev.EndTime = started, ended
    await generator.trigger(time_attr=sent, message=f"{serial} {station.characteristic} {value}")
