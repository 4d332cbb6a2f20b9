"""``manage.py formation_simulate [--line CODE] [--seed S] [--limit N] [--user NAME]``.

Simulated formation and aging for the cells a ``simulate`` run made (those that passed the
formation station and have no formation run yet), sent through the real ingest handlers,
then features and grades. See :mod:`formation.demo`.
"""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from formation.demo import DEFAULT_SAMPLE_PERIOD_S, PRODUCT_OF_FORMAT, formation_simulate
from formation.services import ACTIVATE_PERMISSION
from qms.models import Line


def _grader(username: str | None):
    """The person grading acts as: the one named, else the first superuser or holder of
    the rule-set permission (None when there is no such account)."""
    users = get_user_model().objects.filter(is_active=True)
    if username:
        found = users.filter(username=username).first()
        if found is None:
            raise CommandError(f"No active user {username!r}.")
        return found
    app, codename = ACTIVATE_PERMISSION.split(".")
    perm = Q(user_permissions__codename=codename, user_permissions__content_type__app_label=app)
    group = Q(groups__permissions__codename=codename)
    return users.filter(Q(is_superuser=True) | perm | group).order_by("pk").first()


class Command(BaseCommand):
    help = "Simulate formation and aging of the cells made by 'simulate', through the ingest."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--line", help="Line code (default: every line with a product).")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--limit", type=int, default=None, help="At most N cells per line.")
        parser.add_argument(
            "--defect-rate", type=float, default=0.01, help="Share of latent defects (0-0.2)."
        )
        parser.add_argument(
            "--sample-period", type=float, default=DEFAULT_SAMPLE_PERIOD_S, help="Seconds."
        )
        parser.add_argument("--user", help="Who grades (puts the control plan's rules in force).")
        parser.add_argument("--no-grade", action="store_true", help="Records only.")

    def handle(self, *args, **opts) -> None:
        lines = Line.objects.filter(cell_format__in=list(PRODUCT_OF_FORMAT)).select_related("site")
        if opts["line"]:
            lines = lines.filter(code=opts["line"])
            if not lines:
                raise CommandError(f"No line {opts['line']!r} with a simulated product.")
        if not 0.0 <= opts["defect_rate"] <= 0.2:
            raise CommandError("--defect-rate is within 0..0.2.")
        actor = _grader(opts["user"])
        for line in lines.order_by("site__code", "code"):
            started = time.monotonic()
            try:
                report = formation_simulate(
                    line=line,
                    seed=opts["seed"],
                    limit=opts["limit"],
                    defect_rate=opts["defect_rate"],
                    sample_period_s=opts["sample_period"],
                    actor=actor,
                    grade=not opts["no_grade"],
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"{report.summary()} ({time.monotonic() - started:.1f} s)")
            for text in report.rejected[:20]:
                self.stdout.write(f"    refused {text}")
            if report.defective:
                latent = ", ".join(f"{s} ({c})" for s, c in sorted(report.defective.items()))
                self.stdout.write(f"    latent defects (simulator truth): {latent}")
            if report.k_screen_failed:
                self.stdout.write(f"    K screen failed: {', '.join(report.k_screen_failed)}")
