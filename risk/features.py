"""Risk features of each cell: formation signature, upstream history, and what else is known.

One ordered feature list (:data:`FEATURES`) feeds the supervised model, the outlier score,
the plant baseline and the reason codes; :data:`RISK_FEATURE_SET_VERSION` versions it and a
model manifest records the names in order, so a model never runs on columns it was not
trained on.

Three kinds of columns, all dimensionless so one model serves several cell designs:

* ``relative``: robust z-scores (median / 1.4826 MAD) of a formation feature within its
  electrode lot, after removing the offset of the equipment that measured it (aging rack for
  K-value and OCV, formation channel for resistances and voltages): a cell is judged
  against its neighbours, not against a fixed limit that drifts with lots and racks;
* ``gauge``: the upstream line gauges as deviations from nominal in units of the spec
  half-width (+1 at a symmetric upper limit, +1 at a one-sided USL, -1 at a one-sided LSL);
* ``count`` and ``indicator``: optional columns that other stations add later (vision
  defects on the cell's electrode segments, open SPC alarms on its process window). Absent
  columns are 0 and their ``*_missing`` indicator is 1, so a model trained without them
  scores the same cells the same way once they arrive.

NaN formation values (a missed pulse, no aging log) are scored as typical (0) and counted
in ``missing_values``, which the baseline and the model both see. Pure numpy; no
Django, no network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from formation.features import FEATURE_NAMES as FORMATION_FEATURE_NAMES
from formation.features import FeatureTable, robust_z

RISK_FEATURE_SET_VERSION = "1.0.0"

#: |z| beyond this is clipped: a K-value 40 MAD above its lot is as damning as 400, and the
#: models stay finite on channels that report nonsense.
Z_CLIP = 50.0
#: The same for gauge deviations (spec half-widths).
DEVIATION_CLIP = 20.0

#: Gauge deviation from which a reason says "at ... spec edge" rather than "high in tolerance".
SPEC_EDGE = 0.75


@dataclass(frozen=True)
class RiskFeature:
    """One column of the risk feature matrix.

    ``kind`` is ``relative`` (robust z within ``z_group`` after removing the median offset
    of ``offset_group``), ``gauge`` (spec deviation of gauge ``source``), ``count`` or
    ``indicator``. ``risky`` is the direction that raises thermal risk (``high``, ``low``
    or ``both``); the outlier score ignores excursions the other way. ``label`` is the
    quality engineer's word for it, used in reason codes; ``unit`` is the unit of the value.
    """

    name: str
    kind: str
    source: str
    label: str
    unit: str
    risky: str
    offset_group: str | None = None
    z_group: str | None = None
    optional: bool = False

    @property
    def sign(self) -> int:
        """+1 if high values are risky, -1 if low, 0 if both."""
        return {"high": 1, "low": -1, "both": 0}[self.risky]


def _rel(name, source, label, risky, offset_group=None):
    return RiskFeature(name, "relative", source, label, "MAD", risky, offset_group, "lot")


def _gauge(name, label, risky):
    return RiskFeature(f"{name}_dev", "gauge", name, label, "spec half-width", risky)


FEATURES: tuple[RiskFeature, ...] = (
    _rel("k_value_z", "k_value_mv_per_day", "K-value", "high", "rack"),
    _rel("ocv_end_z", "ocv_end_mv", "end-of-aging OCV", "low", "rack"),
    _rel("k_value_se_z", "k_value_se_mv_per_day", "K-value fit scatter", "high"),
    _rel("dcir_10s_z", "dcir_10s_mohm", "DCIR", "high", "channel"),
    _rel("dcir_1s_z", "dcir_1s_mohm", "1 s pulse resistance", "high", "channel"),
    _rel("r_low_soc_z", "r_low_soc_10s_mohm", "low-SOC resistance", "high", "channel"),
    _rel("v_mean_discharge_z", "v_mean_discharge_v", "mean discharge voltage", "low", "channel"),
    _rel("q_charge_z", "q_charge_ah", "first-charge capacity", "low"),
    _rel("q_discharge_z", "q_discharge_ah", "discharge capacity", "low"),
    _rel("ice_z", "ice", "initial coulombic efficiency", "low"),
    _rel("cv_time_z", "cv_time_s", "CV time", "high", "channel"),
    _rel("temperature_rise_z", "temperature_rise_k", "temperature rise", "high", "channel"),
    _rel("cathode_loading_z", "cathode_loading_mg_cm2", "cathode coat weight", "low"),
    _rel("anode_loading_z", "anode_loading_mg_cm2", "anode coat weight", "low"),
    _rel("cathode_burr_z", "cathode_burr_um", "cathode slit burr", "high"),
    _rel("anode_burr_z", "anode_burr_um", "anode slit burr", "high"),
    _gauge("cathode_loading_mg_cm2", "cathode coat weight", "both"),
    _gauge("anode_loading_mg_cm2", "anode coat weight", "both"),
    _gauge("fill_mass_g", "electrolyte fill mass", "both"),
    _gauge("weld_resistance_uohm", "weld resistance", "high"),
    _gauge("overhang_mm", "anode overhang", "low"),
    _gauge("cathode_moisture_ppm", "cathode moisture", "high"),
    _gauge("anode_moisture_ppm", "anode moisture", "high"),
    _gauge("cathode_burr_um", "cathode slit burr", "high"),
    _gauge("anode_burr_um", "anode slit burr", "high"),
    _gauge("insulation_resistance_mohm", "insulation resistance", "low"),
    RiskFeature(
        "missing_values", "count", "", "missing formation or gauge values", "count", "high"
    ),
    RiskFeature(
        "vision_defects_on_segments", "count", "vision_defects_on_segments",
        "vision defects on the cell's electrode segments", "count", "high", optional=True,
    ),
    RiskFeature(
        "vision_defects_on_segments_missing", "indicator", "vision_defects_on_segments",
        "no vision data", "flag", "high", optional=True,
    ),
    RiskFeature(
        "open_spc_alarms", "count", "open_spc_alarms",
        "open SPC alarms on the cell's process window", "count", "high", optional=True,
    ),
    RiskFeature(
        "open_spc_alarms_missing", "indicator", "open_spc_alarms", "no SPC data", "flag", "high",
        optional=True,
    ),
)  # fmt: skip

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_INDEX: Mapping[str, int] = {f.name: j for j, f in enumerate(FEATURES)}
RELATIVE = tuple(f for f in FEATURES if f.kind == "relative")
GAUGES = tuple(f for f in FEATURES if f.kind == "gauge")
OPTIONAL_COLUMNS: tuple[str, ...] = ("vision_defects_on_segments", "open_spc_alarms")
GAUGE_NAMES: tuple[str, ...] = tuple(f.source for f in GAUGES)


@dataclass
class RiskFeatures:
    """The feature matrix of many cells: ``values[i, j]`` is :data:`FEATURES` ``[j]`` of
    cell ``i``, finite everywhere."""

    values: np.ndarray
    names: tuple[str, ...] = FEATURE_NAMES
    version: str = RISK_FEATURE_SET_VERSION

    def __len__(self) -> int:
        return self.values.shape[0]

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]

    def row(self, i: int) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.values[i], strict=True)}


# --------------------------------------------------------------------------- building blocks


def spec_deviation(
    value: np.ndarray | float, *, nominal: float, lsl: float | None, usl: float | None
) -> np.ndarray:
    """Deviation from nominal in spec half-widths: ``(x - nominal) / half_width``.

    Two-sided: half the tolerance band, so ±1 at the limits. One-sided: the distance from
    nominal to the one limit, so +1 at a USL or -1 at an LSL. NaN stays NaN.
    """
    if lsl is not None and usl is not None:
        half = (usl - lsl) / 2.0
    elif usl is not None:
        half = usl - nominal
    elif lsl is not None:
        half = nominal - lsl
    else:
        raise ValueError("a gauge needs at least one spec limit")
    if not half > 0:
        raise ValueError(f"spec half-width must be positive, got {half}")
    return (np.asarray(value, dtype=np.float64) - nominal) / half


def remove_group_offset(
    values: np.ndarray, groups: np.ndarray | None, *, min_group_size: int = 8
) -> np.ndarray:
    """``values`` less each group's median offset from the population median.

    Takes out what a piece of equipment adds to every cell it measures (a formation
    channel's fixture resistance, an aging rack's temperature). Groups with fewer than
    ``min_group_size`` finite values keep their values (too few cells to tell the
    equipment from the cells). NaN stays NaN.
    """
    x = np.asarray(values, dtype=np.float64)
    if groups is None:
        return x.copy()
    labels = np.asarray(groups)
    if labels.shape != x.shape:
        raise ValueError(f"groups has shape {labels.shape}, expected {x.shape}")
    finite = np.isfinite(x)
    if not finite.any():
        return x.copy()
    overall = float(np.median(x[finite]))
    _, codes = np.unique(labels, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    out = x.copy()
    for rows in np.split(order, bounds):
        block = x[rows]
        ok = np.isfinite(block)
        if ok.sum() >= min_group_size:
            out[rows] = block - (float(np.median(block[ok])) - overall)
    return out


def _group_array(groups: Mapping[str, Any], name: str | None, n: int) -> np.ndarray | None:
    if name is None:
        return None
    g = groups.get(name)
    if g is None:
        return None
    arr = np.asarray(g)
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},)")
    return arr


def _gauge_limits(gauge: Any) -> tuple[float, float | None, float | None]:
    """(nominal, lsl, usl) of a gauge given as an object or a mapping."""
    if isinstance(gauge, Mapping):
        return float(gauge["nominal"]), gauge.get("lsl"), gauge.get("usl")
    return float(gauge.nominal), gauge.lsl, gauge.usl


def assemble_features(
    formation: FeatureTable | Mapping[str, np.ndarray],
    upstream: Any,
    *,
    gauges: Mapping[str, Any],
    lot: np.ndarray,
    channel: np.ndarray | None = None,
    rack: np.ndarray | None = None,
    extras: Mapping[str, np.ndarray] | None = None,
    min_group_size: int = 8,
) -> RiskFeatures:
    """The risk feature matrix of a population of cells scored together.

    ``formation``: the formation features (a :class:`FeatureTable` or a mapping from
    formation feature name to an ``(n,)`` array); ``upstream``: gauge values by gauge name
    (an ``Upstream`` or a mapping); ``gauges``: each gauge's nominal and limits (``Gauge``
    objects or mappings with ``nominal``, ``lsl``, ``usl``); ``lot``, ``channel``, ``rack``:
    each cell's electrode lot, formation channel and aging rack. The population is what the
    lot medians and equipment offsets are taken over: score a lot with its neighbours, not
    one cell alone (a lone cell is its own median). ``extras``: optional columns by name
    (:data:`OPTIONAL_COLUMNS`); an absent column gives 0 and sets its ``*_missing``
    indicator, NaN entries in a present column count as absent for that cell.
    Raises ValueError on missing gauges, unknown extras or arrays of the wrong length.
    """
    lot = np.asarray(lot)
    n = lot.shape[0]
    if lot.shape != (n,):
        raise ValueError(f"lot must be one label per cell, got shape {lot.shape}")
    groups = {"lot": lot, "channel": channel, "rack": rack}
    extras = dict(extras or {})
    unknown = sorted(set(extras) - set(OPTIONAL_COLUMNS))
    if unknown:
        raise ValueError(f"unknown optional columns {unknown}; expected {OPTIONAL_COLUMNS}")

    def formation_column(name: str) -> np.ndarray:
        if isinstance(formation, FeatureTable):
            col = formation.column(name)
        else:
            col = formation.get(name)
            if col is None:
                return np.full(n, np.nan)
        col = np.asarray(col, dtype=np.float64)
        if col.shape != (n,):
            raise ValueError(f"formation feature {name} has shape {col.shape}, expected ({n},)")
        return col

    def gauge_column(name: str) -> np.ndarray:
        raw = upstream[name] if isinstance(upstream, Mapping) else getattr(upstream, name)
        raw = np.asarray(raw, dtype=np.float64)
        if raw.shape != (n,):
            raise ValueError(f"gauge {name} has shape {raw.shape}, expected ({n},)")
        return raw

    out = np.zeros((n, len(FEATURES)), dtype=np.float64)
    missing = np.zeros(n)
    for f in RELATIVE:
        x = formation_column(f.source) if f.source not in GAUGE_NAMES else gauge_column(f.source)
        x = remove_group_offset(
            x, _group_array(groups, f.offset_group, n), min_group_size=min_group_size
        )
        z = robust_z(x, _group_array(groups, f.z_group, n), min_group_size=min_group_size)
        bad = ~np.isfinite(z)
        if f.source not in GAUGE_NAMES:  # a missing gauge is counted once, below
            missing += bad
        out[:, FEATURE_INDEX[f.name]] = np.clip(np.where(bad, 0.0, z), -Z_CLIP, Z_CLIP)
    for f in GAUGES:
        if f.source not in gauges:
            raise ValueError(f"no spec limits for gauge {f.source}")
        raw = gauge_column(f.source)
        nominal, lsl, usl = _gauge_limits(gauges[f.source])
        dev = spec_deviation(raw, nominal=nominal, lsl=lsl, usl=usl)
        # an unread gauge is a missing formation-to-line link, scored as nominal but counted
        bad = ~np.isfinite(dev)
        missing += bad
        dev = np.where(bad, 0.0, dev)
        out[:, FEATURE_INDEX[f.name]] = np.clip(dev, -DEVIATION_CLIP, DEVIATION_CLIP)
    out[:, FEATURE_INDEX["missing_values"]] = missing
    for name in OPTIONAL_COLUMNS:
        col = extras.get(name)
        if col is None:
            values = np.zeros(n)
            absent = np.ones(n)
        else:
            col = np.asarray(col, dtype=np.float64)
            if col.shape != (n,):
                raise ValueError(f"{name} has shape {col.shape}, expected ({n},)")
            absent = (~np.isfinite(col)).astype(np.float64)
            values = np.where(absent > 0, 0.0, np.maximum(col, 0.0))
        out[:, FEATURE_INDEX[name]] = values
        out[:, FEATURE_INDEX[f"{name}_missing"]] = absent
    return RiskFeatures(out)


def plant_features(
    plant: Any,
    *,
    formation: FeatureTable | None = None,
    extras: Mapping[str, np.ndarray] | None = None,
    cells: Sequence[int] | np.ndarray | None = None,
) -> RiskFeatures:
    """Risk features of a simulated plant (``formation.cellsim.SimulatedPlant``).

    ``formation`` defaults to the scalar features of the step records and aging log
    (``batch_features`` with the product's OCV temperature coefficient); pass a table
    computed with curves to include curve features. ``cells`` limits the population to
    some cells (they are then each other's lot neighbours).
    """
    from formation.features import batch_features

    if formation is None:
        formation = batch_features(
            plant.steps,
            plant.aging,
            ocv_temp_coeff_mv_per_k=plant.product.ocv_temp_coeff_mv_per_k,
        )
    idx = np.arange(plant.n_cells) if cells is None else np.asarray(cells, dtype=np.int64)
    table = FeatureTable(formation.names, formation.values[idx], formation.version)
    upstream = {name: getattr(plant.upstream, name)[idx] for name in GAUGE_NAMES}
    return assemble_features(
        table,
        upstream,
        gauges=plant.product.gauges,
        lot=plant.electrode_lot[idx],
        channel=plant.channel[idx],
        rack=plant.rack[idx],
        extras=None if extras is None else {k: np.asarray(v)[idx] for k, v in extras.items()},
    )


# --------------------------------------------------------------------------- wording


def describe(feature: RiskFeature, value: float) -> str:
    """A quality engineer's sentence for one feature value of one cell.

    ``K-value 4.1 MAD above lot median``, ``DCIR 3.2 MAD above lot median (channel offset
    removed)``, ``weld resistance at upper spec edge (0.92 of tolerance)``, ``anode slit
    burr above upper spec limit (1.31 of tolerance)``, ``2 open SPC alarms on the cell's
    process window``.
    """
    v = float(value)
    if feature.kind == "relative":
        where = "above" if v >= 0 else "below"
        ref = "lot median"
        if feature.offset_group == "channel":
            ref += " (channel offset removed)"
        elif feature.offset_group == "rack":
            ref += " (rack offset removed)"
        return f"{feature.label} {abs(v):.1f} MAD {where} {ref}"
    if feature.kind == "gauge":
        side = "upper" if v >= 0 else "lower"
        a = abs(v)
        if a > 1.0:
            state = f"{'above' if v >= 0 else 'below'} {side} spec limit"
        elif a >= SPEC_EDGE:
            state = f"at {side} spec edge"
        else:
            state = f"{'high' if v >= 0 else 'low'} in tolerance"
        return f"{feature.label} {state} ({a:.2f} of tolerance)"
    if feature.kind == "indicator":
        return feature.label
    count = round(v)
    return f"{count} {feature.label}"


def feature_catalogue() -> list[dict[str, Any]]:
    """The feature list as JSON-ready dicts (name, kind, source, label, unit, risky, groups),
    in order: what a manifest records."""
    return [
        {
            "name": f.name,
            "kind": f.kind,
            "source": f.source,
            "label": f.label,
            "unit": f.unit,
            "risky": f.risky,
            "offset_group": f.offset_group,
            "z_group": f.z_group,
            "optional": f.optional,
        }
        for f in FEATURES
    ]


def check_finite(values: np.ndarray) -> np.ndarray:
    """``values`` as a C-contiguous float64 ``(n, len(FEATURES))`` matrix, or ValueError."""
    x = np.ascontiguousarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(FEATURES):
        raise ValueError(f"features must be (n, {len(FEATURES)}), got {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(f"features must be finite; row {bad} is not")
    return x


__all__ = [
    "DEVIATION_CLIP",
    "FEATURES",
    "FEATURE_INDEX",
    "FEATURE_NAMES",
    "FORMATION_FEATURE_NAMES",
    "GAUGE_NAMES",
    "OPTIONAL_COLUMNS",
    "RISK_FEATURE_SET_VERSION",
    "SPEC_EDGE",
    "Z_CLIP",
    "RiskFeature",
    "RiskFeatures",
    "assemble_features",
    "check_finite",
    "describe",
    "feature_catalogue",
    "plant_features",
    "remove_group_offset",
    "spec_deviation",
]
