"""Formation features: K-value fit, pulse DCIR, dQ/dV peaks, robust z within groups, curve
storage, and per-cell against batch extraction on simulated cells."""

import zlib

import numpy as np
import pytest

from formation.cellsim import anode_ocp_v, cathode_ocp_v, simulate_plant
from formation.features import (
    FEATURE_NAMES,
    FEATURE_SET_VERSION,
    batch_features,
    cell_features,
    curve_pack,
    curve_unpack,
    dcir_mohm,
    dqdv,
    dqdv_peaks,
    k_value,
    resample_curve,
    robust_z,
)


@pytest.fixture(scope="module")
def plant():
    return simulate_plant(300, 77, product="prismatic_105ah", defect_rate=0.02)


@pytest.fixture(scope="module")
def curves(plant):
    return [c for _, c in plant.iter_curves()]


# --------------------------------------------------------------------------- K-value


def test_k_value_recovers_a_known_slope_exactly():
    t = np.array([0.0, 0.4, 1.1, 2.0, 2.6, 3.5, 4.2, 5.0, 6.1, 7.0])
    ocv = 3650.0 - 0.12 * t
    fit = k_value(t, ocv)
    assert fit.k_mv_per_day == pytest.approx(0.12, abs=1e-12)
    assert fit.se_mv_per_day == pytest.approx(0.0, abs=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.n == 10


def test_k_value_with_noise_is_within_its_standard_error():
    rng = np.random.default_rng(3)
    t = np.linspace(0.0, 14.0, 29)
    ks, ses = [], []
    for _ in range(400):
        ocv = 3650.0 - 0.08 * t + rng.normal(0.0, 0.05, t.size)
        fit = k_value(t, ocv)
        ks.append(fit.k_mv_per_day)
        ses.append(fit.se_mv_per_day)
    ks = np.array(ks)
    # unbiased, and the reported standard error matches the scatter of the estimates
    expected_se = 0.05 / np.sqrt(np.sum((t - t.mean()) ** 2))
    assert abs(ks.mean() - 0.08) < 3 * expected_se / np.sqrt(400)
    assert np.std(ks) == pytest.approx(expected_se, rel=0.1)
    assert np.median(ses) == pytest.approx(expected_se, rel=0.1)


def test_k_value_uses_every_reading_not_the_first_and_last():
    t = np.arange(8.0)
    ocv = 3650.0 - 0.1 * t
    ocv[0] += 0.5  # the first reading still relaxing
    fit = k_value(t, ocv)
    two_point = (ocv[0] - ocv[-1]) / (t[-1] - t[0])
    assert fit.k_mv_per_day == pytest.approx(-np.polyfit(t, ocv, 1)[0], rel=1e-12)
    assert fit.k_mv_per_day != pytest.approx(two_point, rel=0.05)
    assert fit.r2 < 1.0


def test_k_value_in_batch_skips_missing_readings():
    t = np.tile(np.arange(6.0), (3, 1))
    ocv = 3650.0 - np.array([[0.1], [0.2], [0.3]]) * t
    ocv[1, 2] = np.nan  # a missed scan
    ocv[2, 1:] = np.nan  # a cell that left the rack after one reading
    fit = k_value(t, ocv)
    assert fit.k_mv_per_day[:2] == pytest.approx([0.1, 0.2], abs=1e-12)
    assert fit.n.tolist() == [6, 5, 1]
    assert np.isnan(fit.k_mv_per_day[2])
    assert np.isnan(fit.se_mv_per_day[2])


def test_k_value_removes_a_temperature_swing_when_told_the_coefficient():
    t = np.linspace(0.0, 7.0, 15)
    temp = 25.0 + 1.5 * np.sin(2 * np.pi * t / 9.0)  # a slow swing of the rack
    ocv = 3650.0 - 0.05 * t + 0.08 * (temp - 25.0)
    raw = k_value(t, ocv, temperature_c=temp)
    corrected = k_value(t, ocv, temperature_c=temp, ocv_temp_coeff_mv_per_k=0.08)
    assert raw.k_mv_per_day != pytest.approx(0.05, abs=0.005)
    assert corrected.k_mv_per_day == pytest.approx(0.05, abs=1e-12)


def test_k_value_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="must match"):
        k_value(np.arange(5.0), np.arange(4.0))
    with pytest.raises(ValueError, match="temperature_c"):
        k_value(np.arange(5.0), np.arange(5.0), temperature_c=np.arange(3.0))


# --------------------------------------------------------------------------- DCIR


def _pulse(r0_ohm, r1_ohm, tau_s, i_a, v_rest=3.70, dt=1.0, n=11):
    t = 1000.0 + np.arange(n) * dt
    rel = t - t[0]
    v = v_rest + i_a * (r0_ohm + r1_ohm * (1 - np.exp(-rel / tau_s)))
    return t, v, np.full(n, i_a)


def test_dcir_is_delta_v_over_delta_i_at_the_stated_time():
    t, v, i = _pulse(0.50e-3, 0.20e-3, 5.0, -105.0)
    expected_10 = (0.50e-3 + 0.20e-3 * (1 - np.exp(-2.0))) * 1e3
    assert dcir_mohm(t, v, i, v_before_v=3.70, at_s=10.0) == pytest.approx(expected_10, rel=1e-12)
    # between samples the voltage is interpolated linearly
    v5, v6 = v[5], v[6]
    expected_55 = ((v5 + v6) / 2 - 3.70) / -105.0 * 1e3
    assert dcir_mohm(t, v, i, v_before_v=3.70, at_s=5.5) == pytest.approx(expected_55, rel=1e-12)
    # a charge pulse gives the same resistance
    t, v, i = _pulse(0.50e-3, 0.20e-3, 5.0, +105.0)
    assert dcir_mohm(t, v, i, v_before_v=3.70, at_s=10.0) == pytest.approx(expected_10, rel=1e-12)


def test_dcir_refuses_a_time_outside_the_pulse_and_a_pulse_without_current():
    t, v, i = _pulse(0.5e-3, 0.2e-3, 5.0, -105.0)
    with pytest.raises(ValueError, match="outside the pulse"):
        dcir_mohm(t, v, i, v_before_v=3.7, at_s=12.0)
    with pytest.raises(ValueError, match="outside the pulse"):
        dcir_mohm(t, v, i, v_before_v=3.7, at_s=0.0)
    with pytest.raises(ValueError, match="no current"):
        dcir_mohm(t, v, np.zeros_like(i), v_before_v=3.7, at_s=10.0)


# --------------------------------------------------------------------------- dQ/dV


def _true_ocv_peaks(plant, i):
    """Peaks of the cell's exact OCV (closed-form OCPs on a fine grid), smoothed like ICA."""
    t = plant.truth
    sei, qp = t.sei_loss_ah[i], t.cathode_capacity_ah[i]
    qn, y0 = t.anode_capacity_ah[i], t.cathode_y_pristine[i]
    z = np.linspace(sei + 0.02 * qn, sei + 0.95 * qn, 400_001)
    v = cathode_ocp_v(y0 - z / qp) - anode_ocp_v((z - sei) / qn)
    grid, d = dqdv(v, z - z[0], v_range=(3.30, 4.15))
    return dqdv_peaks(grid, d, n_peaks=4)


def test_dqdv_peaks_sit_at_the_graphite_staging_voltages_of_the_ocv(plant):
    q, v = plant.ocv_curve(0, n=3001)
    grid, d = dqdv(v, q, v_range=(3.30, 4.15))
    pos, height = dqdv_peaks(grid, d, n_peaks=4)
    true_pos, true_height = _true_ocv_peaks(plant, 0)
    assert np.all(np.isfinite(pos))
    assert np.abs(pos - true_pos).max() < 0.003
    assert np.allclose(height, true_height, rtol=0.03)
    # the staging peaks of this NMC811/graphite OCV: about 3.45, 3.64, 3.96 and 4.09 V
    assert np.abs(pos - [3.45, 3.64, 3.96, 4.09]).max() < 0.02


def test_dqdv_does_not_depend_on_the_sampling_or_the_voltage_noise(plant):
    q, v = plant.ocv_curve(0, n=3001)
    grid, d = dqdv(v, q, v_range=(3.30, 4.15))
    ref_pos, ref_height = dqdv_peaks(grid, d, n_peaks=3)
    # a cycler logging every 5 mV instead of every step of charge
    keep = np.concatenate([[0], np.flatnonzero(np.diff(np.floor(v / 0.005)) != 0) + 1])
    grid5, d5 = dqdv(v[keep], q[keep], v_range=(3.30, 4.15))
    pos5, height5 = dqdv_peaks(grid5, d5, n_peaks=3)
    assert np.abs(pos5 - ref_pos).max() < 0.004
    assert np.allclose(height5, ref_height, rtol=0.05)
    # and a noisy channel (1 mV rms)
    rng = np.random.default_rng(1)
    noisy = v + rng.normal(0.0, 1e-3, v.size)
    gridn, dn = dqdv(noisy, q, v_range=(3.30, 4.15))
    posn, heightn = dqdv_peaks(gridn, dn, n_peaks=3)
    assert np.abs(posn - ref_pos).max() < 0.005
    assert np.allclose(heightn, ref_height, rtol=0.08)


def test_simulated_discharge_peaks_sit_below_the_ocv_peaks_by_the_overpotential(plant, curves):
    for i in (0, 1, 2):
        dis = curves[i][3]
        grid, d = dqdv(dis.voltage_v, dis.capacity_ah, v_range=(3.30, 4.15))
        pos, _ = dqdv_peaks(grid, d, n_peaks=3)
        ocv_pos, _ = _true_ocv_peaks(plant, i)
        # C/3 = 35 A through about 1 mOhm: the two graphite peaks below 3.7 V shift 25-50 mV
        shift = ocv_pos[:2] - pos[:2]
        assert np.all((shift > 0.025) & (shift < 0.05)), shift
        chg = curves[i][9]  # C/3 charge from 10 % to 50 % SOC crosses the same two peaks
        grid, d = dqdv(chg.voltage_v, chg.capacity_ah, v_range=(3.30, 3.75))
        pos_c, _ = dqdv_peaks(grid, d, n_peaks=2)
        shift_c = pos_c - ocv_pos[:2]
        assert np.all((shift_c > 0.02) & (shift_c < 0.05)), shift_c


def test_dqdv_peaks_pad_with_nan_and_refuse_ragged_input():
    grid = np.linspace(3.3, 4.1, 161)
    one_peak = np.exp(-0.5 * ((grid - 3.6) / 0.02) ** 2)
    pos, height = dqdv_peaks(grid, one_peak, n_peaks=3)
    assert pos[0] == pytest.approx(3.6, abs=1e-3)
    assert height[0] == pytest.approx(1.0, abs=2e-3)
    assert np.isnan(pos[1:]).all()
    assert np.isnan(height[1:]).all()
    with pytest.raises(ValueError, match="same length"):
        dqdv(np.arange(5.0), np.arange(4.0))


# --------------------------------------------------------------------------- robust z


def test_robust_z_centres_each_channel_with_a_fixture_bias():
    rng = np.random.default_rng(8)
    channel = np.repeat(np.arange(20), 30)
    bias = np.where(np.arange(20) == 7, 0.15, 0.0)  # channel 7: 0.15 mOhm of contact
    dcir = 0.72 + rng.normal(0.0, 0.02, channel.size) + bias[channel]
    z_all = robust_z(dcir)
    z_ch = robust_z(dcir, channel)
    assert np.median(z_all[channel == 7]) > 5  # the whole channel looks bad plant-wide
    for ch in range(20):
        assert np.median(z_ch[channel == ch]) == pytest.approx(0.0, abs=1e-12)
    # scale: 1.4826 x MAD within the channel
    rows = channel == 7
    x = dcir[rows]
    mad = 1.4826 * np.median(np.abs(x - np.median(x)))
    assert z_ch[rows] == pytest.approx((x - np.median(x)) / mad, rel=1e-12)


def test_robust_z_scores_tiny_groups_against_the_population():
    x = np.concatenate([np.linspace(0.0, 10.0, 101), [50.0, 52.0]])
    groups = np.array(["big"] * 101 + ["tiny"] * 2)
    z = robust_z(x, groups, min_group_size=8)
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    assert z[-2:] == pytest.approx((x[-2:] - med) / mad, rel=1e-12)
    assert z[-1] > 10


def test_robust_z_falls_back_when_mad_is_zero():
    # 7 of 10 readings identical: MAD = 0, so the mean absolute deviation sets the scale
    x = np.array([5.0] * 7 + [5.3, 6.0, 9.0])
    z = robust_z(x)
    scale = 1.2533 * np.mean(np.abs(x - 5.0))
    assert z[:7] == pytest.approx(0.0)
    assert z[-1] == pytest.approx(4.0 / scale, rel=1e-12)
    # a column with no spread at all carries no information: zero everywhere
    assert robust_z(np.full(12, 3.3)).tolist() == [0.0] * 12


def test_robust_z_handles_matrices_nan_and_bad_groups():
    rng = np.random.default_rng(2)
    m = rng.normal(size=(40, 3))
    m[5, 1] = np.nan
    groups = np.repeat(["a", "b"], 20)
    z = robust_z(m, groups)
    assert z.shape == (40, 3)
    assert np.isnan(z[5, 1])
    assert np.isfinite(np.delete(z.ravel(), 5 * 3 + 1)).all()
    for col in range(3):
        assert z[:, col] == pytest.approx(robust_z(m[:, col], groups), nan_ok=True)
    with pytest.raises(ValueError, match="groups has shape"):
        robust_z(m, groups[:10])


# --------------------------------------------------------------------------- curve storage


def test_resample_curve_gives_a_fixed_size_copy():
    t = np.array([0.0, 10.0, 20.0, 25.0, 40.0])
    y = 3.0 + 0.01 * t
    tr, yr = resample_curve(t, y, n=9)
    assert tr.tolist() == np.linspace(0.0, 40.0, 9).tolist()
    assert yr == pytest.approx(3.0 + 0.01 * tr)
    tr, both = resample_curve(t, np.stack([y, 2 * y]), n=256)
    assert both.shape == (2, 256)
    assert both[1] == pytest.approx(2 * both[0])


@pytest.mark.parametrize(
    ("t", "y", "message"),
    [
        ([0.0, 10.0, 10.0, 30.0], [1.0, 2.0, 3.0, 4.0], "'t' is not strictly increasing"),
        ([0.0, 10.0, 5.0, 30.0], [1.0, 2.0, 3.0, 4.0], "'t' is not strictly increasing"),
        ([0.0, np.nan, 20.0, 30.0], [1.0, 2.0, 3.0, 4.0], "'t' has 1 NaN"),
        ([0.0, 10.0, 20.0, 30.0], [1.0, np.nan, 3.0, 4.0], "'y' has 1 NaN"),
        ([0.0, 10.0, 20.0, 30.0], [1.0, 2.0, 3.0], "last axis"),
    ],
)
def test_resample_curve_refuses_bad_input(t, y, message):
    with pytest.raises(ValueError, match=message):
        resample_curve(np.array(t), np.array(y))


def test_curve_pack_round_trips_and_compresses(curves):
    arrays = curves[0][0].arrays()  # the 10 h first charge, ~3,900 samples
    blob = curve_pack(arrays)
    back = curve_unpack(blob)
    assert list(back) == ["time_s", "voltage_v", "current_a", "capacity_ah", "temperature_c"]
    assert back["time_s"].dtype == np.float64
    assert np.array_equal(back["time_s"], arrays["time_s"])
    for name in ("voltage_v", "current_a", "capacity_ah", "temperature_c"):
        assert back[name].dtype == np.float32
        assert np.array_equal(back[name], arrays[name].astype(np.float32))
    raw = 4 * 4 * len(arrays["time_s"]) + 8 * len(arrays["time_s"])
    assert len(blob) < 0.6 * raw
    # the byte shuffle is what makes the floats compress
    plain = zlib.compress(
        arrays["time_s"].astype("<f8").tobytes()
        + np.stack([arrays[k] for k in list(arrays)[1:]]).astype("<f4").tobytes(),
        6,
    )
    assert len(blob) < len(plain)


def test_every_simulated_curve_packs(plant, curves):
    for cell in curves[:20]:
        for c in cell:
            back = curve_unpack(curve_pack(c.arrays()))
            assert np.array_equal(back["time_s"], c.time_s)
            assert len(back["voltage_v"]) == len(c.voltage_v)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"time_s": [0.0, 10.0, 20.0], "voltage_v": [3.6, np.nan, 3.7]}, "'voltage_v' has 1 NaN"),
        ({"time_s": [0.0, 10.0, 20.0], "current_a": [1.0, np.inf, 1.0]}, "'current_a' has 1 NaN"),
        ({"time_s": [0.0, 20.0, 10.0], "voltage_v": [3.6, 3.6, 3.7]}, "'time_s' is not strictly"),
        ({"test_time_s": [0.0, 5.0, 5.0]}, "'test_time_s' is not strictly"),
        ({"time_s": [0.0, 10.0, 20.0], "voltage_v": [3.6, 3.7]}, "'voltage_v' has 2 samples"),
        ({"time_s": [[0.0, 1.0]]}, "'time_s' must be 1-D"),
        ({"time_s": [0.0, 1.0], "charge_ah": [1e39, 1.0]}, "'charge_ah' has 1 NaN/inf"),
        ({}, "no arrays"),
    ],
)
def test_curve_pack_refuses_bad_arrays(arrays, message):
    with pytest.raises(ValueError, match=message):
        curve_pack({k: np.asarray(v) for k, v in arrays.items()})


def test_curve_pack_keeps_time_exact_where_float32_could_not():
    # a step's last sample 1 ms after the one before, 16 h into the run: float32 would merge
    t = np.array([57590.0, 57600.0, 57600.001])
    assert np.float32(t[1]) == np.float32(t[2])
    back = curve_unpack(curve_pack({"time_s": t, "voltage_v": np.array([4.19, 4.2, 4.2])}))
    assert np.array_equal(back["time_s"], t)


def test_curve_unpack_refuses_foreign_or_damaged_blobs():
    blob = curve_pack({"time_s": np.arange(5.0), "voltage_v": np.full(5, 3.65)})
    with pytest.raises(ValueError, match="bad magic"):
        curve_unpack(b"PK\x03\x04" + blob[4:])
    with pytest.raises(ValueError, match="corrupt"):
        curve_unpack(blob[:-6])
    with pytest.raises(ValueError, match="bad magic"):
        curve_unpack(b"")


# --------------------------------------------------------------------------- per cell / batch


def test_feature_set_is_named_and_versioned():
    assert FEATURE_SET_VERSION == "1.0.0"
    assert FEATURE_NAMES[:4] == ("q_charge_ah", "q_discharge_ah", "ice", "e_discharge_wh")
    assert "k_value_mv_per_day" in FEATURE_NAMES
    assert "r_low_soc_10s_mohm" in FEATURE_NAMES
    assert FEATURE_NAMES[-2:] == ("ica_peak3_v", "ica_peak3_ah_per_v")
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) == 22


def test_cell_and_batch_features_agree(plant, curves):
    table = batch_features(plant.steps, plant.aging, curves=curves)
    assert table.values.shape == (300, len(FEATURE_NAMES))
    for i in (0, 57, 299):
        one = cell_features(plant.step_records(i), curves[i], plant.ocv_log(i))
        assert one == pytest.approx(table.row(i), rel=1e-12, nan_ok=True)
    assert np.isfinite(table.values).all()


def test_features_from_records_equal_features_from_curves(plant, curves):
    with_curves = batch_features(plant.steps, plant.aging, curves=curves)
    records_only = batch_features(plant.steps, plant.aging)
    for name in ("dcir_1s_mohm", "dcir_10s_mohm", "r_low_soc_10s_mohm"):
        assert records_only.column(name) == pytest.approx(with_curves.column(name), rel=1e-9)
    assert np.isnan(records_only.column("ica_peak1_v")).all()


def test_features_of_one_cell_match_its_records(plant, curves):
    i = 12
    rec = plant.step_records(i)
    f = cell_features(rec, curves[i], plant.ocv_log(i))
    by_name = {r.name: r for r in rec}
    q_ch = by_name["form_cc"].charge_ah + by_name["form_cv"].charge_ah
    assert f["q_charge_ah"] == q_ch
    assert f["q_discharge_ah"] == by_name["cap_dis"].discharge_ah
    assert f["ice"] == by_name["cap_dis"].discharge_ah / q_ch
    assert (
        f["v_mean_discharge_v"] == by_name["cap_dis"].discharge_wh / by_name["cap_dis"].discharge_ah
    )
    assert f["cv_time_s"] == by_name["form_cv"].duration_s
    assert f["cv_tail_current_a"] == by_name["form_cv"].i_end_a
    assert f["dcir_10s_mohm"] == pytest.approx(by_name["pulse_mid_soc"].r_10s_mohm, rel=1e-9)
    assert f["r_low_soc_10s_mohm"] == pytest.approx(by_name["pulse_low_soc"].r_10s_mohm, rel=1e-9)
    log = plant.ocv_log(i)
    expected = -np.polyfit(log.days, log.ocv_v * 1e3, 1)[0]
    assert f["k_value_mv_per_day"] == pytest.approx(expected, rel=1e-9)
    assert f["ocv_end_mv"] == log.ocv_v[-1] * 1e3
    # the discharge energy over its capacity is the mean discharge voltage of NMC811
    assert 3.6 < f["v_mean_discharge_v"] < 3.7


def test_missing_inputs_give_nan_not_errors(plant):
    f = cell_features(plant.step_records(0))
    assert np.isnan(f["k_value_mv_per_day"])
    assert np.isnan(f["ica_peak1_v"])
    assert np.isfinite(f["dcir_10s_mohm"])
    empty = cell_features([])
    assert all(np.isnan(v) for v in empty.values())


def test_batch_refuses_curves_for_another_population(plant, curves):
    with pytest.raises(ValueError, match="curves has 299 cells"):
        batch_features(plant.steps, plant.aging, curves=curves[:299])
