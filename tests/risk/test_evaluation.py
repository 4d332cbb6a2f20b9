"""Evaluation of risk scores (AUROC, average precision, capture and false quarantines at a
quarantine rate, per class, time slices, PSI, comparison) and the plant baseline."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from risk.baseline import BaselineRules, baseline_flags, baseline_reasons, baseline_score
from risk.evaluation import (
    auroc,
    average_precision,
    capture_at,
    compare,
    comparison_table,
    per_class,
    psi,
    psi_table,
    quarantine_count,
    quarantine_weights,
    summary,
    time_split,
)
from risk.features import FEATURE_INDEX, FEATURES

# ten cells: scores, which are bad, and their latent class
SCORE = np.array([9.0, 8.0, 7.0, 6.0, 6.0, 6.0, 3.0, 2.0, 1.0, 0.0])
BAD = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)
CLASS = np.array(
    [
        "particle_short",
        "none",
        "cold_weld",
        "particle_short",
        "none",
        "none",
        "none",
        "coat_streak",
        "none",
        "none",
    ]
)


def test_capture_at_a_rate_with_a_tie_at_the_cut():
    # 20 % of 10 cells = 2: cells 0 and 1; one of the two is bad
    c = capture_at(SCORE, BAD, 0.2)
    assert (c.quarantined, c.captured, c.capture, c.false_quarantines) == (2, 1.0, 0.25, 1.0)
    assert c.false_quarantine_rate == pytest.approx(1 / 6)
    # 40 % = 4 cells: 0, 1, 2, then one place for the three cells tied at 6.0, one of them
    # bad: each tied cell counts a third
    c = capture_at(SCORE, BAD, 0.4)
    assert c.quarantined == 4
    assert c.captured == pytest.approx(2 + 1 / 3)
    assert c.capture == pytest.approx((2 + 1 / 3) / 4)
    assert c.false_quarantines == pytest.approx(1 + 2 / 3)
    weights = quarantine_weights(SCORE, 0.4)
    assert weights.tolist() == pytest.approx([1, 1, 1, 1 / 3, 1 / 3, 1 / 3, 0, 0, 0, 0])
    assert weights.sum() == pytest.approx(4.0)


def test_capture_does_not_depend_on_the_order_of_tied_cells():
    order = np.array([9, 5, 3, 0, 4, 2, 8, 1, 7, 6])
    a, b = capture_at(SCORE[order], BAD[order], 0.4), capture_at(SCORE, BAD, 0.4)
    assert a.quarantined == b.quarantined
    assert (a.captured, a.false_quarantines) == pytest.approx((b.captured, b.false_quarantines))


def test_quarantine_count_is_the_floor_and_at_least_one():
    assert quarantine_count(1000, 0.02) == 20
    assert quarantine_count(1049, 0.02) == 20
    assert quarantine_count(10, 0.02) == 1
    with pytest.raises(ValueError, match="rate"):
        quarantine_count(10, 0.0)


def test_auroc_and_average_precision_on_a_hand_made_example():
    # pairs (bad, good): 4 x 6 = 24. The bad cell at 9 beats all 6 good ones, at 7 beats
    # 5, at 6 beats 3 and ties 2 (half each), at 2 beats 2: (6 + 5 + 4 + 2) / 24
    assert auroc(SCORE, BAD) == pytest.approx(17 / 24)
    assert auroc(SCORE, BAD) == pytest.approx(roc_auc_score(BAD, SCORE))
    # precision at each bad cell: 1/1, 2/3, tie block of 6.0 entered together: 3/6, 4/8
    assert average_precision(SCORE, BAD) == pytest.approx((1 + 2 / 3 + 3 / 6 + 4 / 8) / 4)
    assert average_precision(SCORE, BAD) == pytest.approx(average_precision_score(BAD, SCORE))
    assert math.isnan(auroc(SCORE, np.zeros(10, dtype=bool)))
    with pytest.raises(ValueError, match="finite"):
        auroc(np.r_[SCORE[:9], np.nan], BAD)


def test_metrics_agree_with_scikit_learn_on_random_scores_with_ties():
    rng = np.random.default_rng(8)
    s = np.round(rng.normal(size=5000), 1)
    t = rng.random(5000) < 0.02 + 0.1 * (s > 1.5)
    assert auroc(s, t) == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    assert average_precision(s, t) == pytest.approx(average_precision_score(t, s), abs=1e-12)


def test_summary_and_per_class():
    out = summary(SCORE, BAD, rates=(0.2, 0.4))
    assert out["cells"] == 10 and out["bad_cells"] == 4
    assert out["capture_at_20pct"] == 0.25
    assert out["false_quarantines_at_40pct"] == pytest.approx(5 / 3)
    classes = per_class(SCORE, CLASS, rates=(0.2,))
    # particle shorts at 9 (beats all 6 good cells) and 6 (beats 3, ties 2): 10 / 12
    assert classes["particle_short"] == {
        "cells": 2,
        "capture_at_20pct": 0.5,
        "auroc": pytest.approx(10 / 12),
    }
    assert classes["cold_weld"]["capture_at_20pct"] == 0.0
    assert classes["coat_streak"]["auroc"] == pytest.approx(2 / 6)
    assert classes["none"] == {"cells": 6, "capture_at_20pct": pytest.approx(1 / 6)}


def test_time_split_cuts_by_build_time_and_keeps_ties_together():
    built = np.array([5.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    train, cal, hold = time_split(built, fractions=(0.6, 0.2, 0.2))
    assert built[train].tolist() == [5.0, 1.0, 2.0, 3.0, 4.0, 6.0]
    assert built[cal].tolist() == [7.0, 8.0]
    assert built[hold].tolist() == [9.0, 10.0]
    tied = np.array([1.0, 1.0, 1.0, 1.0, 2.0])
    assert [m.sum() for m in time_split(tied, fractions=(0.5, 0.5))] == [4, 1]
    with pytest.raises(ValueError, match="add up to 1"):
        time_split(built, fractions=(0.5, 0.2))


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(2)
    ref = rng.normal(0.0, 1.0, 20_000)
    assert psi(ref, ref) == 0.0
    assert psi(ref, rng.normal(0.0, 1.0, 20_000)) < 0.01
    assert psi(ref, rng.normal(0.5, 1.0, 20_000)) > 0.2
    assert psi(ref, rng.normal(1.0, 1.0, 20_000)) > 0.8
    # a flag feature: one bin per value
    flags = np.r_[np.zeros(900), np.ones(100)]
    shifted = np.r_[np.zeros(500), np.ones(500)]
    expected = (0.5 - 0.9) * np.log(0.5 / 0.9) + (0.5 - 0.1) * np.log(0.5 / 0.1)
    assert psi(flags, shifted) == pytest.approx(expected)
    table = psi_table(np.column_stack([ref, ref]), np.column_stack([ref, ref + 1]), ["a", "b"])
    assert table["a"] == 0.0 and table["b"] > 0.8
    with pytest.raises(ValueError, match="finite values"):
        psi(ref, np.full(3, np.nan))


def test_compare_and_its_table():
    result = compare({"model": SCORE, "reversed": SCORE[::-1]}, BAD, latent_class=CLASS)
    assert result["model"]["auroc"] == pytest.approx(17 / 24)
    assert result["reversed"]["auroc"] < 0.5
    assert "per_class" in result["model"]
    table = comparison_table(result).splitlines()
    assert table[0] == (
        "| score | AUROC | AP | capture 1 % | capture 2 % | capture 5 % | false quarantines 2 % |"
    )
    assert table[2].startswith("| model | 0.708 | ")


# --------------------------------------------------------------------------- baseline


def _typical(n):
    return np.zeros((n, len(FEATURES)))


def test_baseline_flags_a_spec_exceedance_and_a_lot_screen():
    x = _typical(5)
    x[1, FEATURE_INDEX["anode_burr_um_dev"]] = 1.2  # above the USL
    x[2, FEATURE_INDEX["weld_resistance_uohm_dev"]] = 0.95  # at the edge but inside
    x[3, FEATURE_INDEX["k_value_z"]] = 4.0  # fails the lot K screen
    x[3, FEATURE_INDEX["insulation_resistance_mohm_dev"]] = -1.1  # below the LSL
    x[4, FEATURE_INDEX["insulation_resistance_mohm_dev"]] = 1.5  # high IR is fine
    x[4, FEATURE_INDEX["k_value_z"]] = -5.0  # low self-discharge is fine
    assert baseline_reasons(x) == [
        [],
        ["spec:anode_burr_um"],
        [],
        ["spec:insulation_resistance_mohm", "lot:k_value_z"],
        [],
    ]
    score = baseline_score(x)
    assert score[1] == 1.0
    assert score[3] == pytest.approx(2.0 + np.tanh(0.4))
    assert score[0] == score[2] == score[4] == 0.0


def test_baseline_absolute_k_limit_and_station_flags():
    x = _typical(3)
    x[2, FEATURE_INDEX["open_spc_alarms"]] = 1.0
    rules = BaselineRules(k_limit_mv_per_day=0.5)
    flags, names = baseline_flags(x, rules=rules, k_value_mv_per_day=np.array([0.1, 0.6, np.nan]))
    assert flags[:, names.index("k_limit")].tolist() == [False, True, False]
    assert flags[:, names.index("flag:open_spc_alarms")].tolist() == [False, False, True]
    with pytest.raises(ValueError, match="pass k_value_mv_per_day"):
        baseline_flags(x, rules=rules)
    assert BaselineRules.from_dict(rules.as_dict()) == rules
    with pytest.raises(ValueError, match="unknown features"):
        BaselineRules.from_dict({**rules.as_dict(), "screens": [["k_value", "high"]]})
