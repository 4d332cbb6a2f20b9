"""Compliance's reactions to SPC alarms: a control alarm on a CC/SC characteristic holds the
suspect window (every unit measured since the pattern began) and stops the station over its
command transport; each reaction is recorded with the alarm, once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from compliance.choices import AlarmReactionAction, HoldSource, HoldStatus
from compliance.models import AlarmReaction, Hold, SpcReactionPlan
from compliance.services import spc_alarm_extend, spc_alarm_react
from genealogy.choices import UnitStatus
from genealogy.models import Measurement, Unit
from qms.choices import CommandTransport, SpecialCharacteristic
from qms.ingest.models import CommandKind, CommandStatus, StationCommand
from qms.ingest.services import ingest_raw
from spc.models import SpcAlarm
from tests.ingest.line21700 import cell, fill_result, raw
from tests.ingest.mqtt_support import free_port
from tests.spc.conftest import SIGMA_FILL_G, normal

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]


def _shift(phase2_start, capture, *, first_cell: int = 5000) -> None:
    """40 in-control fill masses (seed 21), then 20 shifted up by 1.5 sigma (seed 22), one
    cell each, through the ingest path; alarms and reactions run after the commit."""
    before = normal(21, 40, 5.0, SIGMA_FILL_G)
    after = normal(22, 20, 5.0 + 1.5 * SIGMA_FILL_G, SIGMA_FILL_G)
    docs = [
        fill_result(
            cell(first_cell + i),
            message_id=f"FILL-01:{first_cell + i}",
            sent_at=phase2_start + timedelta(seconds=10 * i),
            mass_g=round(float(v), 5),
        )
        for i, v in enumerate([*before, *after])
    ]
    with capture(execute=True):
        assert {o.status for o in ingest_raw([raw(d) for d in docs])} == {"accepted"}


def test_a_cusum_alarm_on_a_cc_characteristic_holds_its_window_and_stops_the_station(
    approved_fill, phase2_start, django_capture_on_commit_callbacks, settings
):
    settings.MQTT_URL = f"mqtt://127.0.0.1:{free_port()}"  # the command is recorded, then fails
    fill = approved_fill.characteristic
    assert fill.special_class == SpecialCharacteristic.CC
    assert fill.station.command_transport == CommandTransport.MQTT

    _shift(phase2_start, django_capture_on_commit_callbacks)

    alarm = SpcAlarm.objects.filter(rule="cusum").order_by("chart_index").first()
    reactions = {r.action: r for r in AlarmReaction.objects.filter(alarm=alarm)}
    assert set(reactions) == {AlarmReactionAction.HOLD_WINDOW, AlarmReactionAction.LINE_STOP}
    hold = reactions[AlarmReactionAction.HOLD_WINDOW].hold
    # The suspect window: every cell measured on fill mass since the pattern began, to now.
    window = set(
        Measurement.objects.filter(
            characteristic=fill, measured_at__gte=alarm.first_measured_at
        ).values_list("unit__serial", flat=True)
    )
    assert set(hold.units.values_list("serial", flat=True)) >= window
    assert (hold.source, hold.status, hold.source_reference) == (
        HoldSource.SPC,
        HoldStatus.OPEN,
        f"SPC alarm {alarm.pk}",
    )
    assert hold.reason.startswith(f"SPC alarm {alarm.pk}: CUSUM (k 0.75, h 3.34)")
    assert "suspect window since" in hold.reason
    assert set(Unit.objects.filter(serial__in=window).values_list("status", flat=True)) == {
        UnitStatus.ON_HOLD
    }
    # Cells measured before the pattern began are not held.
    before = Measurement.objects.filter(
        characteristic=fill, measured_at__gte=phase2_start, measured_at__lt=alarm.first_measured_at
    ).values_list("unit_id", flat=True)
    assert not Unit.objects.filter(pk__in=before, status=UnitStatus.ON_HOLD).exists()
    alarm.refresh_from_db()
    assert alarm.hold_number == hold.number

    stop = reactions[AlarmReactionAction.LINE_STOP].command
    assert (stop.kind, stop.station, stop.reference) == (
        CommandKind.LINE_STOP,
        fill.station,
        hold.number,
    )
    assert stop.reason.startswith(f"SPC alarm {alarm.pk}: ")
    assert stop.status == CommandStatus.FAILED  # no broker listens there; it stays visible
    assert reactions[AlarmReactionAction.LINE_STOP].hold == hold

    # Reacting again changes nothing.
    assert {r.pk for r in spc_alarm_react(alarm_id=alarm.pk)} == {r.pk for r in reactions.values()}
    assert Hold.objects.filter(source=HoldSource.SPC).count() >= 1
    assert StationCommand.objects.filter(reference=hold.number).count() == 1


def test_a_continuing_pattern_holds_the_units_it_added(
    approved_fill, phase2_start, django_capture_on_commit_callbacks
):
    fill = approved_fill.characteristic
    fill.station.command_transport = CommandTransport.NONE
    fill.station.save()
    _shift(phase2_start, django_capture_on_commit_callbacks)
    alarm = SpcAlarm.objects.filter(rule="cusum").order_by("chart_index").first()
    held = set(Hold.objects.get(source_reference=f"SPC alarm {alarm.pk}").units.all())
    # More shifted cells after the reaction, still in the alarm's window
    after = normal(23, 5, 5.0 + 1.5 * SIGMA_FILL_G, SIGMA_FILL_G)
    start = phase2_start + timedelta(seconds=10 * 60)
    docs = [
        fill_result(
            cell(6000 + i),
            message_id=f"FILL-01:{6000 + i}",
            sent_at=start + timedelta(seconds=10 * i),
            mass_g=round(float(v), 5),
        )
        for i, v in enumerate(after)
    ]
    with django_capture_on_commit_callbacks(execute=True):
        ingest_raw([raw(d) for d in docs])
    reaction = spc_alarm_extend(alarm_id=alarm.pk) or AlarmReaction.objects.get(
        alarm=alarm, action=AlarmReactionAction.HOLD_EXTENSION
    )
    new = set(reaction.hold.units.values_list("serial", flat=True))
    assert new == {cell(6000 + i) for i in range(5)}
    assert not new & {u.serial for u in held}
    assert spc_alarm_extend(alarm_id=alarm.pk) is None  # nothing more to hold


def test_station_without_command_transport_reads_the_interlock_instead(
    approved_fill, phase2_start, django_capture_on_commit_callbacks
):
    station = approved_fill.characteristic.station
    station.command_transport = CommandTransport.NONE
    station.save()
    _shift(phase2_start, django_capture_on_commit_callbacks)
    alarm = SpcAlarm.objects.filter(rule="cusum").order_by("chart_index").first()
    stop = AlarmReaction.objects.get(alarm=alarm, action=AlarmReactionAction.LINE_STOP)
    assert stop.command is None
    assert stop.detail == f"{station} has no command transport: it reads the interlock"
    assert not StationCommand.objects.exists()


def test_the_reaction_plan_decides_and_a_standard_characteristic_alarms_only(
    approved_fill, phase2_start, django_capture_on_commit_callbacks
):
    fill = approved_fill.characteristic
    SpcReactionPlan.objects.create(characteristic=fill, hold_window=False, stop_line=False)
    _shift(phase2_start, django_capture_on_commit_callbacks)
    alarm = SpcAlarm.objects.filter(rule="cusum").order_by("chart_index").first()
    (only,) = AlarmReaction.objects.filter(alarm=alarm)
    assert only.action == AlarmReactionAction.ALARM_ONLY
    assert only.detail == "the reaction plan of electrolyte-fill-mass neither holds nor stops"
    assert not Hold.objects.filter(source=HoldSource.SPC).exists()
    assert not StationCommand.objects.exists()
