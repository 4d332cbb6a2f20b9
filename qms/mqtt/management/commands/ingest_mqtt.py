"""Run an MQTT ingest worker: JSON envelopes from ``qms/<site>/<line>/<station>/<kind>``.

    python manage.py ingest_mqtt --client-id ingest-1
    python manage.py ingest_mqtt --client-id ingest-2      # a second worker shares the load

Workers with the same ``--group`` share one MQTT 5 shared subscription: the broker hands
each message to one of them. Each worker needs its own stable ``--client-id``: its session
(and the messages the broker keeps for it while it is down) is found again by that id.
SIGTERM or SIGINT stops it cleanly: the batch in hand is committed and acknowledged.
"""

import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from qms.mqtt.worker import DEFAULT_GROUP, IngestWorker, WorkerConfig


class Command(BaseCommand):
    help = "Ingest JSON envelopes from MQTT (QoS 1, shared subscription, batched, exactly once)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--url", default="", help="Broker URL (mqtt://host:port); default: MQTT_URL."
        )
        parser.add_argument(
            "--group",
            default=DEFAULT_GROUP,
            help=f"Shared subscription group: workers of one group split the load "
            f"(default {DEFAULT_GROUP}).",
        )
        parser.add_argument(
            "--client-id",
            default="",
            help="MQTT client id, stable across restarts and unique per worker "
            "(default: <group>-<hostname>).",
        )
        parser.add_argument(
            "--batch-size", type=int, default=500, help="Messages per transaction (500)."
        )
        parser.add_argument(
            "--batch-ms",
            type=int,
            default=100,
            help="A batch is committed at most this long after its first message (100).",
        )
        parser.add_argument(
            "--receive-maximum",
            type=int,
            default=None,
            help="Unacknowledged messages the broker may send (default: 4 x batch size).",
        )
        parser.add_argument(
            "--session-expiry-s",
            type=int,
            default=86_400,
            help="How long the broker keeps this worker's session and queued messages "
            "while it is away (86400).",
        )
        parser.add_argument(
            "--log-every", type=int, default=100, help="One log line every N batches (100)."
        )

    def handle(self, *args, **options):
        url = options["url"] or settings.MQTT_URL
        if not url:
            raise CommandError("MQTT_URL is not configured (or give --url mqtt://host:port).")
        try:
            config = WorkerConfig(
                url=url,
                group=options["group"],
                client_id=options["client_id"],
                batch_size=options["batch_size"],
                batch_ms=options["batch_ms"],
                receive_maximum=options["receive_maximum"],
                session_expiry_s=options["session_expiry_s"],
                log_every=options["log_every"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        worker = IngestWorker(config)

        def stop(signum, frame):
            worker.request_stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        worker.run()
