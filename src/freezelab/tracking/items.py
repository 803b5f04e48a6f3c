"""Per-item evaluation scores of one run: ``runs/<run_id>/items/<source>.npz`` (docs/run-folder.md).

The report's uncertainty comes from the evaluation items (test documents, test windows), not only from
seeds, so every run stores, per split and per item, the sums its metrics are ratios of: an LM run its
per-document summed log-loss, token count, correct count and bytes; a time-series run its per-window,
per-timeframe masked squared error and count, and the per-window correlation terms. The naive baselines
write the same columns on the same items (``source`` = the baseline's name). A metric is declared in the
file as the mean over groups of Σ num / Σ den (times a scale), so the report recomputes it from any
reweighting of the items (a bootstrap) without knowing the task.

The file is a plain ``.npz`` (no pickle: it is read with ``allow_pickle=False``) holding ``meta`` (a JSON
string) and, per split, ``<split>/id`` (int64 item identities, e.g. document index or anchor time) and
``<split>/<column>`` (float64). Run folders are untrusted input: ``read_items`` checks everything and
raises ``DataError`` naming the file, the key and the fix.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from freezelab.errors import DataError

FORMAT = "freezelab-items"
VERSION = 1
ITEMS_DIR = "items"
MODEL = "model"  # the source name of the run's own model; baselines use their own names


@dataclass(frozen=True)
class MetricDef:
    """A metric as the mean over groups g of scale_g · Σ_i num_g[i] / Σ_i den_g[i]."""

    num: tuple[str, ...]
    den: tuple[str, ...]
    scale: tuple[float, ...]

    def value(self, columns: Mapping[str, np.ndarray], weights: np.ndarray | None = None) -> np.ndarray | float:
        """The metric on the items, or on each row of ``weights`` (B, n) (bootstrap counts): (B,)."""
        parts = []
        for num, den, scale in zip(self.num, self.den, self.scale):
            if weights is None:
                parts.append(scale * float(columns[num].sum()) / float(columns[den].sum()))
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    parts.append(scale * (weights @ columns[num]) / (weights @ columns[den]))
        return float(np.mean(parts)) if weights is None else np.mean(parts, axis=0)


@dataclass(frozen=True)
class SplitItems:
    """One split of one source: item identities, columns, and the bootstrap block length hint."""

    ids: np.ndarray  # (n,) int64
    columns: dict[str, np.ndarray]  # name -> (n,) float64
    block: int  # contiguous items a resample keeps together at least (1: independent items)
    span: int = 0  # items whose ids differ by less than this share data (e.g. window length in ns); 0: none

    @property
    def n(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class ItemScores:
    """Everything one ``items/<source>.npz`` holds."""

    path: Path
    task: str
    source: str
    splits: dict[str, SplitItems]
    metrics: dict[str, MetricDef]  # metric name without split, e.g. "loss", "mse", "mse/h1"


def metric(num: str | list[str], den: str | list[str], scale: float | list[float] = 1.0) -> dict[str, Any]:
    """A metric declaration for ``write_items``: one group, or lists of groups (their values are averaged)."""
    nums = [num] if isinstance(num, str) else list(num)
    dens = [den] if isinstance(den, str) else list(den)
    scales = [float(scale)] * len(nums) if isinstance(scale, (int, float)) else [float(s) for s in scale]
    return {"num": nums, "den": dens, "scale": scales}


def write_items(run_dir: Path, source: str, splits: Mapping[str, Mapping[str, Any]], *, task: str,
                metrics: Mapping[str, dict[str, Any]], blocks: Mapping[str, int] | None = None,
                spans: Mapping[str, int] | None = None) -> Path:
    """Write ``run_dir/items/<source>.npz`` atomically.

    Args:
        run_dir: the run folder.
        source: ``model`` or a baseline name.
        splits: split -> {"id": (n,) ints, column: (n,) floats, ...}.
        task: the task name (``lm``, ``timeseries``).
        metrics: metric name -> ``metric(...)`` declaration over the columns.
        blocks: split -> block length hint for the bootstrap (default 1).
        spans: split -> id distance below which two items overlap (time series: the window span in ns).

    Returns:
        The path written.
    """
    from freezelab.tracking.files import write_atomically

    arrays: dict[str, np.ndarray] = {}
    meta_splits = {}
    for split, cols in splits.items():
        ids = np.asarray(cols["id"], dtype=np.int64)
        arrays[f"{split}/id"] = ids
        for name, values in cols.items():
            if name != "id":
                arr = np.asarray(values, dtype=np.float64)
                assert arr.shape == ids.shape, f"{source} {split}/{name}: shape {arr.shape} != {ids.shape}"
                arrays[f"{split}/{name}"] = arr
        meta_splits[split] = {"n": int(len(ids)), "block": int((blocks or {}).get(split, 1)),
                              "span": int((spans or {}).get(split, 0))}
    meta = {"format": FORMAT, "version": VERSION, "task": task, "source": source, "splits": meta_splits,
            "metrics": {k: dict(v) for k, v in metrics.items()}}
    arrays["meta"] = np.array(json.dumps(meta))
    path = Path(run_dir) / ITEMS_DIR / f"{source}.npz"

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare name
            np.savez_compressed(fh, **arrays)

    write_atomically(path, write)
    return path


def _bad(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}. The file is written by the run at its end; rerun the run (delete its "
                     f"folder under runs/) or remove the file to fall back to seed-level statistics.")


def read_items(path: Path) -> ItemScores:
    """Read and validate one ``items/<source>.npz``.

    Raises:
        DataError: unreadable file, bad ``meta``, missing or malformed arrays, non-finite values, negative
            or all-zero denominators, metrics naming absent columns.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _bad(path, f"not a readable .npz without pickled objects ({type(exc).__name__}: {exc})") from exc
    if "meta" not in arrays or arrays["meta"].dtype.kind != "U" or arrays["meta"].ndim != 0:
        raise _bad(path, "no 'meta' JSON string")
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as exc:
        raise _bad(path, f"'meta' is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise _bad(path, f"'meta' must say format={FORMAT!r}, version={VERSION}")
    splits = {}
    for split, info in _mapping(path, meta, "splits").items():
        splits[split] = _read_split(path, arrays, split, info)
    metrics = {}
    for name, spec in _mapping(path, meta, "metrics").items():
        metrics[name] = _read_metric(path, name, spec, splits)
    return ItemScores(path, str(meta.get("task", "")), str(meta.get("source", path.stem)), splits, metrics)


def _mapping(path: Path, meta: dict[str, Any], key: str) -> dict[str, Any]:
    value = meta.get(key)
    if not isinstance(value, dict) or not value:
        raise _bad(path, f"'meta.{key}' must be a non-empty mapping")
    return value


def _read_split(path: Path, arrays: dict[str, np.ndarray], split: str, info: Any) -> SplitItems:
    key = f"{split}/id"
    if key not in arrays:
        raise _bad(path, f"array {key!r} is missing")
    ids = arrays[key]
    if ids.ndim != 1 or ids.dtype.kind not in "iu" or len(ids) == 0:
        raise _bad(path, f"{key!r} must be a non-empty 1-D integer array, got {ids.dtype} {ids.shape}")
    if len(np.unique(ids)) != len(ids):
        raise _bad(path, f"{key!r} holds duplicate item identities")
    n = int(info.get("n", -1)) if isinstance(info, dict) else -1
    if n != len(ids):
        raise _bad(path, f"'meta.splits.{split}.n' = {n} but {key!r} has {len(ids)} items")
    columns = {}
    for name, arr in arrays.items():
        if not name.startswith(f"{split}/") or name == key:
            continue
        col = name[len(split) + 1:]
        if arr.shape != ids.shape or arr.dtype.kind != "f":
            raise _bad(path, f"{name!r} must be float with shape {ids.shape}, got {arr.dtype} {arr.shape}")
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise _bad(path, f"{name!r} has non-finite values at items {bad[:5].tolist()}")
        columns[col] = arr.astype(np.float64)
    block = info.get("block", 1)
    if not isinstance(block, int) or not 1 <= block <= len(ids):
        raise _bad(path, f"'meta.splits.{split}.block' = {block!r} must be an integer in [1, {len(ids)}]")
    span = info.get("span", 0)
    if not isinstance(span, int) or span < 0:
        raise _bad(path, f"'meta.splits.{split}.span' = {span!r} must be a non-negative integer")
    return SplitItems(ids.astype(np.int64), columns, block, span)


def _read_metric(path: Path, name: str, spec: Any, splits: dict[str, SplitItems]) -> MetricDef:
    try:
        num, den, scale = (tuple(spec[k]) for k in ("num", "den", "scale"))
        scale = tuple(float(s) for s in scale)
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(path, f"metric {name!r} needs lists 'num', 'den' and 'scale'") from exc
    if not num or not len(num) == len(den) == len(scale) or not all(math.isfinite(s) for s in scale):
        raise _bad(path, f"metric {name!r}: 'num', 'den' and 'scale' must be equally long and finite")
    for split, items in splits.items():
        for col in (*num, *den):
            if col not in items.columns:
                raise _bad(path, f"metric {name!r} uses column {col!r}, absent from split {split!r}")
        for col in den:
            d = items.columns[col]
            if (d < 0).any() or d.sum() <= 0:
                raise _bad(path, f"denominator {split}/{col} must be >= 0 with a positive sum")
    return MetricDef(tuple(num), tuple(den), scale)


def read_run_items(run_dir: Path) -> tuple[dict[str, ItemScores], list[str]]:
    """Every ``items/*.npz`` of a run folder: (source -> scores, problems); a bad file becomes a problem."""
    found: dict[str, ItemScores] = {}
    problems: list[str] = []
    folder = Path(run_dir) / ITEMS_DIR
    if not folder.is_dir():
        return found, problems
    for path in sorted(folder.glob("*.npz")):
        try:
            items = read_items(path)
        except DataError as exc:
            problems.append(str(exc))
            continue
        found[items.source] = items
    return found, problems
