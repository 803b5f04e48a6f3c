"""The study's live display: one line for the study, one per active run, from the runs' progress files.

Each run process writes ``RUN_DIR/progress.json`` (tracking/progress.py); the runner's process reads
it, whatever the isolation or executor. In a terminal the lines redraw every couple of seconds (rich
Live); otherwise (CI, nohup, a pipe) they are printed as plain log lines every ``plain_every`` seconds.
Either way a run's start prints its log and TensorBoard paths, and its end its result or its failure's
one-line cause and where the traceback is.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from freezelab.experiment.plan import RunSpec
from freezelab.tracking import files
from freezelab.tracking.progress import PROGRESS_FILE


def read_progress(run_dir: Path) -> dict[str, Any] | None:
    """The run's progress file, or None when it is missing or unreadable (a run folder is untrusted)."""
    try:
        data = json.loads((Path(run_dir) / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def duration(seconds: float | None) -> str:
    """``12s``, ``4m05s``, ``2h03m``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_line(label: str, progress: dict[str, Any] | None, *, elapsed: float, now: float) -> str:
    """One run's line: phase, iteration or epoch and step, rate, current loss, ETA (run or phase)."""
    p = progress or {}
    parts = [label, duration(elapsed)]
    phase = str(p.get("phase") or "starting")
    done, total = p.get("done"), p.get("total")
    if p.get("unit") == "iteration":
        parts.append(f"{phase} iteration {done}/{total}")
    elif p.get("epoch") is not None:
        parts.append(f"{phase} epoch {p['epoch']}/{p.get('epochs')} step {p.get('step_in_epoch')}/"
                     f"{p.get('steps_per_epoch')}")
    else:
        parts.append(phase)
    if p.get("note"):
        parts.append(str(p["note"]))
    rate = _num(p.get("rate"))
    if rate is not None:
        parts.append(f"{rate:,.0f} {p.get('items', 'items')}/s")
    loss = _num(p.get("loss"))
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    eta = _num(p.get("eta_seconds"))
    if eta is not None:
        parts.append(("ETA " if p.get("eta_scope") == "run" else f"{phase} ETA ") + duration(eta))
    updated = _num(p.get("updated"))
    if updated is not None and now - updated > 60:
        parts.append(f"(no update for {duration(now - updated)})")
    return "  ".join(parts)


class StudyProgress:
    """Live progress of a study's runs, printed to ``console``.

    Args:
        name: the study name.
        runs: (spec, run folder) of every run in the plan.
        console: where to print (default: stdout); a terminal gets a live display, anything else plain lines.
        enabled: False prints nothing (tests, library use).
        refresh: seconds between redraws in a terminal.
        plain_every: seconds between plain progress lines when not in a terminal.
        clock: wall-clock seconds (tests pass a fake one).
    """

    def __init__(self, name: str, runs: list[tuple[RunSpec, Path]], *, console: Console | None = None,
                 enabled: bool = True, refresh: float = 2.0, plain_every: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.name, self.runs, self.enabled, self.clock = name, runs, enabled, clock
        self.console = console or Console()
        self.refresh, self.plain_every = refresh, plain_every
        self.t0 = clock()
        self.started_at: dict[str, float] = {}
        self.finished_ids: set[str] = set()
        self.counts = {"succeeded": 0, "failed": 0, "skipped": 0, "locked": 0}
        self.durations: list[float] = []
        self._live: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_plain = self.t0

    # ------------------------------------------------------------------ events from the executor
    def started(self, spec: RunSpec, run_dir: Path) -> None:
        """A run is about to execute here: print where its log and TensorBoard events go."""
        self.started_at[spec.run_id] = self.clock()
        if (files.read_status(run_dir) or {}).get("status") == "succeeded":
            return  # it will be skipped; its end says so
        self._print(f"[{len(self.finished_ids) + 1}/{len(self.runs)}] {spec.arm} seed {spec.seed}: "
                    f"log {run_dir / 'logs' / 'run.log'} · tensorboard {run_dir / 'tb'}")

    def poll(self) -> None:
        """Executors that run several runs at once (Ray): announce runs whose progress file appeared."""
        for spec, run_dir in self.runs:
            if spec.run_id in self.started_at or spec.run_id in self.finished_ids:
                continue
            p = read_progress(run_dir)
            if p is not None and (_num(p.get("updated")) or 0) >= self.t0:
                self.started_at[spec.run_id] = self.clock()
                self._print(f"{spec.arm} seed {spec.seed} started: log {run_dir / 'logs' / 'run.log'} · "
                            f"tensorboard {run_dir / 'tb'}")

    def finished(self, spec: RunSpec, run_dir: Path, outcome: Any) -> None:
        """A run ended: count it and print its result, or its failure's cause and where its traceback is."""
        now = self.clock()
        start = self.started_at.pop(spec.run_id, None)
        took = duration(now - start) if start is not None else "?"
        self.finished_ids.add(spec.run_id)
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        label = f"{spec.arm} seed {spec.seed}"
        if outcome.status == "skipped":
            self._print(f"  {label}: {outcome.message or 'skipped'}")
            return
        if outcome.status == "locked":
            self._print(f"  {label}: skipped, {outcome.message}")
            return
        if start is not None and "not retried" not in outcome.message:
            self.durations.append(now - start)
        if outcome.status == "failed":
            cause = (outcome.message or "no message").strip().splitlines()[0]
            self._print(f"  [bold red]FAILED[/bold red] {escape(label)} after {took}: {escape(cause)}\n"
                        f"    traceback: {escape(str(run_dir / 'logs' / 'run.log'))} "
                        f"(error record: {escape(str(run_dir / 'status.json'))})", markup=True)
        else:
            self._print(f"  {label} succeeded in {took}{_best(run_dir)}")

    # ------------------------------------------------------------------ what is shown
    def lines(self) -> list[str]:
        """The study line, then one line per active run."""
        now = self.clock()
        active = [(spec, d) for spec, d in self.runs if spec.run_id in self.started_at]
        progress = {spec.run_id: read_progress(d) for spec, d in active}
        out = [self._study_line(now, active, progress)]
        for spec, _ in active:
            out.append("  " + run_line(f"{spec.arm} s{spec.seed}", progress[spec.run_id],
                                       elapsed=now - self.started_at[spec.run_id], now=now))
        return out

    def _study_line(self, now: float, active: list, progress: dict[str, Any]) -> str:
        done = len(self.finished_ids)
        failed = f" ({self.counts['failed']} failed)" if self.counts.get("failed") else ""
        return (f"{self.name}: {done}/{len(self.runs)} runs{failed}  elapsed {duration(now - self.t0)}  "
                f"ETA {duration(self.eta(now, active, progress))}")

    def eta(self, now: float, active: list, progress: dict[str, Any]) -> float | None:
        """Seconds until the study ends: the mean duration of the runs that finished here times the runs
        left (finished ones skipped), less the active runs' elapsed time; before any run has finished, the
        active run's own ETA. Active runs at once (Ray) divide it. None when nothing is known yet."""
        queued = [d for spec, d in self.runs if spec.run_id not in self.finished_ids
                  and spec.run_id not in self.started_at
                  and (files.read_status(d) or {}).get("status") != "succeeded"]
        own = []
        for spec, _ in active:
            p = progress.get(spec.run_id) or {}
            eta = _num(p.get("eta_seconds"))
            own.append(eta if p.get("eta_scope") == "run" else None)
        elapsed = [now - self.started_at[spec.run_id] for spec, _ in active]
        if self.durations:
            mean = sum(self.durations) / len(self.durations)
            left = [e if e is not None else max(0.0, mean - t) for e, t in zip(own, elapsed)]
            return (sum(left) + len(queued) * mean) / max(1, len(active))
        if active and all(e is not None for e in own):
            per_run = [t + e for t, e in zip(elapsed, own)]  # type: ignore[operator]
            return (sum(own) + len(queued) * sum(per_run) / len(per_run)) / len(active)  # type: ignore[arg-type]
        return 0.0 if not active and not queued else None

    # ------------------------------------------------------------------ output
    def _print(self, message: str, *, markup: bool = False) -> None:
        if self.enabled:
            self.console.print(message, markup=markup, highlight=False, soft_wrap=True)

    def tick(self) -> None:
        """Plain mode: print the progress lines when ``plain_every`` seconds have passed."""
        now = self.clock()
        if now - self._last_plain >= self.plain_every:
            self._last_plain = now
            stamp = time.strftime("%H:%M:%S", time.localtime(now))
            for line in self.lines():
                self._print(f"[{stamp}] {line.strip()}")

    def _render(self) -> Text:
        return Text("\n".join(self.lines()), no_wrap=True, overflow="ellipsis")

    def __enter__(self) -> StudyProgress:
        if not self.enabled:
            return self
        if self.console.is_terminal:
            from rich.live import Live

            self._live = Live(get_renderable=self._render, console=self.console, transient=True,
                              refresh_per_second=1 / self.refresh, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        else:
            def loop() -> None:
                while not self._stop.wait(min(self.refresh, self.plain_every)):
                    self.tick()
            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._live is not None:
            self._live.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.enabled:
            c = {k: v for k, v in self.counts.items() if v}
            self._print(f"{self.name}: {len(self.finished_ids)}/{len(self.runs)} runs in "
                        f"{duration(self.clock() - self.t0)} ({', '.join(f'{v} {k}' for k, v in c.items())})")


def _best(run_dir: Path) -> str:
    """``: best val/loss 5.81 at epoch 3`` from the run's summary, "" when it cannot be read."""
    try:
        s = files.read_json(Path(run_dir) / files.SUMMARY_FILE)
        metric = s["selection"]["metric"]
        return f": best {metric} {s['best']['metrics'][metric]:.4g} at epoch {s['best']['epoch']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
