"""Fabricated run folders (docs/run-folder.md layout) with known values, for the report tests.

``make_lm_study``: arms ``tied_frozen`` (reference), ``untied`` (clearly better on every seed) and
``tied_trainable`` (indistinguishable from the reference; seed 2 failed with ``ValueError: boom``;
best epoch = 1). ``make_timeseries_study``: masked-reconstruction flavour with per-timeframe metrics.
``make_wide_study``: 10 arms x 5 seeds, for table-width checks. ``make_demo_study``: the quick demo's
own per-seed test PPLs (5 arms x 2 seeds, KN bigram 2,171) with per-document items (``items/*.npz``).
With ``items=True`` the LM study also writes per-document scores that reproduce its summary values.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from freezelab.tracking.items import MODEL, metric, write_items

HASHES = {"data_hash": "d" * 64, "split_hash": "s" * 64, "eval_hash": "e" * 64, "budget_hash": "b" * 64,
          "pretrained_hash": "p" * 64}
ENV = {"python": "3.11.7", "torch": "2.13.0", "freezelab": "0.1.0", "device": "cpu", "precision": "fp32",
       "git_commit": "abc1234", "host": "testhost"}
TRACEBACK = ["Traceback (most recent call last):", '  File "freezelab/experiment/run.py", line 42, in step',
             "    raise ValueError('boom')", "ValueError: boom"]

# Known per-seed test values of the LM study (seed -> value).
LM_TEST_PPL = {"tied_frozen": {0: 330.0, 1: 340.0, 2: 335.0},
               "untied": {0: 250.0, 1: 262.0, 2: 255.0},
               "tied_trainable": {0: 332.0, 1: 337.0}}
LM_TEST_ACC = {"tied_frozen": {0: 0.190, 1: 0.188, 2: 0.192},
               "untied": {0: 0.205, 1: 0.203, 2: 0.207},
               "tied_trainable": {0: 0.189, 1: 0.191}}
LM_BEST_EPOCH = {"tied_frozen": 2, "untied": 3, "tied_trainable": 1}
LM_BASELINES = {"unigram": {"val/ppl": 900.0, "test/ppl": 910.0, "test/acc": 0.05},
                "kn_bigram": {"val/ppl": 330.0, "test/ppl": 335.5, "test/acc": 0.12}}
LM_HEADLINE = [{"name": "ppl", "mode": "min", "log_scale": True}, {"name": "acc", "mode": "max"}]
LM_PARAMS = {"tied_frozen": (52_782_336, 7_091_712), "untied": (91_379_712, 45_689_088),
             "tied_trainable": (52_782_336, 45_689_088)}


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def lm_epochs(best: int, n_epochs: int, offset: float) -> list[dict[str, Any]]:
    """Epoch lines whose val loss is minimal at ``best``."""
    lines = []
    for e in range(1, n_epochs + 1):
        train = 6.4 - 0.6 * (e - 1) + offset
        val = 5.8 + 0.08 * (e - best) ** 2 + offset
        lines.append({"kind": "epoch", "phase": "phase2", "epoch": e, "step": 491 * e,
                      "train/loss": train, "train/ppl": math.exp(train), "train/acc": 0.15 + 0.01 * e,
                      "val/loss": val, "val/ppl": math.exp(val), "val/acc": 0.19 - 0.002 * (e - best) ** 2,
                      "lr/head": 0.002, "lr/token_block": 0.002, "grad_norm/token_block": 1.3 / e,
                      "grad_norm/head": 0.4 / e, "seconds": 12.0 + offset})
    return lines


def phase1_lines(offset: float) -> list[dict[str, Any]]:
    return [{"kind": "iteration", "phase": "phase1", "iteration": i, "phase1/conv_rate": min(1.0, 0.2 * i),
             "phase1/cvfp_loss": 0.5 / i + offset, "train/er": 0.76, "val/er": 0.70, "seconds": 3.5}
            for i in range(1, 8)]


DOC_TOKENS = np.array([223.0, 180.0, 223.0, 90.0, 223.0, 150.0, 223.0, 60.0, 223.0, 205.0])
DOC_SHAPE = np.array([-0.5, -0.3, 0.1, 0.6, 0.4, -0.4, -0.2, 0.3, 0.5, -0.1])  # document difficulty (nats)


def doc_items(loss: float, acc: float, rng: np.random.Generator, noise: float = 0.1) -> dict[str, np.ndarray]:
    """Per-document columns whose token-weighted mean log-loss is exactly ``loss`` (and accuracy ``acc``)."""
    per_doc = DOC_SHAPE + noise * rng.normal(size=len(DOC_TOKENS))
    per_doc += loss - (per_doc * DOC_TOKENS).sum() / DOC_TOKENS.sum()
    hits = np.clip(acc + 0.02 * rng.normal(size=len(DOC_TOKENS)), 0, 1)
    hits *= acc * DOC_TOKENS.sum() / (hits * DOC_TOKENS).sum()
    return {"id": np.arange(len(DOC_TOKENS)), "loss_sum": per_doc * DOC_TOKENS, "tokens": DOC_TOKENS,
            "correct": hits * DOC_TOKENS}


LM_ITEM_METRICS = {"loss": metric("loss_sum", "tokens"), "acc": metric("correct", "tokens")}


def write_lm_items(folder: Path, test: dict[str, float], baselines: dict, seed: int) -> None:
    """items/model.npz and items/<baseline>.npz on the same ten documents (baselines identical in every run)."""
    rng = np.random.default_rng(seed + 100)
    write_items(folder, MODEL, {"test": doc_items(test["test/loss"], test["test/acc"], rng)}, task="lm",
                metrics=LM_ITEM_METRICS)
    for i, (name, values) in enumerate(baselines.items()):
        cols = doc_items(math.log(values["test/ppl"]), values["test/acc"], np.random.default_rng(i), noise=0.15)
        write_items(folder, name, {"test": cols}, task="lm", metrics=LM_ITEM_METRICS)


def write_run(out: Path, *, study: str, task: str, arm: str, seed: int, reference: bool,
              lines: list[dict[str, Any]], best: int | None, test: dict[str, float], headline: list[dict],
              baselines: dict, params: tuple[int, int], hashes: dict[str, str] | None = None,
              error: dict[str, Any] | None = None, diff: dict[str, list] | None = None,
              max_epochs: int = 10, extra: dict[str, Any] | None = None, items: bool = False,
              selection: str = "val/loss", started_at: str = "2025-01-01T00:00:00+00:00",
              profile: str | None = "toy") -> Path:
    """Write one ``runs/<run_id>/`` folder; ``error`` makes it a failed run."""
    run_id = f"{arm}__s{seed}__{zlib.crc32(arm.encode()):08x}"
    folder = out / "runs" / run_id
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    status = "failed" if error else "succeeded"
    _dump(folder / "run.json", {
        "study": study, "arm": arm, "seed": seed, "run_id": run_id, "description": f"arm {arm}",
        "reference": reference, "diff_from_base": diff or {}, "diff_from_reference": diff or {},
        "command": f"freezelab run examples/{study}.yaml --out {out} --arms {arm} --seeds {seed}", "profile": profile})
    _dump(folder / "status.json", {
        "status": status, "run_id": run_id, "arm": arm, "seed": seed, "attempt": 1,
        "started_at": started_at, "updated_at": "2025-01-01T00:10:00+00:00",
        "heartbeat_at": "2025-01-01T00:10:00+00:00", "pid": 1, "host": "testhost", "error": error})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines), encoding="utf-8")
    (folder / "config.yaml").write_text(yaml.safe_dump({"arm": arm, "seed": seed, "train": {"max_epochs": 10}}),
                                        encoding="utf-8")
    epochs = [ln for ln in lines if ln["kind"] == "epoch"]
    best_line = next((ln for ln in epochs if ln["epoch"] == best), {})
    total, trainable = params
    summary = {
        "status": status, "study": study, "task": task, "arm": arm, "seed": seed, "run_id": run_id,
        "selection": {"metric": selection, "mode": "max" if selection.endswith("acc") else "min"}, "headline": headline,
        "best": {"epoch": best, "metrics": {k: v for k, v in best_line.items() if k.startswith("val/")}},
        "test": {} if error else test, "epochs_run": len(epochs), "max_epochs": max_epochs,
        "steps": 491 * len(epochs),
        "params": {"total": total, "trainable": trainable, "frozen": total - trainable, "tied": 1, "unused": 0,
                   "buffers": 0, "by_group": {"embed": {"numel": total - trainable, "frozen": True},
                                              "token_block": {"numel": trainable, "frozen": False}}},
        "train_tokens": 251_207, "tokens_seen": 251_207 * len(epochs), "wall_seconds": 100.0 + seed,
        "phase_seconds": {"phase1": 10.0, "phase2": 90.0 + seed}, "tokens_per_second": 8000.0 + seed,
        "peak_memory_bytes": 1_234_567_890, "hashes": {**(hashes or HASHES), "config_hash": run_id[-8:] * 8},
        "baselines": baselines, "invariants": {"frozen_unchanged": True, "dead_tensors": [], "warnings": []},
        "environment": ENV, "error": error, **(extra or {})}
    _dump(folder / "summary.json", summary)
    if items and not error:
        write_lm_items(folder, test, baselines, seed)
    return folder


def write_study_json(out: Path, name: str, task: str, arms: list[str], seeds: list[int], reference: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _dump(out / "study.json", {
        "name": name, "task": task, "profile": "toy", "seeds": seeds, "reference": reference,
        "base": {"model": {"layers": 6, "head": {"tie": True}}, "train": {"max_epochs": 10, "batch_size": 512}},
        "arms": {a: {"description": f"arm {a}", "overrides": {}, "reference": a == reference} for a in arms}})


def make_lm_study(out: Path, *, seeds: tuple[int, ...] = (0, 1, 2), confound: bool = False,
                  items: bool = False, selection: str = "val/loss") -> Path:
    """The three-arm LM study described in the module docstring; ``confound`` changes one split hash."""
    arms = ["tied_frozen", "untied", "tied_trainable"]
    write_study_json(out, "embedding-freeze", "lm", arms, list(seeds), "tied_frozen")
    diffs = {"tied_frozen": {}, "untied": {"model.head.tie": [True, False], "model.head.init": ["wte", "copy_wte"]},
             "tied_trainable": {"freeze.wte": [True, False]}}
    for arm in arms:
        for seed in seeds:
            failed = arm == "tied_trainable" and seed == 2
            best = LM_BEST_EPOCH[arm]
            lines = phase1_lines(0.01 * seed) + lm_epochs(best, 1 if failed else best + 2, 0.01 * seed)
            ppl, acc = LM_TEST_PPL[arm].get(seed, math.nan), LM_TEST_ACC[arm].get(seed, math.nan)
            error = None
            if failed:
                error = {"class": "ValueError", "message": "boom", "code": None, "traceback_tail": TRACEBACK,
                         "epoch": 2, "step": 120, "last_metrics": {"train/loss": 5.1}, "exit_code": 1,
                         "signal": None, "log_tail": ["epoch 2 step 120 loss 5.1", "ValueError: boom"]}
            hashes = {**HASHES, "split_hash": "x" * 64} if confound and arm == "untied" else None
            write_run(out, study="embedding-freeze", task="lm", arm=arm, seed=seed, reference=arm == "tied_frozen",
                      lines=lines, best=None if failed else best,
                      test={"test/loss": math.log(ppl), "test/ppl": ppl, "test/acc": acc},
                      headline=LM_HEADLINE, baselines=LM_BASELINES, params=LM_PARAMS[arm], hashes=hashes,
                      error=error, diff=diffs[arm], items=items, selection=selection)
    return out


# The quick demo (README): test PPL per arm and seed, and its baselines.
DEMO_PPL = {"tied_frozen": (1517.4, 1395.5), "tied_trainable": (2468.4, 2393.5),
            "frozen_in_untied_head": (1959.0, 1976.9), "random_tied": (4906.9, 4955.7), "no_phase1": (1515.9, 1406.3)}
DEMO_PARAMS = {"tied_frozen": (15_273_984, 1_776_384), "tied_trainable": (15_273_984, 13_496_832),
               "frozen_in_untied_head": (26_994_432, 13_496_832), "random_tied": (15_273_984, 13_496_832),
               "no_phase1": (15_273_984, 1_776_384)}  # the quick demo's counts: two arms share one
DEMO_BASELINES = {"unigram": {"val/ppl": 1957.0, "test/ppl": 2626.0, "test/acc": 0.0489},
                  "kn_bigram": {"val/ppl": 1477.0, "test/ppl": 2171.1, "test/acc": 0.1175}}


def make_demo_study(out: Path, *, arms: list[str] | None = None, seeds: tuple[int, ...] = (0, 1),
                    items: bool = True, planned: list[list] | None = None) -> Path:
    """The quick demo's per-seed numbers (``DEMO_PPL``) as run folders, with per-document items."""
    arms = arms or list(DEMO_PPL)
    write_study_json(out, "embedding-freeze", "lm", list(DEMO_PPL), list(seeds), "tied_frozen")
    if planned is not None:
        spec = json.loads((out / "study.json").read_text())
        _dump(out / "study.json", {**spec, "planned": planned})
    for arm in arms:
        for seed in seeds:
            ppl = DEMO_PPL[arm][seed % 2]
            write_run(out, study="embedding-freeze", task="lm", arm=arm, seed=seed, reference=arm == "tied_frozen",
                      lines=lm_epochs(2, 3, 0.01 * seed), best=2,
                      test={"test/loss": math.log(ppl), "test/ppl": ppl, "test/acc": 0.12},
                      headline=LM_HEADLINE, baselines=DEMO_BASELINES, params=DEMO_PARAMS[arm], items=items)
    return out


TS_TFS = ("m1", "m5", "h1")
TS_TEST = {"frozen": ([0.62, 0.60, 0.64], [0.31, 0.33, 0.30]), "finetune": ([0.55, 0.57, 0.54], [0.36, 0.35, 0.37]),
           "random_init": ([0.95, 0.90, 0.99], [0.05, 0.08, 0.02])}


def make_timeseries_study(out: Path, baselines: dict | None = None) -> Path:
    """Masked-reconstruction flavour: ``val/mse``, ``val/corr/<tf>``, persistence/interpolation baselines."""
    arms = list(TS_TEST)
    write_study_json(out, "timeseries-transfer", "timeseries", arms, [0, 1, 2], "frozen")
    headline = [{"name": "mse", "mode": "min", "log_scale": True}, {"name": "corr", "mode": "max"}]
    baselines = baselines or {"persistence": {"test/mse": 1.0, "test/corr": 0.10},
                              "interpolation": {"test/mse": 0.80, "test/corr": 0.20}}
    for arm in arms:
        for seed in range(3):
            mse, corr = TS_TEST[arm][0][seed], TS_TEST[arm][1][seed]
            lines = []
            for e in range(1, 7):
                bend = (e - 4) ** 2  # best epoch 4
                line = {"kind": "epoch", "phase": "phase2" if e > 2 else "phase1", "epoch": e, "step": 100 * e,
                        "train/loss": 0.5 / e, "val/loss": 0.4 + 0.02 * bend, "val/mse": mse + 0.05 * bend,
                        "val/corr": corr - 0.01 * bend, "lr/head": 1e-3, "lr/encoder.0": 0.0 if e <= 2 else 1e-4,
                        "grad_norm/encoder.0": 0.0 if e <= 2 else 0.5, "grad_norm/head": 1.0 / e, "seconds": 100.0}
                for i, tf in enumerate(TS_TFS):
                    line[f"val/corr/{tf}"] = corr + 0.02 * i
                    line[f"val/mse/{tf}"] = mse * (1 + 0.1 * i)
                lines.append(line)
            write_run(out, study="timeseries-transfer", task="timeseries", arm=arm, seed=seed,
                      reference=arm == "frozen", lines=lines, best=4, test={"test/mse": mse, "test/corr": corr},
                      headline=headline, baselines=baselines, params=(20_314_024, 1_432_744), max_epochs=10,
                      extra={"train_windows": 140_000, "windows_per_second": 900.0}, selection="val/mse")
    return out


def make_wide_study(out: Path, n_arms: int = 10, n_seeds: int = 5) -> Path:
    """Ten arms x five seeds, all succeeded: exercises table splitting and readability."""
    arms = [f"arm_{i:02d}_with_a_long_name" for i in range(n_arms)]
    write_study_json(out, "wide", "lm", arms, list(range(n_seeds)), arms[0])
    for i, arm in enumerate(arms):
        for seed in range(n_seeds):
            ppl = 300.0 + 10 * i + 3 * math.sin(seed + i)
            write_run(out, study="wide", task="lm", arm=arm, seed=seed, reference=i == 0,
                      lines=phase1_lines(0.0) + lm_epochs(2 + i % 3, 5 + i % 3, 0.01 * seed), best=2 + i % 3,
                      test={"test/loss": math.log(ppl), "test/ppl": ppl, "test/acc": 0.19 - 0.001 * i},
                      headline=LM_HEADLINE, baselines=LM_BASELINES, params=(52_782_336, 7_091_712 * (1 + i % 2)),
                      diff={f"model.key_{j}": [j, j + i] for j in range(i)})
    return out
