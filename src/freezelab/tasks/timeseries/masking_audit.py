"""What the masks of a run really do, measured per timeframe (TF) and split (docs/timeseries-masking.md).

For the fixed val/test masks and a sample of epoch-1 training masks, every run records in summary.json
(``masking``), per TF:

- ``target_fraction``: share of bars that are targets (scored); the declared ratio ρ_f is the goal and
  [0.5 ρ_f, 2 ρ_f] the band. ``hidden_fraction``: share blanked in the input but not scored.
- ``leaked_targets``: targets that share time with a bar visible in the input, in any TF (must be 0).
  Checked interval against interval, independently of how the masks were drawn.
- the **aggregation oracle** against linear interpolation on the targets: the oracle knows only visible
  bars. It starts from the TF's own interpolation, then uses visible finer bars inside a target (exact
  OHLC when they tile it, else its open/close where they line up and bounds on high/low) and visible coarser
  bars covering it (open/close where they line up, every field clipped to [low, high]). ``oracle_gain`` =
  1 − MSE_oracle / MSE_interpolation: above 0 the masks leak something a model can learn to exploit.

Times of a batch are packed into one sorted int64 key per (window, time), key = b · stride + (t − t0_b), so
one ``searchsorted`` answers "which bar of TF f contains / intersects this bar" for every window at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from freezelab.errors import InvariantViolation
from freezelab.tasks.timeseries.bars import TIMEFRAMES
from freezelab.tasks.timeseries.metrics import interpolation_baseline

BAND = (0.5, 2.0)  # target fraction must lie in [0.5 ρ, 2 ρ]
ORACLE_TOLERANCE = 1e-6  # oracle_gain above this: visible bars tell something about targets
TRAIN_AUDIT_WINDOWS = 2000  # epoch-1 training windows audited per run
_FIELDS = ("bars", "targets", "hidden", "leaked", "entries", "sse_oracle", "sse_interpolation")


def _packing(open_times: Mapping[str, np.ndarray], close_times: Mapping[str, np.ndarray]) -> np.ndarray:
    """(B, 1) offsets so that t + offset is sorted across windows and never collides between windows."""
    tfs = list(open_times)
    t0 = np.min([open_times[f][:, 0] for f in tfs], axis=0)  # (B,)
    t1 = np.max([close_times[f][:, -1] for f in tfs], axis=0)
    stride = int((t1 - t0).max()) + 1
    if stride * len(t0) >= 2**62:
        raise ValueError("batch too long to pack; audit fewer windows at a time")
    return (np.arange(len(t0), dtype=np.int64) * stride - t0)[:, None]


def time_leaks(open_times: Mapping[str, np.ndarray], close_times: Mapping[str, np.ndarray],
               targets: Mapping[str, np.ndarray], visible: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Targets that share time with a visible bar of another TF: {tf: (B, K_f) bool}.

    Args:
        open_times, close_times: {tf: (B, K_f) int64 ns}; bar i covers [open, close).
        targets: {tf: (B, K_f) bool} scored bars.
        visible: {tf: (B, K_f) bool} bars whose true values reach the model input.
    """
    off = _packing(open_times, close_times)
    out = {}
    for g in targets:
        leak = np.zeros(targets[g].shape, dtype=bool)
        qo, qc = (open_times[g] + off)[targets[g]], (close_times[g] + off)[targets[g]]  # (T,)
        for f in targets:
            if f == g:
                continue
            vo, vc = (open_times[f] + off)[visible[f]], (close_times[f] + off)[visible[f]]  # sorted, disjoint
            j = np.searchsorted(vc, qo, side="right")  # first visible bar closing after the target opens
            hit = j < len(vc)
            hit[hit] = vo[j[hit]] < qc[hit]
            leak[targets[g]] |= hit
        out[g] = leak
    return out


def oracle_predictions(values_bp: Mapping[str, np.ndarray], open_times: Mapping[str, np.ndarray],
                       close_times: Mapping[str, np.ndarray], n_sub: Mapping[str, np.ndarray],
                       visible: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The aggregation oracle's OHLC for every bar: {tf: (B, K_f, 4)} in bp (module doc).

    Args:
        values_bp: {tf: (B, K_f, 4)} true level-removed OHLC in bp (one ref for all TFs, so TFs compare).
        open_times, close_times, n_sub: {tf: (B, K_f)} of the same windows.
        visible: {tf: (B, K_f) bool} bars whose values reach the input; only these are read.
    """
    off = _packing(open_times, close_times)
    ko = {f: (t + off).ravel() for f, t in open_times.items()}  # (B*K_f,) sorted
    kc = {f: (t + off).ravel() for f, t in close_times.items()}
    out = {}
    for g, v in values_bp.items():
        vis_g = visible[g]
        pred = interpolation_baseline(v, ~vis_g, open_times[g], close_times[g]).reshape(-1, 4).copy()
        pred[vis_g.ravel()] = v.reshape(-1, 4)[vis_g.ravel()]  # a visible bar is simply read
        n = len(pred)
        for f in sorted(values_bp, key=TIMEFRAMES.__getitem__):
            vf, vis_f = values_bp[f].reshape(-1, 4), visible[f].ravel()
            if TIMEFRAMES[f] < TIMEFRAMES[g]:  # finer bars inside g bars
                gid = np.searchsorted(ko[g], ko[f], side="right") - 1  # g bar opening at or before each f bar
                inside = (gid >= 0) & vis_f
                inside[inside] = kc[f][inside] <= kc[g][gid[inside]]
                gi, fi = gid[inside], np.flatnonzero(inside)
                high, low = np.full(n, -np.inf), np.full(n, np.inf)
                np.maximum.at(high, gi, vf[fi, 1])
                np.minimum.at(low, gi, vf[fi, 2])
                covered = np.bincount(gi, weights=n_sub[f].ravel()[fi], minlength=n)  # base bars seen
                first = fi[ko[f][fi] == ko[g][gi]]  # a visible finer bar opening with the g bar
                last = fi[kc[f][fi] == kc[g][gid[fi]]]
                pred[gid[first], 0] = vf[first, 0]
                pred[gid[last], 3] = vf[last, 3]
                tiled = covered == n_sub[g].ravel()  # visible finer bars cover every base bar of it
                pred[:, 1] = np.where(tiled, high, np.maximum(pred[:, 1], high))
                pred[:, 2] = np.where(tiled, low, np.minimum(pred[:, 2], low))
            elif TIMEFRAMES[f] > TIMEFRAMES[g]:  # a coarser bar covering each g bar
                cid = np.searchsorted(ko[f], ko[g], side="right") - 1
                ok = cid >= 0
                ok[ok] = (kc[f][cid[ok]] >= kc[g][ok]) & vis_f[cid[ok]]
                c = np.where(ok, cid, 0)
                pred[ok] = np.clip(pred[ok], vf[c[ok], 2:3], vf[c[ok], 1:2])
                same_open, same_close = ok & (ko[f][c] == ko[g]), ok & (kc[f][c] == kc[g])
                pred[same_open, 0] = vf[c[same_open], 0]
                pred[same_close, 3] = vf[c[same_close], 3]
        out[g] = pred.reshape(v.shape)
    return out


class MaskAudit:
    """Accumulates the figures of one split over batches: ``add`` per batch, then ``result``."""

    def __init__(self, tfs: list[str], scale_bp: Mapping[str, float]) -> None:
        self.scale_bp = scale_bp
        self.sums = {f: dict.fromkeys(_FIELDS, 0.0) for f in tfs}
        self.windows = 0

    def add(self, batch: Any, mask_inputs: bool = True) -> None:
        """One ``Batch`` (built with n_sub): its targets, hidden bars, times and true values."""
        targets = {f: m.numpy() for f, m in batch.masks.items()}
        blanked = batch.blanked
        visible = {f: ~b if mask_inputs else np.ones_like(b) for f, b in blanked.items()}
        bp = {f: z.numpy().astype(np.float64) * self.scale_bp[f] for f, z in batch.targets.items()}
        leaks = time_leaks(batch.open_times, batch.close_times, targets, visible)
        oracle = oracle_predictions(bp, batch.open_times, batch.close_times, batch.n_sub, visible)
        self.windows += len(batch)
        for f, t in targets.items():
            s, v = self.sums[f], bp[f] / self.scale_bp[f]
            interp = interpolation_baseline(v, ~visible[f], batch.open_times[f], batch.close_times[f])
            interp = np.where(visible[f][..., None], v, interp)
            s["bars"] += t.size
            s["targets"] += int(t.sum())
            s["hidden"] += int((blanked[f] & ~t).sum())
            s["leaked"] += int(leaks[f].sum())
            s["entries"] += 4 * int(t.sum())
            s["sse_oracle"] += float(((oracle[f] / self.scale_bp[f] - v)[t] ** 2).sum())
            s["sse_interpolation"] += float(((interp - v)[t] ** 2).sum())

    def result(self) -> dict[str, dict[str, float]]:
        """Per TF: fractions, counts, leaked targets and the oracle against interpolation (module doc)."""
        out = {}
        for f, s in self.sums.items():
            n, nt = max(s["bars"], 1), s["targets"]
            mse_o = s["sse_oracle"] / s["entries"] if s["entries"] else float("nan")
            mse_i = s["sse_interpolation"] / s["entries"] if s["entries"] else float("nan")
            gain = 1.0 - mse_o / mse_i if s["entries"] and mse_i > 0 else float("nan")
            out[f] = {"target_fraction": nt / n, "hidden_fraction": s["hidden"] / n,
                      "blanked_fraction": (nt + s["hidden"]) / n, "targets": int(nt),
                      "leaked_targets": int(s["leaked"]), "leaked_fraction": s["leaked"] / nt if nt else 0.0,
                      "oracle_mse": mse_o, "interpolation_mse": mse_i, "oracle_gain": gain}
        return out


def audit_masks(data: Any, *, seed: int, batch_size: int) -> dict[str, Any]:
    """The ``masking`` entry of summary.json: scheme, declared ratios, band and per-split, per-TF figures.

    Val/test: their fixed masks. Train: epoch-1 masks of up to ``TRAIN_AUDIT_WINDOWS`` windows spread over
    the split (the masks of later epochs are drawn the same way).
    """
    from freezelab.tasks.timeseries.batches import eval_batches, make_batch

    splits: dict[str, Any] = {}
    part = data.part("train")
    rows = np.unique(np.linspace(0, len(part) - 1, min(len(part), TRAIN_AUDIT_WINDOWS)).astype(np.int64))
    audit = MaskAudit(data.tfs, data.stats.scale_bp)
    for lo in range(0, len(rows), batch_size):
        audit.add(make_batch(data, part, rows[lo:lo + batch_size], seed=seed, epoch=1, with_n_sub=True),
                  data.mask_inputs)
    splits["train"] = audit.result()
    for name in ("val", "test"):
        audit = MaskAudit(data.tfs, data.stats.scale_bp)
        for batch, _ in eval_batches(data, name, batch_size, with_n_sub=True):
            audit.add(batch, data.mask_inputs)
        splits[name] = audit.result()
    ratio = data.mask_cfg.ratio
    return {"scheme": data.mask_cfg.scheme, "ratio": dict(ratio), "band": list(BAND), "splits": splits,
            "leak_free": all(v["leaked_targets"] == 0 for s in splits.values() for v in s.values()),
            "in_band": all(BAND[0] * ratio[f] <= v["target_fraction"] <= BAND[1] * ratio[f]
                           for s in splits.values() for f, v in s.items() if ratio[f] > 0)}


def masking_problems(audit: dict[str, Any], *, mask_inputs: bool = True) -> list[str]:
    """One line per leak or out-of-band fraction of an ``audit_masks`` result (for the log and warnings).

    Raises:
        InvariantViolation("masked_time_leak"): a scheme that promises no leak (disjoint, full_closure) leaked.
    """
    lines, ratio, (lo, hi) = [], audit["ratio"], audit["band"]
    for split, per_tf in audit["splits"].items():
        leaks = {f: v for f, v in per_tf.items() if v["leaked_targets"] or v["oracle_gain"] > ORACLE_TOLERANCE}
        if leaks:
            figures = ", ".join(f"{f} {v['leaked_fraction']:.0%} of targets share time with a visible bar, oracle "
                                f"{v['oracle_gain']:+.2f} vs interpolation" for f, v in leaks.items())
            if audit["scheme"] != "seed_closure" and mask_inputs:
                raise InvariantViolation("masked_time_leak", f"masking.scheme={audit['scheme']} leaked on {split}: "
                                         f"{figures}. The mask scheme is broken; report this with the config.")
            lines.append(f"masking leak ({audit['scheme']}, {split}): {figures}")
        out = {f: v["target_fraction"] for f, v in per_tf.items()
               if ratio[f] > 0 and not lo * ratio[f] <= v["target_fraction"] <= hi * ratio[f]}
        if out:
            lines.append(f"masking ({audit['scheme']}, {split}): target fraction outside {lo:g}×–{hi:g}× the declared "
                         "ratio: " + ", ".join(f"{f} {x:.0%} (declared {ratio[f]:.0%})" for f, x in out.items()))
    return lines


def check_batch_leak(batch: Any) -> None:
    """No target of a training batch shares time with a visible bar (raises; the disjoint and full schemes).

    Raises:
        InvariantViolation("masked_time_leak"): some target shares time with a visible bar.
    """
    targets = {f: m.numpy() for f, m in batch.masks.items()}
    leaks = time_leaks(batch.open_times, batch.close_times, targets, {f: ~b for f, b in batch.blanked.items()})
    bad = {f: int(m.sum()) for f, m in leaks.items() if m.any()}
    if bad:
        raise InvariantViolation("masked_time_leak", f"targets sharing time with a visible bar of another timeframe: "
                                 f"{bad}. The mask scheme is broken; report this with the config.")
