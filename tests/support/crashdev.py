"""A device that crashes on cue, in the manner of SQLite's test6.c.

Writes since the last sync are held back.  At the chosen operation the device
raises `SimulatedCrash`; `image()` then returns what a disk might hold after a
power cut: everything synced, plus any subset of the unsynced writes, applied
in any order, some of them torn at a 512-byte sector boundary.
"""

from __future__ import annotations

import random

from storage.device import MemoryDevice

SECTOR = 512


class SimulatedCrash(Exception):
    """Raised by the device at the crash point."""


class CrashDevice:
    def __init__(
        self, durable: bytes = b"", *, crash_at: int | None = None, name: str = "crash"
    ) -> None:
        self.name = name
        self.durable = bytearray(durable)
        self.cache = bytearray(durable)  # what reads see: durable + pending, in order
        self.pending: list[tuple[str, int, bytes]] = []
        self.ops = 0
        self.crash_at = crash_at
        self.crashed = False

    def _tick(self) -> None:
        if self.crashed:
            raise SimulatedCrash("the device already crashed")
        self.ops += 1
        if self.crash_at is not None and self.ops >= self.crash_at:
            self.crashed = True
            raise SimulatedCrash(f"crash at operation {self.ops}")

    @staticmethod
    def _apply(buf: bytearray, op: str, offset: int, data: bytes) -> None:
        if op == "write":
            end = offset + len(data)
            if end > len(buf):
                buf.extend(bytes(end - len(buf)))
            buf[offset:end] = data
        elif offset < len(buf):
            del buf[offset:]
        else:
            buf.extend(bytes(offset - len(buf)))

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.cache[offset : offset + size])

    def write(self, offset: int, data: bytes) -> None:
        self._tick()
        self.pending.append(("write", offset, bytes(data)))
        self._apply(self.cache, "write", offset, data)

    def truncate(self, size: int) -> None:
        self._tick()
        self.pending.append(("truncate", size, b""))
        self._apply(self.cache, "truncate", size, b"")

    def sync(self) -> None:
        self._tick()
        for op in self.pending:
            self._apply(self.durable, *op)
        self.pending.clear()

    def size(self) -> int:
        return len(self.cache)

    def close(self) -> None:
        return None

    def image(self, rng: random.Random) -> bytes:
        """One possible disk content after a crash now."""
        disk = bytearray(self.durable)
        ops = list(self.pending)
        rng.shuffle(ops)  # unsynced writes may reach the disk in any order
        for op, offset, data in ops:
            fate = rng.random()
            if fate < 0.3:
                continue  # dropped
            if op == "write" and fate < 0.6 and len(data) > SECTOR:
                # torn: only some sectors of the write made it
                for s in range(0, len(data), SECTOR):
                    if rng.random() < 0.5:
                        self._apply(disk, "write", offset + s, data[s : s + SECTOR])
                continue
            self._apply(disk, op, offset, data)
        return bytes(disk)


def memory_device(image: bytes) -> MemoryDevice:
    dev = MemoryDevice("recovered")
    dev.data = bytearray(image)
    return dev
