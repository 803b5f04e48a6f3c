"""Errors that reach the user: each says what went wrong, where, and how to fix it."""

from __future__ import annotations


class FreezelabError(Exception):
    """Base class; the CLI prints the message on one line and exits with code 2."""


class ConfigError(FreezelabError):
    """A study file or override is invalid (unknown key, wrong type, impossible value)."""


class DataError(FreezelabError):
    """Input data is missing, unreadable, empty or inconsistent; the message names the file/row."""


class DataNotFoundError(DataError):
    """A data path or dataset does not exist."""


class PretrainedUnavailableError(FreezelabError):
    """A requested pretrained model cannot be loaded; never silently replaced by random weights."""


class RunFileError(FreezelabError, ValueError):
    """A file of a run folder is unreadable, damaged or from an incompatible version (folders are untrusted).

    Also a ValueError, as ``json.loads`` raises, so callers that tolerate a bad file keep doing so.
    """


class RunFileMissing(RunFileError, FileNotFoundError):
    """A file of a run folder that should be there is not (also a FileNotFoundError)."""


class DiskFullError(FreezelabError):
    """A write failed for lack of space; nothing half-written is left under the file's name."""


class InvariantViolation(FreezelabError):
    """A protocol invariant (experiment-protocol.md §1.5) failed during a run.

    Attributes:
        code: the stable failure code, e.g. ``frozen_tensor_changed``, ``lr_override``, ``non_finite``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class NumericFailure(FreezelabError):
    """Training diverged (non-finite losses, fp16 scale collapse)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
