"""Metrics go to metrics.jsonl (the report's source) and TensorBoard (for humans) at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freezelab.tracking.files import METRICS_FILE, append_jsonl


class Tracker:
    """Appends one JSON line per record and mirrors numeric values to TensorBoard.

    Args:
        run_dir: the run folder; writes ``metrics.jsonl`` and ``tb/``.
        tensorboard: set False to skip TensorBoard (tests).
    """

    def __init__(self, run_dir: Path, *, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))
        self.last: dict[str, Any] = {}

    def log(self, record: dict[str, Any], *, step: int) -> None:
        """Write one record (must hold ``kind`` and ``phase``) at global ``step``."""
        append_jsonl(self.path, record)
        self.last = record
        if self._tb is not None:
            for key, value in record.items():
                if "/" in key and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{record.get('phase', '')}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
