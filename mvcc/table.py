"""Tables of documents: the TinyDB-like API over transactions.

A table is a row of the catalog (table id CATALOG, keyed by the table's name)
holding ``{"id": table id, "primary_key": field, "schema": spec}``; its
records are the versions under its table id.  Every call joins the active
transaction of the caller's context, or runs in its own one-operation
transaction.

Invariants
(B1) A document is validated (codec, schema) and packed before anything is
     buffered: a bad document raises ValidationError naming the field and
     leaves the transaction as it was.
(B2) The primary key field is in every stored document and equals its key.
(B3) `insert` of a key that exists is an error (UniqueViolation on the
     primary key); `put` replaces; `update` merges or applies a callable.
(B4) Every write checks the table's indexes as the transaction's snapshot
     lists them (NaN in an indexed field, a unique value another record or
     another write of the transaction holds) before it is buffered; the commit
     checks them again under the newest catalog (Database._check_indexes),
     which is what holds across processes.
(B5) A query read through an index yields a record only when the entry it
     came from is the entry of the version the transaction sees and the query
     matches that version: stale entries of older or newer versions are
     skipped, so index reads are exactly what a full scan would return.  A
     page-file entry that covers the head version's document (versions.py V5)
     is that version's entry by construction: when the transaction sees the
     head, the document comes from the entry, unread and unchecked.
(B6) `count` decodes no document that an index entry answers: when the
     plan is exact (planner.py P10: every entry in its ranges matches), a
     covered head entry that the transaction sees is a match as it stands,
     and so is a memtable entry whose versions include the one the
     transaction sees (memtable.py M6).  Only the transaction's own writes
     are decoded.

Queries (the executor): `compile_query` (mvcc/query.py), `plan`
(mvcc/planner.py) picks an index and key ranges or a full scan; the ranges
are walked in entry order, each entry's record read at the snapshot and
re-checked (B5); then sorted in memory unless the index order is the order
asked for, and cut to offset/limit (early, when the order allows).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

from storage.codec import pack_doc, unpack_doc
from storage.errors import EncodeError
from storage.keys import encode_key, prefix_end

from .errors import (
    ClosedError,
    TableNotFound,
    UniqueViolation,
    ValidationError,
    public_error,
    translate,
)
from .index import (
    IndexDef,
    check_document,
    index_fields,
    indexes_of,
    split_entry,
    table_indexes,
    unique_prefix,
    values_key,
)
from .memtable import CATALOG, MISSING
from .planner import Plan, order_key, plan
from .query import Everything, Query, QueryLike, compile_query
from .result import Result
from .schema import Schema
from .transaction import sees_every_head

if TYPE_CHECKING:
    from .database import Block, Database
    from .transaction import Transaction

__all__ = ["Table"]


def _is_query(target: Any) -> bool:
    """`update`/`delete` take a primary key or a query: a query is a dict, a
    query node or another callable; a key is a scalar (keys.py's types)."""
    return isinstance(target, (dict, Query)) or callable(target)


class _Scope:
    """`with table._tx() as tx`: the caller's active transaction, or a
    one-operation one; layer errors leave as public ones (errors.py X3).  A
    class rather than a generator: it wraps every get, and a generator-based
    context manager cost a third of a point read."""

    __slots__ = ("block", "table")

    def __init__(self, table: Table) -> None:
        self.table = table
        self.block: Block | None = None

    def __enter__(self) -> Transaction:
        db = self.table.db
        if db._closed:
            raise ClosedError(f"the database {db.path} is closed (table {self.table.name!r})")
        tx = db.current()
        if tx is None:
            self.block = db.transaction()
            return self.block.__enter__()
        return tx

    def __exit__(self, et: Any, exc: BaseException | None, tb: Any) -> None:
        public = None if exc is None else public_error(exc)
        if self.block is not None:
            self.block.__exit__(et, exc, tb)  # commits, or rolls back on any error
        if public is not None:
            raise public from exc


class Table:
    """One table of `db`; `db.table(name)` makes it."""

    def __init__(
        self, db: Database, name: str, tid: int, primary_key: str, schema: Schema | None
    ) -> None:
        self.db = db
        self.name = name
        self.tid = tid
        self.primary_key = primary_key
        self.schema = schema
        self._catalog_key = encode_key((name,))

    def _tx(self) -> _Scope:
        return _Scope(self)

    def _key(self, pk: Any) -> bytes:
        try:
            key = encode_key((pk,))
        except EncodeError as exc:
            raise ValidationError(
                f"{self.name}.{self.primary_key}: {pk!r} cannot be a primary key ({exc})",
                field=self.primary_key,
            ) from exc
        if len(key) > self.db.max_key:  # a checkpoint could not store it (btree.py B6)
            raise ValidationError(
                f"{self.name}.{self.primary_key}: a primary key encodes to at most "
                f"{self.db.max_key} bytes, not {len(key)}",
                field=self.primary_key,
            )
        return key

    def _own(self, doc: Any) -> dict[str, Any]:
        """A copy of `doc` to add the primary key to; ValidationError if not a dict."""
        if type(doc) is not dict:
            raise ValidationError(
                f"{self.name}: a document is a dict, not {type(doc).__name__}", field=""
            )
        return dict(doc)

    def _pack(self, doc: dict[str, Any]) -> bytes:
        """Schema, then codec checks (B1); the packed document."""
        if self.schema is not None:
            self.schema.validate(doc)
        try:
            return pack_doc(doc, compress=self.db.compress)
        except EncodeError as exc:
            raise ValidationError(f"{self.name}: {exc}", field=exc.field or "") from exc

    # -- indexes -----------------------------------------------------------------

    def _indexes(self, tx: Transaction) -> tuple[IndexDef, ...]:
        """The table's indexes in `tx`'s snapshot (its catalog row), read once per
        transaction."""
        indexes = tx.catalog.get(self.tid)
        if indexes is None:
            indexes = table_indexes(tx.read(CATALOG, self._catalog_key), self.tid)
            tx.catalog[self.tid] = indexes
        return indexes

    def _write(self, tx: Transaction, key: bytes, doc: dict[str, Any]) -> None:
        """Check `doc` against the indexes (B4), pack it, buffer it."""
        indexes = self._indexes(tx)
        if indexes:
            check_document(doc, indexes, key, self.db.max_key)
            for index in indexes:
                if index.unique:
                    self._check_unique(tx, index, doc, key)
        tx.write(self.tid, key, self._pack(doc))

    def _check_unique(
        self, tx: Transaction, index: IndexDef, doc: dict[str, Any], key: bytes
    ) -> None:
        prefix = unique_prefix(doc, index)
        if prefix is None:
            return
        for entry, _doc in tx.index_entries(self.tid, index, prefix, prefix_end(prefix)):
            other = split_entry(entry)[1]
            if other == key:
                continue
            packed = tx.read(self.tid, other)
            if packed is not None and unique_prefix(unpack_doc(packed), index) == prefix:
                raise self.db._unique_violation(self.tid, index, doc)

    def create_index(self, *fields: str, unique: bool = False) -> None:
        """Index `fields` (one, or several for a composite index); idempotent.

        In the caller's transaction (or its own).  The index serves queries as
        soon as its transaction commits, and is exact at once: until the next
        checkpoint builds its page-file tree, the older versions' entries are
        computed on demand.  A unique index over data that breaks it raises
        UniqueViolation, and so does its commit if another process wrote a
        duplicate meanwhile."""
        names = index_fields(fields[0] if len(fields) == 1 else fields)
        if type(unique) is not bool:
            raise ValidationError(f"unique is a bool, not {unique!r}", field="unique")
        with self._tx() as tx:
            row = self._row(tx)
            indexes = indexes_of(row)
            for index in indexes:
                if index.fields == names:
                    if index.unique != unique:
                        raise ValidationError(
                            f"{self.name}: an index on {index.name} exists with unique="
                            f"{index.unique}; drop it first to change that",
                            field=index.name,
                        )
                    return
            index = IndexDef(self.db._new_object_id(), names, unique)
            self._check_existing(tx, index)
            row["indexes"] = [i.to_spec() for i in (*indexes, index)]
            tx.write(CATALOG, self._catalog_key, pack_doc(row))
            tx.catalog.pop(self.tid, None)
            if unique:
                tx.unique_builds.append((self.tid, index))

    def _check_existing(self, tx: Transaction, index: IndexDef) -> None:
        """A new index over the records `tx` sees: no NaN, no duplicate if unique."""
        seen: dict[bytes, Any] = {}
        for key, packed in tx.scan(self.tid):
            doc = unpack_doc(packed)
            check_document(doc, (index,), key, self.db.max_key)
            prefix = unique_prefix(doc, index) if index.unique else None
            if prefix is not None and seen.setdefault(prefix, key) != key:
                raise self.db._unique_violation(self.tid, index, doc)

    def drop_index(self, *fields: str) -> bool:
        """Drop the index on `fields`; False if there is none."""
        names = index_fields(fields[0] if len(fields) == 1 else fields)
        with self._tx() as tx:
            row = self._row(tx)
            indexes = indexes_of(row)
            kept = [i for i in indexes if i.fields != names]
            if len(kept) == len(indexes):
                return False
            row["indexes"] = [i.to_spec() for i in kept]
            tx.write(CATALOG, self._catalog_key, pack_doc(row))
            tx.catalog.pop(self.tid, None)
            return True

    def indexes(self) -> list[dict[str, Any]]:
        """The table's indexes: ``[{"fields": (...), "unique": bool}, ...]``."""
        with self._tx() as tx:
            return [{"fields": i.fields, "unique": i.unique} for i in self._indexes(tx)]

    def _row(self, tx: Transaction) -> dict[str, Any]:
        row = tx.read(CATALOG, self._catalog_key)
        spec = None if row is None else unpack_doc(row)
        if spec is None or spec["id"] != self.tid:  # dropped (and perhaps made again)
            raise TableNotFound(table=self.name)
        return spec

    # -- writes ----------------------------------------------------------------

    def insert(self, doc: dict[str, Any]) -> Any:
        """Store a new document; return its primary key (assigned if missing)."""
        with self._tx() as tx:
            doc = self._own(doc)
            pk = doc.get(self.primary_key)
            if pk is None:  # an auto id, skipping any a caller chose explicitly
                while True:
                    pk = self.db._new_id(self.tid)
                    key = self._key(pk)
                    if tx.read(self.tid, key) is None:
                        break
                doc[self.primary_key] = pk
            else:
                key = self._key(pk)
                if tx.read(self.tid, key) is not None:
                    raise UniqueViolation(
                        f"{self.name}: a record with {self.primary_key} = {pk!r} exists",
                        table=self.name,
                        field=self.primary_key,
                        value=pk,
                    )
            self._write(tx, key, doc)
            return pk

    def insert_many(self, docs: list[dict[str, Any]]) -> list[Any]:
        """Insert every document, or none (one bad document writes nothing)."""
        with self._tx() as tx:
            depth = tx.savepoint()
            try:
                ids = [self.insert(doc) for doc in docs]
            except BaseException:
                tx.rollback_to(depth)
                raise
            tx.release_savepoint(depth)
            return ids

    def put(self, pk: Any, doc: dict[str, Any]) -> None:
        """Store `doc` under `pk`, replacing whatever is there (upsert)."""
        with self._tx() as tx:
            doc = self._own(doc)
            doc[self.primary_key] = pk
            self._write(tx, self._key(pk), doc)

    def update(self, target: Any, changes: dict[str, Any] | Callable[[dict[str, Any]], Any]) -> int:
        """Merge `changes` into a record (or replace it by `changes(doc)`): the
        record with primary key `target`, or every record a query `target`
        matches.  Returns how many records changed."""
        if not (callable(changes) or isinstance(changes, dict)):
            raise ValidationError(
                f"update takes a dict or a callable, not {type(changes).__name__}"
            )
        with self._tx() as tx:
            if _is_query(target):
                docs = list(self._select(tx, compile_query(target)))
            else:
                packed = tx.read(self.tid, self._key(target))
                docs = [] if packed is None else [unpack_doc(packed)]
            depth = tx.savepoint()  # B1: all of them or, on an error, none
            try:
                for doc in docs:
                    pk = doc[self.primary_key]
                    if callable(changes):
                        new = changes(doc)
                        doc = doc if new is None else self._own(new)
                    else:
                        doc.update(changes)
                    doc[self.primary_key] = pk
                    self._write(tx, self._key(pk), doc)
            except BaseException:
                tx.rollback_to(depth)
                raise
            tx.release_savepoint(depth)
            return len(docs)

    def delete(self, target: Any) -> int:
        """Delete the record with primary key `target`, or every record a query
        `target` matches; return how many."""
        with self._tx() as tx:
            if _is_query(target):
                keys = [
                    self._key(d[self.primary_key]) for d in self._select(tx, compile_query(target))
                ]
            else:
                key = self._key(target)
                keys = [] if tx.read(self.tid, key) is None else [key]
            for key in keys:
                tx.write(self.tid, key, None)
            return len(keys)

    # -- reads -------------------------------------------------------------------

    def get(self, pk: Any, default: Any = None) -> Any:
        packed = self._read_pk(pk)
        return default if packed is None else unpack_doc(packed)

    def __contains__(self, pk: Any) -> bool:
        return self._read_pk(pk) is not None

    def _read_pk(self, pk: Any) -> bytes | None:
        """The packed document under `pk` as the current transaction sees it.
        Inside a block it reads directly: the hottest call of a reader, where
        a scope object and its enter and exit cost ~10% of a point read."""
        db = self.db
        tx = None if db._closed else db.current()
        if tx is None:  # a one-operation transaction, or ClosedError
            with self._tx() as tx:
                return tx.read(self.tid, self._key(pk))
        with translate():
            return tx.read(self.tid, self._key(pk))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self._tx() as tx:
            return iter([unpack_doc(packed) for _key, packed in tx.scan(self.tid)])

    def _plan(
        self,
        tx: Transaction,
        query: Query,
        order_by: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Plan:
        return plan(
            query,
            self._indexes(tx),
            order_by=order_by,
            limit=limit,
            offset=offset,
            primary_key=self.primary_key,
        )

    def _select(
        self, tx: Transaction, query: Query, p: Plan | None = None
    ) -> Iterator[dict[str, Any]]:
        """The records `query` matches, in the plan's order (B5); no sort, no cut."""
        docs = self._matches(tx, query, p or self._plan(tx, query), decode=True)
        return cast("Iterator[dict[str, Any]]", docs)  # decode=True: never None

    def _matches(
        self, tx: Transaction, query: Query, p: Plan, *, decode: bool
    ) -> Iterator[dict[str, Any] | None]:
        """`_select`'s records; with `decode` false, None for each record whose
        covering entry alone says it matches (B6), undecoded."""
        if p.index is None:
            for _key, packed in tx.scan(self.tid):
                doc = unpack_doc(packed)
                if query(doc):
                    yield doc
            return
        index, tid = p.index, self.tid
        exact = p.exact  # covered hits need no check (B6)
        read, sees_head = tx.reader(tid), tx.head_reader(tid)
        every = sees_head is sees_every_head
        visible_ts = tx.version_reader(tid) if exact and not decode else None
        for lo, hi in reversed(p.ranges) if p.reverse else p.ranges:
            for entry, covered in tx.index_entries(tid, index, lo, hi, reverse=p.reverse):
                values, key = split_entry(entry)
                if type(covered) is tuple:  # a memtable entry: the ts of its versions
                    if visible_ts is not None:  # count (B6)
                        ts = visible_ts(key)
                        if ts is not MISSING:
                            if ts in covered:
                                yield None
                            continue
                elif type(covered) is bytes and sees_head is not None:
                    # versions.py V5.  If this snapshot sees the head, `covered`
                    # is its document, or b"" for an older version; if not, it
                    # sees a memtable version or its own write, whose entries
                    # come from their own parts (merge_entries keeps those).
                    if covered and (every or sees_head(key)):
                        if exact:
                            yield unpack_doc(covered) if decode else None
                            continue
                        doc = unpack_doc(covered)
                        if query(doc):
                            yield doc
                    continue
                found = read(key)
                if found is None:
                    continue
                doc = unpack_doc(found)
                if values_key(doc, index) == values and query(doc):
                    yield doc

    def find(
        self,
        query: QueryLike = None,
        *,
        order_by: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Result:
        """The records `query` matches (None: all), as a `Result` list; `order_by`
        a field ("age") or descending ("-age"), then `offset` and `limit`."""
        q = compile_query(query)
        with self._tx() as tx:
            p = self._plan(tx, q, order_by, limit, offset)
            return Result(self._run(tx, q, p), primary_key=self.primary_key)

    def _run(self, tx: Transaction, query: Query, p: Plan) -> list[dict[str, Any]]:
        docs: Iterable[dict[str, Any]] = self._select(tx, query, p)
        if p.order is not None and not p.ordered:
            path, descending = p.order
            pk = self.primary_key
            docs = sorted(
                docs, key=lambda d: (order_key(d, path), encode_key((d[pk],))), reverse=descending
            )
        stop = None if p.limit is None else p.offset + p.limit
        return list(itertools.islice(docs, p.offset, stop))

    def find_one(self, query: QueryLike = None) -> dict[str, Any] | None:
        """The first record `query` matches, or None."""
        q = compile_query(query)
        with self._tx() as tx:
            for doc in self._select(tx, q):
                return doc
            return None

    def count(self, query: QueryLike = None) -> int:
        """How many records `query` matches (None: all)."""
        q = compile_query(query)
        with self._tx() as tx:
            if isinstance(q, Everything):
                return tx.count(self.tid)  # no record read (versions.py V8)
            return sum(1 for _doc in self._matches(tx, q, self._plan(tx, q), decode=False))

    def explain(
        self,
        query: QueryLike = None,
        *,
        order_by: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> str:
        """How `find(query, ...)` would run: which index and bounds, or a full scan."""
        q = compile_query(query)
        with self._tx() as tx:
            return self._plan(tx, q, order_by, limit, offset).explain()

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"<mvcc.Table {self.name!r}>"
