"""Build modules on the meta device for parameter accounting, without running their initialisers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode


class _SkipInit(TorchFunctionMode):
    """``torch.nn.init.*`` calls return their tensor untouched (a meta tensor has no values to set; the
    meta kernels of some initialisers would import torch's compiler, seconds of a CLI command)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if getattr(func, "__module__", "") == "torch.nn.init":
            return args[0] if args else kwargs.get("tensor")
        return func(*args, **kwargs)


@contextlib.contextmanager
def on_meta() -> Iterator[None]:
    """Create tensors on the meta device (shapes only) and skip ``torch.nn.init`` initialisers."""
    with torch.device("meta"), _SkipInit():
        yield
