"""After each run, from its folder's files: its TensorBoard HParams session, the study's experiment, and
every sink (MLflow). A sink that fails prints a warning; it never fails the run or the study."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape

from freezelab.tracking import files


class RunSink(Protocol):
    """An exporter of finished runs (``MlflowSink``)."""

    def run_finished(self, run_dir: Path) -> None:
        """Export one finished (succeeded or failed) run folder; idempotent."""
        ...


def publish_run(run_dir: Path, out_dir: Path, *, tensorboard: bool = True, sinks: Sequence[RunSink] = (),
                console: Console | None = None) -> None:
    """Publish a run that has just ended (or was found finished) to TensorBoard's HParams and the sinks."""
    steps: list[tuple[str, Any]] = []
    if tensorboard:
        from freezelab.tracking.hparams import write_experiment, write_session

        def hparams() -> None:
            record = files.read_json(Path(out_dir) / "study.json")
            if write_session(run_dir, record):
                write_experiment(out_dir, record)
        steps.append(("TensorBoard HParams", hparams))
    steps += [(type(sink).__name__, lambda sink=sink: sink.run_finished(run_dir)) for sink in sinks]
    for name, step in steps:
        try:
            step()
        except Exception as err:  # an exporter's problem is reported, the study goes on
            (console or Console(stderr=True)).print(
                f"[yellow]warning:[/yellow] {escape(name)} could not record {escape(str(run_dir))}: "
                f"{escape(type(err).__name__)}: {escape(str(err))}", highlight=False)
