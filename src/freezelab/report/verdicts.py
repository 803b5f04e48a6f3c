"""Verdicts: every word of the report that claims a result, each read off an interval of ``inference.py``.

One rule (docs/statistics.md): a comparison is *better* or *worse* only when its printed interval (Holm,
on the primary metric) excludes 0; otherwise it is *inconclusive* (every seed on one side), *no detectable
difference* or *not testable*. The same words, against the best naive baseline, decide skill. The answer's
first sentence is chosen here too (``headline``):

- ``no_skill``: no arm beats the best naive baseline, so the answer names that baseline, never a "best" arm;
- ``best``: the arm with the best estimate is better than the runner-up (their comparison is in the family);
- ``tie``: the best estimate is not distinguishable from the runner-up: no arm is called best;
- ``single``: one arm only; ``none``: no arm finished.

Per-seed counts ("worse in 2/2 seeds") are descriptive facts beside a verdict, never the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from freezelab.report.inference import Comparison, Estimate, MetricResult

SKILL_WARNINGS = {"worse": "below_baseline", "inconclusive": "not_above_baseline",
                  "no_difference": "not_above_baseline"}  # skill verdict -> warning code


def verdict(c: Comparison, mode: str) -> str:
    """``better`` / ``worse`` when the printed interval excludes 0 (direction by ``mode``), else
    ``insufficient`` (no interval), ``inconclusive`` (every seed on one side) or ``no_difference``."""
    if c.decided:
        arm_higher = c.lo > 0
        return "better" if arm_higher == (mode == "max") else "worse"
    if not (math.isfinite(c.lo) and math.isfinite(c.hi)):
        return "insufficient"
    if c.diffs and (all(d > 0 for d in c.diffs) or all(d < 0 for d in c.diffs)):
        return "inconclusive"
    return "no_difference"


def seeds_favouring(c: Comparison, mode: str) -> tuple[int, int]:
    """(seeds where the arm is better, seeds compared): the descriptive per-seed fact."""
    better = sum(1 for d in c.diffs if (d < 0) == (mode == "min") and d != 0)
    return better, len(c.diffs)


def oriented(c: Comparison) -> Comparison:
    """The same comparison read the other way round (other vs arm): differences and interval negated."""
    e = c.estimate
    return replace(c, arm=c.other, other=c.arm, diffs=tuple(-d for d in c.diffs), lo=-c.hi, hi=-c.lo,
                   estimate=Estimate(-e.value, e.v_item, e.v_seed, e.df, e.n, e.method))


@dataclass(frozen=True)
class BestClaim:
    """The arm with the best estimate and its comparison with the runner-up (best − runner-up)."""

    arm: str
    runner_up: str | None
    comparison: Comparison | None
    decided: bool  # the interval excludes 0 in the best arm's favour: "best" may be said


def best_claim(res: MetricResult, reference: str, mode: str) -> BestClaim | None:
    """The best arm on a metric and whether it is better than the runner-up, from the family's comparison
    of that pair (best vs runner-up, or the pair's comparison with the reference when one of them is it)."""
    if not res.ranking:
        return None
    best = res.ranking[0]
    if len(res.ranking) < 2:
        return BestClaim(best, None, None, False)
    second = res.ranking[1]
    if best == reference:
        found = res.comparison(second, "reference")
        c = oriented(found) if found is not None else None
    elif second == reference:
        c = res.comparison(best, "reference")
    else:
        c = res.comparison(best, "runner_up")
    return BestClaim(best, second, c, c is not None and verdict(c, mode) == "better")


@dataclass(frozen=True)
class Headline:
    """What the answer's first sentence may claim (module docstring)."""

    kind: str  # no_skill | best | tie | single | none
    best: BestClaim | None
    baseline: tuple[str, float] | None  # the best naive baseline (name, value) every arm is compared with
    skilled: tuple[str, ...] = ()  # arms that beat that baseline


def headline(best: BestClaim | None, skills: dict[str, str | None], baseline: tuple[str, float] | None) -> Headline:
    """The first sentence's kind from the best-arm claim and each arm's verdict against the baseline.

    Args:
        best: ``best_claim`` of the primary metric.
        skills: arm -> its verdict against the best baseline (None without one), finished arms only.
        baseline: the best naive baseline, or None when the study has none.
    """
    skilled = tuple(a for a, w in skills.items() if w == "better")
    if best is None:
        return Headline("none", None, baseline)
    if baseline is not None and any(w is not None for w in skills.values()) and not skilled:
        return Headline("no_skill", best, baseline)
    if best.runner_up is None:
        return Headline("single", best, baseline, skilled)
    return Headline("best" if best.decided else "tie", best, baseline, skilled)
