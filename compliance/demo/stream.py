"""The demo plant's production as a stream of ingest envelopes (``simulate --transport``).

:func:`build_stream` produces what the stations of both demo lines report during one
production run, as :mod:`qms.ingest` envelopes in the order the plant sends them:

1. electrode shop: supplier lots scanned in where they are first used, mix batches
   (``consumption`` of the lots, then solids and viscosity), mother coils (``consumption``
   of the mix batch and the foil, creating the coil with its length; areal loading every
   10 m, thickness every 25 m), slit coils (created at slitting with their length; burr
   every 250 m), Karl Fischer moisture of each slit coil when it is mounted on a winder;
2. per cell, in route order: winding (the cell is created; ``consumption`` of the cathode
   and anode segments ``[start_m, end_m)`` and the separator), tab welding (destructive
   pull sample at the start of each weld batch), assembly, electrolyte fill
   (``consumption`` of the electrolyte lot by mass, then the fill mass), sealing and leak
   test, formation, aging and grading;
3. modules (``assembly`` of graded cells into slots C01..), module test, packs (modules
   into M01..), end-of-line test, vehicle marriage (the pack into a VIN with a valid check
   digit).

Values are drawn as :mod:`compliance.demo.line` draws them (its :class:`Draw`, coil feeder
and VINs), around the control plan's nominal and inside the limits unless a plant fault is
injected (``faults=True``, the same faults as the direct simulator):

* cylindrical line: a coating streak out of spec on the cathode mother coil (the coater
  asks to hold the cells that consumed those metres: ``hold_request``) and an electrolyte
  fill below its limit (the out-of-spec reaction holds the cell);
* prismatic line: a helium leak NOK (held by the out-of-spec reaction), and a module that
  fails its cell-voltage check: one cell is replaced (``rework``) and held for failure
  analysis (``hold_request``).

The stream is built from the master data (codes, limits) and the serial counters read at
the start, and from its own state; it never reads back what ingest wrote, since over MQTT or
REST that happens later, in another process. Same seed and same database -> the same
envelopes, byte for byte. Message ids name the seed, line, station, the run (the line's
first cell number) and the station's sequence, e.g. ``sim-7-l2-cyl-fill-r1501-000042``: a
second run continues the numbering and never collides with the first.

What today's envelope kinds cannot say is left out rather than faked:

* the slit link mother coil -> slit coil: a cell's trace reaches the slit coil and the
  metres it was wound from, not the mother coil, its mix batch and supplier lots;
* status changes made by people: the destructive pull sample and the leak NOK are not
  marked scrapped, they just go no further;
* hold releases (MRB dispositions): the module that fails its cell-voltage check is
  reported NOK without the value, which would put the module on hold with no kind to release
  it before the rework;
* descriptions: material and supplier of lots, the vehicle programme of a VIN.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from genealogy.choices import UnitKind
from qms.ingest.envelope import build
from qms.models import Characteristic

from .line import (
    BURR_STEP_M,
    DOWNSTREAM_H,
    LOADING_STEP_M,
    PROGRAMS,
    ROUTES,
    THICKNESS_STEP_M,
    CoilFeeder,
    Draw,
    Lane,
    LineHandle,
    Segment,
    _sigma,
    next_number,
    next_vin_sequence,
    split_cells,
    vin_make,
)
from .plant import (
    ANODE_RECIPE,
    CATHODE_RECIPE,
    CYLINDRICAL,
    LINES,
    MATERIALS,
    PRISMATIC,
    SITE_CODE,
    LineSpec,
    VehicleProgramme,
)

H = timedelta(hours=1)

#: Where each supplier lot is scanned in (its first station visit creates it).
LOT_STATIONS = {
    **dict.fromkeys(CATHODE_RECIPE, "mix-c"),
    **dict.fromkeys(ANODE_RECIPE, "mix-a"),
    "al_foil": "coat-c",
    "cu_foil": "coat-a",
    "separator": "wind",
    "electrolyte": "fill",
}
#: A lot is scanned in this long before it is first consumed.
LOT_LEAD = timedelta(minutes=30)
#: Serial numbers of cells no line ever makes (a scanner misread), for the unknown-serial fault.
UNKNOWN_SERIAL_BASE = 9_900_000_000


# --- The stream ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamMessage:
    """One envelope of the stream, as its station sends it."""

    doc: dict

    @property
    def message_id(self) -> str:
        return self.doc["message_id"]

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def site(self) -> str:
        return self.doc["site"]

    @property
    def line(self) -> str:
        return self.doc["line"]

    @property
    def station(self) -> str:
        return self.doc["station"]

    @property
    def sent_at(self) -> datetime:
        return datetime.fromisoformat(self.doc["sent_at"])

    @property
    def topic(self) -> str:
        """The MQTT topic its station publishes it on."""
        return f"qms/{self.site}/{self.line}/{self.station}/{self.kind}"

    def encode(self) -> bytes:
        return json.dumps(self.doc, separators=(",", ":"), ensure_ascii=False).encode()

    @property
    def serials(self) -> frozenset[str]:
        """Every unit it names: two messages that share none do not depend on each other."""
        doc, payload = self.doc, self.doc["payload"]
        found = {doc.get("unit")} | set(doc.get("units") or ())
        found |= {payload.get(k) for k in ("assembly", "removed", "replacement")}
        found |= {s["coil"] for s in payload.get("segments") or ()}
        found |= {lot["lot"] for lot in payload.get("lots") or ()}
        found.discard(None)
        return frozenset(found)

    @property
    def measurements(self) -> int:
        return len(self.doc["payload"].get("measurements") or ())


@dataclass
class LineSummary:
    """What one line's part of the stream makes."""

    line: str
    cells: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    packs: list[str] = field(default_factory=list)
    vehicles: list[str] = field(default_factory=list)
    coils: list[str] = field(default_factory=list)
    holds: list[str] = field(default_factory=list)
    reworks: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        first_last = f" {self.cells[0]}..{self.cells[-1]}" if self.cells else ""
        return (
            f"{self.line}: {len(self.cells)} cells{first_last}, {len(self.modules)} modules, "
            f"{len(self.packs)} packs, {len(self.vehicles)} vehicles, {len(self.coils)} new "
            f"mother coils, {len(self.holds)} hold requests, {len(self.reworks)} reworks, "
            f"{len(self.stopped)} cells stopped on the way"
        )


@dataclass
class Stream:
    """A production run as envelopes, in the order they are sent (``sent_at`` ascending)."""

    seed: int
    end_at: datetime
    messages: list[StreamMessage]
    lines: list[LineSummary]

    def count_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(m.kind for m in self.messages).items()))

    @property
    def measurements(self) -> int:
        return sum(m.measurements for m in self.messages)


def build_stream(
    *, cells: int | Mapping[str, int], seed: int, end_at: datetime, faults: bool = True
) -> Stream:
    """The envelopes of one production run ending at ``end_at`` (aware, in the past).

    ``cells`` is the number of cells of the run (half on each line, as ``simulate`` splits
    them) or the number per line code. Reads the control plan and the serial counters once;
    writes nothing.
    """
    per_line = split_cells(cells) if isinstance(cells, int) else dict(cells)
    unknown = sorted(set(per_line) - {spec.code for spec in LINES})
    if unknown:
        raise ValueError(f"Unknown line(s) {', '.join(unknown)}.")
    emitter = _Emitter()
    lots = _Lots()
    vins = _Vins()
    summaries, runs = [], {}
    for spec in LINES:
        n = per_line.get(spec.code, 0)
        if n <= 0:
            continue
        handle = LineHandle.load(spec)
        first = next_number(UnitKind.CELL, spec.cell_prefix)
        runs[spec.code] = first
        rng = random.Random(f"{seed}:stream:{spec.code}:{first}")  # noqa: S311  simulation
        line_stream = _LineStream(
            handle=handle,
            emitter=emitter,
            lots=lots,
            vins=vins,
            rng=rng,
            end_at=end_at,
            faults=faults,
            first_number=first,
        )
        summaries.append(line_stream.run(n))
    lots.emit_receipts(emitter)
    return Stream(
        seed=seed, end_at=end_at, messages=emitter.finish(seed=seed, runs=runs), lines=summaries
    )


# --- Envelope faults (the delivery side chooses where) ------------------------------------

#: Ways a station can send a broken message, in the order a fault plan cycles through them.
MALFORMED_VARIANTS = ("truncated-json", "missing-result", "value-as-text")


def malformed_bytes(template: StreamMessage, variant: str, *, message_id: str) -> bytes:
    """A broken copy of a ``process_result`` with measurements, under its own id:
    cut off half-way (not JSON), without the required ``result``, or with a value sent as
    text. Ingest refuses each into the dead-letter store."""
    doc = json.loads(template.encode())
    doc["message_id"] = message_id
    if variant == "truncated-json":
        raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        return raw[: len(raw) // 2]
    if variant == "missing-result":
        del doc["payload"]["result"]
    elif variant == "value-as-text":
        first = doc["payload"]["measurements"][0]
        first["value"] = f"{first['value']}"
    else:
        raise ValueError(f"Unknown malformed variant {variant!r}.")
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def unknown_serial_message(
    template: StreamMessage, *, number: int, message_id: str
) -> StreamMessage:
    """A copy of a cell's ``process_result`` for a serial no cell carries (a misread), with
    no ``unit_kind``: ingest refuses it as an unknown unit."""
    doc = json.loads(template.encode())
    prefix = next(s.cell_prefix for s in LINES if s.code.lower() == template.line.lower())
    doc["message_id"] = message_id
    doc["unit"] = f"{prefix}{UNKNOWN_SERIAL_BASE + number:010d}"
    doc.pop("units", None)
    doc["payload"].pop("unit_kind", None)
    doc["payload"].pop("length_m", None)
    return StreamMessage(doc)


# --- Collecting and ordering --------------------------------------------------------------


@dataclass
class _Pending:
    at: datetime
    order: int
    line: str
    station: str
    kind: str
    payload: dict
    unit: str | None = None
    units: list[str] | None = None
    equipment: str | None = None


class _Emitter:
    """Collects the messages of every line; :meth:`finish` orders them by ``sent_at`` (ties
    in the order they were made, so a unit is created before it is used) and numbers them
    per station."""

    def __init__(self) -> None:
        self.pending: list[_Pending] = []

    def emit(self, line: str, at: datetime, station: str, kind: str, payload: dict, **kw) -> None:
        self.pending.append(_Pending(at, len(self.pending), line, station, kind, payload, **kw))

    def finish(self, *, seed: int, runs: Mapping[str, int]) -> list[StreamMessage]:
        sequence: Counter = Counter()
        out = []
        for p in sorted(self.pending, key=lambda p: (p.at, p.order)):
            line, station = p.line.lower(), p.station.lower()
            sequence[(line, station)] += 1
            doc = build(
                kind=p.kind,
                site=SITE_CODE.lower(),
                line=line,
                station=station,
                payload=p.payload,
                source=f"{p.line} {station} PLC (line simulator)",
                message_id=(
                    f"sim-{seed}-{line}-{station}-r{runs[p.line]}-{sequence[(line, station)]:06d}"
                ),
                sent_at=p.at,
                unit=p.unit,
                units=p.units,
                equipment=p.equipment,
            )
            out.append(StreamMessage(doc))
        return out


@dataclass
class _LotUse:
    serial: str
    at: datetime
    order: int
    line: str
    station: str


class _Lots:
    """Fresh supplier lots for the run, numbered after the existing ones; each is scanned
    in (``process_result`` with ``unit_kind: material_lot``) at the station and shortly
    before the time it is first consumed, on whichever line that is."""

    def __init__(self) -> None:
        self.first: dict[str, _LotUse] = {}
        self._order = 0

    def use(self, key: str, *, at: datetime, line: str) -> str:
        self._order += 1
        use = self.first.get(key)
        if use is None:
            prefix = f"{MATERIALS[key].lot_prefix}-"
            serial = f"{prefix}{next_number(UnitKind.MATERIAL_LOT, prefix):06d}"
            use = self.first[key] = _LotUse(serial, at, self._order, line, LOT_STATIONS[key])
        elif (at, self._order) < (use.at, use.order):
            self.first[key] = _LotUse(use.serial, at, self._order, line, use.station)
        return self.first[key].serial

    def emit_receipts(self, emitter: _Emitter) -> None:
        for key, use in sorted(self.first.items(), key=lambda kv: (kv[1].at, kv[1].order)):
            at = use.at - LOT_LEAD
            emitter.emit(
                use.line,
                at,
                use.station,
                "process_result",
                {
                    "unit_kind": UnitKind.MATERIAL_LOT,
                    "result": "ok",
                    "started_at": at.isoformat(),
                    "ended_at": at.isoformat(),
                    "program": f"INCOMING-{MATERIALS[key].lot_prefix}",
                    "operator": _operator(use.line, at),
                },
                unit=use.serial,
            )


class _Vins:
    """Vehicle serials per WMI, continuing after the existing ones (both demo lines share a
    WMI, so one counter serves both)."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def take(self, programme: VehicleProgramme) -> str:
        if programme.wmi not in self._next:
            self._next[programme.wmi] = next_vin_sequence(programme.wmi)
        sequence = self._next[programme.wmi]
        self._next[programme.wmi] += 1
        return vin_make(programme, sequence)


def _operator(line_code: str, at: datetime) -> str:
    """The badge of the shift's line operator (the same one the direct simulator names)."""
    shift = "ABC"[((at.hour - 6) % 24) // 8]
    return f"{line_code[:2]}-{shift}-{1040 + 'ABC'.index(shift) * 7}"


# --- One line ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Coil:
    """A coil as the stream knows it (the coil feeder reads ``serial`` and ``length_m``)."""

    serial: str
    length_m: float


@dataclass
class _Cell:
    number: int
    serial: str
    scan: str  # what the stations read: the GS1 element string on DataMatrix lines
    wound_at: datetime
    cathode: Segment | None = None
    anode: Segment | None = None
    alive: bool = True
    capacity_shift: float = 0.0
    ready_at: datetime | None = None


@dataclass(frozen=True)
class _Streak:
    mother: str
    start_m: float
    end_m: float
    value: float
    position_m: float


Measured = tuple[str, float, datetime] | tuple[str, float, datetime, float]


class _LineStream:
    """The messages of one line for ``n`` cells (the structure of :class:`line.LineRun`)."""

    def __init__(
        self,
        *,
        handle: LineHandle,
        emitter: _Emitter,
        lots: _Lots,
        vins: _Vins,
        rng: random.Random,
        end_at: datetime,
        faults: bool,
        first_number: int,
    ):
        self.h = handle
        self.spec: LineSpec = handle.spec
        self.design = handle.spec.design
        self.emitter = emitter
        self.lots = lots
        self.vins = vins
        self.rng = rng
        self.draw = Draw(rng)
        self.end_at = end_at
        self.faults = faults
        self.first_number = first_number
        self.route = ROUTES[handle.spec.code]
        self.summary = LineSummary(line=handle.spec.code)
        self._profiles: dict[str, list[tuple[float, float]]] = {}
        self._next_coil: dict[str, int] = {}
        self._next_mix: dict[str, int] = {}
        self._streak: _Streak | None = None
        self._planned_streak_m: float | None = None
        self._winding_at = end_at
        self.coil_time = end_at

    # -- helpers ---------------------------------------------------------------------------

    def _clamp(self, at: datetime) -> datetime:
        return min(at, self.end_at)

    def _offset(self, station: str) -> tuple[float, float]:
        return next((start, dur) for code, start, dur in self.route if code == station)

    def _char(self, station: str, code: str) -> Characteristic:
        return self.h.char(station, code)

    def _emit(self, at: datetime, station: str, kind: str, payload: dict, **kw) -> None:
        self.emitter.emit(self.spec.code, self._clamp(at), station, kind, payload, **kw)

    def _result(
        self,
        unit: str,
        station: str,
        started_at: datetime,
        hours: float,
        *,
        equipment: str | None = None,
        result: str = "ok",
        measurements: Sequence[Measured] = (),
        unit_kind: str | None = None,
        length_m: float | None = None,
    ) -> datetime:
        """A ``process_result``: the visit and its values. Sent when the visit is over and
        every value is known; returns that time."""
        start = self._clamp(started_at)
        end = self._clamp(start + hours * H)
        rows = []
        sent = end
        for code, value, at, *position in measurements:
            at = self._clamp(at)
            sent = max(sent, at)
            row = {
                "characteristic": code,
                "value": value,
                "unit": self._char(station, code).unit,
                "measured_at": at.isoformat(),
            }
            if position:
                row["position_m"] = position[0]
            rows.append(row)
        payload: dict = {}
        if unit_kind:
            payload["unit_kind"] = unit_kind
        if length_m is not None:
            payload["length_m"] = length_m
        payload |= {
            "result": result,
            "started_at": start.isoformat(),
            "ended_at": end.isoformat(),
        }
        if PROGRAMS.get(station):
            payload["program"] = PROGRAMS[station]
        payload["operator"] = _operator(self.spec.code, start)
        if rows:
            payload["measurements"] = rows
        self._emit(sent, station, "process_result", payload, unit=unit, equipment=equipment)
        return sent

    def _serial(self, kind: str, prefix: str, counters: dict[str, int]) -> str:
        if prefix not in counters:
            counters[prefix] = next_number(kind, prefix)
        number = counters[prefix]
        counters[prefix] += 1
        return f"{prefix}{number:06d}"

    # -- the run ---------------------------------------------------------------------------

    def run(self, n_cells: int) -> LineSummary:
        d, spec = self.design, self.spec
        takt = timedelta(seconds=d.takt_s)
        chain_h = max(start + dur for _, start, dur in self.route)
        t_start = self.end_at - (n_cells - 1) * takt - (chain_h + DOWNSTREAM_H) * H
        self.coil_time = t_start - 36 * H
        if self.faults and spec.code == CYLINDRICAL.code:
            # The streak goes where this run's winders pass: half-way along each lane.
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
        cells = self._cells(n_cells, t_start, takt)
        self._wind(cells, feeders)
        self._tab_weld(cells)
        if self._streak is not None:
            self._hold_streak(cells)
        for station, _start, _dur in self.route[2:]:
            getattr(self, f"_step_{station}")(cells)
        self._assemble(cells)
        return self.summary

    def _cells(self, n: int, t_start: datetime, takt: timedelta) -> list[_Cell]:
        spec = self.spec
        out = []
        chunk = spec.design.cells_per_module
        for offset in range(0, n, chunk):
            t0 = t_start + offset * takt
            lot = f"{spec.code[:2]}{t0:%y%m%d}{'ABC'[((t0.hour - 6) % 24) // 8]}"
            for i in range(offset, min(n, offset + chunk)):
                number = self.first_number + i
                serial = f"{spec.cell_prefix}{number:010d}"
                scan = (
                    f"(01){spec.gtin}(11){t0:%y%m%d}(10){lot}(21){serial}"
                    if spec.identification_method == "datamatrix"
                    else serial
                )
                out.append(_Cell(number, serial, scan, t_start + i * takt))
        self.summary.cells += [c.serial for c in out]
        return out

    # -- electrode shop --------------------------------------------------------------------

    def _make_mother(self, electrode: str) -> list[Lane]:
        """Supplier lots -> mix batch -> coated, calendered mother coil -> slit lanes."""
        spec, d, rng = self.spec, self.design, self.rng
        e = "C" if electrode == "cathode" else "A"
        s = e.lower()
        t_mix = self.coil_time - 4 * H
        t_coat = self.coil_time
        recipe = CATHODE_RECIPE if electrode == "cathode" else ANODE_RECIPE
        lane_mm = d.cathode_lane_mm if electrode == "cathode" else d.anode_lane_mm
        length = float(rng.randint(2500, 3500))
        loading = self._char(f"coat-{s}", f"{electrode}-areal-loading")
        width_m = d.lanes * lane_mm / 1000.0
        coated_kg = round(length * width_m * 2 * loading.nominal * 10 / 1000.0, 1)
        batch_kg = round(coated_kg * 1.04, 1)

        mix = self._serial(UnitKind.MIX_BATCH, f"{spec.mix_prefix}-{e}-", self._next_mix)
        self._emit(
            t_mix,
            f"mix-{s}",
            "consumption",
            {
                "unit_kind": UnitKind.MIX_BATCH,
                "lots": [
                    {
                        "lot": self.lots.use(key, at=t_mix, line=spec.code),
                        "quantity": round(batch_kg * fraction, 1),
                        "quantity_unit": "kg",
                    }
                    for key, fraction in recipe.items()
                ],
            },
            unit=mix,
            equipment=f"mixer-{s}1",
        )
        self._result(
            mix,
            f"mix-{s}",
            t_mix,
            2.5,
            equipment=f"mixer-{s}1",
            measurements=[
                (code, self.draw.normal(self._char(f"mix-{s}", code)), t_mix + 2.5 * H)
                for code in (f"{electrode}-slurry-solids", f"{electrode}-slurry-viscosity")
            ],
        )

        mother = self._serial(UnitKind.COIL, f"{spec.coil_prefix}-{e}-", self._next_coil)
        self.summary.coils.append(mother)
        foil = "al_foil" if electrode == "cathode" else "cu_foil"
        self._emit(
            t_coat,
            f"coat-{s}",
            "consumption",
            {
                "unit_kind": UnitKind.COIL,
                "length_m": length,
                "lots": [
                    {"lot": mix, "quantity": coated_kg, "quantity_unit": "kg"},
                    {
                        "lot": self.lots.use(foil, at=t_coat, line=spec.code),
                        "quantity": length,
                        "quantity_unit": "m",
                    },
                ],
            },
            unit=mother,
            equipment=f"coater-{s}1",
        )
        coat_h = length / 60.0 / 60.0  # 60 m/min
        streak_at = None
        if electrode == "cathode":  # only the first cathode coil of the run carries it
            streak_at, self._planned_streak_m = self._planned_streak_m, None
        profile = self._loading_profile(mother, loading, length, streak_at)
        self._profiles[mother] = profile
        self._result(
            mother,
            f"coat-{s}",
            t_coat,
            coat_h,
            equipment=f"coater-{s}1",
            measurements=[
                (loading.code, value, t_coat + (pos / length) * coat_h * H, pos)
                for pos, value in profile
            ],
        )

        t_cal = t_coat + 6 * H
        thickness = self._char(f"cal-{s}", f"{electrode}-thickness")
        rows: list[Measured] = []
        drift = 0.0
        for k in range(int(length // THICKNESS_STEP_M)):
            pos = THICKNESS_STEP_M / 2 + k * THICKNESS_STEP_M
            drift = 0.95 * drift + rng.gauss(0.0, 0.15 * _sigma(thickness))
            value = self.draw.normal(thickness, shift=drift, scale=0.7)
            rows.append((thickness.code, value, t_cal + (pos / 80.0 / 60.0) * H, pos))
        self._result(
            mother,
            f"cal-{s}",
            t_cal,
            length / 80.0 / 60.0,
            equipment=f"calender-{s}1",
            measurements=rows,
        )

        t_slit = t_coat + 12 * H
        burr = self._char(f"slit-{s}", f"{electrode}-burr")
        lanes = []
        for i in range(d.lanes):
            slit = _Coil(f"{mother}-{'ABCDEFGHJKL'[i]}", length)
            rows = []
            for k in range(int(length // BURR_STEP_M)):
                pos = BURR_STEP_M / 2 + k * BURR_STEP_M
                value = self.draw.lognormal(burr, median=burr.nominal, s=0.25)
                rows.append((burr.code, value, t_slit + (pos / 150.0 / 60.0) * H, pos))
            self._result(
                slit.serial,
                f"slit-{s}",
                t_slit,
                length / 150.0 / 60.0,
                equipment=f"slitter-{s}1",
                measurements=rows,
                unit_kind=UnitKind.SLIT_COIL,
                length_m=length,
            )
            # Lane and CoilFeeder read only serial and length_m of the coils they are given.
            lanes.append(Lane(slit, _Coil(mother, length), 0.0))  # type: ignore[arg-type]
        return lanes

    def _loading_profile(
        self, mother: str, char: Characteristic, length: float, streak_at: float | None
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
                half = LOADING_STEP_M / 2
                self._streak = _Streak(mother, pos - half, pos + half, value, pos)
            elif streak_at is not None and abs(pos - streak_at) == LOADING_STEP_M:
                value = self.draw.normal(char, shift=2.5 * sigma, scale=0.3)
            else:
                value = self.draw.normal(char, shift=shift, scale=0.6)
            out.append((pos, value))
        return out

    def _loading_at(self, seg: Segment) -> float:
        """Relative deviation of the areal loading where the segment was cut."""
        profile = self._profiles.get(seg.lane.mother.serial) or []
        if not profile:
            return 0.0
        k = min(int(seg.mother_mid_m // LOADING_STEP_M), len(profile) - 1)
        nominal = self._char("coat-c", "cathode-areal-loading").nominal
        return profile[k][1] / nominal - 1.0

    def _on_mount(self, lane: Lane) -> None:
        """Karl Fischer moisture of a slit coil when it is mounted, before the cell that
        needs it is wound."""
        electrode = "cathode" if lane.slit.serial.split("-")[1] == "C" else "anode"
        char = self._char("wind", f"{electrode}-moisture")
        value = float(round(self.draw.lognormal(char, median=char.nominal, s=0.2)))
        at = self._winding_at - 0.5 * H
        self._result(
            lane.slit.serial,
            "wind",
            at,
            0.25,
            equipment="kf-1",
            measurements=[(char.code, value, at + 0.25 * H)],
        )

    # -- cell stations ---------------------------------------------------------------------

    def _alive(self, cells: list[_Cell]) -> list[_Cell]:
        return [c for c in cells if c.alive]

    def _stop(self, cell: _Cell, why: str) -> None:
        cell.alive = False
        self.summary.stopped.append(f"{cell.serial} ({why})")

    def _pick_fault(self, cells: list[_Cell], line_code: str) -> _Cell | None:
        alive = self._alive(cells)
        if alive and self.faults and self.spec.code == line_code:
            return alive[self.rng.randrange(len(alive))]
        return None

    def _wind(self, cells: list[_Cell], feeders: dict[str, CoilFeeder]) -> None:
        d = self.design
        overhang = self._char("wind", "overhang")
        dur = self._offset("wind")[1]
        winder_bias = [self.rng.gauss(0.0, 0.4 * _sigma(overhang)) for _ in range(d.winders)]
        for i, c in enumerate(cells):
            w = i % d.winders
            self._winding_at = c.wound_at
            c.cathode = feeders["cathode"].take(w, d.cathode_m_per_cell)
            c.anode = feeders["anode"].take(w, d.anode_m_per_cell)
            value = self.draw.normal(overhang, shift=winder_bias[w])
            end = c.wound_at + dur * H
            sent = self._result(
                c.scan,
                "wind",
                c.wound_at,
                dur,
                equipment=f"winder-{w + 1}",
                measurements=[(overhang.code, value, end)],
                unit_kind=UnitKind.CELL,
            )
            # unit_kind here too: delivered out of order, the consumption may come first.
            self._emit(
                sent,
                "wind",
                "consumption",
                {
                    "unit_kind": UnitKind.CELL,
                    "segments": [
                        {"coil": seg.lane.slit.serial, "start_m": seg.start_m, "end_m": seg.end_m}
                        for seg in (c.cathode, c.anode)
                    ],
                    "lots": [
                        {
                            "lot": self.lots.use("separator", at=sent, line=self.spec.code),
                            "quantity": d.separator_m_per_cell,
                            "quantity_unit": "m",
                        }
                    ],
                },
                unit=c.scan,
                equipment=f"winder-{w + 1}",
            )
            # Capacity follows the cathode loading where the jelly roll was cut.
            c.capacity_shift = 0.9 * self._loading_at(c.cathode)

    def _tab_weld(self, cells: list[_Cell]) -> None:
        start, dur = self._offset("tabweld")
        pull = self._char("tabweld", "tab-pull-force")
        for c in cells:
            at = c.wound_at + start * H
            rows: list[Measured] = []
            sample = c.number % self.design.pull_sample_every == 1
            if sample:  # first cell of each weld batch: destructive pull test on both tabs
                rows = [
                    (pull.code, self.draw.normal(pull), at + (0.1 + 0.05 * k) * H)
                    for k in range(pull.sample_size)
                ]
            self._result(c.scan, "tabweld", at, dur, equipment="usw-1", measurements=rows)
            if sample:
                self._stop(c, "destructive tab-weld pull sample")

    def _hold_streak(self, cells: list[_Cell]) -> None:
        """The coater asks to hold exactly the cells wound from the out-of-spec metres
        (slit lanes run the mother coil's full length, so their metres are the mother's)."""
        streak = self._streak
        held = [
            c
            for c in self._alive(cells)
            if c.cathode.lane.mother.serial == streak.mother
            and c.cathode.start_m < streak.end_m
            and c.cathode.end_m > streak.start_m
        ]
        if not held:
            return
        char = self._char("coat-c", "cathode-areal-loading")
        at = max(c.wound_at for c in held) + 0.25 * H
        reason = (
            f"Cathode areal loading {streak.value:g} mg/cm² above USL {char.usl:g} at metre "
            f"{streak.position_m:g} of coil {streak.mother} (coating streak): cells that "
            f"consumed metres [{streak.start_m:g}, {streak.end_m:g}) held for MRB"
        )
        self._emit(
            at,
            "coat-c",
            "hold_request",
            {
                "reason": reason,
                "reference": f"{char.code} {streak.mother} @ {streak.position_m:g} m",
            },
            units=[c.scan for c in held],
            equipment="bw-c1",
        )
        self.summary.holds.append(reason)
        for c in held:
            self._stop(c, f"held: coating streak on {streak.mother}")

    def _step_asm(self, cells: list[_Cell]) -> None:
        start, dur = self._offset("asm")
        weld = self._char("asm", "terminal-weld-resistance")
        ins = self._char("asm", "insulation-resistance")
        for c in self._alive(cells):
            at = c.wound_at + start * H
            resistance = self.draw.normal(weld)
            insulation = round(self.draw.lognormal(ins, median=ins.nominal, s=0.35))
            self._result(
                c.scan,
                "asm",
                at,
                dur,
                equipment="ir-1",
                measurements=[
                    (weld.code, resistance, at + 0.02 * H),
                    (ins.code, insulation, at + 0.04 * H),
                ],
            )

    def _step_fill(self, cells: list[_Cell]) -> None:
        start, dur = self._offset("fill")
        fill = self._char("fill", "fill-mass")
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
            # The electrolyte first: an out-of-spec mass puts the cell on hold.
            electrolyte = self.lots.use("electrolyte", at=at, line=self.spec.code)
            self._emit(
                at,
                "fill",
                "consumption",
                {"lots": [{"lot": electrolyte, "quantity": value, "quantity_unit": "g"}]},
                unit=c.scan,
                equipment="filler-1",
            )
            self._result(
                c.scan,
                "fill",
                at,
                dur,
                equipment="cw-1",
                result="nok" if nok else "ok",
                measurements=[(fill.code, value, at + dur * H)],
            )
            if nok:
                self._stop(c, f"fill mass {value:g} g below the limit, held")

    def _step_seal(self, cells: list[_Cell]) -> None:
        start, dur = self._offset("seal")
        leak = self._char("seal", "he-leak-rate")
        height = self.h.chars.get(("seal", "cell-height"))
        nok_cell = self._pick_fault(cells, PRISMATIC.code)
        for c in self._alive(cells):
            at = c.wound_at + start * H
            nok = c is nok_cell
            value = (
                float(f"{leak.usl * self.rng.uniform(8, 60):.3g}")
                if nok
                else self.draw.lognormal(leak, median=leak.nominal, s=0.6)
            )
            rows: list[Measured] = [(leak.code, value, at + dur * H)]
            if height is not None:
                rows.append((height.code, self.draw.normal(height), at + 0.5 * dur * H))
            self._result(
                c.scan,
                "seal",
                at,
                dur,
                equipment="leak-1",
                result="nok" if nok else "ok",
                measurements=rows,
            )
            if nok:
                self._stop(c, f"helium leak {value:.2e} mbar·L/s, held")

    def _step_form(self, cells: list[_Cell]) -> None:
        start, dur = self._offset("form")
        cap = self._char("form", "formation-charge-capacity")
        cabinets = sorted(code for st, code in self.h.equipment if st == "form")
        for i, c in enumerate(self._alive(cells)):
            at = c.wound_at + start * H
            value = self.draw.normal(cap, shift=cap.nominal * c.capacity_shift, scale=0.8)
            self._result(
                c.scan,
                "form",
                at,
                dur,
                equipment=cabinets[i % len(cabinets)],
                measurements=[(cap.code, value, at + dur * H)],
            )

    def _step_aging(self, cells: list[_Cell]) -> None:
        start, dur = self._offset("aging")
        k_value = self._char("aging", "k-value")
        ocv = self._char("aging", "ocv")
        for c in self._alive(cells):
            at = c.wound_at + start * H
            k = self.draw.lognormal(k_value, median=k_value.nominal, s=0.3)
            self._result(
                c.scan,
                "aging",
                at,
                dur,
                equipment="ocv-1",
                measurements=[
                    (k_value.code, k, at + dur * H),
                    (ocv.code, self.draw.normal(ocv), at + dur * H),
                ],
            )

    def _step_grade(self, cells: list[_Cell]) -> None:
        start, dur = self._offset("grade")
        cap = self._char("grade", "discharge-capacity")
        dcir = self._char("grade", "dcir")
        cabinets = sorted(code for st, code in self.h.equipment if st == "grade")
        # Fixture contact resistance differs a little per cabinet.
        bias = {code: self.rng.gauss(0.0, 0.3 * _sigma(dcir)) for code in cabinets}
        for i, c in enumerate(self._alive(cells)):
            at = c.wound_at + start * H
            code = cabinets[i % len(cabinets)]
            capacity = self.draw.normal(cap, shift=cap.nominal * c.capacity_shift, scale=0.8)
            resistance = self.draw.normal(dcir, shift=bias[code])
            end = at + dur * H
            self._result(
                c.scan,
                "grade",
                at,
                dur,
                equipment=code,
                measurements=[(cap.code, capacity, end), (dcir.code, resistance, end)],
            )
            c.ready_at = self._clamp(end)

    # -- modules, packs, vehicles ----------------------------------------------------------

    def _assemble(self, cells: list[_Cell]) -> None:
        d, spec = self.design, self.spec
        ready = [c for c in cells if c.alive and c.ready_at is not None]
        rework = self.faults and spec.code == PRISMATIC.code
        n_modules = len(ready) // d.cells_per_module
        if rework and len(ready) - n_modules * d.cells_per_module < 1 and n_modules > 1:
            n_modules -= 1  # keep a spare cell for the rework
        spares = ready[n_modules * d.cells_per_module :]
        rework_module = self.rng.randrange(n_modules) if rework and n_modules and spares else None
        spread = self._char("mod", "cell-voltage-spread")
        prefix = f"{spec.module_prefix}-"
        first = next_number(UnitKind.MODULE, prefix)
        modules: list[tuple[str, datetime]] = []
        for m in range(n_modules):
            members = ready[m * d.cells_per_module : (m + 1) * d.cells_per_module]
            at = self._clamp(max(c.ready_at for c in members) + 0.5 * H)
            module = f"{prefix}{first + m:06d}"
            for slot, c in enumerate(members, start=1):
                self._emit(
                    at,
                    "mod",
                    "assembly",
                    {"assembly": module, "assembly_kind": "module", "slot": f"C{slot:02d}"},
                    unit=c.scan,
                )
            test_at = at + 0.1 * H
            if m == rework_module:
                test_at = self._rework(module, members, spares.pop(0), test_at, spread)
            self._result(
                module,
                "mod",
                test_at,
                0.1,
                equipment="mt-1",
                measurements=[(spread.code, self.draw.normal(spread), test_at + 0.05 * H)],
            )
            self.summary.modules.append(module)
            modules.append((module, at))
        self._build_packs(modules)

    def _rework(
        self,
        module: str,
        members: Sequence[_Cell],
        spare: _Cell,
        at: datetime,
        spread: Characteristic,
    ) -> datetime:
        """The module fails its cell-voltage check at ``at``: reported NOK (without the
        value, see the module docstring), one cell replaced and held for failure analysis.
        Returns when the module is tested again."""
        slot = self.rng.randrange(len(members))
        removed = members[slot]
        value = self.draw.out_of_spec(spread, above=True)
        self._result(module, "mod", at, 0.05, equipment="mt-1", result="nok")
        reason = (
            f"cell-voltage spread {value:g} mV above {spread.usl:g} mV; "
            f"cell in C{slot + 1:02d} low after welding"
        )
        replaced_at = self._clamp(at + 0.1 * H)
        self._emit(
            replaced_at,
            "mod",
            "rework",
            {"removed": removed.scan, "replacement": spare.scan, "reason": reason},
            unit=module,
        )
        hold_reason = (
            f"Removed from {module} slot C{slot + 1:02d} at rework ({reason}); "
            "held for failure analysis (suspected soft short)"
        )
        self._emit(
            replaced_at,
            "mod",
            "hold_request",
            {"reason": hold_reason, "reference": f"{module} C{slot + 1:02d}"},
            unit=removed.scan,
            equipment="mt-1",
        )
        self.summary.reworks.append(f"{module} C{slot + 1:02d}: {removed.serial} -> {spare.serial}")
        self.summary.holds.append(hold_reason)
        return replaced_at + 0.1 * H

    def _build_packs(self, modules: list[tuple[str, datetime]]) -> None:
        d, spec = self.design, self.spec
        prefix = f"{spec.pack_prefix}-"
        first = next_number(UnitKind.PACK, prefix)
        iso = self._char("eol", "pack-isolation-resistance")
        ocv = self.h.chars.get(("eol", "pack-ocv"))
        leak = self._char("eol", "coolant-leak-rate")
        for p in range(len(modules) // d.modules_per_pack):
            members = modules[p * d.modules_per_pack : (p + 1) * d.modules_per_pack]
            at = self._clamp(max(made for _, made in members) + 1.0 * H)
            pack = f"{prefix}{first + p:06d}"
            for slot, (module, _made) in enumerate(members, start=1):
                self._emit(
                    at,
                    "pack",
                    "assembly",
                    {"assembly": pack, "assembly_kind": "pack", "slot": f"M{slot:02d}"},
                    unit=module,
                    equipment="nut-1",
                )
            self._result(pack, "pack", at, 0.5, equipment="nut-1")
            self.summary.packs.append(pack)
            t_eol = self._clamp(at + 0.5 * H)
            rows: list[Measured] = [
                (
                    iso.code,
                    round(self.draw.lognormal(iso, median=iso.nominal, s=0.3)),
                    t_eol + 0.1 * H,
                )
            ]
            if ocv is not None:
                rows.append((ocv.code, self.draw.normal(ocv, scale=0.5), t_eol + 0.2 * H))
            rows.append((leak.code, self.draw.normal(leak, scale=0.6), t_eol + 0.3 * H))
            self._result(pack, "eol", t_eol, 0.4, equipment="eol-1", measurements=rows)
            t_marry = self._clamp(t_eol + 2.0 * H)
            vin = self.vins.take(spec.vehicle)
            self._emit(
                t_marry,
                "marriage",
                "assembly",
                {"assembly": vin, "assembly_kind": "vehicle", "slot": "HV-BATTERY"},
                unit=pack,
                equipment="aga-1",
            )
            self._result(pack, "marriage", t_marry, 0.1, equipment="aga-1")
            self.summary.vehicles.append(vin)
