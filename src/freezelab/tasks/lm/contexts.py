"""Phase 1 of one CVFP run and the contexts Phase 2 reads, wired to logging (cvfp-lm.md §3, §4, §5).

Phase 1 trains the ContextBlock alone by fixed-point iterations (``phase1.train_phase1``) and logs, per
iteration, the token-weighted losses and the effective rank of train and val contexts. The contexts of
every split are then computed with the current parameters, exact and noise-free: once after Phase 1
(``context.cache: once``), or again at every Phase-2 epoch start (``per_epoch``), or token by token inside
the Phase-2 loop with the weights of that step (``online``, the original's in-stream contexts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from tqdm import tqdm

from freezelab.tasks.lm import phase1 as p1
from freezelab.tasks.lm.config import LMConfig
from freezelab.tasks.lm.model import CVFPModel
from freezelab.tasks.lm.needs import context_needs
from freezelab.tasks.lm.recurrence import contexts_continued
from freezelab.tracking.tracker import Tracker
from freezelab.utils.seeding import torch_generator

Splits = dict[str, torch.Tensor]


def is_stream(cfg: LMConfig) -> bool:
    """The original's single stream: contexts, token windows and targets cross document boundaries."""
    return cfg.context.reset == "stream"


def window_offsets(cfg: LMConfig, offsets: torch.Tensor) -> torch.Tensor | None:
    """Document boundaries for token windows x̃_t: none in stream mode (zeros only before the stream)."""
    return None if is_stream(cfg) else offsets


def phase1_config(cfg: LMConfig) -> p1.Phase1Config:
    """The Phase-1 procedure's settings from a resolved study config."""
    c = cfg.phase1
    return p1.Phase1Config(max_iterations=c.max_iterations, min_iterations=c.min_iterations,
                           convergence_threshold=c.convergence_threshold, min_converged_ratio=c.min_converged_ratio,
                           lr=c.lr, dist_reg_weight=c.dist_reg_weight, noise_std=c.noise_std,
                           chunk_rows=c.chunk_rows, grad_clip=c.grad_clip, diversity_norm=c.diversity_norm,
                           reset=cfg.context.reset, wraparound=cfg.context.wraparound, iter0=c.iter0)


@torch.no_grad()
def token_inputs_all(model: CVFPModel, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """x̃ for every token of a split, as Phase 1 sees it: (N, n*d_e), no gradient."""
    return model.token_inputs(ids, offsets)


@dataclass
class Phase1Outcome:
    iterations: int
    summary: dict[str, Any] = field(default_factory=dict)


def run_phase1(model: CVFPModel, cfg: LMConfig, ids: Splits, offs: Splits, *, seed: int, tracker: Tracker,
               log: Callable[[str], None], progress: bool) -> Phase1Outcome:
    """Train the ContextBlock; log convergence, both losses and train/val effective rank per iteration."""
    pcfg = phase1_config(cfg)
    x_train = token_inputs_all(model, ids["train"], window_offsets(cfg, offs["train"]))
    x_val = token_inputs_all(model, ids["val"], window_offsets(cfg, offs["val"]))
    rows = min(cfg.phase1.er_rows, x_train.shape[0], x_val.shape[0])  # same rows for train and val
    # per-iteration train ER: exact contexts of a seeded set of whole documents holding enough rows (the legacy
    # definition samples up to 10,000); a stream has no documents to pick, so it is measured whole
    x_er, offs_er = (x_train, offs["train"]) if is_stream(cfg) else er_documents(
        x_train, offs["train"], rows if cfg.phase1.er == "centred_fixed" else 10_000, seed)
    model.context_block.requires_grad_(True)
    bar = tqdm(total=cfg.phase1.max_iterations, desc="phase 1", unit="it", disable=not progress, leave=False)
    tracker.live.phase("phase1", total=cfg.phase1.max_iterations, unit="iteration")

    stats_of: dict[int, dict[str, Any]] = {}  # train_phase1 reports an iteration's stats, then its contexts
    legacy: dict[str, float] = {}

    def on_iteration(stats: dict[str, Any]) -> None:
        stats_of[stats["iteration"]] = stats

    def on_contexts(k: int, c_iterate: torch.Tensor) -> None:
        """One metrics line per iteration: the procedure's stats, train/val ER of the same kind of contexts (exact,
        noise-free, of the parameters now) on the same rows, and the original's ER of the iterate C^k."""
        c_train, c_val = exact_train_val(model, cfg, x_er, x_val, {"train": offs_er, "val": offs["val"]})
        stats = stats_of.pop(k, {})
        legacy["er_legacy"] = er_legacy(c_iterate, seed)  # the last one is the summary's (C^K)
        tracker.log({"kind": "iteration", "phase": "phase1", "iteration": k, "train/er_legacy": legacy["er_legacy"],
                     **effective_ranks(c_train, c_val, rows=rows, seed=seed, er=cfg.phase1.er),
                     **{f"phase1/{n}": v for n, v in stats.items() if n != "iteration" and v is not None}}, step=k)
        tracker.live.step(done=k + 1, items=x_train.shape[0] if k else 0, loss=stats.get("cvfp_loss"))
        bar.update(1)

    result = p1.train_phase1(model.context_block, x_train, offs["train"], pcfg,
                             generator=torch_generator(seed, "phase1", "noise"),
                             on_iteration=on_iteration, on_contexts=on_contexts)
    bar.close()
    model.context_block.requires_grad_(False)
    summary = {"enabled": True, "iterations": result.iterations, "max_iterations": cfg.phase1.max_iterations,
               "converged_ratio": result.converged_ratio, "converged_tokens": result.converged_tokens,
               "converged": result.converged, "stopped_early": result.stopped_early,
               "seconds": result.seconds, "final_method": result.final_method, **legacy}
    log(f"phase 1: {result.iterations}/{cfg.phase1.max_iterations} iterations in {result.seconds:.1f}s, "
        f"{result.converged_ratio:.1%} of tokens converged ({result.converged_tokens:,}), "
        f"{'converged' if result.converged else 'not converged'}{', stopped early' if result.stopped_early else ''}"
        f"; contexts by {result.final_method}")
    return Phase1Outcome(iterations=result.iterations, summary=summary)


def er_documents(x: torch.Tensor, offsets: torch.Tensor, rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded set of whole documents (in their order) holding at least ``rows`` tokens, or all of them.

    Args:
        x: (N, n*d_e) token inputs of a split.
        offsets: (n_docs + 1,) its document boundaries.
        rows: tokens wanted.
        seed: the run seed (the set is drawn from (seed, "er", "documents")).

    Returns:
        (x of those documents (M, n*d_e), their offsets (k + 1,)).
    """
    offsets = offsets.cpu()
    lengths = offsets[1:] - offsets[:-1]                                               # (n_docs,)
    order = torch.randperm(len(lengths), generator=torch_generator(seed, "er", "documents"))
    need = int(torch.searchsorted(torch.cumsum(lengths[order], 0), rows)) + 1           # the first prefix >= rows
    docs = order[:need].sort().values
    idx = torch.cat([torch.arange(int(offsets[d]), int(offsets[d + 1])) for d in docs])
    sub = torch.cat([torch.zeros(1, dtype=offsets.dtype), torch.cumsum(lengths[docs], 0)])
    return x[idx.to(x.device)], sub.to(x.device)


@torch.no_grad()
def exact_train_val(model: CVFPModel, cfg: LMConfig, x_train: torch.Tensor, x_val: torch.Tensor,
                    offs: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    """Final-layer exact, noise-free contexts of train and val from the current ContextBlock: (N, d_c) each.

    Per document, both splits go through one batched recurrence (documents are independent), so measuring
    train beside val costs about one pass of the longest document, not two.
    """
    pcfg = phase1_config(cfg)
    block = model.context_block
    if is_stream(cfg):
        return (p1.exact_contexts(block, x_train, None, pcfg, all_layers=False, method="jacobi")[0],
                p1.exact_contexts(block, x_val, None, pcfg, all_layers=False, method="jacobi")[0])
    n = x_train.shape[0]
    both = torch.cat([offs["train"], offs["val"][1:] + n])                    # (n_train + n_val + 1,)
    c, _, _ = p1.exact_contexts(block, torch.cat([x_train, x_val]), both, pcfg, all_layers=False)
    return c[:n], c[n:]


@torch.no_grad()
def compute_contexts(model: CVFPModel, cfg: LMConfig, ids: Splits, offs: Splits) -> Splits:
    """Every split's per-layer contexts (N, L, d_c) from the current ContextBlock, exact and noise-free."""
    pcfg = phase1_config(cfg)
    dtype = torch.bfloat16 if cfg.context.cache_dtype == "bfloat16" else torch.float32
    out = {}
    for split in ids:
        x = token_inputs_all(model, ids[split], window_offsets(cfg, offs[split]))
        if not context_needs(cfg).context_block:
            n = x.shape[0]
            out[split] = torch.zeros(n, cfg.model.num_layers, model.context_dim, dtype=dtype, device=x.device)
            continue
        method: Literal["sequential", "jacobi"] = "sequential" if cfg.context.reset == "per_document" else "jacobi"
        c, _, _ = p1.exact_contexts(model.context_block, x, offs[split], pcfg, method=method)
        out[split] = c.to(dtype)
    return out


def effective_ranks(c_train: torch.Tensor, c_val: torch.Tensor, *, rows: int, seed: int, tag: str = "iteration",
                    er: Literal["centred_fixed", "legacy"] = "centred_fixed") -> dict[str, Any]:
    """Effective rank (``phase1.er``) and the participation ratio of train and val contexts of the same kind,
    as fractions of d_c (cvfp-lm.md §4).

    ``centred_fixed``: centred, the same number of seeded rows for both splits (PR from the same rows);
    ``legacy``: the original's uncentred ER on min(N, 10,000) rows (PR stays the centred one).
    """
    from freezelab.tasks.lm.rank import effective_rank_centred, effective_rank_legacy

    out: dict[str, Any] = {"er_rows": rows}
    for split, c in (("train", c_train), ("val", c_val)):
        cen = effective_rank_centred(c, rows=rows, generator=torch_generator(seed, "er", tag, split))
        out[f"{split}/pr"] = cen["pr_frac"]
        out[f"{split}/er"] = (cen["er_frac"] if er == "centred_fixed" else effective_rank_legacy(
            c, generator=torch_generator(seed, "er", "legacy", tag, split)) / c.shape[1])
    return out


def er_legacy(c: torch.Tensor, seed: int) -> float:
    """The original's number (uncentred ER / d_c on up to 10,000 rows) of Phase-1 iterates C^k (cvfp-lm.md §4)."""
    from freezelab.tasks.lm.rank import effective_rank_legacy

    return effective_rank_legacy(c, generator=torch_generator(seed, "er", "legacy")) / c.shape[1]


@torch.no_grad()
def context_diagnostics(model: CVFPModel, cfg: LMConfig, contexts: Splits, ids: Splits, offs: Splits, *,
                        seed: int) -> dict[str, Any]:
    """Effective rank of the cached final contexts (train and val on the same rows) and the
    memory-horizon probe (cvfp-lm.md §4, §10), for every arm including the untrained ContextBlock."""
    from freezelab.tasks.lm.rank import memory_horizon

    c_train, c_val = contexts["train"][:, -1].float(), contexts["val"][:, -1].float()
    rows = min(cfg.phase1.er_rows, c_train.shape[0], c_val.shape[0])
    out: dict[str, Any] = {"er_rows": rows, "er": cfg.phase1.er}
    if not context_needs(cfg).context_block:  # an unused block: nothing of it reaches the model
        return out
    out.update(effective_ranks(c_train, c_val, rows=rows, seed=seed, tag="final", er=cfg.phase1.er))
    x = token_inputs_all(model, ids["val"], window_offsets(cfg, offs["val"]))
    if x.shape[0] >= 16:
        out["memory_horizon"] = memory_horizon(model.context_block, x, horizons=16,
                                               generator=torch_generator(seed, "memory_horizon"))
    return out


# ----------------------------------------------------------------------------- context.cache: per_epoch
SOURCES = ("wte.", "embed_norm.", "context_block.")  # the tensors the contexts are computed from


def moving_sources(model: CVFPModel) -> dict[str, torch.Tensor]:
    """Copies of the trainable tensors the contexts depend on (wte, embed_norm when they train): what a run
    resumed inside an epoch needs to rebuild that epoch's contexts (frozen sources have not moved since)."""
    return {k: p.detach().clone() for k, p in model.named_parameters() if k.startswith(SOURCES) and p.requires_grad}


@torch.no_grad()
def refresh_contexts(model: CVFPModel, cfg: LMConfig, ids: Splits, offs: Splits, contexts: Splits,
                     splits: tuple[str, ...], *, sources: dict[str, torch.Tensor] | None = None) -> None:
    """``context.cache: per_epoch``: recompute ``splits`` of ``contexts`` in place from the current parameters
    (the original's drifting contexts), or from ``sources`` (context-source tensors saved at an epoch start,
    swapped in for the computation only: a run resumed inside an epoch gets that epoch's contexts)."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items() if sources and k in sources}
    if sources:
        model.load_state_dict(sources, strict=False)
    try:
        contexts.update(compute_contexts(model, cfg, {s: ids[s] for s in splits}, {s: offs[s] for s in splits}))
    finally:
        if saved:
            model.load_state_dict(saved, strict=False)


# ----------------------------------------------------------------------------- context.cache: online
class OnlineContexts:
    """``context.cache: online``: the original's in-stream contexts (cvfp-lm.md §5 "Original loop").

    The original computes each training token's context inside the Phase-2 loop, from the previous token's
    context and the weights of that moment (no_grad), carrying it across the whole epoch from c = 0. Batches
    step in stream order (``phase2.order: contiguous``), so a batch's contexts are the recurrence continued
    from the last context of the batch before, with the weights after its update: exactly the original's
    numbers, at the cost of a per-token ContextBlock call for every training token of every epoch (no cache).

    ``frontier`` (next token to compute) and ``carry`` (1, d_c) are all a run resumed inside an epoch needs.
    """

    def __init__(self, model: CVFPModel, cfg: LMConfig, ids: torch.Tensor, offsets: torch.Tensor, *,
                 frontier: int = 0, carry: torch.Tensor | None = None) -> None:
        self.model, self.ids, self.offsets = model, ids, offsets
        self.windows = window_offsets(cfg, offsets)
        self.reset_at = None if is_stream(cfg) else offsets[:-1]
        self.frontier = frontier
        self.carry = carry if carry is not None else torch.zeros(1, model.context_dim, device=ids.device)

    @torch.no_grad()
    def take(self, pos: torch.Tensor) -> torch.Tensor:
        """The contexts (B, L, d_c) of ``pos`` (increasing, none before the frontier), computed now."""
        a, b = self.frontier, int(pos[-1]) + 1
        if int(pos[0]) < a or b <= a:
            raise RuntimeError(f"context.cache=online: positions {int(pos[0])}..{b - 1} are not after the "
                               f"last computed token {a - 1}; the batches must run in stream order")
        span = torch.arange(a, b, device=self.ids.device)
        x = self.model.token_inputs(self.ids, self.windows, span)                   # (R, n*d_e), current weights
        starts = None if self.reset_at is None else torch.isin(span, self.reset_at)
        c = contexts_continued(self.model.context_block, x, self.carry, starts)   # (R, L, d_c)
        self.frontier, self.carry = b, c[-1:, -1].clone()
        return c[pos - a]
