"""Services of the risk app: scoring cells from the plant's records, quarantine events,
the model registry (tampered files, approval, rollback) and field returns with labels."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta

import numpy as np
import pytest
from django.utils import timezone

from formation.events import FormationGraded
from qms import events as event_registry
from qms.exceptions import InvalidInput, NotFound, Refused
from risk import services
from risk.baseline import baseline_reasons, baseline_score
from risk.choices import FailureMode, ModelState, ReturnLevel
from risk.events import CellsQuarantined, CellsScored
from risk.features import FEATURE_NAMES
from risk.models import FieldReturn, FieldReturnLabel, RiskModel, RiskScore
from risk.scoring import RiskModel as ServedModel
from risk.scoring import default_model_paths
from tests.factories import UserFactory
from tests.genealogy.conftest import VINS
from tests.risk.conftest import features_write

OUTLIER = 5  # index of the cell that self-discharges ten times its lot's rate


@pytest.fixture
def published(monkeypatch):
    """Events published by the code under test, in order (delivery is tested separately)."""
    seen: list[object] = []
    monkeypatch.setattr(event_registry, "publish", seen.append)
    return seen


def _matrix(scores) -> np.ndarray:
    return np.array([[s.features[name] for name in FEATURE_NAMES] for s in scores])


# --- scoring ----------------------------------------------------------------------------------


def test_scores_are_stored_with_model_version_reasons_and_baseline(thread, risk_model):
    features_write(thread.cells, outlier_index=OUTLIER)

    scores = services.cells_score(cell_ids=[c.pk for c in thread.cells], actor=thread.actor)

    assert len(scores) == 16
    assert RiskScore.objects.count() == 16
    assert [s.unit_id for s in scores] == sorted(c.pk for c in thread.cells)
    assert {s.model_id for s in scores} == {risk_model.pk}
    assert {s.model_version for s in scores} == {"1.1.0"}
    # the stored figures are what the committed model gives for the stored features
    served = ServedModel.load(*default_model_paths()[:1])
    x = _matrix(scores)
    risk, p, o = served.score(x)
    np.testing.assert_allclose([s.risk for s in scores], risk, rtol=0, atol=1e-12)
    np.testing.assert_allclose([s.supervised_p for s in scores], p, rtol=0, atol=1e-12)
    np.testing.assert_allclose([s.outlier_score for s in scores], o, rtol=0, atol=1e-9)
    np.testing.assert_allclose([s.baseline_score for s in scores], baseline_score(x), atol=1e-12)
    assert [s.baseline_flags for s in scores] == baseline_reasons(x)
    assert [s.reasons for s in scores] == served.reasons(x)
    threshold = served.rule("default").risk_threshold
    assert {s.threshold for s in scores} == {threshold}
    assert {s.product for s in scores} == {"default"}
    assert [s.quarantined for s in scores] == [s.risk >= threshold for s in scores]
    # the micro-short cell: quarantined, and the reasons say why in words
    bad = next(s for s in scores if s.unit_id == thread.cells[OUTLIER].pk)
    assert bad.quarantined is True
    assert bad.supervised_p > 0.99
    assert "K-value 50.0 MAD above lot median (rack offset removed)" in bad.reasons
    assert "lot:k_value_z" in bad.baseline_flags
    # a typical cell of the lot is not
    first = next(s for s in scores if s.unit_id == thread.cells[0].pk)
    assert first.quarantined is False
    assert first.reasons == ["no measurement beyond 2 robust sigmas from typical"]


def test_upstream_gauges_come_from_the_metres_each_cell_consumed(thread, risk_model, plant):
    features_write(thread.cells, outlier_index=OUTLIER)
    coat, fill = plant.chars["coat_weight"], plant.chars["fill_mass"]
    coat_half = (coat.usl - coat.lsl) / 2
    fill_half = (fill.usl - fill.lsl) / 2

    scores = {s.unit_id: s for s in services.cells_score(cell_ids=[c.pk for c in thread.cells])}

    # c01 used mother-coil metres [1500, 1506): the 23.02 reading at 1500 m, not 23.41
    c01 = scores[thread.cell(1).pk].features
    assert c01["cathode_loading_mg_cm2_dev"] == pytest.approx((23.02 - 23.0) / coat_half, abs=1e-6)
    # c03 used [1512, 1518): the 23.41 reading at 1512.5 m, above the USL
    c03 = scores[thread.cell(3).pk]
    assert c03.features["cathode_loading_mg_cm2_dev"] == pytest.approx(
        (23.41 - 23.0) / coat_half, abs=1e-6
    )
    assert "cathode coat weight above upper spec limit (1.19 of tolerance)" in c03.reasons
    assert "spec:cathode_loading_mg_cm2" in c03.baseline_flags
    # c05 was filled with 404.2 g
    assert scores[thread.cell(5).pk].features["fill_mass_g_dev"] == pytest.approx(
        (404.2 - 410.0) / fill_half, abs=1e-6
    )
    # c14 came from a coil nobody weighed; c16 was never on the check-weigher either
    assert scores[thread.cell(14).pk].features["missing_values"] == 1.0
    assert scores[thread.cell(16).pk].features["missing_values"] == 2.0
    assert scores[thread.cell(1).pk].features["missing_values"] == 0.0
    # no camera inspected these coils: vision is absent, not zero
    assert c01["vision_defects_on_segments_missing"] == 1.0
    assert c01["open_spc_alarms"] == 0.0
    assert c01["open_spc_alarms_missing"] == 0.0


def test_each_cell_is_judged_by_its_own_lines_spec_limits(thread, risk_model, plant):
    """A cylindrical line's fill mass is grams where a prismatic cell's is hundreds of grams:
    scored together, each cell's deviation uses its own line's control plan."""
    from genealogy.services import MeasurementInput, measurements_record
    from qms.choices import CellFormat, ProcessStep
    from qms.models import Characteristic
    from tests.factories import LineFactory, StationFactory, UnitFactory

    features_write(thread.cells, outlier_index=OUTLIER)
    cyl = LineFactory(site=plant.site, code="l2-cyl", cell_format=CellFormat.CYLINDRICAL)
    fill = StationFactory(line=cyl, code="fill", process_step=ProcessStep.ELECTROLYTE_FILL)
    Characteristic.objects.create(
        station=fill,
        code=plant.chars["fill_mass"].code,
        name="Electrolyte fill mass",
        unit="g",
        nominal=5.0,
        lsl=4.95,
        usl=5.05,
        measurement_method="check-weigher before and after fill",
        sample_size=1,
        sample_frequency="every cell",
        reaction_plan="Hold the cell; MRB.",
    )
    cells = [UnitFactory(serial=f"C2000000{i:04d}", line=cyl) for i in range(1, 11)]
    features_write(cells, seed=7)
    measurements_record(
        rows=[
            MeasurementInput(
                unit_id=cell.pk,
                characteristic_id=cyl.stations.get(code="fill").characteristics.get().pk,
                value=4.99 if i == 0 else 5.0 + 0.002 * i,
                measured_at=timezone.now() - timedelta(days=4),
            )
            for i, cell in enumerate(cells)
        ],
        actor=thread.actor,
    )

    scores = {
        s.unit_id: s for s in services.cells_score(cell_ids=[c.pk for c in thread.cells + cells])
    }

    assert scores[cells[0].pk].features["fill_mass_g_dev"] == pytest.approx(-0.2, abs=1e-6)
    fill_half = (plant.chars["fill_mass"].usl - plant.chars["fill_mass"].lsl) / 2
    assert scores[thread.cell(5).pk].features["fill_mass_g_dev"] == pytest.approx(
        (404.2 - 410.0) / fill_half, abs=1e-6
    )
    assert not any("fill mass" in r for r in scores[cells[0].pk].reasons)


def test_cells_above_threshold_publish_the_quarantine_event(thread, risk_model, published):
    features_write(thread.cells, outlier_index=OUTLIER)

    scores = services.cells_score(cell_ids=[c.pk for c in thread.cells])

    held = [s for s in scores if s.quarantined]
    assert thread.cells[OUTLIER].pk in {s.unit_id for s in held}
    assert published == [
        CellsScored(
            score_ids=tuple(s.pk for s in scores),
            unit_ids=tuple(s.unit_id for s in scores),
            model_version="1.1.0",
        ),
        CellsQuarantined(
            score_ids=tuple(s.pk for s in held),
            unit_ids=tuple(s.unit_id for s in held),
            model_version="1.1.0",
        ),
    ]


def test_no_quarantine_event_when_no_cell_is_above(thread, risk_model, published):
    features_write(thread.cells, outlier_index=OUTLIER)

    scores = services.cells_score(cell_ids=[thread.cell(1).pk])

    assert [s.quarantined for s in scores] == [False]
    assert [type(e) for e in published] == [CellsScored]


def test_scoring_without_an_active_model_is_refused_and_writes_nothing(thread, published):
    features_write(thread.cells)

    with pytest.raises(Refused) as exc:
        services.cells_score(cell_ids=[thread.cell(1).pk])

    assert exc.value.code == "no_active_model"
    assert RiskScore.objects.count() == 0
    assert published == []


def test_scoring_a_pack_or_an_unknown_unit_is_refused(thread, risk_model):
    with pytest.raises(Refused, match="Not cells: PK2611000001"):
        services.cells_score(cell_ids=[thread.cell(1).pk, thread["PK2611000001"].pk])
    with pytest.raises(NotFound):
        services.cells_score(cell_ids=[thread.cell(1).pk, 10**9])
    assert RiskScore.objects.count() == 0


def test_formation_graded_scores_the_cells_once(
    thread, risk_model, celery_eager, django_capture_on_commit_callbacks
):
    features_write(thread.cells, outlier_index=OUTLIER)
    ids = tuple(c.pk for c in thread.cells[:4])

    for _ in range(2):  # the broker may deliver twice
        with django_capture_on_commit_callbacks(execute=True):
            event_registry.publish(FormationGraded(grade_ids=(), cell_ids=ids))

    assert sorted(RiskScore.objects.values_list("unit_id", flat=True)) == sorted(ids)


# --- model registry ---------------------------------------------------------------------------


def _copy_model(tmp_path, *, version: str) -> tuple:
    """The committed model files copied under another version (the same graph)."""
    manifest_path, onnx_path = default_model_paths()
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = version
    manifest["file"] = f"thermal-risk-{version}.onnx"
    out = tmp_path / "incoming"
    out.mkdir(exist_ok=True)
    new_manifest = out / f"thermal-risk-{version}.manifest.json"
    new_manifest.write_text(json.dumps(manifest))
    new_onnx = out / manifest["file"]
    shutil.copyfile(onnx_path, new_onnx)
    return new_manifest, new_onnx


def _tamper(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_register_copies_files_and_validates(quality, settings):
    manifest, onnx = default_model_paths()

    model = services.model_register(manifest_path=manifest, onnx_path=onnx, actor=quality)

    assert model.state == ModelState.VALIDATED
    assert model.sha256 == json.loads(manifest.read_text())["sha256"]
    assert model.onnx_path().read_bytes() == onnx.read_bytes()
    assert model.thresholds["default"]["mode"] == "top_fraction"
    assert [h.history_change_reason for h in model.history.order_by("history_id")] == [
        "registered",
        f"checksum and manifest passed (sha256 {model.sha256[:12]})",
    ]


def test_tampered_file_is_refused_at_registration(quality, tmp_path, settings):
    manifest, onnx = _copy_model(tmp_path, version="1.0.1")
    _tamper(onnx)

    with pytest.raises(InvalidInput) as exc:
        services.model_register(manifest_path=manifest, onnx_path=onnx, actor=quality)

    assert exc.value.code == "checksum_mismatch"
    assert RiskModel.objects.count() == 0
    assert not (settings.QMS_MODEL_STORE / "thermal-risk" / "1.0.1").exists()


def test_tampered_stored_file_is_refused_at_activation_and_the_active_model_stays(
    thread, risk_model, quality, tmp_path
):
    manifest, onnx = _copy_model(tmp_path, version="1.0.1")
    challenger = services.model_register(manifest_path=manifest, onnx_path=onnx, actor=quality)
    services.model_approve(model=challenger, actor=quality, reason="Comparison reviewed")
    _tamper(challenger.onnx_path())

    with pytest.raises(InvalidInput) as exc:
        services.model_activate(model=challenger, actor=quality, reason="Promote")

    assert exc.value.code == "checksum_mismatch"
    risk_model.refresh_from_db()
    challenger.refresh_from_db()
    assert risk_model.state == ModelState.ACTIVE
    assert challenger.state == ModelState.APPROVED
    features_write(thread.cells)
    assert {s.model_version for s in services.cells_score(cell_ids=[thread.cell(1).pk])} == {
        "1.1.0"
    }


def test_activation_retires_the_previous_model_and_rollback_restores_it(
    thread, risk_model, quality, tmp_path
):
    features_write(thread.cells)
    old_score = services.cells_score(cell_ids=[thread.cell(1).pk])[0]
    manifest, onnx = _copy_model(tmp_path, version="1.0.1")
    challenger = services.model_register(manifest_path=manifest, onnx_path=onnx, actor=quality)
    services.model_approve(model=challenger, actor=quality, reason="Comparison reviewed")

    services.model_activate(model=challenger, actor=quality, reason="Promote")

    risk_model.refresh_from_db()
    assert risk_model.state == ModelState.RETIRED
    new_score = services.cells_score(cell_ids=[thread.cell(1).pk])[0]
    assert new_score.model_version == "1.0.1"
    old_score.refresh_from_db()
    assert (old_score.model_id, old_score.model_version) == (risk_model.pk, "1.1.0")

    services.model_activate(model=risk_model, actor=quality, reason="Rollback")

    risk_model.refresh_from_db()
    challenger.refresh_from_db()
    assert (risk_model.state, challenger.state) == (ModelState.ACTIVE, ModelState.RETIRED)
    assert RiskModel.objects.filter(state=ModelState.ACTIVE).count() == 1


def test_approval_needs_the_permission_and_a_validated_model(operator, quality, tmp_path):
    manifest, onnx = default_model_paths()
    model = services.model_register(manifest_path=manifest, onnx_path=onnx, actor=quality)

    with pytest.raises(Refused) as exc:
        services.model_approve(model=model, actor=operator, reason="looks fine")
    assert exc.value.code == "forbidden"
    with pytest.raises(Refused, match="is not approved"):
        services.model_activate(model=model, actor=quality, reason="skip approval")
    with pytest.raises(InvalidInput):
        services.model_approve(model=model, actor=quality, reason="  ")
    model.refresh_from_db()
    assert model.state == ModelState.VALIDATED
    assert model.approved_by is None

    services.model_approve(model=model, actor=quality, reason="Hold-out comparison reviewed")
    model.refresh_from_db()
    assert (model.state, model.approved_by) == (ModelState.APPROVED, quality)
    with pytest.raises(Refused, match="Only a validated model"):
        services.model_approve(model=model, actor=quality, reason="again")


def test_registering_a_version_twice_is_refused(risk_model, quality):
    manifest, onnx = default_model_paths()
    with pytest.raises(Refused, match="registered already"):
        services.model_register(manifest_path=manifest, onnx_path=onnx, actor=quality)
    assert RiskModel.objects.count() == 1


# --- field returns ----------------------------------------------------------------------------


def test_pack_return_labels_each_of_its_cells_with_one_over_n(thread, quality):
    fr = services.field_return_record(
        returned_on=date(2026, 11, 2),
        failure_mode=FailureMode.THERMAL_EVENT,
        pack_serial="PK2611000001",
        vin=VINS[0],
        analysis="Pack vented at 62 % SOC while parked; cell not yet identified.",
        actor=quality,
    )

    assert fr.level == ReturnLevel.PACK
    assert fr.number == "FR-2026-00001"
    assert fr.pack == thread["PK2611000001"]
    assert fr.cell is None
    labels = list(FieldReturnLabel.objects.filter(field_return=fr).order_by("unit_id"))
    assert [lab.unit_id for lab in labels] == sorted(c.pk for c in thread.cells[:6])
    assert {lab.weight for lab in labels} == {1 / 6}
    assert {lab.failure_mode for lab in labels} == {"thermal_event"}
    assert fr.history.get().history_change_reason == "recorded (pack-level, 6 cell(s) labelled)"


def test_vin_alone_finds_the_pack(thread, quality):
    fr = services.field_return_record(
        returned_on=date(2026, 11, 3),
        failure_mode=FailureMode.SWELLING,
        vin=VINS[2].lower(),
        actor=quality,
    )

    assert (fr.vin, fr.pack, fr.level) == (VINS[2], thread["PK2611000003"], ReturnLevel.PACK)
    assert sorted(fr.labels.values_list("unit_id", flat=True)) == sorted(
        c.pk for c in thread.cells[12:15]
    )
    assert set(fr.labels.values_list("weight", flat=True)) == {1 / 3}


def test_cell_return_labels_the_cell_with_weight_one(thread, quality):
    first = services.field_return_record(
        returned_on=date(2026, 10, 30),
        failure_mode=FailureMode.CAPACITY_FADE,
        pack_serial="PK2611000002",
        actor=quality,
    )
    fr = services.field_return_record(
        returned_on=date(2026, 11, 4),
        failure_mode=FailureMode.VENTING,
        cell_serial=thread.cell(8).serial,
        pack_serial="PK2611000002",
        actor=quality,
    )

    assert first.number == "FR-2026-00001"
    assert fr.number == "FR-2026-00002"
    assert (fr.level, fr.cell, fr.pack) == (ReturnLevel.CELL, thread.cell(8), first.pack)
    assert list(fr.labels.values_list("unit_id", "weight")) == [(thread.cell(8).pk, 1.0)]
    # Without the pack, the genealogy gives it.
    found = services.field_return_record(
        returned_on=date(2026, 11, 5),
        failure_mode=FailureMode.SWELLING,
        cell_serial=thread.cell(9).serial,
        actor=quality,
    )
    assert (found.level, found.cell, found.pack) == (ReturnLevel.CELL, thread.cell(9), first.pack)


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"cell_serial": "P126119999999"}, NotFound, "cell_serial"),
        ({"pack_serial": "PK2611000001", "cell_serial": "P126110000016"}, Refused, "cell_serial"),
        ({"vin": "WVGZZZ"}, InvalidInput, "vin"),
        ({}, InvalidInput, "vin"),
        ({"pack_serial": "PK2611000001", "failure_mode": "exploded"}, InvalidInput, "failure_mode"),
        (
            {
                "pack_serial": "PK2611000001",
                "returned_on": timezone.localdate() + timedelta(days=2),
            },
            InvalidInput,
            "returned_on",
        ),
    ],
)
def test_bad_returns_are_refused_and_write_nothing(thread, quality, kwargs, error, field):
    args = {"returned_on": date(2026, 11, 2), "failure_mode": FailureMode.OTHER, **kwargs}

    with pytest.raises(error) as exc:
        services.field_return_record(actor=quality, **args)

    assert exc.value.field == field
    assert FieldReturn.objects.count() == 0
    assert FieldReturnLabel.objects.count() == 0


# --- retraining -------------------------------------------------------------------------------


def test_retraining_with_too_few_labels_says_so_and_keeps_the_active_model(
    thread, risk_model, quality
):
    features_write(thread.cells, outlier_index=OUTLIER)
    services.cells_score(cell_ids=[c.pk for c in thread.cells])
    services.field_return_record(
        returned_on=date(2026, 11, 2),
        failure_mode=FailureMode.VENTING,
        cell_serial=thread.cells[OUTLIER].serial,
        actor=quality,
    )

    run = services.retrain(actor=quality)

    assert run.status == "too_few_labels"
    assert run.challenger is None
    assert run.active_model == risk_model
    assert run.finished_at is not None
    assert {k: v for k, v in run.label_counts.items() if k not in ("as_of",)} == {
        "scored_cells": 16,
        "mature_cells": 0,
        "cell_level_returns": 1,
        "pack_level_returns": 0,
        "positive_weight": 0.0,
        "horizon_days": 365.0,
    }
    assert run.detail.startswith("0 cells old enough to be labelled (of 16 scored)")
    assert run.drift_psi == {}
    assert list(RiskModel.objects.values_list("version", "state")) == [("1.1.0", "active")]


def _history(risk_model, plant, *, n: int, seed: int):
    """``n`` cells built over two years and scored, a latent micro-short in 4 % of them
    (K-value far above its lot, OCV below); those come back from the field 100 days after
    build, as do a few good cells (no-fault-found returns)."""
    from genealogy.choices import UnitKind
    from genealogy.models import Unit
    from risk.features import FEATURE_INDEX, FEATURES

    rng = np.random.default_rng(seed)
    start = timezone.now() - timedelta(days=3 * 365)
    units = Unit.objects.bulk_create(
        Unit(
            kind=UnitKind.CELL,
            serial=f"P1240{i:07d}",
            line=plant.line,
            produced_at=start + timedelta(hours=13 * i),
        )
        for i in range(n)
    )
    x = np.zeros((n, len(FEATURES)))
    for j, f in enumerate(FEATURES):
        if f.kind == "relative":
            x[:, j] = rng.standard_normal(n)
        elif f.kind == "gauge":
            x[:, j] = 0.3 * rng.standard_normal(n)
    x[:, FEATURE_INDEX["vision_defects_on_segments_missing"]] = 1.0
    bad = rng.random(n) < 0.04
    x[bad, FEATURE_INDEX["k_value_z"]] += 6.0
    x[bad, FEATURE_INDEX["ocv_end_z"]] -= 4.0
    nff = ~bad & (rng.random(n) < 0.005)
    now = timezone.now()
    RiskScore.objects.bulk_create(
        RiskScore(
            unit=u,
            model=risk_model,
            model_version=risk_model.version,
            risk=0.001,
            supervised_p=0.001,
            outlier_score=0.0,
            baseline_score=0.0,
            features=dict(zip(FEATURE_NAMES, map(float, x[i]), strict=True)),
            product="default",
            threshold=0.004,
            threshold_mode="top_fraction",
            scored_at=now,
        )
        for i, u in enumerate(units)
    )
    actor = UserFactory(username="qe-returns", role="quality_engineer")
    for i in np.flatnonzero(bad | nff).tolist():
        services.field_return_record(
            returned_on=(units[i].produced_at + timedelta(days=100)).date(),
            failure_mode=FailureMode.THERMAL_EVENT if bad[i] else FailureMode.OTHER,
            cell_serial=units[i].serial,
            actor=actor,
        )
    return units, x, bad, nff


def test_retraining_registers_a_challenger_and_stores_the_comparison(plant, risk_model, quality):
    from risk import evaluation

    units, x, bad, nff = _history(risk_model, plant, n=1200, seed=7)
    returned = bad | nff

    run = services.retrain(actor=quality)

    assert run.status == "done", run.detail
    challenger = run.challenger
    assert (challenger.version, challenger.state) == ("1.2.0", ModelState.VALIDATED)
    assert challenger.registered_by == quality
    assert run.active_model == risk_model
    risk_model.refresh_from_db()
    assert risk_model.state == ModelState.ACTIVE  # promotion is a person's decision
    assert run.label_counts["scored_cells"] == 1200
    assert run.label_counts["mature_cells"] == 1200
    assert run.label_counts["cell_level_returns"] == int(returned.sum())
    assert set(run.drift_psi) == set(FEATURE_NAMES)
    # the stored comparison is what the registered files give on the newest 12.5 %
    built = np.array([u.produced_at.timestamp() for u in units])
    hold = evaluation.time_split(built, fractions=services.SLICES)[2]
    served = services.model_loaded(challenger)
    modes = np.where(bad, "thermal_event", np.where(nff, "other", "none")).astype(object)
    expected = evaluation.compare(
        {
            "challenger": served.score(x[hold])[0],
            "baseline": baseline_score(x[hold]),
            "active": services.model_loaded(risk_model).score(x[hold])[0],
        },
        returned[hold],
        latent_class=modes[hold],
    )
    assert run.comparison == json.loads(json.dumps(expected))
    assert set(run.comparison) == {"challenger", "baseline", "active"}
    assert set(run.comparison["challenger"]["per_class"]) == {"none", "other", "thermal_event"}
    assert challenger.metrics["holdout_field_returns"]["scores"] == run.comparison


# --- commands ---------------------------------------------------------------------------------


def test_commands_register_activate_score_and_retrain(thread, quality):
    from io import StringIO

    from django.core.management import call_command

    features_write(thread.cells, outlier_index=OUTLIER)
    out = StringIO()

    call_command("risk_model_register", "--approve-as", quality.username, "--activate", stdout=out)
    call_command("risk_score", stdout=out)
    call_command("risk_score", stdout=out)  # nothing new to score
    call_command("risk_retrain", "--as", quality.username, stdout=out)

    lines = out.getvalue().splitlines()
    model = RiskModel.objects.get()
    assert model.state == ModelState.ACTIVE
    assert lines[:3] == [
        f"Registered thermal-risk 1.1.0 (sha256 {model.sha256[:12]}…).",
        f"Approved thermal-risk 1.1.0 as {quality.username}.",
        "Activated thermal-risk 1.1.0.",
    ]
    held = RiskScore.objects.filter(quarantined=True).count()
    assert lines[3] == f"Scored 16 cell(s); {held} above the quarantine threshold."
    assert lines[4] == "Scored 0 cell(s); 0 above the quarantine threshold."
    assert json.loads("\n".join(lines[5:]))["status"] == "too_few_labels"
    assert RiskScore.objects.count() == 16


def test_register_command_refuses_a_tampered_file(quality, tmp_path):
    from django.core.management import CommandError, call_command

    manifest, onnx = _copy_model(tmp_path, version="1.0.1")
    _tamper(onnx)

    with pytest.raises(CommandError, match="Refused: Model refused: checksum_mismatch"):
        call_command("risk_model_register", "--manifest", str(manifest), "--onnx", str(onnx))
    assert RiskModel.objects.count() == 0
