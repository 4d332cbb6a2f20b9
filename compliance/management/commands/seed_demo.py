"""Load the demo plant: site GF1, a prismatic and a cylindrical line, their stations,
equipment and control plan, demo users per role and two demo API integrations."""

from django.core.management.base import BaseCommand

from compliance.demo import plant


class Command(BaseCommand):
    help = (
        "Load the demo plant (site, lines, stations, equipment, control plan), demo users and "
        "API integrations. Safe to run again: existing rows are left as they are."
    )

    def handle(self, *args, **options) -> None:
        result = plant.seed()
        if not result.changed:
            self.stdout.write("Demo plant already loaded; nothing changed.")
            return
        for what, n in sorted(result.created.items()):
            self.stdout.write(f"  created {n:4d} {what}")
        self.stdout.write(self.style.SUCCESS("Demo plant loaded."))
