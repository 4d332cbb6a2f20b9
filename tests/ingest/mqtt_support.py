"""Helpers of the MQTT transport tests: envelopes, a publisher, worker processes
(``manage.py ingest_mqtt``) on the test database, and a private Mosquitto for the tests
that restart their broker."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import paho.mqtt.client as mqtt
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from qms.ingest.envelope import build
from qms.mqtt.broker import connect_properties, new_client, parse_url
from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]
FILL_TOPIC = "qms/gf1/l1-pri/fill/process_result"
FILL_MASS = "electrolyte-fill-mass"  # g, 410 +- 1 % in tests.factories.build_plant


def require_mosquitto() -> str:
    require_service("Mosquitto (MQTT_URL)", bool(settings.MQTT_URL))
    return settings.MQTT_URL


def require_postgresql() -> None:
    """Worker processes need a database they can see: the in-memory SQLite test database
    is private to the test process."""
    require_service("PostgreSQL", connection.vendor == "postgresql")


def require_mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    require_service("mosquitto binary", path is not None)
    return str(path)


def wait_for(predicate: Callable[[], object], *, timeout_s: float, what: str, every_s=0.1):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- envelopes ------------------------------------------------------------------------------


def id_prefix(run: str) -> str:
    return f"fill-01:{run}:"


def cell_serial(run: str, n: int) -> str:
    """Cell ``n`` of a run: P1 + year 26 + week 48 + a 7-digit counter starting at a
    number of the run's own (the shared broker may carry other runs' messages)."""
    return f"P12648{int(run[:5], 16) % 8_000_000 + 1_000_000 + n:07d}"


def fill_result(
    n: int,
    *,
    mass_g: float,
    run: str,
    sent_at: datetime | None = None,
    station: str = "fill",
) -> dict:
    """A fill station's process_result for cell ``n``: the electrolyte fill mass (g), the
    cell created on this first visit. ``run`` keeps message ids and serials apart between
    test runs."""
    return build(
        kind="process_result",
        site="gf1",
        line="l1-pri",
        station=station,
        equipment="cw-1",
        source="FILL-01 PLC",
        message_id=f"{id_prefix(run)}{n:06d}",
        unit=cell_serial(run, n),
        sent_at=sent_at or timezone.now() - timedelta(seconds=30),
        payload={
            "unit_kind": "cell",
            "result": "ok" if 405.9 <= mass_g <= 414.1 else "nok",
            "program": "FILL-105AH-v3",
            "measurements": [{"characteristic": FILL_MASS, "value": mass_g, "unit": "g"}],
        },
    )


def mass_for(n: int) -> float:
    """Fill masses around 410 g; every 25th cell over the 414.1 g upper limit."""
    return 415.2 if n % 25 == 7 else round(408.0 + (n % 13) * 0.4, 1)


def encode(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


# --- publishing -----------------------------------------------------------------------------


class Publisher:
    """A station-side MQTT 5 client publishing at QoS 1; it keeps what the broker has not
    acknowledged and sends it again after a reconnect (paho's own behaviour)."""

    def __init__(self, url: str, *, client_id: str | None = None, reconnect_s: int = 1):
        address = parse_url(url)
        self.client = new_client(address, client_id=client_id or f"t-pub-{uuid.uuid4().hex[:8]}")
        self.client.reconnect_delay_set(reconnect_s, 2 * reconnect_s)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.infos: list[mqtt.MQTTMessageInfo] = []
        # PUBACKs by packet id. ``MQTTMessageInfo.is_published`` raises for a message first
        # tried while the connection was down, even once it went out after the reconnect.
        self.acked: set[int] = set()
        self.client.on_publish = lambda client, userdata, mid, rc, props: self.acked.add(mid)
        self.client.connect(address.host, address.port, keepalive=10)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.infos.append(self.client.publish(topic, payload, qos=1))

    def wait_all(self, timeout_s: float = 20) -> None:
        wait_for(
            lambda: all(i.mid in self.acked for i in self.infos),
            timeout_s=timeout_s,
            what="the broker to acknowledge every published message",
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_stream(
    publisher: Publisher,
    docs: list[dict],
    *,
    per_s: float,
    at: dict[int, Callable[[], None]] | None = None,
) -> threading.Thread:
    """Publish ``docs`` at about ``per_s`` per second in a thread; ``at[i]`` runs right
    before message ``i`` (a kill, a broker restart)."""

    def run():
        started = time.monotonic()
        for i, doc in enumerate(docs):
            if at and i in at:
                at[i]()
            publisher.publish(topic_of(doc), encode(doc))
            ahead = started + (i + 1) / per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def topic_of(doc: dict) -> str:
    return f"qms/{doc['site']}/{doc['line']}/{doc['station']}/{doc['kind']}"


def session_clear(url: str, client_id: str) -> None:
    """End a worker's persistent session on the broker (a clean start with no expiry)."""
    address = parse_url(url)
    client = new_client(address, client_id=client_id)
    try:
        client.connect(
            address.host,
            address.port,
            clean_start=True,
            properties=connect_properties(session_expiry_s=0),
        )
    except OSError:
        return
    client.loop_start()
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


# --- worker processes -----------------------------------------------------------------------


def database_url() -> str:
    """The test database (the one this test writes its plant to), for a subprocess."""
    cfg = connection.settings_dict
    auth = quote(cfg["USER"] or "postgres")
    if cfg.get("PASSWORD"):
        auth += ":" + quote(cfg["PASSWORD"])
    host = cfg.get("HOST") or "127.0.0.1"
    port = cfg.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{cfg['NAME']}"


class WorkerProcess:
    """``manage.py ingest_mqtt`` as a real process on the test database."""

    def __init__(
        self,
        *,
        url: str,
        group: str,
        client_id: str,
        log_dir: Path,
        batch_size: int = 50,
        batch_ms: int = 50,
        celery_broker_url: str = "",
    ):
        self.url, self.group, self.client_id = url, group, client_id
        self.celery_broker_url = celery_broker_url
        self.batch_size, self.batch_ms = batch_size, batch_ms
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_path: Path | None = None

    def start(self) -> WorkerProcess:
        self.starts += 1
        self.log_path = self.log_dir / f"{self.client_id}.{self.starts}.log"
        env = dict(os.environ)
        env |= {
            "DATABASE_URL": database_url(),
            "MQTT_URL": self.url,
            # Reactions (spec limits -> hold) run inside the worker unless a Celery broker
            # is given: then they are queued there for a Celery worker.
            "CELERY_BROKER_URL": self.celery_broker_url,
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("QMS_REQUIRE_SERVICES", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 (fixed argv)
                [
                    sys.executable,
                    str(ROOT / "manage.py"),
                    "ingest_mqtt",
                    "--group",
                    self.group,
                    "--client-id",
                    self.client_id,
                    "--batch-size",
                    str(self.batch_size),
                    "--batch-ms",
                    str(self.batch_ms),
                    "--session-expiry-s",
                    "600",
                    "--log-every",
                    "10",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def wait_subscribed(self, timeout_s: float = 20) -> None:
        def ready():
            if self.proc.poll() is not None:
                pytest.fail(f"worker {self.client_id} exited:\n{self.log()}")
            return "subscribed $share/" in self.log()

        wait_for(ready, timeout_s=timeout_s, what=f"worker {self.client_id} to subscribe")

    def kill(self) -> None:
        """kill -9: no chance to commit, acknowledge or disconnect."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            pytest.fail(f"worker {self.client_id} did not stop on SIGTERM:\n{self.log()}")


class OwnBroker:
    """A private Mosquitto on a free port, with persistence, that a test may stop and start
    (the shared broker is never restarted)."""

    def __init__(self, binary: str, workdir: Path):
        self.binary, self.workdir = binary, workdir
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        (workdir / "data").mkdir(exist_ok=True)
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # Started as root, mosquitto would switch to its own user, which cannot write
            # the persistence file into this test's private directory.
            f"user {getpass.getuser()}\n"
            "persistence true\n"
            f"persistence_location {workdir / 'data'}/\n"
            "autosave_interval 1\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 (fixed argv)
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return False
            return True

        wait_for(listening, timeout_s=10, what=f"mosquitto on port {self.port}")

    def stop(self) -> None:
        """A clean stop: Mosquitto writes its persistence file (sessions, queued messages)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
