"""Every warning the data justify (protocol §6), each a ``Finding`` tied to the arm (and run) it concerns.

``collect(study, analysis)`` reads the run folders and the analysis and returns the findings in a stable
order; ``full_analysis(study)`` is ``analysis.analyze`` with them. The report shows each warning once,
next to its arm (``group``): a finding that holds for several seeds of an arm is one line with those seeds,
one that holds for every arm is one study-wide line.

Besides the protocol's list (hash and precision confounds, failed seeds, unequal n, best epoch first/last,
non-finite values, skipped steps, invariant results, capacity, same split, no skill) the reader is told:
that a profile (``--profile quick``) made the numbers a smoke test; a Phase 1 that stopped before its
convergence threshold; an arm that unfroze for fewer than ``UNFREEZE_MIN_EPOCHS`` epochs or at an applied
learning rate below ``UNFREEZE_MIN_LR``, or whose selected epoch precedes the unfreezing; and every entry
of a run's ``summary.warnings`` and ``data.load_warnings``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from freezelab.report.aggregate import Run, Study
from freezelab.report.analysis import Analysis, Finding, analyze
from freezelab.report.masking import masking_findings
from freezelab.report.verdicts import SKILL_WARNINGS

COMPARED_HASHES = ("data_hash", "split_hash", "eval_hash", "budget_hash")
GAP_THRESHOLD = 0.10  # relative (val - train) / train loss gap at the best epoch worth a warning
CAPACITY_RATIO = 10.0  # protocol §6: trainable parameters differing more than 10x
UNFREEZE_MIN_EPOCHS = 2  # fewer epochs trained after unfreezing cannot show what unfreezing does
UNFREEZE_MIN_LR = 1e-5  # an applied learning rate below this barely moves a pretrained tensor in a few epochs
PHASE1_MIN_CONVERGED = 0.95  # phase1.min_converged_ratio's default (config/schema.py)
SEVERE = ("confound_hash", "confound_precision", "allow_confound", "frozen_changed", "single_seed",
          "below_baseline", "seed_level", "failed_seeds", "non_finite", "remote_code", "mask_inputs", "mask_leak",
          "mask_band")  # shown first, in bold


def full_analysis(study: Study) -> Analysis:
    """``analysis.analyze(study)`` with ``warnings`` filled by ``collect``."""
    result = analyze(study)
    result.warnings = collect(study, result)
    return result


def collect(study: Study, result: Analysis) -> list[Finding]:
    """Every warning the data justify, in a stable order (study-wide first)."""
    found: list[Finding] = []
    found += _hash_warnings(study)
    found += _seed_warnings(study, result)
    found += _epoch_warnings(study)
    found += _integrity_warnings(study)
    found += _capacity_warning(study)
    seed_level: dict[str, list[str]] = {}  # reason -> the metrics it holds for (one line, not one per metric)
    for metric in result.metrics:
        if metric.key.startswith("val/"):
            found.append(Finding("same_split", {"metric": metric.key}))
        ev = result.sources.get(metric.key)
        if ev is not None and ev.problems:
            seed_level.setdefault("; ".join(ev.problems), []).append(metric.key)
    for text, keys in seed_level.items():
        found.append(Finding("seed_level", {"metric": ", ".join(keys), "text": text}))
    primary = result.primary
    for arm in study.arms:  # the baseline verdicts of the primary metric
        st = result.arm_stat(primary, arm)
        code = SKILL_WARNINGS.get(st.skill or "")
        if code and st.baseline:
            found.append(Finding(code, {"arm": arm, "metric": primary.key, "baseline": st.baseline[0],
                                        "value": st.baseline[1], "percent": primary.percent}))
    for run in study.runs:
        if run.ok:
            found += _unfreeze_warnings(run) + _run_notes(run)
    found += _phase1_warnings(study)
    for run in study.superseded:
        found.append(Finding("superseded", {"run_id": run.run_id, "arm": run.arm, "seed": run.seed}))
    for text in study.problems:
        found.append(Finding("problem", {"text": text}))
    found += masking_findings(study)  # time-series masks: leaks, fractions out of band
    found += _tuning_warnings(study)
    return found


def _tuning_warnings(study: Study) -> list[Finding]:
    """A learning rate chosen at the edge of its grid (tune:): the best one may lie outside it."""
    from freezelab.report.tuning import read_tuning

    rec, problem = read_tuning(study.out_dir)
    if problem:
        return [Finding("problem", {"text": problem})]
    out = []
    for arm, a in (rec or {}).get("arms", {}).items():
        if a["at_edge"] and arm in study.arms:
            grid = [float(x) for x in a["grid"]]
            out.append(Finding("lr_at_edge", {"arm": arm, "lr": float(a["chosen"]), "lo": min(grid), "hi": max(grid),
                                              "side": a.get("edge") or "high"}))
    return out


def profiles(study: Study) -> dict[str, list[Run]]:
    """Profile name -> the runs made under it (``run.json`` ``profile``, else ``study.json``'s)."""
    out: dict[str, list[Run]] = {}
    for run in study.runs:
        if run.path is None:
            continue
        name = run.info.get("profile", study.spec.get("profile")) if run.info else study.spec.get("profile")
        if name:
            out.setdefault(str(name), []).append(run)
    return out


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
        gaps = []
        for run in study.arm_runs(arm, ok_only=True):
            ep = run.best_epoch
            if ep is None:
                continue
            max_epochs = run.summary.get("max_epochs") or run.summary.get("epochs_run")
            if ep == 1:
                out.append(Finding("best_first", {"arm": arm, "seed": run.seed}))
            if max_epochs and ep == int(max_epochs) and ep > 1:
                out.append(Finding("best_last", {"arm": arm, "seed": run.seed}))
            e = run.epochs
            if ep in e.index and {"train/loss", "val/loss"} <= set(e.columns):
                tr, va = float(e.at[ep, "train/loss"]), float(e.at[ep, "val/loss"])
                if math.isfinite(tr) and math.isfinite(va) and tr > 0:
                    gaps.append((va - tr) / tr)
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
            out.append(Finding("run_problem", {**where, "run_id": run.run_id, "text": text}))
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


def _number(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _config(run: Run, dotted: str) -> Any:
    node: Any = run.config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _phase1_warnings(study: Study) -> list[Finding]:
    """LM Phase 1 runs that stopped before their convergence threshold (the seed study's 22 % vs 95 %): one
    finding naming the arms, with the range of converged shares over their runs."""
    ratios: dict[str, list[float]] = {}
    threshold, iterations = PHASE1_MIN_CONVERGED, set()
    for run in study.runs:
        p1 = run.summary.get("phase1") if run.ok else None
        if not isinstance(p1, dict) or p1.get("enabled") is False or p1.get("converged") is not False:
            continue
        ratios.setdefault(run.arm, []).append(_number(p1.get("converged_ratio")))
        t = _number(p1.get("min_converged_ratio", _config(run, "phase1.min_converged_ratio")))
        threshold = t if math.isfinite(t) else threshold
        iterations.add(f"{p1.get('iterations')}/{p1.get('max_iterations')}")
    if not ratios:
        return []
    values = [r for v in ratios.values() for r in v if math.isfinite(r)]
    return [Finding("phase1_not_converged", {"arms": list(ratios), "lo": min(values, default=math.nan),
                                             "hi": max(values, default=math.nan), "threshold": threshold,
                                             "iterations": ", ".join(sorted(iterations))})]


def _unfreeze_warnings(run: Run) -> list[Finding]:
    """An arm that unfroze (``summary.phases``): too few epochs trained unfrozen, an applied learning rate
    too small to move the unfrozen tensors, or a selected epoch from before the unfreezing."""
    events = [p for p in run.summary.get("phases") or [] if isinstance(p, dict) and p.get("event") == "unfreeze"]
    if not events:
        return []
    out = []
    at = int(_number(events[0].get("epoch")))  # the first epoch trained unfrozen
    ran = int(_number(run.summary.get("epochs_run")) if math.isfinite(_number(run.summary.get("epochs_run")))
              else (max(run.epochs.index) if len(run.epochs.index) else 0))
    where = {"arm": run.arm, "seed": run.seed, "epoch": at}
    unfrozen = max(0, ran - at + 1)
    if unfrozen < UNFREEZE_MIN_EPOCHS:
        out.append(Finding("unfreeze_short", {**where, "epochs": unfrozen, "minimum": UNFREEZE_MIN_EPOCHS}))
    groups = [str(g) for e in events for g in e.get("groups") or []]
    lrs = [float(v) for g in groups if f"lr/{g}" in run.epochs.columns
           for e, v in run.epochs[f"lr/{g}"].items() if e >= at and math.isfinite(float(v))]
    if lrs and max(lrs) < UNFREEZE_MIN_LR:
        out.append(Finding("unfreeze_low_lr", {**where, "lr": max(lrs), "minimum": UNFREEZE_MIN_LR,
                                               "groups": list(dict.fromkeys(groups))}))
    best = run.best_epoch
    if best is not None and best < at:
        out.append(Finding("best_before_unfreeze", {**where, "best": best}))
    return out


def _run_notes(run: Run) -> list[Finding]:
    """The run's own ``summary.warnings`` and ``data.load_warnings`` (the masking lines are the masking
    findings' and are left to them)."""
    masking = run.summary.get("masking") if isinstance(run.summary.get("masking"), dict) else {}
    stated = {str(x) for x in masking.get("problems") or []}
    data = run.summary.get("data") if isinstance(run.summary.get("data"), dict) else {}
    out = []
    for code, texts in (("run_warning", run.summary.get("warnings")), ("load_warning", data.get("load_warnings"))):
        for text in texts if isinstance(texts, list) else []:
            if str(text) not in stated:
                out.append(Finding(code, {"arm": run.arm, "seed": run.seed, "text": str(text)}))
    return out


# ----------------------------------------------------------------------------- grouping for the page


@dataclass
class Grouped:
    """One warning as shown: the finding (without its seed), the arms and seeds it holds for."""

    finding: Finding
    arms: list[str] = field(default_factory=list)  # [] : study-wide; every arm: ``every_arm``
    seeds: dict[str, list[int]] = field(default_factory=dict)  # arm -> seeds (run-level findings)
    every_arm: bool = False

    @property
    def severe(self) -> bool:
        return self.finding.code in SEVERE


def _key(f: Finding) -> tuple:
    run_level = f.arm is not None
    return (f.code, repr(sorted((k, v) for k, v in f.params.items() if k != "arm" and not (k == "seed" and run_level))))


def group(study: Study, findings: list[Finding]) -> tuple[list[Grouped], list[Grouped], dict[str, list[Grouped]]]:
    """Each distinct warning once: (study-wide ones, including those that hold for every arm with runs; those
    that hold for several arms; arm -> the warnings of that arm alone). A run-level warning records the
    seeds it holds for."""
    merged: dict[tuple, Grouped] = {}
    for f in findings:
        shown = {k: v for k, v in f.params.items() if not (k == "seed" and f.arm is not None)}
        g = merged.setdefault(_key(f), Grouped(Finding(f.code, shown)))
        if f.arm is not None:
            if f.arm not in g.arms:
                g.arms.append(f.arm)
            if "seed" in f.params:
                g.seeds.setdefault(f.arm, []).append(int(f.params["seed"]))
    with_runs = [a for a in study.arms if study.arm_runs(a)]
    study_wide: list[Grouped] = []
    several: list[Grouped] = []
    per_arm: dict[str, list[Grouped]] = {}
    for g in merged.values():
        g.arms.sort(key=lambda a: study.arms.index(a) if a in study.arms else len(study.arms))
        if not g.arms:
            study_wide.append(g)
        elif len(with_runs) > 1 and set(g.arms) >= set(with_runs):
            g.every_arm = True
            study_wide.append(g)
        elif len(g.arms) > 1:
            several.append(g)
        else:
            per_arm.setdefault(g.arms[0], []).append(g)
    for found in (study_wide, several, *per_arm.values()):
        found.sort(key=lambda g: not g.severe)
    return study_wide, several, {a: per_arm[a] for a in study.arms if a in per_arm}


def shown_count(study: Study, findings: list[Finding]) -> int:
    """How many warnings the page shows (``group``: each distinct warning once)."""
    study_wide, several, per_arm = group(study, findings)
    return len(study_wide) + len(several) + sum(len(v) for v in per_arm.values())
