"""Station simulator: an OPC UA server with an electrolyte fill station and a formation cycler
rack, for the demo and the tests (``manage.py opcua_sim``).

No OPC UA companion specification for battery cell production is published. The address
space borrows names from two that are: the OPC UA for Machinery basic building blocks
(OPC 40001-1: a ``Machines`` folder, ``Identification`` with Manufacturer / Model /
SerialNumber, ``MachineryItemState`` with its four states) and Machinery Result Transfer
(OPC 40001-101: a ``ResultReadyEventType`` whose fields follow ``ResultMetaDataType`` --
ResultId, PartId, ResultEvaluation (0 Undefined, 1 OK, 2 NotOK, 3 NotDecidable), start and
end time, recipe). Only the names are borrowed: the nodes live in the simulator's own
namespace (:data:`NAMESPACE_URI`), the Result structure is flattened into event fields (any
client can read them without loading structure definitions), and the measured values travel
as typed event fields next to the meta data. docs/ingest.md ("OPC UA") lists every node.

Each machine keeps its events in the server's event history (OPC UA Historical Access), so
a client that was away reads what it missed with a HistoryRead instead of losing it.

Values are drawn as a capable process makes them: normal, sigma = half the tolerance / 4
(Cpk 1.33), an offset per electrolyte lot (sigma / 2), and out-of-spec units on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import random
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from asyncua import Server, ua
from asyncua.common.methods import uamethod
from asyncua.common.node import Node
from asyncua.server.history import HistoryDict

logger = logging.getLogger("celltrace.opcua.sim")

NAMESPACE_URI = "urn:celltrace:station-sim"

#: ResultEvaluationEnum of Machinery Result Transfer.
EVALUATION_OK, EVALUATION_NOT_OK = 1, 2
#: MachineryItemState numbers (OPC 40001-1).
MACHINE_STATES = {0: "NotAvailable", 1: "OutOfService", 2: "NotExecuting", 3: "Executing"}
EXECUTING, NOT_EXECUTING = 3, 2
#: The simulator's own station states (finer than MachineryItemState).
RUNNING, STOPPED, IDLE = "running", "stopped", "idle"

T = TypeVar("T")


# --- Configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class FillProfile:
    """An electrolyte fill station with its check-weigher (weights before and after fill).

    Defaults: the demo's 21700 line (5.00 g +-1 %). ``dry_mass_g`` defaults to 12.8 x the
    fill mass (a 21700 cell weighs about 64 g before and 69 g after filling).
    """

    machine: str = "FILL-01"
    manufacturer: str = "Hirano Tecseed"
    model: str = "EF-24"
    serial_number: str = "L2-FL-0406"
    asset_id: str = ""
    program: str = "EF-21700-5G00"
    fill_nominal_g: float = 5.0
    fill_lsl_g: float = 4.95
    fill_usl_g: float = 5.05
    dry_mass_g: float | None = None
    lot_size: int = 500
    #: Every n-th unit is filled below the LSL (0: never).
    out_of_spec_every: int = 0

    @property
    def sigma_g(self) -> float:
        return (self.fill_usl_g - self.fill_lsl_g) / 8.0


@dataclass(frozen=True)
class RackProfile:
    """A formation cycler rack: channels that take filled cells through a first charge
    (rest, CC at 0.1C to 4.2 V, CV to C/100, rest). Time is compressed: a step lasts
    ``step_s`` seconds; the values follow the shape of the real step.

    Defaults: the demo's 21700 cell (5.0 Ah rated, first-charge capacity 5.70 Ah +-3 %).
    """

    machine: str = "FORM-RACK-01"
    manufacturer: str = "Digatron"
    model: str = "UBT 5-256"
    serial_number: str = "L2-FC-1001"
    asset_id: str = ""
    program: str = "FORM-0.1C-4V20"
    channels: int = 8
    rated_capacity_ah: float = 5.0
    capacity_nominal_ah: float = 5.70
    capacity_lsl_ah: float = 5.529
    capacity_usl_ah: float = 5.871
    temperature_c: float = 35.0
    step_s: float = 1.0
    tick_s: float = 0.2

    @property
    def sigma_ah(self) -> float:
        return (self.capacity_usl_ah - self.capacity_lsl_ah) / 8.0


@dataclass(frozen=True)
class SimConfig:
    """What to simulate and how fast. ``units`` = cells through the fill station (or through
    the rack when there is no fill station); None runs until stopped.

    Serials follow the line's scheme: ``serial_prefix`` + a 10-digit number. By default the
    number is tenths of seconds since 2020-09-13 at start-up, so a restarted simulator never
    reuses a serial at up to 10 units/s; ``first_serial`` chooses it.
    """

    host: str = "127.0.0.1"
    port: int = 4840
    fill: FillProfile | None = field(default_factory=FillProfile)
    rack: RackProfile | None = field(default_factory=RackProfile)
    rate_per_s: float = 1.0
    units: int | None = None
    serial_prefix: str = "C2"
    first_serial: int | None = None
    seed: int | None = None
    history_count: int = 10_000
    #: Start producing at once (False: only :meth:`StationSimulator.produce` makes units).
    autostart: bool = True
    #: Load the standard address space from a cache file (0.3 s instead of 3 s).
    aspace_cache: bool = True

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/celltrace/sim"


@dataclass(frozen=True)
class ProducedResult:
    """A result the simulator published (what a test compares with what was ingested)."""

    machine: str
    result_id: str
    serial: str
    evaluation: int
    values: dict[str, float]
    started_at: datetime
    ended_at: datetime
    sequence: int

    @property
    def ok(self) -> bool:
        return self.evaluation == EVALUATION_OK


@dataclass
class MachineStatus:
    state: str = IDLE
    stop_reason: str = ""
    stopped_at: datetime | None = None
    stop_requests: list[str] = field(default_factory=list)


# --- Helpers ------------------------------------------------------------------------------


def unece_unit_id(common_code: str) -> int:
    """UnitId of EUInformation from a UNECE common code (OPC 10000-8, 5.6.3)."""
    unit_id = 0
    for ch in common_code.upper():
        unit_id = (unit_id << 8) | ord(ch)
    return unit_id


#: Units the simulator reports, with their UNECE common codes.
UNITS = {"g": "GRM", "V": "VLT", "A": "AMP", "Ah": "AMH", "°C": "CEL", "s": "SEC"}


def eu_information(unit: str) -> ua.EUInformation:
    return ua.EUInformation(
        NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
        UnitId=unece_unit_id(UNITS[unit]),
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(unit),
    )


def _decimals(sigma: float) -> int:
    """Resolution of a gauge: about a tenth of the process sigma."""
    return max(0, -math.floor(math.log10(sigma)) + 1)


class _Clock:
    """Strictly increasing UTC timestamps (two results never share a source timestamp)."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        now = datetime.now(UTC)
        if now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now


class SerialSource:
    """Serials of the line's scheme: prefix + 10 digits."""

    def __init__(self, prefix: str, first: int | None) -> None:
        if first is None:
            first = int((time.time() - 1_600_000_000) * 10)
        self.prefix = prefix
        self.next_number = first

    def take(self) -> str:
        serial = f"{self.prefix}{self.next_number:010d}"
        self.next_number += 1
        return serial


def _aspace_cache_path() -> Path:
    directory = Path(tempfile.gettempdir()) / f"celltrace-opcua-{version('asyncua')}"
    directory.mkdir(exist_ok=True)
    return directory / "standard-address-space"


async def init_server(server: Server, *, cache: bool = True) -> None:
    """``server.init()``, with the standard address space (thousands of nodes, about 3 s to
    build) kept in a shelf between runs. asyncua looks for the shelf at the path itself,
    while Python's portable dbm writes ``<path>.dat`` / ``.dir``: an empty marker file at
    the path, written once the shelf is complete, tells it the shelf is there."""
    if not cache:
        await server.init()
        return
    shelf = _aspace_cache_path()
    if shelf.is_file():
        await server.init(shelf_file=shelf)
        return
    with open(shelf.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if shelf.is_file():  # another process built it meanwhile
                await server.init(shelf_file=shelf)
                return
            await server.init(shelf_file=shelf)  # builds, then writes the shelf
            shelf.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- Address space ------------------------------------------------------------------------


class MachineEventHistory(HistoryDict):
    """In-memory event history per machine object (OPC UA Historical Access, events).

    asyncua's own dictionary store files events under the node of the internal
    subscription that delivers them (the Server object); this one files them under the
    machine that fired them (the event's SourceNode), which is what a client reads.
    """

    async def save_event(self, event: Any) -> None:
        source = getattr(event, "SourceNode", None)
        if source in self._events_periods:
            event.emitting_node = source
            await super().save_event(event)


class _Machine:
    """A machine object under ``Machines`` with Identification, MachineryItemState, the
    simulator's State / StopReason, and the Stop(Reason) and Resume() methods."""

    def __init__(self, sim: StationSimulator, name: str) -> None:
        self.sim = sim
        self.name = name
        self.status = MachineStatus()
        self.obj: Node
        self.nodes: dict[str, Node] = {}
        self.sequence = 0

    @property
    def server(self) -> Server:
        return self.sim.server

    @property
    def idx(self) -> int:
        return self.sim.idx

    def nid(self, path: str) -> ua.NodeId:
        return ua.NodeId(f"{self.name}.{path}" if path else self.name, self.idx)

    def qn(self, name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, self.idx)

    async def add_var(
        self, parent: Node, path: str, name: str, value: Any, vt: ua.VariantType, unit: str = ""
    ) -> Node:
        node = await parent.add_variable(self.nid(path), self.qn(name), value, varianttype=vt)
        if unit:
            await node.add_property(
                self.nid(f"{path}.EngineeringUnits"),
                ua.QualifiedName("EngineeringUnits", 0),
                eu_information(unit),
                varianttype=ua.VariantType.ExtensionObject,
                datatype=ua.NodeId(ua.ObjectIds.EUInformation),
            )
        self.nodes[path] = node
        return node

    async def build(
        self, folder: Node, *, manufacturer: str, model: str, serial: str, asset_id: str
    ) -> None:
        self.obj = await folder.add_object(self.nid(""), self.qn(self.name))
        ident = await self.obj.add_object(self.nid("Identification"), self.qn("Identification"))
        lt, s = ua.VariantType.LocalizedText, ua.VariantType.String
        await self.add_var(
            ident, "Identification.Manufacturer", "Manufacturer", ua.LocalizedText(manufacturer), lt
        )
        await self.add_var(ident, "Identification.Model", "Model", ua.LocalizedText(model), lt)
        await self.add_var(ident, "Identification.SerialNumber", "SerialNumber", serial, s)
        await self.add_var(
            ident,
            "Identification.ProductInstanceUri",
            "ProductInstanceUri",
            f"urn:{manufacturer.lower().replace(' ', '-')}:{serial}",
            s,
        )
        await self.add_var(ident, "Identification.AssetId", "AssetId", asset_id, s)
        blocks = await self.obj.add_folder(
            self.nid("MachineryBuildingBlocks"), self.qn("MachineryBuildingBlocks")
        )
        state_machine = await blocks.add_object(
            self.nid("MachineryItemState"), self.qn("MachineryItemState")
        )
        current = await self.add_var(
            state_machine,
            "MachineryItemState.CurrentState",
            "CurrentState",
            ua.LocalizedText("NotExecuting"),
            lt,
        )
        self.nodes["MachineryItemState.CurrentState.Number"] = await current.add_property(
            self.nid("MachineryItemState.CurrentState.Number"),
            ua.QualifiedName("Number", 0),
            NOT_EXECUTING,
            varianttype=ua.VariantType.UInt32,
        )
        await self.add_var(self.obj, "State", "State", IDLE, s)
        await self.add_var(self.obj, "StopReason", "StopReason", "", s)
        reason_arg = ua.Argument(
            Name="Reason",
            DataType=ua.NodeId(ua.ObjectIds.String),
            ValueRank=-1,
            Description=ua.LocalizedText("Why the station must stop (shown to the operator)."),
        )
        self.nodes["Stop"] = await self.obj.add_method(
            self.nid("Stop"), self.qn("Stop"), self._stop_method, [reason_arg], []
        )
        self.nodes["Resume"] = await self.obj.add_method(
            self.nid("Resume"), self.qn("Resume"), self._resume_method, [], []
        )

    async def write(self, values: dict[str, tuple[Any, ua.VariantType]], at: datetime) -> None:
        for path, (value, vt) in values.items():
            await self.server.write_attribute_value(
                self.nodes[path].nodeid,
                ua.DataValue(ua.Variant(value, vt), SourceTimestamp=at, ServerTimestamp=at),
            )

    async def set_state(self, state: str, reason: str | None = None) -> None:
        self.status.state = state
        number = EXECUTING if state == RUNNING else NOT_EXECUTING
        values: dict[str, tuple[Any, ua.VariantType]] = {
            "State": (state, ua.VariantType.String),
            "MachineryItemState.CurrentState": (
                ua.LocalizedText(MACHINE_STATES[number]),
                ua.VariantType.LocalizedText,
            ),
            "MachineryItemState.CurrentState.Number": (number, ua.VariantType.UInt32),
        }
        if reason is not None:
            values["StopReason"] = (reason, ua.VariantType.String)
        await self.write(values, self.sim.clock.now())

    @uamethod
    async def _stop_method(self, parent: ua.NodeId, reason: str) -> None:
        await self.stop(reason or "")

    @uamethod
    async def _resume_method(self, parent: ua.NodeId) -> None:
        await self.resume()

    async def stop(self, reason: str) -> None:
        """Stop the machine (what the Stop method does): no new units until Resume."""
        logger.warning("%s stopped: %s", self.name, reason)
        self.status.stop_reason = reason
        self.status.stopped_at = datetime.now(UTC)
        self.status.stop_requests.append(reason)
        await self.set_state(STOPPED, reason)

    async def resume(self) -> None:
        logger.info("%s resumed", self.name)
        self.status.stop_reason = ""
        await self.set_state(RUNNING if self.sim.producing else IDLE, "")

    @property
    def stopped(self) -> bool:
        return self.status.state == STOPPED


class FillStation(_Machine):
    """Electrolyte fill with check-weighing: one cell at a time."""

    def __init__(self, sim: StationSimulator, profile: FillProfile) -> None:
        super().__init__(sim, profile.machine)
        self.profile = profile
        self.decimals = _decimals(profile.sigma_g)
        self.dry_mass_g = profile.dry_mass_g or profile.fill_nominal_g * 12.8
        self.lot_offset_g = 0.0
        self.forced_low = 0
        self.event = None

    async def build_all(self, folder: Node) -> None:
        p = self.profile
        await self.build(
            folder,
            manufacturer=p.manufacturer,
            model=p.model,
            serial=p.serial_number,
            asset_id=p.asset_id,
        )
        process = await self.obj.add_object(self.nid("Process"), self.qn("Process"))
        s, d, u = ua.VariantType.String, ua.VariantType.Double, ua.VariantType.UInt32
        await self.add_var(process, "Process.CurrentSerial", "CurrentSerial", "", s)
        await self.add_var(process, "Process.WeightBefore", "WeightBefore", 0.0, d, "g")
        await self.add_var(process, "Process.WeightAfter", "WeightAfter", 0.0, d, "g")
        await self.add_var(process, "Process.FillMass", "FillMass", 0.0, d, "g")
        await self.add_var(process, "Process.ResultId", "ResultId", "", s)
        await self.add_var(
            process, "Process.ResultEvaluation", "ResultEvaluation", 0, ua.VariantType.Int32
        )
        await self.add_var(process, "Process.Result", "Result", "", s)
        await self.add_var(process, "Process.SequenceNumber", "SequenceNumber", 0, u)
        self.event = await self.server.get_event_generator(self.sim.types["fill_result"], self.obj)

    def inject_out_of_spec(self, count: int = 1) -> None:
        """The next ``count`` units are filled below the LSL."""
        self.forced_low += count

    def _draw(self, number: int) -> tuple[float, float, float]:
        p, rng = self.profile, self.sim.rng
        if number % p.lot_size == 1 or p.lot_size == 1:
            self.lot_offset_g = rng.gauss(0.0, p.sigma_g / 2)
        low = self.forced_low > 0 or (p.out_of_spec_every and number % p.out_of_spec_every == 0)
        if low:
            self.forced_low = max(0, self.forced_low - 1)
            mass = p.fill_lsl_g - 3 * p.sigma_g - abs(rng.gauss(0.0, p.sigma_g))
        else:
            mass = rng.gauss(p.fill_nominal_g + self.lot_offset_g, p.sigma_g)
        before = round(rng.gauss(self.dry_mass_g, self.dry_mass_g * 0.002), self.decimals)
        after = round(before + mass, self.decimals)
        return before, after, round(after - before, self.decimals)

    async def produce_one(self) -> ProducedResult | None:
        if self.stopped:
            return None
        self.sequence += 1
        serial = self.sim.serials.take()
        started = self.sim.clock.now()
        before, after, mass = self._draw(self.sequence)
        p = self.profile
        evaluation = EVALUATION_OK if p.fill_lsl_g <= mass <= p.fill_usl_g else EVALUATION_NOT_OK
        result_id = f"{self.name}.{serial}"
        ended = self.sim.clock.now()
        s, d = ua.VariantType.String, ua.VariantType.Double
        await self.write({"Process.CurrentSerial": (serial, s)}, started)
        await self.write(
            {
                "Process.WeightBefore": (before, d),
                "Process.WeightAfter": (after, d),
                "Process.FillMass": (mass, d),
                "Process.ResultId": (result_id, s),
                "Process.ResultEvaluation": (evaluation, ua.VariantType.Int32),
            },
            ended,
        )
        # The result and the counter last: a data-change client takes them as the trigger.
        await self.write(
            {
                "Process.Result": ("OK" if evaluation == EVALUATION_OK else "NOK", s),
                "Process.SequenceNumber": (self.sequence, ua.VariantType.UInt32),
            },
            ended,
        )
        ev = self.event.event
        ev.ResultId, ev.PartId, ev.ResultEvaluation = result_id, serial, evaluation
        ev.SequenceNumber, ev.ExternalRecipeId = self.sequence, p.program
        ev.StartTime, ev.EndTime = started, ended
        ev.WeightBefore, ev.WeightAfter, ev.FillMass = before, after, mass
        verdict = "OK" if evaluation == EVALUATION_OK else "NOK"
        await self.event.trigger(time_attr=ended, message=f"{serial} filled {mass} g ({verdict})")
        result = ProducedResult(
            machine=self.name,
            result_id=result_id,
            serial=serial,
            evaluation=evaluation,
            values={"WeightBefore": before, "WeightAfter": after, "FillMass": mass},
            started_at=started,
            ended_at=ended,
            sequence=self.sequence,
        )
        self.sim.results.append(result)
        if evaluation == EVALUATION_OK and self.sim.rack is not None:
            self.sim.rack.queue.append(serial)
        return result


@dataclass
class _Channel:
    name: str
    serial: str = ""
    step: int = 0
    step_started: float = 0.0
    loaded_at: datetime | None = None
    target_ah: float = 0.0
    capacity_ah: float = 0.0
    voltage_v: float = 0.0
    current_a: float = 0.0
    temperature_c: float = 0.0
    max_temperature_c: float = 0.0
    state: str = IDLE


#: Steps of the first charge: (index, name, duration in step_s, end reason).
FORMATION_STEPS = (
    (1, "rest", 0.5, "time_limit"),
    (2, "cc_charge", 1.0, "voltage_limit"),
    (3, "cv_charge", 1.0, "current_limit"),
    (4, "rest", 0.5, "time_limit"),
)


class FormationRack(_Machine):
    """Formation cycler rack: channels CH01.. each forming one cell."""

    def __init__(self, sim: StationSimulator, profile: RackProfile) -> None:
        super().__init__(sim, profile.machine)
        self.profile = profile
        self.channels = [_Channel(f"CH{i:02d}") for i in range(1, profile.channels + 1)]
        self.queue: deque[str] = deque()
        self.decimals = _decimals(profile.sigma_ah)
        self.result_event = None
        self.step_event = None

    async def build_all(self, folder: Node) -> None:
        p = self.profile
        await self.build(
            folder,
            manufacturer=p.manufacturer,
            model=p.model,
            serial=p.serial_number,
            asset_id=p.asset_id,
        )
        channels = await self.obj.add_folder(self.nid("Channels"), self.qn("Channels"))
        s, d, u = ua.VariantType.String, ua.VariantType.Double, ua.VariantType.UInt32
        for ch in self.channels:
            obj = await channels.add_object(self.nid(f"Channels.{ch.name}"), self.qn(ch.name))
            base = f"Channels.{ch.name}"
            await self.add_var(obj, f"{base}.CellSerial", "CellSerial", "", s)
            await self.add_var(obj, f"{base}.StepIndex", "StepIndex", 0, u)
            await self.add_var(obj, f"{base}.Step", "Step", "", s)
            await self.add_var(obj, f"{base}.Voltage", "Voltage", 0.0, d, "V")
            await self.add_var(obj, f"{base}.Current", "Current", 0.0, d, "A")
            await self.add_var(obj, f"{base}.Capacity", "Capacity", 0.0, d, "Ah")
            await self.add_var(obj, f"{base}.Temperature", "Temperature", p.temperature_c, d, "°C")
            await self.add_var(obj, f"{base}.State", "State", IDLE, s)
        self.result_event = await self.server.get_event_generator(
            self.sim.types["formation_result"], self.obj
        )
        self.step_event = await self.server.get_event_generator(
            self.sim.types["step_complete"], self.obj
        )

    def _values(self, ch: _Channel, fraction: float) -> None:
        """Voltage, current, capacity and temperature of ``ch`` ``fraction`` into its step."""
        p, rng = self.profile, self.sim.rng
        i_cc = 0.1 * p.rated_capacity_ah
        x = min(max(fraction, 0.0), 1.0)
        name = FORMATION_STEPS[ch.step - 1][1]
        if name == "cc_charge":
            ch.capacity_ah = 0.85 * ch.target_ah * x
            ch.voltage_v = 4.2 - 1.2 * (1 - x) ** 1.5
            ch.current_a = i_cc
            ch.temperature_c = p.temperature_c + 1.5 * x
        elif name == "cv_charge":
            ch.capacity_ah = ch.target_ah * (0.85 + 0.15 * x)
            ch.voltage_v = 4.2
            ch.current_a = i_cc * math.exp(math.log(0.1) * x)
            ch.temperature_c = p.temperature_c + 1.5 * (1 - x)
        else:
            ch.current_a = 0.0
            ch.voltage_v = 0.4 if ch.step == 1 else 4.2 - 0.03 * x
            ch.temperature_c = p.temperature_c
        ch.temperature_c = round(ch.temperature_c + rng.gauss(0.0, 0.1), 1)
        ch.max_temperature_c = max(ch.max_temperature_c, ch.temperature_c)

    async def _write_channel(self, ch: _Channel, at: datetime) -> None:
        base = f"Channels.{ch.name}"
        d, s = ua.VariantType.Double, ua.VariantType.String
        step_name = FORMATION_STEPS[ch.step - 1][1] if ch.step else ""
        await self.write(
            {
                f"{base}.CellSerial": (ch.serial, s),
                f"{base}.StepIndex": (ch.step, ua.VariantType.UInt32),
                f"{base}.Step": (step_name, s),
                f"{base}.Voltage": (round(ch.voltage_v, 4), d),
                f"{base}.Current": (round(ch.current_a, 4), d),
                f"{base}.Capacity": (round(ch.capacity_ah, self.decimals), d),
                f"{base}.Temperature": (ch.temperature_c, d),
                f"{base}.State": (ch.state, s),
            },
            at,
        )

    def _load_next(self, ch: _Channel, now: float) -> bool:
        if self.queue:
            serial = self.queue.popleft()
        elif self.sim.fill is None and self.sim.may_start_unit():
            serial = self.sim.serials.take()
            self.sim.started_units += 1
        else:
            return False
        p = self.profile
        ch.serial, ch.step, ch.step_started = serial, 1, now
        ch.loaded_at = self.sim.clock.now()
        ch.target_ah = self.sim.rng.gauss(p.capacity_nominal_ah, p.sigma_ah)
        ch.capacity_ah, ch.max_temperature_c, ch.state = 0.0, 0.0, RUNNING
        return True

    async def tick(self, now: float) -> None:
        """Advance every channel; fire StepComplete and ResultReady events."""
        if self.stopped:
            return
        p = self.profile
        for ch in self.channels:
            if ch.state == IDLE and not self._load_next(ch, now):
                continue
            index, name, duration, end_reason = FORMATION_STEPS[ch.step - 1]
            fraction = (now - ch.step_started) / (duration * p.step_s)
            self._values(ch, fraction)
            at = self.sim.clock.now()
            await self._write_channel(ch, at)
            if fraction < 1.0:
                continue
            await self._step_complete(ch, index, name, end_reason, duration * p.step_s, at)
            if index == len(FORMATION_STEPS):
                await self._result(ch, at)
                ch.serial, ch.step, ch.state = "", 0, IDLE
                ch.current_a = 0.0
                await self._write_channel(ch, self.sim.clock.now())
            else:
                ch.step, ch.step_started = index + 1, now

    async def _step_complete(
        self, ch: _Channel, index: int, name: str, end_reason: str, duration_s: float, at
    ) -> None:
        ev = self.step_event.event
        ev.Channel, ev.PartId, ev.StepIndex, ev.StepName = ch.name, ch.serial, index, name
        ev.EndReason, ev.Duration = end_reason, round(duration_s, 3)
        ev.Voltage, ev.Current = round(ch.voltage_v, 4), round(ch.current_a, 4)
        ev.Capacity = round(ch.capacity_ah, self.decimals)
        ev.Temperature = ch.temperature_c
        await self.step_event.trigger(time_attr=at, message=f"{ch.name} {ch.serial} {name} done")

    async def _result(self, ch: _Channel, at: datetime) -> None:
        p = self.profile
        self.sequence += 1
        capacity = round(ch.target_ah, self.decimals)
        ok = p.capacity_lsl_ah <= capacity <= p.capacity_usl_ah
        evaluation = EVALUATION_OK if ok else EVALUATION_NOT_OK
        result_id = f"{self.name}.{ch.name}.{ch.serial}"
        ev = self.result_event.event
        ev.ResultId, ev.PartId, ev.ResultEvaluation = result_id, ch.serial, evaluation
        ev.SequenceNumber, ev.ExternalRecipeId = self.sequence, p.program
        ev.StartTime, ev.EndTime = ch.loaded_at, at
        ev.Channel, ev.ChargeCapacity = ch.name, capacity
        ev.EndVoltage, ev.MaxTemperature = round(ch.voltage_v, 4), ch.max_temperature_c
        await self.result_event.trigger(
            time_attr=at, message=f"{ch.name} {ch.serial} formed, {capacity} Ah"
        )
        self.sim.results.append(
            ProducedResult(
                machine=self.name,
                result_id=result_id,
                serial=ch.serial,
                evaluation=evaluation,
                values={"ChargeCapacity": capacity, "MaxTemperature": ch.max_temperature_c},
                started_at=ch.loaded_at or at,
                ended_at=at,
                sequence=self.sequence,
            )
        )

    @property
    def busy(self) -> bool:
        return bool(self.queue) or any(ch.state != IDLE for ch in self.channels)


# --- The server ---------------------------------------------------------------------------


class StationSimulator:
    """The OPC UA server with the configured machines. ``await start()``, then ``await
    run(stop)`` produces units until ``config.units`` are done or ``stop`` is set."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.server = Server()
        self.server.iserver.history_manager.set_storage(MachineEventHistory())
        self.idx = 0
        self.types: dict[str, ua.NodeId] = {}
        self.rng = random.Random(config.seed)  # noqa: S311  simulated plant data
        self.clock = _Clock()
        self.serials = SerialSource(config.serial_prefix, config.first_serial)
        self.results: list[ProducedResult] = []
        self.fill = FillStation(self, config.fill) if config.fill else None
        self.rack = FormationRack(self, config.rack) if config.rack else None
        self.started_units = 0
        self.producing = False
        self.finished = asyncio.Event()

    @property
    def endpoint(self) -> str:
        return self.config.endpoint

    @property
    def machines(self) -> list[_Machine]:
        return [m for m in (self.fill, self.rack) if m is not None]

    def may_start_unit(self) -> bool:
        return self.config.units is None or self.started_units < self.config.units

    async def _event_types(self) -> None:
        vt = ua.VariantType
        meta = [
            ("ResultId", vt.String),
            ("PartId", vt.String),
            ("ResultEvaluation", vt.Int32),
            ("SequenceNumber", vt.UInt32),
            ("ExternalRecipeId", vt.String),
            ("StartTime", vt.DateTime),
            ("EndTime", vt.DateTime),
        ]
        base = await self._event_type("ResultReadyEventType", ua.ObjectIds.BaseEventType, meta)
        self.types["result_ready"] = base.nodeid
        fill = await self._event_type(
            "FillResultReadyEventType",
            base.nodeid,
            [("WeightBefore", vt.Double), ("WeightAfter", vt.Double), ("FillMass", vt.Double)],
        )
        self.types["fill_result"] = fill.nodeid
        formation = await self._event_type(
            "FormationResultReadyEventType",
            base.nodeid,
            [
                ("Channel", vt.String),
                ("ChargeCapacity", vt.Double),
                ("EndVoltage", vt.Double),
                ("MaxTemperature", vt.Double),
            ],
        )
        self.types["formation_result"] = formation.nodeid
        step = await self._event_type(
            "StepCompleteEventType",
            ua.ObjectIds.BaseEventType,
            [
                ("Channel", vt.String),
                ("PartId", vt.String),
                ("StepIndex", vt.UInt32),
                ("StepName", vt.String),
                ("EndReason", vt.String),
                ("Duration", vt.Double),
                ("Voltage", vt.Double),
                ("Current", vt.Double),
                ("Capacity", vt.Double),
                ("Temperature", vt.Double),
            ],
        )
        self.types["step_complete"] = step.nodeid

    async def _event_type(self, name: str, base: Any, fields: list[tuple[str, Any]]) -> Node:
        parent = self.server.get_node(base if isinstance(base, ua.NodeId) else ua.NodeId(base))
        etype = await parent.add_object_type(
            ua.NodeId(name, self.idx), ua.QualifiedName(name, self.idx)
        )
        for fname, fvt in fields:
            await etype.add_property(
                ua.NodeId(f"{name}.{fname}", self.idx),
                ua.QualifiedName(fname, self.idx),
                ua.get_default_value(fvt),
                varianttype=fvt,
            )
        return etype

    async def start(self) -> None:
        await init_server(self.server, cache=self.config.aspace_cache)
        self.server.set_endpoint(self.endpoint)
        self.server.set_server_name("Celltrace station simulator")
        self.server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.idx = await self.server.register_namespace(NAMESPACE_URI)
        await self._event_types()
        machines = await self.server.nodes.objects.add_folder(
            ua.NodeId("Machines", self.idx), ua.QualifiedName("Machines", self.idx)
        )
        if self.fill is not None:
            await self.fill.build_all(machines)
        if self.rack is not None:
            await self.rack.build_all(machines)
        await self.server.start()
        for machine in self.machines:
            await self.server.historize_node_event(
                machine.obj, period=None, count=self.config.history_count
            )
        logger.info("OPC UA station simulator at %s", self.endpoint)

    async def stop(self) -> None:
        await self.server.stop()

    async def produce(self, count: int) -> list[ProducedResult]:
        """Fill ``count`` cells at once (tests; needs a fill station). A stopped station
        makes none."""
        if self.fill is None:
            raise RuntimeError("the simulator has no fill station")
        made = []
        for _ in range(count):
            result = await self.fill.produce_one()
            if result is None:
                break
            made.append(result)
        return made

    async def run(self, stop: asyncio.Event) -> None:
        """Produce at ``rate_per_s`` until the configured units are through or ``stop``."""
        self.producing = True
        for machine in self.machines:
            if not machine.stopped:
                await machine.set_state(RUNNING)
        period = 1.0 / self.config.rate_per_s
        tick = self.rack.profile.tick_s if self.rack else period
        next_unit = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if self.fill is not None and now >= next_unit and self.may_start_unit():
                    if await self.fill.produce_one() is not None:
                        self.started_units += 1
                    next_unit = max(next_unit + period, now)
                if self.rack is not None:
                    await self.rack.tick(now)
                if not self.may_start_unit() and not (self.rack and self.rack.busy):
                    break
                wait = min(tick, max(0.0, next_unit - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.01))
        finally:
            self.producing = False
            for machine in self.machines:
                if not machine.stopped:
                    await machine.set_state(IDLE)
            self.finished.set()
        logger.info("simulator done: %s results", len(self.results))


class SimulatorThread:
    """The simulator in a background thread with its own event loop (tests, embedded demo).

    ``start()`` returns once the server listens; ``call(fn)`` runs ``fn(sim)`` (a coroutine
    function) on the simulator's loop and returns its result; ``stop()`` shuts it down.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.sim: StationSimulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="opcua-sim", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._amain())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.sim = StationSimulator(self.config)
        await self.sim.start()
        self._ready.set()
        try:
            if self.config.autostart:
                await self.sim.run(self._stop)
            await self._stop.wait()
        finally:
            await self.sim.stop()

    def start(self, timeout: float = 15.0) -> StationSimulator:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the OPC UA simulator did not start")
        if self._error is not None:
            raise RuntimeError(f"the OPC UA simulator failed: {self._error!r}") from self._error
        if self.sim is None:
            raise RuntimeError("the OPC UA simulator did not start")
        return self.sim

    def call(self, fn: Callable[[StationSimulator], Awaitable[T]], timeout: float = 10.0) -> T:
        if self._loop is None or self.sim is None:
            raise RuntimeError("the OPC UA simulator is not running")
        future = asyncio.run_coroutine_threadsafe(fn(self.sim), self._loop)
        return future.result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def __enter__(self) -> StationSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
