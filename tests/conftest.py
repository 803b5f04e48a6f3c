"""Shared fixtures: a tiny local Hugging Face model (MiniLM's real tokenizer, 16-dim embedding), a tiny
text corpus, and a writer for small study files. Nothing here touches the network."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("the cat sat on a mat while the dog ran to the park and a bird sang in the tall tree "
         "near the river where children played with a red ball every sunny morning").split()


@pytest.fixture
def one_thread():
    """Tiny tensors: a second intra-op thread only adds contention on a shared 2-core box."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT-style model folder saved locally: real MiniLM tokenizer, random 16-dim embedding."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from freezelab.pretrained.hf import resolve_source

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(resolve_source("minilm"))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=64))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 small English-like documents, one per file."""
    path = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for i in range(16):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 70)))
        (path / f"doc{i:02d}.txt").write_text(text.capitalize() + ".\n", encoding="utf-8")
    return path


def tiny_base(model_dir: Path, corpus: Path) -> dict:
    """A base config that trains in about a second per run."""
    return {
        "data": {"source": "text_files", "path": str(corpus / "*.txt"), "n_val_docs": 3, "n_test_docs": 3,
                 "max_tokens_per_doc": 48},
        "embedding": {"source": str(model_dir), "freeze": True},
        "model": {"num_layers": 2},
        "phase1": {"max_iterations": 3, "min_iterations": 2, "er_rows": 32, "chunk_rows": 256},
        "phase2": {"max_epochs": 3, "batch_size": 32, "patience": 2},
        "runtime": {"threads": 1},
    }


@pytest.fixture
def write_study(tmp_path: Path, tiny_model_dir: Path, tiny_corpus: Path):
    """Write a study YAML with the tiny base; returns its path."""
    def write(arms: dict, *, seeds: list[int] | None = None, base: dict | None = None, name: str = "tiny",
              **extra) -> Path:
        study = {"name": name, "task": "lm", "seeds": seeds or [0], "output_dir": str(tmp_path / "out"),
                 "base": base or tiny_base(tiny_model_dir, tiny_corpus), "arms": arms, **extra}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
        return path
    return write
