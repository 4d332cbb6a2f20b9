"""Phase I in the product: propose limits from a baseline with confirmed exclusions, approve
them (frozen, versioned, who/when/why), and every refusal on the way."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from qms.exceptions import InvalidInput, Refused
from spc.choices import LimitsStatus
from spc.engine import phase1_individuals
from spc.models import ChartCheckpoint, ControlLimits
from spc.services import NotPermitted, limits_approve, limits_propose, limits_reject
from tests.factories import UserFactory
from tests.spc.conftest import SIGMA_FILL_G, normal

pytestmark = pytest.mark.django_db


def _history(limits: ControlLimits) -> list[tuple[str, str, str]]:
    return [
        (h.status, h.history_user.username if h.history_user else None, h.history_change_reason)
        for h in limits.history.order_by("history_date", "history_id")
    ]


@pytest.fixture
def baseline(fill, record, t0):
    """125 fill masses, one a minute (seed 11), two of them from a mis-tared check-weigher."""
    values = normal(11, 125, 5.0, SIGMA_FILL_G)
    values[37] = 5.0 + 6 * SIGMA_FILL_G
    values[88] = 5.0 - 5 * SIGMA_FILL_G
    rows = record(fill, values, start=t0, step_s=60)
    return rows, values, t0, t0 + timedelta(minutes=125)


def test_phase_one_iterates_with_confirmed_exclusions_then_approval_freezes_the_version(
    fill, qe, baseline
):
    """Given a baseline with two special causes, when the engineer proposes, the draft
    proposes exactly those two values for exclusion; excluding them with their cause gives
    a converged draft (same version, replaced) whose limits equal the engine's on the rest;
    approving it with a reason puts version 1 in force, with the whole story in history."""
    rows, values, start, end = baseline

    first = limits_propose(characteristic=fill, baseline_from=start, baseline_to=end, actor=qe)

    assert (first.version, first.status, first.chart_type) == (1, "draft", "i_mr")
    assert [p["measurement_ids"] for p in first.proposed_exclusions] == [
        [rows[37].pk],
        [rows[88].pk],
    ]
    assert first.proposed_exclusions[0]["signals"][0]["rule"] == "nelson_1"
    assert (first.baseline_values, first.values_used, first.excluded) == (125, 125, [])

    excluded = [
        {"measurement_id": rows[37].pk, "reason": "check-weigher CW-1 mis-tared after cleaning"},
        {"measurement_id": rows[88].pk, "reason": "same tare fault, confirmed by re-weigh"},
    ]
    second = limits_propose(
        characteristic=fill,
        baseline_from=start,
        baseline_to=end,
        actor=qe,
        excluded=excluded,
        note="Week 48 baseline",
    )

    engine = phase1_individuals(values, excluded=[37, 88], min_baseline=20).limits
    assert second.pk == first.pk and second.version == 1
    assert second.proposed_exclusions == []
    assert (second.values_used, second.centre, second.sigma) == (123, engine.centre, engine.sigma)
    assert (second.lcl, second.ucl) == (engine.statistics[0].lcl, engine.statistics[0].ucl)
    assert second.engine_limits == engine.to_dict()
    assert second.excluded == sorted(excluded, key=lambda e: e["measurement_id"])
    assert second.warnings == []

    approved = limits_approve(
        limits=second, actor=qe, reason="Baseline reviewed with MRB; two tare faults excluded"
    )

    assert approved.status == LimitsStatus.APPROVED
    assert approved.approved_by == qe
    assert approved.reason == "Baseline reviewed with MRB; two tare faults excluded"
    assert approved.monitor_from == approved.approved_at
    assert _history(approved) == [
        ("draft", "qe-anna", "proposed from 125 values, 0 excluded, 2 more proposed"),
        ("draft", "qe-anna", "proposed from 123 values, 2 excluded, 0 more proposed"),
        ("approved", "qe-anna", "approved: Baseline reviewed with MRB; two tare faults excluded"),
    ]


def test_approving_the_next_version_supersedes_the_one_in_force(fill, qe, baseline):
    _, _, start, end = baseline
    v1 = limits_propose(characteristic=fill, baseline_from=start, baseline_to=end, actor=qe)
    limits_approve(limits=v1, actor=qe, reason="initial limits")
    v2 = limits_propose(
        characteristic=fill, baseline_from=start + timedelta(minutes=30), baseline_to=end, actor=qe
    )
    assert v2.version == 2

    limits_approve(limits=v2, actor=qe, reason="re-baselined after nozzle change")

    v1.refresh_from_db()
    assert [(v.version, v.status) for v in ControlLimits.objects.filter(characteristic=fill)] == [
        (2, "approved"),
        (1, "superseded"),
    ]
    assert _history(v1)[-1] == ("superseded", "qe-anna", "superseded by v2")


@pytest.mark.parametrize("role", ["operator", "mrb_member", "auditor"])
def test_approval_needs_the_permission(fill, qe, baseline, role):
    _, _, start, end = baseline
    draft = limits_propose(characteristic=fill, baseline_from=start, baseline_to=end, actor=qe)
    someone = UserFactory(username=f"{role}-1", role=role)

    with pytest.raises(NotPermitted) as refused:
        limits_approve(limits=draft, actor=someone, reason="looks fine to me")

    assert (refused.value.field, refused.value.code, refused.value.http_status) == (
        "actor",
        "not_permitted",
        403,
    )
    draft.refresh_from_db()
    assert (draft.status, draft.approved_by, draft.approved_at) == ("draft", None, None)
    assert draft.history.count() == 1


@pytest.mark.parametrize("reason", ["", "   "])
def test_approval_needs_a_reason(fill, qe, baseline, reason):
    _, _, start, end = baseline
    draft = limits_propose(characteristic=fill, baseline_from=start, baseline_to=end, actor=qe)

    with pytest.raises(InvalidInput) as refused:
        limits_approve(limits=draft, actor=qe, reason=reason)

    assert refused.value.field == "reason"
    draft.refresh_from_db()
    assert draft.status == "draft"
    assert draft.history.count() == 1


def test_approved_limits_are_frozen(fill, qe, baseline):
    """Any other change of approved limits than superseding them is refused: the model
    refuses the save, the delete and a second decision; the row stays as approved."""
    _, _, start, end = baseline
    draft = limits_propose(characteristic=fill, baseline_from=start, baseline_to=end, actor=qe)
    approved = limits_approve(limits=draft, actor=qe, reason="initial limits")
    stored = ControlLimits.objects.filter(pk=approved.pk).values().get()

    approved.ucl = 5.2
    with pytest.raises(Refused) as refused:
        approved.save()
    assert (refused.value.field, refused.value.code) == ("ucl", "limits_frozen")

    fresh = ControlLimits.objects.get(pk=approved.pk)
    fresh.status = LimitsStatus.DRAFT
    with pytest.raises(Refused) as refused:
        fresh.save()
    assert refused.value.field == "status"

    with pytest.raises(Refused):
        ControlLimits.objects.get(pk=approved.pk).delete()

    with pytest.raises(Refused) as refused:
        limits_approve(limits=fresh, actor=qe, reason="again")
    assert refused.value.code == "not_draft"
    with pytest.raises(Refused) as refused:
        limits_reject(limits=fresh, actor=qe, reason="changed my mind")
    assert refused.value.code == "not_draft"

    assert ControlLimits.objects.filter(pk=approved.pk).values().get() == stored


def test_reject_keeps_the_draft_on_record_and_the_next_proposal_is_a_new_version(
    fill, qe, baseline
):
    _, _, start, end = baseline
    draft = limits_propose(characteristic=fill, baseline_from=start, baseline_to=end, actor=qe)
    limits_reject(limits=draft, actor=qe, reason="baseline spans the nozzle change")
    nxt = limits_propose(
        characteristic=fill, baseline_from=start + timedelta(minutes=60), baseline_to=end, actor=qe
    )
    draft.refresh_from_db()
    assert (draft.status, draft.reason) == ("rejected", "baseline spans the nozzle change")
    assert (nxt.version, nxt.status) == (2, "draft")


def test_too_few_values_is_an_explicit_refusal_naming_the_minimum(fill, qe, record, t0):
    record(fill, normal(5, 12, 5.0, SIGMA_FILL_G), start=t0, step_s=60)

    with pytest.raises(Refused) as refused:
        limits_propose(
            characteristic=fill, baseline_from=t0, baseline_to=t0 + timedelta(hours=1), actor=qe
        )

    assert (refused.value.code, refused.value.field) == ("insufficient_data", "baseline")
    assert "at least 20 included values" in refused.value.message
    assert "holds 12 values" in refused.value.message
    assert not ControlLimits.objects.exists()


def test_an_empty_baseline_is_insufficient_data_not_an_error(fill, qe, t0):
    with pytest.raises(Refused) as refused:
        limits_propose(
            characteristic=fill, baseline_from=t0, baseline_to=t0 + timedelta(hours=1), actor=qe
        )
    assert refused.value.code == "insufficient_data"
    assert "have 0 values" in refused.value.message
    assert not ControlLimits.objects.exists()


def test_constant_data_gives_degenerate_limits_that_cannot_be_approved(fill, qe, record, t0):
    """A gauge that reads 5.00 g every time: sigma = 0, limits on the centre line with the
    engine's note; the draft is kept, approving it is refused."""
    record(fill, [5.0] * 30, start=t0, step_s=60)
    end = t0 + timedelta(minutes=30)

    draft = limits_propose(characteristic=fill, baseline_from=t0, baseline_to=end, actor=qe)

    assert (draft.sigma, draft.centre, draft.lcl, draft.ucl, draft.degenerate) == (
        0.0,
        5.0,
        5.0,
        5.0,
        True,
    )
    assert any("no variation in the baseline" in w for w in draft.warnings)
    with pytest.raises(Refused) as refused:
        limits_approve(limits=draft, actor=qe, reason="gauge is fine")
    assert (refused.value.field, refused.value.code) == ("sigma", "no_variation")
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_exclusions_must_name_a_baseline_value_and_a_cause(fill, qe, baseline, record):
    rows, _, start, end = baseline
    (later,) = record(fill, [5.01], start=end + timedelta(hours=1))

    with pytest.raises(InvalidInput) as refused:
        limits_propose(
            characteristic=fill,
            baseline_from=start,
            baseline_to=end,
            actor=qe,
            excluded=[{"measurement_id": later.pk, "reason": "outlier"}],
        )
    assert refused.value.field == "excluded[0].measurement_id"

    with pytest.raises(InvalidInput) as refused:
        limits_propose(
            characteristic=fill,
            baseline_from=start,
            baseline_to=end,
            actor=qe,
            excluded=[{"measurement_id": rows[3].pk, "reason": "tare"}, (rows[4].pk, " ")],
        )
    assert refused.value.field == "excluded[1].reason"
    assert not ControlLimits.objects.exists()


def test_the_baseline_window_is_checked(fill, qe, baseline):
    _, _, start, end = baseline
    with pytest.raises(InvalidInput) as refused:
        limits_propose(characteristic=fill, baseline_from=end, baseline_to=start, actor=qe)
    assert refused.value.field == "baseline_to"
    with pytest.raises(InvalidInput) as refused:
        limits_propose(
            characteristic=fill,
            baseline_from=start.replace(tzinfo=None),
            baseline_to=end,
            actor=qe,
        )
    assert refused.value.field == "baseline_from"
    assert not ControlLimits.objects.exists()


def test_monitoring_cannot_start_inside_the_baseline(fill, qe, baseline):
    _, _, start, end = baseline
    draft = limits_propose(characteristic=fill, baseline_from=start, baseline_to=end, actor=qe)
    with pytest.raises(InvalidInput) as refused:
        limits_approve(limits=draft, actor=qe, reason="ok", monitor_from=end - timedelta(minutes=1))
    assert refused.value.field == "monitor_from"
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_approval_drops_the_old_checkpoints(approved_fill, qe, record, phase2_start, fill):
    from spc.services import spc_evaluate

    record(fill, normal(7, 250, 5.0, SIGMA_FILL_G), start=phase2_start)
    spc_evaluate(characteristic_id=fill.pk)
    assert ChartCheckpoint.objects.filter(limits=approved_fill).count() == 2
    draft = limits_propose(
        characteristic=fill,
        baseline_from=phase2_start,
        baseline_to=phase2_start + timedelta(minutes=30),
        actor=qe,
    )
    limits_approve(limits=draft, actor=qe, reason="new nozzle", monitor_from=timezone.now())
    assert not ChartCheckpoint.objects.exists()


def test_subgroup_limits_per_coil(line, qe, record, t0):
    """Cathode areal weight on X-bar-S, one subgroup per coil (20 profile values each): the
    limits come from 12 coils, with n = 20 and the coils counted as subgroups."""
    from spc.services import chart_config_get_or_create, chart_config_update

    areal = line.chars["areal_weight"]
    config = chart_config_get_or_create(characteristic=areal)
    chart_config_update(
        config=config, actor=qe, chart_type="xbar_s", subgroup_mode="per_unit", rules=[1, 2]
    )
    coils = record.coils(1, 12)
    values = np.random.default_rng(3).normal(23.0, 0.0866, 240)
    units = [coil for coil in coils for _ in range(20)]
    record(areal, values, start=t0, step_s=3, units=units)

    draft = limits_propose(
        characteristic=areal, baseline_from=t0, baseline_to=t0 + timedelta(hours=1), actor=qe
    )

    assert (draft.chart_type, draft.subgroup_size, draft.subgroups_used, draft.values_used) == (
        "xbar_s",
        20,
        12,
        240,
    )
    assert [s["statistic"] for s in draft.engine_limits["statistics"]] == ["xbar", "s"]
    assert draft.centre == pytest.approx(float(values.mean()), abs=1e-12)
