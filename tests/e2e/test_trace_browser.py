"""The trace page in a real browser: Debian's headless Chromium driven by Playwright.

A quality engineer logs in through the login form, types a VIN into the trace form and
reads the answer the page swapped in: pack, modules, cells, the exact coil segments down to
the mother coil, the material lots, the timeline with an out-of-spec value marked, and the
open holds. Skips where no browser is installed; fails under ``QMS_REQUIRE_SERVICES=1``.
"""

import re

import pytest

from tests.e2e.conftest import SCREENSHOTS
from tests.factories import UserFactory, build_plant
from tests.web.thread import (
    ANODE_SLIT,
    CATHODE_MOTHER,
    CATHODE_SLIT,
    ELECTROLYTE_LOT,
    MODULES,
    OOS_CELL,
    PACK,
    SUPPLIER_HOLD_REASON,
    VIN,
    build_vehicle_thread,
    cell_serial,
)

PASSWORD = "Cell-trace-2026"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.usefixtures("chromium_present"),
]


def texts(locator) -> list[str]:
    """The text of each matched element as written (no CSS text-transform), spaces folded."""
    return [" ".join(t.split()) for t in locator.all_text_contents()]


@pytest.fixture
def thread(transactional_db, celery_eager):
    """The vehicle's thread, committed so the live server sees it. Out-of-spec values
    trigger the automatic hold reaction on commit (run in-process here)."""
    return build_vehicle_thread(build_plant())


@pytest.fixture
def quality_engineer(transactional_db):
    return UserFactory(username="qe-lena", role="quality_engineer", password=PASSWORD)


def test_quality_engineer_traces_a_vin_down_to_coil_segments(
    live_server, thread, quality_engineer, browser
):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(15_000)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))

    # Given: the login page, reached by asking for the trace page.
    page.goto(f"{live_server.url}/trace/")
    assert page.url.startswith(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", quality_engineer.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/trace/")
    assert page.locator("[data-testid=role]").inner_text().strip() == "Quality engineer"
    assert page.locator("[data-testid=read-only]").count() == 0

    # When: the VIN is typed and the form submitted (htmx swaps the result panel).
    page.fill("input[name=serial]", VIN)
    with page.expect_response(lambda r: "/trace/?serial=" in r.url) as answer:
        page.press("input[name=serial]", "Enter")
    assert answer.value.status == 200
    assert answer.value.request.headers.get("hx-request") == "true"
    unit = page.locator("[data-testid=unit]")
    unit.wait_for()
    page.wait_for_url(re.compile(r"/trace/\?serial=WVWZZZE1ZPP012345$"))

    # Then: the vehicle, and its upstream down to the mother coil and the lots.
    assert unit.locator(".serial-big").inner_text() == VIN
    upstream = page.locator("[data-testid=backward-tree]")
    rows = texts(upstream.locator("li"))
    assert rows[0].startswith(f"Vehicle {VIN}")
    assert rows[1].startswith(f"Pack {PACK}") and "slot HV" in rows[1]
    for slot, module in enumerate(MODULES, start=1):
        assert any(r.startswith(f"Module {module}") and f"slot M0{slot}" in r for r in rows)
    cell_row = rows.index(next(r for r in rows if r.startswith(f"Cell {cell_serial(1)}")))
    assert "slot C01" in rows[cell_row]
    assert rows[cell_row + 1] == (
        f"Slit coil [1204.0, 1210.0) m of {CATHODE_SLIT} "
        f"= [2704.0, 2710.0) m of mother coil {CATHODE_MOTHER}"
    )
    assert rows[cell_row + 2] == f"Coil [1500.0, 3000.0) m of {CATHODE_MOTHER}"
    assert any(r.startswith(f"Slit coil [310.0, 316.2) m of {ANODE_SLIT}") for r in rows)
    assert any(r.startswith(f"Cell {cell_serial(8)}") for r in rows)

    segments = texts(page.locator("[data-testid=segments] tbody tr"))
    assert f"Slit coil {CATHODE_SLIT} [1204.0, 1252.0) m 48.0 m" in segments
    assert f"Coil {CATHODE_MOTHER} [2704.0, 2752.0) m 48.0 m" in segments
    materials = texts(page.locator("[data-testid=materials] tbody tr"))
    assert (
        "Material lot CAM-NMC811-2611-0042 NMC811 cathode active material Nordkathode GmbH "
        "In process"
    ) in materials
    assert (
        f"Material lot {ELECTROLYTE_LOT} Electrolyte 1.2 M LiPF6 in EC/EMC Elyte Chemicals SE "
        "On hold"
    ) in materials

    # The timeline marks the vehicle's out-of-spec HV insulation value.
    oos = page.locator("[data-testid=timeline] tr.out-of-spec")
    assert oos.count() == 1
    oos_text = oos.inner_text()
    assert "Vehicle HV insulation resistance" in oos_text
    assert "\t42\tMΩ\t100\t500\t—\tOUT OF SPEC" in oos_text
    assert oos.locator("td").first.evaluate("e => getComputedStyle(e).backgroundColor") == (
        "rgb(253, 236, 234)"
    )

    # Open holds: the supplier notice on the electrolyte lot, and the automatic holds on
    # the vehicle (HV insulation) and on cell 3 (fill mass), all in this VIN's trace.
    holds = page.locator("[data-testid=holds]")
    supplier = holds.locator(f"tr[data-hold='{thread.supplier_hold.number}']")
    assert SUPPLIER_HOLD_REASON in supplier.inner_text()
    assert "Supplier notice" in supplier.inner_text()
    assert ELECTROLYTE_LOT in supplier.inner_text()
    holds_text = holds.inner_text()
    assert "Vehicle HV insulation resistance out of specification" in holds_text
    assert "Electrolyte fill mass out of specification" in holds_text
    assert cell_serial(OOS_CELL) in holds_text
    assert holds.locator("tbody tr").count() == 3
    assert unit.locator("[data-testid=unit-status]").inner_text() == "On hold"

    page.screenshot(path=SCREENSHOTS / "celltrace-trace-vin.png", full_page=True)

    # A serial in the tree opens that unit's own trace page.
    page.click(f"[data-testid=backward-tree] a:text-is('{cell_serial(OOS_CELL)}')")
    page.wait_for_url(re.compile(rf"/trace/\?serial={cell_serial(OOS_CELL)}$"))
    cell_oos = page.locator("[data-testid=timeline] tr.out-of-spec").inner_text()
    assert "Electrolyte fill mass" in cell_oos and "404.2" in cell_oos
    page.screenshot(path=SCREENSHOTS / "celltrace-trace-cell.png", full_page=True)

    # An unknown serial: the 404 answer is swapped in with the serial named.
    page.fill("input[name=serial]", "P126119999999")
    with page.expect_response(lambda r: "/trace/?serial=" in r.url) as answer:
        page.press("input[name=serial]", "Enter")
    assert answer.value.status == 404
    error = page.locator("[data-testid=trace-error]")
    error.wait_for()
    assert "No unit with serial 'P126119999999' is known." in error.inner_text()
    assert page.locator("[data-testid=unit]").count() == 0

    # Everything the page loaded (htmx, CSS, icon) came from the server itself.
    assert requested
    assert [u for u in requested if not u.startswith(live_server.url)] == []
