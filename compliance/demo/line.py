"""The line simulator: electrode shop, cell assembly, formation, modules, packs and VINs.

Everything is written through the services the plant's systems use (genealogy and
compliance services), acting as the demo MES integration, so the same rules apply as in
production: GS1 and serial-scheme checks, segment overlap checks, the interlock, holds.

One :class:`LineRun` produces a batch of cells on one line:

1. electrode supply: supplier lots -> mix batch -> mother coil (areal-loading profile every
   10 m, calendered thickness every 25 m) -> slit coils (lanes); winders consume real,
   consecutive segments of a cathode and an anode lane per cell;
2. per cell: winding (overhang X-ray), tab welding (destructive pull sample at the start of
   each weld batch), assembly (weld resistance, insulation resistance), electrolyte fill,
   sealing and helium leak test, formation, aging (K-value, OCV), grading (capacity, DCIR);
3. modules from graded good cells (cell-voltage spread), packs (EOL test), vehicles (VIN).

Values are normal (lognormal where the physics is one-sided) around the control plan's
nominal with sigma = tolerance / 4, plus lot, machine and coil-position effects; they stay
inside the limits unless a fault is injected. Injected faults (``faults=True``):

* cylindrical line: a coating streak out of spec on the cathode mother coil (the cells that
  consumed those metres are held, source SPC) and an electrolyte fill-mass outlier (held,
  source station);
* prismatic line: a helium leak NOK (cell scrapped, never assembled) and a rework (a cell
  replaced in a module; the removed cell is held for failure analysis).

Same seed, same database content -> same serials and values. Timestamps are UTC, in the
past, ending at ``end_at``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db.models import Exists, Max, OuterRef, Q

from compliance.choices import HoldSource
from compliance.models import Hold
from compliance.services import hold_place, hold_release, out_of_spec_hold, unit_status_set
from genealogy.choices import BLOCKED_STATUSES, LinkKind, UnitKind, UnitStatus, VisitResult
from genealogy.models import Link, Measurement, StationVisit, Unit
from genealogy.services import (
    MeasurementInput,
    cell_replace,
    coil_segment_consume,
    coil_slit,
    lot_consume,
    measurements_record,
    unit_assemble,
    unit_create,
    units_create_bulk,
    visit_record,
)
from qms.models import Characteristic, Equipment, Line, Station

from .plant import (
    ANODE_RECIPE,
    CATHODE_RECIPE,
    CYLINDRICAL,
    LINE_INTEGRATION_USERNAME,
    MATERIALS,
    MRB_USERNAME,
    PRISMATIC,
    QUALITY_USERNAME,
    SITE_CODE,
    LineSpec,
    VehicleProgramme,
)

H = timedelta(hours=1)

#: Cell route per line: (station code, start offset h after winding, duration h).
ROUTES: dict[str, tuple[tuple[str, float, float], ...]] = {
    PRISMATIC.code: (
        ("wind", 0.0, 0.05),
        ("tabweld", 0.25, 0.02),
        ("asm", 0.5, 0.05),
        ("fill", 1.0, 0.1),
        ("form", 25.0, 20.0),  # after 24 h wetting
        ("seal", 46.0, 0.1),
        ("aging", 47.0, 168.0),
        ("grade", 216.0, 4.0),
    ),
    CYLINDRICAL.code: (
        ("wind", 0.0, 0.01),
        ("tabweld", 0.1, 0.01),
        ("asm", 0.3, 0.02),
        ("fill", 0.6, 0.05),
        ("seal", 0.8, 0.02),
        ("form", 24.8, 16.0),
        ("aging", 41.0, 168.0),
        ("grade", 210.0, 3.0),
    ),
}
#: Hours from the last grading to vehicle marriage, plus a margin so nothing is in the future.
DOWNSTREAM_H = 5.0

#: Recipe / NC program names shown on station visits.
PROGRAMS = {
    "mix-c": "MIX-NMC811-V4",
    "mix-a": "MIX-GR-AQ-V3",
    "coat-c": "COAT-C-230-V6",
    "coat-a": "COAT-A-V5",
    "cal-c": "CAL-C-V3",
    "cal-a": "CAL-A-V3",
    "slit-c": "SLIT-C-V2",
    "slit-a": "SLIT-A-V2",
    "wind": "WIND-V7",
    "tabweld": "USW-V5",
    "asm": "ASM-V4",
    "fill": "FILL-V3",
    "form": "FORM-0.1C-4V2-V2",
    "seal": "SEAL-HE-V3",
    "aging": "AGE-7D-25C",
    "grade": "GRADE-C3-DCIR10S",
    "mod": "MOD-V2",
    "pack": "PACK-V2",
    "eol": "EOL-V5",
    "marriage": "MARRY-V1",
}

#: Profile sampling along a mother coil, metres.
LOADING_STEP_M = 10.0
THICKNESS_STEP_M = 25.0
BURR_STEP_M = 250.0


# --- VINs ---------------------------------------------------------------------------------

_VIN_VALUES = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_check_digit(vin: str) -> str:
    """The check digit (position 9) of a 17-character VIN: transliterate, weight, mod 11."""
    if len(vin) != 17:
        raise ValueError(f"A VIN has 17 characters, {vin!r} has {len(vin)}.")
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin.upper(), _VIN_WEIGHTS, strict=True))
    rest = total % 11
    return "X" if rest == 10 else str(rest)


def vin_is_valid(vin: str) -> bool:
    """17 characters from the VIN alphabet (no I, O, Q) with a correct check digit."""
    if len(vin) != 17 or any(c not in _VIN_VALUES for c in vin):
        return False
    return vin[8] == vin_check_digit(vin)


def vin_make(programme: VehicleProgramme, sequence: int) -> str:
    """WMI + VDS + check digit + model year + plant + 6-digit sequence."""
    body = (
        f"{programme.wmi}{programme.vds}0{programme.model_year_code}{programme.plant_code}"
        f"{sequence:06d}"
    )
    return body[:8] + vin_check_digit(body) + body[9:]


# --- Serial counters ----------------------------------------------------------------------


def next_number(kind: str, prefix: str) -> int:
    """The next free sequence number after ``prefix`` (serials are zero-padded, so the
    largest serial carries the largest number)."""
    last = (
        Unit.objects.filter(kind=kind, serial__startswith=prefix)
        .order_by("-serial")
        .values_list("serial", flat=True)
        .first()
    )
    if not last:
        return 1
    digits = "".join(c for c in last[len(prefix) :] if c.isdigit())
    return int(digits) + 1 if digits else 1


def next_vin_sequence(wmi: str) -> int:
    serials = Unit.objects.filter(kind=UnitKind.VEHICLE, serial__startswith=wmi).values_list(
        "serial", flat=True
    )
    tails = [int(s[11:]) for s in serials if len(s) == 17 and s[11:].isdigit()]
    return max(tails, default=0) + 1


# --- Plant handle -------------------------------------------------------------------------


@dataclass
class LineHandle:
    """The seeded rows of one line, looked up once."""

    spec: LineSpec
    line: Line
    stations: dict[str, Station]
    equipment: dict[tuple[str, str], Equipment]
    chars: dict[tuple[str, str], Characteristic]

    @classmethod
    def load(cls, spec: LineSpec) -> LineHandle:
        line = Line.objects.get(site__code=SITE_CODE, code=spec.code)
        stations = {s.code: s for s in Station.objects.filter(line=line)}
        equipment = {
            (e.station.code, e.code): e
            for e in Equipment.objects.filter(station__line=line).select_related("station")
        }
        chars = {
            (c.station.code, c.code): c
            for c in Characteristic.objects.filter(station__line=line).select_related("station")
        }
        return cls(spec, line, stations, equipment, chars)

    def char(self, station: str, code: str) -> Characteristic:
        return self.chars[(station, code)]

    def gauge(self, station: str, code: str) -> Equipment | None:
        """The machine that measures ``code`` at ``station`` (from the control plan data)."""
        spec = next(c for c in self.spec.station(station).characteristics if c.code == code)
        return self.equipment.get((station, spec.equipment))


@dataclass
class Actors:
    line: User  # the MES integration's user: records process data, station holds
    quality: User  # places holds on SPC alarms
    mrb: User  # dispositions held units (rework, scrap)

    @classmethod
    def load(cls) -> Actors:
        return cls(
            line=User.objects.get(username=LINE_INTEGRATION_USERNAME),
            quality=User.objects.get(username=QUALITY_USERNAME),
            mrb=User.objects.get(username=MRB_USERNAME),
        )


# --- Value generation ---------------------------------------------------------------------


def _sigma(char: Characteristic) -> float:
    """sigma = tolerance / 4 (Cpk 1.33 around nominal); one-sided limits use their side."""
    sides = [abs(lim - char.nominal) for lim in (char.lsl, char.usl) if lim is not None]
    return min(sides) / 4.0


def _decimals(sigma: float) -> int:
    return max(0, min(9, 1 - math.floor(math.log10(sigma))))


class Draw:
    """Random values for control-plan characteristics, kept inside the limits."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def normal(self, char: Characteristic, *, shift: float = 0.0, scale: float = 1.0) -> float:
        """nominal + shift + N(0, (scale * sigma)^2), rounded to the gauge's resolution and
        kept at least sigma/4 inside the limits."""
        sigma = _sigma(char)
        value = char.nominal + shift + self.rng.gauss(0.0, sigma * scale)
        return round(self._inside(char, value, sigma), _decimals(sigma))

    def lognormal(self, char: Characteristic, *, median: float, s: float) -> float:
        """median * exp(N(0, s^2)) with 3 significant digits, kept inside the limits."""
        value = median * math.exp(self.rng.gauss(0.0, s))
        lo = char.lsl * 1.2 if char.lsl is not None else None
        hi = char.usl * 0.8 if char.usl is not None else None
        if lo is not None:
            value = max(value, lo)
        if hi is not None:
            value = min(value, hi)
        return float(f"{value:.3g}")

    @staticmethod
    def _inside(char: Characteristic, value: float, sigma: float) -> float:
        margin = sigma / 4.0
        if char.lsl is not None:
            value = max(value, char.lsl + margin)
        else:  # an upper limit only: the quantity is positive (resistance, spread, leak)
            value = max(value, char.nominal * 0.2)
        if char.usl is not None:
            value = min(value, char.usl - margin)
        return value

    def out_of_spec(self, char: Characteristic, *, above: bool) -> float:
        """A value clearly outside one limit (an injected fault)."""
        sigma = _sigma(char)
        step = sigma * self.rng.uniform(1.5, 3.0)
        value = char.usl + step if above else char.lsl - step
        return round(value, _decimals(sigma))


# --- Material and coil supply -------------------------------------------------------------


class LotSupply:
    """Supplier lots for one run: fresh lots per run, or the newest usable lot in live mode."""

    def __init__(self, *, actor: User, received_at: datetime, fresh: bool):
        self.actor = actor
        self.received_at = received_at
        self.fresh = fresh
        self._lots: dict[str, Unit] = {}

    def get(self, key: str) -> Unit:
        lot = self._lots.get(key)
        if lot is not None:
            return lot
        spec = MATERIALS[key]
        if not self.fresh:
            lot = (
                Unit.objects.filter(kind=UnitKind.MATERIAL_LOT, material=spec.name)
                .exclude(status__in=BLOCKED_STATUSES)
                .order_by("-produced_at", "-id")
                .first()
            )
        if lot is None:
            prefix = f"{spec.lot_prefix}-"
            number = next_number(UnitKind.MATERIAL_LOT, prefix)
            lot = unit_create(
                kind=UnitKind.MATERIAL_LOT,
                serial=f"{prefix}{number:06d}",
                actor=self.actor,
                material=spec.name,
                supplier=spec.supplier,
                produced_at=self.received_at,
                reason="goods receipt",
            )
        self._lots[key] = lot
        return lot


@dataclass
class Lane:
    """A slit coil on a winder: its mother coil and the next free metre."""

    slit: Unit
    mother: Unit
    offset_m: float  # slit metre 0 = this mother metre
    position_m: float = 0.0

    @property
    def remaining_m(self) -> float:
        return self.slit.length_m - self.position_m


@dataclass
class Segment:
    lane: Lane
    start_m: float
    end_m: float

    @property
    def mother_mid_m(self) -> float:
        return self.lane.offset_m + (self.start_m + self.end_m) / 2.0


@dataclass
class Streak:
    """An injected out-of-spec coating streak on a mother coil, in mother metres."""

    mother: Unit
    start_m: float
    end_m: float
    value: float
    position_m: float


class CoilFeeder:
    """Hands each winder consecutive segments of one electrode (cathode or anode) and
    mounts the next lane, or makes a new mother coil, when a lane runs out."""

    def __init__(
        self,
        *,
        electrode: str,
        winders: int,
        make_mother: Callable[[str], list[Lane]],
        on_mount: Callable[[Lane], None],
    ):
        self.electrode = electrode
        self.mounted: list[Lane | None] = [None] * winders
        self.queue: list[Lane] = []
        self.make_mother = make_mother
        self.on_mount = on_mount

    def load_from_db(self, *, line: Line, coil_prefix: str, need_m: float) -> None:
        """Continue where earlier runs stopped: partly used lanes first, then unused ones."""
        e = "C" if self.electrode == "cathode" else "A"
        slit_links = (
            Link.objects.filter(
                kind=LinkKind.SLIT,
                removed_at__isnull=True,
                target__line=line,
                target__serial__startswith=f"{coil_prefix}-{e}-",
            )
            .exclude(target__status__in=BLOCKED_STATUSES)
            .exclude(source__status__in=BLOCKED_STATUSES)
            .select_related("source", "target")
            .annotate(
                used_m=Max(
                    "target__downstream_links__end_m",
                    filter=Q(
                        target__downstream_links__kind=LinkKind.CONSUMED,
                        target__downstream_links__removed_at__isnull=True,
                    ),
                )
            )
            .order_by("-target__serial")
        )
        used, unused = [], []
        for link in slit_links:
            lane = Lane(link.target, link.source, link.start_m, link.used_m or 0.0)
            if lane.remaining_m < need_m:
                continue
            (used if lane.position_m > 0 else unused).append(lane)
        unused.reverse()  # oldest unused lane first
        for i in range(len(self.mounted)):
            if used:
                self.mounted[i] = used.pop(0)
        self.queue = used + unused

    def take(self, winder: int, length_m: float) -> Segment:
        lane = self.mounted[winder]
        if lane is None or lane.remaining_m < length_m:
            lane = self._next_lane(length_m)
            self.mounted[winder] = lane
        start = lane.position_m
        end = round(start + length_m, 3)
        lane.position_m = end
        return Segment(lane, start, end)

    def _next_lane(self, length_m: float) -> Lane:
        while True:
            if not self.queue:
                self.queue = self.make_mother(self.electrode)
            lane = self.queue.pop(0)
            if lane.remaining_m >= length_m:
                self.on_mount(lane)
                return lane


# --- One production run on one line -------------------------------------------------------


@dataclass
class CellState:
    unit: Unit
    number: int
    wound_at: datetime
    cathode: Segment | None = None
    anode: Segment | None = None
    alive: bool = True
    graded_at: datetime | None = None
    capacity_shift: float = 0.0


@dataclass
class RunReport:
    line: str
    cells: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    packs: list[str] = field(default_factory=list)
    vehicles: list[str] = field(default_factory=list)
    coils: list[str] = field(default_factory=list)
    holds: list[str] = field(default_factory=list)
    scrapped: list[str] = field(default_factory=list)
    reworks: list[str] = field(default_factory=list)
    measurements: int = 0
    visits: int = 0

    def summary(self) -> str:
        first_last = f" {self.cells[0]}..{self.cells[-1]}" if self.cells else ""
        return (
            f"{self.line}: {len(self.cells)} cells{first_last}, {len(self.modules)} modules, "
            f"{len(self.packs)} packs, {len(self.vehicles)} vehicles, {len(self.coils)} new "
            f"mother coils, {self.measurements} measurements, {len(self.holds)} holds, "
            f"{len(self.scrapped)} scrapped, {len(self.reworks)} reworks"
        )


class LineRun:
    """Produces ``n_cells`` cells on one line and builds what it can from them."""

    def __init__(
        self,
        *,
        handle: LineHandle,
        actors: Actors,
        lots: LotSupply,
        rng: random.Random,
        end_at: datetime,
        fresh_coils: bool,
        faults: bool,
        fault_rate: float = 0.0,
    ):
        self.h = handle
        self.spec = handle.spec
        self.design = handle.spec.design
        self.actors = actors
        self.lots = lots
        self.rng = rng
        self.draw = Draw(rng)
        self.end_at = end_at
        self.fresh_coils = fresh_coils
        self.faults = faults
        self.fault_rate = fault_rate
        self.rows: list[MeasurementInput] = []
        self.report = RunReport(line=handle.spec.code)
        self.route = ROUTES[handle.spec.code]
        self._profiles: dict[int, list[tuple[float, float]]] = {}
        self._streak: Streak | None = None
        self._planned_streak_m: float | None = None
        # Set by run() from the length of the run: when coils are coated and mounted.
        self.coil_time = end_at
        self.mount_time = end_at

    # -- helpers ---------------------------------------------------------------------------

    def _clamp(self, at: datetime) -> datetime:
        return min(at, self.end_at)

    def _visit(
        self,
        unit: Unit,
        station: str,
        started_at: datetime,
        hours: float,
        *,
        equipment: Equipment | None = None,
        result: str = VisitResult.OK,
    ) -> StationVisit:
        start = self._clamp(started_at)
        self.report.visits += 1
        return visit_record(
            unit=unit,
            station=self.h.stations[station],
            started_at=start,
            ended_at=self._clamp(start + hours * H),
            equipment=equipment,
            result=result,
            program=PROGRAMS.get(station, ""),
            operator=self._operator(start),
            actor=self.actors.line,
        )

    def _operator(self, at: datetime) -> str:
        shift = "ABC"[((at.hour - 6) % 24) // 8]
        return f"{self.spec.code[:2]}-{shift}-{1040 + 'ABC'.index(shift) * 7}"

    def _measure(
        self,
        unit: Unit,
        station: str,
        code: str,
        value: float,
        at: datetime,
        *,
        visit: StationVisit | None = None,
        position_m: float | None = None,
        equipment: Equipment | None = None,
    ) -> None:
        eq = equipment or self.h.gauge(station, code)
        self.rows.append(
            MeasurementInput(
                unit_id=unit.pk,
                characteristic_id=self.h.char(station, code).pk,
                value=value,
                measured_at=self._clamp(at),
                equipment_id=eq.pk if eq else None,
                visit_id=visit.pk if visit else None,
                position_m=position_m,
            )
        )

    def _flush(self) -> None:
        if self.rows:
            measurements_record(rows=self.rows, actor=self.actors.line)
            self.report.measurements += len(self.rows)
            self.rows = []

    def _record_out_of_spec(
        self, unit: Unit, station: str, code: str, value: float, at: datetime, **kwargs
    ) -> Hold:
        """Record an out-of-spec value on its own and apply the plant's out-of-spec reaction
        at once (the station interlock needs the hold now, not after commit). The reaction
        is idempotent, so when it runs again on commit it finds this hold and adds none."""
        self._flush()
        self._measure(unit, station, code, value, at, **kwargs)
        rows, self.rows = self.rows, []
        created = measurements_record(rows=rows, actor=self.actors.line)
        self.report.measurements += len(rows)
        holds = out_of_spec_hold(measurement_ids=[m.pk for m in created if not m.in_spec])
        if not holds:  # the plant's reaction rules do not cover it: the station holds it
            char = self.h.char(station, code)
            holds = [
                hold_place(
                    units=[unit],
                    reason=f"{char.name} {value:g} {char.unit} out of specification",
                    source=HoldSource.STATION,
                    source_reference=f"{self.spec.code}/{station}/{code}",
                    actor=self.actors.line,
                )
            ]
        for hold in holds:
            self.report.holds.append(f"{hold.number}: {hold.reason}")
        return holds[0]

    def _offset(self, station: str) -> tuple[float, float]:
        return next((start, dur) for code, start, dur in self.route if code == station)

    # -- electrode shop --------------------------------------------------------------------

    def _make_mother(self, electrode: str) -> list[Lane]:
        """Lots -> mix batch -> coated, calendered mother coil -> slit lanes."""
        spec, d, rng = self.spec, self.design, self.rng
        e = "C" if electrode == "cathode" else "A"
        s = e.lower()
        t_mix = self.coil_time - 4 * H
        t_coat = self.coil_time
        recipe = CATHODE_RECIPE if electrode == "cathode" else ANODE_RECIPE
        lane_mm = d.cathode_lane_mm if electrode == "cathode" else d.anode_lane_mm
        length = float(rng.randint(2500, 3500))
        loading = self.h.char(f"coat-{s}", f"{electrode}-areal-loading")
        width_m = d.lanes * lane_mm / 1000.0
        # dry coated mass: metres x width x 2 sides x g/m² (mg/cm² x 10)
        coated_kg = round(length * width_m * 2 * loading.nominal * 10 / 1000.0, 1)
        batch_kg = round(coated_kg * 1.04, 1)  # 4 % losses in lines and edges

        mix_prefix = f"{spec.mix_prefix}-{e}-"
        ingredients = ", ".join(MATERIALS[k].name.split(",")[0] for k in recipe)
        mix = unit_create(
            kind=UnitKind.MIX_BATCH,
            serial=f"{mix_prefix}{next_number(UnitKind.MIX_BATCH, mix_prefix):06d}",
            line=self.h.line,
            material=f"{electrode.capitalize()} slurry ({ingredients})"[:80],
            produced_at=t_mix,
            actor=self.actors.line,
        )
        for key, fraction in recipe.items():
            lot_consume(
                lot=self.lots.get(key),
                consumer=mix,
                quantity=round(batch_kg * fraction, 1),
                quantity_unit="kg",
                linked_at=t_mix,
                actor=self.actors.line,
            )
        visit = self._visit(
            mix, f"mix-{s}", t_mix, 2.5, equipment=self.h.equipment[(f"mix-{s}", f"mixer-{s}1")]
        )
        for code in (f"{electrode}-slurry-solids", f"{electrode}-slurry-viscosity"):
            char = self.h.char(f"mix-{s}", code)
            self._measure(
                mix, f"mix-{s}", code, self.draw.normal(char), t_mix + 2.5 * H, visit=visit
            )

        coil_number = next_number(UnitKind.COIL, f"{spec.coil_prefix}-{e}-")
        foil = "al_foil" if electrode == "cathode" else "cu_foil"
        mother = unit_create(
            kind=UnitKind.COIL,
            serial=f"{spec.coil_prefix}-{e}-{coil_number:06d}",
            line=self.h.line,
            length_m=length,
            material=(
                f"{electrode.capitalize()} on {MATERIALS[foil].name.split(' ', 1)[1]} "
                f"{MATERIALS[foil].name.split()[0].lower()}, {d.lanes} x {lane_mm:g} mm"
            ),
            produced_at=t_coat,
            actor=self.actors.line,
        )
        self.report.coils.append(mother.serial)
        lot_consume(
            lot=mix,
            consumer=mother,
            quantity=coated_kg,
            quantity_unit="kg",
            linked_at=t_coat,
            actor=self.actors.line,
        )
        lot_consume(
            lot=self.lots.get(foil),
            consumer=mother,
            quantity=length,
            quantity_unit="m",
            linked_at=t_coat,
            actor=self.actors.line,
        )

        coat_h = length / 60.0 / 60.0  # 60 m/min
        visit = self._visit(
            mother,
            f"coat-{s}",
            t_coat,
            coat_h,
            equipment=self.h.equipment[(f"coat-{s}", f"coater-{s}1")],
        )
        streak_at = None
        if electrode == "cathode":  # only the first cathode coil of the run carries it
            streak_at, self._planned_streak_m = self._planned_streak_m, None
        profile = self._loading_profile(mother, loading, length, streak_at)
        self._profiles[mother.pk] = profile
        for pos, value in profile:
            at = t_coat + (pos / length) * coat_h * H
            self._measure(mother, f"coat-{s}", loading.code, value, at, visit=visit, position_m=pos)

        t_cal = t_coat + 6 * H
        thickness = self.h.char(f"cal-{s}", f"{electrode}-thickness")
        visit = self._visit(
            mother,
            f"cal-{s}",
            t_cal,
            length / 80.0 / 60.0,
            equipment=self.h.equipment[(f"cal-{s}", f"calender-{s}1")],
        )
        drift = 0.0
        for k in range(int(length // THICKNESS_STEP_M)):
            pos = THICKNESS_STEP_M / 2 + k * THICKNESS_STEP_M
            drift = 0.95 * drift + self.rng.gauss(0.0, 0.15 * _sigma(thickness))
            value = self.draw.normal(thickness, shift=drift, scale=0.7)
            self._measure(
                mother,
                f"cal-{s}",
                thickness.code,
                value,
                t_cal + (pos / 80.0 / 60.0) * H,
                visit=visit,
                position_m=pos,
            )

        t_slit = t_coat + 12 * H
        lanes = []
        burr = self.h.char(f"slit-{s}", f"{electrode}-burr")
        for i in range(d.lanes):
            letter = "ABCDEFGHJKL"[i]
            slit = unit_create(
                kind=UnitKind.SLIT_COIL,
                serial=f"{mother.serial}-{letter}",
                line=self.h.line,
                length_m=length,
                material=f"{mother.material.split(',')[0]}, lane {letter} {lane_mm:g} mm",
                produced_at=t_slit,
                actor=self.actors.line,
            )
            coil_slit(
                mother=mother,
                slit_coil=slit,
                start_m=0.0,
                end_m=length,
                linked_at=t_slit,
                actor=self.actors.line,
            )
            visit = self._visit(
                slit,
                f"slit-{s}",
                t_slit,
                length / 150.0 / 60.0,
                equipment=self.h.equipment[(f"slit-{s}", f"slitter-{s}1")],
            )
            for k in range(int(length // BURR_STEP_M)):
                pos = BURR_STEP_M / 2 + k * BURR_STEP_M
                value = self.draw.lognormal(burr, median=burr.nominal, s=0.25)
                self._measure(
                    slit,
                    f"slit-{s}",
                    burr.code,
                    value,
                    t_slit + (pos / 150.0 / 60.0) * H,
                    visit=visit,
                    position_m=pos,
                )
            lanes.append(Lane(slit, mother, 0.0))
        return lanes

    def _loading_profile(
        self, mother: Unit, char: Characteristic, length: float, streak_at: float | None
    ) -> list[tuple[float, float]]:
        """Areal loading every 10 m: batch offset, slow drift, noise, a few in-spec streaks,
        and the injected out-of-spec streak at ``streak_at`` (a window centre) if given."""
        rng, sigma = self.rng, _sigma(char)
        n = int(length // LOADING_STEP_M)
        batch = rng.gauss(0.0, 0.5 * sigma)
        bumps = {rng.randrange(n): rng.choice((-1, 1)) * rng.uniform(1.8, 2.5) for _ in range(3)}
        drift, out = 0.0, []
        for k in range(n):
            pos = LOADING_STEP_M / 2 + k * LOADING_STEP_M
            drift = 0.98 * drift + rng.gauss(0.0, 0.12 * sigma)
            shift = batch + drift + bumps.get(k, 0.0) * sigma
            if streak_at is not None and pos == streak_at:
                value = self.draw.out_of_spec(char, above=True)
                window = (pos - LOADING_STEP_M / 2, pos + LOADING_STEP_M / 2)
                self._streak = Streak(mother, window[0], window[1], value, pos)
            elif streak_at is not None and abs(pos - streak_at) == LOADING_STEP_M:
                value = self.draw.normal(char, shift=2.5 * sigma, scale=0.3)
            else:
                value = self.draw.normal(char, shift=shift, scale=0.6)
            out.append((pos, value))
        return out

    def _profile(self, mother: Unit) -> list[tuple[float, float]]:
        profile = self._profiles.get(mother.pk)
        if profile is None:
            e = "c" if mother.serial.split("-")[1] == "C" else "a"
            electrode = "cathode" if e == "c" else "anode"
            char = self.h.char(f"coat-{e}", f"{electrode}-areal-loading")
            profile = list(
                Measurement.objects.filter(unit=mother, characteristic=char)
                .order_by("position_m")
                .values_list("position_m", "value")
            )
            self._profiles[mother.pk] = profile
        return profile

    def _loading_at(self, seg: Segment) -> float:
        """Relative deviation of the areal loading where the segment was cut."""
        profile = self._profile(seg.lane.mother)
        if not profile:
            return 0.0
        k = min(int(seg.mother_mid_m // LOADING_STEP_M), len(profile) - 1)
        nominal = self.h.char("coat-c", "cathode-areal-loading").nominal
        return profile[k][1] / nominal - 1.0

    def _on_mount(self, lane: Lane) -> None:
        """Karl Fischer moisture of a slit coil when it is mounted on a winder."""
        e = lane.slit.serial.split("-")[1]
        electrode = "cathode" if e == "C" else "anode"
        char = self.h.char("wind", f"{electrode}-moisture")
        value = round(self.draw.lognormal(char, median=char.nominal, s=0.2))
        self._measure(lane.slit, "wind", char.code, float(value), self.mount_time)

    # -- the run ---------------------------------------------------------------------------

    def run(self, n_cells: int) -> RunReport:
        d, spec = self.design, self.spec
        takt = timedelta(seconds=d.takt_s)
        chain_h = max(start + dur for _, start, dur in self.route)
        t_start = self.end_at - (n_cells - 1) * takt - (chain_h + DOWNSTREAM_H) * H
        self.coil_time = t_start - 36 * H
        self.mount_time = t_start - 0.5 * H

        if self.faults and spec.code == CYLINDRICAL.code:
            # Put the streak where this run's winders will pass: half-way along each lane.
            per_lane_m = math.ceil(n_cells / d.winders) * d.cathode_m_per_cell
            if per_lane_m >= 2 * LOADING_STEP_M:
                k = int((per_lane_m / 2) // LOADING_STEP_M)
                self._planned_streak_m = LOADING_STEP_M / 2 + k * LOADING_STEP_M

        feeders = {
            e: CoilFeeder(
                electrode=e,
                winders=d.winders,
                make_mother=self._make_mother,
                on_mount=self._on_mount,
            )
            for e in ("cathode", "anode")
        }
        if not self.fresh_coils:
            for e, f in feeders.items():
                need = d.cathode_m_per_cell if e == "cathode" else d.anode_m_per_cell
                f.load_from_db(line=self.h.line, coil_prefix=spec.coil_prefix, need_m=need)

        cells = self._create_cells(n_cells, t_start, takt)
        self._wind(cells, feeders)
        self._tab_weld(cells)
        if self._streak is not None:
            self._hold_streak(cells)
        for station, _start, _dur in self.route[2:]:
            getattr(self, f"_step_{station}")(cells)
        self._flush()
        self._assemble()
        self._flush()
        return self.report

    def _create_cells(self, n: int, t_start: datetime, takt: timedelta) -> list[CellState]:
        spec = self.spec
        first = next_number(UnitKind.CELL, spec.cell_prefix)
        states: list[CellState] = []
        chunk = spec.design.cells_per_module
        for offset in range(0, n, chunk):
            numbers = range(first + offset, first + min(n, offset + chunk))
            t0 = t_start + offset * takt
            serials = [f"{spec.cell_prefix}{num:010d}" for num in numbers]
            if spec.identification_method == "datamatrix":
                lot = f"{spec.code[:2]}{t0:%y%m%d}{'ABC'[((t0.hour - 6) % 24) // 8]}"
                scanned = [f"(01){spec.gtin}(11){t0:%y%m%d}(10){lot}(21){s}" for s in serials]
            else:
                scanned = serials
            units = units_create_bulk(
                kind=UnitKind.CELL,
                serials=scanned,
                line=self.h.line,
                produced_at=t0,
                actor=self.actors.line,
                reason="jelly roll serialised at winding",
            )
            for i, (num, unit) in enumerate(zip(numbers, units, strict=True)):
                states.append(CellState(unit, num, t_start + (offset + i) * takt))
        self.report.cells += [c.unit.serial for c in states]
        return states

    def _wind(self, cells: list[CellState], feeders: dict[str, CoilFeeder]) -> None:
        d = self.design
        sep, ely = self.lots.get("separator"), self.lots.get("electrolyte")
        self.electrolyte = ely
        overhang = self.h.char("wind", "overhang")
        winder_bias = [self.rng.gauss(0.0, 0.4 * _sigma(overhang)) for _ in range(d.winders)]
        for i, c in enumerate(cells):
            w = i % d.winders
            c.cathode = feeders["cathode"].take(w, d.cathode_m_per_cell)
            c.anode = feeders["anode"].take(w, d.anode_m_per_cell)
            for seg in (c.cathode, c.anode):
                coil_segment_consume(
                    coil=seg.lane.slit,
                    consumer=c.unit,
                    start_m=seg.start_m,
                    end_m=seg.end_m,
                    linked_at=c.wound_at,
                    actor=self.actors.line,
                    reason="coil segment wound into jelly roll",
                )
            lot_consume(
                lot=sep,
                consumer=c.unit,
                quantity=d.separator_m_per_cell,
                quantity_unit="m",
                linked_at=c.wound_at,
                actor=self.actors.line,
            )
            visit = self._visit(
                c.unit,
                "wind",
                c.wound_at,
                self._offset("wind")[1],
                equipment=self.h.equipment[("wind", f"winder-{w + 1}")],
            )
            value = self.draw.normal(overhang, shift=winder_bias[w])
            self._measure(c.unit, "wind", "overhang", value, c.wound_at + 0.05 * H, visit=visit)
            # Capacity follows the cathode loading where the jelly roll was cut.
            c.capacity_shift = 0.9 * self._loading_at(c.cathode)

    def _tab_weld(self, cells: list[CellState]) -> None:
        start, dur = self._offset("tabweld")
        pull = self.h.char("tabweld", "tab-pull-force")
        for c in cells:
            at = c.wound_at + start * H
            visit = self._visit(
                c.unit, "tabweld", at, dur, equipment=self.h.equipment[("tabweld", "usw-1")]
            )
            if c.number % self.design.pull_sample_every != 1:
                continue
            # First cell of each weld batch: destructive pull test on both tabs.
            for k in range(pull.sample_size):
                value = self.draw.normal(pull, shift=0.0)
                self._measure(
                    c.unit, "tabweld", pull.code, value, at + (0.1 + 0.05 * k) * H, visit=visit
                )
            unit_status_set(
                unit=c.unit,
                status=UnitStatus.SCRAPPED,
                actor=self.actors.line,
                reason=f"destructive tab-weld pull sample, weld batch from cell {c.unit.serial}",
            )
            c.alive = False
            self.report.scrapped.append(c.unit.serial)

    def _hold_streak(self, cells: list[CellState]) -> None:
        """Hold exactly the cells that consumed the out-of-spec metres of the mother coil."""
        streak = self._streak
        affected: set[int] = set()
        for slit_id, s, e in Link.objects.filter(
            source=streak.mother, kind=LinkKind.SLIT, removed_at__isnull=True
        ).values_list("target_id", "start_m", "end_m"):
            a, b = streak.start_m - s, min(streak.end_m, e) - s
            if b <= 0:
                continue
            affected.update(
                Link.objects.filter(
                    source_id=slit_id,
                    kind=LinkKind.CONSUMED,
                    removed_at__isnull=True,
                    start_m__lt=b,
                    end_m__gt=max(a, 0.0),
                ).values_list("target_id", flat=True)
            )
        held = [c for c in cells if c.unit.pk in affected and c.alive]
        if not held:
            return
        char = self.h.char("coat-c", "cathode-areal-loading")
        at = self._clamp(max(c.wound_at for c in held) + 0.25 * H)
        hold = hold_place(
            units=[c.unit for c in held],
            reason=(
                f"Cathode areal loading {streak.value:g} mg/cm² above USL {char.usl:g} at "
                f"metre {streak.position_m:g} of coil {streak.mother.serial} (coating streak): "
                f"cells that consumed metres [{streak.start_m:g}, {streak.end_m:g}) held for MRB"
            ),
            source=HoldSource.SPC,
            source_reference=(
                f"{char.station.code}/{char.code} {streak.mother.serial} @ {streak.position_m:g} m"
            ),
            actor=self.actors.quality,
            at=at,
        )
        for c in held:
            c.alive = False
        self.report.holds.append(f"{hold.number}: {hold.reason}")

    # -- cell stations (called in route order) ---------------------------------------------

    def _alive(self, cells: list[CellState]) -> list[CellState]:
        return [c for c in cells if c.alive]

    def _pick_fault(self, cells: list[CellState], line_code: str) -> CellState | None:
        """The cell that gets an injected fault at this station, if any."""
        alive = self._alive(cells)
        if not alive:
            return None
        if self.faults and self.spec.code == line_code:
            return alive[self.rng.randrange(len(alive))]
        if self.fault_rate and self.rng.random() < self.fault_rate:
            return alive[self.rng.randrange(len(alive))]
        return None

    def _step_asm(self, cells: list[CellState]) -> None:
        start, dur = self._offset("asm")
        weld = self.h.char("asm", "terminal-weld-resistance")
        ins = self.h.char("asm", "insulation-resistance")
        for c in self._alive(cells):
            at = c.wound_at + start * H
            visit = self._visit(c.unit, "asm", at, dur, equipment=self.h.equipment[("asm", "ir-1")])
            self._measure(
                c.unit, "asm", weld.code, self.draw.normal(weld), at + 0.02 * H, visit=visit
            )
            value = self.draw.lognormal(ins, median=ins.nominal, s=0.35)
            self._measure(c.unit, "asm", ins.code, round(value), at + 0.04 * H, visit=visit)

    def _step_fill(self, cells: list[CellState]) -> None:
        start, dur = self._offset("fill")
        fill = self.h.char("fill", "fill-mass")
        nozzles = 8 if self.spec.code == PRISMATIC.code else 24
        bias = [self.rng.gauss(0.0, 0.4 * _sigma(fill)) for _ in range(nozzles)]
        outlier = self._pick_fault(cells, CYLINDRICAL.code)
        for i, c in enumerate(self._alive(cells)):
            at = c.wound_at + start * H
            nok = c is outlier
            value = (
                self.draw.out_of_spec(fill, above=False)
                if nok
                else self.draw.normal(fill, shift=bias[i % nozzles])
            )
            visit = self._visit(
                c.unit,
                "fill",
                at,
                dur,
                equipment=self.h.equipment[("fill", "cw-1")],
                result=VisitResult.NOK if nok else VisitResult.OK,
            )
            lot_consume(
                lot=self.electrolyte,
                consumer=c.unit,
                quantity=value,
                quantity_unit="g",
                linked_at=at,
                actor=self.actors.line,
            )
            if nok:  # held by the out-of-spec reaction; waits for re-weigh and MRB
                self._record_out_of_spec(
                    c.unit, "fill", fill.code, value, at + dur * H, visit=visit
                )
                c.alive = False
            else:
                self._measure(c.unit, "fill", fill.code, value, at + dur * H, visit=visit)

    def _step_seal(self, cells: list[CellState]) -> None:
        start, dur = self._offset("seal")
        leak = self.h.char("seal", "he-leak-rate")
        nok_cell = self._pick_fault(cells, PRISMATIC.code)
        for c in self._alive(cells):
            at = c.wound_at + start * H
            nok = c is nok_cell
            value = (
                float(f"{leak.usl * self.rng.uniform(8, 60):.3g}")
                if nok
                else self.draw.lognormal(leak, median=leak.nominal, s=0.6)
            )
            visit = self._visit(
                c.unit,
                "seal",
                at,
                dur,
                equipment=self.h.equipment[("seal", "leak-1")],
                result=VisitResult.NOK if nok else VisitResult.OK,
            )
            if not nok:
                self._measure(c.unit, "seal", leak.code, value, at + dur * H, visit=visit)
            if ("seal", "cell-height") in self.h.chars:
                height = self.h.char("seal", "cell-height")
                self._measure(
                    c.unit,
                    "seal",
                    height.code,
                    self.draw.normal(height),
                    at + 0.5 * dur * H,
                    visit=visit,
                )
            if nok:
                # Held by the out-of-spec reaction; MRB dispositions it to scrap.
                hold = self._record_out_of_spec(
                    c.unit, "seal", leak.code, value, at + dur * H, visit=visit
                )
                why = f"helium leak {value:.2e} mbar·L/s above {leak.usl:.0e} after sealing"
                hold_release(
                    hold=hold,
                    actor=self.actors.mrb,
                    reason=f"MRB disposition: scrap ({why}; a seal cannot be reworked)",
                )
                unit_status_set(
                    unit=c.unit,
                    status=UnitStatus.SCRAPPED,
                    actor=self.actors.mrb,
                    reason=f"scrapped by MRB after {hold.number}: {why}",
                )
                c.alive = False
                self.report.scrapped.append(c.unit.serial)

    def _step_form(self, cells: list[CellState]) -> None:
        start, dur = self._offset("form")
        cap = self.h.char("form", "formation-charge-capacity")
        cabinets = sorted(code for st, code in self.h.equipment if st == "form")
        for i, c in enumerate(self._alive(cells)):
            at = c.wound_at + start * H
            eq = self.h.equipment[("form", cabinets[i % len(cabinets)])]
            visit = self._visit(c.unit, "form", at, dur, equipment=eq)
            value = self.draw.normal(cap, shift=cap.nominal * c.capacity_shift, scale=0.8)
            self._measure(c.unit, "form", cap.code, value, at + dur * H, visit=visit, equipment=eq)

    def _step_aging(self, cells: list[CellState]) -> None:
        start, dur = self._offset("aging")
        k_value = self.h.char("aging", "k-value")
        ocv = self.h.char("aging", "ocv")
        for c in self._alive(cells):
            at = c.wound_at + start * H
            visit = self._visit(
                c.unit, "aging", at, dur, equipment=self.h.equipment[("aging", "ocv-1")]
            )
            k = self.draw.lognormal(k_value, median=k_value.nominal, s=0.3)
            self._measure(c.unit, "aging", k_value.code, k, at + dur * H, visit=visit)
            self._measure(
                c.unit, "aging", ocv.code, self.draw.normal(ocv), at + dur * H, visit=visit
            )

    def _step_grade(self, cells: list[CellState]) -> None:
        start, dur = self._offset("grade")
        cap = self.h.char("grade", "discharge-capacity")
        dcir = self.h.char("grade", "dcir")
        cabinets = sorted(code for st, code in self.h.equipment if st == "grade")
        # Fixture contact resistance differs a little per cabinet.
        bias = {code: self.rng.gauss(0.0, 0.3 * _sigma(dcir)) for code in cabinets}
        for i, c in enumerate(self._alive(cells)):
            at = c.wound_at + start * H
            code = cabinets[i % len(cabinets)]
            eq = self.h.equipment[("grade", code)]
            visit = self._visit(c.unit, "grade", at, dur, equipment=eq)
            value = self.draw.normal(cap, shift=cap.nominal * c.capacity_shift, scale=0.8)
            self._measure(c.unit, "grade", cap.code, value, at + dur * H, visit=visit, equipment=eq)
            self._measure(
                c.unit,
                "grade",
                dcir.code,
                self.draw.normal(dcir, shift=bias[code]),
                at + dur * H,
                visit=visit,
                equipment=eq,
            )
            c.graded_at = self._clamp(at + dur * H)

    # -- modules, packs, vehicles ----------------------------------------------------------

    def _free(self, kind: str, *, graded: bool = False):
        """Units of the line that are in process and not (or no longer) assembled anywhere."""
        assembled = Link.objects.filter(
            source=OuterRef("pk"), kind=LinkKind.ASSEMBLED, removed_at__isnull=True
        )
        qs = Unit.objects.filter(line=self.h.line, kind=kind, status=UnitStatus.IN_PROCESS)
        qs = qs.filter(~Exists(assembled))
        if graded:
            grade = self.h.stations["grade"]
            qs = qs.annotate(
                ready_at=Max(
                    "visits__ended_at",
                    filter=Q(visits__station=grade, visits__result=VisitResult.OK),
                )
            ).filter(ready_at__isnull=False)
        return list(qs.order_by("produced_at", "serial"))

    def _assemble(self) -> None:
        d, spec = self.design, self.spec
        cells = self._free(UnitKind.CELL, graded=True)
        rework = self.faults and spec.code == PRISMATIC.code
        n_modules = len(cells) // d.cells_per_module
        if rework and len(cells) - n_modules * d.cells_per_module < 1 and n_modules > 1:
            n_modules -= 1  # keep a spare cell for the rework
        spares = cells[n_modules * d.cells_per_module :]
        rework_module = self.rng.randrange(n_modules) if rework and n_modules and spares else None
        spread = self.h.char("mod", "cell-voltage-spread")
        eq = self.h.equipment[("mod", "mt-1")]
        mod_number = next_number(UnitKind.MODULE, f"{spec.module_prefix}-")
        for m in range(n_modules):
            members = cells[m * d.cells_per_module : (m + 1) * d.cells_per_module]
            at = self._clamp(max(c.ready_at for c in members) + 0.5 * H)
            module = unit_create(
                kind=UnitKind.MODULE,
                serial=f"{spec.module_prefix}-{mod_number + m:06d}",
                line=self.h.line,
                produced_at=at,
                actor=self.actors.line,
            )
            for slot, c in enumerate(members, start=1):
                unit_assemble(
                    part=c,
                    assembly=module,
                    slot=f"C{slot:02d}",
                    linked_at=at,
                    actor=self.actors.line,
                )
            self.report.modules.append(module.serial)
            test_at = at + 0.1 * H
            if m == rework_module:
                test_at = self._rework(module, members, spares.pop(0), test_at, spread)
            visit = self._visit(module, "mod", test_at, 0.1, equipment=eq)
            self._measure(
                module,
                "mod",
                spread.code,
                self.draw.normal(spread),
                test_at + 0.05 * H,
                visit=visit,
            )
        self._flush()
        self._build_packs()

    def _rework(
        self,
        module: Unit,
        members: Sequence[Unit],
        spare: Unit,
        at: datetime,
        spread: Characteristic,
    ) -> datetime:
        """A module fails its cell-voltage check at ``at``; one cell is replaced and held.
        Returns when the module is tested again."""
        eq = self.h.equipment[("mod", "mt-1")]
        slot = self.rng.randrange(len(members))
        removed = members[slot]
        first = self._visit(module, "mod", at, 0.05, equipment=eq, result=VisitResult.NOK)
        value = self.draw.out_of_spec(spread, above=True)
        module_hold = self._record_out_of_spec(
            module, "mod", spread.code, value, at + 0.05 * H, visit=first
        )
        # Kept short: the link history stores the rework reason in 100 characters.
        reason = (
            f"cell-voltage spread {value:g} mV above {spread.usl:g} mV; "
            f"cell in C{slot + 1:02d} low after welding"
        )
        hold_release(
            hold=module_hold,
            actor=self.actors.mrb,
            reason=f"MRB disposition: rework, replace the cell in slot C{slot + 1:02d} and "
            "re-test the module",
        )
        replaced_at = self._clamp(at + 0.1 * H)
        cell_replace(
            assembly=module,
            removed=removed,
            replacement=spare,
            reason=reason,
            actor=self.actors.line,
            at=replaced_at,
        )
        hold = hold_place(
            units=[removed],
            reason=(
                f"Removed from {module.serial} slot C{slot + 1:02d} at rework ({reason}); "
                "held for failure analysis (suspected soft short)"
            ),
            source=HoldSource.STATION,
            source_reference=f"{self.spec.code}/mod/{spread.code} {module.serial}",
            actor=self.actors.line,
            at=replaced_at,
        )
        self.report.reworks.append(
            f"{module.serial} C{slot + 1:02d}: {removed.serial} -> {spare.serial}"
        )
        self.report.holds.append(f"{hold.number}: {hold.reason}")
        return replaced_at + 0.1 * H

    def _build_packs(self) -> None:
        d, spec = self.design, self.spec
        modules = self._free(UnitKind.MODULE)
        n_packs = len(modules) // d.modules_per_pack
        pack_number = next_number(UnitKind.PACK, f"{spec.pack_prefix}-")
        for p in range(n_packs):
            members = modules[p * d.modules_per_pack : (p + 1) * d.modules_per_pack]
            at = self._clamp(max(m.produced_at for m in members) + 1.0 * H)
            pack = unit_create(
                kind=UnitKind.PACK,
                serial=f"{spec.pack_prefix}-{pack_number + p:06d}",
                line=self.h.line,
                produced_at=at,
                actor=self.actors.line,
            )
            for slot, m in enumerate(members, start=1):
                unit_assemble(
                    part=m,
                    assembly=pack,
                    slot=f"M{slot:02d}",
                    linked_at=at,
                    actor=self.actors.line,
                )
            self._visit(pack, "pack", at, 0.5, equipment=self.h.equipment[("pack", "nut-1")])
            self.report.packs.append(pack.serial)
            t_eol = self._clamp(at + 0.5 * H)
            visit = self._visit(
                pack, "eol", t_eol, 0.4, equipment=self.h.equipment[("eol", "eol-1")]
            )
            iso = self.h.char("eol", "pack-isolation-resistance")
            self._measure(
                pack,
                "eol",
                iso.code,
                round(self.draw.lognormal(iso, median=iso.nominal, s=0.3)),
                t_eol + 0.1 * H,
                visit=visit,
            )
            if ("eol", "pack-ocv") in self.h.chars:
                ocv = self.h.char("eol", "pack-ocv")
                self._measure(
                    pack,
                    "eol",
                    ocv.code,
                    self.draw.normal(ocv, scale=0.5),
                    t_eol + 0.2 * H,
                    visit=visit,
                )
            leak = self.h.char("eol", "coolant-leak-rate")
            self._measure(
                pack,
                "eol",
                leak.code,
                self.draw.normal(leak, scale=0.6),
                t_eol + 0.3 * H,
                visit=visit,
            )
            self._marry(pack, self._clamp(t_eol + 2.0 * H))

    def _marry(self, pack: Unit, at: datetime) -> None:
        programme = self.spec.vehicle
        vin = vin_make(programme, next_vin_sequence(programme.wmi))
        vehicle = unit_create(
            kind=UnitKind.VEHICLE,
            serial=vin,
            material=programme.name,
            produced_at=at,
            actor=self.actors.line,
            reason="vehicle body at marriage",
        )
        unit_assemble(
            part=pack, assembly=vehicle, slot="HV-BATTERY", linked_at=at, actor=self.actors.line
        )
        self._visit(pack, "marriage", at, 0.1, equipment=self.h.equipment[("marriage", "aga-1")])
        self.report.vehicles.append(vin)


# --- Entry points -------------------------------------------------------------------------


def _rng(seed: int, spec: LineSpec, purpose: str) -> random.Random:
    """One generator per line and purpose, keyed by where the line's numbering stands, so a
    fresh database with the same seed repeats exactly and a later run does not."""
    start = next_number(UnitKind.CELL, spec.cell_prefix)
    return random.Random(f"{seed}:{purpose}:{spec.code}:{start}")  # noqa: S311  simulation


def split_cells(n_cells: int) -> dict[str, int]:
    """Half of the cells on each line (the odd one on the cylindrical line)."""
    prismatic = n_cells // 2
    return {PRISMATIC.code: prismatic, CYLINDRICAL.code: n_cells - prismatic}


def simulate(*, n_cells: int, seed: int, end_at: datetime, faults: bool = True) -> list[RunReport]:
    """A production run: fresh supplier lots and electrode coils, ``n_cells`` cells split over
    both lines, modules, packs and VINs, with the injected faults. Call inside a transaction."""
    actors = Actors.load()
    reports = []
    received = end_at - timedelta(days=14)
    lots = LotSupply(actor=actors.line, received_at=received, fresh=True)
    for spec in (PRISMATIC, CYLINDRICAL):
        n = split_cells(n_cells)[spec.code]
        if n <= 0:
            continue
        run = LineRun(
            handle=LineHandle.load(spec),
            actors=actors,
            lots=lots,
            rng=_rng(seed, spec, "run"),
            end_at=end_at,
            fresh_coils=True,
            faults=faults,
        )
        reports.append(run.run(n))
    return reports


def simulate_batch(
    *, spec: LineSpec, seed: int, end_at: datetime, fault_rate: float = 0.04
) -> RunReport:
    """One module's worth of cells on ``spec``'s line, continuing the coils and lots in use
    (live mode). Occasionally (``fault_rate``) a station NOK happens."""
    actors = Actors.load()
    lots = LotSupply(actor=actors.line, received_at=end_at - timedelta(days=14), fresh=False)
    run = LineRun(
        handle=LineHandle.load(spec),
        actors=actors,
        lots=lots,
        rng=_rng(seed, spec, "live"),
        end_at=end_at,
        fresh_coils=False,
        faults=False,
        fault_rate=fault_rate,
    )
    return run.run(spec.design.cells_per_module)
