"""Verdict statistics: paired item bootstrap within seeds + pooled seed variance (docs/statistics.md).

Every succeeded run r = (arm, seed) has a value g_r of the metric on the evaluation items (log of the
metric for log-scale metrics) and, from ``items/*.npz``, B bootstrap replicates G_r (B,) of it computed
with one shared set of item resamples (``resample_weights``), so every difference below is paired on
identical items and the baselines' own item noise enters every comparison. A comparison of arm a with
the reference arm r over their common seeds S (n = |S|), or with a naive baseline b (a constant
across seeds):

    D_s  = g_{a,s} − g_{r,s}   (or g_{a,s} − g_b),           D̄ = mean_s D_s
    v_item = Var_boot(mean_s (G_{a,s} − G_{r,s}))             item sampling, df_item = blocks − 1
    v_seed = (σ̂²_a + σ̂²_r) / n   (or σ̂²_a / n)               seed-to-seed variation
    σ̂²_a  = max(σ²_pool, c_n s²_a),  σ²_pool = Σ_a (n_a − 1) s²_a / Σ_a (n_a − 1),  df_pool = Σ_a (n_a − 1)
    t = D̄ / √(v_item + v_seed), df by Welch–Satterthwaite; p two-sided.

s²_a is the sample variance of arm a's per-seed values; pooling over the study's arms gives the seed
variance the degrees of freedom two seeds alone cannot, and the max with the arm's own variance (times
c_n = 1 + 2/(n − 1), for its few df) keeps an arm noisier than the others from borrowing their smaller
variance. v_item is the bootstrap variance times K/(K − 1) for K independent units (items or blocks).
Without per-item files v_item = 0 (seed-level statistics). ``holm_family`` adjusts a family's p-values
(Holm) and gives each comparison the interval level at which Holm tested it, so an interval excludes 0
exactly when the Holm-adjusted p is below α: the verdict is read off the printed interval.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
N_BOOT = 1000
METHOD_ITEMS = "items+seeds"
METHOD_SEEDS = "seeds only"


@dataclass(frozen=True)
class RunValues:
    """One run's metric on the items (g, log units for log-scale metrics) and its bootstrap replicates."""

    value: float
    boot: np.ndarray | None  # (B,), None without per-item scores


@dataclass(frozen=True)
class Estimate:
    """A difference (or a mean) in analysis units with its two variance parts and degrees of freedom."""

    value: float
    v_item: float
    v_seed: float
    df: float
    n: int
    method: str

    @property
    def se(self) -> float:
        """Standard error √(v_item + v_seed)."""
        return math.sqrt(self.v_item + self.v_seed)

    def interval(self, alpha: float = ALPHA) -> tuple[float, float]:
        """Two-sided (1 − alpha) t interval; (nan, nan) when the df is undefined."""
        if not (math.isfinite(self.value) and self.df > 0):
            return math.nan, math.nan
        half = float(sps.t.ppf(1 - alpha / 2, self.df)) * self.se if self.se > 0 else 0.0
        return self.value - half, self.value + half

    @property
    def p(self) -> float:
        """Two-sided p-value of value = 0 (nan without df)."""
        if not (math.isfinite(self.value) and self.df > 0):
            return math.nan
        if self.se == 0:
            return 0.0 if self.value != 0 else 1.0
        return float(2 * sps.t.sf(abs(self.value) / self.se, self.df))


@dataclass(frozen=True)
class Comparison:
    """Arm vs the reference arm or vs a baseline on one metric, with its Holm-tested interval."""

    arm: str
    other: str
    kind: str  # "reference" | "baseline"
    seeds: tuple[int, ...]
    diffs: tuple[float, ...]  # per-seed D_s (analysis units)
    estimate: Estimate
    p: float
    p_holm: float = math.nan
    alpha: float = ALPHA  # the interval is a (1 − alpha) interval: Holm's level for this comparison
    lo: float = math.nan
    hi: float = math.nan

    @property
    def decided(self) -> bool:
        """The printed interval excludes 0."""
        return (math.isfinite(self.lo) and self.lo > 0) or (math.isfinite(self.hi) and self.hi < 0)


@dataclass(frozen=True)
class SeedPool:
    """Seed variance per arm after pooling (σ̂²_a) and the pooled degrees of freedom."""

    var: dict[str, float]
    pooled: float
    df: float


def resample_weights(n: int, *, block: int = 1, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Bootstrap count matrix (n_boot, n): iid items (block = 1) or a circular block bootstrap.

    The circular block bootstrap (Politis & Romano 1992) draws ⌈n/block⌉ blocks of ``block`` contiguous
    items with wrap-around and keeps the first n, so autocorrelated neighbours (overlapping time-series
    windows) stay together and their dependence is not mistaken for independent evidence.
    """
    rng = np.random.default_rng(seed)
    block = max(1, min(int(block), n))
    n_blocks = math.ceil(n / block)
    starts = rng.integers(0, n, size=(n_boot, n_blocks))
    idx = ((starts[:, :, None] + np.arange(block)) % n).reshape(n_boot, -1)[:, :n]  # (B, n)
    flat = (np.arange(n_boot)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def choose_block(z: np.ndarray, *, overlapping: bool, hint: int = 1) -> int:
    """Bootstrap block length for items in a sequence: 1 for independent items (LM documents); for
    overlapping items (time-series windows) the larger of ``hint`` and the Politis–White (2004, with
    Patton et al. 2009's correction) automatic length for the circular block bootstrap of ``z``,
    the per-item series whose mean is compared, kept to at most n / 5 (five blocks at least).
    """
    n = len(z)
    if not overlapping or n < 10:
        return max(1, min(hint, n))
    from arch.bootstrap import optimal_block_length

    est = float(optimal_block_length(np.asarray(z, dtype=float))["circular"].iloc[0])
    length = max(hint, math.ceil(est) if math.isfinite(est) else 1)
    return int(max(1, min(length, n // 5)))


def stable_seed(*parts: str) -> int:
    """A reproducible resampling seed from names (report reruns give the same intervals)."""
    return zlib.crc32("/".join(parts).encode())


def own_inflation(n: int) -> float:
    """Factor on an arm's own seed variance before it is compared with the pool: 1 + 2 / (n − 1), i.e.
    3 at n = 2, 2 at n = 3, 1.5 at n = 5. An own variance from one or two df is unreliable; the factor keeps
    an arm that is up to 3× noisier (sd) than the others calibrated (docs/statistics.md, Calibration)."""
    return 1.0 + 2.0 / (n - 1)


def seed_pool(per_arm: Mapping[str, Sequence[float]]) -> SeedPool:
    """σ̂²_a = max(pooled, own_inflation(n_a) · own) for arms with ≥ 2 seeds; the pooled value otherwise."""
    own, num, df = {}, 0.0, 0
    for arm, values in per_arm.items():
        v = np.asarray(values, dtype=float)
        if v.size >= 2:
            own[arm] = float(v.var(ddof=1))
            num += (v.size - 1) * own[arm]
            df += v.size - 1
    pooled = num / df if df else math.nan
    var = {arm: max(pooled, own_inflation(len(per_arm[arm])) * own[arm]) if arm in own else pooled
           for arm in per_arm}
    return SeedPool(var, pooled, float(df))


def combine(value: float, v_item: float, v_seed: float, df_item: float, df_seed: float, n: int,
            method: str) -> Estimate:
    """An ``Estimate`` with Welch–Satterthwaite df for v_item (df_item) + v_seed (df_seed)."""
    parts = [(v, d) for v, d in ((v_item, df_item), (v_seed, df_seed)) if v > 0]
    if not math.isfinite(v_seed) or df_seed <= 0:
        df = 0.0  # the seed variance is unknown: no interval
    elif not parts:
        df = math.inf
    else:
        den = sum(v * v / d for v, d in parts)
        df = sum(v for v, _ in parts) ** 2 / den if den > 0 else math.inf
    return Estimate(value, v_item, v_seed, df, n, method)


def _boot_var(reps: list[np.ndarray | None], df_item: float) -> float:
    """Bootstrap variance of the seed-mean, times K / (K − 1) for K = df_item + 1 independent units (items or
    blocks): the bootstrap is a plug-in (ddof = 0) estimate, low by that factor with few units."""
    if not reps or any(r is None for r in reps):
        return 0.0
    mean = np.mean(np.stack(reps), axis=0)  # (B,)
    k = df_item + 1
    return float(np.var(mean[np.isfinite(mean)], ddof=1)) * (k / (k - 1) if math.isfinite(k) and k > 1 else 1.0)


def arm_estimate(runs: Mapping[int, RunValues], var_seed: float, df_seed: float, df_item: float,
                 method: str) -> Estimate:
    """The arm's mean over its seeds with item and seed uncertainty."""
    vals = [r.value for r in runs.values()]
    n = len(vals)
    v_item = _boot_var([r.boot for r in runs.values()], df_item)
    return combine(float(np.mean(vals)) if vals else math.nan, v_item, var_seed / n if n else math.nan,
                   df_item, df_seed, n, method)


def compare(arm: str, runs: Mapping[int, RunValues], other: str, other_runs: Mapping[int, RunValues] | RunValues,
            pool: SeedPool, df_item: float, method: str) -> Comparison:
    """Arm vs the reference (``other_runs`` per seed) or vs a baseline (one ``RunValues`` for all seeds)."""
    baseline = isinstance(other_runs, RunValues)
    seeds = tuple(sorted(runs)) if baseline else tuple(sorted(s for s in runs if s in other_runs))
    ref = {s: other_runs if baseline else other_runs[s] for s in seeds}  # type: ignore[index]
    diffs = tuple(runs[s].value - ref[s].value for s in seeds)
    reps = [None if runs[s].boot is None or ref[s].boot is None else runs[s].boot - ref[s].boot for s in seeds]
    n = len(seeds)
    v_seed = (pool.var[arm] + (0.0 if baseline else pool.var[other])) / n if n else math.nan
    est = combine(float(np.mean(diffs)) if n else math.nan, _boot_var(reps, df_item), v_seed, df_item, pool.df, n,
                  method)
    lo, hi = est.interval()
    return Comparison(arm, other, "baseline" if baseline else "reference", seeds, diffs, est, est.p, lo=lo, hi=hi)


def holm_family(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Holm step-down over the family; each interval gets the level Holm tested its comparison at.

    Sorted by p, the j-th (0-based) of m is tested at alpha / (m − j) until the first non-rejection k;
    every later one gets the level of k. So an interval excludes 0 exactly when p_holm < alpha.
    Comparisons without a p-value keep NaN and a plain (1 − alpha) interval.
    """
    out = list(comparisons)
    idx = [i for i, c in enumerate(out) if math.isfinite(c.p)]
    m = len(idx)
    order = sorted(idx, key=lambda i: out[i].p)
    running, stopped = 0.0, None
    for rank, i in enumerate(order):
        c = out[i]
        running = max(running, min(1.0, (m - rank) * c.p))
        if stopped is None and c.p > alpha / (m - rank):
            stopped = rank
        level = alpha / (m - (rank if stopped is None else stopped))
        lo, hi = c.estimate.interval(level)
        out[i] = replace(c, p_holm=running, alpha=level, lo=lo, hi=hi)
    return out


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


@dataclass(frozen=True)
class MetricResult:
    """Everything the report states about one metric: per-arm estimates and the comparisons."""

    pool: SeedPool
    arms: dict[str, Estimate]
    comparisons: list[Comparison]
    method: str
    n_items: int = 0
    block: int = 1

    def comparison(self, arm: str, kind: str) -> Comparison | None:
        """The arm's comparison with the reference (``kind="reference"``) or its best baseline."""
        return next((c for c in self.comparisons if c.arm == arm and c.kind == kind), None)


def analyze_metric(runs: Mapping[str, Mapping[int, RunValues]], baselines: Mapping[str, RunValues], *,
                   reference: str, best_baseline: str | None, df_item: float, method: str,
                   holm: bool = True, n_items: int = 0, block: int = 1) -> MetricResult:
    """Per-arm estimates, each arm vs the reference and vs the best baseline, Holm over all of them.

    Args:
        runs: arm -> seed -> the run's ``RunValues`` (succeeded runs only; arms with none are skipped).
        baselines: baseline name -> its ``RunValues`` on the same items.
        reference: the reference arm.
        best_baseline: the baseline every arm is compared with (None: no baseline comparison).
        df_item: degrees of freedom of the item part (independent items or blocks, minus 1).
        method: ``METHOD_ITEMS`` or ``METHOD_SEEDS``, named in the table.
        holm: adjust over the family (the primary metric) or keep plain 95 % intervals (descriptive).

    Returns:
        The ``MetricResult``.
    """
    pool = seed_pool({arm: [r.value for r in seeds.values()] for arm, seeds in runs.items() if seeds})
    arms = {arm: arm_estimate(seeds, pool.var[arm], pool.df, df_item, method) for arm, seeds in runs.items() if seeds}
    comps = []
    for arm, seeds in runs.items():
        if not seeds:
            continue
        if arm != reference and runs.get(reference):
            comps.append(compare(arm, seeds, reference, runs[reference], pool, df_item, method))
        if best_baseline is not None and best_baseline in baselines:
            comps.append(compare(arm, seeds, best_baseline, baselines[best_baseline], pool, df_item, method))
    return MetricResult(pool, arms, holm_family(comps) if holm else comps, method, n_items, block)


def run_values(value: float, boot: np.ndarray | None, log: bool) -> RunValues:
    """A run's metric (and replicates) in analysis units: log for log-scale metrics."""
    if not log:
        return RunValues(value, boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        return RunValues(math.log(value) if value > 0 else math.nan, None if boot is None else np.log(boot))
