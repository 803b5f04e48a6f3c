"""The verdict statistics (report/inference.py) against hand computation, and the one decision rule:
a verdict says better/worse exactly when the printed interval excludes 0 (and then Holm p < 0.05)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures

from report_fixtures import make_demo_study  # noqa: E402

from freezelab.report import inference as inf  # noqa: E402
from freezelab.report import verdicts as vd  # noqa: E402
from freezelab.report.aggregate import load_study  # noqa: E402
from freezelab.report.warnings import full_analysis  # noqa: E402


def test_iid_weights_are_multinomial_and_blocks_keep_neighbours_together():
    w = inf.resample_weights(50, n_boot=200, seed=1)
    assert w.shape == (200, 50) and (w.sum(axis=1) == 50).all()
    wb = inf.resample_weights(50, block=10, n_boot=200, seed=1)
    assert (wb.sum(axis=1) == 50).all()
    # with blocks of 10 the counts of neighbours move together: strongly correlated, unlike iid counts
    corr_iid = np.corrcoef(w[:, 20], w[:, 21])[0, 1]
    corr_blk = np.corrcoef(wb[:, 20], wb[:, 21])[0, 1]
    assert abs(corr_iid) < 0.2 and corr_blk > 0.7


def test_seed_pool_by_hand():
    per_arm = {"a": {0: 1.0, 1: 1.2}, "b": {0: 2.0, 1: 2.0}, "c": {0: 0.0, 1: 1.0, 2: 2.0}, "d": {0: 5.0}}
    pool = inf.seed_pool(per_arm)
    own = {"a": 0.02, "b": 0.0, "c": 1.0}
    pooled = (1 * own["a"] + 1 * own["b"] + 2 * own["c"]) / 4
    assert pool.df == 4 and pool.pooled == pytest.approx(pooled)
    assert pool.var["a"] == pytest.approx(pooled)  # 3 · 0.02 < pooled
    assert pool.var["c"] == pytest.approx(2.0 * 1.0)  # n = 3: own × (1 + 2/2) exceeds the pool
    assert pool.var["d"] == pytest.approx(pooled)  # one seed: the pool


def test_paired_residual_is_the_two_way_anova_residual():
    """Balanced arm × seed table: residual = y − row mean − column mean + grand mean, df (A − 1)(S − 1); an
    arm with one seed adds a cell and a parameter, so it changes neither."""
    rng = np.random.default_rng(4)
    y = rng.normal(size=(4, 3)) + rng.normal(size=3) * 5  # large shared seed effects
    table = {f"a{i}": {s: float(y[i, s]) for s in range(3)} for i in range(4)}
    r = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
    resid, df = inf.residual_variance(table)
    assert df == 6 and resid == pytest.approx((r ** 2).sum() / 6)
    assert inf.residual_variance({**table, "one": {1: 9.0}}) == pytest.approx((resid, 6.0))
    # the shared seed effect (sd 5) is in the per-arm variances but not in the residual
    assert min(inf.seed_pool(table).var.values()) > 10 * resid


def test_comparison_combines_item_and_seed_variance_with_satterthwaite_df():
    boot_a = np.random.default_rng(0).normal(0, 0.1, 1000)
    runs = {0: inf.RunValues(1.0, boot_a + 1.0), 1: inf.RunValues(1.2, boot_a + 1.2)}
    ref = {0: inf.RunValues(0.0, np.zeros(1000)), 1: inf.RunValues(0.1, np.zeros(1000) + 0.1)}
    pool = inf.SeedPool({"a": 0.05, "r": 0.03}, 0.04, 6.0, resid=0.02, resid_df=5.0)
    c = inf.compare("a", runs, "r", ref, pool, df_item=9.0, method="x")
    v_item = np.var(boot_a, ddof=1) * 10 / 9
    v_seed = max(2 * 0.02, 3 * np.var([1.0, 1.1], ddof=1)) / 2  # paired: 2 σ²_e or c_n s²_D, over n
    df = (v_item + v_seed) ** 2 / (v_item ** 2 / 9 + v_seed ** 2 / 5)
    assert c.diffs == pytest.approx((1.0, 1.1)) and c.estimate.value == pytest.approx(1.05)
    assert (c.estimate.v_item, c.estimate.v_seed, c.estimate.df) == pytest.approx((v_item, v_seed, df))
    half = stats.t.ppf(0.975, df) * math.sqrt(v_item + v_seed)
    assert (c.lo, c.hi) == pytest.approx((1.05 - half, 1.05 + half))
    # against a baseline nothing is shared with the seed: the arm's whole seed variance, pooled df
    b = inf.compare("a", runs, "base", inf.RunValues(0.0, np.zeros(1000)), pool, df_item=9.0, method="x")
    assert (b.kind, b.estimate.v_seed) == ("baseline", pytest.approx(0.05 / 2))
    # a pair noisier than the pool keeps its own variance (c_n = 3 at n = 2)
    noisy = {0: inf.RunValues(0.0, None), 1: inf.RunValues(2.0, None)}
    own = inf.compare("a", noisy, "r", {0: inf.RunValues(0.0, None), 1: inf.RunValues(0.0, None)}, pool, 0.0, "x")
    assert own.estimate.v_seed == pytest.approx(3 * 2.0 / 2)


def _family(rng: np.random.Generator, m: int) -> list[inf.Comparison]:
    out = []
    for i in range(m):
        est = inf.Estimate(float(rng.normal(0, 1.5)), float(rng.uniform(0.1, 1)), float(rng.uniform(0, 1)),
                           float(rng.uniform(2, 30)), 2, "x")
        out.append(inf.Comparison(f"a{i}", "r", "reference", (0, 1), (1.0, 2.0), est, est.p))
    return out


def test_holm_intervals_exclude_zero_exactly_when_holm_rejects():
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(300):
        fam = inf.holm_family(_family(rng, int(rng.integers(1, 10))))
        ps = [c.p for c in fam]
        m = len(ps)
        order = np.argsort(ps)
        adj = np.maximum.accumulate([min(1.0, (m - j) * ps[i]) for j, i in enumerate(order)])
        for j, i in enumerate(order):
            assert fam[i].p_holm == pytest.approx(adj[j])  # Holm by hand
            assert fam[i].decided == (fam[i].p_holm < inf.ALPHA), (ps, fam[i])
            seen.add(fam[i].decided)
    assert seen == {True, False}  # both halves exercised


@pytest.mark.parametrize("diffs, lo, hi, mode, expected", [
    ((-0.4, -0.35), -0.6, -0.1, "min", "better"),
    ((-0.4, -0.35), -0.6, -0.1, "max", "worse"),
    ((0.3, 0.2), 0.05, 0.5, "min", "worse"),
    ((0.3, 0.2), -0.05, 0.5, "min", "inconclusive"),  # every seed worse, interval includes 0
    ((0.3, -0.2), -0.4, 0.5, "min", "no_difference"),
    ((0.3,), math.nan, math.nan, "min", "insufficient"),
])
def test_verdict_words_follow_the_interval(diffs, lo, hi, mode, expected):
    est = inf.Estimate(float(np.mean(diffs)), 0.01, 0.01, 5.0, len(diffs), "x")
    c = inf.Comparison("a", "r", "reference", tuple(range(len(diffs))), diffs, est, est.p, lo=lo, hi=hi)
    assert vd.verdict(c, mode) == expected


def test_demo_verdicts_agree_with_their_intervals_and_seed_facts(tmp_path):
    """The issue's case: tied_frozen is 30-36 % better than kn_bigram in both seeds; it must be called
    better than kn_bigram, and no arm whose interval lies wholly on the better side is called no skill."""
    a = full_analysis(load_study(make_demo_study(tmp_path)))
    m = a.primary
    assert m.key == "test/ppl" and [x.key for x in a.metrics] == ["test/ppl", "test/acc"]  # loss = PPL: one row
    tf = a.arm_stat(m, "tied_frozen")
    assert tf.baseline[0] == "kn_bigram" and tf.skill == "better" and tf.vs_base.hi < 0
    assert a.arm_stat(m, "random_tied").skill == "worse" and a.arm_stat(m, "random_tied").vs_base.lo > 0
    for arm in a.n_ok:
        st = a.arm_stat(m, arm)
        for c, word in ((st.vs_ref, st.verdict), (st.vs_base, st.skill)):
            if c is None:
                continue
            assert (word in ("better", "worse")) == c.decided  # never noise for a one-sided interval
            assert (word in ("better", "worse")) == (c.p_holm < 0.05)  # never a result for noise
            if word == "better":
                assert all(d < 0 for d in c.diffs) or c.hi < 0
    assert a.family_size() == 9 + (a.best[m.key].runner_up != "tied_frozen" and a.best[m.key].arm != "tied_frozen")
