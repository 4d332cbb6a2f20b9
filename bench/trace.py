"""Trace and recall-scope benchmark on a plant of N cylindrical 21700 cells.

    python -m bench.trace --cells 1000000 --json

Builds the plant in its own database (``DATABASE_URL``; default ``var/bench.sqlite3``) with
bulk paths only (COPY on PostgreSQL, ``executemany`` in big transactions on SQLite), in
chunks, then measures the trace queries of :mod:`genealogy.queries` and prints one JSON
object on the last line. See ``bench/README.md``.

The plant (per million cells, roughly):

* cathode: NMC811 CAM lots (each feeds 2 mix batches), PVDF and carbon lots (4 batches),
  aluminium foil lots (3 coils); one mix batch coats one 3000 m mother coil; each mother
  coil is slit into 10 lanes of [5, 2995) m. Anode alike with graphite, SBR and copper foil.
* 8 winders work in parallel, each on its own cathode and anode slit coil: cell ``i`` goes to
  winder ``i % 8`` and uses the next 0.92 m of cathode and 0.98 m of anode; winding visits
  on the winder are recorded. Electrolyte lots cover 20,000 cells, separator lots 25,000.
* after formation and grading, cells are taken in shuffled blocks of 8 packs into modules of
  112 cells; 4 modules make a pack (448 cells); every pack goes into one vehicle (VIN).

About 1.01 M units, 5 M links and 1 M station visits per million cells.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = f"sqlite:///{ROOT / 'var' / 'bench.sqlite3'}"

# --- plant geometry -------------------------------------------------------------------------
LANES = 10  # slit lanes per mother coil
MOTHER_M = 3000.0
SLIT_FROM_M, SLIT_TO_M = 5.0, 2995.0  # leader and tail trimmed at slitting
SLIT_M = SLIT_TO_M - SLIT_FROM_M
CATHODE_M = 0.92  # cathode per 21700 cell
ANODE_M = 0.98  # anode per 21700 cell (longer: anode overhang)
WINDERS = 8
CELLS_PER_MODULE = 112
MODULES_PER_PACK = 4
CELLS_PER_PACK = CELLS_PER_MODULE * MODULES_PER_PACK  # 448
SHUFFLE_PACKS = 8  # grading mixes cells of ~8 packs before module assembly
ELECTROLYTE_CELLS = 20_000
SEPARATOR_CELLS = 25_000
CELL_PERIOD = timedelta(milliseconds=250)  # the whole line: 4 cells/s
CHUNK = 50_000


@dataclass(frozen=True)
class Electrode:
    """Lots of one electrode: ``(prefix, material, supplier, coils per lot via batches)``."""

    name: str
    coil_prefix: str
    mix_prefix: str
    metres_per_cell: float
    lots: tuple[tuple[str, str, int, bool], ...]  # (prefix, material, batches per lot, foil)


CATHODE = Electrode(
    "cathode",
    "CC",
    "MXC",
    CATHODE_M,
    (
        ("CAM", "NMC811 cathode active material", 2, False),
        ("PVDF", "PVDF binder", 4, False),
        ("CB", "Conductive carbon black", 4, False),
        ("ALF", "Aluminium foil 12 µm", 3, True),
    ),
)
ANODE = Electrode(
    "anode",
    "AC",
    "MXA",
    ANODE_M,
    (
        ("GR", "Artificial graphite", 2, False),
        ("SBR", "SBR/CMC binder", 4, False),
        ("CUF", "Copper foil 6 µm", 3, True),
    ),
)


def per_slit(e: Electrode) -> int:
    return int(SLIT_M // e.metres_per_cell)


def slit_index_and_pos(e: Electrode, i: int) -> tuple[int, float]:
    """Cell ``i`` -> (global slit-coil index, start metre on it)."""
    w, j = i % WINDERS, i // WINDERS
    per = per_slit(e)
    return (j // per) * WINDERS + w, (j % per) * e.metres_per_cell


class Layout:
    """Unit ids of every kind, assigned in blocks (the bench owns an empty database)."""

    def __init__(self, cells: int):
        self.cells = cells
        self.packs = cells // CELLS_PER_PACK
        self.modules = self.packs * MODULES_PER_PACK
        # Slit coils in use: indices grow with time on every winder, so the highest is
        # among the last cell of each winder.
        self.slits = {
            e.name: 1
            + max(slit_index_and_pos(e, i)[0] for i in range(max(0, cells - WINDERS), cells))
            for e in (CATHODE, ANODE)
        }
        self.mothers = {n: -(-s // LANES) for n, s in self.slits.items()}
        self.slits = {n: m * LANES for n, m in self.mothers.items()}
        next_id = 1
        self.base: dict[str, int] = {}

        def take(key: str, n: int) -> None:
            nonlocal next_id
            self.base[key] = next_id
            next_id += n

        for e in (CATHODE, ANODE):
            for prefix, _m, per_lot, _foil in e.lots:
                take(f"lot:{prefix}", self.lot_count(e, per_lot))
            take(f"mix:{e.name}", self.mothers[e.name])
            take(f"coil:{e.name}", self.mothers[e.name])
            take(f"slit:{e.name}", self.slits[e.name])
        self.electrolyte_lots = -(-cells // ELECTROLYTE_CELLS)
        self.separator_lots = -(-cells // SEPARATOR_CELLS)
        take("lot:EL", self.electrolyte_lots)
        take("lot:SEP", self.separator_lots)
        take("cell", cells)
        take("module", self.modules)
        take("pack", self.packs)
        take("vehicle", self.packs)
        self.total_units = next_id - 1

    def lot_count(self, e: Electrode, per_lot: int) -> int:
        return -(-self.mothers[e.name] // per_lot)


def cell_time(t0: datetime, i: int) -> datetime:
    return t0 + CELL_PERIOD * i


# --- row generators (deterministic; regenerated, never held) ---------------------------------

UNIT_COLS = (
    "id, kind, serial, line_id, status, status_reason, gtin, batch_lot, material, supplier, "
    "length_m, produced_at, created_at"
)
LINK_COLS = (
    "id, source_id, target_id, kind, slot, start_m, end_m, quantity, quantity_unit, "
    "linked_at, removed_at, removed_reason"
)
VISIT_COLS = (
    "id, unit_id, station_id, equipment_id, started_at, ended_at, result, program, operator, "
    "source_message_id"
)


def unit_rows(lay: Layout, t0: datetime, line_id: int) -> Iterator[tuple]:
    def row(uid, kind, serial, material="", supplier="", length=None, at=t0, line=line_id):
        return (
            uid,
            kind,
            serial,
            line,
            "in_process",
            "",
            "",
            "",
            material,
            supplier,
            length,
            at,
            at,
        )

    for e in (CATHODE, ANODE):
        for prefix, material, per_lot, _foil in e.lots:
            for k in range(lay.lot_count(e, per_lot)):
                yield row(
                    lay.base[f"lot:{prefix}"] + k,
                    "material_lot",
                    f"{prefix}-{k:05d}",
                    material,
                    f"{prefix} supplier",
                    line=None,
                )
        for k in range(lay.mothers[e.name]):
            yield row(
                lay.base[f"mix:{e.name}"] + k,
                "mix_batch",
                f"{e.mix_prefix}-{k:05d}",
                f"{e.name} slurry",
            )
        for k in range(lay.mothers[e.name]):
            yield row(
                lay.base[f"coil:{e.name}"] + k, "coil", f"{e.coil_prefix}-{k:05d}", length=MOTHER_M
            )
        for s in range(lay.slits[e.name]):
            yield row(
                lay.base[f"slit:{e.name}"] + s,
                "slit_coil",
                f"{e.coil_prefix}-{s // LANES:05d}-L{s % LANES + 1:02d}",
                length=SLIT_M,
            )
    for k in range(lay.electrolyte_lots):
        yield row(
            lay.base["lot:EL"] + k,
            "material_lot",
            f"EL-{k:05d}",
            "Electrolyte 1.2 M LiPF6",
            "EL supplier",
            line=None,
        )
    for k in range(lay.separator_lots):
        yield row(
            lay.base["lot:SEP"] + k,
            "material_lot",
            f"SEP-{k:05d}",
            "PE separator 12 µm",
            "SEP supplier",
            line=None,
        )
    for i in range(lay.cells):
        yield row(lay.base["cell"] + i, "cell", f"L2C{i:010d}", at=cell_time(t0, i))
    for k in range(lay.modules):
        yield row(lay.base["module"] + k, "module", f"MOD{k:07d}")
    for k in range(lay.packs):
        yield row(lay.base["pack"] + k, "pack", f"PK{k:07d}")
    for k in range(lay.packs):
        yield row(lay.base["vehicle"] + k, "vehicle", f"WVGZZZE2ZSP{k:06d}", line=None)


def module_of_cell(lay: Layout, seed: int) -> Iterator[tuple[int, int, int]]:
    """``(cell index, module index, slot)`` for every cell that went into a module."""
    block = CELLS_PER_PACK * SHUFFLE_PACKS
    full = lay.packs * CELLS_PER_PACK
    for b0 in range(0, full, block):
        idx = list(range(b0, min(b0 + block, full)))
        random.Random(seed * 1_000_003 + b0).shuffle(idx)
        m0 = b0 // CELLS_PER_MODULE
        for q, i in enumerate(idx):
            yield i, m0 + q // CELLS_PER_MODULE, q % CELLS_PER_MODULE


def link_rows(lay: Layout, t0: datetime, seed: int) -> Iterator[tuple]:
    lid = 0

    def link(src, dst, kind, slot="", lo=None, hi=None, qty=None, qu="", at=t0):
        nonlocal lid
        lid += 1
        return (lid, src, dst, kind, slot, lo, hi, qty, qu, at, None, "")

    early = t0 - timedelta(days=5)
    for e in (CATHODE, ANODE):
        for k in range(lay.mothers[e.name]):
            mix = lay.base[f"mix:{e.name}"] + k
            coil = lay.base[f"coil:{e.name}"] + k
            for prefix, _m, per_lot, foil in e.lots:
                lot = lay.base[f"lot:{prefix}"] + k // per_lot
                if foil:
                    yield link(lot, coil, "consumed", qty=MOTHER_M, qu="m", at=early)
                else:
                    yield link(lot, mix, "consumed", qty=250.0, qu="kg", at=early)
            yield link(mix, coil, "consumed", at=early)
            for lane in range(LANES):
                yield link(
                    coil,
                    lay.base[f"slit:{e.name}"] + k * LANES + lane,
                    "slit",
                    lo=SLIT_FROM_M,
                    hi=SLIT_TO_M,
                    at=early,
                )
    for i in range(lay.cells):
        cell = lay.base["cell"] + i
        at = cell_time(t0, i)
        for e in (CATHODE, ANODE):
            s, pos = slit_index_and_pos(e, i)
            yield link(
                lay.base[f"slit:{e.name}"] + s,
                cell,
                "consumed",
                lo=round(pos, 3),
                hi=round(pos + e.metres_per_cell, 3),
                at=at,
            )
        yield link(
            lay.base["lot:EL"] + i // ELECTROLYTE_CELLS, cell, "consumed", qty=5.1, qu="g", at=at
        )
        yield link(
            lay.base["lot:SEP"] + i // SEPARATOR_CELLS, cell, "consumed", qty=1.9, qu="m", at=at
        )
    formed = timedelta(days=3)
    for i, m, slot in module_of_cell(lay, seed):
        yield link(
            lay.base["cell"] + i,
            lay.base["module"] + m,
            "assembled",
            slot=f"C{slot + 1:03d}",
            at=cell_time(t0, i) + formed,
        )
    for m in range(lay.modules):
        p = m // MODULES_PER_PACK
        at = cell_time(t0, (p + 1) * CELLS_PER_PACK) + formed + timedelta(hours=6)
        yield link(
            lay.base["module"] + m,
            lay.base["pack"] + p,
            "assembled",
            slot=f"M{m % MODULES_PER_PACK + 1:02d}",
            at=at,
        )
    for p in range(lay.packs):
        at = cell_time(t0, (p + 1) * CELLS_PER_PACK) + formed + timedelta(days=1)
        yield link(lay.base["pack"] + p, lay.base["vehicle"] + p, "assembled", slot="HV", at=at)


def visit_rows(lay: Layout, t0: datetime, station_id: int, winders: list[int]) -> Iterator:
    for i in range(lay.cells):
        at = cell_time(t0, i)
        yield (
            i + 1,
            lay.base["cell"] + i,
            station_id,
            winders[i % WINDERS],
            at,
            at + timedelta(seconds=2),
            "ok",
            "WIND-21700-V7",
            "",
            "",
        )


# --- loading ------------------------------------------------------------------------------------


def chunks(rows: Iterable[tuple], size: int = CHUNK) -> Iterator[list[tuple]]:
    batch: list[tuple] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def load(table: str, cols: str, rows: Iterable[tuple]) -> int:
    """Bulk-load rows: COPY on PostgreSQL, executemany in one transaction on SQLite."""
    from django.db import connection, transaction

    n = 0
    if connection.vendor == "postgresql":
        with (
            transaction.atomic(),
            connection.cursor() as cur,
            cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy,
        ):
            for r in rows:
                copy.write_row(r)
                n += 1
        return n
    adapt = connection.ops.adapt_datetimefield_value
    marks = ", ".join(["%s"] * len(cols.split(",")))
    with transaction.atomic(), connection.cursor() as cur:
        for batch in chunks(rows):
            cur.executemany(
                f"INSERT INTO {table} ({cols}) VALUES ({marks})",
                [tuple(adapt(v) if isinstance(v, datetime) else v for v in r) for r in batch],
            )
            n += len(batch)
    return n


def reset_sequences(tables: Iterable[str]) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        return  # SQLite AUTOINCREMENT follows explicit ids by itself
    with connection.cursor() as cur:
        for table in tables:
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"COALESCE((SELECT MAX(id) FROM {table}), 1))"
            )


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            for table in ("genealogy_unit", "genealogy_link", "genealogy_stationvisit"):
                cur.execute(f"VACUUM ANALYZE {table}")
        else:
            cur.execute("ANALYZE")


def master_data() -> tuple[int, int, list[int]]:
    """The cylindrical line with its winding station and 8 winders: (line, station, winders)."""
    from qms.choices import CellFormat, IdentificationMethod, ProcessStep
    from qms.models import Equipment, Line, Site, Station

    site, _ = Site.objects.get_or_create(
        code="bench", defaults={"name": "Benchmark plant", "country": "DE"}
    )
    line, _ = Line.objects.get_or_create(
        site=site,
        code="l2-cyl",
        defaults={
            "name": "Cylindrical line 2 (21700, NMC811, 5 Ah)",
            "cell_format": CellFormat.CYLINDRICAL,
            "identification_method": IdentificationMethod.DATAMATRIX,
            "serial_scheme": r"L2C[0-9]{10}",
        },
    )
    station, _ = Station.objects.get_or_create(
        line=line,
        code="wind",
        defaults={"name": "Winding", "process_step": ProcessStep.WINDING_STACKING, "sequence": 40},
    )
    winders = [
        Equipment.objects.get_or_create(
            station=station, code=f"wd-{w + 1:02d}", defaults={"name": f"Winder {w + 1}"}
        )[0].pk
        for w in range(WINDERS)
    ]
    return line.pk, station.pk, winders


def build(cells: int, seed: int, t0: datetime, log: Callable[[str], None]) -> dict:
    from django.db import DatabaseError, connection

    lay = Layout(cells)
    line_id, station_id, winders = master_data()
    started = time.perf_counter()
    replica = False
    if connection.vendor == "postgresql":
        # Skip per-row foreign-key triggers during the load when allowed (superuser): the
        # generator produces consistent ids; the tables keep their constraints afterwards.
        try:
            with connection.cursor() as cur:
                cur.execute("SET session_replication_role = replica")
            replica = True
        except DatabaseError:  # not permitted: load with the checks on
            replica = False
    n_units = load("genealogy_unit", UNIT_COLS, unit_rows(lay, t0, line_id))
    log(f"units: {n_units} in {time.perf_counter() - started:.1f} s")
    n_links = load("genealogy_link", LINK_COLS, link_rows(lay, t0, seed))
    log(f"links: {n_links} in {time.perf_counter() - started:.1f} s")
    n_visits = load("genealogy_stationvisit", VISIT_COLS, visit_rows(lay, t0, station_id, winders))
    log(f"visits: {n_visits} in {time.perf_counter() - started:.1f} s")
    if replica:
        with connection.cursor() as cur:
            cur.execute("SET session_replication_role = DEFAULT")
    reset_sequences(["genealogy_unit", "genealogy_link", "genealogy_stationvisit"])
    analyze()
    build_s = time.perf_counter() - started
    log(f"analysed; build {build_s:.1f} s")
    return {"build_s": round(build_s, 1), "units": n_units, "links": n_links, "visits": n_visits}


# --- measuring ---------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000.0, out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def measure(cells: int, seed: int, t0: datetime, repeat: int, log) -> dict:
    from genealogy import queries
    from genealogy.models import Unit
    from qms.models import Equipment, Station

    lay = Layout(cells)
    rnd = random.Random(seed)
    out: dict = {}

    # Backward: VIN -> pack (448 cells) -> modules -> cells -> coil segments -> lots.
    vins = [f"WVGZZZE2ZSP{rnd.randrange(lay.packs):06d}" for _ in range(repeat)]
    vehicles = [Unit.objects.get(kind="vehicle", serial=v) for v in vins]
    queries.trace_backward(vehicles[0])  # warm-up
    times, sample = [], None
    for v in vehicles:
        ms, trace = timed(lambda v=v: queries.trace_backward(v))
        times.append(ms)
        sample = sample or trace
    kinds = {k: len(sample.by_kind(k)) for k in ("cell", "slit_coil", "coil", "material_lot")}
    log(
        f"backward: {kinds}, {len(sample.edges)} edges, "
        f"{sum(len(s) for s in sample.segments.values())} segments"
    )
    out |= {
        "backward_trace_p50_ms": round(pct(times, 50), 1),
        "backward_trace_p95_ms": round(pct(times, 95), 1),
        "backward_trace_cells": kinds["cell"],
        "backward_trace_nodes": len(sample.nodes),
        "backward_trace_edges": len(sample.edges),
    }

    # Forward from a cathode active material (CAM) lot: its coils' cells, to VINs.
    lot = Unit.objects.get(kind="material_lot", serial="CAM-00000")
    ms, trace = timed(lambda: queries.trace_forward(lot))
    out["forward_trace_lot_s"] = round(ms / 1000.0, 2)
    out["forward_lot_cells"] = len(trace.by_kind("cell"))
    out["forward_lot_vehicles"] = len(trace.by_kind("vehicle"))
    out["forward_lot_nodes"] = len(trace.nodes)
    out["forward_lot_edges"] = len(trace.edges)
    del trace
    ms, n = timed(lambda: sum(1 for _ in queries.iter_trace_forward(lot)))
    out["forward_lot_stream_s"] = round(ms / 1000.0, 2)
    ms, scope = timed(lambda: queries.recall_scope(unit=lot, with_comparison=False))
    out["forward_lot_recall_scope_s"] = round(ms / 1000.0, 2)
    log(f"forward lot: {out['forward_lot_cells']} cells, {n} nodes streamed")

    # A 15 m segment of a cathode mother coil -> slit lanes -> cells -> ... -> VINs.
    # A defect somewhere in the metres a random cell used (so the segment was consumed).
    segs = []
    for _ in range(repeat):
        s, pos = slit_index_and_pos(CATHODE, rnd.randrange(cells))
        k, mother_m = s // LANES, SLIT_FROM_M + pos
        a = round(min(max(mother_m - rnd.uniform(0.0, 14.0), 0.0), MOTHER_M - 15.0), 1)
        segs.append((Unit.objects.get(kind="coil", serial=f"CC-{k:05d}"), a, a + 15.0))
    queries.recall_scope(
        unit=segs[0][0], start_m=segs[0][1], end_m=segs[0][2], with_comparison=False
    )
    times, scopes = [], []
    for coil, a, b in segs:
        ms, scope = timed(
            lambda c=coil, a=a, b=b: queries.recall_scope(
                unit=c, start_m=a, end_m=b, with_comparison=False
            )
        )
        times.append(ms)
        scopes.append(scope)
    out["segment_recall_p50_ms"] = round(pct(times, 50), 1)
    out["segment_recall_p95_ms"] = round(pct(times, 95), 1)
    out["segment_recall_cells_median"] = int(statistics.median(s.counts["cells"] for s in scopes))
    out["segment_recall_vins_median"] = int(statistics.median(s.counts["vehicles"] for s in scopes))
    # The same with the comparison (whole coil and lot level): far bigger traversals.
    coil, a, b = segs[0]
    ms, scope = timed(lambda: queries.recall_scope(unit=coil, start_m=a, end_m=b))
    out["segment_recall_with_comparison_s"] = round(ms / 1000.0, 2)
    out["segment_recall_levels"] = {lv.level: lv.counts for lv in scope.levels}
    out["segment_recall_reduction_factor"] = scope.reduction_factor

    # A station window: one hour on one winder and everything downstream.
    station = Station.objects.get(line__code="l2-cyl", code="wind")
    winder = Equipment.objects.get(station=station, code="wd-03")
    mid = cell_time(t0, cells // 2)
    ms, trace = timed(
        lambda: queries.trace_forward_window(
            station=station, equipment=winder, start=mid, end=mid + timedelta(hours=1)
        )
    )
    out["window_trace_ms"] = round(ms, 1)
    out["window_cells"] = len(trace.by_kind("cell"))
    return out


# --- database ---------------------------------------------------------------------------------


def ensure_pg_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` when it does not exist."""
    import environ
    import psycopg

    cfg = environ.Env.db_url_config(url)
    if "postgresql" not in cfg["ENGINE"]:
        return
    params = {
        "host": cfg.get("HOST") or None,
        "port": cfg.get("PORT") or None,
        "user": cfg.get("USER") or None,
        "password": cfg.get("PASSWORD") or None,
    }
    try:
        psycopg.connect(dbname=cfg["NAME"], **params).close()
        return
    except psycopg.OperationalError:
        pass
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(f'CREATE DATABASE "{cfg["NAME"]}"')


def db_name() -> str:
    from django.db import connection

    return str(connection.settings_dict["NAME"])


def existing_cells() -> int:
    from genealogy.models import Unit

    return Unit.objects.filter(kind="cell").count()


def existing_units() -> bool:
    from genealogy.models import Unit

    return Unit.objects.exists()


def wipe() -> None:
    from django.db import connection

    tables = [
        "genealogy_measurement",
        "genealogy_stationvisit",
        "genealogy_link",
        "genealogy_historicallink",
        "genealogy_historicalunit",
    ]
    with connection.cursor() as cur:
        if connection.vendor == "postgresql":
            cur.execute(f"TRUNCATE {', '.join(tables)}, genealogy_unit CASCADE")
        else:
            for t in [*tables, "genealogy_unit"]:
                cur.execute(f"DELETE FROM {t}")
            cur.execute("VACUUM")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=20, help="samples per percentile")
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure the plant already built in the bench database (same --cells)",
    )
    args = parser.parse_args(argv)
    if args.cells < CELLS_PER_PACK * SHUFFLE_PACKS:
        parser.error(f"--cells must be at least {CELLS_PER_PACK * SHUFFLE_PACKS}")

    os.environ.setdefault("DATABASE_URL", DEFAULT_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")
    ensure_pg_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    def log(msg: str) -> None:
        if not args.json:
            print(msg, flush=True)
        else:
            print(msg, file=sys.stderr, flush=True)

    if "bench" not in db_name():
        # The bench wipes and fills its database: never the plant's own.
        log(f"refusing to use {db_name()}: a bench database's name contains 'bench'")
        return 2
    call_command("migrate", verbosity=0)
    # A fixed start keeps serials and times identical between runs of one size.
    t0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    have = existing_cells()
    figures: dict = {"cells": args.cells, "db": connection.vendor, "database": db_name()}
    if args.reuse:
        if have != args.cells:
            log(f"{db_name()} holds {have} cells, not {args.cells}: run without --reuse")
            return 2
        log(f"reusing the plant of {have} cells in {db_name()}")
        figures["build_s"] = None
    else:
        if existing_units():
            log(f"wiping the previous plant in {db_name()}")
            wipe()
        log(f"building {args.cells} cells on {connection.vendor} ({db_name()})")
        figures |= build(args.cells, args.seed, t0, log)
    figures |= measure(args.cells, args.seed, t0, args.repeat, log)
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if not args.json:
        for key, value in figures.items():
            print(f"{key:>36}: {value}")
    print(json.dumps(figures, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
