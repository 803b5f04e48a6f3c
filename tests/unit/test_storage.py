"""The run-folder store behind ``run --executor ray --storage URI`` (experiment/storage.py): mirror copies
both ways, the local lock and temporary files never travel, manifests travel after what they vouch for,
a store that cannot be written is named before anything runs, and so is a second head driving the same
store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from freezelab.errors import FreezelabError
from freezelab.experiment.storage import HeadLease, RunStore, Syncer


def _folder(root: Path) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.yaml").write_text("a: 1\n")
    (root / "status.json").write_text('{"status": "running"}')
    (root / "checkpoints" / "state.safetensors").write_bytes(b"\0" * 1000)
    (root / "checkpoints" / "state.json").write_text("{}")
    (root / ".lock").write_text("")
    (root / ".lock.json").write_text('{"pid": 1}')
    (root / ".status.json.tmp").write_text("half")
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_push_then_pull_mirrors_a_run_folder_without_its_lock_or_temporary_files(tmp_path: Path) -> None:
    local = _folder(tmp_path / "worker" / "run")
    store = RunStore(str(tmp_path / "store"))
    assert store.push(local, "runs/r") == 4
    assert set(store.files("runs/r")) == {"config.yaml", "status.json", "checkpoints/state.safetensors",
                                          "checkpoints/state.json"}
    assert store.folders("runs") == ["r"]
    head = tmp_path / "head" / "run"
    head.mkdir(parents=True)
    (head / "stale.txt").write_text("gone in the storage")
    (head / ".lock").write_text("held here")
    assert store.pull("runs/r", head)
    expected = {k: v for k, v in _tree(local).items() if not k.startswith(".")}
    assert _tree(head) == {**expected, ".lock": b"held here"}  # stale file removed, the local lock kept
    assert not store.pull("runs/missing", head) and (head / "config.yaml").exists()


def test_push_writes_only_what_changed_deletes_what_went_and_sends_manifests_last(tmp_path: Path,
                                                                               monkeypatch) -> None:
    local = _folder(tmp_path / "run")
    store = RunStore(f"file://{tmp_path / 'store'}")
    written: list[str] = []
    real = store._write
    monkeypatch.setattr(store, "_write", lambda rel, data: (written.append(rel), real(rel, data)))
    store.push(local, "runs/r")
    assert written[-2:] == ["runs/r/checkpoints/state.json", "runs/r/status.json"]
    written.clear()
    assert store.push(local, "runs/r") == 0 and written == []
    time.sleep(0.01)
    (local / "checkpoints" / "state.safetensors").write_bytes(b"\1" * 1000)  # same size, new content
    (local / "config.yaml").unlink()
    assert store.push(local, "runs/r") == 1
    assert "config.yaml" not in store.files("runs/r")
    got = tmp_path / "got"
    store.pull("runs/r", got)
    assert (got / "checkpoints" / "state.safetensors").read_bytes() == b"\1" * 1000


def test_the_syncer_pushes_while_the_run_goes_on_and_once_more_at_the_end(tmp_path: Path) -> None:
    local = tmp_path / "run"
    local.mkdir()
    store = RunStore(str(tmp_path / "store"))
    with Syncer(store, local, "runs/r", every=0.05):
        (local / "progress.json").write_text('{"epoch": 1}')
        deadline = time.monotonic() + 10
        while "progress.json" not in store.files("runs/r") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "progress.json" in store.files("runs/r")  # before the run ended
        (local / "summary.json").write_text('{"status": "succeeded"}')
    assert "summary.json" in store.files("runs/r")


def test_a_store_that_cannot_be_written_is_named_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(FreezelabError, match=r"--storage .*a-file.*cannot write there.*Nothing has run yet"):
        RunStore(str(blocker / "store")).check()
    with pytest.raises(FreezelabError, match=r"--storage nosuch://x: .*Pass a local path"):
        RunStore("nosuch://x")


def _commit(ckpt: Path, content: bytes) -> None:
    """A checkpoint commit as tracking/checkpoints.py writes one: the weights file, then its manifest."""
    import hashlib
    import json

    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "state.safetensors").write_bytes(content)
    record = {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    (ckpt / "state.json").write_text(json.dumps({"format": "x", "files": {"state.safetensors": record}}))


def test_the_storage_always_holds_a_whole_commit_even_when_a_push_is_cut_off(tmp_path: Path, monkeypatch) -> None:
    import json

    local = tmp_path / "run"
    _commit(local / "checkpoints", b"one" * 100)
    store = RunStore(str(tmp_path / "store"))
    store.push(local, "runs/r")

    def held(folder: Path) -> bytes:
        """The weights the pulled commit names, checked against its manifest (what recover() checks)."""
        import hashlib

        ckpt = folder / "checkpoints"
        record = json.loads((ckpt / "state.json").read_text())["files"]["state.safetensors"]
        final, staged = ckpt / "state.safetensors", ckpt / "state.safetensors.next"
        data = final.read_bytes()
        if hashlib.sha256(data).hexdigest() != record["sha256"] and staged.exists():
            data = staged.read_bytes()  # a push cut off between its manifest and the rename: recover() renames
        assert hashlib.sha256(data).hexdigest() == record["sha256"]
        return data

    # a newer commit half done (weights replaced, manifest not yet): the storage keeps the last whole one
    (local / "checkpoints" / "state.safetensors").write_bytes(b"two" * 100)
    store.push(local, "runs/r")
    store.pull("runs/r", tmp_path / "a")
    assert held(tmp_path / "a") == b"one" * 100
    # the commit completed, but the push dies after staging the weights: still the previous commit
    _commit(local / "checkpoints", b"two" * 100)
    real = store._write
    monkeypatch.setattr(store, "_write", lambda rel, data: (_ for _ in ()).throw(OSError("connection reset"))
                        if rel.endswith("state.json") else real(rel, data))
    with pytest.raises(OSError):
        store.push(local, "runs/r")
    store.pull("runs/r", tmp_path / "b")
    assert held(tmp_path / "b") == b"one" * 100
    # ... and after the manifest, before the rename: the new commit
    monkeypatch.setattr(store, "_write", real)
    monkeypatch.setattr(store, "_move", lambda src, dst: (_ for _ in ()).throw(OSError("cut")))
    with pytest.raises(OSError):
        store.push(local, "runs/r")
    store.pull("runs/r", tmp_path / "c")
    assert held(tmp_path / "c") == b"two" * 100
    monkeypatch.undo()
    store.push(local, "runs/r")  # the next push completes it
    assert set(store.files("runs/r")) == {"checkpoints/state.json", "checkpoints/state.safetensors"}


# ----------------------------------------------------------------------------- one head per storage
def _lease_file(store: RunStore, **record) -> None:
    import json

    store._write(HeadLease.FILE, json.dumps(record).encode())


def test_a_second_head_on_the_same_storage_is_refused_until_the_first_releases(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path / "store"))
    first = HeadLease(store, tmp_path / "out-a")
    with first:
        with pytest.raises(FreezelabError) as err:
            HeadLease(store, tmp_path / "out-b").acquire()
        text = " ".join(str(err.value).split())
        assert "another freezelab head drives this storage" in text and str(tmp_path / "out-a") in text
        assert "head.json" in text and "Nothing has run yet" in text
        first.renew()  # its own lease: renewing never refuses it
    HeadLease(store, tmp_path / "out-b").acquire()  # released at the end of the first


def test_a_lease_without_a_heartbeat_or_of_a_dead_process_here_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = RunStore(str(tmp_path / "store"))
    said: list[str] = []
    _lease_file(store, token="x", host="elsewhere", pid=1, out_dir="/o", heartbeat=time.time() - 1000)
    HeadLease(store, tmp_path / "out", seconds=120, log=said.append).acquire()
    assert said and "more than 120 s old" in said[-1]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = HeadLease(store, tmp_path / "out", log=said.append)
    _lease_file(store, token="y", host=me.me["host"], pid=gone.pid, out_dir="/o", heartbeat=time.time())
    me.acquire()
    assert f"its process {gone.pid} on this host has ended" in said[-1]
    _lease_file(store, token="z", host="elsewhere", pid=1, out_dir="/o", heartbeat=time.time())  # alive elsewhere
    with pytest.raises(FreezelabError, match="another freezelab head"):
        HeadLease(store, tmp_path / "out").acquire()
    me.release()  # not its lease any more: left in place
    assert HeadLease(store, tmp_path / "x")._read()["token"] == "z"


def test_the_heartbeat_is_renewed_while_the_head_waits(tmp_path: Path, monkeypatch) -> None:
    store = RunStore(str(tmp_path / "store"))
    lease = HeadLease(store, tmp_path / "out", seconds=40)
    clock = [1000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    lease.acquire()
    clock[0] += 5
    lease.renew()                                    # within a quarter of the lease: not rewritten
    assert lease._read()["heartbeat"] == 1000.0
    clock[0] += 6
    lease.renew()
    assert lease._read()["heartbeat"] == 1011.0
