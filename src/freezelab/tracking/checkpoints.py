"""Checkpoints, written atomically: best weights in safetensors, the resumable state in ``last.pt``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Let ``write`` fill a temporary file beside ``path``, then rename it over ``path``: a kill mid-write
    leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_best(model: nn.Module, path: Path, *, metadata: dict[str, str] | None = None) -> None:
    """Write ``model``'s weights to ``path`` (safetensors; tied tensors stored once) atomically."""
    write_atomically(path, lambda tmp: save_model(model, tmp, metadata=metadata))


def save_last(state: dict[str, Any], path: Path) -> None:
    """Write the resumable training state (``torch.save``) atomically."""
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def load_last(path: Path) -> dict[str, Any] | None:
    """The state written by ``save_last``, or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, controller: Any,
                   early_stopping: Any, **counters: Any) -> dict[str, Any]:
    """What every task saves at an epoch end: weights, optimizer, scheduler, group flags and lr scales,
    early-stopping state (best weights included), plus the task's own counters."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "groups": {n: (g.frozen, g.lr_scale) for n, g in controller.groups.items()},
            "early_stopping": early_stopping.state_dict(), **counters}


def restore_training_state(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Any, controller: Any, early_stopping: Any) -> None:
    """Inverse of ``training_state``: group flags first (so requires_grad and modes match), then the rest."""
    for name, (frozen, scale) in state["groups"].items():
        controller.groups[name].lr_scale = scale
        controller.set_frozen(name, frozen)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    early_stopping.load_state_dict(state["early_stopping"])
