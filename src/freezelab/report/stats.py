"""Seed statistics of experiment-protocol.md §6: per-arm summaries and paired comparisons.

Everything here works on plain sequences of per-seed values; it knows nothing about run folders.

- ``describe``: n, mean, sample std (ddof=1) and the t-based 95 % CI; metrics flagged ``log_scale``
  (perplexity, MSE) are averaged in log space (a geometric mean) and their CI is exponentiated.
- ``paired``: differences d_s = arm_s - ref_s over the seeds both arms finished (log differences for
  ``log_scale`` metrics), paired-t 95 % CI and an exact sign-flip permutation p-value.
- ``holm``: Holm step-down adjustment across arms.
- ``verdict``: better / worse / no detectable difference, from the paired CI and the metric direction.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
EXACT_PERMUTATION_MAX_N = 20  # 2**20 sign vectors; beyond that a seeded Monte Carlo estimate is used
MONTE_CARLO_FLIPS = 200_000

Mode = Literal["min", "max"]
Verdict = Literal["better", "worse", "no_difference", "insufficient"]


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


@dataclass(frozen=True)
class Paired:
    """Paired comparison of an arm with the reference over the seeds both finished.

    ``d``/``lo``/``hi`` are in log units for ``log_scale`` metrics, else in metric units.
    ``pct``/``pct_lo``/``pct_hi`` are Δ% = (arm - ref) / ref · 100; for ``log_scale`` metrics they are
    exact transforms of the log CI, otherwise ``pct`` is the ratio of paired means and has no CI.
    """

    n: int
    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    d: float
    lo: float
    hi: float
    p: float
    pct: float
    pct_lo: float
    pct_hi: float
    log_scale: bool


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


def sign_flip_pvalue(diffs: Sequence[float]) -> float:
    """Two-sided sign-flip permutation p-value for the mean of paired differences.

    Under H0 each difference is symmetric around 0, so all 2^n sign assignments are equally likely;
    p is the share whose |mean| is at least the observed |mean|. Exact for n ≤ 20 (with n = 3 the
    smallest possible p is 2/8 = 0.25, with n = 5 it is 0.0625), seeded Monte Carlo beyond.

    Returns:
        p in (0, 1]; NaN for an empty input.
    """
    arr = _clean(diffs)
    if arr.size == 0:
        return math.nan
    observed = abs(arr.mean())
    tol = 1e-12 * max(1.0, float(np.abs(arr).max()))
    if arr.size <= EXACT_PERMUTATION_MAX_N:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=arr.size)))
    else:
        rng = np.random.default_rng(0)
        signs = rng.choice((1.0, -1.0), size=(MONTE_CARLO_FLIPS, arr.size))
        signs[0] = 1.0  # keep the observed assignment so p > 0
    means = np.abs(signs @ arr) / arr.size
    return float(np.mean(means >= observed - tol))


def paired(
    arm: dict[int, float], ref: dict[int, float], *, log_scale: bool = False
) -> Paired:
    """Paired comparison of an arm with the reference over the seeds present (and finite) in both.

    Args:
        arm: seed -> value for the arm's succeeded runs.
        ref: seed -> value for the reference arm's succeeded runs.
        log_scale: compare log values (ratios); Δ% then comes from the log differences.

    Returns:
        A ``Paired`` result; CI fields are NaN when fewer than two seeds are shared.
    """
    seeds = tuple(sorted(s for s in arm if s in ref and _finite_pair(arm[s], ref[s], log_scale)))
    a = np.array([arm[s] for s in seeds], dtype=float)
    r = np.array([ref[s] for s in seeds], dtype=float)
    diffs = np.log(a) - np.log(r) if log_scale else a - r
    d, lo, hi = t_interval(diffs)
    p = sign_flip_pvalue(diffs)
    if log_scale:
        pct, pct_lo, pct_hi = (math.expm1(x) * 100 if math.isfinite(x) else math.nan for x in (d, lo, hi))
    else:
        ref_mean = float(r.mean()) if r.size else math.nan
        ok = r.size and ref_mean > 0 and np.all(a > 0) and np.all(r > 0)
        pct = (float(a.mean()) - ref_mean) / ref_mean * 100 if ok else math.nan
        pct_lo = pct_hi = math.nan
    return Paired(len(seeds), seeds, tuple(float(x) for x in diffs), d, lo, hi, p, pct, pct_lo, pct_hi,
                  log_scale)


def _finite_pair(a: float, r: float, log_scale: bool) -> bool:
    if not (math.isfinite(a) and math.isfinite(r)):
        return False
    return not log_scale or (a > 0 and r > 0)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values; NaN entries are ignored and stay NaN.

    adj_(i) = max_{j ≤ i} min(1, (m - j + 1) · p_(j)) over the m finite p-values sorted ascending.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return out.tolist()


def verdict(result: Paired, mode: Mode) -> Verdict:
    """Verdict rule of protocol §6: the paired CI must exclude 0 in one direction.

    Args:
        result: the paired comparison (arm minus reference).
        mode: ``min`` if lower is better (loss, PPL, MSE), ``max`` if higher is better.

    Returns:
        ``better``, ``worse``, ``no_difference`` or ``insufficient`` (fewer than two paired seeds).
    """
    if result.n < 2 or not (math.isfinite(result.lo) and math.isfinite(result.hi)):
        return "insufficient"
    if result.lo > 0 or result.hi < 0:
        arm_higher = result.lo > 0
        return "better" if arm_higher == (mode == "max") else "worse"
    return "no_difference"
