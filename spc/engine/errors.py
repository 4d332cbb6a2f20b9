"""Refusals of the SPC engine and the input checks every entry point shares."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = [
    "NonFiniteValueError",
    "UnknownRuleError",
    "as_finite_array",
    "as_index_set",
    "check_finite_number",
]


class NonFiniteValueError(ValueError):
    """A NaN or infinite value in the input; ``index`` is its position (first one found)."""

    def __init__(self, name: str, index: int, value: float) -> None:
        self.name = name
        self.index = index
        self.value = value
        super().__init__(f"{name}[{index}] is not a finite number ({value!r})")


class UnknownRuleError(ValueError):
    """A rule set names a run rule the engine does not know."""

    def __init__(self, rule: object, known: Iterable[int]) -> None:
        self.rule = rule
        known_text = ", ".join(str(r) for r in sorted(known))
        super().__init__(f"unknown run rule {rule!r}: the known rules are {known_text} (Nelson)")


def as_finite_array(values: object, name: str = "values", *, offset: int = 0) -> np.ndarray:
    """``values`` as a 1-D float64 array; refuses NaN and infinities, naming the index.

    ``offset`` is added to the reported index, so a chunk of a stream reports the index of
    the point in the whole stream.
    """
    raw = values if isinstance(values, np.ndarray) else np.asarray(values)
    if raw.dtype.kind not in "iuf":
        if raw.size == 0:
            return np.empty(0, dtype=np.float64)
        raise ValueError(f"{name} must be numbers, got an array of {raw.dtype}")
    array = raw.astype(np.float64, copy=False)
    if array.ndim == 0:
        array = array.reshape(1)
    elif array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    finite = np.isfinite(array)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        raise NonFiniteValueError(name, index + offset, float(array[index]))
    return array


def as_index_set(indices: Iterable[int], size: int, name: str = "excluded") -> frozenset[int]:
    """Validated set of positions in ``range(size)``."""
    result = set()
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise ValueError(f"{name} must hold integer positions, got {index!r}")
        if not 0 <= index < size:
            raise ValueError(f"{name} position {index} is outside 0..{size - 1}")
        result.add(int(index))
    return frozenset(result)


def check_finite_number(value: float, name: str) -> float:
    """A single finite float (configuration values: targets, sigma, limits)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number
