"""The original's token-level train/val cut (``data.split: token_fraction``; cvfp-lm.md §6, §9 flaw 4).

The seed loaded N + 50 conversations, concatenated them into one stream of T tokens and cut it at token
⌊T·N/(N+50)⌋: the cut falls inside a conversation, whose head trains and whose tail is validated on, and
the validation set changes with N. freezelab's default splits whole documents; this reproduces the cut
on freezelab's document split (train documents, then val documents, in order; test stays whole).
"""

from __future__ import annotations

import numpy as np

from freezelab.errors import DataError
from freezelab.tasks.lm.docs import TokenDocs


def token_fraction_split(train: TokenDocs, val: TokenDocs) -> tuple[TokenDocs, TokenDocs]:
    """Concatenate train then val documents and cut the stream at ⌊T·n_train/(n_train + n_val)⌋ tokens.

    Args:
        train: the train documents (N of them).
        val: the val documents.

    Returns:
        (train, val): the documents before the cut, and those after it; the document the cut falls in is
        split in two pieces with the same name, its head ending train and its tail opening val.

    Raises:
        DataError: the cut leaves train or val without a token, or falls on a document boundary (then
            nothing is cut: the option would silently be data.split=document).
    """
    ids = np.concatenate([train.ids, val.ids])                                   # (T,)
    offsets = np.concatenate([train.offsets, val.offsets[1:] + train.n_tokens])  # (n_train + n_val + 1,)
    names = train.doc_names + val.doc_names
    cut = len(ids) * train.n_docs // (train.n_docs + val.n_docs)
    if not 0 < cut < len(ids):
        raise DataError(f"data.split=token_fraction: the cut at token {cut} of {len(ids)} leaves a split empty. "
                        "Use more documents, or data.split: document.")
    d = int(np.searchsorted(offsets, cut, side="right") - 1)                     # offsets[d] <= cut < offsets[d+1]
    if offsets[d] == cut:  # on a boundary: nothing is cut, the split is data.split=document's (a silent no-op)
        lengths = np.diff(offsets)
        same = (f"every train and val document has {int(lengths[0])} tokens (data.max_tokens_per_doc caps them), so "
                if len(set(lengths.tolist())) == 1 else "")
        raise DataError(f"data.split=token_fraction: the cut at token {cut:,} of {len(ids):,} "
                        f"(⌊T·{train.n_docs}/{train.n_docs + val.n_docs}⌋) falls on a document boundary: {same}no "
                        "document is split and the split is exactly data.split=document's. Raise or drop "
                        "data.max_tokens_per_doc, change data.max_train_docs or data.n_val_docs so the cut falls "
                        "inside a document, or use data.split: document.")
    head, head_names = np.append(offsets[: d + 1], cut), names[: d + 1]
    tail = np.concatenate([[0], offsets[d + 1:] - cut])
    return (TokenDocs(ids[:cut], head.astype(np.int64), head_names),
            TokenDocs(ids[cut:], tail.astype(np.int64), names[d:]))
