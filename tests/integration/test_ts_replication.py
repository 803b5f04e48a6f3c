"""End to end: a tiny replication study (original protocol beside the corrected one) through runner and report."""

from __future__ import annotations

import json

import pytest

from freezelab.config.load import load_study
from freezelab.experiment.plan import make_plan
from freezelab.experiment.runner import run_plan
from freezelab.report import write_report
from freezelab.tracking.files import read_json
from tests import ts_fixtures
from tests.ts_fixtures import tiny_ts_base, write_ts_study

tiny_backbones = ts_fixtures.tiny_backbones  # the fixture

pytestmark = pytest.mark.integration
ORIGINAL = {"windows.layout": "legacy", "windows.context": {"h1": 16, "h4": 16, "d": 16},
            "masking.scheme": "legacy_index_sync", "masking.mask_inputs": False, "data.normalisation": "none"}
CONFOUND = ["windows.layout", "windows.context", "masking.scheme", "masking.mask_inputs", "data.normalisation"]
ARMS = {
    "frozen": {"description": "corrected, frozen", "reference": True},
    "finetune": {"description": "corrected, trained", "overrides": {"backbone.train": "finetune"}},
    "original_frozen": {"description": "original, frozen", "overrides": ORIGINAL, "allow_confound": CONFOUND},
    "original_finetune": {"description": "original, trained", "overrides": {**ORIGINAL, "backbone.train": "finetune"},
                          "allow_confound": CONFOUND},
}


def test_tiny_replication_runs_and_reports_each_protocol_on_its_own(tmp_path, tiny_backbones):
    path = write_ts_study(tmp_path / "study.yaml", tiny_ts_base(tiny_backbones["t5"]), ARMS, seeds=[0, 1],
                          name="tiny-replication")
    study = load_study(path)
    outcomes = run_plan(study, make_plan(study), tmp_path / "out", isolation="inline", progress=False,
                        tensorboard=False)
    assert [o.status for o in outcomes] == ["succeeded"] * 8, [o.message for o in outcomes]
    runs = {s["arm"]: s for s in (read_json(p) for p in (tmp_path / "out" / "runs").glob("*__s0__*/summary.json"))}
    orig, corr = runs["original_frozen"], runs["frozen"]
    assert orig["hashes"]["eval_hash"] != corr["hashes"]["eval_hash"]          # other items: never compared
    assert orig["data"]["layout"] == "legacy" and orig["data"]["legacy"]["look_ahead_share"]["d"] > 0
    assert orig["masking"]["mask_inputs"] is False and not orig["masking"]["leak_free"]
    assert corr["masking"]["leak_free"]
    assert any("mask_inputs=false" in w for w in orig["warnings"])
    write_report(tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Replication: which of the seed's numbers survive" in md
    tables = [ln for ln in md.split("## Replication")[0].splitlines() if ln.startswith("|")]
    assert not any("original_" in ln for ln in tables)  # compared only within its protocol (warned of above)
    assert "Protocol original: arms vs `original_frozen`" in md
    assert "INPUTS NOT MASKED" in md.split("## Settings")[0]
    from typer.testing import CliRunner

    from freezelab.cli import app

    shown = CliRunner().invoke(app, ["show", str(tmp_path / "out")], env={"COLUMNS": "220"}).output
    assert "baseline: interpolation (frozen, finetune)" in shown  # each protocol's baselines, never one for all
    assert "baseline: interpolation (original_frozen, original_finetune)" in shown
    rep = json.loads((tmp_path / "out" / "report.json").read_text())["replication"]
    assert [p["kind"] for p in rep["protocols"]] == ["corrected", "original"]
    assert len(rep["claims"]) == 6
