"""Genealogy services: the happy path and the refusals of the digital thread."""

from datetime import timedelta

import pytest
from django.utils import timezone

from compliance.choices import HoldSource
from compliance.services import hold_place, hold_release, unit_status_set
from genealogy.choices import UnitKind, UnitStatus
from genealogy.models import Link, Measurement, Unit
from genealogy.services import (
    MeasurementInput,
    cell_replace,
    coil_segment_consume,
    link_check_acyclic,
    measurements_record,
    unit_assemble,
    unit_create,
    units_create_bulk,
)
from qms.exceptions import InvalidInput, NotFound, Refused
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def actor():
    return UserFactory(username="qe", role="quality_engineer")


def test_gs1_cell_is_created_with_gtin_and_lot(plant, actor):
    cell = unit_create(
        kind=UnitKind.CELL,
        serial="(01)09521234543213(21)P126480000001(10)L2611A",
        line=plant.line,
        actor=actor,
    )
    assert (cell.serial, cell.gtin, cell.batch_lot) == ("P126480000001", "09521234543213", "L2611A")
    assert cell.history.first().history_user == actor


def test_wrong_gtin_check_digit_is_refused_and_nothing_written(plant, actor):
    with pytest.raises(InvalidInput) as err:
        unit_create(
            kind=UnitKind.CELL,
            serial="010952123454321421P126480000001",
            line=plant.line,
            actor=actor,
        )
    assert err.value.field == "serial"
    assert err.value.code == "check_digit"
    assert not Unit.objects.exists()


def test_segment_overlap_and_outside_coil_are_refused(plant, actor):
    coil = unit_create(
        kind=UnitKind.SLIT_COIL,
        serial="SC-C-000001-A",
        line=plant.line,
        length_m=1500.0,
        actor=actor,
    )
    c1 = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    c2 = unit_create(kind=UnitKind.CELL, serial="P126480000002", line=plant.line, actor=actor)
    coil_segment_consume(coil=coil, consumer=c1, start_m=0.0, end_m=2.4, actor=actor)
    with pytest.raises(Refused) as err:
        coil_segment_consume(coil=coil, consumer=c2, start_m=2.0, end_m=4.4, actor=actor)
    assert err.value.code == "segment_overlap"
    with pytest.raises(Refused) as err:
        coil_segment_consume(coil=coil, consumer=c2, start_m=1499.0, end_m=1501.4, actor=actor)
    assert err.value.code == "segment_outside_coil"
    assert Link.objects.count() == 1


def test_a_link_that_would_make_a_cycle_is_refused(plant, actor):
    cell = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    module = unit_create(kind=UnitKind.MODULE, serial="M2648000001", line=plant.line, actor=actor)
    pack = unit_create(kind=UnitKind.PACK, serial="PK2648000001", line=plant.line, actor=actor)
    unit_assemble(part=cell, assembly=module, slot="C01", actor=actor)
    unit_assemble(part=module, assembly=pack, slot="M01", actor=actor)
    with pytest.raises(Refused) as err:
        link_check_acyclic(pack, cell)
    assert err.value.code == "cycle"
    assert err.value.field == "target"
    with pytest.raises(Refused):
        link_check_acyclic(cell, cell)
    link_check_acyclic(cell, pack)  # downstream direction is fine


def test_assembling_into_the_wrong_kind_is_refused(plant, actor):
    cell = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    pack = unit_create(kind=UnitKind.PACK, serial="PK2648000001", line=plant.line, actor=actor)
    vehicle = unit_create(kind=UnitKind.VEHICLE, serial="WVWZZZE1ZPP000001", actor=actor)
    with pytest.raises(InvalidInput) as err:
        unit_assemble(part=cell, assembly=vehicle, actor=actor)
    assert err.value.field == "assembly"
    with pytest.raises(InvalidInput):
        unit_assemble(part=pack, assembly=cell, actor=actor)
    assert not Link.objects.exists()


def test_a_taken_slot_and_a_cell_in_two_modules_are_refused(plant, actor):
    m1 = unit_create(kind=UnitKind.MODULE, serial="M2648000001", line=plant.line, actor=actor)
    m2 = unit_create(kind=UnitKind.MODULE, serial="M2648000002", line=plant.line, actor=actor)
    c1 = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    c2 = unit_create(kind=UnitKind.CELL, serial="P126480000002", line=plant.line, actor=actor)
    unit_assemble(part=c1, assembly=m1, slot="C01", actor=actor)
    with pytest.raises(Refused) as err:
        unit_assemble(part=c2, assembly=m1, slot="C01", actor=actor)
    assert (err.value.code, err.value.field) == ("slot_taken", "slot")
    with pytest.raises(Refused) as err:
        unit_assemble(part=c1, assembly=m2, slot="C01", actor=actor)
    assert err.value.code == "already_assembled"
    assert Link.objects.count() == 1


def test_a_scrapped_coil_cannot_be_consumed(plant, actor):
    coil = unit_create(
        kind=UnitKind.SLIT_COIL,
        serial="SC-C-000001-A",
        line=plant.line,
        length_m=1500.0,
        actor=actor,
    )
    cell = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    unit_status_set(
        unit=coil,
        status=UnitStatus.SCRAPPED,
        actor=actor,
        reason="Wrinkle over full width at 0-40 m",
    )
    with pytest.raises(Refused) as err:
        coil_segment_consume(coil=coil, consumer=cell, start_m=0, end_m=0.9, actor=actor)
    assert err.value.code == "unit_scrapped"
    assert "Wrinkle over full width" in err.value.message
    assert not Link.objects.exists()


def test_what_a_held_cell_was_made_from_is_still_recorded(plant, actor):
    """The winding message may arrive after the fill result put the cell on hold: the trace
    needs the coil metres it consumed all the same (the hold stays)."""
    coil = unit_create(
        kind=UnitKind.SLIT_COIL, serial="SC-C-000001-A", line=plant.line, length_m=1500.0,
        actor=actor,
    )  # fmt: skip
    cell = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    hold_place(
        units=[cell], reason="Fill mass 404.2 g below LSL", source=HoldSource.SPC, actor=actor
    )
    link = coil_segment_consume(coil=coil, consumer=cell, start_m=0.0, end_m=0.9, actor=actor)
    assert (link.source, link.target, link.start_m, link.end_m) == (coil, cell, 0.0, 0.9)
    cell.refresh_from_db()
    assert cell.status == UnitStatus.ON_HOLD


def test_assembling_a_held_cell_is_refused_with_the_hold_reason(plant, actor):
    cell = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    module = unit_create(kind=UnitKind.MODULE, serial="M2648000001", line=plant.line, actor=actor)
    hold = hold_place(
        units=[cell], reason="Fill mass 404.2 g below LSL", source=HoldSource.SPC, actor=actor
    )
    with pytest.raises(Refused) as err:
        unit_assemble(part=cell, assembly=module, slot="C01", actor=actor)
    assert hold.number in err.value.message
    assert "Fill mass 404.2 g below LSL" in err.value.message
    assert not Link.objects.exists()
    hold_release(hold=hold, actor=actor, reason="Re-weighed 410.3 g; scale drift")
    cell.refresh_from_db()
    assert cell.status == UnitStatus.IN_PROCESS
    unit_assemble(part=cell, assembly=module, slot="C01", actor=actor)


def test_rework_keeps_both_links(plant, actor):
    module = unit_create(kind=UnitKind.MODULE, serial="M2648000001", line=plant.line, actor=actor)
    old = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    new = unit_create(kind=UnitKind.CELL, serial="P126480000002", line=plant.line, actor=actor)
    unit_assemble(part=old, assembly=module, slot="C07", actor=actor)
    closed, added = cell_replace(
        assembly=module, removed=old, replacement=new, reason="DCIR 1.9 mOhm above bin", actor=actor
    )
    assert closed.removed_at is not None and added.slot == "C07"
    assert Link.objects.filter(target=module).count() == 2


def test_history_names_the_actor_and_the_reason(plant, actor):
    cell = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    hold = hold_place(
        units=[cell],
        reason="Supplier notice SN-2026-114: CAM lot moisture",
        source=HoldSource.SUPPLIER_NOTICE,
        actor=actor,
    )
    last = cell.history.order_by("-history_id").first()
    assert last.status == UnitStatus.ON_HOLD
    assert last.history_user == actor
    assert last.history_change_reason.startswith(f"{hold.number} placed: Supplier notice")


def test_bulk_measurements_one_transaction_and_refusal_writes_nothing(plant, actor):
    cells = units_create_bulk(
        kind=UnitKind.CELL,
        line=plant.line,
        actor=actor,
        serials=[f"P12648{i:07d}" for i in range(2500)],
    )
    at = timezone.now() - timedelta(hours=1)
    fill = plant.chars["fill_mass"]
    rows = [
        MeasurementInput(
            unit_id=c.pk,
            characteristic_id=fill.pk,
            value=410.0 + (i % 7) * 0.3,
            measured_at=at + timedelta(seconds=i),
        )
        for i, c in enumerate(cells)
    ]
    bad = [
        *rows[:-1],
        MeasurementInput(
            unit_id=cells[-1].pk, characteristic_id=fill.pk, value=float("nan"), measured_at=at
        ),
    ]
    with pytest.raises(InvalidInput) as err:
        measurements_record(rows=bad, actor=actor)
    assert err.value.field == "rows[2499].value"
    assert not Measurement.objects.exists()
    created = measurements_record(rows=rows, actor=actor)
    assert len(created) == 2500
    assert Measurement.objects.filter(in_spec=True).count() == 2500


def test_future_dated_and_unknown_characteristic_are_refused(plant, actor):
    cell = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    fill = plant.chars["fill_mass"]
    with pytest.raises(InvalidInput) as err:
        measurements_record(
            rows=[
                MeasurementInput(
                    unit_id=cell.pk,
                    characteristic_id=fill.pk,
                    value=410.0,
                    measured_at=timezone.now() + timedelta(hours=2),
                )
            ],
            actor=actor,
        )
    assert err.value.field == "rows[0].measured_at"
    with pytest.raises(NotFound) as err:
        measurements_record(
            rows=[
                MeasurementInput(
                    unit_id=cell.pk,
                    characteristic_id=999999,
                    value=410.0,
                    measured_at=timezone.now(),
                )
            ],
            actor=actor,
        )
    assert err.value.field == "rows[0].characteristic"
    assert not Measurement.objects.exists()


def test_plain_serial_must_match_the_line_scheme(plant, actor):
    plant.line.serial_scheme = r"P1[0-9]{11}"
    plant.line.save()
    with pytest.raises(InvalidInput) as err:
        unit_create(kind=UnitKind.CELL, serial="X-12", line=plant.line, actor=actor)
    assert err.value.code == "serial_scheme"
    with pytest.raises(InvalidInput) as err:
        unit_create(
            kind=UnitKind.CELL, serial="(01)09521234543213(21)P1264", line=plant.line, actor=actor
        )
    assert err.value.code == "serial_scheme"
    with pytest.raises(InvalidInput) as err:
        unit_create(
            kind=UnitKind.CELL,
            serial="(01)09501101530003(21)P126480000001",
            line=plant.line,
            actor=actor,
        )
    assert err.value.code == "wrong_gtin"
    assert not Unit.objects.exists()


def test_malformed_gs1_is_refused_naming_the_field(plant, actor):
    with pytest.raises(InvalidInput) as err:
        unit_create(
            kind=UnitKind.CELL,
            serial="(01)0952123454(21)P126480000001",
            line=plant.line,
            actor=actor,
        )
    assert err.value.field == "serial"
    with pytest.raises(InvalidInput) as err:
        unit_create(
            kind=UnitKind.CELL, serial="(01)09521234543213(10)L2611A", line=plant.line, actor=actor
        )
    assert "AI 21" in err.value.message
    assert not Unit.objects.exists()


def test_adjacent_segments_are_fine_overlapping_ones_are_not(plant, actor):
    """Segments are half-open: [10.0, 10.9) and [10.9, 11.8) touch without overlapping."""
    coil = unit_create(
        kind=UnitKind.SLIT_COIL,
        serial="SC-C-000001-A",
        line=plant.line,
        length_m=1500.0,
        actor=actor,
    )
    c1 = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    c2 = unit_create(kind=UnitKind.CELL, serial="P126480000002", line=plant.line, actor=actor)
    coil_segment_consume(coil=coil, consumer=c1, start_m=10.0, end_m=10.9, actor=actor)
    with pytest.raises(Refused):
        coil_segment_consume(coil=coil, consumer=c2, start_m=10.5, end_m=11.4, actor=actor)
    coil_segment_consume(coil=coil, consumer=c2, start_m=10.9, end_m=11.8, actor=actor)
    assert list(Link.objects.order_by("start_m").values_list("start_m", "end_m")) == [
        (10.0, 10.9),
        (10.9, 11.8),
    ]


def test_the_event_names_each_characteristics_earliest_new_value(plant, actor, monkeypatch):
    """SPC restarts its evaluation in time order from there (values may arrive late)."""
    from genealogy.events import MeasurementsRecorded
    from qms import events

    published = []
    monkeypatch.setattr(events, "publish", published.append)
    cell = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    fill = plant.chars["fill_mass"]
    at = timezone.now() - timedelta(hours=1)
    measurements_record(
        rows=[
            MeasurementInput(cell.pk, fill.pk, 410.2, at + timedelta(minutes=5)),
            MeasurementInput(cell.pk, fill.pk, 410.4, at),  # late: measured first
        ],
        actor=actor,
    )
    [evt] = [e for e in published if isinstance(e, MeasurementsRecorded)]
    assert evt.characteristic_ids == (fill.pk,)
    assert evt.earliest_measured_at == ((fill.pk, at),)
