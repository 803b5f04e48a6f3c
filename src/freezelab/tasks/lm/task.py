"""The embedding-freeze study of the CVFP language model (spec cvfp-lm.md), as one freezelab task.

One run: load the embedding and its tokenizer → documents split by document → naive baselines →
Phase 1 (fixed-point training of the ContextBlock) → contexts computed once with the final
parameters and cached → Phase 2 (TokenBlock, and wte/head when the arm trains them, on shuffled
batches) with early stopping → best weights restored → test scored once.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import torch

from freezelab.freeze.invariants import check_expected_counts, count_parameters
from freezelab.freeze.param_groups import FreezeController, ParamGroup
from freezelab.pretrained.hf import LoadedEmbedding, load_embedding, resolve_source
from freezelab.tasks.base import RunContext
from freezelab.tasks.lm.cache import load_lm_data
from freezelab.tasks.lm.config import LMConfig
from freezelab.tasks.lm.model import CVFPModel
from freezelab.tasks.lm.needs import context_needs
from freezelab.tracking.checkpoints import PHASE1, Checkpoints
from freezelab.utils.hashing import hash_json
from freezelab.utils.meta import on_meta
from freezelab.utils.seeding import torch_generator

HEADLINE = [{"name": "ppl", "mode": "min", "log_scale": True}, {"name": "acc", "mode": "max"},
            {"name": "loss", "mode": "min"}]


# ----------------------------------------------------------------------------- model and groups
def is_reference(cfg: LMConfig) -> bool:
    """A reference model (model.kind gpt2/gru): no ContextBlock, no Phase 1, no contexts."""
    return cfg.model.kind != "cvfp"


def cvfp_budget(cfg: LMConfig, dim: int) -> int:
    """What the CVFP arm trains besides the shared embedding pieces: its TokenBlock's parameter count."""
    from freezelab.tasks.lm.model import TokenBlock

    with on_meta():
        block = TokenBlock(dim, dim * cfg.model.context_multiplier, cfg.model.num_layers, cfg.model.num_input_tokens)
    return sum(p.numel() for p in block.parameters())


def reference_size(cfg: LMConfig, dim: int) -> dict[str, Any]:
    """The reference core's size: the configured width, or the one matching the CVFP TokenBlock's count."""
    from freezelab.tasks.lm.reference import core_params, match_width

    m, kind = cfg.model, cfg.model.kind
    size = {"num_layers": m.reference_layers, "num_heads": m.reference_heads,
            "max_positions": cfg.data.max_tokens_per_doc or 1}
    width = m.reference_width or match_width(kind, cvfp_budget(cfg, dim), embed_dim=dim, **size)  # type: ignore[arg-type]
    return {**size, "width": width, "core_params": core_params(kind, embed_dim=dim, width=width, **size),  # type: ignore[arg-type]
            "cvfp_token_block_params": cvfp_budget(cfg, dim)}


def build_model(cfg: LMConfig, vocab_size: int, dim: int, *, seed: int | None) -> Any:
    """The model of a resolved config (CVFP or a reference); initialisation drawn from (seed, "init")."""
    generator = torch_generator(seed, "init") if vocab_size and seed is not None else None
    if is_reference(cfg):
        from freezelab.tasks.lm.reference import ReferenceLM

        size = reference_size(cfg, dim)
        return ReferenceLM(kind=cfg.model.kind, vocab_size=vocab_size, embed_dim=dim,  # type: ignore[arg-type]
                           width=size["width"], num_layers=size["num_layers"], num_heads=size["num_heads"],
                           max_positions=size["max_positions"], generator=generator)
    return CVFPModel(vocab_size=vocab_size, embed_dim=dim, context_dim=dim * cfg.model.context_multiplier,
                     num_layers=cfg.model.num_layers, num_input_tokens=cfg.model.num_input_tokens,
                     tie_head=cfg.model.head.tie, head_bias=cfg.model.head.bias, head_init=cfg.model.head.init,
                     generator=generator)


def phase2_groups(model: Any, cfg: LMConfig) -> list[ParamGroup]:
    """Named groups with their Phase-2 frozen flags (spec §5): the ContextBlock is always frozen; a reference
    model trains its core in their place."""
    if is_reference(cfg):
        return [ParamGroup("embed", [model.wte], frozen=cfg.embedding.freeze),
                ParamGroup("embed_norm", [model.embed_norm], frozen=cfg.model.embed_norm == "frozen"),
                ParamGroup("core", [model.core], frozen=False)]
    groups = [
        ParamGroup("embed", [model.wte], frozen=cfg.embedding.freeze),
        ParamGroup("embed_norm", [model.embed_norm], frozen=cfg.model.embed_norm == "frozen"),
        ParamGroup("context_block", [model.context_block], frozen=True),
        ParamGroup("token_block", [model.token_block], frozen=False),
    ]
    if model.head is not None:
        groups.append(ParamGroup("head", [model.head], frozen=cfg.model.head.freeze))
    return groups


def unused_ids(model: CVFPModel, cfg: LMConfig) -> set[int]:
    """Ids of tensors no forward pass reaches (protocol §1.4): the ContextBlock when contexts are not used."""
    if context_needs(cfg).context_block or not hasattr(model, "context_block"):  # a reference model has none
        return set()
    return {id(p) for p in model.context_block.parameters()}


def describe_groups(groups: dict[str, dict[str, Any]], cfg: LMConfig) -> dict[str, dict[str, Any]]:
    """Group descriptions (numel, frozen, ...) with ``unused: true`` on a group no forward pass reaches."""
    if not context_needs(cfg).context_block and "context_block" in groups:
        groups["context_block"] = {**groups["context_block"], "unused": True}
    return groups


def tied_roles(model: CVFPModel) -> dict[str, list[str]]:
    """The tied head has no tensor of its own: wte.weight also serves as the output projection."""
    return {"wte.weight": ["head (tied)"]} if model.head is None else {}


def embedding_shape(cfg: LMConfig) -> tuple[int, int]:
    """(vocab_size, dim) of the configured embedding without loading its weights."""
    if cfg.embedding.source == "random":
        return int(cfg.embedding.vocab_size), int(cfg.embedding.dim)  # type: ignore[arg-type]
    return _pretrained_shape(cfg.embedding.source, cfg.embedding.revision, cfg.embedding.trust_remote_code)


@functools.lru_cache(maxsize=16)
def _pretrained_shape(source: str, revision: str | None, trust_remote_code: bool = False) -> tuple[int, int]:
    """(vocab_size, dim) from a model's config file, read once per source (every arm of a study asks)."""
    from transformers import AutoConfig

    from freezelab.pretrained.hf import _explain

    try:
        hf = AutoConfig.from_pretrained(resolve_source(source), revision=revision, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise _explain(source, err) from err
    dim = next(getattr(hf, k) for k in ("hidden_size", "n_embd", "d_model", "dim") if hasattr(hf, k))
    return int(hf.vocab_size), int(dim)


def phase1_lines(p1: dict[str, Any], seconds: float) -> list[str]:
    """Phase-1 results as readable log lines (run_phase1 logs its convergence): skipped or restored, then
    the final contexts' effective rank and memory horizon."""
    lines = []
    if not p1.get("enabled", True):
        lines.append(f"phase 1: skipped ({p1.get('skipped') or 'phase1.enabled=false'})")
    if p1.get("restored"):
        lines.append("phase 1: restored from checkpoints/phase1.safetensors (a resumed run)")
    if "train/er" in p1:
        legacy = f" (the original's ER of C^K {p1['er_legacy']:.3f})" if "er_legacy" in p1 else ""
        lines.append(f"phase 1 contexts: effective rank ({p1.get('er', 'centred_fixed')}) train {p1['train/er']:.3f} "
                     f"/ val {p1['val/er']:.3f} of d_c, participation ratio {p1['train/pr']:.3f} / "
                     f"{p1['val/pr']:.3f} on {p1['er_rows']:,} rows{legacy}")
    horizon = p1.get("memory_horizon")
    if horizon:
        lines.append("phase 1 memory horizon (distance after j tokens, j = 1, 2, 4, 8, 16): "
                     + ", ".join(f"{horizon[j - 1]:.3g}" for j in (1, 2, 4, 8, 16) if j <= len(horizon)))
    return lines + [f"phase 1 done in {seconds:.1f}s (contexts of every split computed and cached)"]


# ----------------------------------------------------------------------------- the task
class LMTask:
    """Task protocol implementation for ``task: lm``."""

    def inspect(self, config: dict[str, Any]) -> dict[str, Any]:
        """Parameter accounting on the meta device, with Phase-2 flags (nothing allocated)."""
        cfg = LMConfig.model_validate(config)
        vocab, dim = embedding_shape(cfg)
        with on_meta():
            model = build_model(cfg, vocab, dim, seed=None)
        groups = phase2_groups(model, cfg)
        frozen = {id(p) for g in groups if g.frozen for p in g.params}
        counts = count_parameters(model, frozen=frozen, unused=unused_ids(model, cfg),
                                  roles=tied_roles(model)).as_dict()
        counts["by_group"] = describe_groups({g.name: {"numel": g.numel, "frozen": g.frozen} for g in groups}, cfg)
        if is_reference(cfg):
            counts["reference"] = reference_size(cfg, dim)
        return counts

    def run(self, ctx: RunContext) -> dict[str, Any]:
        cfg = LMConfig.model_validate(ctx.config)
        from freezelab.engine.parallel import data_parallel
        from freezelab.utils.device import resolve_device

        precision = "bf16-mixed" if cfg.runtime.precision == "bf16" else "32-true"
        with data_parallel(cfg.runtime.devices, resolve_device(cfg.runtime.device), cfg.runtime.threads, ctx,
                           precision=precision) as (dp, device):
            return self._run(ctx, cfg, device, precision, dp)

    def _run(self, ctx: RunContext, cfg: LMConfig, device: torch.device, precision: str, dp: Any) -> dict[str, Any]:
        from lightning.fabric import Fabric

        fabric = dp.fabric if dp is not None else Fabric(accelerator=device.type, devices=1, precision=precision)
        from freezelab.tracking.environment import environment

        facts = ctx.facts
        facts["environment"] = environment(str(device), cfg.runtime.precision)
        from freezelab.engine.parallel import describe

        facts["data_parallel"] = describe(dp)
        facts["selection"] = {"metric": "val/loss", "mode": "min"}
        facts["headline"] = HEADLINE
        facts["max_epochs"] = cfg.phase2.max_epochs
        ctx.tracker.every_steps = cfg.runtime.log_every_steps
        ctx.tracker.live.note("loading the embedding and data")

        # --- embedding, tokenizer, data ------------------------------------------------------
        t0 = time.time()
        emb: LoadedEmbedding = load_embedding(cfg.embedding.source, revision=cfg.embedding.revision,
                                              tokenizer=cfg.embedding.tokenizer, vocab_size=cfg.embedding.vocab_size,
                                              dim=cfg.embedding.dim, trust_remote_code=cfg.embedding.trust_remote_code)
        facts["trust_remote_code"] = cfg.embedding.trust_remote_code
        ctx.log(f"embedding {cfg.embedding.source}: V={emb.vocab_size} d={emb.dim} sha256={emb.sha256}")
        data, baselines = load_lm_data(cfg, emb, ctx.cache_dir, log=ctx.log)
        budget = {"phase2": cfg.phase2.model_dump(exclude={"unfreeze", "loop"}),  # loop: the same budget
                  "phase1_max": cfg.phase1.max_iterations}
        er = {"er": cfg.phase1.er} if cfg.phase1.er != "centred_fixed" else {}  # today's eval hash unchanged
        facts["hashes"] = {"data_hash": data.data_hash, "split_hash": data.split_hash,
                           "eval_hash": hash_json({"split": data.split_hash, "er_rows": cfg.phase1.er_rows, **er}),
                           "budget_hash": hash_json(budget), "pretrained_hash": emb.sha256}
        facts["data"] = {"source": cfg.data.source, "train_docs": data.train.n_docs, "val_docs": data.val.n_docs,
                         "test_docs": data.test.n_docs, "train_tokens": data.train.n_tokens,
                         "val_tokens": data.val.n_tokens, "test_tokens": data.test.n_tokens}
        facts["train_tokens"] = (data.train.n_tokens - 1 if cfg.context.reset == "stream"  # cross-document targets
                                 else data.train.n_targets)
        facts["baselines"] = baselines
        if baselines is not None:  # per-document baseline scores on the same items as the model's
            from freezelab.tasks.lm.phases import write_baseline_items

            write_baseline_items(ctx.run_dir, data, emb.vocab_size, stream=cfg.context.reset == "stream")
        d = facts["data"]
        sizes = " | ".join(f"{s} {d[s + '_docs']:,} docs, {d[s + '_tokens']:,} tokens"
                           for s in ("train", "val", "test"))
        ctx.log(f"data ({cfg.data.source}): {sizes} ({time.time() - t0:.1f}s)")

        # --- model -----------------------------------------------------------------------------
        model = build_model(cfg, emb.vocab_size, emb.dim, seed=ctx.seed)
        if emb.weight is not None:
            model.load_embedding_(emb.weight)
        model.to(device)
        splits = {name: getattr(data, name) for name in ("train", "val", "test")}
        ids = {k: torch.from_numpy(v.ids).to(device) for k, v in splits.items()}
        offs = {k: torch.from_numpy(v.offsets).to(device) for k, v in splits.items()}

        # --- Phase 1 ---------------------------------------------------------------------------
        from freezelab.tasks.lm.contexts import compute_contexts, context_diagnostics, run_phase1

        t1 = time.time()
        model.requires_grad_(False)
        ckpt = Checkpoints(ctx.run_dir, minutes=cfg.runtime.checkpoint_minutes)
        ckpt.set_base(model)          # as every attempt rebuilds it: pretrained table + seeded init
        resume = ckpt.load()
        if resume is not None:
            ctx.tracker.resumed()  # metrics.jsonl was cut back to the checkpoint: TensorBoard follows
        if is_reference(cfg):  # no ContextBlock: nothing to train or compute before Phase 2
            contexts = {k: torch.empty(v.shape[0], 0, device=device) for k, v in ids.items()}
            context_seconds = 0.0
            facts["phase1"] = {"enabled": False, "skipped": context_needs(cfg).why}
            facts["reference"] = reference_size(cfg, emb.dim)
            ctx.log(f"reference model {cfg.model.kind}: " + ", ".join(f"{k} {v:,}" for k, v in
                                                                     facts["reference"].items()))
        elif resume is not None:
            # an interrupted attempt: contexts come from the weights at the end of Phase 1 (wte may have
            # trained since), then Phase 2 continues where its last commit stopped
            ckpt.load_into(PHASE1, model)
            facts["phase1"] = resume["facts"]["phase1"]
            ctx.tracker.live.note("computing the contexts of every split")
            t_ctx = time.time()
            contexts = compute_contexts(model, cfg, ids, offs)
            context_seconds = time.time() - t_ctx
            ctx.log("phase 1: restored from checkpoints/phase1.safetensors")
        else:
            needs = context_needs(cfg)  # Phase 1 only when what it trains is used
            p1 = run_phase1(model, cfg, ids, offs, seed=ctx.seed, tracker=ctx.tracker, log=ctx.log,
                            progress=ctx.progress) if needs.phase1 else None
            ctx.tracker.live.note("computing the contexts of every split")
            t_ctx = time.time()
            contexts = compute_contexts(model, cfg, ids, offs)
            context_seconds = time.time() - t_ctx
            facts["phase1"] = {**(p1.summary if p1 is not None else {"enabled": False, "skipped": needs.why}),
                               **context_diagnostics(model, cfg, contexts, ids, offs, seed=ctx.seed)}
            ckpt.commit({"position": {"phase": "phase1", "epoch": 0, "batch": None, "stopped": False},
                         "facts": {"phase1": facts["phase1"]}}, weights={PHASE1: model.state_dict()})
        ckpt.set_base(model)          # Phase-2 files reference the Phase-1 weights
        phase1_seconds = time.time() - t1
        if not is_reference(cfg):
            for line in phase1_lines({**facts["phase1"], "restored": resume is not None}, phase1_seconds):
                ctx.log(line)

        # --- Phase 2 ---------------------------------------------------------------------------
        from freezelab.tasks.lm.phases import phase2_flops_per_token, run_phase2

        t2 = time.time()
        controller = FreezeController(model, phase2_groups(model, cfg))
        counts = count_parameters(model, frozen={id(p) for _, p in controller.frozen_params()},
                                  unused=unused_ids(model, cfg), roles=tied_roles(model))
        facts["params"] = {**counts.as_dict(), "by_group": describe_groups(controller.describe(), cfg)}
        if is_reference(cfg):  # the budget it was matched to: the CVFP arm's trainable count on this config
            r = facts["reference"]
            cvfp = counts.trainable - r["core_params"] + r["cvfp_token_block_params"]
            facts["params"]["matched"] = {"kind": cfg.model.kind, "trainable": counts.trainable,
                                          "cvfp_trainable": cvfp, "ratio": counts.trainable / cvfp}
        check_expected_counts(counts, ctx.expected_params, ctx.arm)
        token_bytes = torch.from_numpy(data.token_bytes).to(device) if data.token_bytes is not None else None
        if cfg.runtime.compile:  # in place: state-dict names (checkpoints, hashes) stay those of the eager module
            model.token_block.compile()
        result = run_phase2(model, controller, cfg, ids, offs, contexts, seed=ctx.seed, fabric=fabric, dp=dp,
                            tracker=ctx.tracker, log=ctx.log, facts=facts, ckpt=ckpt,
                            token_bytes=token_bytes, progress=ctx.progress,
                            resume=resume if resume is not None and resume["position"]["phase"] == "phase2" else None)
        phase2_seconds = time.time() - t2
        head_trainable = not controller.groups["embed" if model.head is None else "head"].frozen  # at the end
        tokens_per_second = result["tokens_seen"] / max(result["train_seconds"], 1e-9)
        flops = phase2_flops_per_token(model, head_trainable=head_trainable)
        return {**{k: v for k, v in facts.items() if k not in ("epoch", "step")}, **result,
                "phase_seconds": {"phase1": phase1_seconds, "phase2": phase2_seconds},
                "context_cache_seconds": context_seconds,  # inside phase_seconds.phase1
                "tokens_per_second": tokens_per_second, "flops_per_token": flops,
                "achieved_tflops": tokens_per_second * flops / 1e12, "files": ckpt.records()}
