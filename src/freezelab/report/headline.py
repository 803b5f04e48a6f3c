"""The first screen of the report: the answer in words, one compact row per arm, the curves overlay.

Every word here is derived from the primary metric's intervals (``analysis``/``inference``): "better"
or "worse" only when the printed interval excludes 0, never "no skill" for an interval wholly on the
better side; per-seed counts ("worse in 2/2 seeds") are descriptive text beside the verdict.
"""

from __future__ import annotations

import math

from freezelab.report import document as doc
from freezelab.report import inference as inf
from freezelab.report.analysis import ArmStat, Metric
from freezelab.report.sections import Ctx, arm_label


def rel_change(m: Metric, d: float) -> str:
    """A comparison's point value as text: relative change in % for log-scale metrics, else a signed
    difference (points for accuracy-type metrics)."""
    if not math.isfinite(d):
        return "—"
    return doc.pct(math.expm1(d) * 100) if m.log_scale else doc.signed(d, m.percent)


def rel_interval(m: Metric, lo: float, hi: float) -> str:
    """``[−38.0, −27.2]`` (% for log-scale metrics), or an em dash without an interval."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    if m.log_scale:
        return f"[{math.expm1(lo) * 100:+.1f}, {math.expm1(hi) * 100:+.1f}]"
    return f"[{doc.signed(lo, m.percent)}, {doc.signed(hi, m.percent)}]"


def comparison_cell(c: inf.Comparison | None, m: Metric) -> str:
    """``−33.1% [−38.0, −27.2]``: the comparison's value and the interval its verdict is read from."""
    if c is None or not c.diffs:
        return "—"
    return f"{rel_change(m, c.estimate.value)} {rel_interval(m, c.lo, c.hi)}"


def seed_fact(ctx: Ctx, c: inf.Comparison, m: Metric) -> str:
    """``worse in 2/2 seeds`` (descriptive, never the rule)."""
    better, n = inf.seeds_favouring(c, m.mode)
    worse = sum(1 for d in c.diffs if d != 0) - better
    side, k = ("better", better) if better >= worse else ("worse", worse)
    return ctx.t("seed_fact", side=ctx.t(f"side_{side}"), k=k, n=n)


def verdict_phrase(ctx: Ctx, c: inf.Comparison | None, m: Metric, verdict: str, *, baseline: str = "",
                   short: bool = False) -> str:
    """The verdict in words with the per-seed fact: "better (2/2 seeds)", "inconclusive: worse in 2/2
    seeds but n = 2", "beats `kn_bigram` (2/2 seeds)", "below `kn_bigram`: no skill"; ``short`` leaves out
    the baseline's name (a column named after it)."""
    if c is None:
        return "—"
    prefix = ("bs_" if short else "b_") if baseline else "v_"
    word = ctx.t(prefix + verdict, b=baseline)
    if verdict == "insufficient":
        return f"{word} ({ctx.t('why_insufficient', n=len(c.diffs))})"
    fact = seed_fact(ctx, c, m) if c.diffs else ""
    if verdict == "inconclusive":
        return ctx.t("inconclusive_fact", word=word, fact=fact, n=len(c.diffs))
    if short and fact:
        better, n = inf.seeds_favouring(c, m.mode)
        return f"{word} ({ctx.t('seed_count', k=better if verdict != 'worse' else n - better, n=n)})"
    return f"{word} ({fact})" if fact else word


def _arm_value(st: ArmStat) -> str:
    m = st.metric
    if st.summary.n == 0:
        return "—"
    lo, hi = st.interval()
    shown = doc.brief(st.summary.mean, m.percent)
    return f"{shown} {doc.interval(lo, hi, lambda x: doc.brief(x, m.percent))}" if math.isfinite(lo) else shown


def _order(ctx: Ctx, m: Metric) -> list[str]:
    """Arms with results, best mean first; arms without a finished run last."""
    a = ctx.analysis
    done = [arm for arm in ctx.study.arms if a.arm_stat(m, arm).summary.n]
    done.sort(key=lambda arm: a.arm_stat(m, arm).summary.mean, reverse=m.mode == "max")
    return done + [arm for arm in ctx.study.arms if arm not in done]


def headline_table(ctx: Ctx) -> doc.Table:
    """One row per arm: primary metric [95 %], vs reference [Holm], verdict, vs baseline, params, time."""
    s, a = ctx.study, ctx.analysis
    m = a.primary
    base = next((a.arm_stat(m, arm).baseline for arm in s.arms if a.arm_stat(m, arm).baseline), None)
    rows = []
    for arm in _order(ctx, m):
        st = a.arm_stat(m, arm)
        if st.summary.n == 0:
            label = next((r.label() for r in s.arm_runs(arm) if not r.ok), "—")
            rows.append([arm_label(ctx, arm), doc.cell(label), "—", "—", "—", "—", "—"])
            continue
        ref = ctx.t("reference") if arm == s.reference else comparison_cell(st.vs_ref, m)
        verdict = "—" if arm == s.reference else verdict_phrase(ctx, st.vs_ref, m, st.verdict, short=True)
        vs_base = "—"
        if st.vs_base is not None and base is not None:
            word = verdict_phrase(ctx, st.vs_base, m, st.skill or "insufficient", baseline=base[0], short=True)
            vs_base = f"{comparison_cell(st.vs_base, m)}: {word}"
        rows.append([arm_label(ctx, arm), _arm_value(st), ref, verdict, vs_base, _trainable(ctx, arm),
                     doc.seconds(_wall(ctx, arm))])
    header = [ctx.t("arm"), ctx.t("h_value", metric=m.key), ctx.t("h_vs_ref", ref=s.reference, dir=_direction(ctx, m)),
              ctx.t("verdict"), ctx.t("h_vs_base", b=base[0] if base else "—"), ctx.t("trainable"),
              ctx.t("h_time")]
    return doc.drop_empty_columns(doc.Table(header, rows), keep=1)


def _direction(ctx: Ctx, m: Metric) -> str:
    kind = "rel" if m.log_scale else "diff"
    return ctx.t(f"dir_{kind}_{m.mode}")


def _trainable(ctx: Ctx, arm: str) -> str:
    counts = [(r.summary.get("params") or {}).get("trainable") for r in ctx.study.arm_runs(arm) if r.summary]
    counts = [c for c in counts if isinstance(c, (int, float))]
    return doc.count(sorted(counts)[len(counts) // 2]) if counts else "—"


def _wall(ctx: Ctx, arm: str) -> float:
    vals = [r.summary.get("wall_seconds") for r in ctx.study.arm_runs(arm, ok_only=True)]
    vals = [float(v) for v in vals if isinstance(v, (int, float))]
    return sum(vals) / len(vals) if vals else math.nan


def _names(arms: list[str]) -> str:
    return ", ".join(f"`{a}`" for a in arms)


def answer(ctx: Ctx) -> str:
    """The study's answer in one paragraph: the best arm with its interval, the verdicts against the
    reference and the best baseline grouped by word, and what they rest on."""
    s, a = ctx.study, ctx.analysis
    m = a.primary
    best = next((b for b in a.best if b.metric == m), None)
    if best is None:
        return ctx.t("result_none", metric=m.key)
    st = a.arm_stat(m, best.arm)
    parts = [ctx.t("answer_best", best=best.arm, metric=m.key, dir=ctx.t(f"dir_{m.mode}"), value=_arm_value(st),
                   ref=ctx.t("answer_is_ref") if best.arm == s.reference else "")]
    groups = _groups(ctx, m, "verdict", exclude=s.reference)
    if groups:
        parts.append(ctx.t("answer_vs_ref", ref=s.reference, groups=groups))
    base = st.baseline
    groups = _groups(ctx, m, "skill")
    if base and groups:
        parts.append(ctx.t("answer_vs_base", b=base[0], value=doc.brief(base[1], m.percent), groups=groups))
    ev = a.sources.get(m.key)
    res = a.results.get(m.key)
    n_seeds = max((len(r) for r in (ev.runs.values() if ev else [])), default=0)
    if ev is not None and res is not None:
        key = "basis_seeds" if ev.method != inf.METHOD_ITEMS else "basis_items" if ev.block == 1 else "basis_blocks"
        basis = ctx.t(key, n=n_seeds,
                      items=ev.n_items, block=ev.block, m=a.family_size(), df=doc.count(res.pool.df))
        parts.append(basis)
    return " ".join(parts)


def _groups(ctx: Ctx, m: Metric, attr: str, exclude: str | None = None) -> str:
    """``worse: `a`, `b`; inconclusive: `c``` over the arms' verdicts (reference or baseline)."""
    by: dict[str, list[str]] = {}
    for arm in ctx.study.arms:
        st = ctx.analysis.arm_stat(m, arm)
        word = getattr(st, attr)
        if arm == exclude or st.summary.n == 0 or not word:
            continue
        by.setdefault(word, []).append(arm)
    order = ("better", "worse", "inconclusive", "no_difference", "insufficient")
    prefix = "g_" if attr == "verdict" else "gb_"
    return "; ".join(f"{ctx.t(prefix + w)}: {_names(by[w])}" for w in order if w in by)


def first_screen(ctx: Ctx, overlay: str | None) -> list[doc.Block]:
    """Answer, compact table, overlay plot, and the one-line note on how the intervals are made."""
    blocks: list[doc.Block] = [doc.Para(f"**{ctx.t('answer')}** {answer(ctx)}"), headline_table(ctx)]
    if overlay:
        key = f"val/{ctx.analysis.primary.key.split('/', 1)[-1]}"
        blocks.append(doc.Image(overlay, ctx.t("plot_overlay", metric=key)))
    blocks.append(doc.Para(ctx.t("headline_note", ref=ctx.study.reference)))
    return blocks
