"""Cells scored above their product's quarantine threshold are held by compliance (hold
source "thermal-risk score"), so the module-assembly interlock refuses them; the hold names
the risk, the threshold, the model version and the reasons in words."""

from __future__ import annotations

import pytest

from compliance.choices import HoldSource, HoldStatus
from compliance.models import Hold
from compliance.services import hold_place, hold_release, risk_hold, system_actor
from genealogy.choices import UnitStatus
from risk import services
from risk.models import RiskScore
from tests.risk.conftest import features_write

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]

OUTLIER = 5  # the cell that self-discharges ten times its lot's rate (a micro-short)


def _risk_holds():
    return Hold.objects.filter(source=HoldSource.RISK).order_by("pk")


def test_the_quarantined_cell_is_held_and_the_others_are_not(thread, risk_model, committed):
    features_write(thread.cells, outlier_index=OUTLIER)
    ids = [c.pk for c in thread.cells]

    scores = committed(services.cells_score, cell_ids=ids, actor=thread.actor)

    quarantined = [s for s in scores if s.quarantined]
    assert thread.cells[OUTLIER].pk in {s.unit_id for s in quarantined}
    [hold] = _risk_holds()
    assert hold.status == HoldStatus.OPEN
    assert set(hold.units.values_list("pk", flat=True)) == {s.unit_id for s in quarantined}
    bad = thread.cells[OUTLIER]
    bad.refresh_from_db()
    assert bad.status == UnitStatus.ON_HOLD
    assert f"of model {risk_model.version}" in hold.reason
    assert f"{bad.serial} risk " in hold.reason
    assert "K-value 50.0 MAD above lot median" in hold.reason
    assert hold.source_reference.startswith(f"risk score #{quarantined[0].pk}")
    typical = thread.cells[0]
    typical.refresh_from_db()
    assert typical.status != UnitStatus.ON_HOLD

    # At-least-once delivery: the task may run again; nothing new is held.
    assert risk_hold(score_ids=[s.pk for s in scores]) == []
    # Scoring again while the cell is still held does not hold it a second time.
    committed(services.cells_score, cell_ids=ids)
    assert _risk_holds().count() == 1


def test_only_the_latest_score_counts_and_scrapped_cells_are_left_alone(thread, risk_model):
    features_write(thread.cells, outlier_index=OUTLIER)
    bad = thread.cells[OUTLIER]
    [old] = services.cells_score(cell_ids=[bad.pk])
    assert old.quarantined
    newer = RiskScore.objects.create(
        **{
            f.name: getattr(old, f.name)
            for f in RiskScore._meta.concrete_fields
            if f.name not in ("id",)
        }
        | {"risk": 0.0001, "quarantined": False, "scored_at": old.scored_at}
    )
    assert newer.pk > old.pk
    assert risk_hold(score_ids=[old.pk]) == []  # superseded by a score below the threshold

    newer.delete()
    bad.status = UnitStatus.SCRAPPED
    bad.save()
    assert risk_hold(score_ids=[old.pk]) == []
    assert not _risk_holds().exists()


def test_a_released_cell_is_held_again_only_by_a_later_score(thread, risk_model, committed):
    features_write(thread.cells, outlier_index=OUTLIER)
    bad = thread.cells[OUTLIER]
    [first] = committed(services.cells_score, cell_ids=[bad.pk])
    [hold] = _risk_holds()
    hold_release(hold=hold, actor=system_actor(), reason="MRB: CT scan clean, use as is")
    bad.refresh_from_db()
    assert bad.status != UnitStatus.ON_HOLD

    # The score it was released from holds nothing again ...
    assert risk_hold(score_ids=[first.pk]) == []
    # ... a later score above the threshold (new evidence) does.
    [later] = committed(services.cells_score, cell_ids=[bad.pk])
    assert later.quarantined
    assert _risk_holds().count() == 2
    bad.refresh_from_db()
    assert bad.status == UnitStatus.ON_HOLD


def test_a_cell_on_another_hold_keeps_it_and_gets_the_risk_hold_too(thread, risk_model, committed):
    features_write(thread.cells, outlier_index=OUTLIER)
    bad = thread.cells[OUTLIER]
    manual = hold_place(
        units=[bad],
        reason="Dropped at the tray loader",
        source=HoldSource.MANUAL,
        actor=system_actor(),
    )
    committed(services.cells_score, cell_ids=[bad.pk])
    [risk] = _risk_holds()
    hold_release(hold=manual, actor=system_actor(), reason="Inspected, no damage")
    bad.refresh_from_db()
    assert bad.status == UnitStatus.ON_HOLD  # the risk hold still covers it
    assert risk.units.get() == bad
