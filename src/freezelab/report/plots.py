"""Report figures (matplotlib, Agg via the object API: no pyplot, no global backend change).

Every figure is written as ``plots/<stem>.png`` and ``.svg`` (``<stem>.ja.png`` with Japanese labels).
Rules every figure keeps: each panel its own y-range unless panels show the same metric, axis labels
with units, a legend naming every line, one colour per arm in every figure (``arm_colors``), accuracy in %
as in the tables, no interval drawn outside a metric's range, tick labels that do not overlap
(``_thin_ticks``), no point hidden under another, and text of at least ``MIN_PT`` points as shown in the
report at 100 % zoom (a figure at most ``MAX_WIDTH_IN`` wide is never scaled down in the page).
``make_plots`` returns a ``Plot`` per figure, with the figure itself for tests to inspect; the first is the
first screen's: the primary (test) metric per arm, the one the verdicts use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib import font_manager as fm
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from freezelab.report.aggregate import Study, epoch_metric_keys, epoch_values
from freezelab.report.analysis import Analysis, Metric
from freezelab.report.evidence import baseline_summary_values
from freezelab.report.i18n import t

DPI = 110
MAX_WIDTH_IN = 10.0  # 1,100 px at DPI: the report's content width (html.py max-width 1180 px less padding)
FONT = 9.5  # every label, tick and legend; shown at FONT * DPI / 96 ≈ 10.9 pt at 100 % zoom
MIN_PT = 9.0
JA_FONTS = ("Noto Sans CJK JP", "IPAexGothic", "IPAGothic", "Hiragino Sans", "Yu Gothic", "Noto Sans JP")
RANGES = {"acc": (0.0, 100.0), "corr": (-1.0, 1.0), "r2": (-math.inf, 1.0)}  # display units


@dataclass(frozen=True)
class Plot:
    """One written figure: ``stem`` names plots/<stem>.png|svg; caption = i18n key + params."""

    stem: str
    caption: str
    params: dict[str, str] = field(default_factory=dict)
    figure: Any = field(default=None, compare=False, repr=False)


NO_JA_FONT = ("no font with Japanese glyphs was found (system fonts, or IPAexGothic from the matplotlib-fontja "
              "package freezelab depends on), so the Japanese report's figures keep English labels. Fix: "
              "pip install matplotlib-fontja, or install a CJK font (Debian: apt-get install fonts-noto-cjk).")


def bundled_japanese_font() -> Path | None:
    """IPAexGothic shipped in the matplotlib-fontja wheel (found, not imported: importing it changes rcParams)."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib_fontja")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "fonts" / "ipaexg.ttf"
    return path if path.is_file() else None


def japanese_font() -> str | None:
    """A font family with Japanese glyphs, registered on first use: a system CJK font, else the bundled
    IPAexGothic; None (with a RuntimeWarning naming the fix) only when neither exists."""
    have = {f.name for f in fm.fontManager.ttflist}
    for name in JA_FONTS:
        if name in have:
            return name
    paths = [p for p in fm.findSystemFonts() if any(k in Path(p).name for k in ("CJK", "IPAex", "IPAG", "NotoSansJP"))]
    for path in [*paths, bundled_japanese_font()]:
        if path is None:
            continue
        try:
            fm.fontManager.addfont(str(path))
        except (OSError, RuntimeError, ValueError):
            continue
        have = {f.name for f in fm.fontManager.ttflist}
        found = next((n for n in JA_FONTS if n in have), None)
        if found:
            return found
    import warnings

    warnings.warn(NO_JA_FONT, RuntimeWarning, stacklevel=2)
    return None


@dataclass
class Style:
    """Language of the labels, and the font that can draw them."""

    lang: str = "en"
    font: str | None = None
    task: str = ""

    def t(self, key: str, **params: object) -> str:
        return t(self.lang, key, **params)

    def figure(self, **kw: Any) -> Figure:
        fig = Figure(**kw)
        FigureCanvasAgg(fig)
        return fig

    def suffix(self) -> str:
        return "" if self.lang == "en" else f".{self.lang}"


def _colors(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def arm_colors(study: Study) -> dict[str, Any]:
    """One colour per arm, by the study's arm order: the same arm has the same colour in every figure."""
    return dict(zip(study.arms, _colors(len(study.arms))))


def _base(key: str) -> str:
    return key.split("/")[1] if key.count("/") >= 1 else key


def scale_of(key: str) -> float:
    """Display factor: accuracy-type metrics in %, like the tables."""
    return 100.0 if _base(key).lower() in ("acc", "accuracy", "top1", "top5") else 1.0


def label_of(style: Style, key: str, mode: str | None = None) -> str:
    """Axis label with units and direction: ``val/ppl (lower is better)``, ``val/acc (%)``."""
    base = _base(key).lower()
    unit = UNITS.get((style.task, base), UNITS.get(("", base), ""))
    parts = [style.t(unit)] if unit else []
    if mode:
        parts.append(style.t("lower_better" if mode == "min" else "higher_better"))
    return f"{key} ({', '.join(parts)})" if parts else key


UNITS = {("lm", "loss"): "unit_nats", ("", "acc"): "unit_percent", ("", "bpb"): "unit_bpb",
         ("timeseries", "loss"): "unit_huber", ("timeseries", "mse"): "unit_norm2", ("", "mse_bp"): "unit_bp2"}


def _clip(key: str, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval ends kept inside the metric's range (display units): no band below 0 % or above r = 1."""
    low, high = RANGES.get(_base(key).lower(), (-math.inf, math.inf))
    return np.clip(lo, low, high), np.clip(hi, low, high)


def _log_y(ax, force: bool = False) -> None:
    """Log y axis when the plotted data span more than a decade (or ``force``), with labelled ticks even
    inside one decade (1, 2, 5 or every digit; ``_thin_ticks`` drops labels that would overlap)."""
    ys = [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), dtype=float) if np.isfinite(y)]
    if ys and min(ys) > 0 and (force or max(ys) / min(ys) > 10):
        ax.set_yscale("log")
        _log_ticks(ax.yaxis, max(ys) / min(ys))


def _log_ticks(axis, span: float) -> None:
    subs = (1.0, 2.0, 5.0) if span > 20 else tuple(float(i) for i in range(1, 10))
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


LOG_SUBS = ((1.0, 2.0, 5.0), (1.0, 3.0), (1.0,))


def overlapping(ax, which: str = "y", gap: float = 2.0) -> bool:
    """Whether any two drawn tick labels of an axis (``x`` or ``y``) inside its view overlap or come closer
    than ``gap`` pixels (the canvas must have been drawn)."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(axis.get_view_interval())
    boxes = [lab.get_window_extent().padded(gap / 2) for tick, lab in zip(axis.get_major_ticks(), axis.get_ticklabels())
             if lab.get_visible() and lab.get_text() and lo <= tick.get_loc() <= hi]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _thin_ticks(fig: Figure) -> None:
    """Fewer ticks on every axis whose labels would overlap: log axes 1-2-5, then 1-3, then decades only;
    linear axes fewer bins; categorical axes (arm names) rotated further."""
    fig.canvas.draw()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            for attempt in range(4):
                if not overlapping(ax, which):
                    break
                labels = axis.get_ticklabels()
                if axis.get_scale() == "log":
                    axis.set_major_locator(LogLocator(subs=LOG_SUBS[min(attempt, 2)]))
                    axis.set_minor_formatter(NullFormatter())
                elif any(t.get_text() and not _numeric(t.get_text()) for t in labels):
                    for t in labels:  # arm names
                        t.set_rotation(45 if attempt else 30)
                        t.set_ha("right")
                else:
                    axis.set_major_locator(MaxNLocator(nbins=max(2, 6 - 2 * attempt)))
                fig.canvas.draw()


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", "").replace("−", "-").replace("%", ""))
    except ValueError:
        return False
    return True


def _save(fig: Figure, plots_dir: Path, stem: str) -> None:
    _thin_ticks(fig)
    fig.savefig(plots_dir / f"{stem}.png", dpi=DPI)
    fig.savefig(plots_dir / f"{stem}.svg")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _band(ax, by_epoch: dict[int, dict[int, float]], color, label: str, factor: float, key: str,
          style: str = "-") -> None:
    """Thin per-seed lines, the mean line and a ±1 std band over seeds (clipped to the metric's range)."""
    seeds = sorted({s for vals in by_epoch.values() for s in vals})
    for s in seeds:
        pts = [(e, factor * v[s]) for e, v in by_epoch.items() if s in v]
        ax.plot(*zip(*pts), style, color=color, lw=0.6, alpha=0.35)
    epochs = np.array(list(by_epoch))
    vals = [factor * np.array(list(v.values())) for v in by_epoch.values()]
    mean = np.array([v.mean() for v in vals])
    std = np.array([v.std(ddof=1) if v.size > 1 else 0.0 for v in vals])
    ax.plot(epochs, mean, style, color=color, lw=1.8, label=label)
    lo, hi = _clip(key, mean - std, mean + std)
    ax.fill_between(epochs, lo, hi, color=color, alpha=0.18, lw=0)


def _seed_legend(style: Style) -> list[Line2D]:
    return [Line2D([], [], color="gray", lw=0.6, alpha=0.6, label=style.t("pl_seed_lines"))]


def overlay(study: Study, analysis: Analysis, plots_dir: Path, style: Style) -> Plot | None:
    """Validation curve of the primary metric for every arm (mean, ±1 std band, thin per-seed lines) and the
    naive baselines' validation values as horizontal lines; titled as the selection split, since the verdicts
    use the test metric (the first-screen figure)."""
    m = analysis.primary
    key = f"val/{_base(m.key)}"
    data = {arm: epoch_values(study, arm, key) for arm in study.arms}
    arms = [a for a in study.arms if data[a]]
    if not arms:
        return None
    factor = scale_of(key)
    colors = arm_colors(study)
    fig = style.figure(figsize=(MAX_WIDTH_IN, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for arm in arms:
        _band(ax, data[arm], colors[arm], arm, factor, key)
    handles, _ = ax.get_legend_handles_labels()
    grays = ["0.35", "0.55", "0.7"]
    for (name, value), color in zip(sorted(baseline_summary_values(study, key).items()), grays):
        ax.axhline(factor * value, ls="--", color=color, lw=1.2)
        handles.append(Line2D([], [], ls="--", color=color, label=f"{name} ({style.t('pl_baseline')})"))
    ax.set_xlabel(style.t("pl_epoch"))
    ax.set_ylabel(label_of(style, key, m.mode))
    ax.set_title(style.t("plot_overlay_title", metric=key, test=m.key), fontsize=FONT)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if m.log_scale:
        _log_y(ax, force=True)
    ax.legend(handles=handles + _seed_legend(style), fontsize=FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    stem = f"overview_{_safe(key)}{style.suffix()}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_overlay", {"metric": key}, fig)


def first_screen(study: Study, analysis: Analysis, plots_dir: Path, style: Style) -> Plot | None:
    """The primary (test) metric per arm, best first as in the arm table: mean with its 95 % interval,
    per-seed dots, and every naive baseline as a labelled dashed line (the verdicts' metric, at a glance)."""
    m = analysis.primary
    stats = [analysis.arm_stat(m, a) for a in study.arms]
    if not any(st.summary.n for st in stats):
        return None
    done = sorted((st for st in stats if st.summary.n), key=lambda st: st.summary.mean, reverse=m.mode == "max")
    order = done + [st for st in stats if not st.summary.n]
    factor, colors = scale_of(m.key), arm_colors(study)
    fig = style.figure(figsize=(MAX_WIDTH_IN, 0.34 * len(order) + 1.1), layout="constrained")
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    xs: list[float] = []
    for i, st in enumerate(order):
        if st.summary.n == 0:
            ax.text(0.5, i, "FAILED", transform=ax.get_yaxis_transform(), color="red", va="center", fontsize=FONT)
            continue
        lo, hi = st.interval()
        lo, hi = _clip(m.key, np.array([factor * lo]), np.array([factor * hi]))
        mean = factor * st.summary.mean
        if math.isfinite(lo[0]):
            ax.plot([lo[0], hi[0]], [i, i], color=colors[st.arm], lw=2.2, solid_capstyle="butt")
            xs += [lo[0], hi[0]]
        ax.plot([mean], [i], "o", color=colors[st.arm], ms=7)
        vals = [factor * v for v in st.values.values()]
        ax.scatter(vals, i + rng.uniform(-0.18, 0.18, len(vals)), s=12, color="black", zorder=3)
        xs += [mean, *vals]
    handles = [Line2D([], [], color="gray", lw=2.2, marker="o", label=style.t("pl_interval")),
               Line2D([], [], marker="o", ls="", color="black", ms=3, label=style.t("pl_seed_dots"))]
    grays = ["0.3", "0.5", "0.65"]
    for (name, value), color in zip(sorted(baseline_summary_values(study, m.key).items()), grays):
        ax.axvline(factor * value, ls="--", color=color, lw=1.3)
        xs.append(factor * value)
        handles.append(Line2D([], [], ls="--", color=color, label=f"{name} ({style.t('pl_baseline')})"))
    ax.set_yticks(range(len(order)), [st.arm for st in order], fontsize=FONT)
    ax.set_ylim(len(order) - 0.5, -0.5)  # best at the top, as in the table
    ax.set_xlabel(label_of(style, m.key, m.mode))
    pos = [x for x in xs if math.isfinite(x) and x > 0]
    if m.log_scale and pos and len(pos) == len([x for x in xs if math.isfinite(x)]):
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, max(pos) / min(pos))
    ax.grid(axis="x", color="0.9", lw=0.6)
    ax.legend(handles=handles, fontsize=FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    stem = f"first_{_safe(m.key)}{style.suffix()}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_first", {"metric": m.key}, fig)


def learning_curves(study: Study, base: str, log_scale: bool, plots_dir: Path, style: Style) -> Plot | None:
    """Small multiples, one per arm (one shared y-range: same metric): train (dashed) and val (solid)."""
    data = {arm: {split: epoch_values(study, arm, f"{split}/{base}") for split in ("train", "val")}
            for arm in study.arms}
    arms = [a for a in study.arms if any(data[a].values())]
    if not arms:
        return None
    factor = scale_of(f"val/{base}")
    cols = min(3, len(arms))
    fig = style.figure(figsize=(3.3 * cols, 2.6 * math.ceil(len(arms) / cols) + 0.8), layout="constrained")
    axes = fig.subplots(math.ceil(len(arms) / cols), cols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax in axes[len(arms):]:
        ax.set_visible(False)
    for ax, arm in zip(axes, arms):
        for split, color, ls in (("train", "tab:orange", "--"), ("val", "tab:blue", "-")):
            if data[arm][split]:
                _band(ax, data[arm][split], color, f"{split}/{base}", factor, f"{split}/{base}", ls)
        ax.set_title(arm, fontsize=FONT)
        ax.set_xlabel(style.t("pl_epoch"), fontsize=FONT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=FONT)
        if log_scale:
            _log_y(ax)
    axes[0].set_ylabel(label_of(style, f"val/{base}"), fontsize=FONT)
    handles, _ = axes[0].get_legend_handles_labels()
    fig.legend(handles=handles + _seed_legend(style), fontsize=FONT, loc="outside lower center", ncols=3)
    stem = f"curves_{_safe(base)}{style.suffix()}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_curves", {"metric": base}, fig)


def _arm_axis(ax, names: list[str]) -> None:
    """Arm names down the y axis, the first at the top (horizontal text never collides)."""
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)


def final_bars(study: Study, analysis: Analysis, metric: Metric, plots_dir: Path, style: Style) -> Plot | None:
    """Mean per arm (a bar) with its 95 % interval, per-seed dots and the best baseline as a dashed line."""
    stats = [analysis.arm_stat(metric, a) for a in study.arms]
    if not any(s.summary.n for s in stats):
        return None
    factor = scale_of(metric.key)
    fig = style.figure(figsize=(8.0, 0.38 * len(stats) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    colors = arm_colors(study)
    for i, st in enumerate(stats):
        if st.summary.n == 0:
            ax.text(0.5, i, "FAILED", ha="center", va="center", transform=ax.get_yaxis_transform(), color="red",
                    fontsize=FONT)
            continue
        mean = factor * st.summary.mean
        lo, hi = st.interval()
        lo, hi = _clip(metric.key, np.array([factor * lo]), np.array([factor * hi]))
        err = [[mean - lo[0]], [hi[0] - mean]] if math.isfinite(lo[0]) else None
        ax.barh(i, mean, color=colors[st.arm], alpha=0.45, xerr=err, capsize=4, height=0.6)
        vals = [factor * v for v in st.values.values()]
        ax.scatter(vals, i + rng.uniform(-0.15, 0.15, len(vals)), s=12, color="black", zorder=3)
    handles = [Line2D([], [], marker="o", ls="", color="black", ms=3, label=style.t("pl_seed_dots")),
               Line2D([], [], color="black", lw=1, label=style.t("pl_interval"))]
    base = next((s.baseline for s in stats if s.baseline), None)
    if base:
        ax.axvline(factor * base[1], ls="--", color="gray", lw=1)
        handles.append(Line2D([], [], ls="--", color="gray", label=f"{base[0]} ({style.t('pl_baseline')})"))
    _arm_axis(ax, [s.arm for s in stats])
    ax.set_xlabel(label_of(style, metric.key, metric.mode))
    ax.legend(handles=handles, fontsize=FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    stem = f"final_{_safe(metric.key)}{style.suffix()}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_final", {"metric": metric.key}, fig)


def paired_diffs(study: Study, analysis: Analysis, metric: Metric, plots_dir: Path, style: Style) -> Plot | None:
    """Per-seed differences against the reference (Δ % for log-scale metrics) with the verdict's interval."""
    stats = [analysis.arm_stat(metric, a) for a in study.arms if a != study.reference]
    stats = [s for s in stats if s.vs_ref and s.vs_ref.diffs]
    if not stats:
        return None
    fig = style.figure(figsize=(8.0, 0.38 * len(stats) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    conv = (lambda d: math.expm1(d) * 100) if metric.log_scale else (lambda d: scale_of(metric.key) * d)
    colors = arm_colors(study)
    for i, st in enumerate(stats):
        c = st.vs_ref
        ax.scatter([conv(d) for d in c.diffs], [i] * len(c.diffs), color=colors[st.arm], s=18, zorder=3)
        if math.isfinite(c.lo):
            mid = conv(c.estimate.value)
            ax.errorbar(mid, i, xerr=[[mid - conv(c.lo)], [conv(c.hi) - mid]], fmt="D", color="black", capsize=5,
                        ms=4)
    ax.axvline(0, color="gray", lw=1)
    _arm_axis(ax, [s.arm for s in stats])
    unit = "%" if metric.log_scale else ("pt" if scale_of(metric.key) == 100 else "")
    better = style.t("pl_neg_better" if metric.mode == "min" else "pl_pos_better")
    ax.set_xlabel(style.t("pl_delta", metric=metric.key, ref=study.reference, unit=unit, better=better))
    handles = [Line2D([], [], marker="o", ls="", color="gray", ms=3, label=style.t("pl_seed_dots")),
               Line2D([], [], marker="D", color="black", ms=4, label=style.t("pl_holm_interval"))]
    ax.legend(handles=handles, fontsize=FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    stem = f"paired_{_safe(metric.key)}{style.suffix()}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_paired", {"metric": metric.key, "ref": study.reference}, fig)


def grad_norms(study: Study, plots_dir: Path, style: Style) -> Plot | None:
    """Per-arm small multiples of ``grad_norm/<group>`` curves (mean over seeds, log y, shared range)."""
    keys = [k for k in epoch_metric_keys(study) if k.startswith("grad_norm/")]
    arms = [a for a in study.arms if study.arm_runs(a, ok_only=True)]
    if not keys or not arms:
        return None
    cols = min(3, len(arms))
    fig = style.figure(figsize=(3.3 * cols, 2.6 * math.ceil(len(arms) / cols) + 0.9), layout="constrained")
    axes = fig.subplots(math.ceil(len(arms) / cols), cols, squeeze=False, sharex=True, sharey=True).ravel()
    for ax in axes[len(arms):]:
        ax.set_visible(False)
    colors = dict(zip(keys, _colors(len(keys))))
    for ax, arm in zip(axes, arms):
        for key in keys:
            by_epoch = epoch_values(study, arm, key)
            vals = {e: float(np.mean(list(v.values()))) for e, v in by_epoch.items()}
            vals = {e: v for e, v in vals.items() if v > 0}  # frozen groups log 0: nothing to draw on a log axis
            if vals:
                ax.plot(list(vals), list(vals.values()), color=colors[key], label=key.split("/", 1)[1])
        ax.set_title(arm, fontsize=FONT)
        ax.set_xlabel(style.t("pl_epoch"), fontsize=FONT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=FONT)
        _log_y(ax, force=True)
    axes[0].set_ylabel(style.t("pl_grad"), fontsize=FONT)
    handles = [Line2D([], [], color=colors[k], label=k.split("/", 1)[1]) for k in keys]
    fig.legend(handles=handles, fontsize=FONT, loc="outside lower center", ncols=min(6, len(keys)))
    stem = f"grad_norm{style.suffix()}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_grad", {}, fig)


def timeframe_corr(study: Study, plots_dir: Path, style: Style) -> Plot | None:
    """Grouped bars of ``val/corr/<tf>`` at each seed's best epoch: mean ± std per arm and timeframe."""
    keys = [k for k in epoch_metric_keys(study) if k.startswith("val/corr/")]
    if not keys:
        return None
    fig = style.figure(figsize=(min(MAX_WIDTH_IN, max(6.0, 0.35 * len(keys) * len(study.arms) + 3)), 3.6),
                       layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(study.arms))
    colors = arm_colors(study)
    for j, arm in enumerate(study.arms):
        color = colors[arm]
        means, errs = [], [[], []]
        for key in keys:
            vals = [v for v in (r.value(key) for r in study.arm_runs(arm, ok_only=True)) if math.isfinite(v)]
            mean = float(np.mean(vals)) if vals else math.nan
            sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            lo, hi = _clip("val/corr", np.array([mean - sd]), np.array([mean + sd]))
            means.append(mean)
            errs[0].append(mean - lo[0])
            errs[1].append(hi[0] - mean)
        ax.bar(np.arange(len(keys)) + j * width, means, width, yerr=errs, color=color, label=arm, capsize=2)
    ax.set_xticks(np.arange(len(keys)) + width * (len(study.arms) - 1) / 2, [k.split("/", 2)[2] for k in keys])
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel(style.t("pl_timeframe"))
    ax.set_ylabel(style.t("pl_corr"))
    ax.legend(fontsize=FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    stem = f"corr_timeframes{style.suffix()}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_corr", {}, fig)


def params_vs_metric(study: Study, analysis: Analysis, metric: Metric, plots_dir: Path,
                     style: Style) -> Plot | None:
    """Trainable parameters (log x) against the metric's mean with its 95 % interval, one point per arm."""
    points = []
    for arm in study.arms:
        counts = [(r.summary.get("params") or {}).get("trainable") for r in study.arm_runs(arm, ok_only=True)]
        counts = [c for c in counts if isinstance(c, (int, float)) and c > 0]
        st = analysis.arm_stat(metric, arm)
        if counts and st.summary.n:
            points.append((arm, float(np.median(counts)), st))
    if len(points) < 2:
        return None
    factor, colors = scale_of(metric.key), arm_colors(study)
    fig = style.figure(figsize=(8.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    same: dict[float, list[str]] = {}  # arms with the same trainable count are dodged, never drawn on top
    for arm, x, _ in points:
        same.setdefault(round(math.log10(x), 2), []).append(arm)
    for arm, x, st in points:
        peers = same[round(math.log10(x), 2)]
        x = x * 10 ** (0.04 * (peers.index(arm) - (len(peers) - 1) / 2))
        mean = factor * st.summary.mean
        lo, hi = st.interval()
        lo, hi = _clip(metric.key, np.array([factor * lo]), np.array([factor * hi]))
        err = [[mean - lo[0]], [hi[0] - mean]] if math.isfinite(lo[0]) else None
        ax.errorbar(x, mean, yerr=err, fmt="o", color=colors[arm], capsize=4, label=arm)
    ax.set_xscale("log")
    xs = [x for _, x, _ in points]
    ax.set_xlim(min(xs) / 10 ** 0.25, max(xs) * 10 ** 0.25)
    ax.set_xlabel(style.t("pl_trainable"))
    ax.set_ylabel(label_of(style, metric.key, metric.mode))
    ax.legend(fontsize=FONT, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    stem = f"params_vs_metric{style.suffix()}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_params", {"metric": metric.key}, fig)


def phase1(study: Study, plots_dir: Path, style: Style) -> Plot | None:
    """LM Phase 1: each iteration metric (mean over seeds) per arm, every panel on its own y-range."""
    keys: dict[str, None] = {}
    for run in study.runs:
        if run.ok:
            keys.update(dict.fromkeys(k for k in run.iterations.columns
                                      if k not in ("seconds", "er_rows") and run.iterations[k].notna().any()))
    if not keys:
        return None
    cols = min(3, len(keys))
    arms = [a for a in study.arms if any(not r.iterations.empty for r in study.arm_runs(a, ok_only=True))]
    fig = style.figure(figsize=(3.3 * cols, 2.5 * math.ceil(len(keys) / cols) + 0.9), layout="constrained")
    axes = fig.subplots(math.ceil(len(keys) / cols), cols, squeeze=False, sharex=True).ravel()
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    colors = arm_colors(study)
    for ax, key in zip(axes, keys):
        for arm in arms:
            frames = [r.iterations[key] for r in study.arm_runs(arm, ok_only=True) if key in r.iterations]
            if frames:
                mean = pd.concat(frames, axis=1).mean(axis=1)  # runs that stopped early drop out
                ax.plot(mean.index, mean.to_numpy(), color=colors[arm], label=arm, marker=".", ms=3)
        ax.set_title(key, fontsize=FONT)
        ax.set_xlabel(style.t("pl_iteration"), fontsize=FONT)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=FONT)
    handles = [Line2D([], [], color=colors[a], label=a) for a in arms]
    fig.legend(handles=handles, fontsize=FONT, loc="outside lower center", ncols=min(5, len(arms)))
    stem = f"phase1{style.suffix()}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_phase1", {}, fig)


def lr_curves(study: Study, plots_dir: Path, style: Style) -> Plot | None:
    """tune: each arm's best validation value per trial learning rate (log x), the chosen one circled."""
    from freezelab.report.tuning import curve, read_tuning

    rec, _ = read_tuning(study.out_dir)
    arms = {a: r for a, r in (rec or {}).get("arms", {}).items() if a in study.arms}
    if not arms:
        return None
    colors = arm_colors(study)
    fig = style.figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    metric = next(iter(arms.values())).get("metric", "val/loss")
    for arm, r in arms.items():
        pts = [(lr, v) for lr, v, _ in curve(r) if math.isfinite(v)]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colors[arm], marker=".", label=arm)
        chosen = [(lr, v) for lr, v in pts if math.isclose(lr, float(r["chosen"]))]
        if chosen:
            ax.plot(*chosen[0], marker="o", ms=10, mfc="none", color=colors[arm])
    ax.set_xscale("log")
    ax.set_xlabel(style.t("pl_lr"), fontsize=FONT)
    ax.set_ylabel(metric, fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    ax.legend(fontsize=FONT)
    stem = f"lr_tuning{style.suffix()}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_lr", {"metric": metric}, fig)


def make_plots(study: Study, analysis: Analysis, plots_dir: Path, lang: str = "en") -> list[Plot]:
    """Write every figure the data support into ``plots_dir``, labelled in ``lang``.

    Returns:
        The figures written, in report order (the first screen's first, then the validation overlay).
    """
    plots_dir.mkdir(parents=True, exist_ok=True)
    font = japanese_font() if lang == "ja" else None
    style = Style(lang if lang == "en" or font else "en", font, study.task)
    import matplotlib

    rc: dict[str, Any] = {"font.size": FONT, "xtick.labelsize": FONT, "ytick.labelsize": FONT,
                          "legend.fontsize": FONT, "axes.titlesize": FONT, "axes.labelsize": FONT}
    if font:
        rc["font.family"] = [font, "DejaVu Sans"]
    with matplotlib.rc_context(rc):
        out: list[Plot | None] = [first_screen(study, analysis, plots_dir, style),
                                  overlay(study, analysis, plots_dir, style), lr_curves(study, plots_dir, style)]
        bases = ["loss"] + [_base(m.key) for m in analysis.metrics]
        logs = {_base(m.key): m.log_scale for m in analysis.metrics}
        for base in dict.fromkeys(bases):
            out.append(learning_curves(study, base, logs.get(base, False), plots_dir, style))
        for metric in analysis.metrics:
            out.append(final_bars(study, analysis, metric, plots_dir, style))
            if metric.primary:
                out.append(paired_diffs(study, analysis, metric, plots_dir, style))
        out.append(params_vs_metric(study, analysis, analysis.primary, plots_dir, style))
        out += [grad_norms(study, plots_dir, style), timeframe_corr(study, plots_dir, style),
                phase1(study, plots_dir, style)]
    return [p for p in out if p is not None]
