"""One run of a ``freezelab.Task``: the task's five methods, checked, and everything else from the engine.

Data → hashes (the same items in every arm, protocol §3) → baselines on the val/test items → model with its
named groups and the arm's freeze policy (``freeze.frozen``, ``freeze.lr_scale``; I3 counts, I4 one group per
tensor) → ``engine.loop.train`` (I1, I2, I5, I6, I7, early stopping, unfreezing, resume) → test scored once at
the best epoch → ``items/*.npz`` and summary.json in the layout of docs/run-folder.md, so the report treats a
plugin's runs exactly like a built-in task's. A method that breaks its contract fails with
``PluginContractError``, naming the method and the fix.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from freezelab.engine.config import PluginRunConfig
from freezelab.engine.contract import (
    PluginContractError,
    build_groups,
    check_splits,
    controller_for,
    headline,
    ids_of,
    item_metrics,
    metric_values,
    param_facts,
)
from freezelab.engine.loop import train
from freezelab.engine.task import Metric, Splits, Task
from freezelab.errors import DataError, FreezelabError
from freezelab.freeze.invariants import check_expected_counts
from freezelab.tasks.base import RunContext
from freezelab.tracking.items import MODEL, write_items
from freezelab.utils.hashing import hash_json
from freezelab.utils.seeding import derive_seed


# ----------------------------------------------------------------------------- the runner
def _calling(task: Task, method: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``; an exception from the task's own code becomes one line naming its method."""
    try:
        return fn(*args)
    except FreezelabError:
        raise
    except Exception as err:
        raise PluginContractError(task, method, f"raised {type(err).__name__}: {err}") from err


class PluginRunner:
    """The engine side of a ``freezelab.Task`` (``tasks.base.Task`` protocol: inspect and run)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        if not task.metrics or not all(isinstance(m, Metric) for m in task.metrics.values()):
            raise PluginContractError(task, "metrics", "declare at least one metric: metrics = {'acc': "
                                      "Metric('correct', 'count', 'max')}")
        sel = task.selection_metric()
        if sel not in task.metrics:
            raise PluginContractError(task, "selection", f"{sel!r} is not one of its metrics {sorted(task.metrics)}")

    def config(self, raw: dict[str, Any]) -> PluginRunConfig:
        return type(self.task).run_config_model().model_validate(raw)

    def inspect(self, config: dict[str, Any]) -> dict[str, Any]:
        """Parameter accounting of one arm: the model built on the meta device, with its step-0 flags."""
        cfg = self.config(config)
        with torch.device("meta"):
            model = self._model(cfg, seed=0)
        facts, _ = param_facts(model, build_groups(self.task, model, cfg))
        return facts

    def _model(self, cfg: PluginRunConfig, seed: int) -> nn.Module:
        model = self.task.build_model(cfg.options, seed)
        if not isinstance(model, nn.Module):
            raise PluginContractError(self.task, "build_model", f"returned a {type(model).__name__}; return a "
                                      "torch.nn.Module")
        return model

    def preflight(self, config: dict[str, Any]) -> None:
        """Call every method of the task once on a few items, before any run folder exists: ``freezelab run``
        (and ``run_study``) stops with a one-line error naming the method that breaks its contract.

        Raises:
            PluginContractError: a method returned something freezelab cannot use.
        """
        from freezelab.engine.contract import score_split, to_device

        task, cfg = self.task, self.config(config)
        splits = _calling(task, "load_data", task.load_data, cfg.options, cfg.data.data_seed)
        check_splits(task, splits)
        model = _calling(task, "build_model", self._model, cfg, 0)
        controller_for(task, model, _calling(task, "param_groups", build_groups, task, model, cfg))
        model.train()
        batch = to_device(_calling(task, "collate", task.collate, list(splits.train[:2])), torch.device("cpu"))
        loss = _calling(task, "loss", task.loss, model, batch)
        if not (isinstance(loss, torch.Tensor) and loss.ndim == 0 and loss.requires_grad):
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise PluginContractError(task, "loss", f"returned {shape}; return a scalar tensor computed from the "
                                      "model's output (with grad), e.g. F.cross_entropy(...)")
        cols = _calling(task, "score", score_split, task, model, splits.val[:3], 2, torch.device("cpu"))
        metric_values(task, cols, "val")
        _calling(task, "baselines", self._check_baselines, splits, cfg)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from freezelab.engine.parallel import data_parallel
        from freezelab.utils.device import resolve_device

        cfg = self.config(ctx.config)
        with data_parallel(cfg.runtime.devices, resolve_device(cfg.runtime.device), cfg.runtime.threads, ctx,
                           precision="32-true") as (dp, device):
            return self._run(ctx, cfg, device, dp)

    def _run(self, ctx: RunContext, cfg: PluginRunConfig, device: torch.device, dp: Any) -> dict[str, Any]:
        from freezelab.engine.parallel import describe
        from freezelab.tracking.environment import environment

        task, facts = self.task, ctx.facts
        selection = cfg.train.selection or task.selection_metric()
        if selection not in task.metrics:
            raise DataError(f"train.selection={selection!r} is not a metric of {type(task).__name__}; choose one "
                            f"of {sorted(task.metrics)}")
        mode = task.metrics[selection].mode
        facts.update(environment=environment(str(device), cfg.runtime.precision), data_parallel=describe(dp),
                     headline=headline(task),
                     selection={"metric": f"val/{selection}", "mode": mode}, max_epochs=cfg.train.max_epochs,
                     plugin=f"{type(task).__module__}.{type(task).__name__}")
        ctx.tracker.every_steps = cfg.runtime.log_every_steps
        ctx.tracker.live.note("loading data")
        t0 = time.time()
        splits = task.load_data(cfg.options, cfg.data.data_seed)
        hashes = check_splits(task, splits)
        facts["hashes"] = {"data_hash": hash_json(hashes), "split_hash": hash_json(
            {k: [len(splits.part(k)), v] for k, v in hashes.items()}),
            "eval_hash": hash_json({"val": hashes["val"], "test": hashes["test"]}),
            "budget_hash": hash_json(cfg.train.model_dump(exclude={"lr", "optimizer", "weight_decay", "warmup_steps",
                                                                   "schedule", "min_lr_ratio", "grad_clip",
                                                                   "selection"}))}
        facts["data"] = {**{f"{k}_items": len(splits.part(k)) for k in ("train", "val", "test")}, **splits.info}
        facts["train_items"] = len(splits.train)
        facts["baselines"] = self._baselines(splits, cfg, ctx)
        ctx.log(f"data: train {len(splits.train):,} / val {len(splits.val):,} / test {len(splits.test):,} items "
                f"({time.time() - t0:.1f}s)")

        torch.manual_seed(derive_seed(ctx.seed, "init", "model") % 2**63)  # a task that does not seed still pairs
        model = self._model(cfg, ctx.seed).to(device)
        if cfg.runtime.compile:  # in place: state-dict names (checkpoints, hashes) stay those of the eager module
            model.compile()
        groups = build_groups(task, model, cfg)
        controller = controller_for(task, model, groups)
        facts["params"], counts = param_facts(model, groups)
        facts["hashes"]["pretrained_hash"] = task.pretrained(cfg.options) or "none (no pretrained weights)"
        facts["phases"] = [{"epoch": 1, "event": "start", "frozen": [g.name for g in groups if g.frozen],
                            "trainable": [g.name for g in groups if not g.frozen]}]
        check_expected_counts(counts, ctx.expected_params, ctx.arm)
        ctx.log(f"model: {counts.trainable:,} trainable of {counts.total:,} parameters; groups "
                + ", ".join(f"{g.name}{' (frozen)' if g.frozen else ''}" for g in groups))
        result = train(task, model, controller, cfg, splits, seed=ctx.seed, device=device, ctx=ctx,
                       selection=selection, mode=mode, dp=dp)
        columns = result.pop("columns")
        write_items(ctx.run_dir, MODEL, {s: {"id": ids_of(splits, s), **cols} for s, cols in columns.items()},
                    task=task.task_name(), metrics=item_metrics(task))
        return {**{k: v for k, v in facts.items() if k not in ("epoch", "step")}, **result,
                "items_per_second": result["items_seen"] / max(result["train_seconds"], 1e-9)}

    def _check_baselines(self, splits: Splits, cfg: PluginRunConfig) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        """The task's naive baselines on the val/test items, checked: name -> split -> column -> (n,) array."""
        raw = self.task.baselines(splits, cfg.options) or {}
        if not isinstance(raw, dict):
            raise PluginContractError(self.task, "baselines", "must return a dict: name -> split -> column -> array")
        out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
        for name, per_split in raw.items():
            for split in ("val", "test"):
                cols = {k: np.asarray(v, dtype=float) for k, v in ((per_split or {}).get(split) or {}).items()}
                if not cols:
                    continue
                n = len(splits.part(split))
                bad = [k for k, v in cols.items() if v.shape != (n,)]
                if bad:
                    raise PluginContractError(self.task, "baselines", f"{name}/{split} column {bad[0]!r} has shape "
                                              f"{cols[bad[0]].shape}; one value per {split} item, shape ({n},)")
                metric_values(self.task, cols, split, "baselines")
                out.setdefault(str(name), {})[split] = cols
        return out

    def _baselines(self, splits: Splits, cfg: PluginRunConfig, ctx: RunContext) -> dict[str, dict[str, float]]:
        """The baselines' metric values (summary.json) and their item files (the same items as the model's)."""
        out = {}
        for name, per_split in self._check_baselines(splits, cfg).items():
            write_items(ctx.run_dir, name, {s: {"id": ids_of(splits, s), **cols} for s, cols in per_split.items()},
                        task=self.task.task_name(), metrics=item_metrics(self.task))
            out[name] = {k: v for s, cols in per_split.items() for k, v in metric_values(self.task, cols, s).items()}
        return out
