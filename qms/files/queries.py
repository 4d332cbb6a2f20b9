"""Read-side selectors for import profiles and imported files."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import FileImportProfile, ImportedFile


def profile_list() -> QuerySet[FileImportProfile]:
    return FileImportProfile.objects.select_related("station__line__site")


def profile_get(name: str) -> FileImportProfile | None:
    return profile_list().filter(name=name).first()


def imported_file_list() -> QuerySet[ImportedFile]:
    return ImportedFile.objects.select_related("profile", "imported_by")
