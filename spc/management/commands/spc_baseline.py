"""Propose control limits for every active characteristic from the values recorded so far
(Phase I at commissioning), and approve them when a quality engineer is named.

    python manage.py spc_baseline                               # drafts only
    python manage.py spc_baseline --approve-as quality \\
        --reason "Commissioning baseline, week 48"              # and approve them

A characteristic with too few values, or without variation, is reported and left without
limits; one with limits in force is left alone unless ``--again``. Drafts keep the engine's
proposed exclusions for the engineer to confirm on the characteristic's page.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from qms.exceptions import DomainError
from qms.models import Characteristic
from spc.choices import LimitsStatus
from spc.models import ControlLimits
from spc.services import limits_approve, limits_propose


class Command(BaseCommand):
    help = "Propose (and optionally approve) control limits from the values recorded so far."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--approve-as", default="", help="Username of the approver.")
        parser.add_argument("--reason", default="", help="Why (required with --approve-as).")
        parser.add_argument("--proposer", default="", help="Who proposes (default: the approver).")
        parser.add_argument(
            "--again", action="store_true", help="Also characteristics with limits in force."
        )

    def handle(self, *args, **opts) -> None:
        users = get_user_model().objects
        approver = None
        if opts["approve_as"]:
            approver = users.filter(username=opts["approve_as"]).first()
            if approver is None:
                raise CommandError(f"No user {opts['approve_as']!r}.")
            if not opts["reason"].strip():
                raise CommandError("--reason is required with --approve-as.")
        proposer_name = opts["proposer"] or opts["approve_as"]
        if not proposer_name:
            raise CommandError("Name a --proposer (or --approve-as).")
        proposer = users.filter(username=proposer_name).first()
        if proposer is None:
            raise CommandError(f"No user {proposer_name!r}.")
        now = timezone.now()
        in_force = set(
            ControlLimits.objects.filter(status=LimitsStatus.APPROVED).values_list(
                "characteristic_id", flat=True
            )
        )
        counts = {"approved": 0, "drafted": 0, "skipped": 0}
        chars = Characteristic.objects.filter(is_active=True).select_related("station__line")
        for char in chars.order_by("station__line__code", "station__sequence", "code"):
            if char.pk in in_force and not opts["again"]:
                continue
            first = char.measurements.order_by("measured_at").values_list("measured_at", flat=True)
            start = first.first()
            if start is None:
                continue
            try:
                with transaction.atomic():
                    draft = limits_propose(
                        characteristic=char, baseline_from=start, baseline_to=now, actor=proposer
                    )
                    if approver is not None:
                        limits_approve(limits=draft, actor=approver, reason=opts["reason"])
            except DomainError as exc:
                counts["skipped"] += 1
                self.stdout.write(f"{char.station}/{char.code}: {exc.message}")
                continue
            counts["approved" if approver else "drafted"] += 1
        self.stdout.write(
            self.style.SUCCESS(
                f"Limits approved for {counts['approved']}, drafted for {counts['drafted']}, "
                f"{counts['skipped']} characteristics left without."
            )
        )
