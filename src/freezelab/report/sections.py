"""Report sections, part 1: overview, settings, parameters, per-arm epoch tables and the best epoch.

Each ``*_section(ctx)`` returns a list of document blocks; text comes from i18n, numbers from
``document``'s formatters, so the English and Japanese reports hold the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from freezelab.report import document as doc
from freezelab.report.aggregate import Study, epoch_metric_keys, epoch_values
from freezelab.report.analysis import Analysis, Finding, Metric
from freezelab.report.i18n import context_rows, t
from freezelab.report.stats import describe
from freezelab.report.warnings import COMPARED_HASHES

ALL_HASHES = (*COMPARED_HASHES, "pretrained_hash", "config_hash")


@dataclass(frozen=True)
class Ctx:
    """What every section builder needs."""

    study: Study
    analysis: Analysis
    lang: str

    def t(self, key: str, **params: object) -> str:
        """The string ``key`` in this report's language."""
        return t(self.lang, key, **params)


def arm_label(ctx: Ctx, arm: str) -> str:
    """Arm name, marked as reference and with † when some of its seeds did not finish."""
    label = f"`{arm}`"
    if arm == ctx.study.reference:
        label += f" ({ctx.t('reference_mark')})"
    if ctx.analysis.n_ok.get(arm, 0) < ctx.analysis.n_total.get(arm, 0):
        label += " †"
    return label


def failed_note(ctx: Ctx, arms: list[str] | None = None) -> list[doc.Block]:
    """Footnote under an aggregate table naming every run that is not in it."""
    items = [f"{arm_label(ctx, r.arm)} seed {r.seed}: {doc.cell(r.label())}" for r in ctx.study.runs
             if not r.ok and (arms is None or r.arm in arms)]
    return [doc.Bullets(items)] if items else []


def warning_text(ctx: Ctx, f: Finding) -> str:
    """Render one finding in the report language."""
    p: dict[str, Any] = dict(f.params)
    if f.code == "confound_hash":
        p["groups"] = "; ".join(f"{v}: {', '.join(arms)}" for v, arms in p["groups"].items())
        p["budget"] = ctx.t("w_budget") if p["hash"] == "budget_hash" else ""
    if f.code == "phase1_not_converged":
        lo, hi = (f"{100 * p[k]:.0f}" for k in ("lo", "hi"))
        p.update(ratio=f"{lo} %" if lo == hi else f"{lo}–{hi} %", threshold=f"{100 * p['threshold']:.0f} %",
                 arms=", ".join(f"`{a}`" for a in p["arms"]))
    if f.code == "unfreeze_low_lr":
        p.update(lr=f"{p['lr']:.2g}", minimum=f"{p['minimum']:g}", groups=", ".join(f"`{g}`" for g in p["groups"]))
    for key in ("keys", "seeds", "runs", "names", "values"):
        if isinstance(p.get(key), list):
            p[key] = ", ".join(doc.cell(x) for x in p[key])
    if "counts" in p:
        p["counts"] = ", ".join(f"{a}: n={n}" for a, n in p["counts"].items())
    if "gap" in p:
        p["gap"] = f"{p['gap']:.1f}%"
    if f.code == "capacity":
        p.update(ratio=f"{p['ratio']:.1f}", hi_n=doc.count(p["hi_n"]), lo_n=doc.count(p["lo_n"]))
    if f.code == "lr_at_edge":
        p.update(lr=f"{p['lr']:.3g}", lo=f"{p['lo']:.3g}", hi=f"{p['hi']:.3g}", side=ctx.t(f"w_side_{p['side']}"))
    if "value" in p:
        p["value"] = doc.value(p["value"], p.pop("percent", False))
    return ctx.t(f"w_{f.code}", **p)


def study_text(ctx: Ctx, key: str, arm: str | None = None) -> str:
    """The study file's ``description`` / ``hypothesis`` (or an arm's ``description``), in Japanese from
    ``<key>_ja`` when the report is Japanese and the study file gives it."""
    s = ctx.study
    spec_arms = s.spec.get("arms") if isinstance(s.spec.get("arms"), dict) else {}
    src = (spec_arms.get(arm) or {}) if arm is not None else s.spec
    if arm is not None and not src.get(key):
        src = next((r.info for r in s.arm_runs(arm) if r.info), {})
    text = (src.get(f"{key}_ja") if ctx.lang == "ja" else None) or src.get(key)
    return str(text) if text else ""


def overview_section(ctx: Ctx) -> list[doc.Block]:
    """Purpose, hypothesis, headline warnings and the §8 context box (collapsed)."""
    s, a = ctx.study, ctx.analysis
    metric = a.primary
    blocks: list[doc.Block] = [doc.Heading(2, ctx.t("overview"))]
    purpose = study_text(ctx, "description") or ctx.t(
        "purpose_auto", n_arms=len(s.arms), study=s.name, ref=s.reference,
        metrics=", ".join(m.key for m in a.metrics), seeds=", ".join(map(str, s.seeds)))
    hypothesis = study_text(ctx, "hypothesis") or ctx.t("hypothesis_auto", ref=s.reference, metric=metric.key)
    blocks.append(doc.Bullets([f"**{ctx.t('purpose')}**: {doc.cell(purpose)}",
                               f"**{ctx.t('hypothesis')}**: {doc.cell(hypothesis)}"]))
    rows = [[w, st, r] for w, st, r in context_rows(s.task, ctx.lang)]
    blocks.append(doc.Details(ctx.t("context"), [
        doc.Para(ctx.t("context_note")),
        doc.Table([ctx.t("ctx_work"), ctx.t("ctx_setting"), ctx.t("ctx_result")], rows)]))
    return blocks


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, dict) and v else {key: v})
    return out


def _unique(values: list[Any]) -> str:
    vals = list(dict.fromkeys(str(v) for v in values if v not in (None, "")))
    return ", ".join(vals) if vals else "—"


def settings_section(ctx: Ctx) -> list[doc.Block]:
    """Environment, base configuration, arms with their resolved diffs, seeds, data hashes."""
    s = ctx.study
    blocks: list[doc.Block] = [doc.Heading(2, ctx.t("settings")), doc.Heading(3, ctx.t("environment"))]
    envs = [r.summary.get("environment") or {} for r in s.runs if r.summary]
    env_keys = list(dict.fromkeys(k for e in envs for k in e))
    rows = [[k, doc.cell(_unique([e.get(k) for e in envs]))] for k in env_keys]
    rows.append([ctx.t("seeds"), ", ".join(map(str, s.seeds))])
    blocks.append(doc.Table([ctx.t("key"), ctx.t("value")], rows))
    base = s.spec.get("base") or next((r.config for r in s.runs if r.arm == s.reference and r.config), {})
    flat = _flatten(base)
    blocks.append(doc.Heading(3, ctx.t("base_config")))
    blocks.append(doc.Details(f"{ctx.t('base_config')} ({len(flat)})",
                              [doc.Table([ctx.t("key"), ctx.t("value")],
                                         [[k, doc.cell(v)] for k, v in flat.items()])]))
    blocks += [doc.Heading(3, ctx.t("arms")), *_arms_table(ctx), doc.Heading(3, ctx.t("data"))]
    blocks.append(doc.Table([ctx.t("hash"), ctx.t("value"), ctx.t("equal")], _hash_rows(ctx)))
    sizes = _size_rows(ctx)
    if sizes:
        sized = doc.merge_identical_rows(doc.Table([ctx.t("arm"), *sizes[0]], sizes[1]))
        blocks += [doc.Para(f"**{ctx.t('data_sizes')}**"), *doc.split_table(sized.header, sized.rows)]
    return blocks


SIZE_KEYS = ("train_tokens", "train_windows", "tokens_seen", "windows_seen")


def _size_rows(ctx: Ctx) -> tuple[list[str], list[list[str]]] | None:
    """Per arm: ``summary.data`` sizes (optional dict) and train / seen tokens or windows."""
    s = ctx.study
    per_arm = {}
    for arm in s.arms:
        summ = _arm_summary(s, arm)
        sizes = {k: v for k, v in (summ.get("data") or {}).items() if isinstance(v, (int, float))}
        sizes.update({k: summ[k] for k in SIZE_KEYS if isinstance(summ.get(k), (int, float))})
        per_arm[arm] = sizes
    keys = list(dict.fromkeys(k for sizes in per_arm.values() for k in sizes))
    if not keys:
        return None
    return keys, [[arm_label(ctx, arm), *(doc.count(per_arm[arm].get(k)) for k in keys)] for arm in s.arms]


def _arm_info(s: Study, arm: str) -> dict[str, Any]:
    return next((r.info for r in s.arm_runs(arm) if r.info), {})


def _arm_summary(s: Study, arm: str) -> dict[str, Any]:
    runs = s.arm_runs(arm)
    return next((r.summary for r in runs if r.ok), next((r.summary for r in runs if r.summary), {}))


def _arms_table(ctx: Ctx) -> list[doc.Block]:
    s, a = ctx.study, ctx.analysis
    rows, details = [], []
    for arm in s.arms:
        info = _arm_info(s, arm)
        diff = info.get("diff_from_base") or {}
        desc = study_text(ctx, "description", arm) or "—"
        groups = (_arm_summary(s, arm).get("params") or {}).get("by_group") or {}
        frozen = [g for g, v in groups.items() if isinstance(v, dict) and v.get("frozen") and not v.get("unused")]
        frozen += [f"{g} ({ctx.t('unused').lower()})" for g, v in groups.items() if isinstance(v, dict)
                   and v.get("unused")]  # protocol §1.4: never counted as frozen
        trained = [g for g, v in groups.items() if isinstance(v, dict) and v.get("frozen") is False]
        shown = [f"`{k}`={doc.cell(_pair(v)[1])}" for k, v in list(diff.items())[:3]]
        more = f" (+{len(diff) - 3})" if len(diff) > 3 else ""
        rows.append([arm_label(ctx, arm), doc.short(desc, 80), ", ".join(shown) + more or ctx.t("no_diff"),
                     ", ".join(frozen) or "—", ", ".join(trained) or "—", f"{a.n_ok[arm]}/{a.n_total[arm]}"])
        if diff:
            details.append(doc.Details(ctx.t("full_diff", arm=arm), [doc.Table(
                [ctx.t("key"), ctx.t("base_value"), ctx.t("arm_value")],
                [[f"`{k}`", doc.cell(_pair(v)[0]), doc.cell(_pair(v)[1])] for k, v in diff.items()])]))
    header = [ctx.t("arm"), ctx.t("description"), ctx.t("diff_base"), ctx.t("frozen_groups"),
              ctx.t("trained_groups"), ctx.t("seeds_ok")]
    return [doc.Table(header, rows), *details]


def _pair(v: Any) -> tuple[Any, Any]:
    """A diff entry ``[base, arm]`` (tolerates a bare value or a dict with base/arm keys)."""
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return v[0], v[1]
    if isinstance(v, dict):
        return v.get("base", v.get("ref")), v.get("arm", v.get("value"))
    return "—", v


def _short_hash(value: str, n: int) -> str:
    """A hash cut to n hex digits, keeping a ``name sha256:`` prefix (a task's pretrained identity)."""
    head, sep, tail = value.rpartition(":")
    return f"{head}:{tail[:n]}" if sep else value[:n]


def _hash_rows(ctx: Ctx) -> list[list[str]]:
    s = ctx.study
    rows = []
    for name in ALL_HASHES:
        by_arm = {arm: {str((r.summary.get("hashes") or {}).get(name)) for r in s.arm_runs(arm) if r.summary}
                  for arm in s.arms}
        absent = {"None"} | ({v for vals in by_arm.values() for v in vals if v.startswith("none")}
                             if name == "pretrained_hash" else set())  # random init: nothing to compare
        without = [arm for arm, vals in by_arm.items() if vals and not vals - absent]
        values = set().union(*by_arm.values()) - absent
        if not values:
            if without and name == "pretrained_hash":
                rows.append([name, "—", ctx.t("not_applicable")])
            continue
        na = f"; {ctx.t('not_applicable')}: {', '.join(without)}" if without and name == "pretrained_hash" else ""
        if len(values) == 1:
            rows.append([name, f"`{_short_hash(next(iter(values)), 16)}`", ctx.t("yes") + na])
            continue
        text = "; ".join(f"{arm}: {', '.join(_short_hash(v, 12) for v in sorted(vals - absent))}"
                         for arm, vals in by_arm.items() if vals - absent)
        same = ctx.t("no") if name in COMPARED_HASHES else ctx.t("per_arm")
        rows.append([name, doc.short(text, 300), same + na])
    return rows


def params_section(ctx: Ctx) -> list[doc.Block]:
    """Total / trainable / frozen / tied / unused per arm, trainable share and tokens per trainable param."""
    s = ctx.study
    rows = []
    for arm in s.arms:
        summ = _arm_summary(s, arm)
        p = summ.get("params") or {}
        tokens = summ.get("train_tokens", summ.get("train_windows"))
        share = p["trainable"] / p["total"] * 100 if p.get("total") and p.get("trainable") is not None else math.nan
        tpp = tokens / p["trainable"] if tokens and p.get("trainable") else math.nan
        rows.append([arm_label(ctx, arm), *(doc.count(p.get(k)) for k in ("total", "trainable", "frozen", "tied",
                                                                          "unused")),
                     doc.pct(share).lstrip("+"), doc.num(tpp)])
    header = [ctx.t("arm"), ctx.t("total"), ctx.t("trainable"), ctx.t("frozen"), ctx.t("tied"), ctx.t("unused"),
              ctx.t("share"), ctx.t("tok_per_param")]
    return [doc.Heading(2, ctx.t("params")), doc.Table(header, rows), doc.Para(ctx.t("chinchilla"))]


def is_log_key(ctx: Ctx, key: str) -> bool:
    """Whether an epoch metric is averaged in log space (PPL, or a headline flagged log_scale)."""
    base = key.rsplit("/", 1)[-1]
    return base == "ppl" or any(m.log_scale and m.name.rsplit("/", 1)[-1] == base for m in ctx.analysis.metrics)


def is_percent_key(ctx: Ctx, key: str) -> bool:
    """Whether an epoch metric is accuracy-type (shown in %)."""
    return Metric(key, key, "max", False).percent


def ordered_epoch_keys(ctx: Ctx) -> list[str]:
    """Epoch table columns: losses and headline metrics first, other metrics, per-group LR, seconds."""
    # grad norms are plotted; per-timeframe keys (val/corr/h1) get their own table at the best epoch
    keys = [k for k in epoch_metric_keys(ctx.study) if not k.startswith("grad_norm/") and k.count("/") < 2]
    heads = ["loss"] + [m.name.rsplit("/", 1)[-1] for m in ctx.analysis.metrics]
    first = [f"{sp}/{h}" for sp in ("train", "val") for h in dict.fromkeys(heads) if f"{sp}/{h}" in keys]
    tail = [k for k in keys if k.startswith("lr/")] + [k for k in keys if k == "seconds"]
    return first + [k for k in keys if k not in first and k not in tail] + tail


def stat_cell(ctx: Ctx, key: str, values: dict[int, float]) -> str:
    """``mean ± std`` of per-seed values with the key's averaging rule and display unit."""
    st = describe(list(values.values()), log_scale=is_log_key(ctx, key))
    if all(float(v).is_integer() for v in values.values()) and not st.log_scale:  # counts: iterations, tokens
        return doc.count_mean_std(st.mean, st.std)
    return doc.mean_std(st.mean, st.std, is_percent_key(ctx, key))


def epochs_section(ctx: Ctx) -> list[doc.Block]:
    """Per arm (collapsible): Phase 1 iterations and per-epoch mean ± std with n active, best marked."""
    s = ctx.study
    blocks: list[doc.Block] = [doc.Heading(2, ctx.t("epochs")), doc.Para(ctx.t("epochs_note"))]
    keys = ordered_epoch_keys(ctx)
    shown: dict[tuple, str] = {}  # Phase-1 tables already shown -> the arm they belong to
    for arm in s.arms:
        inner: list[doc.Block] = failed_note(ctx, [arm])
        phase1 = _phase1_tables(ctx, arm)
        key = tuple(_without_timing(b) for b in phase1 if isinstance(b, doc.Table))
        if key and key in shown:  # e.g. arms that differ only after Phase 1 share its iterations exactly
            inner.append(doc.Para(ctx.t("phase1_same_as", arm=shown[key])))
        else:
            shown.setdefault(key, arm)
            inner += phase1
        data = {k: epoch_values(s, arm, k) for k in keys}
        data = {k: v for k, v in data.items() if v}  # a metric this arm never logged gets no column
        epochs = sorted({e for by_epoch in data.values() for e in by_epoch})
        best = [r.best_epoch for r in s.arm_runs(arm, ok_only=True)]
        rows = []
        for e in epochs:
            n = len({seed for by_epoch in data.values() for seed in by_epoch.get(e, {})})
            mark = f" ★{best.count(e)}" if e in best else ""
            rows.append([f"{e}{mark}", str(n), *(stat_cell(ctx, k, data[k].get(e, {})) if data[k].get(e) else "—"
                                                 for k in data)])
        if rows:
            inner += doc.split_table([ctx.t("epoch"), ctx.t("n"), *data], rows, keep=2)
        label = f"{arm} (n={ctx.analysis.n_ok[arm]}/{ctx.analysis.n_total[arm]})"
        blocks.append(doc.Details(label, inner or [doc.Para(ctx.t("no_epochs"))]))
    return blocks


def _without_timing(table: doc.Table) -> tuple:
    """A table's content without its timing columns: what makes two arms' Phase-1 tables 'the same'."""
    cols = [j for j, h in enumerate(table.header) if "seconds" not in h]
    return tuple(tuple(r[j] for j in cols) for r in [table.header, *table.rows])


def _phase1_tables(ctx: Ctx, arm: str) -> list[doc.Block]:
    runs = [r for r in ctx.study.arm_runs(arm, ok_only=True) if not r.iterations.empty]
    if not runs:
        return []
    keys = list(dict.fromkeys(k for r in runs for k in r.iterations.columns if r.iterations[k].notna().any()))
    its = sorted({int(i) for r in runs for i in r.iterations.index})
    rows = []
    for i in its:
        present = [r for r in runs if i in r.iterations.index]
        cells = []
        for k in keys:
            vals = {r.seed: float(r.iterations.at[i, k]) for r in present
                    if k in r.iterations.columns and math.isfinite(float(r.iterations.at[i, k]))}
            cells.append(stat_cell(ctx, k, vals) if vals else "—")
        rows.append([str(i), str(len(present)), *cells])
    return [doc.Para(f"**{ctx.t('phase1')}**"),
            *doc.split_table([ctx.t("iteration"), ctx.t("n"), *keys], rows, keep=2)]


def phase1_section(ctx: Ctx) -> list[doc.Block]:
    """LM Phase 1 per arm from summary.json ``phase1``: iterations, convergence, effective rank, time."""
    s = ctx.study
    per_arm = {arm: [r.summary.get("phase1") or {} for r in s.arm_runs(arm, ok_only=True)] for arm in s.arms}
    keys = list(dict.fromkeys(k for dicts in per_arm.values() for d in dicts for k, v in d.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)))
    if not keys:
        return []
    rows = []
    for arm, dicts in per_arm.items():
        cells = []
        for k in keys:
            vals = {i: float(d[k]) for i, d in enumerate(dicts) if isinstance(d.get(k), (int, float))}
            cells.append(stat_cell(ctx, k, vals) if vals else "—")
        rows.append([arm_label(ctx, arm), *cells])
    merged = doc.merge_identical_rows(doc.Table([ctx.t("arm"), *keys], rows))
    return [doc.Heading(2, ctx.t("phase1_summary")), *doc.split_table(merged.header, merged.rows)]


def best_epoch_section(ctx: Ctx) -> list[doc.Block]:
    """Selection rule and, per run, the best epoch with val/test metrics (failed runs included)."""
    s, a = ctx.study, ctx.analysis
    sel = s.selection
    keys = list(dict.fromkeys([str(sel.get("metric", "val/loss"))] + [m.key for m in a.metrics]
                              + [f"val/{m.name.rsplit('/', 1)[-1]}" for m in a.metrics]))
    rows = []
    for r in s.runs:
        if not r.ok:
            rows.append([f"`{r.arm}`", str(r.seed), doc.cell(r.label()), "—", "—", *(r.status.upper() for _ in keys)])
            continue
        ep_run, ep_max = r.summary.get("epochs_run"), r.summary.get("max_epochs")
        rows.append([f"`{r.arm}`", str(r.seed), "succeeded", str(r.best_epoch or "—"),
                     f"{ep_run if ep_run is not None else '—'} / {ep_max if ep_max is not None else '—'}",
                     *(doc.value(r.value(k), is_percent_key(ctx, k)) for k in keys)])
    header = [ctx.t("arm"), ctx.t("seed"), ctx.t("status"), ctx.t("best_epoch"), ctx.t("epochs_run"), *keys]
    tables: list[doc.Block] = list(doc.split_table(header, rows, keep=2))
    blocks: list[doc.Block] = [doc.Heading(2, ctx.t("best_epoch")),
                               doc.Para(ctx.t("selection", metric=sel.get("metric", "val/loss"),
                                              mode=sel.get("mode", "min")))]
    if len(rows) > 12:
        return blocks + [doc.Details(ctx.t("per_seed"), tables)]
    return blocks + tables
