"""Checkpoints: best weights in safetensors, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from safetensors.torch import save_model
from torch import nn


def save_best(model: nn.Module, path: Path, *, metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s weights to ``path`` (safetensors; tied tensors stored once) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_model(model, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
