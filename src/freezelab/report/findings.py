"""Report sections, part 2: comparison, runtime, plots, failures and warnings, conclusion, reproduction."""

from __future__ import annotations

import math
import re
import shlex

from freezelab.report import document as doc
from freezelab.report import inference as inf
from freezelab.report import sequential as seq
from freezelab.report import tuning
from freezelab.report import verdicts as vd
from freezelab.report.aggregate import epoch_metric_keys, epoch_values, signal_text, throughput
from freezelab.report.analysis import ArmStat, Metric
from freezelab.report.headline import comparison_cell, rel_change, verdict_phrase
from freezelab.report.i18n import GLOSSARY
from freezelab.report.plots import Plot
from freezelab.report.sections import Ctx, arm_label, failed_note, stat_cell
from freezelab.report.warnings import shown_count

CONVERGENCE_EPOCHS = (1, 3, 5)
COMPUTE_KEYS = ("achieved_tflops", "mfu", "flops_per_token")  # optional summary.json keys


def delta_parts(st: ArmStat) -> tuple[str, str, str]:
    """(Δ, lo, hi) of the comparison with the reference as text (Δ % for log-scale metrics, points for
    accuracy-type metrics, metric units otherwise); lo/hi are those of the printed interval."""
    c, m = st.vs_ref, st.metric
    if c is None or not c.diffs:
        return "—", "—", "—"
    conv = (lambda x: doc.pct(math.expm1(x) * 100)) if m.log_scale else (lambda x: doc.signed(x, m.percent))
    return tuple(conv(v) if math.isfinite(v) else "—" for v in (c.estimate.value, c.lo, c.hi))  # type: ignore


def verdict_text(ctx: Ctx, st: ArmStat) -> str:
    """The verdict against the reference in words, with the per-seed fact."""
    return verdict_phrase(ctx, st.vs_ref, st.metric, st.verdict)


def _ci(st: ArmStat) -> str:
    """The arm's 95 % interval in display units."""
    lo, hi = st.interval()
    if st.metric.percent:
        lo, hi = max(lo, 0.0), min(hi, 1.0)  # a share never leaves [0, 1]
    return doc.interval(lo, hi, lambda x: doc.value(x, st.metric.percent))


def _metric_title(ctx: Ctx, m: Metric) -> str:
    note = f"; {ctx.t('log_note')}" if m.log_scale else ""
    role = ctx.t("primary_mark") if m.primary else ctx.t("descriptive_mark")
    return f"{m.key} ({m.mode}{note}) — {role}"


def _p_cell(c) -> str:
    if c is None or not math.isfinite(c.p):
        return "—"
    return f"{doc.pvalue(c.p)} / {doc.pvalue(c.p_holm)}" if math.isfinite(c.p_holm) else doc.pvalue(c.p)


def _per_seed(c, m: Metric) -> str:
    return ", ".join(rel_change(m, d) for d in c.diffs) if c is not None and c.diffs else "—"


def comparison_section(ctx: Ctx) -> list[doc.Block]:
    """Primary metric: per arm n, mean ± std, 95 % interval, Δ vs reference and vs the best baseline with
    the interval the verdict is read from, p / Holm p, verdict; then the descriptive metrics."""
    s, a = ctx.study, ctx.analysis
    m = a.primary
    res, ev = a.results.get(m.key), a.sources.get(m.key)
    blocks: list[doc.Block] = [doc.Heading(2, ctx.t("comparison"))]
    if res is not None and ev is not None:
        blocks.append(doc.Para(ctx.t("comparison_note_items" if ev.method == inf.METHOD_ITEMS else
                                     "comparison_note_seeds", ref=s.reference, metric=m.key, items=ev.n_items,
                                     block=ev.block, m=a.family_size(), pooled=_pooled(m, res),
                                     df=doc.count(res.pool.resid_df) if res.pool.resid_df > 0 else "—",
                                     pooled_df=doc.count(res.pool.df), arms=len(res.arms))))
    for metric in a.metrics:
        blocks += [doc.Heading(3, _metric_title(ctx, metric)), *_metric_tables(ctx, metric), *failed_note(ctx)]
        if metric.primary:
            blocks += _best_line(ctx, metric) + _power_lines(ctx, metric)
    blocks.append(_paired_details(ctx, m))
    blocks += _convergence_table(ctx) + per_timeframe_section(ctx)
    return blocks


def _power_lines(ctx: Ctx, m: Metric) -> list[doc.Block]:
    """For each undecided comparison with the reference: the changes its interval rules out, and about how
    many seeds would decide an effect of its half-width (``sequential.seeds_to_decide``)."""
    s, a = ctx.study, ctx.analysis
    out: list[doc.Block] = []
    for arm in s.arms:
        st = a.arm_stat(m, arm)
        c = st.vs_ref
        if arm == s.reference or c is None or st.verdict not in ("inconclusive", "no_difference"):
            continue
        half = (c.hi - c.lo) / 2
        if not (math.isfinite(half) and half > 0):
            continue
        e = c.estimate
        k = seq.seeds_to_decide(half, v_item=e.v_item, v_seed=e.v_seed, n=e.n, alpha=c.alpha)

        def show(x: float) -> str:
            return doc.pct(math.expm1(x) * 100) if m.log_scale else doc.signed(x, m.percent)
        h = f"{math.expm1(half) * 100:.1f}%" if m.log_scale else doc.num(half)
        advice = ctx.t("power_seeds", h=h, k=int(k)) if math.isfinite(k) else ctx.t("power_never", h=h)
        out.append(doc.Para(ctx.t("power_line", arm=arm, ref=s.reference, verdict=ctx.t("v_" + st.verdict),
                                  n=e.n, lo=show(c.lo), hi=show(c.hi), advice=advice)))
    return out


def sequential_section(ctx: Ctx) -> list[doc.Block]:
    """``run --until-decided``: the anytime-valid decisions (report/sequential.py), when the study made them."""
    rec, problem = seq.read_record(ctx.study.out_dir)
    if problem:
        return [doc.Heading(2, ctx.t("seq_title")), doc.Para(ctx.t("seq_bad", problem=problem))]
    if rec is None:
        return []
    last = rec["looks"][-1]["decisions"]
    undecided = sum(d["verdict"] == "undecided" for d in last)
    why = {"decided": ctx.t("seq_decided"), "failed": ctx.t("seq_failed"),
           "max_seeds": ctx.t("seq_max_seeds", max=rec.get("max_seeds"), k=undecided)}.get(
        rec["stopped"], ctx.t("seq_running"))
    thr = float(last[0]["threshold"]) if last else math.nan
    alpha = float(rec.get("alpha", seq.ALPHA))
    log_scale = bool(rec.get("log_scale"))
    first: dict[str, int] = {}
    for look in rec["looks"]:
        for d in look["decisions"]:
            if d["verdict"] != "undecided":
                first.setdefault(d["arm"], int(d["n"]))
    rows = [[arm_label(ctx, d["arm"]), str(d["n"]),
             doc.pct(math.expm1(float(d["mean_diff"])) * 100) if log_scale else doc.signed(float(d["mean_diff"])),
             f"{float(d['evalue']):.3g}", f"{float(d['threshold']):.3g}", ctx.t("seq_v_" + d["verdict"]),
             str(first.get(d["arm"], "—"))] for d in last]
    header = [ctx.t("arm"), ctx.t("seq_h_seeds"), ctx.t("seq_h_delta"), ctx.t("seq_h_e"), ctx.t("seq_h_need"),
              ctx.t("seq_h_decision"), ctx.t("seq_h_first")]
    arms = [d["arm"] for d in last]

    def e_at(look: dict, arm: str) -> str:
        return f"{float(next((d['evalue'] for d in look['decisions'] if d['arm'] == arm), math.nan)):.3g}"
    looks = [[str(len(look["seeds"])), *[e_at(look, arm) for arm in arms]] for look in rec["looks"]]
    return [doc.Heading(2, ctx.t("seq_title")),
            doc.Para(ctx.t("seq_note", ref=rec.get("reference", ctx.study.reference), metric=rec.get("metric", ""),
                           m=len(last), thr=thr, alpha=alpha, n=len(rec["seeds"]), why=why)),
            doc.Table(header, rows),
            doc.Details(ctx.t("seq_looks"), [doc.Table([ctx.t("seq_h_seeds"), *[f"`{a}`" for a in arms]], looks)])]


def tuning_section(ctx: Ctx) -> list[doc.Block]:
    """The table of chosen learning rates (and the problem line for an invalid record)."""
    rec, problem = tuning.read_tuning(ctx.study.out_dir)
    if problem:
        return [doc.Heading(2, ctx.t("tune_title")), doc.Para(problem)]
    if rec is None:
        return []
    rows = []
    for arm, a in rec["arms"].items():
        points = tuning.curve(a)
        shown = ", ".join(f"{lr:.3g}: " + (doc.num(v) if math.isfinite(v) else ctx.t("tune_failed"))
                          + ("*" if math.isclose(lr, float(a["chosen"])) else "") for lr, v, _ in points)
        edge = ctx.t("tune_edge_" + str(a.get("edge"))) if a["at_edge"] else "—"
        rows.append([arm_label(ctx, arm), f"{float(a['chosen']):.3g}", shown, edge])
    first = next(iter(rec["arms"].values()))
    header = [ctx.t("arm"), ctx.t("tune_h_chosen"), ctx.t("tune_h_curve", metric=first.get("metric", "val/loss")),
              ctx.t("tune_h_edge")]
    return [doc.Heading(2, ctx.t("tune_title")),
            doc.Para(ctx.t("tune_note", lr_key=rec.get("lr_key", "lr"), metric=first.get("metric", "val/loss"),
                           budget=first.get("budget"), seeds=", ".join(map(str, first.get("seeds", []))))),
            doc.Table(header, rows)]


def _best_line(ctx: Ctx, m: Metric) -> list[doc.Block]:
    """The best arm against the runner-up, the family's comparison a "best" claim is read from."""
    claim = ctx.analysis.best.get(m.key)
    if claim is None or claim.runner_up is None or claim.comparison is None:
        return []
    c = claim.comparison
    word = verdict_phrase(ctx, c, m, "better" if claim.decided else vd.verdict(c, m.mode))
    return [doc.Para(ctx.t("best_line", best=claim.arm, second=claim.runner_up, metric=m.key,
                           cell=comparison_cell(c, m), verdict=word))]


def _pooled(m: Metric, res) -> str:
    sd = math.sqrt(res.pool.pooled) if math.isfinite(res.pool.pooled) else math.nan
    if not math.isfinite(sd):
        return "—"
    return f"{math.expm1(sd) * 100:.1f}%" if m.log_scale else doc.num(sd)


def _metric_tables(ctx: Ctx, m: Metric) -> list[doc.Block]:
    s, a = ctx.study, ctx.analysis
    base = next((a.arm_stat(m, arm).baseline for arm in s.arms if a.arm_stat(m, arm).baseline), None)
    rows = []
    for arm in s.arms:
        st = a.arm_stat(m, arm)
        if st.summary.n == 0:
            label = next((r.label() for r in s.arm_runs(arm) if not r.ok), "—")
            rows.append([arm_label(ctx, arm), "0", doc.cell(label), *["—"] * 7])
            continue
        n = f"{st.summary.n}/{a.n_total[arm]}" if st.summary.n < a.n_total[arm] else str(st.summary.n)
        ref_cells = ["—"] * 4
        if arm != s.reference:
            ref_cells = [comparison_cell(st.vs_ref, m), _per_seed(st.vs_ref, m), _p_cell(st.vs_ref),
                         verdict_text(ctx, st) if m.primary else "—"]
        base_cells = ["—", "—"]
        if st.vs_base is not None and base is not None:
            base_cells = [comparison_cell(st.vs_base, m),
                          verdict_phrase(ctx, st.vs_base, m, st.skill or "insufficient", baseline=base[0])
                          if m.primary else _p_cell(st.vs_base)]
        rows.append([arm_label(ctx, arm), n, doc.mean_std(st.summary.mean, st.summary.std, m.percent), _ci(st),
                     *ref_cells, *base_cells])
    interval = ctx.t("holm_ci") if m.primary else ctx.t("ci")
    header = [ctx.t("arm"), ctx.t("n"), ctx.t("mean_std"), ctx.t("ci"),
              f"{ctx.t('delta_pct' if m.log_scale else 'delta')} vs `{s.reference}` {interval}", ctx.t("per_seed_d"),
              ctx.t("p") if m.primary else ctx.t("p_raw"), ctx.t("verdict"),
              f"vs `{base[0] if base else '—'}` {interval}",
              ctx.t("verdict") if m.primary else f"{ctx.t('p_raw')} vs `{base[0] if base else '—'}`"]
    table = doc.drop_empty_columns(doc.Table(header, rows), keep=2)
    return list(doc.split_table(table.header, table.rows, keep=1))


def _paired_details(ctx: Ctx, m: Metric) -> doc.Details:
    s, a = ctx.study, ctx.analysis
    ref = a.arm_stat(m, s.reference).values
    rows = []
    for arm in s.arms:
        if arm == s.reference:
            continue
        vals = a.arm_stat(m, arm).values
        for r in s.arm_runs(arm):
            if not r.ok or r.seed not in vals:
                rows.append([f"`{arm}`", str(r.seed), doc.cell(r.label()) if not r.ok else "—",
                             doc.value(ref.get(r.seed, math.nan), m.percent), "—"])
                continue
            v, rv = vals[r.seed], ref.get(r.seed, math.nan)
            d = (doc.pct((v / rv - 1) * 100) if m.log_scale and rv > 0 else doc.signed(v - rv, m.percent))
            rows.append([f"`{arm}`", str(r.seed), doc.value(v, m.percent), doc.value(rv, m.percent),
                         d if math.isfinite(rv) else "—"])
    header = [ctx.t("arm"), ctx.t("seed"), m.key, f"{ctx.t('ref_value')} ({s.reference})", "Δ"]
    return doc.Details(ctx.t("paired_details", metric=m.key), [doc.Table(header, rows)])


def _convergence_table(ctx: Ctx) -> list[doc.Block]:
    s, a = ctx.study, ctx.analysis
    keys = list(dict.fromkeys(["val/loss"] + [f"val/{m.name.rsplit('/', 1)[-1]}" for m in a.metrics]))
    rows = []
    for arm in s.arms:
        for key in keys:
            by_epoch = epoch_values(s, arm, key)
            if not by_epoch:
                continue
            cells = []
            for e in CONVERGENCE_EPOCHS:
                vals = by_epoch.get(e, {})
                n_note = f" (n={len(vals)})" if vals and len(vals) < a.n_ok[arm] else ""
                cells.append(stat_cell(ctx, key, vals) + n_note if vals else "—")
            rows.append([arm_label(ctx, arm), key, *cells])
    if not rows:
        return []
    header = [ctx.t("arm"), ctx.t("metric"), *(f"{ctx.t('epoch')} {e}" for e in CONVERGENCE_EPOCHS)]
    table = doc.drop_empty_columns(doc.Table(header, rows), keep=2)  # epochs no run reached
    epochs = ", ".join(h.rsplit(" ", 1)[-1] for h in table.header[2:])
    return [doc.Heading(3, ctx.t("convergence", epochs=epochs)), table]


PER_UNIT = re.compile(r"^(val|test)/([^/]+)/([^/]+)$")


def per_timeframe_section(ctx: Ctx) -> list[doc.Block]:
    """Per-timeframe metrics (``<split>/<name>/<tf>``) at the best epoch: one row per (arm, name).

    Test keys from summary.json are used when present, else the val keys of the best epoch.
    """
    s = ctx.study
    keys = dict.fromkeys([*epoch_metric_keys(s), *(k for r in s.runs if r.ok for k in r.summary.get("test") or {})])
    found = [PER_UNIT.match(k) for k in keys]  # first-seen order keeps the timeframes in logged order
    split = "test" if any(m and m[1] == "test" for m in found) else "val"
    names = list(dict.fromkeys(m[2] for m in found if m and m[1] == split))
    units = list(dict.fromkeys(m[3] for m in found if m and m[1] == split))
    if not names:
        return []
    rows = []
    for arm in s.arms:
        runs = s.arm_runs(arm, ok_only=True)
        for name in names:
            cells = []
            for unit in units:
                vals = {r.seed: r.value(f"{split}/{name}/{unit}") for r in runs}
                vals = {k: v for k, v in vals.items() if math.isfinite(v)}
                cells.append(stat_cell(ctx, f"{split}/{name}", vals) if vals else "—")
            if any(c != "—" for c in cells):
                rows.append([arm_label(ctx, arm), f"{split}/{name}", *cells])
    tables = doc.split_table([ctx.t("arm"), ctx.t("metric"), *units], rows, keep=2)
    return [doc.Heading(3, ctx.t("per_unit")), doc.Details(ctx.t("per_unit"), list(tables))]


def _mean(values: list) -> float:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else math.nan


def runtime_section(ctx: Ctx) -> list[doc.Block]:
    """Wall time, s/epoch, epochs run vs max (what early stopping saved), steps, throughput, memory."""
    s = ctx.study
    rows, phase_rows = [], []
    phases = list(dict.fromkeys(k for r in s.runs if r.ok for k in (r.summary.get("phase_seconds") or {})))
    compute = [k for k in COMPUTE_KEYS if any(isinstance(r.summary.get(k), (int, float)) for r in s.runs if r.ok)]
    for arm in s.arms:
        runs = s.arm_runs(arm, ok_only=True)
        sm = [r.summary for r in runs]
        if not runs:
            label = next((r.label() for r in s.arm_runs(arm) if not r.ok), "—")
            rows.append([arm_label(ctx, arm), "0", doc.cell(label), "—", "—", "—", "—", "—"])
            continue
        per_epoch = _mean([v for r in runs if "seconds" in r.epochs for v in r.epochs["seconds"].tolist()])
        ran, top = _mean([x.get("epochs_run") for x in sm]), _mean([x.get("max_epochs") for x in sm])
        saved = f" ({ctx.t('saved')} {top - ran:.1f})" if math.isfinite(top - ran) and top > ran else ""
        thr = _mean([throughput(x) for x in sm])
        rows.append([arm_label(ctx, arm), str(len(runs)), doc.seconds(_mean([x.get("wall_seconds") for x in sm])),
                     doc.seconds(per_epoch), f"{ran:.1f} / {top:.0f}{saved}" if math.isfinite(ran) else "—",
                     doc.count(_mean([x.get("steps") for x in sm])), doc.num(thr),
                     doc.nbytes(_mean([x.get("peak_memory_bytes") for x in sm]))])
        if phases or compute:
            phase_rows.append([arm_label(ctx, arm), *(doc.seconds(_mean([(x.get("phase_seconds") or {}).get(p)
                                                                         for x in sm])) for p in phases),
                               *(doc.num(_mean([x.get(k) for x in sm])) for k in compute)])
    header = [ctx.t("arm"), ctx.t("n"), ctx.t("wall"), ctx.t("s_epoch"), ctx.t("epochs_run"), ctx.t("steps"),
              ctx.t("throughput"), ctx.t("peak_mem")]
    blocks: list[doc.Block] = [doc.Heading(2, ctx.t("runtime")), doc.Table(header, rows), *failed_note(ctx)]
    if phase_rows:
        blocks += doc.split_table([ctx.t("arm"), *(f"{p} (s)" for p in phases), *compute], phase_rows)
    return blocks


def tensorboard_command(ctx: Ctx) -> str:
    """``tensorboard --logdir OUT/runs`` for this study (every run writes ``runs/<run_id>/tb``)."""
    return f"tensorboard --logdir {shlex.quote(str(ctx.study.out_dir / 'runs'))}"


def plots_section(ctx: Ctx, plots: list[Plot]) -> list[doc.Block]:
    """Every figure with its caption, and the TensorBoard command for the run folder."""
    blocks: list[doc.Block] = [doc.Heading(2, ctx.t("plots")),
                               doc.Para(ctx.t("tensorboard", cmd=tensorboard_command(ctx)))]
    for p in plots:
        caption = ctx.t(p.caption, **p.params)
        blocks += [doc.Image(f"plots/{p.stem}.png", caption), doc.Para(f"*{caption}*")]
    return blocks


def _tail(lines: object) -> str:
    if isinstance(lines, str):
        return lines.rstrip()
    return "\n".join(str(x).rstrip("\n") for x in lines or [])


def failures_section(ctx: Ctx) -> list[doc.Block]:
    """Each run that did not succeed (class, message, traceback and log tails), warnings, invariants."""
    s, a = ctx.study, ctx.analysis
    blocks: list[doc.Block] = [doc.Heading(2, ctx.t("failures")), doc.Heading(3, ctx.t("failed_runs"))]
    bad = [r for r in s.runs if not r.ok]
    if not bad:
        blocks.append(doc.Para(ctx.t("no_failures")))
    for r in bad:
        err = r.error
        blocks.append(doc.Heading(4, f"{r.arm} / seed {r.seed}: {doc.cell(r.label())}"))
        items = [f"run_id: `{r.run_id}`", f"{ctx.t('status')}: {r.status}"]
        if err.get("code"):
            items.append(f"{ctx.t('error_code')}: `{err['code']}`")
        if err.get("epoch") is not None or err.get("step") is not None:
            items.append(ctx.t("at", epoch=err.get("epoch", "—"), step=err.get("step", "—")))
        if signal_text(err):
            items.append(f"{ctx.t('signal')}: {signal_text(err)}")
        if err.get("last_metrics"):
            items.append(f"{ctx.t('last_metrics')}: " + ", ".join(
                f"{k}={doc.num(v) if isinstance(v, (int, float)) else v}" for k, v in err["last_metrics"].items()))
        items += [doc.cell(p) for p in r.problems]
        blocks.append(doc.Bullets(items))
        for key, title in (("traceback_tail", "traceback"), ("log_tail", "log_tail")):
            if err.get(key):
                blocks += [doc.Para(f"**{ctx.t(title)}**"), doc.Code(_tail(err[key]))]
    n = shown_count(s, a.warnings)
    blocks += [doc.Heading(3, ctx.t("warnings")), doc.Para(ctx.t("warnings_above", n=n) if n else ctx.t("no_warnings"))]
    rows = []
    for arm in s.arms:
        inv = [r.summary.get("invariants") or {} for r in s.arm_runs(arm) if r.summary]
        if inv:
            ok = sum(1 for i in inv if i.get("frozen_unchanged") is not False)
            dead = sorted({str(d) for i in inv for d in i.get("dead_tensors") or []})
            rows.append([arm_label(ctx, arm), f"{ok}/{len(inv)}", doc.short(", ".join(dead), 80) or "—",
                         str(sum(len(i.get("warnings") or []) for i in inv))])
    if rows:
        blocks += [doc.Heading(3, ctx.t("invariants")), doc.Table(
            [ctx.t("arm"), ctx.t("frozen_ok"), ctx.t("dead"), ctx.t("inv_warn")], rows)]
    return blocks


def conclusion_lines(ctx: Ctx) -> list[str]:
    """The auto-written conclusion: one protocol §7 template sentence per arm on the primary metric (its
    verdict read off the printed interval); the answer itself is stated once, at the top."""
    s, a = ctx.study, ctx.analysis
    m = a.primary
    lines: list[str] = []
    ref = a.arm_stat(m, s.reference).summary
    for arm in s.arms:
        st = a.arm_stat(m, arm)
        if arm == s.reference or st.vs_ref is None or not st.vs_ref.diffs:
            continue
        dval, lo, hi = delta_parts(st)
        lines.append(ctx.t("conclusion_line", arm=arm, ref=s.reference, metric=m.key,
                           m_a=doc.value(st.summary.mean, m.percent),
                           s_a=doc.spread(st.summary.std, st.summary.mean, m.percent),
                           m_r=doc.value(ref.mean, m.percent), s_r=doc.spread(ref.std, ref.mean, m.percent),
                           n=len(st.vs_ref.diffs), d=dval, lo=lo, hi=hi, verdict=verdict_text(ctx, st)))
    return lines


def _model_kind(ctx: Ctx, arm: str) -> str | None:
    run = next((r for r in ctx.study.arm_runs(arm) if r.config), None)
    model = (run.config.get("model") or {}) if run is not None else {}
    return model.get("kind", "cvfp") if ctx.study.task == "lm" and run is not None else None


def reference_model_lines(ctx: Ctx) -> list[str]:
    """Whether CVFP is competitive at the same trainable budget: one sentence per reference-model arm
    (model.kind gpt2/gru) against the study's reference arm, when that one is CVFP (its verdict, read off the
    printed interval of the primary metric)."""
    s, a = ctx.study, ctx.analysis
    if _model_kind(ctx, s.reference) != "cvfp":
        return []
    m, lines = a.primary, []
    for arm in s.arms:
        kind = _model_kind(ctx, arm)
        st = a.arm_stat(m, arm)
        if kind in (None, "cvfp") or st.vs_ref is None or not st.vs_ref.diffs:
            continue
        run = next(r for r in s.arm_runs(arm) if r.config)
        matched = (run.summary.get("params") or {}).get("matched") or {}
        key = {"better": "refmodel_better", "worse": "refmodel_worse", "no_difference": "refmodel_same"}.get(
            st.verdict, "refmodel_open")
        dval, lo, hi = delta_parts(st)
        lines.append(ctx.t(key, arm=arm, kind={"gpt2": "GPT-2", "gru": "GRU"}.get(kind, kind), ref=s.reference,
                           metric=m.key, trainable=doc.count(matched.get("trainable")),
                           cvfp=doc.count(matched.get("cvfp_trainable")), d=dval, lo=lo, hi=hi,
                           verdict=verdict_text(ctx, st)))
    return lines


def conclusion_section(ctx: Ctx) -> list[doc.Block]:
    """Template sentences and the warnings the reader must keep in mind."""
    a = ctx.analysis
    lines = conclusion_lines(ctx) + reference_model_lines(ctx)
    if a.warnings:
        lines.append(ctx.t("caveats", n=shown_count(ctx.study, a.warnings)))
    return [doc.Heading(2, ctx.t("conclusion")), doc.Bullets(lines)]


def reproduction_section(ctx: Ctx, lang: str) -> list[doc.Block]:
    """Recorded commands, the report command, config hashes and versions per arm; the glossary."""
    s = ctx.study
    cmds = list(dict.fromkeys(str(r.info["command"]) for r in s.runs if r.info.get("command")))
    out = shlex.quote(str(s.out_dir))
    cmds.append(f"freezelab report {out} --lang {lang} --reference {shlex.quote(s.reference)}")
    cmds.append(tensorboard_command(ctx))
    rows = []
    for arm in s.arms:
        sm = [r.summary for r in s.arm_runs(arm) if r.summary]
        hashes = ", ".join(dict.fromkeys(str((x.get("hashes") or {}).get("config_hash", "—"))[:12] for x in sm))
        env = [x.get("environment") or {} for x in sm]
        rows.append([arm_label(ctx, arm), f"`{hashes or '—'}`",
                     ", ".join(dict.fromkeys(str(e.get("freezelab", "—")) for e in env)) or "—",
                     ", ".join(dict.fromkeys(str(e.get("git_commit") or "—") for e in env)) or "—"])
    code: doc.Block = doc.Code("\n".join(cmds), "bash")
    if len(cmds) > 8:
        code = doc.Details(f"{ctx.t('reproduction')} ({len(cmds)})", [code])
    return [doc.Heading(2, ctx.t("reproduction")), doc.Para(ctx.t("repro_note")), code,
            doc.Table([ctx.t("arm"), ctx.t("config_hash"), "freezelab", "git commit"], rows),
            doc.Heading(2, ctx.t("glossary")), doc.Table(["English", "日本語"], [list(g) for g in GLOSSARY])]
