"""Data-parallel training inside one run (``runtime.devices: N``): N processes, one batch split between them.

The run's own process is rank 0. It starts ranks 1..N-1 as processes of this module, each on a private copy
of the run folder (config, run record, checkpoints and metrics: what a resume needs), so every rank runs the
task's unchanged code — data, Phase 1, evaluation computed redundantly and identically — while only rank
0's files count: a worker's writes land in its scratch copy and are discarded, its log lines go to
``logs/rank<k>.log`` in the real run folder. In each training step every rank takes its contiguous share of
the batch, weights its mean loss by its share of the batch, and the gradients are summed across ranks
(gloo on CPU, NCCL on CUDA, through Lightning Fabric's process group) before clipping, so every rank applies
the full batch's gradient and the replicas stay identical. The step's loss and correct count are summed the
same way, so every decision (skip a non-finite step, early stopping) is the same on every rank.

A rank that dies stops the run (rank 0 exits, naming the rank and its log; the runner records the run
interrupted and the next ``freezelab run`` resumes it from its last checkpoint); workers exit when rank 0
does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from freezelab.utils.seeding import derive_seed

RANK_ENV = "FREEZELAB_RANK"        # set in a worker rank's process (1..N-1)
WORKER_MODULE = "freezelab.experiment.rank_worker"  # a worker rank's process (run by name: no import)


@dataclass
class DataParallel:
    """This process's rank in a run's data-parallel group."""

    rank: int
    world: int
    workers: list[subprocess.Popen] = field(default_factory=list)
    fabric: Any = None
    log: Any = print
    logs: Path | None = None  # rank 0: the run's logs folder (the workers' logs)
    closing: threading.Event = field(default_factory=threading.Event)  # the watcher stops at the run's end

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, pos: Any) -> tuple[Any, float]:
        """This rank's contiguous share of a batch (positions, item indices: a tensor or an array) and its weight
        (its share of the batch). A rank left without any (a batch smaller than the group) takes the first one
        with weight 0, so that every rank runs the same graph."""
        n = len(pos)
        lo, hi = self.rank * n // self.world, (self.rank + 1) * n // self.world
        if hi == lo:
            return pos[:1], 0.0
        return pos[lo:hi], (hi - lo) / n

    def reseed(self, seed: int, step: int) -> None:
        """Seed the global generator (dropout) for this rank's next step: each process draws its own masks
        (not the other shards' masks again), and a resumed run draws the uninterrupted run's (a worker's RNG
        state would otherwise come from rank 0's checkpoint)."""
        torch.manual_seed(derive_seed(seed, "dropout", f"rank{self.rank}", str(step)) % 2**63)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place. A collective broken by a worker's death stops the run as
        the watcher does (``_worker_died``), not as a failure of the training."""
        try:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        except RuntimeError:
            if self.main:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # the peer's exit may lag its closed connection
                    for k, proc in enumerate(self.workers, start=1):
                        if proc.poll() not in (None, 0):
                            _worker_died(k, proc.returncode, self.logs, self.log)
                    time.sleep(0.2)
            raise
        return tensor

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over the ranks (one flat buffer, one collective). Every rank ran the
        same graph, so the same parameters have gradients everywhere."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.sum_(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def close(self) -> None:
        """Leave the group; rank 0 waits for its workers (and stops any that hang)."""
        self.closing.set()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for k, proc in enumerate(self.workers, start=1):
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "killed after 60 s"
            if code != 0:
                self.log(f"warning: data-parallel rank {k} ended with {code} after the run (logs/rank{k}.log)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(devices: int, run_dir: Path, cache_dir: Path | None, *, accelerator: str, precision: str,
          log: Any = print) -> DataParallel | None:
    """Join (or, as rank 0, create) the run's data-parallel group of ``devices`` processes; None for one.

    Rank 0 starts the workers first, then every rank initialises the process group through Lightning Fabric
    (its environment variables: every process was created here, so Fabric launches nothing itself).
    """
    if devices <= 1:
        return None
    from lightning.fabric import Fabric

    rank = int(os.environ.get(RANK_ENV, "0"))
    workers: list[subprocess.Popen] = []
    if rank == 0:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(devices),
                          NODE_RANK="0", LOCAL_RANK="0", RANK="0")
        logs = Path(run_dir) / "logs"
        logs.mkdir(exist_ok=True)
        for k in range(1, devices):
            env = {**os.environ, RANK_ENV: str(k), "LOCAL_RANK": str(k), "RANK": str(k), "PYTHONUNBUFFERED": "1"}
            with open(logs / f"rank{k}.log", "a", encoding="utf-8") as out:
                workers.append(subprocess.Popen([sys.executable, "-m", WORKER_MODULE, str(run_dir),
                                                 str(cache_dir or ""), str(k)], env=env, stdout=out,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        others = "rank 1 logs to logs/rank1.log" if devices == 2 else f"ranks 1-{devices - 1} log to logs/rank<k>.log"
        log(f"data-parallel: {devices} processes, each step's batch split between them (this one is rank 0; "
            f"{others})")
    else:
        threading.Thread(target=_watch_parent, daemon=True).start()
    dp = DataParallel(rank=rank, world=devices, workers=workers, log=log,
                      logs=Path(run_dir) / "logs" if rank == 0 else None)
    if workers:
        threading.Thread(target=_watch_workers, args=(dp,), daemon=True).start()
    dp.fabric = Fabric(accelerator=accelerator, devices=devices, strategy="ddp", precision=precision)
    dp.fabric.launch()  # the process group (gloo on CPU): every rank blocks here until all have joined
    return dp


@contextmanager
def data_parallel(devices: int, device: torch.device, threads: int | None, ctx: Any, *,
                  precision: str) -> Iterator[tuple[DataParallel | None, torch.device]]:
    """A task's ``run`` inside its data-parallel group (``start``; None for one process) and the device this
    process trains on (one GPU per rank); on a CPU the processes share the cores unless ``threads`` is set.
    The group is left (rank 0 waits for its workers) however the run ends."""
    if threads or (devices > 1 and device.type == "cpu"):
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // devices))
    dp = start(devices, ctx.run_dir, ctx.cache_dir, accelerator=device.type, precision=precision, log=ctx.log)
    try:
        if dp is not None and device.type == "cuda":
            device = torch.device("cuda", dp.rank)
            torch.cuda.set_device(device)
        yield dp, device
    finally:
        if dp is not None:
            dp.close()


def describe(dp: DataParallel | None) -> dict[str, Any]:
    """What summary.json records of a run's data parallelism."""
    if dp is None:
        return {"devices": 1}
    return {"devices": dp.world, "backend": torch.distributed.get_backend(), "split": "each step's batch"}


def _worker_died(k: int, code: int, logs: Path | None, log: Any) -> None:
    """Rank 0, on a worker's death: say which rank and how it ended, then exit at once, as a killed run does —
    the runner records the run interrupted, and the next ``freezelab run`` resumes it from its last checkpoint."""
    path = (logs or Path(".")) / f"rank{k}.log"
    try:
        tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
    except OSError:
        tail = []
    log(f"data-parallel rank {k} died (exit code {code}); the run stops here and resumes from its last checkpoint "
        f"when run again. The end of logs/rank{k}.log:\n" + "\n".join(tail))
    os._exit(1)


def _watch_workers(dp: DataParallel, grace: float = 15.0) -> None:
    """Rank 0: a worker that dies while the run trains stops it (a collective would otherwise wait for it).
    A worker that failed because the run failed (every rank raises the same error) ends just before rank 0
    reaches ``close``: within ``grace`` seconds rank 0 records that failure itself instead."""
    while not dp.closing.wait(1.0):
        for k, proc in enumerate(dp.workers, start=1):
            code = proc.poll()
            if code not in (None, 0) and not dp.closing.wait(grace):
                _worker_died(k, code, dp.logs, dp.log)


def _watch_parent() -> None:
    """A worker: exit when rank 0's process is gone."""
    parent = os.getppid()
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(1)
