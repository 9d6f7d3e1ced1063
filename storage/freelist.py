"""The freelist: pages no tree reaches, by the generation that freed them.

A page freed by the commit of generation g was reachable from the roots of
generations before g.  A reader holding a root of generation r may read any page
reachable at r, so the page may be written again only when every root still in
use is of generation >= g.  The caller states that bound (the *horizon*) when it
begins a write; the freelist never guesses it.

Invariants
(F1) A page is in at most one of: reachable from the current meta, pending at
     some generation, ready.  (storage/check.py verifies it after every test.)
(F2) A pending page becomes ready only through `release(horizon)` with
     horizon >= the generation that freed it.  Ready pages are stored under
     generation 0: once no root of generation >= g reaches a page, no later root
     will either (only allocation makes a page reachable again).
(F3) The freelist is stored copy-on-write like every other structure: each
     commit writes it to pages that are ready, and frees the run of the previous
     copy at its own generation, so the fallback meta's freelist stays intact.

Encoding (the body of a freelist run, msgpack): an array of groups, each group
an array `[gen, first_pgno, delta, delta, ...]` of that generation's pages in
ascending order, deltas between neighbours (small ints pack to one byte).
"""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
from sortedcontainers import SortedList

__all__ = ["Freelist"]


class Freelist:
    """Free pages: `ready` may be allocated now; `pending[g]` waits for the horizon."""

    __slots__ = ("pending", "ready")

    def __init__(self) -> None:
        self.ready: SortedList = SortedList()
        self.pending: dict[int, list[int]] = {}

    # -- encoding ------------------------------------------------------------

    @classmethod
    def decode(cls, data: bytes) -> Freelist:
        """Inverse of `encode`; raises ValueError on a malformed body."""
        fl = cls()
        groups = msgpack.unpackb(data, use_list=True)
        if not isinstance(groups, list):
            raise ValueError("freelist body is not an array")
        for group in groups:
            if not isinstance(group, list) or len(group) < 2:
                raise ValueError("malformed freelist group")
            gen, pgno, *deltas = group
            pages = [pgno]
            for d in deltas:
                if not isinstance(d, int) or d <= 0:
                    raise ValueError("freelist pages are not ascending")
                pgno += d
                pages.append(pgno)
            if gen == 0:
                fl.ready.update(pages)
            else:
                fl.pending.setdefault(gen, []).extend(pages)
        return fl

    def encode(self) -> bytes:
        groups = []
        for gen, pages in [(0, list(self.ready)), *sorted(self.pending.items())]:
            if not pages:
                continue
            pages = sorted(pages)
            group = [gen, pages[0]]
            group.extend(b - a for a, b in zip(pages, pages[1:]))
            groups.append(group)
        data: bytes = msgpack.packb(groups)
        return data

    # -- bookkeeping ---------------------------------------------------------

    def release(self, horizon: int) -> None:
        """Make ready every page freed at a generation <= horizon (F2)."""
        for gen in [g for g in self.pending if g <= horizon]:
            self.ready.update(self.pending.pop(gen))

    def free(self, gen: int, pgno: int, npages: int = 1) -> None:
        """Pages that the commit of `gen` no longer reaches."""
        self.pending.setdefault(gen, []).extend(range(pgno, pgno + npages))

    def free_ready(self, pgno: int, npages: int = 1) -> None:
        """Pages allocated and dropped within one uncommitted write: no root ever saw them."""
        self.ready.update(range(pgno, pgno + npages))

    def allocate(self, npages: int = 1) -> int | None:
        """Take the lowest ready run of `npages` consecutive pages, or None.

        Lowest first, so that the end of the file empties and can be truncated.
        """
        ready = self.ready
        if npages == 1:
            return ready.pop(0) if ready else None
        start = self.lowest_run(npages)
        if start is not None:
            for p in range(start, start + npages):
                ready.remove(p)
        return start

    def lowest_run(self, npages: int) -> int | None:
        """Where `allocate(npages)` would take its run, without taking it."""
        ready = self.ready
        if npages == 1:
            return ready[0] if ready else None
        run_start, run_len, prev = -1, 0, -2
        for pgno in ready:
            if pgno == prev + 1:
                run_len += 1
            else:
                run_start, run_len = pgno, 1
            prev = pgno
            if run_len == npages:
                return run_start
        return None

    def trim_tail(self, npages: int) -> int:
        """Drop ready pages at the end of the file; return the new page count."""
        ready = self.ready
        while ready and ready[-1] == npages - 1:
            ready.pop()
            npages -= 1
        return npages

    def __len__(self) -> int:
        return len(self.ready) + sum(len(p) for p in self.pending.values())

    def pages(self) -> Iterator[tuple[int, int]]:
        """Every free page as (pgno, generation that freed it; 0 for ready)."""
        for pgno in self.ready:
            yield pgno, 0
        for gen, pages in self.pending.items():
            for pgno in pages:
                yield pgno, gen

    def copy(self) -> Freelist:
        fl = Freelist()
        fl.ready = SortedList(self.ready)
        fl.pending = {g: list(p) for g, p in self.pending.items()}
        return fl
