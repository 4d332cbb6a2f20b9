"""Real-time evaluation: measurements -> MeasurementsRecorded -> spc_evaluate_task -> alarms.

Through the real path: station results through ``ingest_raw`` (or values through
``measurements_record``), the event delivered on commit, the Celery task run eagerly.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from genealogy.models import Measurement
from qms.events import subscribe
from qms.ingest.services import ingest_raw
from spc import queries
from spc.engine import Limits, Monitor, evaluate_stream
from spc.events import AlarmRaised
from spc.models import ChartCheckpoint, SpcAlarm
from spc.services import CHECKPOINT_EVERY, spc_evaluate
from tests.ingest.line21700 import cell, fill_result, raw
from tests.spc.conftest import SIGMA_FILL_G, episodes, normal

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]


@pytest.fixture
def raised():
    """AlarmRaised events as delivered (after commit)."""
    seen: list[AlarmRaised] = []

    def handler(evt: AlarmRaised) -> None:
        seen.append(evt)

    subscribe(AlarmRaised, handler, app_label="tests", description="collect alarms")
    yield seen
    from qms.events import _registry

    _registry[AlarmRaised] = [s for s in _registry[AlarmRaised] if s.handler is not handler]


def _engine_signals(limits_row, values):
    """What the engine alone says about the stream (the reference for the product path)."""
    config = queries.chart_config_for(limits_row.characteristic)
    mconfig = queries.monitor_config(config, Limits.from_dict(limits_row.engine_limits))
    return evaluate_stream(mconfig, np.asarray(values)).signals


def _positions() -> list[int]:
    return list(ChartCheckpoint.objects.order_by("position").values_list("position", flat=True))


def _alarm_points():
    return sorted(
        (
            a.statistic,
            a.rule,
            a.chart_index,
            a.first_measurement_id,
            [p["index"] for p in a.points],
            [p["measurement_id"] for p in a.points],
        )
        for a in SpcAlarm.objects.all()
    )


def _alarm_keys():
    return sorted(
        SpcAlarm.objects.values_list(
            "statistic", "rule", "chart_index", "trigger_measurement_id", "last_chart_index"
        )
    )


def test_a_lasting_shift_of_one_and_a_half_sigma_is_caught_by_the_cusum_within_a_handful(
    approved_fill, phase2_start, record, django_capture_on_commit_callbacks, raised
):
    """Given approved fill-mass limits (CC), when the check-weigher sends 40 in-control cells
    (seed 21) and then the fill mass shifts up by 1.5 sigma (seed 22) through the ingest
    path, then the CUSUM signals upward at the 8th shifted cell (its ARL at 1.5 sigma is
    5.2), as one critical alarm naming the cells of its run since the sum left zero, which
    grows while the shift lasts, published once."""
    before = normal(21, 40, 5.0, SIGMA_FILL_G)
    after = normal(22, 20, 5.0 + 1.5 * SIGMA_FILL_G, SIGMA_FILL_G)
    docs = [
        fill_result(
            cell(5000 + i),
            message_id=f"FILL-01:{5000 + i}",
            sent_at=phase2_start + timedelta(seconds=10 * i),
            mass_g=round(float(v), 5),
        )
        for i, v in enumerate([*before, *after])
    ]
    with django_capture_on_commit_callbacks(execute=True):
        outcomes = ingest_raw([raw(d) for d in docs])
    assert {o.status for o in outcomes} == {"accepted"}

    cusum = SpcAlarm.objects.filter(rule="cusum").order_by("chart_index")
    assert [(a.statistic, a.chart_index) for a in cusum][:1] == [("cusum_up", 47)]
    first = cusum[0]
    assert first.chart_index - 40 + 1 == 8  # the 8th shifted cell
    assert (first.severity, first.direction, first.status) == ("critical", 1, "open")
    assert first.rule_name == "CUSUM (k 0.75, h 3.34): sustained shift upward"
    shifted = list(
        Measurement.objects.filter(characteristic=approved_fill.characteristic)
        .filter(measured_at__gte=phase2_start)
        .order_by("measured_at", "pk")
    )
    assert first.trigger_measurement_id == shifted[47].pk
    last = first.last_chart_index
    assert last > 47  # the CUSUM signalled again without going back to zero
    assert first.last_measurement_id == shifted[last].pk
    run = [p["index"] for p in first.points]
    assert run == list(range(43, last + 1))  # the CUSUM left zero at the 4th shifted cell
    assert [p["measurement_id"] for p in first.points] == [m.pk for m in shifted[43 : last + 1]]
    assert not SpcAlarm.objects.filter(rule="cusum", chart_index__lt=40).exists()
    assert sorted(e.alarm_id for e in raised) == sorted(
        SpcAlarm.objects.values_list("pk", flat=True)
    )
    evt = next(e for e in raised if e.alarm_id == first.pk)
    assert (evt.rule, evt.statistic, evt.severity, evt.special_class) == (
        "cusum",
        "cusum_up",
        "critical",
        "cc",
    )
    assert evt.unit_ids == tuple(sorted(m.unit_id for m in shifted[43 : last + 1]))
    assert evt.measurement_ids == tuple(m.pk for m in shifted[43 : last + 1])
    assert evt.first_measured_at == shifted[43].measured_at


def test_the_product_raises_exactly_the_engines_signals_on_an_in_control_stream(
    approved_fill, phase2_start, record, django_capture_on_commit_callbacks
):
    """Given approved limits and the default configuration (Nelson rules 1-8 on X, rule 1
    on MR, the default CUSUM), when 600 in-control values arrive in batches of 50 (seed 31),
    then the alarms are exactly the engine's signals for the whole stream at once (a
    firing that continues the pattern of the last one extends its alarm): same rules,
    statistics and points, nothing added by batching or persistence.

    (In control, this configuration signals about every 50 values somewhere: docs/spc.md.)"""
    values = normal(31, 600, 5.0, SIGMA_FILL_G)
    for b in range(0, 600, 50):
        with django_capture_on_commit_callbacks(execute=True):
            record(
                approved_fill.characteristic,
                values[b : b + 50],
                start=phase2_start + timedelta(seconds=10 * b),
            )
    rows = list(
        Measurement.objects.filter(measured_at__gte=phase2_start).order_by("measured_at", "pk")
    )
    expected = episodes(_engine_signals(approved_fill, values), lambda i: rows[i].pk)
    assert expected  # the stream does signal now and then
    assert _alarm_keys() == expected
    heads = list(ChartCheckpoint.objects.order_by("position").values_list("position", flat=True))
    assert heads == [200, 400, 600]


def test_no_alarm_on_an_in_control_stream_with_the_default_configuration(
    approved_fill, phase2_start, record, django_capture_on_commit_callbacks
):
    """Given approved limits and the default configuration, when 300 in-control values
    arrive, then no alarm is raised and the evaluation has reached the last value.

    In control, the default configuration signals somewhere about every 50 values
    (docs/spc.md), so only about one stream in a thousand of 300 values stays quiet: seed 380
    is one, found by search. This checks that the product path adds nothing of its own on
    quiet data; the false-alarm rate is the engine's (the test above pins the equality)."""
    values = normal(380, 300, 5.0, SIGMA_FILL_G)
    assert not _engine_signals(approved_fill, values)
    with django_capture_on_commit_callbacks(execute=True):
        record(approved_fill.characteristic, values, start=phase2_start)
    assert not SpcAlarm.objects.exists()
    head = ChartCheckpoint.objects.order_by("-position").first()
    assert head.position == 300
    assert head.through_measurement_id == Measurement.objects.order_by("-measured_at").first().pk


def test_evaluating_twice_changes_nothing(approved_fill, phase2_start, record, raised):
    """Given 250 values evaluated once (alarms, checkpoints), when the task is delivered
    again (with and without the batch's earliest time), then the alarms are the same rows,
    nothing is published again, and the checkpoints hold the same states."""
    values = normal(41, 250, 5.0, SIGMA_FILL_G)
    values[100:110] += 2.0 * SIGMA_FILL_G
    record(approved_fill.characteristic, values, start=phase2_start)
    first = spc_evaluate(characteristic_id=approved_fill.characteristic_id)
    alarms = list(SpcAlarm.objects.order_by("pk").values())
    states = list(ChartCheckpoint.objects.order_by("position").values_list("position", "state"))
    assert first.new_alarm_ids and first.head_position == 250

    again = spc_evaluate(characteristic_id=approved_fill.characteristic_id)
    from_start = spc_evaluate(characteristic_id=approved_fill.characteristic_id, since=phase2_start)

    assert (again.values, again.new_alarm_ids) == (0, ())
    assert (from_start.restart_position, from_start.values, from_start.new_alarm_ids) == (
        0,
        250,
        (),
    )
    assert list(SpcAlarm.objects.order_by("pk").values()) == alarms
    assert (
        list(ChartCheckpoint.objects.order_by("position").values_list("position", "state"))
        == states
    )


def test_a_restart_from_a_checkpoint_equals_an_uninterrupted_evaluation(
    approved_fill, phase2_start, record
):
    """Given 700 values with a drift in the middle evaluated in seven deliveries of 100 (a
    worker that stops and another that resumes from the checkpoints), then the alarms and the
    last state equal those of one evaluation of all 700 values."""
    values = normal(51, 700, 5.0, SIGMA_FILL_G)
    values[300:360] += np.linspace(0, 2.5 * SIGMA_FILL_G, 60)
    char = approved_fill.characteristic
    for b in range(0, 700, 100):
        record(char, values[b : b + 100], start=phase2_start + timedelta(seconds=10 * b))
        spc_evaluate(characteristic_id=char.pk)
    stepwise = _alarm_keys()
    stepwise_points = _alarm_points()
    head = ChartCheckpoint.objects.order_by("-position").first()
    stepwise_state = head.state
    assert list(
        ChartCheckpoint.objects.values_list("position", flat=True).order_by("position")
    ) == [
        200,
        400,
        600,
        700,
    ]

    SpcAlarm.objects.all().delete()
    ChartCheckpoint.objects.all().delete()
    whole = spc_evaluate(characteristic_id=char.pk)

    assert whole.values == 700
    assert _alarm_keys() == stepwise
    # Runs that began before a restart name the same values (read back from the database).
    assert _alarm_points() == stepwise_points
    assert any(p[4][0] < p[2] - 2 for p in stepwise_points)  # some patterns span many values
    assert ChartCheckpoint.objects.order_by("-position").first().state == stepwise_state
    reference = Monitor.from_dict(stepwise_state)
    assert reference.state.points == 700


def test_a_late_value_re_evaluates_its_window(
    approved_fill, phase2_start, record, django_capture_on_commit_callbacks
):
    """Given 450 values evaluated (checkpoints at 200 and 400 and the head), when a cell's
    value measured between the 250th and 251st arrives late (well below the LCL), then the
    evaluation restarts from the checkpoint at 200, the late value takes its place in time
    (rule 1 fires on it: it joins that rule's alarm), and every alarm of the whole stream
    evaluated in time order is there. Alarms raised before it arrived stay on record
    (identified by rule, statistic and the value where they first fired)."""
    char = approved_fill.characteristic
    values = normal(61, 450, 5.0, SIGMA_FILL_G)
    with django_capture_on_commit_callbacks(execute=True):
        record(char, values, start=phase2_start)
    assert list(
        ChartCheckpoint.objects.values_list("position", flat=True).order_by("position")
    ) == [
        200,
        400,
        450,
    ]
    before = {(st, rule, trigger) for st, rule, _, trigger, _ in _alarm_keys()}
    late_at = phase2_start + timedelta(seconds=10 * 250 - 5)
    with django_capture_on_commit_callbacks(execute=True):
        (late,) = record(char, [5.0 - 4.5 * SIGMA_FILL_G], start=late_at)

    in_order = [*values[:250], 5.0 - 4.5 * SIGMA_FILL_G, *values[250:]]
    rows = list(Measurement.objects.order_by("measured_at", "pk"))
    rows = [m for m in rows if m.measured_at >= phase2_start]
    assert rows[250].pk == late.pk
    expected = {
        (st, rule, trigger)
        for st, rule, _, trigger, _ in episodes(
            _engine_signals(approved_fill, in_order), lambda i: rows[i].pk
        )
    }
    now = {(st, rule, trigger) for st, rule, _, trigger, _ in _alarm_keys()}
    assert expected <= now <= before | expected
    (on_late,) = [
        a
        for a in SpcAlarm.objects.filter(rule="nelson_1", statistic="x")
        if late.pk in {p["measurement_id"] for p in a.points}
    ]
    assert {p["index"] for p in on_late.points if p["measurement_id"] == late.pk} == {250}
    assert on_late.severity == "critical"
    assert list(
        ChartCheckpoint.objects.values_list("position", flat=True).order_by("position")
    ) == [
        200,
        400,
        451,
    ]
    redelivered = spc_evaluate(characteristic_id=char.pk, since=late_at)
    assert (redelivered.restart_position, redelivered.values) == (200, 251)
    assert redelivered.new_alarm_ids == ()


def test_values_before_the_limits_are_in_force_are_not_evaluated(
    fill, record, t0, django_capture_on_commit_callbacks
):
    """Without approved limits nothing is evaluated and nothing is enqueued."""
    with django_capture_on_commit_callbacks(execute=True):
        record(fill, normal(3, 30, 5.0, SIGMA_FILL_G), start=t0)
    outcome = spc_evaluate(characteristic_id=fill.pk)
    assert outcome.state == "no_limits"
    assert not SpcAlarm.objects.exists()
    assert not ChartCheckpoint.objects.exists()


def test_checkpoint_interval_is_the_documented_one():
    assert CHECKPOINT_EVERY == 200


def test_nan_is_refused_at_ingest_and_nothing_is_evaluated(
    approved_fill, record, phase2_start, django_capture_on_commit_callbacks
):
    from qms.exceptions import InvalidInput

    with pytest.raises(InvalidInput) as refused, django_capture_on_commit_callbacks(execute=True):
        record(approved_fill.characteristic, [5.01, float("nan")], start=phase2_start)
    assert refused.value.field == "rows[1].value"
    assert not Measurement.objects.filter(measured_at__gte=phase2_start).exists()
    assert not ChartCheckpoint.objects.exists()


def test_the_registry_lists_the_spc_reaction():
    from qms.events import subscriptions

    spc = [s for s in subscriptions() if s.app_label == "spc"]
    assert [(s.event_type.__name__, s.handler_path) for s in spc] == [
        ("MeasurementsRecorded", "spc.subscribers.evaluate_new_measurements")
    ]


def test_the_evaluation_reads_the_stream_in_a_bounded_number_of_queries(
    approved_fill, phase2_start, record
):
    """1,000 new values with a shift (alarms, five checkpoints): a fixed dozen queries,
    whatever the number of values, plus the alarm inserts in batches (with their history)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    values = normal(81, 1000, 5.0, SIGMA_FILL_G)
    values[500:] += 1.5 * SIGMA_FILL_G
    record(approved_fill.characteristic, values, start=phase2_start)
    with CaptureQueriesContext(connection) as queries_done:
        outcome = spc_evaluate(characteristic_id=approved_fill.characteristic_id)
    alarm_inserts = [
        q for q in queries_done if "INSERT INTO" in q["sql"] and "spcalarm" in q["sql"]
    ]
    batches = -(-len(outcome.new_alarm_ids) // 30)  # SQLite: 999 variables per statement
    assert (outcome.values, len(_positions())) == (1000, 5)
    assert len(outcome.new_alarm_ids) > 10
    assert len(alarm_inserts) <= 2 * batches
    assert len(queries_done) - len(alarm_inserts) <= 12


def test_a_pattern_that_goes_on_extends_its_alarm_and_a_later_one_is_new(
    approved_fill, phase2_start, record, django_capture_on_commit_callbacks
):
    """Rule 1 on X fires at the last cell of one batch and again at the first cells of the
    next: one alarm, extended (``AlarmExtended`` names the cells added); 40 quiet cells
    later it fires again: a new alarm."""
    from spc.events import AlarmExtended
    from spc.services import ALARM_GAP

    extended: list[AlarmExtended] = []

    def collect(evt):
        extended.append(evt)

    subscribe(AlarmExtended, collect, app_label="tests", description="collect")
    high = 5.0 + 3.6 * SIGMA_FILL_G  # above the UCL, below the USL
    char = approved_fill.characteristic
    try:
        with django_capture_on_commit_callbacks(execute=True):
            first = record(char, [5.0, 5.002, 4.998, high], start=phase2_start)
        with django_capture_on_commit_callbacks(execute=True):
            second = record(char, [high, 5.001, high], start=phase2_start + timedelta(seconds=40))
        quiet = [5.0 + 0.1 * SIGMA_FILL_G * (-1) ** i for i in range(ALARM_GAP + 15)]
        with django_capture_on_commit_callbacks(execute=True):
            third = record(char, [*quiet, high], start=phase2_start + timedelta(seconds=70))
    finally:
        from qms.events import _registry

        _registry[AlarmExtended] = [s for s in _registry[AlarmExtended] if s.handler is not collect]

    alarms = list(SpcAlarm.objects.filter(rule="nelson_1", statistic="x").order_by("chart_index"))
    assert [(a.chart_index, a.last_chart_index) for a in alarms] == [(3, 6), (47, 47)]
    assert [p["measurement_id"] for p in alarms[0].points] == [
        first[3].pk,
        second[0].pk,
        second[2].pk,
    ]
    assert alarms[0].trigger_measurement_id == first[3].pk
    assert alarms[0].last_measurement_id == second[2].pk
    assert alarms[1].trigger_measurement_id == third[-1].pk
    added = [e for e in extended if e.alarm_id == alarms[0].pk]
    assert [e.measurement_ids for e in added] == [(second[0].pk, second[2].pk)]
    reasons = [h.history_change_reason for h in alarms[0].history.order_by("history_id")]
    # (compliance's reaction links the hold it placed for the alarm in between)
    assert [r for r in reasons if not r.startswith("hold H-")] == [
        "raised by the SPC evaluation",
        "pattern goes on",
    ]
    assert alarms[0].hold_number and f"hold {alarms[0].hold_number}" in reasons
