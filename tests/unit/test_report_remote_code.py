"""The report warns when a run let its pretrained model's own code run (trust_remote_code)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures

from report_fixtures import make_lm_study  # noqa: E402

from freezelab.report import build_document, markdown  # noqa: E402
from freezelab.report.aggregate import load_study  # noqa: E402
from freezelab.report.warnings import full_analysis  # noqa: E402


def test_a_run_with_trust_remote_code_is_warned_about(tmp_path: Path) -> None:
    out = make_lm_study(tmp_path, seeds=(0, 1))
    path = next((out / "runs").glob("untied__s1__*")) / "summary.json"
    summary = json.loads(path.read_text())
    study = load_study(out)
    assert not [f for f in full_analysis(study).warnings if f.code == "remote_code"]
    path.write_text(json.dumps({**summary, "trust_remote_code": True}))
    study = load_study(out)
    found = [f.params for f in full_analysis(study).warnings if f.code == "remote_code"]
    assert found == [{"arm": "untied", "seed": 1}]
    for lang, text in (("en", "ran Python code shipped with its pretrained model"), ("ja", "同梱の Python コード")):
        assert text in markdown.render(build_document(study, full_analysis(study), [], lang, "now"))
