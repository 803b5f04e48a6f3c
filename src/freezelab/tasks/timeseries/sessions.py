"""Bar boundaries: the UTC grid, or a trading session for 4-hour and daily bars (config ``data.session_*``).

Minute and hourly bars always lie on the UTC grid (multiples of their interval from the Unix epoch). Daily
and 4-hour bars follow a session: a day runs from ``close`` to ``close`` in the session's time zone, and its
4-hour bars start at close, close + 4 h, ... on that zone's wall clock. The default (UTC, 00:00) is the UTC
grid; FX days close at 17:00 New York, so their daily bars open at 21:00 UTC in summer and 22:00 UTC in
winter (``Session("America/New_York", "17:00")``). With daylight saving such bars are not all 24 h (or 4 h)
long in UTC, so a bar's close is the next boundary, not open + interval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from freezelab.errors import ConfigError

NS_PER_MINUTE = 60_000_000_000
_MINUTES = {"m1": 1, "m5": 5, "m15": 15, "m30": 30, "h1": 60, "h4": 240, "d": 1440}  # = bars.TIMEFRAMES
SESSION_TFS = ("h4", "d")
NEW_YORK_FX = ("America/New_York", "17:00")


@dataclass(frozen=True)
class Session:
    """Where daily and 4-hour bars start: ``close`` (HH:MM) on the wall clock of ``timezone`` (IANA name)."""

    timezone: str = "UTC"
    close: str = "00:00"

    def __post_init__(self) -> None:
        check_timezone(self.timezone, "data.session_timezone")
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", self.close):
            raise ConfigError(f"data.session_close={self.close!r} is not a time HH:MM, e.g. '17:00'.")

    @property
    def close_ns(self) -> int:
        h, m = self.close.split(":")
        return (int(h) * 60 + int(m)) * NS_PER_MINUTE

    @property
    def is_utc_grid(self) -> bool:
        return self.timezone in ("UTC", "Etc/UTC") and self.close == "00:00"

    def describe(self) -> str:
        return "the UTC grid" if self.is_utc_grid else f"sessions closing at {self.close} {self.timezone}"


def timezone_problem(name: str, key: str) -> str | None:
    """Why ``name`` is not an IANA time zone name (a message naming the config key), or None."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{key}={name!r} is not a time zone name; use an IANA name such as UTC, America/New_York or Asia/Tokyo"
    return None


def check_timezone(name: str, key: str) -> str:
    """An IANA time zone name, or a ConfigError naming the config key."""
    problem = timezone_problem(name, key)
    if problem:
        raise ConfigError(problem + ".")
    return name


def _local_wall(t: np.ndarray, tz: str) -> np.ndarray:
    """UTC ns -> wall-clock ns in ``tz`` (as if that wall clock were UTC)."""
    idx = pd.DatetimeIndex(t.astype("datetime64[ns]"), tz="UTC").tz_convert(tz).tz_localize(None)
    return idx.as_unit("ns").asi8


def _from_wall(wall: np.ndarray, tz: str) -> np.ndarray:
    """Wall-clock ns in ``tz`` -> UTC ns; an ambiguous time takes its first occurrence, a missing one shifts on."""
    idx = pd.DatetimeIndex(wall.astype("datetime64[ns]"))
    idx = idx.tz_localize(tz, ambiguous=np.ones(len(idx), dtype=bool), nonexistent="shift_forward")
    return idx.tz_convert("UTC").as_unit("ns").asi8


def bar_bounds(t: np.ndarray, tf: str, session: Session = Session()) -> tuple[np.ndarray, np.ndarray]:
    """Open and close (UTC ns) of the ``tf`` bar that contains each time ``t`` (UTC ns): (n,), (n,) int64."""
    t = np.asarray(t, dtype=np.int64)
    delta = _MINUTES[tf] * NS_PER_MINUTE
    if tf not in SESSION_TFS or session.is_utc_grid or len(t) == 0:
        start = np.floor_divide(t, delta) * delta
        return start, start + delta
    shifted = _local_wall(t, session.timezone) - session.close_ns
    wall_open = np.floor_divide(shifted, delta) * delta + session.close_ns
    return _from_wall(wall_open, session.timezone), _from_wall(wall_open + delta, session.timezone)


def on_grid(t: np.ndarray, tf: str, session: Session = Session()) -> np.ndarray:
    """(n,) bool: ``t`` is the open time of a ``tf`` bar."""
    return bar_bounds(t, tf, session)[0] == np.asarray(t, dtype=np.int64)


def offgrid_hint(t: np.ndarray, tf: str, session: Session) -> str:
    """How to fix a file whose timestamps are off the grid, judged from where they sit; '' if no pattern."""
    t = np.asarray(t, dtype=np.int64)
    if len(t) == 0:
        return ""
    if tf in SESSION_TFS and (session.timezone, session.close) != NEW_YORK_FX:
        if on_grid(t, tf, Session(*NEW_YORK_FX)).all():
            utc = sorted({str(x)[11:16] for x in pd.DatetimeIndex(t.astype("datetime64[ns]"))})[:4]
            return (f"every timestamp is a 17:00 New York session boundary ({', '.join(utc)} UTC): FX bars that close "
                    "at 17:00 New York. Set data.session_timezone: America/New_York and data.session_close: '17:00'.")
    offsets = np.unique(np.mod(t, _MINUTES[tf] * NS_PER_MINUTE) // NS_PER_MINUTE)
    if len(offsets) <= 2:
        shown = ", ".join(f"{int(m) // 60:02d}:{int(m) % 60:02d}" for m in offsets)
        fix = ("if they are local times, set data.timezone to their zone; if the bars follow a session, set "
               "data.session_timezone and data.session_close" if tf in SESSION_TFS else
               "if they are local times of a zone with a fractional UTC offset, set data.timezone; otherwise the "
               "file's timeframe is not data.base_tf")
        return f"every timestamp sits {shown} (h:mm) past the UTC {tf} grid: {fix}."
    return ""
