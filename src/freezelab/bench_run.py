"""In-run speed (``freezelab bench --mode run``): Phase-2 MFU inside a real run, and where the rest goes.

A one-arm study at the seed's shapes (V 50,257 × d 768 random tied embedding, frozen; 6 layers; batch 512;
the bundled Wikipedia excerpt, as ``bench --mode e2e``) runs through the normal runner in this process, with
the run's default checks, logging and checkpointing. Its summary.json says how long the Phase-2 steps took
(``train_seconds``) and how much of that went to each overhead (``overhead_seconds``, utils/timing.py):

- ``checks``: the per-step protocol checks — no gradient on a frozen tensor, every group's lr (I5),
  parameters finite (I7), the first-step dead-tensor check (I2);
- ``frozen_hash``: SHA-256 of every frozen tensor after step 1 and at each epoch end (I1);
- ``logging``: per-step records (every ``runtime.log_every_steps``: group lrs and gradient norms),
  metrics.jsonl / TensorBoard, the live progress file;
- ``checkpoint``: the resumable commit at each epoch end (and every ``runtime.checkpoint_minutes``).

The training time is the steps' time plus the epoch-end hash and commit (validation is a stage of its own,
``bench --mode e2e``). In-run MFU = trained positions × Phase-2 FLOP per position / training time / matmul
peak; the same Phase-2 steps timed alone (``bench --mode step``'s measurement) run beside it in the same
process, and the matmul peak is measured before and after (the higher one). Epoch-end shares depend on how
long an epoch is, so they are also given per epoch and as a share of one epoch of the seed study
(251,208 positions, N = 500) at the measured rate.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from freezelab.bench import bench_phase2, load, matmul_peak
from freezelab.bench_e2e import SEED_STUDY, e2e_base, run_study

SHARES = ("checks", "frozen_hash", "logging", "checkpoint")
TARGETS = {"in_run_mfu": 0.60, "overhead_share": 0.03}  # issue 21 (seed shapes, this machine's peak)


def in_run_figures(summary: dict[str, Any], *, peak: float) -> dict[str, Any]:
    """MFU and overhead shares of a finished LM run's Phase 2 from its summary.json (see the module docstring)."""
    over = summary.get("overhead_seconds") or {}
    steps, ends = over.get("in_steps") or {}, over.get("epoch_end") or {}
    train = float(summary["train_seconds"]) + sum(ends.values())
    positions, flops = int(summary["tokens_seen"]), float(summary["flops_per_token"])
    epochs = max(int(summary.get("epochs_run") or 1), 1)
    rate = positions / train
    overhead = {k: steps.get(k, 0.0) + ends.get(k, 0.0) for k in SHARES}
    shares = {k: v / train for k, v in overhead.items()}
    # per seed-study epoch: per-step shares scale with its steps, epoch-end costs come once per epoch, the
    # step-1 frozen hash (in_steps' frozen_hash) once per run of its 4 epochs
    seed = SEED_STUDY["N=500"]
    per_epoch = {k: ends.get(k, 0.0) / epochs + (steps.get(k, 0.0) / seed["epochs"] if k == "frozen_hash" else 0.0)
                 for k in SHARES}
    per_step = {k: 0.0 if k == "frozen_hash" else steps.get(k, 0.0) / train for k in SHARES}
    seed_epoch = seed["train"] / rate  # seconds of one seed-study epoch's steps at this rate
    return {
        "positions": positions, "steps": int(summary.get("steps") or 0), "epochs": epochs,
        "training_seconds": train, "positions_per_second": rate,
        "in_run_mfu": positions * flops / train / peak,
        "compute_mfu": positions * flops / max(train - sum(overhead.values()), 1e-9) / peak,
        "overhead_shares": shares, "overhead_total": sum(shares.values()),
        "epoch_end_seconds_per_epoch": per_epoch,
        "seed_epoch_overhead_shares": {k: (per_step[k] * seed_epoch + per_epoch[k])
                                       / (seed_epoch + sum(per_epoch.values())) for k in SHARES},
    }


def run_inrun(device_name: str = "auto", *, quick: bool = False, train_docs: int | None = None,
              epochs: int | None = None, vocab: int = 50257, dim: int = 768, layers: int = 6,
              step_repeats: int = 5, compile: bool = False) -> dict[str, Any]:
    """The in-run benchmark. ``quick`` (CI, well under a minute on a CPU): MiniLM's shapes (V 30,522, d 384),
    4 documents of ≤ 128 tokens, 2 epochs. ``compile``: the run with ``runtime.compile: true`` and the steps
    alone with a compiled TokenBlock."""
    if quick:
        vocab, dim = 30522, 384
    device = torch.device("cuda" if device_name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    precision, dtype = ("bf16", torch.bfloat16) if gpu else ("fp32", torch.float32)
    train_docs = train_docs or (4 if quick else 96 if gpu else 16)
    epochs = epochs or 2
    t0 = time.time()
    peak_before = matmul_peak(device, dtype, repeats=10)
    base = e2e_base(vocab=vocab, dim=dim, layers=layers, train_docs=train_docs, eval_docs=2, iterations=1,
                    epochs=epochs, device=device.type, precision=precision, doc_tokens=128 if quick else 512)
    base["runtime"].pop("checkpoint_minutes")  # the run's defaults: every overhead a user's run has
    base["runtime"]["compile"] = compile
    with tempfile.TemporaryDirectory(prefix="freezelab-bench-run-") as tmp:
        from freezelab.tracking.files import read_json

        summary = read_json(run_study(base, Path(tmp)) / "summary.json")
    step = bench_phase2(device, vocab=vocab, dim=dim, layers=layers, batch=512, steps=step_repeats,
                        precision=precision, head_trainable=False, compile=compile)
    peak = max(peak_before, matmul_peak(device, dtype, repeats=10))
    figures = in_run_figures(summary, peak=peak)
    step_mfu = step["flops_per_second"] / peak
    return {
        "mode": "run", "device": torch.cuda.get_device_name(0) if gpu else "cpu", "load_average": load(),
        "threads": torch.get_num_threads(), "precision": precision, "compile": compile,
        "matmul_peak_tflops": peak / 1e12,
        "shapes": {"vocab": vocab, "dim": dim, "layers": layers, "batch": 512, "head": "frozen (tied)"},
        "run": figures, "step_mfu": step_mfu, "in_run_over_step": figures["in_run_mfu"] / step_mfu,
        "targets": TARGETS, "bench_seconds": time.time() - t0,
    }


def print_inrun(result: dict[str, Any], echo: Any = print) -> None:
    """The human-readable lines of ``run_inrun``'s result."""
    sh, r = result["shapes"], result["run"]
    echo(f"device {result['device']} ({result['threads']} threads, {result['precision']}, load "
         f"{result['load_average']}): matmul peak {result['matmul_peak_tflops']:.3f} TFLOP/s; V {sh['vocab']:,} "
         f"d {sh['dim']} L {sh['layers']} batch {sh['batch']}, head {sh['head']}")
    echo(f"in-run Phase 2: {r['positions']:,} positions in {r['steps']} steps, {r['epochs']} epochs, "
         f"{r['training_seconds']:.1f}s: {r['positions_per_second']:,.0f} tok/s, MFU {r['in_run_mfu']:.1%} "
         f"(target >= {result['targets']['in_run_mfu']:.0%}); the same steps alone: MFU {result['step_mfu']:.1%} "
         f"(in-run / alone {result['in_run_over_step']:.2f})" + (" — compiled: compilation counts in the run"
                                                          if result.get("compile") else ""))
    shares = ", ".join(f"{k} {v:.2%}" for k, v in r["overhead_shares"].items())
    echo(f"overheads, share of training time: {shares}; total {r['overhead_total']:.2%} "
         f"(target <= {result['targets']['overhead_share']:.0%} each)")
    seed = ", ".join(f"{k} {v:.2%}" for k, v in r["seed_epoch_overhead_shares"].items())
    echo(f"  in a seed-study epoch (251,208 positions at this rate): {seed}")
