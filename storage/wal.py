"""Shared write-ahead log: commit frames appended by any process of a data directory.

The WAL owns the segment files of one directory (``wal/%016d.wal``) and their
byte format; it decides no policy.  Which position is the end of the log, who may
append, when a sync is due and which segments a checkpoint covers are the
caller's: positions come in from the caller (who keeps them in the shared state
file) and go back out as `LogPosition` values, so a process can append right
after frames that another process wrote.

Format (docs/format.md "Write-ahead log"; `struct` constants in storage/format.py)
    segment  = SEGMENT_HEADER (64 bytes) frame*  [segment-end frame]
    frame    = FRAME_HEADER (32) payload (n) checksum (8)
    checksum = blake2b(previous checksum || header || payload, digest_size=8); the
               first frame of a segment chains from the segment header's checksum.
    Under a key the payload is ``PageCipher.seal(b"W" || salt || ts, plaintext)``.
    A segment that the log left for the next one ends with a segment-end frame
    (flag bit 1) whose payload names the next segment and its salt.

Invariants
(I1) Commit ts are consecutive across the whole log: frame n+1 carries ts(n) + 1,
     across segment boundaries too (a segment's first ts is the previous one's
     last ts + 1).
(I2) The first frame that fails any check (magic, flags, salt, ts, length within
     the file, checksum chain, GCM tag) ends the log; nothing after it is read.
     The reader reports where and why in a `LogEnd`.
(I3) A frame is appended only by the holder of the commit lock, at the end
     position it read from the shared state (the caller's protocol, not checked
     here: an append at a stale position overwrites frames).
(I4) Every segment file gets a fresh random salt when it is created; every frame
     carries it, and under a key the (salt, ts) pair is the associated data of
     the seal.  A frame copied from another segment, a stale segment file from an
     earlier incarnation of the log, or a frame replayed at another ts never
     validates.
(I5) Rotation order: the new segment's header is written and synced (file and
     directory), then the segment-end frame naming it is appended to the old
     segment and the old segment is synced, and only then do frames go into the
     new one.  So a reader never follows a link to a segment without a durable
     header, and a durable frame in segment n+1 implies all of segment n is
     durable: `sync` needs to sync one file only.  (Durability "off" skips the
     syncs: the log may then end earlier after a power cut, never inconsistently.)
(I6) An I/O error in a write or an fsync is fatal to this WAL object: it records
     it, raises, and refuses every later append, sync, rotate, truncate and
     delete until the WAL is reopened.  An fsync is never retried (PostgreSQL's
     fsync lesson: after a failed fsync the kernel may have dropped the dirty
     pages, so a retry that succeeds proves nothing).
(I8) Segments are zero-filled ahead of the frames (`PREALLOCATE` bytes at a
     time), so a sync flushes data, not a file size.  A frame header of all
     zeros is therefore the clean end of the log, like the end of the file: no
     frame ever starts with zero bytes (its magic), and a frame whose header
     never reached the disk was never acknowledged (a sync covering a later
     frame covers it).
(I7) Reading never writes, not even a file: a segment is opened without
     creating it (`open_device`), so a reader that a checkpoint overtook (it
     deleted the segment between the reader's look at the directory and its
     open) finds the segment missing, never an empty file in its place.
     Tailing from the end when nothing is new costs one pread (no stat, no
     directory listing): the reader learns that the log went on into another
     segment from the segment-end frame, not from the directory.

Reader algorithm (`LogReader.__iter__`)
    At a position (segment, offset, chain checksum, next ts): read the 32-byte
    header; none at all is the clean "end of file".  A segment that is gone
    ends the read with ``LogEnd(n, 0, "segment n missing")`` (`LogEnd.missing`):
    a checkpoint covered and deleted it, so the reader is behind the
    checkpoint and resumes from the checkpoint's position (the caller's to
    know).  Check magic, flags, salt
    (== the segment header's), ts (== next ts), that header + payload + checksum
    lie within the file, then the chained checksum, then (under a key) the GCM
    tag.  A commit frame is yielded and the position advances.  A segment-end
    frame is followed: segment n+1 must exist, with a valid header, the salt the
    link names and first ts == next ts; the position moves to its first frame.
    Reading stops before a frame whose ts reaches ``upto.next_ts`` when the caller
    gives an `upto`.

    Readers run without the commit lock, concurrently with appends: a frame being
    written can be seen torn ("checksum mismatch", "torn frame").  That ends this
    read only; reading again from `LogReader.position` later sees it whole.  Only
    the recovery owner, with no writer alive, takes a `LogEnd` as final.  Frames
    past the end the caller published may come from a writer that died before
    publishing them, and will be overwritten by the next append: a caller that
    applies frames passes ``upto=`` the published end.

States of a WAL
    OPEN   --I/O error in append/sync/rotate/truncate/delete_before--> FAILED
    OPEN, FAILED --close()--> CLOSED
    any    --os.fork(), in the child--> FORKED (the child must open its own WAL)
    Reads work in OPEN and FAILED; writes only in OPEN.

Durability
    "full"   `sync` fdatasyncs the segment that holds `upto`; with (I5) that makes
             every frame up to `upto` durable.
    "normal" `sync` does nothing unless ``force=True``; the log is synced at
             rotation (I5) and when the checkpoint calls ``sync(end, force=True)``.
             A power cut may lose the newest acknowledged commits, but the chained
             checksums mean the log is never torn or inconsistent: it ends earlier.
    "off"    no fsync at all, of files or directories, ever (a `FileDevice` still
             syncs the directory when it creates a file: that is the device's rule).
             The same holds as for "normal", with any amount of the newest commits
             lost.
    `sync_delay` is a TEST KNOB: seconds slept inside every fsync this object
    issues, to emulate a slow disk (the group-commit benchmark uses 0.001).

Concurrency and fork
    Threads may share a WAL: readers each use their own `LogReader` and positional
    reads; the segment handle cache is guarded by `_mutex`.  Appends, syncs and the
    recovery helpers must be serialised by the caller (the commit lock across
    processes, a latch within one).  Across processes, fdatasync on any descriptor
    of a file flushes every dirty page of that file, whichever process wrote it:
    that is what lets one sync cover the frames of several processes (group
    commit).  A WAL opened before `os.fork()` is FORKED in the child and refuses
    all work: the child must open its own (the parent's descriptors and its
    failure state are not the child's to use).

Architecture invariant: this module never imports `locking` or `mvcc`; it takes
no lock.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from .crypto import OVERHEAD as SEAL_OVERHEAD
from .crypto import PageCipher
from .device import Device, FileDevice, sync_directory
from .errors import CorruptPage, FormatError, InvalidKeyError, LogFailed, StorageError, TooLarge
from .format import (
    FRAME_CHECKSUM_SIZE,
    FRAME_FLAG_ENCRYPTED,
    FRAME_FLAG_SEGMENT_END,
    FRAME_HEADER,
    FRAME_MAGIC,
    FRAME_OVERHEAD,
    LOG_POSITION,
    MAX_FRAME_PAYLOAD,
    SEGMENT_CHECKED,
    SEGMENT_HEADER,
    SEGMENT_LINK,
    WAL_FLAG_ENCRYPTED,
    WAL_FORMAT_VERSION,
    WAL_MAGIC,
)

__all__ = [
    "AUTH_FAILED",
    "CHECKSUM_MISMATCH",
    "DEFAULT_SEGMENT_SIZE",
    "END_OF_FILE",
    "OTHER_SALT",
    "REACHED_UPTO",
    "TORN_FRAME",
    "WAL",
    "Durability",
    "Frame",
    "LogEnd",
    "LogPosition",
    "LogReader",
    "WalState",
    "segment_name",
]

Durability = Literal["full", "normal", "off"]
DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
_HEADER = SEGMENT_HEADER.size
_FH = FRAME_HEADER.size
PREALLOCATE = 1024 * 1024  # zero-filled ahead of the frames (I8)
_ZERO_HEADER = bytes(FRAME_HEADER.size)
_CHUNK = 64 * 1024  # bytes a scan reads at a time (fewer up to a bound); a tail: one pread
_NAME = re.compile(r"^(\d{16})\.wal$")
_ZERO_KEY_ID = bytes(8)
_blake2b = hashlib.blake2b

# LogEnd reasons a caller may compare against; the others carry numbers or detail.
END_OF_FILE = "end of file"
REACHED_UPTO = "reached upto"
TORN_FRAME = "torn frame"
CHECKSUM_MISMATCH = "checksum mismatch"
OTHER_SALT = "salt of another segment"
AUTH_FAILED = "authentication failed"


def _missing(segment: int) -> str:
    return f"segment {segment} missing"


def segment_name(segment: int) -> str:
    """The file name of a segment.

    >>> segment_name(7)
    '0000000000000007.wal'
    """
    return f"{segment:016d}.wal"


def _checksum(*parts: bytes | memoryview) -> bytes:
    h = hashlib.blake2b(parts[0], digest_size=FRAME_CHECKSUM_SIZE)
    for part in parts[1:]:
        h.update(part)
    return h.digest()


@dataclass(frozen=True, slots=True)
class LogPosition:
    """A place in the log: the chain value and the next ts there.  The position after
    the last valid frame is "the end".  Compare positions by `next_ts` (one ts per
    frame), never by offset: the end of segment n before its segment-end frame and
    the first position of segment n + 1 are the same point of the log."""

    segment: int
    offset: int
    checksum: bytes
    next_ts: int

    def pack(self) -> bytes:
        """The 32-byte encoding (LOG_POSITION) for the shared state file or a checkpoint."""
        return LOG_POSITION.pack(self.segment, self.offset, self.checksum, self.next_ts)

    @classmethod
    def unpack(cls, data: bytes) -> LogPosition:
        segment, offset, checksum, next_ts = LOG_POSITION.unpack(data)
        return cls(segment, offset, checksum, next_ts)


@dataclass(frozen=True, slots=True)
class LogEnd:
    """Where and why a read stopped: `offset` is that of the frame (or segment header,
    offset 0) that failed, or of the end of file."""

    segment: int
    offset: int
    reason: str

    @property
    def clean(self) -> bool:
        """True when the log simply has nothing more (not damage, not a torn frame)."""
        return self.reason in (END_OF_FILE, REACHED_UPTO)

    @property
    def missing(self) -> bool:
        """True when the segment to read is gone: deleted by a checkpoint that
        covers it (I7), so the reader is behind that checkpoint."""
        return self.offset == 0 and self.reason == _missing(self.segment)


@dataclass(frozen=True, slots=True)
class Frame:
    """One commit frame: its ts, plaintext payload, and the positions around it."""

    ts: int
    payload: bytes
    start: LogPosition
    end: LogPosition


@dataclass(frozen=True, slots=True)
class _Segment:
    """An open segment file whose header validated."""

    number: int
    device: Device
    salt: bytes
    first_ts: int
    checksum: bytes
    encrypted: bool


class WalState(enum.Enum):
    OPEN = "open"
    FAILED = "failed"
    CLOSED = "closed"
    FORKED = "forked"


_LIVE: weakref.WeakSet[WAL] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A PID comparison on every call would cost a syscall on the tail path; marking
    # every live WAL once, at the fork, costs nothing until then.
    for wal in list(_LIVE):
        wal._state = WalState.FORKED


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class WAL:
    """The segments of one directory (module docstring: format, invariants, states)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        cipher: PageCipher | None = None,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        durability: Durability = "full",
        sync_delay: float = 0.0,
        device_factory: Callable[[str], Device] = FileDevice,
        open_device: Callable[[str], Device] | None = None,
    ) -> None:
        """`device_factory(path)` creates a segment file; `open_device(path)` opens
        an existing one and raises FileNotFoundError if it is gone (I7).  The
        default `open_device` is `device_factory(path, create=False)` when the
        factory is FileDevice or a subclass of it, else the factory itself (a
        factory of the caller's making that must not create a missing file)."""
        if durability not in ("full", "normal", "off"):
            raise FormatError(f"durability must be 'full', 'normal' or 'off', not {durability!r}")
        if not isinstance(segment_size, int) or segment_size < _HEADER + FRAME_OVERHEAD:
            raise FormatError(f"segment_size must be at least {_HEADER + FRAME_OVERHEAD} bytes")
        if not sync_delay >= 0:
            raise FormatError(f"sync_delay must be >= 0, not {sync_delay!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.cipher = cipher
        self.segment_size = segment_size
        self.durability: Durability = durability
        self.sync_delay = float(sync_delay)
        self._factory = device_factory
        self._open_device = open_device or _opener(device_factory)
        self._mutex = threading.Lock()  # protects _open (the handle cache)
        self._open: dict[int, _Segment] = {}
        self._state = WalState.OPEN
        self._failure = ""
        self._synced: LogPosition | None = None  # the last `upto` this object made durable
        self._allocated: dict[int, int] = {}  # segment -> bytes known zero-filled or used (I8)
        self.syncs = 0  # fsyncs issued (files and directories): for tests and benchmarks
        if not os.path.isdir(self.directory):
            os.makedirs(self.directory, exist_ok=True)
            self._sync_dir(os.path.dirname(self.directory))
        self._check_key()
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"WAL({self.directory!r}, state={self._state.value})"

    @property
    def state(self) -> WalState:
        return self._state

    # -- opening segments ----------------------------------------------------------------

    def _path(self, segment: int) -> str:
        return os.path.join(self.directory, segment_name(segment))

    def segments(self) -> list[int]:
        """The numbers of the segment files in the directory, ascending."""
        found = []
        for name in os.listdir(self.directory):
            m = _NAME.match(name)
            if m:
                found.append(int(m.group(1)))
        return sorted(found)

    def _key_problem(self, encrypted: bool, key_id: bytes) -> str | None:
        if encrypted and self.cipher is None:
            return "the log is encrypted: a key is required"
        if not encrypted and self.cipher is not None:
            return "the log is not encrypted: open it without a key"
        if self.cipher is not None and key_id != self.cipher.key_id:
            return "the key does not belong to this log"
        return None

    def _check_key(self) -> None:
        """(InvalidKeyError at open) Decided by the newest segment's header, when it is
        sound; a damaged header is left for the reader to report."""
        numbers = self.segments()
        if not numbers:
            return
        path = self._path(numbers[-1])
        try:
            with open(path, "rb") as f:
                raw = f.read(_HEADER)
        except FileNotFoundError:
            return
        parsed = _parse_header(raw, numbers[-1])
        if isinstance(parsed, str):
            return
        problem = self._key_problem(*parsed[3:5])
        if problem:
            raise InvalidKeyError(problem, file=path)

    def _segment(self, number: int) -> _Segment | str:
        """The open segment `number`, or why it cannot be read (a LogEnd reason)."""
        seg = self._open.get(number)
        if seg is not None:
            return seg
        path = self._path(number)
        if not os.path.exists(path):
            return _missing(number)
        try:
            device = self._open_device(path)  # never created here (I7)
        except FileNotFoundError:  # deleted since the look above
            return _missing(number)
        parsed = _parse_header(device.read(0, _HEADER), number)
        if isinstance(parsed, str):
            device.close()
            return parsed
        salt, first_ts, checksum, encrypted, key_id = parsed
        problem = self._key_problem(encrypted, key_id)
        if problem:
            device.close()
            return f"segment {number}: {problem}"
        seg = _Segment(number, device, salt, first_ts, checksum, encrypted)
        return self._cache(seg)

    def _cache(self, seg: _Segment) -> _Segment:
        with self._mutex:
            old = self._open.get(seg.number)
            if old is not None and old.device is not seg.device:
                if old.checksum == seg.checksum:
                    seg.device.close()  # another thread opened it first: keep one handle
                    return old
                old.device.close()
            # A new segment file: drop the handles of segments another process deleted
            # (a checkpoint covered them, so no reader needs them; contract of
            # delete_before).  Costs a stat per cached handle, once per segment opened.
            for n in [n for n in self._open if n < seg.number]:
                if not os.path.exists(self._path(n)):
                    self._open.pop(n).device.close()
            self._open[seg.number] = seg
        return seg

    def _forget(self, numbers: Sequence[int]) -> None:
        with self._mutex:
            for n in numbers:
                seg = self._open.pop(n, None)
                if seg is not None:
                    seg.device.close()

    def _writable_segment(self, number: int) -> _Segment:
        seg = self._segment(number)
        if isinstance(seg, str):
            raise CorruptPage(seg, file=self._path(number))
        return seg

    # -- state ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is WalState.OPEN:
            return
        if self._state is WalState.FAILED:
            raise LogFailed(f"the log failed earlier ({self._failure}); reopen the WAL")
        if self._state is WalState.FORKED:
            raise StorageError("this WAL was opened before os.fork(): open a new one in the child")
        raise StorageError("the WAL is closed")

    def _check_readable(self) -> None:
        if self._state in (WalState.CLOSED, WalState.FORKED):
            self._check_open()

    @contextlib.contextmanager
    def _fatal(self, what: str) -> Iterator[None]:
        """(I6) Any error inside enters FAILED: an OSError becomes LogFailed,
        anything else (an interrupt mid-write) is re-raised as it is."""
        try:
            yield
        except OSError as exc:
            self._state = WalState.FAILED
            self._failure = f"{what}: {exc}"
            raise LogFailed(f"the log failed: {what}: {exc}") from exc
        except BaseException as exc:
            self._state = WalState.FAILED
            self._failure = f"{what}: {exc!r}"
            raise

    def _fsync(self, device: Device) -> None:
        if self.sync_delay:
            time.sleep(self.sync_delay)  # TEST KNOB: emulate a slow disk
        self.syncs += 1
        device.sync()

    def _sync_dir(self, path: str) -> None:
        if self.durability == "off" or os.name != "posix":
            return  # Windows cannot fsync a directory; NTFS journals the entry
        if self.sync_delay:
            time.sleep(self.sync_delay)
        self.syncs += 1
        sync_directory(path)

    def _check_invariants(self) -> None:
        """Tests call this: the state and the handle cache agree with the directory."""
        assert (self._state is WalState.FAILED) == bool(self._failure)
        if self._state is WalState.OPEN:
            on_disk = set(self.segments())
            for n, seg in self._open.items():
                assert seg.number == n
                assert n in on_disk, f"segment {n} is cached but not in the directory"
                assert seg.encrypted == (self.cipher is not None)

    # -- reading -------------------------------------------------------------------------

    def start(self, first_ts: int = 1) -> LogPosition:
        """The position of the first frame of the oldest segment.

        An empty directory gets segment 1, whose first frame will carry `first_ts`; so
        does a directory whose only segment is shorter than a header (its creation
        crashed before the header was durable, so no frame can be in it).  This one
        case writes: call it under the lock that guards creation or recovery.
        """
        numbers = self.segments()
        if not numbers or (len(numbers) == 1 and self._file_size(numbers[0]) < _HEADER):
            self._check_open()
            seg = self._create_segment(numbers[0] if numbers else 1, first_ts)
        else:
            seg = self._writable_segment(numbers[0])
        return LogPosition(seg.number, _HEADER, seg.checksum, seg.first_ts)

    def _file_size(self, segment: int) -> int:
        try:
            return os.stat(self._path(segment)).st_size
        except FileNotFoundError:
            return 0

    def read(self, pos: LogPosition, *, upto: LogPosition | None = None) -> LogReader:
        """An iterable of the frames from `pos` on (ts < ``upto.next_ts`` if given).

        Iterating it again continues from where the last iteration stopped, so a
        process tails the log by keeping one reader (or by calling ``read`` again
        from `LogReader.position`).
        """
        self._check_readable()
        return LogReader(self, pos, upto)

    def find_end(self, pos: LogPosition) -> LogPosition:
        """Scan from `pos` to the end of the log (I2); recovery's view of the end."""
        reader = self.read(pos)
        for _frame in reader:
            pass
        return reader.position

    # -- appending -----------------------------------------------------------------------

    def frame_size(self, payload_len: int) -> int:
        """Bytes a frame with a payload of `payload_len` plaintext bytes takes."""
        return FRAME_OVERHEAD + payload_len + (SEAL_OVERHEAD if self.cipher else 0)

    def append(self, pos: LogPosition, payloads: Sequence[bytes]) -> LogPosition:
        """Write one frame per payload, ts pos.next_ts, +1, ..., in one device write at
        `pos`, and return the new end.  Does not sync (see `sync`).

        Rotates to a new segment first when the frames would carry the segment past
        `segment_size` and it already holds a frame; a single group larger than
        `segment_size` still goes into one segment.  The caller holds the commit lock
        and `pos` is the end it read from the shared state (I3).
        """
        self._check_open()
        if not payloads:
            return pos
        size = 0
        for p in payloads:
            if len(p) > MAX_FRAME_PAYLOAD - SEAL_OVERHEAD:
                raise TooLarge("WAL frame payload", size=len(p), limit=MAX_FRAME_PAYLOAD)
            size += self.frame_size(len(p))
        if pos.offset > _HEADER and pos.offset + size > self.segment_size:
            pos = self.rotate(pos)
        seg = self._writable_segment(pos.segment)
        data, end = self._encode(seg, pos, payloads)
        synced = self._synced
        if synced is not None and synced.segment == pos.segment and synced.offset > pos.offset:
            self._synced = None  # bytes this object synced are being rewritten (recovery)
        with self._fatal(f"write at {seg.number}:{pos.offset}"):
            if end.offset > self._allocated.get(seg.number, 0):
                self._preallocate(seg, end.offset)
            seg.device.write(pos.offset, data)
        return end

    def _preallocate(self, seg: _Segment, need: int) -> None:
        """(I8) Zero-fill the segment ahead of the frames, PREALLOCATE at a time (up to
        the segment size), so a sync after an append flushes data only: a file that
        grows makes every fdatasync commit metadata too (measured here: 150-165 us
        against 90-120 us; PostgreSQL's wal_init_zero for the same reason).  Only
        bytes past the file's current end are written, never a frame."""
        size = seg.device.size()
        target = max(need, min(self.segment_size, -(-need // PREALLOCATE) * PREALLOCATE))
        if target > size:
            seg.device.write(size, bytes(target - size))
        self._allocated[seg.number] = max(size, target)

    def _encode(
        self, seg: _Segment, pos: LogPosition, payloads: Sequence[bytes]
    ) -> tuple[bytes, LogPosition]:
        parts: list[bytes] = []
        chain, ts, salt, cipher = pos.checksum, pos.next_ts, seg.salt, self.cipher
        flags = FRAME_FLAG_ENCRYPTED if cipher is not None else 0
        for payload in payloads:
            if cipher is not None:
                payload = cipher.seal(b"W" + salt + ts.to_bytes(8, "big"), payload)  # (I4)
            head = FRAME_HEADER.pack(FRAME_MAGIC, flags, salt, ts, len(payload))
            chain = _blake2b(chain + head + payload, digest_size=FRAME_CHECKSUM_SIZE).digest()
            parts += (head, payload, chain)
            ts += 1
        data = b"".join(parts)
        return data, LogPosition(seg.number, pos.offset + len(data), chain, ts)

    def rotate(self, pos: LogPosition) -> LogPosition:
        """Continue the log in segment pos.segment + 1; return its first position (I5).

        `pos` is the end of the log (I3).  A stale file with the new number (left by a
        rotation that crashed before linking it) is replaced.
        """
        self._check_open()
        old = self._writable_segment(pos.segment)
        # 1. the new segment, header durable (file and directory) before anything links it
        new = self._create_segment(pos.segment + 1, pos.next_ts)
        # 2. the link: a segment-end frame at the end of the old segment, chained as usual
        link = SEGMENT_LINK.pack(new.number, new.salt)
        head = FRAME_HEADER.pack(FRAME_MAGIC, FRAME_FLAG_SEGMENT_END, old.salt, pos.next_ts, 16)
        data = head + link + _checksum(pos.checksum, head, link)
        with self._fatal(f"rotation to segment {new.number}"):
            old.device.write(pos.offset, data)
            # 3. the old segment durable, link included, before a frame goes into the new one
            if self.durability != "off":
                self._fsync(old.device)
        return LogPosition(new.number, _HEADER, new.checksum, pos.next_ts)

    def _create_segment(self, number: int, first_ts: int) -> _Segment:
        path = self._path(number)
        what = f"creating segment {number}"
        with self._fatal(what):
            if os.path.lexists(path):
                self._forget([number])
                os.unlink(path)
            device = self._factory(path)
            salt = os.urandom(8)  # (I4) fresh for every file ever created
            flags = WAL_FLAG_ENCRYPTED if self.cipher else 0
            key_id = self.cipher.key_id if self.cipher else _ZERO_KEY_ID
            head = SEGMENT_HEADER.pack(
                WAL_MAGIC, WAL_FORMAT_VERSION, flags, number, salt, first_ts, key_id, b""
            )[:SEGMENT_CHECKED]
            checksum = _checksum(head)
            device.write(0, head + checksum)
            if self.durability != "off":
                self._fsync(device)
                self._sync_dir(self.directory)
        return self._cache(
            _Segment(number, device, salt, first_ts, checksum, self.cipher is not None)
        )

    # -- durability ----------------------------------------------------------------------

    def sync(self, upto: LogPosition, *, force: bool = False) -> None:
        """Make every frame up to `upto` durable: fdatasync the segment holding it.

        Group commit protocol (the caller's; the shared state holds ``end`` and
        ``durable``)::

            with commit_lock:                       # (I3)
                mine = wal.append(state.end, [payload]); state.end = mine
            if state.durable.next_ts < mine.next_ts:  # else another sync covered us
                upto = state.end                      # read now: covers every frame
                wal.sync(upto)                        #   appended before this sync
                state.durable = max(state.durable, upto) by next_ts

        The whole file is synced, so one fdatasync covers the frames of every
        process written before it; earlier segments are durable by rotation (I5).
        Under "normal" this does nothing unless `force` (the checkpoint forces);
        under "off" nothing ever.  An fsync error is fatal (I6): it is raised as
        StorageError and every later append or sync refuses.  A segment already
        deleted is covered by a checkpoint and needs nothing.
        """
        self._check_open()
        if self.durability == "off" or (self.durability == "normal" and not force):
            return
        synced = self._synced
        if synced is not None and synced.segment == upto.segment and synced.offset >= upto.offset:
            return  # this object already made it durable
        seg = self._segment(upto.segment)
        if isinstance(seg, str):
            if not os.path.exists(self._path(upto.segment)):
                return
            raise CorruptPage(seg, file=self._path(upto.segment))
        with self._fatal(f"fsync of segment {seg.number}"):
            self._fsync(seg.device)
        self._synced = upto

    # -- recovery and checkpoint ---------------------------------------------------------

    def truncate(self, pos: LogPosition) -> None:
        """Cut the log at `pos`: the segment at pos.offset, every later segment deleted;
        the file and the directory synced.  Recovery only, with no writer alive."""
        self._check_open()
        seg = self._writable_segment(pos.segment)
        later = [n for n in self.segments() if n > pos.segment]
        with self._fatal(f"truncating at {pos.segment}:{pos.offset}"):
            seg.device.truncate(pos.offset)
            self._allocated.clear()
            if self.durability != "off":
                self._fsync(seg.device)
            self._forget(later)
            for n in later:
                os.unlink(self._path(n))
            if later:
                self._sync_dir(self.directory)
        self._synced = None

    def delete_before(self, segment: int) -> list[int]:
        """Delete the segments numbered below `segment` (a checkpoint covers them and no
        reader needs them); sync the directory.  Returns the numbers deleted."""
        self._check_open()
        doomed = [n for n in self.segments() if n < segment]
        if not doomed:
            return []
        self._forget(doomed)
        with self._fatal(f"deleting segments below {segment}"):
            for n in doomed:
                os.unlink(self._path(n))
            self._sync_dir(self.directory)
        return doomed

    def close(self) -> None:
        """Close every segment handle; the WAL refuses all work afterwards."""
        # In a forked child this closes the child's copies of the descriptors only.
        self._forget(list(self._open))
        self._state = WalState.CLOSED
        _LIVE.discard(self)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _opener(factory: Callable[[str], Device]) -> Callable[[str], Device]:
    """The default `open_device` for a `device_factory` (I7)."""
    cls = factory if isinstance(factory, type) else None
    if cls is not None and issubclass(cls, FileDevice):
        device_class: type[FileDevice] = cls
        return lambda path: device_class(path, create=False)
    return factory


def _parse_header(raw: bytes, number: int) -> tuple[bytes, int, bytes, bool, bytes] | str:
    """(salt, first ts, checksum, encrypted, key id) of a segment header, or why not."""
    if len(raw) < _HEADER:
        return f"segment {number}: bad segment header (short: {len(raw)} bytes)"
    magic, version, flags, seg_no, salt, first_ts, key_id, checksum = SEGMENT_HEADER.unpack(raw)
    if magic != WAL_MAGIC:
        return f"segment {number}: bad segment header (magic)"
    if _checksum(raw[:SEGMENT_CHECKED]) != checksum:
        return f"segment {number}: bad segment header (checksum mismatch)"
    if version != WAL_FORMAT_VERSION:
        return f"segment {number}: format version {version} is not supported"
    if seg_no != number:
        return f"segment {number}: header says segment {seg_no}"
    return salt, first_ts, checksum, bool(flags & WAL_FLAG_ENCRYPTED), key_id


class LogReader:
    """Frames from a position on; after an iteration ends, `stopped` says where and why
    the log ended (I2), and `position` is the end of the last valid frame (the place
    to resume tailing, or for recovery to truncate)."""

    def __init__(self, wal: WAL, pos: LogPosition, upto: LogPosition | None) -> None:
        self._wal = wal
        self.position = pos
        self.stopped: LogEnd | None = None
        self._stop_ts = upto.next_ts if upto is not None else None
        # Where `upto` ends, so a read in its segment stops there: a caller
        # catching up with a few published frames copies those, not a chunk.
        self._stop_at = (upto.segment, upto.offset) if upto is not None else (-1, 0)

    def __iter__(self) -> Iterator[Frame]:
        self.stopped = None
        wal, pos, stop_ts, cipher = self._wal, self.position, self._stop_ts, self._wal.cipher
        seg = wal._segment(pos.segment)
        if isinstance(seg, str):
            self.stopped = LogEnd(pos.segment, 0, seg)
            return
        if pos.offset <= _HEADER and (pos.offset, pos.checksum, pos.next_ts) != (
            _HEADER,
            seg.checksum,
            seg.first_ts,
        ):
            self.stopped = LogEnd(seg.number, 0, "segment header does not match the position")
            return
        data_flags = FRAME_FLAG_ENCRYPTED if seg.encrypted else 0
        off, chain, ts = pos.offset, pos.checksum, pos.next_ts
        stop_segment, stop_offset = self._stop_at

        def chunk(segment: int, at: int) -> int:
            # At least a frame header: a bound that is not a frame boundary
            # (a published end always is one) costs more reads, never a wrong end.
            if segment == stop_segment:
                return min(_CHUNK, max(stop_offset - at, _FH))
            return _CHUNK

        buf, base = b"", off  # buf holds the file's bytes from offset `base`
        while True:
            # 1. the caller's bound
            if stop_ts is not None and ts >= stop_ts:
                reason = REACHED_UPTO
                break
            # 2. a whole frame header, else the end of the file or a torn frame
            rel = off - base
            if rel + _FH > len(buf):
                buf, base, rel = seg.device.read(off, chunk(seg.number, off)), off, 0
                if len(buf) < _FH:  # zeros: preallocated to the segment's end (I8)
                    reason = END_OF_FILE if not buf.strip(b"\0") else TORN_FRAME
                    break
            magic, flags, salt, fts, length = FRAME_HEADER.unpack_from(buf, rel)
            # 3. the header's fields, cheapest first
            if magic != FRAME_MAGIC:
                # (I8) zeros: the preallocated space after the last frame
                zeros = buf[rel : rel + _FH] == _ZERO_HEADER
                reason = END_OF_FILE if zeros else "bad frame magic"
                break
            if salt != seg.salt:
                reason = OTHER_SALT
                break
            if flags != data_flags and flags != FRAME_FLAG_SEGMENT_END:
                reason = f"bad frame flags {flags:#x}"
                break
            if fts != ts:
                reason = f"ts {fts} expected {ts}"
                break
            # 4. header, payload and checksum within the file
            total = _FH + length + FRAME_CHECKSUM_SIZE
            if rel + total > len(buf):
                if off + total > seg.device.size():
                    reason = TORN_FRAME
                    break
                buf, base, rel = seg.device.read(off, max(chunk(seg.number, off), total)), off, 0
                if len(buf) < total:
                    reason = TORN_FRAME
                    break
            # 5. the chain
            view = memoryview(buf)
            digest = _checksum(chain, view[rel : rel + _FH + length])
            if digest != view[rel + _FH + length : rel + total]:
                reason = CHECKSUM_MISMATCH
                break
            body = view[rel + _FH : rel + _FH + length]
            # 6. a segment-end frame: follow the link (I5)
            if flags == FRAME_FLAG_SEGMENT_END:
                nxt = self._follow(seg, body, ts)
                if isinstance(nxt, LogEnd):
                    self.stopped = nxt
                    return
                seg, off, chain = nxt, _HEADER, nxt.checksum
                buf, base = b"", off
                self.position = pos = LogPosition(seg.number, off, chain, ts)
                continue
            # 7. the seal
            if cipher is not None:
                plain = cipher.open(b"W" + salt + ts.to_bytes(8, "big"), bytes(body))
                if plain is None:
                    reason = AUTH_FAILED
                    break
                payload = plain
            else:
                payload = bytes(body)
            end = LogPosition(seg.number, off + total, digest, ts + 1)
            self.position = end
            yield Frame(ts, payload, pos, end)
            pos, off, chain, ts = end, off + total, digest, ts + 1
        self.stopped = LogEnd(seg.number, off, reason)

    def _follow(self, seg: _Segment, body: memoryview, ts: int) -> _Segment | LogEnd:
        if len(body) != SEGMENT_LINK.size:
            return LogEnd(seg.number, self.position.offset, "bad segment link")
        number, salt = SEGMENT_LINK.unpack(body)
        if number != seg.number + 1:
            return LogEnd(seg.number, self.position.offset, f"link to segment {number}")
        nxt = self._wal._segment(number)
        if isinstance(nxt, str):
            return LogEnd(number, 0, nxt)
        if nxt.salt != salt:
            return LogEnd(number, 0, OTHER_SALT)
        if nxt.first_ts != ts:
            return LogEnd(number, 0, f"ts {nxt.first_ts} expected {ts}")
        return nxt
