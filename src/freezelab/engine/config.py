"""The run config of a ``freezelab.Task`` (plugins and the built-in ``classify`` task): the engine's sections.

``train`` (budget and optimizer), ``freeze`` (the arm's policy over the task's named groups), ``data``
(the data seed), ``runtime`` and ``options`` (the task's own keys, validated by its ``Options`` model).
Arms override these with dotted keys like any other study: ``freeze.frozen: [encoder]``,
``freeze.unfreeze: {epoch: 2}``, ``freeze.lr_scale: {encoder: 0.1}``.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, model_validator

from freezelab.config.fields import HASH_NEUTRAL, Strict, checkpoint_minutes_field

# Keys that define comparability (protocol §2): an arm may change them only via allow_confound.
PROTECTED_KEYS = ("data", "train.max_epochs", "train.batch_size", "train.eval_batch_size", "train.patience",
                  "train.min_delta", "train.steps_per_epoch", "runtime.precision", "runtime.compile",
                  "runtime.devices")


class TrainConfig(Strict):
    max_epochs: int = Field(10, ge=1, description="Epochs at most (early stopping may end sooner).")
    batch_size: int = Field(32, ge=1, description="Training items per step.")
    eval_batch_size: int = Field(128, ge=1, description="Items per evaluation batch (val every epoch, test once).")
    steps_per_epoch: Optional[int] = Field(None, ge=1, description="Cap on steps per epoch (null: one pass over "
                                           "the training items).")
    lr: float = Field(1e-3, gt=0, description="Base learning rate; a group's is lr × its freeze.lr_scale.")
    optimizer: Literal["adam", "adamw"] = Field("adamw", description="Optimizer over every group (frozen ones "
                                                "included, at lr 0).")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay (adamw) of trainable groups.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up of every group's lr over the first steps.")
    schedule: Literal["constant", "cosine"] = Field("constant", description="lr after warm-up: constant, or "
                                                    "cosine decay to min_lr_ratio × lr at the last step.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="End of the cosine schedule, as a share of lr.")
    grad_clip: Optional[float] = Field(1.0, gt=0, description="Clip the global gradient norm (null: no clip).")
    patience: int = Field(3, ge=1, description="Early stopping: epochs without improvement of the selection "
                          "metric on val before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")
    selection: Optional[str] = Field(None, description="The metric selected on val (default: the task's "
                                     "selection metric), e.g. acc.")


class UnfreezeConfig(Strict):
    epoch: int = Field(..., ge=1, description="Train frozen for this many epochs, then unfreeze (LP-FT: the "
                       "linear-probe epochs).")
    groups: Optional[list[str]] = Field(None, description="Groups to unfreeze (default: every frozen group).")
    lr_scale: Optional[float] = Field(None, gt=0, description="lr scale of the unfrozen groups from then on "
                                      "(default: their freeze.lr_scale).")
    reset_state: bool = Field(True, description="Fresh optimizer moments for the unfrozen groups.")
    reset_patience: bool = Field(True, description="Restart early stopping's patience at the unfreezing.")


class FreezeConfig(Strict):
    frozen: list[str] = Field(default_factory=list, description="Groups frozen from step 0 (requires_grad off, "
                              "eval mode, lr 0), by the task's param_groups names; ['*'] freezes every group.")
    lr_scale: dict[str, float] = Field(default_factory=dict, description="Group -> lr multiplier (default 1), "
                                       "e.g. {encoder: 0.1} for a gentler fine-tune.")
    unfreeze: Optional[UnfreezeConfig] = Field(None, description="Unfreeze after some epochs (LP-FT, "
                                               "frozen-then-unfrozen).")


class DataConfig(Strict):
    data_seed: int = Field(0, description="Passed to the task's load_data: fixes the split, identical for every "
                           "arm and seed.")


class RuntimeConfig(Strict):
    device: str = Field("auto", description="auto (cuda when available, else cpu), cpu, cuda or cuda:N.")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (null: torch's default).")
    precision: Literal["fp32", "bf16"] = Field("fp32", json_schema_extra=HASH_NEUTRAL, description=(
        "bf16: the task's loss and score run under bf16 autocast (parameters and optimizer stay fp32)."))
    compile: bool = Field(False, json_schema_extra=HASH_NEUTRAL, description=(
        "torch.compile the task's model in place (the same losses within float rounding, tested on CPU). For "
        "GPUs; on a CPU it needs a C++ compiler and rarely pays."))
    devices: int = Field(1, ge=1, json_schema_extra=HASH_NEUTRAL, description=(
        "Data-parallel training in N processes (CPU: gloo; CUDA: one GPU each): each step's items are split "
        "between them, each process's loss weighted by its share of the items and the gradients summed — exact "
        "when the task's loss is a mean over the batch's items (engine/parallel.py). load_data, scoring and "
        "baselines run in every process."))
    checkpoint_minutes: Optional[float] = checkpoint_minutes_field()
    log_every_steps: int = Field(10, ge=1, description="Step records (train/step_loss, lr, grad norms) every N "
                                 "steps.")
    max_nonfinite_steps: int = Field(5, ge=1, description="Skip a step whose loss or gradient is not finite "
                                     "(counted in the report); fail the run after this many in a row.")


class PluginRunConfig(Strict):
    """The resolved config of one run of a ``freezelab.Task``."""

    train: TrainConfig = Field(default_factory=TrainConfig)
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    options: Any = Field(default_factory=dict, description="The task's own options (its Options model).")

    @model_validator(mode="after")
    def _unfreeze_in_budget(self) -> PluginRunConfig:
        u = self.freeze.unfreeze
        if u is not None and u.epoch >= self.train.max_epochs:
            raise ValueError(f"freeze.unfreeze.epoch={u.epoch} leaves no epoch to train unfrozen "
                             f"(train.max_epochs={self.train.max_epochs}); lower it or raise max_epochs")
        if u is not None and not self.freeze.frozen:
            raise ValueError("freeze.unfreeze without freeze.frozen: nothing is frozen to unfreeze; list the "
                             "groups in freeze.frozen")
        return self
