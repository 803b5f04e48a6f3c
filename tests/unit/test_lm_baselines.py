"""LM baselines: normalisation, hand-computed CE, k selection, and vectorised == naive loop."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from freezelab.errors import DataError
from freezelab.tasks.lm.baselines import (
    UnigramModel,
    fit_kn_bigram,
    fit_unigram,
    score_baselines,
)
from freezelab.tasks.lm.data import TokenDocs


def _docs(*docs: list[int]) -> TokenDocs:
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    ids = np.array([t for d in docs for t in d], dtype=np.int64)
    return TokenDocs(ids=ids, offsets=offsets, doc_names=tuple(f"d{i}" for i in range(len(docs))))


def _random_docs(rng: np.random.Generator, n_docs: int, vocab_size: int, max_len: int = 30) -> TokenDocs:
    return _docs(*[rng.integers(0, vocab_size, rng.integers(1, max_len)).tolist() for _ in range(n_docs)])


def test_probabilities_sum_to_one_over_vocab():
    rng = np.random.default_rng(0)
    V = 13
    train = _random_docs(rng, 8, V - 3)  # tokens 10..12 never occur: unseen contexts and unseen targets
    kn = fit_kn_bigram(train, V)
    for prev in range(V):
        p = kn.next_token_probs(prev)
        assert p.shape == (V,) and np.all(p > 0)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert kn.p_low.sum() == pytest.approx(1.0, abs=1e-12)
    uni = fit_unigram(train, V)
    assert np.exp(uni.log_probs()).sum() == pytest.approx(1.0, abs=1e-12)


def test_kn_and_unigram_match_hand_computation():
    # train bigrams: (0,1) x2, (1,2), (1,0); continuation counts N1+(.w) = 1 for w in {0,1,2}, 0 for 3
    train = _docs([0, 1, 2], [0, 1, 0])
    val = _docs([0, 1, 2, 3])  # targets 0->1, 1->2, 2->3 (context 2 never seen)
    d, V = 0.75, 4
    p_low = [(1 - d) / 3 + d * 3 / 3 / V] * 3 + [d * 3 / 3 / V]  # 0.2708.., 0.1875
    p_1_0 = (2 - d) / 2 + d * 1 / 2 * p_low[1]
    p_2_1 = (1 - d) / 2 + d * 2 / 2 * p_low[2]
    p_3_2 = p_low[3]
    kn = fit_kn_bigram(train, V, discount=d)
    s = kn.score(val)
    assert s.loss == pytest.approx(-(math.log(p_1_0) + math.log(p_2_1) + math.log(p_3_2)) / 3, rel=1e-12)
    assert s.ppl == pytest.approx(math.exp(s.loss)) and s.n_targets == 3
    assert kn.top1[:3].tolist() == [1, 0, 0]  # context 1: tie 0/2 -> lowest id; context 2: argmax P_low
    assert s.acc == pytest.approx(1 / 3)

    uni = UnigramModel(counts=np.array([1, 2, 1, 0]), k=0.5)  # train targets 1, 2, 1, 0
    u = uni.score(val)
    assert u.loss == pytest.approx(-(math.log(2.5 / 6) + math.log(1.5 / 6) + math.log(0.5 / 6)) / 3, rel=1e-12)
    assert u.acc == pytest.approx(1 / 3)  # always predicts token 1
    tb = np.array([1, 2, 3, 4])
    assert uni.score(val, tb).bpb == pytest.approx(3 * u.loss / (math.log(2) * (2 + 3 + 4)))


def test_kn_bigram_beats_unigram_on_repetitive_text():
    rng = np.random.default_rng(1)
    V = 50
    cycle = [3, 17, 8, 42, 5, 29, 11]  # a fixed sentence repeated with a little noise
    def doc():
        return [t if rng.random() > 0.05 else int(rng.integers(V)) for t in cycle * int(rng.integers(2, 6))]
    train, val, test = _docs(*[doc() for _ in range(40)]), _docs(*[doc() for _ in range(5)]), _docs(doc())
    scores = score_baselines(train, val, test, V)
    assert set(scores) == {"unigram", "kn_bigram"}
    assert set(scores["unigram"]) == {f"{s}/{m}" for s in ("val", "test") for m in ("loss", "ppl", "acc")}
    assert scores["kn_bigram"]["val/loss"] < scores["unigram"]["val/loss"] - 1.0
    assert scores["kn_bigram"]["val/acc"] > 0.8 > scores["unigram"]["val/acc"]


def test_unigram_k_is_the_best_held_out_choice():
    rng = np.random.default_rng(2)
    V, grid, seed = 40, (1e-3, 0.01, 0.1, 1.0, 10.0), 3
    train = _docs(*[rng.zipf(1.5, int(rng.integers(3, 20))).clip(max=V - 1).tolist() for _ in range(30)])
    model = fit_unigram(train, V, k_grid=grid, seed=seed)
    # naive re-computation on the same 10 % held-out documents
    perm = np.random.default_rng(seed).permutation(train.n_docs)
    held, fit = set(perm[:3].tolist()), set(perm[3:].tolist())
    def targets(docs_idx):
        return [t for d in sorted(docs_idx) for t in train.ids[train.offsets[d] + 1 : train.offsets[d + 1]]]
    counts, held_targets = Counter(targets(fit)), targets(held)
    n = sum(counts.values())
    naive = {k: -sum(math.log((counts[t] + k) / (n + k * V)) for t in held_targets) / len(held_targets)
             for k in grid}
    assert model.k_losses == pytest.approx(naive, rel=1e-10)
    assert model.k == min(grid, key=naive.get)
    assert model.counts.sum() == train.n_targets  # refit on all of train
    with pytest.raises(DataError, match="at least 2 train documents"):
        fit_unigram(_docs([1, 2, 3]), V)


def test_vectorised_kn_equals_naive_loop():
    rng = np.random.default_rng(4)
    V, d = 9, 0.75
    train, val = _random_docs(rng, 12, V - 1, 15), _random_docs(rng, 6, V, 15)
    kn = fit_kn_bigram(train, V, discount=d)

    pairs = [(int(a), int(b)) for doc in range(train.n_docs)
             for a, b in zip(train.ids[train.offsets[doc] : train.offsets[doc + 1] - 1],
                             train.ids[train.offsets[doc] + 1 : train.offsets[doc + 1]])]
    c_pair = Counter(pairs)
    c_ctx = Counter(a for a, _ in pairs)
    followers = Counter(a for a, _ in c_pair)
    cont = Counter(b for _, b in c_pair)
    def p_low(w):
        return max(cont[w] - d, 0) / len(c_pair) + d * len(cont) / len(c_pair) / V
    def prob(v, w):
        if c_ctx[v] == 0:
            return p_low(w)
        return max(c_pair[(v, w)] - d, 0) / c_ctx[v] + d * followers[v] / c_ctx[v] * p_low(w)

    nll, hits, n = 0.0, 0, 0
    for doc in range(val.n_docs):
        ids = val.ids[val.offsets[doc] : val.offsets[doc + 1]].tolist()
        for v, w in itertools.pairwise(ids):
            probs = [prob(v, x) for x in range(V)]
            nll -= math.log(probs[w])
            hits += int(max(range(V), key=lambda x: (probs[x], -x)) == w)
            n += 1
    s = kn.score(val)
    assert s.n_targets == n
    assert s.loss == pytest.approx(nll / n, rel=1e-12)
    assert s.acc == pytest.approx(hits / n)
    for v in range(V):
        assert kn.next_token_probs(v) == pytest.approx([prob(v, x) for x in range(V)], rel=1e-12)


def test_large_vocab_is_fast():
    import time

    rng = np.random.default_rng(5)
    V, n = 50_257, 300_000
    ids = (rng.zipf(1.2, n).clip(max=V) - 1).astype(np.int64)
    offsets = np.r_[0, np.arange(1, 600) * 500, n].astype(np.int64)
    train = TokenDocs(ids=ids, offsets=offsets, doc_names=tuple(map(str, range(600))))
    held = _docs(*[rng.integers(0, V, 400).tolist() for _ in range(20)])
    start = time.perf_counter()
    scores = score_baselines(train, held, held, V)
    assert time.perf_counter() - start < 5.0
    assert all(np.isfinite(v) for m in scores.values() for v in m.values())


def test_stream_mode_baselines_score_and_fit_the_cross_document_targets_as_the_model_does():
    """context.reset=stream: the model predicts a document's first token from the last one of the document
    before; the baselines score those targets too (counted in the input token's document) and count those
    pairs in train. Hand-made: docs [5 6 7] [8 9] -> stream pairs (5,6) (6,7) (7,8) (8,9)."""
    from freezelab.tasks.lm.baselines import document_scores

    V = 12
    docs = _docs([5, 6, 7], [8, 9])
    inside = document_scores(fit_unigram(_docs([1, 2], [3, 4]), V), docs)
    stream = document_scores(fit_unigram(_docs([1, 2], [3, 4]), V, stream=True), docs, stream=True)
    assert inside["tokens"].tolist() == [2, 1] and stream["tokens"].tolist() == [3, 1]
    kn_in = fit_kn_bigram(docs, V)
    kn_stream = fit_kn_bigram(docs, V, stream=True)
    assert kn_in.context_counts[7] == 0 and kn_stream.context_counts[7] == 1    # the pair (7, 8)
    assert kn_stream.top1[7] == 8
    s_in, s_stream = kn_stream.score(docs), kn_stream.score(docs, stream=True)
    assert (s_in.n_targets, s_stream.n_targets) == (3, 4)
    by_hand = -np.mean(np.log([kn_stream.next_token_probs(a)[b] for a, b in ((5, 6), (6, 7), (7, 8), (8, 9))]))
    assert s_stream.loss == pytest.approx(by_hand, rel=1e-12)
