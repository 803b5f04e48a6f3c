"""From a config to model-ready batches: bars → windows → split → train-only stats → masked batches.

Everything is index arithmetic on numpy arrays (no per-window pandas). The order inside a batch follows
the data layer: gather windows and times → draw masks (training: ``mask_rng(run seed, epoch, anchors)``;
val/test: ``mask_rng(mask_seed, 0, anchors)``, drawn once, stored and hashed) → ref from visible bars →
normalise with the train-only scales → blank target and hidden inputs (the model puts μ_f there). Losses,
metrics and baselines score the targets only; baselines read visible bars only. The faithful options plug in
here: ``windows.layout: legacy`` (legacy_windows.py; padding slots are 0 in inputs and targets, never masked
or scored), ``masking.scheme: legacy_index_sync`` (one fixed mask per window), ``data.normalisation``
(normalise.py), ``model.channels`` (channels.py) and ``masking.mask_inputs: false``, which passes every bar's
true values with no mask flag (the original's input) while the same bars stay the scored targets.

A window whose every bar of every TF is blanked (possible with the closure schemes, when a coarse TF's span
covers the whole window of a finer one) has no reference price and nothing to reconstruct from: it is left
out of its batch (training) or of the fixed eval set (val/test, once), and counted.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freezelab.tasks.timeseries import bars as tsbars
from freezelab.tasks.timeseries import normalise as tsnorm
from freezelab.tasks.timeseries import windows as tswin
from freezelab.tasks.timeseries.bar_files import InvalidRowsWarning, UnsortedRowsWarning, load_multi_timeframe
from freezelab.tasks.timeseries.channels import input_channels
from freezelab.tasks.timeseries.legacy_windows import build_legacy_index, look_ahead_minutes
from freezelab.tasks.timeseries.masking import (
    FIXED_SCHEMES,
    MaskConfig,
    MaskSet,
    apply_mask,
    default_mask_config,
    draw_masks,
    mask_rng,
    masks_hash,
)
from freezelab.tasks.timeseries.sessions import Session
from freezelab.tasks.timeseries.sources import SHIPPED, shipped_path
from freezelab.utils.hashing import hash_json

NS_PER_MINUTE = tsbars.NS_PER_MINUTE


@dataclass
class Batch:
    """One batch of windows, as torch tensors (model inputs) plus numpy extras for scoring.

    Attributes:
        inputs: {tf: (B, K, 4 + C) float32} normalised OHLC and the ``model.channels``, blanked (target and
            hidden) bars and padding set to 0.
        flags: {tf: (B, K) float32} 1 = blanked in the input (all 0 with ``masking.mask_inputs: false``).
        targets: {tf: (B, K, 4) float32} normalised OHLC (the truth of every bar).
        masks: {tf: (B, K) bool} the target bars, the ones scored.
        minutes: {tf: (B, K/P) float32} minutes from each patch's close to the anchor.
        open_times, close_times: {tf: (B, K) int64 ns} (numpy; baselines, consistency term).
        n_sub: {tf: (B, K) int64} base bars per bar (numpy; only when requested).
        fallback_refs: windows whose ref is not from the base TF (all its bars masked).
        n_dropped: windows left out because every bar of every TF was masked (no visible bar at all).
        hidden: {tf: (B, K) bool} (numpy) bars blanked in the input but not scored; None = none.
        padding: {tf: (B, K) bool} (numpy) left-padding slots of legacy windows (no bar); None = none.
        ref_units: {tf: (B,)} (numpy) the window's reference price in that TF's model units (0 when the level
            is removed; baselines fall back to it where a TF has no visible bar); None = 0 everywhere.
    """

    inputs: dict[str, torch.Tensor]
    flags: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    minutes: dict[str, torch.Tensor]
    open_times: dict[str, np.ndarray]
    close_times: dict[str, np.ndarray]
    n_sub: dict[str, np.ndarray] | None = None
    fallback_refs: int = 0
    n_dropped: int = 0
    hidden: dict[str, np.ndarray] | None = None
    padding: dict[str, np.ndarray] | None = None
    ref_units: dict[str, np.ndarray] | None = None

    @property
    def blanked(self) -> dict[str, np.ndarray]:
        """{tf: (B, K) bool} bars replaced by the mask vector: targets | hidden (numpy)."""
        return {f: m.numpy() | (self.hidden[f] if self.hidden else False) for f, m in self.masks.items()}

    @property
    def visible(self) -> dict[str, np.ndarray]:
        """{tf: (B, K) bool} real bars that are not blanked: what baselines may read (numpy)."""
        return {f: ~b & (~self.padding[f] if self.padding else True) for f, b in self.blanked.items()}

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def rows(self, lo: int, hi: int) -> Batch:
        """Windows lo:hi of this batch (a data-parallel process's shard); the counts stay the whole batch's."""
        cut = lambda d: None if d is None else {f: a[lo:hi] for f, a in d.items()}
        return Batch(cut(self.inputs), cut(self.flags), cut(self.targets), cut(self.masks), cut(self.minutes),
                     cut(self.open_times), cut(self.close_times), cut(self.n_sub), self.fallback_refs,
                     self.n_dropped, cut(self.hidden), cut(self.padding), cut(self.ref_units))

    def to(self, device: torch.device) -> Batch:
        move = lambda d: {f: t.to(device, non_blocking=True) for f, t in d.items()}
        return Batch(move(self.inputs), move(self.flags), move(self.targets), move(self.masks), move(self.minutes),
                     self.open_times, self.close_times, self.n_sub, self.fallback_refs, self.n_dropped,
                     self.hidden, self.padding, self.ref_units)


@dataclass
class TSData:
    """The loaded study data of one run: bars, split, stats, fixed eval masks and hashes."""

    bars: dict[str, tsbars.Bars]
    split: tswin.WindowSplit
    stats: tsnorm.NormStats
    mask_cfg: MaskConfig
    patch_len: dict[str, int]
    mask_inputs: bool
    eval_masks: dict[str, MaskSet]                    # split -> targets and hidden {tf: (N, K) bool}, fixed
    eval_rows: dict[str, np.ndarray]                  # split -> (N,) scored rows of the split's index
    hashes: dict[str, str]
    info: dict[str, Any]
    mask_seed: int = 0                                # FIXED_SCHEMES draw training masks from it too
    channels: tuple[str, ...] = ()                    # model.channels

    def part(self, name: str) -> tswin.WindowIndex:
        return self.split.part(name)

    @property
    def tfs(self) -> list[str]:
        return list(self.split.index.tfs)


def load_bars(cfg: Any) -> dict[str, tsbars.Bars]:
    """Base bars of the configured source resampled to every timeframe: {tf: Bars} in config order.

    Raises:
        DataNotFoundError / DataError: missing file, unreadable file, invalid rows (with row numbers).
    """
    d = cfg.data
    session = Session(d.session_timezone, d.session_close)
    if d.source == "synthetic":
        base = tsbars.synthetic_bars(d.synthetic_bars, tf=d.base_tf, seed=d.synthetic_seed)
        return {f: tsbars.resample(base, f, session) for f in d.timeframes}
    path, timezone = Path(d.path or ""), d.timezone
    if d.source in SHIPPED:  # files whose time zone is known (sources.py)
        path, timezone = shipped_path(d.source), d.timezone or SHIPPED[d.source][3]
    return load_multi_timeframe(path, d.base_tf, d.timeframes, d.on_invalid, time_column=d.time_column,
                                timezone=timezone, session=session)


def mask_config(cfg: Any) -> MaskConfig:
    """The masking section as a data-layer ``MaskConfig`` (spec defaults filled in per TF)."""
    m, tfs = cfg.masking, cfg.data.timeframes
    base = default_mask_config(tfs, scheme=m.scheme)
    ratio = m.ratio if isinstance(m.ratio, dict) else dict.fromkeys(tfs, float(m.ratio))
    return MaskConfig(ratio=dict(ratio), span_min=dict(m.span_min or base.span_min),
                      span_max=dict(m.span_max or base.span_max), scheme=m.scheme)


def load_data(cfg: Any, *, stats_dir: Path | None = None, log: Any = print) -> TSData:
    """Load bars, index windows, split with embargo, fit (or load) train-only stats, draw fixed eval masks.

    Args:
        cfg: a resolved ``TSConfig``.
        stats_dir: where the stats file keyed by the split hash is written and re-read (checked on load).
        log: progress messages.

    Raises:
        DataError: empty split, missing TF in the stats, hash mismatch, unreadable bars.
    """
    with warnings.catch_warnings(record=True) as caught:  # rows sorted or dropped: into the log and the summary
        warnings.simplefilter("always", InvalidRowsWarning)
        warnings.simplefilter("always", UnsortedRowsWarning)
        bars = load_bars(cfg)
    notes = [str(w.message) for w in caught if issubclass(w.category, (InvalidRowsWarning, UnsortedRowsWarning))]
    for w in caught:
        if not issubclass(w.category, (InvalidRowsWarning, UnsortedRowsWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for note in notes:
        log(f"WARNING: {note}")
    w = cfg.windows
    if w.layout == "legacy":
        index = build_legacy_index(bars, base_tf=cfg.data.base_tf, context=dict(w.context))
    else:
        index = tswin.build_window_index(bars, base_tf=cfg.data.base_tf, context=dict(w.context),
                                         max_gap_minutes=dict(w.max_gap_minutes) or None)
    split = tswin.make_split(bars, index, fractions=tuple(cfg.data.split), train_stride_minutes=w.train_stride_minutes,
                             eval_stride_minutes=w.eval_stride_minutes, max_eval_windows=w.max_eval_windows,
                             seed=cfg.data.data_seed)
    stats = _stats(bars, split, stats_dir, cfg.data.normalisation)
    mcfg = mask_config(cfg)
    eval_masks, eval_rows, dropped = {}, {}, {}
    for name in ("val", "test"):
        part = split.part(name)
        o, c = tswin.gather_times(bars, part, np.arange(len(part)))
        masks = draw_masks(o, c, mask_rng(cfg.masking.mask_seed, 0, part.anchors), mcfg,
                           _padding(part, np.arange(len(part))))
        keep = ~fully_masked(masks.blanked)
        eval_rows[name] = np.flatnonzero(keep)
        eval_masks[name] = masks.select(keep)
        dropped[name] = int((~keep).sum())
    eval_hash = hash_json({"val": masks_hash(eval_masks["val"]), "test": masks_hash(eval_masks["test"]),
                           "rows": {k: hash_json(v.tolist()) for k, v in eval_rows.items()},
                           "split": split.hash, "mask_inputs": cfg.masking.mask_inputs,
                           **({"normalisation": cfg.data.normalisation}
                              if cfg.data.normalisation != "train_only" else {})})
    info = {"bars": {f: len(b) for f, b in bars.items()}, "windows": {k: len(v) for k, v in split.rows.items()},
            "embargoed": split.n_embargoed, "rejected": index.n_rejected, "scale_bp": stats.scale_bp,
            "eval_fully_masked_windows": dropped, "load_warnings": notes,
            "first_anchor": {k: _iso(index.anchors[v[0]]) for k, v in split.rows.items()},
            "last_anchor": {k: _iso(index.anchors[v[-1]]) for k, v in split.rows.items()},
            "layout": w.layout, "normalisation": cfg.data.normalisation}
    if w.layout == "legacy":
        info["legacy"] = _legacy_facts(bars, split)
    hashes = {"data_hash": hash_json(index.data_hashes), "split_hash": split.hash, "eval_hash": eval_hash}
    patch = {f: cfg.patch_len(f) for f in cfg.data.timeframes}
    log(f"data: bars {info['bars']}, windows {info['windows']}, scale_bp "
        f"{ {f: round(s, 1) for f, s in stats.scale_bp.items()} }")
    return TSData(bars, split, stats, mcfg, patch, cfg.masking.mask_inputs, eval_masks, eval_rows, hashes, info,
                  cfg.masking.mask_seed, tuple(cfg.model.channels))


def _iso(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns"))[:19]


def _stats(bars: dict[str, tsbars.Bars], split: tswin.WindowSplit, stats_dir: Path | None,
           kind: str = "train_only") -> tsnorm.NormStats:
    """Stats of ``data.normalisation``; written to a file keyed by the split hash and read back through its checks."""
    stats = tsnorm.fit_norm_stats(bars, split, kind=kind)
    if stats_dir is None:
        return stats
    path = Path(stats_dir) / f"norm_stats_{split.hash}.json"
    tsnorm.save_norm_stats(stats, path)
    loaded = tsnorm.load_norm_stats(path, split_hash=split.hash, tfs=list(split.index.tfs))
    if loaded.kind != kind:
        raise tsnorm.DataError(f"{path}: stats of normalisation {loaded.kind!r}, the config asks for {kind!r}; "
                               "delete the file to refit them.")
    return loaded


def _padding(part: tswin.WindowIndex, rows: np.ndarray) -> dict[str, np.ndarray] | None:
    """{tf: (B, K) bool} padding slots of these windows (legacy layout), else None."""
    if part.start is None:
        return None
    return {f: tswin.window_padding(part, f, rows) for f in part.tfs}  # type: ignore[misc]


def _legacy_facts(bars: dict[str, tsbars.Bars], split: tswin.WindowSplit) -> dict[str, Any]:
    """What the original's window does on this data, over all windows: real bars per TF and the look-ahead."""
    index = split.index
    rows = np.arange(len(index))
    ahead = look_ahead_minutes(bars, index, rows)
    real = {f: index.end[f] - index.start[f] for f in index.tfs}  # type: ignore[index]
    return {"real_bars_mean": {f: float(v.mean()) for f, v in real.items()},
            "empty_share": {f: float((v == 0).mean()) for f, v in real.items()},
            "look_ahead_share": {f: float((a > 0).mean()) for f, a in ahead.items()},
            "look_ahead_max_minutes": {f: float(a.max()) for f, a in ahead.items()}}


# ----------------------------------------------------------------------------- batches
def fully_masked(masks: dict[str, np.ndarray]) -> np.ndarray:
    """(B,) True for windows whose every bar of every TF is masked (possible with coarse TFs and closure)."""
    return np.logical_and.reduce([m.all(axis=1) for m in masks.values()])


def make_batch(data: TSData, part: tswin.WindowIndex, rows: np.ndarray, masks: MaskSet | None = None,
               *, seed: int = 0, epoch: int = 0, with_n_sub: bool = False) -> Batch:
    """Gather, mask, normalise and blank one batch of windows.

    Args:
        data: the run's data.
        part: the split's window index.
        rows: (B,) rows of ``part``.
        masks: fixed masks of these rows (val/test); None draws training masks from (seed, epoch, anchor).
        seed, epoch: the training mask stream.
        with_n_sub: also gather n_sub (cross-TF consistency term).

    Returns:
        The batch (CPU tensors).
    """
    opens, closes = tswin.gather_times(data.bars, part, rows)                            # {tf: (B, K)} ns
    padding = _padding(part, rows)                                                       # {tf: (B, K)} | None
    if masks is None:
        s, e = (data.mask_seed, 0) if data.mask_cfg.scheme in FIXED_SCHEMES else (seed, epoch)
        masks = draw_masks(opens, closes, mask_rng(s, e, part.anchors[rows]), data.mask_cfg, padding)
    keep = ~fully_masked(masks.blanked)                                                  # (B,)
    n_dropped = int((~keep).sum())
    if n_dropped:  # nothing visible: no reference price and nothing to reconstruct from
        rows, masks = rows[keep], masks.select(keep)
        opens, closes = {f: t[keep] for f, t in opens.items()}, {f: t[keep] for f, t in closes.items()}
        padding = None if padding is None else {f: p[keep] for f, p in padding.items()}
    ohlc = tswin.gather_windows(data.bars, part, rows)                                   # {tf: (B, K, 4)} NaN pad
    blanked = masks.blanked                                                              # {tf: (B, K)}
    ref, fallback = tsnorm.window_reference(ohlc, closes, part.base_tf, blanked if data.mask_inputs else None)
    z = tsnorm.normalise_windows(ohlc, ref, data.stats)                                   # {tf: (B, K, 4)}
    ref_units = None
    if data.stats.kind != "train_only":  # the level stays in the values: 0 is no price
        ref_units = {f: data.stats.from_common(ref, f) for f in data.tfs}
    if padding is not None:  # no bar: 0 in inputs and targets, never masked, never scored
        z = {f: np.where(padding[f][..., None], 0.0, v) for f, v in z.items()}
    anchor = part.anchors[rows][:, None]                                                 # (B, 1)
    inputs, flags, minutes = {}, {}, {}
    for f in data.tfs:
        if data.mask_inputs:
            inputs[f], flags[f] = apply_mask(z[f], blanked[f])
        else:  # the original's input: every bar's true value, no mask flag (the leak; the report flags it)
            inputs[f], flags[f] = z[f].copy(), np.zeros(blanked[f].shape, dtype=z[f].dtype)
        if data.channels:
            unseen = blanked[f] if data.mask_inputs else np.zeros_like(blanked[f])
            unseen = unseen | padding[f] if padding is not None else unseen
            inputs[f] = np.concatenate([inputs[f], input_channels(ohlc[f], unseen, data.channels)], axis=-1)
        p = data.patch_len[f]
        patch_close = closes[f][:, p - 1::p]                                              # (B, K/P)
        minutes[f] = (anchor - patch_close) / NS_PER_MINUTE
    t = lambda d: {f: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for f, v in d.items()}
    n_sub = None
    if with_n_sub:
        n_sub = tswin.gather_n_sub(data.bars, part, rows)
    return Batch(inputs=t(inputs), flags=t(flags), targets=t(z),
                 masks={f: torch.from_numpy(m) for f, m in masks.targets.items()}, minutes=t(minutes),
                 open_times=opens, close_times=closes, n_sub=n_sub,
                 fallback_refs=int(fallback.sum()), n_dropped=n_dropped, hidden=masks.hidden, padding=padding,
                 ref_units=ref_units)


def train_order(n_windows: int, batch_size: int, steps_cap: int | None, *, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled rows of one epoch in full batches (drop_last), from (seed, "order", epoch).

    Returns:
        A list of (batch_size,) row arrays; at most ``steps_cap`` of them.
    """
    from freezelab.utils.seeding import numpy_generator

    perm = numpy_generator(seed, "order", str(epoch)).permutation(n_windows)
    n = n_windows // batch_size
    if steps_cap is not None:
        n = min(n, steps_cap)
    return [perm[i * batch_size:(i + 1) * batch_size] for i in range(n)]


def eval_batches(data: TSData, name: str, batch_size: int, *, with_n_sub: bool = False):
    """Yield (Batch, slice) over a val/test split with its fixed masks, in chronological order.

    Windows whose every bar is masked were left out once, at load (counted in ``TSData.info``).
    """
    part, kept = data.part(name), data.eval_rows[name]
    for lo in range(0, len(kept), batch_size):
        rows = kept[lo:lo + batch_size]
        masks = data.eval_masks[name].select(slice(lo, lo + len(rows)))
        yield make_batch(data, part, rows, masks, with_n_sub=with_n_sub), slice(lo, lo + len(rows))


def steps_per_epoch(n_windows: int, batch_size: int, steps_cap: int | None) -> int:
    """Optimizer steps in one epoch (drop_last, capped)."""
    n = n_windows // batch_size
    return n if steps_cap is None else min(n, steps_cap)


def check_enough(n_windows: int, batch_size: int) -> None:
    """Raise when the train split cannot fill one batch."""
    from freezelab.errors import DataError

    if n_windows < batch_size:
        raise DataError(f"The train split has {n_windows} windows, fewer than train.batch_size={batch_size}; "
                        f"lower the batch size or use more data.")


def budget(cfg: Any, n_train: int) -> dict[str, Any]:
    """The training budget that must be identical across arms (budget_hash)."""
    t = cfg.train
    return {"max_epochs": t.max_epochs, "batch_size": t.batch_size, "steps_per_epoch":
            steps_per_epoch(n_train, t.batch_size, t.steps_per_epoch), "eval_batch_size": t.eval_batch_size,
            "patience": t.patience, "min_delta": t.min_delta, "selection": t.selection_metric,
            "eval_every_epochs": 1, "precision": cfg.runtime.precision}


def total_steps(cfg: Any, n_train: int) -> int:
    """Optimizer steps of the whole budget (the cosine's horizon)."""
    return max(1, cfg.train.max_epochs * steps_per_epoch(n_train, cfg.train.batch_size, cfg.train.steps_per_epoch))


def lr_schedule(warmup_steps: int, total: int, min_ratio: float):
    """f(s): linear warm-up (s+1)/W, then cosine from 1 to ``min_ratio`` at step ``total``."""
    def f(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        progress = min(1.0, (s - warmup_steps) / max(1, total - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return f
