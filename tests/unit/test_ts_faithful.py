"""The original's behaviours as named options, each tested against what it reproduces (spec §2, §3, §10).

- ``masking.mask_inputs: false``: the true values of masked bars reach the model (its output moves with them);
  with the default it provably does not (bit-identical output whatever the masked bars hold).
- ``masking.scheme: legacy_index_sync``: the same slots in every timeframe, fixed per window, and it leaks.
- ``windows.layout: legacy``: consecutive base bars, coarser bars by open time, left padding, and the
  look-ahead really looks ahead.
- ``data.normalisation``: whole-period stats really include val/test; none is the raw price.
- ``model.channels``: the values the docs promise, and never a blanked bar's value.

Expected values are computed here from the bars by brute force, never read from the code under test.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from freezelab.tasks.timeseries import batches as B
from freezelab.tasks.timeseries.bars import NS_PER_MINUTE, Bars, resample, synthetic_bars
from freezelab.tasks.timeseries.config import TSConfig
from freezelab.tasks.timeseries.legacy_windows import build_legacy_index
from freezelab.tasks.timeseries.masking_audit import audit_masks, masking_problems
from freezelab.tasks.timeseries.task import build_model
from freezelab.tasks.timeseries.windows import gather_windows
from tests import ts_fixtures
from tests.ts_fixtures import tiny_ts_base

tiny_backbones = ts_fixtures.tiny_backbones  # the fixture
LEGACY = {"windows.layout": "legacy", "windows.context": {"h1": 16, "h4": 16, "d": 16}}
ORIGINAL = {**LEGACY, "masking.scheme": "legacy_index_sync", "masking.mask_inputs": False,
            "data.normalisation": "none"}


def config(path, **over) -> TSConfig:
    return TSConfig.model_validate(tiny_ts_base(path, **over))


def load(path, **over) -> B.TSData:
    return B.load_data(config(path, **over), log=lambda m: None)


def eval_batch(data: B.TSData, n: int = 24) -> B.Batch:
    rows = data.eval_rows["val"][:n]
    return B.make_batch(data, data.part("val"), rows, data.eval_masks["val"].select(slice(0, n)))


def perturb_targets(data: B.TSData, batch_rows: np.ndarray, masks) -> B.TSData:
    """A copy of ``data`` whose bars at the val windows' target slots are moved by +1 % (prices stay valid)."""
    from freezelab.tasks.timeseries.windows import window_rows

    part, bars = data.part("val"), {}
    for f, b in data.bars.items():
        rows = window_rows(part, f, batch_rows)[masks.targets[f]]
        ohlc = b.ohlc.copy()
        ohlc[rows[rows >= 0]] *= 1.01
        bars[f] = Bars(f, b.open_time, b.close_time, ohlc, b.n_sub)
    return replace(data, bars=bars)


def model_output(cfg: TSConfig, batch: B.Batch) -> dict[str, torch.Tensor]:
    model, _ = build_model(cfg, seed=0)
    model.eval()
    with torch.no_grad():
        return model(batch.inputs, batch.flags, batch.minutes)


# ----------------------------------------------------------------------------- mask_inputs: false


@pytest.mark.parametrize("channels", [[], ["log_range", "log_return"]])
@pytest.mark.parametrize("layout", [{}, LEGACY])
def test_masked_values_change_the_output_only_with_mask_inputs_false(tiny_backbones, channels, layout):
    """Move the true values of the scored bars: the default's output is bit-identical, the leak's is not."""
    diffs = {}
    for mask_inputs in (True, False):
        over = {**layout, "masking.mask_inputs": mask_inputs, "model.channels": channels}
        cfg = config(tiny_backbones["bert"], **over)
        data = B.load_data(cfg, log=lambda m: None)
        diffs[mask_inputs] = 0.0
        for i in range(6):  # one window at a time: a target of one window may be a visible bar of another
            rows, masks = data.eval_rows["val"][i:i + 1], data.eval_masks["val"].select(slice(i, i + 1))
            assert sum(int(m.sum()) for m in masks.targets.values()) > 0
            before = model_output(cfg, B.make_batch(data, data.part("val"), rows, masks))
            moved = perturb_targets(data, rows, masks)
            after = model_output(cfg, B.make_batch(moved, moved.part("val"), rows, masks))
            diffs[mask_inputs] = max(diffs[mask_inputs], *(float((before[f] - after[f]).abs().max()) for f in before))
    assert diffs[True] == 0.0
    assert diffs[False] > 1e-4


def test_mask_inputs_false_feeds_the_unmasked_window(tiny_backbones):
    data = load(tiny_backbones["bert"], **{"masking.mask_inputs": False})
    batch = eval_batch(data)
    for f in data.tfs:
        assert batch.masks[f].any()
        torch.testing.assert_close(batch.inputs[f], batch.targets[f], rtol=0, atol=0)  # true values everywhere
        assert float(batch.flags[f].abs().sum()) == 0.0  # and no mask flag: the original's input


def test_mask_inputs_false_is_measured_and_reported_as_a_leak(tiny_backbones):
    data = load(tiny_backbones["bert"], **{"masking.mask_inputs": False})
    audit = audit_masks(data, seed=0, batch_size=64)
    assert audit["mask_inputs"] is False and not audit["leak_free"]
    for per_tf in audit["splits"].values():
        for v in per_tf.values():
            assert v["visible_targets"] == v["targets"] > 0
            assert v["oracle_mse"] < 1e-12  # the oracle reads the targets themselves
    lines = masking_problems(audit, mask_inputs=False)  # recorded, not raised: the option exists to show it
    assert any("mask_inputs=false" in line for line in lines)
    default = audit_masks(load(tiny_backbones["bert"]), seed=0, batch_size=64)
    assert default["leak_free"] and all(v["visible_targets"] == 0 for s in default["splits"].values()
                                        for v in s.values())


# ----------------------------------------------------------------------------- legacy_index_sync


def test_index_sync_masks_are_the_same_slots_in_every_timeframe(tiny_backbones):
    data = load(tiny_backbones["bert"], **{**LEGACY, "masking.scheme": "legacy_index_sync"})
    batch = B.make_batch(data, data.part("train"), np.arange(64), seed=0, epoch=1)
    base = batch.masks["h1"].numpy()  # h1 has no padding: its 16 slots are the drawn positions
    for f in ("h4", "d"):
        m, pad = batch.masks[f].numpy(), batch.padding[f]
        np.testing.assert_array_equal(m, base & ~pad)  # the same positions, ANDed with "not padding"
        assert not (m & pad).any()
    frac = base.mean()
    assert 0.15 <= frac <= 0.3  # round(0.15 · 16) = 2 bars at least, spans 1..4 (h1 is not an m1-m15 TF)


def test_index_sync_slots_are_right_aligned_when_lengths_differ(tiny_backbones):
    data = load(tiny_backbones["bert"], **{"masking.scheme": "legacy_index_sync"})  # h1 16, h4 8, d 4
    batch = B.make_batch(data, data.part("train"), np.arange(64), seed=0, epoch=1)
    h1 = batch.masks["h1"].numpy()
    np.testing.assert_array_equal(batch.masks["h4"].numpy(), h1[:, 8:])
    np.testing.assert_array_equal(batch.masks["d"].numpy(), h1[:, 12:])


def test_index_sync_masks_are_fixed_across_epochs_and_seeds(tiny_backbones):
    data = load(tiny_backbones["bert"], **{"masking.scheme": "legacy_index_sync"})
    rows = np.arange(32)
    first = B.make_batch(data, data.part("train"), rows, seed=0, epoch=1).masks["h1"]
    for seed, epoch in ((0, 2), (7, 5)):
        assert torch.equal(B.make_batch(data, data.part("train"), rows, seed=seed, epoch=epoch).masks["h1"], first)
    redrawn = load(tiny_backbones["bert"])  # the default redraws every epoch: the check can fail
    a = B.make_batch(redrawn, redrawn.part("train"), rows, seed=0, epoch=1).masks["h1"]
    b = B.make_batch(redrawn, redrawn.part("train"), rows, seed=0, epoch=2).masks["h1"]
    assert not torch.equal(a, b)


def test_index_sync_leak_is_measured_and_does_not_fail_the_run(tiny_backbones):
    data = load(tiny_backbones["bert"], **{"masking.scheme": "legacy_index_sync"})
    audit = audit_masks(data, seed=0, batch_size=64)
    assert audit["scheme"] == "legacy_index_sync" and not audit["leak_free"]
    leaked = sum(v["leaked_targets"] for s in audit["splits"].values() for v in s.values())
    assert leaked > 0
    assert any("masking leak (legacy_index_sync" in line for line in masking_problems(audit))


# ----------------------------------------------------------------------------- window: legacy


def legacy_bars(n: int = 1500) -> dict[str, Bars]:
    h1 = synthetic_bars(n, tf="h1", seed=3)
    return {f: resample(h1, f) for f in ("h1", "h4", "d")}


def test_legacy_windows_are_consecutive_base_bars_and_coarser_bars_by_open_time():
    bars = legacy_bars()
    k = {"h1": 24, "h4": 16, "d": 8}
    index = build_legacy_index(bars, base_tf="h1", context=k)
    h1 = bars["h1"]
    assert len(index) == len(h1) - 24 + 1  # every base bar ends a window: no gap rule, no rejection
    gaps = np.diff(h1.open_time) > 60 * NS_PER_MINUTE
    crossing = 0
    rng = np.random.default_rng(0)
    for i in rng.choice(len(index), 60, replace=False):
        first, last = i, i + 23  # base rows of window i
        crossing += bool(gaps[first:last].any())
        t0, t1 = h1.open_time[first], h1.open_time[last]
        assert index.anchors[i] == h1.close_time[last]
        for f in ("h4", "d"):
            o = bars[f].open_time
            expected = np.flatnonzero((o >= t0) & (o <= t1))[-k[f]:]  # by open time, newest K_f kept
            real = np.arange(index.start[f][i], index.end[f][i])
            np.testing.assert_array_equal(real, expected)
    assert crossing > 0  # windows spanning a weekend are kept, as in the original


def test_legacy_padding_is_left_zero_and_never_masked_or_scored(tiny_backbones):
    data = load(tiny_backbones["bert"], **LEGACY)
    part, rows = data.part("train"), np.arange(64)
    raw = gather_windows(data.bars, part, rows)
    batch = B.make_batch(data, part, rows, seed=0, epoch=1)
    pad = batch.padding["d"]
    assert pad.any() and not batch.padding["h1"].any()
    # Right-aligned: every padding slot comes before every real slot of its window.
    first_real = np.argmax(~pad, axis=1)
    assert all(pad[b, :first_real[b]].all() and not pad[b, first_real[b]:].any() for b in range(len(pad))
               if (~pad[b]).any())
    assert np.isnan(raw["d"][pad]).all() and not np.isnan(raw["d"][~pad]).any()
    assert float(batch.inputs["d"][torch.from_numpy(pad)].abs().sum()) == 0.0
    assert float(batch.targets["d"][torch.from_numpy(pad)].abs().sum()) == 0.0
    assert not (batch.masks["d"].numpy() & pad).any() and not (batch.hidden["d"] & pad).any()
    assert not (batch.visible["d"] & pad).any()  # baselines never read padding


def test_the_legacy_window_looks_ahead():
    """The last coarse bar opened inside the window carries base bars from after it: rebuild it from the
    window's own base bars and it differs, from the bars up to its close and it matches."""
    bars = legacy_bars()
    index = build_legacy_index(bars, base_tf="h1", context={"h1": 24, "h4": 16, "d": 8})
    h1, d = bars["h1"], bars["d"]
    ahead = 0
    for i in range(0, len(index), 37):
        last_row = index.end["d"][i] - 1
        if last_row < index.start["d"][i]:
            continue
        o, c, anchor = d.open_time[last_row], d.close_time[last_row], index.anchors[i]
        inside = (h1.open_time >= o) & (h1.close_time <= anchor)
        whole = (h1.open_time >= o) & (h1.close_time <= c)
        np.testing.assert_allclose(d.ohlc[last_row, 1], h1.ohlc[whole, 1].max())
        if c > anchor and whole.sum() > inside.sum():
            ahead += 1
            seen = [h1.ohlc[inside, 0][0], h1.ohlc[inside, 1].max(), h1.ohlc[inside, 2].min(), h1.ohlc[inside, 3][-1]]
            assert not np.allclose(d.ohlc[last_row], seen)  # the close (at least) comes from after the window
    assert ahead > 10
    anchored = B.tswin.build_window_index(bars, base_tf="h1", context={"h1": 24, "h4": 6, "d": 2})
    last = {f: anchored.end[f] - 1 for f in ("h4", "d")}  # the corrected window never does
    assert all((bars[f].close_time[r] <= anchored.anchors).all() for f, r in last.items())


def test_legacy_facts_and_embargo_respect_the_look_ahead(tiny_backbones):
    data = load(tiny_backbones["bert"], **LEGACY)
    facts = data.info["legacy"]
    assert facts["look_ahead_share"]["d"] > 0.5 and facts["look_ahead_max_minutes"]["d"] > 60
    assert facts["look_ahead_share"]["h1"] == 0.0
    index = data.split.index
    train_last = max(data.bars[f].close_time[index.end[f][data.split.rows["train"]] - 1].max() for f in data.tfs)
    val = data.split.rows["val"]
    val_first = min(data.bars[f].open_time[index.start[f][val]][index.start[f][val] < index.end[f][val]].min()
                    for f in data.tfs)
    assert val_first >= train_last  # the embargo counts the bars the look-ahead reaches


def test_legacy_with_the_disjoint_scheme_stays_leak_free(tiny_backbones):
    """Padding carries no value, so it is never 'visible': the leak-free scheme stays leak-free on it."""
    audit = audit_masks(load(tiny_backbones["bert"], **LEGACY), seed=0, batch_size=64)
    assert audit["leak_free"], audit


# ----------------------------------------------------------------------------- normalisation


def test_whole_period_stats_include_val_and_test(tiny_backbones):
    """Change prices after the train period: whole-period stats move, train-only stats do not."""
    from freezelab.tasks.timeseries.normalise import fit_norm_stats

    data = load(tiny_backbones["bert"])
    cut = data.part("train").anchors.max()
    later = {}
    for f, b in data.bars.items():
        ohlc = b.ohlc.copy()
        ohlc[b.open_time > cut] *= 1.5
        later[f] = Bars(f, b.open_time, b.close_time, ohlc, b.n_sub)
    split = replace(data.split)
    for kind, moves in (("whole_period", True), ("train_only", False)):
        a, b = fit_norm_stats(data.bars, split, kind=kind), fit_norm_stats(later, split, kind=kind)
        assert (a.scale_bp != b.scale_bp) == moves, kind
    whole = fit_norm_stats(data.bars, split, kind="whole_period")
    for f, b in data.bars.items():  # z-scored with every bar of the file
        assert whole.offset[f] == pytest.approx(b.ohlc.mean()) and whole.scale_bp[f] == pytest.approx(b.ohlc.std())


@pytest.mark.parametrize("kind", ["none", "whole_period"])
def test_legacy_normalisations_keep_the_price_level(tiny_backbones, kind):
    data = load(tiny_backbones["bert"], **{"data.normalisation": kind})
    batch = eval_batch(data)
    part, rows = data.part("val"), data.eval_rows["val"][:24]
    raw = gather_windows(data.bars, part, rows)
    for f in data.tfs:
        z = batch.targets[f].numpy().astype(np.float64)
        if kind == "none":
            np.testing.assert_allclose(z, raw[f], rtol=1e-6)  # raw prices (float32)
        else:
            mean, std = data.bars[f].ohlc.mean(), data.bars[f].ohlc.std()
            np.testing.assert_allclose(z, (raw[f] - mean) / std, rtol=1e-5, atol=1e-5)
    assert data.hashes["eval_hash"] != load(tiny_backbones["bert"]).hashes["eval_hash"]  # other units, other items


def test_consistency_term_needs_level_free_units(tiny_backbones):
    with pytest.raises(ValueError, match="consistency_weight needs data.normalisation: train_only"):
        config(tiny_backbones["bert"], **{"data.normalisation": "none", "loss.consistency_weight": 0.1})


# ----------------------------------------------------------------------------- channels


def test_log_channels_hold_what_the_docs_say_and_never_a_blanked_bar(tiny_backbones):
    data = load(tiny_backbones["bert"], **{"model.channels": ["log_range", "log_return"]})
    batch = eval_batch(data)
    raw = gather_windows(data.bars, data.part("val"), data.eval_rows["val"][:24])
    for f in data.tfs:
        x = batch.inputs[f].numpy().astype(np.float64)  # (B, K, 6)
        blanked = batch.blanked[f]
        p = raw[f]
        rng_ = 100 * np.log(p[..., 1] / p[..., 2])
        ret = np.zeros(rng_.shape)
        ret[:, 1:] = 100 * np.log(p[:, 1:, 3] / p[:, :-1, 3])
        after_blank = np.zeros_like(blanked)
        after_blank[:, 1:] = blanked[:, :-1]
        np.testing.assert_allclose(x[..., 4][~blanked], rng_[~blanked], rtol=1e-5, atol=1e-6)
        ok = ~blanked & ~after_blank
        np.testing.assert_allclose(x[..., 5][ok], ret[ok], rtol=1e-5, atol=1e-6)
        assert (x[..., 4][blanked] == 0).all() and (x[..., 5][blanked | after_blank] == 0).all()
        assert blanked.any() and after_blank[~blanked].any()
    model, _ = build_model(config(tiny_backbones["bert"], **{"model.channels": ["log_range", "log_return"]}), seed=0)
    assert model.patch["h1"].in_features == 4 * (5 + 2)


def test_the_leak_really_leaks_in_training(tmp_path, tiny_backbones):
    """Trained on the same budget, the unmasked-input run reconstructs far better than linear interpolation;
    the masked one does not: the scores of mask_inputs=false measure copying."""
    from tests.unit.test_ts_train import run_task

    over = {"backbone.kind": "none", "train.max_epochs": 4, "train.batch_size": 32, "train.steps_per_epoch": 25,
            "optim.lr": 1e-2, "optim.warmup_steps": 5}
    skill = {mi: run_task(tmp_path, tiny_ts_base(tiny_backbones["bert"], **over, **{"masking.mask_inputs": mi}))
             ["test"]["test/skill_interpolation"] for mi in (True, False)}
    assert skill[False] > 0.5 and skill[False] > skill[True] + 0.4, skill


def test_baselines_fall_back_to_the_ref_price_not_zero_when_the_level_stays(tiny_backbones):
    """Raw prices: a timeframe with no visible bar in a window is predicted at the window's ref price (the last
    visible base close), as 0 means the ref in level-free units; predicting 0 would be an absurd baseline."""
    from freezelab.tasks.timeseries.masking import MaskSet
    from freezelab.tasks.timeseries.scoring import baseline_predictions

    data = load(tiny_backbones["bert"], **{"data.normalisation": "none"})
    part, rows = data.part("val"), data.eval_rows["val"][:8]
    masks = data.eval_masks["val"].select(slice(0, 8))
    targets = dict(masks.targets)
    targets["d"] = np.ones_like(targets["d"])  # every daily bar a target: nothing visible on d
    batch = B.make_batch(data, part, rows, MaskSet(targets, {f: np.zeros_like(m) for f, m in targets.items()}))
    raw = gather_windows(data.bars, part, rows)
    visible_h1 = ~targets["h1"]
    last = visible_h1.shape[1] - 1 - np.argmax(visible_h1[:, ::-1], axis=1)
    ref = raw["h1"][np.arange(8), last, 3]
    for name in ("persistence", "interpolation"):
        pred = baseline_predictions(batch, name)["d"]
        np.testing.assert_allclose(pred, np.broadcast_to(ref[:, None, None], pred.shape), rtol=1e-6)


def test_fields_documents_every_faithful_option():
    from typer.testing import CliRunner

    from freezelab.cli import app

    res = CliRunner().invoke(app, ["fields", "timeseries"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for key, words in (("windows.layout", "look-ahead"), ("masking.scheme", "legacy_index_sync"),
                       ("masking.mask_inputs", "true values"), ("data.normalisation", "whole_period"),
                       ("model.channels", "log_range")):
        line = text.split(key, 1)[1][:700]
        assert words in line, (key, line)
