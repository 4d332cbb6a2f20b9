"""What the database itself guarantees for SPC records, and who may do what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from spc.models import ChartConfig, ControlLimits, SpcAlarm
from spc.services import chart_config_get_or_create, limits_propose, spc_evaluate
from tests.spc.conftest import SIGMA_FILL_G, normal

pytestmark = pytest.mark.django_db


def _refused_by_db(make) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        make()


def test_one_approved_version_per_characteristic(approved_fill, qe):
    fields = {
        f: getattr(approved_fill, f)
        for f in (
            "characteristic_id",
            "chart_type",
            "engine_limits",
            "centre",
            "sigma",
            "lcl",
            "ucl",
            "baseline_from",
            "baseline_to",
            "baseline_values",
            "values_used",
            "proposed_at",
            "approved_at",
            "monitor_from",
        )
    }
    _refused_by_db(
        lambda: ControlLimits.objects.create(
            **fields, version=2, status="approved", proposed_by=qe, approved_by=qe
        )
    )
    _refused_by_db(  # the same version twice
        lambda: ControlLimits.objects.create(**fields, version=1, status="draft", proposed_by=qe)
    )
    _refused_by_db(  # approved without an approver
        lambda: ControlLimits.objects.create(
            **{**fields, "approved_at": None}, version=3, status="superseded", proposed_by=qe
        )
    )
    assert ControlLimits.objects.count() == 1


def test_chart_configuration_constraints(fill):
    config = chart_config_get_or_create(characteristic=fill)
    for changes in (
        {"subgroup_size": 5},  # I-MR with subgroups
        {"chart_type": "xbar_r", "subgroup_mode": "per_unit", "subgroup_size": 2},
        {"chart_type": "xbar_s", "subgroup_mode": "time_window", "subgroup_size": 2},
        {"cusum_head_start_sigma": 4.0},
        {"ewma_lambda": 0.0},
    ):
        _refused_by_db(
            lambda changes=changes: ChartConfig.objects.filter(pk=config.pk).update(**changes)
        )
    _refused_by_db(
        lambda: ChartConfig.objects.create(characteristic=fill)
    )  # one per characteristic


def test_one_alarm_per_signal(approved_fill, fill, record, phase2_start):
    values = [5.0] * 12
    values[5] = 5.0 + 3.6 * SIGMA_FILL_G
    record(fill, values, start=phase2_start)
    spc_evaluate(characteristic_id=fill.pk)
    alarm = SpcAlarm.objects.get(rule="nelson_1", statistic="x")
    copy = {
        f.attname: getattr(alarm, f.attname)
        for f in SpcAlarm._meta.concrete_fields
        if f.attname != "id"
    }
    _refused_by_db(lambda: SpcAlarm.objects.create(**copy))
    _refused_by_db(  # acknowledged by nobody
        lambda: SpcAlarm.objects.filter(pk=alarm.pk).update(
            status="acknowledged", acknowledged_at=timezone.now()
        )
    )


def test_the_roles_and_their_spc_permissions(db):
    def perms(role: str) -> set[str]:
        return set(
            Group.objects.get(name=role)
            .permissions.filter(content_type__app_label="spc")
            .exclude(codename__startswith="view_")
            .values_list("codename", flat=True)
        )

    assert perms("quality_engineer") == {
        "change_chartconfig",
        "add_controllimits",
        "approve_controllimits",
        "change_spcalarm",
    }
    assert perms("mrb_member") == {"change_spcalarm"}
    assert perms("operator") == set()
    assert perms("auditor") == set()
    views = {
        "view_chartconfig",
        "view_controllimits",
        "view_chartcheckpoint",
        "view_spcalarm",
    }
    for role in ("operator", "auditor", "mrb_member", "quality_engineer"):
        assert views <= set(
            Group.objects.get(name=role)
            .permissions.filter(content_type__app_label="spc")
            .values_list("codename", flat=True)
        )


def test_a_draft_may_be_replaced_but_stays_one_per_characteristic(fill, qe, record, t0):
    record(fill, normal(1, 40, 5.0, SIGMA_FILL_G), start=t0, step_s=60)
    end = t0 + timedelta(minutes=40)
    first = limits_propose(characteristic=fill, baseline_from=t0, baseline_to=end, actor=qe)
    second = limits_propose(
        characteristic=fill, baseline_from=t0 + timedelta(minutes=5), baseline_to=end, actor=qe
    )
    assert (first.pk, first.version) == (second.pk, second.version)
    assert ControlLimits.objects.count() == 1
    assert second.baseline_values == 35
