"""Score cells with the active thermal-risk model: given serials, or every cell with
formation features that the active model has not scored since they were computed."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from formation.models import CellFeatures
from genealogy.choices import UnitKind
from genealogy.models import Unit
from qms.exceptions import DomainError
from risk import services


class Command(BaseCommand):
    help = "Score cells' thermal risk with the active model (appends scores)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("serials", nargs="*", help="Cell serials (default: all unscored).")
        parser.add_argument("--batch", type=int, default=2000, help="Cells per transaction.")

    def handle(self, *args, **options) -> None:
        if options["serials"]:
            ids = list(
                Unit.objects.filter(serial__in=options["serials"], kind=UnitKind.CELL).values_list(
                    "pk", flat=True
                )
            )
            if len(ids) != len(set(options["serials"])):
                raise CommandError("Some serials are not cells known here.")
            skip = False
        else:
            ids = list(CellFeatures.objects.order_by("unit_id").values_list("unit_id", flat=True))
            skip = True
        scored = held = 0
        try:
            for k in range(0, len(ids), options["batch"]):
                rows = services.cells_score(
                    cell_ids=ids[k : k + options["batch"]], skip_current=skip
                )
                scored += len(rows)
                held += sum(r.quarantined for r in rows)
        except DomainError as exc:
            raise CommandError(f"Refused: {exc.message}") from exc
        self.stdout.write(f"Scored {scored} cell(s); {held} above the quarantine threshold.")
