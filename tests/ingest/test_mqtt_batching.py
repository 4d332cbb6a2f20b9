"""The MQTT worker's batching and acknowledgement rules, in-process with a stand-in for
paho's client (no broker): a message is acknowledged only after its batch committed, never
when the database failed, never on a later connection; commands are skipped; a stop
commits the batch in hand."""

import hashlib
import re

import paho.mqtt.client as mqtt
import pytest
from django.db import OperationalError
from paho.mqtt.reasoncodes import ReasonCode

from genealogy.models import Measurement
from qms.ingest.models import DeadLetter, IngestMessage, IngestStat
from qms.ingest.services import ingest_raw
from qms.mqtt import worker as worker_module
from qms.mqtt.worker import IngestWorker, WorkerConfig
from tests.ingest.mqtt_support import FILL_TOPIC, encode, fill_result, id_prefix

pytestmark = pytest.mark.django_db

RUN = "0a1b2c3d"


class StandInClient:
    """Records what the worker asks of paho's client."""

    def __init__(self):
        self.acks: list[int] = []
        self.subscriptions: list[tuple[str, int]] = []
        self.connected_with: dict = {}
        self.disconnected = False

    def reconnect_delay_set(self, min_delay, max_delay):
        self.reconnect_delays = (min_delay, max_delay)

    def ack(self, mid, qos):
        self.acks.append(mid)

    def subscribe(self, topic, options=None):
        self.subscriptions.append((topic, options.QoS))

    def connect_async(self, host, port, **kwargs):
        self.connected_with = {"host": host, "port": port, **kwargs}

    def loop_start(self):
        pass

    def disconnect(self):
        self.disconnected = True

    def loop_stop(self):
        pass


class Flags:
    session_present = False


def make_worker(**options) -> tuple[IngestWorker, StandInClient]:
    client = StandInClient()
    config = WorkerConfig(
        url="mqtt://127.0.0.1:1883", group="line-1", client_id="ingest-1", **options
    )
    return IngestWorker(config, client=client), client


def deliver(worker: IngestWorker, topic: str, payload: bytes, mid: int, qos: int = 1) -> None:
    """What paho's network thread does with a PUBLISH: call on_message."""
    message = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    message.payload = payload
    message.qos = qos
    worker._on_message(worker.client, None, message)


def connect(worker: IngestWorker) -> None:
    worker._on_connect(worker.client, None, Flags(), ReasonCode(2, "Success"), None)


def cell(n: int, mass_g: float = 410.2) -> bytes:
    return encode(fill_result(n, mass_g=mass_g, run=RUN))


def stored() -> list[str]:
    return sorted(
        IngestMessage.objects.filter(message_id__startswith=id_prefix(RUN)).values_list(
            "message_id", flat=True
        )
    )


def test_connects_with_a_persistent_session_and_subscribes_shared_at_qos_1():
    worker, client = make_worker(batch_size=250)
    client.loop_start = lambda: worker.request_stop()
    worker.run()
    props = client.connected_with["properties"]
    assert client.connected_with["clean_start"] is False
    assert (props.SessionExpiryInterval, props.ReceiveMaximum) == (86_400, 1000)
    assert client.disconnected
    connect(worker)
    assert client.subscriptions == [("$share/line-1/qms/+/+/+/+", 1)]


def test_a_batch_is_acknowledged_only_after_it_committed(plant, monkeypatch):
    worker, client = make_worker()
    connect(worker)
    acks_when_applying = []

    def applying(messages, **kwargs):
        acks_when_applying.append(list(client.acks))
        return ingest_raw(messages, **kwargs)

    monkeypatch.setattr(worker_module, "ingest_raw", applying)
    for mid in (11, 12, 13):
        deliver(worker, FILL_TOPIC, cell(mid), mid)

    outcomes = worker.process(worker.collect())

    assert [o.status for o in outcomes] == ["accepted"] * 3
    assert acks_when_applying == [[]]
    assert client.acks == [11, 12, 13]
    assert stored() == [f"{id_prefix(RUN)}0000{n}" for n in (11, 12, 13)]
    assert Measurement.objects.filter(source_message_id__startswith=id_prefix(RUN)).count() == 3


def test_a_batch_the_database_refused_is_retried_then_acknowledged(plant, monkeypatch):
    worker, client = make_worker(retry_min_s=0.01)
    connect(worker)
    calls = []

    def database_away_once(messages, **kwargs):
        calls.append(list(client.acks))
        if len(calls) == 1:
            raise OperationalError("connection to server at 127.0.0.1:5432 refused")
        return ingest_raw(messages, **kwargs)

    monkeypatch.setattr(worker_module, "ingest_raw", database_away_once)
    deliver(worker, FILL_TOPIC, cell(1), 101)
    deliver(worker, FILL_TOPIC, cell(2), 102)

    outcomes = worker.process(worker.collect())

    assert calls == [[], []]  # nothing acknowledged before the second, successful try
    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert client.acks == [101, 102]
    assert worker.totals.retries == 1
    assert len(stored()) == 2


def test_a_stop_while_the_database_is_away_acknowledges_nothing(plant, monkeypatch):
    worker, client = make_worker(retry_min_s=0.01)
    connect(worker)

    def database_away(messages, **kwargs):
        worker.request_stop()
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(worker_module, "ingest_raw", database_away)
    deliver(worker, FILL_TOPIC, cell(1), 7)

    assert worker.process(worker.collect()) is None
    assert client.acks == []
    assert stored() == []


def test_stop_commits_and_acknowledges_the_batch_in_hand_then_disconnects(plant, monkeypatch):
    worker, client = make_worker(batch_size=2)
    connect(worker)
    for mid in (1, 2, 3):
        deliver(worker, FILL_TOPIC, cell(mid), mid)

    def then_stop(messages, **kwargs):
        outcomes = ingest_raw(messages, **kwargs)
        worker.request_stop()  # SIGTERM arrives while the first batch commits
        return outcomes

    monkeypatch.setattr(worker_module, "ingest_raw", then_stop)
    worker.run()

    assert client.acks == [1, 2]
    assert client.disconnected
    assert stored() == [f"{id_prefix(RUN)}00000{n}" for n in (1, 2)]
    # Taken no more: the third stays unacknowledged, for the broker to deliver again.
    deliver(worker, FILL_TOPIC, cell(4), 4)
    assert worker.queue.qsize() == 1


def test_messages_of_an_earlier_connection_are_stored_but_not_acknowledged(plant):
    worker, client = make_worker()
    connect(worker)
    deliver(worker, FILL_TOPIC, cell(1), 5)
    worker._on_disconnect(client, None, None, ReasonCode(2, "Unspecified error"), None)
    connect(worker)  # packet id 5 may name another message on this connection
    deliver(worker, FILL_TOPIC, cell(2), 5)

    outcomes = worker.process(worker.collect())

    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert client.acks == [5]  # the second message's id, once
    assert worker.totals.not_acked == 1
    assert len(stored()) == 2


def test_redelivered_messages_are_acknowledged_as_duplicates(plant):
    worker, client = make_worker()
    connect(worker)
    deliver(worker, FILL_TOPIC, cell(1), 1)
    worker.process(worker.collect())
    deliver(worker, FILL_TOPIC, cell(1), 9)  # the broker's redelivery after a restart

    [outcome] = worker.process(worker.collect())

    assert (outcome.status, outcome.reason) == ("duplicate", "applied before")
    assert client.acks == [1, 9]
    assert Measurement.objects.filter(source_message_id__startswith=id_prefix(RUN)).count() == 1


def test_command_topics_are_acknowledged_and_skipped():
    worker, client = make_worker()
    connect(worker)
    deliver(worker, "qms/gf1/l1-pri/fill/command", b'{"kind": "line_stop"}', 31)
    assert client.acks == [31]
    assert worker.queue.qsize() == 0


def test_topic_and_envelope_disagreeing_is_a_dead_letter(plant):
    worker, client = make_worker()
    connect(worker)
    misplaced = cell(3)
    deliver(worker, "qms/gf1/l1-pri/coat-c/process_result", misplaced, 1)
    deliver(worker, FILL_TOPIC, cell(4), 2)
    deliver(worker, "qms/gf1/l1-pri/fill/consumption", cell(5), 3)

    outcomes = worker.process(worker.collect())

    assert sorted(o.status for o in outcomes) == ["accepted", "rejected", "rejected"]
    assert client.acks == [1, 2, 3]
    assert stored() == [f"{id_prefix(RUN)}000004"]
    entry = DeadLetter.objects.get(raw_sha256=hashlib.sha256(misplaced).hexdigest())
    assert (entry.transport, entry.origin, entry.field) == (
        "mqtt",
        "qms/gf1/l1-pri/coat-c/process_result",
        "station",
    )
    assert entry.message_id == f"{id_prefix(RUN)}000003"
    assert bytes(entry.raw) == misplaced
    kind = DeadLetter.objects.get(origin="qms/gf1/l1-pri/fill/consumption")
    assert kind.reason == (
        "The topic names kind 'consumption' but the envelope names 'process_result': a "
        "message is published on its own station's topic."
    )
    stat = IngestStat.objects.get(transport="mqtt")  # counted like any refusal
    assert (stat.accepted, stat.rejected) == (1, 2)


def test_a_batch_closes_at_its_size_or_its_time():
    worker, _ = make_worker(batch_size=2, batch_ms=30)
    for mid in (1, 2, 3):
        deliver(worker, FILL_TOPIC, b"{}", mid)
    assert [r.mid for r in worker.collect()] == [1, 2]
    ticks = iter([0.0, 0.01, 0.02, 0.031, 0.04])
    worker._clock = lambda: next(ticks)
    assert [r.mid for r in worker.collect(idle_s=0.001)] == [3]
    assert worker.collect(idle_s=0.001) == []


def test_receive_maximum_covers_several_batches():
    assert make_worker(batch_size=500)[0].config.effective_receive_maximum == 2000
    assert make_worker(batch_size=10)[0].config.effective_receive_maximum == 100
    assert make_worker(batch_size=50_000)[0].config.effective_receive_maximum == 65_535
    assert make_worker(receive_maximum=300)[0].config.effective_receive_maximum == 300


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1."),
        ({"group": "line/1"}, "'line/1' cannot name a shared subscription group."),
        ({"url": "http://broker"}, "'http://broker' is not an mqtt:// or mqtts:// URL."),
    ],
)
def test_bad_worker_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        WorkerConfig(**{"url": "mqtt://127.0.0.1", **options})
