"""Applying envelopes exactly once, and the dead-letter store.

:func:`ingest_raw` is what every transport calls with what it received. One database
transaction per batch: each envelope is validated, the batch's ``message_id``s recorded in
one bulk insert (a repeat is a duplicate, never applied twice: the unique index decides,
also between two workers), and the handlers run in ``sent_at`` order: consecutive messages
of a kind with a batch handler together (bulk writes), the others each in a savepoint. Bad
input never raises: it lands in the dead-letter store with the raw bytes and the reason,
its message id is released, and the batch goes on. Only an
infrastructure failure (the database is down) raises, so the transport does not acknowledge
and the broker delivers again.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from qms.db import bulk_insert
from qms.exceptions import DomainError, InvalidInput

from . import registry
from .envelope import Envelope, EnvelopeError, MasterData, parse_json, validate
from .models import DeadLetter, DeadLetterStatus, IngestMessage, IngestStat, Transport

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"

logger = logging.getLogger("celltrace.ingest")


@dataclass(frozen=True)
class RawMessage:
    """What a transport received, exactly as it arrived."""

    payload: bytes
    transport: str
    origin: str
    received_at: datetime | None = None
    #: What the transport's address says about the envelope (an MQTT topic names site, line,
    #: station and kind): called with the parsed document, raises ``EnvelopeError`` when
    #: the two disagree, so the message is refused and counted like any other.
    check: Callable[[dict], None] | None = None


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
    retriable: bool = False,
) -> DeadLetter:
    """Keep a message that could not be applied. The same bytes from the same origin again
    count as another attempt (``attempts``, ``last_seen``) and reopen a closed entry. A
    ``retriable`` refusal is retried by :func:`dead_letters_retry` for
    ``QMS_INGEST_RETRY_WINDOW_S`` from its first refusal."""
    at = at or timezone.now()
    window = timedelta(seconds=settings.QMS_INGEST_RETRY_WINDOW_S)
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
                        retry_until=at + window if retriable else None,
                    )
            except IntegrityError:  # another worker recorded it a moment ago
                entry = DeadLetter.objects.select_for_update().get(
                    raw_sha256=sha, transport=transport, origin=origin[:300]
                )
        entry.attempts += 1
        entry.last_seen = max(entry.last_seen, at)
        entry.reason = reason
        entry.field = (field or "")[:120]
        if not retriable:
            entry.retry_until = None
        elif entry.retry_until is None or entry.status != DeadLetterStatus.OPEN:
            entry.retry_until = at + window
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


def _failure(exc: Exception, env: Envelope) -> EnvelopeError:
    """A handler's refusal as the dead-letter reason, naming the envelope field."""
    if isinstance(exc, EnvelopeError):
        exc.message_id, exc.kind = env.message_id, env.kind
        return exc
    if isinstance(exc, DomainError):
        return EnvelopeError(
            exc.message,
            field=exc.field,
            message_id=env.message_id,
            kind=env.kind,
            retriable=exc.code in registry.RETRY_CODES,
        )
    # A handler bug must not make a poison message: it is kept with the error's name. A
    # unique-key race (two workers making the same unit at once) settles by itself: retried.
    return EnvelopeError(
        f"Handler error {type(exc).__name__}: {exc}",
        message_id=env.message_id,
        kind=env.kind,
        retriable=isinstance(exc, IntegrityError),
    )


def _apply_one(reg: registry.Registration, env: Envelope, ctx: HandlerContext):
    """Run one message's handler in a savepoint: ``None`` when applied, else the refusal."""
    try:
        with transaction.atomic():
            reg.handler(env, ctx)
    except (OperationalError, InterfaceError):
        raise  # the database is away: nothing is acknowledged, the broker redelivers
    except (DomainError, EnvelopeError) as exc:
        return exc
    except Exception as exc:
        logger.exception("handler of %s failed on %s", env.kind, env.message_id)
        return exc
    return None


def _apply_run(
    reg: registry.Registration, run: list[tuple[Envelope, HandlerContext]]
) -> list[Exception | None]:
    """Apply consecutive messages of one kind: with the kind's batch handler when it has one
    (rolled back and retried message by message if it fails as a whole), else one by one."""
    if reg.batch_handler is None or len(run) < 2:
        return [_apply_one(reg, env, ctx) for env, ctx in run]
    try:
        with transaction.atomic():
            results = list(reg.batch_handler(run))
        if len(results) != len(run):
            raise RuntimeError(f"{len(results)} results for {len(run)} messages")
        return results
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        logger.warning(
            "batch handler of %s failed on %d messages; applying them one by one",
            run[0][0].kind,
            len(run),
            exc_info=True,
        )
        return [_apply_one(reg, env, ctx) for env, ctx in run]


def _message_row(env: Envelope, msg: RawMessage, received: datetime) -> IngestMessage:
    return IngestMessage(
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


def _claim(
    pending: list[tuple[int, Envelope]],
    messages: Sequence[RawMessage],
    now: datetime,
    outcomes: list[Outcome | None],
) -> list[tuple[int, Envelope]]:
    """Record the message ids of this batch (the unique index decides, also between two
    workers) and return the messages this batch applies; the others are duplicates."""
    known = set(
        IngestMessage.objects.filter(message_id__in=[e.message_id for _, e in pending])
        .order_by()
        .values_list("message_id", flat=True)
    )
    claimed = []
    for i, env in pending:
        if env.message_id in known:
            outcomes[i] = Outcome(DUPLICATE, env.message_id, "applied before")
        else:
            claimed.append((i, env))
    rows = [_message_row(env, messages[i], messages[i].received_at or now) for i, env in claimed]
    try:
        with transaction.atomic():
            bulk_insert(IngestMessage, rows)
        return claimed
    except IntegrityError:
        pass  # another worker holds some of these ids (a redelivery): claim one by one
    kept = []
    for (i, env), row in zip(claimed, rows, strict=True):
        row.pk = None
        row._state.adding = True
        try:
            with transaction.atomic():
                row.save(force_insert=True)
        except IntegrityError:
            outcomes[i] = Outcome(DUPLICATE, env.message_id, "applied by another worker")
        else:
            kept.append((i, env))
    return kept


def _runs(items: list[tuple[int, Envelope]]):
    """Consecutive messages of the same kind, in the given order."""
    run: list[tuple[int, Envelope]] = []
    for item in items:
        if run and item[1].kind != run[-1][1].kind:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


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
            doc = parse_json(msg.payload)
            if msg.check is not None:
                msg.check(doc)
            valid.append((i, validate(doc, master=master, now=now)))
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
    fresh.sort(key=lambda item: (item[1].sent_at, item[0]))
    counts: Counter = Counter()
    lags: list[float] = []
    with transaction.atomic():
        actor = actor or transport_actor(transport)
        claimed = _claim(fresh, messages, now, outcomes) if fresh else []
        refused_ids: list[str] = []
        for run in _runs(claimed):
            reg = registry.get(run[0][1].kind)
            contexts = [
                HandlerContext(
                    actor=actor,
                    transport=messages[i].transport,
                    origin=messages[i].origin,
                    received_at=messages[i].received_at or now,
                )
                for i, _ in run
            ]
            items = [(env, ctx) for (_, env), ctx in zip(run, contexts, strict=True)]
            results = _apply_run(reg, items)
            for (i, env), ctx, error in zip(run, contexts, results, strict=True):
                if error is None:
                    outcomes[i] = Outcome(ACCEPTED, env.message_id)
                    lags.append(max(0.0, (ctx.received_at - env.sent_at).total_seconds() * 1000))
                else:
                    failures.append((i, _failure(error, env)))
                    refused_ids.append(env.message_id)
        if refused_ids:  # not applied: a replay after the fix must find the id free
            IngestMessage.objects.filter(message_id__in=refused_ids).delete()
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
                retriable=exc.retriable,
            )
            outcomes[i] = Outcome(REJECTED, exc.message_id, exc.reason, exc.field, entry.pk)
        counts.update(o.status for o in outcomes if o is not None)
        _stats_add(transport, now, counts, lags)
    return [o for o in outcomes if o is not None]


def _retry_backoff(attempts: int) -> timedelta:
    """Wait before the next automatic try: 1 s, 2 s, 4 s ... at most a minute."""
    return timedelta(seconds=min(60, 2 ** max(0, attempts - 1)))


def dead_letters_retry(*, now: datetime | None = None, limit: int = 500) -> list[Outcome]:
    """Try again the open dead letters that are retriable and due (a unit they name may have
    arrived since), in one batch per transport. Applied ones are marked resolved; the
    others count another attempt and wait longer. Safe to run from several workers at once:
    entries another worker is retrying are skipped."""
    now = now or timezone.now()
    outcomes: list[Outcome] = []
    with transaction.atomic():
        due = list(
            DeadLetter.objects.select_for_update(skip_locked=True)
            .filter(status=DeadLetterStatus.OPEN, retry_until__gte=now)
            .order_by("first_seen", "pk")[:limit]
        )
        due = [e for e in due if e.last_seen + _retry_backoff(e.attempts) <= now]
        by_transport: dict[str, list[DeadLetter]] = {}
        for entry in due:
            by_transport.setdefault(entry.transport, []).append(entry)
        for transport, entries in by_transport.items():
            raws = [
                RawMessage(payload=bytes(e.raw), transport=transport, origin=e.origin)
                for e in entries
            ]
            results = ingest_raw(raws)
            for entry, outcome in zip(entries, results, strict=True):
                if outcome.status in (ACCEPTED, DUPLICATE):
                    entry.refresh_from_db()
                    entry.status = DeadLetterStatus.RESOLVED
                    entry.resolved_at = now
                    entry.resolution = f"retried automatically: {outcome.status}"
                    entry.retry_until = None
                    entry._change_reason = "retried"
                    entry.save()
            outcomes += results
    return outcomes


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
