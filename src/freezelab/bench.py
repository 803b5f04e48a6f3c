"""Benchmarks reported as ratios, never as timed assertions (``freezelab bench``).

- ``matmul_peak``: the machine's measured dense matmul FLOP/s (the denominator of every MFU here).
- ``phase2``: achieved FLOP/s of CVFP Phase-2 training steps (FLOP model of cvfp-lm.md §8) / peak.
- ``recurrence``: batched per-document context recurrence vs the per-token loop of the original,
  as tokens/s of each and their ratio, on the same inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch


def _best_seconds(fn: Callable[[], Any], *, repeats: int, device: torch.device) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up (synchronising CUDA)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def load() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (``uptime``), recorded beside every figure; None where unknown."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def matmul_peak(device: torch.device, dtype: torch.dtype, *, size: int | None = None, repeats: int = 5) -> float:
    """Measured FLOP/s of a square matmul (2·n³ FLOP), the best of ``repeats``."""
    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _best_seconds(lambda: a @ b, repeats=repeats, device=device)


def bench_phase2(device: torch.device, *, vocab: int, dim: int, layers: int, batch: int, steps: int,
                 precision: str, head_trainable: bool, fused_ce: bool = True,
                 compile: bool = False) -> dict[str, float]:
    """Time Phase-2 training steps on cached contexts; return tokens/s and achieved FLOP/s.

    ``fused_ce``: the study's fused cross-entropy (tasks/lm/loss.py), or the reference F.cross_entropy.
    ``compile``: torch.compile the TokenBlock, as ``runtime.compile: true`` does (compiled in the warm-up step).
    """
    from freezelab.freeze.param_groups import FreezeController
    from freezelab.tasks.lm.config import LMConfig
    from freezelab.tasks.lm.loss import head_loss
    from freezelab.tasks.lm.phases import phase2_flops_per_token
    from freezelab.tasks.lm.task import build_model, phase2_groups

    # the study's own model and group layout: tied head, trained with wte or frozen with it
    cfg = LMConfig.model_validate({"embedding": {"freeze": not head_trainable}, "model": {"num_layers": layers}})
    model = build_model(cfg, vocab, dim, seed=0).to(device)
    if compile:
        model.token_block.compile()
    ctl = FreezeController(model, phase2_groups(model, cfg))
    g = torch.Generator().manual_seed(0)
    opt = ctl.build_optimizer(2e-3, fused=True)  # as run_phase2
    ids = torch.randint(0, vocab, (batch * steps + 1,), generator=g).to(device)
    contexts = torch.randn(batch * steps, layers, dim, generator=g).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    model.train()

    step = [0]

    def run() -> None:  # one optimizer step on the next batch (cycling over ``steps`` batches)
        s, step[0] = step[0] % steps, step[0] + 1
        pos = torch.arange(s * batch, (s + 1) * batch, device=device)
        with autocast:
            h = model.token_block(contexts[pos], model.embed(ids[pos]))
            loss, _ = head_loss(model, h, ids[pos + 1], fused=fused_ce)  # as run_phase2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ctl.trainable_params(), 1.0)
        opt.step()

    # the fastest single step: on a shared machine the minimum is the least disturbed estimate
    seconds = _best_seconds(run, repeats=steps, device=device)
    tokens = batch
    flops = phase2_flops_per_token(model, head_trainable=head_trainable) * tokens
    return {"tokens_per_second": tokens / seconds, "flops_per_second": flops / seconds}


def bench_recurrence(device: torch.device, *, dim: int, layers: int, docs: int, doc_len: int) -> dict[str, float]:
    """Batched per-document recurrence vs the per-token loop (same block, same inputs)."""
    from freezelab.tasks.lm.model import ContextBlock
    from freezelab.tasks.lm.recurrence import contexts_per_document

    g = torch.Generator().manual_seed(0)
    block = ContextBlock(dim, dim, layers, generator=g).to(device)
    x = torch.randn(docs * doc_len, dim, generator=g).to(device)
    offsets = torch.arange(0, docs * doc_len + 1, doc_len)

    @torch.no_grad()
    def per_token() -> None:  # the original's loop: one token at a time, reset per document
        for d in range(docs):
            c = torch.zeros(1, dim, device=device)
            for t in range(d * doc_len, (d + 1) * doc_len):
                c = block(c, x[t:t + 1])[:, -1]

    batched = _best_seconds(lambda: contexts_per_document(block, x, offsets), repeats=2, device=device)
    loop = _best_seconds(per_token, repeats=1, device=device)
    n = docs * doc_len
    return {"batched_tokens_per_second": n / batched, "per_token_tokens_per_second": n / loop,
            "speedup": loop / batched}


def run_benchmarks(device_name: str = "auto", *, quick: bool = False, compile: bool = False) -> dict[str, Any]:
    """The step benchmarks on one device at the seed's shapes (V 50,257, d 768, batch 512; quick: MiniLM's);
    ``compile``: the Phase-2 steps with a compiled TokenBlock."""
    device = torch.device("cuda" if device_name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    precision = "bf16" if gpu else "fp32"
    dtype = torch.bfloat16 if gpu else torch.float32
    peak = matmul_peak(device, dtype, repeats=10)
    vocab, dim = (50257, 768) if not quick else (30522, 384)   # the seed's shapes (quick: MiniLM's)
    batch, steps = (512, 20) if gpu else (512, 3 if quick else 5)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if gpu else "cpu",
                           "threads": torch.get_num_threads(), "precision": precision, "load_average": load(),
                           "compile": compile}
    for head_trainable in (False, True):
        r = bench_phase2(device, vocab=vocab, dim=dim, layers=6, batch=batch, steps=steps, precision=precision,
                         head_trainable=head_trainable, compile=compile)
        key = "phase2_trainable_head" if head_trainable else "phase2_frozen_head"
        out[key] = {**r, "vocab": vocab, "dim": dim, "batch": batch}
    peak = max(peak, matmul_peak(device, dtype, repeats=10))  # before and after: the less disturbed one
    out["matmul_peak_tflops"] = peak / 1e12
    for key in ("phase2_frozen_head", "phase2_trainable_head"):
        out[key]["mfu"] = out[key]["flops_per_second"] / peak
    out["recurrence"] = bench_recurrence(device, dim=dim, layers=6, docs=16 if quick else 64,
                                         doc_len=32 if quick else 64)
    return out
