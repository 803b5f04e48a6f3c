"""The comparison report (experiment-protocol.md §7): run folders in, Markdown / HTML / CSV / plots out.

    from freezelab.report import write_report
    paths = write_report(Path("out/embedding-freeze"), lang="ja")

Pipeline: ``aggregate.load_study`` (files -> ``Study``) -> ``analysis.analyze`` (statistics, verdicts,
warnings) -> ``plots.make_plots`` -> ``sections``/``findings`` (document blocks, one language at a
time) -> ``markdown.render`` / ``html.render``. The report reads files only, never training code.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from freezelab.report import document as doc
from freezelab.report import findings, headline, html, markdown, masking, sections
from freezelab.report.aggregate import Study, load_study, results_table, runs_table
from freezelab.report.analysis import Analysis, analyze
from freezelab.report.i18n import check_lang, t
from freezelab.report.plots import Plot, make_plots

__all__ = ["write_report", "build_document"]


def build_document(study: Study, analysis: Analysis, plots: list[Plot], lang: str, when: str) -> list[doc.Block]:
    """All report sections, in order, as document blocks in one language.

    The first screen answers the question (sentence, one row per arm, the curves overlay); settings,
    tables and diagnostics follow, the long ones collapsed.

    Args:
        study: the loaded study.
        analysis: its statistics and findings.
        plots: figures already written under ``<out>/plots`` in this language (the overlay first).
        lang: ``en`` or ``ja``.
        when: generation time stamp (shared by both languages).

    Returns:
        The document blocks.
    """
    ctx = sections.Ctx(study, analysis, lang)
    overlay = next((f"plots/{p.stem}.png" for p in plots if p.caption == "plot_overlay"), None)
    blocks: list[doc.Block] = [
        doc.Heading(1, t(lang, "title", study=study.name)),
        *headline.first_screen(ctx, overlay),
        doc.Para(t(lang, "generated", when=when, n_runs=sum(r.path is not None for r in study.runs),
                   out=study.out_dir, task=study.task, n_arms=len(study.arms), n_seeds=len(study.seeds),
                   ref=study.reference)),
    ]
    blocks += sections.overview_section(ctx)
    blocks += findings.comparison_section(ctx)
    blocks += sections.settings_section(ctx)
    blocks += sections.params_section(ctx)
    blocks += sections.phase1_section(ctx)
    blocks += sections.epochs_section(ctx)
    blocks += sections.best_epoch_section(ctx)
    blocks += masking.masking_section(ctx)
    blocks += findings.runtime_section(ctx)
    blocks += findings.plots_section(ctx, [p for p in plots if p.caption != "plot_overlay"])
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
            "v_item": e.v_item, "v_seed": e.v_seed, "df": e.df, "method": e.method, "p": c.p, "p_holm": c.p_holm,
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
                   "pooled_seed_var": analysis.results[k].pool.pooled, "seed_df": analysis.results[k].pool.df}
               for k, ev in analysis.sources.items()}
    return _jsonable({
        "study": study.name, "task": study.task, "reference": study.reference, "seeds": study.seeds,
        "primary": analysis.primary.key, "metrics": [asdict(m) for m in analysis.metrics], "sources": sources,
        "n_ok": analysis.n_ok, "n_total": analysis.n_total, "arms": arms,
        "best": [{"metric": b.metric.key, "arm": b.arm, "runner_up": b.runner_up} for b in analysis.best],
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
    study = load_study(out_dir, reference)
    analysis = analyze(study)
    written: dict[str, Path] = {}
    for name, frame in (("results.csv", results_table(study)), ("runs.csv", runs_table(study))):
        written[name] = _write_text(out_dir / name, frame.to_csv(index=False))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for code in dict.fromkeys(("en", lang)):
        plots = make_plots(study, analysis, out_dir / "plots", code)
        for p in plots:
            for ext in ("png", "svg"):
                written[f"plots/{p.stem}.{ext}"] = out_dir / "plots" / f"{p.stem}.{ext}"
        blocks = build_document(study, analysis, plots, code, when)
        suffix = "" if code == "en" else f".{code}"
        written[f"report{suffix}.md"] = _write_text(out_dir / f"report{suffix}.md", markdown.render(blocks))
        written[f"report{suffix}.html"] = _write_text(out_dir / f"report{suffix}.html",
                                                      html.render(blocks, out_dir, code))
    written["report.json"] = _write_text(out_dir / "report.json",
                                         json.dumps(report_json(study, analysis), indent=2, ensure_ascii=False))
    return written
