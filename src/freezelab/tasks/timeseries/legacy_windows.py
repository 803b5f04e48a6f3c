"""The original's window (spec §2, ``windows.layout: legacy``), as a `WindowIndex` with left padding.

A window is K consecutive base-TF bars, rows [i − K + 1, i], every base bar a window (stride 1 bar), gaps and
weekends included (the original's coverage rule passed every window). Let t0 and t1 be the open times of
its first and last base bar. Every coarser TF f contributes the bars whose **open** time lies in [t0, t1]:
the last one opened inside the window but aggregates base bars after it, up to Δ_f later (the look-ahead the
spec lists among the original's problems). They are right-aligned in K_f slots and the slots before them are
padding (the oldest bars are dropped if there are more than K_f). The anchor of a window is the close time of
its last base bar: it names the window (masks, items, the chronological split) and is the time τ counts back
from, so the look-ahead bar's patch sits at a negative distance, clamped to 0 by the model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from freezelab.errors import ConfigError
from freezelab.tasks.timeseries.bars import NS_PER_MINUTE, TIMEFRAMES, Bars
from freezelab.tasks.timeseries.windows import WindowIndex


def build_legacy_index(
    bars: Mapping[str, Bars],
    *,
    base_tf: str,
    context: Mapping[str, int],
    stride_minutes: int | None = None,
) -> WindowIndex:
    """Every run of K consecutive base bars as a window; coarser TFs by open time within it (module doc).

    Args:
        bars: {tf: Bars}; must contain ``base_tf``, the finest TF.
        base_tf: the TF whose consecutive bars make the window.
        context: K_f per TF: K = context[base_tf] base bars; K_f slots for every other TF.
        stride_minutes: keep only anchors on this many minutes (UTC-aligned); None keeps every window.

    Returns:
        The index, with ``start`` (first real row per TF) and ``layout="legacy"``.

    Raises:
        ConfigError: missing base TF, a TF finer than the base TF, K_f < 1, bad stride.
    """
    if base_tf not in bars:
        raise ConfigError(f"base_tf={base_tf!r} is not among the loaded timeframes {list(bars)}.")
    tfs = list(bars)
    finer = [f for f in tfs if TIMEFRAMES[f] < TIMEFRAMES[base_tf]]
    if finer:
        raise ConfigError(f"windows.layout: legacy builds coarser timeframes from {base_tf} windows; {finer} are "
                          f"finer than data.base_tf={base_tf}.")
    ctx = {f: int(context[f]) for f in tfs}
    if min(ctx.values()) < 1:
        raise ConfigError(f"Window lengths must be >= 1, got {ctx}.")
    base, k = bars[base_tf], ctx[base_tf]
    last = np.arange(k - 1, len(base), dtype=np.int64)  # (n,) last base row of each window
    anchors = base.close_time[last]
    if stride_minutes is not None:
        if stride_minutes < 1 or stride_minutes % TIMEFRAMES[base_tf] != 0:
            raise ConfigError(f"stride_minutes={stride_minutes} must be a positive multiple of the {base_tf} "
                              f"interval ({TIMEFRAMES[base_tf]} min).")
        keep = anchors % (stride_minutes * NS_PER_MINUTE) == 0
        last, anchors = last[keep], anchors[keep]
    t0, t1 = base.open_time[last - k + 1], base.open_time[last]  # (n,) first and last base bar opens
    end: dict[str, np.ndarray] = {}
    start: dict[str, np.ndarray] = {}
    for f in tfs:
        if f == base_tf:
            end[f], start[f] = last + 1, last - k + 1
            continue
        o = bars[f].open_time
        e = np.searchsorted(o, t1, side="right").astype(np.int64)  # bars opening at or before t1
        s = np.searchsorted(o, t0, side="left").astype(np.int64)  # ... and at or after t0
        end[f], start[f] = e, np.maximum(s, e - ctx[f])
    return WindowIndex(
        base_tf=base_tf,
        context=ctx,
        max_gap_minutes=dict.fromkeys(tfs),
        anchors=anchors,
        end=end,
        data_hashes={f: bars[f].content_hash() for f in tfs},
        n_candidates=len(anchors),
        n_rejected={},
        start=start,
        layout="legacy",
    )


def look_ahead_minutes(bars: Mapping[str, Bars], index: WindowIndex, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Per TF and window, how far the window's last bar closes after the window's last base bar: {tf: (B,)}
    minutes (0 when it does not; anchored windows are 0 everywhere, legacy ones reach up to Δ_f − Δ_base)."""
    t = index.anchors[rows]
    out = {}
    for f in index.tfs:
        e = index.end[f][rows]
        has = e > (index.start[f][rows] if index.start is not None else e - index.context[f])
        close = bars[f].close_time[np.clip(e - 1, 0, max(len(bars[f]) - 1, 0))]
        out[f] = np.where(has, np.maximum(close - t, 0), 0) / NS_PER_MINUTE
    return out
