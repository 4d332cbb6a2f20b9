"""Cycler file import: a real cycler export (the committed fixtures of
tests/formation/cyclers: a formation-cabinet tray CSV of three 105 Ah LFP cells, a Maccor
export, Neware and Arbin channel CSVs) becomes one run per cell through the ingest path,
each cell once; a cell the plant never made or whose tray position the loading record
contradicts is refused alone into the dead-letter store; a file that cannot be read, or the
same file again, is refused whole and kept, with nothing written."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from formation import imports
from formation.choices import SignConvention, SourceFormat
from formation.imports import (
    CyclerFileAlreadyImported,
    CyclerFileRefused,
    cell_envelope,
    cycler_file_import,
)
from formation.models import (
    CyclerFileImport,
    CyclerImportProfile,
    CyclerRun,
    DcirReading,
    StepResult,
)
from formation.services import tray_load_record
from genealogy.choices import UnitKind
from genealogy.models import Unit
from qms.exceptions import Refused
from qms.ingest.models import DeadLetter, DeadLetterStatus, IngestMessage
from qms.ingest.services import dead_letters_retry, ingest_raw, transport_actor
from tests.formation.cyclers.fixtures import make_samples as ms
from tests.formation.test_handlers import blob_files

pytestmark = pytest.mark.django_db

TRAY = ("LF105A24031200417", "LF105A24031200418", "LF105A24031200419")
CABINET = ms.CABINET_FILE.read_bytes()
CABINET_NAME = ms.CABINET_FILE.name


@pytest.fixture
def actor(db):
    return transport_actor("file")


@pytest.fixture
def profile(formation_plant):
    return CyclerImportProfile.objects.create(
        name="l1-pri cabinet CSV",
        cycler_profile="cabinet_csv",
        station=formation_plant.stations["form"],
        timezone="Asia/Shanghai",
        source="FC-03 formation cabinet",
    )


def make_cells(line, serials=TRAY) -> list[Unit]:
    return [Unit.objects.create(kind=UnitKind.CELL, serial=s, line=line) for s in serials]


def test_a_tray_file_becomes_one_run_per_cell(profile, formation_plant, actor):
    make_cells(formation_plant.line)

    result = cycler_file_import(data=CABINET, name=CABINET_NAME, profile=profile, actor=actor)

    sha = hashlib.sha256(CABINET).hexdigest()
    assert result.counts == {"cells": 3, "accepted": 3, "duplicate": 0, "rejected": 0}
    assert result.rejections == []
    record = CyclerFileImport.objects.get()
    assert (record.sha256, record.name, record.profile, record.imported_by) == (
        sha, CABINET_NAME, profile, actor,
    )  # fmt: skip
    assert (record.rows, record.steps, record.source_format) == (171, 15, "cabinet_csv")
    runs = list(CyclerRun.objects.order_by("position"))
    assert [(r.unit.serial, r.position, r.channel, r.tray) for r in runs] == [
        (TRAY[0], "1", "3-1-01", "T0417"),
        (TRAY[1], "2", "3-1-02", "T0417"),
        (TRAY[2], "3", "3-1-03", "T0417"),
    ]
    run = runs[0]
    assert run.equipment == formation_plant.equipment["fc-03"]
    assert run.channel_key == "fc-03:3-1-01"
    assert (run.source_format, run.source_name, run.source_sha256) == (
        SourceFormat.CABINET_CSV, CABINET_NAME, sha,
    )  # fmt: skip
    assert run.source_run_id == f"file:{sha[:40]}"
    assert run.source_sign_convention == SignConvention.CHARGE_POSITIVE
    assert run.started_at == datetime(2024, 3, 12, 0, 15, tzinfo=UTC)  # 08:15 in Shanghai
    steps = list(run.steps.order_by("sequence"))
    assert [s.step_type for s in steps] == [
        "rest", "cc_charge", "cccv_charge", "rest", "discharge",
    ]  # fmt: skip
    assert [s.source_step_type for s in steps] == ["Rest", "CC_Chg", "CCCV_Chg", "Rest", "CC_DChg"]
    cccv, dis = steps[2], steps[4]
    assert cccv.capacity_ah == pytest.approx(113.5831, abs=1e-9)
    assert (cccv.cv_time_s, cccv.tail_current_a) == (1545.0, pytest.approx(5.248, abs=1e-12))
    assert (cccv.end_reason, dis.end_current_a) == ("Current", -21.0)
    assert cccv.curve.n_points == 24
    assert record.samples == sum(s.curve.n_points for s in StepResult.objects.all())
    assert DeadLetter.objects.count() == 0


def test_the_tray_positions_are_checked_against_the_loading_record(profile, formation_plant, actor):
    cells = make_cells(formation_plant.line)
    tray_load_record(
        tray="T0417",
        positions=[("1", cells[0]), ("2", cells[1]), ("4", cells[2])],
        station=formation_plant.stations["form"],
        loaded_at=datetime(2024, 3, 12, 0, 5, tzinfo=UTC),
    )

    result = cycler_file_import(data=CABINET, name=CABINET_NAME, profile=profile, actor=actor)

    assert result.counts == {"cells": 3, "accepted": 2, "duplicate": 0, "rejected": 1}
    [refused] = result.rejections
    assert (refused.barcode, refused.field) == (TRAY[2], "payload.run.position")
    assert refused.reason.endswith("not position 3.")
    letter = DeadLetter.objects.get(pk=refused.dead_letter_id)
    assert (letter.origin, letter.kind, letter.retry_until) == (
        f"{CABINET_NAME}:cell {TRAY[2]}", "formation_step", None,
    )  # fmt: skip
    assert CyclerRun.objects.filter(tray_load__isnull=False).count() == 2
    assert not CyclerRun.objects.filter(unit=cells[2]).exists()


def test_a_serial_the_plant_never_made_waits_and_goes_in_once_it_exists(
    profile, formation_plant, actor
):
    make_cells(formation_plant.line, TRAY[:2])

    result = cycler_file_import(data=CABINET, name=CABINET_NAME, profile=profile, actor=actor)

    assert result.counts["rejected"] == 1
    [refused] = result.rejections
    assert (refused.barcode, refused.field) == (TRAY[2], "unit")
    letter = DeadLetter.objects.get()
    assert letter.retry_until is not None
    assert StepResult.objects.filter(run__unit__serial=TRAY[2]).count() == 0

    make_cells(formation_plant.line, TRAY[2:])
    retried = dead_letters_retry(now=timezone.now() + timedelta(seconds=30))

    assert [o.status for o in retried] == ["accepted"]
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.RESOLVED
    run = CyclerRun.objects.get(unit__serial=TRAY[2])
    assert (run.source_sha256, run.steps.count()) == (hashlib.sha256(CABINET).hexdigest(), 5)


def test_the_same_file_again_is_refused_as_a_duplicate_and_kept(profile, formation_plant, actor):
    make_cells(formation_plant.line)
    first = cycler_file_import(data=CABINET, name=CABINET_NAME, profile=profile, actor=actor)

    with pytest.raises(CyclerFileAlreadyImported) as err:
        cycler_file_import(data=CABINET, name="T0417-copy.csv", profile=profile, actor=actor)

    assert err.value.existing == first.imported_file
    assert err.value.field == "file"
    letter = DeadLetter.objects.get(pk=err.value.dead_letter_id)
    assert (letter.kind, letter.field, letter.origin) == ("cycler_file", "file", "T0417-copy.csv")
    assert bytes(letter.raw) == CABINET
    assert letter.reason.startswith(f"Duplicate upload: imported already as {CABINET_NAME!r}")
    assert err.value.as_dict()["imported_file"] == first.imported_file.pk
    assert (CyclerFileImport.objects.count(), CyclerRun.objects.count()) == (1, 3)
    assert StepResult.objects.count() == 15


def _drop_column(index: int) -> bytes:
    lines = ms.text_of(ms.CABINET_FILE).splitlines()
    return "\r\n".join(
        ",".join(c for i, c in enumerate(line.split(",")) if i != index) for line in lines
    ).encode()


def _extra_column() -> bytes:
    lines = ms.text_of(ms.CABINET_FILE).splitlines()
    return "\r\n".join(
        line + (",Humidity(%)" if k == 0 else ",40") for k, line in enumerate(lines)
    ).encode()


def _time_backwards() -> bytes:
    lines = ms.text_of(ms.CABINET_FILE).splitlines()
    cells = lines[10].split(",")
    cells[7] = "2700"
    lines[10] = ",".join(cells)
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(
    ("data", "code", "field", "row", "reason"),
    [
        (_drop_column(9), "missing_column", "voltage", 1, "required column(s) missing"),
        (_extra_column(), "unknown_column", "file", 1, "'Humidity(%)' are not part of"),
        (ms.text_of(ms.CABINET_FILE).replace("Voltage(mV)", "Voltage(V)", 1).encode(), "unit",
         "voltage", 2, "gives 2950.3 V at row 2"),
        (ms.replace_once(ms.text_of(ms.CABINET_FILE), ",2998.3,", ",NaN,").encode(),
         "not_a_number", "voltage", 11, "has 'NaN', not a number at row 11"),
        (_time_backwards(), "time_order", "step_time", 14, "Time goes backwards within step 2"),
        (b"", "empty", "file", None, "is empty (0 bytes)"),
    ],
)  # fmt: skip
def test_a_file_that_cannot_be_read_is_refused_whole_and_kept(
    profile, formation_plant, actor, data, code, field, row, reason
):
    make_cells(formation_plant.line)

    with pytest.raises(CyclerFileRefused) as err:
        cycler_file_import(data=data, name="T0417.csv", profile=profile, actor=actor)

    assert (err.value.reason_code, err.value.field, err.value.row) == (code, field, row)
    assert reason in err.value.message
    assert err.value.as_dict()["dead_letter_id"] == err.value.dead_letter_id
    letter = DeadLetter.objects.get()
    assert (letter.kind, letter.field, letter.origin, letter.retry_until) == (
        "cycler_file", field, "T0417.csv", None,
    )  # fmt: skip
    assert bytes(letter.raw) == data
    assert reason in letter.reason
    assert (CyclerFileImport.objects.count(), CyclerRun.objects.count()) == (0, 0)
    assert (StepResult.objects.count(), IngestMessage.objects.count()) == (0, 0)
    assert blob_files() == []


def test_an_inactive_profile_imports_nothing(profile, formation_plant, actor):
    make_cells(formation_plant.line)
    profile.is_active = False
    profile.save()

    with pytest.raises(Refused, match="inactive"):
        cycler_file_import(data=CABINET, name=CABINET_NAME, profile=profile, actor=actor)

    assert (DeadLetter.objects.count(), CyclerRun.objects.count()) == (0, 0)


def test_an_interrupted_import_can_be_repeated(profile, formation_plant, actor):
    """The first cell went in before the process died; the repeat applies the other two."""
    make_cells(formation_plant.line)
    file = imports.cycler_file_read(
        CABINET, profile=imports.cycler_profile_of(profile), name=CABINET_NAME
    )
    codes = {"fc-03": "fc-03"}
    doc = cell_envelope(file.cells[0], file=file, profile=profile, equipment_codes=codes)
    from tests.formation.conftest import raw

    ingest_raw([raw(doc)])

    result = cycler_file_import(data=CABINET, name=CABINET_NAME, profile=profile, actor=actor)

    assert result.counts == {"cells": 3, "accepted": 2, "duplicate": 1, "rejected": 0}
    assert CyclerRun.objects.count() == 3


def test_a_maccor_export_names_its_cell_and_procedure(formation_plant, actor):
    make_cells(formation_plant.line, ["LF105A24031200420"])
    profile = CyclerImportProfile.objects.create(
        name="l1-pri Maccor", cycler_profile="maccor_txt", station=formation_plant.stations["form"],
        equipment_code="fc-02", source="Maccor S4000",
    )  # fmt: skip

    result = cycler_file_import(
        data=ms.MACCOR_FILE.read_bytes(), name=ms.MACCOR_FILE.name, profile=profile, actor=actor
    )

    assert result.counts["accepted"] == 1
    run = CyclerRun.objects.get()
    assert (run.protocol, run.equipment.code, run.source_format) == (
        "FORM-LF105-v3.000", "fc-02", "maccor_txt",
    )  # fmt: skip
    # Maccor signs by a charge/discharge state column; the stored current is + charging.
    assert run.source_sign_convention == SignConvention.MAGNITUDE_WITH_STATE
    assert run.steps.get(sequence=5).end_current_a < 0


def test_a_channel_export_without_a_barcode_takes_it_from_the_name_or_the_caller(
    formation_plant, actor
):
    make_cells(formation_plant.line, ["NMC21700-2403-00871", "NMC21700-2403-01544"])
    station = formation_plant.stations["form"]
    neware = CyclerImportProfile.objects.create(
        name="neware", cycler_profile="neware_csv", station=station, source="Neware BTS",
        barcode_pattern=r"^(?P<barcode>NMC21700-\d{4}-\d{5})_",
    )  # fmt: skip
    arbin = CyclerImportProfile.objects.create(
        name="arbin", cycler_profile="arbin_csv", station=station, source="Arbin LBT"
    )

    with pytest.raises(CyclerFileRefused) as err:
        cycler_file_import(
            data=ms.NEWARE_FILE.read_bytes(), name=ms.NEWARE_FILE.name, profile=neware, actor=actor
        )
    by_name = cycler_file_import(
        data=ms.NEWARE_FILE.read_bytes(), name="NMC21700-2403-00871_ch82-1-3.csv",
        profile=neware, actor=actor,
    )  # fmt: skip
    given = cycler_file_import(
        data=ms.ARBIN_FILE.read_bytes(), name=ms.ARBIN_FILE.name, profile=arbin, actor=actor,
        barcode="NMC21700-2403-01544",
    )  # fmt: skip

    assert (err.value.field, err.value.reason_code) == ("barcode", "identity")
    assert by_name.counts["accepted"] == given.counts["accepted"] == 1
    assert sorted(CyclerRun.objects.values_list("unit__serial", "source_format")) == [
        ("NMC21700-2403-00871", "neware_csv"),
        ("NMC21700-2403-01544", "arbin_csv"),
    ]
    pulse = StepResult.objects.get(run__unit__serial="NMC21700-2403-01544", step_type="pulse")
    reading = DcirReading.objects.get(step=pulse)
    assert reading.r_10s_mohm > 0
    assert (
        reading.v_before_v
        == StepResult.objects.get(run=pulse.run, sequence=pulse.sequence - 1).end_voltage_v
    )


def test_the_import_command_imports_a_directory_and_archives_it(profile, formation_plant, tmp_path):
    make_cells(formation_plant.line)
    inbox, archive = tmp_path / "inbox", tmp_path / "done"
    inbox.mkdir()
    (inbox / CABINET_NAME).write_bytes(CABINET)
    (inbox / "broken.csv").write_bytes(_drop_column(9))
    (inbox / "notes.txt").write_text("not a cycler file")
    out, err = StringIO(), StringIO()

    call_command(
        "formation_import", str(inbox), profile=profile.name, archive=archive, stdout=out,
        stderr=err,
    )  # fmt: skip

    assert "imported cabinet_tray_T0417.csv: 3 cells, 3 accepted, 0 duplicate, 0 rejected" in (
        out.getvalue()
    )
    assert "refused broken.csv: required column(s) missing for a formation-cabinet" in (
        err.getvalue()
    )
    assert out.getvalue().rstrip().endswith("1 imported, 0 already imported, 1 refused.")
    assert sorted(p.name for p in archive.iterdir()) == [CABINET_NAME]
    assert sorted(p.name for p in inbox.iterdir()) == ["broken.csv", "notes.txt"]
    assert CyclerRun.objects.count() == 3


def test_the_import_command_names_the_profiles_it_knows(profile, tmp_path):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No cycler import profile 'nope' \\(profiles: l1-pri"):
        call_command("formation_import", str(tmp_path), profile="nope")
