"""The learning rate each arm was compared at, chosen on validation (``tune:``; experiment/tuning.py).

``OUT/tune.json`` holds, per tuned arm, the grid, every trial's best validation value (per trial seed), the
chosen learning rate and whether it lies at the edge of the grid. The report shows a table (findings.tuning_section),
the validation curve over learning rates (plots.lr_curves) and, for an edge, a warning next to the arm.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

RECORD = "tune.json"


def read_tuning(out_dir: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None); (None, None) when the study did not tune; (None, problem) for an invalid file (an
    untrusted input: the report says so and goes on without it)."""
    from freezelab.tracking.files import read_checked_json

    def check(rec: Any) -> None:
        arms = rec["arms"]
        assert isinstance(arms, dict)
        for a in arms.values():
            grid = [float(x) for x in a["grid"]]
            assert grid and float(a["chosen"]) in grid and isinstance(a["at_edge"], bool)
            assert all(isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)
                       for v in a["values"].values())

    return read_checked_json(Path(out_dir) / RECORD, check, what="learning-rate record",
                             consequence="the tuning is left out of the report. Run the same freezelab run command "
                             "again to rewrite it.")


def curve(rec: dict[str, Any]) -> list[tuple[float, float, int]]:
    """(lr, mean over the trial seeds of the best validation value, failed trials) in grid order."""
    out = []
    for lr in rec["grid"]:
        vals = next((v for k, v in rec["values"].items() if math.isclose(float(k), float(lr), rel_tol=1e-5)), [])
        finite = [float(x) for x in vals if math.isfinite(float(x))]
        out.append((float(lr), sum(finite) / len(finite) if finite else math.nan, len(vals) - len(finite)))
    return out
