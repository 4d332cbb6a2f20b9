"""Ingest reports: the shift summary and the dead-letter digest (read-only).

Both are computed from the database alone, so running one twice gives the same figures.

* The shift summary covers one shift ``[start, end)``. Per transport it takes the counters
  of ``IngestStat`` (minutes in the shift: accepted, duplicate, rejected, batches, lag);
  per station it counts the applied messages sent in the shift with their lag
  (``IngestMessage``) and the dead letters first seen in the shift whose raw bytes name the
  station. Duplicates are counted per transport only (they are not stored per station).
* The digest lists the open dead letters grouped by transport and reason, oldest first.

Shifts start at ``settings.QMS_SHIFT_START_HOURS_UTC`` (default 06:00, 14:00, 22:00 UTC).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Sum

from .models import DeadLetter, DeadLetterStatus, IngestMessage, IngestStat

DEFAULT_SHIFT_START_HOURS_UTC = (6, 14, 22)
#: At most this many dead letters of a shift are opened to find their station; the rest
#: are reported without one (a flood of garbage must not make the report slow).
STATION_ATTRIBUTION_LIMIT = 10_000
#: Groups listed by the digest; the rest are summed in ``more``.
DIGEST_GROUPS_LIMIT = 200


def shift_start_hours() -> tuple[int, ...]:
    """Shift start hours (UTC) from settings, sorted; each 0-23."""
    hours = getattr(settings, "QMS_SHIFT_START_HOURS_UTC", DEFAULT_SHIFT_START_HOURS_UTC)
    hours = tuple(sorted({int(h) for h in hours}))
    if not hours or not all(0 <= h <= 23 for h in hours):
        raise ValueError(f"QMS_SHIFT_START_HOURS_UTC must be hours 0-23, not {hours!r}.")
    return hours


def shift_window(at: datetime, hours: tuple[int, ...] | None = None) -> tuple[datetime, datetime]:
    """The last complete shift at ``at``: ``(start, end)`` in UTC with ``end <= at``.

    At 06:00 (or 06:05) with shifts at 06/14/22 that is 22:00 the day before to 06:00.
    """
    hours = hours or shift_start_hours()
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware.")
    at = at.astimezone(UTC)
    midnight = at.replace(hour=0, minute=0, second=0, microsecond=0)
    boundaries = [midnight + timedelta(days=d, hours=h) for d in (-2, -1, 0) for h in hours]
    past = [b for b in boundaries if b <= at]
    return past[-2], past[-1]


def _ms(value: timedelta | None) -> float:
    return 0.0 if value is None else value.total_seconds() * 1000.0


def _mean(total_ms: float, count: int) -> float | None:
    return round(total_ms / count, 1) if count else None


def _station_of_raw(raw: bytes) -> str:
    """``site/line/station`` named by a raw envelope, or "" when it names none."""
    try:
        doc = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ""
    if not isinstance(doc, dict):
        return ""
    parts = [doc.get(k) for k in ("site", "line", "station")]
    if not all(isinstance(p, str) and p for p in parts):
        return ""
    return "/".join(p[:64] for p in parts)


def shift_summary(*, start: datetime, end: datetime) -> dict:
    """Ingest figures of the shift ``[start, end)`` per transport and per station.

    Returns a JSON-ready dict: ``shift_start``, ``shift_end``, ``transports`` (sorted by
    transport), ``stations`` (sorted by transport, station), ``totals``. Lags are in ms.
    """
    transports: dict[str, dict] = {}

    def transport_row(name: str) -> dict:
        return transports.setdefault(
            name,
            {
                "transport": name,
                "accepted": 0,
                "duplicate": 0,
                "rejected": 0,
                "batches": 0,
                "lag_ms_mean": None,
                "lag_ms_max": None,
                "dead_letters_new": 0,
                "dead_letters_open": 0,
            },
        )

    stats = (
        IngestStat.objects.filter(minute__gte=start, minute__lt=end)
        .values("transport")
        .annotate(
            accepted=Sum("accepted"),
            duplicate=Sum("duplicate"),
            rejected=Sum("rejected"),
            batches=Sum("batches"),
            lag_sum=Sum("lag_ms_sum"),
            lag_max=Max("lag_ms_max"),
        )
        .order_by("transport")
    )
    for s in stats:
        row = transport_row(s["transport"])
        row.update(
            accepted=s["accepted"],
            duplicate=s["duplicate"],
            rejected=s["rejected"],
            batches=s["batches"],
            lag_ms_mean=_mean(s["lag_sum"] or 0.0, s["accepted"]),
            lag_ms_max=round(s["lag_max"], 1) if s["accepted"] else None,
        )
    new_letters = DeadLetter.objects.filter(first_seen__gte=start, first_seen__lt=end)
    for s in new_letters.values("transport").annotate(n=Count("id")).order_by():
        transport_row(s["transport"])["dead_letters_new"] = s["n"]
    open_letters = DeadLetter.objects.filter(status=DeadLetterStatus.OPEN)
    for s in open_letters.values("transport").annotate(n=Count("id")).order_by():
        transport_row(s["transport"])["dead_letters_open"] = s["n"]

    stations: dict[tuple[str, str], dict] = {}

    def station_row(transport: str, station: str) -> dict:
        return stations.setdefault(
            (transport, station),
            {
                "transport": transport,
                "station": station,
                "accepted": 0,
                "lag_ms_mean": None,
                "lag_ms_max": None,
                "dead_letters_new": 0,
            },
        )

    lag = ExpressionWrapper(F("received_at") - F("sent_at"), output_field=DurationField())
    applied = (
        IngestMessage.objects.filter(sent_at__gte=start, sent_at__lt=end)
        .values("transport", "station__line__site__code", "station__line__code", "station__code")
        .annotate(accepted=Count("id"), lag_sum=Sum(lag), lag_max=Max(lag))
        .order_by()
    )
    for s in applied:
        codes = (s["station__line__site__code"], s["station__line__code"], s["station__code"])
        row = station_row(s["transport"], "/".join(codes) if all(codes) else "")
        row.update(
            accepted=s["accepted"],
            lag_ms_mean=_mean(_ms(s["lag_sum"]), s["accepted"]),
            lag_ms_max=round(_ms(s["lag_max"]), 1),
        )
    attributed: dict[tuple[str, str], int] = defaultdict(int)
    letters = new_letters.order_by("-first_seen", "-id").values_list("transport", "raw")
    for transport, raw in letters[:STATION_ATTRIBUTION_LIMIT].iterator(chunk_size=500):
        attributed[(transport, _station_of_raw(raw))] += 1
    for row in transports.values():
        # Beyond the attribution limit, the rest of a transport's new letters have no station.
        unread = row["dead_letters_new"] - sum(
            n for (t, _), n in attributed.items() if t == row["transport"]
        )
        if unread > 0:
            attributed[(row["transport"], "")] += unread
    for key, n in attributed.items():
        station_row(*key)["dead_letters_new"] = n

    transport_rows = [transports[k] for k in sorted(transports)]
    return {
        "shift_start": start.astimezone(UTC).isoformat(),
        "shift_end": end.astimezone(UTC).isoformat(),
        "transports": transport_rows,
        "stations": [stations[k] for k in sorted(stations)],
        "totals": {
            key: sum(r[key] for r in transport_rows)
            for key in ("accepted", "duplicate", "rejected", "dead_letters_new")
        }
        | {"dead_letters_open": open_letters.count()},
    }


def dead_letter_digest() -> dict:
    """Open dead letters grouped by transport and reason, the group with the oldest entry
    first. Returns a JSON-ready dict: ``open`` (entries), ``groups``, ``more`` (groups not
    listed beyond ``DIGEST_GROUPS_LIMIT``)."""
    groups = list(
        DeadLetter.objects.filter(status=DeadLetterStatus.OPEN)
        .values("transport", "reason")
        .annotate(
            entries=Count("id"),
            attempts=Sum("attempts"),
            first_seen=Min("first_seen"),
            last_seen=Max("last_seen"),
            first_id=Min("id"),
        )
        .order_by("first_seen", "transport", "first_id")
    )
    listed = [
        {
            "transport": g["transport"],
            "reason": g["reason"],
            "entries": g["entries"],
            "attempts": g["attempts"],
            "first_seen": g["first_seen"].astimezone(UTC).isoformat(),
            "last_seen": g["last_seen"].astimezone(UTC).isoformat(),
            "first_id": g["first_id"],
        }
        for g in groups[:DIGEST_GROUPS_LIMIT]
    ]
    return {
        "open": sum(g["entries"] for g in groups),
        "groups": listed,
        "more": max(0, len(groups) - DIGEST_GROUPS_LIMIT),
    }


def _fmt(value) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def shift_summary_text(summary: dict) -> tuple[str, str]:
    """Subject and plain-text body of a shift summary (for mail and the log)."""
    start = datetime.fromisoformat(summary["shift_start"])
    end = datetime.fromisoformat(summary["shift_end"])
    t = summary["totals"]
    subject = (
        f"Ingest shift {start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC: {t['accepted']} accepted, "
        f"{t['duplicate']} duplicate, {t['rejected']} rejected, "
        f"{t['dead_letters_open']} dead letters open"
    )
    lines = [subject, "", "Per transport (lag = received - sent, ms):"]
    lines.append(
        f"  {'transport':<10} {'accepted':>9} {'duplicate':>9} {'rejected':>9} {'batches':>8} "
        f"{'lag mean':>9} {'lag max':>9} {'DL new':>7} {'DL open':>8}"
    )
    for r in summary["transports"]:
        lines.append(
            f"  {r['transport']:<10} {r['accepted']:>9} {r['duplicate']:>9} {r['rejected']:>9} "
            f"{r['batches']:>8} {_fmt(r['lag_ms_mean']):>9} {_fmt(r['lag_ms_max']):>9} "
            f"{r['dead_letters_new']:>7} {r['dead_letters_open']:>8}"
        )
    lines += ["", "Per station (messages sent in the shift; DL = dead letters first seen):"]
    lines.append(
        f"  {'transport':<10} {'station':<32} {'accepted':>9} {'lag mean':>9} {'lag max':>9} "
        f"{'DL new':>7}"
    )
    for r in summary["stations"]:
        lines.append(
            f"  {r['transport']:<10} {r['station'] or '(no station)':<32} {r['accepted']:>9} "
            f"{_fmt(r['lag_ms_mean']):>9} {_fmt(r['lag_ms_max']):>9} {r['dead_letters_new']:>7}"
        )
    return subject, "\n".join(lines) + "\n"


def dead_letter_digest_text(digest: dict) -> tuple[str, str]:
    """Subject and plain-text body of a dead-letter digest."""
    subject = (
        f"Dead-letter digest: {digest['open']} open in "
        f"{len(digest['groups']) + digest['more']} groups"
    )
    lines = [subject, "", "Oldest first (replay in the admin after fixing master data):"]
    for g in digest["groups"]:
        lines.append(
            f"- [{g['transport']}] {g['entries']} entries, {g['attempts']} attempts, "
            f"first {g['first_seen']}, last {g['last_seen']} (e.g. #{g['first_id']})"
        )
        lines.append(f"    {g['reason']}")
    if digest["more"]:
        lines.append(f"... and {digest['more']} more groups.")
    return subject, "\n".join(lines) + "\n"
