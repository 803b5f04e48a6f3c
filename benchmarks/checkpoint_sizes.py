"""Checkpoint size and commit time: the lean state vs the old pickle ``last.pt`` + full ``best.safetensors``.

    python benchmarks/checkpoint_sizes.py 30522 384    # quick-demo shapes (MiniLM table)
    python benchmarks/checkpoint_sizes.py 50257 768    # seed shapes (GPT-2 table)

Builds the CVFP model of the tied_frozen arm (a V × d table, 6 layers), takes one Adam step and writes
the epoch-end state three times both ways (best of three timings). The old format is written with
``torch.save`` here only to measure it; freezelab never loads such a file.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_model

from freezelab.freeze.param_groups import FreezeController
from freezelab.tasks.lm.config import LMConfig
from freezelab.tasks.lm.task import build_model, phase2_groups
from freezelab.tracking import checkpoints as ck
from freezelab.tracking.selection import EarlyStopping


def main(vocab: int, dim: int) -> None:
    cfg = LMConfig.model_validate({"embedding": {"source": "random", "vocab_size": vocab, "dim": dim},
                                   "model": {"num_layers": 6}})
    model = build_model(cfg, vocab, dim, seed=0)
    controller = FreezeController(model, phase2_groups(model, cfg))
    opt = controller.build_optimizer(1e-3)
    sched = controller.build_scheduler(opt, 1e-3)
    tmp = Path(tempfile.mkdtemp(prefix="ckpt-sizes-"))
    ckpt = ck.Checkpoints(tmp)
    ckpt.set_base(model)
    loss = model(torch.randn(64, 6, model.context_dim), torch.randn(64, dim)).logsumexp(-1).mean()
    loss.backward()
    opt.step()
    sched.step()
    best = EarlyStopping("val/loss", "min", 2)
    best.update(1, 1.0, {}, model)
    new, old = [], []
    for _ in range(3):
        t = time.time()
        state, tensors = ck.training_state(model, opt, sched, controller, best)
        ckpt.commit(state, tensors=tensors, weights={ck.BEST: best.state}, model=model)
        new.append(time.time() - t)
    for _ in range(3):
        t = time.time()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "best": copy.deepcopy(model.state_dict())}, tmp / "last.pt")
        save_model(model, str(tmp / "best_old.safetensors"))
        old.append(time.time() - t)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    state_mb = (tmp / "checkpoints" / ck.STATE).stat().st_size
    best_mb = (tmp / "checkpoints" / ck.BEST).stat().st_size
    old_mb = (tmp / "last.pt").stat().st_size + (tmp / "best_old.safetensors").stat().st_size
    print(f"V={vocab} d={dim}: trainable {trainable / 1e6:.1f} MB | lean: commit {min(new):.2f} s, state "
          f"{state_mb / 1e6:.1f} MB ({state_mb / trainable:.2f}× trainable), best {best_mb / 1e6:.1f} MB | old: "
          f"{min(old):.2f} s, last.pt + best {old_mb / 1e6:.1f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
