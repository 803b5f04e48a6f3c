"""Verdict statistics: paired item bootstrap within seeds + pooled seed variance (docs/statistics.md).

Every succeeded run r = (arm, seed) has a value g_r of the metric on the evaluation items (log of the
metric for log-scale metrics) and, from ``items/*.npz``, B bootstrap replicates G_r (B,) of it computed
with one shared set of item resamples (``resample_weights``), so every difference below is paired on
identical items and the baselines' own item noise enters every comparison. A comparison of arm a with
another arm r (the reference, or the runner-up) over their common seeds S (n = |S|), or with a naive
baseline b (a constant across seeds):

    D_s  = g_{a,s} − g_{r,s}   (or g_{a,s} − g_b),           D̄ = mean_s D_s
    v_item = Var_boot(mean_s (G_{a,s} − G_{r,s}))             item sampling, df_item = blocks − 1
    v_seed = σ̂²_D / n          (or σ̂²_a / n)                 seed-to-seed variation of the difference
    σ̂²_D  = max(2 σ²_e, c_n s²_D),  s²_D the sample variance of the per-seed differences D_s
    σ²_e  = residual variance of g_{a,s} = μ_a + β_s + e_{a,s} over the study's arm × seed table, df_e
    σ̂²_a  = max(σ²_pool, c_n s²_a),  σ²_pool = Σ_a (n_a − 1) s²_a / Σ_a (n_a − 1),  df_pool = Σ_a (n_a − 1)
    t = D̄ / √(v_item + v_seed), df by Welch–Satterthwaite; p two-sided.

Arms that share a seed share its data order, masks and the initialisation of common modules, so their
seed effects β_s are shared: a difference between two arms is paired on seeds, and only the arm × seed
residual e enters it (the additive two-way model pools it over every arm, df_e = cells − arms − seeds + 1).
A baseline shares nothing with a seed, so an arm's whole seed variance σ̂²_a (pooled the same way over arms,
df_pool) enters that comparison and the arm's own interval. The max with the comparison's own variance
(times c_n = 1 + 2/(n − 1), for its few df) keeps a pair noisier than the others from borrowing their
smaller variance. v_item is the bootstrap variance times K/(K − 1) for K independent units (items or
blocks). Without per-item files v_item = 0 (seed-level statistics). ``holm_family`` adjusts a family's
p-values (Holm) and gives each comparison the interval level at which Holm tested it, so an interval
excludes 0 exactly when the Holm-adjusted p is below α; the words are read off that interval in
``verdicts.py``.
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
    kind: str  # "reference" | "baseline" | "runner_up" (the best arm vs the second best)
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
    """Seed variances after pooling: per arm (σ̂²_a, with ``pooled`` and its ``df``) for an arm's own
    interval and its baseline comparisons, and the arm × seed residual (σ²_e, ``resid_df``) of the additive
    model for differences between two arms paired on seeds."""

    var: dict[str, float]
    pooled: float
    df: float
    resid: float = math.nan
    resid_df: float = 0.0


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


def seed_pool(per_arm: Mapping[str, Mapping[int, float]]) -> SeedPool:
    """Per arm σ̂²_a = max(pooled, own_inflation(n_a) · own) for arms with ≥ 2 seeds (the pooled value
    otherwise), and the residual variance of the additive arm + seed model over the whole table.

    Args:
        per_arm: arm -> seed -> g (analysis units) of its succeeded runs.
    """
    own, num, df = {}, 0.0, 0
    for arm, values in per_arm.items():
        v = np.asarray(list(values.values()), dtype=float)
        if v.size >= 2:
            own[arm] = float(v.var(ddof=1))
            num += (v.size - 1) * own[arm]
            df += v.size - 1
    pooled = num / df if df else math.nan
    var = {arm: max(pooled, own_inflation(len(per_arm[arm])) * own[arm]) if arm in own else pooled
           for arm in per_arm}
    resid, resid_df = residual_variance(per_arm)
    return SeedPool(var, pooled, float(df), resid, resid_df)


def residual_variance(per_arm: Mapping[str, Mapping[int, float]]) -> tuple[float, float]:
    """σ²_e and its df of g_{a,s} = μ_a + β_s + e_{a,s} fitted by least squares to the cells present
    (an unbalanced table is fine: df = cells − rank of the design); (nan, 0) without residual df."""
    cells = [(a, s, float(v)) for a, seeds in per_arm.items() for s, v in seeds.items() if math.isfinite(v)]
    arms = sorted({a for a, _, _ in cells})
    seeds = sorted({s for _, s, _ in cells})
    if not cells:
        return math.nan, 0.0
    x = np.zeros((len(cells), len(arms) + len(seeds)))
    for i, (a, s, _) in enumerate(cells):
        x[i, arms.index(a)] = 1.0
        x[i, len(arms) + seeds.index(s)] = 1.0
    y = np.array([v for _, _, v in cells])
    df = len(cells) - int(np.linalg.matrix_rank(x))
    if df <= 0:
        return math.nan, 0.0
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(np.sum((y - x @ coef) ** 2) / df), float(df)


def paired_seed_var(diffs: Sequence[float], pool: SeedPool) -> tuple[float, float]:
    """(σ̂²_D, df): the seed variance of one per-seed difference D_s between two arms that share seeds.

    The pooled value is 2 σ²_e (each arm's residual, shared seed effects cancelled); the comparison's own
    sample variance, inflated by c_n, wins when larger. When the table holds no more residual df than the
    pair itself (two arms), the pair's own variance is the estimate (a paired t on n − 1 df).
    """
    d = np.asarray(diffs, dtype=float)
    own = float(d.var(ddof=1)) if d.size >= 2 else math.nan
    if not (pool.resid_df > max(0, d.size - 1) and math.isfinite(pool.resid)):
        return own, float(d.size - 1)
    pooled = 2.0 * pool.resid
    return (max(pooled, own_inflation(d.size) * own) if math.isfinite(own) else pooled), pool.resid_df


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
            pool: SeedPool, df_item: float, method: str, kind: str = "") -> Comparison:
    """Arm vs another arm (``other_runs`` per seed, paired on seeds) or vs a baseline (one ``RunValues`` for
    all seeds); ``kind`` defaults to ``reference`` / ``baseline``."""
    baseline = isinstance(other_runs, RunValues)
    seeds = tuple(sorted(runs)) if baseline else tuple(sorted(s for s in runs if s in other_runs))
    ref = {s: other_runs if baseline else other_runs[s] for s in seeds}  # type: ignore[index]
    diffs = tuple(runs[s].value - ref[s].value for s in seeds)
    reps = [None if runs[s].boot is None or ref[s].boot is None else runs[s].boot - ref[s].boot for s in seeds]
    n = len(seeds)
    if baseline:
        var_seed, df_seed = pool.var[arm], pool.df
    else:
        var_seed, df_seed = paired_seed_var(diffs, pool)
    est = combine(float(np.mean(diffs)) if n else math.nan, _boot_var(reps, df_item),
                  var_seed / n if n else math.nan, df_item, df_seed, n, method)
    lo, hi = est.interval()
    return Comparison(arm, other, kind or ("baseline" if baseline else "reference"), seeds, diffs, est, est.p,
                      lo=lo, hi=hi)


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


@dataclass(frozen=True)
class MetricResult:
    """Everything the report states about one metric: per-arm estimates and the comparisons (each arm vs
    the reference and vs the best baseline, and the best arm vs the runner-up: one Holm family)."""

    pool: SeedPool
    arms: dict[str, Estimate]
    comparisons: list[Comparison]
    method: str
    n_items: int = 0
    block: int = 1
    ranking: tuple[str, ...] = ()  # arms by their estimate, best first

    def comparison(self, arm: str, kind: str) -> Comparison | None:
        """The arm's comparison with the reference (``kind="reference"``), its best baseline (``baseline``)
        or, for the best arm, the runner-up (``runner_up``)."""
        return next((c for c in self.comparisons if c.arm == arm and c.kind == kind), None)


def rank_arms(arms: Mapping[str, Estimate], mode: str) -> tuple[str, ...]:
    """Arms with a finite estimate, best first (``mode`` min: lowest first); ties keep the study order."""
    done = [a for a, e in arms.items() if math.isfinite(e.value)]
    return tuple(sorted(done, key=lambda a: arms[a].value if mode == "min" else -arms[a].value))


def analyze_metric(runs: Mapping[str, Mapping[int, RunValues]], baselines: Mapping[str, RunValues], *,
                   reference: str, best_baseline: str | None, df_item: float, method: str,
                   holm: bool = True, n_items: int = 0, block: int = 1, mode: str = "min") -> MetricResult:
    """Per-arm estimates, each arm vs the reference and vs the best baseline, and the best arm vs the
    runner-up when neither is the reference (that pair is then already compared); Holm over all of them.

    Args:
        runs: arm -> seed -> the run's ``RunValues`` (succeeded runs only; arms with none are skipped).
        baselines: baseline name -> its ``RunValues`` on the same items.
        reference: the reference arm.
        best_baseline: the baseline every arm is compared with (None: no baseline comparison).
        df_item: degrees of freedom of the item part (independent items or blocks, minus 1).
        method: ``METHOD_ITEMS`` or ``METHOD_SEEDS``, named in the table.
        holm: adjust over the family (the primary metric) or keep plain 95 % intervals (descriptive).
        n_items: evaluation items (shown in the report).
        block: bootstrap block length (shown in the report).
        mode: ``min`` or ``max``: which end of the ranking is best.

    Returns:
        The ``MetricResult``.
    """
    done = {arm: seeds for arm, seeds in runs.items() if seeds}
    pool = seed_pool({arm: {s: r.value for s, r in seeds.items()} for arm, seeds in done.items()})
    arms = {arm: arm_estimate(seeds, pool.var[arm], pool.df, df_item, method) for arm, seeds in done.items()}
    comps = []
    for arm, seeds in done.items():
        if arm != reference and reference in done:
            comps.append(compare(arm, seeds, reference, done[reference], pool, df_item, method))
        if best_baseline is not None and best_baseline in baselines:
            comps.append(compare(arm, seeds, best_baseline, baselines[best_baseline], pool, df_item, method))
    ranking = rank_arms(arms, mode)
    if len(ranking) >= 2 and reference not in ranking[:2]:
        best, second = ranking[:2]
        comps.append(compare(best, done[best], second, done[second], pool, df_item, method, kind="runner_up"))
    return MetricResult(pool, arms, holm_family(comps) if holm else comps, method, n_items, block, ranking)


def run_values(value: float, boot: np.ndarray | None, log: bool) -> RunValues:
    """A run's metric (and replicates) in analysis units: log for log-scale metrics."""
    if not log:
        return RunValues(value, boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        return RunValues(math.log(value) if value > 0 else math.nan, None if boot is None else np.log(boot))
