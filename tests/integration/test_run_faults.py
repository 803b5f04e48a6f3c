"""Two runners on one folder, the heartbeat race, a full disk, a damaged succeeded run."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freezelab.cli import app
from freezelab.config.load import load_study
from freezelab.experiment.plan import make_plan
from freezelab.tracking import files
from tests import kill_helpers
from tests.integration.test_runner import _run, _run_dir

pytestmark = pytest.mark.integration


def test_the_heartbeat_never_puts_back_a_final_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files.write_status(tmp_path, "running")
    has_read, go = threading.Event(), threading.Event()
    real = files.read_status

    def slow_read(run_dir):  # the heartbeat pauses between reading "running" and writing it back
        data = real(run_dir)
        if threading.current_thread().name == "beat":
            has_read.set()
            go.wait(10)
        return data
    monkeypatch.setattr(files, "read_status", slow_read)
    beat = threading.Thread(target=files.heartbeat, args=(tmp_path,), name="beat")
    beat.start()
    assert has_read.wait(10)
    final = threading.Thread(target=files.write_status, args=(tmp_path, "succeeded"))
    final.start()
    time.sleep(0.3)  # without the status lock the final write lands now, and the heartbeat undoes it
    go.set()
    beat.join(10)
    final.join(10)
    assert real(tmp_path)["status"] == "succeeded"


def _hold(run_dir: Path) -> subprocess.Popen:
    """Another process that holds the run's lock and says so in .lock.json, as a runner does."""
    code = ("import json, os, socket, sys, time\nfrom filelock import FileLock\n"
            f"lock = FileLock({str(run_dir / '.lock')!r}); lock.acquire()\n"
            f"open({str(run_dir / '.lock.json')!r}, 'w').write(json.dumps({{'pid': os.getpid(), "
            "'host': socket.gethostname(), 'since': '2026-01-02T03:04:05+00:00'}))\n"
            "print('held', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_runner_names_the_holder_and_exits_3_or_waits_for_it(write_study, tmp_path: Path) -> None:
    path = write_study({"frozen": {"reference": True}})
    (spec,) = make_plan(load_study(path))
    run_dir = spec.run_dir(tmp_path / "out")
    run_dir.mkdir(parents=True)
    holder = _hold(run_dir)
    args = ["run", str(path), "--isolation", "inline", "--no-report"]
    try:
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 3, res.output
        assert f"held by pid {holder.pid} on " in res.output and "since 2026-01-02T03:04:05" in res.output
        assert "--wait" in res.output and "1 locked" in res.output
        t0 = time.monotonic()
        res = CliRunner().invoke(app, [*args, "--wait-timeout", "1.5"])  # gives up on the held run
        assert res.exit_code == 3 and time.monotonic() - t0 < 30, res.output
        assert f"still held by pid {holder.pid}" in res.output and "after waiting 1.5 s" in res.output
        threading.Timer(1.0, holder.kill).start()  # the other runner finishes: its lock goes with it
        res = CliRunner().invoke(app, [*args, "--wait"])
    finally:
        holder.kill()
        holder.wait()
    assert res.exit_code == 0, res.output
    assert "waiting for it (--wait)" in res.output and "1 succeeded" in res.output


def test_a_full_disk_is_named_and_the_rerun_resumes_to_the_same_result(write_study, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from freezelab.tracking import weights

    path = write_study({"frozen": {"reference": True}})
    _run(path, tmp_path / "whole")
    real, calls = weights.write_atomically, []

    def full_at_the_third_state(target, write):
        calls.append(Path(target).name)
        if calls.count("state.safetensors.next") == 3 and Path(target).name == "state.safetensors.next":
            def no_space(tmp: str) -> None:
                Path(tmp).write_bytes(b"half a tensor")
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(target, no_space)
        return real(target, write)
    monkeypatch.setattr(weights, "write_atomically", full_at_the_third_state)
    out = tmp_path / "cut"
    assert _run(path, out) == {"frozen/0": "failed"}
    run_dir = _run_dir(out, "frozen")
    err = files.read_json(run_dir / "status.json")["error"]
    assert err["code"] == "disk_full" and err["class"] == "DiskFullError"
    assert "no space left on device writing" in err["message"] and "state.safetensors.next" in err["message"]
    assert "Free space on that disk" in err["message"] and "resume from their last checkpoint" in err["message"]
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))           # nothing half-written left behind
    monkeypatch.undo()                                                   # space freed
    assert _run(path, out) == {"frozen/0": "succeeded"}
    assert "resumed after epoch 2" in (run_dir / "logs" / "run.log").read_text()  # the last good commit
    assert files.read_json(run_dir / "attempts" / "1" / "status.json")["error"]["code"] == "disk_full"
    assert kill_helpers.result(out) == kill_helpers.result(tmp_path / "whole")


def test_a_truncated_best_of_a_succeeded_run_is_noticed_and_the_run_redone(write_study, tmp_path: Path,
                                                                          capsys) -> None:
    path = write_study({"frozen": {"reference": True}})
    out = tmp_path / "out"
    _run(path, out)
    whole = kill_helpers.result(out)
    best = _run_dir(out, "frozen") / "checkpoints" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    assert _run(path, out) == {"frozen/0": "succeeded"}  # not "skipped": its weights could not be trusted
    assert "best.safetensors has 100 bytes but" in capsys.readouterr().err
    assert kill_helpers.result(out) == whole
    assert (_run_dir(out, "frozen") / "attempts" / "1" / "checkpoints" / "best.safetensors").stat().st_size == 100


def test_a_diverging_time_series_run_says_the_step_the_norms_and_the_fix(tmp_path: Path, monkeypatch) -> None:
    import math

    import freezelab.tasks.timeseries.train as train_mod
    from freezelab.errors import NumericFailure
    from tests.ts_fixtures import save_tiny, tiny_ts_base
    from tests.unit.test_ts_train import run_task

    original = train_mod.masked_huber
    monkeypatch.setattr(train_mod, "masked_huber", lambda *a, **k: (original(*a, **k)[0] * math.nan, {}))
    with pytest.raises(NumericFailure) as err:
        run_task(tmp_path, tiny_ts_base(save_tiny("bert", tmp_path / "bert")))
    text = str(err.value)
    for part in ("3 consecutive non-finite", "epoch 1, step 3", "gradient norms by group: none: the loss itself",
                 "Lower optim.lr (now 0.001) or optim.grad_clip", "runtime.max_nonfinite_steps (now 3)"):
        assert part in text, (part, text)


def test_an_lm_step_with_a_non_finite_loss_is_skipped_counted_and_warned(write_study, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20: the LM task skips a non-finite step as the time-series task does (no update, counted as
    train/skipped_steps and in summary.numerics, warned in the report) and fails past
    runtime.max_nonfinite_steps in a row."""
    import json
    import math

    import freezelab.tasks.lm.phases as phases

    real, calls = phases.head_loss, {"n": 0}

    def flaky(*args, **kwargs):
        loss, pred = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * math.nan if calls["n"] == 2 else loss), pred  # the second training step only

    monkeypatch.setattr(phases, "head_loss", flaky)
    path = write_study({"frozen": {"reference": True}})
    out = tmp_path / "out"
    assert _run(path, out) == {"frozen/0": "succeeded"}
    run_dir = _run_dir(out, "frozen")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["numerics"]["nonfinite_steps"] == 1
    epochs = [r for r in files.read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]
    assert epochs[0]["train/skipped_steps"] == 1 and math.isfinite(epochs[0]["train/loss"])
    assert all(r["train/skipped_steps"] == 0 for r in epochs[1:])
    assert "step 2 skipped: the training loss is nan" in (run_dir / "logs" / "run.log").read_text()
    from freezelab.report.aggregate import load_study as read_folders
    from freezelab.report.warnings import full_analysis

    found = [f for f in full_analysis(read_folders(out)).warnings if f.code == "skipped_steps"]
    assert found and found[0].params["count"] == 1

    calls["n"] = 0
    strict = tmp_path / "strict"
    path = write_study({"frozen": {"reference": True, "overrides": {"runtime.max_nonfinite_steps": 1}}},
                       name="strict")
    assert _run(path, strict) == {"frozen/0": "failed"}
    status = json.loads((_run_dir(strict, "frozen") / "status.json").read_text())
    assert status["error"]["code"] == "non_finite" and "the training loss is nan" in status["error"]["message"]
