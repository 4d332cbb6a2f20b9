"""``POST /api/v1/ingest/``: per-message answers, scopes and roles, the 10,000-message cap."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from genealogy.models import Measurement, StationVisit, Unit
from qms.choices import IntegrationScope
from qms.ingest.models import DeadLetter, IngestMessage, IngestStat
from tests.factories import UserFactory, integration_create
from tests.ingest.line21700 import an_hour_ago, build_line_21700, cell, fill_result

pytestmark = pytest.mark.django_db

URL = "/api/v1/ingest/"


@pytest.fixture
def cyl(db):
    return build_line_21700()


@pytest.fixture
def t0():
    return an_hour_ago()


def token_client(name: str, scope: str) -> APIClient:
    _integration, key = integration_create(name, scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def mes(db):
    """The MES gateway of line 2, with a read_write token."""
    return token_client("mes-l2", IntegrationScope.READ_WRITE)


def person(role: str | None) -> APIClient:
    client = APIClient()
    client.force_login(UserFactory(username=f"{role or 'nobody'}-1", role=role))
    return client


def post(client, body, **extra):
    return client.post(URL, json.dumps(body), content_type="application/json", **extra)


def written() -> tuple[int, ...]:
    return (
        IngestMessage.objects.count(),
        DeadLetter.objects.count(),
        IngestStat.objects.count(),
        Unit.objects.count(),
        Measurement.objects.count(),
    )


def test_answers_each_message_in_order_with_counts(cyl, t0, mes):
    good = fill_result(cell(1), message_id="FILL-01:000001", sent_at=t0)
    wrong_unit = fill_result(cell(2), message_id="FILL-01:000002", sent_at=t0)
    wrong_unit["payload"]["measurements"][0]["unit"] = "ml"

    response = post(mes, {"messages": [good, wrong_unit, good]})

    assert response.status_code == 200, response.content
    body = response.json()
    entry = DeadLetter.objects.get()
    assert body == {
        "accepted": 1,
        "duplicate": 1,
        "rejected": 1,
        "results": [
            {
                "index": 0,
                "message_id": "FILL-01:000001",
                "status": "accepted",
                "reason": "",
                "field": None,
                "dead_letter_id": None,
            },
            {
                "index": 1,
                "message_id": "FILL-01:000002",
                "status": "rejected",
                "reason": "ml given, characteristic electrolyte-fill-mass in g.",
                "field": "payload.measurements[0].unit",
                "dead_letter_id": entry.pk,
            },
            {
                "index": 2,
                "message_id": "FILL-01:000001",
                "status": "duplicate",
                "reason": "repeated in the same batch",
                "field": None,
                "dead_letter_id": None,
            },
        ],
    }
    assert (entry.transport, entry.origin) == ("rest", "mes-l2")
    assert bytes(entry.raw) == json.dumps(
        wrong_unit, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
    msg = IngestMessage.objects.get()
    assert (msg.transport, msg.origin) == ("rest", "mes-l2")
    assert Measurement.objects.get().recorded_by.username == "int-mes-l2"
    stat = IngestStat.objects.get(transport="rest")
    assert (stat.accepted, stat.duplicate, stat.rejected, stat.batches) == (1, 1, 1, 1)


def test_the_same_call_again_is_all_duplicates(cyl, t0, mes):
    body = [fill_result(cell(n), message_id=f"FILL-01:{n:06d}", sent_at=t0) for n in (1, 2)]
    assert post(mes, body).json()["accepted"] == 2
    again = post(mes, body).json()
    assert (again["accepted"], again["duplicate"], again["rejected"]) == (0, 2, 0)
    assert [r["reason"] for r in again["results"]] == ["applied before", "applied before"]
    assert (StationVisit.objects.count(), Measurement.objects.count()) == (2, 2)


def test_nan_rejects_only_its_message(cyl, t0, mes):
    good = fill_result(cell(1), message_id="FILL-01:000001", sent_at=t0)
    bad = fill_result(cell(2), message_id="FILL-01:000002", sent_at=t0)
    bad["payload"]["measurements"][0]["value"] = float("nan")
    text = json.dumps([good, bad])  # Python writes NaN, as some PLC gateways do

    response = mes.post(URL, text, content_type="application/json")

    results = response.json()["results"]
    assert [(r["message_id"], r["status"]) for r in results] == [
        ("FILL-01:000001", "accepted"),
        ("FILL-01:000002", "rejected"),
    ]
    assert results[1]["reason"] == "NaN is not a number a measurement can have."
    assert b'"value":NaN' in bytes(DeadLetter.objects.get().raw)


def test_a_message_that_is_not_an_object_is_rejected_alone(cyl, t0, mes):
    response = post(mes, [fill_result(cell(1), message_id="FILL-01:1", sent_at=t0), "hello"])
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "rejected"]
    assert response.json()["results"][1]["reason"] == "The envelope must be a JSON object."


def test_read_only_token_is_refused_and_nothing_is_written(cyl, t0):
    erp = token_client("erp-gf1", IntegrationScope.READ)
    response = post(erp, [fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)])
    assert response.status_code == 403
    assert response.json() == {"detail": "Integration 'erp-gf1' has a read-only token."}
    assert written() == (0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("role", "status"),
    [("operator", 200), ("quality_engineer", 200), ("auditor", 403), ("mrb_member", 403)],
)
def test_people_need_the_ingest_permission(cyl, t0, role, status):
    response = post(person(role), [fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)])
    assert response.status_code == status
    if status == 200:
        assert IngestMessage.objects.get().origin == f"{role}-1"
    else:
        assert written() == (0, 0, 0, 0, 0)


def test_anonymous_is_refused(cyl, t0):
    response = post(APIClient(), [fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)])
    assert response.status_code in (401, 403)
    assert written() == (0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({"messages": []}, "messages", "No messages given."),
        ({"envelopes": []}, "envelopes", "Unknown key(s) envelopes."),
        ({"messages": {"message_id": "x"}}, "messages", "'messages' must be a list of envelopes."),
        ("FILL-01", "messages", "'messages' must be a list of envelopes."),
    ],
)
def test_a_body_that_is_not_a_list_of_envelopes(cyl, mes, body, field, detail):
    response = post(mes, body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["detail"] == detail
    assert written() == (0, 0, 0, 0, 0)


def test_malformed_body_is_a_parse_error(cyl, mes):
    response = mes.post(URL, b'{"messages": [', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")
    assert written() == (0, 0, 0, 0, 0)


def test_ten_thousand_messages_in_one_call(cyl, t0, mes):
    """A gateway re-sends a whole 10,000-message batch after a time-out: the 9,990 messages
    applied the first time come back as duplicates, the 10 it had not sent before are
    applied, and each message gets its own answer."""
    now = timezone.now()
    IngestMessage.objects.bulk_create(
        IngestMessage(
            message_id=f"FILL-01:{n:06d}",
            kind="process_result",
            transport="rest",
            origin="mes-l2",
            source="FILL PLC",
            sent_at=t0,
            received_at=now,
        )
        for n in range(9990)
    )
    body = {
        "messages": [
            fill_result(
                cell(n), message_id=f"FILL-01:{n:06d}", sent_at=t0 + timedelta(seconds=n / 10)
            )
            for n in range(10_000)
        ]
    }

    response = post(mes, body)

    assert response.status_code == 200
    answer = response.json()
    assert (answer["accepted"], answer["duplicate"], answer["rejected"]) == (10, 9990, 0)
    assert len(answer["results"]) == 10_000
    assert [r["index"] for r in answer["results"]] == list(range(10_000))
    assert {r["message_id"] for r in answer["results"] if r["status"] == "accepted"} == {
        f"FILL-01:{n:06d}" for n in range(9990, 10_000)
    }
    assert Measurement.objects.count() == 10
    assert IngestMessage.objects.count() == 10_000


def test_more_than_ten_thousand_is_refused_whole(cyl, t0, mes):
    one = fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)
    response = post(mes, [one] * 10_001)
    assert response.status_code == 400
    assert response.json() == {
        "code": "too_many",
        "detail": "At most 10000 messages per call; 10001 given. Split the batch.",
        "field": "messages",
    }
    assert written() == (0, 0, 0, 0, 0)


def test_csrf_applies_to_session_posts(cyl, t0):
    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory(username="operator-1", role="operator"))
    response = client.post(
        URL,
        json.dumps([fill_result(cell(1), message_id="FILL-01:1", sent_at=t0)]),
        content_type="application/json",
    )
    assert response.status_code == 403
    assert written() == (0, 0, 0, 0, 0)
