"""Run folders kept in a storage URI, for clusters whose nodes share no filesystem (``run --storage URI``).

With ``--executor ray --storage URI`` the storage holds every run folder (``URI/runs/<run id>/``); no node
needs to see the head's output folder. The head pushes each prepared folder there; the Ray task on a
worker node pulls it into the node's own scratch folder, runs it there (the same code path as a local run)
while a background thread pushes what changed every few seconds — progress, metrics, checkpoints — and
pushes the final state when the run ends. The head pulls the folder back into its output folder, where the
report is built as for any other run. A run whose node died resumes, on any node, from the checkpoint
the storage last received.

A URI is a local path (a mounted volume) or anything ``pyarrow.fs.FileSystem.from_uri`` opens:
``file:///...``, ``s3://bucket/prefix`` (credentials from the usual AWS variables; an S3-compatible store
with ``?endpoint_override=host:port&scheme=http``), ``gs://``, ``hdfs://``. Nothing here unpickles
anything: the pulled folder is checked by the runner as any run folder is (sizes and SHA-256 recorded
when each file was written).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from freezelab.errors import FreezelabError
from freezelab.tracking.checkpoints import MANIFEST, STAGED
from freezelab.tracking.files import STATUS_FILE, SUMMARY_FILE, TMP_SUFFIX

LOCAL_ONLY = (".lock", ".lock.json")  # a run's lock is held on the node that runs it
# Written last, as the runs themselves write them: the files these vouch for are in the storage first.
LAST = (f"checkpoints/{MANIFEST}", STATUS_FILE, SUMMARY_FILE)  # (the manifest: when no commit names files)
SCRATCH_ENV = "FREEZELAB_SCRATCH"
SYNC_ENV = "FREEZELAB_SYNC_SECONDS"  # how often a running task pushes what changed (default 5 s)


def sync_seconds() -> float:
    """The push interval of a running task: ``FREEZELAB_SYNC_SECONDS`` (seconds, > 0), else 5."""
    raw = os.environ.get(SYNC_ENV, "5")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise FreezelabError(f"{SYNC_ENV}={raw!r}: give the push interval in seconds, a number > 0 (default 5)")
    return value


def scratch_root() -> Path:
    """Where a worker node keeps the run folders it executes and its data cache (``FREEZELAB_SCRATCH``,
    else ``freezelab-scratch`` in the node's temporary folder)."""
    return Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "freezelab-scratch")


def _read_commit(ckpt: Path) -> tuple[dict, bytes] | None:
    """The checkpoint manifest in ``ckpt`` as written by its last commit (parsed, and its bytes); None when
    there is none."""
    try:
        raw = (ckpt / MANIFEST).read_bytes()
        commit = json.loads(raw)
    except (OSError, ValueError):
        return None
    return (commit, raw) if isinstance(commit, dict) and isinstance(commit.get("files"), dict) else None


def _skipped(rel: str) -> bool:
    name = PurePosixPath(rel).name
    return name in LOCAL_ONLY or (name.startswith(".") and name.endswith(TMP_SUFFIX))


class RunStore:
    """Run folders under a storage URI (see the module docstring)."""

    def __init__(self, uri: str) -> None:
        import pyarrow.fs as pafs

        self.uri = uri
        try:
            if "://" not in uri:
                self.fs, self.root = pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
            else:
                self.fs, self.root = pafs.FileSystem.from_uri(uri)
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError with its own words
            raise FreezelabError(f"--storage {uri}: {type(err).__name__}: {err}. Pass a local path, file:///path, "
                                 "or a URI pyarrow opens (s3://bucket/prefix, gs://bucket/prefix, hdfs://...)"
                                 ) from err
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self._sent: dict[tuple[str, str], tuple[int, int]] = {}  # (folder, file) -> (size, mtime) last pushed

    def __repr__(self) -> str:
        return f"RunStore({self.uri!r})"

    # --- paths ---------------------------------------------------------------------------------------
    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}".rstrip("/")

    def check(self) -> None:
        """Write, read and delete a probe file, so that an unreachable or read-only store is named before any
        run is dispatched. Raises FreezelabError with the cause."""
        probe = f".probe-{uuid.uuid4().hex}"
        try:
            self.fs.create_dir(self.root, recursive=True)
            self._write(probe, b"freezelab")
            with self.fs.open_input_stream(self._path(probe)) as f:
                back = f.read()
            self.fs.delete_file(self._path(probe))
            if back != b"freezelab":
                raise OSError(f"a probe file read back as {back[:40]!r}, not what was written")
        except Exception as err:
            raise FreezelabError(
                f"--storage {self.uri}: cannot write there ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
                "Check the address, the bucket and the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                "?endpoint_override= for an S3-compatible store). Nothing has run yet.") from err

    def files(self, rel: str) -> dict[str, int]:
        """Every file under ``rel`` (relative path → size); empty when the folder is not there."""
        import pyarrow.fs as pafs

        base = self._path(rel)
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return {info.path[len(base) + 1:]: info.size for info in infos if info.type == pafs.FileType.File}

    def folders(self, rel: str) -> list[str]:
        """Names of the folders directly under ``rel``."""
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self._path(rel), recursive=False, allow_not_found=True))
        return sorted(PurePosixPath(i.path).name for i in infos if i.type == pafs.FileType.Directory)

    # --- copying -------------------------------------------------------------------------------------
    def _write(self, rel: str, data: bytes | Path) -> None:
        """One object, whole: on a local store through a temporary name and a rename; object stores make a
        completed upload visible at once."""
        path = self._path(rel)
        parent = str(PurePosixPath(path).parent)
        self.fs.create_dir(parent, recursive=True)
        target = f"{parent}/.{PurePosixPath(path).name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}" if self.local else path
        with self.fs.open_output_stream(target) as out:
            if isinstance(data, Path):
                with open(data, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                out.write(data)
        if self.local:
            self.fs.move(target, path)

    def _move(self, src: str, dst: str) -> None:
        self.fs.move(self._path(src), self._path(dst))  # object stores: a copy, then a delete

    def push(self, local_dir: Path, rel: str) -> int:
        """Mirror ``local_dir`` to ``rel``; returns the number of files written.

        Files new or changed since this store last pushed them are written, status.json and summary.json
        last; files no longer there are deleted. The checkpoint is sent as one commit (``_push_commit``), so
        that the storage always holds a checkpoint the runner can resume from, whenever the pushing node dies.
        """
        local_dir = Path(local_dir)
        ckpt = local_dir / "checkpoints"
        commit = _read_commit(ckpt)  # read first: what follows is at least as new as the commit it names
        held = {f"checkpoints/{n}" for n in (commit[0]["files"] if commit else {})} | {f"checkpoints/{MANIFEST}"}
        now: dict[str, tuple[int, int]] = {}
        for path in local_dir.rglob("*"):
            name = path.relative_to(local_dir).as_posix()
            if _skipped(name) or name.endswith(STAGED) or (commit is not None and name in held):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:  # renamed away while we listed (a commit, an archive)
                continue
            if path.is_file():
                now[name] = (st.st_size, st.st_mtime_ns)
        order = sorted(now, key=lambda n: (n in LAST, LAST.index(n) if n in LAST else 0, n))
        tail = [n for n in order if n in (STATUS_FILE, SUMMARY_FILE)]
        written = 0
        for name in [n for n in order if n not in tail]:
            written += self._push_file(local_dir, rel, name, now[name])
        keep = set(now)
        if commit is not None:
            sent = self._push_commit(ckpt, rel, *commit)
            if sent is None:  # a newer commit replaced a file while we read it: the storage keeps the last one
                keep |= {n for n in self.files(rel) if n.startswith("checkpoints/")}
            else:
                written += sent
                keep |= held
        for name in tail:
            written += self._push_file(local_dir, rel, name, now[name])
        for name in set(self.files(rel)) - keep:
            if not _skipped(name):
                self.fs.delete_file(self._path(f"{rel}/{name}"))
                self._sent.pop((rel, name), None)
        return written

    def _push_file(self, local_dir: Path, rel: str, name: str, stamp: tuple[int, int]) -> int:
        if self._sent.get((rel, name)) == stamp:
            return 0
        try:
            self._write(f"{rel}/{name}", local_dir / name)
        except FileNotFoundError:
            return 0
        self._sent[(rel, name)] = stamp
        return 1

    def _push_commit(self, ckpt: Path, rel: str, commit: dict, raw: bytes) -> int | None:
        """Send the checkpoint named by ``commit`` (the parsed manifest) as checkpoints/recover() expects a
        commit: each changed file staged as ``NAME.next``, then the manifest, then the renames. A push cut off
        anywhere leaves either the previous commit (with strays recover() removes) or this one (with renames
        recover() finishes). None when a file no longer matches the manifest (a newer commit is under way)."""
        blobs: dict[str, bytes] = {}
        for name, record in commit["files"].items():
            if self._sent.get((rel, f"checkpoints/{name}")) == record.get("sha256"):
                continue  # unchanged since the last commit this store sent
            for candidate in (ckpt / name, ckpt / (name + STAGED)):
                try:
                    data = candidate.read_bytes()
                except FileNotFoundError:
                    continue
                if hashlib.sha256(data).hexdigest() == record.get("sha256"):
                    blobs[name] = data
                    break
            else:
                return None
        if not blobs and self._sent.get((rel, f"checkpoints/{MANIFEST}")) == hashlib.sha256(raw).hexdigest():
            return 0
        for name, data in blobs.items():
            self._write(f"{rel}/checkpoints/{name}{STAGED}", data)
        self._write(f"{rel}/checkpoints/{MANIFEST}", raw)
        for name in blobs:
            self._move(f"{rel}/checkpoints/{name}{STAGED}", f"{rel}/checkpoints/{name}")
            self._sent[(rel, f"checkpoints/{name}")] = commit["files"][name]["sha256"]
        self._sent[(rel, f"checkpoints/{MANIFEST}")] = hashlib.sha256(raw).hexdigest()
        return len(blobs) + 1

    def pull(self, rel: str, local_dir: Path, *, only: Iterable[str] | None = None) -> bool:
        """Mirror ``rel`` into ``local_dir`` (each file through a temporary name and a rename; local files the
        storage no longer has are removed, the local lock excepted). ``only``: just these files, nothing
        removed. Returns False, touching nothing, when the storage has no such folder."""
        remote = self.files(rel)
        if not remote:
            return False
        local_dir = Path(local_dir)
        names = [n for n in (only if only is not None else remote) if n in remote and not _skipped(n)]
        for name in names:
            dest = local_dir / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
            with self.fs.open_input_stream(self._path(f"{rel}/{name}")) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, dest)
        if only is None:
            for path in sorted(local_dir.rglob("*"), reverse=True):
                name = path.relative_to(local_dir).as_posix()
                if path.is_file() and name not in remote and not _skipped(name):
                    path.unlink()
        return True


class Syncer:
    """Push a run folder to the storage every ``every`` seconds while a run executes, and once at the end."""

    def __init__(self, store: RunStore, local_dir: Path, rel: str, *, every: float = 5.0) -> None:
        self.store, self.local_dir, self.rel, self.every = store, local_dir, rel, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"freezelab-sync-{rel}", daemon=True)
        self.problem: str | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.store.push(self.local_dir, self.rel)
            except Exception as err:  # a transient store problem: the next push tries again; the end's is final
                self.problem = f"{type(err).__name__}: {err}"

    def __enter__(self) -> Syncer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.store.push(self.local_dir, self.rel)  # the final state; a failure here fails the task loudly


class HeadLease:
    """One head drives a storage at a time: two would dispatch the same runs twice and their tasks would
    push over each other's commits. The head writes ``URI/head.json`` (who it is, a heartbeat renewed while it
    waits for its tasks) and deletes it at the end; another head that finds a live one refuses to start. A
    lease whose heartbeat is older than ``seconds``, or one left by a process of this host that is gone (a
    killed head, rerun as its message says), is taken over with a warning. Object stores have no
    create-if-absent here, so two heads started within the same second can both win: the lease guards
    against the usual mistake (a second terminal, a colleague), not against a deliberate race."""

    FILE = "head.json"

    def __init__(self, store: RunStore, out_dir: Path, *, seconds: float = 120.0,
                 log: Callable[[str], None] = print) -> None:
        self.store, self.seconds, self.log = store, seconds, log
        self.me = {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                   "out_dir": str(out_dir)}
        self._renewed = 0.0

    def __enter__(self) -> HeadLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _read(self) -> dict | None:
        try:
            with self.store.fs.open_input_stream(self.store._path(self.FILE)) as f:
                record = json.loads(f.read())
            return record if isinstance(record, dict) else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # unreadable: treated as absent (it guards nothing then)
            return None

    def _gone(self, other: dict, now: float) -> str | None:
        """Why ``other``'s lease no longer holds (None: it holds)."""
        beat = other.get("heartbeat")
        if not isinstance(beat, (int, float)) or now - beat > self.seconds:
            return f"its last heartbeat is more than {self.seconds:g} s old"
        if other.get("host") == self.me["host"] and isinstance(other.get("pid"), int) and not _alive(other["pid"]):
            return f"its process {other['pid']} on this host has ended"
        return None

    def acquire(self) -> None:
        """Take the lease, or raise FreezelabError naming the head that holds it and what to do."""
        now = time.time()
        other = self._read()
        if other is not None and other.get("token") != self.me["token"]:
            why = self._gone(other, now)
            if why is None:
                raise FreezelabError(
                    f"--storage {self.store.uri}: another freezelab head drives this storage (host "
                    f"{other.get('host')}, pid {other.get('pid')}, output folder {other.get('out_dir')}; last "
                    f"heartbeat {now - other['heartbeat']:.0f} s ago); two heads would run the same runs twice. "
                    f"Wait for it to end, or, if it is gone, run again after {self.seconds:g} s without its "
                    f"heartbeat, or delete {self.store._path(self.FILE)}. Nothing has run yet.")
            self.log(f"warning: taking over the storage's head lease of {other.get('host')} pid "
                     f"{other.get('pid')} ({why})")
        self._write(now)

    def _write(self, now: float) -> None:
        self.store._write(self.FILE, json.dumps({**self.me, "heartbeat": now}).encode())
        self._renewed = now

    def renew(self) -> None:
        """Refresh the heartbeat (at most every quarter of the lease)."""
        now = time.time()
        if now - self._renewed >= self.seconds / 4:
            self._write(now)

    def release(self) -> None:
        """Delete the lease if it is still this head's."""
        other = self._read()
        if other is not None and other.get("token") == self.me["token"]:
            try:
                self.store.fs.delete_file(self.store._path(self.FILE))
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
