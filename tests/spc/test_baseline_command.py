"""spc_baseline: limits for every characteristic with enough values, at commissioning."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from spc.models import ControlLimits
from tests.spc.conftest import SIGMA_FILL_G, normal

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]


def test_limits_are_proposed_and_approved_where_there_are_enough_values(line, fill, qe, record, t0):
    record(fill, normal(5, 40, 5.0, SIGMA_FILL_G), start=t0, step_s=60)
    out = StringIO()
    call_command(
        "spc_baseline", approve_as=qe.username, reason="Commissioning baseline", stdout=out
    )
    limits = ControlLimits.objects.get(characteristic=fill)
    assert (limits.status, limits.approved_by, limits.reason) == (
        "approved",
        qe,
        "Commissioning baseline",
    )
    assert "Limits approved for 1, drafted for 0" in out.getvalue()
    # Run again: limits in force are left alone.
    call_command("spc_baseline", approve_as=qe.username, reason="again", stdout=StringIO())
    assert ControlLimits.objects.filter(characteristic=fill).count() == 1


def test_too_few_values_are_reported_and_drafts_need_no_approver(line, fill, qe, record, t0):
    record(fill, normal(6, 5, 5.0, SIGMA_FILL_G), start=t0 + timedelta(hours=1))
    out = StringIO()
    call_command("spc_baseline", proposer=qe.username, stdout=out)
    assert "Insufficient data for control limits" in out.getvalue()
    assert not ControlLimits.objects.exists()


def test_approving_needs_a_reason_and_a_known_user(line, qe):
    with pytest.raises(CommandError, match="--reason is required"):
        call_command("spc_baseline", approve_as=qe.username)
    with pytest.raises(CommandError, match="No user 'nobody'"):
        call_command("spc_baseline", approve_as="nobody", reason="x")
