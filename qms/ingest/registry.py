"""Handlers per envelope kind, registered by the app that owns the kind.

An app registers in its ``AppConfig.ready()``::

    ingest_registry.register("process_result", handle_process_result, app_label="genealogy")

The payload of a kind is validated against the ``$defs/<kind>`` section of the envelope
schema, or against the ``payload_schema`` given at registration (for kinds that later apps
add). Transports never know about domain models: they only produce envelopes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Handler = Callable[..., None]


@dataclass(frozen=True)
class Registration:
    kind: str
    handler: Handler
    app_label: str
    payload_schema: dict | None

    @property
    def handler_path(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__qualname__}"


_handlers: dict[str, Registration] = {}


def register(
    kind: str, handler: Handler, *, app_label: str, payload_schema: dict | None = None
) -> None:
    """Make ``handler(envelope, context)`` the one handler of ``kind``."""
    current = _handlers.get(kind)
    if current is not None and current.handler is not handler:
        raise RuntimeError(f"Ingest kind {kind!r} is handled by {current.handler_path} already.")
    _handlers[kind] = Registration(kind, handler, app_label, payload_schema)


def get(kind: str) -> Registration | None:
    return _handlers.get(kind)


def registrations() -> list[Registration]:
    return sorted(_handlers.values(), key=lambda r: r.kind)
