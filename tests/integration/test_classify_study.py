"""The shipped classification study (examples/classify.yaml) end to end on the real polarity data, with a tiny
local BERT in place of MiniLM so it takes seconds: every arm runs, the encoder is frozen exactly where the arm
says (compared with the saved pretrained weights, not with the engine's own check), LP-FT unfreezes, random
init starts elsewhere, the data are identical across arms, and the report names the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from freezelab.cli import app

pytestmark = pytest.mark.integration
STUDY = Path(__file__).resolve().parents[2] / "examples" / "classify.yaml"


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from transformers import BertConfig, BertModel

    from freezelab.pretrained import load_tokenizer

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(path)
    load_tokenizer("minilm").save_pretrained(path)
    return path


def best_weights(run: Path) -> dict[str, torch.Tensor]:
    """The best epoch's full state dict: the lean file's stored tensors plus the ones it references, rebuilt
    from the arm's config (the pretrained weights and the seeded init) and checked against their hashes."""
    import yaml

    from freezelab.tasks.registry import get_task
    from freezelab.tracking.weights import full_state

    runner = get_task("classify")
    cfg = runner.config(yaml.safe_load((run / "config.yaml").read_text()))
    model = runner.task.build_model(cfg.options, seed=0)
    return full_state(run / "checkpoints" / "best.safetensors", None, model.state_dict())


def test_inspect_counts_each_arm_s_trainable_parameters(tiny_encoder):
    """Parameter accounting on the meta device (the encoder itself loads on the CPU first)."""
    res = CliRunner().invoke(app, ["inspect", str(STUDY), "--json", "--set", f"options.encoder={tiny_encoder}"])
    assert res.exit_code == 0, res.output
    params = {arm: r["params"] for arm, r in json.loads(res.output)["arms"].items()}
    head = 16 * 2 + 2
    block = sum(v.numel() for k, v in load_file(tiny_encoder / "model.safetensors").items()
                if k.startswith("encoder.layer.2."))
    assert params["linear_probe"]["trainable"] == params["lp_ft"]["trainable"] == head
    assert params["top2"]["trainable"] == head + 2 * block
    assert params["finetune"]["trainable"] == params["finetune"]["total"] == params["random_init"]["trainable"]


def test_the_classify_study_runs_every_arm_with_its_freeze_policy(tmp_path, tiny_encoder):
    out, study = tmp_path / "out", tmp_path / "classify.yaml"
    # LP-FT unfreezes after 1 epoch here (not 4), so its best epoch is an unfrozen one
    study.write_text(STUDY.read_text().replace("freeze.unfreeze: {epoch: 4,", "freeze.unfreeze: {epoch: 1,"))
    res = CliRunner().invoke(app, [
        "run", str(study), "--profile", "quick", "--seeds", "0", "--out", str(out),
        "--set", f"options.encoder={tiny_encoder}", "--set", "train.max_epochs=5", "--set", "train.lr=0.01"],
        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    runs = {p.parent.name.split("__")[0]: p.parent for p in out.glob("runs/*/summary.json")}
    assert set(runs) == {"linear_probe", "finetune", "lp_ft", "top2", "random_init"}
    summaries = {a: json.loads((r / "summary.json").read_text()) for a, r in runs.items()}
    assert all(s["status"] == "succeeded" for s in summaries.values()), {a: s["status"] for a, s in summaries.items()}
    for key in ("data_hash", "split_hash", "eval_hash"):
        assert len({s["hashes"][key] for s in summaries.values()}) == 1, key
    assert summaries["linear_probe"]["data"]["train_items"] == 64

    pretrained = load_file(tiny_encoder / "model.safetensors")
    def encoder_changed(arm: str) -> dict[str, bool]:
        w = best_weights(runs[arm])
        enc = {k.removeprefix("encoder."): v for k, v in w.items() if k.startswith("encoder.")}
        assert enc, sorted(w)[:5]
        return {k: not torch.equal(v, pretrained[k]) for k, v in enc.items() if k in pretrained}

    lp = encoder_changed("linear_probe")
    assert lp and not any(lp.values())  # the linear probe: every encoder tensor bit-identical
    top2 = encoder_changed("top2")
    assert not any(v for k, v in top2.items() if k.startswith(("embeddings.", "encoder.layer.0.")))
    assert any(v for k, v in top2.items() if k.startswith("encoder.layer.2."))
    assert all(encoder_changed("finetune").values())
    epochs = [json.loads(line) for line in (runs["lp_ft"] / "metrics.jsonl").read_text().splitlines()]
    epochs = {r["epoch"]: r for r in epochs if r["kind"] == "epoch"}
    assert epochs[1]["lr/lower"] == 0 and "grad_norm/lower" not in epochs[1]  # the probe epoch: encoder frozen
    for e in range(2, max(epochs) + 1):  # then trained, at 0.01 × the study's lr 0.01
        assert epochs[e]["lr/lower"] == pytest.approx(1e-4) and epochs[e]["grad_norm/lower"] > 0
    assert [(p["event"], p["epoch"]) for p in summaries["lp_ft"]["phases"]] == [("start", 1), ("unfreeze", 2)]
    assert summaries["random_init"]["hashes"]["pretrained_hash"].startswith("none")
    assert summaries["finetune"]["hashes"]["pretrained_hash"].startswith(f"{tiny_encoder} sha256:")

    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.count("### test/loss (min) — primary") == 1  # the selection metric is a headline metric: once
    assert "**Answer:**" in md and "`naive_bayes`" in md and "`majority`" in md and "test/acc" in md
    assert (out / "report.html").exists()
