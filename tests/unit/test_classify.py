"""The built-in classify task: its data path (file format, encoding, stratified split), its naive Bayes baseline
against scikit-learn's, its groups for the five arms, and that it is written only against the public API."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from freezelab.tasks.classify import task as classify
from freezelab.tasks.classify.task import ClassifyOptions, ClassifyTask, read_labelled, stratified_split

SRC = Path(classify.__file__)


def test_written_only_against_the_public_api():
    """Issue 18: the third task is proof the plugin API suffices: it imports freezelab's top level and the
    pretrained loaders, nothing of the engine, the experiment runner, tracking or another task."""
    tree = ast.parse(SRC.read_text())
    used = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    ours = {m for m in used if m == "freezelab" or m.startswith("freezelab.")}
    assert ours <= {"freezelab", "freezelab.pretrained"}, ours
    assert issubclass(ClassifyTask, __import__("freezelab").Task)


def test_bundled_polarity_file_reads_as_200_labelled_sentences():
    texts, labels = read_labelled(*classify.data_file(ClassifyOptions()))
    assert len(texts) == 200 and sorted(set(labels)) == ["neg", "pos"]
    assert labels.count("pos") == 100
    assert all(t and not t.startswith("__label__") for t in texts)
    assert any("\u2014" in t for t in texts)  # cp1252's em dash decoded, not mangled


def test_malformed_line_and_wrong_encoding_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("__label__a fine sentence\nno label here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected '__label__NAME text'"):
        read_labelled(bad, "utf-8")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"__label__a ok\n__label__b caf\xe9 noir\n")
    with pytest.raises(ValueError, match=r"latin.txt:2: not utf-8 text .*options.encoding"):
        read_labelled(latin, "utf-8")
    assert read_labelled(latin, "latin-1")[0][1] == "café noir"
    with pytest.raises(FileNotFoundError, match="options.data: no file"):
        classify.data_file(ClassifyOptions(data=str(tmp_path / "missing.txt")))


def test_stratified_split_is_disjoint_complete_proportional_and_seeded():
    labels = np.array([0] * 70 + [1] * 30)
    parts = stratified_split(labels, 20, 10, seed=3)
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined.tolist()) == list(range(100))  # every item once
    assert [len(parts[k]) for k in ("train", "val", "test")] == [20, 10, 70]
    assert labels[parts["train"]].sum() == 6 and labels[parts["val"]].sum() == 3  # 30 % positive in each
    again = stratified_split(labels, 20, 10, seed=3)
    other = stratified_split(labels, 20, 10, seed=4)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    assert not np.array_equal(parts["train"], other["train"])
    with pytest.raises(ValueError, match="leaves no test"):
        stratified_split(labels, 60, 40, seed=0)


def test_naive_bayes_baseline_matches_scikit_learn():
    """The baseline's log posterior is multinomial naive Bayes with add-one smoothing over token counts:
    the same as sklearn's MultinomialNB(alpha=1) on the count matrix, except for our add-one class prior."""
    sk = pytest.importorskip("sklearn.naive_bayes")
    rng = np.random.default_rng(0)
    vocab = 12

    def items(n):
        return [{"input_ids": rng.integers(0, vocab, size=rng.integers(3, 9)), "label": int(rng.integers(0, 2))}
                for _ in range(n)]

    train, val, test = items(40), items(15), items(15)
    test[0]["input_ids"][0] = vocab - 1  # make sure the largest id occurs
    from freezelab import Splits

    out = ClassifyTask().baselines(Splits(train=train, val=val, test=test), ClassifyOptions())["naive_bayes"]

    def counts(its):
        m = np.zeros((len(its), vocab))
        for row, it in enumerate(its):
            np.add.at(m[row], it["input_ids"], 1)
        return m

    y = np.array([it["label"] for it in train])
    prior = (np.bincount(y, minlength=2) + 1.0) / (len(y) + 2)
    nb = sk.MultinomialNB(alpha=1.0, class_prior=prior).fit(counts(train), y)
    for split, its in (("val", val), ("test", test)):
        log_post = nb.predict_log_proba(counts(its))
        yy = np.array([it["label"] for it in its])
        np.testing.assert_allclose(out[split]["loss_sum"], -log_post[np.arange(len(yy)), yy], rtol=1e-9)
        np.testing.assert_array_equal(out[split]["correct"], (log_post.argmax(1) == yy).astype(float))


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A 3-block BERT with MiniLM's tokenizer, saved as a local model folder (random weights)."""
    from transformers import BertConfig, BertModel

    from freezelab.pretrained import load_tokenizer

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(path)
    load_tokenizer("minilm").save_pretrained(path)
    return path


def test_groups_cover_the_model_and_random_init_differs(tiny_encoder):
    from freezelab.pretrained import load_encoder

    task = ClassifyTask()
    opts = ClassifyOptions(encoder=str(tiny_encoder), top_layers=1)
    model = task.build_model(opts, seed=0)
    groups = task.param_groups(model)
    assert list(groups) == ["embeddings", "lower", "top", "head"]
    assert len(groups["lower"]) == 2 and len(groups["top"]) == 1
    owned = [id(p) for mods in groups.values() for m in (mods if isinstance(mods, list) else [mods])
             for p in m.parameters()]
    assert sorted(owned) == sorted(id(p) for p in model.parameters())  # every tensor in exactly one group
    loaded = load_encoder(str(tiny_encoder))
    for name, value in model.encoder.state_dict().items():
        torch.testing.assert_close(value, loaded.state[name], rtol=0, atol=0)
    random = task.build_model(ClassifyOptions(encoder=str(tiny_encoder), pretrained=False), seed=0)
    assert not torch.equal(random.encoder.embeddings.word_embeddings.weight, loaded.state[
        "embeddings.word_embeddings.weight"])
    again = task.build_model(ClassifyOptions(encoder=str(tiny_encoder), pretrained=False), seed=0)
    torch.testing.assert_close(again.encoder.embeddings.word_embeddings.weight,
                               random.encoder.embeddings.word_embeddings.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match="top_layers=3"):
        task.build_model(ClassifyOptions(encoder=str(tiny_encoder), top_layers=3), seed=0)


def test_padding_does_not_change_a_sentence_s_logits(tiny_encoder):
    task = ClassifyTask()
    model = task.build_model(ClassifyOptions(encoder=str(tiny_encoder)), seed=0).eval()
    short = {"input_ids": np.array([101, 2204, 3185, 102]), "label": 1}
    long = {"input_ids": np.array([101, 2204, 3185, 2003, 2307, 2143, 102]), "label": 0}
    with torch.no_grad():
        alone = model(**{k: v for k, v in task.collate([short]).items() if k != "label"})
        padded = model(**{k: v for k, v in task.collate([short, long]).items() if k != "label"})
    torch.testing.assert_close(alone[0], padded[0], rtol=1e-5, atol=1e-6)


def test_incomplete_checkpoint_is_refused(tiny_encoder, tmp_path):
    """A model folder missing an encoder tensor would load with that tensor random: refused, naming it."""
    import shutil

    from safetensors.torch import load_file, save_file

    from freezelab.errors import PretrainedUnavailableError
    from freezelab.pretrained import load_encoder

    broken = tmp_path / "broken"
    shutil.copytree(tiny_encoder, broken)
    weights = load_file(broken / "model.safetensors")
    victim = next(k for k in weights if "layer.1.attention.self.query.weight" in k)
    del weights[victim]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(PretrainedUnavailableError, match="missing from the checkpoint.*query"):
        load_encoder(str(broken))
