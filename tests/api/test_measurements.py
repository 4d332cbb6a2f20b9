"""Measurements: bulk recording in one call and one transaction, and the filtered list."""

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from genealogy.choices import UnitKind
from genealogy.models import Measurement
from genealogy.services import MeasurementInput, measurements_record, units_create_bulk
from qms.api.parsers import BulkJSONParser
from tests.api.conftest import cell_serial, gs1

pytestmark = pytest.mark.django_db

URL = "/api/v1/measurements/record/"
T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def fill_row(serial: str, value: float, plant, at: datetime | None = None) -> dict:
    return {
        "unit": serial,
        "characteristic": plant.chars["fill_mass"].pk,
        "value": value,
        "measured_at": (at or T0).isoformat(),
        "equipment": plant.equipment["weigher"].pk,
        "source_message_id": f"fill-01/{serial}",
    }


def _insert_statements(rows: int) -> int:
    """INSERTs bulk_create needs for ``rows`` measurements on this database (SQLite caps
    bound parameters per statement, PostgreSQL does not)."""
    fields = [f for f in Measurement._meta.concrete_fields if not f.primary_key]
    per_statement = min(2000, connection.ops.bulk_batch_size(fields, [None] * rows) or 2000)
    return math.ceil(rows / per_statement)


def test_five_thousand_rows_in_one_call(write_client, plant, actor, django_assert_max_num_queries):
    cells = units_create_bulk(
        kind=UnitKind.CELL,
        serials=[cell_serial(n) for n in range(1, 5001)],
        line=plant.line,
        actor=actor,
    )
    # A drifting check-weigher: every 1000th cell is underfilled (404.8 g < LSL 405.9 g).
    rows = [
        fill_row(
            c.serial,
            404.8 if i % 1000 == 999 else 410.0 + (i % 7) * 0.1,
            plant,
            T0 + timedelta(seconds=3 * i),
        )
        for i, c in enumerate(cells)
    ]
    write_client.get("/api/v1/plant/sites/")  # first use of the token stamps last_used_at
    # token (1), units by serial (3 chunks), equipment (1), characteristics (1), units (1),
    # inserts, savepoint/release (2): a fixed number, whatever the row count.
    with django_assert_max_num_queries(9 + _insert_statements(5000)):
        response = write_client.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 201, response.content[:500]
    body = response.json()
    assert (body["recorded"], body["out_of_spec"]) == (5000, 5)
    assert body["last_id"] - body["first_id"] == 4999
    assert [(r["row"], r["unit"], r["value"]) for r in body["out_of_spec_rows"]] == [
        (i, cell_serial(i + 1), 404.8) for i in (999, 1999, 2999, 3999, 4999)
    ]
    assert Measurement.objects.count() == 5000
    assert Measurement.objects.filter(in_spec=False).count() == 5
    first = Measurement.objects.get(unit=cells[0])
    assert (first.value, first.station, first.equipment, first.measured_at) == (
        410.0,
        plant.stations["fill"],
        plant.equipment["weigher"],
        T0,
    )
    assert first.source_message_id == f"fill-01/{cell_serial(1)}"


def test_rows_name_units_by_gs1_string(write_client, run, plant):
    rows = [fill_row(gs1(cell_serial(n)), 410.1, plant) for n in (1, 2)]
    response = write_client.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 201
    assert set(Measurement.objects.values_list("unit__serial", flat=True)) == {
        cell_serial(1),
        cell_serial(2),
    }


def test_a_bad_value_refuses_the_call_naming_the_row(write_client, run, plant):
    rows = [fill_row(cell_serial(n), 410.0, plant) for n in (1, 2, 3, 4)]
    rows[2]["value"] = "410,2"
    response = write_client.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 400
    assert response.json() == {"rows[2].value": ["A valid number is required."]}
    assert not Measurement.objects.exists()


def test_an_unknown_unit_refuses_the_call_naming_the_row_and_serial(write_client, run, plant):
    rows = [fill_row(cell_serial(n), 410.0, plant) for n in (1, 2, 3)]
    rows[1]["unit"] = "P126489999999"
    response = write_client.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No unit with serial 'P126489999999'.",
        "field": "rows[1].unit",
    }
    assert not Measurement.objects.exists()


def test_a_wrong_check_digit_refuses_the_call_naming_the_row(write_client, run, plant):
    rows = [fill_row(cell_serial(n), 410.0, plant) for n in (1, 2)]
    rows[1]["unit"] = f"(01)09521234543214(21){cell_serial(2)}"
    response = write_client.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("check_digit", "rows[1].unit")
    assert not Measurement.objects.exists()


def test_an_unknown_characteristic_refuses_the_call(write_client, run, plant):
    rows = [fill_row(cell_serial(n), 410.0, plant) for n in (1, 2)]
    rows[1]["characteristic"] = 99999
    response = write_client.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 404
    assert response.json()["field"] == "rows[1].characteristic"
    assert not Measurement.objects.exists()


def test_unknown_equipment_refuses_the_call(write_client, run, plant):
    rows = [fill_row(cell_serial(1), 410.0, plant)]
    rows[0]["equipment"] = 99999
    response = write_client.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No equipment with id 99999.",
        "field": "rows[0].equipment",
    }
    assert not Measurement.objects.exists()


def test_a_future_timestamp_refuses_the_call(write_client, run, plant):
    rows = [fill_row(cell_serial(1), 410.0, plant, timezone.now() + timedelta(hours=2))]
    response = write_client.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 400
    assert response.json()["field"] == "rows[0].measured_at"
    assert not Measurement.objects.exists()


def test_empty_call_is_400(write_client, plant):
    response = write_client.post(URL, {"rows": []}, format="json")
    assert response.status_code == 400
    assert response.json() == {"rows": {"non_field_errors": ["This list may not be empty."]}}


@pytest.fixture
def measured(run, plant, actor):
    """Fill mass of four cells over an hour (cell 3 underfilled) and coating weight along
    the mother coil."""
    fill = [
        MeasurementInput(
            unit_id=c.pk,
            characteristic_id=plant.chars["fill_mass"].pk,
            value=v,
            measured_at=T0 + timedelta(minutes=15 * i),
        )
        for i, (c, v) in enumerate(zip(run.cells, [410.2, 409.8, 404.9, 411.0], strict=True))
    ]
    coat = [
        MeasurementInput(
            unit_id=run.mother.pk,
            characteristic_id=plant.chars["coat_weight"].pk,
            value=23.0 + 0.01 * k,
            measured_at=T0 - timedelta(days=2, minutes=-k),
            position_m=0.5 * k,
        )
        for k in range(6)
    ]
    return measurements_record(rows=fill + coat, actor=actor)


def values(response) -> list[float]:
    return [m["value"] for m in response.json()["results"]]


def test_list_filters(read_client, measured, plant):
    def get(**params):
        response = read_client.get("/api/v1/measurements/", params)
        assert response.status_code == 200, response.content
        return values(response)

    assert get(unit=cell_serial(3)) == [404.9]
    assert get(unit=gs1(cell_serial(3))) == [404.9]
    assert get(in_spec="false") == [404.9]
    assert get(characteristic=plant.chars["fill_mass"].pk) == [411.0, 404.9, 409.8, 410.2]
    assert get(station="l1-pri/fill") == [411.0, 404.9, 409.8, 410.2]
    assert get(station=plant.stations["coat-c"].pk, measured_after=T0.isoformat()) == []
    assert get(line="l1-pri", measured_after=T0.isoformat()) == [411.0, 404.9, 409.8, 410.2]
    assert get(
        measured_after=(T0 + timedelta(minutes=10)).isoformat(),
        measured_before=(T0 + timedelta(minutes=40)).isoformat(),
    ) == [404.9, 409.8]


def test_list_row_shape(read_client, measured):
    response = read_client.get("/api/v1/measurements/", {"unit": "CC-000001", "page_size": 1})
    (row,) = response.json()["results"]
    assert {k: row[k] for k in ("unit", "unit_kind", "characteristic_code", "value_unit")} == {
        "unit": "CC-000001",
        "unit_kind": "coil",
        "characteristic_code": "cathode-areal-weight",
        "value_unit": "mg/cm²",
    }
    assert (row["value"], row["position_m"], row["in_spec"]) == (23.05, 2.5, True)


def test_list_cursor_pagination(read_client, measured):
    seen, url = [], "/api/v1/measurements/?page_size=3"
    while url:
        page = read_client.get(url).json()
        seen += [m["id"] for m in page["results"]]
        url = page["next"]
    assert seen == sorted((m.pk for m in measured), reverse=True)


def test_list_filter_bad_input_names_the_field(read_client, measured):
    response = read_client.get("/api/v1/measurements/", {"measured_after": "yesterday"})
    assert response.status_code == 400
    assert list(response.json()) == ["measured_after"]


def test_bulk_body_above_the_form_upload_limit_is_accepted(write_client, plant, actor, settings):
    cells = units_create_bulk(
        kind=UnitKind.CELL,
        serials=[cell_serial(n) for n in range(1, 2001)],
        line=plant.line,
        actor=actor,
    )
    body = json.dumps(
        {"rows": [fill_row(c.serial, 410.0, plant) for c in cells]}, indent=160
    ).encode()
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = write_client.post(URL, body, content_type="application/json")
    assert response.status_code == 201
    assert Measurement.objects.count() == 2000


def test_bulk_body_above_the_bulk_cap_is_413_and_nothing_written(
    write_client, run, plant, monkeypatch
):
    monkeypatch.setattr(BulkJSONParser, "max_bytes", 1024)
    rows = [fill_row(cell_serial(n), 410.0, plant) for n in (1, 2, 3, 4)] * 3
    response = write_client.post(URL, {"rows": rows}, format="json")
    assert response.status_code == 413
    assert response.json() == {
        "detail": "Request body exceeds the 1024-byte limit of bulk calls; split it."
    }
    assert not Measurement.objects.exists()


def test_nan_is_refused(write_client, run, plant):
    body = '{"rows": [{"unit": "%s", "characteristic": %d, "value": NaN, "measured_at": "%s"}]}'
    response = write_client.post(
        URL,
        body % (cell_serial(1), plant.chars["fill_mass"].pk, T0.isoformat()),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "JSON parse error - NaN is not a number here."}
    assert not Measurement.objects.exists()
