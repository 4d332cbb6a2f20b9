"""Canonical formation records: what every cycler file reader returns.

One :class:`CyclerFile` per export, holding one :class:`CellRun` per cell (a vendor channel
export holds one cell; a formation-cabinet tray file holds one per tray position), each with
its executed steps in order (:class:`StepRecord`) and each step's sampled curve
(:class:`StepCurve`).

Invariants, whatever the source:

* SI-style units as named: V, A, Ah, Wh, s, °C. Milli-units, minutes, clock strings and
  Kelvin have been converted; the units found in the header are kept in
  :attr:`CyclerFile.units`.
* Current is **+ when charging** the cell, as the cycler saw it. The file's own convention
  is recorded in :attr:`CyclerFile.source_sign_convention`.
* Capacity and energy are what moved *within the step*, never negative, whether the
  cycler counted per step or cumulatively.
* Times are timezone-aware (UTC). ``time_s`` of a curve counts from the step's start.
* Arrays are float64, read-only, free of NaN and of the same length within a curve.

The later ``formation`` models store a :class:`CellRun` as a cycler run, each
:class:`StepRecord` as a step result row and each :class:`StepCurve` as one curve blob:
never one row per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import numpy as np


class StepType(StrEnum):
    """What the cycler did in a step. Discharge modes (CC, CP, CCCV, CR) are one kind; the
    vendor's own name is kept in :attr:`StepRecord.source_step_type`."""

    REST = "rest"
    CC_CHARGE = "cc_charge"
    CV_CHARGE = "cv_charge"
    CCCV_CHARGE = "cccv_charge"
    CP_CHARGE = "cp_charge"
    DISCHARGE = "discharge"
    PULSE = "pulse"
    OCV = "ocv"

    @property
    def is_charge(self) -> bool:
        return self in CHARGE_TYPES


CHARGE_TYPES = frozenset(
    {StepType.CC_CHARGE, StepType.CV_CHARGE, StepType.CCCV_CHARGE, StepType.CP_CHARGE}
)


class SignConvention(StrEnum):
    """How the source file signed its current column."""

    CHARGE_POSITIVE = "charge_positive"  # Neware, Arbin, most cabinets: discharge negative
    DISCHARGE_POSITIVE = "discharge_positive"  # PyBaMM-style: charge negative
    MAGNITUDE_WITH_STATE = "magnitude_with_state"  # Maccor: |I| plus a C/D state column


@dataclass(frozen=True, eq=False)
class StepCurve:
    """The samples of one step. ``time_s`` counts from the step's start (the first sample
    can be later than 0 s when the cycler logs its first point after an interval).
    ``test_time_s`` is the run-relative time where the file has one, else None."""

    time_s: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    capacity_ah: np.ndarray
    temperature_c: np.ndarray | None = None
    test_time_s: np.ndarray | None = None

    @property
    def n_points(self) -> int:
        return int(self.time_s.shape[0])


@dataclass(frozen=True, eq=False)
class StepRecord:
    """One executed step of one cell.

    ``sequence`` is the step's position in the cell's run (1, 2, ...); ``step_index`` the
    protocol step number the cycler reported (it repeats when a protocol loops).
    ``capacity_ah`` / ``energy_wh`` are the charge and energy moved in the step (>= 0), in
    the step's direction. ``cv_time_s`` is the time spent at the voltage limit (0 for a CC
    charge, the whole step for a CV charge, None for steps that do not charge);
    ``tail_current_a`` is the current magnitude at the end of a CV or CCCV charge.
    ``temperature_rise_c`` is the highest temperature of the step minus its first.
    ``first_row`` / ``last_row`` locate the step in the source file.
    """

    sequence: int
    step_index: int
    cycle_index: int | None
    step_type: StepType
    source_step_type: str
    started_at: datetime
    ended_at: datetime
    duration_s: float
    capacity_ah: float
    energy_wh: float
    start_voltage_v: float
    end_voltage_v: float
    end_current_a: float
    cv_time_s: float | None
    tail_current_a: float | None
    temperature_start_c: float | None
    temperature_max_c: float | None
    temperature_rise_c: float | None
    end_reason: str | None
    first_row: int
    last_row: int
    curve: StepCurve


@dataclass(frozen=True, eq=False)
class CellRun:
    """One cell's formation run in one file, identified as the genealogy needs it: the
    barcode (cell serial) and, where the equipment reports them, the cycler or cabinet,
    its channel, the tray and the tray position."""

    barcode: str
    equipment: str | None
    channel: str | None
    tray: str | None
    position: str | None
    steps: tuple[StepRecord, ...]

    @property
    def started_at(self) -> datetime:
        return self.steps[0].started_at

    @property
    def ended_at(self) -> datetime:
        return self.steps[-1].ended_at

    @property
    def n_points(self) -> int:
        return sum(s.curve.n_points for s in self.steps)


@dataclass(frozen=True, eq=False)
class CyclerFile:
    """A whole export in canonical form.

    ``profile`` is the name of the reading profile, ``source_format`` the file kind
    (``cabinet_csv``, ``neware_csv``, ``neware_xlsx``, ``neware_nda``, ``arbin_csv``,
    ``arbin_xlsx``, ``maccor_txt``). ``columns`` maps each canonical field to the header
    text it was read from and ``units`` to the unit found there (``"hh:mm:ss"`` for clock
    strings, ``"integrated"`` for an energy computed from voltage and current because the
    file has none). ``ignored_columns`` lists the header columns that were recognised or
    tolerated but not read. ``metadata`` holds what the file says about itself outside the
    table (a Maccor header line, an Arbin ``Global_Info`` sheet).
    """

    profile: str
    source_format: str
    source_name: str
    source_sha256: str
    source_sign_convention: SignConvention
    columns: dict[str, str]
    units: dict[str, str]
    ignored_columns: tuple[str, ...]
    metadata: dict[str, str]
    n_rows: int
    cells: tuple[CellRun, ...]

    @property
    def n_steps(self) -> int:
        return sum(len(c.steps) for c in self.cells)
