"""Export a study to MLflow (``freezelab run ... --mlflow [TRACKING_URI]``, extra ``mlflow``).

One MLflow run per freezelab run, nested under one parent run per study output folder, written from the
run folder's files when the run ends (or when a later ``freezelab run`` finds it ended and not yet
exported): params = the resolved config flattened; tags = arm, seed, reference, status, attempt,
hashes; metrics = every metrics.jsonl record on the same step axis as TensorBoard, then the best-epoch,
test and baseline metrics; artefacts = summary, config, status and log. A failed run is FAILED with
its error as a tag. The parent gets the report as artefacts. The default store is SQLite under OUT.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from freezelab.errors import FreezelabError
from freezelab.tracking import files
from freezelab.tracking.hparams import run_metrics
from freezelab.tracking.tracker import scalars

MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 5000


def default_uri(out_dir: Path) -> str:
    """The local store of a study: ``sqlite:///OUT/mlflow.db``."""
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def _client(uri: str) -> Any:
    for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..." is noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as err:
        raise FreezelabError("--mlflow needs MLflow: pip install 'freezelab[mlflow]' (mlflow-skinny with SQLite "
                             "support), or drop --mlflow") from err
    return MlflowClient(tracking_uri=uri)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class MlflowSink:
    """Exports finished run folders of one study output folder to an MLflow tracking store.

    Args:
        out_dir: the study's output folder (holds study.json and runs/).
        tracking_uri: an MLflow tracking URI; None or "" = ``default_uri(out_dir)``.

    Raises:
        FreezelabError: MLflow is not installed, or the store cannot be opened.
    """

    def __init__(self, out_dir: Path, tracking_uri: str | None = None) -> None:
        self.out_dir = Path(out_dir).resolve()
        local = not tracking_uri
        self.uri = tracking_uri or default_uri(self.out_dir)
        self.client = _client(self.uri)
        record = files.read_json(self.out_dir / "study.json")
        self.study = record["name"]
        try:
            exp = self.client.get_experiment_by_name(self.study)
            self.experiment_id = exp.experiment_id if exp is not None else self.client.create_experiment(
                self.study, artifact_location=(self.out_dir / "mlartifacts").as_uri() if local else None)
        except Exception as err:
            raise FreezelabError(f"MLflow store {self.uri} cannot be used: {type(err).__name__}: {err}") from err
        self.parent_id = self._parent(record)

    def _parent(self, record: dict[str, Any]) -> str:
        """The study's parent run for this output folder: found by tag, else created."""
        found = self.client.search_runs([self.experiment_id], filter_string=(
            f"tags.freezelab_kind = 'study' and tags.out_dir = '{self.out_dir}'"), max_results=1)
        if found:
            return found[0].info.run_id
        run = self.client.create_run(self.experiment_id, run_name=self.study, tags={
            "freezelab_kind": "study", "out_dir": str(self.out_dir), "study": self.study,
            "reference": record.get("reference") or "", "task": record.get("task") or "",
            "command": (record.get("command") or "")[:MAX_TAG_CHARS]})
        from mlflow.entities import Param

        params = [Param("arms", ",".join(record.get("arms") or {})), Param("seeds", json.dumps(record.get("seeds"))),
                  Param("profile", str(record.get("profile"))), Param("reference", str(record.get("reference")))]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def _exported(self, run_id: str, attempt: int) -> bool:
        return bool(self.client.search_runs([self.experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{self.parent_id}' and tags.run_id = '{run_id}' and "
            f"tags.attempt = '{attempt}'"), max_results=1))

    def run_finished(self, run_dir: Path) -> None:
        """Export one run folder that has ended; a run already exported (same attempt) is left alone."""
        from mlflow.entities import Param

        from freezelab.config.load import flatten

        run_dir = Path(run_dir)
        status = files.read_status(run_dir) or {}
        state = status.get("status")
        if state not in ("succeeded", "failed"):
            return
        meta = files.read_json(run_dir / files.RUN_FILE)
        attempt = int(status.get("attempt") or 0)
        if self._exported(meta["run_id"], attempt):
            return
        summary = files.read_json(run_dir / files.SUMMARY_FILE) if (run_dir / files.SUMMARY_FILE).exists() else {}
        config = yaml.safe_load((run_dir / files.CONFIG_FILE).read_text(encoding="utf-8")) or {}
        flat = flatten(config)
        error = summary.get("error") or status.get("error")
        tags = {"mlflow.parentRunId": self.parent_id, "run_id": meta["run_id"], "arm": meta["arm"],
                "seed": str(meta["seed"]), "reference": str(bool(meta.get("reference"))).lower(), "status": state,
                "attempt": str(attempt), "study": self.study,
                **{k: str(v) for k, v in (summary.get("hashes") or {}).items()},
                **{f"diff.{k}": json.dumps(v[1]) for k, v in (meta.get("diff_from_base") or {}).items()}}
        if error:
            tags["error"] = f"{error.get('class')}: {error.get('message')}"[:MAX_TAG_CHARS]
        run = self.client.create_run(self.experiment_id, run_name=f"{meta['arm']} s{meta['seed']}",
                                     tags={k: v[:MAX_TAG_CHARS] for k, v in tags.items()})
        rid = run.info.run_id
        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v)
                  for k, v in flat.items()]
        for batch in _batches([Param(p.key, p.value[:MAX_PARAM_CHARS]) for p in params], 100):
            self.client.log_batch(rid, params=batch)
        metrics = self._metrics(run_dir, summary, per_step=(flat.get("runtime.log_every_steps") or 0) > 0)
        for batch in _batches(metrics, 1000):
            self.client.log_batch(rid, metrics=batch)
        for name in (files.SUMMARY_FILE, files.CONFIG_FILE, files.STATUS_FILE, "logs/run.log"):
            if (run_dir / name).exists():
                self.client.log_artifact(rid, str(run_dir / name), artifact_path=str(Path(name).parent)
                                         if "/" in name else None)
        if error:
            self.client.set_tag(rid, "error_traceback", "\n".join(error.get("traceback_tail") or [])[-MAX_TAG_CHARS:])
        self.client.set_terminated(rid, "FINISHED" if state == "succeeded" else "FAILED")

    def _metrics(self, run_dir: Path, summary: dict[str, Any], *, per_step: bool) -> list[Any]:
        from mlflow.entities import Metric

        now = _now_ms()
        out = []
        path = run_dir / files.METRICS_FILE
        for line in (path.read_text(encoding="utf-8").splitlines() if path.exists() else []):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line of a killed run
            step = record.get("iteration") if record.get("kind") == "iteration" else record.get("step")
            for tag, value in scalars(record, per_step=per_step).items():
                out.append(Metric(tag, value, now, int(step or 0)))
        final = int(summary.get("steps") or 0)
        out += [Metric(tag, value, now, final) for tag, value in run_metrics(summary).items()]
        return [m for m in out if m.value == m.value]  # MLflow stores NaN badly; non-finite steps are in the jsonl

    def study_finished(self, report_paths: list[Path]) -> None:
        """Attach the report files to the study's parent run and mark it finished."""
        for path in report_paths:
            if Path(path).is_file():
                self.client.log_artifact(self.parent_id, str(path), artifact_path="report")
        self.client.set_terminated(self.parent_id, "FINISHED")
