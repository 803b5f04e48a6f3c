"""End-to-end benchmark (``freezelab bench --mode e2e``): one real LM run at the seed's shapes, per stage.

A one-arm study (V 50,257 × d 768 random tied embedding, frozen — the seed's shapes; 6 layers; batch 512;
MiniLM's tokenizer on the bundled Wikipedia excerpt) runs through the normal runner in this process: data,
Phase 1, the context cache, Phase-2 epochs with validation, the final val/test scoring. Each stage's time
comes from the run's own records (summary.json, metrics.jsonl) and its FLOP from the matmul model below
(cvfp-lm.md §8); MFU is against the matmul peak measured in the same process, before and after the run
(the higher of the two). The original's way of working, the per-token Phase-2 loop and per-token
evaluation (tasks/lm/per_token.py), is then timed on a slice of positions with the same model shapes in the
same process, and the speed-up printed. A whole-study estimate for the seed study (N = 500 and N = 1000)
follows from the per-token stage rates.

FLOP model (matmuls only; W_c, W_t: Linear weights of the ContextBlock / TokenBlock; N train tokens, K
Phase-1 iterations, N_val val tokens):
- Phase 1: N·(2 W_c + (K−1)·6 W_c + 2 W_c) + K·N_val·2 W_c (iteration 0, K−1 training iterations, the final
  exact pass, and the val contexts for ER every iteration).
- context cache: 2 W_c per token of every split.
- Phase-2 training: ``phase2_flops_per_token`` per position (6 W_t + 4 V d, + 2 V d for a trainable head).
- evaluation: 2 W_t + 2 V d per scored position.
- diagnostics (effective ranks of the cached contexts, memory-horizon probe): time only, no FLOP counted.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from freezelab.bench import _best_seconds, load, matmul_peak

SEED_STUDY = {  # cvfp-lm.md §6-§7: train / val tokens, Phase-1 iterations, epochs run, per sample size
    "N=500": {"train": 251_208, "val": 25_121, "iterations": 7, "epochs": 4},
    "N=1000": {"train": 502_498, "val": 25_125, "iterations": 7, "epochs": 4},
}


def e2e_base(*, vocab: int, dim: int, layers: int, train_docs: int, eval_docs: int, iterations: int,
             epochs: int, device: str, precision: str, trainable_head: bool = False,
             doc_tokens: int = 512) -> dict[str, Any]:
    """The study base of the benchmark run: seed shapes on the offline data, fixed iteration and epoch counts."""
    return {
        "data": {"source": "wiki_excerpt", "max_train_docs": train_docs, "n_val_docs": eval_docs,
                 "n_test_docs": eval_docs, "max_tokens_per_doc": doc_tokens, "overflow": "truncate"},
        "embedding": {"source": "random", "vocab_size": vocab, "dim": dim, "freeze": not trainable_head},
        "model": {"num_layers": layers},
        "phase1": {"max_iterations": iterations, "min_iterations": iterations},
        "phase2": {"max_epochs": epochs, "patience": epochs, "batch_size": 512},
        "runtime": {"device": device, "precision": precision, "checkpoint_minutes": None},
        "baselines": False,
    }


def run_study(base: dict[str, Any], out: Path) -> Path:
    """Run the one-arm study inline; return its run folder."""
    import yaml

    from freezelab.config.load import load_study
    from freezelab.experiment.plan import make_plan
    from freezelab.experiment.runner import run_plan

    path = out / "bench.yaml"
    path.write_text(yaml.safe_dump({"name": "bench-e2e", "task": "lm", "seeds": [0], "base": base,
                                    "arms": {"bench": {"reference": True}}}), encoding="utf-8")
    study = load_study(path)
    run_plan(study, make_plan(study), out / "out", isolation="inline", progress=False, tensorboard=False)
    (run_dir,) = (out / "out" / "runs").glob("bench__s0__*")
    return run_dir


def phase1_flop(n_train: int, n_val: int, iterations: int, w_ctx: int) -> int:
    """Matmul FLOP of Phase 1 (module docstring): iteration 0 and the final pass 2 W_c, training iterations
    6 W_c per train token; val contexts for ER 2 W_c per val token every iteration."""
    return n_train * (4 * w_ctx + (iterations - 1) * 6 * w_ctx) + iterations * n_val * 2 * w_ctx


def stages(run_dir: Path, *, w_ctx: int, w_tok: int, vd: int, peak: float) -> dict[str, Any]:
    """Time, FLOP, FLOP/s and MFU of each stage of a finished run, from its summary and metrics."""
    from freezelab.tracking.files import read_json, read_jsonl

    s = read_json(run_dir / "summary.json")
    if s.get("status") != "succeeded":
        raise RuntimeError(f"the benchmark run failed: {s.get('error')}")
    d = s["data"]
    n_train, k = d["train_tokens"], s["phase1"]["iterations"]
    pos = {split: d[f"{split}_tokens"] - d[f"{split}_docs"] for split in ("train", "val", "test")}
    epochs = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "epoch"]
    epoch_seconds = sum(r["seconds"] for r in epochs)
    eval_flop = 2 * w_tok + 2 * vd
    rows = {
        "phase1": (s["phase1"]["seconds"], phase1_flop(n_train, d["val_tokens"], k, w_ctx), n_train),
        "context_cache": (s["context_cache_seconds"], 2 * w_ctx * (n_train + d["val_tokens"] + d["test_tokens"]),
                          n_train),
        "diagnostics": (s["phase_seconds"]["phase1"] - s["phase1"]["seconds"] - s["context_cache_seconds"], 0,
                        n_train),
        "phase2_train": (s["train_seconds"], s["flops_per_token"] * s["tokens_seen"], s["tokens_seen"]),
        "epoch_eval": (epoch_seconds - s["train_seconds"], eval_flop * pos["val"] * len(epochs),
                       pos["val"] * len(epochs)),
        "final_eval": (s["phase_seconds"]["phase2"] - epoch_seconds, eval_flop * (pos["val"] + pos["test"]),
                       pos["val"] + pos["test"]),
    }
    out: dict[str, Any] = {}
    for name, (sec, flop, tokens) in rows.items():
        sec = max(sec, 1e-9)
        out[name] = {"seconds": sec, "flop": flop, "tokens": tokens, "tokens_per_second": tokens / sec,
                     "tflops": flop / sec / 1e12, "mfu": flop / sec / peak}
    out["run"] = {"wall_seconds": s.get("wall_seconds"), "peak_memory_bytes": s.get("peak_memory_bytes"),
                  "train_tokens": n_train, "val_tokens": d["val_tokens"], "test_tokens": d["test_tokens"],
                  "phase1_iterations": k, "epochs": len(epochs), "positions": pos}
    return out


def per_token_reference(device: torch.device, *, vocab: int, dim: int, layers: int, positions: int,
                        precision: str, trainable_head: bool = False) -> dict[str, float]:
    """Tokens/s of the original's per-token Phase-2 training and evaluation, and of the batched loop's
    training step and evaluation on the same slice (same model shapes, same process)."""
    from freezelab.freeze.param_groups import FreezeController
    from freezelab.tasks.lm.config import LMConfig
    from freezelab.tasks.lm.loss import head_loss
    from freezelab.tasks.lm.per_token import train_batch_per_token
    from freezelab.tasks.lm.phases import evaluate
    from freezelab.tasks.lm.task import build_model, phase2_groups

    cfg = LMConfig.model_validate({"embedding": {"freeze": not trainable_head}, "model": {"num_layers": layers}})
    model = build_model(cfg, vocab, dim, seed=0).to(device)
    ctl = FreezeController(model, phase2_groups(model, cfg))
    opt = ctl.build_optimizer(2e-3, fused=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (positions + 1,), generator=g).to(device)
    offsets = torch.tensor([0, positions + 1], device=device)
    contexts = torch.randn(positions + 1, layers, dim, generator=g).to(device)
    pos = torch.arange(positions, device=device)

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step(per_token: bool) -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        if per_token:
            train_batch_per_token(model, ids, offsets, contexts[pos], pos, autocast=autocast,
                                  backward=lambda loss: loss.backward())
        else:
            with autocast():
                h = model.token_block(contexts[pos], model.token_inputs(ids, offsets, pos))
                loss, _ = head_loss(model, h, ids[pos + 1])
            loss.backward()
        torch.nn.utils.clip_grad_norm_(ctl.trainable_params(), 1.0)
        opt.step()

    def score(batch: int) -> None:
        evaluate(model, ids, offsets, contexts, batch_size=batch, autocast=autocast)

    t = {"train_per_token": _best_seconds(lambda: step(True), repeats=1, device=device),
         "train_batched": _best_seconds(lambda: step(False), repeats=3, device=device),
         "eval_per_token": _best_seconds(lambda: score(1), repeats=1, device=device),
         "eval_batched": _best_seconds(lambda: score(1024), repeats=3, device=device)}
    out = {f"{k}_tokens_per_second": positions / v for k, v in t.items()}
    out["positions"] = positions
    return out


def study_estimate(st: dict[str, Any]) -> dict[str, Any]:
    """Seconds of the seed study's two runs (N = 500, 1000: cvfp-lm.md §7 iteration and epoch counts) at the
    measured stage rates (Phase 1 per token·iteration, cache per token, training and evaluation per position)."""
    k = st["run"]["phase1_iterations"]
    p1_rate = st["phase1"]["seconds"] / (st["run"]["train_tokens"] * k)        # s per token-iteration
    cache_rate = st["context_cache"]["seconds"] / st["run"]["train_tokens"]
    train_rate = 1 / st["phase2_train"]["tokens_per_second"]
    eval_rate = st["epoch_eval"]["seconds"] / max(st["epoch_eval"]["tokens"], 1)
    out: dict[str, Any] = {}
    for name, r in SEED_STUDY.items():
        sec = (p1_rate * r["train"] * r["iterations"] + cache_rate * r["train"]
               + r["epochs"] * (r["train"] * train_rate + r["val"] * eval_rate) + r["val"] * eval_rate)
        out[name] = {"seconds": sec, **r}
    out["total_seconds"] = sum(v["seconds"] for v in out.values() if isinstance(v, dict))
    return out


def run_e2e(device_name: str = "auto", *, quick: bool = False, train_docs: int | None = None,
            epochs: int | None = None, iterations: int | None = None, vocab: int = 50257, dim: int = 768,
            layers: int = 6, slice_positions: int | None = None, trainable_head: bool = False,
            reference: bool = True, doc_tokens: int | None = None) -> dict[str, Any]:
    """The end-to-end benchmark (see the module docstring). ``quick`` (CI, about a minute on a CPU): MiniLM's
    shapes (V 30,522, d 384), 4 documents of ≤ 128 tokens, 2 Phase-1 iterations, 1 epoch."""
    if quick:
        vocab, dim = 30522, 384
    doc_tokens = doc_tokens or (128 if quick else 512)
    device = torch.device("cuda" if device_name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    precision = "bf16" if gpu else "fp32"
    dtype = torch.bfloat16 if gpu else torch.float32
    train_docs = train_docs or (4 if quick else 96 if gpu else 16)  # the excerpt has 106 articles; ≤ 512 tokens each
    epochs = epochs or (1 if quick else 2)
    iterations = iterations or (2 if quick else 4)
    slice_positions = slice_positions or (8 if quick else 32)
    peak_before = matmul_peak(device, dtype, repeats=10)
    base = e2e_base(vocab=vocab, dim=dim, layers=layers, train_docs=train_docs, eval_docs=2 if quick else 4,
                    iterations=iterations, epochs=epochs, device=device.type, precision=precision,
                    trainable_head=trainable_head, doc_tokens=doc_tokens)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="freezelab-bench-") as tmp:
        run_dir = run_study(base, Path(tmp))
        from freezelab.tracking.files import read_json

        summary = read_json(run_dir / "summary.json")
        peak = max(peak_before, matmul_peak(device, dtype, repeats=10))
        w = _weights_of(layers, dim)
        st = stages(run_dir, w_ctx=w, w_tok=w, vd=vocab * dim, peak=peak)
    out: dict[str, Any] = {
        "mode": "e2e", "device": torch.cuda.get_device_name(0) if gpu else "cpu", "load_average": load(),
        "threads": torch.get_num_threads(), "precision": precision, "matmul_peak_tflops": peak / 1e12,
        "shapes": {"vocab": vocab, "dim": dim, "layers": layers, "batch": 512, "head": "trainable" if
                   trainable_head else "frozen (tied)"},
        "stages": st, "bench_seconds": time.time() - t0, "config_hash": summary.get("hashes", {}).get("config_hash"),
    }
    if reference:
        ref = per_token_reference(device, vocab=vocab, dim=dim, layers=layers, positions=slice_positions,
                                  precision=precision, trainable_head=trainable_head)
        ref["train_speedup"] = st["phase2_train"]["tokens_per_second"] / ref["train_per_token_tokens_per_second"]
        ref["eval_speedup"] = st["epoch_eval"]["tokens_per_second"] / ref["eval_per_token_tokens_per_second"]
        ref["train_speedup_same_slice"] = (ref["train_batched_tokens_per_second"]
                                           / ref["train_per_token_tokens_per_second"])
        out["reference"] = ref
    out["study_estimate"] = study_estimate(st)
    return out


def _weights_of(layers: int, dim: int) -> int:
    """Linear weights of one block of the seed layout (n = 1, d_c = d_e): L · 2d · d."""
    return layers * 2 * dim * dim


def print_e2e(result: dict[str, Any], echo: Any = print) -> None:
    """The human-readable lines of ``run_e2e``'s result."""
    sh, st = result["shapes"], result["stages"]
    echo(f"device {result['device']} ({result['threads']} threads, {result['precision']}, load "
         f"{result['load_average']}): matmul peak "
         f"{result['matmul_peak_tflops']:.3f} TFLOP/s; V {sh['vocab']:,} d {sh['dim']} L {sh['layers']} batch "
         f"{sh['batch']}, head {sh['head']}")
    r = st["run"]
    echo(f"run: {r['train_tokens']:,} train tokens, {r['phase1_iterations']} Phase-1 iterations, {r['epochs']} "
         f"epochs, wall {r['wall_seconds']:.1f}s, peak memory {r['peak_memory_bytes'] / 2**30:.2f} GiB")
    for name in ("phase1", "context_cache", "diagnostics", "phase2_train", "epoch_eval", "final_eval"):
        x = st[name]
        echo(f"  {name:<14} {x['seconds']:8.1f}s  {x['tokens_per_second']:10,.0f} tok/s  {x['tflops']:.3f} TFLOP/s"
             f"  MFU {x['mfu']:.1%}")
    ref = result.get("reference")
    if ref:
        echo(f"per-token reference ({ref['positions']} positions): train {ref['train_per_token_tokens_per_second']:.1f}"
             f" tok/s, eval {ref['eval_per_token_tokens_per_second']:.1f} tok/s -> batched run is "
             f"{ref['train_speedup']:.1f}x (train) and {ref['eval_speedup']:.1f}x (eval) faster")
    est = result["study_estimate"]
    runs = ", ".join(f"{k} {v['seconds'] / 60:.1f} min" for k, v in est.items() if isinstance(v, dict))
    echo(f"seed study estimate (these stage rates, V {sh['vocab']:,} d {sh['dim']}): {runs}; "
         f"total {est['total_seconds'] / 60:.1f} min")


if __name__ == "__main__":  # python -m freezelab.bench_e2e: the full mode as JSON
    print(json.dumps(run_e2e(), indent=2))
