"""The Sparkplug B host application: session state per edge node and the translation of
device data into ``process_result`` envelopes.

:class:`SparkplugHost` is pure: :meth:`SparkplugHost.handle` takes one received message
(topic, bytes) and returns a :class:`HostResult` with what to do — envelopes to ingest, dead
letters to record, commands to publish (rebirth requests) and edge-node events to keep.
:func:`deliver` then does the database part through :mod:`qms.ingest.services`. The MQTT
client (:mod:`qms.sparkplug.client`) only moves bytes between the broker and these two.

Rules kept here, from the Sparkplug 3.0 specification:

* an NBIRTH starts a session: its ``bdSeq`` metric identifies it, its ``seq`` is 0, and it
  replaces every metric definition (name, alias, datatype) of the edge node and its devices;
  a DBIRTH (re)defines one device. Aliases are unique across the whole edge node.
* every later message of the edge node (DBIRTH, NDATA, DDATA, DDEATH) carries ``seq`` one
  greater than the previous one, 255 wrapping to 0. A gap means a message was lost: the
  host asks for a rebirth (NCMD ``Node Control/Rebirth`` = true) and goes on.
* DATA without a birth (the host started after the edge node), with an alias or a metric
  name the birth did not define, cannot be decoded: the message is dead-lettered and a
  rebirth requested. Rebirth requests to one edge node are spaced by
  ``rebirth_interval_s`` until its new NBIRTH arrives.
* an NDEATH whose ``bdSeq`` matches the current session marks the edge node and all its
  devices offline; one with another ``bdSeq`` is a late will of an older session and is
  ignored. A DDEATH marks one device offline.

Sequence state is per edge node and messages must be handled in the order they arrived, so
one host handles a Sparkplug group (or a shard of its edge nodes); several hosts sharing
one subscription round-robin would each see gaps everywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from qms.ingest.envelope import build
from qms.ingest.services import Outcome, RawMessage, dead_letter_record, ingest_raw

from . import codec
from .choices import MetricRole
from .codec import Metric, SparkplugError, Topic
from .mapping import MappedMetric, MappingIndex

logger = logging.getLogger("celltrace.sparkplug")

TRANSPORT = "sparkplug"
KIND = "process_result"
#: Metric folders the specification reserves for control and properties: never quality data.
CONTROL_PREFIXES = ("Node Control/", "Device Control/", "Properties/")
RESULT_WORDS = {"ok": "ok", "pass": "ok", "good": "ok", "nok": "nok", "fail": "nok", "bad": "nok"}
_ID_UNSAFE = re.compile(r"[^\x21-\x7e]|%|:")


# --- what the host decides ---------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterOut:
    raw: bytes
    origin: str
    reason: str
    field: str | None = None
    message_id: str = ""
    kind: str = ""


@dataclass(frozen=True)
class CommandOut:
    """An MQTT publication the host must make (QoS 0, not retained, as Sparkplug says)."""

    topic: str
    payload: bytes


@dataclass(frozen=True)
class NodeEvent:
    """Something that changes an edge node's recorded state (:class:`SparkplugEdgeNode`)."""

    kind: str  # nbirth | dbirth | ndeath | ddeath | seq_gap | unknown_alias | rebirth
    group_id: str
    edge_node_id: str
    at: datetime
    device_id: str = ""
    bd_seq: int | None = None
    reason: str = ""
    metrics: tuple[dict, ...] = ()


@dataclass
class HostResult:
    """What the host decided for one message (or, extended, a batch of them)."""

    envelopes: list[RawMessage] = field(default_factory=list)
    dead_letters: list[DeadLetterOut] = field(default_factory=list)
    commands: list[CommandOut] = field(default_factory=list)
    events: list[NodeEvent] = field(default_factory=list)

    def extend(self, other: HostResult) -> None:
        self.envelopes += other.envelopes
        self.dead_letters += other.dead_letters
        self.commands += other.commands
        self.events += other.events

    def __bool__(self) -> bool:
        return bool(self.envelopes or self.dead_letters or self.commands or self.events)


# --- the birth cache -----------------------------------------------------------------------


@dataclass(frozen=True)
class MetricDef:
    """A metric as a birth certificate defined it."""

    name: str
    alias: int | None
    datatype: int | None
    device_id: str
    eng_unit: str | None = None


@dataclass
class DeviceState:
    device_id: str
    online: bool = True
    by_name: dict[str, MetricDef] = field(default_factory=dict)
    #: Last reported value per metric name: Sparkplug reports by exception, so a result or
    #: program that did not change since the last message is not sent again.
    last_values: dict[str, object] = field(default_factory=dict)


@dataclass
class NodeState:
    group_id: str
    edge_node_id: str
    online: bool = False
    bd_seq: int | None = None
    last_seq: int | None = None
    aliases: dict[int, MetricDef] = field(default_factory=dict)
    node: DeviceState = field(default_factory=lambda: DeviceState(""))
    devices: dict[str, DeviceState] = field(default_factory=dict)
    rebirth_requested_at: float | None = None

    def source(self, device_id: str) -> DeviceState | None:
        return self.node if not device_id else self.devices.get(device_id)

    def birth_datatype(self, alias: int | None, name: str, device_id: str) -> int | None:
        if alias is not None and alias in self.aliases:
            return self.aliases[alias].datatype
        src = self.source(device_id)
        if name and src is not None and name in src.by_name:
            return src.by_name[name].datatype
        return None


def message_id_for(
    topic: Topic, *, bd_seq: int | None, seq: int | None, timestamp_ms: int | None
) -> str:
    """``spb:<group>:<node>:<device>:<bdSeq>:<seq>:<timestamp>``: the same message read
    twice gives the same id; seq wraps every 256 messages, the timestamp and the session
    (bdSeq) tell those apart. Characters an id may not carry are %-escaped."""

    def part(value: object) -> str:
        text = "" if value is None else str(value)
        return _ID_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), text)

    mid = ":".join(
        [
            "spb",
            part(topic.group_id),
            part(topic.edge_node_id),
            part(topic.device_id),
            part(bd_seq),
            part(seq),
            part(timestamp_ms),
        ]
    )
    if len(mid) > 128:  # the envelope's limit; very long Sparkplug ids are legal
        digest = hashlib.sha256(mid.encode()).hexdigest()[:40]
        mid = f"spb:{digest}:{part(bd_seq)}:{part(seq)}:{part(timestamp_ms)}"
    return mid


class _Reject(Exception):
    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


class SparkplugHost:
    """Host application state for one Sparkplug group (see the module docstring)."""

    def __init__(
        self,
        *,
        group_id: str,
        host_id: str,
        mappings: MappingIndex,
        rebirth_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.group_id = group_id
        self.host_id = host_id
        self.mappings = mappings
        self.rebirth_interval_s = rebirth_interval_s
        self.clock = clock
        self.nodes: dict[str, NodeState] = {}

    # -- entry point --------------------------------------------------------------------

    def handle(self, topic: str, raw: bytes, received_at: datetime | None = None) -> HostResult:
        """Handle one message of the group subscription, in arrival order."""
        received_at = received_at or timezone.now()
        result = HostResult()
        try:
            t = codec.parse_topic(topic)
        except SparkplugError as exc:
            result.dead_letters.append(DeadLetterOut(raw, topic, exc.reason, exc.field))
            return result
        if t.group_id != self.group_id or t.message_type in ("NCMD", "DCMD"):
            return result  # another group, or commands (ours and other hosts')
        node = self.nodes.get(t.edge_node_id)
        device_id = t.device_id
        try:
            payload = codec.decode_payload(
                raw,
                birth_datatype=(
                    (lambda alias, name: node.birth_datatype(alias, name, device_id))
                    if node is not None and t.message_type not in ("NBIRTH", "DBIRTH")
                    else None
                ),
            )
        except SparkplugError as exc:
            result.dead_letters.append(DeadLetterOut(raw, topic, exc.reason, exc.field))
            return result
        handler = {
            "NBIRTH": self._nbirth,
            "DBIRTH": self._dbirth,
            "NDATA": self._data,
            "DDATA": self._data,
            "NDEATH": self._ndeath,
            "DDEATH": self._ddeath,
        }[t.message_type]
        handler(t, payload, raw, received_at, result)
        return result

    # -- session bookkeeping -------------------------------------------------------------

    def request_rebirth(
        self, t: Topic, reason: str, at: datetime, result: HostResult, *, force: bool = False
    ) -> None:
        """Add an NCMD ``Node Control/Rebirth`` for the edge node of ``t`` to ``result``,
        unless one went out less than ``rebirth_interval_s`` ago (or ``force``)."""
        node = self.nodes.setdefault(t.edge_node_id, NodeState(t.group_id, t.edge_node_id))
        now = self.clock()
        if (
            not force
            and node.rebirth_requested_at is not None
            and now - node.rebirth_requested_at < self.rebirth_interval_s
        ):
            return  # asked a moment ago; the NBIRTH is on its way
        node.rebirth_requested_at = now
        result.commands.append(
            CommandOut(
                codec.topic_for(t.group_id, "NCMD", t.edge_node_id),
                codec.rebirth_request(timestamp_ms=codec.datetime_to_ms(at)),
            )
        )
        result.events.append(
            NodeEvent("rebirth", t.group_id, t.edge_node_id, at, reason=reason[:200])
        )
        logger.info("rebirth requested from %s/%s: %s", t.group_id, t.edge_node_id, reason)

    def _check_seq(
        self, node: NodeState, t: Topic, seq: int | None, at: datetime, result: HostResult
    ) -> None:
        if seq is None or not 0 <= seq <= 255:
            reason = f"{t.message_type} with sequence number {seq!r} (must be 0..255)"
        elif node.last_seq is not None and seq != (node.last_seq + 1) % 256:
            reason = (
                f"sequence gap: expected {(node.last_seq + 1) % 256}, got {seq} on {t.message_type}"
            )
        else:
            node.last_seq = seq
            return
        if seq is not None and 0 <= seq <= 255:
            node.last_seq = seq  # resynchronise on what arrived
        result.events.append(
            NodeEvent("seq_gap", t.group_id, t.edge_node_id, at, t.device_id, reason=reason)
        )
        self.request_rebirth(t, reason, at, result)

    def _define(self, node: NodeState, src: DeviceState, metrics: list[Metric]) -> list[str]:
        """Register the metrics of a birth; return problems (duplicate aliases, no name)."""
        problems = []
        for m in metrics:
            if not m.name:
                problems.append(f"a metric without a name (alias {m.alias})")
                continue
            definition = MetricDef(m.name, m.alias, m.datatype, src.device_id, m.eng_unit)
            if m.alias is not None:
                taken = node.aliases.get(m.alias)
                if taken is not None:
                    problems.append(
                        f"alias {m.alias} of {m.name!r} is already used by {taken.name!r}"
                        + (f" of device {taken.device_id!r}" if taken.device_id else "")
                    )
                    continue
                node.aliases[m.alias] = definition
            src.by_name[m.name] = definition
            src.last_values[m.name] = m.value
        return problems

    def _birth_problems(
        self, t: Topic, raw: bytes, problems: list[str], result: HostResult
    ) -> None:
        if problems:
            result.dead_letters.append(
                DeadLetterOut(
                    raw,
                    str(t),
                    f"{t.message_type} is not valid Sparkplug: " + "; ".join(problems[:5]),
                    "metrics",
                )
            )

    @staticmethod
    def _metric_summary(src: DeviceState) -> tuple[dict, ...]:
        return tuple(
            {"device": d.device_id, "name": d.name, "alias": d.alias, "datatype": d.datatype}
            for d in src.by_name.values()
        )

    def _nbirth(self, t, payload, raw, at, result) -> None:
        bd_seq = next((m.value for m in payload.metrics if m.name == codec.BDSEQ_METRIC), None)
        node = NodeState(t.group_id, t.edge_node_id, online=True)
        node.bd_seq = int(bd_seq) if isinstance(bd_seq, int) else None
        node.last_seq = payload.seq if payload.seq is not None and payload.seq <= 255 else 0
        self.nodes[t.edge_node_id] = node
        problems = self._define(node, node.node, payload.metrics)
        if node.bd_seq is None:
            problems.append("no bdSeq metric")
        if payload.seq != 0:
            problems.append(f"seq is {payload.seq}, an NBIRTH has seq 0")
        self._birth_problems(t, raw, problems, result)
        result.events.append(
            NodeEvent(
                "nbirth",
                t.group_id,
                t.edge_node_id,
                at,
                bd_seq=node.bd_seq,
                metrics=self._metric_summary(node.node),
            )
        )

    def _dbirth(self, t, payload, raw, at, result) -> None:
        node = self.nodes.get(t.edge_node_id)
        if node is None or not node.online:
            self.request_rebirth(t, f"DBIRTH of {t.device_id} before an NBIRTH", at, result)
            return
        self._check_seq(node, t, payload.seq, at, result)
        old = node.devices.get(t.device_id)
        if old is not None:  # a device born again: its old aliases go
            for alias in [a for a, d in node.aliases.items() if d.device_id == t.device_id]:
                del node.aliases[alias]
        device = DeviceState(t.device_id)
        node.devices[t.device_id] = device
        self._birth_problems(t, raw, self._define(node, device, payload.metrics), result)
        result.events.append(
            NodeEvent(
                "dbirth",
                t.group_id,
                t.edge_node_id,
                at,
                t.device_id,
                metrics=self._metric_summary(device),
            )
        )

    def _ndeath(self, t, payload, raw, at, result) -> None:
        bd_seq = next((m.value for m in payload.metrics if m.name == codec.BDSEQ_METRIC), None)
        node = self.nodes.get(t.edge_node_id)
        if node is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            logger.info(
                "NDEATH of %s/%s with bdSeq %s ignored: the current session is bdSeq %s",
                t.group_id,
                t.edge_node_id,
                bd_seq,
                node.bd_seq,
            )
            return
        if node is not None:
            node.online = False
            node.last_seq = None
            for device in node.devices.values():
                device.online = False
        result.events.append(
            NodeEvent(
                "ndeath",
                t.group_id,
                t.edge_node_id,
                at,
                bd_seq=bd_seq if isinstance(bd_seq, int) else None,
            )
        )

    def _ddeath(self, t, payload, raw, at, result) -> None:
        node = self.nodes.get(t.edge_node_id)
        if node is None or not node.online:
            self.request_rebirth(t, f"DDEATH of {t.device_id} before an NBIRTH", at, result)
            return
        self._check_seq(node, t, payload.seq, at, result)
        device = node.devices.get(t.device_id)
        if device is not None:
            device.online = False
        result.events.append(NodeEvent("ddeath", t.group_id, t.edge_node_id, at, t.device_id))

    # -- data -----------------------------------------------------------------------------

    def _data(self, t, payload, raw, at, result) -> None:
        node = self.nodes.get(t.edge_node_id)
        mid = message_id_for(
            t,
            bd_seq=node.bd_seq if node else None,
            seq=payload.seq,
            timestamp_ms=payload.timestamp_ms,
        )

        def reject(reason: str, field: str | None = None, *, rebirth: bool = False) -> None:
            result.dead_letters.append(DeadLetterOut(raw, str(t), reason, field, mid, KIND))
            if rebirth:
                self.request_rebirth(t, reason, at, result)

        if node is None or not node.online:
            reject(
                f"{t.message_type} from edge node {t.edge_node_id!r} without a birth "
                "certificate in this host (rebirth requested).",
                rebirth=True,
            )
            return
        src = node.source(t.device_id)
        if src is None or not src.online:
            reject(
                f"DDATA from device {t.device_id!r} that has no DBIRTH in this session "
                "(rebirth requested).",
                rebirth=True,
            )
            return
        self._check_seq(node, t, payload.seq, at, result)

        resolved: list[tuple[MetricDef, Metric]] = []
        for i, m in enumerate(payload.metrics):
            if m.alias is not None:
                definition = node.aliases.get(m.alias)
                if definition is None or definition.device_id != t.device_id:
                    result.events.append(
                        NodeEvent(
                            "unknown_alias",
                            t.group_id,
                            t.edge_node_id,
                            at,
                            t.device_id,
                            reason=f"alias {m.alias}",
                        )
                    )
                    reject(
                        f"Alias {m.alias} is not in the birth certificate of "
                        f"{'/'.join(p for p in (t.edge_node_id, t.device_id) if p)} "
                        "(rebirth requested).",
                        f"metrics[{i}].alias",
                        rebirth=True,
                    )
                    return
            else:
                definition = src.by_name.get(m.name)
                if definition is None:
                    reject(
                        f"Metric {m.name!r} is not in the birth certificate (rebirth requested).",
                        f"metrics[{i}].name",
                        rebirth=True,
                    )
                    return
            resolved.append((definition, m))

        maps = self.mappings.for_source(t.edge_node_id, t.device_id)
        envelope = None
        try:
            envelope = self._record(t, node, src, resolved, maps, payload, mid, at)
        except _Reject as exc:
            reject(exc.reason, exc.field)
        finally:
            for definition, m in resolved:
                src.last_values[definition.name] = m.value
        if envelope is not None:
            result.envelopes.append(
                RawMessage(
                    payload=json.dumps(envelope, separators=(",", ":")).encode(),
                    transport=TRANSPORT,
                    origin=str(t),
                    received_at=at,
                )
            )

    def _record(
        self,
        t: Topic,
        node: NodeState,
        src: DeviceState,
        resolved: list[tuple[MetricDef, Metric]],
        maps: dict[str, MappedMetric],
        payload: codec.Payload,
        mid: str,
        at: datetime,
    ) -> dict | None:
        """The process_result envelope of a DATA message, or None when it carries no unit
        serial (a status change); raises :class:`_Reject` for what cannot be applied."""
        where = "/".join(p for p in (t.edge_node_id, t.device_id) if p)
        if not maps:
            raise _Reject(
                f"No metric of {t.group_id}/{where} is mapped to a station "
                "(Sparkplug metric mappings).",
                "metrics",
            )
        present = {d.name: (i, d, m) for i, (d, m) in enumerate(resolved)}
        unmapped = sorted(
            n for n in present if n not in maps and not n.startswith(CONTROL_PREFIXES)
        )
        serial_name = next(
            (n for n, mm in maps.items() if mm.role == MetricRole.SERIAL and n in present), None
        )
        measured = [n for n in present if n in maps and maps[n].role == MetricRole.MEASUREMENT]
        if serial_name is None:
            if measured:
                raise _Reject(
                    f"Measurements ({', '.join(sorted(measured))}) without the unit serial "
                    f"metric in the same {t.message_type}: the edge node must publish a "
                    "station result as one message.",
                    "metrics",
                )
            if unmapped:
                raise _Reject(self._unmapped_reason(t, where, unmapped), "metrics")
            return None
        if unmapped:
            raise _Reject(self._unmapped_reason(t, where, unmapped), "metrics")

        i, _, serial_metric = present[serial_name]
        serial_map = maps[serial_name]
        serial = serial_metric.value
        if not isinstance(serial, str) or not serial.strip():
            raise _Reject(
                f"The unit serial metric {serial_name!r} is empty or not text ({serial!r}).",
                f"metrics[{i}]",
            )
        result_value = None
        measurements = []
        extra: dict[str, object] = {}
        for name, mm in maps.items():
            if mm.station_id != serial_map.station_id and mm.role != MetricRole.IGNORE:
                raise _Reject(
                    f"Metric {name!r} is mapped to station {mm.station}, the unit serial to "
                    f"{serial_map.station}: one device reports for one station.",
                    "metrics",
                )
            if mm.role == MetricRole.MEASUREMENT and name in present:
                j, definition, m = present[name]
                if m.is_null:
                    continue  # explicitly not measured this cycle
                value = m.value
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise _Reject(
                        f"Measurement {name!r} is not a number ({value!r}).", f"metrics[{j}]"
                    )
                if isinstance(value, float) and not math.isfinite(value):
                    raise _Reject(
                        f"Measurement {name!r} is {value}, not a finite number.",
                        f"metrics[{j}]",
                    )
                if definition.eng_unit and definition.eng_unit != mm.unit:
                    raise _Reject(
                        f"Metric {name!r} is published in {definition.eng_unit!r} (birth "
                        f"engUnit) but mapped as {mm.unit!r}: values are not converted.",
                        f"metrics[{j}]",
                    )
                entry = {"characteristic": mm.characteristic, "value": value, "unit": mm.unit}
                if m.timestamp_ms is not None:
                    entry["measured_at"] = codec.ms_to_datetime(m.timestamp_ms).isoformat()
                measurements.append(entry)
            elif mm.role == MetricRole.RESULT:
                value = present[name][2].value if name in present else src.last_values.get(name)
                result_value = self._result(name, value)
            elif mm.role in (MetricRole.PROGRAM, MetricRole.OPERATOR):
                value = present[name][2].value if name in present else src.last_values.get(name)
                if isinstance(value, str) and value:
                    extra[mm.role] = value[:64]
        if result_value is None:
            raise _Reject(
                f"No result (OK/NOK) for unit {serial}: map a result metric of {where} and "
                "publish it at least in the birth certificate.",
                "metrics",
            )
        body: dict[str, object] = {"result": result_value, **extra}
        if serial_map.unit_kind:
            body["unit_kind"] = serial_map.unit_kind
        if measurements:
            body["measurements"] = measurements
        sent_ms = payload.timestamp_ms
        return build(
            kind=KIND,
            site=serial_map.site,
            line=serial_map.line,
            station=serial_map.station,
            payload=body,
            source=f"spb:{t.group_id}/{where}"[:120],
            message_id=mid,
            sent_at=codec.ms_to_datetime(sent_ms) if sent_ms is not None else at,
            unit=serial.strip(),
        )

    @staticmethod
    def _unmapped_reason(t: Topic, where: str, names: list[str]) -> str:
        shown = ", ".join(repr(n) for n in names[:10])
        return (
            f"Metrics of {t.group_id}/{where} not mapped: {shown}. Map them (role 'ignore' "
            "for metrics that are not quality data)."
        )

    @staticmethod
    def _result(name: str, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return "ok" if value else "nok"
        if isinstance(value, int) and value in (0, 1):
            return "ok" if value else "nok"
        if isinstance(value, str) and value.strip().lower() in RESULT_WORDS:
            return RESULT_WORDS[value.strip().lower()]
        raise _Reject(
            f"Result metric {name!r} is {value!r}: expected a Boolean, 0/1 or OK/NOK.",
            "metrics",
        )


# --- the database part ---------------------------------------------------------------------


def deliver(result: HostResult) -> list[Outcome]:
    """Apply what the host decided: envelopes through :func:`ingest_raw` (one transaction
    for the batch; duplicates by message id), dead letters, and the edge-node records.
    All of it in one transaction, so a batch retried after a database failure is neither
    half-applied nor counted twice. Raises only on infrastructure errors."""
    with transaction.atomic():
        outcomes = ingest_raw(result.envelopes) if result.envelopes else []
        for dl in result.dead_letters:
            dead_letter_record(
                raw=dl.raw,
                transport=TRANSPORT,
                origin=dl.origin,
                reason=dl.reason,
                field=dl.field,
                message_id=dl.message_id,
                kind=dl.kind,
            )
        if result.events:
            edge_node_events_apply(result.events)
    return outcomes


@transaction.atomic
def edge_node_events_apply(events: list[NodeEvent]) -> None:
    """Keep :class:`SparkplugEdgeNode` up to date with births, deaths and repairs."""
    from .models import SparkplugEdgeNode

    rows: dict[tuple[str, str], SparkplugEdgeNode] = {}
    for ev in events:
        key = (ev.group_id, ev.edge_node_id)
        row = rows.get(key)
        if row is None:
            row, _ = SparkplugEdgeNode.objects.select_for_update().get_or_create(
                group_id=ev.group_id, edge_node_id=ev.edge_node_id
            )
            rows[key] = row
        at_iso = ev.at.isoformat()
        if ev.kind == "nbirth":
            row.online = True
            row.bd_seq = ev.bd_seq
            row.last_birth_at = ev.at
            row.devices = {}
            row.birth_metrics = list(ev.metrics)
        elif ev.kind == "dbirth":
            row.devices[ev.device_id] = {
                "online": True,
                "birth_at": at_iso,
                "metrics": len(ev.metrics),
            }
            row.birth_metrics = [
                m for m in row.birth_metrics if m.get("device") != ev.device_id
            ] + list(ev.metrics)
        elif ev.kind == "ndeath":
            row.online = False
            row.last_death_at = ev.at
            for info in row.devices.values():
                info["online"] = False
        elif ev.kind == "ddeath":
            row.devices.setdefault(ev.device_id, {})["online"] = False
            row.devices[ev.device_id]["death_at"] = at_iso
        elif ev.kind == "seq_gap":
            row.seq_gaps += 1
        elif ev.kind == "unknown_alias":
            row.unknown_aliases += 1
        elif ev.kind == "rebirth":
            row.rebirth_requests += 1
            row.last_rebirth_request_at = ev.at
            row.last_rebirth_reason = ev.reason[:200]
    for row in rows.values():
        row.save()
