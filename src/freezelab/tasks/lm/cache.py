"""Build (or reuse) a study's tokenized splits and baseline scores, shared by every run.

Every run of a study resolves to the same data config, so the tokenized splits and the n-gram
baselines are computed once and stored under OUT/cache/, keyed by a hash of everything they depend
on. A file lock makes this safe when several processes (or Ray workers) start at once. The JSON half
records the size and SHA-256 of the arrays; a cache that fails that check (or does not load) is rebuilt
with a warning, never trusted.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from freezelab.config.fields import hash_view
from freezelab.errors import RunFileError
from freezelab.pretrained.hf import LoadedEmbedding
from freezelab.tasks.lm.baselines import score_baselines
from freezelab.tasks.lm.config import LMConfig
from freezelab.tasks.lm.data import LMData, TokenDocs, build_lm_data, load_texts, token_byte_lengths
from freezelab.tracking.files import atomic_write_text, clean_temp_files, file_record, verify_file, write_atomically
from freezelab.utils.hashing import hash_json


def _tokenizer_id(cfg: LMConfig, emb: LoadedEmbedding) -> str:
    if cfg.embedding.source == "random":
        return cfg.embedding.tokenizer or "minilm"
    return cfg.embedding.source


def build(cfg: LMConfig, emb: LoadedEmbedding) -> LMData:
    """Load texts, split by document and tokenize with the embedding's own tokenizer."""
    d = cfg.data
    reserve = d.n_val_docs + d.n_test_docs
    streamed = d.source == "hf_dataset"
    texts = load_texts(d.source, path=d.path, hf_name=d.hf_name, hf_split=d.hf_split, hf_config=d.hf_config,
                       max_docs=(reserve + d.max_train_docs) if streamed and d.max_train_docs else None,
                       doc_mode=d.doc_mode, text=d.text, hf_row_offset=d.hf_row_offset, hf_revision=d.hf_revision,
                       hf_data_files=d.hf_data_files)
    data = build_lm_data(texts, emb.tokenizer, n_val_docs=d.n_val_docs, n_test_docs=d.n_test_docs,
                         max_train_docs=d.max_train_docs, max_tokens_per_doc=d.max_tokens_per_doc,
                         overflow=d.overflow, data_seed=d.data_seed, add_eos=d.add_eos, shuffle_docs=not streamed,
                         split=d.split)
    if data.vocab_size > emb.vocab_size:
        raise ValueError(f"tokenizer vocabulary {data.vocab_size} exceeds the embedding's {emb.vocab_size} rows")
    return data


def _save(path: Path, data: LMData, baselines: dict[str, Any] | None) -> None:
    arrays = {}
    for split in ("train", "val", "test"):
        docs: TokenDocs = getattr(data, split)
        arrays[f"{split}_ids"], arrays[f"{split}_offsets"] = docs.ids, docs.offsets
    if data.token_bytes is not None:
        arrays["token_bytes"] = data.token_bytes
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, **arrays)
    write_atomically(path.with_suffix(".npz"), write)
    meta = {"npz": file_record(path.with_suffix(".npz")), "vocab_size": data.vocab_size,
            "data_hash": data.data_hash, "split_hash": data.split_hash,
            "dropped": list(data.dropped), "baselines": baselines,
            "names": {s: list(getattr(data, s).doc_names) for s in ("train", "val", "test")}}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta))


def _load(path: Path) -> tuple[LMData, dict[str, Any] | None]:
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    verify_file(path.with_suffix(".npz"), meta["npz"], fix="")
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    splits = {s: TokenDocs(arrays[f"{s}_ids"], arrays[f"{s}_offsets"], tuple(meta["names"][s]))
              for s in ("train", "val", "test")}
    tb = arrays.get("token_bytes")
    return LMData(**splits, vocab_size=meta["vocab_size"], data_hash=meta["data_hash"],
                  split_hash=meta["split_hash"], token_bytes=tb, dropped=tuple(meta["dropped"])), meta["baselines"]


def load_lm_data(cfg: LMConfig, emb: LoadedEmbedding, cache_dir: Path | None, *,
                 log: Callable[[str], None] = print) -> tuple[LMData, dict[str, Any] | None]:
    """The study's splits and baseline scores, from the cache when present.

    Returns:
        (data, baselines) where baselines is None when ``cfg.baselines`` is off.
    """
    data_keys = hash_view(LMConfig, {"data": cfg.data.model_dump()})["data"]  # a new key at its default: same cache
    stream = cfg.context.reset == "stream"  # baselines on the model's targets (a new key only when it applies)
    key = hash_json({"data": data_keys, "tokenizer": _tokenizer_id(cfg, emb), "vocab": len(emb.tokenizer),
                     "baselines": cfg.baselines, "version": 2, **({"stream_targets": True} if stream else {})})[:16]

    def compute() -> tuple[LMData, dict[str, Any] | None]:
        data = build(cfg, emb)
        if data.token_bytes is None:
            data = LMData(**{**data.__dict__, "token_bytes": token_byte_lengths(emb.tokenizer)})
        baselines = (score_baselines(data.train, data.val, data.test, emb.vocab_size,
                                     token_bytes=data.token_bytes, stream=stream) if cfg.baselines else None)
        return data, baselines

    if cache_dir is None:
        return compute()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"lm-data-{key}"
    with FileLock(str(path) + ".lock"):
        clean_temp_files(cache_dir)  # left by a killed write
        if path.with_suffix(".json").exists() and path.with_suffix(".npz").exists():
            try:
                loaded = _load(path)
                log(f"data from cache {path.name}")
                return loaded
            except (RunFileError, OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
                log(f"warning: data cache {path.with_suffix('.npz')} is damaged or incomplete "
                    f"({type(err).__name__}: {str(err).strip()}); rebuilding it")
        data, baselines = compute()
        _save(path, data, baselines)
        return data, baselines
