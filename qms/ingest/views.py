"""``/metrics`` (Prometheus) and the ingest status page.

Who may scrape ``/metrics``: requests from the networks in ``METRICS_ALLOWED_NETWORKS``
(default: loopback only, i.e. a Prometheus or node agent on the same host), any request
with an integration token (``Authorization: Token <key>``, read scope is enough; Prometheus
sends it with ``authorization: {type: Token, credentials_file: ...}``), and logged-in users.
Anything else gets 403. Behind a reverse proxy on the same host every request comes from
loopback: do not proxy ``/metrics``, or set ``METRICS_ALLOWED_NETWORKS = []`` and scrape
with a token.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework.exceptions import AuthenticationFailed

from qms.api.authentication import IntegrationTokenAuthentication

from . import queries
from .metrics import metrics_text
from .models import Transport

DEFAULT_METRICS_NETWORKS = ("127.0.0.0/8", "::1/128")
#: Open dead letters and station commands listed on the status page.
STATUS_DEAD_LETTERS = 25
STATUS_COMMANDS = 20


def _from_allowed_network(request: HttpRequest) -> bool:
    networks = getattr(settings, "METRICS_ALLOWED_NETWORKS", DEFAULT_METRICS_NETWORKS)
    try:
        addr = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(net, strict=False) for net in networks)


def _has_integration_token(request: HttpRequest) -> bool:
    try:
        return IntegrationTokenAuthentication().authenticate(request) is not None
    except AuthenticationFailed:
        return False


def may_scrape(request: HttpRequest) -> bool:
    return (
        _from_allowed_network(request)
        or request.user.is_authenticated
        or _has_integration_token(request)
    )


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition of the ingest counters (see :mod:`qms.ingest.metrics`)."""
    if not may_scrape(request):
        return HttpResponse(
            "Metrics are open to localhost, logged-in users and integration tokens "
            "(Authorization: Token <key>).\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)


@login_required
@require_GET
def status(request: HttpRequest) -> HttpResponse:
    """Per transport: the last hour and today (UTC), lag, open dead letters with their
    reasons (linked to the admin for replay), and the latest station commands."""
    now = timezone.now()
    hour = queries.ingest_counts(since=now - timedelta(hours=1))
    today = queries.ingest_counts(
        since=now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    )
    recent = queries.ingest_counts(since=queries.lag_window_start(now))
    open_counts = queries.dead_letters_open_counts()
    rows = [
        {
            "transport": value,
            "label": label,
            "hour": hour[value],
            "today": today[value],
            "lag": recent[value],
            "open": open_counts[value],
        }
        for value, label in Transport.choices
    ]
    context = {
        "nav": "ingest",
        "now": now,
        "rows": rows,
        "open_total": sum(open_counts.values()),
        "dead_letters": list(queries.dead_letter_list()[:STATUS_DEAD_LETTERS]),
        "commands": list(queries.station_command_list()[:STATUS_COMMANDS]),
        "lag_window_min": int(queries.LAG_WINDOW.total_seconds() // 60),
        "can_admin": request.user.is_staff and request.user.has_perm("ingest.view_deadletter"),
    }
    return render(request, "ingest/status.html", context)
