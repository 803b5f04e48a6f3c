"""Tensor and array hashes (I1, lean checkpoints) are hashed in place; their digests must stay those of the
tensor's raw bytes as ``tobytes`` gives them (run folders written before keep verifying)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from freezelab.utils.hashing import hash_arrays, hash_tensor


def _by_copy(t: torch.Tensor) -> str:
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


def test_tensor_digests_are_those_of_the_raw_bytes_for_every_dtype_and_layout() -> None:
    g = torch.Generator().manual_seed(0)
    cases = [torch.randn(3, 4, generator=g), torch.tensor(2.5), torch.ones(5, dtype=torch.bool),
             torch.randn(4, 5, generator=g).t(), torch.randn(6, generator=g).to(torch.bfloat16),
             torch.arange(10)[::2], torch.zeros(0, 3), torch.randn(3, generator=g).half(),
             torch.randint(0, 9, (2, 3), dtype=torch.uint8, generator=g)]
    for t in cases:
        assert hash_tensor(t) == _by_copy(t), (t.dtype, t.shape)
    a, b = torch.zeros(4), torch.zeros(4)
    b[2] = 1e-30  # one changed bit pattern changes the digest
    assert hash_tensor(a) != hash_tensor(b)


def test_array_digests_are_those_of_the_raw_bytes() -> None:
    for a in (np.arange(12).reshape(3, 4).T, np.array(1.5), np.zeros((0, 2)), np.array([True, False])):
        c = np.ascontiguousarray(a)
        want = hashlib.sha256(f"{c.dtype.str}{c.shape}".encode() + c.tobytes()).hexdigest()
        assert hash_arrays(a) == want
