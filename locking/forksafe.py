"""Fork safety: objects that hold locks, slots or mappings re-arm in a forked child.

After `os.fork()` (multiprocessing's fork start method, gunicorn's pre-fork
workers) the child shares the parent's open file descriptions.  That breaks
cross-process coordination in two opposite ways, and each object of `locking`
must handle both:

- `flock` locks belong to the open file description, so a child shares the
  parent's locks: if the parent dies, its locks stay held while the child lives
  (a dead process's slot would look alive), and a child that unlocks releases
  the parent's lock.  Remedy: the child drops its copies of the descriptors and
  opens its own.
- POSIX record locks (`fcntl`/`lockf`) belong to the process: the child holds
  none of the parent's (good), but closing *any* descriptor of a file drops all
  the process's record locks on it.  Remedy: one descriptor per file per process
  (see registry.py), never a second open-and-close of the same file.

Invariants
(K1) Every registered object's `_after_fork_in_child()` runs in the child before
     `os.fork()` returns there, for forks made through `os.fork` (the
     `os.register_at_fork` hook).
(K2) `forked(pid)` is a cheap check for forks that bypass the hook (a C
     extension calling fork(2) directly): objects record their pid and compare.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["ForkAware", "forked", "on_fork", "register"]


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_module_hooks: list[Callable[[], None]] = []
_latch = threading.Lock()


def on_fork(hook: Callable[[], None]) -> None:
    """Run `hook()` in every forked child before any object's hook (module
    state such as latches, which the objects' hooks may need)."""
    _module_hooks.append(hook)


def register(obj: ForkAware) -> None:
    """Call `obj._after_fork_in_child()` in every child forked from now on."""
    with _latch:
        _objects.add(obj)


def forked(pid: int) -> bool:
    """True if this process is not `pid`: the object was made before a fork (K2)."""
    return os.getpid() != pid


def _in_child() -> None:
    global _latch
    # A fork copies only the forking thread; a latch held by another thread at
    # fork time would never be released in the child, so replace it.
    _latch = threading.Lock()
    for hook in _module_hooks:
        hook()
    for obj in list(_objects):
        obj._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
