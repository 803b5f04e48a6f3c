"""Run-folder files (docs/run-folder.md): atomic JSON/YAML writes, metrics.jsonl, status.json.

Every write goes to a temporary file in the same folder and is then renamed over the target, so a
process killed mid-write never leaves a truncated file behind.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import math
import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from filelock import FileLock

from freezelab.errors import DiskFullError, RunFileError, RunFileMissing
from freezelab.tracking.faults import fault_point

Status = Literal["pending", "running", "succeeded", "failed"]
WEIGHTS_FORMAT, WEIGHTS_META_KEY = "freezelab-weights/1", "freezelab"  # the header of every weight file
STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
STATUS_LOCK = ".status.lock"
HEARTBEAT_STALE_SECONDS = 600
TMP_SUFFIX = ".tmp"
_UMASK = os.umask(0o022)  # read once (single-threaded at import) so files get the user's usual mode, not 0600
os.umask(_UMASK)
RESTART_FIX = ("Running the study again starts this run over (the damaged attempt is kept under attempts/); "
               "or restore the run folder from an intact copy.")
DAMAGED_FIX = ("The file was damaged after it was written (a cut-short copy, an edit, a disk error): restore it "
               "from a copy, or delete the run folder and run the study again to redo that run.")


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


def _disk_full(path: Path, err: OSError) -> DiskFullError:
    return DiskFullError(f"no space left on device writing {path} ({err.strerror}). Free space on that disk (or "
                         "pass --out on a disk with room) and run the same command again: finished runs are kept and "
                         "interrupted ones resume from their last checkpoint; nothing half-written is used.")


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Let ``write`` fill a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A kill mid-write leaves the previous file intact (and a ``.NAME.*.tmp`` that the next run removes).

    Raises:
        DiskFullError: the disk (or quota) is full; the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # run folders are shared: not mkstemp's 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        fault_point(f"before_rename:{path.name}")
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(path, err) from err
        raise
    fault_point(f"after_rename:{path.name}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` atomically (temporary file + ``os.replace``)."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    write_atomically(path, write)


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files that killed writes left in ``folder`` (not recursive); returns them."""
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def file_record(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file, recorded when it is written and checked before it is trusted."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"sha256": h.hexdigest(), "size": Path(path).stat().st_size}


def verify_file(path: Path, record: Mapping[str, Any], *, fix: str = RESTART_FIX) -> None:
    """Raise ``RunFileError`` unless ``path`` has the recorded size and SHA-256."""
    path = Path(path)
    if not path.exists():
        raise RunFileMissing(f"{path} is missing (it was recorded when written). {fix}")
    size = path.stat().st_size
    if size != record.get("size"):
        raise RunFileError(f"{path} has {size:,} bytes but {record.get('size'):,} were written: it is truncated or "
                           f"was replaced. {fix}")
    if file_record(path)["sha256"] != record.get("sha256"):
        raise RunFileError(f"{path} does not match the SHA-256 recorded when it was written: it was changed or "
                           f"damaged. {fix}")


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(_jsonable(data), indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, *, fix: str = DAMAGED_FIX) -> Any:
    """Read a JSON file of a run folder.

    Raises:
        RunFileError: the file is missing, not UTF-8 or not valid JSON; the message names the file and ``fix``.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise RunFileMissing(f"{path} is missing. {fix}") from err
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunFileError(f"{path} is damaged ({type(err).__name__}: {err}). {fix}") from err


def read_checked_json(path: Path, check: Callable[[Any], None], *, what: str,
                      consequence: str) -> tuple[Any, str | None]:
    """An optional study-level record a report reads (an untrusted file): (record, None); (None, None) when it is
    absent; (None, problem) when it is unreadable or ``check`` raises (KeyError, TypeError, ValueError,
    AssertionError), the problem naming the file, ``what`` it should be and ``consequence``."""
    path = Path(path)
    if not path.exists():
        return None, None
    try:
        rec = read_json(path)
        check(rec)
    except (RunFileError, OSError, KeyError, TypeError, ValueError, AssertionError) as err:
        return None, f"{path} is not a valid {what} ({type(err).__name__}); {consequence}"
    return rec, None


def write_yaml(path: Path, data: Any) -> None:
    """Atomically write ``data`` as YAML (keys in insertion order)."""
    atomic_write_text(path, yaml.safe_dump(_jsonable(data), sort_keys=False, allow_unicode=True))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line; a single ``write`` call so concurrent readers see whole lines.

    Raises:
        DiskFullError: no space left; at most a torn last line remains, which readers skip and a resumed
            run truncates.
    """
    line = (json.dumps(_jsonable(record), ensure_ascii=False) + "\n").encode("utf-8")
    try:
        with open(path, "ab") as f:
            if os.environ.get("FREEZELAB_FAULT", "").startswith("append:"):
                f.write(line[:len(line) // 2])
                f.flush()
                fault_point(f"append:{Path(path).name}")
                f.write(line[len(line) // 2:])
            else:
                f.write(line)
            f.flush()
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(Path(path), err) from err
        raise


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read metrics.jsonl, skipping lines that are not UTF-8 JSON (a torn last line left by a killed process)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            rows.append(json.loads(line.decode("utf-8")))
        except ValueError:
            continue
    return rows


def file_size(path: Path) -> int:
    """Bytes of ``path`` (0 when missing): a resumable state records how much of metrics.jsonl it covers."""
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        return 0


def truncate(path: Path, size: int) -> None:
    """Cut ``path`` back to ``size`` bytes (lines logged after the state a resumed run continues from)."""
    path = Path(path)
    if path.exists() and path.stat().st_size > size:
        with open(path, "rb+") as f:
            f.truncate(size)


def status_lock(run_dir: Path) -> FileLock:
    """The lock every writer of status.json holds for its read-modify-write (the heartbeat included)."""
    return FileLock(str(Path(run_dir) / STATUS_LOCK))


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """Return status.json of a run folder, or None when the run never started or the file is unreadable."""
    path = Path(run_dir) / STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def status_problem(run_dir: Path) -> str | None:
    """Why status.json cannot be read (None when it is fine or absent)."""
    path = Path(run_dir) / STATUS_FILE
    if path.exists() and read_status(run_dir) is None:
        return f"{path} is damaged (not a JSON object)"
    return None


def write_status(run_dir: Path, status: Status, **fields: Any) -> dict[str, Any]:
    """Update status.json under the status lock, keeping earlier fields (attempt, started_at) unless overridden."""
    with status_lock(run_dir):
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
    """Refresh ``heartbeat_at`` of a running run; under the status lock, so a final status is never undone."""
    with status_lock(run_dir):
        current = read_status(run_dir)
        if current is None or current.get("status") != "running":
            return
        current["heartbeat_at"] = now_iso()
        write_json(Path(run_dir) / STATUS_FILE, current)


def is_stale(status: dict[str, Any], *, stale_seconds: float = HEARTBEAT_STALE_SECONDS) -> bool:
    """True when a ``running`` status has not been refreshed for ``stale_seconds`` (or has no readable time)."""
    beat = status.get("heartbeat_at") or status.get("updated_at")
    try:
        age = _dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(str(beat))
    except (TypeError, ValueError):
        return True
    return age.total_seconds() > stale_seconds
