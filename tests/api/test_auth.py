"""Who may call what: integration tokens by scope, people by role."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient, APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from compliance.models import Hold
from genealogy.choices import UnitStatus
from genealogy.models import Measurement, Unit
from qms.api.permissions import ScopedAccess
from qms.choices import IntegrationScope
from qms.models import Integration
from tests.api.conftest import cell_serial
from tests.factories import UserFactory, integration_create

pytestmark = pytest.mark.django_db

BULK_URL = "/api/v1/units/create-bulk/"
MEAS_URL = "/api/v1/measurements/record/"
PLACE_URL = "/api/v1/holds/place/"


def _bulk_body(plant, n=2):
    return {"kind": "cell", "line": plant.line.code, "serials": [cell_serial(i) for i in range(n)]}


def test_anonymous_request_is_401(api_client, plant):
    response = api_client.get("/api/v1/units/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_unknown_token_is_401(api_client, plant):
    api_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")
    response = api_client.get("/api/v1/units/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


def test_disabled_integration_is_401(api_client, plant):
    integration, key = integration_create("old-mes", IntegrationScope.READ_WRITE)
    Integration.objects.filter(pk=integration.pk).update(is_active=False)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = api_client.get("/api/v1/units/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Integration disabled."}


def test_read_token_reads(read_client, plant):
    response = read_client.get("/api/v1/plant/characteristics/")
    assert response.status_code == 200
    assert [c["code"] for c in response.json()["results"]] == [
        "cathode-areal-weight",
        "electrolyte-fill-mass",
    ]


def test_read_token_may_not_write_and_nothing_is_written(read_client, plant):
    response = read_client.post(BULK_URL, _bulk_body(plant), format="json")
    assert response.status_code == 403
    assert response.json() == {"detail": "Integration 'erp-gf1' has a read-only token."}
    assert not Unit.objects.exists()


def test_read_write_token_writes_as_the_integration(write_client, plant):
    response = write_client.post(BULK_URL, _bulk_body(plant), format="json")
    assert response.status_code == 201
    assert response.json()["created"] == 2
    unit = Unit.objects.get(serial=cell_serial(0))
    assert unit.history.get().history_user.username == "int-mes-gf1"


def test_token_use_is_stamped_at_most_once_a_minute(plant):
    integration, key = integration_create("plc-gw-l1", IntegrationScope.READ)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    client.get("/api/v1/plant/sites/")
    first = Integration.objects.get(pk=integration.pk).last_used_at
    assert first is not None
    client.get("/api/v1/plant/sites/")
    assert Integration.objects.get(pk=integration.pk).last_used_at == first
    # A day and five seconds ago is more than a minute ago (not five seconds).
    stale = first - timedelta(days=1, seconds=5)
    Integration.objects.filter(pk=integration.pk).update(last_used_at=stale)
    client.get("/api/v1/plant/sites/")
    assert Integration.objects.get(pk=integration.pk).last_used_at >= first


def test_auditor_reads_everything_and_writes_nothing(login, run, plant):
    auditor = login("auditor")
    assert auditor.get("/api/v1/units/").status_code == 200
    assert auditor.get(f"/api/v1/units/{run.vehicle.serial}/").status_code == 200
    assert auditor.get("/api/v1/holds/").status_code == 200
    assert auditor.get("/api/v1/measurements/").status_code == 200

    row = {
        "unit": run.cells[0].serial,
        "characteristic": plant.chars["fill_mass"].pk,
        "value": 410.2,
        "measured_at": timezone.now().isoformat(),
    }
    response = auditor.post(MEAS_URL, {"rows": [row]}, format="json")
    assert response.status_code == 403
    assert response.json() == {"detail": "Auditors have read-only access."}
    response = auditor.post(
        PLACE_URL, {"units": [run.cells[0].serial], "reason": "audit finding"}, format="json"
    )
    assert response.status_code == 403
    assert not Measurement.objects.exists()
    assert not Hold.objects.exists()
    assert Unit.objects.get(pk=run.cells[0].pk).status == UnitStatus.IN_PROCESS


def test_operator_records_measurements(login, run, plant):
    operator = login("operator")
    row = {
        "unit": run.cells[0].serial,
        "characteristic": plant.chars["fill_mass"].pk,
        "value": 410.2,
        "measured_at": timezone.now().isoformat(),
        "equipment": plant.equipment["weigher"].pk,
    }
    response = operator.post(MEAS_URL, {"rows": [row]}, format="json")
    assert response.status_code == 201
    m = Measurement.objects.get()
    assert (m.unit_id, m.value, m.in_spec, m.recorded_by) == (
        run.cells[0].pk,
        410.2,
        True,
        operator.user,
    )


def test_operator_places_but_may_not_release_a_hold(login, run, hold):
    operator = login("operator")
    placed = operator.post(
        PLACE_URL,
        {"units": [run.cells[0].serial], "reason": "Tab weld pull force low at TW-02"},
        format="json",
    )
    assert placed.status_code == 201
    number = placed.json()["number"]
    response = operator.post(
        f"/api/v1/holds/{number}/release/", {"reason": "re-tested OK"}, format="json"
    )
    assert response.status_code == 403
    assert response.json() == {
        "detail": "Your role lacks the permission for this: compliance.change_hold."
    }
    assert Hold.objects.get(number=number).status == "open"
    assert Unit.objects.get(pk=run.cells[0].pk).status == UnitStatus.ON_HOLD


def test_account_without_role_may_not_write(login, plant):
    nobody = login(None, username="visitor")
    response = nobody.post(BULK_URL, _bulk_body(plant), format="json")
    assert response.status_code == 403
    assert response.json() == {
        "detail": "Your role lacks the permission for this: genealogy.add_unit."
    }
    assert not Unit.objects.exists()


def test_integration_account_by_session_has_no_write_permission(plant):
    integration, _key = integration_create("mes-l2", IntegrationScope.READ_WRITE)
    client = APIClient()
    client.force_login(integration.user)
    # Logged in by session, an integration account has no model permissions: its scope
    # comes from its token only.
    response = client.post(BULK_URL, _bulk_body(plant), format="json")
    assert response.status_code == 403
    assert not Unit.objects.exists()


def test_a_write_view_that_names_no_permission_is_closed_to_people(plant):
    class Undeclared(APIView):
        def post(self, request):  # pragma: no cover - never reached
            raise AssertionError

    qe = UserFactory(username="qe-1", role="quality_engineer")
    request = APIRequestFactory().post("/x/", {}, format="json")
    force_authenticate(request, user=qe)
    response = Undeclared.as_view(permission_classes=[ScopedAccess])(request)
    assert response.status_code == 403
    assert response.data == {"detail": "This operation is not open to personal accounts."}
