"""Rational subgrouping: turn a stream of (timestamp, value, key) into subgroups.

Three ways, chosen per characteristic:

* ``consecutive(n)``: every n consecutive values (e.g. five cells in a row off one winder);
  a subgroup closes as soon as its n-th value arrives.
* ``time_window(seconds, origin_s=0)``: values whose timestamps fall into the same window
  ``floor((t - origin) / seconds)`` (e.g. one subgroup per 10-minute window); a window
  closes when a value of a later window arrives.
* ``by_key()``: consecutive values that share a key (a coil id, a lot id, a tray); the
  subgroup closes when the key changes. A key that comes back after another key opens a
  new subgroup: keys are runs in time, as a line produces them. Interleaved sources belong
  to different characteristics (one stream per machine).

The last subgroup stays open until it closes by the rule above or the caller closes it
(``close=True`` here, ``Monitor.flush()`` in a stream: end of a coil, end of a shift). A
closed subgroup with fewer than ``min_size`` values (default 2: a range needs two) is
returned as *short*, never charted and never dropped without a trace.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from spc.engine.errors import as_finite_array

__all__ = ["Subgroup", "Subgrouped", "Subgrouping", "as_seconds", "make_subgroups"]

_KINDS = ("consecutive", "time_window", "key")


@dataclass(frozen=True, slots=True)
class Subgrouping:
    """How values form subgroups (see the module docstring)."""

    kind: str
    size: int | None = None
    window_s: float | None = None
    origin_s: float = 0.0
    min_size: int = 2

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown subgrouping {self.kind!r}: use one of {', '.join(_KINDS)}")
        if self.kind == "consecutive" and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1
        ):
            raise ValueError(f"consecutive subgroups need a size >= 1, got {self.size!r}")
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int):
            raise ValueError(f"min_size must be an int, got {self.min_size!r}")
        if self.min_size < 1:
            raise ValueError(f"min_size must be at least 1, got {self.min_size}")
        if self.kind == "consecutive" and self.min_size > self.size:
            raise ValueError(f"min_size {self.min_size} exceeds the subgroup size {self.size}")
        if self.kind == "time_window":
            window = self.window_s
            if not isinstance(window, int | float) or not math.isfinite(window) or window <= 0:
                raise ValueError(f"a time window needs window_s > 0, got {window!r}")
            if not math.isfinite(self.origin_s):
                raise ValueError(f"origin_s must be finite, got {self.origin_s!r}")

    @classmethod
    def consecutive(cls, size: int, *, min_size: int | None = None) -> Subgrouping:
        return cls(
            "consecutive", size=size, min_size=min(size, 2) if min_size is None else min_size
        )

    @classmethod
    def time_window(
        cls, window_s: float, *, origin_s: float = 0.0, min_size: int = 2
    ) -> Subgrouping:
        return cls(
            "time_window", window_s=float(window_s), origin_s=float(origin_s), min_size=min_size
        )

    @classmethod
    def by_key(cls, *, min_size: int = 2) -> Subgrouping:
        return cls("key", min_size=min_size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "size": self.size,
            "window_s": self.window_s,
            "origin_s": self.origin_s,
            "min_size": self.min_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Subgrouping:
        return cls(
            kind=data["kind"],
            size=data.get("size"),
            window_s=data.get("window_s"),
            origin_s=float(data.get("origin_s", 0.0)),
            min_size=int(data.get("min_size", 2)),
        )


@dataclass(frozen=True, slots=True)
class Subgroup:
    """Values ``[start, stop)`` of the stream; ``label`` is the key or the window number.

    ``index`` is the subgroup's position on the chart (``None`` while open or when short).
    """

    start: int
    stop: int
    label: str | int | None = None
    index: int | None = None

    @property
    def size(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "stop": self.stop, "label": self.label, "index": self.index}


@dataclass(frozen=True, slots=True)
class Subgrouped:
    """Result of :func:`make_subgroups`: charted ``subgroups``, ``short`` ones, the ``open`` one."""

    subgroups: tuple[Subgroup, ...]
    short: tuple[Subgroup, ...]
    open: Subgroup | None

    def arrays(self, values: Sequence[float] | np.ndarray) -> list[np.ndarray]:
        """The values of each charted subgroup, for :func:`charts.phase1_subgroups`."""
        array = np.asarray(values, dtype=np.float64)
        return [array[group.start : group.stop] for group in self.subgroups]


def as_seconds(timestamps: Sequence[Any] | np.ndarray, *, offset: int = 0) -> np.ndarray:
    """Timestamps as float seconds: numbers, timezone-aware datetimes or datetime64 values.

    A naive datetime is refused (its zone is unknown), as is a NaN, naming the index.
    """
    if isinstance(timestamps, np.ndarray) and np.issubdtype(timestamps.dtype, np.datetime64):
        if np.isnat(timestamps).any():
            index = int(np.flatnonzero(np.isnat(timestamps))[0])
            raise ValueError(f"timestamps[{index + offset}] is not a time (NaT)")
        return timestamps.astype("datetime64[ns]").astype(np.int64) / 1e9
    items = list(timestamps)
    if items and isinstance(items[0], datetime):
        seconds = []
        for position, item in enumerate(items):
            if not isinstance(item, datetime) or item.tzinfo is None:
                raise ValueError(
                    f"timestamps[{position + offset}] must be a timezone-aware datetime, "
                    f"got {item!r}"
                )
            seconds.append(item.timestamp())
        return np.array(seconds, dtype=np.float64)
    return as_finite_array(items, name="timestamps", offset=offset)


def window_labels(seconds: np.ndarray, spec: Subgrouping) -> np.ndarray:
    """Window number of each timestamp."""
    return np.floor((seconds - spec.origin_s) / spec.window_s).astype(np.int64)


def check_order(seconds: np.ndarray, previous: float | None, *, offset: int = 0) -> None:
    """Refuse timestamps that go back in time, naming the index."""
    if seconds.size == 0:
        return
    steps = np.diff(seconds, prepend=seconds[0] if previous is None else previous)
    if (steps < 0).any():
        index = int(np.flatnonzero(steps < 0)[0])
        raise ValueError(
            f"timestamps[{index + offset}] goes back in time ({float(seconds[index])!r} after "
            f"{float(seconds[index - 1]) if index else previous!r})"
        )


def check_key(key: object, position: int) -> str | int:
    if isinstance(key, bool) or not isinstance(key, str | int | np.integer | np.str_):
        raise ValueError(f"keys[{position}] must be a str or an int, got {key!r}")
    return key.item() if isinstance(key, np.generic) else key


def labels_for(
    spec: Subgrouping,
    size: int,
    *,
    keys: Sequence[Any] | np.ndarray | None,
    timestamps: Sequence[Any] | np.ndarray | None,
    previous_time: float | None = None,
    offset: int = 0,
) -> tuple[list[Any] | None, float | None]:
    """Labels (key or window number) of ``size`` new values, and the last timestamp."""
    if spec.kind == "key":
        if keys is None:
            raise ValueError("subgrouping by key needs keys")
        items = list(keys)
        if len(items) != size:
            raise ValueError(f"values and keys differ in length ({size} and {len(items)})")
        return [check_key(key, position + offset) for position, key in enumerate(items)], None
    if spec.kind == "time_window":
        if timestamps is None:
            raise ValueError("subgrouping by time window needs timestamps")
        seconds = as_seconds(timestamps, offset=offset)
        if seconds.size != size:
            raise ValueError(f"values and timestamps differ in length ({size} and {seconds.size})")
        check_order(seconds, previous_time, offset=offset)
        last = float(seconds[-1]) if seconds.size else previous_time
        return window_labels(seconds, spec).tolist(), last
    return None, None


def split(
    spec: Subgrouping, open_size: int, open_label: Any, size: int, labels: list[Any] | None
) -> tuple[list[int], int]:
    """Where the new values close subgroups.

    Given an open subgroup of ``open_size`` values (label ``open_label``) followed by
    ``size`` new values, returns the end positions (in the joined sequence) of the
    subgroups that close, and the start of the subgroup left open.
    """
    total = open_size + size
    if spec.kind == "consecutive":
        n = spec.size
        ends = list(range(n, total + 1, n))
        return ends, ends[-1] if ends else 0
    ends = []
    previous = open_label if open_size else None
    for position, label in enumerate(labels or ()):
        joined = open_size + position
        if joined > 0 and label != previous:
            ends.append(joined)
        previous = label
    return ends, ends[-1] if ends else 0


def make_subgroups(
    values: Sequence[float] | np.ndarray,
    *,
    spec: Subgrouping,
    timestamps: Sequence[Any] | np.ndarray | None = None,
    keys: Sequence[Any] | np.ndarray | None = None,
    close: bool = False,
) -> Subgrouped:
    """Subgroups of ``values`` by ``spec``; the last one stays open unless ``close``."""
    array = as_finite_array(values)
    labels, _ = labels_for(spec, array.size, keys=keys, timestamps=timestamps)
    ends, open_start = split(spec, 0, None, array.size, labels)
    if close and open_start < array.size:
        ends.append(array.size)
        open_start = array.size
    charted: list[Subgroup] = []
    short: list[Subgroup] = []
    start = 0
    for end in ends:
        label = labels[start] if labels is not None else None
        if end - start >= spec.min_size:
            charted.append(Subgroup(start, end, label, len(charted)))
        else:
            short.append(Subgroup(start, end, label))
        start = end
    open_group = None
    if open_start < array.size:
        open_group = Subgroup(
            open_start, array.size, labels[open_start] if labels is not None else None
        )
    return Subgrouped(tuple(charted), tuple(short), open_group)
