"""``manage.py ingest_files``: a directory of check-weigher exports is imported file by file
(each once), imported files move to the archive, unreadable ones stay and are reported;
``--watch`` waits until a file being written has stopped growing."""

import os
import shutil
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from genealogy.models import Measurement
from qms.files.demo import csv_bytes
from qms.files.models import ImportedFile
from qms.files.watcher import DirectoryImporter
from qms.ingest.models import IngestMessage
from qms.ingest.services import transport_actor
from tests.conftest import require_service
from tests.ingest.files_support import checkweigher_profile, make_cells, weigher_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dirs(tmp_path):
    inbox, archive = tmp_path / "cw-1", tmp_path / "archive"
    inbox.mkdir()
    return inbox, archive


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("ingest_files", *map(str, args), "--settle", "0", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_imports_every_new_file_once_and_archives_it(plant, dirs):
    inbox, archive = dirs
    serials = make_cells(plant, range(1, 7))
    profile = checkweigher_profile(plant)
    masses = [410.2, 409.8, 410.6, 411.0, 408.9, 410.1]
    early = weigher_file(serials[:3], masses[:3])
    (inbox / "CW-FILL01_0800.csv").write_bytes(early)
    (inbox / "CW-FILL01_1000.csv").write_bytes(weigher_file(serials, masses))  # cumulative
    (inbox / "~$CW-FILL01_1200.csv").write_bytes(b"")  # office lock file
    (inbox / "calibration.pdf").write_bytes(b"%PDF-1.7")

    out, err = run(inbox, "--profile", profile.name, "--archive", archive)

    assert out.splitlines() == [
        "imported CW-FILL01_0800.csv: 3 rows: 3 accepted, 0 duplicate, 0 rejected, 0 skipped"
        f" -> {archive / 'CW-FILL01_0800.csv'}",
        "imported CW-FILL01_1000.csv: 6 rows: 3 accepted, 3 duplicate, 0 rejected, 0 skipped"
        f" -> {archive / 'CW-FILL01_1000.csv'}",
        "2 imported, 0 already imported, 0 refused.",
    ]
    assert err == ""
    assert sorted(p.name for p in inbox.iterdir()) == ["calibration.pdf", "~$CW-FILL01_1200.csv"]
    assert sorted(p.name for p in archive.iterdir()) == ["CW-FILL01_0800.csv", "CW-FILL01_1000.csv"]
    assert Measurement.objects.count() == 6
    files = ImportedFile.objects.order_by("id")
    assert [(f.name, f.origin, f.imported_by.username) for f in files] == [
        ("CW-FILL01_0800.csv", str(inbox), "ingest-file"),
        ("CW-FILL01_1000.csv", str(inbox), "ingest-file"),
    ]

    # The same export dropped again: recognised by content, archived next to the first one.
    (inbox / "CW-FILL01_0800.csv").write_bytes(early)
    out, err = run(inbox, "--profile", profile.name, "--archive", archive)

    sha = files[0].sha256
    assert out.splitlines()[0].startswith(
        "already_imported CW-FILL01_0800.csv: 'CW-FILL01_0800.csv' was imported already on "
    )
    assert out.splitlines()[0].endswith(f" -> {archive / f'CW-FILL01_0800.{sha[:12]}.csv'}")
    assert out.splitlines()[-1] == "0 imported, 1 already imported, 0 refused."
    assert (ImportedFile.objects.count(), Measurement.objects.count()) == (2, 6)


@pytest.mark.django_db
def test_a_file_that_cannot_be_read_stays_and_is_reported(plant, dirs):
    inbox, archive = dirs
    profile = checkweigher_profile(plant)
    wrong = csv_bytes(("Serial", "Time", "Mass"), [("P126480000001", "07:00", "410,2")])
    (inbox / "export.csv").write_bytes(wrong)

    out, err = run(inbox, "--profile", profile.name, "--archive", archive)

    assert err.splitlines() == [
        "refused export.csv: export.csv: column(s) 'Barcode', 'Timestamp', 'Result', "
        "'Fill mass [g]' of the profile are not in the header (row 1); found 'Serial,Time,Mass'."
    ]
    assert out.splitlines() == ["0 imported, 0 already imported, 1 refused."]
    assert [p.name for p in inbox.iterdir()] == ["export.csv"]
    assert not archive.exists()
    assert (ImportedFile.objects.count(), IngestMessage.objects.count()) == (0, 0)


@pytest.mark.django_db
def test_unknown_profile_or_directory_is_an_error(plant, dirs):
    inbox, _ = dirs
    checkweigher_profile(plant)

    with pytest.raises(CommandError, match=r"No import profile 'cw' \(profiles: l1-pri "):
        run(inbox, "--profile", "cw")
    with pytest.raises(CommandError, match="is not a directory"):
        run(inbox / "missing", "--profile", "l1-pri check-weigher CSV")


@pytest.mark.django_db
def test_watch_imports_a_file_dropped_while_it_runs(plant, dirs):
    inbox, archive = dirs
    serials = make_cells(plant, range(1, 3))
    profile = checkweigher_profile(plant)
    (inbox / "cw.csv").write_bytes(weigher_file(serials, [410.2, 409.8]))

    out, _ = run(inbox, "--profile", profile.name, "--archive", archive, "--watch",
                 "--interval", "0.01", "--polls", "3")  # fmt: skip

    assert out.splitlines()[0] == (
        f"Watching {inbox} for 'l1-pri check-weigher CSV' (*.csv, *.txt), every 0.01 s."
    )
    assert out.splitlines()[-2:] == ["Stopped.", "1 imported, 0 already imported, 0 refused."]
    assert Measurement.objects.count() == 2


@pytest.mark.django_db
def test_a_growing_file_is_imported_only_once_its_size_is_stable(plant, dirs):
    inbox, _ = dirs
    serials = make_cells(plant, range(1, 5))
    data = weigher_file(serials, [410.2, 409.8, 410.6, 411.0])
    now = [0.0]
    importer = DirectoryImporter(
        directory=inbox,
        profile=checkweigher_profile(plant),
        actor=transport_actor("file"),
        settle_s=2.0,
        clock=lambda: now[0],
    )
    path = inbox / "cw.csv"
    path.write_bytes(data[:70])  # the header and half a row so far

    assert importer.poll() == []  # first look
    now[0] = 5.0
    with path.open("ab") as f:
        f.write(data[70:])
    assert importer.poll() == []  # it grew: look again later
    now[0] = 6.0
    assert importer.poll() == []  # same size, but only for 1 s
    now[0] = 7.5
    (outcome,) = importer.poll()

    assert (outcome.status, outcome.result.counts["accepted"]) == ("imported", 4)
    assert importer.poll() == []  # imported (not archived): not looked at again
    assert ImportedFile.objects.count() == 1


def _database_url() -> str:
    cfg = connection.settings_dict
    auth = quote(cfg["USER"] or "postgres") + (f":{quote(cfg['PASSWORD'])}" if cfg["PASSWORD"]
                                               else "")  # fmt: skip
    return f"postgres://{auth}@{cfg['HOST'] or '127.0.0.1'}:{cfg['PORT'] or 5432}/{cfg['NAME']}"


def _wait(predicate, *, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_watching_process_imports_a_slowly_written_file_and_stops_on_sigterm(plant, dirs):
    require_service("PostgreSQL (DATABASE_URL)", connection.vendor == "postgresql")
    inbox, archive = dirs
    serials = make_cells(plant, range(1, 41))
    profile = checkweigher_profile(plant)
    data = weigher_file(serials, [410.0 + (i % 9) * 0.1 for i in range(40)])
    env = {**os.environ, "DATABASE_URL": _database_url(), "CELERY_BROKER_URL": "",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    env.pop("QMS_REQUIRE_SERVICES", None)
    log_path = archive.parent / "ingest_files.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603  fixed argv
            [sys.executable, str(ROOT / "manage.py"), "ingest_files", str(inbox), "--profile",
             profile.name, "--archive", str(archive), "--watch", "--interval", "0.2",
             "--settle", "2"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait(lambda: b"Watching" in log_path.read_bytes(), timeout_s=20, what="the watcher")
        # The check-weigher writes its export in bursts, with pauses shorter than --settle.
        with (inbox / "cw.csv").open("wb") as f:
            for start in range(0, len(data), 600):
                f.write(data[start : start + 600])
                f.flush()
                time.sleep(0.6)
        _wait(lambda: (archive / "cw.csv").exists(), timeout_s=20, what="the archived file")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    log = log_path.read_text()
    assert "imported cw.csv: 40 rows: 40 accepted, 0 duplicate, 0 rejected, 0 skipped" in log
    assert log.splitlines()[-2:] == ["Stopped.", "1 imported, 0 already imported, 0 refused."]
    assert (ImportedFile.objects.get().rows, Measurement.objects.count()) == (40, 40)
    shutil.rmtree(inbox)
