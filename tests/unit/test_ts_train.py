"""The training loop: frozen means frozen, unfreezing trains, per-group LRs, fp16 failures, leak checks, losses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from freezelab.errors import InvariantViolation, NumericFailure
from freezelab.freeze.param_groups import FreezeController
from freezelab.tasks.base import RunContext
from freezelab.tasks.timeseries import batches as B
from freezelab.tasks.timeseries import scoring
from freezelab.tasks.timeseries.losses import (
    consistency_index,
    consistency_loss,
    loss_counts,
    masked_huber,
    shard_index,
    shard_loss,
)
from freezelab.tasks.timeseries.masking import MaskSet
from freezelab.tasks.timeseries.task import TSTask
from freezelab.tracking.tracker import Tracker
from freezelab.utils.hashing import hash_tensor
from tests import ts_fixtures
from tests.ts_fixtures import tiny_ts_base

tiny_backbones = ts_fixtures.tiny_backbones  # the fixture


def run_task(tmp_path: Path, config: dict, *, seed: int = 0) -> dict:
    """One run in-process (no runner), returning its summary fields; exceptions propagate."""
    run_dir = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    run_dir.mkdir()
    ctx = RunContext(run_dir=run_dir, run_id="r", study="s", arm="a", seed=seed, config=config,
                     tracker=Tracker(run_dir, tensorboard=False), log=lambda m: None, progress=False)
    try:
        return TSTask().run(ctx)
    finally:
        ctx.tracker.close()


def backbone_hashes(model: torch.nn.Module) -> dict[str, str]:
    return {n: hash_tensor(p) for n, p in model.named_parameters() if n.startswith("backbone.")}


@pytest.fixture
def spy_models(monkeypatch):
    """Record the backbone hashes at every validation (after each epoch's training) and at the start."""
    seen: dict[str, list] = {"val": [], "model": []}
    original = scoring.evaluate

    def evaluate(model, data, split, **kw):
        if split == "val":
            seen["val"].append(backbone_hashes(model))
        return original(model, data, split, **kw)

    import freezelab.tasks.timeseries.train as train_mod

    monkeypatch.setattr(train_mod, "evaluate", evaluate)
    original_init = FreezeController.__init__

    def init(self, model, groups):
        seen["model"].append((model, backbone_hashes(model)))
        original_init(self, model, groups)

    monkeypatch.setattr(FreezeController, "__init__", init)
    return seen


def test_frozen_backbone_is_bit_identical_after_training(tmp_path, tiny_backbones, spy_models):
    out = run_task(tmp_path, tiny_ts_base(tiny_backbones["t5"]))
    model, start = spy_models["model"][0]
    assert spy_models["val"] == [start, start] and backbone_hashes(model) == start
    assert out["invariants"]["frozen_unchanged"] and out["params"]["by_group"]["encoder.0"]["frozen"]
    assert out["steps"] == 8 and out["epochs_run"] == 2


def test_unfrozen_backbone_changes_after_the_unfreeze_epoch(tmp_path, tiny_backbones, spy_models):
    cfg = tiny_ts_base(tiny_backbones["bert"], **{"backbone.train": "frozen_then_unfrozen",
                                                  "backbone.unfreeze_epoch": 1, "backbone.unfreeze_warmup_steps": 2})
    out = run_task(tmp_path, cfg)
    _, start = spy_models["model"][0]
    after_frozen, after_unfrozen = spy_models["val"]
    assert after_frozen == start                                     # epoch 1: frozen, bit-identical
    changed = [n for n in start if after_unfrozen[n] != start[n]]
    assert len(changed) == len(start)                                # epoch 2: every backbone tensor trained
    event = out["phases"][-1]
    assert event["event"] == "unfreeze" and event["epoch"] == 2 and event["optimizer_state"] == "reset"
    assert set(event["groups"]) == {"encoder.0", "encoder.1", "encoder.norm"} and not out["invariants"]["dead_tensors"]


@pytest.fixture
def lr_log(monkeypatch):
    """Every (lrs by group, f(s)) the loop checks (I5), one entry per applied step."""
    log: list[tuple[dict[str, float], float]] = []
    original = FreezeController.check_lrs

    def check(self, opt, base_lr, f_s=1.0):
        log.append(({pg["name"]: pg["lr"] for pg in opt.param_groups}, f_s))
        original(self, opt, base_lr, f_s)

    monkeypatch.setattr(FreezeController, "check_lrs", check)
    return log


def test_learning_rates_warmup_cosine_and_frozen_zero(tmp_path, tiny_backbones, lr_log):
    cfg = tiny_ts_base(tiny_backbones["t5"], **{"optim.warmup_steps": 3, "optim.min_lr_ratio": 0.1,
                                                "train.max_epochs": 3})
    run_task(tmp_path, cfg)
    f = B.lr_schedule(3, 12, 0.1)
    assert len(lr_log) == 12
    for s, (lrs, f_s) in enumerate(lr_log):
        assert f_s == pytest.approx(f(s))
        for name in ("embed", "head", "mask"):
            assert lrs[name] == pytest.approx(1e-3 * f(s), rel=1e-12)
        assert all(lrs[n] == 0.0 for n in ("encoder.0", "encoder.1", "encoder.norm"))
    assert [round(lr_log[s][0]["head"] / 1e-3, 6) for s in range(3)] == [round(1 / 3, 6), round(2 / 3, 6), 1.0]
    assert lr_log[-1][0]["head"] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 8 / 9))))


def test_discriminative_ratios_at_every_step(tmp_path, tiny_backbones, lr_log):
    cfg = tiny_ts_base(tiny_backbones["gpt2"], **{"backbone.train": "discriminative", "backbone.lr_scale": 0.5})
    run_task(tmp_path, cfg)
    xi = 1 / 2.6
    for lrs, f_s in lr_log:
        assert lrs["encoder.1"] == pytest.approx(1e-3 * 0.5 * f_s)
        assert lrs["encoder.0"] / lrs["encoder.1"] == pytest.approx(xi)
        assert lrs["encoder.norm"] == pytest.approx(lrs["encoder.1"])
        assert lrs["head"] == pytest.approx(1e-3 * f_s)


def test_unfreeze_warmup_ramps_the_backbone_lr(tmp_path, tiny_backbones, lr_log):
    cfg = tiny_ts_base(tiny_backbones["bert"], **{"backbone.train": "frozen_then_unfrozen",
                                                  "backbone.unfreeze_epoch": 1, "backbone.unfreeze_warmup_steps": 3,
                                                  "backbone.lr_scale": 0.1})
    run_task(tmp_path, cfg)
    assert all(lrs["encoder.0"] == 0.0 for lrs, _ in lr_log[:4])
    for j, (lrs, f_s) in enumerate(lr_log[4:]):
        ramp = min(1.0, (j + 1) / 3)
        assert lrs["encoder.0"] == pytest.approx(1e-3 * 0.1 * ramp * f_s)
        assert lrs["head"] == pytest.approx(1e-3 * f_s)


def test_fp16_overflow_fails_the_run_with_a_clear_message(tmp_path, tiny_backbones):
    cfg = tiny_ts_base(tiny_backbones["bert"], **{"runtime.precision": "fp16", "runtime.fp16_init_scale": 2.0**40})
    with pytest.raises(NumericFailure, match=r"fp16_scale_collapse: 4 of 4 steps of epoch 1 \(100%\) were skipped "
                                             r"for fp16 overflow.*zero gradients"):
        run_task(tmp_path, cfg)


class InfGrad(torch.autograd.Function):
    """Identity forward, infinite gradient backward: every fp16 step overflows."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * math.inf


def test_fp16_scale_below_one_fails(tmp_path, tiny_backbones, monkeypatch):
    import freezelab.tasks.timeseries.train as train_mod

    original = train_mod.masked_huber
    monkeypatch.setattr(train_mod, "masked_huber", lambda *a, **k: (InfGrad.apply(original(*a, **k)[0]), {}))
    cfg = tiny_ts_base(tiny_backbones["bert"], **{"runtime.precision": "fp16", "runtime.fp16_init_scale": 4.0})
    with pytest.raises(NumericFailure, match=r"loss scale fell to 0.5 \(< 1\) at epoch 1, step 3"):
        run_task(tmp_path, cfg)


def test_fp16_trains_and_logs_its_scale(tmp_path, tiny_backbones):
    out = run_task(tmp_path, tiny_ts_base(tiny_backbones["bert"], **{"runtime.precision": "fp16"}))
    assert out["numerics"]["fp16_final_scale"] >= 1 and out["numerics"]["nonfinite_or_overflow_steps"] == 0
    lines = (next(tmp_path.glob("run*")) / "metrics.jsonl").read_text().splitlines()
    assert sum('"fp16/scale"' in ln for ln in lines) >= 8          # every step and every epoch


def test_injected_input_leak_is_caught_in_training(tmp_path, tiny_backbones, monkeypatch):
    original = B.apply_mask

    def leaky(values, mask, fill=None):
        inputs, flag = original(values, mask, fill)
        b, k = np.argwhere(mask)[0]
        inputs[b, k] = values[b, k]                               # one masked bar keeps its true value
        return inputs, flag

    monkeypatch.setattr(B, "apply_mask", leaky)
    with pytest.raises(InvariantViolation, match="masked_input_leak: 1 masked bar"):
        run_task(tmp_path, tiny_ts_base(tiny_backbones["bert"]))


def test_non_finite_losses_fail_after_k_in_a_row(tmp_path, tiny_backbones, monkeypatch):
    import freezelab.tasks.timeseries.train as train_mod

    original = train_mod.masked_huber
    monkeypatch.setattr(train_mod, "masked_huber", lambda *a, **k: (original(*a, **k)[0] * math.nan, {}))
    with pytest.raises(NumericFailure, match="non_finite: 3 consecutive non-finite"):
        run_task(tmp_path, tiny_ts_base(tiny_backbones["bert"]))


def test_same_seed_same_losses(tmp_path, tiny_backbones):
    cfg = tiny_ts_base(tiny_backbones["bert"], **{"backbone.train": "finetune", "train.max_epochs": 1})
    a, b = run_task(tmp_path, cfg), run_task(tmp_path, cfg)
    assert a["best"]["metrics"] == b["best"]["metrics"] and a["test"] == b["test"]


# ----------------------------------------------------------------------------- losses
def test_masked_huber_leaves_out_tfs_with_nothing_masked():
    pred = {"h1": torch.zeros(2, 4, 4), "h4": torch.zeros(2, 4, 4)}
    target = {"h1": torch.ones(2, 4, 4), "h4": torch.full((2, 4, 4), 3.0)}
    masks = {"h1": torch.zeros(2, 4, dtype=torch.bool), "h4": torch.zeros(2, 4, dtype=torch.bool)}
    masks["h4"][0, 1] = True
    loss, per_tf = masked_huber(pred, target, masks)
    assert per_tf == {"h4": 2.5} and float(loss) == 2.5       # Huber(3) = 3 − 0.5, h1 not scored as 0
    masks["h1"][1, 0] = True
    loss, per_tf = masked_huber(pred, target, masks, weights={"h1": 3.0, "h4": 1.0})
    assert float(loss) == pytest.approx((3 * 0.5 + 2.5) / 4)


def test_consistency_is_zero_for_perfect_predictions(tiny_backbones):
    from freezelab.tasks.timeseries.config import TSConfig

    cfg = TSConfig.model_validate(tiny_ts_base(tiny_backbones["bert"]))
    data = B.load_data(cfg, log=lambda m: None)
    part = data.part("train")
    batch = B.make_batch(data, part, np.arange(64), seed=0, epoch=1, with_n_sub=True)
    blanked = batch.blanked
    index = consistency_index(batch.open_times, batch.close_times, batch.n_sub, blanked)
    assert sum(int(valid.sum()) for *_, valid, _ in index) > 0
    for _, g, _, _, _, valid, _ in index:                        # never scored against a visible coarse bar
        assert not (valid & ~blanked[g]).any()
    exact = consistency_loss(batch.targets, batch.targets, index, data.stats.scale_bp)
    assert float(exact) < 1e-8                                   # aggregation over real bar boundaries is exact
    noisy = {f: t + 0.5 * batch.masks[f][..., None] for f, t in batch.targets.items()}
    assert float(consistency_loss(noisy, batch.targets, index, data.stats.scale_bp)) > 0.01
    visible_noise = {f: t + 0.5 * torch.from_numpy(~blanked[f])[..., None] for f, t in batch.targets.items()}
    assert float(consistency_loss(visible_noise, batch.targets, index, data.stats.scale_bp)) < 1e-8  # inputs read


def test_data_parallel_shares_of_the_loss_add_up_to_the_whole_batch_loss_and_gradient(tiny_backbones):
    """runtime.devices: the shards' shares (each over the whole batch's counts) sum to masked_huber + λ·consistency
    of the whole batch, value and gradient, with uneven shards and a shard where a TF has nothing masked."""
    from freezelab.tasks.timeseries.config import TSConfig

    cfg = TSConfig.model_validate(tiny_ts_base(tiny_backbones["bert"]))
    data = B.load_data(cfg, log=lambda m: None)
    batch = B.make_batch(data, data.part("train"), np.arange(23), seed=0, epoch=1, with_n_sub=True)
    batch.masks["d"][:9] = False                     # shard 0 (rows 0-8): no d target and no valid (h4, d) bar
    batch.hidden["d"][:9] = False
    index = consistency_index(batch.open_times, batch.close_times, batch.n_sub, batch.blanked)
    gen = torch.Generator().manual_seed(0)
    pred = {f: (t + 0.7 * torch.randn(t.shape, generator=gen)).requires_grad_() for f, t in batch.targets.items()}
    weights, lam = {"h1": 1.0, "h4": 2.0, "d": 0.5}, 0.3
    whole, per_tf = masked_huber(pred, batch.targets, batch.masks, weights=weights)
    whole = whole + lam * consistency_loss(pred, batch.targets, index, data.stats.scale_bp)
    expected = torch.autograd.grad(whole, list(pred.values()))
    counts = loss_counts(batch.masks, index)
    assert counts[0]["d"] and counts[1][1] and not loss_counts({}, shard_index(index, 0, 9))[1][1]
    total, tf_sums, grads = 0.0, {}, {f: [] for f in pred}
    for lo, hi in ((0, 9), (9, 10), (10, 23)):
        part = {f: p[lo:hi].detach().requires_grad_() for f, p in pred.items()}
        share, shares = shard_loss(part, {f: t[lo:hi] for f, t in batch.targets.items()},
                                   {f: m[lo:hi] for f, m in batch.masks.items()}, shard_index(index, lo, hi),
                                   data.stats.scale_bp, counts, weights=weights, consistency_weight=lam)
        for f, g in zip(part, torch.autograd.grad(share, list(part.values()))):  # every TF in every shard's graph
            grads[f].append(g)
        total += float(share.detach())
        for f, v in shares.items():
            tf_sums[f] = tf_sums.get(f, 0.0) + float(v)
    assert total == pytest.approx(float(whole.detach()), rel=1e-6)
    assert tf_sums == pytest.approx(per_tf, rel=1e-6)
    for f, g in zip(pred, expected):
        assert torch.allclose(torch.cat(grads[f]), g, rtol=1e-5, atol=1e-8), f


def test_eval_masks_are_fixed_and_baselines_use_them(tiny_backbones):
    from freezelab.tasks.timeseries.config import TSConfig

    cfg = TSConfig.model_validate(tiny_ts_base(tiny_backbones["bert"]))
    a, b = B.load_data(cfg, log=lambda m: None), B.load_data(cfg, log=lambda m: None)
    assert a.hashes == b.hashes
    base = scoring.score_baselines(a, batch_size=16)
    other = scoring.score_baselines(b, batch_size=1000)          # batching does not change the scores
    for name in base:
        assert base[name] == pytest.approx(other[name], rel=1e-12, nan_ok=True)
    for name in ("persistence", "interpolation"):
        assert {"val/mse", "test/mse", "test/mse/h1", "test/corr/d", "test/r2", "test/n_points/h4"} <= set(base[name])
    assert base["interpolation"]["test/mse"] < base["persistence"]["test/mse"]


def test_windows_with_nothing_visible_are_left_out(tiny_backbones):
    from freezelab.tasks.timeseries.config import TSConfig

    cfg = TSConfig.model_validate(tiny_ts_base(tiny_backbones["bert"]))
    data = B.load_data(cfg, log=lambda m: None)
    part = data.part("train")
    rows = np.arange(8)
    targets = {f: np.zeros((8, k), dtype=bool) for f, k in cfg.windows.context.items()}
    for m in targets.values():
        m[3] = True                                              # window 3: every bar of every TF masked
    batch = B.make_batch(data, part, rows, MaskSet(targets, {f: np.zeros_like(m) for f, m in targets.items()}))
    assert batch.n_dropped == 1 and len(batch) == 7
    assert data.info["eval_fully_masked_windows"].keys() == {"val", "test"}


def test_unknown_selection_metric_is_a_config_error(tmp_path, tiny_backbones):
    from freezelab.errors import ConfigError

    cfg = tiny_ts_base(tiny_backbones["bert"], **{"train.selection_metric": "val/mse/h2", "train.max_epochs": 1})
    with pytest.raises(ConfigError, match=r"train.selection_metric='val/mse/h2' is not a validation metric"):
        run_task(tmp_path, cfg)


def test_cuda_requested_without_cuda_is_an_error_not_a_cpu_run(tmp_path, tiny_backbones, monkeypatch):
    from freezelab.errors import ConfigError
    from freezelab.utils.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"runtime.device=cuda, but CUDA is not available.*runtime.device: auto"):
        run_task(tmp_path, tiny_ts_base(tiny_backbones["bert"], **{"runtime.device": "cuda"}))
    assert resolve_device("auto").type == resolve_device("cpu").type == "cpu"


def test_a_run_whose_leak_free_scheme_leaks_fails_loudly(tmp_path, tiny_backbones, monkeypatch):
    """Plant the fault: the scheme says disjoint, the drawn masks are the old one-step closure."""
    from freezelab.tasks.timeseries import masking

    real = masking.draw_masks

    def leaky(o, c, rng, cfg, padding=None):
        return real(o, c, rng, masking.MaskConfig(cfg.ratio, cfg.span_min, cfg.span_max, scheme="seed_closure"),
                    padding)
    monkeypatch.setattr(B, "draw_masks", leaky)
    with pytest.raises(InvariantViolation, match=r"masked_time_leak: masking.scheme=disjoint leaked on train"):
        run_task(tmp_path, tiny_ts_base(tiny_backbones["bert"], **{"train.max_epochs": 1}))
