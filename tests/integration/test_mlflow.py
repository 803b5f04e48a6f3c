"""`freezelab run --mlflow` on a tiny study, read back from the local SQLite store with MLflow's own client."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from freezelab.cli import app
from freezelab.config.load import flatten
from freezelab.tracking.files import read_json

pytestmark = pytest.mark.integration
mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (mlflow-skinny) is not installed")
pytest.importorskip("sqlalchemy", reason="MLflow's SQLite store needs sqlalchemy (the mlflow extra)")
EVERY = 3


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_corpus: Path) -> dict:
    from tests.conftest import tiny_base

    tmp = tmp_path_factory.mktemp("mlflow")
    base = tiny_base(tiny_model_dir, tiny_corpus)
    base["runtime"]["log_every_steps"] = EVERY
    arms = {"frozen": {"reference": True}, "trainable": {"overrides": {"embedding.freeze": False}},
            "broken": {"overrides": {"embedding.source": str(tmp / "missing-model")}}}
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny-mlflow", "task": "lm", "seeds": [0], "base": base, "arms": arms},
                                   sort_keys=False))
    out = tmp / "out"
    args = ["run", str(path), "--out", str(out), "--isolation", "inline", "--mlflow"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output  # the broken arm failed (README: exit codes)
    again = CliRunner().invoke(app, [*args, "--no-report", "--skip-failed"])  # all skipped: nothing exported twice
    assert again.exit_code == 1, again.output
    from mlflow.tracking import MlflowClient

    from freezelab.tracking.mlflow_sink import default_uri

    client = MlflowClient(tracking_uri=default_uri(out))
    return {"out": out, "client": client, "output": first.output,
            "experiment": client.get_experiment_by_name("tiny-mlflow")}


def _runs(ctx: dict) -> dict:
    runs = ctx["client"].search_runs([ctx["experiment"].experiment_id])
    return {r.data.tags.get("arm", "(study)"): r for r in runs}


def _run_dir(out: Path, arm: str) -> Path:
    (d,) = (out / "runs").glob(f"{arm}__s0__*")
    return d


def test_one_nested_run_per_freezelab_run_under_the_study(exported: dict) -> None:
    assert len(exported["client"].search_runs([exported["experiment"].experiment_id])) == 4
    runs = _runs(exported)
    assert sorted(runs) == ["(study)", "broken", "frozen", "trainable"]      # a second pass added nothing
    parent = runs["(study)"]
    assert parent.data.tags["freezelab_kind"] == "study" and parent.info.status == "FINISHED"
    for arm in ("frozen", "trainable", "broken"):
        assert runs[arm].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert f"mlflow: sqlite:///{exported['out'].resolve() / 'mlflow.db'}" in exported["output"].replace("\n", "")
    artefacts = {a.path for a in exported["client"].list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html"} <= artefacts


def test_params_tags_and_status_come_from_the_run_folder(exported: dict) -> None:
    runs = _runs(exported)
    for arm in ("frozen", "trainable"):
        run_dir = _run_dir(exported["out"], arm)
        r = runs[arm]
        assert r.info.status == "FINISHED" and r.data.tags["status"] == "succeeded"
        config = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()))
        assert r.data.params["embedding.freeze"] == json.dumps(config["embedding.freeze"])
        assert r.data.params["phase2.lr"] == json.dumps(config["phase2.lr"])
        assert len(r.data.params) == len(config)
        summary = read_json(run_dir / "summary.json")
        assert r.data.tags["data_hash"] == summary["hashes"]["data_hash"]
        assert r.data.tags["config_hash"] == summary["hashes"]["config_hash"]
        assert r.data.tags["seed"] == "0" and r.data.tags["reference"] == str(arm == "frozen").lower()
    assert runs["trainable"].data.tags["diff.embedding.freeze"] == "false"


def test_failed_run_is_failed_with_its_error(exported: dict) -> None:
    r = _runs(exported)["broken"]
    assert r.info.status == "FAILED" and r.data.tags["status"] == "failed"
    assert r.data.tags["error"].startswith("PretrainedUnavailableError:") and "missing-model" in r.data.tags["error"]
    assert "load_embedding" in r.data.tags["error_traceback"]
    names = {a.path for a in exported["client"].list_artifacts(r.info.run_id)}
    assert {"summary.json", "status.json", "config.yaml"} <= names


def test_metrics_per_step_and_epoch_then_best_and_test(exported: dict) -> None:
    client = exported["client"]
    r = _runs(exported)["trainable"]
    summary = read_json(_run_dir(exported["out"], "trainable") / "summary.json")
    rid = r.info.run_id

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(rid, key))

    assert [s for s, _ in history("train/step_loss")] == list(range(EVERY, summary["steps"] + 1, EVERY))
    assert [s for s, _ in history("grad_norm/embed")] == list(range(EVERY, summary["steps"] + 1, EVERY))
    per_epoch = math.ceil(summary["train_tokens"] / 32)
    val = history("val/loss")
    assert [s for s, _ in val] == [per_epoch * e for e in range(1, summary["epochs_run"] + 1)]
    assert min(v for _, v in val) == pytest.approx(summary["best"]["metrics"]["val/loss"])
    assert r.data.metrics["best/val/loss"] == pytest.approx(summary["best"]["metrics"]["val/loss"])
    assert r.data.metrics["test/ppl"] == pytest.approx(summary["test"]["test/ppl"])
    assert r.data.metrics["baseline/kn_bigram/test/ppl"] == pytest.approx(summary["baselines"]["kn_bigram"]["test/ppl"])
    assert [s for s, _ in history("phase1/train/er")] == list(range(summary["phase1"]["iterations"]))
