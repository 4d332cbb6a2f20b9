"""EWMA and tabular CUSUM detectors against Montgomery's worked example (section 9.1)."""

import json

import numpy as np
import pytest

from spc.engine import DEFAULT_CUSUM, CusumSpec, DetectorState, EwmaSpec, run_detectors
from spc.engine.detectors import spec_from_dict
from tests.spc.montgomery import CUSUM_DATA, CUSUM_UPPER


def run(values, *, ewma=None, cusum=None, mu=10.0, sigma=1.0):
    state = DetectorState.start(cusum)
    u = (np.asarray(values) - mu) / sigma
    series, signals = run_detectors(u, ewma=ewma, cusum=cusum, state=state)
    return series, signals, state


def test_tabular_cusum_reproduces_montgomery_table_9_2():
    spec = CusumSpec(k=0.5, h=5.0, reset_on_signal=False)

    series, signals, _ = run(CUSUM_DATA, cusum=spec)

    assert np.round(series["cusum_up"], 2).tolist() == CUSUM_UPPER
    # C-_1 = max(0, 9.5 - 9.45) = 0.05, C-_2 = 0.05 + 9.5 - 7.99 = 1.56, C-_3 = 1.77.
    assert np.round(series["cusum_down"][:3], 2).tolist() == [0.05, 1.56, 1.77]
    # First signal at period 29 (index 28), C+ = 5.28 > H = 5; N+ = 7: the shift began
    # after period 22 (the first involved point is period 23, index 22).
    first = signals[0]
    assert (first.rule, first.statistic, first.index, first.direction) == (
        "cusum",
        "cusum_up",
        28,
        1,
    )
    assert first.value == pytest.approx(5.28, abs=0.005)
    assert first.involved == tuple(range(22, 29))
    assert [s.index for s in signals] == [28, 29]  # no restart: the sum stays above H


def test_cusum_restarts_after_a_signal_by_default():
    spec = CusumSpec(k=0.5, h=5.0)

    series, signals, state = run(CUSUM_DATA, cusum=spec)

    assert [s.index for s in signals] == [28]
    assert series["cusum_up"][28] == pytest.approx(5.28, abs=0.005)  # the value that signalled
    assert series["cusum_up"][29] == pytest.approx(10.52 - 10.5, abs=1e-12)  # restarted at 0
    assert state.cusum_up == pytest.approx(0.02, abs=1e-12)
    assert state.count == 30


def test_fast_initial_response_starts_at_the_head_start():
    spec = CusumSpec(k=0.5, h=5.0, head_start=2.5)

    series, _, _ = run([10.0, 12.0], cusum=spec)

    assert series["cusum_up"].tolist() == [2.0, 3.5]
    assert series["cusum_down"].tolist() == [2.0, 0.0]


def test_one_sided_cusum_keeps_only_its_side():
    series, signals, _ = run([7.0, 7.0, 7.0], cusum=CusumSpec(k=0.5, h=4.0, sides="upper"))

    assert set(series) == {"cusum_up"}
    assert signals == []


def test_ewma_first_values_and_asymptotic_limit():
    spec = EwmaSpec(lam=0.1, L=2.7, reset_on_signal=False)

    series, signals, _ = run(CUSUM_DATA, ewma=spec)

    z = 10.0 + series["ewma"]
    # Montgomery's EWMA example (section 9.2, same data): z1 = 0.1 (9.45) + 0.9 (10) = 9.945,
    # z2 = 9.7495.
    assert z[0] == pytest.approx(9.945, abs=1e-12)
    assert z[1] == pytest.approx(9.7495, abs=1e-12)
    assert spec.limit == pytest.approx(2.7 * np.sqrt(0.1 / 1.9), abs=1e-15)
    # z28 = 10.5731 stays below 10 + 0.6194; z29 = 10.6468 is beyond.
    assert z[27] == pytest.approx(10.5731, abs=5e-5)
    assert [(s.rule, s.index, s.direction) for s in signals] == [("ewma", 28, 1), ("ewma", 29, 1)]


def test_detector_state_and_specs_round_trip():
    state = DetectorState(ewma=0.25, cusum_up=1.5, cusum_down=0.0, run_up=3, run_down=0, count=17)
    assert DetectorState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    for spec in (DEFAULT_CUSUM, EwmaSpec(lam=0.05, L=2.6), CusumSpec(0.5, 4.0, 2.0, "lower")):
        assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_default_detector_parameters():
    assert (DEFAULT_CUSUM.k, DEFAULT_CUSUM.h, DEFAULT_CUSUM.head_start) == (0.75, 3.34, 0.0)
    assert DEFAULT_CUSUM.sides == "both"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CusumSpec(k=-0.1), "k must be a finite number >= 0"),
        (lambda: CusumSpec(h=0.0), "h must be a finite number > 0"),
        (lambda: CusumSpec(h=4.0, head_start=4.0), r"head_start must be within \[0, h\)"),
        (lambda: CusumSpec(sides="up"), "sides must be 'both', 'upper' or 'lower'"),
        (lambda: EwmaSpec(lam=0.0), r"lam must be within \(0, 1\]"),
        (lambda: EwmaSpec(L=float("nan")), "L must be a finite number > 0"),
        (lambda: spec_from_dict({"kind": "shiryaev"}), "unknown detector kind 'shiryaev'"),
    ],
)
def test_bad_detector_settings_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()
