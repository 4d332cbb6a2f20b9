"""Trace queries over the digital thread built by the services (see conftest.py).

Runs unchanged on SQLite and on PostgreSQL (DATABASE_URL): the same SQL must give the same
answers on both.
"""

from datetime import timedelta

import pytest
from django.db import connection

from genealogy import queries
from genealogy.choices import LinkKind, UnitKind
from genealogy.queries import TraceRow
from genealogy.services import cell_replace
from qms.exceptions import InvalidInput
from tests.genealogy.conftest import VINS, cell_serial

pytestmark = pytest.mark.django_db

CC1, CC2, AC1 = "CC-260303-001", "CC-260303-002", "AC-260303-001"
L1R1, L1R2, L2R2 = "SC-260303-001-L1-R1", "SC-260303-001-L1-R2", "SC-260303-001-L2-R2"
CC2L1, ANODE = "SC-260303-002-L1", "SC-A260303-001-L1"
MODULES = [f"M26110{m:05d}" for m in range(1, 6)]
PACKS = [f"PK26110{p:05d}" for p in range(1, 4)]
CATHODE_LOTS = {"CAM-NMC811-2611-0042", "PVDF-5130-2609-007", "CB-C65-2610-113"}
#: PostgreSQL trace statements add one SET and one RESET round trip (planner settings).
PG_EXTRA = 2


def extra() -> int:
    return PG_EXTRA if connection.vendor == "postgresql" else 0


def cells(*numbers: int) -> set[str]:
    return {cell_serial(n) for n in numbers}


def serials(trace) -> set[str]:
    return {n.serial for n in trace.nodes}


def test_vin_traces_back_to_exact_coil_segments_mix_batches_and_lots(thread):
    vin = thread[VINS[0]]

    trace = queries.trace_backward(vin)

    assert trace.root == vin and trace.direction == "backward"
    assert serials(trace) == {
        VINS[0],
        PACKS[0],
        MODULES[0],
        MODULES[1],
        *cells(1, 2, 3, 4, 5, 6),
        L1R2,
        ANODE,
        CC1,
        AC1,
        "MXC-260302-01",
        "MXA-260302-01",
        *CATHODE_LOTS,
        "ALF-12-2610-0551",
        "GR-AG-2608-0311",
        "CUF-6-2609-0228",
        "EL-LP57-2611-0019",
    }
    by_serial = {n.serial: n for n in trace.nodes}
    # Exact segments: cells c01-c06 used L1-R2 metres 0-36, which are mother metres
    # 1500-1536; on the anode a 1 m splice gap after c03 splits the range in two.
    assert trace.segments[by_serial[L1R2].unit_id] == [(0.0, 36.0)]
    assert trace.segments[by_serial[CC1].unit_id] == [(1500.0, 1536.0)]
    assert trace.segments[by_serial[ANODE].unit_id] == [(0.0, 18.6), (19.6, 38.2)]
    assert trace.segments[by_serial[AC1].unit_id] == [(0.0, 18.6), (19.6, 38.2)]
    assert by_serial[CC1][5:7] == (1500.0, 1536.0)
    assert by_serial[ANODE][5:7] == (0.0, 38.2)
    assert by_serial[cell_serial(1)][5:7] == (None, None)  # a cell has no metres
    assert {n.serial: n.depth for n in trace.nodes if n.depth <= 2} == {
        VINS[0]: 0,
        PACKS[0]: 1,
        MODULES[0]: 2,
        MODULES[1]: 2,
    }
    assert by_serial[CC1].depth == 5 and by_serial["CAM-NMC811-2611-0042"].depth == 7
    assert trace.nodes[0].serial == VINS[0]
    assert [n.depth for n in trace.nodes] == sorted(n.depth for n in trace.nodes)


def test_backward_edges_are_the_links_among_the_traced_units(thread):
    trace = queries.trace_backward(thread[VINS[0]])
    ids = {n.unit_id: n.serial for n in trace.nodes}

    edges = {(ids[e.source_id], ids[e.target_id]): e for e in trace.edges}

    # 1 pack->vehicle, 2 modules, 6 cells, 6 x (cathode, anode, electrolyte), 2 slits,
    # 2 x (batch, foil) into coils, 3 + 1 lots into batches.
    assert len(trace.edges) == 37
    c02 = edges[(L1R2, cell_serial(2))]
    assert (c02.kind, c02.start_m, c02.end_m, c02.removed_at) == (
        LinkKind.CONSUMED,
        6.0,
        12.0,
        None,
    )
    slit = edges[(CC1, L1R2)]
    assert (slit.kind, slit.start_m, slit.end_m) == (LinkKind.SLIT, 1500.0, 3000.0)
    assert edges[(cell_serial(2), MODULES[0])].slot == "C02"
    assert edges[(PACKS[0], VINS[0])].slot == "HV"
    assert all(e.linked_at.tzinfo is not None for e in trace.edges)
    assert [e.link_id for e in trace.edges] == sorted(e.link_id for e in trace.edges)


def test_a_15_m_mother_coil_defect_resolves_to_exactly_the_cells_that_used_those_metres(thread):
    coil, lo, hi = thread["CC-260303-001"], 1510.0, 1525.0

    trace = queries.trace_forward(coil, start_m=lo, end_m=hi)

    # L1-R2 and L2-R2 start at mother metre 1500: the defect is their metres 10-25.
    assert serials(trace) == {
        CC1,
        L1R2,
        L2R2,
        *cells(2, 3, 4, 5, 8, 9, 10),
        *MODULES[:4],
        PACKS[0],
        PACKS[1],
        VINS[0],
        VINS[1],
    }
    by_serial = {n.serial: n for n in trace.nodes}
    assert by_serial[CC1][5:] == (1510.0, 1525.0, 0)
    assert by_serial[L1R2][5:] == (10.0, 25.0, 1)
    assert by_serial[L2R2][5:] == (10.0, 25.0, 1)
    assert by_serial[cell_serial(5)].depth == 2 and by_serial[VINS[1]].depth == 5
    consumed = {e.target_id for e in trace.edges if e.kind == LinkKind.CONSUMED}
    assert {thread.cell(n).pk for n in (2, 3, 4, 5, 8, 9, 10)} == consumed


def test_a_segment_across_the_slit_roll_change_maps_into_both_rolls(thread):
    # Mother metres 1490-1505: roll R1 (mother 0-1500) metres 1490-1500 and roll R2
    # (mother 1500-3000) metres 0-5 of both lanes.
    trace = queries.trace_forward(thread[CC1], start_m=1490.0, end_m=1505.0)

    by_serial = {n.serial: n for n in trace.nodes}
    assert by_serial[L1R1][5:7] == (1490.0, 1500.0)
    assert by_serial[L1R2][5:7] == (0.0, 5.0)
    assert by_serial[L2R2][5:7] == (0.0, 5.0)
    assert trace.serials(UnitKind.CELL) == cells(1, 7, 13)


def test_segment_ends_are_half_open(thread):
    # c10 uses L2-R2 metres [20, 26), c11 [26, 32): metre 26 belongs to c11 only.
    trace = queries.trace_forward(thread[L2R2], start_m=26.0, end_m=32.0)

    assert trace.serials(UnitKind.CELL) == cells(11)
    assert trace.serials(UnitKind.VEHICLE) == {VINS[1]}


def test_forward_from_a_whole_lot_reaches_both_coils_it_fed(thread):
    trace = queries.trace_forward(thread["CAM-NMC811-2611-0042"])

    assert trace.serials(UnitKind.MIX_BATCH) == {"MXC-260302-01", "MXC-260302-02"}
    assert trace.serials(UnitKind.COIL) == {CC1, CC2}
    assert trace.serials(UnitKind.CELL) == cells(*range(1, 17))
    assert trace.serials(UnitKind.VEHICLE) == set(VINS)
    assert all(n.start_m is None for n in trace.nodes)  # whole coils


def test_rework_removed_cell_is_out_of_the_current_trace_but_in_the_trace_as_of_before(thread):
    module, old, spare = thread[MODULES[0]], thread.cell(3), thread.cell(16)
    rework_at = thread.t0 + timedelta(days=5)
    cell_replace(
        assembly=module,
        removed=old,
        replacement=spare,
        actor=thread.actor,
        reason="DCIR 1.9 mΩ above bin limit 1.6 mΩ",
        at=rework_at,
    )
    before = rework_at - timedelta(days=1)

    now = queries.trace_backward(thread[VINS[0]])
    then = queries.trace_backward(thread[VINS[0]], as_of=before)

    assert cell_serial(3) not in serials(now) and cell_serial(16) in serials(now)
    assert CC2L1 in serials(now)  # the spare's cathode came from the second coil
    assert cell_serial(3) in serials(then) and cell_serial(16) not in serials(then)
    assert CC2L1 not in serials(then)
    removed = [e for e in then.edges if e.source_id == old.pk and e.target_id == module.pk]
    assert len(removed) == 1 and removed[0].removed_at == rework_at
    assert queries.trace_forward(old).serials(UnitKind.VEHICLE) == set()
    assert queries.trace_forward(old, as_of=before).serials(UnitKind.VEHICLE) == {VINS[0]}
    assert [n.serial for n in queries.trace_forward(old).nodes] == [cell_serial(3)]


def test_as_of_before_anything_was_linked_gives_the_root_alone(thread):
    trace = queries.trace_backward(thread[VINS[0]], as_of=thread.t0)

    assert [(n.serial, n.depth) for n in trace.nodes] == [(VINS[0], 0)]
    assert trace.edges == []


def test_station_window_traces_the_units_that_passed_and_everything_downstream(thread):
    fill, weigher = thread.plant.stations["fill"], thread.plant.equipment["weigher"]
    start = thread.t0 + timedelta(days=1, minutes=40)  # cells c05, c06, c07 start 40-60 min

    trace = queries.trace_forward_window(
        station=fill, equipment=weigher, start=start, end=start + timedelta(minutes=30)
    )

    assert trace.root is None and trace.window.station == fill
    assert sorted(trace.seed_ids) == sorted(thread.cell(n).pk for n in (5, 6, 7))
    assert serials(trace) == {
        *cells(5, 6, 7),
        MODULES[1],
        MODULES[2],
        PACKS[0],
        PACKS[1],
        VINS[0],
        VINS[1],
    }
    assert {n.serial for n in trace.nodes if n.depth == 0} == cells(5, 6, 7)


def test_station_window_on_other_equipment_or_time_is_empty(thread):
    fill = thread.plant.stations["fill"]
    start = thread.t0 + timedelta(days=1, minutes=40)
    other = fill.equipment.create(code="cw-2", name="Check-weigher 2")

    on_other = queries.trace_forward_window(
        station=fill, equipment=other, start=start, end=start + timedelta(minutes=30)
    )
    too_early = queries.trace_forward_window(
        station=fill, start=thread.t0, end=thread.t0 + timedelta(hours=1)
    )

    assert on_other.nodes == [] and on_other.edges == []
    assert too_early.nodes == []


def test_station_window_finds_units_measured_there_without_a_visit(thread):
    coater = thread.plant.stations["coat-c"]
    start = thread.t0 + timedelta(hours=2)

    trace = queries.trace_forward_window(
        station=coater, start=start, end=start + timedelta(minutes=5)
    )

    assert trace.seed_ids == [thread[CC1].pk]
    assert trace.serials(UnitKind.CELL) == cells(*range(1, 14))


def test_streaming_variants_yield_the_same_rows_as_tuples(thread):
    coil = thread[CC1]

    streamed = list(queries.iter_trace_forward(coil, start_m=1510.0, end_m=1525.0))
    backward = list(queries.iter_trace_backward(thread[VINS[0]]))

    full = queries.trace_forward(coil, start_m=1510.0, end_m=1525.0)
    assert sorted(streamed) == sorted(full.nodes)
    assert sorted(backward) == sorted(queries.trace_backward(thread[VINS[0]]).nodes)
    assert all(type(row) is TraceRow and type(row.unit_id) is int for row in streamed)
    assert [r.depth for r in streamed] == sorted(r.depth for r in streamed)
    window = list(
        queries.iter_trace_forward(
            station=thread.plant.stations["fill"],
            start=thread.t0 + timedelta(days=1, minutes=40),
            end=thread.t0 + timedelta(days=1, minutes=70),
        )
    )
    assert {r.serial for r in window if r.kind == UnitKind.CELL} == cells(5, 6, 7)


def test_trace_calls_run_a_fixed_number_of_queries(thread, django_assert_max_num_queries):
    vin, coil = thread[VINS[0]], thread[CC1]

    with django_assert_max_num_queries(1 + extra()):
        queries.trace_backward(vin)
    with django_assert_max_num_queries(1 + extra()):
        queries.trace_forward(coil, start_m=1510.0, end_m=1525.0)
    with django_assert_max_num_queries(1 + extra()):
        queries.trace_forward(thread["CAM-NMC811-2611-0042"])
    with django_assert_max_num_queries(1 + extra()):
        list(queries.iter_trace_backward(vin))
    # requested scope, whole coil, upstream lots (ids + units), lot scope
    with django_assert_max_num_queries(5 + extra()):
        queries.recall_scope(unit=coil, start_m=1510.0, end_m=1525.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start_m": 10.0}, "end_m"),
        ({"end_m": 10.0}, "start_m"),
        ({"start_m": 25.0, "end_m": 10.0}, "end_m"),
        ({"start_m": 10.0, "end_m": 10.0}, "end_m"),
        ({"start_m": -1.0, "end_m": 10.0}, "start_m"),
        ({"start_m": 3000.0, "end_m": 3015.0}, "start_m"),
        ({"start_m": float("nan"), "end_m": 10.0}, "start_m"),
    ],
)
def test_bad_metre_ranges_are_refused_naming_the_field(thread, kwargs, field):
    with pytest.raises(InvalidInput) as err:
        queries.trace_forward(thread[CC1], **kwargs)
    assert err.value.field == field


def test_a_metre_range_on_a_unit_without_metres_is_refused(thread):
    with pytest.raises(InvalidInput) as err:
        queries.trace_forward(thread.cell(1), start_m=0.0, end_m=1.0)
    assert err.value.field == "start_m"


def test_a_window_that_ends_before_it_starts_is_refused(thread):
    fill = thread.plant.stations["fill"]
    with pytest.raises(InvalidInput) as err:
        queries.trace_forward_window(station=fill, start=thread.t0, end=thread.t0)
    assert err.value.field == "end"


def test_timeline_lists_visits_with_measurements_against_limits(thread):
    timeline = queries.unit_timeline(thread.cell(5))

    assert len(timeline) == 1
    visit = timeline[0]
    assert (visit.station.code, visit.equipment.code, visit.program, visit.operator) == (
        "fill",
        "cw-1",
        "FILL-105AH-V3",
        "op-117",
    )
    assert visit.started_at == thread.t0 + timedelta(days=1, minutes=40)
    assert visit.ended_at == visit.started_at + timedelta(minutes=2)
    (m,) = visit.measurements
    assert (m.code, m.unit, m.value, m.lsl, m.nominal, m.usl, m.in_spec) == (
        "electrolyte-fill-mass",
        "g",
        404.2,
        405.9,
        410.0,
        414.1,
        False,
    )
    assert visit.out_of_spec == 1 and m.special_class == "cc"


def test_timeline_groups_measurements_without_a_visit_by_station(thread):
    timeline = queries.unit_timeline(thread[CC1])

    assert len(timeline) == 1
    entry = timeline[0]
    assert entry.visit_id is None and entry.station.code == "coat-c"
    assert [(m.position_m, m.value, m.in_spec) for m in entry.measurements] == [
        (1500.0, 23.02, True),
        (1512.5, 23.41, False),
        (1525.0, 23.02, True),
    ]
    assert entry.started_at == thread.t0 + timedelta(hours=2)
    assert entry.ended_at == thread.t0 + timedelta(hours=2, minutes=2)


def test_neighbours_are_one_level_active_and_removed(thread):
    module = thread[MODULES[0]]
    cell_replace(
        assembly=module,
        removed=thread.cell(3),
        replacement=thread.cell(16),
        actor=thread.actor,
        reason="Tab weld resistance high",
    )

    links = queries.unit_neighbours(module)

    assert (links.upstream_count, links.downstream_count) == (4, 1)
    upstream = [(li.source.serial, li.slot, li.removed_at is None) for li in links.upstream]
    assert upstream == [
        (cell_serial(1), "C01", True),
        (cell_serial(2), "C02", True),
        (cell_serial(3), "C03", False),
        (cell_serial(16), "C03", True),
    ]
    assert [(link.target.serial, link.slot) for link in links.downstream] == [(PACKS[0], "M01")]
    first_two = queries.unit_neighbours(module, limit=2)
    assert (len(first_two.upstream), first_two.upstream_count) == (2, 4)
