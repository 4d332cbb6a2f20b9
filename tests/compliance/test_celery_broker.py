"""The out-of-spec reaction through a real Celery broker (Redis) and a real worker."""

import time
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.utils import timezone

from compliance.models import Hold
from genealogy.choices import UnitKind, UnitStatus
from genealogy.services import MeasurementInput, measurements_record, unit_create
from qms.celery import app
from tests.conftest import require_service
from tests.factories import UserFactory

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker():
    require_service("Celery broker (CELERY_BROKER_URL)", settings.QMS_CELERY_BROKER_CONFIGURED)
    assert not app.conf.task_always_eager
    app.control.purge()  # tasks that earlier tests queued with no worker running
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=20) as w:
        yield w


def test_task_runs_on_the_worker_and_holds_the_cell(plant, worker):
    operator = UserFactory(username="op", role="operator")
    cell = unit_create(kind=UnitKind.CELL, serial="P126480000042", line=plant.line, actor=operator)
    measurements_record(
        rows=[
            MeasurementInput(
                unit_id=cell.pk,
                characteristic_id=plant.chars["fill_mass"].pk,
                value=415.0,
                measured_at=timezone.now() - timedelta(seconds=5),
            )
        ],
        actor=operator,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not Hold.objects.exists():
        time.sleep(0.2)
    hold = Hold.objects.get()
    assert list(hold.units.values_list("serial", flat=True)) == ["P126480000042"]
    cell.refresh_from_db()
    assert cell.status == UnitStatus.ON_HOLD
