"""The command line as a user reads it: choices in --help, --version, completion, fields, show, inspect."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from freezelab.cli import app, type_name
from tests.report_fixtures import make_lm_study

ROOT = Path(__file__).parents[2]


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "TERM": "dumb"})


@pytest.mark.parametrize(("command", "choices"), [
    ("run", ["<process|inline>", "<local|ray>"]), ("report", ["<en|ja>"]),
    ("bench", ["<auto|cpu|cuda>", "<all|step|e2e|run>"]),
    ("fields", ["lm, timeseries, classify", "file.py:Class"])])
def test_choice_options_show_their_choices(command: str, choices: list[str]) -> None:
    res = _invoke(command, "--help")
    assert res.exit_code == 0, res.output
    for c in choices:
        assert c in res.output, (c, res.output)


def test_a_wrong_choice_is_refused_with_the_choices(tmp_path: Path) -> None:
    res = _invoke("report", str(tmp_path), "--lang", "de")
    assert res.exit_code == 2 and "'en'" in res.output and "'ja'" in res.output


def test_version_and_completion() -> None:
    res = _invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"freezelab {version('freezelab')}"
    top = _invoke("--help").output
    assert "--install-completion" in top and "--show-completion" in top and "--version" in top


def test_fields_shows_inner_types_and_required_keys() -> None:
    res = _invoke("fields", "lm")
    assert res.exit_code == 0
    assert "data.max_train_docs (Optional[int], default None)" in res.output
    assert "phase2.unfreeze.at_epoch (int, required)" in res.output
    assert "PydanticUndefined" not in res.output
    ts = _invoke("fields", "timeseries").output
    assert "data.split (tuple[float, float, float], default (0.7, 0.15, 0.15))" in ts
    assert "windows.max_gap_minutes (dict[str, Optional[float]], default {})" in ts
    assert "masking.ratio (Union[float, dict[str, float]], default 0.15)" in ts


def test_type_name_reads_like_python() -> None:
    from typing import Literal, Optional, Union

    assert type_name(Optional[list[int]]) == "Optional[list[int]]"
    assert type_name(Union[int, str, None]) == "Optional[Union[int, str]]"
    assert type_name(Literal["a", "b"]) == "Literal['a', 'b']"
    assert type_name(int | None) == "Optional[int]"


def test_show_keeps_the_study_order_marks_the_reference_and_formats_like_the_report(tmp_path: Path) -> None:
    out = make_lm_study(tmp_path / "out")                       # arms: tied_frozen (ref), untied, tied_trainable
    res = _invoke("show", str(out))
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if re.match(r"^\W*(tied|untied|baseline)", line)]
    arms = [re.sub(r"[│┃ ]+", " ", r).split()[0] for r in rows]
    assert arms == ["tied_frozen", "tied_frozen", "tied_frozen", "untied", "untied", "untied",
                    "tied_trainable", "tied_trainable", "tied_trainable", "baseline:", "baseline:"]
    assert all("(ref)" in r for r in rows[:3]) and not any("(ref)" in r for r in rows[3:])
    assert "18.80%" in res.output                               # test/acc 0.188 as the report writes it
    assert "330.00" in res.output and "910.00" in res.output    # ppl with two decimals


def test_inspect_prints_its_table_once(tmp_path: Path) -> None:
    study = yaml.safe_load((ROOT / "examples" / "embedding-freeze.yaml").read_text())
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    res = _invoke("inspect", str(path), "--set", "embedding.source=random", "--set", "embedding.tokenizer=minilm",
                  "--set", "embedding.vocab_size=1000", "--set", "embedding.dim=8")
    assert res.exit_code == 0, res.output
    assert res.output.count(f"{len(study['arms'])} arms × seeds") == 1 and res.output.count("tied_frozen (ref)") == 1


def test_show_marks_a_run_under_an_older_config_superseded_and_lists_it_last(tmp_path: Path) -> None:
    import json
    import shutil

    out = make_lm_study(tmp_path / "out")
    current = next((out / "runs").glob("untied__s0__*"))
    old = out / "runs" / "untied__s0__0ldc0nf1"                 # the same (arm, seed) under an older config hash
    shutil.copytree(current, old)
    status = json.loads((old / "status.json").read_text())
    (old / "status.json").write_text(json.dumps({**status, "status": "running", "updated_at": "2024-01-01T00:00:00"}))
    res = _invoke("show", str(out))
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if re.match(r"^\W*(tied|untied)", line)]
    assert "superseded" in rows[-1] and rows[-1].split()[1] == "untied"
    assert sum("superseded" in r for r in rows) == 1


def test_bench_on_cuda_without_a_cuda_device_says_so_and_exits_2() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = _invoke("bench", "--device", "cuda", "--mode", "step")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "--device cuda: torch sees no CUDA device here" in text and "drop --device" in text


def test_storage_applies_with_the_ray_executor_only(tmp_path: Path) -> None:
    result = _invoke("run", str(ROOT / "examples" / "embedding-freeze.yaml"), "--out", str(tmp_path / "out"),
                     "--storage", str(tmp_path / "store"))
    assert result.exit_code == 2
    assert "--storage applies with --executor ray" in " ".join(result.output.split())
    assert not (tmp_path / "store").exists() and not (tmp_path / "out").exists()


def test_a_second_head_on_a_storage_in_use_exits_2_before_anything_runs(tmp_path: Path) -> None:
    import json
    import time

    store = tmp_path / "store"
    store.mkdir()
    (store / "head.json").write_text(json.dumps({"token": "t", "host": "other-node", "pid": 7, "out_dir": "/o",
                                                 "heartbeat": time.time()}))
    result = _invoke("run", str(ROOT / "examples" / "embedding-freeze.yaml"), "--profile", "quick", "--out",
                     str(tmp_path / "out"), "--executor", "ray", "--storage", str(store))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "another freezelab head drives this storage (host other-node, pid 7" in text
    assert sorted(p.name for p in store.iterdir()) == ["head.json"]  # nothing pushed, the lease left alone
    assert not (tmp_path / "out" / "runs").exists()


def test_data_parallel_with_fp16_on_the_time_series_task_is_refused_with_the_fix(tmp_path: Path) -> None:
    result = _invoke("run", str(ROOT / "examples" / "t5-transfer.yaml"), "--profile", "quick", "--out",
                     str(tmp_path / "out"), "--set", "runtime.devices=2", "--set", "runtime.precision=fp16")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "runtime.devices=2 is not available with runtime.precision: fp16" in text
    assert "use runtime.precision: bf16 or fp32" in text
    assert not (tmp_path / "out").exists()
