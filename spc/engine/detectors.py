"""Time-weighted drift detectors: EWMA and two-sided tabular CUSUM, in sigma units.

Both run on standardised points ``u_i = (x_i - mu0) / sigma_i`` (``sigma_i`` = sigma /
sqrt(n_i) for a subgroup mean), so their parameters do not depend on the characteristic:

* EWMA (Roberts 1959; Lucas & Saccucci 1990): ``z_i = lam u_i + (1 - lam) z_(i-1)``,
  ``z_0 = 0``; signals when ``abs(z_i) > L sqrt(lam / (2 - lam))`` (the asymptotic limit,
  as in the published ARL tables).
* Tabular CUSUM (Page 1954; Montgomery section 9.1): ``C+_i = max(0, C+_(i-1) + u_i - k)``,
  ``C-_i = max(0, C-_(i-1) - u_i - k)``; signals when either exceeds ``h``. ``k`` and ``h``
  are in sigma units (K = k sigma, H = h sigma in the data's units). ``head_start`` is the
  fast initial response of Lucas & Crosier (1982): both sums start at it (``h / 2`` is the
  usual choice) instead of 0.

After a signal both detectors restart (EWMA at 0, CUSUM at the head start) unless
``reset_on_signal`` is off, so a lasting shift signals again about every ARL1 points
instead of at every point. A CUSUM signal names the points since the sum last left zero
(Montgomery's N+ / N- counters): the shift most likely began at the first of them.

:data:`DEFAULT_CUSUM` is the default drift detector for individuals: two-sided, k = 0.75,
h = 3.34 (in-control ARL 370.6, ARL 5.18 at a lasting 1.5 sigma shift; computed in
:mod:`spc.engine.arl` and checked by simulation in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from spc.engine.rules import Signal

__all__ = [
    "DEFAULT_CUSUM",
    "DEFAULT_CUSUM_H",
    "DEFAULT_CUSUM_K",
    "DEFAULT_EWMA",
    "CusumSpec",
    "DetectorState",
    "EwmaSpec",
    "ShewhartSpec",
    "run_detectors",
]

DEFAULT_CUSUM_K = 0.75
#: h for k = 0.75 with an in-control ARL of at least 370 (tuned by
#: ``arl.tune_cusum_h(0.75, 370)`` = 3.3396 and rounded up; see docs/spc.md).
DEFAULT_CUSUM_H = 3.34


@dataclass(frozen=True, slots=True)
class ShewhartSpec:
    """A Shewhart individuals chart with rule 1 only: signal when ``abs(u) > L``."""

    L: float = 3.0

    def __post_init__(self) -> None:
        _positive(self.L, "L")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "shewhart", "L": self.L}


@dataclass(frozen=True, slots=True)
class EwmaSpec:
    """EWMA with smoothing ``lam`` (0 < lam <= 1) and limit width ``L`` (asymptotic)."""

    lam: float = 0.2
    L: float = 2.962
    reset_on_signal: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.lam, int | float) and 0.0 < self.lam <= 1.0):
            raise ValueError(f"lam must be within (0, 1], got {self.lam!r}")
        _positive(self.L, "L")

    @property
    def limit(self) -> float:
        """Signal threshold for ``abs(z)``, in sigma units of one point."""
        return self.L * math.sqrt(self.lam / (2.0 - self.lam))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "ewma",
            "lam": self.lam,
            "L": self.L,
            "reset_on_signal": self.reset_on_signal,
        }


@dataclass(frozen=True, slots=True)
class CusumSpec:
    """Tabular CUSUM: reference value ``k``, decision interval ``h`` (sigma units).

    ``sides`` is ``both`` (two-sided), ``upper`` or ``lower``; ``head_start`` the FIR
    starting value (0 <= head_start < h).
    """

    k: float = DEFAULT_CUSUM_K
    h: float = DEFAULT_CUSUM_H
    head_start: float = 0.0
    sides: str = "both"
    reset_on_signal: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.k, int | float) and math.isfinite(self.k) and self.k >= 0):
            raise ValueError(f"k must be a finite number >= 0, got {self.k!r}")
        _positive(self.h, "h")
        if not (isinstance(self.head_start, int | float) and 0.0 <= self.head_start < self.h):
            raise ValueError(f"head_start must be within [0, h), got {self.head_start!r}")
        if self.sides not in ("both", "upper", "lower"):
            raise ValueError(f"sides must be 'both', 'upper' or 'lower', got {self.sides!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "cusum",
            "k": self.k,
            "h": self.h,
            "head_start": self.head_start,
            "sides": self.sides,
            "reset_on_signal": self.reset_on_signal,
        }


def _positive(value: object, name: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def spec_from_dict(data: Mapping[str, Any]) -> ShewhartSpec | EwmaSpec | CusumSpec:
    """The detector described by ``to_dict()``."""
    kind = data.get("kind")
    values = {key: value for key, value in data.items() if key != "kind"}
    if kind == "shewhart":
        return ShewhartSpec(**values)
    if kind == "ewma":
        return EwmaSpec(**values)
    if kind == "cusum":
        return CusumSpec(**values)
    raise ValueError(f"unknown detector kind {kind!r}")


DEFAULT_CUSUM = CusumSpec()
#: Lucas & Saccucci (1990): lam = 0.2, L = 2.962 gives an in-control ARL of 500.
DEFAULT_EWMA = EwmaSpec()


@dataclass(slots=True)
class DetectorState:
    """EWMA and CUSUM statistics after the last point, with the CUSUM run counters."""

    ewma: float = 0.0
    cusum_up: float = 0.0
    cusum_down: float = 0.0
    run_up: int = 0
    run_down: int = 0
    count: int = 0

    @classmethod
    def start(cls, cusum: CusumSpec | None) -> DetectorState:
        head = cusum.head_start if cusum is not None else 0.0
        return cls(cusum_up=head, cusum_down=head)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ewma": self.ewma,
            "cusum_up": self.cusum_up,
            "cusum_down": self.cusum_down,
            "run_up": self.run_up,
            "run_down": self.run_down,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorState:
        return cls(
            ewma=float(data["ewma"]),
            cusum_up=float(data["cusum_up"]),
            cusum_down=float(data["cusum_down"]),
            run_up=int(data["run_up"]),
            run_down=int(data["run_down"]),
            count=int(data["count"]),
        )


def run_detectors(
    u: np.ndarray | list[float],
    *,
    ewma: EwmaSpec | None,
    cusum: CusumSpec | None,
    state: DetectorState,
) -> tuple[dict[str, np.ndarray], list[Signal]]:
    """Advance the detectors over standardised points ``u``; ``state`` is updated in place.

    Returns the statistic after each point (``ewma``, ``cusum_up``, ``cusum_down``, the
    value that was compared with the limit, before any restart) and the signals.
    Positions continue from ``state.count``.
    """
    values = u.tolist() if isinstance(u, np.ndarray) else u
    size = len(values)
    start = state.count
    signals: list[Signal] = []
    series: dict[str, np.ndarray] = {}
    if ewma is not None:
        lam, keep, limit, reset = ewma.lam, 1.0 - ewma.lam, ewma.limit, ewma.reset_on_signal
        z = state.ewma
        trace = [0.0] * size
        for i in range(size):
            z = lam * values[i] + keep * z
            trace[i] = z
            if z > limit or z < -limit:
                position = start + i
                signals.append(Signal("ewma", "ewma", position, (position,), 1 if z > 0 else -1, z))
                if reset:
                    z = 0.0
        state.ewma = z
        series["ewma"] = np.array(trace)
    if cusum is not None:
        k, h, head, reset = cusum.k, cusum.h, cusum.head_start, cusum.reset_on_signal
        upper, lower = cusum.sides != "lower", cusum.sides != "upper"
        cp, cm, run_p, run_m = state.cusum_up, state.cusum_down, state.run_up, state.run_down
        ups = [0.0] * size
        downs = [0.0] * size
        for i in range(size):
            ui = values[i]
            if upper:
                cp = cp + ui - k
                if cp > 0.0:
                    run_p += 1
                else:
                    cp = 0.0
                    run_p = 0
                ups[i] = cp
            if lower:
                cm = cm - ui - k
                if cm > 0.0:
                    run_m += 1
                else:
                    cm = 0.0
                    run_m = 0
                downs[i] = cm
            if cp > h or cm > h:
                position = start + i
                if cp > h:
                    involved = tuple(range(position - max(run_p, 1) + 1, position + 1))
                    signals.append(Signal("cusum", "cusum_up", position, involved, 1, cp))
                if cm > h:
                    involved = tuple(range(position - max(run_m, 1) + 1, position + 1))
                    signals.append(Signal("cusum", "cusum_down", position, involved, -1, cm))
                if reset:
                    cp = cm = head
                    run_p = run_m = 0
        state.cusum_up, state.cusum_down, state.run_up, state.run_down = cp, cm, run_p, run_m
        if upper:
            series["cusum_up"] = np.array(ups)
        if lower:
            series["cusum_down"] = np.array(downs)
    state.count += size
    if ewma is not None and cusum is not None and signals:
        signals.sort(key=lambda s: (s.index, s.rule != "ewma"))
    return series, signals
