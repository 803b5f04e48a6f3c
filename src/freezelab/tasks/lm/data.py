"""Documents for the language-model study: load texts, split by document, tokenize, hash.

Three sources (spec cvfp-lm.md §6, §9 rows 3-4):
- ``wiki_excerpt``: the real English Wikipedia excerpt shipped in gensim's wheel (offline default),
  parsed with gensim's ``extract_pages`` / ``filter_wiki`` and cleaned to prose, one document per article.
- ``text_files``: a glob or a directory of UTF-8 ``*.txt`` files, one document per file or per
  blank-line-separated block.
- ``hf_dataset``: the first ``max_docs`` rows of a streamed Hugging Face dataset (the seed used
  ``HuggingFaceH4/ultrachat_200k``, split ``train_sft``); ``messages`` contents are joined with one space.

The split is by source document, never mid-document, and the held-out documents do not depend on
``max_train_docs``: val/test are the first documents of a fixed order (a seeded permutation of all
loaded documents, or source order for streamed sources), train is the rest, then truncated.
"""

from __future__ import annotations

import bz2
import glob
import hashlib
import importlib.util
import itertools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from freezelab.errors import ConfigError, DataError, DataNotFoundError
from freezelab.tasks.lm.docs import TokenDocs
from freezelab.tasks.lm.token_split import token_fraction_split

log = logging.getLogger(__name__)

SOURCES = ("wiki_excerpt", "text_files", "hf_dataset")
WIKI_EXCERPT = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


@dataclass(frozen=True)
class LMData:
    """Train/val/test documents of one study, with the hashes that prove every arm saw the same data."""

    train: TokenDocs
    val: TokenDocs
    test: TokenDocs
    vocab_size: int
    data_hash: str  # sha256 over the raw texts loaded, in order
    split_hash: str  # sha256 over the document names of each split, in order, and their token ids
    token_bytes: np.ndarray | None  # (vocab_size,) int64 UTF-8 bytes per token, for bits-per-byte
    dropped: tuple[str, ...] = ()  # pieces dropped as shorter than min_tokens_per_doc


# ---------------------------------------------------------------------------------------------------
# Loading raw texts


def load_texts(
    source: str,
    *,
    path: str | None,
    hf_name: str | None,
    hf_split: str | None,
    hf_config: str | None,
    max_docs: int | None,
    doc_mode: str,
    hf_data_files: str | list[str] | None = None,
    text: Literal["full", "first_turn"] = "full",
    hf_row_offset: int = 0,
    hf_revision: str | None = None,
) -> list[tuple[str, str]]:
    """Load the raw documents of one source, in source order.

    Args:
        source: ``wiki_excerpt``, ``text_files`` or ``hf_dataset``.
        path: for ``text_files``, a glob or a directory (all ``*.txt`` below it, sorted).
        hf_name: for ``hf_dataset``, the dataset name (or a builder such as ``json`` with hf_data_files).
        hf_split: for ``hf_dataset``, the split, e.g. ``train_sft``.
        hf_config: for ``hf_dataset``, the config name or None.
        max_docs: keep only the first max_docs documents (streamed sources read only these rows).
        doc_mode: for ``text_files``, ``file`` (one document per file) or ``blank_line`` (one per block).
        hf_data_files: for ``hf_dataset`` with a local builder (``json``, ``text``), the files to read.
        text: ``full``, or ``first_turn``: a chat row's first user message, and for every other document its
            first paragraph (``first_paragraph``: wiki articles, text files, rows with a ``text`` field).
        hf_row_offset: for ``hf_dataset``, rows skipped first (documents are named by their row index).
        hf_revision: for ``hf_dataset``, the dataset revision to read.

    Returns:
        A list of (name, text), e.g. ("wiki:Anarchism", "..."), ("file:a.txt#3", "...").

    Raises:
        ConfigError: unknown source, or a required argument missing.
        DataNotFoundError: the glob matches nothing, or the dataset cannot be loaded.
        DataError: a file is unreadable, not UTF-8 or empty; a row has no text.
    """
    if source not in SOURCES:
        raise ConfigError(f"Unknown LM data source {source!r}. Use one of: {', '.join(SOURCES)}.")
    if max_docs is not None and max_docs < 1:
        raise ConfigError(f"max_docs={max_docs} must be >= 1 (or null for all documents).")
    if source == "wiki_excerpt":
        docs = load_wiki_excerpt()
    elif source == "text_files":
        if not path:
            raise ConfigError("source 'text_files' needs a path (a glob such as 'data/*.txt' or a directory).")
        docs = load_text_files(path, doc_mode=doc_mode)
    else:
        if not hf_name or not hf_split:
            raise ConfigError("source 'hf_dataset' needs hf_name and hf_split, e.g. "
                              "HuggingFaceH4/ultrachat_200k and train_sft.")
        return load_hf_rows(hf_name, hf_split, hf_config, max_docs=max_docs, data_files=hf_data_files, text=text,
                            row_offset=hf_row_offset, revision=hf_revision)
    if text == "first_turn":
        docs = [(name, first_paragraph(body)) for name, body in docs]
    return docs[:max_docs] if max_docs is not None else docs


def load_wiki_excerpt() -> list[tuple[str, str]]:
    """Articles of gensim's English Wikipedia excerpt, cleaned to prose; redirects and empty ones skipped."""
    from gensim.corpora.wikicorpus import extract_pages  # gensim is slow to import; only here

    spec = importlib.util.find_spec("gensim")
    if spec is None or spec.origin is None:
        raise DataNotFoundError("The offline Wikipedia excerpt ships with gensim, which is not installed. "
                                "Run 'pip install gensim', or use source: text_files.")
    dump = Path(spec.origin).parent / WIKI_EXCERPT
    if not dump.is_file():
        raise DataNotFoundError(f"Wikipedia excerpt not found: {dump}. Reinstall gensim>=4.3 "
                                "(its wheel ships the file), or use source: text_files.")
    docs = []
    with bz2.open(dump, "rb") as f:
        for title, markup, _page_id in extract_pages(f):
            if re.match(r"\s*#redirect", markup, flags=re.IGNORECASE):
                continue
            text = clean_wiki_markup(markup)
            if text:
                docs.append((f"wiki:{title}", text))
    return docs


# Trailing sections that are lists of citations and links rather than prose.
_TAIL_SECTIONS = re.compile(
    r"^=+\s*(see also|references|notes|footnotes|citations|further reading|external links|"
    r"bibliography|sources|works cited|notes and references|references and notes)\s*=+\s*$",
    flags=re.IGNORECASE | re.MULTILINE,
)
_LINE_DROP = re.compile(  # heading, gallery entry ("File:x.jpg|caption", "x.jpg|caption"), no word at all
    r"^\s*(=+.*=+|(file|image):.*|.*\.(jpe?g|png|gif|svg|tiff?|ogg|ogv|webm)\s*\|.*|\W*)\s*$", flags=re.IGNORECASE
)
_INLINE_DROP = [
    (re.compile(r"'{2,}"), ""),  # ''italic'' and '''bold'''
    (re.compile(r"<[^>\n]{0,200}>"), ""),  # leftover HTML tags
    (re.compile(r"\{\{[^{}\n]*\}\}|\{\||\|\}|\[\[|\]\]|\{\{|\}\}"), ""),  # leftover templates/tables/links
    (re.compile(r"\|\s*(alt|upright|thumb)\b[^\n]*"), ""),  # image options after a caption
    (re.compile(r"\|?\b\d+(x\d+)?px|__[A-Z]+__"), " "),  # image sizes, magic words
    (re.compile(r"\|[ \t]*$", flags=re.MULTILINE), ""),  # caption ends
    (re.compile(r"^[*#:;]+\s*", flags=re.MULTILINE), ""),  # list markers
    (re.compile(r"\(\s*[,;]?\s*\)"), ""),  # parentheses emptied by filter_wiki
    (re.compile(r"[ \t]{2,}"), " "),
]


def clean_wiki_markup(markup: str) -> str:
    """Wiki markup -> prose: gensim's ``filter_wiki``, then drop what it leaves behind.

    Removes trailing citation sections (See also, References, ...), heading lines, gallery lines,
    bold/italic quotes, leftover tags/templates/table fences, image options and list markers, and
    collapses runs of blank lines to one. Returns "" for an article without prose.
    """
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(markup)
    tail = _TAIL_SECTIONS.search(text)
    if tail:
        text = text[: tail.start()]
    for pattern, repl in _INLINE_DROP:
        text = pattern.sub(repl, text)
    lines = [line.strip() for line in text.split("\n")]
    lines = ["" if _LINE_DROP.match(line) else line for line in lines]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def load_text_files(path: str, *, doc_mode: str) -> list[tuple[str, str]]:
    """UTF-8 text files matched by a glob (or all ``*.txt`` below a directory), sorted by path."""
    if doc_mode not in ("file", "blank_line"):
        raise ConfigError(f"doc_mode={doc_mode!r} is not valid for text_files. Use 'file' or 'blank_line'.")
    if Path(path).is_dir():
        files = sorted(str(p) for p in Path(path).rglob("*.txt") if p.is_file())
    else:
        files = sorted(p for p in glob.glob(path, recursive=True) if Path(p).is_file())
    if not files:
        raise DataNotFoundError(f"No text files match {path!r} (text_files path). Fix the glob or directory; "
                                "a directory is searched recursively for *.txt.")
    docs = []
    for file in files:
        try:
            text = Path(file).read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{file} is not valid UTF-8 (byte {e.start}). Re-encode it, e.g. "
                            f"'iconv -f latin1 -t utf-8', or exclude it from {path!r}.") from e
        except OSError as e:
            raise DataError(f"Cannot read {file}: {e.strerror}. Fix its permissions or exclude it.") from e
        text = text.replace("\r\n", "\n")
        if doc_mode == "file":
            blocks = [text] if text.strip() else []
        else:
            blocks = [b.strip() for b in re.split(r"\n[ \t]*\n", text) if b.strip()]
        if not blocks:
            raise DataError(f"{file} contains no text. Delete it or exclude it from {path!r}.")
        if doc_mode == "file":
            docs.append((f"file:{file}", text))
        else:
            docs.extend((f"file:{file}#{k}", block) for k, block in enumerate(blocks))
    return docs


LEAD_MIN_WORDS = 20  # a shorter leading block is a caption or hatnote, not the article's lead paragraph


def first_paragraph(text: str) -> str:
    """The first blank-line-separated block of at least LEAD_MIN_WORDS words (a wiki article's lead paragraph;
    a shorter leading caption is skipped), else the first non-empty block."""
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    return next((b for b in blocks if len(b.split()) >= LEAD_MIN_WORDS), blocks[0] if blocks else text)


def row_to_text(row: dict[str, Any], *, name: str, text: str = "full") -> str:
    """One dataset row -> text: ``messages[*].content`` joined with one space (roles dropped), else ``text``.

    With ``text="first_turn"``: the content of the first message whose role is ``user`` (the seed's untied
    arm, cvfp-lm.md §9 row 1), or the first paragraph of a ``text`` field (``first_paragraph``).

    Raises:
        DataError: the row has neither a ``messages`` list nor a ``text`` string, or no user turn.
    """
    messages = row.get("messages")
    if isinstance(messages, list):
        if text == "first_turn":
            turn = next((m for m in messages if isinstance(m, dict) and m.get("role") == "user"), None)
            if turn is None:
                raise DataError(f"Row {name} has no message with role 'user' (data.text=first_turn); its roles "
                                f"are {[m.get('role') for m in messages if isinstance(m, dict)]}. Use data.text: "
                                "full, or a chat dataset with user turns.")
            return str(turn["content"])
        return " ".join(str(m["content"]) for m in messages)
    if isinstance(row.get("text"), str):
        return first_paragraph(row["text"]) if text == "first_turn" else row["text"]
    raise DataError(f"Row {name} has neither 'messages' (list of role/content) nor a 'text' field; "
                    f"its fields are {sorted(row)}. Use a chat dataset like ultrachat_200k or a text column.")


def load_hf_rows(name: str, split: str, config: str | None, *, max_docs: int | None,
                 data_files: str | list[str] | None = None, text: str = "full", row_offset: int = 0,
                 revision: str | None = None) -> list[tuple[str, str]]:
    """Stream max_docs rows of a Hugging Face dataset from row ``row_offset`` on, in dataset order; each
    document is named by its row index in the split (``hf:<name>/<split>#<row>``)."""
    import datasets  # heavy import, only for this source

    label = f"{name}/{split}" if config is None else f"{name}[{config}]/{split}"
    label_at = label + (f"@{revision}" if revision else "")
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True, data_files=data_files,
                                   revision=revision)
        rows = list(itertools.islice(ds, row_offset, None if max_docs is None else row_offset + max_docs))
    except Exception as e:  # the hub raises ConnectionError, OSError, FileNotFoundError, HfHubHTTPError...
        raise DataNotFoundError(
            f"Dataset {label} could not be loaded ({type(e).__name__}: {str(e)[:200]}). It needs internet "
            "access or a local cache (set HF_HUB_OFFLINE=1 to use the cache); or use source: text_files "
            "with local files.") from e
    if not rows and row_offset:
        raise DataError(f"Dataset {label_at} has no rows from data.hf_row_offset={row_offset} on: the split is "
                        "shorter. Lower data.hf_row_offset.")
    names = [f"hf:{label_at}#{row_offset + i}" for i in range(len(rows))]
    return [(nm, row_to_text(row, name=nm, text=text)) for nm, row in zip(names, rows)]


# ---------------------------------------------------------------------------------------------------
# Splitting and tokenizing


def build_lm_data(
    texts: list[tuple[str, str]],
    tokenizer: Any,
    *,
    n_val_docs: int,
    n_test_docs: int,
    max_train_docs: int | None,
    max_tokens_per_doc: int | None,
    overflow: Literal["truncate", "chunk"],
    min_tokens_per_doc: int = 2,
    data_seed: int,
    add_eos: bool = False,
    shuffle_docs: bool,
    split: Literal["document", "token_fraction"] = "document",
) -> LMData:
    """Split documents into train/val/test by source document, tokenize, cap lengths and hash.

    The order is a permutation of all loaded documents from ``default_rng(data_seed)`` when shuffle_docs,
    else source order. val = order[:n_val_docs], test = the next n_test_docs, train = the rest,
    truncated to max_train_docs, so val/test never depend on max_train_docs.

    Args:
        texts: (name, text) from ``load_texts``.
        tokenizer: a Hugging Face tokenizer (fast tokenizers batch in Rust).
        n_val_docs: source documents held out for validation.
        n_test_docs: source documents held out for the final test.
        max_train_docs: keep at most this many train documents (None: all the rest).
        max_tokens_per_doc: length cap per document (None: no cap).
        overflow: ``truncate`` keeps the first max_tokens_per_doc tokens; ``chunk`` cuts the document
            into consecutive pieces named ``name@k``, all in the document's split, each its own document.
        min_tokens_per_doc: pieces shorter than this are dropped (they hold no next-token target at 1).
        data_seed: seed of the document permutation, separate from the run seed.
        add_eos: append the tokenizer's EOS (or SEP) id to each source document before the cap; with
            ``truncate`` the document is cut to max_tokens_per_doc - 1 tokens plus EOS.
        shuffle_docs: permute documents (fully loaded sources) or keep source order (streamed sources).
        split: ``document`` keeps whole documents; ``token_fraction`` then cuts train + val at the original's
            token index, splitting one document across them (``token_split.py``; the split hash records it).

    Returns:
        LMData with the three splits, vocab size, data/split hashes and per-token UTF-8 byte lengths.

    Raises:
        DataError: no documents; too few documents for val/test; a document tokenizes to nothing;
            no EOS token; a split left empty after dropping short pieces.
    """
    if not texts:
        raise DataError("No documents were loaded. Check the data source (lm data path / dataset) and max_docs.")
    n = len(texts)
    if n_val_docs < 1 or n_test_docs < 1 or n <= n_val_docs + n_test_docs:
        raise DataError(f"{n} documents were loaded but n_val_docs={n_val_docs} + n_test_docs={n_test_docs} "
                        "are held out and train needs at least one (and val/test at least one each). "
                        "Load more documents (max_docs) or lower n_val_docs / n_test_docs.")
    if max_tokens_per_doc is not None and max_tokens_per_doc < 2:
        raise ConfigError(f"max_tokens_per_doc={max_tokens_per_doc} must be >= 2 (or null for no cap).")
    if overflow not in ("truncate", "chunk"):
        raise ConfigError(f"overflow={overflow!r} is not valid. Use 'truncate' or 'chunk'.")
    eos_id = _eos_id(tokenizer) if add_eos else None
    split_mode = split  # (the loop below reuses the name for each split)

    order = np.random.default_rng(data_seed).permutation(n) if shuffle_docs else np.arange(n)
    split_idx = {"val": order[:n_val_docs], "test": order[n_val_docs : n_val_docs + n_test_docs],
                 "train": order[n_val_docs + n_test_docs :][:max_train_docs]}
    splits, dropped = {}, []
    for split, idx in split_idx.items():
        names = [texts[i][0] for i in idx]
        token_lists = tokenizer([texts[i][1] for i in idx], add_special_tokens=False, verbose=False)["input_ids"]
        pieces: list[tuple[str, list[int]]] = []
        for name, ids in zip(names, token_lists):
            if not ids:
                raise DataError(f"Document {name} tokenizes to nothing. Remove it from the data "
                                "(an empty or whitespace-only text).")
            pieces.extend(_cap_document(name, list(ids), eos_id, max_tokens_per_doc, overflow))
        kept = [(nm, ids) for nm, ids in pieces if len(ids) >= min_tokens_per_doc]
        dropped += [nm for nm, ids in pieces if len(ids) < min_tokens_per_doc]
        if not kept:
            raise DataError(f"The {split} split is empty: its {len(idx)} documents all have fewer than "
                            f"min_tokens_per_doc={min_tokens_per_doc} tokens. Use longer documents or lower "
                            "min_tokens_per_doc.")
        splits[split] = _to_token_docs(kept)
    if split_mode == "token_fraction":

        splits["train"], splits["val"] = token_fraction_split(splits["train"], splits["val"])
    if dropped:
        log.info("dropped %d document pieces shorter than %d tokens", len(dropped), min_tokens_per_doc)

    data_hash = hashlib.sha256()
    for _, text in texts:
        data_hash.update(_framed(text.encode("utf-8")))
    split_hash = hashlib.sha256()
    for split in ("train", "val", "test"):
        docs = splits[split]
        split_hash.update(_framed(split.encode()))
        split_hash.update(_framed("\n".join(docs.doc_names).encode("utf-8")))
        split_hash.update(_framed(docs.offsets.astype("<i8").tobytes()))
        split_hash.update(_framed(docs.ids.astype("<i8").tobytes()))
    vocab_size = len(tokenizer)
    return LMData(train=splits["train"], val=splits["val"], test=splits["test"], vocab_size=vocab_size,
                  data_hash=data_hash.hexdigest(), split_hash=split_hash.hexdigest(),
                  token_bytes=token_byte_lengths(tokenizer), dropped=tuple(dropped))


def _eos_id(tokenizer: Any) -> int:
    for attr in ("eos_token_id", "sep_token_id"):
        if getattr(tokenizer, attr, None) is not None:
            return int(getattr(tokenizer, attr))
    raise DataError(f"add_eos is set but tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has neither an "
                    "EOS nor a SEP token. Set add_eos: false or use a tokenizer with an EOS token.")


def _cap_document(name: str, ids: list[int], eos_id: int | None, max_len: int | None,
                  overflow: str) -> list[tuple[str, list[int]]]:
    """One source document -> its pieces after EOS and the length cap (see build_lm_data)."""
    if eos_id is not None:
        ids = ids + [eos_id]
    if max_len is None or len(ids) <= max_len:
        return [(name, ids)]
    if overflow == "truncate":
        return [(name, ids[: max_len - 1] + [eos_id] if eos_id is not None else ids[:max_len])]
    return [(f"{name}@{k}", ids[start : start + max_len]) for k, start in enumerate(range(0, len(ids), max_len))]


def _to_token_docs(pieces: list[tuple[str, list[int]]]) -> TokenDocs:
    lengths = np.array([len(ids) for _, ids in pieces], dtype=np.int64)  # (n_docs,)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (n_docs + 1,)
    ids = np.fromiter(itertools.chain.from_iterable(ids for _, ids in pieces), dtype=np.int64,
                      count=int(offsets[-1]))  # (N,)
    return TokenDocs(ids=ids, offsets=offsets, doc_names=tuple(nm for nm, _ in pieces))


def _framed(data: bytes) -> bytes:
    """Length-prefix a field so that concatenated fields hash unambiguously."""
    return len(data).to_bytes(8, "little") + data


# ---------------------------------------------------------------------------------------------------
# Bytes per token, for bits-per-byte


def token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """UTF-8 byte length of each token's text, shape (len(tokenizer),) int64.

    - GPT-2-style byte-level BPE: each character of a token string stands for one byte (the space
      marker ``Ġ`` included), so the count is exact.
    - WordPiece: ``##`` is stripped; a word-initial token does not count the space before it, so the
      bytes are slightly undercounted and bits-per-byte slightly overestimated. Uncased tokenizers count
      the lower-cased, accent-stripped text.
    - SentencePiece: ``▁`` counts as one space byte.
    - Special and added tokens ([CLS], <|endoftext|>, ...) count 0 bytes: they are not text.
    """
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    model = type(getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)).__name__
    byte_chars = _byte_level_chars()
    sample = [t for t in tokens[:2000] if t]
    byte_level = model == "BPE" and all(set(t) <= byte_chars for t in sample)
    lengths = np.zeros(len(tokens), dtype=np.int64)  # (V,)
    for i, tok in enumerate(tokens):
        if i in special or tok is None:
            continue
        if byte_level:
            lengths[i] = len(tok)
        elif tok.startswith("##") and len(tok) > 2:
            lengths[i] = len(tok[2:].encode("utf-8"))
        else:
            lengths[i] = len(tok.replace("\u2581", " ").encode("utf-8"))
    return lengths


def _byte_level_chars() -> set[str]:
    """The 256 printable characters GPT-2's byte-level BPE uses for the bytes 0..255."""
    from tokenizers.pre_tokenizers import ByteLevel

    return set(ByteLevel.alphabet())
