"""Phase 2 of one CVFP run, wired to logging, freeze checks and checkpoints (Phase 1: contexts.py).

Phase 2 trains the TokenBlock (and wte / the head when the arm says so) on shuffled batches of
cached contexts, with early stopping on val loss, restores the best weights and scores test once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from freezelab.errors import NumericFailure, RunFileError
from freezelab.freeze.invariants import PhaseSnapshots, frozen_unchanged
from freezelab.freeze.param_groups import FreezeController
from freezelab.tasks.lm.config import LMConfig
from freezelab.tasks.lm.contexts import (  # noqa: F401  (compute_contexts ... are re-exported for callers)
    OnlineContexts,
    Splits,
    compute_contexts,
    context_diagnostics,
    is_stream,
    moving_sources,
    refresh_contexts,
    run_phase1,
    window_offsets,
)
from freezelab.tasks.lm.loss import head_loss
from freezelab.tasks.lm.model import CVFPModel
from freezelab.tasks.lm.per_token import train_batch_per_token
from freezelab.tracking.checkpoints import BEST, RESTART_FIX, STATE, Checkpoints, restore_training_state, training_state
from freezelab.tracking.items import MODEL, metric, write_items
from freezelab.tracking.selection import EarlyStopping
from freezelab.tracking.tracker import Tracker
from freezelab.utils.seeding import torch_generator
from freezelab.utils.timing import Stopwatch

CE_FUSED = True      # the batched loop's CE: fused (loss.py), or F.cross_entropy on full logits (reference)
CE_CHUNK_ROWS = 512  # rows of (rows, V) logits at a time in the fused CE with a frozen head


def phase2_flops_per_token(model: CVFPModel, *, head_trainable: bool) -> float:
    """Matmul FLOP per Phase-2 training token (cvfp-lm.md §8): TokenBlock 6·W, head fwd + input grad
    4·V·d, plus the head's weight grad 2·V·d when the head trains (LN, ReLU and softmax neglected)."""
    trained = model.core if hasattr(model, "core") else model.token_block  # a reference model: its core
    w_blk = sum(p.numel() for n, p in trained.named_parameters() if p.dim() == 2 and "wpe" not in n)
    vd = model.vocab_size * model.embed_dim
    return 6 * w_blk + 4 * vd + (2 * vd if head_trainable else 0)


def target_positions(offsets: torch.Tensor, *, stream: bool = False) -> torch.Tensor:
    """Flat positions t that predict ids[t+1]: (n_targets,).

    Args:
        offsets: (n_docs + 1,) document boundaries of a split.
        stream: ``context.reset: stream`` (the original's one stream): every t < N-1, so the last token of a
            document predicts the first of the next; otherwise only targets inside the same document.
    """
    n = int(offsets[-1])
    if stream:
        return torch.arange(max(n - 1, 0), device=offsets.device)
    is_last = torch.zeros(n, dtype=torch.bool, device=offsets.device)
    lengths = offsets[1:] - offsets[:-1]
    is_last[offsets[1:][lengths > 0] - 1] = True
    return torch.nonzero(~is_last).flatten()


def epoch_batches(model: Any, train_pos: torch.Tensor, offsets: torch.Tensor, cfg: LMConfig, *, seed: int,
                  epoch: int) -> list[torch.Tensor]:
    """The training positions of each step of an epoch, in order.

    CVFP: slices of phase2.batch_size positions of a permutation seeded by (seed, epoch), or contiguous. A
    reference model (model.kind gpt2/gru) computes a position's state from its whole document with the
    weights being trained, so it steps on whole documents: they are packed once, in a seeded order, into
    groups of at most phase2.batch_size targets (a longer document is a group of its own), and the groups'
    order is permuted by (seed, epoch) like the positions (contiguous: kept).
    """
    c2 = cfg.phase2
    order_gen = torch_generator(seed, "phase2", "order", str(epoch))
    if cfg.model.kind == "cvfp":
        order = (torch.randperm(len(train_pos), generator=order_gen) if c2.order == "shuffled"
                 else torch.arange(len(train_pos))).to(train_pos.device)
        return [train_pos[order[s:s + c2.batch_size]] for s in range(0, len(train_pos), c2.batch_size)]
    doc = torch.searchsorted(offsets, train_pos, right=True) - 1                # (n_targets,)
    n_docs = len(offsets) - 1
    per_doc = torch.bincount(doc, minlength=n_docs).tolist()
    docs = (torch.randperm(n_docs, generator=torch_generator(seed, "phase2", "documents"))
            if c2.order == "shuffled" else torch.arange(n_docs)).tolist()
    groups: list[list[int]] = [[]]
    size = 0
    for d in (d for d in docs if per_doc[d]):
        if groups[-1] and size + per_doc[d] > c2.batch_size:
            groups.append([])
            size = 0
        groups[-1].append(d)
        size += per_doc[d]
    starts = torch.cumsum(torch.tensor([0] + per_doc), 0).tolist()             # doc d's targets: train_pos[starts[d]:]
    batches = [torch.cat([train_pos[starts[d]:starts[d + 1]] for d in g]) for g in groups]
    if c2.order == "shuffled":
        batches = [batches[i] for i in torch.randperm(len(batches), generator=order_gen).tolist()]
    return batches


def item_metrics(with_bytes: bool) -> dict[str, dict[str, Any]]:
    """The metrics of items/<source>.npz as ratios of its per-document columns (tracking/items.py)."""
    out = {"loss": metric("loss_sum", "tokens"), "acc": metric("correct", "tokens")}
    return {**out, "bpb": metric("loss_sum", "bytes", 1 / math.log(2))} if with_bytes else out


def write_baseline_items(run_dir: Path, data: Any, vocab_size: int, *, stream: bool = False) -> None:
    """items/unigram.npz and items/kn_bigram.npz: the naive baselines per document of val and test, on the
    model's targets (``stream``: the cross-document ones too)."""
    from freezelab.tasks.lm.baselines import baseline_items

    found = baseline_items(data.train, data.val, data.test, vocab_size, token_bytes=data.token_bytes, stream=stream)
    for name, splits in found.items():
        write_items(run_dir, name, splits, task="lm", metrics=item_metrics(data.token_bytes is not None))


@torch.no_grad()
def evaluate(model: CVFPModel, ids: torch.Tensor, offsets: torch.Tensor, contexts: torch.Tensor, *,
             batch_size: int, autocast: Callable, token_bytes: torch.Tensor | None = None,
             items: dict[str, Any] | None = None, stream: bool = False) -> dict[str, float]:
    """Mean CE (nats), perplexity, top-1 accuracy and bits per byte over a split's next-token positions.

    With ``items`` (a dict), it is filled with per-document sums: id, loss_sum, tokens, correct, bytes
    (with ``stream``, a cross-document target counts in the document of its input token).
    """
    model.eval()
    positions = target_positions(offsets, stream=stream)
    doc = torch.searchsorted(offsets, positions, right=True) - 1                # (n_targets,) document index
    per_doc = torch.zeros(3, len(offsets) - 1, dtype=torch.float64, device=offsets.device)  # loss, correct, bytes
    total, correct, nbytes = 0.0, 0, 0
    for s in range(0, len(positions), batch_size):
        pos = positions[s:s + batch_size]                                      # (B,)
        with autocast():
            logits = model(contexts[pos].float(), model.token_inputs(ids, None if stream else offsets, pos))  # (B, V)
        targets = ids[pos + 1]
        ce = F.cross_entropy(logits.float(), targets, reduction="none")       # (B,)
        hit = logits.argmax(-1) == targets
        total += float(ce.sum())
        correct += int(hit.sum())
        if token_bytes is not None:
            nbytes += int(token_bytes[targets].sum())
        if items is not None:
            b = token_bytes[targets] if token_bytes is not None else torch.zeros_like(targets)
            per_doc.index_add_(1, doc[s:s + batch_size], torch.stack([ce.double(), hit.double(), b.double()]))
    if items is not None:
        tokens = torch.bincount(doc, minlength=len(offsets) - 1).double()
        items.update(id=np.arange(len(offsets) - 1), tokens=tokens.cpu().numpy(),
                     **dict(zip(("loss_sum", "correct", "bytes"), per_doc.cpu().numpy())))
    loss = total / len(positions)
    out = {"loss": loss, "ppl": math.exp(loss), "acc": correct / len(positions)}
    if nbytes:
        out["bpb"] = total / (math.log(2) * nbytes)
    return out


def run_phase2(model: CVFPModel, controller: FreezeController, cfg: LMConfig, ids: Splits, offs: Splits,
               contexts: Splits, *, seed: int, fabric: Any, tracker: Tracker, log: Callable[[str], None],
               dp: Any = None,
               facts: dict[str, Any], ckpt: Checkpoints, token_bytes: torch.Tensor | None, progress: bool,
               resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train with early stopping on val loss; restore the best weights; score test once.

    The state is committed to ``checkpoints/`` at every epoch end and, inside long epochs, every
    ``runtime.checkpoint_minutes``; with ``resume`` (a committed state) training continues exactly where it
    stopped — after the saved epoch, inside it at the saved batch, or straight to the test when training had
    stopped — and reproduces the uninterrupted run bit for bit: batch order and noise derive from (seed,
    epoch), and model, optimizer, scheduler, group flags, early stopping and RNG states are restored.

    Freeze invariants are checked after step 1 (I1, I2, I5), at every epoch end (I1) and at the end;
    parameters are checked finite after every step (I7).

    Raises:
        InvariantViolation: a frozen tensor changed, an lr was overridden, all trainable tensors are dead.
        NumericFailure: runtime.max_nonfinite_steps non-finite losses or gradient norms in a row (with the step,
            the group norms and the fix); fewer are skipped and counted (train/skipped_steps).
    """
    c2 = cfg.phase2
    eval_batch = 1 if c2.loop == "per_token" else c2.eval_batch_size  # per token: one position, one sync
    opt = controller.build_optimizer(c2.lr, fused=True)  # one fused Adam kernel: ~10x faster on a 38M table
    sched = controller.build_scheduler(opt, c2.lr)
    controller.check_layout(opt, when="at the start of phase 2")                     # I4, at construction
    stream = is_stream(cfg)
    per_epoch = cfg.context.cache == "per_epoch"  # contexts recomputed from the current parameters
    online = cfg.context.cache == "online"  # ... token by token inside the loop, as the original (contexts.py)
    recompute = per_epoch or online  # val and test from the current weights before they are scored
    stream_ctx: OnlineContexts | None = None  # online: the epoch's in-stream contexts so far
    contexts = dict(contexts)
    epoch_sources: dict[str, torch.Tensor] = {}  # per_epoch: the moving context sources at the epoch start
    train_pos = target_positions(offs["train"], stream=stream)
    n_batches = len(epoch_batches(model, train_pos, offs["train"], cfg, seed=seed, epoch=1))
    frozen_checks: list[dict[str, Any]] = []  # I1: what was compared, when, and the outcome (summary.json)
    facts["invariants"] = {"frozen_unchanged": False, "frozen_checks": frozen_checks}  # a failed run shows it
    phase = PhaseSnapshots.take(model, controller, record=frozen_checks, phase="phase 2 start")
    best = EarlyStopping("val/loss", "min", c2.patience)
    step, tokens_seen, train_seconds, skipped_total, nonfinite_run = 0, 0, 0.0, 0, 0
    dead: list[str] = []
    epoch, first, stopped = 0, 1, False
    acc: dict[str, Any] | None = None  # running sums of a partly trained epoch
    # this attempt's overheads by share (checks, frozen_hash, logging, checkpoint): inside train_seconds, and
    # after each epoch's steps (its frozen-tensor check and commit, outside train_seconds)
    watch, epoch_end = Stopwatch(), Stopwatch()

    def commit(position: dict[str, Any], known: dict[str, str] | None = None) -> None:
        state, tensors = training_state(model, opt, sched, controller, best)
        state.update(position=position, epoch_acc=acc,
                     facts={"phase1": facts.get("phase1"), "phases": facts.get("phases")},
                     counters={"step": step, "tokens_seen": tokens_seen, "train_seconds": train_seconds,
                               "dead": dead, "check_dead": phase.check_dead, "frozen_checks": frozen_checks,
                               "skipped_total": skipped_total, "nonfinite_run": nonfinite_run})
        dirty = position["batch"] is None and best.epoch == position["epoch"]
        tensors.update({f"ctx/{k}": v for k, v in epoch_sources.items()})  # this epoch's context sources
        if stream_ctx is not None and position["batch"] is not None:  # online, inside an epoch: the carry
            tensors["online/carry"] = stream_ctx.carry
            state["online_frontier"] = stream_ctx.frontier
        ckpt.commit(state, tensors=tensors, weights={BEST: best.state} if dirty and best.state else None,
                    model=model, known=known)

    if resume is not None:
        restore_training_state(ckpt, resume, model, opt, sched, controller, best)
        controller.check_layout(opt, when="after resuming")                           # I4, on resume
        c, at = resume["counters"], resume["position"]
        step, tokens_seen, train_seconds, dead = c["step"], c["tokens_seen"], c["train_seconds"], c["dead"]
        skipped_total, nonfinite_run = c.get("skipped_total", 0), c.get("nonfinite_run", 0)  # older: none
        phase = PhaseSnapshots.resume(model, controller, frozen_checks, c.get("frozen_checks"))
        phase.check_dead = c["check_dead"]
        epoch, stopped, acc = at["epoch"], at["stopped"], resume["epoch_acc"]
        if (resume.get("facts") or {}).get("phases"):  # the unfreeze record (summary.phases), kept across resume
            facts["phases"] = resume["facts"]["phases"]
        first = epoch if at["batch"] is not None else epoch + 1
        if recompute and at["batch"] is not None:  # inside an epoch: its contexts as they were
            from freezelab.tracking.weights import read_weights

            stored, _ = read_weights(ckpt.dir / STATE, ckpt.files[STATE])
            if per_epoch:  # from the epoch start's tensors
                epoch_sources = {k[4:]: v for k, v in stored.items() if k.startswith("ctx/")}
                refresh_contexts(model, cfg, ids, offs, contexts, ("train",), sources=epoch_sources)
            else:  # online: continued from the last context computed before the kill
                carry, frontier = stored.get("online/carry"), resume.get("online_frontier")
                if carry is None or not isinstance(frontier, int) or carry.shape != (1, model.context_dim):
                    raise RunFileError(f"{ckpt.dir / STATE} has no valid in-stream context "
                                       f"(context.cache=online) to resume epoch {epoch} from. {RESTART_FIX}")
                stream_ctx = OnlineContexts(model, cfg, ids["train"], offs["train"], frontier=frontier, carry=carry)
        log((f"resumed in epoch {epoch} after batch {at['batch']}" if at["batch"] is not None else
             f"resumed after epoch {epoch}") + f" (step {step})" + (", training had stopped" if stopped else ""))
    tracker.live.phase("phase2", total=c2.max_epochs * n_batches, epochs=c2.max_epochs, steps_per_epoch=n_batches,
                       done=step, last_phase=True)
    epochs = range(first, c2.max_epochs + 1) if not stopped else range(0)  # stopped: straight to the test
    for epoch in epochs:
        facts["epoch"] = epoch
        if acc is None:  # a new epoch (a resumed partial one has done these already)
            if c2.unfreeze is not None and epoch == c2.unfreeze.at_epoch + 1:
                _unfreeze(controller, opt, cfg)
                facts.setdefault("phases", []).append({  # as the time-series task: the report reads it
                    "epoch": epoch, "event": "unfreeze", "groups": list(c2.unfreeze.groups),
                    "lr_scale": c2.unfreeze.lr_scale})
                phase = PhaseSnapshots.take(model, controller, record=frozen_checks,
                                            phase=f"epoch {epoch} (after unfreezing {', '.join(c2.unfreeze.groups)})")
                if c2.unfreeze.reset_patience:
                    best.reset_patience()
                log(f"epoch {epoch}: unfroze {c2.unfreeze.groups} (lr scale {c2.unfreeze.lr_scale})")
            acc = {"batch": 0, "loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "skipped": 0}
            if per_epoch:
                epoch_sources, before = moving_sources(model), contexts["train"]
                if epoch > 1:  # epoch 1's are Phase 1's, computed from these same tensors
                    refresh_contexts(model, cfg, ids, offs, contexts, ("train",))
                acc["drift"] = float((contexts["train"].float() - before.float()).pow(2).mean().sqrt())
                log(f"epoch {epoch}: contexts recomputed (context.cache=per_epoch), RMS change {acc['drift']:.4g}")
            if online:  # c = 0 at the epoch start, as the original's train_epoch
                stream_ctx = OnlineContexts(model, cfg, ids["train"], offs["train"])
        model.train()
        batches = epoch_batches(model, train_pos, offs["train"], cfg, seed=seed, epoch=epoch)
        t_epoch = time.time() - acc["seconds"]
        bar = tqdm(range(acc["batch"], n_batches), desc=f"epoch {epoch}", unit="batch", disable=not progress,
                   leave=False)
        for b in bar:
            pos = batches[b]                                                       # (B,)
            n_pos, share = len(pos), 1.0
            if dp is not None:  # runtime.devices: this process's share of the batch (engine/parallel.py)
                pos, share = dp.shard(pos)
            targets = ids["train"][pos + 1]
            ctx = stream_ctx.take(pos) if stream_ctx is not None else contexts["train"][pos]   # (B, L, d_c)
            if c2.loop == "per_token":  # the original's loop: forward + backward per position, .item() each
                opt.zero_grad(set_to_none=True)
                step_loss, hits = train_batch_per_token(model, ids["train"], window_offsets(cfg, offs["train"]),
                                                        ctx, pos,
                                                        autocast=fabric.autocast, backward=fabric.backward)
                loss = torch.tensor(step_loss)
            else:
                with fabric.autocast():
                    x = model.token_inputs(ids["train"], window_offsets(cfg, offs["train"]), pos)  # (B, n*d_e)
                    h = model.token_block(ctx.float(), x)                            # (B, d_e)
                    loss, pred = head_loss(model, h, targets, fused=CE_FUSED, chunk_rows=CE_CHUNK_ROWS)
                hits = None
                if dp is not None:  # the batch's mean loss and correct count, the same on every rank
                    local = loss * share
                    both = dp.sum_(torch.stack([local.detach().float(),
                                                (pred == targets).sum().float() * (share > 0)]))
                    loss, hits = both[0], int(both[1])
            problem, per_step = None, {}
            if not torch.isfinite(loss):
                problem = (f"the training loss is {float(loss.detach())}", "last step's")
            else:
                if c2.loop == "batched":  # the last step's gradients stay readable until here (error message)
                    opt.zero_grad(set_to_none=True)
                    if dp is not None:
                        fabric.backward(local)
                        dp.sum_grads(controller.trainable_params())  # every rank: the whole batch's gradient
                    else:
                        fabric.backward(loss)
                with watch("checks"):
                    controller.check_no_frozen_grads()
                with watch("logging"):
                    per_step = tracker.due(step + 1) and {  # the lr this step uses, the gradient before clipping
                        **{f"lr/{pg['name']}": pg["lr"] for pg in opt.param_groups},
                        **{f"grad_norm/{k}": v for k, v in controller.grad_norms().items()}}
                norm = fabric.clip_gradients(model, opt, max_norm=c2.grad_clip, error_if_nonfinite=False)
                if not torch.isfinite(norm):
                    problem = (f"the gradient norm is {float(norm)}", "this step's")
            if problem is not None:  # skipped (no update) and counted; too many in a row fail the run
                nonfinite_run, acc["skipped"] = nonfinite_run + 1, acc.get("skipped", 0) + 1
                if nonfinite_run >= cfg.runtime.max_nonfinite_steps:
                    raise _non_finite(problem[0] + (f" ({nonfinite_run} steps in a row)" if nonfinite_run > 1
                                                    else ""), epoch, step + 1, controller, cfg, problem[1])
                log(f"warning: epoch {epoch}, step {step + 1} skipped: {problem[0]}")
                sched.step()  # no update; the gradients stay for the message (every step zeroes them first)
                step += 1
                facts["step"] = step
                acc["batch"] = b + 1
                continue
            nonfinite_run = 0
            with watch("checks"):
                controller.check_lrs(opt, c2.lr)
            opt.step()
            sched.step()
            step += 1
            facts["step"] = step
            with watch("frozen_hash" if step == 1 else "checks"):  # step 1 hashes the frozen tensors (I1)
                dead = phase.after_step(model, step, epoch)                           # I7, I1, I2
            if dead:
                log(f"warning: tensors unchanged after the first step of epoch {epoch} (dead): {dead}")
            step_loss = float(loss.detach())
            with watch("logging"):
                if per_step:
                    tracker.log({"kind": "step", "phase": "phase2", "epoch": epoch, "step": step,
                                 "train/step_loss": step_loss, **per_step}, step=step)
                tracker.live.step(done=step, items=n_pos, loss=step_loss, epoch=epoch, step_in_epoch=b + 1)
            acc["loss_sum"] += step_loss * n_pos
            acc["correct"] += hits if hits is not None else int((pred == targets).sum())
            acc["seen"] += n_pos
            acc["batch"] = b + 1
            if ckpt.due() and b + 1 < n_batches:                                      # protocol §4: every M minutes
                acc["seconds"] = time.time() - t_epoch
                with watch("checkpoint"):
                    commit({"phase": "phase2", "epoch": epoch, "batch": b + 1, "stopped": False,
                            "stop_reason": None})
        loss_sum, correct, seen, skipped = acc["loss_sum"], acc["correct"], acc["seen"], acc.get("skipped", 0)
        skipped_total += skipped
        drift = {"contexts/drift_rms": acc["drift"]} if "drift" in acc else {}  # per_epoch: vs the previous epoch
        acc = None
        train_seconds += time.time() - t_epoch
        tokens_seen += seen
        with epoch_end("frozen_hash"):  # the hashes serve this epoch's commit too (nothing trains in between)
            frozen_now = phase.check_frozen(model, f"at the end of epoch {epoch}", step=step)
        stream_ctx = None
        tracker.live.note("evaluating val")
        if recompute:
            refresh_contexts(model, cfg, ids, offs, contexts, ("val",))
        val = evaluate(model, ids["val"], offs["val"], contexts["val"], batch_size=eval_batch,
                       autocast=fabric.autocast, token_bytes=token_bytes, stream=stream)
        train_loss = loss_sum / seen if seen else math.nan  # nan: every step of the epoch was skipped
        record = {"kind": "epoch", "phase": "phase2", "epoch": epoch, "step": step, "train/loss": train_loss,
                  "train/ppl": math.exp(train_loss), "train/acc": correct / seen if seen else math.nan,
                  "train/skipped_steps": skipped,
                  **{f"val/{k}": v for k, v in val.items()},
                  **{f"lr/{pg['name']}": pg["lr"] for pg in opt.param_groups},
                  **{f"grad_norm/{k}": v for k, v in controller.grad_norms().items()}, **drift,
                  "seconds": time.time() - t_epoch}
        tracker.log(record, step=step)
        log(f"epoch {epoch}: train loss {train_loss:.4f} | val loss {val['loss']:.4f} ppl {val['ppl']:.2f} "
            f"acc {val['acc']:.2%}")
        stop = best.update(epoch, val["loss"], {f"val/{k}": v for k, v in val.items()}, model)
        stopped = stop or epoch == c2.max_epochs
        with epoch_end("checkpoint"):
            commit({"phase": "phase2", "epoch": epoch, "batch": None, "stopped": stopped,
                    "stop_reason": "early_stop" if stop else "budget" if stopped else None}, known=frozen_now)
        if stop:
            log(f"early stop at epoch {epoch} (best epoch {best.epoch})")
            break
    best.restore(model)
    phase.check_frozen(model, "at the end of the run", step=step)
    if recompute:  # the best epoch's own contexts
        refresh_contexts(model, cfg, ids, offs, contexts, ("val", "test"))
    tracker.live.note("evaluating val and test at the best epoch")
    items: dict[str, dict[str, Any]] = {"val": {}, "test": {}}
    evaluate(model, ids["val"], offs["val"], contexts["val"], batch_size=eval_batch,  # val items, best epoch
             autocast=fabric.autocast, token_bytes=token_bytes, items=items["val"], stream=stream)
    test = evaluate(model, ids["test"], offs["test"], contexts["test"], batch_size=eval_batch,
                    autocast=fabric.autocast, token_bytes=token_bytes, items=items["test"], stream=stream)
    write_items(ckpt.run_dir, MODEL, _docs_with_tokens(items), task="lm", metrics=item_metrics(token_bytes is not None))
    log(f"test at best epoch {best.epoch}: loss {test['loss']:.4f} ppl {test['ppl']:.2f} acc {test['acc']:.2%}")
    return {"best": {"epoch": best.epoch, "metrics": best.metrics},
            "test": {f"test/{k}": v for k, v in test.items()}, "epochs_run": epoch, "steps": step,
            "tokens_seen": tokens_seen, "train_seconds": train_seconds,
            "overhead_seconds": {"in_steps": watch.seconds, "epoch_end": epoch_end.seconds},  # bench --mode run
            "numerics": {"nonfinite_steps": skipped_total},
            "invariants": {"frozen_unchanged": frozen_unchanged(frozen_checks), "frozen_checks": frozen_checks,
                           "dead_tensors": dead, "warnings": []}}


def _non_finite(what: str, epoch: int, step: int, controller: FreezeController, cfg: LMConfig,
                which: str) -> NumericFailure:
    """The non-finite failure with where it happened, the group gradient norms and what to change."""
    shown = ", ".join(f"{n} {v:.3g}" for n, v in controller.grad_norms().items()) or "none yet"
    return NumericFailure("non_finite", f"{what} at epoch {epoch}, step {step} ({which} gradient norms by group: "
                          f"{shown}). Lower phase2.lr (now {cfg.phase2.lr:g}) or phase2.grad_clip (now "
                          f"{cfg.phase2.grad_clip:g})" + (", or use runtime.precision: fp32" if
                                                           cfg.runtime.precision != "fp32" else "") + ".")


def _unfreeze(controller: FreezeController, opt: torch.optim.Optimizer, cfg: LMConfig) -> None:
    """Phase boundary: flip the listed groups' flags and scales; nothing else in the optimizer changes."""
    u = cfg.phase2.unfreeze
    assert u is not None
    for name in u.groups:
        controller.groups[name].lr_scale = u.lr_scale
        controller.set_frozen(name, False)
        if u.optimizer_state == "reset":
            controller.reset_state(opt, name)
    controller.sync_lrs(opt)


def _docs_with_tokens(items: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Drop documents without a next-token target (a 1-token document) from the per-document items."""
    return {split: {k: np.asarray(v)[np.asarray(cols["tokens"]) > 0] for k, v in cols.items()}
            for split, cols in items.items()}
