"""Commands out to stations (line stop, hold, release), over the station's transport.

Compliance asks with :func:`station_command_send`; the command is recorded, and after the
transaction commits it goes out through the sender registered for the station's
``command_transport`` (the MQTT transport publishes on ``qms/<site>/<line>/<station>/command``;
the OPC UA transport calls the station's ``Stop`` method). The outcome (sent or failed, with
the error) is written back on the record. Senders are registered by the transports::

    commands.register_sender("mqtt", send_over_mqtt)

A sender takes the :class:`StationCommand` and returns the target it reached (topic or node
id); it raises on failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from qms.choices import CommandTransport
from qms.exceptions import InvalidInput
from qms.models import Station

from .models import CommandKind, CommandStatus, StationCommand

logger = logging.getLogger("celltrace.ingest")

Sender = Callable[[StationCommand], str]
_senders: dict[str, Sender] = {}


def register_sender(transport: str, sender: Sender) -> None:
    _senders[transport] = sender


def command_topic(station: Station) -> str:
    line = station.line
    return f"qms/{line.site.code}/{line.code}/{station.code}/command"


def command_payload(command: StationCommand) -> dict:
    """What a station receives (JSON over MQTT; the reason and reference over OPC UA)."""
    return {
        "command_id": command.pk,
        "kind": command.kind,
        "reason": command.reason,
        "reference": command.reference,
        "units": command.unit_serials,
        "requested_at": command.requested_at.isoformat(),
    }


def station_command_send(
    *,
    station: Station,
    kind: str,
    reason: str,
    actor: AbstractBaseUser,
    reference: str = "",
    unit_serials: Sequence[str] = (),
) -> StationCommand:
    """Record a command to ``station`` and send it once the transaction commits."""
    if kind not in CommandKind.values:
        raise InvalidInput(f"Unknown command {kind!r}.", field="kind")
    if not reason.strip():
        raise InvalidInput("A command needs a reason.", field="reason")
    transport = station.command_transport
    command = StationCommand(
        station=station,
        kind=kind,
        reason=reason.strip(),
        reference=reference,
        unit_serials=list(unit_serials),
        transport=transport,
        target=command_topic(station) if transport == CommandTransport.MQTT else "",
        requested_by=actor,
        requested_at=timezone.now(),
    )
    command._history_user = actor
    command._change_reason = reason.strip()[:100]
    command.save()
    command.payload = command_payload(command)
    command.save(update_fields=["payload"])
    transaction.on_commit(lambda: command_deliver(command_id=command.pk))
    return command


def command_deliver(*, command_id: int) -> StationCommand:
    """Send a recorded command through its transport's sender; record sent or failed."""
    command = StationCommand.objects.select_related("station__line__site").get(pk=command_id)
    if command.status == CommandStatus.SENT:
        return command
    sender = _senders.get(command.transport)
    try:
        if command.transport == CommandTransport.NONE:
            raise RuntimeError("the station has no command transport; it reads the interlock")
        if sender is None:
            raise RuntimeError(f"no sender registered for {command.transport!r}")
        command.target = sender(command)
        command.status = CommandStatus.SENT
        command.sent_at = timezone.now()
        command.error = ""
    except Exception as exc:  # recorded on the command, which stays visible as failed
        logger.warning("command %s to %s failed: %s", command.pk, command.station, exc)
        command.status = CommandStatus.FAILED
        command.error = f"{type(exc).__name__}: {exc}"
    command._change_reason = command.status
    command.save(update_fields=["target", "status", "sent_at", "error"])
    return command
