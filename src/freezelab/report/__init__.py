"""The comparison report (experiment-protocol.md §7): run folders in, Markdown / HTML / CSV / plots out.

    from freezelab.report import write_report
    paths = write_report(Path("out/embedding-freeze"), lang="ja")
    freezelab.report("out/embedding-freeze", lang="ja")   # the same: the package is callable

Pipeline: ``aggregate.load_study`` (files -> ``Study``) -> ``analysis.analyze`` (statistics from
``inference``, words from ``verdicts``) + ``warnings.collect`` -> ``plots.make_plots`` -> ``headline`` (the
first screen) and ``sections``/``findings`` (document blocks, one language at a time) -> ``markdown.render`` /
``html.render``. A replication study's arms under other protocols are separate sub-studies (``protocols``,
``ts_replication``, ``lm_replication``). The report reads files only, never training code.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import types
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from freezelab.report import document as doc
from freezelab.report import (
    findings,
    headline,
    html,
    lm_replication,
    markdown,
    masking,
    sections,
    ts_replication,
)
from freezelab.report.aggregate import Study, load_study, results_table, runs_table
from freezelab.report.analysis import Analysis
from freezelab.report.i18n import check_lang, t
from freezelab.report.plots import Plot, make_plots
from freezelab.report.protocols import Group, analyse_groups
from freezelab.report.warnings import full_analysis

__all__ = ["write_report", "build_document", "protocol_groups"]


def protocol_groups(study: Study) -> list[Group]:
    """A replication study's groups of arms by protocol and evaluation data, the reference's first ([] for an
    ordinary study): time series by faithful options (ts_replication.py), LM also by data (lm_replication.py)."""
    return lm_replication.lm_groups(study) if study.task == "lm" else ts_replication.ts_groups(study)


def build_document(study: Study, analysis: Analysis, plots: list[Plot], lang: str, when: str,
                   groups: list[Group] | None = None, full: Study | None = None) -> list[doc.Block]:
    """All report sections, in order, as document blocks in one language.

    The first screen answers the question (sentence, one row per arm, the baselines, the warnings, the
    verdict metric's figure); settings, tables and diagnostics follow, the long ones collapsed.

    Args:
        study: the loaded study (a replication study: its reference group's sub-study).
        analysis: its statistics and findings.
        plots: figures already written under ``<out>/plots`` in this language (the first-screen one first).
        lang: ``en`` or ``ja``.
        when: generation time stamp (shared by both languages).
        groups: a study run under several protocols (report/protocols.py): ``study`` and ``analysis`` are
            then the reference protocol's, and the replication section follows the first screen.
        full: the whole study (every group) for the header's counts; default ``study``.

    Returns:
        The document blocks.
    """
    ctx = sections.Ctx(study, analysis, lang)
    full = full or study
    first = next((f"plots/{p.stem}.png" for p in plots if p.caption == "plot_first"), None)
    grid = len(full.arms) * len(full.seeds)
    have = len({(r.arm, r.seed) for r in full.runs if r.path is not None})
    missing = t(lang, "missing_pairs", k=grid - have, n=grid) if have < grid else ""
    blocks: list[doc.Block] = [
        doc.Heading(1, t(lang, "title", study=study.name)),
        *headline.first_screen(ctx, first),
        doc.Para(t(lang, "generated", when=when, n_runs=sum(r.path is not None for r in full.runs),
                   out=full.out_dir, task=full.task, n_arms=len(full.arms), n_seeds=len(full.seeds),
                   ref=full.reference, missing=missing)),
    ]
    blocks += findings.sequential_section(ctx)  # run --until-decided: the decisions to cite, first
    blocks += findings.tuning_section(ctx)  # tune: the learning rate each arm was compared at
    if groups and len(groups) >= 2:
        section = lm_replication.lm_replication_section if study.task == "lm" else ts_replication.ts_replication_section
        blocks += section(ctx, groups)
    blocks += sections.overview_section(ctx)
    blocks += findings.comparison_section(ctx)
    blocks += sections.settings_section(ctx)
    blocks += sections.params_section(ctx)
    blocks += sections.phase1_section(ctx)
    blocks += sections.epochs_section(ctx)
    blocks += sections.best_epoch_section(ctx)
    blocks += masking.masking_section(ctx)
    blocks += findings.runtime_section(ctx)
    blocks += findings.plots_section(ctx, [p for p in plots if p.caption != "plot_first"])
    blocks += findings.failures_section(ctx)
    blocks += findings.conclusion_section(ctx)
    blocks += findings.reproduction_section(ctx, lang)
    return blocks


def _write_text(path: Path, text: str) -> Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are meant to be shared
    os.replace(tmp, path)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _comparison_json(c: Any) -> dict[str, Any] | None:
    if c is None:
        return None
    e = c.estimate
    return {"other": c.other, "kind": c.kind, "seeds": list(c.seeds), "diffs": list(c.diffs), "value": e.value,
            "arm": c.arm, "v_item": e.v_item, "v_seed": e.v_seed, "df": e.df, "method": e.method, "p": c.p,
            "p_holm": c.p_holm,
            "interval_alpha": c.alpha, "lo": c.lo, "hi": c.hi}


def report_json(study: Study, analysis: Analysis) -> dict[str, Any]:
    """Machine-readable comparison: per-arm statistics, comparisons with their intervals, verdicts, warnings.

    Differences and intervals are in analysis units: log units for log-scale metrics (PPL: nats/token).
    """
    arms = {}
    for m in analysis.metrics:
        for arm in study.arms:
            st = analysis.arm_stat(m, arm)
            lo, hi = st.interval()
            arms.setdefault(arm, {})[m.key] = {
                "values": st.values, "summary": asdict(st.summary), "interval": [lo, hi],
                "vs_reference": _comparison_json(st.vs_ref), "verdict": st.verdict,
                "baseline": st.baseline, "vs_baseline": _comparison_json(st.vs_base), "baseline_verdict": st.skill}
    sources = {k: {"method": ev.method, "n_items": ev.n_items, "block": ev.block, "problems": ev.problems,
                   "pooled_seed_var": analysis.results[k].pool.pooled, "seed_df": analysis.results[k].pool.df,
                   "paired_residual_var": analysis.results[k].pool.resid,
                   "paired_residual_df": analysis.results[k].pool.resid_df}
               for k, ev in analysis.sources.items()}
    return _jsonable({
        "study": study.name, "task": study.task, "reference": study.reference, "seeds": study.seeds,
        "primary": analysis.primary.key, "metrics": [asdict(m) for m in analysis.metrics], "sources": sources,
        "n_ok": analysis.n_ok, "n_total": analysis.n_total, "arms": arms,
        "best": [{"metric": k, "arm": b.arm, "runner_up": b.runner_up, "claimed": b.decided,
                  "vs_runner_up": _comparison_json(b.comparison)} for k, b in analysis.best.items()],
        "headline": {"kind": analysis.headline.kind, "baseline": analysis.headline.baseline},
        "warnings": [{"code": f.code, **f.params} for f in analysis.warnings],
        "runs": [{"arm": r.arm, "seed": r.seed, "run_id": r.run_id, "status": r.status, "label": r.label()}
                 for r in study.runs]})


def write_report(out_dir: Path, *, lang: str = "en", reference: str | None = None) -> dict[str, Path]:
    """Write the comparison report of a study's output folder into that folder.

    Writes ``report.md`` and a self-contained ``report.html`` in English (plus ``report.ja.md`` and
    ``report.ja.html`` beside them when ``lang="ja"``), ``results.csv`` (long format), ``runs.csv``,
    ``report.json`` and ``plots/*.png`` + ``plots/*.svg`` (``plots/*.ja.png`` with Japanese labels).

    Args:
        out_dir: the ``--out`` folder of ``freezelab run`` (holds ``study.json`` and ``runs/``).
        lang: ``en`` or ``ja``.
        reference: the arm every other arm is compared with; default: the study's reference arm.

    Returns:
        Relative file name (``report.md``, ``plots/final_test_ppl.png``, ...) -> path written.

    Raises:
        ConfigError: unknown language or reference arm.
        DataNotFoundError: no run folders under ``out_dir/runs``.
        DataError: a run folder whose arm and seed cannot be determined.
    """
    out_dir = Path(out_dir)
    check_lang(lang)
    full = load_study(out_dir, reference)
    groups = analyse_groups(protocol_groups(full))  # arms under other protocols
    study = groups[0].study if groups else full
    analysis = groups[0].analysis if groups else full_analysis(study)
    assert analysis is not None
    if study.task == "timeseries":
        analysis.warnings += ts_replication.other_warnings(groups)
    written: dict[str, Path] = {}
    for name, frame in (("results.csv", results_table(full)), ("runs.csv", runs_table(full))):
        written[name] = _write_text(out_dir / name, frame.to_csv(index=False))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for code in dict.fromkeys(("en", lang)):
        plots = make_plots(study, analysis, out_dir / "plots", code)
        for p in plots:
            for ext in ("png", "svg"):
                written[f"plots/{p.stem}.{ext}"] = out_dir / "plots" / f"{p.stem}.{ext}"
        blocks = build_document(study, analysis, plots, code, when, groups, full)
        suffix = "" if code == "en" else f".{code}"
        written[f"report{suffix}.md"] = _write_text(out_dir / f"report{suffix}.md", markdown.render(blocks))
        written[f"report{suffix}.html"] = _write_text(out_dir / f"report{suffix}.html",
                                                      html.render(blocks, out_dir, code))
    data = report_json(study, analysis)
    if groups:
        rep = (lm_replication.lm_replication_json(groups) if study.task == "lm" else
               ts_replication.ts_replication_json(sections.Ctx(study, analysis, "en"), groups))
        data["replication"] = _jsonable(rep)
    written["report.json"] = _write_text(out_dir / "report.json", json.dumps(data, indent=2, ensure_ascii=False))
    return written


class _CallableReport(types.ModuleType):
    """``freezelab.report(out_dir, lang=..., reference=...)`` is ``write_report``: the package is callable."""

    def __call__(self, out_dir: str | Path, *, lang: str = "en", reference: str | None = None) -> dict[str, Path]:
        return write_report(Path(out_dir), lang=lang, reference=reference)


sys.modules[__name__].__class__ = _CallableReport
