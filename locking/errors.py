"""Errors of the locking layer.

`locking` cannot import `mvcc`; `mvcc.errors` subclasses these for the public
hierarchy (e.g. `mvcc.LockTimeout(Error, LockWaitTimeout)`) and translates at
one chokepoint.

Invariant
(E1) Every error pickles and unpickles to the same message and keyword
     attributes (worker pools send errors across processes).
"""

from __future__ import annotations

from typing import Any

__all__ = ["LockWaitTimeout", "LockingError", "RegistryFull", "StateError"]


def _restore(cls: type[LockingError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class LockingError(Exception):
    """Base class of every error raised by `locking`."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce calls cls(*args), which breaks keyword-only
        # constructors; rebuild from args and attributes instead (E1).
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class LockWaitTimeout(LockingError):
    """A lock was not granted within the timeout; names the lock and the wait."""

    def __init__(self, name: str, *, seconds: float, path: str = "") -> None:
        where = f" ({path})" if path else ""
        super().__init__(f"timed out after {seconds:.3f} s waiting for the {name} lock{where}")
        self.name = name
        self.seconds = seconds
        self.path = path


class RegistryFull(LockingError):
    """Every reader slot is held by a live process."""

    def __init__(self, *, slots: int, path: str = "") -> None:
        super().__init__(
            f"all {slots} reader slots of {path or 'the registry'} are held by live processes"
        )
        self.slots = slots
        self.path = path


class StateError(LockingError):
    """The shared state file is not ours, of another version, or unreadable."""

    def __init__(self, reason: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path
