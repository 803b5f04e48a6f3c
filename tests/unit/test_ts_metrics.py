"""Masked metrics and baselines on hand-made examples (spec §8)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from freezelab.tasks.timeseries.bars import NS_PER_MINUTE
from freezelab.tasks.timeseries.metrics import (
    interpolation_baseline,
    masked_counts,
    masked_mse,
    pearson_per_window,
    persistence_baseline,
    r2_per_window,
    skill,
    summarise_windows,
    window_pearson,
    window_r2,
)

MIN = NS_PER_MINUTE


def test_masked_mse_counts_only_masked_entries():
    target = np.zeros((1, 3, 4))
    pred = np.array([[[1, 1, 1, 1], [100, 100, 100, 100], [2, 2, 2, 2]]], dtype=float)
    mask = np.array([[True, False, True]])
    assert masked_mse(pred, target, mask) == (pytest.approx((4 * 1 + 4 * 4) / 8), 8)
    assert masked_counts(mask) == (2, 8)
    mse, n = masked_mse(pred, target, np.zeros((1, 3), bool))
    assert np.isnan(mse) and n == 0
    pred[0, 1] = np.nan  # unmasked garbage never leaks into the metric
    assert masked_mse(pred, target, mask)[0] == pytest.approx(2.5)


def hand_batch():
    """Five windows of two bars; see the per-window comments for the expected values."""
    t = np.zeros((5, 2, 4))
    p = np.zeros((5, 2, 4))
    m = np.zeros((5, 2), bool)
    t[0] = [[1, 2, 3, 4], [5, 6, 7, 8]]  # mean 4.5, SST 42; pred = target + 1: R² = 1 - 8/42, r = 1
    p[0] = t[0] + 1
    m[0] = True
    t[1] = t[0]  # pred = the masked mean: R² = 0, r = 0 (constant prediction)
    p[1] = 4.5
    m[1] = True
    t[2, 0] = [1, 2, 3, 4]  # one masked bar; pred [1, 3, 2, 4]: SSE 2, SST 5 -> R² 0.6; r = 4/5
    p[2, 0] = [1, 3, 2, 4]
    p[2, 1] = 99  # unmasked, ignored
    m[2, 0] = True
    t[3, 1] = 2.0  # masked targets all equal: SST = 0 -> skipped
    m[3, 1] = True
    return p, t, m  # window 4: nothing masked -> skipped


def test_r2_and_pearson_per_window_on_hand_values():
    p, t, m = hand_batch()
    r2 = window_r2(p, t, m)
    r = window_pearson(p, t, m)
    np.testing.assert_allclose(r2[:3], [1 - 8 / 42, 0.0, 0.6])
    np.testing.assert_allclose(r[:3], [1.0, 0.0, 0.8])
    assert np.isnan(r2[3:]).all() and np.isnan(r[3:]).all()
    assert r2_per_window(p, t, m) == (pytest.approx((1 - 8 / 42 + 0.6) / 3), 3, 2)
    assert pearson_per_window(p, t, m) == (pytest.approx(0.6), 3, 2)
    assert summarise_windows(np.array([np.nan])).n_used == 0


def test_per_window_scores_match_a_loop_reference():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(50, 16, 4))
    p = t + rng.normal(size=t.shape)
    m = rng.random((50, 16)) < 0.2
    r2, r = window_r2(p, t, m), window_pearson(p, t, m)
    for b in range(50):
        tt, pp = t[b][m[b]].ravel(), p[b][m[b]].ravel()
        if len(tt) < 3:
            assert np.isnan(r2[b])
            continue
        assert r2[b] == pytest.approx(1 - ((pp - tt) ** 2).sum() / ((tt - tt.mean()) ** 2).sum())
        assert r[b] == pytest.approx(stats.pearsonr(pp, tt)[0])


def bars_1d(opens, closes):
    """(1, K, 4) bars with high/low = max/min of open/close."""
    o, c = np.asarray(opens, float), np.asarray(closes, float)
    return np.stack([o, np.maximum(o, c), np.minimum(o, c), c], axis=-1)[None]


def test_persistence_baseline_by_hand():
    v = bars_1d([1, 2, 3, 4, 5, 6], [1.5, 2.5, 3.5, 4.5, 5.5, 6.5])
    m = np.array([[True, True, False, True, True, False]])
    out = persistence_baseline(v, m)
    # bars 0-1: nothing visible before -> open of bar 2; bars 3-4: close of bar 2.
    np.testing.assert_array_equal(out[0, :, 0], [3, 3, 3, 3.5, 3.5, 6])
    assert (out[0, 0] == 3).all() and (out[0, 4] == 3.5).all()
    np.testing.assert_array_equal(out[0, [2, 5]], v[0, [2, 5]])  # visible bars untouched
    empty = persistence_baseline(v, np.ones((1, 6), bool), empty_value=0.0)
    assert (empty == 0).all()


def test_interpolation_baseline_by_hand():
    # m1 bars opening at minutes 0, 1, 2, 5, 6; bars 1-2 masked; bar 3 opens after a 2-minute gap.
    t_open = np.array([[0, 1, 2, 5, 6]]) * MIN
    t_close = t_open + MIN
    v = bars_1d([9, 0, 0, 13, 14], [10, 0, 0, 13.5, 14.5])
    m = np.array([[False, True, True, False, True]])
    out = interpolation_baseline(v, m, t_open, t_close)
    # Line from (t=1, close of bar 0 = 10) to (t=5, open of bar 3 = 13): slope 0.75 per minute.
    np.testing.assert_allclose(out[0, 1], [10.0, 10.375, 10.375, 10.75])  # O at 1, H/L at 1.5, C at 2
    np.testing.assert_allclose(out[0, 2], [10.75, 11.125, 11.125, 11.5])  # O at 2, H/L at 2.5, C at 3
    np.testing.assert_array_equal(out[0, 4], [13.5] * 4)  # trailing edge: persistence
    np.testing.assert_array_equal(out[0, [0, 3]], v[0, [0, 3]])
    lead = interpolation_baseline(v, np.array([[True, False, False, False, False]]), t_open, t_close)
    assert (lead[0, 0] == v[0, 1, 0]).all()  # leading edge: first visible open


def test_skill():
    assert skill(1.0, 2.0) == pytest.approx(0.5)
    assert skill(3.0, 2.0) == pytest.approx(-0.5)
    assert np.isnan(skill(1.0, 0.0))
    np.testing.assert_allclose(skill(np.array([1.0, 2.0]), np.array([4.0, 2.0])), [0.75, 0.0])


def test_baselines_score_as_expected_on_a_random_walk():
    # On a smooth random walk interpolation beats persistence, and both are scored with the same masks.
    rng = np.random.default_rng(0)
    close = np.cumsum(rng.normal(size=(64, 129)), axis=1)
    v = np.stack([close[:, :-1], close[:, :-1], close[:, :-1], close[:, 1:]], axis=-1)  # (64, 128, 4)
    v[..., 1] = v[..., [0, 3]].max(-1)
    v[..., 2] = v[..., [0, 3]].min(-1)
    t_open = np.broadcast_to(np.arange(128) * MIN, (64, 128))
    m = np.zeros((64, 128), bool)
    m[:, 40:60] = True
    mse_p, n = masked_mse(persistence_baseline(v, m), v, m)
    mse_i, _ = masked_mse(interpolation_baseline(v, m, t_open, t_open + MIN), v, m)
    assert n == 64 * 20 * 4 and mse_i < mse_p
    assert 0 < skill(mse_i, mse_p) < 1
