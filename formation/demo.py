"""Simulated formation and aging for the cells a ``simulate`` run made, sent through the
real ingest handlers.

:func:`formation_simulate` takes the cells of the database that have passed the formation
station but have no formation run yet, and per line:

1. reads each cell's upstream history from the genealogy where it was measured (fill mass,
   terminal weld resistance, overhang and insulation resistance on the cell; moisture and
   burr on the slit coils it was wound from; areal loading of the mother coil at the metres
   the cell used), the product's nominal where nothing was measured;
2. runs :func:`formation.cellsim.simulate_plant` with that history (latent defects at
   ``defect_rate``, 0.5-2 % is plant-like; cycler and rack nuisances as the simulator
   draws them);
3. places each cell's run at its formation visit and its aging after the run (not before
   the aging visit), trays and channels on the station's cabinets, racks ``R01``...;
4. sends, as a formation cabinet, tray loader and aging scanner would, ``tray_load``
   envelopes, one ``formation_step`` envelope per cell with its whole run (samples packed)
   and one ``aging_ocv`` envelope per rack and reading round, through
   :func:`qms.ingest.services.ingest_raw`;
5. computes the cells' features and grades them with the line's rules in force (a rule
   set drawn from the control plan is put in force first when the line has none and an
   actor allowed to do so is given).

Only cells whose formation and aging both end by ``end_at`` are sent: the others are still
in formation or aging and are taken by a later call. Same seed and same database give the
same envelopes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef
from django.utils import timezone

from genealogy.choices import LinkKind, UnitKind
from genealogy.models import Link, Measurement, StationVisit, Unit
from qms.choices import CellFormat
from qms.exceptions import DomainError
from qms.ingest.envelope import build
from qms.ingest.models import Transport
from qms.ingest.services import REJECTED, RawMessage, ingest_raw, transport_actor
from qms.models import Characteristic, Equipment, Line

from . import services
from .cellsim import PRODUCTS, CellUpstream, SimulatedPlant, simulate_plant
from .choices import RuleSetState
from .features import curve_pack
from .models import CyclerRun, GradingRuleSet, TrayLoad

FORMATION_STATION = "form"
AGING_STATION = "aging"
GRADING_STATION = "grade"
PRODUCT_OF_FORMAT = {CellFormat.PRISMATIC: "prismatic_105ah", CellFormat.CYLINDRICAL: "cyl_21700"}
#: Cycler sampling of the simulated curves (pulses are always sampled every second).
DEFAULT_SAMPLE_PERIOD_S = 60.0
#: Time from the end of a run to the aging rack, and from loading a tray to its start.
TRANSFER = timedelta(hours=2)
LOADING_LEAD = timedelta(minutes=10)
#: Messages per ``ingest_raw`` call (one transaction each).
BATCH = 100

#: Upstream values measured on the cell itself: characteristic code -> simulator field.
CELL_GAUGES = {
    "fill-mass": "fill_mass_g",
    "terminal-weld-resistance": "weld_resistance_uohm",
    "overhang": "overhang_mm",
    "insulation-resistance": "insulation_resistance_mohm",
}
#: Measured on the slit coils a cell was wound from.
COIL_GAUGES = {
    "cathode-moisture": "cathode_moisture_ppm",
    "anode-moisture": "anode_moisture_ppm",
    "cathode-burr": "cathode_burr_um",
    "anode-burr": "anode_burr_um",
}
#: Measured along the mother coil (``position_m``), at the metres a cell used.
LOADING_GAUGES = {
    "cathode-areal-loading": "cathode_loading_mg_cm2",
    "anode-areal-loading": "anode_loading_mg_cm2",
}
#: A loading reading counts for a segment this far outside it (readings every 10 m).
LOADING_REACH_M = 10.0


@dataclass
class FormationReport:
    """What :func:`formation_simulate` did on one line."""

    line: str
    product: str
    cells: int = 0
    waiting: int = 0
    tray_loads: int = 0
    runs: int = 0
    aging_messages: int = 0
    readings: int = 0
    rejected: list[str] = field(default_factory=list)
    latent: Counter = field(default_factory=Counter)
    #: The simulator's truth the plant never sees: serial -> latent defect class.
    defective: dict[str, str] = field(default_factory=dict)
    graded: int = 0
    bins: Counter = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    k_screen_failed: list[str] = field(default_factory=list)
    not_graded: str = ""

    def summary(self) -> str:
        latent = ", ".join(f"{k} {v}" for k, v in sorted(self.latent.items()) if k != "none")
        bins = ", ".join(f"{k} {v}" for k, v in sorted(self.bins.items()))
        text = (
            f"{self.line}: formation and aging of {self.cells} cells ({self.product}): "
            f"{self.runs} runs, {self.readings} aging readings in {self.aging_messages} "
            f"messages, {len(self.rejected)} refused; latent defects: {latent or 'none'}"
        )
        if self.waiting:
            text += f"; {self.waiting} cells still in formation or aging"
        if self.graded:
            text += f"; graded {self.graded} ({bins}), K screen failed {len(self.k_screen_failed)}"
        elif self.not_graded:
            text += f"; not graded: {self.not_graded}"
        return text


# --- upstream history --------------------------------------------------------------------------


def _upstream(cells: Sequence[Unit], product: str) -> list[CellUpstream]:
    """Each cell's upstream history as the simulator takes it, from its measurements."""
    spec = PRODUCTS[product]
    ids = [c.pk for c in cells]
    values: dict[int, dict[str, float]] = {
        pk: {name: g.nominal for name, g in spec.gauges.items()} for pk in ids
    }
    for unit_id, code, value in Measurement.objects.filter(
        unit_id__in=ids, characteristic__code__in=list(CELL_GAUGES)
    ).values_list("unit_id", "characteristic__code", "value"):
        values[unit_id][CELL_GAUGES[code]] = value
    segments: dict[int, list[tuple[int, float | None, float | None]]] = defaultdict(list)
    for target, source, start, end in (
        Link.objects.filter(
            target_id__in=ids,
            kind=LinkKind.CONSUMED,
            removed_at__isnull=True,
            source__kind__in=(UnitKind.SLIT_COIL, UnitKind.COIL),
        )
        .order_by("target_id", "linked_at", "id")
        .values_list("target_id", "source_id", "start_m", "end_m")
    ):
        segments[target].append((source, start, end))
    coils = {c for segs in segments.values() for c, _, _ in segs}
    on_coil: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for unit_id, code, value in Measurement.objects.filter(
        unit_id__in=coils, characteristic__code__in=list(COIL_GAUGES)
    ).values_list("unit_id", "characteristic__code", "value"):
        on_coil[unit_id][code].append(value)
    mother_of = {
        slit: (mother, start or 0.0)
        for slit, mother, start in Link.objects.filter(
            target_id__in=coils, kind=LinkKind.SLIT, removed_at__isnull=True
        ).values_list("target_id", "source_id", "start_m")
    }
    mothers = {m for m, _ in mother_of.values()} | coils
    loading: dict[int, list[tuple[str, float, float]]] = defaultdict(list)
    for unit_id, code, position, value in Measurement.objects.filter(
        unit_id__in=mothers, characteristic__code__in=list(LOADING_GAUGES), position_m__isnull=False
    ).values_list("unit_id", "characteristic__code", "position_m", "value"):
        loading[unit_id].append((code, position, value))
    lot_of: dict[int, int] = {}
    out = []
    for cell in cells:
        v = values[cell.pk]
        segs = segments.get(cell.pk, [])
        for coil, start, end in segs:
            for code, readings in on_coil.get(coil, {}).items():
                v[COIL_GAUGES[code]] = float(np.mean(readings))
            if start is None or end is None:
                continue
            mother, offset = mother_of.get(coil, (coil, 0.0))
            lo, hi = start + offset - LOADING_REACH_M, end + offset + LOADING_REACH_M
            mid = (start + end) / 2 + offset
            near: dict[str, tuple[float, float]] = {}
            for code, position, value in loading.get(mother, []):
                if lo <= position <= hi:
                    best = near.get(code)
                    if best is None or abs(position - mid) < best[0]:
                        near[code] = (abs(position - mid), value)
            for code, (_, value) in near.items():
                v[LOADING_GAUGES[code]] = value
        lot_key = segs[0][0] if segs else -1
        lot = lot_of.setdefault(lot_key, len(lot_of))
        out.append(CellUpstream(electrode_lot=lot, **v))
    return out


# --- envelopes ----------------------------------------------------------------------------------


def _iso(at: datetime) -> str:
    return at.isoformat()


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(float(epoch_s), tz=UTC)


@dataclass
class _Placed:
    """Where and when one simulated cell is formed and aged in the plant's time."""

    index: int
    unit: Unit
    run_start: datetime
    aging_start: datetime
    cabinet: str
    channel: str
    tray: str
    position: str
    rack: str


def _step(plant: SimulatedPlant, i: int, s: int, curve, run_start: datetime) -> dict:
    rec = plant.step_records(i)[s]
    start = run_start + timedelta(seconds=rec.t_start_s)
    arrays = {
        "time_s": curve.time_s - rec.t_start_s,
        "voltage_v": curve.voltage_v,
        "current_a": curve.current_a,
        "capacity_ah": curve.capacity_ah,
        "temperature_c": curve.temperature_c,
    }
    blob = curve_pack(arrays)
    out = {
        "sequence": s + 1,
        "step_index": s,
        "type": rec.kind,
        "name": rec.name,
        "started_at": _iso(start),
        "ended_at": _iso(start + timedelta(seconds=rec.duration_s)),
        "duration_s": rec.duration_s,
        "capacity_ah": rec.capacity_ah,
        "energy_wh": rec.energy_wh,
        "start_voltage_v": rec.v_start_v,
        "end_voltage_v": rec.v_end_v,
        "end_current_a": rec.i_end_a,
        "temperature_start_c": rec.temperature_start_c,
        "temperature_max_c": rec.temperature_max_c,
        "end_reason": rec.end_reason,
        "curve_b64": base64.b64encode(blob).decode("ascii"),
        "curve_sha256": hashlib.sha256(blob).hexdigest(),
    }
    for name in ("cv_time_s", "tail_current_a"):
        value = getattr(rec, name)
        if math.isfinite(value):
            out[name] = value
    return out


def _message(doc: dict) -> RawMessage:
    return RawMessage(
        payload=json.dumps(doc, separators=(",", ":")).encode(),
        transport=Transport.DIRECT,
        origin="formation simulator",
    )


def _send(docs: list[dict], actor: AbstractBaseUser, report: FormationReport) -> None:
    for lo in range(0, len(docs), BATCH):
        chunk = docs[lo : lo + BATCH]
        outcomes = ingest_raw([_message(d) for d in chunk], actor=actor)
        for doc, outcome in zip(chunk, outcomes, strict=True):
            if outcome.status == REJECTED:
                report.rejected.append(f"{doc['kind']} {doc['message_id']}: {outcome.reason}")


# --- grading rules ------------------------------------------------------------------------------


def rules_from_control_plan(line: Line) -> dict:
    """A grading rule set drawn from the line's control plan: bin A holds cells at or above
    the nominal capacity with the DCIR in the lower half of its band, bin B the rest of the
    specification; the K screen at the K-value's upper limit and 3.5 robust sigma above the
    lot. Returned as the arguments of :func:`formation.services.grading_rules_create`."""
    chars = {
        c.code: c
        for c in Characteristic.objects.filter(
            station__line=line, code__in=("discharge-capacity", "dcir", "ocv", "k-value")
        )
    }
    cap, dcir, ocv, k = (chars.get(c) for c in ("discharge-capacity", "dcir", "ocv", "k-value"))
    if not (cap and dcir and ocv and k and k.usl):
        raise DomainError(
            f"Line {line.code} has no discharge-capacity, dcir, ocv and k-value limits.",
            field="line",
        )
    band = {"min": ocv.lsl, "max": ocv.usl}
    mid_dcir = dcir.nominal + (dcir.usl - dcir.nominal) / 2
    return {
        "name": f"{line.code} control plan grading",
        "bins": [
            {
                "code": "A",
                "limits": {
                    "capacity_ah": {"min": cap.nominal, **({"max": cap.usl} if cap.usl else {})},
                    "dcir_mohm": {"max": mid_dcir},
                    "ocv_mv": band,
                },
            },
            {
                "code": "B",
                "limits": {
                    "capacity_ah": {k: v for k, v in (("min", cap.lsl), ("max", cap.usl)) if v},
                    "dcir_mohm": {k: v for k, v in (("min", dcir.lsl), ("max", dcir.usl)) if v},
                    "ocv_mv": band,
                },
            },
        ],
        "k_abs_limit_mv_per_day": k.usl,
        "k_lot_z_limit": 3.5,
        "k_min_readings": 5,
        "notes": "Drawn from the control plan of the grading and aging stations.",
    }


def _rules_in_force(line: Line, actor: AbstractBaseUser | None) -> str:
    """'' when the line has rules in force (putting the control plan's in force when it
    has none and ``actor`` may), else why it cannot be graded."""
    if GradingRuleSet.objects.filter(line=line, state=RuleSetState.ACTIVE).exists():
        return ""
    if actor is None or not actor.has_perm(services.ACTIVATE_PERMISSION):
        return "no grading rules in force and no quality engineer to put them in force"
    try:
        args = rules_from_control_plan(line)
        found = GradingRuleSet.objects.filter(line=line, name=args["name"]).first()
        rules = found or services.grading_rules_create(line=line, actor=actor, **args)
        services.grading_rules_activate(
            rule_set=rules, actor=actor, reason="demo plant: grading from the control plan"
        )
    except DomainError as exc:
        return exc.message
    return ""


# --- the run ------------------------------------------------------------------------------------


def cells_due(line: Line) -> list[Unit]:
    """Cells of ``line`` that passed the formation station and have no formation run."""
    return list(
        Unit.objects.filter(line=line, kind=UnitKind.CELL)
        .filter(
            Exists(
                StationVisit.objects.filter(
                    unit=OuterRef("pk"), station__line=line, station__code=FORMATION_STATION
                )
            )
        )
        .exclude(Exists(CyclerRun.objects.filter(unit=OuterRef("pk"))))
        .order_by("produced_at", "id")
    )


def _visits(cells: Sequence[Unit], line: Line, code: str) -> dict[int, datetime]:
    out = {}
    for unit_id, started in (
        StationVisit.objects.filter(
            unit_id__in=[c.pk for c in cells], station__line=line, station__code=code
        )
        .order_by("unit_id", "started_at")
        .values_list("unit_id", "started_at")
    ):
        out.setdefault(unit_id, started)
    return out


def _place(plant: SimulatedPlant, cells: Sequence[Unit], line: Line) -> list[_Placed]:
    form_at = _visits(cells, line, FORMATION_STATION)
    aging_at = _visits(cells, line, AGING_STATION)
    cabinets = sorted(
        Equipment.objects.filter(station__line=line, station__code=FORMATION_STATION).values_list(
            "code", flat=True
        )
    ) or ["fc-01"]
    trays_before = TrayLoad.objects.filter(station__line=line).values("tray").distinct().count()
    run_end = plant.formation_ended_at_s - plant.formation_started_at_s
    placed = []
    for i, cell in enumerate(cells):
        run_start = form_at.get(cell.pk) or _at(plant.formation_started_at_s[i])
        end = run_start + timedelta(seconds=float(run_end[i]))
        aging_start = max(aging_at.get(cell.pk) or end, end + TRANSFER)
        cab, bed, pos = plant.channel_label(i).split("/")
        placed.append(
            _Placed(
                index=i,
                unit=cell,
                run_start=run_start,
                aging_start=aging_start,
                cabinet=cabinets[(int(cab.split("-")[1]) - 1) % len(cabinets)],
                channel=f"{bed}/{pos}",
                tray=f"T{trays_before + int(plant.tray[i]) + 1:05d}",
                position=str(int(plant.tray_position[i]) + 1),
                rack=f"R{int(plant.rack[i]) + 1:02d}",
            )
        )
    return placed


def _aging_times(plant: SimulatedPlant, p: _Placed) -> list[datetime]:
    i = p.index
    return [
        p.aging_start + timedelta(seconds=float(t - plant.aging_started_at_s[i]))
        for t in plant.aging.at_s[i]
    ]


def formation_simulate(
    *,
    line: Line,
    seed: int = 7,
    end_at: datetime | None = None,
    defect_rate: float = 0.01,
    sample_period_s: float = DEFAULT_SAMPLE_PERIOD_S,
    limit: int | None = None,
    actor: AbstractBaseUser | None = None,
    grade: bool = True,
) -> FormationReport:
    """Formation and aging of ``line``'s cells that passed formation and have no run yet;
    see the module docstring. ``actor`` acts for grading (and puts the control plan's
    grading rules in force when the line has none); the envelopes are sent as the direct
    transport."""
    product = PRODUCT_OF_FORMAT.get(line.cell_format)
    report = FormationReport(line=line.code, product=product or line.cell_format)
    if product is None:
        report.not_graded = f"no simulated product for {line.get_cell_format_display()} cells"
        return report
    end_at = end_at or timezone.now()
    cells = cells_due(line)[:limit] if limit else cells_due(line)
    if not cells:
        return report
    start = min(c.produced_at for c in cells)
    plant = simulate_plant(
        len(cells),
        # Each batch of cells draws its own defects and noise, reproducibly.
        seed=seed * 1_000_003 + cells[0].pk,
        product=product,
        start=start,
        defect_rate=defect_rate,
        sample_period_s=sample_period_s,
        upstream=_upstream(cells, product),
    )
    placed = [
        p
        for p in _place(plant, cells, line)
        if max(_aging_times(plant, p)) <= end_at
        and p.run_start + timedelta(seconds=float(plant.formation_ended_at_s[p.index]
                                                  - plant.formation_started_at_s[p.index]))
        <= end_at
    ]  # fmt: skip
    report.waiting = len(cells) - len(placed)
    report.cells = len(placed)
    if not placed:
        return report
    report.latent.update(str(plant.truth.latent_class[p.index]) for p in placed)
    report.defective = {
        p.unit.serial: str(plant.truth.latent_class[p.index])
        for p in placed
        if plant.truth.latent_class[p.index] != "none"
    }
    site = line.site.code
    sender = transport_actor(Transport.DIRECT)

    loads: dict[str, list[_Placed]] = defaultdict(list)
    for p in placed:
        loads[p.tray].append(p)
    docs = [
        build(
            kind="tray_load",
            site=site,
            line=line.code,
            station=FORMATION_STATION,
            units=[p.unit.serial for p in members],
            source="tray loader",
            message_id=f"fsim-{seed}-{line.code}-{tray}-load",
            sent_at=min(p.run_start for p in members) - LOADING_LEAD,
            payload={"tray": tray, "positions": [p.position for p in members]},
        )
        for tray, members in loads.items()
    ]
    report.tray_loads = len(docs)
    _send(docs, sender, report)

    by_index = {p.index: p for p in placed}
    docs = []
    for i, curves in plant.iter_curves([p.index for p in placed], chunk=256):
        p = by_index[i]
        steps = [_step(plant, i, s, c, p.run_start) for s, c in enumerate(curves)]
        docs.append(
            build(
                kind="formation_step",
                site=site,
                line=line.code,
                station=FORMATION_STATION,
                equipment=p.cabinet,
                unit=p.unit.serial,
                source=f"{p.cabinet.upper()} formation cabinet",
                message_id=f"fsim-{seed}-{p.unit.serial}-run",
                sent_at=datetime.fromisoformat(steps[-1]["ended_at"]),
                payload={
                    "run": {
                        "id": f"{p.cabinet.upper()}-{p.tray}-{p.run_start:%y%m%d%H%M}",
                        "channel": p.channel,
                        "tray": p.tray,
                        "position": p.position,
                        "protocol": "FORM-0.1C-4V2",
                        "started_at": _iso(p.run_start),
                    },
                    "sign_convention": "charge_positive",
                    "steps": steps,
                },
            )
        )
        if len(docs) >= BATCH:
            _send(docs, sender, report)
            report.runs += len(docs)
            docs = []
    _send(docs, sender, report)
    report.runs += len(docs)

    rounds: dict[tuple[str, int], list[_Placed]] = defaultdict(list)
    for p in placed:
        for k in range(plant.aging.at_s.shape[1]):
            rounds[(p.rack, k)].append(p)
    docs = []
    for (rack, k), members in sorted(rounds.items()):
        readings = []
        for p in members:
            when = _aging_times(plant, p)[k]
            readings.append(
                {
                    "unit": p.unit.serial,
                    "measured_at": _iso(when),
                    "ocv_mv": float(plant.aging.ocv_v[p.index, k] * 1e3),
                    "temperature_c": float(plant.aging.rack_temperature_c[p.index, k]),
                }
            )
        docs.append(
            build(
                kind="aging_ocv",
                site=site,
                line=line.code,
                station=AGING_STATION,
                units=[p.unit.serial for p in members],
                source="aging OCV scanner",
                message_id=f"fsim-{seed}-{line.code}-{rack}-{members[0].unit.serial}-{k:02d}",
                sent_at=max(datetime.fromisoformat(r["measured_at"]) for r in readings),
                payload={"rack": rack, "readings": readings},
            )
        )
        report.readings += len(readings)
    report.aging_messages = len(docs)
    _send(docs, sender, report)

    if grade:
        report.not_graded = _rules_in_force(line, actor)
        ids = [p.unit.pk for p in placed]
        services.features_compute(cell_ids=ids)
        if not report.not_graded:
            result = services.cells_grade(cell_ids=ids, actor=actor)
            serial = {p.unit.pk: p.unit.serial for p in placed}
            report.graded = len(result.grades)
            report.bins.update(g.bin for g in result.grades)
            report.failed = [serial[g.unit_id] for g in result.grades if not g.passed]
            report.k_screen_failed = [serial[g.unit_id] for g in result.grades if g.k_screen_failed]
    return report


def formation_simulate_all(**kwargs) -> list[FormationReport]:
    """:func:`formation_simulate` on every line whose cells the simulator can form."""
    lines = Line.objects.filter(cell_format__in=list(PRODUCT_OF_FORMAT)).select_related("site")
    return [
        formation_simulate(line=line, **kwargs) for line in lines.order_by("site__code", "code")
    ]
