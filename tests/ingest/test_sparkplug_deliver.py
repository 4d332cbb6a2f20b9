"""The Sparkplug B host against the database: mappings from the admin's table, envelopes
through ``ingest_raw`` (exactly once), dead letters with the raw protobuf bytes, and the
edge-node records."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from genealogy.models import Measurement, StationVisit, Unit
from qms.ingest.models import DeadLetter, IngestMessage
from qms.sparkplug import codec
from qms.sparkplug.choices import MetricRole, UnitKind
from qms.sparkplug.client import HostClient
from qms.sparkplug.edge import EdgeNodeSimulator, fill_station_metrics, station_result
from qms.sparkplug.host import HostResult, SparkplugHost, deliver
from qms.sparkplug.mapping import MappingIndex
from qms.sparkplug.models import SparkplugEdgeNode, SparkplugMetricMap

GROUP, NODE, DEVICE = "GF1-L1", "FILL-PLC-01", "fill"


def map_fill_station(plant, group=GROUP, node=NODE, device=DEVICE):
    station = plant.stations["fill"]
    rows = [
        ("Unit/Serial", MetricRole.SERIAL, None, "", UnitKind.CELL),
        ("Fill/Mass", MetricRole.MEASUREMENT, plant.chars["fill_mass"], "g", ""),
        ("Result/OK", MetricRole.RESULT, None, "", ""),
        ("Recipe/Program", MetricRole.PROGRAM, None, "", ""),
        ("Status/Cycle Time", MetricRole.IGNORE, None, "", ""),
    ]
    return [
        SparkplugMetricMap.objects.create(
            group_id=group,
            edge_node_id=node,
            device_id=device,
            metric_name=name,
            role=role,
            station=station,
            characteristic=char,
            unit=unit,
            unit_kind=kind,
        )
        for name, role, char, unit, kind in rows
    ]


@pytest.fixture
def mapped(plant):
    map_fill_station(plant)
    return plant


def make_host(group=GROUP):
    return SparkplugHost(
        group_id=group, host_id=f"celltrace-{group}", mappings=MappingIndex.from_db(group)
    )


def run(host, *publications):
    outcomes = []
    for p in publications:
        outcomes += deliver(host.handle(p.topic, p.payload))
    return outcomes


def test_mapping_index_loads_active_rows_with_codes(mapped):
    SparkplugMetricMap.objects.filter(metric_name="Recipe/Program").update(is_active=False)
    index = MappingIndex.from_db(GROUP)
    rows = index.for_source(NODE, DEVICE)
    assert sorted(rows) == ["Fill/Mass", "Result/OK", "Status/Cycle Time", "Unit/Serial"]
    mass = rows["Fill/Mass"]
    assert (mass.site, mass.line, mass.station, mass.characteristic, mass.unit) == (
        "gf1",
        "l1-pri",
        "fill",
        "electrolyte-fill-mass",
        "g",
    )
    assert MappingIndex.from_db("GF1-L2").for_source(NODE, DEVICE) == {}


def test_measurement_mapping_needs_characteristic_and_unit(plant):
    with pytest.raises(IntegrityError), transaction.atomic():
        SparkplugMetricMap.objects.create(
            group_id=GROUP,
            edge_node_id=NODE,
            device_id=DEVICE,
            metric_name="Fill/Mass",
            role=MetricRole.MEASUREMENT,
            station=plant.stations["fill"],
        )
    assert SparkplugMetricMap.objects.count() == 0


def test_mapping_clean_refuses_foreign_characteristic_and_other_unit(plant):
    row = SparkplugMetricMap(
        group_id=GROUP,
        edge_node_id=NODE,
        device_id=DEVICE,
        metric_name="Coat/Weight",
        role=MetricRole.MEASUREMENT,
        station=plant.stations["fill"],
        characteristic=plant.chars["coat_weight"],
        unit="mg/cm²",
    )
    with pytest.raises(ValidationError) as caught:
        row.full_clean()
    assert caught.value.message_dict["characteristic"] == [
        "cathode-areal-weight is a characteristic of gf1/l1-pri/coat-c, not of gf1/l1-pri/fill."
    ]
    row.station, row.unit = plant.stations["coat-c"], "g/m²"
    with pytest.raises(ValidationError) as caught:
        row.full_clean()
    assert caught.value.message_dict["unit"] == [
        "'g/m²' is not the unit of cathode-areal-weight ('mg/cm²'); values are not converted."
    ]
    row.device_id = "coater/1"
    row.unit = "mg/cm²"
    with pytest.raises(ValidationError) as caught:
        row.full_clean()
    assert caught.value.message_dict == {
        "device_id": ["Sparkplug ids cannot contain '+', '/' or '#'."]
    }


@pytest.mark.django_db
def test_station_result_is_recorded_once(mapped):
    host = make_host()
    edge = EdgeNodeSimulator(GROUP, NODE, {DEVICE: fill_station_metrics()}, bd_seq=2)
    run(host, *edge.births())
    publication = station_result(edge, DEVICE, serial="P12640000417", fill_mass_g=410.3, ok=True)
    decided = host.handle(publication.topic, publication.payload)
    first = deliver(decided)
    again = deliver(HostResult(envelopes=decided.envelopes))  # delivered a second time
    assert [o.status for o in first] == ["accepted"], first
    assert [o.status for o in again] == ["duplicate"]
    message = IngestMessage.objects.get()
    assert (message.transport, message.origin, message.unit_serial) == (
        "sparkplug",
        "spBv1.0/GF1-L1/DDATA/FILL-PLC-01/fill",
        "P12640000417",
    )
    cell = Unit.objects.get(serial="P12640000417")
    assert cell.kind == "cell"
    visit = StationVisit.objects.get(unit=cell)
    assert (visit.station.code, visit.result, visit.program) == (
        "fill",
        "ok",
        "NMC811-105AH-FILL-V3",
    )
    (measurement,) = Measurement.objects.filter(unit=cell)
    assert (measurement.characteristic.code, measurement.value, measurement.in_spec) == (
        "electrolyte-fill-mass",
        410.3,
        True,
    )
    node = SparkplugEdgeNode.objects.get(group_id=GROUP, edge_node_id=NODE)
    assert (node.online, node.bd_seq, node.rebirth_requests, node.seq_gaps) == (True, 2, 0, 0)
    assert node.devices[DEVICE]["online"] is True
    assert node.devices[DEVICE]["metrics"] == 5
    assert {m["name"] for m in node.birth_metrics if m["device"] == DEVICE} == {
        "Unit/Serial",
        "Fill/Mass",
        "Result/OK",
        "Recipe/Program",
        "Status/Cycle Time",
    }


@pytest.mark.django_db
def test_bad_protobuf_lands_in_the_dead_letter_store_with_its_bytes(mapped):
    host = make_host()
    raw = b"\x12\x20\x0a\x09Fill"
    deliver(host.handle("spBv1.0/GF1-L1/DDATA/FILL-PLC-01/fill", raw))
    entry = DeadLetter.objects.get()
    assert (entry.transport, entry.origin, bytes(entry.raw), entry.status) == (
        "sparkplug",
        "spBv1.0/GF1-L1/DDATA/FILL-PLC-01/fill",
        raw,
        "open",
    )
    assert entry.reason.startswith("Not a Sparkplug B protobuf payload:")
    assert IngestMessage.objects.count() == 0


@pytest.mark.django_db
def test_gap_and_unknown_alias_are_counted_on_the_edge_node(mapped):
    host = make_host()
    edge = EdgeNodeSimulator(GROUP, NODE, {DEVICE: fill_station_metrics()}, bd_seq=2)
    run(host, *edge.births())
    edge.skip_seq()
    run(host, station_result(edge, DEVICE, serial="P12640000417", fill_mass_g=410.2, ok=True))
    bad = edge.ddata(DEVICE, {"Unit/Serial": "P12640000418"}, alias={"Unit/Serial": 42})
    host.rebirth_interval_s = 0.0
    run(host, bad)
    node = SparkplugEdgeNode.objects.get()
    assert (node.seq_gaps, node.unknown_aliases, node.rebirth_requests) == (1, 1, 2)
    assert node.last_rebirth_reason == (
        "Alias 42 is not in the birth certificate of FILL-PLC-01/fill (rebirth requested)."
    )
    entry = DeadLetter.objects.get()
    assert bytes(entry.raw) == bad.payload
    assert entry.message_id.startswith("spb:GF1-L1:FILL-PLC-01:fill:2:4:")
    assert IngestMessage.objects.count() == 1  # the message after the gap was applied


@pytest.mark.django_db
def test_unknown_serial_scheme_is_rejected_by_ingest_with_a_replayable_envelope(mapped):
    host = make_host()
    edge = EdgeNodeSimulator(GROUP, NODE, {DEVICE: fill_station_metrics()}, bd_seq=0)
    run(host, *edge.births())
    outcomes = run(
        host, station_result(edge, DEVICE, serial="p1264 0417", fill_mass_g=410.2, ok=True)
    )
    assert [o.status for o in outcomes] == ["rejected"]
    entry = DeadLetter.objects.get()
    assert entry.transport == "sparkplug"
    assert entry.raw_text.startswith('{"message_id":"spb:GF1-L1:FILL-PLC-01:fill:0:2:')
    assert Unit.objects.filter(serial__icontains="0417").count() == 0


@pytest.mark.django_db
def test_death_is_recorded(mapped):
    host = make_host()
    edge = EdgeNodeSimulator(GROUP, NODE, {DEVICE: fill_station_metrics()}, bd_seq=5)
    run(host, *edge.births())
    before = timezone.now()
    run(host, edge.ndeath())
    node = SparkplugEdgeNode.objects.get()
    assert (node.online, node.bd_seq, node.devices[DEVICE]["online"]) == (False, 5, False)
    assert before - timedelta(seconds=1) <= node.last_death_at <= timezone.now()


def test_rebirth_payload_is_what_deliver_leaves_to_the_transport(mapped):
    host = make_host()
    edge = EdgeNodeSimulator(GROUP, NODE, {DEVICE: fill_station_metrics()}, bd_seq=1)
    edge.births()
    result = host.handle(*_as_args(edge.ddata(DEVICE, {"Unit/Serial": "P12640000417"})))
    (command,) = result.commands
    assert command.topic == codec.topic_for(GROUP, "NCMD", NODE)


def _as_args(publication):
    return publication.topic, publication.payload


def test_command_needs_a_broker_and_a_valid_group(settings):
    settings.MQTT_URL = ""
    with pytest.raises(CommandError, match=r"No broker: set MQTT_URL or pass --mqtt-url\."):
        call_command("ingest_sparkplug", "--group", GROUP)
    with pytest.raises(CommandError, match="cannot contain"):
        call_command("ingest_sparkplug", "--group", "GF1/L1", "--mqtt-url", "mqtt://x:1883")


def test_host_answers_a_live_offline_state_with_its_birth(plant, monkeypatch):
    client = HostClient(mqtt_url="mqtt://127.0.0.1:1883", group_id=GROUP, host_id="celltrace-t")
    published = []
    monkeypatch.setattr(
        client.client, "publish", lambda topic, payload, **kw: published.append((topic, payload))
    )
    client._online.set()
    offline = codec.state_payload(online=False, timestamp_ms=1)

    client._on_message(
        None, None, SimpleNamespace(topic=client.state_topic, payload=offline, retain=True)
    )
    assert published == []  # the retained copy seen on subscribing: the birth replaces it
    client._on_message(
        None, None, SimpleNamespace(topic=client.state_topic, payload=offline, retain=False)
    )
    assert published == [
        (
            "spBv1.0/STATE/celltrace-t",
            codec.state_payload(online=True, timestamp_ms=client._state_ts),
        )
    ]
