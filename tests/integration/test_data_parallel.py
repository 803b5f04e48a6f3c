"""``runtime.devices: 2`` (engine/parallel.py): two processes (gloo on CPU) split every step's batch and sum
their gradients. The same epochs as one process within 1e-5, the frozen-tensor checks and checkpoints
unchanged, a kill resumed to the uninterrupted two-process result, and a worker rank that dies stops the
run with its name — then the rerun resumes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from freezelab.config.load import load_study
from freezelab.experiment.plan import make_plan
from freezelab.experiment.runner import run_plan
from freezelab.tracking.files import read_json, read_jsonl

pytestmark = pytest.mark.integration
ARMS = {"frozen": {"reference": True}, "trainable": {"overrides": {"embedding.freeze": False}}}


def _study(write_study, name: str, devices: int, **phase2) -> Path:
    path = write_study(ARMS, name=name)
    spec = yaml.safe_load(path.read_text())
    spec["base"]["runtime"] = {"threads": 1, "devices": devices}
    spec["base"]["phase2"].update(batch_size=31, **phase2)  # shards of 16 and 15; a last batch of a few
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(path: Path, out: Path) -> dict[str, str]:
    study = load_study(path)
    outcomes = run_plan(study, make_plan(study), out, isolation="process", progress=False, tensorboard=False)
    return {o.arm: o.status for o in outcomes}


def _epochs(out: Path, arm: str) -> list[dict]:
    (run_dir,) = (out / "runs").glob(f"{arm}__s0__*")
    return [{k: r[k] for k in ("epoch", "step", "train/loss", "train/acc", "val/loss")}
            for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]


def _summary(out: Path, arm: str) -> dict:
    (run_dir,) = (out / "runs").glob(f"{arm}__s0__*")
    return read_json(run_dir / "summary.json")


def _whole_then_killed_and_resumed(path: Path, tmp_path: Path, monkeypatch) -> None:
    """The study's one arm ``finetune`` run whole (tmp_path/whole), then killed in rank 0 after its second
    commit and run again (tmp_path/cut)."""
    assert _run(path, tmp_path / "whole") == {"finetune": "succeeded"}
    monkeypatch.setenv("FREEZELAB_FAULT", "after_rename:state.json@2")
    monkeypatch.setenv("FREEZELAB_FAULT_RANK", "0")
    assert _run(path, tmp_path / "cut") == {"finetune": "failed"}
    monkeypatch.delenv("FREEZELAB_FAULT")
    assert _run(path, tmp_path / "cut") == {"finetune": "succeeded"}


def _close(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 1
    for x, y in zip(a, b):
        assert x["epoch"] == y["epoch"] and x["step"] == y["step"]
        for k in ("train/loss", "train/acc", "val/loss"):
            assert math.isclose(x[k], y[k], rel_tol=1e-5), (k, a, b)


def test_two_processes_train_as_one_and_keep_every_check(write_study, tmp_path: Path) -> None:
    one = _run(_study(write_study, "one", 1), tmp_path / "one")
    two = _run(_study(write_study, "two", 2), tmp_path / "two")
    assert one == two == {"frozen": "succeeded", "trainable": "succeeded"}
    for arm in ARMS:
        _close(_epochs(tmp_path / "one", arm), _epochs(tmp_path / "two", arm))
        s1, s2 = _summary(tmp_path / "one", arm), _summary(tmp_path / "two", arm)
        assert s2["data_parallel"]["devices"] == 2 and s2["data_parallel"]["backend"] == "gloo"
        assert s1["data_parallel"] == {"devices": 1}
        assert math.isclose(s1["test"]["test/loss"], s2["test"]["test/loss"], rel_tol=1e-5)
        assert s2["invariants"]["frozen_unchanged"] and s2["tokens_seen"] == s1["tokens_seen"]
        assert set(s2["files"]) == set(s1["files"])  # the same checkpoints
        (run_dir,) = (tmp_path / "two" / "runs").glob(f"{arm}__s0__*")
        assert "epoch 1:" in (run_dir / "logs" / "rank1.log").read_text()  # rank 1 trained, logging apart
    frozen = _summary(tmp_path / "two", "frozen")["invariants"]["frozen_checks"]
    assert frozen and all(c["unchanged"] for phase in frozen for c in phase["checks"])


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_result(write_study, tmp_path: Path,
                                                                      monkeypatch) -> None:
    path = _study(write_study, "kill", 2, max_epochs=4, patience=4)
    whole = _run(path, tmp_path / "whole")
    monkeypatch.setenv("FREEZELAB_FAULT", "after_rename:state.json@3")  # rank 0 dies after its 3rd commit
    monkeypatch.setenv("FREEZELAB_FAULT_RANK", "0")
    assert set(_run(path, tmp_path / "cut").values()) == {"failed"}
    monkeypatch.delenv("FREEZELAB_FAULT")
    assert _run(path, tmp_path / "cut") == whole == {"frozen": "succeeded", "trainable": "succeeded"}
    for arm in ARMS:
        (run_dir,) = (tmp_path / "cut" / "runs").glob(f"{arm}__s0__*")
        assert "resumed after epoch" in (run_dir / "logs" / "run.log").read_text()
        assert _epochs(tmp_path / "cut", arm) == _epochs(tmp_path / "whole", arm)  # bit for bit
        assert _summary(tmp_path / "cut", arm)["test"] == _summary(tmp_path / "whole", arm)["test"]


def test_a_worker_rank_that_dies_stops_the_run_naming_it_and_the_rerun_resumes(write_study, tmp_path: Path,
                                                                               monkeypatch) -> None:
    path = write_study({"trainable": {"reference": True, "overrides": {"embedding.freeze": False}}}, name="w")
    spec = yaml.safe_load(path.read_text())
    spec["base"]["runtime"] = {"threads": 1, "devices": 2}
    spec["base"]["phase2"].update(max_epochs=4, patience=4)
    path.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("FREEZELAB_FAULT", "after_rename:state.json@3")  # in rank 1's scratch copy only
    monkeypatch.setenv("FREEZELAB_FAULT_RANK", "1")
    assert _run(path, tmp_path / "out") == {"trainable": "failed"}
    (run_dir,) = (tmp_path / "out" / "runs").glob("trainable__s0__*")
    log = (run_dir / "logs" / "run.log").read_text()
    assert "data-parallel rank 1 died" in log and "logs/rank1.log" in log, log[-2000:]
    status = read_json(run_dir / "status.json")
    assert status["status"] == "failed" and status["error"]["code"] == "process_died", status
    monkeypatch.delenv("FREEZELAB_FAULT")
    assert _run(path, tmp_path / "out") == {"trainable": "succeeded"}
    assert "resumed after epoch" in (run_dir / "logs" / "run.log").read_text()


def test_a_plugin_task_in_two_processes_trains_as_in_one(tmp_path: Path) -> None:
    """A freezelab.Task (test_plugins.py's Tiny; its loss is a mean over the batch's items), uneven shards of
    15-item batches, a frozen arm and one unfrozen after epoch 1: the epochs of one process within 1e-5."""
    import copy

    from tests.integration.test_plugins import STUDY, write

    outs = {}
    for n in (1, 2):
        spec = copy.deepcopy(STUDY)
        spec["seeds"] = [0]
        spec["arms"] = {k: v for k, v in spec["arms"].items() if k in ("frozen_body", "lp_ft")}
        spec["base"]["train"]["batch_size"] = 15
        spec["base"]["runtime"] = {"threads": 1, "devices": n}
        outs[n] = tmp_path / f"out{n}"
        assert set(_run(write(tmp_path / f"p{n}", study=spec), outs[n]).values()) == {"succeeded"}
    for arm in ("frozen_body", "lp_ft"):
        (a,), (b,) = ((outs[n] / "runs").glob(f"{arm}__s0__*") for n in (1, 2))
        rows = [[(r["epoch"], r["step"], r["train/loss"], r["val/loss"]) for r in read_jsonl(d / "metrics.jsonl")
                 if r["kind"] == "epoch"] for d in (a, b)]
        assert len(rows[0]) == len(rows[1]) == 3
        for x, y in zip(*rows):
            assert x[:2] == y[:2] and all(math.isclose(u, v, rel_tol=1e-5) for u, v in zip(x[2:], y[2:])), rows
        s = read_json(b / "summary.json")
        assert s["data_parallel"]["devices"] == 2 and s["invariants"]["frozen_unchanged"]


def test_a_killed_two_process_plugin_run_with_dropout_resumes_to_the_uninterrupted_result(tmp_path: Path,
                                                                                           monkeypatch) -> None:
    """The plugin's model with a dropout layer and shards of 7 and 8 items (the processes' generators do not
    move in step): killed after its second commit, the rerun's epochs equal the uninterrupted run's bit for
    bit — every process draws its dropout masks per (rank, step), not from rank 0's saved generator."""
    import copy

    from tests.integration.test_plugins import STUDY, TINY, write

    code = TINY.replace("nn.Tanh(), nn.Linear(8, 2))", "nn.Tanh(), nn.Linear(8, 2), nn.Dropout(0.3))")
    assert code != TINY
    spec = copy.deepcopy(STUDY)
    spec["seeds"], spec["arms"] = [0], {"finetune": {"reference": True}}
    spec["base"]["train"]["batch_size"] = 15
    spec["base"]["runtime"] = {"threads": 1, "devices": 2}
    path = write(tmp_path / "p", code=code, study=spec)
    _whole_then_killed_and_resumed(path, tmp_path, monkeypatch)
    rows = {}
    for name in ("whole", "cut"):
        (run_dir,) = (tmp_path / name / "runs").glob("finetune__s0__*")
        rows[name] = [(r["epoch"], r["train/loss"], r["val/loss"]) for r in read_jsonl(run_dir / "metrics.jsonl")
                      if r["kind"] == "epoch"]
    assert "resumed after epoch 2" in (run_dir / "logs" / "run.log").read_text()
    assert len(rows["whole"]) == 3 and rows["cut"] == rows["whole"]


def test_a_failure_of_every_rank_is_recorded_as_that_failure_not_as_a_dead_rank(tmp_path: Path) -> None:
    """The training fails the same way in both processes (every loss non-finite): the run's record is that
    failure (non_finite, not resumable), not rank 1's exit taken for a crash."""
    import copy

    from tests.integration.test_plugins import STUDY, TINY, write

    code = TINY.replace('return F.cross_entropy(model(batch["x"]), batch["y"])',
                        'return F.cross_entropy(model(batch["x"]), batch["y"]) * float("nan")')
    assert code != TINY
    spec = copy.deepcopy(STUDY)
    spec["seeds"], spec["arms"] = [0], {"finetune": {"reference": True}}
    spec["base"]["runtime"] = {"threads": 1, "devices": 2}
    out = tmp_path / "out"
    assert _run(write(tmp_path / "p", code=code, study=spec), out) == {"finetune": "failed"}
    (run_dir,) = (out / "runs").glob("finetune__s0__*")
    status = read_json(run_dir / "status.json")
    assert status["error"]["code"] == "non_finite", status["error"]
    assert "rank 1 died" not in (run_dir / "logs" / "run.log").read_text()


# ----------------------------------------------------------------------------- the time-series task
TS_ARMS = {"frozen_then_unfrozen": {"reference": True, "overrides": {"backbone.train": "frozen_then_unfrozen",
                                                                    "backbone.unfreeze_epoch": 1}},
           "finetune": {"overrides": {"backbone.train": "finetune"}}}


def _ts_study(tmp_path: Path, backbone: Path, name: str, devices: int, arms: dict = TS_ARMS) -> Path:
    from tests.ts_fixtures import tiny_ts_base, write_ts_study

    base = tiny_ts_base(backbone, **{"train.batch_size": 15, "train.max_epochs": 3,  # shards of 7 and 8
                                     "loss.consistency_weight": 0.5, "runtime.devices": devices})
    return write_ts_study(tmp_path / f"{name}.yaml", base, arms, name=name)


def _ts_epochs(out: Path, arm: str) -> list[dict]:
    (run_dir,) = (out / "runs").glob(f"{arm}__s0__*")
    return [{k: v for k, v in r.items() if k.startswith(("train/loss", "val/mse", "val/corr")) or k == "step"}
            for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]


def test_the_time_series_task_in_two_processes_trains_as_in_one(tmp_path: Path) -> None:
    """A dropout-free T5 backbone, uneven shards, the consistency term on, an arm unfrozen after epoch 1: every
    epoch's loss (and per-TF loss), val metrics and the test score of one process within 1e-5; the frozen
    checks hold and the checkpoints are the same files."""
    from tests.ts_fixtures import save_tiny

    backbone = save_tiny("t5", tmp_path / "t5-no-dropout", dropout=0.0)
    outs = {n: tmp_path / f"out{n}" for n in (1, 2)}
    for n, out in outs.items():
        assert set(_run(_ts_study(tmp_path, backbone, f"ts{n}", n), out).values()) == {"succeeded"}
    for arm in TS_ARMS:
        one, two = _ts_epochs(outs[1], arm), _ts_epochs(outs[2], arm)
        assert len(one) == len(two) == 3 and all(set(x) == set(y) for x, y in zip(one, two))
        assert any(k.startswith("train/loss/") for k in one[0])  # per-TF losses compared as well
        for x, y in zip(one, two):
            assert x["step"] == y["step"] and all(math.isclose(x[k], y[k], rel_tol=1e-5, abs_tol=1e-7) for k in x), (
                one, two)
        s1, s2 = _summary(outs[1], arm), _summary(outs[2], arm)
        assert s2["data_parallel"]["devices"] == 2 and s1["data_parallel"] == {"devices": 1}
        assert math.isclose(s1["test"]["test/mse"], s2["test"]["test/mse"], rel_tol=1e-5)
        assert s2["invariants"]["frozen_unchanged"] and s2["windows_seen"] == s1["windows_seen"]
        assert set(s2["files"]) == set(s1["files"])
    checks = _summary(outs[2], "frozen_then_unfrozen")["invariants"]["frozen_checks"]
    assert checks and all(c["unchanged"] for phase in checks for c in phase["checks"])


def test_a_killed_two_process_time_series_run_with_dropout_resumes_to_the_uninterrupted_result(
        tmp_path: Path, monkeypatch) -> None:
    """T5's default dropout on (each process draws its masks per step): killed after its second commit, the
    rerun's epochs and test score equal the uninterrupted two-process run's bit for bit."""
    from tests.ts_fixtures import save_tiny

    backbone = save_tiny("t5", tmp_path / "t5")
    arms = {"finetune": {"reference": True, "overrides": {"backbone.train": "finetune"}}}
    path = _ts_study(tmp_path, backbone, "ts-kill", 2, arms)
    _whole_then_killed_and_resumed(path, tmp_path, monkeypatch)
    (run_dir,) = (tmp_path / "cut" / "runs").glob("finetune__s0__*")
    assert "resumed after epoch 2" in (run_dir / "logs" / "run.log").read_text()
    assert _ts_epochs(tmp_path / "cut", "finetune") == _ts_epochs(tmp_path / "whole", "finetune")
    assert _summary(tmp_path / "cut", "finetune")["test"] == _summary(tmp_path / "whole", "finetune")["test"]
