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
from pathlib import Path

import numpy as np
import torch

from freezelab.tasks.timeseries import metrics as M
from freezelab.tasks.timeseries.bars import NS_PER_MINUTE, TIMEFRAMES
from freezelab.tasks.timeseries.batches import Batch, TSData, eval_batches
from freezelab.tasks.timeseries.losses import masked_huber
from freezelab.tracking import items as items_file
from freezelab.tracking.items import metric

BASELINES = ("persistence", "interpolation")


class Scorer:
    """Accumulates masked-reconstruction scores of one split over batches (bounded memory)."""

    def __init__(self, tfs: list[str], scale_bp: dict[str, float]) -> None:
        self.tfs, self.scale_bp = tfs, scale_bp
        self.sse = dict.fromkeys(tfs, 0.0)
        self.n = dict.fromkeys(tfs, 0)
        self.r2: dict[str, list[np.ndarray]] = {f: [] for f in tfs}
        self.corr: dict[str, list[np.ndarray]] = {f: [] for f in tfs}
        self.window_sse: dict[str, list[np.ndarray]] = {f: [] for f in tfs}  # per window, for items/*.npz
        self.window_n: dict[str, list[np.ndarray]] = {f: [] for f in tfs}
        self.loss_sum, self.loss_n = 0.0, 0

    def add(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> None:
        """Add one batch: {tf: (B, K, 4)} predictions and targets, {tf: (B, K)} masks."""
        for f in self.tfs:
            mse, n = M.masked_mse(pred[f], target[f], masks[f])
            if n:
                self.sse[f] += mse * n
                self.n[f] += n
            self.r2[f].append(M.window_r2(pred[f], target[f], masks[f]))
            err = np.where(masks[f][..., None], pred[f] - target[f], 0.0)     # (B, K, 4)
            self.window_sse[f].append((err * err).sum(axis=(1, 2)))
            self.window_n[f].append(4.0 * masks[f].sum(axis=1))
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

    def items(self) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Per-window columns (sse/<tf>, n/<tf>, corr/<tf>, r2/<tf>, scored/<tf>) and the metrics they define.

        The metrics reproduce ``result``: per TF Σ sse / Σ n and the mean of r over scored windows, and
        the TF-means over the TFs with a value (tracking/items.py).
        """
        cols: dict[str, np.ndarray] = {}
        for f in self.tfs:
            r2, corr = np.concatenate(self.r2[f]), np.concatenate(self.corr[f])
            scored = ~np.isnan(r2)
            cols.update({f"sse/{f}": np.concatenate(self.window_sse[f]), f"n/{f}": np.concatenate(self.window_n[f]),
                         f"r2/{f}": np.where(scored, r2, 0.0), f"corr/{f}": np.where(scored, corr, 0.0),
                         f"scored/{f}": scored.astype(np.float64)})
        with_n = [f for f in self.tfs if self.n[f]]
        with_w = [f for f in self.tfs if cols[f"scored/{f}"].sum() > 0]
        metrics: dict[str, dict] = {}
        for name, tfs, num, den in (("mse", with_n, "sse", "n"), ("r2", with_w, "r2", "scored"),
                                    ("corr", with_w, "corr", "scored")):
            if tfs:
                metrics[name] = metric([f"{num}/{f}" for f in tfs], [f"{den}/{f}" for f in tfs])
            metrics.update({f"{name}/{f}": metric(f"{num}/{f}", f"{den}/{f}") for f in tfs})
        if with_n:
            metrics["mse_bp"] = metric([f"sse/{f}" for f in with_n], [f"n/{f}" for f in with_n],
                                       [self.scale_bp[f] ** 2 for f in with_n])
        return cols, metrics


def _np(d: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {f: t.detach().float().cpu().numpy().astype(np.float64) for f, t in d.items()}


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: TSData, split: str, *, batch_size: int, device: torch.device,
             autocast: Callable, delta: float = 1.0, weights: dict[str, float] | None = None,
             items: dict[str, Scorer] | None = None) -> dict[str, float]:
    """Score the model on a val/test split with its fixed masks (eval mode, no gradients).

    Args:
        items: when given, receives ``items[split]`` = the filled ``Scorer`` (for ``write_items``).

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
    if items is not None:
        items[split] = scorer
    return scorer.result(split)


def write_items(run_dir: Path, source: str, scorers: dict[str, Scorer], data: TSData) -> None:
    """``items/<source>.npz``: per scored window (id = anchor time, ns) of each split, its columns and metrics."""
    splits, metrics = {}, {}
    for split, scorer in scorers.items():
        cols, metrics = scorer.items()  # the same TFs are scored in every split
        splits[split] = {"id": data.part(split).anchors[data.eval_rows[split]], **cols}
    index = data.split.index
    span = max(index.context[f] * TIMEFRAMES[f] for f in index.tfs) * NS_PER_MINUTE  # a window's reach back
    items_file.write_items(run_dir, source, splits, task="timeseries", metrics=metrics,
                           spans=dict.fromkeys(splits, int(span)))


def score_best(model: torch.nn.Module, data: TSData, run_dir: Path, **kw: object) -> dict[str, float]:
    """Score the restored best weights: returns the test metrics; writes the per-window val (at the best
    epoch) and test scores to ``items/model.npz``. ``kw`` as for ``evaluate``."""
    scorers: dict[str, Scorer] = {}
    evaluate(model, data, "val", items=scorers, **kw)  # type: ignore[arg-type]
    test = evaluate(model, data, "test", items=scorers, **kw)  # type: ignore[arg-type]
    write_items(run_dir, items_file.MODEL, scorers, data)
    return test


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


def score_baselines(data: TSData, *, batch_size: int, run_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """Persistence and interpolation on val and test with the same fixed masks (computed once per run).

    With ``run_dir``, each baseline's per-window scores go to ``items/<baseline>.npz``.

    Returns:
        {"persistence": {"val/mse": ..., "val/mse/h1": ..., "test/corr": ...}, "interpolation": {...}}
    """
    result: dict[str, dict[str, float]] = {name: {} for name in BASELINES}
    kept: dict[str, dict[str, Scorer]] = {name: {} for name in BASELINES}
    for split in ("val", "test"):
        scorers = {name: Scorer(data.tfs, data.stats.scale_bp) for name in BASELINES}
        for batch, _ in eval_batches(data, split, batch_size):
            target = {f: t.numpy().astype(np.float64) for f, t in batch.targets.items()}
            masks = {f: m.numpy() for f, m in batch.masks.items()}
            for name in BASELINES:
                scorers[name].add(baseline_predictions(batch, name), target, masks)
        for name in BASELINES:
            result[name].update(scorers[name].result(split))
            kept[name][split] = scorers[name]
    for name in BASELINES if run_dir is not None else ():
        write_items(run_dir, name, kept[name], data)
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
