"""Run a plan: prepare run folders, skip finished runs, isolate each run, never stop on a failure.

Resume semantics (protocol §4): succeeded runs are skipped; interrupted runs (status ``running`` and no
live lock holder) continue from their last epoch checkpoint when there is one; failed runs are rerun
from scratch, their earlier attempt moved to ``attempts/<n>/`` so nothing is lost. A file lock per run
folder keeps two runners (or Ray workers) from executing the same run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout
from rich.console import Console

from freezelab.config.load import Study
from freezelab.experiment.failures import death_record
from freezelab.experiment.plan import RunSpec
from freezelab.experiment.progress import StudyProgress
from freezelab.experiment.publish import publish_run
from freezelab.tracking import files

Isolation = Literal["process", "inline"]
ATTEMPT_FILES = ("status.json", "summary.json", "metrics.jsonl", "logs", "tb", "checkpoints")


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    arm: str
    seed: int
    status: str          # succeeded | failed | skipped | locked
    message: str = ""


def prepare_run(spec: RunSpec, out_dir: Path, *, task: str, command: str) -> Path:
    """Create the run folder with config.yaml, run.json and a pending status (idempotent)."""
    run_dir = spec.run_dir(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    files.write_yaml(run_dir / files.CONFIG_FILE, spec.config)
    files.write_json(run_dir / files.RUN_FILE, {
        "study": spec.study, "task": task, "arm": spec.arm, "seed": spec.seed, "run_id": spec.run_id,
        "config_hash": spec.config_hash, "description": spec.description, "reference": spec.reference,
        "diff_from_base": spec.diff_from_base, "diff_from_reference": spec.diff_from_reference,
        "expected_params": spec.expected_params, "command": command})
    if files.read_status(run_dir) is None:
        files.write_status(run_dir, "pending", run_id=spec.run_id, arm=spec.arm, seed=spec.seed, attempt=0)
    return run_dir


def _archive_attempt(run_dir: Path, attempt: int) -> None:
    """Move the files of an earlier attempt to attempts/<attempt>/ (every attempt is kept)."""
    dest = run_dir / "attempts" / str(attempt)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ATTEMPT_FILES:
        src = run_dir / name
        if src.exists():
            shutil.move(str(src), str(dest / name))


def _spawn(run_dir: Path, cache_dir: Path | None) -> tuple[int, int | None, float]:
    """Run one run in a child process; returns (exit code, peak RSS bytes, wall seconds)."""
    log_path = run_dir / "logs" / "run.log"
    log_path.parent.mkdir(exist_ok=True)
    t0 = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, "-m", "freezelab.experiment.run", str(run_dir),
                                 str(cache_dir or "")], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, int(usage.ru_maxrss * 1024), time.time() - t0


def run_plan(study: Study, plan: list[RunSpec], out_dir: Path, *, isolation: Isolation = "process",
             retry_failed: bool = True, progress: bool = True, tensorboard: bool = True,
             command: str = "", console: Console | None = None, sinks: Sequence[Any] = ()) -> list[RunOutcome]:
    """Execute every run of ``plan`` that is not already finished.

    Args:
        study: the validated study (written to OUT/study.json).
        plan: runs from ``make_plan``.
        out_dir: the study's output folder.
        isolation: ``process`` runs each run in its own Python process; ``inline`` in this one.
        retry_failed: rerun runs whose last attempt failed (default, as the issue asks).
        progress: show the live study and run progress (experiment/progress.py) on ``console``.
        tensorboard: write TensorBoard event files (and each finished run's HParams session).
        command: the command line, recorded for reproduction.
        console: where progress goes (default: stdout).
        sinks: exporters told about every finished run (e.g. ``MlflowSink``).

    Returns:
        One outcome per run in the plan.
    """
    out_dir = Path(out_dir)
    write_study_record(study, out_dir, command, plan)
    cache_dir = out_dir / "cache"
    outcomes: list[RunOutcome] = []
    display = StudyProgress(study.spec.name, [(s, s.run_dir(out_dir)) for s in plan], console=console,
                            enabled=progress)
    with display:
        for spec in plan:
            run_dir = prepare_run(spec, out_dir, task=study.spec.task, command=command)
            display.started(spec, run_dir)
            outcome = run_one(spec, run_dir, cache_dir, isolation=isolation, retry_failed=retry_failed,
                              progress=progress, tensorboard=tensorboard)
            display.finished(spec, run_dir, outcome)
            publish_run(run_dir, out_dir, tensorboard=tensorboard, sinks=sinks, console=display.console)
            outcomes.append(outcome)
    return outcomes


def write_study_record(study: Study, out_dir: Path, command: str, plan: list[RunSpec] | None = None) -> None:
    """OUT/study.json: the validated study, read by the report; ``planned`` accumulates the (arm, seed)
    pairs every invocation asked for, so a report on a subset run covers only what was requested."""
    out_dir.mkdir(parents=True, exist_ok=True)
    planned = [[s.arm, s.seed] for s in plan or []]
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        old = files.read_json(out_dir / "study.json")
        if old.get("name") == study.spec.name:
            planned = [list(p) for p in dict.fromkeys(map(tuple, [*old.get("planned", []), *planned]))]
    files.write_json(out_dir / "study.json", {
        "name": study.spec.name, "task": study.spec.task, "description": study.spec.description,
        "hypothesis": study.spec.hypothesis, "description_ja": study.spec.description_ja,
        "hypothesis_ja": study.spec.hypothesis_ja, "study_file": str(study.path), "profile": study.profile,
        "seeds": study.seeds, "reference": study.reference, "base": study.base,
        "arms": {n: {"description": a.description, "description_ja": study.spec.arms[n].description_ja,
                     "reference": a.reference, "diff_from_base": a.diff_from_base,
                     "allow_confound": list(a.allow_confound)} for n, a in study.arms.items()},
        "planned": planned, "command": command})


def run_one(spec: RunSpec, run_dir: Path, cache_dir: Path, *, isolation: Isolation = "process",
            retry_failed: bool = True, progress: bool = False, tensorboard: bool = True) -> RunOutcome:
    """Execute one prepared run folder under its lock (the unit a local loop or a Ray task calls)."""
    lock = FileLock(str(run_dir / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return RunOutcome(spec.run_id, spec.arm, spec.seed, "locked", "another process runs it")
    try:
        return _run_locked(spec, run_dir, cache_dir, isolation=isolation, retry_failed=retry_failed,
                           progress=progress, tensorboard=tensorboard)
    finally:
        lock.release()


def _run_locked(spec: RunSpec, run_dir: Path, cache_dir: Path, *, isolation: Isolation, retry_failed: bool,
                progress: bool, tensorboard: bool) -> RunOutcome:
    from freezelab.experiment.run import execute_run

    status = files.read_status(run_dir) or {}
    state = status.get("status", "pending")
    if state == "succeeded":
        return RunOutcome(spec.run_id, spec.arm, spec.seed, "skipped", "already succeeded")
    if state == "failed" and not retry_failed:
        return RunOutcome(spec.run_id, spec.arm, spec.seed, "failed", "failed earlier (not retried)")
    attempt = int(status.get("attempt", 0))
    # We hold the lock, so a "running" one was interrupted: it resumes in place from checkpoints/last.pt
    # when the task wrote one; a failed one (or one without a checkpoint) starts over, its files kept.
    resumable = state == "running" and (run_dir / "checkpoints" / "last.pt").exists()
    if state in ("failed", "running") and not resumable:
        _archive_attempt(run_dir, attempt)
    files.write_status(run_dir, "pending", run_id=spec.run_id, arm=spec.arm, seed=spec.seed,
                       attempt=attempt + 1, error=None)
    if isolation == "inline":
        summary = execute_run(run_dir, progress=False, tensorboard=tensorboard, cache_dir=cache_dir)
        return RunOutcome(spec.run_id, spec.arm, spec.seed, summary["status"], _msg(summary))
    code, rss, wall = _spawn(run_dir, cache_dir)
    final = files.read_status(run_dir) or {}
    if final.get("status") not in ("succeeded", "failed"):  # died before recording its own result
        record = death_record(code, run_dir / "logs" / "run.log", peak_rss_bytes=rss, wall_seconds=wall)
        files.write_status(run_dir, "failed", error=record, finished_at=files.now_iso())
        summary_path = run_dir / files.SUMMARY_FILE
        files.write_json(summary_path, {"status": "failed", "study": spec.study, "arm": spec.arm,
                                        "seed": spec.seed, "run_id": spec.run_id, "error": record,
                                        "wall_seconds": wall, "peak_memory_bytes": rss,
                                        "hashes": {"config_hash": spec.config_hash}})
        return RunOutcome(spec.run_id, spec.arm, spec.seed, "failed", record["message"])
    summary = files.read_json(run_dir / files.SUMMARY_FILE)
    return RunOutcome(spec.run_id, spec.arm, spec.seed, summary["status"], _msg(summary))


def _msg(summary: dict) -> str:
    err = summary.get("error")
    return f"{err['class']}: {err['message']}" if err else ""


def scan_runs(out_dir: Path) -> list[dict]:
    """Status, identity and best metrics of every run folder under OUT/runs (for ``show``)."""
    rows = []
    for run_dir in sorted((Path(out_dir) / "runs").glob("*")):
        if not (run_dir / files.RUN_FILE).exists():
            continue
        meta = files.read_json(run_dir / files.RUN_FILE)
        status = files.read_status(run_dir) or {"status": "pending"}
        state = status.get("status")
        if state == "running" and files.is_stale(status):
            state = "interrupted"
        summary = {}
        if (run_dir / files.SUMMARY_FILE).exists():
            summary = files.read_json(run_dir / files.SUMMARY_FILE)
        rows.append({"run_id": meta["run_id"], "arm": meta["arm"], "seed": meta["seed"], "status": state,
                     "attempt": status.get("attempt"), "error": status.get("error"), "summary": summary})
    return rows
