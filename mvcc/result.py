"""Result: what `Table.find` returns, a list of documents with a few helpers.

A `Result` *is* a list (DESIGN.md section 2): indexing, iteration, len, ==,
repr and every list method are list's own, so ``users.find(q) == [doc]``
holds and code that wants a list gets one.  It adds `first()`, `last()`,
`pluck(path)` and `ids()`, and remembers the table's primary key field for
`ids()`.

Invariants
(R1) A Result equals any list with equal items, whatever its primary key:
     equality, ordering and repr are list's, not extended.
(R2) Slicing and copy() give a Result with the same primary key, so
     ``users.find(q)[:10].ids()`` works; other list operations that build a
     new list (``+``, ``*``) give a plain list, as they do for any subclass.
(R3) pluck(path) returns the values at a dot path (the query path syntax,
     mvcc.query.parse_path) of the documents that have it, in order,
     skipping those that do not.  Skipped rather than None: a present None is
     a value (query.py Q4), and a None in its place would say a document holds
     one when it holds nothing; to keep one entry per document, use
     ``[d.get(f) for d in result]``.
(R4) ids() returns ``doc[primary_key]`` of every document in order; a
     table's documents always hold it (table.py B2), so a document without
     it is a caller's bug and raises KeyError.
(R5) A Result pickles to an equal Result with the same primary key (worker
     pools send results across processes).

Concurrency: a Result is a private list; sharing one between threads is as
safe as sharing a list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, SupportsIndex, overload

from .query import MISSING, parse_path, resolve

__all__ = ["Result"]


class Result(list[dict[str, Any]]):
    """A list of documents from one table, plus first(), last(), pluck() and ids().

    >>> r = Result([{"_id": 1, "a": {"b": 2}}, {"_id": 2}], primary_key="_id")
    >>> r.first(), r.ids(), r.pluck("a.b"), r == [{"_id": 1, "a": {"b": 2}}, {"_id": 2}]
    ({'_id': 1, 'a': {'b': 2}}, [1, 2], [2], True)
    """

    __slots__ = ("primary_key",)

    def __init__(self, docs: Iterable[dict[str, Any]] = (), *, primary_key: str = "_id") -> None:
        super().__init__(docs)
        self.primary_key = primary_key

    def first(self) -> dict[str, Any] | None:
        """The first document, or None when the result is empty."""
        return self[0] if self else None

    def last(self) -> dict[str, Any] | None:
        """The last document, or None when the result is empty."""
        return self[-1] if self else None

    def pluck(self, path: str) -> list[Any]:
        """The values at a dot path, skipping documents without it (R3)."""
        keys = parse_path(path)  # ValidationError for a bad path, even on an empty result
        if len(keys) == 1:
            key = keys[0]
            return [doc[key] for doc in self if key in doc]
        values = (resolve(doc, keys) for doc in self)
        return [v for v in values if v is not MISSING]

    def ids(self) -> list[Any]:
        """The primary key of every document, in order (R4)."""
        pk = self.primary_key
        return [doc[pk] for doc in self]

    @overload
    def __getitem__(self, index: SupportsIndex) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> Result: ...

    def __getitem__(self, index: SupportsIndex | slice) -> dict[str, Any] | Result:
        if isinstance(index, slice):  # (R2)
            return Result(list.__getitem__(self, index), primary_key=self.primary_key)
        return list.__getitem__(self, index)

    def copy(self) -> Result:
        """A shallow copy, still a Result with the same primary key (R2)."""
        return Result(self, primary_key=self.primary_key)

    def __reduce__(self) -> tuple[Any, ...]:
        # Explicit: list subclasses with __slots__ pickle their slots only
        # under protocol 2 and later; this works under every protocol (R5).
        return (_rebuild, (type(self), list(self), self.primary_key))


def _rebuild(cls: type[Result], docs: list[dict[str, Any]], primary_key: str) -> Result:
    return cls(docs, primary_key=primary_key)
