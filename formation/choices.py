"""Choices of the formation app (lowercase snake_case values).

Step types are one set for every source: the cycler file readers (``formation.cyclers``)
name a discharge ``discharge`` and the cell simulator (``formation.cellsim``) names it
``cc_discharge``; both arrive here as :attr:`StepType.DISCHARGE` through
:func:`step_type_normalise`.
"""

from __future__ import annotations

from django.db import models


class StepType(models.TextChoices):
    """What the cycler did in a step. Discharge modes (CC, CP, CC-CV, CR) are one type; the
    vendor's own name is kept on the step as ``source_step_type``."""

    REST = "rest", "Rest"
    CC_CHARGE = "cc_charge", "CC charge"
    CV_CHARGE = "cv_charge", "CV charge"
    CCCV_CHARGE = "cccv_charge", "CC-CV charge"
    CP_CHARGE = "cp_charge", "CP charge"
    DISCHARGE = "discharge", "Discharge"
    PULSE = "pulse", "Pulse (DCIR)"
    OCV = "ocv", "OCV reading"


#: Other names of a step type that producers use (the simulator, some cycler exports).
STEP_TYPE_ALIASES: dict[str, str] = {
    "cc_discharge": StepType.DISCHARGE,
    "cv_discharge": StepType.DISCHARGE,
    "cccv_discharge": StepType.DISCHARGE,
    "cp_discharge": StepType.DISCHARGE,
}

CHARGE_TYPES = frozenset(
    {StepType.CC_CHARGE, StepType.CV_CHARGE, StepType.CCCV_CHARGE, StepType.CP_CHARGE}
)
#: Charge types that end in a constant-voltage phase (CV time and tail current apply).
CV_TYPES = frozenset({StepType.CV_CHARGE, StepType.CCCV_CHARGE})


def step_type_normalise(name: str) -> StepType:
    """The one step type of ``name`` (a value of :class:`StepType` or an alias); a
    ValueError for anything else."""
    key = str(name).strip().lower()
    key = STEP_TYPE_ALIASES.get(key, key)
    try:
        return StepType(key)
    except ValueError:
        known = ", ".join([*StepType.values, *STEP_TYPE_ALIASES])
        raise ValueError(f"unknown step type {name!r}; one of {known}") from None


class SignConvention(models.TextChoices):
    """How a source signed its current. Stored currents are always + when charging."""

    CHARGE_POSITIVE = "charge_positive", "Charge positive (discharge negative)"
    DISCHARGE_POSITIVE = "discharge_positive", "Discharge positive (charge negative)"
    MAGNITUDE_WITH_STATE = "magnitude_with_state", "Magnitude with a charge/discharge state"


class SourceFormat(models.TextChoices):
    """Where a cycler run came from: a cycler's envelope stream, or a file kind."""

    ENVELOPE = "envelope", "Ingest envelopes (cycler stream)"
    CABINET_CSV = "cabinet_csv", "Formation-cabinet tray CSV"
    NEWARE_CSV = "neware_csv", "Neware BTS CSV"
    NEWARE_XLSX = "neware_xlsx", "Neware BTS XLSX"
    NEWARE_NDA = "neware_nda", "Neware .nda/.ndax"
    ARBIN_CSV = "arbin_csv", "Arbin MITS CSV"
    ARBIN_XLSX = "arbin_xlsx", "Arbin MITS XLSX"
    MACCOR_TXT = "maccor_txt", "Maccor text export"


class CyclerProfileName(models.TextChoices):
    """The built-in reading profiles of :data:`formation.cyclers.PROFILES`."""

    CABINET_CSV = "cabinet_csv", "Formation-cabinet tray CSV"
    NEWARE_CSV = "neware_csv", "Neware BTS CSV"
    NEWARE_XLSX = "neware_xlsx", "Neware BTS XLSX"
    NEWARE_NDA = "neware_nda", "Neware .nda/.ndax"
    ARBIN_CSV = "arbin_csv", "Arbin MITS CSV"
    ARBIN_XLSX = "arbin_xlsx", "Arbin MITS XLSX"
    MACCOR_TXT = "maccor_txt", "Maccor text export"


class RuleSetState(models.TextChoices):
    """Life of a grading rule set: drafted, active on its line (one at a time), retired."""

    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class BinCriterion(models.TextChoices):
    """What a grading bin can bound, each read from the cell's formation features."""

    CAPACITY_AH = "capacity_ah", "Discharge capacity (Ah)"
    ENERGY_WH = "energy_wh", "Discharge energy (Wh)"
    DCIR_MOHM = "dcir_mohm", "DCIR, 10 s pulse (mΩ)"
    ACIR_MOHM = "acir_mohm", "ACIR, last aging reading (mΩ)"
    OCV_MV = "ocv_mv", "OCV, last aging reading (mV)"
    K_VALUE_MV_PER_DAY = "k_value_mv_per_day", "K-value (mV/day)"


#: The feature column each bin criterion reads.
BIN_FEATURES: dict[str, str] = {
    BinCriterion.CAPACITY_AH: "q_discharge_ah",
    BinCriterion.ENERGY_WH: "e_discharge_wh",
    BinCriterion.DCIR_MOHM: "dcir_10s_mohm",
    BinCriterion.ACIR_MOHM: "acir_mohm",
    BinCriterion.OCV_MV: "ocv_end_mv",
    BinCriterion.K_VALUE_MV_PER_DAY: "k_value_mv_per_day",
}
