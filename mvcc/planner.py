"""Query planner: an index and byte ranges of it to read, or a full scan; and the order.

Owns the choice between an index read and a full scan for `find`, `count`,
`update`, `delete` and `explain` (DESIGN.md section 2).  Pure: it reads the
query's nodes (mvcc/query.py) and the table's `IndexDef`s (mvcc/index.py) and
does no I/O.  The executor (mvcc/table.py) walks the plan:

    plan(query, indexes, order_by=, limit=, offset=) -> Plan
    Plan.index    None: a full scan in primary-key order; else the index to read
    Plan.ranges   half-open [lo, hi) ranges of that index's entry keys
                  (``encode_key((element1, ..., elementN, pk))``, index.py), sorted,
                  disjoint and not touching; () when no document can match (P9);
                  FULL (``((b"", None),)``) for a full scan
    Plan.ordered  the read order is the result order (P5): no sort, and the
                  executor may stop after offset + limit matches (`Plan.stop`)
    Plan.reverse  walk the ranges, and each range, backwards (descending order)
    Plan.order    parse_order(order_by): (path, descending) or None; what the
                  executor sorts by, with `order_key`, when not `ordered`
    Plan.exact    every entry in the ranges matches the query (P10)
    Plan.limit, Plan.offset, Plan.query (the compiled query: every document
                  read is checked against it, so the ranges may hold more)
    Plan.bounds   what the ranges stand for, in words (explain() shows it)
    Plan.stop     offset + limit when ordered and limited, else None
    Plan.explain() one line, e.g. "index age: age >= 18; order by age (index
                  order); limit 10", "full scan; then sort by -age"

Invariants
(P1) Superset: if ``plan.query(doc)`` and ``plan.index`` is not None, then
     ``entry_key(doc, plan.index, pk)`` is not None and lies in a range of
     ``plan.ranges``.  An index is read only when the query *requires* a
     present scalar in its first field (a document without one has no entry,
     index.py N1), and a range holds every entry such a document can have.
(P2) Leftmost prefix: from the query's needs (below) the ranges bind index
     fields 1..k each to a finite set of values (== or one_of; their product
     is the set of prefixes) and optionally field k+1 to spans of values
     (< <= > >= and regex prefixes, under each prefix).  Needs on one field
     within an And intersect (``>= 18 & < 65``); a span never leaves its
     operand's rank (query.py Q2), so ``>= 18`` is [enc(18), end of numbers).
     The product stops growing past MAX_RANGES prefixes (the first field is
     always taken whole): a longer prefix then narrows less than it costs.
(P3) Or: its needs are, for each path every branch needs, the union of the
     branches' spans; and when every branch can be planned on the chosen
     index, the ranges are also cut to the union of the branches' ranges.
     Branches that need different fields leave the Or without needs, so an
     Or over two indexes is a full scan (one index per plan: no index merge).
(P4) Choice: among the indexes whose first field the query needs, the least
     of (a tuple compared in order, smaller first):
       0 if the index is unique and every field is bound to values, else 1;
       minus the number of fields bound to values (k in P2);
       the number of prefixes (the product of the one_of sizes);
       how field k+1 is bounded: 0 both ends, 1 one end, 2 a whole rank
         (a regex with no literal prefix), 3 not at all;
       0 if the index serves order_by (P5), else 1;
       the index id, then its position in `indexes`.
     No candidate: a full scan.  There is no separate "read an index only
     for its order" rule: an index is a candidate exactly when the query
     requires a present scalar in its first field, which is also the only
     case in which its order could serve; a bare ``find(order_by="age")``
     must not read the index on age, since documents without an age (or with
     a list there) have no entry and would be dropped.
(P5) `ordered` is True when order_by is None (any order will do, the read
     order is the result order), or when the plan reads an index, the order
     path is one of its fields, and every *other* field of the index is bound
     by the query to a single value.  Then the entries walked (backwards when
     `reverse`) come in exactly the order the executor's sort would give:
     by ``(order_key(doc, path), encode_key((pk,)))``, reversed for a
     descending order_by, ties by primary key included.  Rejected: allowing
     unbound fields after the order field (index (last, first), order by
     last): the order would be right but ties would come by `first` instead
     of by primary key, so a limit would cut a different set than the sort.
     `reverse` is True only for an ordered, descending index read.  A full
     scan walks primary keys in order, so it is `ordered` for order_by the
     primary key ascending (`plan(primary_key=)` names it): ``find(order_by=
     "_id", limit=10)`` stops after ten.
(P6) `order_key(doc, path)` orders as the index does: `storage.keys.sort_key`
     of the value, and a missing, list, dict (or NaN) value gives the key of
     ABSENT, first ascending (and so last descending), as ABSENT entries are.
(P7) Bad arguments raise ValidationError before any planning: order_by not
     None nor a str "path" or "-path" (field "order_by"), limit not None nor
     a non-negative int (field "limit"), offset not a non-negative int
     (field "offset"); bools are refused as counts.
(P8) Deterministic: the plan depends only on the query's structure, the
     IndexDefs and the arguments; equal inputs give equal plans.
(P9) Nothing can match (the needs below are None: ``a == 1 & a == 2``,
     ``one_of([])``): the plan reads the index with the lowest id over no
     range (ranges ()), and explain() says "nothing can match"; with no index
     it is a full scan whose re-check keeps nothing.  (An index plan rather
     than "index None, ranges ()", because an executor that takes index None
     for a scan, as table.py does, then still reads nothing.)
(P10) `exact`: the query tests only the index's first field, by comparisons
     (not !=) and one_of with scalar operands.  Then the ranges hold exactly
     the entries whose values match (P2; a document whose first field is
     missing or unordered has no entry, index.py N1), so an executor may take
     an entry it knows to be the visible version's as a match without
     checking the document (table.py B6).

Needs
-----
`_needs(node)` is what every document the node matches is known to hold: a
map from path to spans (`_Span`: the values of one rank between two bounds),
meaning "this path holds a present scalar inside these spans", or None when
no document can match (``a == 1 & a == 2``, ``one_of([])``, ``a < None``).

    a == v (scalar v), a <= None       {a: point v}
    a < v, a >= v, ...                 {a: one span of rank(v)}
    a.one_of(scalars)                  {a: a point per value}
    a.matches(p) / a.search("^" + p)   {a: the strs starting with p's literal
                                        prefix; the point p when p is literal}
    a.search(p) otherwise              {a: every str}
    == list/dict, one_of with a list
    or dict, !=, not_in, exists, test, ~q,
    Predicate, Everything              {} (may match absent or unordered
                                        values, which have no entry)
    q1 & q2                            union of paths, spans intersected
    q1 | q2                            common paths, spans united

A span's bounds become element-level byte keys: lo inclusive v is enc(v),
exclusive is prefix_end(enc(v)); hi inclusive v is prefix_end(enc(v)),
exclusive is enc(v); an open end is the rank's bound (`rank_bounds`).
Element encodings are prefix-free (keys.py I2), so ``lo <= enc(x) + rest <
hi`` exactly when x is inside the span, whatever follows: that is why a
span under a prefix P is simply [P + lo, P + hi).

A regex's literal prefix is read conservatively: none when the pattern has
any flag (inline flags apply to the whole pattern), any "|", or, for
search, no leading "^" or "\\A"; it stops at the first special character,
and drops its last character when a quantifier follows.

Concurrency: pure functions and frozen values; any thread may plan.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Final, TypeAlias

from storage.keys import ABSENT, encode_key, prefix_end, rank_bounds, sort_key

from .errors import ValidationError
from .index import IndexDef
from .query import (
    And,
    Compare,
    OneOf,
    Or,
    Query,
    QueryLike,
    Regex,
    compile_query,
    parse_path,
    rank,
    resolve,
)

__all__ = ["FULL", "MAX_RANGES", "Order", "Plan", "Range", "order_key", "parse_order", "plan"]

Path: TypeAlias = tuple[str, ...]
Order: TypeAlias = tuple[Path, bool]
"""A parsed order_by: (path, descending)."""
Range: TypeAlias = tuple[bytes, bytes | None]
"""[lo, hi) over an index's entry keys; hi None: to the end."""
Bound: TypeAlias = tuple[Any, bool]  # (value, inclusive)

MAX_RANGES: Final = 1024
"""Prefixes (P2) beyond which a composite index is not bound further."""

FULL: Final[tuple[Range, ...]] = ((b"", None),)
"""The ranges of a full scan: the whole key space."""

_UNORDERED: Final = sort_key(ABSENT)  # order_key of what the index cannot hold (P6)
_RANK_NAMES: Final = ("None", "bool", "number", "str", "bytes")
_STR_RANK: Final = 3
_MAX_CHAR: Final = chr(0x10FFFF)
# Characters that end a regex's literal prefix; "}" and "]" are literal when
# alone, but stopping there too costs only a shorter prefix.
_SPECIAL: Final = frozenset(".^$*+?{}[]()\\|")
_QUANTIFIERS: Final = frozenset("*+?{")


# ---------------------------------------------------------------- arguments


def parse_order(order_by: str | None) -> Order | None:
    """``"age"`` -> (("age",), False), ``"-a.b"`` -> (("a", "b"), True); None stays None (P7).

    >>> parse_order("-a.b"), parse_order(None)
    ((('a', 'b'), True), None)
    """
    if order_by is None:
        return None
    if type(order_by) is not str:
        raise ValidationError(
            f'order_by is a field path, "-" first for descending, not {order_by!r}',
            field="order_by",
        )
    descending = order_by.startswith("-")
    try:
        path = parse_path(order_by[1:] if descending else order_by)
    except ValidationError as exc:
        raise ValidationError(f"order_by {order_by!r}: {exc.reason}", field="order_by") from exc
    return path, descending


def _check_count(value: Any, name: str, *, optional: bool) -> None:
    """limit and offset (P7): type(value) is int, so that True is not 1."""
    if optional and value is None:
        return
    if type(value) is not int or value < 0:
        also = " or None" if optional else ""
        raise ValidationError(f"{name} must be a non-negative int{also}, not {value!r}", field=name)


def order_key(doc: dict[str, Any], path: Path) -> tuple[int, Any]:
    """The in-memory sort key of `doc` for an order_by path, in index order (P6).

    >>> sorted([{"a": "x"}, {"a": 2.5}, {}, {"a": [1]}, {"a": None}],
    ...        key=lambda d: order_key(d, ("a",)))
    [{}, {'a': [1]}, {'a': None}, {'a': 2.5}, {'a': 'x'}]
    """
    value = resolve(doc, path)
    if rank(value) is None or (type(value) is float and math.isnan(value)):
        return _UNORDERED
    return sort_key(value)


# ---------------------------------------------------------------- spans


def _enc(value: Any) -> bytes:
    return encode_key((value,))


def _after(value: Any) -> bytes:
    """The least element-level key above `value` and everything it prefixes."""
    end = prefix_end(_enc(value))
    assert end is not None, "an element starts with a tag byte below 0xFF"
    return end


@dataclass(frozen=True, slots=True)
class _Span:
    """Values of one rank between two bounds (None: the rank's end), with the
    element-level byte keys [lo_key, hi_key) they stand for (Needs above)."""

    rank: int
    lo: Bound | None
    hi: Bound | None
    lo_key: bytes = field(init=False, repr=False, compare=False)
    hi_key: bytes = field(init=False, repr=False, compare=False)
    # One value, lo[0], however the bounds were written (``>= 5 & <= 5.0``).
    point: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        start, end = rank_bounds(self.rank)
        lo, hi = self.lo, self.hi
        lo_key = start if lo is None else _enc(lo[0]) if lo[1] else _after(lo[0])
        hi_key = end if hi is None else _after(hi[0]) if hi[1] else _enc(hi[0])
        object.__setattr__(self, "lo_key", lo_key)
        object.__setattr__(self, "hi_key", hi_key)
        point = lo is not None and lo[1] and hi_key == prefix_end(lo_key)
        object.__setattr__(self, "point", point)

    def text(self, name: str) -> str:
        lo, hi = self.lo, self.hi
        if lo is not None and self.point:
            return f"{name} == {lo[0]!r}"
        if lo is None and hi is None:
            return f"{name} is any {_RANK_NAMES[self.rank]}"
        upper = "" if hi is None else f" {'<=' if hi[1] else '<'} {hi[0]!r}"
        if lo is None:
            return f"{name}{upper}"
        if hi is None:
            return f"{name} {'>=' if lo[1] else '>'} {lo[0]!r}"
        return f"{lo[0]!r} {'<=' if lo[1] else '<'} {name}{upper}"


Spans: TypeAlias = tuple[_Span, ...]
"""Sorted by lo_key, non-empty, not overlapping: a set of values of one path."""


def _point(value: Any) -> _Span:
    return _Span(rank(value) or 0, (value, True), (value, True))


def _normalize(spans: Iterable[_Span]) -> Spans:
    """Drop empty spans, sort, and merge overlapping ones.  Touching spans
    (``== False``, ``== True``) stay apart so that points stay points."""
    out: list[_Span] = []
    for span in sorted((s for s in spans if s.lo_key < s.hi_key), key=lambda s: s.lo_key):
        if out and span.lo_key < out[-1].hi_key:  # overlap: same rank (disjoint tags)
            last = out[-1]
            if span.hi_key > last.hi_key:
                out[-1] = _Span(last.rank, last.lo, span.hi)
        else:
            out.append(span)
    return tuple(out)


def _intersect(a: Spans, b: Spans) -> Spans:
    return _normalize(
        _Span(
            s.rank,
            s.lo if s.lo_key >= t.lo_key else t.lo,
            s.hi if s.hi_key <= t.hi_key else t.hi,
        )
        for s in a
        for t in b
        if s.rank == t.rank
    )


def _spans_text(name: str, spans: Spans) -> str:
    if len(spans) > 1 and all(s.point for s in spans):
        return f"{name} in {[s.lo[0] for s in spans if s.lo is not None]!r}"
    texts = [s.text(name) for s in spans]
    return texts[0] if len(texts) == 1 else f"({' or '.join(texts)})"


# ---------------------------------------------------------------- needs


Needs: TypeAlias = dict[Path, Spans]


def _needs(node: Query) -> Needs | None:
    """What every document `node` matches holds (Needs above); None: nothing matches."""
    if isinstance(node, And):
        merged: Needs = {}
        for part in node.parts:
            needs = _needs(part)
            if needs is None:
                return None
            for path, spans in needs.items():
                if path in merged:
                    spans = _intersect(merged[path], spans)
                    if not spans:
                        return None
                merged[path] = spans
        return merged
    if isinstance(node, Or):
        branches = [n for n in map(_needs, node.parts) if n is not None]
        if not branches:
            return None
        return {
            path: _normalize(chain.from_iterable(n[path] for n in branches))
            for path in branches[0]
            if all(path in n for n in branches)
        }
    if isinstance(node, Compare):
        found = _compare_spans(node.op, node.value)
    elif isinstance(node, OneOf):
        found = (
            None if any(rank(v) is None for v in node.values) else tuple(map(_point, node.values))
        )
    elif isinstance(node, Regex):
        found = _regex_spans(node.pattern, node.whole)
    else:  # !=-like, exists, test, ~q, Predicate, Everything: absent values may match
        return {}
    if found is None:
        return {}
    spans = _normalize(found)
    return {node.path: spans} if spans else None


def _compare_spans(op: str, value: Any) -> tuple[_Span, ...] | None:
    """The spans of ``where(path) op value``; None: no need (query.py Q2, Q3, Q5)."""
    r = rank(value)
    if r is None or op == "!=":
        return None
    if op == "==" or r == 0:
        # None orders against nothing: <= and >= are ==, < and > match nothing.
        return () if op in ("<", ">") else (_point(value),)
    if op in ("<", "<="):
        return (_Span(r, None, (value, op == "<=")),)
    return (_Span(r, (value, op == ">="), None),)


def _regex_spans(pattern: str, whole: bool) -> tuple[_Span, ...]:
    """The strs a matches/search can match: those starting with its literal prefix (Q6)."""
    prefix, exact = _literal_prefix(pattern, whole)
    if exact:
        return (_point(prefix),)
    if not prefix:
        return (_Span(_STR_RANK, None, None),)
    stripped = prefix.rstrip(_MAX_CHAR)  # the least str above every extension of prefix
    hi = None if not stripped else (stripped[:-1] + chr(ord(stripped[-1]) + 1), False)
    return (_Span(_STR_RANK, (prefix, True), hi),)


def _literal_prefix(pattern: str, whole: bool) -> tuple[str, bool]:
    """(prefix every matched str starts with, whether it is the only match)."""
    # Inline flags ((?i), (?x), (?m)) change what a literal means.  Python 3.11
    # wants them first, where "(" already ends the prefix, but 3.10 still obeys
    # one anywhere ("Ann(?i)"), so ask the compiled pattern.  "|" at any depth
    # would need a parser to place.  Either: no prefix.
    if re.compile(pattern).flags != re.UNICODE or "|" in pattern:
        return "", False
    body = pattern
    if not whole:
        anchor = next((a for a in ("^", "\\A") if pattern.startswith(a)), None)
        if anchor is None:
            return "", False
        body = pattern[len(anchor) :]
    end = 0
    while end < len(body) and body[end] not in _SPECIAL:
        end += 1
    if end == len(body):
        return body, whole
    if body[end] in _QUANTIFIERS:
        end = max(end - 1, 0)  # "Ann*": the quantifier takes the last "n"
    return body[:end], False


# ---------------------------------------------------------------- ranges


def _merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, with overlapping and touching ranges joined and empty ones dropped."""
    out: list[Range] = []
    for lo, hi in sorted(ranges, key=lambda r: r[0]):
        if hi is not None and lo >= hi:
            continue
        if out and (out[-1][1] is None or lo <= out[-1][1]):
            last_hi = out[-1][1]
            if last_hi is not None and (hi is None or hi > last_hi):
                out[-1] = (out[-1][0], hi)
            continue
        out.append((lo, hi))
    return out


def _cut(a: list[Range] | None, b: list[Range] | None) -> list[Range] | None:
    """The intersection of two merged range lists (None: unrestricted)."""
    if a is None or b is None:
        return b if a is None else a
    out: list[Range] = []
    i = j = 0
    while i < len(a) and j < len(b):
        (alo, ahi), (blo, bhi) = a[i], b[j]
        lo = max(alo, blo)
        hi = bhi if ahi is None else ahi if bhi is None else min(ahi, bhi)
        if hi is None or lo < hi:
            out.append((lo, hi))
        if ahi is not None and (bhi is None or ahi <= bhi):  # a[i] ends first
            i += 1
        else:
            j += 1
    return _merge(out)


@dataclass(frozen=True, slots=True)
class _Prefix:
    """How a query's needs bind an index (P2): fields 1..k to points, k+1 to spans."""

    index: IndexDef
    bound: tuple[Spans, ...]
    rest: Spans | None

    def ranges(self) -> list[Range]:
        # Points and spans are sorted and element encodings prefix-free, so the
        # products come out sorted and disjoint.
        prefixes = [b""]
        for spans in self.bound:
            prefixes = [p + s.lo_key for p in prefixes for s in spans]
        if self.rest is None:
            return [(p, prefix_end(p)) for p in prefixes]
        return [(p + s.lo_key, p + s.hi_key) for p in prefixes for s in self.rest]

    def estimate(self) -> tuple[int, int, int, int]:
        """The first four items of P4's tuple: smaller is more selective."""
        unique = self.index.unique and len(self.bound) == len(self.index.fields)
        open_ends = [(s.lo is None) + (s.hi is None) for s in self.rest or ()]
        reach = max(open_ends) if open_ends else 3  # 3: field k+1 unbound
        return (0 if unique else 1, -len(self.bound), math.prod(map(len, self.bound)), reach)

    def text(self) -> str:
        fields = self.index.fields
        parts = [_spans_text(f, s) for f, s in zip(fields, self.bound)]
        if self.rest is not None:
            parts.append(_spans_text(fields[len(self.bound)], self.rest))
        return " and ".join(parts)


def _prefix(needs: Needs, index: IndexDef) -> _Prefix | None:
    """The leftmost-prefix binding of `index` by `needs`; None unless the first field is needed."""
    bound: list[Spans] = []
    count = 1
    for path in index.paths:
        spans = needs.get(path)
        if spans is None or (bound and count * len(spans) > MAX_RANGES):
            break
        if not all(s.point for s in spans):
            return _Prefix(index, tuple(bound), spans)
        bound.append(spans)
        count *= len(spans)
    return _Prefix(index, tuple(bound), None) if bound else None


def _ranges(node: Query, index: IndexDef) -> list[Range] | None:
    """Ranges of `index` holding every entry of a document `node` matches (P1-P3);
    None when the index cannot restrict it."""
    needs = _needs(node)
    if needs is None:
        return []
    prefix = _prefix(needs, index)
    found = None if prefix is None else _merge(prefix.ranges())
    if isinstance(node, Or):
        branches = [_ranges(part, index) for part in node.parts]
        if all(b is not None for b in branches):
            found = _cut(found, _merge(chain.from_iterable(b for b in branches if b)))
    elif isinstance(node, And):
        for part in node.parts:
            if isinstance(part, Or):
                found = _cut(found, _ranges(part, index))
    return found


def _serves(order: Order | None, index: IndexDef, needs: Needs) -> bool:
    """P5: the order path is a field of `index` and every other field is one value."""
    if order is None or order[0] not in index.paths:
        return False
    for path in index.paths:
        spans = needs.get(path)
        if path != order[0] and not (spans is not None and len(spans) == 1 and spans[0].point):
            return False
    return True


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """How to run one query: see the module docstring for each field."""

    index: IndexDef | None
    ranges: tuple[Range, ...]
    ordered: bool
    reverse: bool
    order: Order | None
    limit: int | None
    offset: int
    query: Query
    bounds: str = ""  # what the ranges stand for, as explain() writes it
    exact: bool = False  # P10: every entry in the ranges matches the query

    @property
    def stop(self) -> int | None:
        """Matches to read, in read order, before stopping; None: all of them."""
        return None if self.limit is None or not self.ordered else self.offset + self.limit

    def explain(self) -> str:
        """One line: the index and its bounds (or a full scan), the order, the cut.

        >>> plan(None, [], order_by="-age", limit=10).explain()
        'full scan; then sort by -age; limit 10'
        """
        index = self.index
        parts = ["full scan" if index is None else f"index {index.name}: {self.bounds}"]
        if self.order is not None:
            path, descending = self.order
            text = ("-" if descending else "") + ".".join(path)
            if not self.ordered:
                parts.append(f"then sort by {text}")
            elif index is None:
                parts.append(f"order by {text} (primary key order)")
            else:
                parts.append(
                    f"order by {text} (index order{', backwards' if self.reverse else ''})"
                )
        if self.limit is not None:
            parts.append(f"limit {self.limit}")
        if self.offset:
            parts.append(f"offset {self.offset}")
        return "; ".join(parts)


def plan(
    query: QueryLike,
    indexes: Sequence[IndexDef],
    *,
    order_by: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    primary_key: str | None = None,
) -> Plan:
    """The plan for `query` over a table with `indexes` (P1-P10); `primary_key`
    names the field a full scan walks in order (P5).

    >>> from mvcc.query import where
    >>> age = IndexDef(1, ("age",))
    >>> plan((where("age") >= 18) & (where("age") < 65), [age], order_by="age").explain()
    'index age: 18 <= age < 65; order by age (index order)'
    """
    order = parse_order(order_by)
    _check_count(limit, "limit", optional=True)
    _check_count(offset, "offset", optional=False)
    node = compile_query(query)
    needs = _needs(node)
    if needs is None:
        # Nothing can match: read no entry of any index (ranges ()), or scan
        # when there is none; the executor's re-check answers either way.
        return _nothing(node, indexes, order, limit, offset, primary_key)
    best: tuple[tuple[int, ...], _Prefix, bool] | None = None
    for position, index in enumerate(indexes):
        prefix = _prefix(needs, index)
        if prefix is None:
            continue
        serves = _serves(order, index, needs)
        key = (*prefix.estimate(), 0 if serves else 1, index.id, position)
        if best is None or key < best[0]:
            best = (key, prefix, serves)
    if best is None:
        return _scan(node, order, limit, offset, primary_key)
    _key, prefix, serves = best
    ranges = _ranges(node, prefix.index)
    assert ranges is not None, "a needed first field always yields ranges"
    text = prefix.text()
    if not ranges:
        text += " (nothing can match)"
    elif ranges != _merge(prefix.ranges()):
        text += f" (cut by an or to {len(ranges)} ranges)"
    reverse = serves and order is not None and order[1]
    ordered = order is None or serves
    exact = _exact(node, prefix.index)
    return Plan(
        prefix.index, tuple(ranges), ordered, reverse, order, limit, offset, node, text, exact
    )


def _scan(
    node: Query, order: Order | None, limit: int | None, offset: int, primary_key: str | None
) -> Plan:
    """A full scan: in primary-key order, which is the order asked for when it
    is none or the primary key ascending (keys.py I1: the encoded keys the
    scan walks order as `order_key` does)."""
    by_key = order is not None and primary_key is not None and order == ((primary_key,), False)
    return Plan(None, FULL, order is None or by_key, False, order, limit, offset, node)


def _exact(query: Query, index: IndexDef) -> bool:
    """P10: the ranges of `index` for `query` hold exactly the entries that match it."""
    first = index.paths[0]
    parts = query.parts if isinstance(query, And) else (query,)
    for part in parts:
        if isinstance(part, Compare):
            if part.op == "!=" or rank(part.value) is None:
                return False
        elif isinstance(part, OneOf):
            if any(rank(v) is None for v in part.values):
                return False
        else:
            return False
        if part.path != first:
            return False
    return True


def _nothing(
    node: Query,
    indexes: Sequence[IndexDef],
    order: Order | None,
    limit: int | None,
    offset: int,
    primary_key: str | None,
) -> Plan:
    if not indexes:
        return _scan(node, order, limit, offset, primary_key)
    index = min(indexes, key=lambda i: i.id)
    return Plan(index, (), True, False, order, limit, offset, node, "nothing can match")
