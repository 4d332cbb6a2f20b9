"""The demo plant's import profiles with the sample files the demo generates: a formation
cabinet's per-channel summary (mAh recorded in Ah, only the CC-CV charge step), the fill
station's check-weigher CSV (decimal comma) and the leak tester's workbook (Pa·m³/s
recorded in mbar·L/s)."""

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from compliance.demo.plant import seed
from genealogy.choices import UnitKind
from genealogy.models import Measurement, StationVisit
from genealogy.services import units_create_bulk
from qms.files.demo import (
    CHECKWEIGHER,
    FORMATION,
    LEAK_TEST,
    checkweigher_csv,
    formation_summary_csv,
    leak_test_xlsx,
    profiles_seed,
)
from qms.files.models import FileImportProfile
from qms.files.services import file_import
from qms.ingest.services import transport_actor
from qms.models import Line

pytestmark = pytest.mark.django_db

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def demo(db):
    seed()
    profiles_seed()
    return {p.name: p for p in FileImportProfile.objects.all()}


@pytest.fixture
def cells(demo):
    """Four 21700 cells of line L2-CYL (C2 + year 26 + week 48 + a 6-digit counter)."""
    serials = [f"C22648{n:06d}" for n in range(1, 5)]
    units_create_bulk(
        kind=UnitKind.CELL, serials=serials, line=Line.objects.get(code="L2-CYL"), actor=None
    )
    return serials


def local(*args) -> datetime:
    return datetime(*args)  # noqa: DTZ001  naive local time, as the equipment exports it


def test_profiles_seed_creates_the_three_profiles_once(demo):
    assert sorted(demo) == sorted([CHECKWEIGHER, FORMATION, LEAK_TEST])
    assert [(p.station.code, p.equipment_code) for p in map(demo.get, sorted(demo))] == [
        ("fill", "cw-1"),
        ("form", "fc-01"),
        ("seal", "leak-1"),
    ]
    assert profiles_seed() == []
    assert FileImportProfile.history.count() == 3


def test_formation_summary_records_the_charge_capacity_in_ah(demo, cells):
    data = formation_summary_csv(cells, start=local(2026, 11, 22, 20, 0, 0), protect_channels=[3])
    charge = [r for r in csv.DictReader(io.StringIO(data.decode().split("\r\n", 3)[3]))
              if r["step_name"] == "CCCV_Chg"]  # fmt: skip

    result = file_import(
        data=data, name="FC-01_tray_T2-004512.csv", profile=demo[FORMATION],
        actor=transport_actor("file"),
    )  # fmt: skip

    # 4 channels x 3 steps, but the protected channel stopped after its charge step
    assert result.counts == {"rows": 11, "accepted": 4, "duplicate": 0, "rejected": 0, "skipped": 7}
    measured = Measurement.objects.order_by("unit__serial").values_list(
        "unit__serial", "characteristic__code", "value", "measured_at", "equipment__code"
    )
    assert list(measured) == [
        (
            r["barcode"],
            "formation-charge-capacity",
            float(Decimal(r["capacity_mah"]) / 1000),
            datetime.strptime(r["end_time"], "%Y-%m-%d %H:%M:%S")
            .replace(tzinfo=BERLIN)
            .astimezone(UTC),
            "fc-01",
        )
        for r in charge
    ]
    assert 5.5 < measured[0][2] < 5.9
    results = dict(StationVisit.objects.values_list("unit__serial", "result"))
    assert results == {cells[0]: "ok", cells[1]: "ok", cells[2]: "nok", cells[3]: "ok"}


def test_check_weigher_demo_file_with_decimal_comma(demo, cells):
    data = checkweigher_csv(cells, start=local(2026, 11, 23, 6, 30, 0), seed=3)
    masses = [float(line.split(";")[2].replace(",", ".")) for line in
              data.decode("utf-8-sig").splitlines()[1:]]  # fmt: skip

    result = file_import(
        data=data, name="cw-1_20261123.csv", profile=demo[CHECKWEIGHER],
        actor=transport_actor("file"),
    )  # fmt: skip

    assert result.counts["accepted"] == 4
    values = Measurement.objects.order_by("measured_at").values_list("value", "measured_at")
    assert list(values) == [
        (m, datetime(2026, 11, 23, 5, 30, 12 * i, tzinfo=UTC)) for i, m in enumerate(masses)
    ]


def test_leak_tester_workbook_records_pa_m3_s_in_mbar_l_s(demo, cells):
    data = leak_test_xlsx(
        cells,
        start=local(2026, 11, 23, 9, 15, 0),
        leak_rates_pa_m3_s=[1.2e-9, 3.4e-9, 2.5e-7, 8.0e-10],
    )

    result = file_import(
        data=data, name="ASM340_20261123.xlsx", profile=demo[LEAK_TEST],
        actor=transport_actor("file"),
    )  # fmt: skip

    assert result.counts["accepted"] == 4
    rows = Measurement.objects.order_by("measured_at").values_list(
        "characteristic__code", "value", "in_spec", "visit__result", "visit__operator"
    )
    assert list(rows) == [
        ("he-leak-rate", 1.2e-8, True, "ok", "K. Wagner"),
        ("he-leak-rate", 3.4e-8, True, "ok", "K. Wagner"),
        ("he-leak-rate", 2.5e-6, False, "nok", "K. Wagner"),
        ("he-leak-rate", 8.0e-9, True, "ok", "K. Wagner"),
    ]
