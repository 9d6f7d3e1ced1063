"""Reader registry: pins, liveness by lock probe, exhaustion, fork, register-then-confirm."""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import random
import signal
import struct
import time
from multiprocessing.connection import Connection

import pytest

from locking.errors import LockWaitTimeout, RegistryFull
from locking.registry import HEADER, SLOT, Registry

SPAWN = multiprocessing.get_context("spawn")
TIMEOUT = 60


def _join_all(procs: list) -> None:
    for p in procs:
        p.join(TIMEOUT)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
            pytest.fail(f"process {p.pid} did not finish in {TIMEOUT} s")


def test_pin_publishes_and_horizon_follows(tmp_path) -> None:
    reg = Registry(str(tmp_path / "readers"))
    assert reg.horizon((10, 3)) == (10, 3)  # nobody reads: everything up to now
    a = reg.pin(lambda: (12, 4))
    b = reg.pin(lambda: (15, 5))
    assert [(r.ts, r.gen, r.pid) for r in reg.readers()] == [(12, 4, os.getpid())]
    assert reg.horizon((20, 6)) == (12, 4)
    reg.unpin(a)
    assert [(r.ts, r.gen) for r in reg.readers()] == [(15, 5)]
    assert reg.horizon((20, 6)) == (15, 5)
    reg.unpin(b)
    assert list(reg.readers()) == []
    assert reg.horizon((20, 6)) == (20, 6)
    with pytest.raises(ValueError):
        reg.unpin(b)
    reg.close()


def test_horizon_never_moves_backwards(tmp_path) -> None:
    reg = Registry(str(tmp_path / "readers"))
    assert reg.horizon((50, 9)) == (50, 9)
    assert reg.horizon((40, 7)) == (50, 9)  # a smaller upper bound does not pull it back
    # A pair below the published horizon is never confirmed: pin re-reads.
    reads = iter([(45, 9), (46, 9), (51, 9)])
    assert reg.pin(lambda: next(reads)) == (51, 9)
    reg.close()


def test_a_pin_below_the_horizon_for_good_times_out_and_publishes_nothing(tmp_path) -> None:
    """R8: a horizon above every pair the reader can read (a bug, a damaged
    file) ends the pin with LockWaitTimeout naming the registry, not a spin for
    ever; the failed pair is not left published, the pins held are."""
    reg = Registry(str(tmp_path / "readers"))
    assert reg.horizon((50, 9)) == (50, 9)
    started = time.monotonic()
    with pytest.raises(LockWaitTimeout, match="registry") as caught:
        reg.pin(lambda: (40, 9), timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 5 and caught.value.seconds >= 0.2
    assert list(reg.readers()) == [] and reg.pins == 0
    held = reg.pin(lambda: (55, 9))
    with pytest.raises(LockWaitTimeout):
        reg.pin(lambda: (41, 9), timeout=0.05)
    assert [(r.ts, r.gen) for r in reg.readers()] == [(55, 9)] and reg.pins == 1
    reg.unpin(held)
    assert reg.pin(lambda: (60, 9), timeout=0.05) == (60, 9)  # a good pair: at once
    reg.close()


def _hold_pin(path: str, ts: int, conn: Connection) -> None:
    reg = Registry(path)
    reg.pin(lambda: (ts, ts))
    conn.send(os.getpid())
    conn.recv()  # hold until told, or until killed


def test_killed_reader_stops_pinning(tmp_path) -> None:
    path = str(tmp_path / "readers")
    reg = Registry(path)
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=_hold_pin, args=(path, 7, child))
    proc.start()
    try:
        pid = parent.recv()
        assert reg.horizon((100, 100)) == (7, 7)
        assert [r.pid for r in reg.readers()] == [pid]
        os.kill(pid, signal.SIGKILL)
        proc.join(TIMEOUT)
        started = time.monotonic()
        assert reg.horizon((100, 100)) == (100, 100)
        assert time.monotonic() - started < 1.0
        assert list(reg.readers()) == []
    finally:
        proc.kill()
        proc.join()
    reg.close()


def _hold_raw_slots(path: str, first: int, count: int, conn: Connection) -> None:
    """Hold `count` slot locks directly, as `count` live processes would."""
    reg = Registry(path)  # make sure the file exists with its header
    fd = os.open(path, os.O_RDWR)
    for slot in range(first, first + count):
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, HEADER.size + slot * SLOT.size)
    conn.send(reg.nslots)
    conn.recv()


def _try_claim(path: str, conn: Connection) -> None:
    reg = Registry(path)
    try:
        reg.pin(lambda: (1, 1))
    except RegistryFull as exc:
        conn.send(("full", str(exc)))
    else:
        conn.send(("ok", reg.slot))


def test_1024_slots_then_a_clean_error(tmp_path) -> None:
    path = str(tmp_path / "readers")
    parent, child = SPAWN.Pipe()
    holder = SPAWN.Process(target=_hold_raw_slots, args=(path, 1, 1023, child))
    holder.start()
    try:
        assert parent.recv() == 1024
        reg = Registry(path)  # this process takes the last free slot, 0
        assert reg.pin(lambda: (1, 1)) == (1, 1)
        assert reg.slot == 0
        p2, c2 = SPAWN.Pipe()
        claimer = SPAWN.Process(target=_try_claim, args=(path, c2))
        started = time.monotonic()
        claimer.start()
        verdict, message = p2.recv()
        _join_all([claimer])
        assert verdict == "full" and "1024 reader slots" in message
        assert time.monotonic() - started < 30
        holder.kill()
        holder.join(TIMEOUT)
        claimer = SPAWN.Process(target=_try_claim, args=(path, c2))
        claimer.start()
        assert p2.recv()[0] == "ok"
        _join_all([claimer])
        reg.close()
    finally:
        holder.kill()
        holder.join()


def _fork_then_hold(path: str, conn: Connection) -> None:
    reg = Registry(path)
    reg.pin(lambda: (3, 3))
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the forked child: alive, holding nothing of the parent's
        os.close(w)
        os.read(r, 1)  # until the test ends and closes the pipe
        os._exit(0)
    conn.send((os.getpid(), child))
    conn.recv()


def test_forked_child_does_not_keep_a_dead_parents_slot(tmp_path) -> None:
    path = str(tmp_path / "readers")
    reg = Registry(path)
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=_fork_then_hold, args=(path, child))
    proc.start()
    pid, grandchild = parent.recv()
    try:
        assert reg.horizon((9, 9)) == (3, 3)
        os.kill(pid, signal.SIGKILL)
        proc.join(TIMEOUT)
        os.kill(grandchild, 0)  # still alive
        assert reg.horizon((9, 9)) == (9, 9)
    finally:
        for p in (pid, grandchild):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        proc.join()
    reg.close()


def test_fork_in_this_process_gets_its_own_slot(tmp_path) -> None:
    path = str(tmp_path / "readers")
    reg = Registry(path)
    reg.pin(lambda: (5, 5))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            assert reg.pins == 0  # the parent's pins are not the child's
            reg.pin(lambda: (6, 6))
            code = 0 if reg.slot != 0 else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"\x00"
    os.waitpid(pid, 0)
    assert reg.slot == 0
    reg.close()


# -- register-then-confirm under load ----------------------------------------------

COUNTER = struct.Struct(">Q")


def _read_counter(path: str) -> int:
    with open(path, "rb") as f:
        return COUNTER.unpack(f.read(8))[0]


def _advance(path: str, stop, barrier) -> None:
    n = 1
    fd = os.open(path, os.O_RDWR)
    barrier.wait(TIMEOUT)
    while not stop.is_set():
        n += 1
        os.pwrite(fd, COUNTER.pack(n), 0)


def _vacuum(reg_path: str, counter: str, horizon_file: str, stop, barrier) -> None:
    reg = Registry(reg_path)
    fd = os.open(horizon_file, os.O_RDWR)
    barrier.wait(TIMEOUT)
    while not stop.is_set():
        now = _read_counter(counter)
        h = reg.horizon((now, now))
        os.pwrite(fd, COUNTER.pack(h[0]), 0)


def _reader(
    reg_path: str, counter: str, horizon_file: str, rounds: int, barrier, conn: Connection
) -> None:
    reg = Registry(reg_path)
    barrier.wait(TIMEOUT)  # everyone runs at once: no process finishes before the others start
    rng = random.Random(os.getpid())
    violations = 0

    def read() -> tuple[int, int]:
        ts = _read_counter(counter)
        # Sometimes stall between reading the snapshot and publishing it, so a
        # horizon computation runs in the window the protocol must close.
        if rng.random() < 0.05:
            time.sleep(0.02)
        return ts, ts

    for _ in range(rounds):
        pair = reg.pin(read)
        for _ in range(3):
            if pair[0] < _read_counter(horizon_file):
                violations += 1
        reg.unpin(pair)
    conn.send(violations)


def test_register_then_confirm_never_lets_the_horizon_pass_a_reader(tmp_path) -> None:
    reg_path = str(tmp_path / "readers")
    counter = str(tmp_path / "counter")
    horizon_file = str(tmp_path / "horizon")
    for p in (counter, horizon_file):
        with open(p, "wb") as f:
            f.write(COUNTER.pack(1))
    Registry(reg_path, nslots=64).close()  # fewer slots: more horizon passes per stall
    stop = SPAWN.Event()
    barrier = SPAWN.Barrier(4)
    background = [
        SPAWN.Process(target=_advance, args=(counter, stop, barrier)),
        SPAWN.Process(target=_vacuum, args=(reg_path, counter, horizon_file, stop, barrier)),
    ]
    pipes = [SPAWN.Pipe() for _ in range(2)]
    readers = [
        SPAWN.Process(target=_reader, args=(reg_path, counter, horizon_file, 400, barrier, c))
        for _p, c in pipes
    ]
    for p in background + readers:
        p.start()
    try:
        violations = [p.recv() for p, _c in pipes]
    finally:
        stop.set()
        _join_all(readers + background)
    assert violations == [0, 0]
