"""The pretrained-encoder transfer study on multi-timeframe bars (spec timeseries-transfer.md), as a task.

One run: bars → windows, chronological split with embargo, train-only stats, fixed val/test masks →
persistence and interpolation baselines on those masks (once) → model (patch embeddings + backbone +
heads) with every parameter in a named group from step 0 and the arm's freeze policy → training with
early stopping on the selection metric → best weights restored → test scored once.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from freezelab.freeze.invariants import ParamCounts, check_expected_counts, count_parameters
from freezelab.freeze.param_groups import FreezeController, ParamGroup
from freezelab.tasks.base import RunContext
from freezelab.tasks.timeseries.backbones import BackboneInfo, build_backbone
from freezelab.tasks.timeseries.config import TSConfig
from freezelab.tasks.timeseries.model import TSReconstructor
from freezelab.utils.hashing import hash_json
from freezelab.utils.seeding import derive_seed

HEADLINE = [{"name": "mse", "mode": "min", "log_scale": True}, {"name": "corr", "mode": "max"},
            {"name": "r2", "mode": "max"}]


# ----------------------------------------------------------------------------- model and groups
def build_model(cfg: TSConfig, *, seed: int,
                device: str | torch.device = "cpu") -> tuple[TSReconstructor, BackboneInfo]:
    """The model of a resolved config. New modules draw from (seed, "init", "model"), the backbone from its own
    stream, so two arms with the same seed start their common modules from identical values.

    Raises:
        PretrainedUnavailableError: the pretrained backbone cannot be loaded.
        ConfigError: unsupported backbone family or layer count.
    """
    backbone, info = build_backbone(cfg.backbone, seed=seed, device=device)
    tfs = cfg.data.timeframes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init", "model") % 2**63)
        with torch.device(device):
            model = TSReconstructor({f: cfg.windows.context[f] for f in tfs}, {f: cfg.patch_len(f) for f in tfs},
                                    backbone, info.hidden_size, position=cfg.model.position,
                                    time_frequencies=cfg.model.time_frequencies, embed_norm=cfg.model.embed_norm,
                                    embed_scale=cfg.model.embed_scale, mask_init_std=cfg.model.mask_init_std,
                                    channels=len(cfg.model.channels))
    return model, info


def apply_policy(groups: list[ParamGroup], cfg: TSConfig) -> list[ParamGroup]:
    """Frozen flags and lr scales at step 0 (spec §5); weight decay is applied outside the optimizer.

    frozen / frozen_then_unfrozen: backbone groups frozen (``train_norms``: encoder.norm trains, frozen_ln);
    finetune: every backbone group at ``lr_scale``; discriminative: block i at lr_scale · ξ^(L−1−i) and
    encoder.norm at the top block's scale.
    """
    bb = cfg.backbone
    blocks = [g for g in groups if g.name.startswith("encoder.") and g.name != "encoder.norm"]
    for g in groups:
        g.weight_decay = 0.0
        if g.name.startswith("encoder."):
            g.lr_scale = bb.lr_scale
            g.frozen = bb.train in ("frozen", "frozen_then_unfrozen")
            if g.name == "encoder.norm" and bb.train_norms:
                g.frozen = False
    if bb.train == "discriminative":
        n = len(blocks)
        for i, g in enumerate(blocks):
            g.lr_scale = bb.lr_scale * bb.discriminative_factor ** (n - 1 - i)
    return groups


def param_facts(model: TSReconstructor, controller_groups: list[ParamGroup],
                info: BackboneInfo) -> tuple[dict[str, Any], ParamCounts]:
    """Counts over unique tensors with frozen flags, per group, and what was removed (never counted).

    Returns:
        (the ``params`` entry of summary.json, the raw counts for ``check_expected_counts``).
    """
    frozen = {id(p) for g in controller_groups if g.frozen for p in g.params}
    counts = count_parameters(model, frozen=frozen)
    return {**counts.as_dict(), "by_group": {g.name: {"numel": g.numel, "frozen": g.frozen, "lr_scale": g.lr_scale}
                                             for g in controller_groups},
            "removed": info.removed, "removed_total": sum(info.removed.values()),
            "backbone": {"kind": info.kind, "family": info.family, "source": info.source,
                         "hidden_size": info.hidden_size, "num_layers": info.num_layers}}, counts


# ----------------------------------------------------------------------------- the task
class TSTask:
    """Task protocol implementation for ``task: timeseries``."""

    def inspect(self, config: dict[str, Any]) -> dict[str, Any]:
        """Parameter accounting on the meta device (config files only, no weights), with step-0 flags."""
        cfg = TSConfig.model_validate(config)
        model, info = build_model(cfg, seed=0, device="meta")
        groups = apply_policy(model.param_groups(train_norms=cfg.backbone.train_norms), cfg)
        facts, counts = param_facts(model, groups, info)
        if cfg.backbone.train == "frozen_then_unfrozen":
            facts["trainable_after_unfreeze"] = counts.total
        return facts

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from freezelab.engine.parallel import data_parallel
        from freezelab.utils.device import resolve_device

        cfg = TSConfig.model_validate(ctx.config)
        with data_parallel(cfg.runtime.devices, resolve_device(cfg.runtime.device), cfg.runtime.threads, ctx,
                           precision="32-true") as (dp, device):  # the loop's own autocast, not Fabric's
            return self._run(ctx, cfg, device, dp)

    def _run(self, ctx: RunContext, cfg: TSConfig, device: torch.device, dp: Any) -> dict[str, Any]:
        from freezelab.engine.parallel import describe
        from freezelab.tasks.timeseries.batches import budget, load_data
        from freezelab.tasks.timeseries.masking_audit import audit_masks, masking_problems
        from freezelab.tasks.timeseries.scoring import score_baselines
        from freezelab.tasks.timeseries.train import selection_mode, train_run
        from freezelab.tracking.environment import environment

        facts = ctx.facts
        facts["environment"] = environment(str(device), cfg.runtime.precision)
        facts["data_parallel"] = describe(dp)
        facts["selection"] = {"metric": cfg.train.selection_metric, "mode": selection_mode(cfg)}
        facts["headline"] = HEADLINE
        facts["max_epochs"] = cfg.train.max_epochs
        facts["trust_remote_code"] = cfg.backbone.trust_remote_code
        ctx.tracker.every_steps = cfg.runtime.log_every_steps
        ctx.tracker.live.note("loading bars and windows")

        # --- data, fixed eval masks, baselines ------------------------------------------------------
        t0 = time.time()
        data = load_data(cfg, stats_dir=ctx.run_dir, log=ctx.log)
        n_train = len(data.part("train"))
        facts["hashes"] = {**data.hashes, "budget_hash": hash_json(budget(cfg, n_train))}
        facts["data"] = {"source": cfg.data.source, "timeframes": cfg.data.timeframes, **data.info}
        facts["train_windows"] = n_train
        facts["baselines"] = score_baselines(data, batch_size=cfg.train.eval_batch_size, run_dir=ctx.run_dir)
        facts["masking"] = audit_masks(data, seed=ctx.seed, batch_size=cfg.train.eval_batch_size)
        for line in masking_problems(facts["masking"], mask_inputs=cfg.masking.mask_inputs):
            ctx.log(f"WARNING: {line}")
            facts.setdefault("warnings", []).append(line)
            facts["masking"].setdefault("problems", []).append(line)  # the report's masking findings state these
        ctx.log(f"baselines (test mse): persistence {facts['baselines']['persistence']['test/mse']:.4f}, "
                f"interpolation {facts['baselines']['interpolation']['test/mse']:.4f} ({time.time() - t0:.1f}s)")

        # --- model, groups, freeze policy ---------------------------------------------------------------
        model, info = build_model(cfg, seed=ctx.seed)
        model.to(device)
        if cfg.runtime.compile:  # in place: state-dict names (checkpoints, hashes) stay those of the eager module
            model.compile()
        facts["hashes"]["pretrained_hash"] = info.pretrained_hash
        groups = apply_policy(model.param_groups(train_norms=cfg.backbone.train_norms), cfg)
        controller = FreezeController(model, groups)
        facts["params"], counts = param_facts(model, groups, info)
        facts["phases"] = [{"epoch": 1, "event": "start", "frozen": [g.name for g in groups if g.frozen],
                            "trainable": [g.name for g in groups if not g.frozen]}]
        check_expected_counts(counts, ctx.expected_params, ctx.arm)
        ctx.log(f"backbone {info.kind}/{info.family} ({cfg.backbone.source}): {info.num_layers} blocks, d="
                f"{info.hidden_size}, removed {sum(info.removed.values()):,} unused params; trainable "
                f"{counts.trainable:,} / {counts.total:,}")

        result = train_run(model, controller, cfg, data, seed=ctx.seed, device=device, tracker=ctx.tracker,
                           log=ctx.log, facts=facts, run_dir=ctx.run_dir, baselines=facts["baselines"],
                           progress=ctx.progress, dp=dp)
        return {**{k: v for k, v in facts.items() if k not in ("epoch", "step")}, **result,
                "windows_per_second": result["windows_seen"] / max(result["train_seconds"], 1e-9)}
