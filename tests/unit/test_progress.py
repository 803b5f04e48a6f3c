"""Live progress: the run's throttled progress file and the study's display, on a fake clock."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from freezelab.experiment.progress import StudyProgress, duration, read_progress, run_line
from freezelab.experiment.runner import RunOutcome
from freezelab.tracking import files
from freezelab.tracking.progress import LiveProgress


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_progress_file_is_throttled_and_rates_exclude_notes(tmp_path: Path) -> None:
    clock = Clock(0.0)
    path = tmp_path / "progress.json"
    live = LiveProgress(path, interval=1.5, clock=clock, wall=clock)
    assert _read(path)["phase"] == "setup"
    live.phase("phase2", total=100, epochs=4, steps_per_epoch=25, last_phase=True)
    for i in range(1, 11):              # ten steps within a second: no write
        clock.t = i / 10
        live.step(done=i, items=64, loss=5.0, epoch=1, step_in_epoch=i)
    assert _read(path)["done"] == 0
    clock.t = 2.0
    live.step(done=11, items=64, loss=4.5, epoch=1, step_in_epoch=11)
    p = _read(path)
    assert p["done"] == 11 and p["loss"] == 4.5 and p["step_in_epoch"] == 11
    assert p["rate"] == pytest.approx(11 * 64 / 2.0)
    assert p["eta_seconds"] == pytest.approx((100 - 11) * 2.0 / 11)
    assert p["eta_scope"] == "run" and p["updated"] == 2.0

    clock.t = 3.0
    live.note("evaluating val")
    assert _read(path)["note"] == "evaluating val"
    clock.t = 10.0                      # seven seconds of evaluation
    live.step(done=12, items=64, epoch=2, step_in_epoch=1)
    clock.t = 12.0
    live.step(done=13, items=64, epoch=2, step_in_epoch=2)
    p = _read(path)
    assert "note" not in p
    assert p["rate"] == pytest.approx(64 / 2.0)   # training only, not the evaluation
    assert p["eta_seconds"] == pytest.approx((100 - 13) * 12.0 / 13)


def test_a_resumed_phase_counts_its_pace_from_the_resume(tmp_path: Path) -> None:
    clock = Clock(0.0)
    live = LiveProgress(tmp_path / "p.json", interval=0, clock=clock, wall=clock)
    live.phase("train", total=40, done=20, items="windows", last_phase=True)
    clock.t = 10.0
    live.step(done=30, items=100)
    p = _read(tmp_path / "p.json")
    assert p["eta_seconds"] == pytest.approx(10 * 10.0 / 10) and p["items"] == "windows"


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", None])
def test_unreadable_progress_is_ignored(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "progress.json").write_text(content)
    assert read_progress(tmp_path) is None


def test_run_line_reads_cold() -> None:
    p = {"phase": "phase2", "unit": "step", "done": 30, "total": 100, "epoch": 2, "epochs": 4, "step_in_epoch": 5,
         "steps_per_epoch": 25, "rate": 8351.2, "items": "tokens", "loss": 5.8123, "eta_seconds": 75,
         "eta_scope": "run", "updated": 100.0}
    assert run_line("tied_frozen s0", p, elapsed=65, now=101.0) == (
        "tied_frozen s0  1m05s  phase2 epoch 2/4 step 5/25  8,351 tokens/s  loss 5.812  ETA 1m15s")
    p1 = {"phase": "phase1", "unit": "iteration", "done": 3, "total": 10, "eta_seconds": 30, "eta_scope": "phase",
          "note": "computing the contexts of every split", "updated": 0.0}
    line = run_line("a s1", p1, elapsed=5, now=200.0)
    assert line == ("a s1  5s  phase1 iteration 3/10  computing the contexts of every split  phase1 ETA 30s  "
                    "(no update for 3m20s)")
    assert run_line("a s0", None, elapsed=1, now=0) == "a s0  1s  starting"
    assert [duration(s) for s in (None, 9.6, 61, 3600 * 2 + 185)] == ["?", "10s", "1m01s", "2h03m"]


class _Spec:
    def __init__(self, arm: str, seed: int) -> None:
        self.arm, self.seed, self.run_id = arm, seed, f"{arm}__s{seed}"


def _plan(tmp_path: Path, n: int) -> list[tuple[_Spec, Path]]:
    out = []
    for i in range(n):
        spec = _Spec("arm", i)
        (tmp_path / spec.run_id).mkdir()
        out.append((spec, tmp_path / spec.run_id))
    return out


def _progress(run_dir: Path, **fields) -> None:
    files.write_json(run_dir / "progress.json", {"phase": "phase2", "updated": 1e12, **fields})


def test_study_eta_from_finished_runs_then_from_the_active_run(tmp_path: Path) -> None:
    clock = Clock(0.0)
    runs = _plan(tmp_path, 4)
    display = StudyProgress("s", runs, console=Console(file=io.StringIO()), enabled=False, clock=clock)
    # before any run finished: the active run's own ETA (40 s after 20 s) for it and each queued run
    display.started(*runs[0])
    _progress(runs[0][1], eta_seconds=40, eta_scope="run")
    clock.t = 20.0
    assert display.lines()[0] == "s: 0/4 runs  elapsed 20s  ETA 3m40s"   # 40 + 3 × 60
    # two runs took 20 s and 120 s (mean 70 s); the third has run 30 s without a run ETA; the fourth is queued
    display.finished(runs[0][0], runs[0][1], RunOutcome("x", "arm", 0, "succeeded"))
    clock.t = 20.0
    display.started(*runs[1])
    clock.t = 140.0
    display.finished(runs[1][0], runs[1][1], RunOutcome("x", "arm", 1, "failed", "ValueError: boom"))
    display.started(*runs[2])
    _progress(runs[2][1], eta_seconds=5, eta_scope="phase")
    clock.t = 170.0
    assert display.durations == [20.0, 120.0]
    assert display.lines()[0] == "s: 2/4 runs (1 failed)  elapsed 2m50s  ETA 1m50s"  # (70 - 30) + 1 × 70
    # a queued run that already succeeded will be skipped: it does not count
    files.write_status(runs[3][1], "succeeded")
    assert display.lines()[0].endswith("ETA 40s")


def test_plain_lines_when_not_a_terminal(tmp_path: Path) -> None:
    clock = Clock(0.0)
    out = io.StringIO()
    runs = _plan(tmp_path, 2)
    display = StudyProgress("study", runs, console=Console(file=out, force_terminal=False, width=300),
                            plain_every=30, clock=clock)
    with display:
        display.started(*runs[0])
        _progress(runs[0][1], epoch=1, epochs=3, step_in_epoch=4, steps_per_epoch=9, loss=2.5)
        clock.t = 10.0
        display.tick()                                   # not yet 30 s: nothing
        clock.t = 31.0
        display.tick()
        display.finished(runs[0][0], runs[0][1], RunOutcome("x", "arm", 0, "failed",
                                                            "PretrainedUnavailableError: no model [here]\nmore"))
    text = out.getvalue()
    log = runs[0][1] / "logs" / "run.log"
    assert f"[1/2] arm seed 0: log {log} · tensorboard {runs[0][1] / 'tb'}" in text
    assert text.count("study: 0/2 runs") == 1 and "arm s0  31s  phase2 epoch 1/3 step 4/9  loss 2.5" in text
    assert "FAILED arm seed 0 after 31s: PretrainedUnavailableError: no model [here]" in text
    assert f"traceback: {log}" in text and "more" not in text
    assert "\x1b[" not in text                           # no control codes in a log file
    assert text.rstrip().endswith("study: 1/2 runs in 31s (1 failed)")


def test_a_terminal_gets_a_live_display(tmp_path: Path) -> None:
    from rich.live import Live

    out = io.StringIO()
    runs = _plan(tmp_path, 1)
    display = StudyProgress("study", runs, console=Console(file=out, force_terminal=True, width=200))
    with display:
        assert isinstance(display._live, Live)
        display.started(*runs[0])
        _progress(runs[0][1], epoch=2, epochs=3, step_in_epoch=1, steps_per_epoch=9)
        display._live.refresh()
    assert "arm s0" in out.getvalue() and "phase2 epoch 2/3 step 1/9" in out.getvalue()


def test_parallel_runs_get_one_line_each_once_their_progress_appears(tmp_path: Path) -> None:
    """The Ray executor: runs are not started here one by one; a fresh progress file announces each."""
    clock = Clock(100.0)
    out = io.StringIO()
    runs = _plan(tmp_path, 3)
    display = StudyProgress("study", runs, console=Console(file=out, force_terminal=False, width=300), clock=clock)
    files.write_json(runs[2][1] / "progress.json", {"phase": "train", "updated": 50.0})  # an earlier attempt's
    display.poll()
    assert display.lines() == ["study: 0/3 runs  elapsed 0s  ETA ?"]
    for _, d in runs[:2]:
        _progress(d, epoch=1, epochs=2, step_in_epoch=3, steps_per_epoch=4)
    display.poll()
    display.poll()                                          # announced once
    lines = display.lines()
    assert len(lines) == 3 and lines[1].startswith("  arm s0") and lines[2].startswith("  arm s1")
    assert out.getvalue().count("arm seed 0 started: log") == 1 and "arm seed 2" not in out.getvalue()
