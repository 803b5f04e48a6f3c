"""``runtime.compile: true`` (torch.compile, the GPU path) trains the same model as eager mode: on CPU, the
epoch losses of a compiled run equal the eager run's within float rounding (1e-5 relative), for both
built-in tasks and a plugin task, and the run folder's checkpoints keep the eager module's names; a plugin's
``runtime.precision: bf16`` runs its loss under bf16 autocast."""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import pytest

from freezelab.config.load import load_study
from freezelab.experiment.plan import make_plan
from freezelab.experiment.runner import run_plan
from freezelab.tracking.files import read_json, read_jsonl
from tests import ts_fixtures
from tests.ts_fixtures import tiny_ts_base, write_ts_study

tiny_backbones = ts_fixtures.tiny_backbones  # the fixture
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                 reason="torch.compile on CPU needs a C++ compiler")]
KEYS = ("train/loss", "val/loss")


def _epochs(path: Path, out: Path, *, compiled: bool = False) -> tuple[list[tuple[float, ...]], dict]:
    from torch._dynamo.utils import counters

    counters.clear()
    study = load_study(path)
    outcomes = run_plan(study, make_plan(study), out, isolation="inline", progress=False, tensorboard=False)
    assert [o.status for o in outcomes] == ["succeeded"], [o.message for o in outcomes]
    graphs = counters["stats"]["unique_graphs"]
    assert (graphs > 0) == compiled, f"{graphs} graphs compiled"  # the compiled path did run compiled code
    (run_dir,) = (out / "runs").glob("*__s0__*")
    rows = [tuple(r[k] for k in KEYS) for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]
    return rows, read_json(run_dir / "summary.json")


def _close(a: list[tuple[float, ...]], b: list[tuple[float, ...]]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            assert math.isclose(u, v, rel_tol=1e-5), (a, b)


def test_a_compiled_lm_run_has_the_eager_runs_losses(write_study, tmp_path: Path, one_thread) -> None:
    eager = _epochs(write_study({"a": {"reference": True}}, name="eager"), tmp_path / "eager")
    import yaml

    base = write_study({"a": {"reference": True}}, name="compiled")  # the same base, then runtime.compile on
    spec = yaml.safe_load(base.read_text())
    spec["base"]["runtime"]["compile"] = True
    base.write_text(yaml.safe_dump(spec))
    compiled = _epochs(base, tmp_path / "compiled", compiled=True)
    _close(eager[0], compiled[0])
    assert eager[1]["hashes"]["config_hash"] != compiled[1]["hashes"]["config_hash"]  # a declared difference
    assert set(eager[1]["files"]) == set(compiled[1]["files"])  # checkpoints under the same names


def test_a_compiled_timeseries_run_has_the_eager_runs_losses(tmp_path: Path, tiny_backbones, one_thread) -> None:
    base = tiny_ts_base(tiny_backbones["t5"])
    base["runtime"] = {**base.get("runtime", {}), "precision": "fp32"}
    arms = {"frozen": {"reference": True}}
    eager = _epochs(write_ts_study(tmp_path / "eager.yaml", base, arms), tmp_path / "eager")
    on = copy.deepcopy(base)
    on["runtime"]["compile"] = True
    compiled = _epochs(write_ts_study(tmp_path / "compiled.yaml", on, arms), tmp_path / "compiled", compiled=True)
    _close(eager[0], compiled[0])


def test_a_compiled_plugin_run_has_the_eager_runs_losses_and_bf16_runs_under_autocast(tmp_path: Path,
                                                                                      one_thread) -> None:
    """A freezelab.Task (tests/integration/test_plugins.py's Tiny): runtime.compile gives the eager losses;
    runtime.precision: bf16 runs the task's loss under bf16 autocast (its losses move by bf16 rounding, not
    more) and records the precision."""
    from tests.integration.test_plugins import STUDY, write

    def study(name: str, runtime: dict) -> Path:
        spec = copy.deepcopy(STUDY)
        spec["seeds"], spec["arms"] = [0], {"finetune": {"reference": True}}
        spec["base"]["runtime"] = runtime
        return write(tmp_path / name, study=spec)

    eager = _epochs(study("eager", {}), tmp_path / "eager" / "out")
    compiled = _epochs(study("compiled", {"compile": True}), tmp_path / "compiled" / "out", compiled=True)
    _close(eager[0], compiled[0])
    bf16 = _epochs(study("bf16", {"precision": "bf16"}), tmp_path / "bf16" / "out")
    assert bf16[1]["environment"]["precision"] == "bf16" and eager[1]["environment"]["precision"] == "fp32"
    for x, y in zip(eager[0], bf16[0]):
        for u, v in zip(x, y):
            assert u != v and math.isclose(u, v, rel_tol=0.05), (eager[0], bf16[0])  # bf16 really ran
