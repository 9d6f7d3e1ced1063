"""File locks: exclusion across processes, timeouts, SIGKILL, shared locks, threads, fork.

Real processes (`spawn`) synchronise with pipes and barriers; every wait on
them has a timeout, and the `procs` fixture kills whatever is left when a test
ends.  A few checks fork with `os.fork()` (and one with libc's fork(), which
bypasses Python's fork hooks) because forking is what they test.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from locking import errors, filelock
from locking.errors import LockWaitTimeout
from locking.filelock import LOCK_ORDER, FileLock, LockSet

SPAWN = multiprocessing.get_context("spawn")
TIMEOUT = 30.0
POSIX = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and signals")


def wait_until_no_abandoned_waits() -> None:
    """The helpers of cancelled waits have been granted the lock and closed (W2)."""
    deadline = time.monotonic() + TIMEOUT
    while filelock._abandoned:
        assert time.monotonic() < deadline, "an abandoned wait was never granted"
        time.sleep(0.001)


def recv(conn: Connection, timeout: float = TIMEOUT) -> Any:
    if not conn.poll(timeout):
        pytest.fail(f"no message from the child in {timeout} s")
    return conn.recv()


def join_ok(p: Any) -> None:
    p.join(TIMEOUT)
    assert not p.is_alive(), f"process {p.pid} did not finish in {TIMEOUT} s"
    assert p.exitcode == 0, f"process {p.pid} exited with {p.exitcode}"


# -- workers (module level: spawn imports them by name) -------------------------


def _increment_worker(lock_path: str, counter: str, m: int, backend: str, barrier: Any) -> None:
    lock = FileLock(lock_path, "commit", backend=backend)  # type: ignore[arg-type]
    barrier.wait(TIMEOUT)
    for _ in range(m):
        with lock.hold(TIMEOUT), open(counter, "r+b") as f:
            value = int(f.read() or b"0")
            f.seek(0)
            f.write(b"%d" % (value + 1))
            f.truncate()
    lock.close()


def _hold_worker(lock_path: str, shared: bool, conn: Connection) -> None:
    """Take the lock, say so, then wait to be told to release (or to be killed)."""
    lock = FileLock(lock_path, "commit")
    lock.acquire(TIMEOUT, shared=shared)
    conn.send("held")
    conn.poll(TIMEOUT)
    lock.release()
    conn.send("released")


def _hold_and_fork_worker(lock_path: str, conn: Connection) -> None:
    """Take the lock, fork a child that outlives us, report the child's pid."""
    lock = FileLock(lock_path, "commit")
    lock.acquire(TIMEOUT)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hold the inherited copies of everything, wait
        os.close(w)
        os.read(r, 1)  # returns when the test kills the child (or never)
        os._exit(0)
    os.close(r)
    conn.send(pid)
    conn.poll(TIMEOUT)  # wait to be SIGKILLed


# -- mutual exclusion -------------------------------------------------------------


@pytest.mark.parametrize("backend", ["fcntl", "portalocker"])
def test_four_processes_increment_a_counter_under_the_lock(
    tmp_path: Path, procs: Callable[..., Any], backend: str
) -> None:
    n, m = 4, 300
    counter = tmp_path / "counter"
    counter.write_bytes(b"0")
    barrier = SPAWN.Barrier(n)
    workers = [
        procs(_increment_worker, str(tmp_path / "commit.lock"), str(counter), m, backend, barrier)
        for _ in range(n)
    ]
    for p in workers:
        join_ok(p)
    assert int(counter.read_bytes()) == n * m


def test_timeout_names_the_lock_and_the_seconds(tmp_path: Path) -> None:
    path = tmp_path / "commit.lock"
    holder, waiter = FileLock(path, "commit"), FileLock(path, "commit")
    holder.acquire(1.0)
    for timeout in (0.0, 0.01, 0.2):  # no wait; ends while spinning or in the helper
        start = time.monotonic()
        with pytest.raises(LockWaitTimeout) as info:
            waiter.acquire(timeout)
        elapsed = time.monotonic() - start
        err = info.value
        assert err.name == "commit" and err.path == str(path)
        assert timeout <= err.seconds <= elapsed < timeout + 1.0
        assert "commit lock" in str(err) and str(path) in str(err)
        assert f"{err.seconds:.3f} s" in str(err)
        assert not waiter.held
    # A timed-out wait leaves nothing behind: once the holder releases, each
    # abandoned helper is granted the lock and drops it by closing (W1, W2).
    holder.release()
    wait_until_no_abandoned_waits()
    assert waiter.try_acquire() is True
    assert holder.try_acquire() is False
    waiter.release()
    assert holder.try_acquire() is True
    holder.close()
    waiter.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_many_timeouts_under_contention_leak_nothing(tmp_path: Path) -> None:
    """Waits cancelled at random points of the helper's life (W1-W3) leave no
    lock held and no descriptor open once the lock is free."""
    path = tmp_path / "commit.lock"
    holder, waiter = FileLock(path, "commit"), FileLock(path, "commit")
    before = _open_fds()
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            with holder.hold(5.0):
                t = time.monotonic() + 0.0003
                while time.monotonic() < t:
                    pass
            time.sleep(0)  # let the waiter in now and then

    thread = threading.Thread(target=churn)
    thread.start()
    got = timeouts = 0
    try:
        # At least 1 s, and on until both outcomes happened often enough: on a
        # loaded machine the churning thread may hardly run for a while.
        start = time.monotonic()
        while time.monotonic() < start + 1.0 or (
            min(got, timeouts) < 20 and time.monotonic() < start + 20.0
        ):
            try:
                waiter.acquire(0.0002 + (got + timeouts) % 7 * 0.0001)
            except LockWaitTimeout:
                timeouts += 1
            else:
                got += 1
                waiter.release()
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert got > 0 and timeouts > 0
    wait_until_no_abandoned_waits()
    assert waiter.try_acquire()  # every abandoned helper has let go
    waiter.release()
    assert _open_fds() <= before
    holder.close()
    waiter.close()


@POSIX
def test_an_interrupted_wait_holds_nothing(tmp_path: Path) -> None:
    """KeyboardInterrupt while the helper blocks: the wait is cancelled (W1)."""
    path = tmp_path / "commit.lock"
    holder, waiter = FileLock(path, "commit"), FileLock(path, "commit")
    holder.acquire(1.0)

    def interrupt_when_blocked() -> None:
        deadline = time.monotonic() + TIMEOUT
        while waiter._helper is None or waiter._helper._job is not None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.001)  # until the helper has taken the job: it is in flock
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    thread = threading.Thread(target=interrupt_when_blocked)
    thread.start()
    with pytest.raises(KeyboardInterrupt):
        waiter.acquire(TIMEOUT)
    thread.join(TIMEOUT)
    assert not waiter.held
    holder.release()
    wait_until_no_abandoned_waits()
    assert waiter.try_acquire()
    waiter.release()
    holder.close()
    waiter.close()


@POSIX
def test_sigkill_of_a_holder_lets_the_waiter_in_promptly(
    tmp_path: Path, procs: Callable[..., Any]
) -> None:
    path = tmp_path / "commit.lock"
    parent_end, child_end = SPAWN.Pipe()
    child = procs(_hold_worker, str(path), False, child_end)
    assert recv(parent_end) == "held"
    lock = FileLock(path, "commit")
    waiting, done = threading.Event(), threading.Event()
    acquired_at: list[float] = []

    def wait() -> None:
        waiting.set()
        lock.acquire(TIMEOUT)
        acquired_at.append(time.monotonic())
        done.set()

    thread = threading.Thread(target=wait)
    thread.start()
    assert waiting.wait(TIMEOUT)
    assert not done.wait(0.05), "the waiter got a lock the child holds"
    killed_at = time.monotonic()
    os.kill(child.pid, signal.SIGKILL)
    thread.join(TIMEOUT)
    assert acquired_at, "the waiter never got the lock"
    assert acquired_at[0] - killed_at < 0.5
    child.join(TIMEOUT)
    assert child.exitcode == -signal.SIGKILL
    lock.release()
    lock.close()


# -- shared locks, try_acquire ----------------------------------------------------


def test_shared_locks_coexist_and_exclude_an_exclusive_one(tmp_path: Path) -> None:
    path = tmp_path / "open.lock"
    a, b, c = (FileLock(path, "open") for _ in range(3))
    a.acquire(1.0, shared=True)
    assert b.try_acquire(shared=True)
    assert a.shared and b.shared and a.held
    assert not c.try_acquire()
    with pytest.raises(LockWaitTimeout):
        c.acquire(0.05)
    a.release()
    assert not c.try_acquire()  # b still shares it
    b.release()
    assert c.try_acquire() and c.held and not c.shared
    assert not a.try_acquire(shared=True)
    c.release()
    for lock in (a, b, c):
        lock.close()


def test_shared_lock_held_by_another_process(tmp_path: Path, procs: Callable[..., Any]) -> None:
    path = tmp_path / "open.lock"
    parent_end, child_end = SPAWN.Pipe()
    child = procs(_hold_worker, str(path), True, child_end)
    assert recv(parent_end) == "held"
    lock = FileLock(path, "open")
    assert lock.try_acquire(shared=True)
    lock.release()
    assert not lock.try_acquire()  # "is anyone else here?" -- yes
    parent_end.send("go")
    assert recv(parent_end) == "released"
    join_ok(child)
    assert lock.try_acquire()  # nobody else
    lock.release()
    lock.close()


def test_try_acquire(tmp_path: Path) -> None:
    path = tmp_path / "vacuum.lock"
    a, b = FileLock(path, "vacuum"), FileLock(path, "vacuum")
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    assert b.try_acquire(shared=True) is False
    a.release()
    assert b.try_acquire() is True
    b.release()
    a.close()
    b.close()


# -- threads, re-entrancy, misuse -----------------------------------------------------


def test_reacquiring_from_the_holding_thread_is_an_error(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "commit.lock", "commit")
    lock.acquire(1.0)
    with pytest.raises(RuntimeError, match="already held by this thread"):
        lock.acquire(1.0)
    with pytest.raises(RuntimeError):
        lock.try_acquire(shared=True)
    assert lock.held
    lock.release()
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()
    lock.close()


def test_threads_sharing_one_lock_object_serialise(tmp_path: Path) -> None:
    """flock alone would let both threads in (one open file description): L1."""
    lock = FileLock(tmp_path / "commit.lock", "commit")
    box = {"n": 0, "inside": 0, "overlap": 0}

    def work() -> None:
        for _ in range(500):
            with lock.hold(TIMEOUT):
                box["inside"] += 1
                if box["inside"] > 1:
                    box["overlap"] += 1
                value = box["n"]
                time.sleep(0)  # hand the GIL over inside the critical section
                box["n"] = value + 1
                box["inside"] -= 1

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert box == {"n": 1500, "inside": 0, "overlap": 0}
    lock.close()


def test_another_thread_waits_and_times_out_on_the_latch(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "commit.lock", "commit")
    lock.acquire(1.0)
    result: list[object] = []

    def other() -> None:
        result.append(lock.try_acquire())
        try:
            lock.acquire(0.05)
        except LockWaitTimeout as exc:
            result.append(exc.name)

    t = threading.Thread(target=other)
    t.start()
    t.join(TIMEOUT)
    assert result == [False, "commit"]
    lock.release()
    lock.close()


def test_close_releases_and_is_final(tmp_path: Path) -> None:
    path = tmp_path / "commit.lock"
    a, b = FileLock(path, "commit"), FileLock(path, "commit")
    a.acquire(1.0)
    a.close()
    a.close()
    assert b.try_acquire()
    with pytest.raises(RuntimeError, match="closed"):
        a.acquire(1.0)
    b.release()
    b.close()


def test_context_manager_uses_the_default_timeout(tmp_path: Path) -> None:
    path = tmp_path / "commit.lock"
    a, b = FileLock(path, "commit", timeout=0.05), FileLock(path, "commit", timeout=0.05)
    with a:
        assert a.held
        with pytest.raises(LockWaitTimeout), b:
            pass
    assert not a.held
    a.close()
    b.close()


def test_a_slow_wait_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "commit.lock"
    holder, waiter = FileLock(path, "commit"), FileLock(path, "commit")
    holder.acquire(1.0)
    waiting = threading.Event()

    def wait() -> None:
        waiting.set()
        waiter.acquire(TIMEOUT)

    with caplog.at_level(logging.DEBUG, logger="mvcc.locking"):
        t = threading.Thread(target=wait)
        t.start()
        assert waiting.wait(TIMEOUT)
        time.sleep(filelock.SLOW_WAIT_SECONDS * 1.5)  # make the wait slow, by definition
        holder.release()
        t.join(TIMEOUT)
    assert waiter.held
    assert any("commit lock" in r.getMessage() for r in caplog.records), caplog.records
    waiter.release()
    holder.close()
    waiter.close()


# -- the lock set and the lock order ---------------------------------------------


def test_lock_set_opens_the_named_locks_and_checks_the_order(tmp_path: Path) -> None:
    with LockSet(tmp_path, timeout=1.0) as locks:
        assert [lock.name for lock in locks] == list(LOCK_ORDER)
        assert {Path(lock.path).name for lock in locks} == {f"{n}.lock" for n in LOCK_ORDER}
        assert locks["commit"] is locks.commit
        locks.open.acquire(1.0, shared=True)
        with locks.checkpoint, locks.commit, locks.sequence:
            pass
        with locks.commit, pytest.raises(RuntimeError, match="lock order"):
            locks.checkpoint.acquire(1.0)
        with locks.sequence, pytest.raises(RuntimeError, match="lock order"):
            locks.commit.try_acquire()
        # another thread's locks do not count: the order is per thread
        locks.sequence.acquire(1.0)
        t = threading.Thread(target=lambda: (locks.commit.acquire(1.0), locks.commit.release()))
        t.start()
        t.join(TIMEOUT)
        locks.sequence.release()
        with pytest.raises(KeyError):
            locks["nope"]
    assert locks.open._closed


# -- fork ----------------------------------------------------------------------------


def _in_forked_child(body: Callable[[], bool]) -> bool:
    """Run `body` in a child made by os.fork(); True if it returned True there."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if body() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@POSIX
def test_a_forked_child_does_not_hold_its_parents_lock(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "commit.lock", "commit")
    lock.acquire(1.0)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            first = not lock.held and not lock.try_acquire()  # the parent holds it
            os.write(to_parent_w, b"1" if first else b"0")
            os.read(to_child_r, 1)  # the parent has released
            second = lock.try_acquire()
            lock.release()
            ok = first and second
        finally:
            os._exit(0 if ok else 1)
    os.close(to_child_r)
    os.close(to_parent_w)
    assert os.read(to_parent_r, 1) == b"1", "the child held the lock or got it"
    assert lock.held  # closing the child's copy did not release ours
    lock.release()
    os.write(to_child_w, b"g")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    os.close(to_parent_r)
    os.close(to_child_w)
    lock.close()


@POSIX
def test_a_dead_parents_lock_is_released_while_its_forked_child_lives(
    tmp_path: Path, procs: Callable[..., Any]
) -> None:
    path = tmp_path / "commit.lock"
    parent_end, child_end = SPAWN.Pipe()
    holder = procs(_hold_and_fork_worker, str(path), child_end)
    grandchild = recv(parent_end)
    lock = FileLock(path, "commit")
    try:
        assert not lock.try_acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(TIMEOUT)
        os.kill(grandchild, 0)  # still alive
        lock.acquire(5.0)  # released by the kernel with the parent
        lock.release()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(grandchild, signal.SIGKILL)
        lock.close()


@POSIX
def test_a_child_forked_during_an_abandoned_wait_keeps_nothing_alive(tmp_path: Path) -> None:
    """W3: the child closes its copy of a descriptor a parent helper owns."""
    path = tmp_path / "commit.lock"
    holder, waiter = FileLock(path, "commit"), FileLock(path, "commit")
    holder.acquire(1.0)
    with pytest.raises(LockWaitTimeout):
        waiter.acquire(0.05)  # its helper now blocks in flock on an abandoned fd
    (abandoned,) = filelock._abandoned
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            os.close(w)
            ok = not filelock._abandoned
            if abandoned not in (holder._fd, waiter._fd):  # not reused by their reopen
                with contextlib.suppress(OSError):
                    os.fstat(abandoned)
                    ok = False  # still open in the child
            os.read(r, 1)  # live until the test is done
        finally:
            os._exit(0 if ok else 1)
    os.close(r)
    try:
        holder.release()  # the helper is granted the lock, unlocks and closes ...
        wait_until_no_abandoned_waits()
        assert waiter.try_acquire()  # ... so it is free, whatever the child does
        waiter.release()
    finally:
        os.close(w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    holder.close()
    waiter.close()


def test_an_abandoned_grant_is_unlocked_not_only_closed(tmp_path: Path) -> None:
    """W2: another reference to the abandoned descriptor's open file description
    (what a just-forked child holds until its hook runs) does not keep the lock."""
    path = tmp_path / "commit.lock"
    holder, waiter = FileLock(path, "commit"), FileLock(path, "commit")
    holder.acquire(1.0)
    with pytest.raises(LockWaitTimeout):
        waiter.acquire(0.05)
    (abandoned,) = filelock._abandoned
    other_reference = os.dup(abandoned)
    try:
        holder.release()
        wait_until_no_abandoned_waits()
        assert waiter.try_acquire()
        waiter.release()
    finally:
        os.close(other_reference)
    holder.close()
    waiter.close()


@POSIX
@pytest.mark.skipif(sys.platform != "linux", reason="libc fork through ctypes")
def test_a_fork_that_bypasses_the_hooks_is_caught_at_acquire(tmp_path: Path) -> None:
    """K2: libc's fork() runs none of Python's fork hooks; acquire compares pids."""
    lock = FileLock(tmp_path / "commit.lock", "commit")
    lock.acquire(1.0)
    libc_fork = ctypes.PyDLL(None).fork  # PyDLL: keep the GIL across the call
    libc_fork.restype = ctypes.c_int
    pid = libc_fork()
    if pid == 0:
        ok = False
        try:
            held_before = lock.held  # nothing told the object about the fork ...
            got = lock.try_acquire()  # ... but acquire notices, and finds it taken
            ok = held_before and not got and not lock.held
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert lock.held
    lock.release()
    lock.close()


@POSIX
def test_the_child_can_take_a_lock_the_parent_does_not_hold(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "commit.lock", "commit")

    def child() -> bool:
        with lock.hold(5.0):
            return lock.held

    assert _in_forked_child(child)
    assert lock.try_acquire()
    lock.release()
    lock.close()


# -- errors ------------------------------------------------------------------------------

ERROR_EXAMPLES: dict[type[Exception], Exception] = {
    errors.LockingError: errors.LockingError("something about locks"),
    errors.LockWaitTimeout: errors.LockWaitTimeout(
        "commit", seconds=1.25, path="/data/commit.lock"
    ),
    errors.RegistryFull: errors.RegistryFull(slots=64, path="/data/readers"),
    errors.StateError: errors.StateError("bad magic", path="/data/state"),
}


def test_every_error_class_is_covered() -> None:
    classes = {
        obj
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, Exception)
    }
    assert classes == set(ERROR_EXAMPLES)


@pytest.mark.parametrize("cls", list(ERROR_EXAMPLES), ids=lambda c: c.__name__)
def test_errors_pickle(cls: type[Exception]) -> None:
    err = ERROR_EXAMPLES[cls]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(err, protocol))
        assert type(back) is cls
        assert str(back) == str(err) and back.args == err.args
        assert back.__dict__ == err.__dict__
