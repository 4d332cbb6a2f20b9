"""One vehicle's digital thread, built through the genealogy and compliance services, for the
trace page tests (Django client and browser).

Prismatic NMC811 105 Ah cells on line ``l1-pri`` (tests.factories.build_plant)::

    CAM-NMC811-2611-0042 ─┐
    PVDF-5130-2609-007  ──┼─ MXC-260302-01 ─┐
    ALF-12-2610-0551 ─────────────────────── CC-260303-001 (3000 m) ─ slit [1500, 3000) m
                                                                      ─ SC-260303-001-L2
    GR-AG-2608-0311 ─ MXA-260302-01 ─┐
    CUF-6-2609-0228 ─────────────────── AC-260303-001 (3000 m) ─ slit [0, 3000) m
                                                                ─ SC-A260303-001-L1
    cell n (1..8): cathode SC-260303-001-L2 [1204.0 + 6.0 (n-1), +6.0) m
                   (= mother CC-260303-001 [2704.0 + 6.0 (n-1), +6.0) m),
                   anode SC-A260303-001-L1 [310.0 + 6.2 (n-1), +6.2) m,
                   electrolyte EL-LP57-2611-0019, separator SEP-PE12-2610-0077
    modules M261100001 (cells 1-4, slots C01-C04), M261100002 (cells 5-8)
    pack PK261100001 (modules in M01, M02) -> vehicle WVWZZZE1ZPP012345 (slot HV)

Station data: fill visits of each cell with its fill mass (cell 3 out of spec at 404.2 g,
LSL 405.9 g), the pack end-of-line test (insulation 2400 MΩ, in spec) and the vehicle
marriage, whose HV insulation check reads 42 MΩ (LSL 100 MΩ, out of spec, visit NOK).
Open hold: a supplier notice on the electrolyte lot. Where transactions commit (live-server
tests) the out-of-spec values also put cell 3 and the vehicle on hold through compliance's
reaction; inside a test transaction that reaction does not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from compliance.choices import HoldSource
from compliance.models import Hold
from compliance.services import hold_place
from genealogy.choices import UnitKind, VisitResult
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
from qms.choices import ProcessStep, SpecialCharacteristic
from qms.models import Characteristic
from tests.factories import GTIN, Plant, StationFactory, UserFactory

VIN = "WVWZZZE1ZPP012345"
PACK = "PK261100001"
MODULES = ("M261100001", "M261100002")
CATHODE_SLIT = "SC-260303-001-L2"
CATHODE_MOTHER = "CC-260303-001"
ANODE_SLIT = "SC-A260303-001-L1"
ANODE_MOTHER = "AC-260303-001"
ELECTROLYTE_LOT = "EL-LP57-2611-0019"
SEPARATOR_LOT = "SEP-PE12-2610-0077"
CAM_LOT = "CAM-NMC811-2611-0042"
OOS_CELL = 3
VEHICLE_INSULATION_MOHM = 42.0
SUPPLIER_HOLD_REASON = (
    "Supplier notice SN-2611-07: water content above 20 ppm in drums 3-5 of this lot"
)

LOTS = {
    CAM_LOT: ("NMC811 cathode active material", "Nordkathode GmbH"),
    "PVDF-5130-2609-007": ("PVDF binder", "Rhein Polymers AG"),
    "ALF-12-2610-0551": ("Aluminium foil 12 µm", "Alufolie Werk Nord"),
    "GR-AG-2608-0311": ("Artificial graphite", "Graphit Sachsen GmbH"),
    "CUF-6-2609-0228": ("Copper foil 6 µm", "Kupferband AG"),
    ELECTROLYTE_LOT: ("Electrolyte 1.2 M LiPF6 in EC/EMC", "Elyte Chemicals SE"),
    SEPARATOR_LOT: ("PE separator 12 µm, ceramic coated", "Separion Films GmbH"),
}


def cell_serial(n: int) -> str:
    """Cell n (1-based): P1 + year 26 + week 11 + 7-digit counter."""
    return f"P12611{n:07d}"


def cell_gs1(n: int) -> str:
    """What the DataMatrix on cell n reads, in human-readable form."""
    return f"(01){GTIN}(21){cell_serial(n)}(10)L2611A"


def cathode_segment(n: int) -> tuple[float, float]:
    start = 1204.0 + 6.0 * (n - 1)
    return start, start + 6.0


def anode_segment(n: int) -> tuple[float, float]:
    start = round(310.0 + 6.2 * (n - 1), 3)
    return start, round(start + 6.2, 3)


@dataclass
class VehicleThread:
    plant: Plant
    actor: object
    t0: datetime
    units: dict[str, Unit] = field(default_factory=dict)
    supplier_hold: Hold | None = None

    def __getitem__(self, serial: str) -> Unit:
        return self.units[serial]


def build_vehicle_thread(plant: Plant) -> VehicleThread:
    """Build the thread above; every write goes through a service."""
    actor = UserFactory(
        username="qe-builder", role="quality_engineer", first_name="Anna", last_name="Krüger"
    )
    t0 = (timezone.now() - timedelta(days=12)).replace(microsecond=0)
    th = VehicleThread(plant=plant, actor=actor, t0=t0)
    line = plant.line
    clock = [t0]

    def at(minutes: float = 0.5) -> datetime:
        clock[0] += timedelta(minutes=minutes)
        return clock[0]

    def make(kind: str, serial: str, **kw) -> Unit:
        unit = unit_create(kind=kind, serial=serial, actor=actor, produced_at=at(), **kw)
        th.units[unit.serial] = unit
        return unit

    for serial, (material, supplier) in LOTS.items():
        make(UnitKind.MATERIAL_LOT, serial, material=material, supplier=supplier)

    mxc = make(UnitKind.MIX_BATCH, "MXC-260302-01", line=line, material="NMC811 cathode slurry")
    for lot, kg in ((CAM_LOT, 600.0), ("PVDF-5130-2609-007", 12.0)):
        lot_consume(
            lot=th[lot], consumer=mxc, quantity=kg, quantity_unit="kg", actor=actor, linked_at=at()
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
        (CATHODE_MOTHER, mxc, "ALF-12-2610-0551"),
        (ANODE_MOTHER, mxa, "CUF-6-2609-0228"),
    ):
        unit = make(UnitKind.COIL, coil, line=line, length_m=3000.0)
        lot_consume(lot=mix, consumer=unit, actor=actor, linked_at=at())
        lot_consume(lot=th[foil], consumer=unit, actor=actor, linked_at=at())

    for slit, mother, lo, hi in (
        (CATHODE_SLIT, CATHODE_MOTHER, 1500.0, 3000.0),
        (ANODE_SLIT, ANODE_MOTHER, 0.0, 3000.0),
    ):
        unit = make(UnitKind.SLIT_COIL, slit, line=line, length_m=hi - lo)
        coil_slit(
            mother=th[mother], slit_coil=unit, start_m=lo, end_m=hi, actor=actor, linked_at=at()
        )

    cells = []
    for n in range(1, 9):
        cell = make(UnitKind.CELL, cell_gs1(n), line=line)
        cells.append(cell)
        lo, hi = cathode_segment(n)
        coil_segment_consume(
            coil=th[CATHODE_SLIT], consumer=cell, start_m=lo, end_m=hi, actor=actor, linked_at=at()
        )
        lo, hi = anode_segment(n)
        coil_segment_consume(
            coil=th[ANODE_SLIT], consumer=cell, start_m=lo, end_m=hi, actor=actor, linked_at=at()
        )
        lot_consume(
            lot=th[ELECTROLYTE_LOT],
            consumer=cell,
            quantity=410.0,
            quantity_unit="g",
            actor=actor,
            linked_at=at(),
        )
        lot_consume(
            lot=th[SEPARATOR_LOT],
            consumer=cell,
            quantity=38.5,
            quantity_unit="m2",
            actor=actor,
            linked_at=at(),
        )

    for m, serial in enumerate(MODULES):
        module = make(UnitKind.MODULE, serial, line=line)
        for slot, cell in enumerate(cells[4 * m : 4 * m + 4]):
            unit_assemble(
                part=cell, assembly=module, slot=f"C{slot + 1:02d}", actor=actor, linked_at=at()
            )
    pack = make(UnitKind.PACK, PACK, line=line)
    for slot, serial in enumerate(MODULES):
        unit_assemble(
            part=th[serial], assembly=pack, slot=f"M{slot + 1:02d}", actor=actor, linked_at=at()
        )
    vehicle = make(UnitKind.VEHICLE, VIN)
    unit_assemble(part=pack, assembly=vehicle, slot="HV", actor=actor, linked_at=at())

    # Station data arrives after the links (check-weigher and EOL results are imported in
    # batches), so the interlock plays no part in building the thread.
    fill, weigher = plant.stations["fill"], plant.equipment["weigher"]
    eol = StationFactory(
        line=line,
        code="pack-eol",
        name="Pack end-of-line test",
        process_step=ProcessStep.END_OF_LINE_TEST,
        sequence=55,
    )
    pack_insulation = _insulation(
        eol, "pack-insulation-resistance", "Pack insulation resistance HV+ to chassis"
    )
    marriage = plant.stations["marriage"]
    vehicle_insulation = _insulation(
        marriage, "vehicle-hv-insulation", "Vehicle HV insulation resistance"
    )
    rows = []
    for n, cell in enumerate(cells, start=1):
        start = t0 + timedelta(days=1, minutes=10 * n)
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
                value=404.2 if n == OOS_CELL else round(409.6 + 0.2 * n, 1),
                measured_at=start + timedelta(minutes=1),
                equipment_id=weigher.pk,
                visit_id=visit.pk,
            )
        )
    eol_start = t0 + timedelta(days=3, hours=2)
    eol_visit = visit_record(
        unit=pack,
        station=eol,
        started_at=eol_start,
        ended_at=eol_start + timedelta(minutes=9),
        program="EOL-PK-V7",
        operator="op-203",
        actor=actor,
    )
    rows.append(
        MeasurementInput(
            unit_id=pack.pk,
            characteristic_id=pack_insulation.pk,
            value=2400.0,
            measured_at=eol_start + timedelta(minutes=4),
            visit_id=eol_visit.pk,
        )
    )
    wed_start = t0 + timedelta(days=4, hours=6)
    wed_visit = visit_record(
        unit=vehicle,
        station=marriage,
        started_at=wed_start,
        ended_at=wed_start + timedelta(minutes=6),
        result=VisitResult.NOK,
        program="MARRIAGE-V2",
        operator="op-311",
        actor=actor,
    )
    rows.append(
        MeasurementInput(
            unit_id=vehicle.pk,
            characteristic_id=vehicle_insulation.pk,
            value=VEHICLE_INSULATION_MOHM,
            measured_at=wed_start + timedelta(minutes=5),
            visit_id=wed_visit.pk,
        )
    )
    measurements_record(rows=rows, actor=actor)

    th.supplier_hold = hold_place(
        units=[th[ELECTROLYTE_LOT]],
        reason=SUPPLIER_HOLD_REASON,
        source=HoldSource.SUPPLIER_NOTICE,
        source_reference="SN-2611-07",
        actor=actor,
    )
    return th


def _insulation(station, code: str, name: str) -> Characteristic:
    """An HV insulation-resistance check (control-plan master data)."""
    return Characteristic.objects.create(
        station=station,
        code=code,
        name=name,
        unit="MΩ",
        nominal=500.0,
        lsl=100.0,
        usl=None,
        measurement_method="insulation tester, 1000 V DC, 60 s",
        sample_size=1,
        sample_frequency="100 %",
        reaction_plan="Hold the unit; locate the insulation fault.",
        special_class=SpecialCharacteristic.CC,
    )
