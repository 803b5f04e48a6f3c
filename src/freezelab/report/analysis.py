"""Numbers -> findings: per-arm statistics, paired verdicts, baseline skill and data-driven warnings.

``analyze(study)`` returns an ``Analysis`` holding only data (no prose); the section builders turn it
into sentences in either language, so both reports state the same facts with the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from freezelab.report import stats
from freezelab.report.aggregate import Study

COMPARED_HASHES = ("data_hash", "split_hash", "eval_hash", "budget_hash")
GAP_THRESHOLD = 0.10  # relative (val - train) / train loss gap at the best epoch worth a warning
CAPACITY_RATIO = 10.0  # protocol §6: trainable parameters differing more than 10x
ACC_NAMES = ("acc", "accuracy", "top1", "top5")


@dataclass(frozen=True)
class Metric:
    """A headline metric resolved to the key it is read from (``test/ppl``, or ``val/ppl`` if no test)."""

    name: str
    key: str
    mode: str  # "min" | "max"
    log_scale: bool

    @property
    def percent(self) -> bool:
        """Accuracy-type metric: shown in %, differences also in points."""
        return self.name.rsplit("/", 1)[-1].lower() in ACC_NAMES


@dataclass
class ArmStat:
    """One arm on one metric: summary over succeeded seeds, paired result vs the reference, skill."""

    arm: str
    metric: Metric
    values: dict[int, float]
    summary: stats.Summary
    paired: stats.Paired | None = None
    p_holm: float = math.nan
    verdict: str = "reference"
    baseline: tuple[str, float] | None = None  # best naive baseline (name, value) on this metric
    skill: str | None = None  # "skill" | "no_skill" | "below_baseline" | None (no baseline)


@dataclass(frozen=True)
class Finding:
    """A warning the data justify; ``code`` selects the sentence template in i18n, ``params`` fill it."""

    code: str
    params: dict[str, Any]


@dataclass
class Best:
    """The best arm on a metric and whether it is separated from the runner-up by the paired CI."""

    metric: Metric
    arm: str
    runner_up: str | None
    paired: stats.Paired | None
    significant: bool


@dataclass
class Analysis:
    """Everything the report states, as data."""

    metrics: list[Metric]
    stats: dict[tuple[str, str], ArmStat]  # (metric.key, arm) -> ArmStat
    best: list[Best]
    warnings: list[Finding] = field(default_factory=list)
    n_ok: dict[str, int] = field(default_factory=dict)
    n_total: dict[str, int] = field(default_factory=dict)

    def arm_stat(self, metric: Metric, arm: str) -> ArmStat:
        """The statistics of one arm on one metric."""
        return self.stats[(metric.key, arm)]


def resolve_metrics(study: Study) -> list[Metric]:
    """Headline names -> readable keys: ``test/<name>`` when any run has it, else ``val/<name>``."""
    out = []
    for h in study.headline:
        name = str(h["name"])
        log_scale = bool(h.get("log_scale")) or name.rsplit("/", 1)[-1] == "ppl"
        keys = [name] if "/" in name else [f"test/{name}", f"val/{name}"]
        key = next((k for k in keys if any(study.values(k, a) for a in study.arms)), keys[0])
        out.append(Metric(name, key, str(h.get("mode", "min")), log_scale))
    return out


def analyze(study: Study) -> Analysis:
    """Compute every statistic, verdict, skill flag and warning of the report.

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
    ref_values = study.values(metric.key, study.reference)
    non_ref = []
    for arm in study.arms:
        values = study.values(metric.key, arm)
        st = ArmStat(arm, metric, values, stats.describe(list(values.values()), log_scale=metric.log_scale))
        st.baseline = _best_baseline(study, arm, metric)
        st.skill = _skill(st)
        if arm != study.reference:
            st.paired = stats.paired(values, ref_values, log_scale=metric.log_scale)
            st.verdict = stats.verdict(st.paired, metric.mode)  # type: ignore[arg-type]
            non_ref.append(st)
        result.stats[(metric.key, arm)] = st
    for st, p in zip(non_ref, stats.holm([s.paired.p for s in non_ref if s.paired])):
        st.p_holm = p


def _best_baseline(study: Study, arm: str, metric: Metric) -> tuple[str, float] | None:
    """Best naive baseline on the metric, from the arm's run summaries (``baselines`` key)."""
    found: dict[str, float] = {}
    for run in study.arm_runs(arm):
        for name, values in (run.summary.get("baselines") or {}).items():
            if isinstance(values, dict) and isinstance(values.get(metric.key), (int, float)):
                found.setdefault(name, float(values[metric.key]))
    if not found:
        return None
    pick = min if metric.mode == "min" else max
    name = pick(found, key=lambda k: found[k])
    return name, found[name]


def _skill(st: ArmStat) -> str | None:
    """``skill`` if the CI clears the best baseline, ``below_baseline`` if it lies entirely on the
    wrong side, else ``no_skill`` (protocol §6). Without a CI (n < 2) the mean is used."""
    if st.baseline is None or st.summary.n == 0:
        return None
    b = st.baseline[1]
    lo, hi = (st.summary.lo, st.summary.hi) if st.summary.n >= 2 else (st.summary.mean, st.summary.mean)
    good, bad = (hi < b, lo > b) if st.metric.mode == "min" else (lo > b, hi < b)
    return "skill" if good else "below_baseline" if bad else "no_skill"


def _best_arm(study: Study, metric: Metric, result: Analysis) -> Best | None:
    ranked = [a for a in study.arms if result.arm_stat(metric, a).summary.n > 0]
    ranked.sort(key=lambda a: result.arm_stat(metric, a).summary.mean, reverse=metric.mode == "max")
    if not ranked:
        return None
    best = ranked[0]
    if len(ranked) == 1:
        return Best(metric, best, None, None, False)
    runner = ranked[1]
    p = stats.paired(result.arm_stat(metric, best).values, result.arm_stat(metric, runner).values,
                     log_scale=metric.log_scale)
    return Best(metric, best, runner, p, stats.verdict(p, metric.mode) == "better")  # type: ignore[arg-type]


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
        for arm in study.arms:
            st = result.arm_stat(metric, arm)
            if st.skill in ("no_skill", "below_baseline") and st.baseline:
                found.append(Finding(st.skill, {"arm": arm, "metric": metric.key, "baseline": st.baseline[0],
                                                "value": st.baseline[1], "percent": metric.percent}))
    for run in study.superseded:
        found.append(Finding("superseded", {"run_id": run.run_id, "arm": run.arm, "seed": run.seed}))
    for text in study.problems:
        found.append(Finding("problem", {"where": "study", "text": text}))
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
