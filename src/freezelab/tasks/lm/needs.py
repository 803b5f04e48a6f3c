"""Which parts of the CVFP pipeline a resolved config actually uses (protocol §1.4).

One decision, in one place, for every model kind: does the TokenBlock read contexts (so the
ContextBlock is *used*), and does Phase 1 run (only when something it trains is used)? A ContextBlock
that no forward pass reaches is reported as **unused**, never as frozen, and Phase 1 is skipped for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from freezelab.tasks.lm.config import LMConfig


@dataclass(frozen=True)
class ContextNeeds:
    """What a run needs of the context path.

    Attributes:
        context_block: the ContextBlock's outputs reach the loss (else its tensors are unused).
        phase1: Phase 1 trains the ContextBlock (implies ``context_block``).
        why: a readable reason when Phase 1 does not run ("" when it does).
    """

    context_block: bool
    phase1: bool
    why: str = ""


def context_needs(cfg: LMConfig) -> ContextNeeds:
    """Decide from a resolved config whether the ContextBlock is used and whether Phase 1 runs.

    Args:
        cfg: the run's resolved config.

    Returns:
        ContextNeeds; ``model.use_context: false`` (the no_context ablation, contexts = 0) leaves the
        ContextBlock unused and Phase 1 skipped; ``phase1.enabled: false`` keeps the block (random init) in use.
    """
    if cfg.model.kind != "cvfp":
        return ContextNeeds(False, False, f"model.kind={cfg.model.kind}: a reference model has no ContextBlock")
    if not cfg.model.use_context:
        return ContextNeeds(False, False, "model.use_context=false: contexts are 0, the ContextBlock is unused")
    if not cfg.phase1.enabled:
        return ContextNeeds(True, False, "phase1.enabled=false: the ContextBlock keeps its random init")
    return ContextNeeds(True, True)
