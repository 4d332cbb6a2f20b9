"""A message naming a unit that is not there yet (the message that makes it is late, or on
another worker) is dead-lettered, then retried by the ingest itself until it applies or its
retry window ends; a refusal a person must fix is never retried."""

from datetime import timedelta

import pytest
from django.utils import timezone

from genealogy.models import Measurement
from qms.ingest.models import DeadLetter, DeadLetterStatus, IngestMessage, IngestStat
from qms.ingest.services import dead_letters_retry, ingest_raw
from qms.ingest.tasks import dead_letter_retry_task
from tests.ingest.line21700 import an_hour_ago, build_line_21700, cell, fill_result, raw

pytestmark = pytest.mark.django_db


@pytest.fixture
def cyl(db):
    return build_line_21700()


@pytest.fixture
def t0():
    return an_hour_ago()


def _second_station(serial, t0, n=1):
    """A re-test at the fill station of a cell that its first message creates."""
    return fill_result(
        serial, message_id=f"FILL-01:retest-{n}", sent_at=t0 + timedelta(minutes=2), unit_kind=None
    )


def test_a_message_ahead_of_its_unit_is_applied_once_the_unit_arrives(cyl, t0, settings):
    settings.QMS_INGEST_RETRY_WINDOW_S = 600
    # Given the re-test arrives first (another worker still holds the message making the cell)
    (early,) = ingest_raw([raw(_second_station(cell(1), t0))])
    assert (early.status, early.field) == ("rejected", "unit")
    entry = DeadLetter.objects.get()
    assert entry.retry_until == entry.first_seen + timedelta(seconds=600)

    # Nothing is due within the back-off
    assert dead_letters_retry(now=entry.last_seen + timedelta(milliseconds=500)) == []
    # When the cell's first message arrives, and the retry comes due
    ingest_raw([raw(fill_result(cell(1), message_id="FILL-01:1", sent_at=t0))])
    (outcome,) = dead_letters_retry(now=entry.last_seen + timedelta(seconds=2))

    # Then the early message is applied once, and its dead letter resolved, not deleted
    assert outcome.status == "accepted"
    entry.refresh_from_db()
    assert (entry.status, entry.resolution, entry.retry_until) == (
        DeadLetterStatus.RESOLVED,
        "retried automatically: accepted",
        None,
    )
    assert Measurement.objects.filter(unit__serial=cell(1)).count() == 2
    assert IngestMessage.objects.filter(message_id="FILL-01:retest-1").count() == 1
    assert dead_letters_retry(now=timezone.now() + timedelta(minutes=1)) == []
    stat = IngestStat.objects.get(transport="direct")
    assert (stat.accepted, stat.rejected) == (2, 1)  # the refusal, then the late success


def test_still_unknown_it_waits_longer_then_stays_for_a_person(cyl, t0, settings):
    settings.QMS_INGEST_RETRY_WINDOW_S = 60
    ingest_raw([raw(_second_station(cell(2), t0))])
    entry = DeadLetter.objects.get()
    first = entry.first_seen

    (again,) = dead_letters_retry(now=first + timedelta(seconds=1))
    assert again.status == "rejected"
    entry.refresh_from_db()
    assert entry.attempts == 2
    assert entry.retry_until == first + timedelta(seconds=60)  # not pushed out by retries
    # the next try waits 2 s after this one
    assert dead_letters_retry(now=entry.last_seen + timedelta(seconds=1)) == []
    assert len(dead_letters_retry(now=entry.last_seen + timedelta(seconds=2))) == 1

    # After the window the entry waits for a person (replay or discard)
    assert dead_letters_retry(now=first + timedelta(seconds=61)) == []
    entry.refresh_from_db()
    assert entry.status == DeadLetterStatus.OPEN


def test_refusals_a_person_must_fix_are_not_retried(cyl, t0):
    doc = fill_result(cell(3), message_id="FILL-01:3", sent_at=t0)
    doc["payload"]["measurements"][0]["characteristic"] = "fill-volume"  # not in the plan
    ingest_raw([raw(doc), raw(b"{broken")])
    assert list(DeadLetter.objects.values_list("retry_until", flat=True)) == [None, None]
    assert dead_letters_retry(now=timezone.now() + timedelta(seconds=5)) == []


def test_the_beat_task_retries_for_transports_without_a_worker(cyl, t0):
    ingest_raw([raw(_second_station(cell(4), t0), transport="rest", origin="client mes-l2")])
    ingest_raw([raw(fill_result(cell(4), message_id="FILL-01:4", sent_at=t0))])
    entry = DeadLetter.objects.get()
    DeadLetter.objects.filter(pk=entry.pk).update(last_seen=entry.last_seen - timedelta(seconds=5))

    assert dead_letter_retry_task.apply().get() == {"tried": 1, "applied": 1}
    entry.refresh_from_db()
    assert entry.status == DeadLetterStatus.RESOLVED
    assert IngestMessage.objects.get(message_id="FILL-01:retest-1").transport == "rest"
