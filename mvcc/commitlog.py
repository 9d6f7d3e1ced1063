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

Group commit (`wait_durable`)
-----------------------------
    until durable_ts >= mine:
        if the sync lock is free (try):             # lead
            re-read; covered meanwhile?  release, done
            gather: while fewer frames are pending (commit_ts - durable_ts)
                    than the last sync covered (sync_frames), and for at most
                    GATHER_FRACTION of the last sync's duration, sleep POLL
            upto = the WAL end now; wal.sync(upto)
            with the commit lock: publish durable = upto, sync_frames, sync_us
            release
        else:                                       # follow: a leader is
            first time: sleep FOLLOW_FRACTION of    #   gathering or syncing,
                        the last sync's duration    #   and may cover me
            later: sleep POLL
The gather is PostgreSQL's commit_delay, sized by the log itself: the
processes the last sync acknowledged are the likeliest to commit again, so
the next leader waits (a fraction of one fsync at most) for as many frames as
that sync covered.  A lone committer has a group of one and never waits; a
committer that stops committing costs the next leader one bounded wait, after
which the group shrinks.  Without the gather, one commit in flight per
process splits N processes into two halves that take turns: the half waiting
on a sync cannot append to the next one, so a sync covers about N / 2 frames
(measured: 4 processes reached 2.0-2.2x one, against 2.75-3.18x with the
gather; docs/benchmarks.md).

Followers poll rather than block.  Queued on the sync lock, each covered
waiter would be woken only to pass the lock on, one process at a time
(measured 1.69x); blocked on it shared, the woken followers hold up the next
leader's exclusive lock (worse than 1x).  But polling through a whole sync
costs CPU the next group's appends need on a small machine (4 followers
polling every ~80 µs: 2.8 s of CPU in a 2 s run, against 1.8-2.2 s), so a
follower first
sleeps most of one sync: it almost always arrives while the group's leader
is gathering or has just begun, and a sync takes about what the last took.
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
    "FOLLOW_FRACTION",
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

FOLLOW_FRACTION: Final = 0.7

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

    `wal`, `state` and the two locks belong to the caller, who opens and closes
    them.  `timeout` bounds every lock wait and the wait for durability.
    """

    def __init__(
        self,
        wal: WAL,
        state: StateFile,
        commit_lock: FileLock,
        sync_lock: FileLock,
        *,
        timeout: float | None,
    ) -> None:
        self.wal = wal
        self.state = state
        self.commit_lock = commit_lock
        self.sync_lock = sync_lock
        self.timeout = timeout
        self.syncs_led = 0  # syncs this process made for the group
        self.frames_gathered = 0  # frames those syncs covered
        self.gathers = 0  # leads that waited for siblings before their sync

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
        sync_lock = self.sync_lock
        first = True
        while True:
            if sync_lock.try_acquire():
                try:
                    if read().durable_ts < ts:
                        self._lead()
                finally:
                    sync_lock.release()
                # A leader's sync covers its own frame (C3), unless the sync
                # failed, and then _lead raised.
                return
            state = read()
            if state.durable_ts >= ts:
                return
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise LockWaitTimeout(sync_lock.name, seconds=now - started, path=sync_lock.path)
            pause = POLL
            if first:
                first = False
                pause = FOLLOW_FRACTION * state.sync_us / 1e6
            time.sleep(pause if deadline is None else min(pause, deadline - now))

    def _lead(self) -> None:
        """Gather, sync everything appended so far, publish it (C3, C4)."""
        read = self.state.read
        state = read()
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
                )
                self.syncs_led += 1
                self.frames_gathered += synced - now.durable_ts
        finally:
            self.commit_lock.release()
