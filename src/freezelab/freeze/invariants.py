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


def known_hashes(hashes: dict[str, str]) -> dict[str, str]:
    """``frozen_state`` hashes by state-dict name (``buffer:`` prefix dropped): a checkpoint commit made before
    the tensors can change again reuses them instead of hashing the frozen tensors a second time."""
    return {name.removeprefix("buffer:"): h for name, h in hashes.items()}


def frozen_changes(before: dict[str, str], named: Sequence[tuple[str, torch.Tensor]]) -> tuple[dict[str, str],
                                                                                           list[str]]:
    """(the tensors' hashes now, names of the frozen tensors whose bytes differ from ``before``)."""
    now = snapshot(named)
    return now, [n for n, h in before.items() if now.get(n) != h]


def _raise_changed(changed: list[str], when: str) -> None:
    if changed:
        raise InvariantViolation("frozen_tensor_changed", f"{len(changed)} frozen tensor(s) changed {when}: "
                                 f"{changed[:5]}")


def check_frozen_unchanged(before: dict[str, str], named: Sequence[tuple[str, torch.Tensor]], *, when: str) -> None:
    """I1: raise ``frozen_tensor_changed`` naming every frozen tensor whose bytes changed."""
    _raise_changed(frozen_changes(before, named)[1], when)


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


def frozen_unchanged(record: list[dict[str, Any]]) -> bool:
    """The I1 verdict of a record written by ``PhaseSnapshots``: every check passed (False if none was made)."""
    checks = [c for phase in record for c in phase["checks"]]
    return bool(checks) and all(c["unchanged"] for c in checks)


@dataclass
class PhaseSnapshots:
    """What I1 and I2 compare against during one phase (the frozen set is constant within a phase)."""

    frozen_ids: set[int]
    frozen_before: dict[str, str]
    trainable: list[tuple[str, nn.Parameter]]
    trainable_before: dict[str, str]
    check_dead: bool = True
    record: list[dict[str, Any]] | None = None  # the run's I1 record (see ``take``), shared across phases

    @classmethod
    def take(cls, model: nn.Module, controller: Any, *, record: list[dict[str, Any]] | None = None,
             phase: str = "") -> PhaseSnapshots:
        """Hash the frozen tensors (and buffers) and the trainable ones of ``controller``'s current phase.

        Args:
            model: the model.
            controller: its FreezeController (the frozen set of this phase).
            record: when given, one entry ``{"phase", "hashes", "checks": []}`` is appended for this phase
                (the SHA-256 of every frozen tensor at its start); ``check_frozen`` appends to its checks.
            phase: the phase's label in the record.
        """
        frozen_ids = {id(p) for _, p in controller.frozen_params()}
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        out = cls(frozen_ids, snapshot(frozen_state(model, frozen_ids)), trainable, snapshot(trainable),
                  record=record)
        if record is not None:
            from freezelab.utils.hashing import hash_json

            record.append({"phase": phase, "digest": hash_json(out.frozen_before), "hashes": dict(out.frozen_before),
                           "checks": []})
        return out

    @classmethod
    def resume(cls, model: nn.Module, controller: Any, record: list[dict[str, Any]],
               saved: list[dict[str, Any]] | None) -> PhaseSnapshots:
        """The current phase of a resumed run: ``record`` continues the I1 record ``saved`` in its checkpoint,
        and I1 compares against the hashes of that phase's own start (not of the resume). A checkpoint of an
        older freezelab has no record (``saved`` None or empty): a new phase entry starts at the resume."""
        record[:] = saved or []
        if not record:
            return cls.take(model, controller, record=record, phase="resumed (the earlier record was not kept)")
        out = cls.take(model, controller)
        out.frozen_before, out.record = record[-1]["hashes"], record
        return out

    def check_frozen(self, model: nn.Module, when: str, *, step: int | None = None) -> dict[str, str]:
        """I1: frozen tensors and buffers bit-identical to the phase start; with a record, each check is
        recorded (when, step, a digest of the hashes compared, the outcome and the changed tensors) before a
        violation is raised. Returns the hashes just taken, by state-dict name (``known_hashes``)."""
        now, changed = frozen_changes(self.frozen_before, frozen_state(model, self.frozen_ids))
        if self.record is not None:
            from freezelab.utils.hashing import hash_json

            self.record[-1]["checks"].append({"when": when, "step": step, "digest": hash_json(now),
                                              "unchanged": not changed, "changed": changed})
        _raise_changed(changed, when)
        return known_hashes(now)

    def after_step(self, model: nn.Module, step: int, epoch: int) -> list[str]:
        """The checks after an applied optimizer step: I7 (trainable parameters finite), I1 after the run's
        first step, I2 after the phase's first step. Returns the dead tensors I2 found (usually none)."""
        check_finite([p for _, p in self.trainable])
        if step == 1:
            self.check_frozen(model, "after step 1", step=step)
        return self.check_first_step(epoch) if self.check_dead else []

    def check_first_step(self, epoch: int) -> list[str]:
        """I2 after the phase's first applied step: dead tensors (raises when all are dead)."""
        self.check_dead = False
        dead = dead_tensors(self.trainable_before, self.trainable)
        if dead and len(dead) == len(self.trainable):
            raise InvariantViolation("all_trainable_dead", f"no trainable tensor changed after the first applied "
                                     f"step of epoch {epoch}")
        return dead
