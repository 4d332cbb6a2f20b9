"""Retrain now: a challenger on every label so far, compared with the active model and the
baseline on the time-ordered hold-out; prints the run's outcome and comparison."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from risk import services


class Command(BaseCommand):
    help = "Train a challenger thermal-risk model and store its comparison (never activates)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--as", dest="username", help="Run as this user (recorded).")
        parser.add_argument("--horizon-days", type=float, default=services.LABEL_HORIZON_DAYS)
        parser.add_argument("--seed", type=int, default=20260101)

    def handle(self, *args, **options) -> None:
        actor = None
        if options["username"]:
            actor = get_user_model().objects.filter(username=options["username"]).first()
            if actor is None:
                raise CommandError(f"No user {options['username']!r}.")
        run = services.retrain(
            actor=actor, horizon_days=options["horizon_days"], seed=options["seed"]
        )
        self.stdout.write(
            json.dumps(
                {
                    "run": run.pk,
                    "status": run.status,
                    "challenger": run.challenger.version if run.challenger else None,
                    "labels": run.label_counts,
                    "detail": run.detail,
                    "comparison": {
                        k: {m: v.get(m) for m in ("auroc", "average_precision", "capture_at_2pct")}
                        for k, v in run.comparison.items()
                    },
                },
                indent=1,
            )
        )
        if run.status == "failed":
            raise CommandError(run.detail)
