"""Backbones over the joint token sequence: Hugging Face encoders fed with embeddings, or ablations.

Every backbone maps (B, T, d) → (B, T, d) and exposes ``blocks`` (one named group ``encoder.{i}``
each) and ``norm_modules`` (group ``encoder.norm``: the final norm, any embedding LayerNorm and the
stack-level dropouts, so a frozen backbone runs with dropout off). Inputs arrive as embeddings, so the
LM's token-embedding table is **removed** (protocol §1.4), as are BERT's pooler and, unless
``keep_positions``, the absolute position (and token-type) tables; ``removed`` records their sizes.

Families: T5 encoders (t5, mt5: relative position bias over the token index), BERT-style encoders
(bert, roberta, xlm-roberta; the bundled MiniLM), GPT-2 (causal blocks, as GPT4TS uses them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from freezelab.errors import ConfigError, PretrainedUnavailableError
from freezelab.utils.seeding import derive_seed

T5_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel"}
BERT_TYPES = ("bert", "roberta", "xlm-roberta")
GPT2_TYPES = ("gpt2",)
SUPPORTED = (*T5_CLASSES, *BERT_TYPES, *GPT2_TYPES)


@dataclass
class BackboneInfo:
    """What was built: family, width, blocks, what was removed and the weights' SHA-256."""

    kind: str
    family: str                       # t5 | bert | gpt2 | none | one_attn
    source: str | None
    path: str | None
    hidden_size: int
    num_layers: int
    removed: dict[str, int] = field(default_factory=dict)   # tensor name -> numel (never counted)
    pretrained_hash: str | None = None


class _ZeroPositions(nn.Module):
    """Stands in for GPT-2's ``wpe`` when τ replaces absolute positions: adds nothing."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*position_ids.shape, self.width, device=position_ids.device)


class HFBackbone(nn.Module):
    """A Hugging Face encoder run on ``inputs_embeds`` with its unused tables deleted."""

    def __init__(self, family: str, core: nn.Module, keep_positions: bool, position_offset: int = 0) -> None:
        super().__init__()
        self.family, self.core, self.keep_positions = family, core, keep_positions
        self.position_offset = position_offset     # RoBERTa positions start after the padding index

    @property
    def blocks(self) -> list[nn.Module]:
        if self.family == "t5":
            return list(self.core.block)
        if self.family == "bert":
            return list(self.core.encoder.layer)
        return list(self.core.h)

    @property
    def norm_modules(self) -> list[nn.Module]:
        if self.family == "t5":
            return [self.core.final_layer_norm, self.core.dropout]
        if self.family == "bert":
            return [self.core.embeddings]          # LayerNorm, dropout (and kept position tables)
        return [self.core.ln_f, self.core.drop] + ([self.core.wpe] if self.keep_positions else [])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, d) → (B, T, d)."""
        if self.family == "t5":
            return self.core(inputs_embeds=h).last_hidden_state
        if self.family == "gpt2":
            return self.core(inputs_embeds=h, use_cache=False).last_hidden_state
        emb = self.core.embeddings
        if self.keep_positions:
            pos = torch.arange(h.shape[1], device=h.device) + self.position_offset
            h = h + emb.position_embeddings(pos)[None] + emb.token_type_embeddings.weight[0]
        h = emb.dropout(emb.LayerNorm(h))
        for layer in self.core.encoder.layer:
            out = layer(h)                          # bidirectional: no mask, no causal flag
            h = out[0] if isinstance(out, tuple) else out
        return h


class OneAttention(nn.Module):
    """The LLM2Attn ablation (Tan et al. 2024): h + MHA(h) then LayerNorm; random init."""

    family = "one_attn"

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"backbone.one_attn_heads={heads} does not divide the width d={width}")
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)

    @property
    def blocks(self) -> list[nn.Module]:
        return [self.attn]

    @property
    def norm_modules(self) -> list[nn.Module]:
        return [self.norm]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(h, h, h, need_weights=False)   # (B, T, d), full bidirectional attention
        return self.norm(h + a)


class NoBackbone(nn.Module):
    """The w/o-LLM ablation: identity."""

    family = "none"
    blocks: list[nn.Module] = []
    norm_modules: list[nn.Module] = []

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h


# ----------------------------------------------------------------------------- loading
def load_hf_config(source: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The Hugging Face config of ``source`` (alias, hub id or local folder).

    Raises:
        PretrainedUnavailableError: the config cannot be read (missing folder, offline, bad id).
        ConfigError: the model type is not a supported backbone family.
    """
    from transformers import AutoConfig

    from freezelab.pretrained.hf import _explain, _quiet, resolve_source

    _quiet()
    try:
        hf = AutoConfig.from_pretrained(resolve_source(source), revision=revision, trust_remote_code=trust_remote_code)
    except Exception as err:  # OSError, ValueError, hub errors
        raise _explain(source, err, "backbone") from err
    if hf.model_type not in SUPPORTED:
        raise ConfigError(f"backbone.source={source!r} is a {hf.model_type!r} model; supported families: "
                          f"{', '.join(SUPPORTED)}. Use a T5, BERT-style or GPT-2 checkpoint.")
    return hf


def hidden_size(hf: Any) -> int:
    """Width d of a Hugging Face config."""
    return int(getattr(hf, "d_model", None) or getattr(hf, "hidden_size", None) or hf.n_embd)


def _family(model_type: str) -> str:
    return "t5" if model_type in T5_CLASSES else "bert" if model_type in BERT_TYPES else "gpt2"


def _model_class(model_type: str) -> Any:
    import transformers

    if model_type in T5_CLASSES:
        return getattr(transformers, T5_CLASSES[model_type])
    return transformers.AutoModel


def _strip(family: str, model: nn.Module, keep_positions: bool) -> tuple[nn.Module, dict[str, int], int]:
    """Delete the tables that inputs-as-embeddings never reach; returns (core, removed numel, pos offset)."""
    removed: dict[str, int] = {}

    def drop(owner: nn.Module, attr: str, name: str, replacement: nn.Module | None = None) -> None:
        mod = getattr(owner, attr, None)
        if mod is not None:
            removed[name] = sum(p.numel() for p in mod.parameters())
            setattr(owner, attr, replacement)

    if family == "t5":
        tied = model.encoder.embed_tokens is not None and model.encoder.embed_tokens.weight is model.shared.weight
        drop(model, "shared", "shared.weight")
        if tied:                                  # the same tensor as shared: counted once, above
            model.encoder.embed_tokens = None
        else:
            drop(model.encoder, "embed_tokens", "encoder.embed_tokens.weight")
        return model.encoder, removed, 0
    if family == "gpt2":
        drop(model, "wte", "wte.weight")
        if not keep_positions:
            drop(model, "wpe", "wpe.weight", _ZeroPositions(model.config.n_embd))
        return model, removed, 0
    drop(model.embeddings, "word_embeddings", "embeddings.word_embeddings.weight")
    if getattr(model, "pooler", None) is not None:
        drop(model, "pooler", "pooler")
    if not keep_positions:
        drop(model.embeddings, "position_embeddings", "embeddings.position_embeddings.weight")
        drop(model.embeddings, "token_type_embeddings", "embeddings.token_type_embeddings.weight")
    offset = int(model.config.pad_token_id) + 1 if model.config.model_type != "bert" else 0
    return model, removed, offset


def _truncate(family: str, hf: Any, k: int | None) -> None:
    """Keep only the first k blocks in a config (random init / meta builds)."""
    if k is None:
        return
    attr = "num_layers" if family == "t5" else "num_hidden_layers" if family == "bert" else "n_layer"
    if k > getattr(hf, attr):
        raise ConfigError(f"backbone.num_layers={k} exceeds the model's {getattr(hf, attr)} blocks")
    setattr(hf, attr, k)


def build_backbone(cfg: Any, *, seed: int, device: str | torch.device = "cpu") -> tuple[nn.Module, BackboneInfo]:
    """Build the backbone of a resolved ``BackboneConfig``.

    Args:
        cfg: ``TSConfig.backbone``.
        seed: run seed; random_init and one_attn draw their weights from (seed, "init", "backbone").
        device: "meta" builds the architecture without weights (parameter accounting).

    Returns:
        (module, info). The module has ``blocks``, ``norm_modules`` and maps (B, T, d) → (B, T, d).

    Raises:
        PretrainedUnavailableError: a pretrained model cannot be loaded (never replaced by random weights).
        ConfigError: unsupported model type, too many layers, heads not dividing d.
    """
    from freezelab.pretrained.hf import _explain, resolve_source
    from freezelab.utils.hashing import hash_json, hash_tensor

    hf = load_hf_config(cfg.source, cfg.revision, cfg.trust_remote_code)
    width, family = hidden_size(hf), _family(hf.model_type)
    path = resolve_source(cfg.source)
    if cfg.kind in ("none", "one_attn"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "init", "backbone") % 2**63)
            with torch.device(device):
                module = NoBackbone() if cfg.kind == "none" else OneAttention(width, cfg.one_attn_heads)
        return module, BackboneInfo(cfg.kind, module.family, cfg.source, path, width, len(module.blocks))
    cls = _model_class(hf.model_type)
    if cfg.kind == "pretrained" and str(device) != "meta":
        try:
            model, loading = cls.from_pretrained(path, revision=cfg.revision, dtype=torch.float32,
                                                 output_loading_info=True, trust_remote_code=cfg.trust_remote_code)
        except Exception as err:
            raise _explain(cfg.source, err, "backbone") from err
        missing = set(loading.get("missing_keys") or ())
        if cfg.num_layers is not None:
            blocks = model.encoder.block if family == "t5" else model.encoder.layer if family == "bert" else model.h
            if cfg.num_layers > len(blocks):
                raise ConfigError(f"backbone.num_layers={cfg.num_layers} exceeds the model's {len(blocks)} blocks")
            del blocks[cfg.num_layers:]
    else:  # random_init (the backbone's own initialiser, seeded) or a meta build
        _truncate(family, hf, cfg.num_layers)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "init", "backbone") % 2**63)
            with torch.device(device):
                model = (cls(hf) if hf.model_type in T5_CLASSES
                         else cls.from_config(hf, trust_remote_code=cfg.trust_remote_code))
    core, removed, offset = _strip(family, model, cfg.keep_positions)
    if cfg.kind == "pretrained" and str(device) != "meta":
        unloaded = sorted(n for n, _ in model.named_parameters() if n in missing)
        if unloaded:  # from_pretrained would have initialised them randomly: refuse (never a silent fallback)
            raise PretrainedUnavailableError(
                f"Pretrained model {cfg.source!r}: {len(unloaded)} backbone tensor(s) are missing from the "
                f"checkpoint and would be random, e.g. {unloaded[:3]}. Point backbone.source at a complete model.")
    module = HFBackbone(family, core, cfg.keep_positions, offset)
    info = BackboneInfo(cfg.kind, family, cfg.source, path, width, len(module.blocks), removed)
    if cfg.kind == "pretrained" and str(device) != "meta":
        info.pretrained_hash = hash_json({n: hash_tensor(t) for n, t in module.state_dict().items()})
    return module, info
