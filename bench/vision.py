"""Vision worker benchmark: stage 1 and stage 2 speed, exposure-to-stop latency at line rate,
the line speed that follows, and detection quality on a fresh shifted held-out set.

    .venv/bin/python -m bench.vision --json

No database, no Django: the pipeline of :mod:`inspection.vision.pipeline` with the committed
model and in-process callables. It measures

* ``screen_mpx_per_s``: stage 1 (:func:`inspection.vision.screen.screen`, with a
  commissioning flat field) on full 4096 x 1024 frames at 20 µm/px, clean and with defects,
  both substrates; megapixels over the median time per frame, one core (OpenCV with
  ``--threads``). ``decode_png_mpx_per_s``: decoding the same frames from PNG (the sources do
  it on their own thread).
* ``classify_crops_per_s``: stage 2 as the worker runs it (:meth:`Pipeline.stage2`: crops
  around the candidates with flat-field correction, the model in batches of 32, defect-map
  localisation, merging) on frames dense with defects; ``onnx_raw_crops_per_s``: the same
  crops, already float32, in the same batches, straight through the onnxruntime session
  with the same threads; ``pipeline_overhead_pct`` = worker time / bare time - 1.
* ``exposure_to_stop_p95_ms``: a camera stream at ``--stream-mpx-per-s`` (default 60 Mpx/s,
  what a 300 mm lane at 50 µm/px gives at 30 m/min) through :class:`Runner` with a source
  thread that hands over each frame when its last line is exposed (8-bit rows, as a frame
  grabber delivers them); every 8th frame holds a void the rules stop on. From the frame's
  exposure to the ``stop`` call, while the emission thread encodes evidence and a result
  store takes 20 ms per envelope.
* ``max_line_speed_m_per_min``: for a 300 mm lane at 50 µm/px (6,000 px across, 20,000 lines
  per metre: 1.2e8 px/m) on the one inspection core:
  ``60 / (1.2e8 / screen_px_per_s + 120 * candidates_per_mpx / classify_crops_per_s)``,
  with ``candidates_per_mpx`` measured on the held-out set. With PNG frames the source thread
  (the second core) must also keep up: ``max_line_speed_png_decode_m_per_min`` =
  ``60 * decode_png_px_per_s / 1.2e8``.
* ``macro_f1_heldout``, ``escape_rate_heldout``, ``false_alarm_rate_heldout``: frames of the
  shifted rendering (noisier, defocused, lower contrast, another camera's fixed pattern) from
  a seed no training used, through screen, model and rules (every size counted). A drawn
  defect escapes when no reported defect with a decision other than ignore overlaps its box;
  its predicted class is that of the most confident one. A false alarm is a clean frame with
  any such defect. Macro F1 over the seven defect classes: drawn defects against their
  predicted class (``ok`` when escaped), plus every reported defect off all drawn ones as a
  false call of its class.
* ``peak_rss_mb``: the whole run's maximum resident set.

The JSON object is printed on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from datetime import UTC, datetime

import cv2
import numpy as np

from inspection.management.commands.vision_frames import commissioning_flat_field
from inspection.synthetic import CLASSES, SUBSTRATES, RenderParams, frame
from inspection.vision.model import VisionModel, default_model_paths
from inspection.vision.pipeline import (
    Emitter,
    Frame,
    FrameHeader,
    ModelIdentity,
    Pipeline,
    Runner,
    StopRequest,
    WorkerConfig,
    read_frame,
)
from inspection.vision.rules import parse
from inspection.vision.screen import FlatField, screen

W, H, PITCH_UM = 4096, 1024, 20.0
MPX = W * H / 1e6
COUNTS_PER_M = 100_000
FRAME_COUNTS = round(H * PITCH_UM * 1e-6 * COUNTS_PER_M)
LANE_PX_PER_M = (300e-3 / 50e-6) * (1.0 / 50e-6)  # 300 mm lane at 50 µm/px: 1.2e8 px/m
DEFECTS = [c for c in CLASSES if c != "ok"]
#: Seeds of the held-out frames: far from the training script's seeds (1000-1005).
HELDOUT_SEED = 770_000
#: Every size counts, nothing stops: the held-out figures measure vision, not policy.
COUNT_ALL = {
    c: {
        "min_size_um": 0,
        "quarantine_size_um": 0,
        "stop_size_um": None,
        "stop_count_per_10m": None,
        "stop_length_m": None,
    }
    for c in DEFECTS
}


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def config(**changes) -> WorkerConfig:
    base = {
        "site": "BENCH",
        "line": "L1",
        "station": "COAT-01",
        "camera": "cam1",
        "frame_width_px": W,
        "frame_height_px": H,
        "pixel_pitch_um": PITCH_UM,
        "lane_width_mm": W * PITCH_UM / 1000,
        "encoder_counts_per_m": COUNTS_PER_M,
        "noise_band_high": 30.0,
        "latency_budget_ms": 300.0,
    }
    base.update(changes)
    return WorkerConfig(**base)


class Collect:
    """An emitter stand-in that keeps what the pipeline queues (no delivery thread)."""

    def __init__(self):
        self.items = []

    def put(self, item) -> None:
        self.items.append(item)

    def close(self, timeout_s: float = 0) -> bool:
        return True


def pipeline_for(model, cfg: WorkerConfig, flat: FlatField, emitter=None, **kw) -> Pipeline:
    return Pipeline(
        cfg,
        model=model,
        identity=ModelIdentity(model.name, model.version, model.sha256, model.threshold_set),
        stop=kw.pop("stop", lambda request: None),
        reject=lambda raw, reason, field: None,
        flat=flat,
        emitter=emitter or Collect(),
        **kw,
    )


# --------------------------------------------------------------------------- stage 1


def bench_screen(frames: list[np.ndarray], flat: FlatField, repeat: int) -> dict:
    times = []
    for _ in range(repeat):
        for image in frames:
            t0 = time.perf_counter()
            screen(image, flat=flat)
            times.append(time.perf_counter() - t0)
    pngs = [cv2.imencode(".png", image)[1].tobytes() for image in frames]
    decode = []
    for data in pngs:
        t0 = time.perf_counter()
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        decode.append(time.perf_counter() - t0)
    p50 = float(np.median(times))
    return {
        "screen_mpx_per_s": round(MPX / p50, 1),
        "screen_ms_p50": round(p50 * 1000, 2),
        "screen_ms_p95": round(float(np.percentile(times, 95)) * 1000, 2),
        "screen_frames": len(times),
        "decode_png_mpx_per_s": round(MPX / float(np.median(decode)), 1),
    }


# --------------------------------------------------------------------------- stage 2


def bench_stage2(model, flat: FlatField, frames: list[np.ndarray], repeat: int) -> dict:
    pipe = pipeline_for(model, config(), flat)
    session = model._session  # the bare onnxruntime session the wrapper runs
    work = []
    for image in frames:
        result = screen(image, flat=flat)
        crops, _ = pipe.stage2(image, result)
        batches = [
            np.ascontiguousarray(crops[i : i + 32].astype(np.float32)[:, None])
            for i in range(0, crops.shape[0], 32)
        ]
        work.append((image, result, batches))
    worker_s = raw_s = 0.0
    crops_n = sum(sum(b.shape[0] for b in batches) for _, _, batches in work)
    for _ in range(repeat):
        # Interleaved per frame, so a change in machine load hits both alike.
        for image, result, batches in work:
            t0 = time.perf_counter()
            pipe.stage2(image, result)
            worker_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            for x in batches:
                session.run(["probs", "defect_map"], {"image": x})
            raw_s += time.perf_counter() - t0
    n = crops_n * repeat
    sizes = [b.shape[0] for _, _, batches in work for b in batches]
    return {
        "classify_crops_per_s": round(n / worker_s, 1),
        "onnx_raw_crops_per_s": round(n / raw_s, 1),
        "pipeline_overhead_pct": round((worker_s / raw_s - 1.0) * 100.0, 1),
        "classify_crops": n,
        "crops_per_batch_mean": round(float(np.mean(sizes)), 1),
    }


# --------------------------------------------------------------------------- latency


class PacedSource:
    """A camera at a fixed frame period: each frame is handed over (read and decoded like
    the worker's sources do) when its last line is exposed; every ``every``-th is a stop
    frame. ``acquired`` keeps each frame's exposure time."""

    def __init__(
        self,
        cfg: WorkerConfig,
        clean: list[bytes],
        stop: list[bytes],
        *,
        period_s,
        frames: int,
        every: int,
    ):
        self.cfg, self.clean, self.stop_frames = cfg, clean, stop
        self.period_s, self.frames, self.every = period_s, frames, every
        self._stopping = threading.Event()
        self._thread = None
        self.late = 0

    def start(self, sink) -> None:
        self._thread = threading.Thread(target=self._run, args=(sink,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, sink) -> None:
        t0 = time.monotonic() + 0.2
        for i in range(self.frames):
            due = t0 + (i + 1) * self.period_s
            wait = due - time.monotonic()
            if wait > 0:
                if self._stopping.wait(wait):
                    return
            else:
                self.late += 1
            data = (
                self.stop_frames[(i // self.every) % len(self.stop_frames)]
                if (i + 1) % self.every == 0
                else self.clean[i % len(self.clean)]
            )
            header = {
                "coil": "C-BENCH",
                "frame_id": i,
                "encoder_start": i * FRAME_COUNTS,
                "encoder_end": (i + 1) * FRAME_COUNTS,
                "acquired_at": datetime.now(UTC).isoformat(),
                "camera": self.cfg.camera,
            }
            received = time.monotonic()
            sink(
                read_frame(
                    json.dumps(header).encode(),
                    data,
                    self.cfg,
                    origin=str(i),
                    received=received,
                    encoding="raw8",
                )
            )


def bench_latency(model, flat: FlatField, *, mpx_per_s: float, stops: int, seed: int) -> dict:
    void = {"quarantine_size_um": 300, "stop_size_um": 300, "stop_count_per_10m": None}
    rules = parse({"classes": {"void": void}})
    cfg = config(rules=rules, stop_holdoff_s=0.0, frame_retention="defects")
    clean = [frame(W, H, seed=seed + i, defects=[])[0].tobytes() for i in range(4)]
    stop_frames = [
        frame(W, H, seed=seed + 100 + i, defects=[("void", 1200 + 600 * i, 300 + 150 * i)])[
            0
        ].tobytes()
        for i in range(3)
    ]
    latencies: list[float] = []
    store_delay_s = 0.02

    def on_stop(request: StopRequest) -> None:
        latencies.append((datetime.now(UTC) - request.acquired_at).total_seconds() * 1000)

    def store(envelope: dict) -> None:
        time.sleep(store_delay_s)  # a result store's round trip

    emitter = Emitter(store)
    pipe = pipeline_for(model, cfg, flat, emitter=emitter, stop=on_stop)
    every = 8
    period = MPX / mpx_per_s
    source = PacedSource(
        cfg, clean, stop_frames, period_s=period, frames=stops * every, every=every
    )
    stats = Runner(pipe, source, max_frames=stops * every).run()
    return {
        "exposure_to_stop_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "exposure_to_stop_p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "exposure_to_stop_max_ms": round(max(latencies), 1),
        "stops_measured": len(latencies),
        "stream_mpx_per_s": mpx_per_s,
        "stream_frames": stats.frames,
        "stream_frames_backlogged": stats.uninspected,
        "stream_frame_ms_mean": round(stats.frame_s / max(stats.inspected, 1) * 1000, 1),
        "emitted": emitter.sent,
    }


# --------------------------------------------------------------------------- quality


def _overlaps(box, drawn) -> bool:
    x0, y0, x1, y1 = box
    bx0, by0, bx1, by1 = drawn.box
    ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
    if ix0 >= ix1 or iy0 >= iy1:
        return False
    return bool(drawn.mask[iy0 - by0 : iy1 - by0, ix0 - bx0 : ix1 - bx0].any())


def bench_heldout(model, *, defect_frames: int, clean_frames: int, seed: int) -> dict:
    params = RenderParams().shifted()
    flat = FlatField.from_frames(commissioning_flat_field(W, params))
    cfg = config(rules=parse({"classes": COUNT_ALL}), frame_retention="none", latency_budget_ms=1e9)
    pairs: list[tuple[str, str]] = []  # (true, predicted)
    escapes = drawn_n = false_alarms = false_calls = 0
    candidates = frames_n = 0
    rng = np.random.default_rng(seed)
    jobs = ["defect"] * defect_frames + ["clean"] * clean_frames
    for n, kind in enumerate(jobs):
        substrate = SUBSTRATES[n % 2]
        kinds = [str(rng.choice(DEFECTS)) for _ in range(2)] if kind == "defect" else []
        image, drawn = frame(W, H, seed=seed + n, params=params, defects=kinds, substrate=substrate)
        pipe = pipeline_for(model, cfg, flat)
        hdr = FrameHeader("C-HELD", n, 0, FRAME_COUNTS, datetime.now(UTC), cfg.camera)
        pipe.handle(Frame(str(n), time.monotonic(), header=hdr, image=image))
        payload = pipe.emitter.items[-1].envelope["payload"]
        candidates += pipe.stats.candidates
        frames_n += 1
        flagged = [d for d in payload["defects"] if d["decision"] != "ignore"]
        if payload["verdict"] == "uninspected":
            log(f"held-out frame {n} uninspected: {payload.get('detail')}")
        used = set()
        for d in drawn:
            drawn_n += 1
            hits = [j for j, f in enumerate(flagged) if _overlaps(f["bbox_px"], d)]
            used.update(hits)
            if hits:
                best = max(hits, key=lambda j: flagged[j]["confidence"])
                pairs.append((d.cls, flagged[best]["class"]))
            else:
                escapes += 1
                pairs.append((d.cls, "ok"))
        off = [f for j, f in enumerate(flagged) if j not in used]
        false_calls += len(off)
        pairs.extend(("ok", f["class"]) for f in off)
        if kind == "clean" and flagged:
            false_alarms += 1
        if (n + 1) % 20 == 0:
            log(f"held-out: {n + 1}/{len(jobs)} frames")
    f1 = {}
    for c in DEFECTS:
        tp = sum(1 for t, p in pairs if t == c and p == c)
        fp = sum(1 for t, p in pairs if t != c and p == c)
        fn = sum(1 for t, p in pairs if t == c and p != c)
        f1[c] = round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else 1.0
    return {
        "macro_f1_heldout": round(float(np.mean(list(f1.values()))), 4),
        "per_class_f1_heldout": f1,
        "escape_rate_heldout": round(escapes / max(drawn_n, 1), 4),
        "false_alarm_rate_heldout": round(false_alarms / max(clean_frames, 1), 4),
        "false_calls_per_frame_heldout": round(false_calls / max(frames_n, 1), 3),
        "candidates_per_mpx_heldout": round(candidates / (frames_n * MPX), 3),
        "heldout_defects": drawn_n,
        "heldout_clean_frames": clean_frames,
        "heldout_seed": seed,
    }


# --------------------------------------------------------------------------- main


def run(args) -> dict:
    cv2.setNumThreads(args.threads)
    load_before = os.getloadavg()[0]
    manifest, _, _ = default_model_paths()
    model = VisionModel.load(manifest, intra_op_threads=args.threads)
    model.warm_up(batch=32)
    flat = FlatField.from_frames(commissioning_flat_field(W, RenderParams()))
    figures: dict = {
        "model": f"{model.name} {model.version}",
        "threads": args.threads,
        "frame_px": [W, H],
    }

    log("stage 1: rendering frames")
    frames = []
    for i in range(args.frames):
        substrate = SUBSTRATES[i % 2]
        defects = [] if i % 4 < 2 else None  # half clean, half with four random defects
        frames.append(frame(W, H, seed=args.seed + i, defects=defects, substrate=substrate)[0])
    figures.update(bench_screen(frames, flat, args.repeat))
    log(f"stage 1: {figures['screen_mpx_per_s']} Mpx/s")

    log("stage 2: rendering frames dense with defects")
    dense = [
        frame(
            W,
            H,
            seed=args.seed + 500 + i,
            defects=[DEFECTS[(i + k) % 7] for k in range(14)],
            substrate=SUBSTRATES[i % 2],
        )[0]
        for i in range(args.dense_frames)
    ]
    figures.update(bench_stage2(model, flat, dense, args.repeat))
    log(
        f"stage 2: {figures['classify_crops_per_s']} crops/s "
        f"(bare onnxruntime {figures['onnx_raw_crops_per_s']})"
    )

    log(f"latency: a {args.stream_mpx_per_s:g} Mpx/s stream, {args.stops} stops")
    figures.update(
        bench_latency(
            model, flat, mpx_per_s=args.stream_mpx_per_s, stops=args.stops, seed=args.seed + 900
        )
    )
    log(f"latency: exposure to stop p95 {figures['exposure_to_stop_p95_ms']} ms")

    log("held-out: shifted rendering")
    figures.update(
        bench_heldout(
            model,
            defect_frames=args.heldout_frames,
            clean_frames=args.clean_frames,
            seed=HELDOUT_SEED,
        )
    )
    screen_px_s = figures["screen_mpx_per_s"] * 1e6
    crops_per_m = LANE_PX_PER_M / 1e6 * figures["candidates_per_mpx_heldout"]
    seconds_per_m = LANE_PX_PER_M / screen_px_s + crops_per_m / figures["classify_crops_per_s"]
    figures["max_line_speed_m_per_min"] = round(60.0 / seconds_per_m, 1)
    figures["max_line_speed_png_decode_m_per_min"] = round(
        60.0 * figures["decode_png_mpx_per_s"] * 1e6 / LANE_PX_PER_M, 1
    )
    figures["line_speed_lane"] = "300 mm at 50 µm/px (1.2e8 px/m)"
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="stage-1 frames (4096 x 1024)")
    parser.add_argument("--dense-frames", type=int, default=8, help="stage-2 frames")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the frames")
    parser.add_argument("--stream-mpx-per-s", type=float, default=60.0)
    parser.add_argument("--stops", type=int, default=40, help="stop frames in the stream")
    parser.add_argument("--heldout-frames", type=int, default=60, help="held-out defect frames")
    parser.add_argument("--clean-frames", type=int, default=40, help="held-out clean frames")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    args = parser.parse_args(argv)
    if min(args.frames, args.dense_frames, args.repeat, args.stops, args.threads) < 1:
        parser.error("--frames, --dense-frames, --repeat, --stops and --threads must be >= 1")
    figures = run(args)
    if not args.json:
        for key, value in figures.items():
            print(f"{key:40s} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
