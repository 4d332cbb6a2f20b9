"""The broker side of the Sparkplug B host application (paho-mqtt 2.x, MQTT 5).

:class:`HostClient` connects with its STATE death certificate as the will (``{"online":
false, "timestamp": T}``, QoS 1, retained), subscribes to its own STATE topic and to
``spBv1.0/<group>/#``, then publishes its STATE birth (``{"online": true, "timestamp": T}``,
same T, QoS 1, retained). Received messages are queued by paho's network thread and
handled in arrival order by whoever calls :meth:`HostClient.process` — the
``ingest_sparkplug`` command's main loop, or a test — so all database work happens in that
one thread. Rebirth requests are published as soon as a batch has been handled.

Sparkplug publishes data at QoS 0: the broker does not redeliver, so a batch whose database
write fails is kept and retried (with back-off) until the database is back, instead of
being dropped.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from django.db import InterfaceError, OperationalError, close_old_connections
from django.utils import timezone
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import codec
from .host import HostResult, SparkplugHost, deliver
from .mapping import MappingIndex

logger = logging.getLogger("celltrace.sparkplug")


@dataclass
class ClientStats:
    received: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    dead_letters: int = 0
    rebirth_requests: int = 0


class HostClient:
    """One Sparkplug host application for one group (see the module docstring)."""

    def __init__(
        self,
        *,
        mqtt_url: str,
        group_id: str,
        host_id: str,
        batch_size: int = 200,
        batch_wait_s: float = 0.05,
        mapping_refresh_s: float = 30.0,
        rebirth_interval_s: float = 5.0,
    ):
        self.url = urlparse(mqtt_url)
        self.group_id = group_id
        self.host_id = host_id
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.mapping_refresh_s = mapping_refresh_s
        self.state_topic = codec.state_topic(host_id)
        self.host = SparkplugHost(
            group_id=group_id,
            host_id=host_id,
            mappings=MappingIndex.from_db(group_id),
            rebirth_interval_s=rebirth_interval_s,
        )
        self._mappings_loaded = time.monotonic()
        self.stats = ClientStats()
        self._inbox: queue.Queue[tuple[str, bytes, datetime]] = queue.Queue()
        self._online = threading.Event()
        self._state_ts = codec.datetime_to_ms(timezone.now())
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"celltrace-spb-{host_id}"[:64],
            protocol=mqtt.MQTTv5,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._set_will()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect

    # -- MQTT callbacks (paho's network thread) ----------------------------------------------

    def _set_will(self) -> None:
        self.client.will_set(
            self.state_topic,
            codec.state_payload(online=False, timestamp_ms=self._state_ts),
            qos=1,
            retain=True,
        )

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            logger.warning("Sparkplug host %s: connect refused: %s", self.host_id, reason_code)
            return
        # Own STATE topic first: the birth goes out once that subscription is granted.
        client.subscribe(self.state_topic, qos=1)
        client.subscribe(f"{codec.NAMESPACE}/{self.group_id}/#", qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if not self._online.is_set():
            self._publish_birth()

    def _publish_birth(self) -> None:
        self.client.publish(
            self.state_topic,
            codec.state_payload(online=True, timestamp_ms=self._state_ts),
            qos=1,
            retain=True,
        )
        self._online.set()
        logger.info("Sparkplug host %s online for group %s", self.host_id, self.group_id)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._online.clear()
        # A new session gets a new STATE timestamp; the will is sent with the next CONNECT.
        self._state_ts = codec.datetime_to_ms(timezone.now())
        self._set_will()

    def _on_message(self, client, userdata, msg):
        if msg.topic == self.state_topic:
            try:
                state = json.loads(msg.payload or b"{}")
            except ValueError:
                state = {}
            # A live offline on our topic (a late will of an earlier connection) replaced
            # the retained state: say again that we are online. The retained copy delivered
            # on subscribing is already being replaced by this connection's birth.
            if self._online.is_set() and state.get("online") is False and not msg.retain:
                self._publish_birth()
            return
        self._inbox.put((msg.topic, bytes(msg.payload), timezone.now()))

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Connect and wait until the STATE birth is out."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        self.client.connect(
            self.url.hostname or "127.0.0.1",
            self.url.port or 1883,
            keepalive=30,
            clean_start=True,
            properties=props,
        )
        self.client.loop_start()
        if not self._online.wait(timeout_s):
            self.client.loop_stop()
            raise TimeoutError(f"Sparkplug host {self.host_id} could not come online.")
        self._request_known_rebirths()

    def _request_known_rebirths(self) -> None:
        """A (re)started host has an empty birth cache: ask the edge nodes it knew for their
        births now, rather than dead-lettering their first DATA message."""
        from .models import SparkplugEdgeNode

        now = timezone.now()
        result = HostResult()
        for edge_node_id in SparkplugEdgeNode.objects.filter(
            group_id=self.group_id, online=True
        ).values_list("edge_node_id", flat=True):
            topic = codec.Topic(self.group_id, "NCMD", edge_node_id)
            self.host.request_rebirth(topic, "host started", now, result, force=True)
        for command in result.commands:
            self.client.publish(command.topic, command.payload, qos=0, retain=False)
        self.stats.rebirth_requests += len(result.commands)
        if result:
            self._deliver(result)

    def stop(self) -> None:
        """Publish the STATE death certificate, then disconnect (no will is sent)."""
        was_online = self._online.is_set()
        self._online.clear()  # our own death echoed back must not trigger a new birth
        if was_online:
            info = self.client.publish(
                self.state_topic,
                codec.state_payload(online=False, timestamp_ms=self._state_ts),
                qos=1,
                retain=True,
            )
            info.wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    # -- processing (the caller's thread) ---------------------------------------------------

    def _refresh_mappings(self, force: bool = False) -> None:
        if force or time.monotonic() - self._mappings_loaded >= self.mapping_refresh_s:
            self.host.mappings = MappingIndex.from_db(self.group_id)
            self._mappings_loaded = time.monotonic()

    def process(self, *, wait_s: float = 0.5) -> int:
        """Handle the messages that arrived (waiting up to ``wait_s`` for the first), as one
        batch of at most ``batch_size``; returns how many were handled."""
        try:
            first = self._inbox.get(timeout=wait_s)
        except queue.Empty:
            self._refresh_mappings()
            return 0
        self._refresh_mappings()
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._inbox.get(timeout=max(remaining, 0.0)))
            except queue.Empty:
                break
        result = HostResult()
        births = False
        for topic, payload, received_at in batch:
            one = self.host.handle(topic, payload, received_at)
            births = births or any(e.kind in ("nbirth", "dbirth") for e in one.events)
            result.extend(one)
        for command in result.commands:
            self.client.publish(command.topic, command.payload, qos=0, retain=False)
        self._deliver(result)
        self.stats.received += len(batch)
        self.stats.dead_letters += len(result.dead_letters)
        self.stats.rebirth_requests += len(result.commands)
        if births:
            self._refresh_mappings(force=True)
        return len(batch)

    def _deliver(self, result: HostResult) -> None:
        delay = 0.5
        while True:
            try:
                outcomes = deliver(result)
                break
            except (OperationalError, InterfaceError) as exc:
                logger.warning("database unavailable (%s); retrying in %.1f s", exc, delay)
                close_old_connections()
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        for outcome in outcomes:
            if outcome.status == "accepted":
                self.stats.accepted += 1
            elif outcome.status == "duplicate":
                self.stats.duplicate += 1
            else:
                self.stats.rejected += 1

    def run(self, stop: threading.Event, *, max_seconds: float | None = None) -> None:
        """Process until ``stop`` is set (SIGTERM) or ``max_seconds`` have passed."""
        started = time.monotonic()
        while not stop.is_set():
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                break
            self.process(wait_s=0.2)
        while self.process(wait_s=0.0):  # what already arrived is still handled
            pass
