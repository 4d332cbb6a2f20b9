"""Rational subgrouping: consecutive n, time windows and keys (coils, lots)."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spc.engine import Subgroup, Subgrouping, make_subgroups, phase1_subgroups


def spans(groups):
    return [(g.start, g.stop, g.label) for g in groups]


def test_consecutive_subgroups_leave_the_tail_open():
    values = np.arange(12.0)

    result = make_subgroups(values, spec=Subgrouping.consecutive(5))

    assert spans(result.subgroups) == [(0, 5, None), (5, 10, None)]
    assert [g.index for g in result.subgroups] == [0, 1]
    assert result.open == Subgroup(10, 12, None)
    assert result.short == ()
    closed = make_subgroups(values, spec=Subgrouping.consecutive(5), close=True)
    assert spans(closed.subgroups) == [(0, 5, None), (5, 10, None), (10, 12, None)]
    assert closed.open is None


def test_subgroups_by_coil_are_runs_of_the_key():
    coils = ["C-0412"] * 5 + ["C-0413"] + ["C-0414"] * 4 + ["C-0412"] * 3
    values = np.linspace(21.05, 21.15, len(coils))

    result = make_subgroups(values, spec=Subgrouping.by_key(), keys=coils)

    assert spans(result.subgroups) == [(0, 5, "C-0412"), (6, 10, "C-0414")]
    assert spans(result.short) == [(5, 6, "C-0413")]  # one cell: no range, not charted
    assert result.open == Subgroup(10, 13, "C-0412")  # the coil came back: a new subgroup
    arrays = result.arrays(values)
    assert [a.tolist() for a in arrays] == [values[0:5].tolist(), values[6:10].tolist()]
    assert phase1_subgroups("xbar_s", arrays).limits.baseline_size == 2


def test_time_windows_with_aware_datetimes():
    start = datetime(2025, 3, 4, 6, 0, tzinfo=UTC)
    offsets = [0, 10, 50, 65, 70, 130, 200, 230]
    times = [start + timedelta(seconds=s) for s in offsets]

    result = make_subgroups(
        np.ones(8), spec=Subgrouping.time_window(60, origin_s=start.timestamp()), timestamps=times
    )

    assert spans(result.subgroups) == [(0, 3, 0), (3, 5, 1)]
    assert spans(result.short) == [(5, 6, 2)]
    assert result.open == Subgroup(6, 8, 3)


def test_time_windows_take_seconds_and_datetime64():
    seconds = np.array([0.0, 1.0, 2.5, 3.0])
    stamps = np.array(["2025-03-04T06:00:00", "2025-03-04T06:00:01"], dtype="datetime64[s]")

    by_seconds = make_subgroups(np.ones(4), spec=Subgrouping.time_window(2.0), timestamps=seconds)
    by_datetime64 = make_subgroups(
        np.ones(2), spec=Subgrouping.time_window(60.0), timestamps=stamps, close=True
    )

    assert spans(by_seconds.subgroups) == [(0, 2, 0)]
    assert by_seconds.open == Subgroup(2, 4, 1)
    assert len(by_datetime64.subgroups) == 1


def test_bad_timestamps_and_keys_are_refused_naming_the_index():
    spec = Subgrouping.time_window(60)
    naive = [datetime(2025, 3, 4, 6, 0, tzinfo=UTC), datetime(2025, 3, 4, 6, 1)]  # noqa: DTZ001
    with pytest.raises(ValueError, match=r"timestamps\[1\] must be a timezone-aware datetime"):
        make_subgroups([1.0, 2.0], spec=spec, timestamps=naive)
    with pytest.raises(ValueError, match=r"timestamps\[2\] goes back in time \(5.0 after 9.0\)"):
        make_subgroups([1.0, 2.0, 3.0], spec=spec, timestamps=[1.0, 9.0, 5.0])
    with pytest.raises(ValueError, match=r"timestamps\[1\] is not a finite number"):
        make_subgroups([1.0, 2.0], spec=spec, timestamps=[1.0, float("nan")])
    with pytest.raises(ValueError, match="needs timestamps"):
        make_subgroups([1.0], spec=spec)
    with pytest.raises(ValueError, match=r"keys\[1\] must be a str or an int, got 2.5"):
        make_subgroups([1.0, 2.0], spec=Subgrouping.by_key(), keys=["a", 2.5])
    with pytest.raises(ValueError, match="values and keys differ in length"):
        make_subgroups([1.0, 2.0], spec=Subgrouping.by_key(), keys=["a"])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Subgrouping("hourly"), "unknown subgrouping 'hourly'"),
        (lambda: Subgrouping.consecutive(0), "need a size >= 1"),
        (lambda: Subgrouping.consecutive(3, min_size=4), "min_size 4 exceeds the subgroup size 3"),
        (lambda: Subgrouping.time_window(0), "needs window_s > 0"),
        (lambda: Subgrouping.by_key(min_size=0), "min_size must be at least 1"),
    ],
)
def test_bad_subgroupings_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_subgrouping_round_trips():
    for spec in (
        Subgrouping.consecutive(5),
        Subgrouping.time_window(600, origin_s=30),
        Subgrouping.by_key(),
    ):
        assert Subgrouping.from_dict(spec.to_dict()) == spec
