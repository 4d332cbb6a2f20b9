"""The inspection web pages through Django's test client: the overview (cameras, open flags,
latest results, review queue count, Pareto, coils; query count), a result with its frame and
boxes, the review queue and its verdicts, a coil's defect map, and the model registry with
its commands and their refusals.

The scene (results sent through the ingest path, as a vision worker sends them): the camera
over the cathode coater inspects mother coil CC-260303-001 (3,000 m; slit at 1,500 m into
L1-R2 and L2-R2, whose metres cells c01-c06 and c07-c12 consumed, 6 m each, L2 from its
metre 2). Frame 1 covers [1511.99, 1512.0105) m and is kept as an image, with

* a particle (0.97, quarantine) at 1511.995 m: L1-R2 metre 11.995 (cell c02), L2-R2 metre
  11.995 (c08), held at once;
* a scratch (0.71, review) at 1512.005 m: L1-R2 metre 12.005 (c03), L2-R2 (c08); waits
  for a reviewer;
* a pinhole (0.31, ignore) at the top right corner: logged, no flag.

Frame 2 reports metres [1520, 1530) uninspected (a frame gap): held as nonconforming.
Frame 3 at 1400 m is clean and kept no image.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
import xml.etree.ElementTree as ET
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from compliance.choices import HoldSource
from compliance.models import Hold
from genealogy.choices import UnitStatus
from genealogy.models import Unit
from inspection import render, services
from inspection.choices import FlagAction, FlagKind, ModelState, ReviewState
from inspection.models import (
    CoilFlag,
    Defect,
    DefectReview,
    InspectionModel,
    InspectionResult,
    InspectionStation,
)
from qms.ingest.services import ingest_raw
from tests.factories import UserFactory
from tests.genealogy.conftest import cell_serial
from tests.inspection.payloads import FRAME_M, defect, envelope, payload, png, raw

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]

MOTHER = "CC-260303-001"
HTMX = {"HX-Request": "true"}
DASH = "\N{EN DASH}"
FRAME_START_M = 1511.99
#: (class, decision, confidence, md_m, bbox_px) of frame 1's defects.
FRAME1_DEFECTS = [
    ("particle", "quarantine", 0.97, 1511.995, [2000, 244, 2012, 256]),
    ("scratch", "review", 0.71, 1512.005, [600, 748, 640, 752]),
    ("pinhole", "ignore", 0.31, 1511.9903, [3900, 10, 3906, 16]),
]


# ---------------------------------------------------------------------------- utilities


def text(fragment: str) -> str:
    """Visible text of an HTML fragment, whitespace folded."""
    inline = re.sub(r"</?(a|strong|span|q)\b[^>]*>", "", fragment)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def section(page: str, testid: str) -> str:
    """The HTML of the element carrying ``data-testid=testid`` (up to its closing tag)."""
    start = page.index(f'data-testid="{testid}"')
    tag = page.rindex("<", 0, start)
    name = re.match(r"<(\w+)", page[tag:]).group(1)
    depth, pos = 0, tag
    for m in re.finditer(rf"<(/?){name}\b", page[tag:]):
        depth += -1 if m.group(1) else 1
        if depth == 0:
            pos = tag + m.end()
            break
    return page[tag : page.index(">", pos) + 1]


def svg_of(fragment: str, css_class: str) -> ET.Element:
    """The ``<svg class=css_class>`` in a page, parsed as XML."""
    m = re.search(rf'<svg [^>]*class="{css_class}".*?</svg>', fragment, re.S)
    assert m is not None, f"no svg.{css_class}"
    return ET.fromstring(m.group(0))  # noqa: S314  our own renderer's output


SVG = "{http://www.w3.org/2000/svg}"


def login(client, user):
    client.force_login(user)
    return client


def send(doc, capture) -> None:
    """Ingest one envelope and run what its commit triggers (the holds compliance places)."""
    with capture(execute=True):
        [outcome] = ingest_raw([raw(doc)])
    assert outcome.status == "accepted", outcome.reason


def frame_png(boxes: list[list[int]]) -> bytes:
    """A 4096 x 1024 coating frame: mid grey, each defect a dark patch in its box."""
    image = np.full((1024, 4096), 132, np.uint8)
    image[:, ::64] = 126  # faint texture of the coating
    for x0, y0, x1, y1 in boxes:
        image[y0:y1, x0:x1] = 38
    return png(image)


def frame1_body(model, *, frame_id: int = 1, start_m: float = FRAME_START_M) -> dict:
    defects = [
        defect(
            md_m=md - FRAME_START_M + start_m,
            cls=cls,
            decision=decision,
            confidence=conf,
            cd_mm=round((box[0] + box[2]) / 2 * 0.02, 2),
            bbox_px=box,
        )
        for cls, decision, conf, md, box in FRAME1_DEFECTS
    ]
    data = frame_png([d[4] for d in FRAME1_DEFECTS])
    return payload(
        model,
        start_m=start_m,
        frame_id=frame_id,
        defects=defects,
        frame_png_b64=base64.b64encode(data).decode(),
        frame_sha256=hashlib.sha256(data).hexdigest(),
    )


def build_scene(camera, capture) -> dict:
    """Frames 1-3 of the module docstring, through the ingest path; returns the results."""
    model = camera.model
    now = timezone.now()
    send(envelope(frame1_body(model), coil=MOTHER, message_id="cam-c1:000001"), capture)
    gap = payload(
        model,
        start_m=1520.0,
        frame_id=2,
        verdict="uninspected",
        uninspected_reason="frame_gap",
        detail="frames 2-489 missing (encoder 152000000-153000000)",
        coil_end_m=1530.0,
        acquired_at=(now - timedelta(minutes=5)).isoformat(),
    )
    send(envelope(gap, coil=MOTHER, message_id="cam-c1:000002"), capture)
    clean = payload(
        model, start_m=1400.0, frame_id=3, acquired_at=(now - timedelta(minutes=10)).isoformat()
    )
    send(envelope(clean, coil=MOTHER, message_id="cam-c1:000003"), capture)
    results = {r.frame_id: r for r in InspectionResult.objects.all()}
    return {
        "frame": results[1],
        "gap": results[2],
        "clean": results[3],
        "particle": Defect.objects.get(cls="particle"),
        "scratch": Defect.objects.get(cls="scratch"),
        "pinhole": Defect.objects.get(cls="pinhole"),
    }


@pytest.fixture
def scene(camera, thread, django_capture_on_commit_callbacks):
    return build_scene(camera, django_capture_on_commit_callbacks)


@pytest.fixture
def auditor(db):
    return UserFactory(username="aud-vision", role="auditor")


@pytest.fixture
def candidate(vision_model, quality, tmp_path):
    """The committed model's files registered again as 1.1.1-rc1: validated, not approved."""
    from inspection.vision.model import default_model_paths

    manifest, onnx, golden = default_model_paths()
    spec = json.loads(manifest.read_text(encoding="utf-8"))
    spec["version"] = "1.1.1-rc1"
    folder = tmp_path / "candidate"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(spec), encoding="utf-8")
    shutil.copyfile(onnx, folder / "model.onnx")
    shutil.copyfile(golden, folder / "golden.npz")
    return services.model_register(
        manifest_path=folder / "manifest.json",
        onnx_path=folder / "model.onnx",
        golden_path=folder / "golden.npz",
        actor=quality,
    )


def vision_holds() -> list[Hold]:
    return list(Hold.objects.filter(source=HoldSource.VISION).order_by("pk"))


def held(hold: Hold) -> set[str]:
    return set(hold.units.values_list("serial", flat=True))


# ------------------------------------------------------------------------------ overview


def test_overview_shows_cameras_open_flags_results_queue_and_pareto(client, scene, quality):
    login(client, quality)

    response = client.get("/inspection/")

    assert response.status_code == 200
    page = response.content.decode()
    assert '<a href="/inspection/" aria-current="page">Inspection</a>' in page
    cameras = text(section(page, "cameras"))
    assert "gf1/l1-pri/coat-c cam-c1 Electrode coating (reflected bright-field)" in cameras
    assert "electrode-surface 1.1.0 Active" in cameras
    flags = section(page, "open-flags")
    # The particle's hold, the scratch's review and the gap's hold; the pinhole raised none.
    rows = re.findall(r'data-flag="(\d+)" data-kind="(\w+)" data-action="(\w+)"', flags)
    expected = CoilFlag.objects.order_by("-created_at", "-pk")
    assert len(rows) == 3
    assert sorted(rows) == sorted((str(f.pk), f.kind, f.action) for f in expected)
    assert {(k, a) for _, k, a in rows} == {
        (FlagKind.DEFECT, FlagAction.HOLD),
        (FlagKind.DEFECT, FlagAction.REVIEW),
        (FlagKind.UNINSPECTED, FlagAction.HOLD),
    }
    assert flags.count('data-testid="ack-form"') == 3
    assert "3 not acknowledged" in text(flags)
    assert f"1520.0000 {DASH} 1530.0000" in text(flags)
    results = section(page, "latest-results")
    assert re.findall(r'data-result="(\d+)" data-verdict="(\w+)"', results) == [
        (str(scene["frame"].pk), "defect"),
        (str(scene["gap"].pk), "uninspected"),
        (str(scene["clean"].pk), "ok"),
    ]
    assert f"1511.990 {DASH} 1512.010" in text(results)
    assert text(section(page, "queue-count")) == "1"
    pareto = svg_of(page, "pareto")
    bars = [(g.get("data-cls"), g.get("data-count")) for g in pareto.iter(f"{SVG}g")]
    assert bars == [("particle", "1"), ("scratch", "1")]  # the ignored pinhole left out
    coils = section(page, "coils")
    assert f'href="/inspection/coils/{MOTHER}/"' in coils
    assert f"{MOTHER} 3 3 1" in text(coils)  # frames, defects, uninspected frames


def test_the_auditor_reads_the_overview_without_forms(client, scene, auditor):
    login(client, auditor)

    page = client.get("/inspection/").content.decode()

    assert 'data-testid="ack-form"' not in page
    assert "<form" not in section(page, "open-flags")
    assert "Read-only: quality engineers and MRB members acknowledge flags." in page
    assert "3 not acknowledged" in text(section(page, "open-flags"))


@pytest.mark.parametrize("days", ["0", "367", "week"])
def test_a_bad_period_answers_400_with_the_message(client, scene, quality, days):
    login(client, quality)

    response = client.get("/inspection/", {"days": days})

    assert response.status_code == 400
    page = response.content.decode()
    assert text(section(page, "days-errors")) == "Days is a whole number from 1 to 366."
    assert "Defects by class, last 7 days" in page


def test_the_pareto_follows_the_period(client, scene, quality):
    login(client, quality)
    InspectionResult.objects.filter(pk=scene["frame"].pk).update(
        acquired_at=timezone.now() - timedelta(days=3)
    )

    last_day = client.get("/inspection/", {"days": "1"}).content.decode()
    last_week = client.get("/inspection/", {"days": "7"}).content.decode()

    assert svg_of(last_day, "pareto").findall(f".//{SVG}g") == []
    assert "No defects." in text(section(last_day, "pareto"))
    assert [g.get("data-cls") for g in svg_of(last_week, "pareto").iter(f"{SVG}g")] == [
        "particle",
        "scratch",
    ]


def test_overview_queries_do_not_grow_with_results_and_flags(
    client,
    scene,
    quality,
    camera,
    django_capture_on_commit_callbacks,
    django_assert_max_num_queries,
):
    login(client, quality)
    with CaptureQueriesContext(connection) as few:
        assert client.get("/inspection/").status_code == 200
    for n in range(6):  # more frames, defects, flags and a coil more
        coil = MOTHER if n % 2 else "CC-260303-002"
        body = frame1_body(camera.model, frame_id=10 + n, start_m=100.0 + n)
        send(
            envelope(body, coil=coil, message_id=f"cam-c1:more-{n}"),
            django_capture_on_commit_callbacks,
        )
    InspectionStation.objects.create(
        station=camera.station, camera="cam-c2", substrate="coating", model=camera.model
    )

    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get("/inspection/")

    assert response.status_code == 200
    page = response.content.decode()
    assert len(re.findall(r"data-result=", section(page, "latest-results"))) == 9
    assert len(re.findall(r"data-flag=", section(page, "open-flags"))) == 15
    assert len(few.captured_queries) <= 12


# ---------------------------------------------------------------------------- acknowledge


def test_acknowledging_a_flag_takes_it_off_the_alarm_list(client, scene, quality):
    login(client, quality)
    gap_flag = CoilFlag.objects.get(kind=FlagKind.UNINSPECTED)

    response = client.post(
        f"/inspection/flags/{gap_flag.pk}/acknowledge/",
        {f"flag-{gap_flag.pk}-comment": "Encoder cable reseated; metres stay on hold"},
    )

    assert response.status_code == 302
    assert response["Location"] == "/inspection/#flags"
    gap_flag.refresh_from_db()
    assert (gap_flag.acknowledged_by, gap_flag.action) == (quality, FlagAction.HOLD)
    latest = gap_flag.history.first()
    assert latest.history_change_reason == (
        "acknowledged: Encoder cable reseated; metres stay on hold"
    )
    page = client.get("/inspection/").content.decode()
    assert f"Flag #{gap_flag.pk} on {MOTHER} acknowledged." in page
    assert f'data-flag="{gap_flag.pk}"' not in section(page, "open-flags")
    assert "2 not acknowledged" in text(section(page, "open-flags"))


def test_acknowledging_by_htmx_answers_the_flag_list(client, scene, quality):
    login(client, quality)
    hold_flag = CoilFlag.objects.get(cls="particle")

    response = client.post(f"/inspection/flags/{hold_flag.pk}/acknowledge/", {}, headers=HTMX)

    assert response.status_code == 200
    fragment = response.content.decode()
    assert 'id="flags"' in fragment and "<html" not in fragment
    assert f'data-flag="{hold_flag.pk}"' not in fragment
    assert "2 not acknowledged" in text(fragment)
    assert CoilFlag.objects.get(pk=hold_flag.pk).acknowledged_by == quality


def test_the_auditor_cannot_acknowledge_a_flag(client, scene, auditor):
    login(client, auditor)
    flag = CoilFlag.objects.get(kind=FlagKind.UNINSPECTED)

    response = client.post(f"/inspection/flags/{flag.pk}/acknowledge/", {}, headers=HTMX)

    assert response.status_code == 403
    assert "needs the permission inspection.change_coilflag" in text(response.content.decode())
    flag.refresh_from_db()
    assert (flag.acknowledged_at, flag.acknowledged_by) == (None, None)
    assert flag.history.count() == 0  # bulk-created by the ingest, never changed


# ---------------------------------------------------------------------------- result page


def test_the_result_page_draws_one_box_per_defect_with_its_label(client, scene, quality):
    login(client, quality)
    result = scene["frame"]

    response = client.get(f"/inspection/results/{result.pk}/")

    assert response.status_code == 200
    page = response.content.decode()
    frame = section(page, "frame")
    img = re.search(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', frame)
    assert img.groups() == (
        f"/api/v1/inspection/evidence/{result.frame_image.sha256}/",
        "4096",
        "1024",
    )
    overlay = svg_of(frame, "overlay")
    assert overlay.get("viewBox") == "0 0 4096 1024"
    boxes = overlay.findall(f"{SVG}g")
    assert len(boxes) == 3
    by_id = {int(g.get("data-defect")): g for g in boxes}
    for cls, decision, conf, _, (x0, y0, x1, y1) in FRAME1_DEFECTS:
        g = by_id[scene[cls].pk]
        rect, label = g.find(f"{SVG}rect"), g.find(f"{SVG}text")
        assert g.get("data-decision") == decision
        assert [rect.get(k) for k in ("x", "y", "width", "height")] == [
            str(x0),
            str(y0),
            str(x1 - x0),
            str(y1 - y0),
        ]
        assert rect.get("stroke") == render.DECISION_COLOURS[decision]
        assert label.text == f"{cls} {conf:.2f}"
    # Labels sit above their box; the pinhole touches the top edge (below) and the right
    # side (ends at its right edge).
    particle = by_id[scene["particle"].pk].find(f"{SVG}text")
    assert float(particle.get("y")) < 244 and particle.get("text-anchor") == "start"
    pinhole = by_id[scene["pinhole"].pk].find(f"{SVG}text")
    assert float(pinhole.get("y")) > 16 and pinhole.get("dominant-baseline") == "text-before-edge"
    assert (pinhole.get("x"), pinhole.get("text-anchor")) == ("3906", "end")
    # The image is served to a logged-in person.
    served = client.get(img.group(1))
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert b"".join(served.streaming_content) == result.frame_image.image.read()


def test_the_result_page_lists_defects_model_flags_and_the_cells_they_reach(client, scene, quality):
    login(client, quality)
    result, model = scene["frame"], scene["frame"].model

    page = client.get(f"/inspection/results/{result.pk}/").content.decode()

    assert text(section(page, "model")) == (
        f"electrode-surface 1.1.0, threshold set {model.threshold_set} Active"
    )
    assert text(section(page, "metres")) == "1511.990 to 1512.010 m"
    assert f'href="/inspection/coils/{MOTHER}/" data-testid="coil-link"' in page
    table = section(page, "defects")
    rows = re.findall(r'<tr data-defect="(\d+)" data-cls="(\w+)" data-decision="(\w+)">', table)
    assert [(int(i), c, d) for i, c, d in rows] == [
        (scene["particle"].pk, "particle", "quarantine"),
        (scene["scratch"].pk, "scratch", "review"),
        (scene["pinhole"].pk, "pinhole", "ignore"),
    ]
    row_html = [part.split(">", 1)[1] for part in re.split(r"<tr data-defect=", table)[1:]]
    scratch = text(row_html[1])
    assert scratch.startswith(
        f"{scene['scratch'].pk} scratch 0.71 all 8 scratch 0.710 ok 0.290 crack 0.000 "
        "edge 0.000 particle 0.000 pinhole 0.000 void 0.000 wrinkle 0.000 ⌀"
    )
    assert f"⌀ 237 µm 44000 µm² 1512.005 12.4 600,748 {DASH} 640,752 Human review" in scratch
    assert scratch.endswith("scratch >= 200 µm: quarantine Waiting for review")
    flags = section(page, "result-flags")
    cells = dict(re.findall(r'<tr data-flag="(\d+)" data-action="(\w+)">', flags))
    particle_flag = CoilFlag.objects.get(defect=scene["particle"])
    scratch_flag = CoilFlag.objects.get(defect=scene["scratch"])
    assert cells == {str(particle_flag.pk): "hold", str(scratch_flag.pk): "review"}
    particle_cells = section(flags, "flag-cells")  # first row: the particle's hold
    assert re.findall(r'href="/trace/\?serial=(\w+)"', particle_cells) == [
        cell_serial(2),
        cell_serial(8),
    ]
    assert text(particle_cells) == f"{cell_serial(2)} On hold {cell_serial(8)} On hold"


def test_a_frame_without_its_image_shows_the_evidence_crops(
    client, camera, thread, quality, django_capture_on_commit_callbacks
):
    body = payload(
        camera.model,
        start_m=1400.0,
        defects=[defect(md_m=1400.01, cls="void", decision="quarantine", confidence=0.93)],
    )
    send(envelope(body, coil=MOTHER, message_id="cam-c1:crop"), django_capture_on_commit_callbacks)
    login(client, quality)
    void = Defect.objects.get()

    page = client.get(f"/inspection/results/{void.result_id}/").content.decode()

    assert 'data-testid="frame"' not in page
    crops = section(page, "crops")
    assert re.findall(r'<figure data-defect="(\d+)">', crops) == [str(void.pk)]
    assert f'src="/api/v1/inspection/evidence/{void.crop.sha256}/"' in crops
    assert "void 0.93 · Quarantine" in text(crops)


def test_an_unknown_result_is_404(client, scene, quality):
    login(client, quality)
    assert client.get(f"/inspection/results/{scene['frame'].pk + 100}/").status_code == 404


def test_pages_need_a_login(client, scene):
    for url in ("/inspection/", f"/inspection/results/{scene['frame'].pk}/", "/inspection/review/",
                f"/inspection/coils/{MOTHER}/", "/inspection/models/"):  # fmt: skip
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")


# --------------------------------------------------------------------------- review queue


def test_the_review_queue_lists_waiting_defects_oldest_first_with_a_form(
    client, scene, camera, quality, django_capture_on_commit_callbacks
):
    later = payload(
        camera.model,
        start_m=1800.0,
        frame_id=4,
        defects=[defect(md_m=1800.01, cls="wrinkle", decision="review", confidence=0.64)],
        acquired_at=timezone.now().isoformat(),
    )
    send(
        envelope(later, coil=MOTHER, message_id="cam-c1:later"), django_capture_on_commit_callbacks
    )
    wrinkle = Defect.objects.get(cls="wrinkle")
    login(client, quality)

    page = client.get("/inspection/review/").content.decode()

    queue = section(page, "queue")
    assert re.findall(r'data-defect="(\d+)" data-testid="queue-item"', queue) == [
        str(scene["scratch"].pk),
        str(wrinkle.pk),
    ]
    assert text(section(page, "queue-status")) == "2 defects waiting, oldest first."
    assert queue.count('data-testid="review-form"') == 2
    assert f'src="/api/v1/inspection/evidence/{scene["scratch"].crop.sha256}/"' in queue
    first = text(queue[: queue.index(f'id="defect-{wrinkle.pk}"')])
    assert "scratch 0.71 Human review all class probabilities scratch 0.710 ok 0.290" in first
    assert f"{MOTHER} at 1512.005 m, 12.4 mm across · ⌀ 237 µm" in first
    for value in ("confirm", "reclassify", "false_call"):
        assert f'name="defect-{wrinkle.pk}-verdict" value="{value}"' in queue


def test_the_auditor_sees_the_queue_without_forms(client, scene, auditor):
    login(client, auditor)

    page = client.get("/inspection/review/").content.decode()

    assert 'data-testid="review-form"' not in page
    assert "Read-only: quality engineers and MRB members review defects." in page
    assert re.findall(r'data-defect="(\d+)" data-testid="queue-item"', page) == [
        str(scene["scratch"].pk)
    ]


def test_confirming_a_defect_holds_the_cells_made_from_its_metres(
    client, scene, quality, django_capture_on_commit_callbacks
):
    login(client, quality)
    scratch = scene["scratch"]
    before = {h.pk for h in vision_holds()}

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/inspection/defects/{scratch.pk}/review/",
            {f"defect-{scratch.pk}-verdict": "confirm", f"defect-{scratch.pk}-comment": "real"},
        )

    assert response.status_code == 302
    assert response["Location"] == "/inspection/review/#queue"
    scratch.refresh_from_db()
    assert scratch.review_state == ReviewState.CONFIRMED
    review = DefectReview.objects.get()
    assert (review.defect, review.verdict, review.label, review.comment, review.reviewed_by) == (
        scratch,
        "confirm",
        "scratch",
        "real",
        quality,
    )
    flag = CoilFlag.objects.get(defect=scratch)
    assert (flag.action, flag.acknowledged_by) == (FlagAction.HOLD, quality)
    [hold] = [h for h in vision_holds() if h.pk not in before]
    assert held(hold) == {cell_serial(3), cell_serial(8)}
    assert hold.source_reference == f"vision flag #{flag.pk}"
    assert Unit.objects.get(serial=cell_serial(3)).status == UnitStatus.ON_HOLD
    page = client.get("/inspection/review/").content.decode()
    assert (
        f"Defect #{scratch.pk} (scratch at 1512.005 m on {MOTHER}): "
        "Confirm: the defect is real, as classified." in text(section(page, "messages"))
    )
    assert text(section(page, "queue-empty")) == "Nothing waits for review."


def test_a_verdict_by_htmx_answers_the_reviewed_row_and_the_count(
    client, scene, quality, django_capture_on_commit_callbacks
):
    login(client, quality)
    scratch = scene["scratch"]

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/inspection/defects/{scratch.pk}/review/",
            {f"defect-{scratch.pk}-verdict": "reclassify", f"defect-{scratch.pk}-label": "crack"},
            headers=HTMX,
        )

    assert response.status_code == 200
    fragment = response.content.decode()
    item = section(fragment, "reviewed-item")
    assert f'data-defect="{scratch.pk}" data-review-state="reclassified"' in item
    assert "Real defect of another class — true class crack" in text(item)
    flag = CoilFlag.objects.get(defect=scratch)
    assert f'data-flag="{flag.pk}" data-action="hold"' in item
    assert re.findall(r'data-testid="held-cell">(\w+)<', item) == [cell_serial(3), cell_serial(8)]
    status = section(fragment, "queue-status")
    assert 'hx-swap-oob="true"' in status
    assert text(status) == "0 defects waiting, oldest first."
    assert DefectReview.objects.get().label == "crack"


def test_a_false_call_closes_the_flag_and_holds_nothing(
    client, scene, quality, django_capture_on_commit_callbacks
):
    login(client, quality)
    scratch = scene["scratch"]
    holds_before = len(vision_holds())

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/inspection/defects/{scratch.pk}/review/",
            {f"defect-{scratch.pk}-verdict": "false_call"},
            headers=HTMX,
        )

    assert response.status_code == 200
    item = text(section(response.content.decode(), "reviewed-item"))
    assert "False call: good material" in item and "closed: Flag only, nothing held." in item
    assert CoilFlag.objects.get(defect=scratch).action == FlagAction.NONE
    assert len(vision_holds()) == holds_before
    assert Unit.objects.get(serial=cell_serial(3)).status == UnitStatus.IN_PROCESS


def _nothing_written(scratch: Defect) -> None:
    scratch.refresh_from_db()
    assert scratch.review_state == ReviewState.PENDING
    assert DefectReview.objects.count() == 0
    assert CoilFlag.objects.get(defect=scratch).action == FlagAction.REVIEW
    assert Unit.objects.get(serial=cell_serial(3)).status == UnitStatus.IN_PROCESS


@pytest.mark.parametrize("htmx", [False, True])
def test_a_bad_verdict_shows_the_error_and_writes_nothing(
    client, scene, quality, htmx, django_capture_on_commit_callbacks
):
    login(client, quality)
    scratch = scene["scratch"]
    holds_before = len(vision_holds())

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/inspection/defects/{scratch.pk}/review/",
            {f"defect-{scratch.pk}-verdict": "maybe", f"defect-{scratch.pk}-comment": "unsure"},
            headers=HTMX if htmx else {},
        )

    assert response.status_code == 400
    page = response.content.decode()
    assert ("<html" in page) is not htmx  # htmx gets the row, a plain post the page
    errors = text(section(page, "verdict-errors"))
    assert errors == "Choose a verdict: confirm, reclassify or false call (got maybe)."
    assert 'value="unsure"' in page  # the form keeps what was typed
    _nothing_written(scratch)
    assert len(vision_holds()) == holds_before


def test_reclassify_without_the_true_class_is_refused_under_the_field(client, scene, quality):
    login(client, quality)
    scratch = scene["scratch"]

    response = client.post(
        f"/inspection/defects/{scratch.pk}/review/",
        {f"defect-{scratch.pk}-verdict": "reclassify"},
        headers=HTMX,
    )

    assert response.status_code == 400
    assert text(section(response.content.decode(), "label-errors")) == (
        "Reclassify needs the true class, one of pinhole, void, particle, scratch, wrinkle, "
        "edge, crack."
    )
    _nothing_written(scratch)


def test_an_operator_cannot_review(client, scene, operator):
    login(client, operator)
    scratch = scene["scratch"]

    response = client.post(
        f"/inspection/defects/{scratch.pk}/review/",
        {f"defect-{scratch.pk}-verdict": "confirm"},
    )

    assert response.status_code == 403
    assert text(section(response.content.decode(), "review-error")) == (
        "Reviewing vision defects needs the permission inspection.add_defectreview "
        "(quality engineers and MRB members)."
    )
    _nothing_written(scratch)


# ------------------------------------------------------------------------------ coil map


def test_the_coil_map_draws_each_flagged_defect_and_the_uninspected_stretch(client, scene, quality):
    login(client, quality)

    response = client.get(f"/inspection/coils/{MOTHER}/")

    assert response.status_code == 200
    page = response.content.decode()
    cmap = svg_of(page, "coil-map")
    assert (cmap.get("data-length-m"), cmap.get("data-width-mm")) == ("3000", "81.92")
    x, y, w, h = (float(v) for v in cmap.get("data-plot").split())
    markers = [p for p in cmap.iter(f"{SVG}path") if p.get("class") == "defect"]
    # The ignored pinhole is logged, not mapped.
    assert sorted((int(p.get("data-defect")), p.get("data-cls")) for p in markers) == [
        (scene["particle"].pk, "particle"),
        (scene["scratch"].pk, "scratch"),
    ]
    particle = next(p for p in markers if p.get("data-cls") == "particle")
    assert particle.find(f"{SVG}title").text == (
        "particle 0.97 at 1511.995 m / 40.1 mm (quarantine)"
    )
    first = re.match(r"M([\d.]+) ([\d.]+)L([\d.]+)", particle.get("d"))
    # A diamond: its top vertex at the defect's metre and just above its millimetre.
    assert float(first.group(1)) == pytest.approx(x + 1511.995 / 3000 * w, abs=0.01)
    assert float(first.group(2)) < y + h - 40.1 / 81.92 * h
    [gap] = [r for r in cmap.iter(f"{SVG}rect") if r.get("class") == "uninspected"]
    assert (gap.get("data-start-m"), gap.get("data-end-m")) == ("1520.000", "1530.000")
    assert float(gap.get("x")) == pytest.approx(x + 1520 / 3000 * w, abs=0.01)
    assert float(gap.get("width")) == pytest.approx(10 / 3000 * w, abs=0.01)
    assert (float(gap.get("y")), float(gap.get("height"))) == (y, h)
    assert gap.find(f"{SVG}title").text == "uninspected (frame gap): 1520.000 to 1530.000 m"
    [band] = [r for r in cmap.iter(f"{SVG}rect") if r.get("class") == "hold"]
    particle_flag = CoilFlag.objects.get(defect=scene["particle"])
    assert (band.get("data-start-m"), band.get("data-end-m")) == (
        f"{particle_flag.start_m:.3f}",
        f"{particle_flag.end_m:.3f}",
    )
    assert text(section(page, "coverage")) == (
        f"{2 * FRAME_M:.2f} m inspected · 10.00 m uninspected"
    )
    defects = section(page, "coil-defects")
    assert re.findall(r'<tr data-defect="(\d+)" data-cls="(\w+)">', defects) == [
        (str(scene["particle"].pk), "particle"),
        (str(scene["scratch"].pk), "scratch"),
    ]
    flags = re.findall(r'data-flag="\d+" data-kind="(\w+)" data-action="(\w+)"', page)
    assert sorted(flags) == [("defect", "hold"), ("defect", "review"), ("uninspected", "hold")]
    pareto = svg_of(section(page, "pareto"), "pareto")
    assert [(g.get("data-cls"), g.get("data-count")) for g in pareto.iter(f"{SVG}g")] == [
        ("particle", "1"),
        ("scratch", "1"),
    ]


def test_a_coil_with_no_inspection_has_an_empty_map(client, scene, auditor):
    login(client, auditor)

    response = client.get("/inspection/coils/AC-260303-001/")

    assert response.status_code == 200
    cmap = svg_of(response.content.decode(), "coil-map")
    assert [p for p in cmap.iter(f"{SVG}path") if p.get("class") == "defect"] == []
    assert "No defect above the logging band on this coil." in "".join(cmap.itertext())


@pytest.mark.parametrize("serial", [cell_serial(3), "CC-260399-404"])
def test_the_coil_page_of_a_cell_or_an_unknown_serial_is_404(client, scene, quality, serial):
    login(client, quality)
    assert client.get(f"/inspection/coils/{serial}/").status_code == 404


# ------------------------------------------------------------------------ model registry


def test_the_registry_shows_figures_golden_result_and_who_did_what(
    client, vision_model, candidate, quality, camera
):
    login(client, quality)

    page = client.get("/inspection/models/").content.decode()

    cards = re.findall(r'data-model="(\d+)" data-version="([^"]+)" data-state="(\w+)"', page)
    assert cards == [
        (str(candidate.pk), "1.1.1-rc1", "validated"),
        (str(vision_model.pk), "1.1.0", "active"),
    ]
    active = page[page.index(f'id="model-{vision_model.pk}"') :]
    assert text(section(active, "sha256")) == vision_model.sha256
    assert text(section(active, "activated")).startswith("qe-vision, ")
    assert text(section(active, "approved")).startswith("qe-vision, ")
    m = vision_model.metrics["in_distribution"]
    row = re.search(r'<tr data-set="in_distribution">(.*?)</tr>', active, re.S).group(1)
    assert text(row) == (
        f"In distribution (test set) {m['count']} {m['accuracy'] * 100:.2f} % "
        f"{m['macro_f1']:.4f} {m['escape_rate'] * 100:.2f} % {m['false_alarm_rate'] * 100:.2f} %"
    )
    assert '<tr data-set="heldout_shifted">' in active
    golden = vision_model.golden_result
    assert text(section(active, "golden")).startswith(f"passed: {golden['count']} crops")
    history = text(section(active, "history"))
    assert "registered" in history and "approved: Commissioning acceptance" in history
    assert "activated: Line start" in history
    assert "runs on coat-c/cam-c1" in text(active[: active.index("</h2>")])
    # Commands by state: approve or retire a validated model; retire the active one.
    cand = page[
        page.index(f'id="model-{candidate.pk}"') : page.index(f'id="model-{vision_model.pk}"')
    ]
    assert re.findall(r'data-action="(\w+)"', cand) == ["approve", "retire"]
    assert re.findall(r'data-action="(\w+)"', active) == ["retire"]
    # One confusion matrix per set the manifest measured (test, held-out, both validations).
    cm = vision_model.metrics["in_distribution"]["confusion_matrix"]
    assert len(vision_model.metrics) == 4
    assert active.count('class="diag"') == len(vision_model.metrics) * len(cm)
    assert '<tr data-set="validation_shifted">' in active


def test_the_auditor_reads_the_registry_without_forms(client, vision_model, candidate, auditor):
    login(client, auditor)

    page = client.get("/inspection/models/").content.decode()

    assert 'data-testid="model-form"' not in page and "data-action=" not in page
    assert "Read-only: quality engineers approve, activate and retire models." in page
    assert len(re.findall(r'data-model="\d+"', page)) == 2


def test_a_quality_engineer_approves_then_activates_a_candidate(
    client, vision_model, candidate, quality, camera
):
    login(client, quality)

    response = client.post(
        f"/inspection/models/{candidate.pk}/approve/",
        {f"model-{candidate.pk}-reason": "Acceptance run week 12, lot 7"},
    )

    assert response.status_code == 302
    assert response["Location"] == f"/inspection/models/#model-{candidate.pk}"
    candidate.refresh_from_db()
    assert (candidate.state, candidate.approved_by) == (ModelState.APPROVED, quality)

    response = client.post(
        f"/inspection/models/{candidate.pk}/activate/",
        {f"model-{candidate.pk}-reason": "Replaces 1.1.0 on coat-c"},
        headers=HTMX,
    )

    assert response.status_code == 200
    fragment = response.content.decode()
    assert 'id="registry"' in fragment and "<html" not in fragment
    assert re.findall(r'data-version="([^"]+)" data-state="(\w+)"', fragment) == [
        ("1.1.1-rc1", "active"),
        ("1.1.0", "retired"),
    ]
    camera.refresh_from_db()
    assert camera.model == candidate


@pytest.mark.parametrize("htmx", [False, True])
def test_an_operator_cannot_approve_a_model(client, candidate, operator, htmx):
    login(client, operator)

    response = client.post(
        f"/inspection/models/{candidate.pk}/approve/",
        {f"model-{candidate.pk}-reason": "looks fine"},
        headers=HTMX if htmx else {},
    )

    assert response.status_code == 403
    assert text(section(response.content.decode(), "registry-error")) == (
        "Approving, activating or retiring a vision model needs the permission "
        "inspection.approve_inspectionmodel (quality engineers)."
    )
    candidate.refresh_from_db()
    assert (candidate.state, candidate.approved_by, candidate.approved_at) == (
        ModelState.VALIDATED,
        None,
        None,
    )
    assert candidate.history.count() == 2  # registered, validated


def test_an_approval_without_a_reason_is_refused_under_the_field(client, candidate, quality):
    login(client, quality)

    response = client.post(
        f"/inspection/models/{candidate.pk}/approve/", {f"model-{candidate.pk}-reason": "  "}
    )

    assert response.status_code == 400
    card = response.content.decode()
    card = card[card.index(f'id="model-{candidate.pk}"') :]
    assert text(section(card, "reason-errors")) == "An approval needs a reason."
    candidate.refresh_from_db()
    assert candidate.state == ModelState.VALIDATED and candidate.history.count() == 2


def test_retiring_the_model_a_camera_runs_is_refused_with_the_services_message(
    client, vision_model, quality, camera
):
    login(client, quality)

    response = client.post(
        f"/inspection/models/{vision_model.pk}/retire/",
        {f"model-{vision_model.pk}-reason": "end of life"},
        headers=HTMX,
    )

    assert response.status_code == 409
    assert text(section(response.content.decode(), "model-error")) == (
        "state: electrode-surface 1.1.0 runs on 1 camera(s); activate its replacement."
    )
    vision_model.refresh_from_db()
    assert vision_model.state == ModelState.ACTIVE
    assert InspectionModel.objects.filter(state=ModelState.RETIRED).count() == 0


def test_an_unknown_model_is_404_and_a_get_405(client, vision_model, quality):
    login(client, quality)
    assert client.post(f"/inspection/models/{vision_model.pk + 50}/approve/").status_code == 404
    assert client.get(f"/inspection/models/{vision_model.pk}/approve/").status_code == 405


# ------------------------------------------------------------------------------ drawings


def test_nice_ticks_are_round_and_cover_the_range():
    assert render.nice_ticks(0.0, 3000.0, 10) == [float(v) for v in range(0, 3001, 500)]
    assert render.nice_ticks(0.0, 81.92, 5) == [0.0, 20.0, 40.0, 60.0, 80.0]
    assert render.nice_ticks(0.0, 3.0, 5, integer=True) == [0.0, 1.0, 2.0, 3.0]
    assert render.nice_ticks(5.0, 5.0) == [5.0]


def test_drawn_text_is_escaped():
    box = render.OverlayBox(1, 10, 200, 20, 210, '<script>"x"</script>', "review")
    svg = render.frame_overlay(width_px=100, height_px=300, boxes=[box])
    assert "<script>" not in svg
    label = ET.fromstring(svg).find(f"{SVG}g/{SVG}text")  # noqa: S314  our own output
    assert label.text == '<script>"x"</script>'
    with pytest.raises(ValueError, match="length_m must be a positive number"):
        render.coil_map(serial="x", length_m=0.0, width_mm=10.0, defects=[])
