"""List-append anomaly checker: infer isolation anomalies from an observed history.

Owns the judgement of a list-append history, as Elle does it (Kingsbury and
Alvaro, "Elle: Inferring Isolation Anomalies from Experimental Observations").
Each transaction appends unique integers to lists named by string keys and reads
whole lists; because an append never overwrites, a read names every write before
it, so the order of versions and the dependencies between transactions can be
recovered from the reads alone. Pure Python, standard library only: the harness
records a history of `Txn`, and `check` returns the `Anomaly` list (empty when
the history is consistent).

Input
    `Txn.status` is "ok" (committed), "fail" (known aborted) or "info" (unknown:
    it may or may not have committed, and its reads are unknown).
    `Txn.ops` holds ("append", key, value) and ("r", key, values or None); a read
    of None is the empty list. A value appended to one key is appended once in
    the whole history; a history that breaks this, or has two transactions with
    one id, is a harness bug and raises ValueError.

Invariants
(L1) Only reads of "ok" transactions are evidence. Reads of "info" transactions
     are unknown and reads of "fail" transactions were never acknowledged; both
     are ignored.
(L2) The version order of a key is its longest ok read (the first one in history
     order on a tie). Every other ok read of the key must be a prefix of it, or
     it is an "incompatible-order" naming that reader and the longest reader.
(L3) A read never holds one value twice ("duplicate-elements"), never a value
     appended by a "fail" transaction ("G1a"), and never ends in a value that
     another transaction followed with a later append to the same key ("G1b").
     A fail writer's value is G1a only, not also G1b.
(L4) Within one ok transaction a read of a key agrees with what its earlier
     operations on the key imply: equal to its last read of the key plus its
     appends since, or, when it had not read the key, ending in its appends to
     it ("internal").
(L5) The dependency graph has a node for every ok and info transaction and none
     for a fail one. Its edges come only from ok reads and version orders, so an
     info transaction whose appends no one read has no edge and cannot be part
     of an anomaly; one whose append was read is treated as committed. Edges,
     for a key with version order v0 v1 ... (w(v) = the appender of v):
       ww  w(vi) -> w(vi+1);
       wr  w(last element of a read) -> the reader;
       rw  the reader of a prefix of length n -> w(vn) (a read of the empty list
           gives the rw edge to w(v0)).
     A value repeated in the order is not a second version: the edges follow
     the order without its repeats. Self edges, and edges through values no
     transaction appended, are dropped.
     An incompatible read (L2) keeps its wr edge (the reader did see that
     value) but gives no rw edge (its place in the order is unknown).
(L6) A cycle is classified by its edges: only ww is "G0"; ww and wr with at
     least one wr is "G1c"; exactly one rw is "G-single"; two or more rw is
     "G2". G0, G1c and G-single are reported always (snapshot isolation forbids
     them); G2 only when `serializable` is true.
(L7) The G0, G1c and G-single searches are exact: an SCC that holds such a cycle
     reports one. So under `serializable` every cyclic SCC reports at least one
     anomaly (a cycle has 0, 1 or more rw edges). G2 is exact in an SCC with no
     G-single; in one that has a G-single it is looked for among the shortest
     cycles through a few rw edges and may go unreported, the SCC being
     reported already.
(L8) Each anomaly is reported once: a cycle kind once per SCC, "internal" and
     "duplicate-elements" once per (reader, key), the others once per (reader,
     other transaction, key).

Algorithm
    1. Index the history: the appender of each (key, value), the last value each
       transaction appended to each key, the ok reads of each key in history
       order. Check each ok transaction against its own operations (L4).
    2. For each key, take the version order (L2); one pass over it finds its
       first duplicate, its first value from a fail writer, and adds its ww
       edges. A read that is a prefix of the order holds a duplicate or an
       aborted value exactly when it reaches that far, so only reads that do, or
       are not prefixes, are scanned element by element. Then check each read's
       last element (G1b) and add its wr and rw edges.
    3. Tarjan's algorithm splits the graph into strongly connected components;
       every cycle lies inside one. For each component of more than one node:
       - G0 / G1c: a ww (wr) edge a -> b lies on a cycle of ww (ww and wr)
         edges exactly when a and b share a component of that subgraph.
       - G-single: an rw edge a -> b closes a cycle exactly when b reaches a
         over ww and wr edges; component reachability over that subgraph is a
         bitset per component, computed in Tarjan's emission order (a
         component is emitted after every component it reaches).
       - G2: the shortest cycle through an rw edge over all edges, labelling a
         step rw when it can be.
       A breadth-first search from b to a gives the shortest path closing each
       of the first few qualifying edges, and the shortest of those cycles is
       reported, in order, with each edge's type and key.
    Cost: linear in the operations plus the elements of the version orders
    (reads are compared with a list compare, in C); cycle search runs only in
    cyclic components.
"""

from __future__ import annotations

import gc
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "Anomaly", "Txn", "check"]

KINDS = (
    "G0",
    "G1a",
    "G1b",
    "G1c",
    "G-single",
    "G2",
    "duplicate-elements",
    "incompatible-order",
    "internal",
)
STATUSES = ("ok", "fail", "info")
EDGE_TYPES = ("ww", "wr", "rw")
# Qualifying edges whose closing path is searched per (SCC, kind); the shortest
# cycle among them is reported. Trying every edge was rejected: a history with
# no isolation at all makes one SCC of every transaction, and a search per edge
# would be quadratic in its size.
_TRIES = 8
_SHOW = 8  # a list longer than this is shown by its ends

Op = tuple[Any, ...]
_Step = tuple[int, str, str]  # (node, edge type, key): an edge from node to the next in a cycle


@dataclass(frozen=True)
class Txn:
    """One transaction as the harness recorded it (see the module docstring, Input)."""

    id: str
    status: str
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class Anomaly:
    """One violation: its kind (one of KINDS), the transactions, and what was seen."""

    kind: str
    txns: tuple[str, ...]
    explanation: str


def check(history: Iterable[Txn], *, serializable: bool) -> list[Anomaly]:
    """Every anomaly in `history`; G2 counts only when `serializable` (L6).

    >>> t1 = Txn("t1", "ok", (("r", "x", None), ("append", "y", 1)))
    >>> t2 = Txn("t2", "ok", (("r", "y", None), ("append", "x", 1)))
    >>> t3 = Txn("t3", "ok", (("r", "x", [1]), ("r", "y", [1])))
    >>> check([t1, t2, t3], serializable=False)
    []
    >>> [(a.kind, a.explanation) for a in check([t1, t2, t3], serializable=True)]
    [('G2', 't1 -rw(x)-> t2 -rw(y)-> t1')]
    """
    # The cyclic collector is off while checking, as `timeit` turns it off: the check makes
    # no reference cycles, yet the objects it makes trigger full collections, each of which
    # walks every value of every read in the history (2.7 times the check's own time on a
    # history of 20,000 transactions reading 8 million values).
    collecting = gc.isenabled()
    gc.disable()
    try:
        h = _History(list(history))
        anomalies = [a for txn in h.txns if txn.status == "ok" for a in _internal(txn)]
        graph = _Graph(h)
        for key, reads in h.reads.items():
            anomalies += _check_key(h, graph, key, reads)
        return anomalies + _cycles(graph, serializable)
    finally:
        if collecting:
            gc.enable()


# -- step 1: the index, and each transaction against itself (L4) ---------------------------


class _History:
    """The history indexed by transaction position (a node of the graph)."""

    def __init__(self, txns: list[Txn]) -> None:
        self.txns = txns
        self.writer: dict[tuple[str, int], int] = {}  # (key, value) -> appender
        self.final: dict[tuple[int, str], int] = {}  # (txn, key) -> its last append there
        self.aborted: dict[str, set[int]] = {}  # key -> the values fail txns appended to it
        self.reads: dict[str, list[tuple[int, list[int]]]] = {}  # key -> ok reads in order
        ids: set[str] = set()
        for i, txn in enumerate(txns):
            if txn.status not in STATUSES:
                raise ValueError(f"{txn.id}: status {txn.status!r} is not one of {STATUSES}")
            if txn.id in ids:
                raise ValueError(f"two transactions have the id {txn.id!r}")
            ids.add(txn.id)
            for op in txn.ops:
                self._add(i, txn, op)

    def _add(self, i: int, txn: Txn, op: Op) -> None:
        f, key, value = op
        if f == "append":
            if (key, value) in self.writer:
                other = self.txns[self.writer[key, value]].id
                raise ValueError(f"{txn.id} and {other} both append {value!r} to {key!r}")
            self.writer[key, value] = i
            self.final[i, key] = value
            if txn.status == "fail":
                self.aborted.setdefault(key, set()).add(value)
        elif f == "r":
            if txn.status == "ok":  # (L1)
                self.reads.setdefault(key, []).append((i, _as_list(value)))
        else:
            raise ValueError(f"{txn.id}: unknown operation {op!r}")


def _internal(txn: Txn) -> list[Anomaly]:
    """The reads of `txn` that disagree with its own earlier operations (L4)."""
    known: dict[str, list[int]] = {}  # key -> the whole list as this txn last knew it
    appended: dict[str, list[int]] = {}  # key -> appends before any read of the key
    wrong: set[str] = set()  # keys already reported
    out = []
    for f, key, value in txn.ops:
        if f == "append":
            if key in known:
                known[key] = [*known[key], value]  # a new list: the read's is the history's
            else:
                appended.setdefault(key, []).append(value)
            continue
        values = _as_list(value)
        expected = known.get(key)
        tail = appended.get(key, [])
        if expected is not None and values != expected:
            why = _show(expected)
        elif expected is None and tail and values[-len(tail) :] != tail:
            why = f"a list ending in {_show(tail)}"
        else:
            why = ""
        if why and key not in wrong:  # (L8)
            wrong.add(key)
            out.append(
                Anomaly(
                    "internal",
                    (txn.id,),
                    f"{txn.id} read {key}={_show(values)} but its own earlier operations "
                    f"on {key} imply {why}",
                )
            )
        known[key] = values
        appended.pop(key, None)
    return out


# -- step 2: per key, the version order, the reads against it, and the edges (L2, L3, L5) ---


class _Graph:
    """Dependency edges between transactions; adj[type][a][b] = the key that gave a -> b."""

    def __init__(self, h: _History) -> None:
        self.names = [txn.id for txn in h.txns]
        self.is_node = [txn.status != "fail" for txn in h.txns]  # (L5)
        self.adj: dict[str, list[dict[int, str]]] = {t: [{} for _ in h.txns] for t in EDGE_TYPES}

    def add(self, kind: str, a: int | None, b: int | None, key: str) -> None:
        if a is not None and b is not None and a != b and self.is_node[a] and self.is_node[b]:
            self.adj[kind][a].setdefault(b, key)  # the first key is enough to explain the edge

    def successors(self, v: int, types: Sequence[str], members: set[int]) -> Iterator[int]:
        return (w for t in types for w in self.adj[t][v] if w in members)


@dataclass(frozen=True)
class _Order:
    """The version order of one key (L2), with what one pass over it finds."""

    key: str
    reader: int  # the transaction whose read it is
    values: list[int]
    dup_at: int  # the first position holding a value seen before, or len(values)
    failed_at: int  # the first position holding a fail writer's value, or len(values)


def _check_key(
    h: _History, g: _Graph, key: str, reads: list[tuple[int, list[int]]]
) -> list[Anomaly]:
    """Step 2 for one key: the version order, each ok read against it, and the edges."""
    longest, values = max(reads, key=lambda read: len(read[1]))  # the first longest (L2)
    aborted = h.aborted.get(key, set())
    failed = (n for n, v in enumerate(values) if v in aborted) if aborted else iter(())
    dup_at = _first_duplicate(values)
    order = _Order(key, longest, values, dup_at, next(failed, len(values)))
    # The edges follow the order without its repeats: a duplicate (reported below) is not a
    # second version, and an rw edge to the appender of a value the reader saw would be false.
    distinct = values if dup_at == len(values) else list(dict.fromkeys(values))
    writers = [h.writer.get((key, v)) for v in distinct]
    for a, b in zip(writers, writers[1:]):
        g.add("ww", a, b, key)
    out: list[Anomaly] = []
    reported: set[tuple[str, int, int]] = set()  # (kind, reader, other) (L8)
    for reader, read in reads:
        n = len(read)
        prefix = read is values or (n <= len(values) and read == values[:n])
        for kind, other, why in _faults(h, g, order, reader, read, prefix):
            if (kind, reader, other) not in reported:
                reported.add((kind, reader, other))
                ids = (g.names[reader], g.names[other]) if other != reader else (g.names[reader],)
                out.append(Anomaly(kind, ids, why))
        if read:
            g.add("wr", h.writer.get((key, read[-1])), reader, key)
        seen = n if n <= dup_at else len(set(read))  # a prefix's distinct values lead `distinct`
        if prefix and seen < len(distinct):
            g.add("rw", reader, writers[seen], key)
    return out


def _faults(
    h: _History, g: _Graph, order: _Order, reader: int, read: list[int], prefix: bool
) -> Iterator[tuple[str, int, str]]:
    """(kind, the other transaction, explanation) for each way one ok read is wrong (L2, L3)."""
    key, n = order.key, len(read)

    def seen() -> str:  # formatted only for a fault: most reads have none
        return f"{g.names[reader]} read {key}={_show(read)}"

    if not prefix:
        at = _common_prefix(read, order.values)
        yield (
            "incompatible-order",
            order.reader,
            f"{seen()}, which is not a prefix of {g.names[order.reader]}'s read "
            f"{key}={_show(order.values)} (they differ at position {at})",
        )
    # a prefix of the order holds a duplicate or an aborted value only if it reaches that far
    if (n > order.dup_at or not prefix) and len(set(read)) < n:
        dups = sorted(v for v, c in Counter(read).items() if c > 1)
        yield "duplicate-elements", reader, f"{seen()}, holding {_show(dups)} more than once"
    if n > order.failed_at or not prefix:
        for writer, vals in _aborted(h, key, read).items():
            yield (
                "G1a",
                writer,
                f"{seen()}, holding {_show(vals)} appended by aborted {g.names[writer]}",
            )
    last = h.writer.get((key, read[-1])) if read else None
    if last is not None and last != reader and h.txns[last].status != "fail":
        final = h.final[last, key]
        if final != read[-1]:
            yield (
                "G1b",
                last,
                f"{seen()}, ending in {read[-1]}, an intermediate append of {g.names[last]}, "
                f"whose final append to {key} is {final}",
            )


def _first_duplicate(values: list[int]) -> int:
    """The position of the first value seen before in `values`, or len(values)."""
    seen: set[int] = set()
    for n, v in enumerate(values):
        if v in seen:
            return n
        seen.add(v)
    return len(values)


def _aborted(h: _History, key: str, values: list[int]) -> dict[int, list[int]]:
    """The values of `values` appended by fail transactions, grouped by appender."""
    out: dict[int, list[int]] = {}
    for v in sorted(h.aborted.get(key, set()).intersection(values), key=values.index):
        out.setdefault(h.writer[key, v], []).append(v)
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    """The length of the longest common prefix of `a` and `b`, by bisection over slice
    compares (in C) rather than a Python loop over a read of thousands of values."""
    lo, hi = 0, min(len(a), len(b))  # a[:lo] == b[:lo]; a[:hi + 1] != b[:hi + 1] or hi is max
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _as_list(values: Sequence[int] | None) -> list[int]:
    """A read's values as a list, not copied when they are one already (nothing changes it)."""
    return values if isinstance(values, list) else list(values or ())


def _show(values: Sequence[int]) -> str:
    if len(values) <= _SHOW:
        return "[" + ", ".join(map(str, values)) + "]"
    head = ", ".join(map(str, values[:3]))
    tail = ", ".join(map(str, values[-3:]))
    return f"[{head}, ..., {tail}] ({len(values)} values)"


# -- step 3: cycles (L6, L7) ---------------------------------------------------------------


def _cycles(g: _Graph, serializable: bool) -> list[Anomaly]:
    everyone = set(range(len(g.names)))
    sccs = _sccs(range(len(g.names)), lambda v: g.successors(v, EDGE_TYPES, everyone))
    out = []
    for scc in sorted(sorted(c) for c in sccs if len(c) > 1):
        members = set(scc)
        found = [
            ("G0", _one_special(g, members, "ww", ("ww",))),
            ("G1c", _one_special(g, members, "wr", ("ww", "wr"))),
            ("G-single", _one_special(g, members, "rw", ("ww", "wr"))),
        ]
        if serializable:
            found.append(("G2", _multi_rw(g, members)))
        out += [_cycle_anomaly(g, kind, cycle) for kind, cycle in found if cycle]
    return out


def _edges(g: _Graph, kind: str, members: set[int]) -> list[tuple[int, int, str]]:
    return [
        (a, b, key) for a in sorted(members) for b, key in g.adj[kind][a].items() if b in members
    ]


def _one_special(
    g: _Graph, members: set[int], special: str, base: tuple[str, ...]
) -> list[_Step] | None:
    """The shortest found cycle of one `special` edge closed by a path of `base` edges."""
    edges = _edges(g, special, members)
    if not edges:
        return None
    comps = _sccs(sorted(members), lambda v: g.successors(v, base, members))
    comp_of = {v: c for c, nodes in enumerate(comps) for v in nodes}
    # b reaches a over base edges for certain when they share a component of the base graph;
    # when the special edge is itself a base edge, only then (it would merge their components)
    hits = [(a, b, key) for a, b, key in edges if comp_of[a] == comp_of[b]]
    if not hits and special not in base:
        reach = _reach(g, comps, comp_of, base, members)
        hits = [(a, b, key) for a, b, key in edges if reach[comp_of[b]] >> comp_of[a] & 1]
    cycles = [[(a, special, key), *_path(g, b, a, base, members)] for a, b, key in hits[:_TRIES]]
    return min(cycles, key=len, default=None)


def _multi_rw(g: _Graph, members: set[int]) -> list[_Step] | None:
    """A cycle with two or more rw edges, if the shortest through one of a few rw edges is one."""
    for a, b, key in _edges(g, "rw", members)[:_TRIES]:
        cycle = [(a, "rw", key), *_path(g, b, a, ("rw", "ww", "wr"), members)]
        if sum(t == "rw" for _, t, _ in cycle) >= 2:
            return cycle
    return None


def _reach(
    g: _Graph,
    comps: list[list[int]],
    comp_of: dict[int, int],
    base: tuple[str, ...],
    members: set[int],
) -> list[int]:
    """Per component, the bitset of the components it reaches over `base` edges."""
    reach = [0] * len(comps)
    for c, nodes in enumerate(comps):  # Tarjan emits a component after all it reaches
        bits = 1 << c
        for v in nodes:
            for w in g.successors(v, base, members):
                if comp_of[w] != c:
                    bits |= reach[comp_of[w]]
        reach[c] = bits
    return reach


def _path(g: _Graph, src: int, dst: int, types: tuple[str, ...], members: set[int]) -> list[_Step]:
    """The shortest path src -> dst over `types` edges (labelled by the first type that has the
    step); the caller knows that one exists."""
    parent: dict[int, _Step] = {}
    queue = deque([src])
    while queue:
        v = queue.popleft()
        for t in types:
            for w, key in g.adj[t][v].items():
                if w in members and w != src and w not in parent:
                    parent[w] = (v, t, key)
                    if w == dst:
                        return _unwind(parent, src, dst)
                    queue.append(w)
    raise AssertionError(f"no path {g.names[src]} -> {g.names[dst]}")


def _unwind(parent: dict[int, _Step], src: int, dst: int) -> list[_Step]:
    steps = []
    v = dst
    while v != src:
        steps.append(parent[v])
        v = parent[v][0]
    return steps[::-1]


def _cycle_anomaly(g: _Graph, kind: str, cycle: list[_Step]) -> Anomaly:
    text = " ".join(f"{g.names[v]} -{t}({key})->" for v, t, key in cycle)
    return Anomaly(kind, tuple(g.names[v] for v, _, _ in cycle), f"{text} {g.names[cycle[0][0]]}")


def _sccs(nodes: Iterable[int], successors: Callable[[int], Iterable[int]]) -> list[list[int]]:
    """Tarjan's strongly connected components, iteratively (a history is deeper than the
    recursion limit), each emitted after every component it reaches."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    out: list[list[int]] = []
    work: list[tuple[int, Iterator[int]]] = []  # the DFS path, each node with its successors

    def visit(v: int) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        work.append((v, iter(successors(v))))

    for root in nodes:
        if root in index:
            continue
        visit(root)
        while work:
            v, succ = work[-1]
            for w in succ:
                if w not in index:
                    visit(w)
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    u = work[-1][0]
                    low[u] = min(low[u], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(comp)
    return out
