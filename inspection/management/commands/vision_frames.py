"""Simulate a line-scan camera: synthetic frames of one coil at a line speed, into a
directory or onto MQTT, the way the vision worker expects them, with the station's
heartbeat.

    python manage.py vision_frames --station COAT-01 --to dir:/tmp/cam1 --coil C-0001 \\
        --frames 200 --speed-m-min 30 --defect-every 10
    python manage.py vision_frames --station COAT-01 --to mqtt --frames 0    # until stopped
    python manage.py vision_frames --station COAT-01 --flat-field-out var/cam1-flat.npz

Frames are rendered with :func:`inspection.synthetic.frame` at the camera's size, pitch and
substrate (a small pool is rendered up front and reused, so the pace holds); every
``--defect-every``-th frame carries defects. ``--drop`` leaves frames out (a frame gap),
``--corrupt`` sends an image that does not decode: the fail-safe paths can be watched.
``--flat-field-out`` writes the camera's commissioning flat field instead (a uniform target
through the same camera model), for ``vision_worker --flat-field``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inspection.synthetic import CLASSES, RenderParams, flat_field, frame

DEFECT_CLASSES = [c for c in CLASSES if c != "ok"]


def render_pool(
    *,
    width: int,
    height: int,
    substrate: str,
    params: RenderParams,
    seed: int,
    clean: int,
    defective: int,
    defects_per_frame: int = 2,
) -> tuple[list[bytes], list[tuple[bytes, list]]]:
    """PNG bytes of ``clean`` defect-free frames and of ``defective`` frames with their
    drawn defects (class, box)."""

    def encode(img):
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        return buf.tobytes()

    clean_pngs = [
        encode(
            frame(width, height, seed=seed + i, params=params, defects=[], substrate=substrate)[0]
        )
        for i in range(clean)
    ]
    rng = np.random.default_rng(seed)
    bad = []
    for i in range(defective):
        kinds = [str(rng.choice(DEFECT_CLASSES)) for _ in range(defects_per_frame)]
        img, drawn = frame(
            width, height, seed=seed + 1000 + i, params=params, defects=kinds, substrate=substrate
        )
        bad.append((encode(img), [(d.cls, d.box) for d in drawn]))
    return clean_pngs, bad


def commissioning_flat_field(width: int, params: RenderParams, level: float = 180.0, rows=64):
    """A uniform target of ``level`` grey through the camera model, ``rows`` lines."""
    rng = np.random.default_rng(7)
    tiles = []
    size = max(rows, 128)
    for col0 in range(0, width, size):
        tiles.append(flat_field(level, rng, params, size=size, col0=col0)[:rows])
    return np.concatenate(tiles, axis=1)[:, :width]


class Command(BaseCommand):
    help = "Simulate a line-scan camera: synthetic frames at a line speed to a directory or MQTT."

    def add_arguments(self, parser):
        parser.add_argument("--station", required=True, help="CODE, LINE/CODE or SITE/LINE/CODE.")
        parser.add_argument("--camera", default=None)
        parser.add_argument("--to", default=None, help="dir:PATH or mqtt.")
        parser.add_argument("--coil", default="C-SIM-0001", help="Coil serial in the sidecars.")
        parser.add_argument("--frames", type=int, default=100, help="Frames to send (0: endless).")
        parser.add_argument("--start-frame", type=int, default=0)
        parser.add_argument("--start-m", type=float, default=0.0, help="Coil metre of frame 0.")
        parser.add_argument(
            "--speed-m-min", type=float, default=30.0, help="Line speed; 0 sends at once."
        )
        parser.add_argument(
            "--defect-every", type=int, default=10, help="Every Nth frame (0: none)."
        )
        parser.add_argument("--shifted", action="store_true", help="Render the held-out set.")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--pool", type=int, default=4, help="Distinct frames rendered.")
        parser.add_argument("--drop", default="", help="Frame ids to leave out, e.g. 5,6,7.")
        parser.add_argument("--corrupt", default="", help="Frame ids sent as broken PNGs.")
        parser.add_argument("--heartbeat-s", type=float, default=0.5, help="0: no heartbeat.")
        parser.add_argument("--flat-field-out", default=None, help="Write the flat field (.npz).")

    def handle(self, *args, **o):
        from inspection.management.commands.vision_worker import camera_find
        from inspection.vision.screen import FlatField
        from inspection.vision.sources import (
            frame_topic,
            heartbeat_topic,
            pack_frame,
            write_frame_files,
            write_heartbeat_file,
        )

        cam = camera_find(o["station"], o["camera"])
        params = RenderParams(pixel_pitch_um=cam.pixel_pitch_um, line_pixels=cam.frame_width_px)
        if o["shifted"]:
            params = params.shifted()
        if o["flat_field_out"]:
            flat = FlatField.from_frames(commissioning_flat_field(cam.frame_width_px, params))
            flat.save(o["flat_field_out"])
            self.stderr.write(f"flat field of {cam} written to {o['flat_field_out']}")
            return
        to = o["to"]
        if to is None:
            raise CommandError("--to dir:PATH or mqtt is required.")
        publish = None
        if to == "mqtt":
            if not settings.MQTT_URL:
                raise CommandError("--to mqtt needs MQTT_URL.")
            from inspection.management.commands.vision_worker import worker_config
            from qms.mqtt.broker import connect_properties, new_client, parse_url

            config = worker_config(cam)
            address = parse_url(settings.MQTT_URL)
            client = new_client(address, client_id=f"vision-sim-{cam.camera}-{time.time_ns()}")
            client.connect(
                address.host,
                address.port,
                keepalive=30,
                clean_start=True,
                properties=connect_properties(session_expiry_s=0),
            )
            client.loop_start()
            ftopic, htopic = frame_topic(config), heartbeat_topic(config)

            def publish(topic: str, payload: bytes) -> None:
                client.publish(topic, payload, qos=1).wait_for_publish(10)
        elif to.startswith("dir:") and to[4:]:
            directory = Path(to[4:])
            directory.mkdir(parents=True, exist_ok=True)
        else:
            raise CommandError("--to is dir:PATH or mqtt.")

        drop = {int(x) for x in o["drop"].split(",") if x.strip()}
        corrupt = {int(x) for x in o["corrupt"].split(",") if x.strip()}
        every = o["defect_every"]
        pool = max(1, o["pool"])
        self.stderr.write(f"rendering {pool} frames of {cam.frame_width_px}x{cam.frame_height_px}")
        clean, bad = render_pool(
            width=cam.frame_width_px,
            height=cam.frame_height_px,
            substrate=cam.substrate,
            params=params,
            seed=o["seed"],
            clean=pool,
            defective=pool if every else 0,
        )
        counts = round(cam.frame_height_px * cam.pixel_pitch_um * 1e-6 * cam.encoder_counts_per_m)
        start_count = round(o["start_m"] * cam.encoder_counts_per_m)
        period = (
            cam.frame_height_px * cam.pixel_pitch_um * 1e-6 / (o["speed_m_min"] / 60.0)
            if o["speed_m_min"] > 0
            else 0.0
        )
        t0 = time.monotonic()
        last_hb = -1e9
        sent = 0
        i = 0
        try:
            while o["frames"] == 0 or i < o["frames"]:
                fid = o["start_frame"] + i
                due = t0 + (i + 1) * period
                while period and time.monotonic() < due:
                    time.sleep(min(0.005, max(0.0, due - time.monotonic())))
                encoder = start_count + (i + 1) * counts
                now = datetime.now(UTC)
                if o["heartbeat_s"] > 0 and time.monotonic() - last_hb >= o["heartbeat_s"]:
                    hb = {"coil": o["coil"], "encoder": encoder, "at": now.isoformat()}
                    if publish:
                        publish(htopic, json.dumps(hb).encode())
                    else:
                        write_heartbeat_file(directory, hb)
                    last_hb = time.monotonic()
                i += 1
                if fid in drop:
                    continue
                if every and (fid + 1) % every == 0:
                    png, drawn = bad[fid % len(bad)]
                    self.stderr.write(f"frame {fid}: {drawn}")
                else:
                    png = clean[fid % len(clean)]
                if fid in corrupt:
                    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
                header = {
                    "coil": o["coil"],
                    "frame_id": fid,
                    "encoder_start": encoder - counts,
                    "encoder_end": encoder,
                    "acquired_at": now.isoformat(),
                    "camera": cam.camera,
                }
                if publish:
                    publish(ftopic, pack_frame(header, png))
                else:
                    write_frame_files(directory, header, png)
                sent += 1
        finally:
            if publish:
                client.disconnect()
                client.loop_stop()
        self.stderr.write(f"{sent} frames sent to {to}")
