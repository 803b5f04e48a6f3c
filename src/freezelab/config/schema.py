"""Pydantic models for study files (experiment-protocol.md §2).

A study file holds a ``base`` config, named ``arms`` that override it with dotted keys, ``seeds`` and
optional ``profiles`` (e.g. ``quick``). Every model forbids unknown keys so a typo fails before
anything trains. ``task`` names a built-in task (``lm``, ``timeseries``, ``classify``) or a plugin
(``path/to/file.py:ClassName`` or ``package.module:ClassName``); each task's run config is its own model
(tasks/registry.py finds it), so this module imports no task.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from pydantic import Field, field_validator

from freezelab.config.fields import Strict

BUILTIN_TASKS = ("lm", "timeseries", "classify")
PLUGIN_RE = re.compile(r"^[^:\s]+:[A-Za-z_][A-Za-z0-9_]*$")  # path/to/file.py:Class or pkg.module:Class


class ExpectedParams(Strict):
    total: Optional[int] = Field(None, ge=0, description="Unique parameters of the model.")
    trainable: Optional[int] = Field(None, ge=0, description="Trainable parameters at the start of Phase 2.")


class LogRange(Strict):
    log_range: tuple[float, float] = Field(..., description="[lo, hi] learning rates, both > 0, lo < hi.")
    n: int = Field(..., ge=2, description="Values, evenly spaced in log between lo and hi (both included).")

    @field_validator("log_range")
    @classmethod
    def _ordered(cls, r: tuple[float, float]) -> tuple[float, float]:
        if not (0 < r[0] < r[1]):
            raise ValueError(f"tune.lr.log_range must be [lo, hi] with 0 < lo < hi, got {list(r)}")
        return r

    def values(self) -> list[float]:
        lo, hi = self.log_range
        return [float(lo * (hi / lo) ** (i / (self.n - 1))) for i in range(self.n)]


class TuneConfig(Strict):
    """``tune:``: each arm's learning rate chosen on validation before the comparison (issue 19)."""

    lr: list[float] | LogRange = Field(..., description="The learning rates to try: a list, or "
                                       "{log_range: [lo, hi], n: k}.")
    budget: Optional[int] = Field(None, ge=1, description="Epochs per trial (default: the arm's max_epochs); at "
                                  "most max_epochs.")
    seeds: Optional[list[int]] = Field(None, min_length=1, description="Seeds of the trials, the same for every "
                                       "arm (default: the study's first seed).")

    @field_validator("lr")
    @classmethod
    def _grid(cls, lr: list[float] | LogRange) -> list[float] | LogRange:
        if isinstance(lr, list):
            if not lr:
                raise ValueError("tune.lr is an empty grid: list the learning rates to try, e.g. [1e-4, 1e-3, "
                                 "1e-2], or give {log_range: [1e-5, 1e-2], n: 7}")
            if any(not (v > 0) for v in lr):
                raise ValueError(f"tune.lr values must be > 0, got {lr}")
        return lr

    def grid(self) -> list[float]:
        return sorted(set(self.lr.values() if isinstance(self.lr, LogRange) else self.lr))


class ArmConfig(Strict):
    description: str = Field("", description="What this arm tests, shown in the report.")
    description_ja: str = Field("", description="The same in Japanese, shown in the Japanese report.")
    reference: bool = Field(False, description="The arm every other arm is compared with.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted key → value.")
    allow_confound: list[str] = Field(default_factory=list, description="Protected keys this arm may change.")
    tune: Optional[TuneConfig] = Field(None, description="This arm's learning-rate search (replaces the "
                                       "study's tune for this arm).")
    expected_params: Optional[ExpectedParams] = Field(
        None, description="Declared counts (protocol I3); a mismatch fails the run.")


class ProfileConfig(Strict):
    description: str = Field("", description="What the profile is for.")
    seeds: Optional[list[int]] = Field(None, description="Replaces the study's seeds under this profile.")
    arms: Optional[list[str]] = Field(None, description="The arms this profile runs, reference included (default: "
                                      "every arm), e.g. a quick profile that leaves out a slow arm.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted keys applied to base.")


class StudyConfig(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Study name (used in run ids).")
    description: str = Field("", description="The study's question, shown as the report's purpose.")
    hypothesis: str = Field("", description="What the study expects, shown in the report's overview.")
    description_ja: str = Field("", description="The study's question in Japanese (the Japanese report).")
    hypothesis_ja: str = Field("", description="The hypothesis in Japanese (the Japanese report).")
    task: str = Field("lm", description="Which study type the base config describes: a built-in task (lm, "
                      "timeseries, classify) or your own, path/to/file.py:ClassName or package.module:ClassName "
                      "(a subclass of freezelab.Task; docs/plugins.md).")
    output_dir: str = Field("runs", description="Default output folder (relative to the study file).")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                             description="Run seeds; every arm runs every seed (paired comparisons).")
    base: dict[str, Any] = Field(default_factory=dict, description="The config every arm shares (task keys).")
    arms: dict[str, ArmConfig] = Field(..., min_length=1)
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    tune: Optional[TuneConfig] = Field(None, description="Every arm's learning rate chosen on validation before "
                                       "the comparison (an arm's own tune replaces it).")

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, ArmConfig]) -> dict[str, ArmConfig]:
        bad = [a for a in arms if not re.fullmatch(r"[A-Za-z0-9_.-]+", a)]
        if bad:
            raise ValueError(f"arm names must be letters, digits, '_', '-' or '.': {bad}")
        refs = [a for a, c in arms.items() if c.reference]
        if len(refs) > 1:
            raise ValueError(f"only one arm may have reference: true, got {refs}")
        return arms

    @field_validator("task")
    @classmethod
    def _task_name(cls, task: str) -> str:
        if task not in BUILTIN_TASKS and not PLUGIN_RE.match(task):
            raise ValueError(f"unknown task {task!r}: use one of {', '.join(BUILTIN_TASKS)}, or your own task as "
                             "path/to/file.py:ClassName or package.module:ClassName")
        return task

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be unique, got {seeds}")
        return seeds

    @property
    def reference_arm(self) -> str:
        refs = [a for a, c in self.arms.items() if c.reference]
        return refs[0] if refs else next(iter(self.arms))
