"""The fused chunked cross-entropy (tasks/lm/loss.py) against F.cross_entropy, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from freezelab.tasks.lm.loss import linear_cross_entropy


def _data(bias: bool, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(37, 16, generator=g, dtype=torch.float64)
    w = torch.randn(101, 16, generator=g, dtype=torch.float64)
    b = torch.randn(101, generator=g, dtype=torch.float64) if bias else None
    t = torch.randint(0, 101, (37,), generator=g)
    return h, w, b, t


@pytest.mark.parametrize("chunk", [1, 5, 37, 64])
@pytest.mark.parametrize("train_w", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_loss_and_gradients_equal_cross_entropy_float64(chunk: int, train_w: bool, bias: bool) -> None:
    h, w, b, t = _data(bias)
    grads = []
    for fused in (True, False):
        hh = h.clone().requires_grad_(True)
        ww = w.clone().requires_grad_(train_w)
        bb = b.clone().requires_grad_(True) if b is not None else None
        if fused:
            loss, pred = linear_cross_entropy(hh, ww, bb, t, chunk_rows=chunk)
            assert torch.equal(pred, F.linear(h, w, b).argmax(-1))
        else:
            loss = F.cross_entropy(F.linear(hh, ww, bb), t)
        (3.0 * loss).backward()  # a scaled loss scales every gradient
        grads.append([loss.detach().double(), hh.grad, ww.grad, None if bb is None else bb.grad])
    (lf, hf, wf, bf), (lr, hr, wr, br) = grads
    assert abs(float(lf) - float(lr)) < 1e-12
    torch.testing.assert_close(hf, hr, rtol=1e-12, atol=1e-14)
    assert (wf is None) == (not train_w)
    if train_w:
        torch.testing.assert_close(wf, wr, rtol=1e-12, atol=1e-14)
    if bias:
        torch.testing.assert_close(bf, br, rtol=1e-12, atol=1e-14)


def test_a_wrong_target_changes_the_loss() -> None:
    """The comparison can fail: a shifted target gives a different loss and input gradient."""
    h, w, _, t = _data(False)
    hh = h.clone().requires_grad_(True)
    loss, _ = linear_cross_entropy(hh, w, None, (t + 1) % 101)
    assert abs(float(loss) - float(F.cross_entropy(F.linear(h, w), t))) > 1e-3
