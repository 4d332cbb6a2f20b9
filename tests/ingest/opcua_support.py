"""Helpers for the OPC UA transport tests: a simulator on a free loopback port, laid out for
the test plant (site gf1, line l1-pri: fill station, electrolyte fill mass 410 g +-1 %)."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from dataclasses import replace

from qms.choices import ProcessStep, SpecialCharacteristic
from qms.ingest.services import transport_actor
from qms.models import Characteristic, Equipment
from qms.opcua.client import ClientThread
from qms.opcua.queries import opcua_server_configs
from qms.opcua.services import SimStation, opcua_sim_configure
from qms.opcua.simulator import FillProfile, RackProfile, SimConfig, SimulatorThread
from tests.factories import Plant, StationFactory

#: The test plant's fill: 410 g +-1 % (a 280 Ah-class prismatic cell).
FILL = FillProfile(
    machine="FILL-01",
    manufacturer="Wuxi Lead Intelligent Equipment",
    model="LEF-8P",
    serial_number="L1-FL-0405",
    fill_nominal_g=410.0,
    fill_lsl_g=405.9,
    fill_usl_g=414.1,
)
#: First-charge capacity of the same cell: 300 Ah +-3 % (rated 280 Ah).
RACK = RackProfile(
    machine="FORM-RACK-01",
    channels=4,
    rated_capacity_ah=280.0,
    capacity_nominal_ah=300.0,
    capacity_lsl_ah=291.0,
    capacity_usl_ah=309.0,
    step_s=0.15,
    tick_s=0.05,
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sim_config(**kwargs) -> SimConfig:
    base = SimConfig(
        port=free_port(),
        fill=FILL,
        rack=None,
        rate_per_s=20.0,
        units=0,
        serial_prefix="P1",
        first_serial=2_611_000_001,
        seed=7,
        autostart=False,
    )
    return replace(base, **kwargs)


def formation_station(plant: Plant) -> tuple:
    """A formation station with its first-charge capacity characteristic (the test plant
    has none)."""
    station = StationFactory(
        line=plant.line, code="form", process_step=ProcessStep.FORMATION, sequence=35
    )
    char = Characteristic.objects.create(
        station=station,
        code="formation-charge-capacity",
        name="First-charge capacity (CC-CV to 4.2 V, 0.1C)",
        unit="Ah",
        nominal=300.0,
        lsl=291.0,
        usl=309.0,
        measurement_method="cycler charge counter",
        sample_size=1,
        sample_frequency="100 %",
        reaction_plan="Hold cell; MRB.",
        special_class=SpecialCharacteristic.SC,
    )
    equipment = Equipment.objects.create(station=station, code="fc-01", name="Formation cabinet 1")
    return station, char, equipment


def configure(
    plant: Plant, endpoint: str, *, mode: str = "event", formation=None, name: str = "sim-l1"
):
    fill = SimStation(
        plant.stations["fill"], plant.chars["fill_mass"], FILL.machine, plant.equipment["weigher"]
    )
    form = None
    if formation is not None:
        station, char, equipment = formation
        form = SimStation(station, char, RACK.machine, equipment)
    return opcua_sim_configure(
        name=name,
        endpoint_url=endpoint,
        actor=transport_actor("opcua"),
        fill=fill,
        formation=form,
        mode=mode,
    )


@contextmanager
def running(config: SimConfig):
    thread = SimulatorThread(config)
    sim = thread.start()
    try:
        yield thread, sim
    finally:
        thread.stop()


def client_thread(**kwargs) -> ClientThread:
    """A client over every enabled server, with short back-off for tests."""
    kwargs.setdefault("backoff_initial_s", 0.2)
    kwargs.setdefault("backoff_max_s", 1.0)
    return ClientThread(opcua_server_configs(), **kwargs)
