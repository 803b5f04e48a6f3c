"""The device a run trains on: ``runtime.device`` resolved, never a silent CPU fallback."""

from __future__ import annotations

import torch

from freezelab.errors import ConfigError


def resolve_device(requested: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cpu``; ``cuda``: CUDA or an error.

    Raises:
        ConfigError: ``cuda`` was asked for and CUDA is not available.
    """
    if requested == "cuda" and not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise ConfigError(f"runtime.device=cuda, but CUDA is not available here ({build}). Install a CUDA build of "
                          "torch on a machine with a GPU, or set runtime.device: auto (or cpu) to run on the CPU.")
    return torch.device("cuda" if requested in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
