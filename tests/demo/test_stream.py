"""simulate --transport: the envelope stream of a production run, its faults, and delivery
through the direct, REST and OPC UA paths (MQTT with a real worker: test_stream_mqtt.py)."""

import json
import re
from collections import Counter
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import Sum
from django.test import TestCase, override_settings
from django.utils import timezone

from compliance.choices import HoldSource
from compliance.demo import plant
from compliance.demo.line import ROUTES, vin_is_valid
from compliance.demo.stream import build_stream
from compliance.demo.transports import (
    BrokerRestart,
    DeliveryError,
    DirectSink,
    FaultSpec,
    Outgoing,
    Pacer,
    RestSink,
    deliver,
    parse_faults,
    plan_delivery,
)
from compliance.models import Hold
from compliance.roles import roles_sync
from genealogy.choices import LinkKind, UnitKind, UnitStatus
from genealogy.models import Link, Measurement, StationVisit, Unit
from genealogy.queries import trace_backward, trace_forward
from qms.celery import app as celery_app
from qms.ingest.envelope import MasterData, validate
from qms.ingest.models import DeadLetter, IngestMessage, IngestStat
from qms.models import Site

FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _until():
    return (timezone.now() - timedelta(hours=1)).replace(microsecond=0)


def _simulate(**options) -> str:
    out = StringIO()
    call_command("simulate", stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


@pytest.fixture
def seeded(db):
    plant.seed()


# --- One run through the direct transport, shared by the checks of TestDirectRun -------------

#: The prismatic line makes its first pack and VIN at 96 good cells; 48 cylindrical cells
#: reach the metres of the coating streak.
CELLS = {"L1-PRI": 100, "L2-CYL": 48}
FAULTS = "duplicates=3,out-of-order=3,malformed=3,unknown-serial=2"


@pytest.fixture(scope="class")
def direct_run(django_db_setup, django_db_blocker):
    """A run's stream with faults, delivered by the direct sink on a fresh database; rolled
    back after the class. Reactions (out-of-spec holds) run in process on commit."""
    until = _until()
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    with django_db_blocker.unblock(), override_settings(PASSWORD_HASHERS=FAST_HASHERS):
        run = transaction.atomic()
        run.__enter__()
        try:
            plant.seed()
            stream = build_stream(cells=CELLS, seed=7, end_at=until)
            plan = plan_delivery(stream, parse_faults(FAULTS))
            sink = DirectSink(batch_size=500)
            with TestCase.captureOnCommitCallbacks(execute=True):
                report = deliver(plan, sink)
            yield stream, plan, sink, report
        finally:
            transaction.set_rollback(True)
            run.__exit__(None, None, None)
            celery_app.conf.task_always_eager = eager


@pytest.mark.django_db
class TestDirectRun:
    """Read-only checks of the one run (the class shares it)."""

    def test_the_plant_is_built_through_ingest(self, direct_run):
        stream, _plan, _sink, report = direct_run
        kinds = Counter(Unit.objects.values_list("kind", flat=True))
        assert kinds == {
            "material_lot": 10,
            "mix_batch": 4,
            "coil": 4,
            "slit_coil": 28,
            "cell": 148,
            "module": 8,
            "pack": 1,
            "vehicle": 1,
        }
        assert len(stream.messages) == 1464
        assert (
            stream.count_by_kind()
            == report.by_kind
            == {
                "assembly": 105,
                "consumption": 276,
                "hold_request": 2,
                "process_result": 1080,
                "rework": 1,
            }
        )
        assert Measurement.objects.count() == stream.measurements == 3395
        assert StationVisit.objects.count() == 1080
        assert Counter(Link.objects.values_list("kind", flat=True)) == {
            LinkKind.CONSUMED: 586,
            LinkKind.ASSEMBLED: 106,  # 105 assemblies and the rework's replacement
        }
        # No envelope kind says "slit": slit coils stand on their own.
        assert not Link.objects.filter(kind=LinkKind.SLIT).exists()

    def test_every_message_is_applied_once_and_the_faults_are_counted(self, direct_run):
        stream, plan, sink, report = direct_run
        assert set(IngestMessage.objects.values_list("message_id", flat=True)) == {
            m.message_id for m in stream.messages
        }
        assert IngestStat.objects.filter(transport="direct").aggregate(
            Sum("accepted"), Sum("duplicate"), Sum("rejected")
        ) == {"accepted__sum": 1464, "duplicate__sum": 3, "rejected__sum": 5}
        assert sink.outcomes == {"accepted": 1464, "duplicate": 3, "rejected": 5}
        assert report.sent == 1464 + 3 + 3 + 2
        assert plan.injected == {
            "out-of-order": 3,
            "duplicates": 3,
            "malformed": 3,
            "unknown-serial": 2,
        }
        letters = {
            mid: (reason, fld)
            for mid, reason, fld in DeadLetter.objects.values_list("message_id", "reason", "field")
        }
        assert sorted(letters) == [
            "",  # cut off half-way: no id could be read
            "sim-7-l1-pri-aging-r1-000056.malformed-2",
            "sim-7-l1-pri-form-r1-000080.unknown-1",
            "sim-7-l1-pri-grade-r1-000010.malformed-3",
            "sim-7-l2-cyl-grade-r1-000018.unknown-2",
        ]
        assert letters[""][0].startswith("Not valid JSON: Unterminated string")
        assert letters["sim-7-l1-pri-aging-r1-000056.malformed-2"] == (
            "Schema: 'result' is a required property",
            "payload",
        )
        assert letters["sim-7-l1-pri-grade-r1-000010.malformed-3"] == (
            "Schema: '106.03' is not of type 'number'",
            "payload.measurements[0].value",
        )
        assert letters["sim-7-l1-pri-form-r1-000080.unknown-1"] == (
            "Unknown unit 'P19900000001' (send 'unit_kind' to create it on its first station).",
            "unit",
        )
        assert letters["sim-7-l2-cyl-grade-r1-000018.unknown-2"][0].startswith(
            "Unknown unit 'C29900000002'"
        )
        assert not Unit.objects.filter(serial__in=["P19900000001", "C29900000002"]).exists()

    def test_trace_of_a_cell_reaches_its_coil_segments_module_pack_and_vin(self, direct_run):
        vehicle = Unit.objects.get(kind=UnitKind.VEHICLE)
        assert vin_is_valid(vehicle.serial)
        up_from_vehicle = trace_backward(vehicle)
        assert up_from_vehicle.serials(UnitKind.PACK) == {"PCK1-000001"}
        cells = up_from_vehicle.serials(UnitKind.CELL)
        assert len(cells) == 96

        cell = Unit.objects.get(serial="P10000000010")
        assert cell.serial in cells and cell.gtin == plant.PRISMATIC.gtin
        up = trace_backward(cell)
        slits = {n.serial: (n.start_m, n.end_m) for n in up.by_kind(UnitKind.SLIT_COIL)}
        consumed = Link.objects.filter(target=cell, kind=LinkKind.CONSUMED, start_m__isnull=False)
        assert slits == {
            link.source.serial: (link.start_m, link.end_m)
            for link in consumed.select_related("source")
        }
        assert sorted(s.split("-")[1] for s in slits) == ["A", "C"]  # anode and cathode lane
        assert sorted(round(e - s, 3) for s, e in slits.values()) == [6.5, 6.8]  # m per cell
        lots = up.serials(UnitKind.MATERIAL_LOT)
        assert sorted(lot.rsplit("-", 1)[0] for lot in lots) == ["ELY-E12", "PSM12C"]

        down = trace_forward(cell)
        assert down.serials(UnitKind.MODULE) == {"MOD1-000001"}
        assert down.serials(UnitKind.PACK) == {"PCK1-000001"}
        assert down.serials(UnitKind.VEHICLE) == {vehicle.serial}

    def test_plant_faults_arrive_as_holds_and_a_rework(self, direct_run):
        assert Hold.objects.count() == 4
        streak = Hold.objects.get(reason__startswith="Cathode areal loading")
        assert streak.source == HoldSource.STATION
        assert streak.source_reference == "GF1/L2-CYL/coat-c sim-7-l2-cyl-coat-c-r1-000003"
        assert streak.units.count() == 26  # wound from metres [10, 20) of two lanes
        held = Unit.objects.filter(kind=UnitKind.CELL, status=UnitStatus.ON_HOLD)
        assert held.filter(line__code="L2-CYL").count() == 27  # and the low fill
        out_of_spec = Hold.objects.filter(source=HoldSource.OUT_OF_SPEC).order_by("reason")
        assert [h.reason.split(" out of")[0] for h in out_of_spec] == [
            "Electrolyte fill mass (1.0 g/Ah)",
            "Helium leak rate after seal-pin weld",
        ]
        replaced = Link.objects.get(kind=LinkKind.ASSEMBLED, removed_at__isnull=False)
        assert (replaced.target.serial, replaced.slot) == ("MOD1-000005", "C03")
        assert replaced.source.serial == "P10000000052"
        assert replaced.source.status == UnitStatus.ON_HOLD
        assert Hold.objects.get(source=HoldSource.STATION, reason__startswith="Removed from")
        replacement = Link.objects.get(target=replaced.target, slot="C03", removed_at__isnull=True)
        assert replacement.source.serial == "P10000000099"


# --- The stream itself ------------------------------------------------------------------------


def test_stream_is_valid_envelopes_in_line_order(seeded):
    end_at = _until()
    stream = build_stream(cells={"L1-PRI": 30, "L2-CYL": 30}, seed=11, end_at=end_at, faults=False)
    master = MasterData()
    sent = [m.sent_at for m in stream.messages]
    assert sent == sorted(sent) and sent[-1] <= end_at
    ids = [m.message_id for m in stream.messages]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"sim-11-l[12]-(pri|cyl)-[a-z-]+-r1-\d{6}", i) for i in ids)
    for m in stream.messages:
        validate(json.loads(m.encode()), master=master, now=end_at)  # raises if refused

    # Nothing is used before the message that makes it (lots, batches, coils, cells,
    # modules, packs), and a cell's results follow its route.
    made: set[str] = set()
    for m in stream.messages:
        payload = m.doc["payload"]
        makes = {m.doc["unit"]} if payload.get("unit_kind") else set()
        makes |= {payload["assembly"]} if payload.get("assembly_kind") else set()
        assert m.serials - makes <= made, m.message_id
        made |= makes
    route: dict[str, list[str]] = {}
    for m in stream.messages:
        if m.kind == "process_result" and m.doc["unit"].endswith("0000000007"):
            route.setdefault(m.line, []).append(m.station)
    assert route == {
        "l1-pri": [station for station, _s, _d in ROUTES["L1-PRI"]],
        "l2-cyl": [station for station, _s, _d in ROUTES["L2-CYL"]],
    }


def test_same_seed_gives_the_same_stream_and_another_seed_other_values(seeded):
    end_at = _until()
    cells = {"L1-PRI": 15, "L2-CYL": 15}
    first = build_stream(cells=cells, seed=5, end_at=end_at)
    again = build_stream(cells=cells, seed=5, end_at=end_at)
    other = build_stream(cells=cells, seed=6, end_at=end_at)
    assert [m.encode() for m in again.messages] == [m.encode() for m in first.messages]

    def values(stream):
        return [
            row["value"]
            for m in stream.messages
            for row in m.doc["payload"].get("measurements") or ()
        ]

    assert values(other) != values(first)
    assert {m.doc.get("unit") for m in other.messages} == {
        m.doc.get("unit") for m in first.messages
    }


def test_a_second_run_continues_the_numbering_and_collides_with_nothing(seeded, celery_eager):
    until = _until()
    _simulate(transport="direct", cells=20, seed=3, until=until.isoformat())
    second = _simulate(transport="direct", cells=20, seed=3, until=until.isoformat())
    assert "P10000000011..P10000000020" in second and "C20000000011..C20000000020" in second
    assert Unit.objects.filter(kind=UnitKind.CELL).count() == 40
    assert IngestStat.objects.aggregate(Sum("duplicate"), Sum("rejected")) == {
        "duplicate__sum": 0,
        "rejected__sum": 0,
    }
    runs = Counter(
        re.search(r"-(r\d+)-\d{6}$", mid)[1]
        for mid in IngestMessage.objects.values_list("message_id", flat=True)
    )
    assert set(runs) == {"r1", "r11"}


# --- Faults -------------------------------------------------------------------------------------


def test_parse_faults_reads_counts_rates_and_defaults():
    assert parse_faults("duplicates=5, out-of-order=0.01,malformed,broker-restart") == {
        "duplicates": FaultSpec("duplicates", count=5),
        "out-of-order": FaultSpec("out-of-order", rate=0.01),
        "malformed": FaultSpec("malformed"),
        "broker-restart": FaultSpec("broker-restart"),
    }
    assert FaultSpec("out-of-order", rate=0.01).how_many(1000) == 10
    assert FaultSpec("malformed").how_many(1000) == 3
    assert FaultSpec("broker-restart").how_many(1000) == 1
    assert parse_faults("") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("teleport", "Unknown fault 'teleport'"),
        ("duplicates=0", "duplicates=0: a count is a whole number >= 1"),
        ("duplicates=2.5", "duplicates=2.5: a count is a whole number >= 1"),
        ("malformed=lots", "malformed='lots': give a count (5) or a rate (0.01)."),
        ("malformed,malformed=2", "Fault 'malformed' is given twice."),
    ],
)
def test_parse_faults_refuses_what_it_cannot_read(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_faults(text)


def test_fault_plan_keeps_every_message_and_adds_or_swaps_as_asked(seeded):
    stream = build_stream(cells={"L1-PRI": 20, "L2-CYL": 20}, seed=9, end_at=_until())
    faults = parse_faults("duplicates=4,out-of-order=5,malformed=3,unknown-serial=2,broker-restart")
    plan = plan_delivery(stream, faults, broker_restart_cmd="restart it")
    assert plan.injected == {
        "out-of-order": 5,
        "duplicates": 4,
        "malformed": 3,
        "unknown-serial": 2,
        "broker-restart": 1,
    }
    messages = plan.messages
    assert len(messages) == len(stream.messages) + 4 + 3 + 2
    regular = [o for o in messages if not o.fault]
    assert sorted(o.message_id for o in regular) == sorted(m.message_id for m in stream.messages)
    # sent_at and everything else stay as they were
    assert {o.payload for o in regular} == {m.encode() for m in stream.messages}

    # Out of order: exactly the swapped neighbours differ from the stream's order, and they
    # share no unit.
    position = {m.message_id: i for i, m in enumerate(stream.messages)}
    order = [position[o.message_id] for o in regular]
    swapped = [i for i in range(len(order) - 1) if order[i] > order[i + 1]]
    assert len(swapped) == 5
    for i in swapped:
        a, b = stream.messages[order[i]], stream.messages[order[i + 1]]
        assert not a.serials & b.serials

    # Duplicates repeat an id that went out before them.
    ids_so_far: set[str] = set()
    for o in messages:
        if o.fault == "duplicate":
            assert o.message_id in ids_so_far
        ids_so_far.add(o.message_id)
    assert sorted(o.fault for o in messages if o.fault.startswith("malformed")) == [
        "malformed (missing-result)",
        "malformed (truncated-json)",
        "malformed (value-as-text)",
    ]
    restarts = [i for i, item in enumerate(plan.items) if isinstance(item, BrokerRestart)]
    assert restarts == [len(messages) // 2] and plan.items[restarts[0]].command == "restart it"
    assert plan_delivery(stream, faults, broker_restart_cmd="restart it").items == plan.items


# --- Pacing and REST retries (no server needed) ----------------------------------------------


def test_pacer_spaces_messages_at_the_rate_and_does_not_burst_after_a_stall():
    now = [100.0]
    slept: list[float] = []

    def sleep(s):
        slept.append(round(s, 6))
        now[0] += s

    pacer = Pacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        pacer.wait()
    assert slept == [0.25, 0.25]
    now[0] += 5.0  # the sink stalled (a reconnect)
    pacer.wait()
    pacer.wait()
    assert slept == [0.25, 0.25, 0.25]
    unpaced = Pacer(0, clock=lambda: now[0], sleep=sleep)
    unpaced.wait()
    assert slept == [0.25, 0.25, 0.25]


def _outgoing(n: int) -> Outgoing:
    doc = {"message_id": f"FILL-01:{n:06d}", "kind": "process_result"}
    return Outgoing(
        json.dumps(doc).encode(), "gf1", "l2-cyl", "fill", "process_result", doc["message_id"]
    )


def test_rest_sink_sends_a_failed_call_again_unchanged(monkeypatch):
    monkeypatch.setattr("compliance.demo.transports.time.sleep", lambda s: None)
    calls: list[tuple[str, bytes, dict]] = []

    def post(url, body, headers, timeout):
        calls.append((url, body, headers))
        if len(calls) == 1:
            return 503, b"busy"
        results = [
            {"status": "accepted", "message_id": m["message_id"], "reason": ""}
            for m in json.loads(body)["messages"]
        ]
        return 200, json.dumps({"results": results}).encode()

    sink = RestSink(url="http://qms.gf1.example:8000", token="t0k", post=post, batch_size=2)
    for n in range(3):
        sink.send(_outgoing(n))
    sink.close()
    assert [c[0] for c in calls] == ["http://qms.gf1.example:8000/api/v1/ingest/"] * 3
    assert calls[0][1] == calls[1][1]  # the same body again
    assert calls[0][2]["Authorization"] == "Token t0k"
    assert sink.outcomes == {"accepted": 3}


def test_rest_sink_stops_on_a_refusal_with_the_answer():
    sink = RestSink(
        url="http://127.0.0.1:8000/api/v1/ingest/",
        token="ctdemo-read-2c7d9f41e6b85a03",
        post=lambda *a: (403, b'{"detail": "A read-only token cannot write."}'),
    )
    sink.send(_outgoing(1))
    with pytest.raises(DeliveryError, match=r"HTTP 403: .*read-only token"):
        sink.close()
    assert sink.outcomes == {}


# --- Refusals of the command --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"transport": "direct", "faults": "broker-restart"}, "needs --transport mqtt"),
        ({"transport": "rest", "faults": "teleport=2"}, "--faults: Unknown fault 'teleport'"),
        ({"transport": "direct", "rate": -1.0}, "--rate must not be negative."),
        ({"transport": "mqtt", "live": True}, "takes no --transport"),
        ({"transport": "rest", "url": "ftp://qms.example/"}, "--url: 'ftp://qms.example/' is not"),
        ({"transport": "mqtt", "mqtt_url": "http://broker"}, "--mqtt-url: 'http://broker' is not"),
        ({"transport": "direct", "batch_size": 0}, "--batch-size must be at least 1."),
        ({"transport": "direct", "until": "2999-01-01T00:00:00Z"}, "is in the future"),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(db, options, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        _simulate(cells=10, **options)
    assert not Site.objects.exists()
    assert not Unit.objects.exists()
    assert not IngestMessage.objects.exists() and not DeadLetter.objects.exists()


def test_an_empty_run_sends_nothing(seeded):
    out = _simulate(transport="direct", cells=0)
    assert "Nothing to send." in out
    assert not IngestMessage.objects.exists()


# --- REST and OPC UA, with their servers running ---------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_rest_transport_through_the_live_server(live_server, celery_eager):
    roles_sync()  # a transactional test before this one may have flushed them
    plant.seed()
    until = _until()
    expected = build_stream(cells=20, seed=4, end_at=until)
    out = _simulate(
        transport="rest",
        url=live_server.url,
        cells=20,
        seed=4,
        until=until.isoformat(),
        faults="duplicates=2,malformed=3",
        batch_size=100,
    )
    n = len(expected.messages)
    kinds = ", ".join(f"{k} {v:,}" for k, v in expected.count_by_kind().items())
    assert f"Sending {n + 5:,} messages through rest, as fast as it takes them" in out
    assert f"Sent per kind: {kinds}\n" in out
    assert "Faults injected: duplicates 2, malformed 3\n" in out
    assert f"Ingest answered: {n:,} accepted, 2 duplicate, 3 rejected" in out
    stored = IngestMessage.objects.filter(transport="rest")
    assert set(stored.values_list("message_id", flat=True)) == {
        m.message_id for m in expected.messages
    }
    assert set(stored.values_list("origin", flat=True)) == {"MES gateway (demo)"}
    reasons = set(DeadLetter.objects.values_list("reason", flat=True))
    assert len(reasons) == 3
    assert "Schema: 'result' is a required property" in reasons
    assert "The envelope must be a JSON object." in reasons  # the cut-off text, as a string
    (as_text,) = reasons - {
        "Schema: 'result' is a required property",
        "The envelope must be a JSON object.",
    }
    assert re.fullmatch(r"Schema: '[0-9.e+-]+' is not of type 'number'", as_text)
    assert Unit.objects.filter(kind=UnitKind.CELL).count() == 20


@pytest.mark.django_db(transaction=True)
def test_opcua_transport_serves_fill_and_formation_through_the_client(celery_eager):
    roles_sync()
    plant.seed()
    until = _until()
    expected = build_stream(cells={"L2-CYL": 12}, seed=2, end_at=until)
    served = [
        m
        for m in expected.messages
        if m.kind == "process_result"
        and m.station in ("fill", "form")
        and m.doc["payload"].get("unit_kind") != "material_lot"  # the electrolyte lot scanned in
    ]
    # --cells 24 puts 12 on each line; only the cylindrical line has OPC UA stations.
    out = _simulate(transport="opcua", cells=24, seed=2, until=until.isoformat())
    assert Counter(m.station for m in served) == {"fill": 11, "form": 10}  # a sample, a NOK fill
    opcua = IngestMessage.objects.filter(transport="opcua")
    ids = sorted(opcua.values_list("message_id", flat=True))
    fill_ids = [i for i in ids if i.startswith("opcua:simulate:fill:FILL-01.")]
    form_ids = [i for i in ids if re.match(r"opcua:simulate:form:FORM-RACK-01\.CH0\d\.", i)]
    assert len(fill_ids) == 11 and len(form_ids) == 10 and len(ids) == 21
    assert {i.rsplit(".", 1)[1] for i in ids} == {m.doc["unit"] for m in served}

    fills = StationVisit.objects.filter(station__code="fill", unit__line__code="L2-CYL")
    assert fills.count() == 11
    assert set(fills.values_list("equipment__code", flat=True)) == {"cw-1"}
    assert fills.filter(result="nok").count() == 1
    masses = {
        m.doc["unit"]: m.doc["payload"]["measurements"][0]["value"]
        for m in served
        if m.station == "fill"
    }
    stored = Measurement.objects.filter(
        characteristic__code="fill-mass", unit__line__code="L2-CYL"
    ).values_list("unit__serial", "value")
    assert dict(stored) == masses
    assert "21 results served (fill 11, form 10)" in out
    assert "the client applied 21 accepted, 0 duplicate, 0 rejected" in out
    assert "Direct (every other message):" in out
    assert IngestMessage.objects.exclude(transport__in=["opcua", "direct"]).count() == 0
