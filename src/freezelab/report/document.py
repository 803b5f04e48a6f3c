"""A tiny document model shared by the Markdown and HTML renderers, plus number formatting.

Sections are built once as a list of blocks; ``markdown.render`` and ``html.render`` turn the same
blocks into text, so the two formats (and both languages) show the same numbers. Inline markup in
text is limited to ``**bold**`` and ``code`` spans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

MAX_COLUMNS = 8  # keeps Markdown tables readable at 10 arms x 5 seeds


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Code:
    text: str
    lang: str = ""


@dataclass
class Image:
    path: str  # relative to the report folder, e.g. plots/final_test_ppl.png
    alt: str


@dataclass
class Details:
    """A collapsible section (``<details>``), used for long per-arm tables and diffs."""

    summary: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Callout:
    """A boxed aside: ``tone`` ``note`` (the literature context box) or ``warn`` (the smoke-test banner)."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    tone: str = "note"


@dataclass
class Section:
    """A named group of blocks (HTML ``<section id=...>``; Markdown: the blocks), e.g. the first screen."""

    id: str
    blocks: list[Block] = field(default_factory=list)


Block = Union[Heading, Para, Bullets, Table, Code, Image, Details, Callout, Section]


def split_table(header: list[str], rows: list[list[str]], keep: int = 1,
                max_columns: int = MAX_COLUMNS) -> list[Table]:
    """Split a wide table into several with the first ``keep`` columns repeated in each.

    Args:
        header: column names.
        rows: cell texts, one list per row.
        keep: leading key columns repeated in every part (e.g. Epoch, n).
        max_columns: the widest part allowed.

    Returns:
        One or more ``Table`` blocks, each at most ``max_columns`` wide.
    """
    width = max(1, max_columns - keep)
    rest = list(range(keep, len(header)))
    if not rest:
        return [Table(header, rows)]
    parts = [rest[i:i + width] for i in range(0, len(rest), width)]
    return [Table([header[j] for j in [*range(keep), *cols]], [[r[j] for j in [*range(keep), *cols]] for r in rows])
            for cols in parts]


def merge_identical_rows(table: Table, keep: int = 1) -> Table:
    """The table with rows whose cells after the first ``keep`` are identical merged into one row, their key
    cells joined ("`a`, `b`"), so a table that repeats itself across arms is shown once."""
    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for r in table.rows:
        groups.setdefault(tuple(r[keep:]), []).append(r)
    rows = [[*(", ".join(dict.fromkeys(r[j] for r in same)) for j in range(keep)), *rest]
            for rest, same in groups.items()]
    return Table(table.header, rows)


def drop_empty_columns(table: Table, keep: int = 1) -> Table:
    """The table without the columns (after the first ``keep``) whose every cell is empty or an em dash."""
    cols = [j for j in range(len(table.header))
            if j < keep or any(r[j] not in ("", "—") for r in table.rows)]
    return Table([table.header[j] for j in cols], [[r[j] for j in cols] for r in table.rows])


# ---- number formatting: one function per kind of number, used by both languages ----

def num(x: float | None) -> str:
    """A metric value: 2 decimals from 100 up (with thousands separators), 4 down to 0.01, then 3 s.f."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 100:
        return f"{x:,.2f}"
    if a >= 0.01:
        return f"{x:.4f}"
    return f"{x:.3g}"


def brief(x: float | None, percent: bool = False) -> str:
    """A value to about 4 significant digits for the first screen (1,455; 0.6234; 12.8%)."""
    if x is None or not math.isfinite(x):
        return "—"
    if percent:
        return f"{100 * x:.1f}%"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    return f"{x:.1f}" if a >= 100 else f"{x:.4g}"


def value(x: float | None, percent: bool = False) -> str:
    """A metric value; accuracy-type metrics as percentages (0.1888 -> 18.88%)."""
    if percent and x is not None and math.isfinite(x):
        return f"{100 * x:.2f}%"
    return num(x)


def signed(x: float | None, percent: bool = False) -> str:
    """A difference with an explicit sign; accuracy-type differences in points."""
    if x is None or not math.isfinite(x):
        return "—"
    if percent:
        return f"{100 * x:+.2f} pt"
    return ("+" if x >= 0 else "") + num(x)


def pct(x: float | None) -> str:
    """A relative change in percent with sign, e.g. -71.9%."""
    return "—" if x is None or not math.isfinite(x) else f"{x:+.1f}%"


def pvalue(p: float | None) -> str:
    """A p-value with three significant digits (0.0625, 0.25, 1)."""
    return "—" if p is None or not math.isfinite(p) else f"{p:.3g}"


def count(n: float | int | None) -> str:
    """An integer count with thousands separators."""
    return "—" if n is None or (isinstance(n, float) and not math.isfinite(n)) else f"{int(round(n)):,}"


def seconds(s: float | None) -> str:
    """A duration: seconds below 2 minutes, then minutes, then hours."""
    if s is None or not math.isfinite(s):
        return "—"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def brief_seconds(s: float | None) -> str:
    """A duration to two or three significant digits for the first screen: 8.2 s, 36 s, 4.1 min, 2.3 h."""
    if s is None or not math.isfinite(s):
        return "—"
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def brief_count(n: float | int | None) -> str:
    """A parameter count for the first screen: 84,956; 1.78 M; 13.5 M; 1.2 B."""
    if n is None or (isinstance(n, float) and not math.isfinite(n)):
        return "—"
    a = abs(float(n))
    if a < 1e6:
        return f"{int(round(n)):,}"
    if a < 1e9:
        return f"{n / 1e6:.3g} M"
    return f"{n / 1e9:.3g} B"


def nbytes(b: float | None) -> str:
    """A memory size in MiB or GiB."""
    if b is None or not math.isfinite(b):
        return "—"
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def spread(std: float, ref: float, percent: bool = False) -> str:
    """A std (or other spread) printed with the decimals of the value it accompanies (5.8100 ± 0.0100)."""
    if not math.isfinite(std):
        return "—"
    if percent:
        return f"{100 * std:.2f}%"
    a = abs(ref) if math.isfinite(ref) else 0.0
    if a >= 100:
        return f"{std:,.2f}"
    return f"{std:.4f}" if a >= 0.01 else f"{std:.2g}"


def mean_std(mean: float, std: float, percent: bool = False) -> str:
    """``mean ± std`` (std omitted when undefined, i.e. n < 2)."""
    if not math.isfinite(mean):
        return "—"
    return value(mean, percent) if not math.isfinite(std) else f"{value(mean, percent)} ± {spread(std, mean, percent)}"


def count_mean_std(mean: float, std: float) -> str:
    """``mean ± std`` of integer-valued data (iteration counts): integers stay integers."""
    if not math.isfinite(mean):
        return "—"
    m = count(mean) if float(mean).is_integer() else f"{mean:,.1f}"
    return m if not math.isfinite(std) else f"{m} ± {std:,.1f}"


def interval(lo: float, hi: float, fmt=num) -> str:
    """``[lo, hi]`` or an em dash when the interval is undefined."""
    return "—" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{fmt(lo)}, {fmt(hi)}]"


def cell(text: object) -> str:
    """Collapse arbitrary text (an error message, a config value) onto one line for a table cell."""
    return " ".join(str(text).split())


def short(text: object, limit: int = 160) -> str:
    """Truncate long text for a table cell (full text goes in a details block)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"
