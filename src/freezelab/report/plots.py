"""Report figures (matplotlib, Agg via the object API: no pyplot, no global backend change).

Every figure is written as ``plots/<stem>.png`` and ``plots/<stem>.svg``. ``make_plots`` returns a
``Plot`` per figure with a caption key for i18n, so both languages share one set of images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from freezelab.report.aggregate import Study, epoch_metric_keys, epoch_values
from freezelab.report.analysis import Analysis, Metric

DPI = 110


@dataclass(frozen=True)
class Plot:
    """One written figure: ``stem`` names plots/<stem>.png|svg; caption = i18n key + params."""

    stem: str
    caption: str
    params: dict[str, str] = field(default_factory=dict)


def _colors(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _grid(n: int, width: float = 3.2, height: float = 2.4) -> tuple[Figure, list]:
    """Small multiples sharing both axes. Fixed margins instead of constrained layout: with 10+ panels
    the layout engine dominates the report's run time."""
    cols = min(5, max(1, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel().tolist()
    tall = height * rows + 0.4
    fig.subplots_adjust(left=0.25 / cols + 0.03, right=0.99, bottom=0.55 / tall, top=1 - 0.35 / tall,
                        wspace=0.12, hspace=0.35)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _log_y(ax) -> None:
    """Log y axis when the plotted data span more than a decade (else linear reads better), without
    minor tick labels (labelling them is slow and clutters small panels)."""
    ys = [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), dtype=float) if np.isfinite(y)]
    if ys and min(ys) > 0 and max(ys) / min(ys) > 10:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())


def _save(fig: Figure, plots_dir: Path, stem: str) -> None:
    fig.savefig(plots_dir / f"{stem}.png", dpi=DPI)
    fig.savefig(plots_dir / f"{stem}.svg")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _band(ax, by_epoch: dict[int, dict[int, float]], color, label: str, style: str = "-") -> None:
    """Thin per-seed lines, the mean line and a ±1 std band over seeds."""
    seeds = sorted({s for vals in by_epoch.values() for s in vals})
    for s in seeds:
        pts = [(e, v[s]) for e, v in by_epoch.items() if s in v]
        ax.plot(*zip(*pts), style, color=color, lw=0.6, alpha=0.35)
    epochs = np.array(list(by_epoch))
    vals = [np.array(list(v.values())) for v in by_epoch.values()]
    mean = np.array([v.mean() for v in vals])
    std = np.array([v.std(ddof=1) if v.size > 1 else 0.0 for v in vals])
    ax.plot(epochs, mean, style, color=color, lw=1.8, label=label)
    ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.18, lw=0)


def learning_curves(study: Study, base: str, log_scale: bool, plots_dir: Path) -> Plot | None:
    """Small multiples, one per arm: train (dashed) and val (solid) curves of ``base`` with seed bands."""
    data = {arm: {split: epoch_values(study, arm, f"{split}/{base}") for split in ("train", "val")}
            for arm in study.arms}
    arms = [a for a in study.arms if any(data[a].values())]
    if not arms:
        return None
    fig, axes = _grid(len(arms))
    for ax, arm in zip(axes, arms):
        for split, color, style in (("train", "tab:orange", "--"), ("val", "tab:blue", "-")):
            if data[arm][split]:
                _band(ax, data[arm][split], color, f"{split}/{base}", style)
        ax.set_title(arm, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.tick_params(labelsize=7)
        if log_scale:
            _log_y(ax)
    axes[0].legend(fontsize=7)
    stem = f"curves_{_safe(base)}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_curves", {"metric": base})


def final_bars(study: Study, analysis: Analysis, metric: Metric, plots_dir: Path) -> Plot | None:
    """Mean per arm with a 95 % CI error bar, per-seed dots and the best baseline as a dashed line."""
    stats = [analysis.arm_stat(metric, a) for a in study.arms]
    if not any(s.summary.n for s in stats):
        return None
    fig = Figure(figsize=(max(4.0, 0.8 * len(stats) + 2), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    for i, (st, color) in enumerate(zip(stats, _colors(len(stats)))):
        if st.summary.n == 0:
            ax.text(i, 0.5, "FAILED", rotation=90, ha="center", va="center", transform=ax.get_xaxis_transform(),
                    color="red", fontsize=8)
            continue
        m = st.summary.mean
        err = None
        if math.isfinite(st.summary.lo):
            err = [[m - st.summary.lo], [st.summary.hi - m]]
        ax.bar(i, m, color=color, alpha=0.45, yerr=err, capsize=4)
        vals = list(st.values.values())
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(vals)), vals, s=12, color="black", zorder=3)
    base = next((s.baseline for s in stats if s.baseline), None)
    if base:
        ax.axhline(base[1], ls="--", color="gray", lw=1)
        ax.text(len(stats) - 0.5, base[1], base[0], ha="right", va="bottom", fontsize=7, color="gray")
    ax.set_xticks(range(len(stats)), [s.arm for s in stats], rotation=30 if len(stats) > 4 else 0,
                  ha="right" if len(stats) > 4 else "center", fontsize=8)
    ax.set_ylabel(metric.key)
    stem = f"final_{_safe(metric.key)}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_final", {"metric": metric.key})


def paired_diffs(study: Study, analysis: Analysis, metric: Metric, plots_dir: Path) -> Plot | None:
    """Per-seed paired differences against the reference (Δ % for log-scale metrics) with 95 % CI."""
    stats = [analysis.arm_stat(metric, a) for a in study.arms if a != study.reference]
    stats = [s for s in stats if s.paired and s.paired.n > 0]
    if not stats:
        return None
    fig = Figure(figsize=(max(4.0, 0.8 * len(stats) + 2), 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    conv = (lambda d: math.expm1(d) * 100) if metric.log_scale else (lambda d: d)
    for i, (st, color) in enumerate(zip(stats, _colors(len(stats)))):
        p = st.paired
        ax.scatter([i] * p.n, [conv(d) for d in p.diffs], color=color, s=14, zorder=3)
        if math.isfinite(p.lo):
            ax.errorbar(i, conv(p.d), yerr=[[conv(p.d) - conv(p.lo)], [conv(p.hi) - conv(p.d)]], fmt="D",
                        color="black", capsize=5, ms=4)
    ax.axhline(0, color="gray", lw=1)
    ax.set_xlim(-0.6, len(stats) - 0.4)
    ax.set_xticks(range(len(stats)), [s.arm for s in stats], rotation=30 if len(stats) > 4 else 0,
                  ha="right" if len(stats) > 4 else "center", fontsize=8)
    ax.set_ylabel(f"Δ% {metric.key}" if metric.log_scale else f"Δ {metric.key}")
    ax.set_title(f"arm − {study.reference}", fontsize=9)
    stem = f"paired_{_safe(metric.key)}"
    _save(fig, plots_dir, stem)
    return Plot(stem, "plot_paired", {"metric": metric.key, "ref": study.reference})


def grad_norms(study: Study, plots_dir: Path) -> Plot | None:
    """Per-arm small multiples of ``grad_norm/<group>`` curves (mean over seeds, log y)."""
    keys = [k for k in epoch_metric_keys(study) if k.startswith("grad_norm/")]
    if not keys:
        return None
    fig, axes = _grid(len(study.arms))
    colors = dict(zip(keys, _colors(len(keys))))
    for ax, arm in zip(axes, study.arms):
        for key in keys:
            by_epoch = epoch_values(study, arm, key)
            if by_epoch:
                means = [np.mean(list(v.values())) for v in by_epoch.values()]
                ax.plot(list(by_epoch), means, color=colors[key], label=key.split("/", 1)[1])
        ax.set_title(arm, fontsize=9)
        ax.tick_params(labelsize=7)
        _log_y(ax)
    axes[0].legend(fontsize=6)
    _save(fig, plots_dir, "grad_norm")
    return Plot("grad_norm", "plot_grad")


def timeframe_corr(study: Study, plots_dir: Path) -> Plot | None:
    """Grouped bars of ``val/corr/<tf>`` at each seed's best epoch: mean ± std per arm and timeframe."""
    keys = [k for k in epoch_metric_keys(study) if k.startswith("val/corr/")]
    if not keys:
        return None
    fig = Figure(figsize=(max(5.0, 0.5 * len(keys) * len(study.arms) / 2 + 3), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(study.arms))
    for j, (arm, color) in enumerate(zip(study.arms, _colors(len(study.arms)))):
        means, stds = [], []
        for key in keys:
            vals = [r.value(key) for r in study.arm_runs(arm, ok_only=True)]
            vals = [v for v in vals if math.isfinite(v)]
            means.append(np.mean(vals) if vals else np.nan)
            stds.append(np.std(vals, ddof=1) if len(vals) > 1 else 0.0)
        ax.bar(np.arange(len(keys)) + j * width, means, width, yerr=stds, color=color, label=arm, capsize=2)
    ax.set_xticks(np.arange(len(keys)) + width * (len(study.arms) - 1) / 2, [k.split("/", 2)[2] for k in keys])
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_ylabel("val corr (best epoch)")
    ax.legend(fontsize=7, ncols=min(5, len(study.arms)))
    _save(fig, plots_dir, "corr_timeframes")
    return Plot("corr_timeframes", "plot_corr")


def params_vs_metric(study: Study, analysis: Analysis, metric: Metric, plots_dir: Path) -> Plot | None:
    """Trainable parameters (log x) against the metric's mean with its 95 % CI, one point per arm."""
    points = []
    for arm in study.arms:
        counts = [(r.summary.get("params") or {}).get("trainable") for r in study.arm_runs(arm, ok_only=True)]
        counts = [c for c in counts if isinstance(c, (int, float)) and c > 0]
        st = analysis.arm_stat(metric, arm).summary
        if counts and st.n:
            points.append((arm, float(np.median(counts)), st))
    if len(points) < 2:
        return None
    fig = Figure(figsize=(5, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for (arm, x, st), color in zip(points, _colors(len(points))):
        err = [[st.mean - st.lo], [st.hi - st.mean]] if math.isfinite(st.lo) else None
        ax.errorbar(x, st.mean, yerr=err, fmt="o", color=color, capsize=4, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(metric.key)
    ax.legend(fontsize=7)
    _save(fig, plots_dir, "params_vs_metric")
    return Plot("params_vs_metric", "plot_params", {"metric": metric.key})


def phase1(study: Study, plots_dir: Path) -> Plot | None:
    """LM Phase 1: each iteration metric (mean over seeds) per arm."""
    keys: dict[str, None] = {}
    for run in study.runs:
        if run.ok:
            keys.update(dict.fromkeys(k for k in run.iterations.columns if k != "seconds"))
    if not keys:
        return None
    fig, axes = _grid(len(keys), 3.0, 2.2)
    for ax, key in zip(axes, keys):
        for arm, color in zip(study.arms, _colors(len(study.arms))):
            frames = [r.iterations[key] for r in study.arm_runs(arm, ok_only=True) if key in r.iterations]
            if frames:
                mean = pd.concat(frames, axis=1).mean(axis=1)  # runs that stopped early drop out
                ax.plot(mean.index, mean.to_numpy(), color=color, label=arm)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6)
    _save(fig, plots_dir, "phase1")
    return Plot("phase1", "plot_phase1")


def make_plots(study: Study, analysis: Analysis, plots_dir: Path) -> list[Plot]:
    """Write every figure the data support into ``plots_dir``.

    Returns:
        The figures written, in report order.
    """
    plots_dir.mkdir(parents=True, exist_ok=True)
    out: list[Plot | None] = []
    bases = ["loss"] + [m.name.rsplit("/", 1)[-1] for m in analysis.metrics]
    logs = {m.name.rsplit("/", 1)[-1]: m.log_scale for m in analysis.metrics}
    for base in dict.fromkeys(bases):
        out.append(learning_curves(study, base, logs.get(base, False), plots_dir))
    for metric in analysis.metrics:
        out.append(final_bars(study, analysis, metric, plots_dir))
        out.append(paired_diffs(study, analysis, metric, plots_dir))
    if analysis.metrics:
        out.append(params_vs_metric(study, analysis, analysis.metrics[0], plots_dir))
    out += [grad_norms(study, plots_dir), timeframe_corr(study, plots_dir), phase1(study, plots_dir)]
    return [p for p in out if p is not None]
