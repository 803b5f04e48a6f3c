"""Bar files shaped as real sources ship them load correctly or fail with a fix that works (issue 8).

Each failing case applies the fix its message names and checks that the file then loads as intended.
"""

from __future__ import annotations

import importlib.util
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from freezelab.errors import ConfigError, DataError
from freezelab.tasks.timeseries.bar_files import UnsortedRowsWarning, load_bars, load_multi_timeframe
from freezelab.tasks.timeseries.bars import NS_PER_MINUTE, resample, synthetic_bars
from freezelab.tasks.timeseries.batches import load_bars as load_config_bars
from freezelab.tasks.timeseries.config import TSConfig
from freezelab.tasks.timeseries.sessions import Session

MIN = NS_PER_MINUTE
HOUR = 60 * MIN
NY = Session("America/New_York", "17:00")


def ns(s: str, tz: str = "UTC") -> int:
    return pd.Timestamp(s, tz=tz).tz_convert("UTC").value


def write(tmp_path, rows: list[tuple[str, float, float, float, float]], name="bars.csv", header="Date") -> str:
    path = tmp_path / name
    body = "\n".join(f"{t},{o},{h},{lo},{c}" for t, o, h, lo, c in rows)
    path.write_text(f"{header},Open,High,Low,Close\n{body}\n")
    return path


def walk(times: list[str]) -> list[tuple[str, float, float, float, float]]:
    rng = np.random.default_rng(0)
    close = 150 + np.cumsum(rng.normal(0, 0.1, len(times)))
    return [(t, c - 0.05, c + 0.2, c - 0.2, c) for t, c in zip(times, close)]


def fix_from(message: str) -> dict[str, str]:
    """The data.* settings a message tells the user to set, e.g. {"timezone": "UTC"}."""
    return {k: v.strip("'.") for k, v in re.findall(r"data\.(\w+): ('?[\w/:]+'?)", message)}


# ----------------------------------------------------------------------------- naive local times


def test_naive_tokyo_times_need_their_zone_and_then_load_9_hours_earlier(tmp_path):
    times = [f"2024-03-04 {h:02d}:00:00" for h in range(9, 24)] + [f"2024-03-05 {h:02d}:00:00" for h in range(0, 9)]
    path = write(tmp_path, walk(times))
    with pytest.raises(DataError, match=r"no time zone \(first: '2024-03-04 09:00:00'\).*data.timezone: Asia/Tokyo"):
        load_bars(path, timeframe="h1")
    bars, _ = load_bars(path, timeframe="h1", timezone="Asia/Tokyo")
    assert bars.open_time[0] == ns("2024-03-04 00:00") == ns("2024-03-04 09:00", "Asia/Tokyo")
    day = resample(bars, "d")  # UTC days: 09:00-08:00 Tokyo is one UTC day
    assert day.open_time.tolist() == [ns("2024-03-04")] and day.n_sub.tolist() == [24]
    tokyo_days = resample(bars, "d", Session("Asia/Tokyo", "00:00"))  # or Tokyo days, if asked for
    assert tokyo_days.open_time.tolist() == [ns("2024-03-04", "Asia/Tokyo"), ns("2024-03-05", "Asia/Tokyo")]


def test_a_nonexistent_local_time_is_an_invalid_row_with_its_reason(tmp_path):
    times = ["2024-03-10 00:00:00", "2024-03-10 01:00:00", "2024-03-10 02:00:00", "2024-03-10 03:00:00"]
    path = write(tmp_path, walk(times))  # 02:00 does not exist in New York that night
    with pytest.raises(DataError, match=r"row 3 \(line 4\): local time that does not exist"):
        load_bars(path, timeframe="h1", timezone="America/New_York")


def test_date_only_daily_stamps_are_utc_days_without_a_zone(tmp_path):
    bars, _ = load_bars(write(tmp_path, walk(["1/4/1999", "1/5/1999", "1/6/1999"])), timeframe="d")
    assert bars.open_time.tolist() == [ns("1999-01-04"), ns("1999-01-05"), ns("1999-01-06")]


def test_mixed_utc_offsets_are_exact_and_missing_offsets_are_named(tmp_path):
    rows = walk(["2024-03-08 10:00:00-05:00", "2024-03-11 10:00:00-04:00"])  # New York, before and after DST
    bars, _ = load_bars(write(tmp_path, rows), timeframe="h1")
    assert bars.open_time.tolist() == [ns("2024-03-08 15:00"), ns("2024-03-11 14:00")]
    rows = walk(["2024-03-08 10:00:00-05:00", "2024-03-11 10:00:00-04:00", "2024-03-12 10:00:00"])
    with pytest.raises(DataError, match=r"mix values with and without a UTC offset \(first without: row 3"):
        load_bars(write(tmp_path, rows, "mixed.csv"), timeframe="h1")


# ----------------------------------------------------------------------------- New York close sessions


def ny_daily_rows() -> list[tuple[str, float, float, float, float]]:
    """Mon-Fri FX daily bars across the 2024-03-10 DST change, stamped at their open: 22:00 then 21:00 UTC."""
    opens = [t for t in pd.date_range("2024-03-03 17:00", "2024-03-15 17:00", freq="D", tz="America/New_York")
             if t.dayofweek != 4 and t.dayofweek != 5]  # a day opening Friday/Saturday 17:00 has no trading
    return walk([t.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ") for t in opens])


def test_ny_close_daily_bars_are_rejected_with_the_session_fix_and_load_with_it(tmp_path):
    path = write(tmp_path, ny_daily_rows())
    with pytest.raises(DataError) as e:
        load_bars(path, timeframe="d")
    msg = str(e.value)
    assert "dropping them is no fix" in msg and "on_invalid: drop" not in msg
    assert "21:00, 22:00 UTC" in msg
    fix = fix_from(msg)
    assert fix == {"session_timezone": "America/New_York", "session_close": "17:00"}
    bars, invalid = load_bars(path, timeframe="d", session=Session(fix["session_timezone"], fix["session_close"]))
    assert not invalid and len(bars) == len(ny_daily_rows())
    assert bars.open_time[0] == ns("2024-03-03 22:00") and bars.open_time[-1] == ns("2024-03-14 21:00")
    assert set(((bars.close_time - bars.open_time) // HOUR).tolist()) == {24}  # the change falls on a Sunday


def test_ny_session_resampling_of_hourly_bars_and_a_23_hour_day():
    h1 = synthetic_bars(24 * 14, tf="h1", start="2024-03-03", weekends=False)  # every hour, DST change included
    d = resample(h1, "d", NY)
    h4 = resample(h1, "h4", NY)
    assert (pd.DatetimeIndex(d.open_time.astype("datetime64[ns]"), tz="UTC").tz_convert("America/New_York")
            .strftime("%H:%M") == "17:00").all()
    lengths = dict(zip(pd.DatetimeIndex(d.open_time.astype("datetime64[ns]")).strftime("%m-%d %H"),
                       ((d.close_time - d.open_time) // HOUR).tolist()))
    assert lengths["03-09 22"] == 23 and lengths["03-10 21"] == 24  # Sat 17:00 EST -> Sun 17:00 EDT
    assert d.n_sub[1:-1].tolist() == [(c - o) // HOUR for o, c in zip(d.open_time[1:-1], d.close_time[1:-1])]
    local = pd.DatetimeIndex(h4.open_time.astype("datetime64[ns]"), tz="UTC").tz_convert("America/New_York")
    assert set(local.hour) == {17, 21, 1, 5, 9, 13}
    assert h4.n_sub.sum() == d.n_sub.sum() == len(h1)
    np.testing.assert_array_equal(resample(h4, "d", NY).ohlc, d.ohlc)  # the session's boundaries nest


def test_a_session_whose_boundaries_cut_hourly_bars_is_a_config_error():
    h1 = synthetic_bars(200, tf="h1", start="2024-03-04")
    with pytest.raises(ConfigError, match=r"Asia/Kolkata puts a d boundary at .* inside a h1 bar"):
        resample(h1, "d", Session("Asia/Kolkata", "00:00"))


# ----------------------------------------------------------------------------- order, columns, advice


def test_a_newest_first_file_is_sorted_with_a_warning_not_dropped(tmp_path):
    times = [f"2024-01-02 {h:02d}:00:00" for h in range(24)]
    rows = walk(times)
    path = write(tmp_path, rows[::-1])  # as many downloads ship: newest first
    with pytest.warns(UnsortedRowsWarning, match=r"23 of 24 rows were out of time order"):
        bars, invalid = load_bars(path, timeframe="h1", timezone="UTC")
    assert not invalid and len(bars) == 24
    np.testing.assert_array_equal(bars.ohlc[:, 3], [r[4] for r in rows])


def test_an_invalid_row_in_an_unsorted_file_is_named_by_its_file_row(tmp_path):
    rows = walk([str(t) for t in pd.date_range("2024-01-02", periods=40, freq="h")])
    rows[5] = (rows[5][0], 1.0, 0.5, 2.0, 1.0)  # low > high, at file row 35 once reversed
    with pytest.raises(DataError, match=r"1 invalid bar[\s\S]*row 35 \(line 36\): low > high[\s\S]*drop these 1 of "
                       r"40 rows \(2.5%\)"), pytest.warns(UnsortedRowsWarning):
        load_bars(write(tmp_path, rows[::-1]), timeframe="h1", timezone="UTC")


def test_columns_differing_only_in_case_are_an_error_naming_both(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("time,open,high,low,close,Close\n2024-01-02 10:00:00,1,2,0.5,1.5,1.4\n")
    with pytest.raises(DataError, match=r"columns 'close' and 'Close' differ only in case"):
        load_bars(path, timeframe="h1", timezone="UTC")


def test_drop_advice_that_works_when_few_rows_are_bad(tmp_path):
    rows = walk([f"2024-01-02 {h:02d}:00:00" for h in range(24)] + [f"2024-01-03 {h:02d}:00:00" for h in range(24)])
    rows[10] = (rows[10][0], rows[10][1], rows[10][4] - 1, rows[10][3], rows[10][4])  # high < close
    path = write(tmp_path, rows)
    with pytest.raises(DataError, match=r"set data.on_invalid: drop to drop these 1 of 48 rows"):
        load_bars(path, timeframe="h1", timezone="UTC")
    with warnings.catch_warnings(record=True):
        bars, invalid = load_bars(path, timeframe="h1", timezone="UTC", on_invalid="drop")
    assert len(bars) == 47 and [r.row for r in invalid] == [11]


# ----------------------------------------------------------------------------- shipped daily data (arch)


@pytest.mark.parametrize("source, first_close", [("sp500", 1228.1), ("nasdaq", 2208.05)])
def test_arch_daily_data_is_a_selectable_source(source, first_close):
    if importlib.util.find_spec("arch") is None:
        pytest.skip("arch not installed")
    cfg = TSConfig.model_validate({"data": {"source": source, "base_tf": "d", "timeframes": ["d"]},
                                   "windows": {"context": {"d": 64}}, "model": {"patch_len": 8}})
    bars = load_config_bars(cfg)["d"]
    assert len(bars) == 5031 and bars.open_time[0] == ns("1999-01-04")
    assert bars.ohlc[0, 3] == pytest.approx(first_close, rel=1e-6)
    with pytest.raises(ValueError, match=rf"data.source={source} holds daily bars: set data.base_tf: d"):
        TSConfig.model_validate({"data": {"source": source}})


def test_multi_timeframe_load_passes_zone_and_session(tmp_path):
    times = [t.strftime("%Y-%m-%d %H:%M:%S") for t in pd.date_range("2024-03-04 00:00", periods=96, freq="h")]
    path = write(tmp_path, walk(times), header="time")
    bars = load_multi_timeframe(path, "h1", ["h1", "d"], timezone="America/New_York", session=NY)
    assert bars["h1"].open_time[0] == ns("2024-03-04 05:00")
    assert bars["d"].open_time[1] == ns("2024-03-04 17:00", "America/New_York")
