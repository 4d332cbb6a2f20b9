"""Simulate production on the demo plant through the real services.

``simulate --cells N --seed S`` runs one production run (fresh lots and coils, N cells over
both lines, modules, packs, VINs, a few injected faults) in one transaction.
``simulate --live`` keeps producing one module's worth of cells every few seconds, on the
lines in turn, until SIGINT or SIGTERM (or ``--iterations`` batches).

``simulate --transport direct|rest|mqtt|opcua`` sends the same kind of run as ingest
envelopes through that transport instead (:mod:`compliance.demo.stream`,
:mod:`compliance.demo.transports`), at ``--rate`` messages per second, with ``--faults`` on
request, and prints what was sent and what ingest answered.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from compliance.choices import HoldSource
from compliance.demo import line, plant, transports
from compliance.demo.stream import build_stream
from compliance.models import Hold
from qms.exceptions import DomainError
from qms.mqtt.broker import parse_url
from risk.models import RiskScore

DEFAULT_INGEST_URL = "http://127.0.0.1:8000/api/v1/ingest/"
#: The demo's read-write integration (local demo only; ``demo_logins`` prints it).
DEFAULT_TOKEN = next(i.token for i in plant.DEMO_INTEGRATIONS if i.scope == "read_write")


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
            "--formation",
            action="store_true",
            help="Then form, age and grade the new cells on simulated cyclers (equivalent-"
            "circuit cells following their upstream history, latent defects, channel and rack "
            "nuisances), through the formation ingest handlers.",
        )
        parser.add_argument(
            "--iterations", type=int, default=None, help="Live mode: stop after N batches."
        )
        parser.add_argument(
            "--interval", type=float, default=5.0, help="Live mode: seconds between batches."
        )
        parser.add_argument(
            "--transport",
            choices=transports.TRANSPORTS,
            default=None,
            help="Send the run as ingest envelopes through this transport (default: write "
            "through the services in one transaction).",
        )
        parser.add_argument(
            "--rate",
            type=float,
            default=0.0,
            help="Messages per second with --transport (0: as fast as the transport takes them).",
        )
        parser.add_argument(
            "--faults",
            default="",
            help="With --transport: comma-separated "
            f"{', '.join(transports.FAULTS)}, each with =N (count) or =R (rate below 1), "
            "e.g. duplicates=5,malformed=0.01,broker-restart.",
        )
        parser.add_argument(
            "--url", default=DEFAULT_INGEST_URL, help="REST: the ingest endpoint (or server)."
        )
        parser.add_argument(
            "--token", default=DEFAULT_TOKEN, help="REST: a read_write integration token."
        )
        parser.add_argument(
            "--mqtt-url",
            default=None,
            help="MQTT: the broker (default MQTT_URL, else mqtt://127.0.0.1:1883).",
        )
        parser.add_argument(
            "--broker-restart-cmd",
            default=transports.DEFAULT_BROKER_RESTART_CMD,
            help="MQTT: the shell command the broker-restart fault runs half-way.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="direct, REST, OPC UA: messages per ingest transaction / call.",
        )

    def handle(self, *args, **opts) -> None:
        if opts["cells"] < 0:
            raise CommandError("--cells must not be negative.")
        if opts["transport"]:
            self._stream(opts)
            return
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
        if opts["formation"]:
            self._formation(seed=opts["seed"], end_at=end_at)

    def _formation(self, *, seed: int, end_at) -> None:
        from django.contrib.auth import get_user_model

        from formation.demo import formation_simulate_all

        started = time.monotonic()
        quality = get_user_model().objects.filter(username=plant.QUALITY_USERNAME).first()
        scored_before = RiskScore.objects.aggregate(last=Max("pk"))["last"] or 0
        held_before = Hold.objects.filter(source=HoldSource.RISK).aggregate(last=Max("pk"))
        for report in formation_simulate_all(seed=seed, end_at=end_at, actor=quality):
            self.stdout.write(report.summary())
        scores = RiskScore.objects.filter(pk__gt=scored_before)
        if scores.exists():
            by_version = scores.values("model_version").annotate(
                cells=Count("unit", distinct=True),
                quarantined=Count("unit", filter=Q(quarantined=True), distinct=True),
            )
            holds = Hold.objects.filter(
                source=HoldSource.RISK, pk__gt=held_before["last"] or 0
            ).order_by("pk")
            for row in by_version.order_by("model_version"):
                self.stdout.write(
                    f"Thermal risk: {row['cells']} cells scored by model {row['model_version']}, "
                    f"{row['quarantined']} above the quarantine threshold"
                    + (f", held in {', '.join(h.number for h in holds)}" if holds else "")
                )
        else:
            self.stdout.write("Thermal risk: no cells scored (no active thermal-risk model).")
        self.stdout.write(
            self.style.SUCCESS(f"Formed, aged and graded in {time.monotonic() - started:.1f} s.")
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

    # -- through the transports ------------------------------------------------------------

    def _check_stream_options(self, opts) -> dict:
        """Every option checked before anything is written."""
        if opts["live"]:
            raise CommandError("--live writes through the services; it takes no --transport.")
        if opts["rate"] < 0:
            raise CommandError("--rate must not be negative.")
        if opts["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            faults = transports.parse_faults(opts["faults"])
        except ValueError as exc:
            raise CommandError(f"--faults: {exc}") from exc
        if "broker-restart" in faults and opts["transport"] != "mqtt":
            raise CommandError("--faults broker-restart needs --transport mqtt.")
        if opts["transport"] == "rest":
            try:
                transports.ingest_url(opts["url"])
            except ValueError as exc:
                raise CommandError(f"--url: {exc}") from exc
        if opts["transport"] == "mqtt":
            opts["mqtt_url"] = opts["mqtt_url"] or settings.MQTT_URL or "mqtt://127.0.0.1:1883"
            try:
                parse_url(opts["mqtt_url"])
            except ValueError as exc:
                raise CommandError(f"--mqtt-url: {exc}") from exc
        return faults

    def _sink(self, opts) -> transports.Sink:
        log = self._log
        batching = {"batch_size": opts["batch_size"], "log": log}
        transport = opts["transport"]
        if transport == "direct":
            return transports.DirectSink(**batching)
        if transport == "rest":
            return transports.RestSink(url=opts["url"], token=opts["token"], **batching)
        if transport == "mqtt":
            return transports.MqttSink(opts["mqtt_url"], log=log)
        stations = transports.opcua_stations(site=plant.SITE_CODE, line=plant.CYLINDRICAL.code)
        return transports.OpcUaSink(
            direct=transports.DirectSink(**batching), stations=stations, log=log
        )

    def _log(self, text: str) -> None:
        self.stderr.write(text)
        self.stderr.flush()

    def _stream(self, opts) -> None:
        faults = self._check_stream_options(opts)
        end_at = _parse_until(opts["until"])
        plant.seed()
        stream = build_stream(
            cells=opts["cells"], seed=opts["seed"], end_at=end_at, faults=not opts["no_faults"]
        )
        plan = transports.plan_delivery(
            stream, faults, broker_restart_cmd=opts["broker_restart_cmd"]
        )
        for summary in stream.lines:
            self.stdout.write(summary.summary())
        if not stream.messages:
            self.stdout.write("Nothing to send.")
            return
        rate = f"{opts['rate']:g} messages/s" if opts["rate"] else "as fast as it takes them"
        self.stdout.write(
            f"Sending {len(plan.messages):,} messages through {opts['transport']}, {rate} "
            f"(sent_at {stream.messages[0].doc['sent_at']} .. "
            f"{stream.messages[-1].doc['sent_at']})."
        )
        try:
            sink = self._sink(opts)
            report = transports.deliver(plan, sink, rate=opts["rate"], log=self._log)
        except transports.DeliveryError as exc:
            raise CommandError(str(exc)) from exc
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in sorted(report.by_kind.items()))
        self.stdout.write(f"Sent per kind: {kinds}")
        injected = ", ".join(f"{name} {n}" for name, n in plan.injected.items() if n)
        self.stdout.write(f"Faults injected: {injected or 'none'}")
        for note in plan.notes[: transports.REJECTIONS_SHOWN]:
            self.stdout.write(f"    {note}")
        if len(plan.notes) > transports.REJECTIONS_SHOWN:
            self.stdout.write(f"    ... and {len(plan.notes) - transports.REJECTIONS_SHOWN:,} more")
        for text in sink.report():
            self.stdout.write(text)
        per_s = report.sent / report.elapsed_s if report.elapsed_s else 0.0
        self.stdout.write(
            self.style.SUCCESS(
                f"Sent {report.sent:,} messages in {report.elapsed_s:.1f} s ({per_s:.0f}/s)."
            )
        )
