"""The whole ingest chain on the real services: the simulator publishes a production run of
the demo plant to Mosquitto, two ``ingest_mqtt`` worker processes share the subscription and
write to PostgreSQL, their reactions go through Redis to a Celery worker, and the cell whose
electrolyte fill mass was out of specification ends up on hold. Every message is stored
exactly once."""

import time
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from compliance.choices import HoldSource
from compliance.demo import plant
from compliance.demo.stream import build_stream
from compliance.models import Hold
from compliance.roles import roles_sync
from genealogy.choices import UnitStatus
from genealogy.models import Measurement, StationVisit
from qms.celery import app
from qms.choices import ProcessStep
from qms.ingest.models import DeadLetter, DeadLetterStatus, IngestMessage
from tests.conftest import require_service
from tests.ingest.mqtt_support import (
    WorkerProcess,
    require_mosquitto,
    require_postgresql,
    session_clear,
    wait_for,
)

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
]


@pytest.fixture
def celery_worker():
    require_service("Celery broker (CELERY_BROKER_URL)", settings.QMS_CELERY_BROKER_CONFIGURED)
    app.control.purge()  # tasks queued by earlier tests with no worker running
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30) as w:
        yield w


@pytest.fixture
def ingest_workers(tmp_path):
    url = require_mosquitto()
    require_postgresql()
    run = uuid.uuid4().hex[:8]
    made = [
        WorkerProcess(
            url=url,
            group=f"chain-{run}",
            client_id=f"chain-{run}-{name}",
            log_dir=tmp_path,
            batch_size=100,
            celery_broker_url=settings.CELERY_BROKER_URL,
        )
        for name in ("a", "b")
    ]
    yield url, made
    for worker in made:
        worker.stop()
        session_clear(worker.url, worker.client_id)


def test_simulator_to_hold_through_mosquitto_two_workers_postgresql_and_celery(
    ingest_workers, celery_worker
):
    url, workers = ingest_workers
    roles_sync()  # a transactional test before this one may have flushed them
    plant.seed()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.wait_subscribed()
    until = (timezone.now() - timedelta(minutes=30)).replace(microsecond=0)
    stream = build_stream(cells=60, seed=11, end_at=until)
    ids = {m.message_id for m in stream.messages}

    out = StringIO()
    call_command(
        "simulate",
        transport="mqtt",
        mqtt_url=url,
        cells=60,
        seed=11,
        until=until.isoformat(),
        rate=0,
        no_faults=False,
        stdout=out,
        stderr=StringIO(),
    )
    assert f"Broker {url} acknowledged {len(ids):,} messages" in out.getvalue()

    def all_stored() -> bool:
        return IngestMessage.objects.filter(message_id__in=ids).count() == len(ids)

    try:
        wait_for(all_stored, timeout_s=120, what="every message of the run stored", every_s=0.5)
    except BaseException:
        open_letters = list(
            DeadLetter.objects.filter(status=DeadLetterStatus.OPEN).values_list(
                "message_id", "reason"
            )
        )
        pytest.fail(f"not stored; open dead letters: {open_letters}")
    # Stored exactly once: one message row each, and each process result's visits once.
    assert IngestMessage.objects.count() == len(ids)
    # A message that reached one worker before the message making its unit was committed by
    # the other was dead-lettered and then applied by the automatic retry: none is left open.
    assert not DeadLetter.objects.filter(status=DeadLetterStatus.OPEN).exists()
    assert set(DeadLetter.objects.values_list("resolution", flat=True)) <= {
        "retried automatically: accepted",
        "retried automatically: duplicate",
    }
    results = [m for m in stream.messages if m.kind == "process_result"]
    visits = sum(len(m.doc.get("units") or [m.doc["unit"]]) for m in results)
    assert StationVisit.objects.count() == visits
    assert Measurement.objects.count() == sum(
        len(m.doc.get("units") or [m.doc["unit"]]) * len(m.doc["payload"].get("measurements", []))
        for m in results
    )

    # The out-of-spec fill masses of the run, held by the Celery worker's reaction.
    low = Measurement.objects.filter(
        in_spec=False, station__process_step=ProcessStep.ELECTROLYTE_FILL
    ).select_related("unit")
    cells = {m.unit.serial for m in low}
    assert cells, "the run's fill-mass fault is in the stream"

    def held() -> bool:
        return all(
            Hold.objects.filter(source=HoldSource.OUT_OF_SPEC, units__serial=serial).exists()
            for serial in cells
        )

    wait_for(held, timeout_s=60, what="the out-of-spec cells held", every_s=0.5)
    for m in low:
        m.unit.refresh_from_db()
        assert m.unit.status == UnitStatus.ON_HOLD

    # Both workers took a share of the shared subscription.
    time.sleep(0.5)
    handled = [w.stop() for w in workers]
    assert handled == [0, 0]
    logs = [w.log() for w in workers]
    assert all("stopped:" in log for log in logs), logs
    shares = [int(log.rsplit("stopped: ", 1)[1].split(" ", 1)[0]) for log in logs]
    assert all(share > 0 for share in shares), shares
