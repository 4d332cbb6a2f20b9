"""OPC UA transport without a network: the node-map rules, how maps are grouped into result
sources, message ids, envelopes built from snapshots, and the command sender's refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from qms.choices import CommandTransport
from qms.ingest.commands import station_command_send
from qms.ingest.models import CommandStatus
from qms.opcua.choices import NodeRole
from qms.opcua.client import Snapshot, envelope_for, evaluation_of, message_id_for
from qms.opcua.models import OpcUaNodeMap, OpcUaServer
from qms.opcua.queries import opcua_server_configs, server_config
from qms.opcua.simulator import eu_information, unece_unit_id
from tests.factories import UserFactory

from .opcua_support import configure

ENDPOINT = "opc.tcp://127.0.0.1:4840/celltrace/sim"


@pytest.fixture
def server(plant):
    return OpcUaServer.objects.create(
        name="fill-plc", endpoint_url=ENDPOINT, station=plant.stations["fill"]
    )


def test_a_measurement_in_another_unit_than_the_control_plan_is_refused(plant, server):
    # Given a map that says the PLC reports the fill mass in kg, kept in g by the plan
    node_map = OpcUaNodeMap(
        server=server,
        role=NodeRole.MEASUREMENT,
        node="/Objects/Machines/FILL-01/Process/FillMass",
        characteristic=plant.chars["fill_mass"],
        unit="kg",
    )

    # When it is validated, Then it is refused with the reason, and nothing is written
    with pytest.raises(ValidationError) as err:
        node_map.full_clean()
    assert err.value.message_dict["unit"] == [
        "The server reports 'kg' but electrolyte-fill-mass is kept in 'g'; Celltrace does "
        "not convert units."
    ]
    assert not OpcUaNodeMap.objects.exists()


def test_a_characteristic_of_another_station_is_refused(plant, server):
    node_map = OpcUaNodeMap(
        server=server,
        role=NodeRole.MEASUREMENT,
        node="ns=2;s=FILL-01.Process.FillMass",
        characteristic=plant.chars["coat_weight"],
    )
    with pytest.raises(ValidationError) as err:
        node_map.full_clean()
    assert err.value.message_dict["characteristic"] == [
        "cathode-areal-weight belongs to station gf1/l1-pri/coat-c, not gf1/l1-pri/fill."
    ]


def test_the_database_refuses_a_measurement_without_characteristic(server):
    with pytest.raises(IntegrityError), transaction.atomic():
        OpcUaNodeMap.objects.create(server=server, role=NodeRole.MEASUREMENT, node="i=2258")
    assert not OpcUaNodeMap.objects.exists()


def test_the_database_refuses_an_endpoint_that_is_not_opc_tcp(plant):
    with pytest.raises(IntegrityError), transaction.atomic():
        OpcUaServer.objects.create(name="fill-http", endpoint_url="http://10.20.4.31:4840")
    assert not OpcUaServer.objects.exists()


def test_a_result_event_without_event_type_is_refused(server):
    node_map = OpcUaNodeMap(
        server=server, role=NodeRole.RESULT_READY_EVENT, node="/Objects/Machines/FILL-01"
    )
    with pytest.raises(ValidationError) as err:
        node_map.full_clean()
    assert err.value.message_dict["event_type"] == [
        "Name the ResultReady event type to subscribe to."
    ]


def test_maps_are_grouped_into_result_sources_and_incomplete_groups_reported(plant, server):
    # Given a result node with its serial and fill mass, and a cycler channel group that
    # has a result node but no serial
    fill = plant.chars["fill_mass"]
    for role, node, char in [
        (NodeRole.RESULT, "ns=2;s=FILL-01.Process.Result", None),
        (NodeRole.SERIAL, "ns=2;s=FILL-01.Process.CurrentSerial", None),
        (NodeRole.MEASUREMENT, "ns=2;s=FILL-01.Process.FillMass", fill),
        (NodeRole.STATE, "ns=2;s=FILL-01.State", None),
        (NodeRole.STOP_METHOD, "ns=2;s=FILL-01.Stop", None),
    ]:
        OpcUaNodeMap.objects.create(server=server, role=role, node=node, characteristic=char)
    OpcUaNodeMap.objects.create(
        server=server, role=NodeRole.RESULT, node="ns=2;s=RACK.CH01.Result", group="ch01"
    )

    # When the client's configuration is read
    config = server_config(server)

    # Then the fill station is one data-change source; the channel is reported, not guessed
    (source,) = config.sources
    assert (source.station.label, source.group, source.event_mode) == ("gf1/l1-pri/fill", "", False)
    assert source.trigger.node == "ns=2;s=FILL-01.Process.Result"
    assert source.serial.node == "ns=2;s=FILL-01.Process.CurrentSerial"
    assert [(m.characteristic, m.unit) for m in source.measurements] == [
        ("electrolyte-fill-mass", "g")
    ]
    assert [m.node for _, m in config.states] == ["ns=2;s=FILL-01.State"]
    assert config.problems == ("gf1/l1-pri/fill group 'ch01': a result node needs a serial node",)


def test_only_enabled_servers_are_configured(plant, server):
    OpcUaServer.objects.create(name="old-plc", endpoint_url=ENDPOINT, enabled=False)
    assert [c.name for c in opcua_server_configs()] == ["fill-plc"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, "ok"), (2, "nok"), (0, "nok"), (3, "nok"), ("OK", "ok"), ("NOK", "nok"),
     (True, "ok"), (False, "nok"), ("", None), (None, None)],
)  # fmt: skip
def test_result_evaluation_maps_to_ok_and_nok(value, expected):
    assert evaluation_of(value) == expected


def test_message_ids_are_deterministic_printable_and_bounded():
    assert message_id_for("sim-l2", "fill", "FILL-01.C21957669371") == (
        "opcua:sim-l2:fill:FILL-01.C21957669371"
    )
    assert message_id_for("sim-l2", "fill", "Result 7\n") == "opcua:sim-l2:fill:Result_7_"
    long_id = message_id_for("sim-l2", "fill", "x" * 200)
    assert long_id == message_id_for("sim-l2", "fill", "x" * 200)
    assert long_id.startswith("opcua:sim-l2:fill:sha1-")
    assert len(long_id) <= 128


def _source(plant, server):
    configure(plant, ENDPOINT, name="fill-plc")
    return server_config(OpcUaServer.objects.get(name="fill-plc")).sources[0]


def test_a_snapshot_becomes_a_process_result_envelope(plant):
    # Given the event-mapped fill station and a result it sent
    source = _source(plant, None)
    config = server_config(OpcUaServer.objects.get(name="fill-plc"))
    (fill_mass,) = source.measurements
    ended = datetime(2026, 11, 27, 8, 30, 1, 250000, tzinfo=UTC)
    snap = Snapshot(
        result_key="FILL-01.P12611000001",
        sent_at=ended,
        serial="P12611000001",
        evaluation="ok",
        values={fill_mass.id: 410.37},
        started_at=datetime(2026, 11, 27, 8, 30, 0, tzinfo=UTC),
        ended_at=ended,
        program="EF-280AH-410G",
        source_name="FILL-01",
        origin=f"{ENDPOINT} /Objects/Machines/FILL-01",
    )

    # When the envelope is built
    built = envelope_for(config, source, snap, {})

    # Then it is a complete process_result with the characteristic's code and unit
    assert built.error == ""
    doc = json.loads(built.raw)
    assert doc == {
        "message_id": "opcua:fill-plc:fill:FILL-01.P12611000001",
        "schema": "celltrace.envelope/1",
        "source": "fill-plc/FILL-01",
        "sent_at": "2026-11-27T08:30:01.250000+00:00",
        "site": "gf1",
        "line": "l1-pri",
        "station": "fill",
        "kind": "process_result",
        "equipment": "cw-1",
        "unit": "P12611000001",
        "payload": {
            "result": "ok",
            "unit_kind": "cell",
            "started_at": "2026-11-27T08:30:00+00:00",
            "ended_at": "2026-11-27T08:30:01.250000+00:00",
            "program": "EF-280AH-410G",
            "measurements": [
                {
                    "characteristic": "electrolyte-fill-mass",
                    "value": 410.37,
                    "unit": "g",
                    "measured_at": "2026-11-27T08:30:01.250000+00:00",
                }
            ],
        },
    }


def test_a_result_without_serial_or_value_is_not_built(plant):
    source = _source(plant, None)
    config = server_config(OpcUaServer.objects.get(name="fill-plc"))
    (fill_mass,) = source.measurements
    at = datetime(2026, 11, 27, 8, 30, tzinfo=UTC)
    no_serial = Snapshot("R1", at, "", "ok", {fill_mass.id: 410.0})
    no_value = Snapshot("R2", at, "P12611000002", "nok", {})
    assert envelope_for(config, source, no_serial, {}).error == (
        "The result carries no unit serial (PartId)."
    )
    built = envelope_for(config, source, no_value, {})
    assert built.error == (
        "The result has no value for /Objects/Machines/FILL-01/Process/FillMass "
        "(electrolyte-fill-mass)."
    )
    assert built.error_field == "payload.measurements.electrolyte-fill-mass"


def test_the_simulator_reports_units_with_their_unece_codes():
    assert unece_unit_id("GRM") == 0x47524D
    eu = eu_information("Ah")
    assert (eu.UnitId, eu.DisplayName.Text) == (unece_unit_id("AMH"), "Ah")


def test_a_command_to_a_station_without_a_stop_method_is_recorded_as_failed(
    plant, django_capture_on_commit_callbacks
):
    # Given a station that takes commands over OPC UA but has no Stop method mapped
    station = plant.stations["fill"]
    station.command_transport = CommandTransport.OPCUA
    station.save(update_fields=["command_transport"])

    # When a hold is sent
    quality = UserFactory(username="quality", role="quality_engineer")
    with django_capture_on_commit_callbacks(execute=True):
        command = station_command_send(
            station=station, kind="hold", reason="Fill mass out of specification", actor=quality
        )

    # Then it is recorded as failed with the reason
    command.refresh_from_db()
    assert command.status == CommandStatus.FAILED
    assert command.sent_at is None
    assert command.error == (
        "LookupError: no OPC UA Stop method is mapped for station gf1/l1-pri/fill"
    )
