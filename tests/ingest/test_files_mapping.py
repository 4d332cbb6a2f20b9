"""Import profiles are checked when saved (admin, demo seed): the column mapping against its
schema and the station's control plan, units and scales, time zone, separators. And how
single cells are read: numbers with the profile's separators, local times."""

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from qms.files.mapping import CellError, number_parse, timestamp_parse, unit_factor
from tests.ingest.files_support import FILL_COLUMNS, checkweigher_profile

BERLIN = ZoneInfo("Europe/Berlin")


def fill_measurement(**changes) -> dict:
    return {
        **FILL_COLUMNS,
        "measurements": [
            {"column": "Fill mass", "characteristic": "electrolyte-fill-mass", "unit": "g"}
            | changes
        ],
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        (
            {"columns": fill_measurement(characteristic="fill-mass")},
            {
                "columns": [
                    "columns.measurements[0].characteristic: Station gf1/l1-pri/fill has no "
                    "characteristic 'fill-mass'."
                ]
            },
        ),
        (
            {"columns": fill_measurement(unit="mAh")},
            {
                "columns": [
                    "columns.measurements[0].scale: Column unit 'mAh' differs from the unit 'g' "
                    "of 'electrolyte-fill-mass': give the scale that converts it."
                ]
            },
        ),
        (
            {"columns": fill_measurement(unit="mg", scale=1000)},
            {
                "columns": [
                    "columns.measurements[0].scale: A value in mg is 0.001 g, not 1000: remove "
                    "the scale or set it to 0.001."
                ]
            },
        ),
        (
            {"columns": fill_measurement(scale=0)},
            {
                "columns": [
                    "columns.measurements[0].scale: 0 should not be valid under {'const': 0}"
                ]
            },
        ),
        (
            {"columns": {**FILL_COLUMNS, "timestamp": {"column": "Time", "timezone": "CET+1"}}},
            {
                "columns": [
                    "columns.timestamp.timezone: Unknown time zone 'CET+1' (use an IANA name "
                    "such as Europe/Berlin)."
                ]
            },
        ),
        (
            {"columns": {**FILL_COLUMNS, "timestamp": {"column": "Time", "format": "dd.mm.yyyy"}}},
            {
                "columns": [
                    "columns.timestamp.format: 'dd.mm.yyyy' is neither 'iso' nor a strptime "
                    "format such as '%d.%m.%Y %H:%M:%S'."
                ]
            },
        ),
        (
            {"columns": {k: v for k, v in FILL_COLUMNS.items() if k != "result"}},
            {"columns": ["columns: 'result' is a required property"]},
        ),
        (
            {"columns": {**FILL_COLUMNS, "serial_no": "Barcode"}},
            {
                "columns": [
                    "columns: Additional properties are not allowed ('serial_no' was unexpected)"
                ]
            },
        ),
        (
            {
                "columns": {
                    **FILL_COLUMNS,
                    "result": {"column": "Result", "ok": ["OK"], "nok": ["NOK", "ok"]},
                }
            },
            {"columns": ["columns.result: ['ok'] are listed as OK and as NOK."]},
        ),
        (
            {"columns": {**FILL_COLUMNS, "unit_kind": "jelly_roll"}},
            {
                "columns": [
                    "columns.unit_kind: Unknown unit kind 'jelly_roll'; one of material_lot, "
                    "mix_batch, coil, slit_coil, cell, module, pack, vehicle."
                ]
            },
        ),
        (
            {"equipment_code": "cw-9"},
            {
                "equipment_code": [
                    "equipment_code: Station gf1/l1-pri/fill has no equipment 'cw-9'."
                ]
            },
        ),
        (
            {"delimiter": ","},
            {
                "delimiter": [
                    "delimiter: The delimiter ',' is also a number separator; numbers would be "
                    "split."
                ]
            },
        ),
        (
            {"encoding": "windows-1253x"},
            {"encoding": ["encoding: Unknown encoding 'windows-1253x'."]},
        ),
    ],
    ids=[
        "unknown-characteristic",
        "unit-without-scale",
        "wrong-scale",
        "zero-scale",
        "unknown-time-zone",
        "not-a-time-format",
        "no-result",
        "unknown-key",
        "ok-and-nok",
        "unknown-unit-kind",
        "equipment-elsewhere",
        "delimiter-is-decimal",
        "unknown-encoding",
    ],
)
def test_a_profile_that_cannot_work_is_refused_when_saved(plant, changes, errors):
    with pytest.raises(ValidationError) as refused:
        checkweigher_profile(plant, **changes)

    assert refused.value.message_dict == errors


@pytest.mark.django_db
def test_a_unit_outside_the_table_is_accepted_with_an_explicit_scale(plant):
    profile = checkweigher_profile(plant, columns=fill_measurement(unit="oz", scale=28.349523125))

    assert profile.pk is not None


def test_unit_factors_know_spellings_and_refuse_guesses():
    assert unit_factor("mAh", "Ah") == Decimal("0.001")
    assert unit_factor("μΩ", "mΩ") == Decimal("0.001")  # Greek mu, as keyboards type it
    assert unit_factor("mOhm", "mΩ") == Decimal(1)
    assert unit_factor("Pa·m³/s", "mbar·L/s") == Decimal(10)
    assert unit_factor("mAh", "g") is None


@pytest.mark.parametrize(
    ("value", "decimal", "thousands", "expected"),
    [
        ("5,012", ",", "", Decimal("5.012")),
        ("1.234,5", ",", ".", Decimal("1234.5")),
        ("1,234.5", ".", ",", Decimal("1234.5")),
        ("-0,35", ",", "", Decimal("-0.35")),
        ("1,2E-9", ",", "", Decimal("1.2E-9")),
        ("4\u00a0120,0", ",", "", Decimal("4120.0")),
        (0.4102, ".", "", Decimal("0.4102")),
        (5012, ".", "", Decimal(5012)),
    ],
)
def test_numbers_read_with_the_profile_separators(value, decimal, thousands, expected):
    assert number_parse(value, decimal_separator=decimal, thousands_separator=thousands) == expected


@pytest.mark.parametrize(
    ("value", "decimal", "message"),
    [
        ("5.012", ",", "'5.012' contains '.', but the profile's decimal separator is ','."),
        ("5,012", ".", "'5,012' contains ',', but the profile's decimal separator is '.'."),
        ("inf", ".", "'inf' is not a number."),
        ("4,98 g", ",", "'4,98 g' is not a number."),
        ("  ", ",", "the cell is empty."),
        (True, ".", "True is not a number."),
    ],
)
def test_numbers_that_are_refused(value, decimal, message):
    with pytest.raises(CellError) as refused:
        number_parse(value, decimal_separator=decimal, thousands_separator="")
    assert str(refused.value) == message


def test_timestamps_local_aware_and_refused():
    def read(value, fmt="%d.%m.%Y %H:%M:%S"):
        return timestamp_parse(value, fmt=fmt, zone=BERLIN)

    assert read("23.11.2026 07:00:00") == datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    assert read("15.07.2026 07:00:00") == datetime(2026, 7, 15, 5, 0, tzinfo=UTC)
    assert read("2026-11-23T07:00:00+01:00", "iso") == datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    assert read(datetime(2026, 11, 23, 7, 0)) == datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # noqa: DTZ001
    for value, message in [
        ("2026-11-23 07:00", "'2026-11-23 07:00' does not match the format '%d.%m.%Y %H:%M:%S'."),
        (46349.25, "46349.25 is not a date and time."),
        ("", "the cell is empty."),
    ]:
        with pytest.raises(CellError) as refused:
            read(value)
        assert str(refused.value) == message
