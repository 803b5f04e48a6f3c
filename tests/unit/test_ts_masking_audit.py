"""Masks that cannot leak, measured on real bars through the real batch builder (docs/timeseries-masking.md).

The leak checks here are brute force (every target against every visible bar), independent of both the
scheme's construction and the audit's packed-key search. Every guarantee is paired with the old
``seed_closure`` scheme failing the same check, so the tests can fail.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from freezelab.config.load import load_study, set_dotted
from freezelab.errors import InvariantViolation
from freezelab.tasks.timeseries import batches as B
from freezelab.tasks.timeseries.bars import NS_PER_MINUTE, resample, synthetic_bars
from freezelab.tasks.timeseries.config import TSConfig
from freezelab.tasks.timeseries.masking import default_mask_config, draw_masks, mask_rng
from freezelab.tasks.timeseries.masking_audit import (
    audit_masks,
    check_batch_leak,
    masking_problems,
    oracle_predictions,
    time_leaks,
)
from freezelab.tasks.timeseries.metrics import interpolation_baseline
from freezelab.tasks.timeseries.scoring import score_baselines
from freezelab.tasks.timeseries.windows import build_window_index, gather_times

EXAMPLE = Path(__file__).parents[2] / "examples" / "t5-transfer.yaml"
SEED_TFS = ["m1", "m5", "m15", "m30", "h1", "h4"]
MIN = NS_PER_MINUTE


def brute_leaks(o, c, targets, visible) -> dict[str, int]:
    """{tf: targets overlapping in time any visible bar of another TF}, pair by pair, window by window."""
    out = dict.fromkeys(targets, 0)
    for b in range(len(next(iter(targets.values())))):
        for g in targets:
            t, leaked = targets[g][b], np.zeros(int(targets[g][b].sum()), dtype=bool)
            for f in targets:
                if f == g:
                    continue
                v = visible[f][b]
                hit = (o[g][b][t][:, None] < c[f][b][v][None, :]) & (o[f][b][v][None, :] < c[g][b][t][:, None])
                leaked |= hit.any(axis=1)
            out[g] += int(leaked.sum())
    return out


def shipped_data(scheme: str) -> B.TSData:
    if importlib.util.find_spec("backtesting") is None:
        pytest.skip("backtesting (freezelab[fxdata]) not installed")
    cfg = copy.deepcopy(load_study(EXAMPLE, profile="quick").arms["frozen"].config)
    set_dotted(cfg, "masking.scheme", scheme)
    return B.load_data(TSConfig.model_validate(cfg), log=lambda m: None)


def seed_layout_data(scheme: str) -> B.TSData:
    """The seed's layout: m1, m5, m15, m30, h1, h4 × 128 bars on synthetic m1 bars."""
    cfg = {"data": {"source": "synthetic", "synthetic_bars": 200_000, "base_tf": "m1", "timeframes": SEED_TFS,
                    "split": [0.6, 0.2, 0.2]},
           "windows": {"context": dict.fromkeys(SEED_TFS, 128), "train_stride_minutes": 15,
                       "eval_stride_minutes": 60, "max_eval_windows": 150},
           "model": {"patch_len": 8}, "masking": {"scheme": scheme}}
    return B.load_data(TSConfig.model_validate(cfg), log=lambda m: None)


@pytest.fixture(scope="module")
def shipped():
    return {s: (d, audit_masks(d, seed=0, batch_size=256)) for s in ("disjoint", "seed_closure")
            for d in [shipped_data(s)]}


@pytest.fixture(scope="module")
def seed_layout():
    return {s: (d, audit_masks(d, seed=0, batch_size=256)) for s in ("disjoint", "seed_closure", "full_closure")
            for d in [seed_layout_data(s)]}


def in_band(audit, lo=0.5, hi=2.0) -> bool:
    return all(lo * audit["ratio"][f] <= v["target_fraction"] <= hi * audit["ratio"][f]
               for split in audit["splits"].values() for f, v in split.items())


# ----------------------------------------------------------------------------- real data, real builder


def test_shipped_study_targets_never_share_time_with_visible_bars(shipped):
    data, audit = shipped["disjoint"]
    for name in ("val", "test"):
        for batch, _ in B.eval_batches(data, name, 256):
            targets = {f: m.numpy() for f, m in batch.masks.items()}
            visible = {f: ~m for f, m in batch.blanked.items()}
            assert brute_leaks(batch.open_times, batch.close_times, targets, visible) == dict.fromkeys(data.tfs, 0)
            for f in data.tfs:  # and the blanked inputs hold the fill, not the values
                assert (batch.inputs[f].numpy()[~visible[f]] == 0).all()
    assert audit["leak_free"] and in_band(audit), audit
    for split in audit["splits"].values():
        for f in ("h4", "d"):  # the oracle has nothing visible to aggregate: it is interpolation
            assert split[f]["oracle_gain"] <= 1e-6 and split[f]["targets"] > 0


def test_seed_closure_leaks_on_the_shipped_study_and_is_out_of_band(shipped):
    data, audit = shipped["seed_closure"]
    batch, _ = next(B.eval_batches(data, "val", 256))
    targets = {f: m.numpy() for f, m in batch.masks.items()}
    leaks = brute_leaks(batch.open_times, batch.close_times, targets, {f: ~m for f, m in batch.blanked.items()})
    assert leaks["d"] > 0 and leaks["h4"] > 0
    val = audit["splits"]["val"]
    assert val["d"]["leaked_fraction"] > 0.3 and val["d"]["oracle_gain"] > 0.1  # visible hours rebuild days
    assert not audit["leak_free"] and not in_band(audit)
    assert val["h1"]["target_fraction"] > 0.3  # declared 0.15
    lines = masking_problems(audit)
    assert any("masking leak (seed_closure, val)" in x and "d " in x for x in lines)
    assert any("outside 0.5×–2×" in x for x in lines)
    relabelled = {**audit, "scheme": "disjoint"}  # a scheme that promises no leak and leaks fails the run
    with pytest.raises(InvariantViolation, match="masked_time_leak: masking.scheme=disjoint leaked"):
        masking_problems(relabelled)
    with pytest.raises(InvariantViolation, match="masked_time_leak"):
        check_batch_leak(batch)
    check_batch_leak(next(B.eval_batches(shipped["disjoint"][0], "val", 256))[0])


def test_audit_interpolation_is_the_scored_baseline(shipped):
    """Baselines read visible bars only: hidden bars (disjoint) never feed the interpolation."""
    data, audit = shipped["disjoint"]
    base = score_baselines(data, batch_size=256)["interpolation"]
    assert any(v["hidden_fraction"] > 0.1 for v in audit["splits"]["val"].values())
    for f in data.tfs:
        assert audit["splits"]["val"][f]["interpolation_mse"] == pytest.approx(base[f"val/mse/{f}"], rel=1e-9)


def test_seed_layout_fractions_in_band_and_leak_free(seed_layout):
    _, audit = seed_layout["disjoint"]
    assert audit["leak_free"] and in_band(audit), audit
    assert all(v["hidden_fraction"] < 0.3 for s in audit["splits"].values() for v in s.values())
    assert all(abs(v["oracle_gain"]) <= 1e-6 for s in audit["splits"].values() for v in s.values())
    _, full = seed_layout["full_closure"]
    assert full["leak_free"] and full["splits"]["val"]["m1"]["target_fraction"] > 0.8 and not in_band(full)
    _, seed = seed_layout["seed_closure"]
    assert not seed["leak_free"] and seed["splits"]["val"]["h4"]["oracle_gain"] > 0.1


def test_seed_layout_brute_force_on_a_training_batch(seed_layout):
    for scheme, expect_leak in (("disjoint", False), ("seed_closure", True)):
        data = seed_layout[scheme][0]
        batch = B.make_batch(data, data.part("train"), np.arange(0, 640, 10), seed=3, epoch=2)
        targets = {f: m.numpy() for f, m in batch.masks.items()}
        leaks = brute_leaks(batch.open_times, batch.close_times, targets, {f: ~m for f, m in batch.blanked.items()})
        assert (sum(leaks.values()) > 0) == expect_leak, leaks


# ----------------------------------------------------------------------------- the pieces


def test_time_leaks_matches_brute_force():
    bars = {f: resample(synthetic_bars(30_000, seed=2), f) for f in ("m1", "m5", "h1")}
    index = build_window_index(bars, base_tf="m1", context={"m1": 24, "m5": 16, "h1": 8}, stride_minutes=13,
                               max_gap_minutes=dict.fromkeys(bars))
    rows = np.arange(0, len(index), max(1, len(index) // 40))
    o, c = gather_times(bars, index, rows)
    rng = np.random.default_rng(0)
    targets = {f: rng.random(t.shape) < 0.2 for f, t in o.items()}
    visible = {f: ~m & (rng.random(m.shape) < 0.7) for f, m in targets.items()}
    fast = time_leaks(o, c, targets, visible)
    assert {f: int(m.sum()) for f, m in fast.items()} == brute_leaks(o, c, targets, visible)
    assert sum(int(m.sum()) for m in fast.values()) > 0


def _one_window():
    """One window of consistent bars: 12 m5 bars, the 4 m15 bars and the h1 bar they aggregate to."""
    t0 = 1_700_000_000 // 3600 * 3600 * 10**9
    rng = np.random.default_rng(1)
    m5 = np.cumsum(rng.normal(0, 5, (12, 4)), axis=0)
    m5[:, 1] = m5.max(axis=1) + 2
    m5[:, 2] = m5.min(axis=1) - 2
    o = {"m5": t0 + 5 * MIN * np.arange(12)[None], "m15": t0 + 15 * MIN * np.arange(4)[None],
         "h1": np.array([[t0]])}
    c = {"m5": o["m5"] + 5 * MIN, "m15": o["m15"] + 15 * MIN, "h1": o["h1"] + 60 * MIN}

    def agg(x):
        return np.array([x[0, 0], x[:, 1].max(), x[:, 2].min(), x[-1, 3]])
    v = {"m5": m5[None], "m15": np.stack([agg(m5[3 * i:3 * i + 3]) for i in range(4)])[None],
         "h1": agg(m5)[None, None]}
    n_sub = {"m5": np.ones((1, 12), int), "m15": np.full((1, 4), 3), "h1": np.array([[12]])}
    return v, o, c, n_sub


def test_oracle_rebuilds_a_bar_tiled_by_visible_finer_bars_and_is_interpolation_without_them():
    v, o, c, n_sub = _one_window()
    visible = {"m5": np.ones((1, 12), bool), "m15": np.ones((1, 4), bool), "h1": np.zeros((1, 1), bool)}
    visible["m15"][0, 2] = False  # m15 bar 2: its three m5 bars are visible
    pred = oracle_predictions(v, o, c, n_sub, visible)
    np.testing.assert_allclose(pred["m15"][0, 2], v["m15"][0, 2])
    np.testing.assert_allclose(pred["h1"][0, 0], v["h1"][0, 0])  # every m5 bar visible: the hour is exact
    visible["m5"][0, 6:9] = False  # now nothing finer is visible inside m15 bar 2
    visible["h1"][0, 0] = False
    pred = oracle_predictions(v, o, c, n_sub, visible)
    interp = interpolation_baseline(v["m15"], ~visible["m15"], o["m15"], c["m15"])
    np.testing.assert_allclose(pred["m15"][0, 2], interp[0, 2])
    visible["m5"][0, 6] = True  # the first m5 bar of it is visible: the open is known exactly
    pred = oracle_predictions(v, o, c, n_sub, visible)
    assert pred["m15"][0, 2, 0] == v["m15"][0, 2, 0] and pred["m15"][0, 2, 1] >= v["m5"][0, 6, 1]


def test_oracle_uses_the_bounds_of_a_visible_covering_bar():
    v, o, c, n_sub = _one_window()
    visible = {"m5": np.ones((1, 12), bool), "m15": np.zeros((1, 4), bool), "h1": np.ones((1, 1), bool)}
    visible["m5"][0, :3] = False  # the first m5 bars are hidden; the hour (visible) covers them
    pred = oracle_predictions(v, o, c, n_sub, visible)["m5"][0, :3]
    assert pred[0, 0] == v["h1"][0, 0, 0]  # the hour's open is the first m5 bar's open
    assert (pred <= v["h1"][0, 0, 1]).all() and (pred >= v["h1"][0, 0, 2]).all()


def test_disjoint_masks_on_synthetic_windows_match_their_audit():
    bars = {f: resample(synthetic_bars(60_000, seed=4), f) for f in ("m1", "m15", "h1")}
    index = build_window_index(bars, base_tf="m1", context=32, stride_minutes=11)
    rows = np.arange(0, len(index), max(1, len(index) // 50))
    o, c = gather_times(bars, index, rows)
    masks = draw_masks(o, c, mask_rng(0, 0, index.anchors[rows]), default_mask_config(list(bars)))
    visible = {f: ~m for f, m in masks.blanked.items()}
    assert brute_leaks(o, c, masks.targets, visible) == dict.fromkeys(bars, 0)
    assert all(int(m.sum()) == 0 for m in time_leaks(o, c, masks.targets, visible).values())
