"""Where the vision worker's frames come from: a directory the camera PC writes into, or MQTT.

Both sources read and decode on their own thread (PNG decoding is the heaviest step after
stage 1, and OpenCV releases the GIL, so it runs beside the inspection thread) and hand
:class:`~inspection.vision.pipeline.Frame` and
:class:`~inspection.vision.pipeline.Heartbeat` items to a sink, in the order the frames were
taken. A frame that cannot be read is still handed on, with its reason: the pipeline rejects
it (dead letter) and reports its metres.

**Directory** (``--source dir:PATH``). The camera PC writes ``<frame_id>.png`` (8-bit grey)
and then ``<frame_id>.json``, the sidecar, each by writing a temporary name and renaming
(the sidecar's appearance says the frame is complete)::

    {"coil": "C-2026-0001", "frame_id": 1234, "encoder_start": 2527232,
     "encoder_end": 2529280, "acquired_at": "2026-05-04T10:15:02.125+02:00", "camera": "cam1"}

Frames are taken in frame-id order. A taken frame's files are deleted (or moved to
``done/`` with ``keep``); a rejected frame's files move to ``rejected/``. A PNG without a
sidecar for ``orphan_after_s`` is rejected. The station's heartbeat is ``heartbeat.json``
in the same directory (``{"coil", "encoder", "at"}``), rewritten by rename; every new
version counts as one heartbeat.

**MQTT** (``--source mqtt``). Frames on ``vision/<site>/<line>/<station>/<camera>/frame``,
QoS 1; the payload is a 4-byte big-endian length N, N bytes of JSON header (the sidecar's
fields, plus optionally ``"encoding": "png"`` (default) or ``"raw8"`` for rows of bytes),
then the image bytes (:func:`pack_frame`). Heartbeats on
``vision/<site>/<line>/<station>/heartbeat``, JSON as above.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import struct
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .pipeline import (
    Frame,
    FrameError,
    Heartbeat,
    WorkerConfig,
    parse_heartbeat,
    read_frame,
)

logger = logging.getLogger("celltrace.vision")

Sink = Callable[[Frame | Heartbeat], None]
HEARTBEAT_FILE = "heartbeat.json"
#: Largest JSON header in an MQTT frame message.
MAX_HEADER_BYTES = 64 * 1024
_FRAME_FILE = re.compile(r"^(\d{1,18})\.(png|json)$")


# --------------------------------------------------------------------------- MQTT framing


def pack_frame(header: dict, image: bytes) -> bytes:
    """One MQTT frame message: 4-byte big-endian header length, JSON header, image bytes."""
    head = json.dumps(header, separators=(",", ":")).encode()
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(head)} bytes is over {MAX_HEADER_BYTES}")
    return struct.pack(">I", len(head)) + head + image


def unpack_frame(payload: bytes) -> tuple[bytes, bytes, str]:
    """Header bytes, image bytes and image encoding of an MQTT frame message; FrameError
    (field ``framing``) when the framing is broken."""
    if len(payload) < 4:
        raise FrameError(f"message of {len(payload)} bytes has no header length", "framing")
    (n,) = struct.unpack(">I", payload[:4])
    if n == 0 or n > MAX_HEADER_BYTES or n > len(payload) - 4:
        raise FrameError(
            f"header length {n} does not fit a message of {len(payload)} bytes", "framing"
        )
    header = payload[4 : 4 + n]
    encoding = "png"
    try:
        doc = json.loads(header)
        if isinstance(doc, dict) and "encoding" in doc:
            encoding = doc["encoding"]
            if not isinstance(encoding, str):
                raise FrameError("encoding must be png or raw8", "header.encoding")
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass  # the header parser names the problem
    return header, payload[4 + n :], encoding


def frame_topic(config: WorkerConfig) -> str:
    c = config
    return f"vision/{c.site}/{c.line}/{c.station}/{c.camera}/frame"


def heartbeat_topic(config: WorkerConfig) -> str:
    c = config
    return f"vision/{c.site}/{c.line}/{c.station}/heartbeat"


# --------------------------------------------------------------------------- directory


def write_frame_files(directory: Path, header: dict, png: bytes) -> None:
    """What a camera PC does: the PNG, then the sidecar, each written under a temporary
    name and renamed, so the worker never sees half a file."""
    directory = Path(directory)
    fid = int(header["frame_id"])
    for name, data in ((f"{fid}.png", png), (f"{fid}.json", json.dumps(header).encode())):
        tmp = directory / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, directory / name)


def write_heartbeat_file(directory: Path, doc: dict) -> None:
    directory = Path(directory)
    tmp = directory / f".{HEARTBEAT_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, directory / HEARTBEAT_FILE)


class DirectorySource:
    """Frames from a directory (see the module docstring)."""

    def __init__(
        self,
        path: Path | str,
        config: WorkerConfig,
        *,
        poll_s: float = 0.02,
        keep: bool = False,
        orphan_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is not a directory")
        self.config = config
        self.poll_s = poll_s
        self.keep = keep
        self.orphan_after_s = orphan_after_s
        self.clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat_stamp: tuple | None = None
        self._orphans: dict[str, float] = {}
        self.taken = 0

    def start(self, sink: Sink) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(sink,), name="vision-dir-source", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _move(self, names: list[str], folder: str | None) -> None:
        for name in names:
            src = self.path / name
            if not src.exists():
                continue
            if folder is None:
                src.unlink()
            else:
                (self.path / folder).mkdir(exist_ok=True)
                shutil.move(str(src), str(self.path / folder / name))

    def _heartbeat(self, sink: Sink) -> None:
        hb = self.path / HEARTBEAT_FILE
        try:
            st = hb.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._heartbeat_stamp:
            return
        self._heartbeat_stamp = stamp
        raw = hb.read_bytes()
        now = self.clock()
        try:
            sink(parse_heartbeat(raw, received=now, origin=str(hb)))
        except FrameError as exc:
            sink(Frame(str(hb), now, error=exc.reason, error_field=exc.field, raw=raw))

    def scan(self) -> list[int]:
        """Frame ids whose sidecar is there, in order; PNGs alone too long are orphans."""
        ids, pngs = set(), set()
        for entry in os.scandir(self.path):
            m = _FRAME_FILE.match(entry.name)
            if not m or not entry.is_file():
                continue
            (ids if m.group(2) == "json" else pngs).add(m.group(1))
        now = self.clock()
        for stem in pngs - ids:
            first = self._orphans.setdefault(stem, now)
            if now - first > self.orphan_after_s:
                ids.add(stem)  # taken as a frame without sidecar: rejected below
        for stem in list(self._orphans):
            if stem in ids or stem not in pngs:
                self._orphans.pop(stem, None)
        return sorted(int(s) for s in ids)

    def take(self, frame_id: int) -> Frame:
        """Read, decode and clear away one frame's files."""
        sidecar = self.path / f"{frame_id}.json"
        png = self.path / f"{frame_id}.png"
        received = self.clock()
        origin = str(png)
        names = [png.name, sidecar.name]
        if not sidecar.exists():
            raw = png.read_bytes()
            self._move(names, "rejected")
            return Frame(origin, received, error="no sidecar", error_field="sidecar", raw=raw)
        header = sidecar.read_bytes()
        if not png.exists():
            frame = read_frame(
                header,
                b"",
                self.config,
                origin=origin,
                received=received,
                expected_frame_id=frame_id,
            )
            if frame.error is None or frame.error_field == "image":
                frame.error, frame.error_field = "image file missing", "image"
                frame.raw = header
            self._move(names, "rejected")
            return frame
        size = png.stat().st_size
        if size > self.config.max_frame_bytes:
            frame = read_frame(
                header,
                b"",
                self.config,
                origin=origin,
                received=received,
                expected_frame_id=frame_id,
            )
            if frame.header is not None:
                frame.error = (
                    f"image of {size} bytes is over the {self.config.max_frame_bytes}-byte limit"
                )
                frame.error_field = "image"
                frame.raw = header
            self._move(names, "rejected")
            return frame
        frame = read_frame(
            header,
            png.read_bytes(),
            self.config,
            origin=origin,
            received=received,
            expected_frame_id=frame_id,
        )
        self._move(names, "rejected" if frame.error else ("done" if self.keep else None))
        return frame

    def _run(self, sink: Sink) -> None:
        while not self._stopping.is_set():
            try:
                self._heartbeat(sink)
                ids = self.scan()
                for fid in ids:
                    if self._stopping.is_set():
                        break
                    sink(self.take(fid))
                    self.taken += 1
                    self._heartbeat(sink)
            except Exception:  # a file vanished under us, a permission: log, keep watching
                logger.exception("directory source %s", self.path)
            if self._stopping.wait(self.poll_s):
                break


# --------------------------------------------------------------------------- MQTT


class MqttSource:
    """Frames and heartbeats from MQTT (see the module docstring). paho's network thread
    only queues what arrives; a decoder thread reads and decodes it in arrival order."""

    def __init__(
        self,
        url: str,
        config: WorkerConfig,
        *,
        client_id: str = "",
        clock: Callable[[], float] = time.monotonic,
    ):
        from qms.mqtt.broker import new_client, parse_url

        self.address = parse_url(url)
        self.config = config
        self.clock = clock
        self.client_id = client_id or f"vision-{config.station}-{config.camera}"[:64]
        self.client = new_client(self.address, client_id=self.client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a, **k: self.subscribed.set()
        self._raw: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.topics = (frame_topic(config), heartbeat_topic(config))

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.warning("MQTT broker %s refused the connection: %s", self.address, reason_code)
            return
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, message) -> None:
        self._raw.put((message.topic, message.payload, self.clock()))

    def start(self, sink: Sink) -> None:
        from qms.mqtt.broker import connect_properties

        self._thread = threading.Thread(
            target=self._run, args=(sink,), name="vision-mqtt-decode", daemon=True
        )
        self._thread.start()
        self.client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=30,
            clean_start=True,
            properties=connect_properties(session_expiry_s=0),
        )
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping.set()
        self.client.disconnect()
        self.client.loop_stop()
        if self._thread is not None:
            self._thread.join(10.0)

    def decode(self, topic: str, payload: bytes, received: float) -> Frame | Heartbeat:
        origin = topic
        if topic == self.topics[1]:
            try:
                return parse_heartbeat(payload, received=received, origin=origin)
            except FrameError as exc:
                return Frame(origin, received, error=exc.reason, error_field=exc.field, raw=payload)
        try:
            header, image, encoding = unpack_frame(payload)
        except FrameError as exc:
            return Frame(origin, received, error=exc.reason, error_field=exc.field, raw=payload)
        frame = read_frame(
            header, image, self.config, origin=origin, received=received, encoding=encoding
        )
        if frame.error is not None:
            frame.raw = payload  # the whole message is what the dead letter keeps
        return frame

    def _run(self, sink: Sink) -> None:
        while not self._stopping.is_set():
            try:
                topic, payload, received = self._raw.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                sink(self.decode(topic, payload, received))
            except Exception:
                logger.exception("MQTT frame on %s could not be handed on", topic)
