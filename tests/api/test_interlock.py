"""The station interlock: may unit X enter station Y? Answered for line PLCs."""

from urllib.parse import quote

import pytest

from compliance.services import unit_status_set
from genealogy.choices import UnitStatus, VisitResult
from genealogy.services import visit_record
from tests.api.conftest import cell_serial, gs1

pytestmark = pytest.mark.django_db

URL = "/api/v1/interlock/"


def ask(client, unit: str, station: str):
    return client.get(f"{URL}?unit={quote(unit)}&station={quote(station)}")


def test_clean_cell_may_enter(read_client, run, plant):
    for station in ("l1-pri/mod-asm", "gf1/l1-pri/mod-asm", str(plant.stations["mod-asm"].pk)):
        response = ask(read_client, gs1(cell_serial(1)), station)
        assert response.status_code == 200
        assert response.json() == {
            "allowed": True,
            "reasons": [],
            "holds": [],
            "unit": {"kind": "cell", "serial": cell_serial(1), "status": "in_process"},
            "station": {
                "id": plant.stations["mod-asm"].pk,
                "code": "mod-asm",
                "line_code": "l1-pri",
            },
        }


def test_held_cell_is_refused_with_the_hold(read_client, run, hold):
    held = hold([run.spare_cells[0]], reason="Leak rate 2.1e-6 mbar·l/s above 1e-6 at LEAK-01")
    body = ask(read_client, cell_serial(5), "l1-pri/mod-asm").json()
    assert body["allowed"] is False
    assert body["reasons"] == [
        f"on hold {held.number}: Leak rate 2.1e-6 mbar·l/s above 1e-6 at LEAK-01"
    ]
    assert [(h["number"], h["source"]) for h in body["holds"]] == [(held.number, "manual")]
    assert body["unit"]["status"] == "on_hold"


def test_cell_from_a_held_coil_is_refused_naming_the_coil(read_client, run, hold):
    held = hold([run.slit], reason="Coating weight above USL at m 410-425")
    body = ask(read_client, cell_serial(2), "l1-pri/mod-asm").json()
    assert body["allowed"] is False
    assert body["reasons"] == [
        "upstream slit coil SC-C-000001-A is on hold: "
        f"hold {held.number} (Manual): Coating weight above USL at m 410-425"
    ]
    assert body["holds"] == []


def test_scrapped_cell_and_nok_visit_are_refused(read_client, run, plant, actor):
    unit_status_set(
        unit=run.spare_cells[0], status=UnitStatus.SCRAPPED, actor=actor, reason="dropped"
    )
    assert ask(read_client, cell_serial(5), "l1-pri/mod-asm").json()["reasons"] == [
        "scrapped: dropped"
    ]
    visit_record(
        unit=run.spare_cells[1],
        station=plant.stations["fill"],
        started_at=run.spare_cells[1].produced_at,
        result=VisitResult.NOK,
        actor=actor,
    )
    body = ask(read_client, cell_serial(6), "l1-pri/mod-asm").json()
    assert (body["allowed"], body["reasons"]) == (False, ["last visit at fill ended NOK"])


def test_unknown_unit_is_404_naming_it(read_client, run):
    response = ask(read_client, "P126489999999", "l1-pri/mod-asm")
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No unit with serial 'P126489999999'.",
        "field": "unit",
    }


def test_unknown_station_is_404_naming_it(read_client, run):
    response = ask(read_client, cell_serial(1), "l1-pri/weld-9")
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No station 'l1-pri/weld-9'.",
        "field": "station",
    }


def test_wrong_check_digit_is_400_naming_unit(read_client, run):
    response = ask(read_client, f"(01)09521234543214(21){cell_serial(1)}", "l1-pri/mod-asm")
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("check_digit", "unit")


def test_missing_parameters_are_400(read_client, run):
    response = read_client.get(URL, {"unit": cell_serial(1)})
    assert response.status_code == 400
    assert response.json() == {"station": ["This field is required."]}


def test_interlock_is_a_handful_of_queries(read_client, run, hold, django_assert_max_num_queries):
    hold([run.slit], reason="Coating weight above USL")
    read_client.get("/api/v1/plant/sites/")  # first use of the token stamps last_used_at
    # token, unit, station, open holds, upstream CTE, last visit
    with django_assert_max_num_queries(6):
        response = ask(read_client, gs1(cell_serial(1)), "l1-pri/mod-asm")
    assert response.json()["allowed"] is False
