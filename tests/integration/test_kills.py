"""Kill a real study process at many points, rerun, and get exactly the uninterrupted result.

Every case SIGKILLs a process that runs a tiny study — at a chosen file write (``FREEZELAB_FAULT``: the
temporary file written but not renamed, just renamed, half a metrics line, between summary.json and
status.json) or at a random moment of a real ``freezelab run`` (process group, as a user's kill) — then
runs the study again and compares summary.json and every metrics.jsonl line with an uninterrupted run,
field by field apart from wall-clock timings. Checkpoints are committed after every step
(``runtime.checkpoint_minutes: 0``), so kills land inside epochs too. A larger campaign is
``benchmarks/kill_campaign.py``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from freezelab.config.load import load_study
from freezelab.experiment.plan import make_plan
from freezelab.experiment.runner import run_plan
from freezelab.tracking.checkpoints import Checkpoints
from freezelab.tracking.files import read_json
from tests import kill_helpers, ts_fixtures
from tests.conftest import tiny_base
from tests.ts_fixtures import tiny_ts_base, write_ts_study

tiny_backbones = ts_fixtures.tiny_backbones  # the fixture
pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def _rerun(study_path: Path, out: Path) -> str:
    study = load_study(study_path)
    (outcome,) = run_plan(study, make_plan(study), out, isolation="inline", progress=False, tensorboard=False)
    return outcome.status


def _reference(study_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[tuple, int]:
    """The uninterrupted result and how many commits it made."""
    commits = []
    real = Checkpoints.commit

    def counting(self, state, **kw):
        commits.append(state["position"])
        real(self, state, **kw)
    monkeypatch.setattr(Checkpoints, "commit", counting)
    assert _rerun(study_path, out) == "succeeded"
    monkeypatch.setattr(Checkpoints, "commit", real)
    return kill_helpers.result(out), len(commits)


def _kill_and_rerun(study_path: Path, out: Path, fault: str) -> str:
    proc = kill_helpers.start(study_path, out, fault)
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL, f"{fault}: the fault point was never reached (exit {proc.exitcode})"
    (run_dir,) = (p for p in (out / "runs").iterdir() if p.is_dir())
    assert (read_json(run_dir / "status.json"))["status"] != "succeeded" or fault == "after_summary"
    assert _rerun(study_path, out) in ("succeeded", "skipped")
    return (run_dir / "logs" / "run.log").read_text()


def _kill_each(study: Path, tmp_path: Path, faults: dict[str, str], whole: tuple) -> None:
    """For each fault: kill there, rerun, find ``logged`` in the run log, get ``whole``, leave nothing behind."""
    for fault, logged in faults.items():
        out = tmp_path / fault.replace(":", "_")
        log = _kill_and_rerun(study, out, fault)
        assert logged in log, (fault, log[-2000:])
        assert kill_helpers.result(out) == whole, fault
        _clean(out)


def _clean(out: Path) -> None:
    """Nothing left that a later run could mistake for state: temporary, staged and resumable files."""
    (run_dir,) = (p for p in (out / "runs").iterdir() if p.is_dir())
    assert read_json(run_dir / "status.json")["status"] == "succeeded"
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.endswith((".tmp", ".next")) or p.name in
                 ("state.json", "state.safetensors")]
    leftovers += [p.name for p in (out / "cache").glob(".*.tmp")]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def lm_study(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_corpus: Path) -> Path:
    base = tiny_base(tiny_model_dir, tiny_corpus)
    base["phase2"].update(max_epochs=8, patience=1, lr=0.05, batch_size=128)   # early-stops at epoch 5
    base["runtime"]["checkpoint_minutes"] = 0                                     # a commit after every step
    path = tmp_path_factory.mktemp("kill-lm") / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "kill", "task": "lm", "seeds": [0], "base": base, "arms": {
        "unfrozen": {"reference": True, "overrides": {"phase2.unfreeze": {"at_epoch": 1}}}}}), encoding="utf-8")
    return path


def test_lm_study_killed_at_every_kind_of_write_resumes_to_the_same_result(lm_study: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    whole, n_commits = _reference(lm_study, tmp_path / "whole", monkeypatch)
    summary = whole[0]
    assert summary["epochs_run"] < 8 and summary["best"]["epoch"] < summary["epochs_run"]  # early stop covered
    faults = {
        "before_rename:lm-data-*.npz": "",                       # the shared data cache, half written
        "before_rename:state.json@1": "",                        # the Phase-1 commit not yet made: start over
        "after_rename:state.json@1": "restored from checkpoints/phase1.safetensors",
        "after_rename:state.json@3": "resumed in epoch 1 after batch 2",  # mid-epoch, same batch order
        "before_rename:best.safetensors.next@2": "resumed in epoch 2 after batch 3",
        "append:metrics.jsonl@5": "resumed",         # a torn metrics line
        f"after_rename:state.json@{n_commits}": "training had stopped",  # early stop committed, test not run
        "before_rename:summary.json": "training had stopped",
        "after_summary": "",                                     # summary complete, status.json still running
    }
    for fault, logged in faults.items():
        out = tmp_path / fault.replace(":", "_").replace("*", "x")
        log = _kill_and_rerun(lm_study, out, fault)
        assert logged in log, (fault, log[-2000:])
        assert kill_helpers.result(out) == whole, fault
        _clean(out)


@pytest.mark.parametrize("cache", ["per_epoch", "online"])
def test_lm_per_epoch_contexts_killed_inside_an_epoch_resume_to_the_same_result(
        cache: str, tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Contexts that move with a training embed_norm: a run killed inside epoch 1 or 2 ends exactly as the
    uninterrupted run. per_epoch rebuilds that epoch's contexts from the tensors of its start (not the moved
    ones); online continues the stream from the last context computed before the kill (a context reset to 0,
    or recomputed from the moved weights, would change the rest of the epoch)."""
    base = tiny_base(tiny_model_dir, tiny_corpus)
    base["phase2"].update(max_epochs=3, patience=3, lr=0.05, batch_size=128)
    base["runtime"]["checkpoint_minutes"] = 0
    base["model"]["embed_norm"] = "trainable_shared"
    base["context"] = {"cache": cache}
    if cache == "online":
        base["phase2"]["order"] = "contiguous"
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "kill", "task": "lm", "seeds": [0], "base": base,
                                    "arms": {"drift": {"reference": True}}}), encoding="utf-8")
    whole, _ = _reference(path, tmp_path / "whole", monkeypatch)
    for fault, logged in {"after_rename:state.json@3": "resumed in epoch 1 after batch 2",
                          "after_rename:state.json@7": "resumed in epoch 2 after batch 2"}.items():
        out = tmp_path / fault.replace(":", "_")
        log = _kill_and_rerun(path, out, fault)
        assert logged in log, (fault, log[-2000:])
        assert kill_helpers.result(out) == whole, fault


def test_ts_study_killed_mid_epoch_and_after_its_last_commit_resumes_to_the_same_result(
        tiny_backbones, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tiny_ts_base(tiny_backbones["t5"])
    base["train"]["max_epochs"] = 3
    base["runtime"]["checkpoint_minutes"] = 0
    arms = {"ftu": {"reference": True, "overrides": {"backbone.train": "frozen_then_unfrozen",
                                                      "backbone.unfreeze_epoch": 1,
                                                      "backbone.unfreeze_warmup_steps": 3}}}
    study = write_ts_study(tmp_path / "study.yaml", base, arms)
    whole, n_commits = _reference(study, tmp_path / "whole", monkeypatch)
    faults = {"after_rename:state.json@6": "resumed in epoch 2 after batch 2",  # inside the warm-up ramp
              "before_rename:state.safetensors.next@4": "resumed",
              f"after_rename:state.json@{n_commits}": "training had stopped"}
    _kill_each(study, tmp_path, faults, whole)


def _plugin_study(folder: Path, log_every_steps: int = 10) -> Path:
    """The plugin tests' Tiny task with dropout (the RNG state matters) under LP-FT, a commit every step."""
    from tests.integration.test_plugins import TINY

    code = TINY.replace("nn.Linear(8, 2))", "nn.Linear(8, 2), nn.Dropout(0.2))")
    assert code != TINY
    (folder / "tiny.py").write_text(code, encoding="utf-8")
    study = folder / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "kill", "task": "tiny.py:Tiny", "seeds": [0], "base": {
        "train": {"max_epochs": 4, "batch_size": 16, "lr": 0.01, "patience": 4},
        "runtime": {"checkpoint_minutes": 0, "log_every_steps": log_every_steps}},
        "arms": {"lp_ft": {"reference": True, "overrides": {
            "freeze.frozen": ["body"], "freeze.unfreeze": {"epoch": 1}}}}}), encoding="utf-8")
    return study


def _tensorboard_points(run_dir: Path) -> list[tuple[str, int, float]]:
    """Every (tag, step, value) in a run's TensorBoard event files (not the HParams one), read raw."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    points = []
    for path in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        if path.name.endswith(".hparams"):
            continue
        for event in EventFileLoader(str(path)).Load():
            for v in event.summary.value:
                value = v.simple_value if v.HasField("simple_value") else float(tensor_util.make_ndarray(v.tensor))
                points.append((v.tag, event.step, round(value, 6)))
    return points


def test_tensorboard_after_a_resume_has_every_step_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20: a run killed after logging steps past its last commit logs them again on resume; TensorBoard
    shows each (tag, step) once, with the values of an uninterrupted run."""
    study = _plugin_study(tmp_path, log_every_steps=1)
    whole = tmp_path / "whole"
    proc = kill_helpers.start(study, whole, None, True)
    proc.join(120)
    assert proc.exitcode == 0
    (ref_dir,) = (p for p in (whole / "runs").iterdir() if p.is_dir())
    expected = sorted(_tensorboard_points(ref_dir))
    assert len(expected) == len(set((t, s) for t, s, _ in expected)) > 20
    cut = tmp_path / "cut"
    # killed while committing the 7th state: that step is in TensorBoard already and runs again on resume
    proc = kill_helpers.start(study, cut, "before_rename:state.json@7", True)
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    proc = kill_helpers.start(study, cut, None, True)
    proc.join(120)
    assert proc.exitcode == 0
    (run_dir,) = (p for p in (cut / "runs").iterdir() if p.is_dir())
    assert "resumed" in (run_dir / "logs" / "run.log").read_text()
    assert sorted(_tensorboard_points(run_dir)) == expected


def test_plugin_study_killed_mid_epoch_around_unfreezing_and_after_its_last_commit_resumes_to_the_same_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A freezelab.Task (the plugin tests' Tiny, with dropout so the RNG state matters) under LP-FT: killed
    inside the frozen epoch, inside the first unfrozen one, on a torn metrics line and after its last commit,
    it resumes to exactly the uninterrupted result."""
    study = _plugin_study(tmp_path)
    whole, n_commits = _reference(study, tmp_path / "whole", monkeypatch)
    assert [p["event"] for p in whole[0]["phases"]] == ["start", "unfreeze"]
    faults = {"after_rename:state.json@2": "resumed in epoch 1",
              "after_rename:state.json@7": "resumed in epoch 2",
              "append:metrics.jsonl@4": "resumed",
              f"after_rename:state.json@{n_commits}": "resumed after epoch"}
    _kill_each(study, tmp_path, faults, whole)


def test_real_cli_killed_at_a_random_moment_resumes_to_the_same_result(lm_study: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    whole, _ = _reference(lm_study, tmp_path / "whole", monkeypatch)
    out = tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with open(tmp_path / "cli.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "freezelab.cli", "run", str(lm_study), "--out", str(out),
                                 "--no-report"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # wait for the run process to be training
            status = next(iter(out.glob("runs/*/status.json")), None)
            if status is not None and '"running"' in status.read_text():
                break
            time.sleep(0.05)
        time.sleep(random.Random(os.getpid()).uniform(0.0, 1.0))
        try:
            os.killpg(proc.pid, signal.SIGKILL)              # the whole study: runner and run process
        except ProcessLookupError:                           # it ended first (a fast machine): nothing to resume
            pass
        proc.wait()
    assert _rerun(lm_study, out) in ("succeeded", "skipped")
    assert kill_helpers.result(out) == whole
    _clean(out)
