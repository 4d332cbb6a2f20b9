"""A Sparkplug B edge node simulator, for the tests and the demo.

:class:`EdgeNodeSimulator` produces the messages a real edge node publishes — NBIRTH with
``bdSeq`` and ``Node Control/Rebirth``, DBIRTH per device with aliases, DDATA with aliases
only and ``seq`` increasing by one (255 wrapping to 0), NDEATH as the will — and answers a
rebirth request with a new NBIRTH and DBIRTHs of the same session. It can skip sequence
numbers on request, to show what the host does with a lost message.

Used without a broker (``messages`` are returned as :class:`Publication`) or connected to
one with :meth:`EdgeNodeSimulator.connect` (paho-mqtt 2.x; the NDEATH is registered as the
will, QoS 1, not retained, as the specification requires).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlparse

from . import codec
from . import sparkplug_b_pb2 as pb
from .codec import MetricOut


@dataclass(frozen=True)
class MetricSpec:
    """A metric the simulated device defines in its birth."""

    name: str
    datatype: int
    value: object = None
    eng_unit: str = ""


@dataclass(frozen=True)
class Publication:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fill_station_metrics() -> list[MetricSpec]:
    """The metrics of an electrolyte fill station's PLC as a device: unit serial, fill
    mass in g, OK/NOK, recipe, and a cycle time that is not quality data."""
    return [
        MetricSpec("Unit/Serial", pb.String, ""),
        MetricSpec("Fill/Mass", pb.Double, 0.0, "g"),
        MetricSpec("Result/OK", pb.Boolean, True),
        MetricSpec("Recipe/Program", pb.String, "NMC811-105AH-FILL-V3"),
        MetricSpec("Status/Cycle Time", pb.Float, 0.0, "s"),
    ]


@dataclass
class EdgeNodeSimulator:
    """One edge node with its devices (see the module docstring)."""

    group_id: str
    edge_node_id: str
    devices: dict[str, list[MetricSpec]]
    bd_seq: int = 0
    clock_ms: Callable[[], int] = now_ms
    seq: int = field(default=-1, init=False)
    aliases: dict[tuple[str, str], int] = field(default_factory=dict, init=False)
    datatypes: dict[tuple[str, str], int] = field(default_factory=dict, init=False)
    received_commands: list[tuple[str, bytes]] = field(default_factory=list, init=False)
    _client: object = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        alias = 1
        for device_id, specs in self.devices.items():
            for spec in specs:
                self.aliases[(device_id, spec.name)] = alias
                self.datatypes[(device_id, spec.name)] = spec.datatype
                alias += 1

    # -- payloads ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def skip_seq(self, count: int = 1) -> None:
        """Lose ``count`` messages: the next message's seq jumps by ``count``."""
        self.seq = (self.seq + count) % 256

    def nbirth(self) -> Publication:
        self.seq = -1
        ts = self.clock_ms()
        payload = codec.encode_payload(
            [
                MetricOut(name=codec.BDSEQ_METRIC, value=self.bd_seq, datatype=pb.UInt64),
                MetricOut(name=codec.REBIRTH_METRIC, value=False, datatype=pb.Boolean),
                MetricOut(name="Properties/Hardware Make", value="Siemens", datatype=pb.String),
            ],
            timestamp_ms=ts,
            seq=self._next_seq(),
        )
        return Publication(codec.topic_for(self.group_id, "NBIRTH", self.edge_node_id), payload)

    def dbirth(self, device_id: str) -> Publication:
        ts = self.clock_ms()
        metrics = [
            MetricOut(
                name=spec.name,
                alias=self.aliases[(device_id, spec.name)],
                value=spec.value,
                datatype=spec.datatype,
                properties={"engUnit": spec.eng_unit} if spec.eng_unit else {},
            )
            for spec in self.devices[device_id]
        ]
        payload = codec.encode_payload(metrics, timestamp_ms=ts, seq=self._next_seq())
        return Publication(
            codec.topic_for(self.group_id, "DBIRTH", self.edge_node_id, device_id), payload
        )

    def births(self) -> list[Publication]:
        """NBIRTH then every DBIRTH, as after a connect or a rebirth request."""
        return [self.nbirth()] + [self.dbirth(d) for d in self.devices]

    def ddata(
        self,
        device_id: str,
        values: dict[str, object],
        *,
        timestamp_ms: int | None = None,
        alias: dict[str, int] | None = None,
    ) -> Publication:
        """A DDATA with aliases only (no names). ``alias`` overrides an alias, to send one
        the birth did not define."""
        ts = timestamp_ms if timestamp_ms is not None else self.clock_ms()
        metrics = [
            MetricOut(
                alias=(alias or {}).get(name, self.aliases.get((device_id, name))),
                value=value,
                datatype=self.datatypes[(device_id, name)],
                with_datatype=False,
            )
            for name, value in values.items()
        ]
        payload = codec.encode_payload(metrics, timestamp_ms=ts, seq=self._next_seq())
        return Publication(
            codec.topic_for(self.group_id, "DDATA", self.edge_node_id, device_id), payload
        )

    def ddeath(self, device_id: str) -> Publication:
        payload = codec.encode_payload([], timestamp_ms=self.clock_ms(), seq=self._next_seq())
        return Publication(
            codec.topic_for(self.group_id, "DDEATH", self.edge_node_id, device_id), payload
        )

    def ndeath(self, bd_seq: int | None = None) -> Publication:
        """The death certificate: bdSeq only, no seq, QoS 1 (it is the will)."""
        payload = codec.encode_payload(
            [
                MetricOut(
                    name=codec.BDSEQ_METRIC,
                    value=self.bd_seq if bd_seq is None else bd_seq,
                    datatype=pb.UInt64,
                )
            ],
            timestamp_ms=self.clock_ms(),
        )
        return Publication(
            codec.topic_for(self.group_id, "NDEATH", self.edge_node_id), payload, qos=1
        )

    def handle_command(self, topic: str, payload: bytes) -> list[Publication]:
        """Answer an NCMD: ``Node Control/Rebirth`` = true gives a new birth sequence of the
        same session (same bdSeq, seq from 0)."""
        self.received_commands.append((topic, payload))
        decoded = codec.decode_payload(payload)
        if any(m.name == codec.REBIRTH_METRIC and m.value is True for m in decoded.metrics):
            return self.births()
        return []

    # -- broker --------------------------------------------------------------------------

    def connect(self, mqtt_url: str, *, timeout_s: float = 5.0) -> None:
        """Connect (MQTT 3.1.1, clean session, NDEATH as will), subscribe to this node's
        NCMD, publish the births. Rebirth requests are answered from paho's thread."""
        import paho.mqtt.client as mqtt

        url = urlparse(mqtt_url)
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"edge-{self.group_id}-{self.edge_node_id}"[:64],
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        death = self.ndeath()
        client.will_set(death.topic, death.payload, qos=1, retain=False)
        connected = threading.Event()
        subscribed = threading.Event()
        ncmd = codec.topic_for(self.group_id, "NCMD", self.edge_node_id)

        def on_connect(c, userdata, flags, reason_code, properties):
            if not reason_code.is_failure:
                c.subscribe(ncmd, qos=1)
                connected.set()

        def on_subscribe(c, userdata, mid, reason_codes, properties):
            subscribed.set()

        def on_message(c, userdata, msg):
            with self._lock:
                answers = self.handle_command(msg.topic, msg.payload)
            self.publish(answers)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(url.hostname or "127.0.0.1", url.port or 1883, keepalive=30)
        client.loop_start()
        if not (connected.wait(timeout_s) and subscribed.wait(timeout_s)):
            client.loop_stop()
            raise TimeoutError(f"edge node {self.edge_node_id} could not connect to {mqtt_url}")
        self._client = client
        with self._lock:
            births = self.births()
        self.publish(births)

    def publish(self, publications: list[Publication]) -> None:
        for p in publications:
            info = self._client.publish(p.topic, p.payload, qos=p.qos, retain=p.retain)
            if p.qos:
                info.wait_for_publish(5)

    def send(self, make: Callable[[], Publication | list[Publication]]) -> None:
        """Make the next message(s) under the lock that orders them with rebirths, then
        publish them (so a rebirth answer never interleaves with a sequence)."""
        with self._lock:
            out = make()
        self.publish(out if isinstance(out, list) else [out])

    def disconnect(self, *, graceful_death: bool = True) -> None:
        """Publish the NDEATH (as the specification asks before an intended disconnect)
        and disconnect."""
        if self._client is None:
            return
        if graceful_death:
            self.publish([self.ndeath()])
        self._client.disconnect()
        self._client.loop_stop()
        self._client = None


def station_result(
    sim: EdgeNodeSimulator,
    device_id: str,
    *,
    serial: str,
    fill_mass_g: float,
    ok: bool,
    cycle_time_s: float = 11.8,
    at: datetime | None = None,
) -> Publication:
    """One fill-station cycle as the PLC publishes it: one DDATA with all result metrics."""
    return sim.ddata(
        device_id,
        {
            "Unit/Serial": serial,
            "Fill/Mass": fill_mass_g,
            "Result/OK": ok,
            "Status/Cycle Time": cycle_time_s,
        },
        timestamp_ms=codec.datetime_to_ms(at) if at else None,
    )
