"""Reading OHLC bar files (CSV or Parquet) as real sources ship them: validate every row, or say how to fix it.

Naive timestamps need their time zone (`data.timezone`; date-only stamps of daily bars are UTC days); rows out
of time order are sorted, with a warning saying how many moved; columns differing only in case are an error
naming both; a rejected file is told to drop rows only when few are invalid, else it gets the setting that
fixes the whole file (e.g. the 17:00 New York session of FX daily bars). pandas is used only here.
"""

from __future__ import annotations

import bisect
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from freezelab.errors import ConfigError, DataError, DataNotFoundError
from freezelab.tasks.timeseries.bars import Bars, check_timeframe, resample
from freezelab.tasks.timeseries.sessions import Session, bar_bounds, check_timezone, offgrid_hint, on_grid

PRICE_COLUMNS = ("open", "high", "low", "close")
TIME_COLUMN_NAMES = ("time", "timestamp", "date", "datetime")
OnInvalid = Literal["drop", "reject"]
_MAX_LISTED = 10  # invalid rows spelled out in a reject message / warning
DROP_ADVICE_SHARE = 0.05  # "drop them" is suggested only when at most this share of rows is invalid
# A timestamp string that carries its UTC offset after the time of day (a date's "-08" is not an offset).
_OFFSET = re.compile(r"\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d\d(?::?\d\d)?)$", re.IGNORECASE)


class InvalidRowsWarning(UserWarning):
    """Rows were dropped by `load_bars(on_invalid="drop")`; the message lists them."""


class UnsortedRowsWarning(UserWarning):
    """The file's rows were not in time order and were sorted; the message says how many moved."""


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
    timezone: str | None = None,
    session: Session = Session(),
) -> tuple[Bars, list[InvalidRow]]:
    """Load OHLC bars of one timeframe from a CSV (optionally compressed) or Parquet file.

    Timestamps are the bar open times. Aware ones are converted to UTC; naive ones are local times of
    `timezone` (an error without it, except date-only stamps of daily bars, read as UTC days); integer
    timestamps are epoch s/ms/us/ns, told apart by magnitude. Rows out of time order are sorted, with an
    `UnsortedRowsWarning` saying how many moved. Columns open, high, low, close are matched
    case-insensitively; volume and other columns are ignored.

    Args:
        path: the data file (config key `data.path`).
        timeframe: the file's timeframe, a key of `TIMEFRAMES`; timestamps must be bar opens of its grid
            (the UTC grid, or `session` for 4-hour and daily bars).
        on_invalid: "reject" raises on any invalid row; "drop" drops them and warns.
        time_column: name of the timestamp column; default: a column named time/timestamp/date/
            datetime, else the first column (for Parquet: a non-trivial index comes first).
        timezone: IANA zone of naive timestamps (`data.timezone`), e.g. "UTC" or "Asia/Tokyo".
        session: where 4-hour and daily bars start (`data.session_timezone`, `data.session_close`).

    Returns:
        The valid bars, in time order, and the list of invalid rows (empty unless on_invalid="drop").

    Raises:
        DataNotFoundError: the file does not exist.
        DataError: unreadable file, missing or case-duplicate columns, naive timestamps without a time
            zone, no valid rows, or invalid rows with "reject" (with the fix that works).
        ConfigError: unknown timeframe, time zone or on_invalid value.
    """
    check_timeframe(timeframe)
    if on_invalid not in ("drop", "reject"):
        raise ConfigError(f"data.on_invalid={on_invalid!r} is not one of 'drop', 'reject'.")
    if timezone is not None:
        check_timezone(timezone, "data.timezone")
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"Data file not found: {path} (data.path). Fix the path in the study file.")
    df, is_csv = _read_table(path)
    times, prices = _select_columns(df, path, time_column)  # (n,) object/any, (n, 4) float64

    # Row numbers: data row i (0-based) is row i+1, and line i+2 of a CSV with one header line.
    row_no = np.arange(1, len(df) + 1)
    open_ns, bad_time, dst = _parse_times(times, path, timeframe, timezone)
    timed = ~(bad_time | dst)
    order = np.argsort(np.where(timed, open_ns, np.iinfo(np.int64).max), kind="stable")  # (n,) untimed rows last
    if np.any(np.diff(open_ns[timed]) < 0):
        moved = _rows_out_of_order(order[: int(timed.sum())])
        warnings.warn(f"{path}: {moved} of {int(timed.sum())} rows were out of time order (e.g. newest first) and "
                      "were sorted in by timestamp; row numbers in messages still refer to the file.",
                      UnsortedRowsWarning, stacklevel=2)
    open_ns, bad_time, dst, prices, row_no = (a[order] for a in (open_ns, bad_time, dst, prices, row_no))
    reasons, blank = _row_reasons(open_ns, bad_time, dst, prices, timeframe, session)  # {row index: reason}
    invalid = [
        InvalidRow(int(row_no[i]), int(row_no[i]) + 1 if is_csv else None, r) for i, r in sorted(
            reasons.items(), key=lambda kv: row_no[kv[0]])
    ]
    if invalid and on_invalid == "reject":
        raise DataError(_invalid_summary(path, invalid, timeframe) + _fix(open_ns, reasons, blank, timeframe, session))
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
    bars = Bars(
        tf=timeframe,
        open_time=np.ascontiguousarray(open_ns, dtype=np.int64),
        close_time=np.ascontiguousarray(bar_bounds(open_ns, timeframe, session)[1], dtype=np.int64),
        ohlc=np.ascontiguousarray(prices[keep], dtype=np.float64),
        n_sub=np.ones(int(keep.sum()), dtype=np.int64),
    )
    return bars, invalid

def _rows_out_of_order(order: np.ndarray) -> int:
    """How many rows had to move: n minus the longest run of rows already in time order (patience sort)."""
    tails: list[int] = []
    for x in order.tolist():
        i = bisect.bisect_left(tails, x)
        tails[i:i + 1] = [x]
    return len(order) - len(tails)


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
    groups: dict[str, list[str]] = {}
    for c in df.columns:
        groups.setdefault(str(c).strip().lower(), []).append(str(c))
    wanted = {*PRICE_COLUMNS, *TIME_COLUMN_NAMES, *([time_column.strip().lower()] if time_column else [])}
    clash = {k: v for k, v in groups.items() if k in wanted and len(v) > 1}
    if clash:
        named = "; ".join(" and ".join(repr(c) for c in v) for v in clash.values())
        raise DataError(f"{path}: columns {named} differ only in case; columns are matched case-insensitively, so "
                        "it is ambiguous which one to read. Rename or remove one of each pair.")
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


def _parse_times(
    times: pd.Series, path: Path, tf: str, timezone: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse timestamps to int64 ns UTC. Returns (ns (n,), unparseable (n,) bool, local time that does not
    exist or is ambiguous in `timezone` (n,) bool).

    Raises:
        DataError: unparseable column, or naive timestamps without `timezone` (the message says how to fix).
    """
    try:
        if pd.api.types.is_integer_dtype(times) or pd.api.types.is_float_dtype(times):
            x = pd.to_numeric(times, errors="coerce")
            mag = np.nanmax(np.abs(x.to_numpy(dtype=np.float64))) if x.notna().any() else 0.0
            unit = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
            parsed = pd.to_datetime(x, unit=unit, utc=True, errors="coerce")
        elif pd.api.types.is_datetime64_any_dtype(times):  # Parquet: typed, naive or aware
            parsed = pd.to_datetime(times, errors="coerce")
        else:  # text: aware exactly when it carries an offset; pandas would turn the odd ones out into NaT
            parsed = _parse_text(times, path)
        dst = np.zeros(len(times), dtype=bool)
        if parsed.dt.tz is None:
            readable = parsed.notna().to_numpy()
            parsed = _localize(parsed, path, tf, timezone, times)
            dst = readable & parsed.isna().to_numpy()
        parsed = parsed.dt.tz_convert("UTC").dt.as_unit("ns")
    except (OverflowError, pd.errors.OutOfBoundsDatetime) as e:
        raise DataError(f"{path}: cannot parse the timestamp column ({type(e).__name__}: {e}).") from e
    bad = parsed.isna().to_numpy()
    ns = parsed.to_numpy(dtype="datetime64[ns]").view(np.int64).copy()
    ns[bad] = 0
    return ns, bad & ~dst, dst


def _parse_text(times: pd.Series, path: Path) -> pd.Series:
    """Timestamp strings: all with a UTC offset (to UTC, exactly) or all without (naive); a mix is an error."""
    text = times.astype("string").str.strip()
    present = text.notna() & (text != "")
    aware = text.str.contains(_OFFSET).fillna(False).to_numpy()
    if aware[present.to_numpy()].all() and present.any():
        return pd.to_datetime(times, utc=True, errors="coerce", format="mixed")
    if aware.any():
        naive = np.flatnonzero(present.to_numpy() & ~aware)[0]
        raise DataError(f"{path}: the timestamps mix values with and without a UTC offset (first without: row "
                        f"{naive + 1}, {times.iloc[naive]!r}). Write every timestamp with its offset, or none and "
                        "set data.timezone.")
    return pd.to_datetime(times, errors="coerce")


def _localize(parsed: pd.Series, path: Path, tf: str, timezone: str | None, raw: pd.Series) -> pd.Series:
    """Naive timestamps -> UTC, as local times of `timezone`; date-only daily stamps without one are UTC days."""
    if timezone is None:
        valid = parsed.dropna()
        if tf == "d" and len(valid) and (valid == valid.dt.normalize()).all():
            return parsed.dt.tz_localize("UTC")  # dates: the UTC day of each trading day
        first = raw.iloc[int(np.flatnonzero(parsed.notna().to_numpy())[0])] if parsed.notna().any() else None
        raise DataError(
            f"{path}: the timestamps have no time zone (first: {first!r}), so it is unknown whether they are UTC or "
            "local times (naive Tokyo times read as UTC would put every bar 9 h off). Set data.timezone: UTC if "
            "they are UTC, or the zone they were recorded in, e.g. data.timezone: Asia/Tokyo.")
    return parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")


def _row_reasons(
    open_ns: np.ndarray, bad_time: np.ndarray, dst: np.ndarray, p: np.ndarray, tf: str, session: Session
) -> tuple[dict[int, str], np.ndarray]:
    """Check every row, vectorised (rows in time order). Returns ({0-based row: reason}, blank (n,) bool).

    Blank rows (an empty CSV line: no timestamp, no price) are neither bars nor errors.
    """
    o, h, lo, c = p.T
    blank = bad_time & np.isnan(p).all(axis=1)
    grid = np.ones(len(open_ns), dtype=bool)
    ok_time = ~bad_time & ~dst
    grid[ok_time] = on_grid(open_ns[ok_time], tf, session)
    checks: list[tuple[np.ndarray, str]] = [
        (bad_time & ~blank, "unparseable or missing timestamp"),
        (dst, "local time that does not exist or is ambiguous (daylight-saving change) in data.timezone"),
        (np.isnan(p).any(axis=1) & ~blank, "missing or non-numeric price"),
        ((p <= 0).any(axis=1), "non-positive price"),
        (lo > h, "low > high"),
        (h < o, "high < open"),
        (h < c, "high < close"),
        (lo > o, "low > open"),
        (lo > c, "low > close"),
        (~grid, f"timestamp not a {tf} bar open of {session.describe()}"),
    ]
    bad = np.logical_or.reduce([flag for flag, _ in checks])
    # Duplicates are judged among the rows that are otherwise valid (rows are sorted by time).
    ok = np.flatnonzero(~bad & ~blank)
    dup = np.zeros(len(open_ns), dtype=bool)
    dup[ok] = pd.Series(open_ns[ok]).duplicated(keep="first").to_numpy()
    checks.append((dup, "duplicate timestamp"))
    reasons = {
        int(i): "; ".join(msg for flag, msg in checks if flag[i])
        for i in np.flatnonzero(bad | dup)
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


def _fix(open_ns: np.ndarray, reasons: dict[int, str], blank: np.ndarray, tf: str, session: Session) -> str:
    """The advice closing a reject message: drop a few bad rows, or the setting that fixes a whole file."""
    n_rows = int((~blank).sum())
    share = len(reasons) / max(n_rows, 1)
    if share <= DROP_ADVICE_SHARE:
        return (f"Fix the file, or set data.on_invalid: drop to drop these {len(reasons)} of {n_rows} rows "
                f"({share:.1%}) with a warning.")
    off = np.array([i for i, r in reasons.items() if "bar open of" in r], dtype=np.int64)
    hint = offgrid_hint(open_ns[off], tf, session) if len(off) > share * n_rows / 2 else ""
    return (f"{share:.0%} of the rows are invalid, so dropping them is no fix. "
            + (hint[0].upper() + hint[1:] if hint else "Check the timeframe (data.base_tf), the columns and the "
               "time zone (data.timezone) of the file."))


# ----------------------------------------------------------------------------- several timeframes


def load_multi_timeframe(
    path: str | Path,
    base_tf: str,
    tfs: Sequence[str],
    on_invalid: OnInvalid = "reject",
    *,
    time_column: str | None = None,
    timezone: str | None = None,
    session: Session = Session(),
) -> dict[str, Bars]:
    """Load base bars from `path` and resample them to every timeframe in `tfs`.

    Returns:
        {tf: Bars} in the order of `tfs` (the base timeframe may be one of them).
        Dropped rows are reported by `load_bars`' warning; call `load_bars` + `resample` directly
        to keep the list for a run record.
    """
    for tf in tfs:
        check_timeframe(tf)
    base, _ = load_bars(path, timeframe=base_tf, on_invalid=on_invalid, time_column=time_column,
                        timezone=timezone, session=session)
    return {tf: resample(base, tf, session) for tf in tfs}
