"""The HTML report as a reader sees it, in headless Chromium at 1280 px: the first screen (answer, arm table,
baselines, warnings, the verdict metric's figure) ends within 1,600 px, nothing is wider than the window, in
English and Japanese. On fabricated studies shaped like the demos here; on the demos' own reports when
FREEZELAB_DEMO_REPORTS names a folder holding their output folders (``.ci/run`` runs both quick demos
into it; screenshots are written beside them)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures and browser

import browser  # noqa: E402
from report_fixtures import make_demo_study, write_run, write_study_json  # noqa: E402

from freezelab.report import write_report  # noqa: E402

FIRST_SCREEN_PX = 1600
WIDTH = 1280

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(browser.chromium() is None, reason="chromium not installed (apt-get install "
                                 "chromium fonts-noto-cjk; .ci/run does)")]


def ts_like(out: Path) -> Path:
    """Seven arms × two seeds as the quick time-series demo: none beats interpolation, every arm's best epoch
    is its last, one arm unfroze too briefly at too small a learning rate."""
    arms = ["frozen", "frozen_then_unfrozen", "finetune", "random_init", "no_backbone", "one_attn", "discriminative"]
    write_study_json(out, "t5-transfer", "timeseries", arms, [0, 1], "frozen")
    headline = [{"name": "mse", "mode": "min", "log_scale": True}, {"name": "corr", "mode": "max"},
                {"name": "r2", "mode": "max"}]
    baselines = {"persistence": {"val/mse": 0.1135, "test/mse": 0.2417, "test/corr": 0.37, "test/r2": -0.40},
                 "interpolation": {"val/mse": 0.0561, "test/mse": 0.1121, "test/corr": 0.61, "test/r2": 0.22}}
    for i, arm in enumerate(arms):
        for seed in (0, 1):
            mse = 0.31 + 0.027 * i + 0.01 * seed
            lines = [{"kind": "epoch", "epoch": e, "train/loss": 0.2, "val/loss": 0.21, "val/mse": mse / 2 + 0.1 / e,
                      "lr/head": 1e-3, "lr/encoder.0": 6e-6 if (i == 1 and e == 3) else 0.0} for e in (1, 2, 3)]
            extra = {"phases": [{"epoch": 3, "event": "unfreeze", "groups": ["encoder.0"]}]} if i == 1 else {}
            write_run(out, study="t5-transfer", task="timeseries", arm=arm, seed=seed, reference=i == 0, lines=lines,
                      best=3, test={"test/mse": mse, "test/corr": 0.5, "test/r2": -1.0}, headline=headline,
                      baselines=baselines, params=(1_860_188, 84_956 if i in (0, 1, 4) else 1_860_188), max_epochs=3,
                      extra=extra, selection="val/mse", started_at=f"2025-01-01T00:{10 + 2 * i + seed}:00+00:00")
    return out


def check_page(html: Path) -> dict:
    m = browser.measure(html, width=WIDTH)
    assert "#first-screen" in m, f"{html.name}: no first-screen section"
    assert m["#first-screen"]["bottom"] <= FIRST_SCREEN_PX, (html.name, m["#first-screen"])
    assert m["overflowing"] == 0 and m["width"] <= WIDTH, (html.name, m["width"])
    return m


@pytest.mark.parametrize("make", [make_demo_study, ts_like])
def test_first_screen_fits_in_1600_px_in_both_languages(tmp_path, make):
    out = make(tmp_path / make.__name__)
    write_report(out, lang="ja")
    for name in ("report.html", "report.ja.html"):
        m = check_page(out / name)
        assert m["#warnings"]["top"] < m["#first-screen"]["bottom"]  # the warnings are on the first screen
    browser.screenshot(out / "report.ja.html", tmp_path / "first.png", WIDTH, FIRST_SCREEN_PX)


DEMOS = os.environ.get("FREEZELAB_DEMO_REPORTS")


@pytest.mark.skipif(not DEMOS, reason="FREEZELAB_DEMO_REPORTS unset: .ci/run runs the quick demos and sets it")
@pytest.mark.parametrize("demo", ["embedding-freeze", "t5-transfer", "classify"])
def test_the_demo_reports_first_screen(demo):
    out = Path(str(DEMOS)) / demo
    assert (out / "report.html").exists(), f"no report in {out}: run the quick demo into it first"
    write_report(out, lang="ja")  # the run wrote English; add Japanese
    for name in ("report.html", "report.ja.html"):
        m = check_page(out / name)
        png = browser.screenshot(out / name, out / f"{name}.first-screen.png", WIDTH, FIRST_SCREEN_PX)
        print(f"{demo}/{name}: first screen ends at {m['#first-screen']['bottom']:.0f} px of {m['height']} px; {png}")
