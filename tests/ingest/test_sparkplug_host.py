"""The Sparkplug B host application's logic, without a broker or a database: birth cache,
aliases, sequence numbers, rebirth requests, deaths, and the envelopes it builds."""

import json
from datetime import UTC, datetime

import pytest

from qms.sparkplug import codec
from qms.sparkplug import sparkplug_b_pb2 as pb
from qms.sparkplug.codec import MetricOut
from qms.sparkplug.edge import (
    EdgeNodeSimulator,
    MetricSpec,
    fill_station_metrics,
    station_result,
)
from qms.sparkplug.host import SparkplugHost, message_id_for
from qms.sparkplug.mapping import MappedMetric, MappingIndex

GROUP, NODE, DEVICE = "GF1-L1", "FILL-PLC-01", "fill"
T0 = datetime(2026, 3, 2, 6, 14, 55, 120000, tzinfo=UTC)
T0_MS = codec.datetime_to_ms(T0)
RECEIVED = datetime(2026, 3, 2, 6, 14, 55, 180000, tzinfo=UTC)


def _row(name, role, **kw):
    return MappedMetric(NODE, DEVICE, name, role, "gf1", "l1-pri", "fill", 3, **kw)


FILL_MAPPING = [
    _row("Unit/Serial", "serial", unit_kind="cell"),
    _row(
        "Fill/Mass",
        "measurement",
        characteristic="electrolyte-fill-mass",
        characteristic_unit="g",
        unit="g",
    ),
    _row("Result/OK", "result"),
    _row("Recipe/Program", "program"),
    _row("Status/Cycle Time", "ignore"),
]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def host(clock):
    return SparkplugHost(
        group_id=GROUP,
        host_id="celltrace-GF1-L1",
        mappings=MappingIndex(GROUP, FILL_MAPPING),
        rebirth_interval_s=5.0,
        clock=clock,
    )


def make_edge(metrics=None):
    ms = iter(range(T0_MS, T0_MS + 10_000_000, 1000))
    return EdgeNodeSimulator(
        GROUP,
        NODE,
        {DEVICE: metrics or fill_station_metrics()},
        bd_seq=7,
        clock_ms=lambda: next(ms),
    )


@pytest.fixture
def edge():
    return make_edge()


def feed(host, *publications):
    results = [host.handle(p.topic, p.payload, RECEIVED) for p in publications]
    return results[0] if len(results) == 1 else results


def born(host, edge):
    nbirth, dbirth = feed(host, *edge.births())
    assert not nbirth.dead_letters and not dbirth.dead_letters
    return nbirth, dbirth


def rebirths(result):
    return [c for c in result.commands if "/NCMD/" in c.topic]


def test_births_fill_the_cache_with_names_aliases_and_datatypes(host, edge):
    nbirth, dbirth = born(host, edge)
    node = host.nodes[NODE]
    assert (node.online, node.bd_seq, node.last_seq) == (True, 7, 1)
    assert {a: (d.name, d.datatype, d.device_id) for a, d in node.aliases.items()} == {
        1: ("Unit/Serial", pb.String, DEVICE),
        2: ("Fill/Mass", pb.Double, DEVICE),
        3: ("Result/OK", pb.Boolean, DEVICE),
        4: ("Recipe/Program", pb.String, DEVICE),
        5: ("Status/Cycle Time", pb.Float, DEVICE),
    }
    assert node.devices[DEVICE].by_name["Fill/Mass"].eng_unit == "g"
    assert [e.kind for e in nbirth.events + dbirth.events] == ["nbirth", "dbirth"]
    assert nbirth.events[0].bd_seq == 7
    assert not nbirth.envelopes and not dbirth.envelopes  # births are state, not results


def test_ddata_with_aliases_becomes_one_process_result(host, edge):
    born(host, edge)
    publication = station_result(
        edge, DEVICE, serial="P12640000417", fill_mass_g=410.3, ok=True, at=T0
    )
    result = feed(host, publication)
    assert not result.dead_letters and not result.commands
    (raw,) = result.envelopes
    assert (raw.transport, raw.origin, raw.received_at) == (
        "sparkplug",
        "spBv1.0/GF1-L1/DDATA/FILL-PLC-01/fill",
        RECEIVED,
    )
    assert json.loads(raw.payload) == {
        "message_id": f"spb:GF1-L1:FILL-PLC-01:fill:7:2:{T0_MS}",
        "schema": "celltrace.envelope/1",
        "source": "spb:GF1-L1/FILL-PLC-01/fill",
        "sent_at": "2026-03-02T06:14:55.120000+00:00",
        "site": "gf1",
        "line": "l1-pri",
        "station": "fill",
        "kind": "process_result",
        "unit": "P12640000417",
        "payload": {
            "result": "ok",
            "program": "NMC811-105AH-FILL-V3",  # unchanged since the birth: not resent
            "unit_kind": "cell",
            "measurements": [
                {
                    "characteristic": "electrolyte-fill-mass",
                    "value": 410.3,
                    "unit": "g",
                    "measured_at": "2026-03-02T06:14:55.120000+00:00",
                }
            ],
        },
    }


def test_unchanged_result_is_carried_over_but_measurements_never_are(host, edge):
    born(host, edge)
    feed(host, station_result(edge, DEVICE, serial="P12640000417", fill_mass_g=410.3, ok=False))
    # Next cycle: result NOK again (not resent, report by exception), no mass measured.
    result = feed(host, edge.ddata(DEVICE, {"Unit/Serial": "P12640000418"}))
    body = json.loads(result.envelopes[0].payload)["payload"]
    assert body["result"] == "nok"
    assert "measurements" not in body


def test_seq_wraps_from_255_to_0_without_a_rebirth(host, edge):
    born(host, edge)
    edge.seq = 253  # the next DDATA has seq 254
    host.nodes[NODE].last_seq = 253
    results = feed(
        host,
        *[
            station_result(edge, DEVICE, serial=f"P1264000050{i}", fill_mass_g=410.0, ok=True)
            for i in range(4)
        ],
    )
    assert [json.loads(r.envelopes[0].payload)["message_id"].split(":")[5] for r in results] == [
        "254",
        "255",
        "0",
        "1",
    ]
    assert all(not r.commands and not r.dead_letters for r in results)
    assert host.nodes[NODE].last_seq == 1


def test_a_gap_requests_a_rebirth_and_the_message_is_still_applied(host, edge):
    born(host, edge)
    edge.skip_seq()  # seq 2 is lost
    result = feed(
        host, station_result(edge, DEVICE, serial="P12640000417", fill_mass_g=410.1, ok=True)
    )
    (command,) = rebirths(result)
    assert command.topic == "spBv1.0/GF1-L1/NCMD/FILL-PLC-01"
    request = pb.Payload.FromString(command.payload)
    assert [(m.name, m.boolean_value) for m in request.metrics] == [("Node Control/Rebirth", True)]
    assert len(result.envelopes) == 1  # aliases are still valid in this session
    assert [(e.kind, e.reason) for e in result.events] == [
        ("seq_gap", "sequence gap: expected 2, got 3 on DDATA"),
        ("rebirth", "sequence gap: expected 2, got 3 on DDATA"),
    ]


def test_rebirth_requests_are_spaced_until_the_new_birth(host, edge, clock):
    born(host, edge)
    edge.skip_seq()
    first = feed(
        host, station_result(edge, DEVICE, serial="P12640000417", fill_mass_g=410.1, ok=True)
    )
    edge.skip_seq()
    clock.now += 1.0
    second = feed(
        host, station_result(edge, DEVICE, serial="P12640000418", fill_mass_g=410.2, ok=True)
    )
    assert (len(rebirths(first)), len(rebirths(second))) == (1, 0)
    # The edge node answers the request: a new NBIRTH of the same session, seq from 0.
    answer = edge.handle_command(first.commands[0].topic, first.commands[0].payload)
    assert [p.topic.split("/")[2] for p in answer] == ["NBIRTH", "DBIRTH"]
    feed(host, *answer)
    assert host.nodes[NODE].rebirth_requested_at is None
    edge.skip_seq()
    third = feed(
        host, station_result(edge, DEVICE, serial="P12640000419", fill_mass_g=410.0, ok=True)
    )
    assert len(rebirths(third)) == 1
    clock.now += 5.0
    edge.skip_seq()
    fourth = feed(
        host, station_result(edge, DEVICE, serial="P12640000420", fill_mass_g=410.0, ok=True)
    )
    assert len(rebirths(fourth)) == 1


def test_unknown_alias_dead_letters_the_message_and_requests_a_rebirth(host, edge):
    born(host, edge)
    publication = edge.ddata(
        DEVICE, {"Unit/Serial": "P12640000417", "Fill/Mass": 410.2}, alias={"Fill/Mass": 99}
    )
    result = feed(host, publication)
    assert result.envelopes == []
    (dead,) = result.dead_letters
    assert dead.raw == publication.payload
    assert dead.origin == "spBv1.0/GF1-L1/DDATA/FILL-PLC-01/fill"
    assert dead.reason == (
        "Alias 99 is not in the birth certificate of FILL-PLC-01/fill (rebirth requested)."
    )
    assert dead.field == "metrics[1].alias"
    assert dead.message_id.startswith("spb:GF1-L1:FILL-PLC-01:fill:7:2:")
    assert len(rebirths(result)) == 1
    assert [e.kind for e in result.events] == ["unknown_alias", "rebirth"]


def test_data_before_any_birth_is_dead_lettered_and_a_rebirth_requested(host, edge):
    edge.births()  # published before this host started: it never saw them
    publication = station_result(edge, DEVICE, serial="P12640000417", fill_mass_g=410.2, ok=True)
    result = feed(host, publication)
    (dead,) = result.dead_letters
    assert dead.reason == (
        "DDATA from edge node 'FILL-PLC-01' without a birth certificate in this host "
        "(rebirth requested)."
    )
    assert len(rebirths(result)) == 1


def test_ndeath_with_the_session_bdseq_marks_node_and_devices_offline(host, edge):
    born(host, edge)
    result = feed(host, edge.ndeath())
    node = host.nodes[NODE]
    assert (node.online, node.devices[DEVICE].online) == (False, False)
    assert [(e.kind, e.bd_seq) for e in result.events] == [("ndeath", 7)]
    # Data after the death cannot be trusted to the old aliases.
    late = feed(
        host, station_result(edge, DEVICE, serial="P12640000417", fill_mass_g=410.2, ok=True)
    )
    assert late.envelopes == [] and len(late.dead_letters) == 1


def test_ndeath_of_an_older_session_is_ignored(host, edge):
    born(host, edge)
    result = feed(host, edge.ndeath(bd_seq=6))  # a late will of the previous connection
    assert result.events == []
    assert host.nodes[NODE].online is True


def test_ddeath_marks_the_device_offline_and_counts_in_the_sequence(host, edge):
    born(host, edge)
    result = feed(host, edge.ddeath(DEVICE))
    assert [e.kind for e in result.events] == ["ddeath"]
    assert host.nodes[NODE].devices[DEVICE].online is False
    assert host.nodes[NODE].last_seq == 2
    after = feed(
        host, station_result(edge, DEVICE, serial="P12640000417", fill_mass_g=410.2, ok=True)
    )
    assert after.dead_letters[0].reason.startswith("DDATA from device 'fill' that has no DBIRTH")


def test_bad_protobuf_is_dead_lettered_with_its_bytes(host, edge):
    born(host, edge)
    raw = b"\x12\x20\x0a\x09Fill"
    result = host.handle("spBv1.0/GF1-L1/DDATA/FILL-PLC-01/fill", raw, RECEIVED)
    (dead,) = result.dead_letters
    assert dead.raw == raw
    assert dead.reason.startswith("Not a Sparkplug B protobuf payload:")
    assert result.envelopes == [] and result.commands == []


def test_unmapped_metric_is_dead_lettered(host):
    edge = make_edge([*fill_station_metrics(), MetricSpec("Nozzle/Temperature", pb.Float, 24.0)])
    born(host, edge)
    result = feed(
        host,
        edge.ddata(
            DEVICE,
            {"Unit/Serial": "P12640000417", "Result/OK": True, "Nozzle/Temperature": 24.5},
        ),
    )
    assert result.envelopes == []
    assert result.dead_letters[0].reason == (
        "Metrics of GF1-L1/FILL-PLC-01/fill not mapped: 'Nozzle/Temperature'. Map them (role "
        "'ignore' for metrics that are not quality data)."
    )


def test_device_without_any_mapping_is_dead_lettered(edge, clock):
    host = SparkplugHost(group_id=GROUP, host_id="h", mappings=MappingIndex(GROUP, []), clock=clock)
    born(host, edge)
    result = feed(
        host, station_result(edge, DEVICE, serial="P12640000417", fill_mass_g=410.2, ok=True)
    )
    assert result.dead_letters[0].reason == (
        "No metric of GF1-L1/FILL-PLC-01/fill is mapped to a station (Sparkplug metric mappings)."
    )


def test_status_change_without_serial_is_not_a_result(host, edge):
    born(host, edge)
    result = feed(host, edge.ddata(DEVICE, {"Status/Cycle Time": 12.1}))
    assert not result  # nothing to ingest, nothing wrong


def test_measurement_without_serial_is_dead_lettered(host, edge):
    born(host, edge)
    result = feed(host, edge.ddata(DEVICE, {"Fill/Mass": 410.2}))
    assert result.dead_letters[0].reason.startswith(
        "Measurements (Fill/Mass) without the unit serial metric in the same DDATA"
    )


def test_engineering_unit_of_the_birth_must_match_the_mapping(host):
    metrics = fill_station_metrics()
    metrics[1] = MetricSpec("Fill/Mass", pb.Double, 0.0, "kg")
    edge = make_edge(metrics)
    born(host, edge)
    result = feed(
        host, station_result(edge, DEVICE, serial="P12640000417", fill_mass_g=0.4102, ok=True)
    )
    assert result.dead_letters[0].reason == (
        "Metric 'Fill/Mass' is published in 'kg' (birth engUnit) but mapped as 'g': values are "
        "not converted."
    )
    assert result.dead_letters[0].field == "metrics[1]"


def test_message_id_is_deterministic_and_escaped():
    topic = codec.Topic("GF1 L1", "DDATA", "FILL:PLC", "füll")
    mid = message_id_for(topic, bd_seq=0, seq=255, timestamp_ms=T0_MS)
    assert mid == f"spb:GF1%20L1:FILL%3APLC:f%C3%BCll:0:255:{T0_MS}"
    assert message_id_for(topic, bd_seq=0, seq=255, timestamp_ms=T0_MS) == mid
    long = codec.Topic("G" * 60, "DDATA", "N" * 60, "D" * 60)
    assert len(message_id_for(long, bd_seq=1, seq=2, timestamp_ms=T0_MS)) <= 128


def test_commands_and_other_groups_are_ignored(host, edge):
    born(host, edge)
    ncmd = codec.topic_for(GROUP, "NCMD", NODE)
    assert not host.handle(ncmd, codec.rebirth_request(timestamp_ms=T0_MS), RECEIVED)
    other = edge.ddata(DEVICE, {"Unit/Serial": "P12640000417"})
    assert not host.handle(other.topic.replace(GROUP, "GF1-L2"), other.payload, RECEIVED)


def test_alias_reused_in_a_birth_is_reported(host):
    nbirth = codec.encode_payload(
        [MetricOut(name="bdSeq", value=0, datatype=pb.UInt64)], timestamp_ms=T0_MS, seq=0
    )
    host.handle(codec.topic_for(GROUP, "NBIRTH", NODE), nbirth, RECEIVED)
    dbirth = codec.encode_payload(
        [
            MetricOut(name="Unit/Serial", alias=1, value="", datatype=pb.String),
            MetricOut(name="Fill/Mass", alias=1, value=0.0, datatype=pb.Double),
        ],
        timestamp_ms=T0_MS,
        seq=1,
    )
    result = host.handle(codec.topic_for(GROUP, "DBIRTH", NODE, DEVICE), dbirth, RECEIVED)
    assert result.dead_letters[0].reason == (
        "DBIRTH is not valid Sparkplug: alias 1 of 'Fill/Mass' is already used by "
        "'Unit/Serial' of device 'fill'"
    )
