"""SPC benchmark: the engine's figures, detection delay through the product, and the time from
an alarm to the hold it causes on the real services.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/celltrace_bench_spc \\
    CELERY_BROKER_URL=redis://127.0.0.1:6379/13 .venv/bin/python -m bench.spc --json

* ``points_per_s``, ``arl0_default``, ``arl_1_5_sigma_default``, ``shewhart_arl_1_5_sigma``
  (and the ARL method, states and errors): from :mod:`bench.spc_engine` (engine alone, one
  core).
* ``detection_delay_samples_sim``: a simulated cathode coater (areal weight 23.0 mg/cm²
  +-1.5 %, beta gauge, sigma from Cpk 1.33) reports one value every 10 s as envelopes through
  :func:`qms.ingest.services.ingest_raw`; control limits come from 100 in-control values,
  approved by a quality engineer; then 50 in-control values and a lasting drift of +1.5
  sigma begins. The delay is the number of drifted values up to and including the one whose
  evaluation raised the first alarm (any rule of the default configuration) at or after
  the drift's start, through the real path (ingest, event, SPC task, alarm); median and
  quartiles over ``--runs`` runs, each on a characteristic of its own (fresh limits and
  chart state), seeds 1..runs. With all eight Nelson rules on (the default) the first alarm
  after the drift's start is sometimes a run rule that an in-control run had nearly
  completed (the default configuration signals about every 47 in-control values);
  ``detection_delay_cusum_samples_sim`` is the same for the drift detector alone (CUSUM
  k 0.75, h 3.34: ARL 5.2 at 1.5 sigma).
* ``alarm_to_hold_ms``: with ``CELERY_BROKER_URL`` set, a Celery worker process
  (``celery -A qms worker``) on that broker evaluates and reacts: per run, the time from the
  alarm's ``raised_at`` to the window hold's ``placed_at`` (both written by the worker), and
  ``measurement_to_hold_ms`` from the commit of the drifted value that raised it to the hold.
  Without a broker the tasks run in this process and the figure is left out.

One JSON object is printed on the last line. The database name must contain ``bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.trace import db_name, ensure_pg_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB_URL = "postgres://postgres@127.0.0.1:5432/celltrace_bench_spc"
NOMINAL, LSL, USL = 23.0, 22.655, 23.345  # mg/cm², +-1.5 %
SIGMA = (USL - LSL) / 2 / (3 * 1.33)  # Cpk 1.33, centred
BASELINE, IN_CONTROL, DRIFT_MAX = 100, 50, 80
STEP_S = 10


def log_to(json_only: bool):
    def log(msg: str) -> None:
        print(msg, file=sys.stderr if json_only else sys.stdout, flush=True)

    return log


def plant():
    from qms.choices import CellFormat, IdentificationMethod, ProcessStep
    from qms.models import Line, Site, Station

    site, _ = Site.objects.get_or_create(
        code="bench", defaults={"name": "Benchmark plant", "country": "DE"}
    )
    line, _ = Line.objects.get_or_create(
        site=site,
        code="l2-spc",
        defaults={
            "name": "Cylindrical line 2, electrode shop",
            "cell_format": CellFormat.CYLINDRICAL,
            "identification_method": IdentificationMethod.LASER_MARK,
            "serial_scheme": r"EC2-C-[0-9]{6}",
        },
    )
    station, _ = Station.objects.get_or_create(
        line=line,
        code="coat-c",
        defaults={
            "name": "Cathode coater",
            "process_step": ProcessStep.COATING,
            "sequence": 20,
            "command_transport": "none",
        },
    )
    return line, station


def characteristic(station, run: int):
    """A cathode areal-weight characteristic of its own for each run (SC)."""
    from qms.choices import SpecialCharacteristic
    from qms.models import Characteristic

    char, _ = Characteristic.objects.get_or_create(
        station=station,
        code=f"areal-weight-{run:03d}",
        defaults={
            "name": f"Cathode areal weight, lane {run}",
            "unit": "mg/cm²",
            "nominal": NOMINAL,
            "lsl": LSL,
            "usl": USL,
            "measurement_method": "beta gauge",
            "sample_size": 1,
            "sample_frequency": "every 10 s",
            "reaction_plan": "Hold the coil segment; stop the coater; MRB.",
            "special_class": SpecialCharacteristic.SC,
        },
    )
    return char


def envelopes(run: int, char_code: str, values, *, start: datetime, first: int) -> list[bytes]:
    """One process result per value: a coil (created at the coater) with its areal weight."""
    from qms.ingest.envelope import build

    out = []
    for i, value in enumerate(values):
        n = first + i
        doc = build(
            kind="process_result",
            site="bench",
            line="l2-spc",
            station="coat-c",
            payload={
                "result": "ok",
                "unit_kind": "coil",
                "length_m": 1500.0,
                "measurements": [
                    {"characteristic": char_code, "value": round(float(value), 4), "unit": "mg/cm²"}
                ],
            },
            source="COATER-C PLC",
            message_id=f"bench-spc-{run}-{n:06d}",
            sent_at=start + timedelta(seconds=STEP_S * i),
            unit=f"EC2-C-{run * 10_000 + n:06d}",
        )
        out.append(json.dumps(doc).encode())
    return out


def send(payloads: list[bytes]) -> None:
    from django.db import transaction

    from qms.ingest.services import RawMessage, ingest_raw

    with transaction.atomic():
        outcomes = ingest_raw([RawMessage(p, "direct", "bench") for p in payloads])
    bad = [o for o in outcomes if o.status != "accepted"]
    if bad:
        raise RuntimeError(f"ingest refused: {bad[0]}")


def wipe() -> None:
    """Empty what earlier runs wrote (the digital thread, SPC, holds, ingest bookkeeping)."""
    from django.db import connection

    prefixes = ("genealogy_", "spc_", "compliance_hold", "compliance_historicalhold",
                "compliance_alarmreaction", "ingest_")  # fmt: skip
    tables = [t for t in connection.introspection.table_names() if t.startswith(prefixes)]
    with connection.cursor() as cur:
        cur.execute(f"TRUNCATE {', '.join(tables)} CASCADE")


def one_run(run: int, station, engineer, *, t0: datetime, worker: bool, log) -> dict:
    from compliance.models import AlarmReaction, Hold
    from spc.services import limits_approve, limits_propose

    char = characteristic(station, run)
    rng = np.random.default_rng(run)
    base = rng.normal(NOMINAL, SIGMA, BASELINE)
    start = t0 + timedelta(hours=run)
    send(envelopes(run, char.code, base, start=start, first=0))
    end = start + timedelta(seconds=STEP_S * BASELINE)
    draft = limits_propose(
        characteristic=char, baseline_from=start, baseline_to=end, actor=engineer
    )
    limits_approve(
        limits=draft, actor=engineer, reason="Baseline, coater C, no assignable causes",
        monitor_from=end,
    )  # fmt: skip
    ok = rng.normal(NOMINAL, SIGMA, IN_CONTROL)
    drift = rng.normal(NOMINAL + 1.5 * SIGMA, SIGMA, DRIFT_MAX)
    send(envelopes(run, char.code, ok, start=end, first=BASELINE))
    drift_start = end + timedelta(seconds=STEP_S * IN_CONTROL)
    if worker:  # let the worker finish the in-control part first
        _wait(lambda: not _pending_evaluation(char), 30)
    sent_at: dict[int, float] = {}
    found = None
    for k in range(DRIFT_MAX):  # one value at a time, as a gauge sends them
        payload = envelopes(
            run,
            char.code,
            drift[k : k + 1],
            start=drift_start + timedelta(seconds=STEP_S * k),
            first=BASELINE + IN_CONTROL + k,
        )
        send(payload)
        sent_at[k] = time.time()
        if worker:
            time.sleep(0.05)
        found = _first_alarm(char, drift_start)
        if _first_alarm(char, drift_start, rule="cusum") is not None or (worker and k > 40):
            break
    if worker and found is None:
        _wait(lambda: _first_alarm(char, drift_start) is not None, 30)
        found = _first_alarm(char, drift_start)
    if found is None:
        return {"delay": None}
    delay = _delay(found, drift_start)
    out: dict = {"delay": delay, "rule": found.rule}
    cusum = _first_alarm(char, drift_start, rule="cusum")
    if worker and cusum is None:
        _wait(lambda: _first_alarm(char, drift_start, rule="cusum") is not None, 30)
        cusum = _first_alarm(char, drift_start, rule="cusum")
    out["cusum_delay"] = _delay(cusum, drift_start) if cusum is not None else None
    if worker:
        ok_hold = _wait(
            lambda: AlarmReaction.objects.filter(alarm=found, hold__isnull=False).exists(), 30
        )
        if ok_hold:
            hold = Hold.objects.get(
                alarm_reactions__alarm=found, alarm_reactions__action="hold_window"
            )
            found.refresh_from_db()
            out["alarm_to_hold_ms"] = (hold.placed_at - found.raised_at).total_seconds() * 1000
            out["measurement_to_hold_ms"] = (hold.placed_at.timestamp() - sent_at[delay - 1]) * 1000
    log(f"  run {run}: alarm {found.rule} after {delay} drifted values {out}")
    return out


def _first_alarm(char, drift_start: datetime, *, rule: str | None = None):
    """The first alarm (of ``rule``) raised on a value measured at or after the drift began."""
    from spc.models import SpcAlarm

    alarms = SpcAlarm.objects.filter(rule=rule) if rule else SpcAlarm.objects.all()
    return (
        alarms.filter(characteristic=char, trigger_measurement__measured_at__gte=drift_start)
        .select_related("trigger_measurement")
        .order_by("trigger_measurement__measured_at")
        .first()
    )


def _delay(alarm, drift_start: datetime) -> int:
    """Drifted values up to and including the one that raised ``alarm``."""
    seconds = (alarm.trigger_measurement.measured_at - drift_start).total_seconds()
    return int(seconds // STEP_S) + 1


def _pending_evaluation(char) -> bool:
    from genealogy.models import Measurement
    from spc.models import ChartCheckpoint

    last = Measurement.objects.filter(characteristic=char).order_by("-measured_at").first()
    head = ChartCheckpoint.objects.filter(characteristic=char).order_by("-position").first()
    return last is not None and (head is None or head.through_measured_at < last.measured_at)


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def start_worker(logdir: Path) -> subprocess.Popen:
    env = dict(os.environ)
    logdir.mkdir(parents=True, exist_ok=True)
    log = open(logdir / "celery-worker.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "qms", "worker", "--pool", "solo",
            "-Q", "spc,ingest,default,reports", "-l", "WARNING", "-n", "bench-spc@%h",
        ],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="drift runs (15)")
    parser.add_argument("--json", action="store_true", help="progress to stderr, JSON only")
    parser.add_argument("--skip-engine", action="store_true", help="leave out engine figures")
    args = parser.parse_args(argv)
    log = log_to(args.json)

    figures: dict = {}
    if not args.skip_engine:
        from bench.spc_engine import engine_figures

        log("engine figures ...")
        figures.update(engine_figures())

    os.environ.setdefault("DATABASE_URL", DEFAULT_DB_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")
    worker = bool(os.environ.get("CELERY_BROKER_URL"))
    if os.environ["DATABASE_URL"].startswith("postgres"):
        ensure_pg_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    from compliance.roles import roles_sync
    from qms.celery import app

    if "bench" not in db_name():
        log(f"refusing to use {db_name()}: a bench database's name contains 'bench'")
        return 2
    call_command("migrate", verbosity=0)
    roles_sync()
    wipe()
    from django.contrib.auth.models import Group, User

    engineer, _ = User.objects.get_or_create(username="bench-quality")
    engineer.groups.add(Group.objects.get(name="quality_engineer"))
    engineer = User.objects.get(pk=engineer.pk)  # fresh permission cache
    _, station = plant()
    proc = None
    if worker:
        app.control.purge()
        proc = start_worker(ROOT / "var" / "bench-spc")
        time.sleep(3)
    t0 = datetime.now(UTC) - timedelta(hours=args.runs + 2)
    results = []
    try:
        for run in range(1, args.runs + 1):
            results.append(one_run(run, station, engineer, t0=t0, worker=worker, log=log))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    delays = sorted(r["delay"] for r in results if r["delay"] is not None)
    figures["detection_delay_runs"] = len(results)
    figures["detection_delay_missed"] = sum(r["delay"] is None for r in results)
    if delays:
        q = statistics.quantiles(delays, n=4) if len(delays) > 1 else [delays[0]] * 3
        figures["detection_delay_samples_sim"] = statistics.median(delays)
        figures["detection_delay_q1_q3"] = [q[0], q[2]]
        figures["detection_rules"] = sorted({r["rule"] for r in results if r.get("rule")})
    cusum = sorted(r["cusum_delay"] for r in results if r.get("cusum_delay") is not None)
    if cusum:
        figures["detection_delay_cusum_samples_sim"] = statistics.median(cusum)
        figures["detection_delay_cusum_missed"] = len(results) - len(cusum)
    holds = [r["alarm_to_hold_ms"] for r in results if "alarm_to_hold_ms" in r]
    if holds:
        figures["alarm_to_hold_ms"] = round(statistics.median(holds), 1)
        figures["alarm_to_hold_ms_max"] = round(max(holds), 1)
        figures["measurement_to_hold_ms"] = round(
            statistics.median(
                r["measurement_to_hold_ms"] for r in results if "alarm_to_hold_ms" in r
            ),
            1,
        )
        figures["celery_broker"] = os.environ["CELERY_BROKER_URL"]
    figures["database"] = db_name()
    if not args.json:
        for key, value in figures.items():
            print(f"{key:>32}: {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
