"""Phase 1 (CVFP): stop rule, reproducibility, where noise goes, what contexts come out."""

from __future__ import annotations

import math

import pytest
import torch

from freezelab.errors import ConfigError
from freezelab.tasks.lm.model import ContextBlock
from freezelab.tasks.lm.phase1 import Phase1Config, diversity_loss, train_phase1
from freezelab.tasks.lm.recurrence import contexts_per_document, contexts_stream_sequential

OFFSETS = torch.tensor([0, 100, 250, 400, 600])
D = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def make_inputs(seed: int = 0) -> tuple[ContextBlock, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    block = ContextBlock(D, D, 2, generator=gen)
    x = torch.nn.functional.layer_norm(torch.randn(600, D, generator=gen), (D,))  # (N, d_e)
    return block, x


def run(cfg: Phase1Config, noise_seed: int = 1, **kw):
    block, x = make_inputs()
    result = train_phase1(block, x, OFFSETS, cfg, generator=torch.Generator().manual_seed(noise_seed), **kw)
    return block, x, result


def test_stops_at_min_iterations_once_converged() -> None:
    cfg = Phase1Config(max_iterations=10, min_iterations=4, convergence_threshold=1e9, chunk_rows=128)
    _, _, result = run(cfg)
    assert result.iterations == 4 and len(result.history) == 4
    assert result.converged and result.stopped_early
    assert result.converged_ratio == 1.0 and result.converged_tokens == 600
    assert [h["iteration"] for h in result.history] == [0, 1, 2, 3]
    assert result.history[0]["conv_rate"] is None  # no target at k = 0


def test_runs_to_max_iterations_without_convergence() -> None:
    cfg = Phase1Config(max_iterations=5, min_iterations=3, convergence_threshold=0.0, chunk_rows=128)
    seen = []
    _, _, result = run(cfg, on_iteration=seen.append)
    assert result.iterations == 5 and not result.converged and not result.stopped_early
    assert seen == result.history
    assert all(h["skipped_chunks"] == 0 and h["seconds"] >= 0 for h in seen)
    assert seen[1]["conv_rate"] == 0.0


@pytest.mark.parametrize("min_iterations", [2, 4])
def test_stop_rule_uses_ratio(min_iterations: int) -> None:
    cfg = Phase1Config(max_iterations=6, min_iterations=min_iterations, min_converged_ratio=0.9, chunk_rows=128)
    _, _, result = run(cfg)
    rates = {h["iteration"]: h["conv_rate"] for h in result.history[1:]}
    stop = next((k for k, r in rates.items() if k + 1 >= min_iterations and r >= 0.9), None)
    assert result.iterations == (stop + 1 if stop is not None else cfg.max_iterations)
    assert result.converged == (stop is not None)
    if min_iterations == 2:  # r_1 is high before any update (the seed's "100 % at k = 1")
        assert rates[1] >= 0.9 and result.iterations == 2


def test_diversity_loss_decreases_and_losses_are_logged() -> None:
    cfg = Phase1Config(max_iterations=8, min_iterations=8, chunk_rows=128, dist_reg_weight=0.5)
    _, _, result = run(cfg)
    div = [h["div_loss"] for h in result.history[1:]]
    assert all(b < a for a, b in zip(div, div[1:]))  # Adam spreads the contexts out every step
    first = result.history[1]
    assert first["cvfp_loss"] > 0 and math.isclose(first["loss"], 0.5 * first["cvfp_loss"] + 0.5 * first["div_loss"])
    assert all(h["grad_norm"] > 0 for h in result.history[1:])


def test_zero_noise_pure_cvfp_is_already_a_fixed_point() -> None:
    # Without noise, C¹ = C⁰ exactly (same parameters, exact shifted inputs): loss 0, all rows converged.
    cfg = Phase1Config(max_iterations=3, min_iterations=2, noise_std=0.0, dist_reg_weight=0.0, chunk_rows=128)
    _, _, result = run(cfg)
    assert result.history[1]["cvfp_loss"] < 1e-10 and result.history[1]["conv_rate"] == 1.0


def test_same_seed_is_bitwise_identical_other_seed_differs() -> None:
    cfg = Phase1Config(max_iterations=4, min_iterations=4, chunk_rows=128)
    block_a, _, a = run(cfg, noise_seed=3)
    block_b, _, b = run(cfg, noise_seed=3)
    block_c, _, c = run(cfg, noise_seed=4)
    assert torch.equal(a.contexts, b.contexts)
    for pa, pb in zip(block_a.parameters(), block_b.parameters()):
        assert torch.equal(pa, pb)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in b.history]
    assert not torch.equal(a.contexts, c.contexts)


def test_noise_only_in_training_passes_and_final_contexts_are_exact() -> None:
    cfg = Phase1Config(max_iterations=3, min_iterations=3, noise_std=1.0, chunk_rows=128)
    block0, x = make_inputs()
    exact_initial = contexts_per_document(block0, x, OFFSETS, all_layers=False)
    iterates: dict[int, torch.Tensor] = {}
    x_val = x[:250]
    block, _, result = run(cfg, on_contexts=lambda k, c: iterates.__setitem__(k, c.clone()),
                           x_val=x_val, offsets_val=OFFSETS[:3])  # fmt: skip
    assert torch.equal(iterates[0], exact_initial)  # k = 0: no noise
    assert not torch.allclose(iterates[1], exact_initial, atol=1e-3)  # k = 1: noisy inputs
    # Returned contexts: final parameters, noise-free, exact, all layers.
    assert result.contexts.shape == (600, 2, D)
    assert torch.equal(result.contexts, contexts_per_document(block, x, OFFSETS))
    assert torch.equal(result.val_contexts, contexts_per_document(block, x_val, OFFSETS[:3]))
    assert result.final_method == "per_document"
    assert not torch.allclose(result.contexts[:, -1], iterates[2], atol=1e-3)  # C^K is not what we return


def wide_inputs() -> tuple[ContextBlock, torch.Tensor]:
    """A block wide enough to forget within ~10 tokens, so Jacobi sweeps converge fast."""
    gen = torch.Generator().manual_seed(0)
    block = ContextBlock(64, 64, 6, generator=gen)
    return block, torch.nn.functional.layer_norm(torch.randn(300, 64, generator=gen), (64,))


def test_stream_mode_with_wraparound() -> None:
    block, x = wide_inputs()
    cfg = Phase1Config(max_iterations=3, min_iterations=3, reset="stream", wraparound=True,
                       iter0="jacobi", chunk_rows=128)  # fmt: skip
    result = train_phase1(block, x, None, cfg, generator=torch.Generator().manual_seed(1))
    assert result.history[0]["method"] == "stream_jacobi" and result.history[0]["jacobi_sweeps"] >= 1
    assert result.final_method == "stream_jacobi"
    torch.testing.assert_close(result.contexts, contexts_stream_sequential(block, x), atol=1e-4, rtol=0)


def test_stream_mode_falls_back_loudly_when_jacobi_stalls() -> None:
    # The tiny d = 8 block barely forgets, so 5 sweeps cannot converge: warn and use the loop.
    cfg = Phase1Config(max_iterations=2, min_iterations=2, reset="stream", iter0="jacobi", jacobi_max_sweeps=5)
    with pytest.warns(RuntimeWarning, match="jacobi_not_converged.*falling back to the sequential recurrence"):
        block, x, result = run(cfg)
    assert result.history[0]["method"] == "stream_sequential" and result.final_method == "stream_sequential"
    torch.testing.assert_close(result.contexts, contexts_stream_sequential(block, x), atol=0, rtol=0)


def test_iter0_jacobi_per_document_matches_sequential() -> None:
    block, x = wide_inputs()
    offsets, seen = torch.tensor([0, 40, 41, 300]), []
    cfg = Phase1Config(max_iterations=1, min_iterations=1, iter0="jacobi")
    result = train_phase1(block, x, offsets, cfg, generator=torch.Generator(), on_contexts=lambda k, c: seen.append(c))
    assert len(seen) == 1 and result.history[0]["method"] == "per_document_jacobi"
    expected = contexts_per_document(block, x, offsets, all_layers=False)
    torch.testing.assert_close(seen[0], expected, atol=1e-4, rtol=0)


def test_non_finite_chunks_are_skipped() -> None:
    block, x = make_inputs()
    x[250:400] = float("nan")  # document 2 = chunks 5..7 of 50 rows; per-document reset: no leak
    cfg = Phase1Config(max_iterations=2, min_iterations=2, chunk_rows=50)
    result = train_phase1(block, x, OFFSETS, cfg, generator=torch.Generator().manual_seed(0))
    assert result.history[1]["skipped_chunks"] == 3
    assert all(torch.isfinite(p).all() for p in block.parameters())


def test_diversity_loss_norms() -> None:
    y = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])  # row mean 0, ‖Y‖_F² = 10
    assert math.isclose(diversity_loss(y, "faithful").item(), -math.sqrt(10) / 4, rel_tol=1e-6)
    assert math.isclose(diversity_loss(y, "rms").item(), -math.sqrt(10 / 4), rel_tol=1e-6)


def test_config_lists_every_problem() -> None:
    with pytest.raises(ConfigError, match=r"min_iterations=5.*lr=0.*wraparound=True needs reset='stream'"):
        Phase1Config(max_iterations=3, min_iterations=5, lr=0.0, wraparound=True)


def test_frozen_block_is_rejected() -> None:
    block, x = make_inputs()
    block.requires_grad_(False)
    with pytest.raises(ConfigError, match="require grad"):
        train_phase1(block, x, OFFSETS, Phase1Config(), generator=torch.Generator())


def test_logged_losses_are_token_weighted_over_unequal_chunks() -> None:
    """Iteration 1 with chunks of 256, 256 and 88 rows: the logged CVFP and diversity losses are the
    token-weighted means of the chunk losses (the original's log), computed here by hand with numpy."""
    import numpy as np

    block, x = make_inputs()
    start = ContextBlock(D, D, 2)
    start.load_state_dict(block.state_dict())                      # iteration 1 runs the untrained parameters
    cfg = Phase1Config(max_iterations=2, min_iterations=1, noise_std=0.0, chunk_rows=256, dist_reg_weight=0.3)
    logged: list[dict] = []
    train_phase1(block, x, OFFSETS, cfg, generator=torch.Generator().manual_seed(1), on_iteration=logged.append)
    with torch.no_grad():
        c0 = contexts_per_document(start, x, OFFSETS, all_layers=False)       # C^0, exact
        prev = torch.cat([torch.zeros_like(c0[:1]), c0[:-1]])
        prev[OFFSETS[:-1]] = 0.0
        y = start(prev, x)[:, -1].double().numpy()                            # (N, d) Y of iteration 1
    target = c0.double().numpy()
    bounds = [(0, 256), (256, 512), (512, 600)]
    cvfp = np.array([((y[a:b] - target[a:b]) ** 2).mean() for a, b in bounds])
    div = np.array([-np.linalg.norm(y[a:b] - y[a:b].mean(0)) / (b - a) for a, b in bounds])
    sizes = np.array([b - a for a, b in bounds], dtype=float)
    stats = logged[1]
    assert math.isclose(stats["cvfp_loss"], float((cvfp * sizes).sum() / sizes.sum()), rel_tol=1e-5)
    assert math.isclose(stats["div_loss"], float((div * sizes).sum() / sizes.sum()), rel_tol=1e-5)
    assert math.isclose(stats["loss"], 0.7 * stats["cvfp_loss"] + 0.3 * stats["div_loss"], rel_tol=1e-9)
    assert not math.isclose(stats["div_loss"], float(div.mean()), rel_tol=1e-3)  # unlike a mean of chunk means
