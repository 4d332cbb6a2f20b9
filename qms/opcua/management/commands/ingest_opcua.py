"""Run the OPC UA ingest client: subscribe to every enabled OPC UA server and apply its
results as ``process_result`` envelopes, exactly once.

    python manage.py ingest_opcua                    # every enabled server
    python manage.py ingest_opcua --server sim-l2    # only these
    python manage.py ingest_opcua --run-seconds 60   # a bounded run (demo, smoke test)

The configuration (servers and node maps, in the admin) is read at start: restart after an
edit. SIGTERM or SIGINT stops it cleanly: the batch in hand is committed first; results not
applied yet are read again from the servers' event history on the next start.
"""

import asyncio
import signal

from django.core.management.base import BaseCommand, CommandError

from qms.opcua.client import IngestWorker, run_clients
from qms.opcua.queries import opcua_server_configs


class Command(BaseCommand):
    help = "Subscribe to the configured OPC UA servers and ingest their results (exactly once)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--server", action="append", default=[], help="Only this server (repeatable)."
        )
        parser.add_argument(
            "--batch-size", type=int, default=200, help="Results per transaction (200)."
        )
        parser.add_argument(
            "--batch-ms",
            type=int,
            default=100,
            help="A batch is applied at most this long after its first result (100).",
        )
        parser.add_argument(
            "--backoff-max-s",
            type=float,
            default=30.0,
            help="Longest wait between reconnect attempts (30; it starts at 1 s and doubles).",
        )
        parser.add_argument(
            "--run-seconds", type=float, default=0.0, help="Stop after this long (0: run on)."
        )

    def handle(self, *args, **options):
        configs = opcua_server_configs(names=options["server"] or None)
        if not configs:
            raise CommandError("No enabled OPC UA server is configured (admin: OPC UA servers).")
        for config in configs:
            self.stdout.write(
                f"{config.name}: {config.endpoint_url}, {len(config.sources)} result source(s)"
            )
            for problem in config.problems:
                self.stderr.write(f"  {problem}")
        stats = asyncio.run(self._run(configs, options))
        self.stdout.write(
            f"accepted {stats.accepted}, duplicate {stats.duplicate + stats.skipped}, "
            f"rejected {stats.rejected}, batches {stats.batches}"
        )

    async def _run(self, configs, options):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if options["run_seconds"] > 0:
            loop.call_later(options["run_seconds"], stop.set)
        worker = IngestWorker(
            batch_size=options["batch_size"], batch_wait_s=options["batch_ms"] / 1000
        )
        return await run_clients(
            configs, stop, worker=worker, backoff_max_s=options["backoff_max_s"]
        )
