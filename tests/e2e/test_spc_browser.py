"""The SPC pages in a real browser: Debian's headless Chromium driven by Playwright.

A quality engineer opens the SPC overview, sees the electrolyte fill mass in alarm after a
lasting shift of 1.5 sigma, clicks through to its page, reads the chart with the rule
labels, the limits she approved and the alarms, is told that a cause is needed, then
acknowledges the CUSUM alarm with the cause found and sees the list and the count change
without a page load. Skips where no browser is installed; fails under
``QMS_REQUIRE_SERVICES=1``.
"""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from spc.models import SpcAlarm
from spc.services import limits_approve, limits_propose, spc_evaluate
from tests.e2e.conftest import SCREENSHOTS
from tests.factories import UserFactory
from tests.ingest.line21700 import build_line_21700
from tests.spc.conftest import SIGMA_FILL_G, Recorder, normal

PASSWORD = "Cell-trace-2026"
TIMES = "\N{MULTIPLICATION SIGN}"
#: What the engine signals on the shifted fill mass: the CUSUM and six run rules.
FILL_SIGNALS = (
    f"100 points, 12 signals (N2 {TIMES}2, N3 {TIMES}1, N4 {TIMES}1, N5 {TIMES}2, "
    f"N6 {TIMES}2, N8 {TIMES}2, CUSUM {TIMES}2)"
)
CAUSE = "Dosing pump 2 recalibrated after a pressure drop; +0.02 g offset corrected"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(180),
    pytest.mark.usefixtures("chromium_present"),
]


@pytest.fixture
def quality_engineer(transactional_db):
    return UserFactory(username="qe-lena", role="quality_engineer", password=PASSWORD)


@pytest.fixture
def shifted_fill(transactional_db, celery_eager, quality_engineer):
    """Fill mass 5.00 g ±1 % on the 21700 line: limits from 125 in-control values approved
    by the quality engineer, then 100 values whose last 40 are 1.5 sigma high (still in
    spec), evaluated: a CUSUM alarm and run-rule alarms are open."""
    line = build_line_21700()
    fill = line.chars["fill_mass"]
    record = Recorder(line, UserFactory(username="op-ben", role="operator"))
    t0 = (timezone.now() - timedelta(days=2)).replace(second=0, microsecond=0)
    record(fill, normal(11, 125, 5.0, SIGMA_FILL_G), start=t0, step_s=60)
    end = t0 + timedelta(minutes=125)
    draft = limits_propose(
        characteristic=fill, baseline_from=t0, baseline_to=end, actor=quality_engineer
    )
    limits_approve(
        limits=draft,
        actor=quality_engineer,
        reason="Baseline week 48, shift A, no assignable causes",
        monitor_from=end,
    )
    values = normal(12, 100, 5.0, SIGMA_FILL_G)
    values[60:] += 1.5 * SIGMA_FILL_G
    record(fill, values, start=t0 + timedelta(days=1))
    spc_evaluate(characteristic_id=fill.pk)
    return fill


def test_quality_engineer_acknowledges_a_cusum_alarm(
    live_server, shifted_fill, quality_engineer, browser
):
    fill = shifted_fill
    cusum = SpcAlarm.objects.get(characteristic=fill, rule="cusum")
    open_before = SpcAlarm.objects.filter(characteristic=fill, status="open").count()
    assert open_before == 7
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(15_000)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))

    # Given: the overview, reached through the login form.
    page.goto(f"{live_server.url}/spc/")
    assert page.url.startswith(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", quality_engineer.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/spc/")
    assert page.locator(".mainnav a[aria-current=page]").inner_text() == "SPC"
    row = page.locator("[data-testid=overview] tr[data-characteristic=electrolyte-fill-mass]")
    assert row.get_attribute("data-state") == "alarm"
    assert " ".join(row.inner_text().split()).startswith(
        "gf1 l2-cyl fill electrolyte-fill-mass Electrolyte fill mass (1.0 g/Ah) g CC Alarm"
    )
    other = page.locator("[data-testid=overview] tr[data-characteristic=cathode-areal-weight]")
    assert other.locator(".spc-state").inner_text() == "Insufficient data"
    # Sorting is done on the server; the table is swapped and the address follows.
    with page.expect_response(lambda r: "sort=cpk" in r.url) as answer:
        page.click("[data-testid=overview] a[data-sort=cpk]")
    assert answer.value.request.headers.get("hx-target") == "overview-result"
    page.wait_for_url(f"{live_server.url}/spc/?sort=cpk")
    cpk = page.locator("[data-testid=overview] th[aria-sort=ascending] a")
    assert cpk.get_attribute("data-sort") == "cpk"
    codes = page.locator("[data-testid=overview] tbody tr")
    assert [codes.nth(i).get_attribute("data-characteristic") for i in range(2)] == [
        "electrolyte-fill-mass",
        "cathode-areal-weight",  # no values, no Cpk: last
    ]
    assert page.locator("#overview-sort").get_attribute("value") == "cpk"
    page.screenshot(path=SCREENSHOTS / "celltrace-spc-overview.png", full_page=True)

    # When: the characteristic is opened from the overview.
    row.locator("a", has_text="electrolyte-fill-mass").click()
    page.wait_for_url(f"{live_server.url}/spc/characteristics/{fill.pk}/")
    chart = page.locator("[data-testid=chart] svg")
    chart.wait_for()
    assert chart.locator("title").first.text_content().endswith(FILL_SIGNALS)
    labels = chart.locator("text").all_text_contents()
    assert "drift detector (CUSUM, EWMA): 2" in labels
    assert any(re.fullmatch(r"N\d( N\d)*", t) for t in labels)
    assert page.locator("[data-testid=state]").inner_text() == "Alarm"
    assert (
        page.locator("[data-testid=open-alarm-count]").inner_text() == f"{open_before} open alarms"
    )
    assert "Baseline week 48, shift A" in page.locator("[data-testid=approved-by]").inner_text()
    alarms = page.locator("[data-testid=open-alarms] tbody tr")
    assert alarms.count() == open_before
    # Critical first: the CUSUM alarm on this CC characteristic.
    assert alarms.first.get_attribute("data-alarm") == str(cusum.pk)

    # A cause is required: blanks pass the browser's check of the required field, the
    # server's answer (400) is swapped in with the message on the field.
    target = page.locator(f"tr[data-alarm='{cusum.pk}']")
    target.locator("input[name$=cause]").fill("   ")
    with page.expect_response(lambda r: "/acknowledge/" in r.url) as answer:
        target.locator("button[type=submit]").click()
    assert answer.value.status == 400
    errors = page.locator(f"tr[data-alarm='{cusum.pk}'] [data-testid=cause-errors]")
    errors.wait_for()
    assert errors.inner_text() == "Acknowledging an alarm needs the cause found."
    assert SpcAlarm.objects.get(pk=cusum.pk).status == "open"

    # Then: with the cause the alarm moves to the acknowledged list, without a page load.
    target = page.locator(f"tr[data-alarm='{cusum.pk}']")
    target.locator("input[name$=cause]").fill(CAUSE)
    target.locator("input[name$=comment]").fill("Cells of the shifted hour re-weighed")
    with page.expect_response(lambda r: "/acknowledge/" in r.url) as answer:
        target.locator("button[type=submit]").click()
    assert answer.value.status == 200
    assert answer.value.request.headers.get("hx-request") == "true"
    decided = page.locator(f"[data-testid=decided-alarms] tr[data-alarm='{cusum.pk}']")
    decided.wait_for()
    assert CAUSE in decided.inner_text()
    assert "qe-lena" in decided.inner_text()
    assert page.locator(f"[data-testid=open-alarms] tr[data-alarm='{cusum.pk}']").count() == 0
    assert page.locator("[data-testid=open-alarms] tbody tr").count() == open_before - 1
    assert page.locator("[data-testid=open-alarm-count]").inner_text() == (
        f"{open_before - 1} open alarms"
    )
    assert page.url == f"{live_server.url}/spc/characteristics/{fill.pk}/"
    stored = SpcAlarm.objects.get(pk=cusum.pk)
    assert (stored.status, stored.cause, stored.acknowledged_by_id) == (
        "acknowledged",
        CAUSE,
        quality_engineer.pk,
    )

    # The chart window follows the selector, and the address with it.
    with page.expect_response(lambda r: "/chart/?last=100" in r.url) as answer:
        page.select_option("select[name=last]", "100")
    assert answer.value.status == 200
    page.wait_for_url(f"{live_server.url}/spc/characteristics/{fill.pk}/?last=100")
    assert "100 points" in page.locator("[data-testid=chart-meta]").inner_text()
    assert (
        page.locator("[data-testid=chart-meta] a[data-format=pdf]").get_attribute("href")
        == f"/spc/characteristics/{fill.pk}/chart.pdf?last=100"
    )
    page.screenshot(path=SCREENSHOTS / "celltrace-spc-characteristic.png", full_page=True)

    # Everything the pages loaded came from the server itself.
    assert [u for u in requested if not u.startswith(live_server.url)] == []
