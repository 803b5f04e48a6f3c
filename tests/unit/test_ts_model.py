"""The reconstruction model and its backbones: shapes, named groups, loading, removed tables, accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from freezelab.errors import ConfigError, PretrainedUnavailableError
from freezelab.freeze.param_groups import FreezeController
from freezelab.tasks.timeseries.backbones import build_backbone
from freezelab.tasks.timeseries.config import TSConfig
from freezelab.tasks.timeseries.task import TSTask, apply_policy, build_model
from tests import ts_fixtures
from tests.ts_fixtures import TINY_WIDTH, tiny_ts_base

tiny_backbones = ts_fixtures.tiny_backbones  # the fixture

FAMILIES = ("t5", "bert", "gpt2")


def cfg_for(path: Path, **over) -> TSConfig:
    return TSConfig.model_validate(tiny_ts_base(path, **over))


def fake_batch(cfg: TSConfig, b: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs, flags, minutes = {}, {}, {}
    for f in cfg.data.timeframes:
        k, p = cfg.windows.context[f], cfg.patch_len(f)
        inputs[f] = torch.randn(b, k, 4, generator=g)
        flags[f] = (torch.rand(b, k, generator=g) < 0.3).float()
        inputs[f][flags[f] > 0] = 0.0
        minutes[f] = torch.rand(b, k // p, generator=g) * 1000
    return inputs, flags, minutes


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_shapes_and_named_groups(tiny_backbones, family):
    cfg = cfg_for(tiny_backbones[family])
    model, info = build_model(cfg, seed=0)
    assert info.family == family and info.hidden_size == TINY_WIDTH and info.num_layers == 2
    out = model(*fake_batch(cfg))
    assert {f: tuple(y.shape) for f, y in out.items()} == {"h1": (3, 16, 4), "h4": (3, 8, 4), "d": (3, 4, 4)}
    groups = model.param_groups()
    assert [g.name for g in groups] == ["embed", "encoder.0", "encoder.1", "encoder.norm", "head", "mask"]
    FreezeController(model, groups)  # raises if a parameter is in no group or in two (I4)


@pytest.mark.parametrize("family", FAMILIES)
def test_token_embedding_table_is_removed_not_counted(tiny_backbones, family):
    cfg = cfg_for(tiny_backbones[family])
    model, info = build_model(cfg, seed=0)
    table = {"t5": "shared.weight", "bert": "embeddings.word_embeddings.weight", "gpt2": "wte.weight"}[family]
    assert info.removed[table] == 96 * TINY_WIDTH
    names = [n for n, _ in model.named_parameters()]
    assert not any(("shared" in n or "word_embeddings" in n or ".wte." in n or "embed_tokens" in n) for n in names)
    counts = TSTask().inspect(cfg.model_dump(mode="json"))
    assert counts["unused"] == 0 and counts["removed_total"] == sum(info.removed.values())
    assert counts["total"] == sum(p.numel() for p in model.parameters())


def test_t5_small_arithmetic_on_the_meta_device(tmp_path):
    """Spec §4: t5-small's encoder keeps 18,881,280 parameters once its 32128 × 512 table is removed."""
    from transformers import T5Config

    T5Config(vocab_size=32128, d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6).save_pretrained(tmp_path)
    cfg = TSConfig.model_validate({"backbone": {"source": str(tmp_path)}})
    backbone, info = build_backbone(cfg.backbone, seed=0, device="meta")
    assert info.removed == {"shared.weight": 32128 * 512} == {"shared.weight": 16_449_536}
    assert sum(p.numel() for p in backbone.parameters()) == 18_881_280
    assert 16_449_536 + 18_881_280 == 35_330_816  # the seed's "frozen" count included the unused table


def test_tiny_t5_removed_equals_vocab_times_width(tiny_backbones):
    from transformers import T5EncoderModel

    full = T5EncoderModel.from_pretrained(tiny_backbones["t5"])
    n_full = sum(p.numel() for p in full.parameters())
    backbone, info = build_backbone(cfg_for(tiny_backbones["t5"]).backbone, seed=0)
    assert info.removed["shared.weight"] == full.config.vocab_size * full.config.d_model
    assert sum(p.numel() for p in backbone.parameters()) == n_full - info.removed["shared.weight"]


def test_t5_encoder_loads_from_a_local_directory(tiny_backbones):
    from transformers import T5EncoderModel

    ref = T5EncoderModel.from_pretrained(tiny_backbones["t5"]).eval()
    backbone, info = build_backbone(cfg_for(tiny_backbones["t5"]).backbone, seed=0)
    backbone.eval()
    assert info.pretrained_hash is not None
    ref_params = dict(ref.encoder.named_parameters())
    for name, p in backbone.core.named_parameters():
        assert torch.equal(p, ref_params[name]), name
    h = torch.randn(2, 5, TINY_WIDTH)
    torch.testing.assert_close(backbone(h), ref(inputs_embeds=h).last_hidden_state)


def test_missing_model_is_an_error_never_random_weights(tmp_path):
    cfg = TSConfig.model_validate({"backbone": {"source": str(tmp_path / "no-such-model")}})
    with pytest.raises(PretrainedUnavailableError, match="could not be loaded"):
        build_backbone(cfg.backbone, seed=0)
    (tmp_path / "empty").mkdir()
    cfg = TSConfig.model_validate({"backbone": {"source": str(tmp_path / "empty")}})
    with pytest.raises(PretrainedUnavailableError, match="not a complete Hugging Face model directory"):
        build_backbone(cfg.backbone, seed=0)


def test_checkpoint_missing_backbone_tensors_is_refused(tiny_backbones, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_backbones["bert"], tmp_path / "bert", dirs_exist_ok=True)
    weights = load_file(tmp_path / "bert" / "model.safetensors")
    del weights["encoder.layer.1.output.dense.weight"]
    save_file(weights, tmp_path / "bert" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(PretrainedUnavailableError, match="missing from the checkpoint"):
        build_backbone(cfg_for(tmp_path / "bert").backbone, seed=0)


def test_unsupported_family_is_a_config_error(tmp_path):
    from transformers import DistilBertConfig

    DistilBertConfig(dim=16, n_layers=1, n_heads=2, hidden_dim=32).save_pretrained(tmp_path)
    cfg = TSConfig.model_validate({"backbone": {"source": str(tmp_path)}})
    with pytest.raises(ConfigError, match="supported families"):
        build_backbone(cfg.backbone, seed=0)


def test_random_init_uses_the_backbones_initialiser_seeded(tiny_backbones):
    path = tiny_backbones["bert"]
    pre, _ = build_backbone(cfg_for(path).backbone, seed=0)
    rand_cfg = cfg_for(path, **{"backbone.kind": "random_init"}).backbone
    a, info = build_backbone(rand_cfg, seed=0)
    b, _ = build_backbone(rand_cfg, seed=0)
    c, _ = build_backbone(rand_cfg, seed=1)
    assert info.pretrained_hash is None
    wa, wb, wc, wp = (m.core.encoder.layer[0].attention.self.query.weight for m in (a, b, c, pre))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc) and not torch.equal(wa, wp)
    assert abs(float(wa.detach().std()) - 0.02) < 0.01  # BERT's _init_weights: N(0, initializer_range²)


def test_new_modules_start_identical_across_arms(tiny_backbones):
    path = tiny_backbones["bert"]
    m1, _ = build_model(cfg_for(path), seed=3)
    m2, _ = build_model(cfg_for(path, **{"backbone.kind": "none"}), seed=3)
    for name in ("patch.h1.weight", "tf_embed.weight", "time_proj.weight", "heads.d.weight", "mask_vec.h4"):
        assert torch.equal(m1.get_parameter(name), m2.get_parameter(name)), name


def test_masked_values_never_reach_the_model(tiny_backbones):
    """Masked bars are replaced by μ_f inside the model: whatever value a masked bar holds, outputs are equal."""
    cfg = cfg_for(tiny_backbones["bert"])
    model, _ = build_model(cfg, seed=0)
    model.eval()
    inputs, flags, minutes = fake_batch(cfg)
    noisy = {f: torch.where(flags[f][..., None] > 0, torch.full_like(x, 1e3), x) for f, x in inputs.items()}
    with torch.no_grad():
        a, b = model(inputs, flags, minutes), model(noisy, flags, minutes)
    for f in a:
        torch.testing.assert_close(a[f], b[f], rtol=0, atol=0)


def test_positions_removed_by_default_and_kept_on_request(tiny_backbones):
    path = tiny_backbones["bert"]
    _, info = build_backbone(cfg_for(path).backbone, seed=0)
    assert "embeddings.position_embeddings.weight" in info.removed and "pooler" in info.removed
    model, info = build_model(cfg_for(path, **{"backbone.keep_positions": True}), seed=0)
    assert "embeddings.position_embeddings.weight" not in info.removed
    norm = next(g for g in model.param_groups() if g.name == "encoder.norm")
    assert any(p is model.backbone.core.embeddings.position_embeddings.weight for p in norm.params)
    model(*fake_batch(cfg_for(path, **{"backbone.keep_positions": True})))


def test_num_layers_truncates_to_the_first_blocks(tiny_backbones):
    from transformers import GPT2Model

    ref = GPT2Model.from_pretrained(tiny_backbones["gpt2"])
    model, info = build_model(cfg_for(tiny_backbones["gpt2"], **{"backbone.num_layers": 1}), seed=0)
    assert info.num_layers == 1 and len(model.backbone.blocks) == 1
    assert torch.equal(model.backbone.core.h[0].attn.c_attn.weight, ref.h[0].attn.c_attn.weight)
    with pytest.raises(ConfigError, match="exceeds"):
        build_model(cfg_for(tiny_backbones["gpt2"], **{"backbone.num_layers": 5}), seed=0)


def test_arm_policies_flags_and_scales(tiny_backbones):
    path = tiny_backbones["t5"]

    def groups(**over):
        cfg = cfg_for(path, **over)
        model, _ = build_model(cfg, seed=0)
        return {g.name: g for g in apply_policy(model.param_groups(train_norms=cfg.backbone.train_norms), cfg)}

    frozen = groups()
    assert all(g.frozen for n, g in frozen.items() if n.startswith("encoder."))
    assert not any(frozen[n].frozen for n in ("embed", "head", "mask"))
    disc = groups(**{"backbone.train": "discriminative", "backbone.lr_scale": 1.0})
    xi = 1 / 2.6
    assert disc["encoder.1"].lr_scale == 1.0 and disc["encoder.0"].lr_scale == pytest.approx(xi)
    assert disc["encoder.norm"].lr_scale == 1.0 and not disc["encoder.0"].frozen
    ln = groups(**{"backbone.train_norms": True})
    assert not ln["encoder.norm"].frozen and ln["encoder.0"].frozen
    assert ln["encoder.norm"].numel > frozen["encoder.norm"].numel      # in-block norms moved in
    assert sum(g.numel for g in ln.values()) == sum(g.numel for g in frozen.values())
    assert set(groups(**{"backbone.kind": "none"})) == {"embed", "head", "mask"}
    one = groups(**{"backbone.kind": "one_attn", "backbone.one_attn_heads": 2, "backbone.train": "finetune"})
    assert set(one) == {"embed", "encoder.0", "encoder.norm", "head", "mask"} and not one["encoder.0"].frozen


def test_inspect_counts_frozen_and_trainable(tiny_backbones):
    task = TSTask()
    frozen = task.inspect(tiny_ts_base(tiny_backbones["bert"]))
    none = task.inspect(tiny_ts_base(tiny_backbones["bert"], **{"backbone.kind": "none"}))
    assert frozen["trainable"] == none["trainable"] == none["total"]
    assert frozen["frozen"] == frozen["total"] - frozen["trainable"] > 0
    assert none["removed_total"] == 0


def test_config_rejects_inconsistent_windows(tiny_backbones):
    base = tiny_ts_base(tiny_backbones["bert"])
    base["windows"]["context"]["h1"] = 18
    with pytest.raises(ValueError, match=r"windows.context.h1=18 is not a multiple of model.patch_len"):
        TSConfig.model_validate(base)
    base = tiny_ts_base(tiny_backbones["bert"], **{"backbone.train": "frozen_then_unfrozen",
                                                   "backbone.unfreeze_epoch": 2})
    with pytest.raises(ValueError, match="unfreeze_epoch=2 must be below train.max_epochs=2"):
        TSConfig.model_validate(base)


def test_every_config_field_is_documented():
    from freezelab.config.fields import iter_fields

    missing = [key for key, info in iter_fields(TSConfig) if not info.description]
    assert not missing, missing
    json.dumps(TSConfig().model_dump(mode="json"))
