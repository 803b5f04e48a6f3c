"""Scaling of a real LM run: time and peak memory of Phase 1 and Phase 2 as tokens and the vocabulary grow.

    python benchmarks/scaling.py                 # about 10 minutes on the shared 2-core CPU
    python benchmarks/scaling.py --json out.json
    python benchmarks/scaling.py --docs 4,8,16,32,64 --held-out 96   # larger sizes (a quiet machine)

Every size is one real run (``freezelab.bench_e2e.run_e2e`` without the per-token reference) in its own
process, so its peak memory (max RSS) is its own. Shapes: the offline default study's (MiniLM: V 30,522,
d 384, 6 layers, batch 512, frozen tied head), 2 Phase-1 iterations and 1 epoch per run so a sweep fits the
shared machine. Tokens: 2, 4, 8, 16 training documents of ≤ 512 tokens are fitted (time = a + b·tokens per
stage, peak memory = a + b·tokens, least squares with numpy), 32 documents are held out and predicted.
Vocabulary: 4 documents at V = 30,522 … 128,000 (d 384; the tokenizer's ids stay below 30,522, the softmax and
the head cover all V), fitted as Phase-2 seconds per token = a + b·V.
The fit then predicts an UltraChat-200k-sized run (207,865 conversations × ≈ 502 tokens, seed protocol:
7 Phase-1 iterations, 4 epochs), at these shapes and, scaled by the FLOP ratio of each stage at equal MFU,
at the seed's GPT-2 shapes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import numpy as np

TOKEN_DOCS, HELD_OUT, VOCABS = (2, 4, 8, 16), 32, (30522, 50257, 80000, 128000)  # V ≥ MiniLM's tokenizer
DIM, LAYERS, VOCAB = 384, 6, 30522
ULTRACHAT = {"train_tokens": 207_865 * 502, "val_tokens": 25_121, "iterations": 7, "epochs": 4}
STAGES = ("phase1", "context_cache", "phase2_train", "epoch_eval")


CACHE: dict[tuple[int, int], dict[str, Any]] = {}


def one(train_docs: int, vocab: int) -> dict[str, Any]:
    """One run in a child process; its stages and peak memory (a row of ``--rows`` is reused)."""
    if (train_docs, vocab) in CACHE:
        return CACHE[(train_docs, vocab)]
    code = ("import json,sys; from freezelab.bench_e2e import run_e2e; "
            f"r=run_e2e('cpu', train_docs={train_docs}, epochs=1, iterations=2, vocab={vocab}, dim={DIM}, "
            f"layers={LAYERS}, reference=False); print('RESULT ' + json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    r = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
    st = r["stages"]
    row = {"train_docs": train_docs, "vocab": vocab, "tokens": st["run"]["train_tokens"],
           "peak_memory_gib": st["run"]["peak_memory_bytes"] / 2**30, "load_average": r["load_average"],
           "matmul_peak_tflops": r["matmul_peak_tflops"]}
    for s in STAGES:
        row[f"{s}_seconds"] = st[s]["seconds"]
        row[f"{s}_mfu"] = st[s]["mfu"]
    row["eval_positions"] = st["epoch_eval"]["tokens"]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def fit(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares a + b·x."""
    b, a = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(a), float(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write every row and fit here")
    ap.add_argument("--rows", help="reuse rows printed (stderr, one JSON per line) by an earlier sweep")
    ap.add_argument("--docs", default=",".join(map(str, TOKEN_DOCS)),
                    help="training documents of the fitted sizes, comma-separated (the excerpt has 106 articles)")
    ap.add_argument("--held-out", type=int, default=HELD_OUT, help="training documents of the predicted size")
    args = ap.parse_args()
    docs = [int(n) for n in args.docs.split(",")]
    if args.rows:
        with open(args.rows, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                CACHE[(row["train_docs"], row["vocab"])] = row
    rows = [one(n, VOCAB) for n in docs]
    held = one(args.held_out, VOCAB)
    vrows = [one(4, v) for v in VOCABS]

    fits: dict[str, tuple[float, float]] = {}
    xs = [r["tokens"] for r in rows]
    for s in ("phase1", "context_cache", "phase2_train"):
        fits[s] = fit(xs, [r[f"{s}_seconds"] for r in rows])
    fits["epoch_eval"] = fit([r["eval_positions"] for r in rows], [r["epoch_eval_seconds"] for r in rows])
    fits["memory"] = fit(xs, [r["peak_memory_gib"] for r in rows])

    print("## Tokens (V 30,522, d 384, 6 layers, batch 512; 2 Phase-1 iterations, 1 epoch)\n")
    print("| train docs | train tokens | Phase 1 s | context cache s | Phase-2 epoch s | val eval s | "
          "peak memory GiB | load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in [*rows, held]:
        mark = " (held out)" if r is held else ""
        print(f"| {r['train_docs']}{mark} | {r['tokens']:,} | {r['phase1_seconds']:.1f} | "
              f"{r['context_cache_seconds']:.1f} | {r['phase2_train_seconds']:.1f} | {r['epoch_eval_seconds']:.1f} | "
              f"{r['peak_memory_gib']:.2f} | {r['load_average'][0] if r['load_average'] else '—'} |")
    print(f"\nFit on the first {len(rows)}, prediction for the held-out size:\n")
    print("| quantity | a | b (per token) | predicted | measured | error |")
    print("|---|---|---|---|---|---|")
    for s in (*STAGES, "memory"):
        a, b = fits[s]
        x = held["eval_positions"] if s == "epoch_eval" else held["tokens"]
        key = "peak_memory_gib" if s == "memory" else f"{s}_seconds"
        pred, meas = a + b * x, held[key]
        print(f"| {s} | {a:.3g} | {b:.3g} | {pred:.2f} | {meas:.2f} | {(pred - meas) / meas:+.0%} |")

    print("\n## Vocabulary (4 documents, d 384)\n")
    print("| V | tokens | Phase 1 s | Phase-2 epoch s | val eval s | peak memory GiB |")
    print("|---|---|---|---|---|---|")
    for r in vrows:
        print(f"| {r['vocab']:,} | {r['tokens']:,} | {r['phase1_seconds']:.1f} | {r['phase2_train_seconds']:.1f} | "
              f"{r['epoch_eval_seconds']:.1f} | {r['peak_memory_gib']:.2f} |")
    vfit = {s: fit([r["vocab"] for r in vrows], [r[f"{s}_seconds"] / r["tokens"] for r in vrows])
            for s in ("phase2_train",)}
    a, b = vfit["phase2_train"]
    print(f"\nPhase-2 seconds per token = {a:.3g} + {b:.3g}·V (the head's share grows linearly with V).")

    # an UltraChat-200k-sized run: Phase 1 per token-iteration (fit measured with 2 iterations), epochs
    n, u = ULTRACHAT["train_tokens"], ULTRACHAT
    p1_per_iter = fits["phase1"][1] / 2
    sec = {"phase1": p1_per_iter * n * u["iterations"], "context_cache": fits["context_cache"][1] * n,
           "phase2": u["epochs"] * fits["phase2_train"][1] * n,
           "eval": (u["epochs"] + 1) * fits["epoch_eval"][1] * u["val_tokens"]}
    # seed shapes (V 50,257, d 768): FLOP per token of each stage at equal MFU; blocks scale with d², head with V·d
    w_ratio, vd_ratio = (768 / DIM) ** 2, (50257 * 768) / (VOCAB * DIM)
    w, vd = LAYERS * 2 * DIM * DIM, VOCAB * DIM
    p2_ratio = (6 * w * w_ratio + 4 * vd * vd_ratio) / (6 * w + 4 * vd)
    seed_sec = {"phase1": sec["phase1"] * w_ratio, "context_cache": sec["context_cache"] * w_ratio,
                "phase2": sec["phase2"] * p2_ratio, "eval": sec["eval"] * (2 * w * w_ratio + 2 * vd * vd_ratio)
                / (2 * w + 2 * vd)}
    mem = fits["memory"][0] + fits["memory"][1] * n
    print(f"\n## UltraChat-200k-sized run ({n:,} train tokens, {u['iterations']} Phase-1 iterations, "
          f"{u['epochs']} epochs)\n")
    print("| shapes | Phase 1 | context cache | Phase 2 | evaluation | total | peak memory |")
    print("|---|---|---|---|---|---|---|")
    for name, t, m in (("V 30,522, d 384 (fit)", sec, f"{mem:,.0f} GiB"),
                       ("V 50,257, d 768 (FLOP-scaled)", seed_sec, f"≈ {mem * 2:,.0f} GiB (contexts ∝ d)")):
        print(f"| {name} | {t['phase1'] / 3600:.1f} h | {t['context_cache'] / 3600:.1f} h | "
              f"{t['phase2'] / 3600:.1f} h | {t['eval'] / 60:.1f} min | {sum(t.values()) / 3600:.1f} h | {m} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "held_out": held, "vocab_rows": vrows, "fits": fits,
                       "ultrachat": {"fit_shapes": sec, "seed_shapes": seed_sec, "memory_gib": mem}}, f, indent=2)


if __name__ == "__main__":
    main()
