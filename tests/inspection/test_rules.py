"""Defect rules of the vision worker: each threshold fires exactly at its value and not
below, counts and runs along the coil, and defects repeating with a roller's circumference."""

import numpy as np
import pytest

from inspection.schema import DEFECT_CLASSES
from inspection.vision.rules import (
    DEFAULT_RULES,
    Observation,
    Roller,
    RuleEngine,
    RulesError,
    defect_size_um,
    parse,
    parse_rollers,
)

# A 200 mm diameter calender roll: circumference pi x 200 mm.
ROLL = Roller(name="calender top roll", circumference_mm=628.3)


def engine(classes=None, rollers=(), **sections) -> RuleEngine:
    return RuleEngine(parse({"classes": classes or {}, **sections}), tuple(rollers))


def obs(cls="particle", size=150.0, md=1.0, cd=40.0, band="act", md_span=None) -> Observation:
    start, end = md_span if md_span else (md, md)
    return Observation(
        cls=cls, band=band, size_um=size, md_m=md, cd_mm=cd, md_start_m=start, md_end_m=end
    )


def test_defaults_cover_every_class_and_parse_from_an_empty_document():
    rules = parse({})
    assert set(rules.classes) == set(DEFECT_CLASSES)
    assert rules.classes["particle"].min_size_um == 100.0
    assert rules.classes["particle"].quarantine_size_um == 100.0
    assert rules.classes["particle"].stop_size_um == 500.0
    assert rules.classes["scratch"].stop_length_m == 0.5
    assert rules.periodicity.min_repeats == 3
    assert parse(None) == rules
    assert parse(DEFAULT_RULES) == rules


def test_a_partial_document_overrides_only_what_it_names():
    rules = parse({"classes": {"void": {"stop_size_um": 2500}}})
    assert rules.classes["void"].stop_size_um == 2500.0
    assert rules.classes["void"].min_size_um == 200.0
    assert rules.classes["pinhole"] == parse({}).classes["pinhole"]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"classes": {"dent": {}}}, "rules.classes"),
        ({"classes": {"void": {"stop_size": 3}}}, "rules.classes.void"),
        ({"classes": {"void": {"min_size_um": -1}}}, "rules.classes.void.min_size_um"),
        ({"classes": {"void": {"min_size_um": "big"}}}, "rules.classes.void.min_size_um"),
        ({"classes": {"void": {"min_size_um": None}}}, "rules.classes.void.min_size_um"),
        ({"classes": {"void": {"stop_count_per_10m": 0}}}, "rules.classes.void.stop_count_per_10m"),
        (
            {"classes": {"void": {"stop_count_per_10m": 2.5}}},
            "rules.classes.void.stop_count_per_10m",
        ),
        (
            {"classes": {"void": {"quarantine_size_um": 900, "stop_size_um": 800}}},
            "rules.classes.void",
        ),
        ({"classes": {"void": {"stop_length_m": 0}}}, "rules.classes.void.stop_length_m"),
        ({"classes": {"void": {"min_size_um": True}}}, "rules.classes.void.min_size_um"),
        ({"periodicity": {"min_repeats": 1}}, "rules.periodicity.min_repeats"),
        ({"periodicity": {"classes": ["dent"]}}, "rules.periodicity.classes"),
        ({"continuity": {"gap": 1}}, "rules.continuity"),
        ({"colour": "red"}, "rules"),
        ([], "rules"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(doc, field):
    with pytest.raises(RulesError) as exc:
        parse(doc)
    assert exc.value.field == field


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ("roll", "rollers"),
        ([{"name": "", "circumference_mm": 600}], "rollers[0].name"),
        ([{"name": "r1", "circumference_mm": 0}], "rollers[0].circumference_mm"),
        ([{"name": "r1"}], "rollers[0].circumference_mm"),
        ([{"name": "r1", "circumference_mm": 600, "diameter": 1}], "rollers[0]"),
    ],
)
def test_bad_rollers_are_refused(items, field):
    with pytest.raises(RulesError) as exc:
        parse_rollers(items)
    assert exc.value.field == field


def test_rollers_parse():
    assert parse_rollers([{"name": " calender top roll ", "circumference_mm": 628.3}]) == (ROLL,)
    assert parse_rollers(None) == ()


def test_size_is_the_length_for_line_like_classes_and_the_diameter_for_others():
    assert defect_size_um("scratch", equivalent_diameter_um=80, length_um=2400) == 2400
    assert defect_size_um("edge", equivalent_diameter_um=80, length_um=900) == 900
    assert defect_size_um("particle", equivalent_diameter_um=80, length_um=2400) == 80


def test_model_bands_decide_before_any_rule():
    e = engine()
    assert e.decide(obs(band="log", size=5000)).decision == "ignore"
    review = e.decide(obs(band="review", size=5000))
    assert (review.decision, review.rule) == ("review", "model: review band")


def test_minimum_size_to_count_fires_at_its_value():
    e = engine({"particle": {"min_size_um": 120, "quarantine_size_um": 150}})
    below = e.decide(obs(size=119.99))
    assert below.decision == "ignore"
    assert below.rule == "particle 120 µm below the 120 µm to count"
    assert e.decide(obs(size=120.0, md=2.0)).decision == "review"


def test_quarantine_size_fires_at_its_value_and_not_below():
    e = engine({"void": {"min_size_um": 200, "quarantine_size_um": 400, "stop_size_um": 3000}})
    assert e.decide(obs("void", size=399.9, md=1.0)).decision == "review"
    at = e.decide(obs("void", size=400.0, md=20.0))
    assert (at.decision, at.rule) == ("quarantine", "void 400 µm >= quarantine size 400")


def test_stop_size_fires_at_its_value_and_not_below():
    e = engine({"particle": {"stop_size_um": 500, "stop_count_per_10m": None}})
    assert e.decide(obs(size=499.99, md=1.0)).decision == "quarantine"
    at = e.decide(obs(size=500.0, md=2.0))
    assert (at.decision, at.rule) == ("stop", "particle 500 µm >= stop size 500")


def test_count_per_10m_stops_at_the_nth_defect_within_10_m():
    e = engine({"pinhole": {"stop_count_per_10m": 4, "stop_size_um": None}})
    decisions = [e.decide(obs("pinhole", size=120, md=m)).decision for m in (1.0, 3.0, 5.0)]
    assert decisions == ["quarantine"] * 3
    fourth = e.decide(obs("pinhole", size=120, md=10.9))
    assert fourth.decision == "stop"
    assert fourth.rule == "4 pinhole defects within 10 m (stop at 4)"


def test_count_per_10m_forgets_defects_10_m_back_and_other_classes():
    e = engine({"pinhole": {"stop_count_per_10m": 3}, "particle": {"stop_count_per_10m": 3}})
    assert e.decide(obs("pinhole", size=120, md=1.0)).decision == "quarantine"
    assert e.decide(obs("particle", size=150, md=2.0)).decision == "quarantine"
    assert e.decide(obs("pinhole", size=120, md=5.0)).decision == "quarantine"
    # 11.0 - 10 = 1.0: the first pinhole is exactly 10 m back and no longer counts.
    assert e.decide(obs("pinhole", size=120, md=11.0)).decision == "quarantine"
    assert e.decide(obs("pinhole", size=120, md=12.0)).decision == "stop"


def test_ignored_and_reviewed_defects_do_not_count():
    e = engine({"pinhole": {"stop_count_per_10m": 2, "min_size_um": 60}})
    assert e.decide(obs("pinhole", size=59, md=1.0)).decision == "ignore"
    assert e.decide(obs("pinhole", size=200, md=1.5, band="review")).decision == "review"
    assert e.decide(obs("pinhole", size=120, md=2.0)).decision == "quarantine"
    assert e.decide(obs("pinhole", size=120, md=2.5)).decision == "stop"


def test_continuous_length_stops_exactly_at_its_length():
    e = engine({"scratch": {"stop_length_m": 0.5, "stop_count_per_10m": None}})
    # A scratch at 152.3 mm seen in frames of 20.48 mm: pieces 0.0-0.1, 0.102-0.3, 0.303-0.4999.
    assert e.decide(obs("scratch", 2000, 0.05, 152.3, md_span=(0.0, 0.1))).decision != "stop"
    assert e.decide(obs("scratch", 2000, 0.2, 152.6, md_span=(0.102, 0.3))).decision != "stop"
    assert e.decide(obs("scratch", 2000, 0.4, 152.1, md_span=(0.303, 0.4999))).decision != "stop"
    at = e.decide(obs("scratch", 2000, 0.45, 152.2, md_span=(0.4, 0.5)))
    assert at.decision == "stop"
    assert at.rule == "scratch continuous over 0.500 m at 152.2 mm (stop at 0.5 m)"


def test_a_run_breaks_at_a_gap_or_another_position():
    e = engine({"scratch": {"stop_length_m": 0.3, "stop_count_per_10m": None}})
    e.decide(obs("scratch", 2000, 0.1, 100.0, md_span=(0.0, 0.2)))
    # 6 mm later: beyond the 5 mm join gap, a new run.
    assert e.decide(obs("scratch", 2000, 0.3, 100.0, md_span=(0.206, 0.4))).decision != "stop"
    # Touching in md but 1.5 mm across: another run.
    assert e.decide(obs("scratch", 2000, 0.5, 101.6, md_span=(0.4, 0.6))).decision != "stop"
    assert e.decide(obs("scratch", 2000, 0.7, 101.5, md_span=(0.6, 0.7))).decision == "stop"


def test_periodic_defect_names_the_roller_after_three_repeats():
    e = engine({"particle": {"stop_count_per_10m": None}}, rollers=[ROLL])
    first = e.decide(obs(size=150, md=10.000, cd=152.3))
    second = e.decide(obs(size=150, md=10.6283, cd=152.8))
    assert first.decision == second.decision == "quarantine"
    third = e.decide(obs(size=150, md=11.2571, cd=151.9))
    assert third.decision == "stop"
    assert third.suspect_roller == "calender top roll"
    assert third.rule == (
        "particle repeats 3 times every 628.5 mm at 151.9 mm: calender top roll (628.3 mm)"
    )


def test_periodicity_within_tolerance_only():
    # Period off by 4 mm (tolerance 3 mm): no roller.
    e = engine({"particle": {"stop_count_per_10m": None}}, rollers=[ROLL])
    for k in range(4):
        assert e.decide(obs(size=150, md=10 + k * 0.6323, cd=80.0)).decision == "quarantine"
    # Right period, but 1.2 mm across (tolerance 1 mm): no roller.
    e = engine({"particle": {"stop_count_per_10m": None}}, rollers=[ROLL])
    for k in range(4):
        assert e.decide(obs(size=150, md=10 + k * 0.6283, cd=80.0 + 1.2 * k)).decision != "stop"


def test_random_defects_never_look_periodic():
    rng = np.random.default_rng(20)
    e = engine(
        {
            c: {"stop_count_per_10m": None, "stop_size_um": None, "stop_length_m": None}
            for c in DEFECT_CLASSES
        },
        rollers=[ROLL, Roller("coating roll", 942.5), Roller("idler 3", 314.2)],
    )
    mds = np.sort(rng.uniform(0, 500, 400))
    cds = rng.uniform(0, 300, 400)
    decisions = [
        e.decide(obs(size=150, md=float(m), cd=float(c))) for m, c in zip(mds, cds, strict=True)
    ]
    assert [d for d in decisions if d.decision == "stop"] == []


def test_periodicity_can_be_limited_to_classes():
    e = engine(
        {"void": {"stop_count_per_10m": None}, "particle": {"stop_count_per_10m": None}},
        periodicity={"classes": ["void"]},
        rollers=[ROLL],
    )
    for k in range(3):
        assert e.decide(obs("particle", 150, 5 + k * 0.6283, 40.0)).decision == "quarantine"
    for k in range(2):
        assert e.decide(obs("void", 500, 9 + k * 0.6283, 60.0)).decision == "quarantine"
    assert e.decide(obs("void", 500, 9 + 2 * 0.6283, 60.0)).suspect_roller == "calender top roll"


def test_a_new_coil_forgets_counts_runs_and_repeats():
    e = engine({"pinhole": {"stop_count_per_10m": 2}}, rollers=[ROLL])
    e.new_coil("C-1")
    assert e.decide(obs("pinhole", 120, md=1.0)).decision == "quarantine"
    e.new_coil("C-2")
    assert e.coil == "C-2"
    assert e.decide(obs("pinhole", 120, md=1.1)).decision == "quarantine"
    assert e.decide(obs("pinhole", 120, md=1.2)).decision == "stop"


def test_unknown_class_or_band_is_a_programming_error():
    e = engine()
    with pytest.raises(ValueError):
        e.decide(obs("dent"))
    with pytest.raises(ValueError):
        e.decide(obs(band="maybe"))
