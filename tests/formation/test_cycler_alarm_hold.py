"""A critical cycler alarm on a formation channel holds the cell on it (compliance), so an
overheated or badly contacted cell goes to the MRB instead of module assembly."""

from __future__ import annotations

from datetime import timedelta

import pytest

from compliance.choices import HoldSource, HoldStatus
from compliance.models import Hold
from compliance.services import cycler_alarm_hold
from formation.models import CyclerAlarm
from genealogy.choices import UnitStatus
from tests.formation.conftest import send
from tests.formation.test_cycler_status import (
    CONTACT,
    TEMPERATURE_HIGH,
    channel,
    status,
    t0,  # noqa: F401  (fixture)
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]


def test_a_critical_alarm_holds_the_cell_and_a_warning_does_not(
    sim,
    cells,
    t0,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    runaway = channel(sim, 6, temperature_c=312.4, voltage_v=0.41, state="fault", current_a=0.0)
    warm = channel(sim, 7, temperature_c=45.3, alarms=[TEMPERATURE_HIGH])
    with django_capture_on_commit_callbacks(execute=True):
        send(status(sim, t0, [channel(sim, 5), runaway, warm]))

    [hold] = Hold.objects.filter(source=HoldSource.FORMATION)
    alarm = CyclerAlarm.objects.get(code="QMS-OVERTEMP")
    assert (hold.status, hold.source_reference) == (HoldStatus.OPEN, f"cycler alarm #{alarm.pk}")
    assert list(hold.units.all()) == [cells[6]]
    assert "Critical cycler alarm QMS-OVERTEMP on" in hold.reason
    assert "0.410 V, 312.4 °C" in hold.reason
    cells[6].refresh_from_db()
    cells[7].refresh_from_db()
    assert cells[6].status == UnitStatus.ON_HOLD
    assert cells[7].status != UnitStatus.ON_HOLD  # a warning is not a hold

    # Delivered twice: held once. Still reported a moment later: no new episode, no new hold.
    assert cycler_alarm_hold(alarm_id=alarm.pk) is None
    with django_capture_on_commit_callbacks(execute=True):
        send(status(sim, t0 + timedelta(seconds=5), [runaway]))
    assert Hold.objects.filter(source=HoldSource.FORMATION).count() == 1


def test_a_contact_fault_on_a_scrapped_cell_holds_nothing(
    sim,
    cells,
    t0,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    cells[5].status = UnitStatus.SCRAPPED
    cells[5].save()
    with django_capture_on_commit_callbacks(execute=True):
        send(status(sim, t0, [channel(sim, 5, alarms=[CONTACT])]))

    assert CyclerAlarm.objects.filter(code=CONTACT["code"]).exists()
    assert not Hold.objects.exists()
