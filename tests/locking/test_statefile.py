"""Shared state file: format, creation race, damage, torn reads under a racing writer, fork."""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import random
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from locking.errors import StateError
from locking.statefile import (
    FIELDS,
    FILE_SIZE,
    GENERATION,
    HEADER,
    SLOT_OFFSETS,
    SLOT_SIZE,
    State,
    StateFile,
)

SPAWN = multiprocessing.get_context("spawn")
TIMEOUT = 30.0
POSIX = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and signals")
MASK = (1 << 64) - 1
SPREAD = 0x9E3779B97F4A7C15  # odd: i -> i * SPREAD is a bijection that changes every byte


def recv(conn: Connection, timeout: float = TIMEOUT, proc: Any = None) -> Any:
    """The child's next message; fails at once if `proc` died without sending one."""
    deadline = time.monotonic() + timeout
    while not conn.poll(0.05):
        if proc is not None and not proc.is_alive() and not conn.poll():
            pytest.fail(f"child {proc.pid} died (exit code {proc.exitcode}) without a reply")
        if time.monotonic() > deadline:
            pytest.fail(f"no message from the child in {timeout} s")
    message = conn.recv()
    if isinstance(message, tuple) and message[:1] == ("error",):
        pytest.fail(f"the child failed: {message[1]}")
    return message


def _reporting(conn: Connection, fn: Callable[[], Any]) -> None:
    """Run `fn` in a child; an exception goes back over `conn` (the parent fails with it)."""
    faulthandler.dump_traceback_later(TIMEOUT, exit=True)  # a stuck child says where
    try:
        fn()
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        raise


# -- the consistency rule of the racing tests: every field derived from one counter --


def state_of(i: int) -> State:
    """All fields but epoch = i * SPREAD (every byte changes between writes); epoch = i."""
    h = (i * SPREAD) & MASK
    return State(*([h] * len(FIELDS)))._replace(epoch=i)


def consistent(s: State) -> bool:
    return s.count(s[0]) == len(FIELDS) - 1 and s[0] == (s.epoch * SPREAD) & MASK


# -- workers ----------------------------------------------------------------------------


def _writer(path: str, conn: Connection, start: int) -> None:
    _reporting(conn, lambda: _write_until_told(path, conn, start))


def _write_until_told(path: str, conn: Connection, start: int) -> None:
    sf = StateFile(path)
    i = start
    sf.write(state_of(i))
    conn.send("writing")
    while not conn.poll():
        i += 1
        sf.write(state_of(i))
    conn.send(i)


def _reader(path: str, reads: int, barrier: Any, conn: Connection) -> None:
    _reporting(conn, lambda: _read_and_check(path, reads, barrier, conn))


def _read_and_check(path: str, reads: int, barrier: Any, conn: Connection) -> None:
    sf = StateFile(path)
    read = sf.read
    barrier.wait(TIMEOUT)
    bad = backwards = changes = 0
    last = read().epoch
    started = time.perf_counter()
    for _ in range(reads):
        s = read()
        if not (s.count(s[0]) == len(FIELDS) - 1 and s[0] == (s.epoch * SPREAD) & MASK):
            bad += 1
        e = s.epoch
        if e != last:
            changes += 1
            if e < last:
                backwards += 1
            last = e
    conn.send((bad, backwards, changes, time.perf_counter() - started))


def _open_and_read(path: str, barrier: Any, conn: Connection) -> None:
    barrier.wait(TIMEOUT)
    with StateFile(path) as sf:
        conn.send(tuple(sf.read()))


# -- format and API ------------------------------------------------------------------------


def test_a_new_file_holds_the_zero_state(tmp_path: Path) -> None:
    path = tmp_path / "state"
    with StateFile(path) as sf:
        assert sf.read() == State() and all(v == 0 for v in sf.read())
        assert sf.generation() == 0
    assert path.stat().st_size == FILE_SIZE
    assert [p.name for p in tmp_path.iterdir()] == ["state"]  # no temporary left


def test_write_changes_and_whole_states(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state")
    other = StateFile(tmp_path / "state")  # a second mapping sees every write at once
    new = sf.write(commit_ts=7, wal_offset=4096)
    assert new == State(commit_ts=7, wal_offset=4096) == sf.read() == other.read()
    assert sf.write(durable_ts=7).commit_ts == 7  # changes apply to the current state
    assert other.generation() == 2
    full = State(*range(1, len(FIELDS) + 1))
    sf.write(full)
    assert other.read() == full
    assert sf.write(full, epoch=99) == full._replace(epoch=99) == other.read()
    sf.write(epoch=(1 << 64) - 1)
    assert other.read().epoch == (1 << 64) - 1
    sf.close()
    other.close()


def test_bad_writes_change_nothing(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state")
    sf.write(commit_ts=3)
    g = sf.generation()
    with pytest.raises(ValueError, match="commit_ts"):
        sf.write(commit_ts=-1)
    with pytest.raises(ValueError, match="epoch"):
        sf.write(epoch=1 << 64)
    with pytest.raises(ValueError, match="wal_offset"):
        sf.write(wal_offset=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no_such_field"):
        sf.write(no_such_field=1)
    with pytest.raises(TypeError, match="State"):
        sf.write((1, 2, 3))  # type: ignore[arg-type]
    assert sf.generation() == g and sf.read() == State(commit_ts=3)
    sf.close()
    with pytest.raises(StateError, match="closed"):
        sf.read()
    with pytest.raises(StateError, match="closed"):
        sf.write(commit_ts=4)
    sf.close()  # idempotent


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, (1 << 64) - 1), min_size=len(FIELDS), max_size=len(FIELDS)))
def test_any_u64_state_round_trips(
    tmp_path_factory: pytest.TempPathFactory, values: list[int]
) -> None:
    path = tmp_path_factory.getbasetemp() / "roundtrip-state"
    with StateFile(path) as sf:
        state = State(*values)
        sf.write(state)
        assert sf.read() == state
    with StateFile(path) as sf:
        assert sf.read() == state


def test_byte_layout(tmp_path: Path) -> None:
    """The byte table of the module docstring, checked against the file."""
    path = tmp_path / "state"
    with StateFile(path) as sf:
        sf.write(State(*range(100, 100 + len(FIELDS))))
    raw = path.read_bytes()
    assert HEADER.unpack_from(raw, 0) == (b"MVCCSTAT", 2, SLOT_SIZE, len(FIELDS))
    assert GENERATION.unpack_from(raw, 64) == (1,)
    slot = raw[SLOT_OFFSETS[1] : SLOT_OFFSETS[1] + SLOT_SIZE]
    assert int.from_bytes(slot[8:16], "little") == 1  # seq
    assert len(FIELDS) == 17
    assert [int.from_bytes(slot[16 + 8 * k : 24 + 8 * k], "little") for k in range(17)] == list(
        range(100, 117)
    )
    assert slot[152:] == bytes(40)  # reserved


# -- creation, damage, recovery --------------------------------------------------------------


def test_processes_racing_to_create_the_file_all_get_a_valid_one(
    tmp_path: Path, procs: Callable[..., Any]
) -> None:
    path = str(tmp_path / "state")
    n = 4
    barrier = SPAWN.Barrier(n)
    pipes = [SPAWN.Pipe() for _ in range(n)]
    for _, child_end in pipes:
        procs(_open_and_read, path, barrier, child_end)
    assert [recv(parent_end) for parent_end, _ in pipes] == [tuple(State())] * n
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: b"NOTSTATE" + raw[8:], "not a state file"),
        (lambda raw: raw[:8] + (3).to_bytes(4, "little") + raw[12:], "version 3"),
        (lambda raw: raw[:100], "100 bytes"),
        (lambda raw: raw[:140] + bytes([raw[140] ^ 1]) + raw[141:], "checksum"),
        (lambda raw: raw[:64] + (1).to_bytes(8, "little") + raw[72:], "checksum"),
    ],
    ids=["magic", "version", "short", "flipped-bit", "generation-points-at-empty-slot"],
)
def test_a_bad_file_is_a_state_error(
    tmp_path: Path, damage: Callable[[bytes], bytes], message: str
) -> None:
    path = tmp_path / "state"
    StateFile(path).close()
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(StateError, match=message) as info:
        StateFile(path)
    assert info.value.path == str(path)
    # recovery (holding `open` exclusive) replaces it
    with StateFile.rebuild(path, State(epoch=5)) as sf:
        assert sf.read() == State(epoch=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_reset_repairs_damaged_slots_of_an_open_file(tmp_path: Path) -> None:
    path = tmp_path / "state"
    sf = StateFile(path)
    sf.write(commit_ts=1)
    with open(path, "r+b") as f:  # damage both slots under the open mapping
        for off in SLOT_OFFSETS:
            f.seek(off + 20)
            f.write(b"\xff" * 8)
    with pytest.raises(StateError, match="checksum"):
        sf.read()
    with pytest.raises(StateError):
        sf.write(commit_ts=2)  # a write of changes needs a readable current state
    sf.reset(State(commit_ts=1, epoch=1))
    assert sf.read() == State(commit_ts=1, epoch=1)
    assert sf.write(commit_ts=2) == State(commit_ts=2, epoch=1)
    sf.close()


def test_a_writer_dead_mid_write_leaves_the_current_state(tmp_path: Path) -> None:
    """S1, deterministically: garbage in the inactive slot, as a killed writer leaves it."""
    path = tmp_path / "state"
    sf = StateFile(path)
    sf.write(state_of(41))
    g = sf.generation()
    inactive = SLOT_OFFSETS[(g + 1) & 1]
    with open(path, "r+b") as f:
        f.seek(inactive)
        f.write(os.urandom(SLOT_SIZE // 2))  # half a slot, then the writer died
    with StateFile(path) as fresh:
        assert fresh.read() == state_of(41)
    assert sf.write(state_of(42)) == sf.read() == state_of(42)
    sf.close()


# -- racing writer and readers ----------------------------------------------------------------


def test_no_torn_reads_under_a_racing_writer(tmp_path: Path, procs: Callable[..., Any]) -> None:
    path = str(tmp_path / "state")
    StateFile(path).close()
    readers, reads_each = 3, 350_000
    barrier = SPAWN.Barrier(readers + 1)
    w_parent, w_child = SPAWN.Pipe()
    writer = procs(_writer, path, w_child, 0)
    assert recv(w_parent, proc=writer) == "writing"
    pipes = [SPAWN.Pipe() for _ in range(readers)]
    children = [procs(_reader, path, reads_each, barrier, child_end) for _, child_end in pipes]
    barrier.wait(TIMEOUT)
    results = [recv(end, proc=p) for (end, _), p in zip(pipes, children)]
    w_parent.send("stop")
    writes = recv(w_parent, proc=writer)
    bad = sum(r[0] for r in results)
    backwards = sum(r[1] for r in results)
    changes = sum(r[2] for r in results)
    rate = readers * reads_each / max(r[3] for r in results)
    print(
        f"\n{readers * reads_each:,} reads by {readers} processes at {rate:,.0f} reads/s "
        f"against {writes:,} writes; {changes:,} changes seen; {bad} torn, {backwards} backwards"
    )
    assert bad == 0 and backwards == 0
    assert changes > 1000, "the writer hardly overlapped the readers"
    with StateFile(path) as sf:
        assert sf.read() == state_of(writes)


@POSIX
def test_a_writer_killed_mid_stream_leaves_a_readable_state(
    tmp_path: Path, procs: Callable[..., Any]
) -> None:
    path = str(tmp_path / "state")
    StateFile(path).close()
    rng = random.Random(7)
    start = 0
    for _ in range(8):
        parent_end, child_end = SPAWN.Pipe()
        writer = procs(_writer, path, child_end, start)
        assert recv(parent_end, proc=writer) == "writing"
        time.sleep(rng.uniform(0, 0.02))  # a random point of the stream, not a sync
        os.kill(writer.pid, signal.SIGKILL)
        writer.join(TIMEOUT)
        with StateFile(path) as sf:  # opens, and reads, without StateError
            s = sf.read()
            assert consistent(s) and s.epoch >= start
            start = s.epoch + 1


# -- fork --------------------------------------------------------------------------------------


@POSIX
def test_the_mapping_stays_shared_in_a_forked_child(tmp_path: Path) -> None:
    """Decision (statefile.py, Fork): the inherited mapping is kept, not re-made."""
    sf = StateFile(tmp_path / "state")
    sf.write(commit_ts=1)
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = sf.read().commit_ts == 1
            sf.write(commit_ts=2)  # the parent must see this
            os.write(to_parent_w, b"w")
            os.read(to_child_r, 1)  # the parent wrote 3
            ok = ok and sf.read().commit_ts == 3
        finally:
            os._exit(0 if ok else 1)
    try:
        assert os.read(to_parent_r, 1) == b"w"
        assert sf.read().commit_ts == 2
        sf.write(commit_ts=3)
        os.write(to_child_w, b"g")
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for fd in (to_child_r, to_child_w, to_parent_r, to_parent_w):
        os.close(fd)
    sf.close()
