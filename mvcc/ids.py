"""Auto-assigned integer ids: blocks handed out under the sequence lock.

`<dir>/ids` holds, per table id (as a decimal str), the first id never handed out (msgpack map,
written whole to a temporary file, synced, renamed: docs/format.md).  A
process takes a block of BLOCK ids at a time under the `sequence` lock and
hands them out locally, so inserts from many processes never conflict on an
id and the file is written once per BLOCK inserts.

Invariants
(Q1) A block is handed out at most once: the file is read and advanced under
     the sequence lock, and is durable (durability "full" and "normal")
     before the block is used.  Ids of a block a process did not use are lost,
     as in a PostgreSQL sequence with a cache.
(Q2) Ids grow within a process; across processes they interleave by block.
(Q3) After `advance(tid, past)` no block handed out starts at or below `past`:
     an import that kept int keys moves the sequence past the largest, so
     later inserts do not step over its keys one by one.
"""

from __future__ import annotations

import os
from typing import Final

from locking.filelock import FileLock
from storage.codec import pack, unpack
from storage.device import sync_directory
from storage.errors import CorruptPage

__all__ = ["BLOCK", "IdAllocator"]

BLOCK: Final = 256


class IdAllocator:
    """Local blocks of ids per table id, refilled from the shared file (Q1, Q2)."""

    def __init__(self, path: str, lock: FileLock, *, timeout: float | None, sync: bool) -> None:
        self.path = path
        self.lock = lock
        self.timeout = timeout
        self.sync = sync
        self._blocks: dict[int, tuple[int, int]] = {}  # tid -> (next, end)

    def next(self, tid: int) -> int:
        nxt, end = self._blocks.get(tid, (0, 0))
        if nxt >= end:
            nxt, end = self._take_block(tid)
        self._blocks[tid] = (nxt + 1, end)
        return nxt

    def advance(self, tid: int, past: int) -> None:
        """Hand out only ids above `past` for table `tid` from now on (an import
        kept its records' keys: Q3).  Blocks other processes already hold are
        not recalled; `Table.insert` steps over an id that is taken."""
        self.lock.acquire(self.timeout)
        try:
            table = self._read()
            if table.get(str(tid), 1) <= past:
                table[str(tid)] = past + 1
                self._write(table)
        finally:
            self.lock.release()
        if self._blocks.get(tid, (past + 1, 0))[0] <= past:
            del self._blocks[tid]  # this process's block is below the new start

    def recorded(self) -> dict[str, int]:
        """The file's map: per table id (a decimal str), the first id never handed
        out (a backup carries it over: backup.py B6)."""
        return self._read()

    def _take_block(self, tid: int) -> tuple[int, int]:
        self.lock.acquire(self.timeout)
        try:
            table = self._read()
            first = max(1, table.get(str(tid), 1))
            table[str(tid)] = first + BLOCK
            self._write(table)
        finally:
            self.lock.release()
        return first, first + BLOCK

    def _read(self) -> dict[str, int]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        try:
            table = unpack(data)
            if type(table) is not dict or not all(
                type(k) is str and type(v) is int for k, v in table.items()
            ):
                raise ValueError("not a map of table ids to ints")
        except ValueError as exc:
            raise CorruptPage(
                f"the id sequence file does not decode: {exc}", file=self.path
            ) from exc
        return table

    def _write(self, table: dict[str, int]) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "wb") as f:
            f.write(pack(table))
            if self.sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        if self.sync:
            sync_directory(os.path.dirname(self.path))
