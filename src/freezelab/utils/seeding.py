"""Named random generators derived from (run seed, purpose, name) (protocol §3 seed roles).

For a given seed two arms draw identical batch orders and noise, and modules common to both start
from identical values: this is what makes paired comparisons across arms valid.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *names: str) -> int:
    """A 63-bit integer seed derived deterministically from ``seed`` and purpose names."""
    text = "/".join([str(seed), *names])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def torch_generator(seed: int, *names: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded from ``derive_seed(seed, *names)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *names))
    return g


def numpy_generator(seed: int, *names: str) -> np.random.Generator:
    """A numpy Generator seeded from ``derive_seed(seed, *names)``."""
    return np.random.default_rng(derive_seed(seed, *names))


def seed_everything(seed: int) -> None:
    """Seed the global Python, NumPy and torch generators (for library code we do not control)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
