"""Admin of file import: profiles are edited with history and their mapping is checked on
save; imported files are view-only."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from qms.files.models import FileImportProfile
from qms.files.services import file_import
from qms.ingest.services import transport_actor
from tests.factories import UserFactory
from tests.ingest.files_support import FILL_COLUMNS, checkweigher_profile, make_cells, weigher_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(db):
    user = UserFactory(username="qe-admin", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


def form(plant, **changes) -> dict:
    values = {
        "name": "l1-pri check-weigher CSV",
        "description": "",
        "is_active": "on",
        "kind": "process_result",
        "station": plant.stations["fill"].pk,
        "equipment_code": "cw-1",
        "source": "FILL-01 check-weigher",
        "file_format": "csv",
        "delimiter": ";",
        "quotechar": '"',
        "encoding": "utf-8-sig",
        "decimal_separator": ",",
        "thousands_separator": "",
        "header_row": "1",
        "sheet_name": "",
        "columns": json.dumps(FILL_COLUMNS),
    }
    return values | changes


def test_profile_is_created_in_the_admin_with_history(plant, admin_client_):
    url = reverse("admin:files_fileimportprofile_add")

    response = admin_client_.post(url, form(plant))

    assert response.status_code == 302, response.content.decode()[:2000]
    profile = FileImportProfile.objects.get()
    assert profile.columns == FILL_COLUMNS
    assert [h.history_type for h in profile.history.all()] == ["+"]
    page = admin_client_.get(reverse("admin:files_fileimportprofile_change", args=[profile.pk]))
    assert page.status_code == 200
    assert "  &quot;serial&quot;: &quot;Barcode&quot;,\n" in page.content.decode()  # indented


def test_a_mapping_that_cannot_work_is_shown_on_the_form_and_not_saved(plant, admin_client_):
    columns = {**FILL_COLUMNS, "measurements": [
        {"column": "Fill mass [mg]", "characteristic": "electrolyte-fill-mass", "unit": "mg",
         "scale": 1}]}  # fmt: skip
    url = reverse("admin:files_fileimportprofile_add")

    response = admin_client_.post(url, form(plant, columns=json.dumps(columns)))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "columns": [
            "columns.measurements[0].scale: A value in mg is 0.001 g, not 1: remove the scale "
            "or set it to 0.001."
        ]
    }
    assert FileImportProfile.objects.count() == 0


def test_imported_files_are_view_only(plant, admin_client_):
    serials = make_cells(plant, [1])
    result = file_import(
        data=weigher_file(serials, [410.2]),
        name="cw.csv",
        profile=checkweigher_profile(plant),
        actor=transport_actor("file"),
    )
    changelist = reverse("admin:files_importedfile_changelist")
    change = reverse("admin:files_importedfile_change", args=[result.imported_file.pk])

    listing = admin_client_.get(changelist)
    detail = admin_client_.get(change)

    assert listing.status_code == detail.status_code == 200
    assert "cw.csv" in listing.content.decode()
    assert admin_client_.get(reverse("admin:files_importedfile_add")).status_code == 403
    assert 'name="_save"' not in detail.content.decode()
