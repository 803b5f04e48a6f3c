"""Per-arm seed summaries for the report's tables (experiment-protocol.md §6): n, mean, sample std
(ddof=1) and the t-based 95 % CI; metrics flagged ``log_scale`` (perplexity, MSE) are averaged in log space
(a geometric mean) and their CI is exponentiated.

Everything here works on plain sequences of per-seed values. Comparisons, intervals and verdicts are
``inference``'s and ``verdicts``' (docs/statistics.md), not this module's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Per-arm summary of one metric over seeds (values in the metric's own units).

    For ``log_scale`` metrics ``mean`` is the geometric mean and ``lo``/``hi`` the exponentiated CI
    of the log values; ``std`` is always the sample std (ddof=1) of the raw per-seed values.
    ``lo``/``hi``/``std`` are NaN when n < 2.
    """

    n: int
    mean: float
    std: float
    lo: float
    hi: float
    log_scale: bool = False


def _clean(values: Sequence[float]) -> np.ndarray:
    """Float array of the finite values (non-finite seeds are reported elsewhere, never averaged)."""
    arr = np.asarray([float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and t-based confidence interval: mean ± t_{(1+c)/2, n-1} · s / √n.

    Returns:
        (mean, lo, hi); lo and hi are NaN when fewer than two values are given.
    """
    arr = _clean(values)
    if arr.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    half = float(sps.t.ppf(0.5 + confidence / 2, arr.size - 1)) * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return mean, mean - half, mean + half


def describe(values: Sequence[float], *, log_scale: bool = False) -> Summary:
    """Summarise per-seed values: n, mean, sample std and 95 % CI (protocol §6, per arm).

    Args:
        values: one value per succeeded seed; non-finite values are dropped.
        log_scale: average in log space (geometric mean, exponentiated CI); values must be > 0.

    Returns:
        A ``Summary``; with n < 2 only ``n`` and ``mean`` are set.
    """
    arr = _clean(values)
    if arr.size == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, log_scale)
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    if log_scale and np.all(arr > 0):
        m, lo, hi = t_interval(np.log(arr))
        return Summary(int(arr.size), math.exp(m), std, math.exp(lo), math.exp(hi), True)
    m, lo, hi = t_interval(arr)
    return Summary(int(arr.size), m, std, lo, hi, False)
