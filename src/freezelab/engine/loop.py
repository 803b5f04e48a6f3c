"""The training loop of one ``freezelab.Task`` run: epochs, steps, freeze checks, unfreezing, early stopping.

One step: the epoch's seeded batch order → ``collate`` → ``loss`` (a finite scalar, or the step is skipped and
counted; ``runtime.max_nonfinite_steps`` in a row fail the run) → backward → frozen groups have no gradient →
clip → I5 applied lr per group → optimizer step → scheduler step → I7 finite parameters. I1 (frozen tensors
bit-identical) after step 1, at every epoch end and at the end; I2 (dead tensors) after the first step of every
phase; I6 (frozen modules in eval mode) in a forward pre-hook. Every epoch ends with val scored by ``score``,
one record (train/loss, val metrics, lr and grad norm per group) and a resumable commit; a kill resumes from
the last commit bit for bit. The best epoch's weights are restored and val and test are scored once.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from freezelab.engine.config import PluginRunConfig
from freezelab.engine.contract import PluginContractError, metric_values, score_split, to_device
from freezelab.engine.task import Splits, Task
from freezelab.errors import InvariantViolation, NumericFailure
from freezelab.freeze.invariants import PhaseSnapshots, frozen_unchanged
from freezelab.freeze.param_groups import FreezeController
from freezelab.tasks.base import RunContext
from freezelab.tracking.checkpoints import BEST, Checkpoints, restore_training_state, training_state
from freezelab.tracking.selection import EarlyStopping
from freezelab.utils.seeding import derive_seed, numpy_generator


def schedule(cfg: PluginRunConfig, total: int):
    """f(s): linear warm-up, then constant or cosine to ``min_lr_ratio``."""
    t = cfg.train

    def f(s: int) -> float:
        if t.warmup_steps and s < t.warmup_steps:
            return (s + 1) / t.warmup_steps
        if t.schedule == "constant":
            return 1.0
        progress = min(1.0, (s - t.warmup_steps) / max(1, total - t.warmup_steps))
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def epoch_order(n: int, batch_size: int, cap: int | None, *, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's batches of item indices: a permutation drawn from (seed, "order", epoch), the same in every
    arm for a given seed (paired comparisons); the last partial batch is kept."""
    perm = numpy_generator(seed, "order", str(epoch)).permutation(n)
    out = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    return out[:cap] if cap else out


def train(task: Task, model: nn.Module, controller: FreezeController, cfg: PluginRunConfig, splits: Splits, *,
          seed: int, device: torch.device, ctx: RunContext, selection: str, mode: str,
          dp: Any = None) -> dict[str, Any]:
    """``_train`` with a frozen tensor that changed attributed to the task: freezelab never updates a frozen
    group (no gradient, lr 0), so the task's own code did."""
    try:
        return _train(task, model, controller, cfg, splits, seed=seed, device=device, ctx=ctx, selection=selection,
                      mode=mode, dp=dp)
    except InvariantViolation as err:
        if err.code != "frozen_tensor_changed":
            raise
        name = type(task).__name__
        raise InvariantViolation(err.code, f"{err}. freezelab never updates a frozen group (no gradient, lr 0): "
                                 f"{name}.loss, {name}.score or {name}.collate changed it in place; compute with "
                                 "the parameters, never assign to them") from None


def _train(task: Task, model: nn.Module, controller: FreezeController, cfg: PluginRunConfig, splits: Splits, *,
           seed: int, device: torch.device, ctx: RunContext, selection: str, mode: str,
           dp: Any = None) -> dict[str, Any]:
    """Train with early stopping on ``val/<selection>``, restore the best weights, score val and test once.
    ``dp``: this process's rank of a data-parallel run (engine/parallel.py): each step's items are split.

    Returns:
        Summary fields (best, test, epochs_run, steps, items_seen, train_seconds, invariants, files) and
        ``columns``: the val and test score columns at the best epoch (for items/model.npz).

    Raises:
        InvariantViolation: a frozen tensor changed or got a gradient, an lr was overridden, all tensors dead.
        NumericFailure: ``runtime.max_nonfinite_steps`` non-finite steps in a row.
        PluginContractError: ``loss`` or ``score`` returned something unusable.
    """
    t, fz, tracker, log, facts = cfg.train, cfg.freeze, ctx.tracker, ctx.log, ctx.facts
    bf16 = cfg.runtime.precision == "bf16"  # the task's loss and score under bf16 autocast
    torch.manual_seed(derive_seed(seed, "dropout") % 2**63)  # dropout draws from the global generator
    n_steps = len(epoch_order(len(splits.train), t.batch_size, t.steps_per_epoch, seed=seed, epoch=1))
    f = schedule(cfg, t.max_epochs * n_steps)
    kwargs = {"weight_decay": t.weight_decay} if t.optimizer == "adamw" else {}
    opt = controller.build_optimizer(t.lr, kind=t.optimizer, **kwargs)
    sched = controller.build_scheduler(opt, t.lr, schedule=f)
    controller.check_layout(opt, when="at the start of training")                        # I4
    frozen_checks: list[dict[str, Any]] = []
    facts["invariants"] = {"frozen_unchanged": False, "frozen_checks": frozen_checks}
    phase = PhaseSnapshots.take(model, controller, record=frozen_checks, phase="training start")
    best = EarlyStopping(f"val/{selection}", mode, t.patience, min_delta=t.min_delta)
    step, seen, skipped_total, nonfinite_run, train_seconds = 0, 0, 0, 0, 0.0
    dead: list[str] = []
    notes: list[str] = []
    epoch, first, stopped, mid = 0, 1, False, None
    ckpt = Checkpoints(ctx.run_dir, minutes=cfg.runtime.checkpoint_minutes)
    ckpt.set_base(model)

    def commit(position: dict[str, Any], acc: dict[str, Any] | None = None) -> None:
        state, tensors = training_state(model, opt, sched, controller, best)
        state.update(position=position, epoch_acc=acc, facts={"phases": facts.get("phases")},
                     counters={"step": step, "seen": seen, "skipped_total": skipped_total, "nonfinite_run":
                               nonfinite_run, "train_seconds": train_seconds, "dead": dead, "notes": notes,
                               "check_dead": phase.check_dead, "frozen_checks": frozen_checks})
        dirty = position["batch"] is None and best.epoch == position["epoch"]
        ckpt.commit(state, tensors=tensors, weights={BEST: best.state} if dirty and best.state else None, model=model)

    resume = ckpt.load()
    if resume is not None:
        tracker.resumed()  # metrics.jsonl was cut back to the checkpoint: TensorBoard follows
        restore_training_state(ckpt, resume, model, opt, sched, controller, best)
        c, at, mid = resume["counters"], resume["position"], resume["epoch_acc"]
        step, seen, skipped_total, nonfinite_run = c["step"], c["seen"], c["skipped_total"], c["nonfinite_run"]
        train_seconds, dead, notes = c["train_seconds"], c["dead"], c["notes"]
        facts["phases"] = resume["facts"]["phases"]
        phase = PhaseSnapshots.resume(model, controller, frozen_checks, c.get("frozen_checks"))
        phase.check_dead = c["check_dead"]
        epoch, stopped = at["epoch"], at["stopped"]
        first = epoch if at["batch"] is not None else epoch + 1
        log(f"resumed {'in' if at['batch'] is not None else 'after'} epoch {epoch} (step {step})")
    tracker.live.phase("train", total=t.max_epochs * n_steps, items="items", epochs=t.max_epochs,
                       steps_per_epoch=n_steps, done=step, last_phase=True)
    for epoch in range(first, t.max_epochs + 1) if not stopped else range(0):
        facts["epoch"] = epoch
        if mid is None:
            if fz.unfreeze is not None and epoch == fz.unfreeze.epoch + 1:
                _unfreeze(controller, opt, cfg, f(step), facts, epoch, log)
                phase = PhaseSnapshots.take(model, controller, record=frozen_checks,
                                            phase=f"epoch {epoch} (after unfreezing)")
                if fz.unfreeze.reset_patience:
                    best.reset_patience()
            mid = {"batch": 0, "seconds": 0.0, "loss_sum": 0.0, "applied": 0, "skipped": 0, "norms": {}}
        model.train()
        acc, mid = mid, None
        t_epoch = time.time() - acc["seconds"]
        order = epoch_order(len(splits.train), t.batch_size, t.steps_per_epoch, seed=seed, epoch=epoch)
        for i in range(acc["batch"], len(order)):
            rows = order[i]
            mine, share = (rows, 1.0) if dp is None else dp.shard(rows)  # runtime.devices: this process's items
            if dp is not None:
                dp.reseed(seed, step)  # dropout masks of its own, the same after a resume
            batch = to_device(task.collate([splits.train[int(j)] for j in mine]), device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = task.loss(model, batch)
            if not (isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.requires_grad):
                shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                raise PluginContractError(task, "loss", f"returned {shape}; return a scalar tensor computed from "
                                          "the model's output (with grad), e.g. F.cross_entropy(...).")
            applied, norms, loss = _step(loss, opt, controller, t.grad_clip, f(step), t.lr, dp=dp, share=share)
            lrs = {f"lr/{pg['name']}": pg["lr"] for pg in opt.param_groups}
            if applied:
                nonfinite_run, acc["applied"] = 0, acc["applied"] + 1
                acc["loss_sum"] += float(loss.detach())
                for k, v in norms.items():
                    acc["norms"][k] = acc["norms"].get(k, 0.0) + v
            else:
                acc["skipped"], nonfinite_run = acc["skipped"] + 1, nonfinite_run + 1
                if nonfinite_run >= cfg.runtime.max_nonfinite_steps:
                    raise NumericFailure("non_finite", f"{nonfinite_run} consecutive non-finite losses or gradient "
                                         f"norms (epoch {epoch}, step {step + 1}). Lower train.lr (now {t.lr:g}), "
                                         f"set train.grad_clip, or raise runtime.max_nonfinite_steps (now "
                                         f"{cfg.runtime.max_nonfinite_steps}).")
            with warnings.catch_warnings():  # a skipped first step makes torch warn about the call order
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
                sched.step()
            step += 1
            facts["step"] = step
            if applied:
                dead = phase.after_step(model, step, epoch)                                    # I7, I1, I2
                if dead:
                    notes.append(f"epoch {epoch}: tensors unchanged after the first step: {dead[:5]}")
                    log(f"warning: {notes[-1]}")
            step_loss = float(loss.detach()) if applied else math.nan
            if tracker.due(step):
                tracker.log({"kind": "step", "phase": "train", "epoch": epoch, "step": step,
                             "train/step_loss": step_loss, **lrs, **{f"grad_norm/{k}": v for k, v in norms.items()}},
                            step=step)
            tracker.live.step(done=step, items=len(rows), loss=step_loss, epoch=epoch, step_in_epoch=i + 1)
            seen += len(rows)
            if ckpt.due() and i + 1 < len(order):
                commit({"phase": "train", "epoch": epoch, "batch": i + 1, "stopped": False},
                       {**acc, "batch": i + 1, "seconds": time.time() - t_epoch})
        skipped_total += acc["skipped"]
        train_seconds += time.time() - t_epoch
        phase.check_frozen(model, f"at the end of epoch {epoch}", step=step)                 # I1
        tracker.live.note("evaluating val")
        val = metric_values(task, score_split(task, model, splits.val, t.eval_batch_size, device, bf16=bf16), "val")
        record = {"kind": "epoch", "phase": "train", "epoch": epoch, "step": step,
                  "train/loss": acc["loss_sum"] / max(1, acc["applied"]), **val,
                  **{f"lr/{pg['name']}": pg["lr"] for pg in opt.param_groups},
                  **{f"grad_norm/{k}": v / max(1, acc["applied"]) for k, v in acc["norms"].items()},
                  "train/skipped_steps": acc["skipped"], "seconds": time.time() - t_epoch}
        tracker.log(record, step=step)
        shown = " ".join(f"{k} {v:.4g}" for k, v in val.items())
        log(f"epoch {epoch}: train loss {record['train/loss']:.4f} | {shown} | {record['seconds']:.1f}s")
        value = val[f"val/{selection}"]
        if not math.isfinite(value):
            raise NumericFailure("non_finite", f"val/{selection} is {value} at epoch {epoch}")
        stop = best.update(epoch, value, val, model)
        stopped = stop or epoch == t.max_epochs
        commit({"phase": "train", "epoch": epoch, "batch": None, "stopped": stopped})
        if stop:
            log(f"early stop at epoch {epoch} (best epoch {best.epoch})")
            break
    best.restore(model)
    phase.check_frozen(model, "at the end of the run", step=step)
    tracker.live.note("scoring val and test at the best epoch")
    columns = {s: score_split(task, model, splits.part(s), t.eval_batch_size, device, bf16=bf16)
               for s in ("val", "test")}
    test = metric_values(task, columns["test"], "test")
    log(f"test at best epoch {best.epoch}: " + " ".join(f"{k} {v:.4g}" for k, v in test.items()))
    return {"best": {"epoch": best.epoch, "metrics": best.metrics}, "test": test, "epochs_run": epoch,
            "files": ckpt.records(), "steps": step, "items_seen": seen, "train_seconds": train_seconds,
            "numerics": {"nonfinite_steps": skipped_total}, "columns": columns,
            "invariants": {"frozen_unchanged": frozen_unchanged(frozen_checks), "frozen_checks": frozen_checks,
                           "dead_tensors": dead, "warnings": notes, "lr_checked_every_step": True}}


def _step(loss: torch.Tensor, opt: torch.optim.Optimizer, controller: FreezeController, clip: float | None,
          f_s: float, base_lr: float, *, dp: Any = None,
          share: float = 1.0) -> tuple[bool, dict[str, float], torch.Tensor]:
    """Backward, checks, clip, step; (applied, gradient norm per group, the batch's loss). A non-finite loss or
    norm: skipped. Data-parallel (``dp``): this process's loss weighted by its ``share`` of the items, the batch's
    loss and the gradients summed over the processes, so every one decides and steps alike."""
    opt.zero_grad(set_to_none=True)
    total = loss if dp is None else dp.sum_((loss.detach().float() * share).reshape(1))[0]
    if not bool(torch.isfinite(total)):
        return False, {}, total
    if dp is None:
        loss.backward()
    else:
        (loss * share).backward()
        dp.sum_grads([p for pg in opt.param_groups for p in pg["params"]])
    controller.check_no_frozen_grads()
    norms = controller.grad_norms()
    params = [p for pg in opt.param_groups for p in pg["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else math.inf, error_if_nonfinite=False)
    if not bool(torch.isfinite(norm)):
        opt.zero_grad(set_to_none=True)
        return False, norms, total
    controller.check_lrs(opt, base_lr, f_s)                                                  # I5
    opt.step()
    return True, norms, total


def _unfreeze(controller: FreezeController, opt: torch.optim.Optimizer, cfg: PluginRunConfig, f_s: float,
              facts: dict[str, Any], epoch: int, log: Any) -> None:
    """Phase boundary: the listed (default: every frozen) groups flip to trainable; fresh optimizer moments when
    configured; lrs re-synced. The optimizer keeps its groups (protocol §1.3)."""
    u = cfg.freeze.unfreeze
    assert u is not None
    names = u.groups or [n for n in controller.order if controller.groups[n].frozen]
    for name in names:
        if u.lr_scale is not None:
            controller.groups[name].lr_scale = u.lr_scale
        controller.set_frozen(name, False)
        if u.reset_state:
            controller.reset_state(opt, name)
    controller.sync_lrs(opt, f_s)
    facts.setdefault("phases", []).append({"epoch": epoch, "event": "unfreeze", "groups": names,
                                           "lr_scale": u.lr_scale, "optimizer_state": "reset" if u.reset_state
                                           else "keep", "reset_patience": u.reset_patience})
    log(f"epoch {epoch}: unfroze {names}")

