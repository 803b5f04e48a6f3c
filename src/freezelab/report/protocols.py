"""Arms that ran under different protocols or on different evaluation data, analysed as separate sub-studies.

A replication study (examples/replicate-*.yaml) runs the original's comparison as it was run beside the
corrected protocol. Arms of different protocols are scored on different items, masks or units, so they are
never paired with each other: ``split_by`` groups the arms by a key of their resolved config (the task's
faithful options, ts_replication.py and lm_replication.py) and every group gets its own analysis
(``analyse_groups``: its items, seeds, baselines, Holm family and warnings) against its own reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from freezelab.report import document as doc
from freezelab.report.aggregate import Run, Study
from freezelab.report.analysis import Analysis
from freezelab.report.headline import time_cell
from freezelab.report.sections import Ctx
from freezelab.report.warnings import full_analysis


@dataclass
class Group:
    """The arms of one protocol (and evaluation data), analysed as a sub-study."""

    options: tuple[str, ...]  # e.g. ("windows.layout=legacy", ...); () = corrected
    arms: list[str]
    reference: str
    study: Study
    analysis: Analysis | None = None
    n_faithful: int = 0  # how many faithful options the task knows (an "original" group turns on all)

    @property
    def kind(self) -> str:
        """corrected, original (every faithful option) or partial."""
        n = len([o for o in self.options if not o.startswith("data=")])
        return "corrected" if not n else "original" if n >= self.n_faithful else "partial"


def get_key(config: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key of a resolved config (None when absent)."""
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def faithful_options(run: Run, faithful: tuple[tuple[str, tuple[Any, ...]], ...]) -> tuple[str, ...]:
    """The options of a ``(dotted key, original values)`` table that a run's resolved config turns on, as
    ``key=value`` with YAML booleans (empty: the corrected protocol)."""
    def shown(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)
    return tuple(f"{key}={shown(get_key(run.config, key))}"
                 for key, values in faithful if get_key(run.config, key) in values)


def split_by(study: Study, key_of: Callable[[Run], tuple[str, ...]], pick_reference: Callable[[list[str]], str],
             first: dict[str, Run | None], n_faithful: int = 0) -> list[Group]:
    """Arms grouped by ``key_of(run)`` of their first run, the study reference's group first (its reference
    kept), every other group with ``pick_reference(arms)``; [] when there is only one group."""
    by: dict[tuple[str, ...], list[str]] = {}
    ref_run = first.get(study.reference)
    if ref_run is None:
        return []
    for arm in study.arms:
        run = first[arm]
        by.setdefault(key_of(run) if run is not None else key_of(ref_run), []).append(arm)
    if len(by) < 2:
        return []
    ref_key = key_of(ref_run)
    groups = []
    for key in sorted(by, key=lambda k: k != ref_key):
        arms = by[key]
        ref = study.reference if key == ref_key else pick_reference(arms)
        sub = replace(study, runs=[r for r in study.runs if r.arm in arms], arms=arms, reference=ref,
                      superseded=[r for r in study.superseded if r.arm in arms],
                      problems=study.problems if key == ref_key else [], whole=study.full)
        groups.append(Group(key, arms, ref, sub, n_faithful=n_faithful))
    return groups


def analyse_groups(groups: list[Group]) -> list[Group]:
    """Each group's own analysis with its warnings (the reference group's is the report's main analysis)."""
    for g in groups:
        g.analysis = full_analysis(g.study)
    return groups


def arms_table(ctx: Ctx, groups: list[Group], name: Callable[[Group], str]) -> list[doc.Block]:
    """Every arm of a replication study with its group, resolved diff from the base, runs, time per run and
    data / split / eval hashes: what makes each arm what it is, side by side."""
    full = ctx.study.full
    sub = Ctx(full, ctx.analysis, ctx.lang)
    rows = []
    for g in groups:
        for arm in g.arms:
            runs = full.arm_runs(arm)
            run = next((r for r in runs if r.summary), None)
            info = next((r.info for r in runs if r.info), {})
            diff = info.get("diff_from_base") or {}
            shown = ", ".join(f"`{k}`={doc.cell(v[1] if isinstance(v, (list, tuple)) and len(v) == 2 else v)}"
                              for k, v in diff.items()) or ctx.t("no_diff")
            hashes = (run.summary.get("hashes") or {}) if run is not None else {}
            code = " / ".join(str(hashes.get(h, "—"))[:8] for h in ("data_hash", "split_hash", "eval_hash"))
            ok = sum(r.ok for r in runs)
            rows.append([f"`{arm}`", name(g), shown, f"{ok}/{len(runs)}", time_cell(sub, arm),
                         f"`{code}`"])
    header = [ctx.t("arm"), ctx.t("rep_group"), ctx.t("diff_base"), ctx.t("seeds_ok"), ctx.t("h_time"),
              ctx.t("rep_hashes")]
    return [doc.Para(ctx.t("rep_arms_title", runs=sum(r.path is not None for r in full.runs), arms=len(full.arms),
                           seeds=len(full.seeds))), doc.Table(header, rows)]
