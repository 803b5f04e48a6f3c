"""The training loop of one time-series run: steps, freeze checks, unfreezing, early stopping, test.

One step: batch (training masks redrawn per epoch) → leak check on the first batches of every epoch →
autocast forward → masked Huber (+ λ_c · consistency) → backward (scaled under fp16) → frozen groups
have no gradient → unscale → clip over the optimizer's parameters that have a gradient → a non-finite
norm skips the step (counted; fp16: the scaler halves its scale) → I5 lr check → decoupled weight decay
on matrices → optimizer step → scheduler step → I7 finite check. Invariants I1 (frozen bit-identical)
after the first step, at every epoch end and at the end; I2 (dead tensors) after the first applied step
of every phase. fp16 fails the run as ``fp16_scale_collapse`` when the scale drops below 1 or more than
``runtime.fp16_max_skip_fraction`` of an epoch's steps are skipped, never training on zero gradients.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from freezelab.errors import ConfigError, NumericFailure
from freezelab.freeze.invariants import PhaseSnapshots, frozen_unchanged
from freezelab.freeze.param_groups import FreezeController
from freezelab.tasks.timeseries import batches as B
from freezelab.tasks.timeseries.losses import (
    consistency_index,
    consistency_loss,
    loss_counts,
    masked_huber,
    shard_index,
    shard_loss,
)
from freezelab.tasks.timeseries.masking import LEAKY_SCHEMES, assert_no_masked_leak
from freezelab.tasks.timeseries.masking_audit import check_batch_leak
from freezelab.tasks.timeseries.scoring import add_skill, evaluate, score_best
from freezelab.tracking.checkpoints import BEST, Checkpoints, restore_training_state, training_state
from freezelab.tracking.selection import EarlyStopping
from freezelab.tracking.tracker import Tracker
from freezelab.utils.seeding import derive_seed


class Precision:
    """Autocast and (fp16 only) a GradScaler; bf16 and fp32 need no scaling."""

    def __init__(self, precision: str, device: torch.device, init_scale: float = 2.0**16) -> None:
        self.precision, self.device = precision, device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, init_scale=init_scale) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    def skip(self, opt: torch.optim.Optimizer) -> None:
        """A step with non-finite gradients: fp16 lets the scaler skip it and lower its scale."""
        if self.scaler:
            self.scaler.step(opt)   # sees the inf found while unscaling: no update
            self.scaler.update()    # scale × backoff_factor

    @property
    def scale(self) -> float | None:
        return float(self.scaler.get_scale()) if self.scaler else None


def selection_mode(cfg: Any) -> str:
    """min or max for the selection metric (auto: max for corr, r2 and skill)."""
    if cfg.train.selection_mode != "auto":
        return cfg.train.selection_mode
    name = cfg.train.selection_metric
    return "max" if any(k in name for k in ("corr", "r2", "skill")) else "min"


def backbone_groups(controller: FreezeController) -> list[str]:
    return [n for n in controller.order if n.startswith("encoder.")]


def decay_ids(model: torch.nn.Module) -> set[int]:
    """Tensors that get weight decay: matrices outside norm modules (no decay on norms, biases, μ_f)."""
    from freezelab.tasks.timeseries.model import is_norm

    in_norm = {id(p) for m in model.modules() if is_norm(m) for p in m.parameters()}
    return {id(p) for p in model.parameters() if p.ndim >= 2 and id(p) not in in_norm}


@torch.no_grad()
def _apply_decay(opt: torch.optim.Optimizer, ids: set[int], wd: float) -> None:
    """AdamW's decoupled decay, p ← p·(1 − lr_g·wd), on decayed tensors of groups with lr > 0."""
    if wd <= 0:
        return
    for pg in opt.param_groups:
        ps = [p for p in pg["params"] if id(p) in ids and p.grad is not None]
        if ps and pg["lr"] > 0:
            torch._foreach_mul_(ps, 1.0 - pg["lr"] * wd)


def check_leak(batch: B.Batch, time_aligned: bool = True) -> None:
    """Every blanked bar of the model input holds the fill value (0), never its value, and (``time_aligned``:
    every scheme but the leaky ones kept to reproduce runs) no target shares time with a visible bar of another TF
    (raises)."""
    for f, blanked in batch.blanked.items():
        assert_no_masked_leak(batch.inputs[f].numpy(), batch.targets[f].numpy(), blanked)
    if time_aligned:
        check_batch_leak(batch)


def train_run(model: torch.nn.Module, controller: FreezeController, cfg: Any, data: B.TSData, *, seed: int,
              device: torch.device, tracker: Tracker, log: Callable[[str], None], facts: dict[str, Any],
              run_dir: Path, baselines: dict[str, dict[str, float]], progress: bool = False,
              dp: Any = None) -> dict[str, Any]:
    """Train with early stopping on the selection metric, restore the best weights, score test once.

    ``dp`` (``runtime.devices`` > 1, engine/parallel.py): every process builds each whole batch (the same
    windows and masks everywhere), trains on its contiguous share of the windows with its share of the whole
    batch's loss (``losses.shard_loss``), and the gradients and loss are summed over the processes, so every
    decision (skip, clip, early stop) is the same everywhere. Dropout draws per (process, step).

    Raises:
        InvariantViolation: a frozen tensor changed, lr overridden, masked input leaked, all tensors dead.
        NumericFailure: fp16 scale collapse, or ``runtime.max_nonfinite_steps`` non-finite steps in a row.
    """
    t, o, bb = cfg.train, cfg.optim, cfg.backbone
    torch.manual_seed(derive_seed(seed, "dropout") % 2**63)   # dropout draws from the global generator
    prec = Precision(cfg.runtime.precision, device, cfg.runtime.fp16_init_scale)
    part = data.part("train")
    B.check_enough(len(part), t.batch_size)
    n_steps = B.steps_per_epoch(len(part), t.batch_size, t.steps_per_epoch)
    f = B.lr_schedule(o.warmup_steps, B.total_steps(cfg, len(part)), o.min_lr_ratio)
    opt = controller.build_optimizer(o.lr, kind="adamw", betas=tuple(o.betas), eps=o.eps)
    sched = controller.build_scheduler(opt, o.lr, schedule=f)
    controller.check_layout(opt)
    decayed = decay_ids(model)
    mode, sel = selection_mode(cfg), t.selection_metric
    with_n_sub = cfg.loss.consistency_weight > 0
    frozen_checks: list[dict[str, Any]] = []  # I1: what was compared, when, and the outcome (summary.json)
    facts["invariants"] = {"frozen_unchanged": False, "frozen_checks": frozen_checks}  # a failed run shows it
    phase = PhaseSnapshots.take(model, controller, record=frozen_checks, phase="training start")
    bb_scales = {n: controller.groups[n].lr_scale for n in backbone_groups(controller)}
    ramp_steps = ramp_done = 0
    best = EarlyStopping(sel, mode, t.patience, min_delta=t.min_delta)
    step, seen, skipped_total, nonfinite_run, train_seconds = 0, 0, 0, 0, 0.0
    dead: list[str] = []
    notes: list[str] = []
    epoch, first, stopped, mid = 0, 1, False, None
    ckpt = Checkpoints(run_dir, minutes=cfg.runtime.checkpoint_minutes)
    ckpt.set_base(model)  # as every attempt rebuilds it: pretrained backbone + seeded init

    def commit(position: dict[str, Any], epoch_acc: dict[str, Any] | None = None) -> None:
        state, tensors = training_state(model, opt, sched, controller, best, scaler=prec.scaler)
        state.update(position=position, epoch_acc=epoch_acc, facts={"phases": facts.get("phases")},
                     counters={"step": step, "seen": seen, "skipped_total": skipped_total,
                               "nonfinite_run": nonfinite_run, "train_seconds": train_seconds, "dead": dead,
                               "notes": notes, "ramp": [ramp_steps, ramp_done], "check_dead": phase.check_dead,
                               "frozen_checks": frozen_checks})
        dirty = position["batch"] is None and best.epoch == position["epoch"]
        ckpt.commit(state, tensors=tensors, weights={BEST: best.state} if dirty and best.state else None,
                    model=model)

    resume = ckpt.load()
    if resume is not None:  # an interrupted attempt: continue where its last commit stopped, bit for bit
        tracker.resumed()  # metrics.jsonl was cut back to the checkpoint: TensorBoard follows
        restore_training_state(ckpt, resume, model, opt, sched, controller, best, scaler=prec.scaler)
        c, at, mid = resume["counters"], resume["position"], resume["epoch_acc"]
        step, seen, skipped_total, nonfinite_run = c["step"], c["seen"], c["skipped_total"], c["nonfinite_run"]
        train_seconds, dead, notes, (ramp_steps, ramp_done) = c["train_seconds"], c["dead"], c["notes"], c["ramp"]
        facts["phases"] = resume["facts"]["phases"]
        phase = PhaseSnapshots.resume(model, controller, frozen_checks, c.get("frozen_checks"))
        phase.check_dead = c["check_dead"]
        epoch, stopped = at["epoch"], at["stopped"]
        first = epoch if at["batch"] is not None else epoch + 1
        log((f"resumed in epoch {epoch} after batch {at['batch']}" if at["batch"] is not None else
             f"resumed after epoch {epoch}") + f" (step {step})" + (", training had stopped" if stopped else ""))
    tracker.live.phase("train", total=t.max_epochs * n_steps, items="windows", epochs=t.max_epochs,
                       steps_per_epoch=n_steps, done=step, last_phase=True)
    epochs = range(first, t.max_epochs + 1) if not stopped else range(0)  # stopped: straight to the test
    for epoch in epochs:
        facts["epoch"] = epoch
        if mid is None:  # a new epoch (a resumed partial one has done these already)
            if bb.train == "frozen_then_unfrozen" and epoch == bb.unfreeze_epoch + 1:
                _unfreeze(controller, opt, cfg, f(step), log, facts, epoch)
                phase = PhaseSnapshots.take(model, controller, record=frozen_checks,
                                            phase=f"epoch {epoch} (after unfreezing the backbone)")
                ramp_steps, ramp_done = bb.unfreeze_warmup_steps, 0
                if bb.reset_patience:
                    best.reset_patience()
            mid = {"batch": 0, "seconds": 0.0, "loss_sum": 0.0, "tf_loss": {}, "tf_count": {},
                   "masked": {fn: 0.0 for fn in data.tfs}, "norms_sum": {}, "skipped": 0, "applied": 0,
                   "fully_masked": 0, "fallback_refs": 0}
        model.train()
        t_epoch = time.time() - mid["seconds"]
        loss_sum, tf_loss, tf_count, masked = mid["loss_sum"], mid["tf_loss"], mid["tf_count"], mid["masked"]
        norms_sum: dict[str, float] = mid["norms_sum"]
        skipped, applied, fully_masked, fallback_refs = (mid["skipped"], mid["applied"], mid["fully_masked"],
                                                         mid["fallback_refs"])
        order = B.train_order(len(part), t.batch_size, t.steps_per_epoch, seed=seed, epoch=epoch)
        i0, mid = mid["batch"], None
        bar = tqdm(order[i0:], desc=f"epoch {epoch}", unit="step", disable=not progress, leave=False)
        for i, rows in enumerate(bar, start=i0):
            batch = B.make_batch(data, part, rows, seed=seed, epoch=epoch, with_n_sub=with_n_sub)
            fully_masked, fallback_refs = fully_masked + batch.n_dropped, fallback_refs + batch.fallback_refs
            if len(batch) == 0:
                continue
            if i < t.leak_check_batches and data.mask_inputs:
                check_leak(batch, data.mask_cfg.scheme not in LEAKY_SCHEMES)
            for fn in data.tfs:
                masked[fn] += float(batch.masks[fn].float().mean())
            cidx = (consistency_index(batch.open_times, batch.close_times, batch.n_sub, batch.blanked)
                    if with_n_sub else None)
            if dp is not None:  # this process's windows; dropout masks of its own, the same after a resume
                r, share = dp.shard(range(len(batch)))
                dp.reseed(seed, step)
                b = batch.rows(r.start, r.stop).to(device)
            else:
                b = batch.to(device)
            if ramp_done < ramp_steps:  # linear warm-up of the just-unfrozen groups, as part of their scale
                ramp_done += 1
                for name, s_bb in bb_scales.items():
                    controller.groups[name].lr_scale = s_bb * ramp_done / ramp_steps
                controller.sync_lrs(opt, f(step))
            with prec.autocast():
                pred = model(b.inputs, b.flags, b.minutes)                    # {tf: (B, K, 4)}
            if dp is None:
                loss, per_tf = _loss(pred, b, cidx, cfg, data.stats.scale_bp)
                local = loss
            else:
                local, loss, per_tf = _shard_loss(pred, b, batch, cidx, r, share, cfg, data.stats.scale_bp, dp)
            finite, loss_ok, norms = _optimizer_step(loss, opt, controller, prec, o.grad_clip, f(step), o.lr,
                                                     decayed, o.weight_decay, local=local, dp=dp)
            lrs = {f"lr/{pg['name']}": pg["lr"] for pg in opt.param_groups}  # the lrs this step used
            if finite:
                nonfinite_run, applied = 0, applied + 1
                for name, v in norms.items():
                    norms_sum[name] = norms_sum.get(name, 0.0) + v
            else:  # skipped and counted; under fp16 the scaler has skipped it and lowered its scale
                skipped, nonfinite_run = skipped + 1, nonfinite_run + 1
                if loss_ok and prec.scaler is not None:
                    _check_scale(prec, epoch, step + 1)
                elif nonfinite_run >= cfg.runtime.max_nonfinite_steps:
                    shown = ", ".join(f"{n} {v:.3g}" for n, v in norms.items()) or "none: the loss itself"
                    raise NumericFailure("non_finite", f"{nonfinite_run} consecutive non-finite losses or gradient "
                                         f"norms (epoch {epoch}, step {step + 1}; gradient norms by group: {shown}). "
                                         f"Lower optim.lr (now {o.lr:g}) or optim.grad_clip (now {o.grad_clip:g}), "
                                         "use runtime.precision: fp32, or raise runtime.max_nonfinite_steps (now "
                                         f"{cfg.runtime.max_nonfinite_steps}) to skip more such steps")
            with warnings.catch_warnings():  # a skipped first step makes torch warn about the call order
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                sched.step()
            step += 1
            facts["step"] = step
            if finite:
                dead = phase.after_step(model, step, epoch)                           # I7, I1, I2
                if dead:
                    notes.append(f"epoch {epoch}: tensors unchanged after the first step: {dead[:5]}")
                    log(f"warning: {notes[-1]}")
                loss_sum += float(loss.detach())
                for fn, v in per_tf.items():
                    tf_loss[fn] = tf_loss.get(fn, 0.0) + v
                    tf_count[fn] = tf_count.get(fn, 0) + 1
            step_loss = float(loss.detach()) if finite else float("nan")
            if prec.scaler is not None or tracker.due(step):
                tracker.log({"kind": "step", "phase": "train", "epoch": epoch, "step": step,
                             "train/step_loss": step_loss, **lrs, **{f"grad_norm/{k}": v for k, v in norms.items()},
                             **({"fp16/scale": prec.scale} if prec.scaler is not None else {})}, step=step)
            tracker.live.step(done=step, items=len(batch), loss=step_loss, epoch=epoch, step_in_epoch=i + 1)
            seen += len(batch)
            if ckpt.due() and i + 1 < len(order):                                 # protocol §4: every M minutes
                commit({"phase": "train", "epoch": epoch, "batch": i + 1, "stopped": False, "stop_reason": None},
                       {"batch": i + 1, "seconds": time.time() - t_epoch, "loss_sum": loss_sum, "tf_loss": tf_loss,
                        "tf_count": tf_count, "masked": masked, "norms_sum": norms_sum, "skipped": skipped,
                        "applied": applied, "fully_masked": fully_masked, "fallback_refs": fallback_refs})
        skipped_total += skipped
        if prec.scaler is not None and n_steps and skipped / n_steps > cfg.runtime.fp16_max_skip_fraction:
            raise NumericFailure("fp16_scale_collapse", f"{skipped} of {n_steps} steps of epoch {epoch} "
                                 f"({skipped / n_steps:.0%}) were skipped for fp16 overflow (limit "
                                 f"{cfg.runtime.fp16_max_skip_fraction:.0%}); the model would train on zero "
                                 f"gradients. Use runtime.precision: bf16 or fp32.")
        train_seconds += time.time() - t_epoch
        phase.check_frozen(model, f"at the end of epoch {epoch}", step=step)
        tracker.live.note("evaluating val")
        val = evaluate(model, data, "val", batch_size=t.eval_batch_size, device=device, autocast=prec.autocast,
                       delta=cfg.loss.huber_delta, weights=cfg.loss.tf_weights)
        val = add_skill(val, baselines, "val", data.tfs)
        record = {"kind": "epoch", "phase": "train", "epoch": epoch, "step": step,
                  "train/loss": loss_sum / max(1, applied),
                  **{f"train/loss/{fn}": v / tf_count[fn] for fn, v in tf_loss.items()},
                  **{f"train/target_fraction/{fn}": v / max(1, len(order)) for fn, v in masked.items()}, **val,
                  **{f"lr/{pg['name']}": pg["lr"] for pg in opt.param_groups},
                  **{f"grad_norm/{k}": v / max(1, applied) for k, v in norms_sum.items()},
                  "train/skipped_steps": skipped, "train/windows": len(order) * t.batch_size - fully_masked,
                  "train/fully_masked_windows": fully_masked, "train/fallback_ref_windows": fallback_refs,
                  **({"fp16/scale": prec.scale} if prec.scaler is not None else {}), "seconds": time.time() - t_epoch}
        tracker.log(record, step=step)
        log(f"epoch {epoch}: train loss {record['train/loss']:.4f} | val mse {val['val/mse']:.4f} "
            f"r2 {val['val/r2']:.3f} corr {val['val/corr']:.3f} | {record['seconds']:.1f}s")
        if sel not in val:
            raise ConfigError(f"train.selection_metric={sel!r} is not a validation metric; choose one of "
                              f"{sorted(k for k in val if k.count('/') == 1)} or a per-TF one such as 'val/mse/h1'")
        value = val[sel]
        if not math.isfinite(value):
            raise NumericFailure("non_finite", f"selection metric {sel} is {value} at epoch {epoch}")
        stop = best.update(epoch, value, val, model)
        stopped = stop or epoch == t.max_epochs
        commit({"phase": "train", "epoch": epoch, "batch": None, "stopped": stopped,
                "stop_reason": "early_stop" if stop else "budget" if stopped else None})
        if stop:
            log(f"early stop at epoch {epoch} (best epoch {best.epoch})")
            break
    best.restore(model)
    phase.check_frozen(model, "at the end of the run", step=step)
    tracker.live.note("evaluating test at the best epoch")
    test = score_best(model, data, run_dir, batch_size=t.eval_batch_size, device=device, autocast=prec.autocast,
                      delta=cfg.loss.huber_delta, weights=cfg.loss.tf_weights)
    test = add_skill(test, baselines, "test", data.tfs)
    log(f"test at best epoch {best.epoch}: mse {test['test/mse']:.4f} r2 {test['test/r2']:.3f} "
        f"corr {test['test/corr']:.3f}")
    return {"best": {"epoch": best.epoch, "metrics": best.metrics}, "test": test, "epochs_run": epoch,
            "files": ckpt.records(),
            "steps": step, "windows_seen": seen, "train_seconds": train_seconds,
            "numerics": {"nonfinite_or_overflow_steps": skipped_total, "fp16_final_scale": prec.scale},
            "invariants": {"frozen_unchanged": frozen_unchanged(frozen_checks), "frozen_checks": frozen_checks,
                           "dead_tensors": dead, "warnings": notes,
                           "lr_checked_every_step": True, "leak_checked_batches_per_epoch": t.leak_check_batches}}


def _loss(pred: dict[str, torch.Tensor], b: B.Batch, cidx: list | None, cfg: Any,
          scale_bp: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked Huber (+ λ_c · cross-TF consistency when configured) and the per-TF Huber values."""
    loss, per_tf = masked_huber(pred, b.targets, b.masks, delta=cfg.loss.huber_delta, weights=cfg.loss.tf_weights)
    if cidx is not None:
        loss = loss + cfg.loss.consistency_weight * consistency_loss(pred, b.targets, cidx, scale_bp,
                                                                     delta=cfg.loss.huber_delta)
    return loss, per_tf


def _shard_loss(pred: dict[str, torch.Tensor], b: B.Batch, batch: B.Batch, cidx: list | None, r: range,
                share: float, cfg: Any, scale_bp: dict[str, float],
                dp: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Data parallel: (this process's share of the loss, the whole batch's loss, its per-TF Huber values), the
    last two summed over the processes in one collective. A process without windows (a batch smaller than
    the group) ran one window with weight 0."""
    local, shares = shard_loss(pred, b.targets, b.masks, shard_index(cidx, r.start, r.stop), scale_bp,
                               loss_counts(batch.masks, cidx), delta=cfg.loss.huber_delta,
                               weights=cfg.loss.tf_weights, consistency_weight=cfg.loss.consistency_weight)
    if share == 0:
        local, shares = local * 0.0, {fn: s * 0.0 for fn, s in shares.items()}
    summed = dp.sum_(torch.stack([local.detach().float(), *shares.values()]))
    return local, summed[0], dict(zip(shares, summed[1:].tolist()))


def _optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, controller: FreezeController, prec: Precision,
                    grad_clip: float, f_s: float, base_lr: float, decayed: set[int],
                    weight_decay: float, *, local: torch.Tensor | None = None,
                    dp: Any = None) -> tuple[bool, bool, dict[str, float]]:
    """Backward, checks, unscale, clip and step (or skip) for one batch. Data parallel: ``loss`` is the whole
    batch's, ``local`` this process's share, whose gradients are summed over the processes.

    Returns:
        (step applied, loss finite, unscaled pre-clip gradient norm per group).

    Raises:
        InvariantViolation: a frozen tensor got a gradient, or a group's lr is not base · scale · f(s) (I5).
    """
    opt.zero_grad(set_to_none=True)                            # all parameters, frozen ones included
    if not bool(torch.isfinite(loss)):
        return False, False, {}
    prec.backward(loss if local is None else local)
    if dp is not None:
        dp.sum_grads(controller.trainable_params())            # every process: the whole batch's gradient
    controller.check_no_frozen_grads()
    prec.unscale(opt)                                          # nothing below ever sees scaled gradients
    norms = controller.grad_norms()
    params = [p for pg in opt.param_groups for p in pg["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip, error_if_nonfinite=False)
    if not bool(torch.isfinite(norm)):
        prec.skip(opt)
        opt.zero_grad(set_to_none=True)
        return False, True, norms                              # skipped; the norms say which group
    controller.check_lrs(opt, base_lr, f_s)                    # I5, every step
    _apply_decay(opt, decayed, weight_decay)
    prec.step(opt)
    return True, True, norms


def _check_scale(prec: Precision, epoch: int, step: int) -> None:
    scale = prec.scale
    if scale is not None and scale < 1.0:
        raise NumericFailure("fp16_scale_collapse", f"the fp16 loss scale fell to {scale:.3g} (< 1) at epoch {epoch}, "
                             f"step {step}: gradients overflow fp16 at every scale, so every step is skipped. Use "
                             f"runtime.precision: bf16 or fp32.")


def _unfreeze(controller: FreezeController, opt: torch.optim.Optimizer, cfg: Any, f_s: float,
              log: Callable[[str], None], facts: dict[str, Any], epoch: int) -> None:
    """Phase boundary: backbone groups flip to trainable; fresh Adam state when configured; lrs re-synced."""
    bb = cfg.backbone
    names = backbone_groups(controller)
    for name in names:
        controller.set_frozen(name, False)
        if bb.reset_state:
            controller.reset_state(opt, name)
    controller.sync_lrs(opt, f_s)
    facts.setdefault("phases", []).append({
        "epoch": epoch, "event": "unfreeze", "groups": names, "lr_scale": bb.lr_scale,
        "optimizer_state": "reset" if bb.reset_state else "keep", "warmup_steps": bb.unfreeze_warmup_steps,
        "reset_patience": bb.reset_patience})
    log(f"epoch {epoch}: unfroze {names} (lr scale {bb.lr_scale}, warm-up {bb.unfreeze_warmup_steps} steps, "
        f"optimizer state {'reset' if bb.reset_state else 'kept'})")

