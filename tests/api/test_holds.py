"""Holds through the API: place, list, detail, release (status restored), a unit's holds."""

from datetime import timedelta

import pytest
from django.utils import timezone

from compliance.choices import HoldSource, HoldStatus
from compliance.models import Hold, HoldUnit
from compliance.services import hold_release, unit_status_set
from genealogy.choices import UnitStatus
from genealogy.models import Unit
from tests.api.conftest import cell_serial, gs1

pytestmark = pytest.mark.django_db

PLACE = "/api/v1/holds/place/"


def status_of(*units) -> list[str]:
    return [Unit.objects.get(pk=u.pk).status for u in units]


@pytest.fixture
def qe(login):
    return login("quality_engineer")


def test_place_and_release_round_trip_restores_each_status(qe, run, actor):
    released_cell = unit_status_set(
        unit=run.spare_cells[0], status=UnitStatus.RELEASED, actor=actor, reason="graded A"
    )
    cells = [run.cells[0], released_cell]
    placed = qe.post(
        PLACE,
        {
            "units": [cell_serial(1), gs1(cell_serial(5))],
            "reason": "Tab weld pull force 38 N below 45 N at TW-02, shift B",
            "source": "spc",
            "source_reference": "SPC alarm 2026-11-23 TW-02 pull force rule 1",
        },
        format="json",
    )
    assert placed.status_code == 201, placed.content
    body = placed.json()
    number = body["number"]
    assert number.startswith(f"H-{timezone.now():%Y}-")
    assert (body["status"], body["source"], body["unit_count"], body["placed_by"]) == (
        "open",
        "spc",
        2,
        "quality_engineer-1",
    )
    assert [(u["serial"], u["status"], u["previous_status"]) for u in body["units"]] == [
        (cell_serial(1), "on_hold", "in_process"),
        (cell_serial(5), "on_hold", "released"),
    ]
    assert status_of(*cells) == ["on_hold", "on_hold"]
    assert Unit.objects.get(pk=run.cells[0].pk).status_reason == (
        f"hold {number} (SPC alarm): Tab weld pull force 38 N below 45 N at TW-02, shift B"
    )

    released = qe.post(
        f"/api/v1/holds/{number}/release/",
        {"reason": "MRB: 32 cells re-pulled, all >= 52 N; weld head replaced"},
        format="json",
    )
    assert released.status_code == 200, released.content
    assert (released.json()["status"], released.json()["released_by"]) == (
        "released",
        "quality_engineer-1",
    )
    assert status_of(*cells) == ["in_process", "released"]
    history = Unit.objects.get(pk=run.cells[0].pk).history.order_by("-history_id")[:2]
    assert [h.history_change_reason for h in history] == [
        f"{number} released: MRB: 32 cells re-pulled, all >= 52 N; weld head replaced",
        f"{number} placed: Tab weld pull force 38 N below 45 N at TW-02, shift B",
    ]
    assert history[0].history_user == qe.user


def test_release_twice_is_409(qe, run, hold):
    held = hold([run.cells[0]])
    url = f"/api/v1/holds/{held.number}/release/"
    assert qe.post(url, {"reason": "re-measured OK"}, format="json").status_code == 200
    again = qe.post(url, {"reason": "re-measured OK"}, format="json")
    assert again.status_code == 409
    assert (again.json()["code"], again.json()["field"]) == ("already_released", "hold")


def test_release_without_reason_is_400_and_hold_stays_open(qe, run, hold):
    held = hold([run.cells[0]])
    response = qe.post(f"/api/v1/holds/{held.number}/release/", {"reason": " "}, format="json")
    assert response.status_code == 400
    assert response.json() == {"reason": ["This field may not be blank."]}
    assert Hold.objects.get(pk=held.pk).status == HoldStatus.OPEN
    assert status_of(run.cells[0]) == ["on_hold"]


def test_release_unknown_hold_is_404_naming_it(qe, run):
    response = qe.post("/api/v1/holds/H-2026-999999/release/", {"reason": "x"}, format="json")
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No hold 'H-2026-999999'.",
        "field": "number",
    }


def test_place_with_unknown_serial_is_404_and_nothing_written(qe, run):
    response = qe.post(
        PLACE,
        {"units": [cell_serial(1), "P126489999999"], "reason": "supplier notice 4471"},
        format="json",
    )
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No unit with serial 'P126489999999'.",
        "field": "units[1]",
    }
    assert not Hold.objects.exists()
    assert status_of(run.cells[0]) == ["in_process"]


def test_place_with_wrong_check_digit_is_400_naming_the_entry(qe, run):
    response = qe.post(
        PLACE,
        {"units": [f"(01)09521234543214(21){cell_serial(1)}"], "reason": "vision: tab fold"},
        format="json",
    )
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("check_digit", "units[0]")
    assert not Hold.objects.exists()


def test_place_without_reason_is_400(qe, run):
    response = qe.post(PLACE, {"units": [cell_serial(1)]}, format="json")
    assert response.status_code == 400
    assert response.json() == {"reason": ["This field is required."]}
    assert not Hold.objects.exists()


def test_list_filters(read_client, run, hold):
    h1 = hold([run.cells[0]], reason="Fill mass low", source=HoldSource.MANUAL)
    h2 = hold([run.cells[1], run.module], reason="Vision: separator fold", source=HoldSource.VISION)
    h3 = hold([run.lot], reason="Supplier notice SN-4471", source=HoldSource.SUPPLIER_NOTICE)
    Hold.objects.filter(pk=h1.pk).update(placed_at=timezone.now() - timedelta(days=3))
    hold_release(hold=h3, actor=h3.placed_by, reason="supplier CoA re-issued, lot OK")

    def numbers(**params):
        response = read_client.get("/api/v1/holds/", params)
        assert response.status_code == 200, response.content
        return [h["number"] for h in response.json()["results"]]

    assert numbers() == [h3.number, h2.number, h1.number]
    assert numbers(status="open") == [h2.number, h1.number]
    assert numbers(source="vision") == [h2.number]
    assert numbers(source=["manual", "supplier_notice"]) == [h3.number, h1.number]
    assert numbers(placed_before=(timezone.now() - timedelta(days=1)).isoformat()) == [h1.number]
    assert numbers(unit=run.module.serial) == [h2.number]
    row = read_client.get("/api/v1/holds/", {"source": "vision"}).json()["results"][0]
    assert (row["unit_count"], row["reason"]) == (2, "Vision: separator fold")


def test_detail_and_unit_pages(read_client, run, hold):
    held = hold(run.cells, reason="Coating weight above USL on CC-000001 m 410-425")
    detail = read_client.get(f"/api/v1/holds/{held.number}/")
    assert detail.status_code == 200
    assert [u["serial"] for u in detail.json()["units"]] == [c.serial for c in run.cells]
    assert detail.json()["units_url"] == f"http://testserver/api/v1/holds/{held.number}/units/"

    page = read_client.get(f"/api/v1/holds/{held.number}/units/", {"page_size": 3}).json()
    assert [u["serial"] for u in page["results"]] == [c.serial for c in run.cells[:3]]
    rest = read_client.get(page["next"]).json()
    assert [u["serial"] for u in rest["results"]] == [run.cells[3].serial]


def test_unit_holds(read_client, run, hold, actor):
    first = hold([run.cells[0]], reason="Fill mass low")
    second = hold([run.cells[0], run.cells[1]], reason="K-value 0.21 mV/day above 0.15")
    hold_release(hold=first, actor=actor, reason="re-weighed 410.3 g")
    response = read_client.get(f"/api/v1/units/{cell_serial(1)}/holds/")
    assert response.status_code == 200
    body = response.json()
    assert body["unit"]["status"] == "on_hold"
    assert [h["number"] for h in body["open_holds"]] == [second.number]
    assert [h["number"] for h in body["holds"]] == [second.number, first.number]
    assert status_of(run.cells[0]) == [UnitStatus.ON_HOLD]  # the second hold still covers it
    assert HoldUnit.objects.filter(unit=run.cells[0]).count() == 2


def test_unit_holds_unknown_serial_is_404(read_client, run):
    response = read_client.get("/api/v1/units/P126489999999/holds/")
    assert response.status_code == 404
    assert response.json()["detail"] == "No unit with serial 'P126489999999'."
