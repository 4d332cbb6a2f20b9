"""REST API of thermal risk: scores listed and filtered, field returns listed, filtered and
recorded, the model registry's approve / activate (quality engineer only)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import include, path
from rest_framework.test import APIClient

from risk import services
from risk.choices import ModelState
from risk.models import FieldReturn, FieldReturnLabel, RiskModel
from risk.scoring import default_model_paths
from tests.factories import UserFactory
from tests.genealogy.conftest import VINS
from tests.risk.conftest import features_write

# The risk API is mounted here until the project's URL configuration includes it.
urlpatterns = [
    path("api/v1/risk/", include("risk.api.urls")),
    path("", include("qms.urls")),
]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

BASE = "/api/v1/risk"
OUTLIER = 5


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def scored(thread, risk_model):
    features_write(thread.cells, outlier_index=OUTLIER)
    return services.cells_score(cell_ids=[c.pk for c in thread.cells])


@pytest.fixture
def entering(quality):
    quality.user_permissions.add(
        Permission.objects.get(content_type__app_label="risk", codename="add_fieldreturn")
    )
    return quality


def test_scores_list_and_filter(operator, scored, thread):
    client = client_for(operator)

    everything = client.get(f"{BASE}/scores/", {"page_size": 100}).json()
    held = client.get(f"{BASE}/scores/", {"quarantined": "true", "page_size": 100}).json()
    one = client.get(f"{BASE}/scores/", {"cell": thread.cells[OUTLIER].serial}).json()

    def rows(body):
        return body["results"] if isinstance(body, dict) else body

    assert len(rows(everything)) == 16
    assert sorted(r["cell"] for r in rows(held)) == sorted(
        s.unit.serial for s in scored if s.quarantined
    )
    [row] = rows(one)
    bad = next(s for s in scored if s.unit_id == thread.cells[OUTLIER].pk)
    assert row == {
        "id": bad.pk,
        "cell": thread.cells[OUTLIER].serial,
        "risk": bad.risk,
        "supervised_p": bad.supervised_p,
        "outlier_score": bad.outlier_score,
        "baseline_score": bad.baseline_score,
        "baseline_flags": bad.baseline_flags,
        "reasons": bad.reasons,
        "model_version": "1.1.0",
        "product": "default",
        "threshold": bad.threshold,
        "threshold_mode": "top_fraction",
        "quarantined": True,
        "scored_at": row["scored_at"],
    }
    detail = client.get(f"{BASE}/scores/{bad.pk}/").json()
    assert detail["features"]["k_value_z"] == 50.0


def test_a_field_return_is_recorded_listed_and_filtered(entering, thread):
    client = client_for(entering)

    made = client.post(
        f"{BASE}/field-returns/",
        {
            "returned_on": "2026-11-02",
            "failure_mode": "thermal_event",
            "vin": VINS[1],
            "analysis": "Thermal event in the rear module while DC fast charging.",
        },
        format="json",
    )

    assert made.status_code == 201, made.content
    body = made.json()
    assert (body["number"], body["level"], body["pack"], body["cell"]) == (
        "FR-2026-00001",
        "pack",
        "PK2611000002",
        None,
    )
    assert body["label_count"] == 6
    assert FieldReturnLabel.objects.filter(field_return_id=body["id"]).count() == 6
    listed = client.get(f"{BASE}/field-returns/", {"failure_mode": "thermal_event"}).json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [r["number"] for r in rows] == ["FR-2026-00001"]
    by_cell = client.get(f"{BASE}/field-returns/", {"cell": thread.cell(7).serial}).json()
    rows = by_cell["results"] if isinstance(by_cell, dict) else by_cell
    assert [r["number"] for r in rows] == ["FR-2026-00001"]
    none = client.get(f"{BASE}/field-returns/", {"failure_mode": "swelling"}).json()
    assert (none["results"] if isinstance(none, dict) else none) == []


def test_a_bad_field_return_names_the_field_and_writes_nothing(entering, thread):
    answer = client_for(entering).post(
        f"{BASE}/field-returns/",
        {"returned_on": "2026-11-02", "failure_mode": "venting", "cell_serial": "P126119999999"},
        format="json",
    )

    assert answer.status_code == 404
    assert answer.json() == {
        "code": "not_found",
        "detail": "No cell P126119999999.",
        "field": "cell_serial",
    }
    assert FieldReturn.objects.count() == 0


def test_an_operator_cannot_record_a_return(operator, thread):
    answer = client_for(operator).post(
        f"{BASE}/field-returns/",
        {"returned_on": "2026-11-02", "failure_mode": "venting", "vin": VINS[0]},
        format="json",
    )

    assert answer.status_code == 403
    assert FieldReturn.objects.count() == 0


def test_a_quality_engineer_approves_and_activates_through_the_api(quality):
    manifest, onnx = default_model_paths()
    model = services.model_register(manifest_path=manifest, onnx_path=onnx, actor=quality)
    client = client_for(quality)

    approved = client.post(
        f"{BASE}/models/{model.pk}/approve/", {"reason": "Hold-out comparison reviewed"}
    )
    activated = client.post(f"{BASE}/models/{model.pk}/activate/", {"reason": "Line start"})

    assert approved.status_code == 200, approved.content
    assert approved.json()["state"] == "approved"
    assert approved.json()["approved_by"] == quality.username
    assert activated.status_code == 200
    assert activated.json()["state"] == "active"
    listed = client.get(f"{BASE}/models/", {"state": "active"}).json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert [(r["version"], r["sha256"]) for r in rows] == [("1.1.0", model.sha256)]


def test_only_a_quality_engineer_may_approve(quality):
    manifest, onnx = default_model_paths()
    model = services.model_register(manifest_path=manifest, onnx_path=onnx, actor=quality)
    operator = UserFactory(username="op-api", role="operator")
    auditor = UserFactory(username="aud-api", role="auditor")

    answers = [
        client_for(user).post(f"{BASE}/models/{model.pk}/approve/", {"reason": "fine"})
        for user in (operator, auditor)
    ]

    assert [a.status_code for a in answers] == [403, 403]
    model.refresh_from_db()
    assert model.state == ModelState.VALIDATED
    assert model.approved_by is None
    assert RiskModel.objects.filter(state=ModelState.APPROVED).count() == 0


def test_approving_an_active_model_is_refused(quality, risk_model):
    answer = client_for(quality).post(f"{BASE}/models/{risk_model.pk}/approve/", {"reason": "x"})

    assert answer.status_code == 409
    assert answer.json()["field"] == "state"
