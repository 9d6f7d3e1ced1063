"""Structural checker of a page file (bbolt's Tx.Check): run after every test.

It reads every page reachable from one meta page, and the freelist, from the
device (not from the cache), and reports every problem it finds instead of
stopping at the first.

Checks
(C1) Every page unseals: checksum or GCM tag, its own page number, and the
     generation its parent (or the meta) records for it (P4, B3).
(C2) Keys ascend strictly inside each node and stay within the separators
     of the parent (B1); all leaves are at one depth (B2); a child's
     generation is not newer than its parent's.
(C3) Every page from 2 to npages - 1 is reached exactly once: by a tree
     (node or overflow run), by the freelist run, or as a free page.  Nothing
     leaks, nothing is used twice (F1), nothing points past the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .btree import Node
from .errors import CorruptPage
from .format import PGNO
from .pagefile import Meta, PageFile

__all__ = ["CheckReport", "Problem", "check_pagefile"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where, in which tree, and why."""

    file: str
    pgno: int | None
    tree: str
    reason: str

    def __str__(self) -> str:
        where = f"page {self.pgno}" if self.pgno is not None else "file"
        return f"{self.file}: {where} ({self.tree}): {self.reason}"


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    pages: int = 0
    trees: int = 0
    keys: int = 0
    free_pages: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = (
            f"{'ok' if self.ok else 'PROBLEMS'}: {self.pages} pages, {self.trees} trees, "
            f"{self.keys} keys, {self.free_pages} free pages"
        )
        return "\n".join([head, *map(str, self.problems)])


class _Checker:
    def __init__(self, pf: PageFile, meta: Meta) -> None:
        self.pf = pf
        self.meta = meta
        self.report = CheckReport()
        self.owner: dict[int, str] = {}

    def problem(self, pgno: int | None, tree: str, reason: str) -> None:
        self.report.problems.append(Problem(self.pf.name, pgno, tree, reason))

    def claim(self, pgno: int, npages: int, tree: str, what: str) -> bool:
        ok = True
        for p in range(pgno, pgno + npages):
            if p < 2 or p >= self.meta.npages:
                self.problem(
                    p, tree, f"{what} points outside the pages in use (npages {self.meta.npages})"
                )
                ok = False
            elif p in self.owner:
                self.problem(p, tree, f"{what} reaches a page already used as {self.owner[p]}")
                ok = False
            else:
                self.owner[p] = f"{what} of {tree}"
        return ok

    def load(self, pgno: int, gen: int, tree: str) -> Node | None:
        try:
            return self.pf._load(pgno, gen)
        except CorruptPage as exc:
            self.problem(pgno, tree, exc.reason)
            return None

    def tree(self, root: tuple[int, int], name: str, on_value: Any = None) -> None:
        if not root[0]:
            return
        self.report.trees += 1
        leaf_depths: set[int] = set()
        stack: list[tuple[int, int, bytes | None, bytes | None, int, int]] = [
            (root[0], root[1], None, None, 0, self.meta.gen)
        ]
        while stack:
            pgno, gen, lo, hi, depth, parent_gen = stack.pop()
            if not self.claim(pgno, 1, name, "node"):
                continue
            if gen > parent_gen:
                self.problem(
                    pgno, name, f"generation {gen} is newer than its parent's {parent_gen}"
                )
            node = self.load(pgno, gen, name)
            if node is None:
                continue
            keys = node.keys
            if any(not isinstance(k, bytes) for k in keys):
                self.problem(pgno, name, "a key is not bytes")
                continue
            if any(a >= b for a, b in zip(keys, keys[1:])):
                self.problem(pgno, name, "keys are not strictly ascending")
            if keys and lo is not None and keys[0] < lo:
                self.problem(pgno, name, "a key is below its parent's separator")
            if keys and hi is not None and keys[-1] >= hi:
                self.problem(pgno, name, "a key is not below the next separator")
            if node.kids is None:
                leaf_depths.add(depth)
                self.report.keys += len(keys)
                for key, v in zip(keys, node.vals):
                    if v.__class__ is not bytes:
                        self.overflow(v, name)
                    elif on_value is not None:
                        on_value(key, v, pgno)
                continue
            if len(node.kids) < 2:
                self.problem(pgno, name, "a branch with fewer than two children")
            bounds = [lo, *keys, hi]
            for i, (kid, kgen) in enumerate(zip(node.kids, node.gens)):
                stack.append((kid, kgen, bounds[i], bounds[i + 1], depth + 1, gen))
        if len(leaf_depths) > 1:
            self.problem(root[0], name, f"leaves at different depths {sorted(leaf_depths)}")

    def overflow(self, ref: Any, name: str) -> None:
        try:
            pgno, gen, npages, length = ref
        except (TypeError, ValueError):
            self.problem(None, name, f"malformed overflow reference {ref!r}")
            return
        if not self.claim(pgno, npages, name, "overflow run"):
            return
        try:
            self.pf.read_run(pgno, gen, npages, length)
        except CorruptPage as exc:
            self.problem(exc.pgno, name, exc.reason)

    def run(self) -> CheckReport:
        meta = self.meta
        self.pf.clear_cache()  # read the pages themselves, not what was decoded before
        trees: list[tuple[str, tuple[int, int]]] = []

        def catalog_value(key: bytes, value: bytes, pgno: int) -> None:
            if len(value) != PGNO.size:
                self.problem(pgno, "catalog", f"entry {key!r} is not a tree reference")
            else:
                trees.append((key.decode("utf-8", "backslashreplace"), PGNO.unpack(value)))

        self.tree(meta.catalog, "catalog", catalog_value)
        for name, root in trees:
            self.tree(root, name)
        fl_pgno, _gen, fl_n, _len = meta.freelist
        if fl_pgno and self.claim(fl_pgno, fl_n, "freelist", "freelist run"):
            try:
                freelist = self.pf.freelist(meta)
            except CorruptPage as exc:
                self.problem(exc.pgno, "freelist", exc.reason)
            else:
                for pgno, gen in freelist.pages():
                    if gen > meta.gen:
                        self.problem(pgno, "freelist", f"freed at future generation {gen}")
                    self.claim(pgno, 1, "freelist", "free page")
                    self.report.free_pages += 1
        missing = [p for p in range(2, meta.npages) if p not in self.owner]
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
            self.problem(
                missing[0], "file", f"{len(missing)} pages neither reachable nor free: {shown}"
            )
        self.report.pages = meta.npages
        self.pf.clear_cache()
        return self.report


def check_pagefile(pf: PageFile, meta: Meta | None = None) -> CheckReport:
    """Check the structure reachable from `meta` (the newest on disk by default)."""
    return _Checker(pf, meta or pf.read_meta()).run()
