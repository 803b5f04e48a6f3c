"""The resumable state of a run: lean weight files plus one JSON manifest, committed atomically.

    checkpoints/state.json         the manifest: where training stands (phase, epoch, batch, stopped), counters,
                                   optimizer hyper-parameters, scheduler, group flags and lr scales, early
                                   stopping, Python/NumPy RNG states, how much of metrics.jsonl it covers, and
                                   the size and SHA-256 of every file below
    checkpoints/state.safetensors  the tensors that change: weights that differ from the base, optimizer
                                   moments, torch RNG states
    checkpoints/best.safetensors   the best epoch's weights (lean, see ``weights.py``)
    checkpoints/phase1.safetensors LM: the weights at the end of Phase 1 (the cached contexts' source)

A commit writes each new file under a staged name (``NAME.next``), then the manifest (the commit point),
then renames the staged files. ``recover`` accepts for each listed file the final or the staged copy whose
hash matches the manifest, so a kill at any moment leaves the previous or the new state, never a mix.
Nothing is unpickled: a ``last.pt`` written by an older freezelab is never opened.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freezelab.errors import RunFileError
from freezelab.tracking.files import (
    METRICS_FILE,
    RESTART_FIX,
    WEIGHTS_FORMAT,
    WEIGHTS_META_KEY,
    atomic_write_text,
    clean_temp_files,
    file_record,
    file_size,
    now_iso,
    truncate,
    verify_file,
)

if TYPE_CHECKING:  # torch is imported where tensors are handled: the runner checks folders without it
    import torch
    from torch import nn

MANIFEST = "state.json"
STATE = "state.safetensors"
BEST = "best.safetensors"
PHASE1 = "phase1.safetensors"
LEGACY = "last.pt"
FORMAT = "freezelab-state/1"
STAGED = ".next"


def legacy_message(run_dir: Path) -> str:
    """What a run folder holding an old pickle checkpoint is told (the file is never loaded)."""
    return (f"{Path(run_dir) / 'checkpoints' / LEGACY} is a pickle checkpoint from an older freezelab; it is never "
            "opened, because unpickling a file can run arbitrary code. The run starts over from scratch (the old "
            "attempt, that file included, is kept under attempts/).")


def recover(ckpt_dir: Path) -> dict[str, Any] | None:
    """The committed manifest, with every file it lists in place and verified; None when nothing is committed.

    Finishes the renames of a commit that was killed after its manifest was written, and removes staged
    and temporary files that no commit refers to.

    Raises:
        RunFileError: the manifest or a file it lists is damaged, missing or from another version.
    """
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / MANIFEST
    if not path.exists():
        _remove_strays(ckpt_dir)  # staged files of a first commit that never happened
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RunFileError(f"{path} is damaged ({type(err).__name__}: {err}). {RESTART_FIX}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"),
                                                                                           dict):
        raise RunFileError(f"{path} is not a {FORMAT} manifest. {RESTART_FIX}")
    for name, record in manifest["files"].items():
        final, staged = ckpt_dir / name, ckpt_dir / (name + STAGED)
        if staged.exists() and not (final.exists() and file_record(final)["sha256"] == record["sha256"]):
            if file_record(staged)["sha256"] == record["sha256"]:
                os.replace(staged, final)  # the commit was killed between its manifest and this rename
        verify_file(final, record)
        check_header(final)
    _remove_strays(ckpt_dir)
    return manifest


def check_header(path: Path) -> dict[str, Any]:
    """The freezelab header of a safetensors file, read without torch (8-byte length, then JSON).

    Raises:
        RunFileError: not a safetensors file written by freezelab (e.g. a pickle under that name).
    """
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= min(path.stat().st_size - 8, 100 << 20):
                raise ValueError(f"header length {n} does not fit the file")
            header = json.loads(f.read(n).decode("utf-8"))
        meta = json.loads(header["__metadata__"][WEIGHTS_META_KEY])
        if meta.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {WEIGHTS_FORMAT!r}")
        return meta
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunFileError(f"{path} is not a freezelab safetensors file ({type(err).__name__}: {err}). "
                           f"{RESTART_FIX}") from err


def _remove_strays(ckpt_dir: Path) -> None:
    if ckpt_dir.is_dir():
        for stray in ckpt_dir.glob(f"*{STAGED}"):
            stray.unlink(missing_ok=True)
        clean_temp_files(ckpt_dir)


def finish(run_dir: Path) -> None:
    """After a succeeded run: drop the resumable state (best and Phase-1 weights stay, recorded in summary.json)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    for name in (MANIFEST, STATE):
        (ckpt_dir / name).unlink(missing_ok=True)
    _remove_strays(ckpt_dir)


class Checkpoints:
    """The ``checkpoints/`` folder of one run: what a task saves and what a resumed attempt loads.

    Args:
        run_dir: the run folder.
        minutes: a mid-epoch checkpoint is due this many minutes after the last commit (None: epoch ends only).
    """

    def __init__(self, run_dir: Path, *, minutes: float | None = None) -> None:
        self.run_dir, self.dir = Path(run_dir), Path(run_dir) / "checkpoints"
        self.minutes = minutes
        self.base: dict[str, str] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self._last_commit = time.monotonic()

    def set_base(self, model: nn.Module) -> None:
        """Hash the model as the loading side will rebuild it; later files reference unchanged tensors."""
        from freezelab.tracking.weights import state_hashes

        self.base = state_hashes(model.state_dict())

    def load(self) -> dict[str, Any] | None:
        """The committed state (verified), metrics.jsonl cut back to what it covers; None for a fresh run."""
        manifest = recover(self.dir)
        if manifest is None:
            return None
        self.files = dict(manifest["files"])
        truncate(self.run_dir / METRICS_FILE, int(manifest["metrics_bytes"]))
        return manifest["state"]

    def load_into(self, name: str, model: nn.Module) -> None:
        """Load the committed weight file ``name`` (e.g. ``phase1.safetensors``) into ``model``."""
        from freezelab.tracking.weights import load_weights

        load_weights(model, self.dir / name, self.files[name])

    def weights(self, name: str, model: nn.Module) -> dict[str, torch.Tensor]:
        """A complete state dict from the committed weight file ``name``, referenced tensors taken from ``model``."""
        from freezelab.tracking.weights import full_state

        return full_state(self.dir / name, self.files[name], model.state_dict())

    def due(self) -> bool:
        """True when a mid-epoch checkpoint is due (``runtime.checkpoint_minutes`` since the last commit)."""
        return self.minutes is not None and time.monotonic() - self._last_commit >= self.minutes * 60

    def commit(self, state: dict[str, Any], *, tensors: Mapping[str, torch.Tensor] | None = None,
               weights: Mapping[str, Mapping[str, torch.Tensor]] | None = None, model: nn.Module | None = None,
               known: Mapping[str, str] | None = None) -> None:
        """Write ``weights`` (file name → state dict) and ``tensors`` (state.safetensors), then the manifest.

        ``model``: its trainable tensors are stored without first hashing them against the base.
        ``known``: state-dict name → hash of tensors hashed since they could last change (the frozen-tensor
        check at this epoch end, ``PhaseSnapshots.check_frozen``): not hashed again.

        Raises:
            DiskFullError: no space left; the previous commit stays the valid one.
        """
        from freezelab.tracking.weights import save_weights

        self.dir.mkdir(parents=True, exist_ok=True)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad} if model is not None else set()
        staged = list((weights or {}).items())
        for name, sd in staged:
            self.files[name] = save_weights(self.dir / (name + STAGED), sd, self.base, trainable=trainable,
                                            known=known)
        if tensors is not None:
            base = {f"model/{k}": v for k, v in self.base.items()}
            self.files[STATE] = save_weights(self.dir / (STATE + STAGED), tensors, base,
                                             trainable={f"model/{n}" for n in trainable},
                                             known={f"model/{k}": v for k, v in (known or {}).items()})
            staged.append((STATE, tensors))
        manifest = {"format": FORMAT, "written_at": now_iso(), "metrics_bytes": file_size(self.run_dir / METRICS_FILE),
                    "files": self.files, "state": state}
        atomic_write_text(self.dir / MANIFEST, json.dumps(manifest, indent=1))
        for name, _ in staged:
            os.replace(self.dir / (name + STAGED), self.dir / name)
        self._last_commit = time.monotonic()

    def records(self) -> dict[str, dict[str, Any]]:
        """Size and SHA-256 of the weight files a finished run keeps (summary.json ``files``)."""
        return {f"checkpoints/{n}": {"sha256": r["sha256"], "size": r["size"]}
                for n, r in self.files.items() if n != STATE}


# ----------------------------------------------------------------------------- training state
def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng/cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}, tensors


def _set_rng_state(state: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[f"rng/cuda/{i}"] for i in range(len(tensors)) if f"rng/cuda/{i}" in tensors]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, controller: Any,
                   early_stopping: Any, *, scaler: Any = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """What every task saves: (JSON part, tensors). Weights, optimizer moments and the torch RNG are tensors;
    optimizer hyper-parameters, scheduler, group flags and lr scales, early stopping, Python/NumPy RNG are JSON."""
    import torch

    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_json: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
    for idx, values in opt["state"].items():
        opt_json["state"][str(idx)] = {k: v for k, v in values.items() if not torch.is_tensor(v)}
        tensors.update({f"optim/{idx}/{k}": v for k, v in values.items() if torch.is_tensor(v)})
    rng, rng_tensors = _rng_state()
    tensors.update(rng_tensors)
    return {"optimizer": opt_json, "scheduler": scheduler.state_dict(),
            "groups": {n: [g.frozen, g.lr_scale] for n, g in controller.groups.items()},
            "early_stopping": early_stopping.state_dict(), "rng": rng,
            "scaler": scaler.state_dict() if scaler is not None else None}, tensors


def restore_training_state(ckpt: Checkpoints, state: dict[str, Any], model: nn.Module,
                           optimizer: torch.optim.Optimizer, scheduler: Any, controller: Any, early_stopping: Any, *,
                           scaler: Any = None) -> None:
    """Inverse of ``training_state``: best weights (while the model is still at its base), group flags (so
    requires_grad and modes match), weights, optimizer, scheduler, early stopping, scaler and RNG states.

    Raises:
        RunFileError: a file is damaged, or the state does not fit this model (another config or version).
    """
    from freezelab.tracking.weights import read_weights, resolve

    if BEST in ckpt.files:
        early_stopping.state = ckpt.weights(BEST, model)
    stored, header = read_weights(ckpt.dir / STATE, ckpt.files[STATE])
    refs = {k[6:]: h for k, h in header["referenced"].items() if k.startswith("model/")}
    current = model.state_dict()
    changed = resolve({k[6:]: v for k, v in stored.items() if k.startswith("model/")}, refs, current,
                      where=ckpt.dir / STATE)
    if set(changed) | set(refs) != set(current):
        raise RunFileError(f"{ckpt.dir / STATE} does not hold this model's tensors (another config or version). "
                           f"{RESTART_FIX}")
    try:
        for name, (frozen, scale) in state["groups"].items():
            controller.groups[name].lr_scale = scale
            controller.set_frozen(name, frozen)
        model.load_state_dict(changed, strict=False)
        opt_state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in state["optimizer"]["state"].items()}
        for key, t in stored.items():
            if key.startswith("optim/"):
                _, idx, name = key.split("/", 2)
                opt_state.setdefault(int(idx), {})[name] = t
        optimizer.load_state_dict({"state": opt_state, "param_groups": state["optimizer"]["param_groups"]})
        scheduler.load_state_dict(state["scheduler"])
        early_stopping.load_state_dict(state["early_stopping"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], stored)
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise RunFileError(f"{ckpt.dir / MANIFEST} does not fit this run's model or optimizer ({type(err).__name__}: "
                           f"{err}). {RESTART_FIX}") from err
