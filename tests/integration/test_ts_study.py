"""End to end: a tiny time-series study through the runner, and the shipped example's accounting."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from freezelab.config.load import load_study
from freezelab.experiment.plan import make_plan
from freezelab.experiment.runner import run_plan
from freezelab.tasks.timeseries.task import TSTask
from freezelab.tracking.files import read_json, read_jsonl
from tests import ts_fixtures
from tests.ts_fixtures import tiny_ts_base, write_ts_study

tiny_backbones = ts_fixtures.tiny_backbones  # the fixture

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).parents[2] / "examples" / "t5-transfer.yaml"
ARMS = {
    "frozen": {"description": "pretrained backbone frozen", "reference": True},
    "no_backbone": {"description": "identity backbone", "overrides": {"backbone.kind": "none"}},
    "frozen_then_unfrozen": {"description": "frozen 1 epoch, then trained",
                             "overrides": {"backbone.train": "frozen_then_unfrozen", "backbone.unfreeze_epoch": 1}},
}


def test_tiny_study_runs_inline_and_writes_summaries(tmp_path, tiny_backbones):
    path = write_ts_study(tmp_path / "study.yaml", tiny_ts_base(tiny_backbones["t5"]), ARMS)
    study = load_study(path)
    outcomes = run_plan(study, make_plan(study), tmp_path / "out", isolation="inline", progress=False,
                        tensorboard=False)
    assert [o.status for o in outcomes] == ["succeeded"] * 3, [o.message for o in outcomes]
    summaries = {s["arm"]: s for s in (read_json(p) for p in (tmp_path / "out" / "runs").glob("*/summary.json"))}
    for s in summaries.values():
        assert s["status"] == "succeeded" and s["best"]["epoch"] in (1, 2) and s["epochs_run"] == 2
        for base in ("persistence", "interpolation"):
            assert {"val/mse", "test/mse", "test/mse/h1", "test/corr/h4", "test/r2/d"} <= set(s["baselines"][base])
        assert {"test/mse", "test/r2", "test/corr", "test/mse/h1", "test/corr/d", "test/mse_bp/h4",
                "test/n_points/h1", "test/skill_persistence/h1", "test/skill_interpolation"} <= set(s["test"])
        assert all(math.isfinite(s["test"][k]) for k in ("test/mse", "test/mse/d"))
        assert s["selection"] == {"metric": "val/mse", "mode": "min"}
        assert [h["name"] for h in s["headline"]] == ["mse", "corr", "r2"]
        assert set(s["hashes"]) >= {"data_hash", "split_hash", "eval_hash", "budget_hash", "pretrained_hash"}
        assert s["windows_seen"] > 0 and s["windows_per_second"] > 0 and s["max_epochs"] == 2
        assert "tokens_seen" not in s and "tokens_per_second" not in s       # windows are named as such
        m = s["masking"]
        assert m["scheme"] == "disjoint" and m["leak_free"] and set(m["splits"]) == {"train", "val", "test"}
        for split in m["splits"].values():
            assert set(split) == {"h1", "h4", "d"}
            assert all(v["leaked_targets"] == 0 and abs(v["oracle_gain"]) < 1e-6 for v in split.values())
            assert all(v["targets"] > 0 and 0 <= v["hidden_fraction"] < 1 for v in split.values())
    for key in ("data_hash", "split_hash", "eval_hash", "budget_hash"):       # comparability across arms
        assert len({s["hashes"][key] for s in summaries.values()}) == 1, key
    assert summaries["no_backbone"]["hashes"]["pretrained_hash"] is None
    assert summaries["frozen"]["params"]["removed"]["shared.weight"] == 96 * 16
    assert summaries["frozen"]["params"]["trainable"] == summaries["no_backbone"]["params"]["total"]
    ftu = next((tmp_path / "out" / "runs").glob("frozen_then_unfrozen*"))
    epochs = [r for r in read_jsonl(ftu / "metrics.jsonl") if r["kind"] == "epoch"]
    assert epochs[0]["lr/encoder.0"] == 0.0 and epochs[1]["lr/encoder.0"] > 0
    assert "grad_norm/encoder.0" not in epochs[0] and epochs[1]["grad_norm/encoder.0"] > 0
    assert {"train/target_fraction/h1", "val/mse/d", "val/skill_persistence", "lr/head"} <= set(epochs[0])
    # I1 is recorded, not asserted: per phase the frozen tensors' hashes and every check made against them
    frozen = summaries["frozen"]["invariants"]
    assert frozen["frozen_unchanged"] is True
    (start,) = frozen["frozen_checks"]
    assert any(k.startswith("backbone.") for k in start["hashes"])
    assert [c["when"] for c in start["checks"]] == ["after step 1", "at the end of epoch 1", "at the end of epoch 2",
                                                    "at the end of the run"]
    assert all(c["unchanged"] and c["changed"] == [] for c in start["checks"])
    unfrozen = summaries["frozen_then_unfrozen"]["invariants"]["frozen_checks"]
    assert len(unfrozen) == 2 and "unfreezing" in unfrozen[1]["phase"]      # the backbone left the frozen set
    assert not any(k.startswith("backbone.") for k in unfrozen[1]["hashes"])


def test_a_frozen_backbone_tensor_changed_mid_run_fails_it_and_is_recorded(tmp_path, tiny_backbones, monkeypatch):
    import torch

    from freezelab.tracking.selection import EarlyStopping

    real = EarlyStopping.update

    def tampering(self, epoch, value, metrics, model):  # after epoch 1's checks: nudge a frozen backbone tensor
        if epoch == 1:
            with torch.no_grad():
                next(p for n, p in model.named_parameters() if n.startswith("backbone.")).add_(1e-3)
        return real(self, epoch, value, metrics, model)
    monkeypatch.setattr(EarlyStopping, "update", tampering)
    path = write_ts_study(tmp_path / "study.yaml", tiny_ts_base(tiny_backbones["t5"]), {"frozen": ARMS["frozen"]})
    study = load_study(path)
    outcomes = run_plan(study, make_plan(study), tmp_path / "out", isolation="inline", progress=False,
                        tensorboard=False)
    assert [o.status for o in outcomes] == ["failed"]
    (summary,) = [read_json(p) for p in (tmp_path / "out" / "runs").glob("*/summary.json")]
    error = summary["error"]
    assert error["code"] == "frozen_tensor_changed" and "at the end of epoch 2" in error["message"]
    inv = summary["invariants"]
    checks = inv["frozen_checks"][0]["checks"]
    assert inv["frozen_unchanged"] is False
    assert [c["unchanged"] for c in checks] == [True, True, False]   # after step 1, epoch 1, epoch 2
    assert checks[-1]["changed"] and all(n.startswith("backbone.") for n in checks[-1]["changed"])


def test_shipped_example_resolves_and_counts(tmp_path):
    study = load_study(EXAMPLE)
    assert {"frozen", "frozen_then_unfrozen", "finetune", "random_init", "no_backbone", "one_attn",
            "discriminative"} <= set(study.arms) and study.seeds == [0, 1, 2]
    quick = load_study(EXAMPLE, profile="quick")
    assert set(quick.arms) == set(study.arms)
    task = TSTask()
    counts = {name: task.inspect(arm.config) for name, arm in study.arms.items()}
    assert counts["frozen"]["removed"]["embeddings.word_embeddings.weight"] == 30522 * 384
    assert counts["frozen"]["total"] == counts["finetune"]["total"] == counts["random_init"]["total"]
    assert counts["no_backbone"]["total"] == counts["frozen"]["trainable"]
    assert counts["finetune"]["trainable"] == counts["finetune"]["total"]
    configs = {name: arm.config for name, arm in study.arms.items()}
    for section in ("data", "windows", "masking", "train"):                     # identical budget and data
        assert len({str(c[section]) for c in configs.values()}) == 1, section


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path, tiny_backbones, monkeypatch):
    from freezelab.tracking.checkpoints import Checkpoints

    base = tiny_ts_base(tiny_backbones["t5"])
    base["train"]["max_epochs"] = 3
    arms = {"ftu": {"reference": True, "overrides": {"backbone.train": "frozen_then_unfrozen",
                                                      "backbone.unfreeze_epoch": 1}}}
    study = load_study(write_ts_study(tmp_path / "study.yaml", base, arms))

    def run(out: Path) -> None:
        run_plan(study, make_plan(study), out, isolation="inline", progress=False, tensorboard=False)

    run(tmp_path / "whole")
    real = Checkpoints.commit

    def killed_after_epoch_2(self, state, **kw):
        real(self, state, **kw)
        if state["position"] == {**state["position"], "epoch": 2, "batch": None}:
            raise KeyboardInterrupt  # like a kill: the run's status stays "running"
    monkeypatch.setattr(Checkpoints, "commit", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(Checkpoints, "commit", real)
    run(tmp_path / "cut")

    def result(out: Path) -> tuple:
        run_dir = next((out / "runs").glob("ftu__*"))
        epochs = {r["epoch"]: (r["train/loss"], r["val/mse"], r["lr/encoder.0"])
                  for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "epoch"}
        s = read_json(run_dir / "summary.json")
        return epochs, s["test"], s["best"], s["status"]
    assert result(tmp_path / "cut") == result(tmp_path / "whole")
    run_dir = next((tmp_path / "cut" / "runs").glob("ftu__*"))
    assert "resumed after epoch 2" in (run_dir / "logs" / "run.log").read_text()
