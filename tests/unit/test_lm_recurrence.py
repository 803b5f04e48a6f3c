"""Context recurrence: batched per-document, Jacobi stream and the per-token reference agree."""

from __future__ import annotations

import pytest
import torch

from freezelab.errors import NumericFailure
from freezelab.tasks.lm.model import ContextBlock
from freezelab.tasks.lm.recurrence import (
    as_offsets,
    contexts_per_document,
    contexts_stream_jacobi,
    contexts_stream_sequential,
    jacobi_step,
    shift_contexts,
)

OFFSETS = torch.tensor([0, 5, 5, 17, 18, 40, 63])  # includes an empty and a one-token document
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def block() -> ContextBlock:
    return ContextBlock(8, 12, 2, generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.randn(63, 12, generator=torch.Generator().manual_seed(1))


def reference_per_document(block: ContextBlock, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Per-token loop with c = 0 at each document start."""
    out = torch.empty(x.shape[0], block.num_layers, block.context_dim)
    with torch.no_grad():
        for d in range(len(offsets) - 1):
            c = torch.zeros(1, block.context_dim)
            for t in range(int(offsets[d]), int(offsets[d + 1])):
                y = block(c, x[t : t + 1])
                out[t], c = y[0], y[:, -1]
    return out


def test_per_document_matches_reference_loop(block: ContextBlock, x: torch.Tensor) -> None:
    expected = reference_per_document(block, x, OFFSETS)
    for batch_docs in (None, 1, 2):
        got = contexts_per_document(block, x, OFFSETS, batch_docs=batch_docs)
        assert got.shape == (63, 2, 8) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    last = contexts_per_document(block, x, OFFSETS.numpy(), all_layers=False)  # numpy offsets too
    torch.testing.assert_close(last, expected[:, -1], atol=1e-5, rtol=0)


def test_per_document_resets_context(block: ContextBlock, x: torch.Tensor) -> None:
    got = contexts_per_document(block, x, OFFSETS)
    alone = contexts_stream_sequential(block, x[17:18])  # doc 3 has one token: c = 0 before it
    torch.testing.assert_close(got[17], alone[0], atol=1e-6, rtol=0)


def test_noise_is_seeded_and_off_by_default(block: ContextBlock, x: torch.Tensor) -> None:
    exact = contexts_per_document(block, x, OFFSETS)
    a = contexts_per_document(block, x, OFFSETS, noise_std=0.1, generator=torch.Generator().manual_seed(5))
    b = contexts_per_document(block, x, OFFSETS, noise_std=0.1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.allclose(a, exact)


def test_jacobi_stream_matches_sequential(block: ContextBlock, x: torch.Tensor) -> None:
    sequential = contexts_stream_sequential(block, x)
    jacobi, sweeps = contexts_stream_jacobi(block, x, tol=1e-6, chunk_rows=10)
    assert sweeps <= 63 + 1  # sweep k is exact for t < k, whatever the map
    torch.testing.assert_close(jacobi, sequential, atol=1e-5, rtol=0)
    last, _ = contexts_stream_jacobi(block, x, tol=1e-6, all_layers=False)
    torch.testing.assert_close(last, sequential[:, -1], atol=1e-5, rtol=0)


def test_jacobi_needs_few_sweeps_for_a_forgetful_block() -> None:
    gen = torch.Generator().manual_seed(0)
    block = ContextBlock(64, 64, 6, generator=gen)  # wide random blocks forget within ~10 tokens
    x = torch.nn.functional.layer_norm(torch.randn(400, 64, generator=gen), (64,))
    jacobi, sweeps = contexts_stream_jacobi(block, x)
    assert sweeps < 200
    torch.testing.assert_close(jacobi, contexts_stream_sequential(block, x), atol=1e-4, rtol=0)


def test_jacobi_with_offsets_matches_per_document(block: ContextBlock, x: torch.Tensor) -> None:
    jacobi, _ = contexts_stream_jacobi(block, x, offsets=OFFSETS, tol=1e-6)
    torch.testing.assert_close(jacobi, contexts_per_document(block, x, OFFSETS), atol=1e-5, rtol=0)


def test_jacobi_gives_up_loudly(block: ContextBlock, x: torch.Tensor) -> None:
    with pytest.raises(NumericFailure, match="jacobi_not_converged.*after 2 Jacobi sweeps"):
        contexts_stream_jacobi(block, x, max_sweeps=2)


def test_jacobi_step_is_chunked_block_call(block: ContextBlock, x: torch.Tensor) -> None:
    c = torch.randn(63, 8)
    with torch.no_grad():
        torch.testing.assert_close(jacobi_step(block, c, x, chunk_rows=7), block(c, x))


def test_shift_contexts() -> None:
    c = torch.arange(1.0, 7.0)[:, None].repeat(1, 2)  # rows 1..6
    offsets = torch.tensor([0, 2, 2, 6])
    assert shift_contexts(c)[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert shift_contexts(c, wraparound=True)[:, 0].tolist() == [6, 1, 2, 3, 4, 5]
    assert shift_contexts(c, offsets)[:, 0].tolist() == [0, 1, 0, 3, 4, 5]
    with pytest.raises(ValueError, match="wraparound"):
        shift_contexts(c, offsets, wraparound=True)


def test_offsets_are_validated() -> None:
    assert as_offsets(None, 4).tolist() == [0, 4]
    with pytest.raises(ValueError, match="N=5"):
        as_offsets([0, 3, 4], 5)
    with pytest.raises(ValueError, match="non-decreasing"):
        as_offsets([0, 3, 2, 5], 5)
