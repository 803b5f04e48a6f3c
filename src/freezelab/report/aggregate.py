"""Run folders -> in-memory study -> tidy pandas tables (docs/run-folder.md is the contract).

Only files are read: ``study.json`` and ``runs/<run_id>/{run.json, status.json, summary.json,
metrics.jsonl, config.yaml}``. Nothing is parsed from logs, and no run is dropped silently: runs
that did not succeed keep their place (status ``failed``, ``interrupted``, ``running``, ``pending``,
``incomplete`` or ``missing``) and are excluded from aggregates only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from freezelab.errors import ConfigError, DataError, DataNotFoundError
from freezelab.tracking.items import ItemScores, read_run_items

HEARTBEAT_STALE_SECONDS = 600  # docs/run-folder.md: a `running` status older than 10 minutes is interrupted
META_KEYS = ("kind", "phase", "epoch", "iteration", "step")
HIGHER_IS_BETTER = ("acc", "top1", "top5", "r2", "corr")
RUN_ID_RE = re.compile(r"^(?P<arm>.+)__s(?P<seed>-?\d+)__(?P<hash>[0-9a-zA-Z]+)$")


@dataclass
class Run:
    """One run folder (or a declared (arm, seed) with no folder: status ``missing``)."""

    run_id: str
    path: Path | None
    arm: str
    seed: int
    status: str
    status_json: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # run.json
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml
    metrics: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    items: dict[str, ItemScores] = field(default_factory=dict)  # items/<source>.npz, validated

    @property
    def ok(self) -> bool:
        """True for a succeeded run with a summary: the only runs that enter aggregates."""
        return self.status == "succeeded"

    @property
    def error(self) -> dict[str, Any]:
        """The error record (status.json first, then summary.json); empty when there is none."""
        return self.status_json.get("error") or self.summary.get("error") or {}

    def label(self) -> str:
        """Cell text of a run that did not succeed, e.g. ``FAILED (ValueError: boom)``."""
        if self.status == "failed":
            err = self.error
            cls = err.get("class") or err.get("code") or "error"
            msg = str(err.get("message") or signal_text(err) or "no message recorded").splitlines()
            return f"FAILED ({cls}: {msg[0] if msg else ''})"
        reason = {"interrupted": "no heartbeat for >10 min", "missing": "no run folder",
                  "incomplete": "; ".join(self.problems) or "summary.json missing"}.get(self.status)
        return f"{self.status.upper()} ({reason})" if reason else self.status.upper()

    @cached_property
    def epochs(self) -> pd.DataFrame:
        """Epoch lines as a frame indexed by epoch (last line wins, as a resumed run re-logs)."""
        return _frame(self.metrics, "epoch", "epoch")

    @cached_property
    def iterations(self) -> pd.DataFrame:
        """Iteration lines (LM Phase 1) as a frame indexed by iteration (last line wins)."""
        return _frame(self.metrics, "iteration", "iteration")

    @property
    def best_epoch(self) -> int | None:
        """The selected epoch from summary.json ``best.epoch``."""
        epoch = (self.summary.get("best") or {}).get("epoch")
        return int(epoch) if epoch is not None else None

    def value(self, key: str) -> float:
        """A metric at the selected epoch: ``test/*`` from ``test``, else ``best.metrics``, else the
        epoch line at the best epoch. NaN when unknown."""
        if key.startswith("test/"):
            return _num((self.summary.get("test") or {}).get(key))
        best = (self.summary.get("best") or {}).get("metrics") or {}
        if key in best:
            return _num(best[key])
        ep = self.best_epoch
        if ep is not None and ep in self.epochs.index and key in self.epochs.columns:
            return _num(self.epochs.at[ep, key])
        return math.nan


@dataclass(eq=False)
class Study:
    """Everything the report needs, read from one output folder."""

    out_dir: Path
    name: str
    task: str
    spec: dict[str, Any]  # study.json (empty if absent)
    runs: list[Run]  # current runs, sorted by arm order then seed
    arms: list[str]
    seeds: list[int]
    reference: str
    headline: list[dict[str, Any]]  # [{name, mode, log_scale}]
    selection: dict[str, Any]
    superseded: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    whole: Study | None = None  # a protocol group's sub-study (report/protocols.py): the study it is part of

    @property
    def full(self) -> Study:
        """The whole study (itself, unless this is a protocol group's sub-study)."""
        return self.whole or self

    def arm_runs(self, arm: str, *, ok_only: bool = False) -> list[Run]:
        """Runs of one arm (all states, or succeeded only)."""
        return [r for r in self.runs if r.arm == arm and (r.ok or not ok_only)]

    def values(self, key: str, arm: str) -> dict[int, float]:
        """seed -> value of ``key`` at the selected epoch, over the arm's succeeded runs (finite only)."""
        out = {r.seed: r.value(key) for r in self.arm_runs(arm, ok_only=True)}
        return {s: v for s, v in out.items() if math.isfinite(v)}


def signal_text(err: dict[str, Any]) -> str:
    """Human text for a dead process: SIGKILL is reported as likely out of memory (protocol §5)."""
    sig = err.get("signal")
    if sig:
        sig = str(sig)
        return f"{sig}: killed, likely out of memory" if sig in ("SIGKILL", "9", "-9") else f"signal {sig}"
    code = err.get("exit_code")
    return f"exit code {code}" if code not in (None, 0) else ""


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _frame(lines: list[dict[str, Any]], kind: str, index: str) -> pd.DataFrame:
    rows = [ln for ln in lines if ln.get("kind") == kind and ln.get(index) is not None]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df[index] = df[index].astype(int)
    df = df.drop_duplicates(subset=index, keep="last").set_index(index).sort_index()
    keep = [c for c in df.columns if c not in META_KEYS]
    return df[keep].apply(pd.to_numeric, errors="coerce")


def _read_json(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: invalid JSON or not UTF-8
        problems.append(f"{path.name} unreadable ({exc})")
        return {}
    return data if isinstance(data, dict) else {}


def _read_metrics(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    if not path.exists():
        return lines
    for i, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            problems.append(f"metrics.jsonl line {i} is not valid JSON and was skipped")
            continue
        if isinstance(obj, dict):
            lines.append(obj)
    return lines


def _parse_time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _state(status_json: dict, summary: dict, problems: list[str]) -> str:
    state = status_json.get("status") or summary.get("status") or "unknown"
    if state == "running":
        beat = _parse_time(status_json.get("heartbeat_at") or status_json.get("updated_at"))
        if beat is None or (datetime.now(timezone.utc) - beat).total_seconds() > HEARTBEAT_STALE_SECONDS:
            return "interrupted"
    if state == "succeeded" and not summary:
        problems.append("status.json says succeeded but summary.json is missing")
        return "incomplete"
    return state


def read_run(path: Path) -> Run:
    """Read one ``runs/<run_id>/`` folder; unreadable files become ``problems``, never exceptions."""
    problems: list[str] = []
    info = _read_json(path / "run.json", problems)
    status_json = _read_json(path / "status.json", problems)
    summary = _read_json(path / "summary.json", problems)
    config: dict[str, Any] = {}
    if (path / "config.yaml").exists():
        try:
            config = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            problems.append(f"config.yaml unreadable ({exc})")
    match = RUN_ID_RE.match(path.name)
    ident = {**({"arm": match["arm"], "seed": int(match["seed"])} if match else {}),
             **{k: v for k, v in summary.items() if k in ("arm", "seed")},
             **{k: v for k, v in status_json.items() if k in ("arm", "seed")},
             **{k: v for k, v in info.items() if k in ("arm", "seed")}}
    if "arm" not in ident or "seed" not in ident:
        raise DataError(f"{path}: cannot tell arm and seed (no run.json, status.json or summary.json, and the "
                        "folder name is not <arm>__s<seed>__<hash>). Remove the folder or restore run.json.")
    state = _state(status_json, summary, problems)
    items, item_problems = read_run_items(path)
    return Run(run_id=str(info.get("run_id") or path.name), path=path, arm=str(ident["arm"]),
               seed=int(ident["seed"]), status=state, status_json=status_json, summary=summary,
               info=info, config=config if isinstance(config, dict) else {},
               metrics=_read_metrics(path / "metrics.jsonl", problems), problems=problems + item_problems,
               items=items)


def _arm_names(spec: dict[str, Any]) -> list[str]:
    arms = spec.get("arms") or {}
    if isinstance(arms, dict):
        return [str(a) for a in arms]
    return [str(a.get("name")) for a in arms if isinstance(a, dict) and a.get("name")]


def _spec_reference(spec: dict[str, Any]) -> str | None:
    for key in ("reference", "reference_arm"):
        if isinstance(spec.get(key), str):
            return spec[key]
    arms = spec.get("arms") or {}
    items = arms.items() if isinstance(arms, dict) else ((a.get("name"), a) for a in arms)
    return next((str(n) for n, a in items if isinstance(a, dict) and a.get("reference")), None)


def _expected_runs(spec: dict[str, Any], found: list[Run]) -> tuple[list[tuple[str, int]], list[str]]:
    """The (arm, seed) runs asked for, and the declared arms that were never asked for.

    ``study.json`` ``planned`` lists what every ``freezelab run`` invocation requested. Without it (older
    folders), every declared arm that has a run folder is expected with every declared seed.
    """
    declared = _arm_names(spec)
    planned = spec.get("planned")
    if isinstance(planned, list) and planned:
        pairs = [(str(p[0]), int(p[1])) for p in planned
                 if isinstance(p, list) and len(p) == 2 and isinstance(p[1], int)]
        asked = {a for a, _ in pairs} | {r.arm for r in found}
        return pairs, [a for a in declared if a not in asked]
    seeds = [int(s) for s in spec.get("seeds") or []] or sorted({r.seed for r in found})
    with_runs = {r.arm for r in found}
    arms = [a for a in declared if a in with_runs]
    return [(a, s) for a in arms for s in seeds], [a for a in declared if a not in with_runs]


def _updated(run: Run) -> str:
    return str(run.status_json.get("updated_at") or "")


def load_study(out_dir: Path, reference: str | None = None) -> Study:
    """Read ``OUT/study.json`` and every ``OUT/runs/*/`` folder.

    Args:
        out_dir: the ``--out`` folder of ``freezelab run``.
        reference: reference arm; default: study.json's, else the run marked ``reference: true``.

    Returns:
        The loaded ``Study``.

    Raises:
        DataNotFoundError: no ``runs/`` folder or no run folder in it.
        ConfigError: ``reference`` names an arm without runs.
    """
    out_dir = Path(out_dir)
    runs_dir = out_dir / "runs"
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    if not folders:
        raise DataNotFoundError(f"No run folders under {runs_dir}. Run 'freezelab run STUDY.yaml --out {out_dir}'"
                                " first, or pass the folder that contains runs/.")
    problems: list[str] = []
    spec = _read_json(out_dir / "study.json", problems)
    found = [read_run(p) for p in folders]
    # An (arm, seed) with several folders (config changed): keep the most recently updated one.
    current: dict[tuple[str, int], Run] = {}
    for run in sorted(found, key=_updated):
        current[(run.arm, run.seed)] = run
    superseded = [r for r in found if current[(r.arm, r.seed)] is not r]
    expected, not_run = _expected_runs(spec, found)
    arms = [a for a in _arm_names(spec) if a not in not_run]
    arms += sorted({r.arm for r in found} - set(arms))
    seeds = sorted({s for _, s in expected} | {r.seed for r in found})
    for arm, seed in expected:  # requested but never started: keep a visible placeholder
        current.setdefault((arm, seed), Run(f"{arm}__s{seed}", None, arm, seed, "missing"))
    if not_run:
        problems.append(f"arms declared in the study but never run here (not requested): {', '.join(not_run)}")
    runs = sorted(current.values(), key=lambda r: (arms.index(r.arm), r.seed))
    ref = reference or _spec_reference(spec) or next((r.arm for r in runs if r.info.get("reference")), None)
    if reference is not None and reference not in arms:
        raise ConfigError(f"--reference {reference!r} is not an arm of this study; arms: {', '.join(arms)}.")
    if ref is None:
        ref = arms[0]
        problems.append(f"no reference arm declared; using the first arm, {ref!r}")
    summaries = [r.summary for r in runs if r.summary]
    first = next((s for s in summaries if s.get("status") == "succeeded"), summaries[0] if summaries else {})
    return Study(out_dir=out_dir, name=str(spec.get("name") or first.get("study") or out_dir.name),
                 task=str(spec.get("task") or first.get("task") or "unknown"), spec=spec, runs=runs,
                 arms=arms, seeds=seeds, reference=ref, headline=_headline(summaries),
                 selection=dict(first.get("selection") or {"metric": "val/loss", "mode": "min"}),
                 superseded=superseded, problems=problems)


def _headline(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Union of the ``headline`` entries of all summaries, in first-seen order."""
    seen: dict[str, dict[str, Any]] = {}
    for s in summaries:
        for h in s.get("headline") or []:
            if isinstance(h, dict) and h.get("name") and h["name"] not in seen:
                base = str(h["name"]).rsplit("/", 1)[-1].lower()
                default = "max" if base.startswith(HIGHER_IS_BETTER) else "min"  # when `mode` is absent
                seen[h["name"]] = {"name": str(h["name"]), "mode": h.get("mode", default),
                                   "log_scale": bool(h.get("log_scale", False))}
    return list(seen.values()) or [{"name": "loss", "mode": "min", "log_scale": False}]


def throughput(summary: dict[str, Any]) -> Any:
    """Training units per second of a run: tokens (LM), windows (time series) or items (a freezelab.Task)."""
    for key in ("tokens_per_second", "windows_per_second", "items_per_second"):
        if summary.get(key) is not None:
            return summary[key]
    return None


def split_key(key: str) -> tuple[str, str]:
    """``val/corr/h1`` -> (``val``, ``corr/h1``); ``seconds`` -> (``""``, ``seconds``)."""
    head, sep, tail = key.partition("/")
    return (head, tail) if sep else ("", key)


def results_table(study: Study) -> pd.DataFrame:
    """Long table of every logged number: study, arm, seed, epoch, split, metric, value.

    Extra columns: ``kind`` (epoch | iteration | best | test), ``phase``, ``iteration``, ``run_id``,
    ``status``. Runs that did not succeed keep their partial rows; filter on ``status`` to aggregate.
    """
    rows: list[tuple] = []
    for run in study.runs:
        base = (study.name, run.arm, run.seed)
        for line in run.metrics:
            kind, phase = line.get("kind"), line.get("phase")
            for key, value in line.items():
                if key in META_KEYS or isinstance(value, (dict, list, str, bool)) or value is None:
                    continue
                rows.append((*base, line.get("epoch"), *split_key(key), value, kind, phase,
                             line.get("iteration"), run.run_id, run.status))
        best = run.summary.get("best") or {}
        for kind, values in (("best", best.get("metrics") or {}), ("test", run.summary.get("test") or {})):
            for key, value in values.items():
                rows.append((*base, best.get("epoch"), *split_key(key), value, kind, None, None,
                             run.run_id, run.status))
    cols = ["study", "arm", "seed", "epoch", "split", "metric", "value", "kind", "phase", "iteration",
            "run_id", "status"]
    df = pd.DataFrame(rows, columns=cols)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    for col in ("epoch", "iteration"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    return df


def runs_table(study: Study) -> pd.DataFrame:
    """One row per run: status, times, counts, throughput, hashes and the error, if any."""
    rows = []
    for run in study.runs + study.superseded:
        s, st, err = run.summary, run.status_json, run.error
        params, hashes, env = s.get("params") or {}, s.get("hashes") or {}, s.get("environment") or {}
        rows.append({
            "study": study.name, "arm": run.arm, "seed": run.seed, "run_id": run.run_id,
            "status": run.status, "current": run not in study.superseded, "attempt": st.get("attempt"),
            "started_at": st.get("started_at"), "updated_at": st.get("updated_at"),
            "wall_seconds": s.get("wall_seconds"), "epochs_run": s.get("epochs_run"),
            "max_epochs": s.get("max_epochs"), "steps": s.get("steps"), "best_epoch": run.best_epoch,
            **{f"params_{k}": params.get(k) for k in ("total", "trainable", "frozen", "tied", "unused",
                                                       "buffers")},
            "train_tokens": s.get("train_tokens", s.get("train_windows", s.get("train_items"))),
            "tokens_seen": s.get("tokens_seen", s.get("windows_seen", s.get("items_seen"))),
            "tokens_per_second": throughput(s),
            "peak_memory_bytes": s.get("peak_memory_bytes"),
            **{k: hashes.get(k) for k in ("data_hash", "split_hash", "eval_hash", "budget_hash",
                                          "pretrained_hash", "config_hash")},
            "git_commit": env.get("git_commit"), "device": env.get("device"),
            "precision": env.get("precision"),
            "error_class": err.get("class"), "error_code": err.get("code"), "error_message": err.get("message"),
            "problems": "; ".join(run.problems) or None,
        })
    return pd.DataFrame(rows)


def epoch_values(study: Study, arm: str, key: str) -> dict[int, dict[int, float]]:
    """epoch -> {seed: value} of one epoch metric over the arm's succeeded runs."""
    out: dict[int, dict[int, float]] = {}
    for run in study.arm_runs(arm, ok_only=True):
        if key not in run.epochs.columns:
            continue
        for epoch, value in run.epochs[key].items():
            if pd.notna(value):
                out.setdefault(int(epoch), {})[run.seed] = float(value)
    return dict(sorted(out.items()))


def epoch_metric_keys(study: Study) -> list[str]:
    """All epoch metric keys logged by succeeded runs, in first-seen order."""
    keys: dict[str, None] = {}
    for run in study.runs:
        if run.ok:
            keys.update(dict.fromkeys(run.epochs.columns))
    return list(keys)
