"""Effective rank (legacy and centred_fixed), participation ratio, memory horizon."""

from __future__ import annotations

import math

import pytest
import torch

from freezelab.tasks.lm.model import ContextBlock
from freezelab.tasks.lm.rank import (
    effective_rank_centred,
    effective_rank_legacy,
    erank_from_singular_values,
    memory_horizon,
    participation_ratio,
)


def rank3(num_rows: int = 4000, d: int = 16, mean: float = 0.0) -> torch.Tensor:
    """Three equally strong orthogonal directions plus an optional constant offset."""
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(d, 3, generator=gen))  # (d, 3) orthonormal
    return torch.randn(num_rows, 3, generator=gen) @ basis.T + mean  # (N, d)


def test_identity_has_full_rank() -> None:
    eye = torch.eye(12)
    assert math.isclose(effective_rank_legacy(eye), 12.0, rel_tol=1e-6)
    assert math.isclose(erank_from_singular_values(torch.ones(5)), 5.0, rel_tol=1e-6)
    assert math.isclose(participation_ratio(torch.ones(5)), 5.0, rel_tol=1e-9)
    assert erank_from_singular_values(torch.zeros(5)) == 0.0 and participation_ratio(torch.zeros(5)) == 0.0


def test_rank3_matrix() -> None:
    result = effective_rank_centred(rank3(), rows=8192, generator=torch.Generator().manual_seed(0))
    assert result["rows"] == 4000  # m = min(rows, N)
    assert abs(result["pr"] - 3.0) < 0.1
    assert abs(result["er"] - 3.0) < 0.1
    assert math.isclose(result["pr_frac"], result["pr"] / 16) and math.isclose(result["er_frac"], result["er"] / 16)


def test_legacy_and_centred_differ_on_a_large_mean() -> None:
    data = rank3(mean=20.0)
    legacy = effective_rank_legacy(data, generator=torch.Generator().manual_seed(0))
    centred = effective_rank_centred(data, generator=torch.Generator().manual_seed(0))
    assert legacy < 1.5  # σ_1 is the mean direction and dominates
    assert abs(centred["er"] - 3.0) < 0.1


def test_row_sampling_is_seeded_and_sized() -> None:
    data = torch.randn(3000, 32, generator=torch.Generator().manual_seed(1))
    a = effective_rank_centred(data, rows=500, generator=torch.Generator().manual_seed(7))
    b = effective_rank_centred(data, rows=500, generator=torch.Generator().manual_seed(7))
    c = effective_rank_centred(data, rows=500, generator=torch.Generator().manual_seed(8))
    assert a == b and a["rows"] == 500 and a["er"] != c["er"]
    # The legacy ER depends on the row count (spec §4): fewer rows, lower ER for the same data.
    few = effective_rank_legacy(data, max_rows=40, generator=torch.Generator().manual_seed(0))
    many = effective_rank_legacy(data, max_rows=3000)
    assert few < many


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        effective_rank_legacy(torch.zeros(0, 4))


def test_memory_horizon_decreases_for_a_contractive_block() -> None:
    gen = torch.Generator().manual_seed(0)
    block = ContextBlock(64, 64, 6, generator=gen)  # wide random blocks forget within ~10 tokens
    x = torch.nn.functional.layer_norm(torch.randn(1600, 64, generator=gen), (64,))  # 100 windows
    dist = memory_horizon(block, x, horizons=16, generator=torch.Generator().manual_seed(1))
    assert len(dist) == 16
    assert all(b < a for a, b in zip(dist, dist[1:]))
    assert dist[-1] < 0.3 * dist[0]
    again = memory_horizon(block, x, horizons=16, generator=torch.Generator().manual_seed(1))
    assert dist == again
    with pytest.raises(ValueError, match="at least horizons=16"):
        memory_horizon(block, x[:10], horizons=16, generator=gen)


def _constructed(singular: list[float], num_rows: int, d: int, seed: int = 0):
    """C = U diag(s) Vᵀ with orthonormal U (N, k), V (d, k): its singular values are exactly ``singular``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((num_rows, len(singular))))
    v, _ = np.linalg.qr(rng.standard_normal((d, len(singular))))
    return (u * np.asarray(singular)) @ v.T


@pytest.mark.parametrize("singular", [[5.0, 5.0, 5.0], [9.0, 3.0, 1.0, 0.5], [1.0] * 7 + [0.01]])
def test_legacy_er_is_the_entropy_of_the_constructed_singular_values_without_centring(singular) -> None:
    import numpy as np

    s = np.asarray(singular) / np.sum(singular)
    want = float(np.exp(-np.sum(s * np.log(s + 1e-10))))  # the original's formula on the known spectrum
    c = _constructed(singular, 600, 24)
    assert math.isclose(effective_rank_legacy(torch.from_numpy(c)), want, rel_tol=1e-6)
    shifted = c + 3.0                                               # a mean direction: legacy sees it (no centring)
    sv = np.linalg.svd(shifted, compute_uv=False)
    p = sv / sv.sum()
    assert math.isclose(effective_rank_legacy(torch.from_numpy(shifted)),
                        float(np.exp(-np.sum(p * np.log(p + 1e-10)))), rel_tol=1e-6)
    assert not math.isclose(effective_rank_legacy(torch.from_numpy(shifted)), want, rel_tol=1e-3)


def test_legacy_er_samples_10000_rows_as_the_original() -> None:
    import numpy as np

    c = torch.from_numpy(_constructed([4.0, 2.0, 1.0, 1.0, 0.5], 12_000, 16)) + 0.5
    gen_seed = 7
    idx = torch.randperm(12_000, generator=torch.Generator().manual_seed(gen_seed))[:10_000].sort().values
    sv = np.linalg.svd(c.numpy()[idx.numpy()], compute_uv=False)
    p = sv / sv.sum()
    want = float(np.exp(-np.sum(p * np.log(p + 1e-10))))
    got = effective_rank_legacy(c, generator=torch.Generator().manual_seed(gen_seed))
    assert math.isclose(got, want, rel_tol=1e-6)
