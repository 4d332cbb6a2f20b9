"""Register a trained thermal-risk model (ONNX + manifest) in the model registry.

The file's sha256 is checked against its manifest and the manifest against this code's
feature list before anything is registered; a refused model leaves nothing behind and the
active model keeps scoring. Approval and activation are a quality engineer's: with
``--approve-as <username>`` and ``--activate`` the command does both as that user (for
commissioning a plant), otherwise they are done in the admin or through the API.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from qms.exceptions import DomainError
from qms.ingest.services import transport_actor
from risk import services
from risk.models import RiskModel
from risk.scoring import default_model_paths


class Command(BaseCommand):
    help = "Register a trained thermal-risk model; optionally approve and activate it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--manifest", help="Manifest JSON (default: the committed model).")
        parser.add_argument("--onnx", help="ONNX file (default: named in the manifest).")
        parser.add_argument("--approve-as", help="Approve as this quality engineer.")
        parser.add_argument("--activate", action="store_true", help="Activate after approval.")
        parser.add_argument("--reason", default="", help="Reason for approval / activation.")

    def handle(self, *args, **options) -> None:
        manifest, onnx = default_model_paths()
        if options["manifest"]:
            manifest, onnx = options["manifest"], options["onnx"]
        approver = None
        if options["approve_as"]:
            approver = get_user_model().objects.filter(username=options["approve_as"]).first()
            if approver is None:
                raise CommandError(f"No user {options['approve_as']!r}.")
        reason = options["reason"] or "Commissioning: model trained and validated in-house"
        try:
            meta = json.loads(Path(manifest).read_text(encoding="utf-8"))
            model = RiskModel.objects.filter(
                name=meta.get("name"), version=meta.get("version")
            ).first()
            if model is None:
                model = services.model_register(
                    manifest_path=manifest,
                    onnx_path=onnx,
                    actor=approver or transport_actor("file"),
                )
                self.stdout.write(f"Registered {model} (sha256 {model.sha256[:12]}…).")
            else:
                self.stdout.write(f"{model} is registered already ({model.get_state_display()}).")
            if approver is not None and model.state == "validated":
                model = services.model_approve(model=model, actor=approver, reason=reason)
                self.stdout.write(f"Approved {model} as {approver.username}.")
            if options["activate"] and approver is not None and model.state != "active":
                model = services.model_activate(model=model, actor=approver, reason=reason)
                self.stdout.write(f"Activated {model}.")
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"Cannot read {manifest}: {exc}") from exc
        except DomainError as exc:
            raise CommandError(f"Refused: {exc.message}") from exc
