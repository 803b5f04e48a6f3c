"""What freezelab checks of a ``freezelab.Task``'s methods, and how it uses what they return: the data's
hashes, the named groups with the arm's freeze policy, the score columns and the metrics over them. Every
violation is a ``PluginContractError`` naming the method and the fix."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from freezelab.engine.config import PluginRunConfig
from freezelab.engine.task import Splits, Task
from freezelab.errors import FreezelabError, InvariantViolation
from freezelab.freeze.invariants import count_parameters
from freezelab.freeze.param_groups import FreezeController, ParamGroup
from freezelab.tracking.items import metric


class PluginContractError(FreezelabError):
    """A method of a ``freezelab.Task`` returned something freezelab cannot use."""

    def __init__(self, task: Task, method: str, message: str) -> None:
        self.code = "plugin_contract"
        super().__init__(f"{type(task).__name__}.{method}: {message}")


# ----------------------------------------------------------------------------- hashing the task's data
def item_digest(item: Any, h: Any, where: str) -> None:
    """Feed one item into a SHA-256 (canonical: type tags, sorted dict keys, array dtype/shape/bytes)."""
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        a = np.ascontiguousarray(item)
        h.update(f"a{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(item, dict):
        h.update(b"d")
        for k in sorted(item, key=str):
            h.update(f"k{k!s}".encode())
            item_digest(item[k], h, f"{where}[{k!r}]")
    elif isinstance(item, (list, tuple)):
        h.update(f"l{len(item)}".encode())
        for i, x in enumerate(item):
            item_digest(x, h, f"{where}[{i}]")
    elif isinstance(item, (str, bool, int, float, np.generic)) or item is None:
        h.update(f"{type(item).__name__}:{item!r}".encode())
    else:
        raise TypeError(f"{where} is a {type(item).__name__}")


def hash_items(items: Sequence[Any], where: str) -> str:
    """SHA-256 of a split's items, in order."""
    h = hashlib.sha256()
    for i, item in enumerate(items):
        item_digest(item, h, f"{where}[{i}]")
    return h.hexdigest()


def check_splits(task: Task, splits: Any) -> dict[str, str]:
    """The per-split content hashes of ``load_data``'s result (raises naming the method when unusable)."""
    if not isinstance(splits, Splits):
        raise PluginContractError(task, "load_data", f"returned a {type(splits).__name__}; return "
                                  "freezelab.Splits(train=..., val=..., test=...)")
    hashes = {}
    for name in ("train", "val", "test"):
        part = splits.part(name)
        if not hasattr(part, "__len__") or len(part) == 0:
            raise PluginContractError(task, "load_data", f"the {name} split is empty or has no length; every "
                                      "split needs items (a list, or a Sequence)")
        ids = splits.ids.get(name)
        if ids is not None and len(ids) != len(part):
            raise PluginContractError(task, "load_data", f"ids[{name!r}] has {len(ids)} entries for {len(part)} "
                                      "items; give one integer id per item")
        try:
            hashes[name] = hash_items(part, f"{name}")
        except TypeError as err:
            raise PluginContractError(task, "load_data", f"item {err} freezelab cannot hash; use numbers, "
                                      "strings, numpy arrays, tensors, or lists/dicts of them") from None
    return hashes


# ----------------------------------------------------------------------------- groups and the freeze policy
def build_groups(task: Task, model: nn.Module, cfg: PluginRunConfig) -> list[ParamGroup]:
    """The task's named groups with the arm's frozen flags and lr scales (step 0)."""
    raw = task.param_groups(model)
    if not isinstance(raw, dict) or not raw:
        raise PluginContractError(task, "param_groups", "must return a non-empty dict: group name -> module or "
                                  "list of modules")
    groups = []
    for name, mods in raw.items():
        mods = [mods] if isinstance(mods, nn.Module) else list(mods) if isinstance(mods, (list, tuple)) else None
        if not mods or not all(isinstance(m, nn.Module) for m in mods):
            raise PluginContractError(task, "param_groups", f"group {name!r} is not a module or a list of modules")
        groups.append(ParamGroup(str(name), mods))
    names = [g.name for g in groups]
    f = cfg.freeze
    frozen = set(names) if f.frozen == ["*"] else set(f.frozen)
    unknown = sorted((frozen | set(f.lr_scale) | set((f.unfreeze.groups or []) if f.unfreeze else [])) - set(names))
    if unknown:
        raise FreezelabError(f"freeze names groups {unknown} that {type(task).__name__}.param_groups does not "
                             f"define; its groups are {names}")
    for g in groups:
        g.frozen = g.name in frozen
        g.lr_scale = float(f.lr_scale.get(g.name, 1.0))
    return groups


def controller_for(task: Task, model: nn.Module, groups: list[ParamGroup]) -> FreezeController:
    """The FreezeController of the task's groups; a parameter in no group or in two fails naming param_groups."""
    try:
        return FreezeController(model, groups)
    except InvariantViolation as err:
        raise PluginContractError(task, "param_groups", f"{err} (protocol I4: every parameter of the model in "
                                  "exactly one group)") from None


def param_facts(model: nn.Module, groups: list[ParamGroup]) -> tuple[dict[str, Any], Any]:
    frozen = {id(p) for g in groups if g.frozen for p in g.params}
    counts = count_parameters(model, frozen=frozen)
    return {**counts.as_dict(), "by_group": {g.name: {"numel": g.numel, "frozen": g.frozen, "lr_scale": g.lr_scale}
                                             for g in groups}}, counts


# ----------------------------------------------------------------------------- scoring
def batches(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def score_split(task: Task, model: nn.Module, items: Sequence[Any], batch_size: int,
                device: torch.device, *, bf16: bool = False) -> dict[str, np.ndarray]:
    """The task's score columns over every item of a split, in item order (no gradients, eval mode; ``bf16``:
    under bf16 autocast, as ``runtime.precision: bf16`` trains)."""
    model.eval()
    cols: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for chunk in batches(items, batch_size):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = task.score(model, to_device(task.collate(chunk), device))
            if not isinstance(out, dict) or not out:
                raise PluginContractError(task, "score", "must return a dict: column name -> (B,) tensor or array")
            for name, values in out.items():
                arr = (values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor)
                       else np.asarray(values, dtype=float)).reshape(-1) if np.ndim(values) else None
                if arr is None or arr.shape != (len(chunk),):
                    shape = tuple(values.shape) if hasattr(values, "shape") else type(values).__name__
                    raise PluginContractError(task, "score", f"column {name!r} has shape {shape} for a batch of "
                                              f"{len(chunk)} items; return one value per item, shape ({len(chunk)},)")
                cols.setdefault(str(name), []).append(arr)
    return {k: np.concatenate(v) for k, v in cols.items()}


def metric_values(task: Task, cols: dict[str, np.ndarray], split: str, method: str = "score") -> dict[str, float]:
    """``split/<metric>`` for every declared metric (Σ num / Σ den)."""
    out = {}
    for name, m in task.metrics.items():
        missing = [c for c in (m.num, m.den) if c not in cols]
        if missing:
            raise PluginContractError(task, method, f"no column {missing[0]!r}, which metric {name!r} needs; it "
                                      f"returned {sorted(cols)}")
        den = float(cols[m.den].sum())
        out[f"{split}/{name}"] = float(cols[m.num].sum()) / den if den else math.nan
    return out


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def headline(task: Task) -> list[dict[str, Any]]:
    return [{"name": n, "mode": m.mode, "log_scale": m.log_scale} for n, m in task.metrics.items()]


def item_metrics(task: Task) -> dict[str, dict[str, Any]]:
    return {n: metric(m.num, m.den) for n, m in task.metrics.items()}


def ids_of(splits: Splits, name: str) -> np.ndarray:
    ids = splits.ids.get(name)
    return np.asarray(ids if ids is not None else np.arange(len(splits.part(name))), dtype=np.int64)
