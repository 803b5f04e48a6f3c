"""CVFPModel: parameter arithmetic (spec §2), wiring, initialisation, token windows, head tying."""

from __future__ import annotations

import pytest
import torch

from freezelab.errors import ConfigError
from freezelab.tasks.lm.model import (
    ContextBlock,
    ContextLayer,
    CVFPModel,
    TokenBlock,
    original_block_params,
)

SEED = dict(vocab_size=50257, embed_dim=768, context_dim=768, num_layers=6)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # parameters() yields each tensor once


def tiny(**kw) -> CVFPModel:
    args = dict(vocab_size=50, embed_dim=8, context_dim=8, num_layers=2, tie_head=True)
    args.update(kw)
    return CVFPModel(**args, generator=torch.Generator().manual_seed(0))


# --- spec §2 on the meta device -------------------------------------------------------------


def test_seed_parameter_counts_on_meta() -> None:
    with torch.device("meta"):
        tied = CVFPModel(**SEED, tie_head=True)
        untied_bias = CVFPModel(**SEED, tie_head=False, head_bias=True)
        untied = CVFPModel(**SEED, tie_head=False, head_init="zeros")
        layer = ContextLayer(768, 768)
    assert tied.wte.weight.is_meta
    assert count(layer) == 1_181_952
    assert count(tied.context_block) == 7_091_712
    assert count(tied.token_block) == 7_091_712
    assert count(tied.embed_norm) == 1_536
    assert count(tied) == 52_782_336
    assert count(untied_bias) == 91_429_969
    assert count(untied) == 91_379_712
    # Phase-2 trainable sets (spec §2 table).
    assert count(tied.token_block) + count(tied.embed_norm) == 7_093_248
    assert count(tied.token_block) + count(tied.wte) == 45_689_088


def test_n2_token_block_counts() -> None:
    with torch.device("meta"):
        fixed = TokenBlock(768, 768, 6, num_input_tokens=2)
    # freezelab widths: layer 1 d_c + 2 d_e, layers 2..6 d_c + d_e.
    assert count(fixed) == (768 * (768 + 1536) + 3 * 768) + 5 * 1_181_952 == 7_681_536
    # The report's 49.2M used the original (non-runnable for n = 2) shapes.
    assert original_block_params(768, 768, 768, 2, 6) == 10_630_656
    assert 38_597_376 + original_block_params(768, 768, 768, 2, 6) + 1_536 == 49_229_568
    assert original_block_params(768, 768, 768, 1, 6) == 7_091_712


def test_tied_head_has_no_tensor_and_uses_raw_wte() -> None:
    model = tiny()
    assert model.head is None
    assert not any(p.shape == (50, 8) for name, p in model.named_parameters() if name != "wte.weight")
    assert model.head_weight.data_ptr() == model.wte.weight.data_ptr()
    h = torch.randn(3, 8)
    torch.testing.assert_close(model.logits(h), h @ model.wte.weight.T)  # raw wte, no LN, no bias
    model.logits(h).sum().backward()
    assert model.wte.weight.grad is not None


def test_head_options() -> None:
    with pytest.raises(ConfigError, match="tied head"):
        tiny(head_bias=True)
    copy = tiny(tie_head=False, head_bias=True)
    assert torch.equal(copy.head.weight, copy.wte.weight)
    assert copy.head.weight.data_ptr() != copy.wte.weight.data_ptr()
    assert torch.equal(copy.head.bias, torch.zeros(50))
    zeros = tiny(tie_head=False, head_init="zeros")
    assert zeros.head.bias is None and not zeros.head.weight.any()


def test_load_embedding() -> None:
    table = torch.randn(50, 8)
    model = tiny(tie_head=False)
    model.load_embedding_(table)
    assert torch.equal(model.wte.weight, table) and torch.equal(model.head.weight, table)
    zero_head = tiny(tie_head=False, head_init="zeros")
    zero_head.load_embedding_(table)
    assert not zero_head.head.weight.any()
    with pytest.raises(ConfigError, match=r"shape \(50, 9\).*expects \(50, 8\)"):
        model.load_embedding_(torch.randn(50, 9))


# --- initialisation ---------------------------------------------------------------------------


def test_initialisation_follows_spec_and_is_seeded() -> None:
    g = torch.Generator().manual_seed(0)
    model = CVFPModel(vocab_size=4000, embed_dim=64, context_dim=64, num_layers=2, tie_head=True, generator=g)
    fc = model.context_block.layers[0].fc
    assert abs(fc.weight.std().item() - 0.1) < 0.005
    assert abs(fc.bias.std().item() - 0.01) < 0.004
    assert abs(model.wte.weight.std().item() - 0.02) < 0.001
    for norm in [model.embed_norm, model.context_block.layers[1].norm, model.token_block.layers[0].norm]:
        assert torch.equal(norm.weight, torch.ones(64)) and torch.equal(norm.bias, torch.zeros(64))
    again = CVFPModel(vocab_size=4000, embed_dim=64, context_dim=64, num_layers=2, tie_head=True,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    other = CVFPModel(vocab_size=4000, embed_dim=64, context_dim=64, num_layers=2, tie_head=True,
                      generator=torch.Generator().manual_seed(1))  # fmt: skip
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(model.context_block.layers[0].fc.weight, other.context_block.layers[0].fc.weight)


# --- wiring ------------------------------------------------------------------------------------


def test_context_block_returns_every_layer() -> None:
    block = ContextBlock(8, 16, 3, generator=torch.Generator().manual_seed(0))
    c, x = torch.randn(5, 8), torch.randn(5, 16)
    out = block(c, x)
    assert out.shape == (5, 3, 8)
    manual = c
    for layer_idx, layer in enumerate(block.layers):
        manual = layer.norm(manual + torch.relu(layer.fc(torch.cat([manual, x], -1))))
        torch.testing.assert_close(out[:, layer_idx], manual)


def test_token_block_layerwise_wiring_and_widths() -> None:
    block = TokenBlock(8, 6, 3, num_input_tokens=2, generator=torch.Generator().manual_seed(0))
    assert [layer.fc.in_features for layer in block.layers] == [6 + 16, 6 + 8, 6 + 8]
    contexts, x = torch.randn(4, 3, 6), torch.randn(4, 16)
    h = block(contexts, x)
    assert h.shape == (4, 8)
    # Layer 1's residual is the current token, the last d_e of x̃.
    first = block.layers[0]
    h1 = first.norm(x[:, 8:] + torch.relu(first.fc(torch.cat([contexts[:, 0], x], -1))))
    h2 = block.layers[1](contexts[:, 1], h1)
    torch.testing.assert_close(h, block.layers[2](contexts[:, 2], h2))
    for layer_idx in range(3):  # every layer's context is read
        bumped = contexts.clone()
        bumped[:, layer_idx] += 1.0
        assert not torch.allclose(block(bumped, x), h)


def test_token_inputs_windows_reset_at_document_starts() -> None:
    model = tiny(num_input_tokens=2)
    ids = torch.tensor([3, 4, 5, 6, 7, 8, 9])
    offsets = torch.tensor([0, 3, 3, 7])  # docs [3 4 5], [], [6 7 8 9]
    xt = model.token_inputs(ids, offsets)
    emb = model.embed(ids)
    assert xt.shape == (7, 16)
    torch.testing.assert_close(xt[:, 8:], emb)  # current token last
    for start in (0, 3):
        assert not xt[start, :8].any()  # zeros before each document's start
    torch.testing.assert_close(xt[1, :8], emb[0])
    torch.testing.assert_close(xt[4, :8], emb[3])
    stream = model.token_inputs(ids)  # one stream: only position 0 is padded
    torch.testing.assert_close(stream[3, :8], emb[2])
    positions = torch.tensor([4, 0, 3])
    torch.testing.assert_close(model.token_inputs(ids, offsets, positions=positions), xt[positions])
    one = tiny()
    torch.testing.assert_close(one.token_inputs(ids, offsets), one.embed(ids))


def test_forward_gives_logits() -> None:
    model = tiny(tie_head=False)
    contexts, x = torch.randn(4, 2, 8), torch.randn(4, 8)
    assert model(contexts, x).shape == (4, 50)
