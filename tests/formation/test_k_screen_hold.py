"""K-value screen failures at grading are held by compliance, so module assembly refuses
them; grading again publishes nothing new and the hold is placed once."""

from __future__ import annotations

import pytest

from compliance.choices import HoldSource, HoldStatus
from compliance.models import Hold
from compliance.services import formation_hold
from formation import services
from genealogy.choices import UnitStatus
from genealogy.models import Unit
from tests.formation.test_services import _rules, engineer, population  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]


def test_cells_failing_the_k_screen_are_held_before_module_assembly(
    population,  # noqa: F811
    formation_plant,
    engineer,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    ids = [u.pk for u in population.values()]
    services.features_compute(cell_ids=ids)
    _rules(formation_plant.line, engineer)

    with django_capture_on_commit_callbacks(execute=True):
        services.cells_grade(cell_ids=ids, actor=engineer)

    [hold] = Hold.objects.filter(source=HoldSource.FORMATION)
    assert hold.status == HoldStatus.OPEN
    assert set(hold.units.values_list("serial", flat=True)) == {"P1LA00017", "P1LB00017"}
    assert "K-value 0.6 mV/day above the absolute limit 0.5" in hold.reason
    assert set(
        Unit.objects.filter(serial__in=["P1LA00017", "P1LB00017"]).values_list("status", flat=True)
    ) == {UnitStatus.ON_HOLD}
    assert Unit.objects.get(serial="P1LA00003").status == UnitStatus.IN_PROCESS

    # The task may run twice (at-least-once delivery): the cells are held once.
    assert formation_hold(cell_ids=ids) == []
    assert Hold.objects.filter(source=HoldSource.FORMATION).count() == 1
