"""Average run length (ARL) of Shewhart, EWMA and CUSUM detectors on normal individuals.

The ARL at a lasting mean shift of ``shift`` sigma (0 = in control: ARL0) is computed by the
Markov chain approximation of Brook & Evans (1972):

* **CUSUM, one side**: the interval [0, h) is cut into N states of width w = 2h / (2N - 1):
  state 0 is C = 0 (C <= w/2), state i the values around i w; from state i the next
  statistic ``i w + x - k`` falls into state j with probability
  ``Phi((j + 1/2) w - i w + k - shift) - Phi((j - 1/2) w - i w + k - shift)``, and beyond
  h ends the run. ARL = ((I - R)^-1 1)[start]; a head start between two states is
  interpolated linearly.
* **CUSUM, two sides**: with no head start the two-sided ARL follows exactly from the two
  one-sided ones, ``1 / ARL = 1 / ARL+ + 1 / ARL-`` (Lucas & Crosier 1982); with a head
  start (FIR) the chain runs on the pairs (C+, C-) (N^2 states, sparse).
* **EWMA**: N states (N odd) across (-H, H), H = L sqrt(lam / (2 - lam)), centres c_i;
  ``P(i -> j) = Phi((c_j + w/2 - (1 - lam) c_i) / lam - shift) - Phi((c_j - w/2 - (1 - lam)
  c_i) / lam - shift)`` (Lucas & Saccucci 1990), starting at the middle state.
* **Shewhart** (rule 1 only): exactly ``1 / (Phi(-L - shift) + 1 - Phi(L - shift))``.

The discretisation error falls as 1/N^2: :func:`arl_convergence` lists the ARL for growing
N with the Richardson extrapolate of the last two. :func:`arl_monte_carlo` cross-checks any
detector (also a run-rule set on an individuals chart) by simulation, with the standard
error of the mean run length. :func:`tune_cusum_h` and :func:`tune_ewma_l` solve for the
decision interval giving a target ARL0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from spc.engine._lazy import lazy
from spc.engine.detectors import CusumSpec, EwmaSpec, ShewhartSpec
from spc.engine.rules import RuleSet, RunState, evaluate_rules

optimize = lazy("scipy.optimize")
sparse = lazy("scipy.sparse")
special = lazy("scipy.special")
_sparse_linalg = lazy("scipy.sparse.linalg")

__all__ = [
    "DEFAULT_STATES",
    "MonteCarloArl",
    "arl",
    "arl_convergence",
    "arl_monte_carlo",
    "tune_cusum_h",
    "tune_ewma_l",
]

#: States of the one-dimensional chains (CUSUM side, EWMA); per side for the (C+, C-) chain.
DEFAULT_STATES = {"cusum": 400, "ewma": 401, "cusum_fir_two_sided": 100}

Detector = ShewhartSpec | EwmaSpec | CusumSpec


def _check_shift(shift: float) -> float:
    value = float(shift)
    if not math.isfinite(value):
        raise ValueError(f"shift must be a finite number of sigmas, got {shift!r}")
    return value


def arl(detector: Detector, shift: float = 0.0, *, states: int | None = None) -> float:
    """ARL of ``detector`` at a lasting mean shift of ``shift`` sigma (Markov chain)."""
    shift = _check_shift(shift)
    if isinstance(detector, ShewhartSpec):
        p = special.ndtr(-detector.L - shift) + special.ndtr(-detector.L + shift)
        return float(1.0 / p)
    if isinstance(detector, EwmaSpec):
        return _ewma_arl(detector, shift, states or DEFAULT_STATES["ewma"])
    if isinstance(detector, CusumSpec):
        return _cusum_arl(detector, shift, states)
    raise TypeError(f"no ARL for {detector!r}")


def _one_sided_vector(k: float, h: float, shift: float, states: int) -> tuple[np.ndarray, float]:
    """ARL from every state of the upper one-sided CUSUM, and the state width."""
    width = 2.0 * h / (2.0 * states - 1.0)
    index = np.arange(states, dtype=np.float64)
    upper = special.ndtr((index[None, :] + 0.5) * width - index[:, None] * width + k - shift)
    lower = np.concatenate((np.zeros((states, 1)), upper[:, :-1]), axis=1)
    lengths = np.linalg.solve(np.eye(states) - (upper - lower), np.ones(states))
    return lengths, width


def _at(lengths: np.ndarray, width: float, start: float) -> float:
    """ARL from statistic value ``start`` (linear between the states around it)."""
    position = start / width
    low = math.floor(position)
    if low >= lengths.size - 1:
        return float(lengths[-1])
    fraction = position - low
    return float((1.0 - fraction) * lengths[low] + fraction * lengths[low + 1])


def _cusum_arl(spec: CusumSpec, shift: float, states: int | None) -> float:
    if spec.sides != "both":
        direction = 1.0 if spec.sides == "upper" else -1.0
        count = states or DEFAULT_STATES["cusum"]
        lengths, width = _one_sided_vector(spec.k, spec.h, direction * shift, count)
        return _at(lengths, width, spec.head_start)
    if spec.head_start == 0.0:
        count = states or DEFAULT_STATES["cusum"]
        up, _ = _one_sided_vector(spec.k, spec.h, shift, count)
        down, _ = _one_sided_vector(spec.k, spec.h, -shift, count)
        return float(1.0 / (1.0 / up[0] + 1.0 / down[0]))
    return _cusum_two_sided_chain(spec, shift, states or DEFAULT_STATES["cusum_fir_two_sided"])


def _cusum_two_sided_chain(spec: CusumSpec, shift: float, states: int) -> float:
    """ARL of the two-sided CUSUM on the pairs (C+, C-): N^2 states, sparse."""
    k, h, n = spec.k, spec.h, states
    width = 2.0 * h / (2.0 * n - 1.0)
    steps = np.arange(-(n - 1), n, dtype=np.float64)
    # Every x where C+ or C- moves to another state, from any state.
    cuts = np.unique(np.concatenate((k + (steps + 0.5) * width, -k + (steps - 0.5) * width)))
    inside = np.concatenate(([cuts[0] - 1.0], (cuts[:-1] + cuts[1:]) / 2.0, [cuts[-1] + 1.0]))
    probability = np.diff(np.concatenate(([0.0], special.ndtr(cuts - shift), [1.0])))
    up_step = np.floor((inside - k) / width + 0.5).astype(np.int64)
    down_step = np.floor((-inside - k) / width + 0.5).astype(np.int64)
    rows, cols, values = [], [], []
    lower_states = np.arange(n)
    for upper_state in range(n):
        target_up = np.maximum(0, upper_state + up_step)
        target_down = np.maximum(0, lower_states[:, None] + down_step[None, :])
        alive = (target_up[None, :] < n) & (target_down < n)
        from_down, interval = np.nonzero(alive)
        rows.append(upper_state * n + from_down)
        cols.append(target_up[interval] * n + target_down[from_down, interval])
        values.append(probability[interval])
    size = n * n
    transitions = sparse.coo_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size)
    ).tocsc()
    identity = sparse.identity(size, format="csc")
    lengths = _sparse_linalg.spsolve(identity - transitions, np.ones(size))
    grid = lengths.reshape(n, n)
    # Both sums start at the head start: bilinear between the surrounding states.
    position = spec.head_start / width
    low = min(math.floor(position), n - 2)
    fraction = position - low
    corner = grid[low : low + 2, low : low + 2]
    weights = np.array([1.0 - fraction, fraction])
    return float(weights @ corner @ weights)


def _ewma_arl(spec: EwmaSpec, shift: float, states: int) -> float:
    if states % 2 == 0:
        states += 1
    limit = spec.limit
    width = 2.0 * limit / states
    centres = -limit + (np.arange(states) + 0.5) * width
    lam = spec.lam
    base = (1.0 - lam) * centres[:, None]
    upper = special.ndtr((centres[None, :] + width / 2.0 - base) / lam - shift)
    lower = special.ndtr((centres[None, :] - width / 2.0 - base) / lam - shift)
    lengths = np.linalg.solve(np.eye(states) - (upper - lower), np.ones(states))
    return float(lengths[states // 2])


def arl_convergence(
    detector: Detector, shift: float = 0.0, *, states: Sequence[int] = (50, 100, 200, 400, 800)
) -> dict[str, object]:
    """ARL for each number of states, and the Richardson extrapolate of the last two.

    The Brook & Evans error is close to c / N^2, so ``ARL(N2) + (ARL(N2) - ARL(N1)) /
    ((N2 / N1)^2 - 1)`` removes most of it; ``change`` is the last step's relative change.
    """
    values = [(count, arl(detector, shift, states=count)) for count in states]
    (n1, a1), (n2, a2) = values[-2], values[-1]
    extrapolated = a2 + (a2 - a1) / ((n2 / n1) ** 2 - 1.0)
    return {
        "states": [count for count, _ in values],
        "arl": [value for _, value in values],
        "richardson": extrapolated,
        "change": abs(a2 - a1) / a2,
    }


# ------------------------------------------------------------------- Monte Carlo


@dataclass(frozen=True, slots=True)
class MonteCarloArl:
    """Simulated ARL: mean run length of ``runs`` runs and its standard error."""

    arl: float
    standard_error: float
    runs: int
    censored: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "arl": self.arl,
            "standard_error": self.standard_error,
            "runs": self.runs,
            "censored": self.censored,
        }


def arl_monte_carlo(
    detector: Detector | RuleSet,
    shift: float = 0.0,
    *,
    runs: int = 20_000,
    seed: int = 0,
    max_length: int = 1_000_000,
) -> MonteCarloArl:
    """ARL by simulation: ``runs`` independent runs from the detector's start.

    A :class:`RuleSet` is simulated on an individuals chart with 3-sigma limits through the
    same run-rule evaluator the charts use. Runs longer than ``max_length`` are censored
    (counted at ``max_length``; reported).
    """
    shift = _check_shift(shift)
    if runs < 2:
        raise ValueError(f"runs must be at least 2, got {runs}")
    rng = np.random.default_rng(seed)
    if isinstance(detector, RuleSet):
        lengths = _simulate_rules(detector, shift, runs, rng, max_length)
    else:
        lengths = _simulate(detector, shift, runs, rng, max_length)
    censored = int((lengths >= max_length).sum())
    return MonteCarloArl(
        arl=float(lengths.mean()),
        standard_error=float(lengths.std(ddof=1) / math.sqrt(runs)),
        runs=runs,
        censored=censored,
    )


def _simulate(
    detector: Detector, shift: float, runs: int, rng: np.random.Generator, max_length: int
) -> np.ndarray:
    lengths = np.full(runs, max_length, dtype=np.float64)
    active = np.arange(runs)
    if isinstance(detector, CusumSpec):
        upper = np.full(runs, detector.head_start)
        lower = np.full(runs, detector.head_start)
    else:
        level = np.zeros(runs)
    step = 0
    while active.size and step < max_length:
        step += 1
        x = rng.standard_normal(active.size) + shift
        if isinstance(detector, ShewhartSpec):
            stop = np.abs(x) > detector.L
        elif isinstance(detector, EwmaSpec):
            level = detector.lam * x + (1.0 - detector.lam) * level
            stop = np.abs(level) > detector.limit
        else:
            stop = np.zeros(active.size, dtype=bool)
            if detector.sides != "lower":
                upper = np.maximum(0.0, upper + x - detector.k)
                stop |= upper > detector.h
            if detector.sides != "upper":
                lower = np.maximum(0.0, lower - x - detector.k)
                stop |= lower > detector.h
        if stop.any():
            lengths[active[stop]] = step
            keep = ~stop
            active = active[keep]
            if isinstance(detector, CusumSpec):
                upper, lower = upper[keep], lower[keep]
            elif isinstance(detector, EwmaSpec):
                level = level[keep]
    return lengths


def _simulate_rules(
    ruleset: RuleSet, shift: float, runs: int, rng: np.random.Generator, max_length: int
) -> np.ndarray:
    lengths = np.full(runs, max_length, dtype=np.float64)
    block = 512
    for run in range(runs):
        state = RunState()
        while state.count < max_length:
            x = rng.standard_normal(block) + shift
            start = state.count
            found = evaluate_rules(x, x, -3.0, 3.0, ruleset=ruleset, state=state, path="vector")
            if found:
                lengths[run] = found[0].index + 1
                break
            if start + block >= max_length:
                break
    return lengths


# ------------------------------------------------------------------------ tuning


def _solve(gap: Callable[[float], float], low: float, high: float) -> float:
    """Root of an increasing ``gap``: widen the bracket upward until it holds the root.

    The bracket grows by steps of 1, not by doubling: the ARL grows exponentially in h and
    L, and a far upper end would make the chain ill-conditioned.
    """
    while gap(high) < 0.0:
        low, high = high, high + 1.0
        if high > 40.0:
            raise ValueError("no decision interval up to 40 sigma reaches the target ARL0")
    return float(optimize.brentq(gap, low, high, xtol=1e-6))


def tune_cusum_h(
    k: float,
    target_arl0: float = 370.0,
    *,
    head_start_fraction: float = 0.0,
    sides: str = "both",
    states: int | None = None,
) -> float:
    """Decision interval h giving ``target_arl0`` (head start = fraction x h)."""
    if target_arl0 <= 1.0:
        raise ValueError(f"target_arl0 must exceed 1, got {target_arl0!r}")

    def gap(h: float) -> float:
        spec = CusumSpec(k=k, h=h, head_start=head_start_fraction * h, sides=sides)
        return arl(spec, 0.0, states=states) - target_arl0

    return _solve(gap, 0.05, 1.0)


def tune_ewma_l(lam: float, target_arl0: float = 370.0, *, states: int | None = None) -> float:
    """Limit width L of an EWMA with smoothing ``lam`` giving ``target_arl0``."""
    if target_arl0 <= 1.0:
        raise ValueError(f"target_arl0 must exceed 1, got {target_arl0!r}")

    def gap(width: float) -> float:
        return arl(EwmaSpec(lam=lam, L=width), 0.0, states=states) - target_arl0

    return _solve(gap, 0.5, 2.0)
