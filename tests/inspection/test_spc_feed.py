"""Vision defect counts per 10 m of coil into SPC (``inspection.spc_feed``): one c-chart
characteristic per defect class and camera, one count per class for every 10 m window a
camera inspected whole, zeros included; uninspected windows left out; each window counted
once, late frames too; then the c chart: limits from a baseline of windows, approved, and a
burst of particles in one window raising the alarm.

Coil CC-260401-007 (2,000 m) runs under the cathode coater's camera cam-c1. Results reach
the store through the ingest (``ingest_raw``) or, for the feed's own rules, as rows written
directly; each stored result is then given to ``window_counts_record`` as
``inspection_record`` does (a repeat where it did already: counts are written once).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import numpy as np
import pytest
from django.utils import timezone

from genealogy.choices import UnitKind
from genealogy.models import Measurement
from genealogy.services import unit_create
from inspection import spc_feed
from inspection.choices import Decision, Substrate, Verdict
from inspection.models import Defect, InspectionResult, InspectionStation
from inspection.schema import DEFECT_CLASSES
from qms.ingest.services import ingest_raw
from qms.models import Characteristic
from spc.choices import ChartType
from spc.models import ChartConfig, SpcAlarm
from spc.services import chart_config_update, limits_approve, limits_propose
from tests.inspection.payloads import crop, defect, envelope, payload, png, raw

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]

COIL = "CC-260401-007"
PARTICLE_PNG = png(crop("particle"))
CLASSES = list(DEFECT_CLASSES)


@pytest.fixture
def coil(plant, quality):
    return unit_create(
        kind=UnitKind.COIL, serial=COIL, line=plant.line, length_m=2000.0, actor=quality
    )


@pytest.fixture
def bare_camera(plant):
    """The coater's camera without a model: enough for results written as rows."""
    return InspectionStation.objects.create(
        station=plant.stations["coat-c"], camera="cam-c1", substrate=Substrate.COATING
    )


@pytest.fixture
def t0() -> datetime:
    return (timezone.now() - timedelta(hours=3)).replace(microsecond=0)


def row(camera, coil, start_m, end_m, *, n, at, verdict=Verdict.OK, defects=()):
    """A stored result (and its defects: ``(class, md_m, decision)``) written as rows."""
    result = InspectionResult.objects.create(
        camera=camera,
        coil=coil,
        frame_id=n,
        coil_start_m=start_m,
        coil_end_m=end_m,
        verdict=Verdict.DEFECT if defects else verdict,
        defect_count=len(defects),
        acquired_at=at,
        source_message_id=f"cam-c1:{n:06d}",
    )
    Defect.objects.bulk_create(
        Defect(
            result=result,
            cls=cls,
            confidence=0.93,
            probabilities={cls: 0.93},
            x0_px=2000,
            y0_px=500,
            x1_px=2012,
            y1_px=512,
            area_px=110,
            md_m=md_m,
            cd_mm=40.0,
            decision=decision,
        )
        for cls, md_m, decision in defects
    )
    return result


def counts_at(coil, position_m: float) -> dict[str, float]:
    """The recorded count of each class at a window start, by class."""
    found = Measurement.objects.filter(unit=coil, position_m=position_m).values_list(
        "characteristic__code", "value"
    )
    return {code.split("-")[-3]: value for code, value in found}


def zeros(**counts) -> dict[str, float]:
    return {cls: float(counts.get(cls, 0)) for cls in CLASSES}


# ---------------------------------------------------------------------- characteristics


def test_characteristics_ensure_makes_one_c_chart_per_defect_class_once(
    bare_camera, plant, django_capture_on_commit_callbacks
):
    # The c charts are configured after commit, by compliance, through SPC.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        made = spc_feed.characteristics_ensure(camera=bare_camera)
    with django_capture_on_commit_callbacks(execute=True) as again_callbacks:
        again = spc_feed.characteristics_ensure(camera=bare_camera)
    assert (len(callbacks), len(again_callbacks)) == (1, 0)  # configured once

    assert [c.pk for c in again] == [c.pk for c in made]
    assert [c.code for c in made] == [f"vision-cam-c1-{cls}-per-10m" for cls in CLASSES]
    particle = Characteristic.objects.get(code="vision-cam-c1-particle-per-10m")
    assert (
        particle.station,
        particle.name,
        particle.unit,
        particle.nominal,
        particle.lsl,
        particle.usl,
        particle.measurement_method,
        particle.sample_frequency,
        particle.special_class,
    ) == (
        plant.stations["coat-c"],
        "Vision cam-c1: particle defects per 10 m",
        "defects/10 m",
        0.0,
        0.0,
        None,
        "inline line-scan vision, 100 %",
        "every 10 m of coil",
        "none",
    )
    assert "particle defects per 10 m at cam-c1" in particle.reaction_plan
    configs = ChartConfig.objects.filter(characteristic__in=made).values_list(
        "chart_type", "subgroup_size", "rule_preset", "rules", "cusum_enabled", "ewma_enabled"
    )
    assert list(configs) == [("c", 1, "custom", [1], False, False)] * len(CLASSES)
    assert Characteristic.objects.count() == len(CLASSES) + 2  # the plant's two
    assert [h.history_change_reason for h in particle.history.all()] == [
        "defect counts of gf1/l1-pri/coat-c/cam-c1 for SPC"
    ]


def test_a_chart_the_quality_engineer_changed_is_left_as_it_is(
    bare_camera, quality, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        made = spc_feed.characteristics_ensure(camera=bare_camera)
    particle = made[CLASSES.index("particle")]
    config = ChartConfig.objects.get(characteristic=particle)
    chart_config_update(config=config, actor=quality, reason="runs too", rules=[1, 2])

    with django_capture_on_commit_callbacks(execute=True):
        spc_feed.characteristics_ensure(camera=bare_camera)

    config.refresh_from_db()
    assert (config.chart_type, config.rules) == ("c", [1, 2])


def test_a_long_camera_name_gives_codes_within_48_characters_that_stay_apart():
    long_a = "cathode-coater-2-after-dryer-top-side-lane-3-a"
    long_b = "cathode-coater-2-after-dryer-top-side-lane-3-b"

    codes = {
        spc_feed.characteristic_code(name, cls) for name in (long_a, long_b) for cls in CLASSES
    }

    assert len(codes) == 2 * len(CLASSES)
    assert max(len(code) for code in codes) == 48
    code = spc_feed.characteristic_code(long_a, "particle")
    assert code.startswith("vision-cathode-coater-2") and code.endswith("-particle-per-10m")
    assert spc_feed.characteristic_code("cam-c1", "particle") == "vision-cam-c1-particle-per-10m"


# -------------------------------------------------------------------------- the windows


def test_a_frame_that_completes_no_window_costs_no_query(
    bare_camera, coil, t0, django_assert_num_queries
):
    result = row(bare_camera, coil, 1503.0, 1503.02048, n=1, at=t0)

    with django_assert_num_queries(0):
        assert spc_feed.window_counts_record(result=result) == []


def test_a_window_inspected_whole_gives_one_count_per_class_zeros_included(
    bare_camera, coil, t0, django_assert_max_num_queries
):
    """[1500, 1510) in three frames: two particles, a void, a particle the model ignored;
    a scratch at 1510.0 m belongs to the next window."""
    row(
        bare_camera,
        coil,
        1500.0,
        1504.0,
        n=1,
        at=t0,
        defects=[("particle", 1500.0, Decision.QUARANTINE), ("void", 1502.5, Decision.REVIEW)],
    )
    row(
        bare_camera,
        coil,
        1504.0,
        1509.98,
        n=2,
        at=t0 + timedelta(seconds=1),
        defects=[("particle", 1507.1, Decision.IGNORE)],
    )
    last = row(
        bare_camera,
        coil,
        1509.98,
        1510.00048,
        n=3,
        at=t0 + timedelta(seconds=2),
        defects=[("particle", 1509.9999, Decision.STOP), ("scratch", 1510.0, Decision.REVIEW)],
    )
    spc_feed.characteristics_ensure(camera=bare_camera)

    with django_assert_max_num_queries(10):
        ids = spc_feed.window_counts_record(result=last)

    written = Measurement.objects.filter(unit=coil).order_by("pk")
    assert ids == list(written.values_list("pk", flat=True))
    assert counts_at(coil, 1500.0) == zeros(particle=2, void=1)
    assert {
        (m.measured_at, m.position_m, m.source_message_id, m.station_id, m.in_spec) for m in written
    } == {(last.acquired_at, 1500.0, "cam-c1:000003", bare_camera.station_id, True)}
    assert spc_feed.window_counts_record(result=last) == []
    assert Measurement.objects.count() == len(CLASSES)


def test_a_window_with_an_uninspected_metre_is_not_counted(bare_camera, coil, t0):
    row(bare_camera, coil, 1500.0, 1505.0, n=1, at=t0)
    row(bare_camera, coil, 1505.0, 1505.5, n=2, at=t0, verdict=Verdict.UNINSPECTED)
    first = row(bare_camera, coil, 1505.5, 1510.0, n=3, at=t0)
    row(bare_camera, coil, 1510.0, 1515.0, n=4, at=t0 + timedelta(seconds=5))
    second = row(bare_camera, coil, 1515.0, 1520.0, n=5, at=t0 + timedelta(seconds=6))

    assert spc_feed.window_counts_record(result=first) == []
    assert len(spc_feed.window_counts_record(result=second)) == len(CLASSES)

    assert counts_at(coil, 1500.0) == {}
    assert counts_at(coil, 1510.0) == zeros()


def test_a_frame_over_two_window_ends_counts_both(bare_camera, coil, t0):
    row(bare_camera, coil, 0.0, 5.0, n=1, at=t0, defects=[("edge", 4.0, Decision.REVIEW)])
    long = row(
        bare_camera,
        coil,
        5.0,
        20.0,
        n=2,
        at=t0 + timedelta(seconds=1),
        defects=[("edge", 9.5, Decision.REVIEW), ("crack", 19.2, Decision.QUARANTINE)],
    )

    ids = spc_feed.window_counts_record(result=long)

    assert len(ids) == 2 * len(CLASSES)
    assert (counts_at(coil, 0.0), counts_at(coil, 10.0)) == (zeros(edge=2), zeros(crack=1))


def test_a_frame_stored_twice_counts_its_defects_once(bare_camera, coil, t0):
    row(bare_camera, coil, 0.0, 5.0, n=1, at=t0, defects=[("pinhole", 1.0, Decision.REVIEW)])
    row(bare_camera, coil, 0.0, 5.0, n=1, at=t0, defects=[("pinhole", 1.0, Decision.REVIEW)])
    last = row(bare_camera, coil, 5.0, 10.0, n=2, at=t0 + timedelta(seconds=1))

    spc_feed.window_counts_record(result=last)

    assert counts_at(coil, 0.0) == zeros(pinhole=1)


def test_a_frame_that_comes_late_is_counted_when_a_later_window_completes(bare_camera, coil, t0):
    """The middle frame of [10, 20) arrives after the frame that ends the window (another
    ingest worker was slower): [10, 20) is counted when [20, 30) completes, at the time
    of the frame that ended it."""
    first = row(bare_camera, coil, 0.0, 10.0, n=1, at=t0)
    assert len(spc_feed.window_counts_record(result=first)) == len(CLASSES)
    end = row(bare_camera, coil, 15.0, 20.0, n=3, at=t0 + timedelta(seconds=2))
    assert spc_feed.window_counts_record(result=end) == []
    row(
        bare_camera,
        coil,
        10.0,
        15.0,
        n=2,
        at=t0 + timedelta(seconds=1),
        defects=[("wrinkle", 12.0, Decision.REVIEW)],
    )
    next_end = row(bare_camera, coil, 20.0, 30.0, n=4, at=t0 + timedelta(seconds=3))

    ids = spc_feed.window_counts_record(result=next_end)

    assert len(ids) == 2 * len(CLASSES)  # [10, 20) looked at again, and [20, 30)
    assert counts_at(coil, 10.0) == zeros(wrinkle=1)
    late = Measurement.objects.filter(unit=coil, position_m=10.0)
    assert set(late.values_list("measured_at", "source_message_id")) == {
        (end.acquired_at, "cam-c1:000003")
    }


def test_a_switched_off_characteristic_gets_no_counts(bare_camera, coil, t0):
    characteristics = spc_feed.characteristics_ensure(camera=bare_camera)
    Characteristic.objects.filter(pk=characteristics[CLASSES.index("edge")].pk).update(
        is_active=False
    )
    last = row(bare_camera, coil, 0.0, 10.0, n=1, at=t0)

    ids = spc_feed.window_counts_record(result=last)

    assert len(ids) == len(CLASSES) - 1
    assert set(counts_at(coil, 0.0)) == set(CLASSES) - {"edge"}


def test_another_camera_on_the_same_coil_counts_for_itself(bare_camera, coil, plant, t0):
    other = InspectionStation.objects.create(
        station=plant.stations["coat-c"], camera="cam-c2", substrate=Substrate.COATING
    )
    row(bare_camera, coil, 0.0, 6.0, n=1, at=t0)
    last = row(other, coil, 6.0, 10.0, n=1, at=t0)

    assert spc_feed.window_counts_record(result=last) == []
    assert not Measurement.objects.exists()


# ------------------------------------------------------- through the ingest, into SPC


def frame(camera, n: int, start_m: float, end_m: float, at: datetime, defects=(), **extra):
    body = payload(
        camera.model,
        start_m=start_m,
        frame_id=n,
        defects=defects,
        coil_end_m=end_m,
        acquired_at=at.isoformat(),
        **extra,
    )
    return envelope(body, coil=COIL, message_id=f"cam-c1:{n:06d}", sent_at=at)


def particle(md_m: float, decision: str = "review") -> dict:
    return defect(md_m=md_m, cls="particle", decision=decision, image=PARTICLE_PNG)


@pytest.fixture
def store(committed):
    """Store frames through the ingest, then the feed (as ``inspection_record`` ends)."""

    def run(docs) -> list:
        def block():
            outcomes = []
            for doc in docs:
                [outcome] = ingest_raw([raw(doc)])
                assert outcome.status == "accepted", outcome.reason
                result = InspectionResult.objects.get(source_message_id=doc["message_id"])
                spc_feed.window_counts_record(result=result)
                outcomes.append(outcome)
            return outcomes

        return committed(block)

    return run


def coil_frames(camera, counts, *, first_m: float, first_n: int, start: datetime, burst=None):
    """Two frames of 5 m per window; window i carries ``counts[i]`` particles (and an
    ignored one), frames 30 s apart from ``start``."""
    docs = []
    for i, count in enumerate(counts):
        w0 = first_m + 10.0 * i
        spots = [w0 + 0.3 + 9.3 * k / max(count, 1) for k in range(count)]
        halves = ([s for s in spots if s < w0 + 5.0], [s for s in spots if s >= w0 + 5.0])
        for half, (lo, hi) in enumerate(((w0, w0 + 5.0), (w0 + 5.0, w0 + 10.0))):
            n = first_n + 2 * i + half
            at = start + timedelta(seconds=30 * (2 * i + half))
            found = [particle(md) for md in halves[half]]
            if half == 0:
                found.append(particle(lo + 2.0, decision="ignore"))
            docs.append(frame(camera, n, lo, hi, at, defects=found))
    return docs


def test_frames_through_the_ingest_give_the_c_chart_its_points(camera, coil, store, t0):
    counts = [2, 0, 3, 1]

    store(coil_frames(camera, counts, first_m=100.0, first_n=1, start=t0))

    particle_char = Characteristic.objects.get(code="vision-cam-c1-particle-per-10m")
    values = Measurement.objects.filter(characteristic=particle_char).order_by("position_m")
    assert list(values.values_list("position_m", "value")) == [
        (100.0 + 10.0 * i, float(c)) for i, c in enumerate(counts)
    ]
    assert Counter(Measurement.objects.values_list("characteristic__code", flat=True)) == {
        spc_feed.characteristic_code("cam-c1", cls): len(counts) for cls in CLASSES
    }


def test_a_burst_of_particles_in_one_window_raises_a_c_chart_alarm(
    camera, coil, store, quality, t0
):
    """24 windows of a clean run (about 1.5 particles per 10 m, seed 48) give the baseline;
    the quality engineer proposes and approves c-chart limits; 10 more windows follow, one
    of them with 11 particles: after that batch SPC raises a rule-1 alarm on the count of
    that window, naming the coil and the window."""
    baseline = np.random.default_rng(48).poisson(1.5, 24).tolist()
    store(coil_frames(camera, baseline, first_m=0.0, first_n=1, start=t0))
    particle_char = Characteristic.objects.get(code="vision-cam-c1-particle-per-10m")
    end = t0 + timedelta(seconds=30 * 48)

    draft = limits_propose(
        characteristic=particle_char, baseline_from=t0, baseline_to=end, actor=quality
    )
    c_bar = sum(baseline) / 24
    assert (draft.chart_type, draft.values_used, draft.centre) == (ChartType.C, 24, c_bar)
    assert draft.ucl == pytest.approx(c_bar + 3 * np.sqrt(c_bar), abs=1e-12)
    assert draft.proposed_exclusions == []
    limits_approve(limits=draft, actor=quality, reason="clean run, week 48", monitor_from=end)

    later = [1, 2, 0, 1, 11, 2, 1, 0, 1, 2]
    assert 11 > draft.ucl > max(later[:4] + later[5:])
    store(coil_frames(camera, later, first_m=240.0, first_n=49, start=end + timedelta(minutes=5)))

    alarm = SpcAlarm.objects.get()
    trigger = Measurement.objects.get(pk=alarm.trigger_measurement_id)
    assert (alarm.characteristic, alarm.rule, alarm.statistic, alarm.chart_index) == (
        particle_char,
        "nelson_1",
        "c",
        4,
    )
    assert (trigger.unit, trigger.position_m, trigger.value) == (coil, 280.0, 11.0)
    assert alarm.points == [
        {
            "index": 4,
            "measurement_id": trigger.pk,
            "unit_id": coil.pk,
            "value": 11.0,
            "measured_at": trigger.measured_at.isoformat(),
        }
    ]
    assert not SpcAlarm.objects.exclude(characteristic=particle_char).exists()
