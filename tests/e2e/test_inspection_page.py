"""The inspection pages in a real browser: Debian's headless Chromium driven by Playwright.

A quality engineer opens a frame of the cathode coater's camera (the scene of
``tests/inspection/test_views.py``: a particle held at once, a scratch waiting for review, an
ignored pinhole), sees a box and a label drawn over the image at each defect's pixels, goes
to the review queue, confirms the scratch and sees it leave the queue and the cells made from
its metres go on hold, without a page load. Skips where no browser is installed; fails under
``QMS_REQUIRE_SERVICES=1``.
"""

from contextlib import nullcontext

import pytest

from compliance.models import Hold
from genealogy.choices import UnitStatus
from genealogy.models import Unit
from inspection import services
from inspection.choices import FlagAction, ReviewState, Substrate
from inspection.models import CoilFlag, Defect, InspectionStation
from tests.e2e.conftest import SCREENSHOTS
from tests.factories import UserFactory, build_plant
from tests.genealogy.conftest import build_thread, cell_serial
from tests.inspection.test_views import FRAME1_DEFECTS, build_scene

PASSWORD = "Cell-trace-2026"
FRAME_W, FRAME_H = 4096, 1024
#: Screen pixels a drawn edge may be off (sub-pixel layout, rounding of the scale).
TOLERANCE_PX = 1.5
#: A box's outline is 2 screen pixels wide whatever the scale, centred on the box's edge:
#: the drawn box reaches 1 px beyond the defect's pixels on each side.
HALF_STROKE_PX = 1.0

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(240),
    pytest.mark.usefixtures("chromium_present"),
]


@pytest.fixture
def quality_engineer(transactional_db):
    return UserFactory(username="qe-mara", role="quality_engineer", password=PASSWORD)


@pytest.fixture
def scene(transactional_db, celery_eager, quality_engineer):
    """The committed model registered, approved and active on the coater's camera; the
    thread of cells; frames 1-3 sent through the ingest path and committed, so the live
    server sees them (the particle's hold is placed on commit, in-process)."""
    from inspection.vision.model import default_model_paths

    plant = build_plant()
    build_thread(plant)
    manifest, onnx, golden = default_model_paths()
    model = services.model_register(
        manifest_path=manifest, onnx_path=onnx, golden_path=golden, actor=quality_engineer
    )
    services.model_approve(model=model, actor=quality_engineer, reason="Commissioning")
    services.model_activate(model=model, actor=quality_engineer, reason="Line start")
    camera = InspectionStation.objects.create(
        station=plant.stations["coat-c"],
        camera="cam-c1",
        substrate=Substrate.COATING,
        lane_width_mm=81.92,
        model=model,
    )
    return build_scene(camera, lambda execute: nullcontext())


def box_of(locator) -> dict:
    box = locator.bounding_box()
    assert box is not None, "not rendered"
    return box


def test_quality_engineer_reads_the_boxes_and_confirms_a_defect(
    live_server, scene, quality_engineer, browser
):
    result, scratch = scene["frame"], scene["scratch"]
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(15_000)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))

    # Given: the result page, reached through the login form.
    page.goto(f"{live_server.url}/inspection/results/{result.pk}/")
    assert page.url.startswith(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", quality_engineer.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/inspection/results/{result.pk}/")
    assert page.locator(".mainnav a[aria-current=page]").inner_text() == "Inspection"

    # Then: the frame is shown with one box and one label per defect, where the defect is.
    image = page.locator("[data-testid=frame] img")
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=frame] img');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    assert image.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [FRAME_W, FRAME_H]
    frame = box_of(image)
    scale = frame["width"] / FRAME_W
    assert frame["height"] == pytest.approx(FRAME_H * scale, abs=TOLERANCE_PX)
    boxes = page.locator("svg.overlay g.box")
    assert boxes.count() == 3
    for cls, decision, conf, _, (x0, y0, x1, y1) in FRAME1_DEFECTS:
        g = page.locator(f"svg.overlay g.box[data-defect='{scene[cls].pk}']")
        assert g.get_attribute("data-decision") == decision
        rect = box_of(g.locator("rect"))
        edge = HALF_STROKE_PX
        assert rect["x"] == pytest.approx(frame["x"] + x0 * scale - edge, abs=TOLERANCE_PX)
        assert rect["y"] == pytest.approx(frame["y"] + y0 * scale - edge, abs=TOLERANCE_PX)
        assert rect["width"] == pytest.approx((x1 - x0) * scale + 2 * edge, abs=TOLERANCE_PX)
        assert rect["height"] == pytest.approx((y1 - y0) * scale + 2 * edge, abs=TOLERANCE_PX)
        label = g.locator("text")
        assert label.text_content() == f"{cls} {conf:.2f}"
        assert label.is_visible()
        text = box_of(label)
        # Inside the image, and next to its own box: above it (below when the box touches
        # the top edge), starting at its left edge (ending at its right edge near the
        # frame's right side).
        assert frame["x"] - TOLERANCE_PX <= text["x"]
        assert text["x"] + text["width"] <= frame["x"] + frame["width"] + TOLERANCE_PX
        assert frame["y"] - TOLERANCE_PX <= text["y"]
        if cls == "pinhole":
            assert text["y"] >= rect["y"] + rect["height"] - TOLERANCE_PX
            assert text["x"] + text["width"] == pytest.approx(
                rect["x"] + rect["width"], abs=3 * TOLERANCE_PX
            )
        else:
            assert text["y"] + text["height"] <= rect["y"] + TOLERANCE_PX
            assert text["x"] == pytest.approx(rect["x"], abs=3 * TOLERANCE_PX)
    page.screenshot(path=SCREENSHOTS / "celltrace-inspection-result.png", full_page=True)

    # When: the review queue is opened from the overview and the scratch confirmed.
    page.click(".mainnav a[aria-current=page]")
    page.wait_for_url(f"{live_server.url}/inspection/")
    assert page.locator("[data-testid=queue-summary] [data-testid=queue-count]").inner_text() == "1"
    page.screenshot(path=SCREENSHOTS / "celltrace-inspection-overview.png", full_page=True)
    page.click("[data-testid=queue-link]")
    page.wait_for_url(f"{live_server.url}/inspection/review/")
    items = page.locator("[data-testid=queue-item]")
    assert items.count() == 1
    item = page.locator(f"[data-testid=queue-item][data-defect='{scratch.pk}']")
    assert "scratch 0.71" in " ".join(item.inner_text().split())
    crop = item.locator("img")
    crop.wait_for()
    assert crop.evaluate("i => i.complete && i.naturalWidth") == 128
    page.screenshot(path=SCREENSHOTS / "celltrace-inspection-queue.png", full_page=True)
    item.locator("input[value=confirm]").check()
    item.locator("input[name$=comment]").fill("Scratch confirmed under the loupe")
    with page.expect_response(lambda r: r.url.endswith(f"/defects/{scratch.pk}/review/")) as ans:
        item.locator("button[type=submit]").click()
    assert ans.value.status == 200
    assert ans.value.request.headers.get("hx-request") == "true"

    # Then: the defect has left the queue and the cells made from its metres are held.
    reviewed = page.locator(f"[data-testid=reviewed-item][data-defect='{scratch.pk}']")
    reviewed.wait_for()
    assert page.locator("[data-testid=queue-item]").count() == 0
    status = page.locator("[data-testid=queue-status]").inner_text()
    assert " ".join(status.split()) == "0 defects waiting, oldest first."
    said = " ".join(reviewed.inner_text().split())
    assert "Confirm: the defect is real, as classified." in said
    flag = CoilFlag.objects.get(defect=scratch)
    assert f"Flag #{flag.pk} is a Hold on" in said
    assert [c.strip() for c in reviewed.locator("[data-testid=held-cell]").all_inner_texts()] == [
        cell_serial(3),
        cell_serial(8),
    ]
    assert said.count("On hold") == 2
    assert (Defect.objects.get(pk=scratch.pk).review_state, flag.action) == (
        ReviewState.CONFIRMED,
        FlagAction.HOLD,
    )
    hold = Hold.objects.get(source_reference=f"vision flag #{flag.pk}")
    assert set(hold.units.values_list("serial", flat=True)) == {cell_serial(3), cell_serial(8)}
    assert Unit.objects.get(serial=cell_serial(3)).status == UnitStatus.ON_HOLD
    assert page.url == f"{live_server.url}/inspection/review/"
    page.screenshot(path=SCREENSHOTS / "celltrace-inspection-review.png", full_page=True)

    # The held cell's trace shows the hold; the queue stays empty after a reload.
    reviewed.locator("[data-testid=held-cell]", has_text=cell_serial(3)).click()
    page.wait_for_url(f"{live_server.url}/trace/?serial={cell_serial(3)}")
    holds = page.locator(f"[data-testid=holds] tr[data-hold='{hold.number}']")
    holds.wait_for()
    assert f"vision flag #{flag.pk}" in holds.inner_text()
    page.goto(f"{live_server.url}/inspection/review/")
    assert page.locator("[data-testid=queue-empty]").inner_text() == "Nothing waits for review."

    # The coil's map draws both mapped defects; the registry shows the active model.
    page.goto(f"{live_server.url}/inspection/coils/{result.coil.serial}/")
    assert page.locator("svg.coil-map path.defect").count() == 2
    assert page.locator("svg.coil-map rect.uninspected").count() == 1
    page.screenshot(path=SCREENSHOTS / "celltrace-inspection-coil.png", full_page=True)
    page.goto(f"{live_server.url}/inspection/models/")
    assert page.locator("[data-testid=model-state]").all_inner_texts() == ["Active"]
    page.screenshot(path=SCREENSHOTS / "celltrace-inspection-models.png", full_page=True)

    # Everything the pages loaded came from the server itself.
    assert [u for u in requested if not u.startswith(live_server.url)] == []
