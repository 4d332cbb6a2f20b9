"""SPC over the API: configuration, limits (propose, approve, reject), chart data, state,
alarms; shapes, permissions and errors that name the field."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rest_framework.test import APIClient

from qms.choices import IntegrationScope
from spc.models import ChartConfig, ControlLimits, SpcAlarm
from spc.services import (
    chart_config_get_or_create,
    chart_config_update,
    limits_approve,
    limits_propose,
    spc_evaluate,
)
from tests.factories import UserFactory, integration_create
from tests.spc.conftest import SIGMA_FILL_G, normal

pytestmark = pytest.mark.django_db

BASE = "/api/v1/spc"


@pytest.fixture
def login(db):
    def _login(role: str) -> APIClient:
        user = UserFactory(username=f"{role}-api", role=role)
        client = APIClient()
        assert client.login(username=user.username, password="celltrace-test")
        client.user = user
        return client

    return _login


@pytest.fixture
def qe_client(login):
    return login("quality_engineer")


def _token(scope: str) -> APIClient:
    _integration, key = integration_create(f"mes-{scope}", scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def baseline(fill, record, t0):
    rows = record(fill, normal(11, 125, 5.0, SIGMA_FILL_G), start=t0, step_s=60)
    return rows, t0, t0 + timedelta(minutes=125)


@pytest.fixture
def alarmed(approved_fill, fill, record, phase2_start):
    """60 values after the approval, the 31st above the UCL; evaluated."""
    values = normal(12, 60, 5.0, SIGMA_FILL_G)
    values[30] = 5.0 + 3.7 * SIGMA_FILL_G
    rows = record(fill, values, start=phase2_start)
    spc_evaluate(characteristic_id=fill.pk)
    return rows


# ----------------------------------------------------------------------- configuration


def test_config_of_a_characteristic_never_configured_is_the_default(qe_client, fill):
    got = qe_client.get(f"{BASE}/characteristics/{fill.pk}/config/")
    assert got.status_code == 200
    assert got.json() == {
        "characteristic": fill.pk,
        "characteristic_code": "electrolyte-fill-mass",
        "chart_type": "i_mr",
        "subgroup_mode": "consecutive",
        "subgroup_size": 1,
        "subgroup_window_s": None,
        "rule_preset": "nelson",
        "rules": [1, 2, 3, 4, 5, 6, 7, 8],
        "cusum_enabled": True,
        "cusum_k_sigma": 0.75,
        "cusum_h_sigma": 3.34,
        "cusum_head_start_sigma": 0.0,
        "ewma_enabled": False,
        "ewma_lambda": 0.2,
        "ewma_l": 2.962,
        "enabled": True,
        "updated_at": None,
    }
    assert not ChartConfig.objects.exists()  # reading writes nothing


def test_config_update_by_a_quality_engineer(qe_client, fill):
    got = qe_client.patch(
        f"{BASE}/characteristics/{fill.pk}/config/",
        {"rules": [1, 5], "ewma_enabled": True, "reason": "EWMA for slow nozzle wear"},
        format="json",
    )
    assert got.status_code == 200, got.content
    body = got.json()
    assert (body["rule_preset"], body["rules"], body["ewma_enabled"]) == ("custom", [1, 5], True)
    config = ChartConfig.objects.get(characteristic=fill)
    assert config.history.order_by("-history_id").first().history_change_reason == (
        "EWMA for slow nozzle wear"
    )


@pytest.mark.parametrize(
    ("payload", "status", "body"),
    [
        (
            {"rules": [1, 2, 9]},
            400,
            {
                "code": "invalid",
                "field": "rules",
                "detail": "unknown run rule 9: the known rules are 1, 2, 3, 4, 5, 6, 7, 8 (Nelson)",
            },
        ),
        ({"chart_type": "p"}, 400, {"chart_type": ['"p" is not a valid choice.']}),
        (
            {"cusum_h_sigma": 0},
            400,
            {
                "code": "invalid",
                "field": "cusum_h_sigma",
                "detail": "CUSUM: h must be a finite number > 0, got 0.0.",
            },
        ),
    ],
)
def test_config_refusals_name_the_field(qe_client, fill, payload, status, body):
    got = qe_client.patch(f"{BASE}/characteristics/{fill.pk}/config/", payload, format="json")
    assert (got.status_code, got.json()) == (status, body)
    assert not ChartConfig.objects.exists()


@pytest.mark.parametrize("who", ["operator", "auditor", "read_token"])
def test_config_update_is_refused_to_roles_without_it(login, fill, who):
    client = _token(IntegrationScope.READ) if who == "read_token" else login(who)
    got = client.patch(f"{BASE}/characteristics/{fill.pk}/config/", {"rules": [1]}, format="json")
    assert got.status_code == 403
    assert not ChartConfig.objects.exists()


def test_unknown_characteristic_is_404_naming_it(qe_client):
    got = qe_client.get(f"{BASE}/characteristics/999999/config/")
    assert (got.status_code, got.json()) == (
        404,
        {"code": "not_found", "detail": "No characteristic 999999.", "field": "characteristic"},
    )


# ------------------------------------------------------------------------------ limits


def test_propose_approve_and_read_the_history(qe_client, fill, baseline):
    rows, start, end = baseline
    proposed = qe_client.post(
        f"{BASE}/characteristics/{fill.pk}/limits/propose/",
        {
            "baseline_from": start.isoformat(),
            "baseline_to": end.isoformat(),
            "excluded": [{"measurement_id": rows[7].pk, "reason": "CW-1 tare fault"}],
            "note": "week 48",
        },
        format="json",
    )
    assert proposed.status_code == 201, proposed.content
    draft = proposed.json()
    assert set(draft) == {
        "id", "characteristic", "characteristic_code", "version", "status", "chart_type",
        "centre", "sigma", "lcl", "ucl", "subgroup_size", "degenerate", "statistics",
        "baseline_from", "baseline_to", "baseline_values", "values_used", "subgroups_used",
        "excluded", "proposed_exclusions", "warnings", "note", "proposed_by", "proposed_at",
        "approved_by", "approved_at", "monitor_from", "reason", "history",
    }  # fmt: skip
    assert (draft["status"], draft["version"], draft["values_used"], draft["proposed_by"]) == (
        "draft",
        1,
        124,
        "quality_engineer-api",
    )
    assert draft["excluded"] == [{"measurement_id": rows[7].pk, "reason": "CW-1 tare fault"}]
    assert [s["statistic"] for s in draft["statistics"]] == ["x", "mr"]

    approved = qe_client.post(
        f"{BASE}/limits/{draft['id']}/approve/",
        {"reason": "reviewed with MRB", "monitor_from": end.isoformat()},
        format="json",
    )
    assert approved.status_code == 200, approved.content
    body = approved.json()
    assert (body["status"], body["approved_by"], body["reason"]) == (
        "approved",
        "quality_engineer-api",
        "reviewed with MRB",
    )
    assert [(h["status"], h["by"], h["why"]) for h in body["history"]] == [
        ("draft", "quality_engineer-api", "proposed from 124 values, 1 excluded, 0 more proposed"),
        ("approved", "quality_engineer-api", "approved: reviewed with MRB"),
    ]
    again = qe_client.post(f"{BASE}/limits/{draft['id']}/approve/", {"reason": "x"}, format="json")
    assert (again.status_code, again.json()["code"], again.json()["field"]) == (
        409,
        "not_draft",
        "status",
    )
    listed = qe_client.get(f"{BASE}/characteristics/{fill.pk}/limits/?status=approved")
    assert [v["version"] for v in listed.json()["results"]] == [1]


def test_approval_refusals(login, qe_client, fill, baseline, qe):
    _, start, end = baseline
    draft = limits_propose(characteristic=fill, baseline_from=start, baseline_to=end, actor=qe)
    url = f"{BASE}/limits/{draft.pk}/approve/"

    assert login("operator").post(url, {"reason": "fine"}, format="json").status_code == 403
    no_reason = qe_client.post(url, {}, format="json")
    assert (no_reason.status_code, list(no_reason.json())) == (400, ["reason"])
    token = _token(IntegrationScope.READ_WRITE).post(url, {"reason": "from MES"}, format="json")
    assert (token.status_code, token.json()["code"], token.json()["field"]) == (
        403,
        "not_permitted",
        "actor",
    )
    draft.refresh_from_db()
    assert (draft.status, draft.history.count()) == ("draft", 1)


def test_propose_refusals(qe_client, fill, baseline, t0):
    _rows, start, end = baseline
    url = f"{BASE}/characteristics/{fill.pk}/limits/propose/"
    few = qe_client.post(
        url,
        {
            "baseline_from": start.isoformat(),
            "baseline_to": (start + timedelta(minutes=10)).isoformat(),
        },
        format="json",
    )
    assert few.status_code == 409
    assert (few.json()["code"], few.json()["field"]) == ("insufficient_data", "baseline")
    assert "at least 20 included values" in few.json()["detail"]

    bad = qe_client.post(
        url,
        {
            "baseline_from": start.isoformat(),
            "baseline_to": end.isoformat(),
            "excluded": [{"measurement_id": 10**9, "reason": "typo"}],
        },
        format="json",
    )
    assert (bad.status_code, bad.json()["field"]) == (400, "excluded[0].measurement_id")
    missing = qe_client.post(url, {"baseline_from": start.isoformat()}, format="json")
    assert (missing.status_code, list(missing.json())) == (400, ["baseline_to"])
    assert not ControlLimits.objects.exists()


def test_reject_over_the_api(qe_client, fill, baseline, qe):
    _, start, end = baseline
    draft = limits_propose(characteristic=fill, baseline_from=start, baseline_to=end, actor=qe)
    got = qe_client.post(
        f"{BASE}/limits/{draft.pk}/reject/", {"reason": "spans a recipe change"}, format="json"
    )
    assert (got.status_code, got.json()["status"], got.json()["reason"]) == (
        200,
        "rejected",
        "spans a recipe change",
    )


# -------------------------------------------------------------------------- chart data


def test_chart_data_of_an_individuals_chart(qe_client, alarmed, approved_fill, fill):
    got = qe_client.get(f"{BASE}/characteristics/{fill.pk}/chart/?last=40")
    assert got.status_code == 200
    body = got.json()
    assert (body["chart_type"], body["limits"]["id"], body["limits"]["version"]) == (
        "i_mr",
        approved_fill.pk,
        1,
    )
    assert [s["statistic"] for s in body["limits"]["statistics"]] == ["x", "mr"]
    points = body["points"]
    assert [p["index"] for p in points] == list(range(20, 60))
    assert [p["measurement_ids"] for p in points] == [[m.pk] for m in alarmed[20:]]
    assert set(points[10]["values"]) == {"x", "mr", "cusum_up", "cusum_down"}
    assert points[10]["values"]["x"] == pytest.approx(5.0 + 3.7 * SIGMA_FILL_G)
    rule_1 = [a for a in body["alarms"] if a["rule"] == "nelson_1" and a["statistic"] == "x"]
    assert [(a["index"], a["last_measurement_id"]) for a in rule_1] == [(30, alarmed[30].pk)]
    assert all(a["index"] is not None for a in body["alarms"])


def test_chart_data_of_subgroups_has_the_limits_of_each_size(
    qe_client, fill, qe, record, t0, phase2_start
):
    config = chart_config_get_or_create(characteristic=fill)
    chart_config_update(config=config, actor=qe, chart_type="xbar_r", subgroup_size=5)
    record(fill, normal(4, 150, 5.0, SIGMA_FILL_G), start=t0, step_s=60)
    end = t0 + timedelta(minutes=150)
    draft = limits_propose(characteristic=fill, baseline_from=t0, baseline_to=end, actor=qe)
    limits_approve(limits=draft, actor=qe, reason="baseline", monitor_from=end)
    rows = record(fill, normal(5, 23, 5.0, SIGMA_FILL_G), start=phase2_start)
    spc_evaluate(characteristic_id=fill.pk)

    body = qe_client.get(f"{BASE}/characteristics/{fill.pk}/chart/").json()

    points = body["points"]
    assert [p["index"] for p in points] == [0, 1, 2, 3]  # the 5th subgroup is still open
    assert points[1]["measurement_ids"] == [m.pk for m in rows[5:10]]
    assert points[1]["n"] == 5
    assert set(points[1]["values"]) == {"xbar", "r", "cusum_up", "cusum_down"}
    xbar = draft.engine_limits["statistics"][0]
    assert points[1]["limits"]["xbar"] == pytest.approx(
        {"centre": xbar["centre"], "lcl": xbar["lcl"], "ucl": xbar["ucl"]}
    )


def test_chart_data_without_limits_is_the_raw_values(qe_client, fill, baseline):
    body = qe_client.get(f"{BASE}/characteristics/{fill.pk}/chart/?last=3").json()
    rows = baseline[0]
    assert body["limits"] is None and body["alarms"] == []
    assert [p["measurement_ids"] for p in body["points"]] == [[m.pk] for m in rows[-3:]]


def test_chart_query_refusals(qe_client, fill, t0):
    zero = qe_client.get(f"{BASE}/characteristics/{fill.pk}/chart/?last=0")
    assert (zero.status_code, list(zero.json())) == (400, ["last"])
    start = t0.isoformat().replace("+00:00", "Z")
    backwards = qe_client.get(
        f"{BASE}/characteristics/{fill.pk}/chart/", {"start": start, "end": start}
    )
    assert (backwards.status_code, backwards.json()["field"]) == (400, "end")


# ------------------------------------------------------------------------------ alarms


def test_alarm_list_filters_and_acknowledge(login, qe_client, alarmed, fill, phase2_start):
    alarm = SpcAlarm.objects.get(rule="nelson_1", statistic="x")
    listed = qe_client.get(
        f"{BASE}/alarms/",
        {"status": "open", "characteristic": fill.pk, "station": "l2-cyl/fill", "rule": "nelson_1"},
    )
    assert listed.status_code == 200
    found = [a for a in listed.json()["results"] if a["statistic"] == "x"]
    assert [a["id"] for a in found] == [alarm.pk]
    assert found[0]["station"] == "gf1/l2-cyl/fill"
    assert found[0]["points"][0]["measurement_id"] == alarmed[30].pk
    assert qe_client.get(f"{BASE}/alarms/", {"station": "l2-cyl/coat-c"}).json()["results"] == []
    assert qe_client.get(f"{BASE}/alarms/", {"status": "closed"}).json()["results"] == []

    url = f"{BASE}/alarms/{alarm.pk}/acknowledge/"
    assert login("operator").post(url, {"cause": "x"}, format="json").status_code == 403
    no_cause = qe_client.post(url, {}, format="json")
    assert (no_cause.status_code, list(no_cause.json())) == (400, ["cause"])
    done = login("mrb_member").post(
        url, {"cause": "pump P2 air bubble", "comment": "purged"}, format="json"
    )
    assert done.status_code == 200, done.content
    assert (done.json()["status"], done.json()["acknowledged_by"], done.json()["cause"]) == (
        "acknowledged",
        "mrb_member-api",
        "pump P2 air bubble",
    )
    twice = qe_client.post(url, {"cause": "again"}, format="json")
    assert (twice.status_code, twice.json()["code"]) == (409, "not_open")
    missing = qe_client.post(f"{BASE}/alarms/999999/acknowledge/", {"cause": "x"}, format="json")
    assert (missing.status_code, missing.json()["field"]) == (404, "alarm")


# ------------------------------------------------------------------------------- state


def test_state_of_a_characteristic(qe_client, alarmed, fill, line):
    body = qe_client.get(f"{BASE}/characteristics/{fill.pk}/state/").json()
    assert body["state"] == "alarm"
    assert body["open_alarms"] == SpcAlarm.objects.filter(status="open").count()
    assert body["limits"]["version"] == 1
    assert body["capability"]["status"] == "ok"
    assert {i["name"] for i in body["capability"]["indices"]} >= {"Cp", "Cpk", "Pp", "Ppk"}
    arl = body["arl"]
    assert arl["shifts_sigma"] == [0.0, 1.0, 1.5, 2.0]
    assert arl["cusum"]["arl"][0] == pytest.approx(370.57, abs=0.01)
    assert arl["cusum"]["arl"][2] == pytest.approx(5.18, abs=0.01)
    assert arl["shewhart_rule_1"]["arl"][0] == pytest.approx(370.4, abs=0.1)
    assert arl["ewma"] is None
    assert 30 < arl["whole_chart_arl0"]["value"] < 80  # all eight rules: about every 50

    areal = line.chars["areal_weight"]
    quiet = qe_client.get(f"{BASE}/characteristics/{areal.pk}/state/").json()
    assert (quiet["state"], quiet["limits"], quiet["capability"]["status"]) == (
        "insufficient_data",
        None,
        "insufficient_data",
    )


def test_state_out_of_spec_comes_first(qe_client, approved_fill, fill, record, phase2_start):
    record(fill, [5.0, 5.06, 5.0], start=phase2_start)
    assert qe_client.get(f"{BASE}/characteristics/{fill.pk}/state/").json()["state"] == (
        "out_of_spec"
    )


def test_the_schema_lists_the_spc_endpoints(qe_client):
    paths = qe_client.get("/api/v1/schema/", {"format": "json"}).json()["paths"]
    assert {
        "/api/v1/spc/characteristics/{characteristic}/config/",
        "/api/v1/spc/characteristics/{characteristic}/limits/",
        "/api/v1/spc/characteristics/{characteristic}/limits/propose/",
        "/api/v1/spc/characteristics/{characteristic}/chart/",
        "/api/v1/spc/characteristics/{characteristic}/state/",
        "/api/v1/spc/limits/{limits}/",
        "/api/v1/spc/limits/{limits}/approve/",
        "/api/v1/spc/limits/{limits}/reject/",
        "/api/v1/spc/alarms/",
        "/api/v1/spc/alarms/{id}/",
        "/api/v1/spc/alarms/{alarm}/acknowledge/",
    } <= set(paths)
