"""Online backup and restore: a compact copy of one committed snapshot.

`db.backup(dest)` writes, while other processes go on committing, a data
directory that holds exactly what one readonly transaction sees: one version
per live record, the index trees, no dead version, no WAL frame.  It opens
with `mvcc.open` like any data directory (under the same passphrase or key
when the source is encrypted), and `mvcc.restore(src, dest)` checks it and
copies it into place.

A backup directory (docs/format.md) holds `pages`, `wal/0000000000000001.wal`,
`ids`, `key` (encrypted sources only) and `backup`, the manifest: the
snapshot's ts and the size and SHA-256 of every other file.  Lock, state and
registry files are not part of it; `mvcc.open` makes them.

Invariants
(B1) One snapshot.  Everything the backup holds is what one readonly
     transaction at ts S sees (S: the durable ts at its begin, pinned in the
     reader registry: database.py D1): every commit at or before S whole,
     nothing after it.
(B2) Compact.  The page file has one generation (1).  Each table's tree holds
     the chain [(S, document)] for each record live at S; the catalog tree
     holds the catalog rows live at S the same way, so a table dropped
     before S leaves nothing.  Each index the catalog lists gets its tree,
     built from those chains (versions.py V4, V5: every entry is a head's,
     valued with its document).  A one-version chain that is not a delete
     has no vacuum-list entry (V6), so there are no vacuum lists; nothing was
     freed, so there is no freelist.
(B3) A fresh log.  The WAL is one segment holding no frame, whose first ts is
     S + 1, and the meta's user bytes name its first position (checkpoint.py
     K1): recovery at the first open replays nothing and publishes commit ts
     = durable ts = checkpoint ts = S, and the first commit gets S + 1.  Every
     ts in the trees is S, at or below the checkpoint ts (check.py H2).
(B4) Never blocks writers.  The backup takes no lock of the source directory;
     its pin only holds back pruning and page reuse (checkpoint.py K4) while
     the trees are read.  Readers never block writers.
(B5) Same key.  The key file is copied byte for byte (the same data key,
     wrapped under the same passphrase or raw key), and every page and the
     segment header are sealed under that data key: the backup is ciphertext
     and opens with what opens the source.
(B6) Ids are never reused.  The `ids` file holds the source's first-never-
     handed-out id of each table of the backup, read after the pin: every id a
     record at S carries was handed out, and so recorded, before (ids.py Q1).
(B7) Atomic.  The backup is built in `<dest>.tmp-<random>` next to dest,
     every file and directory fsynced and the manifest written last, then
     renamed to dest (a rename replaces a missing or empty directory only)
     and the parent fsynced.  dest is either absent (or the empty directory
     it was) or a whole backup.
(B8) Restore copies only a directory whose manifest is sound, that
     `mvcc.check` finds without a problem, and whose files match the
     manifest's sizes and hashes as they are copied; it replaces dest by the
     same build-and-rename (B7), never a database a live process has open.

Backup (`backup`)                  a crash (or kill -9) here leaves
    1. Refuse a dest that is not a missing or empty directory, or that lies in
       the source directory.                                nothing
    2. Make `<dest>.tmp-<random>`.                          an empty tmp dir
    3. Pin S: a readonly transaction of its own (not the caller's context),
       so the view and memtable it reads stay put.          a partial tmp dir
    4. Copy the key file; create the WAL's segment 1 with first ts S + 1.
    5. One page-file write: the catalog, then each table's tree (bulk load of
       the records the transaction scans, spilled at once so only one table is
       in memory), then its index trees (entries sorted, bulk loaded); the
       meta names the position of 4.  Commit (pagefile.py P2).
    6. Write `ids` (B6); end the transaction (unpin).
    7. Hash every file into the manifest, written and fsynced last; fsync the
       tmp directories.
    8. Rename tmp to dest; fsync the parent.               dest is the backup
    A tmp directory left by a crash at 2-8 is never at dest.  Until the
    manifest is written it has none, and restore refuses it ("not a
    backup"); after that it is a whole backup under another name.  Either
    way it is litter for the operator to delete.  An error (a full disk, a
    progress callback that raises) removes it.

Why rebuild rather than copy the files: a copy of `pages` and the WAL would
carry every dead version and a WAL tail to cut at S, and would have to keep
checkpoints from rewriting the meta under the copy (or block them).  The
rebuild reads through an ordinary pinned snapshot, so it needs no lock and
gives the compact form by construction.  Every version is stamped S, not its
original commit ts: the scan does not give that ts, and no snapshot of the
restored database is below S, so none could tell the difference.

Restore (`restore`)                a crash here leaves
    1. Read the manifest (only known file names, sizes as listed).  nothing
    2. Refuse a non-empty dest unless `overwrite`; even then, refuse one that
       is not a data directory (no `pages`).
    3. `mvcc.check(src)` with the caller's passphrase or key: a problem is a
       CorruptionError naming it.
    4. With overwrite, refuse a dest a live process has open, and hold its
       `recovery` and `open` locks to the end, so that no process opens the
       old dest meanwhile.  Copy each file into `<dest>.tmp-<random>`,
       hashing as it goes (a mismatch is a CorruptionError naming the file);
       fsync.                                               a tmp dir
    5. Rename dest (if any) to `<dest>.old-<random>`, then tmp to dest; fsync
       the parent.                    between the renames: no dest, the old
                                      one and the new one whole beside it
    6. Delete the old directory.                           dest restored

Concurrency: `backup` runs in the calling thread next to any number of
threads and processes using the database; it does not join the caller's
transaction.  Two backups to one dest: the second rename fails and the second
backup raises, leaving the first.  Cost: one pass over the live records; the
records of one table, and the entries of its indexes, are held in memory
while its trees are built.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from locking.filelock import LockSet
from storage.codec import pack, unpack_doc
from storage.device import sync_directory
from storage.keys import decode_key
from storage.pagefile import PageFile, WriteTxn
from storage.wal import WAL, LogPosition

from .check import check
from .database import KEY_FILE, PAGES
from .errors import CorruptionError, Error, translate
from .index import IndexDef, entry_key, indexes_of
from .memtable import CATALOG
from .transaction import Transaction
from .versions import encode_chain, index_tree_name, tree_name

if TYPE_CHECKING:
    from .database import Database

__all__ = ["MANIFEST", "BackupResult", "Progress", "backup", "restore"]

MANIFEST: Final = "backup"
"""The manifest's file name in a backup directory (docs/format.md)."""

MANIFEST_FORMAT: Final = 1
PROGRESS_EVERY: Final = 1000  # records (backup) between two progress calls
CHUNK: Final = 1024 * 1024  # bytes read at a time when hashing and copying
LOCK_TIMEOUT: Final = 10.0  # seconds restore waits for an opener of dest to finish
IDS: Final = "ids"
WAL_DIR: Final = "wal"
# The files a backup may list (B8: a manifest names nothing else, so a restore
# never writes outside dest).
_FILES: Final = re.compile(r"^(pages|ids|key|wal/\d{16}\.wal)$")

Progress = Callable[[int, int | None], None]
"""`progress(done, total)`: records written (backup; total unknown, None, until
the last call) or bytes copied (restore)."""


@dataclass(frozen=True)
class BackupResult:
    """What a backup (or a restore) wrote."""

    path: str  # the directory written
    ts: int  # the snapshot: every commit at or before it, none after (B1)
    records: int  # live records (catalog rows included)
    bytes: int  # the files' total size
    seconds: float
    tables: dict[str, int] = field(default_factory=dict)  # name -> records


# -- backup ---------------------------------------------------------------------


def backup(
    db: Database, dest: str | os.PathLike[str], *, progress: Progress | None = None
) -> BackupResult:
    """Steps 1-8 of the module docstring; `Database.backup` calls it."""
    began = time.perf_counter()
    dest = os.path.abspath(os.fspath(dest))
    source = os.path.abspath(db.path)
    if dest == source or dest.startswith(source + os.sep):
        raise Error(f"backup destination {dest} lies inside the database directory {source}")
    _refuse_nonempty(dest, "backup destination")  # 1.
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{dest}.tmp-{secrets.token_hex(4)}"
    os.mkdir(tmp)  # 2.
    try:
        tables, records, ts = _build(db, tmp, progress)
        files = _hashes(tmp)
        manifest = {
            "format": MANIFEST_FORMAT,
            "ts": ts,
            "created": time.time(),
            "source": source,
            "encrypted": db._page_cipher is not None,
            "tables": tables,
            "records": records,
            "files": files,
        }
        _write_file(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=1).encode())  # 7.
        sync_directory(os.path.join(tmp, WAL_DIR))
        sync_directory(tmp)
        _install(tmp, dest)  # 8.
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(info["size"] for info in files.values())
    return BackupResult(dest, ts, records, size, time.perf_counter() - began, tables)


def _build(db: Database, tmp: str, progress: Progress | None) -> tuple[dict[str, int], int, int]:
    """Steps 3-6: the key, the WAL, the page file and the ids under one pin.
    Returns (records per table, records, the snapshot ts)."""
    cipher = db._page_cipher
    tx = Transaction(db, isolation="snapshot", readonly=True)  # 3.
    try:
        ts = tx.snapshot
        if progress is not None:
            progress(0, None)
        if cipher is not None:  # 4.
            with open(os.path.join(db.path, KEY_FILE), "rb") as f:
                _write_file(os.path.join(tmp, KEY_FILE), f.read())
        with WAL(
            os.path.join(tmp, WAL_DIR),
            cipher=cipher,
            durability="full",
            segment_size=db.wal.segment_size,
        ) as wal:
            start = wal.start(first_ts=ts + 1)
        pages = PageFile.open(
            os.path.join(tmp, PAGES), cipher=cipher, page_size=db.pages.page_size, sync=True
        )
        try:
            txn = pages.begin()
            try:
                tables, records = _trees(txn, tx, start, progress)  # 5.
                txn.commit()
            except BaseException:
                txn.abort()
                raise
        finally:
            pages.close()
        ids = db.ids.recorded()  # 6. (B6) read after the pin; an atomic rename writes it
        tids = {str(tid) for tid, _name, _idx in _catalog(tx)}
        _write_file(os.path.join(tmp, IDS), pack({k: v for k, v in ids.items() if k in tids}))
    finally:
        tx.rollback()  # unpin
    if progress is not None:
        progress(records, records)
    return tables, records, ts


def _catalog(tx: Transaction) -> Iterator[tuple[int, str, tuple[IndexDef, ...]]]:
    """(table id, name, indexes) of each table the snapshot sees."""
    for key, row in tx.scan(CATALOG):
        spec = unpack_doc(row)
        yield spec["id"], str(decode_key(key)[0]), indexes_of(spec)


def _trees(
    txn: WriteTxn, tx: Transaction, start: LogPosition, progress: Progress | None
) -> tuple[dict[str, int], int]:
    """Step 5, up to the commit: every tree of the backup (B2), the meta's
    position (B3).  Returns (records per table, records in all)."""
    ts = tx.snapshot
    rows = list(tx.scan(CATALOG))  # one row per table: small
    catalog = txn.tree(tree_name(CATALOG), create=True)
    assert catalog is not None  # create=True
    catalog.bulk_load((key, encode_chain([(ts, row)])) for key, row in rows)
    done = [len(rows)]  # records written so far, for `progress`
    tables: dict[str, int] = {}
    for tid, name, indexes in _catalog(tx):
        entries: list[list[tuple[bytes, bytes]]] = [[] for _ in indexes]
        tree = txn.tree(tree_name(tid), create=True)
        assert tree is not None  # create=True
        tables[name] = tree.bulk_load(_chains(tx, tid, indexes, entries, done, progress))
        tree.spill()  # written now: only this table's nodes were held (cost note)
        for index, found in zip(indexes, entries):
            found.sort()
            index_tree = txn.tree(index_tree_name(index.id), create=True)
            assert index_tree is not None  # create=True
            index_tree.bulk_load(found)
            index_tree.spill()
    txn.user_meta = start.pack()
    return tables, done[0]


def _chains(
    tx: Transaction,
    tid: int,
    indexes: tuple[IndexDef, ...],
    entries: list[list[tuple[bytes, bytes]]],
    done: list[int],
    progress: Progress | None,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, one-version chain at the snapshot) of each record of table `tid`
    the transaction sees, in key order; on the way, each index's entries go
    to `entries` (the head's entry, valued with its document: V5)."""
    ts = tx.snapshot
    for key, doc in tx.scan(tid):
        if indexes:
            pk, value = decode_key(key)[0], unpack_doc(doc)
            for index, found in zip(indexes, entries):
                entry = entry_key(value, index, pk)
                if entry is not None:
                    found.append((entry, doc))
        done[0] += 1
        if progress is not None and done[0] % PROGRESS_EVERY == 0:
            progress(done[0], None)
        yield key, encode_chain([(ts, doc)])


# -- restore --------------------------------------------------------------------


def restore(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    passphrase: str | bytes | None = None,
    key: bytes | None = None,
    progress: Progress | None = None,
) -> BackupResult:
    """Check the backup at `src` and copy it to `dest` (module docstring, Restore
    1-6), so that `mvcc.open(dest)` opens its snapshot.  An encrypted backup
    needs the passphrase or key that opens it (for the check; the copy stays
    ciphertext).  `overwrite=True` replaces an existing data directory that no
    live process has open."""
    began = time.perf_counter()
    src, dest = os.path.abspath(os.fspath(src)), os.path.abspath(os.fspath(dest))
    with translate():
        if src == dest:
            raise Error(f"cannot restore {src} onto itself")
        manifest = _manifest(src)  # 1.
        replace = overwrite and _nonempty(dest)  # 2.
        if not overwrite:
            _refuse_nonempty(dest, "restore destination")
        elif replace and not os.path.isfile(os.path.join(dest, PAGES)):
            raise Error(
                f"restore destination {dest} is not empty and not an mvcc data directory "
                "(no page file): refusing to replace it"
            )
        report = check(src, passphrase=passphrase, key=key)  # 3.
        if not report.ok:
            first = report.problems[0]
            raise CorruptionError(
                f"{src} is not a sound backup ({len(report.problems)} problems); "
                f"mvcc.check: {first}",
                file=first.file,
                pgno=first.pgno,
                reason=first.reason,
                problems=list(report.problems),
            )
        with contextlib.ExitStack() as stack:
            if replace:
                _hold_unused(dest, stack)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = f"{dest}.tmp-{secrets.token_hex(4)}"
            os.mkdir(tmp)
            try:
                size = _copy(src, tmp, manifest["files"], progress)  # 4.
                _install(tmp, dest, replace=replace)  # 5., 6.
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    records = manifest.get("records", 0)
    return BackupResult(
        dest, manifest["ts"], records, size, time.perf_counter() - began, manifest.get("tables", {})
    )


def _manifest(src: str) -> dict[str, Any]:
    """The manifest of the backup at `src` (B8), or an Error saying why it is not one."""
    path = os.path.join(src, MANIFEST)
    if not os.path.isdir(src):
        raise Error(f"{src}: no such directory")
    try:
        with open(path, "rb") as f:
            manifest = json.loads(f.read())
    except FileNotFoundError:
        raise Error(
            f"{src} is not a backup (no {MANIFEST} manifest): a backup is made by db.backup(), "
            "and one that was interrupted has none"
        ) from None
    except (OSError, ValueError) as exc:
        raise CorruptionError(f"the backup manifest does not read: {exc}", file=path) from None
    try:
        if manifest["format"] != MANIFEST_FORMAT:
            raise ValueError(f"format {manifest['format']!r}, this is {MANIFEST_FORMAT}")
        files = manifest["files"]
        if type(manifest["ts"]) is not int or not isinstance(files, dict) or PAGES not in files:
            raise ValueError("no snapshot ts or no page file listed")
        for name, info in files.items():
            if not _FILES.match(name):
                raise ValueError(f"it lists {name!r}, which is no file of a backup")
            if type(info.get("size")) is not int or type(info.get("sha256")) is not str:
                raise ValueError(f"no size or hash for {name}")
            actual = os.path.getsize(os.path.join(src, name))
            if actual != info["size"]:
                raise ValueError(f"{name} has {actual} bytes, the manifest says {info['size']}")
    except FileNotFoundError as exc:
        raise CorruptionError(
            f"a file the manifest lists is missing: {exc.filename}", file=path
        ) from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CorruptionError(f"the backup manifest is not sound: {exc}", file=path) from None
    return manifest  # type: ignore[no-any-return]


def _hold_unused(dest: str, stack: contextlib.ExitStack) -> None:
    """Step 4 with overwrite: no process may have the data directory `dest` open;
    hold its `recovery` and `open` locks until the end so that none opens it
    meanwhile (lock order: recovery -> open, as an opener takes them)."""
    locks = stack.enter_context(LockSet(dest, timeout=LOCK_TIMEOUT))
    locks.recovery.acquire(LOCK_TIMEOUT)
    if not locks.open.try_acquire():
        raise Error(f"restore destination {dest} is open in another process: close it first")


def _copy(src: str, tmp: str, files: dict[str, dict[str, Any]], progress: Progress | None) -> int:
    """Restore step 4: copy and hash every file the manifest lists; fsync them
    and the directories.  Returns the bytes copied."""
    total = sum(info["size"] for info in files.values())
    done = 0
    os.mkdir(os.path.join(tmp, WAL_DIR))
    for name, info in sorted(files.items()):
        digest = hashlib.sha256()
        target = os.path.join(tmp, name)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(os.path.join(src, name), "rb") as f, os.fdopen(fd, "wb") as out:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != info["sha256"] or os.path.getsize(target) != info["size"]:
            raise CorruptionError(
                f"{name} does not match the backup manifest (SHA-256 differs): "
                "changed or damaged since the backup",
                file=os.path.join(src, name),
            )
    sync_directory(os.path.join(tmp, WAL_DIR))
    sync_directory(tmp)
    if progress is not None:
        progress(done, total)
    return done


# -- files --------------------------------------------------------------------------


def _nonempty(path: str) -> bool:
    return os.path.lexists(path) and (not os.path.isdir(path) or bool(os.listdir(path)))


def _refuse_nonempty(path: str, what: str) -> None:
    if os.path.lexists(path) and not os.path.isdir(path):
        raise Error(f"{what} {path} exists and is not a directory")
    if _nonempty(path):
        raise Error(f"{what} {path} is not empty")


def _write_file(path: str, data: bytes) -> None:
    """A new file, durable (its directory is synced by the caller)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _hashes(directory: str) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file of the backup being built (step 7)."""
    names = [n for n in (PAGES, IDS, KEY_FILE) if os.path.exists(os.path.join(directory, n))]
    names += [f"{WAL_DIR}/{n}" for n in sorted(os.listdir(os.path.join(directory, WAL_DIR)))]
    out = {}
    for name in names:
        digest = hashlib.sha256()
        size = 0
        with open(os.path.join(directory, name), "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        out[name] = {"size": size, "sha256": digest.hexdigest()}
    return out


def _install(tmp: str, dest: str, *, replace: bool = False) -> None:
    """Rename the finished `tmp` to `dest` (B7): over a missing or empty dest; with
    `replace`, a non-empty one is first moved aside and deleted after."""
    parent = os.path.dirname(dest)
    old = None
    if replace and _nonempty(dest):
        old = f"{dest}.old-{secrets.token_hex(4)}"
        os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except OSError as exc:
        if old is not None:
            os.rename(old, dest)  # put it back: dest stays what it was
        raise Error(
            f"{dest} is not empty: it filled while being written ({exc.strerror})"
        ) from None
    sync_directory(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        sync_directory(parent)
