"""Scores on val/test with the fixed masks (spec §8): the model, persistence and linear interpolation.

Per TF: masked MSE in normalised units and in bp², R² and Pearson r per window then averaged over
windows with >= 3 masked entries and SST > 0, masked points scored and windows used. Averages over
TFs: ``{split}/mse``, ``{split}/r2``, ``{split}/corr`` (the TF-mean of the per-TF values), so the
finest TF's larger count does not dominate. Skill = 1 − MSE_model / MSE_baseline, per TF and on the
TF-mean MSE. Baselines do not depend on the model, so they are computed once per run.

Metric names never contain "skipped": the report counts any such key as skipped optimizer steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from freezelab.tasks.timeseries import metrics as M
from freezelab.tasks.timeseries.batches import Batch, TSData, eval_batches
from freezelab.tasks.timeseries.losses import masked_huber

BASELINES = ("persistence", "interpolation")


class Scorer:
    """Accumulates masked-reconstruction scores of one split over batches (bounded memory)."""

    def __init__(self, tfs: list[str], scale_bp: dict[str, float]) -> None:
        self.tfs, self.scale_bp = tfs, scale_bp
        self.sse = dict.fromkeys(tfs, 0.0)
        self.n = dict.fromkeys(tfs, 0)
        self.r2: dict[str, list[np.ndarray]] = {f: [] for f in tfs}
        self.corr: dict[str, list[np.ndarray]] = {f: [] for f in tfs}
        self.loss_sum, self.loss_n = 0.0, 0

    def add(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> None:
        """Add one batch: {tf: (B, K, 4)} predictions and targets, {tf: (B, K)} masks."""
        for f in self.tfs:
            mse, n = M.masked_mse(pred[f], target[f], masks[f])
            if n:
                self.sse[f] += mse * n
                self.n[f] += n
            self.r2[f].append(M.window_r2(pred[f], target[f], masks[f]))
            self.corr[f].append(M.window_pearson(pred[f], target[f], masks[f]))

    def add_loss(self, loss: float, weight: int) -> None:
        self.loss_sum += loss * weight
        self.loss_n += weight

    def result(self, split: str) -> dict[str, float]:
        """{split}/mse, /mse_bp, /r2, /corr, /n_points (and per TF: .../<tf>, /n_windows/<tf>)."""
        out: dict[str, float] = {}
        for f in self.tfs:
            mse = self.sse[f] / self.n[f] if self.n[f] else float("nan")
            r2 = M.summarise_windows(np.concatenate(self.r2[f]))
            corr = M.summarise_windows(np.concatenate(self.corr[f]))
            out.update({f"{split}/mse/{f}": mse, f"{split}/mse_bp/{f}": mse * self.scale_bp[f] ** 2,
                        f"{split}/r2/{f}": r2.mean, f"{split}/corr/{f}": corr.mean,
                        f"{split}/n_points/{f}": self.n[f], f"{split}/n_windows/{f}": r2.n_used})
        for name in ("mse", "mse_bp", "r2", "corr"):
            vals = [out[f"{split}/{name}/{f}"] for f in self.tfs if np.isfinite(out[f"{split}/{name}/{f}"])]
            out[f"{split}/{name}"] = float(np.mean(vals)) if vals else float("nan")
        out[f"{split}/n_points"] = sum(self.n.values())
        if self.loss_n:
            out[f"{split}/loss"] = self.loss_sum / self.loss_n
        return out


def _np(d: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {f: t.detach().float().cpu().numpy().astype(np.float64) for f, t in d.items()}


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TSData, split: str, *, batch_size: int, device: torch.device,
             autocast: Callable, delta: float = 1.0, weights: dict[str, float] | None = None) -> dict[str, float]:
    """Score the model on a val/test split with its fixed masks (eval mode, no gradients).

    Returns:
        The metrics of ``Scorer.result`` plus ``{split}/loss`` (masked Huber).
    """
    model.eval()
    scorer = Scorer(data.tfs, data.stats.scale_bp)
    for batch, _ in eval_batches(data, split, batch_size):
        b = batch.to(device)
        with autocast():
            pred = model(b.inputs, b.flags, b.minutes)                       # {tf: (B, K, 4)}
        loss, _ = masked_huber(pred, b.targets, b.masks, delta=delta, weights=weights)
        scorer.add_loss(float(loss), len(batch))
        scorer.add(_np(pred), _np(batch.targets), {f: m.numpy() for f, m in batch.masks.items()})
    return scorer.result(split)


def baseline_predictions(batch: Batch, name: str) -> dict[str, np.ndarray]:
    """Persistence or linear-interpolation predictions of one batch (normalised units), from visible bars only."""
    out, blanked = {}, batch.blanked
    for f, z in batch.targets.items():
        values, mask = z.numpy().astype(np.float64), blanked[f]
        if name == "persistence":
            out[f] = M.persistence_baseline(values, mask)
        else:
            out[f] = M.interpolation_baseline(values, mask, batch.open_times[f], batch.close_times[f])
    return out


def score_baselines(data: TSData, *, batch_size: int) -> dict[str, dict[str, float]]:
    """Persistence and interpolation on val and test with the same fixed masks (computed once per run).

    Returns:
        {"persistence": {"val/mse": ..., "val/mse/h1": ..., "test/corr": ...}, "interpolation": {...}}
    """
    result: dict[str, dict[str, float]] = {name: {} for name in BASELINES}
    for split in ("val", "test"):
        scorers = {name: Scorer(data.tfs, data.stats.scale_bp) for name in BASELINES}
        for batch, _ in eval_batches(data, split, batch_size):
            target = {f: t.numpy().astype(np.float64) for f, t in batch.targets.items()}
            masks = {f: m.numpy() for f, m in batch.masks.items()}
            for name in BASELINES:
                scorers[name].add(baseline_predictions(batch, name), target, masks)
        for name in BASELINES:
            result[name].update(scorers[name].result(split))
    return result


def add_skill(metrics: dict[str, float], baselines: dict[str, dict[str, float]], split: str,
              tfs: list[str]) -> dict[str, float]:
    """Skill against each baseline, per TF and on the TF-mean MSE: {split}/skill_<baseline>[/<tf>]."""
    out = dict(metrics)
    for name, values in baselines.items():
        for suffix in [""] + [f"/{f}" for f in tfs]:
            base = values.get(f"{split}/mse{suffix}")
            model = metrics.get(f"{split}/mse{suffix}")
            if base is not None and model is not None:
                out[f"{split}/skill_{name}{suffix}"] = float(M.skill(model, base))
    return out
