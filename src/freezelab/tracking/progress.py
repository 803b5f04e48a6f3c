"""The run's ``progress.json``: what the run is doing now, for the study's live display.

The training loops call ``phase`` when a phase starts, ``step`` after every optimizer step (or Phase-1
iteration) and ``note`` before anything long that is not a step (evaluation, computing contexts). The
file is rewritten atomically at most every ``interval`` seconds, so a ``step`` call costs a clock read.
The runner's process only reads it (experiment/progress.py).

Fields: ``phase``, ``unit`` (step | iteration), ``done``/``total`` units of the phase, ``epoch``/``epochs``,
``step_in_epoch``/``steps_per_epoch``, ``rate`` (``items`` per second over the last window, notes
excluded), ``loss`` (the latest step's), ``eta_seconds`` (remaining units at the phase's pace so far),
``eta_scope`` (run: the run ends with this phase; else phase), ``note``, ``updated`` (UNIX time).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freezelab.tracking.files import write_json

PROGRESS_FILE = "progress.json"


class LiveProgress:
    """Throttled writer of one run's progress file.

    Args:
        path: the file (``RUN_DIR/progress.json``); None writes nothing.
        interval: minimum seconds between two writes by ``step``.
        clock: monotonic seconds (tests pass a fake one).
        wall: UNIX seconds for ``updated`` (tests pass a fake one).
    """

    def __init__(self, path: Path | None, *, interval: float = 1.5, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.path, self.interval, self.clock, self.wall = path, interval, clock, wall
        self.state: dict[str, Any] = {"phase": "setup"}
        self._last_write = -float("inf")
        self._phase_start = self._window_start = clock()
        self._done_at_start, self._items, self._paused = 0, 0, False
        self.write()

    def note(self, message: str) -> None:
        """Say what the run does between steps; the next ``step`` clears it and restarts the rate window,
        so the time spent on it does not lower the training rate."""
        self.state["note"] = message
        self._paused = True
        self.write()

    def phase(self, name: str, *, total: int | None = None, unit: str = "step", items: str = "tokens",
              epochs: int | None = None, steps_per_epoch: int | None = None, done: int = 0,
              last_phase: bool = False) -> None:
        """Start a phase.

        Args:
            name: ``phase1``, ``phase2``, ``train``.
            total: units in the whole phase (iterations, or steps over every epoch), for its ETA.
            unit: what ``done`` counts (``step``, ``iteration``).
            items: what the rate counts (``tokens``, ``windows``).
            epochs, steps_per_epoch: the epoch budget and its steps, shown as epoch e/E, step s/S.
            done: units already done (a resumed phase).
            last_phase: True when the run ends with this phase, so its ETA is the run's.
        """
        now = self.clock()
        self._phase_start = self._window_start = now
        self._done_at_start, self._items, self._paused = done, 0, False
        self.state = {"phase": name, "unit": unit, "items": items, "total": total, "done": done,
                      "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                      "eta_scope": "run" if last_phase else "phase"}
        self.write()

    def step(self, *, done: int, items: int = 0, loss: float | None = None, epoch: int | None = None,
             step_in_epoch: int | None = None) -> None:
        """``done`` units of the phase so far, ``items`` (tokens, windows) since the previous call."""
        self.state.update(done=done, loss=loss, epoch=epoch, step_in_epoch=step_in_epoch)
        if self._paused:  # the first step after a note: the rate window starts here
            self._paused = False
            self.state.pop("note", None)
            self._window_start, self._items = self.clock(), 0
            return
        self._items += items
        if self.clock() - self._last_write >= self.interval:
            self.write()

    def write(self) -> None:
        """Write the file now, with the rate over the window since the last write and the phase's ETA."""
        now = self.clock()
        s = self.state
        if self._items and now > self._window_start:
            s["rate"] = self._items / (now - self._window_start)
            self._window_start, self._items = now, 0
        done, total = (s.get("done") or 0) - self._done_at_start, s.get("total")
        if total and done > 0:
            s["eta_seconds"] = max(0.0, (total - s["done"]) * (now - self._phase_start) / done)
        s["updated"] = self.wall()
        self._last_write = now
        if self.path is not None:
            with contextlib.suppress(OSError):  # progress is a convenience: never fail a run over it
                write_json(self.path, s)
