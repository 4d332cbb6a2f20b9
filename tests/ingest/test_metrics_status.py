"""``/metrics`` in Prometheus text format (parsed back with prometheus_client's parser) and
the ingest status page."""

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from qms.choices import IntegrationScope
from qms.ingest.commands import station_command_send
from qms.ingest.metrics import metrics_text
from qms.ingest.models import IngestStat
from qms.ingest.services import RawMessage, ingest_raw
from tests.factories import UserFactory, integration_create
from tests.ingest.line21700 import an_hour_ago, build_line_21700, cell, fill_result, raw

pytestmark = pytest.mark.django_db

TRANSPORTS = ["mqtt", "sparkplug", "opcua", "file", "rest", "direct"]


@pytest.fixture
def cyl(db):
    return build_line_21700()


@pytest.fixture
def traffic(cyl):
    """Two MQTT batches (3 accepted, 1 duplicate, 1 rejected) and one REST batch."""
    t0 = an_hour_ago()
    mqtt = [fill_result(cell(n), message_id=f"FILL-01:{n}", sent_at=t0) for n in (1, 2, 3)]
    bad = fill_result(cell(4), message_id="FILL-01:4", sent_at=t0, unit_kind=None)
    ingest_raw([raw(m, transport="mqtt") for m in mqtt[:2]])
    ingest_raw([raw(mqtt[2], transport="mqtt"), raw(mqtt[0], transport="mqtt")])
    ingest_raw([raw(bad, transport="mqtt")])
    rest = fill_result(cell(5), message_id="MES:5", sent_at=t0)
    ingest_raw([raw(rest, transport="rest", origin="mes-l2")])
    return t0


def scrape(client: Client, **extra) -> dict[tuple, float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            samples[(s.name, *sorted(s.labels.items()))] = s.value
    return samples


def test_metrics_counts_per_transport_and_outcome(traffic):
    samples = scrape(Client())

    def messages(transport, outcome):
        key = ("celltrace_ingest_messages_total", ("outcome", outcome), ("transport", transport))
        return samples[key]

    assert [messages("mqtt", o) for o in ("accepted", "duplicate", "rejected")] == [3, 1, 1]
    assert [messages("rest", o) for o in ("accepted", "duplicate", "rejected")] == [1, 0, 0]
    assert [messages("opcua", o) for o in ("accepted", "duplicate", "rejected")] == [0, 0, 0]
    batches = {t: samples[("celltrace_ingest_batches_total", ("transport", t))] for t in TRANSPORTS}
    assert batches == {
        "mqtt": 3,
        "sparkplug": 0,
        "opcua": 0,
        "file": 0,
        "rest": 1,
        "direct": 0,
    }
    assert {t: samples[("celltrace_dead_letters_open", ("transport", t))] for t in TRANSPORTS} == {
        "mqtt": 1,
        "sparkplug": 0,
        "opcua": 0,
        "file": 0,
        "rest": 0,
        "direct": 0,
    }
    # The fill results were sent an hour before they arrived.
    lag_max = samples[("celltrace_ingest_lag_seconds", ("stat", "max"), ("transport", "mqtt"))]
    lag_mean = samples[("celltrace_ingest_lag_seconds", ("stat", "mean"), ("transport", "mqtt"))]
    assert 3600 <= lag_mean <= lag_max < 3660
    assert samples[("celltrace_ingest_lag_seconds", ("stat", "max"), ("transport", "file"))] == 0


def test_lag_covers_the_last_five_minutes_only(cyl):
    now = timezone.now().replace(second=30, microsecond=0)
    minute = now.replace(second=0)
    IngestStat.objects.create(
        transport="opcua", minute=minute - timedelta(minutes=9), accepted=10, batches=1,
        lag_ms_sum=90_000.0, lag_ms_max=30_000.0,
    )  # fmt: skip
    IngestStat.objects.create(
        transport="opcua", minute=minute - timedelta(minutes=4), accepted=4, batches=2,
        lag_ms_sum=2_000.0, lag_ms_max=800.0,
    )  # fmt: skip
    IngestStat.objects.create(
        transport="opcua", minute=minute, accepted=6, duplicate=2, batches=3,
        lag_ms_sum=1_000.0, lag_ms_max=400.0,
    )  # fmt: skip
    samples = {
        (s.name, *sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics_text(now=now).decode())
        for s in family.samples
    }
    assert samples[("celltrace_ingest_lag_seconds", ("stat", "max"), ("transport", "opcua"))] == 0.8
    assert samples[("celltrace_ingest_lag_seconds", ("stat", "mean"), ("transport", "opcua"))] == (
        3.0 / 10
    )
    key = ("celltrace_ingest_messages_total", ("outcome", "accepted"), ("transport", "opcua"))
    assert samples[key] == 20
    assert samples[("celltrace_ingest_batches_total", ("transport", "opcua"))] == 6


def test_metrics_are_closed_to_other_hosts_without_a_token(traffic):
    response = Client().get("/metrics", REMOTE_ADDR="10.20.31.7")
    assert response.status_code == 403
    assert b"Authorization: Token" in response.content


def test_metrics_open_to_a_token_from_another_host(traffic):
    _integration, key = integration_create("prometheus", IntegrationScope.READ)
    samples = scrape(Client(), REMOTE_ADDR="10.20.31.7", HTTP_AUTHORIZATION=f"Token {key}")
    key_ = ("celltrace_ingest_messages_total", ("outcome", "accepted"), ("transport", "rest"))
    assert samples[key_] == 1
    bad = Client().get("/metrics", REMOTE_ADDR="10.20.31.7", HTTP_AUTHORIZATION="Token nope")
    assert bad.status_code == 403


def test_metrics_networks_are_a_setting(traffic, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    assert Client().get("/metrics", REMOTE_ADDR="10.20.31.7").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def test_status_page_shows_counts_dead_letters_and_commands(traffic, cyl):
    qe = UserFactory(username="qe-anna", role="quality_engineer", is_staff=True)
    station_command_send(
        station=cyl.stations["fill"],
        kind="line_stop",
        reason="Fill mass 4.91 g below LSL on 3 cells in a row",
        reference="SPC-FILL-0042",
        actor=qe,
    )
    client = Client()
    client.force_login(qe)

    response = client.get(reverse("ingest:status"))

    assert response.status_code == 200
    html = response.content.decode()
    rows = {r["transport"]: r for r in response.context["rows"]}
    assert (rows["mqtt"]["hour"].accepted, rows["mqtt"]["hour"].duplicate) == (3, 1)
    assert (rows["mqtt"]["today"].rejected, rows["mqtt"]["open"]) == (1, 1)
    assert rows["rest"]["today"].accepted == 1
    assert response.context["open_total"] == 1
    assert "Unknown unit &#x27;C22648000004&#x27;" in html
    dead = response.context["dead_letters"][0]
    assert reverse("admin:ingest_deadletter_change", args=[dead.pk]) in html
    assert "SPC-FILL-0042" in html
    assert "Fill mass 4.91 g below LSL on 3 cells in a row" in html
    assert 'aria-current="page">Ingest</a>' in html


def test_status_page_needs_a_login_and_hides_admin_links_from_non_staff(traffic):
    assert Client().get(reverse("ingest:status")).status_code == 302
    client = Client()
    client.force_login(UserFactory(username="aud-1", role="auditor"))
    response = client.get(reverse("ingest:status"))
    assert response.status_code == 200
    assert "/admin/ingest/deadletter/" not in response.content.decode()


def test_rejected_bytes_show_on_the_status_page_as_text(cyl):
    payload = json.dumps({"message_id": "x"}).encode()
    ingest_raw([RawMessage(payload, "file", "exports/fill-2026-11-27.csv:17")])
    client = Client()
    client.force_login(UserFactory(username="op-1", role="operator"))
    html = client.get(reverse("ingest:status")).content.decode()
    assert "exports/fill-2026-11-27.csv:17" in html
