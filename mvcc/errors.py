"""The public error hierarchy of mvcc, and the one place layer errors become it.

Every failure a user can cause raises a subclass of `Error` whose message says
what and where.  `storage` and `locking` raise their own small errors; each
public class below that stands for one of them subclasses it too, so code that
knows the layer error still catches it, and `translate()` turns a layer error
into its public class at the API edge with `raise ... from exc`.

Invariants
(X1) Every class here subclasses `Error`; `ConflictError` is also `Retryable`,
     the marker `@db.transactional` retries on, and nothing else is.
(X2) Every error pickles and unpickles to the same class, message and keyword
     attributes (worker pools send errors across processes).
(X3) `translate()` never turns an `Error` into another one, and never hides a
     layer error: anything it does not map passes through unchanged.
"""

from __future__ import annotations

from typing import Any

from locking.errors import LockWaitTimeout, RegistryFull, StateError
from storage.errors import (
    CorruptPage,
    EncodeError,
    FormatError,
    InvalidKeyError,
    LogFailed,
    StorageError,
    TooLarge,
)

__all__ = [
    "ClosedError",
    "ConflictError",
    "CorruptionError",
    "Error",
    "InvalidKey",
    "LockTimeout",
    "ReadOnlyError",
    "Retryable",
    "TableNotFound",
    "UniqueViolation",
    "ValidationError",
    "translate",
]


def _restore(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class Error(Exception):
    """Base class of every error mvcc raises on purpose."""

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.__dict__.update(fields)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from args and attributes: constructors take keywords (X2).
        return (_restore, (type(self), self.args, dict(self.__dict__)))

    @classmethod
    def _adopt(cls, exc: BaseException) -> Error:
        """The public twin of a layer error: same message, same attributes."""
        err = cls.__new__(cls)
        err.args = exc.args
        err.__dict__.update(exc.__dict__)
        return err


class Retryable(Exception):
    """Marker: running the transaction again may succeed."""


class ConflictError(Error, Retryable):
    """A concurrent transaction committed a change to what this one wrote (or,
    when serializable, read) after this one's snapshot; retry it."""

    def __init__(self, message: str = "", *, table: str = "", key: Any = None) -> None:
        super().__init__(
            message or f"write conflict on {table!r} key {key!r}", table=table, key=key
        )


class LockTimeout(Error, LockWaitTimeout):
    """A lock was not granted within `lock_timeout`; names the lock and the wait."""


class ValidationError(Error, EncodeError):
    """A document, value, option or query is not acceptable; names the field."""

    def __init__(self, message: str = "", *, field: str = "") -> None:
        Error.__init__(self, message, field=field, reason=message)


class UniqueViolation(Error):
    """A unique index already holds the value; names the field and the value."""

    def __init__(
        self, message: str = "", *, table: str = "", field: str = "", value: Any = None
    ) -> None:
        super().__init__(
            message or f"{table}.{field} must be unique: {value!r} is taken",
            table=table,
            field=field,
            value=value,
        )


class TableNotFound(Error):
    """No table of that name exists (in this transaction's snapshot)."""

    def __init__(self, message: str = "", *, table: str = "") -> None:
        super().__init__(message or f"no table named {table!r}", table=table)


class InvalidKey(Error, InvalidKeyError):
    """The passphrase or key is wrong, missing, or given for an unencrypted database."""


class CorruptionError(Error, CorruptPage):
    """A page, frame or file failed its checksum, authentication or a structural
    check; names the file and the page or frame.  The rest stays readable."""


class ReadOnlyError(Error):
    """A write was attempted in a `readonly=True` transaction."""


class ClosedError(Error):
    """The database (or a table of it) was closed."""


def public_error(exc: BaseException) -> BaseException | None:
    """The public error standing for a layer error, or None to let `exc` through."""
    if isinstance(exc, Error):
        return None
    if isinstance(exc, CorruptPage):
        return CorruptionError._adopt(exc)
    if isinstance(exc, InvalidKeyError):
        return InvalidKey._adopt(exc)
    if isinstance(exc, (EncodeError, TooLarge)):
        return ValidationError(str(exc), field=getattr(exc, "field", ""))
    if isinstance(exc, LockWaitTimeout):
        return LockTimeout._adopt(exc)
    if isinstance(exc, StateError):
        return CorruptionError(str(exc))
    if isinstance(exc, (RegistryFull, FormatError, LogFailed, StorageError)):
        return Error(str(exc))
    return None


class _Translate:
    """The context manager `translate()` returns: one shared instance, since a
    generator-based one costs a generator per use on the hottest paths."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            public = public_error(exc)
            if public is not None:
                raise public from exc


_TRANSLATE = _Translate()


def translate() -> _Translate:
    """Turn layer errors into the public hierarchy at the API edge (X3)."""
    return _TRANSLATE
