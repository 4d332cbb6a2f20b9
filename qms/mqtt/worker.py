"""The MQTT ingest worker: JSON envelopes from ``qms/<site>/<line>/<station>/<kind>`` into
:func:`qms.ingest.services.ingest_raw`, exactly once, in batches.

How a message travels, and why nothing is lost or applied twice:

* The worker holds an MQTT 5 persistent session (``clean_start`` off, a session expiry) with
  a QoS 1 shared subscription ``$share/<group>/qms/+/+/+/+``: the broker hands each message
  to one worker of the group, and keeps what it sends to a worker until the worker
  acknowledges it, also while the worker is down.
* paho's network thread only puts each message on a queue (``on_message``); the main thread
  takes them off in batches (``batch_size`` messages or ``batch_ms`` after the first, which
  comes first) and applies each batch in one database transaction.
* Acknowledgements are manual (``manual_ack=True``): a message's PUBACK is sent with
  ``client.ack(mid, qos)`` only after its batch committed. A worker killed mid-batch has
  acknowledged nothing of it; the broker delivers it again (to this worker's session when
  it returns) and the unique ``message_id`` makes any repeat a counted duplicate.
* A failing batch (database down) is not acknowledged; it is retried with back-off.
* Packet ids belong to one connection: a message received before a reconnect is not
  acknowledged on the new connection (the broker resends it there, and that copy is
  acknowledged as a duplicate).
* The broker may send as many unacknowledged messages as the Receive Maximum the worker
  announces in CONNECT; it is sized to a few batches so one batch fills while the previous
  one commits.
* Messages on ``.../command`` topics are the commands this system sends to stations: they
  are acknowledged and skipped. A message whose envelope names another site, line, station
  or kind than its topic goes to the dead-letter store with the reason.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from django.db import InterfaceError, OperationalError, connection, transaction
from paho.mqtt.subscribeoptions import SubscribeOptions

from qms.ingest.models import Transport
from qms.ingest.services import (
    ACCEPTED,
    DUPLICATE,
    REJECTED,
    Outcome,
    RawMessage,
    dead_letters_retry,
    ingest_raw,
    transport_actor,
)

from .broker import RECEIVE_MAXIMUM_LIMIT, connect_properties, new_client, parse_url
from .topics import envelope_check, parse_topic, shared_subscription

logger = logging.getLogger("celltrace.ingest.mqtt")

DEFAULT_GROUP = "qms-ingest"
TRANSPORT = Transport.MQTT.value


def default_client_id(group: str) -> str:
    """Stable across restarts of one worker, so it finds its session (and the messages the
    broker kept for it) again. Several workers on one host need their own ``--client-id``."""
    return f"{group}-{socket.gethostname()}"[:64]


@dataclass(frozen=True)
class WorkerConfig:
    url: str
    group: str = DEFAULT_GROUP
    client_id: str = ""
    batch_size: int = 500
    batch_ms: int = 100
    #: Unacknowledged messages the broker may send; default: four batches.
    receive_maximum: int | None = None
    #: How long the broker keeps the session (and queues this worker's share) while the
    #: worker is away.
    session_expiry_s: int = 86_400
    keepalive_s: int = 30
    reconnect_min_s: int = 1
    reconnect_max_s: int = 30
    #: First and longest pause between two attempts at a batch the database refused.
    retry_min_s: float = 0.5
    retry_max_s: float = 30.0
    #: How often the worker retries dead letters naming a unit that was not there yet.
    retry_every_s: float = 1.0
    #: One log line every this many batches.
    log_every: int = 100

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1.")
        if self.batch_ms < 0:
            raise ValueError("batch_ms must not be negative.")
        parse_url(self.url)
        shared_subscription(self.group)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or default_client_id(self.group)

    @property
    def effective_receive_maximum(self) -> int:
        if self.receive_maximum is not None:
            return max(1, min(self.receive_maximum, RECEIVE_MAXIMUM_LIMIT))
        return max(100, min(4 * self.batch_size, RECEIVE_MAXIMUM_LIMIT))


@dataclass(slots=True)
class Received:
    """One message as paho handed it over, with the connection it came on."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: datetime


@dataclass
class Totals:
    batches: int = 0
    messages: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    acked: int = 0
    not_acked: int = 0
    commit_s: float = 0.0
    retries: int = 0
    reaction_errors: int = 0
    retried: int = 0


class IngestWorker:
    """One worker process's MQTT session and batching loop. :meth:`run` blocks until
    :meth:`request_stop` (the management command calls it on SIGTERM / SIGINT)."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        client: mqtt.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.address = parse_url(config.url)
        self.subscription = shared_subscription(config.group)
        self.client = client or new_client(
            self.address, client_id=config.effective_client_id, manual_ack=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
        if hasattr(self.client, "enable_logger"):
            # paho's own warnings and errors (e.g. an exception in a callback) in our log.
            self.client.enable_logger(logging.getLogger("celltrace.ingest.mqtt.paho"))
        self.queue: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self.totals = Totals()
        self.subscribed = threading.Event()
        self._stopping = threading.Event()
        self._generation = 0
        self._clock = clock
        self._actor = None
        self._last_retry = clock()
        self._window = (clock(), Totals())

    # --- paho's network thread: nothing here touches the database -----------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.warning("MQTT broker %s refused the connection: %s", self.address, reason_code)
            return
        self._generation += 1
        logger.info(
            "connected to %s as %s (session %s), subscribing %s",
            self.address,
            self.config.effective_client_id,
            "resumed" if flags.session_present else "new",
            self.subscription,
        )
        # Also with a resumed session: the subscription may be new (first run, expiry).
        client.subscribe(self.subscription, options=SubscribeOptions(qos=1))

    def _on_connect_fail(self, client, userdata) -> None:
        logger.warning("cannot reach the MQTT broker at %s; retrying with back-off", self.address)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [rc for rc in reason_codes if rc.is_failure]
        if failed:
            logger.error("subscription %s refused: %s", self.subscription, failed[0])
            return
        logger.info("subscribed %s", self.subscription)
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._generation += 1  # packet ids of the old connection mean nothing on a new one
        self.subscribed.clear()
        if not self._stopping.is_set():
            logger.warning("disconnected from %s (%s); reconnecting", self.address, reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # a broker does not forward these; never crash the loop
            client.ack(message.mid, message.qos)
            return
        parsed = parse_topic(topic)
        if parsed is not None and parsed.is_command:
            client.ack(message.mid, message.qos)  # our own command to a station
            return
        if self._stopping.is_set():
            return  # not taken: left unacknowledged, delivered again after the restart
        self.queue.put(
            Received(
                topic=topic,
                payload=message.payload,
                mid=message.mid,
                qos=message.qos,
                generation=self._generation,
                received_at=datetime.now(UTC),
            )
        )

    # --- the batching thread ---------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop taking messages; the batch in hand is committed and acknowledged. Safe to
        call from a signal handler."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def collect(self, *, idle_s: float = 0.2) -> list[Received]:
        """The next batch: up to ``batch_size`` messages, closed ``batch_ms`` after it took
        its first message. Empty when nothing came within ``idle_s``, or on stop."""
        batch: list[Received] = []
        get, get_nowait = self.queue.get, self.queue.get_nowait
        while not batch:
            if self._stopping.is_set():
                return batch
            try:
                batch.append(get(timeout=idle_s))
            except queue.Empty:
                return batch
        deadline = self._clock() + self.config.batch_ms / 1000.0
        size = self.config.batch_size
        while len(batch) < size and not self._stopping.is_set():
            try:
                batch.append(get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            try:
                batch.append(get(timeout=min(remaining, idle_s)))
            except queue.Empty:
                continue
        return batch

    def commit(self, batch: Sequence[Received]) -> list[Outcome]:
        """Apply a batch in one transaction; an envelope that disagrees with its topic is
        refused by the ingest like any bad input. Raises only when the batch was not
        committed (the database failed: nothing of it is written)."""
        raws: list[RawMessage] = []
        for r in batch:
            parsed = parse_topic(r.topic)
            check = envelope_check(parsed) if parsed is not None else None
            raws.append(RawMessage(r.payload, TRANSPORT, r.topic, r.received_at, check))
        if self._actor is None:
            self._actor = transport_actor(TRANSPORT)
        committed: list[bool] = []
        outcomes: list[Outcome] = []
        try:
            with transaction.atomic():
                # Registered first, so it runs first of the after-commit callbacks.
                transaction.on_commit(lambda: committed.append(True))
                outcomes = ingest_raw(raws, actor=self._actor) if raws else []
        except Exception:
            if not committed:
                raise
            # The batch is stored; what failed is a reaction run after the commit (e.g. a
            # task that could not be queued). Acknowledge: a redelivery would only be a
            # duplicate, and would not run the reaction again either.
            self.totals.reaction_errors += 1
            logger.exception(
                "batch of %d committed; a reaction after the commit failed", len(batch)
            )
        return outcomes

    def acknowledge(self, batch: Sequence[Received]) -> int:
        """PUBACK every message of a committed batch that came on the current connection."""
        generation = self._generation
        acked = 0
        for r in batch:
            if r.qos == 0:
                continue
            if r.generation != generation:
                self.totals.not_acked += 1
                continue
            self.client.ack(r.mid, r.qos)
            acked += 1
        self.totals.acked += acked
        return acked

    def process(self, batch: Sequence[Received]) -> list[Outcome] | None:
        """Commit a batch (retrying with back-off while the database fails) and acknowledge
        it. None when a stop came while the database was still failing: nothing of the batch
        is acknowledged then, so the broker delivers it again."""
        delay = self.config.retry_min_s
        started = self._clock()
        while True:
            try:
                outcomes = self.commit(batch)
                break
            except Exception as exc:  # the database or a bug: never acknowledge, retry
                self.totals.retries += 1
                self._actor = None
                if not connection.in_atomic_block:
                    connection.close()  # a broken connection is replaced on the next try
                logger.warning(
                    "batch of %d messages not applied (%s: %s); not acknowledged, retry in %.1f s",
                    len(batch),
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                    delay,
                    exc_info=self.totals.retries == 1,
                )
                if self._stopping.wait(delay):
                    return None
                delay = min(delay * 2, self.config.retry_max_s)
        self.totals.commit_s += self._clock() - started
        self.acknowledge(batch)
        counts = Counter(o.status for o in outcomes)
        t = self.totals
        t.batches += 1
        t.messages += len(batch)
        t.accepted += counts[ACCEPTED]
        t.duplicate += counts[DUPLICATE]
        t.rejected += counts[REJECTED]
        if self.config.log_every and t.batches % self.config.log_every == 0:
            self.log_rates()
        return outcomes

    def log_rates(self) -> None:
        now = self._clock()
        since, before = self._window
        t = self.totals
        elapsed = max(now - since, 1e-9)
        batches = t.batches - before.batches
        messages = t.messages - before.messages
        logger.info(
            "%s: %d batches, %d messages in %.1f s: %.0f msg/s (accepted %d, duplicate %d, "
            "rejected %d; avg batch %.0f, commit %.0f ms avg; queued %d; total %d)",
            self.config.effective_client_id,
            batches,
            messages,
            elapsed,
            messages / elapsed,
            t.accepted - before.accepted,
            t.duplicate - before.duplicate,
            t.rejected - before.rejected,
            messages / max(batches, 1),
            1000 * (t.commit_s - before.commit_s) / max(batches, 1),
            self.queue.qsize(),
            t.messages,
        )
        self._window = (now, Totals(**vars(t)))

    def retry_due(self) -> None:
        """Every ``retry_every_s``: try again the dead letters that name a unit which was not
        there yet (it may have come through another worker meanwhile)."""
        now = self._clock()
        if now - self._last_retry < self.config.retry_every_s:
            return
        self._last_retry = now
        try:
            outcomes = dead_letters_retry()
        except (OperationalError, InterfaceError):
            logger.warning("retrying dead letters failed: database unavailable", exc_info=True)
            connection.close()
            return
        if outcomes:
            applied = sum(o.status != REJECTED for o in outcomes)
            self.totals.retried += applied
            logger.info("retried %d dead letters: %d applied", len(outcomes), applied)

    def run(self) -> None:
        """Connect (retrying with back-off), then batch, commit and acknowledge until
        :meth:`request_stop`; then commit and acknowledge the batch in hand and disconnect."""
        cfg = self.config
        logger.info(
            "MQTT ingest %s: %s on %s, batches of %d / %d ms, receive maximum %d",
            cfg.effective_client_id,
            self.subscription,
            self.address,
            cfg.batch_size,
            cfg.batch_ms,
            cfg.effective_receive_maximum,
        )
        self.client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=cfg.keepalive_s,
            clean_start=False,
            properties=connect_properties(
                session_expiry_s=cfg.session_expiry_s,
                receive_maximum=cfg.effective_receive_maximum,
            ),
        )
        self.client.loop_start()
        try:
            while not self._stopping.is_set():
                batch = self.collect()
                if batch:
                    self.process(batch)
                self.retry_due()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            if self.totals.batches:
                self.log_rates()
            t = self.totals
            logger.info(
                "MQTT ingest %s stopped: %d messages in %d batches (accepted %d, duplicate %d, "
                "rejected %d), %d acknowledged",
                cfg.effective_client_id,
                t.messages,
                t.batches,
                t.accepted,
                t.duplicate,
                t.rejected,
                t.acked,
            )
