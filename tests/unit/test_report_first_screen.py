"""What a reader is told first (issue 17): words that match the sign, no "best" arm without skill or without a
test against the runner-up, every baseline's value, the warnings a reader must know (once each, next to
their arm), the smoke-test banner and the time per run with its spread."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures

from report_fixtures import (  # noqa: E402
    DEMO_BASELINES,
    DEMO_PPL,
    LM_BASELINES,
    LM_HEADLINE,
    lm_epochs,
    make_demo_study,
    make_lm_study,
    make_timeseries_study,
    write_run,
    write_study_json,
)

from freezelab.report import build_document, markdown, write_report  # noqa: E402
from freezelab.report.aggregate import load_study  # noqa: E402
from freezelab.report.i18n import EN, JA  # noqa: E402
from freezelab.report.warnings import full_analysis  # noqa: E402


def first_screen(md: str) -> str:
    return md.split("\n## ")[0]


def rows(md: str) -> list[list[str]]:
    """The arm table's rows (cells stripped), header first: the first table of the page."""
    lines = first_screen(md).splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    table = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        table.append(ln)
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in table if not ln.startswith("|---")]


def answer(md: str) -> str:
    return next(ln for ln in first_screen(md).splitlines() if ln.startswith(("**Answer:**", "**結果の要約:**")))


def render(out: Path, lang: str) -> str:
    study = load_study(out)
    return markdown.render(build_document(study, full_analysis(study), [], lang, "now"))


# ---- 1. sign words ----

SIGN = re.compile(r"^([+-]\d)")


@pytest.mark.parametrize("selection, mode", [("val/loss", "min"), ("val/acc", "max")])
def test_japanese_words_follow_the_sign_and_the_direction(tmp_path, selection, mode):
    """PPL: negative change is an improvement; accuracy: positive is. 改善 only beside a change in the better
    direction, 悪化 only beside the other; never 改善率 ("improvement rate") for a signed change, never
    上回る/下回る (above/below) for a lower-is-better metric."""
    out = make_lm_study(tmp_path, selection=selection)
    ja = render(out, "ja")
    table = rows(ja)
    header, body = table[0], table[1:]
    assert ("負 = 改善" if mode == "min" else "正 = 改善") in header[2]
    for line in (header, *body):
        assert "改善率" not in " ".join(line)
    checked = 0
    for r in body:
        pairs = [(r[2], r[3])] + ([tuple(r[4].split(": ", 1))] if ": " in r[4] else [])
        for change, word in pairs:
            sign = SIGN.match(change)
            if not sign or not word.startswith(("改善", "悪化")):
                continue
            better = (sign.group(1)[0] == "-") == (mode == "min")
            assert word.startswith("改善" if better else "悪化"), (change, word)
            checked += 1
    assert checked >= 2
    assert "改善率" not in ja and "上回" not in ja and "下回" not in ja


def test_both_languages_have_every_string():
    assert set(EN) == set(JA)


# ---- 2. best arm and baselines ----

def test_no_arm_beats_the_baseline_so_the_answer_names_it(tmp_path):
    """The quick time-series demo: every arm 2.8-4.2x interpolation's MSE, persistence better than every arm
    too; the answer must name the baseline, never a best arm, and both baselines' values are on the page."""
    out = make_timeseries_study(tmp_path, baselines={"persistence": {"test/mse": 0.2417, "test/corr": 0.37},
                                                      "interpolation": {"test/mse": 0.1121, "test/corr": 0.61}})
    for lang, first, never in (("en", "No arm beats the naive baseline `interpolation`", "best arm"),
                               ("ja", "単純ベースライン `interpolation` より良いアームはない", "最良アーム")):
        md = render(out, lang)
        top, said = first_screen(md), answer(md)
        first_sentence = re.split(r"[.。] ", said.split("** ", 1)[1])[0]
        assert first in first_sentence and never not in said, said
        assert "0.2417" in top and "0.1121" in top  # every baseline's value on the first screen
    a = full_analysis(load_study(out))
    assert a.headline.kind == "no_skill" and a.headline.baseline[0] == "interpolation"


def test_best_is_claimed_only_when_tested_against_the_runner_up(tmp_path):
    """The demo: tied_frozen (1,455) and no_phase1 (1,460) are the two best means and indistinguishable, so no
    arm is called best; the LM fixture's untied is far ahead of the runner-up, so it is, with that interval."""
    demo = full_analysis(load_study(make_demo_study(tmp_path / "demo")))
    m = demo.primary
    claim = demo.best[m.key]
    geo = {arm: math.prod(v) ** (1 / len(v)) for arm, v in DEMO_PPL.items()}
    assert (claim.arm, claim.runner_up) == tuple(sorted(geo, key=geo.get)[:2])
    assert not claim.decided and demo.headline.kind == "tie"
    md = render(tmp_path / "demo", "en")
    assert "No arm is shown to be best on test/ppl" in first_screen(md)
    assert "is the best arm" not in md
    lm = full_analysis(load_study(make_lm_study(tmp_path / "lm")))
    claim = lm.best[lm.primary.key]
    assert claim.arm == "untied" and claim.decided and claim.comparison.hi < 0
    runner = lm.results[lm.primary.key].comparison("untied", "runner_up")
    assert runner is claim.comparison and runner.p_holm < 0.05  # in the Holm family
    assert lm.family_size() == 2 + 3 + 1


# ---- 4. warnings ----

def _ts_unfreeze_study(out: Path) -> Path:
    """Two arms; the frozen-then-unfrozen one unfroze for its last epoch at an lr of 6e-6, chose an epoch from
    before it for one seed, and logged a run warning and a data warning (as the quick time-series demo)."""
    arms = ["frozen", "frozen_then_unfrozen"]
    write_study_json(out, "t5-transfer", "timeseries", arms, [0, 1], "frozen")
    headline = [{"name": "mse", "mode": "min", "log_scale": True}]
    for i, arm in enumerate(arms):
        for seed in (0, 1):
            lines = [{"kind": "epoch", "epoch": e, "train/loss": 0.3, "val/loss": 0.31, "val/mse": 0.4 - 0.01 * e,
                      "lr/head": 1e-3, "lr/encoder.0": 0.0 if (e < 3 or i == 0) else 6e-6} for e in (1, 2, 3)]
            extra = {"data": {"load_warnings": ["bars.csv row 17: duplicate time dropped"]}}
            if i == 1:
                extra.update(phases=[{"epoch": 3, "event": "unfreeze", "groups": ["encoder.0"]}],
                             warnings=["something odd in this run"])
            write_run(out, study="t5-transfer", task="timeseries", arm=arm, seed=seed, reference=i == 0, lines=lines,
                      best=2 if (i == 1 and seed == 1) else 3, test={"test/mse": 0.4 + 0.01 * i + 0.002 * seed},
                      headline=headline, baselines={"interpolation": {"test/mse": 0.1}}, params=(100, 10),
                      max_epochs=3, extra=extra, selection="val/mse",
                      started_at=f"2025-01-01T00:0{2 * i + seed}:00+00:00")
    return out


def test_the_warnings_a_reader_must_know_are_on_the_first_screen_once(tmp_path):
    out = _ts_unfreeze_study(tmp_path)
    md = render(out, "en")
    top = first_screen(md)
    assert "Smoke test: profile `toy`" in top and "4 of 4 runs" in top
    for text in ("trained unfrozen for 1 epoch(s) (from epoch 3); under 2",
                 "trained at an applied lr of at most 6e-06 (below 1e-05)",
                 "selected epoch 2 precedes the unfreezing (epoch 3)",
                 "run warning: something odd in this run",
                 "data warning: bars.csv row 17: duplicate time dropped"):
        assert md.count(text) == 1, text  # once in the whole report ...
        assert text in top, text  # ... on the first screen
    line = next(ln for ln in top.splitlines() if "precedes the unfreezing" in ln)
    assert line.startswith("- `frozen_then_unfrozen`") and "(seed 1)" in line  # next to its arm, with its seed
    assert "- Every arm: data warning" in top  # the same data warning in every run: one study-wide line


def test_phase1_not_converged_is_a_warning(tmp_path):
    """The seed study stopped Phase 1 at 22 % of tokens converged against a 95 % threshold."""
    out = tmp_path
    write_study_json(out, "embedding-freeze", "lm", ["tied_frozen", "no_phase1"], [0, 1], "tied_frozen")
    for arm in ("tied_frozen", "no_phase1"):
        for seed in (0, 1):
            p1 = ({"enabled": True, "converged": False, "converged_ratio": 0.22 + 0.01 * seed, "iterations": 10,
                   "max_iterations": 10, "min_converged_ratio": 0.95} if arm == "tied_frozen"
                  else {"enabled": False, "skipped": "phase1.enabled is false"})
            write_run(out, study="embedding-freeze", task="lm", arm=arm, seed=seed, reference=arm == "tied_frozen",
                      lines=lm_epochs(2, 3, 0.01 * seed), best=2, test={"test/loss": 6.0, "test/ppl": math.exp(6.0)},
                      headline=LM_HEADLINE, baselines=LM_BASELINES, params=(100, 10), extra={"phase1": p1},
                      profile=None)
    top = first_screen(render(out, "en"))
    assert "Phase 1 stopped before converging in `tied_frozen`: 22–23 % of tokens converged after 10/10 " \
           "iterations (threshold 95 %)" in top
    assert "Smoke test" not in top  # no profile, no banner


def test_time_per_run_shows_its_spread_and_the_cold_first_run(tmp_path):
    out = _ts_unfreeze_study(tmp_path)
    table = rows(render(out, "en"))
    times = {r[0].split()[0].strip("`"): r[-1] for r in table[1:]}
    assert times["frozen"] == "100 s (100–101 s) ‡"  # wall 100 + seed; the study's first run is frozen seed 0
    assert times["frozen_then_unfrozen"] == "100 s (100–101 s)"
    assert "‡ includes the study's first run" in render(out, "en")


def test_answer_is_stated_once(tmp_path):
    out = make_demo_study(tmp_path)
    write_report(out)
    md = (out / "report.md").read_text(encoding="utf-8")
    sentence = first_screen(md).split("**Answer:** ", 1)[1].split(". ")[0]
    assert md.count(sentence) == 1
    assert DEMO_BASELINES["kn_bigram"]["test/ppl"] and "2,171" in first_screen(md)
