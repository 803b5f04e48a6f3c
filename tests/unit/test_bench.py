"""The benchmark code paths run on tiny sizes (their numbers are reported, never asserted as timings)."""

from __future__ import annotations

import torch

from freezelab.bench import bench_phase2, bench_recurrence


def test_phase2_bench_trains_the_study_model() -> None:
    for head_trainable in (False, True):
        r = bench_phase2(torch.device("cpu"), vocab=64, dim=8, layers=1, batch=4, steps=2, precision="fp32",
                         head_trainable=head_trainable)
        assert r["tokens_per_second"] > 0 and r["flops_per_second"] > 0


def test_recurrence_bench_compares_both_paths() -> None:
    r = bench_recurrence(torch.device("cpu"), dim=8, layers=2, docs=3, doc_len=5)
    assert r["speedup"] > 0 and r["batched_tokens_per_second"] > 0


def test_flop_model_counts_the_study_model() -> None:
    """The e2e FLOP model's block weights and per-token Phase-2 FLOP, against counts taken from the model."""
    from freezelab.bench_e2e import _weights_of, phase1_flop
    from freezelab.tasks.lm.config import LMConfig
    from freezelab.tasks.lm.phases import phase2_flops_per_token
    from freezelab.tasks.lm.task import build_model

    model = build_model(LMConfig.model_validate({"model": {"num_layers": 3}}), 50, 8, seed=0)
    linear = [m.weight.numel() for blk in (model.context_block, model.token_block)
              for m in blk.modules() if isinstance(m, torch.nn.Linear)]
    assert _weights_of(3, 8) * 2 == sum(linear) == 2 * 3 * (16 * 8)
    # seed shapes, cvfp-lm.md §8: W_blk = 7,077,888; 196.86 M / 274.05 M FLOP per frozen / trainable token
    assert _weights_of(6, 768) == 7_077_888
    seed = build_model(LMConfig.model_validate({}), 50257, 768, seed=None)
    assert phase2_flops_per_token(seed, head_trainable=False) == 6 * 7_077_888 + 4 * 38_597_376 == 196_856_832
    assert phase2_flops_per_token(seed, head_trainable=True) == 274_051_584
    # seed Phase 1 (1 sequential + 6 parallel, no final pass or val): 268.96 M per token; ours adds both
    w = 7_077_888
    assert phase1_flop(10, 0, 7, w) - 10 * 2 * w == 10 * 268_959_744
    assert phase1_flop(10, 3, 7, w) - phase1_flop(10, 0, 7, w) == 7 * 3 * 2 * w


def test_e2e_bench_runs_a_real_study_and_the_reference(tmp_path) -> None:
    """Tiny shapes: every stage is timed and counted, the per-token reference and the estimate are there."""
    from freezelab.bench_e2e import print_e2e, run_e2e

    r = run_e2e("cpu", train_docs=2, epochs=1, iterations=2, vocab=30522, dim=8, layers=1, slice_positions=3)
    st = r["stages"]
    for name in ("phase1", "context_cache", "phase2_train", "epoch_eval", "final_eval"):
        assert st[name]["seconds"] > 0 and st[name]["flop"] > 0, name
    run = st["run"]
    assert run["epochs"] == 1 and run["phase1_iterations"] == 2 and run["train_tokens"] <= 2 * 512
    assert st["phase2_train"]["tokens"] == run["positions"]["train"]  # one epoch sees every position once
    assert r["reference"]["positions"] == 3 and r["reference"]["train_speedup"] > 0
    assert r["study_estimate"]["total_seconds"] > 0
    lines: list[str] = []
    print_e2e(r, echo=lines.append)
    assert any("per-token reference" in ln for ln in lines)


def test_in_run_figures_split_training_time_into_its_shares() -> None:
    """Figures worked by hand: 9 s of steps (0.5 s of them checks) + 1 s of epoch-end checkpoints over 2 epochs;
    1,000 positions of 1 GFLOP each on a 1 TFLOP/s peak."""
    from freezelab.bench_run import in_run_figures

    summary = {"train_seconds": 9.0, "tokens_seen": 1000, "flops_per_token": 1e9, "epochs_run": 2, "steps": 10,
               "overhead_seconds": {"in_steps": {"checks": 0.5}, "epoch_end": {"checkpoint": 1.0}}}
    r = in_run_figures(summary, peak=1e12)
    assert r["training_seconds"] == 10.0 and r["positions_per_second"] == 100.0
    assert abs(r["in_run_mfu"] - 0.1) < 1e-12 and abs(r["compute_mfu"] - 1000 * 1e9 / 8.5 / 1e12) < 1e-12
    assert r["overhead_shares"] == {"checks": 0.05, "frozen_hash": 0.0, "logging": 0.0, "checkpoint": 0.1}
    assert r["epoch_end_seconds_per_epoch"]["checkpoint"] == 0.5
    # a seed-study epoch: 251,208 positions at 100/s = 2,512.08 s of steps (5 % checks), + 0.5 s of checkpoint
    seed = r["seed_epoch_overhead_shares"]
    assert abs(seed["checkpoint"] - 0.5 / (2512.08 + 0.5)) < 1e-9
    assert abs(seed["checks"] - 0.05 * 2512.08 / (2512.08 + 0.5)) < 1e-9


def test_a_slow_check_shows_in_the_checks_share_of_a_real_run(write_study, tmp_path, monkeypatch) -> None:
    """Each overhead is timed where it happens: 20 ms added to the per-step lr check (I5) appears in the run's
    ``checks`` share, and nowhere else."""
    import time

    from freezelab.config.load import load_study
    from freezelab.experiment.plan import make_plan
    from freezelab.experiment.runner import run_plan
    from freezelab.freeze.param_groups import FreezeController
    from freezelab.tracking.files import read_json

    def timed(tmp, slow: bool) -> dict:
        if slow:
            real = FreezeController.check_lrs
            monkeypatch.setattr(FreezeController, "check_lrs",
                                lambda self, *a, **k: (time.sleep(0.02), real(self, *a, **k))[1])
        study = load_study(write_study({"a": {"reference": True}}))
        run_plan(study, make_plan(study), tmp, isolation="inline", progress=False, tensorboard=False)
        (run_dir,) = (tmp / "runs").glob("a__s0__*")
        return read_json(run_dir / "summary.json")

    fast, slow = timed(tmp_path / "fast", False), timed(tmp_path / "slow", True)
    assert set(fast["overhead_seconds"]["in_steps"]) == {"checks", "frozen_hash", "logging"}
    assert set(fast["overhead_seconds"]["epoch_end"]) == {"frozen_hash", "checkpoint"}
    added = slow["overhead_seconds"]["in_steps"]["checks"] - fast["overhead_seconds"]["in_steps"]["checks"]
    assert added >= 0.02 * slow["steps"] * 0.9
    assert slow["overhead_seconds"]["in_steps"]["logging"] < 0.02 * slow["steps"] / 2
    assert sum(slow["overhead_seconds"]["in_steps"].values()) <= slow["train_seconds"]


def test_in_run_bench_runs_a_real_study(tmp_path) -> None:
    from freezelab.bench_run import print_inrun, run_inrun

    r = run_inrun("cpu", train_docs=2, epochs=2, vocab=30522, dim=8, layers=1, step_repeats=2)
    assert r["run"]["steps"] > 0 and r["step_mfu"] > 0 and set(r["run"]["overhead_shares"]) >= {"checks"}
    lines: list[str] = []
    print_inrun(r, echo=lines.append)
    assert any("in-run Phase 2" in line for line in lines)
