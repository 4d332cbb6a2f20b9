"""API routes of file import (under ``/api/v1/``): the upload, imported files, profiles.

``files/profiles/`` is registered before ``files/`` and ids are digits only, so the
profile list is never read as an imported file's id."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("files/profiles", api.FileImportProfileViewSet, basename="file-profile")
router.register("files", api.ImportedFileViewSet, basename="imported-file")

urlpatterns = [
    path("files/import/", api.FileImportView.as_view(), name="file-import"),
    *router.urls,
]
