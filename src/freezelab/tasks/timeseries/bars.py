"""OHLC bars: load a CSV/Parquet file, validate every row, resample to coarser timeframes.

A `Bars` holds one timeframe (TF) as plain numpy arrays (spec §1 "freezelab storage"):
`open_time`/`close_time` in int64 ns UTC, `ohlc` float64 and `n_sub` (base bars aggregated).
Bars are left-labelled and left-closed: bar i covers [open_time[i], close_time[i]).
pandas is used only inside `load_bars`; everything after loading is numpy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from freezelab.errors import ConfigError, DataError, DataNotFoundError

TIMEFRAMES: dict[str, int] = {"m1": 1, "m5": 5, "m15": 15, "m30": 30, "h1": 60, "h4": 240, "d": 1440}
NS_PER_MINUTE = 60_000_000_000
PRICE_COLUMNS = ("open", "high", "low", "close")
TIME_COLUMN_NAMES = ("time", "timestamp", "date", "datetime")
OnInvalid = Literal["drop", "reject"]
_MAX_LISTED = 10  # invalid rows spelled out in a reject message / warning


class InvalidRowsWarning(UserWarning):
    """Rows were dropped by `load_bars(on_invalid="drop")`; the message lists them."""


@dataclass(frozen=True, eq=False)
class Bars:
    """One timeframe of OHLC bars, sorted by time, as flat arrays.

    Attributes:
        tf: timeframe name, a key of `TIMEFRAMES`.
        open_time: (n,) int64 ns UTC, strictly increasing.
        close_time: (n,) int64 ns UTC, = open_time + interval.
        ohlc: (n, 4) float64, columns open, high, low, close.
        n_sub: (n,) int64, number of base bars aggregated into each bar (1 for loaded bars).
    """

    tf: str
    open_time: np.ndarray  # (n,) int64
    close_time: np.ndarray  # (n,) int64
    ohlc: np.ndarray  # (n, 4) float64
    n_sub: np.ndarray  # (n,) int64

    def __post_init__(self) -> None:
        n = len(self.open_time)
        assert self.tf in TIMEFRAMES, f"unknown timeframe {self.tf!r}"
        assert self.open_time.dtype == np.int64 and self.close_time.dtype == np.int64
        assert self.ohlc.dtype == np.float64 and self.ohlc.shape == (n, 4)
        assert self.close_time.shape == (n,) and self.n_sub.shape == (n,)

    def __len__(self) -> int:
        return len(self.open_time)

    @property
    def interval_ns(self) -> int:
        return TIMEFRAMES[self.tf] * NS_PER_MINUTE

    def content_hash(self) -> str:
        """sha256 (hex, 16 chars) of the timeframe and every array's bytes; recorded in run records."""
        h = hashlib.sha256(self.tf.encode())
        for a in (self.open_time, self.close_time, self.ohlc, self.n_sub):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class InvalidRow:
    """One rejected input row.

    Attributes:
        row: 1-based data row, not counting the header (the first bar is row 1).
        line: file line as an editor shows it (header = line 1), or None for Parquet.
        reason: what is wrong, e.g. "high < close".
    """

    row: int
    line: int | None
    reason: str

    def describe(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line is not None else "")
        return f"{where}: {self.reason}"


# ----------------------------------------------------------------------------- loading


def load_bars(
    path: str | Path,
    *,
    timeframe: str,
    on_invalid: OnInvalid = "reject",
    time_column: str | None = None,
) -> tuple[Bars, list[InvalidRow]]:
    """Load OHLC bars of one timeframe from a CSV (optionally compressed) or Parquet file.

    Timestamps are the bar open times; naive timestamps are taken as UTC, aware ones are converted
    to UTC; integer timestamps are epoch s/ms/us/ns, told apart by magnitude. Columns open, high,
    low, close are matched case-insensitively; volume and other columns are ignored.

    Args:
        path: the data file (config key `data.path`).
        timeframe: the file's timeframe, a key of `TIMEFRAMES`; timestamps must lie on its UTC grid.
        on_invalid: "reject" raises on any invalid row; "drop" drops them and warns.
        time_column: name of the timestamp column; default: a column named time/timestamp/date/
            datetime, else the first column (for Parquet: a non-trivial index comes first).

    Returns:
        The valid bars and the list of invalid rows (empty unless on_invalid="drop").

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: unreadable file, missing columns, no valid rows, or invalid rows with "reject".
        ConfigError: unknown timeframe or on_invalid value.
    """
    _check_timeframe(timeframe)
    if on_invalid not in ("drop", "reject"):
        raise ConfigError(f"data.on_invalid={on_invalid!r} is not one of 'drop', 'reject'.")
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Data file not found: {path} (data.path). Fix the path in the study file.")
    df, is_csv = _read_table(path)
    times, prices = _select_columns(df, path, time_column)  # (n,) object/any, (n, 4) float64

    # Row numbers: data row i (0-based) is row i+1, and line i+2 of a CSV with one header line.
    row_no = np.arange(1, len(df) + 1)
    open_ns, bad_time = _parse_times(times, path)
    reasons, blank = _row_reasons(open_ns, bad_time, prices, timeframe)  # {row index: reason}
    invalid = [
        InvalidRow(int(row_no[i]), int(row_no[i]) + 1 if is_csv else None, r) for i, r in reasons.items()
    ]
    if invalid and on_invalid == "reject":
        raise DataError(
            _invalid_summary(path, invalid, timeframe)
            + "Fix the file, or set data.on_invalid: drop to drop these rows with a warning."
        )
    if invalid:
        warnings.warn(
            _invalid_summary(path, invalid, timeframe) + "These rows were dropped.",
            InvalidRowsWarning,
            stacklevel=2,
        )
    keep = ~blank
    keep[list(reasons)] = False
    if not keep.any():
        raise DataError(f"{path}: no valid bars ({len(df)} data rows, {len(invalid)} invalid).")
    open_ns = open_ns[keep]
    delta = TIMEFRAMES[timeframe] * NS_PER_MINUTE
    bars = Bars(
        tf=timeframe,
        open_time=np.ascontiguousarray(open_ns, dtype=np.int64),
        close_time=np.ascontiguousarray(open_ns + delta, dtype=np.int64),
        ohlc=np.ascontiguousarray(prices[keep], dtype=np.float64),
        n_sub=np.ones(int(keep.sum()), dtype=np.int64),
    )
    return bars, invalid


def _check_timeframe(tf: str) -> None:
    if tf not in TIMEFRAMES:
        raise ConfigError(f"Unknown timeframe {tf!r}; use one of {', '.join(TIMEFRAMES)}.")


def _read_table(path: Path) -> tuple[pd.DataFrame, bool]:
    """Read the file; returns (frame, is_csv). Blank CSV lines are kept as all-NaN rows so that
    row numbers match the file, and removed later only if every cell is empty."""
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
            if not isinstance(df.index, pd.RangeIndex):
                df = df.reset_index()  # a DatetimeIndex becomes the first column
            return df, False
        if any(name.endswith(s) for s in (".csv", ".txt", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip")):
            df = pd.read_csv(path, skip_blank_lines=False)
            return df, True
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read the file ({type(e).__name__}: {e}).") from e
    raise DataError(f"{path}: unsupported file type; use .csv (optionally .gz/.bz2/.xz/.zip) or .parquet.")


def _select_columns(df: pd.DataFrame, path: Path, time_column: str | None) -> tuple[pd.Series, np.ndarray]:
    """Find the timestamp and OHLC columns (case-insensitive). Returns (times, prices (n, 4))."""
    by_lower = {str(c).strip().lower(): c for c in df.columns}
    missing = [c for c in PRICE_COLUMNS if c not in by_lower]
    if time_column is not None and time_column.strip().lower() not in by_lower:
        missing.append(f"{time_column} (time_column)")
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {[str(c) for c in df.columns]}. Need open, high, "
            "low, close (any case) and a timestamp column (named time/timestamp/date/datetime, or first)."
        )
    if time_column is not None:
        tcol = by_lower[time_column.strip().lower()]
    else:
        named = [by_lower[n] for n in TIME_COLUMN_NAMES if n in by_lower]
        tcol = named[0] if named else df.columns[0]
        if str(tcol).strip().lower() in PRICE_COLUMNS + ("volume",):
            raise DataError(
                f"{path}: no timestamp column found in {[str(c) for c in df.columns]}. Name it time/"
                "timestamp/date/datetime, put it first, or set time_column."
            )
    prices = np.stack(
        [pd.to_numeric(df[by_lower[c]], errors="coerce").to_numpy(dtype=np.float64) for c in PRICE_COLUMNS],
        axis=1,
    )  # (n, 4); non-numeric cells become NaN and are reported as missing
    return df[tcol], prices


def _parse_times(times: pd.Series, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse timestamps to int64 ns UTC. Returns (ns (n,), unparseable (n,) bool)."""
    try:
        if pd.api.types.is_integer_dtype(times) or pd.api.types.is_float_dtype(times):
            x = pd.to_numeric(times, errors="coerce")
            mag = np.nanmax(np.abs(x.to_numpy(dtype=np.float64))) if x.notna().any() else 0.0
            unit = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
            parsed = pd.to_datetime(x, unit=unit, utc=True, errors="coerce")
        else:
            parsed = pd.to_datetime(times, utc=True, errors="coerce")
        parsed = parsed.dt.as_unit("ns")
    except (ValueError, OverflowError, pd.errors.OutOfBoundsDatetime) as e:
        raise DataError(f"{path}: cannot parse the timestamp column ({type(e).__name__}: {e}).") from e
    bad = parsed.isna().to_numpy()
    ns = parsed.to_numpy(dtype="datetime64[ns]").view(np.int64).copy()
    ns[bad] = 0
    return ns, bad


def _row_reasons(
    open_ns: np.ndarray, bad_time: np.ndarray, p: np.ndarray, tf: str
) -> tuple[dict[int, str], np.ndarray]:
    """Check every row, vectorised. Returns ({0-based row: reason} for invalid rows, blank (n,) bool).

    Blank rows (an empty CSV line: no timestamp, no price) are neither bars nor errors.
    """
    n = len(open_ns)
    o, h, lo, c = p.T
    blank = bad_time & np.isnan(p).all(axis=1)
    checks: list[tuple[np.ndarray, str]] = [
        (bad_time & ~blank, "unparseable or missing timestamp"),
        (np.isnan(p).any(axis=1) & ~blank, "missing or non-numeric price"),
        ((p <= 0).any(axis=1), "non-positive price"),
        (lo > h, "low > high"),
        (h < o, "high < open"),
        (h < c, "high < close"),
        (lo > o, "low > open"),
        (lo > c, "low > close"),
        (
            ~bad_time & (open_ns % (TIMEFRAMES[tf] * NS_PER_MINUTE) != 0),
            f"timestamp not on the {tf} grid (multiples of {TIMEFRAMES[tf]} min from UTC midnight)",
        ),
    ]
    bad = np.logical_or.reduce([flag for flag, _ in checks])
    # Duplicates and order are judged among the rows that are otherwise valid.
    ok = np.flatnonzero(~bad & ~blank)
    t = open_ns[ok]
    prev_max = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min], t]))[:-1]
    dup, unsorted = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    dup[ok] = pd.Series(t).duplicated(keep="first").to_numpy()
    unsorted[ok] = (t < prev_max) & ~dup[ok]
    checks += [(dup, "duplicate timestamp"), (unsorted, "timestamp earlier than a previous row (not sorted)")]
    reasons = {
        int(i): "; ".join(msg for flag, msg in checks if flag[i])
        for i in np.flatnonzero(bad | dup | unsorted)
    }
    return reasons, blank


def _invalid_summary(path: Path, invalid: list[InvalidRow], tf: str) -> str:
    """Text listing the first `_MAX_LISTED` invalid rows and the total."""
    shown = "\n".join("  " + r.describe() for r in invalid[:_MAX_LISTED])
    more = f"\n  ... and {len(invalid) - _MAX_LISTED} more" if len(invalid) > _MAX_LISTED else ""
    return (
        f"{path} ({tf}): {len(invalid)} invalid bar(s); 'row' is the 1-based data row not counting the "
        f"header, 'line' the file line with the header as line 1:\n{shown}{more}\n"
    )


# ----------------------------------------------------------------------------- resampling


def resample(bars: Bars, tf: str) -> Bars:
    """Aggregate bars to a coarser timeframe (spec §1 "Resampling").

    A coarse bar is labelled by its open time and covers [open, open + Δ) (left-labelled, left-closed);
    boundaries are multiples of Δ from the Unix epoch, i.e. UTC-aligned ("d" starts at midnight UTC).
    open = first, high = max, low = min, close = last, n_sub = sum; empty bars do not appear.

    Args:
        bars: sorted bars of a finer timeframe, on their own UTC grid.
        tf: target timeframe; its interval must be a multiple of the source interval.
            The same timeframe returns `bars` unchanged.

    Returns:
        The resampled bars.

    Raises:
        ConfigError: unknown, finer or non-multiple target timeframe.
        DataError: source bars off their grid or not strictly increasing.
    """
    _check_timeframe(tf)
    src, dst = TIMEFRAMES[bars.tf], TIMEFRAMES[tf]
    if dst == src:
        return bars
    if dst < src or dst % src != 0:
        raise ConfigError(
            f"Cannot resample {bars.tf} ({src} min) to {tf} ({dst} min): the target must be coarser and "
            "its interval a multiple of the source interval."
        )
    t = bars.open_time  # (n,)
    if np.any(t % bars.interval_ns != 0) or np.any(np.diff(t) <= 0):
        raise DataError(
            f"resample({bars.tf} -> {tf}): source open times must be on the {bars.tf} grid "
            "and strictly increasing."
        )
    if len(t) == 0:
        return Bars(tf, t.copy(), t.copy(), bars.ohlc.copy(), bars.n_sub.copy())
    delta = dst * NS_PER_MINUTE
    bucket = np.floor_divide(t, delta)  # (n,) coarse bar id, non-decreasing
    starts = np.flatnonzero(np.concatenate([[True], bucket[1:] != bucket[:-1]]))  # (m,)
    ends = np.concatenate([starts[1:], [len(t)]])  # exclusive
    p = bars.ohlc
    ohlc = np.stack(
        [
            p[starts, 0],
            np.maximum.reduceat(p[:, 1], starts),
            np.minimum.reduceat(p[:, 2], starts),
            p[ends - 1, 3],
        ],
        axis=1,
    )  # (m, 4)
    open_time = bucket[starts] * delta
    return Bars(
        tf=tf,
        open_time=open_time,
        close_time=open_time + delta,
        ohlc=np.ascontiguousarray(ohlc),
        n_sub=np.add.reduceat(bars.n_sub, starts),
    )


def load_multi_timeframe(
    path: str | Path,
    base_tf: str,
    tfs: Sequence[str],
    on_invalid: OnInvalid = "reject",
    *,
    time_column: str | None = None,
) -> dict[str, Bars]:
    """Load base bars from `path` and resample them to every timeframe in `tfs`.

    Returns:
        {tf: Bars} in the order of `tfs` (the base timeframe may be one of them).
        Dropped rows are reported by `load_bars`' warning; call `load_bars` + `resample` directly
        to keep the list for a run record.
    """
    for tf in tfs:
        _check_timeframe(tf)
    base, _ = load_bars(path, timeframe=base_tf, on_invalid=on_invalid, time_column=time_column)
    return {tf: resample(base, tf) for tf in tfs}


def synthetic_bars(
    n: int,
    *,
    tf: str = "m1",
    start: str = "2020-01-06",
    seed: int = 0,
    weekends: bool = True,
    vol_bp: float = 5.0,
) -> Bars:
    """A consistent random-walk series for tests and smoke runs (not for any reported result).

    Args:
        n: number of bars.
        tf: timeframe of the bars.
        start: first candidate open time (UTC).
        seed: random seed.
        weekends: leave out FX weekends (Fri 22:00 to Sun 22:00 UTC), so gaps exist.
        vol_bp: per-bar log-return std in basis points.
    """
    _check_timeframe(tf)
    rng = np.random.default_rng(seed)
    delta = TIMEFRAMES[tf] * NS_PER_MINUTE
    t0 = pd.Timestamp(start, tz="UTC").value // delta * delta
    cand = t0 + delta * np.arange(int(n * (1.6 if weekends else 1.0)) + 10, dtype=np.int64)  # (m,)
    if weekends:
        minute_of_week = ((cand // NS_PER_MINUTE) + 3 * 1440) % (7 * 1440)  # epoch was a Thursday
        closed = (minute_of_week >= 4 * 1440 + 22 * 60) & (minute_of_week < 6 * 1440 + 22 * 60)
        cand = cand[~closed]
    open_time = cand[:n]
    r = rng.normal(0.0, vol_bp * 1e-4, n)  # (n,) log return per bar
    close = 100.0 * np.exp(np.cumsum(r))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0.0, vol_bp * 0.5e-4, (n, 2)))
    high = np.maximum(open_, close) * np.exp(wick[:, 0])
    low = np.minimum(open_, close) * np.exp(-wick[:, 1])
    return Bars(
        tf,
        open_time,
        open_time + delta,
        np.stack([open_, high, low, close], axis=1),
        np.ones(n, dtype=np.int64),
    )


# ----------------------------------------------------------------------------- shipped data files


def default_fx_path() -> Path:
    """Real EUR/USD hourly bars (2017-04-19 .. 2018-02-07, 5,000 rows) shipped in the `backtesting` wheel.

    The package is AGPL-3.0, so it is located with `importlib.util.find_spec` and never imported:
    freezelab only reads its CSV. Its timestamps are naive and are read as UTC.

    Raises:
        DataNotFoundError: `backtesting` is not installed or the file is missing.
    """
    return _package_data("backtesting", ("test", "EURUSD.csv"), "pip install 'freezelab[fxdata]'")


def sp500_path() -> Path:
    """Daily S&P 500 bars (1999-01-04 .. 2018-12-31) shipped with `arch` (NCSA licence), timeframe "d".

    Columns: Date (M/D/YYYY), Open, High, Low, Close, Adj Close, Volume; `load_bars` uses Date and
    Open/High/Low/Close and ignores Adj Close and Volume.

    Raises:
        DataNotFoundError: `arch` is not installed or the file is missing.
    """
    return _package_data("arch", ("data", "sp500", "sp500.csv.gz"), "pip install arch")


def _package_data(package: str, parts: tuple[str, ...], install: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the package without executing it
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc).joinpath(*parts)
        if path.is_file():
            return path
    raise DataNotFoundError(
        f"Data file {'/'.join((package,) + parts)} not found: package {package!r} is not installed. "
        f"Run `{install}`, or set data.path to your own OHLC file."
    )


# ----------------------------------------------------------------------------- memory-mapped storage


def save_bars(bars: Bars, directory: str | Path) -> Path:
    """Write `bars` as .npy arrays under `directory/<tf>/` (for memory-mapped sharing by workers)."""
    out = Path(directory) / bars.tf
    out.mkdir(parents=True, exist_ok=True)
    for name in ("open_time", "close_time", "ohlc", "n_sub"):
        np.save(out / f"{name}.npy", getattr(bars, name))
    (out / "meta.json").write_text(json.dumps({"tf": bars.tf, "content_hash": bars.content_hash()}))
    return out


def open_bars(directory: str | Path, tf: str, *, mmap: bool = True) -> Bars:
    """Open bars written by `save_bars`, memory-mapped read-only by default (workers share pages).

    Raises:
        DataNotFoundError: the directory or one of its arrays is missing.
    """
    src = Path(directory) / tf
    files = [src / f"{n}.npy" for n in ("open_time", "close_time", "ohlc", "n_sub")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataNotFoundError(f"Saved bars not found: {missing}. Write them with save_bars first.")
    arrays = [np.load(f, mmap_mode="r" if mmap else None) for f in files]
    return Bars(tf, *arrays)
