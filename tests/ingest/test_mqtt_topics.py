"""The MQTT topic scheme, the broker URL, and the topic/envelope agreement check."""

import json

import pytest

from qms.mqtt.broker import BrokerAddress, parse_url
from qms.mqtt.topics import StationTopic, parse_topic, shared_subscription, topic_mismatch


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883)),
        ("mqtt://broker.gf1.plant", BrokerAddress("broker.gf1.plant", 1883)),
        (
            "mqtts://qms-ingest:s3cr%40t@broker.gf1.plant",
            BrokerAddress("broker.gf1.plant", 8883, True, "qms-ingest", "s3cr@t"),
        ),
        ("tcp://10.20.0.5:11883", BrokerAddress("10.20.0.5", 11883)),
    ],
)
def test_broker_urls(url, address):
    assert parse_url(url) == address


@pytest.mark.parametrize("url", ["http://broker:1883", "mqtt://", "127.0.0.1:1883"])
def test_urls_that_name_no_broker_are_refused(url):
    with pytest.raises(ValueError):
        parse_url(url)


def test_topics_of_the_scheme_and_others():
    assert parse_topic("qms/gf1/l1-pri/fill/process_result") == StationTopic(
        "gf1", "l1-pri", "fill", "process_result"
    )
    assert parse_topic("qms/gf1/l1-pri/fill/command").is_command
    assert parse_topic("qms/gf1/l1-pri/fill") is None
    assert parse_topic("spBv1.0/gf1/NDATA/fill-01") is None
    assert parse_topic("qms/gf1//fill/process_result") is None


def test_shared_subscription_of_a_group():
    assert shared_subscription("qms-ingest") == "$share/qms-ingest/qms/+/+/+/+"
    with pytest.raises(ValueError):
        shared_subscription("a/b")


def envelope(**overrides) -> bytes:
    doc = {
        "message_id": "FILL-01:000123",
        "site": "GF1",
        "line": "L1-PRI",
        "station": "fill",
        "kind": "process_result",
    }
    return json.dumps(doc | overrides).encode()


TOPIC = parse_topic("qms/gf1/l1-pri/fill/process_result")


def test_codes_agree_regardless_of_case():
    assert topic_mismatch(TOPIC, envelope()) is None


@pytest.mark.parametrize(
    ("overrides", "field", "given"),
    [
        ({"site": "gf2"}, "site", "gf2"),
        ({"line": "l2-cyl"}, "line", "l2-cyl"),
        ({"station": "coat-c"}, "station", "coat-c"),
        ({"kind": "Process_Result"}, "kind", "Process_Result"),
    ],
)
def test_each_disagreement_names_its_field(overrides, field, given):
    mismatch = topic_mismatch(TOPIC, envelope(**overrides))
    assert (mismatch.field, mismatch.message_id, mismatch.kind) == (
        field,
        "FILL-01:000123",
        overrides.get("kind", "process_result"),
    )
    assert f"but the envelope names {given!r}" in mismatch.reason


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"[1, 2]", b"\xff\xfe", json.dumps({"station": 7}).encode(), b"{}"],
)
def test_what_is_not_an_envelope_is_left_to_validation(payload):
    assert topic_mismatch(TOPIC, payload) is None
