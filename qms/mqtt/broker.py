"""Connecting to the MQTT broker: ``MQTT_URL`` parsing and MQTT 5 clients (paho-mqtt 2.x).

``MQTT_URL`` is ``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://...``
(TLS with the system's CA certificates, port 8883).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

#: MQTT 5 allows at most 65,535 unacknowledged QoS 1/2 messages towards a client.
RECEIVE_MAXIMUM_LIMIT = 65_535


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"


def parse_url(url: str) -> BrokerAddress:
    """The broker named by an ``mqtt://`` or ``mqtts://`` URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"{url!r} is not an mqtt:// or mqtts:// URL.")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host.")
    tls = parts.scheme in ("mqtts", "ssl")
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def new_client(address: BrokerAddress, *, client_id: str, manual_ack: bool = False) -> mqtt.Client:
    """An MQTT 5 client with the version-2 callback signatures, credentials and TLS set."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()
    return client


def connect_properties(*, session_expiry_s: int, receive_maximum: int | None = None) -> Properties:
    """CONNECT properties: how long the broker keeps the session (subscription and queued
    messages) after a disconnect, and how many unacknowledged QoS 1 messages it may send."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = max(1, min(receive_maximum, RECEIVE_MAXIMUM_LIMIT))
    return props
