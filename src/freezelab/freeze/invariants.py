"""Parameter accounting over unique tensors and the bit-level freeze checks (protocol §1.4–1.5).

I1: frozen tensors and buffers keep their SHA-256 from the phase start.
I2: every trainable tensor has moved after the first step with lr > 0 (else it is "dead").
I3: counts over unique tensors (identity and storage), tied tensors listed with their aliases.
I7: no non-finite parameter after a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from freezelab.errors import InvariantViolation
from freezelab.utils.hashing import hash_tensor


@dataclass(frozen=True)
class ParamCounts:
    """Counts over unique tensors (a tied tensor counts once)."""

    total: int
    trainable: int
    frozen: int
    tied: int                                   # tensors reachable under more than one name
    unused: int
    buffers: int
    tied_aliases: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"total": self.total, "trainable": self.trainable, "frozen": self.frozen, "tied": self.tied,
                "unused": self.unused, "buffers": self.buffers, "tied_aliases": self.tied_aliases}


def _storage_key(t: torch.Tensor) -> tuple:
    if t.device.type == "meta":
        return ("meta", id(t))
    return (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))


def count_parameters(model: nn.Module, *, frozen: set[int] | None = None, unused: set[int] | None = None,
                     roles: dict[str, list[str]] | None = None) -> ParamCounts:
    """Count unique parameters of ``model`` (works on the meta device).

    Args:
        model: the model.
        frozen: ids of frozen tensors; default: tensors with ``requires_grad=False``.
        unused: ids of tensors never reached in forward (reported, never counted as frozen).
        roles: extra uses of a named tensor that have no module path of their own, e.g.
            ``{"wte.weight": ["head (tied)"]}`` when logits are computed from the embedding table.

    Returns:
        ParamCounts over unique tensors, de-duplicated by identity and by storage.
    """
    by_key: dict[tuple, list[str]] = {}
    tensors: dict[tuple, nn.Parameter] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        key = _storage_key(p)
        by_key.setdefault(key, []).append(name)
        tensors.setdefault(key, p)
    unused = unused or set()
    total = trainable = n_frozen = n_unused = 0
    for p in tensors.values():
        n = p.numel()
        total += n
        if id(p) in unused:
            n_unused += n
        elif (id(p) in frozen) if frozen is not None else not p.requires_grad:
            n_frozen += n
        else:
            trainable += n
    aliases = {names[0]: names[1:] for names in by_key.values() if len(names) > 1}
    for name, extra in (roles or {}).items():
        aliases[name] = aliases.get(name, []) + list(extra)
    n_buffers = sum(b.numel() for b in model.buffers())
    return ParamCounts(total=total, trainable=trainable, frozen=n_frozen, tied=len(aliases),
                       unused=n_unused, buffers=n_buffers, tied_aliases=aliases)


def check_expected_counts(counts: ParamCounts, expected: dict[str, int] | None, arm: str) -> None:
    """I3: fail the run when declared counts differ from the model's."""
    if not expected:
        return
    for key in ("total", "trainable"):
        want = expected.get(key)
        got = getattr(counts, key)
        if want is not None and want != got:
            raise InvariantViolation("param_count_mismatch", f"arm '{arm}' declares {key}={want:,} "
                                     f"parameters but the model has {got:,}. Fix expected_params or the arm.")


def snapshot(named: Sequence[tuple[str, torch.Tensor]]) -> dict[str, str]:
    """SHA-256 of each named tensor's raw bytes (on CPU)."""
    return {name: hash_tensor(t) for name, t in named}


def frozen_state(model: nn.Module, frozen_ids: set[int]) -> list[tuple[str, torch.Tensor]]:
    """Named frozen parameters (unique) plus every buffer: what I1 hashes."""
    out: list[tuple[str, torch.Tensor]] = []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in frozen_ids and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    out += [(f"buffer:{n}", b) for n, b in model.named_buffers()]
    return out


def check_frozen_unchanged(before: dict[str, str], named: Sequence[tuple[str, torch.Tensor]], *, when: str) -> None:
    """I1: raise ``frozen_tensor_changed`` naming every frozen tensor whose bytes changed."""
    now = snapshot(named)
    changed = [n for n, h in before.items() if now.get(n) != h]
    if changed:
        raise InvariantViolation("frozen_tensor_changed", f"{len(changed)} frozen tensor(s) changed {when}: "
                                 f"{changed[:5]}")


def dead_tensors(before: dict[str, str], named: Sequence[tuple[str, torch.Tensor]]) -> list[str]:
    """I2: trainable tensors still bit-identical to ``before`` (call after the first step)."""
    now = snapshot(named)
    return [n for n, h in before.items() if now.get(n) == h]


def check_finite(params: Sequence[torch.Tensor]) -> None:
    """I7: one fused check that no parameter became NaN/Inf."""
    if not params:
        return
    flags = torch.stack([torch.isfinite(p.detach()).all() for p in params])
    if not bool(flags.all()):
        raise InvariantViolation("non_finite", "a parameter became NaN or Inf after an optimizer step")


@dataclass
class PhaseSnapshots:
    """What I1 and I2 compare against during one phase (the frozen set is constant within a phase)."""

    frozen_ids: set[int]
    frozen_before: dict[str, str]
    trainable: list[tuple[str, nn.Parameter]]
    trainable_before: dict[str, str]
    check_dead: bool = True

    @classmethod
    def take(cls, model: nn.Module, controller: Any) -> PhaseSnapshots:
        """Hash the frozen tensors (and buffers) and the trainable ones of ``controller``'s current phase."""
        frozen_ids = {id(p) for _, p in controller.frozen_params()}
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return cls(frozen_ids, snapshot(frozen_state(model, frozen_ids)), trainable, snapshot(trainable))

    def check_frozen(self, model: nn.Module, when: str) -> None:
        """I1: frozen tensors and buffers bit-identical to the phase start."""
        check_frozen_unchanged(self.frozen_before, frozen_state(model, self.frozen_ids), when=when)

    def check_first_step(self, epoch: int) -> list[str]:
        """I2 after the phase's first applied step: dead tensors (raises when all are dead)."""
        self.check_dead = False
        dead = dead_tensors(self.trainable_before, self.trainable)
        if dead and len(dead) == len(self.trainable):
            raise InvariantViolation("all_trainable_dead", f"no trainable tensor changed after the first applied "
                                     f"step of epoch {epoch}")
        return dead
