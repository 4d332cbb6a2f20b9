"""Alarms after they are raised: acknowledgement with the cause, closing, the hold link."""

from __future__ import annotations

import pytest

from qms.exceptions import InvalidInput, Refused
from spc.models import SpcAlarm
from spc.services import alarm_acknowledge, alarm_close, alarm_link_hold, spc_evaluate
from tests.spc.conftest import SIGMA_FILL_G

pytestmark = pytest.mark.django_db


@pytest.fixture
def alarm(approved_fill, fill, record, phase2_start) -> SpcAlarm:
    """Rule 1 on the 12th cell after the approval: 5.045 g, above the UCL, within the USL."""
    values = [5.0] * 20
    values[11] = 5.0 + 3.6 * SIGMA_FILL_G
    rows = record(fill, values, start=phase2_start)
    spc_evaluate(characteristic_id=fill.pk)
    found = SpcAlarm.objects.get(rule="nelson_1", statistic="x")
    assert found.last_measurement_id == rows[11].pk
    return found


def test_a_raised_alarm_names_its_value_and_is_critical_on_a_cc_characteristic(alarm):
    assert (alarm.status, alarm.severity, alarm.direction, alarm.chart_index) == (
        "open",
        "critical",
        1,
        11,
    )
    assert alarm.rule_name == "Nelson 1: one point beyond the control limits"
    assert [p["value"] for p in alarm.points] == [pytest.approx(5.0 + 3.6 * SIGMA_FILL_G)]
    assert alarm.first_measurement_id == alarm.last_measurement_id
    assert [h.history_change_reason for h in alarm.history.all()] == [
        "raised by the SPC evaluation"
    ]


def test_acknowledge_records_who_when_and_the_cause(alarm, qe):
    alarm_acknowledge(
        alarm=alarm,
        actor=qe,
        cause="dosing pump P2 air bubble; purged at 06:40",
        comment="re-weighed 12 cells, all in spec",
    )
    alarm.refresh_from_db()
    assert (alarm.status, alarm.acknowledged_by, alarm.cause, alarm.comment) == (
        "acknowledged",
        qe,
        "dosing pump P2 air bubble; purged at 06:40",
        "re-weighed 12 cells, all in spec",
    )
    assert alarm.acknowledged_at is not None
    latest = alarm.history.order_by("-history_id").first()
    assert (latest.history_user, latest.history_change_reason) == (
        qe,
        "acknowledged: dosing pump P2 air bubble; purged at 06:40",
    )

    with pytest.raises(Refused) as refused:
        alarm_acknowledge(alarm=alarm, actor=qe, cause="again")
    assert (refused.value.field, refused.value.code) == ("status", "not_open")

    alarm_close(alarm=alarm, actor=qe, comment="pump maintained")
    alarm.refresh_from_db()
    assert (alarm.status, alarm.closed_by) == ("closed", qe)
    assert alarm.comment == "re-weighed 12 cells, all in spec\npump maintained"


@pytest.mark.parametrize("cause", ["", "  "])
def test_acknowledge_needs_a_cause(alarm, qe, cause):
    with pytest.raises(InvalidInput) as refused:
        alarm_acknowledge(alarm=alarm, actor=qe, cause=cause)
    assert refused.value.field == "cause"
    alarm.refresh_from_db()
    assert (alarm.status, alarm.acknowledged_by, alarm.history.count()) == ("open", None, 1)


def test_an_open_alarm_is_not_closed(alarm, qe):
    with pytest.raises(Refused) as refused:
        alarm_close(alarm=alarm, actor=qe)
    assert refused.value.code == "not_acknowledged"
    alarm.refresh_from_db()
    assert alarm.status == "open"


def test_the_hold_link_is_recorded_once(alarm):
    alarm_link_hold(alarm=alarm, hold_number="H-2026-000042")
    alarm_link_hold(alarm=alarm, hold_number="H-2026-000042")
    alarm.refresh_from_db()
    assert alarm.hold_number == "H-2026-000042"
    assert alarm.history.count() == 2

    with pytest.raises(Refused) as refused:
        alarm_link_hold(alarm=alarm, hold_number="H-2026-000043")
    assert (refused.value.field, refused.value.code) == ("hold_number", "hold_linked")
    with pytest.raises(InvalidInput) as refused:
        alarm_link_hold(alarm=alarm, hold_number=" ")
    assert refused.value.field == "hold_number"
    alarm.refresh_from_db()
    assert alarm.hold_number == "H-2026-000042"
