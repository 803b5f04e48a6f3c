"""Study-file validation: every problem reported at once, with file, key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from freezelab.config.load import load_study
from freezelab.errors import ConfigError

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def _write(tmp_path: Path, study: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def _study(**base) -> dict:
    return {"name": "s", "task": "lm", "base": base, "arms": {"a": {"reference": True}}}


def test_unknown_key_names_file_and_key_path(tmp_path: Path) -> None:
    path = _write(tmp_path, _study(phase2={"max_epoch": 3}))
    with pytest.raises(ConfigError, match=r"study\.yaml: base\.phase2\.max_epoch: unknown key"):
        load_study(path)


def test_wrong_type_shows_value(tmp_path: Path) -> None:
    path = _write(tmp_path, _study(phase2={"batch_size": "many"}))
    with pytest.raises(ConfigError, match=r"base\.phase2\.batch_size='many'"):
        load_study(path)


def test_impossible_value_lists_allowed_values(tmp_path: Path) -> None:
    path = _write(tmp_path, _study(context={"reset": "sometimes"}))
    with pytest.raises(ConfigError, match=r"base\.context\.reset='sometimes'.*'per_document' or 'stream'"):
        load_study(path)


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    study = _study(phase2={"lr": -1, "patience": 0})
    study["arms"]["b"] = {"overrides": {"model.num_layerz": 2}}
    with pytest.raises(ConfigError) as info:
        load_study(_write(tmp_path, study))
    text = str(info.value)
    assert "3 problem(s)" in text
    assert "base.phase2.lr=-1" in text and "base.phase2.patience=0" in text
    assert "arms.b.overrides: model.num_layerz: unknown key" in text


def test_cross_field_rule_unfreeze_beyond_budget(tmp_path: Path) -> None:
    path = _write(tmp_path, _study(phase2={"max_epochs": 3, "unfreeze": {"at_epoch": 5}}))
    with pytest.raises(ConfigError, match=r"unfreeze.at_epoch=5 must be below phase2.max_epochs=3"):
        load_study(path)


def test_tied_head_cannot_be_frozen_apart_from_embedding(tmp_path: Path) -> None:
    path = _write(tmp_path, _study(embedding={"freeze": False}, model={"head": {"tie": True, "freeze": True}}))
    with pytest.raises(ConfigError, match="a tied head is the embedding itself"):
        load_study(path)


def test_random_embedding_needs_shape(tmp_path: Path) -> None:
    path = _write(tmp_path, _study(embedding={"source": "random"}))
    with pytest.raises(ConfigError, match="needs embedding.vocab_size and embedding.dim"):
        load_study(path)


def test_protected_key_needs_allow_confound(tmp_path: Path) -> None:
    study = _study()
    study["arms"]["more_data"] = {"overrides": {"data.max_train_docs": 99}}
    with pytest.raises(ConfigError, match=r"arms\.more_data\.overrides: data\.max_train_docs: protected key"):
        load_study(_write(tmp_path, study))
    study["arms"]["more_data"]["allow_confound"] = ["data.max_train_docs"]
    assert load_study(_write(tmp_path, study)).arms["more_data"].diff_from_base == {
        "data.max_train_docs": [None, 99]}


def test_resolution_order_profile_arm_cli(tmp_path: Path) -> None:
    study = _study(phase2={"lr": 0.1})
    study["arms"]["b"] = {"overrides": {"phase2.lr": 0.2}}
    study["profiles"] = {"quick": {"seeds": [7], "overrides": {"phase2.lr": 0.3, "phase1.max_iterations": 4}}}
    path = _write(tmp_path, study)
    s = load_study(path, profile="quick")
    assert s.seeds == [7]
    assert s.arms["a"].config["phase2"]["lr"] == 0.3 and s.arms["b"].config["phase2"]["lr"] == 0.2
    s = load_study(path, profile="quick", overrides=["phase2.lr=0.5"])
    assert s.arms["b"].config["phase2"]["lr"] == 0.5
    with pytest.raises(ConfigError, match="profile 'full' not found"):
        load_study(path, profile="full")


def test_reference_arm_unique(tmp_path: Path) -> None:
    study = _study()
    study["arms"]["b"] = {"reference": True}
    with pytest.raises(ConfigError, match="only one arm may have reference"):
        load_study(_write(tmp_path, study))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_validates(path: Path) -> None:
    study = load_study(path)
    assert study.arms and study.reference in study.arms
    for profile in study.spec.profiles:
        load_study(path, profile=profile)


def test_every_config_field_is_documented() -> None:
    """STYLE: every field has a description (shown by `freezelab fields` and the report)."""
    from freezelab.config.schema import LMConfig, StudyConfig, iter_fields

    missing = [key for model, prefix in ((LMConfig, ""), (StudyConfig, "study."))
               for key, info in iter_fields(model, prefix) if not info.description]
    assert missing == []


def test_fields_command_lists_keys() -> None:
    from typer.testing import CliRunner

    from freezelab.cli import app

    res = CliRunner().invoke(app, ["fields", "lm"])
    assert res.exit_code == 0 and "phase2.unfreeze.at_epoch" in res.output and "embedding.freeze" in res.output
