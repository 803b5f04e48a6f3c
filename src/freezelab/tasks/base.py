"""What a task provides to the experiment engine, and what the engine gives a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from freezelab.tracking.tracker import Tracker


@dataclass
class RunContext:
    """Everything one run needs; built by the engine, passed to ``Task.run``."""

    run_dir: Path
    run_id: str
    study: str
    arm: str
    seed: int
    config: dict[str, Any]
    tracker: Tracker
    expected_params: dict[str, int] | None = None
    cache_dir: Path | None = None             # shared, process-safe cache for data of the same hash
    log: Callable[[str], None] = print
    progress: bool = True
    facts: dict[str, Any] = field(default_factory=dict)  # partial summary, kept if the run fails


class Task(Protocol):
    """A study type (``lm``, ``timeseries``)."""

    def inspect(self, config: dict[str, Any]) -> dict[str, Any]:
        """Parameter accounting of one resolved config without training (meta device)."""
        ...

    def run(self, ctx: RunContext) -> dict[str, Any]:
        """Train and evaluate one run; returns summary fields (docs/run-folder.md)."""
        ...


def get_task(name: str) -> Task:
    """The task implementation for a study's ``task`` key."""
    if name == "lm":
        from freezelab.tasks.lm.task import LMTask

        return LMTask()
    if name == "timeseries":
        from freezelab.tasks.timeseries.task import TSTask

        return TSTask()
    raise ValueError(f"unknown task {name!r}")
