"""The vision worker's pipeline with the committed model: localisation on the coil, the
envelopes it emits (checked against the ``inspection`` payload schema), every fail-safe
path, the stop that never waits for emission, and bad frames.

Frames are 1024 x 512 px at 20 µm/px (the camera model of the worker, smaller so the tests
run fast): one frame covers 10.24 mm of coil, 1,024 encoder counts at 100,000 counts/m.
"""

import base64
import hashlib
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from inspection.schema import PAYLOAD_SCHEMA
from inspection.synthetic import frame
from inspection.vision.model import ModelError, VisionModel, default_model_paths
from inspection.vision.pipeline import (
    Emitter,
    Frame,
    Heartbeat,
    ModelIdentity,
    Pipeline,
    WorkerConfig,
    read_frame,
)
from inspection.vision.rules import parse
from inspection.vision.screen import screen

W, H = 1024, 512
COUNTS = 1024  # encoder counts per frame: 512 rows x 20 µm x 100,000 counts/m
FRAME_M = 0.01024
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
VALIDATOR = Draft202012Validator(PAYLOAD_SCHEMA, format_checker=FormatChecker())


@pytest.fixture(scope="module")
def model():
    manifest, _, _ = default_model_paths()
    m = VisionModel.load(manifest, intra_op_threads=1)
    m.warm_up(batch=8)
    return m


def identity(m) -> ModelIdentity:
    return ModelIdentity(m.name, m.version, m.sha256, m.threshold_set)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Line:
    """A pipeline wired to lists: what was emitted, stopped, rejected."""

    def __init__(self, model, *, config=None, clock=None, emit=None, model_error=None, **kw):
        self.emitted: list[dict] = []
        self.stops: list = []
        self.rejects: list = []
        self.clock = clock or Clock()
        self.config = config or make_config()
        self.pipeline = Pipeline(
            self.config,
            model=model,
            model_error=model_error,
            identity=kw.pop("ident", None) or identity(model or kw.get("ident_from")),
            emit=emit or self.emitted.append,
            stop=self.stops.append,
            reject=lambda raw, reason, field: self.rejects.append((raw, reason, field)),
            clock=self.clock,
            wall=lambda: T0,
        )

    def send(self, item) -> None:
        self.pipeline.handle(item)

    def results(self) -> list[dict]:
        assert self.pipeline.emitter.join_idle(30)
        return self.emitted

    def close(self):
        self.pipeline.close()


def make_config(**changes) -> WorkerConfig:
    base = {
        "site": "GF1",
        "line": "CATH-1",
        "station": "COAT-01",
        "camera": "cam1",
        "frame_width_px": W,
        "frame_height_px": H,
        "lane_width_mm": 20.48,
        "lane_offset_mm": 0.0,
        "encoder_counts_per_m": 100_000,
        "max_gap_m": 0.5,
        "latency_budget_ms": 300,
        "heartbeat_timeout_s": 2.0,
        "rules": parse({}),
    }
    base.update(changes)
    return WorkerConfig(**base)


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def header(fid: int, *, coil="C-0001", start=None, end=None, camera="cam1", at=None) -> dict:
    start = fid * COUNTS if start is None else start
    return {
        "coil": coil,
        "frame_id": fid,
        "encoder_start": start,
        "encoder_end": start + COUNTS if end is None else end,
        "acquired_at": (at or T0 + timedelta(milliseconds=20 * fid)).isoformat(),
        "camera": camera,
    }


def make_frame(line: Line, fid: int, image=None, *, received=None, **hdr) -> Frame:
    if image is None:
        image, _ = frame(W, H, seed=300 + fid, defects=[])
    data = image if isinstance(image, bytes) else png(image)
    return read_frame(
        json.dumps(header(fid, **hdr)).encode(),
        data,
        line.config,
        origin=f"{fid}.png",
        received=line.clock() if received is None else received,
    )


def valid(payload: dict) -> dict:
    errors = sorted(VALIDATOR.iter_errors(payload), key=lambda e: e.path)
    assert errors == [], [e.message for e in errors]
    return payload


# --------------------------------------------------------------------------- inspection


def test_defects_are_localised_on_the_coil_and_the_envelope_is_valid(model):
    line = Line(model)
    line.send(make_frame(line, 0))
    image, drawn = frame(W, H, seed=11, defects=[("particle", 300, 200), ("void", 700, 350)])
    line.send(make_frame(line, 1, image))
    envs = line.results()
    assert [e["message_id"] for e in envs] == [
        "vision:GF1:CATH-1:COAT-01:cam1:C-0001:0",
        "vision:GF1:CATH-1:COAT-01:cam1:C-0001:1",
    ]
    env = envs[1]
    assert {k: env[k] for k in ("schema", "kind", "unit", "site", "line", "station")} == {
        "schema": "celltrace.envelope/1",
        "kind": "inspection",
        "unit": "C-0001",
        "site": "GF1",
        "line": "CATH-1",
        "station": "COAT-01",
    }
    p = valid(env["payload"])
    assert valid(envs[0]["payload"])["verdict"] == "ok"
    assert p["verdict"] == "defect"
    assert (p["frame_id"], p["encoder_start"], p["encoder_end"]) == (1, 1024, 2048)
    assert (p["coil_start_m"], p["coil_end_m"]) == (0.01024, 0.02048)
    assert p["model"] == {
        "name": model.name,
        "version": model.version,
        "sha256": model.sha256,
        "threshold_set": model.threshold_set,
    }
    by_class = {d["class"]: d for d in p["defects"]}
    assert set(by_class) == {"particle", "void"}
    for d in drawn:
        got = by_class[d.cls]
        cx = (d.box[0] + d.box[2]) / 2
        cy = (d.box[1] + d.box[3]) / 2
        # Within 0.2 mm (10 px) of the drawn defect's centre, along and across the coil.
        assert abs(got["md_m"] - (0.01024 + (cy + 0.5) * 20e-6)) < 0.0002
        assert abs(got["cd_mm"] - (cx + 0.5) * 0.02) < 0.2
        x0, y0, x1, y1 = got["bbox_px"]
        assert x0 <= d.box[2] and d.box[0] <= x1 and y0 <= d.box[3] and d.box[1] <= y1
        assert got["area_um2"] == pytest.approx(got["area_px"] * 400.0, abs=0.01)
        crop = base64.b64decode(got["crop_png_b64"])
        assert hashlib.sha256(crop).hexdigest() == got["crop_sha256"]
        assert cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_UNCHANGED).shape == (
            128,
            128,
        )
    particle = by_class["particle"]
    assert 100 <= particle["equivalent_diameter_um"] <= 700
    assert particle["decision"] == "quarantine"
    # Retention "defects": the defect frame is kept, the clean one is not.
    assert "frame_png_b64" in p and "frame_png_b64" not in envs[0]["payload"]
    kept = base64.b64decode(p["frame_png_b64"])
    assert np.array_equal(cv2.imdecode(np.frombuffer(kept, np.uint8), 0), image)
    assert line.stops == [] and line.rejects == []
    line.close()


def test_scratch_length_is_its_major_axis(model):
    line = Line(model)
    image, drawn = frame(W, H, seed=21, defects=[("scratch", 500, 250)])
    line.send(make_frame(line, 0, image))
    (env,) = line.results()
    p = valid(env["payload"])
    scratches = [d for d in p["defects"] if d["class"] == "scratch"]
    assert len(scratches) == 1
    drawn_len_um = (drawn[0].box[3] - drawn[0].box[1]) * 20.0
    assert abs(scratches[0]["length_um"] - drawn_len_um) < 0.15 * drawn_len_um
    line.close()


def test_frame_retention_all_and_none(model):
    for retention, kept in (("all", True), ("none", False)):
        line = Line(model, config=make_config(frame_retention=retention))
        line.send(make_frame(line, 0))
        (env,) = line.results()
        assert ("frame_png_b64" in env["payload"]) is kept
        line.close()


# --------------------------------------------------------------------------- stop


def test_stop_is_called_while_emission_is_still_blocked(model):
    """A slow result store never delays a stop: the emit of the previous (clean) frame
    hangs, the next frame's stop goes out anyway, before its own envelope is queued."""
    release = threading.Event()
    entered = threading.Event()
    emitted = []

    def slow_emit(env):
        entered.set()
        release.wait(30)
        emitted.append(env)

    rules = parse({"classes": {"particle": {"stop_size_um": 150, "stop_count_per_10m": None}}})
    line = Line(model, config=make_config(rules=rules), emit=slow_emit)
    line.send(make_frame(line, 0))
    assert entered.wait(10)
    image, _ = frame(W, H, seed=12, defects=[("particle", 500, 250)])
    started = time.monotonic()
    line.send(make_frame(line, 1, image))
    assert time.monotonic() - started < 10
    assert len(line.stops) == 1
    assert emitted == []  # the stop went out while the first envelope was still in emit
    stop = line.stops[0]
    assert stop.coil == "C-0001" and stop.frame_id == 1
    assert stop.message_id == "vision:GF1:CATH-1:COAT-01:cam1:C-0001:1"
    assert stop.rule.startswith("particle ") and stop.rule.endswith(">= stop size 150")
    assert stop.acquired_at == T0 + timedelta(milliseconds=20)
    release.set()
    assert line.pipeline.emitter.join_idle(30)
    assert [e["payload"]["frame_id"] for e in emitted] == [0, 1]
    p = valid(emitted[1]["payload"])
    assert p["stop"] == {"reason": stop.reason, "rule": stop.rule, "sent_at": T0.isoformat()}
    assert [d["decision"] for d in p["defects"] if d["class"] == "particle"] == ["stop"]
    line.close()


def test_the_same_stop_is_not_repeated_within_the_holdoff(model):
    rules = parse({"classes": {"particle": {"stop_size_um": 150, "stop_count_per_10m": None}}})
    line = Line(model, config=make_config(rules=rules, stop_holdoff_s=30))
    for fid in (0, 1):
        image, _ = frame(W, H, seed=40 + fid, defects=[("particle", 400, 250)])
        line.send(make_frame(line, fid, image))
        line.clock.now += 0.02
    envs = line.results()
    assert len(line.stops) == 1
    assert "stop" in envs[0]["payload"] and "stop" not in envs[1]["payload"]
    assert "stop" in {d["decision"] for d in envs[1]["payload"]["defects"]}
    line.clock.now += 31
    image, _ = frame(W, H, seed=42, defects=[("particle", 400, 250)])
    line.send(make_frame(line, 2, image))
    line.results()
    assert len(line.stops) == 2
    line.close()


# --------------------------------------------------------------------------- fail-safe


def uninspected(envs, reason):
    return [e["payload"] for e in envs if e["payload"].get("uninspected_reason") == reason]


def test_a_frame_gap_reports_the_missing_metres(model):
    line = Line(model)
    for fid in (0, 1, 4):
        line.send(make_frame(line, fid))
    envs = line.results()
    (gap,) = uninspected(envs, "frame_gap")
    valid(gap)
    assert gap["verdict"] == "uninspected"
    assert (gap["encoder_start"], gap["encoder_end"]) == (2048, 4096)
    assert (gap["coil_start_m"], gap["coil_end_m"]) == (0.02048, 0.04096)
    assert gap["frame_id"] == 2
    assert gap["detail"] == "frames 2 to 3 never arrived"
    assert [e["payload"]["verdict"] for e in envs] == ["ok", "ok", "uninspected", "ok"]
    assert line.stops == []
    line.close()


def test_a_gap_longer_than_max_gap_stops_the_line(model):
    line = Line(model, config=make_config(max_gap_m=0.05))
    line.send(make_frame(line, 0))
    line.send(make_frame(line, 7))  # frames 1-6 lost: 61.44 mm
    envs = line.results()
    (gap,) = uninspected(envs, "frame_gap")
    assert gap["coil_end_m"] - gap["coil_start_m"] == pytest.approx(0.06144)
    (stop,) = line.stops
    assert stop.reason == (
        "0.061 m of coil C-0001 uninspected on camera cam1 (frame gap); the limit is 0.05 m"
    )
    assert gap["stop"]["reason"] == stop.reason and "sent_at" in gap["stop"]
    line.close()


def test_shorter_gaps_add_up_until_an_inspected_frame(model):
    line = Line(model, config=make_config(max_gap_m=0.015))
    # Two uninspected frames in a row (backlog, 10.24 mm each) exceed 15 mm: stop on the
    # second.
    line.send(make_frame(line, 0, received=line.clock() - 1.0))
    assert line.stops == []
    line.send(make_frame(line, 1, received=line.clock() - 1.0))
    assert len(line.stops) == 1
    line.send(make_frame(line, 2))
    line.send(make_frame(line, 3, received=line.clock() - 1.0))
    assert len(line.stops) == 1  # the run restarted at the inspected frame 2
    envs = line.results()
    assert [e["payload"].get("uninspected_reason") for e in envs] == [
        "backlog",
        "backlog",
        None,
        "backlog",
    ]
    line.close()


def test_encoder_counts_that_do_not_match_the_frame_height(model):
    line = Line(model)
    line.send(make_frame(line, 0))
    line.send(make_frame(line, 1, start=COUNTS, end=COUNTS + 1130))  # 10 % too long
    line.send(make_frame(line, 2, start=COUNTS + 1130 + 900))  # contiguous ids, encoder jumped
    envs = line.results()
    mism = uninspected(envs, "encoder_mismatch")
    assert len(mism) == 2
    for p in mism:
        valid(p)
    assert (mism[0]["encoder_start"], mism[0]["encoder_end"]) == (1024, 2154)
    assert mism[0]["detail"] == "1130 encoder counts for 512 rows; expected 1024 +- 20"
    assert (mism[1]["encoder_start"], mism[1]["encoder_end"]) == (2154, 3054)
    assert mism[1]["detail"] == "frame 2 starts at count 3054, the previous ended at 2154"
    assert envs[-1]["payload"]["verdict"] == "ok"
    line.close()


def test_a_frame_over_the_latency_budget_is_skipped_as_backlog(model):
    line = Line(model)
    line.send(make_frame(line, 0, received=line.clock() - 0.301))
    (env,) = line.results()
    p = valid(env["payload"])
    assert p["uninspected_reason"] == "backlog"
    assert p["detail"] == "waited 301 ms, over the 300 ms budget"
    assert (p["coil_start_m"], p["coil_end_m"]) == (0.0, 0.01024)
    assert line.pipeline.stats.crops == 0  # not classified
    line.close()


def test_lost_contact_reports_the_metres_that_passed_meanwhile(model):
    line = Line(model)
    line.send(make_frame(line, 0))
    line.clock.now += 2.5
    line.pipeline.tick()
    assert line.pipeline.contact_lost
    # Contact returns: the station's encoder is 10 frames further.
    line.send(Heartbeat("C-0001", 11 * COUNTS, T0 + timedelta(seconds=3), line.clock()))
    envs = line.results()
    (lost,) = uninspected(envs, "heartbeat_lost")
    valid(lost)
    assert (lost["encoder_start"], lost["encoder_end"]) == (COUNTS, 11 * COUNTS)
    assert lost["detail"] == "no frame and no heartbeat from the station for more than 2 s"
    assert not line.pipeline.contact_lost
    assert line.stops == []
    line.close()


def test_a_silent_camera_on_a_running_line_is_seen_through_the_heartbeat(model):
    line = Line(model, config=make_config(max_gap_m=0.05))
    line.send(make_frame(line, 0))
    line.clock.now += 0.5
    line.send(Heartbeat("C-0001", 3 * COUNTS, T0 + timedelta(seconds=1), line.clock()))
    assert line.results()[1:] == []  # within the frame timeout (2 s): nothing yet
    line.clock.now += 2.0
    line.send(Heartbeat("C-0001", 8 * COUNTS, T0 + timedelta(seconds=3), line.clock()))
    envs = line.results()
    (gap,) = uninspected(envs, "frame_gap")
    valid(gap)
    assert (gap["encoder_start"], gap["encoder_end"]) == (COUNTS, 8 * COUNTS)
    assert gap["detail"] == "camera cam1 sent no frame for 2.5 s while the encoder advanced to 8192"
    assert len(line.stops) == 1 and "stop" in gap
    # The late frame 1 comes after its metres were reported: skipped, not reported twice.
    line.send(make_frame(line, 1))
    assert line.pipeline.stats.skipped_stale == 1
    assert len(line.results()) == 2
    line.close()


def test_a_heartbeat_of_the_next_coil_does_not_disturb_frames_still_in_flight(model):
    line = Line(model)
    line.send(make_frame(line, 0, coil="C-0001"))
    # The station already runs the next coil; frames 1-2 of the first are still on the way.
    line.send(Heartbeat("C-0002", 300, T0 + timedelta(seconds=1), line.clock()))
    line.send(make_frame(line, 1, coil="C-0001"))
    line.send(make_frame(line, 2, coil="C-0001"))
    line.send(make_frame(line, 3, coil="C-0002", start=0))
    envs = line.results()
    assert [(e["unit"], e["payload"]["frame_id"], e["payload"]["verdict"]) for e in envs] == [
        ("C-0001", 0, "ok"),
        ("C-0001", 1, "ok"),
        ("C-0001", 2, "ok"),
        ("C-0002", 3, "ok"),
    ]
    line.close()


def test_a_camera_silent_from_the_start_is_seen_through_the_heartbeat(model):
    line = Line(model)
    line.send(Heartbeat("C-0007", 2 * COUNTS, T0, line.clock()))
    line.clock.now += 1.0
    line.send(Heartbeat("C-0007", 4 * COUNTS, T0 + timedelta(seconds=1), line.clock()))
    assert line.results() == []  # within the frame timeout
    line.clock.now += 1.5
    line.send(Heartbeat("C-0007", 7 * COUNTS, T0 + timedelta(seconds=2.5), line.clock()))
    (env,) = line.results()
    p = valid(env["payload"])
    assert env["unit"] == "C-0007"
    assert (p["uninspected_reason"], p["encoder_start"], p["encoder_end"]) == (
        "frame_gap",
        2 * COUNTS,
        7 * COUNTS,
    )
    line.close()


def test_a_model_that_fails_its_checksum_never_classifies(model):
    manifest, _, _ = default_model_paths()
    with pytest.raises(ModelError) as exc:
        VisionModel.load(manifest, expected_sha256="0" * 64)
    assert exc.value.code == "checksum_mismatch"
    line = Line(
        None,
        config=make_config(max_gap_m=0.02),
        model_error=str(exc.value),
        ident=ModelIdentity(model.name, model.version, "0" * 64, model.threshold_set),
    )
    image, _ = frame(W, H, seed=13, defects=[("void", 500, 250)])
    for fid in range(3):
        line.send(make_frame(line, fid, image))
    envs = line.results()
    assert [e["payload"]["uninspected_reason"] for e in envs] == ["model_checksum"] * 3
    for e in envs:
        valid(e["payload"])
        assert e["payload"]["defects"] == []
        assert e["payload"]["model"]["sha256"] == "0" * 64
    assert envs[0]["payload"]["detail"].startswith("the model is not verified: checksum_mismatch")
    assert len(line.stops) == 1  # 30.72 mm uninspected > 20 mm
    line.close()


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (lambda img: (img * 0.4).astype(np.uint8), "mean grey 3"),
        (
            lambda img: np.clip(
                img + np.random.default_rng(3).normal(0, 14, img.shape), 0, 255
            ).astype(np.uint8),
            "noise sigma 1",
        ),
    ],
)
def test_input_drift_out_of_the_commissioning_band(model, change, detail):
    line = Line(model)
    image, _ = frame(W, H, seed=14, defects=[])
    line.send(make_frame(line, 0, change(image)))
    (env,) = line.results()
    p = valid(env["payload"])
    assert p["uninspected_reason"] == "input_drift"
    assert p["detail"].startswith(detail)
    assert "outside the commissioning band" in p["detail"] or "above the" in p["detail"]
    assert line.pipeline.stats.crops == 0
    line.close()


# --------------------------------------------------------------------------- bad frames


def sixteen_bit() -> bytes:
    return png(np.full((H, W), 1000, np.uint16))


def colour() -> bytes:
    return png(np.full((H, W, 3), 90, np.uint8))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "the image does not decode (PNG expected)"),
        (b"", "empty image"),
        (lambda: png(np.full((H, W - 8), 80, np.uint8)), "the image is 1016x512 px"),
        (sixteen_bit, "the image must be 8-bit grey, got uint16"),
        (colour, "the image must be 8-bit grey, got uint8 with 3 channel(s)"),
    ],
)
def test_bad_images_are_rejected_and_their_metres_reported(model, data, reason):
    line = Line(model)
    raw = data() if callable(data) else data
    line.send(make_frame(line, 0))
    line.send(make_frame(line, 1, raw))
    line.send(make_frame(line, 2))
    envs = line.results()
    assert len(line.rejects) == 1
    got_raw, got_reason, field = line.rejects[0]
    assert (got_raw, field) == (raw, "image")
    assert got_reason.startswith(reason)
    (bad,) = uninspected(envs, "bad_frame")
    valid(bad)
    assert (bad["frame_id"], bad["encoder_start"], bad["encoder_end"]) == (1, 1024, 2048)
    assert bad["defects"] == []
    # No gap is reported for frame 1: its metres are accounted for by the bad_frame result.
    assert uninspected(envs, "frame_gap") == []
    line.close()


def test_an_image_over_the_size_limit_is_rejected(model):
    line = Line(model, config=make_config(max_frame_bytes=1000))
    data = png(frame(W, H, seed=300, defects=[])[0])
    line.send(make_frame(line, 0, data))
    assert line.rejects == [
        (data, f"image of {len(data)} bytes is over the 1000-byte limit", "image")
    ]
    assert uninspected(line.results(), "bad_frame")[0]["frame_id"] == 0
    line.close()


@pytest.mark.parametrize(
    ("sidecar", "field"),
    [
        (b"{not json", "sidecar"),
        (b"[1, 2]", "sidecar"),
        (json.dumps({**header(1), "encoder_end": 1024}).encode(), "sidecar.encoder_end"),
        (json.dumps({k: v for k, v in header(1).items() if k != "coil"}).encode(), "sidecar.coil"),
        (json.dumps({**header(1), "frame_id": -1}).encode(), "sidecar.frame_id"),
        (json.dumps({**header(1), "encoder_start": "1024"}).encode(), "sidecar.encoder_start"),
        (
            json.dumps({**header(1), "acquired_at": "2026-05-04 08:00"}).encode(),
            "sidecar.acquired_at",
        ),
        (json.dumps({**header(1), "acquired_at": "yesterday"}).encode(), "sidecar.acquired_at"),
        (json.dumps({**header(1), "camera": "cam2"}).encode(), "sidecar.camera"),
    ],
)
def test_bad_sidecars_are_rejected_without_a_result_and_show_as_a_gap(model, sidecar, field):
    line = Line(model)
    line.send(make_frame(line, 0))
    image, _ = frame(W, H, seed=301, defects=[])
    bad = read_frame(sidecar, png(image), line.config, origin="1.png", received=line.clock())
    line.send(bad)
    assert [(r[0], r[2]) for r in line.rejects] == [(sidecar, field)]
    assert line.results()[1:] == []  # nothing partial: its metres are not known
    line.send(make_frame(line, 2))
    envs = line.results()
    (gap,) = uninspected(envs, "frame_gap")
    assert (gap["encoder_start"], gap["encoder_end"]) == (COUNTS, 2 * COUNTS)
    line.close()


def test_a_redelivered_frame_is_not_reported_twice(model):
    line = Line(model)
    line.send(make_frame(line, 0))
    line.send(make_frame(line, 0))
    assert len(line.results()) == 1
    assert line.pipeline.stats.skipped_stale == 1
    line.close()


def test_a_new_coil_starts_its_own_accounting(model):
    line = Line(model)
    line.send(make_frame(line, 0, coil="C-0001"))
    line.send(make_frame(line, 1, coil="C-0002", start=0))
    line.send(make_frame(line, 2, coil="C-0002", start=COUNTS))
    envs = line.results()
    assert [(e["unit"], e["payload"]["verdict"]) for e in envs] == [
        ("C-0001", "ok"),
        ("C-0002", "ok"),
        ("C-0002", "ok"),
    ]
    # The first frame of the next coil starting 5 frames in: its first metres are missing.
    line.send(make_frame(line, 3, coil="C-0003", start=5 * COUNTS))
    (gap,) = uninspected(line.results(), "frame_gap")
    assert gap["detail"] == "the first frame of coil C-0003 starts at count 5120"
    assert (gap["coil_start_m"], gap["coil_end_m"]) == (0.0, 0.0512)
    line.close()


# --------------------------------------------------------------------------- emission


def test_emission_retries_until_delivered_in_order():
    calls = []
    failures = {"n": 2}

    def flaky(env):
        calls.append(env["message_id"])
        if failures["n"]:
            failures["n"] -= 1
            raise ConnectionError("database is away")

    emitter = Emitter(flaky, retry_min_s=0.01, retry_max_s=0.02)
    from inspection.vision.pipeline import Outgoing

    for i in range(3):
        emitter.put(Outgoing({"message_id": f"m{i}", "payload": {"defects": []}}))
    assert emitter.join_idle(10)
    assert calls == ["m0", "m0", "m0", "m1", "m2"]
    assert (emitter.sent, emitter.failures, emitter.lost) == (3, 2, 0)
    assert emitter.close(5)


def test_a_pipeline_needs_a_model_or_the_reason_it_has_none():
    with pytest.raises(ValueError):
        Pipeline(
            make_config(),
            model=None,
            identity=ModelIdentity("m", "1", "0" * 64),
            emit=lambda env: None,
            stop=lambda r: None,
            reject=lambda *a: None,
        )


@pytest.mark.parametrize(("width", "height"), [(4096, 64), (64, 1024), (4096, 127)])
def test_a_camera_whose_frames_are_smaller_than_a_crop_is_refused_at_configuration(width, height):
    # Stage 2 cuts 128 x 128 crops: a frame of fewer rows or columns cannot be inspected, so
    # the worker refuses the configuration instead of failing on the first candidate.
    with pytest.raises(ValueError) as exc:
        make_config(frame_width_px=width, frame_height_px=height)
    assert "at least 128 px wide and 128 rows high" in str(exc.value)
    assert f"got {width} x {height}" in str(exc.value)


def test_a_frame_of_exactly_one_crop_is_inspected(model):
    # Given: a camera of 128 x 128 frames, the smallest stage 2 can crop, and a void in one.
    config = make_config(frame_width_px=128, frame_height_px=128, lane_width_mm=2.56)
    image, _ = frame(128, 128, seed=11, defects=[("void", 64, 64)], substrate="coating")
    pipe = Pipeline(
        config,
        model=model,
        identity=ModelIdentity(model.name, model.version, model.sha256),
        emit=lambda env: None,
        stop=lambda r: None,
        reject=lambda *a: None,
    )
    # When
    crops, found = pipe.stage2(image, screen(image, flat=pipe.flat))
    # Then: every candidate's crop is the whole frame, and the void is found in it.
    assert len(crops) >= 1 and crops.shape[1:] == (128, 128)
    assert all(np.array_equal(c, image) for c in crops)
    assert "void" in [d.cls for d in found]
