"""REST API of formation: runs, steps (without samples), a step's curve (the resampled
copy or every sample), DCIR and aging readings, features, grades, rule sets, tray loading,
and the cycler file upload (refusals kept as dead letters)."""

from __future__ import annotations

import hashlib

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import include, path
from rest_framework.test import APIClient

import qms.urls
from formation import services
from formation.models import CyclerImportProfile, CyclerRun, GradingRuleSet, StepResult
from genealogy.choices import UnitKind
from genealogy.models import Unit
from qms.ingest.models import DeadLetter
from tests.factories import UserFactory
from tests.formation.conftest import aging_envelope, send, step_envelope, tray_envelope
from tests.formation.cyclers.fixtures import make_samples as ms

pytestmark = pytest.mark.django_db

BASE = "/api/v1/formation"

#: The project's routes with formation's API mounted where qms/urls.py mounts app APIs.
urlpatterns = [
    path("api/v1/formation/", include("formation.api.urls")),
    *qms.urls.urlpatterns,
]


@pytest.fixture(autouse=True)
def formation_routes(settings):
    settings.ROOT_URLCONF = __name__


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def reader(db):
    return UserFactory(username="auditor-formation", role="auditor")


@pytest.fixture
def recorded(sim, sim_curves, cells, formation_plant, quality):
    """Two cells formed (tray T0001 loaded), aged, featured and graded."""
    send(tray_envelope(sim, 0))
    send(step_envelope(sim, sim_curves, 0), step_envelope(sim, sim_curves, 1))
    send(aging_envelope(sim, 0), aging_envelope(sim, 1))
    services.features_compute(cell_ids=[cells[0].pk, cells[1].pk])
    engineer = quality
    engineer.user_permissions.add(Permission.objects.get(codename="change_gradingruleset"))
    engineer = type(engineer).objects.get(pk=engineer.pk)
    rules = services.grading_rules_create(
        line=formation_plant.line,
        name="v1",
        bins=[{"code": "A", "limits": {"ocv_mv": {"min": 3600}}}],
        k_abs_limit_mv_per_day=1.0,
        k_lot_z_limit=4.0,
        actor=engineer,
    )
    services.grading_rules_activate(rule_set=rules, actor=engineer, reason="start")
    services.cells_grade(cell_ids=[cells[0].pk, cells[1].pk], actor=engineer)
    return cells


def test_runs_list_filter_and_show(recorded, reader, sim):
    api = client_for(reader)

    listed = api.get(f"{BASE}/runs/", {"unit": str(sim.serial[1])}).json()["results"]
    one = api.get(f"{BASE}/runs/{listed[0]['id']}/").json()

    assert [r["unit"] for r in listed] == [str(sim.serial[1])]
    assert one["station"] == "gf1/l1-pri/form"
    assert (one["equipment"], one["channel"], one["channel_key"]) == (
        "fc-01", "b1/p02", "fc-01:b1/p02",
    )  # fmt: skip
    assert (one["tray"], one["position"], one["tray_verified"]) == ("T0001", "2", True)
    assert (one["source_format"], one["source_sign_convention"]) == (
        "envelope", "charge_positive",
    )  # fmt: skip
    assert one["steps_url"] == f"{BASE}/steps/?run={one['id']}"
    assert api.get(f"{BASE}/runs/", {"channel_key": "fc-01:b1/p01"}).json()["results"][0][
        "unit"
    ] == str(sim.serial[0])


def test_steps_come_without_samples_and_the_curve_on_its_own(recorded, reader):
    api = client_for(reader)
    run = CyclerRun.objects.get(unit=recorded[0])

    steps = api.get(f"{BASE}/steps/", {"run": run.pk, "step_type": "pulse"}).json()["results"]
    step = StepResult.objects.get(pk=steps[0]["id"])
    small = api.get(steps[0]["curve_url"]).json()
    full = api.get(steps[0]["curve_url"], {"resolution": "full"}).json()

    assert [s["sequence"] for s in steps] == [8, 12]
    assert "arrays" not in steps[0] and "time_s" not in steps[0]
    assert steps[0]["curve_url"] == f"{BASE}/steps/{step.pk}/curve/"
    assert (small["resolution"], small["points"], small["full_points"]) == ("resampled", 64, 11)
    assert small["sha256"] == step.curve.sha256
    assert small["time_s"][0] == 0.0 and small["time_s"][-1] == pytest.approx(10.0)
    assert (full["points"], len(full["voltage_v"])) == (11, 11)
    assert full["time_s"] == [float(t) for t in range(11)]
    assert full["current_a"][-1] == pytest.approx(step.end_current_a, rel=1e-6)
    assert set(small) >= {"voltage_v", "current_a", "capacity_ah", "temperature_c"}


def test_a_curve_request_names_what_is_wrong(recorded, reader):
    api = client_for(reader)
    step = StepResult.objects.first()

    bad = api.get(f"{BASE}/steps/{step.pk}/curve/", {"resolution": "raw"})
    missing = api.get(f"{BASE}/steps/999999/curve/")

    assert (bad.status_code, bad.json()["field"]) == (400, "resolution")
    assert (missing.status_code, missing.json()["field"]) == (404, "step")


def test_readings_features_grades_and_rules_are_listed(recorded, reader, sim):
    api = client_for(reader)
    serial = str(sim.serial[0])

    aging = api.get(f"{BASE}/aging-readings/", {"unit": serial}).json()["results"]
    dcir = api.get(f"{BASE}/dcir/", {"unit": serial}).json()["results"]
    features = api.get(f"{BASE}/features/", {"lot": "L1260302A"}).json()["results"]
    grades = api.get(f"{BASE}/grades/", {"unit": serial}).json()["results"]
    rules = api.get(f"{BASE}/rule-sets/", {"state": "active"}).json()["results"]
    loads = api.get(f"{BASE}/tray-loads/", {"tray": "T0001"}).json()["results"]

    assert len(aging) == 15
    assert (aging[0]["rack"], aging[0]["equipment"], aging[0]["acir_mohm"]) == (
        f"R{sim.ocv_log(0).rack + 1:02d}", "ocv-1", 0.62,
    )  # fmt: skip
    assert [d["step"] for d in dcir] and all(d["r_10s_mohm"] > 0 for d in dcir)
    assert sorted(f["unit"] for f in features) == [str(sim.serial[0]), str(sim.serial[1])]
    assert features[0]["z_features"][0] == "q_discharge_ah"
    assert set(features[0]["z_scores"]) == {"lot", "channel", "rack"}
    assert (grades[0]["bin"], grades[0]["passed"], grades[0]["k_screen_failed"]) == (
        "A", True, False,
    )  # fmt: skip
    assert grades[0]["rule_set_name"] == "v1"
    assert grades[0]["inputs"]["ocv_mv"] == pytest.approx(sim.ocv_log(0).ocv_v[-1] * 1e3)
    assert [(r["name"], r["line"], r["k_abs_limit_mv_per_day"]) for r in rules] == [
        ("v1", "l1-pri", 1.0)
    ]
    assert len(loads) == 8


# --- the upload ----------------------------------------------------------------------------------


@pytest.fixture
def cabinet_profile(formation_plant):
    for serial in ("LF105A24031200417", "LF105A24031200418", "LF105A24031200419"):
        Unit.objects.create(kind=UnitKind.CELL, serial=serial, line=formation_plant.line)
    return CyclerImportProfile.objects.create(
        name="l1-pri cabinet CSV", cycler_profile="cabinet_csv",
        station=formation_plant.stations["form"], timezone="Asia/Shanghai", source="FC-03",
    )  # fmt: skip


@pytest.fixture
def uploader(db):
    user = UserFactory(username="op-upload", role="operator")  # the role may import files
    assert user.has_perm("formation.add_cyclerfileimport")
    return user


def upload(api, data: bytes, name: str = "cabinet_tray_T0417.csv", profile="l1-pri cabinet CSV"):
    return api.post(
        f"{BASE}/files/import/",
        {"file": SimpleUploadedFile(name, data, content_type="text/csv"), "profile": profile},
        format="multipart",
    )


def test_an_upload_imports_each_cell_once(cabinet_profile, uploader, reader):
    api = client_for(uploader)
    data = ms.CABINET_FILE.read_bytes()

    created = upload(api, data)
    again = upload(api, data)
    files = client_for(reader).get(f"{BASE}/files/").json()["results"]

    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["cells"], body["accepted"], body["duplicate"], body["rejected"]) == (3, 3, 0, 0)
    assert body["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["file"]["imported_by"] == "op-upload"
    assert again.status_code == 409
    assert again.json()["code"] == "already_imported"
    assert again.json()["imported_file"] == body["file"]["id"]
    assert DeadLetter.objects.get(pk=again.json()["dead_letter_id"]).kind == "cycler_file"
    assert [f["name"] for f in files] == ["cabinet_tray_T0417.csv"]
    assert CyclerRun.objects.count() == 3


def test_an_unreadable_upload_is_refused_and_kept(cabinet_profile, uploader):
    data = ms.replace_once(ms.text_of(ms.CABINET_FILE), ",2998.3,", ",NaN,").encode()

    response = upload(client_for(uploader), data)

    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["reason"], body["field"], body["row"]) == (
        "cycler_file", "not_a_number", "voltage", 11,
    )  # fmt: skip
    assert bytes(DeadLetter.objects.get(pk=body["dead_letter_id"]).raw) == data
    assert CyclerRun.objects.count() == 0


def test_an_upload_needs_a_known_profile_and_the_permission(cabinet_profile, uploader, reader):
    data = ms.CABINET_FILE.read_bytes()
    # Operators and quality engineers import cycler files; an MRB member does not.
    mrb = UserFactory(username="mrb-no-perm", role="mrb_member")

    unknown = upload(client_for(uploader), data, profile="nope")
    auditor = upload(client_for(reader), data)
    no_perm = upload(client_for(mrb), data)

    assert (unknown.status_code, unknown.json()["field"]) == (404, "profile")
    assert (auditor.status_code, no_perm.status_code) == (403, 403)
    assert "formation.add_cyclerfileimport" in no_perm.json()["detail"]
    assert (CyclerRun.objects.count(), DeadLetter.objects.count()) == (0, 0)


def test_profiles_are_listed_for_uploaders(cabinet_profile, reader):
    profiles = client_for(reader).get(f"{BASE}/profiles/").json()["results"]

    assert [(p["name"], p["cycler_profile"], p["station"]) for p in profiles] == [
        ("l1-pri cabinet CSV", "cabinet_csv", "gf1/l1-pri/form")
    ]


# --- the admin ----------------------------------------------------------------------------------


@pytest.fixture
def admin_client_(client, db):
    admin = UserFactory(username="admin-formation", is_staff=True, is_superuser=True)
    client.force_login(admin)
    client.user = admin
    return client


def test_the_admin_lists_every_formation_record(admin_client_, recorded):
    for model in (
        "cyclerrun", "stepresult", "dcirreading", "agingreading", "trayload", "cellfeatures",
        "cellgrade", "gradingruleset", "cyclerimportprofile", "cyclerfileimport",
    ):  # fmt: skip
        response = admin_client_.get(f"/admin/formation/{model}/")
        assert response.status_code == 200, model
    run = CyclerRun.objects.first()
    page = admin_client_.get(f"/admin/formation/cyclerrun/{run.pk}/change/")
    assert page.status_code == 200
    assert b"form_cc" in page.content  # the steps inline
    assert admin_client_.get("/admin/formation/cyclerrun/add/").status_code == 403


def test_a_rule_set_is_drafted_and_put_in_force_in_the_admin(admin_client_, formation_plant):
    created = admin_client_.post(
        "/admin/formation/gradingruleset/add/",
        {
            "line": formation_plant.line.pk,
            "name": "admin v1",
            "bins": '[{"code": "A", "limits": {"capacity_ah": {"min": 104.0}}}]',
            "reject_bin": "NG",
            "k_fail_bin": "NG-K",
            "k_abs_limit_mv_per_day": "0.2",
            "k_lot_z_limit": "4",
            "k_min_readings": "5",
            "notes": "",
        },
    )
    refused = admin_client_.post(
        "/admin/formation/gradingruleset/add/",
        {
            "line": formation_plant.line.pk,
            "name": "admin v2",
            "bins": '[{"code": "A", "limits": {"capacity": {"min": 104.0}}}]',
            "reject_bin": "NG",
            "k_fail_bin": "NG-K",
            "k_abs_limit_mv_per_day": "0.2",
            "k_lot_z_limit": "4",
            "k_min_readings": "5",
        },
    )

    assert created.status_code == 302
    assert refused.status_code == 200
    assert b"bins[0].limits.capacity: Unknown criterion" in refused.content
    rules = GradingRuleSet.objects.get()
    assert (rules.state, rules.created_by) == ("draft", admin_client_.user)
    assert rules.history.get().history_change_reason == "drafted in the admin"

    admin_client_.post(
        "/admin/formation/gradingruleset/",
        {"action": "activate", "_selected_action": [rules.pk], "reason": "line start"},
    )

    rules.refresh_from_db()
    assert rules.state == "active"
    assert rules.history.latest().history_change_reason == "in force: line start"
    assert (
        admin_client_.get(f"/admin/formation/gradingruleset/{rules.pk}/change/").status_code == 200
    )
