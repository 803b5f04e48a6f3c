"""Numbers -> verdicts: per-arm statistics, each arm against the reference and the best naive baseline,
the best arm against the runner-up, and what the answer's first sentence may claim.

``analyze(study)`` returns an ``Analysis`` holding only data (no prose); the section builders turn it
into sentences in either language, so both reports state the same facts with the same numbers. The
statistics are ``inference``'s (docs/statistics.md), the words ``verdicts``' ; ``evidence`` supplies
per-item values. The warnings the data justify are added by ``warnings.collect`` (``warnings.full_analysis``
does both).

The primary metric is the test counterpart of the selection metric (``val/loss`` -> ``test/loss``, shown
as test PPL: one quantity, one verdict row). Its comparisons (each arm vs the reference and vs the best
naive baseline) form one Holm family; the other headline metrics are descriptive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from freezelab.report import evidence, stats
from freezelab.report import inference as inf
from freezelab.report import verdicts as vd
from freezelab.report.aggregate import Study

ACC_NAMES = ("acc", "accuracy", "top1", "top5")
SAME_QUANTITY = {"loss": "ppl"}  # PPL = exp(loss): selecting on loss and reporting PPL is one quantity


@dataclass(frozen=True)
class Metric:
    """A headline metric resolved to the key it is read from (``test/ppl``, or ``val/ppl`` if no test).

    ``item`` is the metric's name in ``items/*.npz`` (``loss`` for PPL, whose log it is); ``primary`` marks
    the metric whose comparisons carry verdicts.
    """

    name: str
    key: str
    mode: str  # "min" | "max"
    log_scale: bool
    item: str = ""
    primary: bool = False

    @property
    def percent(self) -> bool:
        """Accuracy-type metric: shown in %, differences also in points."""
        return self.name.rsplit("/", 1)[-1].lower() in ACC_NAMES

    def display(self, g: float) -> float:
        """Analysis units (log for log-scale metrics) -> the metric's own units."""
        return math.exp(g) if self.log_scale and math.isfinite(g) else g


@dataclass
class ArmStat:
    """One arm on one metric: seed summary, its estimate, and its comparisons with verdicts."""

    arm: str
    metric: Metric
    values: dict[int, float]  # seed -> value in metric units (summary.json)
    summary: stats.Summary  # mean ± std over seeds (tables)
    estimate: inf.Estimate | None = None  # mean with item + seed uncertainty (analysis units)
    vs_ref: inf.Comparison | None = None
    vs_base: inf.Comparison | None = None
    verdict: str = "reference"  # vs the reference: better | worse | inconclusive | no_difference | insufficient
    baseline: tuple[str, float] | None = None  # best naive baseline (name, value) on this metric
    skill: str | None = None  # verdict vs that baseline (same words), None without a baseline

    def interval(self) -> tuple[float, float]:
        """The arm's 95 % interval in metric units (nan without one)."""
        if self.estimate is None:
            return math.nan, math.nan
        lo, hi = self.estimate.interval()
        return self.metric.display(lo), self.metric.display(hi)


@dataclass(frozen=True)
class Finding:
    """A warning the data justify; ``code`` selects the sentence template in i18n, ``params`` fill it.
    ``params["arm"]`` (and ``seed``) name the arm (run) it concerns; without an arm it is study-wide."""

    code: str
    params: dict[str, Any]

    @property
    def arm(self) -> str | None:
        """The arm the warning concerns (None: the whole study)."""
        arm = self.params.get("arm")
        return str(arm) if arm is not None else None


@dataclass
class Analysis:
    """Everything the report states, as data."""

    metrics: list[Metric]
    stats: dict[tuple[str, str], ArmStat]  # (metric.key, arm) -> ArmStat
    best: dict[str, vd.BestClaim] = field(default_factory=dict)  # metric.key -> best arm vs runner-up
    results: dict[str, inf.MetricResult] = field(default_factory=dict)  # metric.key -> inference result
    sources: dict[str, evidence.Evidence] = field(default_factory=dict)  # metric.key -> how it was obtained
    warnings: list[Finding] = field(default_factory=list)
    n_ok: dict[str, int] = field(default_factory=dict)
    n_total: dict[str, int] = field(default_factory=dict)

    def arm_stat(self, metric: Metric, arm: str) -> ArmStat:
        """The statistics of one arm on one metric."""
        return self.stats[(metric.key, arm)]

    @property
    def primary(self) -> Metric:
        """The metric whose comparisons carry the verdicts."""
        return next((m for m in self.metrics if m.primary), self.metrics[0])

    @property
    def headline(self) -> vd.Headline:
        """What the answer's first sentence may claim (verdicts.headline) on the primary metric."""
        m = self.primary
        stats = [self.stats[(m.key, a)] for a in self.n_ok if (m.key, a) in self.stats]
        done = [st for st in stats if st.summary.n]
        base = next((st.baseline for st in done if st.baseline), None)
        return vd.headline(self.best.get(m.key), {st.arm: st.skill for st in done}, base)

    def family_size(self) -> int:
        """Number of comparisons in the primary metric's Holm family."""
        res = self.results.get(self.primary.key)
        return sum(1 for c in res.comparisons if math.isfinite(c.p)) if res else 0


def _item_name(name: str, log_scale: bool) -> str:
    base = name.rsplit("/", 1)[-1] if name.count("/") == 1 else name.split("/", 1)[-1]
    return next((q for q, shown in SAME_QUANTITY.items() if shown == base and log_scale), base)


def resolve_metrics(study: Study) -> list[Metric]:
    """Headline names -> readable keys (``test/<name>`` when any run has it, else ``val/<name>``); the
    primary metric (selection metric's test counterpart) first; a headline that is the same quantity as
    another (loss next to PPL) is dropped."""
    heads = []
    for h in study.headline:
        name = str(h["name"])
        log_scale = bool(h.get("log_scale")) or name.rsplit("/", 1)[-1] == "ppl"
        heads.append((name, str(h.get("mode", "min")), log_scale))
    sel = str(study.selection.get("metric", "val/loss")).split("/", 1)[-1]
    shown = SAME_QUANTITY.get(sel, sel)
    if any(n == shown for n, _, _ in heads):
        sel = shown
    elif not any(n == sel for n, _, _ in heads):
        heads.insert(0, (sel, str(study.selection.get("mode", "min")), False))
    names = [n for n, _, _ in heads]
    heads = [h for h in heads if not (h[0] in SAME_QUANTITY and SAME_QUANTITY[h[0]] in names)]
    heads.sort(key=lambda h: h[0] != sel)
    out = []
    for name, mode, log_scale in heads:
        keys = [name] if "/" in name and name.split("/", 1)[0] in ("val", "test") else [f"test/{name}", f"val/{name}"]
        key = next((k for k in keys if any(study.values(k, a) for a in study.arms)), keys[0])
        out.append(Metric(name, key, mode, log_scale, _item_name(key, log_scale), primary=name == sel))
    return out


def analyze(study: Study) -> Analysis:
    """Compute every statistic, verdict and warning of the report.

    Args:
        study: the loaded study.

    Returns:
        The ``Analysis``.
    """
    metrics = resolve_metrics(study)
    result = Analysis(metrics=metrics, stats={})
    for arm in study.arms:
        result.n_ok[arm] = len(study.arm_runs(arm, ok_only=True))
        result.n_total[arm] = len(study.arm_runs(arm))
    for metric in metrics:
        _compare(study, metric, result)
        best = vd.best_claim(result.results[metric.key], study.reference, metric.mode)
        if best is not None:
            result.best[metric.key] = best
    return result


def _compare(study: Study, metric: Metric, result: Analysis) -> None:
    ev = evidence.gather(study, metric.key, metric.item, metric.log_scale)
    pick = min if metric.mode == "min" else max
    best_base = pick(ev.baseline_values, key=lambda b: ev.baseline_values[b]) if ev.baseline_values else None
    res = inf.analyze_metric(ev.runs, ev.baselines, reference=study.reference, best_baseline=best_base,
                             df_item=ev.df_item, method=ev.method, holm=metric.primary, n_items=ev.n_items,
                             block=ev.block, mode=metric.mode)
    result.results[metric.key], result.sources[metric.key] = res, ev
    for arm in study.arms:
        values = study.values(metric.key, arm)
        st = ArmStat(arm, metric, values, stats.describe(list(values.values()), log_scale=metric.log_scale),
                     estimate=res.arms.get(arm))
        if best_base is not None:
            st.baseline = (best_base, ev.baseline_values[best_base])
            st.vs_base = res.comparison(arm, "baseline")
            st.skill = vd.verdict(st.vs_base, metric.mode) if st.vs_base else None
        if arm != study.reference:
            st.vs_ref = res.comparison(arm, "reference")
            st.verdict = vd.verdict(st.vs_ref, metric.mode) if st.vs_ref else "insufficient"
        result.stats[(metric.key, arm)] = st
