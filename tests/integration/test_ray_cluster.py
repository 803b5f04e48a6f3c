"""A real Ray cluster whose worker node cannot see the head's output folder (issue 21, part 1).

The head node (``ray start --head``, no CPUs: nothing runs there) and a worker node started with
``ray start`` under its own temporary folder, in a mount namespace where a read-only empty filesystem
covers the head's output folder. The run folders travel through an S3-compatible store (moto's server)
with ``--storage s3://...``. The test shows the worker cannot write (or even see) the head's folder, runs
the study through the CLI, kills the worker node in the middle of its runs, starts another, and checks
that the rerun resumes from the checkpoints the storage received and ends with the metrics of an
uninterrupted run. Needs Linux ``unshare`` with mount namespaces (root in a container); skipped otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_base

pytestmark = pytest.mark.integration
RAY = Path(sys.executable).with_name("ray")
CLUSTER_MARK = "FREEZELAB_TEST_CLUSTER"  # in the environment of every process of the test's cluster
FREEZELAB = Path(sys.executable).with_name("freezelab")


def _can_unshare() -> bool:
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o ro tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# On the cluster, in a task that can only run on the worker node (the head has no CPUs): may it see or write
# the head's output folder? Prints [ran on the head?, what it lists there, what writing there did].
PROBE = """
import json, os, sys
from pathlib import Path
import ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=1)
def probe(folder):
    try:
        Path(folder, "written-by-worker").write_text("x")
        wrote = "wrote"
    except OSError as err:
        wrote = f"{type(err).__name__}: {err}"
    return ray.get_runtime_context().get_node_id(), os.listdir(folder), wrote

node, listing, wrote = ray.get(probe.remote(sys.argv[2]), timeout=120)
head = "node:__internal_head__" in {n["NodeID"]: n for n in ray.nodes()}[node]["Resources"]
print(json.dumps([head, listing, wrote]))
"""


def _committed_epoch(store, rel: str) -> int:
    """The epoch of the last checkpoint the storage holds for a run (0: none yet, or Phase 1's)."""
    if "checkpoints/state.json" not in store.files(rel):
        return 0
    with store.fs.open_input_stream(store._path(f"{rel}/checkpoints/state.json")) as f:
        position = json.loads(f.read())["state"]["position"]
    return int(position.get("epoch") or 0) if position.get("phase") == "phase2" else 0


class Cluster:
    """``ray start`` head and worker nodes on this machine; every process they start is killed at the end."""

    def __init__(self, root: Path, hidden: Path, env: dict[str, str]) -> None:
        self.root, self.hidden = root, hidden
        self.env = {**env, CLUSTER_MARK: str(root)}
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dirs: list[Path] = []

    def _ray_start(self, args: list[str], temp: Path, *, hide: bool, env: dict[str, str] | None = None) -> None:
        self.temp_dirs.append(temp)
        cmd = [str(RAY), "start", *args, "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
               "--disable-usage-stats"]
        if hide:  # the worker's view: a read-only empty filesystem where the head keeps its output folder
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(self.hidden), *cmd]
        done = subprocess.run(cmd, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    def start_head(self) -> None:
        self._ray_start(["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false"],
                        self.root / "head", hide=False)

    def start_worker(self, name: str) -> Path:
        temp = self.root / name
        self._ray_start([f"--address={self.address}", "--num-cpus=2"], temp, hide=True,
                        env={"FREEZELAB_SCRATCH": str(temp / "scratch"), CLUSTER_MARK: f"{self.root}:{name}"})
        return temp

    def kill_node(self, temp: Path) -> None:
        """SIGKILL every process of a node at once, as when its machine dies: the raylet names the node's
        temporary folder on its command line, and every process the node starts (helpers and Ray workers
        rename themselves) carries it in its environment (FREEZELAB_SCRATCH, CLUSTER_MARK)."""
        self._kill(str(temp).encode())

    def _kill(self, mark: bytes) -> None:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            except OSError:
                continue
            if mark in seen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    def stop(self) -> None:
        self._kill(f"{CLUSTER_MARK}={self.root}".encode())  # every process of every node, the head's too


@pytest.fixture
def s3_store():
    pytest.importorskip("moto")
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    creds = {"AWS_ACCESS_KEY_ID": "freezelab", "AWS_SECRET_ACCESS_KEY": "freezelab", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                           allow_bucket_creation=True)
    fs.create_dir("runs-bucket")
    uri = f"s3://runs-bucket/study?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    yield uri, creds
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.skipif(not _can_unshare(), reason="needs Linux mount namespaces (unshare --mount), e.g. root")
def test_a_worker_without_the_head_folder_runs_the_study_through_s3_and_a_killed_node_resumes_from_it(
        tmp_path: Path, tiny_model_dir: Path, tiny_corpus: Path, s3_store) -> None:
    pytest.importorskip("ray")
    from freezelab.experiment.storage import RunStore

    uri, creds = s3_store
    out = tmp_path / "head-out"
    out.mkdir()
    base = tiny_base(tiny_model_dir, tiny_corpus)
    base["phase2"].update(max_epochs=150, patience=150)  # long enough to be killed in the middle
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "cluster", "task": "lm", "seeds": [0], "output_dir": str(out),
                                     "base": base, "arms": {"frozen": {"reference": True},
                                                            "trainable": {"overrides": {"embedding.freeze": False}}}}))
    root = Path(tempfile.mkdtemp(prefix="fzray", dir="/tmp"))  # short: Ray's socket paths must stay < 108 bytes
    token = secrets.token_hex(32)
    env = {**os.environ, **creds, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           "FREEZELAB_SYNC_SECONDS": "0.3", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cluster = Cluster(root, out, env)
    try:
        cluster.start_head()
        first_node = cluster.start_worker("w1")
        (out / "head-only.txt").write_text("the head's file")
        probe = subprocess.run([sys.executable, "-c", PROBE, cluster.address, str(out)], env=env,
                               capture_output=True, text=True, timeout=180)
        assert probe.returncode == 0, probe.stdout[-3000:] + probe.stderr[-3000:]
        on_head, listing, wrote = json.loads(probe.stdout.strip().splitlines()[-1])
        assert not on_head
        assert listing == [] and "Read-only file system" in wrote  # the worker sees nothing and writes nothing
        assert not (out / "written-by-worker").exists()

        # 1. the study through the CLI; the worker node is killed once the storage holds checkpoints
        cmd = [str(FREEZELAB), "run", str(study), "--executor", "ray", "--ray-address", cluster.address,
               "--storage", uri, "--no-report"]
        run_env = env
        first = subprocess.Popen(cmd, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        store = RunStore(uri)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            epochs = [_committed_epoch(store, f"runs/{r}") for r in store.folders("runs")]
            if len(epochs) == 2 and min(epochs) >= 2:
                break
            assert first.poll() is None, first.communicate()[0][-4000:]
            time.sleep(0.2)
        else:
            pytest.fail("the storage never received both runs' checkpoints")
        cluster.kill_node(first_node)
        cluster.start_worker("w2")  # the runs the dead node held are reported lost; none is left pending
        text = first.communicate(timeout=300)[0]
        assert first.returncode == 1, text[-4000:]
        assert "the Ray task running it was lost" in text, text[-4000:]
        for run_id in store.folders("runs"):
            status = json.loads((out / "runs" / run_id / "status.json").read_text())
            assert status["status"] != "succeeded", status  # killed in the middle, as intended

        # 2. the same command again: every run resumes from the storage and succeeds
        again = subprocess.run([*cmd[:-1], "--report"], env=run_env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
        run_dirs = sorted(p for p in (out / "runs").iterdir() if p.is_dir())
        assert len(run_dirs) == 2
        for run_dir in run_dirs:
            log = (run_dir / "logs" / "run.log").read_text()
            assert "resumed after epoch" in log, log[-3000:]
            assert json.loads((run_dir / "summary.json").read_text())["status"] == "succeeded"
        assert (out / "report.md").exists() and not (out / "written-by-worker").exists()
        assert (out / "head-only.txt").read_text() == "the head's file"

        # 3. an uninterrupted local run of the same study has exactly the same epochs
        local = subprocess.run([str(FREEZELAB), "run", str(study), "--out", str(tmp_path / "local"), "--no-report"],
                               env=env, capture_output=True, text=True, timeout=600)
        assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
        for run_dir in run_dirs:
            epochs = [{k: r[k] for k in ("epoch", "train/loss", "val/loss")}
                      for r in _read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "epoch"]
            whole = [{k: r[k] for k in ("epoch", "train/loss", "val/loss")}
                     for r in _read_jsonl(tmp_path / "local" / "runs" / run_dir.name / "metrics.jsonl")
                     if r["kind"] == "epoch"]
            assert epochs == whole and len(whole) > 2

        # 4. the head's folder lost: the storage alone brings every run back, nothing runs again
        shutil.rmtree(out / "runs")
        third = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=300)
        assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
        assert "already succeeded" in third.stdout + third.stderr or "skipped" in third.stdout + third.stderr
        assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == [p.name for p in run_dirs]
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
