"""Genealogy commands through the API: each calls one service; a refusal writes nothing."""

from datetime import UTC, datetime

import pytest

from genealogy.choices import LinkKind, UnitStatus
from genealogy.models import Link, StationVisit, Unit
from tests.api.conftest import cell_serial, gs1

pytestmark = pytest.mark.django_db


def test_create_coil_with_its_length(write_client, plant):
    response = write_client.post(
        "/api/v1/units/create/",
        {"kind": "coil", "serial": "CC-000002", "line": "gf1/l1-pri", "length_m": 3200.0},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["kind"], body["serial"], body["length_m"], body["line_code"]) == (
        "coil",
        "CC-000002",
        3200.0,
        "l1-pri",
    )
    assert Unit.objects.get(serial="CC-000002").history.get().history_change_reason == "created"


def test_create_coil_without_length_is_400_naming_length_m(write_client, plant):
    response = write_client.post(
        "/api/v1/units/create/", {"kind": "coil", "serial": "CC-000002"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": "A coil needs a positive length in metres.",
        "field": "length_m",
    }
    assert not Unit.objects.exists()


def test_bulk_create_from_gs1_strings(write_client, plant):
    response = write_client.post(
        "/api/v1/units/create-bulk/",
        {"kind": "cell", "line": "l1-pri", "serials": [gs1(cell_serial(n)) for n in (1, 2, 3)]},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["created"] == 3
    assert [u["serial"] for u in response.json()["units"]] == [cell_serial(n) for n in (1, 2, 3)]
    assert set(Unit.objects.values_list("gtin", "batch_lot")) == {("09521234543213", "L2611A")}


def test_bulk_create_wrong_check_digit_is_400_naming_the_row(write_client, plant):
    bad = f"(01)09521234543214(21){cell_serial(2)}"
    response = write_client.post(
        "/api/v1/units/create-bulk/",
        {"kind": "cell", "line": "l1-pri", "serials": [gs1(cell_serial(1)), bad]},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["field"]) == ("check_digit", "serials[1]")
    assert not Unit.objects.exists()


def test_bulk_create_existing_serial_is_409(write_client, run):
    response = write_client.post(
        "/api/v1/units/create-bulk/",
        {"kind": "cell", "line": "l1-pri", "serials": [cell_serial(90), cell_serial(1)]},
        format="json",
    )
    assert response.status_code == 409
    assert response.json() == {
        "code": "duplicate",
        "detail": "1 serial(s) exist already, e.g. 'P126480000001'.",
        "field": "serials",
    }
    assert not Unit.objects.filter(serial=cell_serial(90)).exists()


def test_unknown_line_is_404_naming_it(write_client, plant):
    response = write_client.post(
        "/api/v1/units/create-bulk/",
        {"kind": "cell", "line": "l7-pouch", "serials": [cell_serial(1)]},
        format="json",
    )
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No line 'l7-pouch'.",
        "field": "line",
    }
    assert not Unit.objects.exists()


def test_consume_coil_segment(write_client, run):
    response = write_client.post(
        "/api/v1/links/consume-coil-segment/",
        {"coil": run.slit.serial, "consumer": cell_serial(5), "start_m": 9.6, "end_m": 12.0},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["source"]["serial"], body["target"]["serial"]) == ("SC-C-000001-A", cell_serial(5))
    assert (body["kind"], body["start_m"], body["end_m"], body["active"]) == (
        "consumed",
        9.6,
        12.0,
        True,
    )


def test_overlapping_coil_segment_is_409_naming_the_field_and_nothing_written(write_client, run):
    links_before = Link.objects.count()
    response = write_client.post(
        "/api/v1/links/consume-coil-segment/",
        {"coil": run.slit.serial, "consumer": cell_serial(5), "start_m": 8.0, "end_m": 10.4},
        format="json",
    )
    assert response.status_code == 409
    assert response.json() == {
        "code": "segment_overlap",
        "detail": "Segment [8, 10.4) m of coil SC-C-000001-A overlaps [7.2, 9.6) m already "
        "consumed by Cell P126480000004.",
        "field": "start_m",
    }
    assert Link.objects.count() == links_before
    assert not Link.objects.filter(target=run.spare_cells[0]).exists()


def test_segment_outside_the_coil_is_409_naming_end_m(write_client, run):
    links_before = Link.objects.count()
    response = write_client.post(
        "/api/v1/links/consume-coil-segment/",
        {"coil": run.slit.serial, "consumer": cell_serial(5), "start_m": 1498.0, "end_m": 1500.4},
        format="json",
    )
    assert response.status_code == 409
    assert (response.json()["code"], response.json()["field"]) == ("segment_outside_coil", "end_m")
    assert Link.objects.count() == links_before


def test_missing_field_is_400_in_drf_shape(write_client, run):
    response = write_client.post(
        "/api/v1/links/consume-coil-segment/",
        {"coil": run.slit.serial, "consumer": cell_serial(5), "start_m": 9.6},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"end_m": ["This field is required."]}


def test_unknown_serial_in_a_command_is_404_naming_serial_and_field(write_client, run):
    links_before = Link.objects.count()
    response = write_client.post(
        "/api/v1/links/assemble/",
        {"part": "P126489999999", "assembly": run.module.serial, "slot": "C005"},
        format="json",
    )
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No unit with serial 'P126489999999'.",
        "field": "part",
    }
    assert Link.objects.count() == links_before


def test_consume_lot(write_client, run):
    response = write_client.post(
        "/api/v1/links/consume-lot/",
        {
            "lot": run.lot.serial,
            "consumer": run.module.serial,
            "quantity": 0.35,
            "quantity_unit": "kg",
        },
        format="json",
    )
    assert response.status_code == 201
    assert (response.json()["quantity"], response.json()["quantity_unit"]) == (0.35, "kg")


def test_assemble_cell_into_module_slot(write_client, run):
    response = write_client.post(
        "/api/v1/links/assemble/",
        {"part": gs1(cell_serial(5)), "assembly": run.module.serial, "slot": "C005"},
        format="json",
    )
    assert response.status_code == 201
    assert (response.json()["kind"], response.json()["slot"]) == ("assembled", "C005")
    assert Link.objects.filter(
        source=run.spare_cells[0], target=run.module, kind=LinkKind.ASSEMBLED, slot="C005"
    ).exists()


def test_assembling_a_held_cell_is_409_with_the_holds_reason(write_client, run, hold):
    held = hold([run.spare_cells[0]], reason="Electrolyte fill mass 404.1 g below LSL 405.9 g")
    links_before = Link.objects.count()
    response = write_client.post(
        "/api/v1/links/assemble/",
        {"part": cell_serial(5), "assembly": run.module.serial, "slot": "C005"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json() == {
        "code": "unit_on_hold",
        "detail": f"Cell P126480000005 is on hold: hold {held.number} (Manual): "
        "Electrolyte fill mass 404.1 g below LSL 405.9 g",
        "field": "part",
    }
    assert Link.objects.count() == links_before


def test_taken_slot_is_409(write_client, run):
    response = write_client.post(
        "/api/v1/links/assemble/",
        {"part": cell_serial(5), "assembly": run.module.serial, "slot": "C001"},
        format="json",
    )
    assert response.status_code == 409
    assert (response.json()["code"], response.json()["field"]) == ("slot_taken", "slot")


def test_replace_cell_closes_the_old_link_and_adds_the_new(write_client, run):
    response = write_client.post(
        "/api/v1/links/replace-cell/",
        {
            "assembly": run.module.serial,
            "removed": cell_serial(3),
            "replacement": cell_serial(6),
            "reason": "NCR-2026-0141: OCV drop 12 mV after aging",
        },
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["removed_link"]["source"]["serial"] == cell_serial(3)
    assert body["removed_link"]["active"] is False
    assert body["removed_link"]["removed_reason"] == "NCR-2026-0141: OCV drop 12 mV after aging"
    assert (body["new_link"]["source"]["serial"], body["new_link"]["slot"]) == (
        cell_serial(6),
        "C003",
    )
    assert Link.objects.filter(target=run.module).count() == 5


def test_replace_cell_without_reason_is_400_and_nothing_written(write_client, run):
    response = write_client.post(
        "/api/v1/links/replace-cell/",
        {"assembly": run.module.serial, "removed": cell_serial(3), "replacement": cell_serial(6)},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"reason": ["This field is required."]}
    assert Link.objects.get(source=run.cells[2], target=run.module).removed_at is None
    assert not Link.objects.filter(source=run.spare_cells[1]).exists()


def test_record_station_visit(write_client, run, plant):
    response = write_client.post(
        "/api/v1/visits/record/",
        {
            "unit": gs1(cell_serial(1)),
            "station": "l1-pri/fill",
            "equipment": plant.equipment["weigher"].pk,
            "started_at": "2026-11-23T06:14:05Z",
            "ended_at": "2026-11-23T06:14:41Z",
            "result": "ok",
            "program": "FILL-105AH-v3",
        },
        format="json",
    )
    assert response.status_code == 201
    visit = StationVisit.objects.get()
    assert (visit.unit, visit.station, visit.equipment) == (
        run.cells[0],
        plant.stations["fill"],
        plant.equipment["weigher"],
    )
    assert visit.started_at == datetime(2026, 11, 23, 6, 14, 5, tzinfo=UTC)
    assert response.json()["station_code"] == "fill"


def test_visit_with_equipment_of_another_station_is_400(write_client, run, plant):
    response = write_client.post(
        "/api/v1/visits/record/",
        {
            "unit": cell_serial(1),
            "station": "l1-pri/fill",
            "equipment": plant.equipment["coater"].pk,
            "started_at": "2026-11-23T06:14:05Z",
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["field"] == "equipment"
    assert not StationVisit.objects.exists()


def test_unit_status_is_not_writable_through_genealogy_commands(write_client, run):
    response = write_client.post(
        "/api/v1/units/create/",
        {"kind": "cell", "serial": cell_serial(50), "status": "released"},
        format="json",
    )
    assert response.status_code == 201
    assert Unit.objects.get(serial=cell_serial(50)).status == UnitStatus.IN_PROCESS
