"""Issue 19 end to end on a tiny regression plugin: each arm's learning rate tuned on validation (tune:), seeds
until decided (run --until-decided) and the report's sections, resume after a kill without rerunning a trial
or a seed, and the bad inputs that exit 2."""

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


class Net(nn.Module):
    """x -> Linear(4, width) -> tanh(sharp ·) · scale -> Linear(width, 1). With Adam each step moves a weight by
    about the lr: a small ``scale`` needs large head weights (a large lr to get there within the budget); a
    large ``sharp`` saturates the tanh units when a large lr moves the body (a large lr ruins them)."""
    def __init__(self, width, sharp, scale, seed):
        super().__init__()
        torch.manual_seed(1234)             # the body is "pretrained": the same for every seed
        self.body = nn.Linear(4, width)
        torch.manual_seed(seed)
        self.head, self.sharp, self.scale = nn.Linear(width, 1), sharp, scale

    def forward(self, x):
        return self.head(torch.tanh(self.body(x) * self.sharp) * self.scale)


class Lin(freezelab.Task):
    """y = x·w* + noise; by default a nearly linear body of width 2: a frozen random body is a bottleneck."""
    metrics = {"loss": Metric("sq", "count", "min")}

    def load_data(self, options, data_seed):
        rng = np.random.default_rng(data_seed)
        w = np.array([1.0, -2.0, 0.5, 1.5], dtype=np.float32)
        def part(n):
            x = rng.normal(size=(n, 4)).astype(np.float32)
            y = x @ w + 0.1 * rng.normal(size=n).astype(np.float32)
            return [{"x": xi, "y": np.float32(yi)} for xi, yi in zip(x, y)]
        return Splits(train=part(128), val=part(128), test=part(512))

    def build_model(self, options, seed):
        return Net(int(options.get("width", 2)), float(options.get("sharp", 0.1)), float(options.get("scale", 10.0)),
                   seed)

    def param_groups(self, model):
        return {"body": model.body, "head": model.head}

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


# probe wants lr ~1 (small feature scale), finetune ~0.1 (a large lr saturates its sharp body). Both verdicts
# are clear of 0 under every MKL kernel family (SSE4.2, AVX2, AVX-512, AMX machines: MKL_ENABLE_INSTRUCTIONS),
# whose float rounding differs; a sharper finetune body (20) made the tuned verdict flip between machines.
LR_ARMS = {
    "probe": {"reference": True, "overrides": {"freeze.frozen": ["body"], "options": {"width": 8, "sharp": 6.0,
                                                                                      "scale": 0.25}}},
    "finetune": {"overrides": {"options": {"width": 8, "sharp": 5.0, "scale": 1.0}}}}


def _verdict(out: Path) -> str:
    import freezelab

    v = freezelab.results(out).verdicts.set_index("arm")
    return str(v.loc["finetune", "vs_reference_verdict"])


def test_tuning_each_arms_lr_on_val_turns_the_one_lr_verdict_around(tmp_path, monkeypatch):
    """finetune is better than probe at its own learning rate and ruined at the large one that suits probe: with
    that lr for both it loses, with tune: it wins; the chosen lrs differ ~10x, chosen on validation."""
    grid = [0.03, 0.1, 0.3, 1.0, 3.0]
    plain = _study(tmp_path / "plain", LR_ARMS, seeds=[0, 1, 2])
    res = cli(["run", str(plain), "--out", "plain_out", "--isolation", "inline", "--set", "train.lr=3.0"],
              tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output
    tuned = _study(tmp_path / "tuned", LR_ARMS, seeds=[0, 1, 2], tune={"lr": grid, "budget": 4})
    args = ["run", str(tuned), "--out", "tuned_out", "--isolation", "inline", "--set", "train.lr=3.0"]
    res = cli(args, tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "tuned_out" / "tune.json").read_text())
    chosen = {arm: r["chosen"] for arm, r in rec["arms"].items()}
    print("chosen", chosen, "plain", _verdict(tmp_path / "plain_out"), "tuned", _verdict(tmp_path / "tuned_out"))
    assert 3 <= chosen["probe"] / chosen["finetune"] <= 30, chosen
    assert rec["arms"]["probe"]["metric"] == "val/loss"
    assert _verdict(tmp_path / "plain_out") == "worse" and _verdict(tmp_path / "tuned_out") == "better"
    assert len(list((tmp_path / "tuned_out" / "tune" / "runs").glob("*__lr*__s0__*"))) == 2 * len(grid)
    # the comparison ran every seed at the chosen lr; the report shows the choice, the curve and no test use
    config = yaml.safe_load(next((tmp_path / "tuned_out" / "runs").glob("finetune__s1__*/config.yaml")).read_text())
    assert config["train"]["lr"] == chosen["finetune"]
    md = (tmp_path / "tuned_out" / "report.md").read_text(encoding="utf-8")
    assert "## Learning rate chosen on validation" in md and "plots/lr_tuning.png" in md
    assert (tmp_path / "tuned_out" / "plots" / "lr_tuning.png").exists()
    assert "the learning rate chosen on validation" not in md                  # nothing at an edge here
    trials = list((tmp_path / "tuned_out" / "tune" / "runs").glob("*/summary.json"))
    assert all(json.loads(p.read_text())["selection"]["metric"].startswith("val/") for p in trials)
    # the same command again (as after a kill): no trial and no run is rerun
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "tuned_out").glob("**/runs/*/summary.json")}
    res = cli(args, tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "tuned_out").glob("**/runs/*/summary.json")} == stamps
    # a grid whose best value is its edge: a warning next to the arm
    edge = _study(tmp_path / "edge", LR_ARMS, seeds=[0, 1], tune={"lr": [0.03, 0.1], "budget": 4})
    res = cli(["run", str(edge), "--out", "edge_out", "--isolation", "inline"], tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output
    md = " ".join((tmp_path / "edge_out" / "report.md").read_text(encoding="utf-8").split())
    assert "`probe`: the learning rate chosen on validation (0.1) is the highest value of its grid (0.03–0.1)" in md


@pytest.mark.parametrize("tune, message", [
    ({"lr": [], "budget": 2}, "tune.lr is an empty grid"),
    ({"lr": [0.1, 0.01], "budget": 9}, "a trial budget of 9 epochs is more than train.max_epochs=4"),
    ({"lr": {"log_range": [0.1, 0.01], "n": 3}}, "0 < lo < hi"),
    ({"lr": [0.1, -1.0]}, "tune.lr values must be > 0"),
])
def test_tune_bad_input_is_a_clear_error_and_exit_2(tmp_path, monkeypatch, tune, message):
    path = _study(tmp_path / "p", LR_ARMS, seeds=[0], tune=tune)
    res = cli(["run", str(path), "--out", "out", "--isolation", "inline"], tmp_path, monkeypatch)
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert not (tmp_path / "out").exists()


def test_tune_sets_each_tasks_own_lr_and_budget_keys(tmp_path, tiny_model_dir, tiny_corpus):
    """The LM tunes Phase 2 (phase2.lr, phase2.max_epochs); the time-series task and plugins train.*; an arm's
    own tune replaces the study's; log_range grids are log-spaced with both ends."""
    from freezelab.config.load import flatten, load_study
    from freezelab.experiment.tuning import trial_plan
    from tests.conftest import tiny_base

    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump({"name": "lm", "task": "lm", "seeds": [3, 4], "base": tiny_base(
        tiny_model_dir, tiny_corpus), "tune": {"lr": {"log_range": [1e-4, 1e-2], "n": 3}, "budget": 2},
        "arms": {"a": {"reference": True}, "b": {"overrides": {"embedding.freeze": False},
                                                 "tune": {"lr": [0.5], "seeds": [4]}}}}), encoding="utf-8")
    plan = trial_plan(load_study(path))
    got = sorted((s.arm, s.seed, flatten(s.config)["phase2.lr"], flatten(s.config)["phase2.max_epochs"]) for s in plan)
    assert got == [("a", 3, pytest.approx(1e-4), 2), ("a", 3, pytest.approx(1e-3), 2), ("a", 3, pytest.approx(1e-2), 2),
                   ("b", 4, 0.5, 3)]
    assert len({s.run_id for s in plan}) == len(plan)


def test_tune_on_the_time_series_task_sets_optim_lr_and_train_max_epochs(tmp_path):
    from freezelab.config.load import flatten, load_study
    from freezelab.experiment.tuning import trial_plan
    from tests.ts_fixtures import tiny_ts_base

    base = tiny_ts_base(tmp_path / "no-backbone-needed-to-plan")
    path = tmp_path / "ts.yaml"
    path.write_text(yaml.safe_dump({"name": "ts", "task": "timeseries", "seeds": [0], "base": base,
                                    "tune": {"lr": [1e-4, 1e-3], "budget": 1}, "arms": {"a": {"reference": True}}}),
                    encoding="utf-8")
    got = sorted((flatten(s.config)["optim.lr"], flatten(s.config)["train.max_epochs"])
                 for s in trial_plan(load_study(path)))
    assert got == [(1e-4, 1), (1e-3, 1)]
