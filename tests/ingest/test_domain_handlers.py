"""The domain handlers (process_result, consumption, assembly, rework, hold_request) through
``ingest_raw``, with envelopes as the stations of a 21700 line send them."""

from datetime import timedelta

import pytest

from compliance.choices import HoldSource, HoldStatus
from compliance.models import Hold
from genealogy.choices import LinkKind, UnitKind, UnitStatus
from genealogy.models import Link, Measurement, StationVisit, Unit
from genealogy.services import coil_slit, unit_create
from qms.ingest.models import IngestMessage, IngestStat
from qms.ingest.services import ingest_raw, transport_actor
from tests.factories import UserFactory
from tests.ingest.line21700 import (
    ELECTROLYTE_LOT,
    VIN_1,
    an_hour_ago,
    build_line_21700,
    cell,
    envelope,
    fill_result,
    gs1,
    raw,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def cyl(db):
    return build_line_21700()


@pytest.fixture
def t0():
    return an_hour_ago()


@pytest.fixture
def slit(cyl):
    """Mother coil EC2-C-000123 (1,800 m), slit lane A cut from all of it."""
    actor = UserFactory(username="coat-lead")
    mother = unit_create(
        kind=UnitKind.COIL, serial="EC2-C-000123", line=cyl.line, length_m=1800.0, actor=actor
    )
    lane = unit_create(
        kind=UnitKind.SLIT_COIL, serial="EC2-C-000123-A", line=cyl.line, length_m=1800.0,
        actor=actor,
    )  # fmt: skip
    coil_slit(mother=mother, slit_coil=lane, start_m=0.0, end_m=1800.0, actor=actor)
    return lane


def statuses(outcomes) -> list[str]:
    return [o.status for o in outcomes]


def test_fill_result_creates_the_cell_its_visit_and_fill_mass(cyl, t0):
    doc = fill_result(cell(1), message_id="FILL-01:000001", sent_at=t0, mass_g=5.02)
    doc["payload"].update(
        started_at=(t0 - timedelta(seconds=11)).isoformat(), ended_at=t0.isoformat()
    )

    [outcome] = ingest_raw([raw(doc)])

    assert (outcome.status, outcome.message_id, outcome.reason) == (
        "accepted",
        "FILL-01:000001",
        "",
    )
    unit = Unit.objects.get(serial=cell(1))
    assert (unit.kind, unit.line, unit.status, unit.produced_at) == (
        UnitKind.CELL,
        cyl.line,
        UnitStatus.IN_PROCESS,
        t0 - timedelta(seconds=11),
    )
    visit = StationVisit.objects.get()
    assert (
        visit.unit,
        visit.station,
        visit.equipment,
        visit.started_at,
        visit.ended_at,
        visit.result,
        visit.program,
        visit.operator,
        visit.source_message_id,
    ) == (
        unit,
        cyl.stations["fill"],
        cyl.equipment["weigher"],
        t0 - timedelta(seconds=11),
        t0,
        "ok",
        "FILL-21700-E12",
        "op-4711",
        "FILL-01:000001",
    )
    m = Measurement.objects.get()
    assert (
        m.unit,
        m.characteristic,
        m.station,
        m.equipment,
        m.visit,
        m.value,
        m.in_spec,
        m.measured_at,
        m.source_message_id,
        m.recorded_by,
    ) == (
        unit,
        cyl.chars["fill_mass"],
        cyl.stations["fill"],
        cyl.equipment["weigher"],
        visit,
        5.02,
        True,
        t0,
        "FILL-01:000001",
        transport_actor("direct"),
    )
    msg = IngestMessage.objects.get()
    assert (msg.kind, msg.transport, msg.origin, msg.station, msg.unit_serial, msg.sent_at) == (
        "process_result",
        "direct",
        "qms/gf1/l2-cyl/fill/process_result",
        cyl.stations["fill"],
        cell(1),
        t0,
    )


def test_known_cell_by_gs1_string_with_its_own_measurement_time(cyl, t0):
    ingest_raw([raw(fill_result(cell(2), message_id="FILL-01:000002", sent_at=t0))])
    doc = fill_result(
        gs1(cell(2)),
        message_id="FILL-01:000003",
        sent_at=t0 + timedelta(minutes=2),
        mass_g=4.93,
        unit_kind=None,
        measured_at=(t0 + timedelta(seconds=40)).isoformat(),
    )
    doc["payload"]["result"] = "nok"

    [outcome] = ingest_raw([raw(doc)])

    assert outcome.status == "accepted"
    assert Unit.objects.filter(serial=cell(2)).count() == 1
    rows = list(
        Measurement.objects.order_by("measured_at").values_list(
            "value", "in_spec", "measured_at", "visit__result", "visit__started_at"
        )
    )
    assert rows == [
        (5.01, True, t0, "ok", t0),
        (4.93, False, t0 + timedelta(seconds=40), "nok", t0 + timedelta(minutes=2)),
    ]


def test_coating_result_creates_the_coil_with_its_areal_weight_profile(cyl, t0):
    profile = [(0.5, 23.02), (1.0, 22.98), (1.5, 23.11)]
    doc = envelope(
        "process_result",
        station="coat-c",
        equipment="coater-1",
        unit="EC2-C-000124",
        message_id="COAT-C:2026-11-27:0007",
        sent_at=t0,
        payload={
            "unit_kind": "coil",
            "length_m": 1800.0,
            "result": "ok",
            "program": "NMC811-23.0",
            "measurements": [
                {
                    "characteristic": "cathode-areal-weight",
                    "value": value,
                    "unit": "mg/cm²",
                    "position_m": pos,
                    "measured_at": (t0 - timedelta(seconds=60 - pos)).isoformat(),
                }
                for pos, value in profile
            ],
        },
    )

    assert statuses(ingest_raw([raw(doc)])) == ["accepted"]

    coil = Unit.objects.get(serial="EC2-C-000124")
    assert (coil.kind, coil.length_m, coil.line) == (UnitKind.COIL, 1800.0, cyl.line)
    assert list(
        Measurement.objects.filter(unit=coil)
        .order_by("position_m")
        .values_list("position_m", "value", "equipment__code")
    ) == [(0.5, 23.02, "coater-1"), (1.0, 22.98, "coater-1"), (1.5, 23.11, "coater-1")]


def test_one_result_for_a_tray_of_cells(cyl, t0):
    units = [cell(n) for n in range(10, 14)]
    doc = envelope(
        "process_result",
        station="fill",
        units=units,
        message_id="FILL-01:tray-0042",
        sent_at=t0,
        payload={
            "unit_kind": "cell",
            "result": "ok",
            "measurements": [
                {"characteristic": "electrolyte-fill-mass", "value": 5.0, "unit": "g"}
            ],
        },
    )

    assert statuses(ingest_raw([raw(doc)])) == ["accepted"]

    assert sorted(Measurement.objects.values_list("unit__serial", flat=True)) == units
    assert StationVisit.objects.count() == 4


def test_consumption_links_slit_coil_metres_and_the_electrolyte_lot(cyl, slit, t0):
    actor = UserFactory(username="stores")
    lot = unit_create(
        kind=UnitKind.MATERIAL_LOT,
        serial=ELECTROLYTE_LOT,
        material="Electrolyte 1.2 M LiPF6 in EC/EMC + 2 % VC",
        supplier="Elyte Chemicals",
        actor=actor,
    )
    doc = envelope(
        "consumption",
        station="wind",
        unit=cell(20),
        message_id="WIND-01:000020",
        sent_at=t0,
        payload={
            "unit_kind": "cell",
            "segments": [{"coil": "EC2-C-000123-A", "start_m": 17.2, "end_m": 18.06}],
            "lots": [{"lot": ELECTROLYTE_LOT, "quantity": 5.02, "quantity_unit": "g"}],
        },
    )

    assert statuses(ingest_raw([raw(doc)])) == ["accepted"]

    consumer = Unit.objects.get(serial=cell(20))
    links = list(
        Link.objects.filter(target=consumer)
        .order_by("id")
        .values_list("source", "kind", "start_m", "end_m", "quantity", "quantity_unit", "linked_at")
    )
    assert links == [
        (slit.pk, LinkKind.CONSUMED, 17.2, 18.06, None, "", t0),
        (lot.pk, LinkKind.CONSUMED, None, None, 5.02, "g", t0),
    ]


def test_assembly_cell_to_module_to_pack_to_vehicle(cyl, t0):
    ingest_raw([raw(fill_result(cell(n), message_id=f"FILL-01:{n}", sent_at=t0)) for n in (1, 2)])
    msgs = [
        envelope(
            "assembly",
            station="mod-asm",
            unit=cell(n),
            message_id=f"MOD-ASM:MOD2-000001:C{n:03d}",
            sent_at=t0 + timedelta(minutes=5, seconds=n),
            payload={"assembly": "MOD2-000001", "assembly_kind": "module", "slot": f"C{n:03d}"},
        )
        for n in (1, 2)
    ]
    msgs.append(
        envelope(
            "assembly",
            station="pack-asm",
            unit="MOD2-000001",
            message_id="PACK-ASM:PCK2-000001:M01",
            sent_at=t0 + timedelta(minutes=20),
            payload={"assembly": "PCK2-000001", "assembly_kind": "pack", "slot": "M01"},
        )
    )
    msgs.append(
        envelope(
            "assembly",
            station="marriage",
            unit="PCK2-000001",
            message_id=f"MARRIAGE:{VIN_1}",
            sent_at=t0 + timedelta(minutes=40),
            payload={"assembly": VIN_1, "assembly_kind": "vehicle", "slot": "HV-BATTERY"},
        )
    )

    assert statuses(ingest_raw([raw(m) for m in msgs])) == ["accepted"] * 4

    vehicle = Unit.objects.get(serial=VIN_1)
    assert (vehicle.kind, vehicle.line) == (UnitKind.VEHICLE, None)
    assert list(
        Link.objects.filter(kind=LinkKind.ASSEMBLED)
        .order_by("linked_at")
        .values_list("source__serial", "target__serial", "slot")
    ) == [
        (cell(1), "MOD2-000001", "C001"),
        (cell(2), "MOD2-000001", "C002"),
        ("MOD2-000001", "PCK2-000001", "M01"),
        ("PCK2-000001", VIN_1, "HV-BATTERY"),
    ]


def test_rework_replaces_a_cell_and_closes_the_old_link(cyl, t0):
    setup = [fill_result(cell(n), message_id=f"FILL-01:{n}", sent_at=t0) for n in (1, 2)]
    setup.append(
        envelope(
            "assembly",
            station="mod-asm",
            unit=cell(1),
            message_id="MOD-ASM:1",
            sent_at=t0 + timedelta(minutes=1),
            payload={"assembly": "MOD2-000001", "assembly_kind": "module", "slot": "C017"},
        )
    )
    ingest_raw([raw(m) for m in setup])
    rework = envelope(
        "rework",
        station="mod-asm",
        unit="MOD2-000001",
        message_id="MOD-ASM:rework:1",
        sent_at=t0 + timedelta(minutes=30),
        payload={
            "removed": cell(1),
            "replacement": cell(2),
            "reason": "Cell voltage 3.581 V, 42 mV below module median at EOL",
        },
    )

    assert statuses(ingest_raw([raw(rework)])) == ["accepted"]

    old, new = Link.objects.filter(kind=LinkKind.ASSEMBLED).order_by("id")
    assert (old.source.serial, old.slot, old.removed_at, old.removed_reason) == (
        cell(1),
        "C017",
        t0 + timedelta(minutes=30),
        "Cell voltage 3.581 V, 42 mV below module median at EOL",
    )
    assert (new.source.serial, new.slot, new.linked_at, new.removed_at) == (
        cell(2),
        "C017",
        t0 + timedelta(minutes=30),
        None,
    )


def test_hold_request_holds_the_units_with_the_station_as_source(cyl, t0):
    ingest_raw([raw(fill_result(cell(n), message_id=f"FILL-01:{n}", sent_at=t0)) for n in (1, 2)])
    doc = envelope(
        "hold_request",
        station="fill",
        units=[cell(1), gs1(cell(2))],
        message_id="FILL-01:hold:0001",
        sent_at=t0 + timedelta(minutes=3),
        payload={"reason": "Nozzle 7 dripped; fill mass uncertain", "reference": "ALM-3317"},
    )

    assert statuses(ingest_raw([raw(doc)])) == ["accepted"]

    hold = Hold.objects.get()
    assert (hold.status, hold.source, hold.reason, hold.source_reference, hold.placed_by) == (
        HoldStatus.OPEN,
        HoldSource.STATION,
        "Nozzle 7 dripped; fill mass uncertain (station reference ALM-3317)",
        "gf1/l2-cyl/fill FILL-01:hold:0001",
        transport_actor("direct"),
    )
    assert sorted(hold.units.values_list("serial", "status")) == [
        (cell(1), UnitStatus.ON_HOLD),
        (cell(2), UnitStatus.ON_HOLD),
    ]


def test_the_same_message_twice_is_applied_once_and_counted_duplicate(cyl, t0):
    doc = fill_result(cell(1), message_id="FILL-01:000001", sent_at=t0)

    first = ingest_raw([raw(doc), raw(doc)])
    again = ingest_raw([raw(doc)])

    assert [(o.status, o.reason) for o in first] == [
        ("accepted", ""),
        ("duplicate", "repeated in the same batch"),
    ]
    assert [(o.status, o.reason) for o in again] == [("duplicate", "applied before")]
    assert (Measurement.objects.count(), StationVisit.objects.count()) == (1, 1)
    assert Unit.objects.filter(serial=cell(1)).count() == 1
    stat = IngestStat.objects.get(transport="direct")
    assert (stat.accepted, stat.duplicate, stat.rejected, stat.batches) == (1, 2, 0, 2)


def test_out_of_order_messages_are_applied_in_sent_at_order(cyl, t0):
    """The module station's message (sent later) arrives before the fill result that
    creates the cell; the rework arrives before the assembly it undoes."""
    create = fill_result(cell(5), message_id="FILL-01:5", sent_at=t0)
    spare = fill_result(cell(6), message_id="FILL-01:6", sent_at=t0 + timedelta(seconds=12))
    assemble = envelope(
        "assembly",
        station="mod-asm",
        unit=cell(5),
        message_id="MOD-ASM:5",
        sent_at=t0 + timedelta(minutes=4),
        payload={"assembly": "MOD2-000002", "assembly_kind": "module", "slot": "C001"},
    )
    rework = envelope(
        "rework",
        station="mod-asm",
        unit="MOD2-000002",
        message_id="MOD-ASM:rework:5",
        sent_at=t0 + timedelta(minutes=9),
        payload={"removed": cell(5), "replacement": cell(6), "reason": "dented can"},
    )

    outcomes = ingest_raw([raw(rework), raw(assemble), raw(spare), raw(create)])

    assert [(o.message_id, o.status) for o in outcomes] == [
        ("MOD-ASM:rework:5", "accepted"),
        ("MOD-ASM:5", "accepted"),
        ("FILL-01:6", "accepted"),
        ("FILL-01:5", "accepted"),
    ]
    assert list(Link.objects.order_by("linked_at").values_list("source__serial", "removed_at")) == [
        (cell(5), t0 + timedelta(minutes=9)),
        (cell(6), None),
    ]
    assert list(IngestMessage.objects.order_by("id").values_list("message_id", flat=True)) == [
        "FILL-01:5",
        "FILL-01:6",
        "MOD-ASM:5",
        "MOD-ASM:rework:5",
    ]


def test_a_coating_profile_of_twenty_points_costs_a_bounded_number_of_queries(
    cyl, t0, django_assert_max_num_queries
):
    """The coil is known; its 20 areal-weight points are written in one bulk insert."""
    unit_create(
        kind=UnitKind.COIL, serial="EC2-C-000126", line=cyl.line, length_m=1800.0,
        actor=UserFactory(username="coat-lead"),
    )  # fmt: skip
    ingest_raw([raw(fill_result(cell(1), message_id="FILL-01:1", sent_at=t0))])  # warm-up
    doc = envelope(
        "process_result",
        station="coat-c",
        equipment="coater-1",
        unit="EC2-C-000126",
        message_id="COAT-C:2026-11-27:0009",
        sent_at=t0,
        payload={
            "result": "ok",
            "measurements": [
                {
                    "characteristic": "cathode-areal-weight",
                    "value": 23.0 + (i % 5 - 2) * 0.03,
                    "unit": "mg/cm²",
                    "position_m": 0.5 * (i + 1),
                }
                for i in range(20)
            ],
        },
    )
    with django_assert_max_num_queries(23):
        assert statuses(ingest_raw([raw(doc)])) == ["accepted"]
    assert Measurement.objects.filter(unit__serial="EC2-C-000126").count() == 20
