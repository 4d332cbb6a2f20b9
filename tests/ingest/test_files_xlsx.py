"""XLSX import end to end: a check-weigher shift workbook (a title row above the header, an
info sheet before the data sheet, date/time cells in local time, fill mass in kg recorded
in g); unreadable rows become dead letters holding the row as JSON."""

import json
from datetime import UTC, datetime

import pytest

from genealogy.models import Measurement, StationVisit
from qms.exceptions import InvalidInput
from qms.files.choices import FileFormat
from qms.files.demo import xlsx_bytes
from qms.files.models import ImportedFile
from qms.files.services import file_import
from qms.ingest.models import DeadLetter, IngestMessage
from qms.ingest.services import transport_actor
from tests.ingest.files_support import checkweigher_profile, make_cells

pytestmark = pytest.mark.django_db

HEADER = ("Serial", "Date/Time", "Fill mass [kg]", "Result", "Operator")
COLUMNS = {
    "serial": "Serial",
    "timestamp": {"column": "Date/Time", "timezone": "Europe/Berlin"},
    "result": {"column": "Result", "ok": ["i.O."], "nok": ["n.i.O."]},
    "operator": "Operator",
    "measurements": [
        {"column": "Fill mass [kg]", "characteristic": "electrolyte-fill-mass", "unit": "kg"}
    ],
}


def local(hour: int, minute: int) -> datetime:
    return datetime(2026, 11, 23, hour, minute)  # noqa: DTZ001  local time, as the cell holds it


@pytest.fixture
def profile(plant):
    return checkweigher_profile(
        plant,
        name="l1-pri check-weigher XLSX",
        file_format=FileFormat.XLSX,
        sheet_name="Results",
        header_row=2,
        decimal_separator=".",
        delimiter=",",
        columns=COLUMNS,
    )


def workbook(rows) -> bytes:
    return xlsx_bytes(
        HEADER,
        rows,
        sheet="Results",
        sheets_before=("Info",),
        preamble=[["FILL-01 check-weigher, early shift 23.11.2026"]],
    )


def test_workbook_rows_become_visits_and_measurements_in_grams(plant, profile):
    s = make_cells(plant, range(1, 6))
    data = workbook(
        [
            (s[0], local(7, 0), 0.4102, "i.O.", "K. Wagner"),
            (s[1], local(7, 1), 0.4098, "i.O.", "K. Wagner"),
            (),  # an empty row is not a row
            (s[2], "2026-11-23T06:02:00Z", 0.4048, "n.i.O.", "K. Wagner"),  # text with offset
            (s[3], local(7, 3), "n/a", "i.O.", "K. Wagner"),
            (s[4], local(7, 4), 0.4101, "i.O.", None),
        ]
    )

    result = file_import(
        data=data, name="FILL01_shift.xlsx", profile=profile, actor=transport_actor("file")
    )

    assert result.counts == {"rows": 5, "accepted": 4, "duplicate": 0, "rejected": 1, "skipped": 0}
    visits = StationVisit.objects.order_by("started_at").values_list(
        "unit__serial", "result", "operator", "started_at"
    )
    assert list(visits) == [
        (s[0], "ok", "K. Wagner", datetime(2026, 11, 23, 6, 0, tzinfo=UTC)),
        (s[1], "ok", "K. Wagner", datetime(2026, 11, 23, 6, 1, tzinfo=UTC)),
        (s[2], "nok", "K. Wagner", datetime(2026, 11, 23, 6, 2, tzinfo=UTC)),
        (s[4], "ok", "", datetime(2026, 11, 23, 6, 4, tzinfo=UTC)),
    ]
    values = Measurement.objects.order_by("measured_at").values_list("value", "in_spec")
    assert list(values) == [(410.2, True), (409.8, True), (404.8, False), (410.1, True)]
    assert list(IngestMessage.objects.order_by("sent_at").values_list("origin", flat=True)) == [
        "FILL01_shift.xlsx:row 3",
        "FILL01_shift.xlsx:row 4",
        "FILL01_shift.xlsx:row 6",
        "FILL01_shift.xlsx:row 8",
    ]
    letter = DeadLetter.objects.get()
    assert (letter.origin, letter.field, letter.reason) == (
        "FILL01_shift.xlsx:row 7",
        "Fill mass [kg]",
        "Column 'Fill mass [kg]': 'n/a' is not a number.",
    )
    assert json.loads(bytes(letter.raw)) == {
        "sheet": "Results",
        "row": 7,
        "cells": {
            "Serial": s[3],
            "Date/Time": "2026-11-23T07:03:00",
            "Fill mass [kg]": "n/a",
            "Result": "i.O.",
            "Operator": "K. Wagner",
        },
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            xlsx_bytes(HEADER, [], sheet="Tabelle1"),
            "shift.xlsx has no worksheet 'Results'; it has 'Tabelle1'.",
        ),
        (
            b"Serial;Date/Time;Fill mass [kg];Result\r\n",
            "shift.xlsx is not an XLSX workbook: File is not a zip file.",
        ),
        (
            xlsx_bytes(
                ("Serial", "Date/Time", "Mass", "Result", "Operator"),
                [],
                sheet="Results",
                preamble=[["title"]],
            ),
            "shift.xlsx: column(s) 'Fill mass [kg]' of the profile are not in the header (row "
            "2); found 'Serial', 'Date/Time', 'Mass', 'Result', 'Operator'.",
        ),
    ],
    ids=["missing-sheet", "not-a-workbook", "missing-column"],
)
def test_a_workbook_that_cannot_be_read_is_refused_and_nothing_written(profile, data, message):
    with pytest.raises(InvalidInput) as refused:
        file_import(data=data, name="shift.xlsx", profile=profile, actor=transport_actor("file"))

    assert refused.value.message == message
    assert (ImportedFile.objects.count(), IngestMessage.objects.count()) == (0, 0)
    assert DeadLetter.objects.count() == 0
