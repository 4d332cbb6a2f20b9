"""Recall scope: segment vs coil vs lot level, VIN lists, streaming, CSV and XLSX exports.

Runs unchanged on SQLite and on PostgreSQL (DATABASE_URL).
"""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from openpyxl import load_workbook

from genealogy import exports, queries
from genealogy.queries import ScopeUnit
from tests.genealogy.conftest import VINS, cell_serial

pytestmark = pytest.mark.django_db

CC1 = "CC-260303-001"
L2R2 = "SC-260303-001-L2-R2"
MODULES = [f"M26110{m:05d}" for m in range(1, 6)]
PACKS = [f"PK26110{p:05d}" for p in range(1, 4)]
LOTS = [
    "ALF-12-2610-0551",
    "CAM-NMC811-2611-0042",
    "CB-C65-2610-113",
    "PVDF-5130-2609-007",
    "MXC-260302-01",
]
GENERATED = datetime(2026, 3, 20, 8, 30, tzinfo=UTC)


def counts(vehicles: int, packs: int, modules: int, cells: int) -> dict[str, int]:
    return {"vehicles": vehicles, "packs": packs, "modules": modules, "cells": cells}


@pytest.fixture
def segment_scope(thread):
    return queries.recall_scope(unit=thread[CC1], start_m=1510.0, end_m=1525.0)


def test_segment_scope_lists_exactly_the_affected_cells_modules_packs_and_vins(segment_scope):
    scope = segment_scope

    assert scope.level == "segment"
    assert scope.description == "electrode coil (mother roll) CC-260303-001 metres [1510, 1525)"
    assert scope.counts == counts(2, 2, 4, 7)
    assert scope.vins == [VINS[0], VINS[1]]
    assert scope.lists == {
        "vehicles": [VINS[0], VINS[1]],
        "packs": PACKS[:2],
        "modules": MODULES[:4],
        "cells": [cell_serial(n) for n in (2, 3, 4, 5, 8, 9, 10)],
    }


def test_lot_level_is_wider_than_coil_level_which_is_wider_than_the_segment(segment_scope):
    levels = {lv.level: lv for lv in segment_scope.levels}

    assert [lv.level for lv in segment_scope.levels] == ["segment", "coil", "lot"]
    assert levels["segment"].counts == counts(2, 2, 4, 7)
    # The whole coil adds c01, c06, c07, c11-c13 and with c13 module M5, pack 3, VIN 3.
    assert levels["coil"].counts == counts(3, 3, 5, 13)
    assert levels["coil"].inputs == [CC1]
    # Lot level: the CAM, binder, carbon and foil lots and the batch also fed the second
    # coil (c14-c16).
    assert levels["lot"].counts == counts(3, 3, 5, 16)
    assert levels["lot"].inputs == LOTS
    assert (
        levels["lot"].counts["cells"]
        > levels["coil"].counts["cells"]
        > levels["segment"].counts["cells"]
    )
    assert (levels["segment"].factor, levels["coil"].factor, levels["lot"].factor) == (
        1.0,
        1.86,
        2.29,
    )
    assert segment_scope.reduction_factor == 2.29


def test_slit_coil_segment_scope_adds_the_mother_coil_level(thread):
    scope = queries.recall_scope(unit=thread[L2R2], start_m=26.0, end_m=32.0)

    assert [lv.level for lv in scope.levels] == ["segment", "coil", "mother_coil", "lot"]
    assert scope.lists["cells"] == [cell_serial(11)]
    by_level = {lv.level: lv for lv in scope.levels}
    assert by_level["coil"].counts == counts(1, 1, 2, 6)  # c07-c12 on this lane
    assert by_level["mother_coil"].inputs == [CC1]
    assert by_level["mother_coil"].counts == counts(3, 3, 5, 13)
    assert scope.reduction_factor == 16.0


def test_scope_without_lists_streams_them_from_a_cursor(thread, segment_scope):
    scope = queries.recall_scope(
        unit=thread[CC1], start_m=1510.0, end_m=1525.0, with_lists=False, with_comparison=False
    )

    assert scope.lists is None
    assert scope.counts == segment_scope.counts
    assert [lv.level for lv in scope.levels] == ["segment"]
    assert scope.reduction_factor is None
    rows = list(scope.iter_units())
    assert all(type(row) is ScopeUnit for row in rows)
    assert [(r.kind, r.serial) for r in rows][:3] == [
        ("vehicle", VINS[0]),
        ("vehicle", VINS[1]),
        ("pack", PACKS[0]),
    ]
    assert scope.serials("cells") == segment_scope.lists["cells"]
    assert len(rows) == 15


def test_scope_of_a_cell_is_the_cell_and_what_it_went_into(thread):
    scope = queries.recall_scope(unit=thread.cell(5))

    assert scope.level == "unit"
    assert scope.lists == {
        "vehicles": [VINS[0]],
        "packs": [PACKS[0]],
        "modules": [MODULES[1]],
        "cells": [cell_serial(5)],
    }
    assert [lv.level for lv in scope.levels] == ["unit"]


def test_scope_of_a_mix_batch_compares_with_its_material_lots(thread):
    scope = queries.recall_scope(unit=thread["MXC-260302-02"])

    assert [lv.level for lv in scope.levels] == ["batch", "lot"]
    assert scope.counts == counts(1, 1, 1, 3)  # c14-c16; only c14, c15 are in module M5
    assert scope.levels[1].counts == counts(3, 3, 5, 16)


def test_scope_of_a_station_window(thread):
    start = thread.t0 + timedelta(days=1, minutes=40)

    scope = queries.recall_scope(
        station=thread.plant.stations["fill"],
        equipment=thread.plant.equipment["weigher"],
        start=start,
        end=start + timedelta(minutes=30),
    )

    assert scope.level == "station_window"
    assert scope.counts == counts(2, 2, 2, 3)
    assert scope.lists["cells"] == [cell_serial(n) for n in (5, 6, 7)]
    assert scope.input["equipment"] == "cw-1"


def test_csv_export_has_the_input_the_comparison_and_every_list(thread):
    scope = queries.recall_scope(unit=thread[CC1], start_m=1510.0, end_m=1525.0, with_lists=False)

    text = "".join(exports.recall_scope_csv(scope, generated_at=GENERATED))

    rows = list(csv.reader(io.StringIO(text)))
    assert rows[:6] == [
        ["Celltrace recall scope"],
        ["input", "electrode coil (mother roll) CC-260303-001 metres [1510, 1525)"],
        ["level", "segment"],
        ["genealogy as of", "current genealogy"],
        ["generated at", "2026-03-20T08:30:00+00:00"],
        ["reduction factor", "2.29"],
    ]
    header = rows.index(exports.LEVEL_HEADER)
    assert rows[header + 1 : header + 4] == [
        ["segment", scope.levels[0].description, "2", "2", "4", "7", "1.0"],
        ["coil", "whole electrode coil (mother roll) CC-260303-001", "3", "3", "5", "13", "1.86"],
        ["lot", scope.levels[2].description, "3", "3", "5", "16", "2.29"],
    ]
    units = rows[rows.index(exports.UNIT_HEADER) + 1 :]
    assert units == [
        ["vehicle", VINS[0], "in_process"],
        ["vehicle", VINS[1], "in_process"],
        ["pack", PACKS[0], "in_process"],
        ["pack", PACKS[1], "in_process"],
        *[["module", m, "in_process"] for m in MODULES[:4]],
        *[["cell", cell_serial(n), "in_process"] for n in (2, 3, 4, 5, 8, 9, 10)],
    ]
    assert exports.filename(scope, "csv", generated_at=GENERATED) == (
        "recall-scope-CC-260303-001-1510-1525m-20260320T083000Z.csv"
    )


def test_xlsx_export_has_a_summary_and_one_sheet_per_kind(thread):
    scope = queries.recall_scope(unit=thread[CC1], start_m=1510.0, end_m=1525.0)

    wb = load_workbook(exports.recall_scope_xlsx(scope, generated_at=GENERATED))

    assert wb.sheetnames == ["Summary", "Vehicles", "Packs", "Modules", "Cells"]
    summary = [list(r) for r in wb["Summary"].iter_rows(values_only=True)]
    assert summary[1][:2] == ["input", scope.description]
    assert summary[5][:2] == ["reduction factor", 2.29]
    header = summary.index(exports.LEVEL_HEADER)
    assert [r[:7] for r in summary[header + 1 : header + 4]] == [
        ["segment", scope.levels[0].description, 2, 2, 4, 7, 1.0],
        ["coil", scope.levels[1].description, 3, 3, 5, 13, 1.86],
        ["lot", scope.levels[2].description, 3, 3, 5, 16, 2.29],
    ]
    vins = [list(r) for r in wb["Vehicles"].iter_rows(values_only=True)]
    assert vins == [["VIN", "status"], [VINS[0], "in_process"], [VINS[1], "in_process"]]
    cells = [r[0] for r in wb["Cells"].iter_rows(min_row=2, values_only=True)]
    assert cells == [cell_serial(n) for n in (2, 3, 4, 5, 8, 9, 10)]
    assert [r[0] for r in wb["Modules"].iter_rows(min_row=2, values_only=True)] == MODULES[:4]
