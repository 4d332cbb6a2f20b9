"""``manage.py formation_import PATH... --profile NAME [--archive DIR]``.

Imports cycler exports (files, or every matching file of a directory) through a cycler
import profile, each file once (by content hash), and moves imported files (and repeats)
to the archive directory when one is given. A file refused whole stays where it is and is
reported; its bytes and the reason are in the dead-letter store. See
:mod:`formation.imports`.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from formation import queries
from formation.imports import (
    CyclerFileAlreadyImported,
    CyclerFileRefused,
    cycler_file_import,
    file_sha256,
)
from qms.exceptions import DomainError
from qms.ingest.models import Transport
from qms.ingest.services import transport_actor

#: File names per reading profile's file kind.
PATTERNS = {
    "csv": ("*.csv",),
    "txt": ("*.txt", "*.0[0-9][0-9]", "*.csv"),
    "xlsx": ("*.xlsx",),
    "nda": ("*.nda", "*.ndax"),
}
#: Names equipment and office tools use while a file is still being written.
TEMPORARY = ("*.tmp", "*.part", "*.partial", "~$*", ".*")


class Command(BaseCommand):
    help = "Import cycler exports (cabinet CSV, Neware, Arbin, Maccor) through a profile."

    def add_arguments(self, parser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, help="Files or directories.")
        parser.add_argument("--profile", required=True, help="Name of the cycler import profile.")
        parser.add_argument("--archive", type=Path, help="Move imported files (and repeats) here.")
        parser.add_argument("--barcode", help="The cell of a single export that does not name it.")
        parser.add_argument(
            "--pattern",
            action="append",
            dest="patterns",
            help="File name pattern in directories (repeatable; default from the profile).",
        )

    def handle(self, *args, paths: list[Path], profile: str, **options) -> None:
        found = queries.profile_get(profile)
        if found is None:
            names = ", ".join(p.name for p in queries.profile_list()) or "none"
            raise CommandError(f"No cycler import profile {profile!r} (profiles: {names}).")
        kind = found.cycler_profile.rsplit("_", 1)[-1]
        patterns = tuple(options["patterns"] or PATTERNS.get(kind, ("*",)))
        files = []
        for path in paths:
            if path.is_dir():
                files += [
                    p
                    for p in sorted(path.iterdir())
                    if p.is_file()
                    and not any(fnmatch.fnmatch(p.name, t) for t in TEMPORARY)
                    and any(fnmatch.fnmatch(p.name.lower(), pat) for pat in patterns)
                ]
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{path} is neither a file nor a directory.")
        if options["barcode"] and len(files) != 1:
            raise CommandError("--barcode names the cell of one file; give exactly one.")
        actor = transport_actor(Transport.FILE)
        totals = {"imported": 0, "already imported": 0, "refused": 0}
        for path in files:
            data = path.read_bytes()
            try:
                result = cycler_file_import(
                    data=data,
                    name=path.name,
                    profile=found,
                    actor=actor,
                    origin=str(path.parent),
                    barcode=options["barcode"],
                )
            except CyclerFileAlreadyImported as exc:
                totals["already imported"] += 1
                self.stdout.write(f"already imported {path.name}: {exc.message}")
            except (CyclerFileRefused, DomainError) as exc:
                totals["refused"] += 1
                text = exc.message.removeprefix(f"{path.name}: ")
                self.stderr.write(f"refused {path.name}: {text}")
                continue
            else:
                totals["imported"] += 1
                c = result.counts
                line = (
                    f"imported {path.name}: {c['cells']} cells, {c['accepted']} accepted, "
                    f"{c['duplicate']} duplicate, {c['rejected']} rejected"
                )
                for r in result.rejections[:20]:
                    line += f"\n    {r.barcode}: {r.reason} (dead letter {r.dead_letter_id})"
                self.stdout.write(line)
            if options["archive"]:
                self._archive(path, options["archive"], file_sha256(data))
        self.stdout.write(", ".join(f"{n} {what}" for what, n in totals.items()) + ".")

    def _archive(self, path: Path, archive: Path, sha: str) -> None:
        archive.mkdir(parents=True, exist_ok=True)
        target = archive / path.name
        if target.exists():
            target = archive / f"{path.stem}.{sha[:12]}{path.suffix}"
        shutil.move(path, target)
