"""Best-epoch selection with early stopping, shared by every task.

The best weights are kept in memory (to restore before the single test evaluation); the epoch-end
checkpoint commit writes them to ``checkpoints/best.safetensors`` when they changed (``improved_at``).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

from torch import nn


class EarlyStopping:
    """Track the best value of one validation metric and count epochs without improvement.

    Args:
        metric: the selection metric's name, e.g. ``val/loss`` (recorded in the checkpoint metadata).
        mode: ``min`` or ``max``.
        patience: epochs without improvement before stopping.
        min_delta: improvement smaller than this does not count.
    """

    def __init__(self, metric: str, mode: Literal["min", "max"], patience: int, *, min_delta: float = 0.0) -> None:
        self.metric, self.mode, self.patience, self.min_delta = metric, mode, patience, min_delta
        self.value = math.inf if mode == "min" else -math.inf
        self.epoch = 0
        self.metrics: dict[str, Any] = {}
        self.state: dict[str, Any] | None = None
        self.patience_left = patience

    def improved(self, value: float) -> bool:
        if self.state is None:
            return True
        return value < self.value - self.min_delta if self.mode == "min" else value > self.value + self.min_delta

    def update(self, epoch: int, value: float, metrics: dict[str, Any], model: nn.Module) -> bool:
        """Record one epoch's validation result; returns True when training should stop."""
        if self.improved(value):
            self.value, self.epoch, self.metrics = value, epoch, dict(metrics)
            self.state = copy.deepcopy(model.state_dict())
            self.patience_left = self.patience
            return False
        self.patience_left -= 1
        return self.patience_left <= 0

    def reset_patience(self) -> None:
        """Restart the patience count (at an unfreezing boundary, when the arm asks for it)."""
        self.patience_left = self.patience

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue selection after a resume, as JSON (the best weights live in
        ``best.safetensors`` and are put back into ``state`` by the resuming code)."""
        return {"metric": self.metric, "value": self.value, "epoch": self.epoch, "metrics": self.metrics,
                "patience_left": self.patience_left}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.epoch, self.metrics = state["value"], state["epoch"], state["metrics"]
        self.patience_left = state["patience_left"]

    def restore(self, model: nn.Module) -> None:
        """Load the best weights back into ``model``."""
        assert self.state is not None, "restore() before any update()"
        model.load_state_dict(self.state)
