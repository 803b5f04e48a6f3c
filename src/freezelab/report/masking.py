"""The masking figures of time-series runs: a table and the headline leak / out-of-band warnings.

Reads only the ``masking`` entry of each run's summary.json (docs/run-folder.md): per split and timeframe,
the share of bars that are targets (scored) and hidden (blanked, not scored), the targets that share time
with a visible bar, and the aggregation oracle against linear interpolation (docs/timeseries-masking.md).
Run folders are untrusted: a malformed entry is skipped and named, never a crash.
"""

from __future__ import annotations

import math
from typing import Any

from freezelab.report import document as doc
from freezelab.report.aggregate import Run, Study
from freezelab.report.analysis import Finding

ORACLE_TOLERANCE = 1e-6  # as in the task: an oracle gain above this means visible bars reveal targets
SPLITS = ("train", "val", "test")

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "masking": "Masking",
        "masking_note": "Scheme `{scheme}`, declared target ratio per timeframe {ratio}. Targets are the masked bars that are scored; hidden bars are blanked in the input but not scored. A leak-free scheme has 0 targets sharing time with a visible bar and an aggregation oracle (visible bars only) no better than linear interpolation (oracle gain ≤ 0). Band: target fraction within {lo}×–{hi}× the declared ratio. Figures of run `{run}` (val/test masks are identical for every run; train: epoch-1 masks).",  # noqa: E501
        "masking_disjoint": "Scheme `disjoint`: coarse-timeframe targets lie before every finer window, so their skill measures reconstruction of the deeper past from same-timeframe and coarser context, not of the recent bars under the finer windows.",  # noqa: E501
        "m_split": "Split", "m_tf": "TF", "m_declared": "Declared", "m_target": "Target fraction",
        "m_hidden": "Hidden fraction", "m_leaked": "Targets sharing time with a visible bar",
        "m_oracle": "Oracle MSE", "m_interp": "Interpolation MSE", "m_gain": "Oracle gain",
        "m_differs": "Runs disagree on the val/test masking figures ({runs}): their masks differ.",
        "w_mask_leak": "MASK LEAK (scheme {schemes}): masked bars share time with visible bars, so visible bars reveal them; skill on these timeframes is not reconstruction. Per timeframe, worst over runs and splits, share of targets sharing time with a visible bar / aggregation-oracle gain over interpolation: {figures}. Use masking.scheme: disjoint (see the masking section).",  # noqa: E501
        "w_mask_band": "MASKED FRACTION OUT OF BAND (scheme {schemes}): the target fraction leaves {lo}×–{hi}× the declared ratio; per timeframe, furthest over runs and splits (declared): {figures}.",  # noqa: E501
        "w_mask_unmeasured": "No masking figures in {runs} (older freezelab): leaks and masked fractions are unknown; rerun them.",  # noqa: E501
        "w_mask_inputs": "INPUTS NOT MASKED (masking.mask_inputs: false) in {arms}: the true values of the scored bars reach the model input ({share} of targets visible), so their scores measure copying, not reconstruction (the original's defect, spec flaw 2). Never compare them with masked runs as results.",  # noqa: E501
        "m_unmasked": "This run does not mask its inputs (masking.mask_inputs: false): every target is visible in the input, so the oracle and interpolation read the targets themselves.",  # noqa: E501
    },
    "ja": {
        "masking": "マスキング",
        "masking_note": "方式 `{scheme}`、時間足ごとの宣言ターゲット比率 {ratio}。ターゲット = 採点されるマスク足、隠し足 = 入力ではマスクするが採点しない足。リークのない方式では、可視の足と時間を共有するターゲットが 0 で、可視の足だけを使う集約オラクルが線形補間より良くならない（オラクル改善 ≤ 0）。許容帯: ターゲット比率が宣言値の {lo}×–{hi}×。ラン `{run}` の値（val/test のマスクは全ランで同一、train はエポック 1 のマスク）。",  # noqa: E501
        "masking_disjoint": "方式 `disjoint`: 粗い時間足のターゲットはすべての細かい時間足のウィンドウより前にあるため、その性能は直近の足ではなく、同じ時間足とより粗い時間足の文脈からの過去の復元を測る。",  # noqa: E501
        "m_split": "分割", "m_tf": "時間足", "m_declared": "宣言値", "m_target": "ターゲット比率",
        "m_hidden": "隠し足比率", "m_leaked": "可視の足と時間を共有するターゲット",
        "m_oracle": "オラクル MSE", "m_interp": "線形補間 MSE", "m_gain": "オラクル改善",
        "m_differs": "val/test のマスキング値がランごとに異なる（{runs}）: マスクが一致していない。",
        "w_mask_leak": "マスクのリーク（方式 {schemes}）: マスクした足が可視の足と時間を共有し、可視の足から復元できる。これらの時間足の性能は復元能力ではない。時間足ごとに全ラン・全分割で最悪の値、可視の足と時間を共有するターゲットの割合 / 集約オラクルの線形補間に対する改善: {figures}。masking.scheme: disjoint を使うこと（マスキングの節を参照）。",  # noqa: E501
        "w_mask_band": "マスク比率が許容帯の外（方式 {schemes}）: ターゲット比率が宣言値の {lo}×–{hi}× を外れる。時間足ごとに最も外れた値（宣言値）: {figures}。",  # noqa: E501
        "w_mask_unmeasured": "{runs} にマスキングの記録がない（旧版 freezelab）: リークとマスク比率は不明。再実行すること。",  # noqa: E501
        "w_mask_inputs": "入力がマスクされていない（masking.mask_inputs: false）: {arms}。採点される足の真値がモデル入力に入る（ターゲットの {share} が可視）ため、その性能は復元ではなくコピーを測る（元の研究の欠陥、spec の欠陥 2）。マスクしたランと結果として比較しないこと。",  # noqa: E501
        "m_unmasked": "このランは入力をマスクしない（masking.mask_inputs: false）: すべてのターゲットが入力で可視なので、オラクルと線形補間はターゲットそのものを読む。",  # noqa: E501
    },
}


def _entry(run: Run) -> dict[str, Any] | None:
    """The run's ``masking`` entry if it has the expected shape, else None."""
    m = run.summary.get("masking")
    if not isinstance(m, dict) or not isinstance(m.get("splits"), dict) or not isinstance(m.get("ratio"), dict):
        return None
    return m


def _figure(v: Any, key: str) -> float:
    x = v.get(key) if isinstance(v, dict) else None
    return float(x) if isinstance(x, (int, float)) and math.isfinite(float(x)) else math.nan


def _per_tf(m: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(split, tf, figures) rows of one entry in split order, skipping malformed parts."""
    out = []
    for split in SPLITS:
        per_tf = m["splits"].get(split)
        if isinstance(per_tf, dict):
            out += [(split, tf, v) for tf, v in per_tf.items() if isinstance(v, dict)]
    return out


def _pct(x: float) -> str:
    return "—" if not math.isfinite(x) else f"{100 * x:.0f} %"


def _gain(x: float) -> str:
    """An oracle gain: 0 within rounding (a leak-free scheme gives exactly interpolation), else signed."""
    return "—" if not math.isfinite(x) else "0" if abs(x) <= ORACLE_TOLERANCE else f"{x:+.3f}"


def _unmasked_share(m: dict[str, Any]) -> float:
    """Share of targets whose own value reaches the input (``mask_inputs: false``); 0 for masked runs."""
    rows = _per_tf(m)
    visible = sum(_figure(v, "visible_targets") for _, _, v in rows if math.isfinite(_figure(v, "visible_targets")))
    targets = sum(_figure(v, "targets") for _, _, v in rows if math.isfinite(_figure(v, "targets")))
    if m.get("mask_inputs") is False:
        return visible / targets if visible and targets else 1.0
    return visible / targets if targets else 0.0


def masking_findings(study: Study) -> list[Finding]:
    """Headline findings over every run: unmasked inputs, leaks (with the measured figures) and fractions
    out of band."""
    leak: dict[str, tuple[float, float]] = {}  # tf -> worst (leaked share, oracle gain) over runs and splits
    band: dict[str, tuple[float, float]] = {}  # tf -> (target fraction furthest from the declared ratio, ratio)
    schemes: set[str] = set()
    unmasked: dict[str, float] = {}  # arm -> largest share of targets visible in the input
    lo, hi, unmeasured = 0.5, 2.0, []
    for run in study.runs:
        m = _entry(run)
        if m is None:
            if study.task == "timeseries" and run.ok:
                unmeasured.append(f"`{run.arm}` s{run.seed}")
            continue
        share = _unmasked_share(m)
        if share > 0:  # every target is visible: that is its leak (its own warning), not time sharing
            unmasked[run.arm] = max(unmasked.get(run.arm, 0.0), share)
        if isinstance(m.get("band"), list) and len(m["band"]) == 2:
            lo, hi = (float(x) for x in m["band"])
        for _, tf, v in _per_tf(m):
            leaked, gain = _figure(v, "leaked_fraction"), _figure(v, "oracle_gain")
            if share == 0 and (_figure(v, "leaked_targets") > 0 or gain > ORACLE_TOLERANCE):
                old = leak.get(tf, (-math.inf, -math.inf))
                leak[tf] = (max(old[0], leaked), max(old[1], gain))
                schemes.add(str(m.get("scheme")))
            rho, frac = _figure(m["ratio"], tf), _figure(v, "target_fraction")
            if rho > 0 and math.isfinite(frac) and not lo * rho <= frac <= hi * rho:
                far = band.get(tf, (rho, rho))[0]
                band[tf] = (frac if abs(math.log(max(frac, 1e-9) / rho)) > abs(math.log(far / rho)) else far, rho)
                schemes.add(str(m.get("scheme")))
    found = []
    if unmasked:
        arms = [a for a in study.arms if a in unmasked]
        found.append(Finding("mask_inputs", {"arms": ", ".join(f"`{a}`" for a in arms),
                                             "share": _pct(max(unmasked.values()))}))
    names = ", ".join(f"`{s}`" for s in sorted(schemes))
    if leak:
        figures = "; ".join(f"{tf} {_pct(s)} / {_gain(g)}" for tf, (s, g) in leak.items())
        found.append(Finding("mask_leak", {"schemes": names, "figures": figures}))
    if band:
        figures = "; ".join(f"{tf} {_pct(f)} ({_pct(r)})" for tf, (f, r) in band.items())
        found.append(Finding("mask_band", {"schemes": names, "figures": figures, "lo": f"{lo:g}", "hi": f"{hi:g}"}))
    if unmeasured:
        every = len(unmeasured) == sum(1 for r in study.runs if r.ok)
        found.append(Finding("mask_unmeasured", {"runs": "every run" if every else ", ".join(unmeasured)}))
    return found


def masking_section(ctx: Any) -> list[doc.Block]:
    """The masking figures per split and timeframe of one run (the reference arm's first), or nothing."""
    s = ctx.study
    runs = [r for r in s.runs if r.ok and _entry(r)] or [r for r in s.runs if _entry(r)]
    if not runs:
        return []
    runs.sort(key=lambda r: (r.arm != s.reference, r.seed))
    run, m = runs[0], _entry(runs[0])
    ratio = ", ".join(f"{tf} {_pct(_figure(m['ratio'], tf))}" for tf in m["ratio"])
    band = m.get("band") if isinstance(m.get("band"), list) and len(m["band"]) == 2 else [0.5, 2.0]
    blocks: list[doc.Block] = [doc.Heading(2, ctx.t("masking")), doc.Para(ctx.t(
        "masking_note", scheme=m.get("scheme"), ratio=ratio, lo=f"{band[0]:g}", hi=f"{band[1]:g}", run=run.run_id))]
    if m.get("scheme") == "disjoint":
        blocks.append(doc.Para(ctx.t("masking_disjoint")))
    if _unmasked_share(m) > 0:
        blocks.append(doc.Para(ctx.t("m_unmasked")))
    rows = []
    for split, tf, v in _per_tf(m):
        leaked, share = _figure(v, "leaked_targets"), _figure(v, "leaked_fraction")
        rows.append([split, tf, _pct(_figure(m["ratio"], tf)), _pct(_figure(v, "target_fraction")),
                     _pct(_figure(v, "hidden_fraction")), f"{doc.count(leaked)} ({_pct(share)})",
                     doc.num(_figure(v, "oracle_mse")), doc.num(_figure(v, "interpolation_mse")),
                     _gain(_figure(v, "oracle_gain"))])
    header = [ctx.t(k) for k in ("m_split", "m_tf", "m_declared", "m_target", "m_hidden", "m_leaked", "m_oracle",
                                "m_interp", "m_gain")]
    blocks += doc.split_table(header, rows, keep=2, max_columns=9)
    differs = _differing(runs)
    if differs:
        blocks.append(doc.Para(ctx.t("m_differs", runs=", ".join(differs))))
    return blocks


def _differing(runs: list[Run]) -> list[str]:
    """Runs whose val/test figures differ from the first run's (their eval masks differ)."""
    def key(run: Run) -> str:
        m = _entry(run) or {}
        return repr([(sp, tf, sorted(v.items())) for sp, tf, v in _per_tf(m) if sp != "train"])
    first = key(runs[0])
    return [f"{r.arm}/s{r.seed}" for r in runs[1:] if key(r) != first]
