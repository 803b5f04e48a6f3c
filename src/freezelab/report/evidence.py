"""Per-run metric values and their item-bootstrap replicates, from ``items/*.npz`` or, failing that, from
``summary.json`` (seed-level statistics); the input of ``inference.analyze_metric``.

Item-level statistics are used for a metric only when every succeeded run of the study has per-item
scores for it on identical items (same item ids) that reproduce the run's own summary value, and the
baselines have them too; otherwise the whole metric falls back to seed-level statistics and the reason
is returned, so the report says so. Every resample is shared by all runs and baselines (paired).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from freezelab.report import inference as inf
from freezelab.report.aggregate import Run, Study
from freezelab.tracking.items import MODEL, ItemScores, MetricDef, SplitItems

REL_TOL = 1e-4  # items must reproduce summary.json to this relative precision (float32 sums differ slightly)


@dataclass
class Evidence:
    """What ``analyze_metric`` needs for one metric, and how it was obtained."""

    runs: dict[str, dict[int, inf.RunValues]]  # arm -> seed -> values (analysis units)
    baselines: dict[str, inf.RunValues]
    baseline_values: dict[str, float]  # baseline -> value in metric units
    method: str
    df_item: float = math.inf
    n_items: int = 0
    block: int = 1
    problems: list[str] = field(default_factory=list)  # why items were not used


def _g(value: float, log: bool) -> float:
    if not log:
        return value
    return math.log(value) if value > 0 else math.nan


def seed_level(study: Study, key: str, log: bool, problems: list[str]) -> Evidence:
    """Summary values only: no item variance; baselines as exact constants (their noise is unknown)."""
    runs = {arm: {s: inf.RunValues(_g(v, log), None) for s, v in study.values(key, arm).items()}
            for arm in study.arms}
    base = baseline_summary_values(study, key)
    return Evidence(runs, {b: inf.RunValues(_g(v, log), None) for b, v in base.items()}, base,
                    inf.METHOD_SEEDS, problems=problems)


def baseline_summary_values(study: Study, key: str) -> dict[str, float]:
    """Baseline name -> value of ``key`` from the first run that recorded it (``summary.baselines``)."""
    found: dict[str, float] = {}
    for run in study.runs:
        for name, values in (run.summary.get("baselines") or {}).items():
            if isinstance(values, dict) and isinstance(values.get(key), (int, float)):
                found.setdefault(name, float(values[key]))
    return found


def _split_items(run: Run, source: str, split: str, name: str) -> tuple[SplitItems, MetricDef] | None:
    scores: ItemScores | None = run.items.get(source)
    if scores is None or split not in scores.splits or name not in scores.metrics:
        return None
    return scores.splits[split], scores.metrics[name]


def gather(study: Study, key: str, item_name: str, log: bool) -> Evidence:
    """Evidence for metric ``key`` (``test/ppl``) computed from the items metric ``item_name`` (``loss``).

    Args:
        study: the loaded study.
        key: the summary key of the metric (``split/name``).
        item_name: the metric's name in the items files (the same quantity, e.g. log PPL = loss).
        log: analyse in log units (``key`` is log-scale and ``item_name`` is not already a log).

    Returns:
        Item-level ``Evidence``, or seed-level ``Evidence`` with the reason in ``problems``.
    """
    split = key.split("/", 1)[0]
    ok = [r for r in study.runs if r.ok and math.isfinite(r.value(key))]
    take_log = log and item_name == key.split("/", 1)[1]  # "loss" for "ppl" is already in log units
    found: dict[tuple[str, int], tuple[SplitItems, MetricDef]] = {}
    missing = []
    for run in ok:
        got = _split_items(run, MODEL, split, item_name)
        if got is None:
            missing.append(f"{run.arm} seed {run.seed}")
        else:
            found[(run.arm, run.seed)] = got
    if not ok:
        return seed_level(study, key, log, [])
    if missing:
        which = "any run" if len(missing) == len(ok) else ", ".join(missing)
        return seed_level(study, key, log, [f"no per-item scores in {which}"])
    ids = next(iter(found.values()))[0].ids
    differ = [f"{a} seed {s}" for (a, s), (it, _) in found.items() if not np.array_equal(it.ids, ids)]
    if differ:
        return seed_level(study, key, log, [f"per-item scores of {key} are on other items in {', '.join(differ)}"])
    bad = []
    for run in ok:
        items, mdef = found[(run.arm, run.seed)]
        value = mdef.value(items.columns)
        expected = math.log(run.value(key)) if (log and not take_log) else run.value(key)
        if not math.isclose(value, expected, rel_tol=REL_TOL, abs_tol=1e-9):
            bad.append(f"{run.arm} seed {run.seed} ({value:.6g} vs summary {expected:.6g})")
    if bad:
        return seed_level(study, key, log, [f"per-item scores of {key} do not reproduce summary.json in "
                                            f"{', '.join(bad)}"])
    base_items = _baseline_items(study, split, item_name, ids)
    first = found[(ok[0].arm, ok[0].seed)]
    z = _series(first, base_items)
    hint = max(first[0].block, overlap(first[0].ids, first[0].span))
    block = inf.choose_block(z, overlapping=first[0].span > 0, hint=hint)
    weights = inf.resample_weights(len(ids), block=block, seed=inf.stable_seed(study.name, key))
    runs: dict[str, dict[int, inf.RunValues]] = {arm: {} for arm in study.arms}
    for (arm, seed), (items, mdef) in found.items():
        runs[arm][seed] = inf.run_values(mdef.value(items.columns), mdef.value(items.columns, weights), take_log)
    baselines, base_values = {}, {}
    for name, (items, mdef) in base_items.items():
        v = mdef.value(items.columns)
        baselines[name] = inf.run_values(v, mdef.value(items.columns, weights), take_log)
        base_values[name] = math.exp(v) if (log and not take_log) else v
    return Evidence(runs, baselines, base_values, inf.METHOD_ITEMS, df_item=math.ceil(len(ids) / block) - 1,
                    n_items=len(ids), block=block)


def _baseline_items(study: Study, split: str, item_name: str, ids: np.ndarray) -> dict[str, tuple[SplitItems,
                                                                                             MetricDef]]:
    """Baseline item scores on the same items, from the first succeeded run that has them."""
    out: dict[str, tuple[SplitItems, MetricDef]] = {}
    for run in study.runs:
        if not run.ok:
            continue
        for source in run.items:
            if source == MODEL or source in out:
                continue
            got = _split_items(run, source, split, item_name)
            if got is not None and np.array_equal(got[0].ids, ids):
                out[source] = got
    return out


def _series(run: tuple[SplitItems, MetricDef], base_items: dict) -> np.ndarray:
    """Per-item series whose mean the comparisons estimate (for the block length): one run's per-item
    metric minus the first baseline's, or the run's alone without baselines."""
    z = _per_item(*run)
    if base_items:
        b_items, b_def = next(iter(base_items.values()))
        z = z - _per_item(b_items, b_def)
    return z


def _per_item(items: SplitItems, mdef: MetricDef) -> np.ndarray:
    """Per-item contribution to the metric: Σ over groups of scale · num / mean(den) (a linearisation)."""
    out = np.zeros(items.n)
    for num, den, scale in zip(mdef.num, mdef.den, mdef.scale):
        d = items.columns[den]
        out += scale * items.columns[num] / max(float(d.mean()), 1e-12)
    return out


def overlap(ids: np.ndarray, span: int) -> int:
    """Median number of consecutive items sharing data with an item: those whose id is within ``span``
    after it (time-series windows reaching back over the same bars), counting itself; 1 without a span."""
    if span <= 0 or len(ids) < 2:
        return 1
    order = np.sort(ids)
    reach = np.searchsorted(order, order + span, side="left") - np.arange(len(order))  # (n,)
    return int(max(1, np.median(reach)))
