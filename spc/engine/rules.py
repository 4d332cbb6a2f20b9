"""Run rules for Shewhart charts: the eight Nelson rules and the Western Electric preset.

Every plotted point is described by its value ``x``, its limits ``lcl``/``ucl`` and its
standardised distance from the centre line ``z = (x - centre) / sigma_point`` (sigma of the
plotted statistic at that point: sigma / sqrt(n) for a subgroup mean, sqrt(p(1-p)/n) for a
proportion...). Rule 1 compares ``x`` with the limits (so a limit clipped at zero, as on
attribute charts, is honoured); the zone rules compare ``z`` with 1 and 2; the trend and
alternation rules compare consecutive ``x``.

=====  ========================================================================  ======
rule   fires at point i when (Nelson 1984, standard parameters)                  points
=====  ========================================================================  ======
1      x_i > UCL or x_i < LCL                                                    1
2      the last 9 points are all above (z > 0) or all below (z < 0) the centre   9
3      the last 6 points are strictly increasing or strictly decreasing          6
4      the last 14 points alternate up and down (13 successive changes of sign)  14
5      2 of the last 3 are beyond 2 sigma on the same side, point i one of them  3
6      4 of the last 5 are beyond 1 sigma on the same side, point i one of them  5
7      the last 15 points are all within 1 sigma of the centre (abs(z) < 1)      15
8      the last 8 points are all beyond 1 sigma (abs(z) > 1), on either side     8
=====  ========================================================================  ======

"Beyond" is strict (z > 2, not z >= 2); a point on the centre line breaks a rule-2 run and an
unchanged value breaks a trend (3) or an alternation (4). A run rule keeps firing at every
further point while the run lasts (a run of 11 points above the centre fires rule 2 at its
9th, 10th and 11th point). Rules 5 and 6 fire only at a point that is itself beyond the
zone, so a pattern is not reported again at a point that adds nothing to it.

Western Electric (AT&T Statistical Quality Control Handbook, 1956) rules 1-4 are Nelson
rules 1, 5, 6 and 2 with a run of 8 instead of 9 for the same-side rule:
``WESTERN_ELECTRIC = RuleSet({1, 2, 5, 6}, same_side_run=8)``; its signals are reported
under the Nelson numbers.

Two evaluators give identical results: a tight per-point loop (single points and short
chunks) and a numpy one for longer arrays. Both read and update a :class:`RunState` (a few
counters and the zones of the last four points), so a stream can be evaluated in chunks of
any size and the state stored in between.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spc.engine.errors import UnknownRuleError

__all__ = [
    "BEYOND_LIMITS",
    "NELSON",
    "RULES",
    "WESTERN_ELECTRIC",
    "RuleSet",
    "RunState",
    "Signal",
    "evaluate_point",
    "evaluate_rules",
]

#: Rule number -> what it detects (Nelson 1984).
RULES: Mapping[int, str] = {
    1: "one point beyond the control limits",
    2: "nine points in a row on the same side of the centre line",
    3: "six points in a row steadily increasing or decreasing",
    4: "fourteen points in a row alternating up and down",
    5: "two out of three points in a row beyond 2 sigma on the same side",
    6: "four out of five points in a row beyond 1 sigma on the same side",
    7: "fifteen points in a row within 1 sigma of the centre line",
    8: "eight points in a row beyond 1 sigma on either side",
}
_TREND = 6
_ALTERNATING = 14
_TWO_OF_THREE = (2, 3)
_FOUR_OF_FIVE = (4, 5)
_STRATIFICATION = 15
_MIXTURE = 8
#: Below this many points a chunk goes through the per-point loop (numpy's per-call cost
#: is larger than the loop's for short chunks).
VECTOR_THRESHOLD = 512


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A set of Nelson rules (numbers 1..8) at their standard parameters.

    ``same_side_run`` is the run length of rule 2: 9 (Nelson) or 8 (Western Electric).
    A rule number outside 1..8 is refused with :class:`UnknownRuleError`.
    """

    rules: frozenset[int]
    same_side_run: int = 9

    def __init__(self, rules: Iterable[int], same_side_run: int = 9) -> None:
        numbers = set()
        for rule in rules:
            if isinstance(rule, bool) or not isinstance(rule, int | np.integer):
                raise UnknownRuleError(rule, RULES)
            if int(rule) not in RULES:
                raise UnknownRuleError(rule, RULES)
            numbers.add(int(rule))
        if isinstance(same_side_run, bool) or not isinstance(same_side_run, int):
            raise ValueError(f"same_side_run must be an int, got {same_side_run!r}")
        if not 2 <= same_side_run <= 50:
            raise ValueError(f"same_side_run must be within 2..50, got {same_side_run}")
        object.__setattr__(self, "rules", frozenset(numbers))
        object.__setattr__(self, "same_side_run", same_side_run)

    def __contains__(self, rule: int) -> bool:
        return rule in self.rules

    def to_dict(self) -> dict[str, Any]:
        return {"rules": sorted(self.rules), "same_side_run": self.same_side_run}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleSet:
        return cls(data["rules"], same_side_run=data.get("same_side_run", 9))


NELSON = RuleSet(range(1, 9))
WESTERN_ELECTRIC = RuleSet({1, 2, 5, 6}, same_side_run=8)
BEYOND_LIMITS = RuleSet({1})
_ONLY_BEYOND = frozenset({1})


@dataclass(frozen=True, slots=True)
class Signal:
    """One rule firing at one plotted point.

    ``rule`` is ``nelson_1``..``nelson_8`` for run rules (or ``ewma``, ``cusum`` from the
    detectors); ``index`` the plotted point where it fired (point index for individuals,
    subgroup index for subgroup charts, counted from the start of the stream);
    ``involved`` the points that make up the pattern; ``direction`` +1 upward, -1
    downward, 0 for patterns without one (alternation, stratification, mixture).
    """

    rule: str
    statistic: str
    index: int
    involved: tuple[int, ...]
    direction: int
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "statistic": self.statistic,
            "index": self.index,
            "involved": list(self.involved),
            "direction": self.direction,
            "value": self.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signal:
        return cls(
            rule=data["rule"],
            statistic=data["statistic"],
            index=int(data["index"]),
            involved=tuple(int(i) for i in data["involved"]),
            direction=int(data["direction"]),
            value=float(data["value"]),
        )


@dataclass(slots=True)
class RunState:
    """What the rules remember of the points already seen (plain data, JSON-able).

    Run lengths ending at the last point: ``above``/``below`` the centre, ``up``/``down``
    (consecutive increases/decreases), ``alt`` (consecutive changes of direction),
    ``within``/``outside`` 1 sigma; ``prev_x`` and ``prev_sign`` (sign of the last change);
    ``zones`` of the last four points (+-2 beyond 2 sigma, +-1 beyond 1 sigma, 0 inside).
    A rule set of rule 1 alone needs no memory and only advances ``count``.
    """

    count: int = 0
    prev_x: float | None = None
    prev_sign: int = 0
    above: int = 0
    below: int = 0
    up: int = 0
    down: int = 0
    alt: int = 0
    within: int = 0
    outside: int = 0
    zones: list[int] = field(default_factory=lambda: [0, 0, 0, 0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "prev_x": self.prev_x,
            "prev_sign": self.prev_sign,
            "above": self.above,
            "below": self.below,
            "up": self.up,
            "down": self.down,
            "alt": self.alt,
            "within": self.within,
            "outside": self.outside,
            "zones": list(self.zones),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        prev_x = data.get("prev_x")
        return cls(
            count=int(data["count"]),
            prev_x=None if prev_x is None else float(prev_x),
            prev_sign=int(data["prev_sign"]),
            above=int(data["above"]),
            below=int(data["below"]),
            up=int(data["up"]),
            down=int(data["down"]),
            alt=int(data["alt"]),
            within=int(data["within"]),
            outside=int(data["outside"]),
            zones=[int(z) for z in data["zones"]],
        )


def evaluate_rules(
    x: np.ndarray,
    z: np.ndarray,
    lcl: np.ndarray | float,
    ucl: np.ndarray | float,
    *,
    ruleset: RuleSet,
    state: RunState | None = None,
    statistic: str = "x",
    path: str = "auto",
) -> list[Signal]:
    """Signals of ``ruleset`` on the plotted points ``x`` (with ``z`` and limits).

    ``state`` is read and advanced in place (a fresh one when omitted); point indices
    continue from ``state.count``. ``path`` forces the per-point ``"loop"`` or the
    ``"vector"`` evaluator (both give the same signals; ``"auto"`` picks by length).
    Signals come ordered by point, then by rule number.
    """
    if state is None:
        state = RunState()
    size = len(x)
    if size == 0:
        return []
    lcl_array = np.broadcast_to(np.asarray(lcl, dtype=np.float64), (size,))
    ucl_array = np.broadcast_to(np.asarray(ucl, dtype=np.float64), (size,))
    if ruleset.rules == _ONLY_BEYOND:
        return _evaluate_beyond(x, lcl_array, ucl_array, state, statistic)
    if path == "auto":
        path = "vector" if size >= VECTOR_THRESHOLD else "loop"
    if path == "loop":
        return _evaluate_loop(
            x.tolist(),
            z.tolist(),
            lcl_array.tolist(),
            ucl_array.tolist(),
            ruleset,
            state,
            statistic,
        )
    if path == "vector":
        return _evaluate_vector(x, z, lcl_array, ucl_array, ruleset, state, statistic)
    raise ValueError(f"unknown path {path!r}: use 'auto', 'loop' or 'vector'")


def _evaluate_beyond(
    x: np.ndarray, lcl: np.ndarray, ucl: np.ndarray, state: RunState, statistic: str
) -> list[Signal]:
    """Rule 1 alone needs no memory: compare, and count the points."""
    high, low = x > ucl, x < lcl
    start = state.count
    state.count += x.size
    offsets = np.flatnonzero(high | low)
    if not offsets.size:
        return []
    return [
        Signal(
            rule="nelson_1",
            statistic=statistic,
            index=start + offset,
            involved=(start + offset,),
            direction=1 if high[offset] else -1,
            value=float(x[offset]),
        )
        for offset in offsets.tolist()
    ]


def _involved(rule: int, index: int, zones: list[int], ruleset: RuleSet) -> tuple[int, ...]:
    """Points of the pattern of ``rule`` ending at ``index``; ``zones`` ends at ``index``."""
    if rule == 1:
        return (index,)
    if rule in (5, 6):
        _, window = _TWO_OF_THREE if rule == 5 else _FOUR_OF_FIVE
        level = 2 if rule == 5 else 1
        side = 1 if zones[-1] > 0 else -1
        recent = zones[-window:]
        first = index - len(recent) + 1
        return tuple(first + j for j, zone in enumerate(recent) if zone * side >= level)
    length = {
        2: ruleset.same_side_run,
        3: _TREND,
        4: _ALTERNATING,
        7: _STRATIFICATION,
        8: _MIXTURE,
    }[rule]
    return tuple(range(index - length + 1, index + 1))


def evaluate_point(
    x: float,
    z: float,
    lcl: float,
    ucl: float,
    *,
    ruleset: RuleSet,
    state: RunState,
    statistic: str = "x",
) -> list[Signal]:
    """:func:`evaluate_rules` for one point, without numpy (the per-point path)."""
    if ruleset.rules == _ONLY_BEYOND:
        index = state.count
        state.count += 1
        if x > ucl or x < lcl:
            return [Signal("nelson_1", statistic, index, (index,), 1 if x > ucl else -1, x)]
        return []
    return _evaluate_loop([x], [z], [lcl], [ucl], ruleset, state, statistic)


def _evaluate_loop(
    xs: list[float],
    zs: list[float],
    lcls: list[float],
    ucls: list[float],
    ruleset: RuleSet,
    state: RunState,
    statistic: str,
) -> list[Signal]:
    rules = ruleset.rules
    r1, r2, r3, r4 = 1 in rules, 2 in rules, 3 in rules, 4 in rules
    r5, r6, r7, r8 = 5 in rules, 6 in rules, 7 in rules, 8 in rules
    run = ruleset.same_side_run
    count = state.count
    prev_x, prev_sign = state.prev_x, state.prev_sign
    above, below, up, down = state.above, state.below, state.up, state.down
    alt, within, outside = state.alt, state.within, state.outside
    q1, q2, q3, q4 = state.zones  # zones of the four previous points, oldest first
    signals: list[Signal] = []
    for offset in range(len(xs)):
        xi = xs[offset]
        zi = zs[offset]
        if zi > 0.0:
            above += 1
            below = 0
        elif zi < 0.0:
            below += 1
            above = 0
        else:
            above = below = 0
        if prev_x is None or xi == prev_x:
            sign = up = down = alt = 0
        else:
            if xi > prev_x:
                sign = 1
                up += 1
                down = 0
            else:
                sign = -1
                down += 1
                up = 0
            alt = alt + 1 if sign * prev_sign < 0 else 1
        prev_x, prev_sign = xi, sign
        if zi > 2.0:
            zone = 2
        elif zi > 1.0:
            zone = 1
        elif zi < -2.0:
            zone = -2
        elif zi < -1.0:
            zone = -1
        else:
            zone = 0
        if -1.0 < zi < 1.0:
            within += 1
            outside = 0
        elif zi > 1.0 or zi < -1.0:
            outside += 1
            within = 0
        else:
            within = outside = 0
        fired = None
        if r1 and (xi > ucls[offset] or xi < lcls[offset]):
            fired = [(1, 1 if xi > ucls[offset] else -1)]
        if r2 and (above >= run or below >= run):
            fired = (fired or []) + [(2, 1 if above >= run else -1)]
        if r3 and (up >= _TREND - 1 or down >= _TREND - 1):
            fired = (fired or []) + [(3, 1 if up >= _TREND - 1 else -1)]
        if r4 and alt >= _ALTERNATING - 1:
            fired = (fired or []) + [(4, 0)]
        if r5 and (zone == 2 or zone == -2):
            side = 1 if zone > 0 else -1
            if q4 * side >= 2 or q3 * side >= 2:
                fired = (fired or []) + [(5, side)]
        if r6 and zone != 0:
            side = 1 if zone > 0 else -1
            if (q1 * side >= 1) + (q2 * side >= 1) + (q3 * side >= 1) + (q4 * side >= 1) >= 3:
                fired = (fired or []) + [(6, side)]
        if r7 and within >= _STRATIFICATION:
            fired = (fired or []) + [(7, 0)]
        if r8 and outside >= _MIXTURE:
            fired = (fired or []) + [(8, 0)]
        if fired:
            index = count + offset
            window = [q1, q2, q3, q4, zone]
            for rule, direction in fired:
                signals.append(
                    Signal(
                        rule=f"nelson_{rule}",
                        statistic=statistic,
                        index=index,
                        involved=_involved(rule, index, window, ruleset),
                        direction=direction,
                        value=xi,
                    )
                )
        q1, q2, q3, q4 = q2, q3, q4, zone
    state.count = count + len(xs)
    state.prev_x, state.prev_sign = prev_x, prev_sign
    state.above, state.below, state.up, state.down = above, below, up, down
    state.alt, state.within, state.outside = alt, within, outside
    state.zones = [q1, q2, q3, q4]
    return signals


def _runs(condition: np.ndarray, carry: int) -> np.ndarray:
    """Length of the run of True ending at each position, continuing a run of ``carry``."""
    positions = np.arange(condition.size)
    last_false = np.where(condition, -1 - carry, positions)
    np.maximum.accumulate(last_false, out=last_false)
    return positions - last_false


def _window_count(flags: np.ndarray, window: int, size: int) -> np.ndarray:
    """Count of True among the last ``window`` flags ending at each of the last ``size``."""
    sums = np.concatenate(([0], np.cumsum(flags, dtype=np.int64)))
    end = np.arange(flags.size - size, flags.size) + 1
    return sums[end] - sums[end - window]


def _evaluate_vector(
    x: np.ndarray,
    z: np.ndarray,
    lcl: np.ndarray,
    ucl: np.ndarray,
    ruleset: RuleSet,
    state: RunState,
    statistic: str,
) -> list[Signal]:
    rules = ruleset.rules
    size = x.size
    fired = np.zeros((size, 9), dtype=bool)
    directions = np.zeros((size, 9), dtype=np.int8)

    above = _runs(z > 0.0, state.above)
    below = _runs(z < 0.0, state.below)
    if state.prev_x is None:
        changes = np.concatenate(([0.0], np.diff(x)))
    else:
        changes = np.diff(x, prepend=state.prev_x)
    signs = np.sign(changes).astype(np.int8)
    up = _runs(signs > 0, state.up)
    down = _runs(signs < 0, state.down)
    previous_signs = np.concatenate(([state.prev_sign], signs[:-1])).astype(np.int8)
    alternating = _runs(signs * previous_signs < 0, max(state.alt - 1, 0))
    alt = np.where(signs != 0, alternating + 1, 0)
    zones = np.zeros(size, dtype=np.int8)
    zones[z > 1.0] = 1
    zones[z > 2.0] = 2
    zones[z < -1.0] = -1
    zones[z < -2.0] = -2
    all_zones = np.concatenate((np.asarray(state.zones, dtype=np.int8), zones))
    within = _runs(np.abs(z) < 1.0, state.within)
    outside = _runs(np.abs(z) > 1.0, state.outside)

    if 1 in rules:
        high, low = x > ucl, x < lcl
        fired[:, 1] = high | low
        directions[:, 1] = np.where(high, 1, -1)
    if 2 in rules:
        run = ruleset.same_side_run
        fired[:, 2] = (above >= run) | (below >= run)
        directions[:, 2] = np.where(above >= run, 1, -1)
    if 3 in rules:
        fired[:, 3] = (up >= _TREND - 1) | (down >= _TREND - 1)
        directions[:, 3] = np.where(up >= _TREND - 1, 1, -1)
    if 4 in rules:
        fired[:, 4] = alt >= _ALTERNATING - 1
    if 5 in rules:
        need, window = _TWO_OF_THREE
        high = (zones == 2) & (_window_count(all_zones >= 2, window, size) >= need)
        low = (zones == -2) & (_window_count(all_zones <= -2, window, size) >= need)
        fired[:, 5] = high | low
        directions[:, 5] = np.where(high, 1, -1)
    if 6 in rules:
        need, window = _FOUR_OF_FIVE
        high = (zones >= 1) & (_window_count(all_zones >= 1, window, size) >= need)
        low = (zones <= -1) & (_window_count(all_zones <= -1, window, size) >= need)
        fired[:, 6] = high | low
        directions[:, 6] = np.where(high, 1, -1)
    if 7 in rules:
        fired[:, 7] = within >= _STRATIFICATION
    if 8 in rules:
        fired[:, 8] = outside >= _MIXTURE

    signals: list[Signal] = []
    offsets, numbers = np.nonzero(fired)
    if offsets.size:
        zone_list = all_zones.tolist()
        for offset, rule in zip(offsets.tolist(), numbers.tolist(), strict=True):
            index = state.count + offset
            signals.append(
                Signal(
                    rule=f"nelson_{rule}",
                    statistic=statistic,
                    index=index,
                    involved=_involved(rule, index, zone_list[offset : offset + 5], ruleset),
                    direction=int(directions[offset, rule]) if rule not in (4, 7, 8) else 0,
                    value=float(x[offset]),
                )
            )

    state.count += size
    state.prev_x = float(x[-1])
    state.prev_sign = int(signs[-1])
    state.above, state.below = int(above[-1]), int(below[-1])
    state.up, state.down = int(up[-1]), int(down[-1])
    state.alt = int(alt[-1])
    state.within, state.outside = int(within[-1]), int(outside[-1])
    state.zones = [int(v) for v in all_zones[-4:]]
    return signals
