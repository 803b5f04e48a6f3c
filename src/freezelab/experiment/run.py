"""Execute one run inside the current process: status, heartbeat, logs, summary, failure record.

Usable as ``python -m freezelab.experiment.run RUN_DIR`` so the runner can isolate every run in its own
process (a crash or an out-of-memory kill then costs one run, not the study).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from freezelab.errors import DiskFullError
from freezelab.experiment.failures import EXIT_DISK_FULL, exception_record, tail
from freezelab.tracking import files
from freezelab.tracking.checkpoints import finish
from freezelab.tracking.environment import peak_memory_bytes
from freezelab.tracking.faults import fault_point
from freezelab.tracking.tracker import Tracker

HEARTBEAT_SECONDS = 30


class _Heartbeat(threading.Thread):
    def __init__(self, run_dir: Path) -> None:
        super().__init__(daemon=True)
        self.run_dir, self.stop = run_dir, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):
                files.heartbeat(self.run_dir)  # under the status lock: never undoes a final status

    def end(self) -> None:
        """Stop beating before the final status is written."""
        self.stop.set()
        if self.is_alive():
            self.join()


def execute_run(run_dir: Path, *, progress: bool = True, tensorboard: bool = True,
                cache_dir: Path | None = None) -> dict[str, Any]:
    """Run the task for one prepared run folder and record the outcome.

    Never raises for a failure inside the task: the failure is written to status.json and summary.json
    and returned. Returns the summary.

    Raises:
        DiskFullError: not even the failure could be recorded for lack of disk space.
    """
    from freezelab.tasks.base import RunContext
    from freezelab.tasks.registry import get_task

    run_dir = Path(run_dir)
    meta = files.read_json(run_dir / files.RUN_FILE)
    config = yaml.safe_load((run_dir / files.CONFIG_FILE).read_text(encoding="utf-8"))
    status = files.read_status(run_dir) or {}
    files.write_status(run_dir, "running", run_id=meta["run_id"], arm=meta["arm"], seed=meta["seed"],
                       attempt=status.get("attempt", 1), started_at=files.now_iso(), pid=os.getpid(), error=None)
    beat = _Heartbeat(run_dir)
    beat.start()
    log_path = run_dir / "logs" / "run.log"
    log_path.parent.mkdir(exist_ok=True)
    tracker = Tracker(run_dir, tensorboard=tensorboard)
    t0 = time.time()
    with open(log_path, "a", encoding="utf-8") as log_file:
        def log(msg: str) -> None:
            line = f"[{time.strftime('%H:%M:%S')}] {msg}"
            log_file.write(line + "\n")
            log_file.flush()
            if progress:
                print(line, file=sys.stderr, flush=True)

        ctx = RunContext(run_dir=run_dir, run_id=meta["run_id"], study=meta["study"], arm=meta["arm"],
                         seed=meta["seed"], config=config, tracker=tracker,
                         expected_params=meta.get("expected_params"), cache_dir=cache_dir, log=log,
                         progress=progress)
        base = {"study": meta["study"], "task": meta["task"], "arm": meta["arm"], "seed": meta["seed"],
                "run_id": meta["run_id"]}
        try:
            task_dir = Path(meta["task_dir"]) if meta.get("task_dir") else None  # a plugin's path is relative to it
            result = get_task(meta["task"], task_dir).run(ctx)
            summary = {"status": "succeeded", **base, **result, "wall_seconds": time.time() - t0,
                       "peak_memory_bytes": peak_memory_bytes(), "error": None}
            summary["hashes"] = {**summary.get("hashes", {}), "config_hash": meta["config_hash"]}
            files.write_json(run_dir / files.SUMMARY_FILE, summary)   # complete: the run has succeeded
            fault_point("after_summary")
            beat.end()
            files.write_status(run_dir, "succeeded", finished_at=files.now_iso())
            with contextlib.suppress(OSError):                        # the resumable state is not needed now
                finish(run_dir)
            log(f"succeeded in {summary['wall_seconds']:.1f}s")
        except Exception as err:  # every failure is recorded, never propagated to other runs
            facts = ctx.facts
            record = exception_record(err, epoch=facts.get("epoch"), step=facts.get("step"),
                                      last_metrics=tracker.last, task=meta["task"], config=config)
            log(f"FAILED {record['class']}: {record['message']}")
            log("\n".join(record["traceback_tail"]))
            record["log_tail"] = tail(log_path)
            summary = {"status": "failed", **base, **{k: v for k, v in facts.items() if k not in ("epoch", "step")},
                       "wall_seconds": time.time() - t0, "peak_memory_bytes": peak_memory_bytes(),
                       "error": record}
            summary["hashes"] = {**summary.get("hashes", {}), "config_hash": meta["config_hash"]}
            files.write_json(run_dir / files.SUMMARY_FILE, summary)
            beat.end()
            files.write_status(run_dir, "failed", finished_at=files.now_iso(), error=record)
        finally:
            beat.end()
            tracker.close()
    return summary


def main() -> None:
    """Entry point of a run's own process: ``python -m freezelab.experiment.run RUN_DIR [CACHE_DIR]``."""
    run_dir = Path(sys.argv[1])
    cache = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None
    # stdout/stderr already go to logs/run.log: no echo of log lines, no progress bars in the file
    try:
        summary = execute_run(run_dir, progress=False, cache_dir=cache)
    except DiskFullError as err:  # could not record the failure: say why where the parent can see it
        print(f"freezelab: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_DISK_FULL)
    sys.exit(0 if summary["status"] == "succeeded" else 1)


if __name__ == "__main__":
    main()
