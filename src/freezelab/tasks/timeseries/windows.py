"""Windows as index arithmetic and a chronological split with embargo (normalisation: normalise.py).

Spec §3. An anchor t is a base-TF bar close time. For every TF f the window is the K_f most recent
bars with close_time <= t: end_f = searchsorted(close_time_f, t, "right"), rows [end_f - K_f, end_f).
So only bars closed by t are used and the forming bar is excluded. Windows are never materialised
per anchor: a `WindowIndex` stores anchors and end indices, `gather_windows` fancy-indexes a batch.
The original's window (spec §2, ``windows.layout: legacy``) is built in legacy_windows.py; its left
padding (rows before ``WindowIndex.start``) gathers as NaN prices, 0 ``n_sub`` and made-up times that
continue the TF's grid backwards, so padding can never pass for a real bar.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from freezelab.errors import ConfigError, DataError
from freezelab.tasks.timeseries.bars import NS_PER_MINUTE, TIMEFRAMES, Bars

SPLITS = ("train", "val", "test")
# Spec §3: reject M1-M30 windows that span a weekend (~48 h); H1/H4/D gaps stay, visible through τ.
DEFAULT_MAX_GAP_MINUTES: dict[str, float | None] = {
    "m1": 720,
    "m5": 720,
    "m15": 720,
    "m30": 720,
    "h1": None,
    "h4": None,
    "d": None,
}


@dataclass(frozen=True, eq=False)
class WindowIndex:
    """Valid anchors and, per TF, the exclusive end row of each window.

    Window i of TF f is `bars[f].ohlc[end[f][i] - context[f] : end[f][i]]`.

    Attributes:
        base_tf: timeframe whose close times are the anchors.
        context: K_f, bars per window for each TF (dict order = TF order everywhere).
        max_gap_minutes: largest allowed gap between consecutive bars in a window (None = no limit).
        anchors: (n,) int64 ns UTC, increasing.
        end: {tf: (n,) int64}.
        data_hashes: {tf: Bars.content_hash()} of the bars the index was built on.
        n_candidates: anchors considered before rejection.
        n_rejected: {"<tf>:short" / "<tf>:gap": anchors rejected for that reason (not exclusive)}.
        start: legacy layout only: {tf: (n,) int64} first real row; the slots before it are padding.
        layout: "anchored" (spec §3) or "legacy" (spec §2).
    """

    base_tf: str
    context: dict[str, int]
    max_gap_minutes: dict[str, float | None]
    anchors: np.ndarray  # (n,) int64
    end: dict[str, np.ndarray]  # {tf: (n,) int64}
    data_hashes: dict[str, str]
    n_candidates: int
    n_rejected: dict[str, int]
    start: dict[str, np.ndarray] | None = None  # {tf: (n,) int64}, legacy layout only
    layout: str = "anchored"

    @property
    def tfs(self) -> tuple[str, ...]:
        return tuple(self.context)

    def __len__(self) -> int:
        return len(self.anchors)

    def select(self, rows: np.ndarray) -> WindowIndex:
        """The sub-index of the given rows (in the given order)."""
        return WindowIndex(
            self.base_tf,
            self.context,
            self.max_gap_minutes,
            self.anchors[rows],
            {f: e[rows] for f, e in self.end.items()},
            self.data_hashes,
            self.n_candidates,
            self.n_rejected,
            None if self.start is None else {f: s[rows] for f, s in self.start.items()},
            self.layout,
        )


def build_window_index(
    bars: Mapping[str, Bars],
    *,
    base_tf: str,
    context: int | Mapping[str, int] = 128,
    max_gap_minutes: Mapping[str, float | None] | None = None,
    stride_minutes: int | None = None,
) -> WindowIndex:
    """Find every anchor whose windows are complete and gap-free, in O(n) memory and time.

    Args:
        bars: {tf: Bars}; must contain `base_tf`. Every TF present gets a window.
        base_tf: the TF whose close times are candidate anchors (the finest TF).
        context: K_f for all TFs (int) or per TF.
        max_gap_minutes: per TF limit on open_time[i+1] - close_time[i] inside a window; TFs not
            listed use `DEFAULT_MAX_GAP_MINUTES`; None means no limit.
        stride_minutes: keep only anchors whose time is a multiple of this many minutes
            (UTC-aligned, robust to gaps); None keeps every base bar.

    Returns:
        The index of valid anchors.

    Raises:
        ConfigError: missing base TF, K_f < 1, bad stride.
    """
    if base_tf not in bars:
        raise ConfigError(f"base_tf={base_tf!r} is not among the loaded timeframes {list(bars)}.")
    tfs = list(bars)
    ctx = {f: int(context if isinstance(context, int) else context[f]) for f in tfs}
    if min(ctx.values()) < 1:
        raise ConfigError(f"Window lengths must be >= 1, got {ctx}.")
    gaps = {f: (max_gap_minutes or {}).get(f, DEFAULT_MAX_GAP_MINUTES.get(f)) for f in tfs}

    anchors = bars[base_tf].close_time  # (N,)
    if stride_minutes is not None:
        if stride_minutes < 1 or stride_minutes % TIMEFRAMES[base_tf] != 0:
            raise ConfigError(
                f"stride_minutes={stride_minutes} must be a positive multiple of the "
                f"{base_tf} interval ({TIMEFRAMES[base_tf]} min)."
            )
        anchors = anchors[anchors % (stride_minutes * NS_PER_MINUTE) == 0]
    valid = np.ones(len(anchors), dtype=bool)
    end: dict[str, np.ndarray] = {}
    rejected: dict[str, int] = {}
    for f in tfs:
        b, k = bars[f], ctx[f]
        e = np.searchsorted(b.close_time, anchors, side="right").astype(np.int64)  # (n,)
        start = e - k
        short = start < 0
        rejected[f"{f}:short"] = int(short.sum())
        if gaps[f] is not None and len(b) > 1:
            # big[i]: gap between bar i and i+1 too large; cum[j] = big gaps among bars 0..j.
            big = (b.open_time[1:] - b.close_time[:-1]) > gaps[f] * NS_PER_MINUTE  # (len-1,)
            cum = np.concatenate([[0], np.cumsum(big)])  # (len,)
            s = np.maximum(start, 0)
            # Gaps inside rows [s, e) are between pairs s..e-2: cum[e-1] - cum[s].
            has_gap = ~short & (cum[np.maximum(e - 1, 0)] - cum[s] > 0)
            rejected[f"{f}:gap"] = int(has_gap.sum())
            valid &= ~has_gap
        valid &= ~short
        end[f] = e
    return WindowIndex(
        base_tf=base_tf,
        context=ctx,
        max_gap_minutes=gaps,
        anchors=anchors[valid],
        end={f: e[valid] for f, e in end.items()},
        data_hashes={f: bars[f].content_hash() for f in tfs},
        n_candidates=len(anchors),
        n_rejected=rejected,
    )


def window_rows(index: WindowIndex, tf: str, rows: np.ndarray | None = None) -> np.ndarray:
    """Bar rows of TF `tf` used by the windows `rows` (all if None): (B, K_f) int64."""
    e = index.end[tf] if rows is None else index.end[tf][rows]
    k = index.context[tf]
    return e[:, None] - k + np.arange(k)  # (B, K)


def window_padding(index: WindowIndex, tf: str, rows: np.ndarray | None = None) -> np.ndarray | None:
    """(B, K_f) bool, True at left-padding slots (legacy layout); None when the index has no padding."""
    if index.start is None:
        return None
    start = index.start[tf] if rows is None else index.start[tf][rows]
    return window_rows(index, tf, rows) < start[:, None]


def _safe_rows(bars: Bars, index: WindowIndex, tf: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Window rows clipped into the TF's bars (padding rows point at a real row; callers overwrite them)."""
    idx = window_rows(index, tf, rows)
    pad = window_padding(index, tf, rows)
    return (idx if pad is None else np.clip(idx, 0, max(len(bars) - 1, 0))), pad


def gather_windows(bars: Mapping[str, Bars], index: WindowIndex, rows: np.ndarray) -> dict[str, np.ndarray]:
    """OHLC of a batch of windows by fancy indexing: {tf: (B, K_f, 4) float64}; NaN at padding."""
    out = {}
    for f in index.tfs:
        idx, pad = _safe_rows(bars[f], index, f, rows)
        values = bars[f].ohlc[idx]
        if pad is not None:
            values[pad] = np.nan
        out[f] = values
    return out


def gather_n_sub(bars: Mapping[str, Bars], index: WindowIndex, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Base bars per bar of a batch of windows: {tf: (B, K_f) int64}; 0 at padding."""
    out = {}
    for f in index.tfs:
        idx, pad = _safe_rows(bars[f], index, f, rows)
        out[f] = bars[f].n_sub[idx] if pad is None else np.where(pad, 0, bars[f].n_sub[idx])
    return out


def gather_times(
    bars: Mapping[str, Bars], index: WindowIndex, rows: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Open and close times of a batch of windows: ({tf: (B, K_f)}, {tf: (B, K_f)}) int64 ns.

    A padding slot j places before the TF's first real bar (or the window's first base bar, when the TF has
    none) gets [open − j·Δ_f, open − (j − 1)·Δ_f): times stay sorted and never overlap a real bar of its TF.
    """
    opens, closes = {}, {}
    for f in index.tfs:
        idx, pad = _safe_rows(bars[f], index, f, rows)
        o, c = bars[f].open_time[idx], bars[f].close_time[idx]
        if pad is not None and pad.any():
            start, end = index.start[f][rows], index.end[f][rows]  # type: ignore[index]
            base = index.base_tf
            t0 = bars[base].open_time[index.start[base][rows]]  # type: ignore[index]
            has = start < end
            first = np.where(has, bars[f].open_time[np.clip(start, 0, max(len(bars[f]) - 1, 0))], t0)  # (B,)
            delta = TIMEFRAMES[f] * NS_PER_MINUTE
            made_up = first[:, None] - (start[:, None] - window_rows(index, f, rows)) * delta  # (B, K)
            o, c = np.where(pad, made_up, o), np.where(pad, made_up + delta, c)
        opens[f], closes[f] = o, c
    return opens, closes


def window_span_ns(index: WindowIndex) -> int:
    """How far one window reaches in time (ns): anchored K_f·Δ_f at most; legacy the base run plus the
    look-ahead of the coarsest TF's last bar."""
    if index.layout == "legacy":
        return (index.context[index.base_tf] * TIMEFRAMES[index.base_tf] + max(TIMEFRAMES[f] for f in index.tfs)) \
            * NS_PER_MINUTE
    return max(index.context[f] * TIMEFRAMES[f] for f in index.tfs) * NS_PER_MINUTE


# ----------------------------------------------------------------------------- split with embargo


@dataclass(frozen=True, eq=False)
class WindowSplit:
    """Rows of a `WindowIndex` per split.

    Attributes:
        index: the index the rows point into.
        rows: {"train"|"val"|"test": (n_s,) int64 rows, increasing}.
        n_embargoed: {split: anchors dropped at the start of that period by the embargo}.
        hash: `split_hash` of this split.
    """

    index: WindowIndex
    rows: dict[str, np.ndarray]
    n_embargoed: dict[str, int]
    hash: str

    def part(self, name: str) -> WindowIndex:
        """The sub-index of one split."""
        return self.index.select(self.rows[name])


def make_split(
    bars: Mapping[str, Bars],
    index: WindowIndex,
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    train_stride_minutes: int | None = None,
    eval_stride_minutes: int | None = None,
    max_eval_windows: int | None = 20_000,
    seed: int = 0,
) -> WindowSplit:
    """Chronological train/val/test split by anchor, with an embargo between periods.

    The anchors are cut 70/15/15 (by count). Embargo: an anchor at the start of val is dropped
    unless every bar of its windows, in every TF, opens at or after the latest close of any bar of
    any train window (the last train anchor); test is embargoed from val the same way. Train keeps
    anchors on `train_stride_minutes`; val and test keep anchors on `eval_stride_minutes`, then a
    fixed seeded subset of at most `max_eval_windows`: one random anchor in each of that many
    equal consecutive slices, so the subset spans the whole period.

    Args:
        bars: the bars `index` was built on (for bar open/close times).
        index: all candidate anchors (built at the finest stride wanted).
        fractions: train, val, test shares of the anchors; must sum to 1.
        train_stride_minutes / eval_stride_minutes: anchor time multiples (None: every index row).
        max_eval_windows: cap on val and test windows each (None: no cap).
        seed: seed of the eval subsets.

    Returns:
        The split, with its hash.

    Raises:
        ConfigError: bad fractions or strides.
        DataError: a split is empty (e.g. after the embargo).
    """
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ConfigError(f"split fractions must be three non-negative shares summing to 1, got {fractions}.")
    base_minutes = TIMEFRAMES[index.base_tf]
    for key, stride in [
        ("train_stride_minutes", train_stride_minutes),
        ("eval_stride_minutes", eval_stride_minutes),
    ]:
        if stride is not None and (stride < 1 or stride % base_minutes != 0):
            raise ConfigError(
                f"{key}={stride} must be a positive multiple of {base_minutes} ({index.base_tf})."
            )
    n = len(index)
    cut1 = round(fractions[0] * n)
    cut2 = round((fractions[0] + fractions[1]) * n)
    periods = {"train": np.arange(0, cut1), "val": np.arange(cut1, cut2), "test": np.arange(cut2, n)}
    first_open, last_close = _window_extent(bars, index)  # (n,), (n,)
    rows: dict[str, np.ndarray] = {}
    embargoed = {"train": 0}
    prev_close = None
    for name in SPLITS:
        r = periods[name]
        if prev_close is not None:
            keep = first_open[r] >= prev_close
            embargoed[name] = int((~keep).sum())
            r = r[keep]
        if len(r) == 0:
            longest = max(index.context[f] * TIMEFRAMES[f] for f in index.tfs) / 1440
            raise DataError(
                f"The {name} split is empty ({len(periods[name])} anchors before the embargo). Windows reach "
                f"back >= {longest:.1f} days; use more data, shorter windows or larger split fractions."
            )
        prev_close = last_close[r].max()  # every bar of this period's windows closes by then
        stride = train_stride_minutes if name == "train" else eval_stride_minutes
        if stride is not None:
            r = r[index.anchors[r] % (stride * NS_PER_MINUTE) == 0]
        if name != "train" and max_eval_windows is not None and len(r) > max_eval_windows:
            r = _spread_subset(r, max_eval_windows, np.random.default_rng([seed, SPLITS.index(name)]))
        if len(r) == 0:
            raise DataError(f"The {name} split has no anchor on its {stride}-minute stride.")
        rows[name] = r.astype(np.int64)
    return WindowSplit(index, rows, embargoed, split_hash(index, rows))


def _window_extent(bars: Mapping[str, Bars], index: WindowIndex) -> tuple[np.ndarray, np.ndarray]:
    """Per anchor: earliest open and latest close over all real bars of all its windows, (n,) each."""
    big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    first_open = np.full(len(index), big)
    last_close = np.full(len(index), small)
    for f in index.tfs:
        end = index.end[f]
        start = end - index.context[f] if index.start is None else index.start[f]
        has = start < end  # legacy: a TF may have no bar in a window
        top = max(len(bars[f]) - 1, 0)
        first_open = np.minimum(first_open, np.where(has, bars[f].open_time[np.clip(start, 0, top)], big))
        last_close = np.maximum(last_close, np.where(has, bars[f].close_time[np.clip(end - 1, 0, top)], small))
    return first_open, last_close


def _spread_subset(rows: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """One random element from each of m equal consecutive slices of `rows` (sorted output)."""
    edges = np.linspace(0, len(rows), m + 1).astype(np.int64)  # (m+1,)
    pick = edges[:-1] + np.floor(rng.random(m) * (edges[1:] - edges[:-1])).astype(np.int64)
    return rows[pick]


def split_hash(index: WindowIndex, rows: Mapping[str, np.ndarray]) -> str:
    """sha256 (16 hex) of the anchor lists of every split, K_f, gap rules, base TF and data hashes."""
    meta = {
        "base_tf": index.base_tf,
        "context": index.context,
        "max_gap_minutes": index.max_gap_minutes,
        "data": index.data_hashes,
    }
    if index.layout != "anchored":
        meta["layout"] = index.layout
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in SPLITS:
        h.update(name.encode())
        h.update(np.ascontiguousarray(index.anchors[rows[name]], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]
