"""Seeds until decided: an anytime-valid test of each arm against the reference (``run --until-decided``).

A fixed-n t-test looked at after every new seed calls noise a result far more often than its α (every look
is another chance; the simulation in tests/unit/test_sequential.py measures it). The test here keeps its
error rate however often it is looked at and whenever the study stops.

For arm a and the reference r over their common seeds, the paired per-seed differences of the primary metric
(analysis units: log for log-scale metrics) D_1..D_n are modelled as N(μ, σ²) with σ unknown. The evidence
against μ = 0 is the Bayes factor of the t-statistic with a normal prior N(0, g) on the standardised effect
δ = μ/σ and the right-Haar prior on σ (Rouder et al. 2009, eq. 11 at fixed g; the "safe t-test" of
Grünwald, de Heide & Koolen 2024 and Pérez-Ortiz et al. 2024):

    E_n = (1 + n g)^(-1/2) · [(1 + t²/ν) / (1 + t²/((1 + n g) ν))]^((ν + 1)/2),   t = √n D̄ / s,  ν = n − 1

Under μ = 0, E_n is a test martingale in n for the data's scale-invariant filtration, so by Ville's inequality
P(E_n ≥ 1/α for some n) ≤ α: stopping when it crosses, at any n, keeps the false-verdict rate at α. With m
comparisons each is decided at E ≥ m/α (Bonferroni, valid under optional stopping); its direction is the
sign of D̄. ``g = 1``: E can exceed 20 only from n = 5 seeds on (its supremum over t is (1 + n g)^(ν/2)).

The item sampling noise of the evaluation set is not in D_s (every seed is scored on the same items): the
decision is about the arms on this evaluation set, over seeds, as the report's seed part is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
PRIOR_G = 1.0  # prior variance of the standardised effect δ = μ/σ
MIN_SEEDS = 3  # fewer seeds cannot reach any threshold (E_2 <= √(1 + 2g))


def safe_t_evalue(diffs: Sequence[float], g: float = PRIOR_G) -> float:
    """E_n of the module docstring for paired differences (n >= 2); 1.0 (no evidence) below that."""
    d = np.asarray([x for x in diffs if math.isfinite(x)], dtype=np.float64)
    n = len(d)
    if n < 2:
        return 1.0
    nu = n - 1
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    big = 1.0 + n * g
    if sd == 0:  # every difference equal: the limit t -> inf (or 0 when they are all 0)
        return 1.0 / math.sqrt(big) if mean == 0 else math.exp(0.5 * nu * math.log(big))
    t2 = n * mean * mean / (sd * sd)
    log_e = -0.5 * math.log(big) + 0.5 * (nu + 1) * (math.log1p(t2 / nu) - math.log1p(t2 / (big * nu)))
    return math.exp(min(log_e, 700.0))


@dataclass(frozen=True)
class Decision:
    """One arm against the reference after n paired seeds."""

    arm: str
    reference: str
    metric: str
    n: int
    mean_diff: float     # D̄, analysis units (log for log-scale metrics)
    evalue: float
    threshold: float     # m / α
    verdict: str         # "better" | "worse" | "undecided"

    @property
    def decided(self) -> bool:
        return self.verdict != "undecided"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(diffs: dict[str, Sequence[float]], *, reference: str, metric: str, mode: str,
           alpha: float = ALPHA, g: float = PRIOR_G) -> list[Decision]:
    """Each arm's decision from its per-seed differences with the reference (arm − reference).

    Args:
        diffs: arm -> paired per-seed differences D_s on the primary metric (analysis units).
        reference, metric: names, for the record.
        mode: "min" (lower is better) or "max".
        alpha: the family's error rate; each of the m comparisons is decided at E >= m / alpha.
        g: the prior variance of δ.
    """
    m = max(len(diffs), 1)
    out = []
    for arm, d in diffs.items():
        vals = [x for x in d if math.isfinite(x)]
        e = safe_t_evalue(vals, g)
        mean = float(np.mean(vals)) if vals else math.nan
        verdict = "undecided"
        if len(vals) >= MIN_SEEDS and e >= m / alpha and mean != 0:
            verdict = "better" if (mean < 0) == (mode == "min") else "worse"
        out.append(Decision(arm, reference, metric, len(vals), mean, e, m / alpha, verdict))
    return out


def study_diffs(study: Any, seeds: Sequence[int] | None = None) -> tuple[Any, dict[str, list[float]]]:
    """(primary metric, arm -> paired per-seed differences with the reference) of a loaded report Study,
    over ``seeds`` only when given (a replayed look sees the seeds it saw, not the later ones)."""
    from freezelab.report.analysis import resolve_metrics

    metric = next(m for m in resolve_metrics(study) if m.primary)
    ref = study.values(metric.key, study.reference)

    def g(v: float) -> float:
        return math.log(v) if metric.log_scale and v > 0 else (v if not metric.log_scale else math.nan)

    out = {}
    for arm in study.arms:
        if arm == study.reference:
            continue
        vals = study.values(metric.key, arm)
        if not vals:  # not run (an --arms subset): nothing to decide
            continue
        common = set(vals) & set(ref) & (set(seeds) if seeds is not None else set(vals))
        out[arm] = [g(vals[s]) - g(ref[s]) for s in sorted(common)]
    return metric, out


# ----------------------------------------------------------------------------- power advice
def seeds_to_decide(effect: float, *, v_item: float, v_seed: float, n: int, alpha: float = ALPHA,
                    power: float = 0.8, max_seeds: int = 10_000) -> float:
    """About how many seeds a fixed-n comparison needs to decide an effect of this size (analysis units)
    with ``power``, when its seed part of the variance shrinks as 1/n and its item part (the same
    evaluation items for every seed) does not: the smallest n' with
    (t_{n'−1, 1−α/2} + t_{n'−1, power}) · √(v_item + v_seed · n / n') <= |effect|.

    Returns:
        That seed count, or inf when no number of seeds would do (the item noise alone is too large: more
        evaluation items are needed).
    """
    from scipy import stats as sps

    if not (math.isfinite(effect) and effect != 0 and v_seed >= 0 and v_item >= 0):
        return math.inf
    z = float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))
    if z * math.sqrt(v_item) >= abs(effect):
        return math.inf

    def enough(k: int) -> bool:
        q = float(sps.t.ppf(1 - alpha / 2, k - 1) + sps.t.ppf(power, k - 1))
        return q * math.sqrt(v_item + v_seed * n / k) <= abs(effect)

    lo, hi = 2, 2
    while not enough(hi):
        if hi >= max_seeds:
            return math.inf
        lo, hi = hi, min(hi * 2, max_seeds)
    while lo < hi:  # the smallest k in (lo, hi] that is enough
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if not enough(mid) else (lo, mid)
    return float(hi)


def read_record(out_dir: Any) -> tuple[dict[str, Any] | None, str | None]:
    """OUT/sequential.json written by ``run --until-decided``: (record, None), (None, None) when absent, or
    (None, problem) when it is not a valid record (an untrusted file: the report says so and goes on)."""
    from pathlib import Path

    from freezelab.tracking.files import read_checked_json

    def check(rec: Any) -> None:
        looks = rec["looks"]
        assert isinstance(looks, list) and looks and all(isinstance(x["decisions"], list) for x in looks)
        for d in looks[-1]["decisions"]:
            assert isinstance(d["arm"], str) and isinstance(d["n"], int) and d["verdict"] in (
                "better", "worse", "undecided")
            float(d["evalue"]), float(d["threshold"]), float(d["mean_diff"])
        assert rec["stopped"] in ("decided", "max_seeds", "failed", None) and isinstance(rec["seeds"], list)

    return read_checked_json(Path(out_dir) / "sequential.json", check, what="--until-decided record",
                             consequence="its sequential decisions are left out. Run the same freezelab run "
                             "--until-decided command again to rewrite it.")
