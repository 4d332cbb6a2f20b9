"""Ingest counters in Prometheus text format, for ``/metrics``.

Every ingest worker process adds its batch counts to :class:`~qms.ingest.models.IngestStat`
rows (per transport and minute) in the batch's own transaction, so the figures are the
plant's, not one process's, and survive restarts. The collector reads them at scrape time:

* ``celltrace_ingest_messages_total{transport, outcome}`` (counter): messages accepted,
  duplicate (acknowledged, not applied again) and rejected (to the dead-letter store);
* ``celltrace_ingest_batches_total{transport}`` (counter): committed batches;
* ``celltrace_ingest_lag_seconds{transport, stat}`` (gauge): received minus sent of the
  messages accepted in the last five minutes, ``stat="max"`` and ``stat="mean"``;
* ``celltrace_dead_letters_open{transport}`` (gauge): dead letters waiting for a replay or
  a discard.

Every transport is always listed (zeros when silent), so ``rate()`` and alerts have a
series from the first scrape.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import queries
from .services import ACCEPTED, DUPLICATE, REJECTED

OUTCOMES = (ACCEPTED, DUPLICATE, REJECTED)


class IngestCollector(Collector):
    """Reads the ingest counters from the database at each scrape."""

    def __init__(self, now: datetime | None = None) -> None:
        self._now = now

    def describe(self) -> list[Metric]:
        return []  # no database read when registering; metrics are listed at collect time

    def collect(self) -> Iterator[Metric]:
        now = self._now or timezone.now()
        totals = queries.ingest_counts()
        recent = queries.ingest_counts(since=queries.lag_window_start(now))
        open_letters = queries.dead_letters_open_counts()

        messages = CounterMetricFamily(
            "celltrace_ingest_messages",
            "Ingest messages by transport and outcome (accepted, duplicate, rejected).",
            labels=["transport", "outcome"],
        )
        batches = CounterMetricFamily(
            "celltrace_ingest_batches",
            "Ingest batches committed, by transport.",
            labels=["transport"],
        )
        lag = GaugeMetricFamily(
            "celltrace_ingest_lag_seconds",
            "Received minus sent of messages accepted in the last 5 minutes (max and mean).",
            labels=["transport", "stat"],
        )
        dead = GaugeMetricFamily(
            "celltrace_dead_letters_open",
            "Dead letters open (not replayed or discarded), by transport.",
            labels=["transport"],
        )
        for transport, counts in totals.items():
            for outcome in OUTCOMES:
                messages.add_metric([transport, outcome], getattr(counts, outcome))
            batches.add_metric([transport], counts.batches)
            window = recent[transport]
            lag.add_metric([transport, "max"], window.lag_max_s)
            lag.add_metric([transport, "mean"], window.lag_mean_s)
            dead.add_metric([transport], open_letters[transport])
        yield messages
        yield batches
        yield lag
        yield dead


def metrics_text(*, now: datetime | None = None) -> bytes:
    """The exposition text (a fresh registry per scrape: nothing is kept in the process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(now=now))
    return generate_latest(registry)
