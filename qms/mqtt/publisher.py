"""Station commands out over MQTT: the sender registered for ``command_transport = "mqtt"``.

A command (line stop, hold, release) is published as JSON
(:func:`qms.ingest.commands.command_payload`) at QoS 1 on
``qms/<site>/<line>/<station>/command`` and counts as sent once the broker acknowledged it
(PUBACK). Commands are rare and must not depend on a long-lived connection's state, so each
one opens its own short connection. Any failure (no ``MQTT_URL``, broker unreachable or
refusing, no PUBACK in time) raises; :func:`qms.ingest.commands.command_deliver` records the
command as failed with the error.
"""

from __future__ import annotations

import json
import threading
import uuid

import paho.mqtt.client as mqtt
from django.conf import settings
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from qms.ingest.commands import command_payload, command_topic
from qms.ingest.models import StationCommand

from .broker import connect_properties, new_client, parse_url

#: Seconds to connect, and then to get the PUBACK (``MQTT_COMMAND_TIMEOUT_S`` overrides).
DEFAULT_TIMEOUT_S = 5.0


class CommandNotDelivered(RuntimeError):
    """The broker did not take the command."""


def _timeout_s() -> float:
    return float(getattr(settings, "MQTT_COMMAND_TIMEOUT_S", DEFAULT_TIMEOUT_S))


def publish_once(*, url: str, topic: str, payload: bytes, timeout_s: float, client_id: str) -> None:
    """Publish one QoS 1 message on its own connection and wait for the broker's PUBACK."""
    address = parse_url(url)
    client = new_client(address, client_id=client_id)
    client.connect_timeout = timeout_s
    connected = threading.Event()
    acked = threading.Event()
    outcome: dict = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome["connack"] = reason_code
        connected.set()

    def on_publish(client, userdata, mid, reason_code, properties):
        outcome["puback"] = reason_code
        acked.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    # connect() raises OSError (refused, unreachable, timeout) straight away.
    client.connect(
        address.host,
        address.port,
        keepalive=max(5, int(timeout_s * 2)),
        clean_start=True,
        properties=connect_properties(session_expiry_s=0),
    )
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise TimeoutError(f"no CONNACK from {address} within {timeout_s:g} s")
        if outcome["connack"].is_failure:
            raise CommandNotDelivered(f"{address} refused the connection: {outcome['connack']}")
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        info = client.publish(topic, payload, qos=1, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise CommandNotDelivered(f"publish on {topic} failed: {mqtt.error_string(info.rc)}")
        if not acked.wait(timeout_s):
            raise TimeoutError(f"no PUBACK from {address} for {topic} within {timeout_s:g} s")
        if outcome["puback"].is_failure:
            raise CommandNotDelivered(f"{address} refused the command: {outcome['puback']}")
    finally:
        client.disconnect()
        client.loop_stop()


def command_send_mqtt(command: StationCommand) -> str:
    """Send ``command`` to its station's command topic; return the topic."""
    url = getattr(settings, "MQTT_URL", "")
    if not url:
        raise CommandNotDelivered("MQTT_URL is not configured")
    topic = command_topic(command.station)
    payload = json.dumps(command_payload(command), separators=(",", ":")).encode()
    publish_once(
        url=url,
        topic=topic,
        payload=payload,
        timeout_s=_timeout_s(),
        client_id=f"qms-command-{command.pk}-{uuid.uuid4().hex[:8]}",
    )
    return topic
