"""Picking up export files from a directory (``manage.py ingest_files``).

Equipment writes its exports into a shared directory, often slowly (a formation cabinet's
summary grows while the tray is unloaded). A file is imported only when it is *stable*: its
size and modification time are the same on two looks at least ``settle_s`` apart. Each
file is then imported once (by content hash, see :func:`qms.files.services.file_import`)
and, when an archive directory is given, moved there, so the directory holds only what is
still to do. A file that cannot be read (wrong profile, missing column) stays where it is,
is reported, and is not tried again until it changes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser

from qms.exceptions import DomainError

from .choices import FileFormat
from .models import FileImportProfile
from .services import FileAlreadyImported, FileImportResult, file_import, file_sha256

logger = logging.getLogger("celltrace.ingest.files")

#: Names equipment and office tools use while a file is still being written.
TEMPORARY = ("*.tmp", "*.part", "*.partial", "~$*", ".*")

IMPORTED, ALREADY, REFUSED = "imported", "already_imported", "refused"


def default_patterns(profile: FileImportProfile) -> tuple[str, ...]:
    if profile.file_format == FileFormat.XLSX:
        return ("*.xlsx",)
    return ("*.csv", "*.txt")


@dataclass
class FileOutcome:
    """What happened to one file: imported (with its result), already imported, refused."""

    path: Path
    status: str
    message: str
    result: FileImportResult | None = None
    archived_to: Path | None = None


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float


@dataclass
class DirectoryImporter:
    """Imports the stable, new files of ``directory`` through ``profile``; see the module
    docstring. ``poll()`` looks once; call it repeatedly (``--watch``) or twice
    ``settle_s`` apart (a single run)."""

    directory: Path
    profile: FileImportProfile
    actor: AbstractBaseUser
    archive: Path | None = None
    patterns: tuple[str, ...] = ()
    settle_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[Path, _Seen] = field(default_factory=dict)
    _done: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.archive = Path(self.archive) if self.archive else None
        self.patterns = tuple(self.patterns) or default_patterns(self.profile)

    def _candidates(self) -> list[Path]:
        found = []
        for path in sorted(self.directory.iterdir()):
            name = path.name
            if any(fnmatch.fnmatch(name, p) for p in TEMPORARY):
                continue
            if not any(fnmatch.fnmatch(name.lower(), p.lower()) for p in self.patterns):
                continue
            if path.is_file():
                found.append(path)
        return found

    def pending(self) -> int:
        """Files seen but not yet stable."""
        return len(self._seen)

    def poll(self) -> list[FileOutcome]:
        """Look at the directory once; import (and archive) every file that is stable."""
        now = self.clock()
        outcomes = []
        present = set()
        for path in self._candidates():
            present.add(path)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # moved away meanwhile
            signature = (stat.st_size, stat.st_mtime_ns)
            if self._done.get(path) == signature:
                continue
            seen = self._seen.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != signature:
                self._seen[path] = _Seen(stat.st_size, stat.st_mtime_ns, now)
                continue
            if now - seen.since < self.settle_s:
                continue
            del self._seen[path]
            outcome = self._import(path, signature)
            if outcome is not None:
                outcomes.append(outcome)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        for gone in set(self._done) - present:
            del self._done[gone]
        return outcomes

    def _import(self, path: Path, signature: tuple[int, int]) -> FileOutcome | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None  # taken by another watcher of the same directory
        if len(data) != signature[0]:
            return None  # written to between the look and the read: look again next time
        try:
            result = file_import(
                data=data,
                name=path.name,
                profile=self.profile,
                actor=self.actor,
                origin=str(path.parent)[:300],
            )
        except FileAlreadyImported as exc:
            outcome = FileOutcome(path, ALREADY, exc.message)
        except DomainError as exc:
            logger.error("refused %s: %s", path, exc.message)
            self._done[path] = signature
            return FileOutcome(path, REFUSED, exc.message)
        else:
            counts = result.counts
            outcome = FileOutcome(
                path,
                IMPORTED,
                f"{counts['rows']} rows: {counts['accepted']} accepted, {counts['duplicate']} "
                f"duplicate, {counts['rejected']} rejected, {counts['skipped']} skipped",
                result,
            )
        if self.archive is not None:
            with contextlib.suppress(FileNotFoundError):  # archived by another watcher
                outcome.archived_to = self._move(path, file_sha256(data))
        else:
            self._done[path] = signature
        return outcome

    def _move(self, path: Path, sha: str) -> Path:
        self.archive.mkdir(parents=True, exist_ok=True)
        target = self.archive / path.name
        if target.exists():
            target = self.archive / f"{path.stem}.{sha[:12]}{path.suffix}"
        shutil.move(path, target)
        return target
