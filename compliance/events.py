"""Domain events published by compliance."""

from qms.events import event


@event
class HoldPlaced:
    hold_id: int
    unit_ids: tuple[int, ...]
    source: str


@event
class HoldReleased:
    hold_id: int
    unit_ids: tuple[int, ...]
