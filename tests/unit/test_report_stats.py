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
