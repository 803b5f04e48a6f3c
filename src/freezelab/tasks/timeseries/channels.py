"""Optional input channels per bar (spec §3 "Inputs", ``model.channels``): log range and log return.

Both are level-free and in per cent, so they mean the same under every ``data.normalisation``:

    log_range_t  = 100 · ln(high_t / low_t)
    log_return_t = 100 · ln(close_t / close_{t−1}),   0 for a window's first bar (as the original's Δclose)

They are computed from the raw prices of the window and never carry a blanked bar's value into the input: a
blanked bar (target or hidden) gets 0 in both channels, and so does the log return of a bar whose previous
bar is blanked, since close_t visible and the return would give close_{t−1} away. Padding slots get 0. With
``masking.mask_inputs: false`` nothing is blanked in the input, so the channels carry every bar (the leak).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CHANNELS: tuple[str, ...] = ("log_range", "log_return")
PERCENT = 100.0


def input_channels(ohlc: np.ndarray, hidden_in_input: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The requested channels of one TF: (B, K, C) float64, 0 where they would reveal a blanked bar.

    Args:
        ohlc: (B, K, 4) raw prices, NaN at padding.
        hidden_in_input: (B, K) bool, bars whose values must not reach the input (blanked or padding).
        names: channel names, a subset of ``CHANNELS`` in the order wanted.

    Returns:
        (B, K, len(names)); (B, K, 0) when ``names`` is empty.
    """
    b, k, _ = ohlc.shape
    out = np.zeros((b, k, len(names)))
    if not names:
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        log_range = PERCENT * np.log(ohlc[..., 1] / ohlc[..., 2])  # (B, K)
        close = np.log(ohlc[..., 3])
        log_return = np.zeros((b, k))
        log_return[:, 1:] = PERCENT * (close[:, 1:] - close[:, :-1])
    prev_hidden = np.zeros_like(hidden_in_input)
    prev_hidden[:, 1:] = hidden_in_input[:, :-1]
    for j, name in enumerate(names):
        if name == "log_range":
            out[..., j] = np.where(hidden_in_input, 0.0, log_range)
        elif name == "log_return":
            out[..., j] = np.where(hidden_in_input | prev_hidden, 0.0, log_return)
        else:
            raise ValueError(f"unknown input channel {name!r}; choose from {CHANNELS}")
    return np.nan_to_num(out, nan=0.0)  # a first real bar after padding: no previous close, return 0
