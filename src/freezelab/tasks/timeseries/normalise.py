"""Train-only, level-free normalisation of windows (spec §3 "Normalisation").

Level removal: every price p of a window becomes v = 1e4 · ln(p / ref) basis points, with ref the close of
the window's last visible base-TF bar (one ref shared by all TFs; ln keeps first/max/min/last exact across
TFs). Scaling: v / s_f with s_f the std of v over train windows only, stored keyed by the split hash;
loading fails loudly on a missing TF or a hash mismatch.

The original's behaviour (``data.normalisation``, spec §10 flaw 1) as named options: ``whole_period`` z-scores
raw prices per TF with the mean and std of every bar of the file (val and test included), ``none`` feeds raw
prices. Both keep the price level in the inputs and targets; their "common" space (where first/max/min/last
aggregate exactly across TFs: the audit's oracle) is the price itself, z · scale + offset.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freezelab.errors import DataError, DataNotFoundError
from freezelab.tasks.timeseries.bars import Bars
from freezelab.tasks.timeseries.windows import WindowSplit, gather_windows

BP = 1e4  # v = 1e4 * ln(p / ref): basis points


def window_reference(
    ohlc: Mapping[str, np.ndarray],
    close_times: Mapping[str, np.ndarray],
    base_tf: str,
    masks: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ref per window: the close of the last visible base-TF bar (spec §3 "Level removal").

    A window whose base-TF bars are all masked (possible with full mask closure) takes the close of
    its latest-closing visible bar of any TF instead; such windows are flagged so they can be counted.

    Args:
        ohlc: {tf: (B, K_f, 4)} prices.
        close_times: {tf: (B, K_f)} int64 ns.
        base_tf: the anchor TF.
        masks: {tf: (B, K_f) bool}, True = masked; None = nothing masked.

    Returns:
        ref (B,) float64 and fallback (B,) bool (True where ref is not from the base TF).

    Raises:
        DataError: a window has no visible bar in any TF.
    """
    base = ohlc[base_tf]  # (B, K, 4)
    rows = np.arange(len(base))
    if masks is None:
        return base[:, -1, 3].copy(), np.zeros(len(base), dtype=bool)

    def last_visible(f: str) -> tuple[np.ndarray, np.ndarray]:
        visible = ~masks[f]  # (B, K_f)
        return visible.any(axis=1), visible.shape[1] - 1 - np.argmax(visible[:, ::-1], axis=1)  # (B,), (B,)

    has, last = last_visible(base_tf)
    ref = np.where(has, base[rows, last, 3], np.nan)  # (B,)
    fallback = ~has
    if fallback.any():
        best_time = np.full(len(base), np.iinfo(np.int64).min)
        for f in ohlc:
            if f == base_tf:
                continue
            has_f, last_f = last_visible(f)
            t = np.where(has_f, close_times[f][rows, last_f], np.iinfo(np.int64).min)
            better = fallback & has_f & (t > best_time)
            ref = np.where(better, ohlc[f][rows, last_f, 3], ref)
            best_time = np.where(better, t, best_time)
    if np.isnan(ref).any():
        raise DataError(
            f"{int(np.isnan(ref).sum())} window(s) have no visible bar in any timeframe; "
            "lower the mask ratios or span lengths."
        )
    return ref, fallback


def to_bp(ohlc: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Level removal: 1e4 * ln(p / ref) for (B, K, 4) prices and ref (B,) -> (B, K, 4) bp."""
    return BP * np.log(ohlc / ref[:, None, None])


@dataclass(frozen=True)
class NormStats:
    """Scale per TF (train-only by default), keyed by the split hash.

    Attributes:
        split_hash: `WindowSplit.hash` of the split whose train windows were used.
        base_tf: anchor TF (the ref is its last close).
        scale_bp: {tf: s_f}: common-space units per model unit. train_only: the std of v (bp) pooled over
            O/H/L/C of all train windows; whole_period: the std of raw prices over every bar; none: 1.
        mean_bp: {tf: mean of v} (recorded, not subtracted: the level is removed per window).
        n_values: {tf: values pooled}.
        kind: ``data.normalisation``: train_only, whole_period or none.
        offset: {tf: price subtracted before scaling} (whole_period: the mean price; else absent = 0).
        mean_price: {tf: mean raw price over the bars the stats saw} (approximate bp of the legacy kinds).
    """

    split_hash: str
    base_tf: str
    scale_bp: dict[str, float]
    mean_bp: dict[str, float]
    n_values: dict[str, int]
    kind: str = "train_only"
    offset: dict[str, float] = field(default_factory=dict)
    mean_price: dict[str, float] = field(default_factory=dict)

    @property
    def bp_per_unit(self) -> dict[str, float]:
        """{tf: basis points per model unit}: exact for train_only (s_f); for whole_period and none the
        local slope at the mean price, 1e4 · scale / mean price (approximate: the level varies)."""
        if self.kind == "train_only":
            return dict(self.scale_bp)
        return {f: BP * s / self.mean_price[f] for f, s in self.scale_bp.items()}

    def to_common(self, z: np.ndarray, tf: str) -> np.ndarray:
        """Model units -> the space where TFs aggregate exactly (bp from ref, or the price)."""
        return z * self.scale_bp[tf] + self.offset.get(tf, 0.0)

    def from_common(self, v: np.ndarray, tf: str) -> np.ndarray:
        """Inverse of ``to_common``."""
        return (v - self.offset.get(tf, 0.0)) / self.scale_bp[tf]


def fit_norm_stats(bars: Mapping[str, Bars], split: WindowSplit, *, batch_windows: int = 4096,
                   kind: str = "train_only") -> NormStats:
    """Fit s_f on the train windows only, ref = last base close (no mask), in bounded memory.

    Chunks are combined with the parallel-variance formula (Chan et al. 1979), in float64. Padding slots
    (legacy windows) are left out.

    Args:
        bars: the bars the split's index was built on.
        split: the split; only `split.rows["train"]` is read (train_only).
        batch_windows: windows gathered at a time (memory: batch x sum_f K_f x 32 bytes).
        kind: train_only (above); whole_period: mean and std of every bar's O/H/L/C per TF, the whole file
            with val and test (the original's stats); none: scale 1, nothing subtracted.

    Returns:
        The stats, keyed by `split.hash`.
    """
    if kind != "train_only":
        return _legacy_stats(bars, split, kind)
    index, rows = split.index, split.rows["train"]
    count = dict.fromkeys(index.tfs, 0)
    mean = dict.fromkeys(index.tfs, 0.0)
    m2 = dict.fromkeys(index.tfs, 0.0)
    for lo in range(0, len(rows), batch_windows):
        chunk = rows[lo : lo + batch_windows]
        w = gather_windows(bars, index, chunk)
        ref = w[index.base_tf][:, -1, 3]  # (B,)
        for f in index.tfs:
            v = to_bp(w[f], ref).ravel()
            v = v[np.isfinite(v)]  # padding (NaN) is not a bar
            n_b, mean_b = v.size, float(v.mean())
            m2_b = float(((v - mean_b) ** 2).sum())
            n = count[f] + n_b
            delta = mean_b - mean[f]
            m2[f] += m2_b + delta * delta * count[f] * n_b / n
            mean[f] += delta * n_b / n
            count[f] = n
    scale = {f: math.sqrt(m2[f] / count[f]) for f in index.tfs}
    return NormStats(split.hash, index.base_tf, scale, mean, count)


def _legacy_stats(bars: Mapping[str, Bars], split: WindowSplit, kind: str) -> NormStats:
    """whole_period / none stats over every bar of each TF (val and test included: the original's flaw)."""
    tfs = split.index.tfs
    mean = {f: float(bars[f].ohlc.mean()) for f in tfs}
    n = {f: int(bars[f].ohlc.size) for f in tfs}
    if kind == "whole_period":
        scale = {f: float(bars[f].ohlc.std()) for f in tfs}
        return NormStats(split.hash, split.index.base_tf, scale, {}, n, kind, dict(mean), mean)
    if kind == "none":
        return NormStats(split.hash, split.index.base_tf, dict.fromkeys(tfs, 1.0), {}, n, kind, {}, mean)
    raise ValueError(f"unknown normalisation {kind!r}")


def normalise_windows(
    ohlc: Mapping[str, np.ndarray], ref: np.ndarray, stats: NormStats
) -> dict[str, np.ndarray]:
    """z = 1e4 * ln(p / ref) / s_f for every TF: {tf: (B, K_f, 4)}. bp = z * s_f. The legacy kinds:
    z = (p − offset_f) / scale_f (``stats.kind``; ref unused).

    Raises:
        DataError: `stats` has no scale for one of the TFs (never skipped silently).
    """
    missing = [f for f in ohlc if f not in stats.scale_bp]
    if missing:
        raise DataError(
            f"Normalisation stats (split {stats.split_hash}) have no scale for {missing}; refit them."
        )
    if stats.kind != "train_only":
        return {f: stats.from_common(p, f) for f, p in ohlc.items()}
    return {f: to_bp(p, ref) / stats.scale_bp[f] for f, p in ohlc.items()}


def save_norm_stats(stats: NormStats, path: str | Path) -> None:
    """Write the stats as JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(stats.__dict__, indent=2, sort_keys=True))


def load_norm_stats(path: str | Path, *, split_hash: str, tfs: Sequence[str]) -> NormStats:
    """Load stats and check them against the current split; never returns partial stats.

    Raises:
        DataNotFoundError: no file.
        DataError: unreadable file, hash mismatch, a TF missing, or a non-positive scale.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Normalisation stats not found: {path}. Fit them on the train split first.")
    try:
        raw = json.loads(path.read_text())
        stats = NormStats(**raw)
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: not a NormStats file ({type(e).__name__}: {e}).") from e
    if stats.split_hash != split_hash:
        raise DataError(
            f"{path}: stats were fitted on split {stats.split_hash}, the current split is "
            f"{split_hash}. Refit them (delete the file) or restore the data/split settings."
        )
    missing = [f for f in tfs if f not in stats.scale_bp]
    bad = [
        f
        for f in tfs
        if f in stats.scale_bp and not (stats.scale_bp[f] > 0 and math.isfinite(stats.scale_bp[f]))
    ]
    if missing or bad:
        raise DataError(
            f"{path}: timeframes {missing} missing and {bad} with a non-positive scale; refit the stats."
        )
    return stats
