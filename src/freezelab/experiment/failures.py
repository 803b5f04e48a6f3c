"""Failure capture (protocol §5): exceptions inside a run and deaths of the run's process, each with a fix."""

from __future__ import annotations

import signal
import traceback
from pathlib import Path
from typing import Any

TRACEBACK_LINES = 30
LOG_LINES = 50
EXIT_DISK_FULL = 75  # a run process that could not even record its failure for lack of disk space
MEMORY_KEYS = {"lm": ("phase2.batch_size", "phase2.eval_batch_size", "phase1.chunk_rows"),
               "timeseries": ("train.batch_size", "train.eval_batch_size")}


def _dotted(config: dict[str, Any] | None, key: str) -> Any:
    value: Any = config or {}
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def memory_hint(task: str | None, config: dict[str, Any] | None) -> str:
    """Which config keys to lower when a run runs out of memory, with their current values."""
    keys = MEMORY_KEYS.get(task or "", ())
    if not keys:
        return "Lower the batch sizes in the study's base."
    shown = ", ".join(f"{k} (now {_dotted(config, k)})" for k in keys)
    return f"Lower {shown} in the study's base (or --set KEY=VALUE), or run fewer runs at once on this machine."


def is_out_of_memory(err: BaseException) -> bool:
    """torch's OutOfMemoryError, a MemoryError, or a RuntimeError saying so (CPU allocator, older CUDA)."""
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "out of memory" in str(err).lower() or "can't allocate memory" in str(err).lower())


def exception_record(err: BaseException, *, epoch: int | None = None, step: int | None = None,
                     last_metrics: dict[str, Any] | None = None, task: str | None = None,
                     config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Class, message (with the fix for out-of-memory), failure code and the last traceback lines."""
    tb = traceback.format_exception(type(err), err, err.__traceback__)
    lines = "".join(tb).rstrip().splitlines()
    message, code = str(err), getattr(err, "code", None)
    if is_out_of_memory(err):
        where = f" at epoch {epoch}, step {step}" if epoch is not None else ""
        message, code = f"out of memory{where} ({message.splitlines()[0][:200]}). {memory_hint(task, config)}", \
            "out_of_memory"
    elif type(err).__name__ == "DiskFullError":
        code = "disk_full"
    return {"class": type(err).__name__, "message": message, "code": code,
            "traceback_tail": lines[-TRACEBACK_LINES:], "epoch": epoch, "step": step,
            "last_metrics": last_metrics or {}, "exit_code": None, "signal": None}


def tail(path: Path, n: int = LOG_LINES) -> list[str]:
    """Last ``n`` lines of a text file (empty when missing)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return []


def death_record(returncode: int, log_path: Path, *, peak_rss_bytes: int | None, wall_seconds: float,
                 task: str | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the parent knows when a run's process died without recording its own failure."""
    sig = -returncode if returncode < 0 else None
    code = "process_died"
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        message = f"run process killed by {name}"
        if sig == signal.SIGKILL:
            message += f", likely out of memory (or killed by hand). {memory_hint(task, config)}"
    elif returncode == EXIT_DISK_FULL:
        name, code = None, "disk_full"
        message = ("no space left on device while the run recorded its result (the path is in logs/run.log). "
                   "Free disk space and run the same command again: it resumes from the last checkpoint.")
    else:
        name, message = None, (f"run process exited with code {returncode} without recording a result; see "
                               "logs/run.log (log_tail) for what it printed last")
    return {"class": "ProcessDied", "message": message, "code": code, "traceback_tail": [],
            "exit_code": returncode, "signal": name, "log_tail": tail(log_path),
            "peak_rss_bytes": peak_rss_bytes, "wall_seconds": wall_seconds}
