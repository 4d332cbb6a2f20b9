"""Read-side selectors of ingest: counters per transport, open dead letters, station
commands. ``/metrics`` and the ingest status page read through these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max, QuerySet, Sum
from django.db.models.functions import Coalesce

from .models import DeadLetter, DeadLetterStatus, IngestStat, StationCommand, Transport

#: The window ``celltrace_ingest_lag_seconds`` and the status page's lag cover.
LAG_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class Counts:
    """Ingest counters of one transport over some window (lag over accepted messages)."""

    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    batches: int = 0
    lag_ms_sum: float = 0.0
    lag_ms_max: float = 0.0

    @property
    def total(self) -> int:
        return self.accepted + self.duplicate + self.rejected

    @property
    def lag_mean_s(self) -> float:
        return self.lag_ms_sum / self.accepted / 1000 if self.accepted else 0.0

    @property
    def lag_max_s(self) -> float:
        return self.lag_ms_max / 1000


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def ingest_counts(*, since: datetime | None = None) -> dict[str, Counts]:
    """Counters per transport (every transport present, zero when silent), summed over the
    minutes starting at or after ``since`` (all of them when ``since`` is None)."""
    qs = IngestStat.objects.order_by()
    if since is not None:
        qs = qs.filter(minute__gte=minute_of(since))
    rows = qs.values("transport").annotate(
        accepted_sum=Coalesce(Sum("accepted"), 0),
        duplicate_sum=Coalesce(Sum("duplicate"), 0),
        rejected_sum=Coalesce(Sum("rejected"), 0),
        batches_sum=Coalesce(Sum("batches"), 0),
        lag_sum=Coalesce(Sum("lag_ms_sum"), 0.0),
        lag_max=Coalesce(Max("lag_ms_max"), 0.0),
    )
    out = {t: Counts() for t in Transport.values}
    for r in rows:
        out[r["transport"]] = Counts(
            accepted=r["accepted_sum"],
            duplicate=r["duplicate_sum"],
            rejected=r["rejected_sum"],
            batches=r["batches_sum"],
            lag_ms_sum=float(r["lag_sum"]),
            lag_ms_max=float(r["lag_max"]),
        )
    return out


def lag_window_start(now: datetime) -> datetime:
    """Start of the last five one-minute buckets (the current one included)."""
    return minute_of(now) - LAG_WINDOW + timedelta(minutes=1)


def dead_letters_open_counts() -> dict[str, int]:
    """Open dead letters per transport (every transport present)."""
    out = dict.fromkeys(Transport.values, 0)
    rows = (
        DeadLetter.objects.filter(status=DeadLetterStatus.OPEN)
        .order_by()
        .values("transport")
        .annotate(n=Count("id"))
    )
    for r in rows:
        out[r["transport"]] = r["n"]
    return out


def dead_letter_list(*, status: str | None = DeadLetterStatus.OPEN) -> QuerySet[DeadLetter]:
    """Dead letters, most recently seen first, without their raw bytes."""
    qs = DeadLetter.objects.defer("raw").order_by("-last_seen", "-id")
    return qs.filter(status=status) if status else qs


def station_command_list() -> QuerySet[StationCommand]:
    """Station commands, newest first, with station, line, site and requester."""
    return StationCommand.objects.select_related("station__line__site", "requested_by").order_by(
        "-requested_at", "-id"
    )
