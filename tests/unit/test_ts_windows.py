"""Windows, chronological split with embargo, train-only normalisation (spec §3)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from freezelab.errors import DataError, DataNotFoundError
from freezelab.tasks.timeseries.bars import NS_PER_MINUTE, Bars, resample, synthetic_bars
from freezelab.tasks.timeseries.normalise import (
    NormStats,
    fit_norm_stats,
    load_norm_stats,
    normalise_windows,
    save_norm_stats,
    to_bp,
    window_reference,
)
from freezelab.tasks.timeseries.windows import (
    build_window_index,
    gather_times,
    gather_windows,
    make_split,
    window_rows,
)

MIN = NS_PER_MINUTE
TFS = ["m1", "m5", "m15", "h1"]
CONTEXT = {"m1": 32, "m5": 24, "m15": 16, "h1": 32}


def multi(m1: Bars, tfs=TFS) -> dict[str, Bars]:
    return {f: resample(m1, f) for f in tfs}


@pytest.fixture(scope="module")
def data():
    bars = multi(synthetic_bars(40_000, seed=1))  # ~4 weeks of FX-like minutes with weekends
    index = build_window_index(bars, base_tf="m1", context=CONTEXT, stride_minutes=5)
    return bars, index


# ----------------------------------------------------------------------------- windows


def test_no_look_ahead_and_forming_bar_excluded(data):
    bars, index = data
    assert len(index) > 1000
    assert (index.anchors % (5 * MIN) == 0).all()
    for f in TFS:
        rows = window_rows(index, f)  # (n, K)
        close = bars[f].close_time[rows]
        assert (close <= index.anchors[:, None]).all()
        nxt = index.end[f]  # the next bar, if any, is the forming one or later: closes after t
        has_next = nxt < len(bars[f])
        assert (bars[f].close_time[nxt[has_next]] > index.anchors[has_next]).all()
    # An anchor 10 min into an h1 bar: the forming h1 bar is left out, the last one closed 10 min ago.
    t = index.anchors[(index.anchors % (60 * MIN)) == 10 * MIN][0]
    row = np.flatnonzero(index.anchors == t)
    assert bars["h1"].close_time[window_rows(index, "h1", row)][0, -1] == t - 10 * MIN
    assert bars["m1"].close_time[window_rows(index, "m1", row)][0, -1] == t


def brute_force_anchors(bars, context, gaps, base_tf):
    out = []
    for t in bars[base_tf].close_time:
        ok = True
        for f, b in bars.items():
            closed = np.flatnonzero(b.close_time <= t)
            if len(closed) < context[f]:
                ok = False
                break
            w = closed[-context[f] :]
            if gaps[f] is not None and np.any(b.open_time[w[1:]] - b.close_time[w[:-1]] > gaps[f] * MIN):
                ok = False
                break
        if ok:
            out.append(t)
    return np.array(out, dtype=np.int64)


def test_gap_and_length_rules_match_brute_force():
    m1 = synthetic_bars(3000, seed=2)
    keep = np.ones(len(m1), dtype=bool)
    keep[400:430] = False  # a 30-minute hole
    keep[1500:1507] = False  # a 7-minute hole
    m1 = Bars("m1", m1.open_time[keep], m1.close_time[keep], m1.ohlc[keep], m1.n_sub[keep])
    bars = multi(m1, ["m1", "m5", "h1"])
    context = {"m1": 20, "m5": 8, "h1": 3}
    gaps = {"m1": 10, "m5": 20, "h1": None}
    index = build_window_index(bars, base_tf="m1", context=context, max_gap_minutes=gaps)
    expected = brute_force_anchors(bars, context, gaps, "m1")
    np.testing.assert_array_equal(index.anchors, expected)
    assert index.n_rejected["m1:gap"] > 0 and index.n_rejected["h1:short"] > 0
    assert len(index) < index.n_candidates


def test_gather_windows_matches_slices(data):
    bars, index = data
    rows = np.array([0, 17, len(index) - 1])
    w = gather_windows(bars, index, rows)
    o, c = gather_times(bars, index, rows)
    for f in TFS:
        assert w[f].shape == (3, CONTEXT[f], 4)
        for i, r in enumerate(rows):
            e = index.end[f][r]
            np.testing.assert_array_equal(w[f][i], bars[f].ohlc[e - CONTEXT[f] : e])
            np.testing.assert_array_equal(o[f][i], bars[f].open_time[e - CONTEXT[f] : e])
            np.testing.assert_array_equal(c[f][i], bars[f].close_time[e - CONTEXT[f] : e])


# ----------------------------------------------------------------------------- split


def bar_extent(bars, index, rows):
    """Earliest open and latest close per TF over all bars of the given windows."""
    out = {}
    for f in index.tfs:
        r = window_rows(index, f, rows)
        out[f] = (bars[f].open_time[r].min(), bars[f].close_time[r].max())
    return out


def test_embargo_every_val_bar_closes_after_every_train_bar(data):
    bars, index = data
    split = make_split(bars, index, train_stride_minutes=15, eval_stride_minutes=60, max_eval_windows=100)
    assert split.n_embargoed["val"] > 0 and split.n_embargoed["test"] > 0
    for a, b in [("train", "val"), ("val", "test")]:
        ea, eb = bar_extent(bars, index, split.rows[a]), bar_extent(bars, index, split.rows[b])
        last_close = max(v[1] for v in ea.values())
        first_open = min(v[0] for v in eb.values())
        assert last_close <= first_open  # across TFs, hence also for every TF
        for f in TFS:
            assert ea[f][1] <= eb[f][0]
    assert (index.anchors[split.rows["train"]] % (15 * MIN) == 0).all()
    assert (index.anchors[split.rows["val"]] % (60 * MIN) == 0).all()


def test_eval_subset_is_fixed_spread_and_seeded(data):
    bars, index = data
    a = make_split(bars, index, max_eval_windows=40, seed=0)
    b = make_split(bars, index, max_eval_windows=40, seed=0)
    c = make_split(bars, index, max_eval_windows=40, seed=1)
    assert len(a.rows["val"]) == len(a.rows["test"]) == 40
    np.testing.assert_array_equal(a.rows["val"], b.rows["val"])
    assert a.hash == b.hash and a.hash != c.hash
    full = make_split(bars, index, max_eval_windows=None)
    period = full.rows["val"]
    edges = np.linspace(0, len(period), 41).astype(int)  # one pick in each of 40 equal slices
    pos = np.searchsorted(period, a.rows["val"])
    assert ((pos >= edges[:-1]) & (pos < edges[1:])).all()


def test_split_hash_tracks_context_and_data(data):
    bars, index = data
    h = make_split(bars, index).hash
    other_ctx = build_window_index(bars, base_tf="m1", context={**CONTEXT, "h1": 31}, stride_minutes=5)
    assert make_split(bars, other_ctx).hash != h
    again = build_window_index(bars, base_tf="m1", context=CONTEXT, stride_minutes=5)
    assert make_split(bars, again).hash == h


def test_too_little_data_for_embargo_is_an_error():
    bars = multi(synthetic_bars(400, seed=4), ["m1", "h1"])
    index = build_window_index(bars, base_tf="m1", context={"m1": 8, "h1": 4})
    with pytest.raises(DataError, match="split is empty"):
        make_split(bars, index)


# ----------------------------------------------------------------------------- normalisation


def test_stats_use_train_windows_only(data):
    bars, index = data
    split = make_split(bars, index)
    stats = fit_norm_stats(bars, split, batch_windows=997)  # odd chunking exercises the merge
    # Reference: one pass over every train window.
    w = gather_windows(bars, index, split.rows["train"])
    ref = w["m1"][:, -1, 3]
    for f in TFS:
        assert stats.scale_bp[f] == pytest.approx(to_bp(w[f], ref).std(), rel=1e-10)
    # Change every price after the last train bar: the stats must not move.
    t_cut = index.anchors[split.rows["train"]].max()
    m1 = synthetic_bars(40_000, seed=1)
    late = m1.open_time >= t_cut
    ohlc = m1.ohlc.copy()
    ohlc[late] *= np.exp(np.random.default_rng(0).normal(0, 0.01, late.sum()))[:, None] * 1.5
    bars2 = multi(Bars("m1", m1.open_time, m1.close_time, ohlc, m1.n_sub))
    split2 = make_split(bars2, build_window_index(bars2, base_tf="m1", context=CONTEXT, stride_minutes=5))
    np.testing.assert_array_equal(split2.rows["train"], split.rows["train"])
    assert split2.hash != split.hash
    stats2 = fit_norm_stats(bars2, split2, batch_windows=997)
    assert stats2.scale_bp == stats.scale_bp


def test_stats_file_roundtrip_and_loud_failures(data, tmp_path):
    bars, index = data
    split = make_split(bars, index)
    stats = fit_norm_stats(bars, split)
    path = tmp_path / "stats" / "norm.json"
    save_norm_stats(stats, path)
    assert load_norm_stats(path, split_hash=split.hash, tfs=TFS) == stats
    with pytest.raises(DataError, match=f"fitted on split {split.hash}, the current split is deadbeef"):
        load_norm_stats(path, split_hash="deadbeef", tfs=TFS)
    with pytest.raises(DataError, match=r"\['h4'\] missing"):
        load_norm_stats(path, split_hash=split.hash, tfs=[*TFS, "h4"])
    with pytest.raises(DataNotFoundError, match="Fit them"):
        load_norm_stats(tmp_path / "none.json", split_hash=split.hash, tfs=TFS)


def test_reference_is_last_visible_base_close(data):
    bars, index = data
    rows = np.arange(4)
    w = gather_windows(bars, index, rows)
    _, c = gather_times(bars, index, rows)
    ref, fb = window_reference(w, c, "m1")
    np.testing.assert_array_equal(ref, w["m1"][:, -1, 3])
    masks = {f: np.zeros(w[f].shape[:2], dtype=bool) for f in TFS}
    masks["m1"][0, -3:] = True  # window 0: last visible m1 bar is K-4
    masks["m1"][1, :] = True  # window 1: no visible m1 bar -> latest visible close of another TF
    masks["m5"][1, -1] = True
    ref, fb = window_reference(w, c, "m1", masks)
    assert ref[0] == w["m1"][0, -4, 3] and ref[2] == w["m1"][2, -1, 3]
    assert fb.tolist() == [False, True, False, False]
    assert ref[1] == w["m5"][1, -2, 3]  # m5 bar K-2 closes after the last visible m15/h1 bars
    masks = {f: np.ones_like(m) for f, m in masks.items()}
    with pytest.raises(DataError, match="no visible bar"):
        window_reference(w, c, "m1", masks)


def test_normalised_values_are_level_free_and_unit_scale(data):
    bars, index = data
    split = make_split(bars, index)
    stats = fit_norm_stats(bars, split)
    w = gather_windows(bars, index, split.rows["train"])
    z = normalise_windows(w, w["m1"][:, -1, 3], stats)
    assert (z["m1"][:, -1, 3] == 0).all()
    for f in TFS:
        assert z[f].std() == pytest.approx(1.0, rel=1e-9)
    scaled = {f: w[f] * 1.37 for f in TFS}  # a level change leaves z unchanged
    z2 = normalise_windows(scaled, scaled["m1"][:, -1, 3], stats)
    np.testing.assert_allclose(z2["h1"], z["h1"], atol=1e-9)
    assert isinstance(stats, NormStats) and stats.n_values["m1"] == len(split.rows["train"]) * 32 * 4


def test_index_for_one_million_m1_bars_is_fast():
    t0 = time.perf_counter()
    m1 = synthetic_bars(1_000_000, seed=5)
    t1 = time.perf_counter()
    bars = {f: resample(m1, f) for f in ["m1", "m5", "m15", "m30", "h1", "h4"]}
    t2 = time.perf_counter()
    index = build_window_index(bars, base_tf="m1", context=128)
    t3 = time.perf_counter()
    split = make_split(bars, index, train_stride_minutes=15, eval_stride_minutes=60)
    t4 = time.perf_counter()
    print(
        f"\n1M m1 bars: synth {t1 - t0:.2f}s, resample x6 {t2 - t1:.2f}s, index {t3 - t2:.2f}s "
        f"({len(index)} of {index.n_candidates} anchors valid), split {t4 - t3:.2f}s "
        f"(train {len(split.rows['train'])}, val {len(split.rows['val'])}, test {len(split.rows['test'])})"
    )
    assert len(index) > 100_000


def test_real_eurusd_windows_split_and_stats():
    import importlib.util

    if importlib.util.find_spec("backtesting") is None:
        pytest.skip("backtesting (freezelab[fxdata]) not installed")
    from freezelab.tasks.timeseries.bar_files import load_multi_timeframe
    from freezelab.tasks.timeseries.sources import default_fx_path

    bars = load_multi_timeframe(default_fx_path(), "h1", ["h1", "h4", "d"], "reject", timezone="UTC")
    index = build_window_index(bars, base_tf="h1", context={"h1": 64, "h4": 32, "d": 10})
    split = make_split(bars, index, max_eval_windows=200)
    assert len(split.rows["train"]) > 3000 and len(split.part("val")) == len(split.part("test")) == 200
    val = bar_extent(bars, index, split.rows["val"])
    train = bar_extent(bars, index, split.rows["train"])
    assert max(v[1] for v in train.values()) <= min(v[0] for v in val.values())
    stats = fit_norm_stats(bars, split)
    assert 10 < stats.scale_bp["h1"] < stats.scale_bp["d"] < 500  # EUR/USD moves tens of bp per hour
