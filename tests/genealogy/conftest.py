"""A small digital thread built through the genealogy services, shared by genealogy tests.

Prismatic NMC811 105 Ah cells on line ``l1-pri``; each cell uses 6.0 m of cathode and
6.2 m of anode slit coil::

    CAM lot ─┐                         ┌─ MXC-260302-01 ─┐
    PVDF lot ─┼─ (cathode mix batches) ─┤                 ├─ CC-260303-001 (3000 m) ─┐
    CB lot  ──┘                         └─ MXC-260302-02 ─┼─ CC-260303-002 (3000 m)  │
    Al foil lot ──────────────────────────────────────────┘                          │
      CC-260303-001 slit: L1-R1 = [0, 1500) m, L1-R2 and L2-R2 = [1500, 3000) m ─────┘
      CC-260303-002 slit: L1 = [0, 3000) m
    graphite lot ─ MXA-260302-01 ─┐
    Cu foil lot ──────────────────┴─ AC-260303-001 (3000 m) ─ slit L1 = [0, 3000) m

    cells c01-c06: cathode L1-R2 [0, 6) ... [30, 36)  (mother metres 1500-1536)
    cells c07-c12: cathode L2-R2 [2, 8) ... [32, 38)  (mother metres 1502-1538)
    cell  c13:     cathode L1-R1 [1490, 1496)
    cells c14-c15: cathode CC-260303-002 L1 [0, 6), [6, 12)
    anode: c01-c15 in order on AC L1, 6.2 m each, with a 1 m splice gap after c03
    every cell: electrolyte lot

    modules of 3 cells: M1 = c01-c03, M2 = c04-c06, M3 = c07-c09, M4 = c10-c12, M5 = c13-c15
    packs: PK1 = M1 + M2, PK2 = M3 + M4, PK3 = M5;  vehicles: VIN1 <- PK1, VIN2 <- PK2,
    VIN3 <- PK3.  Spare cell c16 (cathode CC-260303-002 L1 [12, 18)) is in no module.

A 15 m defect at mother metres [1510, 1525) of CC-260303-001 hits exactly c02-c05 (L1-R2
metres 10-25) and c08-c10 (L2-R2 metres 10-25).

Fill-station visits: cell i (c01 = 0) at T0 + 1 day + 10 min * i, 2 minutes each, on
check-weigher cw-1, with its fill-mass measurement (c05 out of spec at 404.2 g).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from genealogy.choices import UnitKind
from genealogy.models import Unit
from genealogy.services import (
    MeasurementInput,
    coil_segment_consume,
    coil_slit,
    lot_consume,
    measurements_record,
    unit_assemble,
    unit_create,
    visit_record,
)
from tests.factories import Plant, UserFactory

CATHODE_M_PER_CELL = 6.0
ANODE_M_PER_CELL = 6.2
DEFECT_MOTHER = ("CC-260303-001", 1510.0, 1525.0)


@dataclass
class Thread:
    plant: Plant
    actor: object
    t0: datetime
    units: dict[str, Unit] = field(default_factory=dict)
    cells: list[Unit] = field(default_factory=list)

    def __getitem__(self, serial: str) -> Unit:
        return self.units[serial]

    def cell(self, n: int) -> Unit:
        """Cell cNN (1-based, c01 ... c16)."""
        return self.cells[n - 1]

    def ids(self, *serials: str) -> set[int]:
        return {self.units[s].pk for s in serials}


def cell_serial(n: int) -> str:
    return f"P12611{n:07d}"


VINS = ("WVGZZZE2ZSP000101", "WVGZZZE2ZSP000102", "WVGZZZE2ZSP000103")


def build_thread(plant: Plant) -> Thread:
    # No password: hashing one costs ~0.5 s per test and nobody logs in as this actor.
    actor = UserFactory(username="qe-thread", role="quality_engineer", password=None)
    t0 = (timezone.now() - timedelta(days=10)).replace(microsecond=0)
    th = Thread(plant=plant, actor=actor, t0=t0)
    line = plant.line
    clock = [t0]

    def at() -> datetime:
        clock[0] += timedelta(seconds=30)
        return clock[0]

    def make(kind: str, serial: str, **kw) -> Unit:
        unit = unit_create(kind=kind, serial=serial, actor=actor, produced_at=clock[0], **kw)
        th.units[serial] = unit
        return unit

    lots = {
        "CAM-NMC811-2611-0042": ("NMC811 cathode active material", "CAM supplier A"),
        "PVDF-5130-2609-007": ("PVDF binder", "Binder supplier B"),
        "CB-C65-2610-113": ("Conductive carbon black", "Carbon supplier C"),
        "ALF-12-2610-0551": ("Aluminium foil 12 µm", "Foil supplier D"),
        "GR-AG-2608-0311": ("Artificial graphite", "Anode supplier E"),
        "CUF-6-2609-0228": ("Copper foil 6 µm", "Foil supplier F"),
        "EL-LP57-2611-0019": ("Electrolyte 1.2 M LiPF6 EC/EMC", "Electrolyte supplier G"),
    }
    for serial, (material, supplier) in lots.items():
        make(UnitKind.MATERIAL_LOT, serial, material=material, supplier=supplier)

    for serial in ("MXC-260302-01", "MXC-260302-02"):
        mix = make(UnitKind.MIX_BATCH, serial, line=line, material="NMC811 cathode slurry")
        for lot, kg in (
            ("CAM-NMC811-2611-0042", 600.0),
            ("PVDF-5130-2609-007", 12.0),
            ("CB-C65-2610-113", 9.0),
        ):
            lot_consume(
                lot=th[lot],
                consumer=mix,
                quantity=kg,
                quantity_unit="kg",
                actor=actor,
                linked_at=at(),
            )
    mxa = make(UnitKind.MIX_BATCH, "MXA-260302-01", line=line, material="Graphite slurry")
    lot_consume(
        lot=th["GR-AG-2608-0311"],
        consumer=mxa,
        quantity=450.0,
        quantity_unit="kg",
        actor=actor,
        linked_at=at(),
    )

    for coil, mix, foil in (
        ("CC-260303-001", "MXC-260302-01", "ALF-12-2610-0551"),
        ("CC-260303-002", "MXC-260302-02", "ALF-12-2610-0551"),
        ("AC-260303-001", "MXA-260302-01", "CUF-6-2609-0228"),
    ):
        unit = make(UnitKind.COIL, coil, line=line, length_m=3000.0)
        lot_consume(lot=th[mix], consumer=unit, actor=actor, linked_at=at())
        lot_consume(lot=th[foil], consumer=unit, actor=actor, linked_at=at())

    for slit, mother, lo, hi in (
        ("SC-260303-001-L1-R1", "CC-260303-001", 0.0, 1500.0),
        ("SC-260303-001-L1-R2", "CC-260303-001", 1500.0, 3000.0),
        ("SC-260303-001-L2-R2", "CC-260303-001", 1500.0, 3000.0),
        ("SC-260303-002-L1", "CC-260303-002", 0.0, 3000.0),
        ("SC-A260303-001-L1", "AC-260303-001", 0.0, 3000.0),
    ):
        unit = make(UnitKind.SLIT_COIL, slit, line=line, length_m=hi - lo)
        coil_slit(
            mother=th[mother],
            slit_coil=unit,
            start_m=lo,
            end_m=hi,
            actor=actor,
            linked_at=at(),
        )

    cathode: list[tuple[str, float]] = (
        [("SC-260303-001-L1-R2", CATHODE_M_PER_CELL * i) for i in range(6)]
        + [("SC-260303-001-L2-R2", 2.0 + CATHODE_M_PER_CELL * i) for i in range(6)]
        + [("SC-260303-001-L1-R1", 1490.0)]
        + [("SC-260303-002-L1", CATHODE_M_PER_CELL * i) for i in range(3)]
    )
    for i, (slit, start) in enumerate(cathode):
        cell = make(UnitKind.CELL, cell_serial(i + 1), line=line)
        th.cells.append(cell)
        coil_segment_consume(
            coil=th[slit],
            consumer=cell,
            start_m=start,
            end_m=start + CATHODE_M_PER_CELL,
            actor=actor,
            linked_at=at(),
        )
        a_start = anode_start(i + 1)
        coil_segment_consume(
            coil=th["SC-A260303-001-L1"],
            consumer=cell,
            start_m=a_start,
            end_m=anode_end(i + 1),
            actor=actor,
            linked_at=at(),
        )
        lot_consume(
            lot=th["EL-LP57-2611-0019"],
            consumer=cell,
            quantity=410.0,
            quantity_unit="g",
            actor=actor,
            linked_at=at(),
        )

    for m in range(5):
        module = make(UnitKind.MODULE, f"M26110{m + 1:05d}", line=line)
        for slot, cell in enumerate(th.cells[3 * m : 3 * m + 3]):
            unit_assemble(
                part=cell,
                assembly=module,
                slot=f"C{slot + 1:02d}",
                actor=actor,
                linked_at=at(),
            )
    modules = [th[f"M26110{m:05d}"] for m in range(1, 6)]
    for p, members in enumerate((modules[0:2], modules[2:4], modules[4:5])):
        pack = make(UnitKind.PACK, f"PK26110{p + 1:05d}", line=line)
        for slot, module in enumerate(members):
            unit_assemble(
                part=module,
                assembly=pack,
                slot=f"M{slot + 1:02d}",
                actor=actor,
                linked_at=at(),
            )
        vehicle = make(UnitKind.VEHICLE, VINS[p])
        unit_assemble(part=pack, assembly=vehicle, slot="HV", actor=actor, linked_at=at())

    # Fill-station visits and their measurements (after all links: the interlock is moot).
    fill, weigher = plant.stations["fill"], plant.equipment["weigher"]
    rows = []
    for i, cell in enumerate(th.cells[:15]):
        start = t0 + timedelta(days=1, minutes=10 * i)
        visit = visit_record(
            unit=cell,
            station=fill,
            equipment=weigher,
            started_at=start,
            ended_at=start + timedelta(minutes=2),
            program="FILL-105AH-V3",
            operator="op-117",
            actor=actor,
        )
        rows.append(
            MeasurementInput(
                unit_id=cell.pk,
                characteristic_id=plant.chars["fill_mass"].pk,
                value=404.2 if i == 4 else 410.0 + 0.1 * i,
                measured_at=start + timedelta(minutes=1),
                equipment_id=weigher.pk,
                visit_id=visit.pk,
            )
        )
    # Coating weight along the cathode mother coil, recorded without a visit.
    for k, pos in enumerate((1500.0, 1512.5, 1525.0)):
        rows.append(
            MeasurementInput(
                unit_id=th["CC-260303-001"].pk,
                characteristic_id=plant.chars["coat_weight"].pk,
                value=23.41 if pos == 1512.5 else 23.02,
                measured_at=t0 + timedelta(hours=2, minutes=k),
                equipment_id=plant.equipment["coater"].pk,
                position_m=pos,
            )
        )
    measurements_record(rows=rows, actor=actor)
    return th


def anode_start(n: int) -> float:
    """Anode slit-coil start metre of cell cNN (a 1 m splice gap after c03)."""
    i = n - 1
    return round(ANODE_M_PER_CELL * i + (1.0 if i >= 3 else 0.0), 3)


def anode_end(n: int) -> float:
    return round(anode_start(n) + ANODE_M_PER_CELL, 3)


@pytest.fixture
def thread(plant) -> Thread:
    return build_thread(plant)
