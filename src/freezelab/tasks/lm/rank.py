"""Effective rank of context matrices, and the memory-horizon probe.

Spec: shared/spec/cvfp-lm.md §4 (ER) and §10 (memory horizon).

- ``effective_rank_legacy``: the original's number. Up to 10,000 rows, *not* centred, so σ_1
  mostly measures the mean direction, and the value depends on the row count (§4, §9 flaw 7).
- ``effective_rank_centred``: freezelab's ``er: centred_fixed``. Columns centred, a fixed m rows
  drawn with a seeded generator, and both ER_σ and the participation ratio PR reported.

ER_σ = exp(H(p)), p_i = σ_i / Σ_j σ_j (Roy & Vetterli 2007, singular values not squared).
PR = (Σ λ_i)² / Σ λ_i², λ = σ² (the number of equally strong directions that gives the same
spread of the covariance spectrum).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from freezelab.tasks.lm.model import ContextBlock


def erank_from_singular_values(s: Tensor) -> float:
    """ER_σ = exp(-Σ p_i ln(p_i + 1e-10)), p = s / Σ s, as in the original; 0 for a zero matrix."""
    total = float(s.sum())
    if total <= 0.0:
        return 0.0
    p = s / total
    return math.exp(float(-(p * torch.log(p + 1e-10)).sum()))


def participation_ratio(s: Tensor) -> float:
    """PR = (Σ λ)² / Σ λ², λ = s²; 0 for a zero matrix."""
    lam = s.double().pow(2)
    denom = float(lam.pow(2).sum())
    return float(lam.sum()) ** 2 / denom if denom > 0 else 0.0


def _sample_rows(C: Tensor, m: int, generator: torch.Generator | None) -> Tensor:
    """m rows of C drawn without replacement (all rows, in order, when m >= N)."""
    num_rows = C.shape[0]
    if m >= num_rows:
        return C
    gen_device = torch.device("cpu") if generator is None else generator.device
    idx = torch.randperm(num_rows, generator=generator, device=gen_device)[:m]
    return C[idx.sort().values.to(C.device)]


def _singular_values(C: Tensor) -> Tensor:
    """Singular values of C in float64 (accurate tails for the entropy)."""
    return torch.linalg.svdvals(C.detach().to(torch.float64))


def effective_rank_legacy(C: Tensor, *, max_rows: int = 10_000, generator: torch.Generator | None = None) -> float:
    """Faithful ER: uncentred, m = min(N, max_rows) uniformly sampled rows.

    Args:
        C: (N, d) contexts (the original used the final-layer C^K).
        max_rows: 10,000 in the original.
        generator: row sampling; None uses torch's global RNG, as the unseeded original did.

    Returns:
        ER_σ (divide by d for the report's percentage).

    Raises:
        ValueError: C is not a non-empty 2-D matrix.
    """
    _check_matrix(C)
    return erank_from_singular_values(_singular_values(_sample_rows(C, max_rows, generator)))


def effective_rank_centred(C: Tensor, *, rows: int = 8192, generator: torch.Generator) -> dict[str, float]:
    """freezelab ER: column-centred, a fixed number of seeded rows, ER_σ and PR.

    Args:
        C: (N, d) contexts (freezelab: final-parameter, noise-free, exact; any layer).
        rows: m; m = min(rows, N) is reported, so a short split is visible.
        generator: seeded row sampling; pass a fresh generator with the same seed for every
            arm / split so the comparison uses the same protocol.

    Returns:
        {"er", "er_frac", "pr", "pr_frac", "rows"}; the fractions are divided by d.

    Raises:
        ValueError: C is not a non-empty 2-D matrix.
    """
    _check_matrix(C)
    sub = _sample_rows(C, rows, generator).to(torch.float64)  # (m, d)
    sub = sub - sub.mean(dim=0, keepdim=True)
    s = _singular_values(sub)
    er, pr, d = erank_from_singular_values(s), participation_ratio(s), C.shape[1]
    return {"er": er, "er_frac": er / d, "pr": pr, "pr_frac": pr / d, "rows": int(sub.shape[0])}


@torch.no_grad()
def memory_horizon(block: ContextBlock, x: Tensor, *, horizons: int = 16, generator: torch.Generator) -> list[float]:
    """RMS distance between two context streams fed the same tokens from different start states.

    ``x`` is cut into T // horizons non-overlapping windows; in each, two streams start from
    independent N(0, 1) states (the scale of an LN'd context, ‖c‖ ≈ √d_c) and read the same
    tokens. Distance after j tokens: sqrt(mean over windows and dims of (c_a - c_b)²).

    Args:
        block: the ContextBlock.
        x: (T, n*d_e) token inputs, T >= horizons (a document's windows or a stream).
        horizons: the largest j.
        generator: draws the start states.

    Returns:
        ``horizons`` floats, for j = 1..horizons; a contractive block gives a decreasing list.

    Raises:
        ValueError: fewer than ``horizons`` rows in x.
    """
    num_windows = x.shape[0] // horizons
    if num_windows < 1:
        raise ValueError(f"memory_horizon needs at least horizons={horizons} tokens, got {x.shape[0]}")
    xs = x[: num_windows * horizons].reshape(num_windows, horizons, -1)  # (W, J, n*d_e)
    gen_device = torch.device("cpu") if generator is None else generator.device
    start = torch.randn(2 * num_windows, block.context_dim, generator=generator, device=gen_device)
    c = start.to(x.device)  # (2W, d_c): streams a then b
    distances = []
    for j in range(horizons):
        c = block(c, xs[:, j].repeat(2, 1))[:, -1]  # (2W, d_c)
        diff = c[:num_windows] - c[num_windows:]  # (W, d_c)
        distances.append(float(diff.pow(2).mean().sqrt()))
    return distances


def _check_matrix(C: Tensor) -> None:
    if C.ndim != 2 or C.shape[0] == 0 or C.shape[1] == 0:
        raise ValueError(f"expected a non-empty (N, d) matrix, got shape {tuple(C.shape)}")
