"""Models of the risk app: the database keeps its invariants (one active model per name,
risk within [0, 1], a return's level matching the unit it names, label weights), and the
admin enters field returns through the service and decides models with the list actions."""

from __future__ import annotations

from datetime import date

import pytest
from django.contrib.auth.models import Permission
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from risk import services
from risk.choices import FailureMode, ModelState, ReturnLevel
from risk.models import FieldReturn, FieldReturnLabel, RiskModel, RiskScore
from risk.scoring import default_model_paths
from tests.factories import UserFactory
from tests.genealogy.conftest import VINS
from tests.risk.conftest import features_write, grant_approval

pytestmark = pytest.mark.django_db


def _refused(fn) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


def test_one_active_model_per_name_in_the_database(risk_model):
    second = RiskModel.objects.get(pk=risk_model.pk)
    second.pk = None
    second.version = "1.0.1"

    _refused(second.save)

    assert RiskModel.objects.filter(state=ModelState.ACTIVE).count() == 1


def test_a_risk_outside_zero_to_one_is_refused(thread, risk_model):
    features_write(thread.cells)
    score = services.cells_score(cell_ids=[thread.cell(1).pk])[0]
    copy = RiskScore.objects.get(pk=score.pk)
    copy.pk = None
    copy.risk = 1.5

    _refused(copy.save)

    assert RiskScore.objects.count() == 1


def test_a_return_level_must_match_the_unit_it_names(thread, quality):
    def pack_level_naming_a_cell():
        FieldReturn.objects.create(
            number="FR-2026-09999",
            pack=thread["PK2611000001"],
            cell=thread.cell(1),
            level=ReturnLevel.PACK,
            returned_on=date(2026, 11, 2),
            failure_mode=FailureMode.OTHER,
            entered_by=quality,
            entered_at=timezone.now(),
        )

    def cell_level_without_a_cell():
        FieldReturn.objects.create(
            number="FR-2026-09998",
            pack=thread["PK2611000001"],
            level=ReturnLevel.CELL,
            returned_on=date(2026, 11, 2),
            failure_mode=FailureMode.OTHER,
            entered_by=quality,
            entered_at=timezone.now(),
        )

    _refused(pack_level_naming_a_cell)
    _refused(cell_level_without_a_cell)
    assert FieldReturn.objects.count() == 0


def test_label_weights_lie_in_zero_to_one_and_a_cell_is_labelled_once(thread, quality):
    fr = services.field_return_record(
        returned_on=date(2026, 11, 2),
        failure_mode=FailureMode.VENTING,
        cell_serial=thread.cell(2).serial,
        actor=quality,
    )
    now = timezone.now()

    _refused(
        lambda: FieldReturnLabel.objects.create(
            field_return=fr, unit=thread.cell(3), weight=0.0, failure_mode="venting", created_at=now
        )
    )
    _refused(
        lambda: FieldReturnLabel.objects.create(
            field_return=fr, unit=thread.cell(2), weight=1.0, failure_mode="venting", created_at=now
        )
    )
    assert list(fr.labels.values_list("unit_id", "weight")) == [(thread.cell(2).pk, 1.0)]


# --- admin ------------------------------------------------------------------------------------


@pytest.fixture
def desk(thread):
    user = UserFactory(username="qe-desk", role="quality_engineer", is_staff=True)
    grant_approval(user)
    for codename in (
        "add_fieldreturn",
        "change_fieldreturn",
        "view_fieldreturn",
        "view_riskmodel",
        "view_riskscore",
        "view_retrainrun",
    ):
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label="risk", codename=codename)
        )
    client = Client()
    client.force_login(user)
    client.user = user
    return client


def test_a_field_return_entered_in_the_admin_writes_its_labels(desk, thread):
    answer = desk.post(
        "/admin/risk/fieldreturn/add/",
        {
            "vin": VINS[0],
            "pack_serial": "",
            "cell_serial": "",
            "returned_on": "2026-11-02",
            "failure_mode": "resistance_rise",
            "analysis": "DCIR up 40 % after 18 months; teardown pending.",
            "labels-TOTAL_FORMS": "0",
            "labels-INITIAL_FORMS": "0",
        },
    )

    assert answer.status_code == 302, answer.content.decode()[:3000]
    fr = FieldReturn.objects.get()
    assert (fr.number, fr.level, fr.pack, fr.entered_by) == (
        "FR-2026-00001",
        ReturnLevel.PACK,
        thread["PK2611000001"],
        desk.user,
    )
    assert fr.labels.count() == 6


def test_a_refused_return_in_the_admin_shows_why_and_writes_nothing(desk, thread):
    answer = desk.post(
        "/admin/risk/fieldreturn/add/",
        {
            "vin": "",
            "pack_serial": "PK2611000001",
            "cell_serial": thread.cell(16).serial,
            "returned_on": "2026-11-02",
            "failure_mode": "swelling",
            "analysis": "",
            "labels-TOTAL_FORMS": "0",
            "labels-INITIAL_FORMS": "0",
        },
    )

    assert answer.status_code == 200
    assert f"Cell {thread.cell(16).serial} is not in pack PK2611000001." in answer.content.decode()
    assert FieldReturn.objects.count() == 0
    assert FieldReturnLabel.objects.count() == 0


def test_admin_actions_approve_and_activate_a_model(desk):
    manifest, onnx = default_model_paths()
    model = services.model_register(manifest_path=manifest, onnx_path=onnx, actor=desk.user)

    for action in ("approve", "activate"):
        answer = desk.post(
            "/admin/risk/riskmodel/",
            {"action": action, "_selected_action": [model.pk], "reason": "Commissioning"},
        )
        assert answer.status_code == 302

    model.refresh_from_db()
    assert model.state == ModelState.ACTIVE
    assert [h.history_change_reason for h in model.history.order_by("history_id")][-2:] == [
        "approved: Commissioning",
        "activated: Commissioning",
    ]


def test_admin_pages_render(desk, thread, risk_model):
    features_write(thread.cells)
    services.cells_score(cell_ids=[thread.cell(1).pk])
    for url in (
        "/admin/risk/riskmodel/",
        f"/admin/risk/riskmodel/{risk_model.pk}/change/",
        "/admin/risk/riskscore/",
        "/admin/risk/fieldreturn/",
        "/admin/risk/fieldreturn/add/",
        "/admin/risk/retrainrun/",
    ):
        assert desk.get(url).status_code == 200, url
