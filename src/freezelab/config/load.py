"""Load a study file: YAML → StudyConfig → one resolved, validated config per arm.

Resolution order (protocol §2): package defaults < base < profile < arm < command line.
Every problem in the file is collected and reported at once, each with the file, the key path,
the offending value and what is allowed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from freezelab.config.schema import StudyConfig, protected_keys, task_config
from freezelab.errors import ConfigError


@dataclass(frozen=True)
class ResolvedArm:
    """One arm after overrides, validated against its task's config model."""

    name: str
    description: str
    reference: bool
    config: dict[str, Any]                     # resolved, with package defaults filled in
    diff_from_base: dict[str, list[Any]]       # dotted key -> [base value, arm value]
    expected_params: dict[str, int] | None
    allow_confound: tuple[str, ...]


@dataclass(frozen=True)
class Study:
    """A validated study: the study model plus every arm resolved."""

    path: Path
    spec: StudyConfig
    profile: str | None
    seeds: list[int]
    base: dict[str, Any]                        # resolved base (defaults + base + profile + CLI)
    arms: dict[str, ResolvedArm] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return self.spec.reference_arm


def parse_value(text: str) -> Any:
    """Parse a command-line ``key=value`` value with YAML rules (numbers, booleans, lists)."""
    return yaml.safe_load(text)


def parse_overrides(items: list[str], *, where: str = "command line") -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into ``{"a.b": 1, "c": "x"}``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{where}: override '{item}' is not of the form dotted.key=value "
                              f"(e.g. phase2.max_epochs=3)")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key = "a.b.c"``, creating dicts on the way."""
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {} if node.get(p) is None else node[p]
            if not isinstance(node[p], dict):
                raise ConfigError(f"override '{key}': '{p}' is a value, not a section")
        node = node[p]
    node[parts[-1]] = value


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and scalars are leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Any]]:
    """Dotted keys whose values differ between two resolved configs: key -> [a, b]."""
    fa, fb = flatten(a), flatten(b)
    return {k: [fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def _format_errors(where: str, err: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("function-after",))
        key = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check spelling; `freezelab fields TASK` lists every key)"
        value = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(value, dict) else f"={value!r}"
        lines.append(f"{where}: {key}{shown}: {msg}")
    return lines


def _validate_task(task: str, tree: dict[str, Any], where: str, prefix: str) -> tuple[dict, list[str]]:
    model: type[BaseModel] = task_config(task)
    try:
        return model.model_validate(tree).model_dump(mode="json"), []
    except ValidationError as err:
        return {}, _format_errors(where, err, prefix)


def _check_keys(keys: dict[str, Any], defaults: dict[str, Any], where: str) -> list[str]:
    """Reject dotted override keys that do not exist in the task config (typos)."""
    known = set(flatten(defaults))
    sections = {k.rsplit(".", i)[0] for k in known for i in range(1, k.count(".") + 1)}
    bad = []
    for key in keys:
        if key in known or key in sections or any(key.startswith(s + ".") for s in _open_sections(defaults)):
            continue
        bad.append(f"{where}: {key}: unknown key (known sections: {', '.join(sorted(defaults))})")
    return bad


def _open_sections(defaults: dict[str, Any]) -> list[str]:
    """Dotted paths whose default is None but may hold a section (e.g. phase2.unfreeze)."""
    return [k for k, v in flatten(defaults).items() if v is None]


def load_study(path: str | Path, *, profile: str | None = None, overrides: list[str] | None = None,
               seeds: list[int] | None = None) -> Study:
    """Read, validate and resolve a study file.

    Args:
        path: the study YAML file.
        profile: a profile name from the file's ``profiles`` (e.g. ``quick``), or None.
        overrides: ``dotted.key=value`` strings applied to every arm (command line).
        seeds: replaces the study's seed list when given.

    Returns:
        The validated ``Study`` with every arm resolved.

    Raises:
        ConfigError: listing every problem found, each with file, key, value and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Study file not found: {path}. Check the path (examples/ holds the shipped studies).")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study file is a mapping with keys name, task, base, arms, seeds")
    try:
        spec = StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(_format_errors(str(path), err))) from err

    problems: list[str] = []
    if profile is not None and profile not in spec.profiles:
        allowed = ", ".join(spec.profiles) or "none defined"
        raise ConfigError(f"{path}: profile '{profile}' not found (allowed: {allowed})")
    task_defaults = task_config(spec.task)().model_dump(mode="json")

    base_tree = copy.deepcopy(spec.base)
    layered: list[tuple[str, dict[str, Any]]] = []
    if profile is not None:
        layered.append((f"profiles.{profile}.overrides", spec.profiles[profile].overrides))
    cli = parse_overrides(overrides or [])
    layered.append(("command line", cli))
    for where, over in layered:
        problems += _check_keys(over, task_defaults, f"{path}: {where}")
        for k, v in over.items():
            set_dotted(base_tree, k, v)
    base, errs = _validate_task(spec.task, base_tree, str(path), "base.")
    problems += errs

    arms: dict[str, ResolvedArm] = {}
    protected = protected_keys(spec.task)
    for name, arm in spec.arms.items():
        where = f"{path}: arms.{name}.overrides"
        unknown = _check_keys(arm.overrides, task_defaults, where)
        problems += unknown
        tree = copy.deepcopy(base_tree)
        for k, v in arm.overrides.items():
            set_dotted(tree, k, v)
        for k, v in cli.items():  # command line wins over the arm
            set_dotted(tree, k, v)
        resolved, errs = _validate_task(spec.task, tree, str(path), f"arms.{name}.overrides→")
        base_tails = {e.split(": base.", 1)[-1] for e in problems}
        problems += [e for e in errs if e.split("overrides→", 1)[-1] not in base_tails  # not base's again
                     and not (unknown and "unknown key" in e)]
        for key in arm.overrides:
            hit = [p for p in protected if key == p or key.startswith(p + ".")]
            if hit and key not in arm.allow_confound:
                problems.append(f"{where}: {key}: protected key (defines comparability across arms). "
                                f"Move it to base, or list it in arms.{name}.allow_confound to accept a "
                                f"confounded comparison")
        if resolved and base:
            arms[name] = ResolvedArm(
                name=name, description=arm.description, reference=(name == spec.reference_arm),
                config=resolved, diff_from_base=config_diff(base, resolved),
                expected_params=arm.expected_params.model_dump() if arm.expected_params else None,
                allow_confound=tuple(arm.allow_confound))
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the study:\n  " + "\n  ".join(problems))
    run_seeds = seeds if seeds is not None else (
        spec.profiles[profile].seeds if profile and spec.profiles[profile].seeds else spec.seeds)
    return Study(path=path, spec=spec, profile=profile, seeds=list(run_seeds), base=base, arms=arms)
