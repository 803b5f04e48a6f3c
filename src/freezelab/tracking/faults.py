"""Fault injection for the kill tests: ``FREEZELAB_FAULT=SITE[@N]`` SIGKILLs the process at the N-th
time (default 1) it reaches ``SITE``, e.g. ``before_rename:state.json@2`` or ``append:metrics.jsonl@5``.

Sites are named where files are written (``before_rename:NAME``, ``after_rename:NAME``,
``append:NAME`` — half a line written; NAME may be a glob such as ``lm-data-*.npz``) and at a few run
milestones (``after_summary``). With
``FREEZELAB_FAULT_TARGET=group`` the whole process group is killed, as when a user kills a study; with
``FREEZELAB_FAULT_RANK=K`` only rank K of a data-parallel run (engine/parallel.py; 0 is the run's process).
Costs one dictionary lookup when the variable is unset.
"""

from __future__ import annotations

import fnmatch
import os
import signal

FAULT_ENV = "FREEZELAB_FAULT"
_seen: dict[str, int] = {}


def fault_point(site: str) -> None:
    """Kill this process (or its group) with SIGKILL when ``FREEZELAB_FAULT`` names ``site``."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    rank = os.environ.get("FREEZELAB_FAULT_RANK")
    if rank is not None and rank != os.environ.get("FREEZELAB_RANK", "0"):
        return
    want, _, nth = spec.partition("@")
    if not fnmatch.fnmatchcase(site, want):
        return
    _seen[want] = _seen.get(want, 0) + 1
    if _seen[want] == int(nth or 1):
        if os.environ.get("FREEZELAB_FAULT_TARGET") == "group":
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
