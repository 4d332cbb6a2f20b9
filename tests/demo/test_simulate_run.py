"""simulate: one 200-cell run on a fresh database, and what it must have built: genealogy
invariants (segments, modules, packs, VINs), timestamps, and the injected faults."""

import itertools
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from compliance.choices import HoldSource, HoldStatus
from compliance.demo.line import split_cells, vin_is_valid
from compliance.models import Hold
from genealogy.choices import LinkKind, UnitKind, UnitStatus, VisitResult
from genealogy.models import Link, Measurement, StationVisit, Unit

pytestmark = pytest.mark.django_db

FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _active_links(kind: str):
    return Link.objects.filter(kind=kind, removed_at__isnull=True)


# --- One run of 200 cells: what it built ---------------------------------------------------------


@pytest.fixture(scope="module")
def run200(django_db_setup, django_db_blocker):
    """One 200-cell run shared by the tests of this module (read-only for them), rolled back
    at the end of the module."""
    until = (timezone.now() - timedelta(hours=2)).replace(microsecond=0)
    with django_db_blocker.unblock(), override_settings(PASSWORD_HASHERS=FAST_HASHERS):
        run = transaction.atomic()
        run.__enter__()
        try:
            out = StringIO()
            call_command("simulate", cells=200, seed=3, until=until.isoformat(), stdout=out)
            yield until, out.getvalue()
        finally:
            transaction.set_rollback(True)
            run.__exit__(None, None, None)


def test_run_builds_cells_modules_packs_and_vehicles(run200):
    assert split_cells(200) == {"L1-PRI": 100, "L2-CYL": 100}
    counts = {
        kind: Unit.objects.filter(kind=kind).count()
        for kind in ("material_lot", "mix_batch", "coil", "slit_coil", "cell", "module", "pack")
    }
    assert counts == {
        "material_lot": 10,
        "mix_batch": 4,
        "coil": 4,
        "slit_coil": 28,
        "cell": 200,
        "module": 9,
        "pack": 1,
    }
    assert Unit.objects.filter(kind=UnitKind.VEHICLE).count() == 1
    cells = Unit.objects.filter(kind=UnitKind.CELL, line__code="L1-PRI").order_by("serial")
    assert (cells.first().serial, cells.last().serial) == ("P10000000001", "P10000000100")
    assert cells.first().gtin == "04260123450014"


def test_every_assembled_cell_consumed_a_cathode_and_an_anode_segment(run200):
    in_modules = _active_links(LinkKind.ASSEMBLED).filter(target__kind=UnitKind.MODULE)
    assert in_modules.count() == 8 * 12 + 1 * 46
    for link in in_modules.select_related("source"):
        consumed = list(
            _active_links(LinkKind.CONSUMED)
            .filter(target=link.source, source__kind=UnitKind.SLIT_COIL)
            .values_list("source__serial", "start_m", "end_m")
        )
        electrodes = sorted(serial.split("-")[1] for serial, _s, _e in consumed)
        assert electrodes == ["A", "C"], link.source.serial
        lengths = {serial.split("-")[1]: round(e - s, 3) for serial, s, e in consumed}
        expected = (
            {"C": 6.5, "A": 6.8}
            if link.source.serial.startswith("P1")
            else {
                "C": 0.86,
                "A": 0.92,
            }
        )
        assert lengths == expected


def test_segments_never_overlap_and_lie_inside_their_coil(run200):
    for slit in Unit.objects.filter(kind=UnitKind.SLIT_COIL):
        segments = list(
            _active_links(LinkKind.CONSUMED)
            .filter(source=slit)
            .order_by("start_m")
            .values_list("start_m", "end_m")
        )
        for (_s1, e1), (s2, _e2) in itertools.pairwise(segments):
            assert e1 <= s2, slit.serial
        assert all(0 <= s < e <= slit.length_m for s, e in segments)
        mother = Link.objects.get(target=slit, kind=LinkKind.SLIT)
        assert (mother.start_m, mother.end_m) == (0.0, slit.length_m)


def test_coils_carry_a_loading_profile_every_10_m(run200):
    coil = Unit.objects.get(serial="EC2-C-000001")
    positions = list(
        Measurement.objects.filter(unit=coil, characteristic__code="cathode-areal-loading")
        .order_by("position_m")
        .values_list("position_m", flat=True)
    )
    assert positions[:3] == [5.0, 15.0, 25.0]
    assert len(positions) == int(coil.length_m // 10)
    mix = Link.objects.get(target=coil, source__kind=UnitKind.MIX_BATCH)
    assert mix.quantity_unit == "kg" and mix.quantity > 0
    lots = Link.objects.filter(target=mix.source, source__kind=UnitKind.MATERIAL_LOT)
    assert sorted(lots.values_list("source__supplier", flat=True)) == [
        "Aurora Cathode Materials",
        "Carbona Additives",
        "Rheinfluor Polymers",
    ]


def test_packs_go_into_vehicles_with_valid_vins(run200):
    packs = Unit.objects.filter(kind=UnitKind.PACK)
    for pack in packs:
        into = _active_links(LinkKind.ASSEMBLED).get(source=pack)
        assert into.target.kind == UnitKind.VEHICLE and into.slot == "HV-BATTERY"
        assert vin_is_valid(into.target.serial)
        modules = _active_links(LinkKind.ASSEMBLED).filter(target=pack)
        assert sorted(modules.values_list("slot", flat=True)) == [f"M{i:02d}" for i in range(1, 9)]
    assert list(Unit.objects.filter(kind=UnitKind.VEHICLE).values_list("serial", flat=True)) == [
        "WCTBE1A45TG000001"
    ]


def test_timestamps_are_aware_utc_and_never_after_the_end(run200):
    until, _ = run200
    latest_measurement = Measurement.objects.order_by("-measured_at").first().measured_at
    latest_visit = StationVisit.objects.order_by("-ended_at").first().ended_at
    latest_unit = Unit.objects.order_by("-produced_at").first().produced_at
    assert max(latest_measurement, latest_visit, latest_unit) <= until
    assert latest_measurement.utcoffset() == timedelta(0)
    earliest = Unit.objects.order_by("produced_at").first().produced_at
    assert until - earliest < timedelta(days=30)


# --- Injected faults ------------------------------------------------------------------------------


def test_coating_streak_holds_exactly_the_cells_that_consumed_the_bad_metres(run200):
    hold = Hold.objects.get(source=HoldSource.SPC)
    assert hold.reason.startswith("Cathode areal loading ")
    assert "of coil EC2-C-000001 (coating streak)" in hold.reason
    assert hold.placed_by.username == "quality"
    bad = Measurement.objects.get(unit__serial="EC2-C-000001", in_spec=False)
    start, end = bad.position_m - 5.0, bad.position_m + 5.0
    assert f"metres [{start:g}, {end:g})" in hold.reason
    consumed = set(
        _active_links(LinkKind.CONSUMED)
        .filter(source__serial__startswith="EC2-C-000001-", start_m__lt=end, end_m__gt=start)
        .exclude(target__status=UnitStatus.SCRAPPED)
        .values_list("target_id", flat=True)
    )
    held = set(hold.units.values_list("pk", flat=True))
    assert held == consumed and len(held) == 24
    assert not _active_links(LinkKind.ASSEMBLED).filter(source_id__in=held).exists()
    assert set(Unit.objects.filter(pk__in=held).values_list("status", flat=True)) == {"on_hold"}


def test_fill_mass_outlier_is_held_and_not_assembled(run200):
    hold = Hold.objects.get(source=HoldSource.OUT_OF_SPEC, reason__startswith="Electrolyte fill")
    cell = hold.units.get()
    value = Measurement.objects.get(unit=cell, characteristic__code="fill-mass")
    assert not value.in_spec and value.value < 4.95
    assert hold.status == HoldStatus.OPEN and cell.status == UnitStatus.ON_HOLD
    assert StationVisit.objects.get(unit=cell, station__code="fill").result == VisitResult.NOK
    assert not Link.objects.filter(source=cell, kind=LinkKind.ASSEMBLED).exists()


def test_leak_nok_cell_is_scrapped_by_mrb_and_never_assembled(run200):
    hold = Hold.objects.get(source=HoldSource.OUT_OF_SPEC, reason__startswith="Helium leak")
    cell = hold.units.get()
    cell.refresh_from_db()
    assert cell.status == UnitStatus.SCRAPPED
    assert hold.status == HoldStatus.RELEASED and hold.released_by.username == "mrb"
    assert hold.release_reason.startswith("MRB disposition: scrap (helium leak ")
    assert not Link.objects.filter(source=cell, kind=LinkKind.ASSEMBLED).exists()
    assert not StationVisit.objects.filter(unit=cell, station__code="aging").exists()


def test_rework_replaces_a_cell_keeping_both_links(run200):
    removed_link = Link.objects.get(kind=LinkKind.ASSEMBLED, removed_at__isnull=False)
    module, slot = removed_link.target, removed_link.slot
    replacement = _active_links(LinkKind.ASSEMBLED).get(target=module, slot=slot)
    assert replacement.source != removed_link.source
    assert removed_link.removed_reason.startswith("cell-voltage spread ")
    assert replacement.linked_at == removed_link.removed_at
    module_hold = Hold.objects.get(units=module)
    assert module_hold.status == HoldStatus.RELEASED
    assert module_hold.release_reason.startswith("MRB disposition: rework")
    cell_hold = Hold.objects.get(source=HoldSource.STATION)
    assert list(cell_hold.units.all()) == [removed_link.source]
    assert f"Removed from {module.serial} slot {slot} at rework" in cell_hold.reason
    results = list(
        StationVisit.objects.filter(unit=module, station__code="mod")
        .order_by("started_at", "id")
        .values_list("result", flat=True)
    )
    assert results == ["nok", "ok"]


def test_only_pull_samples_and_the_leak_cell_are_scrapped(run200):
    scrapped = set(Unit.objects.filter(status=UnitStatus.SCRAPPED).values_list("serial", flat=True))
    leak = Hold.objects.get(reason__startswith="Helium leak").units.get().serial
    assert scrapped == {"P10000000001", "C20000000001", leak}
    pulls = Measurement.objects.filter(
        unit__serial="P10000000001", characteristic__code="tab-pull-force"
    )
    assert pulls.count() == 2 and all(m.in_spec for m in pulls)
