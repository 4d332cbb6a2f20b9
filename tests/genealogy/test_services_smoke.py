"""Genealogy services: the happy path and the refusals of the digital thread."""

import pytest

from compliance.choices import HoldSource
from compliance.services import hold_place, hold_release
from genealogy.choices import LinkKind, UnitKind, UnitStatus
from genealogy.models import Link, Unit
from genealogy.services import (
    cell_replace,
    coil_segment_consume,
    coil_slit,
    unit_assemble,
    unit_create,
)
from qms.exceptions import InvalidInput, Refused
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


def test_cycle_is_refused(plant, actor):
    mother = unit_create(
        kind=UnitKind.COIL, serial="CC-000001", line=plant.line, length_m=3000.0, actor=actor
    )
    slit = unit_create(
        kind=UnitKind.SLIT_COIL, serial="SC-000001-A", line=plant.line, length_m=3000.0, actor=actor
    )
    coil_slit(mother=mother, slit_coil=slit, start_m=0, end_m=3000, actor=actor)
    cell = unit_create(kind=UnitKind.CELL, serial="P126480000001", line=plant.line, actor=actor)
    module = unit_create(kind=UnitKind.MODULE, serial="M2648000001", line=plant.line, actor=actor)
    unit_assemble(part=cell, assembly=module, slot="C01", actor=actor)
    pack = unit_create(kind=UnitKind.PACK, serial="PK2648000001", line=plant.line, actor=actor)
    unit_assemble(part=module, assembly=pack, slot="M01", actor=actor)
    with pytest.raises((Refused, InvalidInput)):
        unit_assemble(part=pack, assembly=module, actor=actor)
    assert Link.objects.filter(kind=LinkKind.ASSEMBLED).count() == 2


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
