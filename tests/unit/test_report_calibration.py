"""Calibration of the verdicts by simulation, through the shipped statistics (report/calibration.py).

Null studies: every arm and the naive baseline drawn from the same distribution, 200 per cell, realistic
item counts and sizes (from the quick demos), with and without a per-run seed effect, heterogeneous seed
variances, heavy-tailed token counts and autocorrelated time-series windows. Monte-Carlo allowance: a cell
fails when a one-sided binomial test rejects "rate ≤ 5 %" at level 0.001 (with 200 studies: more than 20
false verdicts, 10 %); benchmarks/README.md has the same cells with 500 studies and tighter figures.
The naive methods must fail where a realistic seed effect exists: proof that the simulation has teeth.
"""

from __future__ import annotations

import pytest
from scipy import stats

from freezelab.report import calibration as C

STUDIES = 200
ALPHA = 0.05


def too_many(rate: float, n: int = STUDIES, level: float = 1e-3) -> bool:
    """Whether ``rate`` over ``n`` studies is significantly above ALPHA (one-sided binomial test)."""
    return stats.binomtest(round(rate * n), n, ALPHA, alternative="greater").pvalue < level


def clearly_above(rate: float, n: int = STUDIES) -> bool:
    """Whether the rate's 99.9 % lower confidence bound is above ALPHA: the method is miscalibrated."""
    return stats.binomtest(round(rate * n), n).proportion_ci(0.999).low > ALPHA


CELLS = [(r.name, n) for r in C.REGIMES if not r.name.startswith(("lm_200", "ts"))
         for n in (2, 3, 5)]
CELLS += [("lm_200_docs_3x_noisy_arm", 2), ("lm_200_docs_2x_noisy_reference", 2),
          ("lm_200_docs_3x_noisy_reference", 3), ("ts_seed_effect", 2), ("ts_seed_effect", 5),
          ("ts_no_seed_effect", 3), ("ts_shared_seed_effect", 2), ("ts_shared_seed_effect", 5)]


@pytest.mark.integration
@pytest.mark.parametrize("name, n_seeds", CELLS)
def test_null_studies_rarely_get_a_verdict(name, n_seeds):
    rate = C.false_rate(C.regime(name), n_seeds, STUDIES)
    assert not too_many(rate), f"{name}, {n_seeds} seeds: {rate:.1%} of null studies got better/worse"


@pytest.mark.integration
@pytest.mark.parametrize("name", ["lm_seed_effect", "ts_seed_effect"])
@pytest.mark.parametrize("method", ["items_only", "hierarchical"])
def test_naive_methods_fail_with_a_seed_effect(name, method):
    rate = C.false_rate(C.regime(name), 2, STUDIES, method)
    assert clearly_above(rate), f"{method} on {name} should be miscalibrated, got {rate:.1%}"


# Promised power for a 0.3 log-unit effect (26 % lower PPL) in the demo-sized LM study; measured (500
# studies, benchmarks/README.md) 42 %, 77 %, 89 %: the promise leaves Monte-Carlo room.
PROMISED_POWER = {2: 0.35, 3: 0.6, 5: 0.8}


@pytest.mark.integration
@pytest.mark.parametrize("n_seeds", [2, 3, 5])
def test_known_effect_is_found_and_covered(n_seeds):
    power, coverage = C.effect_rates(C.regime("lm_seed_effect"), n_seeds, STUDIES, 0.3)
    assert power >= PROMISED_POWER[n_seeds]
    low = stats.binom.ppf(1e-3, STUDIES, 0.95) / STUDIES  # coverage of the 95 % interval, with MC allowance
    assert coverage >= low, f"coverage {coverage:.1%} < {low:.1%}"


@pytest.mark.integration
def test_time_series_effect_is_covered():
    _, coverage = C.effect_rates(C.regime("ts_seed_effect"), 3, STUDIES, 0.3)
    assert coverage >= stats.binom.ppf(1e-3, STUDIES, 0.95) / STUDIES


# Issue 17: arms of one seed share its data order, masks and initialisation, so their seed effects move
# together. A 10 % difference under a large shared seed effect (sd 0.094, own sd 0.006, items that barely
# separate the arms) is found by pairing on seeds; taking seed effects as independent between arms (the
# report before) hides it under the shared variance. Measured with 500 studies in benchmarks/README.md.
SHARED_POWER = {("lm_shared_seed_effect", 2): 0.8, ("lm_shared_seed_effect", 3): 0.9,
                ("lm_shared_seed_effect_noisy_arm", 3): 0.85, ("ts_shared_seed_effect", 2): 0.85}


@pytest.mark.integration
@pytest.mark.parametrize("name, n_seeds", list(SHARED_POWER))
def test_a_difference_under_a_shared_seed_effect_is_found_by_pairing(name, n_seeds):
    regime = C.regime(name)
    power, coverage = C.effect_rates(regime, n_seeds, STUDIES, 0.105)  # 10 % lower PPL / MSE
    unpaired, _ = C.effect_rates(regime, n_seeds, STUDIES, 0.105, method="independent_seeds")
    assert power >= SHARED_POWER[(name, n_seeds)], f"{name}, {n_seeds} seeds: power {power:.0%}"
    assert unpaired <= 0.25, f"seed effects taken as independent should miss it, found {unpaired:.0%}"
    assert coverage >= stats.binom.ppf(1e-3, STUDIES, 0.95) / STUDIES
