"""Losses of the reconstruction task (spec §7): masked Huber and the optional cross-TF consistency term.

Masked Huber (δ = 1, normalised units): per TF the mean over masked (bar, field) entries; across TFs a
weighted mean (w_f, equal by default) over the TFs that have masked entries in the batch, so a TF with
nothing masked is left out rather than scored 0, and M1's larger count does not dominate.

Consistency (λ_c > 0). For each adjacent pair (finer f, coarser g) and every g bar B that is not visible
in the input, whose constituent f bars are all inside the window (their n_sub add up to B's n_sub: the real
bar boundaries) and at least one of them is blanked (a target or hidden): ỹ_f = prediction at blanked bars,
observed value at visible ones, mapped to bp with the shared ref (z · s_f); aggregate over B (open first,
high max, low min, close last); Huber against B's true value in g's normalised units (bp / s_g). B is never
visible, so the term never teaches the model to copy an input. Padding never enters (there is none), and the
target is always the real coarser bar, never raw base-TF values.

Data parallel (``runtime.devices``): ``shard_loss`` is one process's share of the same loss, each term's sum
over its windows divided by the whole batch's count (``loss_counts``), so the shares add up to the whole.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def masked_huber(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], *,
                 delta: float = 1.0, weights: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted mean over TFs of the per-TF masked Huber loss.

    Args:
        pred, target: {tf: (B, K, 4)} normalised.
        masks: {tf: (B, K) bool}.
        delta: Huber δ.
        weights: {tf: w_f}; None = equal.

    Returns:
        (scalar loss, {tf: per-TF loss as float}); TFs without masked entries are absent from the dict.
        When no TF has a masked entry, the loss is a differentiable 0.
    """
    total, wsum, per_tf = None, 0.0, {}
    for f, p in pred.items():
        m = masks[f]
        if not bool(m.any()):
            continue
        err = F.huber_loss(p, target[f], reduction="none", delta=delta)        # (B, K, 4)
        loss_f = err[m].mean()                                                  # mean over masked entries
        w = 1.0 if weights is None else float(weights[f])
        total = loss_f * w if total is None else total + loss_f * w
        wsum += w
        per_tf[f] = float(loss_f.detach())
    if total is None:
        return sum(p.sum() for p in pred.values()) * 0.0, per_tf
    return total / wsum, per_tf


def consistency_index(open_times: dict[str, np.ndarray], close_times: dict[str, np.ndarray],
                      n_sub: dict[str, np.ndarray], blanked: dict[str, np.ndarray]) -> list[tuple]:
    """Membership of fine bars in coarse bars for each adjacent TF pair (numpy, vectorised per batch).

    Args:
        open_times, close_times, n_sub: {tf: (B, K_tf)} of the batch, TFs finest first.
        blanked: {tf: (B, K_tf) bool} bars not visible in the input (``Batch.blanked``: targets | hidden).

    Returns:
        [(f, g, member (B, K_f, K_g) bool, first (B, K_g), last (B, K_g), valid (B, K_g) bool,
        blanked_f (B, K_f) bool)], where first/last are the positions of the first/last constituent f bar of
        each g bar.
    """
    tfs, out = list(open_times), []
    for f, g in zip(tfs[:-1], tfs[1:]):
        of = open_times[f][:, :, None]                                                  # (B, K_f, 1)
        member = (of >= open_times[g][:, None, :]) & (of < close_times[g][:, None, :])  # (B, K_f, K_g)
        complete = (member * n_sub[f][:, :, None]).sum(axis=1) == n_sub[g]              # (B, K_g)
        touched = (member & blanked[f][:, :, None]).any(axis=1)                         # (B, K_g)
        kf = member.shape[1]
        first = np.argmax(member, axis=1)                                               # (B, K_g)
        last = kf - 1 - np.argmax(member[:, ::-1, :], axis=1)
        valid = complete & touched & member.any(axis=1) & blanked[g]
        out.append((f, g, member, first, last, valid, blanked[f]))
    return out


def consistency_loss(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor], index: list[tuple],
                     scale_bp: dict[str, float], *, delta: float = 1.0) -> torch.Tensor:
    """Mean over TF pairs (with at least one valid coarse bar) of the Huber between aggregated ỹ_f and g.

    Args:
        pred, target: as in ``masked_huber``.
        index: from ``consistency_index`` on the same batch (it carries which f bars are blanked).
        scale_bp: {tf: s_f} train-only scales.
        delta: Huber δ.

    Returns:
        A scalar (0 when no pair has a valid coarse bar).
    """
    losses = []
    for entry in index:
        if not entry[5].any():
            continue
        agg, truth = _pair_terms(pred, target, entry, scale_bp)
        losses.append(F.huber_loss(agg, truth, delta=delta))
    if not losses:
        return sum(p.sum() for p in pred.values()) * 0.0
    return torch.stack(losses).mean()


def _pair_terms(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor], entry: tuple,
                scale_bp: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """One TF pair's (aggregated ỹ_f, true g bar) at its valid coarse bars, both (n_valid, 4) in g's units."""
    f, g, member, first, last, valid, blank_f = entry
    dev = pred[f].device
    hide = torch.from_numpy(blank_f).to(dev)[..., None]                              # (B, K_f, 1)
    y = torch.where(hide, pred[f], target[f]) * scale_bp[f]                          # (B, K_f, 4) bp
    mem = torch.from_numpy(member).to(dev)[..., None]                                # (B, K_f, K_g, 1)
    big = torch.finfo(y.dtype).max
    high = torch.where(mem, y[:, :, None, 1:2], -big).amax(dim=1)                    # (B, K_g, 1)
    low = torch.where(mem, y[:, :, None, 2:3], big).amin(dim=1)                      # (B, K_g, 1)
    fi, la = torch.from_numpy(first).to(dev), torch.from_numpy(last).to(dev)
    opn = torch.gather(y[..., 0], 1, fi)[..., None]                                  # (B, K_g, 1)
    cls = torch.gather(y[..., 3], 1, la)[..., None]
    agg = torch.cat([opn, high, low, cls], dim=-1) / scale_bp[g]                     # (B, K_g, 4) g units
    v = torch.from_numpy(valid).to(dev)
    return agg[v], target[g][v]


# ----------------------------------------------------------------------------- data parallel (runtime.devices)
def loss_counts(masks: dict[str, torch.Tensor], index: list[tuple] | None) -> tuple[dict[str, int], list[int]]:
    """The entries each term of a whole batch's loss averages over: per TF its masked (bar, field) entries, per
    consistency pair its valid (coarse bar, field) entries (``index``: None without the consistency term)."""
    return ({f: 4 * int(m.sum()) for f, m in masks.items()},
            [4 * int(entry[5].sum()) for entry in index or []])


def shard_index(index: list[tuple] | None, lo: int, hi: int) -> list[tuple] | None:
    """``consistency_index`` of rows lo:hi of its batch."""
    return None if index is None else [(f, g, *(a[lo:hi] for a in arrays)) for f, g, *arrays in index]


def shard_loss(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
               index: list[tuple] | None, scale_bp: dict[str, float], counts: tuple[dict[str, int], list[int]], *,
               delta: float = 1.0, weights: dict[str, float] | None = None,
               consistency_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One process's share of a whole batch's loss under data parallelism (engine/parallel.py).

    Each term is this shard's sum over its entries divided by the whole batch's count (``loss_counts``), so
    the shares of all processes add up to ``masked_huber`` (+ λ_c · ``consistency_loss``) of the whole batch,
    and so do their gradients. Which terms exist (a TF with masked entries, a pair with valid coarse bars) is
    decided by the whole batch's counts, so every process builds the same graph even where its own shard
    has no entry of a term (that term adds a zero gradient there).

    Args:
        pred, target, masks: of this shard, as in ``masked_huber``.
        index: ``consistency_index`` of this shard (``shard_index``), or None without the consistency term.
        scale_bp, delta, weights: as in ``masked_huber`` and ``consistency_loss``.
        counts: ``loss_counts`` of the whole batch.
        consistency_weight: λ_c.

    Returns:
        (this shard's share of the loss, {tf: its share of that TF's masked Huber}); the per-TF shares, summed
        over the processes, are ``masked_huber``'s per-TF values.
    """
    tf_n, pair_n = counts
    present = [f for f in pred if tf_n[f] > 0]
    w = {f: 1.0 if weights is None else float(weights[f]) for f in present}
    shares = {f: F.huber_loss(pred[f], target[f], reduction="none", delta=delta)[masks[f]].float().sum() / tf_n[f]
              for f in present}
    total = (sum(w[f] * shares[f] for f in present) / sum(w.values()) if present
             else sum(p.sum() for p in pred.values()) * 0.0)
    pairs = [(entry, n) for entry, n in zip(index or [], pair_n) if n > 0]
    if pairs and consistency_weight > 0:
        cons = sum(F.huber_loss(*_pair_terms(pred, target, entry, scale_bp), reduction="none",
                                delta=delta).float().sum() / n for entry, n in pairs)
        total = total + consistency_weight * cons / len(pairs)
    return total, {f: s.detach() for f, s in shares.items()}
