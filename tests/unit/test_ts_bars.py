"""Loading, validation and resampling of OHLC bars (spec §1)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pandas as pd
import pytest

from freezelab.errors import ConfigError, DataError, DataNotFoundError
from freezelab.tasks.timeseries import bars as bars_mod
from freezelab.tasks.timeseries import sources
from freezelab.tasks.timeseries.bar_files import InvalidRowsWarning, UnsortedRowsWarning, load_multi_timeframe
from freezelab.tasks.timeseries.bar_files import load_bars as _load_bars
from freezelab.tasks.timeseries.bars import NS_PER_MINUTE, Bars, open_bars, resample, save_bars, synthetic_bars
from freezelab.tasks.timeseries.sources import default_fx_path, sp500_path

MIN = NS_PER_MINUTE


def load_bars(path, **kw):
    """load_bars with naive timestamps read as UTC unless the test says otherwise."""
    kw.setdefault("timezone", "UTC")
    return _load_bars(path, **kw)


def ns(s: str) -> int:
    return pd.Timestamp(s, tz="UTC").value


def make_bars(tf: str, times: list[str], ohlc: list[list[float]]) -> Bars:
    t = np.array([ns(s) for s in times], dtype=np.int64)
    d = bars_mod.TIMEFRAMES[tf] * MIN
    return Bars(tf, t, t + d, np.array(ohlc, dtype=np.float64), np.ones(len(t), dtype=np.int64))


# ----------------------------------------------------------------------------- resampling


def test_resample_left_labelled_left_closed_and_empty_bars_dropped():
    times = [
        "2024-01-02 10:00",
        "2024-01-02 10:01",
        "2024-01-02 10:04",  # bucket 10:00
        "2024-01-02 10:05",
        "2024-01-02 10:09",  # bucket 10:05 (10:05 belongs here: left-closed)
        "2024-01-02 10:16",
    ]  # bucket 10:15; 10:10 has no bar and must not appear
    ohlc = [
        [10, 12, 9, 11],
        [11, 15, 10, 14],
        [14, 14, 8, 9],
        [9, 10, 7, 8],
        [8, 11, 8, 10],
        [20, 21, 19, 20],
    ]
    r = resample(make_bars("m1", times, ohlc), "m5")
    assert r.tf == "m5"
    assert r.open_time.tolist() == [ns("2024-01-02 10:00"), ns("2024-01-02 10:05"), ns("2024-01-02 10:15")]
    assert (r.close_time - r.open_time == 5 * MIN).all()
    assert r.ohlc.tolist() == [[10, 15, 8, 9], [9, 11, 7, 10], [20, 21, 19, 20]]
    assert r.n_sub.tolist() == [3, 2, 1]


def test_resample_daily_boundaries_are_midnight_utc():
    times = ["2024-01-02 22:00", "2024-01-02 23:00", "2024-01-03 00:00", "2024-01-03 01:00"]
    ohlc = [[1, 2, 1, 2], [2, 3, 2, 3], [3, 4, 3, 4], [4, 5, 4, 5]]
    h1 = make_bars("h1", times, ohlc)
    d = resample(h1, "d")
    assert d.open_time.tolist() == [ns("2024-01-02"), ns("2024-01-03")]
    assert d.ohlc.tolist() == [[1, 3, 1, 3], [3, 5, 3, 5]]
    h4 = resample(h1, "h4")
    assert h4.open_time.tolist() == [ns("2024-01-02 20:00"), ns("2024-01-03 00:00")]


def test_resample_matches_pandas_and_nests():
    m1 = synthetic_bars(20_000, seed=3)
    df = pd.DataFrame(m1.ohlc, columns=["o", "h", "l", "c"], index=pd.to_datetime(m1.open_time, utc=True))
    for tf, rule in [("m15", "15min"), ("h4", "4h"), ("d", "1D")]:
        ours = resample(m1, tf)
        ref = (
            df.resample(rule, label="left", closed="left")
            .agg({"o": "first", "h": "max", "l": "min", "c": "last"})
            .dropna()
        )
        assert ours.open_time.tolist() == ref.index.as_unit("ns").asi8.tolist()
        np.testing.assert_array_equal(ours.ohlc, ref.to_numpy())
        assert ours.n_sub.sum() == len(m1)
    # Boundaries nest: m1 -> m15 -> h4 equals m1 -> h4.
    via = resample(resample(m1, "m15"), "h4")
    direct = resample(m1, "h4")
    np.testing.assert_array_equal(via.ohlc, direct.ohlc)
    np.testing.assert_array_equal(via.n_sub, direct.n_sub)


def test_resample_rejects_finer_target():
    with pytest.raises(ConfigError, match="coarser"):
        resample(synthetic_bars(100, tf="h1"), "m30")
    with pytest.raises(ConfigError, match="Unknown timeframe"):
        resample(synthetic_bars(100), "w1")


# ----------------------------------------------------------------------------- loading and validation

GOOD = "2024-01-02 10:0{}:00,1.10,1.20,1.00,1.15,7"


def write_csv(tmp_path, lines: list[str], name: str = "bars.csv"):
    path = tmp_path / name
    path.write_text("\n".join(["Time,Open,High,Low,Close,Volume", *lines]) + "\n")
    return path


@pytest.fixture
def bad_csv(tmp_path):
    lines = [
        GOOD.format(0),  # row 1, line 2
        GOOD.format(1),  # row 2
        "2024-01-02 10:02:00,1.10,1.12,1.00,1.15,7",  # row 3: high < close
        "2024-01-02 10:03:00,1.10,,1.00,1.15,7",  # row 4: NaN high
        "2024-01-02 10:04:00,-1.10,1.20,1.00,1.15,7",  # row 5: negative open (and low > open)
        GOOD.format(5),  # row 6
        GOOD.format(5),  # row 7: duplicate of row 6
        GOOD.format(4),  # row 8: fine on its own, but earlier than row 6 (unsorted: sorted in, warned)
        GOOD.format(6),  # row 9
    ]
    return write_csv(tmp_path, lines)


def test_drop_mode_reports_file_rows_and_warns(bad_csv):
    with pytest.warns(InvalidRowsWarning, match=r"row 3 \(line 4\): high < close"):
        with pytest.warns(UnsortedRowsWarning, match=r"1 of 9 rows were out of time order"):
            bars, invalid = load_bars(bad_csv, timeframe="m1", on_invalid="drop")
    assert [(r.row, r.line) for r in invalid] == [(3, 4), (4, 5), (5, 6), (7, 8)]  # rows as in the file
    reasons = {r.row: r.reason for r in invalid}
    assert reasons[3] == "high < close"
    assert "missing" in reasons[4]
    assert "non-positive price" in reasons[5]
    assert "duplicate" in reasons[7]
    assert len(bars) == 5  # row 8 (10:04) is sorted into place
    assert bars.open_time.tolist() == [ns(f"2024-01-02 10:0{m}") for m in (0, 1, 4, 5, 6)]
    assert (bars.close_time - bars.open_time == MIN).all()
    assert bars.ohlc.dtype == np.float64 and bars.ohlc.shape == (5, 4)


def test_reject_mode_lists_rows_and_does_not_advise_dropping_half_the_file(bad_csv):
    with pytest.raises(DataError) as e, pytest.warns(UnsortedRowsWarning):
        load_bars(bad_csv, timeframe="m1", on_invalid="reject")
    msg = str(e.value)
    assert "4 invalid bar(s)" in msg and "not counting the header" in msg
    assert "row 3 (line 4): high < close" in msg
    assert "row 4 (line 5): missing or non-numeric price" in msg
    assert str(bad_csv) in msg and "dropping them is no fix" in msg  # 4 of 9 rows: dropping is not a fix


def test_reject_lists_first_ten_and_total(tmp_path):
    lines = [f"2024-01-02 10:{m:02d}:00,1.1,1.0,1.0,1.1,1" for m in range(25)]  # high < open every row
    with pytest.raises(DataError, match=r"25 invalid bar\(s\)[\s\S]*and 15 more[\s\S]*100% of the rows"):
        load_bars(write_csv(tmp_path, lines), timeframe="m1")


def test_missing_column_and_file_errors(tmp_path):
    path = tmp_path / "nohigh.csv"
    path.write_text("time,open,low,close\n2024-01-02 10:00:00,1,1,1\n")
    with pytest.raises(
        DataError, match=r"nohigh.csv: missing column\(s\) \['high'\]; found \['time', 'open'"
    ):
        load_bars(path, timeframe="m1")
    with pytest.raises(DataNotFoundError, match=r"nothere.csv \(data.path\)"):
        load_bars(tmp_path / "nothere.csv", timeframe="m1")
    with pytest.raises(ConfigError, match="on_invalid"):
        load_bars(path, timeframe="m1", on_invalid="ignore")  # type: ignore[arg-type]


def test_off_grid_timestamp_and_timezones(tmp_path):
    lines = [
        "2024-01-02 10:00:00+02:00,1.1,1.2,1.0,1.1,1",  # 08:00 UTC
        "2024-01-02 10:30:00+02:00,1.1,1.2,1.0,1.1,1",
    ]  # 08:30 UTC: not on the h1 grid
    with pytest.warns(InvalidRowsWarning):
        bars, invalid = load_bars(write_csv(tmp_path, lines), timeframe="h1", on_invalid="drop")
    assert bars.open_time.tolist() == [ns("2024-01-02 08:00")]
    assert invalid[0].row == 2 and "not a h1 bar open of the UTC grid" in invalid[0].reason


def test_parquet_with_datetime_index_and_epoch_ms_csv(tmp_path):
    m5 = synthetic_bars(50, tf="m5")
    df = pd.DataFrame(
        m5.ohlc,
        columns=["OPEN", "High", "low", "Close"],
        index=pd.DatetimeIndex(pd.to_datetime(m5.open_time, utc=True), name="ts"),
    )
    df.to_parquet(tmp_path / "b.parquet")
    bars, _ = load_bars(tmp_path / "b.parquet", timeframe="m5")
    np.testing.assert_array_equal(bars.open_time, m5.open_time)
    np.testing.assert_array_equal(bars.ohlc, m5.ohlc)
    pd.DataFrame(
        {
            "timestamp": m5.open_time // 1_000_000,
            "open": m5.ohlc[:, 0],
            "high": m5.ohlc[:, 1],
            "low": m5.ohlc[:, 2],
            "close": m5.ohlc[:, 3],
        }
    ).to_csv(tmp_path / "ms.csv", index=False)
    bars, _ = load_bars(tmp_path / "ms.csv", timeframe="m5")
    np.testing.assert_array_equal(bars.open_time, m5.open_time)


def test_content_hash_and_memory_mapped_roundtrip(tmp_path):
    m1 = synthetic_bars(500)
    out = open_bars(save_bars(m1, tmp_path).parent, "m1")
    assert isinstance(out.ohlc, np.memmap)
    assert out.content_hash() == m1.content_hash()
    changed = Bars("m1", m1.open_time, m1.close_time, m1.ohlc * 1.0001, m1.n_sub)
    assert changed.content_hash() != m1.content_hash()
    with pytest.raises(DataNotFoundError, match="save_bars"):
        open_bars(tmp_path, "h1")


# ----------------------------------------------------------------------------- shipped real data


def test_real_eurusd_loads_into_h1_h4_d():
    if importlib.util.find_spec("backtesting") is None:
        pytest.skip("backtesting (freezelab[fxdata]) not installed")
    was_imported = "backtesting" in sys.modules
    bars = load_multi_timeframe(default_fx_path(), "h1", ["h1", "h4", "d"], "reject", timezone="UTC")
    assert was_imported or "backtesting" not in sys.modules  # we read its file, never import it
    h1, h4, d = bars["h1"], bars["h4"], bars["d"]
    assert len(h1) == 5000
    assert h1.open_time[0] == ns("2017-04-19 09:00")
    assert h4.n_sub.sum() == d.n_sub.sum() == 5000
    assert (h4.open_time % (240 * MIN) == 0).all() and (d.open_time % (1440 * MIN) == 0).all()
    assert (d.ohlc[:, 1] >= d.ohlc.max(axis=1)).all() and (d.ohlc[:, 2] <= d.ohlc.min(axis=1)).all()
    assert 1.0 < d.ohlc.min() and d.ohlc.max() < 1.3  # EUR/USD in 2017-18


def test_sp500_daily_loads():
    if importlib.util.find_spec("arch") is None:
        pytest.skip("arch not installed")
    bars, invalid = load_bars(sp500_path(), timeframe="d")
    assert not invalid and len(bars) > 5000
    assert bars.open_time[0] == ns("1999-01-04")


def test_missing_fx_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataNotFoundError, match=r"freezelab\[fxdata\].*data.path"):
        default_fx_path()
