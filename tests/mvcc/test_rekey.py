"""`db.rekey`: the data key is wrapped anew, no page is rewritten, and a crash or
a concurrent rekey leaves exactly one secret that opens the directory."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mvcc
from storage.crypto import DEFAULT_SCRYPT_LOG2N, create_key_file, read_key_file_info
from tests.conftest import JOIN_TIMEOUT, SPAWN

pytestmark = pytest.mark.timeout(120)

FAST = 10  # scrypt log2(n): ~2 ms per derivation; rekey keeps the file's cost
A, B = "passphrase A", "passphrase B"
RAW = bytes(range(32))
KILLS = 24


def encrypted(path: Path, passphrase: str = A) -> Path:
    """A new directory whose key file has the fast scrypt cost."""
    path.mkdir()
    create_key_file(path / "key", passphrase=passphrase, scrypt_log2n=FAST)
    return path


def opens(path: Path, **secret: Any) -> bool:
    try:
        with mvcc.open(str(path), autovacuum=False, **secret):
            return True
    except mvcc.InvalidKey:
        return False


def digests(path: Path) -> dict[str, str]:
    """Every data file but the key file and the locks/state/registry, hashed."""
    out = {}
    for f in sorted(path.rglob("*")):
        rel = str(f.relative_to(path))
        if f.is_file() and (rel == "pages" or rel.startswith("wal")):
            out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture
def db(tmp_path: Path) -> Iterator[mvcc.Database]:
    with mvcc.open(str(encrypted(tmp_path / "db")), passphrase=A, autovacuum=False) as d:
        yield d


def test_the_new_passphrase_opens_the_old_one_is_refused_no_page_changes(
    db: mvcc.Database,
) -> None:
    t = db.table("t", unique=["n"])
    for i in range(50):
        t.insert({"n": i, "pad": "x" * 200})
    db.checkpoint()  # pages hold data, and the WAL a tail after them
    t.insert({"n": 50})
    path = Path(db.path)
    before, kid = digests(path), read_key_file_info(path / "key").key_id
    assert "pages" in before and len(before) > 1
    db.rekey(B)
    assert digests(path) == before  # no page or frame rewritten
    info = read_key_file_info(path / "key")
    assert (info.key_id, info.log2n) == (kid, FAST)  # the same data key, the same cost
    assert not (path / "key.tmp").exists()
    t.insert({"n": 51})  # the open database goes on with its data key
    with pytest.raises(mvcc.InvalidKey, match="wrong passphrase"):
        mvcc.open(str(path), passphrase=A, autovacuum=False)
    with mvcc.open(str(path), passphrase=B, autovacuum=False) as again:
        assert again.table("t").count() == 52
    assert mvcc.check(str(path), passphrase=B).ok


def test_another_open_database_keeps_working_after_a_rekey(db: mvcc.Database) -> None:
    with mvcc.open(db.path, passphrase=A, autovacuum=False) as other:
        db.rekey(B)
        other.table("t").insert({"v": 1})  # its data key is unchanged
        other.checkpoint()
        assert db.table("t").count() == 1
    assert not opens(Path(db.path), passphrase=A)
    assert opens(Path(db.path), passphrase=B)


def test_a_raw_key_replaces_a_passphrase_and_back(db: mvcc.Database) -> None:
    path = Path(db.path)
    db.table("t").insert({"v": 1})
    db.rekey(key=RAW)
    assert read_key_file_info(path / "key").kdf_name == "key"
    with pytest.raises(mvcc.InvalidKey, match="pass key="):
        mvcc.open(str(path), passphrase=A, autovacuum=False)
    with mvcc.open(str(path), key=RAW, autovacuum=False) as again:
        assert again.table("t").count() == 1
        again.rekey(B)
    info = read_key_file_info(path / "key")
    # A file that had a raw key has no cost to keep: the default one.
    assert (info.kdf_name, info.log2n) == ("passphrase", DEFAULT_SCRYPT_LOG2N)
    assert not opens(path, key=RAW)
    assert opens(path, passphrase=B)


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        ((), {}, "exactly one"),
        ((B,), {"key": RAW}, "exactly one"),
        (("",), {}, "must not be empty"),
        ((), {"key": b"short"}, "32 bytes"),
    ],
)
def test_a_bad_new_secret_is_refused_and_the_old_one_still_opens(
    db: mvcc.Database, args: tuple[Any, ...], kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(mvcc.InvalidKey, match=says):
        db.rekey(*args, **kwargs)
    assert opens(Path(db.path), passphrase=A)


def test_an_unencrypted_directory_cannot_be_rekeyed(tmp_path: Path) -> None:
    with mvcc.open(str(tmp_path), autovacuum=False) as db:
        db.table("t").insert({"v": 1})
        with pytest.raises(mvcc.InvalidKey, match="is not encrypted"):
            db.rekey(B)
    assert not (tmp_path / "key").exists()
    with mvcc.open(str(tmp_path), autovacuum=False) as db:
        assert db.table("t").count() == 1


def test_a_closed_database_cannot_be_rekeyed(db: mvcc.Database) -> None:
    db.close()
    with pytest.raises(mvcc.ClosedError):
        db.rekey(B)


# -- crashes and races (storage/crypto.py I4, the sequence lock) --------------------------------

REKEY_FOREVER = textwrap.dedent(
    """
    import sys, mvcc
    path, current, other = sys.argv[1:]
    db = mvcc.open(path, passphrase=current, autovacuum=False)
    print("ready", flush=True)
    while True:
        db.rekey(other)
        db.rekey(current)
    """
)


def test_sigkill_during_rekeys_leaves_exactly_one_passphrase(tmp_path: Path) -> None:
    path = encrypted(tmp_path / "db")
    with mvcc.open(str(path), passphrase=A, autovacuum=False) as db:
        db.table("t").insert({"v": 1})
    rng = random.Random(2024)
    current, changes, torn = A, 0, 0
    for _ in range(KILLS):
        other = B if current == A else A
        child = subprocess.Popen(
            [sys.executable, "-c", REKEY_FOREVER, str(path), current, other],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            ready = child.stdout.readline() if child.stdout else b""
            assert ready == b"ready\n", child.communicate(timeout=JOIN_TIMEOUT)[1].decode()
            time.sleep(rng.uniform(0.0, 0.03))  # a random moment among the rekeys (ms each)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.communicate(timeout=JOIN_TIMEOUT)
        assert child.returncode == -signal.SIGKILL
        torn += (path / "key.tmp").exists()
        valid = [p for p in (A, B) if opens(path, passphrase=p)]
        assert len(valid) == 1, f"after a kill, {valid} open the directory"
        changes += valid[0] != current
        current = valid[0]
    assert changes > 0, "no kill landed after an odd number of rekeys: the test proved nothing"
    with mvcc.open(str(path), passphrase=current, autovacuum=False) as db:
        assert list(db.table("t")) == [{"v": 1, "_id": 1}]


def _rekey_many(path: str, mine: str, start: Any, errors: Any) -> None:
    """Rekey process: open with A (under the other's rekeys, A or B may be
    current: retry), then rekey to its own passphrase again and again."""
    try:
        start.wait(JOIN_TIMEOUT)
        db = None
        while db is None:
            for p in (A, B):
                try:
                    db = mvcc.open(path, passphrase=p, autovacuum=False)
                    break
                except mvcc.InvalidKey:
                    continue
        for _ in range(40):
            db.rekey(mine)
        db.close()
    except BaseException as exc:
        errors.put(repr(exc))
        raise


def test_two_concurrent_rekeys_are_serialised(tmp_path: Path, procs: Any) -> None:
    path = encrypted(tmp_path / "db")
    start, errors = SPAWN.Event(), SPAWN.Queue()
    workers = [procs(_rekey_many, str(path), p, start, errors) for p in (A, B)]
    start.set()
    for w in workers:
        w.join(JOIN_TIMEOUT)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == [] and [w.exitcode for w in workers] == [0, 0]
    assert sum(opens(path, passphrase=p) for p in (A, B)) == 1
    assert not (path / "key.tmp").exists()
