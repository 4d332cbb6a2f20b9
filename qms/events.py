"""Domain events between layers: an explicit, listable publish/subscribe registry.

A lower app publishes an event (a frozen dataclass) with :func:`publish`; delivery happens
after the surrounding transaction commits, so a subscriber never sees data that is later
rolled back. A higher app subscribes in its ``AppConfig.ready()`` with :func:`subscribe`;
a subscriber should only enqueue its own Celery task (which must be safe to run twice).

``python manage.py list_subscribers`` prints the registry, so anyone can see what reacts
to what.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from django.db import transaction

logger = logging.getLogger("celltrace.events")

Handler = Callable[[object], None]


@dataclass(frozen=True)
class Subscription:
    event_type: type
    handler: Handler
    app_label: str
    description: str

    @property
    def handler_path(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__qualname__}"


_registry: dict[type, list[Subscription]] = defaultdict(list)
_event_types: dict[str, type] = {}


def event(cls: type) -> type:
    """Class decorator: declare a domain event type (a frozen dataclass)."""
    cls = dataclass(frozen=True, kw_only=True)(cls)
    _event_types[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def subscribe(event_type: type, handler: Handler, *, app_label: str, description: str) -> None:
    """Register ``handler`` for ``event_type``. Registering the same handler twice is a no-op."""
    subs = _registry[event_type]
    if any(s.handler is handler for s in subs):
        return
    subs.append(Subscription(event_type, handler, app_label, description))


def publish(evt: object) -> None:
    """Deliver ``evt`` to every subscriber once the current transaction commits."""
    for sub in _registry.get(type(evt), ()):
        # robust: a subscriber that fails is logged and does not keep the others from
        # reacting (the data they react to is committed already).
        transaction.on_commit(partial(sub.handler, evt), robust=True)


def subscriptions() -> list[Subscription]:
    """Every subscription, ordered by event name then app."""
    out = [s for subs in _registry.values() for s in subs]
    return sorted(out, key=lambda s: (s.event_type.__qualname__, s.app_label))


def event_types() -> list[type]:
    """Every declared event type, whether or not anything subscribes to it."""
    return sorted(_event_types.values(), key=lambda t: t.__qualname__)
