"""The cell page in a real browser: Debian's headless Chromium driven by Playwright.

Sixteen simulated 105 Ah prismatic cells (one with a particle short) are formed, aged and
graded through the plant's paths; the grading event has the active thermal-risk model score
them. A quality engineer logs in, traces the shorted cell, follows the Trace page's link to
its cell page and reads the formation curves (voltage against capacity, dQ/dV), the K-value
line through its aging OCV readings, the reasons and the model version of its risk score;
then follows the link of a cell in a vehicle's tree to a cell that was never formed and
sees the no-data states. Skips where no browser is installed; fails under
``QMS_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission

from formation import services as formation_services
from formation.models import CellFeatures
from genealogy.choices import UnitKind
from genealogy.models import Unit
from risk import services
from risk.models import RiskScore
from risk.scoring import default_model_paths
from tests.e2e.conftest import SCREENSHOTS
from tests.factories import UserFactory
from tests.formation import conftest as formation_fixtures
from tests.formation.conftest import (
    N_CELLS,
    aging_envelope,
    send,
    step_envelope,
    tray_envelope,
)
from tests.genealogy.conftest import VINS, build_thread, cell_serial

PASSWORD = "Cell-trace-2026"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(240),
    pytest.mark.usefixtures("chromium_present"),
]

# The formation tests' simulated cells and plant, used here by name.
sim = formation_fixtures.sim
sim_curves = formation_fixtures.sim_curves
formation_plant = formation_fixtures.formation_plant
cells = formation_fixtures.cells


@pytest.fixture
def quality_engineer(transactional_db):
    user = UserFactory(username="qe-ines", role="quality_engineer", password=PASSWORD)
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["approve_riskmodel", "add_fieldreturn", "change_gradingruleset"]
        )
    )
    return type(user).objects.get(pk=user.pk)


@pytest.fixture
def scene(
    transactional_db, celery_eager, sim, sim_curves, cells, formation_plant, quality_engineer
):
    """The committed risk model active; the simulated cells formed, aged and graded (the
    grading event scores them on commit, in-process); the genealogy thread beside them."""
    qe = quality_engineer
    manifest, onnx = default_model_paths()
    model = services.model_register(manifest_path=manifest, onnx_path=onnx, actor=qe)
    services.model_approve(model=model, actor=qe, reason="Commissioning acceptance")
    services.model_activate(model=model, actor=qe, reason="Line start")
    send(tray_envelope(sim, 0), tray_envelope(sim, 1))
    send(*[step_envelope(sim, sim_curves, i) for i in range(N_CELLS)])
    send(*[aging_envelope(sim, i) for i in range(N_CELLS)])
    ids = [c.pk for c in cells]
    formation_services.features_compute(cell_ids=ids)
    rules = formation_services.grading_rules_create(
        line=formation_plant.line,
        actor=qe,
        name="prismatic 105 Ah grading",
        bins=[{"code": "A", "limits": {"capacity_ah": {"min": 100.0}}}],
        k_abs_limit_mv_per_day=0.5,
        k_lot_z_limit=6.0,
    )
    formation_services.grading_rules_activate(rule_set=rules, actor=qe, reason="line start")
    formation_services.cells_grade(cell_ids=ids, actor=qe)
    assert RiskScore.objects.filter(unit_id__in=ids).count() == N_CELLS
    build_thread(formation_plant)
    [i] = [k for k, c in enumerate(sim.truth.latent_class) if c == "particle_short"]
    return {"short": cells[i], "model": model}


def test_from_the_trace_page_to_a_formed_and_scored_cell(
    live_server, scene, quality_engineer, browser
):
    short = scene["short"]
    features = CellFeatures.objects.get(unit=short)
    score = RiskScore.objects.get(unit=short)
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page.set_default_timeout(15_000)

    # Given: the Trace page of the shorted cell, reached through the login form.
    page.goto(f"{live_server.url}/trace/?serial={short.serial}")
    assert page.url.startswith(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", quality_engineer.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(rf"/trace/\?serial={short.serial}$"))

    # When: the cell page is opened by the Trace page's link.
    page.click("[data-testid=unit] [data-testid=cell-page-link]")
    page.wait_for_url(f"{live_server.url}/risk/cells/{short.serial}/")
    assert page.locator(".mainnav a[aria-current=page]").inner_text() == "Risk"
    assert page.locator("[data-testid=serial]").inner_text() == short.serial

    # Then: the formation curves are drawn, one path per charge and discharge step.
    voltage = page.locator("[data-testid=voltage-curves] svg.voltage-chart")
    curves = voltage.locator("path.curve")
    kinds = [curves.nth(k).get_attribute("data-kind") for k in range(curves.count())]
    assert kinds.count("discharge") == 2  # the capacity discharge and the one to storage
    assert kinds.count("charge") == 4  # formation CC and CV, the two SOC-setting charges
    for k in range(curves.count()):
        d = curves.nth(k).get_attribute("d")
        assert d.startswith("M") and d.count("L") >= 10
        assert curves.nth(k).is_visible()
    box = voltage.bounding_box()
    assert box["width"] > 400 and box["height"] > 200
    dqdv = page.locator("[data-testid=dqdv-curves] svg.dqdv-chart")
    assert dqdv.locator("path.curve").count() >= 2
    markers = dqdv.locator("line.marker")
    assert [float(markers.nth(k).get_attribute("data-x")) for k in range(markers.count())] == [
        pytest.approx(getattr(features, f"ica_peak{j}_v"), abs=1e-4) for j in (1, 2, 3)
    ]

    # The aging OCV log with the K-value line: the stored K, falling with time.
    k_line = page.locator("[data-testid=aging-chart] svg.aging-chart line.k-fit")
    assert k_line.is_visible()
    assert float(k_line.get_attribute("data-k-mv-per-day")) == pytest.approx(
        features.k_value_mv_per_day, abs=1e-6
    )
    assert float(k_line.get_attribute("y2")) > float(k_line.get_attribute("y1"))
    assert page.locator("[data-testid=aging-chart] circle.reading").count() == 15
    assert (
        f"{features.k_value_mv_per_day:.4f} mV/day"
        in page.locator("[data-testid=k-value]").inner_text()
    )

    # The lot comparison marks the K-value row, with the cell on the lot's strip.
    k_row = page.locator("[data-testid=lot-features] tr[data-feature=k_value_mv_per_day]")
    assert "far" in (k_row.get_attribute("class") or "")
    assert k_row.locator("svg.strip path.cell-mark").count() == 1

    # The risk score: quarantined, its reasons in words and the model version.
    assert score.quarantined
    reasons = page.locator("[data-testid=reasons] li").all_inner_texts()
    assert reasons == score.reasons
    assert any(re.match(r"K-value \d+\.\d MAD above lot median", r) for r in reasons)
    version = page.locator("[data-testid=model-version]").inner_text()
    assert version == f"thermal-risk {scene['model'].version} Active"
    assert page.locator("[data-testid=quarantined]").inner_text() == "yes"
    page.screenshot(path=str(SCREENSHOTS / "celltrace-cell-page.png"), full_page=True)

    # And: from a vehicle's tree, the link of a cell never formed opens its empty page.
    page.goto(f"{live_server.url}/trace/?serial={VINS[0]}")
    row = page.locator("[data-testid=backward-tree] li[data-kind=cell]").first
    assert row.locator("a.serial").inner_text() == cell_serial(1)
    row.locator("[data-testid=cell-page-link]").click()
    page.wait_for_url(f"{live_server.url}/risk/cells/{cell_serial(1)}/")
    assert Unit.objects.get(serial=cell_serial(1)).kind == UnitKind.CELL
    for testid in ("no-formation", "no-features", "no-aging", "no-risk", "no-score"):
        assert page.locator(f"[data-testid={testid}]").is_visible(), testid
