"""Train-only, level-free normalisation of windows (spec §3 "Normalisation").

Level removal: every price p of a window becomes v = 1e4 · ln(p / ref) basis points, with ref the close of
the window's last visible base-TF bar (one ref shared by all TFs; ln keeps first/max/min/last exact across
TFs). Scaling: v / s_f with s_f the std of v over train windows only, stored keyed by the split hash;
loading fails loudly on a missing TF or a hash mismatch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    """Train-only scale per TF, keyed by the split hash.

    Attributes:
        split_hash: `WindowSplit.hash` of the split whose train windows were used.
        base_tf: anchor TF (the ref is its last close).
        scale_bp: {tf: s_f}, std of v (bp) pooled over O/H/L/C of all train windows.
        mean_bp: {tf: mean of v} (recorded, not subtracted: the level is removed per window).
        n_values: {tf: values pooled}.
    """

    split_hash: str
    base_tf: str
    scale_bp: dict[str, float]
    mean_bp: dict[str, float]
    n_values: dict[str, int]


def fit_norm_stats(bars: Mapping[str, Bars], split: WindowSplit, *, batch_windows: int = 4096) -> NormStats:
    """Fit s_f on the train windows only, ref = last base close (no mask), in bounded memory.

    Chunks are combined with the parallel-variance formula (Chan et al. 1979), in float64.

    Args:
        bars: the bars the split's index was built on.
        split: the split; only `split.rows["train"]` is read.
        batch_windows: windows gathered at a time (memory: batch x sum_f K_f x 32 bytes).

    Returns:
        The stats, keyed by `split.hash`.
    """
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
            n_b, mean_b = v.size, float(v.mean())
            m2_b = float(((v - mean_b) ** 2).sum())
            n = count[f] + n_b
            delta = mean_b - mean[f]
            m2[f] += m2_b + delta * delta * count[f] * n_b / n
            mean[f] += delta * n_b / n
            count[f] = n
    scale = {f: math.sqrt(m2[f] / count[f]) for f in index.tfs}
    return NormStats(split.hash, index.base_tf, scale, mean, count)


def normalise_windows(
    ohlc: Mapping[str, np.ndarray], ref: np.ndarray, stats: NormStats
) -> dict[str, np.ndarray]:
    """z = 1e4 * ln(p / ref) / s_f for every TF: {tf: (B, K_f, 4)}. bp = z * s_f.

    Raises:
        DataError: `stats` has no scale for one of the TFs (never skipped silently).
    """
    missing = [f for f in ohlc if f not in stats.scale_bp]
    if missing:
        raise DataError(
            f"Normalisation stats (split {stats.split_hash}) have no scale for {missing}; refit them."
        )
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
