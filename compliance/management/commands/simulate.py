"""Simulate production on the demo plant through the real services.

``simulate --cells N --seed S`` runs one production run (fresh lots and coils, N cells over
both lines, modules, packs, VINs, a few injected faults) in one transaction.
``simulate --live`` keeps producing one module's worth of cells every few seconds, on the
lines in turn, until SIGINT or SIGTERM (or ``--iterations`` batches).
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from compliance.demo import line, plant
from qms.exceptions import DomainError


def _parse_until(raw: str | None) -> datetime:
    now = timezone.now()
    if not raw:
        return now
    at = parse_datetime(raw)
    if at is None:
        raise CommandError(f"--until {raw!r} is not an ISO 8601 date-time.")
    if timezone.is_naive(at):
        at = at.replace(tzinfo=UTC)
    if at > now:
        raise CommandError(f"--until {raw!r} is in the future; production data never is.")
    return at


class Command(BaseCommand):
    help = (
        "Simulate production on the demo plant (seeds it first if needed): "
        "--cells N --seed S for a run, --live for a line that keeps producing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cells", type=int, default=1500, help="Cells in the run.")
        parser.add_argument("--seed", type=int, default=7, help="Random seed (deterministic).")
        parser.add_argument(
            "--until",
            default=None,
            help="End of the simulated production (ISO 8601, UTC if naive; default now).",
        )
        parser.add_argument(
            "--no-faults", action="store_true", help="Do not inject the demo faults."
        )
        parser.add_argument(
            "--live", action="store_true", help="Keep producing small batches until stopped."
        )
        parser.add_argument(
            "--iterations", type=int, default=None, help="Live mode: stop after N batches."
        )
        parser.add_argument(
            "--interval", type=float, default=5.0, help="Live mode: seconds between batches."
        )

    def handle(self, *args, **opts) -> None:
        if opts["cells"] < 0:
            raise CommandError("--cells must not be negative.")
        plant.seed()
        if opts["live"]:
            self._live(seed=opts["seed"], iterations=opts["iterations"], interval=opts["interval"])
            return
        end_at = _parse_until(opts["until"])
        started = time.monotonic()
        with transaction.atomic():
            reports = line.simulate(
                n_cells=opts["cells"],
                seed=opts["seed"],
                end_at=end_at,
                faults=not opts["no_faults"],
            )
        elapsed = time.monotonic() - started
        for report in reports:
            self.stdout.write(report.summary())
            for hold in report.holds:
                self.stdout.write(f"    hold {hold}")
            for rework in report.reworks:
                self.stdout.write(f"    rework {rework}")
            if report.vehicles:
                self.stdout.write(f"    VINs {', '.join(report.vehicles)}")
        self.stdout.write(
            self.style.SUCCESS(f"Simulated {opts['cells']} cells in {elapsed:.1f} s.")
        )

    def _live(self, *, seed: int, iterations: int | None, interval: float) -> None:
        stop = threading.Event()

        def request_stop(signum, frame) -> None:
            stop.set()

        previous = {
            sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        self.stdout.write(
            f"Live line: one module's worth of cells every {interval:g} s "
            "(Ctrl-C or SIGTERM stops it)."
        )
        done = 0
        try:
            while not stop.is_set() and (iterations is None or done < iterations):
                spec = plant.LINES[done % len(plant.LINES)]
                try:
                    with transaction.atomic():
                        report = line.simulate_batch(spec=spec, seed=seed, end_at=timezone.now())
                except DomainError as exc:  # e.g. a hold placed meanwhile blocks a coil
                    self.stderr.write(f"batch {done + 1} on {spec.code} refused: {exc.message}")
                else:
                    self.stdout.write(f"batch {done + 1}: {report.summary()}")
                    for hold in report.holds:
                        self.stdout.write(f"    hold {hold}")
                self.stdout.flush()
                done += 1
                if iterations is not None and done >= iterations:
                    break
                stop.wait(interval)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write(f"Live line stopped after {done} batches.")
