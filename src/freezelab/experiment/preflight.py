"""Before anything is written: a task given as a plugin (``freezelab.Task``) gets each of its methods called
once on a few items with the reference arm's config, so a method that breaks its contract stops ``freezelab
run`` with one line (exit 2) instead of failing every run."""

from __future__ import annotations

from freezelab.config.load import Study
from freezelab.tasks.registry import get_task


def preflight(study: Study) -> None:
    """Check the study's task on its reference arm (built-in tasks need no check).

    Raises:
        PluginContractError: a method of the task returned something freezelab cannot use.
    """
    task = get_task(study.spec.task, study.path.parent)
    check = getattr(task, "preflight", None)
    if check is not None:
        check(study.arms[study.reference].config if study.reference in study.arms
              else next(iter(study.arms.values())).config)
