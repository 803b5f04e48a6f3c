"""Arms × seeds → a plan of runs, each with a stable id and its own folder (protocol §3–4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from freezelab.config.load import Study, config_diff
from freezelab.errors import ConfigError
from freezelab.tasks.registry import hash_view
from freezelab.utils.hashing import hash_json


@dataclass(frozen=True)
class RunSpec:
    """One (arm, seed) run of a study."""

    study: str
    arm: str
    seed: int
    config: dict[str, Any]
    config_hash: str
    run_id: str
    description: str
    reference: bool
    diff_from_base: dict[str, list[Any]]
    diff_from_reference: dict[str, list[Any]]
    expected_params: dict[str, int] | None

    def run_dir(self, out_dir: Path) -> Path:
        return Path(out_dir) / "runs" / self.run_id


def config_hash(study: Study, config: dict[str, Any]) -> str:
    """The hash a run id carries: the task and the hash-relevant view of its resolved config."""
    return hash_json({"task": study.spec.task, "config": hash_view(study.spec.task, config, study.path.parent)})


def make_plan(study: Study, *, arms: list[str] | None = None, seeds: list[int] | None = None) -> list[RunSpec]:
    """Expand a study into runs, arm-major then seed.

    Args:
        study: the validated study.
        arms: a subset of arm names (default: all, in file order).
        seeds: a subset/replacement of the seed list (default: the study's).

    Raises:
        ConfigError: an unknown arm name.
    """
    names = arms or list(study.arms)
    unknown = [a for a in names if a not in study.arms]
    if unknown:
        raise ConfigError(f"{study.path}: unknown arm(s) {unknown}; the study has {list(study.arms)}")
    ref = study.arms[study.reference].config
    plan = []
    for name in names:
        arm = study.arms[name]
        chash = config_hash(study, arm.config)
        for seed in (seeds if seeds is not None else study.seeds):
            plan.append(RunSpec(
                study=study.spec.name, arm=name, seed=seed, config=arm.config, config_hash=chash,
                run_id=f"{name}__s{seed}__{chash[:8]}", description=arm.description,
                reference=arm.reference, diff_from_base=arm.diff_from_base,
                diff_from_reference=config_diff(ref, arm.config), expected_params=arm.expected_params))
    return plan
