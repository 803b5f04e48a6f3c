"""Failure capture (protocol §5): exceptions inside a run and deaths of the run's process."""

from __future__ import annotations

import signal
import traceback
from pathlib import Path
from typing import Any

TRACEBACK_LINES = 30
LOG_LINES = 50


def exception_record(err: BaseException, *, epoch: int | None = None, step: int | None = None,
                     last_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Class, message, failure code and the last traceback lines of an exception."""
    tb = traceback.format_exception(type(err), err, err.__traceback__)
    lines = "".join(tb).rstrip().splitlines()
    return {"class": type(err).__name__, "message": str(err), "code": getattr(err, "code", None),
            "traceback_tail": lines[-TRACEBACK_LINES:], "epoch": epoch, "step": step,
            "last_metrics": last_metrics or {}, "exit_code": None, "signal": None}


def tail(path: Path, n: int = LOG_LINES) -> list[str]:
    """Last ``n`` lines of a text file (empty when missing)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return []


def death_record(returncode: int, log_path: Path, *, peak_rss_bytes: int | None,
                 wall_seconds: float) -> dict[str, Any]:
    """What the parent knows when a run's process died without recording its own failure."""
    sig = -returncode if returncode < 0 else None
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        message = (f"run process killed by {name}" +
                   (", likely out of memory" if sig == signal.SIGKILL else ""))
    else:
        name, message = None, f"run process exited with code {returncode} without recording a result"
    return {"class": "ProcessDied", "message": message, "code": "process_died", "traceback_tail": [],
            "exit_code": returncode, "signal": name, "log_tail": tail(log_path),
            "peak_rss_bytes": peak_rss_bytes, "wall_seconds": wall_seconds}
