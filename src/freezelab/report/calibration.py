"""Simulated studies for the calibration of the verdict statistics (tests and benchmarks/calibration.py).

A simulated study has arms × seeds runs scored on one fixed set of evaluation items, plus a naive
baseline scored on the same items, generated from a model whose sizes come from the real quick demos
(docs/statistics.md, "Calibration"). Per run (arm a, seed s) and item i, in the metric's log units:

    x_{a,s,i} = μ_a + d_i + e_{a,i} + v_s + u_{a,s} + w_{a,s,i}          baseline: μ_b + d_i + e_{b,i}

d_i item difficulty (shared by every arm and the baseline), e_{a,i} arm × item interaction (fixed across
seeds), v_s ~ N(0, σ_v²) the seed effect every arm shares (same data order, masks and initialisation of
common modules for a given seed), u_{a,s} ~ N(0, σ_a²) the run's own seed effect, w_{a,s,i} the run × item
interaction. Along the
item axis d, e and w may be AR(1) (time-series windows overlap; LM documents are independent). LM items
carry token counts (heterogeneous when ``count_sd`` > 0) and the run's
per-document summed log-loss; time-series items carry masked counts and squared errors whose log-mean
is x. Each simulated study goes through the shipped code: ``inference.resample_weights``,
``MetricDef.value`` and ``inference.analyze_metric``; the naive methods below exist only to show that
the simulation can fail a method (``independent_seeds`` is the report's scheme before seed effects were
paired: calibrated, but blind to a difference hidden under a large shared seed effect).

A false verdict is any better/worse verdict of a null study, the best-vs-runner-up comparison (a "best"
claim) included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

from freezelab.report import inference as inf
from freezelab.tracking.items import MetricDef

LOSS = MetricDef(("num",), ("den",), (1.0,))


@dataclass(frozen=True)
class Regime:
    """One simulated situation (sizes in the metric's log units)."""

    name: str
    kind: str = "lm"  # "lm": log-loss per token (linear metric = log PPL); "ts": log of a ratio MSE
    n_items: int = 10
    n_arms: int = 5
    seed_sd: float = 0.04  # σ_a of every arm (demo: pooled 0.037)
    shared_sd: float = 0.0  # σ_v: the seed effect all arms share
    noisy: dict[int, float] = field(default_factory=dict)  # arm index -> its own σ_a (heterogeneous case)
    item_sd: float = 0.45  # d_i
    arm_item_sd: float = 0.12  # e_{a,i}
    base_item_sd: float = 0.12  # e_{b,i} of the baseline
    run_item_sd: float = 0.07  # w_{a,s,i}
    rho: float = 0.0  # AR(1) correlation along items of d (its autocorrelated share, ``ar_share``)
    ar_share: float = 1.0  # share of d's variance that is AR(1); the rest is independent
    rho_arm: float = 0.0  # AR(1) correlation of e along items
    rho_run: float = 0.0  # AR(1) correlation of w along items
    count_sd: float = 0.0  # log-sd of per-item counts (tokens / masked entries)
    count: float = 223.0  # median count
    overlap: int = 1  # consecutive items sharing data (time series: window span / anchor stride)


def _ar1(rng: np.random.Generator, shape: tuple[int, ...], rho: float, share: float = 1.0) -> np.ndarray:
    """Unit-variance series along the last axis: √share · stationary AR(1) + √(1 − share) · white noise."""
    z = rng.normal(size=shape)
    if rho == 0:
        return z
    z[..., 0] /= math.sqrt(1 - rho * rho)  # start in the stationary distribution
    out = lfilter([math.sqrt(1 - rho * rho)], [1.0, -rho], z, axis=-1)
    return math.sqrt(share) * out + math.sqrt(1 - share) * rng.normal(size=shape)


def simulate(regime: Regime, n_seeds: int, rng: np.random.Generator, effect: float = 0.0) -> tuple[
        dict[int, dict[int, dict[str, np.ndarray]]], dict[str, np.ndarray]]:
    """One study's item columns: ({arm: {seed: {"num", "den"}}}, baseline columns); arm 1 shifted by ``effect``."""
    r, n = regime, regime.n_items
    counts = r.count * np.exp(r.count_sd * rng.normal(size=n) - r.count_sd ** 2 / 2)
    counts = np.maximum(1.0, np.round(counts))
    d = r.item_sd * _ar1(rng, (n,), r.rho, r.ar_share)
    e = _ar1(rng, (r.n_arms + 1, n), r.rho_arm)  # last row: the baseline
    e[:-1] *= r.arm_item_sd
    e[-1] *= r.base_item_sd
    runs: dict[int, dict[int, dict[str, np.ndarray]]] = {}
    v = r.shared_sd * rng.normal(size=n_seeds)  # shared by every arm of a seed, never by the baseline
    for a in range(r.n_arms):
        sd = r.noisy.get(a, r.seed_sd)
        u = sd * rng.normal(size=n_seeds)
        w = r.run_item_sd * _ar1(rng, (n_seeds, n), r.rho_run)
        # time series: the population MSE is E exp(x), so the arm's own log-normal parts are centred
        mu = (effect if a == 1 else 0.0) - (r.kind == "ts") * (r.arm_item_sd ** 2 + r.run_item_sd ** 2) / 2
        runs[a] = {s: _columns(r, counts, mu + d + e[a] + v[s] + u[s] + w[s], rng) for s in range(n_seeds)}
    return runs, _columns(r, counts, d + e[-1] - (r.kind == "ts") * r.base_item_sd ** 2 / 2, rng)


def _columns(r: Regime, counts: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if r.kind == "lm":  # per-document summed log-loss; the metric (Σ num / Σ den) is the log PPL
        return {"num": counts * (7.3 + x), "den": counts}
    # time series: squared errors with log-mean x; the metric is the MSE, analysed in log units
    return {"num": counts * np.exp(x), "den": counts}


# Sizes from the quick demos (docs/statistics.md, "Calibration"): LM 10 test documents of 223 tokens, per-arm
# seed sd of log PPL 0.006-0.06 (pooled 0.037), paired per-document sd ~0.17; time series 200 test windows
# (64 overlapping), per-window log-MSE sd ~1.1, arm x window differences AR(1) ~0.87, seed sd ~0.02-0.05.
TS = {"kind": "ts", "n_items": 200, "n_arms": 7, "rho": 0.95, "ar_share": 0.55, "rho_arm": 0.87, "rho_run": 0.1,
      "item_sd": 1.1, "arm_item_sd": 0.2, "base_item_sd": 1.2, "run_item_sd": 0.14, "count": 125.0,
      "count_sd": 0.3, "overlap": 64}
REGIMES = (
    Regime("lm_no_seed_effect", seed_sd=0.0),
    Regime("lm_seed_effect"),
    Regime("lm_demo_heterogeneous", noisy={0: 0.06, 1: 0.022, 2: 0.0065, 3: 0.007, 4: 0.053}),
    Regime("lm_two_arms", n_arms=2),
    Regime("lm_200_docs_3x_noisy_arm", n_items=200, count_sd=0.8, noisy={1: 0.12}),
    Regime("lm_200_docs_3x_noisy_reference", n_items=200, count_sd=0.8, noisy={0: 0.12}),
    Regime("lm_200_docs_2x_noisy_reference", n_items=200, count_sd=0.8, noisy={0: 0.08}),
    Regime("ts_seed_effect", seed_sd=0.03, **TS),
    Regime("ts_no_seed_effect", seed_sd=0.0, **TS),
    # Issue 17's case: arms that move together with the seed (seed variance 0.0088 of the log metric) while their
    # per-seed differences agree (+0.6 %, +0.9 %) and the items barely separate them (item variance 1.7e-05):
    # a large shared seed effect over small own ones, close arms on the items.
    Regime("lm_shared_seed_effect", seed_sd=0.006, shared_sd=0.094, arm_item_sd=0.02, run_item_sd=0.01),
    Regime("lm_shared_seed_effect_noisy_arm", seed_sd=0.006, shared_sd=0.094, arm_item_sd=0.02, run_item_sd=0.01,
           noisy={1: 0.018}),
    Regime("ts_shared_seed_effect", seed_sd=0.006, shared_sd=0.094,
           **{**TS, "arm_item_sd": 0.02, "run_item_sd": 0.01}),
)


def regime(name: str) -> Regime:
    """One of ``REGIMES`` by name."""
    return next(r for r in REGIMES if r.name == name)


def block_length(regime: Regime, runs, base) -> int:
    """The block the shipped code picks for these items (``inference.choose_block``): time-series windows
    overlap, LM documents do not; z = the reference arm's per-item mean minus the baseline's."""
    ref = np.mean([c["num"] / c["den"] for c in runs[0].values()], axis=0)
    return inf.choose_block(ref - base["num"] / base["den"], overlapping=regime.kind == "ts", hint=regime.overlap)


# ---------------------------------------------------------------------------------------------- methods

def shipped(regime: Regime, runs, base, weights: np.ndarray, df_item: float):
    """The report's own statistics (``inference.analyze_metric``, Holm over the family)."""
    log = regime.kind == "ts"
    vals = {f"a{a}": {s: inf.run_values(LOSS.value(c), LOSS.value(c, weights), log) for s, c in seeds.items()}
            for a, seeds in runs.items()}
    b = {"baseline": inf.run_values(LOSS.value(base), LOSS.value(base, weights), log)}
    return inf.analyze_metric(vals, b, reference="a0", best_baseline="baseline", df_item=df_item,
                              method=inf.METHOD_ITEMS, mode="min").comparisons


def independent_seeds(regime: Regime, runs, base, weights: np.ndarray, df_item: float) -> list[inf.Comparison]:
    """Naive: the shipped scheme with the arms' seed effects taken as independent, v_seed = (σ̂²_a + σ̂²_r)/n
    for a difference of two arms (the report before pairing): calibrated, blind under a shared seed effect."""
    log = regime.kind == "ts"
    vals = {f"a{a}": {s: inf.run_values(LOSS.value(c), LOSS.value(c, weights), log) for s, c in seeds.items()}
            for a, seeds in runs.items()}
    b = inf.run_values(LOSS.value(base), LOSS.value(base, weights), log)
    pool = inf.seed_pool({a: {s: r.value for s, r in seeds.items()} for a, seeds in vals.items()})
    comps = []
    for arm, seeds in vals.items():
        comps.append(inf.compare(arm, seeds, "baseline", b, pool, df_item, "independent"))
        if arm != "a0":
            c = inf.compare(arm, seeds, "a0", vals["a0"], pool, df_item, "independent")  # its diffs and v_item
            n = len(c.diffs)
            est = inf.combine(c.estimate.value, c.estimate.v_item, (pool.var[arm] + pool.var["a0"]) / n, df_item,
                              pool.df, n, "independent")
            lo, hi = est.interval()
            comps.append(inf.Comparison(arm, "a0", "reference", c.seeds, c.diffs, est, est.p, lo=lo, hi=hi))
    return inf.holm_family(comps)


def items_only(regime: Regime, runs, base, weights: np.ndarray) -> list[inf.Comparison]:
    """Naive: item bootstrap only (seeds treated as more items), normal critical values, Holm."""
    log = regime.kind == "ts"
    vals = {f"a{a}": {s: inf.run_values(LOSS.value(c), LOSS.value(c, weights), log) for s, c in seeds.items()}
            for a, seeds in runs.items()}
    b = inf.run_values(LOSS.value(base), LOSS.value(base, weights), log)
    zero = inf.SeedPool({k: 0.0 for k in vals}, 0.0, math.inf)
    comps = []
    for arm, seeds in vals.items():
        if arm != "a0":
            comps.append(inf.compare(arm, seeds, "a0", vals["a0"], zero, math.inf, "items only"))
        comps.append(inf.compare(arm, seeds, "baseline", b, zero, math.inf, "items only"))
    return inf.holm_family(comps)


def hierarchical_bootstrap(regime: Regime, runs, base, weights: np.ndarray,
                           rng: np.random.Generator) -> list[inf.Comparison]:
    """Naive: resample seeds with replacement, then items; percentile p-values, Holm."""
    log = regime.kind == "ts"
    g = {a: np.stack([_g(LOSS.value(c, weights), log) for c in seeds.values()]) for a, seeds in runs.items()}
    gb = _g(LOSS.value(base, weights), log)
    n_boot, n_seeds = weights.shape[0], g[0].shape[0]
    comps = []
    for a in g:
        for other in ([0] if a != 0 else []) + ["baseline"]:
            pick = rng.integers(0, n_seeds, size=(n_boot, n_seeds))  # paired seeds
            ref = gb[:, None] if other == "baseline" else g[other].T[np.arange(n_boot)[:, None], pick]
            reps = (g[a].T[np.arange(n_boot)[:, None], pick] - ref).mean(axis=1)  # (B,)
            p = min(1.0, 2 * min(np.mean(reps <= 0), np.mean(reps >= 0)))
            est = inf.Estimate(float(reps.mean()), float(reps.var()), 0.0, math.inf, n_seeds, "hier. bootstrap")
            comps.append(inf.Comparison(f"a{a}", str(other), "x", (), (), est, max(p, 1.0 / n_boot)))
    return inf.holm_family(comps)


def _g(x: np.ndarray, log: bool) -> np.ndarray:
    return np.log(x) if log else x


# ---------------------------------------------------------------------------------------------- rates

@dataclass(frozen=True)
class Rates:
    """Outcome rates over simulated studies (with their Monte-Carlo standard errors)."""

    studies: int
    any_false: float  # null studies: share with at least one better/worse verdict (family-wise)
    power: float  # effect studies: share where arm 1 is called better than the reference
    coverage: float  # effect studies: share whose 95 % interval of arm 1 vs reference holds the effect

    def mc_se(self, rate: float) -> float:
        """Binomial Monte-Carlo standard error of a rate."""
        return math.sqrt(max(rate * (1 - rate), 1e-12) / self.studies)


def false_rate(regime: Regime, n_seeds: int, n_studies: int, method: str = "shipped", seed: int = 0) -> float:
    """Share of null studies (every arm and the baseline equal) with any better/worse verdict."""
    rng = np.random.default_rng([seed, n_seeds, n_studies])
    hits = 0
    for _ in range(n_studies):
        comps = _run(regime, n_seeds, rng, 0.0, method)
        hits += any(c.decided for c in comps)
    return hits / n_studies


def effect_rates(regime: Regime, n_seeds: int, n_studies: int, effect: float, seed: int = 1,
                 method: str = "shipped") -> tuple[float, float]:
    """(power, coverage) of a method (default the shipped one) when arm 1 is better than the reference by
    ``effect``.

    The effect is a decrease of the log metric (lower is better); coverage is that of the plain 95 %
    interval of arm 1 vs the reference.
    """
    rng = np.random.default_rng([seed, n_seeds, n_studies])
    found = covered = 0
    for _ in range(n_studies):
        comps = _run(regime, n_seeds, rng, -effect, method)
        c = next(c for c in comps if c.arm == "a1" and c.kind == "reference")
        found += c.decided and c.hi < 0
        lo, hi = c.estimate.interval()
        covered += lo <= -effect <= hi
    return found / n_studies, covered / n_studies


def _run(regime: Regime, n_seeds: int, rng: np.random.Generator, effect: float, method: str):
    runs, base = simulate(regime, n_seeds, rng, effect)
    block = block_length(regime, runs, base)
    weights = inf.resample_weights(regime.n_items, block=block, n_boot=inf.N_BOOT, seed=int(rng.integers(2**31)))
    df_item = math.ceil(regime.n_items / block) - 1
    if method == "shipped":
        return shipped(regime, runs, base, weights, df_item)
    if method == "independent_seeds":
        return independent_seeds(regime, runs, base, weights, df_item)
    if method == "items_only":
        return items_only(regime, runs, base, weights)
    if method == "items_only_iid":
        return items_only(regime, runs, base, inf.resample_weights(regime.n_items, seed=int(rng.integers(2**31))))
    if method == "hierarchical":
        return hierarchical_bootstrap(regime, runs, base, weights, rng)
    raise ValueError(f"unknown method {method!r}")
