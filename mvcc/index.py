"""Secondary index definitions and the index entry of a document.

An index of a table lists one or more fields (dot paths); `unique` makes it a
constraint too.  Its definition lives in the table's catalog row (mvcc/table.py)
as ``{"id": int, "fields": [path, ...], "unique": bool}``; `IndexDef` is that
row entry, checked.

Index entry
-----------
A document's entry in an index is the key tuple

    (element for field 1, ..., element for field n, primary key)

encoded with `storage.keys.encode_key`, so that byte order is the order of
the values and a composite index answers every leftmost prefix (keys.py I2),
followed by the length of the primary key's encoding as 2 big-endian bytes:

    encode_key(elements) | encode_key((pk,)) | len(encode_key((pk,)))  (u16)

The length lets a reader cut the entry into its values part and its primary
key's bytes without decoding it (`split_entry`); appended after a prefix-free
encoding it changes no order between two entries, nor which entries a range
of encoded values holds.
An element is the field's value when it is a scalar the key order ranks
(None, bool, int, float, str, bytes), and `ABSENT` when the field is missing
or holds a list or a dict: "missing" is not None (a query for ``== None``
must not find documents without the field), and a list is not indexable.

Invariants
(N1) A document has an entry exactly when the element of its *first* field is
     not ABSENT: no query that an index can serve matches a document whose
     first field is missing or unordered (query.py Q4, Q2), and later fields
     stay in the entry as ABSENT so that a prefix scan on the first finds it.
(N2) NaN in an indexed field is a ValidationError naming the field, raised by
     `check_document` before anything is written: it cannot be ordered
     (keys.py I5), so no index could hold it.  `entry_key` never raises: a NaN
     stored before its field was indexed gets no element (it matches nothing
     an index serves: query.py Q2).
(N3) Two documents with equal elements get entries that differ only in the
     primary key: the unique check of an index is a prefix scan over
     `encode_key(elements)` (`unique_prefix`), and only documents whose
     elements are all present and scalar are constrained (as SQL's UNIQUE
     ignores rows with a NULL).
(N4) `IndexDef.from_spec(d.to_spec()) == d`, and `to_spec()` holds only what
     msgpack stores.
(N5) An entry is at most a page-file key long (storage/btree.py B6: 504 bytes
     on 4 KiB pages): `check_document` refuses a longer one before anything
     is written, since a checkpoint could not store it and would fail for good.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final

from storage.codec import unpack_doc
from storage.keys import ABSENT, encode_key

from .errors import ValidationError
from .query import parse_path, rank, resolve

__all__ = [
    "Hit",
    "IndexDef",
    "check_document",
    "entry_key",
    "entry_values",
    "index_fields",
    "indexes_of",
    "make_entry",
    "merge_entries",
    "split_entry",
    "table_indexes",
    "unique_prefix",
    "values_key",
]

MAX_FIELDS: Final = 8
"""Fields in one composite index: beyond this an index key is mostly overhead."""


def index_fields(spec: Any, *, what: str = "index") -> tuple[str, ...]:
    """The fields of an index as a user names it: ``"age"``, ``("last", "first")``
    or a list; each a dot path.  ValidationError naming `what` otherwise."""
    fields = (spec,) if type(spec) is str else spec
    if type(fields) not in (tuple, list) or not fields:
        raise ValidationError(
            f"an {what} is a field name or a tuple of them, not {spec!r}", field=str(spec)
        )
    if len(fields) > MAX_FIELDS:
        raise ValidationError(
            f"an {what} has at most {MAX_FIELDS} fields, not {len(fields)}", field=str(spec)
        )
    for f in fields:
        parse_path(f)  # ValidationError naming the bad path
    if len(set(fields)) != len(fields):
        raise ValidationError(f"an {what} names a field twice: {spec!r}", field=str(spec))
    return tuple(fields)


@dataclass(frozen=True, slots=True)
class IndexDef:
    """One index of a table: its id (unique in the directory), fields, uniqueness."""

    id: int
    fields: tuple[str, ...]
    unique: bool = False
    paths: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)
    top: str | None = field(init=False, repr=False, compare=False)
    """The field, when the index has one field and it is a top-level key: the
    executor's re-check of every hit then takes `values_key`'s short path."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(parse_path(f) for f in self.fields))
        single = len(self.paths) == 1 and len(self.paths[0]) == 1
        object.__setattr__(self, "top", self.fields[0] if single else None)

    @property
    def name(self) -> str:
        """How messages and `explain` name it: ``age`` or ``(last, first)``."""
        return self.fields[0] if len(self.fields) == 1 else f"({', '.join(self.fields)})"

    def to_spec(self) -> dict[str, Any]:
        return {"id": self.id, "fields": list(self.fields), "unique": self.unique}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> IndexDef:
        return cls(int(spec["id"]), index_fields(spec["fields"]), bool(spec["unique"]))


def indexes_of(row: dict[str, Any]) -> tuple[IndexDef, ...]:
    """The indexes a table's catalog row lists (none in a row from before indexes)."""
    return tuple(IndexDef.from_spec(spec) for spec in row.get("indexes") or ())


def table_indexes(packed_row: bytes | None, tid: int) -> tuple[IndexDef, ...]:
    """The indexes of table `tid` from the packed catalog row under its name:
    none if the row is gone or is another table's (a handle outlives a drop,
    and the name may have been taken again)."""
    row = None if packed_row is None else unpack_doc(packed_row)
    return indexes_of(row) if row is not None and row["id"] == tid else ()


def _element(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    value = resolve(doc, path)
    if rank(value) is None:  # MISSING has no rank either
        return ABSENT
    if value != value:  # NaN: refused at every write (N2); here only if stored before
        return ABSENT  # the index existed, and NaN matches nothing an index serves
    return value


def entry_values(doc: dict[str, Any], index: IndexDef) -> tuple[Any, ...] | None:
    """The elements of `doc`'s entry in `index`, or None when it has none (N1).
    Never raises: reads and catch-up call it on stored documents."""
    values = tuple(_element(doc, p) for p in index.paths)
    return None if values[0] is ABSENT else values


_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def values_key(doc: dict[str, Any], index: IndexDef) -> bytes | None:
    """The values part of `doc`'s entry in `index`, or None when it has none."""
    top = index.top
    if top is not None:  # the common case, once per row of an index read
        value = doc.get(top, ABSENT)
        if type(value) not in _SCALARS or value != value:  # absent, unordered or NaN
            return None
        return encode_key((value,))
    values = entry_values(doc, index)
    return None if values is None else encode_key(values)


def entry_key(doc: dict[str, Any], index: IndexDef, pk: Any) -> bytes | None:
    """The entry of `doc` (primary key `pk`) in `index`, or None (N1)."""
    values = values_key(doc, index)
    return None if values is None else make_entry(values, encode_key((pk,)))


def make_entry(values: bytes, pk_key: bytes) -> bytes:
    """An entry from its values part and its encoded primary key."""
    return values + pk_key + len(pk_key).to_bytes(2, "big")


Hit = tuple[bytes, "bytes | tuple[int, ...] | None"]
"""An index read's item: an entry, and the document it covers (a page-file
index tree's head entry, versions.py V5), b"" for a page-file entry of an
older version, the ts of the versions that have it for a memtable entry
(memtable.py M6), or None for an entry of the write set."""


def merge_entries(*parts: Iterable[Hit], reverse: bool = False) -> Iterator[Hit]:
    """The union of sorted hit streams, in entry order (descending when
    `reverse`), each entry once: from the earliest part that has it (callers
    put the memtable and the write set first, whose versions are newer);
    lazy, so a reader that stops early reads little."""
    if len(parts) == 1:
        yield from parts[0]
        return
    last = None
    for hit in heapq.merge(*parts, key=itemgetter(0), reverse=reverse):
        if hit[0] != last:
            yield hit
            last = hit[0]


def split_entry(entry: bytes) -> tuple[bytes, bytes]:
    """(values part, encoded primary key) of an entry, without decoding it."""
    n = int.from_bytes(entry[-2:], "big")
    return entry[: -2 - n], entry[-2 - n : -2]


def unique_prefix(doc: dict[str, Any], index: IndexDef) -> bytes | None:
    """The prefix every entry with `doc`'s elements starts with, when the unique
    constraint applies to `doc` (all elements present and scalar), else None (N3)."""
    values = entry_values(doc, index)
    if values is None or any(v is ABSENT for v in values):
        return None
    return encode_key(values)


def check_document(
    doc: dict[str, Any], indexes: Iterable[IndexDef], pk_key: bytes, max_key: int
) -> None:
    """N2 and N5: ValidationError naming the field if an indexed field of `doc`
    is NaN, or if `doc`'s entry in an index (primary key `pk_key`) would be
    longer than a page-file key may be (`max_key`)."""
    for index in indexes:
        for path, name in zip(index.paths, index.fields):
            value = resolve(doc, path)
            if type(value) is float and math.isnan(value):
                raise ValidationError(
                    f"{name} is NaN, which the index on {index.name} cannot order", field=name
                )
        values = values_key(doc, index)
        if values is not None and len(values) + len(pk_key) + 2 > max_key:
            raise ValidationError(
                f"the entry in the index on {index.name} would be "
                f"{len(values) + len(pk_key) + 2} bytes; an index entry holds at most "
                f"{max_key} (the values of {', '.join(index.fields)} and the primary key)",
                field=index.fields[0],
            )
