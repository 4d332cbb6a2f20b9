"""REST API of vision inspection: results and defects with their evidence, the review
verdict, flags, and the model registry (register by upload, approve, activate)."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from compliance.choices import HoldSource
from compliance.models import Hold
from inspection.choices import ModelState
from inspection.models import InspectionModel
from inspection.vision.model import default_model_paths
from qms.ingest.services import ingest_raw
from tests.factories import UserFactory
from tests.inspection.payloads import crop, defect, envelope, payload, png, raw
from tests.inspection.test_registry import copy_model

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]

BASE = "/api/v1/inspection"


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def results(camera, thread, committed):
    docs = [
        envelope(
            payload(camera.model, start_m=1512.49, defects=[defect(md_m=1512.5)]),
            coil="CC-260303-001",
            message_id="cam-c1:000001",
        ),
        envelope(
            payload(
                camera.model,
                start_m=1520.0,
                frame_id=2,
                defects=[defect(md_m=1520.01, cls="crack", decision="review", confidence=0.7)],
            ),
            coil="CC-260303-001",
            message_id="cam-c1:000002",
        ),
        envelope(
            payload(camera.model, start_m=1530.0, frame_id=3),
            coil="CC-260303-001",
            message_id="cam-c1:000003",
        ),
    ]
    assert {o.status for o in committed(ingest_raw, [raw(d) for d in docs])} == {"accepted"}


def test_results_list_and_filter(quality, results):
    api = client_for(quality)

    got = api.get(f"{BASE}/results/", {"verdict": "defect", "coil": "CC-260303-001"})

    assert got.status_code == 200
    rows = got.json()["results"] if "results" in got.json() else got.json()
    assert [r["frame_id"] for r in rows] == [2, 1]  # newest first
    one = api.get(f"{BASE}/results/{rows[-1]['id']}/").json()
    assert one["station"] == "gf1/l1-pri/coat-c"
    assert one["defects"][0]["cls"] == "particle"
    assert one["defects"][0]["bbox_px"] == [2000, 500, 2012, 512]


def test_the_review_queue_and_a_verdict_through_the_api(
    quality, results, django_capture_on_commit_callbacks
):
    api = client_for(quality)
    queue = api.get(f"{BASE}/defects/", {"review_state": "pending"}).json()
    rows = queue["results"] if isinstance(queue, dict) else queue
    assert [(r["cls"], r["decision"]) for r in rows] == [("crack", "review")]
    crop_url = rows[0]["crop_url"]

    image = api.get(crop_url)
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content) == png(crop("crack"))

    bad = api.post(f"{BASE}/defects/{rows[0]['id']}/review/", {"verdict": "maybe"}, format="json")
    assert bad.status_code == 400 and "verdict" in bad.json()

    with django_capture_on_commit_callbacks(execute=True):
        done = api.post(
            f"{BASE}/defects/{rows[0]['id']}/review/",
            {"verdict": "confirm", "comment": "branching crack, 1.2 mm"},
            format="json",
        )
    assert done.status_code == 201, done.json()
    assert (done.json()["label"], done.json()["reviewed_by"]) == ("crack", quality.username)
    assert Hold.objects.filter(source=HoldSource.VISION).count() == 2


def test_an_auditor_reads_but_cannot_review(results):
    auditor = UserFactory(username="aud-vision", role="auditor")
    api = client_for(auditor)
    rows = api.get(f"{BASE}/defects/", {"review_state": "pending"}).json()
    rows = rows["results"] if isinstance(rows, dict) else rows
    got = api.post(f"{BASE}/defects/{rows[0]['id']}/review/", {"verdict": "confirm"})
    assert got.status_code == 403


def test_flags_list_and_acknowledge(quality, results):
    api = client_for(quality)
    flags = api.get(f"{BASE}/flags/", {"open": "true"}).json()
    flags = flags["results"] if isinstance(flags, dict) else flags
    assert sorted(f["action"] for f in flags) == ["hold", "review"]
    hold_flag = next(f for f in flags if f["action"] == "hold")
    assert hold_flag["cell_count"] == 2

    ack = api.post(f"{BASE}/flags/{hold_flag['id']}/acknowledge/", {"comment": "seen"})
    assert ack.status_code == 200 and ack.json()["acknowledged_by"] == quality.username


def test_register_approve_and_activate_through_the_api(quality, camera, tmp_path):
    api = client_for(quality)
    manifest, onnx, golden = copy_model(tmp_path, version="1.3.0")
    with manifest.open("rb") as m, onnx.open("rb") as f, golden.open("rb") as g:
        got = api.post(
            f"{BASE}/models/register/",
            {"file": f, "manifest": m, "golden": g, "notes": "retrained with review labels"},
            format="multipart",
        )
    assert got.status_code == 201, got.json()
    body = got.json()
    assert (body["version"], body["state"], body["golden_result"]["passed"]) == (
        "1.3.0",
        "validated",
        True,
    )

    approved = api.post(f"{BASE}/models/{body['id']}/approve/", {"reason": "FAT"}, format="json")
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    active = api.post(f"{BASE}/models/{body['id']}/activate/", {"reason": "go"}, format="json")
    assert active.status_code == 200 and active.json()["state"] == "active"
    camera.refresh_from_db()
    assert camera.model.version == "1.3.0"


def test_a_tampered_upload_is_refused_naming_the_file(quality, camera, tmp_path):
    api = client_for(quality)
    manifest, onnx, golden = copy_model(tmp_path, version="1.4.0", tamper=True)
    with manifest.open("rb") as m, onnx.open("rb") as f, golden.open("rb") as g:
        got = api.post(
            f"{BASE}/models/register/", {"file": f, "manifest": m, "golden": g}, format="multipart"
        )
    assert got.status_code == 400
    assert (got.json()["code"], got.json()["field"]) == ("checksum_mismatch", "file")
    assert list(InspectionModel.objects.values_list("state", flat=True)) == [ModelState.ACTIVE]


def test_an_operator_cannot_approve(operator, quality):
    manifest, onnx, golden = default_model_paths()
    from inspection import services

    model = services.model_register(
        manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=quality
    )
    got = client_for(operator).post(
        f"{BASE}/models/{model.pk}/approve/", {"reason": "x"}, format="json"
    )
    assert got.status_code == 403
    assert json.loads(got.content)["detail"].startswith("Your role lacks")
