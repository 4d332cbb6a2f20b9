"""``manage.py ingest_files <dir> --profile NAME [--watch] [--archive DIR]``.

Imports every new, stable export file of a directory through an import profile (each file
once, by content hash) and moves imported files to the archive directory when one is
given. With ``--watch`` it keeps polling until SIGTERM or SIGINT, finishing the file in
hand first. See :mod:`qms.files.watcher`.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from qms.files.models import FileImportProfile
from qms.files.watcher import ALREADY, IMPORTED, DirectoryImporter, FileOutcome
from qms.ingest.models import Transport
from qms.ingest.services import transport_actor


def _refresh_connection() -> None:
    """Drop a connection the database closed (or that outlived ``CONN_MAX_AGE``) between
    polls of a long-running watch; never inside a transaction (a caller's, or a test's)."""
    if not connection.in_atomic_block:
        close_old_connections()


class Command(BaseCommand):
    help = "Import CSV/XLSX export files from a directory through an import profile."

    def add_arguments(self, parser) -> None:
        parser.add_argument("directory", type=Path, help="Directory the equipment exports to.")
        parser.add_argument("--profile", required=True, help="Name of the import profile.")
        parser.add_argument(
            "--watch", action="store_true", help="Keep polling the directory until stopped."
        )
        parser.add_argument(
            "--archive", type=Path, help="Move imported files (and repeats) to this directory."
        )
        parser.add_argument(
            "--pattern",
            action="append",
            dest="patterns",
            help="File name pattern, e.g. '*.csv' (repeatable; default from the profile).",
        )
        parser.add_argument(
            "--interval", type=float, default=5.0, help="Seconds between polls (--watch)."
        )
        parser.add_argument(
            "--settle",
            type=float,
            default=2.0,
            help="Seconds a file's size must stay unchanged before it is imported.",
        )
        parser.add_argument(
            "--polls", type=int, default=0, help="Stop after this many polls (0: until stopped)."
        )

    def handle(self, *args, directory: Path, profile: str, watch: bool, **options) -> None:
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory.")
        found = FileImportProfile.objects.select_related("station").filter(name=profile).first()
        if found is None:
            names = ", ".join(FileImportProfile.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"No import profile {profile!r} (profiles: {names}).")
        importer = DirectoryImporter(
            directory=directory,
            profile=found,
            actor=transport_actor(Transport.FILE),
            archive=options["archive"],
            patterns=tuple(options["patterns"] or ()),
            settle_s=options["settle"],
        )
        totals = {IMPORTED: 0, ALREADY: 0, "refused": 0}
        if not watch:
            importer.poll()  # first look: sizes
            time.sleep(options["settle"])
            for outcome in importer.poll():
                self._report(outcome, totals)
            if importer.pending():
                self.stdout.write(f"{importer.pending()} file(s) still being written: next run.")
        else:
            self._watch(importer, options["interval"], options["polls"], totals)
        self.stdout.write(
            f"{totals[IMPORTED]} imported, {totals[ALREADY]} already imported, "
            f"{totals['refused']} refused."
        )

    def _watch(self, importer: DirectoryImporter, interval: float, polls: int, totals) -> None:
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        self.stdout.write(
            f"Watching {importer.directory} for {importer.profile.name!r} "
            f"({', '.join(importer.patterns)}), every {interval:g} s."
        )
        self.stdout.flush()
        done = 0
        while not stop.is_set():
            _refresh_connection()
            try:
                for outcome in importer.poll():
                    self._report(outcome, totals)
            except (OperationalError, InterfaceError) as exc:
                # The database is away: the file stays in the directory and is tried again.
                self.stderr.write(f"database unavailable, retrying: {exc}")
                _refresh_connection()
            done += 1
            if polls and done >= polls:
                break
            stop.wait(interval)
        self.stdout.write("Stopped.")

    def _report(self, outcome: FileOutcome, totals: dict) -> None:
        totals[outcome.status] = totals.get(outcome.status, 0) + 1
        moved = f" -> {outcome.archived_to}" if outcome.archived_to else ""
        line = f"{outcome.status} {outcome.path.name}: {outcome.message}{moved}"
        if outcome.result is not None and outcome.result.rejections:
            rows = ", ".join(str(r.row) for r in outcome.result.rejections[:20])
            line += f" (dead letters: rows {rows})"
        (self.stdout if outcome.status != "refused" else self.stderr).write(line)
        self.stdout.flush()
