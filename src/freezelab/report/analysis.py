"""Numbers -> findings: per-arm statistics, verdicts against the reference and the best naive baseline,
and data-driven warnings.

``analyze(study)`` returns an ``Analysis`` holding only data (no prose); the section builders turn it
into sentences in either language, so both reports state the same facts with the same numbers. The
verdict statistics are ``inference``'s (docs/statistics.md); ``evidence`` supplies per-item values.

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
from freezelab.report.aggregate import Study

COMPARED_HASHES = ("data_hash", "split_hash", "eval_hash", "budget_hash")
GAP_THRESHOLD = 0.10  # relative (val - train) / train loss gap at the best epoch worth a warning
CAPACITY_RATIO = 10.0  # protocol §6: trainable parameters differing more than 10x
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
    """A warning the data justify; ``code`` selects the sentence template in i18n, ``params`` fill it."""

    code: str
    params: dict[str, Any]


@dataclass
class Best:
    """The arm with the best mean on a metric, and the runner-up (descriptive: no verdict)."""

    metric: Metric
    arm: str
    runner_up: str | None


@dataclass
class Analysis:
    """Everything the report states, as data."""

    metrics: list[Metric]
    stats: dict[tuple[str, str], ArmStat]  # (metric.key, arm) -> ArmStat
    best: list[Best]
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
    else:
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
    result = Analysis(metrics=metrics, stats={}, best=[])
    for arm in study.arms:
        result.n_ok[arm] = len(study.arm_runs(arm, ok_only=True))
        result.n_total[arm] = len(study.arm_runs(arm))
    for metric in metrics:
        _compare(study, metric, result)
        best = _best_arm(study, metric, result)
        if best:
            result.best.append(best)
    result.warnings = collect_warnings(study, result)
    return result


def _compare(study: Study, metric: Metric, result: Analysis) -> None:
    ev = evidence.gather(study, metric.key, metric.item, metric.log_scale)
    pick = min if metric.mode == "min" else max
    best_base = pick(ev.baseline_values, key=lambda b: ev.baseline_values[b]) if ev.baseline_values else None
    res = inf.analyze_metric(ev.runs, ev.baselines, reference=study.reference, best_baseline=best_base,
                             df_item=ev.df_item, method=ev.method, holm=metric.primary, n_items=ev.n_items,
                             block=ev.block)
    result.results[metric.key], result.sources[metric.key] = res, ev
    for arm in study.arms:
        values = study.values(metric.key, arm)
        st = ArmStat(arm, metric, values, stats.describe(list(values.values()), log_scale=metric.log_scale),
                     estimate=res.arms.get(arm))
        if best_base is not None:
            st.baseline = (best_base, ev.baseline_values[best_base])
            st.vs_base = res.comparison(arm, "baseline")
            st.skill = inf.verdict(st.vs_base, metric.mode) if st.vs_base else None
        if arm != study.reference:
            st.vs_ref = res.comparison(arm, "reference")
            st.verdict = inf.verdict(st.vs_ref, metric.mode) if st.vs_ref else "insufficient"
        result.stats[(metric.key, arm)] = st


def _best_arm(study: Study, metric: Metric, result: Analysis) -> Best | None:
    ranked = [a for a in study.arms if result.arm_stat(metric, a).summary.n > 0]
    ranked.sort(key=lambda a: result.arm_stat(metric, a).summary.mean, reverse=metric.mode == "max")
    if not ranked:
        return None
    return Best(metric, ranked[0], ranked[1] if len(ranked) > 1 else None)


def collect_warnings(study: Study, result: Analysis) -> list[Finding]:
    """Every warning of protocol §6 that the data justify, in a stable order."""
    found: list[Finding] = []
    found += _hash_warnings(study)
    found += _seed_warnings(study, result)
    found += _epoch_warnings(study)
    found += _integrity_warnings(study)
    found += _capacity_warning(study)
    for metric in result.metrics:
        if metric.key.startswith("val/"):
            found.append(Finding("same_split", {"metric": metric.key}))
        ev = result.sources.get(metric.key)
        if ev is not None and ev.problems:
            found.append(Finding("seed_level", {"metric": metric.key, "text": "; ".join(ev.problems)}))
    primary = result.primary
    for arm in study.arms:  # the baseline verdicts of the primary metric
        st = result.arm_stat(primary, arm)
        code = {"worse": "below_baseline", "inconclusive": "not_above_baseline",
                "no_difference": "not_above_baseline"}.get(st.skill or "")
        if code and st.baseline:
            found.append(Finding(code, {"arm": arm, "metric": primary.key, "baseline": st.baseline[0],
                                        "value": st.baseline[1], "percent": primary.percent}))
    for run in study.superseded:
        found.append(Finding("superseded", {"run_id": run.run_id, "arm": run.arm, "seed": run.seed}))
    for text in study.problems:
        found.append(Finding("problem", {"where": "study", "text": text}))
    from freezelab.report.masking import masking_findings  # time-series masks: leaks, fractions out of band
    found += masking_findings(study)
    return found


def _hash_warnings(study: Study) -> list[Finding]:
    out = []
    for name in COMPARED_HASHES:
        by_value: dict[str, set[str]] = {}
        for run in study.runs:
            value = (run.summary.get("hashes") or {}).get(name)
            if value:
                by_value.setdefault(str(value), set()).add(run.arm)
        if len(by_value) > 1:
            groups = {v[:12]: sorted(arms, key=study.arms.index) for v, arms in by_value.items()}
            out.append(Finding("confound_hash", {"hash": name, "groups": groups}))
    precisions = {str((r.summary.get("environment") or {}).get("precision")) for r in study.runs if r.summary}
    if len(precisions - {"None"}) > 1:
        out.append(Finding("confound_precision", {"values": sorted(precisions - {"None"})}))
    arms_spec = study.spec.get("arms") or {}
    if isinstance(arms_spec, dict):
        for arm, spec in arms_spec.items():
            keys = (spec or {}).get("allow_confound") if isinstance(spec, dict) else None
            if keys:
                out.append(Finding("allow_confound", {"arm": arm, "keys": list(keys)}))
    return out


def _seed_warnings(study: Study, result: Analysis) -> list[Finding]:
    out = []
    if len(study.seeds) == 1:
        out.append(Finding("single_seed", {"seed": study.seeds[0]}))
    for arm in study.arms:
        n_ok, n_all = result.n_ok[arm], result.n_total[arm]
        if n_ok < n_all:
            bad = [r.label() for r in study.arm_runs(arm) if not r.ok]
            out.append(Finding("failed_seeds", {"arm": arm, "n": n_ok, "total": n_all, "runs": bad}))
        if n_ok < 2 and len(study.seeds) > 1:
            out.append(Finding("no_ci", {"arm": arm, "n": n_ok}))
    if len(set(result.n_ok.values())) > 1:
        out.append(Finding("unequal_n", {"counts": dict(result.n_ok)}))
    return out


def _epoch_warnings(study: Study) -> list[Finding]:
    out = []
    for arm in study.arms:
        first, last, gaps = [], [], []
        for run in study.arm_runs(arm, ok_only=True):
            ep = run.best_epoch
            if ep is None:
                continue
            max_epochs = run.summary.get("max_epochs") or run.summary.get("epochs_run")
            if ep == 1:
                first.append(run.seed)
            if max_epochs and ep == int(max_epochs) and ep > 1:
                last.append(run.seed)
            e = run.epochs
            if ep in e.index and {"train/loss", "val/loss"} <= set(e.columns):
                tr, va = float(e.at[ep, "train/loss"]), float(e.at[ep, "val/loss"])
                if math.isfinite(tr) and math.isfinite(va) and tr > 0:
                    gaps.append((va - tr) / tr)
        if first:
            out.append(Finding("best_first", {"arm": arm, "seeds": first}))
        if last:
            out.append(Finding("best_last", {"arm": arm, "seeds": last}))
        if gaps and sum(gaps) / len(gaps) > GAP_THRESHOLD:
            out.append(Finding("train_val_gap", {"arm": arm, "gap": 100 * sum(gaps) / len(gaps)}))
    return out


def _integrity_warnings(study: Study) -> list[Finding]:
    out = []
    for run in study.runs:
        where = {"arm": run.arm, "seed": run.seed}
        bad = sorted({k for ln in run.metrics for k, v in ln.items()
                      if isinstance(v, float) and not math.isfinite(v)})
        if bad or run.error.get("code") == "non_finite":
            out.append(Finding("non_finite", {**where, "keys": bad or [run.error.get("code")]}))
        skipped = sum(v for ln in run.metrics for k, v in ln.items()
                      if "skipped" in k and isinstance(v, (int, float)) and math.isfinite(v))
        skipped += sum(v for k, v in run.summary.items() if "skipped" in k and isinstance(v, (int, float)))
        if skipped > 0:
            out.append(Finding("skipped_steps", {**where, "count": int(skipped)}))
        inv = run.summary.get("invariants") or {}
        if inv.get("frozen_unchanged") is False or run.error.get("code") == "frozen_tensor_changed":
            out.append(Finding("frozen_changed", where))
        if inv.get("dead_tensors"):
            out.append(Finding("dead_tensors", {**where, "names": list(inv["dead_tensors"])}))
        if run.summary.get("trust_remote_code"):
            out.append(Finding("remote_code", where))
        for text in inv.get("warnings") or []:
            out.append(Finding("invariant_warning", {**where, "text": str(text)}))
        for text in run.problems:
            out.append(Finding("problem", {"where": run.run_id, "text": text}))
    return out


def _capacity_warning(study: Study) -> list[Finding]:
    trainable: dict[str, float] = {}
    for arm in study.arms:
        counts = [(r.summary.get("params") or {}).get("trainable") for r in study.arm_runs(arm)]
        counts = [c for c in counts if isinstance(c, (int, float)) and c > 0]
        if counts:
            trainable[arm] = float(sorted(counts)[len(counts) // 2])
    if len(trainable) < 2:
        return []
    hi, lo = max(trainable, key=trainable.get), min(trainable, key=trainable.get)  # type: ignore[arg-type]
    ratio = trainable[hi] / trainable[lo]
    if ratio <= CAPACITY_RATIO:
        return []
    return [Finding("capacity", {"hi": hi, "lo": lo, "ratio": ratio, "hi_n": trainable[hi], "lo_n": trainable[lo]})]
