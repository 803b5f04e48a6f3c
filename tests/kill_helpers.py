"""Run a study in a process the kill tests can SIGKILL (forked from a server that has imported everything
once, so each attempt starts in milliseconds) and compare finished runs field by field."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import lightning.fabric  # noqa: F401  (preloaded by the fork server: the expensive imports happen once)
import torch
import transformers  # noqa: F401

from freezelab.config.load import load_study
from freezelab.experiment.plan import make_plan
from freezelab.experiment.runner import run_plan
from freezelab.tasks.lm import task as _lm  # noqa: F401
from freezelab.tasks.timeseries import task as _ts  # noqa: F401
from freezelab.tracking.files import read_json, read_jsonl

TIMING_KEYS = {"wall_seconds", "phase_seconds", "train_seconds", "seconds", "tokens_per_second",
               "windows_per_second", "items_per_second", "achieved_tflops", "peak_memory_bytes"}


def run_study(study_path: str, out: str, fault: str | None = None, tensorboard: bool = False) -> None:
    """Run every run of a study inline in this process (the kill target); ``fault``: FREEZELAB_FAULT."""
    if fault:
        os.environ["FREEZELAB_FAULT"] = fault
    torch.set_num_threads(1)
    study = load_study(study_path)
    run_plan(study, make_plan(study), Path(out), isolation="inline", progress=False, tensorboard=tensorboard)


def start(study_path: Path, out: Path, fault: str | None = None, tensorboard: bool = False) -> multiprocessing.Process:
    """Start ``run_study`` in a process forked from the preloaded server."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.kill_helpers"])
    proc = ctx.Process(target=run_study, args=(str(study_path), str(out), fault, tensorboard), daemon=True)
    proc.start()
    return proc


def without_timings(value: Any) -> Any:
    """``value`` with every wall-clock field removed (recursively): what must equal an uninterrupted run."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if k not in TIMING_KEYS and not k.endswith("seconds")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def result(out: Path) -> tuple[dict, list]:
    """(summary, metrics lines) of the single run under ``out``, timings removed."""
    (run_dir,) = (p for p in (Path(out) / "runs").iterdir() if p.is_dir())
    return (without_timings(read_json(run_dir / "summary.json")),
            without_timings(read_jsonl(run_dir / "metrics.jsonl")))
