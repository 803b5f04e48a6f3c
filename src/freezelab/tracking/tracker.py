"""Metrics go to metrics.jsonl (the report's source) and TensorBoard (for humans) at once.

TensorBoard layout of one run: one step axis, the global optimizer step. Per-step records
(``kind: step``, every ``every_steps`` steps) carry ``train/step_loss``, ``lr/<group>`` and
``grad_norm/<group>``; epoch records carry ``train/*`` and ``val/*`` at the epoch's last step (their
``lr/`` and ``grad_norm/`` values stay in metrics.jsonl when per-step records cover them). Phase-1
records (``kind: iteration``) live on their own axis, the iteration, under ``phase1/`` tags. A tag is
the metric name itself, prefixed once at most.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freezelab.tracking.files import METRICS_FILE, append_jsonl, read_jsonl
from freezelab.tracking.progress import PROGRESS_FILE, LiveProgress

PER_STEP_PREFIXES = ("lr/", "grad_norm/")


def tb_tag(record: dict[str, Any], key: str) -> str:
    """The TensorBoard tag of ``key`` in ``record``: iteration records under their phase, once."""
    phase = str(record.get("phase") or "")
    if record.get("kind") == "iteration" and phase and not key.startswith(phase + "/"):
        return f"{phase}/{key}"
    return key


def scalars(record: dict[str, Any], *, per_step: bool) -> dict[str, float]:
    """Tag → value of a record's numeric metrics, as TensorBoard and MLflow show them.

    Args:
        record: one metrics.jsonl record.
        per_step: whether the run writes step records; then an epoch record's ``lr/`` and
            ``grad_norm/`` values are left to them (one curve per tag, not two kinds of point).
    """
    covered = record.get("kind") == "epoch" and per_step
    return {tb_tag(record, k): float(v) for k, v in record.items()
            if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool)
            and not (covered and k.startswith(PER_STEP_PREFIXES))}


class Tracker:
    """Appends one JSON line per record and mirrors numeric values to TensorBoard.

    Args:
        run_dir: the run folder; writes ``metrics.jsonl``, ``tb/`` and ``progress.json``.
        tensorboard: set False to skip TensorBoard (tests).
        progress: set False to skip ``progress.json``.

    Attributes:
        every_steps: per-step records every this many optimizer steps (0: none); set by the task
            from ``runtime.log_every_steps``.
        live: the run's progress file (``LiveProgress``), updated by the training loops.
    """

    def __init__(self, run_dir: Path, *, tensorboard: bool = True, progress: bool = True) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))
        self.last: dict[str, Any] = {}
        self.every_steps = 0
        self.live = LiveProgress(Path(run_dir) / PROGRESS_FILE if progress else None)

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` gets a per-step record."""
        return self.every_steps > 0 and step % self.every_steps == 0

    def log(self, record: dict[str, Any], *, step: int) -> None:
        """Write one record (must hold ``kind`` and ``phase``) at ``step`` (the global optimizer step;
        the iteration for Phase-1 records)."""
        append_jsonl(self.path, record)
        self.last = record
        if self._tb is None:
            return
        for tag, value in scalars(record, per_step=self.every_steps > 0).items():
            self._tb.add_scalar(tag, value, step)

    def resumed(self) -> None:
        """A resume has cut metrics.jsonl back to its checkpoint: TensorBoard is rebuilt from what is left, so
        the steps an interrupted attempt logged after that checkpoint (and logs again now) appear once.
        The HParams file of ``publish`` is kept."""
        if self._tb is None:
            return
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(self._tb.log_dir)
        self._tb.close()
        for old in folder.glob("events.out.tfevents.*"):
            if not old.name.endswith(".hparams"):
                old.unlink()
        self._tb = SummaryWriter(log_dir=str(folder))
        for record in read_jsonl(self.path) if self.path.exists() else []:
            step = record.get("iteration") if record.get("kind") == "iteration" else record.get("step")
            if isinstance(step, int):
                for tag, value in scalars(record, per_step=self.every_steps > 0).items():
                    self._tb.add_scalar(tag, value, step)

    def close(self) -> None:
        """Flush and close TensorBoard; the progress file gets its last state."""
        self.live.write()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
