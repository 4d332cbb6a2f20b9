"""Formation simulator: physics against the control plan, latent defects, nuisances, records,
curves, determinism, field returns and refusals."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from formation.cellsim import (
    CYL_21700,
    DEFECT_CLASSES,
    END_REASONS,
    FAILURE_MODES,
    PRISMATIC_105AH,
    PRODUCTS,
    STEP_KINDS,
    FieldReturnModel,
    Upstream,
    anode_ocp_v,
    cathode_ocp_v,
    field_returns,
    simulate_plant,
)
from formation.features import batch_features, robust_z

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
#: discharge-capacity limits of the demo control plan (compliance/demo/plant.py)
DISCHARGE_LIMITS_AH = {"prismatic_105ah": (105.0, 108.5), "cyl_21700": (4.90, 5.15)}


@pytest.fixture(scope="module")
def pri():
    return simulate_plant(4000, 20260302, product="prismatic_105ah", defect_rate=0.02)


@pytest.fixture(scope="module")
def cyl():
    return simulate_plant(4000, 20260302, product="cyl_21700", defect_rate=0.02)


@pytest.fixture(scope="module")
def plants(pri, cyl):
    return {"prismatic_105ah": pri, "cyl_21700": cyl}


def _col(plant, field, name):
    return getattr(plant.steps, field)[:, plant.steps.column(name)]


def _features(plant):
    return batch_features(plant.steps, plant.aging)


# --------------------------------------------------------------------------- OCV


def test_chen2020_stoichiometry_window_spans_2_5_to_4_2_volts():
    # Chen et al. 2020: 0 % SOC at x = 0.0279, y = 0.9084; 100 % at x = 0.9014, y = 0.2661
    empty = cathode_ocp_v(0.9084) - anode_ocp_v(0.0279)
    full = cathode_ocp_v(0.2661) - anode_ocp_v(0.9014)
    assert abs(empty - 2.5) < 0.005
    assert abs(full - 4.2) < 0.01


def test_ocv_rises_monotonically_from_empty_to_full(pri):
    q, v = pri.ocv_curve(0)
    assert q[0] == 0.0
    assert np.all(np.diff(v) > 0)
    assert v[0] >= 2.5
    assert v[-1] <= PRISMATIC_105AH.v_max_v
    # the formed cell holds about the nominal discharge capacity between 2.5 and 4.2 V
    assert 0.98 * 106.5 < q[-1] < 1.06 * 106.5


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_plant():
    a = simulate_plant(300, 7, product="cyl_21700", defect_rate=0.05)
    b = simulate_plant(300, 7, product="cyl_21700", defect_rate=0.05)
    for f in ("duration_s", "charge_ah", "discharge_wh", "v_end_v", "r_10s_mohm", "end_reason"):
        assert np.array_equal(getattr(a.steps, f), getattr(b.steps, f), equal_nan=True)
    assert np.array_equal(a.aging.ocv_v, b.aging.ocv_v)
    assert np.array_equal(a.aging.at_s, b.aging.at_s)
    assert np.array_equal(a.upstream.fill_mass_g, b.upstream.fill_mass_g)
    assert np.array_equal(a.truth.latent_class, b.truth.latent_class)
    assert np.array_equal(a.serial, b.serial)
    for ca, cb in zip(a.curves(123), b.curves(123), strict=True):
        assert np.array_equal(ca.voltage_v, cb.voltage_v)
        assert np.array_equal(ca.time_s, cb.time_s)


def test_another_seed_gives_another_plant():
    a = simulate_plant(300, 7, product="cyl_21700")
    b = simulate_plant(300, 8, product="cyl_21700")
    assert not np.array_equal(a.steps.charge_ah, b.steps.charge_ah)
    assert not np.array_equal(a.aging.ocv_v, b.aging.ocv_v)


def test_a_cells_curves_do_not_depend_on_its_batch(pri):
    # curves(300) simulates cells 256..511 together; iter_curves([300]) simulates it alone
    in_chunk = pri.curves(300)
    (i, alone), *rest = list(pri.iter_curves([300]))
    assert i == 300
    assert rest == []
    for a, b in zip(in_chunk, alone, strict=True):
        assert np.array_equal(a.time_s, b.time_s)
        assert np.array_equal(a.voltage_v, b.voltage_v)
        assert np.array_equal(a.current_a, b.current_a)
        assert np.array_equal(a.capacity_ah, b.capacity_ah)


# --------------------------------------------------------------------------- physics


@pytest.mark.parametrize("key", ["prismatic_105ah", "cyl_21700"])
def test_normal_cells_match_the_control_plan(plants, key):
    plant = plants[key]
    spec = PRODUCTS[key]
    ok = (plant.truth.latent_class == "none") & (plant.truth.channel_fault[plant.channel] == "")
    f = _features(plant)
    q_ch = f.column("q_charge_ah")[ok]
    q_dis = f.column("q_discharge_ah")[ok]
    ice = f.column("ice")[ok]
    # first-charge and discharge capacity within 2 % of the control plan's nominal
    assert abs(np.median(q_ch) / spec.nominal_charge_ah - 1) < 0.02
    assert abs(np.median(q_dis) / spec.nominal_discharge_ah - 1) < 0.02
    # the control plan's discharge-capacity limits pass nearly every good cell
    lsl, usl = DISCHARGE_LIMITS_AH[key]
    assert np.mean((q_dis > lsl) & (q_dis < usl)) > 0.97
    # first-cycle efficiency in the realistic NMC/graphite band
    assert np.all((ice > 0.85) & (ice < 0.93))
    assert 0.87 < np.median(ice) < 0.92
    # DCIR within 10 % of nominal, low-SOC resistance higher than mid-SOC
    dcir = f.column("dcir_10s_mohm")[ok]
    assert abs(np.median(dcir) / spec.nominal_dcir_mohm - 1) < 0.10
    assert np.all(f.column("r_low_soc_10s_mohm")[ok] > dcir)
    # K-value in the plant's range (good EV cells 0.02-0.2 mV/day)
    k = f.column("k_value_mv_per_day")[ok]
    assert abs(np.median(k) / spec.nominal_k_mv_per_day - 1) < 0.3
    assert np.percentile(k, 5) > 0.02 and np.percentile(k, 95) < 0.2
    # shipped at the storage OCV of the control plan (3620..3680 mV)
    ocv_end = f.column("ocv_end_mv")[ok]
    assert np.mean((ocv_end > 3620) & (ocv_end < 3680)) > 0.99
    # a C/3 discharge warms the cell by a few kelvin, not tens
    assert 0.5 < np.median(f.column("temperature_rise_k")[ok]) < 5.0


def test_steps_run_and_end_as_the_recipe_says(pri):
    st = pri.steps
    assert st.kinds == (
        "cc_charge", "cv_charge", "rest", "cc_discharge", "rest", "cc_charge", "rest",
        "pulse", "rest", "cc_charge", "rest", "pulse", "rest", "cc_discharge", "rest",
    )  # fmt: skip
    assert set(st.kinds) == set(STEP_KINDS)
    reason = {
        name: {END_REASONS[r] for r in st.end_reason[:, j]} for j, name in enumerate(st.names)
    }
    assert reason["form_cc"] == {"voltage_limit"}
    assert reason["form_cv"] == {"current_limit"}
    assert reason["cap_dis"] == {"voltage_limit"}
    assert reason["to_low_soc"] == {"capacity_limit"}
    assert reason["to_mid_soc"] == {"capacity_limit"}
    assert reason["to_storage"] == {"capacity_limit"}
    assert reason["rest_1"] == reason["pulse_mid_soc"] == {"time_limit"}
    # the CV step ends at the C/50 tail, as measured by the channel (gain error < 0.1 %)
    tail = _col(pri, "i_end_a", "form_cv")
    assert np.allclose(tail, 0.02 * 105.0, rtol=1e-3)
    # capacity-limited steps stop at their share of the measured discharge capacity
    q_ref = _col(pri, "discharge_ah", "cap_dis")
    assert np.allclose(_col(pri, "charge_ah", "to_low_soc"), 0.10 * q_ref, rtol=1e-9)
    assert np.allclose(_col(pri, "charge_ah", "to_mid_soc"), 0.40 * q_ref, rtol=1e-9)
    assert np.allclose(_col(pri, "discharge_ah", "to_storage"), 0.08 * q_ref, rtol=1e-9)
    assert np.all(_col(pri, "duration_s", "rest_1") == 1800.0)
    assert np.all(_col(pri, "duration_s", "pulse_mid_soc") == 10.0)
    # the first charge at C/10 takes 9-12 h, the CV phase a few tens of minutes
    assert 9.0 < np.median(_col(pri, "duration_s", "form_cc")) / 3600 < 12.0
    assert 10.0 < np.median(_col(pri, "duration_s", "form_cv")) / 60 < 60.0
    # charge steps count charge only, discharge steps discharge only
    assert np.all(_col(pri, "discharge_ah", "form_cc") == 0.0)
    assert np.all(_col(pri, "charge_ah", "cap_dis") == 0.0)
    # the pulse resistance grows from 1 s to 10 s (the RC pairs charge)
    assert np.all(
        _col(pri, "r_10s_mohm", "pulse_mid_soc") > _col(pri, "r_1s_mohm", "pulse_mid_soc")
    )
    assert np.all(np.isnan(_col(pri, "r_10s_mohm", "cap_dis")))


@pytest.mark.parametrize("i", [0, 255, 256, 3999])
def test_curves_agree_with_the_step_records(pri, i):
    records = pri.step_records(i)
    curves = pri.curves(i)
    assert [c.name for c in curves] == [r.name for r in records] == list(pri.steps.names)
    t_prev = -1.0
    for c, r in zip(curves, records, strict=True):
        assert c.voltage_v[0] == r.v_start_v
        assert c.voltage_v[-1] == r.v_end_v
        assert c.current_a[-1] == r.i_end_a
        assert c.capacity_ah[0] == 0.0
        assert c.capacity_ah[-1] == pytest.approx(r.capacity_ah, rel=1e-12)
        assert c.time_s[0] == pytest.approx(r.t_start_s, abs=1e-9)
        assert c.time_s[-1] - c.time_s[0] == pytest.approx(r.duration_s, abs=1e-6)
        assert c.temperature_c.max() == pytest.approx(r.temperature_max_c, abs=1e-9)
        assert np.all(np.diff(c.time_s) > 0)
        assert c.time_s[0] >= t_prev  # steps follow each other in run time
        t_prev = c.time_s[-1]
        # cycler-like sampling: every 10 s (pulses every 1 s), the last sample at the crossing
        gaps = np.diff(c.time_s)[:-1]
        assert np.allclose(gaps, 1.0 if c.kind == "pulse" else 10.0, atol=1e-6)
        if c.kind in ("cc_charge", "cv_charge"):
            assert np.all(c.current_a > 0)
        elif c.kind in ("cc_discharge", "pulse"):
            assert np.all(c.current_a < 0)
        else:
            assert np.all(c.current_a == 0)
    dis = curves[3]
    assert dis.voltage_v[-1] == pytest.approx(PRISMATIC_105AH.v_min_v, abs=1.5e-3)


# --------------------------------------------------------------------------- defects


@pytest.mark.parametrize("key", ["prismatic_105ah", "cyl_21700"])
def test_particle_shorts_stand_out_in_the_k_value(plants, key):
    plant = plants[key]
    k = _features(plant).column("k_value_mv_per_day")
    z = robust_z(k, plant.rack)
    cls = plant.truth.latent_class
    shorts = cls == "particle_short"
    onset = plant.truth.short_onset_s
    from_start = shorts & (onset == 0)
    dormant = shorts & np.isinf(onset)
    assert shorts.sum() == 24  # 30 % of 2 % of 4000
    assert np.mean(z[shorts] > 4) >= 0.6
    assert np.mean(z[from_start] > 4) >= 0.75
    assert not np.any(z[dormant] > 4)  # a short that starts in the field is invisible here
    assert np.mean(z[cls == "none"] > 4) < 0.005
    # more leak current, more K: the shorts' median K is several times the population's
    assert np.median(k[from_start]) > 3 * np.median(k[cls == "none"])


@pytest.mark.parametrize("key", ["prismatic_105ah", "cyl_21700"])
def test_cold_welds_raise_dcir(plants, key):
    plant = plants[key]
    spec = PRODUCTS[key]
    dcir = _features(plant).column("dcir_10s_mohm")
    cls = plant.truth.latent_class
    weld = cls == "cold_weld"
    lift = np.median(dcir[weld]) - np.median(dcir[cls == "none"])
    lo, hi = spec.cold_weld_extra_ohm
    # the hidden weld resistance adds in series: the median lift is inside its range
    assert lo * 1e3 < lift < hi * 1e3
    assert np.mean(robust_z(dcir, plant.channel)[weld] > 3) >= 0.5
    # each cell's excess over its normal neighbours follows its own weld resistance
    extra = plant.truth.weld_extra_ohm[weld] * 1e3
    assert np.corrcoef(extra, dcir[weld])[0, 1] > 0.8


def test_moisture_lowers_efficiency_and_raises_k(cyl):
    f = _features(cyl)
    cls = cyl.truth.latent_class
    wet, ok = cls == "moisture", cls == "none"
    assert np.median(f.column("ice")[wet]) < np.median(f.column("ice")[ok]) - 0.005
    assert np.median(f.column("k_value_mv_per_day")[wet]) > np.median(
        f.column("k_value_mv_per_day")[ok]
    )
    assert np.all(cyl.truth.sei_extra_ah[wet] > 0)
    assert np.all(cyl.truth.sei_extra_ah[ok] == 0)
    # moisture comes in runs of neighbouring cells (one slit coil)
    where = np.flatnonzero(wet)
    assert len(where) == 16  # 20 % of 2 % of 4000
    assert np.sum(np.diff(where) > 1) < 4


def test_coat_streaks_lower_capacity_and_the_loading_gauge(pri):
    f = _features(pri)
    cls = pri.truth.latent_class
    streak = (cls == "coat_streak") & (pri.truth.capacity_loss_fraction > 0)
    ok = cls == "none"
    rel = f.column("q_discharge_ah")[streak] / np.median(f.column("q_discharge_ah")[ok]) - 1
    assert np.median(rel) < -0.01
    dev = pri.upstream.deviation("cathode_loading_mg_cm2", PRISMATIC_105AH)
    assert np.median(dev[streak]) < np.median(dev[ok]) - 0.5


def test_burr_and_overhang_defects_show_in_gauges_not_in_formation(pri):
    cls = pri.truth.latent_class
    bo = cls == "burr_overhang"
    g = PRISMATIC_105AH.gauges
    flagged = (
        (pri.upstream.cathode_burr_um[bo] > 0.8 * g["cathode_burr_um"].usl)
        | (pri.upstream.anode_burr_um[bo] > 0.8 * g["anode_burr_um"].usl)
        | (pri.upstream.overhang_mm[bo] < 1.1 * g["overhang_mm"].lsl)
    )
    assert flagged.all()
    f = _features(pri)
    for name in ("q_discharge_ah", "dcir_10s_mohm", "ice"):
        z = robust_z(f.column(name))
        assert np.mean(np.abs(z[bo]) > 4) < 0.1, name


def test_defect_rate_and_mix_are_exact():
    plant = simulate_plant(2000, 3, product="cyl_21700", defect_rate=0.02)
    cls = plant.truth.latent_class
    counts = {c: int(np.sum(cls == c)) for c in DEFECT_CLASSES}
    assert counts == {
        "none": 1960,
        "particle_short": 12,
        "burr_overhang": 8,
        "coat_streak": 6,
        "cold_weld": 6,
        "moisture": 8,
    }
    # 2.5 defective cells do not exist: the count rounds to whole cells
    odd = simulate_plant(250, 3, defect_rate=0.01, defect_mix={"particle_short": 1.0})
    assert int(odd.truth.defective.sum()) == 2
    only = simulate_plant(500, 3, defect_rate=0.02, defect_mix={"cold_weld": 1.0})
    assert set(only.truth.latent_class) == {"none", "cold_weld"}
    assert int(np.sum(only.truth.latent_class == "cold_weld")) == 10
    clean = simulate_plant(500, 3, defect_rate=0.0)
    assert not clean.truth.defective.any()


# --------------------------------------------------------------------------- nuisances


def test_fixture_resistance_adds_to_each_channels_dcir(pri):
    dcir = _features(pri).column("dcir_10s_mohm")
    ok = pri.truth.latent_class == "none"
    channels = np.unique(pri.channel)
    med = np.array([np.median(dcir[ok & (pri.channel == ch)]) for ch in channels])
    fixture = pri.truth.channel_fixture_ohm[channels] * 1e3
    slope = np.polyfit(fixture, med, 1)[0]
    assert 0.7 < slope < 1.3  # mΩ of contact resistance shows as mΩ of DCIR


def test_bad_channels_show_in_their_readings(pri):
    fault = pri.truth.channel_fault[pri.channel]
    v_end = _col(pri, "v_end_v", "cap_dis")
    dev = np.abs(v_end - PRISMATIC_105AH.v_min_v)
    # a good channel's reading noise is bounded at 3.5 x 0.3 mV; noisy channels scatter mV
    assert dev[fault == ""].max() < 1.1e-3
    assert dev[fault == "noisy"].max() > 3e-3
    # an offset channel reads its offset against the aging rack's OCV scanner
    gap = _col(pri, "v_end_v", "rest_7") - pri.aging.ocv_v[:, 0]
    assert np.abs(np.median(gap[fault == ""])) < 2e-3
    assert np.all(np.abs(gap[fault == "offset"]) > 5e-3)
    n_bad = int(np.sum(pri.truth.channel_fault != ""))
    assert n_bad == 2  # 1 % of 192 channels, rounded up


def test_layout_of_channels_trays_and_racks(pri):
    spec = PRISMATIC_105AH
    assert pri.channel.max() < spec.channels
    assert np.all(pri.tray_position == np.arange(4000) % spec.tray_size)
    # every cell of a tray sits in one cabinet and ages on one rack
    for t in (0, 17, 499):
        cells = pri.tray == t
        assert len(set(pri.cabinet[cells])) == 1
        assert len(set(pri.rack[cells])) == 1
    assert pri.channel_label(0) == "fc-01/b1/p01"
    assert pri.channel_label(9) == "fc-02/b1/p02"
    assert pri.serial[0] == "P10000000001"
    assert pri.built_at(1) - pri.built_at(0) == timedelta(seconds=60)


def test_aging_log_covers_the_aging_period(cyl):
    at = cyl.aging.at_s
    assert at.shape == (4000, 15)
    span_days = (at[:, -1] - at[:, 0]) / 86400.0
    assert np.all(np.abs(span_days - 7.0) < 0.05)
    assert np.all(np.diff(at, axis=1) > 0)
    assert np.all(at[:, 0] >= cyl.formation_ended_at_s)
    assert np.all(cyl.formation_started_at_s >= cyl.built_at_s + 24 * 3600)
    temps = cyl.aging.rack_temperature_c
    assert temps.min() > 20.0 and temps.max() < 30.0
    # the racks do not all run at the same temperature
    rack_means = [temps[cyl.aging.rack == r].mean() for r in np.unique(cyl.aging.rack)]
    assert np.ptp(rack_means) > 0.5
    log = cyl.ocv_log(5)
    assert log.days[0] == 0.0
    assert log.rack == cyl.rack[5]


def test_given_upstream_history_drives_capacity():
    base = simulate_plant(200, 9, defect_rate=0.0)
    up = base.upstream.copy()
    up.cathode_loading_mg_cm2[:100] *= 1.03
    moved = simulate_plant(200, 9, defect_rate=0.0, upstream=up)
    q0 = _col(base, "discharge_ah", "cap_dis")
    q1 = _col(moved, "discharge_ah", "cap_dis")
    assert np.array_equal(moved.upstream.cathode_loading_mg_cm2, up.cathode_loading_mg_cm2)
    assert np.median(q1[100:] / q0[100:]) == pytest.approx(1.0, abs=1e-3)
    # 3 % more cathode brings 3 % more lithium: about 3 % more capacity
    assert 1.02 < np.median(q1[:100] / q0[:100]) < 1.04
    cells = [base.upstream_of(i) for i in range(200)]
    again = simulate_plant(200, 9, defect_rate=0.0, upstream=cells)
    assert np.array_equal(_col(again, "discharge_ah", "cap_dis"), q0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"product": "pouch_60ah"}, "unknown product"),
        ({"n_cells": 0}, "n_cells"),
        ({"defect_rate": 0.5}, "defect_rate"),
        ({"defect_mix": {"lithium_plating": 1.0}}, "unknown defect classes"),
        ({"defect_mix": {"moisture": 0.0}}, "positive share"),
        ({"start": datetime(2026, 3, 2, 6, 0)}, "timezone-aware"),  # noqa: DTZ001
        ({"aging_days": 0.5}, "aging_days"),
        ({"ocv_readings": 2}, "ocv_readings"),
        ({"bad_channel_fraction": 0.9}, "bad_channel_fraction"),
        ({"upstream": Upstream.from_cells([])}, "upstream has 0 cells"),
    ],
)
def test_refuses_bad_arguments(kwargs, message):
    args = {"n_cells": 10, "seed": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        simulate_plant(**args)


# --------------------------------------------------------------------------- field returns


def test_field_returns_follow_the_configured_delays(pri):
    model = FieldReturnModel(
        probability={"particle_short": 1.0},
        delay_days=dict.fromkeys(DEFECT_CLASSES, (60.0, 0.0)),
        report_lag_days=(10.0, 0.0),
        min_delay_days=14.0,
    )
    returns = field_returns(pri, as_of=START + timedelta(days=400), seed=1, model=model)
    shorts = np.flatnonzero(pri.truth.latent_class == "particle_short")
    assert sorted(r.cell_index for r in returns) == shorts.tolist()
    for r in returns:
        built = pri.built_at(r.cell_index)
        assert r.failed_at - built == pytest.approx(timedelta(days=60), abs=timedelta(seconds=1))
        assert r.reported_at - r.failed_at == pytest.approx(
            timedelta(days=10), abs=timedelta(seconds=1)
        )
        assert r.serial == pri.serial[r.cell_index]
        assert r.mode in FAILURE_MODES
    # before the first report is due, nothing is known
    assert field_returns(pri, as_of=START + timedelta(days=69), seed=1, model=model) == []


def test_field_returns_arrive_late_grow_with_time_and_are_noisy(pri):
    early = field_returns(pri, as_of=START + timedelta(days=120), seed=5)
    late = field_returns(pri, as_of=START + timedelta(days=900), seed=5)
    assert {r.cell_index for r in early} < {r.cell_index for r in late}
    assert all(a == b for a, b in zip(early, late[: len(early)], strict=False))
    assert [r.reported_at for r in late] == sorted(r.reported_at for r in late)
    cls = pri.truth.latent_class
    returned = np.array([r.cell_index for r in late])
    # most latent defects never come back; particle shorts come back most often
    assert 0 < len(returned) < 0.5 * pri.truth.defective.sum()
    rate = {c: np.mean(np.isin(np.flatnonzero(cls == c), returned)) for c in DEFECT_CLASSES}
    assert rate["particle_short"] == max(rate.values())
    # delays are weeks to months, never within two weeks of build
    delays = [(r.failed_at - pri.built_at(r.cell_index)).days for r in late]
    assert min(delays) >= 14
    assert 30 < np.median(delays) < 365
    again = field_returns(pri, as_of=START + timedelta(days=900), seed=5)
    assert again == late


def test_good_cells_come_back_at_their_configured_rate(pri):
    assert FieldReturnModel().probability["none"] > 0  # labels are noisy by default
    model = FieldReturnModel(probability={"none": 0.01})
    returns = field_returns(pri, as_of=START + timedelta(days=3000), seed=2, model=model)
    good = int(np.sum(pri.truth.latent_class == "none"))
    # binomial(3920, 0.01): mean 39.2, sd 6.2
    assert abs(len(returns) - 0.01 * good) < 4 * 6.2
    assert all(pri.truth.latent_class[r.cell_index] == "none" for r in returns)
    assert {r.mode for r in returns} <= {"capacity_fade", "resistance_rise", "other"}


def test_field_returns_refuse_a_naive_date(pri):
    with pytest.raises(ValueError, match="timezone-aware"):
        field_returns(pri, as_of=datetime(2027, 1, 1), seed=1)  # noqa: DTZ001


def test_products_are_the_demo_plants_lines():
    assert PRODUCTS["prismatic_105ah"].line_code == "L1-PRI"
    assert PRODUCTS["cyl_21700"].line_code == "L2-CYL"
    assert CYL_21700.gauges["fill_mass_g"].nominal == 5.0
    assert PRISMATIC_105AH.gauges["weld_resistance_uohm"].usl == 25.0
    loading = PRISMATIC_105AH.gauges["cathode_loading_mg_cm2"]
    assert loading.half_width == pytest.approx(23.0 * 0.015)
    assert loading.deviation(23.0 * 1.015) == pytest.approx(1.0)
