"""The management commands ``opcua_sim`` and ``ingest_opcua``, run in-process."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from genealogy.models import Measurement
from qms.choices import CommandTransport
from qms.models import Station
from qms.opcua.models import OpcUaNodeMap, OpcUaServer

from .opcua_support import configure, free_port, running, sim_config


def test_opcua_sim_configures_itself_makes_its_units_and_exits(plant):
    # Given the test plant's fill station, and a free port
    port = free_port()
    out = StringIO()

    # When the simulator runs for three cells and configures the transport
    call_command(
        "opcua_sim",
        "--port", str(port), "--site", "gf1", "--line", "l1-pri",
        "--fill-characteristic", "electrolyte-fill-mass", "--no-rack",
        "--units", "3", "--rate", "50", "--seed", "3", "--first-serial", "2611000101",
        "--configure", "--name", "sim-cmd", "--exit-when-done",
        stdout=out,
    )  # fmt: skip

    # Then it announced its endpoint, made three cells, and left a complete configuration
    endpoint = f"opc.tcp://127.0.0.1:{port}/celltrace/sim"
    assert out.getvalue().splitlines() == [
        "configured OPC UA server sim-cmd (5 node maps)",
        f"OPC UA station simulator at {endpoint}",
        "done: 3 results",
    ]
    server = OpcUaServer.objects.get(name="sim-cmd")
    assert (server.endpoint_url, server.enabled) == (endpoint, True)
    assert sorted(OpcUaNodeMap.objects.values_list("role", "node", "event_field")) == [
        ("measurement", "/Objects/Machines/FILL-01/Process/FillMass", ""),
        ("result_ready_event", "/Objects/Machines/FILL-01", ""),
        ("resume_method", "/Objects/Machines/FILL-01/Resume", ""),
        ("state", "/Objects/Machines/FILL-01/State", ""),
        ("stop_method", "/Objects/Machines/FILL-01/Stop", ""),
    ]
    assert Station.objects.get(code="fill").command_transport == CommandTransport.OPCUA


@pytest.mark.django_db(transaction=True)
def test_ingest_opcua_applies_what_the_station_made_and_stops(plant, celery_eager):
    # Given a running simulator that filled four cells, mapped for ingest
    config = sim_config()
    configure(plant, config.endpoint)
    with running(config) as (sim_thread, sim):
        sim_thread.call(lambda s: s.produce(4))
        out = StringIO()

        # When the ingest command runs for a bounded time
        call_command("ingest_opcua", "--run-seconds", "1.5", stdout=out)
        produced = list(sim.results)

    # Then it names the server it subscribed to and applied the four results
    assert out.getvalue().splitlines() == [
        f"sim-l1: {config.endpoint}, 1 result source(s)",
        "accepted 4, duplicate 0, rejected 0, batches 1",
    ]
    assert dict(Measurement.objects.values_list("unit__serial", "value")) == {
        r.serial: r.values["FillMass"] for r in produced
    }
