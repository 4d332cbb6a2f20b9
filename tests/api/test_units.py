"""Units: list filters, cursor pagination, and the detail by serial."""

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from genealogy.choices import UnitKind
from genealogy.services import cell_replace, units_create_bulk
from qms.models import Line
from tests.api.conftest import cell_serial, gs1
from tests.factories import LineFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # early shift, week 48


def serials(response) -> list[str]:
    return [u["serial"] for u in response.json()["results"]]


@pytest.fixture
def shift(plant, actor):
    """Cells from line 1 over one shift, and two from a second (cylindrical) line."""
    cells = []
    for hour in range(3):
        cells += units_create_bulk(
            kind=UnitKind.CELL,
            serials=[cell_serial(100 + hour * 10 + i) for i in range(1, 4)],
            line=plant.line,
            produced_at=T0 + timedelta(hours=hour),
            actor=actor,
        )
    line2 = LineFactory(code="l2-cyl", name="Cylindrical line 2 (21700)", gtin="")
    other = units_create_bulk(
        kind=UnitKind.CELL,
        serials=["C2L0000001", "C2L0000002"],
        line=line2,
        produced_at=T0,
        actor=actor,
    )
    return cells, other, line2


def test_list_filters_by_kind_status_and_line(read_client, run, hold, shift):
    _cells, _other, line2 = shift
    hold([run.cells[0], run.cells[1]])
    on_hold = read_client.get("/api/v1/units/", {"kind": "cell", "status": "on_hold"})
    assert sorted(serials(on_hold)) == [run.cells[0].serial, run.cells[1].serial]

    modules_and_packs = read_client.get("/api/v1/units/?kind=module&kind=pack")
    assert serials(modules_and_packs) == ["PK2648000001", "M2648000001"]

    for ref in ("l2-cyl", str(line2.pk), "gf1/l2-cyl"):
        by_line = read_client.get("/api/v1/units/", {"line": ref})
        assert serials(by_line) == ["C2L0000002", "C2L0000001"], ref
    assert serials(read_client.get("/api/v1/units/", {"line": "l9-none"})) == []


def test_list_filters_by_production_time(read_client, shift):
    response = read_client.get(
        "/api/v1/units/",
        {
            "produced_after": (T0 + timedelta(hours=1)).isoformat(),
            "produced_before": (T0 + timedelta(hours=2)).isoformat(),
        },
    )
    assert serials(response) == [cell_serial(113), cell_serial(112), cell_serial(111)]


def test_list_filters_by_serial_exact_gs1_and_prefix(read_client, shift):
    exact = read_client.get("/api/v1/units/", {"serial": cell_serial(121)})
    assert serials(exact) == [cell_serial(121)]
    scanned = read_client.get("/api/v1/units/", {"serial": gs1(cell_serial(121))})
    assert serials(scanned) == [cell_serial(121)]
    prefix = read_client.get("/api/v1/units/", {"serial_prefix": "P12648000010"})
    assert serials(prefix) == [cell_serial(103), cell_serial(102), cell_serial(101)]


def test_list_filter_bad_input_names_the_field(read_client, shift):
    response = read_client.get("/api/v1/units/", {"kind": "battery"})
    assert response.status_code == 400
    assert list(response.json()) == ["kind"]
    response = read_client.get("/api/v1/units/", {"serial": "(01)09521234543214(21)P1"})
    assert response.status_code == 400
    assert response.json()["field"] == "serial"
    assert response.json()["code"] == "check_digit"


def test_cursor_pagination_walks_every_unit_once(read_client, shift):
    cells, other, _ = shift
    seen, url, pages = [], "/api/v1/units/?kind=cell&page_size=4", 0
    while url:
        page = read_client.get(url).json()
        assert set(page) == {"next", "previous", "results"}
        seen += [u["serial"] for u in page["results"]]
        url, pages = page["next"], pages + 1
    assert pages == 3
    expected = [u.serial for u in sorted([*cells, *other], key=lambda u: -u.pk)]
    assert seen == expected


def test_list_rows_carry_status_and_detail_url(read_client, run):
    response = read_client.get("/api/v1/units/", {"serial": run.module.serial})
    (row,) = response.json()["results"]
    assert row["kind"] == "module"
    assert row["status"] == "in_process"
    assert row["line_code"] == "l1-pri"
    assert row["url"] == "http://testserver/api/v1/units/M2648000001/?kind=module"


def test_unit_detail_has_links_one_level_up_and_down(read_client, run):
    response = read_client.get(f"/api/v1/units/{run.module.serial}/")
    assert response.status_code == 200
    body = response.json()
    assert (body["kind"], body["serial"], body["status"]) == ("module", "M2648000001", "in_process")
    assert [(link["unit"]["serial"], link["slot"], link["kind"]) for link in body["upstream"]] == [
        (cell_serial(1), "C001", "assembled"),
        (cell_serial(2), "C002", "assembled"),
        (cell_serial(3), "C003", "assembled"),
        (cell_serial(4), "C004", "assembled"),
    ]
    assert [(link["unit"]["serial"], link["slot"]) for link in body["downstream"]] == [
        ("PK2648000001", "M01")
    ]
    assert (body["upstream_count"], body["downstream_count"]) == (4, 1)
    assert body["related"] == {
        "trace_backward": "http://testserver/api/v1/trace/backward/?serial=M2648000001",
        "trace_forward": "http://testserver/api/v1/trace/forward/?serial=M2648000001",
        "recall_scope": "http://testserver/api/v1/recall-scope/?serial=M2648000001",
        "holds": "http://testserver/api/v1/units/M2648000001/holds/",
    }
    for url in body["related"].values():
        assert read_client.get(url).status_code == 200, url


def test_unit_detail_shows_coil_segment_and_lot(read_client, run):
    cell = read_client.get(f"/api/v1/units/{cell_serial(2)}/").json()
    (segment,) = cell["upstream"]
    assert segment["unit"]["serial"] == "SC-C-000001-A"
    assert (segment["kind"], segment["start_m"], segment["end_m"]) == ("consumed", 2.4, 4.8)
    coil = read_client.get("/api/v1/units/CC-000001/").json()
    (lot,) = coil["upstream"]
    assert (lot["unit"]["serial"], lot["quantity"], lot["quantity_unit"]) == (
        "CAM-NMC811-2611-07",
        412.5,
        "kg",
    )


def test_unit_detail_keeps_removed_links_after_rework(read_client, run, actor):
    cell_replace(
        assembly=run.module,
        removed=run.cells[2],
        replacement=run.spare_cells[0],
        reason="NCR-2026-0141: cell 3 OCV drop 12 mV after aging",
        actor=actor,
    )
    body = read_client.get(f"/api/v1/units/{run.module.serial}/").json()
    slot3 = [(x["unit"]["serial"], x["active"], x["removed_reason"]) for x in body["upstream"]]
    assert slot3[2] == (
        cell_serial(3),
        False,
        "NCR-2026-0141: cell 3 OCV drop 12 mV after aging",
    )
    assert slot3[4] == (cell_serial(5), True, "")
    removed_cell = read_client.get(f"/api/v1/units/{cell_serial(3)}/").json()
    assert [(x["unit"]["serial"], x["active"]) for x in removed_cell["downstream"]] == [
        ("M2648000001", False)
    ]


def test_unit_detail_by_gs1_string(read_client, run):
    response = read_client.get(f"/api/v1/units/{quote(gs1(cell_serial(1)))}/")
    assert response.status_code == 200
    assert response.json()["serial"] == cell_serial(1)


def test_unknown_serial_is_404_naming_it(read_client, run):
    response = read_client.get("/api/v1/units/P126489999999/")
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No unit with serial 'P126489999999'.",
        "field": "serial",
    }


def test_wrong_check_digit_is_400_naming_the_field(read_client, run):
    response = read_client.get(f"/api/v1/units/{quote('(01)09521234543214(21)' + cell_serial(1))}/")
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["field"]) == ("check_digit", "serial")
    assert "09521234543214" in body["detail"]


def test_malformed_gs1_is_400_naming_the_field(read_client, run):
    response = read_client.get(f"/api/v1/units/{quote('(01)0952123(21)')}/")
    assert response.status_code == 400
    assert response.json()["field"] == "serial"
    assert response.json()["code"] == "invalid"


def test_detail_kind_disambiguates(read_client, run):
    response = read_client.get(f"/api/v1/units/{run.slit.serial}/", {"kind": "coil"})
    assert response.status_code == 404
    assert (
        response.json()["detail"] == "No electrode coil (mother roll) with serial 'SC-C-000001-A'."
    )
    response = read_client.get(f"/api/v1/units/{run.slit.serial}/", {"kind": "slitcoil"})
    assert response.status_code == 400
    assert response.json()["field"] == "kind"


def test_unit_detail_query_count(read_client, run, django_assert_max_num_queries):
    read_client.get("/api/v1/plant/sites/")  # first use of the token stamps last_used_at
    # token (1), unit (1), upstream links (1), downstream links (1)
    with django_assert_max_num_queries(4):
        response = read_client.get(f"/api/v1/units/{run.module.serial}/")
    assert response.status_code == 200


def test_unit_list_query_count(read_client, shift, django_assert_max_num_queries):
    read_client.get("/api/v1/plant/sites/")
    # token (1), units with their line (1)
    with django_assert_max_num_queries(2):
        response = read_client.get("/api/v1/units/", {"page_size": 100})
    assert len(response.json()["results"]) == 11


def test_lines_are_not_duplicated_by_site_filter(read_client, shift):
    assert Line.objects.count() == 2
    response = read_client.get("/api/v1/plant/lines/", {"site": "gf1"})
    assert [x["code"] for x in response.json()["results"]] == ["l1-pri", "l2-cyl"]
