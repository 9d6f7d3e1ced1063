"""Named cross-process file locks, and the lock order of the database.

Every lock of a data directory is a `FileLock` on a small file next to the data,
opened once and kept open for the life of the object: lock + unlock on a kept
descriptor costs ~0.9 µs here, open + lock + unlock + close ~3.8 µs
(`python -m stress.bench.locking`), and a descriptor per object is also what
makes the fork handling below possible.

The named locks of a data directory (`LockSet` opens them all)
-------------------------------------------------------------
``recovery``    (`<dir>/recovery.lock`) held exclusive while a process opens
                the directory: it asks "is anyone else here?" (a try of `open`
                exclusive), recovers if no one is, and turns its `open` lock
                shared, all before it lets the next opener in.  `flock` cannot
                turn exclusive into shared atomically (it unlocks, then
                locks); holding `recovery` closes that window.
``open``        (`open.lock`) held *shared* by every process that has the
                directory open, for as long as it has it open.  Held
                *exclusive* only during recovery (replay the WAL, truncate a
                torn tail, `StateFile.reset`), which needs no one else there.
``vacuum``      (`vacuum.lock`) held for life by the one elected vacuum process;
                election is a `try_acquire()`, and a dead vacuum process's lock
                is released by the kernel so another can be elected.
``checkpoint``  (`checkpoint.lock`) serialises checkpoints: folding the WAL into
                the page file, writing a meta page, deleting covered WAL
                segments.  Commits go on while it is held.
``sync``        (`sync.lock`) group commit: one process at a time makes the
                WAL durable.  A committer whose frame is not yet durable tries
                it; the holder (the leader) re-reads the durable position,
                gathers, syncs everything appended so far, publishes it
                (taking `commit` briefly), and releases.
``gate0``,      (`gate0.lock`, `gate1.lock`) the wake-up of group commit: the
``gate1``       leader of sync number g holds gate (g mod 2) exclusive from
                before its sync until after it published the durable position;
                the committers its sync may cover wait on that gate *shared*,
                and the kernel wakes them all at once when it is released.
                Two gates, so that the next leader never waits for the woken
                followers of the last sync to let go of its gate (the
                algorithm: mvcc/commitlog.py).  Never held together.
``commit``      (`commit.lock`) serialises commits: WAL catch-up, validation,
                the frame append, its fsync, and every write of the shared state
                file (statefile.py S2).
``sequence``    (`sequence.lock`) serialises the hand-out of blocks of ids, and
                rewrites of the key file (rekey): both are small files replaced
                by a rename.

The global lock order (Architecture Invariant; also in ARCHITECTURE.md)
-----------------------------------------------------------------------
    recovery -> open -> vacuum -> checkpoint -> sync -> gate0 -> gate1 -> commit -> sequence

A process may take a later lock while holding an earlier one, never the
reverse.  `LockSet` checks it per thread: acquiring a lock while the same thread
holds a later one of the same set raises RuntimeError (L5).

Invariants
(L1) A `FileLock` is held by at most one thread of a process at a time, shared
     or exclusive: an in-process latch (`threading.Lock`) is taken before the
     file lock.  `flock` locks belong to the open file description, so without
     the latch two threads sharing the descriptor would both "get" it.  Two
     `FileLock` objects on one path (even in one process) exclude each other
     like two processes do: each has its own open file description.
(L2) Acquiring a lock this object already holds, from the thread that holds it,
     raises RuntimeError instead of deadlocking.  Another thread waits on the
     latch.  Any thread may release.
(L3) Every wait with a finite timeout ends in time: the lock is held, or
     `LockWaitTimeout(name, seconds=waited, path=)` is raised and nothing is
     held.  Waits longer than 100 ms are logged at DEBUG on "mvcc.locking".
(L4) A process that dies, even by SIGKILL, releases every lock it held: the
     kernel drops `flock` locks with the last reference to the open file
     description.  A forked child holds none of its parent's locks, and keeps
     none alive after the parent dies (see Fork below).
(L5) Within a `LockSet`, a thread takes locks only in the global order.

Waiting (the algorithm of `_wait_for_file`)
------------------------------------------
`flock` cannot time out when it blocks, and a polling sleep cannot hand off in
microseconds on this kind of machine (a `time.sleep(20e-6)` returns after
~100 µs, a `time.sleep(0)` after ~80 µs), so a wait has three phases:

1. try: `flock(LOCK_NB)`; free means held at once (~1 µs).
2. spin, for up to SPIN_SECONDS (60 µs): `os.sched_yield()` then
   `flock(LOCK_NB)`, ~1.7 µs a round.  Most waits behind a short critical
   section end here, with a hand-off of 1-5 µs.
3. block: a helper thread (one per lock, made at its first long wait) calls the
   blocking `flock` on the lock's descriptor; the caller waits for the helper's
   signal with the remaining timeout.  The kernel wakes the helper the moment
   the lock is free; hand-off p50 ~50-65 µs here (two wake-ups, the second
   one through the GIL).  When there is no timeout the caller blocks in
   `flock` itself: one wake-up, ~7-17 µs.

Cancellation (W1-W3): on timeout the caller and the helper settle the wait under
`_fd_mutex`.  If the helper was already granted the lock, the caller takes it
(late, but held).  Otherwise the caller marks the wait cancelled, hands the
descriptor over to the helper (W1: the caller never closes it, so the helper's
descriptor number is never reused under it) and opens a fresh descriptor for
itself.  The helper's `flock` returns when the lock is next free; it then
unlocks and closes the descriptor (W2), giving back the lock it was granted a
moment before, and the thread ends.  (W3) Until then, the descriptor is listed
in `_abandoned`, so a child forked in the meantime closes its copy.  Cost: a
timed-out wait leaves one thread blocked until the lock is next free.  An idle
helper ends when its lock is closed or collected.

Rejected (measured on the 2-core development VM, hand-off = next holder's
acquisition - previous holder's release, p50):
- polling alone (spin, then sleeps growing 20 µs -> 500 µs): fast while the
  waiter spins (1-5 µs) but a sleeping poller misses short gaps, so a process
  that commits back to back starves the others: with 2 ms holds and 50 µs
  between them, the 99th percentile *wait* was 54 ms (2 processes) and 112 ms
  (4 processes), against 6 ms and 16 ms for spin-then-block.
- blocking `flock` in a helper thread from the first miss: 25-45 µs hand-offs
  where spinning gets 1-5 µs, and a thread wake-up on every contended acquire.
- a blocking `flock` interrupted by a signal at the deadline: only the main
  thread can be interrupted (CPython retries `flock` on EINTR in other
  threads), and a library must not own a signal handler.
- a wake-up FIFO per lock, a byte written on every release, waiters in
  `select()` with the timeout (one wake-up, no thread): hand-off p50 13-30 µs,
  but with 4 processes the 99th percentile wait was 21-25 ms against 3-10 ms
  (woken waiters lose to the releaser more often than `flock` waiters do), a
  write per release, a FIFO file per lock, and nothing like it on Windows.
- the helper signalling through a pipe instead of a lock, so that the caller
  is woken while the helper does not hold the GIL: no gain beyond this VM's
  noise (p50 18-24 µs against 22-35 µs in a two-process probe).

Backends.  On POSIX, `fcntl.flock` is called directly on the kept descriptor
(~1 µs lock + unlock here).  portalocker is the portable path, used where there
is no `fcntl` (Windows): it does the same on POSIX but costs ~9 µs lock +
unlock here (argument checks, flag translation, exception mapping), which the
commit lock pays twice per commit.  `FileLock(..., backend="portalocker")`
forces it (the tests run the mutual-exclusion test on both).

Fork.  Each `FileLock` is registered with `forksafe`; in the child,
`_after_fork_in_child` closes the inherited descriptor *without* unlocking
(closing the child's copy leaves the parent's lock alone; `LOCK_UN` would
release it, since the lock belongs to the shared open file description) and
opens its own: the child holds nothing, and the parent's locks die with the
parent.  `acquire` also compares pids (`forksafe.forked`), for forks that
bypassed the hook.

Threads.  A `FileLock` may be shared by threads (L1, L2).  `close()` must not
race with another thread's `acquire`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from . import forksafe
from .errors import LockWaitTimeout

try:
    import fcntl
except ImportError:  # Windows: portalocker is the only backend
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_ORDER", "SLOW_WAIT_SECONDS", "SPIN_SECONDS", "FileLock", "LockSet"]

log = logging.getLogger("mvcc.locking")

LOCK_ORDER: Final = (
    "recovery",
    "open",
    "vacuum",
    "checkpoint",
    "sync",
    "gate0",
    "gate1",
    "commit",
    "sequence",
)

SPIN_SECONDS: Final = 60e-6
"""How long a waiter spins (yield + non-blocking try) before it blocks.

Measured hand-offs stay at 1-5 µs for waits shorter than this; 60 µs costs a
waiter that then blocks little CPU, and covers a short commit (validate +
append, no fsync).
"""

_SPINNING: Final = frozenset({"commit", "sequence"})
"""The locks of a `LockSet` whose waits spin first: those held for a short
critical section.  The others are held across an fsync or longer (a sync, a
checkpoint, recovery), which no spin outlasts: there a spin only takes the
CPU from the processes doing the work (on two CPUs a `sched_yield` with four
processes runnable returns after a time slice, ~400 µs, not ~1.7 µs)."""

SLOW_WAIT_SECONDS: Final = 0.1
"""Waits longer than this are logged at DEBUG (L3)."""

_O_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOINHERIT", 0)
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))
Backend = Literal["fcntl", "portalocker"]


# -- backends ------------------------------------------------------------------


class _FcntlBackend:
    """`fcntl.flock` on a raw descriptor."""

    name = "fcntl"

    def __init__(self) -> None:
        assert fcntl is not None
        self.ex = fcntl.LOCK_EX
        self.sh = fcntl.LOCK_SH
        self._nb = fcntl.LOCK_NB
        self._un = fcntl.LOCK_UN
        self._flock = fcntl.flock

    def try_lock(self, fd: int, mode: int) -> bool:
        try:
            self._flock(fd, mode | self._nb)
        except BlockingIOError:
            return False
        return True

    def lock(self, fd: int, mode: int) -> None:
        self._flock(fd, mode)

    def unlock(self, fd: int) -> None:
        self._flock(fd, self._un)


class _PortalockerBackend:
    """portalocker, for platforms without `fcntl` (and to test that path)."""

    name = "portalocker"

    def __init__(self) -> None:
        import portalocker

        self._pl = portalocker
        self.ex = int(portalocker.LockFlags.EXCLUSIVE)
        self.sh = int(portalocker.LockFlags.SHARED)
        self._nb = portalocker.LockFlags.NON_BLOCKING

    def try_lock(self, fd: int, mode: int) -> bool:
        try:
            self._pl.lock(fd, self._pl.LockFlags(mode) | self._nb)
        except self._pl.AlreadyLocked:
            return False
        return True

    def lock(self, fd: int, mode: int) -> None:
        # portalocker's blocking lock may give up (msvcrt retries for ~10 s);
        # keep asking until granted or failed for another reason.
        while True:
            try:
                self._pl.lock(fd, self._pl.LockFlags(mode))
                return
            except self._pl.AlreadyLocked:
                continue

    def unlock(self, fd: int) -> None:
        self._pl.unlock(fd)


_BackendImpl = _FcntlBackend | _PortalockerBackend


def _backend(name: Backend | None) -> _BackendImpl:
    if name is None:
        name = "fcntl" if fcntl is not None else "portalocker"
    if name == "fcntl":
        if fcntl is None:
            raise ValueError("the fcntl backend needs a platform with fcntl")
        return _FcntlBackend()
    if name == "portalocker":
        return _PortalockerBackend()
    raise ValueError(f"unknown lock backend {name!r}")


# -- the helper that blocks in flock for a waiter (W1-W3) -----------------------

# Guards the hand-over of descriptors between waiters and helpers and the
# `_abandoned` set; held across fork (before/after hooks below) so a child never
# sees a descriptor half handed over.
_fd_mutex = threading.Lock()
_abandoned: set[int] = set()  # descriptors owned by helpers of cancelled waits (W3)
_module_pid = os.getpid()

_PENDING, _GRANTED, _FAILED, _CANCELLED = "pending", "granted", "failed", "cancelled"


class _Wait:
    """One blocking wait handed to a helper; `outcome` changes under `_fd_mutex`."""

    __slots__ = ("error", "fd", "mode", "outcome", "settled")

    def __init__(self, fd: int, mode: int) -> None:
        self.fd = fd
        self.mode = mode
        self.outcome = _PENDING
        self.error: BaseException | None = None
        self.settled = threading.Lock()  # released by the helper when granted or failed
        self.settled.acquire()


class _Helper:
    """A daemon thread that runs blocking `lock` calls for one FileLock."""

    def __init__(self, name: str, backend: _BackendImpl) -> None:
        self._backend = backend
        # A bare lock as the "go" signal, not a Condition: after it settles a
        # wait, the helper is back in a C-level acquire at once and drops the
        # GIL before the woken caller asks for it (hand-off p50 ~60 -> ~50 µs
        # here, within noise of the commit load).
        self._go = threading.Lock()
        self._go.acquire()
        self._job: _Wait | None = None
        self._stopping = False
        thread = threading.Thread(target=self._run, name=f"mvcc-lock-wait-{name}", daemon=True)
        thread.start()

    def submit(self, job: _Wait) -> None:
        """Start one wait; the helper is idle (one wait at a time, under the latch)."""
        self._job = job
        self._go.release()

    def stop(self) -> None:
        """End the thread once it is idle (its lock was closed or collected)."""
        if not self._stopping:
            self._stopping = True
            with contextlib.suppress(RuntimeError):  # a wait in flight: it ends anyway
                self._go.release()

    def _run(self) -> None:
        while True:
            self._go.acquire()
            job, self._job = self._job, None
            if job is None:
                return  # stopped
            error: BaseException | None = None
            try:
                self._backend.lock(job.fd, job.mode)
            except BaseException as exc:  # handed to the waiter, raised there
                error = exc
            with _fd_mutex:
                if job.outcome is _CANCELLED:
                    self._drop(job, granted=error is None)
                    return  # this thread's work is done (W2)
                job.outcome = _GRANTED if error is None else _FAILED
                job.error = error
                job.settled.release()

    def _drop(self, job: _Wait, granted: bool) -> None:
        """W2: give back what the kernel granted to a cancelled wait, close its fd."""
        if granted:
            # Unlock before closing: a child forked a moment ago may still hold
            # a copy of the descriptor (until its fork hook closes it, W3), and
            # the lock would live as long as that copy.
            with contextlib.suppress(Exception):
                self._backend.unlock(job.fd)
        os.close(job.fd)
        _abandoned.discard(job.fd)  # after the close: "not listed" means closed


def _before_fork() -> None:
    _fd_mutex.acquire()


def _after_fork_in_parent() -> None:
    _fd_mutex.release()


def _after_fork_in_child() -> None:
    """Drop the child's copies of descriptors that parent helpers own (W3)."""
    global _fd_mutex, _module_pid
    _fd_mutex = threading.Lock()  # the one the parent held across the fork
    _module_pid = os.getpid()
    for fd in _abandoned:
        with contextlib.suppress(OSError):
            os.close(fd)
    _abandoned.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


# -- FileLock --------------------------------------------------------------------


class FileLock:
    """A named cross-process lock on `path`, shared or exclusive, with a timeout.

    States: FREE -> HELD (`acquire`, `try_acquire`) -> FREE (`release`);
    any -> CLOSED (`close`, releasing first).  `with lock:` acquires with the
    default `timeout` given at construction; `with lock.hold(t, shared=True):`
    with explicit ones.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str,
        *,
        timeout: float | None = 10.0,
        backend: Backend | None = None,
        spin: float = SPIN_SECONDS,
    ) -> None:
        self.path = os.fspath(path)
        self.name = name
        self.timeout = timeout
        self.spin = spin  # seconds of phase 2; 0 for locks held across an fsync
        self._backend = _backend(backend)
        self._try = self._backend.try_lock
        self._latch = threading.Lock()  # L1
        self._owner: int | None = None  # thread ident of the holder (L2)
        self._mode: int | None = None  # backend mode while held
        self._helper: _Helper | None = None
        self._closed = False
        self._order: tuple[int, list[FileLock]] | None = None  # set by LockSet (L5)
        self._pid = os.getpid()
        self._fd = os.open(self.path, _O_FLAGS, 0o644)
        forksafe.register(self)

    # -- public ----------------------------------------------------------------

    @property
    def held(self) -> bool:
        """True while this object holds the lock (in any thread of this process)."""
        return self._mode is not None

    @property
    def shared(self) -> bool:
        """True while held shared."""
        return self.held and self._mode == self._backend.sh

    def acquire(self, timeout: float | None, *, shared: bool = False) -> None:
        """Take the lock, waiting at most `timeout` seconds (None: for ever).

        Raises LockWaitTimeout (L3), or RuntimeError if this thread already
        holds it (L2) or the lock order is broken (L5).
        """
        waited = self._acquire(timeout, shared)
        if waited is not None:
            raise LockWaitTimeout(self.name, seconds=waited, path=self.path)

    def try_acquire(self, *, shared: bool = False) -> bool:
        """Take the lock if it is free now; never waits."""
        return self._acquire(0.0, shared) is None

    def release(self) -> None:
        """Give the lock up; RuntimeError if this object does not hold it."""
        if not self.held:
            raise RuntimeError(f"the {self.name} lock is not held ({self.path})")
        self._backend.unlock(self._fd)
        self._mode = None
        self._owner = None
        self._latch.release()

    def close(self) -> None:
        """Release if held and close the descriptor.  Idempotent."""
        if self._closed:
            return
        if self.held:
            self.release()
        self._closed = True
        os.close(self._fd)
        if self._helper is not None:
            self._helper.stop()
            self._helper = None

    @contextlib.contextmanager
    def hold(self, timeout: float | None, *, shared: bool = False) -> Iterator[FileLock]:
        """`with lock.hold(5.0):` acquire, and release on exit."""
        self.acquire(timeout, shared=shared)
        try:
            yield self
        finally:
            self.release()

    def __enter__(self) -> FileLock:
        self.acquire(self.timeout)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else "shared"
            if self.shared
            else "held"
            if self.held
            else "free"
        )
        return f"<FileLock {self.name} {self.path} {state}>"

    # -- acquisition -------------------------------------------------------------

    def _acquire(self, timeout: float | None, shared: bool) -> float | None:
        """Latch, then file lock (L1): None when held, else the seconds waited."""
        if forksafe.forked(self._pid):  # a fork that bypassed the hook (K2)
            self._after_fork_in_child()
        if self._closed:
            raise RuntimeError(f"the {self.name} lock is closed ({self.path})")
        me = threading.get_ident()
        if self._owner == me:
            raise RuntimeError(f"the {self.name} lock is already held by this thread (L2)")
        if self._order is not None:
            self._check_order(me)
        mode = self._backend.sh if shared else self._backend.ex
        # Fast path: latch and lock both free (one flock call, no clock read).
        latched = self._latch.acquire(blocking=False)
        if latched:
            try:
                if self._try(self._fd, mode):
                    self._owner, self._mode = me, mode
                    return None
            except BaseException:
                self._latch.release()
                raise
        return self._acquire_slow(me, mode, timeout, latched)

    def _acquire_slow(
        self, me: int, mode: int, timeout: float | None, latched: bool
    ) -> float | None:
        start = time.monotonic()
        deadline = None if timeout is None else start + max(timeout, 0.0)
        if not latched and not self._take_latch(deadline):
            return time.monotonic() - start
        try:
            got = self._wait_for_file(mode, deadline)
        except BaseException:
            self._latch.release()
            raise
        waited = time.monotonic() - start
        if not got:
            self._latch.release()
            return waited
        self._owner, self._mode = me, mode
        if waited > SLOW_WAIT_SECONDS:
            log.debug("waited %.3f s for the %s lock (%s)", waited, self.name, self.path)
        return None

    def _take_latch(self, deadline: float | None) -> bool:
        if deadline is None:
            return self._latch.acquire()
        remaining = deadline - time.monotonic()
        return remaining > 0 and self._latch.acquire(timeout=remaining)

    def _wait_for_file(self, mode: int, deadline: float | None) -> bool:
        """Phases 1-3 of the module docstring; the latch is held."""
        fd, try_lock = self._fd, self._try
        if try_lock(fd, mode):
            return True
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        # 2. spin
        if self.spin > 0:
            spin_end = now + self.spin
            if deadline is not None:
                spin_end = min(spin_end, deadline)
            while time.monotonic() < spin_end:
                _yield()
                if try_lock(fd, mode):
                    return True
        # 3. block: in the kernel, directly when there is no deadline ...
        if deadline is None:
            self._backend.lock(fd, mode)
            return True
        # ... or in the helper thread, which can be abandoned at the deadline.
        return self._wait_in_helper(mode, deadline)

    def _wait_in_helper(self, mode: int, deadline: float) -> bool:
        if self._helper is None:
            self._helper = _Helper(self.name, self._backend)
            weakref.finalize(self, self._helper.stop)
        job = _Wait(self._fd, mode)
        try:
            self._helper.submit(job)
            settled = job.settled.acquire(timeout=max(deadline - time.monotonic(), 0.0))
        except BaseException:  # KeyboardInterrupt in the main thread: hold nothing
            self._settle_late(job)
            if job.outcome is _GRANTED:
                self._backend.unlock(self._fd)
            raise
        if not settled:
            self._settle_late(job)
        if job.outcome is _FAILED:
            assert job.error is not None
            raise job.error
        return job.outcome is _GRANTED

    def _settle_late(self, job: _Wait) -> None:
        """Timeout (or an exception) while the helper waits: W1."""
        with _fd_mutex:
            if job.outcome is not _PENDING:
                return  # granted (or failed) just now: the caller takes the outcome
            job.outcome = _CANCELLED
            _abandoned.add(job.fd)  # the helper owns it from here (W1, W3)
            self._helper = None  # it ends after its flock returns (W2)
            self._fd = os.open(self.path, _O_FLAGS, 0o644)

    def _check_order(self, me: int) -> None:
        assert self._order is not None
        rank, peers = self._order
        for other in peers:
            if other._order is not None and other._order[0] > rank and other._owner == me:
                raise RuntimeError(
                    f"lock order: taking the {self.name} lock while holding the "
                    f"{other.name} lock; the order is {' -> '.join(LOCK_ORDER)}"
                )

    # -- fork ------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """Hold nothing in the child, and keep nothing of the parent's alive (L4)."""
        if _module_pid != os.getpid():
            _after_fork_in_child()  # a fork that bypassed the hooks
        self._pid = os.getpid()
        self._latch = threading.Lock()
        self._owner = None
        self._mode = None
        self._helper = None
        if not self._closed:
            # Close without LOCK_UN: the parent's lock belongs to the shared open
            # file description and must stay the parent's.
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = os.open(self.path, _O_FLAGS, 0o644)


# -- the standard locks of a data directory ----------------------------------------


class LockSet:
    """The nine named locks of a data directory, opened once, in the global order.

    `locks.commit`, `locks["commit"]`; acquiring a lock while this thread holds
    a later one of the set raises RuntimeError (L5).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        timeout: float | None = 10.0,
        backend: Backend | None = None,
    ) -> None:
        self.directory = Path(directory)
        self._locks: list[FileLock] = []
        try:
            for rank, name in enumerate(LOCK_ORDER):
                lock = FileLock(
                    self.directory / f"{name}.lock",
                    name,
                    timeout=timeout,
                    backend=backend,
                    spin=SPIN_SECONDS if name in _SPINNING else 0.0,
                )
                lock._order = (rank, self._locks)
                self._locks.append(lock)
        except BaseException:
            self.close()
            raise
        (
            self.recovery,
            self.open,
            self.vacuum,
            self.checkpoint,
            self.sync,
            self.gate0,
            self.gate1,
            self.commit,
            self.sequence,
        ) = self._locks

    def __getitem__(self, name: str) -> FileLock:
        try:
            return self._locks[LOCK_ORDER.index(name)]
        except ValueError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[FileLock]:
        return iter(self._locks)

    def close(self) -> None:
        """Release and close every lock, latest in the order first."""
        for lock in reversed(self._locks):
            lock.close()

    def __enter__(self) -> LockSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
