"""The E案 CVFP language model: a recurrent ContextBlock plus a layer-wise TokenBlock.

Spec: shared/spec/cvfp-lm.md §1-§2. One model, top to bottom:

    x_t   = LN_e(wte[id_t])                                  embedding, no positions
    x̃_t   = [x_{t-n+1}; ...; x_t]                           (n * d_e), zeros before a document start
    c_l   = LN^c_l(c_{l-1} + ReLU(W_l [c_{l-1}; x̃_t]))      ContextLayer l, c_0 = c_L(t-1)
    h_l   = LN^h_l(last_{d_e}(h_{l-1}) + ReLU(U_l [c_l; h_{l-1}]))   TokenLayer l, h_0 = x̃_t
    z_t   = h_L wteᵀ (tied) or head(h_L) (untied)

The ContextBlock is trained by Phase 1 (``phase1.py``) and then frozen; its outputs are inputs
to the TokenBlock, never a gradient path. Running the recurrence over a corpus lives in
``recurrence.py``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from freezelab.errors import ConfigError

HeadInit = Literal["copy", "zeros", "normal"]


def _init_linear_(linear: nn.Linear, std: float, bias_std: float, generator: torch.Generator | None) -> None:
    """Spec §1 initialisation: W ~ N(0, std²), b ~ N(0, bias_std²)."""
    nn.init.normal_(linear.weight, 0.0, std, generator=generator)
    if linear.bias is not None:
        nn.init.normal_(linear.bias, 0.0, bias_std, generator=generator)


def _init_layer_norm_(norm: nn.LayerNorm) -> None:
    """LN: γ = 1, β = 0."""
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)


def _init_block_(block: nn.Module, std: float, bias_std: float, generator: torch.Generator | None) -> None:
    """Initialise every Linear and LayerNorm of a block, in module order."""
    for module in block.modules():
        if isinstance(module, nn.Linear):
            _init_linear_(module, std, bias_std, generator)
        elif isinstance(module, nn.LayerNorm):
            _init_layer_norm_(module)


class ContextLayer(nn.Module):
    """c_l = LN(c_{l-1} + ReLU(W [c_{l-1}; x̃] + b)): one Linear, no hidden expansion, post-LN."""

    def __init__(self, context_dim: int, input_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(context_dim + input_dim, context_dim)
        self.norm = nn.LayerNorm(context_dim, eps=1e-5)

    def forward(self, c: Tensor, x: Tensor) -> Tensor:
        """(..., d_c), (..., n*d_e) -> (..., d_c)."""
        return self.norm(c + F.relu(self.fc(torch.cat([c, x], dim=-1))))


class ContextBlock(nn.Module):
    """L ContextLayers; every layer reads the same token input x̃_t.

    Args:
        context_dim: d_c.
        input_dim: n * d_e, the width of x̃_t.
        num_layers: L.
        init_std, bias_std: spec §1 Linear initialisation.
        generator: drives the initialisation (None: torch's global RNG).
    """

    def __init__(
        self,
        context_dim: int,
        input_dim: int,
        num_layers: int,
        *,
        init_std: float = 0.1,
        bias_std: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.context_dim = context_dim
        self.input_dim = input_dim
        self.num_layers = num_layers
        self.layers = nn.ModuleList(ContextLayer(context_dim, input_dim) for _ in range(num_layers))
        self.reset_parameters(init_std=init_std, bias_std=bias_std, generator=generator)

    def reset_parameters(
        self, *, init_std: float = 0.1, bias_std: float = 0.01, generator: torch.Generator | None = None
    ) -> None:
        """Re-draw every weight (layer order, weight before bias) from ``generator``."""
        _init_block_(self, init_std, bias_std, generator)

    def forward(self, c_prev: Tensor, x: Tensor) -> Tensor:
        """One recurrence step for a batch of tokens.

        Args:
            c_prev: (B, d_c) the previous token's final context (zeros at a start).
            x: (B, n*d_e) the token inputs x̃_t.

        Returns:
            (B, L, d_c) every layer's output; ``[:, -1]`` is the context carried to t+1.
        """
        outputs = []
        c = c_prev
        for layer in self.layers:
            c = layer(c, x)  # (B, d_c)
            outputs.append(c)
        return torch.stack(outputs, dim=-2)  # (B, L, d_c)


class TokenLayer(nn.Module):
    """h_l = LN(last_{d_e}(h_{l-1}) + ReLU(U [c_l; h_{l-1}] + e))."""

    def __init__(self, context_dim: int, in_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.fc = nn.Linear(context_dim + in_dim, embed_dim)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-5)

    def forward(self, c: Tensor, h: Tensor) -> Tensor:
        """(..., d_c), (..., in_dim) -> (..., d_e)."""
        # For layer 1 with n > 1, the last d_e of x̃_t is the current token x_t.
        residual = h[..., -self.embed_dim :]
        return self.norm(residual + F.relu(self.fc(torch.cat([c, h], dim=-1))))


class TokenBlock(nn.Module):
    """L TokenLayers, E案 layer-wise wiring: layer l reads ContextLayer l's output.

    Widths (spec §1 fix): layer 1 takes d_c + n*d_e, layers >= 2 take d_c + d_e. The original
    gave every layer d_c + n*d_e, which only runs for n = 1 (see ``original_block_params``).
    """

    def __init__(
        self,
        embed_dim: int,
        context_dim: int,
        num_layers: int,
        num_input_tokens: int = 1,
        *,
        init_std: float = 0.1,
        bias_std: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_layers = num_layers
        widths = [num_input_tokens * embed_dim] + [embed_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(TokenLayer(context_dim, w, embed_dim) for w in widths)
        self.reset_parameters(init_std=init_std, bias_std=bias_std, generator=generator)

    def reset_parameters(
        self, *, init_std: float = 0.1, bias_std: float = 0.01, generator: torch.Generator | None = None
    ) -> None:
        """Re-draw every weight (layer order, weight before bias) from ``generator``."""
        _init_block_(self, init_std, bias_std, generator)

    def forward(self, contexts: Tensor, x: Tensor) -> Tensor:
        """Token path for a batch of positions.

        Args:
            contexts: (B, L, d_c) ContextLayer l's output for the current token (inputs only).
            x: (B, n*d_e) the token inputs x̃_t.

        Returns:
            (B, d_e) h_L.
        """
        if contexts.shape[-2] != self.num_layers:
            raise ValueError(f"contexts has {contexts.shape[-2]} layers, TokenBlock has {self.num_layers}")
        h = x
        for layer_idx, layer in enumerate(self.layers):
            h = layer(contexts[..., layer_idx, :], h)  # (B, d_e)
        return h


def original_block_params(
    out_dim: int, context_dim: int, embed_dim: int, num_input_tokens: int, num_layers: int
) -> int:
    """Parameter count of one block with the original shapes (spec §2).

    Every layer has out_dim * (d_c + n*d_e) + 3 * out_dim parameters. For the TokenBlock with
    n >= 2 these shapes cannot run (layers >= 2 receive a d_e-wide h), so this is arithmetic
    only: it reproduces the report's 10,630,656 for n = 2, d = 768, L = 6.
    """
    return num_layers * (out_dim * (context_dim + num_input_tokens * embed_dim) + 3 * out_dim)


class CVFPModel(nn.Module):
    """Embedding + ContextBlock + TokenBlock + (tied or untied) head.

    Args:
        vocab_size: V.
        embed_dim: d_e.
        context_dim: d_c.
        num_layers: L, the same for both blocks.
        num_input_tokens: n, the width of the token window x̃_t.
        tie_head: logits = h wteᵀ (raw wte, no LN, no separate tensor) when True.
        head_bias: untied head has a bias (the original's untied head did).
        head_init: untied head weight: "copy" of wte (re-copied by ``load_embedding_``),
            "zeros" (original), or "normal" N(0, embed_init_std²). A head bias starts at zero.
        init_std, bias_std: block Linear initialisation, spec §1.
        embed_init_std: random wte initialisation (used until a pretrained table is loaded).
        generator: drives all initialisation, in order wte, context_block, token_block, head.

    Raises:
        ConfigError: a tied head with a bias or a non-default ``head_init``.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_dim: int,
        context_dim: int,
        num_layers: int,
        num_input_tokens: int = 1,
        tie_head: bool,
        head_bias: bool = False,
        head_init: HeadInit = "copy",
        init_std: float = 0.1,
        bias_std: float = 0.01,
        embed_init_std: float = 0.02,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if tie_head and (head_bias or head_init != "copy"):
            raise ConfigError(
                f"A tied head has no bias and no own initialisation (head_bias={head_bias}, "
                f"head_init={head_init!r}). Set tie_head=False, or drop head_bias/head_init."
            )
        if head_init not in ("copy", "zeros", "normal"):
            raise ConfigError(f"head_init={head_init!r} is not one of 'copy', 'zeros', 'normal'.")
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.context_dim = context_dim
        self.num_layers = num_layers
        self.num_input_tokens = num_input_tokens
        self.tie_head = tie_head
        self.head_init = head_init

        self.wte = nn.Embedding(vocab_size, embed_dim)
        nn.init.normal_(self.wte.weight, 0.0, embed_init_std, generator=generator)
        self.embed_norm = nn.LayerNorm(embed_dim, eps=1e-5)
        self.context_block = ContextBlock(
            context_dim, num_input_tokens * embed_dim, num_layers,
            init_std=init_std, bias_std=bias_std, generator=generator,
        )  # fmt: skip
        self.token_block = TokenBlock(
            embed_dim, context_dim, num_layers, num_input_tokens,
            init_std=init_std, bias_std=bias_std, generator=generator,
        )  # fmt: skip
        self.head: nn.Linear | None = None
        if not tie_head:
            self.head = nn.Linear(embed_dim, vocab_size, bias=head_bias)
            self._init_head_(generator, embed_init_std)

    def _init_head_(self, generator: torch.Generator | None, std: float) -> None:
        assert self.head is not None
        with torch.no_grad():
            if self.head_init == "copy":
                self.head.weight.copy_(self.wte.weight)
            elif self.head_init == "zeros":
                self.head.weight.zero_()
            else:
                nn.init.normal_(self.head.weight, 0.0, std, generator=generator)
            if self.head.bias is not None:
                self.head.bias.zero_()

    # --- token path -------------------------------------------------------------------------

    def embed(self, ids: Tensor) -> Tensor:
        """(...,) int64 -> (..., d_e): LN_e(wte[ids])."""
        return self.embed_norm(self.wte(ids))

    def token_inputs(self, ids: Tensor, offsets: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        """Token windows x̃_t = [x_{t-n+1}; ...; x_t], zeros before each document's start.

        Args:
            ids: (N,) int64 flat token ids of all documents, concatenated.
            offsets: (n_docs + 1,) document boundaries into ``ids`` (offsets[0] = 0,
                offsets[-1] = N); None treats ``ids`` as one stream.
            positions: (B,) flat positions to build; None builds all N.

        Returns:
            (N or B, n*d_e); for n = 1 just ``embed(ids[positions])``.
        """
        n, device = self.num_input_tokens, ids.device
        if positions is None:
            positions = torch.arange(ids.shape[0], device=device)  # (B,)
        if n == 1:
            return self.embed(ids[positions])
        if offsets is None:
            doc_start = torch.zeros_like(positions)
        else:
            offsets = torch.as_tensor(offsets, dtype=torch.int64, device=device)
            doc_idx = torch.searchsorted(offsets, positions, right=True) - 1  # (B,)
            doc_start = offsets[doc_idx]  # (B,)
        window = positions[:, None] - torch.arange(n - 1, -1, -1, device=device)  # (B, n), oldest first
        valid = window >= doc_start[:, None]  # (B, n)
        x = self.embed(ids[window.clamp(min=0)])  # (B, n, d_e)
        x = x * valid[..., None].to(x.dtype)  # zero vectors before the start
        return x.flatten(-2)  # (B, n*d_e)

    @property
    def head_weight(self) -> Tensor:
        """(V, d_e) the output projection: wte.weight itself when tied (for fused CE)."""
        return self.wte.weight if self.head is None else self.head.weight

    def logits(self, h: Tensor) -> Tensor:
        """(B, d_e) -> (B, V). Tied: h @ wteᵀ on the raw wte, no bias."""
        if self.head is None:
            return F.linear(h, self.wte.weight)
        return self.head(h)

    def forward(self, contexts: Tensor, x: Tensor) -> Tensor:
        """(B, L, d_c) cached contexts, (B, n*d_e) token inputs -> (B, V) logits.

        For chunked / fused cross-entropy call ``token_block`` and use ``head_weight``.
        """
        return self.logits(self.token_block(contexts, x))

    # --- pretrained weights -----------------------------------------------------------------

    @torch.no_grad()
    def load_embedding_(self, weight: Tensor) -> None:
        """Copy a pretrained (V, d_e) table into wte (and into an untied head with head_init=copy).

        Raises:
            ConfigError: the table's shape does not match (vocab_size, embed_dim).
        """
        expected = (self.vocab_size, self.embed_dim)
        if tuple(weight.shape) != expected:
            raise ConfigError(
                f"Pretrained embedding has shape {tuple(weight.shape)}, the model expects {expected} "
                "(vocab_size, embed_dim). Set vocab_size/embed_dim to the pretrained model's values."
            )
        self.wte.weight.copy_(weight)
        if self.head is not None and self.head_init == "copy":
            self.head.weight.copy_(weight)
