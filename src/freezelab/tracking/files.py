"""Run-folder files (docs/run-folder.md): atomic JSON/YAML writes, metrics.jsonl, status.json.

Every write goes to a temporary file in the same folder and is then renamed over the target, so a
process killed mid-write never leaves a truncated file behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Literal

import yaml

Status = Literal["pending", "running", "succeeded", "failed"]
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
HEARTBEAT_STALE_SECONDS = 600


def now_iso() -> str:
    """Current UTC time as ISO-8601 with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and non-finite floats into strict-JSON-friendly values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": kept visible, still valid JSON
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_yaml(path: Path, data: Any) -> None:
    """Atomically write ``data`` as YAML (keys in insertion order)."""
    atomic_write_text(path, yaml.safe_dump(_jsonable(data), sort_keys=False, allow_unicode=True))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; a single ``write`` call so concurrent readers see whole lines."""
    line = json.dumps(_jsonable(record), ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read metrics.jsonl, ignoring a torn last line left by a killed process."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """Return status.json of a run folder, or None when the run never started."""
    path = Path(run_dir) / STATUS_FILE
    if not path.exists():
        return None
    try:
        return read_json(path)
    except json.JSONDecodeError:
        return None


def write_status(run_dir: Path, status: Status, **fields: Any) -> dict[str, Any]:
    """Update status.json, keeping earlier fields (attempt, started_at) unless overridden."""
    current = read_status(run_dir) or {}
    stamp = now_iso()
    current.update(fields)
    current.update({"status": status, "updated_at": stamp, "heartbeat_at": stamp,
                    "host": socket.gethostname()})
    if status != "failed":
        current.setdefault("error", None)
    write_json(Path(run_dir) / STATUS_FILE, current)
    return current


def heartbeat(run_dir: Path) -> None:
    """Refresh ``heartbeat_at`` of a running run (called from a background thread)."""
    current = read_status(run_dir)
    if current is None or current.get("status") != "running":
        return
    current["heartbeat_at"] = now_iso()
    write_json(Path(run_dir) / STATUS_FILE, current)


def is_stale(status: dict[str, Any], *, stale_seconds: float = HEARTBEAT_STALE_SECONDS) -> bool:
    """True when a ``running`` status has not been refreshed for ``stale_seconds``."""
    beat = status.get("heartbeat_at") or status.get("updated_at")
    if beat is None:
        return True
    age = _dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(beat)
    return age.total_seconds() > stale_seconds
