"""Dispatch the runs of a plan as independent Ray tasks (``freezelab run --executor ray``).

Every run is self-contained — its folder, its lock, its status — so a Ray task only needs the run
folder's path: it takes the folder's lock, executes the run in its own process (the same code path as
the local runner) and returns the outcome. Across machines either the output folder is on a shared
filesystem, or ``storage`` names a URI every node can reach (experiment/storage.py): the run folders then
live there, each task runs its run in a scratch folder of its own node, and the head pulls the results
into its output folder. A task lost with its node leaves the run interrupted; the next ``freezelab run``
resumes it from its last checkpoint (on a shared folder, or in the storage).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from freezelab.config.load import Study
from freezelab.errors import FreezelabError
from freezelab.experiment.plan import RunSpec
from freezelab.experiment.progress import StudyProgress
from freezelab.experiment.publish import RunSink, publish_run
from freezelab.experiment.runner import RunOutcome, prepare_run, run_one, verified_summary, write_study_record
from freezelab.tracking.progress import PROGRESS_FILE


def _task(spec: RunSpec, run_dir: str, cache_dir: str, retry_failed: bool, tensorboard: bool) -> RunOutcome:
    return run_one(spec, Path(run_dir), Path(cache_dir), isolation="process", retry_failed=retry_failed,
                   tensorboard=tensorboard)


def _task_via_storage(spec: RunSpec, uri: str, retry_failed: bool, tensorboard: bool,
                      sync_seconds: float) -> RunOutcome:
    """On a worker node: pull the run folder from the storage into this node's scratch folder, run it there
    while pushing what changes, push the end state."""
    from freezelab.experiment.storage import RunStore, Syncer, scratch_root

    store, rel = RunStore(uri), f"runs/{spec.run_id}"
    scratch = scratch_root()
    run_dir = scratch / "runs" / spec.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    store.pull(rel, run_dir)
    with Syncer(store, run_dir, rel, every=sync_seconds):
        return run_one(spec, run_dir, scratch / "cache", isolation="process", retry_failed=retry_failed,
                       tensorboard=tensorboard)


def _lost(spec: RunSpec, err: Exception) -> RunOutcome:
    """A task Ray could not finish (its node or worker died): the run is interrupted, not failed by itself."""
    first = (str(err).strip().splitlines() or [""])[0][:300]
    return RunOutcome(spec.run_id, spec.arm, spec.seed, "failed",
                      f"{type(err).__name__}: the Ray task running it was lost ({first}); run the same command "
                      "again to resume it from its last checkpoint")


def run_plan_ray(study: Study, plan: list[RunSpec], out_dir: Path, *, address: str | None = None,
                 cpus_per_run: float = 1.0, gpus_per_run: float = 0.0, retry_failed: bool = True,
                 progress: bool = True, tensorboard: bool = True, command: str = "", console: Console | None = None,
                 sinks: Sequence[RunSink] = (), storage: str | None = None,
                 sync_seconds: float | None = None) -> list[RunOutcome]:
    """Execute ``plan`` as Ray tasks; returns one outcome per run, in plan order.

    Args:
        address: a Ray cluster address (``auto``, ``ray://host:10001``); None starts a local instance.
        cpus_per_run, gpus_per_run: resources each run reserves (several small runs may share a GPU).
        storage: a URI every node can reach (experiment/storage.py); None: ``out_dir`` is shared by every node.
        sync_seconds: with ``storage``, how often a running task pushes what changed (None:
            ``FREEZELAB_SYNC_SECONDS``, else 5).
        Others as in ``runner.run_plan``.

    Raises:
        FreezelabError: Ray is not installed, no cluster answers at ``address``, or ``storage`` cannot be
            written.
    """
    try:
        import ray
    except ImportError as err:
        raise FreezelabError("--executor ray needs Ray: pip install 'freezelab[ray]'") from err
    out_dir = Path(out_dir).resolve()
    write_study_record(study, out_dir, command, plan)
    store = None
    lease: Any = contextlib.nullcontext()
    if storage is not None:
        from freezelab.experiment.storage import HeadLease, RunStore
        from freezelab.experiment.storage import sync_seconds as default_sync

        sync_seconds = default_sync() if sync_seconds is None else sync_seconds
        store = RunStore(storage)
        store.check()
        lease = HeadLease(store, out_dir, log=(console or Console(stderr=True)).print)
    with lease:  # one head per storage (storage.HeadLease): refused here, before anything runs
        if store is not None:
            for spec in plan:  # the storage holds the runs: what it has (a finished or interrupted run) comes first
                store.pull(f"runs/{spec.run_id}", spec.run_dir(out_dir))
        run_dirs = [prepare_run(spec, out_dir, task=study.spec.task, command=command, profile=study.profile,
                                task_dir=study.path.parent) for spec in plan]
        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise FreezelabError(
                    f"--ray-address {address}: no Ray cluster answers there ({type(err).__name__}: "
                    f"{str(err).splitlines()[0][:200]}). Start one with `ray start --head` (then --ray-address auto), "
                    "pass the address of a running cluster, or drop --ray-address to start a local Ray instance. "
                    "Nothing has run yet.") from err
        try:
            outcomes: list[RunOutcome | None] = [None] * len(plan)
            resources = {"num_cpus": cpus_per_run, "num_gpus": gpus_per_run, "max_retries": 0}
            if store is None:
                remote = ray.remote(**resources)(_task)
                pending = {remote.remote(spec, str(d), str(out_dir / "cache"), retry_failed, tensorboard): i
                           for i, (spec, d) in enumerate(zip(plan, run_dirs))}
            else:
                pending = {}
                remote = ray.remote(**resources)(_task_via_storage)
                for i, (spec, d) in enumerate(zip(plan, run_dirs)):
                    if verified_summary(spec, d)[0] is not None:  # finished: nothing to send anywhere
                        outcomes[i] = RunOutcome(spec.run_id, spec.arm, spec.seed, "skipped", "already succeeded")
                        continue
                    store.push(d, f"runs/{spec.run_id}")
                    pending[remote.remote(spec, storage, retry_failed, tensorboard, sync_seconds)] = i
            display = StudyProgress(f"{study.spec.name} (ray)", list(zip(plan, run_dirs)), console=console,
                                    enabled=progress)
            with display:  # one line per active run, from the runs' progress files
                for i, outcome in enumerate(outcomes):
                    if outcome is not None:
                        display.finished(plan[i], run_dirs[i], outcome)
                        publish_run(run_dirs[i], out_dir, tensorboard=tensorboard, sinks=sinks, console=display.console)
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1, timeout=display.refresh)
                    if store is not None:  # the live lines read each run's progress file, pushed by its task
                        _quietly(lease.renew)
                        for i in pending.values():
                            _quietly(lambda i=i: store.pull(f"runs/{plan[i].run_id}", run_dirs[i],
                                                            only=[PROGRESS_FILE]))
                    display.poll()
                    for ref in done:
                        i = pending.pop(ref)
                        try:
                            outcomes[i] = ray.get(ref)
                        except ray.exceptions.RayError as err:
                            outcomes[i] = _lost(plan[i], err)
                        if store is not None:
                            store.pull(f"runs/{plan[i].run_id}", run_dirs[i])
                        display.finished(plan[i], run_dirs[i], outcomes[i])
                        publish_run(run_dirs[i], out_dir, tensorboard=tensorboard, sinks=sinks, console=display.console)
        finally:
            if started_here:
                ray.shutdown()
        return [o for o in outcomes if o is not None]


def _quietly(step) -> None:
    try:
        step()
    except Exception:  # a live line may lag; the end-of-run pull is the one that counts
        pass
