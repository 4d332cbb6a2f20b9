"""Station commands out over MQTT: published at QoS 1 on the station's command topic and
recorded as sent; recorded as failed, with the error, when they cannot go out."""

import json
import threading
import uuid

import pytest

from qms.ingest.commands import command_payload, station_command_send
from qms.ingest.models import StationCommand
from qms.mqtt.broker import new_client, parse_url
from tests.factories import UserFactory
from tests.ingest.mqtt_support import free_port, require_mosquitto

pytestmark = pytest.mark.django_db

TOPIC = "qms/gf1/l1-pri/fill/command"


def line_stop(plant, django_capture_on_commit_callbacks) -> StationCommand:
    quality = UserFactory(username="q.eng", role="quality_engineer")
    with django_capture_on_commit_callbacks(execute=True):
        command = station_command_send(
            station=plant.stations["fill"],
            kind="line_stop",
            reason="Electrolyte fill mass 415.2 g over the 414.1 g limit on P126480000042",
            actor=quality,
            reference="H-2026-000017",
            unit_serials=["P126480000042"],
        )
    command.refresh_from_db()
    return command


@pytest.mark.services
@pytest.mark.timeout(30)
def test_line_stop_reaches_the_station_topic_and_is_recorded_sent(
    plant, django_capture_on_commit_callbacks
):
    address = parse_url(require_mosquitto())
    station = new_client(address, client_id=f"t-fill-01-plc-{uuid.uuid4().hex[:8]}")
    subscribed, received = threading.Event(), []
    got = threading.Event()
    station.on_subscribe = lambda *args: subscribed.set()

    def on_message(client, userdata, message):
        received.append((message.topic, message.qos, json.loads(message.payload)))
        got.set()

    station.on_message = on_message
    station.on_connect = lambda client, *args: client.subscribe(TOPIC, qos=1)
    station.connect(address.host, address.port)
    station.loop_start()
    try:
        assert subscribed.wait(10)
        command = line_stop(plant, django_capture_on_commit_callbacks)
        assert got.wait(10)
    finally:
        station.disconnect()
        station.loop_stop()

    assert (command.status, command.target, command.error) == ("sent", TOPIC, "")
    assert command.sent_at is not None
    [(topic, qos, payload)] = received
    assert (topic, qos) == (TOPIC, 1)
    assert payload == command_payload(command)
    assert payload["kind"] == "line_stop"
    assert payload["units"] == ["P126480000042"]
    assert payload["reference"] == "H-2026-000017"


@pytest.mark.timeout(30)
def test_unreachable_broker_records_the_command_failed_with_the_error(
    plant, settings, django_capture_on_commit_callbacks
):
    settings.MQTT_URL = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there

    command = line_stop(plant, django_capture_on_commit_callbacks)

    assert command.status == "failed"
    assert command.sent_at is None
    assert command.error.startswith("ConnectionRefusedError: ")


def test_without_mqtt_url_the_command_is_recorded_failed(
    plant, settings, django_capture_on_commit_callbacks
):
    settings.MQTT_URL = ""

    command = line_stop(plant, django_capture_on_commit_callbacks)

    assert (command.status, command.error) == (
        "failed",
        "CommandNotDelivered: MQTT_URL is not configured",
    )
    assert command.target == TOPIC
