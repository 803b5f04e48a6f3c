"""Masked-reconstruction metrics and baselines (spec §8), numpy, vectorised over a batch of windows.

Shapes for one TF: pred and target (B, K, 4) (O, H, L, C), mask (B, K) bool with True = masked.
A masked bar contributes its 4 fields, so "entries" = 4 x masked bars. Values are level-removed
(normalised units or bp), so 0 is the window's ref price.

Accumulating over batches: keep (mse, n) pairs and per-window arrays from `window_r2` /
`window_pearson`, concatenate them, then call `summarise_windows` once.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MIN_ENTRIES = 3  # windows with fewer masked entries are not scored (spec §8)


class WindowScore(NamedTuple):
    """Mean of a per-window metric over the scored windows, with the counts (spec §8)."""

    mean: float  # nan when no window qualifies
    n_used: int
    n_skipped: int


def masked_counts(mask: np.ndarray) -> tuple[int, int]:
    """(masked bars, masked entries = 4 x bars) of a (B, K) mask."""
    n_bars = int(mask.sum())
    return n_bars, 4 * n_bars


def masked_mse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """Mean squared error over masked entries: (mse, n_entries); (nan, 0) when nothing is masked.

    In bp²: mse_norm * s_f² (see normalise.NormStats.scale_bp).
    """
    m = np.broadcast_to(mask[..., None], pred.shape)  # (B, K, 4)
    n = int(m.sum())
    if n == 0:
        return float("nan"), 0
    return float(np.sum(np.where(m, pred - target, 0.0) ** 2) / n), n


def _window_moments(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-window masked sums: n, pred/target deviations about their masked means, SST > 0 test."""
    m = np.broadcast_to(mask[..., None], pred.shape).reshape(len(pred), -1)  # (B, K*4)
    p = np.where(m, pred.reshape(len(pred), -1), 0.0)
    t = np.where(m, target.reshape(len(target), -1), 0.0)
    n = m.sum(axis=1)  # (B,)
    safe_n = np.maximum(n, 1)
    dp = np.where(m, p - (p.sum(axis=1) / safe_n)[:, None], 0.0)  # (B, K*4)
    dt = np.where(m, t - (t.sum(axis=1) / safe_n)[:, None], 0.0)
    # SST > 0 exactly when the masked targets are not all equal (robust to rounding of the mean).
    t_max = np.where(m, t, -np.inf).max(axis=1)
    t_min = np.where(m, t, np.inf).min(axis=1)
    scored = (n >= MIN_ENTRIES) & (t_max > t_min)  # (B,)
    return p, t, dp, dt, scored


def window_r2(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """R² per window = 1 - SSE/SST over its masked entries, SST about its masked-target mean.

    Returns:
        (B,) float64, nan for windows not scored (< 3 masked entries or SST = 0).
    """
    p, t, _, dt, scored = _window_moments(pred, target, mask)
    sse = ((p - t) ** 2).sum(axis=1)  # unmasked entries are 0 - 0
    sst = (dt**2).sum(axis=1)
    return np.where(scored, 1.0 - sse / np.where(scored, sst, 1.0), np.nan)


def window_pearson(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson r per window over its masked entries.

    A prediction constant over the window's masked entries (e.g. persistence over one span) has r = 0
    by convention, so the scored windows depend only on targets and mask and are the same for every
    model and baseline.

    Returns:
        (B,) float64, nan for windows not scored (< 3 masked entries or SST = 0).
    """
    _, _, dp, dt, scored = _window_moments(pred, target, mask)
    cov = (dp * dt).sum(axis=1)
    spp, stt = (dp**2).sum(axis=1), (dt**2).sum(axis=1)
    denom = np.sqrt(spp * stt)
    r = np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), 0.0)
    return np.where(scored, np.clip(r, -1.0, 1.0), np.nan)


def summarise_windows(values: np.ndarray) -> WindowScore:
    """Mean over scored windows (non-nan), with used/skipped counts."""
    used = ~np.isnan(values)
    n_used = int(used.sum())
    mean = float(values[used].mean()) if n_used else float("nan")
    return WindowScore(mean, n_used, int(len(values) - n_used))


def r2_per_window(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> WindowScore:
    """Mean per-window R² over windows with >= 3 masked entries and SST > 0: (mean, n_used, n_skipped)."""
    return summarise_windows(window_r2(pred, target, mask))


def pearson_per_window(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> WindowScore:
    """Mean per-window Pearson r over the same windows as R²: (mean, n_used, n_skipped)."""
    return summarise_windows(window_pearson(pred, target, mask))


# ----------------------------------------------------------------------------- baselines


def _neighbours(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Last visible bar at or before, first visible bar at or after each position: (B, K) int64 each.

    -1 / K where there is none. Forward/backward fill of indices with running max/min.
    """
    k = mask.shape[1]
    pos = np.arange(k)
    left = np.maximum.accumulate(np.where(~mask, pos, -1), axis=1)
    right = np.minimum.accumulate(np.where(~mask, pos, k)[:, ::-1], axis=1)[:, ::-1]
    return left, right


def persistence_baseline(values: np.ndarray, mask: np.ndarray, *, empty_value: float = 0.0) -> np.ndarray:
    """Every field of a masked bar = the last visible close before it, else the first visible open after.

    Args:
        values: (B, K, 4) level-removed OHLC (visible entries are used, masked ones never read).
        mask: (B, K) bool.
        empty_value: prediction for windows with no visible bar in this TF (0 = the ref price).

    Returns:
        (B, K, 4) predictions; visible bars keep their values.
    """
    left, right = _neighbours(mask)
    b = np.arange(len(values))[:, None]
    k = mask.shape[1]
    from_left = values[b, np.maximum(left, 0), 3]  # (B, K) close of last visible bar
    from_right = values[b, np.minimum(right, k - 1), 0]  # (B, K) open of next visible bar
    fill = np.where(left >= 0, from_left, np.where(right < k, from_right, empty_value))
    return np.where(mask[..., None], fill[..., None], values)


def interpolation_baseline(
    values: np.ndarray,
    mask: np.ndarray,
    open_times: np.ndarray,
    close_times: np.ndarray,
    *,
    empty_value: float = 0.0,
) -> np.ndarray:
    """Linear interpolation in time across each masked span; persistence at the edges.

    The line goes from the last visible close before the span (at that bar's close time) to the
    first visible open after it (at that bar's open time). A masked bar's open is read at its open
    time, its close at its close time, high and low at its mid time.

    Args:
        values: (B, K, 4); mask: (B, K) bool; open_times, close_times: (B, K) int64 ns.
        empty_value: as in `persistence_baseline`.

    Returns:
        (B, K, 4) predictions.
    """
    left, right = _neighbours(mask)
    b = np.arange(len(values))[:, None]
    k = mask.shape[1]
    both = (left >= 0) & (right < k)  # (B, K) span has a visible bar on each side
    li, ri = np.maximum(left, 0), np.minimum(right, k - 1)
    y0, y1 = values[b, li, 3], values[b, ri, 0]  # (B, K)
    t_ref = close_times[b, li]  # times relative to the left close, as float minutes
    span = (open_times[b, ri] - t_ref) / 6e10  # (B, K)
    t_open = (open_times - t_ref) / 6e10
    t_close = (close_times - t_ref) / 6e10
    t_fields = np.stack(
        [t_open, (t_open + t_close) / 2, (t_open + t_close) / 2, t_close], axis=-1
    )  # (B, K, 4)
    w = t_fields / np.where(both & (span > 0), span, 1.0)[..., None]
    linear = y0[..., None] + np.clip(w, 0.0, 1.0) * (y1 - y0)[..., None]  # (B, K, 4)
    persist = persistence_baseline(values, mask, empty_value=empty_value)
    return np.where((mask & both)[..., None], linear, persist)


def skill(mse_model: float | np.ndarray, mse_baseline: float | np.ndarray) -> float | np.ndarray:
    """Skill = 1 - MSE_model / MSE_baseline (> 0: better than the baseline); nan if the baseline MSE is 0."""
    base = np.asarray(mse_baseline, dtype=np.float64)
    out = 1.0 - np.asarray(mse_model, dtype=np.float64) / np.where(base > 0, base, np.nan)
    return float(out) if out.ndim == 0 else out
