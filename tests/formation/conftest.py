"""Fixtures of the formation tests: the test plant's prismatic line with its formation
(three cabinets), aging (OCV/ACIR scanner) and grading stations, cells in the genealogy,
and simulated formation runs and aging logs of the same serials
(:func:`formation.cellsim.simulate_plant`, 105 Ah prismatic, sampled every 60 s) turned
into the envelopes a cycler and an aging scanner send.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from formation.cellsim import SimulatedPlant, simulate_plant
from formation.features import curve_pack
from genealogy.choices import UnitKind
from genealogy.models import Unit
from qms.choices import ProcessStep
from qms.ingest.envelope import build
from qms.ingest.services import RawMessage, ingest_raw
from qms.models import Equipment
from tests.factories import StationFactory, UserFactory

SITE, LINE = "gf1", "l1-pri"
N_CELLS = 16


def at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(float(epoch_s), tz=UTC)


@pytest.fixture(scope="session")
def sim() -> SimulatedPlant:
    """16 prismatic cells (two trays of eight, one lot), one of them a particle short."""
    return simulate_plant(
        N_CELLS,
        seed=3,
        sample_period_s=60.0,
        defect_rate=0.0625,
        defect_mix={"particle_short": 1.0},
        bad_channel_fraction=0.0,
    )


@pytest.fixture(scope="session")
def sim_curves(sim):
    return dict(sim.iter_curves())


@pytest.fixture
def formation_plant(plant):
    """The test plant plus formation, aging and grading stations and their equipment."""
    for seq, code, step in (
        (70, "form", ProcessStep.FORMATION),
        (80, "aging", ProcessStep.AGING),
        (90, "grade", ProcessStep.GRADING),
    ):
        plant.stations[code] = StationFactory(
            line=plant.line, code=code, process_step=step, sequence=seq
        )
    for i in (1, 2, 3):
        plant.equipment[f"fc-{i:02d}"] = Equipment.objects.create(
            station=plant.stations["form"], code=f"fc-{i:02d}", name=f"Formation cabinet {i}"
        )
    plant.equipment["ocv-1"] = Equipment.objects.create(
        station=plant.stations["aging"], code="ocv-1", name="OCV / ACIR scanner"
    )
    return plant


@pytest.fixture
def cells(formation_plant, sim) -> list[Unit]:
    """The simulated cells in the genealogy (same serials), batch/lot L1260302A."""
    return [
        Unit.objects.create(
            kind=UnitKind.CELL,
            serial=str(serial),
            line=formation_plant.line,
            batch_lot="L1260302A",
            produced_at=sim.built_at(i),
        )
        for i, serial in enumerate(sim.serial)
    ]


@pytest.fixture
def thread(plant):
    """The genealogy tests' digital thread: cells wound from known coil metres."""
    from tests.genealogy.conftest import build_thread

    return build_thread(plant)


@pytest.fixture
def quality(db):
    return UserFactory(username="qe-formation", role="quality_engineer")


def channel_of(sim: SimulatedPlant, i: int) -> tuple[str, str]:
    """(cabinet code, channel in the cabinet) of cell ``i``: ``fc-01``, ``b1/p03``."""
    cabinet, channel = sim.channel_label(i).split("/", 1)
    return cabinet, channel


def tray_of(sim: SimulatedPlant, i: int) -> tuple[str, str]:
    return f"T{int(sim.tray[i]) + 1:04d}", str(int(sim.tray_position[i]) + 1)


def step_dict(sim: SimulatedPlant, curves: dict, i: int, s: int, *, packed: bool = False) -> dict:
    """Step ``s`` of cell ``i`` as a ``formation_step`` payload step."""
    rec = sim.step_records(i)[s]
    curve = curves[i][s]
    start = sim.formation_started_at_s[i] + rec.t_start_s
    arrays = {
        "time_s": curve.time_s - rec.t_start_s,
        "voltage_v": curve.voltage_v,
        "current_a": curve.current_a,
        "capacity_ah": curve.capacity_ah,
        "temperature_c": curve.temperature_c,
    }
    out = {
        "sequence": s + 1,
        "step_index": s,
        "type": rec.kind,
        "name": rec.name,
        "started_at": at(start).isoformat(),
        "ended_at": at(start + rec.duration_s).isoformat(),
        "duration_s": rec.duration_s,
        "capacity_ah": rec.capacity_ah,
        "energy_wh": rec.energy_wh,
        "start_voltage_v": rec.v_start_v,
        "end_voltage_v": rec.v_end_v,
        "end_current_a": rec.i_end_a,
        "temperature_start_c": rec.temperature_start_c,
        "temperature_max_c": rec.temperature_max_c,
        "end_reason": rec.end_reason,
    }
    if packed:
        blob = curve_pack(arrays)
        out["curve_b64"] = base64.b64encode(blob).decode()
        out["curve_sha256"] = hashlib.sha256(blob).hexdigest()
    else:
        out["arrays"] = {k: np.asarray(v).tolist() for k, v in arrays.items()}
    return out


def step_envelope(
    sim: SimulatedPlant,
    curves: dict,
    i: int,
    steps: list[int] | range | None = None,
    *,
    packed: bool = True,
    serial: str | None = None,
    message_id: str | None = None,
    tray: bool = True,
) -> dict:
    """A cycler's ``formation_step`` envelope for steps ``steps`` (all by default) of cell
    ``i`` of the simulation."""
    steps = list(range(len(sim.protocol)) if steps is None else steps)
    cabinet, channel = channel_of(sim, i)
    run = {
        "id": f"{cabinet.upper()}-R{int(sim.tray[i]) + 1:05d}",
        "channel": channel,
        "protocol": "FORM-0.1C-4V2-V2",
        "started_at": at(sim.formation_started_at_s[i]).isoformat(),
    }
    if tray:
        run["tray"], run["position"] = tray_of(sim, i)
    body = [step_dict(sim, curves, i, s, packed=packed) for s in steps]
    return build(
        kind="formation_step",
        site=SITE,
        line=LINE,
        station="form",
        equipment=cabinet,
        unit=serial or str(sim.serial[i]),
        source=f"{cabinet.upper()} cycler",
        message_id=message_id or f"{cabinet}-{sim.serial[i]}-s{'-'.join(map(str, steps))}",
        sent_at=datetime.fromisoformat(body[-1]["ended_at"]),
        payload={"run": run, "sign_convention": "charge_positive", "steps": body},
    )


def aging_envelope(
    sim: SimulatedPlant, i: int, readings: range | list[int] | None = None, **kw
) -> dict:
    """An aging scanner's ``aging_ocv`` envelope with readings ``readings`` of cell ``i``."""
    log = sim.ocv_log(i)
    idx = list(range(len(log.at_s)) if readings is None else readings)
    payload = {
        "rack": f"R{log.rack + 1:02d}",
        "readings": [
            {
                "measured_at": at(log.at_s[k]).isoformat(),
                "ocv_mv": float(log.ocv_v[k] * 1e3),
                "acir_mohm": 0.62,
                "temperature_c": float(log.rack_temperature_c[k]),
            }
            for k in idx
        ],
    }
    return build(
        kind="aging_ocv",
        site=SITE,
        line=LINE,
        station="aging",
        equipment="ocv-1",
        unit=kw.get("serial", str(sim.serial[i])),
        source="OCV scanner 1",
        message_id=kw.get("message_id", f"ocv-{sim.serial[i]}-{idx[0]}-{idx[-1]}"),
        sent_at=at(log.at_s[idx[-1]]),
        payload=payload,
    )


def tray_envelope(sim: SimulatedPlant, tray_index: int, **kw) -> dict:
    """The tray loader's ``tray_load`` envelope of a tray of the simulation."""
    members = [i for i in range(sim.n_cells) if int(sim.tray[i]) == tray_index]
    loaded = at(sim.formation_started_at_s[members[0]] - 600.0)
    return build(
        kind="tray_load",
        site=SITE,
        line=LINE,
        station="form",
        units=kw.get("units", [str(sim.serial[i]) for i in members]),
        source="Tray loader 1",
        message_id=kw.get("message_id", f"load-T{tray_index + 1:04d}"),
        sent_at=loaded,
        payload={
            "tray": f"T{tray_index + 1:04d}",
            "positions": kw.get("positions", [tray_of(sim, i)[1] for i in members]),
        },
    )


def raw(doc: dict, origin: str = "test") -> RawMessage:
    return RawMessage(payload=json.dumps(doc).encode(), transport="direct", origin=origin)


def send(*docs: dict) -> list:
    return ingest_raw([raw(d, origin=f"test-{k}") for k, d in enumerate(docs)])


def days_ago(n: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=n)
