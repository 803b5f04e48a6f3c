"""Phase 1: fixed-point ("CVFP") training of the ContextBlock.

Spec: shared/spec/cvfp-lm.md §3, with the freezelab options of §9.

    k = 0   C⁰ = exact recurrence, no learning, no noise
    k >= 1  Ĉ[t] = C^{k-1}[t-1] (+ noise), Y = ContextBlock(Ĉ, X) in chunks,
            L = (1-w) mean((Y - C^{k-1})²) + w L_div, one Adam step, C^k = Y (pre-step params)
    stop    when k+1 >= min_iterations and r_k >= min_converged_ratio, or at max_iterations

The returned contexts are *not* C^K: they are recomputed with the final parameters, without
noise, by the exact recurrence (§9 flaw 2), which is what Phase 2 caches.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from freezelab.errors import ConfigError, NumericFailure
from freezelab.tasks.lm.model import ContextBlock
from freezelab.tasks.lm.recurrence import (
    OffsetsLike,
    as_offsets,
    contexts_per_document,
    contexts_stream_jacobi,
    contexts_stream_sequential,
    shift_contexts,
)


@dataclass(frozen=True)
class Phase1Config:
    """Phase-1 hyperparameters; defaults are the seed run's (spec §7).

    Raises:
        ConfigError: listing every invalid field at once.
    """

    max_iterations: int = 10  # iteration 0 counts
    min_iterations: int = 3
    convergence_threshold: float = 0.03  # per-row mean squared change
    min_converged_ratio: float = 0.95
    lr: float = 0.002
    dist_reg_weight: float = 0.5  # w: weight of the diversity loss
    noise_std: float = 0.1  # added to Ĉ in training passes only
    chunk_rows: int = 4096
    grad_clip: float = 1.0
    diversity_norm: Literal["faithful", "rms"] = "faithful"
    reset: Literal["per_document", "stream"] = "per_document"
    wraparound: bool = False  # stream only: Ĉ[0] = C^{k-1}[N-1]
    iter0: Literal["sequential", "jacobi"] = "sequential"
    jacobi_tol: float = 1e-5
    jacobi_max_sweeps: int = 200

    def __post_init__(self) -> None:
        problems = []
        if self.max_iterations < 1:
            problems.append(f"max_iterations={self.max_iterations} must be >= 1")
        if not 1 <= self.min_iterations <= max(self.max_iterations, 1):
            problems.append(f"min_iterations={self.min_iterations} must be in 1..max_iterations")
        if not 0.0 <= self.min_converged_ratio <= 1.0:
            problems.append(f"min_converged_ratio={self.min_converged_ratio} must be in [0, 1]")
        if not 0.0 <= self.dist_reg_weight <= 1.0:
            problems.append(f"dist_reg_weight={self.dist_reg_weight} must be in [0, 1]")
        for name in ("lr", "chunk_rows", "grad_clip", "jacobi_tol", "jacobi_max_sweeps"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be > 0")
        if self.noise_std < 0 or self.convergence_threshold < 0:
            problems.append("noise_std and convergence_threshold must be >= 0")
        if self.diversity_norm not in ("faithful", "rms"):
            problems.append(f"diversity_norm={self.diversity_norm!r} must be 'faithful' or 'rms'")
        if self.reset not in ("per_document", "stream"):
            problems.append(f"reset={self.reset!r} must be 'per_document' or 'stream'")
        if self.iter0 not in ("sequential", "jacobi"):
            problems.append(f"iter0={self.iter0!r} must be 'sequential' or 'jacobi'")
        if self.wraparound and self.reset != "stream":
            problems.append("wraparound=True needs reset='stream' (documents reset to c = 0)")
        if problems:
            raise ConfigError("phase1: " + "; ".join(problems) + ". Fix these fields in the phase1 config.")


@dataclass
class Phase1Result:
    """What Phase 1 hands to Phase 2.

    Attributes:
        contexts: (N, L, d_c) float32 train contexts of the final parameters, noise-free, exact.
        iterations: iterations run, iteration 0 included (the seed's "7/10" is 7).
        converged_ratio: r_K of the last iteration (0.0 if only iteration 0 ran).
        converged_tokens: ⌊r_K · N⌋.
        converged: the stop rule fired (possibly on the last allowed iteration).
        stopped_early: the stop rule fired before max_iterations.
        history: one stats dict per iteration (the ``on_iteration`` payloads).
        val_contexts: (N_val, L, d_c) contexts of ``x_val`` computed the same way, or None.
        final_method: how ``contexts`` were computed: per_document, stream_jacobi or
            stream_sequential (the latter only if Jacobi failed to converge; a warning is issued).
        seconds: wall time of the whole call.
    """

    contexts: Tensor
    iterations: int
    converged_ratio: float
    converged_tokens: int
    converged: bool
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    val_contexts: Tensor | None = None
    final_method: str = ""
    seconds: float = 0.0


def diversity_loss(y: Tensor, norm: Literal["faithful", "rms"]) -> Tensor:
    """Negative spread of a chunk's rows around their mean.

    Args:
        y: (b, d_c) one chunk's outputs.
        norm: "faithful" -‖Y - ȳ‖_F / b (depends on b, spec §3); "rms" -sqrt(mean_rows ‖y - ȳ‖²).

    Returns:
        () scalar loss.
    """
    centred = y - y.mean(dim=0, keepdim=True)  # (b, d_c)
    if norm == "faithful":
        return -torch.linalg.norm(centred) / y.shape[0]
    return -centred.pow(2).sum(dim=1).mean().sqrt()


def exact_contexts(
    block: ContextBlock,
    x: Tensor,
    offsets: OffsetsLike | None,
    cfg: Phase1Config,
    *,
    all_layers: bool = True,
    method: Literal["sequential", "jacobi"] = "sequential",
) -> tuple[Tensor, str, int]:
    """Noise-free exact recurrence in the mode ``cfg.reset`` selects.

    Args:
        block: the ContextBlock.
        x: (N, n*d_e) token inputs.
        offsets: document boundaries (ignored in stream mode).
        cfg: supplies reset, chunk_rows and the Jacobi tolerance.
        all_layers: (N, L, d_c) when True, else the final layer (N, d_c).
        method: "sequential" is the batched per-document recurrence, or the per-token loop in
            stream mode; "jacobi" is Jacobi sweeps, falling back to "sequential" with a
            RuntimeWarning if they do not converge (the method used is returned).

    Returns:
        (contexts, method used, Jacobi sweeps or 0).
    """
    per_document = cfg.reset == "per_document"

    def sequential() -> tuple[Tensor, str, int]:
        if per_document:
            return contexts_per_document(block, x, offsets, all_layers=all_layers), "per_document", 0
        return contexts_stream_sequential(block, x, all_layers=all_layers), "stream_sequential", 0

    if method == "sequential":
        return sequential()
    try:
        c, sweeps = contexts_stream_jacobi(
            block, x, offsets=offsets if per_document else None, tol=cfg.jacobi_tol,
            max_sweeps=cfg.jacobi_max_sweeps, chunk_rows=cfg.chunk_rows, all_layers=all_layers,
        )  # fmt: skip
    except NumericFailure as err:
        if err.code != "jacobi_not_converged":
            raise
        warnings.warn(f"{err}; falling back to the sequential recurrence", RuntimeWarning, stacklevel=2)
        return sequential()
    return c, "per_document_jacobi" if per_document else "stream_jacobi", sweeps


def train_phase1(
    block: ContextBlock,
    x_train: Tensor,
    offsets_train: OffsetsLike | None,
    cfg: Phase1Config,
    *,
    generator: torch.Generator,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
    on_contexts: Callable[[int, Tensor], None] | None = None,
    x_val: Tensor | None = None,
    offsets_val: OffsetsLike | None = None,
) -> Phase1Result:
    """Train ``block`` in place by CVFP iterations, then compute the contexts Phase 2 caches.

    Args:
        block: the ContextBlock; all its parameters must require grad.
        x_train: (N, n*d_e) token inputs LN_e(wte[ids]) (windows for n > 1), no grad.
        offsets_train: (n_docs + 1,) document boundaries; None (or ignored) in stream mode.
        cfg: Phase-1 hyperparameters.
        generator: draws the training noise; on x_train's device or the CPU.
        on_iteration: called after each iteration with a JSON-safe stats dict.
        on_contexts: called after each iteration with (k, C^k) where C^k (N, d_c) is the
            final-layer iterate (the original's ER input); the block already holds the
            post-step parameters at that point.
        x_val, offsets_val: validation inputs; their final contexts go to ``val_contexts``.

    Returns:
        Phase1Result.

    Raises:
        ConfigError: a block parameter is frozen.
        NumericFailure: ``non_finite`` when every chunk of an iteration had a non-finite loss.
    """
    t_start = time.perf_counter()
    params = list(block.parameters())
    if not all(p.requires_grad for p in params):
        raise ConfigError("phase1: every ContextBlock parameter must require grad during Phase 1.")
    offsets = None if cfg.reset == "stream" else as_offsets(offsets_train, x_train.shape[0])
    x_train = x_train.detach()
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    history: list[dict[str, Any]] = []

    # k = 0: exact recurrence, no learning, no noise.
    t0 = time.perf_counter()
    c_prev, method, sweeps = exact_contexts(block, x_train, offsets, cfg, all_layers=False, method=cfg.iter0)
    stats0 = {"iteration": 0, "conv_rate": None, "cvfp_loss": None, "div_loss": None, "loss": None,
              "skipped_chunks": 0, "grad_norm": None, "method": method, "jacobi_sweeps": sweeps,
              "seconds": time.perf_counter() - t0}  # fmt: skip
    _report(history, stats0, on_iteration, on_contexts, 0, c_prev)

    ratio, converged = 0.0, False
    for k in range(1, cfg.max_iterations):
        c_prev, stats = _cvfp_iteration(block, optimizer, params, x_train, c_prev, offsets, cfg, generator, k)
        ratio = stats["conv_rate"]
        _report(history, stats, on_iteration, on_contexts, k, c_prev)
        if k + 1 >= cfg.min_iterations and ratio >= cfg.min_converged_ratio:
            converged = True
            break
    iterations = len(history)

    # Phase 2's contexts: final parameters, no noise, exact recurrence, all layers (§9 flaw 2).
    final: Literal["sequential", "jacobi"] = "sequential" if cfg.reset == "per_document" else "jacobi"
    contexts, final_method, _ = exact_contexts(block, x_train, offsets, cfg, method=final)
    val_contexts = None
    if x_val is not None:
        val_offsets = None if cfg.reset == "stream" else as_offsets(offsets_val, x_val.shape[0])
        val_contexts, _, _ = exact_contexts(block, x_val.detach(), val_offsets, cfg, method=final)
    return Phase1Result(
        contexts=contexts,
        iterations=iterations,
        converged_ratio=ratio,
        converged_tokens=math.floor(ratio * x_train.shape[0]),
        converged=converged,
        stopped_early=converged and iterations < cfg.max_iterations,
        history=history,
        val_contexts=val_contexts,
        final_method=final_method,
        seconds=time.perf_counter() - t_start,
    )


def _cvfp_iteration(
    block: ContextBlock,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    x: Tensor,
    c_prev: Tensor,
    offsets: Tensor | None,
    cfg: Phase1Config,
    generator: torch.Generator,
    k: int,
) -> tuple[Tensor, dict[str, Any]]:
    """One parallel (Jacobi) pass with gradient accumulation and one Adam step.

    Returns:
        (C^k (N, d_c) detached outputs of the pre-step parameters, stats dict).
    """
    t0 = time.perf_counter()
    num_rows, w = x.shape[0], cfg.dist_reg_weight
    c_in_all = shift_contexts(c_prev, offsets, wraparound=cfg.wraparound)  # (N, d_c) Ĉ
    c_next = torch.empty_like(c_prev)  # (N, d_c) C^k
    num_chunks = math.ceil(num_rows / cfg.chunk_rows)
    optimizer.zero_grad(set_to_none=True)
    skipped, converged_rows, cvfp_sum, div_sum, used_rows = 0, 0, 0.0, 0.0, 0
    for s in range(0, num_rows, cfg.chunk_rows):
        c_in = c_in_all[s : s + cfg.chunk_rows]  # (b, d_c)
        if cfg.noise_std > 0:
            noise = torch.randn(c_in.shape, generator=generator, device=generator.device)
            c_in = c_in + cfg.noise_std * noise.to(c_in.device)
        target = c_prev[s : s + cfg.chunk_rows]  # (b, d_c), C^{k-1}, detached
        y = block(c_in, x[s : s + cfg.chunk_rows])[:, -1]  # (b, d_c)
        cvfp = F.mse_loss(y, target)
        div = diversity_loss(y, cfg.diversity_norm)
        loss = (1.0 - w) * cvfp + w * div
        c_next[s : s + cfg.chunk_rows] = y.detach()
        row_err = (y.detach() - target).pow(2).mean(dim=1)  # (b,)
        converged_rows += int((row_err < cfg.convergence_threshold).sum())
        if not bool(torch.isfinite(loss)):
            skipped += 1  # the original skips NaN/Inf chunks; they still count in num_chunks
            continue
        (loss / num_chunks).backward()  # the step weighs every chunk alike, as the original
        b = y.shape[0]  # the logged losses weigh a chunk by its tokens, as the original's log did
        cvfp_sum, div_sum, used_rows = cvfp_sum + b * float(cvfp.detach()), div_sum + b * float(div.detach()), \
            used_rows + b
    if skipped == num_chunks:
        raise NumericFailure("non_finite", f"phase1 iteration {k}: all {num_chunks} chunks had non-finite loss")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
    optimizer.step()
    cvfp_mean, div_mean = cvfp_sum / used_rows, div_sum / used_rows  # token-weighted over the chunks used
    stats = {"iteration": k, "conv_rate": converged_rows / num_rows, "cvfp_loss": cvfp_mean,
             "div_loss": div_mean, "loss": (1.0 - w) * cvfp_mean + w * div_mean,
             "skipped_chunks": skipped, "grad_norm": grad_norm, "method": "jacobi_train",
             "jacobi_sweeps": 1, "seconds": time.perf_counter() - t0}  # fmt: skip
    return c_next, stats


def _report(
    history: list[dict[str, Any]],
    stats: dict[str, Any],
    on_iteration: Callable[[dict[str, Any]], None] | None,
    on_contexts: Callable[[int, Tensor], None] | None,
    k: int,
    contexts: Tensor,
) -> None:
    history.append(stats)
    if on_iteration is not None:
        on_iteration(dict(stats))
    if on_contexts is not None:
        on_contexts(k, contexts)
