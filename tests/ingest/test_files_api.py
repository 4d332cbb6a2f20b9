"""REST file upload: ``POST /api/v1/files/import/`` (multipart: file + profile name) answers
the counts per outcome; read-only tokens and roles without the permission are refused with
nothing written; imported files and profiles are listed."""

import hashlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from compliance.roles import roles_sync
from genealogy.models import Measurement, StationVisit
from qms.choices import IntegrationScope
from qms.files.models import ImportedFile
from qms.ingest.models import DeadLetter, IngestMessage, IngestStat
from tests.factories import UserFactory, integration_create
from tests.ingest.files_support import checkweigher_profile, make_cells, weigher_file

pytestmark = pytest.mark.django_db

URL = "/api/v1/files/import/"
NAME = "CW-FILL01_20261123.csv"


def token_client(name: str, scope: str) -> APIClient:
    _integration, key = integration_create(name, scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def person_client(role: str) -> APIClient:
    roles_sync()  # the role groups with the file import permissions
    user = UserFactory(username=f"{role}-1", role=role)
    client = APIClient()
    assert client.login(username=user.username, password="celltrace-test")
    return client


def written() -> dict[str, int]:
    return {
        "files": ImportedFile.objects.count(),
        "messages": IngestMessage.objects.count(),
        "visits": StationVisit.objects.count(),
        "dead_letters": DeadLetter.objects.count(),
        "stats": IngestStat.objects.count(),
    }


NOTHING = {"files": 0, "messages": 0, "visits": 0, "dead_letters": 0, "stats": 0}


@pytest.fixture
def export(plant):
    """Three known cells and one the plant has never seen."""
    serials = [*make_cells(plant, range(1, 4)), "P126489999999"]
    return checkweigher_profile(plant), weigher_file(serials, [410.2, 409.8, 404.8, 410.0])


def upload(client: APIClient, data: bytes, profile: str = "l1-pri check-weigher CSV", **extra):
    body = {"file": SimpleUploadedFile(NAME, data, content_type="text/csv"), "profile": profile}
    return client.post(URL, body | extra, format="multipart")


def test_read_write_token_imports_the_file_and_gets_counts_per_outcome(export):
    profile, data = export
    client = token_client("mes-gf1", IntegrationScope.READ_WRITE)

    response = upload(client, data)

    assert response.status_code == 201, response.content
    body = response.json()
    letter = DeadLetter.objects.get()
    imported = ImportedFile.objects.get()
    assert {k: body[k] for k in ("rows", "accepted", "duplicate", "rejected", "skipped")} == {
        "rows": 4,
        "accepted": 3,
        "duplicate": 0,
        "rejected": 1,
        "skipped": 0,
    }
    assert body["rejections"] == [
        {
            "row": 5,
            "column": "Barcode",
            "reason": "Unknown unit 'P126489999999' (send 'unit_kind' to create it on its first "
            "station).",
            "dead_letter_id": letter.pk,
        }
    ]
    assert body["file"] == {
        "id": imported.pk,
        "name": NAME,
        "sha256": hashlib.sha256(data).hexdigest(),
        "origin": "upload",
        "profile": profile.name,
        "size_bytes": len(data),
        "rows": 4,
        "accepted": 3,
        "duplicate": 0,
        "rejected": 1,
        "skipped": 0,
        "imported_at": body["file"]["imported_at"],
        "imported_by": "int-mes-gf1",
    }
    assert letter.origin == f"{NAME}:row 5"
    assert {m.recorded_by.username for m in Measurement.objects.all()} == {"int-mes-gf1"}


def test_read_only_token_is_refused_and_nothing_is_written(export):
    _profile, data = export
    client = token_client("erp-gf1", IntegrationScope.READ)

    response = upload(client, data)

    assert response.status_code == 403
    assert response.json() == {"detail": "Integration 'erp-gf1' has a read-only token."}
    assert written() == NOTHING


@pytest.mark.parametrize(
    ("role", "status", "detail"),
    [
        ("operator", 201, None),
        ("quality_engineer", 201, None),
        ("auditor", 403, "Auditors have read-only access."),
        ("mrb_member", 403, "Your role lacks the permission for this: files.add_importedfile."),
    ],
)
def test_people_upload_when_their_role_allows_it(export, role, status, detail):
    _profile, data = export

    response = upload(person_client(role), data)

    assert response.status_code == status, response.content
    if detail is not None:
        assert response.json() == {"detail": detail}
        assert written() == NOTHING
    else:
        assert ImportedFile.objects.get().imported_by.username == f"{role}-1"


def test_the_same_file_again_is_409_and_names_the_earlier_import(export):
    _profile, data = export
    client = token_client("mes-gf1", IntegrationScope.READ_WRITE)
    first = upload(client, data).json()
    before = written()

    response = upload(client, data)

    assert response.status_code == 409
    body = response.json()
    assert (body["code"], body["field"], body["imported_file"]["id"]) == (
        "already_imported",
        "file",
        first["file"]["id"],
    )
    assert body["detail"].startswith(f"'{NAME}' was imported already on ")
    assert written() == before


@pytest.mark.parametrize(
    ("profile", "data", "status", "body"),
    [
        (
            "l2-cyl check-weigher CSV",
            b"Barcode;Timestamp;Fill mass [g];Result\r\n",
            404,
            {
                "code": "not_found",
                "detail": "No import profile 'l2-cyl check-weigher CSV'.",
                "field": "profile",
            },
        ),
        (
            "l1-pri check-weigher CSV",
            b"Barcode;Time;Fill mass [g];Result\r\n",
            400,
            {
                "code": "invalid",
                "detail": f"{NAME}: column(s) 'Timestamp' of the profile are not in the header "
                "(row 1); found 'Barcode', 'Time', 'Fill mass [g]', 'Result'.",
                "field": "file",
            },
        ),
    ],
    ids=["unknown-profile", "unreadable-file"],
)
def test_unknown_profile_or_unreadable_file_is_refused_with_nothing_written(
    export, profile, data, status, body
):
    client = token_client("mes-gf1", IntegrationScope.READ_WRITE)

    response = upload(client, data, profile=profile)

    assert (response.status_code, response.json()) == (status, body)
    assert written() == NOTHING


def test_missing_file_and_oversized_file_are_refused(export, settings):
    _profile, data = export
    client = token_client("mes-gf1", IntegrationScope.READ_WRITE)
    settings.QMS_FILE_IMPORT_MAX_BYTES = 100

    missing = client.post(URL, {"profile": "l1-pri check-weigher CSV"}, format="multipart")
    too_large = upload(client, data)

    assert (missing.status_code, missing.json()) == (400, {"file": ["No file was submitted."]})
    assert too_large.status_code == 413
    assert too_large.json()["detail"] == (
        f"{NAME} is {len(data)} bytes; uploads take up to 100 bytes (use manage.py ingest_files "
        "for larger files)."
    )
    assert written() == NOTHING


def test_imported_files_and_profiles_are_listed(export):
    profile, data = export
    upload(token_client("mes-gf1", IntegrationScope.READ_WRITE), data)
    reader = token_client("erp-gf1", IntegrationScope.READ)
    imported = ImportedFile.objects.get()

    files = reader.get("/api/v1/files/", {"profile": profile.name}).json()
    other = reader.get("/api/v1/files/", {"profile": "l1-pri leak tester XLSX"}).json()
    one = reader.get(f"/api/v1/files/{imported.pk}/").json()
    profiles = reader.get("/api/v1/files/profiles/").json()

    assert [(f["id"], f["name"], f["accepted"]) for f in files["results"]] == [
        (imported.pk, NAME, 3)
    ]
    assert other["results"] == []
    assert (one["sha256"], one["rejected"]) == (imported.sha256, 1)
    assert [
        (p["name"], p["station"], p["file_format"], p["decimal_separator"], p["delimiter"])
        for p in profiles["results"]
    ] == [("l1-pri check-weigher CSV", "gf1/l1-pri/fill", "csv", ",", ";")]
    assert profiles["results"][0]["columns"]["serial"] == "Barcode"


def test_the_upload_is_in_the_openapi_schema_as_multipart(db):
    client = token_client("erp-gf1", IntegrationScope.READ)

    schema = client.get("/api/v1/schema/", {"format": "json"}).json()

    post = schema["paths"]["/api/v1/files/import/"]["post"]
    assert list(post["requestBody"]["content"]) == ["multipart/form-data"]
    assert sorted(post["responses"]) == ["201", "400", "403", "404", "409", "413"]
    assert {"/api/v1/files/", "/api/v1/files/{id}/", "/api/v1/files/profiles/"} <= set(
        schema["paths"]
    )
