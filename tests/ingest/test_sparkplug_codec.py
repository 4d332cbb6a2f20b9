"""Sparkplug B topics and payloads: the generated protobuf module, the data types of the
3.0 specification, and the host's own payloads (STATE, rebirth request)."""

import json
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf import runtime_version

from qms.ingest.envelope import _schema
from qms.sparkplug import codec
from qms.sparkplug import sparkplug_b_pb2 as pb
from qms.sparkplug.choices import UnitKind
from qms.sparkplug.codec import MetricOut, SparkplugError, Topic


def test_generated_module_is_not_newer_than_the_runtime():
    source = Path(pb.__file__).read_text()
    line = next(x for x in source.splitlines() if x.startswith("# Protobuf Python Version:"))
    generated = tuple(int(p) for p in line.split(":")[1].strip().split("."))
    runtime = (runtime_version.OSS_MAJOR, runtime_version.OSS_MINOR, runtime_version.OSS_PATCH)
    assert generated <= runtime
    assert pb.DESCRIPTOR.package == "org.eclipse.tahu.protobuf"


def test_data_type_enum_is_the_specification_table():
    names = {v: pb.DataType.Name(v) for v in pb.DataType.values()}
    assert len(names) == 35
    assert (names[0], names[1], names[4], names[8], names[9], names[10]) == (
        "Unknown",
        "Int8",
        "Int64",
        "UInt64",
        "Float",
        "Double",
    )
    assert (names[11], names[12], names[13], names[16], names[19], names[21]) == (
        "Boolean",
        "String",
        "DateTime",
        "DataSet",
        "Template",
        "PropertySetList",
    )
    assert (names[22], names[33], names[34]) == ("Int8Array", "StringArray", "DateTimeArray")


def test_metric_field_numbers_follow_the_specification():
    fields = {f.name: f.number for f in pb.Payload.Metric.DESCRIPTOR.fields}
    assert fields == {
        "name": 1,
        "alias": 2,
        "timestamp": 3,
        "datatype": 4,
        "is_historical": 5,
        "is_transient": 6,
        "is_null": 7,
        "metadata": 8,
        "properties": 9,
        "int_value": 10,
        "long_value": 11,
        "float_value": 12,
        "double_value": 13,
        "boolean_value": 14,
        "string_value": 15,
        "bytes_value": 16,
        "dataset_value": 17,
        "template_value": 18,
        "extension_value": 19,
    }
    payload = {f.name: f.number for f in pb.Payload.DESCRIPTOR.fields}
    assert payload == {"timestamp": 1, "metrics": 2, "seq": 3, "uuid": 4, "body": 5}


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (pb.Int8, -23),
        (pb.Int16, -30_000),
        (pb.Int32, -2_000_000_000),
        (pb.Int64, -9_000_000_000_000),
        (pb.UInt8, 250),
        (pb.UInt32, 4_000_000_000),
        (pb.UInt64, 18_000_000_000_000_000_000),
        (pb.Double, 410.3),
        (pb.Float, 3.41),
        (pb.Boolean, False),
        (pb.String, "P12640000001"),
        (pb.Text, "Fill nozzle 3 drip detected"),
        (pb.DateTime, datetime(2026, 3, 2, 6, 14, 55, 120000, tzinfo=UTC)),
        (pb.Int16Array, [-1, 2, 300]),
        (pb.FloatArray, [3.41, 3.42]),
        (pb.DoubleArray, [158.2, 158.4]),
        (pb.DateTimeArray, [datetime(2026, 3, 2, 6, 0, tzinfo=UTC)]),
    ],
)
def test_values_round_trip_by_datatype(datatype, value):
    raw = codec.encode_payload(
        [MetricOut(name="m", alias=7, value=value, datatype=datatype)],
        timestamp_ms=1_772_431_200_000,
        seq=4,
    )
    decoded = codec.decode_payload(raw)
    assert decoded.seq == 4
    assert decoded.timestamp_ms == 1_772_431_200_000
    (metric,) = decoded.metrics
    assert (metric.name, metric.alias, metric.datatype) == ("m", 7, datatype)
    assert metric.value == value


def test_signed_integers_travel_as_twos_complement():
    raw = codec.encode_payload(
        [MetricOut(name="t", value=-23, datatype=pb.Int8)], timestamp_ms=1, seq=0
    )
    message = pb.Payload.FromString(raw)
    assert message.metrics[0].int_value == 4_294_967_273  # -23 as uint32


def test_float_reads_as_the_decimal_that_was_sent():
    # 410.3 as a 32-bit float is 410.29998779296875; the measurement is 410.3.
    raw = codec.encode_payload(
        [MetricOut(name="Fill/Mass", value=410.3, datatype=pb.Float)], timestamp_ms=1, seq=1
    )
    assert pb.Payload.FromString(raw).metrics[0].float_value == 410.29998779296875
    assert codec.decode_payload(raw).metrics[0].value == 410.3


def test_data_metrics_take_the_datatype_of_their_birth():
    raw = codec.encode_payload(
        [MetricOut(alias=12, value=-5, datatype=pb.Int16, with_datatype=False)],
        timestamp_ms=1,
        seq=9,
    )
    unresolved = codec.decode_payload(raw).metrics[0]
    resolved = codec.decode_payload(raw, birth_datatype=lambda alias, name: pb.Int16).metrics[0]
    assert (unresolved.datatype, unresolved.value) == (None, 4_294_967_291)
    assert (resolved.datatype, resolved.value) == (pb.Int16, -5)


def test_is_null_and_engineering_unit_property():
    raw = codec.encode_payload(
        [
            MetricOut(name="Fill/Mass", value=None, datatype=pb.Double),
            MetricOut(
                name="Leak/Rate",
                value=2.1e-6,
                datatype=pb.Double,
                properties={"engUnit": "mbar·l/s"},
            ),
        ],
        timestamp_ms=1,
        seq=0,
    )
    null, leak = codec.decode_payload(raw).metrics
    assert (null.is_null, null.value) == (True, None)
    assert leak.eng_unit == "mbar·l/s"


def test_truncated_bytes_are_not_a_payload():
    with pytest.raises(SparkplugError, match="Not a Sparkplug B protobuf payload"):
        codec.decode_payload(b"\x12\x20\x0a\x09Fill")  # metric of 32 bytes, 6 present


def test_array_of_partial_elements_is_refused():
    message = pb.Payload(timestamp=1, seq=1)
    message.metrics.add(name="a", datatype=pb.Int32Array, bytes_value=b"\x01\x00\x00")
    with pytest.raises(SparkplugError, match="not a whole number of elements"):
        codec.decode_payload(message.SerializeToString())


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("spBv1.0/GF1-L1/NBIRTH/FILL-PLC-01", Topic("GF1-L1", "NBIRTH", "FILL-PLC-01")),
        (
            "spBv1.0/GF1-L1/DDATA/FILL-PLC-01/fill",
            Topic("GF1-L1", "DDATA", "FILL-PLC-01", "fill"),
        ),
    ],
)
def test_topics_parse(topic, expected):
    assert codec.parse_topic(topic) == expected
    assert str(expected) == topic


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("qms/gf1/l1-pri/fill/process_result", "is not a spBv1.0 topic"),
        ("spBv1.0/GF1-L1/NFOO/FILL-PLC-01", "Unknown Sparkplug message type 'NFOO'"),
        ("spBv1.0/GF1-L1/DDATA/FILL-PLC-01", "DDATA needs a device id"),
        ("spBv1.0/GF1-L1/NDATA/FILL-PLC-01/fill", "NDATA takes no device id"),
    ],
)
def test_bad_topics_are_refused(topic, reason):
    with pytest.raises(SparkplugError, match=reason):
        codec.parse_topic(topic)


def test_host_state_and_rebirth_payloads():
    assert codec.state_topic("celltrace-GF1-L1") == "spBv1.0/STATE/celltrace-GF1-L1"
    assert json.loads(codec.state_payload(online=True, timestamp_ms=1_772_431_200_000)) == {
        "online": True,
        "timestamp": 1_772_431_200_000,
    }
    rebirth = pb.Payload.FromString(codec.rebirth_request(timestamp_ms=1_772_431_200_000))
    assert not rebirth.HasField("seq")  # commands carry no sequence number
    (metric,) = rebirth.metrics
    assert (metric.name, metric.datatype, metric.boolean_value) == (
        "Node Control/Rebirth",
        pb.Boolean,
        True,
    )


def test_unit_kinds_are_the_envelope_schema_enum():
    enum = _schema()["$defs"]["process_result"]["properties"]["unit_kind"]["enum"]
    assert list(UnitKind.values) == enum


def test_datetime_ms_round_trip():
    when = datetime(2026, 3, 2, 6, 14, 55, 123000, tzinfo=UTC)
    assert codec.ms_to_datetime(codec.datetime_to_ms(when)) == when
    assert struct.calcsize("<q") == 8
