"""The report's masking figures and headline leak / out-of-band warnings, from summary.json only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures

from report_fixtures import make_timeseries_study  # noqa: E402

from freezelab.report import write_report  # noqa: E402
from freezelab.report.aggregate import load_study  # noqa: E402
from freezelab.report.warnings import full_analysis  # noqa: E402

TFS = ("h1", "h4", "d")


def figures(target: dict[str, float], leaked: dict[str, float], gain: dict[str, float]) -> dict:
    per_tf = {f: {"target_fraction": target[f], "hidden_fraction": 0.1, "blanked_fraction": target[f] + 0.1,
                  "targets": 1000, "leaked_targets": int(1000 * leaked[f]), "leaked_fraction": leaked[f],
                  "oracle_mse": 0.4 * (1 - gain[f]), "interpolation_mse": 0.4, "oracle_gain": gain[f]} for f in TFS}
    return per_tf


def write_masking(out: Path, scheme: str, per_tf: dict | None, *, malformed_run: str | None = None) -> None:
    for path in sorted((out / "runs").glob("*/summary.json")):
        s = json.loads(path.read_text())
        if malformed_run and path.parent.name.startswith(malformed_run):
            s["masking"] = {"splits": "not a dict"}
        elif per_tf is not None:
            s["masking"] = {"scheme": scheme, "ratio": dict.fromkeys(TFS, 0.15), "band": [0.5, 2.0],
                            "splits": {k: per_tf for k in ("train", "val", "test")}}
        path.write_text(json.dumps(s))


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    out = make_timeseries_study(tmp_path_factory.mktemp("leaky"))
    write_masking(out, "seed_closure", figures({"h1": 0.47, "h4": 0.56, "d": 0.63}, {"h1": 0.0, "h4": 0.17, "d": 0.46},
                                              {"h1": 0.0, "h4": 0.04, "d": 0.36}))
    write_report(out, lang="ja")
    return out


def test_leaky_scheme_gets_headline_warnings_with_the_measured_figures(leaky):
    md = (leaky / "report.md").read_text(encoding="utf-8")
    head = md.split("## Settings")[0]
    assert "MASK LEAK (scheme `seed_closure`)" in head
    leak_line = head.split("MASK LEAK")[1].split("\n")[0]
    assert "h4 17 % / +0.040; d 46 % / +0.360. Use masking.scheme: disjoint" in leak_line and "h1" not in leak_line
    assert "MASKED FRACTION OUT OF BAND" in head and "h1 47 % (15 %); h4 56 % (15 %); d 63 % (15 %)" in head
    table = md.split("## Masking")[1].split("\n## ")[0]
    assert "| val | d | 15 % | 63 % | 10 % | 460 (46 %) |" in table
    ja = (leaky / "report.ja.md").read_text(encoding="utf-8")
    assert "マスクのリーク" in ja.split("## 実験条件")[0] and "d 46 % / +0.360" in ja and "## マスキング" in ja


def test_leak_free_scheme_in_band_raises_nothing(tmp_path):
    out = make_timeseries_study(tmp_path)
    write_masking(out, "disjoint", figures(dict.fromkeys(TFS, 0.17), dict.fromkeys(TFS, 0.0), dict.fromkeys(TFS, 0.0)))
    codes = {f.code for f in full_analysis(load_study(out)).warnings}
    assert not codes & {"mask_leak", "mask_band", "mask_unmeasured"}
    write_report(out)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "MASK" not in md.split("## Settings")[0]
    assert "Scheme `disjoint`: coarse-timeframe targets lie before every finer window" in md
    assert "| test | h4 | 15 % | 17 % | 10 % | 0 (0 %) | 0.4000 | 0.4000 | 0 |" in md


def test_an_oracle_gain_alone_is_a_leak_and_a_fraction_below_the_band_is_flagged(tmp_path):
    out = make_timeseries_study(tmp_path)
    write_masking(out, "disjoint", figures({"h1": 0.17, "h4": 0.05, "d": 0.17}, dict.fromkeys(TFS, 0.0),
                                           {"h1": 0.0, "h4": 0.0, "d": 0.2}))
    found = {f.code: f.params for f in full_analysis(load_study(out)).warnings}
    assert found["mask_leak"]["figures"] == "d 0 % / +0.200"
    assert found["mask_band"]["figures"] == "h4 5 % (15 %)"


def test_missing_or_malformed_figures_are_named_not_a_crash(tmp_path):
    out = make_timeseries_study(tmp_path)
    write_masking(out, "disjoint", figures(dict.fromkeys(TFS, 0.17), dict.fromkeys(TFS, 0.0), dict.fromkeys(TFS, 0.0)),
                  malformed_run="frozen__s1")
    found = {f.code: f.params for f in full_analysis(load_study(out)).warnings}
    assert found["mask_unmeasured"]["runs"] == "`frozen` s1"
    write_report(out)
    assert "## Masking" in (out / "report.md").read_text(encoding="utf-8")


def test_unmasked_inputs_get_their_own_headline_warning_not_a_scheme_advice(tmp_path):
    """masking.mask_inputs: false (every target visible in the input) is named as such, for the arms that ran it."""
    out = make_timeseries_study(tmp_path)
    per_tf = figures(dict.fromkeys(TFS, 0.17), dict.fromkeys(TFS, 1.0), dict.fromkeys(TFS, 0.0))
    for v in per_tf.values():
        v["visible_targets"] = v["targets"]
    write_masking(out, "disjoint", per_tf)
    for path in sorted((out / "runs").glob("*/summary.json")):
        s = json.loads(path.read_text())
        if s["arm"] == "frozen":  # the other arms mask their inputs
            s["masking"]["mask_inputs"] = False
        else:
            s["masking"]["splits"] = {k: figures(dict.fromkeys(TFS, 0.17), dict.fromkeys(TFS, 0.0),
                                                 dict.fromkeys(TFS, 0.0)) for k in ("train", "val", "test")}
        path.write_text(json.dumps(s))
    found = {f.code: f.params for f in full_analysis(load_study(out)).warnings}
    assert found["mask_inputs"] == {"arms": "`frozen`", "share": "100 %"}
    assert "mask_leak" not in found  # the time-sharing figures of an unmasked run are not a scheme's leak
    write_report(out, lang="ja")
    head = (out / "report.md").read_text(encoding="utf-8").split("## Settings")[0]
    assert "INPUTS NOT MASKED (masking.mask_inputs: false) in `frozen`" in head
    assert "入力がマスクされていない" in (out / "report.ja.md").read_text(encoding="utf-8")
