"""``manage.py vision_worker`` on the real database: frames from a directory (and from
Mosquitto when ``MQTT_URL`` is set) through the committed model into inspection results,
coil flags, dead letters and a line-stop command.

The worker's emission thread writes through its own database connection, so these tests
commit (``transaction=True``). Frames are 1024 x 512 px at 20 µm/px: 10.24 mm of coil and
1,024 encoder counts each (100,000 counts/m).
"""

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import cv2
import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from jsonschema import Draft202012Validator, FormatChecker

from genealogy.choices import UnitKind
from genealogy.services import unit_create
from inspection.models import CoilFlag, InspectionResult
from inspection.schema import PAYLOAD_SCHEMA
from inspection.synthetic import frame
from inspection.vision.sources import (
    pack_frame,
    write_frame_files,
    write_heartbeat_file,
)
from qms.ingest.models import CommandKind, DeadLetter, IngestMessage, StationCommand
from qms.mqtt.broker import connect_properties, new_client, parse_url
from tests.conftest import require_service

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

W, H, COUNTS = 1024, 512, 1024
COIL = "CC-260504-007"
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
BROKEN_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def small_camera(camera, quality):
    """The cathode coater's camera with small frames, and particles of 150 µm and more
    stopping the line; a coil under it."""
    camera.frame_width_px = W
    camera.frame_height_px = H
    camera.lane_width_mm = 20.48
    # All frames wait in the folder at once: no backlog on a busy test machine.
    camera.latency_budget_ms = 10_000
    camera.rules = {"classes": {"particle": {"stop_size_um": 150, "stop_count_per_10m": None}}}
    camera.save()
    unit_create(
        kind=UnitKind.COIL,
        serial=COIL,
        actor=quality,
        line=camera.station.line,
        produced_at=T0 - timedelta(hours=1),
        length_m=3000.0,
    )
    return camera


def header(fid: int, camera: str = "cam-c1") -> dict:
    return {
        "coil": COIL,
        "frame_id": fid,
        "encoder_start": fid * COUNTS,
        "encoder_end": (fid + 1) * COUNTS,
        "acquired_at": (T0 + timedelta(milliseconds=20 * fid)).isoformat(),
        "camera": camera,
    }


def png(image) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def clean(fid: int) -> bytes:
    return png(frame(W, H, seed=600 + fid, defects=[])[0])


def with_particle() -> bytes:
    return png(frame(W, H, seed=12, defects=[("particle", 500, 250)])[0])


@pytest.fixture
def frames_dir(tmp_path, settings):
    """Where the camera PC writes (beside the test's model store and media folders). These
    tests store results in process: without MQTT_URL the worker applies its envelopes with
    the ingest service itself (with it, it publishes them: see the MQTT test)."""
    settings.MQTT_URL = ""
    path = tmp_path / "cam-c1"
    path.mkdir()
    return path


def run_worker(*args) -> str:
    err = StringIO()
    call_command("vision_worker", "--station", "coat-c", *args, stderr=err)
    return err.getvalue()


def test_directory_source_end_to_end(small_camera, frames_dir):
    images = {0: clean(0), 1: with_particle(), 2: BROKEN_PNG, 3: clean(3)}
    for fid, data in images.items():
        write_frame_files(frames_dir, header(fid), data)
    write_heartbeat_file(frames_dir, {"coil": COIL, "encoder": 4 * COUNTS, "at": T0.isoformat()})

    log = run_worker("--source", f"dir:{frames_dir}", "--max-frames", "4")

    assert "frames 4: inspected 3, uninspected 1, rejected 1" in log
    results = list(InspectionResult.objects.filter(camera=small_camera).order_by("frame_id"))
    assert [(r.frame_id, r.verdict, r.uninspected_reason) for r in results] == [
        (0, "ok", ""),
        (1, "defect", ""),
        (2, "uninspected", "bad_frame"),
        (3, "ok", ""),
    ]
    assert [(r.coil.serial, r.coil_start_m, r.coil_end_m) for r in results][2] == (
        COIL,
        0.02048,
        0.03072,
    )
    assert all(r.model == small_camera.model for r in results)
    stopped = results[1]
    assert stopped.stopped
    particles = list(stopped.defects.filter(cls="particle"))
    assert len(particles) == 1
    assert particles[0].decision == "stop"
    assert particles[0].crop is not None
    assert 0.0102 < particles[0].md_m < 0.0205
    assert abs(particles[0].cd_mm - 10.01) < 0.2
    # The stop: one line_stop command to the coater, naming the coil and the result.
    (command,) = StationCommand.objects.filter(station=small_camera.station)
    assert command.kind == CommandKind.LINE_STOP
    assert command.unit_serials == [COIL]
    assert command.reference == f"vision:{small_camera.station.line.site.code}:" + (
        f"{small_camera.station.line.code}:coat-c:cam-c1:{COIL}:1"
    )
    assert command.reason == stopped.stop_reason
    # The unreadable frame: a dead letter with its bytes, and its metres held.
    (dead,) = DeadLetter.objects.filter(transport="vision")
    assert bytes(dead.raw) == BROKEN_PNG
    assert (dead.reason, dead.field) == ("the image does not decode (PNG expected)", "image")
    flags = CoilFlag.objects.filter(coil__serial=COIL).order_by("start_m")
    assert {(f.kind, f.action, f.cls) for f in flags} == {
        ("defect", "hold", "particle"),
        ("uninspected", "hold", "bad_frame"),
    }
    assert IngestMessage.objects.filter(transport="vision").count() == 4
    # Inspected frames' files are gone; the rejected one is kept aside.
    left = sorted(p.relative_to(frames_dir).as_posix() for p in frames_dir.rglob("*.*"))
    assert left == ["heartbeat.json", "rejected/2.json", "rejected/2.png"]


def test_a_tampered_model_file_makes_every_frame_uninspected(small_camera, frames_dir):
    onnx = small_camera.model.onnx_path()
    onnx.write_bytes(onnx.read_bytes()[:-16] + b"\x00" * 16)
    for fid in range(2):
        write_frame_files(frames_dir, header(fid), with_particle() if fid else clean(fid))

    log = run_worker("--source", f"dir:{frames_dir}", "--max-frames", "2")

    assert "REFUSED (checksum_mismatch" in log
    results = list(InspectionResult.objects.filter(camera=small_camera).order_by("frame_id"))
    assert [(r.verdict, r.uninspected_reason, r.defect_count) for r in results] == [
        ("uninspected", "model_checksum", 0),
        ("uninspected", "model_checksum", 0),
    ]
    assert results[0].detail.startswith("the model is not verified: checksum_mismatch")
    assert CoilFlag.objects.filter(coil__serial=COIL, kind="uninspected").count() == 2
    assert not StationCommand.objects.exists()  # 20.48 mm is within max_gap_m (0.5 m)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--station", "nowhere", "--source", "dir:/tmp"], "No vision camera at station"),
        (["--station", "coat-c", "--source", "ftp://x"], "--source is dir:PATH or mqtt."),
        (["--station", "coat-c", "--source", "mqtt"], "--source mqtt needs MQTT_URL."),
        (["--station", "coat-c", "--source", "dir:/nonexistent-dir"], "is not a directory"),
        (["--station", "a/b/c/d", "--source", "dir:/tmp"], "give CODE, LINE/CODE"),
        (["--station", "coat-c", "--source", "dir:/tmp", "--threads", "0"], "--threads"),
    ],
)
def test_the_command_refuses_bad_arguments(small_camera, settings, args, message):
    settings.MQTT_URL = ""
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        call_command("vision_worker", *args, stderr=StringIO())
    assert not InspectionResult.objects.exists()
    assert not DeadLetter.objects.exists()


def test_the_command_refuses_a_camera_with_bad_rules_or_no_model(small_camera, frames_dir):
    small_camera.rules = {"classes": {"particle": {"stop_size_um": -5}}}
    small_camera.save()
    with pytest.raises(CommandError, match=r"rules\.classes\.particle\.stop_size_um"):
        run_worker("--source", f"dir:{frames_dir}")
    small_camera.rules = {}
    small_camera.model = None
    small_camera.save()
    with pytest.raises(CommandError, match="has no model"):
        run_worker("--source", f"dir:{frames_dir}")
    assert not InspectionResult.objects.exists()


def test_the_simulator_feeds_the_worker_with_a_gap_and_a_broken_frame(small_camera, frames_dir):
    err = StringIO()
    call_command(
        "vision_frames",
        "--station",
        "coat-c",
        "--to",
        f"dir:{frames_dir}",
        "--coil",
        COIL,
        "--frames",
        "5",
        "--speed-m-min",
        "0",
        "--defect-every",
        "0",
        "--pool",
        "2",
        "--drop",
        "2",
        "--corrupt",
        "3",
        stderr=err,
    )
    assert "4 frames sent" in err.getvalue()
    names = sorted(p.name for p in frames_dir.iterdir())
    assert names == [
        "0.json",
        "0.png",
        "1.json",
        "1.png",
        "3.json",
        "3.png",
        "4.json",
        "4.png",
        "heartbeat.json",
    ]
    sidecar = json.loads((frames_dir / "4.json").read_text())
    assert {k: sidecar[k] for k in ("coil", "frame_id", "encoder_start", "encoder_end")} == {
        "coil": COIL,
        "frame_id": 4,
        "encoder_start": 4 * COUNTS,
        "encoder_end": 5 * COUNTS,
    }
    assert sidecar["camera"] == "cam-c1"

    run_worker("--source", f"dir:{frames_dir}", "--max-frames", "4")

    results = InspectionResult.objects.filter(camera=small_camera).order_by("coil_start_m")
    assert [(r.frame_id, r.verdict, r.uninspected_reason) for r in results] == [
        (0, "ok", ""),
        (1, "ok", ""),
        (2, "uninspected", "frame_gap"),
        (3, "uninspected", "bad_frame"),
        (4, "ok", ""),
    ]
    assert DeadLetter.objects.get(transport="vision").field == "image"


def test_the_simulator_writes_a_usable_flat_field(small_camera, tmp_path):
    from inspection.vision.screen import FlatField

    out = tmp_path / "flat.npz"
    call_command(
        "vision_frames", "--station", "coat-c", "--flat-field-out", str(out), stderr=StringIO()
    )
    flat = FlatField.load(out)
    assert flat.width == W
    assert float(flat.gain.min()) > 0.9
    assert float(flat.gain.max()) < 1.2


# --------------------------------------------------------------------------- MQTT


class Listener:
    """Collects what the broker carries on the camera station's result and command topics."""

    def __init__(self, url: str, topics: list[str]):
        address = parse_url(url)
        self.messages: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        self.client = new_client(address, client_id=f"t-listen-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.connect(
            address.host,
            address.port,
            clean_start=True,
            properties=connect_properties(session_expiry_s=0),
        )
        self.client.loop_start()
        assert self.ready.wait(10)

    def on(self, topic: str) -> list[dict]:
        return [json.loads(p) for t, p in list(self.messages) if t == topic]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_source_end_to_end(small_camera):
    url = settings.MQTT_URL
    require_service("Mosquitto (MQTT_URL)", bool(url))
    line = small_camera.station.line
    base = f"{line.site.code}/{line.code}/coat-c"
    results_topic, command_topic = f"qms/{base}/inspection", f"qms/{base}/command"
    listener = Listener(url, [results_topic, command_topic])
    address = parse_url(url)
    camera_pc = new_client(address, client_id=f"t-cam-{uuid.uuid4().hex[:8]}")
    camera_pc.connect(
        address.host,
        address.port,
        clean_start=True,
        properties=connect_properties(session_expiry_s=0),
    )
    camera_pc.loop_start()
    frame_topic = f"vision/{base}/cam-c1/frame"

    def work():
        try:
            run_worker("--source", "mqtt", "--max-frames", "3", "--run-seconds", "60")
        finally:
            connection.close()  # this thread's own connection

    worker = threading.Thread(target=work)
    worker.start()
    try:
        first = pack_frame(header(0), clean(0))
        deadline = time.monotonic() + 60
        # The worker subscribes once its model is loaded: frame 0 again until it is seen.
        while not listener.on(results_topic) and time.monotonic() < deadline:
            camera_pc.publish(frame_topic, first, qos=1).wait_for_publish(5)
            time.sleep(0.5)
        assert listener.on(results_topic), "the worker never reported frame 0"
        camera_pc.publish(frame_topic, pack_frame(header(1), with_particle()), qos=1)
        camera_pc.publish(frame_topic, b"\x00\x00", qos=1)  # broken framing
        worker.join(60)
        assert not worker.is_alive()
    finally:
        camera_pc.disconnect()
        camera_pc.loop_stop()
    time.sleep(0.5)
    listener.close()

    envelopes = listener.on(results_topic)
    by_frame = {e["payload"]["frame_id"]: e for e in envelopes}
    assert set(by_frame) == {0, 1}
    validator = Draft202012Validator(PAYLOAD_SCHEMA, format_checker=FormatChecker())
    for env in envelopes:
        assert list(validator.iter_errors(env["payload"])) == []
        assert (env["kind"], env["unit"], env["station"]) == ("inspection", COIL, "coat-c")
    assert by_frame[1]["payload"]["verdict"] == "defect"
    assert "stop" in by_frame[1]["payload"]
    (command,) = listener.on(command_topic)
    assert command["kind"] == "line_stop"
    assert command["units"] == [COIL]
    assert command["reference"] == by_frame[1]["message_id"]
    (dead,) = DeadLetter.objects.filter(transport="vision")
    assert (bytes(dead.raw), dead.field) == (b"\x00\x00", "framing")
    assert dead.origin.startswith("vision-worker:coat-c/cam-c1")


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["frame_width_px", "frame_height_px"])
def test_a_camera_with_frames_smaller_than_a_crop_does_not_validate(camera, field):
    # The model reads 128 x 128 crops: the camera form (admin) refuses smaller frames, naming
    # the field, so no worker is started on a camera it could not inspect.
    setattr(camera, field, 64)
    with pytest.raises(ValidationError) as exc:
        camera.full_clean()
    assert list(exc.value.message_dict) == [field]
    assert "greater than or equal to 128" in exc.value.message_dict[field][0]
