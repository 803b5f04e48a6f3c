"""Named parameter groups, built once, and the one meaning of "frozen" (protocol §1.1–1.3).

A frozen group has requires_grad=False, its modules in eval mode (re-applied after every
``model.train()``), an effective learning rate of 0 and no weight decay. Unfreezing flips these flags
and nothing else: the optimizer keeps the same groups in the same order for the whole run, so
schedulers, resume and per-group LR checks keep working (Lightning #6891, transformers #20029).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from freezelab.errors import InvariantViolation


@dataclass
class ParamGroup:
    """One named group: its modules (for eval mode), parameters and optimizer settings."""

    name: str
    modules: list[nn.Module]
    lr_scale: float = 1.0
    weight_decay: float = 0.0
    frozen: bool = False
    params: list[nn.Parameter] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.params:
            seen: set[int] = set()
            for m in self.modules:
                for p in m.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        self.params.append(p)

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)


class FreezeController:
    """Owns the group layout of one model and enforces what frozen means.

    Args:
        model: the model; every parameter must belong to exactly one group (I4).
        groups: the named groups, in optimizer order.

    Raises:
        InvariantViolation: a parameter is in no group or in two groups.
    """

    def __init__(self, model: nn.Module, groups: list[ParamGroup]) -> None:
        self.model = model
        self.groups = {g.name: g for g in groups}
        self.order = [g.name for g in groups]
        owner: dict[int, str] = {}
        for g in groups:
            for p in g.params:
                if id(p) in owner:
                    raise InvariantViolation("group_layout", f"a tensor is in groups '{owner[id(p)]}' "
                                             f"and '{g.name}'; every parameter belongs to exactly one")
                owner[id(p)] = g.name
        names = {id(p): n for n, p in model.named_parameters()}
        missing = [names[i] for i in names if i not in owner]
        if missing:
            raise InvariantViolation("group_layout", f"parameters in no group: {missing[:5]}")
        self._patch_train()
        self._hooks = [m.register_forward_pre_hook(self._eval_check(g.name))
                       for g in groups for m in g.modules]
        self.apply()

    # -------------------------------------------------------------- flags
    def apply(self) -> None:
        """Push every group's frozen flag into requires_grad and module modes."""
        for g in self.groups.values():
            for p in g.params:
                p.requires_grad_(not g.frozen)
        self._set_frozen_eval()

    def set_frozen(self, name: str, frozen: bool) -> None:
        """Freeze or unfreeze one group (flags only; the optimizer layout never changes)."""
        self.groups[name].frozen = frozen
        self.apply()

    def frozen_params(self) -> list[tuple[str, nn.Parameter]]:
        """(group name, tensor) for every parameter of every frozen group."""
        return [(g.name, p) for g in self.groups.values() if g.frozen for p in g.params]

    def trainable_params(self) -> list[nn.Parameter]:
        return [p for g in self.groups.values() if not g.frozen for p in g.params]

    def _set_frozen_eval(self) -> None:
        for g in self.groups.values():
            if g.frozen:
                for m in g.modules:
                    m.eval()

    def _patch_train(self) -> None:
        """Make ``model.train()`` put frozen subtrees back into eval mode (pytorch#86590)."""
        original = self.model.train
        controller = self

        def train(mode: bool = True) -> nn.Module:
            original(mode)
            controller._set_frozen_eval()
            return controller.model

        self.model.train = train  # type: ignore[method-assign]

    def _eval_check(self, name: str) -> Callable:
        def hook(module: nn.Module, _inputs: tuple) -> None:  # I6
            if self.groups[name].frozen and module.training and torch.is_grad_enabled():
                raise InvariantViolation("frozen_in_train_mode",
                                         f"a module of frozen group '{name}' ran forward in train mode")
        return hook

    # -------------------------------------------------------------- optimizer
    def build_optimizer(self, base_lr: float, *, kind: Literal["adam", "adamw"] = "adam",
                        **kwargs: Any) -> torch.optim.Optimizer:
        """One optimizer over *all* groups, frozen ones included, each tagged with its name."""
        param_groups = [{"params": self.groups[n].params, "name": n, "lr": base_lr * self.groups[n].lr_scale,
                         "weight_decay": self.groups[n].weight_decay} for n in self.order]
        cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
        return cls(param_groups, lr=base_lr, **kwargs)

    def lr_lambdas(self, schedule: Callable[[int], float] = lambda s: 1.0) -> list[Callable[[int], float]]:
        """Per-group LambdaLR multipliers: scale_g · f(s) · active_g(s) (protocol I5).

        The lambdas read the group's live ``frozen`` flag, so unfreezing needs no scheduler change.
        The optimizer's initial lr must be ``base_lr`` for every group (LambdaLR multiplies it).
        """
        def make(name: str) -> Callable[[int], float]:
            g = self.groups[name]
            return lambda s: 0.0 if g.frozen else g.lr_scale * schedule(s)
        return [make(n) for n in self.order]

    def build_scheduler(self, optimizer: torch.optim.Optimizer, base_lr: float,
                        schedule: Callable[[int], float] = lambda s: 1.0) -> torch.optim.lr_scheduler.LambdaLR:
        """LambdaLR over the groups; resets every group's initial lr to ``base_lr`` first."""
        for pg in optimizer.param_groups:
            pg["lr"] = base_lr
            pg["initial_lr"] = base_lr
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_lambdas(schedule))

    def sync_lrs(self, optimizer: torch.optim.Optimizer, f_s: float = 1.0) -> None:
        """Re-apply base · scale · f(s) · active to every group right after a phase boundary.

        LambdaLR only recomputes lrs on ``step()``; without this the first step after unfreezing would
        still run at lr 0 (the scheduler evaluated the group while it was frozen).
        """
        for pg in optimizer.param_groups:
            g = self.groups[pg["name"]]
            pg["lr"] = 0.0 if g.frozen else pg.get("initial_lr", pg["lr"]) * g.lr_scale * f_s

    def reset_state(self, optimizer: torch.optim.Optimizer, name: str) -> None:
        """Drop optimizer moments of one group (fresh Adam state at unfreezing)."""
        for p in self.groups[name].params:
            optimizer.state.pop(p, None)

    def check_layout(self, optimizer: torch.optim.Optimizer, *, when: str = "") -> None:
        """I4: the optimizer's groups are exactly the controller's, in the same order, each holding exactly
        its group's tensors (every parameter in one group; nothing added, dropped or moved).

        Raises:
            InvariantViolation: ``group_layout``, naming the first difference and ``when`` it was found.
        """
        where = f" {when}" if when else ""
        names = [pg.get("name") for pg in optimizer.param_groups]
        if names != self.order:
            raise InvariantViolation("group_layout", f"optimizer groups{where} are {names}, the model's layout is "
                                     f"{self.order} (protocol I4: groups are built once, never added, removed or "
                                     "reordered). Build the optimizer with FreezeController.build_optimizer.")
        for pg in optimizer.param_groups:
            if [id(p) for p in pg["params"]] != [id(p) for p in self.groups[pg["name"]].params]:
                raise InvariantViolation("group_layout", f"optimizer group '{pg['name']}'{where} does not hold "
                                         "exactly that group's tensors (protocol I4). Build the optimizer with "
                                         "FreezeController.build_optimizer.")

    def check_lrs(self, optimizer: torch.optim.Optimizer, base_lr: float, f_s: float = 1.0) -> None:
        """I5: applied lr of each group equals base · scale · f(s) · active; frozen groups have 0."""
        for pg in optimizer.param_groups:
            g = self.groups[pg["name"]]
            want = 0.0 if g.frozen else base_lr * g.lr_scale * f_s
            if not math.isclose(pg["lr"], want, rel_tol=1e-9, abs_tol=1e-15):
                raise InvariantViolation("lr_override", f"group '{g.name}' has lr {pg['lr']:.3g}, "
                                         f"expected {want:.3g} (frozen={g.frozen}, scale={g.lr_scale})")

    def check_no_frozen_grads(self) -> None:
        """Protocol §1.2 item 4: after backward a frozen tensor has ``grad is None``."""
        for name, p in self.frozen_params():
            if p.grad is not None:
                raise InvariantViolation("frozen_has_grad", f"a tensor of frozen group '{name}' has a gradient")

    def grad_norms(self) -> dict[str, float]:
        """L2 norm of the gradients of each trainable group (for logging)."""
        out = {}
        for g in self.groups.values():
            grads = [p.grad.detach().float().norm() for p in g.params if p.grad is not None]
            if grads:
                out[g.name] = float(torch.linalg.vector_norm(torch.stack(grads)))
        return out

    def describe(self) -> dict[str, dict]:
        """Group name → numel, frozen, lr_scale (for summary.json and the report)."""
        return {n: {"numel": self.groups[n].numel, "frozen": self.groups[n].frozen,
                    "lr_scale": self.groups[n].lr_scale} for n in self.order}


def unique_parameters(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """De-duplicate tensors by identity, keeping first-seen order."""
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
