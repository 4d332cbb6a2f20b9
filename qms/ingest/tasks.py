"""Scheduled ingest reports (run by Celery beat on the ``reports`` queue).

Each task computes its report from the database (so a repeat gives the same figures),
logs it on the ``celltrace.ingest.reports`` logger, mails it to
``settings.QMS_REPORT_RECIPIENTS`` when that list is not empty, and returns it as a dict
(kept by the result backend). A redelivered task may mail the same report again; it never
changes data.
"""

from __future__ import annotations

import logging
from datetime import datetime
from smtplib import SMTPException

from celery import shared_task
from django.conf import settings
from django.core import mail
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from . import reports

logger = logging.getLogger("celltrace.ingest.reports")

RETRY = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError, InterfaceError, SMTPException, ConnectionError),
    "retry_backoff": True,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 5,
}


def _deliver(subject: str, body: str, report: dict) -> int:
    """Log the report and mail it to the configured recipients; returns mails sent."""
    logger.info("%s", body.rstrip(), extra={"report": report})
    recipients = list(getattr(settings, "QMS_REPORT_RECIPIENTS", []) or [])
    if not recipients:
        return 0
    return mail.send_mail(f"[Celltrace] {subject}", body, None, recipients)


@shared_task(**RETRY)
def ingest_shift_summary_task(self, *, shift_end: str | None = None) -> dict:
    """Summarise the last complete shift (or the shift ending at ``shift_end``, an
    ISO 8601 time at a shift start); safe to repeat."""
    at = datetime.fromisoformat(shift_end) if shift_end else timezone.now()
    start, end = reports.shift_window(at)
    summary = reports.shift_summary(start=start, end=end)
    _deliver(*reports.shift_summary_text(summary), summary)
    return summary


@shared_task(**RETRY)
def dead_letter_digest_task(self) -> dict:
    """List the open dead letters by transport and reason, oldest first; safe to repeat."""
    digest = reports.dead_letter_digest()
    _deliver(*reports.dead_letter_digest_text(digest), digest)
    return digest


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=3,
)
def dead_letter_retry_task(self) -> dict:
    """Try again the dead letters naming a unit that was not there yet (for the transports
    without a long-running worker of their own: REST, files, OPC UA, Sparkplug B; the MQTT
    workers do it every second). Safe to repeat and to run beside the workers."""
    from .services import REJECTED, dead_letters_retry

    outcomes = dead_letters_retry()
    return {
        "tried": len(outcomes),
        "applied": sum(o.status != REJECTED for o in outcomes),
    }
