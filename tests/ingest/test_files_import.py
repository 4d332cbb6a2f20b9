"""CSV file import end to end: check-weigher exports of the fill station become station
visits and measurements exactly once; files are imported once; unreadable rows land in the
dead-letter store with file, row and column."""

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import OperationalError
from django.utils import timezone

from genealogy.models import Measurement, StationVisit
from qms.exceptions import InvalidInput
from qms.files import services
from qms.files.demo import CHECKWEIGHER_HEADER, csv_bytes
from qms.files.models import ImportedFile
from qms.files.services import FileAlreadyImported, RowRejection, file_import
from qms.ingest.models import DeadLetter, IngestMessage, IngestStat
from qms.ingest.services import transport_actor
from tests.ingest.files_support import (
    FILL_COLUMNS,
    SHIFT_START,
    checkweigher_profile,
    make_cells,
    weigher_file,
)

pytestmark = pytest.mark.django_db

#: 07:00 CET on 23 Nov 2026.
SHIFT_UTC = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


@pytest.fixture
def actor(db):
    return transport_actor("file")


def written() -> dict[str, int]:
    """Row counts of everything an import can write."""
    return {
        "files": ImportedFile.objects.count(),
        "messages": IngestMessage.objects.count(),
        "visits": StationVisit.objects.count(),
        "measurements": Measurement.objects.count(),
        "dead_letters": DeadLetter.objects.count(),
        "stats": IngestStat.objects.count(),
    }


def weigher_csv(rows) -> bytes:
    """A hand-written check-weigher export (rows of Barcode, Timestamp, mass, result)."""
    return csv_bytes(CHECKWEIGHER_HEADER, rows, delimiter=";", encoding="utf-8-sig")


def test_check_weigher_rows_become_visits_and_measurements(plant, actor):
    serials = make_cells(plant, range(1, 6))
    masses = [410.2, 409.8, 404.8, 411.0, 410.05]
    data = weigher_file(serials, masses)
    profile = checkweigher_profile(plant)

    result = file_import(data=data, name="CW-FILL01_20261123.csv", profile=profile, actor=actor)

    assert result.counts == {"rows": 5, "accepted": 5, "duplicate": 0, "rejected": 0, "skipped": 0}
    assert result.rejections == []
    measured = Measurement.objects.order_by("measured_at").values_list(
        "unit__serial", "characteristic__code", "value", "in_spec", "measured_at", "equipment__code"
    )
    assert list(measured) == [
        (s, "electrolyte-fill-mass", m, m != 404.8, SHIFT_UTC + timedelta(minutes=i), "cw-1")
        for i, (s, m) in enumerate(zip(serials, masses, strict=True))
    ]
    visits = StationVisit.objects.order_by("started_at").values_list(
        "unit__serial", "station__code", "result", "started_at"
    )
    assert list(visits) == [
        (s, "fill", "nok" if i == 2 else "ok", SHIFT_UTC + timedelta(minutes=i))
        for i, s in enumerate(serials)
    ]
    messages = list(IngestMessage.objects.order_by("sent_at"))
    assert [(m.transport, m.origin, m.source, m.unit_serial) for m in messages] == [
        ("file", f"CW-FILL01_20261123.csv:row {i + 2}", "FILL-01 check-weigher", s)
        for i, s in enumerate(serials)
    ]
    assert all(m.message_id.startswith("file:") and len(m.message_id) == 45 for m in messages)
    imported = ImportedFile.objects.get()
    assert imported == result.imported_file
    assert (imported.sha256, imported.name, imported.size_bytes, imported.origin) == (
        hashlib.sha256(data).hexdigest(),
        "CW-FILL01_20261123.csv",
        len(data),
        "upload",
    )
    assert (imported.profile, imported.imported_by) == (profile, actor)
    assert DeadLetter.objects.count() == 0


def test_the_same_bytes_again_are_refused_and_nothing_is_written(plant, actor):
    serials = make_cells(plant, range(1, 4))
    data = weigher_file(serials, [410.2, 409.8, 410.6])
    profile = checkweigher_profile(plant)
    first = file_import(data=data, name="CW-FILL01_20261123.csv", profile=profile, actor=actor)
    before = written()

    with pytest.raises(FileAlreadyImported) as refused:
        file_import(data=data, name="copy of CW-FILL01_20261123.csv", profile=profile, actor=actor)

    assert refused.value.existing == first.imported_file
    assert refused.value.code == "already_imported"
    assert refused.value.message.startswith(
        "'CW-FILL01_20261123.csv' was imported already on 2026-"
    )
    assert written() == before
    assert IngestStat.objects.get().batches == 1


def test_a_later_export_repeating_rows_counts_them_as_duplicates(plant, actor):
    """The check-weigher writes a cumulative file per shift: the 10:00 export repeats the
    four rows of the 08:00 one and adds two."""
    serials = make_cells(plant, range(1, 7))
    masses = [410.2, 409.8, 410.6, 411.0, 408.9, 410.1]
    profile = checkweigher_profile(plant)
    morning = file_import(
        data=weigher_file(serials[:4], masses[:4]), name="cw-0800.csv", profile=profile,
        actor=actor,
    )  # fmt: skip

    later = file_import(
        data=weigher_file(serials, masses), name="cw-1000.csv", profile=profile, actor=actor
    )

    assert morning.counts["accepted"] == 4
    assert later.counts == {"rows": 6, "accepted": 2, "duplicate": 4, "rejected": 0, "skipped": 0}
    per_cell = Counter(Measurement.objects.values_list("unit__serial", flat=True))
    assert per_cell == dict.fromkeys(serials, 1)
    assert StationVisit.objects.count() == IngestMessage.objects.count() == 6
    assert list(IngestMessage.objects.order_by("sent_at").values_list("origin", flat=True)[4:]) == [
        "cw-1000.csv:row 6",
        "cw-1000.csv:row 7",
    ]


def test_an_interrupted_import_run_again_applies_each_row_once(plant, actor, monkeypatch):
    serials = make_cells(plant, range(1, 6))
    data = weigher_file(serials, [410.2, 409.8, 410.6, 411.0, 408.9])
    profile = checkweigher_profile(plant)
    real = services.ingest_raw
    calls: list[int] = []

    def database_lost_on_second_chunk(messages, *, actor=None):
        calls.append(len(messages))
        if len(calls) == 2:
            raise OperationalError("server closed the connection unexpectedly")
        return real(messages, actor=actor)

    monkeypatch.setattr(services, "CHUNK_ROWS", 2)
    monkeypatch.setattr(services, "ingest_raw", database_lost_on_second_chunk)
    with pytest.raises(OperationalError):
        file_import(data=data, name="cw.csv", profile=profile, actor=actor)
    assert (ImportedFile.objects.count(), Measurement.objects.count()) == (0, 2)

    monkeypatch.setattr(services, "ingest_raw", real)
    result = file_import(data=data, name="cw.csv", profile=profile, actor=actor)

    assert result.counts == {"rows": 5, "accepted": 3, "duplicate": 2, "rejected": 0, "skipped": 0}
    per_cell = Counter(Measurement.objects.values_list("unit__serial", flat=True))
    assert per_cell == dict.fromkeys(serials, 1)


def test_rows_are_applied_in_chunks_one_transaction_each(plant, actor, monkeypatch):
    serials = make_cells(plant, range(1, 6))
    profile = checkweigher_profile(plant)
    real = services.ingest_raw
    chunks: list[list[str]] = []

    def spy(messages, *, actor=None):
        chunks.append([m.origin for m in messages])
        return real(messages, actor=actor)

    monkeypatch.setattr(services, "CHUNK_ROWS", 2)
    monkeypatch.setattr(services, "ingest_raw", spy)
    file_import(
        data=weigher_file(serials, [410.0] * 5), name="cw.csv", profile=profile, actor=actor
    )

    assert chunks == [
        ["cw.csv:row 2", "cw.csv:row 3"],
        ["cw.csv:row 4", "cw.csv:row 5"],
        ["cw.csv:row 6"],
    ]
    assert IngestStat.objects.get(transport="file").batches == 3


def test_unreadable_rows_are_dead_letters_naming_file_row_and_column(plant, actor):
    (serial,) = make_cells(plant, [1])
    data = weigher_csv(
        [
            (serial, "23.11.2026 07:00:00", "410,2", "OK"),
            ("", "23.11.2026 07:01:00", "410,1", "OK"),
            ("P126480000002", "23.11.2026 07:02:00", "41O,3", "OK"),
            ("P126480000003", "2026-11-23 07:03:00", "410,0", "OK"),
            (),  # a blank line is not a row
            ("P126480000004", "23.11.2026 07:04:00", "410.4", "OK"),
            ("P126480000005", "23.11.2026 07:05:00", "410,5", "i.O."),
            ("P126480000006", "23.11.2026 07:06:00", "", "OK"),
            ("P126480000007", "23.11.2026 07:07:00", "NaN", "OK"),
        ]
    )
    profile = checkweigher_profile(plant)

    result = file_import(data=data, name="CW-FILL01_20261123.csv", profile=profile, actor=actor)

    assert result.counts == {"rows": 8, "accepted": 1, "duplicate": 0, "rejected": 7, "skipped": 0}
    expected = [
        (3, "Barcode", "the serial is empty."),
        (4, "Fill mass [g]", "'41O,3' is not a number."),
        (5, "Timestamp", "'2026-11-23 07:03:00' does not match the format '%d.%m.%Y %H:%M:%S'."),
        (7, "Fill mass [g]", "'410.4' contains '.', but the profile's decimal separator is ','."),
        (8, "Result", "'i.O.' is neither an OK nor a NOK value of the profile."),
        (9, "Fill mass [g]", "the cell is empty."),
        (10, "Fill mass [g]", "'NaN' is not a number."),
    ]
    letters = list(DeadLetter.objects.order_by("id"))
    assert [(d.origin, d.field, d.reason) for d in letters] == [
        (f"CW-FILL01_20261123.csv:row {row}", column, f"Column {column!r}: {reason}")
        for row, column, reason in expected
    ]
    assert [(r.row, r.column) for r in result.rejections] == [(r, c) for r, c, _ in expected]
    assert [r.dead_letter_id for r in result.rejections] == [d.pk for d in letters]
    lines = data.decode("utf-8-sig").splitlines(keepends=True)
    assert [bytes(d.raw) for d in letters] == [lines[row - 1].encode() for row, _, _ in expected]
    assert bytes(letters[0].raw) == b";23.11.2026 07:01:00;410,1;OK\r\n"
    assert {(d.transport, d.kind, d.status, d.attempts) for d in letters} == {
        ("file", "process_result", "open", 1)
    }
    assert list(StationVisit.objects.values_list("unit__serial", flat=True)) == [serial]


def test_rows_refused_by_the_handler_keep_their_envelope_and_name_the_column(plant, actor):
    (known,) = make_cells(plant, [1])
    data = weigher_csv(
        [
            (known, "23.11.2026 07:00:00", "410,2", "OK"),
            ("P126489999999", "23.11.2026 07:01:00", "410,1", "OK"),
        ]
    )
    profile = checkweigher_profile(plant)

    result = file_import(data=data, name="cw.csv", profile=profile, actor=actor)

    assert result.counts["rejected"] == 1
    letter = DeadLetter.objects.get()
    assert result.rejections == [
        RowRejection(
            row=3,
            column="Barcode",
            reason="Unknown unit 'P126489999999' (send 'unit_kind' to create it on its first "
            "station).",
            dead_letter_id=letter.pk,
        )
    ]
    envelope = json.loads(bytes(letter.raw))
    assert (letter.origin, letter.field, letter.message_id) == (
        "cw.csv:row 3",
        "unit",
        envelope["message_id"],
    )
    assert (envelope["unit"], envelope["sent_at"], envelope["payload"]["measurements"]) == (
        "P126489999999",
        "2026-11-23T06:01:00+00:00",
        [
            {
                "characteristic": "electrolyte-fill-mass",
                "value": 410.1,
                "unit": "g",
                "measured_at": "2026-11-23T06:01:00+00:00",
            }
        ],
    )


def test_decimal_comma_with_thousands_separator_and_milligrams_scaled_to_grams(plant, actor):
    serials = make_cells(plant, range(1, 4))
    columns = {
        **FILL_COLUMNS,
        "measurements": [
            {"column": "Fill mass [mg]", "characteristic": "electrolyte-fill-mass", "unit": "mg"}
        ],
    }
    profile = checkweigher_profile(plant, thousands_separator=".", columns=columns)
    data = csv_bytes(
        ("Barcode", "Timestamp", "Fill mass [mg]", "Result"),
        [
            (serials[0], "23.11.2026 07:00:00", "410.215,0", "OK"),
            (serials[1], "23.11.2026 07:01:00", "409.980", "OK"),
            (serials[2], "23.11.2026 07:02:00", "404\u202f812,5", "NOK"),  # narrow no-break space
        ],
        delimiter=";",
    )

    result = file_import(data=data, name="cw.csv", profile=profile, actor=actor)

    assert result.counts["accepted"] == 3
    values = Measurement.objects.order_by("measured_at").values_list("value", flat=True)
    assert list(values) == [410.215, 409.98, 404.8125]


def test_naive_local_times_are_converted_to_utc_across_daylight_saving(plant, actor):
    serials = make_cells(plant, range(1, 5))
    data = weigher_csv(
        [
            (serials[0], "15.07.2026 07:00:00", "410,0", "OK"),  # CEST, UTC+2
            (serials[1], "23.11.2026 07:00:00", "410,0", "OK"),  # CET, UTC+1
            (serials[2], "25.10.2026 02:30:00", "410,0", "OK"),  # repeated hour: the first
            (serials[3], "29.03.2026 02:30:00", "410,0", "OK"),  # skipped hour: no such time
        ]
    )
    profile = checkweigher_profile(plant)

    result = file_import(data=data, name="cw.csv", profile=profile, actor=actor)

    assert result.counts["accepted"] == 3
    started = dict(StationVisit.objects.values_list("unit__serial", "started_at"))
    assert started == {
        serials[0]: datetime(2026, 7, 15, 5, 0, tzinfo=UTC),
        serials[1]: datetime(2026, 11, 23, 6, 0, tzinfo=UTC),
        serials[2]: datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
    }
    assert result.rejections[0].row == 5
    assert DeadLetter.objects.get().reason == (
        "Column 'Timestamp': 2026-03-29 02:30:00 does not exist in Europe/Berlin (the clocks "
        "went forward); check the exporting clock's time zone."
    )


def test_future_dated_row_is_refused_naming_the_timestamp_column(plant, actor):
    serials = make_cells(plant, range(1, 3))
    local_now = timezone.now().astimezone(ZoneInfo("Europe/Berlin")).replace(tzinfo=None)
    soon, tomorrow = local_now + timedelta(minutes=2), local_now + timedelta(days=1)
    fmt = "%d.%m.%Y %H:%M:%S"
    data = weigher_csv(
        [
            (serials[0], soon.strftime(fmt), "410,0", "OK"),  # clock drift within tolerance
            (serials[1], tomorrow.strftime(fmt), "410,0", "OK"),
        ]
    )
    profile = checkweigher_profile(plant)

    result = file_import(data=data, name="cw.csv", profile=profile, actor=actor)

    assert (result.counts["accepted"], result.counts["rejected"]) == (1, 1)
    letter = DeadLetter.objects.get()
    assert (letter.origin, letter.field) == ("cw.csv:row 3", "Timestamp")
    assert letter.reason.startswith(f"Column 'Timestamp': '{tomorrow.strftime(fmt)}' (")
    assert "min in the future (tolerance 5 min)" in letter.reason
    assert list(StationVisit.objects.values_list("unit__serial", flat=True)) == [serials[0]]
    assert not IngestMessage.objects.filter(unit_serial=serials[1]).exists()


@pytest.mark.parametrize(
    ("data", "profile_changes", "message"),
    [
        (
            csv_bytes(
                ("Barcode", "Zeitstempel", "Fill mass [g]", "Result"),
                [("P126480000001", "23.11.2026 07:00:00", "410,2", "OK")],
                delimiter=";",
            ),
            {},
            "cw.csv: column(s) 'Timestamp' of the profile are not in the header (row 1); found "
            "'Barcode', 'Zeitstempel', 'Fill mass [g]', 'Result'.",
        ),
        (
            csv_bytes(
                (*CHECKWEIGHER_HEADER, "Operator"),
                [("P126480000001", "23.11.2026 07:00:00", "410,2", "OK", "Müller")],
                delimiter=";",
                encoding="cp1252",
            ),
            {},
            "cw.csv is not utf-8-sig text: invalid start byte at byte 93; check the profile's "
            "encoding.",
        ),
        (
            weigher_file(["P126480000001"], [410.2]),
            {"header_row": 3},
            "cw.csv has no header row 3.",
        ),
    ],
    ids=["missing-column", "wrong-encoding", "no-header-row"],
)
def test_a_file_that_cannot_be_read_is_refused_before_anything_is_written(
    plant, actor, data, profile_changes, message
):
    profile = checkweigher_profile(plant, **profile_changes)

    with pytest.raises(InvalidInput) as refused:
        file_import(data=data, name="cw.csv", profile=profile, actor=actor)

    assert (refused.value.field, refused.value.message) == ("file", message)
    assert written() == dict.fromkeys(written(), 0)


def test_preamble_lines_above_the_header_are_skipped(plant, actor):
    serials = make_cells(plant, range(1, 3))
    data = csv_bytes(
        CHECKWEIGHER_HEADER,
        [(s, (SHIFT_START + timedelta(minutes=i)).strftime("%d.%m.%Y %H:%M:%S"), "410,0", "OK")
         for i, s in enumerate(serials)],
        delimiter=";",
        preamble=[["Mettler Toledo XSR205", "L2-CW-0588"], ["Export", "23.11.2026 08:00"]],
    )  # fmt: skip
    profile = checkweigher_profile(plant, header_row=3)

    result = file_import(data=data, name="cw.csv", profile=profile, actor=actor)

    assert result.counts["accepted"] == 2
    assert list(IngestMessage.objects.order_by("sent_at").values_list("origin", flat=True)) == [
        "cw.csv:row 4",
        "cw.csv:row 5",
    ]
