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
