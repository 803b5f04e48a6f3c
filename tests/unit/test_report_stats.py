"""Seed statistics (protocol §6) against hand computation."""

from __future__ import annotations

import math

import pytest

from freezelab.report import stats

T_0975_DF3 = 3.182446305284263  # t_{0.975, 3}
T_0975_DF2 = 4.302652729911275  # t_{0.975, 2}


def test_describe_matches_hand_computation():
    s = stats.describe([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt(sum((x - 2.5) ** 2 for x in (1, 2, 3, 4)) / 3)  # ddof = 1
    half = T_0975_DF3 * std / 2
    assert (s.n, s.mean, s.std) == (4, 2.5, pytest.approx(std))
    assert (s.lo, s.hi) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))


def test_describe_log_scale_is_geometric_with_exponentiated_ci():
    values = [100.0, 200.0, 400.0]
    s = stats.describe(values, log_scale=True)
    logs = [math.log(v) for v in values]
    m = sum(logs) / 3
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / 2)
    assert s.mean == pytest.approx(200.0)
    assert s.lo == pytest.approx(math.exp(m - T_0975_DF2 * sd / math.sqrt(3)))
    assert s.hi == pytest.approx(math.exp(m + T_0975_DF2 * sd / math.sqrt(3)))
    assert s.std == pytest.approx(stats.describe(values).std)  # std stays in metric units


def test_describe_single_value_has_no_ci_and_drops_non_finite():
    s = stats.describe([3.0, float("nan"), float("inf")])
    assert s.n == 1 and s.mean == 3.0
    assert math.isnan(s.std) and math.isnan(s.lo) and math.isnan(s.hi)
    assert stats.describe([]).n == 0


@pytest.mark.parametrize("diffs, expected", [
    ([1.0, 2.0, 3.0], 0.25),  # n = 3: the smallest possible two-sided p is 2/8
    ([1.0, 1.5, 2.0, 0.5, 3.0], 0.0625),  # n = 5: 2/32
    ([1.0, -1.0, 2.0], 0.75),  # |mean| >= 2/3 for 6 of the 8 sign vectors
    ([0.0, 0.0, 0.0], 1.0),
])
def test_sign_flip_pvalue_exact(diffs, expected):
    assert stats.sign_flip_pvalue(diffs) == pytest.approx(expected)


def test_sign_flip_pvalue_n3_never_below_quarter():
    for diffs in ([5.0, 6.0, 7.0], [-1e-3, -2e-3, -5e-3], [10.0, 0.1, 3.0]):
        assert stats.sign_flip_pvalue(diffs) >= 0.25


def test_holm_adjustment_by_hand():
    # sorted: 0.01*3 = 0.03; 0.03*2 = 0.06; 0.04*1 = 0.04 -> monotone max 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = stats.holm([0.02, float("nan"), 0.04])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_paired_uses_common_seeds_and_paired_t():
    arm = {0: 2.0, 1: 3.0, 2: 5.0, 3: 9.0}
    ref = {0: 1.0, 1: 1.5, 2: 3.0}  # seed 3 missing in the reference
    p = stats.paired(arm, ref)
    diffs = [1.0, 1.5, 2.0]
    sd = math.sqrt(sum((d - 1.5) ** 2 for d in diffs) / 2)
    assert p.n == 3 and p.seeds == (0, 1, 2) and p.diffs == pytest.approx(diffs)
    assert (p.d, p.lo, p.hi) == (pytest.approx(1.5), pytest.approx(1.5 - T_0975_DF2 * sd / math.sqrt(3)),
                                 pytest.approx(1.5 + T_0975_DF2 * sd / math.sqrt(3)))
    assert p.p == pytest.approx(0.25)
    assert p.pct == pytest.approx(((2 + 3 + 5) / 3 - 5.5 / 3) / (5.5 / 3) * 100)


def test_paired_log_scale_reports_delta_percent_from_log_differences():
    arm, ref = {0: 90.0, 1: 180.0, 2: 270.0}, {0: 100.0, 1: 200.0, 2: 300.0}
    p = stats.paired(arm, ref, log_scale=True)
    assert p.d == pytest.approx(math.log(0.9))
    assert p.pct == pytest.approx(-10.0)
    assert p.pct_lo == pytest.approx(-10.0) and p.pct_hi == pytest.approx(-10.0)  # zero spread


@pytest.mark.parametrize("arm, mode, expected", [
    ({0: 1.0, 1: 1.1, 2: 0.9}, "min", "better"),  # clearly lower loss than ref
    ({0: 1.0, 1: 1.1, 2: 0.9}, "max", "worse"),  # the same numbers, higher is better
    ({0: 2.1, 1: 1.9, 2: 2.05}, "min", "no_difference"),
])
def test_verdict_direction(arm, mode, expected):
    ref = {0: 2.0, 1: 2.0, 2: 2.0}
    assert stats.verdict(stats.paired(arm, ref), mode) == expected


def test_verdict_insufficient_below_two_pairs():
    p = stats.paired({0: 1.0, 1: 1.0}, {0: 2.0})
    assert p.n == 1 and math.isnan(p.lo)
    assert stats.verdict(p, "min") == "insufficient"
