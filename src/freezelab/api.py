"""freezelab from Python (a notebook, a script): load a study, run it or a subset of it, read its results.

    import freezelab
    study = freezelab.load_study("examples/classify.yaml", profile="quick")
    results = freezelab.run_study(study, out="runs/classify", arms=["linear_probe", "finetune"])
    results.verdicts            # one row per arm: value, interval, vs the reference and the baseline, verdicts
    results.summaries           # one row per run: status, best epoch, test metrics, time
    results.answer              # the report's first sentence
    freezelab.report("runs/classify", lang="ja")    # (re)write the report files

``run_study`` runs exactly what ``freezelab run`` runs (each run in its own process by default, skipping
finished runs, resuming interrupted ones) and writes the same report; ``results(out)`` reads a finished or
partly finished output folder without running anything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from freezelab.config.load import Study
from freezelab.config.load import load_study as _load_study


def load_study(path: str | Path, *, profile: str | None = None, overrides: Sequence[str] = (),
               seeds: Sequence[int] | None = None) -> Study:
    """Read and validate a study file (every problem at once), with a profile and ``dotted.key=value``
    overrides as on the command line.

    Raises:
        ConfigError: the study file, an override or the task is wrong; the message lists every problem.
    """
    return _load_study(path, profile=profile, overrides=list(overrides), seeds=list(seeds) if seeds else None,
                       all_arms=True)


@dataclass
class Results:
    """What a study's output folder holds, as tables (recomputed from the run folders, as the report is)."""

    out_dir: Path
    study: Any  # report.aggregate.Study
    analysis: Any  # report.analysis.Analysis
    outcomes: list[Any] = field(default_factory=list)  # this call's runs (experiment.runner.RunOutcome)
    paths: dict[str, Path] = field(default_factory=dict)  # report files written

    @property
    def summaries(self) -> pd.DataFrame:
        """One row per run: arm, seed, status, best epoch, test metrics, wall time, the error if any."""
        rows = []
        for r in self.study.runs:
            rows.append({"arm": r.arm, "seed": r.seed, "status": r.status, "run_id": r.run_id,
                         "best_epoch": r.best_epoch, **(r.summary.get("test") or {}),
                         "wall_seconds": r.summary.get("wall_seconds"),
                         "error": (r.error.get("message") if r.error else None)})
        return pd.DataFrame(rows)

    def summary(self, arm: str, seed: int) -> dict[str, Any]:
        """One run's summary.json."""
        return next(r.summary for r in self.study.runs if r.arm == arm and r.seed == seed)

    @property
    def verdicts(self) -> pd.DataFrame:
        """One row per arm on the primary metric: n, mean with its 95 % interval, the change against the
        reference and the best naive baseline with the Holm intervals the verdicts are read from, the verdicts."""
        a, s = self.analysis, self.study
        m = a.primary
        conv = (lambda x: math.expm1(x)) if m.log_scale else (lambda x: x)
        rows = []
        for arm in s.arms:
            st = a.arm_stat(m, arm)
            lo, hi = st.interval()
            row: dict[str, Any] = {"arm": arm, "metric": m.key, "n": st.summary.n, "mean": st.summary.mean,
                                   "lo": lo, "hi": hi, "reference": arm == s.reference}
            for key, c, word in (("vs_reference", st.vs_ref, None if arm == s.reference else st.verdict),
                                 ("vs_baseline", st.vs_base, st.skill)):
                row[key] = conv(c.estimate.value) if c is not None and c.diffs else math.nan
                row[f"{key}_lo"] = conv(c.lo) if c is not None else math.nan
                row[f"{key}_hi"] = conv(c.hi) if c is not None else math.nan
                row[f"{key}_verdict"] = word
            row["baseline"] = st.baseline[0] if st.baseline else None
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def answer(self) -> str:
        """The report's answer, in English."""
        from freezelab.report.headline import answer
        from freezelab.report.sections import Ctx

        return answer(Ctx(self.study, self.analysis, "en"))

    @property
    def warnings(self) -> list[str]:
        """Every warning of the report, in English."""
        from freezelab.report.sections import Ctx, warning_text

        ctx = Ctx(self.study, self.analysis, "en")
        return [warning_text(ctx, f) for f in self.analysis.warnings]


def results(out_dir: str | Path, *, reference: str | None = None) -> Results:
    """The results of an output folder (``--out`` of ``freezelab run``), without running or writing anything.

    Raises:
        DataNotFoundError: no run folders under ``out_dir/runs``.
    """
    from freezelab.report.aggregate import load_study as read_folders
    from freezelab.report.warnings import full_analysis

    study = read_folders(Path(out_dir), reference)
    return Results(Path(out_dir), study, full_analysis(study))


def run_study(study: Study | str | Path, *, out: str | Path | None = None, arms: Sequence[str] | None = None,
              seeds: Sequence[int] | None = None, profile: str | None = None, overrides: Sequence[str] = (),
              isolation: Literal["process", "inline"] = "process", progress: bool = False,
              retry_failed: bool = True, report: bool = True, lang: str = "en") -> Results:
    """Run a study (or a subset of its arms and seeds) as ``freezelab run`` does, and return its results.

    Args:
        study: a ``load_study`` result or the path of a study file (then ``profile``/``overrides`` apply).
        out: output folder (default: the study's ``output_dir``, relative to the study file).
        arms: a subset of arm names (default: every arm of the study or its profile).
        seeds: a subset or replacement of the seeds.
        isolation: ``process`` (each run in its own process: a crash costs one run) or ``inline``.
        progress: show the live progress lines.
        retry_failed: rerun runs that failed before.
        report: write the report files (report.md, report.html, ...) at the end.
        lang: ``en`` or ``ja`` (both are written with ``ja``).

    Returns:
        The ``Results`` of the whole output folder (earlier runs included).

    Raises:
        ConfigError: a bad study, arm or seed; nothing is run.
    """
    from rich.console import Console

    from freezelab.experiment.plan import make_plan
    from freezelab.experiment.preflight import preflight
    from freezelab.experiment.runner import run_plan
    from freezelab.experiment.tuning import run_tuning
    from freezelab.report import write_report

    if not isinstance(study, Study):
        study = load_study(study, profile=profile, overrides=overrides, seeds=seeds)
    chosen = list(arms) if arms else _profile_arms(study)
    make_plan(study, arms=chosen, seeds=list(seeds) if seeds else None)  # unknown arms: ConfigError, nothing run
    preflight(study)
    out_dir = Path(out) if out is not None else Path(os.path.normpath(study.path.parent / study.spec.output_dir))
    console, command = Console(quiet=not progress), f"freezelab.run_study({str(study.path)!r})"

    def run(st: Study, runs: list, folder: Path) -> list:
        return run_plan(st, runs, folder, isolation=isolation, retry_failed=retry_failed, progress=progress,
                        command=command, console=console)

    study, _ = run_tuning(study, out_dir, arms=chosen, run=run, say=console.print)  # tune: each arm's lr on val
    outcomes = run(study, make_plan(study, arms=chosen, seeds=list(seeds) if seeds else None), out_dir)
    paths = write_report(out_dir, lang=lang) if report else {}
    found = results(out_dir)
    found.outcomes, found.paths = outcomes, paths
    return found


def _profile_arms(study: Study) -> list[str] | None:
    """The arms of the study's profile (``profiles.<name>.arms``), or None for every arm."""
    chosen = study.spec.profiles[study.profile].arms if study.profile in study.spec.profiles else None
    return list(chosen) if chosen else None
