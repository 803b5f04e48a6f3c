"""Dispatch the runs of a plan as independent Ray tasks (``freezelab run --executor ray``).

Every run is self-contained — its folder, its lock, its status — so a Ray task only needs the run
folder's path: it takes the folder's lock, executes the run in its own process (the same code path as
the local runner) and returns the outcome. Across machines the output folder must be on a shared
filesystem. A task killed with its node leaves the run ``running``; the next ``freezelab run`` resumes
it from its last epoch checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from freezelab.config.load import Study
from freezelab.errors import FreezelabError
from freezelab.experiment.plan import RunSpec
from freezelab.experiment.progress import StudyProgress
from freezelab.experiment.publish import RunSink, publish_run
from freezelab.experiment.runner import RunOutcome, prepare_run, run_one, write_study_record


def _task(spec: RunSpec, run_dir: str, cache_dir: str, retry_failed: bool, tensorboard: bool) -> RunOutcome:
    return run_one(spec, Path(run_dir), Path(cache_dir), isolation="process", retry_failed=retry_failed,
                   tensorboard=tensorboard)


def run_plan_ray(study: Study, plan: list[RunSpec], out_dir: Path, *, address: str | None = None,
                 cpus_per_run: float = 1.0, gpus_per_run: float = 0.0, retry_failed: bool = True,
                 progress: bool = True, tensorboard: bool = True, command: str = "", console: Console | None = None,
                 sinks: Sequence[RunSink] = ()) -> list[RunOutcome]:
    """Execute ``plan`` as Ray tasks; returns one outcome per run, in plan order.

    Args:
        address: a Ray cluster address (``auto``, ``ray://host:10001``); None starts a local instance.
        cpus_per_run, gpus_per_run: resources each run reserves (several small runs may share a GPU).
        Others as in ``runner.run_plan``.

    Raises:
        FreezelabError: Ray is not installed, or no cluster answers at ``address``.
    """
    try:
        import ray
    except ImportError as err:
        raise FreezelabError("--executor ray needs Ray: pip install 'freezelab[ray]'") from err
    out_dir = Path(out_dir).resolve()
    write_study_record(study, out_dir, command, plan)
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
        remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(_task)
        pending = {remote.remote(spec, str(d), str(out_dir / "cache"), retry_failed, tensorboard): i
                   for i, (spec, d) in enumerate(zip(plan, run_dirs))}
        outcomes: list[RunOutcome | None] = [None] * len(plan)
        display = StudyProgress(f"{study.spec.name} (ray)", list(zip(plan, run_dirs)), console=console,
                                enabled=progress)
        with display:  # one line per active run, from the runs' progress files
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=display.refresh)
                display.poll()
                for ref in done:
                    i = pending.pop(ref)
                    outcomes[i] = ray.get(ref)
                    display.finished(plan[i], run_dirs[i], outcomes[i])
                    publish_run(run_dirs[i], out_dir, tensorboard=tensorboard, sinks=sinks, console=display.console)
    finally:
        if started_here:
            ray.shutdown()
    return [o for o in outcomes if o is not None]
