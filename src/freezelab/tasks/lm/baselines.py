"""Naive language-model baselines scored on the same target positions as the arms (cvfp-lm.md §10).

- Unigram with add-k smoothing over all V; k is chosen on a held-out 10 % of the train documents,
  then the model is refit on all of train.
- Interpolated Kneser-Ney bigram (Chen & Goodman 1999, eq. 13) with one discount d = 0.75. Its lower
  order is the continuation unigram, itself interpolated with the uniform distribution over V, so every
  token has non-zero mass:

      P(w | v)  = max(c(v, w) - d, 0) / c(v)  +  d * N1+(v .) / c(v) * P_low(w)      (c(v) > 0)
      P(w | v)  = P_low(w)                                                           (c(v) = 0)
      P_low(w)  = max(N1+(. w) - d, 0) / N1+(. .)  +  d * |{w : N1+(. w) > 0}| / N1+(. .) / V

Targets are the model's: next tokens inside a document (for each document, inputs ids[:-1] and targets
ids[1:]), or with ``stream`` (``context.reset: stream``, the original's one stream) every next token of the
split, the cross-document ones included, counted in the document of their input token; in stream mode the
baselines are also fitted on the train stream's pairs, as the model trains on them.
Everything is vectorised with numpy: bigram counts live in a sorted array of keys prev * V + next, so
V = 50,257 and a million tokens take well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from freezelab.errors import DataError
from freezelab.tasks.lm.data import TokenDocs

DEFAULT_K_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class BaselineScore:
    """Mean next-token cross-entropy (nats), perplexity, top-1 accuracy and optional bits-per-byte."""

    loss: float
    ppl: float
    acc: float
    n_targets: int
    bpb: float | None = None


def _score(log_p: np.ndarray, correct: np.ndarray, targets: np.ndarray,
           token_bytes: np.ndarray | None) -> BaselineScore:
    """Summarise per-target log-probabilities (n,) and top-1 hits (n,) into a BaselineScore."""
    if len(log_p) == 0:
        raise DataError("Cannot score a baseline on a split without next-token targets (all documents "
                        "shorter than 2 tokens). Use longer documents.")
    loss = float(-log_p.mean())
    bpb = None
    if token_bytes is not None:
        n_bytes = int(token_bytes[targets].sum())
        bpb = float(-log_p.sum() / (np.log(2) * n_bytes)) if n_bytes > 0 else float("nan")
    return BaselineScore(loss=loss, ppl=float(np.exp(loss)), acc=float(correct.mean()),
                         n_targets=len(log_p), bpb=bpb)


# ---------------------------------------------------------------------------------------------------
# Unigram


@dataclass(frozen=True)
class UnigramModel:
    """Add-k unigram: P(w) = (c(w) + k) / (N + k V), counts over train targets."""

    counts: np.ndarray  # (V,) int64 target counts on train
    k: float
    k_losses: dict[float, float] = field(default_factory=dict)  # held-out CE (nats) for each k tried

    @property
    def vocab_size(self) -> int:
        return len(self.counts)

    def log_probs(self) -> np.ndarray:
        """log P(w) for every token, shape (V,)."""
        return np.log(self.counts + self.k) - np.log(self.counts.sum() + self.k * self.vocab_size)

    def score(self, docs: TokenDocs, token_bytes: np.ndarray | None = None, *, stream: bool = False) -> BaselineScore:
        """CE, PPL and top-1 (always the most frequent train token) on docs' next-token targets."""
        _, targets = docs.target_pairs(stream)  # (n,)
        return _score(self.log_probs()[targets], targets == int(np.argmax(self.counts)), targets, token_bytes)


def _target_counts(docs: TokenDocs, vocab_size: int, stream: bool = False) -> np.ndarray:
    _, targets = docs.target_pairs(stream)
    return np.bincount(targets, minlength=vocab_size).astype(np.int64)  # (V,)


def _subset(docs: TokenDocs, keep: np.ndarray) -> TokenDocs:
    """The documents whose indices are in keep, in that order."""
    parts = [docs.ids[docs.offsets[d] : docs.offsets[d + 1]] for d in keep]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    ids = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return TokenDocs(ids=ids, offsets=offsets, doc_names=tuple(docs.doc_names[d] for d in keep))


def fit_unigram(train: TokenDocs, vocab_size: int, *, k_grid: tuple[float, ...] = DEFAULT_K_GRID,
                seed: int = 0, stream: bool = False) -> UnigramModel:
    """Fit an add-k unigram; k minimises CE on a held-out 10 % of train documents, then refit on all.

    Args:
        train: train documents; their next-token targets are counted.
        vocab_size: V, the number of outcomes smoothed over.
        k_grid: candidate k > 0; ties go to the first.
        seed: seed of the held-out document draw.
        stream: count the train stream's targets (module docstring).

    Returns:
        The model refit on all of train with the chosen k; ``k_losses`` holds every candidate's CE.

    Raises:
        DataError: fewer than 2 train documents (nothing to hold out).
    """
    if train.n_docs < 2:
        raise DataError(f"The unigram baseline needs at least 2 train documents to choose k; got {train.n_docs}.")
    if not k_grid or min(k_grid) <= 0:
        raise ValueError(f"k_grid must hold positive values, got {k_grid}")
    perm = np.random.default_rng(seed).permutation(train.n_docs)
    n_held = max(1, round(0.1 * train.n_docs))
    fit_counts = _target_counts(_subset(train, np.sort(perm[n_held:])), vocab_size, stream)  # (V,)
    held_counts = _target_counts(_subset(train, np.sort(perm[:n_held])), vocab_size, stream)  # (V,)
    k_losses = {}
    for k in k_grid:
        log_p = UnigramModel(counts=fit_counts, k=k).log_probs()  # (V,)
        k_losses[k] = float(-(held_counts * log_p).sum() / max(held_counts.sum(), 1))
    best_k = min(k_grid, key=lambda k: k_losses[k])
    return UnigramModel(counts=_target_counts(train, vocab_size, stream), k=best_k, k_losses=k_losses)


# ---------------------------------------------------------------------------------------------------
# Interpolated Kneser-Ney bigram


@dataclass(frozen=True)
class KNBigramModel:
    """Interpolated Kneser-Ney bigram with a uniform-smoothed continuation unigram (module docstring)."""

    vocab_size: int
    discount: float
    keys: np.ndarray  # (n_types,) int64 sorted distinct bigrams prev * V + next
    pair_counts: np.ndarray  # (n_types,) int64 c(v, w)
    context_counts: np.ndarray  # (V,) int64 c(v) = sum_w c(v, w)
    context_types: np.ndarray  # (V,) int64 N1+(v .), distinct followers of v
    p_low: np.ndarray  # (V,) float64 lower-order distribution, sums to 1
    top1: np.ndarray  # (V,) int64 argmax_w P(w | v) for every context v

    def log_probs(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """log P(nxt | prev) for paired arrays of shape (n,)."""
        V, d = self.vocab_size, self.discount
        key = prev.astype(np.int64) * V + nxt
        pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)  # keys is never empty
        c_vw = np.where(self.keys[pos] == key, self.pair_counts[pos], 0)  # (n,) c(prev, nxt)
        c_v = self.context_counts[prev].astype(np.float64)  # (n,)
        seen = c_v > 0
        safe = np.where(seen, c_v, 1.0)
        lam = np.where(seen, d * self.context_types[prev] / safe, 1.0)  # back-off weight, 1 for unseen v
        p = np.maximum(c_vw - d, 0) / safe + lam * self.p_low[nxt]
        return np.log(p)

    def next_token_probs(self, prev: int) -> np.ndarray:
        """P(. | prev) over the whole vocabulary, shape (V,) (for tests and inspection)."""
        nxt = np.arange(self.vocab_size)
        return np.exp(self.log_probs(np.full(self.vocab_size, prev), nxt))

    def score(self, docs: TokenDocs, token_bytes: np.ndarray | None = None, *, stream: bool = False) -> BaselineScore:
        """CE, PPL and top-1 (argmax of P(. | prev)) on docs' next-token targets."""
        prev, targets = docs.target_pairs(stream)  # (n,), (n,)
        return _score(self.log_probs(prev, targets), self.top1[prev] == targets, targets, token_bytes)


def fit_kn_bigram(train: TokenDocs, vocab_size: int, discount: float = 0.75, *, stream: bool = False) -> KNBigramModel:
    """Count train bigrams and build the interpolated Kneser-Ney model.

    Args:
        train: train documents (bigrams never cross a document boundary, unless ``stream``).
        vocab_size: V; every token of V gets non-zero probability.
        discount: absolute discount d in (0, 1].

    Returns:
        A KNBigramModel, including the top-1 prediction for every context.

    Raises:
        DataError: train has no bigram at all.
    """
    if not 0 < discount <= 1:
        raise ValueError(f"discount must be in (0, 1], got {discount}")
    V, d = vocab_size, discount
    prev, nxt = train.target_pairs(stream)  # (n,), (n,)
    if len(prev) == 0:
        raise DataError("The KN bigram baseline has no train bigrams: every train document is shorter than "
                        "2 tokens. Use longer documents.")
    keys, pair_counts = np.unique(prev * V + nxt, return_counts=True)  # (n_types,) sorted
    key_prev, key_next = keys // V, keys % V
    context_counts = np.bincount(prev, minlength=V).astype(np.int64)  # c(v)
    context_types = np.bincount(key_prev, minlength=V).astype(np.int64)  # N1+(v .)
    continuation = np.bincount(key_next, minlength=V).astype(np.float64)  # N1+(. w)
    n_types = len(keys)  # N1+(. .)
    p_low = (np.maximum(continuation - d, 0) + d * np.count_nonzero(continuation) / V) / n_types  # (V,)

    # Top-1 per context: the best observed follower, unless lam(v) * max P_low is larger; unseen
    # contexts predict argmax P_low. Ties go to the lowest token id.
    lam = d * context_types[key_prev] / context_counts[key_prev]
    pair_p = (pair_counts - d) / context_counts[key_prev] + lam * p_low[key_next]  # (n_types,)
    order = np.lexsort((key_next, -pair_p, key_prev))  # by context, best first, lowest id first
    first = order[np.r_[True, key_prev[order][1:] != key_prev[order][:-1]]]  # best pair per seen context
    top1 = np.full(V, int(np.argmax(p_low)), dtype=np.int64)  # (V,)
    best_v = key_prev[first]
    backoff_p = d * context_types[best_v] / context_counts[best_v] * p_low.max()
    top1[best_v] = np.where(pair_p[first] >= backoff_p, key_next[first], top1[best_v])
    return KNBigramModel(vocab_size=V, discount=d, keys=keys, pair_counts=pair_counts.astype(np.int64),
                         context_counts=context_counts, context_types=context_types, p_low=p_low, top1=top1)


# ---------------------------------------------------------------------------------------------------


def score_baselines(train: TokenDocs, val: TokenDocs, test: TokenDocs, vocab_size: int, *,
                    token_bytes: np.ndarray | None = None, stream: bool = False) -> dict[str, dict[str, float]]:
    """Fit both baselines on train and score val and test.

    Args:
        train, val, test: the study's splits.
        vocab_size: V.
        token_bytes: (V,) UTF-8 bytes per token; when given, ``val/bpb`` and ``test/bpb`` are added.
        stream: the model's one-stream targets, cross-document ones included (module docstring).

    Returns:
        {"unigram": {"val/loss", "val/ppl", "val/acc", "test/loss", ...}, "kn_bigram": {...}}.
    """
    models = _fit(train, vocab_size, stream)
    out: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        out[name] = {}
        for split, docs in (("val", val), ("test", test)):
            s = model.score(docs, token_bytes, stream=stream)
            out[name].update({f"{split}/loss": s.loss, f"{split}/ppl": s.ppl, f"{split}/acc": s.acc})
            if s.bpb is not None:
                out[name][f"{split}/bpb"] = s.bpb
    return out


def _fit(train: TokenDocs, vocab_size: int, stream: bool) -> dict[str, UnigramModel | KNBigramModel]:
    return {"unigram": fit_unigram(train, vocab_size, stream=stream),
            "kn_bigram": fit_kn_bigram(train, vocab_size, stream=stream)}


def document_scores(model: UnigramModel | KNBigramModel, docs: TokenDocs,
                    token_bytes: np.ndarray | None = None, *, stream: bool = False) -> dict[str, np.ndarray]:
    """Per-document sums of a baseline on docs' next-token targets (the columns of items/<name>.npz).

    Returns:
        {"id", "loss_sum", "tokens", "correct", "bytes"}, each (n_docs with a target,), ``id`` the
        document index in the split.
    """
    prev, targets = docs.target_pairs(stream)  # (n,), (n,)
    if isinstance(model, UnigramModel):
        log_p, hit = model.log_probs()[targets], targets == int(np.argmax(model.counts))
    else:
        log_p, hit = model.log_probs(prev, targets), model.top1[prev] == targets
    doc = docs.target_documents(stream)  # (n,) document of each target's input token
    n_targets = np.bincount(doc, minlength=docs.n_docs)  # (n_docs,)
    nb = token_bytes[targets] if token_bytes is not None else np.zeros(len(targets))
    cols = {"loss_sum": np.bincount(doc, -log_p, docs.n_docs), "tokens": n_targets.astype(np.float64),
            "correct": np.bincount(doc, hit.astype(np.float64), docs.n_docs),
            "bytes": np.bincount(doc, nb.astype(np.float64), docs.n_docs)}
    keep = n_targets > 0
    return {"id": np.arange(docs.n_docs)[keep], **{k: v[keep] for k, v in cols.items()}}


def baseline_items(train: TokenDocs, val: TokenDocs, test: TokenDocs, vocab_size: int, *,
                   token_bytes: np.ndarray | None = None,
                   stream: bool = False) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Both baselines fitted on train as in ``score_baselines``, scored per document on val and test.

    Returns:
        {"unigram": {"val": columns, "test": columns}, "kn_bigram": {...}} (see ``document_scores``).
    """
    models = _fit(train, vocab_size, stream)
    return {name: {split: document_scores(model, docs, token_bytes, stream=stream)
                   for split, docs in (("val", val), ("test", test))}
            for name, model in models.items()}
