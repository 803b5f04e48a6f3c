"""``freezelab run --until-decided --max-seeds N``: add seeds until every arm is decided against the reference.

After each batch of seeds the runs' primary metric goes through the anytime-valid test of
``report/sequential.py``; the study stops when every comparison with the reference is decided, or at N seeds,
or when a run fails. Seeds are added in a fixed order (the next integers after the largest one), so running
the same command again after a kill replays the same looks over finished runs (skipped, not rerun) and
continues where it stopped. Every look is recorded in ``OUT/sequential.json``, which the report reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freezelab.config.load import Study
from freezelab.errors import ConfigError
from freezelab.tracking import files

RECORD = "sequential.json"


def seeds_already_run(out_dir: Path, study: Study) -> set[int]:
    """Seeds with a run folder of this study's arms under OUT/runs (finished or not)."""
    from freezelab.experiment.runner import scan_runs

    rows = scan_runs(out_dir)
    return {int(r["seed"]) for r in rows if r["arm"] in study.arms and str(r["seed"]).lstrip("-").isdigit()}


def check_request(study: Study, out_dir: Path, max_seeds: int | None, seed_batch: int) -> None:
    """Refuse what cannot work, before any run starts (exit 2 at the CLI)."""
    if max_seeds is None:
        raise ConfigError("--until-decided needs --max-seeds N: the most seeds to run before stopping undecided")
    if seed_batch < 1:
        raise ConfigError(f"--seed-batch must be >= 1, got {seed_batch}")
    if len(study.arms) < 2:
        raise ConfigError(f"{study.path}: --until-decided compares arms with the reference "
                          f"`{study.reference}`; the study has one arm only")
    have = set(study.seeds) | seeds_already_run(out_dir, study)
    if max_seeds < len(have):
        raise ConfigError(f"--max-seeds {max_seeds} is below the {len(have)} seeds this study already has "
                          f"({', '.join(map(str, sorted(have)))}; the study's seeds and runs under {out_dir}/runs). "
                          f"Pass --max-seeds {len(have)} or more.")


def run_until_decided(study: Study, out_dir: Path, *, max_seeds: int, seed_batch: int,
                      run: Callable[[Study], list[Any]], say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``study`` with its seeds, then ``seed_batch`` more at a time, until decided or ``max_seeds``.

    Args:
        study: the validated study; its seeds are the first batch.
        out_dir: the study's output folder.
        max_seeds: the most seeds in all.
        seed_batch: seeds added per look (run together where the executor runs them in parallel).
        run: runs a study's plan (finished runs skipped) and returns its outcomes.
        say: progress lines.

    Returns:
        The record written to OUT/sequential.json (with every outcome under ``outcomes``, not written).
    """
    from freezelab.report.aggregate import load_study as load_out
    from freezelab.report.sequential import ALPHA, PRIOR_G, decide, study_diffs

    check_request(study, out_dir, max_seeds, seed_batch)
    seeds = sorted(study.seeds)
    looks: list[dict[str, Any]] = []
    outcomes: dict[str, Any] = {}  # run id -> its latest outcome (a replayed look reports finished runs again)
    while True:
        now = dataclasses.replace(study, seeds=list(seeds))
        batch = run(now)
        for o in batch:
            if o.run_id not in outcomes or o.status != "skipped":
                outcomes[o.run_id] = o
        loaded = load_out(out_dir, reference=study.reference)
        metric, diffs = study_diffs(loaded, seeds=seeds)
        decisions = decide(diffs, reference=study.reference, metric=metric.key, mode=metric.mode)
        looks.append({"seeds": list(seeds), "decisions": [d.as_dict() for d in decisions]})
        failed = [o for o in batch if o.status in ("failed", "locked")]
        stopped = ("failed" if failed else "decided" if all(d.decided for d in decisions)
                   else "max_seeds" if len(seeds) >= max_seeds else None)
        record = {"alpha": ALPHA, "prior_g": PRIOR_G, "max_seeds": max_seeds, "seed_batch": seed_batch,
                  "metric": metric.key, "mode": metric.mode, "log_scale": metric.log_scale,
                  "reference": study.reference, "seeds": list(seeds), "stopped": stopped, "looks": looks}
        files.write_json(Path(out_dir) / RECORD, record)
        say(f"after {len(seeds)} seeds: " + "; ".join(
            f"{d.arm} {d.verdict} (e-value {d.evalue:.3g}, needs {d.threshold:g})" for d in decisions))
        if stopped is not None:
            say({"decided": f"every arm decided against {study.reference} after {len(seeds)} seeds",
                 "max_seeds": f"stopped at --max-seeds {max_seeds}: "
                              f"{sum(not d.decided for d in decisions)} comparison(s) not decided",
                 "failed": "stopped: a run failed or is held elsewhere (fix it and run the same command "
                           "again)"}[stopped])
            return {**record, "outcomes": list(outcomes.values())}
        seeds += [max(seeds) + 1 + i for i in range(min(seed_batch, max_seeds - len(seeds)))]
