"""The staff surface of SPC (Django admin): pages render; the configuration form goes through
the service; limits are decided and alarms acknowledged with list actions; approved limits and
alarms are read-only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from spc.models import ChartConfig, SpcAlarm
from spc.services import chart_config_get_or_create, limits_propose, spc_evaluate
from tests.factories import UserFactory
from tests.spc.conftest import SIGMA_FILL_G, normal

pytestmark = pytest.mark.django_db


def staff(role: str | None, *, superuser: bool = False) -> Client:
    user = UserFactory(
        username=f"{role or 'admin'}-staff", role=role, is_staff=True, is_superuser=superuser
    )
    client = Client()
    client.force_login(user)
    client.user = user
    return client


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


@pytest.fixture
def alarm(approved_fill, fill, record, phase2_start) -> SpcAlarm:
    values = [5.0, 5.003, 4.997, 5.0 + 3.6 * SIGMA_FILL_G, 5.001]
    record(fill, values, start=phase2_start)
    spc_evaluate(characteristic_id=fill.pk)
    return SpcAlarm.objects.get(rule="nelson_1", statistic="x")


def test_every_spc_page_renders(alarm, approved_fill):
    client = staff(None, superuser=True)
    models = [m for m in admin.site._registry if m._meta.app_label == "spc"]
    assert {m.__name__ for m in models} == {
        "ChartConfig",
        "ControlLimits",
        "ChartCheckpoint",
        "SpcAlarm",
    }
    for model in models:
        opts = model._meta
        text(client.get(reverse(f"admin:spc_{opts.model_name}_changelist")))
        obj = model.objects.first()
        text(client.get(reverse(f"admin:spc_{opts.model_name}_change", args=[obj.pk])))
        if hasattr(model, "history"):
            text(client.get(reverse(f"admin:spc_{opts.model_name}_history", args=[obj.pk])))
    filtered = client.get(
        reverse("admin:spc_spcalarm_changelist"),
        {"status__exact": "open", "severity__exact": "critical"},
    )
    assert f"/admin/spc/spcalarm/{alarm.pk}/change/" in text(filtered)


def _config_form(config: ChartConfig, **changes) -> dict:
    data = {
        "chart_type": config.chart_type,
        "subgroup_mode": config.subgroup_mode,
        "subgroup_size": config.subgroup_size,
        "subgroup_window_s": "",
        "rule_preset": config.rule_preset,
        "rules": "[1, 2, 3, 4, 5, 6, 7, 8]",
        "cusum_k_sigma": config.cusum_k_sigma,
        "cusum_h_sigma": config.cusum_h_sigma,
        "cusum_head_start_sigma": config.cusum_head_start_sigma,
        "ewma_lambda": config.ewma_lambda,
        "ewma_l": config.ewma_l,
        "cusum_enabled": "on",
        "enabled": "on",
        "change_reason": "",
    }
    data.update(changes)
    return data


def test_the_configuration_form_goes_through_the_service(fill):
    qe = staff("quality_engineer")
    config = chart_config_get_or_create(characteristic=fill)
    url = reverse("admin:spc_chartconfig_change", args=[config.pk])

    refused = qe.post(url, _config_form(config, rule_preset="custom", rules="[1, 9]"))
    assert "unknown run rule 9" in text(refused)
    config.refresh_from_db()
    assert config.rules == [1, 2, 3, 4, 5, 6, 7, 8]

    saved = qe.post(
        url,
        _config_form(config, rule_preset="western_electric", change_reason="WE set per CP rev C"),
    )
    assert saved.status_code == 302
    config.refresh_from_db()
    assert (config.rule_preset, config.rules) == ("western_electric", [1, 2, 5, 6])
    latest = config.history.order_by("-history_id").first()
    assert (latest.history_user, latest.history_change_reason) == (qe.user, "WE set per CP rev C")


def test_limits_are_approved_with_the_action_and_its_reason(fill, qe, record, t0):
    record(fill, normal(11, 60, 5.0, SIGMA_FILL_G), start=t0, step_s=60)
    draft = limits_propose(
        characteristic=fill, baseline_from=t0, baseline_to=t0 + timedelta(hours=1), actor=qe
    )
    client = staff("quality_engineer")
    changelist = reverse("admin:spc_controllimits_changelist")

    empty = client.post(
        changelist, {"action": "approve", "_selected_action": [draft.pk], "reason": ""}, follow=True
    )
    assert "not approved: A decision on control limits needs a reason." in text(empty)
    draft.refresh_from_db()
    assert draft.status == "draft"

    done = client.post(
        changelist,
        {"action": "approve", "_selected_action": [draft.pk], "reason": "week 48 baseline"},
        follow=True,
    )
    assert "approved." in text(done)
    draft.refresh_from_db()
    assert (draft.status, draft.approved_by, draft.reason) == (
        "approved",
        client.user,
        "week 48 baseline",
    )
    page = text(client.get(reverse("admin:spc_controllimits_change", args=[draft.pk])))
    assert 'name="ucl"' not in page  # read-only


def test_operators_see_limits_but_cannot_decide(fill, qe, record, t0):
    record(fill, normal(11, 30, 5.0, SIGMA_FILL_G), start=t0, step_s=60)
    draft = limits_propose(
        characteristic=fill, baseline_from=t0, baseline_to=t0 + timedelta(hours=1), actor=qe
    )
    operator = staff("operator")
    changelist = text(operator.get(reverse("admin:spc_controllimits_changelist")))
    assert 'value="approve"' not in changelist
    operator.post(
        reverse("admin:spc_controllimits_changelist"),
        {"action": "approve", "_selected_action": [draft.pk], "reason": "ok"},
    )
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_alarms_are_acknowledged_with_the_action_and_the_cause(alarm):
    mrb = staff("mrb_member")
    changelist = reverse("admin:spc_spcalarm_changelist")
    done = mrb.post(
        changelist,
        {"action": "acknowledge", "_selected_action": [alarm.pk], "cause": "tare drift on CW-1"},
        follow=True,
    )
    assert "1 alarm(s) acknowledged." in text(done)
    alarm.refresh_from_db()
    assert (alarm.status, alarm.acknowledged_by, alarm.cause) == (
        "acknowledged",
        mrb.user,
        "tare drift on CW-1",
    )
    latest = alarm.history.order_by("-history_id").first()
    assert (latest.history_user, latest.history_change_reason) == (
        mrb.user,
        "acknowledged: tare drift on CW-1",
    )
