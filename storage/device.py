"""Byte devices under the page file: an OS file and an in-memory buffer.

The page file never calls `os` directly; it reads and writes through a
`Device`, so the same page-file code runs on a real file, on memory (fast
property tests), and on the crash simulator of the tests, which drops, tears or
reorders writes that were not yet synced (in the manner of SQLite's test6.c).

Invariants
(D1) `write` followed by `sync` returning means the bytes survive a crash;
     without the `sync`, a crash may keep, drop or tear them.
(D2) `read` past the end returns fewer bytes; it never raises for that.
(D3) An error from fsync is never swallowed: it propagates, and the caller
     treats the device as failed (PostgreSQL's fsync lesson).
"""

from __future__ import annotations

import os
from typing import Protocol

__all__ = ["Device", "FileDevice", "MemoryDevice", "sync_directory"]


class Device(Protocol):
    """What the page file needs of the bytes below it."""

    name: str

    def read(self, offset: int, size: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def sync(self) -> None: ...
    def size(self) -> int: ...
    def truncate(self, size: int) -> None: ...
    def close(self) -> None: ...


def sync_directory(path: str) -> None:
    """fsync a directory so a file created, renamed or deleted in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# fdatasync skips the inode timestamps; macOS lacks it, where fsync is the fallback.
_datasync = getattr(os, "fdatasync", os.fsync)


class FileDevice:
    """A file opened once for the life of the object; positional I/O only."""

    def __init__(self, path: str, *, create: bool = True) -> None:
        self.name = path
        exists = os.path.exists(path)
        flags = os.O_RDWR | (os.O_CREAT if create else 0) | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, 0o600)
        if not exists:
            # A new file is only durable once its directory entry is (D1).
            sync_directory(os.path.dirname(os.path.abspath(path)))

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n

    def sync(self) -> None:
        _datasync(self._fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class MemoryDevice:
    """A growable bytearray: the in-memory store for tests and temporary trees."""

    def __init__(self, name: str = "<memory>") -> None:
        self.name = name
        self.data = bytearray()

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset : offset + size])

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data

    def sync(self) -> None:
        return None

    def size(self) -> int:
        return len(self.data)

    def truncate(self, size: int) -> None:
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(bytes(size - len(self.data)))

    def close(self) -> None:
        return None
