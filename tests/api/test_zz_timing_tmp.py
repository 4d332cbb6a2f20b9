import time
import pytest
from genealogy.choices import UnitKind
from genealogy.services import units_create_bulk
from tests.api.conftest import cell_serial
from tests.api.test_measurements import fill_row, T0
from datetime import timedelta
pytestmark = pytest.mark.django_db
@pytest.mark.parametrize("n", [5000, 20000])
def test_time(write_client, plant, actor, n):
    cells = units_create_bulk(kind=UnitKind.CELL, serials=[cell_serial(i) for i in range(1, n+1)], line=plant.line, actor=actor)
    rows = [fill_row(c.serial, 410.0, plant, T0 + timedelta(seconds=i)) for i, c in enumerate(cells)]
    write_client.get("/api/v1/plant/sites/")
    t = time.perf_counter()
    r = write_client.post("/api/v1/measurements/record/", {"rows": rows}, format="json")
    print(f"\n{n} rows: {time.perf_counter()-t:.2f}s status {r.status_code} {r.content[:300]}")
    t = time.perf_counter()
    r = write_client.get("/api/v1/interlock/", {"unit": cells[0].serial, "station": "l1-pri/fill"})
    print(f"interlock: {(time.perf_counter()-t)*1000:.1f} ms")
