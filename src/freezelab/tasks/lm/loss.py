"""Cross-entropy over the output head without the autograd graph of a (B, V) logit tensor.

``linear_cross_entropy(h, W, b, targets)`` is ``F.cross_entropy(F.linear(h, W, b), targets)`` (mean over
the batch), the same computation, with its gradients computed in the forward pass, one chunk of rows at a
time: logits z = h Wᵀ + b, lse = logsumexp(z), loss_i = lse_i − z_i[t_i], dz = (softmax(z) − onehot(t)) / B,
then dh = dz W, dW = dzᵀ h, db = Σ dz. The chunk's logits buffer is reused in place for the softmax and dz, so
the passes over B·V floats drop from about eight (logits, log-softmax, its output, NLL's one-hot grad,
log-softmax backward, ...) to four, and the softmax over V never has a (B, V) autograd graph.

The backward pass only scales the stored gradients by the incoming gradient (the loss is a scalar), so the
function is meant for ``loss.backward()`` on this loss (or a multiple of it), as Phase 2 does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                chunk_rows: int) -> tuple[Tensor, Tensor]:
        n = h.shape[0]
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = None
        grad_b = None
        if need_b and bias is not None:
            grad_b = torch.zeros_like(bias, dtype=torch.promote_types(torch.float32, bias.dtype))
        loss_sum = torch.zeros((), dtype=torch.float64, device=h.device)
        pred = torch.empty(n, dtype=torch.int64, device=h.device)
        if need_w:  # the weight gradient needs every row's dz: one chunk, then one (V, B) x (B, d) matmul
            chunk_rows = max(n, 1)
        dz = None
        for s in range(0, n, chunk_rows):
            hs, ts = h[s:s + chunk_rows], targets[s:s + chunk_rows]
            z = torch.nn.functional.linear(hs, weight, bias)                 # (b, V), autocast-aware
            z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z  # softmax in fp32 (or fp64)
            pred[s:s + len(ts)] = z.argmax(-1)
            lse = torch.logsumexp(z, dim=-1, keepdim=True)                    # (b, 1)
            loss_sum += (lse.squeeze(-1) - z.gather(1, ts[:, None]).squeeze(-1)).double().sum()
            if not (need_h or need_w or need_b):
                continue
            dz = z.sub_(lse).exp_()                                           # softmax, in place
            dz[torch.arange(len(ts), device=dz.device), ts] -= 1.0
            dz.div_(n)                                                        # d(mean) / dz
            if grad_h is not None:
                grad_h[s:s + chunk_rows] = torch.mm(dz.to(weight.dtype), weight).to(h.dtype)   # autocast-aware
            if grad_b is not None:
                grad_b += dz.sum(0)
        if need_w and dz is not None:
            grad_w = torch.mm(dz.t(), h if torch.is_autocast_enabled(h.device.type) else h.to(dz.dtype))
        ctx.grads = (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                     None if grad_b is None else grad_b.to(bias.dtype))
        ctx.mark_non_differentiable(pred)
        return (loss_sum / n).to(torch.promote_types(torch.float32, h.dtype)), pred

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, _grad_pred: Any) -> tuple[Tensor | None, ...]:
        one = bool(grad_loss == 1)
        scaled = tuple(x if x is None or one else x * grad_loss.to(x.dtype) for x in ctx.grads)
        ctx.grads = None
        return (*scaled, None, None)


def linear_cross_entropy(h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, *,
                         chunk_rows: int = 256) -> tuple[Tensor, Tensor]:
    """Mean CE of logits ``h Wᵀ + b`` against ``targets`` and the argmax prediction of every row.

    Args:
        h: (B, d) final hidden states.
        weight: (V, d) the head (the tied wte itself, or the untied head).
        bias: (V,) or None.
        targets: (B,) int64 class ids.
        chunk_rows: rows whose (chunk, V) logits are formed at a time (memory ≈ 4·chunk·V bytes).

    Returns:
        (loss, pred): the scalar mean CE (float32, float64 for float64 inputs; differentiable in h, weight
        and bias) and the (B,) argmax ids.
    """
    return _LinearCrossEntropy.apply(h, weight, bias, targets, chunk_rows)


def head_loss(model: Any, h: Tensor, targets: Tensor, *, fused: bool = True,
              chunk_rows: int = 512) -> tuple[Tensor, Tensor]:
    """Phase 2's mean CE of ``model``'s head on ``h`` and the argmax predictions.

    ``fused``: ``linear_cross_entropy`` on the head's weight (and bias); otherwise the reference
    ``F.cross_entropy(model.logits(h))`` through autograd (same loss, same gradients within float rounding).
    """
    if fused:
        bias = model.head.bias if model.head is not None else None
        return linear_cross_entropy(h, model.head_weight, bias, targets, chunk_rows=chunk_rows)
    logits = model.logits(h)
    return torch.nn.functional.cross_entropy(logits.float(), targets), logits.argmax(-1)
