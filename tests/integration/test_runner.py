"""The engine end to end on a tiny study: run, failures, resume, invariants, determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from freezelab.cli import app
from freezelab.config.load import load_study
from freezelab.experiment import runner
from freezelab.experiment.plan import make_plan
from freezelab.experiment.runner import run_plan
from freezelab.tracking.files import read_json, read_jsonl
from freezelab.tracking.weights import read_weights
from freezelab.utils.hashing import hash_tensor

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def _run(path: Path, out: Path, **kw) -> dict[str, str]:
    study = load_study(path)
    outcomes = run_plan(study, make_plan(study), out, isolation=kw.pop("isolation", "inline"), progress=False,
                        tensorboard=kw.pop("tensorboard", False), **kw)
    return {o.arm + f"/{o.seed}": o.status for o in outcomes}


def _run_dir(out: Path, arm: str, seed: int = 0) -> Path:
    (d,) = (out / "runs").glob(f"{arm}__s{seed}__*")
    return d


def test_failing_arm_is_recorded_others_succeed_and_rerun_resumes(write_study, tmp_path: Path) -> None:
    path = write_study({"frozen": {"reference": True}, "trainable": {"overrides": {"embedding.freeze": False}},
                        "broken": {"overrides": {"embedding.source": str(tmp_path / "missing-model")}}})
    out = tmp_path / "out"
    assert _run(path, out) == {"frozen/0": "succeeded", "trainable/0": "succeeded", "broken/0": "failed"}
    status = read_json(_run_dir(out, "broken") / "status.json")
    assert status["status"] == "failed"
    assert status["error"]["class"] == "PretrainedUnavailableError"
    assert "missing-model" in status["error"]["message"]
    assert any("load_embedding" in line for line in status["error"]["traceback_tail"])
    ok = read_json(_run_dir(out, "frozen") / "summary.json")
    for key in ("best", "params", "wall_seconds", "tokens_per_second", "peak_memory_bytes", "hashes", "test"):
        assert key in ok, key
    assert {"data_hash", "split_hash", "eval_hash", "budget_hash", "config_hash"} <= set(ok["hashes"])
    assert (_run_dir(out, "frozen") / "checkpoints" / "best.safetensors").exists()
    # the same split for every arm
    other = read_json(_run_dir(out, "trainable") / "summary.json")
    assert other["hashes"]["split_hash"] == ok["hashes"]["split_hash"]

    # again: succeeded runs are skipped, the failed one is retried and its first attempt kept
    assert _run(path, out) == {"frozen/0": "skipped", "trainable/0": "skipped", "broken/0": "failed"}
    broken = _run_dir(out, "broken")
    assert (broken / "attempts" / "1" / "status.json").exists()
    assert read_json(broken / "status.json")["attempt"] == 2
    assert _run(path, out, retry_failed=False)["broken/0"] == "failed"
    assert read_json(broken / "status.json")["attempt"] == 2  # left alone

    # a complete, verified summary.json means succeeded whatever status.json says (killed in between)
    status = read_json(_run_dir(out, "frozen") / "status.json")
    status["status"] = "running"
    (_run_dir(out, "frozen") / "status.json").write_text(json.dumps(status))
    assert _run(path, out, retry_failed=False)["frozen/0"] == "skipped"
    assert read_json(_run_dir(out, "frozen") / "status.json")["status"] == "succeeded"
    # an interrupted run without a summary (status running, nobody holds its lock) runs again
    (_run_dir(out, "frozen") / "status.json").write_text(json.dumps(status))
    (_run_dir(out, "frozen") / "summary.json").unlink()
    assert _run(path, out, retry_failed=False)["frozen/0"] == "succeeded"


def test_frozen_stays_bit_identical_and_trained_moves(write_study, tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModel

    pretrained = AutoModel.from_pretrained(tiny_model_dir).get_input_embeddings().weight.detach()
    path = write_study({"frozen": {"reference": True}, "trainable": {"overrides": {"embedding.freeze": False}}})
    out = tmp_path / "out"
    _run(path, out)
    frozen, frozen_header = read_weights(_run_dir(out, "frozen") / "checkpoints" / "best.safetensors")
    trained, _ = read_weights(_run_dir(out, "trainable") / "checkpoints" / "best.safetensors")
    # lean: the frozen table is not stored again but referenced by the pretrained table's own hash
    assert "wte.weight" not in frozen and frozen_header["referenced"]["wte.weight"] == hash_tensor(pretrained)
    assert not torch.equal(trained["wte.weight"], pretrained)
    # both arms share Phase 1 (same seed, same data): identical frozen ContextBlocks
    p1 = [read_weights(_run_dir(out, arm) / "checkpoints" / "phase1.safetensors")[0] for arm in ("frozen", "trainable")]
    blocks = [k for k in p1[0] if k.startswith("context_block")]
    assert blocks and all(torch.equal(p1[0][k], p1[1][k]) for k in blocks)
    assert any(not torch.equal(frozen[k], trained[k]) for k in frozen if k.startswith("token_block"))


def test_injected_change_to_a_frozen_tensor_fails_the_run(write_study, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from freezelab.tasks.lm import phases

    real = phases.FreezeController.check_no_frozen_grads

    def leaky(self) -> None:  # a bug that nudges the frozen embedding during training
        real(self)
        with torch.no_grad():
            self.groups["embed"].params[0][0, 0] += 1.0
    monkeypatch.setattr(phases.FreezeController, "check_no_frozen_grads", leaky)
    path = write_study({"frozen": {"reference": True}})
    _run(path, tmp_path / "out")
    err = read_json(_run_dir(tmp_path / "out", "frozen") / "status.json")["error"]
    assert err["code"] == "frozen_tensor_changed" and "wte.weight" in err["message"]


def test_same_seed_same_losses_bitwise(write_study, tmp_path: Path) -> None:
    path = write_study({"frozen": {"reference": True}})
    _run(path, tmp_path / "a")
    _run(path, tmp_path / "b")
    rows = [read_jsonl(_run_dir(tmp_path / d, "frozen") / "metrics.jsonl") for d in ("a", "b")]
    keys = ("train/loss", "val/loss", "phase1/cvfp_loss")
    assert [[r.get(k) for k in keys] for r in rows[0]] == [[r.get(k) for k in keys] for r in rows[1]]


def test_unfreeze_at_epoch_changes_lr_and_weights(write_study, tmp_path: Path) -> None:
    path = write_study({"then_unfrozen": {"reference": True, "overrides": {
        "phase2.unfreeze": {"at_epoch": 1, "groups": ["embed"], "lr_scale": 0.5}, "phase2.patience": 5},
        "allow_confound": ["phase2.patience"]}})
    _run(path, tmp_path / "out")
    rows = [r for r in read_jsonl(_run_dir(tmp_path / "out", "then_unfrozen") / "metrics.jsonl")
            if r["kind"] == "epoch"]
    assert rows[0]["lr/embed"] == 0.0 and rows[0]["lr/token_block"] == pytest.approx(0.002)
    assert rows[1]["lr/embed"] == pytest.approx(0.001)
    assert "grad_norm/embed" not in rows[0] and "grad_norm/embed" in rows[1]
    summary = read_json(_run_dir(tmp_path / "out", "then_unfrozen") / "summary.json")
    assert summary["phases"] == [{"epoch": 2, "event": "unfreeze", "groups": ["embed"], "lr_scale": 0.5}]
    from freezelab.report.aggregate import load_study as read_folders
    from freezelab.report.warnings import full_analysis

    found = {f.code: f.params for f in full_analysis(read_folders(tmp_path / "out")).warnings}
    unfrozen = summary["epochs_run"] - 1  # epochs 2.. trained unfrozen; the report reads the record
    assert (found.get("unfreeze_short") or {}).get("epochs") == (unfrozen if unfrozen < 2 else None)


def test_process_death_is_recorded(write_study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_study({"frozen": {"reference": True}})
    monkeypatch.setattr(runner, "_spawn", lambda run_dir, cache: (-9, 123_456_789, 4.2))  # SIGKILL, no record
    assert _run(path, tmp_path / "out", isolation="process") == {"frozen/0": "failed"}
    err = read_json(_run_dir(tmp_path / "out", "frozen") / "status.json")["error"]
    assert err["signal"] == "SIGKILL" and "likely out of memory" in err["message"]
    assert err["peak_rss_bytes"] == 123_456_789


def test_process_isolation_end_to_end(write_study, tmp_path: Path) -> None:
    path = write_study({"frozen": {"reference": True}})
    assert _run(path, tmp_path / "out", isolation="process", tensorboard=True) == {"frozen/0": "succeeded"}
    run_dir = _run_dir(tmp_path / "out", "frozen")
    assert "succeeded" in (run_dir / "logs" / "run.log").read_text()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))


def test_cli_inspect_reproduces_the_seed_counts() -> None:
    res = CliRunner().invoke(app, ["inspect", str(ROOT / "examples" / "embedding-freeze.yaml"), "--json",
                                   "--set", "embedding.source=random", "--set", "embedding.tokenizer=minilm",
                                   "--set", "embedding.vocab_size=50257", "--set", "embedding.dim=768"])
    assert res.exit_code == 0, res.output
    arms = json.loads(res.output)["arms"]
    assert arms["tied_frozen"]["params"]["total"] == 52_782_336
    assert arms["tied_frozen"]["params"]["trainable"] == 7_091_712
    assert arms["frozen_in_untied_head"]["params"]["total"] == 91_379_712
    ref = arms["gpt2_reference"]["params"]  # the GPT-2 reference on the seed's trainable budget (7,091,712)
    assert abs(ref["trainable"] / 7_091_712 - 1) < 0.10 and ref["frozen"] == 50_257 * 768 + 2 * 768
    assert ref["reference"]["cvfp_token_block_params"] == 7_091_712


def test_cli_reports_config_errors_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: lm\narms: {a: {overrides: {phase2.max_epochs: 0}}}\n")
    res = CliRunner().invoke(app, ["run", str(bad)])
    assert res.exit_code == 2
    assert "phase2.max_epochs=0" in res.output and "greater than or equal to 1" in res.output


def test_killed_run_resumes_from_its_last_epoch_and_matches_an_uninterrupted_one(
        write_study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from freezelab.tracking.checkpoints import Checkpoints

    path = write_study({"frozen": {"reference": True, "overrides": {"phase2.unfreeze": {"at_epoch": 1}}}},
                       base=None)
    _run(path, tmp_path / "whole")
    real = Checkpoints.commit

    def killed_after_epoch_2(self, state: dict, **kw) -> None:
        real(self, state, **kw)
        if state["position"] == {**state["position"], "epoch": 2, "batch": None}:
            raise KeyboardInterrupt  # like a kill: nothing below the runner records it
    monkeypatch.setattr(Checkpoints, "commit", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _run(path, tmp_path / "cut")
    run_dir = _run_dir(tmp_path / "cut", "frozen")
    assert read_json(run_dir / "status.json")["status"] == "running"
    monkeypatch.setattr(Checkpoints, "commit", real)
    assert _run(path, tmp_path / "cut") == {"frozen/0": "succeeded"}
    assert "resumed after epoch 2" in (run_dir / "logs" / "run.log").read_text()
    assert not (run_dir / "attempts").exists()

    def epochs(out: Path) -> dict[int, tuple]:
        rows = read_jsonl(_run_dir(out, "frozen") / "metrics.jsonl")
        return {r["epoch"]: (r["train/loss"], r["val/loss"], r["lr/embed"]) for r in rows if r["kind"] == "epoch"}
    assert epochs(tmp_path / "cut") == epochs(tmp_path / "whole")  # bitwise, unfreeze boundary included
    a, b = (read_json(_run_dir(out, "frozen") / "summary.json") for out in (tmp_path / "whole", tmp_path / "cut"))
    assert a["test"] == b["test"] and a["best"] == b["best"] and a["steps"] == b["steps"]


def test_a_killed_reference_model_run_resumes_bit_for_bit(write_study, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from freezelab.tracking.checkpoints import Checkpoints

    path = write_study({"gru": {"reference": True, "overrides": {"model.kind": "gru"}}}, base=None)
    _run(path, tmp_path / "whole")
    real = Checkpoints.commit

    def killed_after_epoch_2(self, state: dict, **kw) -> None:
        real(self, state, **kw)
        if state["position"] == {**state["position"], "epoch": 2, "batch": None}:
            raise KeyboardInterrupt
    monkeypatch.setattr(Checkpoints, "commit", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _run(path, tmp_path / "cut")
    monkeypatch.setattr(Checkpoints, "commit", real)
    assert _run(path, tmp_path / "cut") == {"gru/0": "succeeded"}
    run_dir = _run_dir(tmp_path / "cut", "gru")
    assert "resumed after epoch 2" in (run_dir / "logs" / "run.log").read_text()
    rows = {out: [(r["train/loss"], r["val/loss"]) for r in read_jsonl(_run_dir(out, "gru") / "metrics.jsonl")
                  if r["kind"] == "epoch"] for out in (tmp_path / "whole", tmp_path / "cut")}
    assert rows[tmp_path / "cut"] == rows[tmp_path / "whole"] and len(rows[tmp_path / "whole"]) == 3
    a, b = (read_json(_run_dir(out, "gru") / "summary.json") for out in (tmp_path / "whole", tmp_path / "cut"))
    assert a["test"] == b["test"] and a["params"]["matched"] == b["params"]["matched"]


def test_ray_executor_runs_each_run_as_a_task_and_skips_finished_ones(write_study, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")  # in the dev extra; optional for users
    from freezelab.experiment.ray_executor import run_plan_ray

    path = write_study({"frozen": {"reference": True}, "trainable": {"overrides": {"embedding.freeze": False}},
                        "broken": {"overrides": {"embedding.source": str(tmp_path / "missing-model")}}})
    study = load_study(path)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        first = run_plan_ray(study, make_plan(study), tmp_path / "out", progress=False, tensorboard=False)
        again = run_plan_ray(study, make_plan(study), tmp_path / "out", progress=False, tensorboard=False,
                             retry_failed=False)
    finally:
        ray.shutdown()
    assert [(o.arm, o.status) for o in first] == [("frozen", "succeeded"), ("trainable", "succeeded"),
                                                  ("broken", "failed")]
    assert "PretrainedUnavailableError" in first[2].message
    assert [o.status for o in again] == ["skipped", "skipped", "failed"]
    assert read_json(_run_dir(tmp_path / "out", "trainable") / "summary.json")["status"] == "succeeded"


def test_the_online_lm_replication_study_validates_and_inspect_names_the_hub_offline() -> None:
    import os
    import subprocess
    import sys

    path = ROOT / "examples" / "replicate-embedding-freeze.yaml"
    study = load_study(path)  # validation needs no network
    assert {"seed_tied_frozen", "seed_untied_zero_head", "seed_untied_first_turn"} <= set(study.arms)
    exe = Path(sys.executable).with_name("freezelab")
    res = subprocess.run([str(exe), "inspect", str(path)], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert res.returncode == 2
    assert "Pretrained model 'gpt2' could not be loaded" in res.stderr + res.stdout
    assert "HF_HUB_OFFLINE=1" in res.stderr + res.stdout
