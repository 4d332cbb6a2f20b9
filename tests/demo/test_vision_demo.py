"""vision_demo: the demo plant's cathode camera inspects a stretch of a simulated coil that
cells were made from, through the real vision worker and ingest."""

from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError

from compliance.roles import roles_sync
from inspection.choices import Verdict
from inspection.models import Defect, InspectionResult

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]


def _seed() -> None:
    if not Group.objects.exists():
        roles_sync()  # a transactional test flushed the groups the migration made
    call_command("seed_demo", stdout=StringIO())


# The worker stores results from its own emission thread (its own connection): committed.
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_the_demo_camera_inspects_a_coil_cells_were_made_from():
    _seed()
    call_command("simulate", cells=60, seed=5, stdout=StringIO())
    out = StringIO()

    call_command("vision_demo", frames=24, defect_every=6, speed_m_min=0, stdout=out)

    results = InspectionResult.objects.order_by("frame_id")
    assert results.count() == 24
    coil = results[0].coil
    assert coil.serial.startswith("EC1-C-")  # the prismatic line's cathode mother coil
    assert [r.frame_id for r in results] == list(range(24))
    assert results.exclude(verdict=Verdict.UNINSPECTED).exists()
    assert Defect.objects.exists()
    assert results[0].camera.flat_field  # commissioned on the first run
    first_end = max(results.values_list("coil_end_m", flat=True))

    call_command("vision_demo", frames=6, defect_every=0, speed_m_min=0, stdout=StringIO())
    again = InspectionResult.objects.filter(frame_id__gte=24)
    assert sorted(again.values_list("frame_id", flat=True)) == list(range(24, 30))
    # The next stretch of the same coil, where the first run ended.
    assert again.order_by("coil_start_m")[0].coil_start_m == pytest.approx(first_end, abs=1e-3)
    assert set(again.values_list("coil_id", flat=True)) == {coil.pk}


def test_without_a_simulated_coil_it_says_what_to_run():
    _seed()
    with pytest.raises(CommandError, match="run simulate first"):
        call_command("vision_demo", frames=2, speed_m_min=0, stdout=StringIO())
