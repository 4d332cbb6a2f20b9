"""Today's plant practice as a score, so a model can be compared with it at the same
quarantine rate.

A cell plant without a risk model holds a cell when a line gauge is out of spec, when its
K-value, DCIR, ICE or capacity is far from its lot (robust z beyond 3.5, median / MAD),
when its K-value passes an absolute limit, or when a station has flagged it (a vision
defect on its segments, an open SPC alarm on its window, a missing measurement). The
baseline counts those flags per cell; within one count, cells are ranked by their
lot-relative K-value (the classic K screen), so the score ranks every cell and
:mod:`risk.evaluation` can quarantine the top k % of it like any other score.

Works on the risk feature matrix (:mod:`risk.features`), plus the raw K-value for the
absolute limit. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from risk.features import FEATURE_INDEX, OPTIONAL_COLUMNS, check_finite

#: Which spec limits each gauge has in the control plan (``upper``, ``lower`` or ``both``).
SPEC_SIDES: Mapping[str, str] = {
    "cathode_loading_mg_cm2_dev": "both",
    "anode_loading_mg_cm2_dev": "both",
    "fill_mass_g_dev": "both",
    "weld_resistance_uohm_dev": "upper",
    "overhang_mm_dev": "both",
    "cathode_moisture_ppm_dev": "upper",
    "anode_moisture_ppm_dev": "upper",
    "cathode_burr_um_dev": "upper",
    "anode_burr_um_dev": "upper",
    "insulation_resistance_mohm_dev": "lower",
}

#: Lot-relative screens: feature and the direction that fails.
DEFAULT_SCREENS: tuple[tuple[str, str], ...] = (
    ("k_value_z", "high"),
    ("dcir_10s_z", "high"),
    ("ice_z", "low"),
    ("q_discharge_z", "low"),
)


@dataclass(frozen=True)
class BaselineRules:
    """The plant's screens. ``z_limit``: robust z beyond which a lot-relative screen fails;
    ``screens``: which features and which direction; ``spec_sides``: the limits each gauge
    has (a deviation beyond ±1 spec half-width on a side with a limit is an exceedance);
    ``k_limit_mv_per_day``: absolute K-value limit (None = not used); ``flag_counts``:
    optional station columns whose count > 0 is a flag."""

    z_limit: float = 3.5
    screens: tuple[tuple[str, str], ...] = DEFAULT_SCREENS
    spec_sides: Mapping[str, str] = field(default_factory=lambda: dict(SPEC_SIDES))
    k_limit_mv_per_day: float | None = None
    flag_counts: tuple[str, ...] = (*OPTIONAL_COLUMNS, "missing_values")

    def as_dict(self) -> dict:
        return {
            "z_limit": self.z_limit,
            "screens": [list(s) for s in self.screens],
            "spec_sides": dict(self.spec_sides),
            "k_limit_mv_per_day": self.k_limit_mv_per_day,
            "flag_counts": list(self.flag_counts),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> BaselineRules:
        """Rules from :meth:`as_dict`; ValueError on unknown features or directions."""
        screens = tuple((str(a), str(b)) for a, b in data["screens"])
        sides = {str(k): str(v) for k, v in data["spec_sides"].items()}
        counts = tuple(str(c) for c in data["flag_counts"])
        names = [a for a, _ in screens] + list(sides) + list(counts)
        unknown = [n for n in names if n not in FEATURE_INDEX]
        if unknown:
            raise ValueError(f"screens name unknown features {unknown}")
        if any(d not in ("high", "low") for _, d in screens) or any(
            v not in ("upper", "lower", "both") for v in sides.values()
        ):
            raise ValueError("screen directions must be high/low, spec sides upper/lower/both")
        k_limit = data.get("k_limit_mv_per_day")
        return cls(
            z_limit=float(data["z_limit"]),
            screens=screens,
            spec_sides=sides,
            k_limit_mv_per_day=None if k_limit is None else float(k_limit),
            flag_counts=counts,
        )


def baseline_flags(
    features: np.ndarray,
    *,
    rules: BaselineRules | None = None,
    k_value_mv_per_day: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Which screens each cell fails: a boolean ``(n, n_screens)`` matrix and the screen
    names (``spec:<gauge>``, ``lot:<feature>``, ``k_limit``, ``flag:<column>``)."""
    rules = rules or BaselineRules()
    x = check_finite(getattr(features, "values", features))
    cols: list[np.ndarray] = []
    names: list[str] = []
    for name, sides in rules.spec_sides.items():
        dev = x[:, FEATURE_INDEX[name]]
        hit = np.zeros(len(x), dtype=bool)
        if sides in ("upper", "both"):
            hit |= dev > 1.0
        if sides in ("lower", "both"):
            hit |= dev < -1.0
        cols.append(hit)
        names.append(f"spec:{name.removesuffix('_dev')}")
    for name, direction in rules.screens:
        z = x[:, FEATURE_INDEX[name]]
        cols.append(z > rules.z_limit if direction == "high" else z < -rules.z_limit)
        names.append(f"lot:{name}")
    if rules.k_limit_mv_per_day is not None:
        if k_value_mv_per_day is None:
            raise ValueError("k_limit_mv_per_day is set: pass k_value_mv_per_day")
        k = np.asarray(k_value_mv_per_day, dtype=np.float64)
        if k.shape != (len(x),):
            raise ValueError(f"k_value_mv_per_day has shape {k.shape}, expected ({len(x)},)")
        cols.append(np.nan_to_num(k, nan=0.0) > rules.k_limit_mv_per_day)
        names.append("k_limit")
    for name in rules.flag_counts:
        cols.append(x[:, FEATURE_INDEX[name]] > 0)
        names.append(f"flag:{name}")
    return np.column_stack(cols), tuple(names)


def baseline_score(
    features: np.ndarray,
    *,
    rules: BaselineRules | None = None,
    k_value_mv_per_day: np.ndarray | None = None,
) -> np.ndarray:
    """Number of failed screens plus a tie-break in [0, 1) that grows with the
    lot-relative K-value: ``flags + tanh(max(k_value_z, 0) / 10)``."""
    flags, _ = baseline_flags(features, rules=rules, k_value_mv_per_day=k_value_mv_per_day)
    x = np.asarray(getattr(features, "values", features), dtype=np.float64)
    k_z = np.maximum(x[:, FEATURE_INDEX["k_value_z"]], 0.0)
    return flags.sum(axis=1) + np.tanh(k_z / 10.0) * (1.0 - 1e-9)


def baseline_reasons(
    features: np.ndarray,
    *,
    rules: BaselineRules | None = None,
    k_value_mv_per_day: np.ndarray | None = None,
) -> list[list[str]]:
    """The screens each cell fails, by name, in screen order."""
    flags, names = baseline_flags(features, rules=rules, k_value_mv_per_day=k_value_mv_per_day)
    return [[names[j] for j in np.flatnonzero(row)] for row in flags]


__all__ = [
    "DEFAULT_SCREENS",
    "SPEC_SIDES",
    "BaselineRules",
    "baseline_flags",
    "baseline_reasons",
    "baseline_score",
]
