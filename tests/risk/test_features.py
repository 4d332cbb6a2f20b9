"""Risk features: spec deviations, equipment offsets, lot-relative z-scores, optional
columns, wording, and the assembly of a simulated plant's matrix."""

import numpy as np
import pytest
from scipy.stats import norm

from formation.cellsim import PRISMATIC_105AH, simulate_plant
from formation.features import FEATURE_NAMES as FORMATION_NAMES
from formation.features import batch_features
from risk.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    FEATURES,
    GAUGE_NAMES,
    OPTIONAL_COLUMNS,
    RISK_FEATURE_SET_VERSION,
    assemble_features,
    describe,
    feature_catalogue,
    plant_features,
    remove_group_offset,
    spec_deviation,
)

GAUGES = PRISMATIC_105AH.gauges


def _population(n=300, seed=5):
    """One electrode lot of typical cells: formation features and gauges near nominal."""
    rng = np.random.default_rng(seed)
    formation = {name: rng.normal(10.0, 1.0, n) for name in FORMATION_NAMES}
    formation["k_value_mv_per_day"] = rng.normal(0.08, 0.005, n)
    upstream = {}
    for name in GAUGE_NAMES:
        g = GAUGES[name]
        upstream[name] = g.nominal + rng.normal(0.0, 0.05, n) * g.half_width
    groups = {
        "lot": np.zeros(n, dtype=int),
        "channel": np.arange(n) % 24,
        "rack": np.arange(n) % 4,
    }
    return formation, upstream, groups


def test_spec_deviation_is_plus_minus_one_at_the_limits():
    assert spec_deviation([1.5, 0.5, 1.0], nominal=1.0, lsl=0.5, usl=1.5).tolist() == [
        1.0,
        -1.0,
        0.0,
    ]
    weld = GAUGES["weld_resistance_uohm"]  # 15 uOhm, USL 25
    assert spec_deviation(25.0, nominal=weld.nominal, lsl=None, usl=weld.usl) == 1.0
    assert spec_deviation(20.0, nominal=weld.nominal, lsl=None, usl=weld.usl) == 0.5
    ir = GAUGES["insulation_resistance_mohm"]  # 5000 MOhm, LSL 500
    assert spec_deviation(500.0, nominal=ir.nominal, lsl=ir.lsl, usl=None) == -1.0
    assert np.isnan(spec_deviation(np.nan, nominal=1.0, lsl=0.5, usl=1.5))
    with pytest.raises(ValueError, match="at least one spec limit"):
        spec_deviation(1.0, nominal=1.0, lsl=None, usl=None)
    with pytest.raises(ValueError, match="positive"):
        spec_deviation(1.0, nominal=1.0, lsl=2.0, usl=1.0)


def test_remove_group_offset_takes_out_a_channel_bias_and_keeps_tiny_groups():
    rng = np.random.default_rng(1)
    values = rng.normal(0.75, 0.01, 400)
    channel = np.arange(400) % 4
    values[channel == 2] += 0.05  # a fixture 50 uOhm high
    channel[:3] = 99  # three cells on a channel seen too rarely to judge it
    out = remove_group_offset(values, channel, min_group_size=8)
    overall = np.median(values)
    for ch in (0, 1, 2, 3):
        sel = channel == ch
        assert np.median(out[sel]) == pytest.approx(overall, abs=1e-12)
    assert out[:3].tolist() == values[:3].tolist()
    with pytest.raises(ValueError, match="shape"):
        remove_group_offset(values, channel[:10])


def test_k_value_six_mad_above_its_lot_scores_six_whatever_its_rack():
    formation, upstream, groups = _population()
    # K-values at evenly spread normal quantiles, dealt round-robin to the four racks, so
    # every rack holds the same spread and only the warm rack's offset sets it apart
    k = 0.08 + 0.005 * norm.ppf((np.arange(300) + 0.5) / 300)
    formation["k_value_mv_per_day"] = k
    median, mad = np.median(k), 1.4826 * np.median(np.abs(k - np.median(k)))
    k[groups["rack"] == 3] += 0.02  # a warm rack: every cell on it self-discharges faster
    base = assemble_features(formation, upstream, gauges=GAUGES, **groups)
    assert groups["rack"][7] == 3
    k[7] = median + 0.02 + 6.0 * mad
    x = assemble_features(formation, upstream, gauges=GAUGES, **groups)
    z = x.column("k_value_z")
    assert z[7] == pytest.approx(6.0, abs=0.15)  # the cell itself moves median and MAD a little
    # the warm rack's other cells are not outliers once its offset is removed
    warm = (groups["rack"] == 3) & (np.arange(300) != 7)
    assert np.abs(np.median(z[warm])) < 0.2
    assert np.abs(base.column("k_value_z")).max() < 4.0
    assert describe(FEATURES[FEATURE_INDEX["k_value_z"]], z[7]).startswith(
        f"K-value {z[7]:.1f} MAD above lot median"
    )


def test_gauge_deviation_and_its_wording():
    formation, upstream, groups = _population()
    upstream["weld_resistance_uohm"][3] = 24.0  # 0.9 of the way to the 25 uOhm USL
    upstream["anode_burr_um"][4] = 18.0  # above its 15 um USL
    upstream["insulation_resistance_mohm"][5] = 400.0  # below its 500 MOhm LSL
    x = assemble_features(formation, upstream, gauges=GAUGES, **groups)
    weld = x.column("weld_resistance_uohm_dev")[3]
    assert weld == pytest.approx(0.9)
    f = {name: FEATURES[FEATURE_INDEX[name]] for name in FEATURE_NAMES}
    assert describe(f["weld_resistance_uohm_dev"], weld) == (
        "weld resistance at upper spec edge (0.90 of tolerance)"
    )
    burr = x.column("anode_burr_um_dev")[4]
    assert describe(f["anode_burr_um_dev"], burr) == (
        f"anode slit burr above upper spec limit ({(18.0 - 5.5) / 9.5:.2f} of tolerance)"
    )
    ir = x.column("insulation_resistance_mohm_dev")[5]
    assert ir == pytest.approx(-4600.0 / 4500.0)
    assert describe(f["insulation_resistance_mohm_dev"], ir) == (
        "insulation resistance below lower spec limit (1.02 of tolerance)"
    )
    assert (
        describe(f["overhang_mm_dev"], -0.3)
        == "anode overhang low in tolerance (0.30 of tolerance)"
    )
    assert describe(f["open_spc_alarms"], 2.0) == "2 open SPC alarms on the cell's process window"


def test_optional_columns_absent_present_and_partly_missing():
    formation, upstream, groups = _population(n=40)
    absent = assemble_features(formation, upstream, gauges=GAUGES, **groups)
    for name in OPTIONAL_COLUMNS:
        assert absent.column(name).tolist() == [0.0] * 40
        assert absent.column(f"{name}_missing").tolist() == [1.0] * 40
    vision = np.zeros(40)
    vision[2] = 3.0
    vision[5] = np.nan  # that cell's segments were not inspected
    present = assemble_features(
        formation, upstream, gauges=GAUGES, extras={"vision_defects_on_segments": vision}, **groups
    )
    assert present.column("vision_defects_on_segments")[[2, 5, 6]].tolist() == [3.0, 0.0, 0.0]
    assert present.column("vision_defects_on_segments_missing")[[2, 5, 6]].tolist() == [0, 1, 0]
    assert present.column("open_spc_alarms_missing").tolist() == [1.0] * 40
    # the other columns do not depend on what else is present
    other = [j for j, n in enumerate(FEATURE_NAMES) if not n.startswith("vision")]
    assert np.array_equal(present.values[:, other], absent.values[:, other])
    with pytest.raises(ValueError, match="unknown optional columns"):
        assemble_features(formation, upstream, gauges=GAUGES, extras={"hipot": vision}, **groups)
    with pytest.raises(ValueError, match="open_spc_alarms has shape"):
        assemble_features(
            formation, upstream, gauges=GAUGES, extras={"open_spc_alarms": vision[:5]}, **groups
        )


def test_missing_values_are_scored_typical_but_counted():
    formation, upstream, groups = _population(n=60)
    formation["dcir_10s_mohm"][8] = np.nan  # a pulse that did not run
    formation["k_value_mv_per_day"][8] = np.nan
    upstream["fill_mass_g"][9] = np.nan  # the check-weigher reading never arrived
    x = assemble_features(formation, upstream, gauges=GAUGES, **groups)
    assert np.isfinite(x.values).all()
    assert x.column("dcir_10s_z")[8] == 0.0
    assert x.column("fill_mass_g_dev")[9] == 0.0
    assert x.column("missing_values")[[7, 8, 9]].tolist() == [0.0, 2.0, 1.0]


def test_assembly_refuses_what_it_cannot_use():
    formation, upstream, groups = _population(n=20)
    with pytest.raises(ValueError, match="no spec limits for gauge fill_mass_g"):
        gauges = {k: v for k, v in GAUGES.items() if k != "fill_mass_g"}
        assemble_features(formation, upstream, gauges=gauges, **groups)
    short = dict(upstream, weld_resistance_uohm=upstream["weld_resistance_uohm"][:5])
    with pytest.raises(ValueError, match="gauge weld_resistance_uohm has shape"):
        assemble_features(formation, short, gauges=GAUGES, **groups)
    with pytest.raises(ValueError, match="channel has shape"):
        assemble_features(
            formation, upstream, gauges=GAUGES, lot=groups["lot"], channel=np.zeros(3)
        )


def test_feature_list_is_ordered_named_and_versioned():
    assert RISK_FEATURE_SET_VERSION == "1.0.0"
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == 31
    assert FEATURE_NAMES[0] == "k_value_z"
    catalogue = feature_catalogue()
    assert [c["name"] for c in catalogue] == list(FEATURE_NAMES)
    assert {c["kind"] for c in catalogue} == {"relative", "gauge", "count", "indicator"}
    assert all(c["label"] and c["unit"] for c in catalogue)
    assert [c["name"] for c in catalogue if c["optional"]] == [
        "vision_defects_on_segments",
        "vision_defects_on_segments_missing",
        "open_spc_alarms",
        "open_spc_alarms_missing",
    ]


@pytest.fixture(scope="module")
def plant():
    return simulate_plant(1200, 31, defect_rate=0.05)


def test_plant_features_show_each_defect_where_physics_puts_it(plant):
    x = plant_features(plant)
    assert x.values.shape == (1200, len(FEATURES))
    assert np.isfinite(x.values).all()
    cls = plant.truth.latent_class
    present = (cls == "particle_short") & (plant.truth.short_onset_s == 0)
    assert np.median(x.column("k_value_z")[present]) > 10.0
    weld = plant.truth.weld_extra_ohm > 0.1e-3
    assert np.median(x.column("dcir_10s_z")[weld]) > 5.0
    assert np.abs(np.median(x.column("k_value_z")[cls == "none"])) < 0.1
    # the same cells give the same matrix from the same seed
    again = plant_features(simulate_plant(1200, 31, defect_rate=0.05))
    assert np.array_equal(again.values, x.values)


def test_plant_features_take_a_precomputed_table_and_a_subset(plant):
    table = batch_features(
        plant.steps, plant.aging, ocv_temp_coeff_mv_per_k=plant.product.ocv_temp_coeff_mv_per_k
    )
    assert np.array_equal(
        plant_features(plant, formation=table).values, plant_features(plant).values
    )
    first_lot = np.flatnonzero(plant.electrode_lot == 0)
    sub = plant_features(plant, cells=first_lot)
    assert len(sub) == 300
    # the gauge deviations do not depend on the population, the z-scores do
    j = FEATURE_INDEX["weld_resistance_uohm_dev"]
    assert np.array_equal(sub.values[:, j], plant_features(plant).values[first_lot, j])
