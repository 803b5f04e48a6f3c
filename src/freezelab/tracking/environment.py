"""What a run records about where it ran: versions, device, git commit, peak memory."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def environment(device: str | None = None, precision: str | None = None) -> dict[str, Any]:
    """Python, library versions, device and git commit, for summary.json."""
    import torch

    import freezelab

    versions = {"python": platform.python_version(), "torch": torch.__version__, "freezelab": freezelab.__version__}
    for lib in ("transformers", "numpy", "lightning"):
        with contextlib.suppress(Exception):
            versions[lib] = __import__(lib).__version__
    commit = None
    with contextlib.suppress(Exception):
        root = Path(freezelab.__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        commit = out if len(out) == 40 else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {**versions, "device": device, "gpu": gpu, "precision": precision, "git_commit": commit,
            "host": platform.node(), "cpu_count": os.cpu_count()}


def peak_memory_bytes() -> int:
    """Peak resident memory of this process (and peak CUDA memory when a GPU is used)."""
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if torch.cuda.is_available():
        rss = max(rss, torch.cuda.max_memory_allocated())
    return int(rss)
