import os
import pytest
from tests.e2e.test_trace_browser import browser, thread, CHROMIUM_ARGS  # noqa
from tests.factories import UserFactory
from tests.web.thread import VIN, cell_serial, CAM_LOT

def test_shots(browser, live_server, thread):  # noqa
    UserFactory(username="aud", role="auditor", password="Cell-trace-2026")
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.goto(f"{live_server.url}/accounts/login/")
    page.screenshot(path="/tmp/shot-login.png")
    page.fill("input[name=username]", "aud"); page.fill("input[name=password]", "Cell-trace-2026")
    page.click("button[type=submit]")
    page.goto(f"{live_server.url}/trace/?serial={VIN}")
    page.screenshot(path="/tmp/shot-vin-top.png")
    page.locator("[data-testid=upstream]").screenshot(path="/tmp/shot-upstream.png")
    page.locator(".grid-2").screenshot(path="/tmp/shot-tables.png")
    page.locator("[data-testid=timeline]").screenshot(path="/tmp/shot-timeline.png")
    page.goto(f"{live_server.url}/trace/?serial={cell_serial(3)}")
    page.screenshot(path="/tmp/shot-cell.png", full_page=True)
    page.goto(f"{live_server.url}/trace/?serial={CAM_LOT}")
    page.screenshot(path="/tmp/shot-lot.png", full_page=True)
    page.goto(f"{live_server.url}/trace/?serial=NOPE-123")
    page.screenshot(path="/tmp/shot-404.png")
    page.set_viewport_size({"width": 800, "height": 1000})
    page.goto(f"{live_server.url}/trace/?serial={VIN}")
    page.screenshot(path="/tmp/shot-narrow.png")
