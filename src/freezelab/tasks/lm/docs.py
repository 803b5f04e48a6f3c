"""One split's documents as one flat token array plus document offsets (the LM task's data unit)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenDocs:
    """All documents of one split as one flat token array plus document offsets."""

    ids: np.ndarray  # (N,) int64, every document's tokens concatenated
    offsets: np.ndarray  # (n_docs + 1,) int64, document d is ids[offsets[d]:offsets[d + 1]]
    doc_names: tuple[str, ...]  # (n_docs,)

    def __post_init__(self) -> None:
        assert self.offsets.ndim == 1 and self.offsets[0] == 0 and self.offsets[-1] == len(self.ids)
        assert len(self.doc_names) == len(self.offsets) - 1

    @property
    def n_docs(self) -> int:
        return len(self.doc_names)

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (n_docs,)

    @property
    def n_targets(self) -> int:
        """Next-token positions inside documents: sum over documents of (length - 1)."""
        return int(np.maximum(self.lengths - 1, 0).sum())

    def target_positions(self, stream: bool = False) -> np.ndarray:
        """Positions t whose next token ids[t + 1] is a target: inside documents, or with ``stream`` (one
        stream over all documents, ``context.reset: stream``) every t < N - 1, as the model scores them."""
        if stream:
            return np.arange(max(self.n_tokens - 1, 0))
        is_last = np.zeros(self.n_tokens, dtype=bool)
        is_last[self.offsets[1:][self.lengths > 0] - 1] = True  # a document's last token has no target
        return np.flatnonzero(~is_last)  # (n_targets,)

    def target_pairs(self, stream: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), both (n,): ids[:-1] and ids[1:] of every document, concatenated (``stream``:
        of the whole split, so a document's last token predicts the next document's first)."""
        pos = self.target_positions(stream)
        return self.ids[pos], self.ids[pos + 1]

    def target_documents(self, stream: bool = False) -> np.ndarray:
        """The document of each target's input token, (n,) (a cross-document target counts in the first)."""
        return np.searchsorted(self.offsets, self.target_positions(stream), side="right") - 1
