"""How the seed's headline "−72 % PPL" decomposes: an LM study whose arms ran on different data or protocols.

The seed (cvfp-lm.md §7, §9 row 1) compared its frozen tied head on full conversations (val PPL 334.31, N = 500)
with an "embedding trained" arm that was another script: an untied zero-init head with bias, trained on first
user turns only, with its own validation rows and a full-N diversity term (1,189.15), and reported −71.9 %.
A replication study (examples/replicate-embedding-freeze*.yaml) runs that comparison as it was run, the same two
heads on identical data, and the corrected protocol's tied_frozen vs tied_trainable. This module reads the run
folders only: every arm's *role* comes from its resolved ``config.yaml`` (head, text, protocol, freezing), never
from its name, and arms are grouped by protocol and evaluation data (the split and eval hashes in summary.json),
so each group is analysed on its own items (``protocols.analyse_groups``) and never paired across groups.

The decomposition, on the primary metric, in log units (shown as % change of the tied/frozen arm's PPL):

    as-run gap      seed_tied vs as_run_untied       different items: descriptive, no verdict
    identical data  seed_tied vs seed_untied         paired on the same items: interval and verdict
    data confound   as-run gap − identical data      descriptive (the difference of the two)
    freezing        tied_frozen vs tied_trainable    corrected protocol, paired: interval and verdict
    head + protocol identical data − freezing        descriptive (different protocols and items)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from freezelab.report import document as doc
from freezelab.report.aggregate import Run, Study
from freezelab.report.headline import comparison_cell, headline_table
from freezelab.report.i18n import lookup, t
from freezelab.report.protocols import Group, arms_table, faithful_options, get_key, split_by
from freezelab.report.sections import Ctx

# (dotted key, values that are the original's behaviour): the seed protocol's faithful options
FAITHFUL_LM: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("context.reset", ("stream",)), ("context.wraparound", (True,)), ("context.cache", ("online", "per_epoch")),
    ("data.split", ("token_fraction",)), ("model.embed_norm", ("trainable_shared",)),
    ("phase2.order", ("contiguous",)), ("phase1.er", ("legacy",)))
SEED_TIED, SEED_UNTIED = 334.31, 1189.15  # the seed's N = 500 val PPLs (cvfp-lm.md §7)
ROLES = ("seed_tied", "as_run_untied", "seed_untied", "tied_frozen", "tied_trainable")

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Replication: how the seed's −72 % PPL decomposes",
        "intro": "The seed reported −71.9 % val PPL for its frozen tied head ({tied} on full conversations) against an \"embedding trained\" arm ({untied}) that was an untied zero-init head with bias trained on first user turns, with its own validation rows and a full-N diversity term (cvfp-lm.md §9 row 1). The arms below are grouped by protocol and evaluation data; a comparison inside a group is paired on the same items and carries the report's interval (Holm, as in the comparison section) and verdict; a comparison across groups was scored on different items and is descriptive only. Δ is the change of the first arm's {metric} against the second's.",  # noqa: E501
        "group_line": "**{name}** ({options}; split/eval hashes `{data}`): {arms}.",
        "seed_protocol": "seed protocol", "corrected": "corrected protocol", "no_options": "no faithful option",
        "full_text": "full text", "first_turns": "first turns",
        "h_part": "Component", "h_arms": "Arms (first vs second)", "h_delta": "Δ {metric}: first vs second",
        "h_ci": "Interval",
        "h_reading": "Reading",
        "as_run": "As-run gap (the seed's comparison)", "identical": "Left on identical data (head + freezing)",
        "data": "Data confound (as-run − identical)", "freezing": "Freezing itself (corrected protocol)",
        "head": "Head and protocol (identical − freezing)",
        "descriptive": "descriptive: scored on different items, no verdict",
        "seed_value": "seed: -71.9%", "missing": "arm missing",
        "paired": "paired on {n} seeds' items: `{arm}` {verdict}",
        "other_way": "the same comparison read the other way round, `{arm}` vs `{ref}`, is {cell} in the arm tables",
        "reading": "**Reading:** of the as-run gap ({as_run}), {identical} is left when both heads see identical data (paired); the rest, {data} (the ratios multiply), is the data confound: text format, volume and validation rows, {share} of the gap in log {metric}. Under the corrected protocol, freezing the tied embedding itself changes {metric} by {freezing}.",  # noqa: E501
        "partial": "**Reading:** some arms of the decomposition are missing ({missing}); the rows without them are left out.",  # noqa: E501
        "group_title": "Group {name}: arms vs `{ref}`",
    },
    "ja": {
        "title": "再現: 元の研究の −72 % PPL の内訳",
        "intro": "元の研究は、凍結した重み共有ヘッド（会話全文、{tied}）と「Embedding を学習」したアーム（{untied}）を比べて val PPL −71.9 % と報告した。後者は実際には、最初のユーザー発話だけで学習したゼロ初期化・バイアス付きの非共有ヘッドで、検証行も別、Phase 1 の多様性項も全 N 行だった（cvfp-lm.md §9 行 1）。以下のアームはプロトコルと評価データごとにまとめる。同じグループ内の比較は同じ評価項目で対応がとれ、本レポートの区間（比較分析と同じ Holm）と判定を持つ。グループをまたぐ比較は別の項目で採点されているため記述のみ。Δ は 1 番目のアームの {metric} の 2 番目に対する変化。",  # noqa: E501
        "group_line": "**{name}**（{options}、split/eval ハッシュ `{data}`）: {arms}。",
        "seed_protocol": "元のプロトコル", "corrected": "修正版プロトコル", "no_options": "再現オプションなし",
        "full_text": "全文", "first_turns": "最初の発話",
        "h_part": "成分", "h_arms": "アーム（1 番目 対 2 番目）", "h_delta": "Δ {metric}: 1 番目 対 2 番目",
        "h_ci": "区間", "h_reading": "読み",
        "as_run": "実行時の差（元の研究の比較）", "identical": "同一データで残る差（ヘッド + 凍結）",
        "data": "データの交絡（実行時 − 同一データ）", "freezing": "凍結そのもの（修正版プロトコル）",
        "head": "ヘッドとプロトコル（同一データ − 凍結）",
        "descriptive": "記述のみ: 別の項目で採点、判定なし",
        "seed_value": "元の研究: -71.9%", "missing": "アームなし",
        "paired": "{n} シードの項目で対応: `{arm}` が{verdict}",
        "other_way": "同じ比較を逆向きに読むと `{arm}` 対 `{ref}` で {cell}（アーム表の値）",
        "reading": "**読み:** 実行時の差（{as_run}）のうち、両ヘッドが同一データを見ると {identical} が残る（対応あり）。残り {data}（比は掛け合わされる）はデータの交絡（テキスト形式・量・検証行）で、log {metric} で差の {share}。修正版プロトコルでは、重み共有 Embedding の凍結そのものが {metric} を {freezing} 変える。",  # noqa: E501
        "partial": "**読み:** 内訳に必要なアームの一部がない（{missing}）。それを使う行は省いた。",
        "group_title": "グループ {name}: アーム 対 `{ref}`",
    },
}


def _t(lang: str, key: str, **params: object) -> str:
    return lookup(STRINGS, lang, key, **params)


def lm_protocol(run: Run) -> tuple[str, ...]:
    """The seed-protocol options a run's resolved config turns on, as ``key=value`` (empty: corrected)."""
    return faithful_options(run, FAITHFUL_LM)


def lm_role(run: Run) -> str | None:
    """What an arm is in the decomposition, from its resolved config (None: not part of it)."""
    c = run.config
    if (get_key(c, "model.kind") or "cvfp") != "cvfp":
        return None
    tied, frozen = get_key(c, "model.head.tie") is not False, get_key(c, "embedding.freeze") is not False
    legacy_head = not tied and get_key(c, "model.head.init") == "zeros" and bool(get_key(c, "model.head.bias"))
    seed, first_turn = bool(lm_protocol(run)), get_key(c, "data.text") == "first_turn"
    if legacy_head and frozen:
        return "as_run_untied" if first_turn else "seed_untied" if seed else None
    if tied and not first_turn:
        return ("seed_tied" if frozen else None) if seed else ("tied_frozen" if frozen else "tied_trainable")
    return None


def _data_key(run: Run) -> str:
    hashes = run.summary.get("hashes") or {}
    return f"{str(hashes.get('split_hash'))[:8]}/{str(hashes.get('eval_hash'))[:8]}"


def lm_groups(study: Study) -> list[Group]:
    """The study's (protocol, evaluation data) groups, the reference's first; [] unless an LM study has arms under
    the seed protocol or on first turns, in more than one group. A group's reference is the study's in its own
    group, else its tied frozen arm (an ordinary study with a data confound keeps one analysis and its warning)."""
    first = {arm: next((r for r in study.arm_runs(arm) if r.config and r.summary), None) for arm in study.arms}

    def key(run: Run) -> tuple[str, ...]:
        return (*lm_protocol(run), f"data={_data_key(run)}")

    def pick(arms: list[str]) -> str:
        return next((a for a in arms if first[a] is not None and lm_role(first[a]) in ("seed_tied", "tied_frozen")),
                    arms[0])  # type: ignore[arg-type]

    runs = [r for r in first.values() if r is not None]
    replicates = any(lm_protocol(r) or get_key(r.config, "data.text") == "first_turn" for r in runs)
    return split_by(study, key, pick, first, n_faithful=len(FAITHFUL_LM)) if study.task == "lm" and replicates else []


# ----------------------------------------------------------------------------- the decomposition
@dataclass
class Part:
    """One row: the first arm's change against the second's, in log units of the primary metric."""

    key: str
    arms: tuple[str, str]
    log_delta: float
    lo: float = math.nan
    hi: float = math.nan
    verdict: str | None = None  # of the first arm vs the second (paired rows only)
    n: int = 0
    table_view: tuple[str, str, str] | None = None  # (arm, ref, cell) where the group's table reads it reversed

    @property
    def paired(self) -> bool:
        return self.verdict is not None


FLIP = {"better": "worse", "worse": "better"}


def _roles(groups: list[Group]) -> dict[str, tuple[str, Group]]:
    out: dict[str, tuple[str, Group]] = {}
    for g in groups:
        for arm in g.arms:
            run = next((r for r in g.study.arm_runs(arm) if r.config and r.summary), None)
            role = lm_role(run) if run is not None else None
            if role is not None and role not in out:
                out[role] = (arm, g)
    return out


def _mean_log(g: Group, arm: str, key: str) -> float:
    values = [v for v in g.study.values(key, arm).values() if v > 0]
    return sum(math.log(v) for v in values) / len(values) if values else math.nan


def _paired(key: str, first: tuple[str, Group], second: tuple[str, Group]) -> Part | None:
    """first vs second inside one group, from that group's analysis (which compares arms with its reference)."""
    (a, g), (b, g2) = first, second
    if g is not g2 or g.analysis is None:
        return None
    m = g.analysis.primary
    if b == g.reference:
        c, sign = g.analysis.arm_stat(m, a).vs_ref, 1.0
        verdict = g.analysis.arm_stat(m, a).verdict
    else:
        c, sign = g.analysis.arm_stat(m, b).vs_ref, -1.0
        verdict = FLIP.get(g.analysis.arm_stat(m, b).verdict, g.analysis.arm_stat(m, b).verdict)
    if c is None or not c.diffs:
        return None
    lo, hi = sorted((sign * c.lo, sign * c.hi))
    view = (b, a, comparison_cell(c, m)) if sign < 0 else None  # the group table shows b vs its reference a
    return Part(key, (a, b), sign * c.estimate.value, lo, hi, verdict, len(c.diffs), view)


def decompose(groups: list[Group]) -> tuple[list[Part], list[str]]:
    """The decomposition rows that the study's arms allow, and the roles that are missing."""
    roles = _roles(groups)
    missing = [r for r in ROLES if r not in roles]
    if not groups or groups[0].analysis is None:
        return [], missing
    key = groups[0].analysis.primary.key
    parts: dict[str, Part] = {}
    if "seed_tied" in roles and "as_run_untied" in roles:
        (a, ga), (b, gb) = roles["seed_tied"], roles["as_run_untied"]
        parts["as_run"] = Part("as_run", (a, b), _mean_log(ga, a, key) - _mean_log(gb, b, key))
    if "seed_tied" in roles and "seed_untied" in roles:
        found = _paired("identical", roles["seed_tied"], roles["seed_untied"])
        if found is not None:
            parts["identical"] = found
    if "as_run" in parts and "identical" in parts:
        parts["data"] = Part("data", parts["as_run"].arms, parts["as_run"].log_delta - parts["identical"].log_delta)
    if "tied_frozen" in roles and "tied_trainable" in roles:
        found = _paired("freezing", roles["tied_frozen"], roles["tied_trainable"])
        if found is not None:
            parts["freezing"] = found
    if "identical" in parts and "freezing" in parts:
        parts["head"] = Part("head", parts["identical"].arms,
                             parts["identical"].log_delta - parts["freezing"].log_delta)
    order = ("as_run", "identical", "data", "freezing", "head")
    return [parts[k] for k in order if k in parts], missing


# ----------------------------------------------------------------------------- rendering
def _pct(x: float) -> str:
    return doc.pct(math.expm1(x) * 100) if math.isfinite(x) else "—"


def _share(part: float, whole: float) -> str:
    """A part of a log gap as a share of it, e.g. 76 %."""
    return f"{100 * part / whole:.0f} %" if math.isfinite(part) and abs(whole) > 1e-12 else "—"


def _group_name(lang: str, g: Group) -> str:
    """'seed protocol, first turns', 'corrected protocol, full text', ...: what tells the groups apart."""
    run = next((r for r in g.study.runs if r.config), None)
    text = "first_turns" if run is not None and get_key(run.config, "data.text") == "first_turn" else "full_text"
    name = "seed_protocol" if any(not o.startswith("data=") for o in g.options) else "corrected"
    return f"{_t(lang, name)}{'、' if lang == 'ja' else ', '}{_t(lang, text)}"


def lm_replication_section(ctx: Any, groups: list[Group]) -> list[doc.Block]:
    """The decomposition table and reading, the groups, and every other group's arm table."""
    if len(groups) < 2 or groups[0].analysis is None:
        return []
    lang, m = ctx.lang, groups[0].analysis.primary
    blocks: list[doc.Block] = [doc.Heading(2, _t(lang, "title")),
                               doc.Para(_t(lang, "intro", tied=SEED_TIED, untied=f"{SEED_UNTIED:,.2f}", metric=m.key))]
    lines = []
    for g in groups:
        options = [o for o in g.options if not o.startswith("data=")]
        lines.append(_t(lang, "group_line", name=_group_name(lang, g), data=g.options[-1].removeprefix("data="),
                        arms=", ".join(f"`{a}`" for a in g.arms),
                        options=", ".join(f"`{o}`" for o in options) or _t(lang, "no_options")))
    blocks.append(doc.Bullets(lines))
    parts, missing = decompose(groups)
    rows = []
    for p in parts:
        if p.paired:
            ci = doc.interval(p.lo, p.hi, _pct)
            reading = _t(lang, "paired", n=p.n, arm=p.arms[0], verdict=t(lang, f"v_{p.verdict}"))
            if p.table_view is not None:  # the same comparison, as the arm tables read it
                arm, ref, cell = p.table_view
                reading += "; " + _t(lang, "other_way", arm=arm, ref=ref, cell=cell, metric=m.key)
        else:
            ci, reading = "—", _t(lang, "descriptive")
        if p.key == "as_run":
            reading += f"; {_t(lang, 'seed_value')}"
        arms = f"`{p.arms[0]}` vs `{p.arms[1]}`" if p.key not in ("data", "head") else "—"
        rows.append([_t(lang, p.key), arms, _pct(p.log_delta), ci, reading])
    if rows:
        header = [_t(lang, "h_part"), _t(lang, "h_arms"), _t(lang, "h_delta", metric=m.key), _t(lang, "h_ci"),
                  _t(lang, "h_reading")]
        blocks.append(doc.Table(header, rows))
    by = {p.key: p for p in parts}
    if all(k in by for k in ("as_run", "identical", "data", "freezing")):
        blocks.append(doc.Para(_t(lang, "reading", as_run=_pct(by["as_run"].log_delta),
                                  identical=_pct(by["identical"].log_delta), data=_pct(by["data"].log_delta),
                                  freezing=_pct(by["freezing"].log_delta), metric=m.key,
                                  share=_share(by["data"].log_delta, by["as_run"].log_delta))))
    elif missing:
        blocks.append(doc.Para(_t(lang, "partial", missing=", ".join(missing))))
    for g in groups[1:]:
        if g.analysis is not None:
            sub = Ctx(g.study, g.analysis, lang)
            blocks += [doc.Heading(3, _t(lang, "group_title", name=_group_name(lang, g), ref=g.reference)),
                       headline_table(sub)]
    blocks += arms_table(ctx, groups, lambda g: _group_name(lang, g))
    return blocks


def lm_replication_json(groups: list[Group]) -> dict[str, Any]:
    """Machine-readable groups and decomposition (log units and % change; intervals only where paired)."""
    parts, missing = decompose(groups)
    return {"groups": [{"options": list(g.options), "arms": g.arms, "reference": g.reference} for g in groups],
            "decomposition": [{"component": p.key, "arms": list(p.arms), "log_delta": p.log_delta,
                               "change": math.expm1(p.log_delta), "paired": p.paired,
                               "interval": [math.expm1(p.lo), math.expm1(p.hi)] if p.paired else None,
                               "verdict": p.verdict, "seeds": p.n} for p in parts],
            "missing_roles": missing, "seed": {"tied": SEED_TIED, "untied": SEED_UNTIED}}
