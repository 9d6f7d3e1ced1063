"""The shared state file: a few coordination numbers every process reads without a lock.

`<dir>/state` is mapped `MAP_SHARED` by every process that has the directory
open.  It holds unsigned 64-bit numbers only (`State`): the last appended
commit ts, the durable ts, the WAL end and the durable WAL position (segment,
offset, cumulative checksum), the last checkpoint (generation, ts, WAL
position), the recovery epoch, and the size and duration of the last
group-commit sync (the next leader's guide to how long to gather).  `locking`
does not know what they mean; the caller does.  The file is not durable and
needs no fsync: recovery rebuilds it (`reset`) from the WAL and the page file,
and bumps `epoch`.

Byte table (little-endian: the native order of every platform we run on, so
`struct` reads each 8-byte word with one load)

    file (FILE_SIZE = 4096)
    OFFSET SIZE DESCRIPTION
         0    8 magic b"MVCCSTAT"
         8    4 format version (2)
        12    4 slot size (192)
        16    4 number of named fields in a slot (17)
        20   44 zero
        64    8 generation G: the current slot is slot G % 2 (GENERATION)
        72   56 zero
       128  192 slot 0
       320  192 slot 1
       512 3584 zero

    slot (SLOT_SIZE = 192)
    OFFSET SIZE DESCRIPTION
         0    4 CRC32 of bytes 8..192 of the slot (SLOT_HEAD)
         4    4 zero
         8    8 seq: the generation this slot was written as (SLOT_BODY from here)
        16  136 the fields of `State`, in order, 8 bytes each
       152   40 reserved for later fields (5 x u64, zero)

Invariants
(S1) Slot G % 2 holds a complete state written as generation G, with a valid
     CRC: a writer fills the *other* slot completely before it publishes G + 1.
     A writer killed mid-write has damaged only the inactive slot, so readers
     never spin on a dead writer (what a single-slot seqlock would do).
(S2) One writer at a time, and it is the caller's duty: every `write` is made
     holding the commit lock (a checkpoint publishes its fields by taking the
     commit lock for the write, which the lock order checkpoint -> commit
     allows); `reset` and `rebuild` are made holding `open` exclusive.
(S3) A read returns a state that some writer published, never a mix: `read`
     accepts a copy of slot G % 2 only if G was the same before and after the
     copy, the slot's seq is G and its CRC holds.  The generation check alone
     suffices on a machine that keeps loads and stores in order (x86); the CRC
     also catches a torn copy on a weakly ordered one and a damaged file.
(S4) The path always names a complete file: the first creator writes the zero
     state to a temporary file, fsyncs it, and `os.link`s it into place (which
     fails if another process got there first, and then its file is used).
     This needs hard links: every local POSIX file system has them, NTFS too.

Reader algorithm (`read`, no syscalls: ~1 µs): read G; copy slot G % 2 (one
slice of the mapping); read G again; if it moved, the writer may have been
overwriting the copied slot (it does so while writing G + 2), so retry.  Check
seq and CRC; unpack.  After MAX_READ_ATTEMPTS attempts, or when a slot with a
stable G fails its checks five times 1 ms apart, `StateError`.

Writer algorithm (`write`): read the current state (G does not move: S2),
apply the changes, pack the body as generation G + 1, write CRC + body into
slot (G + 1) % 2, then store G + 1 with one 8-byte copy into the mapping (an
aligned 8-byte memcpy is a single store on x86-64 and arm64; where it is not,
a torn G fails the seq check and the reader retries).  Never
`struct.pack_into` on the mapping: it zeroes its target before it packs, and
readers racing the writer saw G = 0.

Fork: the mapping is inherited by a forked child and stays shared with every
other process (MAP_SHARED of the same file), so a `StateFile` keeps working
in the child unchanged; it holds no lock and no per-process state, so it is
not registered with `forksafe` (tests/locking/test_statefile.py pins this).

Threads: reads may run in any threads at once; writes follow S2 (and a
process's threads serialise them with the commit lock's latch).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import time
import zlib
from types import TracebackType
from typing import Final, NamedTuple

from .errors import StateError

__all__ = [
    "FIELDS",
    "FILE_SIZE",
    "FORMAT_VERSION",
    "GENERATION",
    "HEADER",
    "MAGIC",
    "MAX_READ_ATTEMPTS",
    "SLOT_BODY",
    "SLOT_HEAD",
    "SLOT_OFFSETS",
    "SLOT_SIZE",
    "State",
    "StateFile",
]


class State(NamedTuple):
    """One published state; every field an unsigned 64-bit integer (zero by default)."""

    commit_ts: int = 0  # last appended commit
    durable_ts: int = 0  # last commit known to be on disk
    wal_segment: int = 0  # WAL end: segment, offset, cumulative checksum there
    wal_offset: int = 0
    wal_checksum: int = 0
    durable_segment: int = 0  # WAL position up to which frames are synced
    durable_offset: int = 0
    durable_checksum: int = 0
    checkpoint_gen: int = 0  # last checkpoint: page-file generation, ts, WAL position
    checkpoint_ts: int = 0
    checkpoint_segment: int = 0
    checkpoint_offset: int = 0
    checkpoint_checksum: int = 0
    epoch: int = 0  # bumped by each recovery
    sync_frames: int = 0  # frames the last group-commit sync made durable
    sync_us: int = 0  # how long that sync took, µs
    sync_gen: int = 0  # group-commit syncs published: the next leader holds gate (sync_gen + 1) % 2


FIELDS: Final = State._fields
MAGIC: Final = b"MVCCSTAT"
FORMAT_VERSION: Final = 2
FILE_SIZE: Final = 4096
RESERVED_FIELDS: Final = 5

HEADER: Final = struct.Struct("<8sIII44x")
assert HEADER.size == 64
GENERATION: Final = struct.Struct("<Q")
GENERATION_OFFSET: Final = 64
SLOT_HEAD: Final = struct.Struct("<I4x")  # CRC32 of the body
assert SLOT_HEAD.size == 8
SLOT_BODY: Final = struct.Struct(f"<Q{len(FIELDS)}Q{RESERVED_FIELDS * 8}x")  # seq, fields
assert SLOT_BODY.size == 184
SLOT_SIZE: Final = SLOT_HEAD.size + SLOT_BODY.size
assert SLOT_SIZE == 192
SLOT_OFFSETS: Final = (128, 128 + SLOT_SIZE)
assert SLOT_OFFSETS[1] + SLOT_SIZE <= FILE_SIZE

MAX_READ_ATTEMPTS: Final = 1_000_000
_O_EXTRA = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_MAX_BAD_STABLE = 5  # a slot that fails its CRC with G stable this often is damage

# The read path, bound once (module globals are cheaper than attribute lookups).
_unpack_generation = GENERATION.unpack_from
_unpack_head = SLOT_HEAD.unpack_from
_unpack_body = SLOT_BODY.unpack_from
_crc32 = zlib.crc32
_new_tuple = tuple.__new__


def _slot_bytes(seq: int, state: State) -> bytes:
    try:
        body = SLOT_BODY.pack(seq, *state)
    except struct.error:
        for name, value in zip(FIELDS, state):
            if not isinstance(value, int) or not 0 <= value < 1 << 64:
                raise ValueError(
                    f"state field {name} = {value!r} is not an unsigned 64-bit integer"
                ) from None
        raise
    return SLOT_HEAD.pack(zlib.crc32(body)) + body


def _fresh_image(state: State, generation: int = 0) -> bytes:
    """A whole valid file whose current slot holds `state`."""
    image = bytearray(FILE_SIZE)
    HEADER.pack_into(image, 0, MAGIC, FORMAT_VERSION, SLOT_SIZE, len(FIELDS))
    GENERATION.pack_into(image, GENERATION_OFFSET, generation)
    off = SLOT_OFFSETS[generation & 1]
    image[off : off + SLOT_SIZE] = _slot_bytes(generation, state)
    return bytes(image)


def _write_temp(path: str, image: bytes) -> str:
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_EXTRA, 0o644)
    try:
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


class StateFile:
    """The mapped state file at `path`, created (zero state) if missing.

    Raises StateError if the file is not a state file of this version or its
    current slot is damaged; `StateFile.rebuild` then replaces it (recovery).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._mm: mmap.mmap | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | _O_EXTRA)
        except FileNotFoundError:
            self._create()
            fd = os.open(self.path, os.O_RDWR | _O_EXTRA)
        try:
            size = os.fstat(fd).st_size
            if size < FILE_SIZE:
                raise StateError(f"{size} bytes, a state file has {FILE_SIZE}", path=self.path)
            # access=ACCESS_WRITE is MAP_SHARED (and its Windows equivalent).
            self._mm = mmap.mmap(fd, FILE_SIZE, access=mmap.ACCESS_WRITE)
        finally:
            os.close(fd)
        try:
            self._check_header()
            self.read()  # the current slot must be valid (S1)
        except BaseException:
            self.close()
            raise

    @classmethod
    def rebuild(cls, path: str | os.PathLike[str], state: State) -> StateFile:
        """Replace whatever is at `path` by a fresh file holding `state`, and open it.

        For recovery of a damaged file or one of another version: the caller
        holds `open` exclusive, so no other process has the old file mapped
        (S2).
        """
        path = os.fspath(path)
        tmp = _write_temp(path, _fresh_image(state))
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return cls(path)

    # -- reading -------------------------------------------------------------------

    def read(self) -> State:
        """The current state, consistent (S3); no lock and no syscall."""
        mm = self._mm
        if mm is None:
            raise StateError("the state file is closed", path=self.path)
        bad = 0
        for _ in range(MAX_READ_ATTEMPTS):
            g = _unpack_generation(mm, GENERATION_OFFSET)[0]
            off = SLOT_OFFSETS[g & 1]
            body = mm[off + 8 : off + SLOT_SIZE]
            crc = _unpack_head(mm, off)[0]
            if _unpack_generation(mm, GENERATION_OFFSET)[0] != g:
                continue  # the writer moved on; the copy may be torn
            values = _unpack_body(body)
            if values[0] == g and _crc32(body) == crc:
                return _new_tuple(State, values[1:])  # State._make, minus a call
            # G stable but the slot bad: damage, or (where an 8-byte copy is not
            # one store) a torn G; look again a little later before calling it
            # damage.  Never reached on the happy path.
            bad += 1
            if bad >= _MAX_BAD_STABLE:
                raise StateError(
                    f"slot {g & 1} of generation {g} fails its checksum", path=self.path
                )
            time.sleep(0.001)
        raise StateError("no consistent read in MAX_READ_ATTEMPTS tries", path=self.path)

    def generation(self) -> int:
        """The number of the last write (G): a cheap "did anything change?"."""
        if self._mm is None:
            raise StateError("the state file is closed", path=self.path)
        return int(GENERATION.unpack_from(self._mm, GENERATION_OFFSET)[0])

    # -- writing (S2: the caller holds the commit lock) --------------------------

    def write(self, state: State | None = None, /, **changes: int) -> State:
        """Publish `state` (default: the current one) with `changes` applied.

        `write(commit_ts=9, wal_offset=4096)` or `write(new_state)`.  Returns
        the state written.  ValueError for a field that is not a u64,
        TypeError for an unknown field name or a `state` that is not a State.
        """
        mm = self._writable()
        if state is not None and not isinstance(state, State):
            raise TypeError(f"write() takes a State, not {type(state).__name__}")
        unknown = changes.keys() - set(FIELDS)
        if unknown:
            raise TypeError(f"unknown state fields: {', '.join(sorted(unknown))}")
        current = self.read() if state is None else state
        new = current._replace(**changes) if changes else current
        g = GENERATION.unpack_from(mm, GENERATION_OFFSET)[0] + 1
        self._publish(mm, g, _slot_bytes(g, new))
        return new

    def reset(self, state: State) -> None:
        """Recovery: rewrite the header and publish `state`, whatever the slots hold.

        The caller holds `open` exclusive (S2).
        """
        mm = self._writable()
        HEADER.pack_into(mm, 0, MAGIC, FORMAT_VERSION, SLOT_SIZE, len(FIELDS))
        g = GENERATION.unpack_from(mm, GENERATION_OFFSET)[0] + 1
        self._publish(mm, g, _slot_bytes(g, State(*state)))

    @staticmethod
    def _publish(mm: mmap.mmap, g: int, slot: bytes) -> None:
        off = SLOT_OFFSETS[g & 1]
        mm[off : off + SLOT_SIZE] = slot  # 1. fill the inactive slot (S1)
        # 2. then flip to it, with one 8-byte copy.  Not `GENERATION.pack_into`:
        # struct zeroes its target before it packs, and readers saw G = 0
        # (test_no_torn_reads_under_a_racing_writer found it).
        mm[GENERATION_OFFSET : GENERATION_OFFSET + 8] = GENERATION.pack(g)

    def _writable(self) -> mmap.mmap:
        if self._mm is None:
            raise StateError("the state file is closed", path=self.path)
        return self._mm

    # -- open / close ------------------------------------------------------------------

    def _create(self) -> None:
        """Atomically create the zero state file unless someone else did (S4)."""
        tmp = _write_temp(self.path, _fresh_image(State()))
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _check_header(self) -> None:
        assert self._mm is not None
        magic, version, slot_size, nfields = HEADER.unpack_from(self._mm, 0)
        if magic != MAGIC:
            raise StateError(f"not a state file (magic {magic!r})", path=self.path)
        if (version, slot_size, nfields) != (FORMAT_VERSION, SLOT_SIZE, len(FIELDS)):
            raise StateError(
                f"state file version {version} (slot {slot_size} B, {nfields} fields); "
                f"this build reads version {FORMAT_VERSION}",
                path=self.path,
            )

    @property
    def closed(self) -> bool:
        return self._mm is None

    def close(self) -> None:
        """Unmap.  Idempotent."""
        mm, self._mm = self._mm, None
        if mm is not None:
            mm.close()

    def __enter__(self) -> StateFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StateFile {self.path} {'closed' if self.closed else 'open'}>"
