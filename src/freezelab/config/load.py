"""Load a study file: YAML → StudyConfig → one resolved, validated config per arm.

Resolution order (protocol §2): package defaults < base < profile < arm < command line.
Every problem in the file is collected and reported at once, each with the file, the key path,
the offending value and what is allowed.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from freezelab.config.schema import BUILTIN_TASKS, StudyConfig
from freezelab.config.validate import (
    IGNORED_LOC,
    Problem,
    known_keys,
    problems_of,
    study_key_hint,
    unknown_key_hint,
    validate_tree,
)
from freezelab.errors import ConfigError
from freezelab.tasks.registry import protected_keys, task_config


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
    tune: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> its LR search (experiment/tuning.py)

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


def _dropped_keys(tree: dict[str, Any], key: str, value: Any) -> list[str]:
    """Keys (relative to ``key``) that setting ``key`` to the mapping ``value`` would silently remove from the
    mapping already there (issue 20: an arm's section override used to drop the base's other keys)."""
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if not (isinstance(node, dict) and node and isinstance(value, dict)):
        return []
    kept = set(flatten(value))
    return [k for k in flatten(node) if k not in kept and not any(k.startswith(f"{p}.") for p in kept)]


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


@dataclass
class _Layer:
    """One source of settings in resolution order: the base section, a profile, an arm, ``--set``."""

    where: str                   # "study.yaml" (keys written base.…), "study.yaml: arms.b.overrides", "--set"
    values: dict[str, Any]       # nested (base) or dotted keys (overrides)
    nested: bool = False

    @property
    def key_prefix(self) -> str:
        return "base." if self.nested else ""

    def apply(self, tree: dict[str, Any]) -> list[Problem]:
        """Write this layer's values into ``tree``; a key that runs through a value is a problem."""
        if self.nested:
            tree.update(copy.deepcopy(self.values))
            return []
        out = []
        for key, value in self.values.items():
            dropped = _dropped_keys(tree, key, value)
            if dropped:
                shown = ", ".join(f"{key}.{k}" for k in dropped[:6]) + (" …" if len(dropped) > 6 else "")
                out.append(Problem(self.where, key, "", f"replaces the whole mapping set before it (base or an "
                                   f"earlier layer) and would drop {shown}; set only the keys that change, as "
                                   f"dotted keys ({key}.{next(iter(flatten(value)), 'KEY')}: …), or repeat the "
                                   "dropped ones"))
                continue
            try:
                set_dotted(tree, key, copy.deepcopy(value))
            except ConfigError as err:
                out.append(Problem(self.where, key, "", str(err).split(": ", 1)[-1]))
        return out


def _resolve(model: type[BaseModel], layers: list[_Layer], task: str) -> tuple[dict | None, list[Problem]]:
    """Validate defaults + each layer in turn; every problem of the final config is attributed to the
    first layer at which it appears (so a ``--set`` error is the command line's, an arm's its own)."""
    tree: dict[str, Any] = {}
    first: dict[tuple, Problem] = {}
    problems: list[Problem] = []
    resolved, final = None, []
    for layer in layers:
        problems += layer.apply(tree)
        resolved, errors = validate_tree(model, tree)
        final = []
        prefix = layer.key_prefix
        hint = (lambda loc, prefix=prefix: unknown_key_hint(model, loc, key_prefix=prefix)
                or f"`freezelab fields {task}` lists every key")
        for err in errors:
            for ident, problem in problems_of(err, where=layer.where, key_prefix=prefix, hint=hint):
                first.setdefault(ident, problem)
                final.append(ident)
    return resolved, problems + [first[i] for i in dict.fromkeys(final)]


def _validate_study(raw: dict[str, Any], where: str, study_dir: Path) -> tuple[StudyConfig | None, list[Problem]]:
    """The study model, validated with every problem listed: offending keys are set aside and the rest
    validated again, so a misspelled key does not hide the problems after it."""
    tree = copy.deepcopy(raw)
    task_model = task_config(tree["task"] if tree.get("task") in BUILTIN_TASKS[:2] else "lm", study_dir)

    def hint(loc: tuple[str, ...]) -> str:
        return study_key_hint(task_model, loc) or unknown_key_hint(StudyConfig, loc)

    problems: list[Problem] = []
    for _ in range(8):
        try:
            return StudyConfig.model_validate(tree), problems
        except ValidationError as err:
            problems += [p for _, p in problems_of(err, where=where, hint=hint) if p not in problems]
            if not _set_aside(tree, [tuple(e["loc"]) for e in err.errors()]):
                return None, problems
    return None, problems


def _set_aside(tree: dict[str, Any], locs: list[tuple]) -> bool:
    """Remove the values at ``locs`` so the rest validates (defaults apply); False when nothing can go."""
    for loc in (tuple(p for p in loc if p not in IGNORED_LOC) for loc in locs):
        if loc == ("name",):
            tree["name"] = "study"
        elif loc == ("arms",) and isinstance(tree.get("arms"), dict) and tree["arms"]:
            # arm names or several references: keep well-named arms, the first reference only
            arms = {k: v for k, v in tree["arms"].items() if re.fullmatch(r"[A-Za-z0-9_.-]+", str(k))}
            refs = [k for k, v in arms.items() if isinstance(v, dict) and v.get("reference")]
            for k in refs[1:]:
                arms[k] = {**arms[k], "reference": False}
            if arms == tree["arms"] or not arms:
                return False
            tree["arms"] = arms
        else:
            node = tree
            for part in loc[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if not loc or not isinstance(node, dict) or loc[-1] not in node:
                return False
            del node[loc[-1]]
    return True


def _parse_cli(items: list[str]) -> tuple[dict[str, Any], list[Problem]]:
    try:
        return parse_overrides(items, where="--set"), []
    except ConfigError:
        good = [i for i in items if "=" in i]
        return parse_overrides(good), [Problem("--set", i, "", "not of the form dotted.key=value "
                                               "(e.g. --set phase2.max_epochs=3)") for i in items if "=" not in i]


def load_study(path: str | Path, *, profile: str | None = None, overrides: list[str] | None = None,
               seeds: list[int] | None = None, all_arms: bool = False) -> Study:
    """Read, validate and resolve a study file.

    Args:
        path: the study YAML file.
        profile: a profile name from the file's ``profiles`` (e.g. ``quick``), or None.
        overrides: ``dotted.key=value`` strings applied to every arm (command line).
        seeds: replaces the study's seed list when given.
        all_arms: keep every arm even when the profile lists a subset (``run --arms`` chooses its own).

    Returns:
        The validated ``Study`` with every arm resolved.

    Raises:
        ConfigError: listing every problem found, each with file, section, key, value and the fix.
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
    spec, problems = _validate_study(raw, str(path), path.parent)
    if spec is None and problems:
        raise ConfigError(f"{len(problems)} problem(s) in the study:\n  " + "\n  ".join(
            dict.fromkeys(str(p) for p in problems)))
    task = spec.task if spec is not None else "lm"
    model = task_config(task, path.parent)  # a plugin that cannot be loaded: one line, exit 2
    base_values = spec.base if spec is not None else (raw.get("base") if isinstance(raw.get("base"), dict) else {})
    layers = [_Layer(str(path), base_values, nested=True)]
    if spec is not None and profile is not None:
        if profile in spec.profiles:
            layers.append(_Layer(f"{path}: profiles.{profile}.overrides", spec.profiles[profile].overrides))
        else:
            allowed = ", ".join(spec.profiles) or "none defined"
            problems.append(Problem("--profile", profile, "", f"profile {profile!r} not found in {path} "
                                    f"(allowed: {allowed})"))
    cli, errs = _parse_cli(overrides or [])
    problems += errs
    cli_layer = _Layer("--set", cli)
    base, errs = _resolve(model, [*layers, cli_layer], task)
    problems += errs

    arms: dict[str, ResolvedArm] = {}
    protected = protected_keys(task, path.parent)
    keys = set(known_keys(model))
    for name, arm in (spec.arms.items() if spec is not None else ()):
        where = f"{path}: arms.{name}.overrides"
        resolved, errs = _resolve(model, [*layers, _Layer(where, arm.overrides), cli_layer], task)
        problems += errs
        for key in arm.allow_confound:
            if key not in keys:
                hint = unknown_key_hint(model, tuple(key.split(".")))
                problems.append(Problem(f"{path}: arms.{name}.allow_confound", key, "",
                                        "not a config key" + (f"; {hint}" if hint else "")))
        for key in arm.overrides:
            hit = [p for p in protected if key == p or key.startswith(p + ".")]
            if hit and key not in arm.allow_confound:
                problems.append(Problem(where, key, "", "protected key (defines comparability across arms). "
                                        f"Move it to base, or list it in arms.{name}.allow_confound to accept a "
                                        "confounded comparison"))
        if resolved and base:
            arms[name] = ResolvedArm(
                name=name, description=arm.description, reference=(name == spec.reference_arm),
                config=resolved, diff_from_base=config_diff(base, resolved),
                expected_params=arm.expected_params.model_dump() if arm.expected_params else None,
                allow_confound=tuple(arm.allow_confound))
    chosen = spec.profiles[profile].arms if spec is not None and profile in spec.profiles else None
    if chosen is not None and spec is not None:
        where = f"{path}: profiles.{profile}.arms"
        problems += [Problem(where, a, "", f"not an arm of the study (arms: {', '.join(spec.arms)})")
                     for a in chosen if a not in spec.arms]
        if spec.reference_arm not in chosen:
            problems.append(Problem(where, spec.reference_arm, "", "the reference arm must be in the profile's arms"))
        if not all_arms:
            arms = {name: arm for name, arm in arms.items() if name in chosen}
    chosen_profile = spec.profiles.get(profile) if spec is not None and profile else None
    run_seeds = seeds if seeds is not None else (
        chosen_profile.seeds if chosen_profile and chosen_profile.seeds else spec.seeds) if spec else []
    tune, errs = _tuning(spec, arms, list(run_seeds), str(path)) if spec is not None else ({}, [])
    problems += errs
    lines = list(dict.fromkeys(str(p) for p in problems))  # each problem once, in file order
    if lines or spec is None or base is None:
        raise ConfigError(f"{len(lines)} problem(s) in the study:\n  " + "\n  ".join(lines))
    return Study(path=path, spec=spec, profile=profile, seeds=list(run_seeds), base=base, arms=arms, tune=tune)


def _tuning(spec: StudyConfig, arms: dict[str, ResolvedArm], seeds: list[int],
            where: str) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    """Each arm's learning-rate search (its own ``tune`` or the study's): grid, epoch budget, trial seeds."""
    from freezelab.tasks.registry import tuning_keys

    lr_key, epochs_key = tuning_keys(spec.task)
    out, problems = {}, []
    for name, arm in arms.items():
        own = spec.arms[name].tune
        cfg = own if own is not None else spec.tune
        if cfg is None:
            continue
        section = f"{where}: arms.{name}.tune" if own is not None else f"{where}: tune"
        flat = flatten(arm.config)
        max_epochs = flat.get(epochs_key)
        budget = cfg.budget if cfg.budget is not None else max_epochs
        if isinstance(max_epochs, int) and budget > max_epochs:
            problems.append(Problem(section, "budget", str(budget), f"a trial budget of {budget} epochs is more than "
                                    f"{epochs_key}={max_epochs} of arm {name}: the trials would train longer than "
                                    f"the comparison. Use budget <= {max_epochs}"))
        if lr_key not in flat:
            problems.append(Problem(section, "lr", "", f"task {spec.task} has no {lr_key} to tune"))
        out[name] = {"grid": cfg.grid(), "budget": budget, "seeds": list(cfg.seeds or seeds[:1]),
                     "lr_key": lr_key, "epochs_key": epochs_key}
    return out, problems
