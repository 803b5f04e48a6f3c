"""The first screen of the report: the answer in words, one row per arm, the baselines, the warnings next to
the arm they concern, and the figure of the metric the verdicts use.

Every claim here is a ``verdicts`` decision on the primary metric's intervals: "better" or "worse" only
when the printed interval excludes 0, never "no skill" for an interval wholly on the better side, a "best"
arm only when it is better than the runner-up, and no best arm at all when none beats the best naive
baseline (the answer then names that baseline). Per-seed counts ("worse in 2/2 seeds") are descriptive
text beside the verdict.
"""

from __future__ import annotations

import math

from freezelab.report import document as doc
from freezelab.report import inference as inf
from freezelab.report import verdicts as vd
from freezelab.report.analysis import ArmStat, Metric
from freezelab.report.evidence import baseline_summary_values
from freezelab.report.sections import Ctx, arm_label, warning_text
from freezelab.report.warnings import Grouped, group, profiles, shown_count


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
    better, n = vd.seeds_favouring(c, m.mode)
    worse = sum(1 for d in c.diffs if d != 0) - better
    side, k = ("better", better) if better >= worse else ("worse", worse)
    return ctx.t("seed_fact", side=ctx.t(f"side_{side}"), k=k, n=n)


def verdict_phrase(ctx: Ctx, c: inf.Comparison | None, m: Metric, verdict: str, *, baseline: str = "",
                   short: bool = False) -> str:
    """The verdict in words with the per-seed fact: "better (2/2 seeds)", "inconclusive: worse in 2/2
    seeds but n = 2", "better than `kn_bigram` (2/2 seeds)", "worse than `kn_bigram`: no skill"; ``short``
    leaves out the baseline's name (a column named after it)."""
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
        better, n = vd.seeds_favouring(c, m.mode)
        return f"{word} ({ctx.t('seed_count', k=better if verdict != 'worse' else n - better, n=n)})"
    return f"{word} ({fact})" if fact else word


def arm_value(st: ArmStat) -> str:
    """The arm's mean with its 95 % interval, e.g. ``1,453 [1,048, 2,015]``."""
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


def _first_run(ctx: Ctx) -> str | None:
    """The run_id of the whole study's first run (the cold one: imports, data loading and shared caches)."""
    started = sorted((str(r.status_json.get("started_at")), r.run_id) for r in ctx.study.full.runs
                     if r.ok and r.status_json.get("started_at"))
    return started[0][1] if len(started) > 1 and started[0][0] < started[1][0] else None


def time_cell(ctx: Ctx, arm: str) -> str:
    """Wall time per run: mean (min–max over seeds), ‡ when the study's cold first run is among them."""
    runs = [r for r in ctx.study.arm_runs(arm, ok_only=True) if isinstance(r.summary.get("wall_seconds"),
                                                                         (int, float))]
    walls = [float(r.summary["wall_seconds"]) for r in runs]
    if not walls:
        return "—"
    cold = " ‡" if _first_run(ctx) in {r.run_id for r in runs} else ""
    mean = doc.brief_seconds(sum(walls) / len(walls))
    if len(walls) == 1:
        return mean + cold
    lo, hi = doc.brief_seconds(min(walls)), doc.brief_seconds(max(walls))
    if lo.endswith(" s") and hi.endswith(" s"):
        lo = lo.removesuffix(" s")
    return f"{mean} ({lo}–{hi}){cold}"


def headline_table(ctx: Ctx) -> doc.Table:
    """One row per arm: primary metric [95 %], vs reference [Holm], verdict, vs baseline, params, time."""
    s, a = ctx.study, ctx.analysis
    m = a.primary
    base = a.headline.baseline
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
        rows.append([arm_label(ctx, arm), arm_value(st), ref, verdict, vs_base, _trainable(ctx, arm),
                     time_cell(ctx, arm)])
    header = [ctx.t("arm"), ctx.t("h_value", metric=m.key), ctx.t("h_vs_ref", ref=s.reference, dir=_direction(ctx, m)),
              ctx.t("verdict"), ctx.t("h_vs_base", b=base[0] if base else "—"), ctx.t("trainable"),
              ctx.t("h_time")]
    return doc.drop_empty_columns(doc.Table(header, rows), keep=1)


def baselines_table(ctx: Ctx) -> doc.Table | None:
    """Every naive baseline's value on each headline metric (the same items as the arms), the compared one
    marked; None when the study has no baselines."""
    a = ctx.analysis
    values = {m.key: baseline_summary_values(ctx.study, m.key) for m in a.metrics}
    names = list(dict.fromkeys(b for per in values.values() for b in per))
    if not names:
        return None
    best = a.headline.baseline
    rows = []
    for name in names:
        mark = f" ({ctx.t('compared_baseline')})" if best and name == best[0] else ""
        rows.append([f"`{name}`{mark}", *(doc.brief(values[m.key].get(name, math.nan), m.percent)
                                          for m in a.metrics)])
    header = [ctx.t("baseline_col"), *(f"{m.key} ({ctx.t(f'dir_{m.mode}')})" for m in a.metrics)]
    return doc.drop_empty_columns(doc.Table(header, rows), keep=1)


def _direction(ctx: Ctx, m: Metric) -> str:
    kind = "rel" if m.log_scale else "diff"
    return ctx.t(f"dir_{kind}_{m.mode}")


def _trainable(ctx: Ctx, arm: str) -> str:
    counts = [(r.summary.get("params") or {}).get("trainable") for r in ctx.study.arm_runs(arm) if r.summary]
    counts = [c for c in counts if isinstance(c, (int, float))]
    return doc.brief_count(sorted(counts)[len(counts) // 2]) if counts else "—"


def _names(arms: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f"`{a}`" for a in arms)


def _first_sentence(ctx: Ctx) -> str:
    """What the study found, by ``verdicts.headline``: no arm beats the baseline, the best arm, or a tie."""
    a = ctx.analysis
    m = a.primary
    h = a.headline
    if h.kind == "none" or h.best is None:
        return ctx.t("result_none", metric=m.key)
    st = a.arm_stat(m, h.best.arm)
    direction = ctx.t(f"dir_{m.mode}")
    if h.kind == "no_skill" and h.baseline is not None:
        done = [x for x in ctx.study.arms if a.arm_stat(m, x).summary.n]
        below = [x for x in done if a.arm_stat(m, x).skill == "worse"]
        means = [a.arm_stat(m, x).summary.mean for x in done]
        key = ("answer_no_skill_all" if len(below) == len(done) else "answer_no_skill" if below
               else "answer_no_skill_none")
        return ctx.t(key, b=h.baseline[0], metric=m.key, dir=direction, value=doc.brief(h.baseline[1], m.percent),
                     lo=doc.brief(min(means), m.percent), hi=doc.brief(max(means), m.percent), n=len(done),
                     k=len(below))
    ref = ctx.t("answer_is_ref") if h.best.arm == ctx.study.reference else ""
    if h.kind == "single":
        return ctx.t("answer_single", best=h.best.arm, ref=ref, metric=m.key, dir=direction, value=arm_value(st))
    c = h.best.comparison
    cell = comparison_cell(c, m) if c is not None else "—"
    key = "answer_best" if h.kind == "best" else "answer_tie"
    return ctx.t(key, best=h.best.arm, ref=ref, metric=m.key, dir=direction, value=arm_value(st),
                 second=h.best.runner_up, cell=cell)


def answer(ctx: Ctx) -> str:
    """The study's answer in one paragraph: what it found (first sentence), the verdicts against the
    reference and the best baseline grouped by word, and what they rest on."""
    s, a = ctx.study, ctx.analysis
    m = a.primary
    h = a.headline
    parts = [_first_sentence(ctx)]
    if h.kind == "none":
        return parts[0]
    groups = _groups(ctx, m, "verdict", exclude=s.reference)
    if groups:
        parts.append(ctx.t("answer_vs_ref", ref=s.reference, groups=groups))
    groups = _groups(ctx, m, "skill")
    if h.baseline and groups and h.kind != "no_skill":
        parts.append(ctx.t("answer_vs_base", b=h.baseline[0], value=doc.brief(h.baseline[1], m.percent),
                           groups=groups))
    return " ".join(parts)


def basis(ctx: Ctx) -> str:
    """What the intervals rest on: seeds, items, bootstrap blocks, the pooled df, the Holm family's size."""
    a = ctx.analysis
    m = a.primary
    ev, res = a.sources.get(m.key), a.results.get(m.key)
    if ev is None or res is None:
        return ""
    n_seeds = max((len(r) for r in ev.runs.values()), default=0)
    key = "basis_seeds" if ev.method != inf.METHOD_ITEMS else "basis_items" if ev.block == 1 else "basis_blocks"
    return ctx.t(key, n=n_seeds, items=ev.n_items, block=ev.block, m=a.family_size(),
                 df=doc.count(res.pool.resid_df if res.pool.resid_df > 0 else res.pool.df))


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


def _seeds(ctx: Ctx, seeds: list[int]) -> str:
    unique = sorted(set(seeds))
    return ctx.t("w_seed" if len(unique) == 1 else "w_seeds", seeds=", ".join(map(str, unique)))


def _where(ctx: Ctx, g: Grouped, arm: str) -> str:
    """An arm a warning holds for, with its seeds when not every seed of the arm."""
    seeds = g.seeds.get(arm)
    if seeds and len(set(seeds)) < len(ctx.study.arm_runs(arm)):
        return f"{arm_label(ctx, arm)} ({_seeds(ctx, seeds)})"
    return arm_label(ctx, arm)


def _text(ctx: Ctx, g: Grouped) -> str:
    text = warning_text(ctx, g.finding).rstrip("。.")
    return f"**{text}**" if g.severe else text


def _every(ctx: Ctx, g: Grouped) -> str:
    """``Every arm: `` or ``Every arm (not `a` seed 1): `` for a run-level warning some runs escape."""
    if not g.seeds:
        return f"{ctx.t('w_every_arm')}: "
    missing = []
    for arm in g.arms:
        ok = {r.seed for r in ctx.study.arm_runs(arm)} - set(g.seeds.get(arm, []))
        if ok:
            missing.append(f"`{arm}` {_seeds(ctx, sorted(ok))}")
    return f"{ctx.t('w_every_arm')}" + (f" ({ctx.t('w_except', which=', '.join(missing))})" if missing else "") + ": "


def warnings_block(ctx: Ctx) -> list[doc.Block]:
    """Every warning once: study-wide ones (and those that hold for every arm), those of several arms with
    the arms named, then one line per arm for the warnings of that arm alone."""
    study_wide, several, per_arm = group(ctx.study, ctx.analysis.warnings)
    if not (study_wide or several or per_arm):
        return [doc.Para(f"**{ctx.t('warnings')}:** {ctx.t('no_warnings')}")]
    items = [_every(ctx, g) + _text(ctx, g) if g.every_arm else _text(ctx, g) for g in study_wide]
    items += [", ".join(_where(ctx, g, a) for a in g.arms) + ": " + _text(ctx, g) for g in several]
    for arm, found in per_arm.items():
        seeded = [f"{_text(ctx, g)} ({_seeds(ctx, g.seeds[arm])})"
                  if g.seeds.get(arm) and len(set(g.seeds[arm])) < len(ctx.study.arm_runs(arm)) else _text(ctx, g)
                  for g in found]
        items.append(f"{arm_label(ctx, arm)}: " + "; ".join(seeded))
    n = shown_count(ctx.study, ctx.analysis.warnings)
    return [doc.Section("warnings", [doc.Para(f"**{ctx.t('warnings')} ({n})**"), doc.Bullets(items)])]


def profile_banner(ctx: Ctx) -> list[doc.Block]:
    """The smoke-test banner: runs made under a study profile (``--profile quick``) are not a result."""
    found = profiles(ctx.study.full)
    if not found:
        return []
    total = sum(1 for r in ctx.study.full.runs if r.path is not None)
    names = ", ".join(f"`{p}`" for p in found)
    n = sum(len(v) for v in found.values())
    desc = str(ctx.study.spec.get("profile_description") or "").strip()
    text = ctx.t("profile_banner", profiles=names, n=n, total=total)
    blocks: list[doc.Block] = [doc.Para(text)]
    if desc:
        blocks.append(doc.Para(f"*{doc.short(desc, 300)}*"))
    return [doc.Callout(ctx.t("profile_title", profiles=names), blocks, tone="warn")]


def first_screen(ctx: Ctx, figure: str | None) -> list[doc.Block]:
    """Smoke-test banner, answer, arm table, baselines, warnings, the verdict metric's figure and the note."""
    blocks: list[doc.Block] = [doc.Para(f"**{ctx.t('answer')}** {answer(ctx)}"), headline_table(ctx)]
    base = baselines_table(ctx)
    if base is not None:
        blocks.append(base)
    blocks += warnings_block(ctx)
    if figure:
        blocks.append(doc.Image(figure, ctx.t("plot_first", metric=ctx.analysis.primary.key)))
    note = [ctx.t("headline_note", ref=ctx.study.reference), basis(ctx)]
    if _first_run(ctx) is not None:
        note.append(ctx.t("cold_note"))
    blocks.append(doc.Para(" ".join(x for x in note if x)))
    return profile_banner(ctx) + [doc.Section("first-screen", blocks)]
