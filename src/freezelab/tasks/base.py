"""What a task provides to the experiment engine, and what the engine gives a run (tasks/registry.py finds the
task; a plugin's own API is freezelab.Task, engine/task.py)."""

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
    """What the engine runs for a study type: a built-in task (``lm``, ``timeseries``) or a plugin wrapped by
    ``engine.runner.PluginRunner``; ``tasks/registry.py`` finds it by the study's ``task``."""

    def inspect(self, config: dict[str, Any]) -> dict[str, Any]:
        """Parameter accounting of one resolved config without training (meta device)."""
        ...

    def run(self, ctx: RunContext) -> dict[str, Any]:
        """Train and evaluate one run; returns summary fields (docs/run-folder.md)."""
        ...
