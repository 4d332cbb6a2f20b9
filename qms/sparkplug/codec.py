"""Sparkplug B topics and payloads: parse a topic, decode a payload into plain Python values,
and encode the payloads a host or an edge node publishes.

Pure functions over the generated protobuf module; nothing here touches the database or a
broker. Values follow the Sparkplug 3.0 data types: signed integers travel as two's
complement in the unsigned protobuf fields, DateTime as milliseconds since the epoch (UTC),
arrays as packed little-endian bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from . import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"
NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})
MESSAGE_TYPES = NODE_TYPES | DEVICE_TYPES
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"
#: Property keys that carry a metric's engineering unit (Sparkplug leaves the key open;
#: these are the ones edge platforms use).
UNIT_PROPERTY_KEYS = ("engUnit", "engUnits", "EngUnit", "units", "unit")

DataType = pb.DataType
NUMERIC_TYPES = frozenset(
    {
        pb.Int8,
        pb.Int16,
        pb.Int32,
        pb.Int64,
        pb.UInt8,
        pb.UInt16,
        pb.UInt32,
        pb.UInt64,
        pb.Float,
        pb.Double,
    }
)
TEXT_TYPES = frozenset({pb.String, pb.Text, pb.UUID})


class SparkplugError(Exception):
    """A topic or payload that is not valid Sparkplug B; ``reason`` says why in words."""

    def __init__(self, reason: str, *, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class Topic:
    """``spBv1.0/<group>/<message type>/<edge node>[/<device>]``."""

    group_id: str
    message_type: str
    edge_node_id: str
    device_id: str = ""

    @property
    def node_key(self) -> tuple[str, str]:
        return (self.group_id, self.edge_node_id)

    def __str__(self) -> str:
        return topic_for(self.group_id, self.message_type, self.edge_node_id, self.device_id)


def topic_for(group_id: str, message_type: str, edge_node_id: str, device_id: str = "") -> str:
    parts = [NAMESPACE, group_id, message_type, edge_node_id]
    if device_id:
        parts.append(device_id)
    return "/".join(parts)


def state_topic(host_id: str) -> str:
    """The retained topic of a host application's birth and death certificates."""
    return f"{NAMESPACE}/STATE/{host_id}"


def parse_topic(topic: str) -> Topic:
    """Split a Sparkplug topic; refuse anything that is not a node or device message."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != NAMESPACE:
        raise SparkplugError(f"{topic!r} is not a {NAMESPACE} topic.", field="topic")
    group_id, message_type, edge_node_id = parts[1], parts[2], parts[3]
    if message_type not in MESSAGE_TYPES:
        raise SparkplugError(f"Unknown Sparkplug message type {message_type!r}.", field="topic")
    if message_type in DEVICE_TYPES:
        if len(parts) != 5 or not parts[4]:
            raise SparkplugError(f"{message_type} needs a device id in {topic!r}.", field="topic")
        device_id = parts[4]
    else:
        if len(parts) != 4:
            raise SparkplugError(f"{message_type} takes no device id: {topic!r}.", field="topic")
        device_id = ""
    if not group_id or not edge_node_id:
        raise SparkplugError(f"Empty group or edge node id in {topic!r}.", field="topic")
    return Topic(group_id, message_type, edge_node_id, device_id)


@dataclass
class Metric:
    """One decoded metric. ``name`` is empty in DATA messages that use aliases only."""

    name: str
    alias: int | None
    datatype: int | None
    timestamp_ms: int | None
    value: object
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False
    properties: dict[str, object] = field(default_factory=dict)

    @property
    def eng_unit(self) -> str | None:
        for key in UNIT_PROPERTY_KEYS:
            value = self.properties.get(key)
            if isinstance(value, str) and value:
                return value
        return None


@dataclass
class Payload:
    timestamp_ms: int | None
    seq: int | None
    metrics: list[Metric]


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _float32(value: float) -> float:
    """The shortest decimal that reads back as the same 32-bit float: 410.3 sent as Float
    is 410.29998779296875 in a double, and a measurement should read 410.3."""
    if not math.isfinite(value):
        return value
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


_ARRAY_FORMATS = {
    pb.Int8Array: "b",
    pb.Int16Array: "h",
    pb.Int32Array: "i",
    pb.Int64Array: "q",
    pb.UInt8Array: "B",
    pb.UInt16Array: "H",
    pb.UInt32Array: "I",
    pb.UInt64Array: "Q",
    pb.FloatArray: "f",
    pb.DoubleArray: "d",
    pb.DateTimeArray: "q",
}


def _array(datatype: int, raw: bytes) -> list:
    fmt = _ARRAY_FORMATS[datatype]
    size = struct.calcsize(fmt)
    if len(raw) % size:
        raise SparkplugError(
            f"{DataType.Name(datatype)} of {len(raw)} bytes is not a whole number of elements."
        )
    values = list(struct.unpack(f"<{len(raw) // size}{fmt}", raw))
    if datatype == pb.FloatArray:
        values = [_float32(v) for v in values]
    return values


def _property_value(value: pb.Payload.PropertyValue) -> object:
    if value.is_null:
        return None
    kind = value.WhichOneof("value")
    if kind is None or kind == "extension_value":
        return None
    if kind == "propertyset_value":
        return _property_set(value.propertyset_value)
    if kind == "propertysets_value":
        return [_property_set(ps) for ps in value.propertysets_value.propertyset]
    raw = getattr(value, kind)
    if kind == "float_value":
        return _float32(raw)
    if kind == "int_value" and value.type in (pb.Int8, pb.Int16, pb.Int32):
        return _signed(raw, 32)
    if kind == "long_value" and value.type == pb.Int64:
        return _signed(raw, 64)
    return raw


def _property_set(props: pb.Payload.PropertySet) -> dict[str, object]:
    if len(props.keys) != len(props.values):
        raise SparkplugError(
            f"PropertySet has {len(props.keys)} keys but {len(props.values)} values."
        )
    return {k: _property_value(v) for k, v in zip(props.keys, props.values, strict=True)}


def metric_value(metric: pb.Payload.Metric, datatype: int | None) -> object:
    """The Python value of a metric, read by its datatype (from the metric or its birth)."""
    if metric.is_null:
        return None
    kind = metric.WhichOneof("value")
    if kind is None:
        return None
    raw = getattr(metric, kind)
    if kind == "int_value":
        if datatype == pb.Int8:
            return _signed(raw, 8)
        if datatype == pb.Int16:
            return _signed(raw, 16)
        if datatype == pb.Int32:
            return _signed(raw, 32)
        return raw
    if kind == "long_value":
        if datatype == pb.Int64:
            return _signed(raw, 64)
        if datatype == pb.DateTime:
            return ms_to_datetime(raw)
        return raw
    if kind == "float_value":
        return _float32(raw)
    if kind == "bytes_value":
        if datatype in _ARRAY_FORMATS:
            values = _array(datatype, raw)
            if datatype == pb.DateTimeArray:
                return [ms_to_datetime(v) for v in values]
            return values
        return bytes(raw)
    if kind in ("dataset_value", "template_value", "extension_value"):
        return raw  # kept as the protobuf object; not mapped to measurements
    return raw


def decode_payload(
    raw: bytes, *, birth_datatype: Callable[[int | None, str], int | None] | None = None
) -> Payload:
    """Decode a Sparkplug B payload. ``birth_datatype(alias, name)`` gives the datatype the
    birth certificate declared, for DATA metrics that omit it (as they may)."""
    message = pb.Payload()
    try:
        message.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise SparkplugError(f"Not a Sparkplug B protobuf payload: {exc}") from exc
    metrics = []
    for i, m in enumerate(message.metrics):
        alias = m.alias if m.HasField("alias") else None
        if m.HasField("datatype"):
            datatype = m.datatype
        else:
            datatype = birth_datatype(alias, m.name) if birth_datatype else None
        if datatype is not None and datatype not in DataType.values():
            raise SparkplugError(f"Unknown datatype {datatype}.", field=f"metrics[{i}].datatype")
        try:
            value = metric_value(m, datatype)
            properties = _property_set(m.properties) if m.HasField("properties") else {}
        except SparkplugError as exc:
            exc.field = exc.field or f"metrics[{i}]"
            raise
        metrics.append(
            Metric(
                name=m.name,
                alias=alias,
                datatype=datatype,
                timestamp_ms=m.timestamp if m.HasField("timestamp") else None,
                value=value,
                is_null=m.is_null,
                is_historical=m.is_historical,
                is_transient=m.is_transient,
                properties=properties,
            )
        )
    return Payload(
        timestamp_ms=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        metrics=metrics,
    )


# --- encoding (host commands and the edge-node simulator) ------------------------------


def _set_value(metric: pb.Payload.Metric, datatype: int, value: object) -> None:
    if value is None:
        metric.is_null = True
        return
    if datatype in (pb.Int8, pb.Int16, pb.Int32):
        metric.int_value = int(value) & 0xFFFFFFFF
    elif datatype in (pb.UInt8, pb.UInt16, pb.UInt32):
        metric.int_value = int(value)
    elif datatype == pb.Int64:
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype == pb.UInt64:
        metric.long_value = int(value)
    elif datatype == pb.DateTime:
        metric.long_value = datetime_to_ms(value) if isinstance(value, datetime) else int(value)
    elif datatype == pb.Float:
        metric.float_value = float(value)
    elif datatype == pb.Double:
        metric.double_value = float(value)
    elif datatype == pb.Boolean:
        metric.boolean_value = bool(value)
    elif datatype in TEXT_TYPES:
        metric.string_value = str(value)
    elif datatype in (pb.Bytes, pb.File):
        metric.bytes_value = bytes(value)
    elif datatype in _ARRAY_FORMATS:
        items = list(value)
        if datatype == pb.DateTimeArray:
            items = [datetime_to_ms(v) if isinstance(v, datetime) else int(v) for v in items]
        fmt = _ARRAY_FORMATS[datatype]
        metric.bytes_value = struct.pack(f"<{len(items)}{fmt}", *items)
    else:
        raise SparkplugError(f"Encoding {DataType.Name(datatype)} is not supported.")


@dataclass(frozen=True)
class MetricOut:
    """A metric to encode: births give name, alias and datatype; DATA gives the alias only."""

    value: object
    datatype: int
    name: str = ""
    alias: int | None = None
    timestamp_ms: int | None = None
    properties: dict[str, str] = field(default_factory=dict)
    with_datatype: bool = True


def encode_payload(metrics: list[MetricOut], *, timestamp_ms: int, seq: int | None = None) -> bytes:
    message = pb.Payload(timestamp=timestamp_ms)
    if seq is not None:
        message.seq = seq
    for m in metrics:
        out = message.metrics.add()
        if m.name:
            out.name = m.name
        if m.alias is not None:
            out.alias = m.alias
        if m.with_datatype:
            out.datatype = m.datatype
        out.timestamp = m.timestamp_ms if m.timestamp_ms is not None else timestamp_ms
        if m.properties:
            for key, text in m.properties.items():
                out.properties.keys.append(key)
                out.properties.values.add(type=pb.String, string_value=text)
        _set_value(out, m.datatype, m.value)
    return message.SerializeToString()


def rebirth_request(*, timestamp_ms: int) -> bytes:
    """The NCMD payload that asks an edge node for a new NBIRTH and its DBIRTHs (no seq)."""
    return encode_payload(
        [MetricOut(name=REBIRTH_METRIC, value=True, datatype=pb.Boolean)],
        timestamp_ms=timestamp_ms,
    )


def state_payload(*, online: bool, timestamp_ms: int) -> bytes:
    """A host application's STATE birth / death certificate (JSON, not protobuf)."""
    return (
        b'{"online": '
        + (b"true" if online else b"false")
        + b', "timestamp": '
        + str(int(timestamp_ms)).encode()
        + b"}"
    )
