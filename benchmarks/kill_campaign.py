"""Kill campaign: SIGKILL a tiny study many times, rerun each, and count reruns identical to an uninterrupted run.

    python benchmarks/kill_campaign.py --kills 40 --seed 0 [--task lm|timeseries]

Each kill is either at a random moment (uniform over the uninterrupted run's wall time) or at a random
write site (``FREEZELAB_FAULT``: before/after the rename of state.json, state/best safetensors, summary.json,
a torn metrics line, after summary.json) and a random occurrence of it. The killed process is forked from a
server that has imported everything (``tests/kill_helpers.py``), the rerun runs in this process, and the
rerun's summary.json and metrics.jsonl are compared with the uninterrupted run's, field by field apart
from wall-clock timings. The suite's ``tests/integration/test_kills.py`` runs a fixed handful of these.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SITES = ["before_rename:state.json", "after_rename:state.json", "before_rename:state.safetensors.next",
         "before_rename:best.safetensors.next", "before_rename:phase1.safetensors.next", "append:metrics.jsonl",
         "before_rename:summary.json", "after_summary"]


def _lm_study(root: Path) -> Path:
    """The kill test's LM study: tiny local BERT-style table, 16 documents, early stop, a commit every step."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from freezelab.pretrained.hf import resolve_source
    from tests.conftest import WORDS, tiny_base

    rng = random.Random(0)
    (root / "corpus").mkdir()
    for i in range(16):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 70)))
        (root / "corpus" / f"doc{i:02d}.txt").write_text(text.capitalize() + ".\n")
    tok = AutoTokenizer.from_pretrained(resolve_source("minilm"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    base = tiny_base(root / "model", root / "corpus")
    base["phase2"].update(max_epochs=8, patience=1, lr=0.05, batch_size=128)
    base["runtime"]["checkpoint_minutes"] = 0
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "kill", "task": "lm", "seeds": [0], "base": base, "arms": {
        "unfrozen": {"reference": True, "overrides": {"phase2.unfreeze": {"at_epoch": 1}}}}}))
    return path


def _ts_study(root: Path) -> Path:
    from tests.ts_fixtures import save_tiny, tiny_ts_base, write_ts_study

    base = tiny_ts_base(save_tiny("t5", root / "t5"))
    base["train"]["max_epochs"] = 3
    base["runtime"]["checkpoint_minutes"] = 0
    return write_ts_study(root / "study.yaml", base, {"ftu": {"reference": True, "overrides": {
        "backbone.train": "frozen_then_unfrozen", "backbone.unfreeze_epoch": 1, "backbone.unfreeze_warmup_steps": 3}}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=("lm", "timeseries"), default="lm")
    args = parser.parse_args()

    from freezelab.config.load import load_study
    from freezelab.experiment.plan import make_plan
    from freezelab.experiment.runner import run_plan
    from freezelab.tracking.checkpoints import Checkpoints
    from tests import kill_helpers

    root = Path(tempfile.mkdtemp(prefix="kill-campaign-"))
    study_path = _lm_study(root) if args.task == "lm" else _ts_study(root)

    def rerun(out: Path) -> str:
        study = load_study(study_path)
        return run_plan(study, make_plan(study), out, isolation="inline", progress=False, tensorboard=False)[0].status

    commits = 0
    real = Checkpoints.commit

    def counting(self, *a, **kw):
        nonlocal commits
        commits += 1
        real(self, *a, **kw)
    Checkpoints.commit = counting  # type: ignore[method-assign]
    t0 = time.time()
    assert rerun(root / "whole") == "succeeded"
    wall = time.time() - t0
    Checkpoints.commit = real  # type: ignore[method-assign]
    whole = kill_helpers.result(root / "whole")
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.kills):
        out = root / f"k{i}"
        if i % 2 == 0:
            delay = rng.uniform(0, wall)
            proc = kill_helpers.start(study_path, out)
            time.sleep(delay + 0.2)  # + the fork's start
            proc.kill()
            proc.join()
            how = f"random {delay:.2f}s"
        else:
            site = rng.choice(SITES)
            once = ("summary" in site or "phase1" in site)  # written once per run
            nth = 1 if once else rng.randint(1, commits) if "state" in site else rng.randint(1, 3)
            how = f"{site}@{nth}"
            proc = kill_helpers.start(study_path, out, how)
            proc.join()
        killed = proc.exitcode != 0
        status = rerun(out)
        same = status in ("succeeded", "skipped") and kill_helpers.result(out) == whole
        rows.append({"kill": how, "killed": killed, "rerun": status, "identical": same})
        print(f"{i:3d} {how:45s} killed={killed!s:5s} rerun={status:9s} identical={same}", flush=True)
    identical = sum(r["identical"] for r in rows)
    killed = sum(r["killed"] for r in rows)
    print(json.dumps({"task": args.task, "kills": args.kills, "actually_killed": killed, "identical": identical,
                      "uninterrupted_wall_seconds": round(wall, 1), "commits_per_run": commits}))
    shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if identical == len(rows) else 1)


if __name__ == "__main__":
    main()
