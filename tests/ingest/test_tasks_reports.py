"""The scheduled ingest reports: the shift summary and the dead-letter digest, with exact
figures from messages that went through ``ingest_raw`` (a test kind, cleaned up after)."""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from qms.exceptions import Refused
from qms.ingest import registry, reports
from qms.ingest.envelope import build
from qms.ingest.models import DeadLetter, DeadLetterStatus
from qms.ingest.services import RawMessage, dead_letter_replay, ingest_raw
from qms.ingest.tasks import dead_letter_digest_task, ingest_shift_summary_task
from tests.factories import StationFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]

KIND = "shift_probe"
FILL, COAT, FILL9 = "gf1/l1-pri/fill", "gf1/l1-pri/coat-c", "gf1/l1-pri/fill-9"


def _refuse_bad(env, ctx):
    """Test kind: accepts every unit except serials starting with 'BAD'."""
    if env.unit.startswith("BAD"):
        raise Refused(f"Probe refuses {env.unit}.", field="unit", code="probe")


@pytest.fixture(autouse=True)
def probe_kind():
    registry.register(KIND, _refuse_bad, app_label="tests", payload_schema={"type": "object"})
    yield
    registry._handlers.pop(KIND, None)


def envelope(message_id, *, station="fill", sent_at, unit="P126480000001", payload=None):
    doc = build(
        kind=KIND,
        site="gf1",
        line="l1-pri",
        station=station,
        payload=payload or {"fill_mass_g": 410.2},
        source="FILL-01 PLC" if station != "coat-c" else "COATER-C1 PLC",
        message_id=message_id,
        unit=unit,
        sent_at=sent_at,
    )
    return json.dumps(doc).encode()


@dataclass
class Shift:
    received: datetime  # time of the last batch; the others are 10 and 20 minutes before
    reasons: dict


def feed(plant) -> Shift:
    """Three batches: MQTT (6 messages, then 3), REST (2). Lags 0.5-4 s."""
    r = timezone.now().replace(microsecond=0) - timedelta(minutes=1)
    a, b = r - timedelta(minutes=20), r - timedelta(minutes=10)
    topic = f"qms/gf1/l1-pri/fill/{KIND}"
    bad_json = b'{"message_id": "FILL-01:9", "kind": '

    def mqtt(payload, at, station="fill"):
        return RawMessage(payload, "mqtt", f"qms/gf1/l1-pri/{station}/{KIND}", at)

    first = ingest_raw(
        [
            mqtt(envelope("FILL-01:1", sent_at=a - timedelta(seconds=1.5)), a),
            mqtt(envelope("FILL-01:2", sent_at=a - timedelta(seconds=2.5)), a),
            mqtt(
                envelope("COATER-C1:1", station="coat-c", sent_at=a - timedelta(seconds=0.5)),
                a,
                "coat-c",
            ),
            mqtt(envelope("FILL-01:1", sent_at=a - timedelta(seconds=1.5)), a),
            RawMessage(bad_json, "mqtt", topic, a),
            mqtt(envelope("FILL9-01:1", station="fill-9", sent_at=a - timedelta(seconds=1)), a),
            mqtt(envelope("FILL9-01:2", station="fill-9", sent_at=a - timedelta(seconds=1)), a),
        ]
    )
    second = ingest_raw(
        [
            mqtt(envelope("FILL-01:2", sent_at=a - timedelta(seconds=2.5)), b),
            RawMessage(bad_json, "mqtt", topic, b),
            mqtt(
                envelope("FILL-01:4", unit="BADP126480000009", sent_at=b - timedelta(seconds=1)), b
            ),
        ]
    )
    nan = envelope("MES:77", sent_at=r - timedelta(seconds=3)).replace(b"410.2", b"NaN")
    third = ingest_raw(
        [
            RawMessage(envelope("MES:76", sent_at=r - timedelta(seconds=4)), "rest", "int-mes", r),
            RawMessage(nan, "rest", "int-mes", r),
        ]
    )
    statuses = [[o.status for o in batch] for batch in (first, second, third)]
    assert statuses == [
        ["accepted", "accepted", "accepted", "duplicate", "rejected", "rejected", "rejected"],
        ["duplicate", "rejected", "rejected"],
        ["accepted", "rejected"],
    ]
    return Shift(
        received=r,
        reasons={
            "json": first[4].reason,
            "fill9": first[5].reason,
            "bad": second[2].reason,
            "nan": third[1].reason,
        },
    )


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def expected_summary(start: datetime, end: datetime) -> dict:
    return {
        "shift_start": iso(start),
        "shift_end": iso(end),
        "transports": [
            {
                "transport": "mqtt",
                "accepted": 3,
                "duplicate": 2,
                "rejected": 5,
                "batches": 2,
                "lag_ms_mean": 1500.0,
                "lag_ms_max": 2500.0,
                "dead_letters_new": 4,
                "dead_letters_open": 4,
            },
            {
                "transport": "rest",
                "accepted": 1,
                "duplicate": 0,
                "rejected": 1,
                "batches": 1,
                "lag_ms_mean": 4000.0,
                "lag_ms_max": 4000.0,
                "dead_letters_new": 1,
                "dead_letters_open": 1,
            },
        ],
        "stations": [
            _station("mqtt", "", 0, None, None, 1),
            _station("mqtt", COAT, 1, 500.0, 500.0, 0),
            _station("mqtt", FILL, 2, 2000.0, 2500.0, 1),
            _station("mqtt", FILL9, 0, None, None, 2),
            _station("rest", FILL, 1, 4000.0, 4000.0, 1),
        ],
        "totals": {
            "accepted": 4,
            "duplicate": 2,
            "rejected": 6,
            "dead_letters_new": 5,
            "dead_letters_open": 5,
        },
    }


def _station(transport, station, accepted, lag_mean, lag_max, dead_letters):
    return {
        "transport": transport,
        "station": station,
        "accepted": accepted,
        "lag_ms_mean": lag_mean,
        "lag_ms_max": lag_max,
        "dead_letters_new": dead_letters,
    }


@pytest.mark.parametrize(
    ("at", "start", "end"),
    [
        ("2026-03-04T05:59:59+00:00", "2026-03-03T14:00:00+00:00", "2026-03-03T22:00:00+00:00"),
        ("2026-03-04T06:00:00+00:00", "2026-03-03T22:00:00+00:00", "2026-03-04T06:00:00+00:00"),
        ("2026-03-04T13:10:00+00:00", "2026-03-03T22:00:00+00:00", "2026-03-04T06:00:00+00:00"),
        ("2026-03-04T22:00:30+00:00", "2026-03-04T14:00:00+00:00", "2026-03-04T22:00:00+00:00"),
        # 07:00 in Berlin (CET) is 06:00 UTC: the night shift just ended
        ("2026-03-04T07:00:00+01:00", "2026-03-03T22:00:00+00:00", "2026-03-04T06:00:00+00:00"),
    ],
)
def test_the_last_complete_shift(at, start, end):
    assert reports.shift_window(datetime.fromisoformat(at)) == (
        datetime.fromisoformat(start),
        datetime.fromisoformat(end),
    )


def test_shift_hours_come_from_settings(settings):
    settings.QMS_SHIFT_START_HOURS_UTC = (18, 6)  # two 12-hour shifts
    at = datetime(2026, 3, 4, 5, 0, tzinfo=ZoneInfo("UTC"))
    assert reports.shift_window(at) == (
        datetime(2026, 3, 3, 6, tzinfo=UTC),
        datetime(2026, 3, 3, 18, tzinfo=UTC),
    )
    settings.QMS_SHIFT_START_HOURS_UTC = (24,)
    with pytest.raises(ValueError, match="hours 0-23"):
        reports.shift_window(at)


def test_shift_summary_per_transport_and_station(plant):
    shift = feed(plant)
    start, end = shift.received - timedelta(hours=1), timezone.now() + timedelta(minutes=5)

    assert reports.shift_summary(start=start, end=end) == expected_summary(start, end)
    # Nothing of it falls into the shift before.
    before = reports.shift_summary(start=start - timedelta(hours=8), end=start)
    assert before["transports"][0] | {"dead_letters_open": 0} == {
        "transport": "mqtt",
        "accepted": 0,
        "duplicate": 0,
        "rejected": 0,
        "batches": 0,
        "lag_ms_mean": None,
        "lag_ms_max": None,
        "dead_letters_new": 0,
        "dead_letters_open": 0,
    }
    assert before["stations"] == []
    assert before["totals"] == {
        "accepted": 0,
        "duplicate": 0,
        "rejected": 0,
        "dead_letters_new": 0,
        "dead_letters_open": 5,
    }


@pytest.fixture
def day_shift(settings):
    """One 24-hour shift starting 12 hours away from now, so the whole feed lies inside it."""
    settings.QMS_SHIFT_START_HOURS_UTC = ((timezone.now().astimezone(UTC).hour + 12) % 24,)
    return reports.shift_window(timezone.now() + timedelta(hours=24))


def test_summary_task_is_repeatable_logged_and_mailed(
    plant, day_shift, settings, mailoutbox, caplog
):
    settings.QMS_REPORT_RECIPIENTS = ["quality-gf1@example.com", "ingest-oncall@example.com"]
    feed(plant)
    start, end = day_shift
    logger = logging.getLogger("celltrace.ingest.reports")
    logger.addHandler(caplog.handler)  # "celltrace" does not propagate to the root logger
    try:
        first = ingest_shift_summary_task.apply(kwargs={"shift_end": end.isoformat()}).get()
        again = ingest_shift_summary_task.apply(kwargs={"shift_end": end.isoformat()}).get()
    finally:
        logger.removeHandler(caplog.handler)

    assert first == again == expected_summary(start, end)
    assert len(mailoutbox) == 2
    mail = mailoutbox[0]
    assert mail.to == ["quality-gf1@example.com", "ingest-oncall@example.com"]
    assert mail.subject == (
        f"[Celltrace] Ingest shift {start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC: 4 accepted, "
        "2 duplicate, 6 rejected, 5 dead letters open"
    )
    lines = mail.body.splitlines()
    assert (
        "  mqtt               3         2         5        2      1500      2500       4        4"
        in lines
    )
    assert (
        "  mqtt       gf1/l1-pri/fill                          2      2000      2500       1"
        in lines
    )
    assert (
        "  mqtt       (no station)                             0         -         -       1"
        in lines
    )
    assert [r.getMessage() for r in caplog.records] == [mail.body.rstrip()] * 2
    assert caplog.records[0].report == first


def test_summary_task_without_recipients_only_logs(plant, day_shift, mailoutbox):
    assert ingest_shift_summary_task.apply(kwargs={"shift_end": day_shift[1].isoformat()}).get()[
        "totals"
    ] == {
        "accepted": 0,
        "duplicate": 0,
        "rejected": 0,
        "dead_letters_new": 0,
        "dead_letters_open": 0,
    }
    assert mailoutbox == []


def test_digest_groups_open_dead_letters_by_transport_and_reason_oldest_first(
    plant, settings, mailoutbox
):
    settings.QMS_REPORT_RECIPIENTS = ["quality-gf1@example.com"]
    shift = feed(plant)
    a, b, r = (shift.received - timedelta(minutes=m) for m in (20, 10, 0))
    # Master data fixed for one of the two fill-9 messages: its replay resolves it.
    StationFactory(line=plant.line, code="fill-9", sequence=35)
    entry = DeadLetter.objects.filter(reason=shift.reasons["fill9"]).order_by("id").first()
    assert dead_letter_replay(
        entry=entry, actor=UserFactory(username="qe", password=None)
    ).status == ("accepted")
    ids = {
        key: DeadLetter.objects.get(reason=shift.reasons[key], status=DeadLetterStatus.OPEN).pk
        for key in ("json", "fill9", "bad", "nan")
    }

    digest = dead_letter_digest_task.apply().get()

    assert digest == {
        "open": 4,
        "groups": [
            _group("mqtt", shift.reasons["json"], 1, 2, a, b, ids["json"]),
            _group("mqtt", shift.reasons["fill9"], 1, 1, a, a, ids["fill9"]),
            _group("mqtt", shift.reasons["bad"], 1, 1, b, b, ids["bad"]),
            _group("rest", shift.reasons["nan"], 1, 1, r, r, ids["nan"]),
        ],
        "more": 0,
    }
    assert shift.reasons["fill9"] == "Unknown station 'fill-9' on line gf1/l1-pri."
    assert dead_letter_digest_task.apply().get() == digest
    assert [m.subject for m in mailoutbox] == [
        "[Celltrace] Dead-letter digest: 4 open in 4 groups"
    ] * 2
    assert f"    {shift.reasons['bad']}" in mailoutbox[0].body.splitlines()


def _group(transport, reason, entries, attempts, first, last, first_id):
    return {
        "transport": transport,
        "reason": reason,
        "entries": entries,
        "attempts": attempts,
        "first_seen": iso(first),
        "last_seen": iso(last),
        "first_id": first_id,
    }


def test_digest_groups_repeats_of_one_reason(plant):
    at = timezone.now().replace(microsecond=0) - timedelta(minutes=5)
    ingest_raw(
        [
            RawMessage(envelope(f"FILL9-01:{n}", station="fill-9", sent_at=at), "mqtt", "t", at)
            for n in range(3)
        ]
    )
    (group,) = reports.dead_letter_digest()["groups"]
    assert (group["entries"], group["attempts"], group["reason"]) == (
        3,
        3,
        "Unknown station 'fill-9' on line gf1/l1-pri.",
    )
