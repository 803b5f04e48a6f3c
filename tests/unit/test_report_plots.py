"""The report's figures, rendered and inspected: per-panel y-ranges, labels with units, legends naming
every line, accuracy in %, intervals inside a metric's range, Japanese labels, the first-screen figure of
the verdicts' (test) metric, one colour per arm in every figure, no overlapping tick labels, no hidden arm,
and text readable at 100 % zoom."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures

import numpy as np  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from report_fixtures import DEMO_BASELINES, DEMO_PPL, make_demo_study, make_lm_study, make_timeseries_study  # noqa: E402

from freezelab.report import plots as P  # noqa: E402
from freezelab.report.aggregate import load_study  # noqa: E402
from freezelab.report.plots import make_plots  # noqa: E402
from freezelab.report.warnings import full_analysis  # noqa: E402


@pytest.fixture(scope="module")
def lm_plots(tmp_path_factory):
    out = make_lm_study(tmp_path_factory.mktemp("plots"))
    study = load_study(out)
    return out, {p.stem: p for p in make_plots(study, full_analysis(study), out / "plots")}


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
    assert "%" in ax.get_xlabel() and "higher is better" in ax.get_xlabel()
    lo, hi = ax.get_xlim()
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
    assert ax.get_xlabel() == "test/ppl (lower is better)"
    curves = plots["curves_loss"].figure
    assert curves.axes[0].get_ylabel() == "val/loss (nats / token)"
    grad = plots["grad_norm"].figure
    assert sorted(t.get_text() for lg in grad.legends for t in lg.get_texts()) == ["head", "token_block"]
    assert all(ax.get_yscale() == "log" for ax in grad.axes if ax.get_visible())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = make_demo_study(tmp_path_factory.mktemp("demo"))
    study = load_study(out)
    return study, {p.caption: p for p in make_plots(study, full_analysis(study), out / "plots")}


def test_overlay_shows_every_arm_and_the_baselines_on_labelled_log_ticks(demo):
    study, plots = demo
    ax = plots["plot_overlay"].figure.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:5] == list(study.arms)
    assert "kn_bigram (naive baseline)" in labels and "unigram (naive baseline)" in labels
    ys = {round(line.get_ydata()[0], 1) for line in ax.get_lines() if line.get_linestyle() == "--"}
    assert ys == {DEMO_BASELINES["kn_bigram"]["val/ppl"], DEMO_BASELINES["unigram"]["val/ppl"]}
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(ticks) >= 2  # labelled ticks even when the data span less than a decade
    assert "validation val/ppl" in ax.get_title() and "test/ppl" in ax.get_title()  # says it is not the verdicts'


def test_first_screen_figure_is_the_verdict_metric_with_every_baseline(demo):
    study, plots = demo
    fig = plots["plot_first"].figure
    ax = fig.axes[0]
    assert ax.get_xlabel() == "test/ppl (lower is better)"
    shown = [t.get_text() for t in ax.get_yticklabels()]
    geo = {arm: math.prod(v) ** (1 / len(v)) for arm, v in DEMO_PPL.items()}
    assert shown == sorted(study.arms, key=geo.get)  # best (geometric) mean first, as in the arm table
    xs = sorted(round(line.get_xdata()[0], 1) for line in ax.get_lines() if line.get_linestyle() == "--")
    assert xs == sorted(DEMO_BASELINES[b]["test/ppl"] for b in DEMO_BASELINES)  # test values, not val


def _arm_colours(caption: str, fig) -> dict[str, str]:
    """arm -> the colour the figure draws it in."""
    ax = fig.axes[0]
    if caption == "plot_overlay":
        return {t.get_text(): to_hex(h.get_color()) for h, t in zip(ax.get_legend().legend_handles,
                                                                   ax.get_legend().get_texts())}
    if caption == "plot_params":
        return {c.get_label(): to_hex(c.lines[0].get_color()) for c in ax.containers}
    names = [t.get_text() for t in ax.get_yticklabels()]
    if caption == "plot_final":
        return {n: to_hex(p.get_facecolor()) for n, p in zip(names, ax.patches)}
    if caption == "plot_paired":
        dots = [c for c in ax.collections if isinstance(c, PathCollection)]
        return {n: to_hex(c.get_facecolor()[0]) for n, c in zip(names, dots)}
    solid = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]  # plot_first: the mean markers
    return {n: to_hex(ln.get_color()) for n, ln in zip(names, solid)}


def test_every_figure_draws_an_arm_in_the_same_colour(demo):
    _, plots = demo
    seen: dict[str, set[str]] = {}
    for caption in ("plot_overlay", "plot_first", "plot_final", "plot_paired", "plot_params"):
        found = _arm_colours(caption, plots[caption].figure)
        assert len(found) >= 4, caption
        for arm, colour in found.items():
            seen.setdefault(arm, set()).add(colour)
    assert {arm: len(c) for arm, c in seen.items()} == {arm: 1 for arm in seen}, seen


def test_params_plot_hides_no_arm(demo):
    """tied_frozen and no_phase1 have the same trainable count: both must be visible, not one on top."""
    _, plots = demo
    ax = plots["plot_params"].figure.axes[0]
    points = {c.get_label(): ax.transData.transform(np.column_stack(c.lines[0].get_data()).astype(float))[0]
              for c in ax.containers}
    assert {"tied_frozen", "no_phase1"} <= set(points)
    names = list(points)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.hypot(*(points[a] - points[b])) > 6, (a, b)  # at least a marker apart, in pixels


def _all_plots(tmp_path) -> list:
    out = []
    for make in (make_demo_study, make_lm_study, make_timeseries_study):
        folder = make(tmp_path / make.__name__)
        study = load_study(folder)
        out += make_plots(study, full_analysis(study), folder / "plots")
    return out


def test_no_tick_labels_overlap_and_text_is_readable_at_full_zoom(tmp_path):
    """At most MAX_WIDTH_IN wide (never scaled down in the page), text at least 9 pt as shown."""
    for plot in _all_plots(tmp_path):
        fig = plot.figure
        fig.canvas.draw()
        for ax in fig.axes:
            if ax.get_visible():
                for which in "xy":
                    assert not P.overlapping(ax, which), (plot.stem, which)
        width_px = fig.get_figwidth() * P.DPI
        scale = min(1.0, P.MAX_WIDTH_IN * P.DPI / width_px)
        for text in fig.findobj(Text):
            if text.get_visible() and text.get_text().strip():
                shown = text.get_fontsize() * P.DPI / 96 * scale  # points on a 96-dpi page at 100 % zoom
                assert shown >= P.MIN_PT, (plot.stem, text.get_text(), text.get_fontsize())


def test_crowded_log_ticks_are_thinned():
    """The quick time-series demo's val MSE (0.055-0.4) put 0.06, 0.07, 0.08, 0.09, 0.1 on top of each other."""
    style = P.Style()
    fig = style.figure(figsize=(10, 3.3), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([1, 2, 3], [0.4, 0.2, 0.17])
    ax.plot([1, 3], [0.055, 0.055])
    P._log_y(ax, force=True)
    fig.canvas.draw()
    crowded = P.overlapping(ax, "y")
    P._thin_ticks(fig)
    assert crowded and not P.overlapping(ax, "y")
    assert len([t for t in ax.get_yticklabels() if t.get_text()]) >= 2


def test_paired_axis_says_which_sign_is_better(demo):
    _, plots = demo
    assert "negative = better" in plots["plot_paired"].figure.axes[0].get_xlabel()


def test_japanese_labels(tmp_path):
    out = make_demo_study(tmp_path)
    study = load_study(out)
    plots = {p.caption: p for p in make_plots(study, full_analysis(study), out / "plots", "ja")}
    if not plots["plot_overlay"].stem.endswith(".ja"):
        pytest.skip("no font with Japanese glyphs on this machine: plots keep English labels")
    ax = plots["plot_overlay"].figure.axes[0]
    assert ax.get_xlabel() == "エポック" and "低いほど良い" in ax.get_ylabel()
    assert "負 = 改善" in plots["plot_paired"].figure.axes[0].get_xlabel()  # the sign's meaning, in Japanese
    assert (out / "plots" / f"{plots['plot_first'].stem}.png").exists()


def test_japanese_labels_draw_without_missing_glyphs_on_a_machine_without_cjk_fonts(monkeypatch):
    """A fresh machine has no CJK system font: the bundled IPAexGothic (matplotlib-fontja, a dependency) is
    registered and draws the ja labels with no missing glyph (tofu); without it the labels stay English and a
    warning names the fix."""
    import warnings

    from matplotlib import font_manager as fm
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from freezelab.report import plots

    latin = [f for f in fm.fontManager.ttflist if f.name not in plots.JA_FONTS]
    monkeypatch.setattr(fm.fontManager, "ttflist", list(latin))
    monkeypatch.setattr(fm, "findSystemFonts", lambda *a, **k: [])
    fm.fontManager._findfont_cached.cache_clear()
    try:
        font = plots.japanese_font()
        assert font == "IPAexGothic" and plots.bundled_japanese_font() is not None
        fig = Figure()
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.set_title("検証損失（エポック）", family=[font])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.canvas.draw()
        assert not [w for w in caught if "missing from font" in str(w.message)]
        # the same title in DejaVu Sans alone is tofu: the check above can fail
        ax.set_title("検証損失（エポック）", family=["DejaVu Sans"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.canvas.draw()
        assert [w for w in caught if "missing from font" in str(w.message)]

        monkeypatch.setattr(fm.fontManager, "ttflist", list(latin))
        monkeypatch.setattr(plots, "bundled_japanese_font", lambda: None)
        with pytest.warns(RuntimeWarning, match=r"keep English labels.*pip install matplotlib-fontja"):
            assert plots.japanese_font() is None
    finally:
        fm.fontManager._findfont_cached.cache_clear()
