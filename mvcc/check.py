"""Integrity checker of a data directory: `mvcc.check(path)` (DESIGN section 2).

It reads one checkpoint generation of the page file and the WAL after it,
changes nothing, and returns a `CheckReport`: every problem it found (it never
stops at the first: a record, a tree or a frame that fails is noted and the
check goes on), and how much it read.  storage/check.py owns the structure of
the page file; this module adds what only the database knows: what the trees
mean and how they must agree with one another.

Checks (each failure a `Problem` citing its number)
(H1) The page file's structure in the generation read: storage/check.py C1-C3
     (seals, key order, depth, every page reached once or free).
(H2) Every table tree ``t<tid>`` (versions.py `tree_name`; the catalog is
     table 0): each key decodes as a primary key, each chain decodes
     (versions.py V3) with ts strictly decreasing and at least 1 (V1), no ts
     above the generation's checkpoint ts (the WAL position its meta names:
     checkpoint.py K1), and each document decodes (`storage.codec.unpack_doc`).
     A catalog row also names a table id and indexes that parse.
(H3) Every index tree ``i<id>`` equals, entry for entry and value for value,
     a rebuild from its table tree (`versions.chain_entries`, V4, V5): every
     entry is the entry of a retained version, every retained version has its
     entry, and head entries carry the head document.  An index tree that no
     newest catalog row lists is a problem (a checkpoint drops it); an index
     listed without a tree yet is not (the next checkpoint builds it).
(H4) Every table's vacuum list ``v<tid>`` holds exactly `vacuum_entry(key,
     chain)` for each chain of the table tree that has one (V6), with empty
     values.  A list that does not exist reads as empty.
(H5) No orphans: every table tree and vacuum list names a table id that some
     version of some catalog row names (V7; table id 0 excepted), and every
     tree name is of a known kind.
(H6) The WAL from the generation's position reads to its end (wal.py I1, I2)
     and every frame decodes (memtable.py M4).  An unclean stop before the
     durable end the shared state publishes is a problem (acknowledged commits
     cannot be read).  One past it is a note, not a problem: a live process
     may be appending there, or a crash left a frame that was never
     acknowledged and that recovery truncates.

Algorithm (`check`)
    1. Attach (`_attach`): the key, the locks, the page file, the WAL, the
       shared state; pin a generation if other processes are live.
    2. H1 on the pinned meta (`check_pagefile`).
    3. Walk the page file's list of trees; sort the names into tables, indexes,
       vacuum lists and unknown ones.
    4. Walk the catalog (table 0) first: its rows say which table ids exist
       (any version) and which indexes each table has (newest version).
    5. Walk every table tree once: H2 per chain, and from each good chain the
       vacuum-list key and the entries of every index whose tree exists.
    6. Walk every index tree and vacuum list once, against those expectations:
       extra keys and wrong values as found, then the missing ones (H3, H4).
    7. H5 from the names of step 3 and the catalog of step 4; H6.

Damaged trees.  Trees are read by `_walk`, which goes through
`PageFile.node`: every page is unsealed and its generation checked before it
is decoded, so a corrupt page is never read as data.  A page that fails is
skipped with its subtree, and its key range (the parent's separators) becomes
a *gap* of that tree; a record whose chain or documents do not decode is a
gap of one key.  Comparisons skip what falls in a gap, so one bad page is a
few problems that name it, not thousands of phantom mismatches.  At most
`MAX_LISTED` problems of one check in one tree are listed; the rest are
counted in one more line.

Attaching.  `mvcc.open` is not used, on purpose: (a) when no other process
has the directory open it recovers, truncating a torn WAL tail and rebuilding
the shared state, which is a write, and erases what H6 is there to report;
(b) its memtable catch-up refuses a damaged log with CorruptionError before
anything could be reported, and reads the whole WAL into memory.  Instead
(the opening protocol of database.py, without its writes): take ``recovery``
exclusive and try ``open`` exclusive.
  - Taken: no process has the directory open.  Keep ``recovery`` for the whole
    check, so that no process opens (and recovers or checkpoints) under it; a
    process opening meanwhile waits, up to its lock_timeout.  Nothing can
    change, so nothing is pinned.
  - Not taken: live processes.  Hold ``open`` shared as any attaching process
    does, release ``recovery``, and pin (durable ts, checkpoint generation) in
    the reader registry (registry.py R3), so that no checkpoint reuses the
    pages of the generation read (checkpoint.py K4).  The newest meta is read
    after the pin: its generation is at or above the pinned one (database.py
    D5).  A WAL segment deleted by a checkpoint that landed meanwhile makes
    H6 start again from the newer checkpoint's position.

Concurrency: `check` may run in any thread or process, next to any number of
processes using the directory (a `Database` of its own process included: the
registry shares the process's slot, R6); it keeps no state between calls.

Naming: `mvcc/__init__.py` re-exports the function `check`, which hides this
module's attribute on the package: import from it as ``from mvcc.check import
CheckReport``, not ``import mvcc.check as m``.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from locking.errors import StateError
from locking.filelock import LockSet
from locking.registry import Registry
from locking.statefile import State, StateFile
from storage.check import check_pagefile
from storage.codec import unpack_doc
from storage.crypto import PageCipher, load_key_file
from storage.device import FileDevice
from storage.errors import CorruptPage
from storage.format import PGNO, SEGMENT_HEADER
from storage.keys import decode_key
from storage.pagefile import Meta, PageFile
from storage.wal import WAL, LogEnd, LogPosition, segment_name

from .commitlog import checkpoint_start, durable_end
from .database import KEY_FILE, PAGES
from .errors import Error, InvalidKey, translate
from .index import IndexDef, indexes_of, split_entry
from .memtable import CATALOG, decode_frame
from .versions import Chain, chain_entries, decode_chain, vacuum_entry

__all__ = ["MAX_LISTED", "CheckReport", "Problem", "check"]

MAX_LISTED: Final = 20
PROGRESS_EVERY: Final = 256  # pages between two calls of check's progress callback
"""Problems of one check in one tree listed one by one; more are counted."""

LOCK_TIMEOUT: Final = 10.0  # seconds to wait for `recovery` (an opener holds it briefly)

Gap = tuple[bytes | None, bytes | None]  # [lo, hi) of keys not read; None: unbounded
Roots = dict[int, tuple[int, int]]  # table or index id -> root (pgno, gen) of its tree


@dataclass(frozen=True)
class Problem:
    """One thing wrong: which check (H1-H6), the file, the tree (``t<tid>``,
    ``i<index id>``, ``v<tid>``, ``catalog``, ``wal``...), the page or WAL frame
    when known, and why.  `about` names the table or index for people."""

    check: str
    file: str
    tree: str
    reason: str
    pgno: int | None = None
    frame: int | None = None
    about: str = ""

    def __str__(self) -> str:
        if self.pgno is not None:
            where = f"page {self.pgno}"
        elif self.frame is not None:
            where = f"frame {self.frame}"
        else:
            where = "-"
        tree = f"{self.tree}: {self.about}" if self.about else self.tree
        return f"[{self.check}] {self.file}: {where} ({tree}): {self.reason}"


@dataclass
class CheckReport:
    """What `check` found.  `ok` when there is no problem; `notes` are facts
    worth knowing that are not damage (a WAL tail that may be in flight)."""

    path: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gen: int = 0  # the page-file generation read
    ts: int = 0  # its checkpoint ts
    pages: int = 0
    trees: int = 0
    records: int = 0  # chains read, the catalog's included
    versions: int = 0
    index_entries: int = 0
    vacuum_entries: int = 0
    frames: int = 0  # WAL frames after the checkpoint

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        verdict = "ok" if self.ok else f"{len(self.problems)} PROBLEMS"
        head = (
            f"{self.path}: {verdict}: generation {self.gen} (checkpoint ts {self.ts}): "
            f"{self.pages} pages, {self.trees} trees, {self.records} records, "
            f"{self.versions} versions, {self.index_entries} index entries, "
            f"{self.vacuum_entries} vacuum-list entries, {self.frames} WAL frames"
        )
        return "\n".join([head, *(f"note: {n}" for n in self.notes), *map(str, self.problems)])


def check(
    path: str | os.PathLike[str],
    *,
    passphrase: str | bytes | None = None,
    key: bytes | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> CheckReport:
    """Check the data directory at `path` (module docstring: H1-H6) and return the
    report.  Raises InvalidKey for a wrong or missing key, LockTimeout if an
    opener holds the directory too long, Error if there is no database there;
    damage is never raised, it is reported.  `progress(pages read, pages in the
    file)` is called every PROGRESS_EVERY pages (a page may be read twice: an
    index is checked against its table's records)."""
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, PAGES)):
        raise Error(f"{path}: no database here (no page file)")
    with translate(), _attach(path, passphrase, key) as attached:
        checker = _Checker(path, *attached)
        checker.progress = progress
        return checker.run()


# -- attaching --------------------------------------------------------------------


def _cipher(path: str, passphrase: str | bytes | None, key: bytes | None) -> PageCipher | None:
    """The page and frame cipher, as `Database._cipher` finds it, never creating a key."""
    key_path = os.path.join(path, KEY_FILE)
    if os.path.exists(key_path):
        return PageCipher(load_key_file(key_path, passphrase=passphrase, key=key))
    if passphrase is not None or key is not None:
        raise InvalidKey(f"{path} is not encrypted: check it without passphrase or key")
    return None


def _existing(path: str) -> FileDevice:
    return FileDevice(path, create=False)


def _read_state(path: str) -> State | str:
    """The shared state, or why it cannot be read (never created nor rebuilt here)."""
    state_path = os.path.join(path, "state")
    if not os.path.exists(state_path):
        return "there is no shared state file"
    try:
        with StateFile(state_path) as state:
            return state.read()
    except StateError as exc:
        return f"the shared state file is damaged ({exc})"


@contextlib.contextmanager
def _attach(
    path: str, passphrase: str | bytes | None, key: bytes | None
) -> Iterator[tuple[PageFile, Meta, WAL, State | str, bool]]:
    """(page file, meta of the generation to read, WAL, shared state or why none,
    whether other processes are live), held until the block ends (module
    docstring, "Attaching")."""
    cipher = _cipher(path, passphrase, key)
    with contextlib.ExitStack() as stack:
        locks = stack.enter_context(LockSet(path, timeout=LOCK_TIMEOUT))
        locks.recovery.acquire(LOCK_TIMEOUT)
        live = not locks.open.try_acquire()
        if live:
            locks.open.acquire(LOCK_TIMEOUT, shared=True)
            locks.recovery.release()
        else:
            locks.open.release()  # `recovery`, kept, stops every opener
        # create=False: the default device creates a missing file, and a
        # segment a checkpoint deletes between the WAL's check and its open
        # would come back empty.
        wal = stack.enter_context(
            WAL(
                os.path.join(path, "wal"), cipher=cipher, durability="off", device_factory=_existing
            )
        )
        pages = stack.enter_context(
            contextlib.closing(
                PageFile.open(os.path.join(path, PAGES), cipher=cipher, sync=False, create=False)
            )
        )
        if not live:
            yield pages, pages.read_meta(), wal, _read_state(path), live
            return
        # Live processes keep the state valid (database.py D4): pin what it says.
        shared = stack.enter_context(StateFile(os.path.join(path, "state")))
        registry = stack.enter_context(contextlib.closing(Registry(os.path.join(path, "readers"))))
        seen: list[State] = []

        def read() -> tuple[int, int]:
            seen.append(shared.read())
            return seen[-1].durable_ts, seen[-1].checkpoint_gen

        pin = registry.pin(read, LOCK_TIMEOUT)
        stack.callback(registry.unpin, pin)
        yield pages, pages.read_meta(), wal, seen[-1], live


# -- reading trees ------------------------------------------------------------------


def _in(key: bytes, gaps: list[Gap]) -> bool:
    return any((lo is None or lo <= key) and (hi is None or key < hi) for lo, hi in gaps)


def _record(key: bytes) -> str:
    """A record's primary key as people read it."""
    try:
        values = decode_key(key)
    except (CorruptPage, ValueError, TypeError):
        return f"key {key.hex()}"
    return repr(values[0]) if len(values) == 1 else f"key {values!r}"


class _Checker:
    """One run of the checks over one attached directory (module docstring)."""

    def __init__(
        self, path: str, pages: PageFile, meta: Meta, wal: WAL, state: State | str, live: bool
    ) -> None:
        self.pages, self.meta, self.wal, self.state, self.live = pages, meta, wal, state, live
        self.file = pages.name
        self.report = CheckReport(path, gen=meta.gen)
        self.listed: Counter[tuple[str, str]] = Counter()
        self.gaps: dict[str, list[Gap]] = {}
        self.about: dict[str, str] = {}  # tree label -> what it is, for people
        self.named: set[int] = {CATALOG}  # table ids some catalog row version names
        self.names: dict[int, str] = {}  # table id -> its name in the newest row naming it
        self.tables: dict[int, tuple[str, tuple[IndexDef, ...]]] = {}  # newest rows
        self.owner: dict[int, tuple[int, IndexDef]] = {}  # index id -> (tid, index)
        self.start = self._start()
        self.report.ts = 0 if self.start is None else self.start.next_ts - 1
        self.progress: Callable[[int, int | None], None] | None = None
        self._read = 0  # pages the walks have read (progress)

    # -- reporting

    def problem(
        self,
        check: str,
        tree: str,
        reason: str,
        pgno: int | None = None,
        *,
        frame: int | None = None,
        file: str | None = None,
    ) -> None:
        self.listed[check, tree] += 1
        if self.listed[check, tree] <= MAX_LISTED:
            self.report.problems.append(
                Problem(
                    check, file or self.file, tree, reason, pgno, frame, self.about.get(tree, "")
                )
            )

    def _counted(self) -> None:
        """One line for the problems past MAX_LISTED of each check and tree."""
        for (check, tree), n in list(self.listed.items()):
            if n > MAX_LISTED:
                reason = f"{n - MAX_LISTED} more problems like these not listed"
                about = self.about.get(tree, "")
                self.report.problems.append(Problem(check, self.file, tree, reason, about=about))

    # -- the walk

    def _walk(
        self, root: tuple[int, int], tree: str, check: str
    ) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value, leaf pgno) of every readable entry of a tree, in key order;
        what cannot be read becomes a gap of the tree and a problem."""
        gaps = self.gaps.setdefault(tree, [])
        seen: set[int] = set()
        stack: list[tuple[int, int, bytes | None, bytes | None]] = []
        if root[0]:
            stack.append((root[0], root[1], None, None))
        while stack:
            pgno, gen, lo, hi = stack.pop()
            try:
                if pgno in seen:
                    raise CorruptPage("reached twice in one tree")
                seen.add(pgno)
                node = self.pages.node(pgno, gen)
                self._read += 1
                if self.progress is not None and self._read % PROGRESS_EVERY == 0:
                    self.progress(self._read, self.meta.npages)
            except CorruptPage as exc:
                gaps.append((lo, hi))
                self.problem(
                    check, tree, f"unreadable ({exc.reason}): keys in it not checked", pgno
                )
                continue
            if node.kids is None:
                for k, v in zip(node.keys, node.vals):
                    if v.__class__ is not bytes:
                        try:
                            v = self.pages.overflow(v)
                        except CorruptPage as exc:
                            gaps.append((k, k + b"\0"))
                            self.problem(check, tree, f"{_record(k)}: {exc.reason}", exc.pgno)
                            continue
                    yield k, v, pgno
                continue
            bounds = [lo, *node.keys, hi]
            for i in reversed(range(len(node.kids))):
                stack.append((node.kids[i], node.gens[i], bounds[i], bounds[i + 1]))

    def _trees(self) -> dict[bytes, tuple[int, int]]:
        """Step 3: name -> root of every tree of the generation."""
        out = {}
        for name, ref, _pgno in self._walk(self.meta.catalog, "catalog", "H1"):
            if len(ref) == PGNO.size:  # else H1 reports it
                out[name] = PGNO.unpack(ref)
        return out

    # -- H2: table trees

    def _chain(self, tree: str, key: bytes, data: bytes, pgno: int) -> Chain | None:
        """H2 for one record: its chain, or None (and a gap) if it cannot be used."""
        self.report.records += 1
        try:
            if len(decode_key(key)) != 1:
                raise CorruptPage("not a one-element primary key")
            chain = decode_chain(data, self.file)
        except (CorruptPage, ValueError, TypeError) as exc:
            self.gaps[tree].append((key, key + b"\0"))
            self.problem("H2", tree, f"record {_record(key)}: {getattr(exc, 'reason', exc)}", pgno)
            return None
        self.report.versions += len(chain)
        usable = True
        if chain[-1][0] < 1:
            self.problem("H2", tree, f"record {_record(key)}: a version at ts {chain[-1][0]}", pgno)
        if chain[0][0] > self.report.ts:
            self.problem(
                "H2",
                tree,
                f"record {_record(key)}: a version at ts {chain[0][0]}, after the "
                f"generation's checkpoint ts {self.report.ts}",
                pgno,
            )
        for ts, value in chain:
            if value is not None:
                try:
                    unpack_doc(value)
                except (CorruptPage, ValueError, TypeError) as exc:
                    usable = False
                    reason = getattr(exc, "reason", exc)
                    self.problem(
                        "H2",
                        tree,
                        f"record {_record(key)}: the document at ts {ts}: {reason}",
                        pgno,
                    )
        if not usable:
            self.gaps[tree].append((key, key + b"\0"))
            return None
        return chain

    def _catalog_row(self, key: bytes, chain: Chain, pgno: int) -> None:
        """Step 4 for one catalog row: the table ids it names, the newest's indexes."""
        values = decode_key(key)  # decoded by `_chain` already
        name = values[0] if type(values[0]) is str else _record(key)
        for i, (ts, value) in enumerate(chain):
            if value is None:
                continue
            try:
                row = unpack_doc(value)
                tid = row["id"]
                if type(tid) is not int or tid <= 0:
                    raise ValueError(f"table id {tid!r}")
                self.named.add(tid)
                self.names.setdefault(tid, name)
                if i == 0:
                    indexes = indexes_of(row)
                    self.tables[tid] = (name, indexes)
                    for index in indexes:
                        self.owner[index.id] = (tid, index)
            except (CorruptPage, Error, KeyError, ValueError, TypeError) as exc:
                reason = getattr(exc, "reason", exc)
                self.problem("H2", "t0", f"catalog row {name} at ts {ts}: {reason}", pgno)

    def _table(
        self,
        tid: int,
        root: tuple[int, int],
        index_trees: dict[int, tuple[int, int]],
        want_index: dict[int, dict[bytes, tuple[bytes, int]]],
        want_vacuum: dict[bytes, int],
    ) -> None:
        """Step 5 for one table tree: H2, and what its index trees and vacuum list
        must hold (filled into `want_index`, `want_vacuum`)."""
        tree = f"t{tid}"
        indexes = [i for i in self.tables.get(tid, ("", ()))[1] if i.id in index_trees]
        for index in indexes:
            want_index[index.id] = {}
        for key, data, pgno in self._walk(root, tree, "H2"):
            chain = self._chain(tree, key, data, pgno)
            if chain is None:
                continue
            if tid == CATALOG:
                self._catalog_row(key, chain, pgno)
            listed = vacuum_entry(key, chain)
            if listed is not None:
                want_vacuum[listed] = pgno
            for index in indexes:
                try:
                    entries = chain_entries(key, chain, index)
                except (CorruptPage, ValueError, TypeError) as exc:  # decoded above: a bug
                    self.gaps[tree].append((key, key + b"\0"))
                    self.problem("H3", tree, f"record {_record(key)}: {exc}", pgno)
                    continue
                want = want_index[index.id]
                for entry, value in entries.items():
                    want[entry] = (value, pgno)

    # -- H3, H4: index trees and vacuum lists against their table tree

    def _index(
        self, tid: int, index_id: int, root: tuple[int, int], want: dict[bytes, tuple[bytes, int]]
    ) -> None:
        """Step 6 for one index tree (H3)."""
        tree, table = f"i{index_id}", f"t{tid}"
        table_gaps = self.gaps.get(table, [])
        for entry, value, pgno in self._walk(root, tree, "H3"):
            self.report.index_entries += 1
            record = split_entry(entry)[1] if len(entry) >= 2 else entry
            if _in(record, table_gaps):
                want.pop(entry, None)
                continue
            found = want.pop(entry, None)
            who = _record(record)
            if found is None:
                self.problem(
                    "H3", tree, f"an entry of record {who} matches no retained version", pgno
                )
            elif found[0] != value:
                self.problem("H3", tree, _value_problem(who, found[0], value), pgno)
        tree_gaps = self.gaps.get(tree, [])
        for entry, (value, table_pgno) in want.items():
            if not _in(entry, tree_gaps):
                what = "its head version" if value else "one of its older versions"
                self.problem(
                    "H3",
                    tree,
                    f"no entry for {what} of record {_record(split_entry(entry)[1])} "
                    f"(its chain is on page {table_pgno} of {table})",
                )

    def _vacuum(self, tid: int, root: tuple[int, int] | None, want: dict[bytes, int]) -> None:
        """Step 6 for one vacuum list (H4); a missing list reads as empty."""
        tree, table = f"v{tid}", f"t{tid}"
        table_gaps = self.gaps.get(table, [])
        for listed, value, pgno in () if root is None else self._walk(root, tree, "H4"):
            self.report.vacuum_entries += 1
            record = listed[8:]
            if _in(record, table_gaps):
                want.pop(listed, None)
                continue
            head = int.from_bytes(listed[:8], "big")
            if want.pop(listed, None) is None:
                self.problem(
                    "H4",
                    tree,
                    f"lists record {_record(record)} at head ts {head}, which no chain "
                    "of the table tree matches (V6)",
                    pgno,
                )
            elif value:
                self.problem("H4", tree, f"the entry of record {_record(record)} has a value", pgno)
        tree_gaps = self.gaps.get(tree, [])
        for listed, table_pgno in want.items():
            if not _in(listed, tree_gaps):
                self.problem(
                    "H4",
                    tree,
                    f"does not list record {_record(listed[8:])} (head ts "
                    f"{int.from_bytes(listed[:8], 'big')}; its chain is on page {table_pgno} "
                    f"of {table}), which pruning may shorten (V6)",
                )

    # -- H6: the WAL

    def _start(self) -> LogPosition | None:
        """The WAL position the generation's meta names (checkpoint.py
        `meta_position`, without its one write), or None if there is no log."""
        if self.meta.user:
            try:
                return LogPosition.unpack(self.meta.user)
            except struct.error:
                self.problem("H6", "wal", f"the meta names no WAL position: {self.meta.user!r}")
                return None
        numbers = self.wal.segments()
        first = os.path.join(self.wal.directory, segment_name(numbers[0])) if numbers else ""
        if not numbers or os.path.getsize(first) < SEGMENT_HEADER.size:
            return None  # wal.start() would create the first segment
        return self.wal.start()

    def _read_log(self, pos: LogPosition) -> tuple[LogEnd | None, LogPosition]:
        """Read and decode the frames from `pos` on; (why it stopped, where)."""
        reader = self.wal.read(pos)
        try:
            for frame in reader:
                self.report.frames += 1
                where = os.path.join(self.wal.directory, segment_name(frame.start.segment))
                try:
                    for _tid, _key, value in decode_frame(frame.payload, where):
                        if value is not None:
                            unpack_doc(value)
                except CorruptPage as exc:
                    self.problem("H6", "wal", exc.reason, frame=frame.ts, file=where)
        except FileNotFoundError as exc:  # deleted between the listing and the open
            return LogEnd(reader.position.segment, 0, f"{exc.filename} missing"), reader.position
        return reader.stopped, reader.position

    def _wal(self) -> None:
        """H6: read from the generation's position to the end of the log."""
        pos, state = self.start, self.state
        must = durable_end(state) if isinstance(state, State) else None
        while pos is not None:
            stopped, end = self._read_log(pos)
            if stopped is None or stopped.clean:
                return
            if self.live:
                # A checkpoint that landed after the pin may have deleted the
                # segments read: go on from the newest one, which holds them.
                fresh = _read_state(self.report.path)
                if isinstance(fresh, State) and checkpoint_start(fresh).next_ts > end.next_ts:
                    pos, must = checkpoint_start(fresh), durable_end(fresh)
                    continue
            where = os.path.join(self.wal.directory, segment_name(stopped.segment))
            said = (
                f"the log stops at segment {stopped.segment} offset {stopped.offset}, "
                f"before frame {end.next_ts}: {stopped.reason}"
            )
            if must is not None and end.next_ts >= must.next_ts:
                self.report.notes.append(
                    f"{where}: {said}; past the durable end (ts {must.next_ts - 1}): a frame "
                    "being appended, or one never acknowledged that recovery truncates"
                )
            else:
                known = (
                    f"frames up to ts {must.next_ts - 1} are durable"
                    if must is not None
                    else f"{state}: whether they were acknowledged is unknown"
                )
                self.problem("H6", "wal", f"{said}; {known}", frame=end.next_ts, file=where)
            return

    # -- the run

    def run(self) -> CheckReport:
        """Steps 2-7 of the module docstring's algorithm."""
        report = self.report
        # 2. The structure (H1), reported once the tree names are known.
        structure = check_pagefile(self.pages, self.meta)
        report.pages = structure.pages
        # 3. The trees of the generation, by kind.
        tables, index_trees, vacuum, labels = self._sort(self._trees())
        for p in structure.problems:
            tree = labels.get(p.tree, p.tree)
            report.problems.append(Problem("H1", p.file, tree, p.reason, p.pgno))
        # 4, 5. The catalog first (it names the tables and indexes), then every table.
        want_index: dict[int, dict[bytes, tuple[bytes, int]]] = {}
        want_vacuum: dict[int, dict[bytes, int]] = {tid: {} for tid in [*tables, *vacuum]}
        if CATALOG in tables:
            self._table(CATALOG, tables[CATALOG], index_trees, want_index, want_vacuum[CATALOG])
        self._name_trees()
        for tid in sorted(tables.keys() - {CATALOG}):
            self._table(tid, tables[tid], index_trees, want_index, want_vacuum[tid])
        # 6. Index trees (H3) and vacuum lists (H4) against their tables.
        for index_id, root in sorted(index_trees.items()):
            owner = self.owner.get(index_id)
            if owner is None:
                reason = "no newest catalog row lists this index (a checkpoint drops its tree)"
                self.problem("H3", f"i{index_id}", reason, root[0] or None)
            else:
                self._index(owner[0], index_id, root, want_index.get(index_id, {}))
        for tid, want in sorted(want_vacuum.items()):
            self._vacuum(tid, vacuum.get(tid), want)
        # 7. Orphans (H5), the WAL (H6), and the count of what was not listed.
        for kind, trees in (("t", tables), ("v", vacuum)):
            for tid, root in sorted(trees.items()):
                if tid not in self.named:
                    reason = f"orphan tree: no version of any catalog row names table id {tid}"
                    self.problem("H5", f"{kind}{tid}", f"{reason} (V7)", root[0] or None)
        self._wal()
        self._counted()
        return report

    def _sort(
        self, names: dict[bytes, tuple[int, int]]
    ) -> tuple[Roots, Roots, Roots, dict[str, str]]:
        """Step 3: (table trees, index trees, vacuum lists) by id, and the label
        of each tree by the name storage/check.py gives it."""
        self.report.trees = len(names)
        kinds: dict[bytes, Roots] = {b"t": {}, b"i": {}, b"v": {}}
        labels = {}
        for name, root in names.items():
            kind, number = name[:1], int.from_bytes(name[1:], "big")
            if len(name) == 9 and kind in kinds:
                kinds[kind][number] = root
                labels[name.decode("utf-8", "backslashreplace")] = f"{kind.decode()}{number}"
            else:
                self.problem("H5", repr(name), "a tree of no known kind", root[0] or None)
        return kinds[b"t"], kinds[b"i"], kinds[b"v"], labels

    def _name_trees(self) -> None:
        """What each tree is, for people (`Problem.about`), once the catalog is read."""
        self.about["t0"] = self.about["v0"] = "the table catalog"
        for tid, name in self.names.items():
            what = f"table {name}" + ("" if tid in self.tables else " (dropped)")
            self.about[f"t{tid}"] = self.about[f"v{tid}"] = what
        for name, indexes in self.tables.values():
            for index in indexes:
                self.about[f"i{index.id}"] = f"index {index.name} of table {name}"


def _value_problem(who: str, want: bytes, got: bytes) -> str:
    if not want:
        return f"the entry of an older version of record {who} carries a document (V5)"
    if not got:
        return f"the head entry of record {who} is empty, not the head document (V5)"
    return f"the head entry of record {who} holds another document than the head version (V5)"
