"""Ingest handlers of compliance: a station asks for a hold.

``hold_request`` (registered in :meth:`compliance.apps.ComplianceConfig.ready`) puts the
envelope's ``unit`` or ``units`` on hold through :func:`compliance.services.hold_place`,
with source "station request" and the station and message id as the source reference, so
the hold leads back to the message that asked for it.
"""

from __future__ import annotations

from genealogy.api.serializers import units_resolve
from qms.exceptions import DomainError
from qms.ingest.envelope import Envelope
from qms.ingest.services import HandlerContext

from . import services
from .choices import HoldSource
from .models import Hold

SOURCE_REFERENCE_LEN = Hold._meta.get_field("source_reference").max_length


def handle_hold_request(env: Envelope, ctx: HandlerContext) -> None:
    """Hold the envelope's units with the station's reason. An unknown serial refuses the
    whole request, naming it (``unit`` or ``units[i]``)."""
    units = units_resolve(env.serials, field_of=lambda i: "unit" if env.unit else f"units[{i}]")
    reason = env.payload["reason"].strip()
    reference = (env.payload.get("reference") or "").strip()
    if reference:
        reason = f"{reason} (station reference {reference})"
    try:
        services.hold_place(
            units=units,
            reason=reason,
            source=HoldSource.STATION,
            source_reference=f"{env.station} {env.message_id}"[:SOURCE_REFERENCE_LEN],
            actor=ctx.actor,
        )
    except DomainError as exc:  # name the envelope's field, not the service's argument
        field = {"reason": "payload.reason", "units": "unit" if env.unit else "units"}.get(
            exc.field or "", exc.field
        )
        raise type(exc)(exc.message, field=field, code=exc.code) from exc
