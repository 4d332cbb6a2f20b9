"""``manage.py formation_grade [--line CODE] [--since ISO] [--regrade]``.

Computes the formation features of cells with formation or aging records and grades them
with their line's rules in force: by default the cells that have no grade yet, with
``--regrade`` all of them (an unchanged cell keeps its grade). Done in batches of
``--batch`` cells.
"""

from __future__ import annotations

from datetime import UTC

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Exists, OuterRef, Q
from django.utils.dateparse import parse_datetime

from formation import services
from formation.models import AgingReading, CellGrade, CyclerRun
from genealogy.choices import UnitKind
from genealogy.models import Unit


class Command(BaseCommand):
    help = "Compute formation features and grade cells (K screen, bins)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--line", help="Line code.")
        parser.add_argument("--since", help="Cells produced from (ISO 8601, UTC if naive).")
        parser.add_argument("--regrade", action="store_true", help="Also cells graded before.")
        parser.add_argument("--batch", type=int, default=1000)

    def handle(self, *args, **opts) -> None:
        if opts["batch"] < 1:
            raise CommandError("--batch must be at least 1.")
        cells = Unit.objects.filter(kind=UnitKind.CELL).filter(
            Q(Exists(CyclerRun.objects.filter(unit=OuterRef("pk"))))
            | Q(Exists(AgingReading.objects.filter(unit=OuterRef("pk"))))
        )
        if opts["line"]:
            cells = cells.filter(line__code=opts["line"])
        if opts["since"]:
            since = parse_datetime(opts["since"])
            if since is None:
                raise CommandError(f"--since {opts['since']!r} is not an ISO 8601 date-time.")
            cells = cells.filter(produced_at__gte=since.replace(tzinfo=since.tzinfo or UTC))
        if not opts["regrade"]:
            cells = cells.exclude(Exists(CellGrade.objects.filter(unit=OuterRef("pk"))))
        ids = list(cells.order_by("pk").values_list("pk", flat=True))
        graded = failed = k_failed = 0
        skipped: dict[str, int] = {}
        for lo in range(0, len(ids), opts["batch"]):
            part = ids[lo : lo + opts["batch"]]
            services.features_compute(cell_ids=part)
            result = services.cells_grade(cell_ids=part)
            graded += len(result.grades)
            failed += len(result.failed)
            k_failed += sum(g.k_screen_failed for g in result.grades)
            for reason in result.skipped.values():
                skipped[reason] = skipped.get(reason, 0) + 1
        self.stdout.write(
            f"{len(ids)} cells: {graded} graded, {failed} failed ({k_failed} on the K screen)."
        )
        for reason, n in sorted(skipped.items()):
            self.stdout.write(f"    {n} not graded: {reason}")
