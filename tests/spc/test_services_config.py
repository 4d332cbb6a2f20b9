"""Chart configuration: the default on first use, changes with history, and refusals that
name the field and write nothing."""

from __future__ import annotations

import math

import pytest

from qms.exceptions import InvalidInput
from spc.models import ChartCheckpoint, ChartConfig
from spc.services import chart_config_get_or_create, chart_config_update, spc_evaluate
from tests.spc.conftest import SIGMA_FILL_G, normal

pytestmark = pytest.mark.django_db


def _row(config: ChartConfig) -> dict:
    return ChartConfig.objects.filter(pk=config.pk).values().get()


def test_the_default_configuration_is_made_on_first_use(fill):
    config = chart_config_get_or_create(characteristic=fill)
    again = chart_config_get_or_create(characteristic=fill)

    assert again.pk == config.pk
    assert (
        config.chart_type,
        config.subgroup_mode,
        config.subgroup_size,
        config.rule_preset,
        config.rules,
        config.cusum_enabled,
        config.cusum_k_sigma,
        config.cusum_h_sigma,
        config.cusum_head_start_sigma,
        config.ewma_enabled,
        config.enabled,
    ) == (
        "i_mr",
        "consecutive",
        1,
        "nelson",
        [1, 2, 3, 4, 5, 6, 7, 8],
        True,
        0.75,
        3.34,
        0.0,
        False,
        True,
    )
    assert [h.history_change_reason for h in config.history.all()] == ["default configuration"]


def test_choosing_rules_makes_a_custom_set_with_history(fill, qe):
    config = chart_config_get_or_create(characteristic=fill)

    chart_config_update(
        config=config, actor=qe, reason="fewer false alarms on 100 % fill data", rules=[1, 5, 1]
    )

    config.refresh_from_db()
    assert (config.rule_preset, config.rules) == ("custom", [1, 5])
    latest = config.history.order_by("-history_id").first()
    assert (latest.history_user, latest.history_change_reason) == (
        qe,
        "fewer false alarms on 100 % fill data",
    )


def test_the_western_electric_preset(fill, qe):
    config = chart_config_get_or_create(characteristic=fill)
    chart_config_update(config=config, actor=qe, rule_preset="western_electric")
    config.refresh_from_db()
    assert (config.rule_preset, config.rules) == ("western_electric", [1, 2, 5, 6])
    from spc.queries import ruleset_for

    assert ruleset_for(config).same_side_run == 8


def test_an_unchanged_configuration_writes_no_history(fill, qe):
    config = chart_config_get_or_create(characteristic=fill)
    chart_config_update(
        config=config, actor=qe, rules=[1, 2, 3, 4, 5, 6, 7, 8], rule_preset="nelson"
    )
    assert config.history.count() == 1


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        (
            {"rules": [1, 2, 9]},
            "rules",
            "unknown run rule 9: the known rules are 1, 2, 3, 4, 5, 6, 7, 8",
        ),
        ({"rules": [1, "2"]}, "rules", "unknown run rule '2'"),
        ({"rules": "1,2"}, "rules", "a list of Nelson rule numbers"),
        (
            {"rule_preset": "nelson", "rules": [1, 2]},
            "rules",
            "The nelson preset is rules [1, 2, 3, 4, 5, 6, 7, 8]",
        ),
        ({"rule_preset": "aiag"}, "rule_preset", "Unknown rule preset 'aiag'"),
        ({"chart_type": "p"}, "chart_type", "attribute charts need counts"),
        ({"subgroup_size": 5}, "subgroup_size", "I-MR chart plots individual values"),
        ({"chart_type": "xbar_r", "subgroup_mode": "per_unit"}, "subgroup_mode", "use X-bar-S"),
        ({"chart_type": "xbar_r", "subgroup_size": 1}, "subgroup_size", "within 2..50"),
        ({"chart_type": "xbar_s", "subgroup_mode": "time_window"}, "subgroup_window_s", "width"),
        ({"cusum_h_sigma": 0.0}, "cusum_h_sigma", "h must be a finite number > 0"),
        ({"cusum_k_sigma": -0.5}, "cusum_k_sigma", "k must be a finite number >= 0"),
        ({"cusum_k_sigma": math.nan}, "cusum_k_sigma", "must be a finite number"),
        ({"cusum_head_start_sigma": 3.34}, "cusum_head_start_sigma", "within [0, h)"),
        ({"ewma_lambda": 1.5}, "ewma_lambda", "lam must be within (0, 1]"),
        ({"ewma_l": -1.0}, "ewma_l", "L must be a finite number > 0"),
        ({"enabled": "yes"}, "enabled", "true or false"),
        ({"colour": "red"}, "colour", "Unknown configuration field"),
    ],
)
def test_refusals_name_the_field_and_write_nothing(fill, qe, changes, field, text):
    config = chart_config_get_or_create(characteristic=fill)
    before = _row(config)

    with pytest.raises(InvalidInput) as refused:
        chart_config_update(config=config, actor=qe, **changes)

    assert refused.value.field == field
    assert text in refused.value.message
    assert _row(config) == before
    assert config.history.count() == 1


def test_switching_charts_normalises_the_subgrouping(fill, qe):
    config = chart_config_get_or_create(characteristic=fill)
    chart_config_update(config=config, actor=qe, chart_type="xbar_r", subgroup_size=5)
    chart_config_update(config=config, actor=qe, chart_type="i_mr")
    config.refresh_from_db()
    assert (config.chart_type, config.subgroup_mode, config.subgroup_size) == (
        "i_mr",
        "consecutive",
        1,
    )


def test_a_change_restarts_the_evaluation_from_the_limits(
    approved_fill, fill, qe, record, phase2_start
):
    """Changing the rules drops the checkpoints; the next evaluation replays the stream from
    the approval with the new rules (alarms raised before stay)."""
    record(fill, normal(9, 250, 5.0, SIGMA_FILL_G), start=phase2_start)
    spc_evaluate(characteristic_id=fill.pk)
    assert ChartCheckpoint.objects.count() == 2

    chart_config_update(config=chart_config_get_or_create(characteristic=fill), actor=qe, rules=[1])

    assert not ChartCheckpoint.objects.exists()
    outcome = spc_evaluate(characteristic_id=fill.pk)
    assert (outcome.restart_position, outcome.values) == (0, 250)
