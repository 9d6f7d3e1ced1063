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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from storage.codec import pack_doc, unpack_doc
from storage.errors import EncodeError
from storage.keys import encode_key

from .errors import ClosedError, UniqueViolation, ValidationError, public_error
from .schema import Schema

if TYPE_CHECKING:
    from .database import Block, Database
    from .transaction import Transaction

__all__ = ["Table"]

Query = Callable[[dict[str, Any]], bool] | dict[str, Any] | None


def _matcher(query: Query) -> Callable[[dict[str, Any]], bool]:
    if query is None:
        return lambda doc: True
    if isinstance(query, dict):
        items = list(query.items())
        return lambda doc: all(k in doc and doc[k] == v for k, v in items)
    if callable(query):
        return query
    raise ValidationError(f"a query is a dict or a callable, not {type(query).__name__}")


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

    def _tx(self) -> _Scope:
        return _Scope(self)

    def _key(self, pk: Any) -> bytes:
        try:
            return encode_key((pk,))
        except EncodeError as exc:
            raise ValidationError(
                f"{self.name}.{self.primary_key}: {pk!r} cannot be a primary key ({exc})",
                field=self.primary_key,
            ) from exc

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
            tx.write(self.tid, key, self._pack(doc))
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
            tx.write(self.tid, self._key(pk), self._pack(doc))

    def update(self, pk: Any, changes: dict[str, Any] | Callable[[dict[str, Any]], Any]) -> int:
        """Merge `changes` into the record (or replace it by `changes(doc)`); 1 or 0."""
        with self._tx() as tx:
            key = self._key(pk)
            packed = tx.read(self.tid, key)
            if packed is None:
                return 0
            doc = unpack_doc(packed)
            if callable(changes):
                new = changes(doc)
                doc = doc if new is None else self._own(new)
            elif isinstance(changes, dict):
                doc.update(changes)
            else:
                raise ValidationError(
                    f"update takes a dict or a callable, not {type(changes).__name__}"
                )
            doc[self.primary_key] = pk
            tx.write(self.tid, key, self._pack(doc))
            return 1

    def delete(self, pk: Any) -> int:
        """Delete the record; 1 if it existed, else 0."""
        with self._tx() as tx:
            key = self._key(pk)
            if tx.read(self.tid, key) is None:
                return 0
            tx.write(self.tid, key, None)
            return 1

    # -- reads -------------------------------------------------------------------

    def get(self, pk: Any, default: Any = None) -> Any:
        with self._tx() as tx:
            packed = tx.read(self.tid, self._key(pk))
            return default if packed is None else unpack_doc(packed)

    def __contains__(self, pk: Any) -> bool:
        with self._tx() as tx:
            return tx.read(self.tid, self._key(pk)) is not None

    def _docs(self) -> Iterator[dict[str, Any]]:
        with self._tx() as tx:
            for _key, packed in tx.scan(self.tid):
                yield unpack_doc(packed)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._docs()))

    def find(self, query: Query = None) -> list[dict[str, Any]]:
        match = _matcher(query)
        return [doc for doc in self._docs() if match(doc)]

    def find_one(self, query: Query = None) -> dict[str, Any] | None:
        match = _matcher(query)
        for doc in self._docs():
            if match(doc):
                return doc
        return None

    def count(self, query: Query = None) -> int:
        match = _matcher(query)
        return sum(1 for doc in self._docs() if match(doc))

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"<mvcc.Table {self.name!r}>"
