"""Out of specification on a cell holds that cell, through the event registry and a task."""

from datetime import timedelta

import pytest
from django.utils import timezone

from compliance.choices import HoldSource
from compliance.models import Hold
from compliance.services import out_of_spec_hold
from genealogy.choices import UnitKind, UnitStatus
from genealogy.models import Measurement
from genealogy.services import MeasurementInput, measurements_record, unit_create
from qms.choices import CommandTransport, SpecialCharacteristic
from qms.ingest.models import CommandKind, CommandStatus, StationCommand
from tests.factories import UserFactory
from tests.ingest.mqtt_support import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_eager")]


def _fill(plant, actor, values):
    cells = [
        unit_create(kind=UnitKind.CELL, serial=f"P12648{i:07d}", line=plant.line, actor=actor)
        for i in range(len(values))
    ]
    at = timezone.now() - timedelta(minutes=3)
    measurements_record(
        rows=[
            MeasurementInput(
                unit_id=c.pk,
                characteristic_id=plant.chars["fill_mass"].pk,
                value=v,
                measured_at=at + timedelta(seconds=i),
            )
            for i, (c, v) in enumerate(zip(cells, values, strict=True))
        ],
        actor=actor,
    )
    return cells


def test_out_of_spec_fill_mass_holds_exactly_that_cell(plant):
    operator = UserFactory(username="op", role="operator")
    cells = _fill(plant, operator, [410.2, 404.1, 409.7])

    hold = Hold.objects.get()
    assert hold.source == HoldSource.OUT_OF_SPEC
    assert list(hold.units.values_list("serial", flat=True)) == [cells[1].serial]
    assert "Electrolyte fill mass out of specification (LSL 405.9, USL 414.1 g)" in hold.reason
    assert f"{cells[1].serial} 404.1 g" in hold.reason
    assert hold.placed_by.username == "celltrace-rules"
    statuses = {
        c.serial: s
        for c, s in zip(
            cells, [UnitStatus.IN_PROCESS, UnitStatus.ON_HOLD, UnitStatus.IN_PROCESS], strict=True
        )
    }
    for cell in cells:
        cell.refresh_from_db()
        assert cell.status == statuses[cell.serial]


def test_the_reaction_is_safe_to_run_twice(plant):
    operator = UserFactory(username="op", role="operator")
    _fill(plant, operator, [404.1])
    ids = list(Measurement.objects.filter(in_spec=False).values_list("pk", flat=True))
    assert out_of_spec_hold(measurement_ids=ids) == []
    assert Hold.objects.count() == 1


def test_in_spec_measurements_place_no_hold(plant):
    operator = UserFactory(username="op", role="operator")
    _fill(plant, operator, [408.0, 410.0, 413.9])
    assert not Hold.objects.exists()


def test_a_station_without_a_command_transport_is_not_sent_anything(plant):
    station = plant.chars["fill_mass"].station
    station.command_transport = CommandTransport.NONE  # it polls the interlock
    station.save()
    _fill(plant, UserFactory(username="op", role="operator"), [404.1])
    assert Hold.objects.count() == 1
    assert not StationCommand.objects.exists()


@pytest.mark.parametrize(
    ("special", "kind"),
    [(SpecialCharacteristic.CC, CommandKind.LINE_STOP), (SpecialCharacteristic.SC, "hold")],
)
def test_the_hold_tells_the_station_stop_for_cc_divert_otherwise(plant, settings, special, kind):
    """Fill mass out of spec at a station commanded over MQTT: a CC characteristic stops the
    station, an SC one asks it to divert the held cell; the command names the hold."""
    settings.MQTT_URL = f"mqtt://127.0.0.1:{free_port()}"  # recorded, then failed: no broker
    char = plant.chars["fill_mass"]
    char.special_class = special
    char.save()
    station = char.station
    station.command_transport = CommandTransport.MQTT
    station.save()

    cells = _fill(plant, UserFactory(username="op", role="operator"), [410.2, 404.1])

    hold = Hold.objects.get()
    command = StationCommand.objects.get()
    assert (command.station, command.kind, command.reference, command.unit_serials) == (
        station,
        kind,
        hold.number,
        [cells[1].serial],
    )
    assert command.reason == f"Hold {hold.number}: {hold.reason}"
    assert command.requested_by.username == "celltrace-rules"
    assert (
        command.target == f"qms/{station.line.site.code}/{station.line.code}/{station.code}/command"
    )
    assert command.status == CommandStatus.FAILED
    assert "Connection refused" in command.error or "refused" in command.error.lower()
