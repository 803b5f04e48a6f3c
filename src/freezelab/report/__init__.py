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
from freezelab.report import findings, html, markdown, masking, sections
from freezelab.report.aggregate import Study, load_study, results_table, runs_table
from freezelab.report.analysis import Analysis, analyze
from freezelab.report.i18n import check_lang, t
from freezelab.report.plots import Plot, make_plots

__all__ = ["write_report", "build_document"]


def build_document(study: Study, analysis: Analysis, plots: list[Plot], lang: str, when: str) -> list[doc.Block]:
    """All report sections, in order, as document blocks in one language.

    Args:
        study: the loaded study.
        analysis: its statistics and findings.
        plots: figures already written under ``<out>/plots``.
        lang: ``en`` or ``ja``.
        when: generation time stamp (shared by both languages).

    Returns:
        The document blocks.
    """
    ctx = sections.Ctx(study, analysis, lang)
    blocks: list[doc.Block] = [
        doc.Heading(1, t(lang, "title", study=study.name)),
        doc.Para(t(lang, "generated", when=when, n_runs=sum(r.path is not None for r in study.runs),
                   out=study.out_dir, task=study.task, n_arms=len(study.arms), n_seeds=len(study.seeds),
                   ref=study.reference)),
    ]
    blocks += sections.overview_section(ctx)
    blocks += sections.settings_section(ctx)
    blocks += sections.params_section(ctx)
    blocks += sections.phase1_section(ctx)
    blocks += sections.epochs_section(ctx)
    blocks += sections.best_epoch_section(ctx)
    blocks += masking.masking_section(ctx)
    blocks += findings.comparison_section(ctx)
    blocks += findings.runtime_section(ctx)
    blocks += findings.plots_section(ctx, plots)
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


def report_json(study: Study, analysis: Analysis) -> dict[str, Any]:
    """Machine-readable comparison: per-arm statistics, paired results, verdicts, skill and warnings."""
    arms = {}
    for m in analysis.metrics:
        for arm in study.arms:
            st = analysis.arm_stat(m, arm)
            arms.setdefault(arm, {})[m.key] = {
                "values": st.values, "summary": asdict(st.summary),
                "paired": asdict(st.paired) if st.paired else None, "p_holm": st.p_holm, "verdict": st.verdict,
                "baseline": st.baseline, "skill": st.skill}
    return _jsonable({
        "study": study.name, "task": study.task, "reference": study.reference, "seeds": study.seeds,
        "metrics": [asdict(m) for m in analysis.metrics], "n_ok": analysis.n_ok, "n_total": analysis.n_total,
        "arms": arms, "best": [{"metric": b.metric.key, "arm": b.arm, "runner_up": b.runner_up,
                                "significant": b.significant} for b in analysis.best],
        "warnings": [{"code": f.code, **f.params} for f in analysis.warnings],
        "runs": [{"arm": r.arm, "seed": r.seed, "run_id": r.run_id, "status": r.status, "label": r.label()}
                 for r in study.runs]})


def write_report(out_dir: Path, *, lang: str = "en", reference: str | None = None) -> dict[str, Path]:
    """Write the comparison report of a study's output folder into that folder.

    Writes ``report.md`` (English; plus ``report.ja.md`` when ``lang="ja"``), a self-contained
    ``report.html`` in ``lang``, ``results.csv`` (long format), ``runs.csv``, ``report.json`` and
    ``plots/*.png`` + ``plots/*.svg``.

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
    plots = make_plots(study, analysis, out_dir / "plots")
    for p in plots:
        for ext in ("png", "svg"):
            written[f"plots/{p.stem}.{ext}"] = out_dir / "plots" / f"{p.stem}.{ext}"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    docs = {code: build_document(study, analysis, plots, code, when) for code in dict.fromkeys(("en", lang))}
    written["report.md"] = _write_text(out_dir / "report.md", markdown.render(docs["en"]))
    if lang == "ja":
        written["report.ja.md"] = _write_text(out_dir / "report.ja.md", markdown.render(docs["ja"]))
    written["report.html"] = _write_text(out_dir / "report.html", html.render(docs[lang], out_dir, lang))
    written["report.json"] = _write_text(out_dir / "report.json",
                                         json.dumps(report_json(study, analysis), indent=2, ensure_ascii=False))
    return written
