"""Handlers per envelope kind, registered by the app that owns the kind.

An app registers in its ``AppConfig.ready()``::

    ingest_registry.register("process_result", handle_process_result, app_label="genealogy")

A kind that arrives in volume may also register a ``batch_handler(items)`` that applies a run
of consecutive messages of the kind at once: ``items`` is a list of ``(envelope, context)``
in ``sent_at`` order, and it returns one entry per item, ``None`` when applied or the
exception that refused it (a :class:`qms.exceptions.DomainError` or an ``EnvelopeError``).
It must write nothing for a refused item and must give each item the effect and the refusal
that ``handler`` would give it one message at a time. If it raises, the ingest rolls the run
back and applies its messages one at a time with ``handler``.

The payload of a kind is validated against the ``$defs/<kind>`` section of the envelope
schema, or against the ``payload_schema`` given at registration (for kinds that later apps
add). Transports never know about domain models: they only produce envelopes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Refusal code (``DomainError.code``) of a message naming a unit that does not exist yet.
UNKNOWN_UNIT = "unknown_unit"
#: Refusal codes of messages that refer to something another message makes: a unit not
#: there yet, a rework of a cell whose assembly has not arrived (``not_assembled``). Such a
#: message is dead-lettered and retried by the ingest itself for
#: ``QMS_INGEST_RETRY_WINDOW_S``: the message it depends on may be late, or on its way
#: through another worker of a shared subscription.
RETRY_CODES = frozenset({UNKNOWN_UNIT, "not_assembled"})

Handler = Callable[..., None]
BatchHandler = Callable[..., list]


@dataclass(frozen=True)
class Registration:
    kind: str
    handler: Handler
    app_label: str
    payload_schema: dict | None
    batch_handler: BatchHandler | None = None

    @property
    def handler_path(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__qualname__}"


_handlers: dict[str, Registration] = {}


def register(
    kind: str,
    handler: Handler,
    *,
    app_label: str,
    payload_schema: dict | None = None,
    batch_handler: BatchHandler | None = None,
) -> None:
    """Make ``handler(envelope, context)`` the one handler of ``kind`` (and
    ``batch_handler(items)`` its handler for a run of messages, when given)."""
    current = _handlers.get(kind)
    if current is not None and current.handler is not handler:
        raise RuntimeError(f"Ingest kind {kind!r} is handled by {current.handler_path} already.")
    _handlers[kind] = Registration(kind, handler, app_label, payload_schema, batch_handler)


def get(kind: str) -> Registration | None:
    return _handlers.get(kind)


def registrations() -> list[Registration]:
    return sorted(_handlers.values(), key=lambda r: r.kind)
