"""Time-series fixtures: tiny T5 / BERT / GPT-2 backbones saved locally, a tiny synthetic-bar config.

Import the fixtures into a test module (``from tests.ts_fixtures import tiny_backbones``); nothing here
touches the network.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

TINY_WIDTH = 16


def save_tiny(family: str, path: Path, *, seed: int = 0, layers: int = 2, dropout: float | None = None) -> Path:
    """Save a tiny random model of one family with ``save_pretrained`` (T5 as the full seq2seq model, as
    hub checkpoints are) and return its folder. ``dropout``: T5's dropout_rate (None: its default, 0.1)."""
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    if family == "t5":
        model = T5ForConditionalGeneration(T5Config(vocab_size=96, d_model=TINY_WIDTH, d_ff=32, d_kv=8, num_heads=2,
                                                    num_layers=layers, num_decoder_layers=1,
                                                    **({} if dropout is None else {"dropout_rate": dropout})))
    elif family == "bert":
        model = BertModel(BertConfig(vocab_size=96, hidden_size=TINY_WIDTH, num_hidden_layers=layers,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
    else:
        model = GPT2Model(GPT2Config(vocab_size=96, n_embd=TINY_WIDTH, n_layer=layers, n_head=2, n_positions=64))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_backbones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"t5": dir, "bert": dir, "gpt2": dir}: 2-block, 16-wide models saved locally."""
    root = tmp_path_factory.mktemp("ts-backbones")
    return {f: save_tiny(f, root / f) for f in ("t5", "bert", "gpt2")}


def tiny_ts_base(backbone_dir: Path, **over: Any) -> dict[str, Any]:
    """A base config on synthetic hourly bars that trains in about a second per run.

    Windows h1 16 / h4 8 / d 4 with patch lengths 4 / 4 / 2 (8 tokens), batches of 16, 4 steps per epoch.
    ``over``: dotted-key overrides, e.g. ``{"backbone.train": "finetune"}``.
    """
    base: dict[str, Any] = {
        "data": {"source": "synthetic", "synthetic_bars": 2500, "base_tf": "h1", "timeframes": ["h1", "h4", "d"]},
        "windows": {"context": {"h1": 16, "h4": 8, "d": 4}, "max_eval_windows": 48},
        "model": {"patch_len": {"h1": 4, "h4": 4, "d": 2}, "time_frequencies": 4},
        "backbone": {"source": str(backbone_dir)},
        "optim": {"warmup_steps": 2, "lr": 1e-3},
        "train": {"max_epochs": 2, "batch_size": 16, "steps_per_epoch": 4, "eval_batch_size": 64, "patience": 5},
        "runtime": {"precision": "fp32", "threads": 1},
    }
    from freezelab.config.load import set_dotted

    base = copy.deepcopy(base)
    for key, value in over.items():
        set_dotted(base, key, value)
    return base


def write_ts_study(path: Path, base: dict[str, Any], arms: dict[str, Any], *, seeds: list[int] | None = None,
                   name: str = "tiny-ts") -> Path:
    """Write a time-series study file; returns its path."""
    study = {"name": name, "task": "timeseries", "seeds": seeds or [0], "output_dir": str(path.parent / "out"),
             "base": base, "arms": arms}
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path
