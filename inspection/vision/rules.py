"""What happens to a defect the model called: per-class size and density rules, continuous
defects, and defects that repeat with a roller's circumference.

Pure Python: the worker keeps one :class:`RuleEngine` per camera and asks it for every
defect, in coil order. The engine remembers the counted defects of the current coil (by
coil position), so density, continuity and periodicity rules see across frames.

The rules document (``InspectionStation.rules``, JSON) is parsed by :func:`parse`; every key
is optional and falls back to :data:`DEFAULT_RULES` (an NMC cathode coating line at 20 µm/px,
documented in ``docs/vision-worker.md``)::

    {
      "classes": {
        "particle": {"min_size_um": 100, "quarantine_size_um": 100, "stop_size_um": 500,
                     "stop_count_per_10m": 3, "stop_length_m": null},
        ...
      },
      "continuity": {"cd_tolerance_mm": 1.0, "join_gap_mm": 5.0},
      "periodicity": {"cd_tolerance_mm": 1.0, "period_tolerance_mm": 3.0, "min_repeats": 3,
                      "classes": null}
    }

How one defect is decided (``band`` is the model's: act, review or log):

1. band ``log``: **ignore**. Band ``review``: **review** (a person decides).
2. band ``act``: the class's size (:func:`defect_size_um`) below ``min_size_um``: **ignore**
   (too small to count). Otherwise the defect counts, and the first of these that holds
   decides **stop**: size at or above ``stop_size_um``; the ``stop_count_per_10m``-th
   counted defect of the class within 10 m of coil; a run of the class at one
   cross-direction position reaching ``stop_length_m`` along the coil; the defect repeating
   (any counted class, or those listed) at one cross-direction position with the period of a
   configured roller, ``min_repeats`` times in a row (the stop names the roller).
3. Else size at or above ``quarantine_size_um``: **quarantine**; else **review**.

A threshold is reached *at* its value (``>=``); a missing or null threshold never fires.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field

from inspection.schema import DEFECT_CLASSES

#: Classes measured by their length (a line or band), the others by equivalent diameter.
LENGTH_CLASSES = frozenset({"scratch", "crack", "wrinkle", "edge"})
DENSITY_WINDOW_M = 10.0

#: Defaults for an NMC cathode coating line imaged at 20 µm/px (see docs/vision-worker.md).
DEFAULT_RULES: dict = {
    "classes": {
        "pinhole": {
            "min_size_um": 60,
            "quarantine_size_um": 100,
            "stop_size_um": 1000,
            "stop_count_per_10m": 10,
            "stop_length_m": None,
        },
        "void": {
            "min_size_um": 200,
            "quarantine_size_um": 400,
            "stop_size_um": 3000,
            "stop_count_per_10m": 3,
            "stop_length_m": None,
        },
        "particle": {
            "min_size_um": 100,
            "quarantine_size_um": 100,
            "stop_size_um": 500,
            "stop_count_per_10m": 3,
            "stop_length_m": None,
        },
        "scratch": {
            "min_size_um": 500,
            "quarantine_size_um": 1500,
            "stop_size_um": None,
            "stop_count_per_10m": 5,
            "stop_length_m": 0.5,
        },
        "wrinkle": {
            "min_size_um": 1000,
            "quarantine_size_um": 1000,
            "stop_size_um": None,
            "stop_count_per_10m": 3,
            "stop_length_m": 0.2,
        },
        "edge": {
            "min_size_um": 300,
            "quarantine_size_um": 600,
            "stop_size_um": 5000,
            "stop_count_per_10m": 5,
            "stop_length_m": 0.5,
        },
        "crack": {
            "min_size_um": 300,
            "quarantine_size_um": 800,
            "stop_size_um": 3000,
            "stop_count_per_10m": 3,
            "stop_length_m": 0.3,
        },
    },
    "continuity": {"cd_tolerance_mm": 1.0, "join_gap_mm": 5.0},
    "periodicity": {
        "cd_tolerance_mm": 1.0,
        "period_tolerance_mm": 3.0,
        "min_repeats": 3,
        "classes": None,
    },
}

_CLASS_KEYS = (
    "min_size_um",
    "quarantine_size_um",
    "stop_size_um",
    "stop_count_per_10m",
    "stop_length_m",
)


class RulesError(ValueError):
    """A rules document or roller list that cannot be used; ``field`` says where."""

    def __init__(self, message: str, *, field: str):
        super().__init__(f"{field}: {message}")
        self.message = message
        self.field = field


@dataclass(frozen=True)
class ClassRule:
    """Sizes in µm (:func:`defect_size_um`), count per 10 m of coil, run length in m."""

    min_size_um: float = 0.0
    quarantine_size_um: float | None = None
    stop_size_um: float | None = None
    stop_count_per_10m: int | None = None
    stop_length_m: float | None = None


@dataclass(frozen=True)
class Continuity:
    """Defects of one class within ``cd_tolerance_mm`` across and ``join_gap_mm`` along the
    coil of each other form one run (a scratch that goes on over frames)."""

    cd_tolerance_mm: float = 1.0
    join_gap_mm: float = 5.0


@dataclass(frozen=True)
class Periodicity:
    """A mark that repeats at one cross-direction position (``cd_tolerance_mm``) every
    roller circumference (``period_tolerance_mm`` per step) ``min_repeats`` times in a row.
    ``classes`` limits which counted classes are considered (None: all)."""

    cd_tolerance_mm: float = 1.0
    period_tolerance_mm: float = 3.0
    min_repeats: int = 3
    classes: frozenset[str] | None = None


@dataclass(frozen=True)
class Roller:
    name: str
    circumference_mm: float


@dataclass(frozen=True)
class Rules:
    classes: dict[str, ClassRule]
    continuity: Continuity = Continuity()
    periodicity: Periodicity = Periodicity()


def _number(value, field: str, *, integer: bool = False, nullable: bool = True):
    if value is None:
        if nullable:
            return None
        raise RulesError("a number is required", field=field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RulesError(f"{value!r} is not a number", field=field)
    if not math.isfinite(value) or value < 0:
        raise RulesError(f"{value!r} must be a finite number >= 0", field=field)
    if integer:
        if int(value) != value or value < 1:
            raise RulesError(f"{value!r} must be a whole number >= 1", field=field)
        return int(value)
    return float(value)


def _object(value, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RulesError("must be an object", field=field)
    return value


def _unknown(doc: dict, allowed, field: str) -> None:
    extra = sorted(set(doc) - set(allowed))
    if extra:
        raise RulesError(f"unknown key(s) {', '.join(map(repr, extra))}", field=field)


def parse(doc: dict | None) -> Rules:
    """The rules of a rules document, defaults filled in (see the module docstring).

    Raises :class:`RulesError` naming the field: unknown keys or classes, negative or
    non-numeric values, a quarantine size above the stop size, a count or repeat below 1.
    """
    doc = _object(doc, "rules")
    _unknown(doc, ("classes", "continuity", "periodicity"), "rules")
    given = _object(doc.get("classes"), "rules.classes")
    _unknown(given, DEFECT_CLASSES, "rules.classes")
    classes: dict[str, ClassRule] = {}
    for cls in DEFECT_CLASSES:
        base = DEFAULT_RULES["classes"][cls]
        over = _object(given.get(cls), f"rules.classes.{cls}")
        _unknown(over, _CLASS_KEYS, f"rules.classes.{cls}")
        merged = {**base, **over}
        f = f"rules.classes.{cls}"
        rule = ClassRule(
            min_size_um=_number(merged["min_size_um"], f"{f}.min_size_um", nullable=False),
            quarantine_size_um=_number(merged["quarantine_size_um"], f"{f}.quarantine_size_um"),
            stop_size_um=_number(merged["stop_size_um"], f"{f}.stop_size_um"),
            stop_count_per_10m=_number(
                merged["stop_count_per_10m"], f"{f}.stop_count_per_10m", integer=True
            ),
            stop_length_m=_number(merged["stop_length_m"], f"{f}.stop_length_m"),
        )
        if (
            rule.quarantine_size_um is not None
            and rule.stop_size_um is not None
            and rule.quarantine_size_um > rule.stop_size_um
        ):
            raise RulesError("the quarantine size is above the stop size", field=f)
        if rule.stop_length_m == 0:
            raise RulesError("must be above 0 (or null for none)", field=f"{f}.stop_length_m")
        classes[cls] = rule

    cont = {**DEFAULT_RULES["continuity"], **_object(doc.get("continuity"), "rules.continuity")}
    _unknown(cont, DEFAULT_RULES["continuity"], "rules.continuity")
    continuity = Continuity(
        cd_tolerance_mm=_number(
            cont["cd_tolerance_mm"], "rules.continuity.cd_tolerance_mm", nullable=False
        ),
        join_gap_mm=_number(cont["join_gap_mm"], "rules.continuity.join_gap_mm", nullable=False),
    )
    per = {**DEFAULT_RULES["periodicity"], **_object(doc.get("periodicity"), "rules.periodicity")}
    _unknown(per, DEFAULT_RULES["periodicity"], "rules.periodicity")
    only = per["classes"]
    if only is not None:
        if not isinstance(only, list) or not all(c in DEFECT_CLASSES for c in only):
            raise RulesError(
                f"must be null or a list of {', '.join(DEFECT_CLASSES)}",
                field="rules.periodicity.classes",
            )
        only = frozenset(only)
    periodicity = Periodicity(
        cd_tolerance_mm=_number(
            per["cd_tolerance_mm"], "rules.periodicity.cd_tolerance_mm", nullable=False
        ),
        period_tolerance_mm=_number(
            per["period_tolerance_mm"], "rules.periodicity.period_tolerance_mm", nullable=False
        ),
        min_repeats=_number(
            per["min_repeats"], "rules.periodicity.min_repeats", integer=True, nullable=False
        ),
        classes=only,
    )
    if periodicity.min_repeats < 2:
        raise RulesError("a repeat needs at least 2", field="rules.periodicity.min_repeats")
    return Rules(classes=classes, continuity=continuity, periodicity=periodicity)


def parse_rollers(items: list | None) -> tuple[Roller, ...]:
    """``[{"name": ..., "circumference_mm": ...}, ...]`` as rollers; RulesError if not."""
    if items is None:
        return ()
    if not isinstance(items, list):
        raise RulesError("must be a list", field="rollers")
    rollers = []
    for i, item in enumerate(items):
        f = f"rollers[{i}]"
        if not isinstance(item, dict):
            raise RulesError("must be an object", field=f)
        _unknown(item, ("name", "circumference_mm"), f)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise RulesError("needs a name of 1 to 64 characters", field=f"{f}.name")
        circ = _number(item.get("circumference_mm"), f"{f}.circumference_mm", nullable=False)
        if circ <= 0:
            raise RulesError("must be above 0", field=f"{f}.circumference_mm")
        rollers.append(Roller(name=name.strip(), circumference_mm=circ))
    return tuple(rollers)


def defect_size_um(cls: str, *, equivalent_diameter_um: float, length_um: float) -> float:
    """The size a class's rules compare: length for line-like classes (scratch, crack,
    wrinkle, edge), equivalent diameter for the others."""
    return length_um if cls in LENGTH_CLASSES else equivalent_diameter_um


@dataclass(frozen=True)
class Observation:
    """A defect as the rules see it: class, model band, size (µm), where it is on the coil
    (``md_m`` its centre, ``md_start_m``..``md_end_m`` its extent along the coil) and
    across it (``cd_mm``)."""

    cls: str
    band: str
    size_um: float
    md_m: float
    cd_mm: float
    md_start_m: float | None = None
    md_end_m: float | None = None


@dataclass(frozen=True)
class Decision:
    """``decision`` is ignore, review, quarantine or stop; ``rule`` says why in words;
    ``suspect_roller`` names a roller when a periodic defect stopped the line."""

    decision: str
    rule: str
    suspect_roller: str | None = None


@dataclass
class _Run:
    cls: str
    cd_mm: float
    start_m: float
    end_m: float


@dataclass
class _Counted:
    md_m: float
    cd_mm: float
    cls: str


@dataclass
class RuleEngine:
    """The rules applied to one camera's defects in coil order, with the memory they need:
    counted defects of the last :data:`DENSITY_WINDOW_M` metres per class, open runs, and
    counted defects within the longest roller's ``min_repeats`` circumferences. Call
    :meth:`new_coil` when the coil under the camera changes."""

    rules: Rules
    rollers: tuple[Roller, ...] = ()
    _recent: dict[str, deque] = field(default_factory=dict)
    _runs: list[_Run] = field(default_factory=list)
    _history: list[tuple[float, float, str]] = field(default_factory=list)
    _coil: str | None = None

    def new_coil(self, coil: str | None = None) -> None:
        """Forget everything: counts, runs and repeats never reach across coils."""
        self._recent.clear()
        self._runs.clear()
        self._history.clear()
        self._coil = coil

    @property
    def coil(self) -> str | None:
        return self._coil

    def _history_span_m(self) -> float:
        longest = max((r.circumference_mm for r in self.rollers), default=0.0)
        p = self.rules.periodicity
        return (longest + p.period_tolerance_mm) * p.min_repeats / 1000.0

    def decide(self, obs: Observation) -> Decision:
        """The decision for one defect (see the module docstring), remembered for the rules
        that look across defects when it counts."""
        if obs.cls not in self.rules.classes:
            raise ValueError(f"unknown defect class {obs.cls!r}")
        if obs.band == "log":
            return Decision("ignore", "model: below the review band")
        if obs.band == "review":
            return Decision("review", "model: review band")
        if obs.band != "act":
            raise ValueError(f"unknown band {obs.band!r}")
        rule = self.rules.classes[obs.cls]
        size = obs.size_um
        if size < rule.min_size_um:
            return Decision(
                "ignore", f"{obs.cls} {size:.0f} µm below the {rule.min_size_um:g} µm to count"
            )
        stop = self._count(obs, rule)
        run_stop = self._run(obs, rule)
        periodic = self._periodic(obs)
        if rule.stop_size_um is not None and size >= rule.stop_size_um:
            return Decision("stop", f"{obs.cls} {size:.0f} µm >= stop size {rule.stop_size_um:g}")
        for found in (stop, run_stop, periodic):
            if found is not None:
                return found
        if rule.quarantine_size_um is not None and size >= rule.quarantine_size_um:
            return Decision(
                "quarantine",
                f"{obs.cls} {size:.0f} µm >= quarantine size {rule.quarantine_size_um:g}",
            )
        return Decision("review", f"{obs.cls} {size:.0f} µm counted, below quarantine size")

    def _count(self, obs: Observation, rule: ClassRule) -> Decision | None:
        recent = self._recent.setdefault(obs.cls, deque())
        recent.append(obs.md_m)
        while recent and recent[0] <= obs.md_m - DENSITY_WINDOW_M:
            recent.popleft()
        if rule.stop_count_per_10m is not None and len(recent) >= rule.stop_count_per_10m:
            return Decision(
                "stop",
                f"{len(recent)} {obs.cls} defects within {DENSITY_WINDOW_M:g} m "
                f"(stop at {rule.stop_count_per_10m})",
            )
        return None

    def _run(self, obs: Observation, rule: ClassRule) -> Decision | None:
        start = obs.md_start_m if obs.md_start_m is not None else obs.md_m
        end = obs.md_end_m if obs.md_end_m is not None else obs.md_m
        cont = self.rules.continuity
        gap_m = cont.join_gap_mm / 1000.0
        # Runs that ended more than a join gap before this defect are over.
        self._runs = [r for r in self._runs if r.end_m >= start - gap_m]
        joined = None
        for run in self._runs:
            if run.cls == obs.cls and abs(run.cd_mm - obs.cd_mm) <= cont.cd_tolerance_mm:
                run.start_m = min(run.start_m, start)
                run.end_m = max(run.end_m, end)
                run.cd_mm = obs.cd_mm
                joined = run
                break
        if joined is None:
            joined = _Run(obs.cls, obs.cd_mm, start, end)
            self._runs.append(joined)
        length = joined.end_m - joined.start_m
        if rule.stop_length_m is not None and length >= rule.stop_length_m - 1e-9:
            return Decision(
                "stop",
                f"{obs.cls} continuous over {length:.3f} m at {obs.cd_mm:.1f} mm "
                f"(stop at {rule.stop_length_m:g} m)",
            )
        return None

    def _periodic(self, obs: Observation) -> Decision | None:
        p = self.rules.periodicity
        if p.classes is not None and obs.cls not in p.classes:
            return None
        history = self._history
        span = self._history_span_m()
        while history and history[0][0] < obs.md_m - span:
            history.pop(0)
        found = None
        for roller in self.rollers:
            period = roller.circumference_mm / 1000.0
            tol = p.period_tolerance_mm / 1000.0
            chain = [obs.md_m]
            at = obs.md_m
            while True:
                lo = bisect_left(history, (at - period - tol, -math.inf, ""))
                prev = None
                for md, cd, _cls in history[lo:]:
                    if md > at - period + tol:
                        break
                    if abs(cd - obs.cd_mm) <= p.cd_tolerance_mm:
                        prev = md
                if prev is None:
                    break
                chain.append(prev)
                at = prev
            if len(chain) >= p.min_repeats:
                mean_period_mm = (chain[0] - chain[-1]) / (len(chain) - 1) * 1000.0
                found = Decision(
                    "stop",
                    f"{obs.cls} repeats {len(chain)} times every {mean_period_mm:.1f} mm at "
                    f"{obs.cd_mm:.1f} mm: {roller.name} ({roller.circumference_mm:g} mm)",
                    suspect_roller=roller.name,
                )
                break
        insort(history, (obs.md_m, obs.cd_mm, obs.cls))
        return found
