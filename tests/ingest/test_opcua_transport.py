"""OPC UA end to end on loopback: the station simulator server, the subscription client, the
ingest pipeline and the Stop-method command path.

The simulator runs in-process on a free port; the client runs in its own thread with its
own event loop and does its database work on one thread of its own, so the tests use
transactional database access. While the client runs, the test thread only reads the
client's counters (SQLite's shared in-memory database locks whole tables); it looks at the
database after the client has stopped.
"""

from __future__ import annotations

import pytest

from compliance.choices import HoldSource, HoldStatus
from compliance.models import Hold
from genealogy.choices import UnitStatus, VisitResult
from genealogy.models import Measurement, StationVisit, Unit
from qms.choices import CommandTransport
from qms.ingest.commands import station_command_send
from qms.ingest.models import CommandStatus, DeadLetter, IngestMessage, StationCommand
from qms.models import Station
from qms.opcua.models import OpcUaNodeMap
from qms.opcua.simulator import EVALUATION_NOT_OK, EVALUATION_OK, IDLE, STOPPED
from tests.factories import UserFactory

from .opcua_support import (
    RACK,
    client_thread,
    configure,
    formation_station,
    running,
    sim_config,
)

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_S = 10.0


def _done(n: int):
    return lambda c: c.stats.accepted + c.stats.duplicate + c.stats.rejected >= n


def _fill_measurements() -> dict[str, float]:
    return dict(
        Measurement.objects.filter(characteristic__code="electrolyte-fill-mass").values_list(
            "unit__serial", "value"
        )
    )


def test_fill_results_arrive_once_each_across_reconnect_and_restart(plant, celery_eager):
    # Given the simulated fill station mapped by its ResultReady events, with three cells
    # filled before the client ever connected
    config = sim_config()
    configure(plant, config.endpoint)
    with running(config) as (sim_thread, sim):
        sim_thread.call(lambda s: s.produce(3))

        # When the client connects, loses its connection, reconnects, and is restarted
        # after three more cells were filled while it was down
        client = client_thread().start()
        assert client.wait_for(_done(3), WAIT_S), client.stats
        sim_thread.call(lambda s: s.produce(2))
        assert client.wait_for(_done(5), WAIT_S), client.stats
        client.drop_connections()
        assert client.wait_for(lambda c: c.clients[0].connections == 2, WAIT_S)
        sim_thread.call(lambda s: s.produce(2))
        assert client.wait_for(_done(7), WAIT_S), client.stats
        first = client.stats
        client.stop()

        sim_thread.call(lambda s: s.produce(3))
        restarted = client_thread().start()
        assert restarted.wait_for(_done(10), WAIT_S), restarted.stats
        second = restarted.stats
        restarted.stop()
        produced = list(sim.results)

    # Then every cell's fill mass is recorded exactly once, in grams, as the station sent it
    assert (first.accepted, first.duplicate, first.rejected) == (7, 0, 0)
    assert first.skipped == 5  # re-read from the history after the reconnect, not re-sent
    assert (second.accepted, second.duplicate, second.rejected) == (3, 7, 0)
    assert len(produced) == 10
    assert _fill_measurements() == {r.serial: r.values["FillMass"] for r in produced}
    assert Measurement.objects.count() == 10
    assert IngestMessage.objects.filter(transport="opcua").count() == 10
    assert set(IngestMessage.objects.values_list("message_id", flat=True)) == {
        f"opcua:sim-l1:fill:FILL-01.{r.serial}" for r in produced
    }
    visits = StationVisit.objects.filter(station=plant.stations["fill"])
    assert visits.count() == 10
    assert set(visits.values_list("result", flat=True)) == {VisitResult.OK}
    assert set(visits.values_list("equipment__code", flat=True)) == {"cw-1"}
    assert not DeadLetter.objects.exists()
    assert [r.serial for r in produced] == [f"P1{2_611_000_001 + i:010d}" for i in range(10)]


def test_fill_results_by_data_change_without_events(plant, celery_eager):
    # Given the fill station mapped by data changes of its Process nodes (no events)
    config = sim_config()
    configure(plant, config.endpoint, mode="datachange")
    with running(config) as (sim_thread, sim):
        client = client_thread().start()
        assert client.wait_for(lambda c: c.clients and c.clients[0].connections == 1, WAIT_S)

        # When three cells are filled one after the other (OK after OK after OK), and the
        # client reconnects (the server sends the last result again as its initial value)
        for n in (1, 2, 3):
            sim_thread.call(lambda s: s.produce(1))
            assert client.wait_for(_done(n), WAIT_S), client.stats
        client.drop_connections()
        assert client.wait_for(lambda c: c.clients[0].connections == 2, WAIT_S)
        assert client.wait_for(lambda c: c.stats.skipped >= 1, WAIT_S), client.stats
        stats = client.stats
        client.stop()
        produced = list(sim.results)

    # Then each is one result, keyed by the result node's source timestamp
    assert (stats.accepted, stats.duplicate, stats.rejected) == (3, 0, 0)
    assert _fill_measurements() == {r.serial: r.values["FillMass"] for r in produced}
    assert IngestMessage.objects.count() == 3
    assert all(
        m.startswith("opcua:sim-l1:fill:") and m.endswith("Z")
        for m in IngestMessage.objects.values_list("message_id", flat=True)
    )


async def _inject_low(sim) -> None:
    sim.fill.inject_out_of_spec(1)


def test_out_of_spec_fill_puts_the_cell_on_hold(plant, celery_eager):
    # Given the mapped fill station, whose next cell is filled below the LSL (405.9 g)
    config = sim_config()
    configure(plant, config.endpoint)
    with running(config) as (sim_thread, sim):
        sim_thread.call(_inject_low)

        # When it fills that cell and a good one
        client = client_thread().start()
        sim_thread.call(lambda s: s.produce(2))
        assert client.wait_for(_done(2), WAIT_S), client.stats
        stopped_state = sim.fill.status.state
        stop_requests = list(sim.fill.status.stop_requests)
        client.stop()
        low, good = sim.results

    # Then the station reported NOK, and compliance held exactly that cell
    assert (low.evaluation, good.evaluation) == (EVALUATION_NOT_OK, EVALUATION_OK)
    assert low.values["FillMass"] < 405.9
    held = Unit.objects.get(serial=low.serial)
    assert held.status == UnitStatus.ON_HOLD
    assert Unit.objects.get(serial=good.serial).status == UnitStatus.IN_PROCESS
    hold = Hold.objects.get()
    assert hold.source == HoldSource.OUT_OF_SPEC
    assert hold.status == HoldStatus.OPEN
    assert list(hold.units.values_list("serial", flat=True)) == [low.serial]
    assert f"{low.serial} {low.values['FillMass']:.6g} g" in hold.reason
    assert StationVisit.objects.get(unit=held).result == VisitResult.NOK
    assert Measurement.objects.get(unit=held).in_spec is False
    # and the hold's reaction called the station's Stop method with the hold as the reason
    command = StationCommand.objects.get()
    assert (command.reference, command.unit_serials) == (hold.number, [low.serial])
    assert command.status == CommandStatus.SENT, command.error
    assert command.target == f"{config.endpoint} ns=2;s=FILL-01.Stop"
    assert stop_requests == [command.reason]
    assert command.reason.startswith(f"Hold {hold.number}: ")
    assert stopped_state == STOPPED


def test_hold_command_calls_the_stations_stop_method(plant):
    # Given the fill station, mapped with its Stop and Resume methods, running and watched
    config = sim_config()
    configure(plant, config.endpoint)
    station = Station.objects.get(pk=plant.stations["fill"].pk)
    assert station.command_transport == CommandTransport.OPCUA
    quality = UserFactory(username="quality", role="quality_engineer")
    with running(config) as (sim_thread, sim):
        client = client_thread().start()
        assert client.wait_for(lambda c: c.clients and c.clients[0].connections == 1, WAIT_S)
        key = "gf1/l1-pri/fill"
        assert client.wait_for(lambda c: c.clients[0].states.get(key) == IDLE, WAIT_S)

        # When compliance sends a hold, and later a release
        reason = "Hold H-000017: electrolyte fill mass below LSL on P12611000001"
        hold = station_command_send(
            station=station,
            kind="hold",
            reason=reason,
            actor=quality,
            reference="H-000017",
            unit_serials=["P12611000001"],
        )
        stopped_state = sim.fill.status.state
        stopped_reason = sim.fill.status.stop_reason
        made_while_stopped = sim_thread.call(lambda s: s.produce(1))
        assert client.wait_for(lambda c: c.clients[0].states.get(key) == STOPPED, WAIT_S)
        release = station_command_send(
            station=station, kind="release", reason="MRB: cell re-weighed, OK", actor=quality
        )
        resumed_state = sim.fill.status.state
        client.stop()

    # Then Stop(Reason) stopped the station with the reason, Resume() restarted it, and
    # both commands are recorded as sent to the method nodes
    assert (stopped_state, stopped_reason) == (STOPPED, reason)
    assert made_while_stopped == []
    assert sim.fill.status.stop_requests == [reason]
    assert resumed_state == IDLE
    hold.refresh_from_db()
    release.refresh_from_db()
    assert hold.status == CommandStatus.SENT, hold.error
    assert hold.target == f"{config.endpoint} ns=2;s=FILL-01.Stop"
    assert release.status == CommandStatus.SENT, release.error
    assert release.target == f"{config.endpoint} ns=2;s=FILL-01.Resume"


def test_stop_command_to_an_unreachable_station_is_recorded_as_failed(plant):
    # Given the fill station mapped to a server that is not running
    config = sim_config()
    configure(plant, config.endpoint)
    station = Station.objects.get(pk=plant.stations["fill"].pk)

    # When a line stop is sent
    command = station_command_send(
        station=station,
        kind="line_stop",
        reason="Three NOK fills in a shift",
        actor=UserFactory(username="mrb", role="mrb_member"),
    )

    # Then it is recorded as failed with the error, and nothing claims it was delivered
    command.refresh_from_db()
    assert command.status == CommandStatus.FAILED
    assert command.sent_at is None
    assert command.error.startswith("ConnectionRefusedError: "), command.error
    assert command.target == ""


def test_formation_rack_results_arrive_and_step_events_are_not_results(plant, celery_eager):
    # Given the fill station and a formation rack of four channels on one server, mapped by
    # their ResultReady events; the rack forms every cell the fill station passes
    formation = formation_station(plant)
    config = sim_config(rack=RACK, units=3, autostart=True)
    configure(plant, config.endpoint, formation=formation)
    with running(config) as (_, sim):
        # When three cells go through fill and formation
        client = client_thread().start()
        assert client.wait_for(_done(6), WAIT_S), client.stats
        stats = client.stats
        client.stop()
        results = list(sim.results)

    # Then each cell has its fill mass (g) and its first-charge capacity (Ah), once
    fill = {r.serial: r.values["FillMass"] for r in results if r.machine == "FILL-01"}
    formed = {r.serial: r.values["ChargeCapacity"] for r in results if r.machine == "FORM-RACK-01"}
    assert len(fill) == 3
    assert set(formed) == set(fill)
    assert (stats.accepted, stats.rejected) == (6, 0)
    assert _fill_measurements() == fill
    station, char, _ = formation
    assert (
        dict(Measurement.objects.filter(characteristic=char).values_list("unit__serial", "value"))
        == formed
    )
    assert set(
        StationVisit.objects.filter(station=station).values_list("equipment__code", flat=True)
    ) == {"fc-01"}
    assert IngestMessage.objects.filter(message_id__startswith="opcua:sim-l1:form:").count() == 3


def test_a_node_reporting_another_unit_is_refused_into_the_dead_letters(plant, celery_eager):
    # Given a control plan that keeps the fill mass in kg, and a map that expects kg, while
    # the node's EngineeringUnits say g
    config = sim_config()
    configure(plant, config.endpoint)
    plant.chars["fill_mass"].__class__.objects.filter(pk=plant.chars["fill_mass"].pk).update(
        unit="kg", nominal=0.410, lsl=0.4059, usl=0.4141
    )
    OpcUaNodeMap.objects.filter(role="measurement").update(unit="")
    with running(config) as (sim_thread, sim):
        # When a cell is filled
        client = client_thread().start()
        sim_thread.call(lambda s: s.produce(1))
        assert client.wait_for(_done(1), WAIT_S), client.stats
        stats = client.stats
        client.stop()

    # Then the result is refused with the reason, kept with its raw bytes, and nothing is
    # recorded against the characteristic
    assert (stats.accepted, stats.rejected) == (0, 1)
    entry = DeadLetter.objects.get()
    assert entry.transport == "opcua"
    assert entry.message_id == f"opcua:sim-l1:fill:FILL-01.{sim.results[0].serial}"
    assert "kg" in entry.reason and "g" in entry.reason
    assert b'"unit":"g"' in bytes(entry.raw)
    assert not Measurement.objects.exists()
    assert not IngestMessage.objects.exists()
