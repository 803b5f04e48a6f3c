"""Freeze mechanics (protocol §1): groups built once, frozen = flags + eval + lr 0, counts over unique tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from freezelab.errors import InvariantViolation
from freezelab.freeze.invariants import (
    check_expected_counts,
    check_frozen_unchanged,
    count_parameters,
    dead_tensors,
    frozen_state,
    snapshot,
)
from freezelab.freeze.param_groups import FreezeController, ParamGroup
from freezelab.tasks.lm.config import LMConfig
from freezelab.tasks.lm.model import original_block_params
from freezelab.tasks.lm.task import LMTask

GPT2 = {"source": "random", "vocab_size": 50257, "dim": 768, "tokenizer": "minilm"}


def _inspect(**over) -> dict:
    cfg = {"embedding": {**GPT2, **over.pop("embedding", {})}, **over}
    return LMTask().inspect(LMConfig.model_validate(cfg).model_dump(mode="json"))


def test_seed_configuration_counts() -> None:
    """cvfp-lm.md §2: 52,782,336 total; 7,091,712 trainable with wte (and embed_norm) frozen."""
    c = _inspect()
    assert c["total"] == 52_782_336
    assert c["trainable"] == 7_091_712
    assert c["frozen"] == 52_782_336 - 7_091_712
    assert c["tied"] == 1 and c["tied_aliases"] == {"wte.weight": ["head (tied)"]}


@pytest.mark.parametrize(("over", "total", "trainable"), [
    ({"model": {"embed_norm": "trainable_shared"}}, 52_782_336, 7_093_248),   # the original's trainable set
    ({"embedding": {"freeze": False}}, 52_782_336, 45_689_088),               # tied_trainable
    ({"model": {"head": {"tie": False}}}, 91_379_712, 45_689_088),            # frozen_in_untied_head
    ({"model": {"head": {"tie": False, "bias": True, "init": "zeros"}}}, 91_429_969, 45_739_345),
])
def test_arm_counts(over: dict, total: int, trainable: int) -> None:
    c = _inspect(**over)
    assert (c["total"], c["trainable"]) == (total, trainable)


def test_the_reports_49_2m_needs_two_input_tokens() -> None:
    """§2: "~49.2M trainable" = wte + TokenBlock(n=2, original shapes) + embed_norm; freezelab's fixed widths
    (layer 1 d_c + n·d_e, later layers d_c + d_e) give a smaller, runnable TokenBlock."""
    c = _inspect(embedding={"freeze": False}, model={"num_input_tokens": 2, "embed_norm": "trainable_shared"})
    original = original_block_params(768, 768, 768, 2, 6)
    assert original == 10_630_656
    assert c["by_group"]["embed"]["numel"] + original + 1_536 == 49_229_568
    assert c["by_group"]["token_block"]["numel"] == (2304 * 768 + 3 * 768) + 5 * 1_181_952


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
        self.head = nn.Linear(4, 2)
        self.shared = self.head  # a second module path to the same tensors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _controller(frozen_body: bool = True) -> tuple[Tiny, FreezeController]:
    torch.manual_seed(0)
    model = Tiny()
    return model, FreezeController(model, [ParamGroup("body", [model.body], frozen=frozen_body),
                                           ParamGroup("head", [model.head])])


def test_counts_deduplicate_shared_modules() -> None:
    model, _ = _controller()
    c = count_parameters(model)
    assert c.total == 4 * 4 + 4 + 4 + 4 + 4 * 2 + 2  # shared head counted once
    assert c.tied == 2 and c.tied_aliases["head.weight"] == ["shared.weight"]
    assert c.frozen == 28 and c.trainable == 10 and c.buffers == 4 + 4 + 1
    with pytest.raises(InvariantViolation, match="declares total=1"):
        check_expected_counts(c, {"total": 1}, "arm")


def test_frozen_means_flags_eval_and_zero_lr() -> None:
    model, ctl = _controller()
    model.train()  # must put frozen subtrees straight back into eval mode
    assert not model.body[1].training and not model.body[2].training and model.head.training
    assert all(not p.requires_grad for p in model.body.parameters())
    opt = ctl.build_optimizer(0.1)
    sched = ctl.build_scheduler(opt, 0.1)
    assert [pg["name"] for pg in opt.param_groups] == ["body", "head"]  # frozen group present from step 0
    assert [pg["lr"] for pg in opt.param_groups] == [0.0, 0.1]
    ctl.check_lrs(opt, 0.1)
    bn_before = snapshot(frozen_state(model, {id(p) for _, p in ctl.frozen_params()}))
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        model(torch.randn(8, 4)).sum().backward()
        ctl.check_no_frozen_grads()
        opt.step()
        sched.step()
    # BatchNorm running statistics are buffers: eval mode kept them bit-identical too (pytorch#86590)
    check_frozen_unchanged(bn_before, frozen_state(model, {id(p) for _, p in ctl.frozen_params()}), when="test")


def test_unfreeze_flips_flags_only_and_lrs_follow() -> None:
    model, ctl = _controller()
    opt = ctl.build_optimizer(0.1)
    sched = ctl.build_scheduler(opt, 0.1)
    n_groups = len(opt.param_groups)
    before = snapshot(list(model.body.named_parameters()))
    ctl.groups["body"].lr_scale = 0.5
    ctl.set_frozen("body", False)
    ctl.sync_lrs(opt)
    assert len(opt.param_groups) == n_groups and model.body[1].training is False  # mode follows next train()
    model.train()
    assert model.body[1].training
    for _ in range(3):
        ctl.check_lrs(opt, 0.1)  # I5 at every step: base · scale · active
        assert [pg["lr"] for pg in opt.param_groups] == [pytest.approx(0.05), pytest.approx(0.1)]
        opt.zero_grad(set_to_none=True)
        model(torch.randn(8, 4)).sum().backward()
        opt.step()
        sched.step()
    assert dead_tensors(before, list(model.body.named_parameters())) == []  # unfrozen tensors changed


def test_lr_override_is_caught() -> None:
    _, ctl = _controller()
    opt = ctl.build_optimizer(0.1)
    ctl.build_scheduler(opt, 0.1)
    opt.param_groups[0]["lr"] = 0.1  # what OneCycleLR-style schedulers do to a frozen group
    with pytest.raises(InvariantViolation, match="lr_override"):
        ctl.check_lrs(opt, 0.1)


def test_frozen_module_in_train_mode_is_caught() -> None:
    model, _ = _controller()
    nn.Module.train(model.body, True)  # bypass the patched train(): a bug elsewhere
    with pytest.raises(InvariantViolation, match="frozen_in_train_mode"):
        model(torch.randn(4, 4))


def test_changed_frozen_tensor_is_caught_and_named() -> None:
    model, ctl = _controller()
    named = frozen_state(model, {id(p) for _, p in ctl.frozen_params()})
    before = snapshot(named)
    with torch.no_grad():
        model.body[0].weight[0, 0] += 1e-7  # one ulp-scale change is enough
    with pytest.raises(InvariantViolation, match=r"frozen_tensor_changed.*body\.0\.weight"):
        check_frozen_unchanged(before, frozen_state(model, {id(p) for _, p in ctl.frozen_params()}), when="now")


def test_parameter_in_no_group_is_rejected() -> None:
    model = Tiny()
    with pytest.raises(InvariantViolation, match="parameters in no group"):
        FreezeController(model, [ParamGroup("head", [model.head])])


def test_phase_snapshots_flag_dead_tensors_once_per_phase() -> None:
    from freezelab.freeze.invariants import PhaseSnapshots

    model, ctl = _controller()
    phase = PhaseSnapshots.take(model, ctl)
    with pytest.raises(InvariantViolation, match="all_trainable_dead"):
        phase.check_first_step(1)  # no step taken: every trainable tensor is still bit-identical
    ctl.set_frozen("body", False)  # a new phase (unfreeze): snapshots are taken again
    phase = PhaseSnapshots.take(model, ctl)
    opt = ctl.build_optimizer(0.1)
    model.train()
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    assert phase.check_dead and phase.check_first_step(2) == [] and not phase.check_dead
