"""What a tiny study leaves for humans: TensorBoard scalars on one step axis, HParams sessions grouped by
arm (read back from the event files and from a real TensorBoard server), and the live progress lines."""

from __future__ import annotations

import io
import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from freezelab.config.load import load_study
from freezelab.experiment.plan import make_plan
from freezelab.experiment.runner import run_plan
from freezelab.tracking.files import read_json

pytestmark = pytest.mark.integration
EVERY = 2


@pytest.fixture(scope="module")
def study_out(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_corpus: Path) -> dict:
    from tests.conftest import tiny_base

    tmp = tmp_path_factory.mktemp("tracking")
    base = tiny_base(tiny_model_dir, tiny_corpus)
    base["runtime"]["log_every_steps"] = EVERY
    arms = {"frozen": {"reference": True}, "trainable": {"overrides": {"embedding.freeze": False}},
            "broken": {"overrides": {"embedding.source": str(tmp / "missing-model")}}}
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "tracking", "task": "lm", "seeds": [0], "base": base, "arms": arms},
                                   sort_keys=False))
    study = load_study(path)
    console_out = io.StringIO()
    run_plan(study, make_plan(study), tmp / "out", isolation="inline", tensorboard=True,
             console=Console(file=console_out, force_terminal=False, width=400))
    return {"out": tmp / "out", "console": console_out.getvalue()}


def _run_dir(out: Path, arm: str) -> Path:
    (d,) = (out / "runs").glob(f"{arm}__s0__*")
    return d


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return acc


def test_per_step_scalars_on_one_global_step_axis(study_out: dict) -> None:
    run_dir = _run_dir(study_out["out"], "trainable")
    summary = read_json(run_dir / "summary.json")
    acc = _events(run_dir)
    tags = set(acc.Tags()["scalars"])

    def steps(tag: str) -> list[int]:
        return [e.step for e in acc.Scalars(tag)]

    per_epoch = math.ceil(summary["train_tokens"] / 32)       # phase2.batch_size of the tiny base
    expected = list(range(EVERY, summary["steps"] + 1, EVERY))
    for tag in ("train/step_loss", "lr/token_block", "lr/embed", "grad_norm/token_block", "grad_norm/embed"):
        assert steps(tag) == expected, tag
    epoch_steps = [per_epoch * e for e in range(1, summary["epochs_run"] + 1)]
    for tag in ("train/loss", "val/loss", "val/ppl"):
        assert steps(tag) == epoch_steps, tag
    assert steps("test/ppl") == [summary["steps"]] and steps("best/val/loss") == [summary["steps"]]
    # Phase 1 on its own axis (iterations; 0 is the untrained recurrence, without a loss) under its own tags
    iterations = summary["phase1"]["iterations"]
    assert steps("phase1/train/er") == list(range(iterations))
    assert steps("phase1/cvfp_loss") == list(range(1, iterations))
    assert {"phase1/train/er", "phase1/val/er", "phase1/conv_rate"} <= tags
    for tag in tags:
        parts = tag.split("/")
        assert parts[0] != parts[1] and not tag.startswith("phase2/"), tag
        assert steps(tag) == sorted(set(steps(tag))), tag   # strictly increasing
    # the frozen arm's embedding has no gradient: no grad-norm curve, an lr of 0
    frozen = _events(_run_dir(study_out["out"], "frozen"))
    assert "grad_norm/embed" not in frozen.Tags()["scalars"]
    assert {e.value for e in frozen.Scalars("lr/embed")} == {0.0}


def _plugin(acc, tag: str):
    from tensorboard.plugins.hparams import metadata

    content = acc.PluginTagToContent("hparams")[tag]
    return {metadata.SESSION_START_INFO_TAG: metadata.parse_session_start_info_plugin_data,
            metadata.SESSION_END_INFO_TAG: metadata.parse_session_end_info_plugin_data,
            metadata.EXPERIMENT_TAG: metadata.parse_experiment_plugin_data}[tag](content)


def test_every_run_is_an_hparams_session_grouped_by_arm(study_out: dict, tiny_model_dir: Path) -> None:
    from tensorboard.plugins.hparams import api_pb2, metadata

    out = study_out["out"]
    for arm, freeze, status in (("frozen", True, api_pb2.STATUS_SUCCESS), ("trainable", False, api_pb2.STATUS_SUCCESS),
                                ("broken", True, api_pb2.STATUS_FAILURE)):
        acc = _events(_run_dir(out, arm))
        start = _plugin(acc, metadata.SESSION_START_INFO_TAG)
        assert start.group_name == arm
        hp = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        assert hp["arm"] == arm and hp["seed"] == 0 and hp["reference"] is (arm == "frozen")
        assert hp["embedding.freeze"] is freeze
        source = str(out.parent / "missing-model") if arm == "broken" else str(tiny_model_dir)
        assert hp["embedding.source"] == source            # every run fills every column
        assert set(hp) == {"arm", "seed", "reference", "embedding.freeze", "embedding.source"}
        assert _plugin(acc, metadata.SESSION_END_INFO_TAG).status == status
    summary = read_json(_run_dir(out, "trainable") / "summary.json")
    acc = _events(_run_dir(out, "trainable"))
    assert acc.Scalars("best/val/loss")[0].value == pytest.approx(summary["best"]["metrics"]["val/loss"])
    assert acc.Scalars("test/ppl")[0].value == pytest.approx(summary["test"]["test/ppl"])
    unigram = summary["baselines"]["unigram"]["test/ppl"]
    assert acc.Scalars("baseline/unigram/test/ppl")[0].value == pytest.approx(unigram)
    assert acc.Scalars("best/epoch")[0].value == summary["best"]["epoch"]
    # the study's experiment: the columns and the metrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = EventAccumulator(str(out / "runs"))
    root.Reload()
    exp = _plugin(root, metadata.EXPERIMENT_TAG)
    assert [h.name for h in exp.hparam_infos] == ["arm", "seed", "reference", "embedding.freeze", "embedding.source"]
    assert list(exp.hparam_infos[0].domain_discrete) and exp.hparam_infos[3].type == api_pb2.DATA_TYPE_BOOL
    names = [m.name.tag for m in exp.metric_infos]
    assert names[0] == "best/epoch" and {"best/val/loss", "test/ppl", "baseline/kn_bigram/test/ppl"} <= set(names)


def test_a_second_pass_does_not_duplicate_sessions(study_out: dict) -> None:
    from freezelab.experiment.publish import publish_run

    run_dir = _run_dir(study_out["out"], "frozen")
    before = sorted(p.name for p in (run_dir / "tb").iterdir())
    publish_run(run_dir, study_out["out"])
    assert sorted(p.name for p in (run_dir / "tb").iterdir()) == before
    assert len(list((study_out["out"] / "runs").glob("events.out.tfevents.*"))) == 1


def test_tensorboard_server_groups_sessions_by_arm(study_out: dict) -> None:
    """The HParams dashboard's own query, answered by a real TensorBoard on the study's runs/ folder."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(study_out["out"] / "runs"),
                             "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    query = {"experimentName": "", "allowedStatuses": ["STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_UNKNOWN"],
             "colParams": [{"hparam": "arm"}, {"metric": {"tag": "best/val/loss"}}], "startIndex": 0,
             "sliceSize": 100, "aggregationType": "AGGREGATION_AVG"}
    groups: list = []
    try:
        deadline = time.time() + 90
        while time.time() < deadline and len(groups) < 3:
            time.sleep(1)
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups",
                                             data=json.dumps(query).encode(),
                                             headers={"Content-Type": "application/json"})
                groups = json.loads(urllib.request.urlopen(req, timeout=10).read())["sessionGroups"]
            except OSError:
                continue
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"frozen", "trainable", "broken"}, groups
    assert by_name["trainable"]["hparams"]["arm"] == "trainable"
    assert [s["name"].split("/")[0].split("__")[0] for s in by_name["frozen"]["sessions"]] == ["frozen"]
    best = read_json(_run_dir(study_out["out"], "frozen") / "summary.json")["best"]["metrics"]["val/loss"]
    values = {m["name"]["tag"]: m["value"] for m in by_name["frozen"]["metricValues"]}
    assert values["best/val/loss"] == pytest.approx(best)


def test_progress_lines_name_the_log_and_the_failure(study_out: dict) -> None:
    text = study_out["console"]
    out = study_out["out"]
    for i, arm in enumerate(("frozen", "trainable", "broken"), start=1):
        d = _run_dir(out, arm)
        assert f"[{i}/3] {arm} seed 0: log {d / 'logs' / 'run.log'} · tensorboard {d / 'tb'}" in text
    assert "frozen seed 0 succeeded in" in text and "best val/loss" in text
    broken = _run_dir(out, "broken")
    assert "FAILED broken seed 0 after" in text and "PretrainedUnavailableError" in text
    assert f"traceback: {broken / 'logs' / 'run.log'}" in text
    assert "Traceback" in (broken / "logs" / "run.log").read_text()
    p = json.loads((_run_dir(out, "frozen") / "progress.json").read_text())
    summary = read_json(_run_dir(out, "frozen") / "summary.json")
    assert p["phase"] == "phase2" and p["done"] == summary["steps"] and p["epoch"] == summary["epochs_run"]
