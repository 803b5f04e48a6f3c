"""``phase2.loop``: documented in ``freezelab fields lm``, validated, and neutral in the config hash at its default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from freezelab.cli import app
from freezelab.config.load import load_study
from freezelab.errors import ConfigError
from freezelab.experiment.plan import make_plan
from freezelab.tasks.lm.config import LMConfig
from freezelab.tasks.registry import hash_view
from freezelab.utils.hashing import hash_json


def test_fields_documents_the_loop() -> None:
    out = CliRunner().invoke(app, ["fields", "lm"], env={"COLUMNS": "200", "TERM": "dumb"}).output
    line = next(ln for ln in out.splitlines() if "phase2.loop" in ln)
    assert "default 'batched'" in line and "per_token" in line and "timing parity" in out


def test_an_unknown_loop_is_refused_with_the_choices(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "task": "lm", "seeds": [0], "base": {"phase2": {"loop": "tokens"}},
                                    "arms": {"a": {"reference": True}}}))
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert "phase2.loop" in str(err.value) and "per_token" in str(err.value)


def test_the_default_loop_keeps_the_config_hash(tmp_path: Path) -> None:
    """A config at loop: batched hashes as the config without the key did (run ids of existing studies stay)."""
    cfg = LMConfig().model_dump()
    without = {**cfg, "phase2": {k: v for k, v in cfg["phase2"].items() if k != "loop"}}
    assert hash_view("lm", cfg) == hash_view("lm", without) and "loop" in cfg["phase2"]  # input unchanged
    path = tmp_path / "s.yaml"
    arms = {"a": {"reference": True}, "b": {"overrides": {"phase2.loop": "per_token"}}}
    path.write_text(yaml.safe_dump({"name": "s", "task": "lm", "seeds": [0], "arms": arms}))
    plan = {r.arm: r for r in make_plan(load_study(path))}
    assert plan["a"].config_hash == hash_json({"task": "lm", "config": hash_view("lm", without)})
    assert plan["b"].config_hash != plan["a"].config_hash
