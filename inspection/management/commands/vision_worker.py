"""Run the vision worker of one camera: inspect every frame, stop the line when a rule says so.

    python manage.py vision_worker --station COAT-01 --source dir:/var/lib/celltrace/cam1
    python manage.py vision_worker --station GF1/CATH-1/COAT-01 --camera cam1 --source mqtt

A long-running process beside the web and ingest workers, one per camera. It reads the
camera's ``InspectionStation`` record (optics, encoder, fail-safe budget, commissioning band,
rules, rollers, model, retention) once at start, loads and checks the model (sha256 against
the registry: a mismatch makes every frame ``uninspected``, never a guess), warms it up and
runs :class:`inspection.vision.pipeline.Pipeline` on the source.

Results go out as ``inspection`` envelopes: published on ``qms/<site>/<line>/<station>/
inspection`` when ``MQTT_URL`` is set (the ingest workers apply them), else applied in
process with :func:`qms.ingest.services.ingest_raw` on the emission thread. A stop is a
``line_stop`` command through :func:`qms.ingest.commands.station_command_send`, sent at once
from the inspection thread. Unreadable frames become dead letters (transport ``vision``).
SIGTERM or SIGINT stops it cleanly: queued results are delivered first.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from pathlib import Path

import cv2
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)

from inspection.models import InspectionStation
from inspection.vision.model import ModelError, VisionModel
from inspection.vision.pipeline import (
    Emitter,
    ModelIdentity,
    Pipeline,
    Runner,
    StopRequest,
    WorkerConfig,
)
from inspection.vision.rules import RulesError, parse, parse_rollers
from inspection.vision.screen import FlatField, FlatFieldError
from inspection.vision.sources import DirectorySource, MqttSource
from qms.ingest.commands import station_command_send
from qms.ingest.services import RawMessage, dead_letter_record, ingest_raw, transport_actor

logger = logging.getLogger("celltrace.vision")

TRANSPORT = "vision"


def camera_find(station: str, camera: str | None) -> InspectionStation:
    """The camera record named by ``CODE``, ``LINE/CODE`` or ``SITE/LINE/CODE`` (and the
    camera slug when the station has several)."""
    parts = station.split("/")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise CommandError(f"--station {station!r}: give CODE, LINE/CODE or SITE/LINE/CODE.")
    qs = InspectionStation.objects.select_related(
        "station__line__site", "model", "shadow_model"
    ).filter(station__code__iexact=parts[-1])
    if len(parts) >= 2:
        qs = qs.filter(station__line__code__iexact=parts[-2])
    if len(parts) == 3:
        qs = qs.filter(station__line__site__code__iexact=parts[0])
    if camera:
        qs = qs.filter(camera=camera)
    found = list(qs)
    if not found:
        raise CommandError(
            f"No vision camera at station {station!r}" + (f" named {camera!r}." if camera else ".")
        )
    if len(found) > 1:
        names = ", ".join(
            f"{c.station.line.site.code}/{c.station.line.code}/{c.station.code} {c.camera}"
            for c in found
        )
        raise CommandError(f"{station!r} names several cameras ({names}): say which.")
    return found[0]


def worker_config(cam: InspectionStation) -> WorkerConfig:
    """The pipeline's settings from the camera record; CommandError on bad rules."""
    try:
        rules = parse(cam.rules or {})
        rollers = parse_rollers(cam.rollers or [])
    except RulesError as exc:
        raise CommandError(f"The camera's {exc.field} is not usable: {exc.message}") from exc
    line = cam.station.line
    return WorkerConfig(
        site=line.site.code,
        line=line.code,
        station=cam.station.code,
        camera=cam.camera,
        substrate=cam.substrate,
        pixel_pitch_um=cam.pixel_pitch_um,
        frame_width_px=cam.frame_width_px,
        frame_height_px=cam.frame_height_px,
        lane_width_mm=cam.lane_width_mm,
        lane_offset_mm=cam.lane_offset_mm,
        encoder_counts_per_m=cam.encoder_counts_per_m,
        max_gap_m=cam.max_gap_m,
        latency_budget_ms=float(cam.latency_budget_ms),
        heartbeat_timeout_s=cam.heartbeat_timeout_s,
        grey_band_low=cam.grey_band_low,
        grey_band_high=cam.grey_band_high,
        noise_band_high=cam.noise_band_high,
        rules=rules,
        rollers=rollers,
        frame_retention=cam.frame_retention,
        source=f"vision-worker {cam.station.code}/{cam.camera}",
    )


def load_model(
    cam: InspectionStation, *, manifest: str | None, threads: int
) -> tuple[VisionModel | None, ModelIdentity, str | None]:
    """The camera's model, loaded and checked against the registry's sha256; on a refusal
    None with the reason, and the identity results will name."""
    record = cam.model
    onnx = None
    if manifest:
        path = Path(manifest)
        expected = record.sha256 if record is not None else None
    elif record is not None:
        path, onnx = record.manifest_path(), record.onnx_path()
        expected = record.sha256
    else:
        raise CommandError(f"Camera {cam} has no model: assign one, or give --model-manifest.")
    try:
        model = VisionModel.load(
            path, onnx_path=onnx, intra_op_threads=threads, expected_sha256=expected
        )
    except ModelError as exc:
        logger.error("model refused (%s): every frame will be reported uninspected", exc)
        if record is not None:
            identity = ModelIdentity(
                record.name, record.version, record.sha256, record.threshold_set
            )
        else:
            try:
                doc = json.loads(path.read_text())
                identity = ModelIdentity(doc["name"], doc["version"], doc["sha256"])
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise CommandError(f"Model {path} is not usable: {exc}") from err
        return None, identity, str(exc)
    model.warm_up(batch=32)
    identity = ModelIdentity(model.name, model.version, model.sha256, model.threshold_set)
    return model, identity, None


def _db_retry(fn, attempts: int = 5, pause_s: float = 0.05):
    """Run a write from the inspection thread, again after a transient database error (a
    lock held by the emission thread, a dropped connection): a stop must not be lost to
    one."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (OperationalError, InterfaceError):
            if attempt == attempts:
                raise
            logger.warning("database busy; retrying (%d of %d)", attempt, attempts)
            if not connection.in_atomic_block:
                connection.close()
            time.sleep(pause_s * attempt)
    return None


class _MqttEmit:
    """Publishes envelopes at QoS 1 on one connection and waits for each PUBACK."""

    def __init__(self, url: str, client_id: str, timeout_s: float = 10.0):
        from qms.mqtt.broker import connect_properties, new_client, parse_url

        self.address = parse_url(url)
        self.timeout_s = timeout_s
        self.client = new_client(self.address, client_id=client_id)
        self.client.connect(
            self.address.host,
            self.address.port,
            keepalive=30,
            clean_start=True,
            properties=connect_properties(session_expiry_s=0),
        )
        self.client.loop_start()

    def __call__(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(self.timeout_s)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK for {topic} within {self.timeout_s:g} s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def build_pipeline(
    cam: InspectionStation,
    *,
    threads: int = 1,
    manifest: str | None = None,
    flat_field: str | None = None,
    mqtt_url: str = "",
) -> tuple[Pipeline, list]:
    """The camera's pipeline with the product's emit, stop and reject, and what to close at
    the end."""
    config = worker_config(cam)
    cv2.setNumThreads(max(1, threads))
    model, identity, model_error = load_model(cam, manifest=manifest, threads=threads)
    shadow = None
    if cam.shadow_model is not None and model is not None:
        try:
            shadow = VisionModel.load(
                cam.shadow_model.manifest_path(),
                onnx_path=cam.shadow_model.onnx_path(),
                intra_op_threads=threads,
                expected_sha256=cam.shadow_model.sha256,
            )
            shadow.warm_up(batch=32)
        except ModelError as exc:
            logger.warning("shadow model %s not run: %s", cam.shadow_model, exc)
    flat = None
    if not flat_field and cam.flat_field:
        flat_field = cam.flat_field.path
    if flat_field:
        try:
            flat = FlatField.load(flat_field)
        except FlatFieldError as exc:
            raise CommandError(str(exc)) from exc
    actor = transport_actor(TRANSPORT)
    station = cam.station
    origin = f"vision-worker:{config.station}/{config.camera}"
    closers = []

    if mqtt_url:
        publisher = _MqttEmit(mqtt_url, f"vision-emit-{config.station}-{uuid.uuid4().hex[:8]}")
        closers.append(publisher.close)
        topic = f"qms/{config.site}/{config.line}/{config.station}/inspection"

        def emit(envelope: dict) -> None:
            publisher(topic, json.dumps(envelope, separators=(",", ":")).encode())

    else:

        def emit(envelope: dict) -> None:
            close_old_connections()
            raw = json.dumps(envelope, separators=(",", ":")).encode()
            outcome = ingest_raw([RawMessage(payload=raw, transport=TRANSPORT, origin=origin)])[0]
            if outcome.status == "rejected":
                logger.warning(
                    "result %s refused by the ingest (dead letter %s): %s",
                    envelope["message_id"],
                    outcome.dead_letter_id,
                    outcome.reason,
                )

    def stop(request: StopRequest) -> None:
        committed: list[bool] = []

        def send():
            if committed:
                return  # recorded already; only its delivery (after the commit) failed
            with transaction.atomic():
                # Registered first, so it runs first of the after-commit callbacks.
                transaction.on_commit(lambda: committed.append(True))
                station_command_send(
                    station=station,
                    kind="line_stop",
                    reason=request.reason,
                    actor=actor,
                    reference=request.message_id[:120],
                    unit_serials=[request.coil],
                )

        _db_retry(send)

    def reject(raw: bytes, reason: str, field: str) -> None:
        _db_retry(
            lambda: dead_letter_record(
                raw=raw,
                transport=TRANSPORT,
                origin=origin,
                reason=reason,
                field=field,
                kind="inspection",
            )
        )

    # Resolved on the emission thread: its own connection is closed when it ends.
    emitter = Emitter(emit, on_thread_exit=lambda: connection.close())
    pipeline = Pipeline(
        config,
        model=model,
        model_error=model_error,
        identity=identity,
        stop=stop,
        reject=reject,
        flat=flat,
        shadow=shadow,
        emitter=emitter,
    )
    return pipeline, closers


class Command(BaseCommand):
    help = "Inspect one camera's frames (directory or MQTT), report results, stop the line."

    def add_arguments(self, parser):
        parser.add_argument(
            "--station", required=True, help="Station: CODE, LINE/CODE or SITE/LINE/CODE."
        )
        parser.add_argument("--camera", default=None, help="Camera, when the station has several.")
        parser.add_argument(
            "--source",
            required=True,
            help="dir:PATH (PNG + JSON sidecar per frame) or mqtt "
            "(vision/<site>/<line>/<station>/<camera>/frame, MQTT_URL).",
        )
        parser.add_argument(
            "--threads", type=int, default=1, help="onnxruntime and OpenCV threads (1)."
        )
        parser.add_argument(
            "--model-manifest", default=None, help="Run this model manifest instead."
        )
        parser.add_argument(
            "--flat-field",
            default=None,
            help="The commissioning flat field (.npz); default: the one on the camera record.",
        )
        parser.add_argument("--max-frames", type=int, default=None, help="Stop after N frames.")
        parser.add_argument(
            "--run-seconds", type=float, default=None, help="Stop after this many seconds."
        )
        parser.add_argument(
            "--results",
            choices=["auto", "mqtt", "direct"],
            default="auto",
            help="Where results go: the MQTT ingest topic (for the ingest_mqtt workers), or "
            "straight into this process's ingest (direct); auto: MQTT when MQTT_URL is set.",
        )
        parser.add_argument(
            "--keep-files",
            action="store_true",
            help="Directory source: move inspected frames to done/ instead of deleting them.",
        )

    def handle(self, *args, **options):
        source_spec = options["source"]
        mqtt_url = getattr(settings, "MQTT_URL", "")
        if source_spec == "mqtt":
            if not mqtt_url:
                raise CommandError("--source mqtt needs MQTT_URL.")
        elif not source_spec.startswith("dir:") or not source_spec[4:]:
            raise CommandError("--source is dir:PATH or mqtt.")
        if options["threads"] < 1:
            raise CommandError("--threads must be at least 1.")
        if options["results"] == "mqtt" and not mqtt_url:
            raise CommandError("--results mqtt needs MQTT_URL.")
        emit_url = "" if options["results"] == "direct" else mqtt_url
        cam = camera_find(options["station"], options["camera"])
        pipeline, closers = build_pipeline(
            cam,
            threads=options["threads"],
            manifest=options["model_manifest"],
            flat_field=options["flat_field"],
            mqtt_url=emit_url,
        )
        if source_spec == "mqtt":
            source = MqttSource(mqtt_url, pipeline.config)
        else:
            try:
                source = DirectorySource(
                    source_spec[4:], pipeline.config, keep=options["keep_files"]
                )
            except FileNotFoundError as exc:
                pipeline.close()
                raise CommandError(str(exc)) from exc
        runner = Runner(
            pipeline,
            source,
            max_frames=options["max_frames"],
            run_seconds=options["run_seconds"],
        )
        if threading.current_thread() is threading.main_thread():

            def on_signal(signum, frame):
                runner.request_stop()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        self.stderr.write(
            f"vision worker {pipeline.config.station}/{pipeline.config.camera}: model "
            f"{pipeline.identity.name} {pipeline.identity.version}"
            + (f" REFUSED ({pipeline.model_error})" if pipeline.model is None else "")
            + f", source {source_spec}"
        )
        try:
            stats = runner.run()
        finally:
            for close in closers:
                close()
        self.stderr.write(
            f"frames {stats.frames}: inspected {stats.inspected}, uninspected "
            f"{stats.uninspected}, rejected {stats.rejected}, defects {stats.defects}, "
            f"stops {stats.stops}"
        )
