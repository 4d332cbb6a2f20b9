"""Plant and control plan: read-only lists with filters."""

import pytest

from qms.choices import ProcessStep, SpecialCharacteristic
from qms.models import Characteristic

pytestmark = pytest.mark.django_db


def codes(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["code"] for row in response.json()["results"]]


def test_characteristic_filters(read_client, plant):
    Characteristic.objects.create(
        station=plant.stations["fill"],
        code="leak-rate",
        name="Helium leak rate",
        unit="mbar·l/s",
        nominal=0.0,
        usl=1e-6,
        measurement_method="helium sniffer",
        sample_frequency="100 %",
        reaction_plan="Scrap cell.",
        special_class=SpecialCharacteristic.CC,
    )
    url = "/api/v1/plant/characteristics/"
    assert codes(read_client.get(url, {"line": "l1-pri"})) == [
        "cathode-areal-weight",
        "electrolyte-fill-mass",
        "leak-rate",
    ]
    assert codes(read_client.get(url, {"station": "l1-pri/fill"})) == [
        "electrolyte-fill-mass",
        "leak-rate",
    ]
    assert codes(read_client.get(url, {"process_step": ProcessStep.COATING})) == [
        "cathode-areal-weight"
    ]
    assert codes(read_client.get(url, {"special_class": "cc"})) == [
        "electrolyte-fill-mass",
        "leak-rate",
    ]
    assert codes(read_client.get(url, {"line": "l9-none"})) == []


def test_characteristic_row_carries_limits_and_units(read_client, plant):
    response = read_client.get(f"/api/v1/plant/characteristics/{plant.chars['fill_mass'].pk}/")
    body = response.json()
    assert {k: body[k] for k in ("unit", "nominal", "lsl", "usl", "special_class")} == {
        "unit": "g",
        "nominal": 410.0,
        "lsl": 405.9,
        "usl": 414.1,
        "special_class": "cc",
    }
    assert (body["station_code"], body["line_code"], body["process_step"]) == (
        "fill",
        "l1-pri",
        "electrolyte_fill",
    )


def test_stations_and_equipment(read_client, plant):
    assert codes(read_client.get("/api/v1/plant/stations/", {"line": "gf1/l1-pri"})) == [
        "coat-c",
        "slit-c",
        "fill",
        "mod-asm",
        "pack-asm",
        "marriage",
    ]
    assert codes(
        read_client.get("/api/v1/plant/stations/", {"process_step": "vehicle_marriage"})
    ) == ["marriage"]
    assert codes(read_client.get("/api/v1/plant/equipment/", {"station": "l1-pri/fill"})) == [
        "cw-1"
    ]
    assert codes(read_client.get("/api/v1/plant/sites/")) == ["gf1"]
    assert codes(read_client.get("/api/v1/plant/lines/")) == ["l1-pri"]


def test_plant_is_read_only_even_with_a_write_token(write_client, plant):
    response = write_client.post(
        "/api/v1/plant/sites/", {"code": "gf2", "name": "Gigafactory 2", "country": "HU"}
    )
    assert response.status_code == 405
    assert codes(write_client.get("/api/v1/plant/sites/")) == ["gf1"]
