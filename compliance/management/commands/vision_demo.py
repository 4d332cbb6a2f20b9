"""Run the demo plant's cathode camera over a stretch of a coil that cells were made from:
synthetic frames (with defects every few frames and a commissioning flat field) through the
real vision worker, so the inspection pages, the review queue, the coil defect map and the
vision holds have something to show after ``make run``.

Safe to run again: each run inspects the next stretch of the coil.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from genealogy.choices import LinkKind, UnitKind
from genealogy.models import Link, Measurement
from inspection.models import InspectionResult, InspectionStation


class Command(BaseCommand):
    help = "Inspect a stretch of a demo cathode coil with the vision worker (synthetic frames)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--station", default="gf1/l1-pri/coat-c")
        parser.add_argument("--frames", type=int, default=150, help="20 mm of coil each.")
        parser.add_argument("--defect-every", type=int, default=12)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument(
            "--speed-m-min",
            type=float,
            default=6.0,
            help="Line speed; 0 writes every frame before inspecting.",
        )

    def handle(self, *args, **o) -> None:
        site, line, code = o["station"].split("/")
        camera = (
            InspectionStation.objects.select_related("station__line__site")
            .filter(
                station__code=code,
                station__line__code__iexact=line,
                station__line__site__code__iexact=site,
            )
            .first()
        )
        if camera is None:
            raise CommandError(f"No camera at {o['station']}: run seed_demo first.")
        # A mother coil coated at the camera's station (it has the coater's gauge readings)
        # whose slit coils went into cells: inspect from where the first cells begin.
        coated = (
            Measurement.objects.filter(station=camera.station, unit__kind=UnitKind.COIL)
            .values_list("unit_id", flat=True)
            .distinct()
        )
        slit = (
            Link.objects.filter(
                kind=LinkKind.SLIT,
                source_id__in=list(coated),
                target__downstream_links__kind=LinkKind.CONSUMED,
                target__downstream_links__target__kind=UnitKind.CELL,
            )
            .select_related("source")
            .order_by("source__produced_at", "start_m")
            .first()
        )
        if slit is None:
            raise CommandError("No cathode coil with cells made from it: run simulate first.")
        coil = slit.source
        last = (
            InspectionResult.objects.filter(camera=camera, coil=coil)
            .order_by("-coil_end_m")
            .values_list("coil_end_m", "frame_id")
            .first()
        )
        # The camera's frame counter runs on from the last run (frame ids name the messages).
        start_m = round(last[0], 3) if last else round(slit.start_m + 1.0, 3)
        start_frame = last[1] + 1 if last else 0
        spool = Path(tempfile.mkdtemp(prefix="celltrace-vision-"))
        try:
            if not camera.flat_field:
                flat = spool / "flat-field.npz"
                call_command(
                    "vision_frames", station=o["station"], frames=0, to=None,
                    flat_field_out=str(flat), stdout=self.stdout, stderr=self.stderr,
                )  # fmt: skip
                with flat.open("rb") as fh:
                    camera.flat_field.save(f"{camera.camera}-{camera.pk}.npz", File(fh))
            # The camera writes frames at line speed while the worker inspects them, as on
            # the line (frames written all at once would wait past the latency budget).
            (spool / "frames").mkdir()
            frames = None
            if o["speed_m_min"] > 0:
                frames = subprocess.Popen(  # noqa: S603  (our own manage.py, fixed arguments)
                    [
                        sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "vision_frames",
                        "--station", o["station"], "--to", f"dir:{spool / 'frames'}",
                        "--coil", coil.serial, "--frames", str(o["frames"]),
                        "--start-m", str(start_m), "--start-frame", str(start_frame),
                        "--speed-m-min", str(o["speed_m_min"]),
                        "--defect-every", str(o["defect_every"]), "--seed", str(o["seed"]),
                    ],
                    stdout=subprocess.DEVNULL,
                )  # fmt: skip
            else:  # all frames first (tests): the worker then finds them waiting
                call_command(
                    "vision_frames", station=o["station"], to=f"dir:{spool / 'frames'}",
                    coil=coil.serial, frames=o["frames"], start_m=start_m,
                    start_frame=start_frame, speed_m_min=0, defect_every=o["defect_every"],
                    seed=o["seed"], stdout=self.stdout, stderr=self.stderr,
                )  # fmt: skip
            call_command(
                "vision_worker", station=o["station"], source=f"dir:{spool / 'frames'}",
                max_frames=o["frames"], results="direct", stdout=self.stdout,
                stderr=self.stderr,
            )  # fmt: skip
            if frames is not None:
                frames.wait(timeout=60)
        finally:
            shutil.rmtree(spool, ignore_errors=True)
        results = InspectionResult.objects.filter(camera=camera, coil=coil)
        self.stdout.write(
            f"Inspected {coil.serial} from {start_m:.2f} m: {results.count()} frames stored "
            f"for that coil in all."
        )
