"""Formation and aging of lithium-ion cells: an equivalent-circuit simulator with latent defects.

Produces, for a population of cells built on one of the demo plant's lines, what a plant's
cyclers and aging racks record, plus the ground truth a plant never sees:

* upstream history per cell (line gauges: coating loading, fill mass, weld resistance,
  overhang, lot moisture, slit burr, insulation resistance), with lot structure;
* a formation and grading run per cell on a cycler channel: first charge CC at C/10 to
  4.2 V with CV to a C/50 tail, rest, C/3 discharge to the cut-off, DCIR pulses at 10 % and
  50 % SOC, adjustment to the storage SOC. Step records carry capacity, energy, end
  voltage, end current, duration, temperatures, end reason and pulse resistances; curves
  (time, voltage, current + = charging, step capacity, temperature) come per cell on request;
* room-temperature aging on a rack: an OCV log over ``aging_days`` with the rack
  temperature at each reading;
* latent defects (``particle_short``, ``burr_overhang``, ``coat_streak``, ``cold_weld``,
  ``moisture``), channel nuisances (fixture resistance, calibration, bad channels) and rack
  temperature swings;
* field returns, late and noisy, from :func:`field_returns`.

The cell is an equivalent circuit on top of an electrode-balance OCV: NMC811 and graphite
open-circuit potentials (Chen et al. 2020) shifted by each electrode's capacity and by the
lithium the SEI consumes in the first charge, an ohmic R0, two RC pairs, a parallel leak
(self-discharge and micro-shorts) and a lumped thermal mass. ``docs/formation-model.md``
gives the equations, every parameter and its source.

Output is deterministic for a given seed, arguments and ``SIMULATOR_VERSION``: measurement
noise on curves comes from a counter-based hash of (seed, cell, step, sample), so a cell's
curves are the same whether simulated alone or in a batch, and agree with its step records.
Pure numpy; nothing here touches Django or a network.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

import numpy as np

SIMULATOR_VERSION = "1.0.0"

DEFECT_CLASSES: tuple[str, ...] = (
    "none",
    "particle_short",
    "burr_overhang",
    "coat_streak",
    "cold_weld",
    "moisture",
)
STEP_KINDS: tuple[str, ...] = ("rest", "cc_charge", "cv_charge", "cc_discharge", "pulse")
END_REASONS: tuple[str, ...] = ("time_limit", "voltage_limit", "current_limit", "capacity_limit")
FAILURE_MODES: tuple[str, ...] = (
    "thermal_event",
    "venting",
    "capacity_fade",
    "resistance_rise",
    "swelling",
    "other",
)

#: Share of each latent class among defective cells (normalised; configurable per run).
DEFAULT_DEFECT_MIX: Mapping[str, float] = {
    "particle_short": 0.30,
    "burr_overhang": 0.20,
    "coat_streak": 0.15,
    "cold_weld": 0.15,
    "moisture": 0.20,
}

_GAS_CONSTANT = 8.314  # J/(mol K)
_T_REF_K = 298.15
_EA_RESISTANCE_J_MOL = 20_000.0  # charge transfer + electrolyte, ~3 %/K at 25 °C [R]
_EA_SELF_DISCHARGE_J_MOL = 50_000.0  # self-discharge doubles per ~10 K [R]


# --------------------------------------------------------------------------- electrode OCP


def cathode_ocp_v(y: np.ndarray | float) -> np.ndarray:
    """NMC811 open-circuit potential vs Li/Li+ at lithiation ``y`` (Chen et al. 2020, LG M50)."""
    y = np.asarray(y, dtype=np.float64)
    return (
        -0.8090 * y
        + 4.4875
        - 0.0428 * np.tanh(18.5138 * (y - 0.5542))
        - 17.7326 * np.tanh(15.7890 * (y - 0.3117))
        + 17.5842 * np.tanh(15.9308 * (y - 0.3120))
    )


def anode_ocp_v(x: np.ndarray | float) -> np.ndarray:
    """Graphite open-circuit potential vs Li/Li+ at lithiation ``x`` (Chen et al. 2020, LG M50).

    The three tanh terms are the graphite staging plateaus; they give the full cell's dQ/dV
    its peaks.
    """
    x = np.asarray(x, dtype=np.float64)
    return (
        1.9793 * np.exp(-39.3631 * x)
        + 0.2482
        - 0.0909 * np.tanh(29.8538 * (x - 0.1234))
        - 0.04478 * np.tanh(14.9159 * (x - 0.2769))
        - 0.0205 * np.tanh(30.4444 * (x - 0.6103))
    )


# Uniform tables: the time loop evaluates the OCV millions of times; linear interpolation on
# 4096 intervals is within 0.1 mV of the closed form everywhere (0.01 mV above x = 0.02).
_TABLE_N = 4096
_TABLE_GRID = np.linspace(0.0, 1.0, _TABLE_N + 1)
_UP = cathode_ocp_v(_TABLE_GRID)
_UP_SLOPE = np.diff(_UP)
_UN = anode_ocp_v(_TABLE_GRID)
_UN_SLOPE = np.diff(_UN)


def _lookup(table: np.ndarray, slope: np.ndarray, s: np.ndarray) -> np.ndarray:
    u = s * float(_TABLE_N)
    np.maximum(u, 0.0, out=u)
    np.minimum(u, float(_TABLE_N), out=u)
    i = u.astype(np.intp)
    np.minimum(i, _TABLE_N - 1, out=i)
    u -= i
    u *= slope[i]
    u += table[i]
    return u


def _ocv(z_ah, sei_ah, qp_ah, qn_ah, y0):
    """Full-cell OCV from the stored charge ``z`` (Ah since assembly) and the SEI loss."""
    y = y0 - z_ah / qp_ah
    x = (z_ah - sei_ah) / qn_ah
    return _lookup(_UP, _UP_SLOPE, y) - _lookup(_UN, _UN_SLOPE, x)


# --------------------------------------------------------------------------- products


@dataclass(frozen=True)
class Gauge:
    """A line gauge's characteristic: nominal, limits and the spread of a capable process.

    ``sigma`` is the within-lot standard deviation (tolerance / 4 for Cpk 1.33, as the
    reference notes suggest), ``lot_sigma`` the lot-to-lot one. ``log`` draws a lognormal
    with ``sigma`` as the log-space spread (resistances, insulation).
    """

    nominal: float
    lsl: float | None
    usl: float | None
    sigma: float
    lot_sigma: float = 0.0
    log: bool = False

    @property
    def half_width(self) -> float:
        if self.lsl is not None and self.usl is not None:
            return (self.usl - self.lsl) / 2.0
        if self.usl is not None:
            return self.usl - self.nominal
        return self.nominal - self.lsl  # type: ignore[operator]

    def deviation(self, value: np.ndarray | float) -> np.ndarray:
        """Deviation from nominal in spec-width units (±1 at a symmetric limit)."""
        return (np.asarray(value, dtype=np.float64) - self.nominal) / self.half_width


UPSTREAM_FIELDS: tuple[str, ...] = (
    "cathode_loading_mg_cm2",
    "anode_loading_mg_cm2",
    "fill_mass_g",
    "weld_resistance_uohm",
    "overhang_mm",
    "cathode_moisture_ppm",
    "anode_moisture_ppm",
    "cathode_burr_um",
    "anode_burr_um",
    "insulation_resistance_mohm",
)


@dataclass(frozen=True)
class ProductSpec:
    """One cell design of the demo plant: gauges, electrode balance, circuit, protocol, layout.

    Gauge nominals and limits are the control plan of ``compliance/demo/plant.py``. The
    electrode balance is set so a nominal cell gives the control plan's nominal first-charge
    and discharge capacities; the circuit so it gives the nominal DCIR and K-value.
    """

    key: str
    line_code: str
    cell_prefix: str
    rated_capacity_ah: float
    gauges: Mapping[str, Gauge]
    # electrode balance (Chen 2020 OCP stoichiometry scale)
    cathode_capacity_ah: float
    anode_capacity_ah: float
    cathode_y_pristine: float
    sei_loss_ah: float
    # equivalent circuit at 25 °C, 50 % SOC
    r0_ohm: float
    r1_ohm: float
    tau1_s: float
    r2_ohm: float
    tau2_s: float
    leak_resistance_ohm: float
    # low-SOC rise of R1: factor 1 + gain * exp((y - y_ref) / width), y = cathode lithiation
    low_soc_r_gain: float
    low_soc_y_ref: float
    low_soc_width: float
    # high-SOC rise of R2: factor 1 + gain * exp((y_ref - y) / width)
    high_soc_r_gain: float
    high_soc_y_ref: float
    high_soc_width: float
    # thermal (lumped)
    heat_capacity_j_per_k: float
    heat_transfer_w_per_k: float
    ocv_temp_coeff_mv_per_k: float
    # formation and grading protocol
    v_max_v: float
    v_min_v: float
    formation_c_rate: float
    tail_c_rate: float
    grading_c_rate: float
    pulse_c_rate: float
    pulse_s: float
    low_soc: float
    mid_soc: float
    storage_soc: float
    # plant layout
    takt_s: float
    cells_per_lot: int
    tray_size: int
    cabinets: int
    beds_per_cabinet: int
    racks: int
    fill_nozzles: int
    winders: int
    # channel nuisances
    fixture_resistance_ohm: float
    # latent-defect severities
    short_resistance_ohm: tuple[float, float]
    soft_short_resistance_ohm: tuple[float, float]
    cold_weld_extra_ohm: tuple[float, float]
    # control-plan nominals the calibration aims at
    nominal_charge_ah: float
    nominal_discharge_ah: float
    nominal_dcir_mohm: float
    nominal_k_mv_per_day: float

    @property
    def channels(self) -> int:
        return self.cabinets * self.beds_per_cabinet * self.tray_size


def _pct_gauge(nominal: float, pct: float, lot_share: float = 0.5) -> Gauge:
    half = nominal * pct / 100.0
    sigma = half / 4.0
    return Gauge(nominal, nominal - half, nominal + half, sigma, lot_share * sigma)


PRISMATIC_105AH = ProductSpec(
    key="prismatic_105ah",
    line_code="L1-PRI",
    cell_prefix="P1",
    rated_capacity_ah=105.0,
    gauges={
        "cathode_loading_mg_cm2": _pct_gauge(23.0, 1.5),
        "anode_loading_mg_cm2": _pct_gauge(14.5, 1.5),
        "fill_mass_g": _pct_gauge(158.0, 1.0, lot_share=0.0),
        "weld_resistance_uohm": Gauge(15.0, None, 25.0, 0.12, log=True),
        "overhang_mm": Gauge(1.0, 0.5, 1.5, 0.125),
        "cathode_moisture_ppm": Gauge(150.0, None, 300.0, 0.0, 0.22, log=True),
        "anode_moisture_ppm": Gauge(250.0, None, 500.0, 0.0, 0.22, log=True),
        "cathode_burr_um": Gauge(4.0, None, 10.0, 0.9, 0.6),
        "anode_burr_um": Gauge(5.5, None, 15.0, 1.4, 0.9),
        "insulation_resistance_mohm": Gauge(5000.0, 500.0, None, 0.3, log=True),
    },
    cathode_capacity_ah=169.60,
    anode_capacity_ah=125.79,
    cathode_y_pristine=0.9647,
    sei_loss_ah=5.077,
    r0_ohm=0.4839e-3,
    r1_ohm=0.20e-3,
    tau1_s=5.0,
    r2_ohm=0.30e-3,
    tau2_s=400.0,
    leak_resistance_ohm=5.77e3,
    low_soc_r_gain=9.0,
    low_soc_y_ref=0.90,
    low_soc_width=0.04,
    high_soc_r_gain=10.0,
    high_soc_y_ref=0.30,
    high_soc_width=0.03,
    heat_capacity_j_per_k=1650.0,
    heat_transfer_w_per_k=0.8,
    ocv_temp_coeff_mv_per_k=0.08,
    v_max_v=4.2,
    v_min_v=2.8,
    formation_c_rate=0.1,
    tail_c_rate=0.02,
    grading_c_rate=1.0 / 3.0,
    pulse_c_rate=1.0,
    pulse_s=10.0,
    low_soc=0.10,
    mid_soc=0.50,
    storage_soc=0.42,
    takt_s=60.0,
    cells_per_lot=300,
    tray_size=8,
    cabinets=3,
    beds_per_cabinet=8,
    racks=12,
    fill_nozzles=8,
    winders=2,
    fixture_resistance_ohm=20e-6,
    short_resistance_ohm=(150.0, 8.0e3),
    soft_short_resistance_ohm=(8.0e3, 40.0e3),
    cold_weld_extra_ohm=(0.04e-3, 0.30e-3),
    nominal_charge_ah=118.0,
    nominal_discharge_ah=106.5,
    nominal_dcir_mohm=0.75,
    nominal_k_mv_per_day=0.08,
)

CYL_21700 = ProductSpec(
    key="cyl_21700",
    line_code="L2-CYL",
    cell_prefix="C2",
    rated_capacity_ah=5.0,
    gauges={
        "cathode_loading_mg_cm2": _pct_gauge(23.0, 1.5),
        "anode_loading_mg_cm2": _pct_gauge(14.0, 1.5),
        "fill_mass_g": _pct_gauge(5.0, 1.0, lot_share=0.0),
        "weld_resistance_uohm": Gauge(30.0, None, 50.0, 0.12, log=True),
        "overhang_mm": Gauge(1.0, 0.5, 1.5, 0.125),
        "cathode_moisture_ppm": Gauge(140.0, None, 300.0, 0.0, 0.22, log=True),
        "anode_moisture_ppm": Gauge(240.0, None, 500.0, 0.0, 0.22, log=True),
        "cathode_burr_um": Gauge(3.5, None, 10.0, 0.9, 0.6),
        "anode_burr_um": Gauge(5.0, None, 15.0, 1.4, 0.9),
        "insulation_resistance_mohm": Gauge(2000.0, 200.0, None, 0.3, log=True),
    },
    cathode_capacity_ah=7.9193,
    anode_capacity_ah=5.8382,
    cathode_y_pristine=0.9908,
    sei_loss_ah=0.4743,
    r0_ohm=17.89e-3,
    r1_ohm=8.0e-3,
    tau1_s=5.0,
    r2_ohm=12.0e-3,
    tau2_s=400.0,
    leak_resistance_ohm=140.7e3,
    low_soc_r_gain=9.0,
    low_soc_y_ref=0.90,
    low_soc_width=0.04,
    high_soc_r_gain=10.0,
    high_soc_y_ref=0.30,
    high_soc_width=0.03,
    heat_capacity_j_per_k=68.0,
    heat_transfer_w_per_k=0.08,
    ocv_temp_coeff_mv_per_k=0.08,
    v_max_v=4.2,
    v_min_v=2.5,
    formation_c_rate=0.1,
    tail_c_rate=0.02,
    grading_c_rate=1.0 / 3.0,
    pulse_c_rate=1.0,
    pulse_s=10.0,
    low_soc=0.10,
    mid_soc=0.50,
    storage_soc=0.42,
    takt_s=12.0,
    cells_per_lot=1000,
    tray_size=64,
    cabinets=4,
    beds_per_cabinet=4,
    racks=16,
    fill_nozzles=24,
    winders=2,
    fixture_resistance_ohm=0.8e-3,
    short_resistance_ohm=(2.0e3, 150.0e3),
    soft_short_resistance_ohm=(150.0e3, 1.0e6),
    cold_weld_extra_ohm=(1.5e-3, 9.0e-3),
    nominal_charge_ah=5.70,
    nominal_discharge_ah=5.02,
    nominal_dcir_mohm=27.0,
    nominal_k_mv_per_day=0.07,
)

PRODUCTS: Mapping[str, ProductSpec] = {p.key: p for p in (PRISMATIC_105AH, CYL_21700)}


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class Step:
    """One step of the cycler recipe.

    Currents are C-rates of the rated capacity; positive charges. ``capacity_fraction`` ends
    a CC step after that fraction of the capacity measured by step ``capacity_ref`` (how a
    cycler sets a SOC). ``duration_s`` is the fixed length of a rest or pulse, otherwise the
    time limit. ``sei`` marks the first charge, where the SEI consumes lithium.
    """

    name: str
    kind: str
    duration_s: float
    dt_s: float
    c_rate: float = 0.0
    voltage_v: float | None = None
    tail_c_rate: float | None = None
    capacity_fraction: float | None = None
    capacity_ref: str | None = None
    sei: bool = False


def formation_protocol(product: ProductSpec, *, sample_period_s: float = 10.0) -> tuple[Step, ...]:
    """The formation and grading recipe of ``product``, sampled every ``sample_period_s``.

    Pulses are sampled every second so the 1 s and 10 s resistances fall on samples.
    """
    p = product
    dt = float(sample_period_s)
    g = p.grading_c_rate
    rest = 1800.0
    return (
        Step("form_cc", "cc_charge", 14 * 3600.0, dt, p.formation_c_rate, p.v_max_v, sei=True),
        Step("form_cv", "cv_charge", 3 * 3600.0, dt, 0.0, p.v_max_v, p.tail_c_rate, sei=True),
        Step("rest_1", "rest", rest, dt),
        Step("cap_dis", "cc_discharge", 5 * 3600.0, dt, -g, p.v_min_v),
        Step("rest_2", "rest", rest, dt),
        Step("to_low_soc", "cc_charge", 3600.0, dt, g, p.v_max_v,
             capacity_fraction=p.low_soc, capacity_ref="cap_dis"),
        Step("rest_3", "rest", rest, dt),
        Step("pulse_low_soc", "pulse", p.pulse_s, 1.0, -p.pulse_c_rate),
        Step("rest_4", "rest", 600.0, dt),
        Step("to_mid_soc", "cc_charge", 3 * 3600.0, dt, g, p.v_max_v,
             capacity_fraction=p.mid_soc - p.low_soc, capacity_ref="cap_dis"),
        Step("rest_5", "rest", rest, dt),
        Step("pulse_mid_soc", "pulse", p.pulse_s, 1.0, -p.pulse_c_rate),
        Step("rest_6", "rest", 600.0, dt),
        Step("to_storage", "cc_discharge", 3600.0, dt, -g, p.v_min_v,
             capacity_fraction=p.mid_soc - p.storage_soc, capacity_ref="cap_dis"),
        Step("rest_7", "rest", rest, dt),
    )  # fmt: skip


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class StepRecord:
    """One executed step of one cell, as a cycler reports it (canonical ``step_result``).

    Capacities and energies are positive counters; ``i_end_a`` is signed (+ = charging).
    ``r_1s_mohm`` / ``r_10s_mohm`` are the cycler's pulse resistances (ΔV from the last
    rest sample to the sample at 1 s / 10 s, over the pulse current), NaN for other steps.
    """

    index: int
    name: str
    kind: str
    t_start_s: float
    duration_s: float
    charge_ah: float
    discharge_ah: float
    charge_wh: float
    discharge_wh: float
    v_start_v: float
    v_end_v: float
    i_end_a: float
    temperature_start_c: float
    temperature_max_c: float
    temperature_end_c: float
    end_reason: str
    r_1s_mohm: float
    r_10s_mohm: float

    @property
    def capacity_ah(self) -> float:
        return self.charge_ah + self.discharge_ah

    @property
    def energy_wh(self) -> float:
        return self.charge_wh + self.discharge_wh

    @property
    def temperature_rise_k(self) -> float:
        return self.temperature_max_c - self.temperature_start_c

    @property
    def cv_time_s(self) -> float:
        return self.duration_s if self.kind == "cv_charge" else math.nan

    @property
    def tail_current_a(self) -> float:
        return self.i_end_a if self.kind == "cv_charge" else math.nan


STEP_TABLE_FIELDS: tuple[str, ...] = (
    "t_start_s",
    "duration_s",
    "charge_ah",
    "discharge_ah",
    "charge_wh",
    "discharge_wh",
    "v_start_v",
    "v_end_v",
    "i_end_a",
    "temperature_start_c",
    "temperature_max_c",
    "temperature_end_c",
    "end_reason",
    "r_1s_mohm",
    "r_10s_mohm",
)


@dataclass
class StepTable:
    """Step records of many cells: each field is an ``(n_cells, n_steps)`` array.

    ``end_reason`` holds indices into :data:`END_REASONS`. Rows are cells, columns follow
    ``names`` / ``kinds`` (the same protocol for every cell).
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    t_start_s: np.ndarray
    duration_s: np.ndarray
    charge_ah: np.ndarray
    discharge_ah: np.ndarray
    charge_wh: np.ndarray
    discharge_wh: np.ndarray
    v_start_v: np.ndarray
    v_end_v: np.ndarray
    i_end_a: np.ndarray
    temperature_start_c: np.ndarray
    temperature_max_c: np.ndarray
    temperature_end_c: np.ndarray
    end_reason: np.ndarray
    r_1s_mohm: np.ndarray
    r_10s_mohm: np.ndarray

    def __len__(self) -> int:
        return self.duration_s.shape[0]

    def column(self, name: str) -> int:
        return self.names.index(name)

    def records(self, i: int) -> list[StepRecord]:
        out = []
        for s, (name, kind) in enumerate(zip(self.names, self.kinds, strict=True)):
            values = {f: float(getattr(self, f)[i, s]) for f in STEP_TABLE_FIELDS}
            values["end_reason"] = END_REASONS[int(self.end_reason[i, s])]
            out.append(StepRecord(index=s, name=name, kind=kind, **values))
        return out

    def take(self, idx: np.ndarray) -> StepTable:
        return StepTable(
            self.names, self.kinds, **{f: getattr(self, f)[idx] for f in STEP_TABLE_FIELDS}
        )


@dataclass(frozen=True)
class Curve:
    """Samples of one step of one cell, at the cycler's sampling.

    ``time_s`` is run-relative test time (s), strictly increasing within the step;
    ``capacity_ah`` is the step's capacity counter (starts at 0, positive);
    ``current_a`` is + for charging.
    """

    step_index: int
    name: str
    kind: str
    time_s: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    capacity_ah: np.ndarray
    temperature_c: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "time_s": self.time_s,
            "voltage_v": self.voltage_v,
            "current_a": self.current_a,
            "capacity_ah": self.capacity_ah,
            "temperature_c": self.temperature_c,
        }


@dataclass(frozen=True)
class OcvLog:
    """The aging OCV readings of one cell: epoch seconds, volts, rack temperature (°C)."""

    at_s: np.ndarray
    ocv_v: np.ndarray
    rack_temperature_c: np.ndarray
    rack: int

    @property
    def days(self) -> np.ndarray:
        return (self.at_s - self.at_s[0]) / 86400.0


@dataclass
class AgingLog:
    """OCV logs of many cells: ``(n_cells, n_readings)`` arrays; ``rack`` per cell."""

    at_s: np.ndarray
    ocv_v: np.ndarray
    rack_temperature_c: np.ndarray
    rack: np.ndarray

    def __len__(self) -> int:
        return self.at_s.shape[0]

    def cell(self, i: int) -> OcvLog:
        return OcvLog(
            self.at_s[i].copy(),
            self.ocv_v[i].copy(),
            self.rack_temperature_c[i].copy(),
            int(self.rack[i]),
        )

    @property
    def days(self) -> np.ndarray:
        return (self.at_s - self.at_s[:, :1]) / 86400.0


# --------------------------------------------------------------------------- upstream


@dataclass(frozen=True)
class CellUpstream:
    """What the line's gauges recorded for one cell before formation (the cell's history).

    ``electrode_lot`` numbers the slit-coil lot the electrodes came from; moisture is a lot
    value (Karl Fischer per slit coil), the other gauges are per cell.
    """

    electrode_lot: int
    cathode_loading_mg_cm2: float
    anode_loading_mg_cm2: float
    fill_mass_g: float
    weld_resistance_uohm: float
    overhang_mm: float
    cathode_moisture_ppm: float
    anode_moisture_ppm: float
    cathode_burr_um: float
    anode_burr_um: float
    insulation_resistance_mohm: float


@dataclass
class Upstream:
    """Upstream history of many cells: one array per :data:`UPSTREAM_FIELDS` entry."""

    electrode_lot: np.ndarray
    cathode_loading_mg_cm2: np.ndarray
    anode_loading_mg_cm2: np.ndarray
    fill_mass_g: np.ndarray
    weld_resistance_uohm: np.ndarray
    overhang_mm: np.ndarray
    cathode_moisture_ppm: np.ndarray
    anode_moisture_ppm: np.ndarray
    cathode_burr_um: np.ndarray
    anode_burr_um: np.ndarray
    insulation_resistance_mohm: np.ndarray

    def __len__(self) -> int:
        return len(self.electrode_lot)

    def cell(self, i: int) -> CellUpstream:
        return CellUpstream(
            electrode_lot=int(self.electrode_lot[i]),
            **{f: float(getattr(self, f)[i]) for f in UPSTREAM_FIELDS},
        )

    @classmethod
    def from_cells(cls, cells: Sequence[CellUpstream]) -> Upstream:
        return cls(
            electrode_lot=np.array([c.electrode_lot for c in cells], dtype=np.int64),
            **{f: np.array([getattr(c, f) for c in cells], dtype=np.float64)
               for f in UPSTREAM_FIELDS},
        )  # fmt: skip

    def copy(self) -> Upstream:
        return Upstream(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    def deviation(self, name: str, product: ProductSpec) -> np.ndarray:
        """Deviation of gauge ``name`` from its nominal in spec-width units."""
        return product.gauges[name].deviation(getattr(self, name))


# --------------------------------------------------------------------------- truth


@dataclass
class Truth:
    """What the plant never sees: each cell's latent class and the hidden parameters.

    ``short_resistance_ohm`` is inf without a short; ``short_onset_s`` counts from the start
    of formation (0 = present from the first charge, inf = none). The ``channel_*`` arrays
    are indexed by cycler channel (``SimulatedPlant.channel``), not by cell.
    """

    latent_class: np.ndarray  # str
    short_resistance_ohm: np.ndarray
    short_onset_s: np.ndarray
    weld_extra_ohm: np.ndarray
    capacity_loss_fraction: np.ndarray
    sei_extra_ah: np.ndarray
    natural_leak_ohm: np.ndarray
    cathode_capacity_ah: np.ndarray  # electrode balance on the Chen 2020 stoichiometry scale
    anode_capacity_ah: np.ndarray
    cathode_y_pristine: np.ndarray
    sei_loss_ah: np.ndarray  # lithium the SEI took in the first charge
    channel_fixture_ohm: np.ndarray  # per cycler channel
    channel_voltage_offset_v: np.ndarray  # per cycler channel (calibration + faults)
    channel_fault: np.ndarray  # per cycler channel: "", "noisy" or "offset"

    @property
    def defective(self) -> np.ndarray:
        return self.latent_class != "none"

    def class_index(self) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(DEFECT_CLASSES)}
        return np.array([lookup[c] for c in self.latent_class], dtype=np.int64)


# --------------------------------------------------------------------------- engine


@dataclass
class _Cells:
    """Per-cell parameters the time loop needs (struct of arrays), channel effects included."""

    qp_ah: np.ndarray
    qn_ah: np.ndarray
    y0: np.ndarray
    sei_cap_ah: np.ndarray
    sei_char_ah: np.ndarray
    r0_ohm: np.ndarray
    r1_ohm: np.ndarray
    r2_ohm: np.ndarray
    tau1_s: np.ndarray
    tau2_s: np.ndarray
    leak_ohm: np.ndarray
    ambient_c: np.ndarray
    r_fix_ohm: np.ndarray
    v_offset_v: np.ndarray
    i_gain: np.ndarray
    t_offset_k: np.ndarray
    noise_v: np.ndarray
    key: np.ndarray  # uint64

    def take(self, idx: np.ndarray) -> _Cells:
        return _Cells(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _hash_normal(key: np.ndarray, step: int, k: np.ndarray) -> np.ndarray:
    """Unit-variance noise from (key, step, sample): the same value in any batch.

    A sum of four 16-bit uniforms from one 64-bit hash (Irwin-Hall, bounded at ±3.5 sigma):
    cheap, and a cycler's quantised readings are not Gaussian in the tails anyway.
    """
    k = np.asarray(k).astype(np.uint64)
    with np.errstate(over="ignore"):
        bits = _splitmix64(key ^ (np.uint64(step + 1) * np.uint64(0xD1B54A32D192ED03) + k))
    m16 = np.uint64(0xFFFF)
    total = (bits >> np.uint64(48)) + ((bits >> np.uint64(32)) & m16)
    total += ((bits >> np.uint64(16)) & m16) + (bits & m16)
    return (total.astype(np.float64) - 2.0 * 65535.0) * (math.sqrt(3.0) / 65536.0)


@dataclass
class _StepSamples:
    """Recorded samples of one step for a batch, grouped per cell (CSR layout)."""

    offsets: np.ndarray  # (n + 1,)
    k: np.ndarray
    t_s: np.ndarray
    v: np.ndarray
    i: np.ndarray
    cap: np.ndarray
    temp: np.ndarray


def _low_soc_factor(product: ProductSpec, y: np.ndarray) -> np.ndarray:
    """R1 rise as the cathode nears full lithiation (low SOC), at most ``1 + gain``."""
    return 1.0 + product.low_soc_r_gain * np.exp(
        np.minimum((y - product.low_soc_y_ref) / product.low_soc_width, 0.0)
    )


def _high_soc_factor(product: ProductSpec, y: np.ndarray) -> np.ndarray:
    """R2 (diffusion) rise as the cathode nears full delithiation (top of charge)."""
    return 1.0 + product.high_soc_r_gain * np.exp(
        np.minimum((product.high_soc_y_ref - y) / product.high_soc_width, 0.0)
    )


def _cv_current(step, c, a1, a2, r1, r2, v1, v2, ocv):
    """CV current held over the next interval: puts the measured terminal voltage on the
    hold value at the interval's end (implicit in the RC pairs, so it never oscillates)."""
    num = step.voltage_v - c.v_offset_v - ocv - a1 * v1 - a2 * v2
    den = c.r0_ohm + c.r_fix_ohm + r1 * (1.0 - a1) + r2 * (1.0 - a2)
    return np.maximum(num / den, 0.0)


def _run(
    cells: _Cells, protocol: Sequence[Step], product: ProductSpec, *, record: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[_StepSamples] | None]:
    """Run the recipe on every cell at once.

    Each step advances all cells in lock-step with the step's sampling interval; a cell
    that reaches its end condition is interpolated back to the crossing and leaves the
    working set. The RC pairs are integrated exactly for the current held over an interval;
    the CV current is solved so the measured terminal voltage sits on the hold value at the
    interval's end. Returns the step-table fields, the final state and, with ``record``, the
    samples of every step.
    """
    n = len(cells.qp_ah)
    out = {f: np.full((n, len(protocol)), np.nan) for f in STEP_TABLE_FIELDS}
    out["end_reason"] = np.zeros((n, len(protocol)), dtype=np.int8)
    z, sei, v1, v2 = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    temp = cells.ambient_c.copy()
    t_run = np.zeros(n)
    measured_cap: dict[str, np.ndarray] = {}
    samples: list[_StepSamples] | None = [] if record else None
    hA = product.heat_transfer_w_per_k
    rated = product.rated_capacity_ah
    prev_v_end = np.full(n, np.nan)

    for s, step in enumerate(protocol):
        dt = step.dt_s
        h = dt / 3600.0
        n_max = round(step.duration_s / dt)
        a_th = math.exp(-dt * hA / product.heat_capacity_j_per_k)
        charging = step.c_rate > 0 or step.kind == "cv_charge"
        discharging = step.c_rate < 0
        tail = None if step.tail_c_rate is None else step.tail_c_rate * rated
        lim = None
        if step.capacity_fraction is not None:
            lim = step.capacity_fraction * measured_cap[step.capacity_ref]  # type: ignore[index]

        ws = np.arange(n)
        c = cells
        st_z, st_sei, st_v1, st_v2, st_T = z.copy(), sei.copy(), v1.copy(), v2.copy(), temp.copy()
        a1 = np.exp(-dt / c.tau1_s)
        a2 = np.exp(-dt / c.tau2_s)
        i_set = np.full(n, step.c_rate * rated)
        alive = np.ones(n, dtype=bool)

        ocv = _ocv(st_z, st_sei, c.qp_ah, c.qn_ah, c.y0)
        y = c.y0 - st_z / c.qp_ah
        r1 = c.r1_ohm * _low_soc_factor(product, y)
        r2 = c.r2_ohm * _high_soc_factor(product, y)
        i0 = (
            i_set
            if step.kind != "cv_charge"
            else _cv_current(step, c, a1, a2, r1, r2, st_v1, st_v2, ocv)
        )
        vm = ocv + i0 * (c.r0_ohm + c.r_fix_ohm) + st_v1 + st_v2 + c.v_offset_v
        im = i0 * (1.0 + c.i_gain)
        cap = np.zeros(n)
        energy = np.zeros(n)
        tmax = st_T.copy()
        out["t_start_s"][:, s] = t_run
        out["v_start_v"][:, s] = vm + c.noise_v * _hash_normal(c.key, s, np.zeros(n))
        out["temperature_start_c"][:, s] = st_T + c.t_offset_k
        v_1s = np.full(n, np.nan)
        k_1s = round(1.0 / dt) if step.kind == "pulse" else -1
        rec: list[tuple] = []
        if record:
            rec.append((ws, np.zeros(n), vm, im, cap, st_T + c.t_offset_k))

        for k in range(1, n_max + 1):
            if step.kind == "cv_charge":
                i_int = _cv_current(step, c, a1, a2, r1, r2, st_v1, st_v2, ocv)
            else:
                i_int = i_set
            z_new = st_z + (i_int - ocv / c.leak_ohm) * h
            if step.sei:
                growth = np.maximum(i_int, 0.0) * h / c.sei_char_ah
                sei_new = st_sei + growth * np.maximum(c.sei_cap_ah - st_sei, 0.0)
            else:
                sei_new = st_sei
            v1_new = a1 * st_v1 + (1.0 - a1) * r1 * i_int
            v2_new = a2 * st_v2 + (1.0 - a2) * r2 * i_int
            ocv_new = _ocv(z_new, sei_new, c.qp_ah, c.qn_ah, c.y0)
            over = i_int * c.r0_ohm + v1_new + v2_new
            vm_new = ocv_new + over + i_int * c.r_fix_ohm + c.v_offset_v
            im_new = i_int * (1.0 + c.i_gain)
            T_new = c.ambient_c + (st_T - c.ambient_c) * a_th + (1.0 - a_th) / hA * (i_int * over)
            step_ah = np.abs(im_new) * h
            cap_new = cap + step_ah
            e_new = energy + step_ah * 0.5 * (vm + vm_new)

            frac = None
            reason = None
            if step.kind == "cc_charge" or step.kind == "cc_discharge":
                sign = 1.0 if step.kind == "cc_charge" else -1.0
                hit = sign * (vm_new - step.voltage_v) >= 0.0
                if hit.any():
                    frac = np.where(
                        hit, (step.voltage_v - vm) / np.where(hit, vm_new - vm, 1.0), np.inf
                    )
                    reason = np.where(hit, 1, 0).astype(np.int8)
            elif step.kind == "cv_charge":
                hit = im_new <= tail
                if hit.any():
                    drop = im - im_new
                    f = np.where(drop > 0.0, (im - tail) / np.where(drop > 0.0, drop, 1.0), 1.0)
                    frac = np.where(hit, f, np.inf)
                    reason = np.where(hit, 2, 0).astype(np.int8)
            if lim is not None:
                hit = cap_new >= lim
                if hit.any():
                    f = np.where(hit, (lim - cap) / np.where(hit, step_ah, 1.0), np.inf)
                    if frac is None:
                        frac, reason = f, np.where(hit, 3, 0).astype(np.int8)
                    else:
                        reason = np.where(f < frac, 3, reason).astype(np.int8)
                        frac = np.minimum(frac, f)
            if k == n_max:
                if frac is None:
                    frac, reason = np.ones(len(ws)), np.zeros(len(ws), dtype=np.int8)
                else:
                    frac = np.where(np.isfinite(frac), frac, 1.0)
            t_new = np.full(len(ws), k * dt)
            done = None
            if frac is not None:
                frac = np.where(np.isfinite(frac), np.clip(frac, 1e-9, 1.0), np.inf)
                done = alive & (frac <= 1.0)
                if done.any():
                    # move the finishing cells back to the crossing inside this interval
                    f = frac[done]
                    pairs = [(z_new, st_z), (v1_new, st_v1), (v2_new, st_v2), (T_new, st_T),
                             (vm_new, vm), (cap_new, cap), (e_new, energy)]  # fmt: skip
                    if step.sei:
                        pairs.append((sei_new, st_sei))
                    if step.kind == "cv_charge":
                        pairs.append((im_new, im))
                    for new_, old_ in pairs:
                        new_[done] = old_[done] + f * (new_[done] - old_[done])
                    t_new[done] = (k - 1 + f) * dt
                else:
                    done = None
            st_z, st_sei, st_v1, st_v2, st_T = z_new, sei_new, v1_new, v2_new, T_new
            vm, im, cap, energy, ocv = vm_new, im_new, cap_new, e_new, ocv_new
            tmax = np.maximum(tmax, st_T)
            y = c.y0 - st_z / c.qp_ah
            r1 = c.r1_ohm * _low_soc_factor(product, y)
            r2 = c.r2_ohm * _high_soc_factor(product, y)
            if k == k_1s:
                v_1s[ws] = vm
            if record:
                if alive.all():
                    rec.append((ws, t_new, vm, im, cap, st_T + c.t_offset_k))
                else:
                    rec.append((ws[alive], t_new[alive], vm[alive], im[alive], cap[alive],
                                st_T[alive] + c.t_offset_k[alive]))  # fmt: skip
            if done is None:
                continue

            idx = ws[done]
            noise = c.noise_v[done] * _hash_normal(c.key[done], s, np.full(len(idx), k))
            out["duration_s"][idx, s] = t_new[done]
            out["v_end_v"][idx, s] = vm[done] + noise
            out["i_end_a"][idx, s] = im[done]
            out["temperature_max_c"][idx, s] = tmax[done] + c.t_offset_k[done]
            out["temperature_end_c"][idx, s] = st_T[done] + c.t_offset_k[done]
            out["end_reason"][idx, s] = reason[done]  # type: ignore[index]
            out["charge_ah"][idx, s] = cap[done] if charging else 0.0
            out["discharge_ah"][idx, s] = cap[done] if discharging else 0.0
            out["charge_wh"][idx, s] = energy[done] if charging else 0.0
            out["discharge_wh"][idx, s] = energy[done] if discharging else 0.0
            z[idx], sei[idx], v1[idx], v2[idx] = st_z[done], st_sei[done], st_v1[done], st_v2[done]
            temp[idx] = st_T[done]
            t_run[idx] += t_new[done]
            alive &= ~done
            if not alive.any():
                break
            if alive.sum() < 0.75 * len(ws):
                keep = np.flatnonzero(alive)
                ws, c = ws[keep], c.take(keep)
                a1, a2, i_set, r1, r2 = a1[keep], a2[keep], i_set[keep], r1[keep], r2[keep]
                st_z, st_sei, st_v1, st_v2, st_T = (
                    st_z[keep], st_sei[keep], st_v1[keep], st_v2[keep], st_T[keep]
                )  # fmt: skip
                vm, im, cap, energy = vm[keep], im[keep], cap[keep], energy[keep]
                tmax, ocv = tmax[keep], ocv[keep]
                if lim is not None:
                    lim = lim[keep]
                alive = np.ones(len(ws), dtype=bool)

        if step.kind == "pulse":
            v1s_noisy = v_1s + cells.noise_v * _hash_normal(cells.key, s, np.full(n, k_1s))
            di = np.abs(step.c_rate * rated * (1.0 + cells.i_gain))
            out["r_1s_mohm"][:, s] = (prev_v_end - v1s_noisy) / di * 1e3
            out["r_10s_mohm"][:, s] = (prev_v_end - out["v_end_v"][:, s]) / di * 1e3
        prev_v_end = out["v_end_v"][:, s].copy()
        if discharging:
            measured_cap[step.name] = out["discharge_ah"][:, s].copy()
        if record:
            samples.append(_collect(rec, n, cells, s))  # type: ignore[union-attr]

    state = {"z_ah": z, "sei_ah": sei, "temperature_c": temp, "t_run_s": t_run}
    return out, state, samples


def _collect(rec: list[tuple], n: int, cells: _Cells, s: int) -> _StepSamples:
    """Samples of one step in CSR layout (cell after cell), with the measurement noise.

    ``rec`` holds one entry per sample index k = 0, 1, ... with the cells that were still
    running; a cell's samples therefore have no gaps and sample k lands at its offset + k.
    """
    sizes = np.array([len(r[0]) for r in rec])
    cell = np.concatenate([r[0] for r in rec])
    k = np.repeat(np.arange(len(rec)), sizes)
    counts = np.bincount(cell, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    order = np.empty(len(cell), dtype=np.int64)
    order[offsets[cell] + k] = np.arange(len(cell))
    t, v, i, cap, temp = (np.concatenate([r[j] for r in rec])[order] for j in range(1, 6))
    cell_of, k_of = cell[order], k[order]
    v += cells.noise_v[cell_of] * _hash_normal(cells.key[cell_of], s, k_of)
    return _StepSamples(offsets, k_of, t, v, i, cap, temp)


# --------------------------------------------------------------------------- plant


@dataclass(frozen=True)
class SimConfig:
    """Run-level settings of :func:`simulate_plant` (all have plant-realistic defaults)."""

    defect_rate: float = 0.01
    defect_mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DEFECT_MIX))
    aging_days: float = 7.0
    ocv_readings: int = 15
    sample_period_s: float = 10.0
    bad_channel_fraction: float = 0.01
    #: particle shorts that start during aging / after aging (dormant until the field)
    late_short_fraction: float = 0.25
    dormant_short_fraction: float = 0.10
    soak_h: float = 24.0
    transfer_h: float = 2.0


@dataclass
class SimulatedPlant:
    """A simulated production run: what the plant records, and (in ``truth``) what it cannot.

    Per-cell arrays are indexed by build order. Times are epoch seconds (UTC). Curves are
    simulated on request, 256 cells at a time, and cached per chunk.
    """

    product: ProductSpec
    config: SimConfig
    seed: int
    start: datetime
    serial: np.ndarray
    electrode_lot: np.ndarray
    tray: np.ndarray
    tray_position: np.ndarray
    cabinet: np.ndarray
    channel: np.ndarray
    rack: np.ndarray
    built_at_s: np.ndarray
    formation_started_at_s: np.ndarray
    formation_ended_at_s: np.ndarray
    aging_started_at_s: np.ndarray
    upstream: Upstream
    protocol: tuple[Step, ...]
    steps: StepTable
    aging: AgingLog
    truth: Truth
    _cells: _Cells = field(repr=False)
    _chunk: tuple[int, list[list[Curve]]] | None = field(default=None, repr=False)

    CURVE_CHUNK = 256

    @property
    def n_cells(self) -> int:
        return len(self.serial)

    def channel_label(self, i: int) -> str:
        """Cabinet, bed and position of the channel that formed cell ``i`` (``fc-02/b3/p05``)."""
        p = self.product
        ch = int(self.channel[i])
        per_cab = p.beds_per_cabinet * p.tray_size
        cab, rest = divmod(ch, per_cab)
        bed, pos = divmod(rest, p.tray_size)
        return f"fc-{cab + 1:02d}/b{bed + 1}/p{pos + 1:02d}"

    def built_at(self, i: int) -> datetime:
        return datetime.fromtimestamp(float(self.built_at_s[i]), tz=UTC)

    def step_records(self, i: int) -> list[StepRecord]:
        return self.steps.records(i)

    def ocv_log(self, i: int) -> OcvLog:
        return self.aging.cell(i)

    def upstream_of(self, i: int) -> CellUpstream:
        return self.upstream.cell(i)

    def curves(self, i: int) -> list[Curve]:
        """Curves of every step of cell ``i`` (simulated with its 255 neighbours, cached)."""
        if not 0 <= i < self.n_cells:
            raise IndexError(f"cell index {i} out of range 0..{self.n_cells - 1}")
        first = (i // self.CURVE_CHUNK) * self.CURVE_CHUNK
        if self._chunk is None or self._chunk[0] != first:
            idx = np.arange(first, min(first + self.CURVE_CHUNK, self.n_cells))
            self._chunk = (first, self._simulate_curves(idx))
        return self._chunk[1][i - first]

    def iter_curves(
        self, indices: Sequence[int] | None = None, *, chunk: int = 512
    ) -> Iterator[tuple[int, list[Curve]]]:
        """``(i, curves)`` for the given cells (all by default), simulated ``chunk`` cells at
        a time (about 0.3 MB of samples per cell while a chunk is alive)."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        idx = np.arange(self.n_cells) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n_cells):
            raise IndexError(f"cell indices must be within 0..{self.n_cells - 1}")
        for lo in range(0, len(idx), chunk):
            part = idx[lo : lo + chunk]
            yield from zip(part.tolist(), self._simulate_curves(part), strict=True)

    def _simulate_curves(self, idx: np.ndarray) -> list[list[Curve]]:
        cells = self._cells.take(idx)
        table, _, samples = _run(cells, self.protocol, self.product, record=True)
        result: list[list[Curve]] = [[] for _ in idx]
        for s, (step, smp) in enumerate(zip(self.protocol, samples or [], strict=True)):
            for j in range(len(idx)):
                a, b = smp.offsets[j], smp.offsets[j + 1]
                result[j].append(
                    Curve(
                        step_index=s,
                        name=step.name,
                        kind=step.kind,
                        time_s=table["t_start_s"][j, s] + smp.t_s[a:b],
                        voltage_v=smp.v[a:b],
                        current_a=smp.i[a:b],
                        capacity_ah=smp.cap[a:b],
                        temperature_c=smp.temp[a:b],
                    )
                )
        return result

    def ocv_curve(self, i: int, n: int = 501) -> tuple[np.ndarray, np.ndarray]:
        """The formed cell's equilibrium OCV from empty (2.5 V) to full: (Ah, V).

        For checking features against the model: dQ/dV of this curve is the cell's true ICA.
        """
        t = self.truth
        sei = float(t.sei_loss_ah[i])
        qp, qn, y0 = (
            float(t.cathode_capacity_ah[i]),
            float(t.anode_capacity_ah[i]),
            float(t.cathode_y_pristine[i]),
        )
        z = np.linspace(sei, sei + qn, 20001)
        v = cathode_ocp_v(y0 - z / qp) - anode_ocp_v((z - sei) / qn)
        ok = (v >= 2.5) & (v <= self.product.v_max_v) & (y0 - z / qp > 0.0)
        z, v = z[ok], v[ok]
        grid = np.linspace(z[0], z[-1], n)
        return grid - z[0], np.interp(grid, z, v)


def _largest_remainder(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    names = list(weights)
    w = np.array([max(float(weights[k]), 0.0) for k in names])
    if w.sum() <= 0:
        raise ValueError("defect_mix needs at least one positive share")
    raw = total * w / w.sum()
    base = np.floor(raw).astype(int)
    order = np.argsort(-(raw - base), kind="stable")
    for j in order[: total - base.sum()]:
        base[j] += 1
    return dict(zip(names, base.tolist(), strict=True))


def _assign_defects(
    rng: np.random.Generator, n: int, counts: Mapping[str, int], lot_size: int
) -> np.ndarray:
    """Latent class per cell. Streaks and moisture come in runs of neighbouring cells (one
    coil segment, one badly dried slit coil); the others are isolated cells."""
    cls = np.full(n, "none", dtype=object)
    free = np.ones(n, dtype=bool)
    runs = {"coat_streak": (2, 8), "moisture": (max(4, lot_size // 10), max(8, lot_size // 3))}
    for name in ("moisture", "coat_streak"):
        left = counts.get(name, 0)
        tries = 0
        while left > 0 and tries < 200:
            lo, hi = runs[name]
            length = min(left, int(rng.integers(lo, hi + 1)))
            start = int(rng.integers(0, max(1, n - length + 1)))
            span = slice(start, start + length)
            tries += 1
            if free[span].all():
                cls[span] = name
                free[span] = False
                left -= length
        if left > 0:
            pick = rng.choice(np.flatnonzero(free), size=left, replace=False)
            cls[pick] = name
            free[pick] = False
    for name in ("particle_short", "burr_overhang", "cold_weld"):
        m = counts.get(name, 0)
        if m:
            pick = rng.choice(np.flatnonzero(free), size=m, replace=False)
            cls[pick] = name
            free[pick] = False
    return cls.astype(str)


def _draw_upstream(
    rng: np.random.Generator, product: ProductSpec, n: int, lot: np.ndarray
) -> Upstream:
    n_lots = int(lot.max()) + 1
    values: dict[str, np.ndarray] = {}
    for name in UPSTREAM_FIELDS:
        g = product.gauges[name]
        lot_offset = rng.normal(0.0, 1.0, n_lots)[lot] * g.lot_sigma
        cell = rng.normal(0.0, 1.0, n) * g.sigma
        if g.log:
            values[name] = g.nominal * np.exp(lot_offset + cell)
        else:
            values[name] = g.nominal + lot_offset + cell
    # machine signatures: filler nozzles and winders each sit a little off nominal
    fill = product.gauges["fill_mass_g"]
    nozzle = rng.normal(0.0, 0.4 * fill.sigma, product.fill_nozzles)
    values["fill_mass_g"] += nozzle[np.arange(n) % product.fill_nozzles]
    winder = rng.normal(0.0, 0.05, product.winders)
    values["overhang_mm"] += winder[np.arange(n) % product.winders]
    for name in ("cathode_burr_um", "anode_burr_um", "overhang_mm"):
        values[name] = np.maximum(values[name], 0.05)
    return Upstream(electrode_lot=lot.astype(np.int64), **values)


@dataclass
class _Hidden:
    """Per-cell effects of the latent defects (1 / 0 / inf where a cell has none)."""

    short_resistance_ohm: np.ndarray
    short_onset_s: np.ndarray
    weld_extra_ohm: np.ndarray
    capacity_loss: np.ndarray
    anode_factor: np.ndarray
    sei_extra_fraction: np.ndarray
    leak_factor: np.ndarray
    r0_factor: np.ndarray


def _log_uniform(bounds: tuple[float, float], u: np.ndarray) -> np.ndarray:
    lo, hi = bounds
    return np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)))


def _apply_defects(
    rng: np.random.Generator,
    spec: ProductSpec,
    config: SimConfig,
    latent: np.ndarray,
    up: Upstream,
) -> _Hidden:
    """Draw each defective cell's severity and write its gauge signature into ``up``.

    * ``particle_short``: a micro-short (log-uniform resistance); most are there from the
      first charge, ``late_short_fraction`` start during aging, ``dormant_short_fraction``
      only in the field. 30 % lower the dry hi-pot reading.
    * ``burr_overhang``: a tall slit burr (cathode or anode) or a low overhang on the X-ray;
      35 % carry a soft short too weak to see in most K-values.
    * ``coat_streak``: a light streak on the cathode (1.5-5 % capacity) or the anode (lower
      N/P); the traversing gauge sees 30-100 % of it.
    * ``cold_weld``: hidden extra resistance in the tab weld; the terminal-weld gauge reads
      high on 60 % of them.
    * ``moisture``: a badly dried slit coil (runs of neighbours): more SEI, more leak, a
      little more R0; Karl Fischer catches 75 % of the coils.
    """
    n = len(latent)
    g = spec.gauges
    u = rng.random((n, 6))
    aging_s = config.aging_days * 86400.0
    form_s = 20 * 3600.0  # a formation run, to place onsets inside the aging period
    h = _Hidden(
        short_resistance_ohm=np.full(n, np.inf),
        short_onset_s=np.full(n, np.inf),
        weld_extra_ohm=np.zeros(n),
        capacity_loss=np.zeros(n),
        anode_factor=np.ones(n),
        sei_extra_fraction=np.zeros(n),
        leak_factor=np.ones(n),
        r0_factor=np.ones(n),
    )

    m = latent == "particle_short"
    if m.any():
        um = u[m]
        h.short_resistance_ohm[m] = _log_uniform(spec.short_resistance_ohm, um[:, 0])
        dormant = um[:, 1] >= 1.0 - config.dormant_short_fraction
        late = ~dormant & (
            um[:, 1] >= 1.0 - config.dormant_short_fraction - config.late_short_fraction
        )
        onset = np.zeros(m.sum())
        onset[late] = form_s + aging_s * (0.15 + 0.7 * um[late, 2])
        onset[dormant] = np.inf
        h.short_onset_s[m] = onset
        hipot = um[:, 3] < 0.3
        ir = up.insulation_resistance_mohm[m]
        ir[hipot] = g["insulation_resistance_mohm"].lsl * (0.6 + 2.0 * um[hipot, 4])
        up.insulation_resistance_mohm[m] = ir

    m = latent == "burr_overhang"
    if m.any():
        um = u[m]
        burr = um[:, 0] < 0.5
        cath = um[:, 1] < 0.5
        cb, ab, ov = up.cathode_burr_um[m], up.anode_burr_um[m], up.overhang_mm[m]
        cb[burr & cath] = g["cathode_burr_um"].usl * (0.8 + 0.8 * um[burr & cath, 2])
        ab[burr & ~cath] = g["anode_burr_um"].usl * (0.8 + 0.7 * um[burr & ~cath, 2])
        ov[~burr] = g["overhang_mm"].lsl * (0.5 + 0.6 * um[~burr, 2])
        up.cathode_burr_um[m], up.anode_burr_um[m], up.overhang_mm[m] = cb, ab, ov
        soft = um[:, 3] < 0.35
        rs = np.full(m.sum(), np.inf)
        rs[soft] = _log_uniform(spec.soft_short_resistance_ohm, um[soft, 4])
        h.short_resistance_ohm[m] = rs
        onset = np.full(m.sum(), np.inf)
        onset[soft] = np.where(um[soft, 5] < 0.5, 0.0, form_s + aging_s * um[soft, 5])
        h.short_onset_s[m] = onset

    m = latent == "coat_streak"
    if m.any():
        um = u[m]
        cath = um[:, 0] < 0.7
        loss = np.where(cath, 0.015 + 0.035 * um[:, 1], 0.0)
        a_loss = np.where(cath, 0.0, 0.03 + 0.05 * um[:, 1])
        seen = 0.3 + 0.7 * um[:, 2]
        h.capacity_loss[m] = loss
        h.anode_factor[m] = 1.0 - a_loss
        up.cathode_loading_mg_cm2[m] *= 1.0 - seen * loss
        up.anode_loading_mg_cm2[m] *= 1.0 - seen * a_loss

    m = latent == "cold_weld"
    if m.any():
        um = u[m]
        lo, hi = spec.cold_weld_extra_ohm
        h.weld_extra_ohm[m] = lo + um[:, 0] * (hi - lo)
        wg = g["weld_resistance_uohm"]
        seen = um[:, 1] < 0.6
        w = up.weld_resistance_uohm[m]
        w[seen] = wg.nominal + (wg.usl - wg.nominal) * (0.5 + 1.5 * um[seen, 2])  # type: ignore[operator]
        up.weld_resistance_uohm[m] = w

    m = latent == "moisture"
    if m.any():
        where = np.flatnonzero(m)
        run = np.cumsum(np.concatenate([[True], np.diff(where) > 1])) - 1
        ru = rng.random((int(run.max()) + 1, 4))[run]
        h.sei_extra_fraction[m] = 0.05 + 0.30 * ru[:, 0]
        h.leak_factor[m] = 1.1 + 0.7 * ru[:, 1]
        h.r0_factor[m] = 1.05 + 0.10 * ru[:, 2]
        seen = ru[:, 3] < 0.75
        for name in ("cathode_moisture_ppm", "anode_moisture_ppm"):
            vals = getattr(up, name)[m]
            vals[seen] = g[name].nominal * (1.8 + 1.7 * ru[seen, 0])
            getattr(up, name)[m] = vals
    return h


def _cell_model(
    rng: np.random.Generator,
    spec: ProductSpec,
    up: Upstream,
    hidden: _Hidden,
    *,
    cathode_ratio: np.ndarray,
    anode_ratio: np.ndarray,
    channel: np.ndarray,
    cabinet: np.ndarray,
    bad_channel_fraction: float,
    seed: int,
) -> tuple[_Cells, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Circuit parameters of every cell from its history, plus its channel's effects.

    Returns the engine's cells, the natural leak resistance, the extra SEI (Ah) a moisture
    defect causes and the channels' hidden properties. Nudges (``docs/formation-model.md``):
    electrode capacities follow the true loadings; SEI loss follows the anode capacity and
    the lot moisture; R0 rises with a fill-mass deficit and adds the weld resistance; the
    natural leak falls with moisture.
    """
    n = len(channel)
    g = spec.gauges
    qp = spec.cathode_capacity_ah * cathode_ratio * (1.0 - hidden.capacity_loss)
    qp = qp * (1.0 + rng.normal(0, 0.002, n))
    qn = (
        spec.anode_capacity_ah * anode_ratio * hidden.anode_factor * (1.0 + rng.normal(0, 0.002, n))
    )
    mg = g["anode_moisture_ppm"]
    moist_rel = np.clip((up.anode_moisture_ppm - mg.nominal) / mg.nominal, -0.5, 3.0)
    sei_normal = spec.sei_loss_ah * (qn / spec.anode_capacity_ah)
    sei_normal *= (1.0 + 0.08 * np.minimum(moist_rel, 0.6)) * np.exp(rng.normal(0, 0.08, n))
    sei_cap = sei_normal * (1.0 + hidden.sei_extra_fraction)
    fill_deficit = np.maximum(0.0, 1.0 - up.fill_mass_g / g["fill_mass_g"].nominal)
    r0 = spec.r0_ohm * np.exp(rng.normal(0, 0.03, n)) * (1.0 + 4.0 * fill_deficit)
    r0 = r0 * hidden.r0_factor + up.weld_resistance_uohm * 1e-6 + hidden.weld_extra_ohm
    r1 = spec.r1_ohm * np.exp(rng.normal(0, 0.05, n))
    r2 = spec.r2_ohm * np.exp(rng.normal(0, 0.05, n))
    tau1 = spec.tau1_s * np.exp(rng.normal(0, 0.05, n))
    tau2 = spec.tau2_s * np.exp(rng.normal(0, 0.05, n))
    leak_nat = spec.leak_resistance_ohm * np.exp(rng.normal(0, 0.2, n)) / hidden.leak_factor
    leak_nat /= 1.0 + 0.15 * np.maximum(moist_rel, 0.0)

    # cycler channels: contact resistance inside the sense points, calibration, bad channels
    n_ch = spec.channels
    r_fix_ch = spec.fixture_resistance_ohm * np.exp(rng.normal(0, 0.5, n_ch))
    v_off_ch = rng.normal(0, 0.3e-3, n_ch)
    gain_ch = rng.normal(0, 2e-4, n_ch)
    t_off_ch = rng.normal(0, 0.3, n_ch)
    noise_ch = np.full(n_ch, 0.3e-3)
    n_bad = math.ceil(bad_channel_fraction * n_ch) if bad_channel_fraction > 0 else 0
    bad = rng.choice(n_ch, size=n_bad, replace=False)
    noisy, offset = bad[: (n_bad + 1) // 2], bad[(n_bad + 1) // 2 :]
    noise_ch[noisy] = 4e-3
    v_off_ch[offset] += rng.choice([-1.0, 1.0], len(offset)) * rng.uniform(8e-3, 15e-3, len(offset))
    ambient = (25.0 + rng.normal(0, 0.7, spec.cabinets))[cabinet]
    arrhenius = np.exp(
        _EA_RESISTANCE_J_MOL / _GAS_CONSTANT * (1.0 / (ambient + 273.15) - 1.0 / _T_REF_K)
    )
    seed_key = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ np.uint64(0xC2B2AE3D27D4EB4F))
    keys = _splitmix64(seed_key ^ np.arange(n, dtype=np.uint64))
    present = hidden.short_onset_s <= 0.0
    leak_form = np.where(
        present, 1.0 / (1.0 / leak_nat + 1.0 / hidden.short_resistance_ohm), leak_nat
    )
    cells = _Cells(
        qp_ah=qp,
        qn_ah=qn,
        y0=np.full(n, spec.cathode_y_pristine),
        sei_cap_ah=sei_cap,
        sei_char_ah=np.maximum(0.08 * qn, 1.25 * sei_cap),
        r0_ohm=r0 * arrhenius,
        r1_ohm=r1 * arrhenius,
        r2_ohm=r2 * arrhenius,
        tau1_s=tau1,
        tau2_s=tau2,
        leak_ohm=leak_form,
        ambient_c=ambient,
        r_fix_ohm=r_fix_ch[channel],
        v_offset_v=v_off_ch[channel],
        i_gain=gain_ch[channel],
        t_offset_k=t_off_ch[channel],
        noise_v=noise_ch[channel],
        key=keys,
    )
    fault = np.full(n_ch, "", dtype="<U6")
    fault[noisy] = "noisy"
    fault[offset] = "offset"
    channels = {
        "channel_fixture_ohm": r_fix_ch,
        "channel_voltage_offset_v": v_off_ch,
        "channel_fault": fault,
    }
    return cells, leak_nat, sei_cap - sei_normal, channels


def simulate_plant(
    n_cells: int,
    seed: int,
    *,
    product: str = "prismatic_105ah",
    start: datetime | None = None,
    defect_rate: float = 0.01,
    defect_mix: Mapping[str, float] | None = None,
    aging_days: float = 7.0,
    ocv_readings: int = 15,
    sample_period_s: float = 10.0,
    bad_channel_fraction: float = 0.01,
    upstream: Upstream | Sequence[CellUpstream] | None = None,
) -> SimulatedPlant:
    """Simulate ``n_cells`` cells of ``product`` built from ``start`` at the line's takt.

    ``defect_rate`` is the share of cells with a latent defect (exact after rounding to
    whole cells), split over the classes by ``defect_mix``. ``upstream`` replaces the drawn
    gauge values (the latent defects' gauge signatures are then written over it). Scalar
    step records and the aging log of every cell are computed here, curves on request
    (:meth:`SimulatedPlant.curves`). Deterministic for a given seed and arguments.
    """
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; expected one of {sorted(PRODUCTS)}")
    if n_cells < 1:
        raise ValueError("n_cells must be at least 1")
    if not 0.0 <= defect_rate <= 0.2:
        raise ValueError("defect_rate must be within 0..0.2")
    if not 1.0 <= aging_days <= 60.0:
        raise ValueError("aging_days must be within 1..60")
    if ocv_readings < 3:
        raise ValueError("ocv_readings must be at least 3")
    if not 1.0 <= sample_period_s <= 120.0:
        raise ValueError("sample_period_s must be within 1..120")
    if not 0.0 <= bad_channel_fraction <= 0.5:
        raise ValueError("bad_channel_fraction must be within 0..0.5")
    mix = dict(DEFAULT_DEFECT_MIX if defect_mix is None else defect_mix)
    unknown = set(mix) - set(DEFECT_CLASSES[1:])
    if unknown:
        raise ValueError(f"unknown defect classes in defect_mix: {sorted(unknown)}")
    counts = _largest_remainder(round(defect_rate * n_cells), mix)
    if start is None:
        start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if upstream is not None and len(upstream) != n_cells:
        raise ValueError(f"upstream has {len(upstream)} cells, expected {n_cells}")
    config = SimConfig(
        defect_rate=defect_rate,
        defect_mix=mix,
        aging_days=aging_days,
        ocv_readings=ocv_readings,
        sample_period_s=sample_period_s,
        bad_channel_fraction=bad_channel_fraction,
    )
    spec = PRODUCTS[product]
    rng = np.random.default_rng(seed)
    n = n_cells
    idx = np.arange(n)

    # layout: lots and trays in build order; trays rotate over cabinets and beds
    lot = idx // spec.cells_per_lot
    tray = idx // spec.tray_size
    pos = idx % spec.tray_size
    cabinet = tray % spec.cabinets
    bed = (tray // spec.cabinets) % spec.beds_per_cabinet
    channel = (cabinet * spec.beds_per_cabinet + bed) * spec.tray_size + pos
    n_trays = int(tray.max()) + 1
    rack = rng.integers(0, spec.racks, n_trays)[tray]
    built = start.timestamp() + idx * spec.takt_s
    tray_ready = built[np.minimum((np.arange(n_trays) + 1) * spec.tray_size, n) - 1]
    form_start = (tray_ready + config.soak_h * 3600.0)[tray]

    latent = _assign_defects(rng, n, counts, spec.cells_per_lot)
    drawn = _draw_upstream(rng, spec, n, lot)
    if upstream is None:
        up = drawn
    else:
        up = upstream.copy() if isinstance(upstream, Upstream) else Upstream.from_cells(upstream)
        lot = up.electrode_lot.astype(np.int64)
    g = spec.gauges
    # electrode capacities follow the true loadings, read before a streak's signature
    cathode_ratio = up.cathode_loading_mg_cm2 / g["cathode_loading_mg_cm2"].nominal
    anode_ratio = up.anode_loading_mg_cm2 / g["anode_loading_mg_cm2"].nominal
    hidden = _apply_defects(rng, spec, config, latent, up)
    cells, leak_nat, sei_extra_ah, channels = _cell_model(
        rng,
        spec,
        up,
        hidden,
        cathode_ratio=cathode_ratio,
        anode_ratio=anode_ratio,
        channel=channel,
        cabinet=cabinet,
        bad_channel_fraction=bad_channel_fraction,
        seed=seed,
    )

    protocol = formation_protocol(spec, sample_period_s=sample_period_s)
    table, state, _ = _run(cells, protocol, spec, record=False)
    steps = StepTable(tuple(s.name for s in protocol), tuple(s.kind for s in protocol), **table)
    form_end = form_start + state["t_run_s"]
    tray_end = np.zeros(n_trays)
    np.maximum.at(tray_end, tray, form_end)
    aging_start = tray_end[tray] + config.transfer_h * 3600.0
    aging = _age(
        rng,
        spec,
        config,
        cells=cells,
        state=state,
        rack=rack,
        form_start=form_start,
        form_end=form_end,
        aging_start=aging_start,
        leak_nat=leak_nat,
        r_sc=hidden.short_resistance_ohm,
        onset=hidden.short_onset_s,
    )
    truth = Truth(
        latent_class=latent,
        short_resistance_ohm=hidden.short_resistance_ohm,
        short_onset_s=hidden.short_onset_s,
        weld_extra_ohm=hidden.weld_extra_ohm,
        capacity_loss_fraction=hidden.capacity_loss,
        sei_extra_ah=sei_extra_ah,
        natural_leak_ohm=leak_nat,
        cathode_capacity_ah=cells.qp_ah,
        anode_capacity_ah=cells.qn_ah,
        cathode_y_pristine=cells.y0,
        sei_loss_ah=state["sei_ah"],
        **channels,
    )
    return SimulatedPlant(
        product=spec,
        config=config,
        seed=seed,
        start=start,
        serial=np.array([f"{spec.cell_prefix}{i + 1:010d}" for i in range(n)]),
        electrode_lot=lot,
        tray=tray,
        tray_position=pos,
        cabinet=cabinet,
        channel=channel,
        rack=rack,
        built_at_s=built,
        formation_started_at_s=form_start,
        formation_ended_at_s=form_end,
        aging_started_at_s=aging_start,
        upstream=up,
        protocol=protocol,
        steps=steps,
        aging=aging,
        truth=truth,
        _cells=cells,
    )


def _rack_temperature_c(rack_params: np.ndarray, rack: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """Rack air temperature at epoch seconds ``t_s``: set point + offset + daily swing +
    slow drift (the plant's HVAC cycles and the weather)."""
    off, amp, phase, drift = (rack_params[rack, j][..., None] for j in range(4))
    days = t_s / 86400.0
    return (
        25.0
        + off
        + amp * np.sin(2 * np.pi * days + phase)
        + drift * np.sin(2 * np.pi * days / 9.0 + phase)
    )


def _age(
    rng: np.random.Generator,
    spec: ProductSpec,
    config: SimConfig,
    *,
    cells: _Cells,
    state: dict[str, np.ndarray],
    rack: np.ndarray,
    form_start: np.ndarray,
    form_end: np.ndarray,
    aging_start: np.ndarray,
    leak_nat: np.ndarray,
    r_sc: np.ndarray,
    onset: np.ndarray,
) -> AgingLog:
    """OCV log on the aging racks.

    Self-discharge is integrated hourly from the end of formation: the natural leak (with
    an Arrhenius factor on the rack temperature) plus any micro-short once it has started.
    Each reading adds the OCV's temperature coefficient, the last relaxation of the
    storage discharge, the scanner's probe offset per rack and its noise.
    """
    n = len(rack)
    m = config.ocv_readings
    span = config.aging_days * 86400.0
    rack_params = np.column_stack(
        [
            rng.normal(0.0, 0.8, spec.racks),
            rng.uniform(0.2, 1.5, spec.racks),
            rng.uniform(0.0, 2 * np.pi, spec.racks),
            rng.normal(0.0, 0.6, spec.racks),
        ]
    )
    jitter = rng.normal(0.0, 600.0, (n, m))
    jitter[:, 0] = np.abs(jitter[:, 0])
    at = aging_start[:, None] + np.linspace(0.0, span, m)[None, :] + jitter
    at = np.maximum.accumulate(at, axis=1)
    hours = math.ceil((at[:, -1] - form_end).max() / 3600.0) + 2
    grid = form_end[:, None] + 3600.0 * np.arange(hours)[None, :]
    temp = _rack_temperature_c(rack_params, rack, grid)
    ocv0 = _ocv(state["z_ah"], state["sei_ah"], cells.qp_ah, cells.qn_ah, cells.y0)
    arr = np.exp(
        _EA_SELF_DISCHARGE_J_MOL / _GAS_CONSTANT * (1.0 / _T_REF_K - 1.0 / (temp + 273.15))
    )
    since_start = grid - form_start[:, None]
    i_sd = ocv0[:, None] / leak_nat[:, None] * arr + np.where(
        since_start >= onset[:, None], ocv0[:, None] / r_sc[:, None], 0.0
    )
    lost = np.concatenate([np.zeros((n, 1)), np.cumsum(i_sd[:, :-1], axis=1)], axis=1)  # Ah
    pos = (at - form_end[:, None]) / 3600.0
    i0 = np.clip(pos.astype(np.intp), 0, hours - 2)
    f = pos - i0
    lost_at = np.take_along_axis(lost, i0, 1) * (1 - f) + np.take_along_axis(lost, i0 + 1, 1) * f
    z = state["z_ah"][:, None] - lost_at
    ocv = _ocv(z, state["sei_ah"][:, None], cells.qp_ah[:, None], cells.qn_ah[:, None],
               cells.y0[:, None])  # fmt: skip
    t_read = _rack_temperature_c(rack_params, rack, at)
    relax = -0.15e-3 * np.exp(-(at - form_end[:, None]) / 86400.0)
    probe = rng.normal(0.0, 0.2e-3, spec.racks)[rack][:, None]
    noise = rng.normal(0.0, 0.05e-3, (n, m))
    ocv = ocv + spec.ocv_temp_coeff_mv_per_k * 1e-3 * (t_read - 25.0) + relax + probe + noise
    return AgingLog(at_s=at, ocv_v=ocv, rack_temperature_c=np.round(t_read, 2), rack=rack)


# --------------------------------------------------------------------------- field returns


@dataclass(frozen=True)
class FieldReturnModel:
    """How latent defects turn into field returns.

    ``probability``: chance a cell of the class fails in the field; ``delay_days``: lognormal
    (median, log-sigma) of the time from build to failure, at least ``min_delay_days``;
    ``report_lag_days``: lognormal (median, log-sigma) from failure to the return reaching
    the plant; ``modes``: failure-mode shares per class.
    """

    probability: Mapping[str, float] = field(
        default_factory=lambda: {
            "none": 5e-4,
            "particle_short": 0.35,
            "burr_overhang": 0.10,
            "coat_streak": 0.05,
            "cold_weld": 0.12,
            "moisture": 0.06,
        }
    )
    delay_days: Mapping[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "none": (250.0, 0.8),
            "particle_short": (75.0, 0.8),
            "burr_overhang": (120.0, 0.8),
            "coat_streak": (220.0, 0.6),
            "cold_weld": (150.0, 0.7),
            "moisture": (180.0, 0.6),
        }
    )
    min_delay_days: float = 14.0
    report_lag_days: tuple[float, float] = (21.0, 0.5)
    modes: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: {
            "none": {"capacity_fade": 0.35, "resistance_rise": 0.25, "other": 0.40},
            "particle_short": {"thermal_event": 0.35, "venting": 0.25, "capacity_fade": 0.10,
                               "swelling": 0.10, "other": 0.20},
            "burr_overhang": {"thermal_event": 0.30, "venting": 0.20, "capacity_fade": 0.30,
                              "other": 0.20},
            "coat_streak": {"capacity_fade": 0.60, "swelling": 0.20, "other": 0.20},
            "cold_weld": {"resistance_rise": 0.60, "thermal_event": 0.15, "other": 0.25},
            "moisture": {"swelling": 0.35, "capacity_fade": 0.35, "resistance_rise": 0.20,
                         "other": 0.10},
        }
    )  # fmt: skip


@dataclass(frozen=True)
class FieldReturn:
    """A cell returned from the field: when it failed, when the plant learnt of it, how."""

    cell_index: int
    serial: str
    failed_at: datetime
    reported_at: datetime
    mode: str


def field_returns(
    plant: SimulatedPlant,
    *,
    as_of: datetime,
    seed: int,
    model: FieldReturnModel | None = None,
) -> list[FieldReturn]:
    """Field returns known to the plant at ``as_of``, oldest report first.

    Failures are drawn once per (plant, seed, model): a later ``as_of`` only adds returns,
    never changes earlier ones. Labels are noisy by design: a few defect-free cells come
    back, and most defective cells never do.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    model = model or FieldReturnModel()
    rng = np.random.default_rng([seed, plant.seed, 0xF1E1D])
    n = plant.n_cells
    latent = plant.truth.latent_class
    u_fail = rng.random(n)
    z_delay = rng.normal(0.0, 1.0, n)
    z_lag = rng.normal(0.0, 1.0, n)
    u_mode = rng.random(n)
    lag_median, lag_sigma = model.report_lag_days
    out: list[FieldReturn] = []
    for cls in DEFECT_CLASSES:
        sel = np.flatnonzero((latent == cls) & (u_fail < model.probability.get(cls, 0.0)))
        if not len(sel):
            continue
        median, sigma = model.delay_days[cls]
        delay = np.maximum(median * np.exp(sigma * z_delay[sel]), model.min_delay_days)
        lag = lag_median * np.exp(lag_sigma * z_lag[sel])
        shares = model.modes[cls]
        names = list(shares)
        cum = np.cumsum([shares[k] for k in names])
        mode_idx = np.searchsorted(cum / cum[-1], u_mode[sel], side="right")
        for j, i in enumerate(sel.tolist()):
            failed = plant.built_at_s[i] + delay[j] * 86400.0
            reported = failed + lag[j] * 86400.0
            if reported > as_of.timestamp():
                continue
            out.append(
                FieldReturn(
                    cell_index=i,
                    serial=str(plant.serial[i]),
                    failed_at=datetime.fromtimestamp(failed, tz=UTC),
                    reported_at=datetime.fromtimestamp(reported, tz=UTC),
                    mode=names[min(int(mode_idx[j]), len(names) - 1)],
                )
            )
    out.sort(key=lambda r: (r.reported_at, r.cell_index))
    return out


__all__ = [
    "CYL_21700",
    "DEFECT_CLASSES",
    "END_REASONS",
    "FAILURE_MODES",
    "PRISMATIC_105AH",
    "PRODUCTS",
    "SIMULATOR_VERSION",
    "STEP_KINDS",
    "AgingLog",
    "CellUpstream",
    "Curve",
    "FieldReturn",
    "FieldReturnModel",
    "Gauge",
    "OcvLog",
    "ProductSpec",
    "SimConfig",
    "SimulatedPlant",
    "Step",
    "StepRecord",
    "StepTable",
    "Truth",
    "Upstream",
    "anode_ocp_v",
    "cathode_ocp_v",
    "field_returns",
    "formation_protocol",
    "simulate_plant",
]
