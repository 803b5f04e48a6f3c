"""Run a plan: prepare run folders, skip finished runs, isolate each run, never stop on a failure.

Resume semantics (protocol §4): a run whose summary.json is complete and verified has succeeded (whatever
status.json says) and is skipped; an interrupted run continues from its last committed checkpoint when
that verifies (``tracking/checkpoints.py``), else starts over; failed runs are rerun from scratch. An
attempt that starts over is moved to ``attempts/<n>/`` first, so nothing is lost. A file lock per run
folder keeps two runners (or Ray workers) from executing the same run; ``.lock.json`` says who holds it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
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
from freezelab.errors import RunFileError
from freezelab.experiment.failures import death_record
from freezelab.experiment.plan import RunSpec
from freezelab.experiment.progress import StudyProgress
from freezelab.experiment.publish import publish_run
from freezelab.tracking import files
from freezelab.tracking.checkpoints import LEGACY, MANIFEST, finish, legacy_message, recover

Isolation = Literal["process", "inline"]
ATTEMPT_FILES = ("status.json", "summary.json", "metrics.jsonl", "logs", "tb", "checkpoints")
LOCK_FILE, OWNER_FILE = ".lock", ".lock.json"
SUMMARY_KEYS = ("best", "test", "epochs_run", "hashes", "params")  # what a complete succeeded summary holds
RESUMABLE_FAILURES = ("process_died", "disk_full")                  # failures that are not the training's own


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    arm: str
    seed: int
    status: str          # succeeded | failed | skipped (succeeded earlier) | locked (held by another process)
    message: str = ""


def _say(message: str) -> None:
    """A line for the user, printed above any progress bar."""
    print(message, file=sys.stderr, flush=True)


def prepare_run(spec: RunSpec, out_dir: Path, *, task: str, command: str, profile: str | None = None,
                task_dir: Path | None = None) -> Path:
    """Create the run folder with config.yaml, run.json and a pending status (idempotent); run.json records
    the study profile the run was made under (``--profile``: the report then says it is a smoke test)."""
    run_dir = spec.run_dir(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    files.write_yaml(run_dir / files.CONFIG_FILE, spec.config)
    files.write_json(run_dir / files.RUN_FILE, {
        "study": spec.study, "task": task, "arm": spec.arm, "seed": spec.seed, "run_id": spec.run_id,
        "config_hash": spec.config_hash, "description": spec.description, "reference": spec.reference,
        "diff_from_base": spec.diff_from_base, "diff_from_reference": spec.diff_from_reference,
        "expected_params": spec.expected_params, "command": command, "profile": profile,
        "task_dir": str(Path(task_dir).resolve()) if task_dir is not None else None})
    if not (run_dir / files.STATUS_FILE).exists():  # a damaged one is judged by the runner, not overwritten
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
                                stdin=subprocess.DEVNULL,  # nothing may prompt (e.g. for remote code)
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, int(usage.ru_maxrss * 1024), time.time() - t0


def run_plan(study: Study, plan: list[RunSpec], out_dir: Path, *, isolation: Isolation = "process",
             retry_failed: bool = True, progress: bool = True, tensorboard: bool = True,
             command: str = "", console: Console | None = None, sinks: Sequence[Any] = (),
             wait: bool = False, wait_timeout: float | None = None) -> list[RunOutcome]:
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
        wait: wait for runs another process holds instead of reporting them ``locked``.
        wait_timeout: with ``wait``, give up on a held run after this many seconds (``locked``); None: no limit.

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
            run_dir = prepare_run(spec, out_dir, task=study.spec.task, command=command, profile=study.profile,
                                  task_dir=study.path.parent)
            display.started(spec, run_dir)
            outcome = run_one(spec, run_dir, cache_dir, isolation=isolation, retry_failed=retry_failed,
                              progress=progress, tensorboard=tensorboard, wait=wait, wait_timeout=wait_timeout)
            display.finished(spec, run_dir, outcome)
            publish_run(run_dir, out_dir, tensorboard=tensorboard, sinks=sinks, console=display.console)
            outcomes.append(outcome)
    return outcomes


def write_study_record(study: Study, out_dir: Path, command: str, plan: list[RunSpec] | None = None) -> None:
    """OUT/study.json: the validated study, read by the report; ``planned`` accumulates the (arm, seed)
    pairs every invocation asked for, so a report on a subset run covers only what was requested."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files.clean_temp_files(out_dir)  # of a write a kill interrupted
    planned = [[s.arm, s.seed] for s in plan or []]
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, RunFileError, AttributeError):
        old = files.read_json(out_dir / "study.json")
        if old.get("name") == study.spec.name:
            planned = [list(p) for p in dict.fromkeys(map(tuple, [*old.get("planned", []), *planned]))]
    files.write_json(out_dir / "study.json", {
        "name": study.spec.name, "task": study.spec.task, "description": study.spec.description,
        "hypothesis": study.spec.hypothesis, "description_ja": study.spec.description_ja,
        "hypothesis_ja": study.spec.hypothesis_ja, "study_file": str(study.path), "profile": study.profile,
        "profile_description": study.spec.profiles[study.profile].description
        if study.profile in study.spec.profiles else "",
        "seeds": study.seeds, "reference": study.reference, "base": study.base,
        "arms": {n: {"description": a.description, "description_ja": study.spec.arms[n].description_ja,
                     "reference": a.reference, "diff_from_base": a.diff_from_base,
                     "allow_confound": list(a.allow_confound)} for n, a in study.arms.items()},
        "planned": planned, "command": command})


def lock_holder(run_dir: Path) -> str:
    """Who holds a run folder's lock: "pid 123 on host since TIME" (from ``.lock.json``)."""
    try:
        owner = files.read_json(Path(run_dir) / OWNER_FILE)
        return f"pid {owner['pid']} on {owner['host']} since {owner['since']}"
    except (RunFileError, KeyError, TypeError):
        return "another process (it has not recorded who it is yet)"


def run_one(spec: RunSpec, run_dir: Path, cache_dir: Path, *, isolation: Isolation = "process",
            retry_failed: bool = True, progress: bool = False, tensorboard: bool = True,
            wait: bool = False, wait_timeout: float | None = None) -> RunOutcome:
    """Execute one prepared run folder under its lock (the unit a local loop or a Ray task calls).

    Args:
        wait: when another process holds the run, wait for it instead of returning ``locked``.
        wait_timeout: give up waiting after this many seconds and return ``locked`` (None: wait for ever).
    """
    lock = FileLock(str(run_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = lock_holder(run_dir)
        if not wait:
            return RunOutcome(spec.run_id, spec.arm, spec.seed, "locked",
                              f"held by {holder}; run again when it has finished, or pass --wait")
        limit = f", at most {wait_timeout:g} s" if wait_timeout is not None else ""
        _say(f"{spec.run_id}: held by {holder}; waiting for it (--wait{limit})")
        try:
            lock.acquire(timeout=-1 if wait_timeout is None else wait_timeout)
        except Timeout:
            return RunOutcome(spec.run_id, spec.arm, spec.seed, "locked",
                              f"still held by {lock_holder(run_dir)} after waiting {wait_timeout:g} s "
                              "(--wait-timeout); run again when it has finished, or wait longer")
    try:
        files.write_json(run_dir / OWNER_FILE, {"pid": os.getpid(), "host": socket.gethostname(),
                                                "since": files.now_iso()})
        return _run_locked(spec, run_dir, cache_dir, isolation=isolation, retry_failed=retry_failed,
                           progress=progress, tensorboard=tensorboard)
    finally:
        (run_dir / OWNER_FILE).unlink(missing_ok=True)
        lock.release()


def verified_summary(spec: RunSpec, run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(summary, None) when summary.json is a complete succeeded result of this run whose weight files still
    match their recorded hashes; else (None, why not — None when there simply is no such summary)."""
    path = run_dir / files.SUMMARY_FILE
    if not path.exists():
        return None, None
    try:
        summary = files.read_json(path)
    except RunFileError as err:
        return None, str(err)
    if not isinstance(summary, dict) or summary.get("status") != "succeeded":
        return None, None
    if summary.get("run_id") != spec.run_id or (summary.get("hashes") or {}).get("config_hash") != spec.config_hash:
        return None, f"{path} belongs to another run or config (run_id {summary.get('run_id')!r})"
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        return None, f"{path} is incomplete (no {', '.join(missing)})"
    for rel, record in (summary.get("files") or {}).items():
        try:
            files.verify_file(run_dir / rel, record, fix="")
        except RunFileError as err:
            return None, str(err).strip()
    return summary, None


def _resumable(run_dir: Path) -> tuple[bool, str | None]:
    """Whether an interrupted attempt can continue from its checkpoints, and why not when they exist."""
    ckpt_dir = run_dir / "checkpoints"
    if (ckpt_dir / LEGACY).exists() and not (ckpt_dir / MANIFEST).exists():
        return False, legacy_message(run_dir)
    try:
        return recover(ckpt_dir) is not None, None
    except RunFileError as err:
        return False, str(err)


def _run_locked(spec: RunSpec, run_dir: Path, cache_dir: Path, *, isolation: Isolation, retry_failed: bool,
                progress: bool, tensorboard: bool) -> RunOutcome:
    for folder in (run_dir, run_dir / "checkpoints"):  # temporary files of writes a kill interrupted
        if folder.exists():
            files.clean_temp_files(folder)
    status = files.read_status(run_dir) or {}
    done, why = verified_summary(spec, run_dir)
    if done is not None:
        if status.get("status") != "succeeded":  # killed between summary.json and status.json
            files.write_status(run_dir, "succeeded", run_id=spec.run_id, arm=spec.arm, seed=spec.seed,
                               attempt=status.get("attempt", 1), error=None)
        finish(run_dir)
        return RunOutcome(spec.run_id, spec.arm, spec.seed, "skipped", "already succeeded")
    problem = files.status_problem(run_dir) or why
    if problem:
        _say(f"{spec.run_id}: {problem}; the run is not a verified success, so it runs again")
    state = status.get("status", "pending")
    if state == "failed" and not retry_failed:
        return RunOutcome(spec.run_id, spec.arm, spec.seed, "failed", "failed earlier (not retried)")
    attempt = int(status.get("attempt") or 0)
    # We hold the lock, so anything but "failed" was interrupted: it resumes in place from its last verified
    # commit, and so does a run whose process died or ran out of disk (not a failure of the training itself);
    # any other failed run, or one without a usable checkpoint, starts over, its earlier files kept.
    died = state == "failed" and (status.get("error") or {}).get("code") in RESUMABLE_FAILURES
    resumable, reason = _resumable(run_dir) if state != "failed" or died else (False, None)
    if reason:
        _say(f"{spec.run_id}: {reason}")
    if resumable and died:  # keep the failure record, continue from the checkpoint
        dest = run_dir / "attempts" / str(attempt)
        dest.mkdir(parents=True, exist_ok=True)
        for name in (files.STATUS_FILE, files.SUMMARY_FILE):
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, dest / name)
        (run_dir / files.SUMMARY_FILE).unlink(missing_ok=True)
    if not resumable and any((run_dir / name).exists() for name in ATTEMPT_FILES if name != "status.json"):
        _archive_attempt(run_dir, attempt)
    files.write_status(run_dir, "pending", run_id=spec.run_id, arm=spec.arm, seed=spec.seed,
                       attempt=attempt + 1, error=None)
    if isolation == "inline":
        from freezelab.experiment.run import execute_run

        summary = execute_run(run_dir, progress=False, tensorboard=tensorboard, cache_dir=cache_dir)
        return RunOutcome(spec.run_id, spec.arm, spec.seed, summary["status"], _msg(summary))
    code, rss, wall = _spawn(run_dir, cache_dir)
    summary, _ = verified_summary(spec, run_dir)
    if summary is not None:
        if (files.read_status(run_dir) or {}).get("status") != "succeeded":
            files.write_status(run_dir, "succeeded", finished_at=files.now_iso())
        return RunOutcome(spec.run_id, spec.arm, spec.seed, "succeeded", "")
    final = files.read_status(run_dir) or {}
    if final.get("status") == "failed" and final.get("error"):
        return RunOutcome(spec.run_id, spec.arm, spec.seed, "failed", _msg(final))
    try:  # died before recording its own result
        task = files.read_json(run_dir / files.RUN_FILE).get("task")
    except (RunFileError, AttributeError):
        task = None
    record = death_record(code, run_dir / "logs" / "run.log", peak_rss_bytes=rss, wall_seconds=wall, task=task,
                          config=spec.config)
    files.write_status(run_dir, "failed", error=record, finished_at=files.now_iso())
    files.write_json(run_dir / files.SUMMARY_FILE, {"status": "failed", "study": spec.study, "arm": spec.arm,
                                                    "seed": spec.seed, "run_id": spec.run_id, "error": record,
                                                    "wall_seconds": wall, "peak_memory_bytes": rss,
                                                    "hashes": {"config_hash": spec.config_hash}})
    return RunOutcome(spec.run_id, spec.arm, spec.seed, "failed", record["message"])


def _msg(summary: dict) -> str:
    err = summary.get("error")
    return f"{err['class']}: {err['message']}" if err else ""


def _read_tolerant(path: Path, problems: list[str]) -> dict:
    try:
        data = files.read_json(path, fix="")
        return data if isinstance(data, dict) else {}
    except RunFileError as err:
        problems.append(str(err).strip())
        return {}


def scan_runs(out_dir: Path) -> list[dict]:
    """Status, identity and best metrics of every run folder under OUT/runs (for ``show``).

    A damaged file never stops the scan: its run is listed with status ``damaged`` and the problem.
    """
    rows = []
    for run_dir in sorted((Path(out_dir) / "runs").glob("*")):
        if not (run_dir / files.RUN_FILE).exists():
            continue
        problems: list[str] = []
        meta = _read_tolerant(run_dir / files.RUN_FILE, problems)
        status = files.read_status(run_dir) or {"status": "pending"}
        if files.status_problem(run_dir):
            problems.append(str(files.status_problem(run_dir)))
        state = status.get("status")
        if state == "running" and files.is_stale(status):
            state = "interrupted"
        summary = _read_tolerant(run_dir / files.SUMMARY_FILE, problems) if (run_dir / files.SUMMARY_FILE).exists() \
            else {}
        if problems:
            state = "damaged"
        name = run_dir.name.split("__")
        rows.append({"run_id": meta.get("run_id", run_dir.name), "arm": meta.get("arm", name[0]),
                     "seed": meta.get("seed", name[1][1:] if len(name) > 1 else "?"), "status": state,
                     "attempt": status.get("attempt"), "error": status.get("error"), "summary": summary,
                     "problems": problems, "updated_at": str(status.get("updated_at") or "")})
    # An (arm, seed) with folders under several config hashes: the most recently updated one is current (the
    # report's rule, report/aggregate.py); the others are marked superseded.
    latest: dict[tuple, dict] = {}
    for row in sorted(rows, key=lambda r: r["updated_at"]):
        latest[(row["arm"], str(row["seed"]))] = row
    for row in rows:
        row["superseded"] = latest[(row["arm"], str(row["seed"]))] is not row
    return rows
