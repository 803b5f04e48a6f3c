"""The report's figures, rendered and inspected: per-panel y-ranges, labels with units, legends naming
every line, accuracy in %, intervals inside a metric's range, Japanese labels, the first-screen overlay."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures

from report_fixtures import DEMO_BASELINES, make_demo_study, make_lm_study  # noqa: E402

from freezelab.report.aggregate import load_study  # noqa: E402
from freezelab.report.analysis import analyze  # noqa: E402
from freezelab.report.plots import make_plots  # noqa: E402


@pytest.fixture(scope="module")
def lm_plots(tmp_path_factory):
    out = make_lm_study(tmp_path_factory.mktemp("plots"))
    study = load_study(out)
    return out, {p.stem: p for p in make_plots(study, analyze(study), out / "plots")}


def test_phase1_panels_each_have_their_own_y_range(lm_plots):
    _, plots = lm_plots
    fig = plots["phase1"].figure
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    titles = [ax.get_title() for ax in axes]
    assert "phase1/conv_rate" in titles and "phase1/cvfp_loss" in titles
    ranges = {ax.get_title(): ax.get_ylim() for ax in axes}
    conv = ranges["phase1/conv_rate"]
    assert conv[1] <= 1.1 and conv[0] >= 0  # a rate stays on its own 0-1 axis, not a shared 0-2,000 one
    assert ranges["phase1/cvfp_loss"] != conv
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert legend == ["tied_frozen", "untied", "tied_trainable"]  # every arm named
    assert all(ax.get_xlabel() == "Phase-1 iteration" for ax in axes)


def test_accuracy_plotted_in_percent_and_clipped(lm_plots):
    _, plots = lm_plots
    ax = plots["final_test_acc"].figure.axes[0]
    assert "%" in ax.get_ylabel() and "higher is better" in ax.get_ylabel()
    lo, hi = ax.get_ylim()
    assert 0 <= lo and hi <= 100 and hi > 15  # 19 % shown as 19, not 0.19
    curves = plots["curves_acc"].figure
    ys = [y for ax in curves.axes for line in ax.get_lines() for y in line.get_ydata()]
    assert min(ys) > 1  # per-epoch accuracy in % too
    for ax in curves.axes:
        for coll in ax.collections:  # seed bands never leave [0, 100]
            for path in coll.get_paths():
                assert (path.vertices[:, 1] >= 0).all() and (path.vertices[:, 1] <= 100).all()


def test_every_line_is_named_and_axes_have_units(lm_plots):
    _, plots = lm_plots
    ax = plots["final_test_ppl"].figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["single seeds", "95 % interval", "kn_bigram (naive baseline)"]
    assert ax.get_ylabel() == "test/ppl (lower is better)"
    curves = plots["curves_loss"].figure
    assert curves.axes[0].get_ylabel() == "val/loss (nats / token)"
    grad = plots["grad_norm"].figure
    assert sorted(t.get_text() for lg in grad.legends for t in lg.get_texts()) == ["head", "token_block"]
    assert all(ax.get_yscale() == "log" for ax in grad.axes if ax.get_visible())


def test_overlay_shows_every_arm_and_the_baselines_on_labelled_log_ticks(tmp_path):
    out = make_demo_study(tmp_path)
    study = load_study(out)
    plots = make_plots(study, analyze(study), out / "plots")
    assert plots[0].caption == "plot_overlay"
    ax = plots[0].figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:5] == list(study.arms)
    assert "kn_bigram (naive baseline)" in labels and "unigram (naive baseline)" in labels
    ys = {round(line.get_ydata()[0], 1) for line in ax.get_lines() if line.get_linestyle() == "--"}
    assert ys == {DEMO_BASELINES["kn_bigram"]["val/ppl"], DEMO_BASELINES["unigram"]["val/ppl"]}
    plots[0].figure.canvas.draw()
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(ticks) >= 2  # labelled ticks even when the data span less than a decade


def test_japanese_labels(tmp_path):
    out = make_demo_study(tmp_path)
    study = load_study(out)
    plots = make_plots(study, analyze(study), out / "plots", "ja")
    if not plots[0].stem.endswith(".ja"):
        pytest.skip("no font with Japanese glyphs on this machine: plots keep English labels")
    ax = plots[0].figure.axes[0]
    assert ax.get_xlabel() == "エポック" and "低いほど良い" in ax.get_ylabel()
    assert (out / "plots" / f"{plots[0].stem}.png").exists()
