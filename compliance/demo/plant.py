"""Master data of the demo plant, and :func:`seed` that loads it (``manage.py seed_demo``).

Site GF1 (Germany) with two lines:

* ``L1-PRI``: NMC811 / graphite prismatic cell, 105 Ah, two flat-wound jelly rolls per can,
  marked with a GS1 DataMatrix (AI 01 GTIN + AI 21 serial + AI 10 lot + AI 11 date).
  Modules of 12 cells, packs of 8 modules (96s, about 37 kWh).
* ``L2-CYL``: NMC811 / graphite 21700 cylindrical cell, 5.0 Ah, laser-marked DataMatrix
  with a plain serial. Modules of 46 cells, packs of 10 modules (460 cells).

Each line has a station for every process step it runs, the machines at each station, and
a control plan (one :class:`qms.models.Characteristic` per row) with limits taken from
typical EV-grade NMC/graphite practice. Limits are data: a plant changes them through the
control plan, not here.

The demo users and API tokens are for a local demo only; :data:`DEMO_USERS` and
:data:`DEMO_INTEGRATIONS` are printed by ``manage.py demo_logins``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import Group, User
from django.db import transaction

from qms.choices import (
    CellFormat,
    IdentificationMethod,
    IntegrationScope,
    ProcessStep,
)
from qms.choices import SpecialCharacteristic as SC
from qms.files import demo as files_demo
from qms.models import Characteristic, Equipment, Integration, Line, Site, Station

from . import risk as risk_demo
from . import vision as vision_demo

SEED_REASON = "demo plant seeded"

SITE_CODE = "GF1"
SITE_NAME = "Gigafactory 1 (demo)"
SITE_COUNTRY = "DE"


# --- Master-data shapes -------------------------------------------------------------------


@dataclass(frozen=True)
class EquipmentSpec:
    code: str
    name: str
    manufacturer: str
    model_name: str
    serial_number: str


@dataclass(frozen=True)
class CharSpec:
    """One control-plan row. ``equipment`` names the gauge at the station that measures it."""

    code: str
    name: str
    unit: str
    nominal: float
    lsl: float | None
    usl: float | None
    method: str
    sample_size: int
    frequency: str
    reaction: str
    special_class: str = SC.NONE
    equipment: str = ""


@dataclass(frozen=True)
class StationSpec:
    code: str
    name: str
    process_step: str
    sequence: int
    equipment: tuple[EquipmentSpec, ...] = ()
    characteristics: tuple[CharSpec, ...] = ()


@dataclass(frozen=True)
class CellDesign:
    """What one cell of the line is made of, and how cells are packed (used by the simulator).

    Electrode lengths are per cell, in metres of slit coil. Lanes are slit side by side from
    one mother coil, so every lane of a mother coil has the mother coil's length.
    """

    description: str
    capacity_ah: float
    cathode_m_per_cell: float
    anode_m_per_cell: float
    separator_m_per_cell: float
    cathode_lane_mm: float
    anode_lane_mm: float
    lanes: int
    cells_per_module: int
    modules_per_pack: int
    winders: int
    takt_s: float
    pull_sample_every: int
    series_cells_per_pack: int | None = None


@dataclass(frozen=True)
class VehicleProgramme:
    """The vehicle a line's packs go into; VIN = WMI + VDS + check digit + year + plant."""

    name: str
    wmi: str
    vds: str
    model_year_code: str
    plant_code: str


@dataclass(frozen=True)
class LineSpec:
    code: str
    name: str
    cell_format: str
    identification_method: str
    serial_scheme: str
    gtin: str
    #: Serial patterns of the units made on the line (all match ``serial_scheme``).
    cell_prefix: str
    mix_prefix: str
    coil_prefix: str
    module_prefix: str
    pack_prefix: str
    design: CellDesign
    vehicle: VehicleProgramme
    stations: tuple[StationSpec, ...] = field(default_factory=tuple)

    def station(self, code: str) -> StationSpec:
        return next(s for s in self.stations if s.code == code)


@dataclass(frozen=True)
class MaterialSpec:
    """A purchased material, its supplier and the supplier's lot-number prefix."""

    key: str
    name: str
    supplier: str
    lot_prefix: str
    unit: str


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    role: str
    may: str
    superuser: bool = False


@dataclass(frozen=True)
class DemoIntegration:
    name: str
    username: str
    scope: str
    token: str
    may: str


# --- Materials, users, tokens -------------------------------------------------------------

MATERIALS: dict[str, MaterialSpec] = {
    m.key: m
    for m in (
        MaterialSpec("nmc811", "NMC811 cathode active material", "Aurora Cathode Materials",
                     "ACM811", "kg"),
        MaterialSpec("graphite", "Spherical graphite, anode active material",
                     "Baltic Graphite AB", "BGA-SG", "kg"),
        MaterialSpec("pvdf", "PVDF binder (cathode)", "Rheinfluor Polymers", "RFP5130", "kg"),
        MaterialSpec("carbon", "Conductive carbon black", "Carbona Additives", "CBA-C65", "kg"),
        MaterialSpec("cmc", "CMC binder (anode)", "Hydrobind Chemie", "HBC-CMC", "kg"),
        MaterialSpec("sbr", "SBR binder (anode)", "Hydrobind Chemie", "HBC-SBR", "kg"),
        MaterialSpec("al_foil", "Aluminium foil 12 µm", "Nordfolie Aluminium", "NFA12", "m"),
        MaterialSpec("cu_foil", "Copper foil 6 µm", "Luxfoil Copper", "LXC06", "m"),
        MaterialSpec("separator", "PE separator 12 µm, ceramic-coated", "Polysep Membranes",
                     "PSM12C", "m"),
        MaterialSpec("electrolyte", "Electrolyte 1.2 M LiPF6 in EC/EMC + 2 % VC",
                     "Elyte Chemicals", "ELY-E12", "g"),
    )
}  # fmt: skip

#: Dry-solids recipes of the slurries, mass fractions per material.
CATHODE_RECIPE = {"nmc811": 0.965, "pvdf": 0.020, "carbon": 0.015}
ANODE_RECIPE = {"graphite": 0.960, "cmc": 0.015, "sbr": 0.020, "carbon": 0.005}

DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("admin", "admin-celltrace", "superuser",
             "everything, including Django admin at /admin/", superuser=True),
    DemoUser("operator", "operator-celltrace", "operator",
             "record units, links, station visits and measurements; place holds"),
    DemoUser("quality", "quality-celltrace", "quality_engineer",
             "all an operator may, plus release holds and edit the control plan"),
    DemoUser("mrb", "mrb-celltrace", "mrb_member",
             "view everything; place and release holds (MRB disposition)"),
    DemoUser("auditor", "auditor-celltrace", "auditor",
             "read-only everywhere: trace, holds, control plan, history"),
)  # fmt: skip

DEMO_INTEGRATIONS: tuple[DemoIntegration, ...] = (
    DemoIntegration(
        name="ERP reader (demo)",
        username="erp-demo",
        scope=IntegrationScope.READ,
        token="ctdemo-read-2c7d9f41e6b85a03",  # noqa: S106  fixed token, local demo only
        may="API reads: plant, units, trace, recall scope, holds, measurements",
    ),
    DemoIntegration(
        name="MES gateway (demo)",
        username="mes-demo",
        scope=IntegrationScope.READ_WRITE,
        token="ctdemo-write-8a4e1c6f2b9d7350",  # noqa: S106  fixed token, local demo only
        may="API reads and writes: units, links, measurements, holds, interlock",
    ),
)

#: The integration the simulated line reports through (its user is the acting user).
LINE_INTEGRATION_USERNAME = "mes-demo"
#: The person who places holds on SPC alarms in the demo.
QUALITY_USERNAME = "quality"
#: The MRB member who dispositions held units (rework, scrap) in the demo.
MRB_USERNAME = "mrb"


# --- Control plan building blocks ---------------------------------------------------------


def _pct(nominal: float, pct: float) -> tuple[float, float]:
    """Limits at ``pct`` % either side of ``nominal``, rounded to the gauge's resolution."""
    half = nominal * pct / 100.0
    return round(nominal - half, 4), round(nominal + half, 4)


def _eq(code: str, name: str, manufacturer: str, model_name: str, serial: str) -> EquipmentSpec:
    return EquipmentSpec(code, name, manufacturer, model_name, serial)


REACT_SEGMENT = (
    "SPC alarm on the coil: mark the out-of-spec metres, hold every cell that consumed them "
    "(segment trace, not the whole coil), notify process engineering; MRB dispositions the "
    "held cells. Check the slot-die gap and slurry supply before restarting."
)
REACT_BATCH = (
    "Do not release the batch to coating; adjust and re-test. Two failed re-tests: quarantine "
    "the batch and open an NCR."
)
REACT_CELL_HOLD = (
    "NOK at the station: the cell is held (interlock blocks further steps), re-measured once; "
    "confirmed NOK goes to MRB. Three NOK in a shift: stop and check the machine."
)
REACT_SCRAP = (
    "NOK: scrap the cell (not reworkable) with the reason recorded. Three NOK in a shift: "
    "stop the line, check the weld and the leak detector calibration."
)


def _mixing(prefix: str, electrode: str, solids: float, visc: float) -> StationSpec:
    e = "c" if electrode == "cathode" else "a"
    seq = 10 if e == "c" else 11
    lo, hi = round(solids - 1.0, 2), round(solids + 1.0, 2)
    return StationSpec(
        code=f"mix-{e}",
        name=f"{electrode.capitalize()} slurry mixing",
        process_step=ProcessStep.MIXING,
        sequence=seq,
        equipment=(
            _eq(f"mixer-{e}1", "Planetary dual-shaft mixer, 2,000 L", "Inoue Mfg.", "PLM-2000",
                f"{prefix}-MX{e.upper()}-2301"),
            _eq(f"visco-{e}1", "Rotational viscometer", "Brookfield", "DV2T",
                f"{prefix}-VS{e.upper()}-0412"),
            _eq(f"solids-{e}1", "Halogen moisture / solids analyser", "Mettler Toledo", "HC103",
                f"{prefix}-SA{e.upper()}-0933"),
        ),
        characteristics=(
            CharSpec(f"{electrode}-slurry-solids", f"{electrode.capitalize()} slurry solid content",
                     "%", solids, lo, hi, "halogen drying at 160 °C, 2 g sample", 1,
                     "every batch", REACT_BATCH, SC.SC, f"solids-{e}1"),
            CharSpec(f"{electrode}-slurry-viscosity",
                     f"{electrode.capitalize()} slurry viscosity at 25 °C, 10 s⁻¹", "mPa·s",
                     visc, round(visc * 0.75), round(visc * 1.25),
                     "rotational viscometer, spindle SC4-27", 1, "every batch", REACT_BATCH,
                     SC.NONE, f"visco-{e}1"),
        ),
    )  # fmt: skip


def _coating(prefix: str, electrode: str, loading: float) -> StationSpec:
    e = "c" if electrode == "cathode" else "a"
    lo, hi = _pct(loading, 1.5)
    return StationSpec(
        code=f"coat-{e}",
        name=f"{electrode.capitalize()} coating and drying",
        process_step=ProcessStep.COATING,
        sequence=20 if e == "c" else 21,
        equipment=(
            _eq(f"coater-{e}1", "Slot-die tandem coater with 60 m dryer", "Dürr Megtec",
                "Tandem slot-die 1300", f"{prefix}-CT{e.upper()}-1187"),
            _eq(f"bw-{e}1", "Traversing basis-weight gauge (beta)", "Thermo Fisher Scientific",
                "LInspector Edge", f"{prefix}-BW{e.upper()}-5510"),
        ),
        characteristics=(
            CharSpec(f"{electrode}-areal-loading", f"{electrode.capitalize()} areal loading, "
                     "per side", "mg/cm²", loading, lo, hi,
                     "beta basis-weight gauge, traversing; mean over 10 m of coil", 1,
                     "continuous, one value per 10 m", REACT_SEGMENT, SC.SC, f"bw-{e}1"),
        ),
    )  # fmt: skip


def _calendering(prefix: str, electrode: str, thickness: float, foil: str) -> StationSpec:
    e = "c" if electrode == "cathode" else "a"
    return StationSpec(
        code=f"cal-{e}",
        name=f"{electrode.capitalize()} calendering",
        process_step=ProcessStep.CALENDERING,
        sequence=30 if e == "c" else 31,
        equipment=(
            _eq(f"calender-{e}1", "Two-high calender, heated rolls", "Saueressig",
                "Cal-Line 800", f"{prefix}-CL{e.upper()}-0779"),
            _eq(f"thk-{e}1", "Laser thickness gauge (C-frame)", "Micro-Epsilon",
                "thicknessCONTROL MTS 8202.LLT", f"{prefix}-TH{e.upper()}-3021"),
        ),
        characteristics=(
            CharSpec(f"{electrode}-thickness", f"{electrode.capitalize()} electrode thickness "
                     f"after calendering (double-sided, incl. {foil})", "µm", thickness,
                     thickness - 3.0, thickness + 3.0,
                     "laser triangulation thickness gauge, mean over 25 m", 1,
                     "continuous, one value per 25 m",
                     "Adjust roll gap; hold the out-of-spec metres of the coil; check density "
                     "on a punched sample.", SC.SC, f"thk-{e}1"),
        ),
    )  # fmt: skip


def _slitting(prefix: str, electrode: str, usl: float, nominal: float) -> StationSpec:
    e = "c" if electrode == "cathode" else "a"
    foil = "Al" if e == "c" else "Cu"
    return StationSpec(
        code=f"slit-{e}",
        name=f"{electrode.capitalize()} slitting",
        process_step=ProcessStep.SLITTING,
        sequence=40 if e == "c" else 41,
        equipment=(
            _eq(f"slitter-{e}1", "Slitter-rewinder, rotary shear knives", "Kampf",
                "Conslitter 2.0", f"{prefix}-SL{e.upper()}-4410"),
            _eq(f"aoi-{e}1", "Edge inspection camera (burr, dust)", "Keyence",
                "CV-X480 edge AOI", f"{prefix}-AO{e.upper()}-8123"),
        ),
        characteristics=(
            CharSpec(f"{electrode}-burr", f"{electrode.capitalize()} slit-edge burr height "
                     f"({foil})", "µm", nominal, None, usl,
                     "CCD edge inspection, max burr per 250 m; SEM cross-section on the first "
                     "and last metre of each coil", 1, "every slit coil, one value per 250 m",
                     "Stop the slitter, change the knives; hold the slit coil from the last "
                     "good reading; burr above the separator half-thickness can short.",
                     SC.CC, f"aoi-{e}1"),
        ),
    )  # fmt: skip


def _prismatic_stations() -> tuple[StationSpec, ...]:
    p = "L1"
    fill_lo, fill_hi = _pct(158.0, 1.0)
    form_lo, form_hi = _pct(118.0, 3.0)
    return (
        _mixing(p, "cathode", 70.0, 6500),
        _mixing(p, "anode", 50.0, 3500),
        _coating(p, "cathode", 23.0),
        _coating(p, "anode", 14.5),
        _calendering(p, "cathode", 143.0, "12 µm Al"),
        _calendering(p, "anode", 187.0, "6 µm Cu"),
        _slitting(p, "cathode", 10.0, 4.0),
        _slitting(p, "anode", 15.0, 5.5),
        StationSpec(
            "wind", "Flat winding (2 jelly rolls per cell) and X-ray",
            ProcessStep.WINDING_STACKING, 50,
            equipment=(
                _eq("winder-1", "Prismatic flat winder 1", "Wuxi Lead Intelligent Equipment",
                    "LWF-350", "L1-WD-0101"),
                _eq("winder-2", "Prismatic flat winder 2", "Wuxi Lead Intelligent Equipment",
                    "LWF-350", "L1-WD-0102"),
                _eq("xray-1", "Inline X-ray, jelly-roll corners", "Comet Yxlon", "Cougar EVO",
                    "L1-XR-0217"),
                _eq("kf-1", "Karl Fischer coulometer with oven", "Metrohm",
                    "917 Coulometer / 874 Oven", "L1-KF-0058"),
            ),
            characteristics=(
                CharSpec("cathode-moisture", "Cathode moisture after vacuum drying", "ppm",
                         150.0, None, 300.0, "Karl Fischer, oven 160 °C, punched sample", 1,
                         "every slit coil at winding entry",
                         "Re-dry the slit coil (vacuum oven, 12 h) and re-test; do not wind.",
                         SC.SC, "kf-1"),
                CharSpec("anode-moisture", "Anode moisture after vacuum drying", "ppm",
                         250.0, None, 500.0, "Karl Fischer, oven 160 °C, punched sample", 1,
                         "every slit coil at winding entry",
                         "Re-dry the slit coil (vacuum oven, 12 h) and re-test; do not wind.",
                         SC.SC, "kf-1"),
                CharSpec("overhang", "Anode-over-cathode overhang, minimum of 4 corners", "mm",
                         1.0, 0.5, 1.5, "inline X-ray, both jelly rolls", 1, "100 %",
                         REACT_CELL_HOLD, SC.CC, "xray-1"),
            ),
        ),
        StationSpec(
            "tabweld", "Ultrasonic foil-stack tab welding", ProcessStep.TAB_WELDING, 60,
            equipment=(
                _eq("usw-1", "Ultrasonic metal welder, 20 kHz", "Branson", "GMX-20DP",
                    "L1-UW-0330"),
                _eq("pull-1", "Tensile tester for weld pull samples", "ZwickRoell",
                    "zwickiLine 5 kN", "L1-PT-0091"),
            ),
            characteristics=(
                CharSpec("tab-pull-force", "Tab weld pull force (foil stack to tab)", "N",
                         220.0, 150.0, None,
                         "destructive pull test, cathode and anode tab of a sample cell", 2,
                         "1 cell at the start of every 250-cell weld batch",
                         "Quarantine the weld batch since the last good sample, check "
                         "sonotrode and anvil wear, re-sample; MRB for the batch.", SC.CC,
                         "pull-1"),
            ),
        ),
        StationSpec(
            "asm", "Cell assembly: jelly rolls into can, cap laser weld, hi-pot",
            ProcessStep.CELL_ASSEMBLY, 70,
            equipment=(
                _eq("laser-1", "Fibre laser welder, cap to can", "Trumpf", "TruDisk 6001",
                    "L1-LW-0712"),
                _eq("rm-1", "4-wire resistance meter", "Hioki", "RM3545", "L1-RM-0148"),
                _eq("ir-1", "Insulation / hi-pot tester", "Hioki", "ST5520", "L1-IR-0266"),
            ),
            characteristics=(
                CharSpec("terminal-weld-resistance", "Tab-to-terminal weld resistance", "µΩ",
                         15.0, None, 25.0, "4-wire resistance across the weld", 1, "100 %",
                         REACT_CELL_HOLD, SC.SC, "rm-1"),
                CharSpec("insulation-resistance",
                         "Insulation resistance electrode to case, dry cell (1,000 V DC, 2 s)",
                         "MΩ", 5000.0, 500.0, None, "hi-pot / insulation tester", 1, "100 %",
                         REACT_CELL_HOLD, SC.CC, "ir-1"),
            ),
        ),
        StationSpec(
            "fill", "Electrolyte fill (vacuum) and check-weigh", ProcessStep.ELECTROLYTE_FILL,
            80,
            equipment=(
                _eq("filler-1", "Vacuum electrolyte filler, 8 nozzles",
                    "Wuxi Lead Intelligent Equipment", "LEF-8P", "L1-FL-0405"),
                _eq("cw-1", "Check-weigher (before/after fill)", "Mettler Toledo", "XPE2003S",
                    "L1-CW-0587"),
            ),
            characteristics=(
                CharSpec("fill-mass", "Electrolyte fill mass (1.5 g/Ah)", "g", 158.0,
                         fill_lo, fill_hi, "weight after fill minus weight before fill", 1,
                         "100 %", REACT_CELL_HOLD, SC.CC, "cw-1"),
            ),
        ),
        StationSpec(
            "form", "Formation (fill port open, negative pressure)", ProcessStep.FORMATION, 90,
            equipment=tuple(
                _eq(f"fc-{i:02d}", f"Formation cabinet {i}", "Chroma ATE", "17020",
                    f"L1-FC-10{i:02d}")
                for i in (1, 2, 3)
            ),
            characteristics=(
                CharSpec("formation-charge-capacity",
                         "First-charge capacity (CC-CV to 4.2 V, 0.1C)", "Ah", 118.0, form_lo,
                         form_hi, "cycler charge counter", 1, "100 %", REACT_CELL_HOLD, SC.SC,
                         "fc-01"),
            ),
        ),
        StationSpec(
            "seal", "Fill-port sealing (seal pin, laser weld) and helium leak test",
            ProcessStep.SEALING, 100,
            equipment=(
                _eq("laser-2", "Seal-pin laser welder", "Trumpf", "TruDisk 2001", "L1-LW-0713"),
                _eq("leak-1", "Helium leak detector, vacuum chamber", "Inficon", "LDS3000",
                    "L1-HE-0044"),
            ),
            characteristics=(
                CharSpec("he-leak-rate", "Helium leak rate after seal-pin weld", "mbar·L/s",
                         2e-8, None, 1e-6, "helium vacuum-chamber test after He charge", 1,
                         "100 %", REACT_SCRAP, SC.CC, "leak-1"),
            ),
        ),
        StationSpec(
            "aging", "Aging (7 days, 25 °C) with OCV scan", ProcessStep.AGING, 110,
            equipment=(
                _eq("ocv-1", "OCV / ACIR scanner on aging racks", "Hioki", "BT3562",
                    "L1-OC-0620"),
            ),
            characteristics=(
                CharSpec("k-value", "Self-discharge K-value (OCV1 - OCV2) / days", "mV/day",
                         0.08, None, 0.30,
                         "OCV at start and end of 7-day aging, temperature-corrected", 1,
                         "100 %",
                         "Above USL, or above lot median + 6 MAD: hold the cell, re-age 7 "
                         "days, MRB. Limits are reviewed per lot and aging rack.", SC.CC,
                         "ocv-1"),
                CharSpec("ocv", "OCV after aging (shipping SOC)", "mV", 3650.0, 3620.0, 3680.0,
                         "OCV scanner, 4-wire", 1, "100 %", REACT_CELL_HOLD, SC.SC, "ocv-1"),
            ),
        ),
        StationSpec(
            "grade", "Capacity grading and DCIR", ProcessStep.GRADING, 120,
            equipment=tuple(
                _eq(f"gc-{i:02d}", f"Grading cabinet {i}", "Chroma ATE", "17020",
                    f"L1-GC-20{i:02d}")
                for i in (1, 2)
            ),
            characteristics=(
                CharSpec("discharge-capacity", "Discharge capacity (C/3 to 2.8 V)", "Ah", 106.5,
                         105.0, 108.5, "cycler discharge counter, 25 °C", 1, "100 %",
                         "Below LSL: downgrade or scrap by MRB; bin cells by capacity.", SC.SC,
                         "gc-01"),
                CharSpec("dcir", "DCIR, 10 s pulse at 50 % SOC, 1C", "mΩ", 0.75, 0.50, 1.00,
                         "cycler pulse, ΔV/ΔI at 10 s", 1, "100 %",
                         "Above USL: hold; check the channel's contact resistance first.",
                         SC.SC, "gc-01"),
            ),
        ),
        StationSpec(
            "mod", "Module assembly (12 cells, busbar laser welding)",
            ProcessStep.MODULE_ASSEMBLY, 130,
            equipment=(
                _eq("laser-3", "Busbar laser welder", "Trumpf", "TruDisk 4001", "L1-LW-0714"),
                _eq("mt-1", "Module tester (cell voltages, insulation)", "Chroma ATE", "17040",
                    "L1-MT-0311"),
            ),
            characteristics=(
                CharSpec("cell-voltage-spread", "Cell-voltage spread in the module (max - min)",
                         "mV", 4.0, None, 10.0, "module tester, all cell taps", 1,
                         "100 % of modules",
                         "Find the deviating cell, replace it (rework with reason) and hold "
                         "the removed cell for failure analysis; re-test the module.", SC.SC,
                         "mt-1"),
            ),
        ),
        StationSpec(
            "pack", "Pack assembly (8 modules, 96s)", ProcessStep.PACK_ASSEMBLY, 140,
            equipment=(
                _eq("nut-1", "Multi-spindle nutrunner", "Atlas Copco", "QST", "L1-NR-0902"),
            ),
        ),
        StationSpec(
            "eol", "Pack end-of-line test", ProcessStep.END_OF_LINE_TEST, 150,
            equipment=(
                _eq("eol-1", "Pack EOL tester", "Kratzer Automation", "KBT EOL 1000",
                    "L1-EO-0016"),
                _eq("coolant-leak-1", "Coolant circuit leak tester", "ATEQ", "F5200",
                    "L1-CL-0023"),
            ),
            characteristics=(
                CharSpec("pack-isolation-resistance", "Pack isolation resistance HV to chassis",
                         "MΩ", 150.0, 10.0, None, "1,000 V DC, HV+ and HV- to chassis", 1,
                         "100 %", "NOK: pack to repair bay, find the fault, re-test.", SC.CC,
                         "eol-1"),
                CharSpec("pack-ocv", "Pack open-circuit voltage (96s)", "V", 350.4, 347.5,
                         353.3, "EOL tester", 1, "100 %",
                         "NOK: check module connections and cell voltages.", SC.SC, "eol-1"),
                CharSpec("coolant-leak-rate", "Coolant circuit leak rate (pressure decay)",
                         "cm³/min", 0.6, None, 2.0, "pressure decay at 2.5 bar", 1, "100 %",
                         "NOK: pack to repair bay; re-test after repair.", SC.SC,
                         "coolant-leak-1"),
            ),
        ),
        StationSpec(
            "marriage", "Vehicle marriage (pack to body)", ProcessStep.VEHICLE_MARRIAGE, 160,
            equipment=(
                _eq("aga-1", "Automatic guided lift, pack to body", "Dürr", "EcoProFleet",
                    "L1-VM-0007"),
            ),
        ),
    )  # fmt: skip


def _cylindrical_stations() -> tuple[StationSpec, ...]:
    p = "L2"
    fill_lo, fill_hi = _pct(5.0, 1.0)
    form_lo, form_hi = _pct(5.70, 3.0)
    return (
        _mixing(p, "cathode", 72.0, 7000),
        _mixing(p, "anode", 48.0, 3000),
        _coating(p, "cathode", 23.0),
        _coating(p, "anode", 14.0),
        _calendering(p, "cathode", 162.0, "12 µm Al"),
        _calendering(p, "anode", 178.0, "6 µm Cu"),
        _slitting(p, "cathode", 10.0, 3.5),
        _slitting(p, "anode", 15.0, 5.0),
        StationSpec(
            "wind", "Cylindrical winding and X-ray (both ends)", ProcessStep.WINDING_STACKING,
            50,
            equipment=(
                _eq("winder-1", "Cylindrical winder 1", "Wuxi Lead Intelligent Equipment",
                    "LWC-21", "L2-WD-0201"),
                _eq("winder-2", "Cylindrical winder 2", "Wuxi Lead Intelligent Equipment",
                    "LWC-21", "L2-WD-0202"),
                _eq("xray-1", "Inline X-ray, both ends of the jelly roll", "Comet Yxlon",
                    "Cheetah EVO", "L2-XR-0305"),
                _eq("kf-1", "Karl Fischer coulometer with oven", "Metrohm",
                    "917 Coulometer / 874 Oven", "L2-KF-0061"),
            ),
            characteristics=(
                CharSpec("cathode-moisture", "Cathode moisture after vacuum drying", "ppm",
                         140.0, None, 300.0, "Karl Fischer, oven 160 °C, punched sample", 1,
                         "every slit coil at winding entry",
                         "Re-dry the slit coil (vacuum oven, 12 h) and re-test; do not wind.",
                         SC.SC, "kf-1"),
                CharSpec("anode-moisture", "Anode moisture after vacuum drying", "ppm",
                         240.0, None, 500.0, "Karl Fischer, oven 160 °C, punched sample", 1,
                         "every slit coil at winding entry",
                         "Re-dry the slit coil (vacuum oven, 12 h) and re-test; do not wind.",
                         SC.SC, "kf-1"),
                CharSpec("overhang", "Anode-over-cathode overhang, minimum of both ends", "mm",
                         1.0, 0.5, 1.5, "inline X-ray, 100 % at both ends", 1, "100 %",
                         REACT_CELL_HOLD, SC.CC, "xray-1"),
            ),
        ),
        StationSpec(
            "tabweld", "Ultrasonic tab welding (Al and Ni tabs)", ProcessStep.TAB_WELDING, 60,
            equipment=(
                _eq("usw-1", "Ultrasonic metal welder, 40 kHz", "Schunk Sonosystems",
                    "DS20 II", "L2-UW-0331"),
                _eq("pull-1", "Tensile tester for weld pull samples", "ZwickRoell",
                    "zwickiLine 2.5 kN", "L2-PT-0092"),
            ),
            characteristics=(
                CharSpec("tab-pull-force", "Tab weld pull force (tab to foil)", "N", 45.0,
                         30.0, None, "destructive pull test, positive and negative tab", 2,
                         "1 cell at the start of every 500-cell weld batch",
                         "Quarantine the weld batch since the last good sample, check the "
                         "sonotrode, re-sample; MRB for the batch.", SC.CC, "pull-1"),
            ),
        ),
        StationSpec(
            "asm", "Cell assembly: can insertion, bottom weld, grooving, hi-pot",
            ProcessStep.CELL_ASSEMBLY, 70,
            equipment=(
                _eq("rw-1", "Resistance welder, negative tab to can bottom", "Miyachi Unitek",
                    "UB-25", "L2-RW-0418"),
                _eq("rm-1", "4-wire resistance meter", "Hioki", "RM3545", "L2-RM-0149"),
                _eq("ir-1", "Insulation / hi-pot tester", "Hioki", "ST5520", "L2-IR-0267"),
            ),
            characteristics=(
                CharSpec("terminal-weld-resistance", "Negative tab-to-can weld resistance",
                         "µΩ", 30.0, None, 50.0, "4-wire resistance across the weld", 1,
                         "100 %", REACT_CELL_HOLD, SC.SC, "rm-1"),
                CharSpec("insulation-resistance",
                         "Insulation resistance positive to can, dry cell (250 V DC, 1 s)",
                         "MΩ", 2000.0, 200.0, None, "hi-pot / insulation tester", 1, "100 %",
                         REACT_CELL_HOLD, SC.CC, "ir-1"),
            ),
        ),
        StationSpec(
            "fill", "Electrolyte fill (vacuum) and check-weigh", ProcessStep.ELECTROLYTE_FILL,
            80,
            equipment=(
                _eq("filler-1", "Vacuum electrolyte filler, 24 nozzles", "Hirano Tecseed",
                    "EF-24", "L2-FL-0406"),
                _eq("cw-1", "Check-weigher (before/after fill)", "Mettler Toledo", "XSR205",
                    "L2-CW-0588"),
            ),
            characteristics=(
                CharSpec("fill-mass", "Electrolyte fill mass (1.0 g/Ah)", "g", 5.0, fill_lo,
                         fill_hi, "weight after fill minus weight before fill", 1, "100 %",
                         REACT_CELL_HOLD, SC.CC, "cw-1"),
            ),
        ),
        StationSpec(
            "seal", "Cap crimp sealing and helium leak test", ProcessStep.SEALING, 85,
            equipment=(
                _eq("crimp-1", "Crimping and sizing press", "Hirano Tecseed", "CR-21",
                    "L2-CR-0102"),
                _eq("leak-1", "Helium leak detector, tray chamber", "Pfeiffer Vacuum",
                    "ASM 340", "L2-HE-0045"),
                _eq("height-1", "Cell height gauge", "Keyence", "LJ-X8080", "L2-HG-0512"),
            ),
            characteristics=(
                CharSpec("he-leak-rate", "Helium leak rate after crimp", "mbar·L/s", 1e-8,
                         None, 1e-6, "helium tray-chamber test", 1, "100 %", REACT_SCRAP,
                         SC.CC, "leak-1"),
                CharSpec("cell-height", "Cell height after crimping", "mm", 70.20, 70.05, 70.35,
                         "laser profile gauge", 1, "100 %", REACT_CELL_HOLD, SC.SC,
                         "height-1"),
            ),
        ),
        StationSpec(
            "form", "Formation (sealed can)", ProcessStep.FORMATION, 90,
            equipment=tuple(
                _eq(f"fc-{i:02d}", f"Formation cabinet {i}", "Digatron", "UBT 5-256",
                    f"L2-FC-10{i:02d}")
                for i in (1, 2, 3, 4)
            ),
            characteristics=(
                CharSpec("formation-charge-capacity",
                         "First-charge capacity (CC-CV to 4.2 V, 0.1C)", "Ah", 5.70, form_lo,
                         form_hi, "cycler charge counter", 1, "100 %", REACT_CELL_HOLD, SC.SC,
                         "fc-01"),
            ),
        ),
        StationSpec(
            "aging", "Aging (7 days, 25 °C) with OCV scan", ProcessStep.AGING, 110,
            equipment=(
                _eq("ocv-1", "OCV / ACIR scanner on aging racks", "Hioki", "BT3562",
                    "L2-OC-0621"),
            ),
            characteristics=(
                CharSpec("k-value", "Self-discharge K-value (OCV1 - OCV2) / days", "mV/day",
                         0.07, None, 0.30,
                         "OCV at start and end of 7-day aging, temperature-corrected", 1,
                         "100 %",
                         "Above USL, or above lot median + 6 MAD: hold the cell, re-age 7 "
                         "days, MRB. Limits are reviewed per lot and aging rack.", SC.CC,
                         "ocv-1"),
                CharSpec("ocv", "OCV after aging (shipping SOC)", "mV", 3650.0, 3620.0, 3680.0,
                         "OCV scanner, 4-wire", 1, "100 %", REACT_CELL_HOLD, SC.SC, "ocv-1"),
            ),
        ),
        StationSpec(
            "grade", "Capacity grading and DCIR", ProcessStep.GRADING, 120,
            equipment=tuple(
                _eq(f"gc-{i:02d}", f"Grading cabinet {i}", "Digatron", "UBT 5-256",
                    f"L2-GC-20{i:02d}")
                for i in (1, 2)
            ),
            characteristics=(
                CharSpec("discharge-capacity", "Discharge capacity (C/3 to 2.5 V)", "Ah", 5.02,
                         4.90, 5.15, "cycler discharge counter, 25 °C", 1, "100 %",
                         "Below LSL: downgrade or scrap by MRB; bin cells by capacity.", SC.SC,
                         "gc-01"),
                CharSpec("dcir", "DCIR, 10 s pulse at 50 % SOC, 1C", "mΩ", 27.0, 20.0, 35.0,
                         "cycler pulse, ΔV/ΔI at 10 s", 1, "100 %",
                         "Above USL: hold; check the channel's contact resistance first.",
                         SC.SC, "gc-01"),
            ),
        ),
        StationSpec(
            "mod", "Module assembly (46 cells, wire bonding)", ProcessStep.MODULE_ASSEMBLY,
            130,
            equipment=(
                _eq("bond-1", "Heavy-wire bonder", "Hesse Mechatronics", "Bondjet BJ985",
                    "L2-WB-0630"),
                _eq("mt-1", "Module tester (cell voltages, insulation)", "Chroma ATE", "17040",
                    "L2-MT-0312"),
            ),
            characteristics=(
                CharSpec("cell-voltage-spread", "Cell-voltage spread in the module (max - min)",
                         "mV", 4.0, None, 10.0, "module tester, all cell taps", 1,
                         "100 % of modules",
                         "Find the deviating cell, replace it (rework with reason) and hold "
                         "the removed cell for failure analysis; re-test the module.", SC.SC,
                         "mt-1"),
            ),
        ),
        StationSpec(
            "pack", "Pack assembly (10 modules, 460 cells)", ProcessStep.PACK_ASSEMBLY, 140,
            equipment=(
                _eq("nut-1", "Multi-spindle nutrunner", "Atlas Copco", "QST", "L2-NR-0903"),
            ),
        ),
        StationSpec(
            "eol", "Pack end-of-line test", ProcessStep.END_OF_LINE_TEST, 150,
            equipment=(
                _eq("eol-1", "Pack EOL tester", "Kratzer Automation", "KBT EOL 1000",
                    "L2-EO-0017"),
                _eq("coolant-leak-1", "Coolant circuit leak tester", "ATEQ", "F5200",
                    "L2-CL-0024"),
            ),
            characteristics=(
                CharSpec("pack-isolation-resistance", "Pack isolation resistance HV to chassis",
                         "MΩ", 150.0, 10.0, None, "1,000 V DC, HV+ and HV- to chassis", 1,
                         "100 %", "NOK: pack to repair bay, find the fault, re-test.", SC.CC,
                         "eol-1"),
                CharSpec("coolant-leak-rate", "Coolant circuit leak rate (pressure decay)",
                         "cm³/min", 0.6, None, 2.0, "pressure decay at 2.5 bar", 1, "100 %",
                         "NOK: pack to repair bay; re-test after repair.", SC.SC,
                         "coolant-leak-1"),
            ),
        ),
        StationSpec(
            "marriage", "Vehicle marriage (pack to body)", ProcessStep.VEHICLE_MARRIAGE, 160,
            equipment=(
                _eq("aga-1", "Automatic guided lift, pack to body", "Dürr", "EcoProFleet",
                    "L2-VM-0008"),
            ),
        ),
    )  # fmt: skip


PRISMATIC = LineSpec(
    code="L1-PRI",
    name="Prismatic line 1 (NMC811, 105 Ah)",
    cell_format=CellFormat.PRISMATIC,
    identification_method=IdentificationMethod.DATAMATRIX,
    serial_scheme=(
        r"P1[0-9]{10}|MX1-[CA]-[0-9]{6}|EC1-[CA]-[0-9]{6}(-[A-H])?|MOD1-[0-9]{6}|PCK1-[0-9]{6}"
    ),
    gtin="04260123450014",
    cell_prefix="P1",
    mix_prefix="MX1",
    coil_prefix="EC1",
    module_prefix="MOD1",
    pack_prefix="PCK1",
    design=CellDesign(
        description="NMC811/graphite prismatic, 105 Ah, 2 flat-wound jelly rolls",
        capacity_ah=105.0,
        cathode_m_per_cell=6.5,
        anode_m_per_cell=6.8,
        separator_m_per_cell=14.0,
        cathode_lane_mm=185.0,
        anode_lane_mm=189.0,
        lanes=4,
        cells_per_module=12,
        modules_per_pack=8,
        winders=2,
        takt_s=60.0,
        pull_sample_every=250,
        series_cells_per_pack=96,
    ),
    vehicle=VehicleProgramme(
        name="Compact BEV, 37 kWh", wmi="WCT", vds="BE1A4", model_year_code="T", plant_code="G"
    ),
    stations=_prismatic_stations(),
)

CYLINDRICAL = LineSpec(
    code="L2-CYL",
    name="Cylindrical line 2 (21700 NMC811, 5.0 Ah)",
    cell_format=CellFormat.CYLINDRICAL,
    identification_method=IdentificationMethod.LASER_MARK,
    serial_scheme=(
        r"C2[0-9]{10}|MX2-[CA]-[0-9]{6}|EC2-[CA]-[0-9]{6}(-[A-L])?|MOD2-[0-9]{6}|PCK2-[0-9]{6}"
    ),
    gtin="04260123450021",
    cell_prefix="C2",
    mix_prefix="MX2",
    coil_prefix="EC2",
    module_prefix="MOD2",
    pack_prefix="PCK2",
    design=CellDesign(
        description="NMC811/graphite 21700 cylindrical, 5.0 Ah, wound jelly roll",
        capacity_ah=5.0,
        cathode_m_per_cell=0.86,
        anode_m_per_cell=0.92,
        separator_m_per_cell=2.0,
        cathode_lane_mm=62.0,
        anode_lane_mm=64.0,
        lanes=10,
        cells_per_module=46,
        modules_per_pack=10,
        winders=2,
        takt_s=12.0,
        pull_sample_every=500,
    ),
    vehicle=VehicleProgramme(
        name="Plug-in hybrid, 8.4 kWh", wmi="WCT", vds="PH2C8", model_year_code="T", plant_code="G"
    ),
    stations=_cylindrical_stations(),
)

LINES: tuple[LineSpec, ...] = (PRISMATIC, CYLINDRICAL)


# --- Seeding ------------------------------------------------------------------------------


@dataclass
class SeedResult:
    """What :func:`seed` created, per kind of row; empty on a second run."""

    created: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.created[what] = self.created.get(what, 0) + 1

    @property
    def changed(self) -> bool:
        return bool(self.created)


def _ensure(model, result: SeedResult, label: str, lookup: dict, values: dict):
    """The row for ``lookup``, created with ``values`` if it is missing.

    An existing row is left exactly as it is: limits a quality engineer changed in the
    control plan survive ``make run`` seeding again.
    """
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        obj = model(**lookup, **values)
        obj._change_reason = SEED_REASON
        obj.save()
        result.count(label)
    return obj


def _seed_line(site: Site, spec: LineSpec, result: SeedResult) -> None:
    line = _ensure(
        Line,
        result,
        "lines",
        {"site": site, "code": spec.code},
        {
            "name": spec.name,
            "cell_format": spec.cell_format,
            "identification_method": spec.identification_method,
            "serial_scheme": spec.serial_scheme,
            "gtin": spec.gtin,
        },
    )
    for st in spec.stations:
        station = _ensure(
            Station,
            result,
            "stations",
            {"line": line, "code": st.code},
            {"name": st.name, "process_step": st.process_step, "sequence": st.sequence},
        )
        for eq in st.equipment:
            _ensure(
                Equipment,
                result,
                "equipment",
                {"station": station, "code": eq.code},
                {
                    "name": eq.name,
                    "manufacturer": eq.manufacturer,
                    "model_name": eq.model_name,
                    "serial_number": eq.serial_number,
                },
            )
        for ch in st.characteristics:
            _ensure(
                Characteristic,
                result,
                "characteristics",
                {"station": station, "code": ch.code},
                {
                    "name": ch.name,
                    "unit": ch.unit,
                    "nominal": ch.nominal,
                    "lsl": ch.lsl,
                    "usl": ch.usl,
                    "measurement_method": ch.method,
                    "sample_size": ch.sample_size,
                    "sample_frequency": ch.frequency,
                    "reaction_plan": ch.reaction,
                    "special_class": ch.special_class,
                },
            )


def _seed_users(result: SeedResult) -> None:
    for du in DEMO_USERS:
        user = User.objects.filter(username=du.username).first()
        if user is None:
            if du.superuser:
                user = User.objects.create_superuser(du.username, password=du.password)
            else:
                user = User.objects.create_user(du.username, password=du.password)
                user.groups.add(Group.objects.get(name=du.role))
            result.count("users")
    for di in DEMO_INTEGRATIONS:
        if Integration.objects.filter(name=di.name).exists():
            continue
        user = User.objects.filter(username=di.username).first()
        if user is None:
            user = User.objects.create_user(di.username)  # API only: no usable password
            user.groups.add(Group.objects.get(name="integration"))
            result.count("users")
        integration = Integration(name=di.name, user=user, scope=di.scope)
        integration.set_key(di.token)
        integration._change_reason = SEED_REASON
        integration.save()
        result.count("integrations")


@transaction.atomic
def seed() -> SeedResult:
    """Load the demo plant, control plan, users and integrations. Idempotent: a second run
    finds everything in place and writes nothing."""
    result = SeedResult()
    site = _ensure(
        Site, result, "sites", {"code": SITE_CODE}, {"name": SITE_NAME, "country": SITE_COUNTRY}
    )
    for spec in LINES:
        _seed_line(site, spec, result)
    _seed_users(result)
    for _profile in files_demo.profiles_seed():
        result.count("file import profiles")
    vision_demo.cameras_seed(result)
    risk_demo.model_seed(result)
    return result
