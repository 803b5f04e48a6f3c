"""Your own task (freezelab.Task, docs/plugins.md): the worked example run from outside the checkout, the Python
API, the engine's guarantees on a plugin (frozen really frozen, identical data by hash, resume) and every bad
plugin stopped with one line naming what is wrong, before anything is written."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from freezelab.cli import app

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own-task"

TINY = '''
import numpy as np, torch, torch.nn.functional as F
from torch import nn
import freezelab
from freezelab import Metric, Splits


class Tiny(freezelab.Task):
    metrics = {"loss": Metric("loss_sum", "count", "min"), "acc": Metric("correct", "count", "max")}

    def load_data(self, options, data_seed):
        rng = np.random.default_rng(data_seed)
        def part(n):
            x = rng.normal(size=(n, 4)).astype(np.float32)
            return [{"x": xi, "y": int(xi[0] + 0.5 * xi[1] > 0)} for xi in x]
        return Splits(train=part(64), val=part(32), test=part(32))

    def build_model(self, options, seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

    def param_groups(self, model):
        return {"body": model[0], "head": model[2]}

    def loss(self, model, batch):
        return F.cross_entropy(model(batch["x"]), batch["y"])

    def score(self, model, batch):
        logits = model(batch["x"])
        return {"loss_sum": F.cross_entropy(logits, batch["y"], reduction="none"),
                "correct": (logits.argmax(1) == batch["y"]).float(), "count": torch.ones(len(logits))}

    def baselines(self, splits, options):
        out = {}
        for s in ("val", "test"):
            y = np.array([it["y"] for it in splits.part(s)])
            out[s] = {"loss_sum": np.full(len(y), np.log(2)), "correct": (y == 1).astype(float),
                      "count": np.ones(len(y))}
        return {"coin": out}
'''

STUDY = {"name": "tiny", "task": "tiny.py:Tiny", "seeds": [0, 1],
         "base": {"train": {"max_epochs": 3, "batch_size": 16, "lr": 0.01, "patience": 3}},
         "arms": {"frozen_body": {"reference": True, "overrides": {"freeze.frozen": ["body"]}},
                  "finetune": {"overrides": {}},
                  "lp_ft": {"overrides": {"freeze.frozen": ["body"], "freeze.unfreeze": {"epoch": 1}}}}}


def write(folder: Path, code: str = TINY, study: dict | None = None, name: str = "tiny.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(code), encoding="utf-8")
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study or STUDY, sort_keys=False), encoding="utf-8")
    return path


def cli(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_the_worked_example_runs_from_any_directory(tmp_path, monkeypatch):
    """The example copied out of the checkout, run from a third directory: the full report, its data hashes
    equal across arms, the pretrained encoder frozen in the linear probe and moving after LP-FT unfreezes."""
    project, elsewhere = tmp_path / "my-project", tmp_path / "elsewhere"
    shutil.copytree(EXAMPLE, project)
    elsewhere.mkdir()
    res = cli(["run", str(project / "transfer.yaml"), "--profile", "quick", "--arms", "linear_probe,lp_ft",
               "--seeds", "0,1", "--set", "train.max_epochs=6", "--set", "options.n_eval=60", "--out", "out"],
              elsewhere, monkeypatch)
    assert res.exit_code == 0, res.output
    out = elsewhere / "out"
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "**Answer:**" in md and "`majority`" in md and "test/loss" in md
    summaries = {p.parent.name.split("__")[0] + str(json.loads(p.read_text())["seed"]): json.loads(p.read_text())
                 for p in out.glob("runs/*/summary.json")}
    assert len(summaries) == 4 and all(s["status"] == "succeeded" for s in summaries.values())
    for key in ("data_hash", "split_hash", "eval_hash", "budget_hash"):
        assert len({s["hashes"][key] for s in summaries.values()}) == 1, key
    lp, lpft = summaries["linear_probe0"], summaries["lp_ft0"]
    assert lp["invariants"]["frozen_unchanged"] and lp["params"]["by_group"]["encoder.0"]["frozen"]
    assert [p["event"] for p in lpft["phases"]] == ["start", "unfreeze"] and lpft["phases"][1]["epoch"] == 6
    assert lp["hashes"]["pretrained_hash"].startswith("toy encoder sha256:")
    assert (out / "runs" / next(p.name for p in (out / "runs").iterdir() if p.name.startswith("lp_ft__s0"))
            / "items" / "majority.npz").exists()


def test_python_api_runs_a_subset_and_returns_tables(tmp_path):
    import freezelab

    path = write(tmp_path)
    study = freezelab.load_study(path)
    res = freezelab.run_study(study, out=tmp_path / "out", arms=["frozen_body", "finetune"], seeds=[0, 1],
                              isolation="inline")
    assert [o.status for o in res.outcomes] == ["succeeded"] * 4
    v = res.verdicts.set_index("arm")
    assert list(v.index) == ["frozen_body", "finetune"] and v.loc["frozen_body", "reference"]
    assert v.loc["finetune", "vs_reference_verdict"] in ("better", "worse", "inconclusive", "no_difference")
    assert v.loc["finetune", "baseline"] == "coin" and v.loc["finetune", "n"] == 2
    assert set(res.summaries.status) == {"succeeded"} and "test/acc" in res.summaries
    assert res.answer and (tmp_path / "out" / "report.html").exists()
    again = freezelab.results(tmp_path / "out")  # reads the folder, runs nothing
    assert again.verdicts.equals(res.verdicts)
    assert freezelab.report(tmp_path / "out", lang="en")["report.md"].exists()


def test_a_plugin_that_changes_a_frozen_tensor_fails_naming_its_method(tmp_path, monkeypatch):
    code = TINY.replace('        return F.cross_entropy(model(batch["x"]), batch["y"])',
                        '        with torch.no_grad():\n            model[0].weight.add_(0.01)\n'
                        '        return F.cross_entropy(model(batch["x"]), batch["y"])')
    path = write(tmp_path, code, {**STUDY, "seeds": [0]})
    res = cli(["run", str(path), "--arms", "frozen_body", "--out", "out"], tmp_path, monkeypatch)
    assert res.exit_code == 1, res.output
    status = json.loads(next((tmp_path / "out" / "runs").glob("*/status.json")).read_text())
    assert status["error"]["code"] == "frozen_tensor_changed"
    assert "Tiny.loss, Tiny.score or Tiny.collate changed it in place" in status["error"]["message"]


BAD = {
    "no such file": (TINY, "missing.py:Tiny", r"file .*missing\.py does not exist"),
    "no such class": (TINY, "tiny.py:Nope", r"has no class 'Nope'\. Task classes there: Tiny"),
    "not a Task": (TINY + "\nclass Plain:\n    pass\n", "tiny.py:Plain",
                   r"Plain in .* is not a subclass of freezelab\.Task\. Write `class Plain\(freezelab\.Task\):`"),
    "missing method": (TINY.replace("    def score(self, model, batch):", "    def scored(self, model, batch):"),
                       "tiny.py:Tiny", r"Tiny does not define score"),
    "import error": ("import no_such_module\n" + TINY, "tiny.py:Tiny", r"importing .* failed: ModuleNotFoundError"),
    "loss not a scalar": (TINY.replace('return F.cross_entropy(model(batch["x"]), batch["y"])',
                                       'return F.cross_entropy(model(batch["x"]), batch["y"], reduction="none")'),
                          "tiny.py:Tiny", r"Tiny\.loss: returned \(2,\); return a scalar tensor"),
    "score wrong shape": (TINY.replace('"count": torch.ones(len(logits))}', '"count": torch.ones(len(logits), 2)}'),
                          "tiny.py:Tiny", r"Tiny\.score: column 'count' has shape \(2, 2\) for a batch of 2 items"),
    "group misses a parameter": (TINY.replace('return {"body": model[0], "head": model[2]}',
                                              'return {"body": model[0]}'),
                                 "tiny.py:Tiny", r"Tiny\.param_groups: .*parameters in no group"),
    "unhashable data": (TINY.replace('return Splits(train=part(64)', 'return Splits(train=[object()] * 64 or part(64)'),
                        "tiny.py:Tiny", r"Tiny\.load_data: item train\[0\] is a object freezelab cannot hash"),
    "a method raises": (TINY.replace("rng = np.random.default_rng(data_seed)",
                                     "raise FileNotFoundError('no file data.csv')"),
                        "tiny.py:Tiny", r"Tiny\.load_data: raised FileNotFoundError: no file data\.csv"),
    "baseline wrong shape": (TINY.replace('"count": np.ones(len(y))}', '"count": np.ones(len(y) + 1)}'),
                             "tiny.py:Tiny", r"Tiny\.baselines: coin/val column 'count' has shape \(33,\)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_plugin_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, case):
    code, task, pattern = BAD[case]
    path = write(tmp_path, code, {**STUDY, "task": task})
    res = cli(["run", str(path), "--out", "out"], tmp_path, monkeypatch)
    import re

    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and re.search(pattern, lines[0]), res.output
    assert not (tmp_path / "out").exists()  # nothing written
    sys.modules.pop("no_such_module", None)


def test_fields_and_inspect_know_a_plugin(tmp_path, monkeypatch):
    """`freezelab fields` lists a plugin's own options with the engine's keys; `inspect` counts each arm's
    trainable parameters from the task's groups (the linear probe: the head only)."""
    res = cli(["fields", str(EXAMPLE / "transfer.yaml")], tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output
    assert "options.n_train (int, default 40)" in res.output and "freeze.unfreeze.epoch" in res.output
    res = cli(["inspect", str(EXAMPLE / "transfer.yaml"), "--json"], tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output
    arms = json.loads(res.output)["arms"]
    head = 32 * 3 + 3  # nn.Linear(HIDDEN=32, classes=3)
    assert arms["linear_probe"]["params"]["trainable"] == head
    assert arms["finetune"]["params"]["trainable"] == arms["finetune"]["params"]["total"] == (
        16 * 32 + 32 + 32 * 32 + 32 + head)
    res = cli(["fields", "nowhere.py:Nope"], tmp_path, monkeypatch)
    assert res.exit_code == 2 and "does not exist" in res.output
