"""Your own task: the few methods freezelab needs to run "freeze it or not?" on your model and data.

Subclass ``freezelab.Task`` and name it in a study file as ``task: my_task.py:MyTask`` (a path relative to the
study file) or ``task: my_package.my_module:MyTask``. You provide the data, the model with its parameters in
named groups, the training loss of a batch and the per-item scores of a batch; freezelab provides the rest,
unchanged from its built-in tasks: arms and their freeze policies (``freeze.frozen``, ``freeze.lr_scale``,
``freeze.unfreeze``), the optimizer over every group from step 0, invariants I1–I7 (frozen tensors bit-identical,
trainable ones moving, one group per tensor, applied learning rates, eval mode of frozen modules, finite
parameters), identical data across arms by hash, early stopping, resumable checkpoints without pickles,
progress, TensorBoard/MLflow, and the report with its calibrated verdicts. docs/plugins.md walks through
examples/own-task/transfer.py.

    class Sentiment(freezelab.Task):
        metrics = {"loss": Metric("loss_sum", "count", "min"), "acc": Metric("correct", "count", "max")}
        def load_data(self, options, data_seed): ...     # -> Splits(train=[...], val=[...], test=[...])
        def build_model(self, options, seed): ...        # -> nn.Module (seed its new modules with seed)
        def param_groups(self, model): ...               # -> {"encoder": model.encoder, "head": model.head}
        def loss(self, model, batch): ...                # -> scalar tensor
        def score(self, model, batch): ...               # -> {"loss_sum": (B,), "correct": (B,), "count": (B,)}

A method that breaks the contract (a group missing a parameter, a loss that is not a finite scalar, a score
column of the wrong shape, data that is not hashable) fails the run, or the study before it starts, with a
message naming the method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, create_model

REQUIRED = ("load_data", "build_model", "param_groups", "loss", "score")


@dataclass(frozen=True)
class Metric:
    """A metric as a ratio of per-item sums: Σ num / Σ den over the evaluation items (accuracy: correct /
    count; mean loss: loss_sum / count). The report recomputes it from any resample of the items.

    Args:
        num: the score column summed in the numerator.
        den: the score column summed in the denominator.
        mode: ``min`` (lower is better) or ``max``.
        log_scale: compare ratios (log differences), e.g. for perplexity-like or MSE-like metrics.
    """

    num: str
    den: str
    mode: Literal["min", "max"] = "min"
    log_scale: bool = False


@dataclass
class Splits:
    """The task's data: train, val and test items (anything ``collate`` batches: numbers, strings, arrays,
    tensors, lists or dicts of them). The same data seed must give the same splits in every arm; freezelab
    hashes them into every run (``data_hash``, ``split_hash``, ``eval_hash``) and the report compares the hashes.

    ``ids`` (optional): per split, one integer identity per item (default 0..n−1), stored with the item scores.
    ``info``: sizes or notes for the report's data table (``summary.data``).
    """

    train: Sequence[Any]
    val: Sequence[Any]
    test: Sequence[Any]
    ids: dict[str, Sequence[int]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def part(self, name: str) -> Sequence[Any]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


class Task:
    """Base class of a freezelab task (module docstring). Override the five methods of ``REQUIRED``; the rest
    have defaults.

    Class attributes:
        name: shown in the report (default: the class name).
        metrics: metric name -> ``Metric`` over the score columns; the report's headline metrics.
        selection: the metric selected on val for early stopping and the best epoch (default the first one).
        Options: a pydantic model of the study's ``options:`` section (your task's own keys, validated with the
            rest of the study and listed by ``freezelab fields``); None keeps ``options`` a free mapping.
    """

    name: ClassVar[str] = ""
    metrics: ClassVar[dict[str, Metric]] = {}
    selection: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel] | None] = None

    # ------------------------------------------------------------------ what you provide
    def load_data(self, options: Any, data_seed: int) -> Splits:
        """The train/val/test items. Must depend only on ``options`` and ``data_seed`` (every arm gets the same)."""
        raise NotImplementedError

    def build_model(self, options: Any, seed: int) -> Any:
        """The model (a ``torch.nn.Module``). Initialise new modules from ``seed`` (e.g. ``torch.manual_seed``)
        so two arms with the same seed start their common modules from the same values."""
        raise NotImplementedError

    def param_groups(self, model: Any) -> dict[str, Any]:
        """Named parameter groups: name -> module or list of modules. Every parameter in exactly one group;
        arms freeze and scale groups by these names (``freeze.frozen: [encoder]``)."""
        raise NotImplementedError

    def loss(self, model: Any, batch: Any) -> Any:
        """The training loss of one batch: a finite scalar tensor (the mean over the batch)."""
        raise NotImplementedError

    def score(self, model: Any, batch: Any) -> dict[str, Any]:
        """Per-item score columns of one evaluation batch: name -> (B,) tensor or array (no gradients needed),
        the columns ``metrics`` are ratios of."""
        raise NotImplementedError

    # ------------------------------------------------------------------ optional
    def collate(self, items: list[Any]) -> Any:
        """A batch from a list of items (default: ``torch.utils.data.default_collate``)."""
        from torch.utils.data import default_collate

        return default_collate(items)

    def baselines(self, splits: Splits, options: Any) -> dict[str, dict[str, dict[str, np.ndarray]]]:
        """Naive baselines scored on the same val/test items: name -> split -> column -> (n,) array, with the
        same columns as ``score`` (e.g. the majority class). The report's skill verdicts compare with them."""
        return {}

    def pretrained(self, options: Any) -> str | None:
        """A short identity of the pretrained weights used (name and hash), recorded as ``pretrained_hash``;
        None when none are used (random init)."""
        return None

    # ------------------------------------------------------------------ used by freezelab
    @classmethod
    def missing_methods(cls) -> list[str]:
        """The required methods this class does not override."""
        return [m for m in REQUIRED if getattr(cls, m) is getattr(Task, m)]

    @classmethod
    def task_name(cls) -> str:
        return cls.name or cls.__name__

    @classmethod
    def selection_metric(cls) -> str:
        return cls.selection or next(iter(cls.metrics), "")

    @classmethod
    def run_config_model(cls) -> type[BaseModel]:
        """The pydantic model of one run's resolved config: the engine's sections and ``options``."""
        from freezelab.engine.config import PluginRunConfig

        if cls.Options is None:
            return PluginRunConfig
        return create_model(f"{cls.__name__}RunConfig", __base__=PluginRunConfig,
                            options=(cls.Options, Field(default_factory=cls.Options,
                                                        description=f"{cls.task_name()}'s own options.")))
