"""Problems of a study file, each with where it is, the key, the value and how to fix it.

Pydantic finds the problems; this module turns each into one line that names the layer it comes from
(``base``, ``profiles.quick.overrides``, ``arms.x.overrides``, ``--set``), the dotted key and value,
and for an unknown key the nearest known one ("did you mean") or the section the key belongs in.
"""

from __future__ import annotations

import copy
import difflib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

IGNORED_LOC = ("function-after", "function-before", "function-wrap")


@dataclass(frozen=True)
class Problem:
    """One problem, printed as ``where: key=value: message``.

    Args:
        where: the file and section (``study.yaml: arms.b.overrides``) or ``--set``.
        key: the dotted key inside that section ("" for the section itself).
        value: the offending value as shown ("" when there is none to show).
        message: what is wrong and how to fix it.
    """

    where: str
    key: str
    value: str
    message: str

    def __str__(self) -> str:
        key = self.key + (f"={self.value}" if self.value else "")
        sep = " " if self.where.startswith("--") else ": "  # --set phase2.lr=-1, study.yaml: base.phase2.lr
        return f"{self.where}{sep if key else ''}{key}: {self.message}"


def _submodel(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the pydantic model an annotation holds, whether it sits behind a dict key) or (None, False)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        inner, _ = _submodel(args[1])
        return inner, inner is not None
    for arg in args:
        inner, keyed = _submodel(arg)
        if inner is not None:
            return inner, keyed
    return None, False


def model_at(model: type[BaseModel], parts: tuple[str, ...]) -> type[BaseModel] | None:
    """The model that holds the fields at dotted ``parts`` (dict entries such as arm names skipped)."""
    node: type[BaseModel] | None = model
    i = 0
    while node is not None and i < len(parts):
        info = node.model_fields.get(parts[i])
        if info is None:
            return None
        node, keyed = _submodel(info.annotation)
        i += 2 if keyed else 1
    return node if i == len(parts) else None


def known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a config model, sections and leaves (``phase2``, ``phase2.lr``, ...)."""
    out = []
    for name, info in model.model_fields.items():
        out.append(prefix + name)
        inner, keyed = _submodel(info.annotation)
        if inner is not None and not keyed:
            out += known_keys(inner, f"{prefix}{name}.")
    return out


def unknown_key_hint(model: type[BaseModel], parts: tuple[str, ...], *, key_prefix: str = "") -> str:
    """"did you mean …" for an unknown key at ``parts``: a close sibling, else the same name elsewhere.

    Args:
        model: the model the path is relative to (a task config or the study file model).
        parts: the unknown key's path, its last part the unknown name.
        key_prefix: how a suggested key is written where the user wrote this one (``base.`` in base).
    """
    name, section = parts[-1], parts[:-1]
    holder = model_at(model, section)
    siblings = list(holder.model_fields) if holder is not None else []
    close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.7)
    if close:
        return f"did you mean {key_prefix}{'.'.join(section + (close[0],))}?"
    elsewhere = [k for k in known_keys(model) if tuple(k.split(".")[:-1]) != section]
    same = [k for k in elsewhere if k.rsplit(".", 1)[-1] == name]
    if not same:
        leaves = {k.rsplit(".", 1)[-1]: k for k in reversed(elsewhere)}
        same = [leaves[m] for m in difflib.get_close_matches(name, list(leaves), n=1, cutoff=0.8)]
    if same:
        homes = " or ".join(k.rsplit(".", 1)[0] if "." in k else "the top level" for k in same[:3])
        return f"{name!r} belongs in {homes}: did you mean {' or '.join(key_prefix + k for k in same[:3])}?"
    return ""


def _shown(error: dict[str, Any]) -> str:
    value = error.get("input")
    if error["type"] in ("missing", "extra_forbidden") or isinstance(value, dict):
        return ""
    return repr(value)


def error_id(error: dict[str, Any]) -> tuple:
    """Identity of a pydantic error across layers: location, kind, message and a scalar input."""
    value = error.get("input")
    return (tuple(error["loc"]), error["type"], error["msg"], "" if isinstance(value, dict) else repr(value))


def problems_of(err: ValidationError, *, where: str, key_prefix: str = "",
                hint: Callable[[tuple[str, ...]], str] | None = None) -> list[tuple[tuple, Problem]]:
    """Each pydantic error as (its identity, a Problem with its key path and, for an unknown key, a hint).

    Args:
        err: the validation error.
        where: the file and section the validated tree came from.
        key_prefix: prefix of every key as the user wrote it (``base.`` for the base section).
        hint: maps an unknown key's path to advice ("did you mean …"), "" when there is none.
    """
    out = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"] if p not in IGNORED_LOC)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            advice = hint(loc) if hint is not None and loc else ""
            msg = "unknown key" + (f"; {advice}" if advice else "")
        key = key_prefix + ".".join(loc) if loc else key_prefix.rstrip(".")
        out.append((error_id(e), Problem(where, key, _shown(e), msg)))
    return out


def validate_tree(model: type[BaseModel], tree: dict[str, Any]) -> tuple[dict[str, Any] | None, list[ValidationError]]:
    """(the resolved, JSON-ready config, []) or (None, its validation errors).

    A section with an unknown key skips its cross-field checks in pydantic, so the tree is validated
    again without the unknown keys until no new kind of problem appears: a typo never hides the others.
    """
    errors: list[ValidationError] = []
    tree = copy.deepcopy(tree)
    for _ in range(4):
        try:
            resolved = model.model_validate(tree).model_dump(mode="json")
            return (resolved if not errors else None), errors
        except ValidationError as err:
            errors.append(err)
            unknown = [tuple(e["loc"]) for e in err.errors() if e["type"] == "extra_forbidden"]
            if not unknown:
                break
            for loc in unknown:
                node: Any = tree
                for part in loc[:-1]:
                    node = node.get(part) if isinstance(node, dict) else None
                if isinstance(node, dict):
                    node.pop(loc[-1], None)
    return None, errors


def study_key_hint(task_model: type[BaseModel], loc: tuple[str, ...]) -> str:
    """Where a task key written at the study level belongs (under base, or an arm's or profile's overrides)."""
    name = loc[-1]
    if name.split(".")[0] not in task_model.model_fields:
        return ""
    if len(loc) == 1:
        return f"task settings go under base: base.{name}"
    if len(loc) == 3 and loc[0] in ("arms", "profiles"):
        return f"task keys go under {'.'.join(loc[:2])}.overrides: {{{name}: ...}}"
    return ""
