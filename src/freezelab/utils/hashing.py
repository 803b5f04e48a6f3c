"""Stable content hashes for configs, arrays and tensors (protocol §3 hashes, §1.5 I1)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def hash_json(data: Any) -> str:
    """SHA-256 of the canonical JSON form of ``data`` (sorted keys, no spaces)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_arrays(*arrays: np.ndarray) -> str:
    """SHA-256 over dtype, shape and raw bytes of numpy arrays, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(_raw(a))
    return h.hexdigest()


def hash_tensor(t: Any) -> str:
    """SHA-256 of a torch tensor's raw bytes, taken on CPU (bit-exact, dtype-aware)."""
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(_raw(t.numpy()))
    return h.hexdigest()


def _raw(a: np.ndarray) -> np.ndarray:
    """The bytes of a C-contiguous array as a uint8 view: hashed in place, without the copy ``tobytes`` makes
    (half the time of a frozen-tensor check, I1)."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)
