"""Lean weight files: safetensors that store only the tensors which differ from the run's base.

Every attempt of a run rebuilds its model the same way (pretrained source + seeded initialisation, and
for the LM the Phase-1 weights), so a tensor that still equals that *base* is not written again: the
file lists it under ``referenced`` with its SHA-256, and loading takes it from the rebuilt model after
checking the hash. A frozen pretrained table therefore costs 64 bytes per checkpoint instead of its
size. Nothing here unpickles: tensors come from safetensors, everything else from JSON metadata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from freezelab.errors import RunFileError
from freezelab.tracking.files import RESTART_FIX, WEIGHTS_FORMAT, WEIGHTS_META_KEY, verify_file, write_atomically
from freezelab.utils.hashing import hash_tensor

FORMAT, META_KEY = WEIGHTS_FORMAT, WEIGHTS_META_KEY


def state_hashes(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """SHA-256 of every tensor of a state dict (the base that lean files reference)."""
    return {name: hash_tensor(t) for name, t in state.items()}


def save_weights(path: Path, state: Mapping[str, torch.Tensor], base: Mapping[str, str] | None = None, *,
                 trainable: Collection[str] = (), metadata: dict[str, Any] | None = None,
                 known: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Write the tensors of ``state`` whose hash differs from ``base``; reference the others by hash.

    Args:
        path: the safetensors file (written atomically).
        state: name → tensor (a model's state dict, optionally with other tensors).
        base: name → SHA-256 of the tensors the loading side will rebuild; None stores everything.
        trainable: names stored without hashing them first (they train, so they have changed).
        metadata: JSON-able facts kept in the file's header (epoch, metric, ...).
        known: name → SHA-256 of tensors of ``state`` hashed since they last could change (the frozen-tensor
            check just before an epoch-end commit): compared with ``base`` without hashing them again.

    Returns:
        The file's record (``sha256``, ``size``, and the counts stored / referenced).
    """
    stored: dict[str, torch.Tensor] = {}
    referenced: dict[str, str] = {}
    storages: set[tuple[int, int]] = set()
    for name, t in state.items():
        if base and name in base and name not in trainable:
            h = (known or {}).get(name) or hash_tensor(t)
            if h == base[name]:
                referenced[name] = h
                continue
        t = t.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        stored[name] = t.clone() if key in storages else t  # safetensors refuses shared storage
        storages.add(key)
    header = {"format": FORMAT, "referenced": referenced, **(metadata or {})}
    data = save(stored, metadata={META_KEY: json.dumps(header)})

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    write_atomically(Path(path), write)
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "stored": len(stored),
            "referenced": len(referenced)}


def read_weights(path: Path, record: Mapping[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The stored tensors and the header (``referenced`` hashes, metadata) of a lean weight file.

    Raises:
        RunFileError: the file differs from ``record``, is not safetensors, or has no freezelab header.
    """
    path = Path(path)
    if record is not None:
        verify_file(path, record)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})[META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise RunFileError(f"{path} is not a freezelab weight file ({type(err).__name__}: {err}). "
                           f"{RESTART_FIX}") from err
    if header.get("format") != FORMAT:
        raise RunFileError(f"{path} has format {header.get('format')!r}, expected {FORMAT!r} (written by another "
                           f"freezelab version). {RESTART_FIX}")
    return tensors, header


def resolve(stored: Mapping[str, torch.Tensor], referenced: Mapping[str, str], current: Mapping[str, torch.Tensor],
            *, where: Path) -> dict[str, torch.Tensor]:
    """Check every referenced tensor against ``current`` (the rebuilt base) and return the stored ones.

    Raises:
        RunFileError: a referenced tensor is absent or its hash differs (the pretrained source or the
            initialisation changed since the file was written).
    """
    bad = [n for n, h in referenced.items() if n not in current or hash_tensor(current[n]) != h]
    if bad:
        raise RunFileError(f"{where}: {len(bad)} tensor(s) it references by SHA-256 differ from the rebuilt model, "
                           f"e.g. {bad[:3]}: the pretrained source, its revision or the initialisation code changed "
                           "since the file was written, so it cannot be restored exactly. Restore the original "
                           "pretrained files, or delete the run folder to train this run again from scratch.")
    return dict(stored)


def load_weights(model: nn.Module, path: Path, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load a lean weight file into ``model`` (referenced tensors verified in place); returns its header.

    Raises:
        RunFileError: as ``read_weights`` and ``resolve``, or the file does not cover the model's tensors.
    """
    stored, header = read_weights(path, record)
    current = model.state_dict()
    tensors = resolve(stored, header["referenced"], current, where=Path(path))
    names = set(tensors) | set(header["referenced"])
    if names != set(current):
        raise RunFileError(f"{path} holds tensors {sorted(names ^ set(current))[:5]} that do not match the model's: "
                           f"it belongs to another model or config. {RESTART_FIX}")
    with torch.no_grad():
        for name, t in tensors.items():
            current[name].copy_(t)
    return header


def full_state(path: Path, record: Mapping[str, Any] | None, current: Mapping[str, torch.Tensor]) -> dict:
    """A complete state dict from a lean file: stored tensors plus copies of the verified referenced ones."""
    stored, header = read_weights(path, record)
    tensors = resolve(stored, header["referenced"], current, where=Path(path))
    out = {n: current[n].detach().clone() for n in header["referenced"]}
    out.update({n: t.to(current[n].device) if n in current else t for n, t in tensors.items()})
    return out
