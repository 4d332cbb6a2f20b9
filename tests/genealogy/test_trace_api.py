"""Trace and recall-scope endpoints: answers, downloads, refusals naming the field, access.

Runs unchanged on SQLite and on PostgreSQL (DATABASE_URL).
"""

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from openpyxl import load_workbook
from rest_framework.test import APIClient

from genealogy import exports, queries
from genealogy.api.trace_serializers import (
    RecallScopeSerializer,
    TraceSerializer,
    recall_scope_data,
    trace_data,
)
from genealogy.models import Link
from qms.choices import IntegrationScope
from tests.factories import GTIN, UserFactory, integration_create
from tests.genealogy.conftest import VINS, cell_serial

pytestmark = pytest.mark.django_db

BACKWARD = "/api/v1/trace/backward/"
FORWARD = "/api/v1/trace/forward/"
RECALL = "/api/v1/recall-scope/"
CC1 = "CC-260303-001"


@pytest.fixture
def client(thread):
    """A plant system with a read-only token."""
    _integration, key = integration_create("erp", IntegrationScope.READ)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return api


def test_routes_are_under_api_v1():
    assert reverse("trace-backward") == BACKWARD
    assert reverse("trace-forward") == FORWARD
    assert reverse("recall-scope") == RECALL


def test_backward_trace_of_a_vin_down_to_coil_segments(client, thread):
    response = client.get(BACKWARD, {"serial": VINS[0]})

    assert response.status_code == 200
    body = response.json()
    assert body["direction"] == "backward"
    assert body["root"] == {
        "unit_id": thread[VINS[0]].pk,
        "kind": "vehicle",
        "serial": VINS[0],
        "status": "in_process",
    }
    nodes = {n["serial"]: n for n in body["nodes"]}
    assert body["counts"] == {
        "vehicle": 1,
        "pack": 1,
        "module": 2,
        "cell": 6,
        "slit_coil": 2,
        "coil": 2,
        "mix_batch": 2,
        "material_lot": 7,
    }
    assert nodes[CC1]["segments"] == [[1500.0, 1536.0]]
    assert nodes["SC-A260303-001-L1"]["segments"] == [[0.0, 18.6], [19.6, 38.2]]
    assert (nodes[CC1]["start_m"], nodes[CC1]["end_m"], nodes[CC1]["depth"]) == (
        1500.0,
        1536.0,
        5,
    )
    assert nodes[cell_serial(2)]["segments"] == []
    assert len(body["edges"]) == 37
    link = Link.objects.get(source__serial="SC-260303-001-L1-R2", target__serial=cell_serial(2))
    edge = next(e for e in body["edges"] if e["link_id"] == link.pk)
    assert edge == {
        "link_id": link.pk,
        "source_id": link.source_id,
        "target_id": link.target_id,
        "kind": "consumed",
        "slot": "",
        "start_m": 6.0,
        "end_m": 12.0,
        "linked_at": link.linked_at.isoformat().replace("+00:00", "Z"),
        "removed_at": None,
    }


def test_backward_trace_accepts_the_gs1_string_of_a_cell(client):
    gs1 = f"(01){GTIN}(21){cell_serial(2)}(10)L2611A"

    body = client.get(BACKWARD, {"serial": gs1}).json()

    assert body["root"]["serial"] == cell_serial(2)
    assert {n["serial"] for n in body["nodes"] if n["kind"] == "slit_coil"} == {
        "SC-260303-001-L1-R2",
        "SC-A260303-001-L1",
    }


def test_forward_trace_of_a_coil_segment(client):
    body = client.get(FORWARD, {"serial": CC1, "start_m": "1510", "end_m": "1525"}).json()

    assert (body["start_m"], body["end_m"]) == (1510.0, 1525.0)
    assert {n["serial"] for n in body["nodes"] if n["kind"] == "cell"} == {
        cell_serial(n) for n in (2, 3, 4, 5, 8, 9, 10)
    }
    assert {n["serial"] for n in body["nodes"] if n["kind"] == "vehicle"} == {VINS[0], VINS[1]}


def test_forward_trace_of_a_station_window(client, thread):
    start = thread.t0 + timedelta(days=1, minutes=40)

    response = client.get(
        FORWARD,
        {
            "station": "l1-pri/fill",
            "equipment": "cw-1",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert body["root"] is None
    assert body["window"]["station"] == "gf1/l1-pri/fill"
    assert body["window"]["equipment"] == "cw-1"
    assert sorted(body["window"]["unit_ids"]) == sorted(thread.cell(n).pk for n in (5, 6, 7))
    assert body["counts"] == {"cell": 3, "module": 2, "pack": 2, "vehicle": 2}


def test_recall_scope_json_with_vin_list_and_comparison(client):
    response = client.get(RECALL, {"serial": CC1, "start_m": "1510", "end_m": "1525"})

    assert response.status_code == 200
    body = response.json()
    assert body["level"] == "segment"
    assert body["input"] == {"kind": "coil", "serial": CC1, "start_m": 1510.0, "end_m": 1525.0}
    assert body["counts"] == {"vehicles": 2, "packs": 2, "modules": 4, "cells": 7}
    assert body["vehicles"] == [VINS[0], VINS[1]]
    assert body["cells"] == [cell_serial(n) for n in (2, 3, 4, 5, 8, 9, 10)]
    assert [(lv["level"], lv["counts"]["cells"], lv["factor"]) for lv in body["levels"]] == [
        ("segment", 7, 1.0),
        ("coil", 13, 1.86),
        ("lot", 16, 2.29),
    ]
    assert body["reduction_factor"] == 2.29


def test_recall_scope_csv_streams_the_lists(client):
    response = client.get(
        RECALL, {"serial": CC1, "start_m": "1510", "end_m": "1525", "format": "csv"}
    )

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith(
        'attachment; filename="recall-scope-CC-260303-001-1510-1525m-'
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert ["level", "segment"] in rows
    levels = rows[rows.index(exports.LEVEL_HEADER) + 1 :][:3]
    assert [[r[0], *r[2:]] for r in levels] == [
        ["segment", "2", "2", "4", "7", "1.0"],
        ["coil", "3", "3", "5", "13", "1.86"],
        ["lot", "3", "3", "5", "16", "2.29"],
    ]
    units = rows[rows.index(exports.UNIT_HEADER) + 1 :]
    assert [r[1] for r in units if r[0] == "vehicle"] == [VINS[0], VINS[1]]
    assert [r[1] for r in units if r[0] == "cell"] == [
        cell_serial(n) for n in (2, 3, 4, 5, 8, 9, 10)
    ]


def test_recall_scope_xlsx_download(client):
    response = client.get(RECALL, {"serial": VINS[2], "format": "xlsx"})

    assert response.status_code == 200
    assert response["Content-Type"] == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert "recall-scope-WVGZZZE2ZSP000103-" in response["Content-Disposition"]
    wb = load_workbook(io.BytesIO(b"".join(response.streaming_content)))
    assert wb.sheetnames == ["Summary", "Vehicles", "Packs", "Modules", "Cells"]
    assert [r[0] for r in wb["Vehicles"].iter_rows(min_row=2, values_only=True)] == [VINS[2]]
    assert [r[0] for r in wb["Cells"].iter_rows(min_row=2, values_only=True)] == []


@pytest.mark.parametrize("url", [BACKWARD, FORWARD, RECALL])
def test_unknown_serial_is_404_naming_it(client, url):
    response = client.get(url, {"serial": "P126119999999"})

    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "detail": "No unit with serial 'P126119999999'.",
        "field": "serial",
    }


def test_unknown_serial_in_a_csv_request_is_answered_in_json(client):
    response = client.get(RECALL, {"serial": "P126119999999", "format": "csv"})

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["field"] == "serial"


@pytest.mark.parametrize(
    ("params", "status", "field", "code"),
    [
        ({"serial": f"(01){GTIN[:-1]}4(21){cell_serial(2)}"}, 400, "serial", "check_digit"),
        ({"serial": "(01)0952123454(21)P126110000002"}, 400, "serial", "invalid"),
        ({"serial": CC1, "start_m": "1510"}, 400, "end_m", "invalid"),
        ({"serial": CC1, "end_m": "1525"}, 400, "start_m", "invalid"),
        ({"serial": CC1, "start_m": "1525", "end_m": "1510"}, 400, "end_m", "invalid"),
        ({"serial": CC1, "start_m": "ten", "end_m": "1525"}, 400, "start_m", "invalid"),
        ({"serial": cell_serial(2), "start_m": "0", "end_m": "1"}, 400, "start_m", "invalid"),
        (
            {"station": "l1-pri/fill", "start": "2026-03-02T10:00Z", "end": "2026-03-02T09:00Z"},
            400,
            "end",
            "invalid",
        ),
        ({"station": "l1-pri/fill", "end": "2026-03-02T09:00Z"}, 400, "start", "invalid"),
        ({"station": "l1-pri/fill", "start": "yesterday", "end": "today"}, 400, "start", "invalid"),
        (
            {"station": "l1-pri/nope", "start": "2026-03-02T08:00Z", "end": "2026-03-02T09:00Z"},
            404,
            "station",
            "not_found",
        ),
        (
            {
                "station": "l1-pri/fill",
                "equipment": "cw-9",
                "start": "2026-03-02T08:00Z",
                "end": "2026-03-02T09:00Z",
            },
            404,
            "equipment",
            "not_found",
        ),
        ({"serial": VINS[0], "station": "l1-pri/fill"}, 400, "station", "invalid"),
        ({}, 400, "serial", "required"),
    ],
)
def test_bad_input_is_refused_naming_the_field(client, params, status, field, code):
    response = client.get(FORWARD, params)

    assert response.status_code == status, response.content
    body = response.json()
    assert (body["field"], body["code"]) == (field, code)
    assert body["detail"]


def test_backward_trace_refuses_forward_only_parameters(client):
    response = client.get(BACKWARD, {"serial": CC1, "start_m": "1", "end_m": "2"})

    assert response.status_code == 400
    assert response.json()["field"] == "start_m"


def test_unknown_format_is_refused_naming_it(client):
    response = client.get(RECALL, {"serial": CC1, "format": "pdf"})

    assert response.status_code == 400
    assert response.json()["field"] == "format"


def test_as_of_rebuilds_the_genealogy_before_rework(client, thread):
    from genealogy.services import cell_replace

    rework_at = thread.t0 + timedelta(days=5)
    cell_replace(
        assembly=thread["M2611000001"],
        removed=thread.cell(3),
        replacement=thread.cell(16),
        actor=thread.actor,
        reason="Leak rate 2e-6 mbar·L/s",
        at=rework_at,
    )

    now = client.get(BACKWARD, {"serial": VINS[0]}).json()
    then = client.get(
        BACKWARD, {"serial": VINS[0], "as_of": (rework_at - timedelta(hours=1)).isoformat()}
    ).json()

    cells_now = {n["serial"] for n in now["nodes"] if n["kind"] == "cell"}
    cells_then = {n["serial"] for n in then["nodes"] if n["kind"] == "cell"}
    assert cells_now == {cell_serial(n) for n in (1, 2, 4, 5, 6, 16)}
    assert cells_then == {cell_serial(n) for n in (1, 2, 3, 4, 5, 6)}
    assert then["as_of"] == (rework_at - timedelta(hours=1)).isoformat().replace("+00:00", "Z")


def test_reads_need_a_login_or_a_token(thread):
    anonymous = APIClient()

    assert anonymous.get(BACKWARD, {"serial": VINS[0]}).status_code in (401, 403)
    assert anonymous.get(RECALL, {"serial": VINS[0], "format": "csv"}).status_code in (401, 403)
    auditor = APIClient()
    auditor.force_login(UserFactory(username="auditor-1", role="auditor", password=None))
    assert auditor.get(BACKWARD, {"serial": VINS[0]}).status_code == 200
    assert auditor.get(RECALL, {"serial": VINS[0]}).status_code == 200


def test_json_builders_match_the_documented_serializers(thread):
    trace = queries.trace_backward(thread[VINS[0]])
    scope = queries.recall_scope(unit=thread[CC1], start_m=1510.0, end_m=1525.0)

    data = trace_data(trace)
    scope_data = recall_scope_data(scope)

    assert set(data) == set(TraceSerializer().fields)
    node_fields = set(TraceSerializer().fields["nodes"].child.fields)
    edge_fields = set(TraceSerializer().fields["edges"].child.fields)
    assert all(set(n) == node_fields for n in data["nodes"])
    assert all(set(e) == edge_fields for e in data["edges"])
    assert set(scope_data) == set(RecallScopeSerializer().fields)
    assert TraceSerializer(data=data).is_valid(), TraceSerializer(data=data).errors
    assert RecallScopeSerializer(data=scope_data).is_valid()


def test_schema_documents_the_trace_endpoints(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert paths[BACKWARD]["get"]["operationId"] == "trace_backward"
    assert paths[FORWARD]["get"]["operationId"] == "trace_forward"
    recall = paths[RECALL]["get"]
    assert recall["operationId"] == "recall_scope"
    assert {p["name"] for p in recall["parameters"]} >= {
        "serial",
        "start_m",
        "end_m",
        "station",
        "equipment",
        "start",
        "end",
        "as_of",
        "format",
    }
    assert set(recall["responses"]["200"]["content"]) == {
        "application/json",
        "text/csv",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    }
