"""Errors of the storage layer.

`storage` cannot import `mvcc`, so it raises these small classes; `mvcc.errors`
defines the public hierarchy, each public class subclassing the layer error it
stands for, and translates at one chokepoint.

Invariants
(I1) Nothing in `storage` lets a `struct.error`, `KeyError`, `msgpack` error or
     `cryptography.exceptions.InvalidTag` escape: each becomes one of these.
(I2) Every error pickles and unpickles to an equal message and the same
     keyword attributes (worker pools send errors across processes).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CorruptPage",
    "EncodeError",
    "FormatError",
    "InvalidKeyError",
    "LogFailed",
    "StorageError",
    "TooLarge",
]


def _restore(cls: type[StorageError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class StorageError(Exception):
    """Base class of every error raised by `storage`."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce calls cls(*args), which breaks for keyword-only
        # constructors; rebuild from args and attributes instead (I2).
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class CorruptPage(StorageError):
    """A page, frame or file failed its checksum, authentication or a structural check."""

    def __init__(self, reason: str, *, pgno: int | None = None, file: str = "") -> None:
        where = f"page {pgno}" if pgno is not None else "header"
        super().__init__(f"{file or '<memory>'}: {where}: {reason}")
        self.reason = reason
        self.pgno = pgno
        self.file = file


class InvalidKeyError(StorageError):
    """The passphrase or key does not open this data, or one is missing or not expected."""

    def __init__(self, reason: str, *, file: str = "") -> None:
        super().__init__(f"{file or '<memory>'}: {reason}" if file else reason)
        self.reason = reason
        self.file = file


class TooLarge(StorageError):
    """A key, value or document exceeds a documented size limit."""

    def __init__(self, what: str, *, size: int, limit: int, field: str = "") -> None:
        at = f" at {field!r}" if field else ""
        super().__init__(f"{what}{at} is {size} bytes; the limit is {limit}")
        self.what = what
        self.size = size
        self.limit = limit
        self.field = field


class EncodeError(StorageError):
    """A value cannot be encoded (unsupported type, non-str dict key, NaN where it must order)."""

    def __init__(self, reason: str, *, field: str = "") -> None:
        super().__init__(f"field {field!r}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class FormatError(StorageError):
    """A file is not ours, has an unsupported format version, or an option is out of range."""

    def __init__(self, reason: str, *, file: str = "") -> None:
        super().__init__(f"{file}: {reason}" if file else reason)
        self.reason = reason
        self.file = file


class LogFailed(StorageError):
    """A write or fsync of the log failed; the WAL refuses further work until reopened."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
