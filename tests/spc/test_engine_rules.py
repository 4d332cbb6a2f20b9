"""Nelson rules, the Western Electric preset and the two evaluators (loop and numpy)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spc.engine import NELSON, WESTERN_ELECTRIC, RuleSet, RunState, UnknownRuleError
from spc.engine.rules import evaluate_rules

PATHS = ("loop", "vector")


def fired(values, ruleset=NELSON, path="loop"):
    """(rule, index, direction, involved) of a series with centre 0, sigma 1, limits +-3."""
    x = np.asarray(values, dtype=np.float64)
    return [
        (s.rule, s.index, s.direction, s.involved)
        for s in evaluate_rules(x, x, -3.0, 3.0, ruleset=ruleset, path=path)
    ]


@pytest.mark.parametrize("path", PATHS)
def test_rule_1_beyond_the_limits_strictly(path):
    assert fired([0.0, 3.5, 0.0, -3.2, 3.0, -3.0], RuleSet({1}), path=path) == [
        ("nelson_1", 1, 1, (1,)),
        ("nelson_1", 3, -1, (3,)),
    ]


@pytest.mark.parametrize("path", PATHS)
def test_rule_2_nine_on_one_side_fires_while_the_run_lasts(path):
    assert fired([0.5] * 10, RuleSet({2}), path=path) == [
        ("nelson_2", 8, 1, tuple(range(9))),
        ("nelson_2", 9, 1, tuple(range(1, 10))),
    ]
    assert fired([-0.4] * 9, RuleSet({2}), path=path) == [("nelson_2", 8, -1, tuple(range(9)))]
    # A point on the centre line breaks the run.
    assert fired([0.5] * 8 + [0.0] + [0.5] * 8, RuleSet({2}), path=path) == []


@pytest.mark.parametrize("path", PATHS)
def test_rule_3_six_points_steadily_increasing_and_ties_break_it(path):
    assert fired([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], RuleSet({3}), path=path) == [
        ("nelson_3", 5, 1, tuple(range(6)))
    ]
    assert fired([0.5, 0.4, 0.3, 0.2, 0.1, 0.0], RuleSet({3}), path=path) == [
        ("nelson_3", 5, -1, tuple(range(6)))
    ]
    assert fired([0.0, 0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 0.6], RuleSet({3}), path=path) == []
    assert fired([0.0, 0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], RuleSet({3}), path=path) == [
        ("nelson_3", 8, 1, tuple(range(3, 9)))
    ]


@pytest.mark.parametrize("path", PATHS)
def test_rule_4_fourteen_points_alternating(path):
    assert fired([0.1, -0.1] * 7, RuleSet({4}), path=path) == [
        ("nelson_4", 13, 0, tuple(range(14)))
    ]
    assert fired([0.1, -0.1] * 6 + [0.1], RuleSet({4}), path=path) == []


@pytest.mark.parametrize("path", PATHS)
def test_rule_5_two_of_three_beyond_two_sigma_same_side(path):
    assert fired([0.0, 2.5, 0.0, 2.2], RuleSet({5}), path=path) == [("nelson_5", 3, 1, (1, 3))]
    assert fired([2.5, -2.5, 2.5], RuleSet({5}), path=path) == [("nelson_5", 2, 1, (0, 2))]
    assert fired([-2.1, -2.1], RuleSet({5}), path=path) == [("nelson_5", 1, -1, (0, 1))]
    # Exactly 2 sigma is not beyond; the pattern is not reported again at a point inside.
    assert fired([2.0, 2.5, 0.0], RuleSet({5}), path=path) == []
    assert fired([2.5, 2.5, 0.0], RuleSet({5}), path=path) == [("nelson_5", 1, 1, (0, 1))]


@pytest.mark.parametrize("path", PATHS)
def test_rule_6_four_of_five_beyond_one_sigma_same_side(path):
    assert fired([1.5, 1.5, 0.0, 1.5, 1.5], RuleSet({6}), path=path) == [
        ("nelson_6", 4, 1, (0, 1, 3, 4))
    ]
    assert fired([-1.2, -1.9, -1.1, -1.5], RuleSet({6}), path=path) == [
        ("nelson_6", 3, -1, (0, 1, 2, 3))
    ]
    assert fired([1.5, 1.5, 0.0, 0.0, 1.5, 1.5], RuleSet({6}), path=path) == []


@pytest.mark.parametrize("path", PATHS)
def test_rule_7_fifteen_within_one_sigma(path):
    values = ([0.5, 0.6, -0.5, -0.4] * 4)[:15]
    assert fired(values, RuleSet({7}), path=path) == [("nelson_7", 14, 0, tuple(range(15)))]
    # Exactly 1 sigma is not within.
    assert fired([*values[:14], 1.0], RuleSet({7}), path=path) == []


@pytest.mark.parametrize("path", PATHS)
def test_rule_8_eight_beyond_one_sigma_either_side(path):
    values = [1.5, -1.5, -1.6, 1.6, 1.5, -1.5, -1.6, 1.7]
    assert fired(values, RuleSet({8}), path=path) == [("nelson_8", 7, 0, tuple(range(8)))]


@pytest.mark.parametrize("path", PATHS)
def test_the_full_nelson_set_on_a_mixed_series(path):
    values = [0.5, 0.6, -0.5, -0.4, 0.2, -0.3, 3.4, 0.1, 2.3, 2.6, 0.0] + [-0.7] * 9
    assert fired(values, NELSON, path=path) == [
        ("nelson_1", 6, 1, (6,)),
        ("nelson_5", 8, 1, (6, 8)),
        ("nelson_5", 9, 1, (8, 9)),
        ("nelson_2", 19, -1, tuple(range(11, 20))),
    ]


def test_each_rule_can_be_switched_off():
    values = [0.5] * 9 + [3.5]
    assert [r for r, *_ in fired(values, RuleSet({1}))] == ["nelson_1"]
    assert [r for r, *_ in fired(values, RuleSet({2}))] == ["nelson_2", "nelson_2"]
    assert fired(values, RuleSet(set())) == []


def test_western_electric_preset_uses_eight_in_a_row():
    values = [0.5] * 8
    assert WESTERN_ELECTRIC.rules == frozenset({1, 2, 5, 6})
    assert WESTERN_ELECTRIC.same_side_run == 8
    assert fired(values, WESTERN_ELECTRIC) == [("nelson_2", 7, 1, tuple(range(8)))]
    assert fired(values, NELSON) == []
    # No trend rule in the Western Electric set.
    assert fired([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], WESTERN_ELECTRIC) == []


def test_unknown_rules_are_refused_naming_the_rule():
    with pytest.raises(
        UnknownRuleError, match=r"unknown run rule 9: the known rules are 1, 2, 3"
    ) as error:
        RuleSet({1, 9})
    assert error.value.rule == 9
    assert isinstance(error.value, ValueError)
    with pytest.raises(UnknownRuleError, match="unknown run rule '2'"):
        RuleSet(["2"])
    with pytest.raises(ValueError, match=r"same_side_run must be within 2\.\.50"):
        RuleSet({2}, same_side_run=1)
    with pytest.raises(UnknownRuleError, match="unknown run rule 0"):
        RuleSet.from_dict({"rules": [0, 1]})


def test_rule_set_round_trips():
    assert RuleSet.from_dict(json.loads(json.dumps(WESTERN_ELECTRIC.to_dict()))) == WESTERN_ELECTRIC
    assert RuleSet.from_dict(NELSON.to_dict()) == NELSON


def test_runs_continue_across_chunks_with_global_indices():
    state = RunState()
    x = np.full(6, 0.5)
    first = evaluate_rules(x, x, -3.0, 3.0, ruleset=NELSON, state=state)
    second = evaluate_rules(x, x, -3.0, 3.0, ruleset=NELSON, state=state)

    assert first == []
    assert [(s.rule, s.index, s.involved) for s in second] == [
        ("nelson_2", 8, tuple(range(9))),
        ("nelson_2", 9, tuple(range(1, 10))),
        ("nelson_2", 10, tuple(range(2, 11))),
        ("nelson_2", 11, tuple(range(3, 12))),
    ]
    assert state.count == 12


GRID = [v / 4 for v in range(-14, 15)]


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.sampled_from(GRID), min_size=1, max_size=300),
    cuts=st.lists(st.integers(min_value=1, max_value=300), max_size=12),
    rules=st.sets(st.integers(min_value=1, max_value=8)),
    run=st.sampled_from([8, 9]),
)
def test_loop_vector_and_any_chunking_give_the_same_signals(values, cuts, rules, run):
    ruleset = RuleSet(rules, same_side_run=run)
    x = np.array(values)
    whole_loop = evaluate_rules(x, x, -3.0, 3.0, ruleset=ruleset, path="loop")
    whole_vector = evaluate_rules(x, x, -3.0, 3.0, ruleset=ruleset, path="vector")
    assert whole_loop == whole_vector

    state = RunState()
    chunked = []
    bounds = sorted({c for c in cuts if c < len(values)})
    for number, (start, stop) in enumerate(zip([0, *bounds], [*bounds, len(values)], strict=True)):
        part = x[start:stop]
        path = PATHS[number % 2]
        chunked += evaluate_rules(part, part, -3.0, 3.0, ruleset=ruleset, state=state, path=path)
        state = RunState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert chunked == whole_loop
