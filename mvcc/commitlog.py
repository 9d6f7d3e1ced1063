"""The shared WAL as commits use it: append under the commit lock, durable by group commit.

`storage.wal` writes and syncs frames; `locking` has the locks and the shared
state file; neither knows the other.  This module is where they meet: the
state file publishes the WAL end (the position after the last appended frame)
and the durable position (the position up to which a sync covered), and every
process appends and syncs through them.

Invariants
(C1) Frames are appended only under the commit lock, at the WAL end the state
     publishes, and the same state write publishes the new end with
     `commit_ts` = the last appended ts.  So ts are consecutive and the
     published end is always a frame boundary (wal.py I3).
(C2) `durable_ts` never decreases, and a commit is acknowledged only when
     `durable_ts` >= its ts.  Under durability "full" that means an fsync
     covered the frame; under "normal" and "off" `append` publishes
     `durable_ts` = ts in the same write (those modes give up power-cut
     durability, never consistency: wal.py's sync rules still hold).
(C3) One sync at a time, by whoever holds the sync lock: the leader reads the
     WAL end *after* taking the lock and syncs up to it, so one fsync covers
     every frame appended before that read, whichever process appended it.
(C4) The leader publishes the durable position (under the commit lock: the
     state file has one writer at a time, statefile.py S2) only after the sync
     returned.  A failed sync publishes nothing: the log is failed (LogFailed)
     in that process and no one waiting on that sync is acknowledged by it.
(C5) A wait for durability ends in time: covered, or `LockWaitTimeout` naming
     the sync lock after `timeout` seconds.
(C6) `sync_gen` (the number of syncs published) changes only in the
     publication of a sync, by the holder of the sync lock, and the leader of
     sync sync_gen + 1 holds gate (sync_gen + 1) % 2 exclusive from before it
     reads the WAL end to sync until after it has published.  So a follower
     that read sync_gen = g while a leader holds the sync lock, and then gets
     gate (g + 1) % 2 shared, finds either sync g + 1 published or no leader
     past its gate yet: never a missed wake-up that lasts.

Group commit (`wait_durable`)
-----------------------------
    until durable_ts >= mine:
        if the sync lock is free (try):             # lead
            re-read; covered meanwhile?  release, done
            close gate (sync_gen + 1) % 2 (exclusive)
            gather: while fewer frames are pending (commit_ts - durable_ts)
                    than the last sync covered (sync_frames), and for at most
                    GATHER_FRACTION of the last sync's duration, sleep POLL
            upto = the WAL end now; wal.sync(upto)
            with the commit lock: publish durable = upto, sync_frames,
                                  sync_us, sync_gen + 1
            release the sync lock, then open the gate
        else:                                       # follow
            g = sync_gen; wait for gate (g + 1) % 2 shared, release it at once
            sync_gen still g?  the leader had not closed its gate yet: sleep
                               POLL once (rare; C6)
The gather is PostgreSQL's commit_delay, sized by the log itself: the
processes the last sync acknowledged are the likeliest to commit again, so
the next leader waits (a fraction of one fsync at most) for as many frames as
that sync covered.  A lone committer has a group of one and never waits; a
committer that stops committing costs the next leader one bounded wait, after
which the group shrinks.  Without the gather, one commit in flight per
process splits N processes into two halves that take turns: the half waiting
on a sync cannot append to the next one, so a sync covers about N / 2 frames
(measured: 4 processes reached 2.0-2.2x one; docs/benchmarks.md).

The gate is PostgreSQL's and SQLite's "wait for the flush, woken by the
flusher" made of file locks: one `flock` release wakes every follower of a
sync at once, in the kernel, the moment the durable position is published.
The leader opens its gate only after releasing the sync lock, so a woken
follower that the sync did not cover can lead the next one at once.  Two
gates, alternating by sync number: with one, the next leader's exclusive
`flock` would queue behind the woken followers' shared ones.
Rejected, measured (4 processes / 1, 1 ms emulated disk; docs/benchmarks.md):
followers polling the state file with sleeps (a sleep overshoots by ~80 µs
here, and sleeping most of a sync first to spare CPU made a follower late by
a fraction of a sync: 2.3-3.2x, below the 3x floor on a busy machine);
followers queueing on the sync lock (each covered waiter woken only to pass
the lock on, one process at a time: 1.69x); followers blocking on the sync
lock shared (they hold up the next leader's exclusive lock: worse than 1x).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from operator import attrgetter
from typing import Final

from locking.errors import LockWaitTimeout
from locking.filelock import FileLock
from locking.statefile import State, StateFile
from storage.wal import WAL, LogPosition

__all__ = [
    "GATHER_FRACTION",
    "MIN_GATHER",
    "POLL",
    "CommitLog",
    "checkpoint_fields",
    "checkpoint_start",
    "durable_end",
    "durable_fields",
    "end_fields",
    "wal_end",
]

POLL: Final = 20e-6
"""The sleep between two looks at the state while waiting (a sleep this short
returns after ~80-100 µs on the development VM: the kernel's timer slack)."""

GATHER_FRACTION: Final = 0.4
"""A leader gathers for at most this fraction of the last sync's duration."""

MIN_GATHER: Final = 150e-6
"""Below this a gather cannot pay for itself (one POLL overshoots it): skip it."""


_WAL_END = ("commit_ts", "wal_segment", "wal_offset", "wal_checksum")
_DURABLE = ("durable_ts", "durable_segment", "durable_offset", "durable_checksum")
_CHECKPOINT = ("checkpoint_ts", "checkpoint_segment", "checkpoint_offset", "checkpoint_checksum")
_get_wal_end, _get_durable = attrgetter(*_WAL_END), attrgetter(*_DURABLE)
_get_checkpoint = attrgetter(*_CHECKPOINT)


def _position(ts: int, segment: int, offset: int, checksum: int) -> LogPosition:
    """The position after frame `ts`, from the state's u64 fields."""
    return LogPosition(segment, offset, checksum.to_bytes(8, "big"), ts + 1)


def _fields(names: tuple[str, ...], end: LogPosition) -> dict[str, int]:
    values = (end.next_ts - 1, end.segment, end.offset, int.from_bytes(end.checksum, "big"))
    return dict(zip(names, values))


def wal_end(state: State) -> LogPosition:
    """The WAL end the state publishes: the position after frame `commit_ts`."""
    return _position(*_get_wal_end(state))


def durable_end(state: State) -> LogPosition:
    """The position up to which frames are durable: after frame `durable_ts`."""
    return _position(*_get_durable(state))


def checkpoint_start(state: State) -> LogPosition:
    """Where the last checkpoint's page file ends and the WAL to replay begins."""
    return _position(*_get_checkpoint(state))


def end_fields(end: LogPosition) -> dict[str, int]:
    """The state fields that publish `end` as the WAL end (`commit_ts` included)."""
    return _fields(_WAL_END, end)


def durable_fields(end: LogPosition) -> dict[str, int]:
    """The state fields that publish `end` as the durable position."""
    return _fields(_DURABLE, end)


def checkpoint_fields(start: LogPosition) -> dict[str, int]:
    """The state fields that publish `start` as the checkpoint position."""
    return _fields(_CHECKPOINT, start)


class CommitLog:
    """Appends and group-commit syncs on one WAL, for one process.

    `wal`, `state` and the locks belong to the caller, who opens and closes
    them.  `timeout` bounds every lock wait and the wait for durability.
    """

    def __init__(
        self,
        wal: WAL,
        state: StateFile,
        commit_lock: FileLock,
        sync_lock: FileLock,
        gates: tuple[FileLock, FileLock],
        *,
        timeout: float | None,
    ) -> None:
        self.wal = wal
        self.state = state
        self.commit_lock = commit_lock
        self.sync_lock = sync_lock
        self.gates = gates
        self.timeout = timeout
        self.syncs_led = 0  # syncs this process made for the group
        self.frames_gathered = 0  # frames those syncs covered
        self.gathers = 0  # leads that waited for siblings before their sync
        self.open_gates = 0  # follows that found the gate not yet closed (C6)

    def append(self, state: State, payloads: Sequence[bytes]) -> State:
        """Append one frame per payload at the end `state` publishes; publish the
        new end (C1) and, unless durability is "full", the new durable ts (C2).

        The caller holds the commit lock and `state` is what it read under it.
        Returns the state written: its `commit_ts` is the last frame's ts.
        """
        if not self.commit_lock.held:
            raise RuntimeError("append needs the commit lock held (C1)")
        end = self.wal.append(wal_end(state), payloads)
        changes = end_fields(end)
        if self.wal.durability != "full":
            changes.update(durable_fields(end))
        return self.state.write(state, **changes)

    def wait_durable(self, ts: int) -> None:
        """Return once frame `ts` is durable (C2): covered by a sync, or this
        process leads one (the module docstring's algorithm)."""
        read = self.state.read
        if read().durable_ts >= ts:
            return
        started = time.monotonic()
        deadline = None if self.timeout is None else started + self.timeout
        sync_lock, gates = self.sync_lock, self.gates
        while True:
            if sync_lock.try_acquire():
                self._lead(ts)
                # A leader's sync covers its own frame (C3), unless the sync
                # failed, and then _lead raised.
                return
            state = read()
            if state.durable_ts >= ts:
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise LockWaitTimeout(sync_lock.name, seconds=now - started, path=sync_lock.path)
            gate = gates[(state.sync_gen + 1) & 1]
            try:
                gate.acquire(None if deadline is None else deadline - now, shared=True)
            except LockWaitTimeout:
                now = time.monotonic()
                raise LockWaitTimeout(
                    sync_lock.name, seconds=now - started, path=sync_lock.path
                ) from None
            gate.release()
            after = read()
            if after.durable_ts >= ts:
                return
            if after.sync_gen == state.sync_gen:
                self.open_gates += 1
                time.sleep(POLL)  # C6: its leader is about to close the gate

    def _lead(self, ts: int) -> None:
        """Holding the sync lock: unless `ts` is covered meanwhile, close the
        gate, gather, sync everything appended so far, publish it (C3, C4, C6);
        release the sync lock, then the gate."""
        read = self.state.read
        gate = None
        try:
            state = read()
            if state.durable_ts >= ts:
                return
            gate = self.gates[(state.sync_gen + 1) & 1]
            gate.acquire(self.timeout)
            self._gather_and_sync(read())
        finally:
            self.sync_lock.release()  # first: a woken follower not covered may lead
            if gate is not None and gate.held:
                gate.release()

    def _gather_and_sync(self, state: State) -> None:
        read = self.state.read
        target, last_sync = state.sync_frames, state.sync_us / 1e6
        gather = GATHER_FRACTION * last_sync
        if state.commit_ts - state.durable_ts < target and gather >= MIN_GATHER:
            self.gathers += 1
            until = time.monotonic() + gather
            while time.monotonic() < until:
                time.sleep(POLL)
                state = read()
                if state.commit_ts - state.durable_ts >= target:
                    break
        upto = wal_end(state)
        began = time.monotonic()
        self.wal.sync(upto)
        took = time.monotonic() - began
        synced = upto.next_ts - 1
        self.commit_lock.acquire(self.timeout)
        try:
            now = read()
            if now.durable_ts < synced:  # C2: another leader may have gone further
                self.state.write(
                    now,
                    **durable_fields(upto),
                    sync_frames=synced - now.durable_ts,
                    sync_us=int(took * 1e6),
                    sync_gen=now.sync_gen + 1,
                )
                self.syncs_led += 1
                self.frames_gathered += synced - now.durable_ts
        finally:
            self.commit_lock.release()
