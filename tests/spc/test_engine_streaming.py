"""Streaming evaluation: any chunking, single points, and a stop-and-restore in the middle
give what the whole stream evaluated at once gives."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spc.engine import (
    BEYOND_LIMITS,
    DEFAULT_CUSUM,
    NELSON,
    WESTERN_ELECTRIC,
    EwmaSpec,
    Monitor,
    MonitorConfig,
    NonFiniteValueError,
    StreamResult,
    Subgrouping,
    evaluate_attribute,
    evaluate_individuals,
    evaluate_stream,
    evaluate_subgroups,
    make_subgroups,
    phase1_individuals,
    standard_limits,
)

OCV = standard_limits("i_mr", centre=3620.0, sigma=2.0)  # open-circuit voltage, mV
OCV_CONFIG = MonitorConfig(OCV, rules=NELSON, ewma=EwmaSpec(), cusum=DEFAULT_CUSUM)
# In-control noise in sigma units with no run-rule pattern and no CUSUM/EWMA drift.
QUIET = [0.3, -1.2, -0.2, 0.1, 1.1, -0.1]


def ocv_values(seed, size, shift_at, shift, grid):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(size)
    u[shift_at:] += shift
    if grid:
        u = np.round(u * 4) / 4  # ties, points on the centre line, exact zone boundaries
    return 3620.0 + 2.0 * u


def assert_same(left: StreamResult, right: StreamResult):
    assert left.signals == right.signals
    assert set(left.series) == set(right.series)
    for name in left.series:
        assert np.array_equal(left.series[name].index, right.series[name].index), name
        assert np.array_equal(left.series[name].value, right.series[name].value), name
    assert left.subgroups == right.subgroups
    assert left.short == right.short


def restored(monitor):
    return Monitor.from_dict(json.loads(json.dumps(monitor.to_dict(), allow_nan=False)))


def run_chunked(config, values, sizes, restore_at, *, keys=None, times=None, flush=False):
    monitor = Monitor(config)
    results, start, number = [], 0, 0
    while start < len(values):
        size = sizes[number % len(sizes)] if sizes else len(values)
        stop = min(start + size, len(values))
        if stop - start == 1 and number % 2:
            results.append(
                monitor.push(
                    values[start],
                    key=None if keys is None else keys[start],
                    timestamp=None if times is None else times[start],
                )
            )
        else:
            results.append(
                monitor.push_many(
                    values[start:stop],
                    keys=None if keys is None else keys[start:stop],
                    timestamps=None if times is None else times[start:stop],
                )
            )
        if number == restore_at:
            monitor = restored(monitor)
        start, number = stop, number + 1
    if flush:
        results.append(monitor.flush())
    return StreamResult.concat(results), monitor


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 1400),
    shift_at=st.integers(0, 1400),
    shift=st.sampled_from([0.0, 1.0, 1.5, -2.5]),
    grid=st.booleans(),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8),
    restore_at=st.integers(0, 10),
)
def test_individuals_stream_equals_batch_in_any_chunking(
    seed, size, shift_at, shift, grid, sizes, restore_at
):
    values = ocv_values(seed, size, shift_at, shift, grid)

    whole = evaluate_stream(OCV_CONFIG, values)
    chunked, monitor = run_chunked(OCV_CONFIG, values, sizes, restore_at)

    assert_same(chunked, whole)
    # The chart signals are those of the Phase II evaluation of the whole series.
    chart = evaluate_individuals(OCV, values, rules=NELSON, dispersion_rules=BEYOND_LIMITS)
    assert [s for s in whole.signals if s.statistic in ("x", "mr")] == list(chart.signals)
    # And the state after the stream is the same, whichever way it came.
    batch_monitor = Monitor(OCV_CONFIG)
    batch_monitor.push_many(values)
    assert monitor.to_dict() == batch_monitor.to_dict()


def test_one_point_at_a_time_equals_one_chunk():
    values = ocv_values(7, 300, 150, 1.5, grid=False)
    monitor = Monitor(OCV_CONFIG)

    single = StreamResult.concat([monitor.push(v) for v in values.tolist()])

    assert_same(single, evaluate_stream(OCV_CONFIG, values))


LINE = standard_limits("xbar_s", centre=21.10, sigma=0.02, n=5)  # cell diameter, mm


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    coils=st.integers(1, 60),
    sizes=st.lists(st.integers(1, 90), min_size=1, max_size=6),
    restore_at=st.integers(0, 8),
)
def test_subgroups_by_coil_stream_equals_batch(seed, coils, sizes, restore_at):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, coils)
    keys = [f"C-{400 + i}" for i, n in enumerate(lengths) for _ in range(n)]
    values = 21.10 + 0.02 * rng.standard_normal(len(keys)) + 0.01 * (rng.random(len(keys)) > 0.9)
    config = MonitorConfig(LINE, ewma=EwmaSpec(lam=0.1, L=2.814), subgrouping=Subgrouping.by_key())

    whole = evaluate_stream(config, values, keys=keys, close=True)
    chunked, _ = run_chunked(config, values, sizes, restore_at, keys=keys, flush=True)

    assert_same(chunked, whole)
    groups = make_subgroups(values, spec=Subgrouping.by_key(), keys=keys, close=True)
    assert [(g.start, g.stop, g.label, g.index) for g in whole.subgroups] == [
        (g.start, g.stop, g.label, g.index) for g in groups.subgroups
    ]
    assert whole.short == groups.short
    if groups.subgroups:
        chart = evaluate_subgroups(LINE, groups.arrays(values))
        assert [s for s in whole.signals if s.statistic in ("xbar", "s")] == list(chart.signals)
        assert np.array_equal(whole.series["xbar"].value, chart.series["xbar"].value)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 400),
    sizes=st.lists(st.integers(1, 120), min_size=1, max_size=6),
    restore_at=st.integers(0, 8),
)
def test_time_window_stream_equals_batch(seed, size, sizes, restore_at):
    rng = np.random.default_rng(seed)
    times = 1_741_068_000.0 + np.cumsum(rng.exponential(20.0, size))
    values = 21.10 + 0.02 * rng.standard_normal(size)
    spec = Subgrouping.time_window(300.0, origin_s=1_741_068_000.0)
    config = MonitorConfig(
        standard_limits("xbar_r", centre=21.10, sigma=0.02, n=5), subgrouping=spec
    )

    whole = evaluate_stream(config, values, timestamps=times)
    chunked, _ = run_chunked(config, values, sizes, restore_at, times=times)

    assert_same(chunked, whole)


def test_consecutive_subgroups_close_as_soon_as_full():
    config = MonitorConfig(LINE, cusum=None)
    monitor = Monitor(config)

    first = monitor.push_many([21.10, 21.12, 21.08])
    second = monitor.push_many([21.11, 21.09, 21.20])

    assert first.subgroups == ()
    assert [(g.start, g.stop, g.index) for g in second.subgroups] == [(0, 5, 0)]
    assert second.series["xbar"].value.tolist() == pytest.approx([21.10])
    assert monitor.state.open_values == [21.20]
    assert [(g.start, g.stop) for g in monitor.flush().short] == [(5, 6)]


def test_drift_is_caught_by_the_default_cusum_where_it_starts():
    u = np.array((QUIET * 60)[:300] + [q + 1.5 for q in (QUIET * 10)[:40]])
    values = 3620.0 + 2.0 * u
    monitor = Monitor(MonitorConfig(OCV, rules=NELSON))

    before = monitor.push_many(values[:300])
    after = monitor.push_many(values[300:])

    assert before.signals == ()
    cusum = [s for s in after.signals if s.rule == "cusum"]
    assert (cusum[0].index, cusum[0].statistic, cusum[0].direction) == (304, "cusum_up", 1)
    assert cusum[0].involved == (300, 301, 302, 303, 304)
    assert after.series["cusum_up"].value[4] == pytest.approx(3.85, abs=1e-9)


def test_attribute_stream_equals_batch():
    limits = standard_limits("p", centre=0.02, n=400)  # formation rejects per tray batch
    rng = np.random.default_rng(12)
    sizes = rng.integers(380, 420, 200)
    counts = rng.binomial(sizes, 0.02)
    counts[150:] = rng.binomial(sizes[150:], 0.035)
    monitor = Monitor(MonitorConfig(limits, cusum=None))

    parts = [monitor.push_counts(counts[i : i + 37], sizes[i : i + 37]) for i in range(0, 200, 37)]

    batch = evaluate_attribute(limits, counts, sizes)
    streamed = StreamResult.concat(parts)
    assert streamed.signals == batch.signals
    assert np.array_equal(streamed.series["p"].value, batch.series["p"].value)
    assert streamed.signals  # the shift shows


def test_non_finite_values_are_refused_and_leave_the_state_unchanged():
    monitor = Monitor(OCV_CONFIG)
    monitor.push_many([3620.0, 3621.0, 3619.0])
    before = monitor.to_dict()

    with pytest.raises(NonFiniteValueError, match=r"values\[4\] is not a finite number \(nan\)"):
        monitor.push_many([3620.5, float("nan")])
    with pytest.raises(NonFiniteValueError, match=r"values\[3\] is not a finite number \(inf\)"):
        monitor.push(float("inf"))
    with pytest.raises(ValueError, match=r"values\[3\] must be a number"):
        monitor.push("3620")  # type: ignore[arg-type]

    assert monitor.to_dict() == before


def test_bad_subgroup_input_leaves_the_state_unchanged():
    monitor = Monitor(MonitorConfig(LINE, subgrouping=Subgrouping.by_key()))
    monitor.push_many([21.1, 21.2], keys=["C-1", "C-1"])
    before = monitor.to_dict()

    with pytest.raises(ValueError, match=r"keys\[3\] must be a str or an int"):
        monitor.push_many([21.1, 21.2], keys=["C-2", None])

    assert monitor.to_dict() == before


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: MonitorConfig(standard_limits("c", centre=4.0)),
            "detectors assume normal data",
        ),
        (
            lambda: MonitorConfig(phase1_individuals([3.6] * 30).limits),
            "sigma = 0, so EWMA and CUSUM cannot be scaled",
        ),
        (
            lambda: MonitorConfig(OCV, subgrouping=Subgrouping.consecutive(5)),
            "a i_mr chart takes no subgrouping",
        ),
        (
            lambda: MonitorConfig(LINE, subgrouping=Subgrouping.by_key(min_size=1)),
            "needs subgroups of at least 2 values",
        ),
    ],
)
def test_bad_monitor_configurations_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_state_is_small_plain_json_and_versioned():
    monitor = Monitor(MonitorConfig(OCV, rules=WESTERN_ELECTRIC, ewma=EwmaSpec()))
    monitor.push_many(ocv_values(3, 5000, 0, 0.0, grid=False))

    text = json.dumps(monitor.to_dict(), allow_nan=False)

    assert len(text) < 2000
    assert json.loads(text)["state"]["points"] == 5000
    with pytest.raises(ValueError, match="unknown monitor state format 2"):
        Monitor.from_dict({**json.loads(text), "format": 2})
    with pytest.raises(ValueError, match="takes counts"):
        Monitor(MonitorConfig(standard_limits("c", centre=4.0), cusum=None)).push_many([1.0])
