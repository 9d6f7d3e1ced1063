"""The page file: sealed pages, two alternating meta pages, named trees, commits.

A `PageFile` owns one `Device`.  Readers take a `Snapshot` (one meta page:
a catalog root, hence every named tree as of one generation) and read through
a bounded cache of decoded nodes.  One `WriteTxn` at a time changes trees
copy-on-write and commits a new generation.  Across processes the caller
serialises writes (mvcc holds the checkpoint lock) and states the horizon.

Invariants
(P1) A page reachable from either meta page on disk is never written.  New
     pages come from the freelist's ready set (unreachable by F2) or from past
     the end of the file.
(P2) Commit order: every new page is written, then the device is synced, then
     the meta page of the new generation goes to slot gen % 2, then the device
     is synced again.  A crash at any point leaves the old meta (and all it
     reaches) intact, or the new one complete.
(P3) Open picks the valid meta page with the highest generation; a torn meta
     fails its checksum or tag and is ignored.
(P4) Every page is sealed: CRC32 over (pgno, content) without a key, AES-GCM
     with (pgno, prefix) as associated data with one.  A branch or meta records
     the generation of each page it points to, and a page whose header says
     otherwise is stale.  Each is a CorruptPage naming the file and the page.
(P5) Decoded nodes are cached by pgno; since a page is immutable while any
     root that reaches it is in use (P1 and the horizon), a cached node whose
     generation matches the reference is never stale.
(P6) A wrong or missing key is an InvalidKeyError at open, decided by the key
     id in the meta prefix, never a CorruptPage.
(P7) The file shrinks.  A commit cuts ready pages off its end (step 2), and
     `WriteTxn.compact` moves live pages off the end when the file is at
     least COMPACT_SHARE free and the ready pages below could take them: the
     trees copy those pages (BTree.relocate) into the lowest free pages, as
     SQLite's incremental vacuum moves pages before truncating (an overflow
     run moves only into consecutive free pages below the limit, and a
     compaction is not due again at a limit until fewer live pages lie past
     it, so what cannot move never makes every pass write).  The pages
     left behind are freed at the compacting generation, so a later commit
     whose horizon has passed it cuts them (readers of older roots keep
     theirs: P1).  `compaction_due` says whether a write would do either.

States of a WriteTxn: OPEN --commit()--> COMMITTED; OPEN --abort()--> ABORTED;
OPEN --I/O error in commit--> FAILED (the PageFile refuses further writes until
reopened, as SQLite's pager enters its ERROR state).
"""

from __future__ import annotations

import enum
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from .btree import BTree, Node
from .crypto import PageCipher
from .device import Device, FileDevice, MemoryDevice
from .errors import CorruptPage, FormatError, InvalidKeyError, StorageError, TooLarge
from .format import (
    CAPACITY_SLACK,
    DEFAULT_PAGE_SIZE,
    FLAG_ENCRYPTED,
    FORMAT_VERSION,
    MAGIC,
    MAX_PAGE_SIZE,
    MAX_USER_META,
    META_BODY,
    META_PREFIX,
    MIN_PAGE_SIZE,
    PAGE_BRANCH,
    PAGE_FREELIST,
    PAGE_HEADER,
    PAGE_LEAF,
    PAGE_META,
    PAGE_OVERFLOW,
    PAGE_TYPES,
    PGNO,
)
from .freelist import Freelist

__all__ = [
    "COMPACT_MIN_PAGES",
    "COMPACT_SHARE",
    "DEFAULT_CACHE_PAGES",
    "Meta",
    "PageFile",
    "Snapshot",
    "WriteTxn",
    "check_page_size",
    "compact_limit",
]

DEFAULT_CACHE_PAGES = 8192
COMPACT_SHARE = 0.25  # P7: compact when at least this share of the file would go
COMPACT_MIN_PAGES = 64  # P7: ... and at least this many pages
_PGNO8 = [i.to_bytes(8, "big") for i in range(4096)]
_ZERO_KEY_ID = bytes(8)


def check_page_size(page_size: int) -> int:
    if (
        not isinstance(page_size, int)
        or page_size < MIN_PAGE_SIZE
        or page_size > MAX_PAGE_SIZE
        or page_size & (page_size - 1)
    ):
        raise FormatError(
            f"page_size must be a power of two from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}, "
            f"got {page_size!r}"
        )
    return page_size


def _pgno8(pgno: int) -> bytes:
    return _PGNO8[pgno] if pgno < 4096 else pgno.to_bytes(8, "big")


@dataclass(frozen=True)
class Meta:
    """One meta page: everything a reader needs to see one generation."""

    gen: int
    catalog: tuple[int, int]
    freelist: tuple[int, int, int, int]  # pgno, gen, npages, nbytes
    npages: int
    user: bytes
    slot: int


class TxnState(enum.Enum):
    OPEN = "open"
    COMMITTED = "committed"
    ABORTED = "aborted"
    FAILED = "failed"


class PageFile:
    """Sealed pages on a device.

    Concurrency: snapshots and reads may be used from many threads; one write
    at a time (`begin` takes an in-process latch).  Across processes the caller
    serialises writes.  Fork: the child must open its own PageFile (the device
    file descriptor is shared with the parent otherwise).
    """

    def __init__(
        self,
        device: Device,
        *,
        cipher: PageCipher | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        sync: bool = True,
        cache_pages: int = DEFAULT_CACHE_PAGES,
        create: bool = True,
    ) -> None:
        self.device = device
        self.name = device.name
        self._cipher = cipher
        self._sync = sync
        self.cache: dict[int, Node] = {}
        self.cache_max = max(16, cache_pages)
        self._write_latch = threading.Lock()
        self._failed: BaseException | None = None
        self._freelist_cache: tuple[int, Freelist] | None = None
        # P7: (limit, live pages past it) when the last compaction began; a
        # compaction is not due again at that limit until fewer live pages
        # lie past it (what cannot move, such as runs that find no
        # consecutive room below, must not make every pass write).
        self._compacted: tuple[int, int] | None = None
        self.pages_written = 0
        if device.size() == 0:
            if not create:
                raise FormatError("no page file here", file=self.name)
            self._init_geometry(check_page_size(page_size))
            self._create()
        else:
            self._init_geometry(self._probe_page_size())
        self.meta = self.read_meta()

    @classmethod
    def open(cls, path: str, **kwargs: Any) -> PageFile:
        dev = FileDevice(path, create=kwargs.get("create", True))
        try:
            return cls(dev, **kwargs)
        except BaseException:
            dev.close()
            raise

    @classmethod
    def memory(cls, **kwargs: Any) -> PageFile:
        return cls(MemoryDevice(), **kwargs)

    def close(self) -> None:
        self.cache.clear()
        self.device.close()

    def clear_cache(self) -> None:
        self.cache.clear()

    # -- geometry and sealing ------------------------------------------------

    def _init_geometry(self, page_size: int) -> None:
        self.page_size = page_size
        self.capacity = page_size - CAPACITY_SLACK
        overhead = 28 if self._cipher else 4
        self._content = page_size - overhead
        self._meta_content = page_size - overhead - META_PREFIX.size
        flags = FLAG_ENCRYPTED if self._cipher else 0
        key_id = self._cipher.key_id if self._cipher else _ZERO_KEY_ID
        self._prefix = META_PREFIX.pack(MAGIC, FORMAT_VERSION, flags, page_size, key_id)

    def _probe_page_size(self) -> int:
        """Read the page size from a meta prefix; slot 0 may be torn, so try slot 1 too."""
        head = self.device.read(0, META_PREFIX.size)
        candidates = []
        if len(head) == META_PREFIX.size and head[:8] == MAGIC:
            candidates.append(META_PREFIX.unpack(head)[3])
        size = MIN_PAGE_SIZE
        while size <= MAX_PAGE_SIZE:
            other = self.device.read(size, META_PREFIX.size)
            ok = len(other) == META_PREFIX.size and other[:8] == MAGIC
            if ok and META_PREFIX.unpack(other)[3] == size:
                candidates.append(size)
            size *= 2
        for ps in candidates:
            try:
                return check_page_size(ps)
            except FormatError:
                continue
        raise CorruptPage(
            "not a page file, or both meta pages are destroyed", pgno=0, file=self.name
        )

    def _seal(self, pgno: int, content: bytes, prefix: bytes = b"") -> bytes:
        if self._cipher is not None:
            return prefix + self._cipher.seal(b"P" + _pgno8(pgno) + prefix, content)
        crc = zlib.crc32(content, zlib.crc32(prefix + _pgno8(pgno)))
        return prefix + crc.to_bytes(4, "big") + content

    def _unseal(self, pgno: int, raw: bytes, prefix_len: int = 0) -> bytes | memoryview:
        if len(raw) != self.page_size:
            raise CorruptPage(
                f"short read: {len(raw)} of {self.page_size} bytes", pgno=pgno, file=self.name
            )
        prefix = raw[:prefix_len]
        if self._cipher is not None:
            plain = self._cipher.open(b"P" + _pgno8(pgno) + prefix, raw[prefix_len:])
            if plain is None:
                raise CorruptPage(
                    "authentication failed (damaged, moved or foreign page)",
                    pgno=pgno,
                    file=self.name,
                )
            return plain
        view = memoryview(raw)
        stored = int.from_bytes(view[prefix_len : prefix_len + 4], "big")
        body = view[prefix_len + 4 :]
        if zlib.crc32(body, zlib.crc32(prefix + _pgno8(pgno))) != stored:
            raise CorruptPage("checksum mismatch", pgno=pgno, file=self.name)
        return body

    def _content_of(self, ptype: int, gen: int, body: bytes, size: int) -> bytes:
        if len(body) + PAGE_HEADER.size > size:
            raise StorageError(
                f"internal: {PAGE_TYPES[ptype]} body of {len(body)} bytes overflows its page"
            )
        head = PAGE_HEADER.pack(ptype, 0, 0, len(body), gen)
        return head + body + bytes(size - PAGE_HEADER.size - len(body))

    def _write_page(self, pgno: int, ptype: int, gen: int, body: bytes) -> None:
        page = self._seal(pgno, self._content_of(ptype, gen, body, self._content))
        self.device.write(pgno * self.page_size, page)
        self.pages_written += 1

    def _read_content(
        self, pgno: int, gen: int, ptypes: tuple[int, ...], raw: bytes | None = None
    ) -> tuple[int, bytes | memoryview]:
        """Unseal page `pgno` (read now, or given as `raw`), check its header
        against what the parent expects (P4); return (type, body)."""
        if raw is None:
            raw = self.device.read(pgno * self.page_size, self.page_size)
        content = self._unseal(pgno, raw)
        ptype, _f, _r, blen, pgen = PAGE_HEADER.unpack_from(content)
        if ptype not in ptypes:
            want = "/".join(PAGE_TYPES[t] for t in ptypes)
            raise CorruptPage(
                f"expected a {want} page, found type {ptype}", pgno=pgno, file=self.name
            )
        if pgen != gen:
            raise CorruptPage(
                f"stale page: written at generation {pgen}, its parent expects {gen}",
                pgno=pgno,
                file=self.name,
            )
        if blen > len(content) - PAGE_HEADER.size:
            raise CorruptPage(f"body length {blen} exceeds the page", pgno=pgno, file=self.name)
        return ptype, content[PAGE_HEADER.size : PAGE_HEADER.size + blen]

    # -- meta pages ----------------------------------------------------------

    def _create(self) -> None:
        empty = Meta(gen=0, catalog=(0, 0), freelist=(0, 0, 0, 0), npages=2, user=b"", slot=0)
        for slot in (0, 1):
            self._write_meta(empty, slot)
        self.device.sync()

    def _write_meta(self, meta: Meta, slot: int) -> None:
        body = (
            META_BODY.pack(*meta.catalog, *meta.freelist, meta.npages, len(meta.user)) + meta.user
        )
        content = self._content_of(PAGE_META, meta.gen, body, self._meta_content)
        self.device.write(slot * self.page_size, self._seal(slot, content, self._prefix))
        self.pages_written += 1

    def _parse_meta(self, slot: int) -> Meta:
        """Decode one meta slot; any damage is a CorruptPage naming the slot.

        The seal is verified before any prefix field is believed, so a flipped
        flag or version byte reads as damage, not as a key or format problem.
        """
        raw = self.device.read(slot * self.page_size, self.page_size)
        if len(raw) < self.page_size or raw[:8] != MAGIC:
            raise CorruptPage("missing or bad magic in meta page", pgno=slot, file=self.name)
        content = self._unseal(slot, raw, META_PREFIX.size)
        _magic, version, _flags, page_size, _key_id = META_PREFIX.unpack_from(raw)
        if version != FORMAT_VERSION:
            raise FormatError(
                f"format version {version} is not supported (this is {FORMAT_VERSION})",
                file=self.name,
            )
        if page_size != self.page_size:
            raise CorruptPage(f"meta page says page size {page_size}", pgno=slot, file=self.name)
        ptype, _f, _r, blen, gen = PAGE_HEADER.unpack_from(content)
        if ptype != PAGE_META or blen < META_BODY.size:
            raise CorruptPage("not a meta page", pgno=slot, file=self.name)
        cat_pgno, cat_gen, fl_pgno, fl_gen, fl_n, fl_len, npages, ulen = META_BODY.unpack_from(
            content, PAGE_HEADER.size
        )
        start = PAGE_HEADER.size + META_BODY.size
        return Meta(
            gen=gen,
            catalog=(cat_pgno, cat_gen),
            freelist=(fl_pgno, fl_gen, fl_n, fl_len),
            npages=npages,
            user=bytes(content[start : start + ulen]),
            slot=slot,
        )

    def _key_problem(self) -> InvalidKeyError | None:
        """Why no meta page unseals, if both prefixes agree it is the key (P6)."""
        verdicts = set()
        for slot in (0, 1):
            head = self.device.read(slot * self.page_size, META_PREFIX.size)
            if len(head) < META_PREFIX.size or head[:8] != MAGIC:
                return None
            _m, _v, flags, _ps, key_id = META_PREFIX.unpack(head)
            if flags & FLAG_ENCRYPTED and self._cipher is None:
                verdicts.add("this database is encrypted: a passphrase or key is required")
            elif not flags & FLAG_ENCRYPTED and self._cipher is not None:
                verdicts.add("this database is not encrypted: open it without a key")
            elif self._cipher is not None and key_id != self._cipher.key_id:
                verdicts.add("the key does not belong to this database")
            else:
                return None
        if len(verdicts) == 1:
            return InvalidKeyError(verdicts.pop(), file=self.name)
        return None

    def read_meta(self) -> Meta:
        """The newest valid meta page (P3); also adopts it as `self.meta`."""
        metas: list[Meta] = []
        errors: list[CorruptPage] = []
        for slot in (0, 1):
            try:
                metas.append(self._parse_meta(slot))
            except CorruptPage as exc:
                errors.append(exc)
        if not metas:
            raise self._key_problem() or errors[0]
        self.meta = max(metas, key=lambda m: m.gen)
        return self.meta

    # -- reading -------------------------------------------------------------

    def node(self, pgno: int, gen: int) -> Node:
        """The decoded node at `pgno`, which its parent says generation `gen` wrote."""
        node = self.cache.get(pgno)
        if node is not None and node.gen == gen:
            return node
        return self._load(pgno, gen)

    def _load(self, pgno: int, gen: int) -> Node:
        ptype, body = self._read_content(pgno, gen, (PAGE_BRANCH, PAGE_LEAF))
        try:
            parts = msgpack.unpackb(body, use_list=True)
            # The seal vouches for the bytes, not for the code that wrote them:
            # check the shape so that a bad node is a CorruptPage here, not a
            # TypeError in a later bisect (errors.py I1).  Cold path only.
            if ptype == PAGE_LEAF:
                keys, vals = parts
                if len(keys) != len(vals):
                    raise ValueError("keys and values differ in number")
                node = Node(keys, vals=vals, pgno=pgno, gen=gen)
            else:
                keys, kids, gens = parts
                if len(kids) != len(keys) + 1 or len(gens) != len(kids):
                    raise ValueError("children and separators differ in number")
                if not all(k.__class__ is int for k in kids + gens):
                    raise ValueError("a child reference is not an integer")
                node = Node(keys, kids=kids, gens=gens, pgno=pgno, gen=gen)
            if not all(k.__class__ is bytes for k in keys):
                raise ValueError("a key is not bytes")
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptPage(f"undecodable node: {exc}", pgno=pgno, file=self.name) from None
        self.cache_put(pgno, node)
        return node

    def cache_put(self, pgno: int, node: Node) -> None:
        cache = self.cache
        if len(cache) >= self.cache_max:
            # Drop the oldest eighth in insertion order: cheaper on the hit path
            # than an LRU's reordering, and re-decoding a hot branch is rare.
            for victim in list(cache)[: self.cache_max // 8]:
                del cache[victim]
        cache[pgno] = node

    def read_run(
        self, pgno: int, gen: int, npages: int, length: int, ptype: int = PAGE_OVERFLOW
    ) -> bytes:
        """The bytes of a run of pages written together (an overflow value, the freelist)."""
        ps = self.page_size
        raw = self.device.read(pgno * ps, npages * ps)
        out = bytearray()
        for i in range(npages):
            _t, body = self._read_content(pgno + i, gen, (ptype,), raw[i * ps : (i + 1) * ps])
            out += body
        if len(out) != length:
            raise CorruptPage(
                f"run holds {len(out)} bytes, its reference says {length}",
                pgno=pgno,
                file=self.name,
            )
        return bytes(out)

    def overflow(self, ref: list[Any]) -> bytes:
        try:
            pgno, gen, npages, length = ref
        except (TypeError, ValueError):
            raise CorruptPage(f"malformed overflow reference {ref!r}", file=self.name) from None
        return self.read_run(pgno, gen, npages, length)

    def run_pages(self, length: int) -> int:
        """Pages needed for a run of `length` bytes."""
        per = self._content - PAGE_HEADER.size
        return max(1, -(-length // per))

    def write_run(self, pgno: int, gen: int, data: bytes, ptype: int = PAGE_OVERFLOW) -> int:
        per = self._content - PAGE_HEADER.size
        n = self.run_pages(len(data))
        ps = self.page_size
        pages = [
            self._seal(
                pgno + i, self._content_of(ptype, gen, data[i * per : (i + 1) * per], self._content)
            )
            for i in range(n)
        ]
        self.device.write(pgno * ps, b"".join(pages))
        self.pages_written += n
        return n

    def freelist(self, meta: Meta) -> Freelist:
        pgno, gen, npages, nbytes = meta.freelist
        if not pgno:
            return Freelist()
        data = self.read_run(pgno, gen, npages, nbytes, PAGE_FREELIST)
        try:
            return Freelist.decode(data)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptPage(f"undecodable freelist: {exc}", pgno=pgno, file=self.name) from None

    def free_pages(self, meta: Meta | None = None) -> int:
        """How many pages the freelist of `meta` (the adopted one by default)
        holds, ready or pending.  No read after this object's own last write,
        whose freelist it keeps."""
        meta = meta or self.meta
        cached = self._freelist_cache
        if cached is not None and cached[0] == meta.gen:
            return len(cached[1])
        return len(self.freelist(meta))

    def compaction_due(self, meta: Meta, horizon: int) -> bool:
        """P7: whether a write beginning now with `horizon` would shrink the
        file: ready pages at its end to cut, or live pages there to move."""
        fl = self._writable_freelist(meta, horizon)
        end = meta.npages
        if self._compact_limit(fl, end) is not None:
            return True
        # Every write frees the previous freelist run, often the last page:
        # a tail shorter than COMPACT_MIN_PAGES is cut by the next write for
        # another reason, not worth one of its own.
        return end - fl.trim_tail(end) >= COMPACT_MIN_PAGES

    def _compact_limit(self, fl: Freelist, npages: int) -> int | None:
        """`compact_limit`, unless the last compaction at that limit left as
        many live pages past it (P7: what cannot move is not walked again)."""
        limit = compact_limit(fl, npages)
        last = self._compacted
        if (
            limit is not None
            and last is not None
            and last[0] == limit
            and compact_live_above(fl, npages, limit) >= last[1]
        ):
            return None
        return limit

    def _writable_freelist(self, meta: Meta, horizon: int) -> Freelist:
        """A copy of `meta`'s freelist with the pages freed at or before
        `horizon` made ready (F2): what a write beginning now allocates from."""
        cached = self._freelist_cache
        if cached is not None and cached[0] == meta.gen:
            freelist = cached[1].copy()
        else:
            freelist = self.freelist(meta)
        freelist.release(min(horizon, meta.gen))
        return freelist

    def snapshot(self, meta: Meta | None = None) -> Snapshot:
        """A read view of one generation (the adopted meta by default)."""
        return Snapshot(self, meta or self.meta)

    # -- writing -------------------------------------------------------------

    def begin(self, horizon: int | None = None) -> WriteTxn:
        """Start the one write of this PageFile.

        `horizon`: no root of a generation older than this is in use anywhere;
        pages freed at or before it may be reused.  None means "only the
        current meta is in use".
        """
        if self._failed is not None:
            raise StorageError(f"the page file failed earlier and must be reopened: {self._failed}")
        if not self._write_latch.acquire(blocking=False):
            raise StorageError("a write is already in progress on this page file")
        try:
            meta = self.read_meta()  # another process may have committed since
            freelist = self._writable_freelist(meta, meta.gen if horizon is None else horizon)
            return WriteTxn(self, meta, freelist)
        except BaseException:
            self._write_latch.release()
            raise


def compact_limit(fl: Freelist, npages: int) -> int | None:
    """P7: the page number from which live pages should move down, or None.

    The limit leaves room above the pages in use for the copies of the paths
    down to the moved pages; moving pays when the file would lose at least
    COMPACT_SHARE of its pages (and COMPACT_MIN_PAGES), and is possible when
    the ready pages below the limit outnumber the live pages above it with a
    margin (pages still pending wait for their readers, F2)."""
    free = len(fl)
    in_use = npages - free
    limit = in_use + in_use // 8 + 8
    if npages - limit < max(COMPACT_MIN_PAGES, int(npages * COMPACT_SHARE)):
        return None
    live_above = compact_live_above(fl, npages, limit)
    if live_above <= 0 or fl.ready.bisect_left(limit) < live_above + live_above // 16 + 8:
        return None
    return limit


def compact_live_above(fl: Freelist, npages: int, limit: int) -> int:
    """How many pages at `limit` or beyond no free list names (P7)."""
    ready_above: int = len(fl.ready) - fl.ready.bisect_left(limit)
    pending_above = sum(1 for pages in fl.pending.values() for p in pages if p >= limit)
    return npages - limit - ready_above - pending_above


class Snapshot:
    """Every named tree as of one meta page."""

    def __init__(self, pf: PageFile, meta: Meta) -> None:
        self.pagefile = pf
        self.meta = meta
        self.gen = meta.gen
        self.user_meta = meta.user
        self.catalog = BTree(pf, meta.catalog)

    def tree(self, name: bytes) -> BTree | None:
        ref = self.catalog.get(name)
        if ref is None:
            return None
        return BTree(self.pagefile, PGNO.unpack(ref))

    def names(self) -> list[bytes]:
        return [k for k, _v in self.catalog.items()]

    def trees(self) -> Iterator[tuple[bytes, tuple[int, int]]]:
        for name, ref in self.catalog.items():
            yield name, PGNO.unpack(ref)


class WriteTxn:
    """One write: trees changed copy-on-write, then one commit of a new generation.

    States: OPEN -> COMMITTED | ABORTED | FAILED (see the module docstring).
    """

    def __init__(self, pf: PageFile, meta: Meta, freelist: Freelist) -> None:
        self.pagefile = pf
        self.page_size = pf.page_size
        self.cache = pf.cache
        self.base = meta
        self.gen = meta.gen + 1
        self.user_meta = meta.user
        self.state = TxnState.OPEN
        self._freelist = freelist
        self._npages = meta.npages
        self._fresh: dict[int, int] = {}  # overflow runs written by this txn: pgno -> npages
        self._freed: list[tuple[int, int]] = []
        self.pages_reused = 0  # pages allocated from the freelist (vacuum statistics)
        self._catalog = BTree(self, meta.catalog, writable=True)
        self._trees: dict[bytes, BTree] = {}
        self.pages_written = 0

    # NodeStore / WritableStore for the trees of this write.
    def node(self, pgno: int, gen: int) -> Node:
        return self.pagefile.node(pgno, gen)

    def overflow(self, ref: list[Any]) -> bytes:
        return self.pagefile.overflow(ref)

    def free(self, pgno: int, npages: int = 1) -> None:
        if self._fresh.pop(pgno, None) is not None:
            self._freelist.free_ready(pgno, npages)  # never reachable from any meta
        else:
            self._freed.append((pgno, npages))

    def release(self, horizon: int) -> None:
        """Make ready the pages freed at or before `horizon` (F2), as `begin` did
        with the horizon it was given: for a caller whose horizon has moved on
        since (a reader that ended while this write was being prepared).  Capped
        at the base generation, as in `begin`; the pages it makes ready serve the
        allocations that follow, most of them in `commit`'s spill."""
        self._check_open()
        self._freelist.release(min(horizon, self.base.gen))

    def _allocate(self, npages: int) -> int:
        pgno = self._freelist.allocate(npages)
        if pgno is None:
            pgno = self._npages
            self._npages += npages
        else:
            self.pages_reused += npages
        return pgno

    def write_overflow(self, data: bytes) -> list[Any]:
        self._check_open()
        pf = self.pagefile
        n = pf.run_pages(len(data))
        pgno = self._allocate(n)
        pf.write_run(pgno, self.gen, data)
        self.pages_written += n
        self._fresh[pgno] = n
        return [pgno, self.gen, n, len(data)]

    def room_below(self, npages: int, limit: int) -> bool:
        """Whether a run of `npages` allocated now would end at or below page
        `limit` (P7: a run is moved only there)."""
        start = self._freelist.lowest_run(npages)
        return start is not None and start + npages <= limit

    def write_node(self, node: Node) -> int:
        pgno = self._allocate(1)
        if node.kids is None:
            body = msgpack.packb([node.keys, node.vals])
            ptype = PAGE_LEAF
        else:
            body = msgpack.packb([node.keys, node.kids, node.gens])
            ptype = PAGE_BRANCH
        self.pagefile._write_page(pgno, ptype, self.gen, body)
        self.pages_written += 1
        # The node is final once written (B4): cache it so the next read of
        # the new generation decodes nothing.
        node.pgno = pgno
        self.pagefile.cache_put(pgno, node)
        return pgno

    # -- trees ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self.state is not TxnState.OPEN:
            raise StorageError(f"the write is {self.state.value}")

    def tree(self, name: bytes, *, create: bool = False) -> BTree | None:
        """The writable tree `name`; with create=True a missing tree is made empty."""
        self._check_open()
        tree = self._trees.get(name)
        if tree is not None:
            return tree
        ref = self._catalog.get(name)
        if ref is None:
            if not create:
                return None
            if len(name) > self._catalog.max_key:
                raise TooLarge("tree name", size=len(name), limit=self._catalog.max_key)
            self._catalog.put(name, PGNO.pack(0, 0))
            root: tuple[int, int] | None = None
        else:
            root = PGNO.unpack(ref)
        tree = BTree(self, root, writable=True)
        self._trees[name] = tree
        return tree

    def drop_tree(self, name: bytes) -> bool:
        tree = self.tree(name)
        if tree is None:
            return False
        tree.clear()
        del self._trees[name]
        self._catalog.delete(name)
        return True

    def names(self) -> list[bytes]:
        return [k for k, _v in self._catalog.items()]

    def compact(self) -> int:
        """P7: when the file's end holds live pages that the ready pages below
        could take, copy them there (every tree, then the catalog); return the
        pages moved (0: not worth it, or no room yet)."""
        self._check_open()
        limit = self.pagefile._compact_limit(self._freelist, self._npages)
        if limit is None:
            return 0
        self.pagefile._compacted = (limit, compact_live_above(self._freelist, self._npages, limit))
        moved = 0
        for name in self.names():
            tree = self.tree(name)
            assert tree is not None  # named by the catalog
            moved += tree.relocate(limit)
        return moved + self._catalog.relocate(limit)

    # -- commit --------------------------------------------------------------

    def commit(self) -> Meta:
        """Write the new generation durably (P2) and adopt it; return its meta."""
        self._check_open()
        pf = self.pagefile
        try:
            # 1. Spill every changed tree, children first, and record its root.
            for name, tree in self._trees.items():
                if tree.changed:
                    root = tree.spill() or (0, 0)
                    self._catalog.put(name, PGNO.pack(*root))
            catalog = self._catalog.spill() or (0, 0)
            # 2. Free the pages this write replaced, and the old freelist run,
            #    at this generation (F3); trim ready pages off the end of the file.
            fl = self._freelist
            for pgno, n in self._freed:
                fl.free(self.gen, pgno, n)
            old_pgno, _g, old_n, _len = self.base.freelist
            if old_pgno:
                fl.free(self.gen, old_pgno, old_n)
            self._npages = fl.trim_tail(self._npages)
            # 3. Write the freelist to a run of ready pages.  Taking pages out of
            #    the freelist only shrinks its encoding, so at most a retry or two.
            fl_ref = (0, 0, 0, 0)
            if len(fl):
                need = pf.run_pages(len(fl.encode()))
                while True:
                    pgno = self._allocate(need)
                    data = fl.encode()
                    if pf.run_pages(len(data)) <= need:
                        break
                    fl.free_ready(pgno, need)
                    need += 1
                n = pf.write_run(pgno, self.gen, data, PAGE_FREELIST)
                self.pages_written += n
                fl_ref = (pgno, self.gen, n, len(data))
            if len(self.user_meta) > MAX_USER_META:
                raise TooLarge("user meta", size=len(self.user_meta), limit=MAX_USER_META)
            meta = Meta(
                gen=self.gen,
                catalog=catalog,
                freelist=fl_ref,
                npages=self._npages,
                user=bytes(self.user_meta),
                slot=self.gen % 2,
            )
            # 4. Pages durable before the meta that makes them reachable (P2).
            if pf._sync:
                pf.device.sync()
            pf._write_meta(meta, meta.slot)
            self.pages_written += 1
            if pf._sync:
                pf.device.sync()
            # 5. A file longer than the pages in use: cut the tail, now that no
            #    meta on disk reaches it.
            if pf.device.size() > meta.npages * pf.page_size:
                pf.device.truncate(meta.npages * pf.page_size)
        except BaseException as exc:
            self.state = TxnState.FAILED
            pf._failed = exc
            pf._write_latch.release()
            raise
        self.state = TxnState.COMMITTED
        pf.meta = meta
        pf._freelist_cache = (meta.gen, fl)
        pf._write_latch.release()
        return meta

    @property
    def pages_freed(self) -> int:
        """Pages this write stopped reaching (freed at its generation)."""
        return sum(n for _pgno, n in self._freed)

    def abort(self) -> None:
        """Forget every change; pages written by this write stay unreachable."""
        if self.state is TxnState.OPEN:
            self.state = TxnState.ABORTED
            self.pagefile._write_latch.release()

    def __enter__(self) -> WriteTxn:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None and self.state is TxnState.OPEN:
            self.commit()
        else:
            self.abort()
