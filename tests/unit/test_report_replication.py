"""The replication section: protocols never compared with each other, each claim judged on planted outcomes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds report_fixtures

from report_fixtures import HASHES, write_run, write_study_json  # noqa: E402

from freezelab.report import protocol_groups, write_report  # noqa: E402
from freezelab.report.aggregate import load_study  # noqa: E402

ROLES = {"frozen": ("pretrained", "frozen"), "frozen_then_unfrozen": ("pretrained", "frozen_then_unfrozen"),
         "finetune": ("pretrained", "finetune"), "random_init": ("random_init", "finetune")}
ORIGINAL = {"windows": {"layout": "legacy"}, "masking": {"scheme": "legacy_index_sync", "mask_inputs": False},
            "data": {"normalisation": "none"}}
# Planted test MSE per seed. Corrected: finetune clearly better than frozen, random init clearly worse, the
# unfreezing arm indistinguishable; interpolation 0.50, so only finetune has skill. Original (raw price² units,
# its own baseline 5e-6): every arm copies its targets, far below the baseline and alike, and its per-window
# correlation is about 0 (as the seed's, on raw prices).
CORRECTED = {"frozen": [0.60, 0.62, 0.61], "frozen_then_unfrozen": [0.61, 0.60, 0.625],
             "finetune": [0.40, 0.41, 0.39], "random_init": [0.90, 0.93, 0.91]}
ORIG = {"frozen": [1.0e-7, 1.05e-7, 0.98e-7], "frozen_then_unfrozen": [1.02e-7, 0.99e-7, 1.04e-7],
        "finetune": [1.01e-7, 1.03e-7, 0.99e-7], "random_init": [1.0e-7, 1.04e-7, 1.01e-7]}


def _config(role: str, original: bool) -> dict:
    kind, train = ROLES[role]
    cfg = {"backbone": {"kind": kind, "train": train}, "windows": {"layout": "anchored"},
           "masking": {"scheme": "disjoint", "mask_inputs": True}, "data": {"normalisation": "train_only"}}
    if original:
        for section, values in ORIGINAL.items():
            cfg[section].update(values)
    return cfg


def make_study(out: Path, *, with_original: bool = True) -> Path:
    arms = list(CORRECTED) + ([f"original_{a}" for a in ORIG] if with_original else [])
    write_study_json(out, "replicate-t5-transfer", "timeseries", arms, [0, 1, 2], "frozen")
    headline = [{"name": "mse", "mode": "min", "log_scale": True}, {"name": "corr", "mode": "max"}]
    for arm in arms:
        original = arm.startswith("original_")
        role = arm.removeprefix("original_")
        values = (ORIG if original else CORRECTED)[role]
        base = {"persistence": {"test/mse": 6e-6 if original else 0.7},
                "interpolation": {"test/mse": 5e-6 if original else 0.5}}
        hashes = {**HASHES, "eval_hash": ("o" if original else "e") * 64}
        for seed, mse in enumerate(values):
            lines = [{"kind": "epoch", "phase": "train", "epoch": e, "step": 10 * e, "train/loss": 1.0 / e,
                      "val/mse": mse * (1 + 0.1 * (e - 2) ** 2), "val/corr": 0.9 if original else 0.3}
                     for e in (1, 2, 3)]
            folder = write_run(out, study="replicate-t5-transfer", task="timeseries", arm=arm, seed=seed,
                               reference=arm == "frozen", lines=lines, best=2,
                               test={"test/mse": mse, "test/corr": (0.01, -0.02, 0.005)[seed] if original else 0.3},
                               headline=headline,
                               baselines=base, params=(1000, 100), hashes=hashes, selection="val/mse")
            (folder / "config.yaml").write_text(yaml.safe_dump(_config(role, original)), encoding="utf-8")
            if original:
                s = json.loads((folder / "summary.json").read_text())
                per_tf = {"h1": {"target_fraction": 0.17, "hidden_fraction": 0.0, "targets": 100, "leaked_targets": 100,
                                 "leaked_fraction": 1.0, "visible_targets": 100, "oracle_mse": 0.0,
                                 "interpolation_mse": 0.0, "oracle_gain": float("nan")}}
                s["masking"] = {"scheme": "legacy_index_sync", "ratio": {"h1": 0.15}, "band": [0.5, 2.0],
                                "mask_inputs": False, "splits": {"val": per_tf}}
                s["data"] = {"legacy": {"look_ahead_share": {"d": 0.96}, "look_ahead_max_minutes": {"d": 1380.0}}}
                (folder / "summary.json").write_text(json.dumps(s), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = make_study(tmp_path_factory.mktemp("replication"))
    write_report(out, lang="ja")
    return out


def test_protocols_are_found_from_the_resolved_configs(study):
    groups = protocol_groups(load_study(study))
    assert [g.kind for g in groups] == ["corrected", "original"]
    assert groups[0].reference == "frozen" and groups[1].reference == "original_frozen"  # same backbone role
    assert set(groups[1].options) == {"windows.layout=legacy", "masking.scheme=legacy_index_sync",
                                      "masking.mask_inputs=false", "data.normalisation=none"}


def test_a_single_protocol_study_has_no_replication_section(tmp_path):
    out = make_study(tmp_path, with_original=False)
    assert protocol_groups(load_study(out)) == []
    write_report(out)
    assert "Replication" not in (out / "report.md").read_text(encoding="utf-8")


def test_protocols_are_never_compared_with_each_other(study):
    """The original arms' MSE is in price² (1e-7): compared with the corrected reference it would read −100 %."""
    md = (study / "report.md").read_text(encoding="utf-8")
    first = md.split("## Replication")[0]
    tables = [ln for ln in first.splitlines() if ln.startswith("|")]
    assert not any("original_" in ln for ln in tables)  # the first screen compares the reference protocol only
    assert "INPUTS NOT MASKED" in first  # ... and warns of the other protocol's leak
    rep = md.split("## Replication")[1].split("\n## ")[0]
    table = rep.split("Protocol original: arms vs `original_frozen`")[1]
    assert "−100" not in table and "-100" not in table
    data = json.loads((study / "report.json").read_text())
    assert set(data["arms"]) == set(CORRECTED)


def test_each_claim_is_judged_per_protocol_on_the_planted_outcomes(study):
    data = json.loads((study / "report.json").read_text())["replication"]
    got = {c["claim"]: ([p["holds"] for p in c["per_protocol"]], c["survives"]) for c in data["claims"]}
    assert got["c_alike"] == ([False, True], False)          # corrected: finetune better; original: all alike
    assert got["c_nofreeze_best"] == ([True, False], True)   # finetune better than frozen only when corrected
    assert got["c_corr_zero"] == ([False, True], False)      # corr 0.3 on every seed; about 0 when copying raw prices
    assert got["c_no_skill"] == ([False, False], False)      # finetune beats interpolation; the leak beats it all
    assert got["c_loss_16x"] == ([False, False], False)      # finetune's loss is lower, not 16x higher
    assert got["c_random"][1] is True                        # answered: random init is worse than frozen
    evidence = next(c for c in data["claims"] if c["claim"] == "c_random")["per_protocol"][0]["evidence"]
    assert "`random_init`" in evidence and "worse" in evidence


def test_the_original_protocols_leak_is_in_the_headline_and_measured(study):
    md = (study / "report.md").read_text(encoding="utf-8")
    head = md.split("## Settings")[0]
    assert "INPUTS NOT MASKED (masking.mask_inputs: false) in `original_frozen`" in head
    rep = md.split("## Replication")[1].split("\n## ")[0]
    assert "original: 100 % of targets visible in the input" in rep and "96 % of windows (up to 23 h)" in rep
    ja = (study / "report.ja.md").read_text(encoding="utf-8")
    assert "再現: 元の研究の数値のうち何が残るか" in ja and "残らない" in ja
