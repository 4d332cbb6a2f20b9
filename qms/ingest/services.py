"""Applying envelopes exactly once, and the dead-letter store.

:func:`ingest_raw` is what every transport calls with what it received. One database
transaction per batch: each envelope is validated, its ``message_id`` recorded (a repeat is
a duplicate, never applied twice: the unique index decides, also between two workers), and
its handler run inside a savepoint, in ``sent_at`` order. Bad input never raises: it lands
in the dead-letter store with the raw bytes and the reason, and the batch goes on. Only an
infrastructure failure (the database is down) raises, so the transport does not acknowledge
and the broker delivers again.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from qms.exceptions import DomainError, InvalidInput

from . import registry
from .envelope import Envelope, EnvelopeError, MasterData, parse_json, validate
from .models import DeadLetter, DeadLetterStatus, IngestMessage, IngestStat, Transport

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"

logger = logging.getLogger("celltrace.ingest")


class _AppliedElsewhere(Exception):
    """The message id was recorded by another worker while this one was validating."""


@dataclass(frozen=True)
class RawMessage:
    """What a transport received, exactly as it arrived."""

    payload: bytes
    transport: str
    origin: str
    received_at: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """The answer for one message, in the order the messages were given."""

    status: str
    message_id: str = ""
    reason: str = ""
    field: str | None = None
    dead_letter_id: int | None = None


@dataclass(frozen=True)
class HandlerContext:
    """What a handler gets besides the envelope: who acts, and how the message came."""

    actor: AbstractBaseUser
    transport: str
    origin: str
    received_at: datetime


def transport_actor(transport: str) -> AbstractBaseUser:
    """The account a transport writes as (cannot log in), so history names it."""
    user, created = get_user_model().objects.get_or_create(
        username=f"ingest-{transport}",
        defaults={"first_name": "Ingest", "last_name": Transport(transport).label},
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def dead_letter_record(
    *,
    raw: bytes,
    transport: str,
    origin: str,
    reason: str,
    field: str | None = None,
    message_id: str = "",
    kind: str = "",
    at: datetime | None = None,
) -> DeadLetter:
    """Keep a message that could not be applied. The same bytes from the same origin again
    count as another attempt (``attempts``, ``last_seen``) and reopen a closed entry."""
    at = at or timezone.now()
    sha = hashlib.sha256(raw).hexdigest()
    with transaction.atomic():
        entry = (
            DeadLetter.objects.select_for_update()
            .filter(raw_sha256=sha, transport=transport, origin=origin[:300])
            .first()
        )
        if entry is None:
            try:
                with transaction.atomic():
                    return DeadLetter.objects.create(
                        transport=transport,
                        origin=origin[:300],
                        raw=raw,
                        raw_sha256=sha,
                        message_id=message_id[:128],
                        kind=kind[:32],
                        reason=reason,
                        field=(field or "")[:120],
                        first_seen=at,
                        last_seen=at,
                    )
            except IntegrityError:  # another worker recorded it a moment ago
                entry = DeadLetter.objects.select_for_update().get(
                    raw_sha256=sha, transport=transport, origin=origin[:300]
                )
        entry.attempts += 1
        entry.last_seen = max(entry.last_seen, at)
        entry.reason = reason
        entry.field = (field or "")[:120]
        if entry.status != DeadLetterStatus.OPEN:
            entry.status = DeadLetterStatus.OPEN
            entry.resolved_at = None
            entry.resolution = ""
        entry._change_reason = "rejected again"
        entry.save()
        return entry


def _stats_add(transport: str, at: datetime, counts: Counter, lags_ms: list[float]) -> None:
    minute = _minute(at)
    IngestStat.objects.get_or_create(transport=transport, minute=minute)
    IngestStat.objects.filter(transport=transport, minute=minute).update(
        accepted=F("accepted") + counts[ACCEPTED],
        duplicate=F("duplicate") + counts[DUPLICATE],
        rejected=F("rejected") + counts[REJECTED],
        batches=F("batches") + 1,
        lag_ms_sum=F("lag_ms_sum") + sum(lags_ms),
        lag_ms_max=Greatest(F("lag_ms_max"), max(lags_ms, default=0.0)),
    )


def ingest_raw(
    messages: Sequence[RawMessage], *, actor: AbstractBaseUser | None = None
) -> list[Outcome]:
    """Apply a batch of received messages exactly once; see the module docstring.

    All messages of one call should come from one transport (the statistics are kept per
    transport). Returns one :class:`Outcome` per message, in input order.
    """
    if not messages:
        return []
    now = timezone.now()
    transport = messages[0].transport
    master = MasterData()
    outcomes: list[Outcome | None] = [None] * len(messages)
    valid: list[tuple[int, Envelope]] = []
    failures: list[tuple[int, EnvelopeError]] = []
    for i, msg in enumerate(messages):
        try:
            valid.append((i, validate(parse_json(msg.payload), master=master, now=now)))
        except EnvelopeError as exc:
            failures.append((i, exc))

    # Repeats inside the batch are duplicates of their first occurrence.
    first_of: dict[str, int] = {}
    fresh: list[tuple[int, Envelope]] = []
    for i, env in valid:
        if env.message_id in first_of:
            outcomes[i] = Outcome(DUPLICATE, env.message_id, "repeated in the same batch")
        else:
            first_of[env.message_id] = i
            fresh.append((i, env))
    known = set(
        IngestMessage.objects.filter(message_id__in=list(first_of)).values_list(
            "message_id", flat=True
        )
    )
    counts: Counter = Counter()
    lags: list[float] = []
    with transaction.atomic():
        actor = actor or transport_actor(transport)
        for i, env in sorted(fresh, key=lambda item: (item[1].sent_at, item[0])):
            if env.message_id in known:
                outcomes[i] = Outcome(DUPLICATE, env.message_id, "applied before")
                continue
            msg = messages[i]
            received = msg.received_at or now
            context = HandlerContext(
                actor=actor, transport=msg.transport, origin=msg.origin, received_at=received
            )
            try:
                with transaction.atomic():  # the message row and its effect, or neither
                    try:
                        with transaction.atomic():
                            IngestMessage.objects.create(
                                message_id=env.message_id,
                                kind=env.kind,
                                transport=msg.transport,
                                origin=msg.origin[:300],
                                source=env.source,
                                station=env.station,
                                unit_serial=(env.unit or "")[:64],
                                sent_at=env.sent_at,
                                received_at=received,
                            )
                    except IntegrityError as exc:
                        raise _AppliedElsewhere from exc
                    registry.get(env.kind).handler(env, context)
            except _AppliedElsewhere:
                outcomes[i] = Outcome(DUPLICATE, env.message_id, "applied by another worker")
                continue
            except (DomainError, EnvelopeError) as exc:
                reason = getattr(exc, "message", None) or getattr(exc, "reason", str(exc))
                failures.append(
                    (
                        i,
                        EnvelopeError(
                            reason, field=exc.field, message_id=env.message_id, kind=env.kind
                        ),
                    )
                )
                continue
            except (OperationalError, InterfaceError):
                raise  # the database is away: nothing is acknowledged, the broker redelivers
            except Exception as exc:  # a handler bug must not make a poison message
                logger.exception("handler of %s failed on %s", env.kind, env.message_id)
                failures.append(
                    (
                        i,
                        EnvelopeError(
                            f"Handler error {type(exc).__name__}: {exc}",
                            message_id=env.message_id,
                            kind=env.kind,
                        ),
                    )
                )
                continue
            outcomes[i] = Outcome(ACCEPTED, env.message_id)
            lags.append(max(0.0, (received - env.sent_at).total_seconds() * 1000))
        for i, exc in failures:
            msg = messages[i]
            entry = dead_letter_record(
                raw=msg.payload,
                transport=msg.transport,
                origin=msg.origin,
                reason=exc.reason,
                field=exc.field,
                message_id=exc.message_id,
                kind=exc.kind,
                at=msg.received_at or now,
            )
            outcomes[i] = Outcome(REJECTED, exc.message_id, exc.reason, exc.field, entry.pk)
        counts.update(o.status for o in outcomes if o is not None)
        _stats_add(transport, now, counts, lags)
    return [o for o in outcomes if o is not None]


def _replay_messages(entry: DeadLetter) -> list[RawMessage]:
    """The entry as a message to apply again; only envelopes can be replayed. What a
    transport received before there was an envelope (a Sparkplug protobuf, a CSV row) is
    re-sent from its source once the cause is fixed."""
    raw = bytes(entry.raw)
    try:
        parse_json(raw)
    except EnvelopeError as exc:
        raise InvalidInput(
            f"This entry holds what the {entry.get_transport_display()} transport received, "
            f"not an envelope ({exc.reason}); fix the cause and send it again from the source, "
            "or discard the entry with a reason.",
            field="raw",
            code="not_replayable",
        ) from exc
    return [RawMessage(payload=raw, transport=entry.transport, origin=entry.origin)]


@transaction.atomic
def dead_letter_replay(*, entry: DeadLetter, actor: AbstractBaseUser) -> Outcome:
    """Try a dead letter again (after master data was fixed). Success (or finding it was
    applied meanwhile) marks the entry resolved; a new failure updates its reason. An entry
    whose bytes are not an envelope is refused (:class:`InvalidInput`) and left as it is."""
    entry = DeadLetter.objects.select_for_update().get(pk=entry.pk)
    outcomes = ingest_raw(_replay_messages(entry))
    outcome = next((o for o in outcomes if o.status == REJECTED), outcomes[0])
    if outcome.status in (ACCEPTED, DUPLICATE):
        entry.refresh_from_db()
        entry.status = DeadLetterStatus.RESOLVED
        entry.resolved_at = timezone.now()
        entry.resolved_by = actor
        entry.resolution = f"replayed: {outcome.status}"
        entry._history_user = actor
        entry._change_reason = "replayed"
        entry.save()
    return outcome


@transaction.atomic
def dead_letter_discard(
    *, entry: DeadLetter, actor: AbstractBaseUser, resolution: str
) -> DeadLetter:
    """Close an open dead letter without applying it, with the reason why."""
    if not resolution or not resolution.strip():
        raise InvalidInput("Discarding needs a resolution (why).", field="resolution")
    entry = DeadLetter.objects.select_for_update().get(pk=entry.pk)
    entry.status = DeadLetterStatus.DISCARDED
    entry.resolved_at = timezone.now()
    entry.resolved_by = actor
    entry.resolution = resolution.strip()
    entry._history_user = actor
    entry._change_reason = f"discarded: {resolution.strip()}"[:100]
    entry.save(update_fields=["status", "resolved_at", "resolved_by", "resolution"])
    return entry
