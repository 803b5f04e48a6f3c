"""Study-file validation: every problem reported at once, with file, key, value and what is allowed."""

from __future__ import annotations

import re
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


def test_an_override_that_replaces_a_mapping_names_the_keys_it_would_drop(tmp_path: Path) -> None:
    """Issue 20: `phase2: {lr: 0.2}` in an arm used to replace the base's whole phase2 section, silently
    putting its max_epochs and batch_size back to their defaults. Refused, naming them; dotted keys and a
    mapping that keeps every key set before are accepted."""
    study = _study(phase2={"lr": 0.1, "max_epochs": 3, "batch_size": 64})
    study["arms"]["b"] = {"overrides": {"phase2": {"lr": 0.2}}}
    with pytest.raises(ConfigError) as info:
        load_study(_write(tmp_path, study))
    (line,) = [p for p in _problems(info) if "arms.b" in p]
    assert re.search(r"would drop (phase2\.max_epochs|phase2\.batch_size), (phase2\.max_epochs|phase2\.batch_size);",
                     line) and "phase2.lr: …" in line, line
    study["arms"]["b"] = {"overrides": {"phase2.lr": 0.2}}
    study["arms"]["c"] = {"overrides": {"phase2": {"lr": 0.3, "max_epochs": 3, "batch_size": 64}}}
    s = load_study(_write(tmp_path, study))
    assert s.arms["b"].config["phase2"]["max_epochs"] == 3 and s.arms["c"].config["phase2"]["lr"] == 0.3
    with pytest.raises(ConfigError, match=r"--set phase2: replaces the whole mapping .*would drop phase2\.lr"):
        load_study(_write(tmp_path, study), overrides=["phase2={max_epochs: 3, batch_size: 64}"])


def test_a_profile_may_run_a_subset_of_the_arms(tmp_path: Path) -> None:
    study = _study()
    study["arms"].update(b={"overrides": {"phase2.lr": 0.2}}, c={})
    study["profiles"] = {"quick": {"arms": ["a", "c"]}, "bad": {"arms": ["c", "zz"]}}
    path = _write(tmp_path, study)
    assert list(load_study(path).arms) == ["a", "b", "c"]
    assert list(load_study(path, profile="quick").arms) == ["a", "c"]
    assert list(load_study(path, profile="quick", all_arms=True).arms) == ["a", "b", "c"]  # run --arms b
    with pytest.raises(ConfigError, match=r"(?s)profiles.bad.arms: zz.*not an arm of the study.*"
                                          r"the reference arm must be in"):
        load_study(path, profile="bad")


def test_the_shipped_quick_demo_leaves_the_reference_model_out() -> None:
    path = next(p for p in EXAMPLES if p.name == "embedding-freeze.yaml")
    assert "gpt2_reference" in load_study(path).arms
    assert "gpt2_reference" not in load_study(path, profile="quick").arms


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
    from freezelab.config.fields import iter_fields
    from freezelab.config.schema import StudyConfig
    from freezelab.tasks.lm.config import LMConfig

    missing = [key for model, prefix in ((LMConfig, ""), (StudyConfig, "study."))
               for key, info in iter_fields(model, prefix) if not info.description]
    assert missing == []


def test_fields_command_lists_keys() -> None:
    from typer.testing import CliRunner

    from freezelab.cli import app

    res = CliRunner().invoke(app, ["fields", "lm"])
    assert res.exit_code == 0 and "phase2.unfreeze.at_epoch" in res.output and "embedding.freeze" in res.output


# ----------------------------------------------------------------------------- one pass, did you mean, --set
def _problems(info: pytest.ExceptionInfo) -> list[str]:
    return [line.strip() for line in str(info.value).splitlines()[1:]]


def test_misspelled_overrides_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    study = _study(phase2={"max_epoch": 3, "lr": -1})
    study["arms"]["b"] = {"overides": {"embedding.freeze": False}}
    study["arms"]["c"] = {"overrides": {"model.num_layerz": 2, "phase2.lr": 0}}
    with pytest.raises(ConfigError, match=r"5 problem\(s\)") as info:
        load_study(_write(tmp_path, study))
    lines = _problems(info)
    assert any(re.search(r"study\.yaml: arms\.b\.overides: unknown key; did you mean arms\.b\.overrides\?", x)
               for x in lines), lines
    assert any("base.phase2.max_epoch: unknown key; did you mean base.phase2.max_epochs?" in x for x in lines)
    assert any(x.endswith("base.phase2.lr=-1: Input should be greater than 0") for x in lines)
    assert any("arms.c.overrides: model.num_layerz: unknown key; did you mean model.num_layers?" in x for x in lines)
    assert any("arms.c.overrides: phase2.lr=0: Input should be greater than 0" in x for x in lines)


def test_a_key_in_the_wrong_section_names_the_right_one(tmp_path: Path) -> None:
    study = _study(batch_size=4, phase1={"max_epochs": 3})
    study["arms"]["b"] = {"overrides": {"model.lr": 0.1}}
    with pytest.raises(ConfigError) as info:
        load_study(_write(tmp_path, study))
    text = str(info.value)
    assert "base.batch_size: unknown key; 'batch_size' belongs in phase2: did you mean base.phase2.batch_size?" in text
    assert "base.phase1.max_epochs: unknown key; 'max_epochs' belongs in phase2: did you mean base.phase2.max_epochs?" \
        in text
    assert ("arms.b.overrides: model.lr: unknown key; 'lr' belongs in phase1 or phase2: "
            "did you mean phase1.lr or phase2.lr?") in text


def test_task_keys_at_the_study_level_point_to_base_or_overrides(tmp_path: Path) -> None:
    study = _study()
    study["phase2"] = {"lr": 0.1}
    study["arms"]["b"] = {"embedding.freeze": False}
    study["profiles"] = {"quick": {"seed": [1]}}
    with pytest.raises(ConfigError) as info:
        load_study(_write(tmp_path, study))
    text = str(info.value)
    assert "study.yaml: phase2: unknown key; task settings go under base: base.phase2" in text
    assert "arms.b.embedding.freeze: unknown key; task keys go under arms.b.overrides: {embedding.freeze: ...}" in text
    assert "profiles.quick.seed: unknown key; did you mean profiles.quick.seeds?" in text


def test_set_errors_are_attributed_to_set_once(tmp_path: Path) -> None:
    study = _study()
    study["arms"].update({"b": {"overrides": {"embedding.freeze": False}}, "c": {"overrides": {"model.num_layers": 2}}})
    path = _write(tmp_path, study)
    with pytest.raises(ConfigError) as info:
        load_study(path, overrides=["phase2.lr=-1", "phase2.batchsize=3", "model.head.tie=maybe", "oops"])
    lines = _problems(info)
    assert lines == ["--set oops: not of the form dotted.key=value (e.g. --set phase2.max_epochs=3)",
                     "--set model.head.tie='maybe': Input should be a valid boolean, unable to interpret input",
                     "--set phase2.lr=-1: Input should be greater than 0",
                     "--set phase2.batchsize: unknown key; did you mean phase2.batch_size?"]


def test_profile_problems_are_the_profiles(tmp_path: Path) -> None:
    study = _study(phase2={"max_epochs": 5, "unfreeze": {"at_epoch": 3}})
    study["profiles"] = {"quick": {"overrides": {"phase2.max_epochs": 2, "phase2.lrr": 1}}}
    path = _write(tmp_path, study)
    load_study(path)  # the base alone is valid
    with pytest.raises(ConfigError) as info:
        load_study(path, profile="quick")
    lines = _problems(info)
    assert len(lines) == 2, lines
    assert any("profiles.quick.overrides: phase2: phase2.unfreeze.at_epoch=3 must be below phase2.max_epochs=2"
               in x for x in lines)
    assert any("profiles.quick.overrides: phase2.lrr: unknown key; did you mean phase2.lr?" in x for x in lines)


def test_two_references_do_not_hide_arm_problems(tmp_path: Path) -> None:
    study = _study()
    study["arms"]["b"] = {"reference": True, "allow_confound": ["data.max_train_doc"]}
    study["arms"]["c"] = {"overrides": {"data.max_train_docs": 3}}
    with pytest.raises(ConfigError, match=r"3 problem\(s\)") as info:
        load_study(_write(tmp_path, study))
    text = str(info.value)
    assert "only one arm may have reference: true" in text
    assert "arms.b.allow_confound: data.max_train_doc: not a config key; did you mean data.max_train_docs?" in text
    assert "arms.c.overrides: data.max_train_docs: protected key" in text


def test_timeseries_study_gets_the_same_hints(tmp_path: Path) -> None:
    study = {"name": "s", "task": "timeseries", "base": {"train": {"max_epoch": 2}, "lr": 0.1},
             "arms": {"a": {"reference": True, "overrides": {"backbone.trian": "frozen"}}}}
    with pytest.raises(ConfigError) as info:
        load_study(_write(tmp_path, study))
    text = str(info.value)
    assert "base.train.max_epoch: unknown key; did you mean base.train.max_epochs?" in text
    assert "base.lr: unknown key; 'lr' belongs in optim: did you mean base.optim.lr?" in text
    assert "arms.a.overrides: backbone.trian: unknown key; did you mean backbone.train?" in text


# Config hashes of the shipped embedding-freeze study recorded before the faithful LM options were added
# (context.cache, data.split, phase1.er): the new keys at their defaults must not rename existing runs.
SHIPPED_HASHES = {"tied_frozen": "fea83cb8", "tied_trainable": "dcc217df", "frozen_in_untied_head": "3328fb92",
                  "random_tied": "553299bf", "no_phase1": "df56748f"}


def test_new_faithful_keys_keep_the_shipped_config_hashes_and_change_them_when_set(tmp_path: Path) -> None:
    from freezelab.experiment.plan import make_plan

    root = Path(__file__).parents[2]
    study = load_study(root / "examples" / "embedding-freeze.yaml")
    hashes = {r.arm: r.config_hash[:8] for r in make_plan(study, seeds=[0])}
    assert {arm: h for arm, h in hashes.items() if arm in SHIPPED_HASHES} == SHIPPED_HASHES  # arms added later aside
    shipped = yaml.safe_load((root / "examples" / "embedding-freeze.yaml").read_text())
    shipped["arms"] = {a: v for a, v in shipped["arms"].items() if a in SHIPPED_HASHES}  # a reference model has no
    copy = _write(tmp_path, shipped)                                                  # contexts to cache per epoch
    for key, value in (("context.cache", "per_epoch"), ("data.split", "token_fraction"), ("phase1.er", "legacy")):
        changed = load_study(copy, overrides=[f"{key}={value}"])
        assert make_plan(changed, arms=["tied_frozen"], seeds=[0])[0].config_hash[:8] != SHIPPED_HASHES["tied_frozen"]


def test_new_lm_options_are_validated_with_the_key_and_the_fix(tmp_path: Path) -> None:
    path = _write(tmp_path, _study(context={"cache": "per_epoch"}, model={"use_context": False}))
    with pytest.raises(ConfigError, match=r"context.cache=per_epoch with model.use_context=false.*drop context.cache"):
        load_study(path)
    for key, bad, allowed in (("context", {"cache": "each_epoch"}, "once"), ("data", {"split": "tokens"}, "document"),
                              ("phase1", {"er": "centred"}, "centred_fixed")):
        with pytest.raises(ConfigError, match=rf"{key}\.{next(iter(bad))}.*{allowed}"):
            load_study(_write(tmp_path, _study(**{key: bad})))
