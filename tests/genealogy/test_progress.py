"""Station progress: visits publish one ``VisitsRecorded`` per commit, and a Celery task keeps
``UnitProgress`` (latest station, stations passed) from the visits, eagerly and on a real
worker."""

import time
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from genealogy import progress
from genealogy.choices import UnitKind, VisitResult
from genealogy.events import VisitsRecorded
from genealogy.models import StationVisit, UnitProgress
from genealogy.services import unit_create, visit_record
from genealogy.tasks import unit_progress_update_task
from qms import events
from qms.celery import app
from tests.conftest import require_service
from tests.factories import UserFactory

received: list[VisitsRecorded] = []


def _remember(evt: VisitsRecorded) -> None:
    received.append(evt)


@pytest.fixture(autouse=True)
def recorder():
    """Record the events (next to genealogy's own subscriber) with a clean visit buffer."""
    received.clear()
    progress._pending.visit_ids = []
    events.subscribe(VisitsRecorded, _remember, app_label="tests", description="remember")
    yield
    events._registry[VisitsRecorded] = [
        s for s in events._registry[VisitsRecorded] if s.handler is not _remember
    ]


@pytest.fixture
def actor(db):
    return UserFactory(username="int-fill-plc", password=None)


@pytest.fixture
def t0():
    return (timezone.now() - timedelta(hours=6)).replace(microsecond=0)


def _cell(plant, actor, n: int):
    return unit_create(kind=UnitKind.CELL, serial=f"P12648{n:07d}", line=plant.line, actor=actor)


def _visit(plant, actor, cell, station, at, result=VisitResult.OK):
    return visit_record(
        unit=cell,
        station=plant.stations[station],
        started_at=at,
        ended_at=at + timedelta(seconds=90),
        result=result,
        program="FILL-105AH-V3" if station == "fill" else "MOD-12S-V2",
        actor=actor,
    )


def _row(unit):
    p = UnitProgress.objects.get(unit=unit)
    return (
        p.last_station.code,
        p.last_visit_id,
        p.last_visit_at,
        p.last_result,
        p.stations_passed,
        p.visits,
    )


@pytest.mark.django_db
@pytest.mark.usefixtures("celery_eager")
def test_one_transaction_is_one_event_and_rolled_back_visits_are_left_out(
    plant, actor, t0, django_capture_on_commit_callbacks
):
    c1, c2 = _cell(plant, actor, 101), _cell(plant, actor, 102)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        v1 = _visit(plant, actor, c1, "fill", t0)
        v2 = _visit(plant, actor, c2, "fill", t0 + timedelta(minutes=1), VisitResult.NOK)
        try:
            with transaction.atomic():  # a rejected message: its savepoint is rolled back
                _visit(plant, actor, c2, "mod-asm", t0 + timedelta(minutes=2))
                raise RuntimeError("handler refused the message")
        except RuntimeError:
            pass
        v3 = _visit(plant, actor, c1, "mod-asm", t0 + timedelta(minutes=40))

    assert received == [VisitsRecorded(visit_ids=(v1.pk, v2.pk, v3.pk), unit_ids=(c1.pk, c2.pk))]
    assert StationVisit.objects.count() == 3
    assert _row(c1) == ("mod-asm", v3.pk, t0 + timedelta(minutes=40), "ok", 2, 2)
    assert _row(c2) == ("fill", v2.pk, t0 + timedelta(minutes=1), "nok", 0, 1)


@pytest.mark.django_db
@pytest.mark.usefixtures("celery_eager")
def test_retest_and_late_messages_give_the_same_progress(
    plant, actor, t0, django_capture_on_commit_callbacks
):
    cell = _cell(plant, actor, 103)
    with django_capture_on_commit_callbacks(execute=True):
        _visit(plant, actor, cell, "fill", t0)
        nok = _visit(plant, actor, cell, "mod-asm", t0 + timedelta(hours=1), VisitResult.NOK)
    assert _row(cell) == ("mod-asm", nok.pk, t0 + timedelta(hours=1), "nok", 1, 2)

    with django_capture_on_commit_callbacks(execute=True):
        retest = _visit(plant, actor, cell, "mod-asm", t0 + timedelta(hours=1, minutes=12))
    assert _row(cell) == ("mod-asm", retest.pk, t0 + timedelta(hours=1, minutes=12), "ok", 2, 3)

    # A message from the coater's buffer arrives late: it is counted, but is not the latest.
    with django_capture_on_commit_callbacks(execute=True):
        _visit(plant, actor, cell, "coat-c", t0 - timedelta(hours=20))
    assert _row(cell) == ("mod-asm", retest.pk, t0 + timedelta(hours=1, minutes=12), "ok", 3, 4)
    assert len(received) == 3


@pytest.mark.django_db
def test_the_task_is_safe_to_run_twice_and_ignores_unknown_visits(plant, actor, t0):
    cells = [_cell(plant, actor, 110 + i) for i in range(3)]
    visits = [
        _visit(plant, actor, c, station, t0 + timedelta(minutes=10 * i + k))
        for i, c in enumerate(cells)
        for k, station in enumerate(("fill", "mod-asm"))
    ]
    ids = [v.pk for v in visits]

    assert unit_progress_update_task.apply(kwargs={"visit_ids": ids}).get() == 3
    first = {c.serial: _row(c) for c in cells}
    assert unit_progress_update_task.apply(kwargs={"visit_ids": ids[::-1]}).get() == 3
    assert {c.serial: _row(c) for c in cells} == first
    assert first["P126480000111"] == (
        "mod-asm",
        visits[3].pk,
        t0 + timedelta(minutes=11),
        "ok",
        2,
        2,
    )
    assert UnitProgress.objects.count() == 3
    assert progress.unit_progress_update(visit_ids=[ids[-1] + 1000]) == []


@pytest.mark.django_db
def test_a_stale_computation_never_overwrites_a_newer_one(plant, actor, t0):
    """Two workers race: the one that read fewer visits writes last and is ignored."""
    cell = _cell(plant, actor, 120)
    first = _visit(plant, actor, cell, "fill", t0)
    stale = progress._compute([cell.pk])  # read by a slow worker before the next visit
    second = _visit(plant, actor, cell, "mod-asm", t0 + timedelta(minutes=30))
    progress.unit_progress_update(visit_ids=[second.pk])

    progress._upsert(stale)

    assert stale[0].last_visit_id == first.pk
    assert _row(cell) == ("mod-asm", second.pk, t0 + timedelta(minutes=30), "ok", 2, 2)


@pytest.mark.django_db
def test_recomputing_a_batch_is_a_fixed_number_of_queries(
    plant, actor, t0, django_assert_num_queries
):
    cells = [_cell(plant, actor, 200 + i) for i in range(40)]
    ids = [
        _visit(plant, actor, c, "fill", t0 + timedelta(seconds=i)).pk for i, c in enumerate(cells)
    ]
    with django_assert_num_queries(3):  # unit ids, visits, one upsert
        rows = progress.unit_progress_update(visit_ids=ids)
    assert len(rows) == 40
    assert UnitProgress.objects.filter(last_station=plant.stations["fill"]).count() == 40


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_eager")
def test_a_rolled_back_transaction_announces_nothing(plant, actor, t0):
    cell = _cell(plant, actor, 130)
    with pytest.raises(RuntimeError), transaction.atomic():
        _visit(plant, actor, cell, "fill", t0)
        raise RuntimeError("batch failed")
    assert received == []
    assert not UnitProgress.objects.exists()

    visit = _visit(plant, actor, cell, "fill", t0 + timedelta(minutes=5))
    assert received == [VisitsRecorded(visit_ids=(visit.pk,), unit_ids=(cell.pk,))]
    assert _row(cell) == ("fill", visit.pk, t0 + timedelta(minutes=5), "ok", 1, 1)


@pytest.fixture
def worker():
    require_service("Celery broker (CELERY_BROKER_URL)", settings.QMS_CELERY_BROKER_CONFIGURED)
    assert not app.conf.task_always_eager
    app.control.purge()  # tasks that earlier tests queued with no worker running
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=20) as w:
        yield w


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_progress_is_updated_by_a_worker_on_the_broker(plant, actor, t0, worker):
    cells = [_cell(plant, actor, 140 + i) for i in range(3)]
    with transaction.atomic():  # one ingest batch: one task on the "ingest" queue
        visits = [
            _visit(plant, actor, c, "fill", t0 + timedelta(minutes=i)) for i, c in enumerate(cells)
        ]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and UnitProgress.objects.count() < 3:
        time.sleep(0.1)
    assert received == [
        VisitsRecorded(visit_ids=tuple(v.pk for v in visits), unit_ids=tuple(c.pk for c in cells))
    ]
    assert [_row(c) for c in cells] == [
        ("fill", v.pk, t0 + timedelta(minutes=i), "ok", 1, 1) for i, v in enumerate(visits)
    ]
