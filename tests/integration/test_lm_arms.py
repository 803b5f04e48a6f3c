"""Every arm and option of the CVFP study trains end to end on the tiny base, with the freeze
invariants checked inside the run (a violation would fail it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from freezelab.config.load import load_study
from freezelab.experiment.plan import make_plan
from freezelab.experiment.runner import run_plan
from freezelab.tracking.files import read_json, read_jsonl
from freezelab.tracking.weights import read_weights
from freezelab.utils.hashing import hash_tensor

pytestmark = pytest.mark.integration

ARMS = {
    "tied_frozen": {},
    "tied_trainable": {"embedding.freeze": False},
    "frozen_in_untied_head": {"model.head.tie": False},
    "legacy_untied_zero_head": {"model.head.tie": False, "model.head.init": "zeros", "model.head.bias": True},
    "random_tied": {"embedding.source": "random", "embedding.vocab_size": 30522, "embedding.dim": 16,
                    "embedding.freeze": False},
    "no_phase1": {"phase1.enabled": False},
    "no_context": {"model.use_context": False},
    "two_input_tokens": {"model.num_input_tokens": 2},
    "stream_wraparound": {"context.reset": "stream", "context.wraparound": True},
    "embed_norm_trains": {"model.embed_norm": "trainable_shared"},
    "rms_diversity_jacobi_iter0": {"phase1.diversity_norm": "rms", "phase1.iter0": "jacobi"},
    "bf16": {"runtime.precision": "bf16"},
}
ALLOW = {"bf16": ["runtime.precision"]}


@pytest.fixture(scope="module")
def study_out(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_corpus: Path) -> Path:
    import yaml

    from tests.conftest import tiny_base

    tmp = tmp_path_factory.mktemp("arms")
    arms = {name: {"overrides": over, "allow_confound": ALLOW.get(name, [])} for name, over in ARMS.items()}
    arms["tied_frozen"]["reference"] = True
    path = tmp / "arms.yaml"
    path.write_text(yaml.safe_dump({"name": "arms", "task": "lm", "seeds": [0], "base": tiny_base(tiny_model_dir,
                                    tiny_corpus), "arms": arms}))
    study = load_study(path)
    run_plan(study, make_plan(study), tmp / "out", isolation="inline", progress=False, tensorboard=False)
    return tmp / "out"


def _summary(out: Path, arm: str) -> dict:
    (run_dir,) = (out / "runs").glob(f"{arm}__s0__*")
    return read_json(run_dir / "summary.json")


@pytest.mark.parametrize("arm", list(ARMS))
def test_arm_succeeds_with_invariants(study_out: Path, arm: str) -> None:
    s = _summary(study_out, arm)
    assert s["status"] == "succeeded", s.get("error")
    assert s["invariants"]["frozen_unchanged"] and s["test"]["test/ppl"] > 1
    assert s["params"]["trainable"] + s["params"]["frozen"] + s["params"]["unused"] == s["params"]["total"]


def test_frozen_checks_are_recorded_with_their_hashes(study_out: Path) -> None:
    from freezelab.utils.hashing import hash_json

    s = _summary(study_out, "tied_frozen")
    (phase,) = s["invariants"]["frozen_checks"]
    when = [c["when"] for c in phase["checks"]]
    assert when == ["after step 1", *[f"at the end of epoch {e}" for e in range(1, s["epochs_run"] + 1)],
                    "at the end of the run"]
    assert phase["checks"][0]["step"] == 1 and all(c["unchanged"] for c in phase["checks"])
    assert "wte.weight" in phase["hashes"] and any(k.startswith("context_block.") for k in phase["hashes"])
    assert all(c["digest"] == phase["digest"] == hash_json(phase["hashes"]) for c in phase["checks"])


def test_no_context_counts_the_context_block_unused_and_skips_phase1(study_out: Path) -> None:
    s, ref = _summary(study_out, "no_context"), _summary(study_out, "tied_frozen")
    block = ref["params"]["by_group"]["context_block"]["numel"]
    assert s["params"]["unused"] == block and ref["params"]["unused"] == 0
    assert s["params"]["frozen"] == ref["params"]["frozen"] - block
    assert s["params"]["by_group"]["context_block"]["unused"] is True
    assert s["phase1"]["enabled"] is False and "use_context" in s["phase1"]["skipped"]
    (run_dir,) = (study_out / "runs").glob("no_context__s0__*")
    assert not [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "iteration"]
    assert "phase 1: skipped (model.use_context=false" in (run_dir / "logs" / "run.log").read_text()


def test_stream_keeps_cross_document_targets(study_out: Path) -> None:
    """stream: the last token of a document predicts the first of the next (one target more per document
    boundary, in train and in the scored val/test items); per_document: targets stay inside documents."""
    s, ref = _summary(study_out, "stream_wraparound"), _summary(study_out, "tied_frozen")
    d = ref["data"]
    assert ref["train_tokens"] == d["train_tokens"] - d["train_docs"]
    assert s["train_tokens"] == d["train_tokens"] - 1
    items = {}
    for arm in ("stream_wraparound", "tied_frozen"):
        (run_dir,) = (study_out / "runs").glob(f"{arm}__s0__*")
        with np.load(run_dir / "items" / "model.npz") as z:
            items[arm] = {k: z[k] for k in z.files}
    for split in ("val", "test"):
        per_doc, stream = items["tied_frozen"][f"{split}/tokens"], items["stream_wraparound"][f"{split}/tokens"]
        assert stream.sum() == d[f"{split}_tokens"] - 1 and per_doc.sum() == d[f"{split}_tokens"] - d[f"{split}_docs"]


def test_arms_share_data_and_differ_where_declared(study_out: Path) -> None:
    hashes = {arm: _summary(study_out, arm)["hashes"] for arm in ARMS}
    assert len({h["split_hash"] for h in hashes.values()}) == 1
    assert len({h["data_hash"] for h in hashes.values()}) == 1
    assert len({h["budget_hash"] for h in hashes.values()}) == 1
    assert len({h["config_hash"] for h in hashes.values()}) == len(ARMS)
    assert hashes["random_tied"]["pretrained_hash"] is None


def test_trainable_counts_follow_the_arm(study_out: Path) -> None:
    p = {arm: _summary(study_out, arm)["params"] for arm in ARMS}
    table = 30522 * 16
    assert p["tied_trainable"]["trainable"] == p["tied_frozen"]["trainable"] + table
    assert p["frozen_in_untied_head"]["total"] == p["tied_frozen"]["total"] + table
    assert p["legacy_untied_zero_head"]["total"] == p["tied_frozen"]["total"] + table + 30522
    assert p["embed_norm_trains"]["trainable"] == p["tied_frozen"]["trainable"] + 2 * 16
    assert p["tied_frozen"]["tied"] == 1 and p["frozen_in_untied_head"]["tied"] == 0


def test_no_phase1_logs_no_iterations_and_phase1_does(study_out: Path) -> None:
    def iterations(arm: str) -> list[dict]:
        (run_dir,) = (study_out / "runs").glob(f"{arm}__s0__*")
        return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "iteration"]
    assert iterations("no_phase1") == []
    rows = iterations("tied_frozen")
    assert rows and all({"train/er", "val/er", "er_rows"} <= set(r) for r in rows)
    assert "phase1/conv_rate" in rows[1] and "phase1/cvfp_loss" in rows[1] and "phase1/div_loss" in rows[1]
    horizon = _summary(study_out, "no_phase1")["phase1"]["memory_horizon"]
    assert len(horizon) == 16 and horizon[-1] < horizon[0]  # a random ContextBlock forgets its start state


def test_untied_head_copy_starts_from_the_embedding(study_out: Path, tiny_model_dir: Path) -> None:
    (run_dir,) = (study_out / "runs").glob("frozen_in_untied_head__s0__*")
    best, header = read_weights(run_dir / "checkpoints" / "best.safetensors")
    from transformers import AutoModel

    wte = AutoModel.from_pretrained(tiny_model_dir).get_input_embeddings().weight.detach()
    assert header["referenced"]["wte.weight"] == hash_tensor(wte)  # input embedding frozen (not stored again)
    assert not torch.equal(best["head.weight"], wte)         # head copied, then trained
    assert torch.allclose(best["head.weight"], wte, atol=0.5)
