"""Where a training loop's time goes: ``Stopwatch`` sums wall seconds per named share (the protocol checks,
frozen-tensor hashing, logging, checkpoints), so that each run's summary.json says what its overheads cost
and ``freezelab bench --mode run`` can report them beside the in-run MFU.

On CUDA the shares are host-side times (kernels run asynchronously); a share that synchronises, such as
a hash of device tensors, also absorbs the queued work before it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stopwatch:
    """Seconds per share, summed over every ``with stopwatch("name"):`` block (about 1 µs each)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, share: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[share] = self.seconds.get(share, 0.0) + time.perf_counter() - t0
