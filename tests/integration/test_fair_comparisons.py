"""Issue 19 end to end on a tiny regression plugin: seeds until decided (run --until-decided) and the
report's sequential section, resume after a kill, and the bad inputs that exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.test_plugins import cli

pytestmark = pytest.mark.integration

LIN = '''
import numpy as np, torch, torch.nn.functional as F
from torch import nn
import freezelab
from freezelab import Metric, Splits


class Lin(freezelab.Task):
    """y = x·w* + noise; body Linear(4, 2) -> head Linear(2, 1): a frozen random body is a bottleneck."""
    metrics = {"loss": Metric("sq", "count", "min")}

    def load_data(self, options, data_seed):
        rng = np.random.default_rng(data_seed)
        w = np.array([1.0, -2.0, 0.5, 1.5], dtype=np.float32)
        def part(n):
            x = rng.normal(size=(n, 4)).astype(np.float32)
            y = x @ w + 0.1 * rng.normal(size=n).astype(np.float32)
            return [{"x": xi, "y": np.float32(yi)} for xi, yi in zip(x, y)]
        return Splits(train=part(128), val=part(64), test=part(64))

    def build_model(self, options, seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 2), nn.Linear(2, 1))

    def param_groups(self, model):
        return {"body": model[0], "head": model[1]}

    def loss(self, model, batch):
        return F.mse_loss(model(batch["x"]).squeeze(-1), batch["y"])

    def score(self, model, batch):
        err = model(batch["x"]).squeeze(-1) - batch["y"]
        return {"sq": err ** 2, "count": torch.ones(len(err))}
'''


def _study(folder: Path, arms: dict, seeds: list[int], **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lin.py").write_text(LIN, encoding="utf-8")
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "lin", "task": "lin.py:Lin", "seeds": seeds, "base": {
        "train": {"max_epochs": 4, "batch_size": 32, "lr": 0.05, "patience": 4}}, "arms": arms, **extra},
        sort_keys=False), encoding="utf-8")
    return path


ARMS = {"probe": {"reference": True, "overrides": {"freeze.frozen": ["body"]}},
        "finetune": {"overrides": {}},
        "same": {"overrides": {"train.grad_clip": 1000.0}}}   # no clipping happens: identical to probe


def test_until_decided_stops_when_decided_records_every_look_and_resumes_without_rerunning(tmp_path, monkeypatch):
    path = _study(tmp_path / "p", {k: ARMS[k] for k in ("probe", "finetune")}, seeds=[0, 1])
    args = ["run", str(path), "--out", "out", "--isolation", "inline", "--until-decided", "--max-seeds", "9"]
    res = cli(args, tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "out" / "sequential.json").read_text())
    assert rec["stopped"] == "decided" and rec["metric"] == "test/loss"
    n = len(rec["seeds"])
    assert 5 <= n < 9 and rec["seeds"] == list(range(n))                  # at least 5 seeds can reach 20
    assert [len(look["seeds"]) for look in rec["looks"]] == list(range(2, n + 1))   # one look per added seed
    (last,) = rec["looks"][-1]["decisions"]
    assert last["arm"] == "finetune" and last["verdict"] == "better" and last["evalue"] >= 20
    assert all(d["verdict"] == "undecided" for look in rec["looks"][:-1] for d in look["decisions"])
    assert len(list((tmp_path / "out" / "runs").glob("*__s*__*"))) == 2 * n
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Seeds until decided" in md and f"It stopped after {n} seeds: every arm decided" in md
    # the same command again (as after a kill): the same looks over finished runs, nothing rerun
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").glob("*/summary.json")}
    res = cli(args, tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "runs").glob("*/summary.json")} == mtimes
    again = json.loads((tmp_path / "out" / "sequential.json").read_text())
    assert again["looks"] == rec["looks"] and again["seeds"] == rec["seeds"]


def test_until_decided_runs_to_max_seeds_when_nothing_differs(tmp_path, monkeypatch):
    path = _study(tmp_path / "p", {k: ARMS[k] for k in ("probe", "same")}, seeds=[0, 1, 2])
    res = cli(["run", str(path), "--out", "out", "--isolation", "inline", "--until-decided", "--max-seeds", "4",
               "--seed-batch", "1"], tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "out" / "sequential.json").read_text())
    assert rec["stopped"] == "max_seeds" and rec["seeds"] == [0, 1, 2, 3]
    assert rec["looks"][-1]["decisions"][0]["verdict"] == "undecided"
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "--max-seeds 4 reached with 1 arm(s) not decided" in md


@pytest.mark.parametrize("extra, message", [
    (["--until-decided"], "--until-decided needs --max-seeds N"),
    (["--max-seeds", "5"], "--max-seeds applies with --until-decided"),
    (["--until-decided", "--max-seeds", "2"], "--max-seeds 2 is below the 3 seeds this study already has"),
    (["--until-decided", "--max-seeds", "5", "--seed-batch", "0"], "--seed-batch must be >= 1"),
])
def test_until_decided_bad_input_is_one_clear_line_and_exit_2(tmp_path, monkeypatch, extra, message):
    path = _study(tmp_path / "p", {k: ARMS[k] for k in ("probe", "finetune")}, seeds=[0, 1, 2])
    res = cli(["run", str(path), "--out", "out", "--isolation", "inline", *extra], tmp_path, monkeypatch)
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert not (tmp_path / "out" / "runs").exists()
