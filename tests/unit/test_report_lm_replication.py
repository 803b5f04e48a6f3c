"""The LM replication section on planted outcomes: the seed's −72 % decomposed into data confound, what is
left on identical data and the freezing effect itself; paired rows carry intervals, cross-item rows none. Also
the findings' sentence on a reference model at the same trainable budget."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures

from report_fixtures import HASHES, LM_BASELINES, LM_HEADLINE, lm_epochs, write_run, write_study_json  # noqa: E402

from freezelab.report import write_report  # noqa: E402
from freezelab.report.aggregate import load_study  # noqa: E402
from freezelab.report.lm_replication import decompose, lm_groups  # noqa: E402
from freezelab.report.protocols import analyse_groups  # noqa: E402

SEED = {"context": {"reset": "stream", "wraparound": True}, "model": {"embed_norm": "trainable_shared"},
        "phase2": {"order": "contiguous"}}
LEGACY_HEAD = {"tie": False, "init": "zeros", "bias": True}
# arm -> (config, split hash letter, planted test PPL per seed). Names deliberately say nothing of the role.
ARMS = {
    "a_ref": ({}, "c", [350.0, 356.0, 345.0]),
    "b_trainable": ({"embedding": {"freeze": False}}, "c", [500.0, 512.0, 490.0]),
    "c_seed_tied": (SEED, "s", [300.0, 306.0, 296.0]),
    "d_seed_untied": ({**SEED, "model": {"embed_norm": "trainable_shared", "head": LEGACY_HEAD}}, "s",
                      [400.0, 410.0, 392.0]),
    "e_as_run": ({**SEED, "model": {"embed_norm": "trainable_shared", "head": LEGACY_HEAD},
                  "data": {"text": "first_turn"}}, "f", [1000.0, 1030.0, 985.0]),
}


def _config(over: dict) -> dict:
    cfg = {"model": {"kind": "cvfp", "head": {"tie": True, "init": "copy", "bias": False}, "embed_norm": "frozen"},
           "embedding": {"freeze": True}, "context": {"reset": "per_document", "wraparound": False},
           "phase2": {"order": "shuffled"}, "data": {"text": "full"}}
    for section, values in over.items():
        cfg[section] = {**cfg[section], **values}
    return cfg


def _diff(over: dict) -> dict:
    """run.json's diff_from_base: dotted key -> [base, arm] for what the arm's config changes."""
    base, arm = _config({}), _config(over)
    return {f"{sec}.{k}": [base[sec].get(k), v] for sec in arm for k, v in arm[sec].items()
            if base.get(sec, {}).get(k) != v}


def make_study(out: Path, arms: dict = ARMS) -> Path:
    write_study_json(out, "replicate-embedding-freeze", "lm", list(arms), [0, 1, 2], "a_ref")
    for arm, (over, split, ppls) in arms.items():
        for seed, ppl in enumerate(ppls):
            folder = write_run(out, study="replicate-embedding-freeze", task="lm", arm=arm, seed=seed,
                               reference=arm == "a_ref", lines=lm_epochs(2, 3, 0.01 * seed), best=2,
                               test={"test/loss": math.log(ppl), "test/ppl": ppl, "test/acc": 0.15},
                               headline=LM_HEADLINE, baselines=LM_BASELINES, params=(1000, 100),
                               hashes={**HASHES, "split_hash": split * 64, "eval_hash": split * 64}, items=True,
                               diff=_diff(over))
            (folder / "config.yaml").write_text(yaml.safe_dump(_config(over)), encoding="utf-8")
    return out


def _log_ratio(a: str, b: str) -> float:
    """Independent: mean log PPL of a minus b, from the planted values."""
    mean = lambda arm: sum(math.log(v) for v in ARMS[arm][2]) / 3  # noqa: E731
    return mean(a) - mean(b)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = make_study(tmp_path_factory.mktemp("lmrep"))
    write_report(out, lang="ja")
    return out


def test_groups_follow_protocol_and_data_not_names(study):
    groups = lm_groups(load_study(study))
    assert [sorted(g.arms) for g in groups] == [["a_ref", "b_trainable"], ["c_seed_tied", "d_seed_untied"],
                                                ["e_as_run"]]
    assert [g.reference for g in groups] == ["a_ref", "c_seed_tied", "e_as_run"]


def test_the_decomposition_recovers_the_planted_effects(study):
    parts, missing = decompose(analyse_groups(lm_groups(load_study(study))))
    by = {p.key: p for p in parts}
    assert not missing and list(by) == ["as_run", "identical", "data", "freezing", "head"]
    expected = {"as_run": _log_ratio("c_seed_tied", "e_as_run"),
                "identical": _log_ratio("c_seed_tied", "d_seed_untied"), "freezing": _log_ratio("a_ref", "b_trainable")}
    expected["data"] = expected["as_run"] - expected["identical"]
    expected["head"] = expected["identical"] - expected["freezing"]
    for key, value in expected.items():
        assert by[key].log_delta == pytest.approx(value, abs=0.02), key
    assert math.expm1(by["as_run"].log_delta) == pytest.approx(-0.70, abs=0.01)    # the planted −70 %
    for key in ("identical", "freezing"):  # paired on the same items: an interval that holds the planted value
        p = by[key]
        assert p.paired and p.lo < expected[key] < p.hi < 0 and p.verdict == "better" and p.n == 3
    for key in ("as_run", "data", "head"):  # across different items: descriptive, never a verdict
        assert not by[key].paired and math.isnan(by[key].lo)


def test_the_section_labels_cross_item_rows_descriptive_and_keeps_the_main_analysis_paired(study):
    md = (study / "report.md").read_text(encoding="utf-8")
    first, rep = md.split("## Replication")[0], md.split("## Replication")[1].split("\n## ")[0]
    assert "e_as_run" not in first and "c_seed_tied" not in first   # the first screen: the corrected group only
    rows = {line.split("|")[1].strip(): line for line in rep.splitlines() if line.startswith("| ")}
    assert "descriptive" in rows["As-run gap (the seed's comparison)"]
    assert "-70." in rows["As-run gap (the seed's comparison)"] and "seed: -71.9%" in rep
    assert "descriptive" in rows["Data confound (as-run − identical)"]
    assert "paired on 3 seeds' items: `a_ref` better" in rows["Freezing itself (corrected protocol)"]
    assert "-25." in rows["Left on identical data (head + freezing)"]
    ja = (study / "report.ja.md").read_text(encoding="utf-8")
    assert "−72 % PPL の内訳" in ja and "記述のみ" in ja
    data = json.loads((study / "report.json").read_text())["replication"]
    assert [d["component"] for d in data["decomposition"]] == ["as_run", "identical", "data", "freezing", "head"]
    assert data["decomposition"][0]["interval"] is None and data["decomposition"][1]["interval"] is not None


def test_the_same_pair_reads_the_same_everywhere_and_every_arm_is_described(study):
    """A paired row of the decomposition (first vs second) and the arm tables (arm vs its group's reference) read
    one comparison in opposite directions: the row says so, with the tables' number; the header counts what
    exists, and every arm shows its config diff, runtime and data hashes."""
    md = (study / "report.md").read_text(encoding="utf-8")
    rep = md.split("## Replication")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in rep.splitlines() if line.startswith("| ")}
    freezing = rows["Freezing itself (corrected protocol)"]
    table_row = next(ln for ln in md.split("## Replication")[0].splitlines() if ln.startswith("| `b_trainable`"))
    table_cell = table_row.split("|")[3].strip()  # b_trainable vs a_ref: +…% […]
    assert table_cell.startswith("+") and freezing.split("|")[3].strip().startswith("-")
    assert f"read the other way round, `b_trainable` vs `a_ref`, is {table_cell} in the arm tables" in freezing
    assert math.expm1(-_log_ratio("a_ref", "b_trainable")) * 100 == pytest.approx(
        float(table_cell.split("%")[0]), abs=0.1)  # the tables' number is the planted one, reversed
    assert "| Component | Arms (first vs second) | Δ test/ppl: first vs second |" in rep
    assert "**Every arm of the study** (15 run folders, 5 arms × 3 seeds)" in rep
    assert "(task `lm`; 5 arms × 3 seeds; reference arm `a_ref`)" in md  # the header counts the whole study
    arms = {ln.split("|")[1].strip(): ln for ln in rep.split("**Every arm of the study**")[1].splitlines()
            if ln.startswith("| `")}
    assert set(arms) == {f"`{a}`" for a in ARMS}
    assert "`data.text`=first_turn" in arms["`e_as_run`"] and "(identical to base)" in arms["`a_ref`"]
    assert "101 s (100–102 s)" in arms["`c_seed_tied`"] and "ffffffff" in arms["`e_as_run`"]


def test_a_study_without_seed_arms_has_no_section(tmp_path):
    out = make_study(tmp_path, {k: v for k, v in ARMS.items() if k in ("a_ref", "b_trainable")})
    assert lm_groups(load_study(out)) == []


def test_missing_roles_leave_their_rows_out(tmp_path):
    out = make_study(tmp_path, {k: v for k, v in ARMS.items() if k != "d_seed_untied"})
    parts, missing = decompose(analyse_groups(lm_groups(load_study(out))))
    assert [p.key for p in parts] == ["as_run", "freezing"] and missing == ["seed_untied"]


@pytest.mark.parametrize(("ppls", "word"), [([250.0, 254.0, 247.0], "No:"), ([600.0, 612.0, 590.0], "Yes:")])
def test_findings_say_whether_cvfp_is_competitive_with_a_reference_model(tmp_path, ppls, word):
    arms = {"a_ref": ARMS["a_ref"], "b_gpt2": ({"model": {"kind": "gpt2"}}, "c", ppls)}
    out = make_study(tmp_path, arms)
    for folder in (out / "runs").glob("b_gpt2__*"):
        s = json.loads((folder / "summary.json").read_text())
        s["params"]["matched"] = {"kind": "gpt2", "trainable": 1_782_540, "cvfp_trainable": 1_776_384, "ratio": 1.0}
        (folder / "summary.json").write_text(json.dumps(s), encoding="utf-8")
    write_report(out)
    conclusion = (out / "report.md").read_text(encoding="utf-8").split("## Conclusion")[1]
    line = next(ln for ln in conclusion.splitlines() if "competitive at the same trainable budget" in ln)
    assert word in line and "GPT-2" in line and "1,782,540" in line and "1,776,384" in line
