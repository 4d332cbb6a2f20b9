"""simulate: VINs, determinism per seed, numbering across runs, refusals and the live mode
(the genealogy and faults of one run are in ``test_simulate_run.py``)."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

from compliance.demo.line import vin_check_digit, vin_is_valid, vin_make
from compliance.demo.plant import PRISMATIC
from genealogy.choices import UnitKind
from genealogy.models import Link, Measurement, Unit

pytestmark = pytest.mark.django_db


def _simulate(cells: int = 200, seed: int = 3, **kwargs) -> str:
    out = StringIO()
    call_command("simulate", cells=cells, seed=seed, stdout=out, **kwargs)
    return out.getvalue()


def _snapshot() -> tuple[list, list, list]:
    units = list(Unit.objects.order_by("kind", "serial").values_list("kind", "serial", "status"))
    values = list(
        Measurement.objects.order_by(
            "unit__serial", "characteristic__code", "position_m", "id"
        ).values_list("unit__serial", "characteristic__code", "position_m", "value")
    )
    links = list(
        Link.objects.order_by("source__serial", "target__serial", "id").values_list(
            "source__serial", "target__serial", "kind", "slot", "start_m", "end_m", "quantity"
        )
    )
    return units, values, links


def _active_links(kind: str):
    return Link.objects.filter(kind=kind, removed_at__isnull=True)


# --- VINs -----------------------------------------------------------------------------------


def test_vin_check_digit_matches_the_published_example():
    # The worked example of the North American VIN check digit rule (49 CFR 565).
    assert vin_check_digit("1M8GDM9A_KP042788".replace("_", "0")) == "X"
    assert vin_is_valid("1M8GDM9AXKP042788")
    assert not vin_is_valid("1M8GDM9A5KP042788")
    assert not vin_is_valid("1M8GDM9AXKP04278O")  # letter O is not allowed


def test_vin_make_places_the_check_digit_in_position_9():
    vin = vin_make(PRISMATIC.vehicle, 42)
    assert vin[:8] == "WCTBE1A4" and vin[9:] == "TG000042"
    assert len(vin) == 17 and vin_is_valid(vin)


# --- Determinism ------------------------------------------------------------------------------


def test_same_seed_on_a_fresh_database_gives_the_same_serials_and_values():
    with transaction.atomic():
        _simulate(200, 3)
        first = _snapshot()
        transaction.set_rollback(True)
    assert not Unit.objects.exists()

    _simulate(200, 3)
    second = _snapshot()

    assert second == first
    assert (len(first[0]), len(first[1])) == (257, 3919)


def test_another_seed_gives_other_values():
    with transaction.atomic():
        _simulate(40, 3)
        first = _snapshot()
        transaction.set_rollback(True)
    _simulate(40, 4)
    second = _snapshot()
    assert [u[1] for u in second[0] if u[0] == "cell"] == [u[1] for u in first[0] if u[0] == "cell"]
    assert second[1] != first[1]


# --- Numbering across runs, refusals, live mode --------------------------------------------------


def test_a_second_run_continues_the_numbering():
    _simulate(20, 7)
    _simulate(20, 7)
    cells = list(
        Unit.objects.filter(kind=UnitKind.CELL, line__code="L1-PRI")
        .order_by("serial")
        .values_list("serial", flat=True)
    )
    assert cells == [f"P1{n:010d}" for n in range(1, 21)]
    coils = sorted(Unit.objects.filter(kind=UnitKind.COIL).values_list("serial", flat=True))
    assert coils[:2] == ["EC1-A-000001", "EC1-A-000002"]
    assert Unit.objects.filter(kind=UnitKind.MATERIAL_LOT).count() == 20


def test_an_end_in_the_future_is_refused_and_nothing_is_written():
    future = (timezone.now() + timedelta(days=1)).isoformat()
    with pytest.raises(CommandError, match="in the future"):
        _simulate(20, 3, until=future)
    assert not Unit.objects.exists()


def test_live_mode_runs_the_requested_number_of_batches():
    out = StringIO()
    call_command("simulate", live=True, iterations=3, interval=0, seed=3, stdout=out)
    lines = out.getvalue().splitlines()
    # Cell 1 of each line is the destructive pull sample of its weld batch, so the first
    # prismatic module waits for the third batch.
    assert lines[1].startswith("batch 1: L1-PRI: 12 cells P10000000001..P10000000012, 0 modules")
    assert lines[2].startswith("batch 2: L2-CYL: 46 cells C20000000001..C20000000046, 0 modules")
    assert lines[3].startswith("batch 3: L1-PRI: 12 cells P10000000013..P10000000024, 1 modules")
    assert lines[-1] == "Live line stopped after 3 batches."
    assert Unit.objects.filter(kind=UnitKind.CELL).count() == 12 + 46 + 12
    newest = Measurement.objects.order_by("-measured_at").first().measured_at
    assert newest <= timezone.now()
