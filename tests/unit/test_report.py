"""The comparison report end to end on fabricated run folders (tests/report_fixtures.py)."""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures

from report_fixtures import (  # noqa: E402
    LM_TEST_PPL,
    make_demo_study,
    make_lm_study,
    make_timeseries_study,
    make_wide_study,
    write_study_json,
)

from freezelab.errors import ConfigError, DataNotFoundError  # noqa: E402
from freezelab.report import build_document, markdown, write_report  # noqa: E402
from freezelab.report.aggregate import load_study  # noqa: E402
from freezelab.report.stats import describe  # noqa: E402
from freezelab.report.warnings import full_analysis  # noqa: E402

T_0975_DF5 = 2.5705818366147395  # t_{0.975, 5}: pooled df (2 + 2 + 1) of the LM fixture


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    out = make_lm_study(tmp_path_factory.mktemp("lm"))
    return out, write_report(out, lang="ja")


@pytest.fixture(scope="module")
def lm_md(lm):
    out, _ = lm
    return (out / "report.md").read_text(encoding="utf-8"), (out / "report.ja.md").read_text(encoding="utf-8")


def codes(out: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for f in full_analysis(load_study(out)).warnings:
        found.setdefault(f.code, []).append(f.params)
    return found


# ---- files and statistics ----

def test_writes_every_output(lm):
    out, paths = lm
    for name in ("report.md", "report.ja.md", "report.html", "results.csv", "runs.csv", "report.json"):
        assert paths[name] == out / name and (out / name).stat().st_size > 0
    pngs = [k for k in paths if k.startswith("plots/") and k.endswith(".png")]
    assert {"plots/final_test_ppl.png", "plots/paired_test_ppl.png", "plots/grad_norm.png"} <= set(pngs)
    assert all(paths[k[:-3] + "svg"].exists() for k in pngs)


def test_results_csv_long_format_and_runs_csv(lm):
    out, _ = lm
    res = pd.read_csv(out / "results.csv")
    assert list(res.columns[:7]) == ["study", "arm", "seed", "epoch", "split", "metric", "value"]
    test_ppl = res[(res.kind == "test") & (res.split == "test") & (res.metric == "ppl")]
    assert sorted(test_ppl[test_ppl.arm == "untied"].value) == sorted(LM_TEST_PPL["untied"].values())
    runs = pd.read_csv(out / "runs.csv")
    failed = runs[runs.status == "failed"]
    assert len(runs) == 9 and len(failed) == 1
    assert (failed.error_class.iloc[0], failed.error_message.iloc[0]) == ("ValueError", "boom")


def test_comparison_numbers_recomputed_from_run_folders(lm_md):
    """Without per-item files: seed-level statistics, the seed variance pooled over arms (docs/statistics.md)."""
    en, _ = lm_md
    s = describe(list(LM_TEST_PPL["untied"].values()), log_scale=True)
    row = next(line for line in en.splitlines() if line.startswith("| `untied` | 3 |"))
    logs = {arm: [math.log(v) for v in vals.values()] for arm, vals in LM_TEST_PPL.items()}
    var = {arm: statistics.variance(v) for arm, v in logs.items()}
    pooled = sum((len(logs[a]) - 1) * var[a] for a in logs) / sum(len(v) - 1 for v in logs.values())
    mine = max(pooled, (1 + 2 / 2) * var["untied"])  # n = 3: own variance × 2 when above the pool
    half = T_0975_DF5 * math.sqrt(mine / 3)
    mean = statistics.mean(logs["untied"])
    assert f"{s.mean:,.2f} ± {s.std:,.2f}" in row
    assert f"[{math.exp(mean - half):,.2f}, {math.exp(mean + half):,.2f}]" in row
    pct = (math.exp(sum(math.log(LM_TEST_PPL["untied"][k] / LM_TEST_PPL["tied_frozen"][k]) for k in range(3)) / 3)
           - 1) * 100
    assert f"{pct:+.1f}%" in row


def test_verdicts_better_and_indistinguishable(lm):
    out, _ = lm
    a = full_analysis(load_study(out))
    ppl = a.primary
    assert ppl.key == "test/ppl" and a.sources[ppl.key].method == "seeds only"
    assert a.arm_stat(ppl, "untied").verdict == "better"
    assert a.arm_stat(ppl, "tied_trainable").verdict == "no_difference"
    for arm in ("untied", "tied_trainable"):
        c = a.arm_stat(ppl, arm).vs_ref
        assert c.decided == (c.p_holm < 0.05)
    assert a.family_size() == 2 + 3 + 1  # two arms vs the reference, three vs kn_bigram, best vs runner-up
    assert a.best[ppl.key].arm == "untied" and a.best[ppl.key].decided


def test_conclusion_follows_template(lm_md):
    en, ja = lm_md
    pat = (r"`untied` vs `tied_frozen`: test/ppl [\d,.]+±[\d,.]+ vs [\d,.]+±[\d,.]+ \(n=3\); "
           r"paired Δ -[\d.]+% \[-[\d.]+%, -[\d.]+%\] → better \(better in 3/3 seeds\)\.")
    assert re.search(pat, en)
    assert "no detectable difference (better in 1/2 seeds)" in en
    assert "## Conclusion" in en and "[fill in" not in en.lower()
    assert re.search(r"`untied` 対 `tied_frozen`: test/ppl .* → 改善 \(3 シード中 3 で改善\)。", ja)


# ---- failures ----

def test_failure_section_and_labels(lm_md, lm):
    en, ja = lm_md
    for text in (en, ja):
        assert "FAILED (ValueError: boom)" in text
        assert "raise ValueError('boom')" in text  # traceback tail
        assert "epoch 2 step 120 loss 5.1" in text  # log tail
    assert re.search(r"\| `tied_trainable` † \| 2/3 \|", en)  # arm marked, n shown
    assert "FAILED (ValueError: boom)" in (lm[0] / "report.html").read_text(encoding="utf-8")


# ---- warnings ----

def test_warnings_from_main_fixture(lm):
    found = codes(lm[0])
    assert found["best_first"][0]["arm"] == "tied_trainable"
    # tied_frozen and tied_trainable are level with kn_bigram (335.5): not shown to beat it, never "no skill"
    assert {p["arm"] for p in found["not_above_baseline"]} == {"tied_frozen", "tied_trainable"}
    assert "below_baseline" not in found
    assert found["failed_seeds"][0] == {"arm": "tied_trainable", "n": 2, "total": 3,
                                        "runs": ["FAILED (ValueError: boom)"]}
    assert "unequal_n" in found and "confound_hash" not in found and "single_seed" not in found


def test_warning_single_seed(tmp_path):
    out = make_lm_study(tmp_path, seeds=(0,))
    assert "single_seed" in codes(out)
    a = full_analysis(load_study(out))
    assert a.arm_stat(a.metrics[0], "untied").verdict == "insufficient"  # no CI with one seed


def test_warning_hash_mismatch_is_a_headline_confound(tmp_path):
    out = make_lm_study(tmp_path, confound=True)
    found = codes(out)
    assert found["confound_hash"][0]["hash"] == "split_hash"
    study = load_study(out)
    md = markdown.render(build_document(study, full_analysis(study), [], "en", "now"))  # no plots: fast
    overview = md.split("## Settings")[0]
    assert "CONFOUND: `split_hash` differs across arms" in overview
    assert "| split_hash |" in md and "NO (confound)" in md


def test_pretrained_hash_of_a_random_init_arm_is_not_applicable_never_equal(tmp_path):
    """Issue 20: a random-init arm has no pretrained weights; the hash table says so instead of 'yes'."""
    out = make_demo_study(tmp_path, items=False)
    for path in out.glob("runs/random_tied__*/summary.json"):
        summary = json.loads(path.read_text())
        summary["hashes"]["pretrained_hash"] = None
        path.write_text(json.dumps(summary))
    study = load_study(out)
    md = markdown.render(build_document(study, full_analysis(study), [], "en", "now"))
    (row,) = [ln for ln in md.splitlines() if ln.startswith("| pretrained_hash |")]
    assert "`pppppppppppppppp`" in row and "not applicable (no pretrained weights): random_tied" in row, row
    ja = markdown.render(build_document(study, full_analysis(study), [], "ja", "now"))
    assert "該当なし" in next(ln for ln in ja.splitlines() if ln.startswith("| pretrained_hash |"))


def test_failed_run_without_folder_files_is_never_dropped(tmp_path):
    out = make_lm_study(tmp_path)
    study = json.loads((out / "study.json").read_text())
    write_study_json(out, study["name"], "lm", list(study["arms"]), [0, 1, 2, 3], "tied_frozen")
    s = load_study(out)
    missing = [r for r in s.runs if r.status == "missing"]
    assert len(missing) == 3 and all(r.seed == 3 for r in missing)
    assert missing[0].label().startswith("MISSING")


def test_stale_running_run_is_interrupted_and_old_config_superseded(tmp_path):
    out = make_lm_study(tmp_path)
    run_dir = next((out / "runs").glob("untied__s1__*"))
    status = json.loads((run_dir / "status.json").read_text())
    old = out / "runs" / "untied__s0__deadbeef"
    shutil.copytree(next((out / "runs").glob("untied__s0__*")), old)
    old_status = json.loads((old / "status.json").read_text())
    (old / "status.json").write_text(json.dumps({**old_status, "updated_at": "2024-01-01T00:00:00+00:00"}))
    (old / "run.json").write_text(json.dumps({**json.loads((old / "run.json").read_text()), "run_id": old.name}))
    status.update(status="running", heartbeat_at="2020-01-01T00:00:00+00:00", error=None)
    (run_dir / "status.json").write_text(json.dumps(status))
    study = load_study(out)
    run = next(r for r in study.runs if (r.arm, r.seed) == ("untied", 1))
    assert run.status == "interrupted" and run.label().startswith("INTERRUPTED")
    assert [r.run_id for r in study.superseded] == ["untied__s0__deadbeef"]
    a = full_analysis(study)
    assert a.n_ok["untied"] == 2 and "superseded" in {f.code for f in a.warnings}
    md = markdown.render(build_document(study, a, [], "en", "now"))
    assert "untied / seed 1: INTERRUPTED" in md


# ---- bilingual ----

NUMBER = re.compile(r"[-+]?\d[\d,]*\.\d+%?")


def test_japanese_uses_seed_vocabulary_and_same_numbers(lm_md):
    en, ja = lm_md
    for word in ("実験概要", "実験条件", "比較分析", "相対変化", "結論", "最良エポック", "学習パラメータ", "凍結"):
        assert word in ja
    assert "改善率" not in ja  # "improvement ratio" beside a positive (worse) change misleads: 相対変化
    assert sorted(NUMBER.findall(en)) == sorted(NUMBER.findall(ja))


def test_context_box_by_task(lm_md, tmp_path):
    en, _ = lm_md
    assert "ULMFiT" in en and "Welch" in en and "LP-FT" in en and "GPT4TS" not in en


# ---- HTML ----

class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.attrs: list[tuple[str, str, str]] = []
        self.stack: list[str] = []
        self.unbalanced: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag not in ("meta", "img", "br", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.unbalanced.append(tag)


def test_html_is_self_contained(lm):
    text = (lm[0] / "report.html").read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    parser.close()
    assert not parser.unbalanced and not parser.stack
    imgs = [v for tag, k, v in parser.attrs if tag == "img" and k == "src"]
    assert imgs and all(v.startswith("data:image/png;base64,") for v in imgs)
    links = [v for _, k, v in parser.attrs if k in ("src", "href")]
    assert not [v for v in links if v.startswith(("http://", "https://", "//"))]
    assert "<script" not in text and "<link" not in text and "<details>" in text


# ---- scale and the time-series flavour ----

def _table_widths(md: str) -> list[int]:
    return [len(re.split(r"(?<!\\)\|", line.strip())) - 2 for line in md.splitlines() if line.startswith("|")]


def test_ten_arms_five_seeds_tables_stay_narrow(tmp_path):
    out = make_wide_study(tmp_path)
    paths = write_report(out)
    md = paths["report.md"].read_text(encoding="utf-8")
    widths = _table_widths(md)
    assert widths and max(widths) <= 8
    assert md.count("<details>") >= 10  # per-arm epoch tables collapse
    assert "| `arm_09_with_a_long_name` | 5 |" in md


def test_timeseries_flavour_renders(tmp_path):
    out = make_timeseries_study(tmp_path)
    paths = write_report(out, lang="ja")
    assert "plots/corr_timeframes.png" in paths
    md = paths["report.md"].read_text(encoding="utf-8")
    assert "Tan et al." in md and "GPT4TS" in md and "Riachi" in md and "ULMFiT" not in md
    assert "`random_init`: **no skill on test/mse" in md  # wholly worse than the interpolation baseline
    assert "`random_init` vs `frozen`: test/mse" in md and "→ worse (worse in 3/3 seeds)." in md
    assert "| Arm | Metric | m1 | m5 | h1 |" in md  # per-timeframe table, timeframes in logged order
    assert max(_table_widths(md)) <= 8


# ---- errors at the boundary ----

def test_errors_name_the_problem(tmp_path, lm):
    with pytest.raises(DataNotFoundError, match="No run folders under"):
        write_report(tmp_path)
    with pytest.raises(ConfigError, match="not an arm of this study"):
        write_report(lm[0], reference="nope")
    with pytest.raises(ConfigError, match="--lang en or --lang ja"):
        write_report(lm[0], lang="fr")


# ---- subset runs and languages ----

@pytest.mark.parametrize("planned", [[["tied_frozen", 0]], None])
def test_subset_run_covers_only_what_was_asked(tmp_path, planned):
    out = make_demo_study(tmp_path, arms=["tied_frozen"], seeds=(0,), planned=planned)
    study = load_study(out)
    assert study.arms == ["tied_frozen"] and [r.status for r in study.runs] == ["succeeded"]
    a = full_analysis(study)
    found = {f.code for f in a.warnings}
    assert not found & {"failed_seeds", "no_ci", "unequal_n"}
    st = a.arm_stat(a.primary, "tied_frozen")
    assert st.skill == "insufficient"  # one seed: the seed variance is unknown, so no verdict
    md = markdown.render(build_document(study, a, [], "en", "now"))
    tables = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert "MISSING" not in md and not any("random_tied" in ln for ln in tables)
    assert "never run here (not requested): tied_trainable, frozen_in_untied_head, random_tied" in md  # said once


def test_japanese_report_is_written_beside_the_english_one(lm):
    out, paths = lm
    en, ja = (out / "report.html").read_text(encoding="utf-8"), (out / "report.ja.html").read_text(encoding="utf-8")
    assert paths["report.ja.html"] == out / "report.ja.html"
    assert '<html lang="en">' in en and '<html lang="ja">' in ja
    assert "結果の要約" in ja and "Answer:" in en and "結果の要約" not in en
    from freezelab.report.plots import japanese_font

    # plot labels translated (a machine without a Japanese font keeps English labels, as test_japanese_labels skips)
    assert any(k.endswith(".ja.png") for k in paths) or japanese_font() is None


def test_first_screen_answers_before_anything_else(lm_md):
    en, _ = lm_md
    top = en.split("## ")[0]  # everything before the first section
    assert top.index("**Answer:**") < top.index("| Arm |") < top.index("![")
    assert "`untied` is the best arm on test/ppl" in top and "better than the runner-up `tied_trainable`" in top
    assert "better: `untied`" in top


def test_japanese_study_text_is_used_by_the_japanese_report(tmp_path):
    out = make_demo_study(tmp_path)
    spec = json.loads((out / "study.json").read_text())
    spec.update(description="Should it be frozen?", description_ja="凍結すべきか？", hypothesis_ja="凍結が良い。")
    spec["arms"]["random_tied"]["description_ja"] = "ランダム初期化"
    (out / "study.json").write_text(json.dumps(spec))
    study = load_study(out)
    a = full_analysis(study)
    ja = markdown.render(build_document(study, a, [], "ja", "now"))
    en = markdown.render(build_document(study, a, [], "en", "now"))
    assert "凍結すべきか？" in ja and "凍結が良い。" in ja and "| ランダム初期化 |" in ja
    assert "Should it be frozen?" in en and "凍結すべきか" not in en


def test_tables_identical_across_arms_are_shown_once(lm_md):
    en, ja = lm_md
    # untied shares Phase 1 exactly with tied_frozen (same seeds, same lines): shown once, then referenced;
    # tied_trainable lost a seed, so its table (n = 2) differs and is shown
    assert en.count("**Phase 1 iterations**") == 2
    assert "Phase 1: identical to `tied_frozen` (shown there)." in en
    assert "`tied_frozen` と同一" in ja


def test_convergence_table_drops_epochs_no_run_reached(tmp_path):
    out = make_demo_study(tmp_path)  # every run stops after 3 epochs
    write_report(out, lang="en")
    md = (out / "report.md").read_text(encoding="utf-8")
    convergence = md.split("### Convergence speed", 1)[1].split("\n#", 1)[0]
    assert "epochs 1, 3)" in convergence.splitlines()[0]
    assert "Epoch 3 |" in convergence and "Epoch 5" not in convergence


def test_merge_identical_rows_joins_the_keys_of_equal_rows():
    from freezelab.report.document import Table, merge_identical_rows

    merged = merge_identical_rows(Table(["arm", "a", "b"], [["x", "1", "2"], ["y", "1", "3"], ["z", "1", "2"]]))
    assert merged.rows == [["x, z", "1", "2"], ["y", "1", "3"]]
