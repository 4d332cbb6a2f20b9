"""The vision worker's pipeline: frames in, one ``inspection`` envelope per frame out, a line
stop the moment a rule asks for one.

Pure Python + numpy + OpenCV, no Django: the management command (``vision_worker``) hands
in three callables and this module never learns what is behind them:

* ``emit(envelope: dict)`` delivers one ingest envelope (kind ``inspection``). It runs on
  the :class:`Emitter`'s own thread, behind a queue, so a slow database or broker never
  delays inspection or a stop. Evidence (crop PNGs, the full frame) is encoded there too.
* ``stop(request: StopRequest)`` stops the line. It is called on the inspection thread as
  soon as a frame's decisions are known, before that frame's envelope is even queued.
* ``reject(raw: bytes, reason: str, field: str)`` keeps a frame that could not be read (the
  command records a dead letter).

For each frame, in order (:meth:`Pipeline.handle`):

1. A frame the source could not read (image does not decode, wrong size or depth, empty,
   too large, bad sidecar) is rejected; when its sidecar was readable its metres are
   reported ``uninspected`` (``bad_frame``). Nothing partial is ever reported.
2. Coverage: the encoder range since the last accounted metre must be continuous. Missing
   metres are reported ``uninspected``: ``frame_gap`` (frame ids jumped, or the camera sent
   nothing while the station's heartbeat showed the line running), ``encoder_mismatch``
   (ids in sequence but the encoder jumped), ``heartbeat_lost`` (neither frames nor
   heartbeats came for ``heartbeat_timeout_s``).
3. The frame itself is ``uninspected`` when it waited longer than the latency budget
   (``backlog``: the worker skips it to catch up), when the model failed its checksum at
   start (``model_checksum``: the worker never classifies with an unverified model), when its
   encoder length disagrees with its height x pixel pitch (``encoder_mismatch``), or when its
   mean grey level or noise left the commissioning band (``input_drift``).
4. Otherwise: flat-field correction and stage 1 (:mod:`inspection.vision.screen`), stage 2
   (128 x 128 crops around the candidates, batches of ``batch_size`` through the model),
   localisation (box, area, size, coil position), decisions (:mod:`inspection.vision.rules`),
   and the stop if one is due.

A run of uninspected metres longer than ``max_gap_m`` stops the line too.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from inspection.schema import MAX_DEFECTS_PER_FRAME, MAX_FRAME_B64_CHARS

from .rules import Observation, Roller, RuleEngine, Rules, defect_size_um, parse
from .screen import FlatField, ScreenParams, ScreenResult, StreakReference, screen

logger = logging.getLogger("celltrace.vision")

ENVELOPE_SCHEMA = "celltrace.envelope/1"
KIND = "inspection"
CROP_PX = 128
SIDECAR_KEYS = ("coil", "frame_id", "encoder_start", "encoder_end", "acquired_at", "camera")
RETENTIONS = ("none", "defects", "all")
_SEVERITY = {"stop": 3, "quarantine": 2, "review": 1, "ignore": 0}
_MESSAGE_ID_OK = re.compile(r"^[\x21-\x7e]{1,128}$")
#: Components up to this size (px) are measured on their stage-1 pixels alone.
_MAP_REFINE_PX = 24


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class WorkerConfig:
    """One camera's settings: the station record (``InspectionStation``) plus the worker's
    own limits. Lengths in the unit their name says; ``encoder_tolerance`` is the share of a
    frame's expected encoder counts by which its counts (or the step to the next frame) may
    differ before the frame's metres are in doubt."""

    site: str
    line: str
    station: str
    camera: str
    substrate: str = "coating"
    pixel_pitch_um: float = 20.0
    frame_width_px: int = 4096
    frame_height_px: int = 1024
    lane_width_mm: float = 300.0
    lane_offset_mm: float = 0.0
    encoder_counts_per_m: int = 100_000
    max_gap_m: float = 0.5
    latency_budget_ms: float = 300.0
    heartbeat_timeout_s: float = 2.0
    grey_band_low: float = 40.0
    grey_band_high: float = 215.0
    noise_band_high: float = 12.0
    rules: Rules = field(default_factory=lambda: parse({}))
    rollers: tuple[Roller, ...] = ()
    frame_retention: str = "defects"
    encoder_tolerance: float = 0.02
    max_frame_bytes: int = 32 * 1024 * 1024
    batch_size: int = 32
    #: A stop for the same rule is not sent again within this many seconds (the line is
    #: already stopping; the frames still in flight would only repeat it).
    stop_holdoff_s: float = 30.0
    source: str = "vision-worker"

    def __post_init__(self) -> None:
        if self.frame_retention not in RETENTIONS:
            raise ValueError(f"frame_retention must be one of {RETENTIONS}")
        if self.substrate not in ("coating", "separator"):
            raise ValueError("substrate must be coating or separator")
        for name in ("pixel_pitch_um", "encoder_counts_per_m", "lane_width_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.frame_width_px < CROP_PX or self.frame_height_px < CROP_PX:
            raise ValueError(
                f"frames must be at least {CROP_PX} px wide and {CROP_PX} rows high: stage 2 "
                f"cuts {CROP_PX} x {CROP_PX} crops (got {self.frame_width_px} x "
                f"{self.frame_height_px})"
            )
        if self.batch_size < 1 or self.max_gap_m < 0 or self.latency_budget_ms <= 0:
            raise ValueError("batch_size >= 1, max_gap_m >= 0, latency_budget_ms > 0")

    @property
    def frame_counts(self) -> float:
        """Encoder counts one frame should span (height x pitch)."""
        return self.frame_height_px * self.pixel_pitch_um * 1e-6 * self.encoder_counts_per_m

    @property
    def tolerance_counts(self) -> float:
        return max(1.0, self.encoder_tolerance * self.frame_counts)

    def metres(self, counts: float) -> float:
        return counts / self.encoder_counts_per_m


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a result names (also when the model could not be loaded: the registered
    one the worker was told to run)."""

    name: str
    version: str
    sha256: str
    threshold_set: str = ""

    def as_payload(self) -> dict:
        out = {"name": self.name, "version": self.version, "sha256": self.sha256}
        if self.threshold_set:
            out["threshold_set"] = self.threshold_set
        return out


# --------------------------------------------------------------------------- frames in


@dataclass(frozen=True)
class FrameHeader:
    """A frame's sidecar (directory source) or header (MQTT source): the coil under the
    camera, the camera's frame counter, the encoder counts at the first and after the last
    scan line (counted from the coil's start), when the last line was exposed."""

    coil: str
    frame_id: int
    encoder_start: int
    encoder_end: int
    acquired_at: datetime
    camera: str


@dataclass
class Frame:
    """One frame as a source hands it to the pipeline: decoded, or with the reason it could
    not be (``error``, ``error_field``; ``raw`` is what is kept as the dead letter)."""

    origin: str
    received: float
    header: FrameHeader | None = None
    image: np.ndarray | None = None
    error: str | None = None
    error_field: str | None = None
    raw: bytes = b""


@dataclass(frozen=True)
class Heartbeat:
    """The station's sign of life: the coil and encoder count now."""

    coil: str
    encoder: int
    at: datetime
    received: float
    origin: str = ""


class FrameError(ValueError):
    def __init__(self, reason: str, field: str):
        super().__init__(reason)
        self.reason = reason
        self.field = field


def _rfc3339(value, field: str) -> datetime:
    if not isinstance(value, str):
        raise FrameError("must be an RFC 3339 timestamp string", field)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FrameError(f"{value!r} is not an RFC 3339 timestamp", field) from exc
    if at.tzinfo is None:
        raise FrameError(f"{value!r} has no UTC offset", field)
    return at


def _count(doc: dict, key: str, field: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FrameError(f"{key} must be an integer >= 0, got {value!r}", field)
    return value


def parse_header(raw: bytes, *, camera: str, prefix: str = "sidecar") -> FrameHeader:
    """A frame's JSON header, checked; FrameError names the bad field. Unknown keys are
    ignored (a newer station may send more)."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"not JSON: {exc}", prefix) from exc
    if not isinstance(doc, dict):
        raise FrameError("must be a JSON object", prefix)
    missing = [k for k in SIDECAR_KEYS if k not in doc]
    if missing:
        raise FrameError(f"missing {', '.join(missing)}", f"{prefix}.{missing[0]}")
    coil = doc["coil"]
    if not isinstance(coil, str) or not coil.strip() or len(coil) > 200:
        raise FrameError("coil must be a serial of 1 to 200 characters", f"{prefix}.coil")
    frame_id = _count(doc, "frame_id", f"{prefix}.frame_id")
    start = _count(doc, "encoder_start", f"{prefix}.encoder_start")
    end = _count(doc, "encoder_end", f"{prefix}.encoder_end")
    if end <= start:
        raise FrameError(
            f"encoder_end {end} must be greater than encoder_start {start}", f"{prefix}.encoder_end"
        )
    at = _rfc3339(doc["acquired_at"], f"{prefix}.acquired_at")
    cam = doc["camera"]
    if cam != camera:
        raise FrameError(f"camera {cam!r} is not this worker's {camera!r}", f"{prefix}.camera")
    return FrameHeader(coil.strip(), frame_id, start, end, at, cam)


def decode_image(data: bytes, config: WorkerConfig, *, encoding: str = "png") -> np.ndarray:
    """The frame's 8-bit grey image; FrameError(field ``image``) when it is empty, over
    ``max_frame_bytes``, does not decode, is not 8-bit single-channel, or has another size
    than the camera's frames. ``encoding`` ``raw8`` is rows of bytes (frame width x height)."""
    if not data:
        raise FrameError("empty image", "image")
    if len(data) > config.max_frame_bytes:
        raise FrameError(
            f"image of {len(data)} bytes is over the {config.max_frame_bytes}-byte limit", "image"
        )
    shape = (config.frame_height_px, config.frame_width_px)
    if encoding == "raw8":
        if len(data) != shape[0] * shape[1]:
            raise FrameError(
                f"raw8 image of {len(data)} bytes is not {shape[1]}x{shape[0]}", "image"
            )
        return np.frombuffer(data, np.uint8).reshape(shape)
    if encoding != "png":
        raise FrameError(f"unknown image encoding {encoding!r}", "encoding")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FrameError("the image does not decode (PNG expected)", "image")
    if image.dtype != np.uint8 or image.ndim != 2:
        channels = image.shape[2] if image.ndim == 3 else 1
        raise FrameError(
            f"the image must be 8-bit grey, got {image.dtype} with {channels} channel(s)", "image"
        )
    if image.shape != shape:
        raise FrameError(
            f"the image is {image.shape[1]}x{image.shape[0]} px, the camera's frames are "
            f"{shape[1]}x{shape[0]}",
            "image",
        )
    return image


def read_frame(
    header: bytes,
    image: bytes,
    config: WorkerConfig,
    *,
    origin: str,
    received: float,
    encoding: str = "png",
    expected_frame_id: int | None = None,
) -> Frame:
    """Parse a header and decode its image into a :class:`Frame` (never raises for bad
    input: the frame then carries the reason and what to keep)."""
    try:
        hdr = parse_header(header, camera=config.camera)
    except FrameError as exc:
        return Frame(origin, received, error=exc.reason, error_field=exc.field, raw=header)
    if expected_frame_id is not None and hdr.frame_id != expected_frame_id:
        return Frame(
            origin,
            received,
            error=f"frame_id {hdr.frame_id} differs from the file's {expected_frame_id}",
            error_field="sidecar.frame_id",
            raw=header,
        )
    try:
        img = decode_image(image, config, encoding=encoding)
    except FrameError as exc:
        return Frame(
            origin, received, header=hdr, error=exc.reason, error_field=exc.field, raw=image
        )
    return Frame(origin, received, header=hdr, image=img)


def parse_heartbeat(raw: bytes, *, received: float, origin: str = "") -> Heartbeat:
    """``{"coil": ..., "encoder": ..., "at": RFC 3339}``; FrameError if not."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"not JSON: {exc}", "heartbeat") from exc
    if not isinstance(doc, dict):
        raise FrameError("must be a JSON object", "heartbeat")
    coil = doc.get("coil")
    if not isinstance(coil, str) or not coil.strip():
        raise FrameError("coil must be a serial", "heartbeat.coil")
    encoder = _count(doc, "encoder", "heartbeat.encoder")
    return Heartbeat(
        coil.strip(), encoder, _rfc3339(doc.get("at"), "heartbeat.at"), received, origin
    )


# --------------------------------------------------------------------------- results out


@dataclass(frozen=True)
class StopRequest:
    """What the stop callable is told: why (``reason``, ``rule``, ``suspect_roller``), which
    coil and where, which frame's envelope will carry it, and when that frame was exposed."""

    reason: str
    rule: str
    coil: str
    md_m: float
    frame_id: int
    message_id: str
    acquired_at: datetime
    suspect_roller: str | None = None


@dataclass
class Outgoing:
    """An envelope on its way to ``emit``, with the images still to encode: a crop per
    defect (same order, None for none) and the full frame by retention."""

    envelope: dict
    crops: list[np.ndarray | None] = field(default_factory=list)
    frame: np.ndarray | None = None


def png_b64(image: np.ndarray) -> tuple[str, str]:
    """PNG bytes of an 8-bit image as base64, and their sha256 (what the handler checks)."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    raw = buf.tobytes()
    return base64.b64encode(raw).decode("ascii"), hashlib.sha256(raw).hexdigest()


def finish(item: Outgoing) -> dict:
    """The envelope with its evidence encoded (crop PNGs; the frame if it fits the limit)."""
    env = item.envelope
    payload = env["payload"]
    for d, crop in zip(payload["defects"], item.crops, strict=True):
        if crop is not None:
            d["crop_png_b64"], d["crop_sha256"] = png_b64(crop)
    if item.frame is not None:
        b64, sha = png_b64(item.frame)
        if len(b64) <= MAX_FRAME_B64_CHARS:
            payload["frame_png_b64"], payload["frame_sha256"] = b64, sha
        else:
            note = f"frame not kept: {len(b64)} base64 characters is over the limit"
            payload["detail"] = (payload.get("detail", "") + "; " + note).strip("; ")[:500]
    return env


class Emitter:
    """Delivers envelopes on its own thread, in order, retrying a failing ``emit`` with
    back-off (a database or broker outage loses nothing while the worker runs). The
    inspection thread only puts on the queue, so it never waits for delivery."""

    def __init__(
        self,
        emit: Callable[[dict], None],
        *,
        retry_min_s: float = 0.5,
        retry_max_s: float = 30.0,
        on_thread_exit: Callable[[], None] | None = None,
    ):
        self._emit = emit
        self._queue: queue.Queue[Outgoing | None] = queue.Queue()
        self._retry = (retry_min_s, retry_max_s)
        self._closing = threading.Event()
        self._on_exit = on_thread_exit
        self.sent = 0
        self.failures = 0
        self.lost = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="vision-emit", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def put(self, item: Outgoing) -> None:
        self._queue.put(item)

    def close(self, timeout_s: float = 30.0) -> bool:
        """Deliver what is queued (for at most ``timeout_s``), then end the thread. False if
        envelopes were left undelivered."""
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._closing.set()
        self._thread.join(5.0)
        return not self._thread.is_alive() and self.lost == 0

    def join_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued so far was delivered (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.005)
        return False

    def _deliver(self, env: dict) -> None:
        delay = self._retry[0]
        while True:
            try:
                self._emit(env)
                self.sent += 1
                return
            except Exception as exc:  # delivery failed (database, broker): retry, never drop
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "envelope %s not delivered (%s); retry in %.1f s",
                    env.get("message_id"),
                    self.last_error,
                    delay,
                    exc_info=self.failures == 1,
                )
                if self._closing.wait(delay):
                    self.lost += 1
                    logger.error("envelope %s lost at shutdown", env.get("message_id"))
                    return
                delay = min(delay * 2, self._retry[1])

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    try:
                        env = finish(item)
                    except Exception:
                        logger.exception("evidence of %s could not be encoded", item.envelope)
                        env = item.envelope
                    self._deliver(env)
                finally:
                    self._queue.task_done()
        finally:
            if self._on_exit is not None:
                self._on_exit()


# --------------------------------------------------------------------------- localisation


@dataclass
class Localised:
    """One defect after stage 2: the model's call, its pixels (``mask``, uint8, whose first
    pixel is frame pixel ``x0``, ``y0``) and their measures (:func:`_measure`)."""

    cls: str
    band: str
    confidence: float
    probabilities: dict[str, float]
    mask: np.ndarray
    x0: int
    y0: int
    crop: np.ndarray
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)
    area_px: int = 0
    length_px: float = 0.0
    centroid: tuple[float, float] = (0.0, 0.0)


def _measure(d: Localised) -> None:
    """Box, area, centroid and length of a defect's pixels (its 0/1 mask). The length is the
    major axis of the pixels' second moments, sqrt(12 x largest eigenvalue) + 1 px: exact
    for a line (a scratch, a crack, a fold), 0.87 x the diameter for a disc.

    The raw moments are exact integer sums: for a mask of up to ``_PRODUCT_MOMENTS_PX``
    pixels two small matrix products, ``[1, y, y^2]^T . mask . [1, x, x^2]``, give them at
    a fraction of ``cv2.moments``' cost; larger masks use ``cv2.moments``. The central
    moments are formed as OpenCV forms them, so both give the same floats."""
    _set_measures(d, *_moments(d.mask))


def _moments(mask: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """The raw moments m00, m10, m01, m20, m11, m02 of a 0/1 mask (see :func:`_measure`)."""
    h, w = mask.shape
    if h * w > _PRODUCT_MOMENTS_PX:
        m = cv2.moments(mask, binaryImage=True)
        return m["m00"], m["m10"], m["m01"], m["m20"], m["m11"], m["m02"]
    powers = _POWERS if h <= len(_POWERS) and w <= len(_POWERS) else _powers(max(h, w))
    if w <= _ROW_SUMS_F32_PX:
        # Per-row sums of 1, x, x^2 stay below 2^24 for rows this short: exact in float32,
        # which halves the product's memory.
        rows = np.dot(mask.astype(np.float32), _POWERS_F32[:w])
    else:
        rows = mask @ powers[:w]
    (n, m10, m20), (m01, m11, _), (m02, _, _) = np.dot(powers[:h].T, rows).tolist()
    return n, m10, m01, m20, m11, m02


def _set_measures(d: Localised, n, m10, m01, m20, m11, m02) -> None:
    """A defect's box (its mask's bounding rectangle) and, from its mask's raw moments, its
    area, centroid and length (see :func:`_measure`)."""
    bx, by, bw, bh = cv2.boundingRect(d.mask)
    d.bbox = (d.x0 + bx, d.y0 + by, d.x0 + bx + bw, d.y0 + by + bh)
    d.area_px = round(n)
    if n < 1:
        d.centroid = (d.x0 + bx + bw / 2.0, d.y0 + by + bh / 2.0)
        d.length_px = 0.0
        return
    d.centroid = (d.x0 + m10 / n, d.y0 + m01 / n)
    inv = 1.0 / n
    a = (m20 - m10 * (m10 * inv)) / n
    b = (m11 - m10 * (m01 * inv)) / n
    c = (m02 - m01 * (m01 * inv)) / n
    major = (a + c) / 2.0 + math.sqrt(((a - c) / 2.0) ** 2 + b * b)
    d.length_px = math.sqrt(12.0 * major) + 1.0


def _cells_under(cells: np.ndarray, cell: int | None, y0: int, y1: int, x0: int, x1: int):
    """A defect map's cells (0/1) under crop pixels ``y0:y1, x0:x1``, one value per pixel
    (the nearest cell: the map scaled to the crop). ``cell`` is the cell size in pixels when
    the map tiles the crop by a power of two (only the cells under the part are scaled),
    None for any other map (scaled whole, by OpenCV)."""
    if cell is None:
        scaled = cv2.resize(cells, (CROP_PX, CROP_PX), interpolation=cv2.INTER_NEAREST)
        return scaled[y0:y1, x0:x1]
    r0, c0 = y0 // cell, x0 // cell
    block = cells[r0 : (y1 - 1) // cell + 1, c0 : (x1 - 1) // cell + 1]
    scaled = block.repeat(cell, 0).repeat(cell, 1)
    dy, dx = y0 - r0 * cell, x0 - c0 * cell
    return scaled[dy : dy + y1 - y0, dx : dx + x1 - x0]


#: Cell sizes :func:`_cells_across` scales with one multiply: the unsigned
#: integer of that many bytes, and the value with each of them 1.
_CELL_BYTES = {
    2: (np.uint16, 0x0101),
    4: (np.uint32, 0x0101_0101),
    8: (np.uint64, 0x0101_0101_0101_0101),
}


def _cells_across(cells: np.ndarray, cell: int) -> np.ndarray:
    """Maps of 0/1 cells ``(K, H, W)`` scaled to pixels across, ``(K, H, W x cell)``: each
    cell repeated ``cell`` times along its row, by multiplying it, as an integer of ``cell``
    bytes, by the one whose bytes are all 1. ``cell`` must be a key of ``_CELL_BYTES``.
    Repeating rows ``cell`` times too gives what :func:`_cells_under` gives."""
    dtype, ones = _CELL_BYTES[cell]
    return np.multiply(cells, dtype(ones), dtype=dtype).view(np.uint8)


def _cells_under_across(across: np.ndarray, cell: int, y0: int, y1: int, x0: int, x1: int):
    """:func:`_cells_under` of a map already scaled across (one of :func:`_cells_across`'s
    maps): only the rows under the part are repeated."""
    r0 = y0 // cell
    dy = y0 - r0 * cell
    return across[r0 : (y1 - 1) // cell + 1].repeat(cell, 0)[dy : dy + y1 - y0, x0:x1]


#: Masks up to this many pixels get their moments from matrix products (see _measure).
_PRODUCT_MOMENTS_PX = 1 << 16


def _powers(n: int) -> np.ndarray:
    """Rows ``[1, i, i^2]`` for i = 0, 1, ..., at least ``n`` of them (float64)."""
    return _powers_of_size(max(256, 1 << (n - 1).bit_length()))


@functools.cache
def _powers_of_size(size: int) -> np.ndarray:
    i = np.arange(size, dtype=np.float64)
    out = np.stack([np.ones_like(i), i, i * i], axis=1)
    out.flags.writeable = False
    return out


_POWERS = _powers(4096)
#: Masks up to this wide sum their rows in float32 (sum of x^2 for x < 256 is < 2^24).
_ROW_SUMS_F32_PX = 256
_POWERS_F32 = _POWERS[:_ROW_SUMS_F32_PX].astype(np.float32)


def _merge_overlapping(found: list[Localised]) -> list[Localised]:
    """Defects of one class whose boxes touch are one defect (a long scratch that stage 1
    saw as two components, a crack and its branch); the more confident call names it.
    Every defect comes measured (:func:`_measure`); a merged one is measured again."""
    merged = len(found) > 1
    while merged:
        merged = False
        found.sort(key=lambda d: d.bbox[0])
        for i in range(len(found)):
            a = found[i]
            for j in range(i + 1, len(found)):
                b = found[j]
                if b.bbox[0] > a.bbox[2]:
                    break  # sorted by x0: nothing further right touches a
                if a.cls != b.cls or a.bbox[1] > b.bbox[3] or b.bbox[1] > a.bbox[3]:
                    continue
                keep, drop = (a, b) if a.confidence >= b.confidence else (b, a)
                x0, y0 = min(a.x0, b.x0), min(a.y0, b.y0)
                x1 = max(a.x0 + a.mask.shape[1], b.x0 + b.mask.shape[1])
                y1 = max(a.y0 + a.mask.shape[0], b.y0 + b.mask.shape[0])
                union = np.zeros((y1 - y0, x1 - x0), np.uint8)
                for d in (a, b):
                    hh, ww = d.mask.shape
                    view = union[d.y0 - y0 : d.y0 - y0 + hh, d.x0 - x0 : d.x0 - x0 + ww]
                    np.bitwise_or(view, d.mask, out=view)
                keep.mask, keep.x0, keep.y0 = union, x0, y0
                _measure(keep)
                found.remove(drop)
                merged = True
                break
            if merged:
                break
    return found


# --------------------------------------------------------------------------- the pipeline


@dataclass
class Stats:
    frames: int = 0
    inspected: int = 0
    uninspected: int = 0
    rejected: int = 0
    skipped_stale: int = 0
    candidates: int = 0
    crops: int = 0
    defects: int = 0
    stops: int = 0
    stop_errors: int = 0
    screen_s: float = 0.0
    classify_s: float = 0.0
    frame_s: float = 0.0


class Pipeline:
    """One camera's inspection state and the steps of the module docstring.

    ``model`` is a loaded :class:`~inspection.vision.model.VisionModel`, or None with
    ``model_error`` saying why (the worker then reports every frame uninspected,
    ``model_checksum``). ``identity`` is what envelopes name as the model. ``clock`` is
    monotonic seconds (frames carry their arrival on it); ``wall`` gives aware datetimes.
    """

    def __init__(
        self,
        config: WorkerConfig,
        *,
        model,
        identity: ModelIdentity,
        emit: Callable[[dict], None] | None = None,
        stop: Callable[[StopRequest], None],
        reject: Callable[[bytes, str, str], None],
        model_error: str | None = None,
        flat: FlatField | None = None,
        screen_params: ScreenParams | None = None,
        shadow=None,
        emitter: Emitter | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        if model is None and not model_error:
            raise ValueError("without a model, say why (model_error)")
        if flat is not None and flat.width != config.frame_width_px:
            raise ValueError(
                f"the flat field has {flat.width} columns, the camera {config.frame_width_px}"
            )
        self.config = config
        self.model = model
        self.model_error = model_error
        self.identity = identity
        self.shadow = shadow
        self.flat = flat or FlatField.identity(config.frame_width_px)
        # The flat field in fixed point for the crops: gain x 128, whole grey levels offset,
        # indexed by a crop's first column (row x0: the CROP_PX columns from x0, a window
        # onto one array).
        self._flat_identity = self.flat.is_identity
        gain_q = np.clip(np.rint(self.flat.gain * 128), 1, 256).astype(np.uint16)
        self._flat_gain_q = sliding_window_view(gain_q, CROP_PX)
        self._flat_offset_q = (
            sliding_window_view(
                np.clip(np.rint(self.flat.offset), 0, 255).astype(np.uint8), CROP_PX
            )
            if self.flat.offset.any()
            else None
        )
        # The model's input, filled batch by batch (one float32 buffer for the worker's life).
        self._batch = np.empty((config.batch_size, 1, CROP_PX, CROP_PX), np.float32)
        self.screen_params = screen_params or ScreenParams()
        self._stop = stop
        self._reject = reject
        if emitter is None:
            if emit is None:
                raise ValueError("give emit or an emitter")
            emitter = Emitter(emit)
        self.emitter = emitter
        self.clock = clock
        self.wall = wall
        self.engine = RuleEngine(config.rules, config.rollers)
        self.reference = StreakReference()
        self.stats = Stats()
        self.coil: str | None = None
        self.covered_until: int | None = None
        self.last_frame_id: int | None = None
        self.last_contact = clock()
        self.last_frame_at = clock()
        self.contact_lost = False
        self._uninspected_run_m = 0.0
        self._run_stopped = False
        self._last_stop: dict[str, float] = {}
        self._watch_from = 0
        self._hb_coil: str | None = None
        self._hb_since = clock()

    # --- public -------------------------------------------------------------------------

    def handle(self, item: Frame | Heartbeat) -> None:
        """Process one item from the source, in arrival order."""
        if isinstance(item, Heartbeat):
            self._heartbeat(item)
        else:
            self._frame(item)

    def tick(self) -> None:
        """Periodic checks while nothing arrives: contact lost (no frame and no heartbeat
        for ``heartbeat_timeout_s``)."""
        timeout = self.config.heartbeat_timeout_s
        if timeout <= 0 or self.contact_lost:
            return
        if self.clock() - self.last_contact > timeout:
            self.contact_lost = True
            logger.warning(
                "%s: no frame and no heartbeat for %.1f s; the metres until contact returns "
                "will be reported uninspected",
                self.config.camera,
                timeout,
            )

    def close(self, timeout_s: float = 30.0) -> bool:
        return self.emitter.close(timeout_s)

    # --- envelopes ----------------------------------------------------------------------

    def message_id(self, coil: str, suffix: str) -> str:
        c = self.config
        mid = f"vision:{c.site}:{c.line}:{c.station}:{c.camera}:{coil}:{suffix}"
        if not _MESSAGE_ID_OK.match(mid):
            digest = hashlib.sha256(mid.encode()).hexdigest()[:40]
            mid = f"vision:{c.station}:{c.camera}:{digest}:{suffix}"[:128]
        return mid

    def _envelope(self, coil: str, message_id: str, payload: dict) -> dict:
        c = self.config
        return {
            "message_id": message_id,
            "schema": ENVELOPE_SCHEMA,
            "source": c.source,
            "sent_at": self.wall().isoformat(),
            "site": c.site,
            "line": c.line,
            "station": c.station,
            "kind": KIND,
            "unit": coil,
            "payload": payload,
        }

    def _base_payload(self, *, frame_id: int, start: int, end: int, acquired_at: datetime) -> dict:
        c = self.config
        return {
            "frame_id": frame_id,
            "camera": c.camera,
            "encoder_start": start,
            "encoder_end": end,
            "coil_start_m": round(c.metres(start), 6),
            "coil_end_m": round(c.metres(end), 6),
            "lane_width_mm": c.lane_width_mm,
            "width_px": c.frame_width_px,
            "height_px": c.frame_height_px,
            "pixel_pitch_um": c.pixel_pitch_um,
            "acquired_at": acquired_at.isoformat(),
            "model": self.identity.as_payload(),
            "verdict": "ok",
            "defects": [],
        }

    def _uninspected(
        self,
        *,
        coil: str,
        frame_id: int,
        start: int,
        end: int,
        reason: str,
        detail: str,
        acquired_at: datetime,
        suffix: str,
        image: np.ndarray | None = None,
        started: float | None = None,
    ) -> None:
        """Report ``[start, end)`` counts of ``coil`` uninspected, and stop the line when the
        uninspected run grew beyond ``max_gap_m``."""
        if end <= start:
            return
        payload = self._base_payload(
            frame_id=frame_id, start=start, end=end, acquired_at=acquired_at
        )
        payload["verdict"] = "uninspected"
        payload["uninspected_reason"] = reason
        payload["detail"] = detail[:500]
        if started is not None:
            payload["duration_ms"] = round((self.clock() - started) * 1000, 3)
        mid = self.message_id(coil, suffix)
        self._uninspected_run_m += self.config.metres(end - start)
        if self._uninspected_run_m > self.config.max_gap_m and not self._run_stopped:
            self._run_stopped = True
            request = StopRequest(
                reason=(
                    f"{self._uninspected_run_m:.3f} m of coil {coil} uninspected on camera "
                    f"{self.config.camera} ({reason.replace('_', ' ')}); the limit is "
                    f"{self.config.max_gap_m:g} m"
                )[:300],
                rule=f"uninspected over max_gap_m {self.config.max_gap_m:g} m",
                coil=coil,
                md_m=self.config.metres(end),
                frame_id=frame_id,
                message_id=mid,
                acquired_at=acquired_at,
            )
            stop_block = self._send_stop(request, key="max_gap")
            if stop_block is not None:
                payload["stop"] = stop_block
        keep = image is not None and self.config.frame_retention != "none"
        self.stats.uninspected += 1
        self.emitter.put(Outgoing(self._envelope(coil, mid, payload), [], image if keep else None))

    def _send_stop(self, request: StopRequest, *, key: str) -> dict | None:
        """Call ``stop`` unless the same rule stopped within ``stop_holdoff_s``; the block the
        envelope carries when it was sent."""
        now = self.clock()
        last = self._last_stop.get(key)
        if last is not None and now - last < self.config.stop_holdoff_s:
            logger.info("stop for %s already sent %.1f s ago; not repeated", key, now - last)
            return None
        self._last_stop[key] = now
        block = {"reason": request.reason[:300], "rule": request.rule[:200]}
        if request.suspect_roller:
            block["suspect_roller"] = request.suspect_roller[:64]
        try:
            self._stop(request)
            self.stats.stops += 1
            block["sent_at"] = self.wall().isoformat()
        except Exception as exc:  # the stop path itself failed: loud, and on the record
            self.stats.stop_errors += 1
            logger.exception("line stop for %s could not be sent", request.coil)
            block["reason"] = f"{request.reason} [not sent: {type(exc).__name__}: {exc}]"[:300]
        logger.warning("LINE STOP %s: %s", request.coil, request.reason)
        return block

    # --- coverage -----------------------------------------------------------------------

    def _new_coil(self, coil: str) -> None:
        had = self.coil is not None
        self.coil = coil
        self.engine.new_coil(coil)
        self.reference.reset()
        self.covered_until = 0 if had else None
        self.last_frame_id = None

    def _cover_to(
        self,
        *,
        coil: str,
        position: int,
        reason: str,
        detail: str,
        acquired_at: datetime,
        frame_id: int,
    ) -> None:
        """Report the metres between what is accounted for and ``position`` (if more than
        the encoder tolerance) as uninspected, and account for them."""
        if self.covered_until is None:
            self.covered_until = position
            return
        if position - self.covered_until > self.config.tolerance_counts:
            start = self.covered_until
            self._uninspected(
                coil=coil,
                frame_id=frame_id,
                start=start,
                end=position,
                reason=reason,
                detail=detail,
                acquired_at=acquired_at,
                suffix=f"{reason}:{start}-{position}",
            )
        self.covered_until = max(self.covered_until, position)

    def _contact(self, *, coil: str, position: int, at: datetime, frame_id: int) -> None:
        """A frame or heartbeat arrived: if contact had been lost, what passed meanwhile is
        reported ``heartbeat_lost``."""
        self.last_contact = self.clock()
        if self.contact_lost:
            self.contact_lost = False
            if coil == self.coil:
                self._cover_to(
                    coil=coil,
                    position=position,
                    reason="heartbeat_lost",
                    detail=(
                        f"no frame and no heartbeat from the station for more than "
                        f"{self.config.heartbeat_timeout_s:g} s"
                    ),
                    acquired_at=at,
                    frame_id=frame_id,
                )

    def _heartbeat(self, hb: Heartbeat) -> None:
        """The station's encoder: contact, and the camera's silence while the line runs.

        A heartbeat naming another coil than the frames (the coil is changing, or the camera
        never showed the new one) does not touch the frames' accounting: only when no frame
        of that coil comes within the frame timeout while its encoder runs on does the
        worker move to it and report the metres since its first heartbeat."""
        c = self.config
        frame_timeout_s = max(2 * c.latency_budget_ms / 1000.0, c.heartbeat_timeout_s)
        if hb.coil != self.coil:
            self.last_contact = self.clock()
            self.contact_lost = False
            if hb.coil != self._hb_coil:
                self._hb_coil, self._hb_since, self._watch_from = hb.coil, self.clock(), hb.encoder
            silent_s = self.clock() - max(self.last_frame_at, self._hb_since)
            if silent_s > frame_timeout_s and hb.encoder - self._watch_from > c.frame_counts:
                self._new_coil(hb.coil)
                self.covered_until = self._watch_from
                self._camera_silent(hb, silent_s)
            return
        self._contact(coil=hb.coil, position=hb.encoder, at=hb.at, frame_id=self._next_id())
        if self.covered_until is None:
            return
        silent_s = self.clock() - self.last_frame_at
        if silent_s > frame_timeout_s and hb.encoder - self.covered_until > c.frame_counts:
            self._camera_silent(hb, silent_s)

    def _camera_silent(self, hb: Heartbeat, silent_s: float) -> None:
        """The camera sent nothing while the encoder ran on: those metres go uninspected."""
        self._cover_to(
            coil=hb.coil,
            position=hb.encoder,
            reason="frame_gap",
            detail=(
                f"camera {self.config.camera} sent no frame for {silent_s:.1f} s while the "
                f"encoder advanced to {hb.encoder}"
            ),
            acquired_at=hb.at,
            frame_id=self._next_id(),
        )

    def _next_id(self) -> int:
        return 0 if self.last_frame_id is None else self.last_frame_id + 1

    # --- frames -------------------------------------------------------------------------

    def _frame(self, frame: Frame) -> None:
        started = self.clock()
        self.stats.frames += 1
        c = self.config
        hdr = frame.header
        if frame.error is not None:
            self.stats.rejected += 1
            try:
                self._reject(frame.raw, frame.error, frame.error_field or "frame")
            except Exception:
                logger.exception("rejected frame %s could not be recorded", frame.origin)
            logger.warning(
                "frame %s rejected: %s (%s)", frame.origin, frame.error, frame.error_field
            )
        if hdr is None:
            return  # unreadable sidecar: its metres show as a gap at the next readable frame
        if hdr.coil != self.coil:
            self._new_coil(hdr.coil)
            if self.covered_until == 0 and hdr.encoder_start <= c.tolerance_counts:
                self.covered_until = hdr.encoder_start
        elif self.covered_until is not None and hdr.encoder_end <= self.covered_until:
            # Already accounted for: a repeat (redelivery) or a frame that came after its
            # metres were reported uninspected.
            self.stats.skipped_stale += 1
            logger.info("frame %s of %s already accounted for; skipped", hdr.frame_id, hdr.coil)
            return
        self.last_frame_at = self.clock()
        self._contact(
            coil=hdr.coil, position=hdr.encoder_start, at=hdr.acquired_at, frame_id=hdr.frame_id
        )
        ids_jumped = self.last_frame_id is not None and hdr.frame_id != self.last_frame_id + 1
        if (
            self.covered_until is not None
            and hdr.encoder_start - self.covered_until > c.tolerance_counts
        ):
            if ids_jumped:
                reason = "frame_gap"
                detail = f"frames {self.last_frame_id + 1} to {hdr.frame_id - 1} never arrived"
            elif self.covered_until == 0 and self.last_frame_id is None:
                reason = "frame_gap"
                detail = f"the first frame of coil {hdr.coil} starts at count {hdr.encoder_start}"
            else:
                reason = "encoder_mismatch"
                detail = (
                    f"frame {hdr.frame_id} starts at count {hdr.encoder_start}, the previous "
                    f"ended at {self.covered_until}"
                )
            self._cover_to(
                coil=hdr.coil,
                position=hdr.encoder_start,
                reason=reason,
                detail=detail,
                acquired_at=hdr.acquired_at,
                frame_id=(self.last_frame_id + 1)
                if self.last_frame_id is not None
                else hdr.frame_id,
            )
        self.last_frame_id = hdr.frame_id
        start = hdr.encoder_start
        self.covered_until = max(self.covered_until or 0, hdr.encoder_end)
        suffix = str(hdr.frame_id)

        def uninspected(reason: str, detail: str, image=None) -> None:
            self._uninspected(
                coil=hdr.coil,
                frame_id=hdr.frame_id,
                start=start,
                end=hdr.encoder_end,
                reason=reason,
                detail=detail,
                acquired_at=hdr.acquired_at,
                suffix=suffix,
                image=image,
                started=started,
            )

        if frame.error is not None:
            uninspected("bad_frame", f"{frame.error_field}: {frame.error}")
            return
        waited_ms = (started - frame.received) * 1000.0
        if waited_ms > c.latency_budget_ms:
            uninspected(
                "backlog",
                f"waited {waited_ms:.0f} ms, over the {c.latency_budget_ms:g} ms budget",
            )
            return
        if self.model is None:
            uninspected("model_checksum", f"the model is not verified: {self.model_error}")
            return
        counts = hdr.encoder_end - hdr.encoder_start
        if abs(counts - c.frame_counts) > c.tolerance_counts:
            uninspected(
                "encoder_mismatch",
                f"{counts} encoder counts for {c.frame_height_px} rows; expected "
                f"{c.frame_counts:.0f} +- {c.tolerance_counts:.0f}",
                frame.image,
            )
            return
        t0 = self.clock()
        result = screen(
            frame.image, flat=self.flat, params=self.screen_params, reference=self.reference
        )
        self.stats.screen_s += self.clock() - t0
        if not (c.grey_band_low <= result.mean_grey <= c.grey_band_high):
            uninspected(
                "input_drift",
                f"mean grey {result.mean_grey:.1f} outside the commissioning band "
                f"{c.grey_band_low:g}-{c.grey_band_high:g}",
                frame.image,
            )
            return
        if result.noise_sigma > c.noise_band_high:
            uninspected(
                "input_drift",
                f"noise sigma {result.noise_sigma:.2f} above the commissioning band "
                f"{c.noise_band_high:g}",
                frame.image,
            )
            return
        self._inspect(frame, hdr, start, result, started)

    def _crops(self, image: np.ndarray, result: ScreenResult) -> tuple[np.ndarray, list, list]:
        """Flat-field-corrected crops centred on the candidates, clamped at the borders, and
        their origins (``x0`` and ``y0`` lists)."""
        h, w = image.shape
        s = CROP_PX
        n = len(result.candidates)
        xs, ys = [], []
        crops = np.empty((n, s, s), np.uint8)
        for i, cand in enumerate(result.candidates):
            cx, cy = cand.centroid
            x0 = min(max(round(cx) - s // 2, 0), w - s)
            y0 = min(max(round(cy) - s // 2, 0), h - s)
            xs.append(x0)
            ys.append(y0)
            crops[i] = image[y0 : y0 + s, x0 : x0 + s]
        if not n or self._flat_identity:
            return crops, xs, ys
        # Per column (raw - offset) * gain, in 16-bit fixed point with 7 fraction bits
        # (gains up to 2; within half a grey level of the float correction), rounded half
        # up and saturated to 8 bits.
        if self._flat_offset_q is not None:
            off = self._flat_offset_q[xs][:, None, :]
            np.maximum(crops, off, out=crops)
            crops -= off
        work = crops.astype(np.uint16)
        work *= self._flat_gain_q[xs][:, None, :]
        # p / 128 has 7 fraction bits, so rounding p / 128 + 1/256 to nearest (what OpenCV
        # does, exactly in float32 here) is floor(p / 128 + 1/2) = (p + 64) >> 7.
        crops = cv2.convertScaleAbs(work.reshape(n * s, s), alpha=1 / 128, beta=1 / 256)
        return crops.reshape(n, s, s), xs, ys

    def _classify(self, model, crops: np.ndarray):
        """The model's calls and defect maps, in batches of ``batch_size`` through the
        pipeline's one float32 batch buffer."""
        b = self.config.batch_size
        if crops.shape[0] <= b:
            return model.predict(crops, out=self._batch)
        preds, maps = [], []
        for i in range(0, crops.shape[0], b):
            p, m = model.predict(crops[i : i + b], out=self._batch)
            preds.extend(p)
            maps.append(m)
        return preds, np.concatenate(maps)

    def stage2(self, image: np.ndarray, result: ScreenResult) -> tuple[np.ndarray, list[Localised]]:
        """Crops around stage 1's candidates through the model in batches, and the pixels
        of each defect it calls (defects of one class that touch merged). Returns the crops
        (what the model saw) and the defects.

        A defect's pixels are its stage-1 component's: the fine detectors' pixels in its
        box (a coarse component's blocks; a streak's whole box). When the box is larger
        than a few map cells, they are kept to the cells the model's defect map marks
        (> 0.5, grown by one cell) where the box lies within the crop, if any are there."""
        crops, ox, oy = self._crops(image, result)
        if not crops.shape[0]:
            return crops, []
        preds, dmaps = self._classify(self.model, crops)
        called = [i for i, p in enumerate(preds) if p.is_defect]
        if not called:
            return crops, []
        hit = dmaps > 0.5
        marked = hit.reshape(len(hit), -1).any(1).tolist()
        s = CROP_PX
        fine, coarse = result.fine_mask, result.coarse_mask
        found: list[Localised] = []
        # Defects whose mask the map refines: (defect, crop, the box's part within the crop).
        refine: list[tuple[Localised, int, int, int, int, int]] = []
        for i in called:
            cand = result.candidates[i]
            x0, y0, x1, y1 = cand.box
            pred = preds[i]
            d = Localised(
                pred.cls, pred.band, pred.confidence, pred.probabilities, None, x0, y0, crops[i]
            )
            found.append(d)
            if cand.source == "streak":
                d.mask = np.ones((y1 - y0, x1 - x0), np.uint8)
                _measure(d)
                continue
            mask = fine[y0:y1, x0:x1]
            if cand.source == "coarse":
                blocks = coarse[y0 // 4 : (y1 + 3) // 4, x0 // 4 : (x1 + 3) // 4]
                mask = (
                    blocks.repeat(4, 0)
                    .repeat(4, 1)[y0 % 4 : y0 % 4 + (y1 - y0), x0 % 4 : x0 % 4 + (x1 - x0)]
                    .view(np.uint8)
                )
                if not mask.any():
                    mask = np.ones((y1 - y0, x1 - x0), np.uint8)
            d.mask = mask
            # A component within a few map cells gains nothing from 8-px cells.
            if marked[i] and (x1 - x0 > _MAP_REFINE_PX or y1 - y0 > _MAP_REFINE_PX):
                cx0, cy0 = ox[i], oy[i]
                ix0, iy0 = max(x0, cx0), max(y0, cy0)
                ix1, iy1 = min(x1, cx0 + s), min(y1, cy0 + s)
                if ix1 > ix0 and iy1 > iy0:
                    refine.append((d, i, iy0, iy1, ix0, ix1))
                    continue
            _measure(d)
        if refine:
            # The cells each map marks (> 0.5), grown by one cell (3 x 3).
            sub = hit[[r[1] for r in refine]]
            grown = sub.copy()
            grown[:, 1:] |= sub[:, :-1]
            grown[:, :-1] |= sub[:, 1:]
            cells = grown.copy()
            cells[:, :, 1:] |= grown[:, :, :-1]
            cells[:, :, :-1] |= grown[:, :, 1:]
            cells = cells.view(np.uint8)
            mh, mw = cells.shape[1:]
            # Crop pixels per map cell when the map tiles the crop by a power of two (then a
            # repeat is exactly what cv2.resize with INTER_NEAREST gives), else None.
            cell = s // mh if mh == mw and s % mh == 0 and (s // mh) & (s // mh - 1) == 0 else None
            across = _cells_across(cells, cell) if cell in _CELL_BYTES else None
            for j, (d, i, iy0, iy1, ix0, ix1) in enumerate(refine):
                cx0, cy0 = ox[i], oy[i]
                x0, y0, mask = d.x0, d.y0, d.mask
                part = mask[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
                ry0, ry1, rx0, rx1 = iy0 - cy0, iy1 - cy0, ix0 - cx0, ix1 - cx0
                if across is None:
                    under = _cells_under(cells[j], cell, ry0, ry1, rx0, rx1)
                else:
                    under = _cells_under_across(across[j], cell, ry0, ry1, rx0, rx1)
                kept = part & under
                if kept.shape == mask.shape:  # the whole box lies in the crop
                    moments = _moments(kept)
                    if moments[0] > 0:  # any pixel kept
                        d.mask = kept
                        _set_measures(d, *moments)
                        continue
                elif kept.any():
                    d.mask = mask = mask.copy()
                    mask[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = kept
                _measure(d)
        return crops, _merge_overlapping(found)

    def _inspect(
        self, frame: Frame, hdr: FrameHeader, start: int, result: ScreenResult, started: float
    ) -> None:
        c = self.config
        image = frame.image
        self.stats.candidates += len(result.candidates)
        t0 = self.clock()
        crops, found = self.stage2(image, result)
        self.stats.crops += crops.shape[0]
        self.stats.classify_s += self.clock() - t0

        # Positions on the coil, decisions in coil order.
        um = c.pixel_pitch_um
        length_m = c.metres(hdr.encoder_end - hdr.encoder_start)
        start_m = c.metres(hdr.encoder_start)
        rows = image.shape[0]
        items = []
        for d in found:
            cx, cy = d.centroid
            md = start_m + (cy + 0.5) / rows * length_m
            md0 = start_m + d.bbox[1] / rows * length_m
            md1 = start_m + d.bbox[3] / rows * length_m
            cd = c.lane_offset_mm + (cx + 0.5) * um / 1000.0
            eq = 2.0 * math.sqrt(d.area_px / math.pi) * um
            length = d.length_px * um
            obs = Observation(
                cls=d.cls,
                band=d.band,
                size_um=defect_size_um(d.cls, equivalent_diameter_um=eq, length_um=length),
                md_m=md,
                cd_mm=cd,
                md_start_m=md0,
                md_end_m=md1,
            )
            items.append((obs, d, eq, length))
        items.sort(key=lambda t: (t[0].md_m, t[0].cd_mm))
        defects, stop_req = [], None
        mid = self.message_id(hdr.coil, str(hdr.frame_id))
        for obs, d, eq, length in items:
            decision = self.engine.decide(obs)
            entry = {
                "class": d.cls,
                "confidence": round(float(d.confidence), 6),
                "probabilities": {k: round(float(v), 6) for k, v in d.probabilities.items()},
                "bbox_px": list(d.bbox),
                "area_px": d.area_px,
                "area_um2": round(d.area_px * um * um, 3),
                "equivalent_diameter_um": round(eq, 3),
                "length_um": round(length, 3),
                "md_m": round(obs.md_m, 6),
                "cd_mm": round(obs.cd_mm, 4),
                "decision": decision.decision,
                "rule": decision.rule[:200],
            }
            defects.append((entry, d.crop))
            if decision.decision == "stop" and (
                stop_req is None or (decision.suspect_roller and not stop_req.suspect_roller)
            ):
                stop_req = StopRequest(
                    reason=(
                        f"{d.cls} at {obs.md_m:.3f} m / {obs.cd_mm:.1f} mm of coil {hdr.coil} "
                        f"on camera {c.camera}: {decision.rule}"
                    )[:300],
                    rule=decision.rule,
                    coil=hdr.coil,
                    md_m=obs.md_m,
                    frame_id=hdr.frame_id,
                    message_id=mid,
                    acquired_at=hdr.acquired_at,
                    suspect_roller=decision.suspect_roller,
                )
        stop_block = None
        if stop_req is not None:
            key = f"{stop_req.suspect_roller or ''}:{stop_req.rule.split(' ')[0]}"
            stop_block = self._send_stop(stop_req, key=key)

        # The envelope: after the stop went out.
        self.stats.inspected += 1
        self._uninspected_run_m = 0.0
        self._run_stopped = False
        payload = self._base_payload(
            frame_id=hdr.frame_id, start=start, end=hdr.encoder_end, acquired_at=hdr.acquired_at
        )
        defects.sort(key=lambda t: (-_SEVERITY[t[0]["decision"]], -t[0]["confidence"]))
        if len(defects) > MAX_DEFECTS_PER_FRAME:
            payload["detail"] = (
                f"{len(defects) - MAX_DEFECTS_PER_FRAME} more defects (the least severe) not listed"
            )
            defects = defects[:MAX_DEFECTS_PER_FRAME]
        defects.sort(key=lambda t: (t[0]["md_m"], t[0]["cd_mm"]))
        payload["defects"] = [e for e, _ in defects]
        if any(e["decision"] != "ignore" for e, _ in defects):
            payload["verdict"] = "defect"
        if result.truncated:
            note = (
                f"{result.truncated} stage-1 candidates beyond the per-frame limit not classified"
            )
            payload["detail"] = (payload.get("detail", "") + "; " + note).strip("; ")[:500]
        if stop_block is not None:
            payload["stop"] = stop_block
        if self.shadow is not None:
            payload["shadow"] = self._shadow(crops)
        self.stats.defects += len(defects)
        keep_frame = c.frame_retention == "all" or (
            c.frame_retention == "defects" and payload["verdict"] != "ok"
        )
        payload["duration_ms"] = round((self.clock() - started) * 1000, 3)
        self.stats.frame_s += self.clock() - started
        self.emitter.put(
            Outgoing(
                self._envelope(hdr.coil, mid, payload),
                [crop for _, crop in defects],
                image if keep_frame else None,
            )
        )

    def _shadow(self, crops: np.ndarray) -> dict:
        preds, _ = self._classify(self.shadow, crops)
        classes = sorted({p.cls for p in preds if p.is_defect and p.band in ("act", "review")})
        return {
            "version": self.shadow.version,
            "verdict": "defect" if classes else "ok",
            "classes": classes,
        }


def config_replace(config: WorkerConfig, **changes) -> WorkerConfig:
    """A copy of ``config`` with ``changes`` (tests, the simulator)."""
    return replace(config, **changes)


# --------------------------------------------------------------------------- running


class Runner:
    """Runs a pipeline on a source until :meth:`request_stop`, ``max_frames`` frames or
    ``run_seconds``. The source's thread puts items on a bounded queue (a slow pipeline
    holds the source back; what waited too long is reported as backlog); this thread takes
    them in order, and runs the pipeline's periodic checks between them."""

    def __init__(
        self,
        pipeline: Pipeline,
        source,
        *,
        max_frames: int | None = None,
        run_seconds: float | None = None,
        queue_size: int = 64,
    ):
        self.pipeline = pipeline
        self.source = source
        self.max_frames = max_frames
        self.run_seconds = run_seconds
        self.inbox: queue.Queue[Frame | Heartbeat] = queue.Queue(maxsize=queue_size)
        self._stopping = threading.Event()
        self.frames = 0

    def request_stop(self) -> None:
        """Stop taking items; what is in hand is finished and delivered. Signal-safe."""
        self._stopping.set()

    def _put(self, item: Frame | Heartbeat) -> None:
        while not self._stopping.is_set():
            try:
                self.inbox.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def run(self) -> Stats:
        clock = self.pipeline.clock
        deadline = None if self.run_seconds is None else clock() + self.run_seconds
        self.source.start(self._put)
        try:
            while not self._stopping.is_set():
                try:
                    item = self.inbox.get(timeout=0.05)
                except queue.Empty:
                    item = None
                if item is not None:
                    self.pipeline.handle(item)
                    if isinstance(item, Frame):
                        self.frames += 1
                self.pipeline.tick()
                if self.max_frames is not None and self.frames >= self.max_frames:
                    break
                if deadline is not None and clock() >= deadline:
                    break
        finally:
            self._stopping.set()
            self.source.stop()
            delivered = self.pipeline.close()
            if not delivered:
                logger.error("%d envelopes were not delivered", self.pipeline.emitter.lost)
        return self.pipeline.stats
