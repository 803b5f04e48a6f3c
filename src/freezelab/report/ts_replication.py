"""Which of the seed's numbers survive: a time-series study whose arms ran under more than one protocol.

A run's *protocol* is the set of faithful options (spec timeseries-transfer.md §2, §10) its resolved
``config.yaml`` turns on: ``windows.layout: legacy``, ``masking.scheme: legacy_index_sync``,
``masking.mask_inputs: false``, ``data.normalisation: whole_period | none``. Arms of different protocols are
scored on different windows, masks and units, so they are never compared with each other: each protocol is
analysed as its own sub-study (``protocols.analyse_groups``: the items, seeds, Holm family and baselines of that
protocol), against its own reference, the arm with the study reference's backbone role (kind and training).
What is compared across protocols is only what does not depend on the units: verdicts, skill against the
protocol's own baselines, per-window correlation.

The seed's published figures (run 20250706_203942, spec §9) are constants below; the rest is read from the
run folders. Each claim of the seed gets, per protocol, the evidence and whether it holds there; "survives"
is whether it holds under the corrected protocol.
"""

from __future__ import annotations

import math
from typing import Any

from freezelab.report import document as doc
from freezelab.report.aggregate import Run, Study
from freezelab.report.analysis import Finding
from freezelab.report.headline import _groups, comparison_cell, headline_table, verdict_phrase
from freezelab.report.i18n import lookup
from freezelab.report.masking import masking_findings, masking_section
from freezelab.report.protocols import Group, arms_table, faithful_options, get_key, split_by
from freezelab.report.sections import Ctx

# (dotted key, values that are the original's behaviour)
FAITHFUL: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("windows.layout", ("legacy",)), ("masking.scheme", ("legacy_index_sync",)),
    ("masking.mask_inputs", (False,)), ("data.normalisation", ("whole_period", "none")))
ROLES = {"frozen": ("pretrained", "frozen"), "frozen_then_unfrozen": ("pretrained", "frozen_then_unfrozen"),
         "finetune": ("pretrained", "finetune"), "random_init": ("random_init", None)}
SEED_RUN = "GoriProject 20250706_203942"
CORR_ZERO = 0.05  # "≈ 0": the seed's correlations lie within ±0.04; an arm's 95 % interval must reach ±0.05

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Replication: which of the seed's numbers survive",
        "intro": "The arms ran under {n} protocols. Arms of different protocols are scored on different windows, masks and units, so each protocol is analysed on its own (its items, seeds, baselines and Holm family) against its own reference; across protocols only verdicts, skill against the protocol's own baselines and correlations are compared. The seed's figures are those published for {seed} (spec §9). Its optimizer, schedule, precision and metric defects are fixed under every protocol here, so *seed → original* isolates them and *original → corrected* isolates the data-side options.",  # noqa: E501
        "protocol_line": "**{name}** ({options}): {arms}; reference `{ref}`.",
        "corrected": "corrected", "original": "original", "partial": "partial",
        "no_options": "no faithful option",
        "h_claim": "Seed's claim (its numbers)", "h_survives": "Survives the corrected protocol?",
        "holds": "holds", "fails": "does not hold", "untested": "untested", "answered": "answered",
        "yes": "yes", "no": "no",
        "c_alike": "The three T5 arms end alike: training the encoder made no difference (best val corr: FrozenAll −0.019, Freeze −0.027, NoFreeze −0.010).",  # noqa: E501
        "c_nofreeze_best": "NoFreeze is the best arm (highest best-checkpoint val corr, −0.0104).",
        "c_corr_zero": "Every correlation ≈ 0 (best-checkpoint val corr −0.04 to −0.01).",
        "c_no_skill": "No arm reconstructs the masked bars (the reading of those correlations): none beats a naive baseline.",  # noqa: E501
        "c_loss_16x": "NoFreeze's val loss is 16× the frozen arms' (2,576 vs 161–163).",
        "c_random": "Random init vs transfer: the random-init Baseline FAILED with no error recorded, so the seed has no number.",  # noqa: E501
        "vs": "`{arm}` {cell}: {verdict}", "skill": "vs `{b}`: {groups}",
        "corr_arm": "`{arm}` {value}",
        "best_is": "best: `{arm}`", "missing": "arm missing",
        "measured": "**What each protocol measured** (summary.json): {lines}",
        "measured_line": "{name}: {visible} of targets visible in the input, {leaked} of targets share time with a visible bar (worst timeframe), the last bar looks ahead in {ahead} of windows (up to {hours} h)",  # noqa: E501
        "group_title": "Protocol {name}: arms vs `{ref}`",
    },
    "ja": {
        "title": "再現: 元の研究の数値のうち何が残るか",
        "intro": "アームは {n} 種類のプロトコルで実行された。プロトコルが違うアームはウィンドウ・マスク・単位が異なるため、プロトコルごとに（その評価項目・シード・ベースライン・Holm 族で）それぞれの基準アームと比較する。プロトコル間で比べるのは判定、そのプロトコル自身のベースラインに対するスキル、相関だけである。元の研究の値は {seed} の公表値（spec §9）。オプティマイザ・スケジュール・精度・指標の欠陥はここではすべてのプロトコルで修正済みなので、*元の研究 → 元のプロトコル* がそれらの効果、*元のプロトコル → 修正版* がデータ側の選択肢の効果を分ける。",  # noqa: E501
        "protocol_line": "**{name}**（{options}）: {arms}。基準 `{ref}`。",
        "corrected": "修正版", "original": "元のプロトコル", "partial": "一部のみ",
        "no_options": "再現オプションなし",
        "h_claim": "元の研究の主張（その数値）", "h_survives": "修正版プロトコルで残るか",
        "holds": "成立", "fails": "不成立", "untested": "未検証", "answered": "回答",
        "yes": "残る", "no": "残らない",
        "c_alike": "T5 の 3 アームは同じ結果: エンコーダを学習しても差がない（最良 val corr: FrozenAll −0.019、Freeze −0.027、NoFreeze −0.010）。",  # noqa: E501
        "c_nofreeze_best": "NoFreeze が最良のアーム（最良チェックポイントの val corr が最高、−0.0104）。",
        "c_corr_zero": "相関はすべて ≈ 0（最良チェックポイントの val corr −0.04〜−0.01）。",
        "c_no_skill": "どのアームもマスクした足を復元できない（その相関の読み）: 素朴なベースラインより良いアームはない。",  # noqa: E501
        "c_loss_16x": "NoFreeze の val loss は凍結アームの 16 倍（2,576 対 161–163）。",
        "c_random": "ランダム初期化 対 転移: ランダム初期化の Baseline はエラー記録なしで FAILED、数値なし。",
        "vs": "`{arm}` {cell}: {verdict}", "skill": "`{b}` に対して: {groups}",
        "corr_arm": "`{arm}` {value}",
        "best_is": "最良: `{arm}`", "missing": "アームなし",
        "measured": "**各プロトコルが測ったもの**（summary.json）: {lines}",
        "measured_line": "{name}: 入力で可視のターゲット {visible}、可視の足と時間を共有するターゲット {leaked}（最悪の時間足）、最後の足が先を見るウィンドウ {ahead}（最大 {hours} 時間）",  # noqa: E501
        "group_title": "プロトコル {name}: アーム 対 `{ref}`",
    },
}


def _t(lang: str, key: str, **params: object) -> str:
    return lookup(STRINGS, lang, key, **params)


def protocol(run: Run) -> tuple[str, ...]:
    """The time-series faithful options a run's resolved config turns on, as ``key=value`` (empty: corrected)."""
    return faithful_options(run, FAITHFUL)


def role(run: Run) -> tuple[Any, Any]:
    """(backbone.kind, backbone.train) of a run: what an arm is across protocols."""
    return get_key(run.config, "backbone.kind"), get_key(run.config, "backbone.train")


def ts_groups(study: Study) -> list[Group]:
    """The study's protocols, the reference's first; [] unless a time-series study ran more than one."""
    if study.task != "timeseries":
        return []
    first = {arm: next((r for r in study.arm_runs(arm) if r.config), None) for arm in study.arms}
    ref_run = first.get(study.reference)
    if ref_run is None:
        return []
    ref_role = role(ref_run)

    def pick(arms: list[str]) -> str:
        return next((a for a in arms if first[a] is not None and role(first[a]) == ref_role), arms[0])  # type: ignore[arg-type]

    return split_by(study, protocol, pick, first, n_faithful=len(FAITHFUL))


def other_warnings(groups: list[Group]) -> list[Finding]:
    """Headline findings of the protocols other than the reference's (their leaks must not go unsaid)."""
    out = []
    for g in groups[1:]:
        out += masking_findings(g.study) if g.study.task == "timeseries" else []
    return out


# ----------------------------------------------------------------------------- the claims


def _arm_of(g: Group, name: str) -> str | None:
    want = ROLES[name]
    for arm in g.arms:
        run = next((r for r in g.study.arm_runs(arm) if r.config), None)
        if run is not None and role(run)[0] == want[0] and (want[1] is None or role(run)[1] == want[1]):
            return arm
    return None


def _stat(g: Group, arm: str | None):
    if arm is None or g.analysis is None:
        return None
    return g.analysis.arm_stat(g.analysis.primary, arm)


def _verdict(ctx: Any, g: Group, name: str) -> tuple[str | None, str]:
    """(verdict word key, text) of a role's arm vs the protocol's reference on the primary metric."""
    arm = _arm_of(g, name)
    st = _stat(g, arm)
    if st is None or g.analysis is None:
        return None, f"`{ROLES[name][1] or name}`: {_t(ctx.lang, 'missing')}"
    sub = Ctx(g.study, g.analysis, ctx.lang)
    if arm == g.reference:
        return "reference", f"`{arm}`"
    m = g.analysis.primary
    return st.verdict, _t(ctx.lang, "vs", arm=arm, cell=comparison_cell(st.vs_ref, m),
                          verdict=verdict_phrase(sub, st.vs_ref, m, st.verdict, short=True))


def _holds(ctx: Any, ok: bool | None) -> str:
    return _t(ctx.lang, "untested" if ok is None else "holds" if ok else "fails")


def _claim_alike(ctx: Any, g: Group) -> tuple[bool | None, str]:
    parts = [_verdict(ctx, g, n) for n in ("frozen_then_unfrozen", "finetune")]
    words = [w for w, _ in parts]
    ok = None if any(w in (None, "insufficient") for w in words) else not any(w in ("better", "worse") for w in words)
    return ok, "; ".join(text for _, text in parts)


def _claim_nofreeze_best(ctx: Any, g: Group) -> tuple[bool | None, str]:
    word, text = _verdict(ctx, g, "finetune")
    claim = g.analysis.best.get(g.analysis.primary.key) if g.analysis else None
    best = claim.arm if claim is not None and claim.decided else None
    ok = None if word in (None, "insufficient") else word == "better"
    return ok, f"{text}; {_t(ctx.lang, 'best_is', arm=best)}" if best else text


def _claim_loss(ctx: Any, g: Group) -> tuple[bool | None, str]:
    word, text = _verdict(ctx, g, "finetune")
    return (None if word in (None, "insufficient") else word == "worse"), text


def _claim_no_skill(ctx: Any, g: Group) -> tuple[bool | None, str]:
    a = g.analysis
    if a is None:
        return None, "—"
    sub = Ctx(g.study, a, ctx.lang)
    m = a.primary
    skills = [a.arm_stat(m, arm).skill for arm in g.arms if a.arm_stat(m, arm).summary.n]
    base = next((a.arm_stat(m, arm).baseline for arm in g.arms if a.arm_stat(m, arm).baseline), None)
    parts = []
    if base is not None:
        parts.append(_t(ctx.lang, "skill", b=base[0], groups=_groups(sub, m, "skill")))
    if not skills or base is None or any(s in (None, "insufficient") for s in skills):
        return None, "; ".join(parts) or "—"
    return not any(s == "better" for s in skills), "; ".join(parts)


def _claim_corr_zero(ctx: Any, g: Group) -> tuple[bool | None, str]:
    """Holds when every arm's 95 % interval of test corr (descriptive, analysis.py) reaches ±CORR_ZERO."""
    a = g.analysis
    corr = next((x for x in a.metrics if x.name.rsplit("/", 1)[-1] == "corr"), None) if a else None
    if a is None or corr is None:
        return None, "—"
    stats = [a.arm_stat(corr, arm) for arm in g.arms if a.arm_stat(corr, arm).summary.n]
    if not stats:
        return None, "—"
    parts, near = [], []
    for st in stats:
        lo, hi = st.interval()
        has = math.isfinite(lo) and math.isfinite(hi)
        value = f"{doc.brief(st.summary.mean)} {doc.interval(lo, hi, doc.brief)}" if has else doc.brief(st.summary.mean)
        parts.append(_t(ctx.lang, "corr_arm", arm=st.arm, value=value))
        near.append(lo <= CORR_ZERO and hi >= -CORR_ZERO if has else abs(st.summary.mean) <= CORR_ZERO)
    return all(near), "; ".join(parts)


def _claim_random(ctx: Any, g: Group) -> tuple[bool | None, str]:
    word, text = _verdict(ctx, g, "random_init")
    return (None if word in (None, "insufficient") else True), text


CLAIMS = (("c_alike", _claim_alike), ("c_nofreeze_best", _claim_nofreeze_best), ("c_corr_zero", _claim_corr_zero),
          ("c_no_skill", _claim_no_skill), ("c_loss_16x", _claim_loss), ("c_random", _claim_random))


def claims(ctx: Any, groups: list[Group]) -> list[dict[str, Any]]:
    """Per seed claim: per protocol (holds?, evidence) and whether it survives the corrected protocol."""
    out = []
    corrected = next((g for g in groups if g.kind == "corrected"), None)
    for key, fn in CLAIMS:
        per = {i: fn(ctx, g) for i, g in enumerate(groups)}
        ok = fn(ctx, corrected)[0] if corrected is not None else None
        out.append({"claim": key, "per_protocol": per, "survives": ok})
    return out


def _name(ctx: Any, g: Group) -> str:
    return _t(ctx.lang, g.kind)


def _measured(ctx: Any, g: Group) -> str:
    """What one protocol's runs recorded: targets visible in the input, time-sharing leak, look-ahead."""
    visible = leaked = ahead = hours = 0.0
    for r in g.study.runs:
        m = r.summary.get("masking") if isinstance(r.summary.get("masking"), dict) else {}
        for split in (m.get("splits") or {}).values():
            for v in (split or {}).values() if isinstance(split, dict) else ():
                if isinstance(v, dict) and v.get("targets"):
                    visible = max(visible, float(v.get("visible_targets", 0)) / float(v["targets"]))
                    leaked = max(leaked, float(v.get("leaked_fraction", 0) or 0))
        legacy = (r.summary.get("data") or {}).get("legacy") or {}
        ahead = max([ahead, *[float(x) for x in (legacy.get("look_ahead_share") or {}).values()]])
        hours = max([hours, *[float(x) / 60 for x in (legacy.get("look_ahead_max_minutes") or {}).values()]])
    pct = lambda x: f"{100 * x:.0f} %"  # noqa: E731
    return _t(ctx.lang, "measured_line", name=_name(ctx, g), visible=pct(visible), leaked=pct(leaked),
              ahead=pct(ahead), hours=f"{hours:.0f}")


def ts_replication_section(ctx: Any, groups: list[Group]) -> list[doc.Block]:
    """The claims table, what each protocol measured, and every other protocol's arm table and masking."""
    if len(groups) < 2:
        return []
    lang = ctx.lang
    blocks: list[doc.Block] = [doc.Heading(2, _t(lang, "title")),
                               doc.Para(_t(lang, "intro", n=len(groups), seed=SEED_RUN))]
    lines = [_t(lang, "protocol_line", name=_name(ctx, g), arms=", ".join(f"`{a}`" for a in g.arms), ref=g.reference,
                options=", ".join(f"`{o}`" for o in g.options) or _t(lang, "no_options")) for g in groups]
    blocks.append(doc.Bullets(lines))
    header = [_t(lang, "h_claim"), *[_name(ctx, g) for g in groups], _t(lang, "h_survives")]
    rows = []
    for c in claims(ctx, groups):
        answer = c["claim"] == "c_random"  # not a claim: a question the seed could not answer
        cells = [f"{_t(lang, 'answered') if answer and ok else _holds(ctx, ok)}: {text}"
                 for ok, text in c["per_protocol"].values()]
        ok = c["survives"]
        word = "untested" if ok is None else ("answered" if answer else "yes" if ok else "no")
        rows.append([_t(lang, c["claim"]), *cells, _t(lang, word)])
    blocks.append(doc.Table(header, rows))
    blocks.append(doc.Para(_t(lang, "measured", lines="; ".join(_measured(ctx, g) for g in groups) + ".")))
    for g in groups[1:]:
        if g.analysis is None:
            continue
        sub = Ctx(g.study, g.analysis, lang)
        blocks += [doc.Heading(3, _t(lang, "group_title", name=_name(ctx, g), ref=g.reference)), headline_table(sub)]
        blocks += [b if not isinstance(b, doc.Heading) else doc.Heading(4, b.text) for b in masking_section(sub)]
    blocks += arms_table(ctx, groups, lambda g: _name(ctx, g))
    return blocks


def ts_replication_json(ctx: Any, groups: list[Group]) -> dict[str, Any]:
    """Machine-readable claims: per protocol holds (true/false/null) and the evidence text."""
    return {"protocols": [{"kind": g.kind, "options": list(g.options), "arms": g.arms, "reference": g.reference}
                          for g in groups],
            "claims": [{"claim": c["claim"], "survives": c["survives"],
                        "per_protocol": [{"holds": ok, "evidence": text} for ok, text in c["per_protocol"].values()]}
                       for c in claims(ctx, groups)]}
