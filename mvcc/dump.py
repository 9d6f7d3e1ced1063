"""Export and import: every table of a database as JSON Lines, and back.

Responsibility
--------------
`export(db, path)` writes what one snapshot holds (each table's definition,
then its records in primary-key order) to a text file, one JSON object a
line, streaming.  `import_file(db, path)` reads such a file back into a
database (an empty directory, or one whose tables agree with the file's
definitions), checking every line before it writes any.  The value
encoding (`encode_value`, `decode_line`) makes every document the record
codec accepts (storage/codec.py: None, bool, int in [-2**63, 2**64 - 1],
float, str, bytes, list, dict with str keys) survive JSON exactly.

Invariants
(E1) One snapshot: an export reads the catalog and every record through one
     readonly transaction of its own (not the caller's, whose writes are not
     committed): the file holds every commit at or before its snapshot ts
     whole, nothing after it, across all tables.
(E2) Exact round trip: for every document the codec accepts,
     `decode_line(json(encode_value(v)))` equals `v` with `type(x) is
     type(y)` at every node, floats bit for bit (NaN payloads and -0.0
     included), dict key order kept.  The codec refuses tuples, sets,
     datetimes and non-str dict keys, so no document holds one and the
     encoding needs no tag for them.
(E3) Export streams: it holds one record at a time (besides the catalog and
     what `Transaction.scan` lists of the memtable), never a table.
(E4) Nothing of a bad file is written: phase 1 checks every line (JSON,
     tags, line kinds, definitions against existing tables, schema, codec,
     primary key, indexes, unique values within the file and against the
     database) before phase 2 commits anything.  The error is the
     `ValidationError` or `UniqueViolation` of the first bad line, its
     message starts with ``<file>, line <n>:`` and its `line` attribute is n.
(E5) A file whose records fit in one batch (`BATCH_BYTES`, `BATCH_RECORDS`)
     is imported by one transaction: all or nothing, across a crash too.  A
     larger file is committed batch by batch, in file order, once phase 1
     passed: a crash, or a concurrent writer that takes one of its keys or
     unique values between the phases, leaves a prefix of whole batches
     committed, and the error says which lines (`committed` attribute).
(E6) Import adds: a record whose key the table already holds is a
     UniqueViolation (as `Table.insert`, table.py B3); nothing is replaced.
(E7) A file is complete only with its end line, last, whose counts match
     the lines before it: a truncated export is refused, not half-imported.
(E8) Phase 2 commits only what phase 1 checked: each batch's lines are
     hashed in phase 1 and again before the batch commits; a file changed
     in between stops the import.

Line format (UTF-8, one JSON object a line, ``\\n`` after each)
--------------------------------------------------------------
=========  =============================================================  ===========
line       object                                                         where
=========  =============================================================  ===========
header     ``{"mvcc_export": 1, "snapshot_ts": S}``                       first line
table      ``{"table": name, "primary_key": field, "indexes": [...],``    before the
           ``"unique": [...], "schema": spec or null}``: the keyword      table's
           arguments of ``db.table(name, ...)``; an index is a field      records,
           (str) or a list of fields; `schema` a value as below           once
record     ``{"table": name, "key": pk, "doc": document}``; pk and the    after its
           document are values as below; the document holds the          table line
           primary-key field, equal to `key` as a key (import adds it
           when it is missing)
end        ``{"end": {"tables": T, "records": R}}``: the counts of the    last line
           table and record lines
=========  =============================================================  ===========

On import, `snapshot_ts` is informational, and a table line may leave out
`primary_key` ("_id"), `indexes`, `unique` (none) and `schema` (null).

Values: JSON as it is, except

=========================  ==================================================
JSON                       value
=========================  ==================================================
number with ``.`` or       a float (finite; Python's repr, which round-trips)
``e``
number without             an int (written so only in [-(2**53 - 1),
                           2**53 - 1], exact in any JSON reader)
``{"$int": "<decimal>"}``  an int, any size the codec takes
``{"$float": s}``          a float that JSON cannot write: s is ``"nan"``,
                           ``"inf"``, ``"-inf"``, or ``"0x"`` + 16 hex digits,
                           the IEEE 754 bits of a NaN other than the default
                           one (0x7ff8000000000000)
``{"$bytes": "<base64>"}`` bytes (RFC 4648 standard alphabet, padded)
``{"$$k": ...}``           a dict key that begins with ``$`` gets one more
                           ``$`` in front; an object with a key beginning with
                           a single ``$`` is a tag, and nothing else may be in
                           it; an unknown tag is an error
=========================  ==================================================

Import: two phases and the batch limit
--------------------------------------
A transaction keeps its write set in memory and commits it as one WAL frame,
whose payload is an encoded value of at most 16 MiB (storage.codec
MAX_VALUE_SIZE): one transaction cannot carry a bigger import at all.  So
records are grouped in batches of at most BATCH_BYTES = 8 MiB of encoded
records (a record is estimated before its insert at 3 bytes per byte of its
line, msgpack's worst case: the float ``1.0`` is 9 bytes) and at most
BATCH_RECORDS = 50,000 records (the write set's Python overhead, ~0.3 KB a
record).  Phase 1 runs each batch in a transaction that it rolls back (the
same `db.table` / `Table.insert` a commit would run, so phase 2 cannot fail
on the data) and keeps across batches what a rolled-back batch no longer
shows: every primary key and unique-index value of the file, as encoded
bytes.  If the whole file was one batch, phase 1 commits it instead; else
phase 2 reads the file again and commits batch by batch.

Memory: one batch's write set (with the frame and its ciphertext at commit,
~4x 8 MiB at worst) plus the keys and unique values of the file, ~80 bytes
each: a file of 10 million records with one unique index holds ~1.6 GB of
them.  Rejected: one transaction for the file (impossible past 16 MiB, and
it would hold everything in memory); committing batches without phase 1 (a
bad line would leave the lines before it written); staging the records under
hidden tables renamed in place by one last commit (atomic at any size, but
hidden tables would show in `tables()`, `stats()` and `check`, and a crash
would leave them behind).

Auto ids: an import keeps the file's keys, then moves each table's id
sequence past its largest int key (mvcc/ids.py Q3), so later inserts get
fresh ids at once.  A crash between the commit and that step leaves the
sequence behind; inserts still get free ids, stepping over the imported
ones (`Table.insert`, ~10 us a key).

Concurrency and fork: both functions take the database a caller has open
and run in the caller's thread; any number may run at once in as many
processes.  An export's snapshot is pinned while it runs (vacuum keeps what
it reads, database.py D1).  An import runs its own transactions, so it
refuses to run inside one.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import itertools
import json
import math
import os
import re
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final

from storage.codec import MAX_VALUE_SIZE, unpack_doc
from storage.keys import decode_key, encode_key

from .errors import ConflictError, Error, UniqueViolation, ValidationError
from .index import IndexDef, unique_prefix
from .memtable import CATALOG
from .schema import Schema
from .transaction import Transaction

if TYPE_CHECKING:
    from .database import Database
    from .table import Table

__all__ = [
    "BATCH_BYTES",
    "BATCH_RECORDS",
    "FORMAT",
    "Progress",
    "decode_line",
    "encode_value",
    "export",
    "import_file",
]

Progress = Callable[[int, "int | None"], None]
"""`progress(done, total)`: records (export) or lines (import) so far, and the
total when it is known (None while it is not)."""

FORMAT: Final = 1  # the header's "mvcc_export"
BATCH_BYTES = 8 * 1024 * 1024  # module docstring; tests lower both
BATCH_RECORDS = 50_000
PROGRESS_EVERY = 1000  # records or lines between two progress calls (tests lower it)
MAX_LINE: Final = 8 * MAX_VALUE_SIZE  # a record's JSON (base64, escapes) stays far below
CONFLICT_RETRIES: Final = 5  # phase 2: times a batch is re-run after a ConflictError
# A record alone in its batch still shares the commit frame with the batch's
# catalog rows and the frame's own array headers: keep this much of the
# frame for them.
FRAME_SLACK: Final = 64 * 1024
_WRITE_OVERHEAD: Final = 32  # per record in the frame: table id, headers (bytes)

_SAFE_INT: Final = 2**53 - 1
_NAN_BITS: Final = 0x7FF8000000000000  # float("nan") on every platform CPython runs on
_BITS = struct.Struct(">Q")
_DOUBLE = struct.Struct(">d")
assert _BITS.size == _DOUBLE.size == 8
_DECIMAL = re.compile(r"-?[0-9]+")
_HEX_BITS = re.compile(r"0x[0-9a-f]{16}")
_TABLE_KEYS: Final = frozenset({"table", "primary_key", "indexes", "unique", "schema"})
_RECORD_KEYS: Final = frozenset({"table", "key", "doc"})


# -- values --------------------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """`value` (a codec value) as plain JSON data, tagged where JSON falls short (E2).

    >>> encode_value({"b": b"hi", "n": 2**64 - 1, "x": float("inf"), "$k": [1.5]})
    {'b': {'$bytes': 'aGk='}, 'n': {'$int': '18446744073709551615'}, 'x': {'$float': 'inf'}, '$$k': [1.5]}
    """  # noqa: E501
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        return value if -_SAFE_INT <= value <= _SAFE_INT else {"$int": str(value)}
    if t is float:
        return value if math.isfinite(value) else {"$float": _float_name(value)}
    if t is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if t is list:
        return [encode_value(item) for item in value]
    if t is dict:
        return {
            ("$" + k if k.startswith("$") else k): encode_value(item) for k, item in value.items()
        }
    # Unreachable for what the codec stores (it refuses every other type).
    raise TypeError(f"cannot export a {t.__name__}")


def _float_name(x: float) -> str:
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    bits = _BITS.unpack(_DOUBLE.pack(x))[0]
    return "nan" if bits == _NAN_BITS else f"0x{bits:016x}"


class _Bad(ValueError):
    """A line that does not decode as an export line; the caller names the line."""


def _object(pairs: list[tuple[str, Any]]) -> Any:
    """json's object_pairs_hook: tags and escaped keys (values are decoded already,
    bottom-up, which is why a `$` key is escaped in place rather than by a wrapper)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k.startswith("$"):
            if k.startswith("$$"):
                k = k[1:]
            elif len(pairs) == 1:
                return _tag(k, v)
            else:
                raise _Bad(
                    f"key {k!r}: a key beginning with one '$' is a tag and must be alone in"
                    f" its object (a key of a document is written with one more '$')"
                )
        if k in out:
            raise _Bad(f"key {k!r} appears twice in one object")
        out[k] = v
    return out


def _tag(tag: str, value: Any) -> Any:
    if type(value) is not str:
        raise _Bad(f"tag {tag!r} takes a str, not {_json_type(value)}")
    if tag == "$bytes":
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise _Bad(f"$bytes: not base64: {exc}") from None
    if tag == "$int":
        if not _DECIMAL.fullmatch(value):
            raise _Bad(f"$int: {value[:40]!r} is not a decimal integer")
        return int(value)
    if tag == "$float":
        named = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(value)
        if named is not None:
            return named
        if not _HEX_BITS.fullmatch(value):
            raise _Bad(f'$float: {value[:40]!r} is not "nan", "inf", "-inf" or 0x + 16 hex digits')
        return _DOUBLE.unpack(_BITS.pack(int(value, 16)))[0]
    raise _Bad(f"unknown tag {tag!r} (known: $bytes, $int, $float; escape a key as '$' + key)")


_JSON_TYPES: Final[dict[type, str]] = {dict: "an object", list: "an array", str: "a string"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value)) or repr(value)


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):  # "1e400" parses as inf: not what the writer meant
        raise _Bad(f"number {text} is out of the float range")
    return x


def _constant(name: str) -> Any:
    raise _Bad(f"{name} is not JSON (a non-finite float is written as a $float tag)")


def decode_line(raw: bytes | str) -> Any:
    """One line of an export as Python data, tags decoded; ValueError if it is not one.

    >>> decode_line('{"b": {"$bytes": "aGk="}, "$$k": {"$float": "-inf"}}')
    {'b': b'hi', '$k': -inf}
    """
    return json.loads(raw, object_pairs_hook=_object, parse_float=_finite, parse_constant=_constant)


def _dumps(obj: Any) -> str:
    # allow_nan=False: a non-finite float must have been tagged; if one was
    # not, that is a bug to raise, not a non-JSON line to write.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


# -- export --------------------------------------------------------------------------------


def export(
    db: Database, path: str | os.PathLike[str], *, progress: Progress | None = None
) -> dict[str, int]:
    """Write every table of one snapshot to `path` (E1, E3); a failure removes the
    partial file.  Returns the counts and the snapshot ts."""
    path = os.fspath(path)
    try:
        out = open(path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
    except OSError as exc:
        raise Error(f"export: cannot write {path}: {exc}") from exc
    try:
        with out:
            result = _export(db, out, progress)
            out.flush()
            if stat.S_ISREG(os.fstat(out.fileno()).st_mode):  # not a pipe or a tty
                os.fsync(out.fileno())
    except BaseException:
        if os.path.isfile(path):
            os.unlink(path)
        raise
    return result


def _export(db: Database, out: IO[str], progress: Progress | None) -> dict[str, int]:
    tables = records = 0
    # 1. one readonly transaction, not the context's: every read below is at
    #    its snapshot, and only committed data is (E1)
    tx = Transaction(db, isolation="snapshot", readonly=True)
    try:
        out.write(_dumps({"mvcc_export": FORMAT, "snapshot_ts": tx.snapshot}) + "\n")
        # 2. the catalog (small), so no scan is open while the tables are read
        catalog = [(str(decode_key(k)[0]), unpack_doc(v)) for k, v in tx.scan(CATALOG)]
        for name, row in catalog:
            # 3. the definition, as db.table's keyword arguments
            out.write(_dumps(_definition(name, row)) + "\n")
            tables += 1
            # 4. the records, in key order, one at a time (E3)
            for key, packed in tx.scan(row["id"]):
                doc = encode_value(unpack_doc(packed))
                pk = encode_value(decode_key(key)[0])
                out.write(_dumps({"table": name, "key": pk, "doc": doc}) + "\n")
                records += 1
                if progress is not None and records % PROGRESS_EVERY == 0:
                    progress(records, None)
        snapshot = tx.snapshot
    finally:
        tx.rollback()  # readonly: only the pin to release
    # 5. the end line (E7)
    out.write(_dumps({"end": {"tables": tables, "records": records}}) + "\n")
    if progress is not None:
        progress(records, records)
    return {"tables": tables, "records": records, "snapshot_ts": snapshot}


def _definition(name: str, row: dict[str, Any]) -> dict[str, Any]:
    plain: list[Any] = []
    unique: list[Any] = []
    for spec in row.get("indexes") or ():
        fields = spec["fields"]
        (unique if spec["unique"] else plain).append(fields[0] if len(fields) == 1 else fields)
    return {
        "table": name,
        "primary_key": row["primary_key"],
        "indexes": plain,
        "unique": unique,
        "schema": encode_value(row.get("schema")),
    }


# -- import --------------------------------------------------------------------------------


@dataclass
class _Batch:
    """Lines committed together: where they start, how many, their hash (E8)."""

    offset: int
    first: int  # line number of its first line
    tables: int  # definitions known when it starts (the first n of `_Import.defs`)
    lines: int = 0
    digest: bytes = b""


@dataclass
class _Table:
    """A table as one batch's transaction has it."""

    table: Table
    uniques: tuple[IndexDef, ...]


# Keys at or above this are left for `Table.insert` to step over: moving the
# sequence there would leave no room for a block below msgpack's 2**64 limit.
_ID_LIMIT = 2**62


@dataclass
class _Import:
    db: Database
    path: str
    file: IO[bytes]
    progress: Progress | None
    defs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> db.table kwargs
    where: dict[str, int] = field(default_factory=dict)  # name -> its table line
    keys: dict[str, set[bytes]] = field(default_factory=dict)  # name -> encoded keys seen
    values: dict[tuple[str, tuple[str, ...]], set[bytes]] = field(default_factory=dict)
    top: dict[str, int] = field(default_factory=dict)  # name -> largest int key (ids Q3)
    records: int = 0
    lines: int = 0  # the file's, end line included (phase 1)
    committed: int = 0  # the last line number committed (phase 2)

    # -- reading ---------------------------------------------------------------

    def _lines(self, first: int) -> Iterator[tuple[int, bytes]]:
        """(line number, raw line) from the file's current position."""
        lineno = first
        while True:
            raw = self.file.readline(MAX_LINE + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE:
                raise self._bad(lineno, f"longer than {MAX_LINE} bytes")
            yield lineno, raw
            lineno += 1

    def _parse(self, lineno: int, raw: bytes) -> dict[str, Any]:
        if not raw.strip():
            raise self._bad(lineno, "empty line")
        try:
            obj = decode_line(raw)
        except _Bad as exc:
            raise self._bad(lineno, str(exc)) from None
        except (ValueError, RecursionError) as exc:
            raise self._bad(lineno, f"not valid JSON: {exc}") from None
        if type(obj) is not dict:
            raise self._bad(lineno, f"a line is a JSON object, not {_json_type(obj)}")
        return obj

    def _bad(self, lineno: int, message: str, name: str = "") -> ValidationError:
        err = ValidationError(f"{self.path}, line {lineno}: {message}", field=name)
        vars(err)["line"] = lineno  # pickles with the error (errors.py X2)
        return err

    def _at(self, lineno: int, exc: Error) -> Error:
        """`exc` (ValidationError, UniqueViolation) naming the line (E4)."""
        err = copy.copy(exc)
        err.args = (f"{self.path}, line {lineno}: {exc}",)
        vars(err)["line"] = lineno
        return err

    def _tick(self, lineno: int, total: int | None) -> None:
        if self.progress is not None and lineno % PROGRESS_EVERY == 0:
            self.progress(lineno, total)

    # -- the two phases ---------------------------------------------------------

    def run(self) -> dict[str, int]:
        self._header()
        batches = self._check()
        if len(batches) > 1:
            self._write(batches)
        for name, top in self.top.items():  # committed: move the auto ids past them
            self.db.ids.advance(self.db.table(name).tid, top)
        if self.progress is not None:
            self.progress(self.lines, self.lines)
        return {
            "tables": len(self.defs),
            "records": self.records,
            "lines": self.lines,
            "batches": len(batches),
        }

    def _header(self) -> None:
        raw = self.file.readline(MAX_LINE + 1)
        if not raw:
            raise self._bad(1, "empty file: not an mvcc export")
        obj = self._parse(1, raw)
        version = obj.get("mvcc_export")
        if version is None or not set(obj) <= {"mvcc_export", "snapshot_ts"}:
            raise self._bad(1, 'not an mvcc export (the first line is {"mvcc_export": 1, ...})')
        if version != FORMAT or type(version) is not int:
            raise self._bad(1, f"export format {version!r} is not supported (this reads 1)")

    def _check(self) -> list[_Batch]:
        """Phase 1 (E4): every line, in batches rolled back; the only batch of a
        small file is committed instead (E5).  Returns the batches."""
        batches: list[_Batch] = []
        lines = self._lines(2)
        pending: tuple[int, bytes] | None = None  # a line that opens the next batch
        ended = False
        while True:
            # A batch starts after the header, or with the line that did not
            # fit in the one before (read already: the file is past it).
            batch = _Batch(self.file.tell(), 2, len(self.defs))
            if pending is not None:
                batch.offset -= len(pending[1])
                batch.first = pending[0]
            digest = hashlib.blake2b(digest_size=16)
            size = count = 0
            with self.db.transaction() as tx:
                tables = self._define_all(tx, batch.tables)
                for lineno, raw in itertools.chain(() if pending is None else [pending], lines):
                    pending = None
                    if ended:
                        raise self._bad(lineno, "a line after the end line")
                    obj = self._parse(lineno, raw)
                    if _is_record(obj):
                        estimate = 3 * len(raw) + _WRITE_OVERHEAD
                        if count and (count >= BATCH_RECORDS or size + estimate > BATCH_BYTES):
                            pending = (lineno, raw)  # it opens the next batch
                            break
                        size += self._record(tx, tables, lineno, obj, check=True)
                        count += 1
                    elif "end" in obj:
                        self._end(lineno, obj)
                        ended = True
                    else:
                        self._define(tx, tables, lineno, obj, check=True)
                    digest.update(raw)
                    batch.lines += 1
                    self._tick(lineno, None)
                batch.digest = digest.digest()
                batches.append(batch)
                if pending is None:  # the end of the file
                    if not ended:
                        last = batch.first + batch.lines - 1
                        raise self._bad(last, "the file ends without its end line (truncated?)")
                    if len(batches) == 1:
                        return batches  # leaving the block commits it: the whole import
                tx.rollback()
            if pending is None:
                return batches

    def _write(self, batches: list[_Batch]) -> None:
        """Phase 2 (E5): commit each batch checked by phase 1, in order.  The file
        is opened again: a seek within the first handle's buffer would not
        read it again, and E8 is about what is in the file now."""
        try:
            self.file = open(self.path, "rb")  # noqa: SIM115  (closed below)
        except OSError as exc:
            raise Error(f"import: cannot read {self.path} again: {exc}") from exc
        with self.file:
            for batch in batches:
                self._commit_batch_retrying(batch)

    def _commit_batch_retrying(self, batch: _Batch) -> None:
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self._commit_batch(batch)
                break
            except ConflictError as exc:
                # Another writer took a key of the batch, or changed a table's
                # catalog row: run it again (a key taken meanwhile then fails).
                if attempt == CONFLICT_RETRIES:
                    raise self._partial(batch, exc) from exc
            except Error as exc:
                raise self._partial(batch, exc) from exc
        self.committed = batch.first + batch.lines - 1

    def _commit_batch(self, batch: _Batch) -> None:
        self.file.seek(batch.offset)
        digest = hashlib.blake2b(digest_size=16)
        with self.db.transaction() as tx:
            tables = self._define_all(tx, batch.tables)
            lines = self._lines(batch.first)
            for lineno, raw in itertools.islice(lines, batch.lines):
                digest.update(raw)
                obj = self._parse(lineno, raw)
                if _is_record(obj):
                    self._record(tx, tables, lineno, obj, check=False)
                elif "end" not in obj:
                    self._define(tx, tables, lineno, obj, check=False)
                self._tick(lineno, self.lines)
            if digest.digest() != batch.digest:  # E8
                tx.rollback()
                raise self._bad(batch.first, "the file changed since it was checked")

    def _partial(self, batch: _Batch, exc: Error) -> Error:
        """The error that stops phase 2, saying what is already committed (E5)."""
        err = copy.copy(exc)
        done = (
            f"lines 2-{self.committed} are committed" if self.committed else "nothing was committed"
        )
        err.args = (
            f"import stopped in the batch of lines {batch.first}-"
            f"{batch.first + batch.lines - 1}: {exc}; {done}",
        )
        vars(err)["committed"] = self.committed
        return err

    # -- lines ------------------------------------------------------------------

    def _define_all(self, tx: Transaction, n: int) -> dict[str, _Table]:
        """The first `n` tables of the file, in `tx` (created there if missing)."""
        tables: dict[str, _Table] = {}
        for name in list(self.defs)[:n]:
            self._open(tx, tables, name, self.defs[name], self.where[name])
        return tables

    def _define(
        self,
        tx: Transaction,
        tables: dict[str, _Table],
        lineno: int,
        obj: dict[str, Any],
        *,
        check: bool,
    ) -> None:
        if "table" not in obj or not set(obj) <= _TABLE_KEYS:
            keys = ", ".join(sorted(obj)) or "none"
            raise self._bad(lineno, f"not a header, table, record or end line (keys: {keys})")
        name = obj["table"]
        if type(name) is not str:
            raise self._bad(lineno, f"a table name is a str, not {_json_type(name)}", "table")
        if check:
            if name in self.defs:
                raise self._bad(lineno, f"table {name!r} is defined twice", "table")
            self.defs[name] = {
                "primary_key": obj.get("primary_key", "_id"),
                "indexes": obj.get("indexes", []),
                "unique": obj.get("unique", []),
                "schema": obj.get("schema"),
            }
            self.where[name] = lineno
        self._open(tx, tables, name, self.defs[name], lineno)

    def _open(
        self,
        tx: Transaction,
        tables: dict[str, _Table],
        name: str,
        kwargs: dict[str, Any],
        lineno: int,
    ) -> None:
        """`db.table(name, **kwargs)` in `tx`; an existing table must agree."""
        try:
            table = self.db.table(name, **kwargs)  # joins tx: a savepoint of it
            if table.primary_key != kwargs["primary_key"]:
                raise ValidationError(
                    f"table {name!r} exists with primary key {table.primary_key!r},"
                    f" not {kwargs['primary_key']!r}",
                    field="primary_key",
                )
            schema = None if kwargs["schema"] is None else Schema.compile(kwargs["schema"])
            if table.schema != schema:
                raise ValidationError(
                    f"table {name!r} exists with another schema: {table.schema!r}",
                    field="schema",
                )
        except (ValidationError, UniqueViolation) as exc:
            raise self._at(lineno, exc) from exc
        uniques = tuple(
            IndexDef(1, tuple(i["fields"]), True) for i in table.indexes() if i["unique"]
        )
        tables[name] = _Table(table, uniques)

    def _record(
        self,
        tx: Transaction,
        tables: dict[str, _Table],
        lineno: int,
        obj: dict[str, Any],
        *,
        check: bool,
    ) -> int:
        """Insert the record of a record line; return its size in the frame."""
        name, pk, doc = obj["table"], obj["key"], obj["doc"]
        entry = tables.get(name) if type(name) is str else None
        if entry is None:
            raise self._bad(lineno, f"no table line for {name!r} before this record", "table")
        table = entry.table
        if type(doc) is not dict:
            raise self._bad(lineno, f"a document is an object, not {_json_type(doc)}", "doc")
        field_name = table.primary_key
        if pk is None:  # insert would take it for "assign an id"
            raise self._bad(lineno, "a record's key is not null", "key")
        try:
            if field_name not in doc:
                doc[field_name] = pk
            elif _key(doc[field_name]) != _key(pk):
                raise ValidationError(
                    f"the document's {field_name} {doc[field_name]!r} is not its key {pk!r}",
                    field=field_name,
                )
            table.insert(doc)  # schema, codec, indexes, the key and unique values (E6)
        except (ValidationError, UniqueViolation) as exc:
            raise self._at(lineno, exc) from exc
        key = encode_key((doc[field_name],))
        packed = tx.writes[(table.tid, key)]
        assert packed is not None
        if check:
            self._unique_across_batches(lineno, name, entry, doc, key)
            self.records += 1
            if type(pk) is int and self.top.get(name, 0) < pk < _ID_LIMIT:
                self.top[name] = pk
            if len(packed) > MAX_VALUE_SIZE - FRAME_SLACK:
                raise self._bad(
                    lineno,
                    f"the record encodes to {len(packed)} bytes: a commit holds at most"
                    f" {MAX_VALUE_SIZE - FRAME_SLACK} of records",
                    field_name,
                )
        return len(packed) + len(key) + _WRITE_OVERHEAD

    def _unique_across_batches(
        self, lineno: int, name: str, entry: _Table, doc: dict[str, Any], key: bytes
    ) -> None:
        """What a rolled-back batch no longer shows the next one (module docstring):
        each key, and each unique value, at most once in the file."""
        keys = self.keys.setdefault(name, set())
        if key in keys:
            pk = doc[entry.table.primary_key]
            raise self._at(
                lineno,
                UniqueViolation(
                    f"{name}: a record with {entry.table.primary_key} = {pk!r} exists",
                    table=name,
                    field=entry.table.primary_key,
                    value=pk,
                ),
            )
        keys.add(key)
        for index in entry.uniques:
            prefix = unique_prefix(doc, index)
            if prefix is None:
                continue
            taken = self.values.setdefault((name, index.fields), set())
            if prefix in taken:
                values = decode_key(prefix)
                value = values[0] if len(values) == 1 else values
                raise self._at(lineno, UniqueViolation(table=name, field=index.name, value=value))
            taken.add(prefix)

    def _end(self, lineno: int, obj: dict[str, Any]) -> None:
        counts = obj["end"]
        if set(obj) != {"end"} or type(counts) is not dict:
            raise self._bad(lineno, 'the end line is {"end": {"tables": T, "records": R}}')
        want = {"tables": len(self.defs), "records": self.records}
        if counts != want:
            raise self._bad(
                lineno, f"the end line counts {counts}, but the file holds {want} (lines lost?)"
            )
        self.lines = lineno


def _is_record(obj: dict[str, Any]) -> bool:
    return set(obj) == _RECORD_KEYS


def _key(pk: Any) -> bytes | None:
    """The key encoding of a primary key (5 and 5.0 are one key), None if it has none."""
    try:
        return encode_key((pk,))
    except Exception:
        return None


def import_file(
    db: Database, path: str | os.PathLike[str], *, progress: Progress | None = None
) -> dict[str, int]:
    """Import the export at `path` (module docstring, E4-E8); returns the counts:
    tables (table lines), records, lines, batches (1: one transaction)."""
    if db.current() is not None:
        raise Error("import runs its own transactions: call it outside a transaction")
    path = os.fspath(path)
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise Error(f"import: cannot read {path}: {exc}") from exc
    with f:
        return _Import(db, path, f, progress).run()
