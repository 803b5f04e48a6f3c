"""Protocol checks inside a CVFP run (experiment-protocol.md §1.5): a broken group layout (I4) and a frozen
tensor changed mid-run (I1) fail the run with a clear error, and the I1 record says what was checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from freezelab.freeze.param_groups import FreezeController
from freezelab.tracking.files import read_json
from freezelab.tracking.selection import EarlyStopping
from tests.integration.test_runner import _run, _run_dir

pytestmark = pytest.mark.integration


def test_an_optimizer_that_breaks_the_group_layout_fails_the_run(write_study, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = FreezeController.build_optimizer

    def reordered(self, base_lr, **kw):  # the fault: groups in another order than the controller's layout
        opt = real(self, base_lr, **kw)
        opt.param_groups.reverse()
        return opt
    monkeypatch.setattr(FreezeController, "build_optimizer", reordered)
    out = tmp_path / "out"
    assert _run(write_study({"frozen": {"reference": True}}), out) == {"frozen/0": "failed"}
    error = read_json(_run_dir(out, "frozen") / "status.json")["error"]
    assert error["code"] == "group_layout", error
    assert "at the start of phase 2" in error["message"] and "protocol I4" in error["message"]


def test_a_frozen_tensor_changed_mid_run_fails_it_and_is_recorded(write_study, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = EarlyStopping.update

    def tampering(self, epoch, value, metrics, model):  # after epoch 1's checks: nudge the frozen wte
        if epoch == 1:
            with torch.no_grad():
                model.wte.weight[0, 0] += 1e-3
        return real(self, epoch, value, metrics, model)
    monkeypatch.setattr(EarlyStopping, "update", tampering)
    out = tmp_path / "out"
    assert _run(write_study({"frozen": {"reference": True}}), out) == {"frozen/0": "failed"}
    summary = read_json(_run_dir(out, "frozen") / "summary.json")
    assert summary["error"]["code"] == "frozen_tensor_changed"
    assert "at the end of epoch 2" in summary["error"]["message"] and "wte.weight" in summary["error"]["message"]
    inv = summary["invariants"]
    assert inv["frozen_unchanged"] is False
    checks = inv["frozen_checks"][0]["checks"]
    assert [c["unchanged"] for c in checks] == [True, True, False]  # after step 1, epoch 1, epoch 2
    assert checks[-1]["changed"] == ["wte.weight"] and checks[-1]["digest"] != inv["frozen_checks"][0]["digest"]


def test_inspect_counts_the_unused_context_block_of_a_no_context_arm() -> None:
    from freezelab.tasks.lm.config import LMConfig
    from freezelab.tasks.lm.task import LMTask

    def counts(**model) -> dict:
        cfg = LMConfig.model_validate({"embedding": {"source": "random", "vocab_size": 100, "dim": 8},
                                       "model": {"num_layers": 2, **model}})
        return LMTask().inspect(cfg.model_dump(mode="json"))
    used, unused = counts(), counts(use_context=False)
    block = 2 * ((8 + 8) * 8 + 8 + 2 * 8)                       # L · (d_c(d_c + d_e) + d_c + 2 d_c), spec §2
    assert used["unused"] == 0 and unused["unused"] == block
    assert unused["frozen"] == used["frozen"] - block and unused["total"] == used["total"]
    assert unused["by_group"]["context_block"] == {"numel": block, "frozen": True, "unused": True}
