"""Time-aligned span masks with closure, applied to inputs (spec §3 "Masking")."""

from __future__ import annotations

import numpy as np
import pytest

from freezelab.errors import ConfigError, InvariantViolation
from freezelab.tasks.timeseries.bars import NS_PER_MINUTE, resample, synthetic_bars
from freezelab.tasks.timeseries.masking import (
    MaskConfig,
    apply_mask,
    assert_no_masked_leak,
    close_masks,
    default_mask_config,
    draw_masks,
    mask_rng,
    masks_hash,
    seed_masks,
)
from freezelab.tasks.timeseries.windows import build_window_index, gather_times, gather_windows

TFS = ["m1", "m5", "m15", "m30", "h1", "h4"]
MIN = NS_PER_MINUTE


@pytest.fixture(scope="module")
def batch():
    bars = {f: resample(synthetic_bars(60_000, seed=7), f) for f in TFS}
    index = build_window_index(
        bars, base_tf="m1", context=32, stride_minutes=7, max_gap_minutes=dict.fromkeys(TFS)
    )  # keep weekend windows: more variety
    rows = np.linspace(0, len(index) - 1, 64).astype(np.int64)
    o, c = gather_times(bars, index, rows)
    return bars, index, rows, o, c


def overlaps(o1, c1, o2, c2):
    """(K1, K2) bool: [o1, c1) intersects [o2, c2)."""
    return (o1[:, None] < c2[None, :]) & (o2[None, :] < c1[:, None])


def brute_force_closure(o, c, seed, closure):
    out = {f: m.copy() for f, m in seed.items()}
    for b in range(len(next(iter(seed.values())))):
        masked = {f: seed[f][b].copy() for f in seed}
        while True:
            new = {f: masked[f].copy() for f in seed}
            for f in seed:
                for g in seed:
                    hit = overlaps(o[f][b], c[f][b], o[g][b][masked[g]], c[g][b][masked[g]]).any(axis=1)
                    new[f] |= hit
            changed = any((new[f] != masked[f]).any() for f in seed)
            masked = new
            if closure == "seed" or not changed:
                break
        for f in seed:
            out[f][b] = masked[f]
    return out


@pytest.mark.parametrize("closure", ["full", "seed"])
def test_closure_matches_brute_force(batch, closure):
    _, _, _, o, c = batch
    seeds = seed_masks({f: t.shape for f, t in o.items()}, np.random.default_rng(0), default_mask_config(TFS))
    fast = close_masks(o, c, seeds, closure)
    slow = brute_force_closure(o, c, seeds, closure)
    for f in TFS:
        np.testing.assert_array_equal(fast[f], slow[f])
        assert (fast[f] >= seeds[f]).all()


def brute_leaks(o, c, targets, visible):
    """Per window and TF, the number of targets overlapping a visible bar of another TF (pairwise)."""
    count = 0
    for b in range(len(next(iter(targets.values())))):
        for g in targets:
            for f in targets:
                if f != g:
                    t, v = targets[g][b], visible[f][b]
                    count += int(overlaps(o[g][b][t], c[g][b][t], o[f][b][v], c[f][b][v]).any(axis=1).sum())
    return count


@pytest.mark.parametrize("scheme", ["disjoint", "full_closure"])
def test_leak_free_schemes_no_target_shares_time_with_a_visible_bar(batch, scheme):
    _, index, rows, o, c = batch
    masks = draw_masks(o, c, mask_rng(3, 0, index.anchors[rows]), default_mask_config(TFS, scheme=scheme))
    visible = {f: ~m for f, m in masks.blanked.items()}
    assert brute_leaks(o, c, masks.targets, visible) == 0
    assert all(masks.targets[f].any() for f in TFS)
    if scheme == "full_closure":
        assert not any(h.any() for h in masks.hidden.values())


def test_seed_closure_leaks_so_the_leak_test_can_fail(batch):
    _, index, rows, o, c = batch
    masks = draw_masks(o, c, mask_rng(3, 0, index.anchors[rows]), default_mask_config(TFS, scheme="seed_closure"))
    assert brute_leaks(o, c, masks.targets, {f: ~m for f, m in masks.blanked.items()}) > 0


def test_disjoint_targets_lie_before_finer_windows_and_hidden_is_what_shares_time(batch):
    _, index, rows, o, c = batch
    masks = draw_masks(o, c, mask_rng(5, 0, index.anchors[rows]), default_mask_config(TFS))
    for b in range(len(rows)):
        for j, g in enumerate(TFS):
            finer_start = min((o[f][b][0] for f in TFS[:j]), default=None)
            if finer_start is not None:  # a coarse target covers no time of any finer window
                assert (c[g][b][masks.targets[g][b]] <= finer_start).all()
            t_o = np.concatenate([o[f][b][masks.targets[f][b]] for f in TFS])
            t_c = np.concatenate([c[f][b][masks.targets[f][b]] for f in TFS])
            shares = overlaps(o[g][b], c[g][b], t_o, t_c).any(axis=1)
            np.testing.assert_array_equal(masks.hidden[g][b], shares & ~masks.targets[g][b])
    assert not (masks.hidden[TFS[0]]).any()  # nothing finer than the finest TF: nothing of it is hidden


def test_spans_stay_in_the_eligible_prefix_and_leave_half_of_it_visible():
    cfg = MaskConfig(ratio={"h4": 0.25}, span_min={"h4": 1}, span_max={"h4": 4})
    limits = {"h4": np.array([0, 1, 2, 5, 40, 128] * 50)}
    out = seed_masks({"h4": (300, 128)}, np.random.default_rng(0), cfg, limits)["h4"]
    last = np.where(out.any(axis=1), 127 - np.argmax(out[:, ::-1], axis=1), -1)
    assert (last < limits["h4"]).all()  # never outside the prefix
    count = out.sum(axis=1)
    goal = np.minimum(32, (limits["h4"] + 1) // 2)
    assert (count >= goal).all() and (count <= np.maximum(goal, goal + 3)).all()
    assert (count[limits["h4"] == 0] == 0).all() and (count[limits["h4"] == 1] == 1).all()


def test_seed_spans_cover_the_ratio():
    cfg = MaskConfig(
        ratio={"m1": 0.15, "h4": 0.25}, span_min={"m1": 3, "h4": 1}, span_max={"m1": 10, "h4": 4}
    )
    seeds = seed_masks({"m1": (500, 128), "h4": (500, 128)}, np.random.default_rng(1), cfg)
    for f, target, s_max in [("m1", 19, 10), ("h4", 32, 4)]:
        count = seeds[f].sum(axis=1)
        assert (count >= target).all() and (count < target + s_max).all()
    none = seed_masks(
        {"m1": (4, 16)}, np.random.default_rng(1), MaskConfig({"m1": 0.0}, {"m1": 3}, {"m1": 10})
    )
    assert not none["m1"].any()


def test_masks_redrawn_per_epoch_fixed_per_window_and_for_eval(batch):
    _, index, rows, o, c = batch
    cfg = default_mask_config(TFS)
    ids = index.anchors[rows]
    e0 = draw_masks(o, c, mask_rng(42, 0, ids), cfg)
    e0_again = draw_masks(o, c, mask_rng(42, 0, ids), cfg)
    e1 = draw_masks(o, c, mask_rng(42, 1, ids), cfg)
    assert masks_hash(e0) != masks_hash(e0.targets)  # the hash covers the hidden bars too
    assert masks_hash(e0) == masks_hash(e0_again)  # eval: fixed mask seed -> identical, hashed
    assert masks_hash(e0) != masks_hash(e1)  # train: a new epoch redraws
    assert masks_hash(draw_masks(o, c, mask_rng(43, 0, ids), cfg)) != masks_hash(e0)
    shapes = {f: t.shape for f, t in o.items()}
    full = seed_masks(shapes, mask_rng(42, 0, ids), cfg)
    full_e1 = seed_masks(shapes, mask_rng(42, 1, ids), cfg)
    assert all((full[f] != full_e1[f]).any(axis=1).mean() > 0.9 for f in TFS)  # (almost) every window redrawn
    # A window's seed mask depends on (seed, epoch, id) only, not on the batch it is drawn in.
    part = seed_masks({f: (20, k) for f, (_, k) in shapes.items()}, mask_rng(42, 0, ids[10:30]), cfg)
    for f in TFS:
        np.testing.assert_array_equal(part[f], full[f][10:30])


def test_closure_handles_windows_spanning_centuries():
    # Packed keys would overflow int64 for such spans; close_masks must split the batch.
    b, k = 6, 3
    rng = np.random.default_rng(0)
    years = np.cumsum(rng.integers(10, 60, size=(b, k)), axis=1) - 80  # years from 1970, within int64 ns
    o = {"d": (years * 365 * 1440 * MIN).astype(np.int64)}
    c = {"d": o["d"] + 1440 * MIN}
    o["m1"] = o["d"][:, 1:2] + MIN * np.arange(4)  # four minutes inside the middle day
    c["m1"] = o["m1"] + MIN
    seeds = {"d": np.zeros((b, k), bool), "m1": np.zeros((b, 4), bool)}
    seeds["m1"][:, 2] = True
    out = close_masks(o, c, seeds, "full")
    assert out["d"][:, 1].all() and not out["d"][:, [0, 2]].any() and out["m1"].all()


def test_apply_mask_zeroes_masked_bars_and_the_checker_catches_a_leak():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(8, 32, 4))
    mask = rng.random((8, 32)) < 0.3
    inputs, flag = apply_mask(values, mask)
    assert (inputs[mask] == 0).all() and (inputs[~mask] == values[~mask]).all()
    assert flag.dtype == values.dtype and (flag == mask).all()
    assert_no_masked_leak(inputs, values, mask)
    fill = np.array([0.5, -1.0, 2.0, 0.0])
    inputs_f, _ = apply_mask(values, mask, fill)
    assert_no_masked_leak(inputs_f, values, mask, fill)

    def buggy_apply(v, m):  # forgets the last masked bar of window 3
        out, f = apply_mask(v, m)
        k = np.flatnonzero(m[3])[-1]
        out[3, k] = v[3, k]
        return out, f

    leaky, _ = buggy_apply(values, mask)
    with pytest.raises(
        InvariantViolation, match=r"masked_input_leak: 1 masked bar.*1 equal to their target.*window 3"
    ):
        assert_no_masked_leak(leaky, values, mask)
    with pytest.raises(InvariantViolation, match="masked_input_leak"):
        assert_no_masked_leak(values, values, mask)  # the legacy `mask_inputs: false` leak


def test_end_to_end_batch_pipeline_has_no_leak(batch):
    bars, index, rows, o, c = batch
    masks = draw_masks(o, c, mask_rng(0, 0, index.anchors[rows]), default_mask_config(TFS)).blanked
    w = gather_windows(bars, index, rows)
    for f in TFS:
        inputs, _ = apply_mask(w[f], masks[f])
        assert_no_masked_leak(inputs, w[f], masks[f])


def test_bad_mask_config_is_rejected():
    with pytest.raises(ConfigError, match=r"m1: need 1 <= span_min <= span_max.*ratio 1.5.*scheme 'seed'"):
        MaskConfig({"m1": 1.5}, {"m1": 5}, {"m1": 3}, scheme="seed")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"no settings for timeframes \['h4'\]"):
        draw_masks(
            {"h4": np.zeros((1, 4), np.int64)},
            {"h4": np.ones((1, 4), np.int64)},
            np.random.default_rng(0),
            default_mask_config(["m1"]),
        )


def test_the_old_closure_key_says_what_replaced_it():
    from freezelab.tasks.timeseries.config import TSConfig

    with pytest.raises(ValueError, match=r"masking.closure was replaced by masking.scheme: use scheme: seed_closure"):
        TSConfig.model_validate({"masking": {"closure": "seed"}})
    assert TSConfig.model_validate({}).masking.scheme == "disjoint"


def test_the_finest_timeframe_keeps_its_declared_ratio_even_above_one_half(batch):
    _, index, rows, o, c = batch
    cfg = default_mask_config(TFS)
    cfg = MaskConfig({**cfg.ratio, "m1": 0.7}, cfg.span_min, cfg.span_max)
    masks = draw_masks(o, c, mask_rng(1, 0, index.anchors[rows]), cfg)
    assert masks.targets["m1"].mean() >= 0.7  # no cap on the finest TF: its window is all eligible
