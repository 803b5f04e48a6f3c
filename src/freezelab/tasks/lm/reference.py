"""Reference language models on the CVFP arm's trainable budget (issue 11, cvfp-lm.md §10).

A reference arm asks whether the CVFP architecture itself is competitive: the same frozen tied embedding
(wte, embed_norm, tokenizer, tied head), the same data, Phase-2 optimiser, early stopping and evaluation,
but the ContextBlock + TokenBlock replaced by a well-kept sequence model with about the same number of
trainable parameters, and no Phase 1:

    x_t = LN_e(wte[id_t])                                  the CVFP model's embedding path, unchanged
    h   = LN(W_out core(x_1..x_t))                         core: GPT-2 blocks (transformers) or torch.nn.GRU
    z_t = h wteᵀ                                           tied head, raw wte, no bias

``gpt2``: ``transformers.GPT2Model`` with a small config fed through ``inputs_embeds`` (learned positions,
causal attention, no dropout), between a d_e → width and a width → d_e projection. ``gru``: a
``torch.nn.GRU`` of the given width, then the width → d_e projection. Every document starts from scratch
(per-document reset: positions restart at 0 and the GRU state at 0), so a document's predictions never
depend on another document. The width is picked by ``match_width`` so that the core's parameter count is
the closest to the CVFP TokenBlock's (what the CVFP arm trains besides the shared embedding pieces).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from freezelab.errors import ConfigError
from freezelab.utils.meta import on_meta

ReferenceKind = Literal["gpt2", "gru"]


class GPT2Core(nn.Module):
    """d_e → width → ``GPT2Model`` blocks (inputs_embeds, learned positions) → width → d_e, LN."""

    def __init__(self, embed_dim: int, width: int, num_layers: int, num_heads: int, max_positions: int) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        if width % num_heads:
            raise ConfigError(f"GPT-2 reference width {width} is not a multiple of model.reference_heads="
                              f"{num_heads}. Pick a width divisible by num_heads (or leave width null).")
        config = GPT2Config(vocab_size=1, n_positions=max_positions, n_embd=width, n_layer=num_layers,
                            n_head=num_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            bos_token_id=None, eos_token_id=None)
        self.proj_in = nn.Linear(embed_dim, width)
        self.gpt2 = GPT2Model(config)
        self.gpt2.wte = nn.Identity()  # token ids never reach it: the frozen wte feeds inputs_embeds
        self.proj_out = nn.Linear(width, embed_dim)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_e) right-padded documents -> (B, T, d_e); causal, so padding never reaches a real token."""
        h = self.gpt2(inputs_embeds=self.proj_in(x), use_cache=False).last_hidden_state  # (B, T, width)
        return self.norm(self.proj_out(h))


class GRUCore(nn.Module):
    """``torch.nn.GRU`` (d_e → width, num_layers) → width → d_e, LN."""

    def __init__(self, embed_dim: int, width: int, num_layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(embed_dim, width, num_layers=num_layers, batch_first=True)
        self.proj_out = nn.Linear(width, embed_dim)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_e) right-padded documents -> (B, T, d_e); the state starts at 0 in every row."""
        h, _ = self.gru(x)  # (B, T, width)
        return self.norm(self.proj_out(h))


def build_core(kind: ReferenceKind, *, embed_dim: int, width: int, num_layers: int, num_heads: int,
               max_positions: int) -> nn.Module:
    """The sequence model of a reference arm (initialised by its library, from torch's global RNG)."""
    if kind == "gpt2":
        return GPT2Core(embed_dim, width, num_layers, num_heads, max_positions)
    return GRUCore(embed_dim, width, num_layers)


@functools.lru_cache(maxsize=256)
def core_params(kind: ReferenceKind, *, embed_dim: int, width: int, num_layers: int, num_heads: int,
                max_positions: int) -> int:
    """Parameter count of a core, built on the meta device (nothing allocated)."""
    with on_meta():
        core = build_core(kind, embed_dim=embed_dim, width=width, num_layers=num_layers, num_heads=num_heads,
                          max_positions=max_positions)
    return sum(p.numel() for p in core.parameters())


@functools.lru_cache(maxsize=32)
def match_width(kind: ReferenceKind, target: int, *, embed_dim: int, num_layers: int, num_heads: int,
                max_positions: int) -> int:
    """The width whose core has the parameter count closest to ``target`` (multiples of num_heads for
    GPT-2, any for the GRU), by bisection: the count grows with the width."""
    step = num_heads if kind == "gpt2" else 1
    count: Callable[[int], int] = lambda w: core_params(  # noqa: E731
        kind, embed_dim=embed_dim, width=w, num_layers=num_layers, num_heads=num_heads, max_positions=max_positions)
    lo, hi = 1, 1
    while count(hi * step) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid * step) < target else (lo, mid)
    return min((lo * step, hi * step), key=lambda w: abs(count(w) - target))


class CoreOutput(nn.Module):
    """The reference model's stand-in for the CVFP TokenBlock in the Phase-2 loop: ``token_inputs`` already ran
    the core, so (contexts, h) -> h. No parameters."""

    def forward(self, contexts: Tensor, h: Tensor) -> Tensor:
        """(B, ...) ignored, (B, d_e) -> (B, d_e)."""
        return h


class ReferenceLM(nn.Module):
    """The shared embedding path and tied head around a reference core (see the module docstring).

    It offers the CVFP model's Phase-2 interface: ``token_inputs(ids, offsets, positions)`` returns the
    core's output h at those positions (running each document they lie in from its start),
    ``token_block(contexts, h)`` passes it on and ``forward(contexts, h)`` gives the logits (the contexts are
    ignored: there are none).

    Args:
        kind: ``gpt2`` or ``gru``.
        vocab_size, embed_dim: V and d_e of the shared embedding.
        width, num_layers, num_heads: the core's size (num_heads: GPT-2 only).
        max_positions: the longest document (GPT-2's learned position table).
        embed_init_std: random wte initialisation (used until a pretrained table is loaded).
        generator: draws wte, then a seed for the core's library initialisation.
    """

    def __init__(self, *, kind: ReferenceKind, vocab_size: int, embed_dim: int, width: int, num_layers: int,
                 num_heads: int, max_positions: int, embed_init_std: float = 0.02,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.vocab_size, self.embed_dim, self.width, self.num_layers = vocab_size, embed_dim, width, num_layers
        self.max_positions = max_positions
        self.head = None  # tied only
        self.wte = nn.Embedding(vocab_size, embed_dim)
        nn.init.normal_(self.wte.weight, 0.0, embed_init_std, generator=generator)
        self.embed_norm = nn.LayerNorm(embed_dim, eps=1e-5)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)  # the libraries initialise from the global RNG: seed it, then restore it
            self.core = build_core(kind, embed_dim=embed_dim, width=width, num_layers=num_layers,
                                   num_heads=num_heads, max_positions=max_positions)
        self.token_block = CoreOutput()

    def embed(self, ids: Tensor) -> Tensor:
        """(...,) int64 -> (..., d_e): LN_e(wte[ids]), as in the CVFP model."""
        return self.embed_norm(self.wte(ids))

    def token_inputs(self, ids: Tensor, offsets: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        """The core's output at flat ``positions``: (B, d_e).

        Each document holding one of the positions runs from its first token up to the last position asked
        for in it, right-padded into one batch; the outputs are gathered back in the order of ``positions``.
        """
        device = ids.device
        if offsets is None:
            offsets = torch.tensor([0, ids.shape[0]], device=device)
        offsets = torch.as_tensor(offsets, dtype=torch.int64, device=device)
        if positions is None:
            positions = torch.arange(ids.shape[0], device=device)
        doc = torch.searchsorted(offsets, positions, right=True) - 1             # (B,)
        docs, row = torch.unique(doc, return_inverse=True)                      # (D,), (B,)
        start = offsets[docs]                                                   # (D,)
        last = torch.zeros_like(docs).scatter_reduce(0, row, positions - offsets[doc], "amax")  # (D,)
        length = int(last.max()) + 1
        if self.kind == "gpt2" and length > self.max_positions:
            raise ConfigError(f"a document has {length} tokens, the {self.kind} reference was built for "
                              f"{self.max_positions} positions: set data.max_tokens_per_doc (the same for every arm).")
        grid = start[:, None] + torch.arange(length, device=device)            # (D, T)
        valid = torch.arange(length, device=device)[None, :] <= last[:, None]   # (D, T)
        tokens = ids[torch.where(valid, grid, start[:, None])]                  # (D, T), padding repeats token 0
        h = self.core(self.embed(tokens))                                       # (D, T, d_e)
        return h[row, positions - offsets[doc]]                                 # (B, d_e)

    @property
    def head_weight(self) -> Tensor:
        """(V, d_e) the output projection: wte.weight itself (tied)."""
        return self.wte.weight

    def logits(self, h: Tensor) -> Tensor:
        """(B, d_e) -> (B, V): h @ wteᵀ on the raw wte, no bias."""
        return nn.functional.linear(h, self.wte.weight)

    def forward(self, contexts: Tensor, x: Tensor) -> Tensor:
        """(B, ...) ignored, (B, d_e) core outputs -> (B, V) logits."""
        return self.logits(self.token_block(contexts, x))

    @torch.no_grad()
    def load_embedding_(self, weight: Tensor) -> None:
        """Copy a pretrained (V, d_e) table into wte.

        Raises:
            ConfigError: the table's shape does not match (vocab_size, embed_dim).
        """
        if tuple(weight.shape) != (self.vocab_size, self.embed_dim):
            raise ConfigError(f"Pretrained embedding has shape {tuple(weight.shape)}, the reference model "
                              f"expects {(self.vocab_size, self.embed_dim)}.")
        self.wte.weight.copy_(weight)
