"""Throughput of the cycler file readers on large channel exports.

    python -m bench.cycler_files --rows 100000 --json

Writes a Neware BTS CSV and a Maccor text export of about ``--rows`` samples (1 s logging
of 0.5C CC-CV / rest / 0.5C discharge cycles of a 5 Ah NMC 21700 cell, from the generator
the reader tests use), reads each ``--repeat`` times through
:func:`formation.cyclers.cycler_file_read` and prints one JSON object on the last line:
rows, bytes, steps, best wall and CPU seconds and rows per second of each. CPU time is the
steadier figure on a shared machine; the 1-minute load average is printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from formation.cyclers import cycler_file_read
from tests.formation.cyclers.fixtures import make_samples as ms

BARCODE = "NMC21700-2403-00871"


def best_of(data: bytes, repeat: int, **kwargs) -> tuple[float, float, object]:
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = cycler_file_read(data, **kwargs)
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr if args.json else sys.stdout)

    samples = ms.nmc_cycling(rows=args.rows)
    files = {
        "neware_csv": ms.neware_csv(samples),
        "maccor_txt": ms.maccor_txt(samples, barcode=BARCODE, procedure="CYC-21700.000"),
    }
    out: dict = {"rows": args.rows, "repeat": args.repeat}
    for profile, data in files.items():
        say(f"reading {profile}: {len(data) / 1e6:.1f} MB ...")
        wall, cpu, result = best_of(data, args.repeat, profile=profile, barcode=BARCODE)
        out[profile] = {
            "bytes": len(data),
            "rows": result.n_rows,
            "steps": result.n_steps,
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "rows_per_s_wall": round(result.n_rows / wall),
            "rows_per_s_cpu": round(result.n_rows / cpu),
        }
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
