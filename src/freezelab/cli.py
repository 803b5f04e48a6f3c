"""The ``freezelab`` command line: inspect, run, show, report, bench.

Exit codes (README): 0 every requested run succeeded; 1 a run failed; 2 bad input (study file, command-line
value, damaged run file, no space left) and nothing ran; 3 runs are held by another process (none failed);
130 interrupted.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from freezelab.errors import FreezelabError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Controlled freeze / fine-tune / random-init experiments whose numbers can be trusted.")
console = Console(width=None if sys.stdout.isatty() else 160)  # logs and CI: no truncated columns
_debug = {"on": False}
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_HELD, EXIT_INTERRUPTED = 1, 2, 3, 130


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        print(f"freezelab {version('freezelab')}")
        raise typer.Exit()


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
          _v: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                  help="Print the version and exit.")) -> None:
    _debug["on"] = debug


def _fail(err: Exception) -> None:
    if _debug["on"]:
        raise err
    console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=EXIT_BAD_INPUT)


def _csv(text: Optional[str], cast=str, option: str = "") -> Optional[list]:
    if text is None:
        return None
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise FreezelabError(f"{option} {text!r} names nothing; pass a comma-separated list, e.g. {option} 0,1,2")
    try:
        values = [cast(x) for x in items]
    except ValueError as err:
        bad = next(x for x in items if not x.lstrip("-").isdigit())
        raise FreezelabError(f"{option} {text!r}: {bad!r} is not an integer; pass comma-separated integers, "
                             f"e.g. {option} 0,1,2") from err
    dup = sorted({str(v) for v in values if values.count(v) > 1})
    if dup:
        raise FreezelabError(f"{option} {text!r} repeats {', '.join(dup)}; list each once")
    return values


def _load(study_file: Path, profile: Optional[str], overrides: list[str], seeds: Optional[str],
          arms: Optional[list[str]] = None):
    from freezelab.config.load import load_study

    return load_study(study_file, profile=profile, overrides=overrides, seeds=_csv(seeds, int, "--seeds"),
                      all_arms=bool(arms))


def _fmt_int(n: Optional[int]) -> str:
    return "-" if n is None else f"{n:,}"


@app.command()
def inspect(
    study_file: Path = typer.Argument(..., help="Study YAML, e.g. examples/embedding-freeze.yaml."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Profile from the study file (e.g. quick)."),
    set_: list[str] = typer.Option([], "--set", help="Override for every arm: dotted.key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Resolve every arm without training: its diff from the base and its parameter accounting.

    Example: freezelab inspect examples/embedding-freeze.yaml --set embedding.source=random
    """
    from freezelab.tasks.registry import get_task

    try:
        study = _load(study_file, profile, set_, None)
        task = get_task(study.spec.task, study.path.parent)
        report = {name: {"description": arm.description, "reference": arm.reference,
                         "diff_from_base": arm.diff_from_base, "params": task.inspect(arm.config)}
                  for name, arm in study.arms.items()}
    except FreezelabError as err:
        _fail(err)
        return
    if as_json:
        print(json.dumps({"study": study.spec.name, "seeds": study.seeds, "arms": report}, indent=2))
        return
    table = Table(title=f"{study.spec.name}: {len(report)} arms × seeds {study.seeds}")
    for col in ("arm", "total", "trainable", "frozen", "tied", "unused", "trainable %"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for name, r in report.items():
        p = r["params"]
        share = f"{100 * p['trainable'] / p['total']:.1f}" if p["total"] else "-"
        table.add_row(name + (" (ref)" if r["reference"] else ""), _fmt_int(p["total"]), _fmt_int(p["trainable"]),
                      _fmt_int(p["frozen"]), str(p["tied"]), _fmt_int(p["unused"]), share)
    for name, r in report.items():
        console.print(f"[bold]{name}[/bold]{' (reference)' if r['reference'] else ''}: {r['description']}",
                      highlight=False)
        for k, (a, b) in r["diff_from_base"].items():
            console.print(f"    {k}: {a!r} → {b!r}", highlight=False)
    console.print(table)


@app.command()
def run(
    study_file: Path = typer.Argument(..., help="Study YAML."),
    arms: Optional[str] = typer.Option(None, "--arms", help="Comma-separated arm subset."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds (replaces the study's)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: the study's output_dir)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Profile from the study file (e.g. quick)."),
    set_: list[str] = typer.Option([], "--set", help="Override for every arm: dotted.key=value (repeatable)."),
    isolation: Literal["process", "inline"] = typer.Option(
        "process", help="process: each run in its own process; inline: this one."),
    executor: Literal["local", "ray"] = typer.Option(
        "local", help="local: runs one after another here; ray: each run a Ray task."),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local instance)."),
    gpus_per_run: float = typer.Option(0.0, help="GPUs each Ray task reserves (fractions share a GPU)."),
    storage: Optional[str] = typer.Option(None, "--storage", metavar="URI", help="With --executor ray: keep the "
                                          "run folders at this URI (a path, file://, s3://bucket/prefix, ...) so "
                                          "that nodes need no shared filesystem; OUT gets a copy of each."),
    retry_failed: bool = typer.Option(True, "--retry-failed/--skip-failed", help="Rerun runs that failed before."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the comparison report at the end."),
    wait: bool = typer.Option(False, "--wait", help="Wait for runs another process holds instead of skipping "
                              "them (exit code 3)."),
    wait_timeout: Optional[float] = typer.Option(None, "--wait-timeout", metavar="SECONDS", help="Wait at most "
                                                 "this long for each held run (implies --wait); then skip it "
                                                 "(exit code 3)."),
    mlflow: bool = typer.Option(False, "--mlflow", help="Also record every run in MLflow (default store: "
                                "sqlite under OUT; needs the mlflow extra)."),
    mlflow_uri: Optional[str] = typer.Option(None, "--mlflow-uri", metavar="TRACKING_URI",
                                             help="MLflow tracking URI (implies --mlflow), e.g. http://host:5000."),
    until_decided: bool = typer.Option(False, "--until-decided", help="Add seeds until every arm is decided "
                                       "against the reference by an anytime-valid test (docs/statistics.md), or "
                                       "--max-seeds is reached."),
    max_seeds: Optional[int] = typer.Option(None, "--max-seeds", metavar="N", help="With --until-decided: the "
                                            "most seeds in all."),
    seed_batch: int = typer.Option(1, "--seed-batch", metavar="K", help="With --until-decided: seeds added per "
                                   "look (with --executor ray they run in parallel)."),
) -> None:
    """Run arms × seeds; finished runs are skipped, failed and interrupted ones rerun.

    Exit code 0 when every requested run succeeded, 1 when one failed, 2 for bad input, 3 when runs are
    held by another process. Example: freezelab run examples/embedding-freeze.yaml --profile quick
    """
    from freezelab.experiment.plan import make_plan
    from freezelab.experiment.preflight import preflight
    from freezelab.experiment.runner import run_plan

    try:
        if gpus_per_run < 0:
            raise FreezelabError(f"--gpus-per-run must be >= 0 (a fraction shares a GPU), got {gpus_per_run}")
        if storage is not None and executor != "ray":
            raise FreezelabError("--storage applies with --executor ray (runs on other nodes); a local run writes "
                                 "to --out directly")
        if wait_timeout is not None and wait_timeout < 0:
            raise FreezelabError(f"--wait-timeout must be >= 0 seconds, got {wait_timeout:g}")
        chosen = _csv(arms, str, "--arms")
        study = _load(study_file, profile, set_, seeds, chosen)  # --arms may name arms the profile leaves out
        plan = make_plan(study, arms=chosen)
        preflight(study)  # a plugin's methods, once, before any folder is written
        # output_dir is relative to the study file; normpath turns examples/../runs/x into runs/x
        out_dir = out or Path(os.path.normpath(study.path.parent / study.spec.output_dir))
        if out_dir.exists() and not out_dir.is_dir():
            raise FreezelabError(f"--out {out_dir} is a file; pass a folder (it is created when missing)")
        command = "freezelab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        console.print(f"{study.spec.name}: {len(plan)} runs ({len(set(r.arm for r in plan))} arms × "
                      f"{len(set(r.seed for r in plan))} seeds) → {out_dir}")
        if until_decided or max_seeds is not None:
            from freezelab.experiment.until_decided import check_request

            if not until_decided:
                raise FreezelabError("--max-seeds applies with --until-decided; add it, or pass --seeds")
            check_request(study, out_dir, max_seeds, seed_batch)
        sinks = _mlflow_sink(study, out_dir, command, mlflow_uri) if mlflow or mlflow_uri else []

        def run_runs(st: Any, runs: list, folder: Path) -> list:
            if executor == "ray":
                from freezelab.experiment.ray_executor import run_plan_ray

                return run_plan_ray(st, runs, folder, address=ray_address, gpus_per_run=gpus_per_run,
                                    retry_failed=retry_failed, command=command, console=console, sinks=sinks,
                                    storage=storage)
            return run_plan(st, runs, folder, isolation=isolation, retry_failed=retry_failed, command=command,
                            console=console, sinks=sinks, wait=wait or wait_timeout is not None,
                            wait_timeout=wait_timeout)

        def execute(st: Any) -> list:
            return run_runs(st, make_plan(st, arms=chosen), out_dir)

        from freezelab.experiment.tuning import run_tuning

        study, _ = run_tuning(study, out_dir, arms=chosen, run=run_runs,  # tune: each arm's lr on val first
                                   say=lambda line: console.print(line, highlight=False))
        if until_decided:
            from freezelab.experiment.until_decided import run_until_decided

            assert max_seeds is not None
            outcomes = run_until_decided(study, out_dir, max_seeds=max_seeds, seed_batch=seed_batch, run=execute,
                                         say=lambda line: console.print(line, highlight=False))["outcomes"]
        else:
            outcomes = execute(study)
    except FreezelabError as err:
        _fail(err)
        return
    except KeyboardInterrupt:
        console.print("interrupted: run the same command again to resume (finished runs are kept)")
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    counts = {s: sum(o.status == s for o in outcomes) for s in ("succeeded", "skipped", "failed", "locked")}
    console.print(", ".join(f"{v} {k}" for k, v in counts.items() if v))
    for o in outcomes:
        if o.status == "failed":
            console.print(f"[red]FAILED[/red] {o.run_id}: {o.message}", highlight=False)
        elif o.status == "locked":
            console.print(f"[yellow]HELD[/yellow] {o.run_id}: {o.message}", highlight=False)
    _print_status(out_dir)
    paths = _write_report(out_dir, "en", None) if report else {}
    for sink in sinks:
        sink.study_finished([p for name, p in paths.items() if "/" not in name])
        console.print(f"mlflow: {sink.uri} (experiment {study.spec.name!r}; browse with "
                      f"`mlflow ui --backend-store-uri {sink.uri}`)", highlight=False)
    code = exit_code([o.status for o in outcomes])
    if code:
        raise typer.Exit(code=code)


def exit_code(statuses: list[str]) -> int:
    """0 when every run succeeded (now or earlier), 1 when one failed, else 3 when one is held elsewhere."""
    if "failed" in statuses:
        return EXIT_FAILED
    return EXIT_HELD if "locked" in statuses else 0


def _mlflow_sink(study, out_dir: Path, command: str, uri: Optional[str]) -> list:
    """The MLflow exporter of this study's output folder (it needs OUT/study.json first)."""
    from freezelab.experiment.runner import write_study_record
    from freezelab.tracking.mlflow_sink import MlflowSink

    write_study_record(study, out_dir, command)
    return [MlflowSink(out_dir, uri)]


def _print_status(out_dir: Path) -> None:
    """Every run of OUT in the study's arm order (reference marked), metrics formatted as in the report."""
    from freezelab.experiment.runner import scan_runs
    from freezelab.report.analysis import Metric
    from freezelab.report.document import seconds, value

    rows = scan_runs(out_dir)
    if not rows:
        console.print(f"no runs under {out_dir}/runs")
        return
    record = _read_study_record(out_dir)
    order = {arm: i for i, arm in enumerate(record.get("arms") or {})}
    rows.sort(key=lambda r: (r["superseded"], order.get(r["arm"], len(order)), r["arm"], str(r["seed"])))

    def fmt(values: dict, m: str) -> str:
        v = values.get(m)
        return value(v, Metric(m, m, "max", False).percent) if isinstance(v, (int, float)) else "-"

    metric_names: list[str] = []
    for r in rows:  # headline metrics only (val at the best epoch, test), to keep the table narrow
        for h in (r["summary"].get("headline") or [])[:2]:
            for m in (f"val/{h['name']}", f"test/{h['name']}"):
                if m not in metric_names:
                    metric_names.append(m)
    table = Table(title=str(out_dir))
    for col in ("arm", "seed", "status", "best epoch", *metric_names, "wall"):
        table.add_column(col, justify="left" if col in ("arm", "status") else "right")
    for r in rows:
        s = r["summary"]
        best = s.get("best") or {}
        values = {**best.get("metrics", {}), **(s.get("test") or {})}
        status = r["status"]
        if status == "failed" and isinstance(r["error"], dict):
            status = f"FAILED ({r['error'].get('class')}: {str(r['error'].get('message'))[:60]})"
        elif status == "damaged":
            status = "DAMAGED (see below)"
        if r["superseded"]:
            status = f"superseded ({status}, older config)"
        arm = r["arm"] + (" (ref)" if r["arm"] == record.get("reference") else "")
        table.add_row(escape(arm), str(r["seed"]), escape(status), str(best.get("epoch", "-")),
                      *[fmt(values, m) for m in metric_names],
                      seconds(s["wall_seconds"]) if isinstance(s.get("wall_seconds"), (int, float)) else "-")
    by_eval: dict[str, tuple[dict, list[str]]] = {}  # naive baselines per evaluation set (protocols differ)
    for r in rows:
        if r["summary"].get("baselines"):
            key = str((r["summary"].get("hashes") or {}).get("eval_hash"))
            arms = by_eval.setdefault(key, (r["summary"]["baselines"], []))[1]
            if r["arm"] not in arms:
                arms.append(r["arm"])
    for baselines, arms in by_eval.values():
        named = ", ".join(arms) if len(arms) <= 2 else f"{arms[0]} … {len(arms)} arms"
        scope = f" ({named})" if len(by_eval) > 1 else ""
        for name, values in baselines.items():  # on the same items as these arms, next to them
            table.add_row(f"baseline: {name}{scope}", "-", "-", "-", *[fmt(values, m) for m in metric_names], "-")
    console.print(table)
    for r in rows:
        for problem in r.get("problems") or []:
            console.print(f"[yellow]damaged[/yellow] {r['run_id']}: {problem} Running the study again reruns it.",
                          highlight=False, soft_wrap=True)


def _read_study_record(out_dir: Path) -> dict:
    """OUT/study.json, or {} when it is missing or unreadable (the runs still show, in folder order)."""
    try:
        record = json.loads((out_dir / "study.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


@app.command()
def show(out_dir: Path = typer.Argument(..., help="A study output folder (holds runs/).")) -> None:
    """Status table of every run with its best metrics."""
    if not (out_dir / "runs").exists():
        _fail(FreezelabError(f"{out_dir} has no runs/ folder. Pass the --out folder of `freezelab run`."))
    _print_status(out_dir)


def _write_report(out_dir: Path, lang: str, reference: Optional[str]) -> dict:
    try:
        from freezelab.report import write_report
    except ImportError:
        return {}
    try:
        paths = write_report(out_dir, lang=lang, reference=reference)
    except FreezelabError as err:
        _fail(err)
        return {}
    top = [str(p) for name, p in paths.items() if "/" not in name]
    console.print(f"report: {', '.join(top)} (+ {len(paths) - len(top)} plots in {out_dir / 'plots'})",
                  highlight=False)
    console.print(f"curves: tensorboard --logdir {out_dir / 'runs'}", highlight=False)
    return paths


@app.command()
def report(
    out_dir: Path = typer.Argument(..., help="A study output folder (holds runs/)."),
    lang: Literal["en", "ja"] = typer.Option("en", "--lang", help="Report language."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Arm to compare against."),
) -> None:
    """Write report.md and a self-contained report.html from the run folders."""
    _write_report(out_dir, lang, reference)


def type_name(annotation: object) -> str:
    """A type as a user writes it: ``Optional[int]``, ``dict[str, float]``, ``Literal['a', 'b']``."""
    import types
    import typing

    if annotation is type(None):
        return "None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = type_name(rest[0]) if len(rest) == 1 else f"Union[{', '.join(type_name(a) for a in rest)}]"
        return f"Optional[{inner}]" if len(rest) < len(args) else inner
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]" if args else name
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


@app.command()
def fields(task: str = typer.Argument("lm", help="lm, timeseries, classify, your own task "
                                       "(path/to/file.py:Class or package.module:Class), or a study file "
                                       "(its task).")) -> None:
    """Every config key of a task with its type, default and description (what a study's base may set).

    Example: freezelab fields classify; freezelab fields examples/own-task/transfer.yaml
    """
    import yaml

    from freezelab.config.fields import iter_fields
    from freezelab.tasks.registry import task_config

    try:
        where = None
        if task.endswith((".yaml", ".yml")):
            path = Path(task)
            if not path.is_file():
                raise FreezelabError(f"Study file not found: {path}.")
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            task, where = str(raw.get("task", "lm")) if isinstance(raw, dict) else "lm", path.parent
        from freezelab.config.schema import BUILTIN_TASKS, PLUGIN_RE

        if task not in BUILTIN_TASKS and not PLUGIN_RE.match(task):
            raise FreezelabError(f"unknown task {task!r}: use one of {', '.join(BUILTIN_TASKS)}, "
                                 "path/to/file.py:ClassName, package.module:ClassName, or a study file")
        model = task_config(task, where)
    except FreezelabError as err:
        _fail(err)
        return
    for key, info in iter_fields(model):
        default = "required" if info.is_required() else f"default {info.get_default(call_default_factory=True)!r}"
        console.print(f"[bold]{key}[/bold] " + escape(f"({type_name(info.annotation)}, {default}): "
                                                      f"{info.description or ''}"), highlight=False)


@app.command()
def bench(
    device: Literal["auto", "cpu", "cuda"] = typer.Option("auto", help="Where to measure."),
    mode: Literal["all", "step", "e2e", "run"] = typer.Option(
        "all", help="step: matmul peak, Phase-2 steps and the recurrence in isolation; e2e: one real run at the "
        "seed's shapes per stage, with the per-token reference loop and a seed-study estimate; run: Phase-2 MFU "
        "inside a real run and the share of each overhead (checks, hashing, logging, checkpoints); all: every one."),
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes (CI: about a minute per mode on a CPU)."),
    compile_: bool = typer.Option(False, "--compile", help="step and run modes: torch.compile the TokenBlock "
                                  "(runtime.compile), as a GPU run would."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Measure matmul peak, Phase-2 MFU, recurrence, end-to-end and in-run speed (ratios, benchmarks/README.md)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        console.print("[red]error:[/red] --device cuda: torch sees no CUDA device here (torch "
                      f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none: a CPU build'}). Install "
                      "the torch build for your CUDA (README), or drop --device to measure this CPU.")
        raise typer.Exit(2)
    result: dict = {}
    if mode in ("all", "step"):
        from freezelab.bench import run_benchmarks

        result["step"] = run_benchmarks(device, quick=quick, compile=compile_)
    if mode in ("all", "e2e"):
        from freezelab.bench_e2e import run_e2e

        result["e2e"] = run_e2e(device, quick=quick)
    if mode in ("all", "run"):
        from freezelab.bench_run import run_inrun

        result["run"] = run_inrun(device, quick=quick, compile=compile_)
    if as_json:
        print(json.dumps(result if mode == "all" else result[mode], indent=2))
        return
    if "step" in result:
        r0 = result["step"]
        console.print(f"device {r0['device']} ({r0['threads']} threads, {r0['precision']}): "
                      f"matmul peak {r0['matmul_peak_tflops']:.3f} TFLOP/s")
        for key in ("phase2_frozen_head", "phase2_trainable_head"):
            r = r0[key]
            console.print(f"{key} (V {r['vocab']:,}, d {r['dim']}, batch {r['batch']}): "
                          f"{r['tokens_per_second']:,.0f} tokens/s, {r['flops_per_second'] / 1e12:.3f} TFLOP/s, "
                          f"MFU {r['mfu']:.1%} of measured peak")
        r = r0["recurrence"]
        console.print(f"recurrence: batched {r['batched_tokens_per_second']:,.0f} tokens/s vs per-token loop "
                      f"{r['per_token_tokens_per_second']:,.0f} tokens/s → {r['speedup']:.3g}× faster")
    if "e2e" in result:
        from freezelab.bench_e2e import print_e2e

        print_e2e(result["e2e"], echo=lambda line: console.print(line, highlight=False))
    if "run" in result:
        from freezelab.bench_run import print_inrun

        print_inrun(result["run"], echo=lambda line: console.print(line, highlight=False))

if __name__ == "__main__":
    app()
