"""The shipped LM replication study's arms, on the tiny base: every arm trains, the arms fall into the three
groups by their resolved configs and data hashes, and the report decomposes the gap (end to end, run folders
written by real runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from freezelab.config.load import load_study
from freezelab.experiment.plan import make_plan
from freezelab.experiment.runner import run_plan
from freezelab.report import write_report
from freezelab.tracking.files import read_json

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


def test_the_replication_arms_run_group_and_decompose(tmp_path: Path, tiny_model_dir: Path, tiny_corpus: Path) -> None:
    from tests.conftest import tiny_base

    shipped = yaml.safe_load((ROOT / "examples" / "replicate-embedding-freeze-offline.yaml").read_text())
    arms = {name: {k: v for k, v in arm.items() if k in ("overrides", "allow_confound", "reference")}
            for name, arm in shipped["arms"].items()}
    base = tiny_base(tiny_model_dir, tiny_corpus)
    base["phase2"]["max_epochs"] = 2
    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump({"name": "rep", "task": "lm", "seeds": [0, 1], "base": base, "arms": arms}))
    study = load_study(path)
    out = tmp_path / "out"
    run_plan(study, make_plan(study), out, isolation="inline", progress=False, tensorboard=False)
    summaries = {p.parent.name.split("__")[0]: read_json(p) for p in (out / "runs").glob("*__s0__*/summary.json")}
    assert {a: s["status"] for a, s in summaries.items()} == {a: "succeeded" for a in arms}
    split = {a: s["hashes"]["split_hash"] for a, s in summaries.items()}
    assert split["tied_frozen"] == split["tied_trainable"] != split["seed_tied_frozen"]
    assert split["seed_tied_frozen"] == split["seed_untied_zero_head"] != split["seed_untied_first_turn"]
    write_report(out)
    rep = json.loads((out / "report.json").read_text())["replication"]
    assert [sorted(g["arms"]) for g in rep["groups"]] == [["tied_frozen", "tied_trainable"],
                                                          ["seed_tied_frozen", "seed_untied_zero_head"],
                                                          ["seed_untied_first_turn"]]
    rows = {d["component"]: d for d in rep["decomposition"]}
    assert list(rows) == ["as_run", "identical", "data", "freezing", "head"] and not rep["missing_roles"]
    assert rows["identical"]["paired"] and rows["freezing"]["paired"] and not rows["as_run"]["paired"]
    assert abs(rows["data"]["log_delta"] - (rows["as_run"]["log_delta"] - rows["identical"]["log_delta"])) < 1e-12
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Replication: how the seed's −72 % PPL decomposes" in md
