"""``tune:``: each arm's learning rate chosen on validation before the comparison (issue 19).

One learning rate for every arm favours whichever arm it suits (a frozen backbone's head wants a larger one
than a network trained end to end). With ``tune: {lr: [...] | {log_range: [lo, hi], n: k}, budget: E}``
(for every arm, or per arm), each arm first trains one *trial* per learning rate and trial seed, for E
epochs, on the same data and seeds for every arm; its learning rate is the one with the best mean
selection metric on **validation** (the test split is never read); the comparison then runs every seed at
that learning rate. Trials are runs like any other, in ``OUT/tune/runs/``: a killed study resumes without
rerunning a finished trial, and the choice is recorded in ``OUT/tune.json`` (grid, every trial's value,
chosen value, whether it is at the edge of the grid), which the report shows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freezelab.config.load import Study, config_diff, flatten, set_dotted
from freezelab.errors import ConfigError, RunFileError
from freezelab.experiment.plan import RunSpec, config_hash
from freezelab.tracking import files

RECORD = "tune.json"
TRIALS = "tune"  # OUT/tune/runs/<trial>


def _with(config: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    import copy

    out = copy.deepcopy(config)
    for key, value in values.items():
        set_dotted(out, key, value)
    return out


def trial_plan(study: Study, arms: list[str] | None = None) -> list[RunSpec]:
    """Every (arm, learning rate, trial seed) trial of the arms that tune, arm-major."""
    plan = []
    for name, tune in study.tune.items():
        if arms is not None and name not in arms:
            continue
        arm = study.arms[name]
        for lr in tune["grid"]:
            config = _with(arm.config, {tune["lr_key"]: lr, tune["epochs_key"]: tune["budget"]})
            chash = config_hash(study, config)
            for seed in tune["seeds"]:
                plan.append(RunSpec(
                    study=study.spec.name, arm=name, seed=seed, config=config, config_hash=chash,
                    run_id=f"{name}__lr{lr:.3g}__s{seed}__{chash[:8]}", description=f"{arm.description} (trial, "
                    f"lr {lr:.3g})", reference=arm.reference, diff_from_base=config_diff(study.base, config),
                    diff_from_reference={}, expected_params=None))
    return plan


def _trial_value(run_dir: Path) -> tuple[float, str, str]:
    """(the trial's best selection-metric value on validation, metric, mode); inf for a failed trial."""
    try:
        summary = files.read_json(run_dir / "summary.json")
    except (RunFileError, OSError):
        return math.inf, "val/loss", "min"
    sel = summary.get("selection") or {}
    metric, mode = str(sel.get("metric", "val/loss")), str(sel.get("mode", "min"))
    value = ((summary.get("best") or {}).get("metrics") or {}).get(metric)
    ok = summary.get("status") == "succeeded" and isinstance(value, (int, float)) and math.isfinite(value)
    return (float(value) if ok else (math.inf if mode == "min" else -math.inf)), metric, mode


def choose(study: Study, out_dir: Path, plan: list[RunSpec]) -> dict[str, Any]:
    """Each tuned arm's learning rate from its finished trials (mean over trial seeds, on validation)."""
    arms: dict[str, Any] = {}
    for name, tune in study.tune.items():
        trials = [s for s in plan if s.arm == name]
        if not trials:
            continue
        values: dict[float, list[float]] = {}
        metric, mode = "val/loss", "min"
        for spec in trials:
            lr = float(flatten(spec.config)[tune["lr_key"]])
            v, metric, mode = _trial_value(spec.run_dir(Path(out_dir) / TRIALS))
            values.setdefault(lr, []).append(v)
        means = {lr: sum(v) / len(v) for lr, v in values.items()}
        finite = {lr: m for lr, m in means.items() if math.isfinite(m)}
        if not finite:
            raise ConfigError(f"every learning-rate trial of arm {name} failed ({', '.join(f'{x:g}' for x in means)}); "
                              f"see their logs under {Path(out_dir) / TRIALS / 'runs'} and widen or lower tune.lr")
        pick = min if mode == "min" else max
        best = pick(finite, key=lambda lr: finite[lr])
        grid = tune["grid"]
        arms[name] = {"grid": grid, "budget": tune["budget"], "seeds": tune["seeds"], "metric": metric,
                      "mode": mode, "chosen": best, "values": {f"{lr:.6g}": values[lr] for lr in grid if lr in values},
                      "at_edge": len(grid) > 1 and best in (grid[0], grid[-1]),
                      "edge": "low" if best == grid[0] else "high" if best == grid[-1] else None}
    return arms


def apply(study: Study, chosen: dict[str, Any]) -> Study:
    """The study with every tuned arm at its chosen learning rate (its config, diffs and hash follow)."""
    arms = dict(study.arms)
    for name, rec in chosen.items():
        arm = study.arms[name]
        config = _with(arm.config, {study.tune[name]["lr_key"]: rec["chosen"]})
        arms[name] = dataclasses.replace(arm, config=config, diff_from_base=config_diff(study.base, config))
    return dataclasses.replace(study, arms=arms)


def run_tuning(study: Study, out_dir: Path, *, arms: list[str] | None,
               run: Callable[[Study, list[RunSpec], Path], list[Any]],
               say: Callable[[str], None] = print) -> tuple[Study, list[Any]]:
    """Run (or resume) every trial, choose each arm's learning rate, record it, and return the study to
    compare with those learning rates (unchanged when no arm tunes) and the trials' outcomes."""
    plan = trial_plan(study, arms)
    if not plan:
        return study, []
    say(f"tuning the learning rate of {len({s.arm for s in plan})} arm(s) on validation: {len(plan)} trials "
        f"→ {Path(out_dir) / TRIALS}")
    outcomes = run(study, plan, Path(out_dir) / TRIALS)
    held = [o.run_id for o in outcomes if o.status == "locked"]
    if held:
        raise ConfigError(f"{len(held)} learning-rate trial(s) are held by another freezelab process "
                          f"({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}); no learning rate can be "
                          "chosen without them. Run the same command again when that process has finished.")
    chosen = choose(study, out_dir, plan)  # a failed trial (e.g. diverged at a large lr) counts as the worst
    files.write_json(Path(out_dir) / RECORD, {"lr_key": next(iter(study.tune.values()))["lr_key"], "arms": chosen})
    for name, rec in chosen.items():
        edge = f" (at the {rec['edge']} edge of the grid: widen tune.lr)" if rec["at_edge"] else ""
        say(f"{name}: lr {rec['chosen']:.3g} chosen on {rec['metric']}{edge}")
    return apply(study, chosen), outcomes

