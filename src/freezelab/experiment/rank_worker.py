"""A worker rank of a data-parallel run (``runtime.devices: N``, engine/parallel.py):
``python -m freezelab.experiment.rank_worker RUN_DIR CACHE_DIR RANK``, started by the run's rank 0.

It runs the run's task on a scratch copy of the run folder (what a resume needs: config, run record, status,
metrics, checkpoints), so that the task's code is unchanged and nothing it writes touches the real folder;
its log lines go to ``logs/rank<k>.log`` of the real folder. The scratch copy is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

COPIED = ("config.yaml", "run.json", "status.json", "metrics.jsonl", "checkpoints")


def run_worker(run_dir: Path, cache_dir: Path | None, rank: int) -> int:
    """Rank ``rank`` of the run in ``run_dir``; returns the process's exit code."""
    from freezelab.experiment.run import execute_run

    scratch = Path(tempfile.mkdtemp(prefix=f"freezelab-rank{rank}-"))
    try:
        for name in COPIED:
            src = run_dir / name
            if src.is_dir():
                shutil.copytree(src, scratch / name)
            elif src.exists():
                shutil.copy2(src, scratch / name)
        (scratch / "logs").mkdir()
        os.symlink((run_dir / "logs" / f"rank{rank}.log").resolve(), scratch / "logs" / "run.log")
        summary = execute_run(scratch, progress=False, tensorboard=False, cache_dir=cache_dir)
        return 0 if summary["status"] == "succeeded" else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: os._exit(1))
    sys.exit(run_worker(Path(sys.argv[1]), Path(sys.argv[2]) if sys.argv[2] else None, int(sys.argv[3])))
