"""Seeds until decided (report/sequential.py): the e-value is the Bayes factor it claims to be, its error
rate holds under optional stopping (measured by simulation, where repeated looks at a fixed-n t-test fail),
it has power, and the power advice's seed count decides the effect it names."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sps

from freezelab.report.sequential import ALPHA, MIN_SEEDS, decide, safe_t_evalue, seeds_to_decide

MAX_SEEDS = 20


def test_evalue_is_the_bayes_factor_of_the_t_statistic_by_numerical_integration():
    """E_n = ∫ nct(t; ν, δ√n) N(δ; 0, g) dδ / t(t; ν), computed here by quadrature, not by the formula."""
    rng = np.random.default_rng(0)
    for n, shift in ((3, 0.0), (5, 0.8), (8, 0.3), (12, 1.5)):
        d = rng.normal(shift, 1.0, n)
        t = math.sqrt(n) * d.mean() / d.std(ddof=1)
        num, _ = integrate.quad(lambda delta, t=t, n=n: sps.nct.pdf(t, n - 1, delta * math.sqrt(n))
                                * sps.norm.pdf(delta), -40, 40, limit=200)
        assert safe_t_evalue(d) == pytest.approx(num / sps.t.pdf(t, n - 1), rel=1e-6), n


def _sequential(rng: np.random.Generator, effects: list[float], sims: int) -> tuple[np.ndarray, np.ndarray]:
    """Per simulated study: each arm's verdict at stopping (+1 better, −1 worse, 0 undecided) and the seed
    count it stopped at; seeds are added one at a time from MIN_SEEDS until every arm is decided or
    MAX_SEEDS. The differences share a random scale per study (the seed noise of one study)."""
    verdicts = np.zeros((sims, len(effects)), dtype=int)
    stops = np.zeros(sims, dtype=int)
    for s in range(sims):
        scale = math.exp(rng.normal(-4, 1))
        d = {f"a{i}": (rng.normal(eff, 1.0, MAX_SEEDS) * scale).tolist() for i, eff in enumerate(effects)}
        for n in range(MIN_SEEDS, MAX_SEEDS + 1):
            got = decide({a: v[:n] for a, v in d.items()}, reference="r", metric="m", mode="min")
            if all(x.decided for x in got) or n == MAX_SEEDS:
                verdicts[s] = [{"better": 1, "worse": -1}.get(x.verdict, 0) for x in got]
                stops[s] = n
                break
    return verdicts, stops


def test_false_verdicts_stay_below_alpha_when_stopping_whenever_decided():
    rng = np.random.default_rng(1)
    verdicts, _ = _sequential(rng, [0.0], sims=3000)
    rate = float(np.mean(verdicts[:, 0] != 0))
    assert rate <= ALPHA, rate
    # three arms, all null: the family (any false verdict) is held at α too
    verdicts, stops = _sequential(rng, [0.0, 0.0, 0.0], sims=1500)
    assert float(np.mean((verdicts != 0).any(axis=1))) <= ALPHA
    assert np.all(stops == MAX_SEEDS) or np.mean(stops == MAX_SEEDS) > 0.9  # nothing to decide: runs to N


def test_repeated_looks_at_a_fixed_n_t_test_would_not_hold_alpha():
    """The procedure the issue rules out, on the same simulated data: a t-test at every look from 3 seeds."""
    rng = np.random.default_rng(1)
    d = rng.normal(0, 1.0, (3000, MAX_SEEDS)) * np.exp(rng.normal(-4, 1, (3000, 1)))
    looks = np.stack([sps.ttest_1samp(d[:, :n], 0, axis=1).pvalue < ALPHA for n in range(MIN_SEEDS, MAX_SEEDS + 1)])
    rate = float(looks.any(axis=0).mean())
    assert rate > 2 * ALPHA, rate  # it calls noise a result far more often than it claims


def test_a_clear_effect_is_decided_early_in_its_direction_and_the_stopping_count_is_reported():
    rng = np.random.default_rng(2)
    verdicts, stops = _sequential(rng, [-1.5], sims=500)     # the arm lower (better) by 1.5 seed sd
    assert np.mean(verdicts[:, 0] == 1) >= 0.8 and not np.any(verdicts[:, 0] == -1)
    assert np.median(stops) <= 8, np.median(stops)
    verdicts, _ = _sequential(rng, [1.5], sims=300)          # higher = worse for a "min" metric
    assert np.mean(verdicts[:, 0] == -1) >= 0.8


def test_too_few_seeds_decide_nothing_whatever_the_data():
    assert not decide({"a": [-1.0, -1.0001]}, reference="r", metric="m", mode="min")[0].decided
    assert safe_t_evalue([-1.0, -1.0, -1.0, -1.0]) < 1 / ALPHA        # 4 seeds cannot reach 20
    assert decide({"a": [-1.0, -1.01, -0.99, -1.0, -1.02]}, reference="r", metric="m", mode="min")[0].verdict == \
        "better"


def test_seeds_to_decide_gives_the_power_it_promises_by_simulation():
    """An effect of the size the advice names, at the seed count it names, is decided (fixed-n t interval
    excludes 0) in about 80 % of studies; with half the seeds clearly less often."""
    rng = np.random.default_rng(3)
    sd_seed, n_now, effect = 0.05, 3, 0.06
    n_need = int(seeds_to_decide(effect, v_item=0.0, v_seed=sd_seed**2 / n_now, n=n_now))
    assert n_need > n_now

    def power(n: int) -> float:
        d = rng.normal(effect, sd_seed, (4000, n))
        return float(np.mean(sps.ttest_1samp(d, 0, axis=1).pvalue < ALPHA))
    assert 0.7 <= power(n_need) <= 0.95 and power(max(n_need // 2, 2)) < 0.65
    # item noise larger than the effect can be decided by: no number of seeds helps
    assert seeds_to_decide(effect, v_item=effect**2, v_seed=1e-4, n=3) == math.inf


def test_the_report_gives_power_advice_beside_every_undecided_comparison_only(tmp_path):
    """Demo study (2 seeds): an inconclusive and a no-difference arm get the interval they rule out and a
    seed count above 2; the decided arms get none; the Japanese page says the same."""
    import re

    from freezelab.report import write_report
    from freezelab.report.aggregate import load_study
    from freezelab.report.analysis import analyze
    from tests.report_fixtures import make_demo_study

    out = make_demo_study(tmp_path)
    write_report(out, lang="ja")
    a = analyze(load_study(out))
    verdicts = {arm: a.arm_stat(a.primary, arm).verdict for arm in a.n_ok if arm != "tied_frozen"}
    md = " ".join((out / "report.md").read_text(encoding="utf-8").split())
    ja = (out / "report.ja.md").read_text(encoding="utf-8")
    found = dict(re.findall(r"\*\*Power\*\* \(`(\w+)` vs `tied_frozen`, [^)]+\): with 2 seeds the interval rules "
                            r"out changes beyond \S+ and \S+; an effect of ±\S+ would be decided \(80 % power\) "
                            r"with about (\d+) seeds", md))
    assert set(found) == {a for a, v in verdicts.items() if v in ("inconclusive", "no_difference")} != set()
    assert all(int(k) > 2 for k in found.values())
    assert ja.count("**検出力**") == len(found)


def test_a_damaged_sequential_or_tuning_record_is_named_in_the_report_which_still_renders(tmp_path):
    """OUT/sequential.json and OUT/tune.json are untrusted: a wrong shape or broken JSON gives one line naming
    the file, and the rest of the report is written."""
    from freezelab.report import write_report
    from tests.report_fixtures import make_demo_study

    out = make_demo_study(tmp_path)
    (out / "sequential.json").write_text('{"looks": [], "stopped": "decided", "seeds": []}', encoding="utf-8")
    (out / "tune.json").write_text("{not json", encoding="utf-8")
    write_report(out, lang="en")
    md = " ".join((out / "report.md").read_text(encoding="utf-8").split())
    assert "sequential.json is not a valid --until-decided record (AssertionError); its sequential decisions" in md
    assert "tune.json is not a valid learning-rate record (RunFileError); the tuning is left out" in md
    assert "**Answer:**" in md
