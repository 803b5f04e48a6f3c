"""Masked multi-timeframe reconstruction: patch tokens of every TF → one backbone → per-TF heads (spec §4).

For each timeframe f with K_f bars and patch length P_f:

    x_f      (B, K_f, 4+C) normalised OHLC (masked bars hold 0, apply_mask, and their prices are replaced by
                           μ_f here) and C optional channels (model.channels; 0 at masked bars)
    flag_f   (B, K_f)      1 = masked
    token    (B, K_f/P_f, d) = Linear_f(P_f·(5+C) → d)([x_f, flag_f] per patch) + e_tf[f] + τ
    τ        Linear(sin/cos of w_k · log(1 + minutes from the patch close to t)), or a learned
             per-TF patch-index embedding (model.position: patch_index)

The tokens of all TFs are concatenated TF-major (finest first), optionally LayerNorm-ed and scaled,
passed through the backbone (cross-TF attention in every layer), split back and decoded by one head per
TF: Linear(d → P_f·4), the normalised OHLC of every bar of the patch.

Named groups (spec §6.1): ``embed`` (patch, TF-id and time embeddings, input norm), ``encoder.{i}``,
``encoder.norm``, ``head``, ``mask`` (the μ_f vectors).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from freezelab.freeze.param_groups import ParamGroup


class TSReconstructor(nn.Module):
    """Patch embedding per TF, a backbone over the joint sequence, per-TF reconstruction heads.

    Args:
        context: {tf: K_f}, in model order (finest first).
        patch_len: {tf: P_f}; K_f must be a multiple of P_f.
        backbone: a module mapping (B, T, d) → (B, T, d) with ``blocks`` and ``norm_modules``.
        width: d, the backbone's hidden size.
        position: "tau" or "patch_index".
        time_frequencies: number of sinusoid frequencies of τ.
        embed_norm: LayerNorm the summed token embedding.
        embed_scale: multiplier applied after the input norm.
        mask_init_std: init std of μ_f.
        channels: C, extra input channels per bar after the 4 prices (channels.py).
    """

    def __init__(self, context: dict[str, int], patch_len: dict[str, int], backbone: nn.Module, width: int, *,
                 position: str = "tau", time_frequencies: int = 16, embed_norm: bool = True,
                 embed_scale: float = 1.0, mask_init_std: float = 0.02, channels: int = 0) -> None:
        super().__init__()
        self.tfs = list(context)
        self.context, self.patch_len, self.width = dict(context), dict(patch_len), width
        self.n_patches = {f: context[f] // patch_len[f] for f in self.tfs}
        self.position, self.embed_scale, self.channels = position, embed_scale, channels
        self.patch = nn.ModuleDict({f: nn.Linear(patch_len[f] * (5 + channels), width) for f in self.tfs})
        self.tf_embed = nn.Embedding(len(self.tfs), width)
        if position == "tau":
            # Frequencies from 1/4 to 64 rad per unit of log(1 + minutes): periods from ~25 down to ~0.1.
            freqs = torch.exp(torch.linspace(math.log(0.25), math.log(64.0), time_frequencies))
            self.register_buffer("time_freqs", freqs, persistent=False)            # (F,)
            self.time_proj = nn.Linear(2 * time_frequencies, width)
        else:
            self.patch_pos = nn.ParameterDict({f: nn.Parameter(torch.randn(n, width) * 0.02)
                                               for f, n in self.n_patches.items()})
        self.in_norm = nn.LayerNorm(width) if embed_norm else nn.Identity()
        self.backbone = backbone
        self.heads = nn.ModuleDict({f: nn.Linear(width, patch_len[f] * 4) for f in self.tfs})
        self.mask_vec = nn.ParameterDict({f: nn.Parameter(torch.randn(4) * mask_init_std) for f in self.tfs})

    # ------------------------------------------------------------------ groups
    def embed_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.patch, self.tf_embed, self.in_norm]
        mods.append(self.time_proj if self.position == "tau" else self.patch_pos)
        return mods

    def param_groups(self, *, train_norms: bool = False) -> list[ParamGroup]:
        """The named groups, in optimizer order; every parameter in exactly one (flags set by the task).

        Args:
            train_norms: move every LayerNorm inside the backbone blocks into ``encoder.norm`` (frozen_ln).
        """
        blocks, norms = list(self.backbone.blocks), list(self.backbone.norm_modules)
        in_block_norms: list[nn.Module] = []
        if train_norms:
            in_block_norms = [m for b in blocks for m in b.modules() if is_norm(m)]
        moved = {id(p) for m in in_block_norms for p in m.parameters()}
        groups = [ParamGroup("embed", self.embed_modules())]
        for i, block in enumerate(blocks):
            params = [p for p in block.parameters() if id(p) not in moved]
            groups.append(ParamGroup(f"encoder.{i}", [block], params=params))
        if norms or in_block_norms:
            groups.append(ParamGroup("encoder.norm", norms + in_block_norms))
        groups += [ParamGroup("head", [self.heads]), ParamGroup("mask", [self.mask_vec])]
        return [g for g in groups if g.params]

    # ------------------------------------------------------------------ forward
    def time_encoding(self, minutes: torch.Tensor) -> torch.Tensor:
        """τ of (B, N) minutes from patch close to t → (B, N, d)."""
        x = torch.log1p(minutes.clamp_min(0.0))[..., None] * self.time_freqs           # (B, N, F)
        return self.time_proj(torch.cat([torch.sin(x), torch.cos(x)], dim=-1))

    def embed(self, inputs: dict[str, torch.Tensor], flags: dict[str, torch.Tensor],
              minutes: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token embeddings of all TFs, TF-major: (B, T, d) with T = Σ_f K_f / P_f."""
        tokens = []
        for i, f in enumerate(self.tfs):
            x, flag = inputs[f], flags[f]                                               # (B, K, 4+C), (B, K)
            b, k, _ = x.shape
            prices = torch.where(flag[..., None] > 0, self.mask_vec[f].to(x.dtype), x[..., :4])  # masked → μ_f
            feats = torch.cat([prices, x[..., 4:], flag[..., None].to(x.dtype)], dim=-1)  # (B, K, 5+C)
            feats = feats.reshape(b, self.n_patches[f], self.patch_len[f] * (5 + self.channels))  # (B, N_f, P·(5+C))
            tok = self.patch[f](feats) + self.tf_embed.weight[i]                        # (B, N_f, d)
            if self.position == "tau":
                tok = tok + self.time_encoding(minutes[f])
            else:
                tok = tok + self.patch_pos[f]
            tokens.append(tok)
        return self.in_norm(torch.cat(tokens, dim=1)) * self.embed_scale                # (B, T, d)

    def forward(self, inputs: dict[str, torch.Tensor], flags: dict[str, torch.Tensor],
                minutes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reconstruct every bar of every TF.

        Args:
            inputs: {tf: (B, K_f, 4)} normalised OHLC with masked bars already blanked.
            flags: {tf: (B, K_f)} 1.0 where masked.
            minutes: {tf: (B, K_f / P_f)} minutes from each patch's close to the anchor t.

        Returns:
            {tf: (B, K_f, 4)} predictions in normalised units (float32).
        """
        h = self.backbone(self.embed(inputs, flags, minutes))                           # (B, T, d)
        out, start = {}, 0
        for f in self.tfs:
            n = self.n_patches[f]
            y = self.heads[f](h[:, start:start + n])                                     # (B, N_f, P·4)
            out[f] = y.reshape(y.shape[0], self.context[f], 4).float()                   # (B, K_f, 4)
            start += n
        return out


def is_norm(m: nn.Module) -> bool:
    """LayerNorm-like modules (nn.LayerNorm, T5LayerNorm, RMSNorm)."""
    return isinstance(m, (nn.LayerNorm, nn.RMSNorm)) or type(m).__name__.endswith(("LayerNorm", "RMSNorm"))
