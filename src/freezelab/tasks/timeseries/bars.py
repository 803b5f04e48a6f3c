"""OHLC bars as arrays: the `Bars` container, resampling to coarser timeframes, synthetic and stored bars.

A `Bars` holds one timeframe (TF) as plain numpy arrays (spec §1 "freezelab storage"):
`open_time`/`close_time` in int64 ns UTC, `ohlc` float64 and `n_sub` (base bars aggregated).
Bars are left-labelled and left-closed: bar i covers [open_time[i], close_time[i]). Boundaries are the
UTC grid, or a trading session for 4-hour and daily bars (sessions.py). Reading files: bar_files.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from freezelab.errors import ConfigError, DataError, DataNotFoundError
from freezelab.tasks.timeseries.sessions import Session, bar_bounds, on_grid

TIMEFRAMES: dict[str, int] = {"m1": 1, "m5": 5, "m15": 15, "m30": 30, "h1": 60, "h4": 240, "d": 1440}
NS_PER_MINUTE = 60_000_000_000


@dataclass(frozen=True, eq=False)
class Bars:
    """One timeframe of OHLC bars, sorted by time, as flat arrays.

    Attributes:
        tf: timeframe name, a key of `TIMEFRAMES`.
        open_time: (n,) int64 ns UTC, strictly increasing.
        close_time: (n,) int64 ns UTC, the next boundary: open_time + interval, except 4-hour and daily
            bars of a session with daylight saving (sessions.py).
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

    def content_hash(self) -> str:
        """sha256 (hex, 16 chars) of the timeframe and every array's bytes; recorded in run records."""
        h = hashlib.sha256(self.tf.encode())
        for a in (self.open_time, self.close_time, self.ohlc, self.n_sub):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def check_timeframe(tf: str) -> None:
    """Raise a ConfigError for an unknown timeframe name."""
    if tf not in TIMEFRAMES:
        raise ConfigError(f"Unknown timeframe {tf!r}; use one of {', '.join(TIMEFRAMES)}.")


# ----------------------------------------------------------------------------- resampling


def resample(bars: Bars, tf: str, session: Session = Session()) -> Bars:
    """Aggregate bars to a coarser timeframe (spec §1 "Resampling").

    A coarse bar is labelled by its open time and covers [open, close) (left-labelled, left-closed);
    boundaries are the UTC grid (multiples of Δ from the Unix epoch: "d" starts at midnight UTC) or, for
    4-hour and daily bars, `session`. open = first, high = max, low = min, close = last, n_sub = sum;
    empty bars do not appear.

    Args:
        bars: sorted bars of a finer timeframe, on their own grid.
        tf: target timeframe; its interval must be a multiple of the source interval.
            The same timeframe returns `bars` unchanged.
        session: where 4-hour and daily bars start.

    Returns:
        The resampled bars.

    Raises:
        ConfigError: unknown, finer or non-multiple target timeframe; session boundaries that cut source bars.
        DataError: source bars off their grid or not strictly increasing.
    """
    check_timeframe(tf)
    src, dst = TIMEFRAMES[bars.tf], TIMEFRAMES[tf]
    if dst == src:
        return bars
    if dst < src or dst % src != 0:
        raise ConfigError(
            f"Cannot resample {bars.tf} ({src} min) to {tf} ({dst} min): the target must be coarser and "
            "its interval a multiple of the source interval."
        )
    t = bars.open_time  # (n,)
    if len(t) == 0:
        return Bars(tf, t.copy(), t.copy(), bars.ohlc.copy(), bars.n_sub.copy())
    if not on_grid(t, bars.tf, session).all() or np.any(np.diff(t) <= 0):
        raise DataError(
            f"resample({bars.tf} -> {tf}): source open times must be on the {bars.tf} grid "
            "and strictly increasing."
        )
    start, end = bar_bounds(t, tf, session)  # (n,) the coarse bar of each source bar
    cut = ~on_grid(start, bars.tf, session) | ~on_grid(end, bars.tf, session)
    if cut.any():
        at = str(np.datetime64(int(start[cut][0] if not on_grid(start[cut][:1], bars.tf, session)[0]
                                    else end[cut][0]), "ns"))[:16]
        raise ConfigError(f"{session.describe()} puts a {tf} boundary at {at} UTC, inside a {bars.tf} bar; choose "
                          f"data.session_timezone / data.session_close whose boundaries fall on the {bars.tf} grid.")
    starts = np.flatnonzero(np.concatenate([[True], start[1:] != start[:-1]]))  # (m,)
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
    return Bars(
        tf=tf,
        open_time=np.ascontiguousarray(start[starts]),
        close_time=np.ascontiguousarray(end[starts]),
        ohlc=np.ascontiguousarray(ohlc),
        n_sub=np.add.reduceat(bars.n_sub, starts),
    )

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
    check_timeframe(tf)
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
