"""Sparkplug B over a real Mosquitto: the host application (``HostClient``, as
``ingest_sparkplug`` runs it) and a simulated fill-station edge node. Births, data with
aliases, a lost message that makes the host ask for a rebirth on the broker, the edge
node's answer, and its death; every station result stored exactly once."""

import io
import json
import threading
import time
import uuid
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import pytest
from django.conf import settings
from django.core.management import call_command

from genealogy.models import Measurement, StationVisit
from qms.ingest.models import DeadLetter, IngestMessage
from qms.sparkplug import codec
from qms.sparkplug.client import HostClient
from qms.sparkplug.edge import EdgeNodeSimulator, fill_station_metrics, station_result
from qms.sparkplug.models import SparkplugEdgeNode
from tests.conftest import require_service
from tests.ingest.test_sparkplug_deliver import map_fill_station

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

NODE, DEVICE = "FILL-PLC-01", "fill"


class Observer:
    """A plain MQTT client that records what the host publishes on the broker."""

    def __init__(self, url, topics):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"obs-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(url.hostname, url.port or 1883)
        self.client.loop_start()
        assert self._ready.wait(5), "observer could not subscribe"

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic):
        with self._lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def pump(host, until, *, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        host.process(wait_s=0.05)
        if until():
            return
    raise AssertionError("condition not reached within the timeout")


def test_births_data_gap_rebirth_and_death_over_mosquitto(plant):
    require_service("Mosquitto (MQTT_URL)", bool(settings.MQTT_URL))
    url = urlparse(settings.MQTT_URL)
    group = f"GF1-T{uuid.uuid4().hex[:6].upper()}"
    host_id = f"celltrace-test-{group}"
    map_fill_station(plant, group=group)
    state_topic = codec.state_topic(host_id)
    ncmd_topic = codec.topic_for(group, "NCMD", NODE)
    observer = Observer(url, [state_topic, ncmd_topic])
    host = HostClient(
        mqtt_url=settings.MQTT_URL, group_id=group, host_id=host_id, rebirth_interval_s=0.5
    )
    edge = EdgeNodeSimulator(group, NODE, {DEVICE: fill_station_metrics()}, bd_seq=0)
    try:
        host.start()
        pump(host, lambda: observer.on(state_topic))
        birth = json.loads(observer.on(state_topic)[0][0])
        assert birth["online"] is True
        assert abs(birth["timestamp"] - time.time() * 1000) < 60_000

        edge.connect(settings.MQTT_URL)
        pump(host, lambda: DEVICE in getattr(host.host.nodes.get(NODE), "devices", {}))

        masses = [410.3, 409.8, 411.2, 410.0, 410.6]
        for i, mass in enumerate(masses):
            edge.send(
                lambda i=i, mass=mass: station_result(
                    edge, DEVICE, serial=f"P126400{i:05d}", fill_mass_g=mass, ok=True
                )
            )
        pump(host, lambda: IngestMessage.objects.filter(transport="sparkplug").count() == 5)

        # A DDATA is lost: the next one shows the gap, the host asks for a rebirth.
        def lost_then_result():
            edge.skip_seq()
            return station_result(edge, DEVICE, serial="P12640000005", fill_mass_g=410.1, ok=True)

        edge.send(lost_then_result)
        pump(host, lambda: observer.on(ncmd_topic))
        request = codec.decode_payload(observer.on(ncmd_topic)[0][0])
        assert [(m.name, m.value) for m in request.metrics] == [("Node Control/Rebirth", True)]
        # The simulator answered with NBIRTH + DBIRTH of the same session (seq from 0).
        pump(host, lambda: host.host.nodes[NODE].rebirth_requested_at is None)
        for i, mass in ((6, 409.9), (7, 410.4)):
            edge.send(
                lambda i=i, mass=mass: station_result(
                    edge, DEVICE, serial=f"P126400{i:05d}", fill_mass_g=mass, ok=True
                )
            )
        pump(host, lambda: IngestMessage.objects.filter(transport="sparkplug").count() == 8)

        # The host restarts: its birth cache is empty, it asks the edge node it knew for
        # its births instead of dead-lettering the next result.
        host.stop()
        host = HostClient(mqtt_url=settings.MQTT_URL, group_id=group, host_id=host_id)
        host.start()
        pump(host, lambda: DEVICE in getattr(host.host.nodes.get(NODE), "devices", {}))
        edge.send(
            lambda: station_result(edge, DEVICE, serial="P12640000008", fill_mass_g=410.8, ok=True)
        )
        pump(host, lambda: IngestMessage.objects.filter(transport="sparkplug").count() == 9)

        edge.disconnect()  # publishes the NDEATH with bdSeq 0
        pump(host, lambda: SparkplugEdgeNode.objects.filter(online=False).exists())
    finally:
        edge.disconnect(graceful_death=False)
        host.stop()
        time.sleep(0.2)
        states = [json.loads(p) for p, _ in observer.on(state_topic)]
        requests = observer.on(ncmd_topic)
        observer.client.publish(state_topic, b"", qos=1, retain=True).wait_for_publish(5)
        observer.close()

    assert [s["online"] for s in states] == [True, False, True, False]
    assert states[2]["timestamp"] == states[3]["timestamp"]  # birth and death of a session
    assert len(requests) == 2  # the gap, and the restart
    values = sorted(Measurement.objects.values_list("unit__serial", "value"))
    assert values == sorted(
        [(f"P126400{i:05d}", m) for i, m in enumerate([*masses, 410.1, 409.9, 410.4, 410.8])]
    )
    assert StationVisit.objects.count() == 9
    assert DeadLetter.objects.count() == 0
    node = SparkplugEdgeNode.objects.get(group_id=group, edge_node_id=NODE)
    assert (node.seq_gaps, node.rebirth_requests, node.online, node.bd_seq) == (1, 2, False, 0)
    assert node.last_rebirth_reason == "host started"


def test_command_hosts_one_group(plant):
    require_service("Mosquitto (MQTT_URL)", bool(settings.MQTT_URL))
    url = urlparse(settings.MQTT_URL)
    group = f"GF1-T{uuid.uuid4().hex[:6].upper()}"
    host_id = f"celltrace-{group}"
    map_fill_station(plant, group=group)
    state_topic = codec.state_topic(host_id)
    observer = Observer(url, [state_topic])
    edge = EdgeNodeSimulator(group, NODE, {DEVICE: fill_station_metrics()}, bd_seq=3)

    def station():
        deadline = time.monotonic() + 10
        while not observer.on(state_topic) and time.monotonic() < deadline:
            time.sleep(0.05)
        edge.connect(settings.MQTT_URL)
        for i, mass in enumerate((410.2, 409.7)):
            edge.send(
                lambda i=i, mass=mass: station_result(
                    edge, DEVICE, serial=f"P126410{i:05d}", fill_mass_g=mass, ok=True
                )
            )
        edge.disconnect()

    worker = threading.Thread(target=station)
    worker.start()
    out = io.StringIO()
    try:
        call_command("ingest_sparkplug", "--group", group, "--max-seconds", "3", stdout=out)
    finally:
        worker.join(15)
        observer.client.publish(state_topic, b"", qos=1, retain=True).wait_for_publish(5)
        observer.close()
    assert f"Sparkplug host {host_id} online for group {group}" in out.getvalue()
    assert "2 accepted, 0 duplicate, 0 rejected, 0 dead letters, 0 rebirth requests" in (
        out.getvalue()
    )
    assert sorted(Measurement.objects.values_list("unit__serial", "value")) == [
        ("P12641000000", 410.2),
        ("P12641000001", 409.7),
    ]
    assert [json.loads(p)["online"] for p, _ in observer.on(state_topic) if p] == [True, False]
