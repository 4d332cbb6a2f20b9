"""The SPC engine: control charts, run rules, capability, drift detectors and their ARLs.

Pure numpy/scipy, no Django: the spc app's services call it and store what it returns
(frozen :class:`Limits`, :class:`Monitor` state as a JSON-able dict, signals, capability
studies). See docs/spc.md for the formulas, constants, rules and figures.

Typical use::

    phase1 = phase1_individuals(baseline, excluded=confirmed)   # repeat until converged
    limits = phase1.limits                                       # frozen, stored, versioned
    monitor = Monitor(MonitorConfig(limits))                     # Nelson rules + CUSUM
    result = monitor.push_many(new_values)                       # signals, plotted points
    saved = monitor.to_dict()                                    # persist; restore later
"""

from spc.engine.arl import (
    MonteCarloArl,
    arl,
    arl_convergence,
    arl_monte_carlo,
    tune_cusum_h,
    tune_ewma_l,
)
from spc.engine.capability import (
    Capability,
    CapabilityIndex,
    Normality,
    PercentileCapability,
    anderson_darling,
    capability,
    percentile_capability,
)
from spc.engine.charts import (
    ChartType,
    ControlLimits,
    Evaluation,
    Limits,
    PhaseI,
    Series,
    evaluate_attribute,
    evaluate_individuals,
    evaluate_subgroups,
    phase1_attribute,
    phase1_individuals,
    phase1_subgroups,
    point_limits,
    standard_limits,
)
from spc.engine.detectors import (
    DEFAULT_CUSUM,
    DEFAULT_EWMA,
    CusumSpec,
    DetectorState,
    EwmaSpec,
    ShewhartSpec,
    run_detectors,
)
from spc.engine.errors import NonFiniteValueError, UnknownRuleError
from spc.engine.rules import (
    BEYOND_LIMITS,
    NELSON,
    RULES,
    WESTERN_ELECTRIC,
    RuleSet,
    RunState,
    Signal,
    evaluate_rules,
)
from spc.engine.streaming import (
    Monitor,
    MonitorConfig,
    MonitorState,
    StreamResult,
    Trace,
    evaluate_stream,
)
from spc.engine.subgroups import Subgroup, Subgrouped, Subgrouping, make_subgroups

__all__ = [
    # charts
    "ChartType",
    "ControlLimits",
    "Evaluation",
    "Limits",
    "PhaseI",
    "Series",
    "evaluate_attribute",
    "evaluate_individuals",
    "evaluate_subgroups",
    "phase1_attribute",
    "phase1_individuals",
    "phase1_subgroups",
    "point_limits",
    "standard_limits",
    # rules
    "BEYOND_LIMITS",
    "NELSON",
    "RULES",
    "WESTERN_ELECTRIC",
    "RuleSet",
    "RunState",
    "Signal",
    "evaluate_rules",
    # detectors and their ARLs
    "DEFAULT_CUSUM",
    "DEFAULT_EWMA",
    "CusumSpec",
    "DetectorState",
    "EwmaSpec",
    "MonteCarloArl",
    "ShewhartSpec",
    "arl",
    "arl_convergence",
    "arl_monte_carlo",
    "run_detectors",
    "tune_cusum_h",
    "tune_ewma_l",
    # streaming and subgrouping
    "Monitor",
    "MonitorConfig",
    "MonitorState",
    "StreamResult",
    "Subgroup",
    "Subgrouped",
    "Subgrouping",
    "Trace",
    "evaluate_stream",
    "make_subgroups",
    # capability
    "Capability",
    "CapabilityIndex",
    "Normality",
    "PercentileCapability",
    "anderson_darling",
    "capability",
    "percentile_capability",
    # refusals
    "NonFiniteValueError",
    "UnknownRuleError",
]
