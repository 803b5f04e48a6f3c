"""Pretrained loading on models saved locally; a failed load is an error, never random weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from freezelab.errors import PretrainedUnavailableError
from freezelab.pretrained.hf import load_embedding
from freezelab.utils.hashing import hash_tensor


def test_local_model_directory_loads_its_own_table_and_tokenizer(tiny_model_dir: Path) -> None:
    from transformers import AutoModel

    emb = load_embedding(str(tiny_model_dir))
    reference = AutoModel.from_pretrained(tiny_model_dir).get_input_embeddings().weight
    assert torch.equal(emb.weight, reference)  # exactly what Hugging Face loads
    assert emb.sha256 == hash_tensor(reference)
    assert (emb.vocab_size, emb.dim) == (30522, 16)
    assert emb.tokenizer("hello world")["input_ids"][1:-1] == [7592, 2088]  # WordPiece ids of MiniLM


def test_bundled_minilm_is_the_real_pretrained_table() -> None:
    emb = load_embedding("minilm")
    assert (emb.vocab_size, emb.dim) == (30522, 384)
    # a trained table: rows are not i.i.d. N(0, 0.02²) init — similar words are close
    vec = {w: emb.weight[emb.tokenizer.convert_tokens_to_ids(w)] for w in ("king", "queen", "banana")}
    cos = torch.nn.functional.cosine_similarity
    assert cos(vec["king"], vec["queen"], dim=0) > cos(vec["king"], vec["banana"], dim=0)


def test_missing_hub_model_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailableError, match="'no-such-org/no-such-model' .*HF_HUB_OFFLINE=1"):
        load_embedding("no-such-org/no-such-model")


def test_incomplete_local_folder_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PretrainedUnavailableError, match="not a complete Hugging Face model directory"):
        load_embedding(str(tmp_path))


def test_random_table_must_cover_the_tokenizer() -> None:
    with pytest.raises(ValueError, match="smaller than the tokenizer's vocabulary"):
        load_embedding("random", vocab_size=100, dim=8)
    emb = load_embedding("random", vocab_size=30522, dim=8)
    assert emb.weight is None and emb.sha256 is None
