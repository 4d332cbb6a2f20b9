"""simulate --transport mqtt with a real ingest worker (``manage.py ingest_mqtt``) on a private
Mosquitto and the PostgreSQL test database: the whole stream arrives exactly once and the
faults land where they belong, although the worker subscribes after the first messages and
the broker restarts in the middle of the stream."""

import contextlib
import os
import re
import signal
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from compliance.demo import plant
from compliance.demo.stream import build_stream
from compliance.roles import roles_sync
from genealogy.choices import UnitKind
from genealogy.models import Unit
from qms.ingest.models import DeadLetter, IngestMessage, IngestStat
from tests.ingest.mqtt_support import (
    OwnBroker,
    WorkerProcess,
    require_mosquitto,
    require_mosquitto_binary,
    require_postgresql,
    wait_for,
)

pytestmark = [
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def broker(tmp_path):
    """A private Mosquitto with persistence; the restart command the test gives ``simulate``
    starts it again as a daemon that writes its pid file, which stops it afterwards."""
    require_mosquitto()
    require_postgresql()
    binary = require_mosquitto_binary()
    own = OwnBroker(binary, tmp_path)
    pid_file = tmp_path / "mosquitto.pid"
    own.config.write_text(own.config.read_text() + f"pid_file {pid_file}\n")
    own.start()
    restart = f"kill {own.proc.pid}; sleep 1; {binary} -d -c {own.config}"
    yield own, restart
    own.stop()
    if pid_file.exists():
        pid = int(pid_file.read_text().strip() or 0)
        if pid and pid != own.proc.pid and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not _alive(pid), timeout_s=10, what="the restarted broker to stop")


@pytest.fixture
def worker(broker, tmp_path):
    own, _restart = broker
    run = uuid.uuid4().hex[:8]
    process = WorkerProcess(
        url=own.url, group=f"t-{run}", client_id=f"t-{run}-w1", log_dir=tmp_path, batch_size=100
    )
    yield process
    process.stop()


def test_stream_arrives_whole_before_the_worker_and_across_a_broker_restart(broker, worker):
    own, restart = broker
    roles_sync()  # a transactional test before this one may have flushed them
    plant.seed()
    # Not waiting for the worker to subscribe: the first messages find no subscriber (the
    # broker drops them) and must be sent again once the worker is in.
    worker.start()
    until = (timezone.now() - timedelta(hours=1)).replace(microsecond=0)
    expected = build_stream(cells=40, seed=3, end_at=until)
    ids = {m.message_id for m in expected.messages}

    out = StringIO()
    call_command(
        "simulate",
        transport="mqtt",
        mqtt_url=own.url,
        cells=40,
        seed=3,
        until=until.isoformat(),
        rate=200,
        faults="duplicates=3,malformed=3,unknown-serial=2,broker-restart",
        broker_restart_cmd=restart,
        stdout=out,
        stderr=StringIO(),
    )
    out = out.getvalue()
    assert f"Sending {len(ids) + 8:,} messages through mqtt, 200 messages/s" in out
    assert f"Broker {own.url} acknowledged {len(ids) + 8:,} messages" in out
    assert f"broker restart: {restart} (exit 0" in out
    assert "1 disconnects, 2 connects" in out
    again = re.search(r"\(([\d,]+) sent again after no subscriber took them", out)
    assert again and int(again[1].replace(",", "")) >= 1

    def applied():
        return IngestMessage.objects.filter(message_id__in=ids).count() == len(ids)

    wait_for(applied, timeout_s=90, what="every stream message to be applied", every_s=0.5)
    wait_for(lambda: DeadLetter.objects.count() == 5, timeout_s=30, what="5 dead letters")
    assert "disconnected from" in worker.log()  # the worker went through the restart too

    assert IngestMessage.objects.count() == len(ids)  # nothing else, nothing twice
    assert set(IngestMessage.objects.values_list("transport", flat=True)) == {"mqtt"}
    assert Unit.objects.filter(kind=UnitKind.CELL).count() == 40
    stats = IngestStat.objects.filter(transport="mqtt").aggregate(Sum("accepted"), Sum("duplicate"))
    assert stats["accepted__sum"] == len(ids)
    # The 3 repeats, plus what the broker delivered again after the restart.
    assert stats["duplicate__sum"] >= 3

    letters = sorted(DeadLetter.objects.values_list("message_id", "reason", "origin"))
    assert [(mid, reason.split(" at line")[0], origin) for mid, reason, origin in letters] == [
        (
            "",
            "Not valid JSON: Unterminated string starting",
            "qms/gf1/l2-cyl/slit-c/process_result",
        ),
        (
            "sim-3-l1-pri-form-r1-000003.malformed-3",
            "Schema: '116.84' is not of type 'number'",
            "qms/gf1/l1-pri/form/process_result",
        ),
        (
            "sim-3-l1-pri-form-r1-000018.unknown-1",
            "Unknown unit 'P19900000001' (send 'unit_kind' to create it on its first station).",
            "qms/gf1/l1-pri/form/process_result",
        ),
        (
            "sim-3-l2-cyl-fill-r1-000029.malformed-2",
            "Schema: 'result' is a required property",
            "qms/gf1/l2-cyl/fill/process_result",
        ),
        (
            "sim-3-l2-cyl-form-r1-000009.unknown-2",
            "Unknown unit 'C29900000002' (send 'unit_kind' to create it on its first station).",
            "qms/gf1/l2-cyl/form/process_result",
        ),
    ]
