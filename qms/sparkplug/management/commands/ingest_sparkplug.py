"""``python manage.py ingest_sparkplug --group GF1-L1``: the Sparkplug B host application."""

from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from qms.sparkplug.client import HostClient

HELP = """Run the Sparkplug B host application for ONE Sparkplug group: publish the host's
STATE (spBv1.0/STATE/<host id>, retained, with the offline state as the MQTT will),
subscribe to spBv1.0/<group>/#, keep the birth cache of every edge node, check sequence
numbers, request rebirths (NCMD Node Control/Rebirth) on a gap or an unknown alias, and turn
mapped device metrics into process_result envelopes (Sparkplug metric mappings in the
admin). Sequence numbers are per edge node and must be checked in arrival order, so run
exactly one host per Sparkplug group (or give each host a disjoint set of groups); never
put several hosts behind one shared subscription."""


class Command(BaseCommand):
    help = HELP

    def add_arguments(self, parser):
        parser.add_argument("--group", required=True, help="Sparkplug group id to host.")
        parser.add_argument(
            "--host-id",
            default="",
            help="Sparkplug host id for the STATE topic (default: celltrace-<group>).",
        )
        parser.add_argument(
            "--mqtt-url",
            default="",
            help="Broker, e.g. mqtt://127.0.0.1:1883 (default: settings.MQTT_URL).",
        )
        parser.add_argument("--batch-size", type=int, default=200)
        parser.add_argument(
            "--batch-wait-ms", type=int, default=50, help="Longest wait to fill a batch."
        )
        parser.add_argument(
            "--rebirth-interval",
            type=float,
            default=5.0,
            help="Seconds between two rebirth requests to the same edge node.",
        )
        parser.add_argument(
            "--mapping-refresh",
            type=float,
            default=30.0,
            help="Seconds between reloads of the metric mappings (also reloaded on births).",
        )
        parser.add_argument(
            "--max-seconds", type=float, default=None, help="Stop after this long (demos)."
        )

    def handle(self, *args, **opts):
        url = opts["mqtt_url"] or getattr(settings, "MQTT_URL", "")
        if not url:
            raise CommandError("No broker: set MQTT_URL or pass --mqtt-url.")
        group = opts["group"]
        if any(c in group for c in "+/#"):
            raise CommandError("A Sparkplug group id cannot contain '+', '/' or '#'.")
        host_id = opts["host_id"] or f"celltrace-{group}"
        client = HostClient(
            mqtt_url=url,
            group_id=group,
            host_id=host_id,
            batch_size=opts["batch_size"],
            batch_wait_s=opts["batch_wait_ms"] / 1000,
            mapping_refresh_s=opts["mapping_refresh"],
            rebirth_interval_s=opts["rebirth_interval"],
        )
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        client.start()
        self.stdout.write(
            f"Sparkplug host {host_id} online for group {group} on {url} "
            f"({len(client.host.mappings)} metric mappings)"
        )
        try:
            client.run(stop, max_seconds=opts["max_seconds"])
        finally:
            client.stop()
        s = client.stats
        self.stdout.write(
            f"stopped: {s.received} received, {s.accepted} accepted, {s.duplicate} duplicate, "
            f"{s.rejected} rejected, {s.dead_letters} dead letters, "
            f"{s.rebirth_requests} rebirth requests"
        )
