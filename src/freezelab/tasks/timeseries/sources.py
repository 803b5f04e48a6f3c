"""Bar files shipped inside installed packages, read as data (``data.source``), never imported as code.

- ``fx_default``: EUR/USD hourly bars in ``backtesting``'s wheel (AGPL-3.0; the ``fxdata`` and ``dev`` extras).
  Naive timestamps in UTC: every weekly gap runs from Friday 20:00 (the last bar's open) to Sunday 21:00,
  the FX week's 17:00 New York close and open in summer time.
- ``sp500`` / ``nasdaq``: S&P 500 and NASDAQ Composite daily OHLCV 1999-01-04 .. 2018-12-31 in ``arch``'s
  wheel (NCSA licence, a core dependency). Date-only rows: trading days, each the UTC day that holds the
  New York session (09:30–16:00 ET = 13:30/14:30–20:00/21:00 UTC), so timeframe ``d`` only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from freezelab.errors import DataNotFoundError

# source -> (package, path inside it, base timeframe, time zone of its naive timestamps, install command)
SHIPPED: dict[str, tuple[str, tuple[str, ...], str, str, str]] = {
    "fx_default": ("backtesting", ("test", "EURUSD.csv"), "h1", "UTC", "pip install 'freezelab[fxdata]'"),
    "sp500": ("arch", ("data", "sp500", "sp500.csv.gz"), "d", "UTC", "pip install arch"),
    "nasdaq": ("arch", ("data", "nasdaq", "nasdaq.csv.gz"), "d", "UTC", "pip install arch"),
}


def shipped_path(source: str) -> Path:
    """The file of a shipped ``data.source``, located with ``importlib.util.find_spec`` (nothing imported).

    Raises:
        DataNotFoundError: the package is not installed or the file is missing.
    """
    package, parts, _, _, install = SHIPPED[source]
    spec = importlib.util.find_spec(package)  # locates the package without executing it
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = Path(loc).joinpath(*parts)
        if path.is_file():
            return path
    raise DataNotFoundError(
        f"Data file {'/'.join((package,) + parts)} not found (data.source={source}): package {package!r} is not "
        f"installed. Run `{install}`, or set data.source: file and data.path to your own OHLC file."
    )


def default_fx_path() -> Path:
    """Real EUR/USD hourly bars (2017-04-19 .. 2018-02-07, 5,000 rows) shipped in the `backtesting` wheel."""
    return shipped_path("fx_default")


def sp500_path() -> Path:
    """Daily S&P 500 bars (1999-01-04 .. 2018-12-31, 5,031 rows) shipped with `arch`; Date, Open, ..., Volume."""
    return shipped_path("sp500")
