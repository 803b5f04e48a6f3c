"""Reference models (model.kind gpt2 / gru): sizes against an independent count, per-document reset, the
document batches of Phase 2, and that they learn on a tiny corpus with the tied embedding frozen."""

from __future__ import annotations

import pytest
import torch

from freezelab.tasks.lm.config import LMConfig
from freezelab.tasks.lm.model import TokenBlock
from freezelab.tasks.lm.phases import epoch_batches, target_positions
from freezelab.tasks.lm.reference import ReferenceLM, core_params, match_width
from freezelab.utils.hashing import hash_tensor


def gpt2_count(d: int, w: int, layers: int, positions: int) -> int:
    """GPT-2 core by hand: in/out projections, position table, 12w² + 13w per block, final LNs."""
    block = 2 * w + (w * 3 * w + 3 * w) + (w * w + w) + 2 * w + (w * 4 * w + 4 * w) + (4 * w * w + w)
    return (d * w + w) + positions * w + layers * block + 2 * w + (w * d + d) + 2 * d


def gru_count(d: int, w: int, layers: int) -> int:
    """torch.nn.GRU by hand: three gates of W_ih, W_hh and both biases per layer, then the projection and LN."""
    first = 3 * w * (d + w) + 6 * w
    rest = 3 * w * (2 * w) + 6 * w
    return first + (layers - 1) * rest + (w * d + d) + 2 * d


@pytest.mark.parametrize(("d", "w", "layers", "positions"), [(384, 192, 2, 224), (768, 256, 3, 512), (16, 8, 1, 48)])
def test_core_counts_match_an_independent_count(d: int, w: int, layers: int, positions: int) -> None:
    assert core_params("gpt2", embed_dim=d, width=w, num_layers=layers, num_heads=4,
                       max_positions=positions) == gpt2_count(d, w, layers, positions)
    assert core_params("gru", embed_dim=d, width=w, num_layers=layers, num_heads=4,
                       max_positions=positions) == gru_count(d, w, layers)


@pytest.mark.parametrize("kind", ["gpt2", "gru"])
@pytest.mark.parametrize(("d", "positions"), [(384, 224), (384, 2048), (768, 512)])
def test_width_matches_the_cvfp_token_block_within_ten_percent(kind: str, d: int, positions: int) -> None:
    target = sum(p.numel() for p in TokenBlock(d, d, 6).parameters())  # the CVFP arm's trainable block
    assert target == 6 * ((2 * d) * d + d + 2 * d)                        # cvfp-lm.md §2's formula
    w = match_width(kind, target, embed_dim=d, num_layers=2, num_heads=4, max_positions=positions)  # type: ignore[arg-type]
    count = gpt2_count(d, w, 2, positions) if kind == "gpt2" else gru_count(d, w, 2)
    assert abs(count / target - 1) < 0.10
    step = 4 if kind == "gpt2" else 1
    for other in (w - step, w + step):  # and no neighbouring width is closer
        c = gpt2_count(d, other, 2, positions) if kind == "gpt2" else gru_count(d, other, 2)
        assert abs(c - target) >= abs(count - target)


def _model(kind: str, seed: int = 0) -> ReferenceLM:
    return ReferenceLM(kind=kind, vocab_size=50, embed_dim=16, width=16, num_layers=2, num_heads=2,  # type: ignore[arg-type]
                       max_positions=32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["gpt2", "gru"])
def test_a_document_does_not_depend_on_the_previous_one(kind: str, one_thread: None) -> None:
    model = _model(kind).eval()
    g = torch.Generator().manual_seed(1)
    doc_a, doc_a2, doc_b = (torch.randint(0, 50, (n,), generator=g) for n in (12, 20, 15))
    with torch.no_grad():
        alone = model.token_inputs(doc_b, torch.tensor([0, 15]))
        for first in (doc_a, doc_a2):
            ids = torch.cat([first, doc_b])
            offsets = torch.tensor([0, len(first), len(ids)])
            h = model.token_inputs(ids, offsets, torch.arange(len(first), len(ids)))
            torch.testing.assert_close(h, alone, rtol=1e-5, atol=1e-5)
        # and the state does run along a document: the second token's output depends on the first
        changed = doc_b.clone()
        changed[0] = (changed[0] + 1) % 50
        assert not torch.allclose(model.token_inputs(changed, torch.tensor([0, 15]))[1], alone[1])


@pytest.mark.parametrize("kind", ["gpt2", "gru"])
def test_positions_in_any_order_equal_whole_document_runs(kind: str, one_thread: None) -> None:
    model = _model(kind).eval()
    ids = torch.randint(0, 50, (30,), generator=torch.Generator().manual_seed(2))
    offsets = torch.tensor([0, 10, 30])
    pos = torch.tensor([25, 3, 11, 0, 29, 9])
    with torch.no_grad():
        full = torch.cat([model.core(model.embed(ids[0:10])[None])[0], model.core(model.embed(ids[10:30])[None])[0]])
        torch.testing.assert_close(model.token_inputs(ids, offsets, pos), full[pos], rtol=1e-5, atol=1e-5)


def test_document_batches_cover_every_target_once_and_keep_documents_whole() -> None:
    offsets = torch.tensor([0, 5, 30, 33, 60, 70, 71, 90])
    train_pos = target_positions(offsets)
    cfg = LMConfig.model_validate({"model": {"kind": "gru"}, "phase2": {"batch_size": 20}})
    doc = torch.searchsorted(offsets, train_pos, right=True) - 1
    for epoch in (1, 2):
        batches = epoch_batches(None, train_pos, offsets, cfg, seed=0, epoch=epoch)
        assert torch.equal(torch.sort(torch.cat(batches)).values, train_pos)
        docs_of = [set(torch.searchsorted(offsets, b, right=True).sub(1).tolist()) for b in batches]
        assert sum(len(s) for s in docs_of) == len(set(doc.tolist()))    # no document in two batches
        assert all(len(b) <= 20 or len(s) == 1 for b, s in zip(batches, docs_of))
    one, two = (epoch_batches(None, train_pos, offsets, cfg, seed=0, epoch=e) for e in (1, 2))
    assert len(one) == len(two) and [b.tolist() for b in one] != [b.tolist() for b in two]  # reshuffled


@pytest.mark.parametrize("kind", ["gpt2", "gru"])
def test_it_learns_with_the_tied_embedding_frozen(kind: str, one_thread: None) -> None:
    from freezelab.freeze.param_groups import FreezeController, ParamGroup

    torch.manual_seed(0)
    model = _model(kind)
    model.load_embedding_(torch.randn(50, 16))  # a table of pretrained scale (unit rows), frozen
    controller = FreezeController(model, [ParamGroup("embed", [model.wte], frozen=True),
                                          ParamGroup("embed_norm", [model.embed_norm], frozen=True),
                                          ParamGroup("core", [model.core])])
    before = hash_tensor(model.wte.weight)
    ids = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8] * 4)  # a periodic corpus: learnable from the previous token
    offsets = torch.tensor([0, 16, 32])
    pos = target_positions(offsets)
    opt = controller.build_optimizer(0.01)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(None, model.token_inputs(ids, offsets, pos)), ids[pos + 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert hash_tensor(model.wte.weight) == before and model.wte.weight.grad is None


def test_reference_config_errors_say_what_to_change() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"model.kind=gru \(a reference model.*model.head.tie=False"):
        LMConfig.model_validate({"model": {"kind": "gru", "head": {"tie": False}}})
    with pytest.raises(ValidationError, match=r"context.cache=per_epoch"):
        LMConfig.model_validate({"model": {"kind": "gru"}, "context": {"cache": "per_epoch"}})
    with pytest.raises(ValidationError, match=r"phase2.loop=per_token"):
        LMConfig.model_validate({"model": {"kind": "gru"}, "phase2": {"loop": "per_token"}})
    with pytest.raises(ValidationError, match=r"context.reset=stream"):
        LMConfig.model_validate({"model": {"kind": "gpt2"}, "context": {"reset": "stream"}})
    with pytest.raises(ValidationError, match=r"reference_width=30 is not a multiple of model.reference_heads=4"):
        LMConfig.model_validate({"model": {"kind": "gpt2", "reference_width": 30}})
    with pytest.raises(ValidationError, match=r"gpt2 needs data.max_tokens_per_doc"):
        LMConfig.model_validate({"model": {"kind": "gpt2"}, "data": {"max_tokens_per_doc": None}})
    assert LMConfig.model_validate({"model": {"kind": "gru"}, "data": {"max_tokens_per_doc": None}})


def test_cvfp_batches_are_the_seeded_position_permutation_as_before() -> None:
    from freezelab.utils.seeding import torch_generator

    offsets = torch.tensor([0, 5, 30, 33, 60])
    train_pos = target_positions(offsets)
    cfg = LMConfig.model_validate({"phase2": {"batch_size": 7}})
    order = torch.randperm(len(train_pos), generator=torch_generator(3, "phase2", "order", "2"))
    want = [train_pos[order[s:s + 7]] for s in range(0, len(train_pos), 7)]
    got = epoch_batches(None, train_pos, offsets, cfg, seed=3, epoch=2)
    assert [b.tolist() for b in got] == [b.tolist() for b in want]
