"""Checkpoints: nothing is unpickled, files are lean and verified, commits survive a kill at any moment."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from freezelab.errors import DiskFullError, RunFileError
from freezelab.freeze.param_groups import FreezeController
from freezelab.tasks.lm.config import LMConfig
from freezelab.tasks.lm.task import build_model, phase2_groups
from freezelab.tracking import checkpoints as ck
from freezelab.tracking import files
from freezelab.tracking.selection import EarlyStopping

SRC = Path(__file__).parents[2] / "src" / "freezelab"


class Evil:
    """A pickle payload: unpickling it writes ``marker`` (it would run any code the same way)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _planted_run(write_study, tmp_path: Path) -> tuple[Path, Path]:
    """A finished tiny run made to look interrupted, with a malicious last.pt in its checkpoints/."""
    from tests.integration.test_runner import _run, _run_dir

    path = write_study({"frozen": {"reference": True}})
    assert _run(path, tmp_path / "out") == {"frozen/0": "succeeded"}
    run_dir = _run_dir(tmp_path / "out", "frozen")
    (run_dir / "summary.json").unlink()
    files.write_status(run_dir, "running")
    marker = tmp_path / "pwned"
    (run_dir / "checkpoints" / "last.pt").write_bytes(pickle.dumps(Evil(marker)))
    return path, marker


def test_the_planted_payload_is_live() -> None:  # so the tests below would notice if it ran
    marker = Path(os.environ.get("TMPDIR", "/tmp")) / f"freezelab-payload-{os.getpid()}"
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.read_text() == "pwned"
    marker.unlink()


def test_a_planted_last_pt_is_never_unpickled_and_the_run_starts_over(write_study, tmp_path: Path, capsys) -> None:
    from tests.integration.test_runner import _run, _run_dir

    path, marker = _planted_run(write_study, tmp_path)
    assert _run(path, tmp_path / "out") == {"frozen/0": "succeeded"}
    assert not marker.exists()
    err = capsys.readouterr().err
    assert "last.pt is a pickle checkpoint from an older freezelab; it is never opened" in err
    assert "starts over" in err
    run_dir = _run_dir(tmp_path / "out", "frozen")
    assert (run_dir / "attempts" / "1" / "checkpoints" / "last.pt").exists()  # kept, never read


def test_a_pickle_behind_a_forged_manifest_is_refused_without_running(write_study, tmp_path: Path, capsys) -> None:
    from tests.integration.test_runner import _run

    path, marker = _planted_run(write_study, tmp_path)
    run_dir = next(p for p in (tmp_path / "out" / "runs").iterdir() if p.is_dir())
    ckpt = run_dir / "checkpoints"
    (ckpt / "last.pt").rename(ckpt / "state.safetensors")  # an attacker can forge the hashes too
    ck_files = {"state.safetensors": files.file_record(ckpt / "state.safetensors")}
    (ckpt / "state.json").write_text(json.dumps({"format": ck.FORMAT, "metrics_bytes": 0, "files": ck_files,
                                                 "state": {"position": {"phase": "phase2"}}}))
    assert _run(path, tmp_path / "out") == {"frozen/0": "succeeded"}
    assert not marker.exists()
    assert "state.safetensors is not a freezelab safetensors file" in capsys.readouterr().err


def test_no_code_path_unpickles() -> None:
    pattern = re.compile(r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


# ----------------------------------------------------------------------------- lean files
def _lm(vocab: int = 4000, dim: int = 64, **cfg_over):
    cfg = LMConfig.model_validate({"embedding": {"source": "random", "vocab_size": vocab, "dim": dim,
                                                 **cfg_over}, "model": {"num_layers": 2}})
    model = build_model(cfg, vocab, dim, seed=0)
    controller = FreezeController(model, phase2_groups(model, cfg))
    opt = controller.build_optimizer(1e-3)
    sched = controller.build_scheduler(opt, 1e-3)
    return model, controller, opt, sched


def _step(model, opt, sched) -> None:
    x = torch.randn(8, 64)
    loss = model(torch.randn(8, 2, model.context_dim), x).logsumexp(-1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()


def test_state_of_a_frozen_table_arm_is_three_times_the_trainable_bytes(tmp_path: Path) -> None:
    model, controller, opt, sched = _lm()
    ckpt = ck.Checkpoints(tmp_path)
    ckpt.set_base(model)
    _step(model, opt, sched)
    best = EarlyStopping("val/loss", "min", 2)
    best.update(1, 1.0, {}, model)
    state, tensors = ck.training_state(model, opt, sched, controller, best)
    ckpt.commit(state, tensors=tensors, weights={ck.BEST: best.state}, model=model)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    assert frozen > trainable  # the frozen 4000 × 64 table (and the ContextBlock) dominate the model
    assert (tmp_path / "checkpoints" / ck.STATE).stat().st_size <= 3 * trainable + 64 * 1024
    assert (tmp_path / "checkpoints" / ck.BEST).stat().st_size <= trainable + 64 * 1024

    # a fresh attempt: rebuild, restore, and everything equals the saved state bit for bit
    model2, controller2, opt2, sched2 = _lm()
    ckpt2 = ck.Checkpoints(tmp_path)
    ckpt2.set_base(model2)
    best2 = EarlyStopping("val/loss", "min", 2)
    ck.restore_training_state(ckpt2, ckpt2.load(), model2, opt2, sched2, controller2, best2)
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), name
    for name in best.state:
        assert torch.equal(best.state[name], best2.state[name]), name
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["state"].keys() == s2["state"].keys() and all(
        torch.equal(s1["state"][i][k], s2["state"][i][k]) for i in s1["state"] for k in ("exp_avg", "exp_avg_sq"))
    assert sched2.state_dict()["_step_count"] == sched.state_dict()["_step_count"]


def test_a_referenced_tensor_that_changed_at_its_source_is_refused(tmp_path: Path) -> None:
    model, controller, opt, sched = _lm()
    ckpt = ck.Checkpoints(tmp_path)
    ckpt.set_base(model)
    _step(model, opt, sched)
    best = EarlyStopping("val/loss", "min", 2)
    best.update(1, 1.0, {}, model)
    ckpt.commit(*ck.training_state(model, opt, sched, controller, best)[:1],
                tensors=ck.training_state(model, opt, sched, controller, best)[1], weights={ck.BEST: best.state})
    model2, controller2, opt2, sched2 = _lm()
    with torch.no_grad():
        model2.wte.weight[0, 0] += 1.0  # the "pretrained" table is not what it was
    ckpt2 = ck.Checkpoints(tmp_path)
    with pytest.raises(RunFileError, match=r"reference.*differ from the rebuilt model.*wte\.weight.*pretrained source"):
        ck.restore_training_state(ckpt2, ckpt2.load(), model2, opt2, sched2, controller2, EarlyStopping("v", "min", 1))


# ----------------------------------------------------------------------------- commits under kills
def _commit(ckpt: ck.Checkpoints, value: float) -> None:
    ckpt.commit({"value": value}, tensors={"x": torch.full((4,), value)})


def test_a_commit_killed_before_its_manifest_leaves_the_previous_one(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = ck.Checkpoints(tmp_path)
    _commit(ckpt, 1.0)
    real = ck.atomic_write_text
    monkeypatch.setattr(ck, "atomic_write_text", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        _commit(ckpt, 2.0)
    monkeypatch.setattr(ck, "atomic_write_text", real)
    assert (tmp_path / "checkpoints" / "state.safetensors.next").exists()
    assert ck.Checkpoints(tmp_path).load() == {"value": 1.0}
    assert not (tmp_path / "checkpoints" / "state.safetensors.next").exists()  # the stray is removed


def test_a_commit_killed_after_its_manifest_rolls_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = ck.Checkpoints(tmp_path)
    _commit(ckpt, 1.0)
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 3:  # staged tensors written, manifest renamed: die before the staged rename
            assert calls[:2] == ["state.safetensors.next", "state.json"]
            raise KeyboardInterrupt
        real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _commit(ckpt, 2.0)
    monkeypatch.undo()
    again = ck.Checkpoints(tmp_path)
    assert again.load() == {"value": 2.0}
    from freezelab.tracking.weights import read_weights

    assert read_weights(tmp_path / "checkpoints" / ck.STATE, again.files[ck.STATE])[0]["x"][0] == 2.0


def test_a_truncated_or_edited_file_is_named(tmp_path: Path) -> None:
    ckpt = ck.Checkpoints(tmp_path)
    _commit(ckpt, 1.0)
    path = tmp_path / "checkpoints" / ck.STATE
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(RunFileError, match=r"state\.safetensors has .* bytes but .* were written: it is truncated"):
        ck.recover(tmp_path / "checkpoints")
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(RunFileError, match=r"state\.safetensors does not match the SHA-256 .*starts this run over"):
        ck.recover(tmp_path / "checkpoints")


def test_disk_full_names_the_file_and_leaves_nothing_half_written(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = ck.Checkpoints(tmp_path)
    _commit(ckpt, 1.0)

    def full(*_a):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"no space left on device writing .*state\.safetensors\.next.*Free space"):
        _commit(ckpt, 2.0)
    monkeypatch.undo()
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
    assert ck.Checkpoints(tmp_path).load() == {"value": 1.0}


def test_known_hashes_spare_the_base_comparison_and_a_changed_tensor_is_still_stored(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """An epoch-end commit reuses the frozen-tensor check's hashes (``known``): an unchanged frozen tensor is
    referenced without being hashed again; a tensor whose known hash differs from the base is stored."""
    from freezelab.tracking import weights
    from freezelab.tracking.weights import read_weights, save_weights
    from freezelab.utils.hashing import hash_tensor

    frozen, other = torch.arange(6.0), torch.ones(3)
    base = {"frozen": hash_tensor(frozen), "other": hash_tensor(other)}

    def no_hashing(t):
        raise AssertionError("hashed again")
    monkeypatch.setattr(weights, "hash_tensor", no_hashing)
    record = save_weights(tmp_path / "a.safetensors", {"frozen": frozen, "other": other}, base,
                          known={"frozen": base["frozen"], "other": "0" * 64})
    stored, header = read_weights(tmp_path / "a.safetensors", record)
    assert header["referenced"] == {"frozen": base["frozen"]} and set(stored) == {"other"}
