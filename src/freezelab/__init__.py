"""freezelab: controlled experiments on freezing, fine-tuning and re-initialising pretrained parts.

The Python API (docs/python-api.md, docs/plugins.md):

    from freezelab import Task, Metric, Splits          # your own task (a study's task: file.py:Class)
    from freezelab import load_study, run_study, results, report

Names are imported on first use, so ``import freezelab`` stays light (the CLI starts without torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"Task": "freezelab.engine.task", "Metric": "freezelab.engine.task", "Splits": "freezelab.engine.task",
         "load_study": "freezelab.api", "run_study": "freezelab.api", "results": "freezelab.api",
         "Results": "freezelab.api"}
__all__ = [*_LAZY, "report"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "report":  # the report package, callable: freezelab.report(out_dir, lang="ja")
        import importlib

        return importlib.import_module("freezelab.report")
    raise AttributeError(f"module 'freezelab' has no attribute {name!r}")
