"""Export and import (mvcc/dump.py): exact round trip, one snapshot, bad files
write nothing and name the line, batches, encrypted databases.

Invariants cited as (En) are those of mvcc/dump.py.
"""

from __future__ import annotations

import doctest
import json
import math
import os
import random
import re
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import mvcc
from mvcc import dump
from storage.crypto import create_key_file
from storage.keys import encode_key
from tests.conftest import SPAWN

pytestmark = pytest.mark.timeout(120)

FAST = 10  # scrypt log2(n) of the key files made here: ~2 ms per open
NEG_NAN = struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0]
SIGNALING_NAN = struct.unpack(">d", bytes.fromhex("7ff0000000000001"))[0]


def same(a: Any, b: Any) -> bool:
    """Equal with identical types at every node, floats bit for bit, dict order kept."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack(">d", a) == struct.pack(">d", b)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def snapshot_of(db: mvcc.Database) -> dict[str, list[Any]]:
    """Every table's records in key order, and its definition."""
    out: dict[str, list[Any]] = {}
    with db.transaction(readonly=True):
        for name in db.tables():
            t = db.table(name)
            out[name] = [t.primary_key, t.schema, t.indexes(), list(t)]
    return out


def assert_same_db(a: mvcc.Database, b: mvcc.Database) -> None:
    sa, sb = snapshot_of(a), snapshot_of(b)
    assert list(sa) == list(sb)
    for name in sa:
        pk_a, schema_a, idx_a, docs_a = sa[name]
        pk_b, schema_b, idx_b, docs_b = sb[name]
        assert (pk_a, schema_a, idx_a) == (pk_b, schema_b, idx_b), name
        assert len(docs_a) == len(docs_b), name
        for x, y in zip(docs_a, docs_b):
            assert same(x, y), (name, x, y)


@pytest.fixture
def dirs() -> Iterator[Any]:
    """make() -> a fresh directory (tempfile, since hypothesis re-runs a test)."""
    with tempfile.TemporaryDirectory() as root:
        count = iter(range(1_000_000))
        yield lambda: os.path.join(root, str(next(count)))


# -- values (E2) -------------------------------------------------------------------------------


def test_each_value_that_json_cannot_hold_is_tagged() -> None:
    weird_nan = struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0]
    doc = {
        "b": b"\x00\xff",
        "big": 2**64 - 1,
        "neg": -(2**63),
        "safe": 2**53 - 1,
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "odd": weird_nan,
        "$bytes": "not a tag",
        "$": {"$$": 1},
        "z": -0.0,
    }
    encoded = dump.encode_value(doc)
    assert encoded == {
        "b": {"$bytes": "AP8="},
        "big": {"$int": "18446744073709551615"},
        "neg": {"$int": "-9223372036854775808"},
        "safe": 2**53 - 1,
        "nan": {"$float": "nan"},
        "inf": {"$float": "inf"},
        "ninf": {"$float": "-inf"},
        "odd": {"$float": "0xfff8000000000001"},
        "$$bytes": "not a tag",
        "$$": {"$$$": 1},
        "z": -0.0,
    }
    assert same(dump.decode_line(json.dumps(encoded, allow_nan=False)), doc)


def test_doctests() -> None:
    result = doctest.testmod(dump)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"x": NaN}', "NaN is not JSON"),
        ('{"x": 1e400}', "out of the float range"),
        ('{"x": {"$date": "2020-01-01"}}', "unknown tag '$date'"),
        ('{"x": {"$bytes": "AP8=", "y": 1}}', "must be alone"),
        ('{"x": {"$bytes": "A*=="}}', "not base64"),
        ('{"x": {"$int": "1e3"}}', "not a decimal integer"),
        ('{"x": {"$float": "0x12"}}', "16 hex digits"),
        ('{"x": {"$bytes": 5}}', "takes a str"),
        ('{"x": 1, "x": 2}', "appears twice"),
    ],
)
def test_a_value_that_is_not_an_export_value_is_refused(line: str, says: str) -> None:
    with pytest.raises(dump._Bad, match=re.escape(says)):
        dump.decode_line(line)


keys = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["$", "$$", "$bytes", "$int", "$float", "$$x", "a.b", ""]),
).filter(lambda k: k != "_id")
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-(2**53) - 2, -(2**53) + 2) | st.integers(2**53 - 2, 2**53 + 2),
    st.floats(),  # NaN (several payloads), infinities, -0.0, subnormals
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),  # no lone surrogates
    st.binary(max_size=10),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=5)
primary_keys = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),  # 5.0 is key 5: the document keeps the float
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
    st.binary(max_size=10),
    st.booleans(),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    auto=st.lists(documents, max_size=6),
    keyed=st.lists(
        st.tuples(primary_keys, documents), max_size=6, unique_by=lambda kd: encode_key((kd[0],))
    ),
)
@example(
    auto=[{"$bytes": b"x", "n": [math.nan, -math.inf, 2**64 - 1, -0.0]}],
    keyed=[(5.0, {"$": {"$$": -(2**63)}}), (b"\x00", {"odd nans": [NEG_NAN, SIGNALING_NAN]})],
)
def test_export_then_import_gives_back_every_value_exactly(
    dirs: Any, auto: list[dict[str, Any]], keyed: list[tuple[Any, dict[str, Any]]]
) -> None:
    with mvcc.open(dirs(), autovacuum=False) as src, mvcc.open(dirs(), autovacuum=False) as dst:
        with src.transaction():
            a = src.table("auto")
            for doc in auto:
                a.insert(doc)
            k = src.table("keyed", primary_key="pk")
            for pk, doc in keyed:
                k.insert({**doc, "pk": pk})
        path = dirs() + ".jsonl"
        exported = src.export(path)
        assert exported["records"] == len(auto) + len(keyed)
        imported = dst.import_(path)
        assert (imported["tables"], imported["records"], imported["batches"]) == (
            2,
            len(auto) + len(keyed),
            1,
        )
        assert_same_db(src, dst)
        for pk, doc in keyed:  # the float 5.0 stays a float in the document
            assert same(dst.table("keyed").get(pk), {**doc, "pk": pk})


def test_definitions_round_trip(dirs: Any) -> None:
    schema = {
        "email": {"type": "str", "required": True, "max_length": 50},
        "age": {"type": "int", "min": 0},
        "kind": {"type": "enum", "values": ["a", b"b", 2**60]},
        "score": {"type": "float", "max": 1.5},
    }
    with mvcc.open(dirs(), autovacuum=False) as src, mvcc.open(dirs(), autovacuum=False) as dst:
        users = src.table(
            "users",
            primary_key="uid",
            indexes=["age", ("last", "first")],
            unique=["email", ("kind", "age")],
            schema=schema,
        )
        users.insert({"uid": "ann", "email": "ann@x", "age": 3, "kind": b"b", "last": "A"})
        src.table("empty")
        path = dirs() + ".jsonl"
        src.export(path)
        dst.import_(path)
        assert_same_db(src, dst)
        copy = dst.table("users")
        assert copy.primary_key == "uid"
        with pytest.raises(mvcc.UniqueViolation):  # the unique index is back
            copy.insert({"uid": "bob", "email": "ann@x", "age": 4, "kind": "a"})
        with pytest.raises(mvcc.ValidationError, match="age"):  # and the schema
            copy.insert({"uid": "bob", "email": "bob@x", "age": -1})
        assert "index" in copy.explain(mvcc.where("age") == 3)


def test_export_streams_in_key_order_with_progress(
    dirs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dump, "PROGRESS_EVERY", 10)
    calls: list[tuple[int, int | None]] = []
    with mvcc.open(dirs(), autovacuum=False) as db:
        t = db.table("t")
        with db.transaction():
            for i in range(35, 0, -1):
                t.put(i, {"v": i})
        path = dirs() + ".jsonl"
        db.export(path, progress=lambda done, total: calls.append((done, total)))
        lines = [dump.decode_line(x) for x in Path(path).read_text("utf-8").splitlines()]
        assert lines[0]["mvcc_export"] == 1
        assert [x["key"] for x in lines[2:-1]] == list(range(1, 36))
        assert lines[-1] == {"end": {"tables": 1, "records": 35}}
        assert calls == [(10, None), (20, None), (30, None), (35, 35)]
        calls.clear()
        with mvcc.open(dirs(), autovacuum=False) as dst:
            dst.import_(path, progress=lambda done, total: calls.append((done, total)))
        assert calls[-1] == (38, 38) and all(d % 10 == 0 for d, _t in calls[:-1])


# -- one snapshot (E1) ------------------------------------------------------------------------


def test_an_export_inside_a_transaction_holds_only_committed_data(dirs: Any) -> None:
    with mvcc.open(dirs(), autovacuum=False) as db:
        db.table("t").insert({"v": "committed"})
        path = dirs() + ".jsonl"
        with db.transaction():
            db.table("t").insert({"v": "not yet"})
            db.table("new")
            db.export(path)
        lines = [dump.decode_line(x) for x in Path(path).read_text("utf-8").splitlines()]
        assert [x["doc"]["v"] for x in lines if "doc" in x] == ["committed"]
        assert [x["table"] for x in lines if "primary_key" in x] == ["t"]


ACCOUNTS = 40  # per table
BALANCE = 100


def _transfer_forever(path: str, started: Any, stop: Any, commits: Any) -> None:
    """Writer process: move money between random accounts of two tables."""
    rng = random.Random(os.getpid())
    with mvcc.open(path, autovacuum=False) as db:
        tables = [db.table("checking"), db.table("savings")]
        deadline = time.monotonic() + 30  # never outlive a test that forgot it
        while not stop.is_set() and time.monotonic() < deadline:
            src, dst = rng.choice(tables), rng.choice(tables)
            a, b = rng.sample(range(ACCOUNTS), 2)
            try:
                with db.transaction():
                    amount = rng.randint(1, 10)
                    src.update(a, lambda d, n=amount: {**d, "v": d["v"] - n})
                    dst.update(b, lambda d, n=amount: {**d, "v": d["v"] + n})
            except mvcc.ConflictError:
                continue
            with commits.get_lock():
                commits.value += 1
            started.set()


def test_an_export_is_one_snapshot_while_a_writer_commits(
    tmp_path: Path, procs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "db")
    with mvcc.open(path, autovacuum=False) as db:
        with db.transaction():
            for name in ("checking", "savings"):
                t = db.table(name)
                for i in range(ACCOUNTS):
                    t.put(i, {"v": BALANCE})
        started, stop, commits = SPAWN.Event(), SPAWN.Event(), SPAWN.Value("i", 0)
        writer = procs(_transfer_forever, path, started, stop, commits)
        assert started.wait(20), "the writer process did not commit"
        monkeypatch.setattr(dump, "PROGRESS_EVERY", 1)
        before = commits.value
        out = str(tmp_path / "bank.jsonl")
        db.export(out, progress=lambda done, total: time.sleep(0.01))  # ~0.8 s
        during = commits.value - before
        stop.set()
        writer.join(20)
        assert writer.exitcode == 0
    assert during >= 5, f"only {during} commits during the export: it proved nothing"
    lines = [dump.decode_line(x) for x in Path(out).read_text("utf-8").splitlines()]
    records = [x for x in lines if "doc" in x]
    assert len(records) == 2 * ACCOUNTS
    assert sum(x["doc"]["v"] for x in records) == 2 * ACCOUNTS * BALANCE
    with mvcc.open(str(tmp_path / "copy"), autovacuum=False) as dst:
        dst.import_(out)
        total = sum(d["v"] for name in ("checking", "savings") for d in dst.table(name))
        assert total == 2 * ACCOUNTS * BALANCE


# -- bad files write nothing (E4, E7) ---------------------------------------------------------


def good_lines(n: int = 12) -> list[dict[str, Any]]:
    schema = {"email": {"type": "str", "required": True}}
    return [
        {"mvcc_export": 1, "snapshot_ts": 7},
        {
            "table": "users",
            "primary_key": "_id",
            "indexes": [],
            "unique": ["email"],
            "schema": schema,
        },
        *(
            {"table": "users", "key": i, "doc": {"email": f"u{i}@x", "_id": i}}
            for i in range(1, n + 1)
        ),
    ]


def write(path: Path, lines: list[Any], *, end: bool = True) -> str:
    text = [x if isinstance(x, str) else json.dumps(x) for x in lines]
    if end:
        records = sum(1 for x in lines if isinstance(x, str) or "doc" in x)
        tables = sum(1 for x in lines if isinstance(x, dict) and "doc" not in x and "table" in x)
        text.append(json.dumps({"end": {"tables": tables, "records": records}}))
    path.write_text("".join(t + "\n" for t in text), "utf-8")
    return str(path)


BAD_RECORDS = {
    "schema violation": (
        '{"table": "users", "key": 99, "doc": {"email": 5}}',
        mvcc.ValidationError,
        "email",
    ),
    "duplicate unique value": (
        '{"table": "users", "key": 99, "doc": {"email": "u1@x"}}',
        mvcc.UniqueViolation,
        "email",
    ),
    "duplicate key": (
        '{"table": "users", "key": 2, "doc": {"email": "new@x"}}',
        mvcc.UniqueViolation,
        "_id",
    ),
    "malformed JSON": (
        '{"table": "users", "key": 99, "doc": {"email": ',
        mvcc.ValidationError,
        "JSON",
    ),
    "unknown tag": (
        '{"table": "users", "key": 99, "doc": {"email": "e", "t": {"$date": "2020"}}}',
        mvcc.ValidationError,
        "unknown tag",
    ),
    "key is not the document's": (
        '{"table": "users", "key": 99, "doc": {"email": "e", "_id": 98}}',
        mvcc.ValidationError,
        "not its key",
    ),
    "no table line": (
        '{"table": "other", "key": 1, "doc": {}}',
        mvcc.ValidationError,
        "no table line",
    ),
    "not a line kind": ('{"tabel": "users"}', mvcc.ValidationError, "not a header"),
    "not an object": ("[1, 2]", mvcc.ValidationError, "an array"),
    "empty line": ("", mvcc.ValidationError, "empty line"),
    "too big an int": (
        '{"table": "users", "key": 99, "doc": {"email": "e", "n": {"$int": "' + str(2**64) + '"}}}',
        mvcc.ValidationError,
        "outside",
    ),
}


@pytest.mark.parametrize("batch", [dump.BATCH_RECORDS, 3], ids=["one batch", "batches of 3"])
@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_a_bad_record_line_writes_nothing_and_names_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, batch: int
) -> None:
    monkeypatch.setattr(dump, "BATCH_RECORDS", batch)
    line, error, says = BAD_RECORDS[case]
    lines: list[Any] = good_lines()
    lines.insert(len(lines) - 1, line)  # line 14 of 16: past the first batches of 3
    path = write(tmp_path / "bad.jsonl", lines)
    with mvcc.open(str(tmp_path / "db"), autovacuum=False) as db:
        with pytest.raises(error) as info:
            db.import_(path)
        assert info.value.line == 14
        assert "bad.jsonl, line 14: " in str(info.value) and says in str(info.value)
        assert db.tables() == []  # nothing of it was written (E4)


@pytest.mark.parametrize(
    ("edit", "lineno", "says"),
    [
        (lambda lines: lines[:-1], 14, "without its end line"),  # truncated export
        (lambda lines: [*lines[:5], *lines[6:]], 14, "counts"),  # a line lost
        (lambda lines: [*lines, lines[2]], 16, "after the end line"),
        (lambda lines: lines[1:], 1, "not an mvcc export"),
        (lambda lines: [{"mvcc_export": 2}, *lines[1:]], 1, "format 2"),
        (lambda lines: [*lines[:2], lines[1], *lines[2:]], 3, "defined twice"),
        (lambda lines: [lines[0], {"table": "users", "indexes": 5}, *lines[2:]], 2, "indexes"),
    ],
)
def test_a_damaged_file_writes_nothing_and_names_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Any, lineno: int, says: str
) -> None:
    monkeypatch.setattr(dump, "BATCH_RECORDS", 3)
    good = Path(write(tmp_path / "good.jsonl", good_lines())).read_text("utf-8").splitlines()
    lines = edit([json.loads(x) for x in good])
    path = write(tmp_path / "bad.jsonl", lines, end=False)
    with mvcc.open(str(tmp_path / "db"), autovacuum=False) as db:
        with pytest.raises(mvcc.ValidationError, match=says) as info:
            db.import_(path)
        assert info.value.line == lineno
        assert db.tables() == []


def test_an_import_clashing_with_the_database_writes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", good_lines())
    with mvcc.open(str(tmp_path / "db"), autovacuum=False) as db:
        users = db.table(
            "users", unique=["email"], schema={"email": {"type": "str", "required": True}}
        )
        users.put(100, {"email": "u5@x"})  # the file's line 7 wants it
        users.put(3, {"email": "old@x"})  # the file's line 5 wants this key
        with pytest.raises(mvcc.UniqueViolation) as info:
            db.import_(path)
        assert info.value.line == 5  # E6: the existing key; insert never replaces
        users.delete(3)
        with pytest.raises(mvcc.UniqueViolation, match=r"line 7: .*u5@x"):
            db.import_(path)
        assert [d["_id"] for d in users] == [100]
        users.delete(100)
        assert db.import_(path)["records"] == 12
        assert len(users) == 12


def test_a_table_that_exists_must_agree_with_its_table_line(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", good_lines())
    with mvcc.open(str(tmp_path / "db"), autovacuum=False) as db:
        db.table("users", primary_key="name")
        with pytest.raises(mvcc.ValidationError, match=r"line 2: .*primary key 'name'"):
            db.import_(path)
        db.drop_table("users")
        db.table("users", schema={"email": {"type": "int"}})
        with pytest.raises(mvcc.ValidationError, match=r"line 2: .*another schema"):
            db.import_(path)


def test_import_inside_a_transaction_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", good_lines())
    with (
        mvcc.open(str(tmp_path / "db"), autovacuum=False) as db,
        db.transaction(),
        pytest.raises(mvcc.Error, match="outside a transaction"),
    ):
        db.import_(path)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with mvcc.open(str(tmp_path / "db"), autovacuum=False) as db:
        with pytest.raises(mvcc.Error, match="cannot read"):
            db.import_(tmp_path / "nope.jsonl")
        with pytest.raises(mvcc.Error, match="cannot write"):
            db.export(tmp_path / "no" / "such" / "dir.jsonl")


# -- batches (E5, E8) -------------------------------------------------------------------------


def test_a_large_import_commits_in_batches_after_checking_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dump, "BATCH_RECORDS", 4)
    lines = good_lines(30)
    lines.insert(17, {"table": "more", "primary_key": "k"})  # a table line mid-file
    lines.insert(25, {"table": "more", "key": "x", "doc": {"k": "x", "b": {"$bytes": "AA=="}}})
    path = write(tmp_path / "in.jsonl", lines)
    with mvcc.open(str(tmp_path / "db"), autovacuum=False) as db:
        result = db.import_(path)
        assert result == {"tables": 2, "records": 31, "lines": 35, "batches": 8}
        assert [d["_id"] for d in db.table("users")] == list(range(1, 31))
        assert list(db.table("more")) == [{"k": "x", "b": b"\x00"}]


def test_a_unique_value_repeated_in_a_later_batch_is_found_before_any_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dump, "BATCH_RECORDS", 2)
    lines = good_lines(10)
    lines.append({"table": "users", "key": 50, "doc": {"email": "u1@x"}})  # batch 1 has u1
    path = write(tmp_path / "in.jsonl", lines)
    with mvcc.open(str(tmp_path / "db"), autovacuum=False) as db:
        with pytest.raises(mvcc.UniqueViolation, match=r"line 13: .*u1@x"):
            db.import_(path)
        assert db.tables() == []


def test_a_file_changed_between_the_phases_stops_the_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dump, "BATCH_RECORDS", 4)
    monkeypatch.setattr(dump, "PROGRESS_EVERY", 1)
    path = Path(write(tmp_path / "in.jsonl", good_lines(12)))

    def tamper(done: int, total: int | None) -> None:
        if done == 2 and total is None:  # phase 1 has begun: change line 12, same length
            path.write_bytes(path.read_bytes().replace(b"u10@x", b"u99@x"))

    with mvcc.open(str(tmp_path / "db"), autovacuum=False) as db:
        with pytest.raises(mvcc.ValidationError, match="changed since it was checked") as info:
            db.import_(path, progress=tamper)
        assert info.value.committed == 10  # lines 2-10: the first two batches (E5)
        assert len(db.table("users")) == 8


# -- encryption --------------------------------------------------------------------------------


def test_an_encrypted_database_exports_and_imports(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    for d in (src, dst):
        d.mkdir()
        create_key_file(d / "key", passphrase="pw-" + d.name, scrypt_log2n=FAST)
    out = str(tmp_path / "out.jsonl")
    with mvcc.open(str(src), passphrase="pw-src", autovacuum=False) as a:
        t = a.table("secret", unique=["n"])
        t.insert({"n": 1, "b": b"\x01"})
        a.checkpoint()  # half in the page file, half in the WAL
        t.insert({"n": 2, "b": b"\x02"})
        assert a.export(out)["records"] == 2
        with mvcc.open(str(dst), passphrase="pw-dst", autovacuum=False) as b:
            b.import_(out)
            assert_same_db(a, b)


def test_after_an_import_auto_ids_start_past_the_imported_keys(tmp_path: Path) -> None:
    """ids.py Q3: the sequence moves past the largest imported int key, so the
    next insert takes a fresh id at once (it would step over each one else)."""
    path = str(tmp_path / "dump.jsonl")
    with mvcc.open(str(tmp_path / "src"), autovacuum=False) as src:
        t = src.table("t")
        with src.transaction():
            for pk in (5, 70_000, 123):
                t.put(pk, {"v": pk})
        src.export(path)
    with mvcc.open(str(tmp_path / "dst"), autovacuum=False) as dst:
        dst.import_(path)
        assert dst.table("t").insert({"v": "new"}) == 70_001
    with mvcc.open(str(tmp_path / "dst"), autovacuum=False) as again:  # another process's view
        assert again.table("t").insert({"v": "newer"}) > 70_001
