"""Pieces every config model shares: strict models, the hash-neutral marker, shared fields, and walking a
model's dotted keys. A leaf: config/schema.py (the study file) and every task's config import it, it imports
no task."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base model: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# A key added after studies were run carries HASH_NEUTRAL in its Field: at its default it is left out of the
# config hash, so adding it does not rename (and rerun) every existing run (experiment/plan.py).
HASH_NEUTRAL = {"hash_neutral": True}


def checkpoint_minutes_field() -> Any:
    """``runtime.checkpoint_minutes``, shared by every task."""
    return Field(10.0, ge=0, description="Inside long epochs, commit a resumable checkpoint this many minutes "
                 "after the last one (protocol §4; every epoch end commits). 0 = after every step; null = epoch ends "
                 "only. A run resumed mid-epoch continues with the same batch order and gives the same result.")


def trust_remote_code_field() -> Any:
    """``trust_remote_code`` of a pretrained source, shared by every task."""
    return Field(False, description="Allow Python code shipped with the model (config.json auto_map → "
                 "modeling_*.py) to run while it loads. Off: such a model fails with a clear error. Read that code "
                 "first; the report warns when this was on.")


def iter_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, pydantic FieldInfo) of every leaf field of a config model, nested sections expanded."""
    out: list[tuple[str, Any]] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        sub = next((a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type)
                    and issubclass(a, BaseModel)), None)
        out += iter_fields(sub, f"{prefix}{name}.") if sub is not None else [(prefix + name, info)]
    return out


def hash_view(model: type[BaseModel], config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config as the config hash sees it: keys of ``model`` marked HASH_NEUTRAL left out at their
    default (a key added after studies were run does not rename them)."""
    out = copy.deepcopy(config)
    for key, info in iter_fields(model):
        if (info.json_schema_extra or {}).get("hash_neutral"):
            *parents, leaf = key.split(".")
            node: Any = out
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and leaf in node and node[leaf] == info.default:
                del node[leaf]
    return out
