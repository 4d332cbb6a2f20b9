"""Two stations racing for the same coil metres on PostgreSQL: exactly one wins."""

import threading

import pytest
from django.db import connection, connections

from genealogy.choices import UnitKind
from genealogy.models import Link
from genealogy.services import coil_segment_consume, unit_create
from qms.exceptions import Refused
from tests.conftest import require_service
from tests.factories import UserFactory

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_overlapping_consumption_races_leave_one_link(plant):
    require_service("PostgreSQL (DATABASE_URL)", connection.vendor == "postgresql")
    actor = UserFactory(username="op", role="operator")
    coil = unit_create(
        kind=UnitKind.SLIT_COIL,
        serial="SC-C-000001-A",
        line=plant.line,
        length_m=1500.0,
        actor=actor,
    )
    cells = [
        unit_create(kind=UnitKind.CELL, serial=f"P12648000000{i}", line=plant.line, actor=actor)
        for i in range(2)
    ]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def station(cell, start):
        try:
            barrier.wait()
            coil_segment_consume(
                coil=coil, consumer=cell, start_m=start, end_m=start + 0.9, actor=actor
            )
            outcomes.append("linked")
        except Refused as exc:
            outcomes.append(exc.code)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=station, args=(c, 100.0 + 0.3 * i)) for i, c in enumerate(cells)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["linked", "segment_overlap"]
    assert Link.objects.filter(source=coil).count() == 1
