"""Time-aligned span masks applied to the inputs (spec §3 "Masking"; docs/timeseries-masking.md).

A mask has two parts. *Targets* are the bars that are scored; *hidden* bars have their input replaced by the
mask vector too but are not scored. The guarantee is about targets: no target shares time with a bar that is
visible in the input, in any timeframe (TF), so no target can be recovered by aggregating or disaggregating
visible bars. Schemes (``MaskConfig.scheme``):

- ``disjoint`` (default). TFs are taken finest first. The finest TF draws target spans anywhere in its
  window; a coarser TF draws them only among its bars that close before every finer window opens (the
  "eligible prefix": every coarser window reaches far beyond the finer ones). So no finer bar inside a
  target is in the input. Every other bar that shares time with a target (the coarser bars covering a
  finer target) is hidden. Targets then share time only with hidden bars: leak-free by construction, at
  ≈ the declared ratio per TF, and coarse-TF targets lie in the deeper past, before the finer windows.
- ``seed_closure``: seed spans per TF at the declared ratio, then every bar intersecting a seed bar is
  masked (one closure step, spec §3 step 2 as written). Visible finer bars may lie inside coarse bars masked
  by closure: this leaks, and masks far more than declared. Kept to reproduce earlier runs.
- ``full_closure``: the closure repeated to its fixed point. Leak-free, but it masks most bars of the finest
  TF on long layouts. Kept to reproduce earlier runs.
With both closures every masked bar is a target (nothing hidden). ``masking_audit.py`` measures the result.

Masks are bool arrays, True = masked. Random draws come from a `np.random.Generator` (draws depend on
the batch) or from `mask_rng(seed, epoch, window_ids)`: a counter-based stream per window, so a
window's mask depends only on (seed, epoch, window id), whatever batch it lands in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from freezelab.errors import ConfigError, InvariantViolation
from freezelab.tasks.timeseries.bars import TIMEFRAMES

Closure = Literal["full", "seed"]
Scheme = Literal["disjoint", "seed_closure", "full_closure"]
SCHEMES: tuple[str, ...] = ("disjoint", "seed_closure", "full_closure")
_FINE_TFS = ("m1", "m5", "m15")  # spec defaults: spans 3..10 for M1-M15, 1..4 for M30 and coarser


@dataclass(frozen=True)
class MaskConfig:
    """Seed-span settings per TF.

    Attributes:
        ratio: {tf: ρ_f}, share of the K_f bars covered by seed spans (at least 1 bar when ρ_f > 0).
        span_min / span_max: {tf: bars}, span lengths are uniform on span_min..span_max.
        scheme: "disjoint" (default, leak-free at the declared ratio), "seed_closure" (leaks) or
            "full_closure" (leak-free, over-masks); see the module doc.
    """

    ratio: dict[str, float]
    span_min: dict[str, int]
    span_max: dict[str, int]
    scheme: Scheme = "disjoint"

    def __post_init__(self) -> None:
        problems = []
        for f in self.ratio:
            if f not in self.span_min or f not in self.span_max:
                problems.append(f"{f}: span_min/span_max missing")
            elif not (1 <= self.span_min[f] <= self.span_max[f]):
                problems.append(
                    f"{f}: need 1 <= span_min <= span_max, got {self.span_min[f]}..{self.span_max[f]}"
                )
            if not 0.0 <= self.ratio[f] < 1.0:
                problems.append(f"{f}: ratio {self.ratio[f]} not in [0, 1)")
        if self.scheme not in SCHEMES:
            problems.append(f"scheme {self.scheme!r} is not one of {', '.join(SCHEMES)}")
        if problems:
            raise ConfigError("mask config: " + "; ".join(problems) + ".")


def default_mask_config(
    tfs: list[str] | tuple[str, ...], *, ratio: float = 0.15, scheme: Scheme = "disjoint"
) -> MaskConfig:
    """Spec defaults: ρ = 0.15; spans 3..10 bars for m1-m15, 1..4 for m30, h1, h4 and d."""
    for f in tfs:
        if f not in TIMEFRAMES:
            raise ConfigError(f"Unknown timeframe {f!r}; use one of {', '.join(TIMEFRAMES)}.")
    return MaskConfig(
        ratio=dict.fromkeys(tfs, ratio),
        span_min={f: 3 if f in _FINE_TFS else 1 for f in tfs},
        span_max={f: 10 if f in _FINE_TFS else 4 for f in tfs},
        scheme=scheme,
    )


# ----------------------------------------------------------------------------- per-window random streams

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class WindowRng:
    """Counter-based uniforms, one independent stream per window: uniform(c)[b] = U(key_b, c)."""

    keys: np.ndarray = field(repr=False)  # (B,) uint64

    def __len__(self) -> int:
        return len(self.keys)

    def uniform(self, counter: int) -> np.ndarray:
        """(B,) float64 in [0, 1), a pure function of (window key, counter)."""
        with np.errstate(over="ignore"):
            z = _mix(self.keys ^ _mix(np.array([counter], dtype=np.uint64)))
        return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def mask_rng(seed: int, epoch: int, window_ids: np.ndarray) -> WindowRng:
    """Streams seeded by (run seed, epoch, window id); window ids are e.g. the anchors (int64 ns).

    Training: mask_rng(run_seed, epoch, anchors) redraws every epoch. Val/test: mask_rng(mask_seed,
    0, anchors) gives the same masks for every arm and seed.
    """
    ids = np.asarray(window_ids, dtype=np.int64).view(np.uint64)  # (B,)
    with np.errstate(over="ignore"):
        k = _mix(np.array([seed], dtype=np.int64).view(np.uint64))
        k = _mix(k ^ np.array([epoch], dtype=np.int64).view(np.uint64))
        return WindowRng(_mix(k ^ ids))


def _uniform(rng: np.random.Generator | WindowRng, counter: int, n: int) -> np.ndarray:
    if isinstance(rng, WindowRng):
        assert len(rng) == n, f"WindowRng has {len(rng)} streams for {n} windows"
        return rng.uniform(counter)
    return rng.random(n)


# ----------------------------------------------------------------------------- masks


def seed_masks(
    shapes: Mapping[str, tuple[int, int]],
    rng: np.random.Generator | WindowRng,
    cfg: MaskConfig,
    limits: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Spans per TF: {tf: (B, K_f) bool}.

    Spans (length ~ U{s_min..s_max}, start uniform so the span fits) are added until at least
    max(1, round(ρ K)) bars are covered; spans may overlap, so the count can overshoot by a span.
    Windows are drawn in parallel; a window that reached its target ignores later draws.

    Args:
        shapes: {tf: (B, K_f)}.
        rng: the draws.
        cfg: ratios and span lengths.
        limits: {tf: (B,) int} per window, draw only in the first L bars (the eligible prefix) and cover
            at most ceil(L / 2) of them, so the prefix keeps visible context; L = 0 draws nothing.
            None (or a TF not listed): the whole window, no cap.
    """
    out = {}
    for i, (f, (n, k)) in enumerate(shapes.items()):
        target = max(1, round(cfg.ratio[f] * k)) if cfg.ratio[f] > 0 else 0
        if limits is None or f not in limits:
            lim, goal = np.full(n, k, dtype=np.int64), np.full(n, target, dtype=np.int64)
        else:
            lim = np.clip(np.asarray(limits[f], dtype=np.int64), 0, k)  # (B,)
            goal = np.minimum(target, (lim + 1) // 2)
        mask = np.zeros((n, k), dtype=bool)
        pos = np.arange(k)  # (K,)
        lo, hi = np.minimum(cfg.span_min[f], lim), np.minimum(cfg.span_max[f], lim)  # (B,)
        for it in range(100 * target + 1):  # ends far earlier; the cap only guards against bad configs
            active = mask.sum(axis=1) < goal  # (B,)
            if not active.any():
                break
            c = (i * 100_003 + it) * 2  # counters are unique per (tf, draw, purpose)
            length = lo + np.floor(_uniform(rng, c, n) * (hi - lo + 1)).astype(np.int64)  # (B,)
            start = np.floor(_uniform(rng, c + 1, n) * (lim - length + 1)).astype(np.int64)  # (B,)
            span = (pos >= start[:, None]) & (pos < (start + length)[:, None])  # (B, K)
            mask |= span & active[:, None]
        out[f] = mask
    return out


def eligible_prefix(
    open_times: Mapping[str, np.ndarray], close_times: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per coarser TF and window, how many leading bars close before every finer TF's window opens: {tf: (B,)}.

    The finest TF is not listed (its spans go anywhere in its window, uncapped). Bars are sorted in time, so
    the eligible bars are a prefix.
    """
    out: dict[str, np.ndarray] = {}
    horizon = None  # (B,) earliest open over the finer windows seen so far
    for f in sorted(open_times, key=TIMEFRAMES.__getitem__):
        o, c = open_times[f], close_times[f]
        if horizon is not None:
            out[f] = (c <= horizon[:, None]).sum(axis=1)
        horizon = o[:, 0] if horizon is None else np.minimum(horizon, o[:, 0])
    return out


def close_masks(
    open_times: Mapping[str, np.ndarray],
    close_times: Mapping[str, np.ndarray],
    seed: Mapping[str, np.ndarray],
    closure: Closure = "full",
) -> dict[str, np.ndarray]:
    """Mask every bar that intersects in time the masked intervals of any TF (see module doc).

    Args:
        open_times / close_times: {tf: (B, K_f) int64 ns}, increasing along K within each window.
        seed: {tf: (B, K_f) bool} seed masks.
        closure: "full" iterates to the fixed point; "seed" does one step from the seed masks.

    Returns:
        {tf: (B, K_f) bool}, a superset of the seed masks.
    """
    tfs = list(seed)
    n = len(seed[tfs[0]])
    if n == 0:
        return {f: seed[f].copy() for f in tfs}
    # Pack (window, time) into one sorted int64 key: key = b * stride + (t - t0_b).
    t0 = np.min([open_times[f][:, 0] for f in tfs], axis=0)  # (B,)
    t1 = np.max([close_times[f][:, -1] for f in tfs], axis=0)  # (B,)
    stride = int((t1 - t0).max()) + 1
    chunk = max(1, (2**62) // stride // 2)  # windows per chunk so keys stay far below int64 max
    if n > chunk:  # very long windows (years of daily bars): split so packed keys cannot overflow
        parts = [
            close_masks(
                {f: open_times[f][s : s + chunk] for f in tfs},
                {f: close_times[f][s : s + chunk] for f in tfs},
                {f: seed[f][s : s + chunk] for f in tfs},
                closure,
            )
            for s in range(0, n, chunk)
        ]
        return {f: np.concatenate([p[f] for p in parts]) for f in tfs}
    offset = (np.arange(n, dtype=np.int64) * stride - t0)[:, None]  # (B, 1)
    ko = {f: (open_times[f] + offset).ravel() for f in tfs}  # (B*K_f,)
    kc = {f: (close_times[f] + offset).ravel() for f in tfs}
    masks = {f: seed[f].ravel().copy() for f in tfs}
    for _ in range(4 * len(tfs) + 4):
        starts = np.concatenate([ko[f][masks[f]] for f in tfs])
        if len(starts) == 0:
            break
        m_start, m_end = _merge_intervals(starts, np.concatenate([kc[f][masks[f]] for f in tfs]))
        new = {f: masks[f] | _intersects(m_start, m_end, ko[f], kc[f]) for f in tfs}
        changed = any((new[f] != masks[f]).any() for f in tfs)
        masks = new
        if closure == "seed" or not changed:
            break
    else:
        raise AssertionError("mask closure did not converge")
    return {f: masks[f].reshape(seed[f].shape) for f in tfs}


def _merge_intervals(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of half-open intervals [starts, ends) as sorted disjoint (m_start, m_end), (M',) each."""
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], np.maximum.accumulate(ends[order])  # running max merges overlaps
    first = np.concatenate([[True], s[1:] > e[:-1]])  # a merged interval starts here
    last = np.concatenate([np.flatnonzero(first)[1:] - 1, [len(s) - 1]])
    return s[first], e[last]


def _intersects(
    m_start: np.ndarray, m_end: np.ndarray, q_open: np.ndarray, q_close: np.ndarray
) -> np.ndarray:
    """Does each query [q_open, q_close) intersect the disjoint sorted intervals? (N,) bool."""
    j = np.searchsorted(m_end, q_open, side="right")  # first interval ending after q_open
    hit = j < len(m_end)
    hit[hit] = m_start[j[hit]] < q_close[hit]
    return hit


@dataclass(frozen=True, eq=False)
class MaskSet:
    """Masks of a batch of windows: {tf: (B, K_f) bool} targets (scored) and hidden (blanked, not scored)."""

    targets: dict[str, np.ndarray]
    hidden: dict[str, np.ndarray]

    @property
    def blanked(self) -> dict[str, np.ndarray]:
        """Bars whose input is replaced by the mask vector: targets | hidden."""
        return {f: m | self.hidden[f] for f, m in self.targets.items()}

    def select(self, rows: np.ndarray) -> MaskSet:
        """The masks of some windows (a boolean or index array over B)."""
        return MaskSet({f: m[rows] for f, m in self.targets.items()}, {f: m[rows] for f, m in self.hidden.items()})


def draw_masks(
    open_times: Mapping[str, np.ndarray],
    close_times: Mapping[str, np.ndarray],
    rng: np.random.Generator | WindowRng,
    cfg: MaskConfig,
) -> MaskSet:
    """Targets and hidden bars of the configured scheme (module doc). TFs follow `open_times` order."""
    missing = [f for f in open_times if f not in cfg.ratio]
    if missing:
        raise ConfigError(f"mask config has no settings for timeframes {missing}.")
    shapes = {f: t.shape for f, t in open_times.items()}
    if cfg.scheme == "disjoint":
        targets = seed_masks(shapes, rng, cfg, eligible_prefix(open_times, close_times))
        covered = close_masks(open_times, close_times, targets, "seed")  # every bar sharing time with a target
        return MaskSet(targets, {f: covered[f] & ~targets[f] for f in targets})
    closed = close_masks(open_times, close_times, seed_masks(shapes, rng, cfg),
                         "seed" if cfg.scheme == "seed_closure" else "full")
    return MaskSet(closed, {f: np.zeros_like(m) for f, m in closed.items()})


def masks_hash(masks: Mapping[str, np.ndarray] | MaskSet) -> str:
    """sha256 (16 hex) of TF names, shapes and mask bits (targets, then hidden); recorded for val/test."""
    h = hashlib.sha256()
    parts = [masks.targets, masks.hidden] if isinstance(masks, MaskSet) else [masks]
    for j, part in enumerate(parts):
        for f, m in part.items():
            h.update(f"{f}:{m.shape}".encode() if j == 0 else f"hidden {f}:{m.shape}".encode())
            h.update(np.packbits(np.ascontiguousarray(m, dtype=bool)).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- inputs


def apply_mask(
    values: np.ndarray, mask: np.ndarray, fill: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Replace masked bars by `fill` (default zeros; the model then adds its learned vector μ_f).

    Args:
        values: (B, K, 4) normalised OHLC.
        mask: (B, K) bool, True = masked.
        fill: (4,) or None.

    Returns:
        inputs (B, K, 4) with no masked value left, and flag (B, K) = mask as values' dtype.
    """
    fill_v = (
        np.zeros(values.shape[-1], dtype=values.dtype) if fill is None else np.asarray(fill, values.dtype)
    )
    inputs = np.where(mask[..., None], fill_v, values)  # (B, K, 4), a new array
    return inputs, mask.astype(values.dtype)


def assert_no_masked_leak(
    inputs: np.ndarray, targets: np.ndarray, mask: np.ndarray, fill: np.ndarray | None = None
) -> None:
    """Check that every masked bar of `inputs` holds exactly `fill` (default 0), not its target.

    Raises:
        InvariantViolation("masked_input_leak"): some masked bar carries another value.
    """
    fill_v = np.zeros(inputs.shape[-1]) if fill is None else np.asarray(fill, dtype=np.float64)
    leaked = mask & (inputs != fill_v).any(axis=-1)  # (B, K)
    if leaked.any():
        b, k = np.argwhere(leaked)[0]
        same = mask & (inputs == targets).all(axis=-1) & (targets != fill_v).any(axis=-1)
        raise InvariantViolation(
            "masked_input_leak",
            f"{int(leaked.sum())} masked bar(s) reach the model input with a value other than the fill "
            f"({int(same.sum())} equal to their target); first at window {b}, bar {k}: "
            f"{inputs[b, k].tolist()}. Apply the mask before building inputs.",
        )
