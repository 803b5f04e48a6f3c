"""Every bad input gives a clear error: what is wrong, where (file, key, option, run) and how to fix it.

One parametrized test; each case sets up one bad input against a tiny finished study (a fresh copy per
case), runs the CLI in-process and checks the exit code (README: 0 ok, 1 a run failed, 2 bad input, 3 held
elsewhere), that the output (or the run's log / status) says what, where and the fix, and — where a run
had finished — that nothing computed was lost.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from freezelab.cli import app
from freezelab.tracking import files
from tests import kill_helpers

pytestmark = pytest.mark.integration


@dataclass
class Ctx:
    study: Path          # the tiny study file (one arm, one seed)
    out: Path            # a copy of its finished output folder
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    cleanup: list = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return next(p for p in (self.out / "runs").iterdir() if p.is_dir())

    def run(self, *extra: str) -> list[str]:
        return ["run", str(self.study), "--out", str(self.out), "--isolation", "inline", "--no-report", *extra]

    def study_with(self, name: str, **base_over) -> Path:
        """A copy of the study with dotted base overrides."""
        raw = yaml.safe_load(self.study.read_text())
        for key, value in base_over.items():
            node = raw["base"]
            *head, last = key.split("__")
            for part in head:
                node = node.setdefault(part, {})
            node[last] = value
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def interrupted(self) -> None:
        """Make the finished run look killed mid-training (no summary, status running)."""
        (self.run_dir / "summary.json").unlink()
        files.write_status(self.run_dir, "running")


@dataclass
class Case:
    setup: Callable[[Ctx], list[str]]          # prepares the bad input, returns the CLI arguments
    code: int                                  # expected exit code
    says: tuple[str, ...]                      # regexes (what, where, fix) the output must match
    log_says: tuple[str, ...] = ()             # ... and the run's logs/run.log
    report_says: tuple[str, ...] = ()          # ... and OUT/report.md
    kept: bool = False                         # the finished run's results are unchanged afterwards


def _write(path: Path, text: str | bytes) -> Path:
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def _study_file(ctx: Ctx, text: str) -> list[str]:
    return ["run", str(_write(ctx.tmp / "bad.yaml", text)), "--out", str(ctx.out), "--no-report"]


def _remote_code_model(ctx: Ctx) -> list[str]:
    folder = ctx.tmp / "needs-code"
    source = Path(yaml.safe_load(ctx.study.read_text())["base"]["embedding"]["source"])
    shutil.copytree(source, folder)  # a working model folder (tokenizer, weights) whose config needs its own code
    marker = ctx.tmp / "code-ran"
    _write(folder / "config.json", json.dumps({**json.loads((folder / "config.json").read_text()), "model_type": "evil",
                                               "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                                            "AutoModel": "modeling_evil.EvilModel"}}))
    _write(folder / "configuration_evil.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    ctx.cleanup.append(lambda: not marker.exists() or pytest.fail("the model folder's code ran"))
    return ["run", str(ctx.study_with("remote", embedding__source=str(folder))), "--out", str(ctx.tmp / "o"),
            "--isolation", "inline", "--no-report"]


def _oom(ctx: Ctx) -> list[str]:
    import torch

    from freezelab.tasks.lm import phases

    def evaluate(*_a, **_k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    ctx.monkeypatch.setattr(phases, "evaluate", evaluate)
    return ctx.run("--seeds", "1")


def _disk_full(ctx: Ctx) -> list[str]:
    import errno

    from freezelab.tracking import weights

    def full(path, write):
        raise files._disk_full(Path(path), OSError(errno.ENOSPC, "No space left on device"))
    ctx.monkeypatch.setattr(weights, "write_atomically", full)
    return ctx.run("--seeds", "1")


def _held(ctx: Ctx) -> list[str]:
    code = ("import json, os, socket, time\nfrom filelock import FileLock\n"
            f"l = FileLock({str(ctx.run_dir / '.lock')!r}); l.acquire()\n"
            f"open({str(ctx.run_dir / '.lock.json')!r}, 'w').write(json.dumps({{'pid': os.getpid(), "
            "'host': 'lab-7', 'since': '2026-01-02T03:04:05+00:00'}))\nprint('held', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    ctx.cleanup.append(proc.kill)
    return ctx.run()


def _manifest(ctx: Ctx, text: str) -> list[str]:
    ctx.interrupted()
    _write(ctx.run_dir / "checkpoints" / "state.json", text)
    return ctx.run()


def _cache(ctx: Ctx, suffix: str, damage: Callable[[bytes], bytes]) -> list[str]:
    ctx.interrupted()
    (cache,) = (ctx.out / "cache").glob(f"lm-data-*{suffix}")
    cache.write_bytes(damage(cache.read_bytes()))
    return ctx.run()


CASES: dict[str, Case] = {
    # --- command-line values ------------------------------------------------------------------------
    "seeds_not_integers": Case(lambda c: c.run("--seeds", "0,x"), 2, (r"--seeds '0,x'", r"'x' is not an integer",
                                                                     r"e\.g\. --seeds 0,1,2")),
    "seeds_empty": Case(lambda c: c.run("--seeds", ","), 2, (r"--seeds ','", r"names nothing", r"comma-separated")),
    "seeds_repeated": Case(lambda c: c.run("--seeds", "0,0"), 2, (r"--seeds '0,0'", r"repeats 0", r"list each once")),
    "arms_unknown": Case(lambda c: c.run("--arms", "nope"), 2, (r"tiny\.yaml", r"unknown arm\(s\) \['nope'\]",
                                                                r"the study has \['frozen'\]")),
    "isolation": Case(lambda c: c.run("--isolation", "thread"), 2, (r"--isolation", r"'thread'",
                                                                    r"is not one of 'process', 'inline'")),
    "executor": Case(lambda c: c.run("--executor", "dask"), 2, (r"--executor", r"'dask'",
                                                                r"is not one of 'local', 'ray'")),
    "ray_without_cluster": Case(lambda c: c.run("--executor", "ray", "--ray-address", "auto"), 2,
                                (r"--ray-address auto", r"no Ray cluster answers", r"ray start --head",
                                 r"drop --ray-address")),
    "gpus_negative": Case(lambda c: c.run("--gpus-per-run", "-1"), 2, (r"--gpus-per-run", r"-1", r">= 0")),
    "out_is_a_file": Case(lambda c: ["run", str(c.study), "--out", str(_write(c.tmp / "f.txt", "x"))], 2,
                          (r"--out .*f\.txt is a file", r"pass a folder")),
    "set_without_equals": Case(lambda c: c.run("--set", "phase2.lr"), 2, (r"--set phase2\.lr", r"not of the form",
                                                                         r"dotted\.key=value")),
    "set_unknown_key": Case(lambda c: c.run("--set", "phase2.lrr=1"), 2, (r"--set phase2\.lrr", r"unknown key",
                                                                          r"did you mean phase2\.lr")),
    "set_wrong_type": Case(lambda c: c.run("--set", "phase2.max_epochs=abc"), 2, (r"--set phase2\.max_epochs",
                                                                                  r"'abc'", r"valid integer")),
    "profile_unknown": Case(lambda c: c.run("--profile", "nope"), 2, (r"tiny\.yaml", r"profile 'nope' not found",
                                                                      r"allowed")),
    "lang": Case(lambda c: ["report", str(c.out), "--lang", "fr"], 2, (r"--lang", r"'fr'", r"not one of 'en', 'ja'")),
    "reference_unknown": Case(lambda c: ["report", str(c.out), "--reference", "nope"], 2,
                              (r"--reference 'nope'", r"not an arm", r"arms: frozen")),
    "fields_task": Case(lambda c: ["fields", "vision"], 2, (r"unknown task 'vision'", r"lm, timeseries, classify",
                                                            r"path/to/file\.py:ClassName")),
    "show_without_runs": Case(lambda c: ["show", str(c.tmp)], 2, (r"has no runs/ folder",
                                                                  r"--out folder of `freezelab run`")),
    "report_without_runs": Case(lambda c: ["report", str(c.tmp)], 2, (r"No run folders under", r"freezelab run")),
    # --- study files -----------------------------------------------------------------------------------
    "study_missing": Case(lambda c: ["run", str(c.tmp / "nope.yaml")], 2, (r"Study file not found: .*nope\.yaml",
                                                                           r"Check the path")),
    "study_not_yaml": Case(lambda c: _study_file(c, "name: [unclosed\n"), 2, (r"bad\.yaml", r"not valid YAML",
                                                                             r"line 2")),
    "study_not_a_mapping": Case(lambda c: _study_file(c, "- a\n- b\n"), 2, (r"bad\.yaml", r"a study file is a mapping",
                                                                           r"name, task, base, arms")),
    "study_value_out_of_range": Case(lambda c: _study_file(c, "name: x\narms: {a: {overrides: "
                                                              "{phase2.max_epochs: 0}}}\n"), 2,
                                     (r"bad\.yaml", r"phase2\.max_epochs=0", r"greater than or equal to 1")),
    # --- damaged run folders: show / report ------------------------------------------------------------
    "show_damaged_summary": Case(lambda c: (_write(c.run_dir / "summary.json", '{"status": "succ'),
                                            ["show", str(c.out)])[1], 0,
                                 (r"DAMAGED", r"summary\.json is damaged", r"JSONDecodeError",
                                  r"Running the study again reruns it")),
    "show_damaged_run_json": Case(lambda c: (_write(c.run_dir / "run.json", b"\xff\xfe"), ["show", str(c.out)])[1],
                                  0, (r"DAMAGED", r"run\.json is damaged", r"UnicodeDecodeError",
                                      r"Running the study again")),
    "show_damaged_status": Case(lambda c: (_write(c.run_dir / "status.json", "[1, 2"), ["show", str(c.out)])[1],
                                0, (r"DAMAGED", r"status\.json is damaged", r"Running the study again")),
    "report_damaged_summary": Case(lambda c: (_write(c.run_dir / "summary.json", "{"), ["report", str(c.out)])[1],
                                   0, (r"report: .*report\.md",), report_says=(r"frozen__s0__\w+", r"summary\.json "
                                                                                r"unreadable")),
    "report_non_utf8_metrics_line": Case(
        lambda c: (_write(c.run_dir / "metrics.jsonl", (c.run_dir / "metrics.jsonl").read_bytes() + b"\xff\xfe\n"),
                   ["report", str(c.out)])[1], 0, (r"report: .*report\.md",),
        report_says=(r"frozen__s0__\w+", r"metrics\.jsonl line \d+ is not valid JSON and was skipped")),
    "report_damaged_study_json": Case(lambda c: (_write(c.out / "study.json", "{"), ["report", str(c.out)])[1], 0,
                                      (r"report: .*report\.md",), report_says=(r"study\.json unreadable",)),
    # --- damaged run folders: run (each is detected, said, and the run redone or resumed) ----------------
    "run_damaged_status_of_a_finished_run": Case(lambda c: (_write(c.run_dir / "status.json", "{"), c.run())[1], 0,
                                                 (r"1 skipped",), kept=True),
    "run_damaged_status_without_summary": Case(
        lambda c: ((c.run_dir / "summary.json").unlink(), _write(c.run_dir / "status.json", "{"), c.run())[2], 0,
        (r"status\.json is damaged", r"not a verified success, so it runs again", r"1 succeeded"), kept=True),
    "run_damaged_summary": Case(lambda c: (_write(c.run_dir / "summary.json", "{"), c.run())[1], 0,
                                (r"summary\.json is damaged", r"JSONDecodeError", r"runs again"), kept=True),
    "run_summary_of_another_config": Case(
        lambda c: (_write(c.run_dir / "summary.json", json.dumps({**files.read_json(c.run_dir / "summary.json"),
                                                                  "run_id": "other"})), c.run())[1], 0,
        (r"summary\.json belongs to another run or config", r"runs again"), kept=True),
    "run_truncated_best": Case(
        lambda c: (_write(c.run_dir / "checkpoints" / "best.safetensors", b"x" * 10), c.run())[1], 0,
        (r"best\.safetensors has 10 bytes but [\d,]+ were written", r"truncated", r"runs again"), kept=True),
    "run_pickle_checkpoint_of_an_older_version": Case(
        lambda c: (c.interrupted(), _write(c.run_dir / "checkpoints" / "last.pt", pickle.dumps({"epoch": 2})),
                   c.run())[2], 0,
        (r"checkpoints/last\.pt is a pickle checkpoint from an older freezelab", r"never opened",
         r"starts over .*attempts/"), kept=True),
    "run_damaged_manifest": Case(lambda c: _manifest(c, '{"format": '), 0,
                                 (r"checkpoints/state\.json is damaged", r"starts this run over", r"attempts/"),
                                 kept=True),
    "run_manifest_of_another_format": Case(lambda c: _manifest(c, '{"format": "x", "files": {}}'), 0,
                                           (r"state\.json is not a freezelab-state/1 manifest",
                                            r"starts this run over"), kept=True),
    "run_manifest_missing_its_file": Case(
        lambda c: _manifest(c, json.dumps({"format": "freezelab-state/1", "metrics_bytes": 0, "state": {},
                                           "files": {"state.safetensors": {"sha256": "0" * 64, "size": 5}}})), 0,
        (r"state\.safetensors is missing \(it was recorded when written\)", r"starts this run over"), kept=True),
    "run_truncated_data_cache": Case(lambda c: _cache(c, ".npz", lambda b: b[: len(b) // 2]), 0, (r"1 succeeded",),
                                     log_says=(r"data cache .*lm-data-\w+\.npz is damaged or incomplete",
                                               r"truncated", r"rebuilding it"), kept=True),
    "run_damaged_data_cache_index": Case(lambda c: _cache(c, ".json", lambda b: b"{"), 0, (r"1 succeeded",),
                                         log_says=(r"data cache .*lm-data-\w+\.npz is damaged or incomplete",
                                                   r"JSONDecodeError", r"rebuilding it"), kept=True),
    # --- runs that fail: the message says where and the fix ---------------------------------------------
    "run_diverges": Case(lambda c: c.run("--set", "phase2.lr=1e30", "--seeds", "1"), 1,
                         (r"FAILED .*non_finite: the training loss is (nan|inf)", r"at epoch 1, step \d+",
                          r"gradient norms by group: token_block", r"Lower phase2\.lr \(now 1e\+30\)",
                          r"phase2\.grad_clip")),
    "run_out_of_memory": Case(_oom, 1, (r"FAILED .*out of memory at epoch 1", r"Tried to allocate 2\.00 GiB",
                                        r"Lower phase2\.batch_size \(now 32\), phase2\.eval_batch_size \(now 1024\)")),
    "run_disk_full": Case(_disk_full, 1, (r"FAILED .*no space left on device writing .*/checkpoints/\w+\.safetensors",
                                          r"Free space on that disk", r"resume from their last checkpoint")),
    "run_model_needs_remote_code": Case(_remote_code_model, 1, (r"FAILED .*needs-code' ships its own Python code",
                                                                r"auto_map", r"embedding\.trust_remote_code: true")),
    "run_model_missing": Case(lambda c: ["run", str(c.study_with("m", embedding__source=str(c.tmp / "no-model"))),
                                         "--out", str(c.tmp / "o"), "--isolation", "inline", "--no-report"], 1,
                              (r"FAILED .*no-model' could not be loaded", r"There is no folder .*no-model",
                               r"Fix embedding\.source")),
    "run_data_missing": Case(lambda c: ["run", str(c.study_with("d", data__path=str(c.tmp / "none" / "*.txt"))),
                                        "--out", str(c.tmp / "o"), "--isolation", "inline", "--no-report"], 1,
                             (r"FAILED", r"none/\*\.txt",)),
    "run_held_by_another_process": Case(_held, 3, (r"HELD .*frozen__s0", r"held by pid \d+ on lab-7 since "
                                                   r"2026-01-02T03:04:05", r"run again when it has finished, or "
                                                   r"pass --wait"), kept=True),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_corpus: Path) -> tuple[Path, Path]:
    from tests.conftest import tiny_base

    root = tmp_path_factory.mktemp("bad-inputs")
    study = root / "tiny.yaml"
    study.write_text(yaml.safe_dump({"name": "tiny", "task": "lm", "seeds": [0],
                                     "base": tiny_base(tiny_model_dir, tiny_corpus),
                                     "arms": {"frozen": {"reference": True}}}))
    res = CliRunner().invoke(app, ["run", str(study), "--out", str(root / "out"), "--isolation", "inline"])
    assert res.exit_code == 0, res.output
    return study, root / "out"


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_a_clear_error(name: str, finished: tuple[Path, Path], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    case = CASES[name]
    study, out = finished
    ctx = Ctx(study=study, out=tmp_path / "out", tmp=tmp_path, monkeypatch=monkeypatch)
    shutil.copytree(out, ctx.out)
    before = kill_helpers.result(ctx.out)
    args = case.setup(ctx)
    try:
        res = CliRunner().invoke(app, args)
    finally:
        for undo in ctx.cleanup:
            undo()
    output = " ".join(res.output.replace("│", " ").split())  # rich wraps long lines (and boxes errors)
    if res.exit_code != case.code or "Traceback" in res.output:
        pytest.fail(f"exit {res.exit_code}, expected {case.code}: {output}", pytrace=False)
    for pattern in case.says:
        if not re.search(pattern, output):
            pytest.fail(f"{pattern!r} not in the output: {output}", pytrace=False)
    log = (ctx.run_dir / "logs" / "run.log").read_text()
    for pattern in case.log_says:
        if not re.search(pattern, log):
            pytest.fail(f"{pattern!r} not in logs/run.log: {log[-3000:]}", pytrace=False)
    for pattern in case.report_says:
        report = " ".join((ctx.out / "report.md").read_text().split())
        if not re.search(pattern, report):
            pytest.fail(f"{pattern!r} not in report.md: {report[-3000:]}", pytrace=False)
    if case.kept:
        assert kill_helpers.result(ctx.out) == before
