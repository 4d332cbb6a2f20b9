"""The topic scheme ``qms/<site>/<line>/<station>/<kind>`` and its agreement with the
envelope inside the message.

Stations publish JSON envelopes on ``qms/<site>/<line>/<station>/<kind>``; commands to a
station go out on ``qms/<site>/<line>/<station>/command`` (see
:func:`qms.ingest.commands.command_topic`), which the ingest workers skip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from qms.ingest.envelope import EnvelopeError

ROOT = "qms"
#: Every station topic: four levels under ``qms/``.
TOPIC_FILTER = f"{ROOT}/+/+/+/+"
COMMAND_KIND = "command"


def shared_subscription(group: str) -> str:
    """The MQTT 5 shared subscription of the ingest workers of ``group``: the broker hands
    each message to one of them."""
    if not group or any(c in group for c in "/+#"):
        raise ValueError(f"{group!r} cannot name a shared subscription group.")
    return f"$share/{group}/{TOPIC_FILTER}"


@dataclass(frozen=True)
class StationTopic:
    site: str
    line: str
    station: str
    kind: str

    @property
    def is_command(self) -> bool:
        return self.kind == COMMAND_KIND


def parse_topic(topic: str) -> StationTopic | None:
    """``qms/<site>/<line>/<station>/<kind>`` split into its parts; None for other topics."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != ROOT or not all(parts[1:]):
        return None
    return StationTopic(*parts[1:])


@dataclass(frozen=True)
class Mismatch:
    """The topic and the envelope disagree; ``field`` is the envelope field."""

    reason: str
    field: str
    message_id: str = ""
    kind: str = ""


def topic_mismatch(topic: StationTopic, payload: bytes | dict) -> Mismatch | None:
    """Where the envelope in ``payload`` (raw bytes or the parsed document) names another
    site, line, station or kind than its topic. Payloads that are not a JSON object, or lack
    those fields, are left to the envelope validation (which names the real problem): None
    for them.

    Codes compare without regard to case, as the master-data look-ups do; the kind exactly.
    """
    if isinstance(payload, dict):
        doc = payload
    else:
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None
    if not isinstance(doc, dict):
        return None
    message_id = doc.get("message_id") if isinstance(doc.get("message_id"), str) else ""
    kind = doc.get("kind") if isinstance(doc.get("kind"), str) else ""
    for name, expected, fold in (
        ("site", topic.site, True),
        ("line", topic.line, True),
        ("station", topic.station, True),
        ("kind", topic.kind, False),
    ):
        given = doc.get(name)
        if not isinstance(given, str):
            continue
        same = given.casefold() == expected.casefold() if fold else given == expected
        if not same:
            return Mismatch(
                reason=(
                    f"The topic names {name} {expected!r} but the envelope names {given!r}: "
                    f"a message is published on its own station's topic."
                ),
                field=name,
                message_id=message_id[:128],
                kind=kind[:32],
            )
    return None


def envelope_check(topic: StationTopic):
    """The check :class:`qms.ingest.services.RawMessage` runs on the parsed envelope of a
    message that came on ``topic``: a mismatch is refused (dead letter, counted)."""

    def check(doc: dict) -> None:
        problem = topic_mismatch(topic, doc)
        if problem is not None:
            raise EnvelopeError(
                problem.reason,
                field=problem.field,
                message_id=problem.message_id,
                kind=problem.kind,
            )

    return check
