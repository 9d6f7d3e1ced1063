"""Reader registry: which snapshots live processes hold, and the horizon below them.

One file (`readers`) per data directory: a header holding the published
horizon, then `nslots` slots of 64 bytes.  A process claims one slot for its
lifetime by taking a POSIX record lock on the slot's first byte, and publishes
in it the oldest (ts, gen) pair any of its transactions holds: `ts` is the
snapshot commit ts (for version pruning), `gen` the page-file generation of
the root it reads (for page reuse).  The layer knows nothing else about them.

Invariants
(R1) A slot is owned by the process holding the record lock on its first byte.
     The kernel drops the lock when the process dies (kill -9 included), so
     liveness is a lock probe, never a PID guess.  Record locks are not
     inherited by fork(), so a child never keeps a dead parent's slot alive.
(R2) One descriptor of the registry file per process (`_shared_file`):
     closing any descriptor of a file drops all of the process's record locks
     on it, so the file is never opened and closed a second time.
(R3) Register-then-confirm.  A reader publishes its pair, then reads the
     published horizon H; if its pair is below H it re-reads and retries.  The
     horizon computation scans the slots, publishes H, then scans again and
     returns the minimum of the second scan.  Whichever of a reader's publish
     and the computer's second scan comes first, the reader is either seen or
     told to retry, so no version or page a reader needs is ever released.
     A publish goes through pwrite (a system call, hence a memory barrier
     between the publish and the read that follows it); reads go through a
     mapping, and so does a release (a slot going idle needs no barrier: a
     horizon computation that misses it only keeps versions a little longer).
(R4) The horizon never moves backwards: H is the componentwise maximum of the
     old H and the new minimum, and slots holding pairs below the old H belong
     to readers that will retry, so they are not counted.
(R5) Exhaustion is RegistryFull, raised at once, never a hang.
(R6) Every Registry object of a process on one file shares the process's one
     slot and one set of pins (two Database objects on one directory in one
     process): the slot publishes the lowest pair any of them holds, and one
     object's unpin never hides another's pin.
(R8) A pin ends in time: a pair still below the horizon after `timeout`
     seconds of retries raises LockWaitTimeout naming the registry.  The
     first retries are immediate (a computation that missed the reader has
     published a horizon the next read meets); later ones pause
     RETRY_PAUSE, for a horizon held above every pair a reader can read
     (a bug or a damaged file, never the protocol) must not spin a CPU.
(R7) A slot names its owner's pid from the claim on (`_claim`; mvcc claims
     at open) until a probe finds the owner gone and writes pid 0, so
     `others()` probes only slots naming a pid: "who else has the directory
     open?", the vacuum process's question before it exits.

Slot (64 bytes): pid u32, flags u32 (1 = holding), ts u64, gen u64, since u64
(wall-clock ns when the oldest held pair was taken), crc32 of bytes 0..32 u32,
28 reserved.  Header (64 bytes): magic, version u16, 2 reserved, nslots u32,
horizon ts u64, horizon gen u64, crc32 of the horizon u32, 28 reserved.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import forksafe
from .errors import LockWaitTimeout, RegistryFull, StateError

__all__ = ["DEFAULT_SLOTS", "Reader", "Registry"]

MAGIC = b"MVCCREG1"
VERSION = 1
DEFAULT_SLOTS = 1024
QUICK_RETRIES = 100  # R8: immediate retries of a pin below the horizon
RETRY_PAUSE = 0.001  # R8: seconds between later ones
HEADER = struct.Struct(">8sH2xIQQI28x")
assert HEADER.size == 64
SLOT = struct.Struct(">IIQQQI28x")
assert SLOT.size == 64
_SLOT_BODY = struct.Struct(">IIQQQ")
assert _SLOT_BODY.size == 32
_CLEAR_SIZE = _SLOT_BODY.size + 4  # body and CRC
_HORIZON_AT = 16  # offset of the horizon fields in the header
_HORIZON = struct.Struct(">QQI")
FLAG_HOLDING = 1
_VACANT = _SLOT_BODY.pack(0, 0, 0, 0, 0) + zlib.crc32(_SLOT_BODY.pack(0, 0, 0, 0, 0)).to_bytes(
    4, "big"
)  # a slot no live process owns: pid 0


@dataclass(frozen=True)
class Reader:
    """One live slot as seen by `Registry.readers()`."""

    slot: int
    pid: int
    ts: int
    gen: int
    since_ns: int


class _SharedFile:
    """The one descriptor and mapping of a registry file in this process (R2)."""

    def __init__(self, path: str, nslots: int) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        self.nslots = self._initialise(nslots)
        self.size = HEADER.size + self.nslots * SLOT.size
        self.map = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.users = 0
        self.own_slot: int | None = None
        self.pid = os.getpid()
        # The process's pins, whichever Registry object took them: they share
        # the one slot, which publishes the lowest of them all (R6).
        self.latch = threading.Lock()
        self.pins: Counter[tuple[int, int]] = Counter()
        self.published: tuple[int, int] | None = None
        self.since = 0
        body = _SLOT_BODY.pack(self.pid, 0, 0, 0, 0)
        self.cleared = body + zlib.crc32(body).to_bytes(4, "big")  # this process's idle slot

    def _initialise(self, nslots: int) -> int:
        # The header's bytes 8..16 double as the creation lock: the first
        # opener writes the file while others wait, then everyone reads it.
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 8, 8)
        try:
            head = os.pread(self.fd, HEADER.size, 0)
            if len(head) < HEADER.size:
                body = HEADER.pack(MAGIC, VERSION, nslots, 0, 0, _horizon_crc(0, 0))
                os.pwrite(self.fd, body + bytes(nslots * SLOT.size), 0)
                os.fsync(self.fd)
                head = body
            magic, version, existing, _ts, _gen, _crc = HEADER.unpack(head)
            if magic != MAGIC or version != VERSION:
                raise StateError("not a reader registry of this version", path=self.path)
            if os.fstat(self.fd).st_size < HEADER.size + existing * SLOT.size:
                raise StateError("reader registry is truncated", path=self.path)
            return int(existing)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 8, 8)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


_files: dict[str, _SharedFile] = {}
_files_latch = threading.Lock()


def _new_files_latch() -> None:
    global _files_latch
    _files_latch = threading.Lock()  # another thread may have held it at the fork


forksafe.on_fork(_new_files_latch)


def _shared_file(path: str, nslots: int) -> _SharedFile:
    key = os.path.realpath(path)
    with _files_latch:
        shared = _files.get(key)
        if shared is not None and shared.pid != os.getpid():
            # Inherited across a fork: the child holds none of its record locks
            # (R1), so drop the parent's descriptor and open one of our own.
            # Closing it releases nothing of the parent's: record locks belong
            # to the process.
            shared.close()
            shared = None
        if shared is None:
            shared = _files[key] = _SharedFile(key, nslots)
        shared.users += 1
        return shared


def _release_file(shared: _SharedFile) -> None:
    with _files_latch:
        shared.users -= 1
        if shared.users == 0 and _files.get(shared.path) is shared:
            del _files[shared.path]
            shared.close()


def _horizon_crc(ts: int, gen: int) -> int:
    return zlib.crc32(struct.pack(">QQ", ts, gen))


def _lowest(
    pins: Counter[tuple[int, int]], extra: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Componentwise minimum of the held pairs (and `extra`)."""
    if not pins and extra is not None:
        return extra
    pairs = list(pins) + ([extra] if extra is not None else [])
    return min(p[0] for p in pairs), min(p[1] for p in pairs)


def _slot_offset(slot: int) -> int:
    return HEADER.size + slot * SLOT.size


class Registry:
    """This process's view of a reader registry.

    Concurrency: a Registry may be shared by threads (a latch guards the
    in-process pins).  Several Registry objects of one process on one file
    share one slot, since liveness and record locks are per process.  Fork: the
    child holds no pins and no slot; it claims a slot of its own at its first
    pin.
    """

    def __init__(self, path: str, *, nslots: int = DEFAULT_SLOTS) -> None:
        self.path = path
        self._nslots_wanted = nslots
        self._open()
        forksafe.register(self)

    def _open(self) -> None:
        self._pid = os.getpid()
        self._file = _shared_file(self.path, self._nslots_wanted)
        self.nslots = self._file.nslots
        self._mine = 0  # pins taken through this object and not yet released

    def _after_fork_in_child(self) -> None:
        self._open()

    def close(self) -> None:
        shared = self._file
        if shared is None:
            return
        with shared.latch:
            self._file = None  # type: ignore[assignment]
        _release_file(shared)

    # -- slots ---------------------------------------------------------------

    @property
    def slot(self) -> int:
        """This process's slot, claimed on first use (R1)."""
        if forksafe.forked(self._pid):  # a fork that bypassed os.register_at_fork
            self._after_fork_in_child()
        shared = self._file
        if shared.own_slot is None:
            shared.own_slot = self._claim(shared)
        return shared.own_slot

    def claim(self) -> int:
        """Claim this process's slot now rather than at its first pin (R7)."""
        return self.slot

    def _claim(self, shared: _SharedFile) -> int:
        for slot in range(shared.nslots):
            try:
                fcntl.lockf(shared.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _slot_offset(slot))
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    continue
                raise
            self._write_slot(shared, slot, 0, 0, 0, 0)
            return slot
        raise RegistryFull(slots=shared.nslots, path=self.path)

    def _write_slot(
        self, shared: _SharedFile, slot: int, flags: int, ts: int, gen: int, since: int
    ) -> None:
        body = _SLOT_BODY.pack(shared.pid, flags, ts, gen, since)
        os.pwrite(shared.fd, body + zlib.crc32(body).to_bytes(4, "big"), _slot_offset(slot))

    def _clear_slot(self, shared: _SharedFile, slot: int) -> None:
        """Release: one store into the mapping, no system call (R3: a release
        needs no barrier; whoever misses it only keeps versions a little longer)."""
        off = _slot_offset(slot)
        shared.map[off : off + _CLEAR_SIZE] = shared.cleared

    def _read_slot(self, slot: int) -> tuple[int, int, int, int, int] | None:
        """(pid, flags, ts, gen, since) of a slot, or None if it stays torn."""
        data = self._file.map
        off = _slot_offset(slot)
        for _ in range(100):
            pid, flags, ts, gen, since, crc = SLOT.unpack_from(data, off)
            if zlib.crc32(data[off : off + _SLOT_BODY.size]) == crc:
                return pid, flags, ts, gen, since
        return None

    def _alive(self, slot: int) -> bool:
        """Probe the slot's lock (R1); a dead owner's slot is cleared on the way."""
        shared = self._file
        if slot == shared.own_slot:
            return True
        try:
            fcntl.lockf(shared.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _slot_offset(slot))
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        try:
            os.pwrite(shared.fd, _VACANT, _slot_offset(slot))
        finally:
            fcntl.lockf(shared.fd, fcntl.LOCK_UN, 1, _slot_offset(slot))
        return False

    def others(self) -> list[int]:
        """The pids of the other live processes that hold a slot (R7): those with
        the directory open.  A lock probe per slot that names a pid; a dead
        owner's slot is made vacant on the way."""
        shared = self._file
        table = shared.map[HEADER.size : HEADER.size + self.nslots * SLOT.size]
        own = shared.own_slot
        return [
            pid
            for slot, (pid, *_rest) in enumerate(SLOT.iter_unpack(table))
            if pid and slot != own and self._alive(slot)
        ]

    # -- horizon -------------------------------------------------------------

    def published_horizon(self) -> tuple[int, int]:
        data = self._file.map
        for _ in range(100):
            ts, gen, crc = _HORIZON.unpack_from(data, _HORIZON_AT)
            if _horizon_crc(ts, gen) == crc:
                return ts, gen
        raise StateError("the published horizon stays unreadable", path=self.path)

    def _publish_horizon(self, ts: int, gen: int) -> None:
        os.pwrite(self._file.fd, _HORIZON.pack(ts, gen, _horizon_crc(ts, gen)), _HORIZON_AT)

    def _holding(self, probe: bool) -> Iterator[tuple[int, int, int, int, int]]:
        """(slot, pid, ts, gen, since) of every holding slot, live ones only when probing.

        One copy of the whole slot table, then a check of each holding slot's
        CRC (re-read on its own if torn by a concurrent publish): idle slots
        cost a struct unpack each.
        """
        table = self._file.map[HEADER.size : HEADER.size + self.nslots * SLOT.size]
        for slot, (pid, flags, ts, gen, since, crc) in enumerate(SLOT.iter_unpack(table)):
            if not flags & FLAG_HOLDING:
                continue
            off = slot * SLOT.size
            if zlib.crc32(table[off : off + _SLOT_BODY.size]) != crc:
                entry = self._read_slot(slot)
                if entry is None:
                    continue
                pid, flags, ts, gen, since = entry
                if not flags & FLAG_HOLDING:
                    continue
            if probe and not self._alive(slot):
                continue
            yield slot, pid, ts, gen, since

    def _scan(self, floor: tuple[int, int], probe: bool) -> tuple[int | None, int | None]:
        """Minimum ts and gen of live holding slots at or above `floor` (R4)."""
        min_ts: int | None = None
        min_gen: int | None = None
        for _slot, _pid, ts, gen, _since in self._holding(probe):
            if ts >= floor[0] and (min_ts is None or ts < min_ts):
                min_ts = ts
            if gen >= floor[1] and (min_gen is None or gen < min_gen):
                min_gen = gen
        return min_ts, min_gen

    def horizon(self, upper: tuple[int, int]) -> tuple[int, int]:
        """The oldest (ts, gen) any live process holds, capped at `upper` (the
        current commit ts and generation): everything older may be released.

        Cost: two passes over the slots and a lock probe per holding slot;
        meant for the checkpoint and vacuum, not for a transaction.
        """
        old = self.published_horizon()
        ts, gen = self._scan(old, probe=True)
        new = (
            max(old[0], min(upper[0], ts if ts is not None else upper[0])),
            max(old[1], min(upper[1], gen if gen is not None else upper[1])),
        )
        self._publish_horizon(*new)
        ts2, gen2 = self._scan(old, probe=False)
        return (
            min(new[0], ts2) if ts2 is not None else new[0],
            min(new[1], gen2) if gen2 is not None else new[1],
        )

    # -- pins ----------------------------------------------------------------

    def pin(
        self, read: Callable[[], tuple[int, int]], timeout: float | None = None
    ) -> tuple[int, int]:
        """Take a snapshot: `read()` returns the current (ts, gen); the pair is
        published and confirmed against the horizon (R3) before it is returned,
        or LockWaitTimeout after `timeout` seconds (R8; None: no limit).
        Every pin is released with `unpin(pair)`."""
        slot = self.slot
        shared = self._file
        with shared.latch:
            pins = shared.pins
            retries = 0
            started = 0.0
            # Confirmed iff pins exist, and read before the loop: a retry's own
            # publish below is not confirmed and must not pass for it.
            held = shared.published if pins else None
            while True:
                pair = read()
                if held is not None and held[0] <= pair[0] and held[1] <= pair[1]:
                    # An older pair of this process is published and confirmed
                    # already and covers this one (read() never goes backwards).
                    break
                self._publish(slot, _lowest(pins, pair))
                horizon = self.published_horizon()
                if pair[0] >= horizon[0] and pair[1] >= horizon[1]:
                    break
                # Below the horizon: a computation missed us; read a newer pair.
                retries += 1
                now = time.monotonic()
                if retries == 1:
                    started = now
                elif timeout is not None and now - started >= timeout:
                    # R8: give up, publishing again only what is still pinned.
                    if pins:
                        self._publish(slot, _lowest(pins))
                    else:
                        self._clear_slot(shared, slot)
                        shared.published = None
                    raise LockWaitTimeout("registry", seconds=now - started, path=self.path)
                if retries >= QUICK_RETRIES:
                    time.sleep(RETRY_PAUSE)
            pins[pair] += 1
            self._mine += 1
            return pair

    def unpin(self, pair: tuple[int, int]) -> None:
        shared = self._file
        with shared.latch:
            pins = shared.pins
            if pins[pair] <= 0 or self._mine <= 0:
                raise ValueError(f"{pair} is not pinned")
            pins[pair] -= 1
            self._mine -= 1
            if not pins[pair]:
                del pins[pair]
            if not pins:
                self._clear_slot(shared, shared.own_slot)  # type: ignore[arg-type]
                shared.published = None
            else:
                lowest = _lowest(pins)
                if lowest != shared.published:
                    self._publish(shared.own_slot, lowest)  # type: ignore[arg-type]

    def _publish(self, slot: int, pair: tuple[int, int]) -> None:
        shared = self._file
        if shared.published is None:
            shared.since = time.time_ns()
        self._write_slot(shared, slot, FLAG_HOLDING, pair[0], pair[1], shared.since)
        shared.published = pair

    @property
    def pins(self) -> int:
        """Pins taken through this object and not yet released."""
        return self._mine

    def readers(self) -> Iterator[Reader]:
        """Live slots holding a snapshot (probing each), for stats."""
        for slot, pid, ts, gen, since in self._holding(probe=True):
            yield Reader(slot=slot, pid=pid, ts=ts, gen=gen, since_ns=since)
