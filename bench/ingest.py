"""Ingest benchmark: station results of 20 measurements through every path, against the
physical limit of the database.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/celltrace_bench_ingest \\
    MQTT_URL=mqtt://127.0.0.1:1883 .venv/bin/python -m bench.ingest --json

Builds its own plant in its own PostgreSQL database (the name must contain ``bench``;
created when missing): a cylindrical 21700 line with an end-of-line test station that
measures 20 characteristics per cell, and the cells. Every message is a ``process_result``
of one known cell with 20 in-spec measurements (about 2.3 kB of JSON). Then it measures:

* ``copy_rows_per_s``: ``COPY`` of the same measurement rows straight into
  ``genealogy_measurement`` (no validation, no visit, no bookkeeping): the machine's limit;
* ``direct_*``: :func:`qms.ingest.services.ingest_raw` in this process, in batches;
* ``rest_*``: ``POST /api/v1/ingest/`` (Django's test client, in this process: the view,
  its parsing and answer, without an HTTP server), in calls of ``--rest-batch`` messages;
* ``mqtt_*``: ``manage.py ingest_mqtt`` worker processes (one, then two, sharing one
  subscription) fed at QoS 1 through the real broker by a publisher in this process, which
  keeps the broker's backlog per worker under Mosquitto's default queue limit (1000 queued
  messages per session); the rate is from the first publish to the last message stored.

After each path it counts what the database holds per message id: ``lost`` (published or
posted, never stored) and ``duplicated`` (applied more than once: more measurement rows than
20 per stored message). Reactions (Celery tasks after each commit) are queued on Celery's
in-memory transport unless ``CELERY_BROKER_URL`` is set, so the figures are the ingest's
own. One JSON object is printed on the last line. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.trace import db_name, ensure_pg_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB_URL = "postgres://postgres@127.0.0.1:5432/celltrace_bench_ingest"
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
#: Mosquitto keeps at most this many messages queued per session beyond those in flight
#: (``max_queued_messages``, default 1000) and drops the rest; the publisher stays below.
BROKER_QUEUE_LIMIT = 1000

# End-of-line test of a 21700 cell (NMC811 / graphite, 5 Ah): code, name, unit, nominal,
# LSL, USL, method. Values are drawn inside the limits.
EOL_CHARACTERISTICS = [
    ("ocv", "Open-circuit voltage", "mV", 3620.0, 3600.0, 3640.0, "4-wire DMM"),
    ("acir-1khz", "AC internal resistance at 1 kHz", "mΩ", 12.0, 10.0, 14.0, "AC milliohm meter"),
    ("dcir-10s", "DC internal resistance, 10 s pulse", "mΩ", 18.0, 15.0, 21.0, "pulse test"),
    ("capacity", "Discharge capacity, 0.2 C", "Ah", 5.00, 4.90, 5.15, "cycler"),
    ("energy", "Discharge energy, 0.2 C", "Wh", 18.2, 17.7, 18.8, "cycler"),
    ("k-value", "Self-discharge rate", "mV/d", 0.05, 0.0, 0.10, "OCV over aging"),
    ("mass", "Cell mass", "g", 70.0, 68.5, 71.5, "check-weigher"),
    ("height", "Cell height", "mm", 70.20, 69.90, 70.50, "laser gauge"),
    ("diameter", "Cell diameter", "mm", 21.10, 21.00, 21.20, "laser gauge"),
    ("ovality", "Can ovality", "mm", 0.03, 0.0, 0.08, "laser gauge"),
    ("crimp-height", "Crimp height", "mm", 1.20, 1.10, 1.30, "laser gauge"),
    ("vent-height", "Vent disc height", "mm", 0.45, 0.40, 0.50, "confocal sensor"),
    ("pos-weld-pull", "Positive tab weld pull force", "N", 42.0, 30.0, 60.0, "pull tester"),
    ("neg-weld-pull", "Negative tab weld pull force", "N", 45.0, 30.0, 60.0, "pull tester"),
    ("insulation-r", "Insulation resistance can-cap", "MΩ", 550.0, 100.0, 2000.0, "500 V tester"),
    ("hipot-leak", "Hi-pot leakage current", "µA", 2.0, 0.0, 10.0, "hi-pot tester"),
    ("fill-mass", "Electrolyte fill mass", "g", 5.00, 4.90, 5.10, "weigh in/out"),
    ("ce-formation", "Formation coulombic efficiency", "%", 88.0, 85.0, 92.0, "cycler"),
    ("cell-temp", "Cell temperature at test", "°C", 25.0, 20.0, 30.0, "IR sensor"),
    ("label-offset", "Label position offset", "mm", 0.0, -0.5, 0.5, "vision"),
]
MEASUREMENTS = len(EOL_CHARACTERISTICS)  # 20 per message


def log_to(json_only: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        print(msg, file=sys.stderr if json_only else sys.stdout, flush=True)

    return log


# --- the plant --------------------------------------------------------------------------------


def plant() -> tuple:
    """Site ``bench``, line ``l2-cyl`` (21700, serials ``L2C`` + 10 digits), station ``eol``
    with its 20 characteristics: (line, station, characteristics by code)."""
    from qms.choices import CellFormat, IdentificationMethod, ProcessStep, SpecialCharacteristic
    from qms.models import Characteristic, Line, Site, Station

    site, _ = Site.objects.get_or_create(
        code="bench", defaults={"name": "Benchmark plant", "country": "DE"}
    )
    line, _ = Line.objects.get_or_create(
        site=site,
        code="l2-cyl",
        defaults={
            "name": "Cylindrical line 2 (21700, NMC811, 5 Ah)",
            "cell_format": CellFormat.CYLINDRICAL,
            "identification_method": IdentificationMethod.DATAMATRIX,
            "serial_scheme": r"L2C[0-9]{10}",
        },
    )
    station, _ = Station.objects.get_or_create(
        line=line,
        code="eol",
        defaults={
            "name": "End-of-line cell test",
            "process_step": ProcessStep.END_OF_LINE_TEST,
            "sequence": 200,
        },
    )
    chars = {}
    for code, name, unit, nominal, lsl, usl, method in EOL_CHARACTERISTICS:
        chars[code], _ = Characteristic.objects.get_or_create(
            station=station,
            code=code,
            defaults={
                "name": name,
                "unit": unit,
                "nominal": nominal,
                "lsl": lsl,
                "usl": usl,
                "measurement_method": method,
                "sample_size": 1,
                "sample_frequency": "every cell",
                "reaction_plan": "Hold the cell; MRB.",
                "special_class": SpecialCharacteristic.SC,
            },
        )
    return line, station, chars


def cells_create(line, first: int, n: int) -> list[tuple[int, str]]:
    """``n`` cells ``L2C<first..>``, in bulk; returns (id, serial) pairs."""
    from genealogy.choices import UnitKind
    from genealogy.models import Unit

    made = datetime.now(UTC) - timedelta(days=14)
    units = [
        Unit(kind=UnitKind.CELL, serial=f"L2C{first + i:010d}", line=line, produced_at=made)
        for i in range(n)
    ]
    Unit.objects.bulk_create(units, batch_size=5000)
    serials = [u.serial for u in units]
    found = dict(
        Unit.objects.filter(kind=UnitKind.CELL, serial__in=serials).values_list("serial", "pk")
    )
    return [(found[s], s) for s in serials]


def wipe() -> None:
    """Empty what the previous run wrote (ingest bookkeeping and the digital thread)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "TRUNCATE ingest_ingestmessage, ingest_ingeststat, ingest_deadletter, "
            "ingest_historicaldeadletter, genealogy_measurement, genealogy_stationvisit, "
            "genealogy_unitprogress, genealogy_link, genealogy_historicallink, "
            "genealogy_historicalunit, genealogy_unit CASCADE"
        )


# --- messages ---------------------------------------------------------------------------------


def messages(
    source: str, cells: list[tuple[int, str]], rnd: random.Random, t0: datetime
) -> list[bytes]:
    """One end-of-line result per cell, 20 in-spec values each, as JSON bytes."""
    from qms.ingest.envelope import build

    out = []
    for i, (_pk, serial) in enumerate(cells):
        values = []
        for code, _name, unit, nominal, lsl, usl, _m in EOL_CHARACTERISTICS:
            spread = (usl - lsl) / 8.0
            value = min(max(rnd.gauss(nominal, spread), lsl), usl)
            values.append({"characteristic": code, "value": round(value, 4), "unit": unit})
        doc = build(
            kind="process_result",
            site="bench",
            line="l2-cyl",
            station="eol",
            source=f"{source} EOL tester",
            message_id=f"{source}:{i:07d}",
            unit=serial,
            sent_at=t0 + timedelta(milliseconds=10 * i),
            payload={"result": "ok", "program": "EOL-21700-v7", "measurements": values},
        )
        out.append(json.dumps(doc, separators=(",", ":")).encode())
    return out


def measurement_rows(cells, station_id: int, char_ids: list[int], rnd, t0) -> list[tuple]:
    """The rows ``COPY`` writes: what the pipeline writes per value, without the visit."""
    rows = []
    for i, (pk, _serial) in enumerate(cells):
        at = t0 + timedelta(milliseconds=10 * i)
        for char_id, (_c, _n, _u, nominal, lsl, usl, _m) in zip(
            char_ids, EOL_CHARACTERISTICS, strict=True
        ):
            value = min(max(rnd.gauss(nominal, (usl - lsl) / 8.0), lsl), usl)
            rows.append((pk, char_id, station_id, round(value, 4), True, at, f"copy:{i:07d}"))
    return rows


def applied(source: str) -> tuple[int, int]:
    """(messages stored, measurement rows) of a source's message ids."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM ingest_ingestmessage WHERE message_id LIKE %s", [f"{source}:%"]
        )
        stored = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*) FROM genealogy_measurement WHERE source_message_id LIKE %s",
            [f"{source}:%"],
        )
        rows = cur.fetchone()[0]
    return stored, rows


def loss_and_duplication(source: str, sent: int) -> dict:
    stored, rows = applied(source)
    return {
        "lost": sent - stored,
        "duplicated": max(0, rows - stored * MEASUREMENTS) // MEASUREMENTS,
    }


# --- the paths ------------------------------------------------------------------------------


def run_copy(rows: list[tuple]) -> float:
    from django.db import connection, transaction

    cols = "unit_id, characteristic_id, station_id, value, in_spec, measured_at, source_message_id"
    started = time.perf_counter()
    with (
        transaction.atomic(),
        connection.cursor() as cur,
        cur.copy(f"COPY genealogy_measurement ({cols}) FROM STDIN") as copy,
    ):
        for r in rows:
            copy.write_row(r)
    return len(rows) / (time.perf_counter() - started)


def run_direct(payloads: list[bytes], batch: int) -> float:
    from qms.ingest.services import RawMessage, ingest_raw, transport_actor

    actor = transport_actor("direct")
    raws = [RawMessage(p, "direct", "bench") for p in payloads]
    started = time.perf_counter()
    for i in range(0, len(raws), batch):
        ingest_raw(raws[i : i + batch], actor=actor)
    return len(raws) / (time.perf_counter() - started)


def run_rest(payloads: list[bytes], batch: int) -> float:
    from django.test import Client

    from qms.api.authentication import integration_create

    _integration, key = integration_create(
        name=f"bench-mes-{uuid.uuid4().hex[:6]}", scope="read_write"
    )
    client = Client()
    bodies = [
        b'{"messages":[' + b",".join(payloads[i : i + batch]) + b"]}"
        for i in range(0, len(payloads), batch)
    ]
    started = time.perf_counter()
    for body in bodies:
        answer = client.post(
            "/api/v1/ingest/",
            data=body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {key}",
        )
        if answer.status_code != 200:
            raise RuntimeError(f"ingest API answered {answer.status_code}: {answer.content[:300]}")
    return len(payloads) / (time.perf_counter() - started)


def peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of a running process, MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return round(int(found[1]) / 1024, 1) if found else 0.0


class Workers:
    """``manage.py ingest_mqtt`` processes of one shared-subscription group."""

    def __init__(self, *, n: int, mqtt_url: str, batch: int, batch_ms: int, logdir: Path):
        from django.db import connection

        cfg = connection.settings_dict
        self.mqtt_url = mqtt_url
        self.group = f"bench-{uuid.uuid4().hex[:8]}"
        self.ids = [f"{self.group}-{k + 1}" for k in range(n)]
        self.logs = [logdir / f"{cid}.log" for cid in self.ids]
        env = dict(os.environ)
        auth = cfg["USER"] + (f":{cfg['PASSWORD']}" if cfg.get("PASSWORD") else "")
        env |= {
            "DATABASE_URL": f"postgres://{auth}@{cfg['HOST'] or '127.0.0.1'}:"
            f"{cfg['PORT'] or 5432}/{cfg['NAME']}",
            "MQTT_URL": mqtt_url,
            "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
            "CELERY_RESULT_BACKEND": os.environ.get("CELERY_RESULT_BACKEND", ""),
            "PYTHONUNBUFFERED": "1",
        }
        self.procs = []
        for cid, path in zip(self.ids, self.logs, strict=True):
            with open(path, "wb") as out:
                self.procs.append(
                    subprocess.Popen(  # noqa: S603 (fixed argv)
                        [
                            sys.executable,
                            str(ROOT / "manage.py"),
                            "ingest_mqtt",
                            "--group",
                            self.group,
                            "--client-id",
                            cid,
                            "--batch-size",
                            str(batch),
                            "--batch-ms",
                            str(batch_ms),
                            "--session-expiry-s",
                            "60",
                            "--log-every",
                            "20",
                        ],
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        self.receive_maximum = max(100, min(4 * batch, 65_535))

    def wait_subscribed(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for proc, path in zip(self.procs, self.logs, strict=True):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited:\n{path.read_text()[-3000:]}")
            if all("subscribed $share/" in p.read_text(errors="replace") for p in self.logs):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not subscribe in time")
            time.sleep(0.1)

    def peak_rss_mb(self) -> float:
        return max(peak_rss_mb(p.pid) for p in self.procs)

    def stop(self) -> None:
        from qms.mqtt.broker import connect_properties, new_client, parse_url

        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        address = parse_url(self.mqtt_url)
        for cid in self.ids:  # end the sessions: nothing more is kept for them
            client = new_client(address, client_id=cid)
            client.connect(
                address.host,
                address.port,
                clean_start=True,
                properties=connect_properties(session_expiry_s=0),
            )
            client.loop_start()
            time.sleep(0.1)
            client.disconnect()
            client.loop_stop()


def run_mqtt(
    payloads: list[bytes],
    source: str,
    *,
    workers: int,
    mqtt_url: str,
    batch: int,
    batch_ms: int,
    logdir: Path,
    log,
) -> dict:
    """Publish ``payloads`` at QoS 1 to ``workers`` worker processes; rate from the first
    publish until every message is stored."""
    from django.db import connection

    from qms.mqtt.broker import new_client, parse_url

    group = Workers(n=workers, mqtt_url=mqtt_url, batch=batch, batch_ms=batch_ms, logdir=logdir)
    try:
        group.wait_subscribed()
        address = parse_url(mqtt_url)
        publisher = new_client(address, client_id=f"bench-eol-{uuid.uuid4().hex[:8]}")
        publisher.max_inflight_messages_set(1000)
        publisher.max_queued_messages_set(0)
        acked = [0]
        lock = threading.Lock()

        def on_publish(client, userdata, mid, reason_code, properties):
            with lock:
                acked[0] += 1

        publisher.on_publish = on_publish
        publisher.connect(address.host, address.port)
        publisher.loop_start()
        topic = "qms/bench/l2-cyl/eol/process_result"
        # Keep each worker's backlog (in flight + queued at the broker) under its receive
        # maximum plus the broker's queue limit. Seen from here the backlog is what is
        # published and not yet stored; a batch just stored may not be acknowledged at the
        # broker yet, hence one batch of margin.
        window = workers * (group.receive_maximum + BROKER_QUEUE_LIMIT * 8 // 10 - batch)

        def stored() -> int:
            with connection.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM ingest_ingestmessage WHERE message_id LIKE %s",
                    [f"{source}:%"],
                )
                return cur.fetchone()[0]

        n = len(payloads)
        started = time.perf_counter()
        done = 0
        step = 100
        for i, payload in enumerate(payloads):
            if i % step == 0 and i - done > window - step:
                while i - (done := stored()) > window - step:
                    time.sleep(0.01)
            publisher.publish(topic, payload, qos=1)
        published_s = time.perf_counter() - started
        last_progress, last = time.perf_counter(), -1
        while (done := stored()) < n:
            if done != last:
                last_progress, last = time.perf_counter(), done
            elif time.perf_counter() - last_progress > 30:
                log(f"  no progress for 30 s at {done}/{n}")
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        rss = group.peak_rss_mb()
        publisher.disconnect()
        publisher.loop_stop()
    finally:
        group.stop()
    rate = done / elapsed
    log(
        f"  mqtt, {workers} worker(s): {done}/{n} stored in {elapsed:.1f} s "
        f"(published in {published_s:.1f} s): {rate:.0f} msg/s, worker peak RSS {rss} MB"
    )
    return {"msgs_per_s": rate, "peak_rss_mb": rss}


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5_000, help="per MQTT run (5,000)")
    parser.add_argument(
        "--direct-messages", type=int, default=2_000, help="direct, REST and COPY (2,000)"
    )
    parser.add_argument("--batch", type=int, default=500, help="messages per transaction (500)")
    parser.add_argument("--batch-ms", type=int, default=100, help="worker batch time (100 ms)")
    parser.add_argument("--rest-batch", type=int, default=1000, help="messages per call (1000)")
    parser.add_argument(
        "--workers", default="1,2", help="worker counts to run, comma-separated (1,2)"
    )
    parser.add_argument("--skip", default="", help="paths to skip: copy,direct,rest,mqtt")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="progress to stderr, JSON only")
    args = parser.parse_args(argv)
    log = log_to(args.json)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    os.environ.setdefault("DATABASE_URL", DEFAULT_DB_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")
    # Reactions after commit are queued, not run here (a real broker when configured).
    if not os.environ.get("CELERY_BROKER_URL"):
        os.environ["CELERY_BROKER_URL"] = "memory://"
        os.environ["CELERY_RESULT_BACKEND"] = "cache+memory://"
    ensure_pg_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    if "bench" not in db_name():
        log(f"refusing to use {db_name()}: a bench database's name contains 'bench'")
        return 2
    if connection.vendor != "postgresql":
        log("bench.ingest measures on PostgreSQL (COPY is the reference): set DATABASE_URL")
        return 2
    mqtt_url = settings.MQTT_URL or DEFAULT_MQTT_URL
    call_command("migrate", verbosity=0)
    wipe()
    line, station, chars = plant()
    char_ids = [chars[c[0]].pk for c in EOL_CHARACTERISTICS]
    rnd = random.Random(args.seed)
    t0 = datetime.now(UTC) - timedelta(hours=2)
    n_direct = args.direct_messages
    runs = [int(w) for w in args.workers.split(",") if w.strip()] if "mqtt" not in skip else []
    need = 3 * n_direct + len(runs) * args.messages
    log(f"plant: {MEASUREMENTS} characteristics at bench/l2-cyl/eol; {need} cells")
    cells = cells_create(line, 1, need)
    connection.cursor().execute("ANALYZE")
    figures: dict = {
        "db": connection.vendor,
        "database": db_name(),
        "mqtt_url": mqtt_url,
        "measurements_per_message": MEASUREMENTS,
        "batch": args.batch,
        "messages_direct": n_direct,
        "messages_mqtt": args.messages,
    }
    lost = duplicated = 0
    taken = 0

    def take(n: int) -> list[tuple[int, str]]:
        nonlocal taken
        taken += n
        return cells[taken - n : taken]

    copy_cells, direct_cells, rest_cells = take(n_direct), take(n_direct), take(n_direct)
    if "copy" not in skip:
        rows = measurement_rows(copy_cells, station.pk, char_ids, rnd, t0)
        figures["copy_rows_per_s"] = round(run_copy(rows))
        log(f"copy: {len(rows)} rows, {figures['copy_rows_per_s']} rows/s")
    if "direct" not in skip:
        payloads = messages("direct", direct_cells, rnd, t0)
        rate = run_direct(payloads, args.batch)
        figures["direct_msgs_per_s"] = round(rate)
        figures["direct_measurements_per_s"] = round(rate * MEASUREMENTS)
        check = loss_and_duplication("direct", len(payloads))
        lost, duplicated = lost + check["lost"], duplicated + check["duplicated"]
        log(f"direct: {rate:.0f} msg/s, {rate * MEASUREMENTS:.0f} measurements/s, {check}")
    if "rest" not in skip:
        payloads = messages("rest", rest_cells, rnd, t0)
        rate = run_rest(payloads, args.rest_batch)
        figures["rest_msgs_per_s"] = round(rate)
        figures["rest_measurements_per_s"] = round(rate * MEASUREMENTS)
        check = loss_and_duplication("rest", len(payloads))
        lost, duplicated = lost + check["lost"], duplicated + check["duplicated"]
        log(f"rest: {rate:.0f} msg/s, {rate * MEASUREMENTS:.0f} measurements/s, {check}")
    rss = 0.0
    logdir = ROOT / "var" / "bench-ingest"
    logdir.mkdir(parents=True, exist_ok=True)
    best = 0.0
    for w in runs:
        source = f"mqtt{w}"
        payloads = messages(source, take(args.messages), rnd, t0)
        result = run_mqtt(
            payloads,
            source,
            workers=w,
            mqtt_url=mqtt_url,
            batch=args.batch,
            batch_ms=args.batch_ms,
            logdir=logdir,
            log=log,
        )
        check = loss_and_duplication(source, len(payloads))
        lost, duplicated = lost + check["lost"], duplicated + check["duplicated"]
        key = f"mqtt_{w}_worker{'s' if w > 1 else ''}"
        figures[f"{key}_msgs_per_s"] = round(result["msgs_per_s"])
        figures[f"{key}_measurements_per_s"] = round(result["msgs_per_s"] * MEASUREMENTS)
        figures[f"{key}_lost"] = check["lost"]
        figures[f"{key}_duplicated"] = check["duplicated"]
        best = max(best, result["msgs_per_s"])
        rss = max(rss, result["peak_rss_mb"])
    if runs:
        figures["mqtt_msgs_per_s"] = round(best)
        figures["mqtt_measurements_per_s"] = round(best * MEASUREMENTS)
        figures["worker_peak_rss_mb"] = rss
    if "direct_measurements_per_s" in figures and "copy_rows_per_s" in figures:
        figures["pipeline_to_copy_ratio"] = round(
            figures["direct_measurements_per_s"] / figures["copy_rows_per_s"], 3
        )
    figures["lost"] = lost
    figures["duplicated"] = duplicated
    if not args.json:
        for key, value in figures.items():
            print(f"{key:>36}: {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
