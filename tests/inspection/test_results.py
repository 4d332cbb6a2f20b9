"""Inspection results from the vision workers through the ingest path: stored with their
evidence, mapped to the coil's metres and from there to the exact cells made from them,
which compliance holds; bad input refused whole into the dead-letter store.

The thread (tests/genealogy/conftest.py): mother coil CC-260303-001 is slit into L1-R2 and
L2-R2 from metre 1,500; cells c01-c06 use L1-R2 [0, 6) ... [30, 36), cells c07-c12 use
L2-R2 [2, 8) ... [32, 38). Mother metre 1,512.5 is L1-R2 metre 12.5 (cell c03) and L2-R2
metre 12.5 (cell c08).
"""

from __future__ import annotations

import numpy as np
import pytest

from compliance.choices import HoldSource, HoldStatus
from compliance.models import Hold
from genealogy.choices import UnitKind, UnitStatus
from genealogy.models import Unit
from genealogy.services import coil_segment_consume, unit_create
from inspection import services
from inspection.choices import Decision, FlagAction, FlagKind, ReviewState, Verdict
from inspection.models import (
    CellVisionFlag,
    CoilFlag,
    Defect,
    DefectReview,
    Evidence,
    InspectionResult,
    ShadowDisagreement,
)
from qms.ingest.models import DeadLetter
from qms.ingest.services import ingest_raw
from tests.genealogy.conftest import cell_serial
from tests.inspection.payloads import crop, defect, envelope, payload, png, raw

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]

MOTHER = "CC-260303-001"


@pytest.fixture
def send(committed):
    def _send(doc) -> list:
        return committed(ingest_raw, [raw(doc)])

    return _send


def vision_holds() -> list[Hold]:
    return list(Hold.objects.filter(source=HoldSource.VISION).order_by("pk"))


def held_serials(hold: Hold) -> set[str]:
    return set(hold.units.values_list("serial", flat=True))


def test_a_quarantined_particle_holds_exactly_the_cells_made_from_its_metres(send, camera, thread):
    body = payload(camera.model, start_m=1512.49, defects=[defect(md_m=1512.5, cls="particle")])

    [outcome] = send(envelope(body, coil=MOTHER, message_id="cam-c1:000001"))

    assert outcome.status == "accepted", outcome.reason
    result = InspectionResult.objects.get()
    assert (result.verdict, result.model_version, result.threshold_set) == (
        Verdict.DEFECT,
        camera.model.version,
        camera.model.threshold_set,
    )
    d = Defect.objects.get()
    assert (d.cls, d.decision, d.md_m, d.review_state) == (
        "particle",
        Decision.QUARANTINE,
        1512.5,
        ReviewState.NONE,
    )
    assert d.crop is not None and d.crop.width_px == 128 and d.crop.height_px == 128
    assert d.crop.image.read() == png(crop("particle"))
    flag = CoilFlag.objects.get()
    assert (flag.kind, flag.action, flag.cls) == (FlagKind.DEFECT, FlagAction.HOLD, "particle")
    assert flag.start_m == pytest.approx(1512.5 - 6e-5)  # 12 scan lines at 20 µm, centred
    assert flag.end_m == pytest.approx(1512.5 + 6e-5)
    cells = set(CellVisionFlag.objects.values_list("unit__serial", flat=True))
    assert cells == {cell_serial(3), cell_serial(8)}
    [hold] = vision_holds()
    assert held_serials(hold) == cells
    assert hold.status == HoldStatus.OPEN
    assert hold.source_reference == f"vision flag #{flag.pk}"
    assert "CC-260303-001 metres 1512.500 to 1512.500" in hold.reason
    assert set(Unit.objects.filter(serial__in=cells).values_list("status", flat=True)) == {
        UnitStatus.ON_HOLD
    }


def test_a_repeat_of_the_same_message_is_applied_once(send, camera, thread):
    doc = envelope(
        payload(camera.model, start_m=1512.49, defects=[defect(md_m=1512.5)]),
        coil=MOTHER,
        message_id="cam-c1:000001",
    )

    first, again = send(doc), send(doc)

    assert (first[0].status, again[0].status) == ("accepted", "duplicate")
    assert (InspectionResult.objects.count(), CoilFlag.objects.count()) == (1, 1)
    assert len(vision_holds()) == 1


def test_cells_made_later_from_flagged_metres_are_held_when_they_consume_them(
    send, committed, camera, thread
):
    # Mother coil CC-260303-002 is slit as L1 over [0, 3000); cells c14-c16 use [0, 18).
    body = payload(camera.model, start_m=20.49, defects=[defect(md_m=20.5, cls="void")])
    assert send(envelope(body, coil="CC-260303-002", message_id="cam-c1:000002"))[0].status == (
        "accepted"
    )
    assert CellVisionFlag.objects.count() == 0 and vision_holds() == []

    lane = thread["SC-260303-002-L1"]
    early = unit_create(kind=UnitKind.CELL, serial=cell_serial(17), line=lane.line,
                        actor=thread.actor)  # fmt: skip
    committed(
        coil_segment_consume,
        coil=lane,
        consumer=early,
        start_m=18.0,
        end_m=24.0,
        actor=thread.actor,
    )
    clean = unit_create(kind=UnitKind.CELL, serial=cell_serial(18), line=lane.line,
                        actor=thread.actor)  # fmt: skip
    committed(
        coil_segment_consume,
        coil=lane,
        consumer=clean,
        start_m=24.0,
        end_m=30.0,
        actor=thread.actor,
    )

    assert list(CellVisionFlag.objects.values_list("unit__serial", flat=True)) == [cell_serial(17)]
    [hold] = vision_holds()
    assert held_serials(hold) == {cell_serial(17)}
    early.refresh_from_db()
    clean.refresh_from_db()
    assert (early.status, clean.status) == (UnitStatus.ON_HOLD, UnitStatus.IN_PROCESS)


def test_an_uninspected_stretch_counts_as_nonconforming(send, camera, thread):
    body = payload(
        camera.model,
        start_m=1500.0,
        verdict="uninspected",
        uninspected_reason="frame_gap",
        detail="frames 1041-1528 missing (encoder 150000000-160000000)",
        coil_end_m=1510.0,
    )

    assert send(envelope(body, coil=MOTHER, message_id="cam-c1:000003"))[0].status == "accepted"

    result = InspectionResult.objects.get()
    assert (result.verdict, result.uninspected_reason) == (Verdict.UNINSPECTED, "frame_gap")
    flag = CoilFlag.objects.get()
    assert (flag.kind, flag.action, flag.start_m, flag.end_m) == (
        FlagKind.UNINSPECTED,
        FlagAction.HOLD,
        1500.0,
        1510.0,
    )
    # L1-R2 [0, 10) m: c01 [0, 6), c02 [6, 12); L2-R2 from metre 2: c07 [2, 8), c08 [8, 14)
    assert held_serials(vision_holds()[0]) == {
        cell_serial(1), cell_serial(2), cell_serial(7), cell_serial(8)
    }  # fmt: skip


def test_a_defect_in_the_review_band_waits_for_a_person(send, committed, camera, thread, quality):
    body = payload(
        camera.model,
        start_m=1512.49,
        defects=[defect(md_m=1512.5, cls="scratch", decision="review", confidence=0.71)],
    )
    send(envelope(body, coil=MOTHER, message_id="cam-c1:000004"))
    d = Defect.objects.get()
    flag = CoilFlag.objects.get()
    assert (d.review_state, flag.action) == (ReviewState.PENDING, FlagAction.REVIEW)
    assert vision_holds() == [] and CellVisionFlag.objects.count() == 0

    review = committed(
        services.defect_review, defect=d, verdict="confirm", actor=quality, comment="real"
    )

    assert (review.label, review.reviewed_by) == ("scratch", quality)
    d.refresh_from_db()
    flag.refresh_from_db()
    assert (d.review_state, flag.action) == (ReviewState.CONFIRMED, FlagAction.HOLD)
    assert held_serials(vision_holds()[0]) == {cell_serial(3), cell_serial(8)}


def test_a_false_call_closes_the_flag_and_holds_nothing(send, camera, thread, quality):
    body = payload(
        camera.model,
        start_m=1512.49,
        defects=[defect(md_m=1512.5, cls="wrinkle", decision="review", confidence=0.64)],
    )
    send(envelope(body, coil=MOTHER, message_id="cam-c1:000005"))

    services.defect_review(defect=Defect.objects.get(), verdict="false_call", actor=quality)

    assert CoilFlag.objects.get().action == FlagAction.NONE
    assert DefectReview.objects.get().label == "ok"
    assert Defect.objects.get().review_state == ReviewState.FALSE_CALL
    assert vision_holds() == []


def test_reclassify_needs_the_true_class(send, camera, thread, quality):
    send(
        envelope(
            payload(
                camera.model,
                start_m=1512.49,
                defects=[defect(md_m=1512.5, cls="scratch", decision="review")],
            ),
            coil=MOTHER,
            message_id="cam-c1:000006",
        )
    )
    d = Defect.objects.get()
    from qms.exceptions import InvalidInput

    with pytest.raises(InvalidInput) as exc:
        services.defect_review(defect=d, verdict="reclassify", actor=quality)
    assert exc.value.field == "label"
    assert DefectReview.objects.count() == 0

    review = services.defect_review(defect=d, verdict="reclassify", label="crack", actor=quality)
    assert review.label == "crack"
    assert Defect.objects.get().review_state == ReviewState.RECLASSIFIED


def test_ignored_defects_are_logged_without_a_flag(send, camera, thread):
    body = payload(
        camera.model,
        start_m=1512.49,
        defects=[defect(md_m=1512.5, decision="ignore", confidence=0.31)],
    )
    send(envelope(body, coil=MOTHER, message_id="cam-c1:000007"))
    assert Defect.objects.get().decision == Decision.IGNORE
    assert CoilFlag.objects.count() == 0


def test_a_shadow_model_disagreement_is_kept_for_review(send, camera, thread):
    body = payload(
        camera.model,
        start_m=1512.49,
        defects=[defect(md_m=1512.5, cls="particle")],
        shadow={"version": "1.2.0-rc1", "verdict": "ok", "classes": []},
    )
    send(envelope(body, coil=MOTHER, message_id="cam-c1:000008"))
    agree = payload(
        camera.model,
        start_m=1400.0,
        frame_id=2,
        shadow={"version": "1.2.0-rc1", "verdict": "ok", "classes": []},
    )
    send(envelope(agree, coil=MOTHER, message_id="cam-c1:000009"))

    d = ShadowDisagreement.objects.get()
    assert (d.shadow_verdict, d.active_classes, d.result.frame_id) == ("ok", ["particle"], 1)


def test_a_full_frame_is_kept_as_evidence_when_sent(send, camera, thread):
    frame = np.full((1024, 4096), 72, np.uint8)
    data = png(frame)
    import base64
    import hashlib

    body = payload(
        camera.model,
        start_m=1400.0,
        frame_png_b64=base64.b64encode(data).decode(),
        frame_sha256=hashlib.sha256(data).hexdigest(),
    )
    assert send(envelope(body, coil=MOTHER, message_id="cam-c1:000010"))[0].status == "accepted"
    result = InspectionResult.objects.get()
    assert (result.frame_image.width_px, result.frame_image.height_px) == (4096, 1024)


# --- bad input: refused whole, into the dead-letter store ------------------------------------


def _bad_crop(kind: str):
    if kind == "not_png":
        return b"\x89PNG\r\n\x1a\n but not really"
    if kind == "16_bit":
        return png(np.full((128, 128), 3000, np.uint16))
    if kind == "colour":
        return png(np.zeros((128, 128, 3), np.uint8))
    if kind == "wrong_size":
        return png(np.zeros((64, 128), np.uint8))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("not_png", "does not decode"),
        ("16_bit", "8-bit grayscale"),
        ("colour", "8-bit grayscale"),
        ("wrong_size", "expected 128x128"),
    ],
)
def test_a_bad_evidence_image_is_refused_with_nothing_written(send, camera, thread, kind, reason):
    body = payload(
        camera.model,
        start_m=1512.49,
        defects=[defect(md_m=1512.5), defect(md_m=1512.51, image=_bad_crop(kind))],
    )

    [outcome] = send(envelope(body, coil=MOTHER, message_id=f"cam-c1:bad-{kind}"))

    assert outcome.status == "rejected"
    assert reason in outcome.reason
    assert outcome.field == "payload.defects[1].crop_png_b64"
    letter = DeadLetter.objects.get()
    assert (letter.kind, letter.transport, letter.field) == (
        "inspection",
        "vision",
        "payload.defects[1].crop_png_b64",
    )
    assert b"cam-c1:bad-" in bytes(letter.raw)
    assert (InspectionResult.objects.count(), Defect.objects.count()) == (0, 0)
    assert (Evidence.objects.count(), CoilFlag.objects.count(), vision_holds()) == (0, 0, [])


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (
            lambda b: b["defects"][0].update(crop_sha256="0" * 64),
            "payload.defects[0].crop_png_b64",
            "checksum mismatch",
        ),
        (lambda b: b["model"].update(version="9.9.9"), "payload.model.version", "Unknown model"),
        (
            lambda b: b["model"].update(sha256="ab" * 32),
            "payload.model.sha256",
            "not the registered one",
        ),
        (
            lambda b: b["model"].update(threshold_set="deadbeef0000"),
            "payload.model.threshold_set",
            "not the registered",
        ),
        (lambda b: b["defects"][0].update(md_m=1530.0), "payload.defects[0].md_m", "outside"),
        (
            lambda b: b["defects"][0].update(bbox_px=[4000, 10, 4200, 20]),
            "payload.defects[0].bbox_px",
            "not inside",
        ),
        (lambda b: b.update(camera="cam-x9"), "payload.camera", "no camera"),
        (
            lambda b: b.update(acquired_at="2099-01-01T00:00:00+00:00"),
            "payload.acquired_at",
            "in the future",
        ),
        (lambda b: b.update(coil_end_m=1511.0), "payload.coil_end_m", "greater than"),
        (lambda b: b.pop("verdict"), "payload", "verdict"),
        (lambda b: b.update(verdict="uninspected"), "payload", "uninspected_reason"),
        (
            lambda b: b["defects"][0].update(crop_png_b64="A" * 70_000),
            "payload.defects[0].crop_png_b64",
            "long",
        ),
    ],
)
def test_each_bad_result_is_refused_naming_its_field(send, camera, thread, change, field, reason):
    body = payload(camera.model, start_m=1512.49, defects=[defect(md_m=1512.5)])
    change(body)

    [outcome] = send(envelope(body, coil=MOTHER, message_id="cam-c1:bad"))

    assert outcome.status == "rejected"
    assert reason in outcome.reason, outcome.reason
    assert (outcome.field or "").startswith(field), outcome.field
    assert DeadLetter.objects.filter(kind="inspection").count() == 1
    assert (InspectionResult.objects.count(), Evidence.objects.count()) == (0, 0)


def test_an_unknown_coil_waits_in_the_dead_letter_store_for_a_retry(send, camera, thread):
    body = payload(camera.model, start_m=10.0)

    [outcome] = send(envelope(body, coil="CC-260399-404", message_id="cam-c1:unknown"))

    assert outcome.status == "rejected"
    letter = DeadLetter.objects.get()
    assert (letter.field, letter.retry_until is not None) == ("unit", True)


def test_a_result_naming_a_cell_instead_of_a_coil_is_refused(send, camera, thread):
    body = payload(camera.model, start_m=10.0)
    [outcome] = send(envelope(body, coil=cell_serial(1), message_id="cam-c1:cell"))
    assert (outcome.status, outcome.field) == ("rejected", "unit")
    assert InspectionResult.objects.count() == 0
