"""The original's Phase-2 loop, one position at a time (``phase2.loop: per_token``, timing parity only).

Spec: shared/spec/cvfp-lm.md §5 ("Original loop") and §9 flaw 8. Every position of a batch runs forward
and backward alone (batch 1); its loss, divided by the batch size, accumulates the gradient, so one Adam step
per batch follows as in the batched loop; its loss and prediction are read back with ``.item()`` (a device
sync per token, like the original). Evaluation per token is ``phases.evaluate`` with batch 1 (one
forward and one ``float()`` sync per position).

Equivalence with ``loop: batched`` (tested): with ``phase2.batch_size: 1`` the two loops are the same
computation (identical losses); with batch B the gradient is the same sum taken in another order, so the
losses agree within float rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from freezelab.tasks.lm.model import CVFPModel


def train_batch_per_token(model: CVFPModel, ids: torch.Tensor, offsets: torch.Tensor, contexts: torch.Tensor,
                          pos: torch.Tensor, *, autocast: Callable, backward: Callable) -> tuple[float, int]:
    """Forward and backward every position of ``pos`` alone; gradients accumulate (caller zeroed them).

    ``contexts`` (B, L, d_c) are the batch's, row i for ``pos[i]``.

    Returns:
        (mean loss over the batch, number of correct top-1 predictions).
    """
    loss_sum, correct, n = 0.0, 0, len(pos)
    for i, p in enumerate(pos.tolist()):
        one = torch.tensor([p], device=pos.device)
        with autocast():
            logits = model(contexts[i : i + 1].float(), model.token_inputs(ids, offsets, one))   # (1, V)
            loss = F.cross_entropy(logits.float(), ids[one + 1])
        backward(loss / n)
        loss_sum += loss.item()                                                       # the per-token sync
        correct += int(logits.argmax(-1).item() == ids[p + 1].item())
    return loss_sum / n, correct
