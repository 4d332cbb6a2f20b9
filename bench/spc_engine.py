"""SPC engine benchmark: streaming throughput and the drift detector's run lengths.

    .venv/bin/python -m bench.spc_engine --json

No database, no Django: the engine alone. It measures

* ``points_per_s``: a realistic stream through :class:`spc.engine.Monitor`: the OCV of
  21700 cells at end of line (target 3620 mV, sigma 2 mV) on an I-MR chart with all eight
  Nelson rules, the moving range, an EWMA (lam 0.2, L 2.962) and the default CUSUM
  (k 0.75, h 3.34), fed in chunks of 20 to 1000 points (uniform) as ingest batches arrive;
  the stream is in control except a 1.5 sigma drift for 2,000 points in every 50,000, so
  signals are built too. Throughput is points over the time spent in ``push_many``
  (generating the data is not timed), median of ``--repeat`` passes, one core;
* ``arl0_default`` and ``arl_1_5_sigma_default``: ARL of the default detector in control and
  at a lasting 1.5 sigma shift (Brook & Evans Markov chain, ``arl_states`` states per side,
  with ``arl_discretisation_error``: the change from half as many states, an upper bound
  on the error left), and the same two by Monte Carlo with their standard errors;
* ``shewhart_arl_1_5_sigma``: ARL of a 3-sigma individuals chart (rule 1) at 1.5 sigma,
  exact; ``shewhart_arl0`` likewise.

The JSON object is printed on the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from spc.engine import (
    DEFAULT_CUSUM,
    DEFAULT_EWMA,
    NELSON,
    Monitor,
    MonitorConfig,
    ShewhartSpec,
    arl,
    arl_convergence,
    arl_monte_carlo,
    standard_limits,
)
from spc.engine.arl import DEFAULT_STATES

OCV_TARGET_MV = 3620.0
OCV_SIGMA_MV = 2.0
DRIFT_EVERY = 50_000
DRIFT_LENGTH = 2_000
DRIFT_SIGMA = 1.5


def ocv_stream(points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """OCV values (mV) with a 1.5 sigma drift in every 50,000 points, and chunk sizes."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(points)
    for start in range(DRIFT_EVERY // 2, points, DRIFT_EVERY):
        u[start : start + DRIFT_LENGTH] += DRIFT_SIGMA
    values = OCV_TARGET_MV + OCV_SIGMA_MV * u
    sizes = rng.integers(20, 1001, points // 20 + 1)
    return values, sizes


def measure_stream(points: int, seed: int) -> tuple[float, int]:
    """Seconds spent in push_many for the whole stream, and the number of signals."""
    limits = standard_limits("i_mr", centre=OCV_TARGET_MV, sigma=OCV_SIGMA_MV)
    config = MonitorConfig(limits, rules=NELSON, ewma=DEFAULT_EWMA, cusum=DEFAULT_CUSUM)
    values, sizes = ocv_stream(points, seed)
    chunks = []
    start = 0
    for size in sizes.tolist():
        if start >= points:
            break
        chunks.append(values[start : start + size])
        start += size
    monitor = Monitor(config)
    signals = 0
    began = time.perf_counter()
    for chunk in chunks:
        signals += len(monitor.push_many(chunk).signals)
    return time.perf_counter() - began, signals


def engine_figures(
    *, points: int = 1_000_000, repeat: int = 3, seed: int = 7, runs: int = 20_000
) -> dict:
    """The engine's figures (see the module docstring)."""
    timings = []
    signals = 0
    for number in range(repeat):
        elapsed, signals = measure_stream(points, seed + number)
        timings.append(elapsed)
    elapsed = statistics.median(timings)

    states = DEFAULT_STATES["cusum"]
    in_control = arl_convergence(DEFAULT_CUSUM, 0.0, states=(states // 2, states))
    shifted = arl_convergence(DEFAULT_CUSUM, DRIFT_SIGMA, states=(states // 2, states))
    simulated_0 = arl_monte_carlo(DEFAULT_CUSUM, 0.0, runs=runs, seed=seed)
    simulated_1 = arl_monte_carlo(DEFAULT_CUSUM, DRIFT_SIGMA, runs=runs, seed=seed)
    return {
        "points_per_s": round(points / elapsed),
        "stream_points": points,
        "stream_signals": signals,
        "stream_chunk_sizes": "uniform 20..1000",
        "stream_evaluates": (
            "I-MR, Nelson rules 1-8, MR rule 1, EWMA(0.2, 2.962), CUSUM(0.75, 3.34)"
        ),
        "default_detector": "two-sided tabular CUSUM k=0.75 h=3.34, no head start",
        "arl0_default": round(in_control["arl"][-1], 2),
        "arl_1_5_sigma_default": round(shifted["arl"][-1], 4),
        "arl_method": (
            "Brook & Evans Markov chain, one-sided chains combined by Lucas & Crosier "
            "(exact without head start)"
        ),
        "arl_states": states,
        "arl_discretisation_error": {
            "arl0": round(abs(in_control["arl"][-1] - in_control["arl"][0]), 4),
            "arl_1_5_sigma": round(abs(shifted["arl"][-1] - shifted["arl"][0]), 6),
        },
        "arl0_default_monte_carlo": {
            "arl": round(simulated_0.arl, 2),
            "standard_error": round(simulated_0.standard_error, 2),
            "runs": simulated_0.runs,
        },
        "arl_1_5_sigma_default_monte_carlo": {
            "arl": round(simulated_1.arl, 4),
            "standard_error": round(simulated_1.standard_error, 4),
            "runs": simulated_1.runs,
        },
        "shewhart_arl0": round(arl(ShewhartSpec(), 0.0), 2),
        "shewhart_arl_1_5_sigma": round(arl(ShewhartSpec(), DRIFT_SIGMA), 3),
        "shewhart_arl_method": "exact: 1 / (Phi(-3 - d) + Phi(-3 + d))",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="points in the stream")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the median is reported")
    parser.add_argument("--runs", type=int, default=20_000, help="Monte Carlo runs per ARL")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    args = parser.parse_args(argv)
    if args.points < 1000 or args.repeat < 1 or args.runs < 2:
        parser.error("--points must be at least 1000, --repeat at least 1, --runs at least 2")
    if not args.json:
        print(f"streaming {args.points} points x {args.repeat}, {args.runs} runs per ARL")
    else:
        print("measuring ...", file=sys.stderr, flush=True)
    figures = engine_figures(points=args.points, repeat=args.repeat, seed=args.seed, runs=args.runs)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
